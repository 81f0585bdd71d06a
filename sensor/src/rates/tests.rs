use std::net::{IpAddr, Ipv4Addr};

use sensor_common::{FlowValue, FLOW_F_FRAGMENT};

use super::*;
use crate::model::{v4, FlowDelta, IfaceTotals};

const IFINDEX: u32 = 2;

fn totals(packets: u64, bytes: u64) -> Totals {
    Totals {
        packets,
        bytes,
        ipv4: packets,
        l4: [packets, 0, 0, 0, 0],
        ..Default::default()
    }
}

fn iface(t: Totals) -> IfaceTotals {
    IfaceTotals {
        ifindex: IFINDEX,
        iface: "veth0".into(),
        direction: Direction::Ingress,
        totals: t,
    }
}

fn iv(start_s: u64, end_s: u64, flows: Vec<FlowDelta>, t: Vec<IfaceTotals>) -> Interval {
    Interval {
        start_ns: start_s * 1_000_000_000,
        end_ns: end_s * 1_000_000_000,
        end_unix_ns: 0,
        flows,
        totals: t,
        kernel: None,
    }
}

fn flow(src: u8, dst: u8, dport: u16, protocol: u8, packets: u64, bytes: u64) -> FlowDelta {
    FlowDelta {
        key: FlowKey {
            src_addr: v4(198, 18, 0, src),
            dst_addr: v4(198, 18, 1, dst),
            ifindex: IFINDEX,
            src_port: 40000,
            dst_port: dport,
            direction: Direction::Ingress as u8,
            ip_version: 4,
            protocol,
            ..Default::default()
        },
        value: FlowValue {
            packets,
            bytes,
            ..Default::default()
        },
    }
}

fn ip(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, d))
}

fn config(top_k: usize) -> RatesConfig {
    RatesConfig {
        top_k,
        tau: Duration::from_secs(5),
    }
}

#[test]
fn ewma_step_is_exact() {
    assert_eq!(ewma(10.0, 20.0, 0.5), 15.0);
    assert_eq!(ewma(10.0, 20.0, 0.0), 10.0);
    assert_eq!(ewma(10.0, 20.0, 1.0), 20.0);
    assert_eq!(decay(1.0, Duration::ZERO), 0.0);
    assert_eq!(decay(0.0, Duration::from_secs(5)), 1.0);
    assert_eq!(decay(5.0, Duration::from_secs(5)), (-1.0f64).exp());
}

#[test]
fn first_interval_is_a_baseline_then_rates_use_interval_length() {
    let mut r = Rates::new(config(5));
    let s = r.update(&iv(0, 1, vec![], vec![iface(totals(100, 10_000))]));
    assert!(s.ifaces.is_empty(), "no rate without a baseline");
    assert!(s.protocols.is_empty());
    // A 2 s interval with 10 packets and 3000 bytes: 5 pps, 1500 B/s.
    let s = r.update(&iv(1, 3, vec![], vec![iface(totals(110, 13_000))]));
    assert_eq!(s.ifaces.len(), 1);
    let i = &s.ifaces[0];
    assert_eq!(
        (i.iface.as_str(), i.direction),
        ("veth0", Direction::Ingress)
    );
    assert_eq!(
        i.packets,
        Smoothed {
            interval: 5.0,
            ewma: 5.0
        }
    );
    assert_eq!(
        i.bytes,
        Smoothed {
            interval: 1500.0,
            ewma: 1500.0
        }
    );
    assert!(!i.reset);
}

#[test]
fn ewma_follows_the_documented_formula() {
    let mut r = Rates::new(config(5));
    r.update(&iv(0, 1, vec![], vec![iface(totals(0, 0))]));
    r.update(&iv(1, 2, vec![], vec![iface(totals(100, 1000))]));
    let s = r.update(&iv(2, 3, vec![], vec![iface(totals(100, 1000))]));
    let d = (-1.0f64 / 5.0).exp();
    let i = &s.ifaces[0];
    assert_eq!(i.packets.interval, 0.0);
    assert_eq!(i.packets.ewma, 0.0 + d * (100.0 - 0.0));
    assert_eq!(i.bytes.ewma, 0.0 + d * (1000.0 - 0.0));
    // Another silent interval of 3 s decays by exp(-3/5).
    let s = r.update(&iv(3, 6, vec![], vec![iface(totals(100, 1000))]));
    let d3 = (-3.0f64 / 5.0).exp();
    assert_eq!(s.ifaces[0].packets.ewma, d3 * (d * 100.0));
}

#[test]
fn zero_tau_means_no_smoothing() {
    let mut r = Rates::new(RatesConfig {
        top_k: 1,
        tau: Duration::ZERO,
    });
    r.update(&iv(0, 1, vec![], vec![iface(totals(0, 0))]));
    r.update(&iv(1, 2, vec![], vec![iface(totals(50, 500))]));
    let s = r.update(&iv(2, 3, vec![], vec![iface(totals(60, 600))]));
    assert_eq!(
        s.ifaces[0].packets,
        Smoothed {
            interval: 10.0,
            ewma: 10.0
        }
    );
}

#[test]
fn a_counter_going_backwards_is_a_reset() {
    let mut r = Rates::new(config(5));
    r.update(&iv(0, 1, vec![], vec![iface(totals(1000, 100_000))]));
    let s = r.update(&iv(1, 2, vec![], vec![iface(totals(30, 3000))]));
    let i = &s.ifaces[0];
    assert!(i.reset);
    assert_eq!((i.packets.interval, i.bytes.interval), (30.0, 3000.0));
    // The next interval counts from the new base.
    let s = r.update(&iv(2, 3, vec![], vec![iface(totals(40, 4000))]));
    assert!(!s.ifaces[0].reset);
    assert_eq!(s.ifaces[0].packets.interval, 10.0);
}

#[test]
fn totals_delta_detects_a_reset_in_any_counter() {
    let mut prev = totals(10, 1000);
    prev.malformed[3] = 5;
    let mut cur = totals(20, 2000);
    cur.malformed[3] = 7;
    let (d, reset) = totals_delta(&prev, &cur);
    assert!(!reset);
    assert_eq!(
        (d.packets, d.bytes, d.malformed[3], d.l4[0]),
        (10, 1000, 2, 10)
    );
    cur.malformed[3] = 1;
    let (d, reset) = totals_delta(&prev, &cur);
    assert!(reset);
    assert_eq!(d, cur);
}

#[test]
fn protocol_rates_take_packets_from_totals_and_bytes_from_flows() {
    let mut r = Rates::new(config(5));
    r.update(&iv(0, 1, vec![], vec![iface(Totals::default())]));
    let mut t = Totals {
        packets: 14,
        bytes: 5000,
        ipv4: 10,
        non_ip: 4,
        ..Default::default()
    };
    t.l4 = [6, 3, 1, 0, 0];
    let mut frag = flow(3, 3, 0, 17, 1, 100);
    frag.key.flags = FLOW_F_FRAGMENT;
    let flows = vec![
        flow(1, 1, 80, 6, 6, 3000),
        flow(2, 2, 53, 17, 2, 200),
        flow(4, 4, 0, 1, 1, 98),
        frag,
    ];
    let s = r.update(&iv(1, 3, flows, vec![iface(t)]));
    let get = |c: ProtoClass| s.protocols.iter().find(|p| p.class == c).unwrap().clone();
    let tcp = get(ProtoClass::L4(L4Class::Tcp));
    assert_eq!(tcp.packets.interval, 3.0);
    assert_eq!(tcp.bytes.unwrap().interval, 1500.0);
    let udp = get(ProtoClass::L4(L4Class::Udp));
    assert_eq!(
        (udp.packets.interval, udp.bytes.unwrap().interval),
        (1.5, 100.0)
    );
    // The later fragment of a UDP datagram is class "other", as in the kernel.
    assert_eq!(
        get(ProtoClass::L4(L4Class::Other)).bytes.unwrap().interval,
        50.0
    );
    assert_eq!(
        get(ProtoClass::L4(L4Class::Icmp)).bytes.unwrap().interval,
        49.0
    );
    let non_ip = get(ProtoClass::NonIp);
    assert_eq!(non_ip.packets.interval, 2.0);
    assert_eq!(non_ip.bytes, None);
    assert_eq!(s.protocols.len(), ProtoClass::ALL.len());
}

#[test]
fn top_k_orders_by_bytes_then_packets_then_key() {
    let r = |p: f64, b: f64| Rate {
        packets_per_second: p,
        bytes_per_second: b,
    };
    let items = vec![
        (5u32, r(1.0, 500.0)),
        (9, r(1.0, 900.0)),
        (3, r(1.0, 900.0)),
        (1, r(1.0, 100.0)),
        (7, r(2.0, 700.0)),
        (8, r(3.0, 700.0)),
    ];
    let top = top_k(items.clone(), 3);
    let keys: Vec<u32> = top.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        vec![3, 9, 8],
        "equal bytes and packets: smaller key first"
    );
    let top = top_k(items.clone(), 4);
    assert_eq!(top[3].0, 7, "equal bytes: more packets ranks higher");
    assert!(top_k(items.clone(), 0).is_empty());
    assert_eq!(top_k(items, 100).len(), 6);
}

#[test]
fn hosts_are_aggregated_per_interval_and_ranked() {
    let mut r = Rates::new(config(2));
    let flows = vec![
        flow(1, 1, 80, 6, 1, 100),
        flow(1, 2, 443, 6, 1, 100), // source .1 totals 200 B
        flow(2, 1, 80, 6, 3, 150),  // source .2: 150 B
        flow(3, 3, 80, 6, 1, 120),  // source .3: 120 B
    ];
    let s = r.update(&iv(0, 1, flows, vec![]));
    let top = s
        .top
        .iter()
        .find(|t| t.smoothing == Smoothing::Interval)
        .unwrap();
    assert_eq!(top.iface, "if2", "unknown ifindex gets a stable name");
    let src: Vec<(u32, IpAddr, f64)> = top
        .sources
        .iter()
        .map(|e| (e.rank, e.key, e.rate.bytes_per_second))
        .collect();
    assert_eq!(src, vec![(1, ip(1), 200.0), (2, ip(2), 150.0)]);
    let dst1 = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
    assert_eq!(top.destinations[0].key, dst1);
    assert_eq!(top.destinations[0].rate.packets_per_second, 4.0);
    assert_eq!(top.flows.len(), 2);
    assert_eq!(top.flows[0].rate.bytes_per_second, 150.0);
    assert_eq!(top.flows[0].key.dst_port, 80);
}

#[test]
fn smoothed_rankings_decay_and_forget() {
    let mut r = Rates::new(config(2));
    r.update(&iv(0, 1, vec![flow(1, 1, 80, 6, 10, 1000)], vec![]));
    let d = (-0.2f64).exp();
    let s = r.update(&iv(1, 2, vec![flow(2, 1, 80, 6, 1, 500)], vec![]));
    let ewma = s
        .top
        .iter()
        .find(|t| t.smoothing == Smoothing::Ewma)
        .unwrap();
    // .1 entered at (1-d)*1000 and decayed once; .2 entered at (1-d)*500.
    assert_eq!(ewma.sources[0].key, ip(1));
    assert_eq!(
        ewma.sources[0].rate.bytes_per_second,
        d * (1000.0 + d * (0.0 - 1000.0))
    );
    assert_eq!(
        ewma.sources[1].rate.bytes_per_second,
        500.0 + d * (0.0 - 500.0)
    );
    let interval = s
        .top
        .iter()
        .find(|t| t.smoothing == Smoothing::Interval)
        .unwrap();
    assert_eq!(interval.sources.len(), 1);
    // Silent for long enough, everything is forgotten and the lists vanish.
    let mut t = 2;
    loop {
        let s = r.update(&iv(t, t + 100, vec![], vec![]));
        t += 100;
        if s.top.is_empty() {
            break;
        }
        assert!(t < 10_000, "smoothed entries never expired");
    }
    assert!(r.trackers.is_empty());
}

#[test]
fn smoothed_state_is_bounded() {
    let mut r = Rates::new(config(1));
    for round in 0..5u64 {
        let flows: Vec<FlowDelta> = (1..=200u8)
            .map(|i| flow(i, i, 80, 6, 1, 100 + u64::from(i) + round))
            .collect();
        r.update(&iv(round, round + 1, flows, vec![]));
    }
    let tr = r.trackers.values().next().unwrap();
    assert!(tr.sources.len() <= 16, "cap is max(4k, 16)");
    assert!(tr.flows.len() <= 16);
}

#[test]
fn set_top_k_changes_the_list_length() {
    let mut r = Rates::new(config(3));
    let flows: Vec<FlowDelta> = (1..=10u8).map(|i| flow(i, i, 80, 6, 1, 100)).collect();
    let s = r.update(&iv(0, 1, flows.clone(), vec![]));
    assert_eq!(s.top[0].sources.len(), 3);
    r.set_top_k(5);
    let s = r.update(&iv(1, 2, flows.clone(), vec![]));
    assert_eq!(s.top[0].sources.len(), 5);
    r.set_top_k(0);
    let s = r.update(&iv(2, 3, flows, vec![]));
    assert!(s.top.is_empty());
}

#[test]
fn unknown_direction_codes_are_counted_not_ranked() {
    let mut r = Rates::new(config(3));
    let mut f = flow(1, 1, 80, 6, 1, 100);
    f.key.direction = 7;
    let s = r.update(&iv(0, 1, vec![f], vec![]));
    assert_eq!(s.invalid_flows, 1);
    assert!(s.top.is_empty());
}
