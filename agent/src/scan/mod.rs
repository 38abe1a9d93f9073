//! One scan of one disk, end to end: open it read-only and reach its files ([`access`]), run
//! the scanner (the built-in inventory, [`builtin`], or an external profile,
//! [`crate::scanner`]), write the results and `report.json` ([`report`]) to the output
//! directory, hand them to the sink ([`crate::upload`]), and undo every mount and loop device.
//!
//! `snapscan scan` runs [`scan`] once. The agent runs the two halves apart, [`produce`] then
//! [`upload_outputs`], so that its journal can record the results as written before any upload
//! starts. The output directory is the local copy of the results: nothing here deletes it,
//! whatever the sink did.
//!
//! Not here: choosing which disks to scan, retrying a failed scan, the job journal (the agent).

pub mod access;
pub mod builtin;
pub mod report;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, INVENTORY};
use crate::scanner::{self, ScanContext};
use crate::upload::{self, Sink, UploadItem};
use access::{Attached, Root};
use report::{
    ms_since, OutputFile, ScanReport, ScannerReport, Status, Subject, Timings, UploadRecord,
};

/// The name of the report file in the output directory.
pub const REPORT_FILE: &str = "report.json";

/// What to scan and where the results go.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Disk image file or block device.
    pub path: PathBuf,
    /// Where results are written (created if needed).
    pub output_dir: PathBuf,
    /// `inventory` or a scanner profile name.
    pub scanner: String,
    /// Snapshot, instance, device name and job, as known to the caller.
    pub subject: Subject,
    /// A QFlow URL that replaces the configured sink.
    pub upload_url: Option<String>,
    /// Told each phase as it is reached (the agent's job journal listens).
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<Phase>>,
    /// Scan a block device even when it is in use (mounted read-write, held by another device).
    pub force: bool,
}

/// A phase of [`produce`] that has just completed (the end is [`produce`] returning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The disk is open read-only and its volumes are reachable.
    Opened,
    /// The OS is known.
    Detected,
}

impl ScanRequest {
    /// The base name of result files: the snapshot name, else the image's file stem.
    pub fn result_name(&self) -> String {
        let raw = self.subject.snapshot.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "disk".into())
        });
        sanitize(&raw)
    }
}

/// A name safe as a file name: `[A-Za-z0-9._-]`, others replaced by `_`, never empty or dot-only.
pub fn sanitize(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if s.trim_matches('.').is_empty() {
        "disk".into()
    } else {
        s
    }
}

/// Run one scan and upload its results. Never fails as a whole: every failure is in the
/// report's `status` and `error`, and the report is written to the output directory whenever
/// that directory can be written.
pub async fn scan(req: &ScanRequest, cfg: &Config, cancel: CancellationToken) -> ScanReport {
    let mut report = produce(req, cfg, cancel).await;
    if report.error.is_some() {
        return report;
    }
    let dir = std::fs::canonicalize(&req.output_dir).unwrap_or_else(|_| req.output_dir.clone());
    let upload_started = Instant::now();
    let fields = upload_fields(req, &report);
    match upload_outputs(
        cfg,
        req.upload_url.as_deref(),
        &dir,
        &report.outputs,
        &fields,
    )
    .await
    {
        Ok(records) => {
            if records.iter().any(|r| !r.outcome.acknowledged) {
                report.status = report.status.max(Status::UploadFailed);
            }
            report.uploads = records;
        }
        Err(e) => {
            report.status = Status::Failed;
            report.error = Some(format!("{e:#}"));
        }
    }
    report.timings_ms.upload = ms_since(upload_started);
    report.timings_ms.total = report
        .timings_ms
        .total
        .saturating_add(report.timings_ms.upload);
    if let Err(e) = write_report(&dir, &report) {
        tracing::error!("{e:#}");
    }
    report
}

/// Scan one disk and write its results and `report.json`, without uploading anything. Never
/// fails as a whole, like [`scan`].
pub async fn produce(req: &ScanRequest, cfg: &Config, cancel: CancellationToken) -> ScanReport {
    let started = Instant::now();
    // An absolute output directory: the scanner runs in it, outputs are named relative to it.
    let output_dir = std::fs::create_dir_all(&req.output_dir)
        .and_then(|()| std::fs::canonicalize(&req.output_dir));
    let req = &ScanRequest {
        output_dir: output_dir
            .as_ref()
            .map_or_else(|_| req.output_dir.clone(), Clone::clone),
        ..req.clone()
    };
    let mut report = ScanReport {
        format: report::FORMAT,
        snapscan_version: env!("CARGO_PKG_VERSION"),
        scan_id: uuid::Uuid::new_v4().to_string(),
        subject: Subject {
            path: req.path.display().to_string(),
            ..req.subject.clone()
        },
        started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        status: Status::Success,
        error: None,
        warnings: Vec::new(),
        disk: None,
        access: Vec::new(),
        os: None,
        scanner: ScannerReport {
            name: req.scanner.clone(),
            kind: if req.scanner == INVENTORY {
                "builtin"
            } else {
                "external"
            },
            ..ScannerReport::default()
        },
        outputs: Vec::new(),
        uploads: Vec::new(),
        timings_ms: Timings::default(),
    };
    let result = match output_dir {
        Ok(_) => run(req, cfg, &cancel, &mut report).await,
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot create the output directory '{}'",
            req.output_dir.display()
        ))),
    };
    if let Err(e) = result {
        report.status = if cancel.is_cancelled() {
            Status::Interrupted
        } else {
            Status::Failed
        };
        report.error = Some(format!("{e:#}"));
    }
    report.timings_ms.total = ms_since(started);
    if let Err(e) = write_report(&req.output_dir, &report) {
        tracing::error!("{e:#}");
    }
    report
}

async fn run(
    req: &ScanRequest,
    cfg: &Config,
    cancel: &CancellationToken,
    report: &mut ScanReport,
) -> anyhow::Result<()> {
    cfg.check_scanner(&req.scanner)?;
    let name = req.result_name();

    // Open and mount on a blocking thread; the guards come back with the result.
    let (path, scan_cfg, ws_name, token, force) = (
        req.path.clone(),
        cfg.scan.clone(),
        name.clone(),
        cancel.clone(),
        req.force,
    );
    let attached = tokio::task::spawn_blocking(move || {
        access::attach(&path, &scan_cfg, &ws_name, force, &|| token.is_cancelled())
    })
    .await
    .context("the disk-opening task failed")??;
    report.timings_ms.open = attached.open_ms;
    report.timings_ms.mount = attached.mount_ms;
    report.timings_ms.detect = attached.detect_ms;
    report.disk = Some(attached.disk.clone());
    report.access = attached.access.clone();
    report.os = attached.disk.os.clone();
    tell(req, Phase::Opened);
    if report.os.is_some() {
        tell(req, Phase::Detected);
    }
    report.warnings.extend(attached.warnings.iter().cloned());
    if attached.disk.volumes.iter().any(|v| v.error.is_some()) {
        report.status = Status::Partial;
    }

    let scan_started = Instant::now();
    let scanned = run_scanner(req, cfg, cancel, &attached, &name, report).await;
    report.timings_ms.scan = ms_since(scan_started);
    // Unmount before the upload: the upload only needs the output directory.
    for e in release(attached).await {
        report.warnings.push(format!("cleanup: {e}"));
    }
    report.outputs = describe_outputs(&req.output_dir, &scanned?)?;
    Ok(())
}

fn tell(req: &ScanRequest, phase: Phase) {
    if let Some(tx) = &req.progress {
        // The listener may be gone (job cancelled): nothing to tell then.
        let _ = tx.send(phase);
    }
}

/// Release the guards on a blocking thread (unmounts can take a moment).
async fn release(attached: Attached) -> Vec<String> {
    match tokio::task::spawn_blocking(move || attached.release()).await {
        Ok(errors) => errors,
        Err(e) => vec![format!("the cleanup task failed: {e}")],
    }
}

async fn run_scanner(
    req: &ScanRequest,
    cfg: &Config,
    cancel: &CancellationToken,
    attached: &Attached,
    name: &str,
    report: &mut ScanReport,
) -> anyhow::Result<Vec<PathBuf>> {
    let root = attached
        .root
        .as_ref()
        .context("no operating system found on the disk")?;
    if req.scanner == INVENTORY {
        return run_inventory(req, cfg, root, name, report).await;
    }
    let profile = cfg
        .profile(&req.scanner)
        .with_context(|| format!("unknown scanner '{}'", req.scanner))?;
    let mount = root.mount_path().with_context(|| {
        format!(
            "scanner '{}' needs a kernel mount of the OS root, and the root could only be read \
             natively",
            req.scanner
        )
    })?;
    let os = root.os();
    let mut ctx = ScanContext::new(
        &req.output_dir,
        cfg.scan.work_dir.join("cache"),
        req.subject
            .job_id
            .clone()
            .unwrap_or_else(|| report.scan_id.clone()),
    );
    ctx.mount = Some(mount.to_path_buf());
    ctx.os_family = Some(os.family);
    ctx.os_id = Some(os.id.clone());
    ctx.snapshot = req.subject.snapshot.clone();
    ctx.instance_id = req.subject.instance_id.clone();
    ctx.disk = Some(req.path.clone());
    ctx.device_name = req.subject.device_name.clone();
    if !cfg.scan.scanner_search_path.is_empty() {
        ctx.search_path = cfg.scan.scanner_search_path.clone();
    }
    let outcome = scanner::run(&req.scanner, &profile, &ctx, cancel.clone()).await;
    match outcome {
        Ok(run) => {
            let class = run.class;
            let outputs = run.outputs.clone();
            report.scanner.run = Some(run);
            match class {
                scanner::Class::Success => Ok(outputs),
                scanner::Class::Partial => {
                    report.status = report.status.max(Status::Partial);
                    Ok(outputs)
                }
                scanner::Class::Retryable | scanner::Class::Fatal => {
                    anyhow::bail!("scanner '{}' failed ({class:?})", req.scanner)
                }
            }
        }
        Err(e) => {
            report.scanner.error = Some(format!("{e:#}"));
            Err(e.into())
        }
    }
}

async fn run_inventory(
    req: &ScanRequest,
    cfg: &Config,
    root: &Root,
    name: &str,
    report: &mut ScanReport,
) -> anyhow::Result<Vec<PathBuf>> {
    let timeout = Duration::from_secs(cfg.scan.inventory_timeout_secs.max(1));
    let inv = match builtin::collect(root, timeout) {
        Ok(inv) => inv,
        Err(e) => {
            report.scanner.error = Some(format!("{e:#}"));
            return Err(e);
        }
    };
    report.scanner.packages = Some(inv.packages.len());
    report.scanner.sources = inv.sources.clone();
    report.scanner.warnings = inv.warnings.clone();
    if !inv.warnings.is_empty() {
        report.status = report.status.max(Status::Partial);
    }
    let subject = req
        .subject
        .snapshot
        .clone()
        .unwrap_or_else(|| report.subject.path.clone());
    let sbom = builtin::write_sbom(
        &req.output_dir,
        name,
        &inv,
        root.os(),
        &subject,
        &report.started_at,
    )?;
    Ok(vec![sbom])
}

/// Name (relative to the output directory), size and hash of each result file.
fn describe_outputs(dir: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<OutputFile>> {
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let path = if path.is_absolute() {
            path.clone()
        } else {
            dir.join(path)
        };
        let name = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if name == REPORT_FILE {
            // Left by an earlier scan into the same directory: not a result of this one.
            continue;
        }
        let (size_bytes, sha256) = hash_file(&path)?;
        out.push(OutputFile {
            name,
            size_bytes,
            sha256,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Size and SHA-256 of a file, streamed.
fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n: u64 = 0;
    loop {
        let got = std::io::Read::read(&mut f, &mut buf)
            .with_context(|| format!("cannot read '{}'", path.display()))?;
        let Some(chunk) = buf.get(..got).filter(|c| !c.is_empty()) else {
            break;
        };
        h.update(chunk);
        n = n.saturating_add(u64::try_from(got).unwrap_or(u64::MAX));
    }
    Ok((n, hex::encode(h.finalize())))
}

/// The metadata fields sent with every file of a scan.
pub fn upload_fields(req: &ScanRequest, report: &ScanReport) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            f.insert(k.to_owned(), v.to_owned());
        }
    };
    put("snapshot_name", req.subject.snapshot.as_deref());
    put("instance_id", req.subject.instance_id.as_deref());
    put("device_name", req.subject.device_name.as_deref());
    put("job_id", req.subject.job_id.as_deref());
    put("scan_id", Some(&report.scan_id));
    put("scanner", Some(&req.scanner));
    if let Some(os) = &report.os {
        put(
            "os_family",
            Some(match os.family {
                crate::detect::OsFamily::Linux => "linux",
                crate::detect::OsFamily::Windows => "windows",
            }),
        );
        put("os_id", Some(&os.id));
        put("os_version", os.version_id.as_deref());
    }
    f
}

/// Hand each output file of `dir` to the sink (the configured one, or QFlow at `upload_url`),
/// one after the other, with the same `fields`. A file the sink did not acknowledge has an
/// unacknowledged [`UploadRecord`]; it stays in `dir`.
///
/// # Errors
///
/// The sink cannot be set up (no URL, no token): nothing was sent.
pub async fn upload_outputs(
    cfg: &Config,
    upload_url: Option<&str>,
    dir: &Path,
    outputs: &[OutputFile],
    fields: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<UploadRecord>> {
    let sink = Sink::from_config(&cfg.upload, upload_url).context("cannot set up the upload")?;
    let mut records = Vec::with_capacity(outputs.len());
    for out in outputs {
        let path = dir.join(&out.name);
        let outcome = match UploadItem::new(&path, fields.clone()).await {
            Ok(item) => upload::upload(&sink, &item).await,
            Err(e) => upload::Outcome::failed(format!("{e:#}")),
        };
        records.push(UploadRecord {
            file: out.name.clone(),
            outcome,
        });
    }
    Ok(records)
}

/// Write `report.json` atomically.
fn write_report(dir: &Path, report: &ScanReport) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report).context("cannot encode the report")?;
    write_atomic(&dir.join(REPORT_FILE), &json)
}

/// Write a file through a temporary sibling, fsync and rename, so a reader never sees half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let mut f = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot create '{}'", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write '{}'", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename '{}' to '{}'", tmp.display(), path.display()))?;
    Ok(())
}
