//! The contract between the sensor's eBPF programs and its agent.
//!
//! This crate is the only place where a layout that crosses the kernel/user
//! boundary is defined. Every type is `#[repr(C)]`, uses fixed-width fields with
//! explicit padding, and has its size frozen by a compile-time assert. The
//! kernel writes integer codes; userspace converts them with `TryFrom` and
//! counts unknown values instead of trusting them.
//!
//! Who writes and who reads what:
//!
//! | item | written by | read by |
//! |---|---|---|
//! | [`FlowKey`], [`FlowValue`] in [`MAP_FLOWS_A`] / [`MAP_FLOWS_B`] | programs (per CPU) | agent drain |
//! | [`Totals`] in [`MAP_TOTALS`] | programs (per CPU) | agent drain |
//! | [`MAP_IFACE_SLOTS`] (ifindex -> slot) | agent at attach | programs |
//! | [`MAP_IFACE_INDEX`] (ifindex -> slot, small ifindexes) | agent at attach | programs |
//! | [`Control`] in [`MAP_CONTROL`] | agent (buffer flip) | programs |
//!
//! Layout:
//! - names of programs and maps, and their capacities;
//! - [`FlowKey`] and [`FlowValue`]: per-flow counting;
//! - [`Totals`]: exact per-interface, per-direction counters;
//! - [`Control`]: the runtime switch for double-buffered draining;
//! - codes: [`Direction`], [`Malformed`], [`EtherClass`].
#![no_std]

/// XDP program attached to each interface for ingress.
pub const PROG_XDP: &str = "sensor_xdp";
/// TC classifier attached to each interface for egress.
pub const PROG_TC: &str = "sensor_tc";
/// An XDP program that only returns `XDP_PASS`: the benchmark's baseline.
pub const PROG_XDP_STUB: &str = "sensor_xdp_stub";

/// First flow buffer (per-CPU hash of [`FlowKey`] -> [`FlowValue`]).
pub const MAP_FLOWS_A: &str = "FLOWS_A";
/// Second flow buffer; the programs write the one [`Control::active`] names.
pub const MAP_FLOWS_B: &str = "FLOWS_B";
/// Per-CPU array of [`Totals`], indexed by [`totals_index`].
pub const MAP_TOTALS: &str = "TOTALS";
/// Hash of interface index (u32) -> slot (u32), filled by the agent.
pub const MAP_IFACE_SLOTS: &str = "IFACE_SLOTS";
/// Array of slot (u32) indexed by interface index, for indexes below
/// [`IFACE_INDEX_ENTRIES`]: the programs' fast path (an inlined array
/// lookup instead of a hash lookup). 0 is [`UNKNOWN_IFACE_SLOT`]; larger
/// indexes use [`MAP_IFACE_SLOTS`]. The agent writes both.
pub const MAP_IFACE_INDEX: &str = "IFACE_INDEX";
/// One-entry array holding [`Control`].
pub const MAP_CONTROL: &str = "CONTROL";

/// Every map name the object must contain (checked against the built ELF).
pub const MAP_NAMES: [&str; 6] = [
    MAP_FLOWS_A,
    MAP_FLOWS_B,
    MAP_TOTALS,
    MAP_IFACE_SLOTS,
    MAP_IFACE_INDEX,
    MAP_CONTROL,
];
/// Every program name the object must contain.
pub const PROG_NAMES: [&str; 3] = [PROG_XDP, PROG_TC, PROG_XDP_STUB];

/// Default capacity of each flow buffer; the agent may override it at load.
pub const DEFAULT_FLOW_MAP_ENTRIES: u32 = 65_536;
/// Interface slots; slot 0 collects frames from interfaces the agent did not
/// register (it should stay zero).
pub const MAX_IFACE_SLOTS: u32 = 64;
/// Slot for frames whose interface has no registered slot.
pub const UNKNOWN_IFACE_SLOT: u32 = 0;
/// Entries of [`MAP_IFACE_INDEX`]: interface indexes below this are looked
/// up by array.
pub const IFACE_INDEX_ENTRIES: u32 = 4096;
/// Entries in [`MAP_TOTALS`]: one per slot and direction.
pub const TOTALS_ENTRIES: u32 = MAX_IFACE_SLOTS * 2;

/// Index of a slot's totals for a direction in [`MAP_TOTALS`].
#[inline(always)]
pub const fn totals_index(slot: u32, direction: u8) -> u32 {
    slot * 2 + (direction as u32 & 1)
}

/// At most this many VLAN tags are walked (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// At most this many IPv6 extension headers are walked.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Direction of a frame relative to the interface.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Received (XDP).
    Ingress = 0,
    /// Transmitted (TC egress).
    Egress = 1,
}

impl Direction {
    /// Label value used in metrics and records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl TryFrom<u8> for Direction {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Direction::Ingress),
            1 => Ok(Direction::Egress),
            other => Err(other),
        }
    }
}

/// Set in [`FlowKey::flags`] for a non-first IP fragment: it carries no L4
/// header, so its ports are zero.
pub const FLOW_F_FRAGMENT: u8 = 1;

/// A flow: one direction of a conversation on one interface.
///
/// IPv4 addresses are stored v4-mapped (`::ffff:a.b.c.d`). Ports are in host
/// byte order; for ICMP and ICMPv6 `src_port` is the type and `dst_port` the
/// code. For protocols without ports both are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub ifindex: u32,
    /// VLAN id (12 bits) of the outermost tag, 0 when untagged.
    pub vlan_id: u16,
    pub src_port: u16,
    pub dst_port: u16,
    /// A [`Direction`] code.
    pub direction: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// IP protocol number (IPv6: the upper-layer protocol after extension headers).
    pub protocol: u8,
    /// `FLOW_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 4);

/// TCP flag bits as they appear in the header's flags byte.
pub mod tcp_flags {
    pub const FIN: u32 = 0x01;
    pub const SYN: u32 = 0x02;
    pub const RST: u32 = 0x04;
    pub const PSH: u32 = 0x08;
    pub const ACK: u32 = 0x10;
    pub const URG: u32 = 0x20;
    pub const ECE: u32 = 0x40;
    pub const CWR: u32 = 0x80;
}

/// Per-flow counters since the flow entered the current buffer (per CPU).
///
/// Timestamps are `bpf_ktime_get_ns` (CLOCK_MONOTONIC). A CPU slot that saw no
/// packet has `packets == 0` and zero timestamps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub packets: u64,
    /// Frame length, Ethernet header included, FCS excluded.
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Packets with SYN and without ACK.
    pub syn: u64,
    /// Packets with SYN and ACK.
    pub syn_ack: u64,
    pub fin: u64,
    pub rst: u64,
    /// OR of the TCP flags bytes seen.
    pub tcp_flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowValue>() == 72);

/// Why a frame was counted as malformed. Index into [`Totals::malformed`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than an Ethernet header, or a VLAN tag is cut off.
    TruncatedEthernet = 0,
    /// The IP header, or an IPv6 extension header, is cut off.
    TruncatedIp = 1,
    /// IPv4 IHL below 5, IP version mismatch, or a length field that
    /// disagrees with the frame.
    BadIpHeader = 2,
    /// The TCP/UDP/SCTP/ICMP header is cut off.
    TruncatedL4 = 3,
    /// The IPv6 extension header chain is longer than the walk allows.
    TooManyExtHeaders = 4,
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    TooManyVlanTags = 5,
}
/// Number of [`Malformed`] reasons.
pub const MALFORMED_REASONS: usize = 6;

impl Malformed {
    pub const ALL: [Malformed; MALFORMED_REASONS] = [
        Malformed::TruncatedEthernet,
        Malformed::TruncatedIp,
        Malformed::BadIpHeader,
        Malformed::TruncatedL4,
        Malformed::TooManyExtHeaders,
        Malformed::TooManyVlanTags,
    ];
    /// Label value used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Malformed::TruncatedEthernet => "truncated_ethernet",
            Malformed::TruncatedIp => "truncated_ip",
            Malformed::BadIpHeader => "bad_ip_header",
            Malformed::TruncatedL4 => "truncated_l4",
            Malformed::TooManyExtHeaders => "too_many_ext_headers",
            Malformed::TooManyVlanTags => "too_many_vlan_tags",
        }
    }
}

impl TryFrom<u8> for Malformed {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Malformed::ALL.get(v as usize).copied().ok_or(v)
    }
}

/// Class of a non-IP frame, by EtherType. Index into [`Totals::ether_class`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherClass {
    /// 0x0806 ARP and 0x8035 RARP.
    Arp = 0,
    /// 0x88cc LLDP.
    Lldp = 1,
    /// 0x8847 / 0x8848 MPLS.
    Mpls = 2,
    /// 0x8863 / 0x8864 PPPoE.
    Pppoe = 3,
    /// 0x888e EAPOL (802.1X).
    Eapol = 4,
    /// An 802.3 length field (below 0x0600): LLC/SNAP, STP.
    Llc = 5,
    /// Any other EtherType.
    Other = 6,
}
/// Number of [`EtherClass`] values.
pub const ETHER_CLASSES: usize = 7;

impl EtherClass {
    pub const ALL: [EtherClass; ETHER_CLASSES] = [
        EtherClass::Arp,
        EtherClass::Lldp,
        EtherClass::Mpls,
        EtherClass::Pppoe,
        EtherClass::Eapol,
        EtherClass::Llc,
        EtherClass::Other,
    ];
    /// Classify an EtherType (after VLAN tags) that is not IPv4 or IPv6.
    #[inline(always)]
    pub const fn of(ether_type: u16) -> EtherClass {
        match ether_type {
            0x0806 | 0x8035 => EtherClass::Arp,
            0x88cc => EtherClass::Lldp,
            0x8847 | 0x8848 => EtherClass::Mpls,
            0x8863 | 0x8864 => EtherClass::Pppoe,
            0x888e => EtherClass::Eapol,
            t if t < 0x0600 => EtherClass::Llc,
            _ => EtherClass::Other,
        }
    }
    /// Label value used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            EtherClass::Arp => "arp",
            EtherClass::Lldp => "lldp",
            EtherClass::Mpls => "mpls",
            EtherClass::Pppoe => "pppoe",
            EtherClass::Eapol => "eapol",
            EtherClass::Llc => "llc",
            EtherClass::Other => "other",
        }
    }
}

impl TryFrom<u8> for EtherClass {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        EtherClass::ALL.get(v as usize).copied().ok_or(v)
    }
}

/// Layer-4 class of an IP frame. Index into [`Totals::l4`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Class {
    Tcp = 0,
    Udp = 1,
    /// ICMP and ICMPv6.
    Icmp = 2,
    Sctp = 3,
    /// Any other protocol number, and non-first fragments.
    Other = 4,
}
/// Number of [`L4Class`] values.
pub const L4_CLASSES: usize = 5;

impl L4Class {
    pub const ALL: [L4Class; L4_CLASSES] = [
        L4Class::Tcp,
        L4Class::Udp,
        L4Class::Icmp,
        L4Class::Sctp,
        L4Class::Other,
    ];
    /// Label value used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            L4Class::Tcp => "tcp",
            L4Class::Udp => "udp",
            L4Class::Icmp => "icmp",
            L4Class::Sctp => "sctp",
            L4Class::Other => "other",
        }
    }
}

/// Exact per-interface, per-direction counters (per CPU, cumulative since
/// load). They are updated for every frame, whatever happens to the flow
/// map: `packets == ipv4 + ipv6 + non_ip`, and `non_ip` is the sum of
/// `ether_class`. Malformed frames are counted in their class (IPv4, IPv6 or
/// non-IP) and in `malformed`; only IP frames with a usable header are keyed
/// as flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub non_ip: u64,
    /// IP fragments (first and later ones).
    pub fragments: u64,
    /// Packets that could not be attributed to a flow (flow map full or
    /// insert error), and their bytes.
    pub not_attributed: u64,
    pub not_attributed_bytes: u64,
    /// IP packets per [`L4Class`].
    pub l4: [u64; L4_CLASSES],
    /// Non-IP frames per [`EtherClass`].
    pub ether_class: [u64; ETHER_CLASSES],
    /// Malformed frames per [`Malformed`] reason.
    pub malformed: [u64; MALFORMED_REASONS],
}
const _: () = assert!(
    core::mem::size_of::<Totals>() == 8 * (8 + L4_CLASSES + ETHER_CLASSES + MALFORMED_REASONS)
);

/// Runtime settings the programs read on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Control {
    /// 0: programs write [`MAP_FLOWS_A`]; 1: [`MAP_FLOWS_B`].
    pub active: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Control>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and byte
    // arrays, with every padding byte an explicit field.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::Totals {}
    unsafe impl aya::Pod for super::Control {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_values_are_rejected() {
        for d in [Direction::Ingress, Direction::Egress] {
            assert_eq!(Direction::try_from(d as u8), Ok(d));
        }
        assert_eq!(Direction::try_from(2), Err(2));
        for m in Malformed::ALL {
            assert_eq!(Malformed::try_from(m as u8), Ok(m));
        }
        assert_eq!(Malformed::try_from(MALFORMED_REASONS as u8), Err(6));
        for c in EtherClass::ALL {
            assert_eq!(EtherClass::try_from(c as u8), Ok(c));
        }
        assert_eq!(EtherClass::try_from(200), Err(200));
    }

    #[test]
    fn ether_types_are_classified() {
        assert_eq!(EtherClass::of(0x0806), EtherClass::Arp);
        assert_eq!(EtherClass::of(0x8035), EtherClass::Arp);
        assert_eq!(EtherClass::of(0x88cc), EtherClass::Lldp);
        assert_eq!(EtherClass::of(0x8848), EtherClass::Mpls);
        assert_eq!(EtherClass::of(0x8863), EtherClass::Pppoe);
        assert_eq!(EtherClass::of(0x888e), EtherClass::Eapol);
        assert_eq!(EtherClass::of(0x05ff), EtherClass::Llc);
        assert_eq!(EtherClass::of(0x0600), EtherClass::Other);
    }

    #[test]
    fn totals_slots_do_not_overlap() {
        assert_eq!(totals_index(0, Direction::Ingress as u8), 0);
        assert_eq!(totals_index(1, Direction::Egress as u8), 3);
        assert_eq!(
            totals_index(MAX_IFACE_SLOTS - 1, Direction::Egress as u8),
            TOTALS_ENTRIES - 1
        );
        let labels: [&str; MALFORMED_REASONS] = Malformed::ALL.map(Malformed::as_str);
        for (i, a) in labels.iter().enumerate() {
            assert!(!labels[i + 1..].contains(a), "duplicate label {a}");
        }
    }
}

// ---- benchmark ------------------------------------------------------------
// Used only by `cargo xtask bench` (sensor-ebpf/src/bench.rs and the bench
// driver); the agent never touches these.

/// Benchmark program: the sensor's XDP accounting with the flow key varied
/// per run from a per-CPU counter (see [`BenchConfig`]).
pub const PROG_XDP_BENCH: &str = "sensor_xdp_bench";
/// Benchmark traffic generator for `BPF_F_TEST_XDP_LIVE_FRAMES`: rewrites
/// each frame's source (IPv4/UDP: addresses and source port; IPv6/UDP: the
/// source address, see [`BenchConfig::gen_spoof`]) from a per-CPU counter
/// and returns `XDP_TX`.
pub const PROG_XDP_BENCH_GEN: &str = "sensor_bench_gen";
/// Per-CPU array of [`BENCH_SEQ_ENTRIES`] u64 run counters: index
/// [`BENCH_SEQ_PROG`] for [`PROG_XDP_BENCH`], [`BENCH_SEQ_GEN`] for the generator.
pub const MAP_BENCH_SEQ: &str = "BENCH_SEQ";
/// One-entry array holding [`BenchConfig`].
pub const MAP_BENCH_CFG: &str = "BENCH_CFG";
/// Entries of [`MAP_BENCH_SEQ`].
pub const BENCH_SEQ_ENTRIES: u32 = 2;
/// Counter index of [`PROG_XDP_BENCH`].
pub const BENCH_SEQ_PROG: u32 = 0;
/// Counter index of [`PROG_XDP_BENCH_GEN`].
pub const BENCH_SEQ_GEN: u32 = 1;

/// How the benchmark programs turn their counter `n` into a flow number `k`:
/// `k = n % flows`, or `k = n` when `flows` is 0 (every run a new flow).
/// Written by the bench driver, read by the benchmark programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BenchConfig {
    /// Modulus for [`PROG_XDP_BENCH`].
    pub prog_flows: u64,
    /// Modulus for [`PROG_XDP_BENCH_GEN`].
    pub gen_flows: u64,
    /// How [`PROG_XDP_BENCH_GEN`] spoofs sources: [`GEN_SPOOF_V4`] or
    /// [`GEN_SPOOF_V6`].
    pub gen_spoof: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<BenchConfig>() == 24);

/// Generator mode for an untagged IPv4/UDP frame (the default): flow `k`
/// is 198.18.x.y -> 198.19.x.y with `x.y = (k >> 4) & 0xffff` and source
/// port `10000 + (k & 15)`: at most 65,536 source addresses (1,048,576
/// flows), all inside 198.18.0.0/15 (too small for a million sources).
pub const GEN_SPOOF_V4: u32 = 0;
/// Generator mode for an untagged IPv6/UDP frame: the source becomes
/// `2001:db8:C::K:K` (`C` the CPU number, `K:K` the low 32 bits of flow
/// `k`); destination and ports stay as in the frame. Up to 2^32 distinct
/// source addresses per CPU, all inside 2001:db8::/32, to one destination:
/// the many-spoofed-sources flood.
pub const GEN_SPOOF_V6: u32 = 1;

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], two u64 and two u32 fields, no padding.
unsafe impl aya::Pod for BenchConfig {}
