//! Anomaly events as JSON lines, and their writer.
//!
//! One line per start and per end, e.g.
//! `{"time":"2025-01-02T03:04:05.000Z","kind":"syn_flood","target":"198.18.0.2",
//! "state":"start","signal":"half_open_syn_per_second","score":null,
//! "baseline":null,"observed":52000.0,"peak_pps":52000.0,"peak_bps":2.6e7,
//! "distinct_sources":1,"top_sources":[{"source":"198.18.0.1","packets":104000}]}`;
//! an end line also carries `duration_seconds`.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};

use serde::Serialize;

use super::lifecycle::ActiveAnomaly;
use super::DetectError;

/// Whether an event opens or closes an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// The anomaly started.
    Start,
    /// The anomaly ended.
    End,
}

/// A contributing source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopSource {
    /// Source address.
    pub source: String,
    /// Packets counted from it while over threshold (SYNs for `syn_flood`;
    /// approximate, may overcount by the smallest kept count).
    pub packets: u64,
}

/// One event line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// RFC 3339 UTC time of the end of the deciding interval.
    pub time: String,
    /// Kind label.
    pub kind: &'static str,
    /// Target label (address or `iface:NAME`).
    pub target: String,
    /// `start` or `end`.
    pub state: EventState,
    /// What `observed` and `baseline` measure.
    pub signal: &'static str,
    /// Highest score so far (null while the baseline is warming up or for
    /// kinds without one).
    pub score: Option<f64>,
    /// Baseline mean of the signal (null as for `score`).
    pub baseline: Option<f64>,
    /// Highest observation of the signal so far.
    pub observed: f64,
    /// Highest packet rate, packets/s.
    pub peak_pps: f64,
    /// Highest bit rate, bits/s.
    pub peak_bps: f64,
    /// Highest per-interval estimate of distinct sources (HyperLogLog).
    pub distinct_sources: Option<u64>,
    /// Heaviest sources, heaviest first.
    pub top_sources: Vec<TopSource>,
    /// Seconds over threshold (end events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

impl Event {
    /// The event for `a` changing to `state` at the end of an interval.
    pub(crate) fn new(
        a: &ActiveAnomaly,
        state: EventState,
        end_ns: u64,
        end_unix_ns: u64,
        top: usize,
    ) -> Event {
        Event {
            time: rfc3339(end_unix_ns),
            kind: a.kind.as_str(),
            target: a.target.to_string(),
            state,
            signal: a.kind.signal(),
            score: a.score.filter(|s| s.is_finite()),
            baseline: a.baseline.filter(|b| b.is_finite()),
            observed: a.observed,
            peak_pps: a.peak_pps,
            peak_bps: a.peak_bps,
            distinct_sources: a.distinct_sources,
            top_sources: a
                .top_sources(top)
                .into_iter()
                .map(|(ip, packets)| TopSource {
                    source: ip.to_string(),
                    packets,
                })
                .collect(),
            duration_seconds: (state == EventState::End).then(|| a.duration_seconds(end_ns)),
        }
    }
}

/// Formats Unix nanoseconds as RFC 3339 UTC with milliseconds,
/// e.g. `2025-01-02T03:04:05.678Z` (the flow records' formatter, cut to
/// milliseconds).
pub fn rfc3339(unix_ns: u64) -> String {
    let full = crate::flowtable::record::rfc3339_nanos(unix_ns);
    // "...:SS.nnnnnnnnnZ" -> "...:SS.nnnZ"
    format!("{}Z", &full[..full.len() - 7])
}

/// Writes events as JSON lines to a file (appending) or stdout (`-`).
pub struct EventWriter {
    path: String,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl EventWriter {
    /// Opens `path` for appending (created if missing), or stdout for `-`.
    pub fn open(path: &str) -> Result<EventWriter, DetectError> {
        let sink: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DetectError::EventsOpen {
                    path: path.to_string(),
                    source,
                })?;
            Box::new(f)
        };
        Ok(EventWriter::from_writer(path, sink))
    }

    /// Wraps any writer (tests, pipes); `path` is used in error messages.
    pub fn from_writer(path: &str, sink: Box<dyn Write + Send>) -> EventWriter {
        EventWriter {
            path: path.to_string(),
            out: BufWriter::new(sink),
        }
    }

    /// Writes one event line (buffered; call [`EventWriter::flush`]).
    pub fn write(&mut self, ev: &Event) -> Result<(), DetectError> {
        let err = |source| DetectError::EventsWrite {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, ev).map_err(|e| err(std::io::Error::other(e)))?;
        self.out.write_all(b"\n").map_err(err)
    }

    /// Writes every event of a slice.
    pub fn write_all(&mut self, events: &[Event]) -> Result<(), DetectError> {
        events.iter().try_for_each(|e| self.write(e))
    }

    /// Flushes buffered lines to the file or stdout.
    pub fn flush(&mut self) -> Result<(), DetectError> {
        self.out.flush().map_err(|source| DetectError::EventsWrite {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339(1_735_787_045_678_900_000),
            "2025-01-02T03:04:05.678Z"
        );
        assert_eq!(
            rfc3339(4_102_444_799_000_000_000),
            "2099-12-31T23:59:59.000Z"
        );
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_one_json_line_per_event_after_flush() {
        let buf = Shared::default();
        let mut w = EventWriter::from_writer("test", Box::new(buf.clone()));
        let ev = Event {
            time: rfc3339(0),
            kind: "udp_flood",
            target: "198.18.0.2".into(),
            state: EventState::End,
            signal: "packets_per_second",
            score: None,
            baseline: None,
            observed: 1.5,
            peak_pps: 2.0,
            peak_bps: 3.0,
            distinct_sources: Some(1),
            top_sources: vec![TopSource {
                source: "198.18.0.1".into(),
                packets: 9,
            }],
            duration_seconds: Some(4.0),
        };
        w.write_all(&[ev.clone(), ev]).expect("write");
        assert!(
            buf.0.lock().expect("lock").is_empty(),
            "buffered until flush"
        );
        w.flush().expect("flush");
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(v["state"], "end");
        assert_eq!(v["duration_seconds"], 4.0);
        assert_eq!(v["top_sources"][0]["source"], "198.18.0.1");
        assert!(v["score"].is_null());
    }

    #[test]
    fn open_reports_path() {
        match EventWriter::open("/nonexistent-dir/x/events.jsonl") {
            Err(DetectError::EventsOpen { path, .. }) => assert!(path.contains("nonexistent")),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a file in a missing directory"),
        }
    }
}
