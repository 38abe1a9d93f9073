//! Read-only file access to a guest volume: the [`RootFs`] view every consumer uses.
//!
//! Detection and inventory only ever see a [`RootFs`]: they never learn whether the files come from
//! a native parser (`ext4`, `xfs`, `btrfs`, `ntfs` modules) or a kernel mount (`host`). Paths are
//! always resolved inside the volume, like `openat2(RESOLVE_IN_ROOT)`: an absolute symlink target
//! restarts at the volume's root, `..` stops at the root, and at most [`MAX_SYMLINKS`] links are
//! followed per lookup. [`Rooted`] implements that resolution once, over any [`Tree`] (a backend
//! that can only look up one name in one directory and never follows links itself).
//!
//! This module does not contain parser failures; see [`contain`] for the thread, timeout and panic
//! guard that every native parse runs under.

pub mod btrfs;
pub mod bypath;
pub mod contain;
pub mod ext4;
pub mod host;
pub mod ntfs;
pub mod xfs;

use std::collections::VecDeque;
use std::time::Duration;

use crate::disk::probe::FsKind;
use crate::disk::reader::Volume;

/// Symlinks followed while resolving one path before giving up (Linux uses 40).
pub const MAX_SYMLINKS: u32 = 40;

/// Whether snapscan has a native reader for `kind` (what [`with_native`] can open).
pub fn has_native(kind: FsKind) -> bool {
    matches!(
        kind,
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs | FsKind::Ntfs
    )
}

/// Run `f` over the native [`RootFs`] of a volume of `kind`, contained (its own thread, the
/// timeout, panic capture: see [`contain`]). `None` when there is no native reader for `kind`
/// (ext2/3/4, XFS, Btrfs and NTFS have one). The filesystem is opened inside the contained thread
/// because `ext4_view::Ext4` cannot cross threads.
pub fn with_native<T, F>(
    kind: FsKind,
    volume: &Volume,
    timeout: Duration,
    f: F,
) -> Option<Result<T, FsError>>
where
    T: Send + 'static,
    F: FnOnce(&dyn RootFs) -> Result<T, FsError> + Send + 'static,
{
    let v = volume.clone();
    let budget = volume.budget();
    match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            Some(contain::run(budget, timeout, move || f(&ext4::open(v)?)))
        }
        FsKind::Xfs => Some(contain::run(budget, timeout, move || f(&xfs::open(v)?))),
        FsKind::Btrfs => Some(contain::run(budget, timeout, move || f(&btrfs::open(v)?))),
        FsKind::Ntfs => Some(contain::run(budget, timeout, move || f(&ntfs::open(v)?))),
        _ => None,
    }
}

/// Kind of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, fifo, socket, reparse point).
    Other,
}

/// What `stat` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Kind of file.
    pub file_type: FileType,
    /// Size in bytes (for a symlink, the length of its target).
    pub len: u64,
}

/// One directory entry (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (lossily converted to UTF-8).
    pub name: String,
    /// Its kind, without following symlinks.
    pub file_type: FileType,
}

/// Why a file operation on a guest volume failed.
///
/// `Corrupt`, `Unsupported` and `Io` come from the parsers and describe the disk, not snapscan; a
/// broken disk is a finding about that disk.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FsError {
    /// The path does not exist.
    #[error("'{0}' not found")]
    NotFound(String),
    /// A path component that must be a directory is not one.
    #[error("'{0}' is not a directory")]
    NotADirectory(String),
    /// A file operation was attempted on a directory.
    #[error("'{0}' is a directory")]
    IsADirectory(String),
    /// A symlink operation was attempted on something else.
    #[error("'{0}' is not a symbolic link")]
    NotASymlink(String),
    /// More than [`MAX_SYMLINKS`] links while resolving a path.
    #[error("too many levels of symbolic links resolving '{0}'")]
    SymlinkLoop(String),
    /// The file is larger than the caller allowed.
    #[error("'{path}' is {len} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        len: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// The filesystem's structures are inconsistent.
    #[error("corrupt filesystem: {0}")]
    Corrupt(String),
    /// The filesystem uses a feature the parser does not support.
    #[error("unsupported filesystem feature: {0}")]
    Unsupported(String),
    /// Reading the device failed (including an exhausted read budget or a cancelled parse).
    #[error("read error: {0}")]
    Io(String),
    /// The parse took longer than allowed.
    #[error("parsing timed out after {0} ms")]
    Timeout(u128),
    /// The parser panicked; the message is the panic's.
    #[error("parser crashed: {0}")]
    Panic(String),
}

impl FsError {
    /// Whether the device failed or the parse was stopped (read error, exhausted budget,
    /// timeout), as opposed to a missing or damaged file: such an error stops what reads the
    /// volume instead of counting as "file absent".
    pub fn is_device_error(&self) -> bool {
        matches!(self, FsError::Io(_) | FsError::Timeout(_))
    }

    /// A short stable label for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            FsError::NotFound(_) => "not_found",
            FsError::NotADirectory(_) => "not_a_directory",
            FsError::IsADirectory(_) => "is_a_directory",
            FsError::NotASymlink(_) => "not_a_symlink",
            FsError::SymlinkLoop(_) => "symlink_loop",
            FsError::TooLarge { .. } => "too_large",
            FsError::Corrupt(_) => "corrupt",
            FsError::Unsupported(_) => "unsupported",
            FsError::Io(_) => "io",
            FsError::Timeout(_) => "timeout",
            FsError::Panic(_) => "panic",
        }
    }
}

/// Read-only access to the files of one guest volume, with in-volume path resolution.
///
/// Paths are `/`-separated; relative paths are taken from the root.
pub trait RootFs {
    /// Read a whole file, following symlinks; fails with [`FsError::TooLarge`] above `limit`.
    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError>;
    /// Read at most the first `len` bytes of a file, following symlinks.
    fn read_prefix(&self, path: &str, len: u64) -> Result<Vec<u8>, FsError>;
    /// List a directory, following symlinks.
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError>;
    /// `stat`: follows symlinks.
    fn metadata(&self, path: &str) -> Result<Metadata, FsError>;
    /// `lstat`: does not follow a final symlink.
    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError>;
    /// The target of a symlink, as stored.
    fn read_link(&self, path: &str) -> Result<String, FsError>;
    /// Open a regular file (following symlinks) for positioned reads: the path is resolved once,
    /// so a reader that wants a few pages of a large file (a registry hive) reads only those.
    fn open(&self, path: &str) -> Result<Box<dyn FileAt + '_>, FsError>;

    /// Whether `path` exists (following symlinks); errors other than "not found" count as absent.
    fn exists(&self, path: &str) -> bool {
        self.metadata(path).is_ok()
    }

    /// Read a small text file (at most `limit` bytes), lossily as UTF-8; `None` if absent or
    /// unreadable.
    fn read_text(&self, path: &str, limit: u64) -> Option<String> {
        self.read_file(path, limit)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// A regular file opened with [`RootFs::open`], read at any offset.
pub trait FileAt {
    /// The file's size in bytes.
    fn len(&self) -> u64;
    /// Read at most `buf.len()` bytes at `offset`; fewer only at the end of the file (0 at or
    /// past it).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError>;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` from `offset`; reading past the end is [`FsError::Corrupt`] (the caller
    /// trusted an offset from the file's own contents).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let n = self.read_at(offset, buf)?;
        if n < buf.len() {
            return Err(FsError::Corrupt(format!(
                "read of {} bytes at offset {offset:#x} is past the end of a {}-byte file",
                buf.len(),
                self.len()
            )));
        }
        Ok(())
    }
}

/// Bytes read per call when a whole file (or a prefix) is read through [`Tree::read_at`].
const READ_CHUNK: usize = 1 << 20;

/// A filesystem backend that [`Rooted`] resolves paths over. It only looks up single names in
/// directories; it never follows symlinks and never sees `.` or `..`.
pub trait Tree {
    /// A handle to a file (an inode number, a canonical path...).
    type Node: Clone;
    /// The root directory.
    fn root(&self) -> Self::Node;
    /// Find `name` in directory `dir`; `Ok(None)` if absent. `path` is for error messages.
    fn lookup(
        &self,
        dir: &Self::Node,
        name: &str,
        path: &str,
    ) -> Result<Option<Self::Node>, FsError>;
    /// Kind and size of a node.
    fn stat(&self, node: &Self::Node, path: &str) -> Result<Metadata, FsError>;
    /// A symlink's target.
    fn read_link(&self, node: &Self::Node, path: &str) -> Result<Vec<u8>, FsError>;
    /// At most `buf.len()` bytes of a regular file at `offset`; fewer only at its end.
    fn read_at(
        &self,
        node: &Self::Node,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError>;
    /// The entries of a directory.
    fn list(&self, node: &Self::Node, path: &str) -> Result<Vec<DirEntry>, FsError>;
}

/// In-volume path resolution over a [`Tree`].
#[derive(Debug)]
pub struct Rooted<T>(pub T);

impl<T: Tree> Rooted<T> {
    /// Resolve `path` to a node. With `follow_last`, a final symlink is followed too.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<(T::Node, Metadata), FsError> {
        let tree = &self.0;
        let root = tree.root();
        let root_md = tree.stat(&root, "/")?;
        let mut stack: Vec<(T::Node, Metadata)> = Vec::new();
        let mut pending: VecDeque<String> = components(path).collect();
        let mut links = 0u32;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                stack.pop();
                continue;
            }
            let (dir, dir_md) = stack.last().cloned().unwrap_or((root.clone(), root_md));
            if dir_md.file_type != FileType::Dir {
                return Err(FsError::NotADirectory(path.to_owned()));
            }
            let node = tree
                .lookup(&dir, &name, path)?
                .ok_or_else(|| FsError::NotFound(path.to_owned()))?;
            let md = tree.stat(&node, path)?;
            if md.file_type == FileType::Symlink && (follow_last || !pending.is_empty()) {
                links = links.saturating_add(1);
                if links > MAX_SYMLINKS {
                    return Err(FsError::SymlinkLoop(path.to_owned()));
                }
                let target = String::from_utf8_lossy(&tree.read_link(&node, path)?).into_owned();
                if target.starts_with('/') {
                    stack.clear();
                }
                for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(c);
                }
                continue;
            }
            stack.push((node, md));
        }
        Ok(stack.pop().unwrap_or((root, root_md)))
    }

    /// Resolve `path` to a regular file.
    fn file(&self, path: &str) -> Result<(T::Node, Metadata), FsError> {
        let (node, md) = self.resolve(path, true)?;
        match md.file_type {
            FileType::File => Ok((node, md)),
            FileType::Dir => Err(FsError::IsADirectory(path.to_owned())),
            _ => Err(FsError::NotFound(path.to_owned())),
        }
    }

    /// Up to `max` bytes from the start of a resolved file that claims `len` bytes, whatever
    /// it really holds. Reads go through a buffer of the claimed size plus one byte (a file as
    /// long as it claims ends in one read), doubled while the file holds more, at most
    /// [`READ_CHUNK`].
    fn read_node(
        &self,
        node: &T::Node,
        len: u64,
        max: u64,
        path: &str,
    ) -> Result<Vec<u8>, FsError> {
        let mut size = usize::try_from(len.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(READ_CHUNK);
        let mut data = Vec::new();
        let mut chunk = vec![0; size];
        loop {
            let at = data.len() as u64;
            let want = usize::try_from(max.saturating_sub(at))
                .unwrap_or(usize::MAX)
                .min(size);
            if want == 0 {
                return Ok(data);
            }
            let buf = chunk.get_mut(..want).unwrap_or_default();
            let n = self.0.read_at(node, at, buf, path)?;
            data.extend_from_slice(buf.get(..n).unwrap_or_default());
            if n < want {
                return Ok(data);
            }
            size = size.saturating_mul(2).min(READ_CHUNK);
            chunk.resize(size, 0);
        }
    }
}

/// Fill `buf` by calling `read` (a stream read: a short count is not the end) until it is full or
/// `read` returns 0; the bytes filled. For backends whose reads stop at block boundaries.
fn fill(
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8]) -> Result<usize, FsError>,
) -> Result<usize, FsError> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match read(rest)? {
            0 => break,
            n => done = done.saturating_add(n),
        }
    }
    Ok(done)
}

/// A file of a [`Rooted`] tree, resolved once.
struct NodeFile<'a, T: Tree> {
    tree: &'a T,
    node: T::Node,
    len: u64,
    path: String,
}

impl<T: Tree> FileAt for NodeFile<'_, T> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        self.tree.read_at(&self.node, offset, buf, &self.path)
    }
}

/// The non-empty, non-`.` components of a path.
fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
}

impl<T: Tree> RootFs for Rooted<T> {
    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
        let (node, md) = self.file(path)?;
        if md.len > limit {
            return Err(FsError::TooLarge {
                path: path.to_owned(),
                len: md.len,
                limit,
            });
        }
        self.read_node(&node, md.len, limit, path)
    }

    fn read_prefix(&self, path: &str, len: u64) -> Result<Vec<u8>, FsError> {
        let (node, md) = self.file(path)?;
        self.read_node(&node, md.len, len, path)
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let (node, md) = self.resolve(path, true)?;
        if md.file_type != FileType::Dir {
            return Err(FsError::NotADirectory(path.to_owned()));
        }
        self.0.list(&node, path)
    }

    fn metadata(&self, path: &str) -> Result<Metadata, FsError> {
        self.resolve(path, true).map(|(_, md)| md)
    }

    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError> {
        self.resolve(path, false).map(|(_, md)| md)
    }

    fn read_link(&self, path: &str) -> Result<String, FsError> {
        let (node, md) = self.resolve(path, false)?;
        if md.file_type != FileType::Symlink {
            return Err(FsError::NotASymlink(path.to_owned()));
        }
        Ok(String::from_utf8_lossy(&self.0.read_link(&node, path)?).into_owned())
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileAt + '_>, FsError> {
        let (node, md) = self.file(path)?;
        Ok(Box::new(NodeFile {
            tree: &self.0,
            node,
            len: md.len,
            path: path.to_owned(),
        }))
    }
}

#[cfg(test)]
pub(crate) mod memfs;

#[cfg(test)]
mod tests {
    use super::memfs::MemTree;
    use super::*;

    fn sample() -> Rooted<MemTree> {
        Rooted(
            MemTree::default()
                .file("/etc/os-release", "ID=debian\n")
                .file("/usr/bin/ls", "ELF")
                .symlink("/bin", "usr/bin")
                .symlink("/etc/abs", "/etc/os-release")
                .symlink("/etc/escape", "../../../../etc/os-release")
                .symlink("/etc/outside", "/../../etc/os-release")
                .symlink("/loop/a", "b")
                .symlink("/loop/b", "a")
                .symlink("/self", "self")
                .symlink("/dangling", "/nope"),
        )
    }

    #[test]
    fn resolution_table() {
        let fs = sample();
        struct Case {
            name: &'static str,
            path: &'static str,
            want: Result<&'static str, &'static str>,
        }
        let cases = [
            Case {
                name: "plain",
                path: "/etc/os-release",
                want: Ok("ID=debian\n"),
            },
            Case {
                name: "relative",
                path: "etc/os-release",
                want: Ok("ID=debian\n"),
            },
            Case {
                name: "usr-merge link",
                path: "/bin/ls",
                want: Ok("ELF"),
            },
            Case {
                name: "absolute target",
                path: "/etc/abs",
                want: Ok("ID=debian\n"),
            },
            Case {
                name: "dotdot stops at root",
                path: "/etc/escape",
                want: Ok("ID=debian\n"),
            },
            Case {
                name: "absolute dotdot",
                path: "/etc/outside",
                want: Ok("ID=debian\n"),
            },
            Case {
                name: "dotdot in path",
                path: "/../../etc/../etc/./os-release",
                want: Ok("ID=debian\n"),
            },
            Case {
                name: "loop",
                path: "/loop/a",
                want: Err("symlink_loop"),
            },
            Case {
                name: "self loop",
                path: "/self/x",
                want: Err("symlink_loop"),
            },
            Case {
                name: "dangling",
                path: "/dangling",
                want: Err("not_found"),
            },
            Case {
                name: "file as dir",
                path: "/etc/os-release/x",
                want: Err("not_a_directory"),
            },
            Case {
                name: "dir as file",
                path: "/etc",
                want: Err("is_a_directory"),
            },
        ];
        for c in cases {
            let got = fs
                .read_file(c.path, 1024)
                .map(|b| String::from_utf8(b).expect("utf8"))
                .map_err(|e| e.kind());
            assert_eq!(got.as_deref().map_err(|e| *e), c.want, "case {}", c.name);
        }
    }

    #[test]
    fn lstat_readlink_and_limits() {
        let fs = sample();
        assert_eq!(
            fs.symlink_metadata("/bin").map(|m| m.file_type),
            Ok(FileType::Symlink)
        );
        assert_eq!(fs.metadata("/bin").map(|m| m.file_type), Ok(FileType::Dir));
        assert_eq!(fs.read_link("/bin").as_deref(), Ok("usr/bin"));
        assert_eq!(
            fs.read_link("/etc").map_err(|e| e.kind()),
            Err("not_a_symlink")
        );
        assert_eq!(
            fs.read_file("/etc/os-release", 3).map_err(|e| e.kind()),
            Err("too_large")
        );
        assert_eq!(
            fs.read_prefix("/etc/os-release", 2).as_deref(),
            Ok(&b"ID"[..])
        );
        let names: Vec<_> = fs
            .read_dir("/bin")
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["ls"]);
    }

    #[test]
    fn positioned_reads() {
        let fs = Rooted(
            MemTree::default()
                .file("/big", "0123456789")
                .symlink("/l", "big"),
        );
        let f = fs.open("/l").expect("open through a link");
        assert_eq!(f.len(), 10);
        let mut buf = [0u8; 4];
        assert_eq!(f.read_at(8, &mut buf), Ok(2), "short only at the end");
        assert_eq!(&buf[..2], b"89");
        assert_eq!(f.read_at(10, &mut buf), Ok(0));
        assert_eq!(f.read_exact_at(3, &mut buf), Ok(()));
        assert_eq!(&buf, b"3456");
        assert_eq!(
            f.read_exact_at(7, &mut buf).map_err(|e| e.kind()),
            Err("corrupt")
        );
        assert_eq!(fs.open("/").err().map(|e| e.kind()), Some("is_a_directory"));
    }

    #[test]
    fn whole_files_span_several_chunks() {
        let big = memfs::random_bytes(7, 3 * READ_CHUNK + 5);
        let fs = Rooted(MemTree::default().file("/big", &big).file("/empty", ""));
        assert_eq!(fs.read_file("/big", u64::MAX).as_deref(), Ok(&big[..]));
        assert_eq!(
            fs.read_prefix("/big", READ_CHUNK as u64 + 1).as_deref(),
            Ok(&big[..=READ_CHUNK])
        );
        assert_eq!(fs.read_file("/empty", 10), Ok(Vec::new()));
    }
}
