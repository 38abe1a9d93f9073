//! `snapscan launch`: the reference launcher. From a source VM (or disks, or existing
//! snapshots) to one scanner VM that does the rest: it snapshots the VM's disks, creates ONE
//! instance from the scanner image family with the assignments in its metadata, and with
//! `--wait` follows the VM's guest attributes until every job is final, then prints what each
//! found and where its results went.
//!
//! Two ways to hand the disks over. By default each assignment names its snapshot as a
//! `source`; the scanner VM (with a service account) creates, attaches, detaches and deletes
//! its disks itself and deletes its own instance once every result is acknowledged (metadata
//! `snapscan-idle-action = delete`). With `--attach-at-create` the disks are created with the
//! VM (read-only, auto-delete, a device name per assignment), the VM needs no service account,
//! powers itself off when done, and the launcher deletes it after `--wait`.
//!
//! It creates snapshots and the VM and reads guest attributes; it never attaches disks, edits
//! metadata after creation or polls disks. `--delete-snapshots` removes the snapshots it made
//! (only those) once the jobs are final or when the launch fails. `--dry-run` prints the
//! requests that change something instead of sending them.
//!
//! Not here: what the scanner VM does with the assignments ([`crate::agent`]), sending
//! requests ([`crate::compute`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use serde_json::{json, Value};

use crate::agent::assignments::{self, derived_device_name};
use crate::agent::{IDLE_ATTRIBUTE, IDLE_GRACE_ATTRIBUTE};
use crate::cli::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::compute::{self, Client, ComputeConfig, ComputeError, Tokens};

/// The label on everything `launch` creates (its value: the launch's stamp).
pub const LABEL: &str = "snapscan-launch";

/// The scope of the scanner VM's service account.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Arguments of `snapscan launch`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The project of the scanner VM (and, unless `--source-project`, of what is scanned).
    #[arg(long)]
    pub project: String,
    /// The zone of the scanner VM (and, unless `--source-zone`, of what is scanned).
    #[arg(long)]
    pub zone: String,
    /// Scan this VM: snapshot each of its disks.
    #[arg(long, value_name = "VM")]
    pub instance: Option<String>,
    /// Scan this disk (a name in the source zone, or `projects/P/zones/Z/disks/D`): snapshot
    /// it. Repeatable.
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<String>,
    /// Scan this existing snapshot (a name in the source project, or
    /// `projects/P/global/snapshots/S`). Repeatable.
    #[arg(long = "snapshot", value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// The project of `--instance` and `--disk` names. Default: `--project`.
    #[arg(long)]
    pub source_project: Option<String>,
    /// The zone of `--instance` and `--disk` names. Default: `--zone`.
    #[arg(long)]
    pub source_zone: Option<String>,
    /// The scanner VM's name. Default `snapscan-<UTC time>`.
    #[arg(long)]
    pub name: Option<String>,
    /// The image family of the scanner image.
    #[arg(long, default_value = "snapscan-scanner")]
    pub image_family: String,
    /// The project of the image family. Default: `--project`.
    #[arg(long)]
    pub image_project: Option<String>,
    /// The scanner VM's machine type.
    #[arg(long, default_value = "e2-standard-2")]
    pub machine_type: String,
    /// The VPC network (no external address is given).
    #[arg(long, default_value = "default")]
    pub network: String,
    /// The subnetwork, in the zone's region.
    #[arg(long)]
    pub subnet: Option<String>,
    /// The scanner VM's service account (its email, or `default`). Needed unless
    /// `--attach-at-create`; give it the scanner role of the README.
    #[arg(long, value_name = "EMAIL")]
    pub service_account: Option<String>,
    /// Create the disks with the VM (read-only, auto-delete) instead of letting the VM make
    /// its own; the VM then needs no service account, and the launcher deletes it after
    /// `--wait`.
    #[arg(long)]
    pub attach_at_create: bool,
    /// The scanner every assignment runs (a profile of the image's settings).
    #[arg(long)]
    pub scanner: Option<String>,
    /// Follow the jobs until they are final and print their results.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: give up after this many seconds (the VM is left as it is).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout_secs: u64,
    /// With `--wait`: seconds between reads of the guest attributes.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub poll_secs: u64,
    /// With `--wait`: delete the snapshots this launch made once the jobs are final.
    #[arg(long, requires = "wait")]
    pub delete_snapshots: bool,
    /// Print the requests that would change something (method, URL, JSON body) instead of
    /// sending them; reads (the source VM) are still made.
    #[arg(long)]
    pub dry_run: bool,
    /// The Compute API base URL (tests, private endpoints).
    #[arg(long, default_value = compute::DEFAULT_URL, value_name = "URL")]
    pub compute_url: String,
}

/// One disk to scan, as the launch hands it over.
#[derive(Debug, Clone)]
struct Planned {
    /// The assignment id.
    id: String,
    /// `projects/P/global/snapshots/S`.
    snapshot_path: String,
    /// `S`.
    snapshot: String,
    /// Made by this launch (deleted with `--delete-snapshots`).
    made: bool,
    source_instance: Option<String>,
    source_project: String,
}

/// What `--wait` saw of one job: its guest attribute's value.
type Seen = BTreeMap<String, Value>;

/// Run `snapscan launch`; returns the exit code.
pub async fn run(args: LaunchArgs) -> u8 {
    if let Err(e) = check(&args) {
        say!("error: {e}");
        return EXIT_USAGE;
    }
    let stamp = stamp();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("snapscan-{stamp}"));
    let tokens = match Tokens::adc().await {
        Ok(t) => Arc::new(t),
        Err(e) if args.dry_run => Arc::new(Tokens::Unavailable(e.to_string())),
        Err(e) => {
            say!("error: {e}");
            return EXIT_FAILURE;
        }
    };
    let cfg = ComputeConfig {
        url: args.compute_url.clone(),
        ..ComputeConfig::default()
    };
    if let Err(e) = cfg.validate() {
        say!("error: --compute-url: {e:#}");
        return EXIT_USAGE;
    }
    let launch = Launch {
        cfg,
        tokens,
        stamp,
        name,
        args,
    };
    let mut reached = Reached::default();
    let code = match launch.go(&mut reached).await {
        Ok(code) => code,
        Err(e) => {
            say!("error: {e:#}");
            EXIT_FAILURE
        }
    };
    // Only snapshots nothing needs any more: no VM was made, or its jobs are final. A VM left
    // running (timed out, interrupted) still makes its disks from them.
    let unneeded = !reached.vm_created || reached.jobs_final;
    if launch.args.delete_snapshots && !launch.args.dry_run {
        if unneeded {
            launch.delete_snapshots(&reached.planned).await;
        } else if reached.planned.iter().any(|p| p.made) {
            say!("the snapshots are kept: the scanner VM may still need them");
        }
    }
    code
}

/// How far a launch got.
#[derive(Default)]
struct Reached {
    /// Each disk, as soon as it is known (a snapshot may exist before its wait failed).
    planned: Vec<Planned>,
    vm_created: bool,
    jobs_final: bool,
}

/// The command line's problems that no request can fix.
fn check(args: &LaunchArgs) -> anyhow::Result<()> {
    if args.instance.is_none() && args.disks.is_empty() && args.snapshots.is_empty() {
        anyhow::bail!("nothing to scan: give --instance, --disk or --snapshot");
    }
    if !args.attach_at_create && args.service_account.is_none() {
        anyhow::bail!(
            "the scanner VM makes its own disks and needs --service-account (or use \
             --attach-at-create)"
        );
    }
    if args.poll_secs == 0 || args.timeout_secs == 0 {
        anyhow::bail!("--poll-secs and --timeout-secs must be at least 1");
    }
    if let Some(name) = &args.name {
        if !gce_name(name) {
            anyhow::bail!(
                "--name '{name}' is not a Compute Engine name (a lower-case letter, then \
                 lower-case letters, digits or '-', at most 63)"
            );
        }
    }
    Ok(())
}

/// `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`.
fn gce_name(name: &str) -> bool {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok_chars
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
}

/// The UTC time as `20261207t010203`, for names.
fn stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| *c != 'z')
        .collect()
}

struct Launch {
    cfg: ComputeConfig,
    tokens: Arc<Tokens>,
    stamp: String,
    name: String,
    args: LaunchArgs,
}

impl Launch {
    /// A client for `project`/`zone`, dry-run if asked.
    fn client(&self, project: &str, zone: &str) -> anyhow::Result<Client> {
        let c = Client::with_tokens(&self.cfg, self.tokens.clone(), project, zone)?;
        Ok(if self.args.dry_run { c.dry_run() } else { c })
    }

    fn source_project(&self) -> &str {
        self.args
            .source_project
            .as_deref()
            .unwrap_or(&self.args.project)
    }

    fn source_zone(&self) -> &str {
        self.args.source_zone.as_deref().unwrap_or(&self.args.zone)
    }

    /// Snapshot, create the VM, and wait if asked; `reached` says how far it got.
    async fn go(&self, reached: &mut Reached) -> anyhow::Result<u8> {
        let planned = &mut reached.planned;
        self.take_snapshots(planned).await?;
        for s in &self.args.snapshots {
            let (project, snapshot) = snapshot_ref(s, self.source_project())?;
            planned.push(Planned {
                id: unique_id(planned, &snapshot),
                snapshot_path: format!("projects/{project}/global/snapshots/{snapshot}"),
                snapshot,
                made: false,
                source_instance: None,
                source_project: project,
            });
        }
        let scanner = self.client(&self.args.project, &self.args.zone)?;
        let body = self.instance_body(planned);
        let op = scanner
            .insert_instance(body)
            .await
            .context_for("create the scanner VM")?;
        // From here on the VM may exist (an operation that fails late may still leave it).
        reached.vm_created = !self.args.dry_run;
        let planned = &reached.planned;
        scanner
            .wait(op)
            .await
            .context_for("create the scanner VM")?;
        if self.args.dry_run {
            say!("dry run: nothing was created");
            return Ok(EXIT_OK);
        }
        println!(
            "scanner VM {} created in {}/{} with {} assignment(s):",
            self.name,
            self.args.project,
            self.args.zone,
            planned.len()
        );
        for p in planned.iter() {
            println!("  {}: {}", p.id, p.snapshot_path);
        }
        if !self.args.wait {
            println!(
                "follow it: gcloud compute instances get-guest-attributes {} --zone {} \
                 --query-path=snapscan/",
                self.name, self.args.zone
            );
            return Ok(EXIT_OK);
        }
        let ids: BTreeSet<String> = planned.iter().map(|p| p.id.clone()).collect();
        let seen = tokio::select! {
            seen = self.follow(&scanner, &ids) => seen?,
            _ = tokio::signal::ctrl_c() => {
                say!("stopped waiting; scanner VM {} keeps running", self.name);
                return Ok(EXIT_INTERRUPTED);
            }
        };
        reached.jobs_final = true;
        let code = report(planned, &seen);
        self.end_vm(&scanner).await?;
        Ok(code)
    }

    /// Snapshot the disks of `--instance` and each `--disk`, waiting for each snapshot.
    async fn take_snapshots(&self, planned: &mut Vec<Planned>) -> anyhow::Result<()> {
        let mut disks: Vec<(String, String, String, Option<String>)> = Vec::new();
        if let Some(vm) = &self.args.instance {
            let source = self.client(self.source_project(), self.source_zone())?;
            let instance = source
                .get_instance(vm)
                .await
                .context_for(&format!("read the source VM {vm}"))?;
            for d in &instance.disks {
                let (project, zone, disk) =
                    disk_ref(&d.source, self.source_project(), self.source_zone())?;
                disks.push((project, zone, disk, Some(vm.clone())));
            }
            if disks.is_empty() {
                anyhow::bail!("the source VM {vm} has no disks");
            }
        }
        for d in &self.args.disks {
            let (project, zone, disk) = disk_ref(d, self.source_project(), self.source_zone())?;
            disks.push((project, zone, disk, None));
        }
        let labels = BTreeMap::from([(LABEL.to_owned(), self.stamp.clone())]);
        for (project, zone, disk, source_instance) in disks {
            let snapshot = snapshot_name(&disk, &self.stamp);
            let client = self.client(&project, &zone)?;
            let what = format!("snapshot disk {disk} of {project}/{zone}");
            let op = client
                .create_snapshot(&disk, &snapshot, &labels)
                .await
                .context_for(&what)?;
            let id = unique_id(planned, &disk);
            // Known before it is done: a failed wait may still leave a snapshot to clean up.
            planned.push(Planned {
                id,
                snapshot_path: format!("projects/{project}/global/snapshots/{snapshot}"),
                snapshot: snapshot.clone(),
                made: true,
                source_instance,
                source_project: project.clone(),
            });
            client.wait(op).await.context_for(&what)?;
            if !self.args.dry_run {
                say!("snapshot {snapshot} of disk {disk} taken");
            }
        }
        Ok(())
    }

    /// The `instances.insert` body of the scanner VM.
    fn instance_body(&self, planned: &[Planned]) -> Value {
        let image_project = self
            .args
            .image_project
            .as_deref()
            .unwrap_or(&self.args.project);
        let mut disks = vec![json!({
            "boot": true,
            "autoDelete": true,
            "initializeParams": {
                "sourceImage": format!(
                    "projects/{image_project}/global/images/family/{}", self.args.image_family
                ),
            },
        })];
        let mut entries = Vec::new();
        for (i, p) in planned.iter().enumerate() {
            let mut entry = json!({
                "id": p.id,
                "snapshot": p.snapshot,
                "source_project": p.source_project,
            });
            if let Some(vm) = &p.source_instance {
                entry["source_instance"] = json!(vm);
            }
            if let Some(scanner) = &self.args.scanner {
                entry["scanner"] = json!(scanner);
            }
            if self.args.attach_at_create {
                let device = derived_device_name(&p.id);
                entry["device_name"] = json!(device);
                disks.push(json!({
                    "deviceName": device,
                    "mode": "READ_ONLY",
                    "autoDelete": true,
                    "initializeParams": {
                        "diskName": format!("{}-d{i}", self.name.chars().take(58).collect::<String>()),
                        "sourceSnapshot": p.snapshot_path,
                        "labels": {LABEL: self.stamp},
                    },
                }));
            } else {
                entry["source"] = json!({"snapshot": p.snapshot_path});
            }
            entries.push(entry);
        }
        let idle = if self.args.attach_at_create {
            "poweroff"
        } else {
            "delete"
        };
        let mut network = json!({
            "network": format!("projects/{}/global/networks/{}", self.args.project, self.args.network),
        });
        if let Some(subnet) = &self.args.subnet {
            let region = self
                .args
                .zone
                .rsplit_once('-')
                .map_or(self.args.zone.as_str(), |(r, _)| r);
            network["subnetwork"] = json!(format!(
                "projects/{}/regions/{region}/subnetworks/{subnet}",
                self.args.project
            ));
        }
        let mut body = json!({
            "name": self.name,
            "machineType": format!("zones/{}/machineTypes/{}", self.args.zone, self.args.machine_type),
            "labels": {LABEL: self.stamp},
            "disks": disks,
            "networkInterfaces": [network],
            "metadata": {"items": [
                {"key": "enable-guest-attributes", "value": "TRUE"},
                {"key": assignments::ATTRIBUTE, "value": Value::Array(entries).to_string()},
                {"key": IDLE_ATTRIBUTE, "value": idle},
                // Idle long enough for a launcher polling every --poll-secs to read the end.
                {"key": IDLE_GRACE_ATTRIBUTE, "value": (3 * self.args.poll_secs).to_string()},
            ]},
            "serviceAccounts": [],
        });
        if let Some(email) = &self.args.service_account {
            body["serviceAccounts"] = json!([{"email": email, "scopes": [CLOUD_PLATFORM]}]);
        }
        body
    }

    /// Read the guest attributes every `--poll-secs` until every job in `ids` is final; the
    /// last value of each.
    async fn follow(&self, scanner: &Client, ids: &BTreeSet<String>) -> anyhow::Result<Seen> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout_secs);
        let progress = crate::progress::Progress::start(&format!("waiting for {}", self.name));
        let terminal = std::io::stderr().is_terminal();
        let mut seen = Seen::new();
        loop {
            let attrs = match scanner.guest_attributes(&self.name, "snapscan/").await {
                Ok(a) => a,
                Err(ComputeError::NotFound { .. }) => anyhow::bail!(
                    "the scanner VM {} is gone before its jobs were final",
                    self.name
                ),
                Err(e) if e.is_retryable() => {
                    tracing::info!("reading guest attributes: {e}");
                    Vec::new()
                }
                Err(e) => return Err(e).context_for("read the scanner VM's guest attributes"),
            };
            for a in attrs {
                if !ids.contains(&a.key) {
                    continue;
                }
                let Ok(value) = serde_json::from_str::<Value>(&a.value) else {
                    continue;
                };
                let state =
                    |v: Option<&Value>| v.and_then(|v| v["state"].as_str()).map(str::to_owned);
                if state(seen.get(&a.key)) != state(Some(&value)) && !terminal {
                    say!("{}: {}", a.key, describe(&value));
                }
                seen.insert(a.key, value);
            }
            let finals = seen.values().filter(|v| is_final(v)).count();
            progress.set(format!("{}: {finals}/{} jobs final", self.name, ids.len()));
            if finals == ids.len() {
                progress.finish();
                return Ok(seen);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "timed out after {} s with {finals}/{} jobs final; the scanner VM {} is \
                     left as it is",
                    self.args.timeout_secs,
                    ids.len(),
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_secs(self.args.poll_secs)).await;
        }
    }

    /// After the jobs: a VM with its own disks deletes itself (wait for that); one created
    /// with its disks is deleted here.
    async fn end_vm(&self, scanner: &Client) -> anyhow::Result<()> {
        if self.args.attach_at_create {
            let op = scanner
                .delete_instance(&self.name)
                .await
                .context_for("delete the scanner VM")?;
            scanner
                .wait(op)
                .await
                .context_for("delete the scanner VM")?;
            println!("scanner VM {} deleted (its disks with it)", self.name);
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout_secs);
        loop {
            match scanner.get_instance(&self.name).await {
                Err(ComputeError::NotFound { .. }) => {
                    println!("scanner VM {} deleted itself", self.name);
                    return Ok(());
                }
                Ok(_) if Instant::now() >= deadline => anyhow::bail!(
                    "the scanner VM {} did not delete itself in {} s",
                    self.name,
                    self.args.timeout_secs
                ),
                Ok(_) => {}
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e).context_for("read the scanner VM"),
            }
            tokio::time::sleep(Duration::from_secs(self.args.poll_secs)).await;
        }
    }

    /// Delete the snapshots this launch made; a failure is said, not fatal.
    async fn delete_snapshots(&self, planned: &[Planned]) {
        for p in planned.iter().filter(|p| p.made) {
            let result = async {
                let client = self.client(&p.source_project, &self.args.zone)?;
                let op = client.delete_snapshot(&p.snapshot).await?;
                client.wait(op).await?;
                anyhow::Ok(())
            }
            .await;
            match result {
                Ok(()) => say!("snapshot {} deleted", p.snapshot),
                Err(e) => say!("error: cannot delete snapshot {}: {e:#}", p.snapshot),
            }
        }
    }
}

/// A job's guest-attribute value in a few words: its state, OS, error.
fn describe(v: &Value) -> String {
    let mut line = v["state"].as_str().unwrap_or("?").to_owned();
    if let Some(os) = v["os"].as_str() {
        line.push_str(&format!(" ({os})"));
    }
    if let Some(e) = v["error"].as_str() {
        line.push_str(&format!(": {e}"));
    }
    line
}

fn is_final(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("done" | "failed" | "cancelled"))
}

/// Print each job's end; `EXIT_OK` when every one is `done`.
fn report(planned: &[Planned], seen: &Seen) -> u8 {
    let mut code = EXIT_OK;
    for p in planned {
        let v = seen.get(&p.id).cloned().unwrap_or(Value::Null);
        println!("{}: {}", p.id, describe(&v));
        if v["state"] != "done" {
            code = EXIT_FAILURE;
        }
        let r = &v["result"];
        if !r.is_null() {
            let outputs: Vec<&str> = r["outputs"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "  scan {}, {} packages; {} of {} outputs acknowledged by the receiver: {}",
                r["status"].as_str().unwrap_or("?"),
                r["packages"],
                r["acknowledged"],
                outputs.len(),
                outputs.join(", ")
            );
        }
    }
    code
}

/// `(project, zone, disk)` of a disk name or `projects/P/zones/Z/disks/D` (or its URL).
fn disk_ref(s: &str, project: &str, zone: &str) -> anyhow::Result<(String, String, String)> {
    let rel = s.find("projects/").map_or(s, |at| &s[at..]);
    match rel.split('/').collect::<Vec<_>>().as_slice() {
        [d] if !d.is_empty() => Ok((project.to_owned(), zone.to_owned(), (*d).to_owned())),
        ["projects", p, "zones", z, "disks", d] if ![p, z, d].iter().any(|x| x.is_empty()) => {
            Ok(((*p).to_owned(), (*z).to_owned(), (*d).to_owned()))
        }
        _ => anyhow::bail!("'{s}' is neither a disk name nor projects/P/zones/Z/disks/D"),
    }
}

/// `(project, snapshot)` of a snapshot name or `projects/P/global/snapshots/S`.
fn snapshot_ref(s: &str, project: &str) -> anyhow::Result<(String, String)> {
    let rel = s.find("projects/").map_or(s, |at| &s[at..]);
    match rel.split('/').collect::<Vec<_>>().as_slice() {
        [n] if !n.is_empty() => Ok((project.to_owned(), (*n).to_owned())),
        ["projects", p, "global", "snapshots", n] if !p.is_empty() && !n.is_empty() => {
            Ok(((*p).to_owned(), (*n).to_owned()))
        }
        _ => anyhow::bail!("'{s}' is neither a snapshot name nor projects/P/global/snapshots/S"),
    }
}

/// `<disk>-snapscan-<stamp>`, the disk name cut so that it fits 63 characters.
fn snapshot_name(disk: &str, stamp: &str) -> String {
    let tail = format!("-snapscan-{stamp}");
    let mut head: String = disk.chars().take(63 - tail.len()).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}{tail}")
}

/// An assignment id from `base` not yet taken by `planned` (`-2`, `-3`... when it is).
fn unique_id(planned: &[Planned], base: &str) -> String {
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(90)
        .collect();
    let taken = |id: &str| planned.iter().any(|p| p.id == id);
    let mut id = base.clone();
    let mut n = 1;
    while taken(&id) || !assignments::valid_id(&id) {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

/// `.context(...)` for Compute errors, naming the step.
trait StepContext<T> {
    fn context_for(self, step: &str) -> anyhow::Result<T>;
}

impl<T> StepContext<T> for Result<T, ComputeError> {
    fn context_for(self, step: &str) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::Error::new(e).context(format!("cannot {step}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_parsed() {
        assert_eq!(
            disk_ref("web-1", "p", "z").ok(),
            Some(("p".into(), "z".into(), "web-1".into()))
        );
        assert_eq!(
            disk_ref(
                "https://compute.googleapis.com/compute/v1/projects/q/zones/y/disks/d",
                "p",
                "z"
            )
            .ok(),
            Some(("q".into(), "y".into(), "d".into()))
        );
        assert!(disk_ref("projects/q/zones//disks/d", "p", "z").is_err());
        assert_eq!(
            snapshot_ref("projects/q/global/snapshots/s", "p").ok(),
            Some(("q".into(), "s".into()))
        );
        assert!(snapshot_ref("a/b", "p").is_err());
    }

    #[test]
    fn names_fit() {
        let stamp = "20261207t010203";
        let long = "d".repeat(70);
        let n = snapshot_name(&long, stamp);
        assert_eq!(n.len(), 63);
        assert!(gce_name(&n), "{n}");
        assert!(gce_name(&snapshot_name("web-1-boot", stamp)));
        assert!(!gce_name("Web"));
        assert!(!gce_name("1abc"));
        assert!(!gce_name("abc-"));
    }

    #[test]
    fn ids_are_unique_and_valid() {
        let mut planned = Vec::new();
        for base in ["web.1", "web.1", "web_1"] {
            let id = unique_id(&planned, base);
            assert!(assignments::valid_id(&id), "{id}");
            planned.push(Planned {
                id,
                snapshot_path: String::new(),
                snapshot: String::new(),
                made: false,
                source_instance: None,
                source_project: String::new(),
            });
        }
        let ids: Vec<&str> = planned.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["web_1", "web_1-2", "web_1-3"]);
    }
}
