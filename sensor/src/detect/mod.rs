//! Anomaly and threat detection over per-interval aggregates.
//!
//! The detector reads one [`Interval`] per poll (never a kernel map) and
//! decides, per target, whether traffic departs from normal. It never reads
//! the wall clock: every time it uses comes from the interval
//! (`start_ns`/`end_ns` for rates and windows, `end_unix_ns` for event
//! timestamps and the daily profile), so the offline analyser can feed it
//! intervals built from packet timestamps.
//!
//! Each kind combines a static floor (protection from the first interval)
//! with a learned baseline that only adds sensitivity. See
//! `docs/detection.md` for every detector, its window and scope, and tuning.
//!
//! Layout:
//! - [`config`]: the `[detection]` table ([`DetectConfig`]); `validate` checks it;
//! - `cidr`: address prefixes for allowlists and static thresholds;
//! - [`baseline`]: EWMA mean/variance with warm-up, floor, score, daily profile;
//! - [`sketch`]: HyperLogLog distinct counter and a space-saving top-K;
//! - `bounded`: a capacity-bounded map with batch eviction;
//! - `aggregate`: one pass over the interval's flows into per-target signals;
//! - `rates`: floods, destination/interface/outbound spikes, flow-table flood;
//! - `scans`: port scans and host sweeps over a sliding window per source;
//! - `spread`: distinct sources and top sources of watched targets;
//! - [`lifecycle`]: hysteresis, active anomalies, peaks;
//! - [`events`]: JSON-lines events and their writer;
//! - `metrics`: the Prometheus families this stage exports.

pub mod baseline;
mod bounded;
mod cidr;
pub mod config;
pub mod events;
pub mod lifecycle;
mod metrics;
mod rates;
mod scans;
pub mod sketch;
mod spread;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kinds;
mod validate;

mod aggregate;
mod detector;

use std::fmt;
use std::net::IpAddr;

use crate::model::Interval;

pub use config::DetectConfig;
pub use detector::Detector;
pub use events::{Event, EventState, EventWriter, TopSource};
pub use lifecycle::ActiveAnomaly;

/// The fixed set of anomaly kinds (the `kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A destination receives many TCP SYNs whose handshakes never complete.
    SynFlood,
    /// A destination receives a UDP packet rate above its floor or baseline.
    UdpFlood,
    /// The same for ICMP and ICMPv6.
    IcmpFlood,
    /// One source probes many distinct destination ports, mostly unanswered.
    PortScan,
    /// One source probes many distinct destination addresses.
    HostSweep,
    /// A destination's or interface's rate jumps far above its learned baseline.
    TrafficSpike,
    /// A local host sends far more than its learned outbound baseline.
    OutboundSpike,
    /// An interface sees packets the kernel flow map could not attribute to
    /// a flow (the map is full): the signature of a many-source flood.
    FlowTableFlood,
}

/// Number of [`Kind`]s.
pub const KINDS: usize = 8;

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; KINDS] = [
        Kind::SynFlood,
        Kind::UdpFlood,
        Kind::IcmpFlood,
        Kind::PortScan,
        Kind::HostSweep,
        Kind::TrafficSpike,
        Kind::OutboundSpike,
        Kind::FlowTableFlood,
    ];

    /// Label value used in metrics and events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::SynFlood => "syn_flood",
            Kind::UdpFlood => "udp_flood",
            Kind::IcmpFlood => "icmp_flood",
            Kind::PortScan => "port_scan",
            Kind::HostSweep => "host_sweep",
            Kind::TrafficSpike => "traffic_spike",
            Kind::OutboundSpike => "outbound_spike",
            Kind::FlowTableFlood => "flow_table_flood",
        }
    }

    /// Position in [`Kind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// What `observed`, `baseline` and the thresholds of this kind measure.
    pub const fn signal(self) -> &'static str {
        match self {
            Kind::SynFlood => "half_open_syn_per_second",
            Kind::UdpFlood | Kind::IcmpFlood | Kind::TrafficSpike => "packets_per_second",
            Kind::PortScan => "distinct_unanswered_ports_in_window",
            Kind::HostSweep => "distinct_probed_hosts_in_window",
            Kind::OutboundSpike => "bits_per_second",
            Kind::FlowTableFlood => "unattributed_packets_per_second",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an anomaly is about: an address or an interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A host address (destination, local sender or offending source).
    Addr(IpAddr),
    /// An interface, by name; displayed as `iface:NAME`.
    Iface(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(ip) => write!(f, "{ip}"),
            Target::Iface(name) => write!(f, "iface:{name}"),
        }
    }
}

/// Errors of the detection stage.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A `[detection]` setting is out of range or unparsable.
    #[error(
        "invalid detection setting `{key}` = {value}: expected {expected} \
         (fix it in the [detection] table of the config file or the matching flag)"
    )]
    InvalidConfig {
        /// Dotted key, e.g. `detection.thresholds[2].cidr`.
        key: String,
        /// The rejected value as written.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// A metric family could not be registered.
    #[error(
        "cannot register detection metric {name}: {source} \
         (another module may already register this name; create one Detector per registry)"
    )]
    Metrics {
        /// Metric family name.
        name: &'static str,
        /// The registry's error.
        #[source]
        source: prometheus::Error,
    },
    /// The events file could not be opened.
    #[error(
        "cannot open events file {path}: {source} \
         (check that the directory exists and is writable, or use `-` for stdout)"
    )]
    EventsOpen {
        /// Path as given.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An event could not be written or flushed.
    #[error("cannot write events to {path}: {source} (check free space and permissions)")]
    EventsWrite {
        /// Path as given (`-` for stdout).
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One evaluation of one (kind, target) in one interval.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Judgment {
    pub kind: Kind,
    pub target: Target,
    /// True when the condition holds this interval.
    pub over: bool,
    /// The kind's signal (see [`Kind::signal`]).
    pub observed: f64,
    pub pps: f64,
    /// Bits per second.
    pub bps: f64,
    /// Deviations above the baseline, when the baseline is warm.
    pub score: Option<f64>,
    /// Baseline mean of the signal, when the baseline is warm.
    pub baseline: Option<f64>,
}
