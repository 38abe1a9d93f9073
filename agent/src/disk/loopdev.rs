//! Read-only loop devices, made with the kernel's loop ioctls, and the block-device read-only
//! flag (`BLKROSET`) as a guard that puts it back.
//!
//! [`LoopDevice::attach_read_only`] opens the backing file (an image or a block device) with
//! `O_RDONLY`, asks `/dev/loop-control` for a free device, opens it `O_RDONLY` too, and binds it
//! with `LOOP_CONFIGURE` (`LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR`, offset, size limit), falling
//! back to `LOOP_SET_FD` + `LOOP_SET_STATUS64` on kernels that refuse `LOOP_CONFIGURE`. Another
//! process may grab the same free device between the two steps (`EBUSY`): then it asks again.
//! The binding is read back and checked (read-only, offset, size limit, `BLKROGET`) before the
//! device is handed out.
//!
//! Because of `LO_FLAGS_AUTOCLEAR`, the kernel detaches the device by itself at its last close:
//! the guard holds it open, a mount holds it while mounted, so a crashed process leaves at most
//! devices that are still mounted (see `crate::mount::Workspace::cleanup_leftovers`).
//!
//! [`ReadOnlyFlag::set`] reads a block device's read-only flag (`BLKROGET`), sets it
//! (`BLKROSET`), checks it took, and keeps the device open; [`ReadOnlyFlag::restore`] (or
//! dropping the guard: an error, a panic unwinding, a cancelled scan) clears it again if it was
//! clear before, and leaves it alone if it was already set. The flag belongs to the device, not
//! to an opener, and on a loop device it outlives the binding, so a flag left behind would make
//! the device read-only for its next user. A process killed outright (`SIGKILL`) cannot put it
//! back; nothing records it for a later run.
//!
//! What this module does not do: partition scanning (`LO_FLAGS_PARTSCAN`: callers give offsets),
//! direct I/O, or anything writable. It parses nothing from the disk.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;

use super::ioctl::{self, LoopInfo64, LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY};

/// The loop control device.
const LOOP_CONTROL: &str = "/dev/loop-control";
/// Free devices tried before giving up when other processes keep taking them.
const ATTACH_TRIES: u32 = 16;
/// Checks that a detached device is really unbound before reporting failure.
const DETACH_TRIES: u32 = 20;
/// Pause between those checks, and between attach attempts.
const PAUSE: Duration = Duration::from_millis(50);

/// Why a loop device could not be made, checked or detached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The kernel refused for lack of privilege (loop devices need `CAP_SYS_ADMIN`).
    #[error("failed to {what}: not permitted (loop devices need root)")]
    NotRoot {
        /// What was attempted, naming the device or file.
        what: String,
    },
    /// This system has no loop driver (no `/dev/loop-control`).
    #[error("no loop device support: {0}")]
    Unavailable(String),
    /// Every free device was taken by someone else before it could be bound.
    #[error("no free loop device after {0} attempts (others keep taking them)")]
    Busy(u32),
    /// The device came out writable or with other settings than asked for; it was detached.
    #[error("loop device '{device}' is not what was asked for: {detail}")]
    NotReadOnly {
        /// The device.
        device: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The device is still bound after detaching (held open or mounted); the kernel detaches it
    /// at its last close.
    #[error("loop device '{0}' is still bound (mounted or held open elsewhere)")]
    StillBound(PathBuf),
    /// Any other failure of a system call.
    #[error("failed to {what}")]
    Io {
        /// What was attempted, naming the device or file.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl LoopError {
    /// A short stable label for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            LoopError::NotRoot { .. } => "not_root",
            LoopError::Unavailable(_) => "unavailable",
            LoopError::Busy(_) => "busy",
            LoopError::NotReadOnly { .. } => "not_read_only",
            LoopError::StillBound(_) => "still_bound",
            LoopError::Io { .. } => "io",
        }
    }
}

/// Classify an error of a system call on a loop or block device.
fn io_err(what: impl Into<String>, source: io::Error) -> LoopError {
    let what = what.into();
    match source.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EPERM | Errno::EACCES) => LoopError::NotRoot { what },
        _ => LoopError::Io { what, source },
    }
}

/// What a loop device is bound to: enough to recognise it later, after a crash, even when its
/// number has been reused (see [`detach_leftover`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoopBinding {
    /// The device node, e.g. `/dev/loop3`.
    pub device: PathBuf,
    /// The backing file or block device, as given.
    pub backing: PathBuf,
    /// `st_dev` of the backing file.
    pub backing_dev: u64,
    /// `st_ino` of the backing file.
    pub backing_ino: u64,
    /// First byte of the backing file shown.
    pub offset: u64,
}

impl LoopBinding {
    /// Whether a device's status shows this binding.
    fn is(&self, info: &LoopInfo64) -> bool {
        info.lo_device == self.backing_dev
            && info.lo_inode == self.backing_ino
            && info.lo_offset == self.offset
    }
}

/// A read-only loop device; detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    binding: LoopBinding,
    /// Held open so the auto-clearing device stays bound; `None` once detached.
    file: Option<File>,
}

impl LoopDevice {
    /// Attach `backing` (an image file or a block device, opened `O_RDONLY`) read-only, showing
    /// `size_limit` bytes (all when `None`) from byte `offset`. See the module docs.
    pub fn attach_read_only(
        backing: &Path,
        offset: u64,
        size_limit: Option<u64>,
    ) -> Result<LoopDevice, LoopError> {
        let what = || format!("open '{}' read-only", backing.display());
        let backing_file = File::open(backing).map_err(|e| io_err(what(), e))?;
        let meta = backing_file.metadata().map_err(|e| io_err(what(), e))?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open(LOOP_CONTROL)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    LoopError::Unavailable(format!("{LOOP_CONTROL} does not exist"))
                }
                _ => io_err(format!("open {LOOP_CONTROL}"), e),
            })?;
        let mut info = LoopInfo64::zeroed();
        info.lo_offset = offset;
        info.lo_sizelimit = size_limit.unwrap_or(0);
        info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        let name = backing.as_os_str().as_bytes();
        let n = name.len().min(info.lo_file_name.len().saturating_sub(1));
        info.lo_file_name[..n].copy_from_slice(&name[..n]);

        for _ in 0..ATTACH_TRIES {
            let number =
                ioctl::loop_get_free(&control).map_err(|e| io_err("find a free loop device", e))?;
            let device = PathBuf::from(format!("/dev/loop{number}"));
            let dev = match File::open(&device) {
                Ok(f) => f,
                // The node may lag behind LOOP_CTL_GET_FREE for a moment, or the device may
                // still be tearing down from its last auto-clear (ENXIO).
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(Errno::ENXIO as i32) =>
                {
                    thread::sleep(PAUSE);
                    continue;
                }
                Err(e) => return Err(io_err(format!("open '{}'", device.display()), e)),
            };
            match configure(&dev, &backing_file, &info) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => {
                    tracing::debug!(device = %device.display(), "loop device taken meanwhile, trying another");
                    continue;
                }
                Err(e) => {
                    return Err(io_err(
                        format!("attach '{}' to '{}'", backing.display(), device.display()),
                        e,
                    ))
                }
            }
            let loop_dev = LoopDevice {
                binding: LoopBinding {
                    device,
                    backing: backing.to_owned(),
                    backing_dev: meta.dev(),
                    backing_ino: meta.ino(),
                    offset,
                },
                file: Some(dev),
            };
            // On a mismatch the guard is dropped here, which detaches it.
            loop_dev.verify(offset, size_limit.unwrap_or(0))?;
            tracing::debug!(
                device = %loop_dev.path().display(),
                backing = %backing.display(),
                offset,
                size_limit = size_limit.unwrap_or(0),
                "attached read-only loop device"
            );
            return Ok(loop_dev);
        }
        Err(LoopError::Busy(ATTACH_TRIES))
    }

    /// Check the bound device against what was asked for.
    fn verify(&self, offset: u64, size_limit: u64) -> Result<(), LoopError> {
        let device = self.path().to_owned();
        let Some(file) = &self.file else {
            return Err(LoopError::StillBound(device));
        };
        let what = || format!("read the status of '{}'", device.display());
        let info = ioctl::loop_get_status64(file).map_err(|e| io_err(what(), e))?;
        let ro = ioctl::is_block_read_only(file).map_err(|e| io_err(what(), e))?;
        let mut problems = Vec::new();
        if info.lo_flags & LO_FLAGS_READ_ONLY == 0 || !ro {
            problems.push("writable".to_owned());
        }
        if info.lo_offset != offset {
            problems.push(format!("offset {} instead of {offset}", info.lo_offset));
        }
        if info.lo_sizelimit != size_limit {
            problems.push(format!(
                "size limit {} instead of {size_limit}",
                info.lo_sizelimit
            ));
        }
        if !self.binding.is(&info) {
            problems.push("bound to another file".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoopError::NotReadOnly {
                device,
                detail: problems.join(", "),
            })
        }
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.binding.device
    }

    /// What the device is bound to (for crash records).
    pub fn binding(&self) -> &LoopBinding {
        &self.binding
    }

    /// Detach now; fails with [`LoopError::StillBound`] while it is mounted or held open
    /// elsewhere (it is then detached by the kernel at its last close).
    pub fn detach(mut self) -> Result<(), LoopError> {
        self.detach_now()
    }

    /// Unbind, close, and wait until the kernel shows the device unbound. Idempotent.
    fn detach_now(&mut self) -> Result<(), LoopError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        match ioctl::loop_clr_fd(&file) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32) => return Ok(()),
            Err(e) => {
                return Err(io_err(
                    format!("detach '{}'", self.binding.device.display()),
                    e,
                ))
            }
        }
        // The kernel detaches at the last close; ours is the last unless something else holds it.
        drop(file);
        for attempt in 0..DETACH_TRIES {
            if attempt > 0 {
                thread::sleep(PAUSE);
            }
            if !still_bound(&self.binding)? {
                tracing::debug!(device = %self.binding.device.display(), "detached loop device");
                return Ok(());
            }
        }
        Err(LoopError::StillBound(self.binding.device.clone()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach_now() {
            tracing::warn!(device = %self.binding.device.display(), error = %e, "failed to detach loop device");
        }
    }
}

/// Bind `dev` to `backing`: `LOOP_CONFIGURE`, or the two-step way where it is unknown.
fn configure(dev: &File, backing: &File, info: &LoopInfo64) -> io::Result<()> {
    match ioctl::loop_configure(dev, backing, info) {
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == Errno::EINVAL as i32 || c == Errno::ENOTTY as i32) =>
        {
            tracing::debug!(error = %e, "LOOP_CONFIGURE refused, using LOOP_SET_FD");
            ioctl::loop_set_fd(dev, backing)?;
            // Read-only follows from the read-only opens; only AUTOCLEAR is settable here.
            let mut legacy = *info;
            legacy.lo_flags &= LO_FLAGS_AUTOCLEAR;
            if let Err(e) = ioctl::loop_set_status64(dev, &legacy) {
                let _ = ioctl::loop_clr_fd(dev);
                return Err(e);
            }
            Ok(())
        }
        other => other,
    }
}

/// Whether `binding.device` is still bound to the same backing file and offset.
fn still_bound(binding: &LoopBinding) -> Result<bool, LoopError> {
    let what = || format!("open '{}'", binding.device.display());
    let file = match File::open(&binding.device) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        // A loop device being torn down (auto-clear after its last close) refuses opens.
        Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32) => return Ok(false),
        Err(e) => return Err(io_err(what(), e)),
    };
    match ioctl::loop_get_status64(&file) {
        Ok(info) => Ok(binding.is(&info)),
        Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32) => Ok(false),
        Err(e) => Err(io_err(
            format!("read the status of '{}'", binding.device.display()),
            e,
        )),
    }
}

/// Detach a loop device left behind by a crashed process, but only while it is still bound to
/// the recorded backing file and offset (its number may have been reused since). Returns
/// whether it was still bound. Unmount what uses it first: a mounted device stays bound until
/// unmounted, then the kernel detaches it.
pub fn detach_leftover(binding: &LoopBinding) -> Result<bool, LoopError> {
    if !still_bound(binding)? {
        return Ok(false);
    }
    let file = File::open(&binding.device)
        .map_err(|e| io_err(format!("open '{}'", binding.device.display()), e))?;
    // Checked again on this descriptor: the device may have changed hands in between.
    match ioctl::loop_get_status64(&file) {
        Ok(info) if binding.is(&info) => {}
        _ => return Ok(false),
    }
    let mut guard = LoopDevice {
        binding: binding.clone(),
        file: Some(file),
    };
    guard.detach_now()?;
    Ok(true)
}

/// A block device's read-only flag, set by [`ReadOnlyFlag::set`] and put back as it was by
/// [`ReadOnlyFlag::restore`] or on drop (see the module docs).
#[derive(Debug)]
pub struct ReadOnlyFlag {
    device: PathBuf,
    /// Held open for the restore, until the guard goes.
    file: File,
    /// The flag before [`ReadOnlyFlag::set`].
    was_read_only: bool,
    /// Whether the flag is still to be put back.
    armed: bool,
}

impl ReadOnlyFlag {
    /// Read the flag of `dev`, set it, and check that it took.
    pub fn set(dev: &Path) -> Result<ReadOnlyFlag, LoopError> {
        let file = File::open(dev)
            .map_err(|e| io_err(format!("open '{}' read-only", dev.display()), e))?;
        let what = || format!("read the read-only flag of '{}'", dev.display());
        let was_read_only = ioctl::is_block_read_only(&file).map_err(|e| io_err(what(), e))?;
        // From here on the guard puts the flag back, whatever fails next.
        let guard = ReadOnlyFlag {
            device: dev.to_owned(),
            file,
            was_read_only,
            armed: true,
        };
        if !was_read_only {
            ioctl::set_block_read_only(&guard.file, true)
                .map_err(|e| io_err(format!("set '{}' read-only (BLKROSET)", dev.display()), e))?;
        }
        if !ioctl::is_block_read_only(&guard.file).map_err(|e| io_err(what(), e))? {
            return Err(LoopError::NotReadOnly {
                device: dev.to_owned(),
                detail: "BLKROGET still says writable after BLKROSET".into(),
            });
        }
        tracing::debug!(device = %dev.display(), was_read_only, "set the block device read-only");
        Ok(guard)
    }

    /// Whether the flag was already set before.
    pub fn was_read_only(&self) -> bool {
        self.was_read_only
    }

    /// Put the flag back as it was, now.
    pub fn restore(mut self) -> Result<(), LoopError> {
        self.restore_now()
    }

    /// Clear the flag if it was clear before. Idempotent.
    fn restore_now(&mut self) -> Result<(), LoopError> {
        if !std::mem::replace(&mut self.armed, false) || self.was_read_only {
            return Ok(());
        }
        ioctl::set_block_read_only(&self.file, false).map_err(|e| {
            io_err(
                format!(
                    "put back the read-only flag of '{}' (BLKROSET 0)",
                    self.device.display()
                ),
                e,
            )
        })?;
        tracing::debug!(device = %self.device.display(), "cleared the read-only flag again");
        Ok(())
    }
}

impl Drop for ReadOnlyFlag {
    fn drop(&mut self) {
        if let Err(e) = self.restore_now() {
            tracing::warn!(device = %self.device.display(), error = %e, "failed to put back the read-only flag");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
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
                name: "eacces",
                errno: Errno::EACCES,
                want: "not_root",
            },
            Case {
                name: "enxio",
                errno: Errno::ENXIO,
                want: "io",
            },
        ];
        for c in cases {
            let e = io_err("x", io::Error::from_raw_os_error(c.errno as i32));
            assert_eq!(e.kind(), c.want, "case {}", c.name);
        }
    }

    #[test]
    fn the_read_only_flag_of_a_regular_file_cannot_be_set() {
        let dir = std::env::temp_dir().join(format!("snapscan-loopdev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("plain");
        std::fs::write(&f, b"x").expect("write");
        let got = ReadOnlyFlag::set(&f);
        assert!(got.is_err(), "{got:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
