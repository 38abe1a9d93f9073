//! A decoded disk (a VM image file read by [`super::image`]) shown to the kernel as one
//! read-only regular file, [`FILE_NAME`], on a FUSE mount of its own, so that a read-only loop
//! device can stand on it and the kernel mount the image's volumes for scanners that need a tree.
//!
//! The filesystem is read-only at both ends: it is mounted `ro`, opens for writing are refused
//! with `EROFS`, and everything but lookup, getattr, open, read and readdir is left to fuser's
//! defaults (`ENOSYS`). The file's bytes are [`Disk`] reads, so the decoder's bounds hold; a
//! panic in a decoder is caught and answered with `EIO` for that read. Only root (the mounting
//! user) can reach the mount.
//!
//! [`Exposed::unmount`] unmounts and waits for the serving thread; call it after the loop device
//! over the file is gone (while it holds the file the unmount is refused, and the mount stays for
//! the next scan's clean-up). Dropping an [`Exposed`] unmounts too, without waiting. A crashed
//! process leaves a mount whose reads fail (`ENOTCONN`); the workspace clean-up removes it like
//! any other mount under a dead scan's directory.
//!
//! Not here: the loop device and the mounts over it ([`crate::scan::access`]), or decoding.

use std::ffi::OsStr;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    INodeNo, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, Request,
};

use super::reader::{Disk, ReadAt};

/// The name of the file that holds the decoded disk.
pub const FILE_NAME: &str = "disk.raw";
/// The file's inode.
const FILE: INodeNo = INodeNo(2);
/// How long the kernel may cache names and attributes: the contents never change.
const TTL: Duration = Duration::from_secs(3600);
/// Threads serving reads.
const THREADS: usize = 2;

/// A disk shown as [`FILE_NAME`] under a FUSE mount; unmounted on drop.
#[derive(Debug)]
pub struct Exposed {
    session: BackgroundSession,
    file: PathBuf,
}

impl Exposed {
    /// Mount a filesystem holding `disk` as [`FILE_NAME`] at `mount_point` (an empty directory).
    ///
    /// # Errors
    ///
    /// FUSE is unavailable (no `/dev/fuse`, not root) or the mount is refused.
    pub fn mount(disk: Arc<Disk>, mount_point: &Path) -> anyhow::Result<Exposed> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("snapscan".into()),
            MountOption::Subtype("image".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
        ];
        config.n_threads = Some(THREADS);
        let fs = DiskFs {
            size: disk.size(),
            disk,
        };
        let session = fuser::spawn_mount(fs, mount_point, &config).with_context(|| {
            format!(
                "cannot mount a FUSE filesystem at '{}' (is /dev/fuse there?)",
                mount_point.display()
            )
        })?;
        Ok(Exposed {
            session,
            file: mount_point.join(FILE_NAME),
        })
    }

    /// The file holding the decoded disk.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Unmount and wait for the serving thread to end.
    ///
    /// # Errors
    ///
    /// The mount is busy (a loop device still holds the file) or the thread failed.
    pub fn unmount(self) -> anyhow::Result<()> {
        let at = self.file.parent().unwrap_or(&self.file).to_path_buf();
        self.session
            .umount_and_join()
            .with_context(|| format!("cannot unmount the decoded image at '{}'", at.display()))
    }
}

/// The filesystem: a root directory holding one file.
struct DiskFs {
    disk: Arc<Disk>,
    size: u64,
}

impl DiskFs {
    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o500, 0, 2),
            FILE => (FileType::RegularFile, 0o400, self.size, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }
}

impl Filesystem for DiskFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.attr(FILE) {
            Some(attr) if parent == INodeNo::ROOT && name == FILE_NAME => {
                reply.entry(&TTL, &attr, fuser::Generation(0));
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
        } else if flags.acc_mode() != OpenAccMode::O_RDONLY {
            reply.error(Errno::EROFS);
        } else {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
            return;
        }
        let len = u64::from(size).min(self.size.saturating_sub(offset));
        let Ok(len) = usize::try_from(len) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let mut buf = vec![0; len];
        let read = panic::catch_unwind(AssertUnwindSafe(|| {
            self.disk.read_exact_at(offset, &mut buf)
        }));
        match read {
            Ok(Ok(())) => reply.data(&buf),
            Ok(Err(e)) => {
                tracing::warn!(
                    "reading the decoded image at {offset:#x} ({len} bytes): {e}; answered EIO"
                );
                reply.error(Errno::EIO);
            }
            Err(_) => {
                tracing::warn!("the image decoder panicked at {offset:#x}; answered EIO");
                reply.error(Errno::EIO);
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_come_from_the_disk_and_writes_are_refused() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: needs root and /dev/fuse");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes: Vec<u8> = (0..3 * 65536 + 100).map(|i: u32| (i % 251) as u8).collect();
        let disk = Disk::from_bytes("pattern", bytes.clone());
        let exposed = Exposed::mount(disk, dir.path()).expect("mount");
        let read = std::fs::read(exposed.file()).expect("read");
        assert_eq!(read, bytes);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        let write = std::fs::OpenOptions::new().write(true).open(exposed.file());
        assert!(write.is_err(), "opened for writing");
        assert!(std::fs::write(dir.path().join("new"), b"x").is_err());
        exposed.unmount().expect("unmount");
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
