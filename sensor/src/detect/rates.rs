//! Rate detectors: floods, destination and interface spikes, outbound
//! spikes and the flow-table flood.
//!
//! Each is judged the same way: a static floor (the kind's default, or the
//! most specific `[[detection.thresholds]]` entry for the target) fires from
//! the first interval; a warm learned baseline also fires when the score
//! reaches `baseline.min_score` and the rate is at least the kind's
//! baseline minimum. Either is enough.

use std::collections::HashMap;

use sensor_common::Totals;

use super::aggregate::Aggregate;
use super::baseline::{Baseline, BaselineParams, Sample};
use super::bounded::BoundedMap;
use super::cidr::Cidr;
use super::config::{DetectConfig, StaticThreshold};
use super::{Judgment, Kind, Target};
use crate::model::{addr_bytes, Interval};

/// Which score a kind uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScoreBy {
    Pps,
    Bps,
    Max,
}

/// One rate observation to judge.
struct RateInput {
    kind: Kind,
    target: Target,
    /// Address for CIDR thresholds (none for interfaces).
    addr: Option<[u8; 16]>,
    pps: f64,
    bps: f64,
    /// Extra condition every trigger needs (e.g. the half-open ratio).
    gate: bool,
    floor_pps: f64,
    floor_bps: f64,
    base_min_pps: f64,
    base_min_bps: f64,
    score_by: ScoreBy,
}

/// Baselines and interface history.
pub(crate) struct RateState {
    baselines: BoundedMap<(Kind, Target), Baseline>,
    prev_totals: HashMap<(u32, u8), Totals>,
    /// CIDR thresholds, most specific first.
    thresholds: Vec<(Cidr, StaticThreshold)>,
    params: BaselineParams,
}

/// Per-interface deltas of the exact totals.
#[derive(Default)]
struct IfaceDelta {
    pkts: u64,
    bytes: u64,
    unattributed: u64,
    unattributed_bytes: u64,
}

impl RateState {
    /// Empty state for `cfg` (already validated).
    pub fn new(cfg: &DetectConfig) -> RateState {
        let mut s = RateState {
            baselines: BoundedMap::new(cfg.max_baselines),
            prev_totals: HashMap::new(),
            thresholds: Vec::new(),
            params: params(cfg),
        };
        s.reload(cfg);
        s
    }

    /// Applies a new configuration, keeping baselines.
    pub fn reload(&mut self, cfg: &DetectConfig) {
        self.baselines.set_capacity(cfg.max_baselines);
        self.params = params(cfg);
        let mut t: Vec<(Cidr, StaticThreshold)> = cfg
            .thresholds
            .iter()
            .filter_map(|t| Cidr::parse(&t.cidr).map(|c| (c, t.clone())))
            .collect();
        t.sort_by_key(|e| std::cmp::Reverse(e.0.bits()));
        self.thresholds = t;
    }

    /// Baselines held now.
    pub fn baselines(&self) -> usize {
        self.baselines.len()
    }

    /// Baselines evicted since start.
    pub fn baseline_evictions(&self) -> u64 {
        self.baselines.evictions()
    }

    /// The learned baseline of a (kind, target), if any.
    pub fn baseline(&self, kind: Kind, target: &Target) -> Option<&Baseline> {
        self.baselines.get(&(kind, target.clone()))
    }

    /// Judges every rate kind for this interval.
    pub fn evaluate(
        &mut self,
        iv: &Interval,
        agg: &Aggregate,
        cfg: &DetectConfig,
        out: &mut Vec<Judgment>,
    ) {
        let dt = iv.seconds();
        let base = Sample {
            start_ns: iv.start_ns,
            end_ns: iv.end_ns,
            dt,
            hour: super::baseline::hour_of_day(iv.end_unix_ns),
            pps: 0.0,
            bps: 0.0,
        };
        let ts = &cfg.traffic_spike;
        for (ip, d) in &agg.dsts {
            let addr = Some(addr_bytes(*ip));
            let target = Target::Addr(*ip);
            if d.syn > 0 {
                let ratio = d.half_open as f64 / d.syn as f64;
                let c = &cfg.syn_flood;
                out.push(self.judge(
                    &base,
                    RateInput {
                        kind: Kind::SynFlood,
                        target: target.clone(),
                        addr,
                        pps: d.half_open as f64 / dt,
                        bps: d.half_open_bytes as f64 * 8.0 / dt,
                        gate: ratio >= c.min_half_open_ratio,
                        floor_pps: c.pps,
                        floor_bps: 0.0,
                        base_min_pps: c.baseline_min_pps,
                        base_min_bps: 0.0,
                        score_by: ScoreBy::Pps,
                    },
                ));
            }
            if d.udp_pkts > 0 {
                let c = &cfg.udp_flood;
                out.push(self.judge(
                    &base,
                    RateInput {
                        kind: Kind::UdpFlood,
                        target: target.clone(),
                        addr,
                        pps: d.udp_pkts as f64 / dt,
                        bps: d.udp_bytes as f64 * 8.0 / dt,
                        gate: true,
                        floor_pps: c.pps,
                        floor_bps: c.bps,
                        base_min_pps: c.baseline_min_pps,
                        base_min_bps: 0.0,
                        score_by: ScoreBy::Pps,
                    },
                ));
            }
            if d.icmp_pkts > 0 {
                let c = &cfg.icmp_flood;
                out.push(self.judge(
                    &base,
                    RateInput {
                        kind: Kind::IcmpFlood,
                        target: target.clone(),
                        addr,
                        pps: d.icmp_pkts as f64 / dt,
                        bps: d.icmp_bytes as f64 * 8.0 / dt,
                        gate: true,
                        floor_pps: c.pps,
                        floor_bps: c.bps,
                        base_min_pps: c.baseline_min_pps,
                        base_min_bps: 0.0,
                        score_by: ScoreBy::Pps,
                    },
                ));
            }
            if ts.destinations {
                out.push(self.judge(&base, spike(target, addr, d.pkts, d.bytes, dt, cfg)));
            }
        }
        for (ip, o) in &agg.out {
            out.push(self.judge(
                &base,
                RateInput {
                    kind: Kind::OutboundSpike,
                    target: Target::Addr(*ip),
                    addr: Some(addr_bytes(*ip)),
                    pps: o.pkts as f64 / dt,
                    bps: o.bytes as f64 * 8.0 / dt,
                    gate: true,
                    floor_pps: 0.0,
                    floor_bps: 0.0,
                    base_min_pps: 0.0,
                    base_min_bps: cfg.outbound_spike.min_bps,
                    score_by: ScoreBy::Bps,
                },
            ));
        }
        for (name, d) in self.iface_deltas(iv, cfg) {
            let target = Target::Iface(name);
            if ts.interfaces {
                out.push(self.judge(&base, spike(target.clone(), None, d.pkts, d.bytes, dt, cfg)));
            }
            let un_pps = d.unattributed as f64 / dt;
            let floor = cfg.flow_table_flood.pps;
            out.push(Judgment {
                kind: Kind::FlowTableFlood,
                target,
                over: floor > 0.0 && un_pps >= floor,
                observed: un_pps,
                pps: un_pps,
                bps: d.unattributed_bytes as f64 * 8.0 / dt,
                score: None,
                baseline: None,
            });
        }
    }

    /// Deltas of the cumulative totals per interface name; an interface seen
    /// for the first time, or whose counters went backwards (reloaded
    /// programs), yields nothing this interval.
    fn iface_deltas(&mut self, iv: &Interval, cfg: &DetectConfig) -> Vec<(String, IfaceDelta)> {
        let mut by_name: Vec<(String, IfaceDelta)> = Vec::new();
        for t in &iv.totals {
            let key = (t.ifindex, t.direction as u8);
            let prev = self.prev_totals.insert(key, t.totals);
            let Some(prev) = prev else { continue };
            if t.totals.packets < prev.packets || t.totals.not_attributed < prev.not_attributed {
                continue;
            }
            let pos = match by_name.iter().position(|(n, _)| *n == t.iface) {
                Some(p) => p,
                None => {
                    by_name.push((t.iface.clone(), IfaceDelta::default()));
                    by_name.len() - 1
                }
            };
            let d = &mut by_name[pos].1;
            d.unattributed += t.totals.not_attributed - prev.not_attributed;
            d.unattributed_bytes += t
                .totals
                .not_attributed_bytes
                .saturating_sub(prev.not_attributed_bytes);
            if cfg.direction.counts(t.direction) {
                d.pkts += t.totals.packets - prev.packets;
                d.bytes += t.totals.bytes.saturating_sub(prev.bytes);
            }
        }
        by_name
    }

    /// The CIDR threshold for a target and kind, most specific first.
    fn threshold(&self, kind: Kind, addr: &[u8; 16]) -> Option<&StaticThreshold> {
        self.thresholds
            .iter()
            .find(|(c, t)| t.kind == kind && c.contains(addr))
            .map(|(_, t)| t)
    }

    fn judge(&mut self, base: &Sample, r: RateInput) -> Judgment {
        let (floor_pps, floor_bps) = match r.addr.as_ref().and_then(|a| self.threshold(r.kind, a)) {
            Some(t) => (t.pps, t.bps),
            None => (r.floor_pps, r.floor_bps),
        };
        let static_hit = r.gate
            && ((floor_pps > 0.0 && r.pps >= floor_pps) || (floor_bps > 0.0 && r.bps >= floor_bps));
        let sample = Sample {
            pps: r.pps,
            bps: r.bps,
            ..*base
        };
        let params = self.params;
        let bl = self
            .baselines
            .get_or_insert_with(&(r.kind, r.target.clone()), || {
                Baseline::new(base.start_ns, &params)
            });
        let a = bl.assess(&sample, &params);
        let (z, mean) = match r.score_by {
            ScoreBy::Pps => (a.z_pps, a.mean_pps),
            ScoreBy::Bps => (a.z_bps, a.mean_bps),
            ScoreBy::Max => (a.z_pps.max(a.z_bps), a.mean_pps),
        };
        let big_enough = (r.base_min_pps > 0.0 && r.pps >= r.base_min_pps)
            || (r.base_min_bps > 0.0 && r.bps >= r.base_min_bps);
        let baseline_hit = r.gate && a.warm && big_enough && z >= params.min_score;
        let over = static_hit || baseline_hit;
        bl.learn(&sample, over, &params);
        Judgment {
            kind: r.kind,
            target: r.target,
            over,
            observed: if r.score_by == ScoreBy::Bps {
                r.bps
            } else {
                r.pps
            },
            pps: r.pps,
            bps: r.bps,
            score: a.warm.then_some(z),
            baseline: a.warm.then_some(mean),
        }
    }
}

/// Baseline settings from the configuration.
fn params(cfg: &DetectConfig) -> BaselineParams {
    let b = &cfg.baseline;
    BaselineParams {
        half_life_seconds: b.half_life_seconds,
        warmup_seconds: b.warmup_seconds,
        min_stddev_fraction: b.min_stddev_fraction,
        min_score: b.min_score,
        daily_profile: b.daily_profile,
    }
}

/// A `traffic_spike` input for a destination or an interface.
fn spike(
    target: Target,
    addr: Option<[u8; 16]>,
    pkts: u64,
    bytes: u64,
    dt: f64,
    cfg: &DetectConfig,
) -> RateInput {
    RateInput {
        kind: Kind::TrafficSpike,
        target,
        addr,
        pps: pkts as f64 / dt,
        bps: bytes as f64 * 8.0 / dt,
        gate: true,
        floor_pps: 0.0,
        floor_bps: 0.0,
        base_min_pps: cfg.traffic_spike.min_pps,
        base_min_bps: cfg.traffic_spike.min_bps,
        score_by: ScoreBy::Max,
    }
}
