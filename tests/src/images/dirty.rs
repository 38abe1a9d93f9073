//! Filesystems left as a crash leaves them: an ext4 whose journal needs recovery and an XFS with
//! a dirty log, for the "nothing written" tests (a kernel that replays the journal writes to the
//! disk; snapscan's mount options must prevent it).
//!
//! Each is made by mounting a fresh filesystem read-write through a loop device and writing
//! `clean/` (then unmounting cleanly, so those files are in place), mounting it again, writing
//! `durable-*` (made durable with `syncfs`) and `journaled/` (committed to the journal by
//! `fsync`), then shutting the filesystem down without flushing its log (`xfs_io -x -c shutdown`,
//! which is `FS_IOC_SHUTDOWN` and works on ext4 too) before unmounting. A reader that skips the
//! journal sees at least `clean/` (8 files); XFS keeps the later metadata in its log only. The builder then checks the
//! result really is dirty (`dumpe2fs -h` lists `needs_recovery`; `xfs_logprint -t` says
//! `<DIRTY>`) and fails otherwise. Root only (loop devices, mounts).
//!
//! What it does not do: corrupt anything. The filesystems are consistent once the journal is
//! replayed.

use std::io::Write;
use std::path::Path;

use anyhow::{ensure, Context};

use super::cmd::{run, tool};
use super::fs::{build_fs, FsKind};
use super::guard::{LoopDevice, Mount};

/// Label of both dirty filesystems.
pub const DIRTY_LABEL: &str = "dirty";

/// Files in `clean/`, on disk in place whether or not the journal is replayed.
pub const CLEAN_FILES: usize = 8;

/// An ext4 of 32 MiB whose journal needs recovery.
pub fn dirty_ext4(work: &Path, out: &Path) -> anyhow::Result<()> {
    build_fs(FsKind::Ext4, 32 << 20, Some(DIRTY_LABEL), None, out)?;
    crash(work, out, "ext4")?;
    let header = run(tool("dumpe2fs").arg("-h").arg(out), None)?;
    ensure!(
        header
            .lines()
            .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery")),
        "ext4 at '{}' does not need recovery after the shutdown:\n{header}",
        out.display()
    );
    Ok(())
}

/// An XFS of 300 MiB (the smallest mkfs.xfs makes) with a dirty log.
pub fn dirty_xfs(work: &Path, out: &Path) -> anyhow::Result<()> {
    build_fs(FsKind::Xfs, 300 << 20, Some(DIRTY_LABEL), None, out)?;
    crash(work, out, "xfs")?;
    let log = run(tool("xfs_logprint").arg("-t").arg(out), None)?;
    ensure!(
        log.contains("<DIRTY>"),
        "xfs at '{}' has a clean log after the shutdown:\n{log}",
        out.display()
    );
    Ok(())
}

/// Mount `image` read-write, write two batches of files, shut the filesystem down without
/// flushing its log, unmount.
fn crash(work: &Path, image: &Path, fstype: &str) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix(".mnt-")
        .tempdir_in(work)
        .with_context(|| format!("failed to create a mount point in '{}'", work.display()))?;
    let lo = LoopDevice::attach(image, 0, None, false)?;
    let mnt = Mount::new(lo.path(), dir.path(), fstype, "")?;
    let clean = mnt.target().join("clean");
    std::fs::create_dir(&clean)
        .with_context(|| format!("failed to create '{}'", clean.display()))?;
    for i in 0..CLEAN_FILES {
        let path = clean.join(format!("file-{i}.txt"));
        std::fs::write(&path, format!("written before a clean unmount, file {i}\n"))
            .with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    mnt.unmount()?;
    let mnt = Mount::new(lo.path(), dir.path(), fstype, "")?;
    let root = mnt.target();
    for i in 0..8 {
        let path = root.join(format!("durable-{i}.txt"));
        std::fs::write(&path, format!("written and synced, file {i}\n").repeat(64))
            .with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    run(tool("sync").arg("-f").arg(root), None)?;
    let journaled = root.join("journaled");
    std::fs::create_dir(&journaled)
        .with_context(|| format!("failed to create '{}'", journaled.display()))?;
    for i in 0..8 {
        let path = journaled.join(format!("file-{i}.txt"));
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("failed to create '{}'", path.display()))?;
        f.write_all(format!("only in the journal, file {i}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    // Without -f: the log is not flushed, what it holds stays to be replayed.
    run(
        tool("xfs_io").args(["-x", "-c", "shutdown"]).arg(root),
        None,
    )?;
    mnt.unmount()?;
    lo.detach()
}
