//! The detector: one [`Detector::observe`] per interval.

use std::collections::HashSet;

use super::aggregate::{aggregate, FlowFilter, ReplyKey};
use super::cidr::CidrSet;
use super::config::DetectConfig;
use super::lifecycle::{ActiveAnomaly, Lifecycle};
use super::metrics::DetectMetrics;
use super::rates::RateState;
use super::scans::SourceTable;
use super::validate::parse_cidrs;
use super::{spread, DetectError, Event, EventState, Interval, Judgment, Kind, Target, KINDS};

/// Per-target anomaly detection over a series of intervals.
///
/// Feed it every interval in order with [`Detector::observe`]; it returns
/// the events that started or ended in that interval and keeps the metrics
/// registered on the registry given to [`Detector::new`] up to date.
pub struct Detector {
    cfg: DetectConfig,
    allow_sources: CidrSet,
    allow_destinations: CidrSet,
    rates: RateState,
    sources: SourceTable,
    lifecycle: Lifecycle,
    metrics: DetectMetrics,
    /// Start of the first interval seen: the origin of window times.
    epoch_ns: Option<u64>,
    /// Eviction counts already added to the counters.
    seen_source_evictions: u64,
    seen_baseline_evictions: u64,
    /// The previous interval's reply tuples.
    prev_replies: HashSet<ReplyKey>,
}

impl Detector {
    /// A detector for `cfg`, registering its metrics on `registry`.
    pub fn new(
        cfg: DetectConfig,
        registry: &prometheus::Registry,
    ) -> Result<Detector, DetectError> {
        cfg.validate()?;
        let metrics = DetectMetrics::new(registry)?;
        Ok(Detector {
            allow_sources: CidrSet(parse_cidrs("allow_sources", &cfg.allow_sources)?),
            allow_destinations: CidrSet(parse_cidrs(
                "allow_destinations",
                &cfg.allow_destinations,
            )?),
            rates: RateState::new(&cfg),
            sources: SourceTable::new(cfg.max_tracked_sources),
            lifecycle: Lifecycle::default(),
            metrics,
            epoch_ns: None,
            seen_source_evictions: 0,
            seen_baseline_evictions: 0,
            prev_replies: HashSet::new(),
            cfg,
        })
    }

    /// Applies a new configuration (e.g. on SIGHUP), keeping learned
    /// baselines, tracked sources and active anomalies. An invalid
    /// configuration is logged and the current one kept; use
    /// [`Detector::try_reload`] to get the error.
    pub fn reload(&mut self, cfg: DetectConfig) {
        if let Err(e) = self.try_reload(cfg) {
            tracing::warn!(error = %e, "detection configuration not reloaded; keeping the current one");
        }
    }

    /// Like [`Detector::reload`], returning the validation error (the
    /// current configuration stays in force on error). Lowering a bound
    /// evicts at once; lowering `max_active` ends nothing already active.
    pub fn try_reload(&mut self, cfg: DetectConfig) -> Result<(), DetectError> {
        cfg.validate()?;
        self.allow_sources = CidrSet(parse_cidrs("allow_sources", &cfg.allow_sources)?);
        self.allow_destinations =
            CidrSet(parse_cidrs("allow_destinations", &cfg.allow_destinations)?);
        self.rates.reload(&cfg);
        self.sources.set_capacity(cfg.max_tracked_sources);
        self.cfg = cfg;
        self.update_table_metrics();
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// Active anomalies.
    pub fn active(&self) -> impl Iterator<Item = &ActiveAnomaly> {
        self.lifecycle.active()
    }

    /// Sources tracked for scans and sweeps.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Tracked sources evicted since start.
    pub fn tracked_source_evictions(&self) -> u64 {
        self.sources.evictions()
    }

    /// The learned baseline mean packet rate of a (kind, target) and the
    /// seconds it has learned, if it has a baseline.
    pub fn baseline_pps(&self, kind: Kind, target: &Target) -> Option<(f64, f64)> {
        self.rates
            .baseline(kind, target)
            .map(|b| (b.pps().mean, b.pps().seconds))
    }

    /// Judges one interval; returns the anomalies that started or ended.
    pub fn observe(&mut self, iv: &Interval) -> Vec<Event> {
        let epoch = *self.epoch_ns.get_or_insert(iv.start_ns);
        let now = (iv.end_ns.saturating_sub(epoch) / 100_000_000).min(u64::from(u32::MAX)) as u32;
        let dt = iv.seconds();
        let filter = FlowFilter {
            direction: self.cfg.direction,
            allow_sources: &self.allow_sources,
            allow_destinations: &self.allow_destinations,
        };
        let (agg, replies) = aggregate(iv, &filter, &self.prev_replies);
        let mut watched = self.lifecycle.watched();
        let mut judgments: Vec<Judgment> = Vec::new();
        self.rates.evaluate(iv, &agg, &self.cfg, &mut judgments);
        self.sources
            .evaluate(&agg, &watched, &self.cfg, now, dt, &mut judgments);

        let mut evaluations = [0u64; KINDS];
        for j in &judgments {
            evaluations[j.kind.index()] += 1;
            if j.over {
                watched.insert((j.kind, j.target.clone()));
            }
        }
        let spreads = spread::collect(
            iv,
            &filter,
            &watched,
            self.cfg.sketch_precision,
            self.cfg.top_sources * 4,
        );
        let step = self.lifecycle.step(iv, &judgments, &spreads, &self.cfg);

        for k in Kind::ALL {
            self.metrics
                .evaluations
                .with_label_values(&[k.as_str()])
                .inc_by(evaluations[k.index()]);
        }
        for k in &step.suppressed {
            self.metrics
                .suppressed
                .with_label_values(&[k.as_str()])
                .inc();
            tracing::warn!(
                kind = k.as_str(),
                max_active = self.cfg.max_active,
                "anomaly start suppressed: max_active reached (counted in sensor_anomalies_suppressed_total)"
            );
        }
        for ev in &step.events {
            if let Some(kind) = Kind::ALL.iter().find(|k| k.as_str() == ev.kind) {
                match ev.state {
                    EventState::Start => self.metrics.started(*kind, &ev.target),
                    EventState::End => self.metrics.ended(*kind, &ev.target),
                }
            }
        }
        self.prev_replies = replies;
        self.publish_scores(&judgments);
        self.update_table_metrics();
        step.events
    }

    /// Publishes the top `top_targets` scores of each kind.
    fn publish_scores(&mut self, judgments: &[Judgment]) {
        let n = self.cfg.top_targets;
        let mut top: Vec<(Kind, Target, f64, f64)> = Vec::new();
        for k in Kind::ALL {
            let mut scored: Vec<&Judgment> = judgments
                .iter()
                .filter(|j| j.kind == k && j.score.is_some_and(f64::is_finite))
                .collect();
            let by_score = |a: &&Judgment, b: &&Judgment| {
                b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0))
            };
            if scored.len() > n && n > 0 {
                scored.select_nth_unstable_by(n - 1, by_score);
            }
            scored.truncate(n);
            for j in scored {
                top.push((
                    k,
                    j.target.clone(),
                    j.score.unwrap_or(0.0),
                    j.baseline.unwrap_or(0.0),
                ));
            }
        }
        self.metrics.publish_scores(&top);
    }

    fn update_table_metrics(&mut self) {
        self.metrics.tracked_sources.set(self.sources.len() as i64);
        self.metrics.baselines.set(self.rates.baselines() as i64);
        let se = self.sources.evictions();
        self.metrics
            .source_evictions
            .inc_by(se - self.seen_source_evictions);
        self.seen_source_evictions = se;
        let be = self.rates.baseline_evictions();
        self.metrics
            .baseline_evictions
            .inc_by(be - self.seen_baseline_evictions);
        self.seen_baseline_evictions = be;
    }
}
