//! Where log lines go. The one-shot commands write readable lines to stderr, filtered by
//! `SNAPSCAN_LOG` (default `warn`). The agent writes to the journal (tracing-journald) when
//! systemd connected its stderr to it (`JOURNAL_STREAM` names stderr's device and inode), with
//! span and event fields as journal fields (`JOB_ID`, `DEVICE`, `SNAPSHOT`, `STATE`); else to
//! stderr. Its filter is `RUST_LOG` when set, else `[agent] log`.
//!
//! Lines on stderr pass through [`crate::redact`] (the messages themselves are redacted where
//! they are made, which also covers the journal) and are coloured only when stderr is a
//! terminal and `NO_COLOR` is not set.
//!
//! Not here: what is logged.

use std::io::IsTerminal as _;
use std::os::fd::AsRawFd as _;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Logging of the one-shot commands.
pub fn init_cli() {
    // gcp_auth warns about every credential source it tries and passes over; `launch` says
    // what it found or why none worked.
    let filter = EnvFilter::try_from_env("SNAPSCAN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,gcp_auth=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redacted_stderr)
        .with_ansi(colour())
        .try_init();
}

/// Logging of the agent; `default_filter` is the `[agent] log` setting.
pub fn init_agent(default_filter: &str) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("snapscan".into());
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("snapscan: cannot log to the journal ({e}); using stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redacted_stderr)
        .with_ansi(colour())
        .try_init();
}

fn redacted_stderr() -> crate::redact::Writer<std::io::Stderr> {
    crate::redact::Writer(std::io::stderr())
}

/// Colour on a terminal, unless `NO_COLOR` is set (to anything but the empty string).
fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// `JOURNAL_STREAM=DEV:INODE` matches stderr: systemd's journal is reading it.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}
