//! Reaching the files of a disk, read-only: the disk's read-only loop device (or `BLKROSET` on a
//! block device nothing else uses, put back as it was at the end; a block device mounted
//! read-write is refused unless forced), its volumes (partitions and LVM logical volumes, from
//! [`crate::inspect::enumerate`]), a read-only kernel mount per volume where the kernel can
//! mount it, native parsing where it cannot (or, asked to prefer it, wherever a root with a
//! native reader stands alone), the OS root, and the `/usr`, `/var`, `/boot`... volumes of the
//! root's own `/etc/fstab` bind-mounted under it.
//!
//! Every loop device and mount is a guard held by [`Attached`]; [`Attached::release`] undoes
//! them in reverse order and says what could not be undone, and dropping an [`Attached`]
//! (an error, a panic, a cancelled scan) undoes them too. All of it lives in a private
//! [`Workspace`] whose leftovers (after a crash) the next scan removes.
//!
//! An image file in a VM image format is decoded by [`Disk::open`]. No loop device decodes qcow2
//! or VMDK, so its volumes are read natively, unless the scan needs a mounted tree
//! ([`Reach::Tree`], an external scanner): then the decoded disk is shown to the kernel as a
//! read-only file on a FUSE mount of the workspace ([`crate::disk::fuse`]), and the read-only
//! loop device stands on that file.
//!
//! Not here: what runs over the files (the scanner), and the native parsers themselves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::report::{ms_since, Method, VolumeAccess};
use super::ScanConfig;
use crate::detect::{self, OsFamily, OsInfo};
use crate::disk::fuse::Exposed;
use crate::disk::image::{self, Format};
use crate::disk::loopdev::{LoopDevice, ReadOnlyFlag};
use crate::disk::probe::FsKind;
use crate::disk::reader::{Budget, Disk, Volume};
use crate::fs::{btrfs, contain, has_native, host::HostTree, RootFs, Rooted};
use crate::inspect::{self, DiskReport, VolumeReport};
use crate::mount::fstab::{self, VolumeIdentity};
use crate::mount::mountinfo::{self, Users};
use crate::mount::{Mount, Workspace};

/// The OS root and how to reach it.
#[derive(Debug)]
pub enum Root {
    /// A kernel mount (with the fstab sub-volumes under it).
    Kernel {
        /// The mount point.
        path: PathBuf,
        /// The OS found there.
        os: OsInfo,
    },
    /// A volume for the native parsers.
    Native {
        /// Its filesystem.
        kind: FsKind,
        /// The volume.
        volume: Volume,
        /// The OS found there.
        os: OsInfo,
    },
}

impl Root {
    /// The OS on the root.
    pub fn os(&self) -> &OsInfo {
        match self {
            Root::Kernel { os, .. } | Root::Native { os, .. } => os,
        }
    }

    /// The mount point, for a kernel mount.
    pub fn mount_path(&self) -> Option<&Path> {
        match self {
            Root::Kernel { path, .. } => Some(path),
            Root::Native { .. } => None,
        }
    }
}

/// An opened disk: what is on it, how each volume is reached, and the guards that keep it so.
#[derive(Debug)]
pub struct Attached {
    /// Partition table, volumes and their natively detected OS.
    pub disk: DiskReport,
    /// How each volume was reached (index-aligned with `disk.volumes`).
    pub access: Vec<VolumeAccess>,
    /// The OS root, if one was found.
    pub root: Option<Root>,
    /// Problems that did not stop the scan.
    pub warnings: Vec<String>,
    /// Milliseconds spent opening (loop device, table, probes) and mounting, and detecting.
    pub open_ms: u64,
    /// Milliseconds spent mounting.
    pub mount_ms: u64,
    /// Milliseconds spent on OS detection over the mounts.
    pub detect_ms: u64,
    guards: Guards,
}

/// Loop devices and mounts, released in reverse order of creation.
#[derive(Debug, Default)]
struct Guards {
    /// Bind mounts under the root: released first.
    binds: Vec<Mount>,
    mounts: Vec<Mount>,
    loops: Vec<LoopDevice>,
    /// The FUSE mount showing a decoded image to the loop devices: unmounted after them.
    exposed: Option<Exposed>,
    workspace: Option<Workspace>,
    /// The read-only flag of a block device read directly: put back last.
    flag: Option<ReadOnlyFlag>,
}

impl Guards {
    fn release(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for m in self
            .binds
            .drain(..)
            .rev()
            .chain(self.mounts.drain(..).rev())
        {
            if let Err(e) = m.unmount() {
                errors.push(format!("{e:#}"));
            }
        }
        for l in self.loops.drain(..).rev() {
            if let Err(e) = l.detach() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(exposed) = self.exposed.take() {
            if let Err(e) = exposed.unmount() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(ws) = self.workspace.take() {
            if let Err(e) = ws.close() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(flag) = self.flag.take() {
            if let Err(e) = flag.restore() {
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }
}

impl Drop for Guards {
    fn drop(&mut self) {
        for e in self.release() {
            tracing::warn!("cleanup: {e}");
        }
    }
}

impl Attached {
    /// Unmount and detach everything; the errors of what could not be undone.
    pub fn release(mut self) -> Vec<String> {
        // A native root holds the device open: the loop device cannot go while it does.
        self.root = None;
        self.guards.release()
    }
}

/// Whether the disk's OS root (found natively) has a native reader and its `/etc/fstab` places
/// no other volume of this disk under it (a separate `/var` holds the package databases, which
/// only the kernel path, with its bind mounts, brings together).
fn root_reads_alone(
    report: &DiskReport,
    volumes: &[Option<Volume>],
    opts: &inspect::Options,
) -> bool {
    let Some(i) = report.os_root().and_then(|os| os.volume) else {
        return false;
    };
    let (Some(v), Some(Some(volume))) = (report.volumes.get(i), volumes.get(i)) else {
        return false;
    };
    if !has_native(v.filesystem) {
        return false;
    }
    let fstab = crate::fs::with_native(v.filesystem, volume, opts.volume_timeout, |fs| {
        Ok(fs.read_text("/etc/fstab", 1 << 20))
    });
    let Some(Ok(text)) = fstab else {
        return false;
    };
    let entries = fstab::parse(text.as_deref().unwrap_or_default());
    !fstab::submounts(&entries)
        .iter()
        .any(|e| placed_volume(report, e).is_some_and(|other| other.index != i))
}

/// The volume of this disk that fstab entry `entry` names (what [`submount`] binds under the
/// root).
fn placed_volume<'a>(
    report: &'a DiskReport,
    entry: &fstab::FstabEntry,
) -> Option<&'a VolumeReport> {
    report.volumes.iter().find(|v| entry.matches(&identity(v)))
}

/// Filesystems the kernel path tries to mount.
fn mountable(kind: FsKind) -> bool {
    matches!(
        kind,
        FsKind::Ext2
            | FsKind::Ext3
            | FsKind::Ext4
            | FsKind::Xfs
            | FsKind::Btrfs
            | FsKind::Ntfs
            | FsKind::Vfat
            | FsKind::Exfat
    )
}

/// What a scan wants of a disk's volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Read the OS root natively and mount nothing when it has a native reader and its fstab
    /// places no other volume of this disk under it; mount what the kernel can otherwise (the
    /// built-in inventory with `prefer = "native"`).
    NativeFirst,
    /// Mount what the kernel can; an image file is read natively (the built-in inventory).
    Mounts,
    /// A mounted tree: an image file is decoded for the kernel too (an external scanner).
    Tree,
}

/// Why the kernel path is not available at all, if it is not.
fn kernel_unavailable(cfg: &ScanConfig) -> Option<String> {
    if !cfg.kernel_mounts {
        return Some("kernel mounts are disabled by configuration".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    None
}

/// Open `path` read-only and reach its volumes. `name` names the workspace; `cancelled` is
/// checked between volumes. `force`: scan a block device even when it is mounted read-write.
/// `reach`: what the scan wants (see [`Reach`]).
///
/// # Errors
///
/// The disk cannot be opened or read at all, or it is a block device mounted read-write and
/// not `force` (a damaged volume is a finding in the report).
pub fn attach(
    path: &Path,
    cfg: &ScanConfig,
    name: &str,
    force: bool,
    reach: Reach,
    cancelled: &dyn Fn() -> bool,
) -> anyhow::Result<Attached> {
    let started = Instant::now();
    let mut guards = Guards::default();
    let mut warnings = Vec::new();
    let format =
        image::format_of(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    let unavailable = kernel_unavailable(cfg);
    let mut kernel_off = unavailable.clone().or_else(|| {
        (format != Format::Raw && reach != Reach::Tree).then(|| {
            format!("a {format} image: the kernel mounts raw disks only, so it is read natively")
        })
    });
    // Who uses a block device, checked before anything is attached or marked.
    let users = match mountinfo::block_device_number(path) {
        Some(dev) => Some(
            mountinfo::users(dev)
                .with_context(|| format!("cannot tell whether '{}' is in use", path.display()))?,
        ),
        None => None,
    };
    if let Some(users) = &users {
        if let Some(at) = read_write_mounts(users) {
            if !force {
                anyhow::bail!(
                    "'{}' is mounted read-write at {at}: scanning a disk in use gives \
                     inconsistent results and the host's writes race the read; use --force to \
                     scan it anyway (read through a read-only loop device)",
                    path.display()
                );
            }
            warnings.push(format!(
                "--force: '{}' is mounted read-write at {at}; it was read through a read-only \
                 loop device while in use, so files may be inconsistent",
                path.display()
            ));
        }
    }

    // The device everything reads from: the image through a read-only loop device, or the
    // block device marked read-only, before anything else touches it. A decoded image is read
    // directly and mounted through the loop device over its FUSE file.
    let mut device = path.to_path_buf();
    let mut decoded = None;
    // What a crashed scan left goes whenever this one could mount, whether or not it does.
    if unavailable.is_none() {
        match Workspace::cleanup_leftovers(&cfg.work_dir) {
            Ok(cleaned) => {
                for c in cleaned {
                    tracing::info!("cleaned up after an earlier run: {c}");
                }
            }
            Err(e) => warnings.push(format!("cannot clean up earlier runs: {e:#}")),
        }
    }
    if kernel_off.is_none() {
        let ws = Workspace::create(&cfg.work_dir, name).with_context(|| {
            format!("cannot create a work area in '{}'", cfg.work_dir.display())
        })?;
        guards.workspace = Some(ws);
        if format == Format::Raw {
            device = read_only_device(path, users.as_ref(), &mut guards)?;
        } else {
            let disk = Disk::open(path)?;
            match expose(&disk, &mut guards) {
                Ok(loop_device) => device = loop_device,
                Err(e) => {
                    kernel_off = Some(format!(
                        "a {format} image, which the kernel reaches only through FUSE: {e:#}"
                    ));
                }
            }
            decoded = Some(disk);
        }
    }
    let disk = match decoded {
        Some(disk) => disk,
        None => Disk::open(&device)?,
    };
    let opts = inspect::Options {
        volume_timeout: Duration::from_secs(cfg.volume_timeout_secs.max(1)),
        ..inspect::Options::default()
    };
    let (mut report, volumes) = inspect::enumerate(&disk, &opts)?;
    report.source = path.display().to_string();
    let open_ms = ms_since(started);
    let native_only = reach == Reach::NativeFirst && root_reads_alone(&report, &volumes, &opts);

    let mount_started = Instant::now();
    let mut access = Vec::with_capacity(report.volumes.len());
    let mut mounted: Vec<Option<PathBuf>> = vec![None; report.volumes.len()];
    for (v, vol) in report.volumes.iter().zip(&volumes) {
        let mut a = VolumeAccess {
            volume: v.index,
            method: Method::None,
            mount_options: None,
            guest_path: None,
            fallback_reason: None,
        };
        if cancelled() {
            anyhow::bail!("interrupted");
        }
        if v.error.is_some() || vol.is_none() {
            a.fallback_reason = v.error.clone();
        } else if native_only {
            if has_native(v.filesystem) {
                a.method = Method::Native;
            }
        } else if mountable(v.filesystem) {
            let why_not = match &kernel_off {
                Some(why) => Some(why.clone()),
                None => match mount_volume(&device, v, &mut guards) {
                    Ok((target, options)) => {
                        a.method = Method::Kernel;
                        a.mount_options = Some(options);
                        mounted[v.index] = Some(if v.filesystem == FsKind::Btrfs {
                            btrfs_system_dir(target)
                        } else {
                            target
                        });
                        None
                    }
                    Err(e) => Some(format!("{e:#}")),
                },
            };
            if let Some(why) = why_not {
                if has_native(v.filesystem) {
                    a.method = Method::Native;
                }
                a.fallback_reason = Some(why);
            }
        }
        access.push(a);
    }
    let mount_ms = ms_since(mount_started);

    // OS detection over the mounts; natively detected OSes (from enumerate) stand otherwise.
    let detect_started = Instant::now();
    for (i, target) in mounted.iter().enumerate() {
        let Some(target) = target else { continue };
        match detect_mounted(target, opts.volume_timeout) {
            Ok(os) => report.volumes[i].os = os,
            Err(e) => {
                report.volumes[i].error = Some(format!("OS detection failed: {e}"));
                report.volumes[i].os = None;
            }
        }
    }
    report.os = report.os_root();
    let root = match &report.os {
        None => None,
        Some(os) => {
            let i = os.volume.unwrap_or_default();
            match (&mounted[i], &volumes[i]) {
                (Some(path), _) => Some(Root::Kernel {
                    path: path.clone(),
                    os: os.clone(),
                }),
                (None, Some(volume)) => {
                    access[i].guest_path = Some("/".into());
                    Some(Root::Native {
                        kind: report.volumes[i].filesystem,
                        volume: volume.clone(),
                        os: os.clone(),
                    })
                }
                (None, None) => None,
            }
        }
    };
    if let Some(Root::Kernel {
        path: root_path,
        os,
    }) = &root
    {
        let root_index = os.volume.unwrap_or_default();
        access[root_index].guest_path = Some("/".into());
        if os.family == OsFamily::Linux {
            submount(
                root_path,
                &report,
                &mounted,
                &mut access,
                &mut guards,
                &mut warnings,
            );
        }
    }
    let detect_ms = ms_since(detect_started);
    Ok(Attached {
        disk: report,
        access,
        root,
        warnings,
        open_ms,
        mount_ms,
        detect_ms,
        guards,
    })
}

/// Where `users` mounts its device read-write (`/home (through dm-0), /srv`), if anywhere.
fn read_write_mounts(users: &Users) -> Option<String> {
    let at: Vec<String> = users
        .read_write()
        .map(|u| match &u.through {
            None => u.mount_point.display().to_string(),
            Some(dev) => format!("{} (through {dev})", u.mount_point.display()),
        })
        .collect();
    (!at.is_empty()).then(|| at.join(", "))
}

/// The read-only device to read `path` through: the block device itself after `BLKROSET`
/// (`users` of it: none), else a read-only loop device over it (the image file, or a block
/// device something else mounts or builds on, whose writers the flag would break).
fn read_only_device(
    path: &Path,
    users: Option<&Users>,
    guards: &mut Guards,
) -> anyhow::Result<PathBuf> {
    if users.is_some_and(Users::is_empty) {
        let flag = ReadOnlyFlag::set(path)
            .with_context(|| format!("cannot make '{}' read-only", path.display()))?;
        guards.flag = Some(flag);
        return Ok(path.to_path_buf());
    }
    let ws = guards
        .workspace
        .as_ref()
        .context("no work area for the loop device")?;
    let dev = ws.attach_loop(path, 0, None).with_context(|| {
        format!(
            "cannot attach '{}' to a read-only loop device",
            path.display()
        )
    })?;
    let p = dev.path().to_path_buf();
    guards.loops.push(dev);
    Ok(p)
}

/// Show the decoded image `disk` to the kernel as a file on a FUSE mount of the workspace, and
/// attach a read-only loop device over that file; the device's path.
fn expose(disk: &Arc<Disk>, guards: &mut Guards) -> anyhow::Result<PathBuf> {
    let ws = guards
        .workspace
        .as_ref()
        .context("no work area for the decoded image")?;
    let exposed = Exposed::mount(Arc::clone(disk), &ws.mount_point("image")?)?;
    let dev = ws.attach_loop(exposed.file(), 0, None);
    guards.exposed = Some(exposed);
    let dev = dev.context("cannot attach the decoded image to a read-only loop device")?;
    let p = dev.path().to_path_buf();
    guards.loops.push(dev);
    Ok(p)
}

/// Mount volume `v` of `device` read-only under the workspace: a loop device windows the
/// volume, then the kernel mounts it. Returns the mount point and the options used.
fn mount_volume(
    device: &Path,
    v: &VolumeReport,
    guards: &mut Guards,
) -> anyhow::Result<(PathBuf, String)> {
    let (offset, size) = disk_extent(v)?;
    let ws = guards
        .workspace
        .as_ref()
        .context("no work area for mounts")?;
    let target = ws.mount_point(&format!("v{}", v.index))?;
    let dev = ws.attach_loop(device, offset, Some(size))?;
    let mount = Mount::read_only(dev.path(), &target, v.filesystem)?;
    let options = mount.options().to_owned();
    guards.loops.push(dev);
    guards.mounts.push(mount);
    Ok((target, options))
}

/// The directory of a Btrfs mount that holds the system: the mount itself (its default
/// subvolume), or, when that has no `/etc` and is the top level (Fedora's layout), the subvolume
/// directory that a top-level `*/etc/fstab` mounts at `/`, as the native reader picks it. The
/// path comes from the disk: only plain names of real directories (no `..`, no symlinks) are
/// followed, so it stays inside the mount.
fn btrfs_system_dir(target: PathBuf) -> PathBuf {
    let fs = Rooted(HostTree::new(target.clone()));
    let is_dir = |p: &str| {
        fs.symlink_metadata(p)
            .is_ok_and(|m| m.file_type == crate::fs::FileType::Dir)
    };
    if is_dir("/etc") {
        return target;
    }
    let Ok(Some(btrfs::Subvol::Path(path))) = btrfs::fstab_root(&fs) else {
        return target;
    };
    let mut inside = String::new();
    for part in path.split('/').filter(|c| !c.is_empty()) {
        inside.push('/');
        inside.push_str(part);
        if part == "." || part == ".." || !is_dir(&inside) {
            return target;
        }
    }
    if inside.is_empty() || !is_dir(&format!("{inside}/etc")) {
        return target;
    }
    target.join(inside.trim_start_matches('/'))
}

/// Where volume `v` lies on the disk: a partition, or a logical volume with one linear segment.
fn disk_extent(v: &VolumeReport) -> anyhow::Result<(u64, u64)> {
    match &v.lvm {
        None => Ok((v.start_bytes, v.size_bytes)),
        Some(lv) if lv.linear => Ok((v.start_bytes, v.size_bytes)),
        Some(_) => anyhow::bail!(
            "logical volume is not one linear segment: the kernel would need device-mapper"
        ),
    }
}

/// OS detection over a kernel mount, contained like the native parsers.
fn detect_mounted(target: &Path, timeout: Duration) -> Result<Option<OsInfo>, crate::fs::FsError> {
    let root = target.to_path_buf();
    contain::run(&Budget::new(u64::MAX), timeout, move || {
        detect::detect(&Rooted(HostTree::new(root)))
    })
}

/// Bind-mount the volumes that the root's `/etc/fstab` places at `/usr`, `/var`, `/boot`... under
/// the root mount, so that scanners see the guest's tree as it runs.
fn submount(
    root: &Path,
    report: &DiskReport,
    mounted: &[Option<PathBuf>],
    access: &mut [VolumeAccess],
    guards: &mut Guards,
    warnings: &mut Vec<String>,
) {
    let fs = Rooted(HostTree::new(root.to_path_buf()));
    let Some(text) = fs.read_text("/etc/fstab", 1 << 20) else {
        return;
    };
    let entries = fstab::parse(&text);
    for entry in fstab::submounts(&entries) {
        let Some(v) = placed_volume(report, entry) else {
            warnings.push(format!(
                "/etc/fstab mounts {:?} at {}, but no such volume is on this disk",
                entry.spec, entry.mount_point
            ));
            continue;
        };
        let Some(source) = &mounted[v.index] else {
            warnings.push(format!(
                "/etc/fstab mounts volume {} at {}, but it is not mounted",
                v.index, entry.mount_point
            ));
            continue;
        };
        match bind_under(root, &fs, source, &entry.mount_point) {
            Ok(m) => {
                guards.binds.push(m);
                access[v.index].guest_path = Some(entry.mount_point.clone());
            }
            Err(e) => warnings.push(format!(
                "cannot mount volume {} at {}: {e:#}",
                v.index, entry.mount_point
            )),
        }
    }
}

/// Bind `source` at `guest_path` inside the root: the path must be a directory of the root, not
/// reached through a symlink (which could point out of the root).
fn bind_under(
    root: &Path,
    fs: &dyn RootFs,
    source: &Path,
    guest_path: &str,
) -> anyhow::Result<Mount> {
    let mut at = String::new();
    for part in guest_path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        let meta = fs
            .symlink_metadata(&at)
            .with_context(|| format!("'{at}' is not in the root"))?;
        anyhow::ensure!(
            meta.file_type == crate::fs::FileType::Dir,
            "'{at}' is not a directory in the root"
        );
    }
    let target = root.join(at.trim_start_matches('/'));
    Ok(Mount::bind_read_only(source, &target)?)
}

/// What fstab can name a volume by.
fn identity(v: &VolumeReport) -> VolumeIdentity {
    VolumeIdentity {
        uuid: v.uuid.clone(),
        label: v.label.clone(),
        partuuid: v.partition_uuid.clone(),
        partlabel: v.partition_name.clone(),
        lvm: v.lvm.as_ref().map(|l| (l.vg.clone(), l.lv.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_btrfs_system_dir_stays_inside_the_mount() {
        let base = std::env::temp_dir().join(format!("snapscan-btrfs-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let fstab = |dir: &str, subvol: &str| {
            std::fs::create_dir_all(base.join(dir).join("etc")).expect("mkdir");
            std::fs::write(
                base.join(dir).join("etc/fstab"),
                format!("UUID=1 / btrfs subvol={subvol} 0 0\n"),
            )
            .expect("fstab");
        };
        fstab("root", "root");
        assert_eq!(btrfs_system_dir(base.clone()), base.join("root"));

        // A name that leaves the mount, or a symlink, is not followed.
        std::fs::remove_dir_all(base.join("root")).expect("rm");
        fstab("a", "../../etc");
        assert_eq!(btrfs_system_dir(base.clone()), base);
        std::fs::remove_dir_all(base.join("a")).expect("rm");
        std::fs::create_dir_all(base.join("real/etc")).expect("mkdir");
        std::os::unix::fs::symlink("real", base.join("link")).expect("symlink");
        fstab("b", "link");
        assert_eq!(btrfs_system_dir(base.clone()), base);

        // A mount with its own /etc is the system.
        std::fs::create_dir_all(base.join("etc")).expect("mkdir");
        assert_eq!(btrfs_system_dir(base.clone()), base);
        std::fs::remove_dir_all(&base).expect("clean up");
    }
}
