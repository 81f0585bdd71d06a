//! Who contributes to a watched target: distinct sources (HyperLogLog) and
//! the heaviest sources (space-saving top-K), computed only for targets that
//! are over threshold or active, so the cost is bounded by `max_active`.

use std::collections::{HashMap, HashSet};

use sensor_common::Direction;

use super::aggregate::FlowFilter;
use super::sketch::{HyperLogLog, TopK};
use super::{Kind, Target};
use crate::model::{FlowKeyExt, Interval};

/// Sources seen toward one target in one interval.
#[derive(Clone, Debug)]
pub(crate) struct Spread {
    /// Distinct sources.
    pub distinct: HyperLogLog,
    /// Heaviest sources by packets (SYNs for `syn_flood`).
    pub top: TopK<std::net::IpAddr>,
}

/// Collects the spread of every watched (kind, target).
pub(crate) fn collect(
    iv: &Interval,
    filter: &FlowFilter<'_>,
    watched: &HashSet<(Kind, Target)>,
    precision: u8,
    k: usize,
) -> HashMap<(Kind, Target), Spread> {
    let mut out: HashMap<(Kind, Target), Spread> = HashMap::new();
    if watched.is_empty() {
        return out;
    }
    let mut iface_kinds: HashMap<u32, Vec<(Kind, Target)>> = HashMap::new();
    for t in &iv.totals {
        for kind in [Kind::TrafficSpike, Kind::FlowTableFlood] {
            let key = (kind, Target::Iface(t.iface.clone()));
            if watched.contains(&key) {
                let v = iface_kinds.entry(t.ifindex).or_default();
                if !v.contains(&key) {
                    v.push(key);
                }
            }
        }
    }
    let mut add = |key: (Kind, Target), src: std::net::IpAddr, w: u64| {
        if !watched.contains(&key) {
            return;
        }
        let s = out.entry(key).or_insert_with(|| Spread {
            distinct: HyperLogLog::new(precision),
            top: TopK::new(k),
        });
        s.distinct.insert(&src);
        s.top.add(&src, w);
    };
    for f in &iv.flows {
        let Some(dir) = filter.admit(f) else { continue };
        let (k, v) = (&f.key, &f.value);
        if v.packets == 0 {
            continue;
        }
        let (src, dst) = (k.src(), k.dst());
        if dir == Direction::Egress {
            add((Kind::OutboundSpike, Target::Addr(src)), src, v.packets);
        }
        if !filter.direction.counts(dir) {
            continue;
        }
        let d = Target::Addr(dst);
        match k.protocol {
            6 if v.syn > 0 => add((Kind::SynFlood, d.clone()), src, v.syn),
            17 => add((Kind::UdpFlood, d.clone()), src, v.packets),
            1 | 58 => add((Kind::IcmpFlood, d.clone()), src, v.packets),
            _ => {}
        }
        add((Kind::TrafficSpike, d), src, v.packets);
        add((Kind::PortScan, Target::Addr(src)), src, v.packets);
        add((Kind::HostSweep, Target::Addr(src)), src, v.packets);
        if let Some(keys) = iface_kinds.get(&k.ifindex) {
            for key in keys {
                add(key.clone(), src, v.packets);
            }
        }
    }
    out
}
