//! The work queue of a fleet: scan requests pulled from a Pub/Sub subscription
//! (`[queue] subscription`), one assignment object per message.
//!
//! The worker pulls only when a job slot is free (at most as many messages as free slots),
//! hands each message to the agent ([`Delivery`]), and holds the lease of every message whose
//! job runs, extending it to `ack_deadline_secs` every third of that. The agent says how each
//! ends ([`Settle`]): a finished job (done, or failed for good) publishes its result to
//! `[queue] results_topic` and then acknowledges its messages, so a result is acknowledged by
//! the receiver before its request leaves the queue; a job the agent stops gives its messages
//! back at once (`modifyAckDeadline 0`), for another instance. When the agent is gone (its
//! command channel closed) whatever is still held is given back.
//!
//! Not here: parsing a request into an assignment and running its job ([`super`]), the HTTP
//! ([`crate::queue`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::assignments::{self, Assignment};
use crate::job::{self, Journal};
use crate::queue::{Client, QueueConfig, Received};

/// A message pulled, for the agent.
pub type Delivery = Received;

/// What to do with a job's messages.
#[derive(Debug)]
pub enum Settle {
    /// Its job runs: keep the lease of `ack_id` until the job ends.
    Hold {
        /// The job.
        job: String,
        /// The message delivered for it (a duplicate delivery adds one more).
        ack_id: String,
    },
    /// It ended: publish `result` (if there is a results topic), then acknowledge.
    Finish {
        /// The job (its held messages), if one was made.
        job: Option<String>,
        /// A message of no job (a request that could not be read).
        ack_id: Option<String>,
        /// The result message.
        result: serde_json::Value,
    },
    /// The agent stopped it, or takes no more work: give its messages back.
    GiveBack {
        /// The job (its held messages).
        job: Option<String>,
        /// A message the agent did not take.
        ack_id: Option<String>,
    },
}

/// The worker: pulls while `free` (job slots) is above zero and `stop` has not fired, until
/// `settle` closes.
pub async fn run(
    client: Arc<Client>,
    cfg: QueueConfig,
    mut free: watch::Receiver<usize>,
    deliveries: mpsc::UnboundedSender<Delivery>,
    mut settle: mpsc::UnboundedReceiver<Settle>,
    stop: CancellationToken,
) {
    let sub = cfg.subscription.clone();
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut extend = tokio::time::interval(Duration::from_secs((cfg.ack_deadline_secs / 3).max(1)));
    let mut pulling: Option<tokio::task::JoinHandle<Option<Vec<Received>>>> = None;
    let mut pause = Duration::ZERO;
    let mut pull_failures = 0u32;
    loop {
        let want = *free.borrow();
        if pulling.is_none() && want > 0 && !stop.is_cancelled() {
            let client = client.clone();
            let sub = sub.clone();
            pulling = Some(tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                match client.pull(&sub, want).await {
                    Ok(got) => Some(got),
                    Err(e) => {
                        tracing::warn!("{e}");
                        None
                    }
                }
            }));
        }
        tokio::select! {
            cmd = settle.recv() => match cmd {
                Some(cmd) => on_settle(&client, &cfg, &mut held, cmd).await,
                None => break,
            },
            got = join(&mut pulling) => {
                pulling = None;
                pull_failures = if got.is_none() { pull_failures.saturating_add(1) } else { 0 };
                let got = got.unwrap_or_default();
                pause = if pull_failures > 0 {
                    pull_pause(pull_failures)
                } else if got.is_empty() && client.pulls_return_at_once() {
                    EMPTY_PULL_PAUSE
                } else {
                    Duration::ZERO
                };
                for m in got {
                    tracing::info!(message_id = m.message_id, "request pulled from {sub}");
                    if deliveries.send(m).is_err() {
                        break;
                    }
                }
            }
            _ = extend.tick() => {
                let ids: Vec<String> = held.values().flatten().cloned().collect();
                if let Err(e) = client.modify_ack_deadline(&sub, &ids, cfg.ack_deadline_secs).await {
                    tracing::warn!("cannot extend the leases of {} message(s): {e}", ids.len());
                }
            }
            changed = free.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = stop.cancelled(), if pulling.is_some() => {
                // A pull in flight is dropped; what it would have brought returns to the
                // queue when its lease runs out.
                if let Some(p) = pulling.take() {
                    p.abort();
                }
            }
        }
    }
    if let Some(p) = pulling.take() {
        p.abort();
    }
    let ids: Vec<String> = held.into_values().flatten().collect();
    if !ids.is_empty() {
        tracing::info!("giving {} message(s) back to {sub}", ids.len());
        if let Err(e) = client.modify_ack_deadline(&sub, &ids, 0).await {
            tracing::warn!("cannot give messages back (they return when their lease ends): {e}");
        }
    }
}

/// Failed pulls make the next wait a little longer each: at most 5 s.
fn pull_pause(failures: u32) -> Duration {
    Duration::from_millis(u64::from(failures.min(10)) * 500)
}

/// The wait after an empty pull that came back at once (the emulator's).
const EMPTY_PULL_PAUSE: Duration = Duration::from_millis(250);

/// The pull in flight's messages (`None`: it failed); never for no pull.
async fn join(
    pulling: &mut Option<tokio::task::JoinHandle<Option<Vec<Received>>>>,
) -> Option<Vec<Received>> {
    match pulling {
        Some(p) => p.await.ok().flatten(),
        None => std::future::pending().await,
    }
}

async fn on_settle(
    client: &Client,
    cfg: &QueueConfig,
    held: &mut BTreeMap<String, Vec<String>>,
    cmd: Settle,
) {
    let sub = &cfg.subscription;
    match cmd {
        Settle::Hold { job, ack_id } => held.entry(job).or_default().push(ack_id),
        Settle::Finish {
            job,
            ack_id,
            result,
        } => {
            let ids = take(held, job.as_deref(), ack_id);
            if !cfg.results_topic.is_empty() {
                let data = result.to_string();
                let attrs = result["request_id"]
                    .as_str()
                    .map(|id| BTreeMap::from([("request_id".to_owned(), id.to_owned())]))
                    .unwrap_or_default();
                if let Err(e) = client
                    .publish(&cfg.results_topic, data.as_bytes(), &attrs)
                    .await
                {
                    // The results themselves are stored; the request is not worked again for a
                    // lost notice.
                    tracing::error!(
                        "cannot publish the result of {}: {e}",
                        job.as_deref().unwrap_or("a bad request")
                    );
                }
            }
            if let Err(e) = client.acknowledge(sub, &ids).await {
                tracing::warn!("cannot acknowledge (the request may be delivered again, and is then answered from the journal): {e}");
            }
        }
        Settle::GiveBack { job, ack_id } => {
            let ids = take(held, job.as_deref(), ack_id);
            match client.modify_ack_deadline(sub, &ids, 0).await {
                Ok(()) => tracing::info!("gave {} message(s) back to {sub}", ids.len()),
                Err(e) => tracing::warn!(
                    "cannot give {} message(s) back (they return when their lease ends): {e}",
                    ids.len()
                ),
            }
        }
    }
}

/// The messages held for `job` (no longer held), and `ack_id`.
fn take(
    held: &mut BTreeMap<String, Vec<String>>,
    job: Option<&str>,
    ack_id: Option<String>,
) -> Vec<String> {
    let mut ids = job.and_then(|j| held.remove(j)).unwrap_or_default();
    ids.extend(ack_id);
    ids
}

/// The assignment a message asks for: its data is one assignment object with a `source` (a
/// fleet VM has no disk attached for it); without an `id`, the message's `request_id`
/// attribute, else `m-<message id>`, names the job (the same on every delivery).
///
/// # Errors
///
/// Why the request cannot be worked, for its failure result.
pub fn parse_request(
    m: &Received,
    check_scanner: &dyn Fn(&str) -> Result<(), String>,
) -> Result<Assignment, String> {
    let mut v: serde_json::Value = serde_json::from_slice(&m.data)
        .map_err(|e| format!("the message's data is not JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or("the message's data is not a JSON object (one assignment)")?;
    if !obj.contains_key("id") {
        obj.insert("id".into(), request_id(m).into());
    }
    if !obj.contains_key("source") {
        return Err("a queued request needs a source (snapshot, image or disk)".into());
    }
    let text = serde_json::Value::Array(vec![v]).to_string();
    let mut parsed = assignments::parse(&text, check_scanner);
    let prefix = format!("{}[0]: ", assignments::ATTRIBUTE);
    match (parsed.valid.pop(), parsed.errors.first()) {
        (Some(a), None) => Ok(a),
        (_, Some(e)) => Err(e.strip_prefix(&prefix).unwrap_or(e).to_owned()),
        (None, None) => Err("no assignment in the message".into()),
    }
}

/// The message's `request_id` attribute, else `m-<message id>` (the same on every delivery).
fn request_id(m: &Received) -> String {
    m.attributes
        .get("request_id")
        .cloned()
        .unwrap_or_else(|| format!("m-{}", m.message_id))
}

/// The result message of a job: its status (as in its guest attribute), the request id and
/// where each result file was stored (the receiver's receipts).
pub fn result_json(j: &Journal, instance: &str) -> serde_json::Value {
    let mut v = job::status_json(j);
    v["request_id"] = j.id().into();
    v["scanner_instance"] = instance.into();
    v["stored"] = serde_json::json!(j.acknowledged);
    v
}

/// The result message of a request that could not be read.
pub fn refusal_json(m: &Received, error: &str, instance: &str) -> serde_json::Value {
    serde_json::json!({
        "request_id": request_id(m),
        "state": "failed",
        "error": format!("bad request: {error}"),
        "scanner_instance": instance,
    })
}
