//! The disk of a `source` assignment, made and unmade by the agent through the Compute API:
//! created from the snapshot or image in this VM's zone (named after the job and this instance,
//! labelled with both; an existing disk of that name is used only if its labels are this job's),
//! attached read-only under the job's device name, and after the job detached and, if the
//! agent created it, deleted.
//!
//! Every step is in the job's journal ([`ProvisionedDisk::step`]) before it is started, and each
//! one is safe to repeat: an insert of a disk that exists, an attach of a disk already attached,
//! a detach of one not attached and a delete of one that is gone all count as done. So a crash
//! at any point resumes where it was, or cleans up. What a crash leaves between two journal
//! writes the sweep ([`sweep`]) finds by its labels.
//!
//! Not here: the scan (the job finds the attached disk by device name as for any assignment),
//! the Compute API itself ([`crate::compute`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::agent::assignments::{derived_disk_name, Source};
use crate::compute::{Client, ComputeError, DiskSource, NewDisk};
use crate::job::Journal;

/// The label naming the instance a disk was made for.
pub const INSTANCE_LABEL: &str = "snapscan-instance";
/// The label naming the job a disk was made for.
pub const JOB_LABEL: &str = "snapscan-job";

/// How far the disk of a job got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskStep {
    /// About to be created.
    Requested,
    /// Exists (created by the agent, or the assignment's own disk).
    Created,
    /// Attached read-only to this VM.
    Attached,
    /// Detached again.
    Detached,
    /// Deleted (only a disk the agent created).
    Deleted,
}

/// A job's disk, as its journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedDisk {
    /// The disk's name in this zone.
    pub name: String,
    /// The agent created it (and so deletes it).
    pub created: bool,
    /// The last step done.
    pub step: DiskStep,
}

impl ProvisionedDisk {
    /// Nothing of it is left to undo: deleted, or detached when the agent did not make it.
    #[must_use]
    pub fn released(&self) -> bool {
        self.step == DiskStep::Deleted || (self.step == DiskStep::Detached && !self.created)
    }
}

/// Why a step did not happen.
#[derive(Debug)]
pub struct Problem {
    /// What went wrong.
    pub message: String,
    /// Trying again later may work.
    pub retryable: bool,
}

impl From<ComputeError> for Problem {
    fn from(e: ComputeError) -> Problem {
        Problem {
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

/// A label value from `s`: lower case, `[a-z0-9_-]`, at most 63 characters.
fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '-',
        })
        .take(63)
        .collect()
}

/// Make the disk of job `j` and attach it to `me`, resuming from the journal; `save` writes the
/// journal before each step.
///
/// # Errors
///
/// A step failed (retryable or not).
pub async fn provide(
    c: &Client,
    me: &str,
    j: &mut Journal,
    save: &(dyn Fn(&Journal) + Sync),
) -> Result<(), Problem> {
    let Some(source) = j.assignment.source.clone() else {
        return Ok(());
    };
    let device = j.assignment.device_name.clone();
    if j.disk.is_none() {
        j.disk = Some(match &source {
            Source::Disk(path) => ProvisionedDisk {
                name: path.rsplit('/').next().unwrap_or_default().to_owned(),
                created: false,
                step: DiskStep::Created,
            },
            Source::Snapshot(_) | Source::Image(_) => ProvisionedDisk {
                name: derived_disk_name(me, j.id()),
                created: true,
                step: DiskStep::Requested,
            },
        });
        save(j);
    }
    let Some(disk) = j.disk.clone() else {
        return Ok(());
    };
    if disk.step == DiskStep::Requested {
        let new = NewDisk {
            name: disk.name.clone(),
            source: match &source {
                Source::Image(p) => DiskSource::Image(p.clone()),
                Source::Snapshot(p) | Source::Disk(p) => DiskSource::Snapshot(p.clone()),
            },
            labels: BTreeMap::from([
                (INSTANCE_LABEL.to_owned(), label_value(me)),
                (JOB_LABEL.to_owned(), label_value(j.id())),
            ]),
            disk_type: None,
        };
        tracing::info!(
            job_id = j.id(),
            disk = disk.name,
            "creating the disk from {}",
            source.path()
        );
        match c.insert_disk(&new).await {
            Ok(op) => {
                c.wait(op).await?;
            }
            // A repeat after a crash: the disk is there, if it is this job's.
            Err(ComputeError::AlreadyExists { .. }) => {
                if let Err(p) = ours(c, me, j.id(), &disk.name).await {
                    if !p.retryable {
                        // Someone else's: releasing this job must never delete it.
                        if let Some(d) = j.disk.as_mut() {
                            d.created = false;
                        }
                        save(j);
                    }
                    return Err(p);
                }
            }
            Err(e) => return Err(e.into()),
        }
        set_step(j, DiskStep::Created, save);
    }
    if j.disk.as_ref().is_some_and(|d| d.step == DiskStep::Created) {
        tracing::info!(
            job_id = j.id(),
            disk = disk.name,
            "attaching read-only as {device}"
        );
        match c.attach_disk(me, &disk.name, &device).await {
            Ok(op) => {
                if let Err(e) = c.wait(op).await {
                    if !attached(c, me, &device).await? {
                        return Err(e.into());
                    }
                }
            }
            Err(e) => {
                // A repeat after a crash: attached already under our device name.
                if !attached(c, me, &device).await? {
                    return Err(e.into());
                }
            }
        }
        set_step(j, DiskStep::Attached, save);
    }
    Ok(())
}

/// The existing disk `name` is the one this job made (its labels say `me` and `id`); anything
/// else is never attached or deleted.
async fn ours(c: &Client, me: &str, id: &str, name: &str) -> Result<(), Problem> {
    let labels = c
        .get_disk(name)
        .await?
        .map(|d| d.labels)
        .unwrap_or_default();
    let mine = labels.get(INSTANCE_LABEL) == Some(&label_value(me))
        && labels.get(JOB_LABEL) == Some(&label_value(id));
    if mine {
        return Ok(());
    }
    Err(Problem {
        message: format!(
            "disk {name} exists and was not made by this job (labels {labels:?}); it is left alone"
        ),
        retryable: false,
    })
}

/// Detach the job's disk and delete it if the agent made it, resuming from the journal.
///
/// # Errors
///
/// A step failed; the journal says which was done.
pub async fn release(
    c: &Client,
    me: &str,
    j: &mut Journal,
    save: &(dyn Fn(&Journal) + Sync),
) -> Result<(), Problem> {
    let Some(disk) = j.disk.clone() else {
        return Ok(());
    };
    let device = j.assignment.device_name.clone();
    if disk.step < DiskStep::Detached {
        tracing::info!(job_id = j.id(), disk = disk.name, "detaching {device}");
        detach(c, me, &device).await?;
        set_step(j, DiskStep::Detached, save);
    }
    if disk.created
        && j.disk
            .as_ref()
            .is_some_and(|d| d.step == DiskStep::Detached)
    {
        tracing::info!(job_id = j.id(), disk = disk.name, "deleting the disk");
        match c.delete_disk(&disk.name).await {
            Ok(op) => {
                c.wait(op).await?;
            }
            Err(ComputeError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        set_step(j, DiskStep::Deleted, save);
    }
    Ok(())
}

fn set_step(j: &mut Journal, step: DiskStep, save: &(dyn Fn(&Journal) + Sync)) {
    if let Some(d) = j.disk.as_mut() {
        d.step = step;
    }
    save(j);
}

/// Detach `device` from instance `me`. Not attached counts as done, also when the detach
/// failed because another detach of it (say, by the agent before a restart) got there first.
async fn detach(c: &Client, me: &str, device: &str) -> Result<(), ComputeError> {
    if !attached(c, me, device).await? {
        return Ok(());
    }
    let done = match c.detach_disk(me, device).await {
        Ok(op) => c.wait(op).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match done {
        Err(e) if attached(c, me, device).await? => Err(e),
        _ => Ok(()),
    }
}

/// Whether `device` is attached to instance `me`.
async fn attached(c: &Client, me: &str, device: &str) -> Result<bool, ComputeError> {
    Ok(c.get_instance(me)
        .await?
        .disks
        .iter()
        .any(|d| d.device_name == device))
}

/// Detach and delete the disks labelled as made for instance `me` whose names no live job
/// holds (`live`): what a crash left between a journal write and the API call, or a job whose
/// clean-up failed. Returns what it removed.
///
/// # Errors
///
/// The disks cannot be listed, or the instance read. A disk that cannot be removed is logged
/// and left for the next sweep.
pub async fn sweep(
    c: &Client,
    me: &str,
    live: &BTreeSet<String>,
) -> Result<Vec<String>, ComputeError> {
    let filter = format!("labels.{INSTANCE_LABEL}={}", label_value(me));
    let disks = c.list_disks(&filter).await?;
    let mut removed = Vec::new();
    for disk in disks {
        if live.contains(&disk.name) {
            continue;
        }
        // Read afresh for each disk: a detach of the agent's before a restart may finish
        // while the sweep runs.
        let devices: Vec<String> = c
            .get_instance(me)
            .await?
            .disks
            .into_iter()
            .filter(|a| a.source.rsplit('/').next() == Some(disk.name.as_str()))
            .map(|a| a.device_name)
            .collect();
        let mut ok = true;
        for device in devices {
            if let Err(e) = detach(c, me, &device).await {
                tracing::error!(disk = disk.name, "sweep: cannot detach: {e}");
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        match c.delete_disk(&disk.name).await {
            Ok(op) => match c.wait(op).await {
                Ok(_) => removed.push(disk.name),
                Err(e) => tracing::error!(disk = disk.name, "sweep: cannot delete: {e}"),
            },
            Err(ComputeError::NotFound { .. }) => {}
            Err(e) => tracing::error!(disk = disk.name, "sweep: cannot delete: {e}"),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_fit_gce() {
        assert_eq!(label_value("Scan_0001.a"), "scan_0001-a");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }
}
