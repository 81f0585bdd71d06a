//! The Prometheus families of the detection stage. Every family is
//! registered and pre-initialised when the detector is built, so each exists
//! from the first scrape. Label sets are closed: `kind` is one of
//! [`Kind::ALL`]; `target` appears only on series bounded by `max_active`
//! (active anomalies) or by `top_targets` per kind (score and baseline).

use std::collections::HashSet;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::{DetectError, Kind, Target};

/// The detection metric families.
pub(crate) struct DetectMetrics {
    pub active: GaugeVec,
    pub anomalies: IntCounterVec,
    pub evaluations: IntCounterVec,
    pub suppressed: IntCounterVec,
    pub score: GaugeVec,
    pub baseline: GaugeVec,
    pub tracked_sources: IntGauge,
    pub source_evictions: IntCounter,
    pub baselines: IntGauge,
    pub baseline_evictions: IntCounter,
    /// (kind, target) label pairs currently set on `score`/`baseline`.
    published: HashSet<(Kind, String)>,
}

fn reg<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    name: &'static str,
    c: C,
) -> Result<C, DetectError> {
    r.register(Box::new(c.clone()))
        .map_err(|source| DetectError::Metrics { name, source })?;
    Ok(c)
}

fn vec_err(name: &'static str) -> impl Fn(prometheus::Error) -> DetectError {
    move |source| DetectError::Metrics { name, source }
}

impl DetectMetrics {
    /// Registers every family on `r`.
    pub fn new(r: &Registry) -> Result<DetectMetrics, DetectError> {
        macro_rules! gauge_vec {
            ($name:literal, $help:literal, $labels:expr) => {
                reg(
                    r,
                    $name,
                    GaugeVec::new(Opts::new($name, $help), $labels).map_err(vec_err($name))?,
                )?
            };
        }
        macro_rules! counter_vec {
            ($name:literal, $help:literal) => {
                reg(
                    r,
                    $name,
                    IntCounterVec::new(Opts::new($name, $help), &["kind"])
                        .map_err(vec_err($name))?,
                )?
            };
        }
        let m = DetectMetrics {
            active: gauge_vec!(
                "sensor_anomaly_active",
                "1 while an anomaly of this kind is active for this target; the series is removed when it ends.",
                &["kind", "target"]
            ),
            anomalies: counter_vec!("sensor_anomalies_total", "Anomalies started, by kind."),
            evaluations: counter_vec!(
                "sensor_detection_evaluations_total",
                "(target, interval) evaluations performed, by kind."
            ),
            suppressed: counter_vec!(
                "sensor_anomalies_suppressed_total",
                "Anomaly starts refused because max_active anomalies were already active, by kind."
            ),
            score: gauge_vec!(
                "sensor_detection_score",
                "Deviations above the learned baseline, for the top targets by score of each kind.",
                &["kind", "target"]
            ),
            baseline: gauge_vec!(
                "sensor_detection_baseline",
                "Learned baseline mean of the kind's signal (packets/s; outbound_spike: bits/s), for the same top targets.",
                &["kind", "target"]
            ),
            tracked_sources: reg(
                r,
                "sensor_detection_tracked_sources",
                IntGauge::new(
                    "sensor_detection_tracked_sources",
                    "Sources tracked for port scans and host sweeps (bounded by max_tracked_sources).",
                )
                .map_err(vec_err("sensor_detection_tracked_sources"))?,
            )?,
            source_evictions: reg(
                r,
                "sensor_detection_tracked_source_evictions_total",
                IntCounter::new(
                    "sensor_detection_tracked_source_evictions_total",
                    "Tracked sources evicted because max_tracked_sources was reached.",
                )
                .map_err(vec_err("sensor_detection_tracked_source_evictions_total"))?,
            )?,
            baselines: reg(
                r,
                "sensor_detection_baselines",
                IntGauge::new(
                    "sensor_detection_baselines",
                    "Learned (kind, target) baselines held (bounded by max_baselines).",
                )
                .map_err(vec_err("sensor_detection_baselines"))?,
            )?,
            baseline_evictions: reg(
                r,
                "sensor_detection_baseline_evictions_total",
                IntCounter::new(
                    "sensor_detection_baseline_evictions_total",
                    "Baselines evicted because max_baselines was reached.",
                )
                .map_err(vec_err("sensor_detection_baseline_evictions_total"))?,
            )?,
            published: HashSet::new(),
        };
        for k in Kind::ALL {
            m.anomalies.with_label_values(&[k.as_str()]);
            m.evaluations.with_label_values(&[k.as_str()]);
            m.suppressed.with_label_values(&[k.as_str()]);
        }
        Ok(m)
    }

    /// Marks an anomaly active.
    pub fn started(&self, kind: Kind, target: &str) {
        self.anomalies.with_label_values(&[kind.as_str()]).inc();
        self.active
            .with_label_values(&[kind.as_str(), target])
            .set(1.0);
    }

    /// Removes an ended anomaly's series.
    pub fn ended(&self, kind: Kind, target: &str) {
        // Absent already is fine: nothing to remove.
        let _ = self.active.remove_label_values(&[kind.as_str(), target]);
    }

    /// Replaces the published score/baseline series with `top`
    /// (kind, target, score, baseline); series not in `top` are removed.
    pub fn publish_scores(&mut self, top: &[(Kind, Target, f64, f64)]) {
        let mut next: HashSet<(Kind, String)> = HashSet::with_capacity(top.len());
        for (kind, target, score, base) in top {
            let t = target.to_string();
            self.score
                .with_label_values(&[kind.as_str(), &t])
                .set(*score);
            self.baseline
                .with_label_values(&[kind.as_str(), &t])
                .set(*base);
            next.insert((*kind, t));
        }
        for (kind, t) in self.published.difference(&next) {
            let _ = self.score.remove_label_values(&[kind.as_str(), t]);
            let _ = self.baseline.remove_label_values(&[kind.as_str(), t]);
        }
        self.published = next;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prometheus::core::Collector;

    use super::*;

    #[test]
    fn metrics_md_detect_section_matches_the_registered_families() {
        let m = DetectMetrics::new(&Registry::new()).expect("registers");
        let collectors: [&dyn Collector; 10] = [
            &m.active,
            &m.anomalies,
            &m.evaluations,
            &m.suppressed,
            &m.score,
            &m.baseline,
            &m.tracked_sources,
            &m.source_evictions,
            &m.baselines,
            &m.baseline_evictions,
        ];
        let mut registered: BTreeMap<String, (String, Vec<String>, String)> = BTreeMap::new();
        for c in collectors {
            let desc = c.desc()[0];
            let fam = &c.collect()[0];
            let kind = format!("{:?}", fam.get_field_type()).to_lowercase();
            registered.insert(
                desc.fq_name.clone(),
                (kind, desc.variable_labels.clone(), desc.help.clone()),
            );
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../METRICS.md");
        let text = std::fs::read_to_string(path).expect("METRICS.md");
        let docs = crate::metrics::doc::parse(&text).expect("parses");
        let documented: BTreeMap<String, (String, Vec<String>, String)> = docs
            .into_iter()
            .filter(|d| d.owner == "detect")
            .map(|d| (d.name, (d.kind, d.labels, d.help)))
            .collect();
        assert_eq!(documented, registered);
    }

    #[test]
    fn registering_twice_names_the_family() {
        let r = Registry::new();
        assert!(DetectMetrics::new(&r).is_ok());
        match DetectMetrics::new(&r) {
            Err(DetectError::Metrics { name, .. }) => assert_eq!(name, "sensor_anomaly_active"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("registered twice"),
        }
    }
}
