//! Optional compression of a result file before it is sent: into a temporary sibling file,
//! streamed, so memory stays flat whatever the size. The original is never changed; the
//! compressed copy is removed when its [`Compressed`] guard is dropped.
//!
//! Not here: deciding whether to compress (configuration) or what the receiver does with it
//! (the `content_encoding` field tells it).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
}

impl Compressed {
    /// The compressed file.
    pub fn path(&self) -> &Path {
        &self.path
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
    let guard = Compressed { path: dst };
    result.map(|()| Some(guard))
}

fn write_compressed(src: &Path, dst: &Path, how: Compression) -> Result<(), UploadError> {
    let input = File::open(src)
        .map_err(|e| UploadError::io(format!("cannot read '{}'", src.display()), e))?;
    let mut input = BufReader::with_capacity(1 << 16, input);
    let out = File::create(dst)
        .map_err(|e| UploadError::io(format!("cannot create '{}'", dst.display()), e))?;
    let out = BufWriter::with_capacity(1 << 16, out);
    let werr = |e| UploadError::io(format!("cannot compress into '{}'", dst.display()), e);
    match how {
        Compression::None => Ok(()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            std::io::copy(&mut input, &mut enc).map_err(werr)?;
            enc.finish().and_then(|mut w| w.flush()).map_err(werr)
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3).map_err(werr)?;
            std::io::copy(&mut input, &mut enc).map_err(werr)?;
            enc.finish().and_then(|mut w| w.flush()).map_err(werr)
        }
    }
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
            let path = c.path().to_path_buf();
            drop(c);
            assert!(!path.exists(), "{how:?}: copy left behind");
        }
        assert_eq!(std::fs::read(&src).expect("original"), data);
    }
}
