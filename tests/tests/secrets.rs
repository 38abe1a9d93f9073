//! Credentials planted in URLs (userinfo, secret query parameters; URLs that parse and URLs
//! that do not) never reach any output of a run: stdout, stderr (debug logging on), the
//! results directory (`report.json` included), `config check`.
//!
//! Not here: the scanner's environment secrets (`tests/tests/scanner.rs`), the QFlow token
//! (`tests/tests/upload.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every planted secret carries this marker, so one search finds any of them.
const MARK: &str = "PLANTED";

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-mini.img")
}

/// An address nothing listens on: every request fails at connect, with the URL in the error.
fn dead_url(n: u32) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    format!(
        "http://scan-user:{MARK}pw{n}@127.0.0.1:{port}/upload?token={MARK}tok{n}&sig={MARK}sig{n}"
    )
}

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new(extra: &str) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), "tok-not-in-a-url\n").expect("token");
        let config = format!(
            "[scan]\nwork_dir = \"{work}\"\nresults_dir = \"{results}\"\n\
             [upload.qflow]\ntoken_file = \"{token}\"\n\
             [upload.qflow.retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\n{extra}",
            work = dir.path().join("work").display(),
            results = dir.path().join("results").display(),
            token = dir.path().join("token").display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("config");
        Run { dir }
    }

    /// `snapscan CMD --config FILE ARGS`, debug logging on.
    fn snapscan(&self, cmd: &[&str], args: &[&str]) -> Output {
        Command::new(snapscan_tests::snapscan_bin())
            .args(cmd)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(args)
            .env("SNAPSCAN_LOG", "debug")
            .output()
            .expect("run snapscan")
    }

    /// Fail if stdout, stderr or any file the run left in its directory holds a secret.
    fn assert_clean(&self, what: &str, out: &Output) {
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains(MARK),
                "{what}: a secret on {stream}:\n{text}"
            );
        }
        for file in files(self.dir.path()) {
            if file.ends_with("config.toml") {
                continue;
            }
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(MARK),
                "{what}: a secret in {}",
                file.display()
            );
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files(&p));
        } else {
            found.push(p);
        }
    }
    found
}

#[test]
fn a_scan_whose_upload_fails_prints_no_credentials() {
    let run = Run::new("");
    let url = dead_url(1);
    let sample = sample();
    let out = run.snapscan(
        &["scan"],
        &["--upload", &url, sample.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upload?token=***&sig=***"),
        "the URL is named, redacted: {stderr}"
    );
    run.assert_clean("failed upload", &out);
}

#[test]
fn urls_that_do_not_parse_are_redacted_too() {
    let run = Run::new("");
    let bad = format!("https://u:{MARK}pw@host: 80/?key={MARK}key");
    let sample = sample();
    let out = run.snapscan(
        &["scan"],
        &["--upload", &bad, sample.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid QFlow URL"));
    run.assert_clean("unparseable scan --upload", &out);

    let out = run.snapscan(&["upload"], &["--upload", &bad, "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    run.assert_clean("unparseable upload --upload", &out);
}

#[test]
fn config_check_and_upload_print_no_credentials() {
    let run = Run::new("[upload]\nsink = \"qflow\"\n");
    let config = run.dir.path().join("config.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    let url = dead_url(2);
    let text = text.replace(
        "[upload.qflow]\n",
        &format!("[upload.qflow]\nurl = \"{url}\"\n"),
    );
    std::fs::write(&config, text).expect("config");

    let out = run.snapscan(&["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("***@127.0.0.1"));
    run.assert_clean("config check", &out);

    let out = run.snapscan(&["upload"], &["/etc/hostname"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    run.assert_clean("failed upload", &out);
}
