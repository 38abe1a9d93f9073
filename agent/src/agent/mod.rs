//! `snapscan agent`: the daemon of the scanner VM.
//!
//! It learns who it is from the metadata server (retrying until the server answers), cleans up
//! what a previous run left mounted, tells systemd it is ready, then watches two metadata
//! directories: `instance/attributes/` (the [`assignments`]) and `instance/disks/` (what is
//! attached). Each change is reconciled: a new assignment becomes a [`crate::job`], a withdrawn
//! one cancels its job, a job journalled by a previous run resumes. Progress goes to guest
//! attributes ([`status`]), to systemd ([`notify`]) and to the log. On SIGTERM it takes no new
//! work, stops scans (unmounting everything), gives uploads in flight `stop_timeout_secs`, and
//! exits; the journals say where to resume. With `idle_action = "poweroff"`, a VM whose jobs
//! are all finished powers itself off after `idle_grace_secs`; with `"delete"` it deletes its
//! own instance through the Compute API, once every result is acknowledged. The instance
//! attributes [`IDLE_ATTRIBUTE`] and [`IDLE_GRACE_ATTRIBUTE`] override the settings for one VM.
//!
//! With `[queue] subscription` set, scan requests also come from a Pub/Sub subscription
//! ([`queue`]): each becomes a job like an assignment; its message is acknowledged once the job
//! is done (its results acknowledged by the receiver) or failed for good, and given back when
//! the agent stops first. Queued jobs a previous run left unfinished are cancelled at start:
//! their messages went back to the queue, for whichever instance pulls them.
//!
//! For `source` assignments the jobs make their disks through the Compute API
//! ([`provision`]); at start and every [`SWEEP_EVERY`] the agent removes disks labelled with
//! its instance that no live job holds.
//!
//! Not here: the scan of one disk ([`crate::scan`]), the job's states ([`crate::job`]), the
//! HTTP of the metadata server ([`crate::metadata`]).

pub mod assignments;
pub mod notify;
pub mod provision;
pub mod queue;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::compute::{self, ComputeConfig};
use crate::disk::resolve::Resolver;
use crate::job::{self, Control, Journal, State, Store};
use crate::metadata::watch::{self as mdwatch, Dir};
use crate::metadata::{Client, Identity, MetadataConfig};
use crate::mount::workspace::Workspace;
use crate::queue::QueueConfig;
use crate::scan::ScanConfig;
use crate::scanner::ScannerConfig;
use crate::upload::Sink;
use assignments::{Assignment, AttachedDisk};
use notify::Notifier;
use status::Reporter;

/// The guest-attribute key of the agent's own status.
pub const AGENT_KEY: &str = "agent";

/// Longest the last statuses may take to be written before the VM powers off or deletes itself:
/// the guest-attribute rate limit can hold a write back for up to a minute, and a launcher
/// following the VM must see every job's end before the VM goes.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(90);

/// How often leftover disks are looked for (and at start).
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The instance attribute that overrides `[agent] idle_action` for this VM (set by
/// `snapscan launch`): `none`, `poweroff` or `delete`.
pub const IDLE_ATTRIBUTE: &str = "snapscan-idle-action";

/// The instance attribute that overrides `[agent] idle_grace_secs` for this VM (`snapscan
/// launch` sets a few of its poll intervals: its VM gets no more work than it was created with,
/// and only has to stay until the launcher has read every job's end).
pub const IDLE_GRACE_ATTRIBUTE: &str = "snapscan-idle-grace-secs";

/// The instance attribute Compute Engine gives an instance of a managed instance group:
/// `projects/P/zones/Z/instanceGroupManagers/G` (or `regions/R`).
pub const CREATED_BY_ATTRIBUTE: &str = "created-by";

/// What to do once every job is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleAction {
    /// Keep running (autoscaled groups, long-lived scanner VMs).
    #[default]
    None,
    /// Run `poweroff_command` (one-off scanner VMs).
    Poweroff,
    /// Delete this instance through the Compute API, once every result is acknowledged (its
    /// auto-delete disks go with it).
    Delete,
    /// Leave the managed instance group that made this instance (`deleteInstances` on itself:
    /// the group deletes it and shrinks by one), once every result is acknowledged; idle
    /// counts from the start when no job ever came (a fleet scaled up for an empty queue).
    #[serde(rename = "leave-group")]
    LeaveGroup,
}

/// The `[agent]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Job journals and results. Default `/var/lib/snapscan`.
    pub state_dir: PathBuf,
    /// Scans running at once; 0 (the default) means one per CPU.
    pub max_concurrent_jobs: usize,
    /// Scan disks attached READ_WRITE. Default false.
    pub scan_read_write: bool,
    /// Scan the boot disk (index 0). Default false.
    pub scan_boot_disk: bool,
    /// Longest wait for an assigned disk to be attached (to show in `instance/disks/`),
    /// counted from the assignment; the job then fails. Default 900.
    pub attach_timeout_secs: u64,
    /// Longest wait for an attached disk's block device to show up. Default 60.
    pub device_wait_secs: u64,
    /// Where udev's `google-<name>` links are. Default `/dev/disk/by-id`.
    pub by_id_dir: PathBuf,
    /// sysfs, for serial numbers. Default `/sys`.
    pub sys_dir: PathBuf,
    /// Where block devices are. Default `/dev`.
    pub dev_dir: PathBuf,
    /// On SIGTERM, how long uploads in flight may still take. Default 60.
    pub stop_timeout_secs: u64,
    /// Wait before sending again results the receiver did not acknowledge. Default 60.
    pub upload_retry_secs: u64,
    /// Keep result files after the QFlow receiver acknowledged them. Default false.
    pub keep_uploaded: bool,
    /// `none` (default), `poweroff` once every job is finished, `delete` (the instance,
    /// through the Compute API) once every result is also acknowledged, or `leave-group` (of
    /// a managed instance group: the group deletes the instance and shrinks).
    pub idle_action: IdleAction,
    /// How long the agent must have been idle before `idle_action`. Default 300.
    pub idle_grace_secs: u64,
    /// The command that powers the VM off. Default `["systemctl", "poweroff"]`.
    pub poweroff_command: Vec<String>,
    /// Log filter (`info`, `snapscan=debug`); `RUST_LOG` replaces it. Default `info`.
    pub log: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: PathBuf::from("/var/lib/snapscan"),
            max_concurrent_jobs: 0,
            scan_read_write: false,
            scan_boot_disk: false,
            attach_timeout_secs: 900,
            device_wait_secs: 60,
            by_id_dir: PathBuf::from("/dev/disk/by-id"),
            sys_dir: PathBuf::from("/sys"),
            dev_dir: PathBuf::from("/dev"),
            stop_timeout_secs: 60,
            upload_retry_secs: 60,
            keep_uploaded: false,
            idle_action: IdleAction::None,
            idle_grace_secs: 300,
            poweroff_command: vec!["systemctl".into(), "poweroff".into()],
            log: "info".into(),
        }
    }
}

impl AgentConfig {
    /// Check the values.
    ///
    /// # Errors
    ///
    /// A relative state directory, or `poweroff` without a command.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.state_dir.is_absolute() {
            anyhow::bail!("state_dir '{}' must be absolute", self.state_dir.display());
        }
        if self.idle_action == IdleAction::Poweroff && self.poweroff_command.is_empty() {
            anyhow::bail!("idle_action = \"poweroff\" needs a poweroff_command");
        }
        Ok(())
    }

    /// Scans at once: the setting, else the number of CPUs.
    pub fn concurrency(&self) -> usize {
        if self.max_concurrent_jobs > 0 {
            self.max_concurrent_jobs
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// What the daemon runs with: its own tables, those of the scans it runs, and the sink, set up
/// (and so checked) before it starts.
#[derive(Debug)]
pub struct Settings {
    /// `[agent]`.
    pub agent: AgentConfig,
    /// `[metadata]`.
    pub metadata: MetadataConfig,
    /// `[compute]`.
    pub compute: ComputeConfig,
    /// `[queue]`.
    pub queue: QueueConfig,
    /// `[status]`.
    pub status: status::StatusConfig,
    /// `[scan]`.
    pub scan: ScanConfig,
    /// `[scanner]`.
    pub scanners: ScannerConfig,
    /// Where results go.
    pub sink: Arc<Sink>,
}

/// Run the daemon until `stop` fires (SIGTERM).
///
/// # Errors
///
/// Only what makes running impossible: the state directory cannot be created.
pub async fn run(cfg: Settings, stop: CancellationToken) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let client = Client::new(&cfg.metadata)?;
    let notifier = Notifier;
    let store = Store::open(&cfg.agent.state_dir)?;

    notifier.status("waiting for the metadata server");
    let backoff = cfg.metadata.backoff();
    let identity = tokio::select! {
        id = client.identity(&backoff, &stop) => id,
        () = pet_watchdog_forever(notifier) => None,
    };
    let Some(identity) = identity else {
        return Ok(());
    };
    tracing::info!(
        instance = identity.name,
        instance_id = identity.instance_id,
        zone = identity.zone,
        project = identity.project,
        "metadata server at {}",
        client.base()
    );
    match Workspace::cleanup_leftovers(&cfg.scan.work_dir) {
        Ok(done) => {
            for d in done {
                tracing::warn!("cleaned up after a previous run: {d}");
            }
        }
        Err(e) => tracing::error!("cannot clean up after a previous run: {e:#}"),
    }

    let compute = Arc::new(compute::Client::new(
        &cfg.compute,
        client.clone(),
        &identity.project,
        &identity.zone,
    )?);
    let mut agent = Agent::new(
        cfg.clone(),
        client.clone(),
        compute,
        identity,
        store,
        stop.clone(),
    );
    let worker = if cfg.queue.subscription.is_empty() {
        None
    } else {
        let tokens = Arc::new(compute::Tokens::Metadata(compute::TokenSource::new(
            client.clone(),
        )));
        let q = Arc::new(crate::queue::Client::new(&cfg.queue, tokens)?);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let (delivery_tx, delivery_rx) = mpsc::unbounded_channel();
        agent.deliveries = delivery_rx;
        agent.settle = Some(settle_tx);
        tracing::info!("pulling scan requests from {}", cfg.queue.subscription);
        Some(tokio::spawn(queue::run(
            q,
            cfg.queue.clone(),
            agent.free_tx.subscribe(),
            delivery_tx,
            settle_rx,
            stop.clone(),
        )))
    };
    notifier.ready("watching for assignments");
    agent.publish();
    let result = agent.main_loop(notifier).await;
    agent.shut_down(notifier).await;
    // Whatever queued job did not finish gives its message back.
    agent.settle = None;
    if let Some(w) = worker {
        if tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .is_err()
        {
            tracing::warn!("the queue worker did not finish giving messages back");
        }
    }
    result
}

/// Pet the watchdog while something slow runs before the main loop.
async fn pet_watchdog_forever(notifier: Notifier) {
    match Notifier::watchdog_interval() {
        Some(every) => loop {
            notifier.watchdog();
            tokio::time::sleep(every).await;
        },
        None => std::future::pending().await,
    }
}

struct Running {
    control: Control,
}

struct Agent {
    cfg: Arc<Settings>,
    identity: Identity,
    store: Store,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    reporter: Reporter,
    env: job::Env,
    disks_tx: watch::Sender<Option<Vec<AttachedDisk>>>,
    attributes: watch::Receiver<Dir>,
    disks: watch::Receiver<Dir>,
    journal_rx: mpsc::UnboundedReceiver<Journal>,
    /// The newest journal of every job known, final ones included.
    known: BTreeMap<String, Journal>,
    running: HashMap<String, Running>,
    tasks: JoinSet<Journal>,
    task_ids: HashMap<tokio::task::Id, String>,
    assignment_errors: Vec<String>,
    idle_since: Option<Instant>,
    powered_off: bool,
    compute: Arc<compute::Client>,
    /// Why the idle action did not happen (yet), for the `agent` attribute.
    idle_note: Option<String>,
    /// The idle action of the instance's metadata ([`IDLE_ATTRIBUTE`]).
    idle_override: Option<IdleAction>,
    /// The idle grace of the instance's metadata ([`IDLE_GRACE_ATTRIBUTE`]).
    idle_grace_override: Option<u64>,
    /// The managed instance group that made this instance ([`CREATED_BY_ATTRIBUTE`]).
    created_by: Option<String>,
    /// Leaving the group (or deleting itself): no more requests are taken.
    leaving: bool,
    /// Requests pulled from the queue (none without one).
    deliveries: mpsc::UnboundedReceiver<queue::Delivery>,
    /// What the queue worker does with their messages (`None` without a queue).
    settle: Option<mpsc::UnboundedSender<queue::Settle>>,
    /// Queued jobs whose messages the worker holds.
    held: std::collections::BTreeSet<String>,
    /// Job slots free for queued requests.
    free_tx: watch::Sender<usize>,
}

impl Agent {
    fn new(
        cfg: Arc<Settings>,
        client: Client,
        compute: Arc<compute::Client>,
        identity: Identity,
        store: Store,
        stop: CancellationToken,
    ) -> Agent {
        let reporter = Reporter::spawn(client.clone(), cfg.status.clone(), &cfg.agent.state_dir);
        let (attr_tx, attributes) = watch::channel(Dir::Unknown);
        let (disk_dir_tx, disks) = watch::channel(Dir::Unknown);
        for (dir, tx) in [
            ("instance/attributes/", attr_tx),
            ("instance/disks/", disk_dir_tx),
        ] {
            tokio::spawn(mdwatch::run(
                client.clone(),
                cfg.metadata.clone(),
                dir,
                tx,
                stop.clone(),
            ));
        }
        let (disks_tx, disks_rx) = watch::channel(None);
        let (journal_tx, journal_rx) = mpsc::unbounded_channel();
        let resolver = Resolver {
            by_id_dir: cfg.agent.by_id_dir.clone(),
            sys_dir: cfg.agent.sys_dir.clone(),
            dev_dir: cfg.agent.dev_dir.clone(),
            ..Resolver::default()
        };
        let env = job::Env {
            agent: Arc::new(cfg.agent.clone()),
            scan: Arc::new(cfg.scan.clone()),
            scanners: Arc::new(cfg.scanners.clone()),
            sink: cfg.sink.clone(),
            store: store.clone(),
            resolver: Arc::new(resolver),
            scanner_instance: identity.instance_id.clone(),
            disks: disks_rx,
            slots: Arc::new(Semaphore::new(cfg.agent.concurrency())),
            report: journal_tx,
            compute: compute.clone(),
            instance_name: identity.name.clone(),
        };
        let (journals, errors) = store.load_all();
        for e in errors {
            tracing::error!("{e}");
        }
        let mut known: BTreeMap<String, Journal> = journals
            .into_iter()
            .map(|j| (j.id().to_owned(), j))
            .collect();
        // A queued job left unfinished: its message went back to the queue (given back, or its
        // lease ran out), so another instance may have it; this one does not go on with it.
        for j in known.values_mut() {
            if j.queued && !j.state.is_final() {
                tracing::warn!(
                    job_id = j.id(),
                    "queued job left unfinished by a previous run: cancelled, its request went \
                     back to the queue"
                );
                j.end(State::Cancelled, job::REQUEUED);
                if let Err(e) = store.save(j) {
                    tracing::error!("{e:#}");
                }
            }
        }
        // What the guest attributes say may be older than the journals (writes still waiting
        // when the previous run ended): every job's status is set again; the reporter sends only
        // what differs from what it wrote before.
        for j in known.values() {
            reporter.set(j.id(), &job::status_json(j));
        }
        Agent {
            cfg,
            identity,
            store,
            stop,
            hard_stop: CancellationToken::new(),
            reporter,
            env,
            disks_tx,
            attributes,
            disks,
            journal_rx,
            known,
            running: HashMap::new(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            assignment_errors: Vec::new(),
            idle_since: None,
            powered_off: false,
            compute,
            idle_note: None,
            idle_override: None,
            idle_grace_override: None,
            created_by: None,
            leaving: false,
            deliveries: mpsc::unbounded_channel().1,
            settle: None,
            held: std::collections::BTreeSet::new(),
            free_tx: watch::channel(0).0,
        }
    }

    async fn main_loop(&mut self, notifier: Notifier) -> anyhow::Result<()> {
        let watchdog_every = Notifier::watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        let mut idle_timer: Option<Instant> = None;
        let mut shown = String::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        self.resume_releases();
        loop {
            tokio::select! {
                _ = sweep.tick() => self.sweep(),
                () = self.stop.cancelled() => return Ok(()),
                changed = self.attributes.changed() => {
                    if changed.is_ok() {
                        self.reconcile();
                    }
                }
                changed = self.disks.changed() => {
                    if changed.is_ok() {
                        self.on_disks();
                    }
                }
                Some(j) = self.journal_rx.recv() => self.on_journal(j),
                Some(m) = self.deliveries.recv() => self.on_delivery(&m),
                Some(done) = self.tasks.join_next_with_id() => self.on_task_end(done),
                _ = watchdog.tick(), if watchdog_every.is_some() => notifier.watchdog(),
                () = sleep_until(idle_timer), if idle_timer.is_some() => self.power_off().await,
            }
            let line = self.summary_line();
            if line != shown {
                notifier.status(&line);
                shown = line;
            }
            idle_timer = self.idle_deadline();
            self.update_free();
        }
    }

    /// Whether the scanner `name` (of an assignment or request) can run here.
    fn check_scanner(&self, name: &str) -> Result<(), String> {
        self.cfg
            .scanners
            .preflight(name, &self.cfg.scan.scanner_search_path, true)
            .map_err(|e| format!("{e:#}"))
    }

    /// Job slots left for queued requests (none once stopping).
    fn update_free(&self) {
        let queued = self.held.len();
        let free = if self.stop.is_cancelled() || self.leaving {
            0
        } else {
            self.cfg.agent.concurrency().saturating_sub(queued)
        };
        self.free_tx
            .send_if_modified(|f| std::mem::replace(f, free) != free);
    }

    /// A request pulled from the queue: a new job, a duplicate of one that runs (its lease is
    /// held too), or one already finished (answered from its journal).
    fn on_delivery(&mut self, m: &queue::Delivery) {
        let Some(settle) = self.settle.clone() else {
            return;
        };
        if self.leaving {
            let _ = settle.send(queue::Settle::GiveBack {
                job: None,
                ack_id: Some(m.ack_id.clone()),
            });
            return;
        }
        // A message answered without a job of its own (refused, or finished before).
        let answer = |result| {
            let _ = settle.send(queue::Settle::Finish {
                job: None,
                ack_id: Some(m.ack_id.clone()),
                result,
            });
        };
        let a = match queue::parse_request(m, &|name| self.check_scanner(name)) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(message_id = m.message_id, "bad request from the queue: {e}");
                answer(queue::refusal_json(m, &e, &self.identity.name));
                return;
            }
        };
        let id = a.id.clone();
        let hold = queue::Settle::Hold {
            job: id.clone(),
            ack_id: m.ack_id.clone(),
        };
        match self.known.get(&id) {
            Some(j) if self.held.contains(&id) => {
                tracing::info!(
                    job_id = j.id(),
                    "request delivered again while its job runs"
                );
                let _ = settle.send(hold);
            }
            Some(j) if j.state.is_final() && j.state != State::Cancelled => {
                tracing::info!(
                    job_id = j.id(),
                    "request delivered again after its job ended"
                );
                answer(if j.queued {
                    queue::result_json(j, &self.identity.name)
                } else {
                    queue::refusal_json(
                        m,
                        &format!("job id '{id}' is a metadata assignment's"),
                        &self.identity.name,
                    )
                });
            }
            Some(j) if !j.queued && !j.state.is_final() => {
                let e = format!("job id '{id}' is a metadata assignment's");
                answer(queue::refusal_json(m, &e, &self.identity.name));
            }
            _ => {
                let mut j = Journal::new(a);
                j.queued = true;
                self.held.insert(id);
                let _ = settle.send(hold);
                self.start(j);
            }
        }
    }

    /// The assignments changed (or were read for the first time).
    fn reconcile(&mut self) {
        let dir = self.attributes.borrow_and_update().clone();
        let attrs = match dir {
            Dir::Unknown => return,
            Dir::Absent => BTreeMap::new(),
            Dir::Value(json) => match serde_json::from_str::<BTreeMap<String, String>>(&json) {
                Ok(attrs) => attrs,
                Err(e) => {
                    tracing::error!("instance/attributes/ is not a JSON object: {e}");
                    return;
                }
            },
        };
        self.idle_override = self.idle_from_metadata(attrs.get(IDLE_ATTRIBUTE));
        self.created_by = attrs.get(CREATED_BY_ATTRIBUTE).cloned();
        self.idle_grace_override = attrs.get(IDLE_GRACE_ATTRIBUTE).and_then(|v| {
            v.trim()
                .parse()
                .inspect_err(|_| {
                    tracing::error!(
                        "metadata {IDLE_GRACE_ATTRIBUTE} = '{v}': not a number of seconds; \
                         [agent] idle_grace_secs applies"
                    );
                })
                .ok()
        });
        let text = attrs
            .get(assignments::ATTRIBUTE)
            .cloned()
            .unwrap_or_default();
        let parsed = if text.trim().is_empty() {
            assignments::Parsed::default()
        } else {
            assignments::parse(&text, &|name| self.check_scanner(name))
        };
        if parsed.errors != self.assignment_errors {
            for e in &parsed.errors {
                tracing::error!("bad assignment: {e}");
            }
            self.assignment_errors.clone_from(&parsed.errors);
        }
        if parsed.unreadable {
            // Nothing can be concluded from a broken list: keep what runs.
            self.publish();
            return;
        }
        let wanted: BTreeMap<String, Assignment> = parsed
            .valid
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        // Withdrawn: cancel what runs.
        for (id, r) in &self.running {
            if !wanted.contains_key(id)
                && !self.known.get(id).is_some_and(|j| j.queued)
                && !r.control.cancel.is_cancelled()
            {
                tracing::info!(
                    job_id = id.as_str(),
                    "assignment withdrawn: cancelling the job"
                );
                r.control.withdrawn.store(true, Ordering::SeqCst);
                r.control.cancel.cancel();
            }
        }
        // New, resumed, or re-assigned after a cancellation.
        for (id, a) in &wanted {
            if self.running.contains_key(id) || self.known.get(id).is_some_and(|j| j.queued) {
                continue;
            }
            let journal = match self.known.get(id) {
                Some(j) if j.state == State::Cancelled => Journal::new(a.clone()),
                Some(j) if j.state.is_final() => {
                    if j.assignment != *a {
                        tracing::warn!(
                            job_id = id.as_str(),
                            "assignment '{id}' changed after its job finished; ids are not \
                             reused: ignored"
                        );
                    }
                    continue;
                }
                Some(j) => j.clone(),
                None => Journal::new(a.clone()),
            };
            self.start(journal);
        }
        // Journalled by a previous run and no longer assigned: results already written are
        // still sent; anything earlier is cancelled.
        let orphans: Vec<Journal> = self
            .known
            .values()
            .filter(|j| {
                !j.state.is_final()
                    && !j.queued
                    && !wanted.contains_key(j.id())
                    && !self.running.contains_key(j.id())
            })
            .cloned()
            .collect();
        for mut j in orphans {
            if j.state >= State::Scanned {
                self.start(j);
            } else {
                j.end(State::Cancelled, job::WITHDRAWN);
                self.save_ended(j);
            }
        }
        self.publish();
    }

    fn start(&mut self, j: Journal) {
        let id = j.id().to_owned();
        // A resumed job's journal is on disk already; a new one is written before it runs.
        let fresh = self.known.get(&id).is_none_or(|k| k.state.is_final());
        if fresh {
            if let Err(e) = self.store.save(&j) {
                tracing::error!(
                    job_id = id.as_str(),
                    "cannot write the journal ({e:#}); starting anyway: every transition \
                     tries again"
                );
            }
        }
        let control = Control {
            cancel: self.stop.child_token(),
            withdrawn: Arc::default(),
            hard_stop: self.hard_stop.clone(),
        };
        let span = tracing::info_span!(
            "job",
            job_id = id.as_str(),
            device = j.assignment.device_name.as_str(),
            snapshot = j.assignment.snapshot.as_str()
        );
        tracing::info!(parent: &span, state = j.state.as_str(), "job started");
        let env = self.env.clone();
        let ctl = control.clone();
        let handle = self
            .tasks
            .spawn(async move { job::run(&env, j, &ctl).await }.instrument(span));
        self.task_ids.insert(handle.id(), id.clone());
        self.running.insert(id, Running { control });
    }

    fn on_disks(&mut self) {
        let parsed = match &*self.disks.borrow_and_update() {
            Dir::Unknown => return,
            Dir::Absent => Ok(Vec::new()),
            Dir::Value(json) => assignments::parse_disks(json),
        };
        match parsed {
            Ok(list) => {
                self.disks_tx.send_replace(Some(list));
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    fn on_journal(&mut self, j: Journal) {
        if j.queued && j.state.is_final() && self.held.remove(j.id()) {
            if let Some(settle) = &self.settle {
                let cmd = if j.state == State::Cancelled {
                    queue::Settle::GiveBack {
                        job: Some(j.id().to_owned()),
                        ack_id: None,
                    }
                } else {
                    queue::Settle::Finish {
                        job: Some(j.id().to_owned()),
                        ack_id: None,
                        result: queue::result_json(&j, &self.identity.name),
                    }
                };
                let _ = settle.send(cmd);
            }
        }
        self.reporter.set(j.id(), &job::status_json(&j));
        self.known.insert(j.id().to_owned(), j);
        self.publish();
    }

    fn on_task_end(&mut self, done: Result<(tokio::task::Id, Journal), tokio::task::JoinError>) {
        let (task, journal) = match done {
            Ok((task, j)) => (task, Some(j)),
            Err(e) => (e.id(), None),
        };
        let Some(id) = self.task_ids.remove(&task) else {
            return;
        };
        self.running.remove(&id);
        match journal {
            // Results written but not acknowledged, and the job stopped for a reason other than
            // the agent stopping (its assignment was withdrawn): they are still sent.
            Some(j)
                if !j.state.is_final()
                    && j.state >= State::Scanned
                    && !self.stop.is_cancelled() =>
            {
                self.on_journal(j.clone());
                self.start(j);
            }
            Some(j) => self.on_journal(j),
            None => {
                // A bug, not the disk: the job is failed rather than retried forever.
                if let Some(mut j) = self.known.get(&id).cloned() {
                    tracing::error!(job_id = id.as_str(), "the job's task panicked");
                    j.end(State::Failed, "internal error: the job's task panicked");
                    self.save_ended(j);
                }
            }
        }
    }

    /// Journal and report a job the agent ended itself (no task of its own runs it).
    fn save_ended(&mut self, j: Journal) {
        if let Err(e) = self.store.save(&j) {
            tracing::error!("{e:#}");
        }
        self.on_journal(j);
    }

    fn counts(&self) -> (usize, usize, usize, usize) {
        let (mut done, mut failed, mut cancelled) = (0, 0, 0);
        for j in self.known.values() {
            match j.state {
                State::Done => done += 1,
                State::Failed => failed += 1,
                State::Cancelled => cancelled += 1,
                _ => {}
            }
        }
        (self.running.len(), done, failed, cancelled)
    }

    fn summary_line(&self) -> String {
        let (running, done, failed, cancelled) = self.counts();
        format!("{running} running, {done} done, {failed} failed, {cancelled} cancelled")
    }

    fn agent_state(&self) -> &'static str {
        if self.stop.is_cancelled() {
            "stopping"
        } else if self.running.is_empty() {
            "idle"
        } else {
            "running"
        }
    }

    /// The `agent` guest attribute.
    fn publish(&self) {
        let (running, done, failed, cancelled) = self.counts();
        self.reporter.set(
            AGENT_KEY,
            &serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "state": self.agent_state(),
                "instance": self.identity.name,
                "running": running,
                "done": done,
                "failed": failed,
                "cancelled": cancelled,
                "errors": self.assignment_errors,
                "idle_action": self.idle_note,
            }),
        );
    }

    /// When to run the idle action, if it is due.
    fn idle_deadline(&mut self) -> Option<Instant> {
        let leave = self.idle_action() == IdleAction::LeaveGroup;
        let idle = self.running.is_empty() && (!self.known.is_empty() || leave);
        if !idle || self.stop.is_cancelled() {
            self.idle_since = None;
            return None;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        (self.idle_action() != IdleAction::None && !self.powered_off)
            .then(|| since + Duration::from_secs(self.idle_grace()))
    }

    /// Jobs that ended before a restart with their disk not yet released: release it now (a
    /// final job's run does only that), before the first sweep, which then leaves them alone.
    fn resume_releases(&mut self) {
        let pending: Vec<Journal> = self
            .known
            .values()
            .filter(|j| j.state.is_final() && j.disk.as_ref().is_some_and(|d| !d.released()))
            .cloned()
            .collect();
        for j in pending {
            self.start(j);
        }
    }

    /// `[agent] idle_action`, unless the instance's metadata says otherwise.
    fn idle_action(&self) -> IdleAction {
        self.idle_override.unwrap_or(self.cfg.agent.idle_action)
    }

    /// `[agent] idle_grace_secs`, unless the instance's metadata says otherwise.
    fn idle_grace(&self) -> u64 {
        self.idle_grace_override
            .unwrap_or(self.cfg.agent.idle_grace_secs)
    }

    /// The idle action the launcher set in metadata ([`IDLE_ATTRIBUTE`]), if valid.
    fn idle_from_metadata(&self, value: Option<&String>) -> Option<IdleAction> {
        let value = value?;
        let action = match value.trim() {
            "none" => IdleAction::None,
            "poweroff" if !self.cfg.agent.poweroff_command.is_empty() => IdleAction::Poweroff,
            "delete" => IdleAction::Delete,
            "leave-group" => IdleAction::LeaveGroup,
            other => {
                tracing::error!(
                    "metadata {IDLE_ATTRIBUTE} = '{other}': not none, poweroff (with a \
                     poweroff_command), delete or leave-group; [agent] idle_action applies"
                );
                return None;
            }
        };
        Some(action)
    }

    /// Remove disks labelled with this instance that no live job holds, in the background.
    /// Skipped without a service account (the metadata server has no token: nothing can have
    /// been made).
    fn sweep(&self) {
        let live: std::collections::BTreeSet<String> = self
            .known
            .values()
            .filter(|j| self.running.contains_key(j.id()) || !j.state.is_final())
            // The disk it made, or the one it is about to make.
            .map(|j| match &j.disk {
                Some(d) => d.name.clone(),
                None => assignments::derived_disk_name(&self.identity.name, j.id()),
            })
            .collect();
        let compute = self.compute.clone();
        let me = self.identity.name.clone();
        tokio::spawn(async move {
            match provision::sweep(&compute, &me, &live).await {
                Ok(removed) => {
                    for d in removed {
                        tracing::warn!(disk = d, "removed a leftover disk of this instance");
                    }
                }
                Err(compute::ComputeError::Token(e)) => {
                    tracing::debug!("no leftover-disk sweep: {e}");
                }
                Err(e) => tracing::warn!("leftover-disk sweep failed: {e}"),
            }
        });
    }

    /// Results of a finished job that the sink has not acknowledged: deleting the VM would
    /// lose them.
    fn unacknowledged(&self) -> Vec<String> {
        self.known
            .values()
            .filter(|j| {
                j.outputs
                    .iter()
                    .any(|o| !j.acknowledged.contains_key(&o.name))
            })
            .map(|j| j.id().to_owned())
            .collect()
    }

    async fn power_off(&mut self) {
        if matches!(
            self.idle_action(),
            IdleAction::Delete | IdleAction::LeaveGroup
        ) {
            self.delete_self().await;
            return;
        }
        self.powered_off = true;
        let argv = &self.cfg.agent.poweroff_command;
        let Some((program, args)) = argv.split_first() else {
            return;
        };
        tracing::warn!(
            "every job is finished and the agent was idle for {} s: powering off ({})",
            self.idle_grace(),
            argv.join(" ")
        );
        self.reporter.flush(FINAL_STATUS_WAIT).await;
        match tokio::process::Command::new(program)
            .args(args)
            .status()
            .await
        {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::error!("{}: {s}", argv.join(" ")),
            Err(e) => tracing::error!("cannot run {}: {e}", argv.join(" ")),
        }
    }

    /// `idle_action = "delete"` or `"leave-group"`: delete this instance, or have its group
    /// delete it, unless a result is unacknowledged.
    async fn delete_self(&mut self) {
        let waiting = self.unacknowledged();
        let leave = self.idle_action() == IdleAction::LeaveGroup;
        let group = self.created_by.clone().filter(|_| leave);
        let refusal = if !waiting.is_empty() {
            Some(format!(
                "not deleting this instance: results of {} not acknowledged (kept in the state directory)",
                waiting.join(", ")
            ))
        } else if leave && group.is_none() {
            Some(format!(
                "idle_action = \"leave-group\", but this instance has no {CREATED_BY_ATTRIBUTE} \
                 metadata: not made by a managed instance group"
            ))
        } else {
            None
        };
        if let Some(note) = refusal {
            if self.idle_note.as_deref() != Some(note.as_str()) {
                tracing::warn!("{note}");
                self.idle_note = Some(note);
                self.publish();
            }
            // Looked at again at the next idle deadline.
            self.idle_since = None;
            return;
        }
        // No request is taken from here on: one pulled meanwhile goes back to the queue.
        self.leaving = true;
        self.update_free();
        let me = self.identity.name.clone();
        let (doing, what) = match &group {
            Some(g) => (
                format!("leaving group {g} (it deletes instance {me})"),
                format!("leave group {g}"),
            ),
            None => (
                format!("deleting instance {me}"),
                "delete this instance".to_owned(),
            ),
        };
        let note = format!(
            "every job is finished, every result acknowledged, idle for {} s: {doing}",
            self.idle_grace()
        );
        tracing::warn!("{note}");
        self.idle_note = Some(note);
        self.publish();
        self.reporter.flush(FINAL_STATUS_WAIT).await;
        let sent = match &group {
            Some(g) => self.compute.leave_group(g, &me).await,
            None => self.compute.delete_instance(&me).await,
        };
        match sent {
            Ok(_) => self.powered_off = true,
            Err(e) => {
                let note = format!("cannot {what}: {e}");
                tracing::error!("{note}");
                self.idle_note = Some(note);
                self.idle_since = None;
                self.leaving = false;
                self.publish();
            }
        }
    }

    /// Stop: scans are cancelled by `stop` already (their tokens are its children); uploads get
    /// `stop_timeout_secs`. Then the last status is written.
    async fn shut_down(&mut self, notifier: Notifier) {
        let bound = Duration::from_secs(self.cfg.agent.stop_timeout_secs);
        notifier.stopping(bound + Duration::from_secs(30));
        tracing::info!("stopping: {} job(s) to wind down", self.running.len());
        self.publish();
        let hard = self.hard_stop.clone();
        let deadline = tokio::spawn(async move {
            tokio::time::sleep(bound).await;
            hard.cancel();
        });
        while let Some(done) = self.tasks.join_next_with_id().await {
            self.on_task_end(done);
            while let Ok(j) = self.journal_rx.try_recv() {
                self.on_journal(j);
            }
        }
        deadline.abort();
        while let Ok(j) = self.journal_rx.try_recv() {
            self.on_journal(j);
        }
        self.publish();
        self.reporter.flush(Duration::from_secs(5)).await;
        tracing::info!("stopped: {}", self.summary_line());
    }
}

/// Sleep until `at`; never wakes for `None` (a `select!` branch that is off).
async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}
