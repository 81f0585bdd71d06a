//! Every metric family the exporter defines: name, type, HELP and labels.
//!
//! The exporter is built from this table and a unit test checks METRICS.md
//! against it, so the documentation cannot drift from what is exported.

/// Prometheus type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The TYPE keyword of the text exposition format.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn fam(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        help,
        labels,
    }
}

use Kind::{Counter, Gauge, Histogram};

const ID: &[&str] = &["iface", "direction"];
const RATE: &[&str] = &["iface", "direction", "smoothing"];
const PROTO_RATE: &[&str] = &["iface", "direction", "protocol", "smoothing"];
const HOST: &[&str] = &["iface", "direction", "smoothing", "rank", "address"];
const FLOW: &[&str] = &[
    "iface",
    "direction",
    "smoothing",
    "rank",
    "protocol",
    "src_address",
    "src_port",
    "dst_address",
    "dst_port",
];

pub const PACKETS: Family = fam(
    "sensor_packets_total",
    Counter,
    ID,
    "Frames seen by the programs (IP or not), exactly as the kernel counted them.",
);
pub const BYTES: Family = fam("sensor_bytes_total", Counter, ID,
    "Bytes of the frames seen (Ethernet header included, FCS excluded), exactly as the kernel counted them.");
pub const ETHERTYPE: Family = fam("sensor_ethertype_packets_total", Counter,
    &["iface", "direction", "class"],
    "Frames by EtherType class: ipv4, ipv6 or a non-IP class; the classes sum to sensor_packets_total.");
pub const L4: Family = fam(
    "sensor_l4_packets_total",
    Counter,
    &["iface", "direction", "protocol"],
    "IP packets by layer-4 class; non-first fragments count as other.",
);
pub const FRAGMENTS: Family = fam(
    "sensor_ip_fragments_total",
    Counter,
    ID,
    "IP fragments, first and later ones.",
);
pub const MALFORMED: Family = fam(
    "sensor_malformed_packets_total",
    Counter,
    &["iface", "direction", "reason"],
    "Malformed frames by reason; they are still passed and counted in their class.",
);
pub const UNATTR_PACKETS: Family = fam(
    "sensor_unattributed_packets_total",
    Counter,
    ID,
    "Packets counted in the totals but not attributed to a flow (flow map full or insert error).",
);
pub const UNATTR_BYTES: Family = fam(
    "sensor_unattributed_bytes_total",
    Counter,
    ID,
    "Bytes of the packets not attributed to a flow.",
);
pub const RESETS: Family = fam("sensor_kernel_resets_total", Counter, ID,
    "Times the kernel's cumulative counters went backwards (program reload); counting continues from the new values.");

pub const TCP_FLAGS: Family = fam(
    "sensor_tcp_flags_total",
    Counter,
    &["iface", "direction", "flag"],
    "TCP packets attributed to flows, by flag: syn (SYN without ACK), syn_ack, fin, rst.",
);

pub const BUILD_INFO: Family = fam(
    "sensor_build_info",
    Gauge,
    &["version", "revision"],
    "Always 1; the labels carry the agent's version and source revision.",
);
pub const ATTACHED: Family = fam(
    "sensor_program_attached",
    Gauge,
    &["iface", "program"],
    "1 while the program is attached to the interface, else 0.",
);
pub const XDP_MODE: Family = fam(
    "sensor_xdp_mode",
    Gauge,
    &["iface", "mode"],
    "1 for the XDP attach mode in use on the interface, 0 for the others (all 0 while detached).",
);
pub const MAP_CAPACITY: Family = fam(
    "sensor_flow_map_capacity",
    Gauge,
    &[],
    "Capacity of one kernel flow buffer, in entries.",
);
pub const MAP_ENTRIES: Family = fam(
    "sensor_flow_map_entries",
    Gauge,
    &[],
    "Entries the retired kernel flow buffer held at the last drain.",
);
pub const DRAIN_DURATION: Family = fam(
    "sensor_drain_duration_seconds",
    Histogram,
    &[],
    "Time to flip the flow buffers, wait for in-flight programs and read the retired buffer.",
);
pub const BPF_RUN_SECONDS: Family = fam("sensor_bpf_program_run_seconds_total", Counter, &["program"],
    "Run time of the program as the kernel accounts it; present only while kernel.bpf_stats_enabled is on.");
pub const BPF_RUNS: Family = fam("sensor_bpf_program_runs_total", Counter, &["program"],
    "Runs of the program as the kernel accounts them; present only while kernel.bpf_stats_enabled is on.");

pub const POLL_DURATION: Family = fam(
    "sensor_poll_duration_seconds",
    Histogram,
    &[],
    "Time of one poll: drain, flow table, rates, detection and metrics.",
);
pub const POLL_ERRORS: Family = fam(
    "sensor_poll_errors_total",
    Counter,
    &[],
    "Polls that failed (drain errors); the next poll retries and loses no counts.",
);

pub const POLL_INTERVAL: Family = fam(
    "sensor_poll_interval_seconds",
    Gauge,
    &[],
    "Configured poll interval (--interval); a poll taking longer falls behind.",
);

pub const TABLE_FLOWS: Family = fam(
    "sensor_flow_table_flows",
    Gauge,
    &[],
    "Flows in the agent's flow table.",
);
pub const TABLE_CAPACITY: Family = fam(
    "sensor_flow_table_capacity",
    Gauge,
    &[],
    "Configured maximum number of flows in the agent's flow table.",
);
pub const TABLE_EVICTIONS: Family = fam(
    "sensor_flow_table_evictions_total",
    Counter,
    &[],
    "Flows evicted from the agent's flow table because it was full.",
);
pub const RECORDS: Family = fam(
    "sensor_flow_records_total",
    Counter,
    &["reason"],
    "Flow records written, by why the flow ended.",
);

pub const RATE_PACKETS: Family = fam(
    "sensor_rate_packets_per_second",
    Gauge,
    RATE,
    "Frames per second over the last interval or its EWMA.",
);
pub const RATE_BYTES: Family = fam(
    "sensor_rate_bytes_per_second",
    Gauge,
    RATE,
    "Bytes per second over the last interval or its EWMA.",
);
pub const PROTO_PACKETS: Family = fam("sensor_protocol_rate_packets_per_second", Gauge, PROTO_RATE,
    "Frames per second by protocol class (exact kernel totals), over the last interval or its EWMA.");
pub const PROTO_BYTES: Family = fam("sensor_protocol_rate_bytes_per_second", Gauge, PROTO_RATE,
    "Bytes per second of IP packets attributed to flows, by protocol class, over the last interval or its EWMA.");

pub const TOP_SRC_BYTES: Family = fam(
    "sensor_top_source_bytes_per_second",
    Gauge,
    HOST,
    "Bytes per second sent by the top-K source addresses, ranked by bytes per second.",
);
pub const TOP_SRC_PACKETS: Family = fam(
    "sensor_top_source_packets_per_second",
    Gauge,
    HOST,
    "Packets per second sent by the top-K source addresses, ranked by bytes per second.",
);
pub const TOP_DST_BYTES: Family = fam(
    "sensor_top_destination_bytes_per_second",
    Gauge,
    HOST,
    "Bytes per second received by the top-K destination addresses, ranked by bytes per second.",
);
pub const TOP_DST_PACKETS: Family = fam(
    "sensor_top_destination_packets_per_second",
    Gauge,
    HOST,
    "Packets per second received by the top-K destination addresses, ranked by bytes per second.",
);
pub const TOP_FLOW_BYTES: Family = fam(
    "sensor_top_flow_bytes_per_second",
    Gauge,
    FLOW,
    "Bytes per second of the top-K flows, ranked by bytes per second.",
);
pub const TOP_FLOW_PACKETS: Family = fam(
    "sensor_top_flow_packets_per_second",
    Gauge,
    FLOW,
    "Packets per second of the top-K flows, ranked by bytes per second.",
);

/// Every family [`super::Metrics`] registers, in METRICS.md order.
pub const ALL: &[Family] = &[
    PACKETS,
    BYTES,
    ETHERTYPE,
    L4,
    FRAGMENTS,
    MALFORMED,
    UNATTR_PACKETS,
    UNATTR_BYTES,
    RESETS,
    TCP_FLAGS,
    BUILD_INFO,
    ATTACHED,
    XDP_MODE,
    MAP_CAPACITY,
    MAP_ENTRIES,
    DRAIN_DURATION,
    BPF_RUN_SECONDS,
    BPF_RUNS,
    POLL_DURATION,
    POLL_ERRORS,
    POLL_INTERVAL,
    TABLE_FLOWS,
    TABLE_CAPACITY,
    TABLE_EVICTIONS,
    RECORDS,
    RATE_PACKETS,
    RATE_BYTES,
    PROTO_PACKETS,
    PROTO_BYTES,
    TOP_SRC_BYTES,
    TOP_SRC_PACKETS,
    TOP_DST_BYTES,
    TOP_DST_PACKETS,
    TOP_FLOW_BYTES,
    TOP_FLOW_PACKETS,
];

/// Closed label values: `flag` of [`TCP_FLAGS`].
pub const TCP_FLAG_NAMES: [&str; 4] = ["syn", "syn_ack", "fin", "rst"];
/// Closed label values: `program` of [`ATTACHED`] and the BPF stats.
pub const PROGRAMS: [&str; 2] = ["xdp", "tc"];
/// Closed label values: `mode` of [`XDP_MODE`].
pub const XDP_MODES: [&str; 2] = ["native", "skb"];
/// Closed label values: `reason` of [`RECORDS`].
pub const RECORD_REASONS: [&str; 4] = ["idle", "active", "evicted", "shutdown"];
/// Bucket bounds (seconds) of the poll and drain histograms.
pub const POLL_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
