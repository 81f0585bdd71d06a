//! Each kind fires on a synthetic version of its attack, with the right
//! target; the two benign loads (one bulk TCP transfer, many short HTTP
//! connections) fire nothing.

use super::tests::{detector, kinds, run, udp_load, ATTACKER, F, VICTIM};
use super::*;
use crate::model::v4;

/// The kinds that must never start on benign loads.
const ATTACK_KINDS: [&str; 5] = [
    "syn_flood",
    "udp_flood",
    "icmp_flood",
    "port_scan",
    "host_sweep",
];

fn starts(events: &[(u64, Event)]) -> Vec<(&'static str, String, u64)> {
    events
        .iter()
        .filter(|(_, e)| e.state == EventState::Start)
        .map(|(i, e)| (e.kind, e.target.clone(), *i))
        .collect()
}

/// hping3 -S --flood -p 80: a new source port per SYN; the victim answers
/// each with a SYN-ACK and the attacker's kernel resets it.
fn syn_flood_interval(i: u64, rate: u64) -> Vec<F> {
    let mut v = Vec::new();
    for j in 0..rate {
        let sport = ((i * rate + j) % 60_000 + 1024) as u16;
        v.push(
            F::tcp(ATTACKER, sport, VICTIM, 80)
                .pkts(2, 114)
                .syn(1)
                .rst(1),
        );
        v.push(
            F::tcp(VICTIM, 80, ATTACKER, sport)
                .egress()
                .pkts(1, 58)
                .syn_ack(1),
        );
    }
    v
}

#[test]
fn syn_flood_fires_even_when_every_syn_gets_a_syn_ack() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 25, |i| {
        if i < 10 {
            syn_flood_interval(i, 30_000)
        } else {
            vec![]
        }
    });
    assert_eq!(
        starts(&ev),
        vec![("syn_flood", "198.18.0.2".to_string(), 1)]
    );
    assert_eq!(kinds(&ev)[1], ("syn_flood", EventState::End));
    assert_eq!(ev[0].1.observed, 30_000.0);
}

#[test]
fn spoofed_syn_flood_reports_source_spread() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 3, |i| {
        (0..40_000u32)
            .map(|j| {
                let n = j + i as u32 * 40_000;
                F::tcp(
                    v4(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
                    1234,
                    VICTIM,
                    80,
                )
                .pkts(1, 60)
                .syn(1)
            })
            .collect()
    });
    assert_eq!(
        starts(&ev),
        vec![("syn_flood", "198.18.0.2".to_string(), 1)]
    );
    let spread = ev[0].1.distinct_sources.expect("estimated");
    assert!((38_000..42_000).contains(&spread), "{spread}");
}

#[test]
fn udp_flood_fires() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 5, |i| {
        let mut v: Vec<F> = (0..50u64)
            .map(|j| F::udp(ATTACKER, (i * 50 + j) as u16 + 1024, VICTIM, 0).pkts(1000, 42_000))
            .collect();
        v.push(F::icmp(VICTIM, ATTACKER, 3).egress().pkts(1000, 70_000));
        v
    });
    assert_eq!(
        starts(&ev),
        vec![("udp_flood", "198.18.0.2".to_string(), 1)]
    );
}

#[test]
fn icmp_flood_fires() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 5, |_| {
        vec![
            F::icmp(ATTACKER, VICTIM, 8).pkts(40_000, 40_000 * 42),
            F::icmp(VICTIM, ATTACKER, 0)
                .egress()
                .pkts(40_000, 40_000 * 42),
        ]
    });
    assert_eq!(
        starts(&ev),
        vec![("icmp_flood", "198.18.0.2".to_string(), 1)]
    );
}

/// nmap -sS of ports 1..=1000 in one interval: closed ports answer RST, three
/// open ports answer SYN-ACK and are reset by the scanner.
fn syn_scan(ports: std::ops::RangeInclusive<u16>) -> Vec<F> {
    let mut v = Vec::new();
    for port in ports {
        if matches!(port, 22 | 80 | 443) {
            v.push(
                F::tcp(ATTACKER, 40_000, VICTIM, port)
                    .pkts(2, 118)
                    .syn(1)
                    .rst(1),
            );
            v.push(
                F::tcp(VICTIM, port, ATTACKER, 40_000)
                    .egress()
                    .pkts(1, 58)
                    .syn_ack(1),
            );
        } else {
            v.push(F::tcp(ATTACKER, 40_000, VICTIM, port).pkts(1, 58).syn(1));
            v.push(
                F::tcp(VICTIM, port, ATTACKER, 40_000)
                    .egress()
                    .pkts(1, 54)
                    .rst(1)
                    .ack(),
            );
        }
    }
    v
}

#[test]
fn port_scan_fires_on_the_scanner_and_ends_after_the_window() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 45, |i| match i {
        0 => syn_scan(1..=600),
        1 => syn_scan(601..=1000),
        _ => vec![],
    });
    assert_eq!(
        starts(&ev),
        vec![("port_scan", "198.18.0.1".to_string(), 1)]
    );
    let end = ev
        .iter()
        .find(|(_, e)| e.state == EventState::End)
        .expect("ends");
    // Probes age out of the 30 s window after interval 31; clear for 5 s.
    assert_eq!(end.0, 35);
    assert!(ev[0].1.observed >= 64.0);
}

#[test]
fn udp_port_scan_fires() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 3, |i| {
        (0..100u16)
            .map(|p| F::udp(ATTACKER, 50_000, VICTIM, 1000 + p + i as u16 * 100).pkts(1, 42))
            .collect()
    });
    assert_eq!(
        starts(&ev),
        vec![("port_scan", "198.18.0.1".to_string(), 1)]
    );
}

/// nmap -sn 198.18.1.0/24: ICMP echo, TCP SYN to 443, TCP ACK to 80 and ICMP
/// timestamp to each address, half the range per interval.
fn ping_sweep(half: u8) -> Vec<F> {
    let mut v = Vec::new();
    for host in (half as u16 * 128)..(half as u16 * 128 + 128) {
        let dst = v4(198, 18, 1, host as u8);
        v.push(F::icmp(ATTACKER, dst, 8).pkts(1, 42));
        v.push(F::tcp(ATTACKER, 61_000, dst, 443).pkts(1, 58).syn(1));
        v.push(F::tcp(ATTACKER, 61_000, dst, 80).pkts(1, 54).ack());
        v.push(F::icmp(ATTACKER, dst, 13).pkts(1, 54));
    }
    v
}

#[test]
fn host_sweep_fires_on_the_sweeper_and_nothing_else() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 4, |i| match i {
        0 => ping_sweep(0),
        1 => ping_sweep(1),
        _ => vec![],
    });
    assert_eq!(
        starts(&ev),
        vec![("host_sweep", "198.18.0.1".to_string(), 1)]
    );
}

#[test]
fn traffic_and_outbound_spikes_fire_against_warm_baselines() {
    let mut cfg = DetectConfig::default();
    cfg.baseline.half_life_seconds = 60.0;
    cfg.baseline.warmup_seconds = 60.0;
    let (mut d, _r) = detector(cfg);
    let local = VICTIM;
    let remote = v4(203, 0, 113, 7);
    let load = |i: u64, inbound: u64, outbound_bytes: u64| {
        vec![
            F::tcp(remote, 443, local, 50_000)
                .ack()
                .pkts(inbound, inbound * 1000),
            F::tcp(local, 50_000, remote, 443)
                .egress()
                .ack()
                .pkts(100 + i % 3, outbound_bytes),
        ]
    };
    let ev = run(&mut d, 0, 120, |i| load(i, 1000 + i % 7 * 10, 125_000));
    assert!(ev.is_empty(), "{ev:?}");
    // 30 000 established packets/s in (no flood kind), 400 Mbit/s out.
    let ev = run(&mut d, 120, 123, |i| load(i, 30_000, 50_000_000));
    let mut s = starts(&ev);
    s.sort();
    assert_eq!(
        s,
        vec![
            ("outbound_spike", "198.18.0.2".to_string(), 121),
            ("traffic_spike", "198.18.0.2".to_string(), 121),
        ]
    );
    assert!(ev.iter().all(|(_, e)| e.score.is_some_and(|z| z >= 6.0)));
    let _ = udp_load;
}

#[test]
fn bulk_tcp_transfer_fires_nothing() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 30, |i| {
        let (c, s) = (ATTACKER, VICTIM);
        let mut data = F::tcp(c, 50_000, s, 5201).ack().pkts(85_000, 85_000 * 1514);
        let mut acks = F::tcp(s, 5201, c, 50_000)
            .egress()
            .ack()
            .pkts(42_000, 42_000 * 66);
        let mut ctl = F::tcp(c, 49_999, s, 5201).ack().pkts(10, 900);
        if i == 0 {
            data = data.syn(1);
            acks = acks.syn_ack(1);
            ctl = ctl.syn(1);
        }
        vec![
            data,
            acks,
            ctl,
            F::tcp(s, 5201, c, 49_999).egress().ack().pkts(8, 700),
        ]
    });
    assert!(ev.is_empty(), "{ev:?}");
}

#[test]
fn many_short_http_connections_fire_nothing() {
    let (mut d, _r) = detector(DetectConfig::default());
    let rate = 3000u64;
    let ev = run(&mut d, 0, 20, |i| {
        let mut v = Vec::new();
        for j in 0..rate {
            let sport = ((i * rate + j) % 28_000 + 32_768) as u16;
            if j % 10 == 9 {
                // Straddles the interval boundary: only the SYN lands here,
                // the rest of the connection lands in the next interval.
                v.push(F::tcp(ATTACKER, sport, VICTIM, 80).pkts(1, 74).syn(1));
                v.push(
                    F::tcp(VICTIM, 80, ATTACKER, sport)
                        .egress()
                        .pkts(1, 74)
                        .syn_ack(1),
                );
                let prev = ((i.saturating_sub(1) * rate + j) % 28_000 + 32_768) as u16;
                v.push(F::tcp(ATTACKER, prev, VICTIM, 80).ack().pkts(4, 400).fin(1));
                v.push(
                    F::tcp(VICTIM, 80, ATTACKER, prev)
                        .egress()
                        .ack()
                        .pkts(3, 1500)
                        .fin(1),
                );
            } else {
                v.push(
                    F::tcp(ATTACKER, sport, VICTIM, 80)
                        .pkts(5, 474)
                        .syn(1)
                        .ack()
                        .fin(1),
                );
                v.push(
                    F::tcp(VICTIM, 80, ATTACKER, sport)
                        .egress()
                        .pkts(4, 1574)
                        .syn_ack(1)
                        .fin(1),
                );
            }
        }
        v
    });
    let fired: Vec<_> = starts(&ev)
        .into_iter()
        .filter(|(k, _, _)| ATTACK_KINDS.contains(k))
        .collect();
    assert!(fired.is_empty(), "{fired:?}");
    assert!(ev.is_empty(), "{ev:?}");
}
