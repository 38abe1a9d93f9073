//! Progress for whoever launched the scan, in guest attributes (namespace `snapscan`): one key
//! per assignment id, plus `agent`.
//!
//! Compute Engine documents at most 10 guest-attribute queries a minute per VM, in bursts of at
//! most 3 a second, and may drop writes beyond that. So updates are coalesced: a key keeps only
//! its newest value, a value equal to the one last written is not sent again, and writes go out
//! oldest-first no faster than `max_writes_per_minute` in any sliding minute and
//! `max_writes_per_second` in any second. A `403` means guest attributes are disabled on this
//! VM: logged once, then asked again at most every five minutes, while scanning goes on.
//!
//! Not here: what the values say (the job and the agent build them).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metadata::Client;

/// How long guest attributes stay unasked after a `403`.
const DISABLED_PAUSE: Duration = Duration::from_secs(300);

/// The `[status]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Write guest attributes at all. Default true.
    pub enabled: bool,
    /// The namespace. Default `snapscan`.
    pub namespace: String,
    /// Writes allowed in any 60 seconds. Default 9 (the documented limit is 10 queries).
    pub max_writes_per_minute: u32,
    /// Writes allowed in any second. Default 3.
    pub max_writes_per_second: u32,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            enabled: true,
            namespace: "snapscan".into(),
            max_writes_per_minute: 9,
            max_writes_per_second: 3,
        }
    }
}

impl StatusConfig {
    /// Check the values.
    ///
    /// # Errors
    ///
    /// A namespace outside `[A-Za-z0-9_-]`, or a zero rate.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !super::assignments::valid_id(&self.namespace) {
            anyhow::bail!("namespace '{}' must be [A-Za-z0-9_-]", self.namespace);
        }
        if self.max_writes_per_minute == 0 || self.max_writes_per_second == 0 {
            anyhow::bail!("max_writes_per_minute and max_writes_per_second must be at least 1");
        }
        Ok(())
    }
}

enum Msg {
    Set(String, String),
    Flush(oneshot::Sender<()>),
}

/// The handle the agent and its jobs report through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Set(k, _) => write!(f, "Set({k})"),
            Msg::Flush(_) => write!(f, "Flush"),
        }
    }
}

impl Reporter {
    /// Start the writer task. With `enabled = false`, values are dropped.
    pub fn spawn(client: Client, cfg: StatusConfig) -> Reporter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Writer::new(client, cfg).run(rx));
        Reporter { tx }
    }

    /// Set `key` to `value` (written when the rate allows), credentials redacted.
    pub fn set(&self, key: &str, value: &serde_json::Value) {
        let text = crate::redact::string(value);
        let _ = self.tx.send(Msg::Set(key.to_owned(), text));
    }

    /// Wait until everything set so far is written, at most `within`.
    pub async fn flush(&self, within: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(within, wait).await;
        }
    }
}

struct Writer {
    client: Client,
    cfg: StatusConfig,
    /// Key → (value, order in which it became dirty).
    pending: BTreeMap<String, (String, u64)>,
    written: HashMap<String, String>,
    recent: VecDeque<Instant>,
    seq: u64,
    disabled_until: Option<Instant>,
    told_disabled: bool,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Writer {
    fn new(client: Client, cfg: StatusConfig) -> Writer {
        Writer {
            client,
            cfg,
            pending: BTreeMap::new(),
            written: HashMap::new(),
            recent: VecDeque::new(),
            seq: 0,
            disabled_until: None,
            told_disabled: false,
            waiters: Vec::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            if !self.cfg.enabled {
                self.pending.clear();
            }
            // A flush is over when nothing is left, or when writes are paused after a 403
            // (nothing gets written for minutes: waiting helps nobody).
            if self.pending.is_empty() || self.disabled_until.is_some() {
                for w in self.waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            let next = (!self.pending.is_empty()).then(|| self.next_slot(Instant::now()));
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Set(k, v)) => self.set(k, v),
                    Some(Msg::Flush(w)) => self.waiters.push(w),
                    None => return,
                },
                () = super::sleep_until(next), if next.is_some() => self.write_one().await,
            }
        }
    }

    fn set(&mut self, key: String, value: String) {
        if self.written.get(&key) == Some(&value) {
            self.pending.remove(&key);
            return;
        }
        self.seq = self.seq.saturating_add(1);
        let seq = self.seq;
        self.pending
            .entry(key)
            .and_modify(|e| e.0.clone_from(&value))
            .or_insert((value, seq));
    }

    /// The earliest time a write keeps within both rates (and after a `403` pause).
    fn next_slot(&mut self, now: Instant) -> Instant {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        let mut at = now;
        for (limit, window) in [
            (self.cfg.max_writes_per_minute, Duration::from_secs(60)),
            (self.cfg.max_writes_per_second, Duration::from_secs(1)),
        ] {
            // With `limit` writes in the window already, the next waits for the oldest of them
            // to leave it.
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            if let Some(t) = self
                .recent
                .len()
                .checked_sub(limit)
                .and_then(|i| self.recent.get(i))
            {
                at = at.max(*t + window);
            }
        }
        if let Some(until) = self.disabled_until {
            at = at.max(until);
        }
        at
    }

    async fn write_one(&mut self) {
        let Some(key) = self
            .pending
            .iter()
            .min_by_key(|(_, (_, seq))| *seq)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some((value, seq)) = self.pending.remove(&key) else {
            return;
        };
        self.recent.push_back(Instant::now());
        match self
            .client
            .put_guest_attribute(&self.cfg.namespace, &key, &value)
            .await
        {
            Ok(()) => {
                self.disabled_until = None;
                self.written.insert(key, value);
            }
            Err(e) => {
                if e.status() == Some(403) {
                    if !self.told_disabled {
                        tracing::warn!(
                            "guest attributes are disabled on this VM (set metadata \
                             enable-guest-attributes=TRUE to see progress); scanning goes on"
                        );
                        self.told_disabled = true;
                    }
                    self.disabled_until = Some(Instant::now() + DISABLED_PAUSE);
                } else {
                    tracing::debug!("guest attribute {key}: {e}");
                }
                // Keep the newest value, in its place in the queue.
                self.pending.entry(key).or_insert((value, seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(per_minute: u32, per_second: u32) -> Writer {
        let client = Client::new(&crate::metadata::MetadataConfig::default()).expect("client");
        Writer::new(
            client,
            StatusConfig {
                max_writes_per_minute: per_minute,
                max_writes_per_second: per_second,
                ..StatusConfig::default()
            },
        )
    }

    #[test]
    fn slots_keep_both_rates() {
        let mut w = writer(9, 3);
        let t0 = Instant::now();
        // Simulate writes whenever allowed, for three minutes: never more than 9 in any 60 s
        // and 3 in any second.
        let mut times = Vec::new();
        let mut now = t0;
        loop {
            let at = w.next_slot(now);
            if at >= t0 + Duration::from_secs(180) {
                break;
            }
            w.recent.push_back(at);
            times.push(at);
            now = at;
        }
        for (i, t) in times.iter().enumerate() {
            let in_minute = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(60))
                .count();
            let in_second = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_minute <= 9, "{in_minute} writes in a minute");
            assert!(in_second <= 3, "{in_second} writes in a second");
        }
        assert_eq!(times.len(), 27, "three minutes of full rate");
    }

    #[test]
    fn coalescing_keeps_order_and_newest_value() {
        let mut w = writer(9, 3);
        w.set("a".into(), "1".into());
        w.set("b".into(), "1".into());
        w.set("a".into(), "2".into());
        assert_eq!(w.pending.get("a"), Some(&("2".to_owned(), 1)));
        w.written.insert("c".into(), "x".into());
        w.set("c".into(), "x".into());
        assert!(
            !w.pending.contains_key("c"),
            "unchanged values are not written again"
        );
    }
}
