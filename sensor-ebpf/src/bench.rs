//! Benchmark-only programs and maps (`cargo xtask bench`); the agent never
//! loads them.
//!
//! - `sensor_xdp_bench`: exactly the sensor's XDP path (the shared
//!   [`parse`](crate::parse) walk and [`count::account`]), but before
//!   accounting the parsed source address and port are replaced by flow
//!   number `k`, taken from a per-CPU counter, so repeated test runs of one
//!   frame measure many flows: the hit path, the new-flow path and the
//!   map-full path. The real program is untouched (zero cost to it).
//! - `sensor_bench_gen`: a traffic generator for live-frames test runs. It
//!   rewrites an untagged IPv4/UDP frame's addresses (198.18.x.y ->
//!   198.19.x.y) and source port from flow number `k`, fixes the IPv4
//!   header checksum and returns `XDP_TX`.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use sensor_common::{BenchConfig, Direction, BENCH_SEQ_ENTRIES, BENCH_SEQ_GEN, BENCH_SEQ_PROG};

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
    parsed.src[12] = 198;
    parsed.src[13] = 18 | ((k >> 24) & 1) as u8;
    parsed.src[14] = (k >> 16) as u8;
    parsed.src[15] = (k >> 8) as u8;
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

#[xdp]
pub fn sensor_bench_gen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + HEADERS > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let flows = BENCH_CFG.get(0).map(|c| c.gen_flows).unwrap_or(0);
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
