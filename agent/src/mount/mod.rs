//! Read-only kernel mounts of guest volumes, as guards.
//!
//! [`Mount::read_only`] mounts one volume with `MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOEXEC`
//! and options that keep the kernel from replaying a journal or log (a replay writes):
//! ext3/ext4 `noload` (ext2 retries without it when refused), xfs `norecovery,nouuid`, btrfs
//! `rescue=nologreplay` (older kernels: `nologreplay`), vfat/exfat plain `ro`. NTFS goes through
//! the kernel's `ntfs3` when `/proc/filesystems` lists it, else through `ntfs-3g -o ro` (FUSE)
//! run as a child that lives as long as the mount. [`Mount::bind_read_only`] places a directory
//! elsewhere read-only (sub-volumes under the root). Every guard unmounts on drop with bounded
//! retries, detaching lazily as a last resort.
//!
//! The caller gives a read-only device (a read-only loop device from
//! [`crate::disk::loopdev`], or a block device after `set_read_only`); the options above only
//! keep the filesystem driver itself from writing. Failures are [`MountError`]s whose
//! [`MountError::kind`] tells the caller whether to fall back to the native parsers.
//!
//! What this module does not do: choose mount points (see [`workspace`]), decide which volume
//! goes where (see [`fstab`]), or mount anything writable. Linux only.

pub mod fstab;
pub mod mountinfo;
pub mod workspace;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::disk::probe::FsKind;

pub use workspace::Workspace;

/// Flags of every mount made here.
const SAFE_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NOEXEC);
/// Unmount attempts before detaching lazily.
const UNMOUNT_TRIES: u32 = 5;
/// Pause between unmount attempts.
const UNMOUNT_PAUSE: Duration = Duration::from_millis(200);
/// How long ntfs-3g gets to mount, and to exit after its mount is gone.
const HELPER_WAIT: Duration = Duration::from_secs(30);
/// Bytes of ntfs-3g's stderr kept for error messages.
const HELPER_LOG_CAP: usize = 16 * 1024;

/// Why a volume could not be mounted (or unmounted).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// This kernel has no driver for the filesystem (and, for NTFS, there is no ntfs-3g).
    #[error("no driver for {fs}: {detail}")]
    NoDriver {
        /// Filesystem type.
        fs: String,
        /// What is missing.
        detail: String,
    },
    /// Mounting needs root (`CAP_SYS_ADMIN`).
    #[error("mounting '{0}' needs root")]
    NotRoot(PathBuf),
    /// The driver refused the volume or the options (`EINVAL`, corrupt metadata, a journal that
    /// needs replaying on a read-only device...).
    #[error("{fs} refused to mount '{source_dev}' with '{options}': {detail}")]
    Refused {
        /// The device.
        source_dev: PathBuf,
        /// Filesystem type.
        fs: String,
        /// The options tried last.
        options: String,
        /// The error.
        detail: String,
    },
    /// snapscan does not mount this kind of volume (swap, LVM PV, LUKS...).
    #[error("cannot mount a {0} volume")]
    Unsupported(FsKind),
    /// A mount helper (ntfs-3g) did not mount, or did not exit, in time.
    #[error("{what} did not finish within {secs} s")]
    Timeout {
        /// What was waited for.
        what: String,
        /// Seconds waited.
        secs: u64,
    },
    /// Anything else (missing mount point, a failed system call...).
    #[error("failed to {what}")]
    Io {
        /// What was attempted, naming the path.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl MountError {
    /// A short stable label for logs and reports: `no_driver`, `not_root`, `refused`,
    /// `unsupported`, `timeout` or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            MountError::NoDriver { .. } => "no_driver",
            MountError::NotRoot(_) => "not_root",
            MountError::Refused { .. } => "refused",
            MountError::Unsupported(_) => "unsupported",
            MountError::Timeout { .. } => "timeout",
            MountError::Io { .. } => "io",
        }
    }
}

fn io_error(what: impl Into<String>, source: std::io::Error) -> MountError {
    MountError::Io {
        what: what.into(),
        source,
    }
}

/// How to mount one filesystem kind: the kernel type and the data options to try in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// `mount(2)` with the first option string the driver accepts (later ones only on `EINVAL`).
    Kernel {
        fs_type: &'static str,
        attempts: &'static [&'static str],
    },
    /// `ntfs-3g` (FUSE).
    Ntfs3g,
}

/// The plan for `kind`; `has_ntfs3` says whether the kernel lists `ntfs3`.
fn plan(kind: FsKind, has_ntfs3: bool) -> Result<Plan, MountError> {
    let kernel = |fs_type, attempts| Ok(Plan::Kernel { fs_type, attempts });
    match kind {
        FsKind::Ext4 => kernel("ext4", &["noload"]),
        FsKind::Ext3 => kernel("ext3", &["noload"]),
        // ext2 has no journal: a driver that does not know `noload` may refuse it.
        FsKind::Ext2 => kernel("ext2", &["noload", ""]),
        FsKind::Xfs => kernel("xfs", &["norecovery,nouuid"]),
        // `rescue=nologreplay` since Linux 5.9, `nologreplay` before (removed later).
        FsKind::Btrfs => kernel("btrfs", &["rescue=nologreplay", "nologreplay"]),
        FsKind::Vfat => kernel("vfat", &[""]),
        FsKind::Exfat => kernel("exfat", &[""]),
        FsKind::Ntfs if has_ntfs3 => kernel("ntfs3", &[""]),
        FsKind::Ntfs => Ok(Plan::Ntfs3g),
        other => Err(MountError::Unsupported(other)),
    }
}

/// Whether `/proc/filesystems` lists `fs_type`.
fn kernel_has(fs_type: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(fs_type))
    })
}

/// The options a mount ends up with, for logs and reports: `ro,nodev,nosuid,noexec[,data]`.
fn describe_options(data: &str) -> String {
    let mut s = String::from("ro,nodev,nosuid,noexec");
    if !data.is_empty() {
        s.push(',');
        s.push_str(data);
    }
    s
}

/// Classify a failed `mount(2)`.
fn mount_errno(e: Errno, source: &Path, fs: &str, data: &str, target: &Path) -> MountError {
    match e {
        Errno::EPERM | Errno::EACCES => MountError::NotRoot(source.to_owned()),
        Errno::ENODEV => MountError::NoDriver {
            fs: fs.to_owned(),
            detail: format!("the kernel does not know filesystem type {fs}"),
        },
        Errno::EINVAL | Errno::EUCLEAN | Errno::EBADMSG | Errno::EROFS | Errno::EBUSY => {
            MountError::Refused {
                source_dev: source.to_owned(),
                fs: fs.to_owned(),
                options: describe_options(data),
                detail: e.desc().to_lowercase(),
            }
        }
        other => io_error(
            format!(
                "mount '{}' ({fs}) on '{}'",
                source.display(),
                target.display()
            ),
            std::io::Error::from(other),
        ),
    }
}

/// A read-only mount; unmounted when dropped.
#[derive(Debug)]
pub struct Mount {
    /// Canonical mount point; `None` once unmounted.
    target: Option<PathBuf>,
    fs_type: String,
    options: String,
    helper: Option<Helper>,
}

/// The ntfs-3g process behind a FUSE mount and what it printed.
#[derive(Debug)]
struct Helper {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Helper {
    fn log_text(&self) -> String {
        self.log
            .lock()
            .map(|l| l.trim().to_owned())
            .unwrap_or_default()
    }
}

impl Mount {
    /// Mount `source` (a read-only block device) on the existing directory `target` as `kind`,
    /// read-only, with the options in the module docs.
    pub fn read_only(source: &Path, target: &Path, kind: FsKind) -> Result<Mount, MountError> {
        let target = canonical_dir(target)?;
        match plan(kind, kind == FsKind::Ntfs && kernel_has("ntfs3"))? {
            Plan::Kernel { fs_type, attempts } => {
                let mut last = None;
                for data in attempts {
                    let data_opt = (!data.is_empty()).then_some(*data);
                    match nix::mount::mount(
                        Some(source),
                        &target,
                        Some(fs_type),
                        SAFE_FLAGS,
                        data_opt,
                    ) {
                        Ok(()) => {
                            let options = describe_options(data);
                            tracing::debug!(source = %source.display(), target = %target.display(), fs_type, %options, "mounted read-only");
                            return Ok(Mount {
                                target: Some(target),
                                fs_type: fs_type.to_owned(),
                                options,
                                helper: None,
                            });
                        }
                        Err(Errno::EINVAL) => {
                            tracing::debug!(source = %source.display(), fs_type, data, "mount options refused, trying the next");
                            last = Some(mount_errno(Errno::EINVAL, source, fs_type, data, &target));
                        }
                        Err(e) => return Err(mount_errno(e, source, fs_type, data, &target)),
                    }
                }
                Err(last.unwrap_or_else(|| MountError::Refused {
                    source_dev: source.to_owned(),
                    fs: fs_type.to_owned(),
                    options: String::new(),
                    detail: "no options to try".into(),
                }))
            }
            Plan::Ntfs3g => ntfs_3g(source, target),
        }
    }

    /// Bind-mount the directory `source` on `target`, then make that bind read-only, `nodev`,
    /// `nosuid` and `noexec` (a bind inherits the source's flags only at the superblock level).
    pub fn bind_read_only(source: &Path, target: &Path) -> Result<Mount, MountError> {
        let target = canonical_dir(target)?;
        nix::mount::mount(
            Some(source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mount_errno(e, source, "bind", "", &target))?;
        // From here on, the guard unmounts the bind if the remount fails.
        let guard = Mount {
            target: Some(target.clone()),
            fs_type: "bind".into(),
            options: describe_options("bind"),
            helper: None,
        };
        nix::mount::mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | SAFE_FLAGS,
            None::<&str>,
        )
        .map_err(|e| mount_errno(e, source, "bind", "remount,bind,ro", &target))?;
        Ok(guard)
    }

    /// Where it is mounted (canonical).
    pub fn target(&self) -> &Path {
        // OK: `target` is only `None` after `unmount`, which consumes `self`, or inside `Drop`.
        self.target.as_deref().unwrap_or_else(|| Path::new("/"))
    }

    /// The filesystem type used: `ext4`, `xfs`..., `ntfs-3g` or `bind`.
    pub fn fs_type(&self) -> &str {
        &self.fs_type
    }

    /// The options it was mounted with, e.g. `ro,nodev,nosuid,noexec,noload`.
    pub fn options(&self) -> &str {
        &self.options
    }

    /// Unmount now, reporting failure.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.finish()
    }

    /// Unmount (retrying, then lazily), then reap ntfs-3g. Idempotent.
    fn finish(&mut self) -> Result<(), MountError> {
        let Some(target) = self.target.take() else {
            return Ok(());
        };
        let result = unmount_path(&target);
        if let Some(mut helper) = self.helper.take() {
            reap(&mut helper, &target)?;
        }
        result
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = self.target.clone();
        if let Err(e) = self.finish() {
            tracing::warn!(target = ?target, error = %e, "failed to unmount");
        }
    }
}

/// Unmount whatever is mounted on `target`: a few tries while busy, then `MNT_DETACH`. A target
/// with nothing mounted counts as done.
pub(crate) fn unmount_path(target: &Path) -> Result<(), MountError> {
    let mut last = Errno::EBUSY;
    for attempt in 0..UNMOUNT_TRIES {
        if attempt > 0 {
            thread::sleep(UNMOUNT_PAUSE);
        }
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => {
                tracing::debug!(target = %target.display(), "unmounted");
                return Ok(());
            }
            // Not a mount point (any more).
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(Errno::EPERM) => return Err(MountError::NotRoot(target.to_owned())),
            Err(e) => last = e,
        }
    }
    tracing::warn!(target = %target.display(), error = %last, "still busy, detaching lazily");
    nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|e| {
        io_error(
            format!("unmount '{}' (busy: {last})", target.display()),
            e.into(),
        )
    })
}

/// `target` made absolute and canonical (mountinfo lists canonical paths); must be a directory.
fn canonical_dir(target: &Path) -> Result<PathBuf, MountError> {
    let what = || format!("use '{}' as a mount point", target.display());
    let dir = std::fs::canonicalize(target).map_err(|e| io_error(what(), e))?;
    if !dir.is_dir() {
        return Err(io_error(
            what(),
            std::io::Error::from(std::io::ErrorKind::NotADirectory),
        ));
    }
    Ok(dir)
}

/// Where ntfs-3g is installed, if it is.
fn find_ntfs_3g() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("ntfs-3g"))
        .find(|p| p.is_file())
}

/// Options given to ntfs-3g: read-only, no device files, no set-uid, no execution, and stay in
/// the foreground as our child so that unmounting can wait for it.
const NTFS_3G_OPTIONS: &str = "ro,nodev,nosuid,noexec,no_detach";

/// Mount NTFS through ntfs-3g and wait until the FUSE mount shows in mountinfo.
fn ntfs_3g(source: &Path, target: PathBuf) -> Result<Mount, MountError> {
    let Some(bin) = find_ntfs_3g() else {
        return Err(MountError::NoDriver {
            fs: "ntfs".into(),
            detail: "no ntfs3 in the kernel and no ntfs-3g installed".into(),
        });
    };
    let mut child = Command::new(&bin)
        .arg("-o")
        .arg(NTFS_3G_OPTIONS)
        .arg(source)
        .arg(&target)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io_error(format!("run '{}'", bin.display()), e))?;
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let log = Arc::clone(&log);
        thread::spawn(move || collect_log(stderr, &log));
    }
    let mut mount = Mount {
        target: Some(target.clone()),
        fs_type: "ntfs-3g".into(),
        options: NTFS_3G_OPTIONS.into(),
        helper: Some(Helper { child, log }),
    };
    let start = Instant::now();
    loop {
        let mounted = mountinfo::mounts_on(&target)
            .map_err(|e| io_error("read /proc/self/mountinfo", e))?
            .iter()
            .any(|m| m.fs_type.starts_with("fuse"));
        if mounted {
            tracing::debug!(source = %source.display(), target = %target.display(), "mounted read-only with ntfs-3g");
            return Ok(mount);
        }
        let exited = match mount.helper.as_mut() {
            Some(h) => h
                .child
                .try_wait()
                .map_err(|e| io_error("wait for ntfs-3g", e))?,
            None => None,
        };
        if let Some(status) = exited {
            let detail = mount
                .helper
                .take()
                .map(|h| h.log_text())
                .unwrap_or_default();
            mount.target = None;
            return Err(ntfs_3g_failed(source, status.code(), detail));
        }
        if start.elapsed() > HELPER_WAIT {
            // Drop kills ntfs-3g and removes a mount that appeared after all.
            return Err(MountError::Timeout {
                what: format!("ntfs-3g mounting '{}'", source.display()),
                secs: HELPER_WAIT.as_secs(),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Classify ntfs-3g's exit status (its `NTFS_VOLUME_*` codes).
fn ntfs_3g_failed(source: &Path, code: Option<i32>, detail: String) -> MountError {
    match code {
        // NTFS_VOLUME_NO_PRIVILEGE
        Some(19) => MountError::NotRoot(source.to_owned()),
        // NTFS_VOLUME_FUSE_ERROR: no /dev/fuse or fuse module.
        Some(21) => MountError::NoDriver {
            fs: "ntfs".into(),
            detail: format!("ntfs-3g cannot use FUSE: {detail}"),
        },
        _ => MountError::Refused {
            source_dev: source.to_owned(),
            fs: "ntfs-3g".into(),
            options: NTFS_3G_OPTIONS.into(),
            detail: format!(
                "exit code {}: {detail}",
                code.map_or_else(|| "none (killed)".to_owned(), |c| c.to_string())
            ),
        },
    }
}

/// Keep the first [`HELPER_LOG_CAP`] bytes of a helper's stderr, draining the rest.
fn collect_log(mut stderr: impl Read, log: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Ok(mut l) = log.lock() {
            let room = HELPER_LOG_CAP.saturating_sub(l.len());
            let chunk = String::from_utf8_lossy(buf.get(..n.min(room)).unwrap_or_default());
            l.push_str(&chunk);
        }
    }
}

/// Wait for ntfs-3g to exit once its mount is gone; kill it if it does not.
fn reap(helper: &mut Helper, target: &Path) -> Result<(), MountError> {
    let start = Instant::now();
    loop {
        match helper.child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if start.elapsed() < HELPER_WAIT => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = helper.child.kill();
                let _ = helper.child.wait();
                // A killed FUSE daemon leaves a dead mount behind.
                unmount_path(target)?;
                return Err(MountError::Timeout {
                    what: format!("ntfs-3g exiting after unmounting '{}'", target.display()),
                    secs: HELPER_WAIT.as_secs(),
                });
            }
            Err(e) => return Err(io_error("wait for ntfs-3g", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_per_kind() {
        struct Case {
            name: &'static str,
            kind: FsKind,
            ntfs3: bool,
            want: Result<Plan, &'static str>,
        }
        let k = |fs_type, attempts| Ok(Plan::Kernel { fs_type, attempts });
        let cases = [
            Case {
                name: "ext4 noload",
                kind: FsKind::Ext4,
                ntfs3: false,
                want: k("ext4", &["noload"]),
            },
            Case {
                name: "ext2 retries without noload",
                kind: FsKind::Ext2,
                ntfs3: false,
                want: k("ext2", &["noload", ""]),
            },
            Case {
                name: "xfs",
                kind: FsKind::Xfs,
                ntfs3: false,
                want: k("xfs", &["norecovery,nouuid"]),
            },
            Case {
                name: "btrfs",
                kind: FsKind::Btrfs,
                ntfs3: false,
                want: k("btrfs", &["rescue=nologreplay", "nologreplay"]),
            },
            Case {
                name: "ntfs kernel",
                kind: FsKind::Ntfs,
                ntfs3: true,
                want: k("ntfs3", &[""]),
            },
            Case {
                name: "ntfs fuse",
                kind: FsKind::Ntfs,
                ntfs3: false,
                want: Ok(Plan::Ntfs3g),
            },
            Case {
                name: "swap",
                kind: FsKind::Swap,
                ntfs3: false,
                want: Err("unsupported"),
            },
        ];
        for c in cases {
            let got = plan(c.kind, c.ntfs3).map_err(|e| e.kind());
            assert_eq!(got, c.want, "case {}", c.name);
        }
    }

    #[test]
    fn errno_classes() {
        struct Case {
            name: &'static str,
            errno: Errno,
            want: &'static str,
        }
        let cases = [
            Case {
                name: "eperm",
                errno: Errno::EPERM,
                want: "not_root",
            },
            Case {
                name: "enodev",
                errno: Errno::ENODEV,
                want: "no_driver",
            },
            Case {
                name: "einval",
                errno: Errno::EINVAL,
                want: "refused",
            },
            Case {
                name: "euclean",
                errno: Errno::EUCLEAN,
                want: "refused",
            },
            Case {
                name: "erofs (replay needed)",
                errno: Errno::EROFS,
                want: "refused",
            },
            Case {
                name: "eio",
                errno: Errno::EIO,
                want: "io",
            },
        ];
        for c in cases {
            let e = mount_errno(
                c.errno,
                Path::new("/dev/x"),
                "ext4",
                "noload",
                Path::new("/m"),
            );
            assert_eq!(e.kind(), c.want, "case {}", c.name);
        }
        assert_eq!(
            ntfs_3g_failed(Path::new("/d"), Some(21), String::new()).kind(),
            "no_driver"
        );
        assert_eq!(
            ntfs_3g_failed(Path::new("/d"), Some(13), String::new()).kind(),
            "refused"
        );
    }

    #[test]
    fn mounting_on_a_missing_directory_is_io() {
        let got = Mount::read_only(
            Path::new("/dev/null"),
            Path::new("/nonexistent/snapscan/mnt"),
            FsKind::Ext4,
        );
        assert_eq!(got.map(|_| ()).map_err(|e| e.kind()), Err("io"));
    }
}
