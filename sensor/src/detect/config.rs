//! The `[detection]` table of the agent's configuration.
//!
//! Every field has a default (see `Default` impls and `docs/detection.md`),
//! so an empty table, or none at all, gives full protection. Units: `pps`
//! is packets per second, `bps` bits per second, times are seconds. Rates
//! are per target (one destination, one source or one interface) over one
//! interval unless a field says otherwise.

use serde::Deserialize;

use super::Kind;
use sensor_common::Direction;

/// Which flow directions count toward floods, scans, sweeps and destination
/// spikes. Outbound spikes always use egress.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Directions {
    /// Frames received on the watched interfaces (default).
    #[default]
    Ingress,
    /// Frames transmitted.
    Egress,
    /// Both.
    Both,
}

impl Directions {
    /// True when flows of direction `d` count.
    pub fn counts(self, d: Direction) -> bool {
        matches!(
            (self, d),
            (Directions::Both, _)
                | (Directions::Ingress, Direction::Ingress)
                | (Directions::Egress, Direction::Egress)
        )
    }
}

/// Detection settings (`[detection]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Flow directions that count toward floods, scans, sweeps and
    /// destination spikes: `ingress` (default), `egress` or `both`.
    pub direction: Directions,
    /// Consecutive intervals over threshold before an anomaly starts
    /// (default 2; 1..=3600).
    pub for_intervals: u32,
    /// Seconds below threshold before an active anomaly ends (default 5).
    pub clear_seconds: f64,
    /// Anomalies active at once (default 1000); starts beyond it are counted
    /// in `sensor_anomalies_suppressed_total` and retried every interval.
    pub max_active: usize,
    /// Sources tracked for scans and sweeps (default 65536); the least
    /// recently seen are evicted first and counted.
    pub max_tracked_sources: usize,
    /// (kind, target) baselines kept (default 65536); young ones are evicted
    /// first.
    pub max_baselines: usize,
    /// Per kind, targets with the highest score exported as score/baseline
    /// gauges (default 10; 0 disables).
    pub top_targets: usize,
    /// Top contributing sources kept per active anomaly (default 5; 1..=100).
    pub top_sources: usize,
    /// HyperLogLog precision for distinct-source counts (default 12: 4 KiB,
    /// 1.6 % standard error; 4..=16).
    pub sketch_precision: u8,
    /// Sources (CIDR or address) ignored by every detector.
    pub allow_sources: Vec<String>,
    /// Destinations (CIDR or address) ignored by every detector.
    pub allow_destinations: Vec<String>,
    /// Learned baselines.
    pub baseline: BaselineConfig,
    /// `syn_flood`.
    pub syn_flood: SynFloodConfig,
    /// `udp_flood`.
    pub udp_flood: UdpFloodConfig,
    /// `icmp_flood`.
    pub icmp_flood: IcmpFloodConfig,
    /// `port_scan`.
    pub port_scan: PortScanConfig,
    /// `host_sweep`.
    pub host_sweep: HostSweepConfig,
    /// `traffic_spike`.
    pub traffic_spike: TrafficSpikeConfig,
    /// `outbound_spike`.
    pub outbound_spike: OutboundSpikeConfig,
    /// `flow_table_flood`.
    pub flow_table_flood: FlowTableFloodConfig,
    /// Static thresholds per CIDR group (`[[detection.thresholds]]`).
    pub thresholds: Vec<StaticThreshold>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            direction: Directions::Ingress,
            for_intervals: 2,
            clear_seconds: 5.0,
            max_active: 1000,
            max_tracked_sources: 65_536,
            max_baselines: 65_536,
            top_targets: 10,
            top_sources: 5,
            sketch_precision: 12,
            allow_sources: Vec::new(),
            allow_destinations: Vec::new(),
            baseline: BaselineConfig::default(),
            syn_flood: SynFloodConfig::default(),
            udp_flood: UdpFloodConfig::default(),
            icmp_flood: IcmpFloodConfig::default(),
            port_scan: PortScanConfig::default(),
            host_sweep: HostSweepConfig::default(),
            traffic_spike: TrafficSpikeConfig::default(),
            outbound_spike: OutboundSpikeConfig::default(),
            flow_table_flood: FlowTableFloodConfig::default(),
            thresholds: Vec::new(),
        }
    }
}

/// Learned baselines (`[detection.baseline]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// Half-life of the EWMA mean and variance, seconds (default 900).
    pub half_life_seconds: f64,
    /// Seconds a target must be observed before its baseline may fire
    /// (default 300). Static floors apply from the first interval.
    pub warmup_seconds: f64,
    /// Score (deviations above the mean) at which a warm baseline fires
    /// (default 6).
    pub min_score: f64,
    /// Lower bound of the deviation as a fraction of the mean (default 0.1),
    /// so a perfectly steady rate does not make every wobble an anomaly.
    pub min_stddev_fraction: f64,
    /// Keep one baseline per UTC hour of day as well (default false; 24x the
    /// memory per target).
    pub daily_profile: bool,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            half_life_seconds: 900.0,
            warmup_seconds: 300.0,
            min_score: 6.0,
            min_stddev_fraction: 0.1,
            daily_profile: false,
        }
    }
}

/// `syn_flood` (`[detection.syn_flood]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SynFloodConfig {
    /// Floor: half-open SYNs per second to one destination (default 1000;
    /// 0 disables the floor).
    pub pps: f64,
    /// Fraction of the destination's SYNs that must be half-open (default 0.5).
    pub min_half_open_ratio: f64,
    /// A warm baseline fires only at or above this many half-open SYN/s
    /// (default 100).
    pub baseline_min_pps: f64,
}

impl Default for SynFloodConfig {
    fn default() -> Self {
        SynFloodConfig {
            pps: 1000.0,
            min_half_open_ratio: 0.5,
            baseline_min_pps: 100.0,
        }
    }
}

macro_rules! rate_flood_config {
    ($name:ident, $table:literal, $pps:expr, $base:expr) => {
        #[doc = concat!("`", $table, "` (`[detection.", $table, "]`).")]
        #[derive(Clone, Debug, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            #[doc = concat!("Floor: packets per second to one destination (default ", stringify!($pps), "; 0 disables).")]
            pub pps: f64,
            /// Floor: bits per second to one destination (default 0: disabled).
            pub bps: f64,
            #[doc = concat!("A warm baseline fires only at or above this many packets/s (default ", stringify!($base), ").")]
            pub baseline_min_pps: f64,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    pps: $pps,
                    bps: 0.0,
                    baseline_min_pps: $base,
                }
            }
        }
    };
}

rate_flood_config!(UdpFloodConfig, "udp_flood", 10_000.0, 1_000.0);
rate_flood_config!(IcmpFloodConfig, "icmp_flood", 5_000.0, 500.0);

/// `port_scan` (`[detection.port_scan]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PortScanConfig {
    /// Sliding window, seconds (default 30; 1..=3600).
    pub window_seconds: f64,
    /// Distinct (protocol, destination port) of unanswered probes from one
    /// source within the window (default 64; 2..=4096).
    pub min_ports: usize,
}

impl Default for PortScanConfig {
    fn default() -> Self {
        PortScanConfig {
            window_seconds: 30.0,
            min_ports: 64,
        }
    }
}

/// `host_sweep` (`[detection.host_sweep]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostSweepConfig {
    /// Sliding window, seconds (default 30; 1..=3600).
    pub window_seconds: f64,
    /// Distinct destinations probed by one source within the window
    /// (default 32; 2..=4096).
    pub min_hosts: usize,
}

impl Default for HostSweepConfig {
    fn default() -> Self {
        HostSweepConfig {
            window_seconds: 30.0,
            min_hosts: 32,
        }
    }
}

/// `traffic_spike` (`[detection.traffic_spike]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficSpikeConfig {
    /// Watch each destination address (default true).
    pub destinations: bool,
    /// Watch each interface's exact totals (default true).
    pub interfaces: bool,
    /// A warm baseline fires only at or above this packet rate
    /// (default 2000) ...
    pub min_pps: f64,
    /// ... or this bit rate (default 50 000 000).
    pub min_bps: f64,
}

impl Default for TrafficSpikeConfig {
    fn default() -> Self {
        TrafficSpikeConfig {
            destinations: true,
            interfaces: true,
            min_pps: 2000.0,
            min_bps: 50e6,
        }
    }
}

/// `outbound_spike` (`[detection.outbound_spike]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundSpikeConfig {
    /// A warm baseline fires only at or above this egress bit rate from one
    /// local host (default 50 000 000).
    pub min_bps: f64,
}

impl Default for OutboundSpikeConfig {
    fn default() -> Self {
        OutboundSpikeConfig { min_bps: 50e6 }
    }
}

/// `flow_table_flood` (`[detection.flow_table_flood]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlowTableFloodConfig {
    /// Floor: packets per second on one interface that the kernel could not
    /// attribute to a flow (default 1000; 0 disables).
    pub pps: f64,
}

impl Default for FlowTableFloodConfig {
    fn default() -> Self {
        FlowTableFloodConfig { pps: 1000.0 }
    }
}

/// A static threshold for a CIDR group: replaces the kind's default floor
/// for targets inside `cidr` (the longest matching prefix wins) and adds a
/// floor to the baseline-only spike kinds.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticThreshold {
    /// Prefix, e.g. `198.18.0.0/24` or `2001:db8::/48`.
    pub cidr: String,
    /// One of `syn_flood`, `udp_flood`, `icmp_flood`, `traffic_spike`,
    /// `outbound_spike`.
    pub kind: Kind,
    /// Packets per second (default 0: not used).
    #[serde(default)]
    pub pps: f64,
    /// Bits per second (default 0: not used).
    #[serde(default)]
    pub bps: f64,
}

/// Kinds a [`StaticThreshold`] may name.
pub const THRESHOLD_KINDS: [Kind; 5] = [
    Kind::SynFlood,
    Kind::UdpFlood,
    Kind::IcmpFlood,
    Kind::TrafficSpike,
    Kind::OutboundSpike,
];
