//! Result sinks: where a scan's result files go once written, with the retries that make an
//! upload survive a flaky network or receiver.
//!
//! - **Local directory** ([`local`], the default): results stay in the scan's output directory,
//!   or, with `local_dir` set, are copied below it atomically (temporary file, fsync, rename).
//! - **QFlow** ([`qflow`]): a multipart POST per file with a bearer token and metadata fields,
//!   streamed from disk; optionally compressed ([`compress`]); above a size threshold, sent in
//!   fixed-size parts that are each retried alone, then completed ([`qflow`] documents the wire
//!   protocol). Retries follow [`crate::retry`].
//!
//! A sink never deletes or changes the file it is given: results stay on local disk whatever
//! the outcome, and an [`Outcome`] says whether the receiver acknowledged them. Secrets (the
//! bearer token) are read once by [`Sink::from_config`] and never logged or put in an error.
//!
//! Not here: deciding which files to send (the scan pipeline), or deleting them after an
//! acknowledgement (the agent's job journal, which owns its spool directory).

pub mod cli;
pub mod compress;
pub mod local;
pub mod qflow;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::retry::RetryConfig;
pub use compress::Compression;

/// Which sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A local directory (the default).
    #[default]
    Local,
    /// A QFlow endpoint.
    Qflow,
}

/// The `[upload]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// `local` (default) or `qflow`. `--upload URL` on the command line means `qflow`.
    pub sink: SinkKind,
    /// Local sink: copy results into a directory per scan below this one. Unset (the default):
    /// results stay where the scan wrote them, and nothing is copied.
    pub local_dir: Option<PathBuf>,
    /// The QFlow sink.
    pub qflow: QflowConfig,
}

impl UploadConfig {
    /// Check what can be checked without the token: a QFlow sink has a URL, and a URL given is
    /// an http(s) URL. ([`Sink::from_config`] checks the rest, reading the token.)
    ///
    /// # Errors
    ///
    /// What is missing or wrong, naming the setting.
    pub fn validate(&self) -> Result<(), UploadError> {
        match (&self.qflow.url, self.sink) {
            (Some(url), _) => parse_endpoint(url).map(drop),
            (None, SinkKind::Qflow) => Err(no_url()),
            (None, SinkKind::Local) => Ok(()),
        }
    }
}

fn no_url() -> UploadError {
    UploadError::Config("[upload] sink = \"qflow\" needs [upload.qflow] url".into())
}

/// A QFlow endpoint: an absolute http or https URL.
///
/// # Errors
///
/// [`UploadError::Config`] naming the URL (credentials redacted).
pub fn parse_endpoint(url: &str) -> Result<reqwest::Url, UploadError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| UploadError::Config(format!("invalid QFlow URL '{url}': {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UploadError::Config(format!(
            "invalid QFlow URL '{url}': not http or https"
        )));
    }
    Ok(parsed)
}

/// The `[upload.qflow]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QflowConfig {
    /// The upload endpoint (`https://qualysapi.qualys.com/qflow/snapshot/v1/upload`). Chunked
    /// uploads use `<url>/chunks` and `<url>/complete`.
    pub url: Option<String>,
    /// A file holding the bearer token (read once at start; surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// The environment variable holding the bearer token, when `token_file` is unset. Default
    /// `QFLOW_TOKEN`.
    pub token_env: String,
    /// Name of the multipart field carrying the file. Default `file`.
    pub file_field: String,
    /// Renames of metadata fields: `{ snapshot_name = "snapshotName" }` sends the
    /// `snapshot_name` value under `snapshotName`. Default: none.
    pub field_names: BTreeMap<String, String>,
    /// `none` (default), `gzip` or `zstd`: compress the file before sending it.
    pub compression: Compression,
    /// Files (after compression) larger than this go in parts. Default 256 MiB.
    pub chunk_threshold_bytes: u64,
    /// Size of a part. Default 16 MiB (a part is held in memory while sent).
    pub chunk_size_bytes: u64,
    /// Longest one request may take, from connecting to the last byte of the answer.
    /// Default 3600.
    pub request_timeout_secs: u64,
    /// Longest a connection may take to open. Default 10.
    pub connect_timeout_secs: u64,
    /// Retries.
    pub retry: RetryConfig,
}

impl Default for QflowConfig {
    fn default() -> Self {
        QflowConfig {
            url: None,
            token_file: None,
            token_env: "QFLOW_TOKEN".into(),
            file_field: "file".into(),
            field_names: BTreeMap::new(),
            compression: Compression::None,
            chunk_threshold_bytes: 256 << 20,
            chunk_size_bytes: 16 << 20,
            request_timeout_secs: 3600,
            connect_timeout_secs: 10,
            retry: RetryConfig::default(),
        }
    }
}

/// Why a sink could not be set up or a file not sent.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The settings are unusable (no URL, no token...).
    #[error("{0}")]
    Config(String),
    /// A local file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The receiver refused the upload; retrying cannot help.
    #[error("{0}")]
    Rejected(String),
    /// Every attempt failed on an error worth retrying.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
}

impl UploadError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UploadError::Config(_) => "config",
            UploadError::Io { .. } => "io",
            UploadError::Rejected(_) => "rejected",
            UploadError::Exhausted { .. } => "exhausted",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        UploadError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The field naming the queued request a result file answers.
pub const REQUEST_ID_FIELD: &str = "request_id";

/// One file to send, with what describes it.
#[derive(Debug, Clone)]
pub struct UploadItem {
    /// The file.
    pub path: PathBuf,
    /// Metadata fields sent with it (`snapshot_name`, `instance_id`, `os_family`...).
    pub fields: BTreeMap<String, String>,
    /// Size of the file.
    pub len: u64,
    /// The same for the same file (name, size, modification time) and fields, so a receiver
    /// can recognise a retried upload; for a queued request's file, the same for the request
    /// and file name ([`REQUEST_ID_FIELD`]). The content is not hashed up front: that would read the
    /// file twice; its SHA-256 is computed while it is sent.
    pub idempotency_key: String,
}

impl UploadItem {
    /// Describe `path` and derive its idempotency key.
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    pub async fn new(path: &Path, fields: BTreeMap<String, String>) -> Result<Self, UploadError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| UploadError::io(format!("cannot read '{}'", path.display()), e))?;
        if !meta.is_file() {
            return Err(UploadError::io(
                format!("cannot upload '{}'", path.display()),
                std::io::Error::other("not a regular file"),
            ));
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut key = Sha256::new();
        if let Some(request) = fields.get(REQUEST_ID_FIELD) {
            // A queued request may be worked again by another instance (after a crash between
            // the upload and the queue's ack): its result file is the same upload.
            key.update(b"request\0");
            key.update(request.as_bytes());
            key.update([0]);
            key.update(file_name(path).as_bytes());
        } else {
            key.update(file_name(path).as_bytes());
            key.update([0]);
            key.update(meta.len().to_le_bytes());
            key.update(mtime.to_le_bytes());
            for (k, v) in &fields {
                key.update([0]);
                key.update(k.as_bytes());
                key.update([0]);
                key.update(v.as_bytes());
            }
        }
        Ok(UploadItem {
            path: path.to_path_buf(),
            fields,
            len: meta.len(),
            idempotency_key: hex::encode(key.finalize()),
        })
    }

    /// The file's name, as sent.
    pub fn file_name(&self) -> String {
        file_name(&self.path)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "result".into())
}

/// What a sink did with one file; goes into `report.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The receiver (or the local directory) has the file.
    pub acknowledged: bool,
    /// Requests made (parts included); 0 for the local sink.
    pub attempts: u32,
    /// Bytes put on the wire (after compression), retries included.
    pub bytes_sent: u64,
    /// The receiver's id for the upload, or the path of the local copy.
    pub receipt: Option<String>,
    /// The receiver already had it (same idempotency key): not stored twice.
    pub duplicate: bool,
    /// Why it was not acknowledged.
    pub error: Option<String>,
    /// `UploadError::kind` of that error.
    pub error_kind: Option<&'static str>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl Outcome {
    /// A failure before anything was sent.
    pub fn failed(error: String) -> Self {
        Outcome {
            error: Some(error),
            ..Outcome::default()
        }
    }
}

/// A configured sink.
#[derive(Debug)]
pub enum Sink {
    /// Local directory (`None`: results stay where they are).
    Local(Option<PathBuf>),
    /// A QFlow endpoint.
    Qflow(Box<qflow::Client>),
}

impl Sink {
    /// Build the sink `cfg` names, or a QFlow sink to `url_override`.
    ///
    /// # Errors
    ///
    /// QFlow without a URL or a token, an unreadable token file, an invalid URL.
    pub fn from_config(
        cfg: &UploadConfig,
        url_override: Option<&str>,
    ) -> Result<Sink, UploadError> {
        let url = match (url_override, cfg.sink) {
            (Some(url), _) => url.to_owned(),
            (None, SinkKind::Local) => return Ok(Sink::Local(cfg.local_dir.clone())),
            (None, SinkKind::Qflow) => cfg.qflow.url.clone().ok_or_else(no_url)?,
        };
        Ok(Sink::Qflow(Box::new(qflow::Client::new(&url, &cfg.qflow)?)))
    }

    /// Short description for logs (no secret).
    pub fn describe(&self) -> String {
        self.destination()
            .unwrap_or_else(|| "the output directory".into())
    }

    /// Where results go (no secret), `None` when nowhere: the local sink without a directory
    /// leaves them where the scan wrote them.
    pub fn destination(&self) -> Option<String> {
        match self {
            Sink::Local(None) => None,
            Sink::Local(Some(dir)) => Some(format!("local directory '{}'", dir.display())),
            Sink::Qflow(c) => Some(format!("QFlow at {}", c.url())),
        }
    }
}

/// Send one file to `sink`. Never panics and never touches the file; the outcome says what
/// happened.
pub async fn upload(sink: &Sink, item: &UploadItem) -> Outcome {
    let started = Instant::now();
    let result = match sink {
        Sink::Local(dir) => local::store(dir.as_deref(), item).await,
        Sink::Qflow(client) => client.upload(item).await,
    };
    let mut outcome = match result {
        Ok(o) => o,
        Err((e, partial)) => {
            tracing::warn!(file = %item.path.display(), "upload failed: {e}");
            Outcome {
                acknowledged: false,
                error: Some(e.to_string()),
                error_kind: Some(e.kind()),
                ..partial
            }
        }
    };
    outcome.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    outcome
}
