//! A Compute Engine API client (REST `compute/v1` over reqwest) for what the scanner VM does to
//! itself: create disks from snapshots or images, attach them read-only, detach and delete
//! them, read and delete its own instance, list disks by label, and wait for the zone
//! operations those calls start.
//!
//! Authentication is the VM's own service account: a token from the metadata server
//! ([`token`]), cached, and fetched again after a `401`. Requests that fail with a connection
//! error, a timeout, `429`, `5xx` or a rate-limit `403` are retried with the shared backoff
//! ([`crate::retry`]); every mutating call carries a `requestId`, so a retried insert or attach
//! is done once by the API. Other failures are a [`ComputeError`] that says which kind it is
//! (permission, quota, not found, already exists), for a clear per-job error.
//!
//! Hand-written rather than a generated client: the agent needs eight calls, the generated
//! Google crates pull in a large dependency tree and their own auth stack, and this way the
//! base URL is a setting (tests, private endpoints) and retries follow the agent's policy.
//!
//! The same client serves `snapscan launch` (snapshots, the scanner VM, its guest attributes)
//! with Application Default Credentials, and can print its mutating requests instead of
//! sending them (`--dry-run`).
//!
//! Not here: what to create or delete when (the agent's job lifecycle, [`crate::launch`]).

mod resources;
pub mod token;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gapi::{self, Failure};
use crate::metadata;
use crate::retry::RetryConfig;

pub use resources::{AttachedDisk, Disk, DiskSource, GuestAttribute, Instance, NewDisk, Operation};
pub use token::{TokenSource, Tokens};

/// The public endpoint.
pub const DEFAULT_URL: &str = "https://compute.googleapis.com/compute/v1";

/// The `[compute]` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeConfig {
    /// Base URL up to and including the API version. Default
    /// `https://compute.googleapis.com/compute/v1`.
    pub url: String,
    /// Longest one request may take. Default 60.
    pub request_timeout_secs: u64,
    /// Longest a zone operation may take to be `DONE`. Default 600.
    pub operation_timeout_secs: u64,
    /// Retries of failed requests.
    pub retry: RetryConfig,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            url: DEFAULT_URL.to_owned(),
            request_timeout_secs: 60,
            operation_timeout_secs: 600,
            retry: RetryConfig::default(),
        }
    }
}

impl ComputeConfig {
    /// Check the values.
    ///
    /// # Errors
    ///
    /// A URL that is not http(s), a zero timeout.
    pub fn validate(&self) -> anyhow::Result<()> {
        gapi::check_url(&self.url)?;
        if self.request_timeout_secs == 0 || self.operation_timeout_secs == 0 {
            anyhow::bail!("request_timeout_secs and operation_timeout_secs must be at least 1");
        }
        Ok(())
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The service account may not do this (`403`): its role lacks a permission.
    #[error("Compute API: permission denied for {what}: {message}")]
    Permission {
        /// The call.
        what: String,
        /// The API's message (it names the permission).
        message: String,
    },
    /// A quota is exhausted (`QUOTA_EXCEEDED`, `quotaExceeded`).
    #[error("Compute API: quota exceeded for {what}: {message}")]
    Quota {
        /// The call.
        what: String,
        /// The API's message (it names the quota).
        message: String,
    },
    /// The resource does not exist (`404`).
    #[error("Compute API: not found: {what}: {message}")]
    NotFound {
        /// The call.
        what: String,
        /// The API's message.
        message: String,
    },
    /// The resource exists already (`409`).
    #[error("Compute API: already exists: {what}: {message}")]
    AlreadyExists {
        /// The call.
        what: String,
        /// The API's message.
        message: String,
    },
    /// Any other refusal, or retries used up.
    #[error("Compute API: {what}: {message}")]
    Failed {
        /// The call.
        what: String,
        /// The status, if the API answered.
        status: Option<u16>,
        /// What went wrong.
        message: String,
        /// Whether trying again later may work (a 5xx, 429 or no answer after every retry).
        retryable: bool,
    },
    /// No token for the API.
    #[error(transparent)]
    Token(#[from] token::TokenError),
}

impl ComputeError {
    /// Worth trying again later (the job may wait and retry, not fail).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            ComputeError::Failed { retryable, .. } => *retryable,
            ComputeError::Token(token::TokenError::Metadata(e)) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A client for one project and zone (the VM's own).
pub struct Client {
    http: reqwest::Client,
    api_base: String,
    zone_base: String,
    project: String,
    zone: String,
    tokens: Arc<Tokens>,
    retry: RetryConfig,
    operation_timeout: Duration,
    dry_run: bool,
}

/// One API request: method, path relative to the zone (or to the API when it starts with
/// `projects/`), query, body.
struct Call<'a> {
    what: String,
    method: reqwest::Method,
    path: &'a str,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Client {
    /// A client for `project`/`zone` with tokens from `metadata` (the VM's own account).
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn new(
        cfg: &ComputeConfig,
        metadata: metadata::Client,
        project: &str,
        zone: &str,
    ) -> anyhow::Result<Client> {
        Client::with_tokens(
            cfg,
            Arc::new(Tokens::Metadata(TokenSource::new(metadata))),
            project,
            zone,
        )
    }

    /// A client for `project`/`zone` with `tokens`.
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn with_tokens(
        cfg: &ComputeConfig,
        tokens: Arc<Tokens>,
        project: &str,
        zone: &str,
    ) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.request_timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let api_base = format!("{}/", cfg.url.trim_end_matches('/'));
        Ok(Client {
            http,
            zone_base: format!("{api_base}projects/{project}/zones/{zone}/"),
            api_base,
            project: project.to_owned(),
            zone: zone.to_owned(),
            tokens,
            retry: cfg.retry.clone(),
            operation_timeout: Duration::from_secs(cfg.operation_timeout_secs.max(1)),
            dry_run: false,
        })
    }

    /// Print each mutating request (method, URL, JSON body) on stdout instead of sending it,
    /// as if it were done at once; reads are still sent.
    #[must_use]
    pub fn dry_run(mut self) -> Client {
        self.dry_run = true;
        self
    }

    /// The project.
    #[must_use]
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The zone.
    #[must_use]
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The API's partial URL of a disk of this zone, as `attachDisk` wants it.
    #[must_use]
    pub fn disk_url(&self, name: &str) -> String {
        format!("projects/{}/zones/{}/disks/{name}", self.project, self.zone)
    }

    /// The URL of `path` (relative to the zone, or to the API for `projects/...`).
    fn url(&self, path: &str) -> String {
        if path.starts_with("projects/") {
            format!("{}{path}", self.api_base)
        } else {
            format!("{}{path}", self.zone_base)
        }
    }

    /// Send `call`, retrying what is worth retrying; the answer's JSON (`null` when empty).
    async fn send(&self, call: Call<'_>) -> Result<Value, ComputeError> {
        let url = self.url(call.path);
        let req = gapi::Request {
            api: "Compute API",
            what: &call.what,
            method: call.method.clone(),
            url: &url,
            query: &call.query,
            body: call.body.as_ref(),
        };
        let what = call.what.clone();
        gapi::send(&self.http, Some(&self.tokens), &self.retry, req)
            .await
            .map_err(|f| match f {
                Failure::Token(e) => ComputeError::Token(e),
                Failure::Refused {
                    status,
                    reasons,
                    message,
                } => {
                    let reasons: Vec<&str> = reasons.iter().map(String::as_str).collect();
                    classify(&what, status, &reasons, message)
                }
                Failure::Malformed { status, message } => ComputeError::Failed {
                    what,
                    status: Some(status),
                    message,
                    retryable: false,
                },
                Failure::Exhausted { status, message } => ComputeError::Failed {
                    what,
                    status,
                    message,
                    retryable: true,
                },
            })
    }

    /// A mutating call: it starts an operation, which is returned (not waited for). A fresh
    /// `requestId` makes retries of it one request to the API.
    async fn start(
        &self,
        what: String,
        path: &str,
        body: Option<Value>,
        method: reqwest::Method,
        mut query: Vec<(&'static str, String)>,
    ) -> Result<Operation, ComputeError> {
        if self.dry_run {
            print_request(&method, &self.url(path), &query, body.as_ref());
            return Ok(Operation {
                name: "dry-run".into(),
                status: "DONE".into(),
                operation_type: what,
                ..Operation::default()
            });
        }
        query.push(("requestId", uuid::Uuid::new_v4().to_string()));
        let answer = self
            .send(Call {
                what: what.clone(),
                method,
                path,
                query,
                body,
            })
            .await?;
        resources::parse(&what, answer)
    }

    /// Wait until `op` is `DONE` (`zoneOperations.wait`, again until done or
    /// `operation_timeout_secs`); its error, if it failed.
    ///
    /// # Errors
    ///
    /// The operation failed (its errors, classified), or did not finish in time.
    pub async fn wait(&self, mut op: Operation) -> Result<Operation, ComputeError> {
        let deadline = Instant::now() + self.operation_timeout;
        let what = format!("operation {} ({})", op.name, op.operation_type);
        while op.status != "DONE" {
            if Instant::now() >= deadline {
                return Err(ComputeError::Failed {
                    what,
                    status: None,
                    message: format!(
                        "not done after {} s (status {})",
                        self.operation_timeout.as_secs(),
                        op.status
                    ),
                    retryable: true,
                });
            }
            // A global operation (snapshots) names itself; a zone operation is of this zone.
            let path = match op.self_link.find("projects/") {
                Some(at) => format!("{}/wait", &op.self_link[at..]),
                None => format!("operations/{}/wait", op.name),
            };
            let answer = self
                .send(Call {
                    what: what.clone(),
                    method: reqwest::Method::POST,
                    path: &path,
                    query: Vec::new(),
                    body: None,
                })
                .await?;
            op = resources::parse(&what, answer)?;
        }
        match op.failure() {
            None => Ok(op),
            Some((codes, message)) => {
                let status = op.http_error_status_code.unwrap_or(400);
                let reasons: Vec<&str> = codes.iter().map(String::as_str).collect();
                Err(classify(&what, status, &reasons, message))
            }
        }
    }
}

/// A request as `--dry-run` shows it: `METHOD URL`, then its JSON body, indented.
fn print_request(
    method: &reqwest::Method,
    url: &str,
    query: &[(&'static str, String)],
    body: Option<&Value>,
) {
    let mut line = format!("{method} {url}");
    for (i, (k, v)) in query.iter().enumerate() {
        let sep = if i == 0 { '?' } else { '&' };
        let _ = write!(line, "{sep}{k}={v}");
    }
    println!("{line}");
    if let Some(body) = body {
        let text = serde_json::to_string_pretty(body).unwrap_or_default();
        for l in text.lines() {
            println!("  {l}");
        }
    }
}

/// The error of a refused call or failed operation, by status and reasons (`errors[].reason`
/// of a response, `error.errors[].code` of an operation).
fn classify(what: &str, status: u16, reasons: &[&str], message: String) -> ComputeError {
    let what = what.to_owned();
    let quota = reasons
        .iter()
        .any(|r| r.eq_ignore_ascii_case("quotaExceeded") || *r == "QUOTA_EXCEEDED");
    if quota {
        return ComputeError::Quota { what, message };
    }
    match status {
        403 => ComputeError::Permission { what, message },
        404 => ComputeError::NotFound { what, message },
        409 => ComputeError::AlreadyExists { what, message },
        _ => ComputeError::Failed {
            what,
            status: Some(status),
            message,
            retryable: status == 429 || status >= 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let q = classify("insert", 403, &["quotaExceeded"], "m".into());
        assert!(matches!(q, ComputeError::Quota { .. }), "{q}");
        let q = classify("op", 400, &["QUOTA_EXCEEDED"], "m".into());
        assert!(matches!(q, ComputeError::Quota { .. }), "{q}");
        let p = classify(
            "attach",
            403,
            &["forbidden"],
            "needs compute.instances.attachDisk".into(),
        );
        assert!(matches!(p, ComputeError::Permission { .. }), "{p}");
        assert!(p.to_string().contains("compute.instances.attachDisk"));
        assert!(!p.is_retryable());
        assert!(matches!(
            classify("get", 404, &[], "m".into()),
            ComputeError::NotFound { .. }
        ));
        assert!(classify("x", 503, &[], "m".into()).is_retryable());
        assert!(!classify("x", 400, &["invalid"], "m".into()).is_retryable());
    }

    #[test]
    fn settings_are_checked() {
        assert!(ComputeConfig::default().validate().is_ok());
        let bad = ComputeConfig {
            url: "ftp://x".into(),
            ..ComputeConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
