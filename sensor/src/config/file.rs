//! The optional TOML configuration file (`--config`).
//!
//! Keys are the long flag names in snake_case (`--top-k` is `top_k`,
//! `--web.config.file` is `web_config_file`, `--iface` is `iface`, a list).
//! Durations are strings such as `"15s"`. Unknown keys are errors.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::loader::XdpModeSetting;

/// The file as written, before merging with flags and validation.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub log_level: Option<String>,
    pub iface: Option<Vec<String>>,
    pub xdp_mode: Option<XdpModeSetting>,
    pub interval: Option<String>,
    pub listen_address: Option<String>,
    pub flows_file: Option<String>,
    pub events: Option<String>,
    pub top_k: Option<i64>,
    pub active_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_flows: Option<i64>,
    pub flow_map_entries: Option<i64>,
    pub ewma_tau: Option<String>,
    pub pin_path: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub wait_for_iface: Option<bool>,
    pub web_config_file: Option<PathBuf>,
    /// The `[detection]` table (thresholds, baselines, allowlists).
    pub detection: Option<crate::detect::DetectConfig>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::ParseFile {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }
}
