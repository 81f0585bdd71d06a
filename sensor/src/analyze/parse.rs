//! The kernel's header walk, in userspace, for captured frames.
//!
//! This mirrors `sensor-ebpf/src/parse.rs` rule for rule, so a frame read
//! from a capture is classified and keyed exactly as the XDP and TC
//! programs would: the outermost VLAN id, at most [`MAX_VLAN_TAGS`] tags,
//! IPv4 options, the first fragment keyed with ports and later ones without
//! (with [`FLOW_F_FRAGMENT`]), at most [`MAX_IPV6_EXT_HEADERS`] extension
//! headers, the same [`Malformed`] reasons and [`EtherClass`] of non-IP
//! frames, and the same 512-byte limit on header offsets. The kernel reads
//! fixed-size headers through one bounds-checked cursor; here a slice plays
//! that part. `tests/analyze.rs` feeds the same frames through both and
//! compares the results.
//!
//! [`account`] then does what the kernel's `count.rs` does with the result:
//! exact totals for every frame, and the flow key and TCP flag counters for
//! keyed ones.

use sensor_common::{
    tcp_flags, Direction, EtherClass, FlowKey, FlowValue, L4Class, Malformed, Totals,
    FLOW_F_FRAGMENT, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS,
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ1: u16 = 0x9100;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;

/// Largest offset the kernel walk reads at (its verifier bound); headers
/// beyond it count as cut off, as in the kernel.
const MAX_OFFSET: usize = 512;

/// Layer-3 class of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    /// EtherType 0x0800 (after VLAN tags).
    Ipv4,
    /// EtherType 0x86dd.
    Ipv6,
    /// Anything else, by class.
    NonIp(EtherClass),
}

/// What the walk learned about one frame (the kernel's `Parsed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Layer-3 class.
    pub class: L3,
    /// Set when the frame is malformed; such a frame is never keyed.
    pub malformed: Option<Malformed>,
    /// An IP fragment (first or later).
    pub fragment: bool,
    /// VLAN id of the outermost tag found in the frame data (0: none).
    pub vlan_id: u16,
    /// VLAN tags found in the frame data.
    pub vlan_tags: u8,
    /// 4 or 6 for IP frames, else 0.
    pub ip_version: u8,
    /// IP protocol (IPv6: after extension headers).
    pub protocol: u8,
    /// Source address (IPv4 v4-mapped).
    pub src: [u8; 16],
    /// Destination address (IPv4 v4-mapped).
    pub dst: [u8; 16],
    /// Source port, or ICMP type.
    pub src_port: u16,
    /// Destination port, or ICMP code.
    pub dst_port: u16,
    /// `FLOW_F_*` bits.
    pub key_flags: u8,
    /// Layer-4 class.
    pub l4: L4Class,
    /// TCP flags byte (0 when not TCP or a later fragment).
    pub tcp_flags: u8,
}

impl Parsed {
    fn new() -> Parsed {
        Parsed {
            class: L3::NonIp(EtherClass::Other),
            malformed: None,
            fragment: false,
            vlan_id: 0,
            vlan_tags: 0,
            ip_version: 0,
            protocol: 0,
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            key_flags: 0,
            l4: L4Class::Other,
            tcp_flags: 0,
        }
    }

    /// True when the frame yields a flow key.
    pub fn keyed(&self) -> bool {
        self.malformed.is_none() && !matches!(self.class, L3::NonIp(_))
    }

    /// The flow key the kernel would use on `ifindex` in `direction`.
    pub fn key(&self, ifindex: u32, direction: Direction) -> Option<FlowKey> {
        self.keyed().then_some(FlowKey {
            src_addr: self.src,
            dst_addr: self.dst,
            ifindex,
            vlan_id: self.vlan_id,
            src_port: self.src_port,
            dst_port: self.dst_port,
            direction: direction as u8,
            ip_version: self.ip_version,
            protocol: self.protocol,
            flags: self.key_flags,
            _pad: [0; 2],
        })
    }
}

/// `data[off..off + N]`, or `None` past the offset limit or the data.
fn at<const N: usize>(data: &[u8], off: usize) -> Option<&[u8; N]> {
    if off > MAX_OFFSET {
        return None;
    }
    data.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn be16(data: &[u8], off: usize) -> Option<u16> {
    at::<2>(data, off).map(|b| u16::from_be_bytes(*b))
}

fn is_vlan(t: u16) -> bool {
    t == ETH_P_8021Q || t == ETH_P_8021AD || t == ETH_P_QINQ1
}

/// Walks the headers of a frame.
///
/// `data` is what was captured (the kernel's `[start, end)`); `frame_len`
/// is the whole frame's length on the wire, against which IP length fields
/// are checked (it exceeds `data.len()` when the capture was cut by the
/// snap length). `tags_outside` counts VLAN tags already removed from the
/// data, as the TC program's offloaded tag.
pub fn parse(data: &[u8], frame_len: usize, tags_outside: u8) -> Parsed {
    let mut p = Parsed::new();
    let Some(mut ether_type) = be16(data, 12) else {
        p.malformed = Some(Malformed::TruncatedEthernet);
        return p;
    };
    let mut off = 14usize;
    for _ in 0..3 {
        if !is_vlan(ether_type) {
            break;
        }
        if usize::from(tags_outside) + usize::from(p.vlan_tags) >= MAX_VLAN_TAGS {
            p.malformed = Some(Malformed::TooManyVlanTags);
            return p;
        }
        let (Some(tci), Some(next)) = (be16(data, off), be16(data, off + 2)) else {
            p.malformed = Some(Malformed::TruncatedEthernet);
            return p;
        };
        if p.vlan_tags == 0 {
            p.vlan_id = tci & 0x0fff;
        }
        p.vlan_tags += 1;
        ether_type = next;
        off += 4;
    }
    match ether_type {
        ETH_P_IPV4 => {
            p.class = L3::Ipv4;
            p.ip_version = 4;
            ipv4(&mut p, data, frame_len, off);
        }
        ETH_P_IPV6 => {
            p.class = L3::Ipv6;
            p.ip_version = 6;
            ipv6(&mut p, data, frame_len, off);
        }
        t if is_vlan(t) => p.malformed = Some(Malformed::TooManyVlanTags),
        t => p.class = L3::NonIp(EtherClass::of(t)),
    }
    p
}

fn ipv4(p: &mut Parsed, data: &[u8], frame_len: usize, off: usize) {
    let Some(h) = at::<20>(data, off) else {
        p.malformed = Some(Malformed::TruncatedIp);
        return;
    };
    let ihl = (h[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || off + total > frame_len {
        p.malformed = Some(Malformed::BadIpHeader);
        return;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let frag_offset = frag & 0x1fff;
    p.protocol = h[9];
    p.src[10] = 0xff;
    p.src[11] = 0xff;
    p.src[12..16].copy_from_slice(&h[12..16]);
    p.dst[10] = 0xff;
    p.dst[11] = 0xff;
    p.dst[12..16].copy_from_slice(&h[16..20]);
    p.fragment = frag & 0x2000 != 0 || frag_offset != 0;
    if frag_offset != 0 {
        p.key_flags |= FLOW_F_FRAGMENT;
        p.l4 = L4Class::Other;
        return;
    }
    l4(p, data, off + ihl, total - ihl);
}

fn is_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

fn ipv6(p: &mut Parsed, data: &[u8], frame_len: usize, off: usize) {
    let Some(h) = at::<40>(data, off) else {
        p.malformed = Some(Malformed::TruncatedIp);
        return;
    };
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    if h[0] >> 4 != 6 || off + 40 + payload > frame_len {
        p.malformed = Some(Malformed::BadIpHeader);
        return;
    }
    p.src.copy_from_slice(&h[8..24]);
    p.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut cur = off + 40;
    let mut left = payload;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ext(next) {
            break;
        }
        let Some(e) = at::<8>(data, cur) else {
            p.malformed = Some(Malformed::TruncatedIp);
            return;
        };
        let len = match next {
            IPPROTO_AH => (e[1] as usize + 2) * 4,
            IPPROTO_FRAGMENT => 8,
            _ => (e[1] as usize + 1) * 8,
        };
        if len > left {
            p.malformed = Some(Malformed::TruncatedIp);
            return;
        }
        if next == IPPROTO_FRAGMENT {
            p.fragment = true;
            if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                p.protocol = e[0];
                p.key_flags |= FLOW_F_FRAGMENT;
                p.l4 = L4Class::Other;
                return;
            }
        }
        next = e[0];
        cur += len;
        left -= len;
    }
    if is_ext(next) {
        p.malformed = Some(Malformed::TooManyExtHeaders);
        return;
    }
    p.protocol = next;
    l4(p, data, cur, left);
}

fn l4(p: &mut Parsed, data: &[u8], off: usize, len: usize) {
    let (class, need) = match p.protocol {
        IPPROTO_TCP => (L4Class::Tcp, 20),
        IPPROTO_UDP => (L4Class::Udp, 8),
        IPPROTO_SCTP => (L4Class::Sctp, 12),
        IPPROTO_ICMP if p.ip_version == 4 => (L4Class::Icmp, 8),
        IPPROTO_ICMPV6 if p.ip_version == 6 => (L4Class::Icmp, 8),
        _ => {
            p.l4 = L4Class::Other;
            return;
        }
    };
    p.l4 = class;
    // Same order as the kernel: the frame check first, then the length.
    let Some(h) = at::<8>(data, off) else {
        p.malformed = Some(Malformed::TruncatedL4);
        return;
    };
    match class {
        L4Class::Tcp => {
            let Some(t) = at::<20>(data, off) else {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            };
            let doff = (t[12] >> 4) as usize * 4;
            if len < need || doff < 20 || doff > len {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            }
            p.tcp_flags = t[13];
        }
        L4Class::Sctp => {
            if at::<12>(data, off).is_none() || len < need {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            }
        }
        _ => {
            if len < need {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            }
        }
    }
    if class == L4Class::Icmp {
        p.src_port = h[0] as u16;
        p.dst_port = h[1] as u16;
    } else {
        p.src_port = u16::from_be_bytes([h[0], h[1]]);
        p.dst_port = u16::from_be_bytes([h[2], h[3]]);
    }
}

/// Counts one parsed frame of `len` bytes into `totals`, as the kernel's
/// `account` does: every frame in its class, fragments, malformed reasons,
/// and the L4 class of keyed frames. Returns the flow key when keyed.
pub fn account(
    totals: &mut Totals,
    p: &Parsed,
    len: u64,
    ifindex: u32,
    direction: Direction,
) -> Option<FlowKey> {
    totals.packets += 1;
    totals.bytes += len;
    match p.class {
        L3::Ipv4 => totals.ipv4 += 1,
        L3::Ipv6 => totals.ipv6 += 1,
        L3::NonIp(class) => {
            totals.non_ip += 1;
            totals.ether_class[class as usize] += 1;
        }
    }
    if p.fragment {
        totals.fragments += 1;
    }
    if let Some(reason) = p.malformed {
        totals.malformed[reason as usize] += 1;
        return None;
    }
    let key = p.key(ifindex, direction)?;
    totals.l4[p.l4 as usize] += 1;
    Some(key)
}

/// Adds one packet to a flow value, as the kernel's `add`.
pub fn add_packet(v: &mut FlowValue, now_ns: u64, len: u64, flags: u8) {
    if v.packets == 0 {
        v.first_seen_ns = now_ns;
    }
    v.packets += 1;
    v.bytes += len;
    v.first_seen_ns = v.first_seen_ns.min(now_ns);
    v.last_seen_ns = v.last_seen_ns.max(now_ns);
    if flags != 0 {
        let f = u32::from(flags);
        v.tcp_flags |= f;
        if f & tcp_flags::SYN != 0 {
            if f & tcp_flags::ACK != 0 {
                v.syn_ack += 1;
            } else {
                v.syn += 1;
            }
        }
        if f & tcp_flags::FIN != 0 {
            v.fin += 1;
        }
        if f & tcp_flags::RST != 0 {
            v.rst += 1;
        }
    }
}
