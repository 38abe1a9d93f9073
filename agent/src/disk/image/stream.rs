//! Images read through a crate that decodes them as one `Read + Seek` stream: VMDK sparse
//! extents (`vmdk-core`, monolithic sparse and streamOptimized, opened from our own file so it
//! can follow no other) and VHDX (`vhdx-core`, positioned reads of the regions it needs; a
//! dirty log is folded into its in-memory view, never written back).
//!
//! The stream sits behind a mutex: a read seeks and reads under the lock. A reader that panics
//! poisons the lock, and every later read of that image fails: its state can no longer be
//! trusted.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Mutex;

use super::{contained, Image, Opened};

/// A monolithic sparse or streamOptimized VMDK.
pub(super) fn vmdk(file: File) -> io::Result<Opened> {
    let reader = vmdk::VmdkReader::open(file).map_err(|e| io::Error::other(e.to_string()))?;
    let size = reader.virtual_disk_size();
    Ok(Opened {
        size,
        image: Box::new(Stream::new("vmdk", reader)),
    })
}

/// A VHDX (not differencing).
pub(super) fn vhdx(file: File) -> io::Result<Opened> {
    let reader = vhdx::VhdxReader::open_reader(Box::new(file))
        .map_err(|e| io::Error::other(e.to_string()))?;
    let size = reader.virtual_disk_size();
    Ok(Opened {
        size,
        image: Box::new(Stream::new("vhdx", reader)),
    })
}

/// A seekable decoded stream shared by positioned reads.
struct Stream<R> {
    format: &'static str,
    inner: Mutex<R>,
}

impl<R> Stream<R> {
    fn new(format: &'static str, reader: R) -> Self {
        Stream {
            format,
            inner: Mutex::new(reader),
        }
    }
}

impl<R> std::fmt::Debug for Stream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({})", self.format)
    }
}

impl<R: Read + Seek + Send> Image for Stream<R> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        // The lock is taken inside: a panic unwinds through it and poisons it.
        contained(self.format, || {
            let mut reader = self.inner.lock().map_err(|_| {
                io::Error::other(format!(
                    "the {} reader failed on an earlier read of this image",
                    self.format
                ))
            })?;
            reader.seek(SeekFrom::Start(offset))?;
            reader.read_exact(buf)
        })
    }
}
