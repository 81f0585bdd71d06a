//! Detector tests over synthetic interval series: floors, warm-up,
//! hysteresis, baseline adaptation, allowlist, CIDR thresholds, bounds,
//! reload and metrics. Per-kind attacks and benign loads are in
//! `tests_kinds`.

use prometheus::Registry;
use sensor_common::{tcp_flags, Direction, FlowKey, FlowValue};

use super::*;
use crate::model::{v4, FlowDelta, IfaceTotals, Interval};

pub(super) const S: u64 = 1_000_000_000;
pub(super) const UNIX0: u64 = 1_700_000_000 * S;

/// A flow builder.
#[derive(Clone, Copy)]
pub(super) struct F(pub FlowDelta);

impl F {
    pub fn new(proto: u8, src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> F {
        F(FlowDelta {
            key: FlowKey {
                src_addr: src,
                dst_addr: dst,
                ifindex: 2,
                src_port: sport,
                dst_port: dport,
                direction: Direction::Ingress as u8,
                ip_version: 4,
                protocol: proto,
                ..Default::default()
            },
            value: FlowValue::default(),
        })
    }
    pub fn tcp(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> F {
        F::new(6, src, sport, dst, dport)
    }
    pub fn udp(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> F {
        F::new(17, src, sport, dst, dport)
    }
    /// ICMP: `icmp_type` is stored in the source port.
    pub fn icmp(src: [u8; 16], dst: [u8; 16], icmp_type: u16) -> F {
        F::new(1, src, icmp_type, dst, 0)
    }
    pub fn egress(mut self) -> F {
        self.0.key.direction = Direction::Egress as u8;
        self
    }
    pub fn pkts(mut self, packets: u64, bytes: u64) -> F {
        self.0.value.packets = packets;
        self.0.value.bytes = bytes;
        self.0.value.first_seen_ns = 1;
        self.0.value.last_seen_ns = 2;
        self
    }
    pub fn syn(mut self, n: u64) -> F {
        self.0.value.syn = n;
        self.0.value.tcp_flags |= tcp_flags::SYN;
        self
    }
    pub fn syn_ack(mut self, n: u64) -> F {
        self.0.value.syn_ack = n;
        self.0.value.tcp_flags |= tcp_flags::SYN | tcp_flags::ACK;
        self
    }
    pub fn rst(mut self, n: u64) -> F {
        self.0.value.rst = n;
        self.0.value.tcp_flags |= tcp_flags::RST;
        self
    }
    pub fn ack(mut self) -> F {
        self.0.value.tcp_flags |= tcp_flags::ACK;
        self
    }
    pub fn fin(mut self, n: u64) -> F {
        self.0.value.fin = n;
        self.0.value.tcp_flags |= tcp_flags::FIN;
        self
    }
}

/// Interval `i` (one second long) holding `flows`.
pub(super) fn iv(i: u64, flows: Vec<F>) -> Interval {
    Interval {
        start_ns: i * S,
        end_ns: (i + 1) * S,
        end_unix_ns: UNIX0 + (i + 1) * S,
        flows: flows.into_iter().map(|f| f.0).collect(),
        totals: Vec::new(),
        kernel: None,
    }
}

pub(super) fn detector(cfg: DetectConfig) -> (Detector, Registry) {
    let r = Registry::new();
    let d = Detector::new(cfg, &r).expect("valid config");
    (d, r)
}

/// Runs intervals `from..to` built by `make`, collecting (interval, event).
pub(super) fn run(
    d: &mut Detector,
    from: u64,
    to: u64,
    mut make: impl FnMut(u64) -> Vec<F>,
) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    for i in from..to {
        for e in d.observe(&iv(i, make(i))) {
            out.push((i, e));
        }
    }
    out
}

/// `n` packets/s of UDP from `src` to `dst` (one flow per 1000 packets).
pub(super) fn udp_load(src: [u8; 16], dst: [u8; 16], n: u64) -> Vec<F> {
    let flows = n.div_ceil(1000).max(1);
    (0..flows)
        .map(|j| {
            let p = (n - j * 1000).min(1000);
            F::udp(src, 1000 + j as u16, dst, 53).pkts(p, p * 100)
        })
        .filter(|f| f.0.value.packets > 0)
        .collect()
}

pub(super) fn kinds(events: &[(u64, Event)]) -> Vec<(&'static str, EventState)> {
    events.iter().map(|(_, e)| (e.kind, e.state)).collect()
}

pub(super) const ATTACKER: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1];
pub(super) const VICTIM: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2];

#[test]
fn floor_fires_from_first_intervals_and_clears() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 30, |i| {
        if i < 10 {
            udp_load(ATTACKER, VICTIM, 50_000)
        } else {
            vec![]
        }
    });
    assert_eq!(
        kinds(&ev),
        vec![
            ("udp_flood", EventState::Start),
            ("udp_flood", EventState::End)
        ]
    );
    let (i0, start) = &ev[0];
    assert_eq!(*i0, 1, "starts after for_intervals = 2");
    assert_eq!(start.target, "198.18.0.2");
    assert_eq!(start.score, None, "no warm baseline yet: the floor fired");
    assert_eq!(start.observed, 50_000.0);
    assert_eq!(start.top_sources[0].source, "198.18.0.1");
    assert_eq!(start.distinct_sources, Some(1));
    assert_eq!(start.time, events::rfc3339(UNIX0 + 2 * S));
    let (i1, end) = &ev[1];
    assert_eq!(*i1, 14, "ends once clear for clear_seconds = 5");
    assert_eq!(end.duration_seconds, Some(10.0));
    assert_eq!(end.peak_bps, 50_000.0 * 800.0);
    assert_eq!(d.active().count(), 0);
}

#[test]
fn below_floor_during_warm_up_is_quiet() {
    let (mut d, _r) = detector(DetectConfig::default());
    let ev = run(&mut d, 0, 20, |i| {
        udp_load(ATTACKER, VICTIM, if i < 10 { 100 } else { 9_000 })
    });
    assert!(ev.is_empty(), "{ev:?}");
}

#[test]
fn hysteresis_needs_consecutive_intervals_and_bridges_short_gaps() {
    let cfg = DetectConfig {
        for_intervals: 3,
        ..Default::default()
    };
    let (mut d, _r) = detector(cfg);
    // Over every other interval: never three in a row.
    let ev = run(&mut d, 0, 20, |i| {
        if i % 2 == 0 {
            udp_load(ATTACKER, VICTIM, 50_000)
        } else {
            vec![]
        }
    });
    assert!(ev.is_empty(), "{ev:?}");
    // Three in a row starts it at the third; a 3 s gap (< clear 5 s) does not end it.
    let ev = run(&mut d, 20, 60, |i| match i {
        20..=29 | 33..=39 => udp_load(ATTACKER, VICTIM, 50_000),
        _ => vec![],
    });
    assert_eq!(
        kinds(&ev),
        vec![
            ("udp_flood", EventState::Start),
            ("udp_flood", EventState::End)
        ]
    );
    assert_eq!(ev[0].0, 22);
    assert_eq!(ev[1].0, 44);
    assert_eq!(ev[1].1.duration_seconds, Some(20.0));
}

#[test]
fn warm_baseline_adds_sensitivity_below_the_floor() {
    let mut cfg = DetectConfig::default();
    cfg.baseline.half_life_seconds = 60.0;
    cfg.baseline.warmup_seconds = 120.0;
    let (mut d, _r) = detector(cfg);
    // Before warm-up a jump to 5000 pps (under the 10 000 floor) is quiet.
    let ev = run(&mut d, 0, 100, |i| {
        udp_load(
            ATTACKER,
            VICTIM,
            if (50..60).contains(&i) { 5_000 } else { 200 },
        )
    });
    assert!(ev.is_empty(), "{ev:?}");
    let ev = run(&mut d, 100, 300, |_| udp_load(ATTACKER, VICTIM, 200));
    assert!(ev.is_empty(), "{ev:?}");
    let ev = run(&mut d, 300, 310, |_| udp_load(ATTACKER, VICTIM, 5_000));
    // The destination's total rate jumps too: traffic_spike fires alongside.
    let mut k = kinds(&ev);
    k.sort_by_key(|(kind, _)| *kind);
    assert_eq!(
        k,
        vec![
            ("traffic_spike", EventState::Start),
            ("udp_flood", EventState::Start)
        ]
    );
    let start = &ev
        .iter()
        .find(|(_, e)| e.kind == "udp_flood")
        .expect("udp_flood")
        .1;
    assert!(start.score.expect("warm") > 6.0, "{start:?}");
    let base = start.baseline.expect("warm");
    assert!(base > 150.0 && base < 400.0, "baseline {base}");
}

#[test]
fn baseline_adapts_to_a_gradual_rise_and_still_catches_a_jump() {
    let mut cfg = DetectConfig::default();
    cfg.baseline.half_life_seconds = 30.0;
    cfg.baseline.warmup_seconds = 60.0;
    let (mut d, _r) = detector(cfg);
    let target = Target::Addr("198.18.0.2".parse().expect("ip"));
    // 200 -> 4000 pps over 1000 s: each step is small against the baseline.
    let ev = run(&mut d, 0, 1000, |i| {
        udp_load(ATTACKER, VICTIM, 200 + i * 38 / 10)
    });
    assert!(ev.is_empty(), "{ev:?}");
    let (mean, seconds) = d.baseline_pps(Kind::UdpFlood, &target).expect("learned");
    assert!(mean > 3_500.0 && mean < 4_000.0, "mean {mean}");
    assert!(seconds >= 999.0);
    // A jump to 9 000 pps: under the floor, far above the learned level.
    let ev = run(&mut d, 1000, 1003, |_| udp_load(ATTACKER, VICTIM, 9_000));
    assert!(
        kinds(&ev).contains(&("udp_flood", EventState::Start)),
        "{ev:?}"
    );
}

#[test]
fn allowlist_exempts_sources_and_destinations() {
    let other = v4(198, 18, 0, 3);
    let cfg = DetectConfig {
        allow_sources: vec!["198.18.0.1/32".into()],
        allow_destinations: vec!["198.18.0.64/26".into()],
        ..Default::default()
    };
    let (mut d, _r) = detector(cfg);
    let ev = run(&mut d, 0, 10, |_| {
        let mut f = udp_load(ATTACKER, VICTIM, 50_000);
        f.extend(udp_load(other, v4(198, 18, 0, 70), 50_000));
        f
    });
    assert!(ev.is_empty(), "{ev:?}");
    let ev = run(&mut d, 10, 13, |_| udp_load(other, VICTIM, 50_000));
    assert_eq!(kinds(&ev), vec![("udp_flood", EventState::Start)]);
}

#[test]
fn cidr_thresholds_override_floors_and_add_to_spikes() {
    let cfg: DetectConfig = toml::from_str(
        r#"
        [[thresholds]]
        cidr = "198.18.0.0/24"
        kind = "udp_flood"
        pps = 100000
        [[thresholds]]
        cidr = "198.18.0.128/25"
        kind = "udp_flood"
        pps = 1000
        [[thresholds]]
        cidr = "198.18.2.0/24"
        kind = "traffic_spike"
        bps = 1e6
        "#,
    )
    .expect("parses");
    let (mut d, _r) = detector(cfg);
    let raised = v4(198, 18, 0, 2);
    let lowered = v4(198, 18, 0, 200);
    let default = v4(198, 18, 1, 2);
    let ev = run(&mut d, 0, 3, |_| {
        let mut f = udp_load(ATTACKER, raised, 50_000);
        f.extend(udp_load(ATTACKER, lowered, 2_000));
        f.extend(udp_load(ATTACKER, default, 50_000));
        f
    });
    let mut started: Vec<String> = ev.iter().map(|(_, e)| e.target.clone()).collect();
    started.sort();
    assert_eq!(started, vec!["198.18.0.200", "198.18.1.2"]);
    // A static traffic_spike threshold fires without any baseline.
    let web = v4(198, 18, 2, 9);
    let ev = run(&mut d, 3, 6, |_| {
        vec![F::tcp(ATTACKER, 40000, web, 80).ack().pkts(300, 450_000)]
    });
    assert_eq!(kinds(&ev), vec![("traffic_spike", EventState::Start)]);
    assert_eq!(ev[0].1.target, "198.18.2.9");
}

#[test]
fn tracked_sources_stay_bounded_under_a_million_sources() {
    let cfg = DetectConfig {
        max_tracked_sources: 65_536,
        ..Default::default()
    };
    let (mut d, r) = detector(cfg);
    let per = 62_500u32;
    for i in 0..16u32 {
        let flows: Vec<F> = (0..per)
            .map(|j| {
                let n = i * per + j;
                let src = v4(10, (n >> 16) as u8, (n >> 8) as u8, n as u8);
                F::udp(src, 1024, VICTIM, 53).pkts(1, 60)
            })
            .collect();
        d.observe(&iv(u64::from(i), flows));
        assert!(
            d.tracked_sources() <= 65_536,
            "tracked {}",
            d.tracked_sources()
        );
    }
    let total = 16 * u64::from(per);
    assert_eq!(total, 1_000_000);
    assert_eq!(
        d.tracked_source_evictions() + d.tracked_sources() as u64,
        total
    );
    assert!(d.tracked_source_evictions() >= total - 65_536);
    let text = gather(&r);
    assert!(
        text.contains(&format!(
            "sensor_detection_tracked_source_evictions_total {}",
            d.tracked_source_evictions()
        )),
        "{text}"
    );
    // 62 500 UDP packets/s from distinct sources to one destination: a flood.
    assert!(d
        .active()
        .any(|a| a.kind == Kind::UdpFlood && a.distinct_sources.unwrap_or(0) > 55_000));
}

pub(super) fn gather(r: &Registry) -> String {
    let mut buf = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
        .expect("encode");
    String::from_utf8(buf).expect("utf8")
}

#[test]
fn metrics_exist_from_first_scrape_and_follow_the_lifecycle() {
    let (mut d, r) = detector(DetectConfig::default());
    let text = gather(&r);
    for k in Kind::ALL {
        assert!(
            text.contains(&format!("sensor_anomalies_total{{kind=\"{k}\"}} 0")),
            "{k}"
        );
        assert!(
            text.contains(&format!(
                "sensor_detection_evaluations_total{{kind=\"{k}\"}} 0"
            )),
            "{k}"
        );
    }
    assert!(text.contains("sensor_detection_tracked_sources 0"));
    run(&mut d, 0, 3, |_| udp_load(ATTACKER, VICTIM, 50_000));
    let text = gather(&r);
    assert!(
        text.contains("sensor_anomaly_active{kind=\"udp_flood\",target=\"198.18.0.2\"} 1"),
        "{text}"
    );
    assert!(text.contains("sensor_anomalies_total{kind=\"udp_flood\"} 1"));
    assert!(text.contains("sensor_detection_evaluations_total{kind=\"udp_flood\"} 3"));
    run(&mut d, 3, 20, |_| vec![]);
    let text = gather(&r);
    assert!(!text.contains("sensor_anomaly_active{"), "{text}");
    assert!(text.contains("sensor_anomalies_total{kind=\"udp_flood\"} 1"));
}

#[test]
fn max_active_bounds_anomalies_and_counts_the_excess() {
    let cfg = DetectConfig {
        max_active: 1,
        ..Default::default()
    };
    let (mut d, r) = detector(cfg);
    let ev = run(&mut d, 0, 5, |_| {
        let mut f = udp_load(ATTACKER, VICTIM, 50_000);
        f.extend(udp_load(ATTACKER, v4(198, 18, 0, 9), 50_000));
        f
    });
    assert_eq!(ev.len(), 1);
    assert_eq!(d.active().count(), 1);
    assert!(gather(&r).contains("sensor_anomalies_suppressed_total{kind=\"udp_flood\"} 1"));
}

#[test]
fn reload_keeps_baselines_and_active_anomalies() {
    let (mut d, _r) = detector(DetectConfig::default());
    run(&mut d, 0, 5, |_| udp_load(ATTACKER, VICTIM, 50_000));
    let target = Target::Addr("198.18.0.2".parse().expect("ip"));
    let before = d.baseline_pps(Kind::UdpFlood, &target).expect("learned");
    let mut cfg = DetectConfig::default();
    cfg.udp_flood.pps = 80_000.0;
    cfg.allow_sources = vec!["203.0.113.0/24".into()];
    d.reload(cfg);
    assert_eq!(d.config().udp_flood.pps, 80_000.0);
    assert_eq!(d.active().count(), 1);
    assert_eq!(d.baseline_pps(Kind::UdpFlood, &target), Some(before));
    // Below the new floor: the anomaly clears and ends.
    let ev = run(&mut d, 5, 15, |_| udp_load(ATTACKER, VICTIM, 50_000));
    assert_eq!(kinds(&ev), vec![("udp_flood", EventState::End)]);
    // An invalid configuration is refused and the current one kept.
    let bad = DetectConfig {
        clear_seconds: -1.0,
        ..Default::default()
    };
    assert!(d.try_reload(bad).is_err());
    assert_eq!(d.config().udp_flood.pps, 80_000.0);
}

#[test]
fn interface_totals_feed_flow_table_flood() {
    let (mut d, _r) = detector(DetectConfig::default());
    let mut cum = sensor_common::Totals::default();
    let mut events = Vec::new();
    for i in 0..6u64 {
        cum.packets += 1_000_000;
        cum.bytes += 64_000_000;
        cum.not_attributed += if i >= 1 { 900_000 } else { 0 };
        let mut interval = iv(i, udp_load(ATTACKER, VICTIM, 100));
        interval.totals = vec![IfaceTotals {
            ifindex: 2,
            iface: "veth0".into(),
            direction: Direction::Ingress,
            totals: cum,
        }];
        events.extend(d.observe(&interval));
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind, events[0].target.as_str()),
        ("flow_table_flood", "iface:veth0")
    );
    assert_eq!(events[0].observed, 900_000.0);
}
