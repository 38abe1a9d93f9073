//! Self-tests of the fake QFlow receiver (`snapscan_tests::qflow`), with `curl` as the client:
//! the protocol (single, chunked, compressed, idempotent uploads), its refusals, and each
//! injected fault as a real HTTP client sees it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use snapscan_tests::images::cmd::{run, tool};
use snapscan_tests::qflow::{FakeQflow, Fault, RequestLog};
use tempfile::TempDir;

const TOKEN: &str = "t0ken";

/// What curl saw.
struct Reply {
    /// curl's exit code.
    code: i32,
    /// HTTP status (0 when there was no answer).
    status: u16,
    headers: String,
    body: String,
    elapsed: Duration,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }
}

/// Runs `curl -sS` with `args`, the bearer token unless `token` is `None`.
fn curl(dir: &Path, token: Option<&str>, args: &[&str]) -> Reply {
    let headers = dir.join("curl-headers");
    let body = dir.join("curl-body");
    let _ = std::fs::remove_file(&headers);
    let _ = std::fs::remove_file(&body);
    let mut cmd = tool("curl");
    cmd.arg("-sS").arg("-D").arg(&headers).arg("-o").arg(&body);
    cmd.args(["-w", "%{http_code}"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    cmd.args(args);
    let start = Instant::now();
    let out = cmd.output().expect("run curl");
    Reply {
        code: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// `len` pseudo-random (incompressible) bytes, the same for the same seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// `curl -F` arguments of a single upload of `file` with `fields`.
fn form(file: &Path, fields: &[(&str, &str)]) -> Vec<String> {
    let mut args = Vec::new();
    for (name, value) in fields {
        args.push("-F".to_owned());
        args.push(format!("{name}={value}"));
    }
    args.push("-F".to_owned());
    args.push(format!("file=@{};filename=snap.json", file.display()));
    args
}

fn upload(
    q: &FakeQflow,
    dir: &Path,
    file: &Path,
    fields: &[(&str, &str)],
    extra: &[&str],
) -> Reply {
    let form = form(file, fields);
    let mut args: Vec<&str> = form.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let url = q.url();
    args.push(&url);
    curl(dir, Some(TOKEN), &args)
}

fn setup() -> (FakeQflow, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (FakeQflow::start(TOKEN), dir)
}

#[test]
fn single_upload_stores_file_hash_and_fields() {
    let (q, dir) = setup();
    let bytes = data(300_000, 1);
    let file = write(dir.path(), "scan.json", &bytes);
    let sum = sha(&bytes);
    let fields = [
        ("snapshot_name", "snap-1"),
        ("instance_id", "i-42"),
        ("sha256", sum.as_str()),
    ];
    let reply = upload(
        &q,
        dir.path(),
        &file,
        &fields,
        &["-H", "Idempotency-Key: k1"],
    );
    assert_eq!((reply.code, reply.status), (0, 200), "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["duplicate"], Value::Bool(false));

    let stored = q.stored();
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(answer["id"].as_str(), Some(s.id.as_str()));
    assert_eq!(s.sha256, sum);
    assert_eq!(s.len, bytes.len() as u64);
    assert_eq!(
        (s.file_field.as_str(), s.filename.as_str()),
        ("file", "snap.json")
    );
    assert_eq!(
        s.fields.get("snapshot_name").map(String::as_str),
        Some("snap-1")
    );
    assert_eq!(
        s.fields.get("instance_id").map(String::as_str),
        Some("i-42")
    );
    assert_eq!(s.idempotency_key.as_deref(), Some("k1"));
    assert_eq!((s.content_encoding.as_deref(), s.chunked), (None, false));
    assert_eq!(std::fs::read(&s.path).expect("stored file"), bytes);
    assert_eq!(
        q.requests(),
        [RequestLog {
            path: "/qflow/snapshot/v1/upload".into(),
            status: 200,
            idempotency_key: Some("k1".into()),
            part_index: None,
        }]
    );
}

#[test]
fn wrong_or_missing_token_is_401() {
    let (q, dir) = setup();
    let bytes = data(1000, 2);
    let file = write(dir.path(), "f", &bytes);
    let form = form(&file, &[("sha256", &sha(&bytes))]);
    let mut args: Vec<&str> = form.iter().map(String::as_str).collect();
    let url = q.url();
    args.push(&url);
    for (name, token) in [("wrong token", Some("nope")), ("no token", None)] {
        let reply = curl(dir.path(), token, &args);
        assert_eq!(reply.status, 401, "{name}: {}", reply.body);
    }
    q.push_fault(Fault::Unauthorized);
    let reply = curl(dir.path(), Some(TOKEN), &args);
    assert_eq!(reply.status, 401, "unauthorized fault: {}", reply.body);
    assert!(q.stored().is_empty());
}

#[test]
fn bad_uploads_are_400() {
    let (q, dir) = setup();
    let bytes = data(5000, 3);
    let file = write(dir.path(), "f", &bytes);
    let url = q.url();
    let other = sha(b"something else");
    let cases: [(&str, Vec<String>); 4] = [
        ("sha256 mismatch", form(&file, &[("sha256", &other)])),
        ("no sha256 field", form(&file, &[("x", "y")])),
        (
            "no file part",
            vec!["-F".into(), format!("sha256={}", sha(&bytes))],
        ),
        (
            "not multipart",
            vec!["--data-binary".into(), format!("@{}", file.display())],
        ),
    ];
    for (name, mut args) in cases {
        args.push(url.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = curl(dir.path(), Some(TOKEN), &args);
        assert_eq!(reply.status, 400, "{name}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{name}");
    }
    assert!(q.stored().is_empty());
}

#[test]
fn duplicate_idempotency_key_is_stored_once() {
    let (q, dir) = setup();
    let bytes = data(70_000, 4);
    let file = write(dir.path(), "f", &bytes);
    let sum = sha(&bytes);
    let first = upload(
        &q,
        dir.path(),
        &file,
        &[("sha256", &sum)],
        &["-H", "Idempotency-Key: same"],
    );
    let second = upload(
        &q,
        dir.path(),
        &file,
        &[("sha256", &sum)],
        &["-H", "Idempotency-Key: same"],
    );
    let other = upload(
        &q,
        dir.path(),
        &file,
        &[("sha256", &sum)],
        &["-H", "Idempotency-Key: other"],
    );
    assert_eq!((first.status, second.status, other.status), (200, 200, 200));
    let (first, second, other) = (first.json(), second.json(), other.json());
    assert_eq!(first["duplicate"], Value::Bool(false));
    assert_eq!(second["duplicate"], Value::Bool(true));
    assert_eq!(second["id"], first["id"]);
    assert_eq!(other["duplicate"], Value::Bool(false));
    assert_ne!(other["id"], first["id"]);
    assert_eq!(q.stored().len(), 2);
}

/// Sends part `index` of `count` of an upload, with `sum` as its X-Part-Sha256.
fn send_part(
    q: &FakeQflow,
    dir: &Path,
    id: &str,
    index: usize,
    count: usize,
    part: &[u8],
    sum: &str,
) -> Reply {
    let file = write(dir, &format!("part-{index}"), part);
    let url = format!("{}/chunks", q.url());
    let headers = [
        format!("X-Upload-Id: {id}"),
        format!("X-Part-Index: {index}"),
        format!("X-Part-Count: {count}"),
        format!("X-Part-Sha256: {sum}"),
    ];
    let body = format!("@{}", file.display());
    let mut args = vec![
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &body,
    ];
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    curl(dir, Some(TOKEN), &args)
}

fn send_complete(q: &FakeQflow, dir: &Path, key: &str, fields: &[(&str, &str)]) -> Reply {
    let url = format!("{}/complete", q.url());
    let key = format!("Idempotency-Key: {key}");
    let fields: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut args = vec!["-H", key.as_str()];
    for f in &fields {
        args.extend(["-F", f.as_str()]);
    }
    args.push(&url);
    curl(dir, Some(TOKEN), &args)
}

#[test]
fn chunked_upload_is_assembled() {
    let (q, dir) = setup();
    let bytes = data(250_000, 5);
    let parts: Vec<&[u8]> = bytes.chunks(100_000).collect();
    let n = parts.len();
    // Sent out of order, part 1 twice (the first time with its hash refused).
    let reply = send_part(&q, dir.path(), "up-1", 1, n, parts[1], &sha(b"not it"));
    assert_eq!(reply.status, 400, "bad part hash: {}", reply.body);
    for i in [2, 0, 1, 1] {
        let reply = send_part(&q, dir.path(), "up-1", i, n, parts[i], &sha(parts[i]));
        assert_eq!(reply.status, 200, "part {i}: {}", reply.body);
        assert_eq!(reply.json()["part"], Value::from(i));
        assert_eq!(reply.json()["upload_id"], Value::from("up-1"));
    }
    let sum = sha(&bytes);
    let count = n.to_string();
    let fields = [
        ("upload_id", "up-1"),
        ("part_count", count.as_str()),
        ("filename", "big.json"),
        ("sha256", sum.as_str()),
        ("scan_id", "s-9"),
    ];
    let reply = send_complete(&q, dir.path(), "ck", &fields);
    assert_eq!(reply.status, 200, "complete: {}", reply.body);
    assert_eq!(reply.json()["duplicate"], Value::Bool(false));
    let stored = q.stored();
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(
        (s.chunked, s.filename.as_str(), s.sha256.as_str()),
        (true, "big.json", sum.as_str())
    );
    assert_eq!(s.fields.get("scan_id").map(String::as_str), Some("s-9"));
    assert_eq!(std::fs::read(&s.path).expect("stored file"), bytes);
    let again = send_complete(&q, dir.path(), "ck", &fields);
    assert_eq!(again.json()["duplicate"], Value::Bool(true));
    assert_eq!(again.json()["id"], reply.json()["id"]);
    let logged: Vec<Option<u32>> = q.requests().iter().map(|r| r.part_index).collect();
    assert_eq!(
        logged,
        [Some(1), Some(2), Some(0), Some(1), Some(1), None, None]
    );
}

#[test]
fn chunked_upload_with_missing_parts_is_400() {
    let (q, dir) = setup();
    let bytes = data(40_000, 6);
    let parts: Vec<&[u8]> = bytes.chunks(10_000).collect();
    for i in [0, 2] {
        let reply = send_part(
            &q,
            dir.path(),
            "up-2",
            i,
            parts.len(),
            parts[i],
            &sha(parts[i]),
        );
        assert_eq!(reply.status, 200, "part {i}: {}", reply.body);
    }
    let sum = sha(&bytes);
    let fields = [
        ("upload_id", "up-2"),
        ("part_count", "4"),
        ("filename", "f"),
        ("sha256", sum.as_str()),
    ];
    let reply = send_complete(&q, dir.path(), "k", &fields);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["missing"], serde_json::json!([1, 3]));
    assert!(q.stored().is_empty());
}

/// `program -c` of `bytes` (the gzip and zstd CLIs).
fn compress(dir: &Path, program: &str, bytes: &[u8]) -> PathBuf {
    let src = write(dir, "plain", bytes);
    let dst = dir.join(format!("packed.{program}"));
    let mut cmd = tool("sh");
    cmd.arg("-c")
        .arg(format!("{program} -c \"$0\" > \"$1\""))
        .arg(&src)
        .arg(&dst);
    run(&mut cmd, None).expect("compress");
    dst
}

#[test]
fn gzip_and_zstd_files_are_decoded() {
    let (q, dir) = setup();
    let mut bytes = b"{\"packages\": [".repeat(20_000);
    bytes.extend(data(50_000, 7));
    let sum = sha(&bytes);
    for encoding in ["gzip", "zstd"] {
        let packed = compress(dir.path(), encoding, &bytes);
        let reply = upload(
            &q,
            dir.path(),
            &packed,
            &[("sha256", &sum), ("content_encoding", encoding)],
            &[],
        );
        assert_eq!(reply.status, 200, "{encoding}: {}", reply.body);
        let wrong = upload(
            &q,
            dir.path(),
            &packed,
            &[("sha256", &sum), ("content_encoding", "brotli")],
            &[],
        );
        assert_eq!(wrong.status, 400, "{encoding} as brotli: {}", wrong.body);
    }
    // A chunked zstd upload: the parts are of the compressed file.
    let packed = std::fs::read(compress(dir.path(), "zstd", &bytes)).expect("read packed");
    let parts: Vec<&[u8]> = packed.chunks(packed.len() / 2 + 1).collect();
    for (i, part) in parts.iter().enumerate() {
        let reply = send_part(&q, dir.path(), "z", i, parts.len(), part, &sha(part));
        assert_eq!(reply.status, 200, "zstd part {i}: {}", reply.body);
    }
    let count = parts.len().to_string();
    let fields = [
        ("upload_id", "z"),
        ("part_count", count.as_str()),
        ("filename", "f"),
        ("sha256", sum.as_str()),
        ("content_encoding", "zstd"),
    ];
    let reply = send_complete(&q, dir.path(), "z", &fields);
    assert_eq!(reply.status, 200, "chunked zstd: {}", reply.body);

    let stored = q.stored();
    let encodings: Vec<_> = stored
        .iter()
        .map(|s| (s.content_encoding.as_deref(), s.chunked))
        .collect();
    assert_eq!(
        encodings,
        [
            (Some("gzip"), false),
            (Some("zstd"), false),
            (Some("zstd"), true)
        ]
    );
    for s in &stored {
        assert_eq!(
            (s.sha256.as_str(), s.len),
            (sum.as_str(), bytes.len() as u64)
        );
        assert_eq!(std::fs::read(&s.path).expect("stored file"), bytes);
    }
}

/// A small valid upload, for the fault tests.
fn small(dir: &Path, len: usize) -> (PathBuf, String) {
    let bytes = data(len, 8);
    (write(dir, "small", &bytes), sha(&bytes))
}

#[test]
fn status_faults_answer_in_order_then_normally() {
    let (q, dir) = setup();
    let (file, sum) = small(dir.path(), 2000);
    q.push_faults([
        Fault::Status(500),
        Fault::TooManyRequests {
            retry_after: "2".into(),
        },
        Fault::TooManyRequests {
            retry_after: "Wed, 21 Oct 2037 07:28:00 GMT".into(),
        },
        Fault::Status(503),
    ]);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let reply = upload(&q, dir.path(), &file, &[("sha256", &sum)], &[]);
        let retry_after = reply
            .headers
            .lines()
            .find_map(|l| {
                l.strip_prefix("retry-after: ")
                    .or_else(|| l.strip_prefix("Retry-After: "))
            })
            .map(|v| v.trim().to_owned());
        seen.push((reply.status, retry_after));
    }
    let want = [
        (500, None),
        (429, Some("2".to_owned())),
        (429, Some("Wed, 21 Oct 2037 07:28:00 GMT".to_owned())),
        (503, None),
        (200, None),
    ];
    assert_eq!(seen, want);
    assert_eq!(q.stored().len(), 1);
    let statuses: Vec<u16> = q.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 429, 429, 503, 200]);
}

#[test]
fn reset_fault_drops_the_connection() {
    let (q, dir) = setup();
    let (file, sum) = small(dir.path(), 200_000);
    q.push_fault(Fault::ResetMidBody { after_bytes: 1000 });
    let reply = upload(&q, dir.path(), &file, &[("sha256", &sum)], &[]);
    // 52: empty reply, 56: recv failure (the reset). The body fits in the socket buffers, so
    // curl is done sending (no 55, send failure) when the reset comes.
    assert!(
        [52, 56].contains(&reply.code),
        "curl exit {} status {}",
        reply.code,
        reply.status
    );
    assert_eq!(reply.status, 0);
    assert_eq!(q.requests()[0].status, 0);
    assert!(q.stored().is_empty());
    let reply = upload(&q, dir.path(), &file, &[("sha256", &sum)], &[]);
    assert_eq!(reply.status, 200, "after the reset: {}", reply.body);
}

#[test]
fn slow_body_fault_throttles_then_answers() {
    let (q, dir) = setup();
    let (file, sum) = small(dir.path(), 200_000);
    q.push_fault(Fault::SlowBody {
        bytes_per_sec: 100_000,
    });
    let reply = upload(&q, dir.path(), &file, &[("sha256", &sum)], &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.elapsed >= Duration::from_millis(1900),
        "took {:?}",
        reply.elapsed
    );
    let reply = upload(&q, dir.path(), &file, &[("sha256", &sum)], &[]);
    assert!(
        reply.elapsed < Duration::from_millis(1500),
        "unthrottled took {:?}",
        reply.elapsed
    );
    assert_eq!(q.stored().len(), 2);
}

#[test]
fn hang_fault_makes_the_client_time_out() {
    let (q, dir) = setup();
    let (file, sum) = small(dir.path(), 2000);
    q.push_fault(Fault::Hang);
    let reply = upload(
        &q,
        dir.path(),
        &file,
        &[("sha256", &sum)],
        &["--max-time", "1"],
    );
    assert_eq!(reply.code, 28, "curl exit (status {})", reply.status);
    assert_eq!(q.requests()[0].status, 0);
    let reply = upload(
        &q,
        dir.path(),
        &file,
        &[("sha256", &sum)],
        &["--max-time", "5"],
    );
    assert_eq!(reply.status, 200, "after the hang: {}", reply.body);
    assert_eq!(q.stored().len(), 1);
}
