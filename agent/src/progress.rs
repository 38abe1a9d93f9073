//! Progress of long work on a terminal: a spinner line on stderr with what is being done, how
//! long it has taken and, while results are uploaded, how many bytes went out. It appears only
//! when stderr is a terminal and the work takes more than [`QUIET_FOR`]; logs to files and
//! pipes get nothing from here.
//!
//! The uploaders count the result bytes they send in [`SENT_BYTES`] (cheap, one atomic add a
//! chunk); the one-shot commands show it. Not here: the agent's progress, which goes to guest
//! attributes and the journal.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Result bytes sent by this process so far (retries count again).
pub static SENT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Work shorter than this shows no progress at all.
pub const QUIET_FOR: Duration = Duration::from_secs(2);

const TICK: Duration = Duration::from_millis(150);

/// Count `n` result bytes as sent.
pub fn sent(n: usize) {
    SENT_BYTES.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// A progress line for one piece of work; drawn only on a terminal, after [`QUIET_FOR`].
#[derive(Clone)]
pub struct Progress {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    bar: ProgressBar,
    message: Mutex<String>,
    sent_at_start: u64,
}

impl Progress {
    /// Start showing `what` (when stderr is a terminal); needs a tokio runtime.
    #[must_use]
    pub fn start(what: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { shared: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        let shared = Arc::new(Shared {
            bar,
            message: Mutex::new(what.to_owned()),
            sent_at_start: SENT_BYTES.load(Ordering::Relaxed),
        });
        let ticker = Arc::downgrade(&shared);
        tokio::spawn(async move {
            tokio::time::sleep(QUIET_FOR).await;
            let mut shown = false;
            while let Some(s) = ticker.upgrade() {
                if !shown {
                    s.bar.set_draw_target(ProgressDrawTarget::stderr());
                    shown = true;
                }
                s.bar.set_message(s.line());
                s.bar.tick();
                drop(s);
                tokio::time::sleep(TICK).await;
            }
        });
        Progress {
            shared: Some(shared),
        }
    }

    /// Say what is being done now.
    pub fn set(&self, what: impl Into<String>) {
        if let Some(s) = &self.shared {
            if let Ok(mut m) = s.message.lock() {
                *m = what.into();
            }
        }
    }

    /// Remove the line (also when dropped).
    pub fn finish(&self) {
        if let Some(s) = &self.shared {
            s.bar.finish_and_clear();
        }
    }
}

impl Shared {
    fn line(&self) -> String {
        let what = self.message.lock().map(|m| m.clone()).unwrap_or_default();
        let sent = SENT_BYTES
            .load(Ordering::Relaxed)
            .saturating_sub(self.sent_at_start);
        if sent == 0 {
            what
        } else {
            format!("{what} ({} sent)", indicatif::HumanBytes(sent))
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
