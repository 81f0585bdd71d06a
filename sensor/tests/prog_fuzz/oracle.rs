//! The oracle: what the kernel must do with a frame, from etherparse's
//! parse of the same bytes.
//!
//! [`expect`] walks the frame with etherparse's slicers, the same ones its
//! whole-frame `SlicedPacket::from_ethernet` uses (`Ethernet2Slice`,
//! `SingleVlanSlice`, `Ipv4Slice`, `Ipv6HeaderSlice` and the extension
//! header slices, `TcpSlice`, `UdpSlice`, `Icmpv4Slice`, `Icmpv6Slice`),
//! mapping etherparse's errors to [`Malformed`] reasons. Where the kernel's
//! documented rules (sensor-ebpf/src/parse.rs, the contract in
//! sensor-common) differ from etherparse, the walk applies the kernel's rule
//! and records it as a [`Rule`]. [`whole_frame`] is etherparse's own verdict;
//! a frame no rule touched must get the same verdict from both.

use etherparse::{
    err::{self, Layer},
    EtherType, Ethernet2Slice, IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv4Slice, Ipv6ExtensionSlice,
    Ipv6FragmentHeaderSlice, Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, LinkExtSlice, NetSlice,
    SingleVlanSlice, SlicedPacket, TcpSlice, TransportSlice, UdpHeaderSlice, UdpSlice,
};
use sensor_common::{
    Direction, EtherClass, FlowKey, L4Class, Malformed, FLOW_F_FRAGMENT, MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS,
};

use crate::common::TEST_IFINDEX;

/// parse.rs `MAX_OFFSET`: the walk reads no header that starts past this
/// offset in the frame (it treats one there as cut off).
pub const MAX_OFFSET: usize = 512;

const TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Layer-3 class, as the totals count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    V4,
    V6,
    NonIp(EtherClass),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Keyed {
        key: FlowKey,
        l4: L4Class,
        tcp_flags: u8,
    },
    Malformed(Malformed),
    NotIp,
}

/// A kernel rule (parse.rs) applied where etherparse's parse differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// At most `MAX_VLAN_TAGS` (2) tags; a third is `TooManyVlanTags`
    /// whatever follows. etherparse walks three link extensions.
    VlanLimit,
    /// Non-IP EtherTypes are only classed, never parsed (etherparse parses
    /// ARP and MACsec, and may reject them or find IP inside MACsec).
    NonIpNotParsed,
    /// IPv4 protocol 51 is keyed as protocol 51 without ports: the kernel
    /// does not walk an authentication header after IPv4 (etherparse does,
    /// and keys the protocol after it).
    Ipv4AhNotWalked,
    /// A first fragment (offset 0, more fragments) has its transport header
    /// read and keyed; etherparse stops at any fragment.
    FirstFragmentL4,
    /// IPv6: the walk stops at a later fragment's header and keys its
    /// next-header value; etherparse walks on through extension headers.
    LaterFragmentStops,
    /// The UDP length field is never read; etherparse rejects a UDP length
    /// beyond the IP payload or below 8.
    UdpLengthIgnored,
    /// Only the 8-byte ICMP header is read; etherparse requires exactly 20
    /// bytes for ICMP timestamp messages.
    IcmpFixedHeader,
    /// ICMP (1) in IPv6 and ICMPv6 (58) in IPv4 are other protocols, keyed
    /// without ports; etherparse parses either in both versions.
    IcmpOtherVersion,
    /// IGMP is another protocol, keyed without ports; etherparse parses it.
    IgmpNotParsed,
    /// SCTP ports come from its 12-byte common header; etherparse has no
    /// SCTP parser, so the oracle reads the ports from the IP payload
    /// etherparse delimited.
    SctpPorts,
    /// An IPv6 payload length of 0 means an empty payload; etherparse takes
    /// it as a jumbogram and the rest of the frame as payload.
    Ipv6ZeroPayloadLen,
    /// A hop-by-hop header is walked wherever it appears; etherparse
    /// rejects one that is not first.
    HopByHopAnywhere,
    /// An authentication header with payload length 0 is an 8-byte header;
    /// etherparse rejects it.
    AhZeroLen,
    /// At most `MAX_IPV6_EXT_HEADERS` (6) extension headers are walked; one
    /// more is `TooManyExtHeaders`. etherparse walks any number.
    ExtWalkLimit,
    /// A header starting past `MAX_OFFSET` counts as cut off.
    MaxOffset,
}

pub struct Expect {
    pub class: Class,
    /// The kernel counts the frame as an IP fragment.
    pub fragment: bool,
    pub outcome: Outcome,
    /// Rules applied, in walk order.
    pub rules: Vec<Rule>,
}

/// The kernel's expected treatment of `frame` (the bytes the program sees).
pub fn expect(frame: &[u8]) -> Expect {
    let mut w = Walk {
        class: Class::NonIp(EtherClass::Other),
        fragment: false,
        first_fragment: false,
        vlan_id: 0,
        rules: Vec::new(),
    };
    let outcome = w.link(frame);
    Expect {
        class: w.class,
        fragment: w.fragment,
        outcome,
        rules: w.rules,
    }
}

struct Walk {
    class: Class,
    fragment: bool,
    first_fragment: bool,
    vlan_id: u16,
    rules: Vec<Rule>,
}

fn mapped(a: [u8; 4]) -> [u8; 16] {
    std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets()
}

fn is_ext(proto: u8) -> bool {
    matches!(proto, 0 | 43 | 44 | 51 | 60)
}

/// L4 class by IP version and protocol, as the contract defines it.
fn l4_class(version: u8, proto: u8) -> L4Class {
    match (version, proto) {
        (_, 6) => L4Class::Tcp,
        (_, 17) => L4Class::Udp,
        (_, 132) => L4Class::Sctp,
        (4, 1) | (6, 58) => L4Class::Icmp,
        _ => L4Class::Other,
    }
}

/// The TCP flags byte, from etherparse's flag accessors.
fn tcp_flags(t: &TcpSlice) -> u8 {
    [
        t.fin(),
        t.syn(),
        t.rst(),
        t.psh(),
        t.ack(),
        t.urg(),
        t.ece(),
        t.cwr(),
    ]
    .iter()
    .enumerate()
    .fold(0, |acc, (i, &b)| acc | (b as u8) << i)
}

/// What the kernel keys for an IP packet.
struct Ip {
    version: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

impl Ip {
    fn key(&self, vlan_id: u16, proto: u8, ports: (u16, u16), flags: u8) -> FlowKey {
        FlowKey {
            src_addr: self.src,
            dst_addr: self.dst,
            ifindex: TEST_IFINDEX,
            vlan_id,
            src_port: ports.0,
            dst_port: ports.1,
            direction: Direction::Ingress as u8,
            ip_version: self.version,
            protocol: proto,
            flags,
            _pad: [0; 2],
        }
    }
}

impl Walk {
    fn rule(&mut self, r: Rule) {
        self.rules.push(r);
    }

    fn keyed(&self, ip: &Ip, proto: u8, ports: (u16, u16), tcp_flags: u8) -> Outcome {
        Outcome::Keyed {
            key: ip.key(self.vlan_id, proto, ports, 0),
            l4: l4_class(ip.version, proto),
            tcp_flags,
        }
    }

    /// A later fragment: keyed by protocol, no ports, class other.
    fn later_fragment(&self, ip: &Ip, proto: u8) -> Outcome {
        Outcome::Keyed {
            key: ip.key(self.vlan_id, proto, (0, 0), FLOW_F_FRAGMENT),
            l4: L4Class::Other,
            tcp_flags: 0,
        }
    }

    fn link(&mut self, f: &[u8]) -> Outcome {
        let Ok(eth) = Ethernet2Slice::from_slice_without_fcs(f) else {
            return Outcome::Malformed(Malformed::TruncatedEthernet);
        };
        let mut et = eth.ether_type();
        let mut rest = eth.payload_slice();
        let mut tags = 0;
        while TPIDS.contains(&et.0) {
            if tags == MAX_VLAN_TAGS {
                self.rule(Rule::VlanLimit);
                return Outcome::Malformed(Malformed::TooManyVlanTags);
            }
            let Ok(tag) = SingleVlanSlice::from_slice(rest) else {
                return Outcome::Malformed(Malformed::TruncatedEthernet);
            };
            if tags == 0 {
                self.vlan_id = tag.vlan_identifier().value();
            }
            tags += 1;
            et = tag.ether_type();
            rest = tag.payload_slice();
        }
        let off = f.len() - rest.len();
        match et {
            EtherType::IPV4 => {
                self.class = Class::V4;
                self.ipv4(rest, off)
            }
            EtherType::IPV6 => {
                self.class = Class::V6;
                self.ipv6(rest, off)
            }
            other => {
                self.class = Class::NonIp(EtherClass::of(other.0));
                if other == EtherType::ARP || other == EtherType::MACSEC {
                    self.rule(Rule::NonIpNotParsed);
                }
                Outcome::NotIp
            }
        }
    }

    fn ipv4(&mut self, s: &[u8], off: usize) -> Outcome {
        use err::ipv4::SliceError as E;
        match Ipv4Slice::from_slice(s) {
            // The fixed 20 bytes are missing.
            Err(E::Len(l)) if l.layer == Layer::Ipv4Header && l.len < 20 => {
                return Outcome::Malformed(Malformed::TruncatedIp)
            }
            // Options cut off, total length below the header or beyond
            // the frame: once the fixed header is there, the kernel sees
            // a length field that disagrees with the frame.
            Err(E::Len(l)) if matches!(l.layer, Layer::Ipv4Header | Layer::Ipv4Packet) => {
                return Outcome::Malformed(Malformed::BadIpHeader)
            }
            // Wrong version, IHL below 5.
            Err(E::Header(_)) => return Outcome::Malformed(Malformed::BadIpHeader),
            // Ok, or an error in an authentication header, which the kernel
            // does not walk (below).
            _ => {}
        }
        let h = Ipv4HeaderSlice::from_slice(s).expect("the header parsed above");
        let payload = &s[h.slice().len()..h.total_len() as usize];
        let ip = Ip {
            version: 4,
            src: mapped(h.source()),
            dst: mapped(h.destination()),
        };
        let proto = h.protocol().0;
        if proto == 51 {
            self.rule(Rule::Ipv4AhNotWalked);
        }
        self.fragment = h.is_fragmenting_payload();
        if h.fragments_offset().value() != 0 {
            return self.later_fragment(&ip, proto);
        }
        self.first_fragment = h.more_fragments();
        self.l4(&ip, proto, payload, off + h.slice().len())
    }

    fn ipv6(&mut self, s: &[u8], off: usize) -> Outcome {
        use err::ipv6::HeaderSliceError as E;
        let h = match Ipv6HeaderSlice::from_slice(s) {
            Err(E::Len(_)) => return Outcome::Malformed(Malformed::TruncatedIp),
            Err(E::Content(_)) => return Outcome::Malformed(Malformed::BadIpHeader),
            Ok(h) => h,
        };
        let payload_len = h.payload_length() as usize;
        if 40 + payload_len > s.len() {
            // etherparse: a length error in layer Ipv6Packet.
            return Outcome::Malformed(Malformed::BadIpHeader);
        }
        if payload_len == 0 && s.len() > 40 {
            self.rule(Rule::Ipv6ZeroPayloadLen);
        }
        let ip = Ip {
            version: 6,
            src: h.source(),
            dst: h.destination(),
        };
        let mut p = &s[40..40 + payload_len];
        let mut cur = off + 40;
        let mut next = h.next_header().0;
        for i in 0..=MAX_IPV6_EXT_HEADERS {
            if !is_ext(next) {
                break;
            }
            if i == MAX_IPV6_EXT_HEADERS {
                self.rule(Rule::ExtWalkLimit);
                return Outcome::Malformed(Malformed::TooManyExtHeaders);
            }
            if cur > MAX_OFFSET {
                self.rule(Rule::MaxOffset);
                return Outcome::Malformed(Malformed::TruncatedIp);
            }
            if next == 0 && i > 0 {
                self.rule(Rule::HopByHopAnywhere);
            }
            // A cut-off extension header: etherparse's length errors in
            // Ipv6ExtHeader, Ipv6FragHeader and IpAuthHeader.
            let cut = Outcome::Malformed(Malformed::TruncatedIp);
            let len = match next {
                44 => {
                    let Ok(fh) = Ipv6FragmentHeaderSlice::from_slice(p) else {
                        return cut;
                    };
                    self.fragment = true;
                    if fh.fragment_offset().value() != 0 {
                        if is_ext(fh.next_header().0) {
                            self.rule(Rule::LaterFragmentStops);
                        }
                        return self.later_fragment(&ip, fh.next_header().0);
                    }
                    self.first_fragment |= fh.more_fragments();
                    next = fh.next_header().0;
                    fh.slice().len()
                }
                51 if p.len() >= 8 && p[1] == 0 => {
                    self.rule(Rule::AhZeroLen);
                    next = p[0];
                    8
                }
                51 => {
                    let Ok(a) = IpAuthHeaderSlice::from_slice(p) else {
                        return cut;
                    };
                    next = a.next_header().0;
                    a.slice().len()
                }
                _ => {
                    let Ok(e) = Ipv6RawExtHeaderSlice::from_slice(p) else {
                        return cut;
                    };
                    next = e.next_header().0;
                    e.slice().len()
                }
            };
            p = &p[len..];
            cur += len;
        }
        self.l4(&ip, next, p, cur)
    }

    /// The transport header in `p` (the IP payload after the IP headers),
    /// which starts at frame offset `off`.
    fn l4(&mut self, ip: &Ip, proto: u8, p: &[u8], off: usize) -> Outcome {
        let class = l4_class(ip.version, proto);
        if class == L4Class::Other {
            match (ip.version, proto) {
                (6, 1) | (4, 58) => self.rule(Rule::IcmpOtherVersion),
                (_, 2) => self.rule(Rule::IgmpNotParsed),
                _ => {}
            }
            return self.keyed(ip, proto, (0, 0), 0);
        }
        if self.first_fragment {
            self.rule(Rule::FirstFragmentL4);
        }
        if off > MAX_OFFSET {
            self.rule(Rule::MaxOffset);
            return Outcome::Malformed(Malformed::TruncatedL4);
        }
        let cut = Outcome::Malformed(Malformed::TruncatedL4);
        match class {
            // A length error, or a data offset below 5.
            L4Class::Tcp => match TcpSlice::from_slice(p) {
                Ok(t) => self.keyed(
                    ip,
                    proto,
                    (t.source_port(), t.destination_port()),
                    tcp_flags(&t),
                ),
                Err(_) => cut,
            },
            L4Class::Udp => match UdpSlice::from_slice(p) {
                Ok(u) => self.keyed(ip, proto, (u.source_port(), u.destination_port()), 0),
                Err(l)
                    if l.layer == Layer::UdpPayload
                        || l.len_source == etherparse::LenSource::UdpHeaderLen =>
                {
                    self.rule(Rule::UdpLengthIgnored);
                    let u = UdpHeaderSlice::from_slice(p).expect("8 bytes are there");
                    self.keyed(ip, proto, (u.source_port(), u.destination_port()), 0)
                }
                Err(_) => cut,
            },
            L4Class::Icmp if ip.version == 4 => match etherparse::Icmpv4Slice::from_slice(p) {
                Ok(i) => self.keyed(ip, proto, (i.type_u8().into(), i.code_u8().into()), 0),
                Err(l) if l.layer == Layer::Icmpv4 => cut,
                Err(_) => {
                    self.rule(Rule::IcmpFixedHeader);
                    self.keyed(ip, proto, (p[0].into(), p[1].into()), 0)
                }
            },
            L4Class::Icmp => match etherparse::Icmpv6Slice::from_slice(p) {
                Ok(i) => self.keyed(ip, proto, (i.type_u8().into(), i.code_u8().into()), 0),
                Err(_) => cut,
            },
            _ => {
                self.rule(Rule::SctpPorts);
                if p.len() < 12 {
                    return cut;
                }
                let port = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
                self.keyed(ip, proto, (port(0), port(2)), 0)
            }
        }
    }
}

/// etherparse's whole-frame verdict (`SlicedPacket::from_ethernet`) in the
/// kernel's terms; `None` for an error with no kernel counterpart (only a
/// frame some [`Rule`] touched may have one).
pub fn whole_frame(f: &[u8]) -> Option<Outcome> {
    use err::packet::SliceError as E;
    use Malformed::*;
    let p = match SlicedPacket::from_ethernet(f) {
        Err(E::Len(l)) => {
            return Some(Outcome::Malformed(match l.layer {
                Layer::Ethernet2Header | Layer::VlanHeader => TruncatedEthernet,
                Layer::Ipv4Header if l.len < 20 => TruncatedIp,
                Layer::Ipv4Header | Layer::Ipv4Packet | Layer::Ipv6Packet => BadIpHeader,
                Layer::Ipv6Header
                | Layer::Ipv6ExtHeader
                | Layer::Ipv6FragHeader
                | Layer::IpAuthHeader => TruncatedIp,
                Layer::TcpHeader | Layer::UdpHeader | Layer::Icmpv4 | Layer::Icmpv6 => TruncatedL4,
                _ => return None,
            }))
        }
        Err(E::Ipv4(_) | E::Ipv6(_)) => return Some(Outcome::Malformed(BadIpHeader)),
        Err(E::Tcp(_)) => return Some(Outcome::Malformed(TruncatedL4)),
        Err(_) => return None,
        Ok(p) => p,
    };
    let vlan_id = match p.link_exts.first() {
        Some(LinkExtSlice::Vlan(v)) => v.vlan_identifier().value(),
        _ => 0,
    };
    let (ip, proto, later) = match &p.net {
        Some(NetSlice::Ipv4(s)) => {
            let h = s.header();
            let ip = Ip {
                version: 4,
                src: mapped(h.source()),
                dst: mapped(h.destination()),
            };
            (
                ip,
                s.payload().ip_number.0,
                h.fragments_offset().value() != 0,
            )
        }
        Some(NetSlice::Ipv6(s)) => {
            let h = s.header();
            let ip = Ip {
                version: 6,
                src: h.source(),
                dst: h.destination(),
            };
            let later = s.extensions().clone().into_iter().any(|e| {
                matches!(e, Ipv6ExtensionSlice::Fragment(fh) if fh.fragment_offset().value() != 0)
            });
            (ip, s.payload().ip_number.0, later)
        }
        _ => return Some(Outcome::NotIp),
    };
    if later {
        return Some(Outcome::Keyed {
            key: ip.key(vlan_id, proto, (0, 0), FLOW_F_FRAGMENT),
            l4: L4Class::Other,
            tcp_flags: 0,
        });
    }
    let (ports, flags) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => ((t.source_port(), t.destination_port()), tcp_flags(t)),
        Some(TransportSlice::Udp(u)) => ((u.source_port(), u.destination_port()), 0),
        Some(TransportSlice::Icmpv4(i)) => ((i.type_u8().into(), i.code_u8().into()), 0),
        Some(TransportSlice::Icmpv6(i)) => ((i.type_u8().into(), i.code_u8().into()), 0),
        Some(TransportSlice::Igmp(_)) => return None,
        None => ((0, 0), 0),
    };
    Some(Outcome::Keyed {
        key: ip.key(vlan_id, proto, ports, 0),
        l4: l4_class(ip.version, proto),
        tcp_flags: flags,
    })
}
