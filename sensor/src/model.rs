//! The types that flow between the agent's stages.
//!
//! Data flows one way: kernel maps (or a capture file) -> [`Interval`] ->
//! flow table -> rates -> detectors -> metrics and events. An [`Interval`] is
//! the seam: the live drain and the offline analyser both produce it, and no
//! later stage ever reads a kernel map.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_common::{Direction, FlowKey, FlowValue, Totals, FLOW_F_FRAGMENT};

/// One flow's counts during one interval, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowDelta {
    pub key: FlowKey,
    pub value: FlowValue,
}

/// Cumulative exact totals of one interface and direction, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceTotals {
    pub ifindex: u32,
    pub iface: String,
    pub direction: Direction,
    pub totals: Totals,
}

/// Everything one poll learned.
///
/// Times are CLOCK_MONOTONIC nanoseconds, the clock `bpf_ktime_get_ns` uses,
/// taken at the buffer flips that bound the interval (offline: packet
/// timestamps). Rates are computed over `end_ns - start_ns`, never from the
/// wall clock of the poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Wall-clock time (Unix ns) that corresponds to `end_ns`.
    pub end_unix_ns: u64,
    pub flows: Vec<FlowDelta>,
    pub totals: Vec<IfaceTotals>,
    /// Kernel-side state at the end of the interval (absent offline).
    pub kernel: Option<KernelStats>,
}

/// What the drain learned about the kernel side besides the counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Capacity of one flow buffer.
    pub flow_map_capacity: u64,
    /// Entries the retired buffer held when it was drained.
    pub flow_map_occupancy: u64,
    /// How long the flip and drain took.
    pub drain_ns: u64,
    /// Per program: cumulative run time and run count, when the kernel's BPF
    /// stats are enabled (`kernel.bpf_stats_enabled`), else `None`.
    pub programs: Vec<ProgramStats>,
    /// Attachments, for the attach-state metrics.
    pub attachments: Vec<AttachInfo>,
}

/// Run statistics of one loaded program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// `xdp` or `tc`.
    pub program: &'static str,
    pub run_time_ns: Option<u64>,
    pub run_count: Option<u64>,
}

/// The state of one interface the sensor watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachInfo {
    pub iface: String,
    pub ifindex: u32,
    /// `native` or `skb` while attached.
    pub xdp_mode: &'static str,
    pub xdp_attached: bool,
    pub tc_attached: bool,
}

impl Interval {
    /// Length of the interval in seconds (at least 1 ns, so rates are finite).
    pub fn seconds(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns).max(1) as f64 / 1e9
    }
}

/// The flow table's bookkeeping after an interval, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    /// Flows in the table now.
    pub size: u64,
    /// Configured maximum.
    pub capacity: u64,
    /// Flows evicted because the table was full (cumulative).
    pub evictions: u64,
    /// Flow records written, by reason label (`idle`, `active`, `evicted`,
    /// `shutdown`), cumulative.
    pub records: Vec<(&'static str, u64)>,
}

/// Adds `b` into `a`: counters are summed, timestamps widened, flags ORed.
/// Used to merge per-CPU slots and successive deltas of the same flow.
pub fn merge_value(a: &mut FlowValue, b: &FlowValue) {
    if b.packets == 0 {
        return;
    }
    if a.packets == 0 || (b.first_seen_ns != 0 && b.first_seen_ns < a.first_seen_ns) {
        a.first_seen_ns = b.first_seen_ns;
    }
    a.last_seen_ns = a.last_seen_ns.max(b.last_seen_ns);
    a.packets += b.packets;
    a.bytes += b.bytes;
    a.syn += b.syn;
    a.syn_ack += b.syn_ack;
    a.fin += b.fin;
    a.rst += b.rst;
    a.tcp_flags |= b.tcp_flags;
}

/// Adds every counter of `b` into `a`.
pub fn merge_totals(a: &mut Totals, b: &Totals) {
    a.packets += b.packets;
    a.bytes += b.bytes;
    a.ipv4 += b.ipv4;
    a.ipv6 += b.ipv6;
    a.non_ip += b.non_ip;
    a.fragments += b.fragments;
    a.not_attributed += b.not_attributed;
    a.not_attributed_bytes += b.not_attributed_bytes;
    for (x, y) in a.l4.iter_mut().zip(b.l4.iter()) {
        *x += y;
    }
    for (x, y) in a.ether_class.iter_mut().zip(b.ether_class.iter()) {
        *x += y;
    }
    for (x, y) in a.malformed.iter_mut().zip(b.malformed.iter()) {
        *x += y;
    }
}

/// Decodes a stored address: v4-mapped addresses become IPv4 when the key's
/// IP version is 4.
pub fn addr(bytes: &[u8; 16], ip_version: u8) -> IpAddr {
    let v6 = Ipv6Addr::from(*bytes);
    match (ip_version, v6.to_ipv4_mapped()) {
        (4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    }
}

/// Encodes an address the way the kernel stores it (IPv4 v4-mapped).
pub fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Convenience accessors on a kernel flow key.
pub trait FlowKeyExt {
    fn src(&self) -> IpAddr;
    fn dst(&self) -> IpAddr;
    fn direction_code(&self) -> Result<Direction, u8>;
    /// True for a non-first fragment (no ports).
    fn is_later_fragment(&self) -> bool;
}

impl FlowKeyExt for FlowKey {
    fn src(&self) -> IpAddr {
        addr(&self.src_addr, self.ip_version)
    }
    fn dst(&self) -> IpAddr {
        addr(&self.dst_addr, self.ip_version)
    }
    fn direction_code(&self) -> Result<Direction, u8> {
        Direction::try_from(self.direction)
    }
    fn is_later_fragment(&self) -> bool {
        self.flags & FLOW_F_FRAGMENT != 0
    }
}

/// An IPv4 address as the kernel stores it; handy in tests.
pub fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
    addr_bytes(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_round_trip() {
        let b = v4(198, 18, 0, 1);
        assert_eq!(addr(&b, 4), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert!(matches!(addr(&b, 6), IpAddr::V6(_)));
    }

    #[test]
    fn merge_widens_times_and_sums() {
        let mut a = FlowValue {
            packets: 1,
            bytes: 60,
            first_seen_ns: 100,
            last_seen_ns: 100,
            tcp_flags: 0x02,
            syn: 1,
            ..Default::default()
        };
        let b = FlowValue {
            packets: 2,
            bytes: 120,
            first_seen_ns: 50,
            last_seen_ns: 300,
            tcp_flags: 0x10,
            ..Default::default()
        };
        merge_value(&mut a, &b);
        assert_eq!(
            (a.packets, a.bytes, a.first_seen_ns, a.last_seen_ns),
            (3, 180, 50, 300)
        );
        assert_eq!((a.tcp_flags, a.syn), (0x12, 1));
        merge_value(&mut a, &FlowValue::default());
        assert_eq!(a.packets, 3);
    }
}
