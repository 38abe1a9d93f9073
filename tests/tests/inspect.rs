//! `snapscan inspect` end to end: every fixture disk of the catalogue, built by real tools, is
//! inspected by the real binary, and its JSON must say what the builder put on the disk.
//!
//! Inspect reads ext2/3/4 and NTFS natively and does not open XFS, Btrfs or LVM (the scan
//! pipeline mounts those), so for an OS root on one of those the expected report has the volume
//! but no OS.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use snapscan_tests::images::{self, Fixture};

/// Run `snapscan inspect --json` on one disk and parse its output.
pub fn inspect_json(path: &Path) -> Value {
    let out = Command::new(snapscan_tests::snapscan_bin())
        .args(["inspect", "--json"])
        .arg(path)
        .output()
        .expect("run snapscan");
    assert!(
        out.status.success(),
        "snapscan inspect {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn natively_read(filesystem: &str) -> bool {
    matches!(filesystem, "ext2" | "ext3" | "ext4" | "ntfs")
}

/// Compare one fixture's report with its expectation; returns the mismatches.
fn check(f: &Fixture) -> Vec<String> {
    let path = match images::image(f.name) {
        Ok(p) => p,
        Err(e) => return vec![format!("cannot build: {e:#}")],
    };
    let r = inspect_json(&path);
    let mut bad = Vec::new();
    let mut eq = |what: String, got: &Value, want: Value| {
        if *got != want {
            bad.push(format!("{what}: got {got}, want {want}"));
        }
    };
    eq(
        "partition_table".into(),
        &r["partition_table"],
        f.expect.partition_table.into(),
    );
    eq("error".into(), &r["error"], Value::Null);
    let empty = Vec::new();
    let vols = r["volumes"].as_array().unwrap_or(&empty);
    eq(
        "volume count".into(),
        &vols.len().into(),
        f.expect.volumes.len().into(),
    );
    for (i, (got, want)) in vols.iter().zip(&f.expect.volumes).enumerate() {
        eq(format!("volume {i} index"), &got["index"], i.into());
        eq(
            format!("volume {i} filesystem"),
            &got["filesystem"],
            want.filesystem.into(),
        );
        eq(
            format!("volume {i} label"),
            &got["label"],
            want.label.into(),
        );
        eq(format!("volume {i} error"), &got["error"], Value::Null);
        let has_os = want.has_os && natively_read(want.filesystem);
        eq(
            format!("volume {i} has an OS"),
            &(!got["os"].is_null()).into(),
            has_os.into(),
        );
    }
    let os = f.expect.os.as_ref().filter(|os| {
        f.expect
            .volumes
            .get(os.volume)
            .is_some_and(|v| natively_read(v.filesystem))
    });
    match os {
        None => eq("os".into(), &r["os"], Value::Null),
        Some(os) => {
            let got = &r["os"];
            eq("os.family".into(), &got["family"], os.family.into());
            eq("os.id".into(), &got["id"], os.id.into());
            eq(
                "os.version_id".into(),
                &got["version_id"],
                os.version_id.into(),
            );
            eq(
                "os.pretty_name".into(),
                &got["pretty_name"],
                os.pretty_name.clone().into(),
            );
            eq("os.hostname".into(), &got["hostname"], os.hostname.into());
            eq("os.arch".into(), &got["arch"], os.arch.into());
            eq("os.volume".into(), &got["volume"], os.volume.into());
            if os.family == "windows" {
                eq("os.name".into(), &got["name"], os.name.into());
                eq("os.build".into(), &got["build"], os.build.into());
            }
        }
    }
    // Reads only what it needs: a few MiB whatever the disk size.
    let read = r["bytes_read"].as_u64().unwrap_or(u64::MAX);
    if read > 8 << 20 {
        bad.push(format!("read {read} bytes, more than 8 MiB"));
    }
    bad
}

#[test]
fn every_fixture_is_inspected_right() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in images::catalogue() {
        if f.needs_root && !images::is_root() {
            eprintln!("skipped {}: building it needs root", f.name);
            continue;
        }
        checked += 1;
        for problem in check(&f) {
            failures.push(format!("{} ({}): {problem}", f.name, f.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 0, "no fixture could be checked");
}

#[test]
fn the_committed_sample_is_a_debian_disk() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-mini.img");
    let r = inspect_json(&sample);
    assert_eq!(r["partition_table"], "gpt");
    assert_eq!(r["os"]["id"], "debian");
    assert_eq!(r["os"]["version_id"], "12");
    assert_eq!(r["os"]["hostname"], "sample-vm");
    assert_eq!(r["os"]["arch"], "x86_64");
    assert_eq!(r["os"]["volume"], 1);
}

#[test]
fn several_paths_one_line_each_and_failures_counted() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-mini.img");
    let out = Command::new(snapscan_tests::snapscan_bin())
        .args(["inspect", "--json"])
        .arg(&sample)
        .arg("/nonexistent/disk.img")
        .arg(&sample)
        .output()
        .expect("run snapscan");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a path that cannot be opened fails the run"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        2,
        "the readable disks are still reported: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line per failure: {stderr}");
    assert!(
        stderr.starts_with("error: failed to open '/nonexistent/disk.img'"),
        "{stderr}"
    );
}
