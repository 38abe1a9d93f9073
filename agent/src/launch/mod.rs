//! The launchers. `snapscan launch` (here): the reference launcher. From a source VM (or
//! disks, existing snapshots, or images) to one scanner VM that does the rest: it snapshots the VM's disks, creates ONE
//! instance from the scanner image family with the assignments in its metadata, and with
//! `--wait` follows the VM's guest attributes until every job is final, then prints what each
//! found and where its results went.
//!
//! Two ways to hand the disks over. By default each assignment names its snapshot (or image) as
//! a `source`; the scanner VM (with a service account) creates, attaches, detaches and deletes
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
//! `snapscan submit` ([`submit`]) is the launcher of a fleet: it publishes the disks as
//! requests to the fleet's queue instead of creating a VM. Both take what to scan and snapshot
//! it the same way ([`sources`]).
//!
//! Not here: what the scanner VM does with the assignments ([`crate::agent`]), sending
//! requests ([`crate::compute`]).

pub mod sources;
pub mod submit;

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use crate::agent::assignments::{self, derived_device_name, Source};
use crate::agent::{IDLE_ATTRIBUTE, IDLE_GRACE_ATTRIBUTE};
use crate::cli::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::compute::{self, Client, ComputeError};
use sources::{Planned, Seen, Snapshots, SourceArgs, StepContext as _, LABEL};

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
    /// What to scan.
    #[command(flatten)]
    pub sources: SourceArgs,
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

/// Run `snapscan launch`; returns the exit code.
pub async fn run(args: LaunchArgs) -> u8 {
    let policy = match check(&args) {
        Ok(policy) => policy,
        Err(e) => {
            say!("error: {e:#}");
            return EXIT_USAGE;
        }
    };
    let snaps = match Snapshots::new(
        &args.compute_url,
        args.dry_run,
        true,
        &args.project,
        &args.zone,
    )
    .await
    {
        Ok(s) => s,
        Err(code) => return code,
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("snapscan-{}", snaps.stamp));
    let launch = Launch {
        snaps,
        name,
        policy,
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
    if launch.args.delete_snapshots {
        let why = "the scanner VM may still need them";
        launch.snaps.clean_up(&reached.planned, unneeded, why).await;
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

/// The command line's problems that no request can fix; the text of `--policy`, read and
/// checked here once.
fn check(args: &LaunchArgs) -> anyhow::Result<Option<String>> {
    if args.sources.is_empty() {
        anyhow::bail!("nothing to scan: give --instance, --disk, --snapshot or --image");
    }
    let policy = args.sources.policy_text()?;
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
    Ok(policy)
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

struct Launch {
    snaps: Snapshots,
    name: String,
    /// The text of `--policy`, sent in every assignment.
    policy: Option<String>,
    args: LaunchArgs,
}

impl Launch {
    /// Snapshot, create the VM, and wait if asked; `reached` says how far it got.
    async fn go(&self, reached: &mut Reached) -> anyhow::Result<u8> {
        let planned = &mut reached.planned;
        self.snaps.plan(&self.args.sources, "", planned).await?;
        let scanner = self.snaps.client(&self.args.project, &self.args.zone)?;
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
            println!("  {}: {}", p.id, p.source.path());
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
        let code = sources::report(planned, &seen);
        self.end_vm(&scanner).await?;
        Ok(code)
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
            if let Some(policy) = &self.policy {
                entry["policy"] = json!(policy);
            }
            if self.args.attach_at_create {
                let device = derived_device_name(&p.id);
                entry["device_name"] = json!(device);
                let mut init = json!({
                    "diskName": format!("{}-d{i}", self.name.chars().take(58).collect::<String>()),
                    "labels": {LABEL: self.snaps.stamp},
                });
                match &p.source {
                    Source::Image(path) => init["sourceImage"] = json!(path),
                    other => init["sourceSnapshot"] = json!(other.path()),
                }
                disks.push(json!({
                    "deviceName": device,
                    "mode": "READ_ONLY",
                    "autoDelete": true,
                    "initializeParams": init,
                }));
            } else {
                entry["source"] = json!(p.source);
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
            "labels": {LABEL: self.snaps.stamp},
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
                    say!("{}: {}", a.key, sources::describe(&value));
                }
                seen.insert(a.key, value);
            }
            let finals = seen.values().filter(|v| sources::is_final(v)).count();
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
}
