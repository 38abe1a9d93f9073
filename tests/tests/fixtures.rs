//! Every fixture in `snapscan_tests::images::catalogue()`, built and checked with independent
//! tools rather than snapscan's own parsers: `sfdisk -J` and `sgdisk -v` for the partition
//! table, `blkid -p --offset --size` for each volume's type and label, and for OS roots a
//! read-only kernel mount (ntfs-3g for NTFS; LVM located with `lvs` on a read-only loop device)
//! in which the release files, host name and a system binary's ELF or PE header are read.
//!
//! Each test prints how long its fixture took to get (a first build, or a cache hit) and its
//! apparent and allocated size. Fixtures that need root are skipped with a note when not root,
//! and so are the OS checks (they mount).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use snapscan_tests::images::cmd::{run, tool};
use snapscan_tests::images::guard::{LoopDevice, Mount, NtfsMount};
use snapscan_tests::images::{catalogue, debian_root, fixture, image, is_root, Expect, ExpectOs};

macro_rules! fixture_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*
        /// The fixtures that have a test here.
        const TESTED: &[&str] = &[$($name),*];
    };
}

fixture_tests! {
    debian_ext4_gpt => "debian-ext4-gpt",
    debian_ext4_gpt_64g => "debian-ext4-gpt-64g",
    debian_xfs_mbr => "debian-xfs-mbr",
    debian_btrfs => "debian-btrfs",
    debian_lvm => "debian-lvm",
    debian_lvm_multiseg => "debian-lvm-multiseg",
    debian_logical => "debian-logical",
    whole_disk_ext4 => "whole-disk-ext4",
    rhel9 => "rhel9",
    centos7_legacy => "centos7-legacy",
    alpine => "alpine",
    sles15 => "sles15",
    suse_legacy => "suse-legacy",
    ubuntu_lsb => "ubuntu-lsb",
    luks => "luks",
    windows_server_2022 => "windows-server-2022",
    windows_11 => "windows-11",
    windows_real_hives => "windows-real-hives",
    vfat_data => "vfat-data",
    exfat_data => "exfat-data",
    ntfs_data => "ntfs-data",
    dirty_ext4 => "dirty-ext4",
    dirty_xfs => "dirty-xfs",
    rhel9_rpm_sqlite => "rhel9-rpm-sqlite",
    rhel7_rpm_bdb => "rhel7-rpm-bdb",
    rhel9_rpm_xfs => "rhel9-rpm-xfs",
    rhel9_rpm_btrfs_subvol => "rhel9-rpm-btrfs-subvol",
    empty => "empty",
}

#[test]
fn every_fixture_has_a_test() {
    let names: Vec<&str> = catalogue().iter().map(|f| f.name).collect();
    assert_eq!(names, TESTED, "catalogue and tests disagree");
}

#[test]
fn catalogue_is_consistent() {
    for f in catalogue() {
        let e = &f.expect;
        assert!(!e.volumes.is_empty(), "{}: no volumes", f.name);
        if e.partition_table == "none" {
            assert_eq!(e.volumes.len(), 1, "{}: a whole-disk volume", f.name);
        }
        let with_os: Vec<usize> = (0..e.volumes.len())
            .filter(|&i| e.volumes[i].has_os)
            .collect();
        match &e.os {
            Some(os) => assert_eq!(with_os, [os.volume], "{}: has_os and os.volume", f.name),
            None => assert!(with_os.is_empty(), "{}: has_os without an os", f.name),
        }
    }
}

#[test]
fn concurrent_requests_build_once() {
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| image("empty").unwrap_or_else(|e| panic!("{e:#}"))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a builder thread panicked"))
            })
            .collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]), "{paths:?}");
    let len = fs::metadata(&paths[0]).map(|m| m.len()).unwrap_or(0);
    assert_eq!(len, 4 * 1024 * 1024);
}

#[test]
fn debian_tree_is_real() {
    if !is_root() {
        snapscan_tests::skip("debootstrap needs root");
        return;
    }
    let root = debian_root().unwrap_or_else(|e| panic!("{e:#}"));
    let os_release = read_in_root(&root, "/etc/os-release").expect("etc/os-release");
    assert!(os_release.contains("ID=debian"), "{os_release}");
    assert!(os_release.contains("VERSION_ID=\"12\""), "{os_release}");
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname"))
            .ok()
            .as_deref(),
        Some("debian-fixture\n")
    );
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).expect("dpkg status");
    assert!(
        status.matches("\nPackage: ").count() > 50,
        "too few packages"
    );
    assert!(root.join("usr/bin/dpkg").is_file());
}

/// Build (or fetch) fixture `name` and check it.
fn check(name: &str) {
    let f = fixture(name).unwrap_or_else(|| panic!("no fixture {name}"));
    if f.needs_root && !is_root() {
        snapscan_tests::skip(&format!("{name}: needs root"));
        return;
    }
    let start = Instant::now();
    let path = image(name).unwrap_or_else(|e| panic!("{e:#}"));
    let took = start.elapsed();
    let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!(
        "fixture {name}: {:.1} s, {} MiB apparent, {:.1} MiB allocated ({})",
        took.as_secs_f64(),
        meta.len() / (1024 * 1024),
        (meta.blocks() * 512) as f64 / (1024.0 * 1024.0),
        path.display()
    );
    let again = Instant::now();
    assert_eq!(image(name).ok().as_deref(), Some(path.as_path()));
    assert!(
        again.elapsed().as_millis() < 1000,
        "cache hit took {:?}",
        again.elapsed()
    );

    let ranges = check_table(&path, &f.expect);
    for (i, (volume, &(start, size))) in f.expect.volumes.iter().zip(&ranges).enumerate() {
        let (kind, label) = blkid(&path, start, size);
        assert_eq!(kind, volume.filesystem, "{name}: volume {i} type");
        assert_eq!(label.as_deref(), volume.label, "{name}: volume {i} label");
    }
    if let Some(os) = &f.expect.os {
        if !is_root() {
            eprintln!("note: {name}: OS files not checked (mounting needs root)");
            return;
        }
        let (start, size) = ranges[os.volume];
        let kind = f.expect.volumes[os.volume].filesystem;
        check_os(name, &path, start, size, kind, os);
    }
}

/// Check the partition table with sfdisk and sgdisk; the (start, size) in bytes of each volume.
fn check_table(path: &Path, expect: &Expect) -> Vec<(u64, u64)> {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if expect.partition_table == "none" {
        let table = run(tool("sfdisk").arg("-J").arg(path), None);
        assert!(table.is_err(), "unexpected table: {table:?}");
        return vec![(0, len)];
    }
    let json = run(tool("sfdisk").arg("-J").arg(path), None).unwrap_or_else(|e| panic!("{e:#}"));
    let json: serde_json::Value = serde_json::from_str(&json).expect("sfdisk -J output is JSON");
    let table = &json["partitiontable"];
    let label = table["label"].as_str().unwrap_or_default();
    let want = if expect.partition_table == "mbr" {
        "dos"
    } else {
        "gpt"
    };
    assert_eq!(label, want, "table type");
    if label == "gpt" {
        let verify =
            run(tool("sgdisk").arg("--verify").arg(path), None).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            verify.contains("No problems found"),
            "sgdisk --verify: {verify}"
        );
    }
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let ranges: Vec<(u64, u64)> = table["partitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        // The extended container is not a volume.
        .filter(|p| !matches!(p["type"].as_str(), Some("5" | "f" | "85")))
        .map(|p| {
            let start = p["start"].as_u64().unwrap_or_default();
            let size = p["size"].as_u64().unwrap_or_default();
            (start * sector, size * sector)
        })
        .collect();
    assert_eq!(ranges.len(), expect.volumes.len(), "partitions: {table}");
    for &(start, size) in &ranges {
        assert!(
            start % (1024 * 1024) == 0 && start + size <= len,
            "range {start}+{size}"
        );
    }
    ranges
}

/// `blkid -p` on a byte range: (TYPE lowercased, or "unknown"; LABEL).
fn blkid(path: &Path, start: u64, size: u64) -> (String, Option<String>) {
    let out = tool("blkid")
        .args(["-p", "-o", "export", "--offset"])
        .arg(start.to_string())
        .arg("--size")
        .arg(size.to_string())
        .arg(path)
        .output()
        .expect("run blkid");
    // Exit status 2: nothing recognised.
    if out.status.code() == Some(2) {
        return ("unknown".into(), None);
    }
    assert!(
        out.status.success(),
        "blkid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.replace('\\', ""))
    };
    let kind = field("TYPE").map(|t| t.to_lowercase());
    (kind.unwrap_or_else(|| "unknown".into()), field("LABEL"))
}

/// Mount the OS volume read-only and check what detection will read there.
fn check_os(name: &str, path: &Path, start: u64, size: u64, kind: &str, os: &ExpectOs) {
    let dir = tempfile::tempdir().expect("mount point");
    let lo = LoopDevice::attach(path, start, Some(size), true).unwrap_or_else(|e| panic!("{e:#}"));
    match kind {
        "ntfs" => {
            let mount =
                NtfsMount::new(lo.path(), dir.path(), true).unwrap_or_else(|e| panic!("{e:#}"));
            check_windows(name, mount.target(), os);
            mount.unmount().unwrap_or_else(|e| panic!("{e:#}"));
        }
        "lvm2_member" => {
            let (offset, len) = lvm_root(&lo);
            let inner = LoopDevice::attach(path, start + offset, Some(len), true)
                .unwrap_or_else(|e| panic!("{e:#}"));
            let (kind, _) = blkid(path, start + offset, len);
            let mount = mount_ro(inner.path(), dir.path(), &kind);
            check_linux(name, mount.target(), os);
            mount.unmount().unwrap_or_else(|e| panic!("{e:#}"));
            inner.detach().unwrap_or_else(|e| panic!("{e:#}"));
        }
        fs_kind => {
            let mut mount = mount_ro(lo.path(), dir.path(), fs_kind);
            if fs_kind == "btrfs" && !mount.target().join("etc").exists() {
                // Fedora's layout: the system is the subvolume `root`.
                mount.unmount().unwrap_or_else(|e| panic!("{e:#}"));
                mount = Mount::new(lo.path(), dir.path(), "btrfs", "ro,subvol=root")
                    .unwrap_or_else(|e| panic!("{e:#}"));
            }
            check_linux(name, mount.target(), os);
            mount.unmount().unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
    lo.detach().unwrap_or_else(|e| panic!("{e:#}"));
}

fn mount_ro(dev: &Path, dir: &Path, kind: &str) -> Mount {
    let options = match kind {
        "ext4" => "ro,noload",
        // nouuid: another test may have the same image mounted at the same time.
        "xfs" => "ro,norecovery,nouuid",
        _ => "ro",
    };
    Mount::new(dev, dir, kind, options).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Offset and length within the PV of LV `root`, as LVM itself reports them.
fn lvm_root(pv: &LoopDevice) -> (u64, u64) {
    let conf = tempfile::tempdir().expect("lvm config dir");
    let config = format!(
        "devices {{ use_devicesfile=0 filter=[\"a|^{}$|\",\"r|.*|\"] }} backup {{ backup=0 archive=0 }}",
        pv.path().display()
    );
    let lvm = |sub: &str, fields: &str| {
        let mut cmd = tool(sub);
        cmd.env("LVM_SYSTEM_DIR", conf.path())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .args([
                "--config",
                &config,
                "--readonly",
                "--noheadings",
                "--units",
                "b",
            ])
            .args(["--nosuffix", "--separator", ";", "-o", fields]);
        cmd
    };
    let pvs = run(&mut lvm("pvs", "vg_name,pe_start,vg_extent_size"), None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pvs: Vec<&str> = pvs.trim().split(';').collect();
    assert_eq!(pvs[0], "vg0", "VG name");
    let pe_start: u64 = pvs[1].parse().expect("pe_start");
    let extent: u64 = pvs[2].parse().expect("extent size");
    let mut cmd = lvm("lvs", "lv_name,seg_pe_ranges,seg_size_pe");
    let lvs = run(cmd.arg("--segments"), None).unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = lvs
        .lines()
        .filter_map(|l| l.trim().split(';').next())
        .collect();
    assert_eq!(names, ["root", "swap"], "LVs: {lvs}");
    let root: Vec<&str> = lvs
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("root;"))
        .expect("LV root")
        .split(';')
        .collect();
    let first: u64 = root[1]
        .rsplit(':')
        .next()
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .expect("PE range");
    let count: u64 = root[2].parse().expect("segment size");
    (pe_start + first * extent, count * extent)
}

/// Resolve `path` inside `root` as the guest would: absolute symlink targets start at `root`,
/// `..` stops there.
fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut at: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        let here: PathBuf = at
            .iter()
            .fold(root.to_owned(), |p, c| p.join(c))
            .join(&part);
        let meta = fs::symlink_metadata(&here).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = fs::read_link(&here).ok()?;
            if target.is_absolute() {
                at.clear();
            }
            for c in target.components().rev() {
                if let Component::Normal(c) = c {
                    todo.push(c.to_string_lossy().into_owned());
                } else if c == Component::ParentDir {
                    todo.push("..".into());
                }
            }
        } else {
            at.push(part);
        }
    }
    Some(at.iter().fold(root.to_owned(), |p, c| p.join(c)))
}

fn read_in_root(root: &Path, path: &str) -> Option<String> {
    fs::read_to_string(resolve_in_root(root, path)?).ok()
}

fn check_linux(name: &str, root: &Path, os: &ExpectOs) {
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| read_in_root(root, p));
    match os_release {
        Some(text) => {
            let value = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_owned())
            };
            assert_eq!(value("ID").as_deref(), Some(os.id), "{name}: ID");
            assert_eq!(
                value("VERSION_ID").as_deref(),
                os.version_id,
                "{name}: VERSION_ID"
            );
            assert_eq!(value("PRETTY_NAME"), os.pretty_name, "{name}: PRETTY_NAME");
        }
        None => {
            let legacy = [
                "/etc/centos-release",
                "/etc/redhat-release",
                "/etc/SuSE-release",
                "/etc/alpine-release",
                "/etc/lsb-release",
            ]
            .iter()
            .find_map(|p| read_in_root(root, p))
            .unwrap_or_else(|| panic!("{name}: no release file"));
            let version = os.version_id.unwrap_or_default();
            let major = version.split('.').next().unwrap_or_default();
            assert!(
                legacy.contains(major),
                "{name}: {version} not in {legacy:?}"
            );
        }
    }
    if let Some(host) = os.hostname {
        let found = ["/etc/hostname", "/etc/HOSTNAME", "/etc/sysconfig/network"]
            .iter()
            .filter_map(|p| read_in_root(root, p))
            .any(|t| {
                t.lines()
                    .any(|l| l.trim().trim_start_matches("HOSTNAME=") == host)
            });
        assert!(found, "{name}: hostname {host} not found");
    }
    if let Some(arch) = os.arch {
        let machine = ["/usr/bin/bash", "/bin/bash", "/bin/sh", "/bin/busybox"]
            .iter()
            .filter_map(|p| fs::read(resolve_in_root(root, p)?).ok())
            .find(|b| b.starts_with(b"\x7fELF"))
            .map(|b| u16::from_le_bytes([b[18], b[19]]))
            .unwrap_or_else(|| panic!("{name}: no ELF system binary"));
        let want = match arch {
            "x86_64" => 62,
            "aarch64" => 183,
            other => panic!("unknown arch {other}"),
        };
        assert_eq!(machine, want, "{name}: e_machine");
    }
}

fn check_windows(name: &str, root: &Path, os: &ExpectOs) {
    let config = root.join("Windows/System32/config");
    let software = config.join("SOFTWARE");
    let system = config.join("SYSTEM");
    assert!(
        software.is_file() && system.is_file(),
        "{name}: hives missing"
    );
    let cmd_exe = fs::read(root.join("Windows/System32/cmd.exe")).expect("cmd.exe");
    let pe = usize::try_from(u32::from_le_bytes([
        cmd_exe[0x3c],
        cmd_exe[0x3d],
        cmd_exe[0x3e],
        cmd_exe[0x3f],
    ]))
    .expect("e_lfanew");
    assert_eq!(&cmd_exe[pe..pe + 4], b"PE\0\0", "{name}: PE signature");
    assert_eq!(
        u16::from_le_bytes([cmd_exe[pe + 4], cmd_exe[pe + 5]]),
        0x8664,
        "{name}: cmd.exe machine"
    );
    if Command::new("hivexget").arg("--help").output().is_err() {
        eprintln!("note: hivexget not found (libhivex-bin); registry values not checked");
        return;
    }
    let get = |hive: &Path, key: &str, value: &str| {
        run(tool("hivexget").arg(hive).arg(key).arg(value), None)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    let build = get(
        &software,
        r"Microsoft\Windows NT\CurrentVersion",
        "CurrentBuild",
    );
    assert_eq!(
        Some(build.as_str()),
        os.build.and_then(|b| b.split('.').next()),
        "{name}: CurrentBuild"
    );
    let host = get(
        &system,
        r"ControlSet001\Services\Tcpip\Parameters",
        "Hostname",
    );
    assert_eq!(Some(host.as_str()), os.hostname, "{name}: Hostname");
}

/// A fill that fails (the tree does not fit) must leave no mount and no loop device behind.
#[test]
fn failed_fill_leaves_nothing_mounted() {
    use snapscan_tests::images::fs::{build_fs, FsKind};
    use snapscan_tests::images::guard::mount_points;
    if !is_root() {
        snapscan_tests::skip("filling xfs and ntfs needs root");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let work_path = fs::canonicalize(work.path()).expect("canonical temp dir");
    let root = work_path.join("root");
    fs::create_dir(&root).expect("root dir");
    let chunk = vec![0xa5u8; 1024 * 1024];
    let mut big = Vec::with_capacity(320 * chunk.len());
    for _ in 0..320 {
        big.extend_from_slice(&chunk);
    }
    fs::write(root.join("too-big.bin"), &big).expect("big file");
    const MIB: u64 = 1024 * 1024;
    for (kind, size) in [(FsKind::Ntfs, 16 * MIB), (FsKind::Xfs, 300 * MIB)] {
        let out = work_path.join(format!("{kind:?}.fs"));
        let err = build_fs(kind, size, Some("full"), Some(&root), &out)
            .expect_err("a 320 MiB file cannot fit");
        eprintln!("{kind:?} failed as it should: {err:#}");
        let mounted: Vec<PathBuf> = mount_points()
            .expect("mountinfo")
            .into_iter()
            .filter(|p| p.starts_with(&work_path))
            .collect();
        assert!(mounted.is_empty(), "{kind:?} left mounts: {mounted:?}");
        let loops = run(tool("losetup").arg("--associated").arg(&out), None)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            loops.trim().is_empty(),
            "{kind:?} left loop devices: {loops}"
        );
    }
}
