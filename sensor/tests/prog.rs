//! BPF_PROG_TEST_RUN tests: crafted frames through the real programs in the
//! running kernel, with the resulting flow entries and counters asserted
//! exactly. Needs root.

mod common;

use common::*;
use sensor::model::{FlowKeyExt, Interval};
use sensor_common::{
    Direction, EtherClass, L4Class, Malformed, Totals, FLOW_F_FRAGMENT, MAX_IPV6_EXT_HEADERS,
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;
const SCTP: u8 = 132;
const GRE: u8 = 47;

#[derive(Clone, Copy, Debug, PartialEq)]
enum L3 {
    V4,
    V6,
    NonIp(EtherClass),
}

#[derive(Clone, Debug)]
struct Flow {
    vlan: u16,
    proto: u8,
    sport: u16,
    dport: u16,
    key_flags: u8,
    l4: L4Class,
    tcp_flags: u32,
    syn: u64,
    syn_ack: u64,
    fin: u64,
    rst: u64,
}

fn flow(proto: u8, sport: u16, dport: u16, l4: L4Class) -> Flow {
    Flow {
        vlan: 0,
        proto,
        sport,
        dport,
        key_flags: 0,
        l4,
        tcp_flags: 0,
        syn: 0,
        syn_ack: 0,
        fin: 0,
        rst: 0,
    }
}

struct Case {
    name: String,
    frame: Vec<u8>,
    l3: L3,
    fragment: bool,
    malformed: Option<Malformed>,
    flow: Option<Flow>,
}

fn ok(name: &str, frame: Vec<u8>, l3: L3, flow: Flow) -> Case {
    Case {
        name: name.into(),
        frame,
        l3,
        fragment: false,
        malformed: None,
        flow: Some(flow),
    }
}

fn bad(name: &str, frame: Vec<u8>, l3: L3, reason: Malformed) -> Case {
    Case {
        name: name.into(),
        frame,
        l3,
        fragment: false,
        malformed: Some(reason),
        flow: None,
    }
}

fn tcp_flow(sport: u16, dport: u16, flags: u8) -> Flow {
    let mut f = flow(TCP, sport, dport, L4Class::Tcp);
    f.tcp_flags = flags as u32;
    f.syn = (flags & 0x12 == 0x02) as u64;
    f.syn_ack = (flags & 0x12 == 0x12) as u64;
    f.fin = (flags & 0x01 != 0) as u64;
    f.rst = (flags & 0x04 != 0) as u64;
    f
}

/// Every well-formed case of the parser list.
fn well_formed() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, flags) in [
        ("v4 tcp syn", 0x02u8),
        ("v4 tcp syn-ack", 0x12),
        ("v4 tcp fin-ack", 0x11),
        ("v4 tcp rst", 0x04),
        ("v4 tcp psh-ack", 0x18),
    ] {
        let t = tcp(40000, 80, flags);
        v.push(ok(
            name,
            cat(&[&eth(0x0800), &ipv4(TCP, t.len()), &t]),
            L3::V4,
            tcp_flow(40000, 80, flags),
        ));
    }
    let u = udp(5353, 53, 12);
    v.push(ok(
        "v4 udp with payload",
        cat(&[&eth(0x0800), &ipv4(UDP, 20), &u, &[7u8; 12]]),
        L3::V4,
        flow(UDP, 5353, 53, L4Class::Udp),
    ));
    let u = udp(1000, 2000, 0);
    v.push(ok(
        "v4 udp padded to 60 bytes",
        cat(&[&eth(0x0800), &ipv4(UDP, 8), &u, &[0u8; 18]]),
        L3::V4,
        flow(UDP, 1000, 2000, L4Class::Udp),
    ));
    v.push(ok(
        "v4 icmp echo",
        cat(&[&eth(0x0800), &ipv4(ICMP, 8), &icmp(8, 0)]),
        L3::V4,
        flow(ICMP, 8, 0, L4Class::Icmp),
    ));
    v.push(ok(
        "v4 icmp port unreachable",
        cat(&[&eth(0x0800), &ipv4(ICMP, 8), &icmp(3, 3)]),
        L3::V4,
        flow(ICMP, 3, 3, L4Class::Icmp),
    ));
    for words in [1usize, 10] {
        v.push(ok(
            &format!("v4 with {words} option words, udp"),
            cat(&[&eth(0x0800), &ipv4_opts(UDP, 8, words), &udp(7, 9, 0)]),
            L3::V4,
            flow(UDP, 7, 9, L4Class::Udp),
        ));
    }
    v.push(ok(
        "v4 sctp",
        cat(&[&eth(0x0800), &ipv4(SCTP, 12), &sctp(3868, 3869)]),
        L3::V4,
        flow(SCTP, 3868, 3869, L4Class::Sctp),
    ));
    v.push(ok(
        "v4 gre by number",
        cat(&[&eth(0x0800), &ipv4(GRE, 4), &[0u8; 4]]),
        L3::V4,
        flow(GRE, 0, 0, L4Class::Other),
    ));
    let mut c = ok(
        "v4 first fragment keyed with ports",
        cat(&[
            &eth(0x0800),
            &ipv4_frag(UDP, 16, 0, true),
            &udp(4000, 4001, 100),
            &[0u8; 8],
        ]),
        L3::V4,
        flow(UDP, 4000, 4001, L4Class::Udp),
    );
    c.fragment = true;
    v.push(c);
    let mut f = flow(UDP, 0, 0, L4Class::Other);
    f.key_flags = FLOW_F_FRAGMENT;
    let mut c = ok(
        "v4 later fragment keyed without ports",
        cat(&[&eth(0x0800), &ipv4_frag(UDP, 16, 2, false), &[0xabu8; 16]]),
        L3::V4,
        f,
    );
    c.fragment = true;
    v.push(c);

    let t = tcp(443, 50000, 0x12);
    v.push(ok(
        "v6 tcp syn-ack",
        cat(&[&eth(0x86dd), &ipv6(TCP, t.len()), &t]),
        L3::V6,
        tcp_flow(443, 50000, 0x12),
    ));
    v.push(ok(
        "v6 udp",
        cat(&[&eth(0x86dd), &ipv6(UDP, 8), &udp(123, 123, 0)]),
        L3::V6,
        flow(UDP, 123, 123, L4Class::Udp),
    ));
    v.push(ok(
        "v6 icmpv6 echo",
        cat(&[&eth(0x86dd), &ipv6(ICMP6, 8), &icmp(128, 0)]),
        L3::V6,
        flow(ICMP6, 128, 0, L4Class::Icmp),
    ));
    v.push(ok(
        "v6 hop-by-hop, routing, destination options, udp",
        cat(&[
            &eth(0x86dd),
            &ipv6(0, 32),
            &ext(43),
            &ext(60),
            &ext(UDP),
            &udp(10, 20, 0),
        ]),
        L3::V6,
        flow(UDP, 10, 20, L4Class::Udp),
    ));
    let t = tcp(22, 60000, 0x10);
    v.push(ok(
        "v6 authentication header, tcp",
        cat(&[&eth(0x86dd), &ipv6(51, 16 + t.len()), &auth(TCP), &t]),
        L3::V6,
        tcp_flow(22, 60000, 0x10),
    ));
    let mut c = ok(
        "v6 first fragment keyed with ports",
        cat(&[
            &eth(0x86dd),
            &ipv6(44, 24),
            &frag6(UDP, 0, true),
            &udp(9, 99, 100),
            &[0u8; 8],
        ]),
        L3::V6,
        flow(UDP, 9, 99, L4Class::Udp),
    );
    c.fragment = true;
    v.push(c);
    let mut f = flow(UDP, 0, 0, L4Class::Other);
    f.key_flags = FLOW_F_FRAGMENT;
    let mut c = ok(
        "v6 later fragment keyed without ports",
        cat(&[
            &eth(0x86dd),
            &ipv6(44, 24),
            &frag6(UDP, 3, false),
            &[0u8; 16],
        ]),
        L3::V6,
        f,
    );
    c.fragment = true;
    v.push(c);
    // Exactly the walk limit of extension headers is still parsed.
    let mut chain = vec![eth(0x86dd), ipv6(0, MAX_IPV6_EXT_HEADERS * 8 + 8)];
    for i in 0..MAX_IPV6_EXT_HEADERS {
        chain.push(ext(if i + 1 == MAX_IPV6_EXT_HEADERS {
            UDP
        } else {
            60
        }));
    }
    chain.push(udp(1, 2, 0));
    v.push(ok(
        "v6 extension chain at the walk limit",
        chain.concat(),
        L3::V6,
        flow(UDP, 1, 2, L4Class::Udp),
    ));
    v.push(ok(
        "v6 no next header",
        cat(&[&eth(0x86dd), &ipv6(59, 0)]),
        L3::V6,
        flow(59, 0, 0, L4Class::Other),
    ));

    let t = tcp(1234, 80, 0x02);
    let mut f = tcp_flow(1234, 80, 0x02);
    f.vlan = 100;
    v.push(ok(
        "802.1Q v4 tcp",
        cat(&[&eth(0x8100), &vlan(100, 0x0800), &ipv4(TCP, t.len()), &t]),
        L3::V4,
        f,
    ));
    let mut f = flow(UDP, 5, 6, L4Class::Udp);
    f.vlan = 200;
    v.push(ok(
        "802.1ad + 802.1Q v6 udp keyed by outer tag",
        cat(&[
            &eth(0x88a8),
            &vlan(200, 0x8100),
            &vlan(300, 0x86dd),
            &ipv6(UDP, 8),
            &udp(5, 6, 0),
        ]),
        L3::V6,
        f,
    ));
    v
}

fn non_ip() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, et, class) in [
        ("arp", 0x0806u16, EtherClass::Arp),
        ("lldp", 0x88cc, EtherClass::Lldp),
        ("mpls", 0x8847, EtherClass::Mpls),
        ("pppoe session", 0x8864, EtherClass::Pppoe),
        ("eapol", 0x888e, EtherClass::Eapol),
        ("802.3 llc", 0x0026, EtherClass::Llc),
        ("other", 0x88b5, EtherClass::Other),
    ] {
        v.push(Case {
            name: name.into(),
            frame: cat(&[&eth(et), &[0u8; 46]]),
            l3: L3::NonIp(class),
            fragment: false,
            malformed: None,
            flow: None,
        });
    }
    v.push(Case {
        name: "arp behind a vlan tag".into(),
        frame: cat(&[&eth(0x8100), &vlan(5, 0x0806), &[0u8; 42]]),
        l3: L3::NonIp(EtherClass::Arp),
        fragment: false,
        malformed: None,
        flow: None,
    });
    v
}

fn malformed() -> Vec<Case> {
    use Malformed::*;
    let other = L3::NonIp(EtherClass::Other);
    let mut v = Vec::new();
    // A v4 TCP frame behind one VLAN tag, cut at every header boundary and
    // inside every header.
    let t = tcp(1, 2, 0x02);
    let full = cat(&[&eth(0x8100), &vlan(7, 0x0800), &ipv4(TCP, t.len()), &t]);
    for cut in [14usize, 16, 17] {
        v.push(bad(
            &format!("vlan tag cut at {cut}"),
            full[..cut].to_vec(),
            other,
            TruncatedEthernet,
        ));
    }
    for cut in [18usize, 19, 28, 37] {
        v.push(bad(
            &format!("v4 header cut at {cut}"),
            full[..cut].to_vec(),
            L3::V4,
            TruncatedIp,
        ));
    }
    for cut in [38usize, 40, 57] {
        // The IP header is whole but says more follows than the frame holds.
        v.push(bad(
            &format!("v4 frame cut at {cut}"),
            full[..cut].to_vec(),
            L3::V4,
            BadIpHeader,
        ));
    }
    // Lengths that agree with the frame but leave the L4 header short.
    for (name, proto, l4len) in [
        ("tcp", TCP, 19usize),
        ("udp", UDP, 7),
        ("icmp", ICMP, 7),
        ("sctp", SCTP, 11),
    ] {
        v.push(bad(
            &format!("v4 {name} header short by one"),
            cat(&[&eth(0x0800), &ipv4(proto, l4len), &vec![0u8; l4len]]),
            L3::V4,
            TruncatedL4,
        ));
    }
    let mut t_bad_doff = tcp(1, 2, 0x02);
    t_bad_doff[12] = 0x40; // data offset 4 words: below the minimum
    v.push(bad(
        "v4 tcp data offset below 5",
        cat(&[&eth(0x0800), &ipv4(TCP, 20), &t_bad_doff]),
        L3::V4,
        TruncatedL4,
    ));
    let mut h = ipv4(UDP, 8);
    h[0] = 0x44; // IHL 4
    v.push(bad(
        "v4 ihl below 5",
        cat(&[&eth(0x0800), &h, &udp(1, 2, 0)]),
        L3::V4,
        BadIpHeader,
    ));
    let mut h = ipv4(UDP, 8);
    h[0] = 0x65; // version 6 inside an IPv4 EtherType
    v.push(bad(
        "v4 wrong version",
        cat(&[&eth(0x0800), &h, &udp(1, 2, 0)]),
        L3::V4,
        BadIpHeader,
    ));
    let mut h = ipv4(UDP, 8);
    h[2] = 0;
    h[3] = 10; // total length shorter than the header
    v.push(bad(
        "v4 total length below ihl",
        cat(&[&eth(0x0800), &h, &udp(1, 2, 0)]),
        L3::V4,
        BadIpHeader,
    ));

    let full6 = cat(&[&eth(0x86dd), &ipv6(UDP, 8), &udp(1, 2, 0)]);
    for cut in [14usize, 20, 53] {
        v.push(bad(
            &format!("v6 header cut at {cut}"),
            full6[..cut].to_vec(),
            L3::V6,
            TruncatedIp,
        ));
    }
    v.push(bad(
        "v6 frame cut in udp",
        full6[..58].to_vec(),
        L3::V6,
        BadIpHeader,
    ));
    v.push(bad(
        "v6 udp short by one",
        cat(&[&eth(0x86dd), &ipv6(UDP, 7), &[0u8; 7]]),
        L3::V6,
        TruncatedL4,
    ));
    v.push(bad(
        "v6 extension header cut off",
        cat(&[&eth(0x86dd), &ipv6(0, 4), &ext(UDP)[..4]]),
        L3::V6,
        TruncatedIp,
    ));
    let mut chain = vec![eth(0x86dd), ipv6(0, (MAX_IPV6_EXT_HEADERS + 1) * 8 + 8)];
    for i in 0..=MAX_IPV6_EXT_HEADERS {
        chain.push(ext(if i == MAX_IPV6_EXT_HEADERS { UDP } else { 60 }));
    }
    chain.push(udp(1, 2, 0));
    v.push(bad(
        "v6 extension chain past the walk limit",
        chain.concat(),
        L3::V6,
        TooManyExtHeaders,
    ));
    v.push(bad(
        "three vlan tags",
        cat(&[
            &eth(0x88a8),
            &vlan(1, 0x8100),
            &vlan(2, 0x8100),
            &vlan(3, 0x0800),
            &ipv4(UDP, 8),
            &udp(1, 2, 0),
        ]),
        other,
        TooManyVlanTags,
    ));
    v
}

fn delta(now: &Totals, before: &Totals) -> Totals {
    let mut d = *now;
    d.packets -= before.packets;
    d.bytes -= before.bytes;
    d.ipv4 -= before.ipv4;
    d.ipv6 -= before.ipv6;
    d.non_ip -= before.non_ip;
    d.fragments -= before.fragments;
    d.not_attributed -= before.not_attributed;
    d.not_attributed_bytes -= before.not_attributed_bytes;
    for i in 0..d.l4.len() {
        d.l4[i] -= before.l4[i];
    }
    for i in 0..d.ether_class.len() {
        d.ether_class[i] -= before.ether_class[i];
    }
    for i in 0..d.malformed.len() {
        d.malformed[i] -= before.malformed[i];
    }
    d
}

fn expected_totals(c: &Case) -> Totals {
    let mut t = Totals {
        packets: 1,
        bytes: c.frame.len() as u64,
        fragments: c.fragment as u64,
        ..Totals::default()
    };
    match c.l3 {
        L3::V4 => t.ipv4 = 1,
        L3::V6 => t.ipv6 = 1,
        L3::NonIp(class) => {
            t.non_ip = 1;
            t.ether_class[class as usize] = 1;
        }
    }
    if let Some(r) = c.malformed {
        t.malformed[r as usize] = 1;
    }
    if let Some(f) = &c.flow {
        t.l4[f.l4 as usize] = 1;
    }
    t
}

fn check(c: &Case, dir: Direction, iv: &Interval, before: &Totals, before_other: &Totals) {
    let name = format!("{} ({})", c.name, dir.as_str());
    let now = totals(iv, dir);
    assert_eq!(delta(&now, before), expected_totals(c), "totals of {name}");
    let other = match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    assert_eq!(
        totals(iv, other).packets,
        before_other.packets,
        "{name}: the other direction counted"
    );
    match &c.flow {
        None => assert!(
            iv.flows.is_empty(),
            "{name}: unexpected flows {:?}",
            iv.flows
        ),
        Some(f) => {
            assert_eq!(iv.flows.len(), 1, "{name}: flows {:?}", iv.flows);
            let d = &iv.flows[0];
            let k = &d.key;
            let (src, dst): (std::net::IpAddr, std::net::IpAddr) = match c.l3 {
                L3::V4 => (SRC4.into(), DST4.into()),
                _ => (SRC6.into(), DST6.into()),
            };
            assert_eq!((k.src(), k.dst()), (src, dst), "{name}: addresses");
            assert_eq!(k.ifindex, TEST_IFINDEX, "{name}: ifindex");
            assert_eq!(k.direction, dir as u8, "{name}: direction");
            assert_eq!(
                k.ip_version,
                if c.l3 == L3::V4 { 4 } else { 6 },
                "{name}: version"
            );
            assert_eq!(
                (k.vlan_id, k.protocol, k.src_port, k.dst_port, k.flags),
                (f.vlan, f.proto, f.sport, f.dport, f.key_flags),
                "{name}: key (vlan, proto, sport, dport, flags)"
            );
            let v = &d.value;
            assert_eq!(
                (v.packets, v.bytes),
                (1, c.frame.len() as u64),
                "{name}: counts"
            );
            assert_eq!(
                (v.tcp_flags, v.syn, v.syn_ack, v.fin, v.rst),
                (f.tcp_flags, f.syn, f.syn_ack, f.fin, f.rst),
                "{name}: tcp flags and counts"
            );
            assert!(
                v.first_seen_ns > 0 && v.first_seen_ns == v.last_seen_ns,
                "{name}: times"
            );
            assert!(
                v.first_seen_ns >= iv.start_ns && v.last_seen_ns <= iv.end_ns + 1_000_000_000,
                "{name}: seen times within the interval"
            );
        }
    }
}

fn run_cases(cases: Vec<Case>) {
    let mut h = Harness::new(1024);
    let mut before_in = Totals::default();
    let mut before_out = Totals::default();
    for c in &cases {
        assert_eq!(h.xdp(&c.frame), XDP_PASS, "{}: XDP must pass", c.name);
        let iv = h.drain();
        check(c, Direction::Ingress, &iv, &before_in, &before_out);
        before_in = totals(&iv, Direction::Ingress);

        // BPF_PROG_TEST_RUN for skb programs refuses input whose Ethernet
        // or IP header is cut (it pulls them before running the program):
        // such frames never reach TC egress either. XDP covered them.
        match h.try_tc(&c.frame) {
            Ok(v) => assert_eq!(v, TC_ACT_OK, "{}: TC must pass", c.name),
            Err(_)
                if matches!(
                    c.malformed,
                    Some(Malformed::TruncatedEthernet | Malformed::TruncatedIp)
                ) =>
            {
                continue
            }
            Err(e) => panic!("{}: TC test run failed: {e}", c.name),
        }
        let iv = h.drain();
        check(c, Direction::Egress, &iv, &before_out, &before_in);
        before_out = totals(&iv, Direction::Egress);
    }
}

#[test]
fn well_formed_frames_are_keyed_exactly() {
    run_cases(well_formed());
}

#[test]
fn non_ip_frames_are_counted_by_class() {
    run_cases(non_ip());
}

#[test]
fn malformed_frames_are_counted_by_reason_and_pass() {
    run_cases(malformed());
}

#[test]
fn repeated_frames_accumulate_in_one_flow() {
    let mut h = Harness::new(1024);
    let t = tcp(40000, 443, 0x18);
    let frame = cat(&[&eth(0x0800), &ipv4(TCP, t.len()), &t]);
    assert_eq!(h.xdp_repeat(&frame, 1000), XDP_PASS);
    let iv = h.drain();
    assert_eq!(iv.flows.len(), 1);
    assert_eq!(iv.flows[0].value.packets, 1000);
    assert_eq!(iv.flows[0].value.bytes, 1000 * frame.len() as u64);
    let t = totals(&iv, Direction::Ingress);
    assert_eq!(
        (t.packets, t.ipv4, t.l4[L4Class::Tcp as usize]),
        (1000, 1000, 1000)
    );
    // The next drain reads the other (now empty) buffer, then this one again.
    assert!(h.drain().flows.is_empty());
    assert!(h.drain().flows.is_empty());
}

#[test]
fn full_flow_map_counts_packets_as_not_attributed() {
    let cap = 1024u32;
    let mut h = Harness::new(cap);
    let mut sent = 0u64;
    let mut bytes = 0u64;
    // More distinct flows than the buffer holds, all in one interval.
    for port in 0..(cap as u16 + 200) {
        let u = udp(port, 53, 0);
        let frame = cat(&[&eth(0x0800), &ipv4(UDP, 8), &u]);
        assert_eq!(h.xdp(&frame), XDP_PASS);
        sent += 1;
        bytes += frame.len() as u64;
    }
    let iv = h.drain();
    let t = totals(&iv, Direction::Ingress);
    let in_flows: u64 = iv.flows.iter().map(|f| f.value.packets).sum();
    let flow_bytes: u64 = iv.flows.iter().map(|f| f.value.bytes).sum();
    assert_eq!(t.packets, sent, "interface totals stay exact");
    assert_eq!(t.bytes, bytes);
    assert!(
        t.not_attributed >= 200,
        "not attributed: {}",
        t.not_attributed
    );
    assert_eq!(
        in_flows + t.not_attributed,
        sent,
        "every packet is in a flow or counted as not attributed"
    );
    assert_eq!(flow_bytes + t.not_attributed_bytes, bytes);
    assert_eq!(
        iv.kernel.as_ref().map(|k| k.flow_map_occupancy),
        Some(iv.flows.len() as u64)
    );
}

/// Traffic runs on one CPU while another drains continuously: the sum over
/// all drains equals what was sent, exactly (no increment is lost at a
/// buffer flip, none counted twice).
#[test]
fn continuous_drains_lose_nothing_under_concurrent_traffic() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let Harness {
        mut sensor,
        mut drainer,
    } = Harness::new(65_536);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stop2 = stop.clone();
    let drains = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop2.load(Ordering::SeqCst) {
            tx.send(drainer.drain().expect("drain")).expect("send");
            n += 1;
        }
        // One more drain after the traffic stopped takes what remains.
        tx.send(drainer.drain().expect("final drain"))
            .expect("send");
        n + 1
    });
    let mut sent = 0u64;
    let mut bytes = 0u64;
    let frames: Vec<Vec<u8>> = (0..4u16)
        .map(|i| {
            let t = tcp(30000 + i, 443, 0x10);
            cat(&[&eth(0x0800), &ipv4(TCP, t.len()), &t])
        })
        .collect();
    for round in 0..40 {
        let f = &frames[round % frames.len()];
        assert_eq!(xdp_run(&mut sensor, f, 50_000), XDP_PASS);
        sent += 50_000;
        bytes += 50_000 * f.len() as u64;
    }
    stop.store(true, Ordering::SeqCst);
    let n_drains = drains.join().expect("drain thread");
    let ivs: Vec<Interval> = rx.iter().collect();
    assert_eq!(ivs.len() as u64, n_drains);
    assert!(
        n_drains >= 10,
        "too few drains ({n_drains}) overlapped the traffic"
    );
    let flows_packets: u64 = ivs
        .iter()
        .flat_map(|iv| &iv.flows)
        .map(|f| f.value.packets)
        .sum();
    let flows_bytes: u64 = ivs
        .iter()
        .flat_map(|iv| &iv.flows)
        .map(|f| f.value.bytes)
        .sum();
    let in_flight = ivs.iter().filter(|iv| !iv.flows.is_empty()).count();
    println!("{sent} packets over {n_drains} drains, {in_flight} of them with flows");
    assert_eq!(flows_packets, sent, "packets summed over drains");
    assert_eq!(flows_bytes, bytes, "bytes summed over drains");
    let last = ivs.last().expect("intervals");
    assert_eq!(totals(last, Direction::Ingress).packets, sent);
}

/// Interface indexes past the array fast path (`IFACE_INDEX_ENTRIES`) are
/// looked up in the hash map: a frame on a device with index 5000 counts
/// under that interface's slot, not as unknown.
#[test]
fn large_interface_indexes_use_the_hash_lookup() {
    use aya::programs::{TestRun, TestRunOptions, Xdp};
    const BIG: u32 = 5000;
    const { assert!(BIG >= sensor_common::IFACE_INDEX_ENTRIES) };
    let name = format!("st-{}big", std::process::id() % 100_000);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &name])
        .output();
    let out = std::process::Command::new("ip")
        .args(["link", "add", "name", &name, "index", &BIG.to_string()])
        .args(["type", "veth", "peer", "name", &format!("{name}p")])
        .output()
        .expect("ip link add");
    assert!(
        out.status.success(),
        "creating a device with index {BIG}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .output();
        }
    }
    let _del = Del(name.clone());

    let mut h = Harness::new(4096);
    h.sensor.register_slot(BIG, &name).expect("slot");
    let frame = cat(&[&eth(0x0800), &ipv4(UDP, 8), &udp(1, 2, 0)]);
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&BIG.to_ne_bytes());
    let prog: &mut Xdp = h
        .sensor
        .ebpf_mut()
        .program_mut(sensor_common::PROG_XDP)
        .expect("xdp")
        .try_into()
        .expect("xdp type");
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            repeat: 3,
            ..TestRunOptions::default()
        })
        .expect("test run on the large-index device");
    assert_eq!(r.return_value, XDP_PASS);
    let iv = h.drain();
    let on = |iface: &str| -> u64 {
        iv.totals
            .iter()
            .filter(|t| t.iface == iface && t.direction == Direction::Ingress)
            .map(|t| t.totals.packets)
            .sum()
    };
    assert_eq!(
        on(&name),
        3,
        "counted under the device's slot: {:?}",
        iv.totals
    );
    assert_eq!(on("lo"), 0);
    assert_eq!(
        iv.flows
            .iter()
            .map(|f| (f.key.ifindex, f.value.packets))
            .collect::<Vec<_>>(),
        vec![(BIG, 3)]
    );
}

/// A large buffer is drained by several threads over disjoint bucket
/// ranges: every flow comes back exactly once, none twice, none left.
#[test]
fn a_parallel_drain_reads_every_flow_once() {
    let mut h = Harness::new(1 << 17);
    let n = 40_000u16;
    for port in 0..n {
        let u = udp(port, 53, 0);
        let frame = cat(&[&eth(0x0800), &ipv4(UDP, 8), &u]);
        assert_eq!(h.xdp(&frame), XDP_PASS);
    }
    let iv = h.drain();
    let mut ports: Vec<u16> = iv.flows.iter().map(|f| f.key.src_port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), iv.flows.len(), "no flow read twice");
    assert_eq!(iv.flows.len(), usize::from(n), "every flow read");
    assert!(iv.flows.iter().all(|f| f.value.packets == 1));
    assert_eq!(totals(&iv, Direction::Ingress).not_attributed, 0);
    assert!(h.drain().flows.is_empty() && h.drain().flows.is_empty());
}
