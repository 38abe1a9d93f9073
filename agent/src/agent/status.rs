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
//! The limits are the VM's, not the process's: the times of the last minute's writes, and a digest
//! of the value last written to each key, are kept in the state directory ([`HISTORY_FILE`]), so
//! an agent restarted after a crash goes on from the same window and does not send again what is
//! already there. A write counts from the moment its answer came (the latest the server can have
//! seen it), so network delays cannot squeeze two windows' writes into one. Its sending is
//! recorded before it goes out: a write whose answer a killed process never saw counts as made
//! at the restart (and its value as not written). A history file that cannot be read counts as a
//! full window and nothing written.
//!
//! Not here: what the values say (the job and the agent build them).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metadata::Client;

/// How long guest attributes stay unasked after a `403`.
const DISABLED_PAUSE: Duration = Duration::from_secs(300);
/// The longer of the two rate windows: writes older than this no longer count.
const MINUTE: Duration = Duration::from_secs(60);
/// The recent write times and what was written, in the state directory.
pub const HISTORY_FILE: &str = "guest-attributes.json";

/// What [`HISTORY_FILE`] holds (times in Unix milliseconds).
#[derive(Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct History {
    /// When each write of the last minute was answered (or given up on), oldest first.
    answered_ms: Vec<u64>,
    /// When a write was sent whose answer is not recorded yet.
    in_flight_ms: Option<u64>,
    /// Key → [`digest`] of the value last written to it.
    written: BTreeMap<String, String>,
}

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
    /// Start the writer task, going on from the write times kept in `state_dir`. With
    /// `enabled = false`, values are dropped.
    pub fn spawn(client: Client, cfg: StatusConfig, state_dir: &Path) -> Reporter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Writer::new(client, cfg, Some(state_dir.join(HISTORY_FILE))).run(rx));
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
    /// Key → [`digest`] of the value last written to it.
    written: BTreeMap<String, String>,
    /// When the writes of the last minute were answered, oldest first.
    recent: VecDeque<Instant>,
    /// Where `recent` and `written` are kept across restarts; `None`: in memory only.
    history: Option<PathBuf>,
    /// Whether keeping the history failed once already (said once).
    told_history: bool,
    seq: u64,
    disabled_until: Option<Instant>,
    told_disabled: bool,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Writer {
    fn new(client: Client, cfg: StatusConfig, history: Option<PathBuf>) -> Writer {
        let (recent, written) = match &history {
            Some(path) if cfg.enabled => load_history(path, &cfg),
            _ => (VecDeque::new(), BTreeMap::new()),
        };
        Writer {
            client,
            cfg,
            pending: BTreeMap::new(),
            written,
            recent,
            history,
            told_history: false,
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
        if self.written.get(&key) == Some(&digest(&value)) {
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
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        let mut at = now;
        for (limit, window) in [
            (self.cfg.max_writes_per_minute, MINUTE),
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
        self.save_history(Some(SystemTime::now())).await;
        let result = self
            .client
            .put_guest_attribute(&self.cfg.namespace, &key, &value)
            .await;
        self.recent.push_back(Instant::now());
        match result {
            Ok(()) => {
                self.disabled_until = None;
                self.written.insert(key, digest(&value));
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
        self.save_history(None).await;
    }

    /// Keep `recent`, `written` and a write being sent at `in_flight` in the history file.
    async fn save_history(&mut self, in_flight: Option<SystemTime>) {
        let Some(path) = self.history.clone() else {
            return;
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let history = History {
            answered_ms: self
                .recent
                .iter()
                .map(|t| now.saturating_duration_since(*t))
                .filter(|age| *age < MINUTE)
                .filter_map(|age| wall.checked_sub(age))
                .map(unix_ms)
                .collect(),
            in_flight_ms: in_flight.map(unix_ms),
            written: self.written.clone(),
        };
        let saved = match serde_json::to_vec(&history) {
            Ok(bytes) => {
                let target = path.clone();
                tokio::task::spawn_blocking(move || crate::scan::write_atomic(&target, &bytes))
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")))
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = saved {
            if !self.told_history {
                tracing::warn!(
                    "cannot keep the guest-attribute write times ({e:#}): after a restart the \
                     agent may exceed the VM's write limit"
                );
                self.told_history = true;
            }
        }
    }
}

/// Unix milliseconds of `t` (0 before 1970).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A digest of a written value (SHA-256, hex), to recognise it after a restart.
fn digest(value: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
}

/// From `path`: the answer times of the last minute, as instants of this process, oldest first,
/// and the digests of what was written. A time in the future (the clock was set back) and a write
/// in flight count as now; a file that cannot be read counts as a full window
/// (`max_writes_per_minute` writes now) and nothing written; no file as neither.
fn load_history(path: &Path, cfg: &StatusConfig) -> (VecDeque<Instant>, BTreeMap<String, String>) {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let history = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => History::default(),
        read => match read
            .map_err(anyhow::Error::from)
            .and_then(|b| serde_json::from_slice::<History>(&b).map_err(Into::into))
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(
                    "cannot read '{}' ({e:#}): guest attributes wait a minute",
                    path.display()
                );
                let full = usize::try_from(cfg.max_writes_per_minute).unwrap_or(usize::MAX);
                return (
                    std::iter::repeat_n(now, full.min(1024)).collect(),
                    BTreeMap::new(),
                );
            }
        },
    };
    let mut recent: Vec<Instant> = history
        .answered_ms
        .iter()
        .filter_map(|ms| {
            let at = UNIX_EPOCH.checked_add(Duration::from_millis(*ms))?;
            let age = wall.duration_since(at).unwrap_or(Duration::ZERO);
            (age < MINUTE).then(|| now.checked_sub(age).unwrap_or(now))
        })
        .chain(history.in_flight_ms.map(|_| now))
        .collect();
    recent.sort();
    (recent.into(), history.written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(per_minute: u32, per_second: u32) -> Writer {
        kept_writer(per_minute, per_second, None)
    }

    fn kept_writer(per_minute: u32, per_second: u32, history: Option<PathBuf>) -> Writer {
        let client = Client::new(&crate::metadata::MetadataConfig::default()).expect("client");
        Writer::new(
            client,
            StatusConfig {
                max_writes_per_minute: per_minute,
                max_writes_per_second: per_second,
                ..StatusConfig::default()
            },
            history,
        )
    }

    /// A history file in a new directory holding `history`.
    fn history_file(history: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(HISTORY_FILE);
        std::fs::write(&path, history).expect("history");
        (dir, path)
    }

    fn ms_ago(secs: u64) -> u64 {
        unix_ms(SystemTime::now() - Duration::from_secs(secs))
    }

    /// How long from now the next write waits, in whole seconds.
    fn wait_secs(w: &mut Writer) -> u64 {
        let now = Instant::now();
        w.next_slot(now).duration_since(now).as_secs_f64().round() as u64
    }

    #[test]
    fn a_restarted_writer_goes_on_from_the_kept_window() {
        // Nine answers 10 s ago, one 70 s ago: the minute is full for another 50 s.
        let mut answered: Vec<u64> = vec![ms_ago(70)];
        answered.extend(std::iter::repeat_n(ms_ago(10), 9));
        let (_dir, path) = history_file(&format!("{{\"answered_ms\":{answered:?}}}"));
        let mut w = kept_writer(9, 3, Some(path));
        assert_eq!(w.recent.len(), 9, "the old write no longer counts");
        assert_eq!(wait_secs(&mut w), 50);
    }

    #[test]
    fn a_write_in_flight_or_in_the_future_counts_as_now_and_a_bad_file_as_a_full_minute() {
        let (_d1, path) = history_file(&format!(
            "{{\"answered_ms\":[{}],\"in_flight_ms\":{}}}",
            unix_ms(SystemTime::now() + Duration::from_secs(3600)),
            ms_ago(30)
        ));
        let mut w = kept_writer(2, 3, Some(path));
        assert_eq!(wait_secs(&mut w), 60);
        for bad in ["", "{\"answered_ms\": \"x\"}", "not json"] {
            let (_d, path) = history_file(bad);
            let mut w = kept_writer(9, 3, Some(path));
            assert_eq!(wait_secs(&mut w), 60, "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = kept_writer(9, 3, Some(dir.path().join(HISTORY_FILE)));
        assert_eq!(wait_secs(&mut w), 0, "no file: a first start");
    }

    #[tokio::test]
    async fn the_history_is_kept_with_the_write_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(HISTORY_FILE);
        let mut w = kept_writer(9, 3, Some(path.clone()));
        let now = Instant::now();
        w.recent.extend([
            now - Duration::from_secs(61),
            now - Duration::from_secs(5),
            now,
        ]);
        w.save_history(Some(SystemTime::now())).await;
        let kept: History =
            serde_json::from_slice(&std::fs::read(&path).expect("file")).expect("history");
        assert_eq!(kept.answered_ms.len(), 2, "only the last minute");
        assert!(kept.in_flight_ms.is_some());
        // The next process sees the two answers of the last minute and the write in flight.
        let mut next = kept_writer(3, 3, Some(path.clone()));
        assert_eq!(next.recent.len(), 3);
        assert_eq!(wait_secs(&mut next), 55);
        w.written.insert("job-a".into(), digest("done"));
        w.save_history(None).await;
        let mut next = kept_writer(3, 3, Some(path));
        assert_eq!(next.recent.len(), 2);
        assert_eq!(wait_secs(&mut next), 0);
        // What is there already is not sent again; a changed value is.
        next.set("job-a".into(), "done".into());
        assert!(next.pending.is_empty());
        next.set("job-a".into(), "failed".into());
        assert!(next.pending.contains_key("job-a"));
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
        w.written.insert("c".into(), digest("x"));
        w.set("c".into(), "x".into());
        assert!(
            !w.pending.contains_key("c"),
            "unchanged values are not written again"
        );
    }
}
