//! One call to a Google REST API (Compute Engine, Pub/Sub): a bearer token (fetched again once
//! after a `401`), a JSON body, and retries of connection errors, timeouts, `429`, `5xx` and
//! rate-limit `403`s with the shared backoff ([`crate::retry`]). The answer is its JSON
//! (`null` when empty); a refusal comes back with its status and reasons, for the caller to
//! say what kind it is.
//!
//! Not here: the APIs' resources and their errors by kind ([`crate::compute`],
//! [`crate::queue`]).

use std::time::SystemTime;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;

use crate::compute::token::{TokenError, Tokens};
use crate::retry::{self, RetryConfig, Verdict};

/// One request.
pub struct Request<'a> {
    /// The API, for the log (`Compute API`).
    pub api: &'static str,
    /// The call, for the log.
    pub what: &'a str,
    /// Its method.
    pub method: reqwest::Method,
    /// Its URL.
    pub url: &'a str,
    /// Its query.
    pub query: &'a [(&'static str, String)],
    /// Its JSON body.
    pub body: Option<&'a Value>,
}

/// Why a call failed.
#[derive(Debug)]
pub enum Failure {
    /// No token.
    Token(TokenError),
    /// A refusal that trying again does not change.
    Refused {
        /// The HTTP status.
        status: u16,
        /// `error.errors[].reason`.
        reasons: Vec<String>,
        /// `HTTP <status>: <error.message>`.
        message: String,
    },
    /// A success whose body is not JSON.
    Malformed {
        /// The HTTP status.
        status: u16,
        /// Why.
        message: String,
    },
    /// Every attempt failed with something worth retrying.
    Exhausted {
        /// The last status, if the API answered.
        status: Option<u16>,
        /// The last failure.
        message: String,
    },
}

/// `{"error": {"code", "message", "errors": [{"reason", "message"}]}}`, the APIs' error body.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize, Default)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// Check a `url` setting (an API's base URL): absolute, http or https.
///
/// # Errors
///
/// It is not, naming it (credentials redacted).
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url)
        .with_context(|| format!("invalid url '{}'", crate::redact::text(url)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("url '{}' is not http or https", crate::redact::text(url));
    }
    Ok(())
}

/// Reasons of a `403` that are rate limits, retried like a `429`.
const RATE_LIMIT_REASONS: [&str; 2] = ["rateLimitExceeded", "userRateLimitExceeded"];

/// Send `req` (with a token from `tokens`, if any), retrying what is worth retrying.
///
/// # Errors
///
/// See [`Failure`].
pub async fn send(
    http: &reqwest::Client,
    tokens: Option<&Tokens>,
    retry: &RetryConfig,
    req: Request<'_>,
) -> Result<Value, Failure> {
    let mut attempt = 0u32;
    let mut refreshed = false;
    loop {
        attempt += 1;
        let token = match tokens {
            Some(t) => Some(t.token().await.map_err(Failure::Token)?),
            None => None,
        };
        tracing::debug!(api = req.api, "{} {}: {}", req.method, req.url, req.what);
        let mut builder = http.request(req.method.clone(), req.url).query(req.query);
        if let Some(token) = &token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = req.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let (message, status, after) = match builder.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = resp.text().await.unwrap_or_default();
                if (200..300).contains(&status) {
                    if text.trim().is_empty() {
                        return Ok(Value::Null);
                    }
                    return serde_json::from_str(&text).map_err(|e| Failure::Malformed {
                        status,
                        message: format!("the answer is not JSON: {e}"),
                    });
                }
                if let (401, false, Some(t), Some(token)) = (status, refreshed, tokens, &token) {
                    // An expired or revoked token: one more try with a fresh one.
                    t.invalidate(token).await;
                    refreshed = true;
                    attempt -= 1;
                    continue;
                }
                let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                let reasons: Vec<String> =
                    body.error.errors.into_iter().map(|e| e.reason).collect();
                let message = if body.error.message.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {}", body.error.message)
                };
                let rate_limited = status == 403
                    && reasons
                        .iter()
                        .any(|r| RATE_LIMIT_REASONS.contains(&r.as_str()));
                let verdict = if rate_limited {
                    Verdict::Retry(None)
                } else {
                    retry::status_verdict(status, retry_after.as_deref(), SystemTime::now())
                };
                match verdict {
                    Verdict::Retry(after) => (message, Some(status), after),
                    Verdict::Fatal => {
                        return Err(Failure::Refused {
                            status,
                            reasons,
                            message,
                        })
                    }
                }
            }
            Err(e) => (crate::error_chain(&e), None, None),
        };
        if attempt >= retry.attempts() {
            return Err(Failure::Exhausted {
                status,
                message: format!("{message} (after {attempt} attempts)"),
            });
        }
        let wait = retry.delay(attempt, after);
        tracing::info!(
            attempt,
            "{}: {}: {message}; retrying in {wait:?}",
            req.api,
            req.what
        );
        tokio::time::sleep(wait).await;
    }
}
