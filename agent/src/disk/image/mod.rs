//! Virtual machine image formats, decoded read-only: what a disk image *file* holds is found
//! from its content (never its name), and [`open`] gives the virtual disk it describes as
//! positioned reads.
//!
//! - qcow2 v2/v3, compressed clusters included ([`qcow2`], with the `imago` crate); a backing
//!   file is followed only when it is a regular file inside the allowed directory.
//! - VMDK monolithic sparse and streamOptimized ([`stream`], with the `vmdk-core` crate); a text
//!   descriptor naming extent files is refused.
//! - VHD fixed and dynamic ([`vhd`], our own reader); a differencing VHD is refused.
//! - VHDX ([`stream`], with the `vhdx-core` crate, which folds a dirty log into its view in
//!   memory); a differencing VHDX is refused.
//! - The GCE image tarball, `disk.raw` in a gzip-compressed tar ([`tarball`]): gzip cannot be
//!   read at random, so the disk is expanded once into an unlinked, sparse temporary file.
//!
//! Only regular files are decoded: a block device is always raw, whatever its first bytes say
//! (a guest can write a qcow2 header onto its own disk; reading it as one would follow a
//! backing path the guest chose). Every reader's work is bounded by the file's own size, and a
//! panic in a reader becomes an error for that image.
//!
//! Nothing here writes to an image: every file is opened `O_RDONLY`.

mod qcow2;
mod stream;
mod tarball;
mod vhd;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What an image file holds, as found by [`detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The bytes are the disk.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware sparse extent (monolithic sparse or streamOptimized).
    Vmdk,
    /// Virtual PC / Hyper-V VHD (fixed or dynamic).
    Vhd,
    /// Hyper-V VHDX.
    Vhdx,
    /// `disk.raw` in a gzip-compressed tar (the GCE image export format).
    GceTarball,
}

impl Format {
    /// The name used in reports and errors (`qcow2`, `gce-tarball`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::GceTarball => "gce-tarball",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded virtual disk.
pub trait Image: Send + Sync + fmt::Debug {
    /// Fill `buf` from `offset` of the virtual disk; the caller keeps the range inside
    /// [`Opened::size`].
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// An image opened by [`open`].
#[derive(Debug)]
pub struct Opened {
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Its reads.
    pub image: Box<dyn Image>,
}

/// Where an image may find the files it refers to, and where an expanded one goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Backing files must be regular files under this directory (after symbolic links are
    /// resolved); `None`: the image's own directory.
    pub backing_dir: Option<PathBuf>,
    /// Where a compressed image is expanded (an unlinked temporary file).
    pub temp_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backing_dir: None,
            temp_dir: std::env::temp_dir(),
        }
    }
}

/// Signatures, each at the start of the file unless said otherwise.
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8] = b"KDMV";
const VMDK_DESCRIPTOR: &[u8] = b"# Disk DescriptorFile";
const VHDX_MAGIC: &[u8] = b"vhdxfile";
/// At the start of a dynamic VHD (a copy of its footer), at the end of every VHD.
const VHD_COOKIE: &[u8] = b"conectix";
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";

/// What the regular file `file` (of `len` bytes) holds, from its first and last bytes.
///
/// # Errors
///
/// It cannot be read, or it is a format that is recognised but not read (a VMDK text
/// descriptor, whose extents are other files).
pub fn detect(file: &File, len: u64) -> io::Result<Format> {
    let mut head = [0u8; 64];
    let n = read_some(file, 0, &mut head)?;
    let head = head.get(..n).unwrap_or_default();
    let format = if head.starts_with(QCOW2_MAGIC) {
        Format::Qcow2
    } else if head.starts_with(VMDK_SPARSE_MAGIC) {
        Format::Vmdk
    } else if head.starts_with(VMDK_DESCRIPTOR) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a VMDK text descriptor: its data is in other files (extents), which are not \
             followed; give a monolithic sparse or streamOptimized VMDK",
        ));
    } else if head.starts_with(VHDX_MAGIC) {
        Format::Vhdx
    } else if head.starts_with(VHD_COOKIE) {
        Format::Vhd
    } else if head.starts_with(GZIP_MAGIC) {
        Format::GceTarball
    } else if vhd::has_footer(file, len)? {
        Format::Vhd
    } else {
        Format::Raw
    };
    Ok(format)
}

/// The format of what `path` names: a regular file's from [`detect`], raw for anything else
/// (block devices are always raw).
///
/// # Errors
///
/// It cannot be opened or read, or [`detect`] refuses it.
pub fn format_of(path: &Path) -> io::Result<Format> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        detect(&file, meta.len())
    } else {
        Ok(Format::Raw)
    }
}

/// Open the image in `file` (the regular file at `path`, `len` bytes), whose format is
/// `format` and not raw.
///
/// # Errors
///
/// The image is damaged, uses a feature that is not read (a differencing VHD, an external
/// qcow2 data file...), refers to a file outside the allowed directory, or cannot be read.
/// The message names the format.
pub fn open(
    path: &Path,
    file: File,
    len: u64,
    format: Format,
    opts: &Options,
) -> io::Result<Opened> {
    let opened = contained(format.name(), || match format {
        Format::Raw => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a raw disk needs no decoding",
        )),
        Format::Qcow2 => {
            let allowed = opts.backing_dir.as_deref().unwrap_or(dir_of(path));
            qcow2::open(path, file, allowed)
        }
        Format::Vmdk => stream::vmdk(file),
        Format::Vhd => vhd::open(file, len),
        Format::Vhdx => stream::vhdx(file),
        Format::GceTarball => tarball::open(file, &opts.temp_dir),
    });
    opened.map_err(|e| io::Error::new(e.kind(), format!("{format} image: {e}")))
}

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Run `f`, a reader's work on untrusted bytes, with its panic turned into an error.
fn contained<T>(what: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(io::Error::other(format!("the {what} reader failed: {msg}")))
    })
}

/// Read what there is of `buf.len()` bytes at `offset` (less at the end of the file).
fn read_some(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
        let n = file.read_at(buf.get_mut(done..).unwrap_or_default(), at)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// An error for a damaged image, saying what is wrong.
fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        (f, u64::try_from(bytes.len()).expect("len"))
    }

    #[test]
    fn formats_are_told_by_their_signatures() {
        let mut fixed_vhd = vec![0u8; 4096];
        fixed_vhd[4096 - 512..4096 - 504].copy_from_slice(VHD_COOKIE);
        let cases: [(&[u8], Format); 7] = [
            (b"QFI\xfb\0\0\0\x03", Format::Qcow2),
            (b"KDMV\x01\0\0\0", Format::Vmdk),
            (b"vhdxfile", Format::Vhdx),
            (b"conectix", Format::Vhd),
            (b"\x1f\x8b\x08\0", Format::GceTarball),
            (&fixed_vhd, Format::Vhd),
            (&[0u8; 1024], Format::Raw),
        ];
        for (bytes, want) in cases {
            let (f, len) = file_with(bytes);
            assert_eq!(detect(f.as_file(), len).expect("detect"), want);
        }
    }

    #[test]
    fn a_vmdk_descriptor_is_refused_and_a_panic_is_an_error() {
        let (f, len) = file_with(b"# Disk DescriptorFile\nversion=1\n");
        let e = detect(f.as_file(), len).expect_err("descriptor");
        assert!(e.to_string().contains("extents"), "{e}");
        let e = contained("test", || -> io::Result<()> { panic!("boom") }).expect_err("panic");
        assert_eq!(e.to_string(), "the test reader failed: boom");
    }
}
