//! XFS volumes through the `lamxfs` crate, as a [`super::Tree`] (see [`super::bypath`]).
//!
//! `lamxfs` reads v4 and v5 superblocks (v5 metadata CRCs checked), inodes in local, extents and
//! btree formats, short-form, block, leaf and node directories, inline and remote symlinks,
//! sparse inodes and reflinked files, and checks every on-disk count and offset before use. A
//! dirty log is replayed in memory, as Linux does at mount, and nothing is written; a log it
//! cannot replay (a v4 log, an unfinished bmap change, an unknown item) refuses the volume, as
//! do a realtime device, an external log and ascii-ci names. It does not read extended
//! attributes or quota files.

use lamxfs::{EntryKind, Error, Inode, Path, Xfs};

use super::bypath::{self, BlockSource, PathFs, PathTree};
use super::{DirEntry, FileType, FsError, Metadata, Rooted};
use crate::disk::reader::Volume;

/// An opened XFS filesystem.
pub struct XfsFs(Xfs<BlockSource>);

/// Open an XFS volume (replaying a dirty log in memory).
pub fn open(volume: Volume) -> Result<Rooted<PathTree<XfsFs>>, FsError> {
    let source = BlockSource(volume);
    let size = source.size();
    let fs = Xfs::open(source, size).map_err(|e| map_err(e, "/"))?;
    Ok(Rooted(PathTree::new(XfsFs(fs))?))
}

fn map_err(e: Error, path: &str) -> FsError {
    match e {
        Error::NotFound { .. } => FsError::NotFound(path.to_owned()),
        Error::NotARegularFile => FsError::IsADirectory(path.to_owned()),
        Error::NotASymlink => FsError::NotASymlink(path.to_owned()),
        Error::Io { token, offset } => FsError::Io(format!("{path}: {token} at {offset:#x}")),
        Error::UnsupportedFeature(f) => FsError::Unsupported(f.to_owned()),
        Error::BadSuperblock(why) => FsError::Unsupported(format!("superblock: {why:?}")),
        other => FsError::Corrupt(format!("{path}: {other:?}")),
    }
}

fn kind(k: EntryKind) -> FileType {
    match k {
        EntryKind::Regular => FileType::File,
        EntryKind::Directory => FileType::Dir,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Other => FileType::Other,
    }
}

impl PathFs for XfsFs {
    type Ino = Inode;

    fn resolve(&mut self, path: &str) -> Result<Option<Inode>, FsError> {
        match self.0.resolve(Path::new(path.as_bytes())) {
            Ok(ino) => Ok(Some(ino)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e, path)),
        }
    }

    fn stat(&mut self, ino: &Inode, path: &str) -> Result<Metadata, FsError> {
        let md = self.0.metadata(ino).map_err(|e| map_err(e, path))?;
        Ok(bypath::metadata(
            md.is_file(),
            md.is_dir(),
            md.is_symlink(),
            md.size(),
        ))
    }

    fn read_link(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
        self.0
            .read_link(Path::new(path.as_bytes()))
            .map_err(|e| map_err(e, path))
    }

    fn read_at(
        &mut self,
        ino: &Inode,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError> {
        self.0
            .read_file_at(ino, offset, buf)
            .map_err(|e| map_err(e, path))
    }

    fn list(&mut self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let entries = self
            .0
            .read_dir(Path::new(path.as_bytes()))
            .map_err(|e| map_err(e, path))?;
        Ok(entries
            .into_iter()
            .map(|e| DirEntry {
                name: String::from_utf8_lossy(&e.name).into_owned(),
                file_type: kind(e.kind),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_an_xfs() {
        let disk = crate::disk::reader::Disk::from_bytes("junk", vec![0x5a; 1 << 20]);
        let vol = disk
            .volume(0, 1 << 20, crate::disk::reader::Budget::new(1 << 30))
            .expect("volume");
        assert!(matches!(open(vol), Err(FsError::Unsupported(_))));
    }
}
