//! `snapscan scan` end to end, as root, on fixture disks built by real tools: the real binary
//! attaches each image through a read-only loop device, mounts its volumes read-only (or falls
//! back to the native parsers), runs the built-in inventory or a stand-in external scanner,
//! writes `report.json` and the SBOM, and uploads them. Every scan must leave the image
//! byte-identical, and no loop device, mount or work directory behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use snapscan_tests::expect::{self, sbom_triples};
use snapscan_tests::images::rpm::{self, RpmDb};
use snapscan_tests::images::{self, formats, is_root};
use snapscan_tests::scan_env::ScanEnv;
use snapscan_tests::windows::{self, WindowsFlavor};

/// Scan fixture `name` with the built-in inventory; check the image is unchanged and nothing
/// is left behind; return the report and the SBOM.
fn scan_fixture(name: &str, env: &ScanEnv, args: &[&str]) -> (Value, Value, Output) {
    let image = images::image(name).expect("fixture");
    let before = expect::sha256_file(&image);
    let out = env.scan(&image, args);
    assert_eq!(
        expect::sha256_file(&image),
        before,
        "{name}: the scan changed the image"
    );
    let left = env.left_behind(&image);
    assert!(left.is_empty(), "{name}: left behind {left:?}");
    let report = env.report();
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sbom = env.sbom(&stem);
    (report, sbom, out)
}

fn assert_ok(name: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{name}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn debian_on_every_layout_lists_exactly_the_dpkg_packages() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return;
    }
    let want = expect::debian_packages();
    // (fixture, `prefer`, how the root volume is reached): debian-lvm's fstab mounts /boot from
    // another volume, so only the kernel path brings the tree together.
    let mut cases = Vec::new();
    for name in [
        "debian-ext4-gpt",
        "debian-xfs-mbr",
        "debian-btrfs",
        "debian-lvm",
        "debian-logical",
    ] {
        let native = if name == "debian-lvm" {
            "kernel"
        } else {
            "native"
        };
        cases.push((name, "native", native));
        cases.push((name, "kernel", "kernel"));
    }
    for (name, prefer, method) in cases {
        let env = ScanEnv::new(&format!("prefer = \"{prefer}\"\n"));
        let (report, sbom, out) = scan_fixture(name, &env, &[]);
        assert_ok(name, &out);
        assert_eq!(report["status"], "success", "{name}: {report}");
        if name == "debian-lvm" {
            // The root's /etc/fstab mounts the /boot partition by LABEL.
            assert_eq!(report["access"][0]["guest_path"], "/boot", "{report}");
        }
        assert_eq!(report["os"]["id"], "debian", "{name}");
        // Everything attached is detached again, a native root's open device included.
        let cleanup: Vec<_> = report["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .filter(|w| w.as_str().is_some_and(|w| w.contains("cleanup")))
            .collect();
        assert!(cleanup.is_empty(), "{name} ({prefer}): {cleanup:?}");
        let root = report["os"]["volume"].as_u64().expect("root volume");
        let access = &report["access"][usize::try_from(root).expect("index")];
        assert_eq!(access["method"], method, "{name} ({prefer}): {access}");
        assert_eq!(access["guest_path"], "/", "{name}");
        let got = sbom_triples(&sbom);
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: missing {missing:?}, extra {extra:?}"
        );
        assert_eq!(report["scanner"]["packages"], want.len(), "{name}");
        println!("{name} ({prefer}): {} packages == dpkg-query", got.len());
    }
}

#[test]
fn native_fallback_when_kernel_mounts_are_off() {
    if !is_root() {
        snapscan_tests::skip("needs root to build the image");
        return;
    }
    let env = ScanEnv::new("kernel_mounts = false\nprefer = \"kernel\"\n");
    let (report, sbom, out) = scan_fixture("debian-ext4-gpt", &env, &[]);
    assert_ok("native", &out);
    let root = report["os"]["volume"].as_u64().expect("root") as usize;
    assert_eq!(report["access"][root]["method"], "native");
    assert!(report["access"][root]["fallback_reason"]
        .as_str()
        .is_some_and(|r| r.contains("disabled")));
    assert_eq!(sbom_triples(&sbom), expect::debian_packages());
}

#[test]
fn every_os_layout_scans_with_the_right_packages() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return;
    }
    // rpm (sqlite and BerkeleyDB; on ext4, XFS and Btrfs), apk, Windows (read natively).
    for (name, db) in [
        ("rhel9-rpm-sqlite", RpmDb::Sqlite),
        ("rhel7-rpm-bdb", RpmDb::Bdb),
        ("rhel9-rpm-xfs", RpmDb::Sqlite),
        ("rhel9-rpm-btrfs-subvol", RpmDb::Sqlite),
    ] {
        let env = ScanEnv::new("");
        let (report, sbom, out) = scan_fixture(name, &env, &[]);
        assert_ok(name, &out);
        let root = rpm::rpm_root(db).expect("rpm root");
        let (want, _) = rpm::rpm_qa(&root, db).expect("rpm -qa");
        assert!(!want.is_empty(), "{name}: rpm -qa lists nothing");
        assert_eq!(sbom_triples(&sbom), want, "{name}");
        assert_eq!(report["os"]["family"], "linux", "{name}");
    }
    // Fedora's Btrfs layout through the kernel too: the top level is mounted and the system is
    // its `root` subvolume directory, as the root's fstab says.
    let env = ScanEnv::new("prefer = \"kernel\"\n");
    let (report, sbom, out) = scan_fixture("rhel9-rpm-btrfs-subvol", &env, &[]);
    assert_ok("rhel9-rpm-btrfs-subvol (kernel)", &out);
    assert_eq!(report["access"][0]["method"], "kernel", "{report}");
    let root = rpm::rpm_root(RpmDb::Sqlite).expect("rpm root");
    let (want, _) = rpm::rpm_qa(&root, RpmDb::Sqlite).expect("rpm -qa");
    assert_eq!(sbom_triples(&sbom), want, "rhel9-rpm-btrfs-subvol (kernel)");

    let env = ScanEnv::new("");
    let (report, sbom, out) = scan_fixture("alpine", &env, &[]);
    assert_ok("alpine", &out);
    assert_eq!(report["os"]["id"], "alpine");
    assert_eq!(sbom_triples(&sbom).len(), 2);

    let env = ScanEnv::new("");
    let (report, sbom, out) = scan_fixture("windows-11", &env, &[]);
    assert_ok("windows-11", &out);
    assert_eq!(report["os"]["family"], "windows");
    let root = report["os"]["volume"].as_u64().expect("root") as usize;
    assert_eq!(report["access"][root]["method"], "native", "{report}");
    let got: BTreeSet<String> = sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let want: BTreeSet<String> = windows::programs(WindowsFlavor::Windows11)
        .into_iter()
        .map(|(n, _, _)| n.to_owned())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn dirty_journals_are_not_replayed_and_nothing_is_written() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return;
    }
    for name in ["dirty-ext4", "dirty-xfs"] {
        let env = ScanEnv::new("");
        let image = images::image(name).expect("fixture");
        let before = expect::sha256_file(&image);
        let out = env.scan(&image, &[]);
        assert_eq!(expect::sha256_file(&image), before, "{name} changed");
        assert!(env.left_behind(&image).is_empty(), "{name}");
        let report = env.report();
        // No OS on these data volumes: the scan says so, and mounted them read-only.
        assert_eq!(out.status.code(), Some(1), "{name}: {report}");
        assert_eq!(report["access"][0]["method"], "kernel", "{name}: {report}");
        let opts = report["access"][0]["mount_options"]
            .as_str()
            .unwrap_or_default();
        assert!(
            opts.contains("norecovery") || opts.contains("noload"),
            "{name}: {opts}"
        );
    }
}

#[test]
fn multi_segment_lv_is_read_natively() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return;
    }
    let env = ScanEnv::new("");
    let image = images::image("debian-lvm-multiseg").expect("fixture");
    let _ = env.scan(&image, &[]);
    let report = env.report();
    let access = report["access"].as_array().expect("access");
    let lv = report["disk"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["lvm"]["lv"] == "data")
        .expect("LV data");
    let i = lv["index"].as_u64().expect("index") as usize;
    assert_eq!(access[i]["method"], "native", "{report}");
    assert!(access[i]["fallback_reason"]
        .as_str()
        .is_some_and(|r| r.contains("device-mapper")));
    assert!(env.left_behind(&image).is_empty());
}

#[test]
fn hostile_disks_fail_cleanly() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let random = dir.path().join("random.img");
    let bytes: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, bytes).expect("write");
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").expect("write");
    for image in [&random, &empty] {
        let env = ScanEnv::new("");
        let before = expect::sha256_file(image);
        let out = env.scan(image, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", image.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(expect::sha256_file(image), before);
        assert!(env.left_behind(image).is_empty());
    }
}

/// A stand-in for qscanner, written by the test: checks it got the mounted Debian root, writes
/// a result and exits with `code`; with `sleep`, waits (for the signal test).
fn stand_in(dir: &Path, code: i32, sleep: bool) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let script = bin.join("qscanner");
    let body = format!(
        "#!/bin/sh\nset -e\nmode=$1; shift\nwhile [ $# -gt 0 ]; do case $1 in\n  --mount-path) mount=$2; shift 2;;\n  --output-dir) out=$2; shift 2;;\n  *) shift;;\nesac; done\ngrep -q '^ID=debian' \"$mount/etc/os-release\"\nboot=missing; [ -e \"$mount/boot/vmlinuz-6.1.0-18-amd64\" ] && boot=ok\necho \"$mode $(cat \"$mount/etc/hostname\") boot:$boot\" > \"$out/changelist.db\"\n{}exit {code}\n",
        if sleep { "echo started > \"$out/started\"\nsleep 1000 &\nwait\n" } else { "" }
    );
    std::fs::write(&script, body).expect("script");
    let mut perm = std::fs::metadata(&script).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).expect("chmod");
    bin
}

/// A config that finds the stand-in scanners first.
fn stand_in_config(bin: &Path) -> String {
    format!(
        "scanner_search_path = [\"{}\", \"/usr/bin\", \"/bin\"]\n",
        bin.display()
    )
}

#[test]
fn external_scanner_exit_classes() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return;
    }
    let image = images::image("debian-lvm").expect("fixture");
    // (exit code of the stand-in, snapscan's exit code, report status)
    for (code, want_exit, want_status) in [(0, 0, "success"), (40, 3, "partial"), (3, 1, "failed")]
    {
        let tools = tempfile::tempdir().expect("tempdir");
        let bin = stand_in(tools.path(), code, false);
        let env = ScanEnv::new(&stand_in_config(&bin));
        let out = env.scan(&image, &["--scanner", "qscanner"]);
        let report = env.report();
        assert_eq!(out.status.code(), Some(want_exit), "exit {code}: {report}");
        // Plain words for people, no Rust enum names.
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("scanner: qscanner"), "{summary}");
        for debug in ["Success", "Partial", "Retryable", "Fatal", "Failure"] {
            assert!(
                !summary.contains(debug),
                "'{debug}' in the summary: {summary}"
            );
        }
        assert_eq!(report["status"], want_status, "exit {code}");
        assert_eq!(report["scanner"]["run"]["exit_code"], code);
        let argv = report["scanner"]["run"]["argv"].to_string();
        assert!(!argv.contains("test-token"), "secret in the report: {argv}");
        if code != 3 {
            // The stand-in saw the mounted guest tree, /boot from fstab included.
            let result = std::fs::read_to_string(env.out().join("changelist.db")).expect("result");
            assert_eq!(result.trim(), "vmsnapshot debian-fixture boot:ok");
            assert_eq!(report["outputs"][0]["name"], "changelist.db");
            // No upload is configured: the results stay where they are, nothing claims "stored".
            assert_eq!(report["sink"], Value::Null, "exit {code}: {report}");
            assert!(report["uploads"].as_array().is_none_or(|u| u.is_empty()));
        }
        assert!(env.left_behind(&image).is_empty());
    }
}

#[test]
fn sigterm_stops_the_scanner_and_cleans_up() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return;
    }
    let (_copy, image) = private_copy("debian-lvm");
    let (_tools, bin, env, mut child) = start_waiting_scan(&image);
    assert!(
        !env.left_behind(&image).is_empty(),
        "mounted while the scanner runs"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert_eq!(env.report()["status"], "interrupted");
    assert_eq!(env.report()["error"], "interrupted (SIGTERM)");
    assert!(env.left_behind(&image).is_empty());
    assert!(no_process_runs(&bin), "a stand-in process survived");
}

#[test]
fn leftovers_of_a_killed_scan_are_cleaned_by_the_next() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return;
    }
    let (copy, raw) = private_copy("debian-ext4-gpt");
    // A qcow2 too: its tree is mounted through a FUSE mount of the work area, which a crash
    // leaves behind as well.
    let v3 = formats::VARIANTS
        .into_iter()
        .find(|v| v.name == "v3.qcow2")
        .expect("the qcow2 variant");
    let qcow2 = formats::build(&raw, v3, copy.path()).expect("qcow2");
    for image in [raw, qcow2] {
        let (_tools, bin, env, mut child) = start_waiting_scan(&image);
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        // The stand-in's process group outlives a SIGKILLed snapscan: end it like an operator
        // would.
        kill_processes(&bin);
        let left = env.left_behind(&image);
        assert!(!left.is_empty(), "a crash leaves mounts");
        if image.extension().is_some_and(|e| e == "qcow2") {
            assert!(
                left.iter().any(|l| l.contains(" - fuse snapscan ")),
                "no FUSE mount among {left:#?}"
            );
        }
        // The killed scan's partial results stay for the operator; the next scan gets its own.
        std::fs::remove_dir_all(env.out()).expect("clear the killed scan's output");
        let out = env.scan(&image, &[]);
        assert_ok("rescan", &out);
        assert!(env.left_behind(&image).is_empty(), "{}", image.display());
    }
}

/// A sparse copy of fixture `name` of the test's own, for tests that hold a scan open: the
/// other tests, running in parallel, check that no loop device of their image is left.
fn private_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join(format!("{name}.img"));
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(images::image(name).expect("fixture"))
        .arg(&image)
        .status()
        .expect("cp");
    assert!(status.success(), "cannot copy fixture {name}");
    (dir, image)
}

/// Start `snapscan scan --scanner qscanner` on `image` with a stand-in that waits, and return
/// once the stand-in runs (the disk is mounted then): the stand-in's directory, its `bin`, the
/// environment and the running snapscan.
fn start_waiting_scan(image: &Path) -> (tempfile::TempDir, PathBuf, ScanEnv, std::process::Child) {
    let tools = tempfile::tempdir().expect("tempdir");
    let bin = stand_in(tools.path(), 0, true);
    let env = ScanEnv::new(&stand_in_config(&bin));
    let child = env
        .command(image, &["--scanner", "qscanner"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for(&env.out().join("started"));
    (tools, bin, env, child)
}

/// Wait (at most 60 s) until `path` exists.
fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Pids of live processes whose command line mentions `dir`.
fn processes_under(dir: &Path) -> Vec<i32> {
    snapscan_tests::processes_mentioning(&dir.to_string_lossy())
}

fn no_process_runs(dir: &Path) -> bool {
    processes_under(dir).is_empty()
}

fn kill_processes(dir: &Path) {
    for pid in processes_under(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// An input that is not a disk is named as the user gave it, with the same words as root and
/// as an ordinary user (root attaches loop devices, a user does not), and leaves no results
/// directory behind.
#[test]
fn bad_input_is_named_alike_as_root_and_as_a_user() {
    if !is_root() {
        snapscan_tests::skip("needs root (to run as both)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // An ordinary user must be able to reach the files and write the results.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    std::fs::create_dir(dir.path().join("adir")).expect("mkdir");
    std::fs::write(dir.path().join("empty.img"), b"").expect("write");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[scan]\nwork_dir = \"{}\"\nresults_dir = \"{}\"\n",
            dir.path().join("work").display(),
            dir.path().join("results").display()
        ),
    )
    .expect("config");
    let run = |input: &str, as_user: bool| {
        let mut cmd = if as_user {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(snapscan_tests::snapscan_bin());
            c
        } else {
            Command::new(snapscan_tests::snapscan_bin())
        };
        let out = cmd
            .arg("scan")
            .arg("--config")
            .arg(&config)
            .arg(input)
            .current_dir(dir.path())
            .output()
            .expect("run snapscan");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (input, words) in [
        ("adir", "'adir' is a directory, not a disk image"),
        ("empty.img", "'empty.img' is empty, not a disk image"),
        ("missing.img", "'missing.img' does not exist"),
    ] {
        let as_root = run(input, false);
        assert_eq!(as_root.0, Some(1), "{input}: {}", as_root.1);
        assert!(as_root.1.contains(words), "{input}: {}", as_root.1);
        assert!(!as_root.1.contains("/dev/loop"), "{input}: {}", as_root.1);
        assert_eq!(
            run(input, true),
            as_root,
            "{input}: a user is told the same"
        );
        assert!(
            !dir.path().join("results").exists(),
            "{input}: a results directory was left behind"
        );
    }
}

/// Whether `text` holds an SGR (colour) escape sequence: `ESC [ digits;... m`.
fn has_colour(text: &str) -> bool {
    text.match_indices("\x1b[").any(|(at, _)| {
        let rest = &text[at + 2..];
        let params = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .count();
        rest[params..].starts_with('m')
    })
}

#[test]
fn log_levels_show_what_the_readme_says_coloured_only_on_a_terminal() {
    if !is_root() {
        snapscan_tests::skip("needs root (kernel mounts are what debug shows)");
        return;
    }
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-mini.img");
    let env = ScanEnv::new("prefer = \"kernel\"\n");
    let command = |level: &str, n: u32| {
        format!(
            "SNAPSCAN_LOG={level} '{}' scan --config '{}' --output '{}' '{}'",
            snapscan_tests::snapscan_bin().display(),
            env.config().display(),
            env.dir.path().join(format!("out-{level}-{n}")).display(),
            sample.display()
        )
    };
    let piped = |level: &str| {
        let out = Command::new("sh")
            .args(["-c", &command(level, 0)])
            .env_remove("NO_COLOR")
            .output()
            .expect("run snapscan");
        assert_ok(level, &out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // README: warn (the default) shows only problems; info adds clean-ups and upload attempts;
    // debug adds every mount, unmount and refused mount option.
    let warn = piped("warn");
    assert!(!warn.contains("INFO") && !warn.contains("DEBUG"), "{warn}");
    let debug = piped("debug");
    assert!(
        debug.contains("mounted read-only"),
        "debug shows no mount: {debug}"
    );
    assert!(
        debug.contains("unmounted"),
        "debug shows no unmount: {debug}"
    );
    assert!(!piped("info").contains("mounted read-only"));
    assert!(!has_colour(&debug), "colour in a pipe: {debug:?}");

    let on_terminal = |no_color: Option<&str>, n: u32| {
        let mut script = Command::new("script");
        script
            .args(["-qefc", &command("debug", n), "/dev/null"])
            .env("TERM", "xterm")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            script.env("NO_COLOR", v);
        }
        let out = script.output().expect("run script");
        assert_ok("terminal", &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(has_colour(&on_terminal(None, 1)), "no colour on a terminal");
    let plain = on_terminal(Some("1"), 2);
    assert!(plain.contains("mounted read-only"), "{plain}");
    assert!(!has_colour(&plain), "colour with NO_COLOR: {plain:?}");
}
