//! Settings: defaults for the embedded setup, overlaid by a TOML file, overlaid by
//! `OBGATE_<SECTION>_<KEY>` environment variables. Settings are passed explicitly, never global.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("settings: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub database: DatabaseSettings,
    pub state: StateSettings,
    pub policy: PolicySettings,
    pub oauth: OAuthSettings,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// mTLS listener: TPPs and operators, client certificate required.
    pub listen: SocketAddr,
    /// Public TLS listener: discovery, JWKS, browsers; never asks for a certificate.
    pub public_listen: SocketAddr,
    /// Plain-HTTP ops listener: metrics, health, OpenAPI. Keep it private.
    pub ops_listen: SocketAddr,
    /// The issuer and base of public endpoints.
    pub public_url: String,
    /// Base of `mtls_endpoint_aliases` and the resource APIs; the access-token audience.
    pub mtls_url: String,
    /// Worker threads per listener set; 0 means one per core.
    pub workers: usize,
    /// How long a whole request (head and body) may take to arrive, on every listener; then
    /// `408` and the connection is closed.
    pub request_timeout_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Trust anchors for TPP and operator client certificates.
    pub client_ca: Vec<PathBuf>,
    /// The anchors among `client_ca` whose certificates may carry operator roles
    /// (`O=obgate operators`, `OU=portal|auditor`); empty: no operators.
    pub operator_ca: Vec<PathBuf>,
    /// PEM CRL files; when any is configured, every certificate below the trust anchor must be
    /// covered by one.
    pub crl: Vec<PathBuf>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    /// Where audit events wait while the database will not take them; instances may share it.
    pub audit_spool: PathBuf,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("audit_spool", &self.audit_spool)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    pub url: String,
}

impl fmt::Debug for StateSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSettings")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// `ES256` (default) or `PS256`; both are FAPI-approved.
    pub signing_alg: String,
    /// Directory of signing keys; every key in it is published in `/jwks`.
    pub keys_dir: PathBuf,
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Settings {
    /// The embedded default: everything under `data_dir`, loopback listeners.
    pub fn defaults(data_dir: &Path) -> Self {
        let pki = data_dir.join("pki");
        Self {
            server: ServerSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
                public_listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
                ops_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
                public_url: "https://localhost:8444".into(),
                mtls_url: "https://localhost:8443".into(),
                workers: 0,
                request_timeout_secs: 30,
            },
            tls: TlsSettings {
                cert: pki.join("server.pem"),
                key: pki.join("server.key"),
                client_ca: vec![pki.join("ca.pem")],
                operator_ca: vec![pki.join("ca.pem")],
                crl: Vec::new(),
            },
            database: DatabaseSettings {
                url: format!("sqlite://{}", data_dir.join("obgate.db").display()),
                audit_spool: data_dir.join("audit-spool"),
            },
            state: StateSettings {
                url: "memory://".into(),
            },
            policy: PolicySettings {
                dir: PathBuf::from("policies"),
            },
            oauth: OAuthSettings {
                signing_alg: "ES256".into(),
                keys_dir: data_dir.join("keys"),
            },
        }
    }

    /// Defaults, then the file (if any), then `OBGATE_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        data_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults = Self::defaults(data_dir);
        let mut table =
            toml::Table::try_from(&defaults).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let overlay: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            merge(&mut table, overlay, path)?;
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("OBGATE_") else {
                continue;
            };
            // Read by the command line itself, not settings keys.
            if rest == "DATA_DIR" || rest == "CONFIG" || rest == "LOG" {
                continue;
            }
            apply_env(&mut table, &name, rest, &value)?;
        }
        for key in ["listen", "public_listen", "ops_listen"] {
            if let Some(toml::Value::String(v)) = table.get("server").and_then(|s| s.get(key))
                && v.parse::<SocketAddr>().is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "server.{key} = {v:?}: give an IP address and port, e.g. 127.0.0.1:8443 or \
                     0.0.0.0:8443 (host names are not resolved)"
                )));
            }
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (field, url) in [
            ("server.public_url", &self.server.public_url),
            ("server.mtls_url", &self.server.mtls_url),
        ] {
            if !url.starts_with("https://") || url.ends_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "{field} must be an https:// URL without a trailing slash, got {url:?}"
                )));
            }
        }
        if let Some(stray) = self
            .tls
            .operator_ca
            .iter()
            .find(|p| !self.tls.client_ca.contains(p))
        {
            return Err(ConfigError::Invalid(format!(
                "tls.operator_ca: {} is not among tls.client_ca, so no certificate it issued \
                 could pass the handshake",
                stray.display()
            )));
        }
        if self.server.request_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "server.request_timeout_secs must be at least 1".into(),
            ));
        }
        if self.tls.client_ca.is_empty() {
            return Err(ConfigError::Invalid(
                "tls.client_ca must name at least one trust anchor".into(),
            ));
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table, path: &Path) -> Result<(), ConfigError> {
    for (section, value) in overlay {
        match (base.get_mut(&section), value) {
            (Some(toml::Value::Table(base_section)), toml::Value::Table(over)) => {
                for (key, v) in over {
                    if !base_section.contains_key(&key) {
                        return Err(ConfigError::Parse {
                            path: path.to_path_buf(),
                            message: format!("unknown key `{key}` in section [{section}]"),
                        });
                    }
                    base_section.insert(key, v);
                }
            }
            (Some(_), _) => {
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!("`{section}` must be a table"),
                });
            }
            (None, _) => {
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!("unknown section [{section}]"),
                });
            }
        }
    }
    Ok(())
}

fn apply_env(
    table: &mut toml::Table,
    name: &str,
    rest: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    for (section, value) in table.iter_mut() {
        let toml::Value::Table(keys) = value else {
            continue;
        };
        for (key, current) in keys.iter_mut() {
            if format!("{}_{}", section, key).eq_ignore_ascii_case(rest) {
                *current = typed_like(current, raw).map_err(|message| ConfigError::Env {
                    name: name.to_string(),
                    message,
                })?;
                return Ok(());
            }
        }
    }
    let known = table.iter().flat_map(|(section, value)| {
        value
            .as_table()
            .into_iter()
            .flat_map(|keys| keys.keys())
            .map(move |key| format!("OBGATE_{}_{}", section, key).to_ascii_uppercase())
    });
    let suggestion = known
        .map(|k| (edit_distance(&k, &name.to_ascii_uppercase()), k))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| format!("; did you mean {k}?"))
        .unwrap_or_default();
    Err(ConfigError::Env {
        name: name.to_string(),
        message: format!(
            "no such setting (expected OBGATE_<SECTION>_<KEY>, e.g. OBGATE_DATABASE_URL){suggestion}"
        ),
    })
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev + usize::from(ca != *cb);
            prev = row[j + 1];
            row[j + 1] = substitute.min(prev + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

fn typed_like(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match current {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected true or false, got {raw:?}"))?,
        ),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_keys_with_underscores_and_lists() -> Result<(), ConfigError> {
        let s = Settings::load(
            None,
            Path::new("/d"),
            env(&[
                ("OBGATE_SERVER_PUBLIC_LISTEN", "127.0.0.1:1"),
                ("OBGATE_TLS_CLIENT_CA", "a.pem, b.pem"),
                ("OBGATE_TLS_OPERATOR_CA", "b.pem"),
                ("HOME", "/root"),
            ]),
        )?;
        assert_eq!(s.server.public_listen.port(), 1);
        assert_eq!(
            s.tls.client_ca,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        Ok(())
    }

    #[test]
    fn an_operator_anchor_outside_the_trust_anchors_is_refused() {
        let err = Settings::load(
            None,
            Path::new("/d"),
            env(&[("OBGATE_TLS_OPERATOR_CA", "/elsewhere/ops.pem")]),
        );
        assert!(matches!(err, Err(ConfigError::Invalid(m)) if m.contains("tls.operator_ca")));
    }

    #[test]
    fn unknown_environment_setting_is_an_error_naming_it() {
        let err = Settings::load(None, Path::new("/d"), env(&[("OBGATE_SERVER_LISTN", "x")]));
        assert!(
            matches!(&err, Err(ConfigError::Env { name, message })
            if name == "OBGATE_SERVER_LISTN" && message.contains("did you mean OBGATE_SERVER_LISTEN?")),
            "{err:?}"
        );
        let far = Settings::load(
            None,
            Path::new("/d"),
            env(&[("OBGATE_NOTHING_LIKE_IT", "x")]),
        );
        assert!(
            matches!(&far, Err(ConfigError::Env { message, .. }) if !message.contains("did you mean"))
        );
    }

    #[test]
    fn a_listen_address_without_an_ip_and_port_says_what_to_write() {
        let err = Settings::load(
            None,
            Path::new("/d"),
            env(&[("OBGATE_SERVER_LISTEN", "localhost")]),
        );
        assert!(
            matches!(&err, Err(ConfigError::Invalid(m))
            if m.contains("server.listen") && m.contains("127.0.0.1:8443")),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_file_key_is_an_error_naming_file_and_key() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("obgate.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n")?;
        let err = Settings::load(Some(&file), dir.path(), Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("obgate.toml") && err.contains("listne"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn database_password_is_redacted_in_debug() {
        let d = DatabaseSettings {
            url: "postgres://app:s3cret@db/obgate".into(),
            audit_spool: PathBuf::from("spool"),
        };
        assert!(!format!("{d:?}").contains("s3cret"));
    }
}
