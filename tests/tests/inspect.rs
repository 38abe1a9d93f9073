//! `snapscan inspect` end to end: every fixture disk of the catalogue, built by real tools, is
//! inspected by the real binary, and its JSON must say what the builder put on the disk.
//!
//! Inspect reads ext2/3/4 and NTFS natively and does not open XFS or Btrfs (the scan pipeline
//! mounts those), so for an OS root on one of those the expected report has the volume but no
//! OS. It reads LVM natively: the logical volumes of a fixture's VGs follow the partitions, and
//! an OS root inside an LV is found there.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use snapscan_tests::images::{self, ExpectOs, Fixture};
use snapscan_tests::inspect_json;

/// Run `snapscan inspect` (text) on one disk.
fn inspect_text(path: &Path) -> String {
    let out = Command::new(snapscan_tests::snapscan_bin())
        .arg("inspect")
        .arg(path)
        .output()
        .expect("run snapscan");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn natively_read(filesystem: &str) -> bool {
    matches!(
        filesystem,
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "ntfs"
    )
}

/// Compare one fixture's report with its expectation; returns the mismatches.
fn check(f: &Fixture) -> Vec<String> {
    let path = match images::image(f.name) {
        Ok(p) => p,
        Err(e) => return vec![format!("cannot build: {e:#}")],
    };
    let r = inspect_json(&path);
    let mut bad = Vec::new();
    let text = inspect_text(&path);
    if f.expect.os.is_some() && text.contains("none found") {
        bad.push(format!("a disk with an OS says none found:\n{text}"));
    }
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
    // The partitions, then the logical volumes: (filesystem, label, has_os, LV).
    let parts = f.expect.volumes.iter().map(|v| {
        // An LVM PV's OS is inside one of its LVs, never on the PV itself.
        let has_os = v.has_os && v.filesystem != "lvm2_member";
        (v.filesystem, v.label, has_os, None)
    });
    let lvs = f.expect.volumes.iter().flat_map(|v| &v.logical_volumes);
    let want: Vec<_> = parts
        .chain(lvs.map(|lv| (lv.filesystem, lv.label, lv.has_os, Some(lv))))
        .collect();
    eq("volume count".into(), &vols.len().into(), want.len().into());
    for (i, (got, &(filesystem, label, has_os, lv))) in vols.iter().zip(&want).enumerate() {
        eq(format!("volume {i} index"), &got["index"], i.into());
        eq(
            format!("volume {i} filesystem"),
            &got["filesystem"],
            filesystem.into(),
        );
        eq(format!("volume {i} label"), &got["label"], label.into());
        eq(format!("volume {i} error"), &got["error"], Value::Null);
        let has_os = has_os && natively_read(filesystem);
        eq(
            format!("volume {i} has an OS"),
            &(!got["os"].is_null()).into(),
            has_os.into(),
        );
        // A volume with contents that were not looked at says why and what would read them.
        let want_not_read = match filesystem {
            "vfat" | "exfat" => Some(format!(
                "{filesystem}: no native reader; `snapscan scan` as root mounts it"
            )),
            "crypto_luks" => Some("crypto_luks: encrypted; snapscan does not decrypt".into()),
            _ => None,
        };
        eq(
            format!("volume {i} not_read"),
            &got["not_read"],
            want_not_read.into(),
        );
        match lv {
            None => eq(format!("volume {i} lvm"), &got["lvm"], Value::Null),
            Some(lv) => {
                eq(format!("volume {i} vg"), &got["lvm"]["vg"], lv.vg.into());
                eq(format!("volume {i} lv"), &got["lvm"]["lv"], lv.name.into());
                eq(
                    format!("volume {i} segments"),
                    &got["lvm"]["segments"],
                    lv.segments.into(),
                );
                eq(
                    format!("volume {i} partition_number"),
                    &got["partition_number"],
                    Value::Null,
                );
            }
        }
    }
    // Where the OS root is in the report: its partition, or the LV holding it.
    let os_volume = |os: &ExpectOs| {
        let v = f.expect.volumes.get(os.volume)?;
        if v.filesystem == "lvm2_member" {
            want.iter()
                .position(|w| w.3.is_some_and(|lv| lv.has_os))
                .filter(|&i| natively_read(want[i].0))
        } else {
            Some(os.volume).filter(|_| natively_read(v.filesystem))
        }
    };
    let os = f
        .expect
        .os
        .as_ref()
        .and_then(|os| Some((os, os_volume(os)?)));
    match os {
        None => eq("os".into(), &r["os"], Value::Null),
        Some((os, volume)) => {
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
            eq("os.volume".into(), &got["volume"], volume.into());
            if os.family == "windows" {
                eq("os.name".into(), &got["name"], os.name.into());
                // JSON consumers read product_name as the product: Windows 11 says so.
                eq(
                    "os.product_name".into(),
                    &got["product_name"],
                    os.name.into(),
                );
                eq(
                    "os.registry_product_name".into(),
                    &got["registry_product_name"],
                    os.registry_product_name.into(),
                );
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
            snapscan_tests::skip(&format!("{}: building it needs root", f.name));
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
    // One JSON object per PATH, in order; the missing one says why.
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "one object per PATH: {lines:?}");
    assert_eq!(lines[0]["os"]["id"], "debian");
    assert_eq!(lines[1]["source"], "/nonexistent/disk.img");
    assert_eq!(
        lines[1]["error"], "'/nonexistent/disk.img' does not exist",
        "{lines:?}"
    );
    assert_eq!(lines[2]["os"]["id"], "debian");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line per failure: {stderr}");
    assert!(
        stderr.starts_with("error: '/nonexistent/disk.img' does not exist"),
        "{stderr}"
    );
}
