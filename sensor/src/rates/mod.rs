//! Rates: per interface and direction, per protocol class, per host (top-K
//! sources and destinations) and per flow (top-K).
//!
//! Every rate is a count divided by the interval's own length,
//! [`Interval::seconds`] (monotonic kernel timestamps taken at the buffer
//! flips), never by the wall-clock time of the poll. Each rate is given over
//! the last interval and smoothed by an exponentially weighted moving
//! average with time constant `tau`:
//!
//! ```text
//! avg = new + exp(-dt / tau) * (avg - new)
//! ```
//!
//! where `dt` is the interval length. After a step change the average has
//! moved 63 % of the way after `tau`, 95 % after `3 tau`; with the default
//! `tau` of 5 s and 1 s polls each interval weighs `1 - exp(-0.2)` = 18 %.
//!
//! Sources of each figure:
//! - interface rates: deltas of the kernel's cumulative [`Totals`] between
//!   successive intervals (the first interval of an interface is a baseline
//!   and yields no rate; a counter that goes backwards is a reset, e.g. a
//!   program reload, and the new value counts as the delta);
//! - protocol rates: packets from the same deltas (exact, every frame),
//!   bytes from the interval's flow deltas (IP frames attributed to a flow;
//!   the kernel keeps no per-protocol byte totals, so non-IP has no bytes);
//! - host and flow rates: the interval's flow deltas, aggregated per
//!   interval in a hash map, then ranked with a bounded heap.
//!
//! Layout: this file (types, [`Rates`]); `topk` (bounded selection and the
//! smoothed trackers); `tests`.

#[cfg(test)]
mod tests;
mod topk;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use sensor_common::{Direction, FlowKey, L4Class, Totals, FLOW_F_FRAGMENT, L4_CLASSES};

use crate::model::{FlowKeyExt, Interval};

use topk::Tracker;
pub use topk::{top_k, FlowOrd};

/// Default EWMA time constant (as FastNetMon's default average window).
pub const DEFAULT_TAU: Duration = Duration::from_secs(5);
/// Default number of hosts and flows ranked per interface and direction.
pub const DEFAULT_TOP_K: usize = 20;

/// Settings of [`Rates`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatesConfig {
    /// Hosts (sources, destinations) and flows ranked per interface,
    /// direction and smoothing. 0 disables the rankings.
    pub top_k: usize,
    /// EWMA time constant; zero means no smoothing (the average is the
    /// last interval's rate).
    pub tau: Duration,
}

impl Default for RatesConfig {
    fn default() -> Self {
        RatesConfig {
            top_k: DEFAULT_TOP_K,
            tau: DEFAULT_TAU,
        }
    }
}

/// Packets and bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

impl Rate {
    /// `packets / seconds` and `bytes / seconds`.
    pub fn of(packets: u64, bytes: u64, seconds: f64) -> Rate {
        Rate {
            packets_per_second: packets as f64 / seconds,
            bytes_per_second: bytes as f64 / seconds,
        }
    }

    /// One EWMA step: `self + decay * (avg - self)`, `self` being the new
    /// rate and `decay = exp(-dt / tau)`.
    pub fn ewma(self, avg: Rate, decay: f64) -> Rate {
        Rate {
            packets_per_second: ewma(self.packets_per_second, avg.packets_per_second, decay),
            bytes_per_second: ewma(self.bytes_per_second, avg.bytes_per_second, decay),
        }
    }
}

/// One EWMA step on a scalar: `new + decay * (avg - new)`.
pub fn ewma(new: f64, avg: f64, decay: f64) -> f64 {
    new + decay * (avg - new)
}

/// `exp(-dt / tau)`; 0 when `tau` is zero (no smoothing).
pub fn decay(dt_seconds: f64, tau: Duration) -> f64 {
    let tau = tau.as_secs_f64();
    if tau <= 0.0 {
        0.0
    } else {
        (-dt_seconds / tau).exp()
    }
}

/// A value over the last interval and smoothed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Smoothed {
    pub interval: f64,
    pub ewma: f64,
}

/// Which figure a ranking or a gauge shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Smoothing {
    /// The last interval.
    Interval,
    /// The EWMA.
    Ewma,
}

impl Smoothing {
    /// Both values, in label order.
    pub const ALL: [Smoothing; 2] = [Smoothing::Interval, Smoothing::Ewma];
    /// Label value used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Smoothing::Interval => "interval",
            Smoothing::Ewma => "ewma",
        }
    }
}

/// Protocol class of a rate: an [`L4Class`] for IP frames, or non-IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtoClass {
    L4(L4Class),
    NonIp,
}

impl ProtoClass {
    /// Every class, in label order.
    pub const ALL: [ProtoClass; L4_CLASSES + 1] = [
        ProtoClass::L4(L4Class::Tcp),
        ProtoClass::L4(L4Class::Udp),
        ProtoClass::L4(L4Class::Icmp),
        ProtoClass::L4(L4Class::Sctp),
        ProtoClass::L4(L4Class::Other),
        ProtoClass::NonIp,
    ];
    /// Label value used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProtoClass::L4(c) => c.as_str(),
            ProtoClass::NonIp => "non_ip",
        }
    }
}

/// The kernel's L4 class of a flow key: later fragments are `Other`.
pub fn l4_class(key: &FlowKey) -> L4Class {
    if key.flags & FLOW_F_FRAGMENT != 0 {
        return L4Class::Other;
    }
    match key.protocol {
        6 => L4Class::Tcp,
        17 => L4Class::Udp,
        1 | 58 => L4Class::Icmp,
        132 => L4Class::Sctp,
        _ => L4Class::Other,
    }
}

/// Rates of one interface and direction.
#[derive(Clone, Debug, PartialEq)]
pub struct IfaceRate {
    pub iface: String,
    pub direction: Direction,
    pub packets: Smoothed,
    pub bytes: Smoothed,
    /// The kernel counters went backwards during this interval.
    pub reset: bool,
}

/// Rates of one protocol class on one interface and direction.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtoRate {
    pub iface: String,
    pub direction: Direction,
    pub class: ProtoClass,
    /// From the exact kernel totals.
    pub packets: Smoothed,
    /// From flow deltas; `None` for non-IP (not counted per protocol).
    pub bytes: Option<Smoothed>,
}

/// One ranked entry, rank 1 being the heaviest.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked<K> {
    pub rank: u32,
    pub key: K,
    pub rate: Rate,
}

/// The rankings of one interface, direction and smoothing.
#[derive(Clone, Debug, PartialEq)]
pub struct TopList {
    pub iface: String,
    pub direction: Direction,
    pub smoothing: Smoothing,
    pub sources: Vec<Ranked<IpAddr>>,
    pub destinations: Vec<Ranked<IpAddr>>,
    pub flows: Vec<Ranked<FlowKey>>,
}

/// Everything [`Rates::update`] computed for one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateSnapshot {
    pub start_ns: u64,
    pub end_ns: u64,
    pub ifaces: Vec<IfaceRate>,
    pub protocols: Vec<ProtoRate>,
    pub top: Vec<TopList>,
    /// Flow deltas skipped because their direction code was unknown.
    pub invalid_flows: u64,
}

/// Difference of two cumulative [`Totals`]. If any counter went backwards
/// the counters were reset (program reload) and `cur` itself is the delta;
/// the flag says so.
pub fn totals_delta(prev: &Totals, cur: &Totals) -> (Totals, bool) {
    fn sub<const N: usize>(a: &[u64; N], b: &[u64; N]) -> Option<[u64; N]> {
        let mut out = [0u64; N];
        for i in 0..N {
            out[i] = b[i].checked_sub(a[i])?;
        }
        Some(out)
    }
    let scalars = |t: &Totals| {
        [
            t.packets,
            t.bytes,
            t.ipv4,
            t.ipv6,
            t.non_ip,
            t.fragments,
            t.not_attributed,
            t.not_attributed_bytes,
        ]
    };
    let delta = (|| {
        let s = sub(&scalars(prev), &scalars(cur))?;
        Some(Totals {
            packets: s[0],
            bytes: s[1],
            ipv4: s[2],
            ipv6: s[3],
            non_ip: s[4],
            fragments: s[5],
            not_attributed: s[6],
            not_attributed_bytes: s[7],
            l4: sub(&prev.l4, &cur.l4)?,
            ether_class: sub(&prev.ether_class, &cur.ether_class)?,
            malformed: sub(&prev.malformed, &cur.malformed)?,
        })
    })();
    match delta {
        Some(d) => (d, false),
        None => (*cur, true),
    }
}

#[derive(Default)]
struct Counts {
    packets: u64,
    bytes: u64,
}

type Group = (u32, Direction);

#[derive(Default)]
struct GroupTrackers {
    sources: Tracker<IpAddr>,
    destinations: Tracker<IpAddr>,
    flows: Tracker<FlowOrd>,
}

/// Per-interval traffic of one (ifindex, direction), aggregated from flows.
#[derive(Default)]
struct GroupAgg {
    sources: HashMap<IpAddr, Counts>,
    destinations: HashMap<IpAddr, Counts>,
    flows: HashMap<FlowOrd, Counts>,
    proto_bytes: [u64; L4_CLASSES],
}

/// Rate state across intervals. Memory is bounded by the number of
/// interfaces and by `4 * top_k` smoothed entries per ranking.
pub struct Rates {
    config: RatesConfig,
    prev_totals: HashMap<(String, Direction), Totals>,
    iface_avg: HashMap<(String, Direction), (Rate, [f64; L4_CLASSES + 1])>,
    proto_bytes_avg: HashMap<(String, Direction), [f64; L4_CLASSES]>,
    trackers: HashMap<Group, GroupTrackers>,
    snapshot: RateSnapshot,
}

impl Rates {
    /// Empty state; the first interval of each interface is its baseline.
    pub fn new(config: RatesConfig) -> Rates {
        Rates {
            config,
            prev_totals: HashMap::new(),
            iface_avg: HashMap::new(),
            proto_bytes_avg: HashMap::new(),
            trackers: HashMap::new(),
            snapshot: RateSnapshot::default(),
        }
    }

    /// Changes the ranking size from the next interval on (e.g. on SIGHUP).
    pub fn set_top_k(&mut self, k: usize) {
        self.config.top_k = k;
    }

    /// The current configuration.
    pub fn config(&self) -> RatesConfig {
        self.config
    }

    /// The last snapshot computed.
    pub fn snapshot(&self) -> &RateSnapshot {
        &self.snapshot
    }

    /// Folds one interval in and returns its rates.
    pub fn update(&mut self, iv: &Interval) -> &RateSnapshot {
        let seconds = iv.seconds();
        let decay = decay(seconds, self.config.tau);
        let names: HashMap<u32, &str> = iv
            .totals
            .iter()
            .map(|t| (t.ifindex, t.iface.as_str()))
            .collect();
        let name_of = |ifindex: u32| -> String {
            names
                .get(&ifindex)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("if{ifindex}"))
        };

        let mut snap = RateSnapshot {
            start_ns: iv.start_ns,
            end_ns: iv.end_ns,
            ..Default::default()
        };
        let aggs = aggregate(iv, &mut snap.invalid_flows);

        for t in &iv.totals {
            let id = (t.iface.clone(), t.direction);
            let prev = self.prev_totals.insert(id.clone(), t.totals);
            let Some(prev) = prev else { continue };
            let (d, reset) = totals_delta(&prev, &t.totals);
            let rate = Rate::of(d.packets, d.bytes, seconds);
            let mut class_pps = [0.0; L4_CLASSES + 1];
            for (i, n) in d.l4.iter().enumerate() {
                class_pps[i] = *n as f64 / seconds;
            }
            class_pps[L4_CLASSES] = d.non_ip as f64 / seconds;
            let (avg, class_avg) = match self.iface_avg.get(&id) {
                Some((a, c)) => {
                    let mut ca = [0.0; L4_CLASSES + 1];
                    for i in 0..ca.len() {
                        ca[i] = ewma(class_pps[i], c[i], decay);
                    }
                    (rate.ewma(*a, decay), ca)
                }
                None => (rate, class_pps),
            };
            self.iface_avg.insert(id.clone(), (avg, class_avg));
            snap.ifaces.push(IfaceRate {
                iface: t.iface.clone(),
                direction: t.direction,
                packets: Smoothed {
                    interval: rate.packets_per_second,
                    ewma: avg.packets_per_second,
                },
                bytes: Smoothed {
                    interval: rate.bytes_per_second,
                    ewma: avg.bytes_per_second,
                },
                reset,
            });

            let proto_bytes = aggs
                .get(&(t.ifindex, t.direction))
                .map(|a| a.proto_bytes)
                .unwrap_or_default();
            let bps: Vec<f64> = proto_bytes.iter().map(|b| *b as f64 / seconds).collect();
            let bytes_avg = match self.proto_bytes_avg.get(&id) {
                Some(prev) => {
                    let mut out = [0.0; L4_CLASSES];
                    for i in 0..L4_CLASSES {
                        out[i] = ewma(bps[i], prev[i], decay);
                    }
                    out
                }
                None => {
                    let mut out = [0.0; L4_CLASSES];
                    out.copy_from_slice(&bps);
                    out
                }
            };
            self.proto_bytes_avg.insert(id, bytes_avg);
            for (i, class) in ProtoClass::ALL.iter().enumerate() {
                snap.protocols.push(ProtoRate {
                    iface: t.iface.clone(),
                    direction: t.direction,
                    class: *class,
                    packets: Smoothed {
                        interval: class_pps[i],
                        ewma: class_avg[i],
                    },
                    bytes: (i < L4_CLASSES).then(|| Smoothed {
                        interval: bps[i],
                        ewma: bytes_avg[i],
                    }),
                });
            }
        }

        self.rank(&aggs, seconds, decay, &name_of, &mut snap);
        self.snapshot = snap;
        &self.snapshot
    }

    /// Ranks hosts and flows of every group seen now or still tracked.
    fn rank(
        &mut self,
        aggs: &HashMap<Group, GroupAgg>,
        seconds: f64,
        decay: f64,
        name_of: &dyn Fn(u32) -> String,
        snap: &mut RateSnapshot,
    ) {
        let k = self.config.top_k;
        let cap = if k == 0 { 0 } else { (4 * k).max(16) };
        let empty = GroupAgg::default();
        let mut groups: Vec<Group> = aggs.keys().chain(self.trackers.keys()).copied().collect();
        groups.sort();
        groups.dedup();
        for g in groups {
            let agg = aggs.get(&g).unwrap_or(&empty);
            let tr = self.trackers.entry(g).or_default();
            let (src_now, src_top) = rank_map(&agg.sources, seconds, cap);
            let (dst_now, dst_top) = rank_map(&agg.destinations, seconds, cap);
            let (flow_now, flow_top) = rank_map(&agg.flows, seconds, cap);
            tr.sources.update(&src_now, &src_top, decay, cap);
            tr.destinations.update(&dst_now, &dst_top, decay, cap);
            tr.flows.update(&flow_now, &flow_top, decay, cap);
            let iface = name_of(g.0);
            let take = |v: &[(IpAddr, Rate)]| ranked(v.iter().take(k).cloned());
            snap.top.push(TopList {
                iface: iface.clone(),
                direction: g.1,
                smoothing: Smoothing::Interval,
                sources: take(&src_top),
                destinations: take(&dst_top),
                flows: ranked(flow_top.iter().take(k).map(|(f, r)| (f.0, *r))),
            });
            snap.top.push(TopList {
                iface,
                direction: g.1,
                smoothing: Smoothing::Ewma,
                sources: ranked(tr.sources.top(k)),
                destinations: ranked(tr.destinations.top(k)),
                flows: ranked(tr.flows.top(k).into_iter().map(|(f, r)| (f.0, r))),
            });
            if tr.sources.len() + tr.destinations.len() + tr.flows.len() == 0 {
                self.trackers.remove(&g);
            }
        }
        snap.top
            .retain(|t| !(t.sources.is_empty() && t.destinations.is_empty() && t.flows.is_empty()));
    }
}

/// Aggregates the interval's flow deltas per (ifindex, direction).
fn aggregate(iv: &Interval, invalid: &mut u64) -> HashMap<Group, GroupAgg> {
    let mut aggs: HashMap<Group, GroupAgg> = HashMap::new();
    for f in &iv.flows {
        let Ok(dir) = f.key.direction_code() else {
            *invalid += 1;
            continue;
        };
        let a = aggs.entry((f.key.ifindex, dir)).or_default();
        let (p, b) = (f.value.packets, f.value.bytes);
        for c in [
            a.sources.entry(f.key.src()).or_default(),
            a.destinations.entry(f.key.dst()).or_default(),
            a.flows.entry(FlowOrd(f.key)).or_default(),
        ] {
            c.packets += p;
            c.bytes += b;
        }
        a.proto_bytes[l4_class(&f.key) as usize] += b;
    }
    aggs
}

/// Interval rates of every key, and the `cap` heaviest, best first.
#[allow(clippy::type_complexity)]
fn rank_map<T: Ord + Clone + std::hash::Hash>(
    m: &HashMap<T, Counts>,
    seconds: f64,
    cap: usize,
) -> (HashMap<T, Rate>, Vec<(T, Rate)>) {
    let now: HashMap<T, Rate> = m
        .iter()
        .map(|(k, c)| (k.clone(), Rate::of(c.packets, c.bytes, seconds)))
        .collect();
    let top = top_k(now.iter().map(|(k, r)| (k.clone(), *r)), cap);
    (now, top)
}

fn ranked<K>(items: impl IntoIterator<Item = (K, Rate)>) -> Vec<Ranked<K>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, (key, rate))| Ranked {
            rank: i as u32 + 1,
            key,
            rate,
        })
        .collect()
}
