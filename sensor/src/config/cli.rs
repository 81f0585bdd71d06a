//! The command line: `sensor [--log-level L] (run|check) [OPTIONS]`.
//!
//! Every option is optional here so that a value absent from the command
//! line (and its environment variable) leaves the config file's value, or
//! the default, in place. Defaults are applied by validation
//! ([`super::Config::from_cli`]) and shown in each option's help.

use std::{path::PathBuf, time::Duration};

use clap::{
    builder::{PossibleValuesParser, TypedValueParser as _},
    Args, Parser, Subcommand,
};

use super::duration::parse_duration;
use crate::loader::XdpModeSetting;

/// XDP/TC network traffic sensor: per-flow counting, rates, anomaly
/// detection, Prometheus export.
#[derive(Clone, Debug, Parser)]
#[command(name = "sensor", version, propagate_version = true)]
pub struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing
    /// filter directive such as "sensor=debug,aya=warn". [default: info]
    #[arg(long, env = "SENSOR_LOG", global = true)]
    pub log_level: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Load, attach and run the sensor until SIGINT or SIGTERM.
    Run(Options),
    /// Validate the configuration, load and verify the eBPF programs
    /// without attaching them, and exit.
    Check(Options),
}

impl Command {
    /// The options of whichever subcommand was given.
    pub fn options(&self) -> &Options {
        match self {
            Command::Run(o) | Command::Check(o) => o,
        }
    }
}

/// Options shared by `run` and `check`. Each one can also be set in the
/// `--config` file under the same name in snake_case; flags win.
#[derive(Clone, Debug, Default, Args)]
pub struct Options {
    /// Interface to watch (repeatable). Environment: comma separated.
    #[arg(
        long = "iface",
        value_name = "IFACE",
        env = "SENSOR_IFACES",
        value_delimiter = ','
    )]
    pub iface: Vec<String>,

    /// How to attach XDP: auto tries native (driver) mode and falls back to
    /// generic (skb) mode with a warning. [default: auto]
    #[arg(long, value_name = "MODE", env = "SENSOR_XDP_MODE",
          value_parser = PossibleValuesParser::new(["auto", "native", "skb"]).map(xdp_mode))]
    pub xdp_mode: Option<XdpModeSetting>,

    /// Poll interval: how often kernel counts are drained into the flow
    /// table (e.g. 500ms, 1s). At most --idle-timeout. [default: 1s]
    #[arg(long, value_name = "DURATION", env = "SENSOR_INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Address (IP:port) of the Prometheus endpoint (/metrics, /-/healthy,
    /// /-/ready). [default: 0.0.0.0:9087]
    #[arg(
        long = "listen-address",
        value_name = "HOST:PORT",
        env = "SENSOR_LISTEN_ADDRESS"
    )]
    pub listen_address: Option<String>,

    /// Write one JSON line per ended flow to this file (appended), or to
    /// standard output with "-". [default: no flow records]
    #[arg(long = "flows-file", value_name = "PATH|-", env = "SENSOR_FLOWS_FILE")]
    pub flows_file: Option<String>,

    /// Write anomaly events as JSON lines to this file (appended), or to
    /// standard output with "-". [default: events are only logged]
    #[arg(long, value_name = "PATH|-", env = "SENSOR_EVENTS")]
    pub events: Option<String>,

    /// Number of hosts and flows exported with address and port labels
    /// (1..=1000). [default: 20]
    #[arg(long = "top-k", value_name = "N", env = "SENSOR_TOP_K")]
    pub top_k: Option<u64>,

    /// A flow active longer than this is reported and continues with fresh
    /// counters (NetFlow/IPFIX active timeout). [default: 60s]
    #[arg(long = "active-timeout", value_name = "DURATION", env = "SENSOR_ACTIVE_TIMEOUT",
          value_parser = parse_duration)]
    pub active_timeout: Option<Duration>,

    /// A flow without packets for this long ends (idle timeout). At most
    /// --active-timeout. [default: 15s]
    #[arg(long = "idle-timeout", value_name = "DURATION", env = "SENSOR_IDLE_TIMEOUT",
          value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Maximum flows in the agent's flow table; when full, the least
    /// recently seen flow is evicted, reported and counted. [default: 1000000]
    #[arg(long = "max-flows", value_name = "N", env = "SENSOR_MAX_FLOWS")]
    pub max_flows: Option<u64>,

    /// Capacity of each of the two kernel flow buffers, in flows
    /// (1024..=16777216). Packets of new flows beyond it are counted as not
    /// attributed to a flow. [default: 65536]
    #[arg(
        long = "flow-map-entries",
        value_name = "N",
        env = "SENSOR_FLOW_MAP_ENTRIES"
    )]
    pub flow_map_entries: Option<u64>,

    /// Time constant of the exponentially weighted moving averages of rates:
    /// avg += (1 - exp(-dt/tau)) * (rate - avg). [default: 10s]
    #[arg(long = "ewma-tau", value_name = "DURATION", env = "SENSOR_EWMA_TAU",
          value_parser = parse_duration)]
    pub ewma_tau: Option<Duration>,

    /// Persistent mode: pin programs, links and maps under this bpffs
    /// directory so that counting survives an agent restart.
    #[arg(long = "pin-path", value_name = "PATH", env = "SENSOR_PIN_PATH")]
    pub pin_path: Option<PathBuf>,

    /// Persistent mode: directory for the flow-table journal that lets a
    /// restarted agent continue its flows. Keep it on a tmpfs that lives as
    /// long as the pins (the pins do not survive a reboot either).
    /// [default: /run/sensor]
    #[arg(long = "state-dir", value_name = "PATH", env = "SENSOR_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Wait for interfaces that do not exist yet instead of failing;
    /// attach them when they appear. [default: false]
    #[arg(long = "wait-for-iface", value_name = "BOOL", env = "SENSOR_WAIT_FOR_IFACE",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub wait_for_iface: Option<bool>,

    /// TLS and basic-auth settings for the HTTP endpoint, in the Prometheus
    /// exporter web-config format.
    #[arg(
        long = "web.config.file",
        value_name = "PATH",
        env = "SENSOR_WEB_CONFIG_FILE"
    )]
    pub web_config_file: Option<PathBuf>,

    /// TOML configuration file with the same keys in snake_case (and a
    /// [detection] table). Flags and environment variables override it.
    #[arg(long, value_name = "FILE", env = "SENSOR_CONFIG")]
    pub config: Option<PathBuf>,
}

/// XDP/TC network traffic sensor: per-flow counting, rates, anomaly
/// detection, Prometheus export, offline capture analysis.
//
// The binary's command line: the agent's subcommands ([`Cli`]) and
// `analyze`, which needs no privilege and no interface.
#[derive(Clone, Debug, Parser)]
#[command(name = "sensor", version, propagate_version = true)]
pub struct TopCli {
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing
    /// filter directive such as "sensor=debug,aya=warn". [default: info]
    #[arg(long, env = "SENSOR_LOG", global = true)]
    pub log_level: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: TopCommand,
}

/// Every subcommand of the binary.
#[derive(Clone, Debug, Subcommand)]
pub enum TopCommand {
    /// `run` and `check`.
    #[command(flatten)]
    Agent(Command),
    /// Analyse a pcap or pcapng capture offline with the live agent's flow
    /// table, rates and detectors, and print a report. Needs no privilege.
    Analyze(AnalyzeArgs),
}

impl TopCli {
    /// The agent's command line, or `Err` with the `analyze` arguments.
    pub fn into_agent(self) -> Result<Cli, Box<(Option<String>, AnalyzeArgs)>> {
        match self.command {
            TopCommand::Agent(command) => Ok(Cli {
                log_level: self.log_level,
                command,
            }),
            TopCommand::Analyze(a) => Err(Box::new((self.log_level, a))),
        }
    }
}

/// Report formats of `analyze`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Arguments of `sensor analyze`.
#[derive(Clone, Debug, Args)]
pub struct AnalyzeArgs {
    /// The pcap or pcapng file (Ethernet, Linux cooked or raw IP frames).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Report format. [default: text]
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,

    /// Write one JSON line per flow record, as `run --flows-file` does, to
    /// this file (appended) or standard output ("-").
    #[arg(long = "flows-file", value_name = "PATH|-")]
    pub flows_file: Option<String>,

    /// Write anomaly events as JSON lines, as `run --events` does.
    #[arg(long, value_name = "PATH|-")]
    pub events: Option<String>,

    /// Interval length: packets are grouped by timestamp into intervals of
    /// this length, as the agent drains every --interval. [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Entries in the top talkers and top flows of the report. [default: 20]
    #[arg(long = "top-k", value_name = "N")]
    pub top_k: Option<u64>,

    /// TOML configuration file: timeouts, max_flows, ewma_tau and the
    /// [detection] table apply as in `run`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn xdp_mode(s: String) -> XdpModeSetting {
    match s.as_str() {
        "native" => XdpModeSetting::Native,
        "skb" => XdpModeSetting::Skb,
        _ => XdpModeSetting::Auto,
    }
}
