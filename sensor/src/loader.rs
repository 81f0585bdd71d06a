//! Loading the eBPF object, attaching and detaching programs.
//!
//! (API fixed; implementation being written.)

use std::path::PathBuf;

use crate::{drain::Drainer, model::AttachInfo};

/// How to attach XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Try native (driver) mode, fall back to generic (skb) with a warning.
    #[default]
    Auto,
    Native,
    Skb,
}

/// What `Sensor::load` needs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Capacity of each of the two flow buffers.
    pub flow_map_entries: u32,
    pub xdp_mode: XdpModeSetting,
    /// Persistent mode: pin programs, links and maps here (bpffs).
    pub pin_path: Option<PathBuf>,
}

/// Errors of loading and attaching, each saying what to try next.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not implemented yet")]
    Todo,
}

/// The loaded object and its attachments.
pub struct Sensor {
    _private: (),
}

impl Sensor {
    /// Loads and verifies the programs without attaching them.
    pub fn load(_opts: &LoadOptions) -> Result<Sensor, LoadError> {
        Err(LoadError::Todo)
    }

    /// Attaches XDP (ingress) and TC (egress) to `iface`.
    pub fn attach(&mut self, _iface: &str) -> Result<AttachInfo, LoadError> {
        Err(LoadError::Todo)
    }

    /// Current attachments.
    pub fn attachments(&self) -> Vec<AttachInfo> {
        Vec::new()
    }

    /// Detaches every program (a no-op for pinned links in persistent mode).
    pub fn detach_all(&mut self) {}

    /// The drainer for this object's maps.
    pub fn drainer(&mut self) -> Result<Drainer, LoadError> {
        Err(LoadError::Todo)
    }
}
