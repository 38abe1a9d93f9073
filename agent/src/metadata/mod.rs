//! The GCE metadata server, as the agent uses it: one-shot reads, the instance's identity,
//! guest-attribute writes ([`Client`]), and long-polling watches that act only on a changed
//! ETag ([`watch`]).
//!
//! Every request goes straight to the server (no HTTP proxy), carries `Metadata-Flavor: Google`
//! and checks that the answer carries it too. The server is at `http://169.254.169.254` unless
//! `[metadata] url` or the `GCE_METADATA_HOST` environment variable (`host:port`, as Google's
//! client libraries honour it) says otherwise. `404` means "not set" and is not an error;
//! `429`, `5xx` and connection errors are [`MetadataError::is_retryable`].
//!
//! Not here: what the attributes mean (the agent's assignments), how often guest attributes may
//! be written (the agent's status reporter), access tokens.

pub mod watch;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::retry::RetryConfig;

/// The default server.
pub const DEFAULT_URL: &str = "http://169.254.169.254";
/// The environment variable that names another server (`host:port`).
pub const HOST_ENV: &str = "GCE_METADATA_HOST";

/// The `[metadata]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    /// Base URL of the server (`http://169.254.169.254`). Unset (the default): `http://` +
    /// `$GCE_METADATA_HOST` when that is set, else `http://169.254.169.254`.
    pub url: Option<String>,
    /// How long one watch request hangs waiting for a change (`timeout_sec`). Default 60.
    pub watch_timeout_secs: u64,
    /// Longest any other request may take. Default 10. A watch request may take
    /// `watch_timeout_secs` plus this.
    pub request_timeout_secs: u64,
    /// Ceiling of the first wait after a failed request. Default 500.
    pub initial_backoff_ms: u64,
    /// Ceiling of any wait after failed requests. Default 30000.
    pub max_backoff_ms: u64,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            url: None,
            watch_timeout_secs: 60,
            request_timeout_secs: 10,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
        }
    }
}

impl MetadataConfig {
    /// The base URL in effect (setting, else `GCE_METADATA_HOST`, else the default), without a
    /// trailing slash.
    pub fn base_url(&self) -> String {
        let url = match &self.url {
            Some(u) => u.clone(),
            None => match std::env::var(HOST_ENV) {
                Ok(host) if !host.trim().is_empty() => format!("http://{}", host.trim()),
                _ => DEFAULT_URL.to_owned(),
            },
        };
        url.trim_end_matches('/').to_owned()
    }

    /// The waits between failed requests: full jitter, capped, never giving up.
    pub fn backoff(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: u32::MAX,
            initial_backoff_ms: self.initial_backoff_ms.max(1),
            max_backoff_ms: self.max_backoff_ms.max(self.initial_backoff_ms.max(1)),
            max_retry_after_secs: 60,
        }
    }

    /// Check the values.
    ///
    /// # Errors
    ///
    /// A URL that is not `http://`, or a zero watch timeout.
    pub fn validate(&self) -> anyhow::Result<()> {
        let base = self.base_url();
        if !base.starts_with("http://") {
            anyhow::bail!("url '{base}' must start with http:// (the metadata server has no TLS)");
        }
        if self.watch_timeout_secs == 0 || self.request_timeout_secs == 0 {
            anyhow::bail!("watch_timeout_secs and request_timeout_secs must be at least 1");
        }
        Ok(())
    }
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The server answered with an error status.
    #[error("metadata server: {path}: HTTP {status}")]
    Status {
        /// The path asked for.
        path: String,
        /// The status.
        status: u16,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("metadata server: {path}: {message}")]
    Transport {
        /// The path asked for.
        path: String,
        /// What failed.
        message: String,
    },
    /// An answer without `Metadata-Flavor: Google`: not the metadata server.
    #[error("metadata server: {path}: the answer lacks Metadata-Flavor: Google")]
    NotMetadataServer {
        /// The path asked for.
        path: String,
    },
}

impl MetadataError {
    /// Worth trying again later: no answer, `429` or `5xx`.
    pub fn is_retryable(&self) -> bool {
        match self {
            MetadataError::Status { status, .. } => *status == 429 || *status >= 500,
            MetadataError::Transport { .. } | MetadataError::NotMetadataServer { .. } => true,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            MetadataError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A value read, with its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The body.
    pub body: String,
    /// The `ETag` header (empty if the server sent none).
    pub etag: String,
}

/// Who this VM is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `instance/id`: a u64 that can exceed i64, kept as text.
    pub instance_id: String,
    /// `instance/name`.
    pub name: String,
    /// The last segment of `instance/zone` (`europe-west1-b`).
    pub zone: String,
    /// `project/project-id`.
    pub project: String,
}

/// A metadata server client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    request_timeout: Duration,
}

impl Client {
    /// A client for the server `cfg` names.
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn new(cfg: &MetadataConfig) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(cfg.request_timeout_secs.max(1)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Client {
            http,
            base: format!("{}/computeMetadata/v1/", cfg.base_url()),
            request_timeout: Duration::from_secs(cfg.request_timeout_secs.max(1)),
        })
    }

    /// The base URL, `.../computeMetadata/v1/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Read `path` (relative to `computeMetadata/v1/`, query included): `None` when absent
    /// (404).
    ///
    /// # Errors
    ///
    /// Any other failure.
    pub async fn get(&self, path: &str) -> Result<Option<Versioned>, MetadataError> {
        self.get_with_timeout(path, self.request_timeout).await
    }

    /// Read a value that must exist.
    ///
    /// # Errors
    ///
    /// Absent (as a 404 status), or any other failure.
    pub async fn get_text(&self, path: &str) -> Result<String, MetadataError> {
        match self.get(path).await? {
            Some(v) => Ok(v.body.trim().to_owned()),
            None => Err(MetadataError::Status {
                path: path.to_owned(),
                status: 404,
            }),
        }
    }

    /// One long poll of a directory: `recursive=true&wait_for_change=true`, answered when its
    /// ETag differs from `last_etag` (`"0"` at first: at once) or after `timeout_secs` (then
    /// with the same ETag). `None` when absent.
    ///
    /// # Errors
    ///
    /// Any failure but 404.
    pub async fn watch_once(
        &self,
        dir: &str,
        last_etag: &str,
        timeout_secs: u64,
    ) -> Result<Option<Versioned>, MetadataError> {
        let path = format!(
            "{dir}?recursive=true&wait_for_change=true&last_etag={}&timeout_sec={timeout_secs}",
            urlencode(last_etag)
        );
        let wait = Duration::from_secs(timeout_secs).saturating_add(self.request_timeout);
        self.get_with_timeout(&path, wait).await
    }

    async fn get_with_timeout(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<Option<Versioned>, MetadataError> {
        let transport = |e: reqwest::Error| MetadataError::Transport {
            path: path.to_owned(),
            message: crate::error_chain(&e),
        };
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Metadata-Flavor", "Google")
            .timeout(timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(MetadataError::Status {
                path: path.to_owned(),
                status,
            });
        }
        check_flavor(&resp, path)?;
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.text().await.map_err(transport)?;
        Ok(Some(Versioned { body, etag }))
    }

    /// Write the guest attribute `namespace/key`.
    ///
    /// # Errors
    ///
    /// A status (403: guest attributes are disabled) or no answer.
    pub async fn put_guest_attribute(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> Result<(), MetadataError> {
        let path = format!("instance/guest-attributes/{namespace}/{key}");
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .header("Metadata-Flavor", "Google")
            .timeout(self.request_timeout)
            .body(value.to_owned())
            .send()
            .await
            .map_err(|e| MetadataError::Transport {
                path: path.clone(),
                message: crate::error_chain(&e),
            })?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(MetadataError::Status { path, status }),
        }
    }

    /// Who this VM is, asked again after a wait (full jitter, capped) until the server
    /// answers. `None` only when `cancel` fires first.
    pub async fn identity(
        &self,
        backoff: &RetryConfig,
        cancel: &CancellationToken,
    ) -> Option<Identity> {
        let mut attempt = 0u32;
        loop {
            match self.identity_once().await {
                Ok(id) => return Some(id),
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    // Log the first failure and then every tenth, not each retry.
                    if attempt % 10 == 1 {
                        tracing::warn!("waiting for the metadata server (attempt {attempt}): {e}");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.delay(attempt, None)) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    async fn identity_once(&self) -> Result<Identity, MetadataError> {
        let zone = self.get_text("instance/zone").await?;
        Ok(Identity {
            instance_id: self.get_text("instance/id").await?,
            name: self.get_text("instance/name").await?,
            zone: zone.rsplit('/').next().unwrap_or_default().to_owned(),
            project: self.get_text("project/project-id").await?,
        })
    }
}

/// A 200 without `Metadata-Flavor: Google` is some other server (a captive proxy, a hijacked
/// address): its answer is not trusted.
fn check_flavor(resp: &reqwest::Response, path: &str) -> Result<(), MetadataError> {
    let flavor = resp
        .headers()
        .get("Metadata-Flavor")
        .and_then(|v| v.to_str().ok());
    if flavor == Some("Google") {
        Ok(())
    } else {
        Err(MetadataError::NotMetadataServer {
            path: path.to_owned(),
        })
    }
}

/// Percent-encode a query value (ETags are hex, but the server's choice is its own).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_precedence() {
        let cfg = MetadataConfig {
            url: Some("http://10.0.0.1:8080/".into()),
            ..MetadataConfig::default()
        };
        assert_eq!(cfg.base_url(), "http://10.0.0.1:8080");
        assert!(cfg.validate().is_ok());
        let bad = MetadataConfig {
            url: Some("https://x".into()),
            ..MetadataConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn retryable_errors() {
        let status = |status| MetadataError::Status {
            path: "p".into(),
            status,
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(403).is_retryable());
        assert!(!status(400).is_retryable());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(urlencode("ab12-_"), "ab12-_");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }
}
