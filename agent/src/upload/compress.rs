//! Optional compression of a result file before it is sent: into a temporary sibling file,
//! streamed, so memory stays flat whatever the size, hashing the original on the way (its
//! SHA-256 is what the receiver checks after decompressing). The original is never changed;
//! the compressed copy is removed when its [`Compressed`] guard is dropped.
//!
//! Not here: deciding whether to compress (configuration) or what the receiver does with it
//! (the `content_encoding` field tells it).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::UploadError;

/// A compression of the file part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Sent as is.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The `content_encoding` value sent, `None` when uncompressed.
    pub fn encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }
}

/// A compressed copy of a file; removed on drop.
#[derive(Debug)]
pub struct Compressed {
    path: PathBuf,
    original_sha256: String,
}

impl Compressed {
    /// The compressed file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 (hex) of the original, uncompressed file.
    pub fn original_sha256(&self) -> &str {
        &self.original_sha256
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl Drop for Compressed {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot remove '{}': {e}", self.path.display());
        }
    }
}

/// Compress `src` with `how` into a hidden sibling (`.NAME.gz.part`); `None` for
/// [`Compression::None`]. Runs on a blocking thread.
///
/// # Errors
///
/// The file cannot be read or the copy written.
pub async fn compress(src: &Path, how: Compression) -> Result<Option<Compressed>, UploadError> {
    let ext = match how {
        Compression::None => return Ok(None),
        Compression::Gzip => "gz",
        Compression::Zstd => "zst",
    };
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dst = src.with_file_name(format!(".{name}.{ext}.part"));
    let (s, d) = (src.to_path_buf(), dst.clone());
    let result = tokio::task::spawn_blocking(move || write_compressed(&s, &d, how))
        .await
        .map_err(|e| UploadError::io("compression task failed", std::io::Error::other(e)))?;
    match result {
        Ok(original_sha256) => Ok(Some(Compressed {
            path: dst,
            original_sha256,
        })),
        Err(e) => {
            let _ = std::fs::remove_file(&dst);
            Err(e)
        }
    }
}

/// Compress `src` into `dst`; returns the SHA-256 of `src`.
fn write_compressed(src: &Path, dst: &Path, how: Compression) -> Result<String, UploadError> {
    let input = File::open(src)
        .map_err(|e| UploadError::io(format!("cannot read '{}'", src.display()), e))?;
    let mut input = Hashing {
        inner: BufReader::with_capacity(1 << 16, input),
        hash: Sha256::new(),
    };
    let out = File::create(dst)
        .map_err(|e| UploadError::io(format!("cannot create '{}'", dst.display()), e))?;
    let out = BufWriter::with_capacity(1 << 16, out);
    let werr = |e| UploadError::io(format!("cannot compress into '{}'", dst.display()), e);
    match how {
        Compression::None => {}
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            std::io::copy(&mut input, &mut enc).map_err(werr)?;
            enc.finish().and_then(|mut w| w.flush()).map_err(werr)?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3).map_err(werr)?;
            std::io::copy(&mut input, &mut enc).map_err(werr)?;
            enc.finish().and_then(|mut w| w.flush()).map_err(werr)?;
        }
    }
    Ok(hex::encode(input.hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn round_trips_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("r.json");
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&src, &data).expect("write");
        assert!(compress(&src, Compression::None)
            .await
            .expect("none")
            .is_none());
        for how in [Compression::Gzip, Compression::Zstd] {
            let c = compress(&src, how)
                .await
                .expect("compress")
                .expect("a copy");
            let bytes = std::fs::read(c.path()).expect("read");
            assert!(bytes.len() < data.len(), "{how:?}");
            let mut back = Vec::new();
            match how {
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut back)
                        .expect("gunzip");
                }
                _ => back = zstd::decode_all(&bytes[..]).expect("unzstd"),
            }
            assert_eq!(back, data, "{how:?}");
            assert_eq!(c.original_sha256(), hex::encode(Sha256::digest(&data)));
            let path = c.path().to_path_buf();
            drop(c);
            assert!(!path.exists(), "{how:?}: copy left behind");
        }
        assert_eq!(std::fs::read(&src).expect("original"), data);
    }
}
