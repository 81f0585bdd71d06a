//! Benchmark-only programs and maps (`cargo xtask bench`); the agent never
//! loads them.
//!
//! - `sensor_xdp_bench`: exactly the sensor's XDP path (the shared
//!   [`parse`](crate::parse) walk and [`count::account`]), but before
//!   accounting the parsed source address and port are replaced by flow
//!   number `k`, taken from a per-CPU counter, so repeated test runs of one
//!   frame measure many flows: the hit path, the new-flow path and the
//!   map-full path. The real program is untouched (zero cost to it).
//! - `sensor_bench_gen`: a traffic generator for live-frames test runs. By
//!   default it rewrites an untagged IPv4/UDP frame's addresses (198.18.x.y
//!   -> 198.19.x.y) and source port from flow number `k` and fixes the IPv4
//!   header checksum; with `gen_spoof = GEN_SPOOF_V6` it rewrites an
//!   untagged IPv6/UDP frame's source address to `2001:db8:CPU::k` (over a
//!   million distinct sources, one destination). It returns `XDP_TX`.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use sensor_common::{
    BenchConfig, Direction, BENCH_SEQ_ENTRIES, BENCH_SEQ_GEN, BENCH_SEQ_PROG, GEN_SPOOF_V6,
};

use crate::{count, parse};

/// Per-CPU run counters of the two benchmark programs.
#[map(name = "BENCH_SEQ")]
static BENCH_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(BENCH_SEQ_ENTRIES, 0);

/// Flow-number moduli, written by the bench driver.
#[map(name = "BENCH_CFG")]
static BENCH_CFG: Array<BenchConfig> = Array::with_max_entries(1, 0);

/// The next flow number for counter `index` with modulus `flows`.
#[inline(always)]
fn next_flow(index: u32, flows: u64) -> u64 {
    let Some(seq) = BENCH_SEQ.get_ptr_mut(index) else {
        return 0;
    };
    // SAFETY: this CPU's slot; test runs of one CPU do not interleave.
    let seq = unsafe { &mut *seq };
    let n = *seq;
    *seq = n + 1;
    if flows == 0 {
        n
    } else {
        n % flows
    }
}

#[xdp]
pub fn sensor_xdp_bench(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let len = (end - start) as u64;
    let mut parsed = parse::parse(start, end, end - start, 0);
    let flows = BENCH_CFG.get(0).map(|c| c.prog_flows).unwrap_or(0);
    let k = next_flow(BENCH_SEQ_PROG, flows);
    // Up to 2^25 distinct keys, all inside 198.18.0.0/15.
    parsed.src[3] = u32::from_ne_bytes([
        198,
        18 | ((k >> 24) & 1) as u8,
        (k >> 16) as u8,
        (k >> 8) as u8,
    ]);
    parsed.src_port = 1024 + (k & 0xff) as u16;
    count::account(
        &ctx,
        ctx.ingress_ifindex() as u32,
        Direction::Ingress,
        len,
        &parsed,
    );
    xdp_action::XDP_PASS
}

/// Offsets in an untagged Ethernet + IPv4 (no options) + UDP frame.
const IP: usize = 14;
const IP_CSUM: usize = IP + 10;
const IP_SRC: usize = IP + 12;
const IP_DST: usize = IP + 16;
const UDP_SPORT: usize = IP + 20;
const HEADERS: usize = UDP_SPORT + 2;

/// Offsets in an untagged Ethernet + IPv6 (no extension headers) + UDP
/// frame.
const IP6: usize = 14;
const IP6_NEXT: usize = IP6 + 6;
const IP6_SRC: usize = IP6 + 8;
const HEADERS6: usize = IP6 + 40 + 8;
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const IPPROTO_UDP: u8 = 17;

#[xdp]
pub fn sensor_bench_gen(ctx: XdpContext) -> u32 {
    let (flows, spoof) = BENCH_CFG
        .get(0)
        .map(|c| (c.gen_flows, c.gen_spoof))
        .unwrap_or((0, 0));
    if spoof == GEN_SPOOF_V6 {
        return gen_v6(&ctx, flows);
    }
    let start = ctx.data();
    if start + HEADERS > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let k = next_flow(BENCH_SEQ_GEN, flows);
    let host = ((k >> 4) & 0xffff) as u16;
    let sport = 10_000 + (k & 15) as u16;
    let p = start as *mut u8;
    // SAFETY: all offsets are below HEADERS, checked against data_end.
    unsafe {
        *p.add(IP_SRC) = 198;
        *p.add(IP_SRC + 1) = 18;
        *p.add(IP_SRC + 2) = (host >> 8) as u8;
        *p.add(IP_SRC + 3) = host as u8;
        *p.add(IP_DST) = 198;
        *p.add(IP_DST + 1) = 19;
        *p.add(IP_DST + 2) = (host >> 8) as u8;
        *p.add(IP_DST + 3) = host as u8;
        *p.add(UDP_SPORT) = (sport >> 8) as u8;
        *p.add(UDP_SPORT + 1) = sport as u8;
        *p.add(IP_CSUM) = 0;
        *p.add(IP_CSUM + 1) = 0;
        let mut sum = 0u32;
        for i in 0..10 {
            let w = ((*p.add(IP + 2 * i) as u32) << 8) | *p.add(IP + 2 * i + 1) as u32;
            sum += w;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let csum = !(sum as u16);
        *p.add(IP_CSUM) = (csum >> 8) as u8;
        *p.add(IP_CSUM + 1) = csum as u8;
    }
    xdp_action::XDP_TX
}

/// [`GEN_SPOOF_V6`]: source `2001:db8:CPU::k` (`k` truncated to 32 bits),
/// so every CPU writes its own disjoint range and, with `flows` 0, every
/// frame has a source address never sent before. IPv6 has no header
/// checksum; the UDP checksum is left stale (the receiver's stack drops
/// the frames at L2 anyway: they are not addressed to its MAC).
#[inline(always)]
fn gen_v6(ctx: &XdpContext, flows: u64) -> u32 {
    let start = ctx.data();
    if start + HEADERS6 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let p = start as *mut u8;
    // SAFETY: all offsets are below HEADERS6, checked against data_end.
    unsafe {
        if *p.add(12) != ETH_P_IPV6[0]
            || *p.add(13) != ETH_P_IPV6[1]
            || *p.add(IP6_NEXT) != IPPROTO_UDP
        {
            return xdp_action::XDP_ABORTED;
        }
    }
    let k = next_flow(BENCH_SEQ_GEN, flows) as u32;
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u16;
    let mut src = [0u8; 16];
    src[0] = 0x20;
    src[1] = 0x01;
    src[2] = 0x0d;
    src[3] = 0xb8;
    src[4] = (cpu >> 8) as u8;
    src[5] = cpu as u8;
    src[12] = (k >> 24) as u8;
    src[13] = (k >> 16) as u8;
    src[14] = (k >> 8) as u8;
    src[15] = k as u8;
    for (i, b) in src.iter().enumerate() {
        // SAFETY: IP6_SRC + 15 < HEADERS6, checked above.
        unsafe { *p.add(IP6_SRC + i) = *b };
    }
    xdp_action::XDP_TX
}
