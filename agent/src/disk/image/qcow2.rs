//! qcow2 v2/v3 through the `imago` crate (synchronous build), read-only.
//!
//! The image is opened from our own read-only file, with imago's implicit opens denied: imago
//! follows nothing by itself. A backing file named in the header is resolved here (relative to
//! the image's directory, as QEMU does), must be a regular file inside the allowed directory
//! once symbolic links are resolved, and is opened as the header's backing format says (raw or
//! qcow2; probed when the header says nothing), to a depth of [`MAX_CHAIN`], and never to a file
//! already in the chain. An external data file is refused. Before imago sees a file, its L1
//! table is checked here: it must lie inside the file, be big enough to map the virtual size,
//! and every L2 table it names must lie inside the file (imago, like QEMU, would read such a
//! table past the end of the file as zeros, and the disk would silently read as empty there). What imago refuses (a dirty or corrupt image, unknown incompatible
//! features) is an error naming the image.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder};

use super::{corrupt, Format, Image, Opened};
use crate::bytes::{be32, be64};

/// Longest chain of backing files followed (QEMU allows 16).
const MAX_CHAIN: usize = 16;

/// Open the qcow2 image in `file` (at `path`) and its backing chain inside `allowed`.
pub(super) fn open(path: &Path, file: File, allowed: &Path) -> io::Result<Opened> {
    let allowed = allowed.canonicalize().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("backing directory '{}': {e}", allowed.display()),
        )
    })?;
    let mut chain = Vec::new();
    let access = open_chain(path, file, &allowed, &mut chain)?;
    Ok(Opened {
        size: access.size(),
        image: Box::new(Qcow2Image(access)),
    })
}

/// The image in `file` with its backing chain; `chain` holds the files above it (canonical).
fn open_chain(
    path: &Path,
    file: File,
    allowed: &Path,
    chain: &mut Vec<PathBuf>,
) -> io::Result<FormatAccess<ImagoFile>> {
    check_tables(&file)?;
    chain.push(path.canonicalize()?);
    let storage = ImagoFile::try_from(file)?;
    let mut qcow2 = Qcow2::<ImagoFile>::builder(storage)
        .write(false)
        .backing(None)
        .data_file(None)
        .open(DenyImplicitOpenGate::default())?;
    if qcow2.requires_external_data_file() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "its data is in an external data file, which is not followed",
        ));
    }
    if let Some(name) = qcow2.implicit_backing_file().cloned() {
        if chain.len() >= MAX_CHAIN {
            return Err(corrupt(format!("more than {MAX_CHAIN} backing files")));
        }
        let declared = qcow2.implicit_backing_format().cloned();
        let backing_path = backing_path(path, &name, allowed)?;
        if chain.contains(&backing_path) {
            return Err(corrupt(format!(
                "backing file '{}' is already in the chain above it (a loop)",
                backing_path.display()
            )));
        }
        let backing =
            open_backing(&backing_path, declared.as_deref(), allowed, chain).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("backing file '{}': {e}", backing_path.display()),
                )
            })?;
        qcow2.set_backing(Some(backing));
    }
    Ok(FormatAccess::new(qcow2))
}

/// Check the L1 table of the qcow2 image in `file` against the file and the virtual size (see
/// the module docs).
fn check_tables(file: &File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut h = [0u8; 48];
    file.read_exact_at(&mut h, 0)
        .map_err(|_| corrupt(format!("a qcow2 header needs 48 bytes, the file has {len}")))?;
    let field32 = |at| be32(&h, at).unwrap_or_default();
    let field64 = |at| be64(&h, at).unwrap_or_default();
    let cluster_bits = field32(20);
    let size = field64(24);
    let l1_entries = u64::from(field32(36));
    let l1_offset = field64(40);
    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(format!(
            "cluster size 2^{cluster_bits} is not from 512 B to 2 MiB"
        )));
    }
    let cluster = 1u64 << cluster_bits;
    // One L2 table maps cluster / 8 clusters.
    let per_l1 = cluster * (cluster / 8);
    let needed = size.div_ceil(per_l1);
    if needed > l1_entries {
        return Err(corrupt(format!(
            "its L1 table of {l1_entries} entries cannot map the {size}-byte disk it claims (that needs {needed})"
        )));
    }
    let table = needed * 8;
    if l1_offset.checked_add(table).is_none_or(|end| end > len) {
        return Err(corrupt(format!(
            "its L1 table ({table} bytes at {l1_offset:#x}) is outside the {len}-byte file"
        )));
    }
    let mut l1 = vec![0u8; usize::try_from(table).map_err(|_| corrupt("L1 table too large"))?];
    file.read_exact_at(&mut l1, l1_offset)?;
    for (i, e) in l1.chunks_exact(8).enumerate() {
        let l2 = be64(e, 0).unwrap_or_default() & 0x00ff_ffff_ffff_fe00;
        if l2 != 0 && l2.checked_add(cluster).is_none_or(|end| end > len) {
            return Err(corrupt(format!(
                "L1 entry {i} puts an L2 table at {l2:#x}, outside the {len}-byte file"
            )));
        }
    }
    Ok(())
}

/// Where backing file `name` of the image at `path` is, if that is a regular file inside
/// `allowed` (canonical).
fn backing_path(path: &Path, name: &str, allowed: &Path) -> io::Result<PathBuf> {
    let named = super::dir_of(path).join(name);
    let refused = |why: &str| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "backing file '{name}' {why}; backing files are read only from '{}'",
                allowed.display()
            ),
        )
    };
    let real = named
        .canonicalize()
        .map_err(|e| refused(&format!("cannot be found ({e})")))?;
    if !real.starts_with(allowed) {
        return Err(refused(&format!("is '{}', outside", real.display())));
    }
    if !std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
        return Err(refused("is not a regular file"));
    }
    Ok(real)
}

/// Open a backing file as `declared` says (`raw`, `qcow2`), or as its content says.
fn open_backing(
    path: &Path,
    declared: Option<&str>,
    allowed: &Path,
    chain: &mut Vec<PathBuf>,
) -> io::Result<FormatAccess<ImagoFile>> {
    let file = File::open(path)?;
    let format = match declared {
        Some("qcow2") => Format::Qcow2,
        Some("raw") => Format::Raw,
        Some(other) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("backing format '{other}' is not read"),
            ))
        }
        None => super::detect(&file, file.metadata()?.len())?,
    };
    match format {
        Format::Qcow2 => open_chain(path, file, allowed, chain),
        Format::Raw => {
            let raw = Raw::builder(ImagoFile::try_from(file)?)
                .write(false)
                .open(DenyImplicitOpenGate::default())?;
            Ok(FormatAccess::new(raw))
        }
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("a {other} backing file is not read"),
        )),
    }
}

/// Reads of an opened chain.
struct Qcow2Image(FormatAccess<ImagoFile>);

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Qcow2Image({} bytes)", self.0.size())
    }
}

impl Image for Qcow2Image {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        super::contained("qcow2", || self.0.read(&mut *buf, offset))
    }
}
