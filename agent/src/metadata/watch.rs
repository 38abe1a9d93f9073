//! Keep one metadata directory's current value (recursive JSON) in a `tokio::sync::watch`
//! channel, by long polling: each request hangs on the server until the directory's ETag
//! differs from the last one seen, or until `timeout_sec` passes (then the same ETag comes back
//! and nothing is sent). Failures wait with full jitter and are retried for as long as the
//! agent runs: a metadata server that is away never ends the watch.
//!
//! Not here: parsing the value (the caller knows what the directory holds).

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Client, MetadataConfig};

/// What a watched directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dir {
    /// Not read yet.
    Unknown,
    /// The server says it does not exist (404).
    Absent,
    /// Its recursive JSON.
    Value(String),
}

/// Watch `dir` (`instance/attributes/`) until `cancel` fires, sending each new value to `tx`.
pub async fn run(
    client: Client,
    cfg: MetadataConfig,
    dir: &'static str,
    tx: watch::Sender<Dir>,
    cancel: CancellationToken,
) {
    let backoff = cfg.backoff();
    let mut etag = String::from("0");
    let mut failures = 0u32;
    loop {
        let answer = tokio::select! {
            a = client.watch_once(dir, &etag, cfg.watch_timeout_secs) => a,
            () = cancel.cancelled() => return,
        };
        let pause = match answer {
            Ok(Some(v)) => {
                if failures > 0 {
                    tracing::info!("metadata watch of {dir} works again");
                }
                failures = 0;
                if v.etag != etag || v.etag.is_empty() {
                    etag = if v.etag.is_empty() {
                        "0".into()
                    } else {
                        v.etag
                    };
                    tx.send_if_modified(|cur| replace(cur, Dir::Value(v.body)));
                }
                // An empty ETag would make every request answer at once: pace those.
                (etag == "0").then(|| backoff.delay(1, None))
            }
            Ok(None) => {
                failures = 0;
                etag = "0".into();
                tx.send_if_modified(|cur| replace(cur, Dir::Absent));
                // A 404 cannot be waited on: ask again after a while.
                Some(std::time::Duration::from_secs(
                    cfg.watch_timeout_secs.min(10),
                ))
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(failures, "metadata watch of {dir}: {e}");
                }
                Some(backoff.delay(failures, None))
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return,
            }
        }
    }
}

fn replace(cur: &mut Dir, new: Dir) -> bool {
    if *cur == new {
        false
    } else {
        *cur = new;
        true
    }
}
