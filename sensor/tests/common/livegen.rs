//! A live-frames traffic generator inside a test's namespace: the
//! benchmark's `sensor_bench_gen` program run with BPF_PROG_TEST_RUN and
//! `BPF_F_TEST_XDP_LIVE_FRAMES`, as if each frame arrived on the namespace
//! end of a veth pair. The program returns `XDP_TX`, so every frame leaves
//! that end and arrives on the root-side end, where the sensor counts it.
//!
//! The generator runs on a thread of its own that enters the namespace with
//! `setns(2)` (a network namespace is per thread), so the test process
//! itself stays in the root namespace.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use etherparse::PacketBuilder;
use sensor::loader::{LoadOptions, Sensor, XdpModeSetting};
use sensor_common::{
    BenchConfig, BENCH_SEQ_GEN, GEN_SPOOF_V6, MAP_BENCH_CFG, MAP_BENCH_SEQ, PROG_XDP_BENCH_GEN,
};

/// Destination MAC of generated frames: not the receiver's, so its stack
/// drops them at L2 right after the sensor's XDP program (FIELD-NOTES: with
/// the receiver's own MAC the stack, not XDP, limits the rate).
pub const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

/// A 64-byte IPv6/UDP frame from 2001:db8::1 to `dst` (the generator
/// rewrites the source).
pub fn ipv6_udp_64(dst: std::net::Ipv6Addr) -> Vec<u8> {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = 1;
    let b = PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 1], OTHER_MAC)
        .ipv6(src, dst.octets(), 64)
        .udp(40_000, 5001);
    let mut v = Vec::with_capacity(64);
    b.write(&mut v, &[0u8; 2]).expect("ipv6/udp frame");
    assert_eq!(v.len(), 64);
    v
}

/// What a generator run did.
#[derive(Clone, Copy, Debug)]
pub struct GenReport {
    /// Frames the test runs were asked for (sum of `repeat`).
    pub requested: u64,
    /// Runs of the generator program, summed over CPUs (its own per-CPU
    /// counter): one per frame it rewrote and transmitted.
    pub program_runs: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Sends `frames` copies of `frame` out of `iface` in namespace `ns`, each
/// with a new source address ([`GEN_SPOOF_V6`], flow modulus 0: every frame
/// a source never sent before), in test runs of at most `chunk` frames.
/// `started` is set just before the first frame. Panics if sending takes
/// longer than `limit`.
pub fn flood_v6(
    ns: &str,
    iface: &str,
    frame: &[u8],
    frames: u64,
    chunk: u32,
    limit: Duration,
    started: &OnceLock<Instant>,
) -> GenReport {
    super::netns::enter_netns(ns);
    let mut sensor = Sensor::load(&LoadOptions {
        flow_map_entries: 1024,
        xdp_mode: XdpModeSetting::Native,
        pin_path: None,
    })
    .expect("loading the generator's copy of the object (needs root)");
    {
        let map = sensor
            .ebpf_mut()
            .map_mut(MAP_BENCH_CFG)
            .expect("bench config map");
        let mut cfg: Array<_, BenchConfig> = Array::try_from(map).expect("bench config type");
        cfg.set(
            0,
            BenchConfig {
                prog_flows: 0,
                gen_flows: 0,
                gen_spoof: GEN_SPOOF_V6,
                _pad: 0,
            },
            0,
        )
        .expect("writing the bench config");
    }
    let ifindex = {
        let name = std::ffi::CString::new(iface).expect("iface name");
        // SAFETY: a valid NUL-terminated string.
        let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(i, 0, "{iface} not found in namespace {ns}");
        i
    };
    let prog: &mut Xdp = sensor
        .ebpf_mut()
        .program_mut(PROG_XDP_BENCH_GEN)
        .expect("generator program")
        .try_into()
        .expect("generator type");
    prog.load().expect("loading the generator program");
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let start = *started.get_or_init(Instant::now);
    let mut requested = 0u64;
    while requested < frames {
        assert!(
            start.elapsed() < limit,
            "the generator sent only {requested} of {frames} frames in {limit:?}"
        );
        let n = (frames - requested).min(u64::from(chunk)) as u32;
        // Live-frames runs report no return value; what arrived is read
        // from the receiving end.
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: n,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::default()
        })
        .expect("live-frames test run");
        requested += u64::from(n);
    }
    let elapsed = start.elapsed();
    let seq: PerCpuArray<_, u64> = PerCpuArray::try_from(
        sensor
            .ebpf_mut()
            .map_mut(MAP_BENCH_SEQ)
            .expect("bench counter map"),
    )
    .expect("bench counter type");
    let program_runs = seq
        .get(&BENCH_SEQ_GEN, 0)
        .expect("reading the generator's counters")
        .iter()
        .sum();
    GenReport {
        requested,
        program_runs,
        elapsed,
    }
}
