//! What a launcher scans (shared by `snapscan launch` and `snapscan submit`): the VM, disks,
//! snapshots and images of its command line ([`SourceArgs`]), the snapshots it takes of the disks (labelled
//! [`LABEL`], and deleted again on request), a job id per disk, and the report of the jobs'
//! ends (their status JSON, as guest attributes and result messages carry it).
//!
//! Not here: how the disks reach a scanner (a scanner VM's metadata, [`super`]; a fleet's
//! queue, [`super::submit`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::agent::assignments::{self, Source};
use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_POLICY, EXIT_USAGE};
use crate::compute::{Client, ComputeConfig, ComputeError, Tokens};

/// The label on everything a launcher creates (its value: the launch's stamp).
pub const LABEL: &str = "snapscan-launch";

/// What to scan, and the policy to check it against.
#[derive(Debug, Args)]
pub struct SourceArgs {
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
    /// Scan this image, as a disk made from it (a name in the source project, `family/F` for
    /// the newest of a family, or `projects/P/global/images/I`, `.../images/family/F`): what an
    /// image pipeline scans before it publishes. Repeatable.
    #[arg(long = "image", value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Check what the built-in inventory finds on each disk against this policy (the TOML of
    /// `scan --policy`, sent with each assignment); a disk that breaks it ends the run with
    /// exit code 5.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The project of `--instance`, `--disk` and `--snapshot` names. Default: `--project`.
    #[arg(long)]
    pub source_project: Option<String>,
    /// The zone of `--instance` and `--disk` names. Default: `--zone`.
    #[arg(long)]
    pub source_zone: Option<String>,
}

impl SourceArgs {
    /// Nothing named.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.takes_snapshots() && self.snapshots.is_empty() && self.images.is_empty()
    }

    /// Disks named (`--instance`, `--disk`): they are snapshotted.
    #[must_use]
    pub fn takes_snapshots(&self) -> bool {
        self.instance.is_some() || !self.disks.is_empty()
    }

    /// The text of `--policy`, checked as `scan --policy` checks it.
    ///
    /// # Errors
    ///
    /// It cannot be read, or is not a valid policy.
    pub fn policy_text(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.policy else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the policy '{}'", path.display()))?;
        crate::policy::Policy::parse(&text, &path.display().to_string())?;
        Ok(Some(text))
    }
}

/// One disk to scan, as the launcher hands it over.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The job id (assignment or request id).
    pub id: String,
    /// What the disk is made from: `projects/P/global/snapshots/S` or `projects/P/global/images/I`
    /// (`.../images/family/F`).
    pub source: Source,
    /// `S`, `I` or `F`: what the results are named after.
    pub snapshot: String,
    /// Made by this run (deleted with `--delete-snapshots`).
    pub made: bool,
    /// The VM the disk is of, when known.
    pub source_instance: Option<String>,
    /// The project of the disk or snapshot.
    pub source_project: String,
}

/// What was seen of each job: its status JSON, by id.
pub type Seen = BTreeMap<String, Value>;

/// The UTC time as `20261207t010203`, for names.
#[must_use]
pub fn stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| *c != 'z')
        .collect()
}

/// Takes and deletes snapshots, for one run of a launcher.
pub struct Snapshots {
    /// The Compute API settings.
    pub cfg: ComputeConfig,
    /// The caller's credentials.
    pub tokens: Arc<Tokens>,
    /// Print changing requests instead of sending them.
    pub dry_run: bool,
    /// The run's stamp: the label value and the snapshots' name suffix.
    pub stamp: String,
    /// `--project`.
    pub project: String,
    /// `--zone`.
    pub zone: String,
}

impl Snapshots {
    /// For a run against `compute_url` with the caller's Application Default Credentials
    /// (not needed for a dry run, nor when `need_credentials` is false), `project` and `zone`
    /// the defaults of names.
    ///
    /// # Errors
    ///
    /// The exit code, after saying why: no credentials, a bad URL.
    pub async fn new(
        compute_url: &str,
        dry_run: bool,
        need_credentials: bool,
        project: &str,
        zone: &str,
    ) -> Result<Snapshots, u8> {
        let tokens = match Tokens::adc().await {
            Ok(t) => Arc::new(t),
            Err(e) if dry_run || !need_credentials => Arc::new(Tokens::Unavailable(e.to_string())),
            Err(e) => {
                say!("error: {e}");
                return Err(EXIT_FAILURE);
            }
        };
        let cfg = ComputeConfig {
            url: compute_url.to_owned(),
            ..ComputeConfig::default()
        };
        if let Err(e) = cfg.validate() {
            say!("error: --compute-url: {e:#}");
            return Err(EXIT_USAGE);
        }
        Ok(Snapshots {
            cfg,
            tokens,
            dry_run,
            stamp: stamp(),
            project: project.to_owned(),
            zone: zone.to_owned(),
        })
    }

    /// A client for `project`/`zone`, dry-run if asked.
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn client(&self, project: &str, zone: &str) -> anyhow::Result<Client> {
        let c = Client::with_tokens(&self.cfg, self.tokens.clone(), project, zone)?;
        Ok(if self.dry_run { c.dry_run() } else { c })
    }

    /// Every disk `src` names, pushed to `planned` as soon as it is known (a snapshot whose
    /// wait failed may still exist): the disks of `--instance` and each `--disk` snapshotted
    /// (waiting for each), then each `--snapshot`, then each `--image`. Ids are `id_prefix` and the disk's or
    /// snapshot's name, made unique.
    ///
    /// # Errors
    ///
    /// A name that is not one, or a request that failed.
    pub async fn plan(
        &self,
        src: &SourceArgs,
        id_prefix: &str,
        planned: &mut Vec<Planned>,
    ) -> anyhow::Result<()> {
        let source_project = src.source_project.as_deref().unwrap_or(&self.project);
        let source_zone = src.source_zone.as_deref().unwrap_or(&self.zone);
        let mut disks: Vec<(String, String, String, Option<String>)> = Vec::new();
        if let Some(vm) = &src.instance {
            let source = self.client(source_project, source_zone)?;
            let instance = source
                .get_instance(vm)
                .await
                .context_for(&format!("read the source VM {vm}"))?;
            for d in &instance.disks {
                let (project, zone, disk) = disk_ref(&d.source, source_project, source_zone)?;
                disks.push((project, zone, disk, Some(vm.clone())));
            }
            if disks.is_empty() {
                anyhow::bail!("the source VM {vm} has no disks");
            }
        }
        for d in &src.disks {
            let (project, zone, disk) = disk_ref(d, source_project, source_zone)?;
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
            planned.push(Planned {
                id: unique_id(planned, &format!("{id_prefix}{disk}")),
                source: Source::Snapshot(format!("projects/{project}/global/snapshots/{snapshot}")),
                snapshot: snapshot.clone(),
                made: true,
                source_instance,
                source_project: project.clone(),
            });
            client.wait(op).await.context_for(&what)?;
            if !self.dry_run {
                say!("snapshot {snapshot} of disk {disk} taken");
            }
        }
        for s in &src.snapshots {
            let (project, snapshot) = snapshot_ref(s, source_project)?;
            planned.push(Planned {
                id: unique_id(planned, &format!("{id_prefix}{snapshot}")),
                source: Source::Snapshot(format!("projects/{project}/global/snapshots/{snapshot}")),
                snapshot,
                made: false,
                source_instance: None,
                source_project: project,
            });
        }
        for i in &src.images {
            let (project, path, name) = image_ref(i, source_project)?;
            planned.push(Planned {
                id: unique_id(planned, &format!("{id_prefix}{name}")),
                source: Source::Image(path),
                snapshot: name,
                made: false,
                source_instance: None,
                source_project: project,
            });
        }
        Ok(())
    }

    /// `--delete-snapshots`: delete the snapshots this run made if nothing needs them any more
    /// (`unneeded`), else say they are kept and `why`.
    pub async fn clean_up(&self, planned: &[Planned], unneeded: bool, why: &str) {
        if self.dry_run {
            return;
        }
        if unneeded {
            self.delete_made(planned).await;
        } else if planned.iter().any(|p| p.made) {
            say!("the snapshots are kept: {why}");
        }
    }

    /// Delete the snapshots this run made; a failure is said, not fatal.
    async fn delete_made(&self, planned: &[Planned]) {
        for p in planned.iter().filter(|p| p.made) {
            let result = async {
                let client = self.client(&p.source_project, &self.zone)?;
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
pub fn describe(v: &Value) -> String {
    let mut line = v["state"].as_str().unwrap_or("?").to_owned();
    if let Some(os) = v["os"].as_str() {
        line.push_str(&format!(" ({os})"));
    }
    if let Some(e) = v["error"].as_str() {
        line.push_str(&format!(": {e}"));
    }
    line
}

/// Whether a job's status JSON says it ended (done, failed, cancelled).
pub fn is_final(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("done" | "failed" | "cancelled"))
}

/// Print each job's end; `EXIT_OK` when every one is `done` (and passed its policy),
/// `EXIT_POLICY` when all are done and one broke its policy.
pub fn report(planned: &[Planned], seen: &Seen) -> u8 {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut code = EXIT_OK;
    for p in planned {
        let v = seen.get(&p.id).cloned().unwrap_or(Value::Null);
        println!("{}: {}", p.id, describe(&v));
        if v["state"] != "done" {
            code = EXIT_FAILURE;
        }
        let r = &v["result"];
        if r.is_null() {
            continue;
        }
        let outputs = strings(&r["outputs"]);
        println!(
            "  scan {}, {} packages; {} of {} outputs acknowledged by the receiver: {}",
            r["status"].as_str().unwrap_or("?"),
            r["packages"],
            r["acknowledged"],
            outputs.len(),
            outputs.join(", ")
        );
        match r["policy"]["passed"].as_bool() {
            Some(true) => println!("  policy passed"),
            Some(false) => {
                if code == EXIT_OK {
                    code = EXIT_POLICY;
                }
                let broken = strings(&r["policy"]["violations"]);
                println!("  policy broken: {}", broken.join("; "));
            }
            None => {}
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

/// `(project, path, name)` of an image name, `family/F`, or `projects/P/global/images/I` or
/// `.../images/family/F` (or its URL): the path as an assignment's `source` takes it, and the
/// image's or family's name.
fn image_ref(s: &str, project: &str) -> anyhow::Result<(String, String, String)> {
    let rel = s.find("projects/").map_or(s, |at| &s[at..]);
    let (p, tail) = match rel.split('/').collect::<Vec<_>>().as_slice() {
        [i] if !i.is_empty() => (project, vec![*i]),
        ["family", f] if !f.is_empty() => (project, vec!["family", *f]),
        ["projects", p, "global", "images", i] if !p.is_empty() && !i.is_empty() => (*p, vec![*i]),
        ["projects", p, "global", "images", "family", f] if !p.is_empty() && !f.is_empty() => {
            (*p, vec!["family", *f])
        }
        _ => anyhow::bail!(
            "'{s}' is neither an image name, family/F, nor projects/P/global/images/I (or \
             .../images/family/F)"
        ),
    };
    let name = tail.last().copied().unwrap_or_default().to_owned();
    Ok((
        p.to_owned(),
        format!("projects/{p}/global/images/{}", tail.join("/")),
        name,
    ))
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
pub trait StepContext<T> {
    /// The error, as "cannot `step`".
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
        let image = |s| image_ref(s, "p").ok();
        assert_eq!(
            image("golden-1"),
            Some((
                "p".into(),
                "projects/p/global/images/golden-1".into(),
                "golden-1".into()
            ))
        );
        assert_eq!(
            image("family/golden"),
            Some((
                "p".into(),
                "projects/p/global/images/family/golden".into(),
                "golden".into()
            ))
        );
        assert_eq!(
            image("https://compute.googleapis.com/compute/v1/projects/q/global/images/family/f"),
            Some((
                "q".into(),
                "projects/q/global/images/family/f".into(),
                "f".into()
            ))
        );
        assert!(image("projects/q/global/images/").is_none());
        assert!(image("family/").is_none());
        assert!(image("a/b").is_none());
    }

    #[test]
    fn a_broken_policy_is_exit_5_unless_a_job_failed() {
        let planned: Vec<Planned> = ["a", "b"]
            .iter()
            .map(|id| Planned {
                id: (*id).into(),
                source: Source::Image(format!("projects/p/global/images/{id}")),
                snapshot: (*id).into(),
                made: false,
                source_instance: None,
                source_project: "p".into(),
            })
            .collect();
        let job = |state: &str, passed: bool| {
            serde_json::json!({"state": state, "result": {"status": "success", "packages": 2,
                "outputs": [], "acknowledged": 0,
                "policy": {"passed": passed, "violations": if passed { vec![] } else { vec!["max_packages: 2"] }}}})
        };
        let seen = |a: Value, b: Value| Seen::from([("a".to_owned(), a), ("b".to_owned(), b)]);
        assert_eq!(
            report(&planned, &seen(job("done", true), job("done", true))),
            EXIT_OK
        );
        assert_eq!(
            report(&planned, &seen(job("done", false), job("done", true))),
            EXIT_POLICY
        );
        assert_eq!(
            report(&planned, &seen(job("done", false), job("failed", true))),
            EXIT_FAILURE
        );
        assert_eq!(
            report(&planned, &seen(job("failed", true), job("done", false))),
            EXIT_FAILURE
        );
    }

    #[test]
    fn names_fit() {
        let stamp = "20261207t010203";
        let long = "d".repeat(70);
        let n = snapshot_name(&long, stamp);
        assert_eq!(n.len(), 63);
        assert!(super::super::gce_name(&n), "{n}");
        assert!(super::super::gce_name(&snapshot_name("web-1-boot", stamp)));
    }

    #[test]
    fn ids_are_unique_and_valid() {
        let mut planned = Vec::new();
        for base in ["web.1", "web.1", "web_1"] {
            let id = unique_id(&planned, base);
            assert!(assignments::valid_id(&id), "{id}");
            planned.push(Planned {
                id,
                source: Source::Snapshot(String::new()),
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
