//! One assigned disk = one job: its state machine and its journal.
//!
//! ```text
//! assigned → resolved → opened → detected → scanned → uploaded → done
//!     └──────────┴──────────┴──────────┴──────────┴─────→ failed | cancelled
//! ```
//!
//! The journal (`<state_dir>/jobs/<id>/job.json`) is written atomically (temporary file, fsync,
//! rename, fsync of the directory) at every transition, before the next step starts, so that
//! after a crash or a reboot [`run`] picks the job up where it was:
//!
//! - before `scanned`, the scan is redone from the start (a half-written result is worthless),
//!   at most [`MAX_SCAN_ATTEMPTS`] times, so a disk that crashes the agent cannot loop forever;
//! - at `scanned`, only the files the receiver has not acknowledged are sent again, with the same
//!   idempotency key, so a receiver that got a file before the crash stores it once;
//! - `done`, `failed` and `cancelled` are final: a finished job is never redone.
//!
//! Results live in `<state_dir>/jobs/<id>/results/` until the sink acknowledged them; with the
//! QFlow sink they are then deleted (unless `[agent] keep_uploaded`), `report.json` is kept.
//!
//! Not here: which jobs exist (the agent reconciles them with the assignments), the scan itself
//! ([`crate::scan`]), writing guest attributes (the agent's status reporter gets [`status_json`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::agent::assignments::{self, Admission, Assignment, AttachedDisk, Policy};
use crate::agent::provision::{self, ProvisionedDisk};
use crate::agent::AgentConfig;
use crate::compute;
use crate::disk::resolve::Resolver;
use crate::policy::Policy as ScanPolicy;
use crate::scan::report::{OutputFile, Status, Subject};
use crate::scan::{self, Phase, ScanConfig, ScanRequest};
use crate::scanner::{ScannerConfig, INVENTORY};
use crate::upload::{self, Sink};

/// Scans started for one job before it is failed (each crash of the agent mid-scan counts).
pub const MAX_SCAN_ATTEMPTS: u32 = 3;
/// The error of a job cancelled because its assignment was withdrawn.
pub const WITHDRAWN: &str = "the assignment was withdrawn";
/// The error of a queued job the agent stopped: another instance does its request.
pub const REQUEUED: &str =
    "the agent stopped before it finished; the request went back to the queue";
/// The journal's file name in the job directory.
pub const JOURNAL_FILE: &str = "job.json";

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Known, waiting for its disk, a free slot, or the device.
    Assigned,
    /// The block device is found and verified.
    Resolved,
    /// The disk is open read-only and its volumes reachable.
    Opened,
    /// The OS is known.
    Detected,
    /// The results are written locally.
    Scanned,
    /// The sink acknowledged every result file.
    Uploaded,
    /// Finished.
    Done,
    /// Finished without result, or with results the sink refused (kept locally).
    Failed,
    /// The assignment was withdrawn before the job finished.
    Cancelled,
}

impl State {
    /// `done`, `failed` or `cancelled`.
    pub fn is_final(self) -> bool {
        matches!(self, State::Done | State::Failed | State::Cancelled)
    }

    /// The name used in the journal and the status.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Assigned => "assigned",
            State::Resolved => "resolved",
            State::Opened => "opened",
            State::Detected => "detected",
            State::Scanned => "scanned",
            State::Uploaded => "uploaded",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// One transition, for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state entered.
    pub state: State,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// The journal of one job: everything needed to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The assignment as it was when the job was created.
    pub assignment: Assignment,
    /// The current state.
    pub state: State,
    /// The block device scanned (last resolution).
    #[serde(default)]
    pub device: Option<String>,
    /// Scans started so far.
    #[serde(default)]
    pub scan_attempts: u32,
    /// The OS found (pretty name).
    #[serde(default)]
    pub os: Option<String>,
    /// The scan's own verdict once scanned: `success` or `partial`.
    #[serde(default)]
    pub scan_status: Option<String>,
    /// `report.json`'s scan id.
    #[serde(default)]
    pub scan_id: Option<String>,
    /// Packages found by the built-in scanner.
    #[serde(default)]
    pub packages: Option<usize>,
    /// The rules of the assignment's policy that the disk breaks (`rule: detail`; empty when
    /// it passed), once scanned with one.
    #[serde(default)]
    pub policy: Option<Vec<String>>,
    /// The result files (names relative to the results directory).
    #[serde(default)]
    pub outputs: Vec<OutputFile>,
    /// The metadata fields sent with each file (the same on every attempt).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Files the sink acknowledged, with its receipt.
    #[serde(default)]
    pub acknowledged: BTreeMap<String, Option<String>>,
    /// Upload rounds that left a file unacknowledged.
    #[serde(default)]
    pub failed_uploads: u32,
    /// The last error (final for `failed`; for other states, what is being retried).
    #[serde(default)]
    pub error: Option<String>,
    /// The disk the agent made for a `source` assignment, and how far it got.
    #[serde(default)]
    pub disk: Option<ProvisionedDisk>,
    /// When the job started: its first step (waiting for the disk included).
    #[serde(default)]
    pub started_at: Option<String>,
    /// When the job reached a final state.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Every transition.
    #[serde(default)]
    pub history: Vec<Transition>,
    /// It came from the work queue ([`crate::agent::queue`]): its message is acknowledged
    /// when it ends, and given back if the agent stops or restarts first.
    #[serde(default)]
    pub queued: bool,
}

impl Journal {
    /// A new job in state `assigned`.
    pub fn new(assignment: Assignment) -> Journal {
        Journal {
            assignment,
            state: State::Assigned,
            device: None,
            scan_attempts: 0,
            os: None,
            scan_status: None,
            scan_id: None,
            packages: None,
            policy: None,
            outputs: Vec::new(),
            fields: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            failed_uploads: 0,
            error: None,
            disk: None,
            started_at: None,
            finished_at: None,
            history: vec![Transition {
                state: State::Assigned,
                at: now(),
            }],
            queued: false,
        }
    }

    /// The job id (the assignment's).
    pub fn id(&self) -> &str {
        &self.assignment.id
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.history.push(Transition { state, at: now() });
        if state.is_final() {
            self.finished_at = Some(now());
        }
    }

    /// End the job in `state` (`failed` or `cancelled`) because of `error`, recorded like any
    /// other transition.
    pub fn end(&mut self, state: State, error: impl Into<String>) {
        self.error = Some(error.into());
        self.enter(state);
    }
}

/// The status value of a job, as written to its guest attribute.
pub fn status_json(j: &Journal) -> serde_json::Value {
    let result = (j.state >= State::Scanned && j.state != State::Cancelled).then(|| {
        serde_json::json!({
            "status": j.scan_status,
            "packages": j.packages,
            "outputs": j.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            "acknowledged": j.acknowledged.len(),
            "policy": j.policy.as_ref().map(|broken| serde_json::json!({
                "passed": broken.is_empty(),
                "violations": broken,
            })),
        })
    });
    serde_json::json!({
        "state": j.state.as_str(),
        "device_name": j.assignment.device_name,
        "snapshot": j.assignment.snapshot,
        "os": j.os,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
        "error": j.error,
        "result": result,
    })
}

/// The jobs directory of the state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store below `state_dir` (created).
    ///
    /// # Errors
    ///
    /// The directory cannot be created.
    pub fn open(state_dir: &Path) -> anyhow::Result<Store> {
        let dir = state_dir.join("jobs");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the state directory '{}'", dir.display()))?;
        Ok(Store { dir })
    }

    /// The directory of job `id`.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Where job `id` writes its results.
    pub fn results_dir(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("results")
    }

    /// Write the journal atomically, and make the rename itself durable.
    ///
    /// # Errors
    ///
    /// The journal cannot be encoded or written.
    pub fn save(&self, j: &Journal) -> anyhow::Result<()> {
        let dir = self.job_dir(j.id());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create '{}'", dir.display()))?;
        let json = serde_json::to_vec_pretty(j).context("cannot encode the journal")?;
        scan::write_atomic(&dir.join(JOURNAL_FILE), &json)?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync '{}'", dir.display()))
    }

    /// Every journal in the store. A journal that cannot be read is reported and skipped (its
    /// directory is left for a human to look at).
    pub fn load_all(&self) -> (Vec<Journal>, Vec<String>) {
        let mut jobs = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("cannot list '{}': {e}", self.dir.display()));
                return (jobs, errors);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path().join(JOURNAL_FILE);
            if !path.exists() {
                continue;
            }
            let loaded = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Journal>(&b).map_err(|e| e.to_string()));
            match loaded {
                Ok(j) if entry.file_name().to_str() == Some(j.id()) => jobs.push(j),
                Ok(j) => errors.push(format!(
                    "'{}' holds the journal of job '{}': skipped",
                    path.display(),
                    j.id()
                )),
                Err(e) => errors.push(format!("unreadable journal '{}': {e}", path.display())),
            }
        }
        jobs.sort_by(|a, b| a.id().cmp(b.id()));
        (jobs, errors)
    }
}

/// What every job shares.
#[derive(Clone)]
pub struct Env {
    /// The `[agent]` settings.
    pub agent: Arc<AgentConfig>,
    /// The `[scan]` settings.
    pub scan: Arc<ScanConfig>,
    /// The scanner profiles.
    pub scanners: Arc<ScannerConfig>,
    /// Where results go (set up once, at start).
    pub sink: Arc<Sink>,
    /// The journals.
    pub store: Store,
    /// Finds block devices by device name.
    pub resolver: Arc<Resolver>,
    /// The instance id of this VM (an upload field).
    pub scanner_instance: String,
    /// The attached disks, as the metadata server last said.
    pub disks: watch::Receiver<Option<Vec<AttachedDisk>>>,
    /// Slots for scans running at once.
    pub slots: Arc<Semaphore>,
    /// Told the journal after every transition.
    pub report: mpsc::UnboundedSender<Journal>,
    /// The Compute API, for `source` assignments.
    pub compute: Arc<compute::Client>,
    /// This VM's instance name.
    pub instance_name: String,
}

/// How the agent stops one job.
#[derive(Clone, Default)]
pub struct Control {
    /// Cancelled when the job must stop: its assignment was withdrawn (then `withdrawn` is set
    /// first), or the agent is stopping.
    pub cancel: CancellationToken,
    /// The assignment was withdrawn: stopping means `cancelled`, not "resume later".
    pub withdrawn: Arc<AtomicBool>,
    /// Cancelled when even an upload in flight must stop (the agent's stop deadline passed).
    pub hard_stop: CancellationToken,
}

impl Control {
    fn withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::SeqCst)
    }
}

/// Drive a job until it is final or must stop (the agent stopping: the journal then says where
/// to resume). Returns the journal as last saved.
pub async fn run(env: &Env, mut j: Journal, ctl: &Control) -> Journal {
    loop {
        let step = match j.state {
            State::Done | State::Failed | State::Cancelled => {
                release_disk(env, &mut j, ctl).await;
                return j;
            }
            State::Assigned | State::Resolved | State::Opened | State::Detected => {
                scan_step(env, &mut j, ctl).await
            }
            State::Scanned => upload_step(env, &mut j, ctl).await,
            State::Uploaded => {
                finish(env, &mut j);
                Step::Continue
            }
        };
        match step {
            Step::Continue => {}
            Step::Pause => {
                // A queued job is not resumed here: its request goes back to the queue.
                let why = if j.queued {
                    Some(REQUEUED)
                } else if ctl.withdrawn() && j.state < State::Scanned {
                    Some(WITHDRAWN)
                } else {
                    None
                };
                if let Some(why) = why {
                    j.end(State::Cancelled, why);
                    tracing::info!(job_id = j.id(), state = "cancelled", "job cancelled");
                    save(env, &j);
                    // Final: its disk is released like any other's.
                    continue;
                }
                return j;
            }
            Step::Fail(e) => {
                tracing::error!(job_id = j.id(), "{e}");
                j.end(State::Failed, e);
            }
        }
        save(env, &j);
    }
}

enum Step {
    /// Saved the new state; go on.
    Continue,
    /// Stop for now (the agent is stopping, or the job was withdrawn); resume later.
    Pause,
    /// The job failed for good.
    Fail(String),
}

fn save(env: &Env, j: &Journal) {
    if let Err(e) = env.store.save(j) {
        // The next transition tries again; until then a crash repeats at most this step.
        tracing::error!(job_id = j.id(), "cannot save the journal: {e:#}");
    }
    let _ = env.report.send(j.clone());
}

fn transition(env: &Env, j: &mut Journal, state: State) {
    j.enter(state);
    tracing::info!(
        job_id = j.id(),
        state = state.as_str(),
        "job {}",
        state.as_str()
    );
    save(env, j);
}

/// Waits between retries of a Compute API step that failed for now.
const COMPUTE_RETRY: Duration = Duration::from_secs(10);

/// For a `source` assignment: make its disk and attach it (retrying what may work later).
async fn provide_disk(env: &Env, j: &mut Journal, ctl: &Control) -> Option<Step> {
    let save_it = |j: &Journal| save(env, j);
    loop {
        match provision::provide(&env.compute, &env.instance_name, j, &save_it).await {
            Ok(()) => return None,
            Err(p) if !p.retryable => return Some(Step::Fail(p.message)),
            Err(p) => {
                tracing::warn!(
                    job_id = j.id(),
                    "{}; retrying in {COMPUTE_RETRY:?}",
                    p.message
                );
                j.error = Some(p.message);
                save(env, j);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(COMPUTE_RETRY) => {}
            () = ctl.cancel.cancelled() => return Some(Step::Pause),
        }
    }
}

/// A final job's disk, if the agent made or attached it: detached and deleted (a few tries;
/// what is left, the sweep removes).
async fn release_disk(env: &Env, j: &mut Journal, ctl: &Control) {
    if j.disk.is_none() {
        return;
    }
    let save_it = |j: &Journal| save(env, j);
    for attempt in 1..=3 {
        match provision::release(&env.compute, &env.instance_name, j, &save_it).await {
            Ok(()) => return,
            Err(p) => {
                tracing::error!(
                    job_id = j.id(),
                    attempt,
                    "cannot release the disk: {}",
                    p.message
                );
                if !p.retryable || ctl.hard_stop.is_cancelled() {
                    return;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(COMPUTE_RETRY) => {}
            () = ctl.hard_stop.cancelled() => return,
        }
    }
}

/// Wait for the disk, a slot and the device, then scan. Leaves the job `scanned` or failed.
async fn scan_step(env: &Env, j: &mut Journal, ctl: &Control) -> Step {
    let policy = Policy {
        allow_read_write: env.agent.scan_read_write,
        allow_boot_disk: env.agent.scan_boot_disk,
    };
    j.started_at.get_or_insert_with(now);
    let scanner = j
        .assignment
        .scanner
        .clone()
        .unwrap_or_else(|| env.scan.scanner.clone());
    let scan_policy = match j.assignment.policy.as_deref() {
        None => None,
        Some(text) => match ScanPolicy::parse(text, "of the assignment") {
            Ok(p) if scanner == INVENTORY => Some((PathBuf::from("assignment"), p)),
            Ok(_) => {
                return Step::Fail(format!(
                    "the assignment's policy checks what the built-in inventory finds, and its \
                     scanner is '{scanner}'"
                ))
            }
            Err(e) => return Step::Fail(format!("{e:#}")),
        },
    };
    if j.assignment.source.is_some() {
        if let Some(step) = provide_disk(env, j, ctl).await {
            return step;
        }
        j.error = None;
    }
    // The disk must be attached (the launcher may attach it after assigning it), within
    // `attach_timeout_secs` of the assignment (restarts of the agent do not extend it).
    let attach_deadline = assigned_at(j) + Duration::from_secs(env.agent.attach_timeout_secs);
    let mut disks = env.disks.clone();
    // Decided from `instance/disks/` alone, before anything is opened.
    let admitted = loop {
        let admission = match &*disks.borrow_and_update() {
            Some(list) => assignments::admit(&j.assignment, list, policy),
            None => Admission::NotAttached,
        };
        match admission {
            Admission::Admit(disk) => break disk,
            Admission::Refuse(why) => return Step::Fail(why),
            Admission::NotAttached => {}
        }
        if j.error.is_none() {
            j.error = Some(format!(
                "waiting for disk '{}' to be attached",
                j.assignment.device_name
            ));
            save(env, j);
        }
        let left = attach_deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            changed = disks.changed() => if changed.is_err() { return Step::Pause },
            () = ctl.cancel.cancelled() => return Step::Pause,
            () = tokio::time::sleep(left) => return Step::Fail(format!(
                "disk '{}' was not attached within {} s of the assignment (attach_timeout_secs)",
                j.assignment.device_name, env.agent.attach_timeout_secs
            )),
        }
    };
    let _slot = tokio::select! {
        s = env.slots.clone().acquire_owned() => match s {
            Ok(s) => s,
            Err(_) => return Step::Pause,
        },
        () = ctl.cancel.cancelled() => return Step::Pause,
    };
    if j.scan_attempts >= MAX_SCAN_ATTEMPTS {
        return Step::Fail(format!(
            "gave up after {MAX_SCAN_ATTEMPTS} scans that did not finish (the agent stopped or \
             crashed during each)"
        ));
    }
    j.error = None;
    let wait = Duration::from_secs(env.agent.device_wait_secs);
    // What finding the device must leave unopened, from the disks attached now (the wait for a
    // slot may have seen others attached).
    let unopened = assignments::unopened(
        &admitted,
        disks.borrow().as_deref().unwrap_or_default(),
        policy,
    );
    let resolved = match env
        .resolver
        .resolve(&j.assignment.device_name, &unopened, wait, &ctl.cancel)
        .await
    {
        Ok(r) => r,
        Err(_) if ctl.cancel.is_cancelled() => return Step::Pause,
        Err(e) => return Step::Fail(format!("{e}")),
    };
    j.device = Some(resolved.device.display().to_string());
    j.scan_attempts = j.scan_attempts.saturating_add(1);
    transition(env, j, State::Resolved);

    let results = env.store.results_dir(j.id());
    if let Err(e) = fresh_dir(&results) {
        return Step::Fail(format!("{e:#}"));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut fields = BTreeMap::from([(
        "scanner_instance_id".to_owned(),
        env.scanner_instance.clone(),
    )]);
    for (k, v) in &j.assignment.labels {
        fields.insert(format!("label_{k}"), v.clone());
    }
    if let Some(p) = &j.assignment.source_project {
        fields.insert("source_project".into(), p.clone());
    }
    if j.queued {
        // Names the upload whichever instance works the request (see `UploadItem::new`).
        fields.insert(upload::REQUEST_ID_FIELD.into(), j.id().to_owned());
    }
    let req = ScanRequest {
        policy: scan_policy,
        path: resolved.device.clone(),
        output_dir: results.clone(),
        scanner,
        subject: Subject {
            path: resolved.device.display().to_string(),
            snapshot: Some(j.assignment.snapshot.clone()),
            instance_id: j.assignment.source_instance.clone(),
            device_name: Some(j.assignment.device_name.clone()),
            job_id: Some(j.id().to_owned()),
        },
        fields,
        progress: Some(tx),
        force: false,
    };
    let produce = scan::produce(&req, &env.scan, &env.scanners, ctl.cancel.clone());
    tokio::pin!(produce);
    let report = loop {
        tokio::select! {
            report = &mut produce => break report,
            Some(phase) = rx.recv() => on_phase(env, j, phase),
        }
    };
    while let Ok(phase) = rx.try_recv() {
        on_phase(env, j, phase);
    }
    j.scan_id = Some(report.scan_id.clone());
    j.os = report.os.as_ref().map(|o| {
        o.pretty_name
            .clone()
            .or_else(|| o.product_name.clone())
            .unwrap_or_else(|| o.id.clone())
    });
    j.packages = report.scanner.packages;
    j.policy = report.policy.as_ref().map(|v| {
        v.violations
            .iter()
            .map(|b| format!("{}: {}", b.rule, b.detail))
            .collect()
    });
    if ctl.cancel.is_cancelled() {
        return Step::Pause;
    }
    if let Some(e) = &report.error {
        return Step::Fail(format!(
            "{e} (report: {})",
            results.join(scan::REPORT_FILE).display()
        ));
    }
    j.scan_status = Some(
        match report.status {
            Status::Partial => "partial",
            _ => "success",
        }
        .to_owned(),
    );
    j.outputs = report.outputs.clone();
    j.fields = report.upload_fields;
    j.acknowledged.clear();
    transition(env, j, State::Scanned);
    Step::Continue
}

fn on_phase(env: &Env, j: &mut Journal, phase: Phase) {
    let state = match phase {
        Phase::Opened => State::Opened,
        Phase::Detected => State::Detected,
    };
    if state > j.state {
        transition(env, j, state);
    }
}

/// Send what the sink has not acknowledged yet; retry later until it has.
async fn upload_step(env: &Env, j: &mut Journal, ctl: &Control) -> Step {
    let dir = env.store.results_dir(j.id());
    let pending: Vec<OutputFile> = j
        .outputs
        .iter()
        .filter(|o| !j.acknowledged.contains_key(&o.name))
        .cloned()
        .collect();
    let upload = scan::upload_outputs(&env.sink, &dir, &pending, &j.fields);
    let records = tokio::select! {
        r = upload => r,
        // A withdrawn assignment does not stop an upload: the results exist, send them.
        () = ctl.hard_stop.cancelled() => return Step::Pause,
    };
    let mut refused = None;
    let mut failed = None;
    for r in records {
        if r.outcome.acknowledged {
            j.acknowledged.insert(r.file, r.outcome.receipt);
        } else {
            let e = format!(
                "upload of {}: {}",
                r.file,
                r.outcome.error.as_deref().unwrap_or("not acknowledged")
            );
            if matches!(r.outcome.error_kind, Some("rejected" | "config")) {
                refused = Some(e);
            } else {
                failed = Some(e);
            }
        }
    }
    if let Some(e) = refused {
        return Step::Fail(format!("{e}; the results are kept in '{}'", dir.display()));
    }
    if let Some(e) = failed {
        j.failed_uploads = j.failed_uploads.saturating_add(1);
        let wait = Duration::from_secs(env.agent.upload_retry_secs.max(1));
        j.error = Some(format!("{e}; trying again in {} s", wait.as_secs()));
        tracing::warn!(
            job_id = j.id(),
            "{}",
            j.error.as_deref().unwrap_or_default()
        );
        save(env, j);
        tokio::select! {
            () = tokio::time::sleep(wait) => return Step::Continue,
            () = ctl.cancel.cancelled() => return Step::Pause,
        }
    }
    j.error = None;
    transition(env, j, State::Uploaded);
    Step::Continue
}

/// Delete acknowledged results when they were sent away, then `done`.
fn finish(env: &Env, j: &mut Journal) {
    if matches!(*env.sink, Sink::Qflow(_)) && !env.agent.keep_uploaded {
        let dir = env.store.results_dir(j.id());
        for name in j.acknowledged.keys() {
            if let Err(e) = std::fs::remove_file(dir.join(name)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(job_id = j.id(), "cannot delete the uploaded {name}: {e}");
                }
            }
        }
    }
    j.enter(State::Done);
    tracing::info!(job_id = j.id(), state = "done", "job done");
}

/// An empty directory at `dir` (the leftovers of an interrupted scan removed).
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot empty '{}'", dir.display())),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create '{}'", dir.display()))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// When the job was assigned (its first transition); now if the journal does not say.
fn assigned_at(j: &Journal) -> SystemTime {
    j.history
        .first()
        .and_then(|t| humantime::parse_rfc3339(&t.at).ok())
        .unwrap_or_else(SystemTime::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(id: &str) -> Assignment {
        Assignment {
            id: id.into(),
            device_name: "disk-1".into(),
            source: None,
            snapshot: "snap-1".into(),
            source_instance: Some("vm-1".into()),
            source_project: None,
            scanner: None,
            policy: None,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn journal_round_trip_and_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut j = Journal::new(assignment("job-1"));
        j.enter(State::Resolved);
        j.outputs.push(OutputFile {
            name: "a.cdx.json".into(),
            size_bytes: 3,
            sha256: "00".into(),
        });
        store.save(&j).expect("save");
        store
            .save(&Journal::new(assignment("job-2")))
            .expect("save");
        // Junk beside them: reported, not fatal.
        std::fs::create_dir_all(dir.path().join("jobs/bad")).expect("mkdir");
        std::fs::write(dir.path().join("jobs/bad/job.json"), b"{").expect("write");
        std::fs::create_dir_all(dir.path().join("jobs/moved")).expect("mkdir");
        std::fs::write(
            dir.path().join("jobs/moved/job.json"),
            serde_json::to_vec(&Journal::new(assignment("other"))).expect("json"),
        )
        .expect("write");
        let (jobs, errors) = store.load_all();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0], j);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(!dir.path().join("jobs/job-1/.job.json.tmp").exists());
    }

    #[test]
    fn states_order_and_status() {
        assert!(State::Assigned < State::Scanned && State::Scanned < State::Done);
        assert!(State::Cancelled.is_final() && !State::Uploaded.is_final());
        let mut j = Journal::new(assignment("x"));
        assert_eq!(status_json(&j)["state"], "assigned");
        assert!(status_json(&j)["result"].is_null());
        j.enter(State::Scanned);
        j.packages = Some(88);
        assert_eq!(status_json(&j)["result"]["packages"], 88);
        j.enter(State::Done);
        assert!(j.finished_at.is_some());
        assert_eq!(j.history.len(), 3);
    }
}
