//! External scanners: Qualys `qscanner` in production, or any command, run over the mounted guest
//! root as configured by a [`Profile`] (`[scanner.profiles.NAME]`).
//!
//! [`profile`] holds the configuration, the built-in profiles ([`builtin_profiles`]: `qscanner`,
//! whose invocation is an assumption until Qualys confirms it, and the generic `command`) and the
//! argv/env template language; [`settings`] the `[scanner]` table, the lookup by name and the
//! pre-flight check of a chosen scanner. [`run()`] (module [`mod@run`]) runs one scanner once: it renders the
//! argv, refuses programs that lie on the scanned disk, supervises the process group (timeout,
//! cancellation, SIGTERM then SIGKILL to the whole group, always reaped), streams and caps its
//! output, classifies the exit ([`Class`]) and collects the output files ([`RunOutcome`]).
//!
//! Not here: the built-in inventory scanner ([`crate::inventory`]), mounting ([`crate::mount`]),
//! retrying a retryable run, and uploading results ([`crate::upload`]).

pub mod profile;
pub mod run;
pub mod settings;

use std::path::PathBuf;

use serde::Serialize;

pub use profile::{builtin_profiles, EnvSource, ExitCodes, Profile, REDACTED};
pub use run::{run, ScanContext, SAFE_PATH};
pub use settings::{ScannerConfig, INVENTORY};
/// The cancellation token [`run()`] takes, re-exported so that callers need no `tokio-util`.
pub use tokio_util::sync::CancellationToken;

/// Why a scanner could not be run. A scanner that ran and failed is not an error: it is a
/// [`RunOutcome`] with class [`Class::Fatal`] or [`Class::Retryable`].
#[derive(Debug, thiserror::Error)]
pub enum ScannerError {
    /// The profile is invalid (found by [`Profile::validate`]).
    #[error("invalid scanner profile: {0}")]
    Profile(String),
    /// The scan lacks something the profile needs (no mounted root, no output directory).
    #[error("cannot run the scanner: {0}")]
    Context(String),
    /// A secret could not be read. Never carries the secret itself.
    #[error("cannot read the secret for {name}: {reason}")]
    Secret {
        /// The environment variable or placeholder that needed it.
        name: String,
        /// Why (missing variable, unreadable file).
        reason: String,
    },
    /// The program is neither an executable file at its absolute path nor on the search path.
    #[error("scanner program '{program}' not found (searched {searched})")]
    NotFound {
        /// The program as configured.
        program: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The program, or a directory of the search path, lies on the scanned disk.
    #[error("refusing to run '{}': it lies on the scanned disk under '{}'", path.display(), mount.display())]
    OnScannedDisk {
        /// The program or directory, resolved.
        path: PathBuf,
        /// The mount point of the scanned disk.
        mount: PathBuf,
    },
    /// The process could not be started.
    #[error("cannot start '{}': {source}", program.display())]
    Spawn {
        /// The resolved program.
        program: PathBuf,
        /// The error from the OS.
        source: std::io::Error,
    },
    /// A local file operation failed (output or cache directory, waiting for the process).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The error from the OS.
        source: std::io::Error,
    },
}

impl ScannerError {
    /// A stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ScannerError::Profile(_) => "profile",
            ScannerError::Context(_) => "context",
            ScannerError::Secret { .. } => "secret",
            ScannerError::NotFound { .. } => "not_found",
            ScannerError::OnScannedDisk { .. } => "on_scanned_disk",
            ScannerError::Spawn { .. } => "spawn",
            ScannerError::Io { .. } => "io",
        }
    }
}

/// How a scanner run ended, for the job's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// A success exit code: the outputs are complete results.
    Success,
    /// A partial exit code: the outputs are results, but incomplete.
    Partial,
    /// A retryable exit code, a timeout or a cancellation: running again may succeed.
    Retryable,
    /// Anything else (another exit code, death by a signal): running again will not help.
    Fatal,
}

impl std::fmt::Display for Class {
    /// Plain words for people: `success`, `partial`, `retryable failure`, `failure`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Class::Success => "success",
            Class::Partial => "partial",
            Class::Retryable => "retryable failure",
            Class::Fatal => "failure",
        })
    }
}

/// Classify an ended run: a timeout or cancellation is retryable whatever the exit status
/// (the process died from our signal); a signal otherwise is fatal; an exit code is looked up in
/// `codes`, unknown codes being fatal.
pub fn classify(
    codes: &ExitCodes,
    exit_code: Option<i32>,
    timed_out: bool,
    cancelled: bool,
) -> Class {
    if timed_out || cancelled {
        return Class::Retryable;
    }
    match exit_code {
        Some(c) if codes.success.contains(&c) => Class::Success,
        Some(c) if codes.partial.contains(&c) => Class::Partial,
        Some(c) if codes.retryable.contains(&c) => Class::Retryable,
        _ => Class::Fatal,
    }
}

/// What one scanner run did; serialized into `report.json`. Holds no secret: the argv is the
/// displayed form and known secret values are replaced by [`REDACTED`] in the output tails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOutcome {
    /// The profile's name.
    pub scanner: String,
    /// The program that ran, resolved and canonical.
    pub program: PathBuf,
    /// The command line with secrets redacted.
    pub argv: Vec<String>,
    /// The verdict.
    pub class: Class,
    /// The exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, when one did.
    pub signal: Option<i32>,
    /// It ran out of time and was stopped.
    pub timed_out: bool,
    /// It was stopped through the cancellation token.
    pub cancelled: bool,
    /// Wall time from start to reaped, in milliseconds.
    pub elapsed_ms: u64,
    /// Result files, absolute, sorted.
    pub outputs: Vec<PathBuf>,
    /// Bytes the scanner wrote to stdout.
    pub stdout_bytes: u64,
    /// Bytes the scanner wrote to stderr.
    pub stderr_bytes: u64,
    /// The last `log_cap_bytes` of stdout (lossy UTF-8, secrets redacted).
    pub stdout_tail: String,
    /// The last `log_cap_bytes` of stderr (lossy UTF-8, secrets redacted).
    pub stderr_tail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_classes() {
        let codes = ExitCodes {
            success: vec![0],
            partial: vec![40],
            retryable: vec![75, 111],
        };
        struct Case {
            name: &'static str,
            exit_code: Option<i32>,
            timed_out: bool,
            cancelled: bool,
            want: Class,
        }
        let case = |name, exit_code, timed_out, cancelled, want| Case {
            name,
            exit_code,
            timed_out,
            cancelled,
            want,
        };
        let cases = [
            case("success", Some(0), false, false, Class::Success),
            case("partial", Some(40), false, false, Class::Partial),
            case("retryable", Some(75), false, false, Class::Retryable),
            case(
                "second retryable",
                Some(111),
                false,
                false,
                Class::Retryable,
            ),
            case("unknown code", Some(1), false, false, Class::Fatal),
            case("negative code", Some(-1), false, false, Class::Fatal),
            case("signal", None, false, false, Class::Fatal),
            case("timeout with signal", None, true, false, Class::Retryable),
            case(
                "timeout but exited 0",
                Some(0),
                true,
                false,
                Class::Retryable,
            ),
            case("cancelled", None, false, true, Class::Retryable),
        ];
        for c in cases {
            assert_eq!(
                classify(&codes, c.exit_code, c.timed_out, c.cancelled),
                c.want,
                "case {}",
                c.name
            );
        }
        assert_eq!(
            serde_json::to_string(&Class::Retryable).expect("json"),
            "\"retryable\""
        );
    }
}
