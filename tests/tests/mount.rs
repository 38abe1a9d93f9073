//! The kernel side of `snapscan scan` on real images: read-only loop devices, read-only mounts
//! with the options that keep drivers from replaying journals, `Rooted<HostTree>` over them,
//! and clean-up after panics and crashes. The proof that nothing is written hashes images
//! (including an ext4 whose journal needs recovery and an XFS with a dirty log) before and after,
//! and shows that the same hash changes when the dirty fixtures are mounted without our options.
//!
//! Root only (loop devices, mounts, FUSE); every test is skipped with a note otherwise.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use snapscan::disk::loopdev::{LoopDevice, ReadOnlyFlag};
use snapscan::disk::probe::FsKind;
use snapscan::disk::reader::{Budget, Disk};
use snapscan::fs::host::{self, HostTree};
use snapscan::fs::{ext4, FileType, FsError, RootFs, Rooted};
use snapscan::inspect::{inspect, Options};
use snapscan::mount::{mountinfo, Mount, Workspace};
use snapscan_tests::expect::sha256_file;
use snapscan_tests::images::cmd::{run, tool};
use snapscan_tests::images::guard;
use snapscan_tests::images::{self, is_root};

fn skip() -> bool {
    if !is_root() {
        snapscan_tests::skip("needs root for loop devices and mounts");
        return true;
    }
    false
}

/// One volume of a fixture, through a hard link of its image private to the caller, so that
/// `losetup -a` tells this test's loop devices from those of tests running in parallel.
struct Vol {
    _dir: tempfile::TempDir,
    img: PathBuf,
    start: u64,
    size: u64,
    kind: FsKind,
}

/// The `index`-th volume of fixture `name`.
fn volume(name: &str, index: usize) -> Vol {
    let src = images::image(name).unwrap_or_else(|e| panic!("fixture {name}: {e:#}"));
    let report = inspect(&src, &Options::default()).expect("inspect");
    let v = &report.volumes[index];
    let dir = tempfile::Builder::new()
        .prefix("mount-test-")
        .tempdir_in(src.parent().expect("cache dir"))
        .expect("link dir");
    // Canonical: `losetup -a` shows the kernel's path of the backing file.
    let img = std::fs::canonicalize(dir.path())
        .expect("canonical")
        .join(format!("{name}.img"));
    std::fs::hard_link(&src, &img).expect("hard link");
    Vol {
        _dir: dir,
        img,
        start: v.start_bytes,
        size: v.size_bytes,
        kind: v.filesystem,
    }
}

/// A sparse copy of `src` in `dir`.
fn copy_of(src: &Path, dir: &Path) -> PathBuf {
    let dst = dir.join(src.file_name().expect("file name"));
    run(tool("cp").arg("--sparse=always").arg(src).arg(&dst), None).expect("copy");
    dst
}

/// `blockdev --getro DEV`.
fn getro(dev: &Path) -> String {
    run(tool("blockdev").arg("--getro").arg(dev), None)
        .expect("blockdev --getro")
        .trim()
        .to_owned()
}

/// Clears a block device's read-only flag (`blockdev --setrw`) when dropped: `BLKROSET` on a
/// loop device stays set after it is detached and would make the next user's device read-only.
struct ClearReadOnly(PathBuf);

impl Drop for ClearReadOnly {
    fn drop(&mut self) {
        if let Err(e) = run(tool("blockdev").arg("--setrw").arg(&self.0), None) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Whether a write to a block device is refused (at open or at write).
fn write_refused(dev: &Path) -> bool {
    match OpenOptions::new().write(true).open(dev) {
        Err(_) => true,
        Ok(mut f) => f.write_all(&[0u8; 512]).and_then(|()| f.flush()).is_err(),
    }
}

/// Whether some loop device is bound to `image`.
fn loop_bound_to(image: &Path) -> bool {
    let out = run(tool("losetup").args(["-a"]), None).expect("losetup -a");
    let image = format!("({})", image.display());
    out.lines().any(|l| l.contains(&image))
}

/// Read every file and link of a `RootFs`; returns the number of files read.
fn walk(fs: &dyn RootFs) -> usize {
    let mut files = 0;
    let mut dirs = vec!["/".to_owned()];
    while let Some(dir) = dirs.pop() {
        for e in fs
            .read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {dir}: {e}"))
        {
            let p = format!("{}/{}", dir.trim_end_matches('/'), e.name);
            match e.file_type {
                FileType::Dir => dirs.push(p),
                FileType::File => {
                    fs.read_file(&p, 1 << 30)
                        .unwrap_or_else(|e| panic!("read {p}: {e}"));
                    files += 1;
                }
                FileType::Symlink => {
                    fs.read_link(&p)
                        .unwrap_or_else(|e| panic!("readlink {p}: {e}"));
                }
                FileType::Other => {}
            }
        }
    }
    files
}

/// The mountinfo line of the mount on `target`.
fn mounted_on(target: &Path) -> Option<mountinfo::MountInfo> {
    mountinfo::mounts_on(target).expect("mountinfo").pop()
}

/// Attach, mount read-only with our options, walk everything through `Rooted<HostTree>`,
/// unmount, detach; returns the number of files read.
fn mount_and_walk(img: &Path, start: u64, size: u64, kind: FsKind) -> usize {
    let dev = LoopDevice::attach_read_only(img, start, Some(size)).expect("attach");
    let dir = tempfile::tempdir().expect("mount point");
    let mnt = Mount::read_only(dev.path(), dir.path(), kind)
        .unwrap_or_else(|e| panic!("mount {kind} from {}: {e} ({})", img.display(), e.kind()));
    let files = walk(&host::open(mnt.target()));
    mnt.unmount().expect("unmount");
    dev.detach().expect("detach");
    files
}

#[test]
fn a_read_only_loop_device_refuses_writes_and_windows_a_partition() {
    if skip() {
        return;
    }
    let Vol {
        img,
        start,
        size,
        kind,
        _dir,
    } = volume("debian-ext4-gpt", 1);
    assert_eq!(kind, FsKind::Ext4);
    let dev = LoopDevice::attach_read_only(&img, start, Some(size)).expect("attach");
    assert_eq!(getro(dev.path()), "1");
    assert!(
        write_refused(dev.path()),
        "a write reached {}",
        dev.path().display()
    );
    let blkid = run(
        tool("blkid").args(["-p", "-o", "export"]).arg(dev.path()),
        None,
    )
    .expect("blkid");
    assert!(blkid.lines().any(|l| l == "TYPE=ext4"), "{blkid}");
    assert!(blkid.lines().any(|l| l == "LABEL=root"), "{blkid}");
    let bytes = run(tool("blockdev").arg("--getsize64").arg(dev.path()), None).expect("size");
    assert_eq!(bytes.trim(), size.to_string());
    let path = dev.path().to_owned();
    dev.detach().expect("detach");
    assert!(!loop_bound_to(&img), "{} still bound", path.display());

    // BLKROSET on a writable device (a plain loop device stands in for a block device).
    let work = tempfile::tempdir().expect("work dir");
    let copy = copy_of(&images::image("ntfs-data").expect("fixture"), work.path());
    let rw = guard::LoopDevice::attach(&copy, 0, None, false).expect("rw loop");
    assert_eq!(getro(rw.path()), "0");
    // The flag outlives the binding: clear it (even on panic) before the device is reused.
    let reset = ClearReadOnly(rw.path().to_owned());
    let flag = ReadOnlyFlag::set(rw.path()).expect("set read-only");
    assert!(!flag.was_read_only());
    assert_eq!(getro(rw.path()), "1");
    assert!(write_refused(rw.path()));
    flag.restore().expect("restore");
    assert_eq!(getro(rw.path()), "0", "the flag was not put back");
    // Set before: it stays set.
    run(tool("blockdev").arg("--setro").arg(rw.path()), None).expect("setro");
    let flag = ReadOnlyFlag::set(rw.path()).expect("set read-only");
    assert!(flag.was_read_only());
    drop(flag);
    assert_eq!(getro(rw.path()), "1", "a flag set before was cleared");
    drop(reset);
    assert_eq!(getro(rw.path()), "0");
    rw.detach().expect("detach");
}

#[test]
fn every_filesystem_mounts_read_only_with_its_options() {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    // An ext2 volume: no journal, the `noload` retry path.
    let ext2_root = work.path().join("ext2-root");
    std::fs::create_dir_all(ext2_root.join("etc")).expect("mkdir");
    std::fs::write(ext2_root.join("etc/hostname"), "ext2-host\n").expect("write");
    let ext2 = work.path().join("ext2.img");
    images::fs::sparse_file(&ext2, 8 << 20).expect("sparse");
    run(
        tool("mkfs.ext2")
            .args(["-q", "-F", "-d"])
            .arg(&ext2_root)
            .arg(&ext2),
        None,
    )
    .expect("mkfs.ext2");
    let ext2_len = std::fs::metadata(&ext2).expect("stat").len();

    struct Case {
        name: &'static str,
        volume: Vol,
        /// Options mountinfo must show besides ro, nodev, nosuid, noexec.
        options: &'static [&'static str],
        /// A file to read through `Rooted<HostTree>`.
        file: &'static str,
    }
    let cases = [
        Case {
            name: "ext4",
            volume: volume("debian-ext4-gpt", 1),
            // ext4 shows `noload` as `norecovery`.
            options: &["norecovery"],
            file: "/etc/hostname",
        },
        Case {
            name: "ext2",
            volume: Vol {
                _dir: tempfile::tempdir().expect("dir"),
                img: ext2.clone(),
                start: 0,
                size: ext2_len,
                kind: FsKind::Ext2,
            },
            options: &[],
            file: "/etc/hostname",
        },
        Case {
            name: "xfs",
            volume: volume("debian-xfs-mbr", 0),
            options: &["norecovery", "nouuid"],
            file: "/etc/hostname",
        },
        Case {
            name: "btrfs",
            volume: volume("debian-btrfs", 0),
            options: &["rescue=nologreplay"],
            file: "/etc/hostname",
        },
        Case {
            name: "ntfs",
            volume: volume("ntfs-data", 0),
            options: &[],
            file: "/README.txt",
        },
        Case {
            name: "windows ntfs",
            volume: volume("windows-11", 2),
            options: &[],
            file: "/Windows/System32/config/SOFTWARE",
        },
    ];
    for c in cases {
        let v = &c.volume;
        let dev = LoopDevice::attach_read_only(&v.img, v.start, Some(v.size)).expect("attach");
        let dir = tempfile::tempdir().expect("mount point");
        let mnt = Mount::read_only(dev.path(), dir.path(), v.kind)
            .unwrap_or_else(|e| panic!("case {}: {e} ({})", c.name, e.kind()));
        let info =
            mounted_on(mnt.target()).unwrap_or_else(|| panic!("case {}: not in mountinfo", c.name));
        for want in ["ro", "nodev", "nosuid", "noexec"].iter().chain(c.options) {
            assert!(
                info.has_option(want),
                "case {}: no {want} in {info:?}",
                c.name
            );
        }
        let err = std::fs::File::create(mnt.target().join("snapscan-write-test"))
            .expect_err("a write into a read-only mount");
        assert_eq!(
            err.raw_os_error(),
            Some(30),
            "case {}: {err} (want EROFS)",
            c.name
        );
        let fs = host::open(mnt.target());
        let data = fs
            .read_file(c.file, 1 << 28)
            .unwrap_or_else(|e| panic!("case {}: {}: {e}", c.name, c.file));
        assert!(!data.is_empty(), "case {}", c.name);
        eprintln!("{}: {} with {}", c.name, mnt.fs_type(), mnt.options());
        mnt.unmount().expect("unmount");
        dev.detach().expect("detach");
        assert!(!loop_bound_to(&v.img), "case {}: loop device left", c.name);
    }

    // No vfat or exfat driver in this kernel: a clear `no_driver`, or a read-only mount where
    // there is one.
    for (fixture, kind) in [("vfat-data", FsKind::Vfat), ("exfat-data", FsKind::Exfat)] {
        let v = volume(fixture, 0);
        assert_eq!(v.kind, kind);
        let dev = LoopDevice::attach_read_only(&v.img, v.start, Some(v.size)).expect("attach");
        let dir = tempfile::tempdir().expect("mount point");
        let listed = std::fs::read_to_string("/proc/filesystems")
            .expect("/proc/filesystems")
            .lines()
            .any(|l| l.split_whitespace().last() == Some(kind.as_str()));
        match Mount::read_only(dev.path(), dir.path(), kind) {
            Ok(mnt) => {
                assert!(listed, "{fixture}: mounted without a listed driver");
                let info = mounted_on(mnt.target()).expect("mountinfo");
                assert!(
                    info.has_option("ro") && info.has_option("noexec"),
                    "{info:?}"
                );
                mnt.unmount().expect("unmount");
            }
            Err(e) => {
                assert!(!listed, "{fixture}: {e}");
                assert_eq!(e.kind(), "no_driver", "{fixture}: {e}");
                eprintln!("{fixture}: {e}");
            }
        }
        dev.detach().expect("detach");
    }

    // Not a filesystem at all.
    let v = volume("debian-lvm", 1);
    let dev = LoopDevice::attach_read_only(&v.img, v.start, Some(v.size)).expect("attach");
    let dir = tempfile::tempdir().expect("mount point");
    let err = Mount::read_only(dev.path(), dir.path(), FsKind::Lvm2Member).expect_err("lvm pv");
    assert_eq!(err.kind(), "unsupported");
    let err = Mount::read_only(dev.path(), dir.path(), FsKind::Ext4).expect_err("not ext4");
    assert_eq!(err.kind(), "refused", "{err}");
    dev.detach().expect("detach");
}

#[test]
fn nothing_is_written_even_with_a_dirty_journal() {
    if skip() {
        return;
    }
    struct Case {
        fixture: &'static str,
        index: usize,
        min_files: usize,
    }
    let cases = [
        Case {
            fixture: "dirty-ext4",
            index: 0,
            min_files: images::dirty::CLEAN_FILES,
        },
        Case {
            fixture: "dirty-xfs",
            index: 0,
            min_files: images::dirty::CLEAN_FILES,
        },
        Case {
            fixture: "debian-ext4-gpt",
            index: 1,
            min_files: 1000,
        },
        Case {
            fixture: "debian-xfs-mbr",
            index: 0,
            min_files: 1000,
        },
        Case {
            fixture: "debian-btrfs",
            index: 0,
            min_files: 1000,
        },
        Case {
            fixture: "windows-11",
            index: 2,
            min_files: 5,
        },
    ];
    for c in cases {
        let v = volume(c.fixture, c.index);
        let before = sha256_file(&v.img);
        let files = mount_and_walk(&v.img, v.start, v.size, v.kind);
        let after = sha256_file(&v.img);
        assert_eq!(before, after, "{}: the image changed", c.fixture);
        assert!(files >= c.min_files, "{}: only {files} files", c.fixture);
        eprintln!(
            "{}: {files} files read, image unchanged ({before})",
            c.fixture
        );
    }
}

/// The dirty fixtures are really dirty: on a writable loop device, a read-only mount without
/// `noload`/`norecovery` replays the journal and the bytes change; on our read-only device it
/// cannot even mount.
#[test]
fn the_dirty_fixtures_change_when_their_journal_is_replayed() {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    for (fixture, fstype) in [("dirty-ext4", "ext4"), ("dirty-xfs", "xfs")] {
        let img = copy_of(&images::image(fixture).expect("fixture"), work.path());

        let ro = LoopDevice::attach_read_only(&img, 0, None).expect("attach");
        let dir = tempfile::tempdir().expect("mount point");
        let refused = guard::Mount::new(ro.path(), dir.path(), fstype, "ro");
        assert!(
            refused.is_err(),
            "{fixture}: mounted without skipping the replay"
        );
        drop(refused);
        ro.detach().expect("detach");

        let before = sha256_file(&img);
        let rw = guard::LoopDevice::attach(&img, 0, None, false).expect("rw loop");
        let mnt = guard::Mount::new(rw.path(), dir.path(), fstype, "ro").expect("mount");
        let replayed = std::fs::read_dir(mnt.target().join("journaled"))
            .map(|d| d.count())
            .unwrap_or(0);
        mnt.unmount().expect("unmount");
        rw.detach().expect("detach");
        let after = sha256_file(&img);
        assert_ne!(
            before, after,
            "{fixture}: replaying the journal wrote nothing"
        );
        eprintln!("{fixture}: replay changed the image ({replayed} journaled files)");
    }
}

/// Set by the crash test for [`crash_helper`]: `BASE IMAGE START SIZE`, space-separated.
const CRASH_ENV: &str = "SNAPSCAN_TEST_CRASH";

/// Not a test on its own: [`leftovers_of_a_crashed_scan_are_cleaned`] runs this test binary
/// again with only this test and [`CRASH_ENV`] set, and kills it with SIGKILL once it has
/// mounted, as a crash would.
#[test]
#[ignore = "helper process of leftovers_of_a_crashed_scan_are_cleaned"]
fn crash_helper() {
    let Some(args) = std::env::var(CRASH_ENV).ok() else {
        return;
    };
    let args: Vec<&str> = args.split(' ').collect();
    let [base, img, start, size] = args[..] else {
        panic!("bad {CRASH_ENV}: {args:?}");
    };
    let ws = Workspace::create(Path::new(base), "crash-test").expect("workspace");
    let size: u64 = size.parse().expect("size");
    let dev = ws
        .attach_loop(Path::new(img), start.parse().expect("start"), Some(size))
        .expect("attach");
    let mnt = Mount::read_only(
        dev.path(),
        &ws.mount_point("root").expect("dir"),
        FsKind::Ext4,
    )
    .expect("mount");
    // On a line of its own: libtest has already printed "test crash_helper ... ".
    println!(
        "\nready {} {}",
        dev.path().display(),
        mnt.target().display()
    );
    std::io::stdout().flush().expect("flush");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn leftovers_of_a_crashed_scan_are_cleaned() {
    if skip() {
        return;
    }
    let v = volume("debian-ext4-gpt", 1);
    let base = tempfile::tempdir().expect("base");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CRASH_ENV,
            format!(
                "{} {} {} {}",
                base.path().display(),
                v.img.display(),
                v.start,
                v.size
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the crash helper");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("ready "));
    child.kill().expect("kill the helper");
    child.wait().expect("reap the helper");
    let ready = ready.expect("the helper never mounted");
    let mut parts = ready.split(' ').skip(1);
    let dev = PathBuf::from(parts.next().expect("device"));
    let target = PathBuf::from(parts.next().expect("mount point"));
    assert!(
        mounted_on(&target).is_some(),
        "the crash left no mount to clean"
    );
    assert!(
        loop_bound_to(&v.img),
        "the crash left no loop device to clean"
    );

    let cleaned = Workspace::cleanup_leftovers(base.path()).expect("cleanup");
    eprintln!("cleaned: {cleaned:#?}");
    assert!(
        cleaned
            .iter()
            .any(|l| l.starts_with(&format!("unmounted {}", target.display()))),
        "{cleaned:?}"
    );
    assert!(
        cleaned.iter().any(|l| l.starts_with("removed ")),
        "{cleaned:?}"
    );
    assert!(mounted_on(&target).is_none(), "still mounted");
    let base_canon = std::fs::canonicalize(base.path()).expect("base");
    assert!(
        mountinfo::read()
            .expect("mountinfo")
            .iter()
            .all(|m| !m.mount_point.starts_with(&base_canon)),
        "a mount is left under the base"
    );
    assert!(!loop_bound_to(&v.img), "{} still bound", dev.display());
    assert_eq!(std::fs::read_dir(base.path()).expect("list").count(), 0);
    // Idempotent.
    assert!(Workspace::cleanup_leftovers(base.path())
        .expect("again")
        .is_empty());
}

#[test]
fn guards_clean_up_when_a_thread_panics() {
    if skip() {
        return;
    }
    let v = volume("debian-xfs-mbr", 0);
    let dir = tempfile::tempdir().expect("mount point");
    let target = std::fs::canonicalize(dir.path()).expect("canonical");
    let mount_dir = dir.path().to_owned();
    let (img, start, size, kind) = (v.img.clone(), v.start, v.size, v.kind);
    let worker = std::thread::spawn(move || {
        let dev = LoopDevice::attach_read_only(&img, start, Some(size)).expect("attach");
        let mnt = Mount::read_only(dev.path(), &mount_dir, kind).expect("mount");
        assert!(mnt.target().join("etc/hostname").is_file());
        panic!(
            "scan failed while holding {} on {}",
            dev.path().display(),
            mnt.target().display()
        );
    });
    assert!(worker.join().is_err(), "the worker should have panicked");
    assert!(mounted_on(&target).is_none(), "mount left after the panic");
    assert!(!loop_bound_to(&v.img), "loop device left after the panic");
}

#[test]
fn host_tree_over_a_kernel_mount_answers_like_the_native_ext4_reader() {
    if skip() {
        return;
    }
    let v = volume("debian-ext4-gpt", 1);
    let disk = Disk::open(&v.img).expect("open");
    let native = ext4::open(
        disk.volume(v.start, v.size, Budget::new(u64::MAX))
            .expect("volume"),
    )
    .expect("ext4");
    let dev = LoopDevice::attach_read_only(&v.img, v.start, Some(v.size)).expect("attach");
    let dir = tempfile::tempdir().expect("mount point");
    let mnt = Mount::read_only(dev.path(), dir.path(), v.kind).expect("mount");
    let kernel: Rooted<HostTree> = host::open(mnt.target());

    type Answer = (
        Result<Vec<u8>, FsError>,
        Result<snapscan::fs::Metadata, FsError>,
        Result<snapscan::fs::Metadata, FsError>,
        Result<String, FsError>,
        Result<Vec<String>, FsError>,
    );
    let ask = |fs: &dyn RootFs, path: &str| -> Answer {
        let names = fs.read_dir(path).map(|entries| {
            let mut n: Vec<String> = entries.into_iter().map(|e| e.name).collect();
            n.sort();
            n
        });
        (
            fs.read_file(path, 1 << 20),
            fs.metadata(path),
            fs.symlink_metadata(path),
            fs.read_link(path),
            names,
        )
    };
    let paths = [
        "/etc/os-release",      // relative symlink into usr/lib
        "/bin/sh",              // usr-merge link, then a symlink to dash
        "/usr/bin",             // the merged directory
        "/bin",                 // the link itself
        "/etc/localtime",       // absolute symlink: must stay inside the volume
        "/usr/bin/awk",         // absolute link to an absolute alternatives link
        "/../../etc/hostname",  // dot-dot above the root
        "/etc/os-release/x",    // a file used as a directory
        "/etc/nonexistent",     // missing
        "/var/lib/dpkg/status", // big enough to need several reads
        "/usr/share/zoneinfo/Etc/UTC",
    ];
    for p in paths {
        let want = ask(&native, p);
        let got = ask(&kernel, p);
        assert_eq!(got, want, "{p}");
    }
    // The absolute link resolved to the guest's file, not the host's.
    let tz = kernel
        .read_file("/etc/localtime", 1 << 20)
        .expect("localtime");
    assert!(tz.starts_with(b"TZif"));
    mnt.unmount().expect("unmount");
    dev.detach().expect("detach");
}

/// A recorded loop device is detached only while it is still bound to the recorded file and
/// offset: a number reused by someone else since the crash is left alone.
#[test]
fn leftover_loop_devices_are_detached_only_when_still_theirs() {
    use snapscan::disk::loopdev::{detach_leftover, LoopBinding};
    use std::os::unix::fs::MetadataExt;
    if skip() {
        return;
    }
    let v = volume("ntfs-data", 0);
    // `losetup` without auto-clear: bound with nobody holding it, as after a crash.
    let out = run(
        tool("losetup")
            .args(["--find", "--show", "--read-only", "--offset"])
            .arg(v.start.to_string())
            .arg(&v.img),
        None,
    )
    .expect("losetup");
    let device = PathBuf::from(out.trim());
    let meta = std::fs::metadata(&v.img).expect("stat");
    let theirs = LoopBinding {
        device: device.clone(),
        backing: v.img.clone(),
        backing_dev: meta.dev(),
        backing_ino: meta.ino(),
        offset: v.start,
    };
    let other_offset = LoopBinding {
        offset: v.start + 512,
        ..theirs.clone()
    };
    let other_file = LoopBinding {
        backing_ino: meta.ino() + 1,
        ..theirs.clone()
    };
    assert!(!detach_leftover(&other_offset).expect("other offset"));
    assert!(!detach_leftover(&other_file).expect("other file"));
    assert!(
        loop_bound_to(&v.img),
        "a device that is not theirs was detached"
    );
    assert!(detach_leftover(&theirs).expect("theirs"));
    assert!(!loop_bound_to(&v.img), "{} still bound", device.display());
    assert!(!detach_leftover(&theirs).expect("again"));
}
