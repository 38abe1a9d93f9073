//! ext2/3/4 volumes through the `ext4-view` crate, as a [`Tree`].
//!
//! `ext4-view` reads without mounting and without writing; it follows symlinks itself when given
//! a path, so this backend only ever hands it canonical paths (no symlinks, no `..`) built by
//! [`super::Rooted`], which does the in-volume resolution. It does not replay the journal: a
//! crash-consistent snapshot is read as it is on disk.

use super::{DirEntry, FileType, FsError, Metadata, Rooted, Tree};
use crate::disk::reader::Volume;
use ext4_view::{Ext4, Ext4Error, FileType as ExtType, PathBuf};

/// An opened ext2/3/4 filesystem.
pub struct Ext4Tree {
    fs: Ext4,
}

/// Open an ext2/3/4 volume. Must be called on the thread that uses the result (see
/// [`super::contain`]).
pub fn open(volume: Volume) -> Result<Rooted<Ext4Tree>, FsError> {
    let fs = Ext4::load(Box::new(volume)).map_err(|e| map_err(e, "/"))?;
    Ok(Rooted(Ext4Tree { fs }))
}

fn map_err(e: Ext4Error, path: &str) -> FsError {
    match e {
        Ext4Error::NotFound => FsError::NotFound(path.to_owned()),
        Ext4Error::NotADirectory => FsError::NotADirectory(path.to_owned()),
        Ext4Error::IsADirectory => FsError::IsADirectory(path.to_owned()),
        Ext4Error::NotASymlink => FsError::NotASymlink(path.to_owned()),
        Ext4Error::TooManySymlinks => FsError::SymlinkLoop(path.to_owned()),
        Ext4Error::Io(e) => FsError::Io(e.to_string()),
        Ext4Error::Incompatible(e) => FsError::Unsupported(e.to_string()),
        Ext4Error::Corrupt(e) => FsError::Corrupt(e.to_string()),
        other => FsError::Corrupt(format!("{path}: {other}")),
    }
}

fn file_type(t: ExtType) -> FileType {
    if t.is_regular_file() {
        FileType::File
    } else if t.is_dir() {
        FileType::Dir
    } else if t.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Other
    }
}

impl Tree for Ext4Tree {
    type Node = PathBuf;

    fn root(&self) -> PathBuf {
        PathBuf::new("/")
    }

    fn lookup(&self, dir: &PathBuf, name: &str, path: &str) -> Result<Option<PathBuf>, FsError> {
        let child = dir.join(name);
        match self.fs.symlink_metadata(&child) {
            Ok(_) => Ok(Some(child)),
            Err(Ext4Error::NotFound) => Ok(None),
            Err(e) => Err(map_err(e, path)),
        }
    }

    fn stat(&self, node: &PathBuf, path: &str) -> Result<Metadata, FsError> {
        let md = self
            .fs
            .symlink_metadata(node)
            .map_err(|e| map_err(e, path))?;
        Ok(Metadata {
            file_type: file_type(md.file_type()),
            len: md.len(),
        })
    }

    fn read_link(&self, node: &PathBuf, path: &str) -> Result<Vec<u8>, FsError> {
        let target = self.fs.read_link(node).map_err(|e| map_err(e, path))?;
        Ok(target.as_ref().to_vec())
    }

    fn read_at(
        &self,
        node: &PathBuf,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError> {
        let mut file = self.fs.open(node).map_err(|e| map_err(e, path))?;
        file.seek_to(offset).map_err(|e| map_err(e, path))?;
        super::fill(buf, |b| file.read_bytes(b).map_err(|e| map_err(e, path)))
    }

    fn list(&self, node: &PathBuf, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let mut out = Vec::new();
        for entry in self.fs.read_dir(node).map_err(|e| map_err(e, path))? {
            let entry = entry.map_err(|e| map_err(e, path))?;
            let name = entry.file_name();
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let file_type = entry.file_type().map(file_type).unwrap_or(FileType::Other);
            out.push(DirEntry { name, file_type });
        }
        Ok(out)
    }
}
