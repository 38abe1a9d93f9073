//! A private work area per scan for mount points, with a record of the loop devices it made, and
//! the clean-up of areas left behind by a crashed scan.
//!
//! [`Workspace::create`] makes `BASE/scan-<pid>-<n>/` (mode 0700) holding `mnt/` for mount
//! points and `record.jsonl`: a first line naming the owning process (pid and start time, so a
//! reused pid is not mistaken for the owner), then one line per loop device, written as soon as
//! it is attached. A crash between attaching and recording cannot leak the device: loop devices
//! auto-clear at their last close, and nothing mounts one before it is recorded.
//!
//! [`Workspace::cleanup_leftovers`] runs at start-up: for every `scan-<pid>-*` whose owner is
//! gone, it unmounts everything under it (deepest and latest first, lazily when busy), detaches
//! the recorded loop devices that are still bound to the recorded file, and removes the
//! directory.
//!
//! What it does not do: hold the mounts or loop devices (the guards in [`super`] and
//! [`crate::disk::loopdev`] do; drop them before the workspace), or remove a directory that still
//! has something mounted under it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

use super::{mountinfo, unmount_path};
use crate::disk::loopdev::{self, LoopBinding, LoopDevice};

/// Name of the record file inside a workspace.
const RECORD: &str = "record.jsonl";
/// Prefix of workspace directories.
const PREFIX: &str = "scan-";

/// Next `<n>` to try for this process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// One line of the record file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// The owner; always the first line.
    Owner {
        pid: u32,
        /// Start time of the process in clock ticks since boot (`/proc/PID/stat` field 22).
        start_time: Option<u64>,
        name: String,
    },
    /// A loop device this scan attached.
    Loop(LoopBinding),
}

/// A scan's private directory; removed on drop when nothing is mounted under it.
#[derive(Debug)]
pub struct Workspace {
    dir: PathBuf,
    removed: bool,
}

impl Workspace {
    /// Make `base/scan-<pid>-<n>/` with `mnt/` and the record file; `name` (the disk being
    /// scanned, say) goes into the record for the logs of a later clean-up.
    pub fn create(base: &Path, name: &str) -> anyhow::Result<Workspace> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .with_context(|| format!("failed to create '{}'", base.display()))?;
        let base = fs::canonicalize(base)
            .with_context(|| format!("failed to resolve '{}'", base.display()))?;
        let pid = std::process::id();
        let dir = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("{PREFIX}{pid}-{n}"));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                // Left by an earlier process with our pid, or a racing thread: take the next.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to create '{}'", dir.display()))
                }
            }
        };
        let ws = Workspace {
            dir,
            removed: false,
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .create(ws.dir.join("mnt"))
            .with_context(|| format!("failed to create '{}/mnt'", ws.dir.display()))?;
        ws.append(&Record::Owner {
            pid,
            start_time: start_time(pid),
            name: name.to_owned(),
        })?;
        Ok(ws)
    }

    /// The workspace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh directory `mnt/<name>` to mount on (`name`: one path component).
    pub fn mount_point(&self, name: &str) -> anyhow::Result<PathBuf> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            bail!("invalid mount point name {name:?}");
        }
        let dir = self.dir.join("mnt").join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("failed to create '{}'", dir.display()))?;
        Ok(dir)
    }

    /// Attach `backing` read-only (see [`LoopDevice::attach_read_only`]) and record the device.
    /// A failed attach is returned as the [`loopdev::LoopError`] itself (`downcast_ref` works).
    pub fn attach_loop(
        &self,
        backing: &Path,
        offset: u64,
        size_limit: Option<u64>,
    ) -> anyhow::Result<LoopDevice> {
        let dev = LoopDevice::attach_read_only(backing, offset, size_limit)?;
        self.record_loop(&dev)?;
        Ok(dev)
    }

    /// Record a loop device attached elsewhere, so a crash cannot leave it behind.
    pub fn record_loop(&self, dev: &LoopDevice) -> anyhow::Result<()> {
        self.append(&Record::Loop(dev.binding().clone()))
    }

    fn append(&self, record: &Record) -> anyhow::Result<()> {
        let path = self.dir.join(RECORD);
        let mut line = serde_json::to_string(record).context("failed to encode a record")?;
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("failed to open '{}'", path.display()))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("failed to write '{}'", path.display()))
    }

    /// Remove the workspace; fails (and removes nothing) while something is mounted under it.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> anyhow::Result<()> {
        if self.removed {
            return Ok(());
        }
        let mounted = mounts_under(&self.dir)?;
        if let Some(m) = mounted.first() {
            bail!(
                "'{}' is still mounted; not removing '{}'",
                m.mount_point.display(),
                self.dir.display()
            );
        }
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("failed to remove '{}'", self.dir.display()))?;
        self.removed = true;
        Ok(())
    }

    /// Clean up after crashed scans under `base`; see the module docs. Returns one line per
    /// thing cleaned (mounts, loop devices, directories) for the log. Failures on one leftover
    /// are logged and the others still cleaned; an unreadable `base` is an error.
    pub fn cleanup_leftovers(base: &Path) -> anyhow::Result<Vec<String>> {
        let base = match fs::canonicalize(base) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to resolve '{}'", base.display()))
            }
        };
        let mut done = Vec::new();
        let entries =
            fs::read_dir(&base).with_context(|| format!("failed to list '{}'", base.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("failed to list '{}'", base.display()))?;
            let name = entry.file_name();
            let Some(pid) = owner_pid(&name.to_string_lossy()) else {
                continue;
            };
            let dir = entry.path();
            let records = read_records(&dir);
            if owner_alive(pid, &records) {
                continue;
            }
            if let Err(e) = clean_one(&dir, &records, &mut done) {
                tracing::warn!(dir = %dir.display(), error = format!("{e:#}"), "failed to clean up a leftover scan");
            }
        }
        Ok(done)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::warn!(dir = %self.dir.display(), error = format!("{e:#}"), "failed to remove the scan workspace");
        }
    }
}

/// The pid in `scan-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// The records of a workspace; unreadable lines are skipped (a crash may cut the last one).
fn read_records(dir: &Path) -> Vec<Record> {
    fs::read_to_string(dir.join(RECORD))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Whether the process that made a workspace still runs: its pid exists and, when recorded, has
/// the same start time.
fn owner_alive(pid: u32, records: &[Record]) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Some(now) = start_time(pid) else {
        return false;
    };
    match records.first() {
        Some(Record::Owner {
            start_time: Some(then),
            ..
        }) => *then == now,
        _ => true,
    }
}

/// Field 22 (`starttime`) of `/proc/PID/stat`; `None` when the process does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Mounts at or below `dir` (canonical), deepest first and, on the same point, latest first.
fn mounts_under(dir: &Path) -> anyhow::Result<Vec<mountinfo::MountInfo>> {
    let mut under: Vec<_> = mountinfo::read()
        .context("failed to read /proc/self/mountinfo")?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect();
    under.sort_by(|a, b| {
        let depth = |m: &mountinfo::MountInfo| m.mount_point.components().count();
        depth(b)
            .cmp(&depth(a))
            .then_with(|| b.mount_id.cmp(&a.mount_id))
    });
    Ok(under)
}

fn clean_one(dir: &Path, records: &[Record], done: &mut Vec<String>) -> anyhow::Result<()> {
    for m in mounts_under(dir)? {
        unmount_path(&m.mount_point)
            .with_context(|| format!("failed to unmount '{}'", m.mount_point.display()))?;
        done.push(format!(
            "unmounted {} ({} from {})",
            m.mount_point.display(),
            m.fs_type,
            m.source
        ));
    }
    for r in records {
        if let Record::Loop(binding) = r {
            match loopdev::detach_leftover(binding) {
                Ok(true) => done.push(format!(
                    "detached {} ({})",
                    binding.device.display(),
                    binding.backing.display()
                )),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(device = %binding.device.display(), error = %e, "failed to detach a leftover loop device")
                }
            }
        }
    }
    if let Some(m) = mounts_under(dir)?.first() {
        bail!("'{}' is still mounted", m.mount_point.display());
    }
    // Make sure removal can descend (a crash may leave odd modes).
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    fs::remove_dir_all(dir).with_context(|| format!("failed to remove '{}'", dir.display()))?;
    done.push(format!("removed {}", dir.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids() {
        struct Case {
            name: &'static str,
            dir: &'static str,
            want: Option<u32>,
        }
        let cases = [
            Case {
                name: "ok",
                dir: "scan-123-0",
                want: Some(123),
            },
            Case {
                name: "no counter",
                dir: "scan-123",
                want: None,
            },
            Case {
                name: "other prefix",
                dir: "cache-123-0",
                want: None,
            },
            Case {
                name: "not numbers",
                dir: "scan-abc-1",
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(owner_pid(c.dir), c.want, "case {}", c.name);
        }
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
        assert!(owner_alive(std::process::id(), &[]));
    }

    #[test]
    fn create_record_close_and_clean_dead_leftovers() {
        let base = std::env::temp_dir().join(format!("snapscan-ws-test-{}", std::process::id()));
        let ws = Workspace::create(&base, "disk-a").expect("create");
        let mnt = ws.mount_point("root").expect("mount point");
        assert!(mnt.is_dir());
        assert!(ws.mount_point("../x").is_err());
        let records = read_records(ws.dir());
        assert!(
            matches!(&records[..], [Record::Owner { pid, name, .. }] if *pid == std::process::id() && name == "disk-a"),
            "{records:?}"
        );
        // A live owner's workspace is left alone.
        assert_eq!(
            Workspace::cleanup_leftovers(&base).expect("cleanup"),
            Vec::<String>::new()
        );
        assert!(ws.dir().is_dir());
        let dir = ws.dir().to_owned();
        ws.close().expect("close");
        assert!(!dir.exists());

        // A dead owner's (a pid whose start time differs) is removed.
        let dead = base.join("scan-1-7");
        fs::create_dir_all(dead.join("mnt/root")).expect("dead dir");
        let owner = Record::Owner {
            pid: 1,
            start_time: Some(u64::MAX),
            name: "old".into(),
        };
        fs::write(
            dead.join(RECORD),
            format!(
                "{}\n{{\"loop\":",
                serde_json::to_string(&owner).expect("json")
            ),
        )
        .expect("record");
        let got = Workspace::cleanup_leftovers(&base).expect("cleanup");
        assert_eq!(
            got,
            [format!(
                "removed {}",
                fs::canonicalize(&base)
                    .expect("base")
                    .join("scan-1-7")
                    .display()
            )]
        );
        assert!(!dead.exists());
        fs::remove_dir_all(&base).expect("remove base");
    }
}
