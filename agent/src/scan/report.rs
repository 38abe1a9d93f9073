//! `report.json`: what one scan did and found, and the short summary `snapscan scan` prints.
//!
//! Field names are a stable interface (the README documents them); new fields may be added,
//! existing ones keep their meaning. Nothing here does any work: the pipeline in [`super`]
//! fills the report in.

use crate::policy::Verdict;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::detect::OsInfo;
use crate::inspect::{human_size, DiskReport};
use crate::scanner::RunOutcome;
use crate::upload::Outcome;

/// The value of [`ScanReport::format`].
pub const FORMAT: &str = "snapscan-report/1";

/// How a scan ended, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Scanned, results written and acknowledged by the sink.
    Success,
    /// Results written, but incomplete: the scanner said partial, or a volume could not be read.
    Partial,
    /// Results written locally, but the sink did not acknowledge them (they are kept).
    UploadFailed,
    /// No result: the disk could not be opened, no OS was found, or the scanner failed.
    Failed,
    /// Stopped by SIGINT or SIGTERM.
    Interrupted,
}

/// Everything `report.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// The snapscan version that wrote it.
    pub snapscan_version: &'static str,
    /// A random id of this scan (UUID).
    pub scan_id: String,
    /// What was scanned, as the caller named it.
    pub subject: Subject,
    /// Start of the scan, RFC 3339 UTC.
    pub started_at: String,
    /// The outcome.
    pub status: Status,
    /// Why the scan failed (`status` failed or interrupted).
    pub error: Option<String>,
    /// Problems that did not stop the scan.
    pub warnings: Vec<String>,
    /// Partition table and volumes, as `snapscan inspect --json` prints them.
    pub disk: Option<DiskReport>,
    /// How each volume was read, in the order of `disk.volumes`.
    pub access: Vec<VolumeAccess>,
    /// The OS found (its `volume` is the root volume's index), `null` if none.
    pub os: Option<OsInfo>,
    /// The scanner run.
    pub scanner: ScannerReport,
    /// The result files written to the output directory (`report.json` itself excluded).
    pub outputs: Vec<OutputFile>,
    /// The metadata fields sent with every result file (`snapscan upload` of a kept scan sends
    /// them again, so the receiver sees the same upload).
    pub upload_fields: BTreeMap<String, String>,
    /// Where the results were sent (`QFlow at URL`, `local directory 'DIR'`); `null` when no
    /// upload is configured and the results are only in the output directory.
    pub sink: Option<String>,
    /// One entry per result file handed to the sink, `report.json` excluded (it is written
    /// after them, and stays local).
    pub uploads: Vec<UploadRecord>,
    /// The verdict of `--policy`, `null` without one (or when the inventory did not run).
    pub policy: Option<Verdict>,
    /// How long each phase took.
    pub timings_ms: Timings,
    /// `report.json` was written to the output directory (not part of it).
    #[serde(skip)]
    pub written: bool,
}

/// What was scanned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Subject {
    /// The disk image or block device given.
    pub path: String,
    /// The snapshot the disk was made from, if the caller said.
    pub snapshot: Option<String>,
    /// The instance the snapshot belongs to, if the caller said.
    pub instance_id: Option<String>,
    /// The disk's device name on the scanner VM, if the caller said.
    pub device_name: Option<String>,
    /// The agent's job id, if run by the agent.
    pub job_id: Option<String>,
}

/// How the files of one volume were reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A read-only kernel mount.
    Kernel,
    /// snapscan's own read-only parser (ext2/3/4, NTFS).
    Native,
    /// Not at all (swap, encrypted, unknown, or both ways failed).
    None,
}

/// One volume's access, `report.json` `access[]`.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeAccess {
    /// Index in `disk.volumes`.
    pub volume: usize,
    /// How it was read.
    pub method: Method,
    /// The mount options used, for a kernel mount.
    pub mount_options: Option<String>,
    /// Where it sat in the guest's tree during the scan (`/`, `/usr`...), for the OS root and
    /// the volumes mounted under it from its `/etc/fstab`.
    pub guest_path: Option<String>,
    /// Why the kernel was not used, when it was not.
    pub fallback_reason: Option<String>,
}

/// The scanner's part of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScannerReport {
    /// `inventory` or the profile name.
    pub name: String,
    /// `builtin` or `external`.
    pub kind: &'static str,
    /// Packages listed by the built-in inventory.
    pub packages: Option<usize>,
    /// The package databases the built-in inventory read.
    pub sources: Vec<String>,
    /// The built-in inventory's warnings (a damaged database...).
    pub warnings: Vec<String>,
    /// An external scanner's run: exit code, class, output tails.
    pub run: Option<RunOutcome>,
    /// Why the scanner produced nothing.
    pub error: Option<String>,
}

/// One result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// File name in the output directory.
    pub name: String,
    /// Size.
    pub size_bytes: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

/// One file handed to the sink.
#[derive(Debug, Clone, Serialize)]
pub struct UploadRecord {
    /// File name in the output directory.
    pub file: String,
    /// What the sink did with it.
    pub outcome: Outcome,
}

/// Phase durations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Opening the disk: loop device, partition table, volumes, probes.
    pub open: u64,
    /// Kernel mounts.
    pub mount: u64,
    /// OS detection over the mounted volumes.
    pub detect: u64,
    /// The scanner.
    pub scan: u64,
    /// Uploads.
    pub upload: u64,
    /// The whole scan.
    pub total: u64,
}

/// Milliseconds since `t`, saturating.
pub fn ms_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The summary `snapscan scan` prints without `--json`: plain words, every file named by its
/// path, and what happened to the results (sent where, or kept where).
pub fn render_summary(r: &ScanReport, output_dir: &std::path::Path) -> String {
    let mut out = String::new();
    let status = match r.status {
        Status::Success => "done",
        Status::Partial => "done, results incomplete",
        Status::UploadFailed => "upload failed (results kept locally)",
        Status::Failed => "failed",
        Status::Interrupted => "interrupted",
    };
    let _ = writeln!(out, "{}: {status}", r.subject.path);
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error: {e}");
    }
    if let Some(d) = &r.disk {
        let _ = writeln!(
            out,
            "  disk: {}, {} volume(s)",
            human_size(d.size_bytes),
            d.volumes.len()
        );
    }
    let root = r.os.as_ref().and_then(|os| os.volume);
    for a in &r.access {
        let damaged = r
            .disk
            .as_ref()
            .and_then(|d| d.volumes.get(a.volume))
            .is_some_and(|v| v.error.is_some());
        let how = match a.method {
            Method::Kernel => "kernel mount",
            Method::Native => "native parser",
            // Not needed: another volume holds the OS, and this one is not part of its tree.
            Method::None if root.is_some_and(|i| i != a.volume) && !damaged => "skipped",
            Method::None => "not read",
        };
        let mut line = format!("  volume {}: {how}", a.volume);
        if let Some(p) = &a.guest_path {
            let _ = write!(line, " at {p}");
        }
        if let Some(why) = &a.fallback_reason {
            let _ = write!(line, " ({why})");
        }
        let _ = writeln!(out, "{line}");
    }
    match (&r.os, &r.disk) {
        (Some(os), _) => {
            let name = os
                .pretty_name
                .clone()
                .or_else(|| os.name.clone())
                .unwrap_or_else(|| os.id.clone());
            let _ = writeln!(out, "  os: {name}");
        }
        // Only a disk whose every volume was read can be said to hold no OS.
        (None, Some(d)) => {
            let unread: Vec<String> = r
                .access
                .iter()
                .filter(|a| a.method == Method::None)
                .filter(|a| {
                    d.volumes
                        .get(a.volume)
                        .is_some_and(|v| v.not_read.is_some())
                })
                .map(|a| a.volume.to_string())
                .collect();
            if unread.is_empty() {
                let _ = writeln!(out, "  os: none found");
            } else {
                let _ = writeln!(
                    out,
                    "  os: not determined: volume {} not read",
                    unread.join(", ")
                );
            }
        }
        (None, None) => {}
    }
    if r.disk.is_some() {
        let mut scanner = format!("  scanner: {}", r.scanner.name);
        if let Some(n) = r.scanner.packages {
            let _ = write!(scanner, ", {n} packages");
        }
        if let Some(run) = &r.scanner.run {
            let _ = write!(scanner, ", {}", run.class);
            if let Some(code) = run.exit_code {
                let _ = write!(scanner, " (exit code {code})");
            }
        }
        if let Some(e) = &r.scanner.error {
            let _ = write!(scanner, ": {e}");
        }
        let _ = writeln!(out, "{scanner}");
    }
    for w in r.warnings.iter().chain(&r.scanner.warnings) {
        let _ = writeln!(out, "  warning: {w}");
    }
    if let Some(v) = &r.policy {
        let verdict = if v.passed { "passed" } else { "FAILED" };
        let _ = writeln!(out, "  policy {}: {verdict}", v.file);
        for violation in &v.violations {
            let _ = writeln!(out, "    {}: {}", violation.rule, violation.detail);
        }
    }
    if !r.written {
        return out;
    }
    let _ = writeln!(
        out,
        "  report: {}",
        output_dir.join(super::REPORT_FILE).display()
    );
    for o in &r.outputs {
        let what = if o.name.ends_with(".cdx.json") {
            "sbom"
        } else {
            "result"
        };
        let _ = writeln!(out, "  {what}: {}", output_dir.join(&o.name).display());
    }
    match &r.sink {
        None if r.error.is_none() => {
            let _ = writeln!(
                out,
                "  upload: none configured; results kept in {}",
                output_dir.display()
            );
        }
        None => {}
        Some(sink) => {
            for u in &r.uploads {
                let state = if u.outcome.acknowledged {
                    match (&u.outcome.receipt, u.outcome.duplicate) {
                        (_, true) => format!("already stored at {sink} (same idempotency key)"),
                        (Some(rc), false) => format!("stored at {sink} (receipt {rc})"),
                        (None, false) => format!("stored at {sink}"),
                    }
                } else {
                    format!(
                        "NOT stored at {sink}: {}; kept in {}",
                        u.outcome.error.as_deref().unwrap_or("unknown error"),
                        output_dir.display()
                    )
                };
                let _ = writeln!(out, "  upload {}: {state}", u.file);
            }
        }
    }
    let _ = writeln!(out, "  time: {} ms", r.timings_ms.total);
    out
}
