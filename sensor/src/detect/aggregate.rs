//! One pass over an interval's flows into the signals the detectors use.
//!
//! Definitions (see `docs/detection.md`):
//! - a TCP flow is *incomplete* when every packet it carried this interval
//!   was a SYN or a RST (`packets <= syn + rst`): the client never sent the
//!   ACK that completes a handshake. Its SYNs are *half-open*.
//! - a TCP *probe* is an incomplete flow with a SYN, or a flow with neither
//!   ACK nor RST (FIN, NULL and Xmas scans). It is *answered* when the
//!   reverse flow (destination port back to source port) carried a SYN-ACK
//!   in the same or the previous interval, in either direction of any
//!   interface.
//! - a UDP flow is *answered* when any reverse UDP flow exists in the same
//!   or the previous interval (so a reply straddling an interval boundary
//!   still counts).
//! - an ICMP echo, timestamp, information or address-mask request (ICMPv6
//!   echo request) is a host probe, answered or not.
//! - port probes are unanswered TCP probes and unanswered UDP flows, keyed
//!   by (protocol, destination port); host probes are all TCP probes,
//!   unanswered UDP flows and ICMP requests, keyed by destination.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use sensor_common::{tcp_flags, Direction};

use super::cidr::CidrSet;
use super::config::Directions;
use super::sketch::hash64;
use crate::model::{FlowDelta, FlowKeyExt, Interval};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Per-destination counts over the counted directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DstStats {
    pub syn: u64,
    pub half_open: u64,
    /// Bytes of incomplete TCP flows carrying a SYN.
    pub half_open_bytes: u64,
    pub udp_pkts: u64,
    pub udp_bytes: u64,
    pub icmp_pkts: u64,
    pub icmp_bytes: u64,
    pub pkts: u64,
    pub bytes: u64,
}

/// Per-local-source egress counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutStats {
    pub pkts: u64,
    pub bytes: u64,
}

/// What one source probed this interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SrcProbes {
    /// Hashes of the (protocol, destination port) of unanswered probes.
    pub ports: Vec<u64>,
    /// Hashes of probed destinations.
    pub hosts: Vec<u64>,
    /// Packets and bytes of the probe flows.
    pub pkts: u64,
    pub bytes: u64,
}

/// The interval, summarised.
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    pub dsts: HashMap<IpAddr, DstStats>,
    pub out: HashMap<IpAddr, OutStats>,
    pub probes: HashMap<IpAddr, SrcProbes>,
}

/// Filters shared by the passes over flows.
pub(crate) struct FlowFilter<'a> {
    pub direction: Directions,
    pub allow_sources: &'a CidrSet,
    pub allow_destinations: &'a CidrSet,
}

impl FlowFilter<'_> {
    /// The flow's direction, unless an allowlist exempts it or its code is
    /// unknown.
    pub fn admit(&self, f: &FlowDelta) -> Option<Direction> {
        let d = f.key.direction_code().ok()?;
        if self.allow_sources.contains(&f.key.src_addr)
            || self.allow_destinations.contains(&f.key.dst_addr)
        {
            return None;
        }
        Some(d)
    }
}

/// (protocol, from address, from port, to address, to port).
pub(crate) type ReplyKey = (u8, [u8; 16], u16, [u8; 16], u16);

/// Whether a flow is an ICMP request used by ping sweeps.
fn is_icmp_request(f: &FlowDelta) -> bool {
    match f.key.protocol {
        ICMP => matches!(f.key.src_port, 8 | 13 | 15 | 17),
        ICMPV6 => f.key.src_port == 128,
        _ => false,
    }
}

/// Summarises the interval. `prev_replies` is the reply set the previous
/// call returned; the set of this interval is returned for the next call.
pub(crate) fn aggregate(
    iv: &Interval,
    filter: &FlowFilter<'_>,
    prev_replies: &HashSet<ReplyKey>,
) -> (Aggregate, HashSet<ReplyKey>) {
    // Replies: TCP flows carrying a SYN-ACK and every UDP flow, any direction.
    let mut replies: HashSet<ReplyKey> = HashSet::new();
    for f in &iv.flows {
        let k = &f.key;
        if (k.protocol == TCP && f.value.syn_ack > 0) || (k.protocol == UDP && f.value.packets > 0)
        {
            replies.insert((k.protocol, k.src_addr, k.src_port, k.dst_addr, k.dst_port));
        }
    }
    let mut agg = Aggregate::default();
    for f in &iv.flows {
        let Some(dir) = filter.admit(f) else { continue };
        let (k, v) = (&f.key, &f.value);
        if v.packets == 0 {
            continue;
        }
        if dir == Direction::Egress {
            let o = agg.out.entry(k.src()).or_default();
            o.pkts += v.packets;
            o.bytes += v.bytes;
        }
        if !filter.direction.counts(dir) {
            continue;
        }
        let d = agg.dsts.entry(k.dst()).or_default();
        d.pkts += v.packets;
        d.bytes += v.bytes;
        let incomplete = v.packets <= v.syn + v.rst;
        match k.protocol {
            TCP => {
                d.syn += v.syn;
                if incomplete && v.syn > 0 {
                    d.half_open += v.syn;
                    d.half_open_bytes += v.bytes;
                }
            }
            UDP => {
                d.udp_pkts += v.packets;
                d.udp_bytes += v.bytes;
            }
            ICMP | ICMPV6 => {
                d.icmp_pkts += v.packets;
                d.icmp_bytes += v.bytes;
            }
            _ => {}
        }
        if k.is_later_fragment() {
            continue;
        }
        let reverse = (k.protocol, k.dst_addr, k.dst_port, k.src_addr, k.src_port);
        let (port_probe, host_probe) = match k.protocol {
            TCP => {
                let no_ack_no_rst =
                    v.syn == 0 && v.tcp_flags & (tcp_flags::ACK | tcp_flags::RST) == 0;
                let probe = (v.syn > 0 && incomplete) || no_ack_no_rst;
                let answered = replies.contains(&reverse) || prev_replies.contains(&reverse);
                (probe && !answered, probe)
            }
            UDP => {
                let unanswered = !replies.contains(&reverse) && !prev_replies.contains(&reverse);
                (unanswered, unanswered)
            }
            _ => (false, is_icmp_request(f)),
        };
        if port_probe || host_probe {
            let p = agg.probes.entry(k.src()).or_default();
            p.pkts += v.packets;
            p.bytes += v.bytes;
            if port_probe {
                p.ports.push(hash64(&(k.protocol, k.dst_port)));
            }
            if host_probe {
                p.hosts.push(hash64(&k.dst_addr));
            }
        }
    }
    (agg, replies)
}
