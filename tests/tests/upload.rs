//! The upload sinks end to end: snapscan's QFlow client against the fake receiver
//! ([`snapscan_tests::qflow::FakeQflow`], a real HTTP/1.1 server on loopback), and the local
//! directory sink on a real filesystem.
//!
//! Every fault the receiver can inject must end in exactly one of two ways: the result is
//! stored exactly once, or the upload fails with a clear error (naming the HTTP status when
//! there is one) and the local file is intact. Also: no retry on 401/400/413, `Retry-After`
//! honoured (the wait is measured), idempotency (the same item twice is stored once), a
//! failing part of a chunked upload retried alone, gzip and zstd round trips, the token kept out
//! of errors and logs, the `snapscan upload` command line, and a 2 GiB upload through the
//! binary with its peak RSS measured (< 64 MiB).
//!
//! Not here: the receiver's own behaviour as seen by `curl` (`tests/tests/qflow_receiver.rs`),
//! throughput figures (`scripts/bench-upload.sh`).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use snapscan::retry::RetryConfig;
use snapscan::upload::{
    upload, Compression, Outcome, QflowConfig, Sink, SinkKind, UploadConfig, UploadItem,
};
use snapscan_tests::qflow::{FakeQflow, Fault};

const TOKEN: &str = "tok-3f9a-never-printed";

/// Everything the client logged in this test binary (one global subscriber).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        LOG.lock().expect("log lock").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    // Several tests race to install it; the first wins, the others get an error to ignore.
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(|| LogWriter)
        .try_init();
}

fn log_text() -> String {
    String::from_utf8_lossy(&LOG.lock().expect("log lock")).into_owned()
}

/// Passes a request through untouched: the fault queue has no "no fault" entry, and a body
/// throttled at 1 TiB/s is not throttled.
fn pass() -> Fault {
    Fault::SlowBody {
        bytes_per_sec: 1 << 40,
    }
}

/// A temporary directory with the token file and the files to send.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        capture_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token file");
        Work { dir }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// A file of `len` pseudo-random bytes (`compressible`: text lines instead); its SHA-256.
    fn file(&self, name: &str, len: usize, compressible: bool) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        let mut data = Vec::with_capacity(len);
        let mut counter: u64 = 0;
        while data.len() < len {
            if compressible {
                data.extend_from_slice(
                    format!("package-{counter} version 1.{counter}\n").as_bytes(),
                );
            } else {
                data.extend_from_slice(&Sha256::digest(counter.to_le_bytes()));
            }
            counter += 1;
        }
        data.truncate(len);
        std::fs::write(&path, &data).expect("write the file");
        (path, hex::encode(Sha256::digest(&data)))
    }

    /// Settings for the receiver at `url`: token from the file, fast retries, short timeouts.
    fn config(&self, url: &str) -> UploadConfig {
        UploadConfig {
            sink: SinkKind::Qflow,
            local_dir: None,
            qflow: QflowConfig {
                url: Some(url.to_owned()),
                token_file: Some(self.token_file()),
                request_timeout_secs: 3,
                connect_timeout_secs: 2,
                retry: RetryConfig {
                    max_attempts: 4,
                    initial_backoff_ms: 10,
                    max_backoff_ms: 50,
                    max_retry_after_secs: 10,
                },
                ..QflowConfig::default()
            },
        }
    }
}

fn sha256_of(path: &Path) -> String {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn fields() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("snapshot_name".to_owned(), "snap-web-1".to_owned()),
        ("instance_id".to_owned(), "1234567890".to_owned()),
        ("os_family".to_owned(), "linux".to_owned()),
    ])
}

/// Describe and send `path` once with `cfg`, in a runtime of its own.
fn send(cfg: &UploadConfig, path: &Path) -> (UploadItem, Outcome) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sink = Sink::from_config(cfg, None).expect("sink");
        let item = UploadItem::new(path, fields()).await.expect("item");
        let outcome = upload(&sink, &item).await;
        (item, outcome)
    })
}

#[test]
fn single_upload_stores_content_and_fields() {
    let w = Work::new();
    let rx = FakeQflow::start(TOKEN);
    let (path, sha) = w.file("result.cdx.json", 300_000, false);
    let (item, o) = send(&w.config(&rx.url()), &path);
    assert!(o.acknowledged, "{o:?}");
    assert_eq!(o.attempts, 1, "{o:?}");
    assert!(!o.duplicate);
    let stored = rx.stored();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let s = &stored[0];
    assert_eq!(o.receipt.as_deref(), Some(s.id.as_str()));
    assert_eq!(s.sha256, sha);
    assert_eq!(s.len, 300_000);
    assert_eq!(s.file_field, "file");
    assert_eq!(s.filename, "result.cdx.json");
    assert_eq!(
        s.idempotency_key.as_deref(),
        Some(item.idempotency_key.as_str())
    );
    assert!(!s.chunked);
    assert_eq!(s.content_encoding, None);
    for (k, v) in fields() {
        assert_eq!(s.fields.get(&k), Some(&v), "field {k}: {:?}", s.fields);
    }
    assert!(log_text().contains("sending"), "attempts are logged");
    assert!(!log_text().contains(TOKEN), "the token reached the log");
}

/// Every fault, each against a fresh receiver: stored once, or failed clearly with the file
/// intact.
#[test]
fn every_fault_ends_stored_once_or_failed_clearly() {
    struct Case {
        name: &'static str,
        faults: Vec<Fault>,
        /// `Some(attempts)`: stored once after that many requests; `None`: failed.
        stored_after: Option<u32>,
        /// For a failure: what the error names, and the requests made.
        error_has: &'static str,
        failed_after: u32,
    }
    let cases = vec![
        Case {
            name: "500 once",
            faults: vec![Fault::Status(500)],
            stored_after: Some(2),
            error_has: "",
            failed_after: 0,
        },
        Case {
            name: "503 on every attempt",
            faults: (0..4).map(|_| Fault::Status(503)).collect(),
            stored_after: None,
            error_has: "503",
            failed_after: 4,
        },
        Case {
            name: "reset mid-body",
            faults: vec![Fault::ResetMidBody {
                after_bytes: 100_000,
            }],
            stored_after: Some(2),
            error_has: "",
            failed_after: 0,
        },
        Case {
            name: "reset on every attempt",
            faults: (0..4)
                .map(|_| Fault::ResetMidBody {
                    after_bytes: 50_000,
                })
                .collect(),
            stored_after: None,
            error_has: "4 attempts",
            failed_after: 4,
        },
        Case {
            name: "slow body",
            faults: vec![Fault::SlowBody {
                bytes_per_sec: 2 << 20,
            }],
            stored_after: Some(1),
            error_has: "",
            failed_after: 0,
        },
        Case {
            name: "hang (request timeout, then retried)",
            faults: vec![Fault::Hang],
            stored_after: Some(2),
            error_has: "",
            failed_after: 0,
        },
        Case {
            name: "401 is not retried",
            faults: vec![Fault::Unauthorized],
            stored_after: None,
            error_has: "401",
            failed_after: 1,
        },
        Case {
            name: "400 is not retried",
            faults: vec![Fault::Status(400)],
            stored_after: None,
            error_has: "400",
            failed_after: 1,
        },
        Case {
            name: "413 is not retried",
            faults: vec![Fault::Status(413)],
            stored_after: None,
            error_has: "413",
            failed_after: 1,
        },
    ];
    let w = Work::new();
    let (path, sha) = w.file("faulty.bin", 1 << 20, false);
    for c in cases {
        let rx = FakeQflow::start(TOKEN);
        rx.push_faults(c.faults);
        let (_, o) = send(&w.config(&rx.url()), &path);
        let stored = rx.stored();
        match c.stored_after {
            Some(attempts) => {
                assert!(o.acknowledged, "case {}: {o:?}", c.name);
                assert_eq!(o.attempts, attempts, "case {}: {o:?}", c.name);
                assert_eq!(stored.len(), 1, "case {}: {stored:?}", c.name);
                assert_eq!(stored[0].sha256, sha, "case {}", c.name);
                assert_eq!(o.receipt.as_deref(), Some(stored[0].id.as_str()));
            }
            None => {
                assert!(!o.acknowledged, "case {}: {o:?}", c.name);
                assert_eq!(o.attempts, c.failed_after, "case {}: {o:?}", c.name);
                assert!(stored.is_empty(), "case {}: {stored:?}", c.name);
                assert_eq!(
                    rx.requests().len(),
                    usize::try_from(c.failed_after).expect("small"),
                    "case {}: {:?}",
                    c.name,
                    rx.requests()
                );
                let err = o.error.clone().unwrap_or_default();
                assert!(err.contains(c.error_has), "case {}: {err}", c.name);
                assert!(!err.contains(TOKEN), "case {}: token in '{err}'", c.name);
            }
        }
        assert_eq!(sha256_of(&path), sha, "case {}: local file changed", c.name);
    }
}

#[test]
fn wrong_token_fails_fast_and_stays_secret() {
    let w = Work::new();
    let rx = FakeQflow::start("the-receivers-token");
    let (path, sha) = w.file("r.json", 10_000, false);
    let (_, o) = send(&w.config(&rx.url()), &path);
    assert!(!o.acknowledged, "{o:?}");
    assert_eq!(o.attempts, 1, "no retry on 401: {o:?}");
    assert_eq!(rx.requests().len(), 1);
    let err = o.error.unwrap_or_default();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    assert!(rx.stored().is_empty());
    assert_eq!(sha256_of(&path), sha);
}

#[test]
fn retry_after_is_honoured() {
    let w = Work::new();
    let rx = FakeQflow::start(TOKEN);
    rx.push_fault(Fault::TooManyRequests {
        retry_after: "2".into(),
    });
    let (path, sha) = w.file("r.json", 10_000, false);
    let started = Instant::now();
    let (_, o) = send(&w.config(&rx.url()), &path);
    let waited = started.elapsed();
    assert!(o.acknowledged, "{o:?}");
    assert_eq!(o.attempts, 2, "{o:?}");
    // The configured backoff is at most 50 ms: only the header explains two seconds.
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert!(waited < Duration::from_secs(8), "took {waited:?}");
    assert_eq!(rx.stored().len(), 1);
    assert_eq!(rx.stored()[0].sha256, sha);
}

#[test]
fn the_same_item_twice_is_stored_once() {
    let w = Work::new();
    let rx = FakeQflow::start(TOKEN);
    let (path, _) = w.file("r.json", 50_000, false);
    let cfg = w.config(&rx.url());
    let (_, first) = send(&cfg, &path);
    let (_, second) = send(&cfg, &path);
    assert!(first.acknowledged && !first.duplicate, "{first:?}");
    assert!(second.acknowledged && second.duplicate, "{second:?}");
    assert_eq!(first.receipt, second.receipt);
    assert_eq!(rx.stored().len(), 1, "{:?}", rx.stored());
}

/// Parts sent for each part index, and completions.
fn part_requests(rx: &FakeQflow) -> (BTreeMap<u32, usize>, usize) {
    let mut parts = BTreeMap::new();
    let mut completions = 0;
    for r in rx.requests() {
        if let Some(i) = r.part_index {
            *parts.entry(i).or_insert(0) += 1;
        } else if r.path.ends_with("/complete") {
            completions += 1;
        }
    }
    (parts, completions)
}

#[test]
fn a_failing_part_is_retried_alone() {
    let w = Work::new();
    let rx = FakeQflow::start(TOKEN);
    // Parts 0 and 1 pass, part 2 fails once (then its retry and the rest pass).
    rx.push_faults(vec![pass(), pass(), Fault::Status(500)]);
    let mut cfg = w.config(&rx.url());
    cfg.qflow.chunk_threshold_bytes = 1 << 20;
    cfg.qflow.chunk_size_bytes = 256 << 10;
    let (path, sha) = w.file("big.bin", (1 << 20) + 1000, false);
    let (_, o) = send(&cfg, &path);
    assert!(o.acknowledged, "{o:?}");
    let (parts, completions) = part_requests(&rx);
    let want: BTreeMap<u32, usize> = BTreeMap::from([(0, 1), (1, 1), (2, 2), (3, 1), (4, 1)]);
    assert_eq!(parts, want, "{:?}", rx.requests());
    assert_eq!(completions, 1);
    assert_eq!(o.attempts, 7, "5 parts, 1 retry, 1 completion: {o:?}");
    let stored = rx.stored();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].chunked);
    assert_eq!(stored[0].sha256, sha);
    assert_eq!(sha256_of(&path), sha);
}

#[test]
fn gzip_and_zstd_round_trip() {
    struct Case {
        name: &'static str,
        compression: Compression,
        encoding: &'static str,
        chunked: bool,
    }
    let cases = [
        Case {
            name: "gzip",
            compression: Compression::Gzip,
            encoding: "gzip",
            chunked: false,
        },
        Case {
            name: "zstd",
            compression: Compression::Zstd,
            encoding: "zstd",
            chunked: false,
        },
        Case {
            name: "zstd in parts",
            compression: Compression::Zstd,
            encoding: "zstd",
            chunked: true,
        },
    ];
    let w = Work::new();
    let (path, sha) = w.file("packages.txt", 3 << 20, true);
    for c in cases {
        let rx = FakeQflow::start(TOKEN);
        let mut cfg = w.config(&rx.url());
        cfg.qflow.compression = c.compression;
        if c.chunked {
            cfg.qflow.chunk_threshold_bytes = 16 << 10;
            cfg.qflow.chunk_size_bytes = 16 << 10;
        }
        let (_, o) = send(&cfg, &path);
        assert!(o.acknowledged, "case {}: {o:?}", c.name);
        assert!(
            o.bytes_sent < 3 << 20,
            "case {}: {} bytes sent",
            c.name,
            o.bytes_sent
        );
        let stored = rx.stored();
        assert_eq!(stored.len(), 1, "case {}: {stored:?}", c.name);
        assert_eq!(stored[0].sha256, sha, "case {}", c.name);
        assert_eq!(stored[0].content_encoding.as_deref(), Some(c.encoding));
        assert_eq!(stored[0].chunked, c.chunked, "case {}", c.name);
        let (parts, _) = part_requests(&rx);
        assert_eq!(parts.len() > 1, c.chunked, "case {}: {parts:?}", c.name);
    }
    // Only the original is left next to it (the compressed copies are gone).
    let names: Vec<String> = std::fs::read_dir(w.dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}"); // the file and the token
    assert_eq!(sha256_of(&path), sha);
}

#[test]
fn local_sink_copies_atomically() {
    let w = Work::new();
    let (path, sha) = w.file("report.json", 200_000, false);
    let dest = w.dir.path().join("results");
    let cfg = UploadConfig {
        sink: SinkKind::Local,
        local_dir: Some(dest.clone()),
        qflow: QflowConfig::default(),
    };
    let (_, o) = send(&cfg, &path);
    assert!(o.acknowledged, "{o:?}");
    let copy = PathBuf::from(o.receipt.expect("a receipt"));
    assert!(copy.starts_with(&dest), "{}", copy.display());
    assert_eq!(sha256_of(&copy), sha);
    assert_eq!(sha256_of(&path), sha, "the original stays");
    let group = copy.parent().expect("group dir");
    let entries: Vec<_> = std::fs::read_dir(group).expect("list").flatten().collect();
    assert_eq!(entries.len(), 1, "temporary files left: {entries:?}");
}

/// `snapscan upload` with a settings file holding the token path: one line per file, exit 1
/// when one file is missing, 0 when all are stored.
#[test]
fn the_command_line_reports_each_file() {
    let w = Work::new();
    let rx = FakeQflow::start(TOKEN);
    let settings = write_settings(&w);
    let (a, sha_a) = w.file("a.json", 5_000, false);
    let (b, sha_b) = w.file("b.json", 7_000, false);
    let missing = w.dir.path().join("absent.json");

    let run = |files: &[&Path]| {
        let out = Command::new(snapscan_tests::snapscan_bin())
            .arg("upload")
            .arg("--config")
            .arg(&settings)
            .args(["--upload", &rx.url(), "--field", "snapshot_name=snap-1"])
            .args(files)
            .output()
            .expect("run snapscan upload");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&[&a, &missing, &b]);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[1].contains("absent.json"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    let mut got: Vec<String> = rx.stored().into_iter().map(|s| s.sha256).collect();
    got.sort();
    let mut want = vec![sha_a, sha_b];
    want.sort();
    assert_eq!(got, want);
    assert!(rx
        .stored()
        .iter()
        .all(|s| s.fields.get("snapshot_name").map(String::as_str) == Some("snap-1")));

    let (code, stdout, stderr) = run(&[&a, &b]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        rx.stored().len(),
        2,
        "the repeat is a duplicate, not a new result"
    );
}

/// A settings file that only names the token file (every other setting is the default).
fn write_settings(w: &Work) -> PathBuf {
    let settings = w.dir.path().join("agent.toml");
    std::fs::write(
        &settings,
        format!(
            "[upload.qflow]\ntoken_file = \"{}\"\n",
            w.token_file().display()
        ),
    )
    .expect("settings");
    settings
}

/// Peak resident set (VmHWM) of a running process, in KiB; `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// 2 GiB through `snapscan upload` with the default settings: memory stays flat, and the
/// receiver ends up with the same bytes.
#[test]
fn two_gib_upload_keeps_memory_flat() {
    const SIZE: u64 = 2 << 30;
    let w = Work::new();
    let rx = FakeQflow::start(TOKEN);
    let settings = write_settings(&w);

    // Sparse, with a random-looking 1 MiB block every 64 MiB, so that a transfer that skips,
    // repeats or reorders data changes the hash.
    let path = w.dir.path().join("big.result");
    {
        let mut f = std::fs::File::create(&path).expect("create");
        f.set_len(SIZE).expect("set_len");
        let mut block = Vec::with_capacity(1 << 20);
        for i in 0..(SIZE >> 26) {
            block.clear();
            let mut n = 0u64;
            while block.len() < 1 << 20 {
                block.extend_from_slice(&Sha256::digest(
                    [i.to_le_bytes(), n.to_le_bytes()].concat(),
                ));
                n += 1;
            }
            f.seek(SeekFrom::Start((i << 26) + 4096 * i)).expect("seek");
            f.write_all(&block).expect("write");
        }
    }
    let sha = sha256_of(&path);

    let bin = snapscan_tests::snapscan_bin();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg("upload")
        .arg("--config")
        .arg(&settings)
        .args(["--upload", &rx.url(), "--field", "snapshot_name=big"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn snapscan upload");
    let pid = child.id();
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut stdout).expect("stdout");
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut stderr).expect("stderr");
    }
    eprintln!(
        "2 GiB upload: {:.1} s, {:.0} MB/s, peak RSS {} KiB",
        elapsed.as_secs_f64(),
        SIZE as f64 / 1e6 / elapsed.as_secs_f64(),
        peak_kib
    );
    assert!(status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(peak_kib > 0, "never saw the process");
    assert!(peak_kib < 64 << 10, "peak RSS {peak_kib} KiB");
    let stored = rx.stored();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].sha256, sha);
    assert_eq!(stored[0].len, SIZE);
}

/// A slow upload shows its progress on a terminal (a pseudo-terminal from `script`), and
/// nothing when stderr is a pipe.
#[test]
fn progress_on_a_terminal_only() {
    let w = Work::new();
    let rx = FakeQflow::start(TOKEN);
    let settings = write_settings(&w);
    let (file, _) = w.file("big.json", 6 << 20, false);
    let command = |rx: &FakeQflow| {
        // About 3 s at 2 MiB/s: longer than the quiet period of 2 s.
        rx.push_fault(Fault::SlowBody {
            bytes_per_sec: 2 << 20,
        });
        format!(
            "{} upload --config {} --upload {} {}",
            snapscan_tests::snapscan_bin().display(),
            settings.display(),
            rx.url(),
            file.display()
        )
    };
    let tty = Command::new("script")
        .args(["-qefc", &command(&rx), "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("run script");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("uploading") && shown.contains("MiB sent"),
        "no progress on a terminal: {shown}"
    );
    let piped = Command::new("sh")
        .args(["-c", &command(&rx)])
        .output()
        .expect("run snapscan");
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("uploading"),
        "progress in a pipe: {stderr}"
    );
}
