//! Hysteresis: an anomaly starts after `for_intervals` consecutive intervals
//! over threshold and ends once it has been below threshold for
//! `clear_seconds`. While pending or active it records its peaks, the highest
//! observation and score, distinct sources and the top contributing sources.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::config::DetectConfig;
use super::events::{Event, EventState};
use super::sketch::TopK;
use super::spread::Spread;
use super::{Judgment, Kind, Target};
use crate::model::Interval;

/// Top-source counters kept per anomaly, as a multiple of `top_sources`
/// (space-saving needs slack to rank well).
const TOP_SLACK: usize = 4;

/// An anomaly that is active (or, inside the lifecycle, pending).
#[derive(Clone, Debug)]
pub struct ActiveAnomaly {
    /// What kind of anomaly.
    pub kind: Kind,
    /// Whom it is about.
    pub target: Target,
    /// Monotonic ns at the start of the first interval over threshold.
    pub since_ns: u64,
    /// Unix ns at the end of the interval that started it (0 while pending).
    pub started_unix_ns: u64,
    /// Highest observation of the kind's signal.
    pub observed: f64,
    /// Highest score, when the baseline was warm.
    pub score: Option<f64>,
    /// Latest baseline mean while over threshold, when warm.
    pub baseline: Option<f64>,
    /// Highest packet rate, packets/s.
    pub peak_pps: f64,
    /// Highest bit rate, bits/s.
    pub peak_bps: f64,
    /// Highest per-interval estimate of distinct sources.
    pub distinct_sources: Option<u64>,
    top: TopK<IpAddr>,
    clear_since_ns: Option<u64>,
}

impl ActiveAnomaly {
    /// The `n` heaviest sources seen while over threshold (approximate:
    /// space-saving counts), heaviest first.
    pub fn top_sources(&self, n: usize) -> Vec<(IpAddr, u64)> {
        self.top.top(n)
    }

    /// Seconds over threshold: from `since_ns` to the start of clearing (or
    /// `now_ns` while not clearing).
    pub fn duration_seconds(&self, now_ns: u64) -> f64 {
        self.clear_since_ns
            .unwrap_or(now_ns)
            .saturating_sub(self.since_ns) as f64
            / 1e9
    }
}

struct Track {
    anomaly: ActiveAnomaly,
    count: u32,
    active: bool,
    suppressed: bool,
}

/// The result of one lifecycle step.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub events: Vec<Event>,
    /// Kinds whose start was refused because `max_active` was reached.
    pub suppressed: Vec<Kind>,
}

/// Pending and active anomalies.
#[derive(Default)]
pub(crate) struct Lifecycle {
    tracks: HashMap<(Kind, Target), Track>,
    active: usize,
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Lifecycle {
    /// Every pending or active (kind, target).
    pub fn watched(&self) -> HashSet<(Kind, Target)> {
        self.tracks.keys().cloned().collect()
    }

    /// Active anomalies.
    pub fn active(&self) -> impl Iterator<Item = &ActiveAnomaly> {
        self.tracks
            .values()
            .filter(|t| t.active)
            .map(|t| &t.anomaly)
    }

    /// Advances every track by one interval given the judgments over
    /// threshold.
    pub fn step(
        &mut self,
        iv: &Interval,
        over: &[Judgment],
        spreads: &HashMap<(Kind, Target), Spread>,
        cfg: &DetectConfig,
    ) -> Step {
        let mut step = Step::default();
        let k = cfg.top_sources * TOP_SLACK;
        let mut seen: HashSet<(Kind, Target)> = HashSet::with_capacity(over.len());
        for j in over.iter().filter(|j| j.over) {
            let key = (j.kind, j.target.clone());
            if !seen.insert(key.clone()) {
                continue;
            }
            let t = self.tracks.entry(key.clone()).or_insert_with(|| Track {
                anomaly: ActiveAnomaly {
                    kind: j.kind,
                    target: j.target.clone(),
                    since_ns: iv.start_ns,
                    started_unix_ns: 0,
                    observed: 0.0,
                    score: None,
                    baseline: None,
                    peak_pps: 0.0,
                    peak_bps: 0.0,
                    distinct_sources: None,
                    top: TopK::new(k),
                    clear_since_ns: None,
                },
                count: 0,
                active: false,
                suppressed: false,
            });
            t.count = t.count.saturating_add(1);
            let a = &mut t.anomaly;
            a.clear_since_ns = None;
            a.observed = a.observed.max(j.observed);
            a.score = max_opt(a.score, j.score);
            a.baseline = j.baseline.or(a.baseline);
            a.peak_pps = a.peak_pps.max(j.pps);
            a.peak_bps = a.peak_bps.max(j.bps);
            if let Some(s) = spreads.get(&key) {
                a.top.merge(&s.top);
                let est = s.distinct.estimate().round() as u64;
                a.distinct_sources = Some(a.distinct_sources.unwrap_or(0).max(est));
            }
            if !t.active && t.count >= cfg.for_intervals {
                if self.active < cfg.max_active {
                    t.active = true;
                    t.suppressed = false;
                    self.active += 1;
                    a.started_unix_ns = iv.end_unix_ns;
                    step.events.push(Event::new(
                        a,
                        EventState::Start,
                        iv.end_ns,
                        iv.end_unix_ns,
                        cfg.top_sources,
                    ));
                } else if !t.suppressed {
                    t.suppressed = true;
                    step.suppressed.push(j.kind);
                }
            }
        }
        let clear_ns = (cfg.clear_seconds * 1e9) as u64;
        let mut ended: Vec<(Kind, Target)> = Vec::new();
        for (key, t) in self.tracks.iter_mut() {
            if seen.contains(key) {
                continue;
            }
            if !t.active {
                ended.push(key.clone());
                continue;
            }
            let since = *t.anomaly.clear_since_ns.get_or_insert(iv.start_ns);
            if iv.end_ns.saturating_sub(since) >= clear_ns {
                step.events.push(Event::new(
                    &t.anomaly,
                    EventState::End,
                    iv.end_ns,
                    iv.end_unix_ns,
                    cfg.top_sources,
                ));
                self.active -= 1;
                ended.push(key.clone());
            }
        }
        for key in ended {
            self.tracks.remove(&key);
        }
        step
    }
}
