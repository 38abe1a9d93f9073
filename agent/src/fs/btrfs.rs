//! Btrfs volumes through the `lambutter` crate, as a [`super::Tree`] (see [`super::bypath`]).
//!
//! `lambutter` reads the superblock (the newest valid copy), the chunk tree (logical to physical
//! mapping; SINGLE, DUP and RAID1 profiles on the one device), the root tree and the fs trees,
//! crossing into nested subvolumes as a mount shows them, with every tree block's CRC32C checked.
//! File data: inline and regular extents, holes and prealloc extents read as zeros, zlib, LZO and
//! zstd compressed extents decoded. It does not read multi-device filesystems or RAID0/10/5/6
//! chunks (refused as unsupported), and it does not replay the log tree (a crash-consistent
//! snapshot is read at its last committed transaction, which is what btrfs guarantees anyway).
//!
//! Which subvolume is the root: the default one, as a plain mount takes it (openSUSE and SLES set
//! it to the current snapshot). When that holds no `/etc` (Fedora's top level holds the `root`
//! and `home` subvolumes), the first top-level directory whose `etc/fstab` mounts `/` from a
//! btrfs `subvol=` (or `subvolid=`) is opened instead, as the guest itself would mount it.

use lambutter::{Btrfs, Error, Inode, Path};

use super::bypath::{self, BlockSource, PathFs, PathTree};
use super::{DirEntry, FileType, FsError, Metadata, RootFs, Rooted};
use crate::disk::reader::Volume;
use crate::mount::fstab;

/// Top-level directories looked at for a root named by `etc/fstab`.
const MAX_ROOT_CANDIDATES: usize = 16;
/// Largest fstab read while looking for the root subvolume.
const MAX_FSTAB_LEN: u64 = 64 * 1024;

/// An opened Btrfs filesystem, rooted at one subvolume.
pub struct BtrfsFs(Btrfs<BlockSource>);

/// The files of one Btrfs volume.
pub type BtrfsRoot = Rooted<PathTree<BtrfsFs>>;

/// Open a Btrfs volume at its root subvolume (see the module docs).
pub fn open(volume: Volume) -> Result<BtrfsRoot, FsError> {
    let default = open_at(&volume, Subvol::Default)?;
    if default.metadata("/etc").map(|m| m.file_type) == Ok(FileType::Dir) {
        return Ok(default);
    }
    match fstab_root(&default)? {
        Some(subvol) => open_at(&volume, subvol),
        None => Ok(default),
    }
}

/// A subvolume to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subvol {
    /// The filesystem's default subvolume.
    Default,
    /// By path from the top level (`subvol=`).
    Path(String),
    /// By id (`subvolid=`).
    Id(u64),
}

fn open_at(volume: &Volume, subvol: Subvol) -> Result<BtrfsRoot, FsError> {
    let source = BlockSource(volume.clone());
    let size = source.size();
    let fs = match &subvol {
        Subvol::Default => Btrfs::open(source, size),
        Subvol::Id(id) => Btrfs::open_subvol_id(source, size, *id),
        Subvol::Path(p) => {
            let path = format!("/{}", p.trim_start_matches('/'));
            let path = Path::new(path.as_bytes())
                .ok_or_else(|| FsError::Corrupt(format!("subvolume path '{p}'")))?;
            Btrfs::open_subvol_path(source, size, path)
        }
    }
    .map_err(|e| map_err(e, "/"))?;
    Ok(Rooted(PathTree::new(BtrfsFs(fs))?))
}

/// The root subvolume that a top-level directory's `etc/fstab` names, if any; `top` is the
/// filesystem seen at its default subvolume (natively, or through a kernel mount of it).
pub fn fstab_root(top: &dyn RootFs) -> Result<Option<Subvol>, FsError> {
    let entries = match top.read_dir("/") {
        Ok(e) => e,
        Err(e) if e.is_device_error() => return Err(e),
        Err(_) => return Ok(None),
    };
    for dir in entries
        .iter()
        .filter(|e| e.file_type == FileType::Dir)
        .take(MAX_ROOT_CANDIDATES)
    {
        let path = format!("/{}/etc/fstab", dir.name);
        let text = match top.read_file(&path, MAX_FSTAB_LEN) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) if e.is_device_error() => return Err(e),
            Err(_) => continue,
        };
        if let Some(subvol) = root_subvol(&text) {
            return Ok(Some(subvol));
        }
    }
    Ok(None)
}

/// The subvolume an fstab mounts at `/` from btrfs.
fn root_subvol(fstab_text: &str) -> Option<Subvol> {
    let entries = fstab::parse(fstab_text);
    let root = entries
        .iter()
        .rev()
        .find(|e| e.mount_point == "/" && e.fs_type == "btrfs")?;
    if let Some(p) = root.option_value("subvol") {
        return Some(Subvol::Path(p.to_owned()));
    }
    root.option_value("subvolid")?.parse().ok().map(Subvol::Id)
}

fn map_err(e: Error, path: &str) -> FsError {
    match e {
        Error::NotFound => FsError::NotFound(path.to_owned()),
        Error::NotARegularFile => FsError::IsADirectory(path.to_owned()),
        Error::NotASymlink => FsError::NotASymlink(path.to_owned()),
        Error::Io { token, offset } => FsError::Io(format!("{path}: {token} at {offset:#x}")),
        Error::UnsupportedFeature(f)
        | Error::UnsupportedProfile(f)
        | Error::UnsupportedChecksum(f) => FsError::Unsupported(f.to_owned()),
        Error::BadSuperblock(why) => FsError::Unsupported(format!("superblock: {why:?}")),
        other => FsError::Corrupt(format!("{path}: {other:?}")),
    }
}

impl PathFs for BtrfsFs {
    type Ino = Inode;

    fn resolve(&mut self, path: &str) -> Result<Option<Inode>, FsError> {
        let p = Path::new(path.as_bytes()).ok_or_else(|| FsError::NotFound(path.to_owned()))?;
        match self.0.resolve(p) {
            Ok(ino) => Ok(Some(ino)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(map_err(e, path)),
        }
    }

    fn stat(&mut self, ino: &Inode, path: &str) -> Result<Metadata, FsError> {
        let md = self.0.metadata(ino).map_err(|e| map_err(e, path))?;
        Ok(bypath::metadata(
            md.is_file(),
            md.is_dir(),
            md.is_symlink(),
            md.size,
        ))
    }

    fn read_link(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
        let p = Path::new(path.as_bytes()).ok_or_else(|| FsError::NotFound(path.to_owned()))?;
        self.0.read_link(p).map_err(|e| map_err(e, path))
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
        let p = Path::new(path.as_bytes()).ok_or_else(|| FsError::NotFound(path.to_owned()))?;
        let entries = self.0.read_dir(p).map_err(|e| map_err(e, path))?;
        Ok(entries
            .into_iter()
            .map(|e| DirEntry {
                name: String::from_utf8_lossy(&e.name).into_owned(),
                // BTRFS_FT_*: 1 regular file, 2 directory (also a subvolume), 7 symlink.
                file_type: match e.kind_byte {
                    1 => FileType::File,
                    2 => FileType::Dir,
                    7 => FileType::Symlink,
                    _ => FileType::Other,
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_subvolume_from_fstab() {
        let cases = [
            (
                "UUID=1 / btrfs subvol=root,compress=zstd:1 0 0\nUUID=1 /home btrfs subvol=home 0 0\n",
                Some(Subvol::Path("root".into())),
            ),
            (
                "UUID=1 / btrfs defaults,subvolid=256 0 0\n",
                Some(Subvol::Id(256)),
            ),
            ("UUID=1 / btrfs defaults 0 0\n", None),
            ("UUID=1 / ext4 subvol=root 0 0\n", None),
            ("UUID=1 /home btrfs subvol=home 0 0\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(root_subvol(text), want, "{text}");
        }
    }

    #[test]
    fn garbage_is_not_a_btrfs() {
        let disk = crate::disk::reader::Disk::from_bytes("junk", vec![0x5a; 1 << 20]);
        let vol = disk
            .volume(0, 1 << 20, crate::disk::reader::Budget::new(1 << 30))
            .expect("volume");
        assert!(matches!(open(vol), Err(FsError::Unsupported(_))));
    }
}
