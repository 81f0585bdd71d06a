//! The header walk shared by the XDP and TC programs.
//!
//! One bounds-checked cursor over `[start, end)`. Every read checks its range
//! against `end` right before the access, which is what the verifier needs;
//! logical lengths (IP total length, IPv6 payload length) are checked
//! separately so Ethernet padding is never taken for a header.
//!
//! The walk never fails: it classifies the frame and, for an IP frame with
//! usable headers, fills a flow key. A frame that cannot be keyed carries a
//! [`Malformed`] reason instead.

use core::mem::size_of;

use sensor_common::{EtherClass, L4Class, Malformed, FLOW_F_FRAGMENT, MAX_IPV6_EXT_HEADERS};

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

/// Largest offset the walk ever reads at; keeps every offset provably
/// bounded for the verifier. Headers beyond it are treated as cut off.
const MAX_OFFSET: usize = 512;

/// What the walk learned about one frame.
pub struct Parsed {
    pub class: L3,
    /// Set when the frame is malformed; such a frame is never keyed.
    pub malformed: Option<Malformed>,
    /// An IP fragment (first or later).
    pub fragment: bool,
    /// VLAN id of the outermost tag found in the frame data (0: none).
    pub vlan_id: u16,
    /// VLAN tags found in the frame data.
    pub vlan_tags: u8,
    pub ip_version: u8,
    pub protocol: u8,
    /// Addresses as four words holding the bytes in network order (IPv4 as
    /// IPv4-mapped IPv6). Words, not bytes: zeroing and copying them takes
    /// four stores, where a byte array made LLVM call a byte-loop `memset`
    /// on every packet.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub key_flags: u8,
    pub l4: L4Class,
    /// TCP flags byte (0 when not TCP or a later fragment).
    pub tcp_flags: u8,
}

/// Layer-3 class of a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    NonIp(EtherClass),
}

impl Parsed {
    #[inline(always)]
    const fn new() -> Self {
        Parsed {
            class: L3::NonIp(EtherClass::Other),
            malformed: None,
            fragment: false,
            vlan_id: 0,
            vlan_tags: 0,
            ip_version: 0,
            protocol: 0,
            src: [0; 4],
            dst: [0; 4],
            src_port: 0,
            dst_port: 0,
            key_flags: 0,
            l4: L4Class::Other,
            tcp_flags: 0,
        }
    }

    /// True when the frame yields a flow key.
    #[inline(always)]
    pub fn keyed(&self) -> bool {
        self.malformed.is_none() && !matches!(self.class, L3::NonIp(_))
    }
}

/// Returns a pointer to a `T` at `off`, or `None` if it would cross `end`.
#[inline(always)]
fn at<T>(start: usize, end: usize, off: usize) -> Option<*const T> {
    if off > MAX_OFFSET {
        return None;
    }
    let p = start + off;
    if p + size_of::<T>() > end {
        return None;
    }
    Some(p as *const T)
}

#[inline(always)]
fn be16(start: usize, end: usize, off: usize) -> Option<u16> {
    // SAFETY: `at` checked that the two bytes lie inside the frame.
    at::<[u8; 2]>(start, end, off).map(|p| u16::from_be_bytes(unsafe { *p }))
}

/// Walks the headers of the frame in `[start, end)`.
///
/// `frame_len` is the whole frame's length: for TC it exceeds `end - start`
/// when the payload sits in paged fragments, and the IP length fields are
/// checked against it. `tags_outside` is the number of VLAN tags already
/// stripped from the data (TC with VLAN offload); they count against the
/// two-tag limit.
#[inline(always)]
pub fn parse(start: usize, end: usize, frame_len: usize, tags_outside: u8) -> Parsed {
    let mut p = Parsed::new();
    let Some(mut ether_type) = be16(start, end, 12) else {
        p.malformed = Some(Malformed::TruncatedEthernet);
        return p;
    };
    let mut off = 14usize;
    // Unrolled: at most MAX_VLAN_TAGS tags, plus one more to detect excess.
    for _ in 0..3 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD && ether_type != ETH_P_QINQ1 {
            break;
        }
        if (tags_outside + p.vlan_tags) as usize >= sensor_common::MAX_VLAN_TAGS {
            p.malformed = Some(Malformed::TooManyVlanTags);
            return p;
        }
        let (Some(tci), Some(next)) = (be16(start, end, off), be16(start, end, off + 2)) else {
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
            ipv4(&mut p, start, end, frame_len, off);
        }
        ETH_P_IPV6 => {
            p.class = L3::Ipv6;
            p.ip_version = 6;
            ipv6(&mut p, start, end, frame_len, off);
        }
        t if t == ETH_P_8021Q || t == ETH_P_8021AD || t == ETH_P_QINQ1 => {
            p.malformed = Some(Malformed::TooManyVlanTags);
        }
        t => p.class = L3::NonIp(EtherClass::of(t)),
    }
    p
}

#[inline(always)]
fn ipv4(p: &mut Parsed, start: usize, end: usize, frame_len: usize, off: usize) {
    let Some(h) = at::<[u8; 20]>(start, end, off) else {
        p.malformed = Some(Malformed::TruncatedIp);
        return;
    };
    // SAFETY: `at` checked the 20 bytes.
    let h = unsafe { &*h };
    let ihl = (h[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || off + total > frame_len {
        p.malformed = Some(Malformed::BadIpHeader);
        return;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    p.protocol = h[9];
    const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    p.src = [0, 0, MAPPED, word(h, 12)];
    p.dst = [0, 0, MAPPED, word(h, 16)];
    p.fragment = more_fragments || frag_offset != 0;
    if frag_offset != 0 {
        p.key_flags |= FLOW_F_FRAGMENT;
        p.l4 = L4Class::Other;
        return;
    }
    l4(p, start, end, off + ihl, total - ihl);
}

/// Four header bytes from `at` on, as a word in memory order.
#[inline(always)]
fn word(h: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

#[inline(always)]
fn ipv6(p: &mut Parsed, start: usize, end: usize, frame_len: usize, off: usize) {
    let Some(h) = at::<[u8; 40]>(start, end, off) else {
        p.malformed = Some(Malformed::TruncatedIp);
        return;
    };
    // SAFETY: `at` checked the 40 bytes.
    let h = unsafe { &*h };
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    if h[0] >> 4 != 6 || off + 40 + payload > frame_len {
        p.malformed = Some(Malformed::BadIpHeader);
        return;
    }
    p.src = [word(h, 8), word(h, 12), word(h, 16), word(h, 20)];
    p.dst = [word(h, 24), word(h, 28), word(h, 32), word(h, 36)];
    let mut next = h[6];
    let mut cur = off + 40;
    let mut left = payload;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !matches!(
            next,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
        ) {
            break;
        }
        // Every extension header is at least 8 bytes and starts with the
        // next-header byte and (but for the fragment header) a length.
        let Some(e) = at::<[u8; 8]>(start, end, cur) else {
            p.malformed = Some(Malformed::TruncatedIp);
            return;
        };
        // SAFETY: `at` checked the 8 bytes.
        let e = unsafe { &*e };
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
                // A later fragment: no upper-layer header to read.
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
    if matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    ) {
        p.malformed = Some(Malformed::TooManyExtHeaders);
        return;
    }
    p.protocol = next;
    l4(p, start, end, cur, left);
}

/// Reads the upper-layer header at `off`; `len` is what the IP header says
/// follows (never more than the frame holds).
///
/// The bounds check against the frame comes before the check against `len`:
/// the other order lets LLVM prove the frame check redundant (the IP length
/// was already checked against the frame) and drop it, which the verifier
/// cannot follow.
#[inline(always)]
fn l4(p: &mut Parsed, start: usize, end: usize, off: usize, len: usize) {
    let (l4, need) = match p.protocol {
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
    p.l4 = l4;
    match l4 {
        L4Class::Tcp => {
            let Some(h) = at::<[u8; 20]>(start, end, off) else {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            };
            // SAFETY: `at` checked the 20 bytes.
            let h = unsafe { &*h };
            let doff = (h[12] >> 4) as usize * 4;
            if len < need || doff < 20 || doff > len {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            }
            p.src_port = u16::from_be_bytes([h[0], h[1]]);
            p.dst_port = u16::from_be_bytes([h[2], h[3]]);
            p.tcp_flags = h[13];
        }
        L4Class::Sctp => {
            let Some(h) = at::<[u8; 12]>(start, end, off) else {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            };
            // SAFETY: `at` checked the 12 bytes.
            let h = unsafe { &*h };
            if len < need {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            }
            p.src_port = u16::from_be_bytes([h[0], h[1]]);
            p.dst_port = u16::from_be_bytes([h[2], h[3]]);
        }
        _ => {
            // UDP (ports in the first four bytes) and ICMP (type, code).
            let Some(h) = at::<[u8; 8]>(start, end, off) else {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            };
            // SAFETY: `at` checked the 8 bytes.
            let h = unsafe { &*h };
            if len < need {
                p.malformed = Some(Malformed::TruncatedL4);
                return;
            }
            if l4 == L4Class::Icmp {
                p.src_port = h[0] as u16;
                p.dst_port = h[1] as u16;
            } else {
                p.src_port = u16::from_be_bytes([h[0], h[1]]);
                p.dst_port = u16::from_be_bytes([h[2], h[3]]);
            }
        }
    }
}
