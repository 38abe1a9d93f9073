//! A Cloud Pub/Sub client (REST `v1` over reqwest, [`crate::gapi`]) for the agent's work queue
//! and the results topic: `pull` from a subscription (at most as many messages as there are
//! free job slots), `modifyAckDeadline` (to extend a lease, or `0` to give a message back at
//! once), `acknowledge`, and `publish` to a topic; for `snapscan submit --wait`, creating and
//! deleting its own filtered subscription of the results topic.
//!
//! Authentication is the VM's own service account ([`Tokens`]); with `PUBSUB_EMULATOR_HOST`
//! set (the emulator's `host:port`, as Google's client libraries read it) the requests go
//! there over plain HTTP, without a token.
//!
//! Hand-written for the reasons of [`crate::compute`]: four calls, the base URL a setting, the
//! agent's retry policy; the gRPC client crates bring their own auth stack and a protobuf
//! build.
//!
//! Not here: when to pull, extend, ack or give back (the agent's queue worker).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::compute::Tokens;
use crate::gapi::{self, Failure};
use crate::retry::RetryConfig;

/// The public endpoint.
pub const DEFAULT_URL: &str = "https://pubsub.googleapis.com/v1";

/// The variable naming the emulator's `host:port`.
pub const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// The `[queue]` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Where scan requests come from: `projects/P/subscriptions/S`. Empty (the default): no
    /// queue, only metadata assignments.
    pub subscription: String,
    /// Where a message per finished job goes: `projects/P/topics/T`. Empty (the default): none.
    pub results_topic: String,
    /// Base URL up to and including the API version. Default `https://pubsub.googleapis.com/v1`
    /// (`http://$PUBSUB_EMULATOR_HOST/v1` when that is set).
    pub url: String,
    /// The lease on a message being worked on: extended to this many seconds every third of
    /// it. Default 60 (10 to 600).
    pub ack_deadline_secs: u64,
    /// Longest a pull waits for messages before it is made again. Default 30.
    pub pull_wait_secs: u64,
    /// Retries of failed requests.
    pub retry: RetryConfig,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            subscription: String::new(),
            results_topic: String::new(),
            url: DEFAULT_URL.to_owned(),
            ack_deadline_secs: 60,
            pull_wait_secs: 30,
            retry: RetryConfig::default(),
        }
    }
}

impl QueueConfig {
    /// Check the values.
    ///
    /// # Errors
    ///
    /// A subscription or topic not in the `projects/P/...` form, a URL that is not http(s), a
    /// deadline Pub/Sub does not take.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.subscription.is_empty() {
            check_name(&self.subscription, "subscriptions")?;
        }
        if !self.results_topic.is_empty() {
            check_name(&self.results_topic, "topics")?;
        }
        gapi::check_url(&self.url)?;
        if !(10..=600).contains(&self.ack_deadline_secs) {
            anyhow::bail!("ack_deadline_secs must be 10 to 600 (Pub/Sub's range)");
        }
        if self.pull_wait_secs == 0 {
            anyhow::bail!("pull_wait_secs must be at least 1");
        }
        Ok(())
    }

    /// The URL in use: the emulator's when `PUBSUB_EMULATOR_HOST` is set, else `url`.
    #[must_use]
    pub fn effective_url(&self) -> String {
        match emulator_host() {
            Some(host) => format!("http://{host}/v1"),
            None => self.url.clone(),
        }
    }
}

/// The emulator's `host:port` (`PUBSUB_EMULATOR_HOST`), if set.
#[must_use]
pub fn emulator_host() -> Option<String> {
    std::env::var(EMULATOR_ENV)
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// `projects/P/<kind>/N`, with names as Pub/Sub takes them.
pub fn check_name(name: &str, kind: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = matches!(parts.as_slice(), ["projects", p, k, n]
        if !p.is_empty() && *k == kind && n.len() >= 3 && n.len() <= 255
            && n.starts_with(|c: char| c.is_ascii_alphabetic())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c)));
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "'{name}' is not projects/PROJECT/{kind}/NAME (NAME: 3-255 characters, a letter first)"
        )
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[error("Pub/Sub: {what}: {message}")]
pub struct QueueError {
    /// The call.
    pub what: String,
    /// What went wrong.
    pub message: String,
    /// Whether trying again later may work.
    pub retryable: bool,
}

/// A message pulled, with its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// What acknowledges it or extends its lease.
    pub ack_id: String,
    /// The message's id (the same on every delivery).
    pub message_id: String,
    /// Its data, decoded.
    pub data: Vec<u8>,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
    /// Which delivery this is (only with a dead-letter policy; 1 is the first).
    pub delivery_attempt: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PullAnswer {
    #[serde(default)]
    received_messages: Vec<WireReceived>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReceived {
    ack_id: String,
    message: WireMessage,
    #[serde(default)]
    delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMessage {
    #[serde(default)]
    data: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    message_id: String,
}

/// A client of one Pub/Sub endpoint.
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// `None` for the emulator.
    tokens: Option<Arc<Tokens>>,
    retry: RetryConfig,
    pull_wait: Duration,
    /// Pulls return at once (the emulator's, see [`Client::pull`]).
    immediate: bool,
}

impl Client {
    /// A client for `cfg`'s endpoint with `tokens` (not used for the emulator).
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn new(cfg: &QueueConfig, tokens: Arc<Tokens>) -> anyhow::Result<Client> {
        let url = cfg.effective_url();
        let pull_wait = Duration::from_secs(cfg.pull_wait_secs.max(1));
        let http = reqwest::Client::builder()
            .timeout(pull_wait + Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base: format!("{}/", url.trim_end_matches('/')),
            tokens: emulator_host().is_none().then_some(tokens),
            retry: cfg.retry.clone(),
            pull_wait,
            // Plain HTTP: the emulator (or a local stand-in), where a long poll given up on
            // stays on the server.
            immediate: url.starts_with("http://"),
        })
    }

    async fn call(&self, what: &str, path: &str, body: &Value) -> Result<Value, QueueError> {
        self.send(reqwest::Method::POST, what, path, Some(body))
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        what: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, QueueError> {
        let url = format!("{}{path}", self.base);
        let req = gapi::Request {
            api: "Pub/Sub",
            what,
            method,
            url: &url,
            query: &[],
            body,
        };
        gapi::send(&self.http, self.tokens.as_deref(), &self.retry, req)
            .await
            .map_err(|f| {
                let (message, retryable) = match f {
                    Failure::Token(e) => (e.to_string(), false),
                    Failure::Refused { message, .. } | Failure::Malformed { message, .. } => {
                        (message, false)
                    }
                    Failure::Exhausted { message, .. } => (message, true),
                };
                QueueError {
                    what: what.to_owned(),
                    message,
                    retryable,
                }
            })
    }

    /// Up to `max` messages of `subscription`; none when none came within `pull_wait_secs`.
    ///
    /// Against Pub/Sub the pull waits for messages (a long poll over HTTP/2, whose cancellation
    /// at `pull_wait_secs` reaches the server). The emulator instead keeps a long poll its
    /// client gave up on for up to 90 s and hands it the next messages (a given-back one too),
    /// which then sit leased to nobody until their deadline: over plain HTTP (the emulator)
    /// pulls return at once (`returnImmediately`), and the caller paces them.
    ///
    /// # Errors
    ///
    /// The pull was refused, or failed on every retry.
    pub async fn pull(&self, subscription: &str, max: usize) -> Result<Vec<Received>, QueueError> {
        let what = format!("pull from {subscription}");
        let body = json!({ "maxMessages": max.max(1), "returnImmediately": self.immediate });
        let answer = tokio::time::timeout(
            self.pull_wait,
            self.call(&what, &format!("{subscription}:pull"), &body),
        )
        .await;
        let Ok(answer) = answer else {
            return Ok(Vec::new());
        };
        let answer: PullAnswer = match answer? {
            Value::Null => PullAnswer::default(),
            v => serde_json::from_value(v).map_err(|e| QueueError {
                what: what.clone(),
                message: format!("the answer is not a pull response: {e}"),
                retryable: false,
            })?,
        };
        Ok(answer
            .received_messages
            .into_iter()
            .map(|r| Received {
                ack_id: r.ack_id,
                message_id: r.message.message_id,
                // Undecodable data is passed on empty: the message is then refused as a bad
                // request, not dropped.
                data: base64::engine::general_purpose::STANDARD
                    .decode(r.message.data.as_bytes())
                    .unwrap_or_default(),
                attributes: r.message.attributes,
                delivery_attempt: r.delivery_attempt,
            })
            .collect())
    }

    /// Set the lease of `ack_ids` to `secs` from now (`0`: give them back at once).
    ///
    /// # Errors
    ///
    /// Refused, or failed on every retry.
    pub async fn modify_ack_deadline(
        &self,
        subscription: &str,
        ack_ids: &[String],
        secs: u64,
    ) -> Result<(), QueueError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let body = json!({ "ackIds": ack_ids, "ackDeadlineSeconds": secs });
        self.call(
            &format!("modifyAckDeadline on {subscription}"),
            &format!("{subscription}:modifyAckDeadline"),
            &body,
        )
        .await
        .map(drop)
    }

    /// Acknowledge `ack_ids`: they are not delivered again.
    ///
    /// # Errors
    ///
    /// Refused, or failed on every retry.
    pub async fn acknowledge(
        &self,
        subscription: &str,
        ack_ids: &[String],
    ) -> Result<(), QueueError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        self.call(
            &format!("acknowledge on {subscription}"),
            &format!("{subscription}:acknowledge"),
            &json!({ "ackIds": ack_ids }),
        )
        .await
        .map(drop)
    }

    /// Publish one message to `topic`; its id.
    ///
    /// # Errors
    ///
    /// Refused, or failed on every retry.
    pub async fn publish(
        &self,
        topic: &str,
        data: &[u8],
        attributes: &BTreeMap<String, String>,
    ) -> Result<String, QueueError> {
        let what = format!("publish to {topic}");
        let mut message = json!({ "data": base64::engine::general_purpose::STANDARD.encode(data) });
        if !attributes.is_empty() {
            message["attributes"] = json!(attributes);
        }
        let answer = self
            .call(
                &what,
                &format!("{topic}:publish"),
                &json!({ "messages": [message] }),
            )
            .await?;
        answer["messageIds"][0]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| QueueError {
                what,
                message: format!("no message id in the answer: {answer}"),
                retryable: false,
            })
    }
}

impl Client {
    /// Whether an empty [`Client::pull`] came back at once (the emulator's), so the next one
    /// should wait a little.
    #[must_use]
    pub fn pulls_return_at_once(&self) -> bool {
        self.immediate
    }

    /// Create `subscription` on `topic` for the messages `filter` (Pub/Sub's filter syntax)
    /// lets through; unused for a day, Pub/Sub deletes it.
    ///
    /// # Errors
    ///
    /// Refused (it exists, no permission), or failed on every retry.
    pub async fn create_subscription(
        &self,
        subscription: &str,
        topic: &str,
        filter: &str,
    ) -> Result<(), QueueError> {
        let body = json!({
            "topic": topic,
            "filter": filter,
            "ackDeadlineSeconds": 60,
            "expirationPolicy": {"ttl": "86400s"},
        });
        self.send(
            reqwest::Method::PUT,
            &format!("create {subscription}"),
            subscription,
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Delete `subscription`.
    ///
    /// # Errors
    ///
    /// Refused, or failed on every retry.
    pub async fn delete_subscription(&self, subscription: &str) -> Result<(), QueueError> {
        self.send(
            reqwest::Method::DELETE,
            &format!("delete {subscription}"),
            subscription,
            None,
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let mut cfg = QueueConfig {
            subscription: "projects/p/subscriptions/scan-work".into(),
            results_topic: "projects/p/topics/scan-results".into(),
            ..QueueConfig::default()
        };
        assert!(cfg.validate().is_ok());
        cfg.subscription = "scan-work".into();
        assert!(cfg.validate().is_err());
        cfg.subscription = "projects/p/topics/scan-work".into();
        assert!(cfg.validate().is_err());
        cfg.subscription = "projects/p/subscriptions/9x".into();
        assert!(cfg.validate().is_err());
        cfg.subscription = String::new();
        cfg.ack_deadline_secs = 5;
        assert!(cfg.validate().is_err());
    }
}
