//! The GCE image tarball: a gzip-compressed tar whose one disk is `disk.raw` (what
//! `gcloud compute images export` writes and image import reads; GNU sparse entries included).
//!
//! gzip cannot be read at random, and the parsers read at random, so `disk.raw` is expanded once,
//! streaming, into an unlinked temporary file under the temp directory: runs of zeros become
//! holes, so the file costs the disk's data, not its size. The file disappears when the image is
//! closed (or the process ends). The expanded disk is raw whatever its first bytes say: it was a
//! guest's disk, and a guest's disk is never decoded as an image format.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{corrupt, Image, Opened};

/// The member holding the disk.
const DISK: &str = "disk.raw";
/// Bytes expanded at a time; a chunk of zeros is left as a hole.
const CHUNK: usize = 1 << 20;

/// Expand `disk.raw` of the tarball in `file` into a temporary file under `temp_dir`.
pub(super) fn open(file: File, temp_dir: &Path) -> io::Result<Opened> {
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry.map_err(|e| corrupt(format!("not a readable tar: {e}")))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name.trim_start_matches("./") != DISK {
            if names.len() < 8 {
                names.push(name);
            }
            continue;
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_gnu_sparse()) {
            return Err(corrupt(format!(
                "'{DISK}' is not a regular file ({kind:?})"
            )));
        }
        let size = entry.size();
        let out = tempfile::tempfile_in(temp_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create a temporary file in '{}': {e}",
                    temp_dir.display()
                ),
            )
        })?;
        let written = expand(&mut entry, &out).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("expanding '{DISK}' into '{}': {e}", temp_dir.display()),
            )
        })?;
        if written != size {
            return Err(corrupt(format!(
                "'{DISK}' ends after {written} of its {size} bytes"
            )));
        }
        return Ok(Opened {
            size,
            image: Box::new(Expanded(out)),
        });
    }
    Err(corrupt(format!(
        "no '{DISK}' in the tar (it holds {})",
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    )))
}

/// Copy `src` into `out`, leaving zero chunks as holes; the bytes copied.
fn expand(src: &mut impl Read, out: &File) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut writer = out;
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            let n = src
                .read(buf.get_mut(filled..).unwrap_or_default())
                .map_err(|e| corrupt(format!("reading: {e}")))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let chunk = buf.get(..filled).unwrap_or_default();
        if chunk.iter().all(|&b| b == 0) {
            writer.seek(SeekFrom::Current(i64::try_from(filled).unwrap_or(i64::MAX)))?;
        } else {
            writer.write_all(chunk)?;
        }
        total += u64::try_from(filled).unwrap_or(u64::MAX);
    }
    // A trailing hole needs the length set.
    out.set_len(total)?;
    Ok(total)
}

/// The expanded disk.
#[derive(Debug)]
struct Expanded(File);

impl Image for Expanded {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}
