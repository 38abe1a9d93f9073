//! snapscan: scan the disks of Google Compute Engine VMs from a dedicated scanner VM, read-only.
//!
//! The library holds everything; the `snapscan` binary only parses the command line and maps the
//! final error to an exit code. Modules are named after what they talk to:
//! [`disk`] (block access, VM image formats, partition tables, superblock probes, read-only loop
//! devices, LVM),
//! [`fs`] (read-only file access behind [`fs::RootFs`]: native parsers or a kernel mount),
//! [`detect`] (OS detection over a `RootFs`), [`inspect`] (the disk report of `snapscan
//! inspect`), [`mount`] (read-only kernel mounts), [`inventory`] (the built-in scanner), [`redact`] (credentials out of any output), [`progress`] (progress lines on a terminal),
//! [`scanner`] (external scanners), [`upload`] (result sinks), [`retry`] (the retry policy of
//! the HTTP clients), [`scan`] (the pipeline of
//! `snapscan scan`), [`policy`] (the gate of `scan --policy`), [`metadata`] (the GCE metadata server), [`job`] (one assigned disk's state
//! machine and journal), [`agent`] (the daemon), [`compute`] (the Compute Engine API),
//! [`launch`] (the reference launcher), [`config`] (layered settings), [`logging`] and
//! [`cli`] (the command line).
#![deny(missing_docs)]

/// `eprintln!` with credentials redacted ([`redact`]): every message the commands print.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::redact::string(format_args!($($arg)*)))
    };
}

pub mod agent;
mod bytes;
pub mod cli;
pub mod compute;
pub mod config;
pub mod detect;
pub mod disk;
pub mod fs;
pub mod gapi;
pub mod inspect;
pub mod inventory;
pub mod job;
pub mod launch;
pub mod logging;
pub mod metadata;
pub mod mount;
pub mod policy;
pub mod progress;
pub mod queue;
pub mod redact;
pub mod registry;
pub mod retry;
pub mod scan;
pub mod scanner;
pub mod upload;

/// An error with its causes, on one line (`error sending request: connection reset`): what the
/// HTTP clients (metadata server, QFlow) log and report, credentials redacted (a request error
/// names its URL).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    redact::string(s)
}
