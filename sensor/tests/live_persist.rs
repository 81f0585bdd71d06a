//! Persistent mode (`--pin-path`): the agent is killed with SIGKILL under
//! steady traffic and started again; the totals and the per-flow counts
//! continue with nothing lost and nothing counted twice. Without the mode,
//! the death of the agent detaches everything. Needs root.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    e2e::{http_get, json_lines, ns_bg, prepare_link, quiesce, LinkStats, SensorProc, TempDir},
    netns::{wait_for, VethPair},
};
use sensor::{
    drain::Drainer,
    loader::{LoadOptions, Sensor, XdpModeSetting},
    persist::{Header, Journal},
};
use sensor_common::Direction;

/// A pin directory on bpffs, removed (detaching what it holds) on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(what: &str) -> PinDir {
        let dir = PathBuf::from(format!("/sys/fs/bpf/st-{}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        PinDir(dir)
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the sensor has attached to `iface`: the XDP program and the TCX
/// egress programs, by name.
fn attached(iface: &str) -> Vec<String> {
    common::scrape::programs_on(iface)
}

/// Both of the sensor's programs, once each.
fn both(iface: &str) -> bool {
    attached(iface) == ["xdp:sensor_xdp", "tcx_egress:sensor_tc"]
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn scrape(s: &SensorProc) -> String {
    let (code, body) = http_get(&s.listen, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// (direction, protocol, src port or ICMP type, dst port or ICMP code) ->
/// (packets, bytes), summed over every record of the file.
type FlowSums = BTreeMap<(String, u64, u64, u64), (u64, u64)>;

fn record_sums(path: &Path) -> FlowSums {
    let mut sums = FlowSums::new();
    for r in json_lines(path) {
        let port = |a: &str, b: &str| r[a].as_u64().or(r[b].as_u64()).unwrap_or(0);
        let key = (
            r["direction"].as_str().unwrap_or("").to_string(),
            r["protocol"].as_u64().unwrap_or(0),
            port("src_port", "icmp_type"),
            port("dst_port", "icmp_code"),
        );
        let e = sums.entry(key).or_default();
        e.0 += r["packets"].as_u64().unwrap_or(0);
        e.1 += r["bytes"].as_u64().unwrap_or(0);
    }
    sums
}

#[test]
fn sigkill_and_restart_in_persistent_mode_lose_and_double_nothing() {
    let p = VethPair::new();
    prepare_link(&p);
    // No IPv6 on the link: router solicitations and MLD reports come at
    // times of their own and could fall between the baseline and attach.
    p.disable_ipv6();
    let pins = PinDir::new("persist");
    let dir = TempDir::new("persist");
    let flows = dir.path("flows.jsonl");
    let state = dir.path("state");
    let args = [
        "--pin-path",
        pins.arg(),
        "--state-dir",
        state.to_str().unwrap(),
        "--flows-file",
        flows.to_str().unwrap(),
        "--idle-timeout",
        "2s",
        "--active-timeout",
        "4s",
    ];
    let base = quiesce(&p.host);
    let mut first = SensorProc::start(&p.host, &dir, &args);

    // Steady traffic for about 8 s across both agent lifetimes: a UDP flow
    // with fixed ports (answered by ICMP port unreachable) and a ping, each
    // with a fixed packet count.
    let (udp_a, pings) = (4000u64, 2000u64);
    let started = Instant::now();
    let mut tools = vec![
        ns_bg(
            &p,
            "hping3 a",
            &[
                "hping3",
                "--udp",
                "-s",
                "5001",
                "-k",
                "-p",
                "7001",
                "-i",
                "u2000",
                "-c",
                &udp_a.to_string(),
                &p.host_v4,
            ],
        ),
        ns_bg(
            &p,
            "ping",
            &[
                "ping",
                "-q",
                "-i",
                "0.004",
                "-c",
                &pings.to_string(),
                &p.host_v4,
            ],
        ),
    ];

    // Let the first agent drain and journal a few intervals, then kill it
    // without warning.
    wait_for(
        "the first agent to journal flows",
        Duration::from_secs(20),
        || {
            sample(&scrape(&first), "sensor_flow_table_flows ").is_some_and(|n| n >= 3.0)
                && started.elapsed() >= Duration::from_millis(2500)
        },
    );
    let before_kill = LinkStats::read(&p.host).since(&base);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.proc.child.id() as i32, libc::SIGKILL) };
    let _ = first.proc.child.wait();
    assert!(
        both(&p.host),
        "the pinned programs must stay attached while the agent is dead: {:?}",
        attached(&p.host)
    );
    // Traffic goes on, counted by the kernel alone.
    let dead = Instant::now();
    wait_for(
        "traffic while the agent is dead",
        Duration::from_secs(10),
        || LinkStats::read(&p.host).since(&base).rx_packets >= before_kill.rx_packets + 300,
    );
    let second = SensorProc::start(&p.host, &dir, &args);
    let downtime = dead.elapsed();
    assert!(
        second.logs().contains("journal replayed"),
        "the second agent did not resume from the journal:\n{}",
        second.logs()
    );
    assert!(
        both(&p.host),
        "the restart must replace the programs, not add any: {:?}",
        attached(&p.host)
    );

    for t in &mut tools {
        wait_for(
            &format!("{} to finish", t.name),
            Duration::from_secs(60),
            || !t.running(),
        );
    }
    let traffic = quiesce(&p.host).since(&base);

    // Every flow ends idle and is written; then totals and records are
    // complete.
    let mut metrics = String::new();
    wait_for("every flow to be written", Duration::from_secs(20), || {
        metrics = scrape(&second);
        sample(&metrics, "sensor_flow_table_flows ") == Some(0.0)
    });
    let series = |dir: &str, what: &str| {
        sample(
            &metrics,
            &format!(
                "sensor_{what}_total{{direction=\"{dir}\",iface=\"{}\"}} ",
                p.host
            ),
        )
        .unwrap_or_else(|| panic!("no sensor_{what}_total for {dir}:\n{metrics}")) as u64
    };
    let sums = record_sums(&flows);
    assert_eq!(
        (series("ingress", "packets"), series("egress", "packets")),
        (traffic.rx_packets, traffic.tx_packets),
        "exported totals against the veth's counters (nothing lost or doubled); records: \
         {sums:?}\n{}",
        second.logs()
    );
    // Native XDP: the veth's rx_bytes leaves out the Ethernet header.
    assert_eq!(
        series("ingress", "bytes"),
        traffic.rx_bytes + 14 * traffic.rx_packets,
        "ingress bytes"
    );
    assert_eq!(series("egress", "bytes"), traffic.tx_bytes, "egress bytes");

    let count = |dir: &str, proto: u64, a: u64, b: u64| {
        sums.get(&(dir.to_string(), proto, a, b))
            .copied()
            .unwrap_or_default()
            .0
    };
    assert_eq!(
        count("ingress", 17, 5001, 7001),
        udp_a,
        "UDP flow a: {sums:?}"
    );
    assert_eq!(count("ingress", 1, 8, 0), pings, "echo requests: {sums:?}");
    assert_eq!(count("egress", 1, 0, 0), pings, "echo replies: {sums:?}");
    let (rx, tx) = sums
        .iter()
        .fold((0, 0), |(rx, tx), ((d, ..), (n, _))| match d.as_str() {
            "ingress" => (rx + n, tx),
            _ => (rx, tx + n),
        });
    assert_eq!(
        (rx, tx),
        (traffic.rx_packets, traffic.tx_packets),
        "records summed over every flow against the veth's counters: {sums:?}"
    );
    let rx_bytes: u64 = sums
        .iter()
        .filter(|((d, ..), _)| d == "ingress")
        .map(|(_, (_, b))| b)
        .sum();
    assert_eq!(
        rx_bytes,
        traffic.rx_bytes + 14 * traffic.rx_packets,
        "record bytes"
    );
    println!(
        "killed after {} rx packets; dead for {downtime:?}; totals rx {} tx {}; {} flows",
        before_kill.rx_packets,
        traffic.rx_packets,
        traffic.tx_packets,
        sums.len()
    );

    // A clean stop in persistent mode leaves the programs attached;
    // removing the pins detaches them.
    let mut second = second;
    assert!(second
        .proc
        .terminate(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    assert!(
        both(&p.host),
        "a clean stop keeps the pinned programs: {:?}",
        attached(&p.host)
    );
    drop(pins);
    wait_for(
        "removing the pins to detach",
        Duration::from_secs(5),
        || attached(&p.host).is_empty(),
    );
}

#[test]
fn without_persistent_mode_a_killed_agent_detaches_everything() {
    let p = VethPair::new();
    let dir = TempDir::new("nopersist");
    let mut s = SensorProc::start(&p.host, &dir, &[]);
    assert!(both(&p.host), "{:?}", attached(&p.host));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.proc.child.id() as i32, libc::SIGKILL) };
    let _ = s.proc.child.wait();
    wait_for(
        "the kernel to detach the dead agent's links",
        Duration::from_secs(5),
        || attached(&p.host).is_empty(),
    );
}

/// The crash points of the two-phase drain, driven step by step through
/// BPF_PROG_TEST_RUN: after the flip but before the journal frame, and
/// after the frame but before the delete. Each resumes with every packet
/// counted exactly once.
#[test]
fn every_crash_point_of_a_drain_resumes_exactly_once() {
    let pins = PinDir::new("crashpoints");
    let dir = TempDir::new("crashpoints");
    let opts = LoadOptions {
        flow_map_entries: 4096,
        xdp_mode: XdpModeSetting::Auto,
        pin_path: Some(pins.0.clone()),
    };
    let frame = common::cat(&[
        &common::eth(0x0800),
        &common::ipv4(17, 8),
        &common::udp(1111, 2222, 0),
    ]);

    // One agent lifetime: load on the pins, open the journal, resume.
    struct Life {
        sensor: Sensor,
        drainer: Drainer,
        journal: Journal,
        seq: u64,
        counted: u64,
    }
    let start = || -> Life {
        let mut sensor = Sensor::load(&opts).expect("load on the pins (needs root)");
        sensor
            .register_slot(common::TEST_IFINDEX, "lo")
            .expect("slot");
        let mut drainer = sensor.drainer().expect("drainer");
        drainer.set_two_phase(true);
        let identity = sensor.pin_identity().expect("identity");
        let (journal, recovered) = Journal::open(&dir.path("state"), identity).expect("journal");
        let (seq, counted) = match recovered {
            Some(r) => {
                drainer
                    .recover(r.header.active_after, r.header.last_flip_ns)
                    .expect("recover");
                (
                    r.header.seq,
                    r.entries.iter().map(|e| e.total_packets).sum(),
                )
            }
            None => (0, 0),
        };
        Life {
            sensor,
            drainer,
            journal,
            seq,
            counted,
        }
    };
    // A drain up to `stop`: 0 = flip and read only, 1 = also the frame,
    // 2 = also the delete.
    let drain = |l: &mut Life, stop: u8| {
        let iv = l.drainer.drain().expect("drain");
        let n: u64 = iv
            .flows
            .iter()
            .filter(|d| d.key.direction == Direction::Ingress as u8)
            .map(|d| d.value.packets)
            .sum();
        if stop == 0 {
            return;
        }
        let entry = sensor::flowtable::FlowEntry {
            // One entry whose count is everything counted so far.
            key: Default::default(),
            value: Default::default(),
            total_packets: l.counted + n,
            total_bytes: 0,
            first_seen_ns: 0,
            last_seen_ns: 0,
        };
        let header = Header {
            identity: l.sensor.pin_identity().unwrap(),
            seq: l.seq + 1,
            active_after: l.drainer.active(),
            last_flip_ns: l.drainer.last_flip_ns(),
            records_len: None,
            table: Default::default(),
        };
        l.journal
            .commit(&header, &[entry], &[], || vec![entry])
            .expect("commit");
        l.seq += 1;
        l.counted += n;
        if stop == 2 {
            l.drainer.complete().expect("delete");
        }
    };

    let mut sent = 0u64;
    let mut life = start();
    for (crash_at, runs) in [(2u8, 5u32), (0, 7), (1, 11), (2, 13), (1, 17), (0, 19)] {
        common::xdp_run(&mut life.sensor, &frame, runs);
        sent += u64::from(runs);
        drain(&mut life, 2);
        common::xdp_run(&mut life.sensor, &frame, runs + 1);
        sent += u64::from(runs + 1);
        // The crash: the agent's process state is gone, the pins stay.
        drain(&mut life, crash_at);
        drop(life);
        life = start();
        // Packets counted while no agent ran are in the kernel too.
        common::xdp_run(&mut life.sensor, &frame, 3);
        sent += 3;
        // The first drain may only read the buffer left unread.
        drain(&mut life, 2);
        drain(&mut life, 2);
        assert_eq!(
            life.counted, sent,
            "after a crash at step {crash_at}: counted {} of {sent}",
            life.counted
        );
    }
}

/// A pin directory outside bpffs, and pinned maps of another shape (an
/// incompatible sensor version), are refused with errors that say what to
/// do.
#[test]
fn bad_pin_directories_are_refused_with_a_clear_error() {
    let opts = |dir: PathBuf| LoadOptions {
        flow_map_entries: 4096,
        xdp_mode: XdpModeSetting::Auto,
        pin_path: Some(dir),
    };
    let tmp = TempDir::new("notbpffs");
    let err = Sensor::load(&opts(tmp.path("pins")))
        .err()
        .expect("a directory outside bpffs is refused")
        .to_string();
    assert!(err.contains("not on a bpffs mount"), "{err}");

    let pins = PinDir::new("incompatible");
    std::fs::create_dir_all(&pins.0).expect("mkdir on bpffs");
    let control = pins.0.join("CONTROL");
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&control)
        .args([
            "type", "array", "key", "4", "value", "4", "entries", "1", "name", "CONTROL",
        ])
        .output()
        .expect("bpftool map create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = Sensor::load(&opts(pins.0.clone()))
        .err()
        .expect("a pinned map of another shape is refused")
        .to_string();
    assert!(
        err.contains("incompatible sensor version") && err.contains("CONTROL"),
        "{err}"
    );
}
