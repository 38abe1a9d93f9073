//! Readers addressed by path (the `lamxfs` and `lambutter` crates, which share one shape) as a
//! [`Tree`].
//!
//! Such a reader resolves a whole absolute path itself and takes `&mut self`. [`PathTree`] hands
//! it only canonical paths built by [`super::Rooted`] (no symlinks before the last component, no
//! `..`), so the reader's own link handling is never used and the in-volume resolution stays
//! [`super::Rooted`]'s. Nodes carry the canonical path and the reader's inode handle, so reads
//! and `stat` of a resolved file do not walk the path again.
//!
//! It does not cache: a lookup resolves the child's path from the volume's root, and the disk's
//! page cache absorbs the repeated reads of the directories above it.

use std::cell::RefCell;
use std::io;

use super::{DirEntry, FileType, FsError, Metadata, Tree};
use crate::disk::reader::{ReadAt, Volume};

/// What [`PathTree`] needs of a path-addressed reader; errors already mapped to [`FsError`]
/// (`path` is for their messages).
pub trait PathFs {
    /// The reader's handle to an inode.
    type Ino: Clone;
    /// Resolve a canonical absolute path, not following a final symlink; `Ok(None)` if absent.
    fn resolve(&mut self, path: &str) -> Result<Option<Self::Ino>, FsError>;
    /// Kind and size of an inode.
    fn stat(&mut self, ino: &Self::Ino, path: &str) -> Result<Metadata, FsError>;
    /// The target of the symlink at `path`.
    fn read_link(&mut self, path: &str) -> Result<Vec<u8>, FsError>;
    /// At most `buf.len()` bytes of a regular file at `offset`.
    fn read_at(
        &mut self,
        ino: &Self::Ino,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError>;
    /// The entries of the directory at `path` (`.` and `..` included or not).
    fn list(&mut self, path: &str) -> Result<Vec<DirEntry>, FsError>;
}

/// A [`PathFs`] as a [`Tree`].
pub struct PathTree<P: PathFs> {
    fs: RefCell<P>,
    root: P::Ino,
}

impl<P: PathFs> PathTree<P> {
    /// Wrap an opened reader.
    pub fn new(mut fs: P) -> Result<Self, FsError> {
        let root = fs
            .resolve("/")?
            .ok_or_else(|| FsError::Corrupt("the root directory cannot be found".into()))?;
        Ok(PathTree {
            fs: RefCell::new(fs),
            root,
        })
    }
}

impl<P: PathFs> Tree for PathTree<P> {
    type Node = (String, P::Ino);

    fn root(&self) -> Self::Node {
        (String::from("/"), self.root.clone())
    }

    fn lookup(
        &self,
        dir: &Self::Node,
        name: &str,
        _path: &str,
    ) -> Result<Option<Self::Node>, FsError> {
        let child = if dir.0 == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", dir.0)
        };
        let found = self.fs.borrow_mut().resolve(&child)?;
        Ok(found.map(|ino| (child, ino)))
    }

    fn stat(&self, node: &Self::Node, path: &str) -> Result<Metadata, FsError> {
        self.fs.borrow_mut().stat(&node.1, path)
    }

    fn read_link(&self, node: &Self::Node, _path: &str) -> Result<Vec<u8>, FsError> {
        self.fs.borrow_mut().read_link(&node.0)
    }

    fn read_at(
        &self,
        node: &Self::Node,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError> {
        let mut fs = self.fs.borrow_mut();
        let mut at = offset;
        super::fill(buf, |b| {
            let n = fs.read_at(&node.1, at, b, path)?;
            at = at.saturating_add(n as u64);
            Ok(n)
        })
    }

    fn list(&self, node: &Self::Node, _path: &str) -> Result<Vec<DirEntry>, FsError> {
        let mut entries = self.fs.borrow_mut().list(&node.0)?;
        entries.retain(|e| e.name != "." && e.name != "..");
        Ok(entries)
    }
}

/// A [`Volume`] as the block source of both crates: every read fills the whole buffer.
pub struct BlockSource(pub Volume);

impl BlockSource {
    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.0.size()
    }
}

impl lamxfs::BlockRead for BlockSource {
    type Error = io::Error;

    fn read_at(&mut self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(offset_bytes, buf)
    }
}

impl lambutter::BlockRead for BlockSource {
    type Error = io::Error;

    fn read_at(&mut self, offset_bytes: u64, buf: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(offset_bytes, buf)
    }
}

/// [`Metadata`] from what both crates' metadata tell: the kind as three tests, and the size.
pub fn metadata(is_file: bool, is_dir: bool, is_symlink: bool, len: u64) -> Metadata {
    let file_type = if is_file {
        FileType::File
    } else if is_dir {
        FileType::Dir
    } else if is_symlink {
        FileType::Symlink
    } else {
        FileType::Other
    };
    Metadata { file_type, len }
}
