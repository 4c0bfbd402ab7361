//! The client configuration file: where the server is, which CA to trust, which token to send.
//!
//! ```yaml
//! server: https://192.168.1.10:6443   # or unix:///run/podd/podd.sock (the default)
//! ca: /var/lib/podd/pki/ca.crt
//! token: 0123abcd...                   # or tokenFile: /var/lib/podd/tokens/admin
//! ```

use crate::{Client, Error};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/podd/podd.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientConfig {
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server: format!("unix://{DEFAULT_SOCKET}"),
            ca: None,
            token: None,
            token_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the client config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the client config {path} is not valid YAML/JSON: {message}")]
    Parse { path: PathBuf, message: String },
}

impl ClientConfig {
    /// Reads a YAML (or JSON) config file.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Builds a client: `unix://PATH` (or a bare path), or `https://HOST:PORT` with the CA
    /// and token.
    pub fn client(&self) -> Result<Client, Error> {
        if let Some(p) = self.server.strip_prefix("unix://") {
            return Ok(Client::unix(p));
        }
        if self.server.starts_with('/') {
            return Ok(Client::unix(&self.server));
        }
        let addr = self
            .server
            .strip_prefix("https://")
            .ok_or_else(|| {
                Error::Tls(format!(
                    "server {:?} must be unix:///path or https://host:port",
                    self.server
                ))
            })?
            .trim_end_matches('/');
        let ca_path = self.ca.as_ref().ok_or_else(|| {
            Error::Tls("an https server needs `ca:` (the cluster CA file)".into())
        })?;
        let ca = std::fs::read_to_string(ca_path)
            .map_err(|e| Error::Tls(format!("could not read the CA {}: {e}", ca_path.display())))?;
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| Error::Tls(format!("could not read the token {}: {e}", f.display())))?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(Error::Tls(
                    "an https server needs `token:` or `tokenFile:`".into(),
                ));
            }
        };
        Client::tls(addr, &ca, &token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_defaults() {
        let c: ClientConfig =
            serde_yaml::from_str("server: https://127.0.0.1:6443\nca: /x/ca.crt\ntoken: t\n")
                .unwrap();
        assert_eq!(c.server, "https://127.0.0.1:6443");
        assert_eq!(c.token.as_deref(), Some("t"));
        assert!(ClientConfig::default().client().is_ok());
        assert!(c.client().is_err(), "the CA file does not exist");
    }
}
