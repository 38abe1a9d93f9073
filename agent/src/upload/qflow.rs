//! The QFlow sink: HTTP uploads with a bearer token, streamed from disk, retried.
//!
//! Wire protocol (QFlow's own is not public; this follows the design notes' `curl -F` example
//! and is what `tests/src/qflow.rs` receives):
//!
//! - **Single upload** — `POST <url>`, `multipart/form-data`, headers `Authorization: Bearer
//!   <token>` and `Idempotency-Key: <key>`. Text fields: the item's metadata (`snapshot_name`,
//!   `instance_id`, `os_family`..., renamed by `field_names`), `sha256` (hex, of the original
//!   file) and, when compressed, `content_encoding` (`gzip` | `zstd`); then the file part
//!   (`file` by default, with its file name), streamed from disk with a known length.
//! - **Chunked upload** — files larger than `chunk_threshold_bytes` (after compression): each
//!   `chunk_size_bytes` part is `POST <url>/chunks` with the raw bytes and headers
//!   `X-Upload-Id` (the idempotency key), `X-Part-Index` (from 0), `X-Part-Count` and
//!   `X-Part-Sha256`; each part is retried on its own. Then `POST <url>/complete`, multipart
//!   with the same text fields plus `upload_id`, `part_count`, `filename` and `sha256`, and the
//!   `Idempotency-Key` header.
//! - **Answer** — any `2xx` acknowledges; a JSON body `{"id": ..., "duplicate": bool}` gives the
//!   receipt and says whether the receiver already had this key.
//!
//! Memory stays flat: the file part is a stream of 256 KiB reads, a chunk is one buffer of
//! `chunk_size_bytes`. The token lives only in this client and its `Debug` hides it.
//!
//! Not here: the retry policy itself ([`crate::retry`]), compression ([`super::compress`]).

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{stream, StreamExt};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use reqwest::multipart::Form;
use reqwest::{Body, Method, RequestBuilder};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::compress;
use super::{Outcome, QflowConfig, UploadError, UploadItem};
use crate::retry::{status_verdict, Verdict};

/// Read size of the streamed file part.
const STREAM_CHUNK: usize = 256 << 10;
/// Most of an answer's body kept (for the receipt or an error message).
const MAX_ANSWER: usize = 64 << 10;

/// A QFlow endpoint with its token and settings.
pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: HeaderValue,
    cfg: QflowConfig,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url.as_str())
            .field("auth", &"Bearer ***")
            .finish()
    }
}

/// The answer to an accepted request.
#[derive(Debug, Default, serde::Deserialize)]
struct Ack {
    id: Option<serde_json::Value>,
    #[serde(default)]
    duplicate: bool,
}

impl Client {
    /// A client for `url`, with the token from `cfg.token_file` or `$cfg.token_env`.
    ///
    /// # Errors
    ///
    /// An invalid URL, no token, an unreadable token file.
    pub fn new(url: &str, cfg: &QflowConfig) -> Result<Client, UploadError> {
        let url = super::parse_endpoint(url)?;
        let token = read_token(cfg)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            UploadError::Config("the QFlow token holds characters a header cannot".into())
        })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs.max(1)))
            .timeout(Duration::from_secs(cfg.request_timeout_secs.max(1)))
            .user_agent(concat!("snapscan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UploadError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            url,
            auth,
            cfg: cfg.clone(),
        })
    }

    /// The upload URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    fn sub_url(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.url.as_str().trim_end_matches('/'))
    }

    /// Send one file. On failure, the error and what was done until then.
    pub async fn upload(&self, item: &UploadItem) -> Result<Outcome, (UploadError, Outcome)> {
        let mut outcome = Outcome::default();
        let compressed = compress::compress(&item.path, self.cfg.compression)
            .await
            .map_err(|e| (e, Outcome::default()))?;
        let body_path = compressed
            .as_ref()
            .map_or(item.path.as_path(), |c| c.path());
        let body_len = match tokio::fs::metadata(body_path).await {
            Ok(m) => m.len(),
            Err(e) => {
                let ctx = format!("cannot read '{}'", body_path.display());
                return Err((UploadError::io(ctx, e), outcome));
            }
        };
        let known_sha = compressed.as_ref().map(|c| c.original_sha256().to_owned());
        let result = if body_len > self.cfg.chunk_threshold_bytes {
            self.chunked(item, body_path, body_len, known_sha, &mut outcome)
                .await
        } else {
            self.single(item, body_path, body_len, known_sha, &mut outcome)
                .await
        };
        match result {
            Ok(answer) => {
                let ack: Ack = serde_json::from_str(&answer).unwrap_or_default();
                outcome.acknowledged = true;
                outcome.duplicate = ack.duplicate;
                outcome.receipt = ack.id.map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                });
                Ok(outcome)
            }
            Err(e) => Err((e, outcome)),
        }
    }

    /// The metadata text fields of `item` (renamed as configured) and the content encoding.
    fn text_fields(&self, item: &UploadItem) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = item
            .fields
            .iter()
            .map(|(k, v)| (self.cfg.field_names.get(k).unwrap_or(k).clone(), v.clone()))
            .collect();
        if let Some(enc) = self.cfg.compression.encoding() {
            fields.push(("content_encoding".into(), enc.into()));
        }
        fields
    }

    async fn single(
        &self,
        item: &UploadItem,
        body_path: &Path,
        body_len: u64,
        known_sha: Option<String>,
        outcome: &mut Outcome,
    ) -> Result<String, UploadError> {
        let what = format!("upload of '{}'", item.path.display());
        let fields = self.text_fields(item);
        self.send(&what, body_len, outcome, || async {
            let file = tokio::fs::File::open(body_path).await.map_err(|e| {
                UploadError::io(format!("cannot read '{}'", body_path.display()), e)
            })?;
            let body = MultipartBody::new(
                &fields,
                &self.cfg.file_field,
                &item.file_name(),
                file,
                body_len,
                known_sha.clone(),
            );
            Ok(self
                .request(Method::POST, self.url.as_str())
                .header("Idempotency-Key", &item.idempotency_key)
                .header(CONTENT_TYPE, body.content_type())
                .header(CONTENT_LENGTH, body.len())
                .body(body.into_body()))
        })
        .await
    }

    async fn chunked(
        &self,
        item: &UploadItem,
        body_path: &Path,
        body_len: u64,
        known_sha: Option<String>,
        outcome: &mut Outcome,
    ) -> Result<String, UploadError> {
        let size = self.cfg.chunk_size_bytes.max(1);
        let mut whole = Sha256::new();
        let count = body_len.div_ceil(size);
        let chunk_url = self.sub_url("chunks");
        let mut file = tokio::fs::File::open(body_path)
            .await
            .map_err(|e| UploadError::io(format!("cannot read '{}'", body_path.display()), e))?;
        for index in 0..count {
            let start = index.saturating_mul(size);
            let len = size.min(body_len.saturating_sub(start));
            // A fresh buffer per part, handed to the request without a copy: one part in memory.
            let mut buf = bytes::BytesMut::zeroed(usize::try_from(len).unwrap_or(usize::MAX));
            let read = async {
                file.seek(std::io::SeekFrom::Start(start)).await?;
                file.read_exact(&mut buf).await
            };
            read.await.map_err(|e| {
                UploadError::io(format!("cannot read '{}'", body_path.display()), e)
            })?;
            whole.update(&buf);
            let part_sha = hex::encode(Sha256::digest(&buf));
            let bytes = buf.freeze();
            let what = format!(
                "part {}/{count} of '{}'",
                index.saturating_add(1),
                item.path.display()
            );
            self.send(&what, len, outcome, || {
                let body = bytes.clone();
                crate::progress::sent(body.len());
                let (url, part_sha) = (&chunk_url, &part_sha);
                async move {
                    Ok(self
                        .request(Method::POST, url)
                        .header("Content-Type", "application/octet-stream")
                        .header("X-Upload-Id", &item.idempotency_key)
                        .header("X-Part-Index", index.to_string())
                        .header("X-Part-Count", count.to_string())
                        .header("X-Part-Sha256", part_sha.as_str())
                        .body(body))
                }
            })
            .await?;
        }
        let sha = known_sha.unwrap_or_else(|| hex::encode(whole.finalize()));
        let complete_url = self.sub_url("complete");
        let what = format!("completion of '{}'", item.path.display());
        let fields = self.text_fields(item);
        self.send(&what, 0, outcome, || async {
            let mut form = Form::new();
            for (k, v) in &fields {
                form = form.text(k.clone(), v.clone());
            }
            let form = form
                .text("sha256", sha.clone())
                .text("upload_id", item.idempotency_key.clone())
                .text("part_count", count.to_string())
                .text("filename", item.file_name());
            Ok(self
                .request(Method::POST, &complete_url)
                .header("Idempotency-Key", &item.idempotency_key)
                .multipart(form))
        })
        .await
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// Send the request `build` makes (afresh for every attempt) until it is accepted, refused,
    /// or attempts run out. Returns the accepted answer's body.
    async fn send<F, Fut>(
        &self,
        what: &str,
        body_len: u64,
        outcome: &mut Outcome,
        mut build: F,
    ) -> Result<String, UploadError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<RequestBuilder, UploadError>>,
    {
        let policy = &self.cfg.retry;
        let attempts = policy.attempts();
        let mut last = String::new();
        for attempt in 1..=attempts {
            let request = build().await?;
            outcome.attempts = outcome.attempts.saturating_add(1);
            outcome.bytes_sent = outcome.bytes_sent.saturating_add(body_len);
            tracing::info!(attempt, attempts, "{what}: sending");
            let retry_after = match request.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = read_answer(resp).await;
                    if status.is_success() {
                        tracing::info!(attempt, "{what}: accepted ({status})");
                        return Ok(body);
                    }
                    let detail =
                        format!("{what}: the receiver answered {status}{}", snippet(&body));
                    match status_verdict(status.as_u16(), retry_after.as_deref(), SystemTime::now())
                    {
                        Verdict::Fatal => return Err(UploadError::Rejected(detail)),
                        Verdict::Retry(ra) => {
                            last = detail;
                            ra
                        }
                    }
                }
                Err(e) if e.is_builder() => {
                    return Err(UploadError::Config(format!("{what}: {e}")));
                }
                Err(e) => {
                    last = format!("{what}: {}", crate::error_chain(&e));
                    None
                }
            };
            if attempt < attempts {
                let delay = policy.delay(attempt, retry_after);
                tracing::warn!(attempt, ?delay, "{last}; retrying");
                tokio::time::sleep(delay).await;
            }
        }
        Err(UploadError::Exhausted { attempts, last })
    }
}

/// A `multipart/form-data` body: text fields, the file streamed from disk, then a `sha256`
/// field with the hash of the file computed on the way (or known beforehand, for a compressed
/// file whose original was hashed while compressing). Its length is known up front.
struct MultipartBody {
    boundary: String,
    head: Bytes,
    file: tokio::fs::File,
    file_len: u64,
    known_sha: Option<String>,
}

impl MultipartBody {
    fn new(
        fields: &[(String, String)],
        file_field: &str,
        file_name: &str,
        file: tokio::fs::File,
        file_len: u64,
        known_sha: Option<String>,
    ) -> Self {
        let boundary = format!("snapscan-{}", uuid::Uuid::new_v4().simple());
        let mut head = String::new();
        for (name, value) in fields {
            head.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                quote(name)
            ));
        }
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            quote(file_field),
            quote(file_name)
        ));
        MultipartBody {
            boundary,
            head: Bytes::from(head),
            file,
            file_len,
            known_sha,
        }
    }

    fn tail(boundary: &str, sha: &str) -> String {
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\n{sha}\r\n--{boundary}--\r\n"
        )
    }

    fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// Total length: the hex SHA-256 has a fixed length, so the tail's is known too.
    fn len(&self) -> u64 {
        let tail = Self::tail(&self.boundary, &"0".repeat(64)).len();
        u64::try_from(self.head.len().saturating_add(tail))
            .unwrap_or(u64::MAX)
            .saturating_add(self.file_len)
    }

    fn into_body(self) -> Body {
        let hash = Arc::new(Mutex::new(Sha256::new()));
        let feed = Arc::clone(&hash);
        let hashing = self.known_sha.is_none();
        let file = ReaderStream::with_capacity(self.file, STREAM_CHUNK).map(move |chunk| {
            if let Ok(bytes) = &chunk {
                crate::progress::sent(bytes.len());
                if hashing {
                    if let Ok(mut h) = feed.lock() {
                        h.update(bytes);
                    }
                }
            }
            chunk
        });
        let (boundary, known) = (self.boundary, self.known_sha);
        let tail = stream::once(async move {
            let sha = match known {
                Some(sha) => sha,
                None => {
                    let h = hash
                        .lock()
                        .map(|mut h| std::mem::take(&mut *h))
                        .map_err(|_| std::io::Error::other("hash state poisoned"))?;
                    hex::encode(h.finalize())
                }
            };
            Ok::<Bytes, std::io::Error>(Bytes::from(Self::tail(&boundary, &sha)))
        });
        let head = stream::once(std::future::ready(Ok::<Bytes, std::io::Error>(self.head)));
        Body::wrap_stream(head.chain(file).chain(tail))
    }
}

/// A multipart parameter value: quotes and backslashes escaped, line breaks dropped.
fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// Read at most [`MAX_ANSWER`] bytes of an answer, lossily as text.
async fn read_answer(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ANSWER.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= MAX_ANSWER {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `: <first line of the body>` for an error message, or nothing.
fn snippet(body: &str) -> String {
    let line: String = body
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

/// The bearer token from the configured file, else the configured environment variable.
fn read_token(cfg: &QflowConfig) -> Result<String, UploadError> {
    let token = match &cfg.token_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            UploadError::io(
                format!("cannot read the token file '{}'", path.display()),
                e,
            )
        })?,
        None => std::env::var(&cfg.token_env).map_err(|_| {
            UploadError::Config(format!(
                "no QFlow token: set [upload.qflow] token_file or the environment variable {}",
                cfg.token_env
            ))
        })?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(UploadError::Config("the QFlow token is empty".into()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_setup_errors_hide_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "s3cret-value\n").expect("write");
        let with_file = QflowConfig {
            token_file: Some(token_file.clone()),
            ..QflowConfig::default()
        };
        struct Case {
            name: &'static str,
            url: &'static str,
            cfg: QflowConfig,
            want: Result<(), &'static str>,
        }
        let cases = [
            Case {
                name: "ok",
                url: "http://127.0.0.1:9/up",
                cfg: with_file.clone(),
                want: Ok(()),
            },
            Case {
                name: "bad url",
                url: "not a url",
                cfg: with_file.clone(),
                want: Err("invalid QFlow URL"),
            },
            Case {
                name: "ftp",
                url: "ftp://x/y",
                cfg: with_file.clone(),
                want: Err("not http"),
            },
            Case {
                name: "missing token file",
                url: "http://127.0.0.1:9/up",
                cfg: QflowConfig {
                    token_file: Some(dir.path().join("absent")),
                    ..QflowConfig::default()
                },
                want: Err("cannot read the token file"),
            },
            Case {
                name: "no env token",
                url: "http://127.0.0.1:9/up",
                cfg: QflowConfig {
                    token_env: "SNAPSCAN_TEST_SURELY_UNSET_TOKEN".into(),
                    ..QflowConfig::default()
                },
                want: Err("SNAPSCAN_TEST_SURELY_UNSET_TOKEN"),
            },
        ];
        for c in cases {
            match (Client::new(c.url, &c.cfg), c.want) {
                (Ok(client), Ok(())) => {
                    let dbg = format!("{client:?}");
                    assert!(!dbg.contains("s3cret"), "case {}: {dbg}", c.name);
                }
                (Err(e), Err(sub)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(sub), "case {}: {msg}", c.name);
                    assert!(!msg.contains("s3cret"), "case {}: {msg}", c.name);
                }
                (got, want) => panic!("case {}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn snippets_are_short_and_clean() {
        assert_eq!(snippet(""), "");
        assert_eq!(snippet("bad token\nmore"), ": bad token");
        assert_eq!(snippet(&"x".repeat(500)).len(), 202);
        assert_eq!(snippet("a\u{7}b"), ": ab");
    }
}
