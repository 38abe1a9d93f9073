//! NTFS volumes through the `ntfs` crate, as a [`Tree`].
//!
//! Nodes are MFT file record numbers. Name lookups go through the directory's `$I30` index with
//! the volume's own `$UpCase` table, so they are case-insensitive as Windows sees them. Only the
//! unnamed `$DATA` stream is read. Reparse points (junctions, symlinks, deduplicated files) are
//! reported as [`FileType::Other`] and not followed: their targets name drive letters and
//! volumes outside this one. It does not read alternate data streams, compressed or encrypted
//! files' plain text, or the journal (`$LogFile`).

use std::cell::RefCell;
use std::io::{BufReader, Read, Seek, SeekFrom};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{Ntfs, NtfsFile};

use super::{DirEntry, FileType, FsError, Metadata, Rooted, Tree};
use crate::disk::reader::Volume;

/// The MFT record number of the root directory.
const ROOT_RECORD: u64 = 5;

/// An opened NTFS filesystem.
pub struct NtfsTree {
    ntfs: Ntfs,
    io: RefCell<BufReader<Volume>>,
}

/// Open an NTFS volume and load its `$UpCase` table.
pub fn open(volume: Volume) -> Result<Rooted<NtfsTree>, FsError> {
    let mut io = BufReader::with_capacity(4096, volume);
    let mut ntfs = Ntfs::new(&mut io).map_err(|e| map_err(e, "/"))?;
    ntfs.read_upcase_table(&mut io)
        .map_err(|e| map_err(e, "$UpCase"))?;
    Ok(Rooted(NtfsTree {
        ntfs,
        io: RefCell::new(io),
    }))
}

fn map_err(e: ntfs::NtfsError, path: &str) -> FsError {
    match e {
        ntfs::NtfsError::Io(e) => FsError::Io(format!("{path}: {e}")),
        other => FsError::Corrupt(format!("{path}: {other}")),
    }
}

impl NtfsTree {
    fn file(&self, record: u64, path: &str) -> Result<NtfsFile<'_>, FsError> {
        let mut io = self.io.borrow_mut();
        self.ntfs
            .file(&mut *io, record)
            .map_err(|e| map_err(e, path))
    }

    fn is_reparse_point(file: &NtfsFile<'_>) -> bool {
        file.info()
            .map(|i| {
                i.file_attributes()
                    .contains(NtfsFileAttributeFlags::REPARSE_POINT)
            })
            .unwrap_or(false)
    }

    /// Length of the unnamed `$DATA` stream (0 when there is none).
    fn data_len(&self, file: &NtfsFile<'_>, path: &str) -> Result<u64, FsError> {
        let mut io = self.io.borrow_mut();
        let Some(item) = file.data(&mut *io, "") else {
            return Ok(0);
        };
        let item = item.map_err(|e| map_err(e, path))?;
        let attr = item.to_attribute().map_err(|e| map_err(e, path))?;
        Ok(attr.value_length())
    }
}

impl Tree for NtfsTree {
    type Node = u64;

    fn root(&self) -> u64 {
        ROOT_RECORD
    }

    fn lookup(&self, dir: &u64, name: &str, path: &str) -> Result<Option<u64>, FsError> {
        let file = self.file(*dir, path)?;
        let mut io = self.io.borrow_mut();
        let index = file
            .directory_index(&mut *io)
            .map_err(|e| map_err(e, path))?;
        let mut finder = index.finder();
        match NtfsFileNameIndex::find(&mut finder, &self.ntfs, &mut *io, name) {
            None => Ok(None),
            Some(entry) => {
                let entry = entry.map_err(|e| map_err(e, path))?;
                Ok(Some(entry.file_reference().file_record_number()))
            }
        }
    }

    fn stat(&self, node: &u64, path: &str) -> Result<Metadata, FsError> {
        let file = self.file(*node, path)?;
        if Self::is_reparse_point(&file) {
            return Ok(Metadata {
                file_type: FileType::Other,
                len: 0,
            });
        }
        if file.is_directory() {
            return Ok(Metadata {
                file_type: FileType::Dir,
                len: 0,
            });
        }
        let len = self.data_len(&file, path)?;
        Ok(Metadata {
            file_type: FileType::File,
            len,
        })
    }

    fn read_link(&self, _node: &u64, path: &str) -> Result<Vec<u8>, FsError> {
        Err(FsError::NotASymlink(path.to_owned()))
    }

    fn read_at(
        &self,
        node: &u64,
        offset: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<usize, FsError> {
        let file = self.file(*node, path)?;
        let mut io = self.io.borrow_mut();
        let Some(item) = file.data(&mut *io, "") else {
            return Ok(0);
        };
        let item = item.map_err(|e| map_err(e, path))?;
        let attr = item.to_attribute().map_err(|e| map_err(e, path))?;
        let value = attr.value(&mut *io).map_err(|e| map_err(e, path))?;
        if offset >= value.len() {
            return Ok(0);
        }
        let mut value = value.attach(&mut *io);
        value
            .seek(SeekFrom::Start(offset))
            .map_err(|e| FsError::Io(format!("{path}: {e}")))?;
        super::fill(buf, |b| {
            value
                .read(b)
                .map_err(|e| FsError::Io(format!("{path}: {e}")))
        })
    }

    fn list(&self, node: &u64, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let file = self.file(*node, path)?;
        let mut io = self.io.borrow_mut();
        let index = file
            .directory_index(&mut *io)
            .map_err(|e| map_err(e, path))?;
        let mut entries = index.entries();
        let mut out = Vec::new();
        while let Some(entry) = entries.next(&mut *io) {
            let entry = entry.map_err(|e| map_err(e, path))?;
            let Some(key) = entry.key() else { continue };
            let key = key.map_err(|e| map_err(e, path))?;
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let name = key.name().to_string_lossy();
            if name == "." {
                continue;
            }
            let reparse = key
                .file_attributes()
                .contains(NtfsFileAttributeFlags::REPARSE_POINT);
            let file_type = if reparse {
                FileType::Other
            } else if key.is_directory() {
                FileType::Dir
            } else {
                FileType::File
            };
            out.push(DirEntry { name, file_type });
        }
        Ok(out)
    }
}
