//! Section 2 (live throughput on veth) and the traffic side of sections 3-5:
//! a veth pair in the root namespace and a live-frames generator.
//!
//! The generator runs `sensor_bench_gen` with BPF_F_TEST_XDP_LIVE_FRAMES as
//! if frames arrived on the sending end; it returns XDP_TX, which transmits
//! them out of that end to the receiving end, where the program under test
//! is attached in native mode. Both ends have no addresses and IPv6 off, so
//! nothing but generated frames crosses the pair.

use std::time::{Duration, Instant};

use anyhow::Result;
use aya::programs::{xdp::XdpLinkId, XdpMode};
use sensor::loader::ifindex;
use sensor_common::{
    BenchConfig, Direction, DEFAULT_FLOW_MAP_ENTRIES, GEN_SPOOF_V4, PROG_XDP_BENCH_GEN,
    PROG_XDP_STUB,
};

use crate::{
    obj::{self, Obj},
    stats::{figure, Report},
    sys, Mode,
};

const S: &str = "2. live throughput on veth";

/// A veth pair `stbg<pid>` (generator) <-> `stbr<pid>` (receiver); removed on drop.
pub struct Veth {
    pub gen: String,
    pub recv: String,
    pub gen_ifindex: u32,
}

impl Veth {
    /// Creates the pair.
    pub fn new() -> Result<Veth> {
        let pid = std::process::id() % 100_000;
        Veth::pair(&format!("stbg{pid}"), &format!("stbr{pid}"), true)
    }

    /// A pair `gen` <-> `recv` without IPv6, up or left down.
    fn pair(gen: &str, recv: &str, up: bool) -> Result<Veth> {
        sys::sh(&[
            "ip", "link", "add", gen, "type", "veth", "peer", "name", recv,
        ])?;
        let mut v = Veth {
            gen: gen.to_string(),
            recv: recv.to_string(),
            gen_ifindex: 0,
        };
        for i in [gen, recv] {
            sys::sh(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{i}.disable_ipv6=1"),
            ])?;
            if up {
                sys::sh(&["ip", "link", "set", i, "up"])?;
            }
        }
        v.gen_ifindex = ifindex(gen)?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = sys::sh(&["ip", "link", "del", &self.gen]);
    }
}

/// The live-frames generator (its own copy of the object).
pub struct Gen {
    obj: Obj,
    frame: Vec<u8>,
    ifindex: u32,
    /// Frames pushed so far.
    pub sent: u64,
    held: Option<(XdpLinkId, Veth)>,
}

/// Length of a pacing slot.
const SLOT: Duration = Duration::from_millis(10);

impl Gen {
    /// A generator cycling through `flows` flows on the pair's sending end.
    pub fn new(veth: &Veth, flows: u64) -> Result<Gen> {
        let mut obj = Obj::load(1024)?;
        obj.config(BenchConfig {
            prog_flows: 0,
            gen_flows: flows,
            gen_spoof: GEN_SPOOF_V4,
            _pad: 0,
        })?;
        Ok(Gen {
            obj,
            frame: obj::ipv4_udp(),
            ifindex: veth.gen_ifindex,
            sent: 0,
            held: None,
        })
    }

    /// Keeps the generator's program in the kernel's XDP dispatcher by
    /// attaching it natively to an idle veth (down, no traffic) until drop.
    ///
    /// A test run with repeat > 1 otherwise adds the program to the
    /// dispatcher and removes it again, each time under the dispatcher's
    /// mutex with an RCU grace period: about 24 ms per run here whatever its
    /// size, which caps one-run-per-10-ms pacing near 80 kpps. A program
    /// already in the dispatcher leaves it unchanged.
    pub fn hold_in_dispatcher(&mut self) -> Result<()> {
        if self.held.is_some() {
            return Ok(());
        }
        let pid = std::process::id() % 100_000;
        let idle = Veth::pair(&format!("stbh{pid}"), &format!("stbi{pid}"), false)?;
        let link = obj::prog(&mut self.obj.sensor, PROG_XDP_BENCH_GEN)?
            .attach(&idle.gen, XdpMode::Driver)?;
        self.held = Some((link, idle));
        Ok(())
    }

    /// Pushes frames as fast as possible for `dur`; returns frames per second.
    pub fn flat_out(&mut self, dur: Duration) -> Result<f64> {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < dur {
            self.obj
                .live(PROG_XDP_BENCH_GEN, &self.frame, self.ifindex, 65_536)?;
            n += 65_536;
        }
        self.sent += n;
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }

    /// Pushes `rate` frames per second for `dur` in 10 ms slots. A slot
    /// that starts late is still sent, so every run sends the same count;
    /// returns the rate achieved over the slots issued.
    pub fn paced(&mut self, rate: u64, dur: Duration) -> Result<f64> {
        let per_slot = (rate / 100).max(1) as u32;
        let slots = (dur.as_nanos() / SLOT.as_nanos()).max(1) as u32;
        let start = Instant::now();
        let mut last = Duration::ZERO;
        for slot in 0..slots {
            if let Some(wait) = (start + SLOT * slot).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            last = start.elapsed();
            self.obj
                .live(PROG_XDP_BENCH_GEN, &self.frame, self.ifindex, per_slot)?;
        }
        let n = per_slot as u64 * slots as u64;
        self.sent += n;
        Ok(n as f64 / (last + SLOT).as_secs_f64())
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        if let Some((link, idle)) = self.held.take() {
            if let Ok(p) = obj::prog(&mut self.obj.sensor, PROG_XDP_BENCH_GEN) {
                let _ = p.detach(link);
            }
            drop(idle);
        }
    }
}

/// The stub attached natively to an interface (own object), detached on drop.
pub struct StubAttached {
    obj: Obj,
    link: Option<XdpLinkId>,
}

impl StubAttached {
    /// Attaches the XDP_PASS stub to `iface` in native mode.
    pub fn new(iface: &str) -> Result<StubAttached> {
        let mut obj = Obj::load(1024)?;
        let link = obj::prog(&mut obj.sensor, PROG_XDP_STUB)?.attach(iface, XdpMode::Driver)?;
        Ok(StubAttached {
            obj,
            link: Some(link),
        })
    }
}

impl Drop for StubAttached {
    fn drop(&mut self) {
        if let (Some(l), Ok(p)) = (
            self.link.take(),
            obj::prog(&mut self.obj.sensor, PROG_XDP_STUB),
        ) {
            let _ = p.detach(l);
        }
    }
}

/// Ingress packets the sensor counted on `iface` (sum over CPUs).
pub fn ingress_packets(iv: &sensor::model::Interval, iface: &str) -> u64 {
    iv.totals
        .iter()
        .filter(|t| t.iface == iface && t.direction == Direction::Ingress)
        .map(|t| t.totals.packets)
        .sum()
}

/// Section 2: the sensor vs the stub on the receiving end, flat out.
pub fn run(mode: &Mode, report: &mut Report) -> Result<()> {
    println!("== {S}");
    let veth = Veth::new()?;
    let dur = mode.live_secs;
    let flows = 65_536u64;
    let mut stub_rates = Vec::new();
    let mut sensor_rates = Vec::new();
    let mut exact = true;
    let mut detail = String::new();
    for _ in 0..mode.runs {
        {
            let _stub = StubAttached::new(&veth.recv)?;
            let mut g = Gen::new(&veth, flows)?;
            g.hold_in_dispatcher()?;
            stub_rates.push(g.flat_out(dur)?);
        }
        let mut o = Obj::load(DEFAULT_FLOW_MAP_ENTRIES * 2)?;
        o.sensor.attach(&veth.recv)?;
        let mut drainer = o.sensor.drainer()?;
        let mut g = Gen::new(&veth, flows)?;
        g.hold_in_dispatcher()?;
        sensor_rates.push(g.flat_out(dur)?);
        o.sensor.detach_all();
        let counted = ingress_packets(&drainer.drain()?, &veth.recv);
        if counted != g.sent {
            exact = false;
            detail = format!("sent {} counted {counted}", g.sent);
        } else {
            detail = format!("sent {} == counted {counted}", g.sent);
        }
    }
    let note =
        format!("64-byte IPv4/UDP, {flows} flows, {dur:?} per run, native XDP on the receiver");
    let stub = report.add_noted(figure(S, "stub on receiver", "pps", &stub_rates), &note);
    let sens = report.add_noted(
        figure(
            S,
            "sensor on receiver (packets counted)",
            "pps",
            &sensor_rates,
        ),
        &note,
    );
    let retention = sens / stub * 100.0;
    report.note(format!("live count exact: {exact} (last run: {detail})"));
    report.target(
        "live retention (sensor / stub), exact counts",
        ">= 90% and exact".into(),
        retention,
        "%",
        Some(retention >= 90.0 && exact),
    );
    Ok(())
}
