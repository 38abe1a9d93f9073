//! Disk-image fixtures: real disks made by real Debian tools, cached, with what a correct
//! reader must find on each.
//!
//! [`catalogue`] lists every fixture with its [`Expect`]ation (partition table, volumes in
//! on-disk order, the OS root); [`image`] builds one on first use and returns the raw image's
//! path. Builds are cached under [`crate::cache_dir`] in files whose names carry a version
//! ([`IMAGES_REV`], the fixture's own revision and, for Debian images, [`roots::DEBIAN_REV`]), so
//! a second run costs nothing and a changed builder rebuilds. Several threads and processes may
//! ask for the same image at once: each build holds a lock file and writes a temporary name
//! that is renamed into place when complete.
//!
//! The building blocks are public for tests that need their own images: [`fs::build_fs`] (one
//! filesystem image from a directory tree), [`disk::assemble`] (GPT or MBR around filesystem
//! images), [`lvm::build_pv`] (an LVM PV with its LVs' contents, without device-mapper),
//! [`debian_root`] (the cached debootstrap tree) and [`roots::write_synthetic_root`]. Every
//! external command goes through [`cmd::run`]; loop devices and mounts are held by the guards
//! in [`guard`].
//!
//! What it does not do: boot anything, or make images that need device-mapper to build (LVM is
//! written without activating it, LUKS only formatted). Most fixtures need root (debootstrap,
//! loop devices, ntfs-3g); [`Fixture::needs_root`] says which. exFAT volumes stay empty (no
//! exfat driver in this kernel, no copy tool in exfatprogs).

pub mod cmd;
pub mod dirty;
pub mod disk;
pub mod formats;
pub mod fs;
pub mod guard;
pub mod lvm;
pub mod roots;
pub mod rpm;

mod catalogue;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub use catalogue::catalogue;
pub use roots::debian_root;

/// Bump to rebuild every cached image.
pub const IMAGES_REV: u32 = 2;

/// The host name written into the cached Debian tree.
pub const DEBIAN_HOSTNAME: &str = "debian-fixture";

/// A disk image the tests can ask for, and what is on it.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Name passed to [`image`].
    pub name: &'static str,
    /// One line: what the image exercises.
    pub what: &'static str,
    /// What a correct reader finds on it.
    pub expect: Expect,
    /// Building it needs root (debootstrap, a loop device or a FUSE mount).
    pub needs_root: bool,
}

/// What a correct reader finds on a fixture disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// `"gpt"`, `"mbr"` or `"none"` (a filesystem, or nothing, on the whole disk).
    pub partition_table: &'static str,
    /// Volumes in on-disk order: partitions in table order, logical ones after the primaries,
    /// not the extended container; for `"none"`, the whole disk as one volume.
    pub volumes: Vec<ExpectVolume>,
    /// The disk's OS root, if it has one.
    pub os: Option<ExpectOs>,
}

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectVolume {
    /// As `blkid -p` names it, lowercased: `"ext4"`, `"xfs"`, `"btrfs"`, `"ntfs"`, `"vfat"`,
    /// `"exfat"`, `"swap"`, `"lvm2_member"`, `"crypto_luks"`, `"linux_raid_member"`, or
    /// `"unknown"` (no recognisable superblock).
    pub filesystem: &'static str,
    /// The filesystem label, if it has one.
    pub label: Option<&'static str>,
    /// The OS root is on this volume. For `lvm2_member` it is inside one of its logical volumes
    /// (the one of [`ExpectVolume::logical_volumes`] with `has_os`), which a reader that does
    /// not open LVM cannot see.
    pub has_os: bool,
    /// For an `lvm2_member` holding VG metadata: the VG's visible logical volumes in metadata
    /// order. A reader that opens LVM lists them as further volumes after all the partitions
    /// (the LVs of each PV's VG in the order of the PVs; a VG is listed once). Empty otherwise.
    pub logical_volumes: Vec<ExpectLv>,
}

/// A logical volume of an LVM volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectLv {
    /// VG name.
    pub vg: &'static str,
    /// LV name.
    pub name: &'static str,
    /// What is on it, named as for [`ExpectVolume::filesystem`].
    pub filesystem: &'static str,
    /// The filesystem label, if it has one.
    pub label: Option<&'static str>,
    /// The OS root is on this LV.
    pub has_os: bool,
    /// Number of segments.
    pub segments: usize,
}

/// The OS on a disk. `None` in `version_id`, `pretty_name`, `hostname` or `arch` means the disk
/// does not say (a correct reader reports none); `name` and `build` are set for Windows only
/// and are not claims about Linux disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectOs {
    /// `"linux"` or `"windows"`.
    pub family: &'static str,
    /// os-release `ID` (or what the older release files amount to), or `"windows"`.
    pub id: &'static str,
    /// os-release `VERSION_ID` (or equivalent); `"10.0"` for Windows.
    pub version_id: Option<&'static str>,
    /// os-release `PRETTY_NAME`; for Windows the corrected name and display version
    /// (`"Windows 11 Pro 23H2"`).
    pub pretty_name: Option<String>,
    /// The host name the system gives itself.
    pub hostname: Option<&'static str>,
    /// Architecture of the system binaries (`"x86_64"`, `"aarch64"`).
    pub arch: Option<&'static str>,
    /// Index into [`Expect::volumes`] of the volume holding the root.
    pub volume: usize,
    /// Windows: the corrected product name (`"Windows 11 Pro"`), also `product_name`.
    pub name: Option<&'static str>,
    /// Windows: `ProductName` as the registry has it (`"Windows 10 Pro"` on Windows 11).
    pub registry_product_name: Option<&'static str>,
    /// Windows: build and update revision (`"22631.2861"`).
    pub build: Option<&'static str>,
}

/// The fixture called `name`, if there is one.
pub fn fixture(name: &str) -> Option<Fixture> {
    catalogue().into_iter().find(|f| f.name == name)
}

/// The raw image of fixture `name`: built on first use (once, even when several threads and
/// processes ask at once), then taken from the cache.
pub fn image(name: &str) -> anyhow::Result<PathBuf> {
    let recipe = catalogue::recipe(name).with_context(|| format!("no fixture called {name:?}"))?;
    let dir = crate::cache_dir();
    let file = format!("{name}.{}.img", recipe.version());
    let path = dir.join(&file);
    if path.is_file() {
        return Ok(path);
    }
    let _lock = guard::lock_file(&cache_subdir("locks")?.join(format!("{name}.lock")))?;
    if path.is_file() {
        return Ok(path);
    }
    if recipe.needs_root {
        require_root(&format!("fixture {name}"))?;
    }
    let work = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .tempdir_in(cache_subdir("tmp")?)
        .context("failed to create a work directory")?;
    let out = work.path().join(&file);
    (recipe.build)(work.path(), &out).with_context(|| format!("failed to build fixture {name}"))?;
    remove_stale(&dir, name)?;
    std::fs::rename(&out, &path)
        .with_context(|| format!("failed to move '{}' into place", path.display()))?;
    Ok(path)
}

/// Remove cached images of `name` made by other builder versions.
fn remove_stale(dir: &Path, name: &str) -> anyhow::Result<()> {
    let prefix = format!("{name}.v");
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("failed to list '{}'", dir.display()))?
    {
        let entry = entry?;
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".img") {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("failed to remove '{}'", entry.path().display()))?;
        }
    }
    Ok(())
}

/// A directory under the cache directory (`locks`, `tmp`), created if needed.
pub(crate) fn cache_subdir(sub: &str) -> anyhow::Result<PathBuf> {
    let dir = crate::cache_dir().join(sub);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create '{}'", dir.display()))?;
    Ok(dir)
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Error unless running as root, saying what needed it.
pub(crate) fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("{what} needs root (debootstrap, loop devices or FUSE mounts)");
    }
    Ok(())
}
