//! Well-formed frames for the property test, built with etherparse's
//! `PacketBuilder` and header types: any VLAN tags, IPv4 (with options) or
//! IPv6 (with extension headers), and a transport; and IPv6 extension
//! chains of any order and length, built header by header.

use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpAuthHeader,
    IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions,
    Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions,
    PacketBuilder, PacketBuilderStep, SingleVlanHeader, TcpHeader, UdpHeader, VlanId, VlanPcp,
};

use crate::frames::Rng;

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// The EtherTypes the kernel walks as VLAN tags (parse.rs).
pub const TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// The transport part of a frame built with the `PacketBuilder`.
#[derive(Clone)]
pub enum L4 {
    Tcp(TcpHeader),
    Udp(u16, u16),
    Icmp4(u8, u8, [u8; 4]),
    Icmp6(u8, u8, [u8; 4]),
    /// Another protocol number and the bytes that start its payload.
    Raw(u8, Vec<u8>),
}

/// A well-formed frame: VLAN tags, IP headers, transport; payload apart.
#[derive(Clone)]
pub struct Spec {
    /// (TPID, TCI) of each tag, outermost first.
    pub tags: Vec<(u16, u16)>,
    pub ip: IpHeaders,
    pub l4: L4,
}

impl Spec {
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let step = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ip(self.ip.clone());
        let mut f = finish(step, &self.l4, payload);
        splice_tags(&mut f, &self.tags);
        f
    }

    pub fn ip_off(&self) -> usize {
        14 + 4 * self.tags.len()
    }
}

pub fn finish(step: PacketBuilderStep<IpHeaders>, l4: &L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let what = "building a frame";
    match l4 {
        L4::Tcp(h) => step
            .tcp_header(h.clone())
            .write(&mut out, payload)
            .expect(what),
        L4::Udp(s, d) => step.udp(*s, *d).write(&mut out, payload).expect(what),
        L4::Icmp4(t, c, rest) => step
            .icmpv4_raw(*t, *c, *rest)
            .write(&mut out, payload)
            .expect(what),
        L4::Icmp6(t, c, rest) => step
            .icmpv6_raw(*t, *c, *rest)
            .write(&mut out, payload)
            .expect(what),
        L4::Raw(proto, head) => step
            .write(&mut out, IpNumber(*proto), &[head, payload].concat())
            .expect(what),
    }
    out
}

/// Inserts VLAN tags (etherparse headers) after the MAC addresses of an
/// untagged frame.
pub fn splice_tags(f: &mut Vec<u8>, tags: &[(u16, u16)]) {
    if tags.is_empty() || f.len() < 14 {
        return;
    }
    let inner = u16::from_be_bytes([f[12], f[13]]);
    let mut link = Ethernet2Header {
        source: SRC_MAC,
        destination: DST_MAC,
        ether_type: EtherType(tags[0].0),
    }
    .to_bytes()
    .to_vec();
    for (i, &(_, tci)) in tags.iter().enumerate() {
        let next = tags.get(i + 1).map_or(inner, |t| t.0);
        link.extend_from_slice(&vlan_header(tci, next));
    }
    link.extend_from_slice(&f[14..]);
    *f = link;
}

pub fn vlan_header(tci: u16, next: u16) -> [u8; 4] {
    SingleVlanHeader {
        pcp: VlanPcp::try_new((tci >> 13) as u8).expect("pcp"),
        drop_eligible_indicator: tci & 0x1000 != 0,
        vlan_id: VlanId::try_new(tci & 0x0fff).expect("vlan id"),
        ether_type: EtherType(next),
    }
    .to_bytes()
}

pub fn rand_tags(rng: &mut Rng, n: usize) -> Vec<(u16, u16)> {
    (0..n).map(|_| (rng.pick(&TPIDS), rng.u16())).collect()
}

/// 0 tags most of the time, else 1 or 2 (what the kernel walks).
pub fn few_tags(rng: &mut Rng) -> usize {
    match rng.below(20) {
        0..=11 => 0,
        12..=16 => 1,
        _ => 2,
    }
}

/// Addresses in the benchmarking and documentation ranges.
pub fn addr4(rng: &mut Rng) -> [u8; 4] {
    [198, 18 + rng.below(2) as u8, rng.u8(), rng.u8()]
}

pub fn addr6(rng: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    for b in &mut a[4..] {
        *b = rng.u8();
    }
    a
}

pub fn tcp_header(rng: &mut Rng) -> TcpHeader {
    let mut h = TcpHeader::new(rng.u16(), rng.u16(), rng.next() as u32, rng.u16());
    let flags = rng.u8();
    h.fin = flags & 0x01 != 0;
    h.syn = flags & 0x02 != 0;
    h.rst = flags & 0x04 != 0;
    h.psh = flags & 0x08 != 0;
    h.ack = flags & 0x10 != 0;
    h.urg = flags & 0x20 != 0;
    h.ece = flags & 0x40 != 0;
    h.cwr = flags & 0x80 != 0;
    if rng.one_in(4) {
        let words = rng.range(1, 10);
        h.set_options_raw(&rng.bytes(words * 4))
            .expect("tcp options");
    }
    h
}

pub fn sctp_common(rng: &mut Rng) -> Vec<u8> {
    rng.bytes(12)
}

/// A transport for an IP version: mostly TCP, UDP and ICMP, sometimes SCTP
/// or another protocol number (with the other version's ICMP, IGMP and AH
/// among them).
pub fn rand_l4(rng: &mut Rng, v6: bool) -> L4 {
    match rng.below(20) {
        0..=5 => L4::Tcp(tcp_header(rng)),
        6..=11 => L4::Udp(rng.u16(), rng.u16()),
        12..=14 => {
            // Mostly common types; now and then any type (ICMP timestamp
            // messages included).
            let (t, c) = if rng.one_in(3) {
                (rng.u8(), rng.u8())
            } else if v6 {
                (rng.pick(&[128, 129, 1, 2, 3, 135, 136]), rng.below(4) as u8)
            } else {
                (rng.pick(&[8, 0, 3, 11, 13, 14]), rng.below(4) as u8)
            };
            let rest = [rng.u8(), rng.u8(), rng.u8(), rng.u8()];
            if v6 {
                L4::Icmp6(t, c, rest)
            } else {
                L4::Icmp4(t, c, rest)
            }
        }
        15..=16 => L4::Raw(132, sctp_common(rng)),
        _ => {
            let proto = rng.pick(&[47, 50, 89, 59, 255, 2, 51, 1, 58, 103, 253]);
            let head = rng.bytes_below(24);
            let proto = if rng.one_in(4) { rng.u8() } else { proto };
            // etherparse's builder panics on a last next header of 0
            // (hop-by-hop) after IPv6 when it has no hop-by-hop header.
            let proto = if v6 && proto == 0 { 60 } else { proto };
            L4::Raw(proto, head)
        }
    }
}

pub fn ipv4_header(rng: &mut Rng) -> Ipv4Header {
    let mut h = Ipv4Header::new(0, rng.u8(), IpNumber(0), addr4(rng), addr4(rng)).expect("v4");
    h.identification = rng.u16();
    h.dont_fragment = rng.one_in(2);
    if rng.one_in(5) {
        let words = rng.range(1, 10);
        h.options = Ipv4Options::try_from(&rng.bytes(words * 4)[..]).expect("options");
    }
    h
}

pub fn ipv6_header(rng: &mut Rng) -> Ipv6Header {
    Ipv6Header {
        traffic_class: rng.u8(),
        flow_label: Ipv6FlowLabel::try_new(rng.next() as u32 & 0xf_ffff).expect("flow label"),
        payload_length: 0,
        next_header: IpNumber(59),
        hop_limit: rng.u8(),
        source: addr6(rng),
        destination: addr6(rng),
    }
}

pub fn raw_ext(rng: &mut Rng, big: bool) -> Ipv6RawExtHeader {
    let units = if big { rng.below(64) } else { rng.below(3) };
    Ipv6RawExtHeader::new_raw(IpNumber(59), &rng.bytes(6 + 8 * units)).expect("ext")
}

pub fn auth_header(rng: &mut Rng) -> IpAuthHeader {
    let words = rng.below(5);
    IpAuthHeader::new(
        IpNumber(59),
        rng.next() as u32,
        rng.next() as u32,
        &rng.bytes(4 * words),
    )
    .expect("ah")
}

/// Extension headers the builder can chain (each at most once: at most six,
/// the kernel's walk limit); fragments are atomic unless asked otherwise.
pub fn rand_exts(rng: &mut Rng, frag: Option<(u16, bool)>) -> Ipv6Extensions {
    let mut e = Ipv6Extensions::default();
    let some = |rng: &mut Rng| rng.one_in(4);
    if some(rng) {
        e.hop_by_hop_options = Some(raw_ext(rng, false));
    }
    if some(rng) {
        e.destination_options = Some(raw_ext(rng, false));
    }
    if some(rng) {
        e.routing = Some(Ipv6RoutingExtensions {
            routing: raw_ext(rng, false),
            final_destination_options: some(rng).then(|| raw_ext(rng, false)),
        });
    }
    if some(rng) {
        e.auth = Some(auth_header(rng));
    }
    if let Some((offset, more)) = frag {
        e.fragment = Some(frag_header(rng, offset, more));
    } else if rng.one_in(8) {
        e.fragment = Some(frag_header(rng, 0, false));
    }
    e
}

pub fn frag_header(rng: &mut Rng, offset: u16, more: bool) -> Ipv6FragmentHeader {
    Ipv6FragmentHeader::new(
        IpNumber(59),
        IpFragOffset::try_new(offset).expect("offset"),
        more,
        rng.next() as u32,
    )
}

/// A random well-formed frame description; `tags: None` picks 0 to 2.
pub fn spec(rng: &mut Rng, v6: Option<bool>, tags: Option<usize>) -> Spec {
    let tags = tags.unwrap_or_else(|| few_tags(rng));
    let v6 = v6.unwrap_or_else(|| rng.one_in(2));
    let ip = if v6 {
        let exts = if rng.one_in(3) {
            rand_exts(rng, None)
        } else {
            Ipv6Extensions::default()
        };
        IpHeaders::Ipv6(ipv6_header(rng), exts)
    } else {
        IpHeaders::Ipv4(ipv4_header(rng), Ipv4Extensions::default())
    };
    Spec {
        tags: rand_tags(rng, tags),
        ip,
        l4: rand_l4(rng, v6),
    }
}

pub fn payload_len(rng: &mut Rng, linear: usize) -> usize {
    match rng.below(20) {
        0..=11 => rng.below(40),
        12..=18 => rng.below(300),
        _ => rng.below(linear - 200),
    }
}

/// Transport header bytes for a protocol (empty for protocols without one
/// the kernel reads).
pub fn l4_bytes(r: &mut Rng, proto: u8, payload: usize) -> Vec<u8> {
    match proto {
        6 => tcp_header(r).to_bytes().to_vec(),
        17 => {
            let length = if r.one_in(5) {
                r.u16()
            } else {
                (8 + payload) as u16
            };
            UdpHeader {
                source_port: r.u16(),
                destination_port: r.u16(),
                length,
                checksum: r.u16(),
            }
            .to_bytes()
            .to_vec()
        }
        58 => Icmpv6Header::new(Icmpv6Type::Unknown {
            type_u8: r.u8(),
            code_u8: r.u8(),
            bytes5to8: [r.u8(), r.u8(), r.u8(), r.u8()],
        })
        .to_bytes()
        .to_vec(),
        1 => Icmpv4Header::new(Icmpv4Type::Unknown {
            type_u8: r.u8(),
            code_u8: r.u8(),
            bytes5to8: [r.u8(), r.u8(), r.u8(), r.u8()],
        })
        .to_bytes()
        .to_vec(),
        132 => sctp_common(r),
        _ => Vec::new(),
    }
}

/// IPv6 with a chain of extension headers in any order, around and past
/// the kernel's walk limit; `big` allows long headers that push the chain
/// past the kernel's read window.
pub fn ext_chain(r: &mut Rng, big: bool) -> Vec<u8> {
    let n = r.pick(&[0usize, 1, 2, 3, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 9, 12]);
    let kinds: Vec<u8> = (0..n)
        .map(|_| match r.below(10) {
            0..=1 => 0,
            2..=3 => 43,
            4..=6 => 60,
            7..=8 => 51,
            _ => 44,
        })
        .collect();
    let proto = r.pick(&[6u8, 17, 17, 58, 58, 132, 59, 1, 47]);
    let pay = r.below(32);
    let l4 = l4_bytes(r, proto, pay);
    let mut chain = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let next = IpNumber(kinds.get(i + 1).copied().unwrap_or(proto));
        match kind {
            44 => {
                let offset = if r.one_in(2) { 0 } else { r.range(1, 8191) };
                let more = r.one_in(2);
                let mut h = frag_header(r, offset as u16, more);
                h.next_header = next;
                chain.extend_from_slice(&h.to_bytes());
            }
            51 if r.one_in(8) => {
                // Payload length 0: an 8-byte header etherparse refuses.
                chain.extend_from_slice(&[next.0, 0, 0, 0]);
                chain.extend(r.bytes(4));
            }
            51 => {
                let mut h = auth_header(r);
                h.next_header = next;
                chain.extend_from_slice(&h.to_bytes());
            }
            _ => {
                let long = big && r.one_in(3);
                let mut h = raw_ext(r, long);
                h.next_header = next;
                chain.extend_from_slice(&h.to_bytes());
            }
        }
    }
    let mut ip = ipv6_header(r);
    ip.next_header = IpNumber(kinds.first().copied().unwrap_or(proto));
    let body = [chain, l4, r.bytes(pay)].concat();
    ip.payload_length = body.len().min(0xffff) as u16;
    let mut f = Ethernet2Header {
        source: SRC_MAC,
        destination: DST_MAC,
        ether_type: EtherType::IPV6,
    }
    .to_bytes()
    .to_vec();
    f.extend_from_slice(&ip.to_bytes());
    f.extend(body);
    let n = few_tags(r);
    let tags = rand_tags(r, n);
    splice_tags(&mut f, &tags);
    f
}
