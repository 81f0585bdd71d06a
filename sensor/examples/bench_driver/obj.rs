//! A loaded copy of the sensor object with the benchmark programs, and the
//! frames the benchmarks feed it.

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::Array,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use etherparse::{PacketBuilder, VlanId};
use sensor::loader::{LoadOptions, Sensor, XdpModeSetting};
use sensor_common::{
    BenchConfig, MAP_BENCH_CFG, PROG_XDP_BENCH, PROG_XDP_BENCH_GEN, PROG_XDP_STUB,
};

/// The ifindex BPF_PROG_TEST_RUN reports (loopback).
pub const TEST_IFINDEX: u32 = 1;

/// A fresh copy of the object (own maps) with the stub and bench programs loaded.
pub struct Obj {
    pub sensor: Sensor,
}

impl Obj {
    /// Loads the object with flow buffers of `entries`.
    pub fn load(entries: u32) -> Result<Obj> {
        let mut sensor = Sensor::load(&LoadOptions {
            flow_map_entries: entries,
            xdp_mode: XdpModeSetting::Native,
            pin_path: None,
        })
        .context("loading the sensor object")?;
        for name in [PROG_XDP_STUB, PROG_XDP_BENCH, PROG_XDP_BENCH_GEN] {
            let p: &mut Xdp = prog(&mut sensor, name)?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        sensor.register_slot(TEST_IFINDEX, "lo")?;
        Ok(Obj { sensor })
    }

    /// Writes the bench programs' flow moduli.
    pub fn config(&mut self, cfg: BenchConfig) -> Result<()> {
        let map = self
            .sensor
            .ebpf_mut()
            .map_mut(MAP_BENCH_CFG)
            .ok_or_else(|| anyhow!("no map {MAP_BENCH_CFG}"))?;
        let mut a: Array<_, BenchConfig> = Array::try_from(map)?;
        a.set(0, cfg, 0)?;
        Ok(())
    }

    /// Runs program `name` `repeat` times on `frame`; mean ns per run.
    pub fn run(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<f64> {
        let p: &mut Xdp = prog(&mut self.sensor, name)?;
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .with_context(|| format!("test run of {name}"))?;
        Ok(r.duration.as_nanos() as f64)
    }

    /// Pushes `frames` live frames through program `name` as if received on
    /// `ifindex` (BPF_F_TEST_XDP_LIVE_FRAMES, batches of 64).
    pub fn live(&mut self, name: &str, frame: &[u8], ifindex: u32, frames: u32) -> Result<()> {
        let p: &mut Xdp = prog(&mut self.sensor, name)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        // The kernel wants data_end == the frame's length.
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        p.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::default()
        })
        .with_context(|| format!("live-frames run of {name}"))?;
        Ok(())
    }
}

/// A program of the object by name.
pub fn prog<'a>(sensor: &'a mut Sensor, name: &str) -> Result<&'a mut Xdp> {
    sensor
        .ebpf_mut()
        .program_mut(name)
        .ok_or_else(|| anyhow!("no program {name} in the object"))?
        .try_into()
        .map_err(|e| anyhow!("{name}: {e}"))
}

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// Not the receiver's MAC: frames stop at L2 in the stack (FIELD-NOTES).
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

fn pad_to(mut v: Vec<u8>, len: usize) -> Vec<u8> {
    v.resize(v.len().max(len), 0);
    v
}

/// 64-byte IPv4/UDP frame (198.18.0.1 -> 198.19.0.1).
pub fn ipv4_udp() -> Vec<u8> {
    let payload = [0u8; 22];
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4([198, 18, 0, 1], [198, 19, 0, 1], 64)
        .udp(10_000, 5001);
    let mut v = Vec::with_capacity(64);
    b.write(&mut v, &payload).expect("ipv4/udp frame");
    v
}

/// IPv6/TCP frame (2001:db8::1 -> 2001:db8::2), 74 bytes (no padding needed).
pub fn ipv6_tcp() -> Vec<u8> {
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    let mut d = s;
    s[15] = 1;
    d[15] = 2;
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(s, d, 64)
        .tcp(40_000, 443, 1, 1024)
        .ack(1);
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("ipv6/tcp frame");
    pad_to(v, 64)
}

/// 802.1Q (VLAN 10) IPv4/UDP frame, 64 bytes.
pub fn vlan_udp() -> Vec<u8> {
    let payload = [0u8; 18];
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .single_vlan(VlanId::try_new(10).expect("vlan id"))
        .ipv4([198, 18, 0, 1], [198, 19, 0, 1], 64)
        .udp(10_000, 5001);
    let mut v = Vec::new();
    b.write(&mut v, &payload).expect("vlan frame");
    v
}
