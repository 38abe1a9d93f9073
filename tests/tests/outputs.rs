//! What `snapscan scan` writes and says about its results can be trusted: a scan's outputs are
//! exactly what it produced (a new or empty directory of its own), the summary says where the
//! results are and whether anything was sent, `snapscan upload` re-sends a kept scan with its
//! own fields and idempotency key, and settings that cannot work stop the scan before any disk
//! is opened. Runs on the committed sample disk (as root through kernel mounts, else natively).
//!
//! Not here: the upload protocol (`tests/tests/upload.rs`), secrets in outputs
//! (`tests/tests/secrets.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use snapscan_tests::qflow::FakeQflow;
use snapscan_tests::scan_env::ScanEnv;

const TOKEN: &str = "outputs-test-token";

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-mini.img")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An environment whose QFlow token is in a file, and results go under `results/`.
fn env_with_token(extra: &str) -> ScanEnv {
    ScanEnv::with_config(|dir| {
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
        format!(
            "results_dir = \"{}\"\n{extra}\n[upload.qflow]\ntoken_file = \"{}\"\n",
            dir.join("results").display(),
            dir.join("token").display()
        )
    })
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_scan_writes_to_a_new_or_empty_directory_of_its_own() {
    let env = env_with_token("");
    // An earlier scan's file in the output directory: refused, untouched, nothing uploaded.
    std::fs::create_dir_all(env.out()).expect("out");
    std::fs::write(env.out().join("old.cdx.json"), "{}").expect("stale");
    let out = env.scan(&sample(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{}",
        text(&out)
    );
    assert_eq!(names_in(&env.out()), ["old.cdx.json"]);

    // Without --output: a new directory per scan, even two in the same second.
    let results = env.dir.path().join("results");
    for _ in 0..2 {
        let out = Command::new(snapscan_tests::snapscan_bin())
            .arg("scan")
            .arg("--config")
            .arg(env.config())
            .arg(sample())
            .output()
            .expect("run snapscan scan");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let dirs = names_in(&results);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert!(dirs[0].starts_with("debian-mini-"), "{dirs:?}");
    for dir in &dirs {
        let report: Value = serde_json::from_slice(
            &std::fs::read(results.join(dir).join("report.json")).expect("report"),
        )
        .expect("JSON");
        let outputs: Vec<&str> = report["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .filter_map(|o| o["name"].as_str())
            .collect();
        assert_eq!(outputs, ["debian-mini.cdx.json"], "{dir}: {report}");
        assert_eq!(
            names_in(&results.join(dir)),
            ["debian-mini.cdx.json", "report.json"]
        );
    }
}

#[test]
fn the_summary_says_where_the_results_are_and_that_nothing_was_sent() {
    let env = env_with_token("");
    let out = env.scan(&sample(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = std::fs::canonicalize(env.out()).expect("out");
    for line in [
        format!("report: {}", dir.join("report.json").display()),
        format!("sbom: {}", dir.join("debian-mini.cdx.json").display()),
        format!("upload: none configured; results kept in {}", dir.display()),
    ] {
        assert!(stdout.contains(&line), "no \"{line}\" in:\n{stdout}");
    }
    assert!(!stdout.contains("stored"), "{stdout}");
    assert_eq!(env.report()["sink"], Value::Null);
    // The EFI volume beside the OS root is not a failure, however it was (not) read.
    let efi = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("volume 0:"))
        .unwrap_or_else(|| panic!("no line for the EFI volume:\n{stdout}"));
    assert!(
        efi.contains("skipped") || efi.contains("mount") || efi.contains("native"),
        "{efi}"
    );
    assert!(!efi.contains("fail"), "{efi}");

    // An output directory that cannot be made: no scan, no "none found", no results path.
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "").expect("file");
    let out = Command::new(snapscan_tests::snapscan_bin())
        .arg("scan")
        .arg("--config")
        .arg(env.config())
        .arg("--output")
        .arg(file.join("sub"))
        .arg(sample())
        .output()
        .expect("run snapscan scan");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("cannot use") && all.contains("as the output directory"),
        "{all}"
    );
    assert!(
        !all.contains("none found") && !all.contains("report:"),
        "{all}"
    );

    // `snapscan upload` with nowhere to send: a usage error, not a silent success.
    let out = Command::new(snapscan_tests::snapscan_bin())
        .arg("upload")
        .arg("--config")
        .arg(env.config())
        .arg(env.out())
        .output()
        .expect("run snapscan upload");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no upload destination"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_kept_scan_is_re_sent_with_its_own_fields_and_idempotency_key() {
    let env = env_with_token("");
    let first = FakeQflow::start(TOKEN);
    let out = env.scan(
        &sample(),
        &[
            "--upload",
            &first.url(),
            "--snapshot",
            "web-1-boot",
            "--instance-id",
            "4242",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let sent = first.stored();
    assert_eq!(sent.len(), 1, "the SBOM");
    let original = &sent[0];
    assert_eq!(
        original.fields.get("snapshot_name").map(String::as_str),
        Some("web-1-boot")
    );
    assert_eq!(
        original.fields.get("os_id").map(String::as_str),
        Some("debian")
    );

    // Re-sent by directory and by report.json, to a receiver that has it and to one that
    // does not: the same fields and key each time, stored once by the one that had it.
    let second = FakeQflow::start(TOKEN);
    for (receiver, path) in [
        (&second, env.out()),
        (&first, env.out().join("report.json")),
    ] {
        let out = Command::new(snapscan_tests::snapscan_bin())
            .arg("upload")
            .arg("--config")
            .arg(env.config())
            .arg("--upload")
            .arg(receiver.url())
            .arg(&path)
            .output()
            .expect("run snapscan upload");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&out)
        );
        let last = receiver.requests().into_iter().last().expect("a request");
        assert_eq!(
            last.idempotency_key,
            original.idempotency_key,
            "{}",
            path.display()
        );
    }
    let resent = second.stored();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].fields, original.fields);
    assert_eq!(resent[0].sha256, original.sha256);
    assert_eq!(first.stored().len(), 1, "a duplicate was stored again");
}

#[test]
fn settings_that_cannot_work_stop_the_scan_before_the_disk_is_opened() {
    // The disk does not exist: a scan that got as far as opening it would exit 1 with "does
    // not exist"; a settings error is found first, exit 2, and leaves no results directory.
    let missing = Path::new("/nonexistent/disk.img");
    let cases = [
        (
            "",
            vec!["--upload", "notaurl"],
            "invalid QFlow URL 'notaurl'",
        ),
        (
            "",
            vec!["--upload", "ftp://qflow.example/up"],
            "not http or https",
        ),
        (
            "[upload]\nsink = \"qflow\"\n",
            vec![],
            "needs [upload.qflow] url",
        ),
        (
            "scanner = \"mine\"\n[scanner.profiles.mine]\ncommand = [\"/nonexistent/bin/scan\"]\n",
            vec![],
            "/nonexistent/bin/scan",
        ),
        (
            "scanner = \"mine\"\n[scanner.profiles.mine]\n\
             command = [\"/bin/true\", \"{env:SNAPSCAN_TEST_UNSET_VARIABLE}\"]\n",
            vec![],
            "SNAPSCAN_TEST_UNSET_VARIABLE",
        ),
    ];
    for (settings, args, says) in cases {
        let env = env_with_token(settings);
        let out = env.scan(missing, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{settings} {args:?}: {}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "wanted \"{says}\": {}", text(&out));
        assert!(!stderr.contains("does not exist"), "{}", text(&out));
        assert!(!env.out().exists(), "a results directory was made");
    }
}
