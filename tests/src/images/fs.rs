//! Filesystem images: one sparse file per filesystem, made by the real mkfs and filled from a
//! directory tree.
//!
//! How each kind is filled: ext4 with `mkfs.ext4 -d`, btrfs with `mkfs.btrfs --rootdir` (neither
//! needs root); vfat with mtools' `mcopy` (no root; this kernel has no vfat driver); xfs through
//! a loop device and a kernel mount plus `cp -a`, NTFS through an ntfs-3g mount plus `cp -r`
//! (both root). exfat and swap cannot be filled: there is no exfat driver in this kernel and
//! exfatprogs has no copy tool, and swap holds no files.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, ensure, Context};

use super::cmd::{run, tool};
use super::guard::{LoopDevice, Mount, NtfsMount};

/// A filesystem the builders can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext4 (`mkfs.ext4`, Debian's defaults: 4 KiB blocks, or 1 KiB below 512 MiB).
    Ext4,
    /// XFS (`mkfs.xfs`; at least 300 MiB).
    Xfs,
    /// Btrfs (`mkfs.btrfs`).
    Btrfs,
    /// FAT12/16/32 as `mkfs.vfat` picks for the size.
    Vfat,
    /// exFAT (`mkfs.exfat`); cannot be filled here.
    Exfat,
    /// NTFS (`mkntfs`).
    Ntfs,
    /// Linux swap (`mkswap`); holds no files.
    Swap,
}

impl FsKind {
    /// The `TYPE` that `blkid -p` reports (and snapscan's `filesystem` field).
    pub fn blkid_type(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::Exfat => "exfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Swap => "swap",
        }
    }

    /// Whether filling it from a directory needs root (a loop device or a FUSE mount).
    pub fn fill_needs_root(self) -> bool {
        matches!(self, FsKind::Xfs | FsKind::Ntfs)
    }
}

/// Make a `kind` filesystem of `size_bytes` (a sparse file) at `out`, with `label`, holding a
/// copy of the tree at `root` when given. `out` is created or truncated.
pub fn build_fs(
    kind: FsKind,
    size_bytes: u64,
    label: Option<&str>,
    root: Option<&Path>,
    out: &Path,
) -> anyhow::Result<()> {
    if let Some(root) = root {
        check_root(root)?;
    }
    sparse_file(out, size_bytes)?;
    let what = || {
        format!(
            "failed to make {} on '{}'",
            kind.blkid_type(),
            out.display()
        )
    };
    match kind {
        FsKind::Ext4 => {
            let mut cmd = tool("mkfs.ext4");
            cmd.args(["-q", "-F"]);
            if let Some(label) = label {
                cmd.arg("-L").arg(label);
            }
            if let Some(root) = root {
                cmd.arg("-d").arg(root);
            }
            run(cmd.arg(out), None).with_context(what)?;
        }
        FsKind::Btrfs => {
            let mut cmd = tool("mkfs.btrfs");
            cmd.args(["-q", "-f"]);
            if let Some(label) = label {
                cmd.arg("-L").arg(label);
            }
            if let Some(root) = root {
                cmd.arg("--rootdir").arg(root);
            }
            run(cmd.arg(out), None).with_context(what)?;
        }
        FsKind::Xfs => {
            let mut cmd = tool("mkfs.xfs");
            cmd.args(["-q", "-f"]);
            if let Some(label) = label {
                cmd.arg("-L").arg(label);
            }
            run(cmd.arg(out), None).with_context(what)?;
            if let Some(root) = root {
                fill_by_mount(out, root, "xfs").with_context(what)?;
            }
        }
        FsKind::Vfat => {
            let mut cmd = tool("mkfs.vfat");
            if let Some(label) = label {
                cmd.arg("-n").arg(label);
            }
            run(cmd.arg(out), None).with_context(what)?;
            if let Some(root) = root {
                fill_vfat(out, root).with_context(what)?;
            }
        }
        FsKind::Exfat => {
            ensure!(
                root.is_none(),
                "cannot fill exfat: no exfat driver in this kernel and no copy tool in exfatprogs"
            );
            let mut cmd = tool("mkfs.exfat");
            if let Some(label) = label {
                cmd.arg("-L").arg(label);
            }
            run(cmd.arg(out), None).with_context(what)?;
        }
        FsKind::Ntfs => {
            let mut cmd = tool("mkntfs");
            cmd.args(["-F", "-Q"]);
            if let Some(label) = label {
                cmd.arg("-L").arg(label);
            }
            run(cmd.arg(out), None).with_context(what)?;
            if let Some(root) = root {
                fill_ntfs(out, root).with_context(what)?;
            }
        }
        FsKind::Swap => {
            ensure!(root.is_none(), "swap holds no files");
            let mut cmd = tool("mkswap");
            if let Some(label) = label {
                cmd.arg("-L").arg(label);
            }
            run(cmd.arg(out), None).with_context(what)?;
        }
    }
    let len = std::fs::metadata(out)
        .with_context(|| format!("failed to stat '{}'", out.display()))?
        .len();
    ensure!(
        len == size_bytes,
        "{} on '{}' grew to {len} bytes (asked for {size_bytes}): make it larger",
        kind.blkid_type(),
        out.display()
    );
    Ok(())
}

/// Create (or truncate) `path` as a sparse file of `size` bytes.
pub fn sparse_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let file =
        File::create(path).with_context(|| format!("failed to create '{}'", path.display()))?;
    file.set_len(size)
        .with_context(|| format!("failed to size '{}' to {size} bytes", path.display()))
}

/// A fresh empty directory next to `image`, for mounting it.
fn mount_dir(image: &Path) -> anyhow::Result<tempfile::TempDir> {
    let parent = image.parent().unwrap_or_else(|| Path::new("."));
    tempfile::Builder::new()
        .prefix(".mnt-")
        .tempdir_in(parent)
        .with_context(|| format!("failed to create a mount point in '{}'", parent.display()))
}

/// `cp -a root/. mnt/` through a loop device and a kernel mount (root only).
fn fill_by_mount(image: &Path, root: &Path, fstype: &str) -> anyhow::Result<()> {
    let dir = mount_dir(image)?;
    let lo = LoopDevice::attach(image, 0, None, false)?;
    let mount = Mount::new(lo.path(), dir.path(), fstype, "")?;
    copy_tree(root, mount.target(), true)?;
    mount.unmount()?;
    lo.detach()
}

/// `cp -r root/. mnt/` through an ntfs-3g mount (root only; NTFS keeps no Unix owners).
fn fill_ntfs(image: &Path, root: &Path) -> anyhow::Result<()> {
    let dir = mount_dir(image)?;
    let mount = NtfsMount::new(image, dir.path(), false)?;
    copy_tree(root, mount.target(), false)?;
    mount.unmount()
}

/// Copy the contents of `from` into the existing directory `to`.
fn copy_tree(from: &Path, to: &Path, preserve: bool) -> anyhow::Result<()> {
    let mut source = from.as_os_str().to_owned();
    source.push("/.");
    let mut cmd = tool("cp");
    cmd.arg(if preserve { "-a" } else { "-r" })
        .arg(&source)
        .arg(to);
    run(&mut cmd, None).map(drop)
}

/// Copy the entries of `root` onto the FAT image with mtools (no mount needed).
fn fill_vfat(image: &Path, root: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .with_context(|| format!("failed to list '{}'", root.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("failed to list '{}'", root.display()))?;
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort();
    let mut cmd = tool("mcopy");
    cmd.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(image)
        .args(["-s", "-p", "-m", "-Q"])
        .args(&entries)
        .arg("::/");
    run(&mut cmd, None)
        .map(drop)
        .context("mtools is needed to fill FAT images (Debian package mtools)")
}

/// Check that `root` is a directory, for a clear error before a tool gives an obscure one.
fn check_root(root: &Path) -> anyhow::Result<()> {
    if !root.is_dir() {
        bail!("'{}' is not a directory", root.display());
    }
    Ok(())
}
