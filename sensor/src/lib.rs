//! The sensor's userspace agent.
//!
//! Data flows one way: kernel maps -> [`drain`] -> [`flowtable`] -> [`rates`]
//! -> [`detect`] -> [`metrics`] / events. Each stage is a module with a small
//! typed interface; [`model::Interval`] is the seam between the kernel side
//! (or a capture file) and everything after it.
//!
//! Layout:
//! - [`config`]: command line, TOML file, validation into a [`config::Config`];
//! - [`loader`]: loading the object, attaching and detaching programs;
//! - [`bpf_sys`]: a small safe wrapper over `bpf(2)` batch operations;
//! - [`drain`]: double-buffered, loss-free draining into [`model::Interval`]s;
//! - [`flowtable`]: the bounded flow table, timeouts and flow records;
//! - [`persist`]: persistent mode's journal of the flow table;
//! - [`rates`]: per-interface, protocol, host and flow rates with EWMA;
//! - [`detect`]: baselines and anomaly detection;
//! - [`metrics`] and [`http`]: the Prometheus exporter;
//! - [`agent`]: `run(config, shutdown)`, the loop tying the stages together;
//! - [`analyze`]: offline analysis of pcap/pcapng captures through the same stages.

pub mod agent;
pub mod analyze;
pub mod bpf_sys;
pub mod config;
pub mod detect;
pub mod drain;
pub mod flowtable;
pub mod http;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod rates;
