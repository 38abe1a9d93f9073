//! A fake QFlow receiver: the HTTP server that snapscan's upload tests and the upload benchmark
//! send scan results to.
//!
//! [`FakeQflow`] serves the QFlow snapshot protocol on `127.0.0.1` over real HTTP/1.1 (hyper),
//! from its own thread and tokio runtime, so that synchronous `#[test]`s can point the
//! `snapscan` binary (or their own async code) at [`FakeQflow::url`]:
//!
//! - `POST <url>`: one `multipart/form-data` upload. Text fields are kept as sent; the part with
//!   a `filename=` is the file. `sha256` (hex, of the original file) is checked after the optional
//!   `content_encoding` (`gzip` | `zstd`) has been undone.
//! - `POST <url>/chunks`: one raw part of a chunked upload (`X-Upload-Id`, `X-Part-Index`,
//!   `X-Part-Count`, `X-Part-Sha256`); a re-sent part replaces the previous one.
//! - `POST <url>/complete`: the text fields of a chunked upload (`upload_id`, `part_count`,
//!   `filename`, `sha256`, ...); the parts are joined, decoded and checked.
//! - `Authorization: Bearer <token>` is checked before the body is used (`401`, after
//!   discarding the body, as real servers' lingering close does, so the client reliably reads
//!   the answer instead of a reset), and an
//!   `Idempotency-Key` already stored answers the first id with `"duplicate": true`.
//!
//! Bodies are streamed to temporary files while they are hashed, so memory stays flat for
//! multi-GiB uploads. Tests queue [`Fault`]s (a FIFO, one per request) to make the receiver fail
//! the way real servers do: error statuses, `429` with `Retry-After`, connection resets, slow
//! reads, hangs. Every request is logged with the status it got ([`FakeQflow::requests`]).
//!
//! It does not do TLS, HTTP/2, keep anything across restarts, limit sizes, or check anything a
//! test does not need (content types of parts, field names other than the ones above).

use crate::server::Background;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempDir};

/// Path of the single-upload endpoint; parts go to `<this>/chunks`, completions to
/// `<this>/complete`.
pub const UPLOAD_PATH: &str = "/qflow/snapshot/v1/upload";

/// Buffer between the network and a stored file.
const WRITE_BUFFER: usize = 1 << 20;

/// One file the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The id the receiver answered (`qf-000001`, `qf-000002`, ...).
    pub id: String,
    /// Every text field as sent, including `sha256`, `content_encoding` and, for chunked
    /// uploads, `upload_id`, `part_count` and `filename`.
    pub fields: BTreeMap<String, String>,
    /// Name of the multipart field that held the file; empty for a chunked upload.
    pub file_field: String,
    /// The part's `filename=`, or the `filename` field of a chunked upload.
    pub filename: String,
    /// Hex SHA-256 of the decoded file (equal to the `sha256` field, else it is not stored).
    pub sha256: String,
    /// Length of the decoded file in bytes.
    pub len: u64,
    /// The request's `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `content_encoding` field (`gzip` or `zstd`) when the file was sent compressed.
    pub content_encoding: Option<String>,
    /// Whether the file came as parts and a `complete` request.
    pub chunked: bool,
    /// Where the decoded file is; it no longer exists when the receiver does not keep files.
    pub path: PathBuf,
}

/// One request the receiver got, in the order their handling ended (a hung request is logged
/// when it starts hanging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// The request path (`/qflow/snapshot/v1/upload/chunks`, ...).
    pub path: String,
    /// The status answered, or 0 when the request got no answer ([`Fault::ResetMidBody`],
    /// [`Fault::Hang`], [`Fault::StoreThenHang`]).
    pub status: u16,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `X-Part-Index` header of a chunk.
    pub part_index: Option<u32>,
}

/// A failure injected into the next request (see [`FakeQflow::push_fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Read the whole body, then answer this status with a small JSON error.
    Status(u16),
    /// Read the whole body, then answer `429` with this `Retry-After` (seconds or an HTTP date).
    TooManyRequests {
        /// The `Retry-After` header value.
        retry_after: String,
    },
    /// Read this many body bytes (or the whole body if shorter), then drop the connection with a
    /// TCP reset and no answer.
    ResetMidBody {
        /// Body bytes read before the reset.
        after_bytes: u64,
    },
    /// Read the body at most this fast, then answer normally.
    SlowBody {
        /// Reading rate.
        bytes_per_sec: u64,
    },
    /// Read the headers and never answer: the client must time out.
    Hang,
    /// Store the upload as usual, then never answer: the receiver has the file but the client
    /// never learns it (a crash between the two, as seen from the client).
    StoreThenHang,
    /// Answer `401` whatever the token.
    Unauthorized,
}

/// How [`FakeQflow::try_start`] runs the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Keep stored files at [`Stored::path`]; when false each file is deleted once hashed (the
    /// benchmark sends several 2 GiB files).
    pub keep_files: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: 0,
            keep_files: true,
        }
    }
}

/// A running fake QFlow receiver. Dropping it stops the server and deletes its files.
pub struct FakeQflow {
    server: Background,
    shared: Arc<Shared>,
}

impl FakeQflow {
    /// Starts a receiver on a free port that keeps the files it stores.
    ///
    /// # Panics
    /// When the receiver cannot start (no temporary directory, no port): a test cannot go on.
    pub fn start(token: &str) -> FakeQflow {
        FakeQflow::try_start(token, Options::default())
            .unwrap_or_else(|e| panic!("cannot start the fake qflow receiver: {e:#}"))
    }

    /// Starts a receiver that accepts `Authorization: Bearer <token>`, storing files under a
    /// new temporary directory (in `$TMPDIR`).
    pub fn try_start(token: &str, options: Options) -> anyhow::Result<FakeQflow> {
        let dir = tempfile::Builder::new()
            .prefix("fake-qflow-")
            .tempdir()
            .context("failed to create the fake qflow directory")?;
        for sub in ["files", "chunks", "tmp"] {
            let path = dir.path().join(sub);
            std::fs::create_dir(&path)
                .with_context(|| format!("failed to create '{}'", path.display()))?;
        }
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            dir,
            keep_files: options.keep_files,
            state: Mutex::new(State::default()),
        });
        let served = Arc::clone(&shared);
        let server = Background::start(
            SocketAddr::from(([127, 0, 0, 1], options.port)),
            "fake-qflow",
            move |listener, stop| serve(listener, served, stop),
        )?;
        Ok(FakeQflow { server, shared })
    }

    /// The single-upload URL, `http://127.0.0.1:PORT/qflow/snapshot/v1/upload`.
    pub fn url(&self) -> String {
        format!("http://{}{UPLOAD_PATH}", self.server.addr())
    }

    /// The address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The files stored so far, oldest first.
    pub fn stored(&self) -> Vec<Stored> {
        self.shared.lock().stored.clone()
    }

    /// Every request handled so far, with the status it got.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }

    /// Queues a fault for the next request that has none yet.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Queues faults for the next requests, one each, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().faults.extend(faults);
    }

    /// Stops serving: open connections are dropped. Also done on drop; calling it twice is fine.
    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }
}

/// What the server thread and the test share.
struct Shared {
    token: String,
    dir: TempDir,
    keep_files: bool,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler leaves the state consistent: every update is one push or insert.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn temp_file(&self) -> Result<NamedTempFile, Reject> {
        let dir = self.dir.path().join("tmp");
        NamedTempFile::new_in(&dir)
            .with_context(|| format!("failed to create a file in '{}'", dir.display()))
            .map_err(Reject::internal)
    }

    /// Directory of the parts of one chunked upload (the id is hashed: it is client data).
    fn parts_dir(&self, upload_id: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(upload_id.as_bytes()));
        self.dir.path().join("chunks").join(name)
    }
}

#[derive(Default)]
struct State {
    stored: Vec<Stored>,
    /// Idempotency key → stored id.
    by_key: HashMap<String, String>,
    requests: Vec<RequestLog>,
    faults: VecDeque<Fault>,
    next_id: u64,
    /// Upload id → part index → part file.
    parts: HashMap<String, BTreeMap<u32, PathBuf>>,
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("fake qflow: accept failed: {e}");
                        continue;
                    }
                };
                // A second descriptor of the socket, to set SO_LINGER on a reset fault.
                let socket = match stream.as_fd().try_clone_to_owned() {
                    Ok(fd) => Arc::new(fd),
                    Err(e) => {
                        eprintln!("fake qflow: cannot duplicate a socket: {e}");
                        continue;
                    }
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, Arc::clone(&shared), Arc::clone(&socket))
                    });
                    // Errors are the client going away or an injected reset.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// The service error that makes hyper drop the connection without answering.
#[derive(Debug)]
struct NoAnswer;

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for NoAnswer {}

type Answer = Response<Full<Bytes>>;

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    socket: Arc<OwnedFd>,
) -> Result<Answer, NoAnswer> {
    let mut log = RequestLog {
        path: req.uri().path().to_owned(),
        status: 0,
        idempotency_key: header(req.headers(), "idempotency-key"),
        part_index: header(req.headers(), "x-part-index").and_then(|v| v.parse().ok()),
    };
    let fault = shared.lock().faults.pop_front();
    if fault == Some(Fault::Hang) {
        shared.lock().requests.push(log.clone());
        std::future::pending::<()>().await;
    }
    let answer = respond(req, &shared, fault, &socket).await;
    log.status = answer.as_ref().map_or(0, |a| a.status().as_u16());
    shared.lock().requests.push(log);
    answer
}

/// The endpoints, by request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Single,
    Chunk,
    Complete,
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        match path.strip_prefix(UPLOAD_PATH)? {
            "" => Some(Endpoint::Single),
            "/chunks" => Some(Endpoint::Chunk),
            "/complete" => Some(Endpoint::Complete),
            _ => None,
        }
    }
}

fn authorized(headers: &hyper::HeaderMap, token: &str) -> bool {
    header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim() == token))
        .unwrap_or(false)
}

async fn respond(
    req: Request<Incoming>,
    shared: &Shared,
    fault: Option<Fault>,
    socket: &OwnedFd,
) -> Result<Answer, NoAnswer> {
    let unauthorized =
        fault == Some(Fault::Unauthorized) || !authorized(req.headers(), &shared.token);
    let (parts, body) = req.into_parts();
    let mut body = BodyReader::new(body);
    if unauthorized {
        body.drain().await;
        return Ok(error(401, "missing or wrong bearer token"));
    }
    match fault {
        Some(Fault::Status(code)) => {
            body.drain().await;
            return Ok(error(code, "injected failure"));
        }
        Some(Fault::TooManyRequests { retry_after }) => {
            body.drain().await;
            let mut answer = error(429, "too many requests");
            if let Ok(value) = retry_after.parse() {
                answer.headers_mut().insert("retry-after", value);
            }
            return Ok(answer);
        }
        Some(Fault::ResetMidBody { after_bytes }) => {
            while body.read < after_bytes {
                match body.next_chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let linger = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            if let Err(e) =
                nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Linger, &linger)
            {
                eprintln!("fake qflow: cannot set SO_LINGER, the close will not be a reset: {e}");
            }
            return Err(NoAnswer);
        }
        Some(Fault::SlowBody { bytes_per_sec }) => body.throttle(bytes_per_sec),
        Some(Fault::Hang | Fault::StoreThenHang | Fault::Unauthorized) | None => {}
    }
    let result = match (parts.method == Method::POST, Endpoint::of(parts.uri.path())) {
        (_, None) => Err(Reject::new(404, "no such endpoint")),
        (false, Some(_)) => Err(Reject::new(405, "only POST is served")),
        (true, Some(Endpoint::Single)) => single(&parts, body, shared).await,
        (true, Some(Endpoint::Chunk)) => chunk(&parts, body, shared).await,
        (true, Some(Endpoint::Complete)) => complete(&parts, body, shared).await,
    };
    if fault == Some(Fault::StoreThenHang) {
        std::future::pending::<()>().await;
    }
    Ok(result.unwrap_or_else(|reject| json_answer(reject.status, reject.body)))
}

/// A request refused with a status and a JSON body.
#[derive(Debug)]
struct Reject {
    status: u16,
    body: Value,
}

impl Reject {
    fn new(status: u16, message: impl std::fmt::Display) -> Reject {
        Reject {
            status,
            body: json!({ "error": message.to_string() }),
        }
    }

    fn bad(message: impl std::fmt::Display) -> Reject {
        Reject::new(400, message)
    }

    fn internal(e: anyhow::Error) -> Reject {
        Reject::new(500, format!("{e:#}"))
    }
}

/// A request body read frame by frame, counted, and optionally throttled.
struct BodyReader {
    body: Incoming,
    read: u64,
    throttle: Option<(u64, Instant)>,
}

impl BodyReader {
    fn new(body: Incoming) -> BodyReader {
        BodyReader {
            body,
            read: 0,
            throttle: None,
        }
    }

    fn throttle(&mut self, bytes_per_sec: u64) {
        self.throttle = Some((bytes_per_sec.max(1), Instant::now()));
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, hyper::Error> {
        while let Some(frame) = self.body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            self.read = self.read.saturating_add(data.len() as u64);
            if let Some((rate, start)) = self.throttle {
                let due = start + Duration::from_secs_f64(self.read as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            return Ok(Some(data));
        }
        Ok(None)
    }

    /// Reads and discards the rest of the body (so that the client sees the answer, not a
    /// broken pipe).
    async fn drain(&mut self) {
        while let Ok(Some(_)) = self.next_chunk().await {}
    }

    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, hyper::Error>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            match reader.next_chunk().await {
                Ok(Some(data)) => Some((Ok(data), reader)),
                Ok(None) => None,
                Err(e) => Some((Err(e), reader)),
            }
        })
    }
}

/// A multipart body, parsed as it arrives.
fn multipart(parts: &Parts, body: BodyReader) -> Result<multer::Multipart<'static>, Reject> {
    let content_type = header(&parts.headers, "content-type")
        .ok_or_else(|| Reject::bad("no content-type header"))?;
    let boundary = multer::parse_boundary(&content_type)
        .map_err(|e| Reject::bad(format!("not a multipart body: {e}")))?;
    Ok(multer::Multipart::new(body.into_stream(), boundary))
}

/// Answers a request whose idempotency key is already stored, if it is.
async fn duplicate(parts: &Parts, body: &mut BodyReader, shared: &Shared) -> Option<Answer> {
    let key = header(&parts.headers, "idempotency-key")?;
    let id = shared.lock().by_key.get(&key).cloned()?;
    body.drain().await;
    Some(json_answer(200, json!({ "id": id, "duplicate": true })))
}

/// A file received (and hashed) as it was sent, before decoding.
struct Received {
    file: NamedTempFile,
    sha256: String,
    len: u64,
}

async fn single(parts: &Parts, mut body: BodyReader, shared: &Shared) -> Result<Answer, Reject> {
    if let Some(answer) = duplicate(parts, &mut body, shared).await {
        return Ok(answer);
    }
    let mut form = multipart(parts, body)?;
    let mut fields = BTreeMap::new();
    let mut file: Option<(String, String, Received)> = None;
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let Some(filename) = field.file_name().map(str::to_owned) else {
            fields.insert(name, field.text().await.map_err(malformed)?);
            continue;
        };
        if file.is_some() {
            return Err(Reject::bad("more than one file part"));
        }
        let mut out = HashWriter::new(shared.temp_file()?)?;
        while let Some(data) = field.chunk().await.map_err(malformed)? {
            out.write_all(&data)
                .map_err(|e| Reject::internal(e.into()))?;
        }
        file = Some((name, filename, out.finish()?));
    }
    let (file_field, filename, received) =
        file.ok_or_else(|| Reject::bad("no file part (a part with a filename)"))?;
    let key = header(&parts.headers, "idempotency-key");
    finish(shared, fields, file_field, filename, key, received, false).await
}

async fn chunk(parts: &Parts, mut body: BodyReader, shared: &Shared) -> Result<Answer, Reject> {
    let required = |name: &str| {
        header(&parts.headers, name).ok_or_else(|| Reject::bad(format!("no {name} header")))
    };
    let number = |name: &str| -> Result<u32, Reject> {
        required(name)?
            .parse()
            .map_err(|e| Reject::bad(format!("bad {name} header: {e}")))
    };
    let upload_id = required("x-upload-id")?;
    let index = number("x-part-index")?;
    let count = number("x-part-count")?;
    let want = required("x-part-sha256")?.to_ascii_lowercase();
    if index >= count {
        return Err(Reject::bad(format!(
            "part {index} of {count} does not exist"
        )));
    }
    let mut out = HashWriter::new(shared.temp_file()?)?;
    while let Some(data) = body
        .next_chunk()
        .await
        .map_err(|e| Reject::bad(format!("cannot read the body: {e}")))?
    {
        out.write_all(&data)
            .map_err(|e| Reject::internal(e.into()))?;
    }
    let received = out.finish()?;
    if received.sha256 != want {
        return Err(Reject::bad(format!(
            "part {index} sha256 mismatch: received {}, header says {want}",
            received.sha256
        )));
    }
    let dir = shared.parts_dir(&upload_id);
    let path = dir.join(index.to_string());
    std::fs::create_dir_all(&dir)
        .and_then(|()| received.file.persist(&path).map(drop).map_err(|e| e.error))
        .with_context(|| format!("failed to store part '{}'", path.display()))
        .map_err(Reject::internal)?;
    shared
        .lock()
        .parts
        .entry(upload_id.clone())
        .or_default()
        .insert(index, path);
    Ok(json_answer(
        200,
        json!({ "upload_id": upload_id, "part": index }),
    ))
}

async fn complete(parts: &Parts, mut body: BodyReader, shared: &Shared) -> Result<Answer, Reject> {
    if let Some(answer) = duplicate(parts, &mut body, shared).await {
        return Ok(answer);
    }
    let mut form = multipart(parts, body)?;
    let mut fields = BTreeMap::new();
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        if field.file_name().is_some() {
            return Err(Reject::bad("a complete request carries no file part"));
        }
        let name = field.name().unwrap_or_default().to_owned();
        fields.insert(name, field.text().await.map_err(malformed)?);
    }
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| Reject::bad(format!("no {name} field")))
    };
    let upload_id = field("upload_id")?;
    let filename = field("filename")?;
    let count: u32 = field("part_count")?
        .parse()
        .map_err(|e| Reject::bad(format!("bad part_count field: {e}")))?;
    let known = shared
        .lock()
        .parts
        .get(&upload_id)
        .cloned()
        .unwrap_or_default();
    let missing: Vec<u32> = (0..count).filter(|i| !known.contains_key(i)).collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(u32::to_string).collect();
        return Err(Reject {
            status: 400,
            body: json!({
                "error": format!("upload {upload_id} misses parts {}", list.join(", ")),
                "missing": missing,
            }),
        });
    }
    let paths: Vec<PathBuf> = (0..count).filter_map(|i| known.get(&i).cloned()).collect();
    let out = HashWriter::new(shared.temp_file()?)?;
    let received = tokio::task::spawn_blocking(move || concat(&paths, out))
        .await
        .map_err(|e| Reject::internal(anyhow::anyhow!("joining parts panicked: {e}")))??;
    let key = header(&parts.headers, "idempotency-key");
    let answer = finish(shared, fields, String::new(), filename, key, received, true).await?;
    if let Some(parts) = shared.lock().parts.remove(&upload_id) {
        for path in parts.values() {
            // A part re-sent after completion is harmless, so a failure is only logged.
            if let Err(e) = std::fs::remove_file(path) {
                eprintln!("fake qflow: cannot remove '{}': {e}", path.display());
            }
        }
    }
    Ok(answer)
}

fn concat(paths: &[PathBuf], mut out: HashWriter) -> Result<Received, Reject> {
    for path in paths {
        File::open(path)
            .and_then(|part| std::io::copy(&mut BufReader::new(part), &mut out))
            .with_context(|| format!("failed to append part '{}'", path.display()))
            .map_err(Reject::internal)?;
    }
    out.finish()
}

/// Decodes the received file if needed, checks its `sha256` field and stores it.
async fn finish(
    shared: &Shared,
    fields: BTreeMap<String, String>,
    file_field: String,
    filename: String,
    idempotency_key: Option<String>,
    received: Received,
    chunked: bool,
) -> Result<Answer, Reject> {
    let want = fields
        .get("sha256")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok_or_else(|| Reject::bad("no sha256 field"))?;
    let content_encoding = fields.get("content_encoding").cloned();
    let decoded = match content_encoding.as_deref() {
        None | Some("" | "identity") => received,
        Some(encoding @ ("gzip" | "zstd")) => {
            let encoding = encoding.to_owned();
            let out = HashWriter::new(shared.temp_file()?)?;
            tokio::task::spawn_blocking(move || decode(received, &encoding, out))
                .await
                .map_err(|e| Reject::internal(anyhow::anyhow!("decoding panicked: {e}")))??
        }
        Some(other) => return Err(Reject::bad(format!("unknown content_encoding '{other}'"))),
    };
    if decoded.sha256 != want {
        return Err(Reject::bad(format!(
            "sha256 mismatch: received {}, sha256 field says {want}",
            decoded.sha256
        )));
    }
    let mut state = shared.lock();
    if let Some(id) = idempotency_key.as_ref().and_then(|k| state.by_key.get(k)) {
        // The same key was stored while this request was being received.
        return Ok(json_answer(200, json!({ "id": id, "duplicate": true })));
    }
    state.next_id = state.next_id.saturating_add(1);
    let id = format!("qf-{:06}", state.next_id);
    let path = shared.dir.path().join("files").join(&id);
    if shared.keep_files {
        decoded.file.persist(&path).map_err(|e| {
            Reject::internal(
                anyhow::Error::new(e.error)
                    .context(format!("failed to store '{}'", path.display())),
            )
        })?;
    }
    if let Some(key) = &idempotency_key {
        state.by_key.insert(key.clone(), id.clone());
    }
    state.stored.push(Stored {
        id: id.clone(),
        fields,
        file_field,
        filename,
        sha256: decoded.sha256,
        len: decoded.len,
        idempotency_key,
        content_encoding,
        chunked,
        path,
    });
    Ok(json_answer(200, json!({ "id": id, "duplicate": false })))
}

fn decode(received: Received, encoding: &str, mut out: HashWriter) -> Result<Received, Reject> {
    let input = BufReader::new(
        received
            .file
            .reopen()
            .map_err(|e| Reject::internal(e.into()))?,
    );
    let mut reader: Box<dyn Read> = match encoding {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
        _ => Box::new(
            zstd::stream::read::Decoder::new(input).map_err(|e| Reject::internal(e.into()))?,
        ),
    };
    std::io::copy(&mut reader, &mut out)
        .map_err(|e| Reject::bad(format!("cannot decode the {encoding} file: {e}")))?;
    out.finish()
}

/// Writes a temporary file while hashing what goes through.
struct HashWriter {
    out: BufWriter<File>,
    file: NamedTempFile,
    hasher: Sha256,
    len: u64,
}

impl HashWriter {
    fn new(file: NamedTempFile) -> Result<HashWriter, Reject> {
        let out = file
            .reopen()
            .with_context(|| format!("failed to open '{}'", file.path().display()))
            .map_err(Reject::internal)?;
        Ok(HashWriter {
            out: BufWriter::with_capacity(WRITE_BUFFER, out),
            file,
            hasher: Sha256::new(),
            len: 0,
        })
    }

    fn finish(mut self) -> Result<Received, Reject> {
        self.out
            .flush()
            .with_context(|| format!("failed to write '{}'", self.file.path().display()))
            .map_err(Reject::internal)?;
        Ok(Received {
            file: self.file,
            sha256: hex::encode(self.hasher.finalize()),
            len: self.len,
        })
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len = self.len.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn malformed(e: multer::Error) -> Reject {
    Reject::bad(format!("malformed multipart body: {e}"))
}

fn header(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn error(status: u16, message: &str) -> Answer {
    json_answer(status, json!({ "error": message }))
}

fn json_answer(status: u16, body: Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    answer.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_of_path() {
        struct Case {
            name: &'static str,
            path: &'static str,
            want: Option<Endpoint>,
        }
        let cases = [
            Case {
                name: "single",
                path: UPLOAD_PATH,
                want: Some(Endpoint::Single),
            },
            Case {
                name: "chunks",
                path: "/qflow/snapshot/v1/upload/chunks",
                want: Some(Endpoint::Chunk),
            },
            Case {
                name: "complete",
                path: "/qflow/snapshot/v1/upload/complete",
                want: Some(Endpoint::Complete),
            },
            Case {
                name: "unknown suffix",
                path: "/qflow/snapshot/v1/upload/other",
                want: None,
            },
            Case {
                name: "prefix only",
                path: "/qflow/snapshot/v1",
                want: None,
            },
            Case {
                name: "glued suffix",
                path: "/qflow/snapshot/v1/uploadx",
                want: None,
            },
        ];
        for case in cases {
            assert_eq!(Endpoint::of(case.path), case.want, "{}", case.name);
        }
    }

    #[test]
    fn bearer_token_check() {
        struct Case {
            name: &'static str,
            header: Option<&'static str>,
            want: bool,
        }
        let cases = [
            Case {
                name: "right token",
                header: Some("Bearer s3cret"),
                want: true,
            },
            Case {
                name: "wrong token",
                header: Some("Bearer other"),
                want: false,
            },
            Case {
                name: "other scheme",
                header: Some("Basic s3cret"),
                want: false,
            },
            Case {
                name: "token prefix",
                header: Some("Bearer s3cre"),
                want: false,
            },
            Case {
                name: "no header",
                header: None,
                want: false,
            },
        ];
        for case in cases {
            let mut headers = hyper::HeaderMap::new();
            if let Some(value) = case.header {
                headers.insert("authorization", value.parse().expect("header value"));
            }
            assert_eq!(authorized(&headers, "s3cret"), case.want, "{}", case.name);
        }
    }
}
