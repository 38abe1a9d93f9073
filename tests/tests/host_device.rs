//! `snapscan scan /dev/X` on a block device of the host (issue items 13 and 14), as root, with
//! a loop device standing in for the block device: a small ext4 image made by `mkfs.ext4`,
//! attached by `losetup`, mounted read-write or not.
//!
//! - A device mounted read-write is refused before anything is attached or its read-only flag
//!   touched, unless `--force`; with `--force` it is read through a read-only loop device over it
//!   and its own flag is never set.
//! - The read-only flag (`BLKROSET`) snapscan sets on a device it reads directly is put back as
//!   it was (`BLKROGET` before) when the scan ends: success, failure, or SIGINT.
//!
//! The scanner is a stand-in (`[scanner.profiles.standin]`) that records the device's flag as
//! it saw it during the scan, and optionally waits to be interrupted.
//!
//! - Looking for a GCE disk by serial never has nvme-cli open a device with filesystems mounted
//!   on this system (the scanner VM's own boot disk), and does open one that is not mounted.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use snapscan_tests::images::cmd::{find_tool, run, tool};
use snapscan_tests::images::is_root;
use snapscan_tests::scan_env::ScanEnv;

/// Whether the test cannot run here (see [`snapscan_tests::skip`]).
fn skip() -> bool {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices, mounts)");
        return true;
    }
    false
}

/// A loop device over a fresh ext4 image holding a minimal Debian-looking root, optionally
/// mounted read-write. Dropping it unmounts, clears the read-only flag (it outlives the
/// binding and would make the next user of the device read-only) and detaches.
struct HostDevice {
    _dir: tempfile::TempDir,
    dev: PathBuf,
    mount: Option<PathBuf>,
}

impl HostDevice {
    fn new(mounted_rw: bool) -> HostDevice {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).expect("etc");
        std::fs::write(
            tree.join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\nNAME=\"Debian GNU/Linux\"\n",
        )
        .expect("os-release");
        std::fs::write(tree.join("etc/hostname"), "host-device\n").expect("hostname");
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(32 << 20))
            .expect("image");
        run(
            tool("mkfs.ext4")
                .args(["-q", "-F", "-L", "hostdev", "-d"])
                .arg(&tree)
                .arg(&image),
            None,
        )
        .expect("mkfs.ext4");
        let dev = run(tool("losetup").args(["-f", "--show"]).arg(&image), None)
            .expect("losetup -f --show");
        let mut host = HostDevice {
            _dir: dir,
            dev: PathBuf::from(dev.trim()),
            mount: None,
        };
        // A device number reused from an earlier failed run may still carry the flag.
        run(tool("blockdev").arg("--setrw").arg(&host.dev), None).expect("blockdev --setrw");
        if mounted_rw {
            let at = host._dir.path().join("mnt");
            std::fs::create_dir_all(&at).expect("mount point");
            let at = std::fs::canonicalize(&at).expect("canonical mount point");
            run(
                tool("mount").args(["-o", "rw"]).arg(&host.dev).arg(&at),
                None,
            )
            .expect("mount rw");
            host.mount = Some(at);
        }
        host
    }

    /// `blockdev --getro` of the device: "0" or "1".
    fn getro(&self) -> String {
        getro(&self.dev)
    }

    fn setro(&self) {
        run(tool("blockdev").arg("--setro").arg(&self.dev), None).expect("blockdev --setro");
    }

    /// Loop devices over the device (`losetup -j`).
    fn loops_over(&self) -> String {
        run(tool("losetup").arg("-j").arg(&self.dev), None)
            .expect("losetup -j")
            .trim()
            .to_owned()
    }
}

impl Drop for HostDevice {
    fn drop(&mut self) {
        if let Some(at) = &self.mount {
            if let Err(e) = run(tool("umount").arg(at), None) {
                eprintln!("warning: {e:#}");
            }
        }
        let _ = run(tool("blockdev").arg("--setrw").arg(&self.dev), None);
        if let Err(e) = run(tool("losetup").arg("-d").arg(&self.dev), None) {
            eprintln!("warning: {e:#}");
        }
    }
}

fn getro(dev: &Path) -> String {
    run(tool("blockdev").arg("--getro").arg(dev), None)
        .expect("blockdev --getro")
        .trim()
        .to_owned()
}

/// The scan environment of one test, with a stand-in scanner in its `bin/`.
struct Env(ScanEnv);

impl std::ops::Deref for Env {
    type Target = ScanEnv;
    fn deref(&self) -> &ScanEnv {
        &self.0
    }
}

impl Env {
    /// `exit`: the stand-in's exit code; `wait`: it waits to be stopped after starting.
    fn new(exit: i32, wait: bool) -> Env {
        Env(ScanEnv::with_config(|dir| {
            let bin = dir.join("bin");
            std::fs::create_dir_all(&bin).expect("bin");
            let script = bin.join("standin");
            let blockdev = find_tool("blockdev").expect("blockdev installed");
            // argv: output dir, mount, disk. Records the disk's flag as seen during the scan.
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\nset -e\nout=$1\ngrep -q '^ID=debian' \"$2/etc/os-release\"\n\
                     {blockdev} --getro \"$3\" > \"$out/ro-during-scan\"\n\
                     echo result > \"$out/result.txt\"\n{wait}exit {exit}\n",
                    blockdev = blockdev.display(),
                    wait = if wait {
                        "echo started > \"$out/started\"\nsleep 1000 &\nwait\n"
                    } else {
                        ""
                    },
                ),
            )
            .expect("script");
            let mut perm = std::fs::metadata(&script).expect("meta").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
            std::fs::set_permissions(&script, perm).expect("chmod");
            format!(
                "scanner = \"standin\"\n\
                 scanner_search_path = [\"{bin}\", \"/usr/bin\", \"/bin\"]\n\
                 [scanner.profiles.standin]\n\
                 command = [\"standin\", \"{{output_dir}}\", \"{{mount}}\", \"{{disk}}\"]\n\
                 kill_grace_secs = 2\n",
                bin = bin.display(),
            )
        }))
    }

    /// The flag the stand-in saw during the scan, if it ran.
    fn ro_during_scan(&self) -> Option<String> {
        std::fs::read_to_string(self.out().join("ro-during-scan"))
            .ok()
            .map(|s| s.trim().to_owned())
    }
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_device_mounted_read_write_is_refused() {
    if skip() {
        return;
    }
    let host = HostDevice::new(true);
    let at = host.mount.clone().expect("mounted");
    let env = Env::new(0, false);
    let out = env.scan(&host.dev, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let want = format!(
        "'{}' is mounted read-write at {}: scanning a disk in use gives inconsistent results \
         and the host's writes race the read; use --force to scan it anyway (read through a \
         read-only loop device)",
        host.dev.display(),
        at.display()
    );
    assert!(stderr.contains(&want), "{}", describe(&out));
    assert_eq!(env.ro_during_scan(), None, "the scanner ran");
    assert_eq!(host.loops_over(), "", "a loop device was attached");
    assert_eq!(host.getro(), "0", "the read-only flag was touched");
    assert!(env.mounts_left().is_empty(), "{:?}", env.mounts_left());
}

#[test]
fn a_device_mounted_read_only_is_scanned() {
    if skip() {
        return;
    }
    let host = HostDevice::new(true);
    let at = host.mount.clone().expect("mounted");
    run(tool("mount").args(["-o", "remount,ro"]).arg(&at), None).expect("remount ro");
    let env = Env::new(0, false);
    let out = env.scan(&host.dev, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(host.getro(), "0");
}

#[test]
fn force_reads_a_device_in_use_through_a_read_only_loop_device() {
    if skip() {
        return;
    }
    let host = HostDevice::new(true);
    let env = Env::new(0, false);
    let out = env.scan(&host.dev, &["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        env.ro_during_scan().as_deref(),
        Some("0"),
        "the device in use was marked read-only during the scan"
    );
    assert_eq!(host.getro(), "0");
    assert_eq!(host.loops_over(), "", "a loop device was left over it");
    assert!(env.mounts_left().is_empty(), "{:?}", env.mounts_left());
    let report = std::fs::read_to_string(env.out().join("report.json")).expect("report");
    assert!(
        report.contains("--force"),
        "no warning in the report: {report}"
    );
}

#[test]
fn the_read_only_flag_is_restored_after_a_scan() {
    if skip() {
        return;
    }
    let host = HostDevice::new(false);
    assert_eq!(host.getro(), "0");
    let env = Env::new(0, false);
    let out = env.scan(&host.dev, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        env.ro_during_scan().as_deref(),
        Some("1"),
        "not read-only during the scan"
    );
    assert_eq!(host.getro(), "0", "the flag was left set");
}

#[test]
fn the_read_only_flag_is_restored_after_a_failed_scan() {
    if skip() {
        return;
    }
    let host = HostDevice::new(false);
    let env = Env::new(3, false);
    let out = env.scan(&host.dev, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(env.ro_during_scan().as_deref(), Some("1"));
    assert_eq!(host.getro(), "0", "the flag was left set");
}

#[test]
fn a_read_only_flag_set_before_stays_set() {
    if skip() {
        return;
    }
    let host = HostDevice::new(false);
    host.setro();
    assert_eq!(host.getro(), "1");
    let env = Env::new(0, false);
    let out = env.scan(&host.dev, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(host.getro(), "1", "the flag set before was cleared");
}

#[test]
fn the_read_only_flag_is_restored_after_sigint() {
    if skip() {
        return;
    }
    let host = HostDevice::new(false);
    let env = Env::new(0, true);
    let mut child = env
        .command(&host.dev, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = env.out().join("started");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the stand-in scanner never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(host.getro(), "1", "not read-only while the scanner runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert_eq!(host.getro(), "0", "the flag was left set after SIGINT");
    assert!(env.mounts_left().is_empty(), "{:?}", env.mounts_left());
}

#[test]
fn the_serial_scan_never_opens_a_mounted_device() {
    use snapscan::disk::resolve::{Resolver, Unopened};
    if skip() {
        return;
    }
    if find_tool("nvme").is_none() {
        snapscan_tests::skip("needs nvme-cli (scripts/test-all.sh installs it)");
        return;
    }
    let (mounted, free) = (HostDevice::new(true), HostDevice::new(false));
    // A sysfs and /dev in which both loop devices are NVMe namespaces, neither naming the disk
    // asked for: the scan asks nvme-cli about each device it may open (real nvme-cli, which
    // opens the device and then fails: a loop device is no NVMe namespace).
    let fake = tempfile::tempdir().expect("tempdir");
    let resolver = Resolver {
        by_id_dir: fake.path().join("by-id"),
        sys_dir: fake.path().join("sys"),
        dev_dir: fake.path().join("dev"),
        ..Resolver::default()
    };
    std::fs::create_dir_all(&resolver.by_id_dir).expect("by-id");
    std::fs::create_dir_all(&resolver.dev_dir).expect("dev");
    for (kname, host) in [("nvme0n1", &mounted), ("nvme0n2", &free)] {
        let sys = resolver.sys_dir.join("block").join(kname);
        std::fs::create_dir_all(&sys).expect("sysfs");
        std::fs::write(sys.join("ro"), "1\n").expect("ro");
        std::os::unix::fs::symlink(&host.dev, resolver.dev_dir.join(kname)).expect("node");
    }
    let mut opens = snapscan_tests::opens::Opens::watch(&[&mounted.dev, &free.dev]).expect("watch");
    let err = resolver
        .resolve_once("data-1", &Unopened::default())
        .expect_err("no such disk");
    let text = err.to_string();
    assert!(
        text.contains("nvme0n1 (holds a filesystem mounted on"),
        "{text}"
    );
    assert!(text.contains("nvme0n2 (nvme id-ns failed"), "{text}");
    let opened = opens.opened().expect("opens");
    assert!(
        opened.contains(&free.dev),
        "the free device was asked: {opened:?}"
    );
    assert!(
        !opened.contains(&mounted.dev),
        "the mounted device was opened"
    );
}
