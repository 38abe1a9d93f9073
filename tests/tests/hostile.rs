//! Broken and hostile disks: `snapscan inspect` must report what it can, put the damage in the
//! affected volume's `error`, exit 0 because the disk itself was readable, never panic, never
//! hang, and never resolve a path outside the volume.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use snapscan_tests::images::cmd::{run, tool};
use snapscan_tests::images::{self, is_root};

/// Run `snapscan inspect --json`; assert exit 0, nothing on stderr, and a bounded run time.
fn inspect_ok(path: &Path) -> Value {
    let started = Instant::now();
    let out = Command::new(snapscan_tests::snapscan_bin())
        .args(["inspect", "--json", "--volume-timeout-secs", "10"])
        .arg(path)
        .output()
        .expect("run snapscan");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    assert!(
        stderr.is_empty(),
        "a readable disk prints nothing on stderr: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for patching");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("patch");
}

/// A sparse copy of a fixture image in `dir`.
fn copy_of(fixture: &str, dir: &Path) -> PathBuf {
    let src = images::image(fixture).expect("fixture");
    let dst = dir.join(format!("{fixture}.img"));
    run(tool("cp").arg("--sparse=always").arg(&src).arg(&dst), None).expect("copy");
    dst
}

/// An ext4 filesystem without metadata checksums (so a patched field reaches the parser
/// instead of failing the superblock checksum) holding `root`.
fn ext4_without_csum(root: &Path, out: &Path) {
    images::fs::sparse_file(out, 16 << 20).expect("sparse file");
    run(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-O", "^metadata_csum", "-L", "hostile", "-d"])
            .arg(root)
            .arg(out),
        None,
    )
    .expect("mkfs.ext4");
}

fn debian_like_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .expect("write");
    std::fs::write(root.join("etc/hostname"), "victim\n").expect("write");
    root
}

#[test]
fn random_bytes_are_an_unknown_volume() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("random.img");
    // A fixed xorshift stream: the same "random" disk on every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(&path, bytes).expect("write");
    let r = inspect_ok(&path);
    assert_eq!(r["partition_table"], "none");
    assert_eq!(r["volumes"][0]["filesystem"], "unknown");
    assert_eq!(r["os"], Value::Null);
}

#[test]
fn a_truncated_disk_reports_the_lost_partition() {
    if !is_root() {
        snapscan_tests::skip("the Debian fixture needs root to build");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = copy_of("debian-ext4-gpt", dir.path());
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(300 << 20))
        .expect("truncate");
    let r = inspect_ok(&path);
    assert_eq!(r["partition_table"], "gpt");
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("backup GPT header unusable"),
        "{warnings}"
    );
    assert_eq!(
        r["volumes"][0]["filesystem"], "vfat",
        "the EFI partition is intact"
    );
    let err = r["volumes"][1]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("beyond the end"),
        "root partition error: {err}"
    );
    assert_eq!(r["os"], Value::Null);
}

#[test]
fn a_wiped_primary_gpt_falls_back_to_the_backup() {
    if !is_root() {
        snapscan_tests::skip("the Debian fixture needs root to build");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = copy_of("debian-ext4-gpt", dir.path());
    patch(&path, 512, &[0u8; 512]);
    let r = inspect_ok(&path);
    assert_eq!(r["partition_table"], "gpt");
    assert!(
        r["warnings"]
            .to_string()
            .contains("using the backup GPT header"),
        "{r}"
    );
    assert_eq!(r["os"]["id"], "debian", "the OS is still found: {r}");
}

#[test]
fn patched_ext4_superblock_fields_are_volume_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = debian_like_root(dir.path());
    // Superblock at 1024; offsets from the ext4 disk-layout documentation. `true`: the damage
    // must be reported; `false`: the parser does not use the field and still reads the files.
    let cases: [(&str, u64, &[u8], bool); 6] = [
        ("s_inodes_count = 0", 1024, &[0, 0, 0, 0], false),
        ("s_blocks_per_group = 0", 1024 + 0x20, &[0, 0, 0, 0], true),
        (
            "s_inodes_per_group huge",
            1024 + 0x28,
            &[0xff, 0xff, 0xff, 0x7f],
            false,
        ),
        ("s_inode_size = 3", 1024 + 0x58, &[3, 0], true),
        ("s_log_block_size = 40", 1024 + 0x18, &[40, 0, 0, 0], true),
        (
            "s_first_data_block beyond the end",
            1024 + 0x14,
            &[0xff, 0xff, 0xff, 0x0f],
            true,
        ),
    ];
    for (name, offset, bytes, reported) in cases {
        let path = dir.path().join("ext4.img");
        ext4_without_csum(&root, &path);
        patch(&path, offset, bytes);
        let r = inspect_ok(&path);
        let v = &r["volumes"][0];
        if reported {
            let damaged = !v["error"].is_null() || v["filesystem"] == "unknown";
            assert!(damaged, "case {name}: damage not reported: {v}");
            assert_eq!(r["os"], Value::Null, "case {name}");
        } else {
            assert_eq!(v["error"], Value::Null, "case {name}: {v}");
            assert_eq!(r["os"]["hostname"], "victim", "case {name}: {r}");
        }
    }
}

#[test]
fn a_zeroed_inode_table_is_a_volume_error_not_a_crash() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = debian_like_root(dir.path());
    let path = dir.path().join("ext4.img");
    ext4_without_csum(&root, &path);
    // Find the first inode table with dumpe2fs and wipe its first blocks (the root inode).
    let info = run(tool("dumpe2fs").arg(&path), None).expect("dumpe2fs");
    let block_size: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("block size");
    let table: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Inode table at "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("inode table");
    patch(
        &path,
        table * block_size,
        &vec![0xA5u8; 4 * block_size as usize],
    );
    let r = inspect_ok(&path);
    let err = r["volumes"][0]["error"].as_str().unwrap_or_default();
    assert!(!err.is_empty(), "a wiped root inode is reported: {r}");
    assert_eq!(r["os"], Value::Null);
}

#[test]
fn symlinks_never_leave_the_volume() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("root");
    for d in ["etc", "usr/lib", "usr/bin", "real"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    // os-release climbs far above the root: in the volume, `..` stops at the root.
    std::fs::write(root.join("real/os-release"), "ID=inside\nVERSION_ID=1\n").expect("write");
    symlink(
        "../../../../../../../../real/os-release",
        root.join("etc/os-release"),
    )
    .expect("ln");
    // The host name is an absolute link: it resolves against the volume's root, not the host's.
    std::fs::write(root.join("real/hostname"), "in-volume\n").expect("write");
    symlink("/../../real/hostname", root.join("etc/hostname")).expect("ln");
    // The host's /etc/shadow must not be read through an absolute link.
    symlink("/etc/shadow", root.join("etc/HOSTNAME")).expect("ln");
    // Loops: arch probes through a self-loop and a two-link loop end as "not found".
    symlink("bash", root.join("usr/bin/bash")).expect("ln");
    symlink("../usr/bin/sh2", root.join("usr/bin/sh1")).expect("ln");
    symlink("sh1", root.join("usr/bin/sh2")).expect("ln");
    symlink("usr/bin/sh1", root.join("bin")).expect("ln");
    let path = dir.path().join("links.img");
    ext4_without_csum(&root, &path);
    let r = inspect_ok(&path);
    let os = &r["os"];
    assert_eq!(os["id"], "inside", "{r}");
    assert_eq!(os["hostname"], "in-volume", "{r}");
    assert_eq!(
        os["arch"],
        Value::Null,
        "no binary reachable, loops end: {r}"
    );
    assert_eq!(r["volumes"][0]["error"], Value::Null);
}

#[test]
fn a_corrupt_ntfs_root_directory_costs_that_volume_only() {
    if !is_root() {
        snapscan_tests::skip("the Windows fixture needs root to build");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = copy_of("windows-11", dir.path());
    let r = inspect_ok(&path);
    let ntfs = &r["volumes"][2];
    let start = ntfs["start_bytes"].as_u64().expect("start");
    // Boot sector: bytes per sector at 0x0b, sectors per cluster at 0x0d, $MFT cluster at 0x30.
    let boot = std::fs::read(&path).expect("read")[start as usize..start as usize + 512].to_vec();
    let sector = u64::from(u16::from_le_bytes([boot[0x0b], boot[0x0c]]));
    let cluster = sector * u64::from(boot[0x0d]);
    let mft = u64::from_le_bytes(boot[0x30..0x38].try_into().expect("8 bytes")) * cluster;
    // Record 5 is the root directory; records are 1 KiB here (mkntfs' default).
    patch(&path, start + mft + 5 * 1024, &[0x5Au8; 1024]);
    let r = inspect_ok(&path);
    assert_eq!(
        r["volumes"][0]["filesystem"], "vfat",
        "other volumes are still inspected"
    );
    let err = r["volumes"][2]["error"].as_str().unwrap_or_default();
    assert!(
        !err.is_empty(),
        "the damage is reported on the NTFS volume: {r}"
    );
    assert_eq!(r["os"], Value::Null);
}
