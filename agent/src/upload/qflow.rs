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
//!   with the same text fields plus `upload_id`, `part_count` and `filename`, and the
//!   `Idempotency-Key` header.
//! - **Answer** — any `2xx` acknowledges; a JSON body `{"id": ..., "duplicate": bool}` gives the
//!   receipt and says whether the receiver already had this key.
//!
//! Memory stays flat: the file part is a stream of 256 KiB reads, a chunk is one buffer of
//! `chunk_size_bytes`. The token lives only in this client and its `Debug` hides it.
//!
//! Not here: the retry policy itself ([`super::retry`]), compression ([`super::compress`]).

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Method, RequestBuilder};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::compress;
use super::retry::{status_verdict, Verdict};
use super::{Outcome, QflowConfig, UploadError, UploadItem};

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
        let url = reqwest::Url::parse(url)
            .map_err(|e| UploadError::Config(format!("invalid QFlow URL '{url}': {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UploadError::Config(format!(
                "invalid QFlow URL '{url}': not http or https"
            )));
        }
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
        let result = if body_len > self.cfg.chunk_threshold_bytes {
            self.chunked(item, body_path, body_len, &mut outcome).await
        } else {
            self.single(item, body_path, body_len, &mut outcome).await
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

    /// The metadata text fields of `item`, renamed as configured.
    fn text_fields(&self, item: &UploadItem, form: Form) -> Form {
        let mut form = form;
        for (k, v) in &item.fields {
            let name = self.cfg.field_names.get(k).unwrap_or(k).clone();
            form = form.text(name, v.clone());
        }
        form = form.text("sha256", item.sha256.clone());
        if let Some(enc) = self.cfg.compression.encoding() {
            form = form.text("content_encoding", enc);
        }
        form
    }

    async fn single(
        &self,
        item: &UploadItem,
        body_path: &Path,
        body_len: u64,
        outcome: &mut Outcome,
    ) -> Result<String, UploadError> {
        let what = format!("upload of '{}'", item.path.display());
        self.send(&what, body_len, outcome, || async {
            let file = tokio::fs::File::open(body_path).await.map_err(|e| {
                UploadError::io(format!("cannot read '{}'", body_path.display()), e)
            })?;
            let stream = ReaderStream::with_capacity(file, STREAM_CHUNK);
            let part = Part::stream_with_length(Body::wrap_stream(stream), body_len)
                .file_name(item.file_name())
                .mime_str("application/octet-stream")
                .map_err(|e| UploadError::Config(format!("bad MIME type: {e}")))?;
            let form = self
                .text_fields(item, Form::new())
                .part(self.cfg.file_field.clone(), part);
            Ok(self
                .request(Method::POST, self.url.as_str())
                .header("Idempotency-Key", &item.idempotency_key)
                .multipart(form))
        })
        .await
    }

    async fn chunked(
        &self,
        item: &UploadItem,
        body_path: &Path,
        body_len: u64,
        outcome: &mut Outcome,
    ) -> Result<String, UploadError> {
        let size = self.cfg.chunk_size_bytes.max(1);
        let count = body_len.div_ceil(size);
        let chunk_url = self.sub_url("chunks");
        let mut file = tokio::fs::File::open(body_path)
            .await
            .map_err(|e| UploadError::io(format!("cannot read '{}'", body_path.display()), e))?;
        let mut buf = Vec::new();
        for index in 0..count {
            let start = index.saturating_mul(size);
            let len = size.min(body_len.saturating_sub(start));
            buf.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
            let read = async {
                file.seek(std::io::SeekFrom::Start(start)).await?;
                file.read_exact(&mut buf).await
            };
            read.await.map_err(|e| {
                UploadError::io(format!("cannot read '{}'", body_path.display()), e)
            })?;
            let part_sha = hex::encode(Sha256::digest(&buf));
            let bytes = bytes::Bytes::copy_from_slice(&buf);
            let what = format!(
                "part {}/{count} of '{}'",
                index.saturating_add(1),
                item.path.display()
            );
            self.send(&what, len, outcome, || {
                let body = bytes.clone();
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
        let complete_url = self.sub_url("complete");
        let what = format!("completion of '{}'", item.path.display());
        self.send(&what, 0, outcome, || async {
            let form = self
                .text_fields(item, Form::new())
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
                    last = format!("{what}: {}", error_chain(&e));
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

/// An error with its causes (`error sending request: connection reset`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
