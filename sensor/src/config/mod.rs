//! Configuration: command line, optional TOML file, validation.
//!
//! Raw values come from the file (`--config`), then from flags and their
//! environment variables, which win. [`Config::from_cli`] merges them,
//! applies defaults and checks every rule, so a [`Config`] that exists is
//! valid: timeouts are ordered, the interval fits in the idle timeout, the
//! listen address parses, `run` has at least one interface. Every failure is
//! a [`ConfigError`] naming the key, its flag and environment variable, and
//! the accepted values; `main` exits 64 on it.
//!
//! Layout:
//! - [`cli`]: the clap derive command line;
//! - `file`: the TOML file schema (unknown keys are errors);
//! - [`duration`]: `500ms` / `1s` / `2m` durations;
//! - this module: merging, defaults, validation, reload on SIGHUP.

pub mod cli;
pub mod duration;
mod file;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

pub use cli::{Cli, Command, Options};
use duration::{format_duration, parse_duration, DURATION_SYNTAX};
use file::FileConfig;

use crate::loader::XdpModeSetting;

/// Default `--listen-address`. Port 9087 lies outside the Prometheus
/// "default port allocations" list (9090-9094 for Prometheus components,
/// 9100-9999 for exporters, the latter fully allocated), so it collides
/// with no registered exporter.
pub const DEFAULT_LISTEN_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9087);
/// Default `--interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default `--active-timeout`.
pub const DEFAULT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `--ewma-tau`.
pub const DEFAULT_EWMA_TAU: Duration = Duration::from_secs(10);
/// Default `--top-k`.
pub const DEFAULT_TOP_K: u64 = 20;
/// Accepted `--top-k` values.
pub const TOP_K_RANGE: std::ops::RangeInclusive<u64> = 1..=1000;
/// Default `--max-flows`.
pub const DEFAULT_MAX_FLOWS: u64 = 1_000_000;
/// Accepted `--max-flows` values.
pub const MAX_FLOWS_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000_000;
/// Default `--flow-map-entries`.
pub const DEFAULT_FLOW_MAP_ENTRIES: u64 = sensor_common::DEFAULT_FLOW_MAP_ENTRIES as u64;
/// Accepted `--flow-map-entries` values.
pub const FLOW_MAP_ENTRIES_RANGE: std::ops::RangeInclusive<u64> = 1024..=16 * 1024 * 1024;
/// Most interfaces one sensor watches (kernel slot 0 is reserved).
pub const MAX_IFACES: usize = sensor_common::MAX_IFACE_SLOTS as usize - 1;
/// Default persistent-mode journal directory: a tmpfs, like the pins.
pub const DEFAULT_STATE_DIR: &str = "/run/sensor";
/// Default `--log-level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Configuration errors; each names the key and what it accepts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {}: {source}; check the path given to --config (SENSOR_CONFIG) and its permissions", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the
    /// wrong type (the message shows the line and the accepted keys).
    #[error("config file {}: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },
    /// A value outside what the key accepts.
    #[error("invalid value {value:?} for {}: expected {accepted}", describe(key))]
    Invalid {
        key: &'static str,
        value: String,
        accepted: String,
    },
    /// Two values that contradict each other.
    #[error(
        "{} = {value} contradicts {} = {other_value}: {rule}",
        describe(key),
        describe(other)
    )]
    Contradiction {
        key: &'static str,
        value: String,
        other: &'static str,
        other_value: String,
        rule: &'static str,
    },
    /// An invalid `[detection]` value (the message names the key).
    #[error("config file [detection]: {message}")]
    Detection { message: String },
    /// `run` without an interface.
    #[error("no interface to watch: pass --iface IFACE (repeatable), set SENSOR_IFACES=eth0,eth1, or put iface = [\"eth0\"] in the config file")]
    NoInterface,
    /// SIGHUP reload without a config file.
    #[error("nothing to reload: the sensor was started without --config (SENSOR_CONFIG)")]
    NoConfigFile,
}

/// "`top_k` (--top-k, SENSOR_TOP_K)": a key with its flag and variable.
fn describe(key: &str) -> String {
    let (flag, env) = match key {
        "iface" => ("iface".to_string(), "SENSOR_IFACES".to_string()),
        "log_level" => ("log-level".to_string(), "SENSOR_LOG".to_string()),
        "web_config_file" => (
            "web.config.file".to_string(),
            "SENSOR_WEB_CONFIG_FILE".to_string(),
        ),
        k => (
            k.replace('_', "-"),
            format!("SENSOR_{}", k.to_ascii_uppercase()),
        ),
    };
    format!("`{key}` (--{flag}, {env})")
}

/// Which subcommand the configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `sensor run`: attach and count.
    Run,
    /// `sensor check`: validate and load without attaching.
    Check,
}

/// Where a JSON-lines output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output (`-`).
    Stdout,
    /// A file, opened for appending.
    File(PathBuf),
}

/// A validated configuration. Only [`Config::from_cli`],
/// [`Config::from_options`] and [`Config::reload_from_file`] make one.
#[derive(Clone, Debug)]
pub struct Config {
    /// The subcommand.
    pub mode: Mode,
    /// Tracing filter directive (checked to parse).
    pub log_level: String,
    /// Interfaces to watch, without duplicates, in the order given.
    pub ifaces: Vec<String>,
    /// How to attach XDP.
    pub xdp_mode: XdpModeSetting,
    /// Poll interval; `0 < interval <= idle_timeout`.
    pub interval: Duration,
    /// Prometheus endpoint address.
    pub listen_address: SocketAddr,
    /// Flow records output, if any.
    pub flows_file: Option<Output>,
    /// Anomaly events output, if any (never the same as `flows_file`).
    pub events: Option<Output>,
    /// Top-K size for labelled host and flow series, in [`TOP_K_RANGE`].
    pub top_k: usize,
    /// Active timeout (> 0).
    pub active_timeout: Duration,
    /// Idle timeout; `0 < idle_timeout <= active_timeout`.
    pub idle_timeout: Duration,
    /// Flow table capacity, in [`MAX_FLOWS_RANGE`].
    pub max_flows: usize,
    /// Kernel flow buffer capacity, in [`FLOW_MAP_ENTRIES_RANGE`].
    pub flow_map_entries: u32,
    /// EWMA time constant (> 0).
    pub ewma_tau: Duration,
    /// Persistent mode pin directory (absolute).
    pub pin_path: Option<PathBuf>,
    /// Persistent mode journal directory (absolute).
    pub state_dir: PathBuf,
    /// Wait for missing interfaces instead of failing.
    pub wait_for_iface: bool,
    /// Prometheus web-config file for TLS and basic auth.
    pub web_config_file: Option<PathBuf>,
    /// The `--config` file, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// Detection settings: the file's `[detection]` table, or defaults.
    pub detection: crate::detect::DetectConfig,
    /// The flags as given, re-applied over the file on reload.
    flags: Flags,
}

#[derive(Clone, Debug)]
struct Flags {
    log_level: Option<String>,
    options: Options,
}

impl Config {
    /// Validates parsed command-line arguments, reading `--config` if given.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let mode = match cli.command {
            Command::Run(_) => Mode::Run,
            Command::Check(_) => Mode::Check,
        };
        let options = match cli.command {
            Command::Run(o) | Command::Check(o) => o,
        };
        Config::from_options(mode, cli.log_level, options)
    }

    /// Validates options for `mode`, reading `options.config` if given.
    pub fn from_options(
        mode: Mode,
        log_level: Option<String>,
        options: Options,
    ) -> Result<Config, ConfigError> {
        let file = match &options.config {
            Some(path) => Some(FileConfig::load(path)?),
            None => None,
        };
        Config::build(Flags { log_level, options }, mode, file)
    }

    /// Re-reads the config file and re-applies the original flags over it
    /// (for SIGHUP). Fails with [`ConfigError::NoConfigFile`] without one.
    pub fn reload_from_file(&self) -> Result<Config, ConfigError> {
        let path = self.config_file.as_ref().ok_or(ConfigError::NoConfigFile)?;
        let file = FileConfig::load(path)?;
        Config::build(self.flags.clone(), self.mode, Some(file))
    }

    /// Keys whose new value only takes effect after a restart (everything
    /// but `top_k`, `ewma_tau` and, later, detection settings).
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |changed: bool, key| {
            if changed {
                keys.push(key);
            }
        };
        check(self.log_level != new.log_level, "log_level");
        check(self.ifaces != new.ifaces, "iface");
        check(self.xdp_mode != new.xdp_mode, "xdp_mode");
        check(self.interval != new.interval, "interval");
        check(self.listen_address != new.listen_address, "listen_address");
        check(self.flows_file != new.flows_file, "flows_file");
        check(self.events != new.events, "events");
        check(self.active_timeout != new.active_timeout, "active_timeout");
        check(self.idle_timeout != new.idle_timeout, "idle_timeout");
        check(self.max_flows != new.max_flows, "max_flows");
        check(
            self.flow_map_entries != new.flow_map_entries,
            "flow_map_entries",
        );
        check(self.pin_path != new.pin_path, "pin_path");
        check(self.state_dir != new.state_dir, "state_dir");
        check(self.wait_for_iface != new.wait_for_iface, "wait_for_iface");
        check(
            self.web_config_file != new.web_config_file,
            "web_config_file",
        );
        keys
    }

    /// Takes over from `new` the keys that change at run time (`top_k`,
    /// `ewma_tau`; later detection), keeping the running values
    /// of keys that need a restart, so a later reload compares against what
    /// is in effect.
    pub fn apply_live(&mut self, new: &Config) {
        self.top_k = new.top_k;
        self.ewma_tau = new.ewma_tau;
        self.detection = new.detection.clone();
    }

    /// Merges `file` and `flags` (flags win), applies defaults, validates.
    fn build(flags: Flags, mode: Mode, file: Option<FileConfig>) -> Result<Config, ConfigError> {
        let f = file.unwrap_or_default();
        let o = &flags.options;

        let log_level = flags
            .log_level
            .clone()
            .or(f.log_level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err()
            || log_level.trim().is_empty()
        {
            return Err(invalid(
                "log_level",
                &log_level,
                "a level (error, warn, info, debug, trace) or a tracing filter such as \"sensor=debug,info\"",
            ));
        }

        let raw_ifaces = if o.iface.is_empty() {
            f.iface.unwrap_or_default()
        } else {
            o.iface.clone()
        };
        let ifaces = validate_ifaces(raw_ifaces)?;
        if mode == Mode::Run && ifaces.is_empty() {
            return Err(ConfigError::NoInterface);
        }

        let interval = duration("interval", o.interval, f.interval, DEFAULT_INTERVAL)?;
        let active_timeout = duration(
            "active_timeout",
            o.active_timeout,
            f.active_timeout,
            DEFAULT_ACTIVE_TIMEOUT,
        )?;
        let idle_timeout = duration(
            "idle_timeout",
            o.idle_timeout,
            f.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
        )?;
        let ewma_tau = duration("ewma_tau", o.ewma_tau, f.ewma_tau, DEFAULT_EWMA_TAU)?;
        if idle_timeout > active_timeout {
            return Err(contradiction(
                ("idle_timeout", idle_timeout),
                ("active_timeout", active_timeout),
                "the idle timeout must not exceed the active timeout",
            ));
        }
        if interval > idle_timeout {
            return Err(contradiction(
                ("interval", interval),
                ("idle_timeout", idle_timeout),
                "the poll interval must not exceed the idle timeout, or idle flows would be seen late",
            ));
        }

        let listen_raw = o.listen_address.clone().or(f.listen_address);
        let listen_address = match listen_raw {
            None => DEFAULT_LISTEN_ADDRESS,
            Some(s) => parse_listen(&s)?,
        };

        let flows_file = output("flows_file", o.flows_file.clone().or(f.flows_file))?;
        let events = output("events", o.events.clone().or(f.events))?;
        if let (Some(a), Some(b)) = (&flows_file, &events) {
            if a == b {
                return Err(ConfigError::Contradiction {
                    key: "events",
                    value: show_output(b),
                    other: "flows_file",
                    other_value: show_output(a),
                    rule: "flow records and events need different destinations (at most one may be \"-\")",
                });
            }
        }

        let top_k = number("top_k", o.top_k, f.top_k, DEFAULT_TOP_K, TOP_K_RANGE)?;
        let max_flows = number(
            "max_flows",
            o.max_flows,
            f.max_flows,
            DEFAULT_MAX_FLOWS,
            MAX_FLOWS_RANGE,
        )?;
        let flow_map_entries = number(
            "flow_map_entries",
            o.flow_map_entries,
            f.flow_map_entries,
            DEFAULT_FLOW_MAP_ENTRIES,
            FLOW_MAP_ENTRIES_RANGE,
        )?;

        let pin_path = o.pin_path.clone().or(f.pin_path);
        if let Some(p) = &pin_path {
            if !p.is_absolute() {
                return Err(invalid(
                    "pin_path",
                    &p.display().to_string(),
                    "an absolute directory on a bpffs mount, such as /sys/fs/bpf/sensor",
                ));
            }
        }
        let state_dir = o
            .state_dir
            .clone()
            .or(f.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(invalid(
                "state_dir",
                &state_dir.display().to_string(),
                "an absolute directory, such as /run/sensor",
            ));
        }
        let web_config_file = o.web_config_file.clone().or(f.web_config_file);
        if web_config_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "web_config_file",
                "",
                "a path to a web-config YAML file",
            ));
        }

        let detection = f.detection.unwrap_or_default();
        detection.validate().map_err(|e| ConfigError::Detection {
            message: e.to_string(),
        })?;
        Ok(Config {
            detection,
            mode,
            log_level,
            ifaces,
            xdp_mode: o.xdp_mode.or(f.xdp_mode).unwrap_or_default(),
            interval,
            listen_address,
            flows_file,
            events,
            top_k: to_usize(top_k),
            active_timeout,
            idle_timeout,
            max_flows: to_usize(max_flows),
            flow_map_entries: u32::try_from(flow_map_entries).unwrap_or(u32::MAX),
            ewma_tau,
            pin_path,
            state_dir,
            wait_for_iface: o.wait_for_iface.or(f.wait_for_iface).unwrap_or(false),
            web_config_file,
            config_file: o.config.clone(),
            flags,
        })
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn invalid(key: &'static str, value: &str, accepted: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        accepted: accepted.to_string(),
    }
}

fn contradiction(
    (key, value): (&'static str, Duration),
    (other, other_value): (&'static str, Duration),
    rule: &'static str,
) -> ConfigError {
    ConfigError::Contradiction {
        key,
        value: format_duration(value),
        other,
        other_value: format_duration(other_value),
        rule,
    }
}

/// A positive duration from the flag, else the file, else the default.
fn duration(
    key: &'static str,
    flag: Option<Duration>,
    file: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = match (flag, file) {
        (Some(d), _) => d,
        (None, Some(s)) => parse_duration(&s).map_err(|_| invalid(key, &s, DURATION_SYNTAX))?,
        (None, None) => default,
    };
    if d.is_zero() {
        return Err(invalid(
            key,
            &format_duration(d),
            "a duration greater than zero, such as \"1s\"",
        ));
    }
    Ok(d)
}

/// A number in `range` from the flag, else the file, else the default.
fn number(
    key: &'static str,
    flag: Option<u64>,
    file: Option<i64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let accepted = || format!("an integer from {} to {}", range.start(), range.end());
    let v = match (flag, file) {
        (Some(v), _) => v,
        (None, Some(v)) => {
            u64::try_from(v).map_err(|_| invalid(key, &v.to_string(), &accepted()))?
        }
        (None, None) => default,
    };
    if !range.contains(&v) {
        return Err(invalid(key, &v.to_string(), &accepted()));
    }
    Ok(v)
}

/// Checks interface names as the kernel would (`dev_valid_name`) and drops
/// duplicates, keeping the first occurrence.
fn validate_ifaces(raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for name in raw {
        let name = name.trim().to_string();
        let valid = !name.is_empty()
            && name.len() < 16
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            return Err(invalid(
                "iface",
                &name,
                "interface names of 1 to 15 bytes without '/', ':' or whitespace",
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.len() > MAX_IFACES {
        return Err(invalid(
            "iface",
            &format!("{} interfaces", out.len()),
            &format!("at most {MAX_IFACES} interfaces"),
        ));
    }
    Ok(out)
}

/// `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.trim().parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = s.trim().strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    Err(invalid(
        "listen_address",
        s,
        "HOST:PORT with an IP address or localhost, such as 0.0.0.0:9087, 127.0.0.1:9087 or [::]:9087",
    ))
}

fn output(key: &'static str, raw: Option<String>) -> Result<Option<Output>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(s) if s == "-" => Ok(Some(Output::Stdout)),
        Some(s) if s.trim().is_empty() => Err(invalid(
            key,
            &s,
            "a file path, or \"-\" for standard output",
        )),
        Some(s) => Ok(Some(Output::File(PathBuf::from(s)))),
    }
}

fn show_output(o: &Output) -> String {
    match o {
        Output::Stdout => "-".to_string(),
        Output::File(p) => p.display().to_string(),
    }
}
