//! Test doubles for unit tests of resolution, detection and inventory: an in-memory [`Tree`],
//! a [`RootFs`] wrapper that fails on one path, and reproducible pseudo-random bytes.

use super::{DirEntry, FileAt, FileType, FsError, Metadata, RootFs, Tree};

#[derive(Debug, Clone)]
enum Node {
    Dir(Vec<(String, usize)>),
    File(Vec<u8>),
    Symlink(String),
}

/// Files, directories and symlinks built with the chained constructors; parents are created.
#[derive(Debug, Clone)]
pub struct MemTree {
    nodes: Vec<Node>,
}

impl Default for MemTree {
    fn default() -> Self {
        MemTree {
            nodes: vec![Node::Dir(Vec::new())],
        }
    }
}

impl MemTree {
    /// Add a regular file.
    pub fn file(self, path: &str, data: impl AsRef<[u8]>) -> Self {
        self.add(path, Node::File(data.as_ref().to_vec()))
    }

    /// Add a symlink.
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.add(path, Node::Symlink(target.to_owned()))
    }

    /// Add an empty directory.
    pub fn dir(self, path: &str) -> Self {
        self.add(path, Node::Dir(Vec::new()))
    }

    fn add(mut self, path: &str, node: Node) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut dir = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let existing = match &self.nodes[dir] {
                Node::Dir(entries) => entries.iter().find(|(n, _)| n == part).map(|(_, i)| *i),
                _ => panic!("{path}: parent is not a directory"),
            };
            dir = match existing {
                Some(i) if !last => i,
                _ => {
                    let new = if last {
                        node.clone()
                    } else {
                        Node::Dir(Vec::new())
                    };
                    self.nodes.push(new);
                    let idx = self.nodes.len() - 1;
                    if let Node::Dir(entries) = &mut self.nodes[dir] {
                        entries.push((part.to_string(), idx));
                    }
                    idx
                }
            };
        }
        self
    }

    fn kind(&self, i: usize) -> FileType {
        match self.nodes[i] {
            Node::Dir(_) => FileType::Dir,
            Node::File(_) => FileType::File,
            Node::Symlink(_) => FileType::Symlink,
        }
    }
}

impl Tree for MemTree {
    type Node = usize;

    fn root(&self) -> usize {
        0
    }

    fn lookup(&self, dir: &usize, name: &str, path: &str) -> Result<Option<usize>, FsError> {
        match &self.nodes[*dir] {
            Node::Dir(e) => Ok(e.iter().find(|(n, _)| n == name).map(|(_, i)| *i)),
            _ => Err(FsError::NotADirectory(path.to_owned())),
        }
    }

    fn stat(&self, node: &usize, _path: &str) -> Result<Metadata, FsError> {
        let len = match &self.nodes[*node] {
            Node::Dir(_) => 0,
            Node::File(d) => d.len() as u64,
            Node::Symlink(t) => t.len() as u64,
        };
        Ok(Metadata {
            file_type: self.kind(*node),
            len,
        })
    }

    fn read_link(&self, node: &usize, path: &str) -> Result<Vec<u8>, FsError> {
        match &self.nodes[*node] {
            Node::Symlink(t) => Ok(t.as_bytes().to_vec()),
            _ => Err(FsError::NotASymlink(path.to_owned())),
        }
    }

    fn read_at(
        &self,
        node: &usize,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError> {
        match &self.nodes[*node] {
            Node::File(d) => {
                let rest = usize::try_from(offset)
                    .ok()
                    .and_then(|o| d.get(o..))
                    .unwrap_or_default();
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                Ok(n)
            }
            _ => Err(FsError::IsADirectory(path.to_owned())),
        }
    }

    fn list(&self, node: &usize, path: &str) -> Result<Vec<DirEntry>, FsError> {
        match &self.nodes[*node] {
            Node::Dir(e) => Ok(e
                .iter()
                .map(|(n, i)| DirEntry {
                    name: n.clone(),
                    file_type: self.kind(*i),
                })
                .collect()),
            _ => Err(FsError::NotADirectory(path.to_owned())),
        }
    }
}

/// A [`RootFs`] that fails with `error` on `path` (leading `/` ignored) and otherwise asks
/// `inner`.
pub struct Failing<F> {
    /// The file system asked for every other path.
    pub inner: F,
    /// The path whose every access fails.
    pub path: &'static str,
    /// What that access returns.
    pub error: FsError,
}

impl<F: RootFs> Failing<F> {
    fn check(&self, path: &str) -> Result<(), FsError> {
        if path.trim_start_matches('/') == self.path.trim_start_matches('/') {
            Err(self.error.clone())
        } else {
            Ok(())
        }
    }
}

impl<F: RootFs> RootFs for Failing<F> {
    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
        self.check(path)?;
        self.inner.read_file(path, limit)
    }
    fn read_prefix(&self, path: &str, len: u64) -> Result<Vec<u8>, FsError> {
        self.check(path)?;
        self.inner.read_prefix(path, len)
    }
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        self.check(path)?;
        self.inner.read_dir(path)
    }
    fn metadata(&self, path: &str) -> Result<Metadata, FsError> {
        self.check(path)?;
        self.inner.metadata(path)
    }
    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError> {
        self.check(path)?;
        self.inner.symlink_metadata(path)
    }
    fn read_link(&self, path: &str) -> Result<String, FsError> {
        self.check(path)?;
        self.inner.read_link(path)
    }
    fn open(&self, path: &str) -> Result<Box<dyn FileAt + '_>, FsError> {
        self.check(path)?;
        self.inner.open(path)
    }
}

/// `len` reproducible pseudo-random bytes (xorshift32 from `seed`, which must not be 0).
pub fn random_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}
