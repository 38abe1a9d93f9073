//! Containment for parsers of untrusted disks: every native parse of a volume runs here.
//!
//! [`run`] executes a closure on its own thread under `catch_unwind` and waits at most a timeout.
//! A panic becomes [`FsError::Panic`]; a timeout becomes [`FsError::Timeout`] and cancels the
//! volume's read [`Budget`], so a runaway parser fails at its next read and its thread ends. The
//! closure must create its filesystem object itself (`ext4_view::Ext4` holds an `Rc` and cannot
//! cross threads), which is why the whole "open, detect, report" sequence goes inside.
//!
//! It cannot stop a parser that loops forever without reading: such a thread is abandoned (and
//! reported as a timeout); the process stays healthy and its caller moves on.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Once};
use std::thread;
use std::time::{Duration, Instant};

use super::FsError;
use crate::disk::reader::Budget;

/// Name of the threads parsers run on; their panics are reported as errors, not printed.
const THREAD_NAME: &str = "snapscan-parser";

/// Run `f` on a parser thread with panic capture and a timeout; see the module docs.
pub fn run<T, F>(budget: &Budget, timeout: Duration, f: F) -> Result<T, FsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, FsError> + Send + 'static,
{
    quiet_parser_panics();
    let (tx, rx) = mpsc::sync_channel(1);
    let started = Instant::now();
    thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(f))
                .unwrap_or_else(|payload| Err(FsError::Panic(panic_message(payload.as_ref()))));
            // The receiver is gone after a timeout; nothing to report to then.
            let _ = tx.send(result);
        })
        .map_err(|e| FsError::Io(format!("cannot start a parser thread: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            budget.cancel();
            Err(FsError::Timeout(started.elapsed().as_millis()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(FsError::Panic(
            "parser thread ended without a result".into(),
        )),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Keep the default panic hook from printing backtraces for contained parser panics: they are
/// reported once, as the volume's error.
fn quiet_parser_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if thread::current().name() != Some(THREAD_NAME) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_panics_and_timeouts() {
        let budget = Budget::new(u64::MAX);
        assert_eq!(run(&budget, Duration::from_secs(5), || Ok(7)), Ok(7));
        assert_eq!(
            run::<(), _>(&budget, Duration::from_secs(5), || Err(FsError::Corrupt(
                "x".into()
            ))),
            Err(FsError::Corrupt("x".into()))
        );
        let got = run::<(), _>(&budget, Duration::from_secs(5), || panic!("boom {}", 42));
        assert_eq!(got, Err(FsError::Panic("boom 42".into())));
        assert!(!budget.is_cancelled());

        let watched = budget.clone();
        let got = run::<(), _>(&budget, Duration::from_millis(50), move || {
            while !watched.is_cancelled() {
                thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        assert!(
            matches!(got, Err(FsError::Timeout(ms)) if ms >= 50),
            "{got:?}"
        );
        assert!(
            budget.is_cancelled(),
            "a timeout cancels the volume's reads"
        );
    }
}
