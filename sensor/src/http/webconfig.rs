//! `--web.config.file`: TLS and basic auth for the endpoint, in the format
//! of the Prometheus exporter toolkit's web configuration file.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # PEM, leaf first, then intermediates
//!   key_file: server.key           # PEM (PKCS#8, PKCS#1 or SEC1)
//!   client_auth_type: RequireAndVerifyClientCert   # default NoClientCert
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12             # TLS12 (default) or TLS13
//!   max_version: TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hash, as `htpasswd -nBC 10` prints
//! ```
//!
//! Relative paths are resolved against the file's directory, as the
//! toolkit does. Keys this sensor does not implement (`cipher_suites`,
//! `curve_preferences`, `http_server_config`, inline `cert`/`key`, ...) are
//! rejected rather than ignored, so a file never promises more security
//! than it gets. Everything (YAML, keys, certificates, key/cert match,
//! bcrypt hashes) is checked when the file is loaded, so a bad file stops
//! the sensor at start instead of failing the first scrape.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde::Deserialize;

use super::auth::BasicAuth;

/// Errors of loading a web configuration file; each names the file and,
/// where there is one, the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error(
        "cannot read web config {}: {source}; check the path given to --web.config.file \
         (SENSOR_WEB_CONFIG_FILE) and its permissions", path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not YAML, an unknown key, or a value of the wrong type.
    #[error(
        "web config {}: {message}; accepted keys: tls_server_config (cert_file, key_file, \
         client_auth_type, client_ca_file, min_version, max_version) and basic_auth_users",
        path.display()
    )]
    Parse { path: PathBuf, message: String },
    /// A key whose value cannot be used.
    #[error("web config {}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// A loaded, checked web configuration. The default serves plain HTTP
/// without authentication (what the sensor does without the flag).
#[derive(Clone, Default)]
pub struct WebConfig {
    pub(super) tls: Option<Arc<ServerConfig>>,
    pub(super) auth: Option<Arc<BasicAuth>>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field(
                "basic_auth_users",
                &self.auth.as_ref().map(|a| a.user_count()),
            )
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks `path`; `None` gives the plain default.
    pub fn load_opt(path: Option<&Path>) -> Result<WebConfig, WebConfigError> {
        path.map_or_else(|| Ok(WebConfig::default()), WebConfig::load)
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        WebConfig::parse(&text, path)
    }

    /// Checks `text` as if read from `path` (relative paths in it are
    /// resolved against `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_norway::from_str(text).map_err(|e| WebConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let invalid = |key: &str, message: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let tls = raw
            .tls_server_config
            .map(|t| tls_config(t, dir, &invalid))
            .transpose()?;
        let auth = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => {
                Some(Arc::new(BasicAuth::new(users).map_err(|(user, e)| {
                    invalid(&format!("basic_auth_users.{user}"), e)
                })?))
            }
            _ => None,
        };
        Ok(WebConfig { tls, auth })
    }

    /// Whether the endpoint speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests need basic auth.
    pub fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    IfGiven,
    Required,
}

fn tls_config(
    t: RawTls,
    dir: &Path,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<Arc<ServerConfig>, WebConfigError> {
    const K: &str = "tls_server_config";
    let resolve = |p: &Path| dir.join(p);
    let need = |v: Option<PathBuf>, key: &str| {
        v.filter(|p| !p.as_os_str().is_empty())
            .map(|p| resolve(&p))
            .ok_or_else(|| {
                invalid(
                    &format!("{K}.{key}"),
                    "missing; TLS needs both cert_file and key_file (PEM files)".into(),
                )
            })
    };
    let cert_file = need(t.cert_file, "cert_file")?;
    let key_file = need(t.key_file, "key_file")?;
    let client_auth = match t.client_auth_type.as_deref() {
        None | Some("") | Some("NoClientCert") => ClientAuth::None,
        Some("VerifyClientCertIfGiven") => ClientAuth::IfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::Required,
        Some(other) => {
            return Err(invalid(
                &format!("{K}.client_auth_type"),
                format!(
                    "{other:?} is not supported; accepted: NoClientCert, \
                     VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            ))
        }
    };
    let min = version(t.min_version.as_deref(), "min_version", invalid)?;
    let max = version(t.max_version.as_deref(), "max_version", invalid)?;
    let (min, max) = (min.unwrap_or(12), max.unwrap_or(13));
    if min > max {
        return Err(invalid(
            &format!("{K}.min_version"),
            format!("TLS1{min} is above max_version TLS1{max}"),
        ));
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(&format!("{K}.min_version"), e.to_string()))?;
    let ca_key = format!("{K}.client_ca_file");
    let ca_file = t.client_ca_file.filter(|p| !p.as_os_str().is_empty());
    let builder = match (client_auth, ca_file) {
        (ClientAuth::None, None) => builder.with_no_client_auth(),
        (ClientAuth::None, Some(_)) => {
            return Err(invalid(
                &ca_key,
                "set without client_auth_type; set client_auth_type to \
                 RequireAndVerifyClientCert or VerifyClientCertIfGiven, or remove it"
                    .into(),
            ))
        }
        (_, None) => {
            return Err(invalid(
                &ca_key,
                "missing; verifying client certificates needs the CA that signs them".into(),
            ))
        }
        (mode, Some(ca)) => {
            let ca = resolve(&ca);
            let mut roots = RootCertStore::empty();
            for cert in read_certs(&ca).map_err(|e| invalid(&ca_key, e))? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(&ca_key, format!("{}: {e}", ca.display())))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if mode == ClientAuth::IfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| invalid(&ca_key, format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = read_certs(&cert_file).map_err(|e| invalid(&format!("{K}.cert_file"), e))?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
        invalid(
            &format!("{K}.key_file"),
            format!("{}: {e}; expected a PEM private key", key_file.display()),
        )
    })?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        invalid(
            &format!("{K}.key_file"),
            format!(
                "{} does not go with {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `TLS12` -> 12; none -> `None`.
fn version(
    v: Option<&str>,
    key: &str,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<Option<u8>, WebConfigError> {
    match v {
        None | Some("") => Ok(None),
        Some("TLS12") => Ok(Some(12)),
        Some("TLS13") => Ok(Some(13)),
        Some(other) => Err(invalid(
            &format!("tls_server_config.{key}"),
            format!("{other:?} is not supported; accepted: TLS12, TLS13"),
        )),
    }
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block; expected PEM certificates",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text, Path::new("/nonexistent/web.yml"))
    }

    /// The message of a failed parse, which must name `key`.
    fn fails_naming(text: &str, key: &str) -> String {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains(key), "{key} not named in: {msg}");
        msg
    }

    #[test]
    fn empty_file_and_no_file_mean_plain_http() {
        for w in [parse("").unwrap(), WebConfig::load_opt(None).unwrap()] {
            assert!(!w.tls_enabled() && !w.auth_enabled());
        }
        let w = parse("basic_auth_users: {}\n").unwrap();
        assert!(!w.auth_enabled(), "no users, no auth");
    }

    #[test]
    fn basic_auth_users_are_loaded_and_checked() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let w = parse(&format!("basic_auth_users:\n  prom: '{hash}'\n")).unwrap();
        assert!(w.auth_enabled() && !w.tls_enabled());
        assert_eq!(
            format!("{w:?}"),
            "WebConfig { tls: false, basic_auth_users: Some(1) }"
        );
        fails_naming(
            "basic_auth_users:\n  prom: hunter2\n",
            "basic_auth_users.prom",
        );
    }

    #[test]
    fn unknown_keys_and_bad_yaml_are_errors() {
        let msg = fails_naming("tls_server_config:\n  cert_fil: a\n", "cert_fil");
        assert!(msg.contains("accepted keys"), "{msg}");
        fails_naming(
            "http_server_config:\n  http2: false\n",
            "http_server_config",
        );
        fails_naming(
            "tls_server_config:\n  cipher_suites: [x]\n",
            "cipher_suites",
        );
        fails_naming("basic_auth_users: [a, b]\n", "basic_auth_users");
        fails_naming("tls_server_config: {cert_file: a, key_file: b\n", "web.yml");
    }

    #[test]
    fn tls_settings_are_validated_before_files_are_read() {
        fails_naming(
            "tls_server_config:\n  key_file: k\n",
            "tls_server_config.cert_file",
        );
        fails_naming(
            "tls_server_config:\n  cert_file: c\n",
            "tls_server_config.key_file",
        );
        let base = "tls_server_config:\n  cert_file: c\n  key_file: k\n";
        let msg = fails_naming(
            &format!("{base}  client_auth_type: RequireAnyClientCert\n"),
            "tls_server_config.client_auth_type",
        );
        assert!(msg.contains("RequireAndVerifyClientCert"), "{msg}");
        fails_naming(
            &format!("{base}  min_version: TLS11\n"),
            "tls_server_config.min_version",
        );
        fails_naming(
            &format!("{base}  min_version: TLS13\n  max_version: TLS12\n"),
            "tls_server_config.min_version",
        );
        fails_naming(
            &format!("{base}  client_ca_file: ca.pem\n"),
            "tls_server_config.client_ca_file",
        );
        fails_naming(
            &format!("{base}  client_auth_type: RequireAndVerifyClientCert\n"),
            "tls_server_config.client_ca_file",
        );
        // Valid settings get as far as reading the (missing) certificate,
        // resolved against the config file's directory.
        let msg = fails_naming(base, "tls_server_config.cert_file");
        assert!(msg.contains("/nonexistent/c"), "{msg}");
    }

    #[test]
    fn an_unreadable_file_names_the_flag() {
        let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
        assert!(matches!(e, WebConfigError::Read { .. }));
        assert!(e.to_string().contains("--web.config.file"), "{e}");
    }
}
