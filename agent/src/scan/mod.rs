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
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::policy::Policy;
use crate::scanner::{self, ScanContext, ScannerConfig, INVENTORY};
use crate::upload::{self, Sink, UploadItem};
use access::{Attached, Root};
use report::{
    ms_since, OutputFile, ScanReport, ScannerReport, Status, Subject, Timings, UploadRecord,
};

/// The name of the report file in the output directory.
pub const REPORT_FILE: &str = "report.json";

/// The `[scan]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// The scanner run when none is named: `inventory` (built in) or a profile name.
    pub scanner: String,
    /// Private work area for mount points and the record of loop devices; leftovers of a
    /// crashed run are cleaned up here at start. Default `/run/snapscan`.
    pub work_dir: PathBuf,
    /// Where `snapscan scan` writes results when `--output` is not given: a new directory per
    /// scan below it. Default `snapscan-results` (relative to the working directory).
    pub results_dir: PathBuf,
    /// Longest the native parse of one volume (OS detection) may take. Default 30.
    pub volume_timeout_secs: u64,
    /// Longest the built-in inventory of one disk may take. Default 300.
    pub inventory_timeout_secs: u64,
    /// Mount the disk's volumes with the kernel when possible (else only native parsing, which
    /// reads ext2/3/4, XFS, Btrfs and NTFS). Default true.
    pub kernel_mounts: bool,
    /// What the built-in inventory reads a root through when both would do: `native` (the
    /// default: snapscan's bounded parsers, nothing mounted, unless the root's fstab puts
    /// other volumes of the disk under it) or `kernel` (read-only kernel mounts, native parsing
    /// only as the fallback). External scanners always get a kernel mount.
    pub prefer: Prefer,
    /// Directories where external scanner programs are looked up, in order (also their
    /// `PATH`). Empty (the default): the scanner module's safe `PATH`.
    pub scanner_search_path: Vec<PathBuf>,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            scanner: INVENTORY.to_owned(),
            work_dir: PathBuf::from("/run/snapscan"),
            results_dir: PathBuf::from("snapscan-results"),
            volume_timeout_secs: 30,
            inventory_timeout_secs: 300,
            kernel_mounts: true,
            prefer: Prefer::Native,
            scanner_search_path: Vec::new(),
        }
    }
}

/// The `[scan] prefer` setting: which reader of a root the built-in inventory takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// snapscan's own parsers, where one reads the root's filesystem.
    Native,
    /// A read-only kernel mount, where the kernel can mount it.
    Kernel,
}

impl ScanConfig {
    /// Check the values.
    ///
    /// # Errors
    ///
    /// A relative work directory or search-path entry.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.work_dir.is_absolute(),
            "work_dir '{}' must be absolute",
            self.work_dir.display()
        );
        if let Some(d) = self.scanner_search_path.iter().find(|d| !d.is_absolute()) {
            anyhow::bail!(
                "scanner_search_path entry '{}' must be absolute",
                d.display()
            );
        }
        Ok(())
    }
}

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
    /// Metadata fields sent with every result file besides those of the scan itself (the
    /// agent's labels, its own instance id).
    pub fields: BTreeMap<String, String>,
    /// Told each phase as it is reached (the agent's job journal listens).
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<Phase>>,
    /// Scan a block device even when it is in use (mounted read-write, held by another device).
    pub force: bool,
    /// The policy the built-in inventory's findings are checked against, and its file.
    pub policy: Option<(PathBuf, Policy)>,
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

/// Run one scan and hand its results to `sink`. Never fails as a whole: every failure is in
/// the report's `status` and `error`, and the report is written to the output directory
/// whenever that directory was made. With no upload configured (the local sink without a
/// directory) nothing is handed anywhere: the results are the output directory.
pub async fn scan(
    req: &ScanRequest,
    cfg: &ScanConfig,
    scanners: &ScannerConfig,
    sink: &Sink,
    cancel: CancellationToken,
) -> ScanReport {
    let mut report = produce(req, cfg, scanners, cancel).await;
    report.sink = sink.destination();
    if report.error.is_some() || report.sink.is_none() {
        save_report(&req.output_dir, &report);
        return report;
    }
    let upload_started = Instant::now();
    report.uploads = upload_outputs(
        sink,
        &req.output_dir,
        &report.outputs,
        &report.upload_fields,
    )
    .await;
    if report.uploads.iter().any(|r| !r.outcome.acknowledged) {
        report.status = report.status.max(Status::UploadFailed);
    }
    report.timings_ms.upload = ms_since(upload_started);
    report.timings_ms.total = report
        .timings_ms
        .total
        .saturating_add(report.timings_ms.upload);
    save_report(&req.output_dir, &report);
    report
}

/// Write `report.json` again where [`produce`] wrote it, if it did (errors are logged).
pub fn save_report(dir: &Path, report: &ScanReport) {
    if report.written {
        if let Err(e) = write_report(dir, report) {
            tracing::error!("{e:#}");
        }
    }
}

/// Scan one disk and write its results and `report.json` into `req.output_dir`, without
/// uploading anything. Never fails as a whole, like [`scan`].
///
/// The input is checked first: one that cannot be read as a disk leaves nothing behind. The
/// output directory must then be new or empty (it is created if missing), so that everything in
/// it once the scan ends is this scan's own: an external scanner works in it, and every regular
/// file it leaves there is one of its results.
pub async fn produce(
    req: &ScanRequest,
    cfg: &ScanConfig,
    scanners: &ScannerConfig,
    cancel: CancellationToken,
) -> ScanReport {
    let started = Instant::now();
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
        upload_fields: BTreeMap::new(),
        sink: None,
        uploads: Vec::new(),
        policy: None,
        timings_ms: Timings::default(),
        written: false,
    };
    let prepared = crate::disk::reader::check_source(&req.path)
        .and_then(|()| prepare_output_dir(&req.output_dir));
    let result = match prepared {
        Ok(dir) => {
            // An absolute output directory: the scanner runs in it, outputs are named relative
            // to it.
            let req = &ScanRequest {
                output_dir: dir,
                ..req.clone()
            };
            let result = run(req, cfg, scanners, &cancel, &mut report).await;
            report.written = true;
            result
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        report.status = if cancel.is_cancelled() {
            Status::Interrupted
        } else {
            Status::Failed
        };
        report.error = Some(format!("{e:#}"));
    }
    report.upload_fields = upload_fields(req, &report);
    report.timings_ms.total = ms_since(started);
    save_report(&req.output_dir, &report);
    report
}

/// Create `dir` if needed, after [`check_output_dir`]; its absolute path.
///
/// # Errors
///
/// It cannot be created, or is not empty.
fn prepare_output_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    check_output_dir(dir)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output directory '{}'", dir.display()))?;
    std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve the output directory '{}'", dir.display()))
}

/// `dir` can hold a scan's results: it does not exist yet, or is an empty directory (so that
/// nothing in it is mistaken for this scan's results).
///
/// # Errors
///
/// It is not a directory, cannot be listed, or is not empty.
pub fn check_output_dir(dir: &Path) -> anyhow::Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot use '{}' as the output directory", dir.display()))
        }
    };
    if entries.next().is_some() {
        anyhow::bail!(
            "the output directory '{}' is not empty: a scan writes its results to a new or \
             empty directory of its own",
            dir.display()
        );
    }
    Ok(())
}

async fn run(
    req: &ScanRequest,
    cfg: &ScanConfig,
    scanners: &ScannerConfig,
    cancel: &CancellationToken,
    report: &mut ScanReport,
) -> anyhow::Result<()> {
    scanners.check(&req.scanner)?;
    let name = req.result_name();

    // Open and mount on a blocking thread; the guards come back with the result.
    let (path, scan_cfg, ws_name, token, force) = (
        req.path.clone(),
        cfg.clone(),
        name.clone(),
        cancel.clone(),
        req.force,
    );
    let reach = match (req.scanner == INVENTORY, cfg.prefer) {
        (true, Prefer::Native) => access::Reach::NativeFirst,
        (true, Prefer::Kernel) => access::Reach::Mounts,
        (false, _) => access::Reach::Tree,
    };
    let attached = tokio::task::spawn_blocking(move || {
        access::attach(&path, &scan_cfg, &ws_name, force, reach, &|| {
            token.is_cancelled()
        })
    })
    .await
    .context("the disk-opening task failed")??;
    report.timings_ms.open = attached.open_ms;
    report.timings_ms.mount = attached.mount_ms;
    report.timings_ms.detect = attached.detect_ms;
    let mut disk = attached.disk.clone();
    // `not_read` is what the native inspection could not read; a mounted volume was read.
    for a in attached
        .access
        .iter()
        .filter(|a| a.method != report::Method::None)
    {
        if let Some(v) = disk.volumes.get_mut(a.volume) {
            v.not_read = None;
        }
    }
    report.disk = Some(disk);
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
    let scanned = run_scanner(req, cfg, scanners, cancel, &attached, &name, report).await;
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
    cfg: &ScanConfig,
    scanners: &ScannerConfig,
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
    let profile = scanners
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
        cfg.work_dir.join("cache"),
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
    if !cfg.scanner_search_path.is_empty() {
        ctx.search_path = cfg.scanner_search_path.clone();
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
                    let how = match report.scanner.run.as_ref().and_then(|r| r.exit_code) {
                        Some(code) => format!("exit code {code}"),
                        None => "killed".to_owned(),
                    };
                    anyhow::bail!("scanner '{}' failed: {class} ({how})", req.scanner)
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
    cfg: &ScanConfig,
    root: &Root,
    name: &str,
    report: &mut ScanReport,
) -> anyhow::Result<Vec<PathBuf>> {
    let timeout = Duration::from_secs(cfg.inventory_timeout_secs.max(1));
    let patterns = req
        .policy
        .as_ref()
        .map(|(_, p)| p.forbidden_files.clone())
        .unwrap_or_default();
    let (inv, found) = match builtin::collect(root, timeout, patterns) {
        Ok(found) => found,
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
    if let Some((file, policy)) = &req.policy {
        report.policy = Some(policy.check(file, root.os(), &inv.packages, &found));
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

/// The metadata fields sent with every file of a scan: the caller's own ([`ScanRequest::fields`])
/// and the scan's (snapshot, instance, device, job, scan id, scanner, OS).
fn upload_fields(req: &ScanRequest, report: &ScanReport) -> BTreeMap<String, String> {
    let mut f = req.fields.clone();
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

/// Hand each output file of `dir` to `sink`, one after the other, with the same `fields`. A
/// file the sink did not acknowledge has an unacknowledged [`UploadRecord`]; it stays in `dir`.
pub async fn upload_outputs(
    sink: &Sink,
    dir: &Path,
    outputs: &[OutputFile],
    fields: &BTreeMap<String, String>,
) -> Vec<UploadRecord> {
    let mut records = Vec::with_capacity(outputs.len());
    for out in outputs {
        let path = dir.join(&out.name);
        let outcome = match UploadItem::new(&path, fields.clone()).await {
            Ok(item) => upload::upload(sink, &item).await,
            Err(e) => upload::Outcome::failed(format!("{e:#}")),
        };
        records.push(UploadRecord {
            file: out.name.clone(),
            outcome,
        });
    }
    records
}

/// Write `report.json` atomically.
fn write_report(dir: &Path, report: &ScanReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("cannot encode the report")?;
    write_atomic(
        &dir.join(REPORT_FILE),
        crate::redact::text(&json).as_bytes(),
    )
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
