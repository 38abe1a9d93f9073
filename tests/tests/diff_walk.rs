//! The native readers against the kernel, on the same image: every directory, symlink and file
//! (names, kinds, sizes, link targets, contents) that `ext4-view`, `lamxfs` and `lambutter` show
//! through our `RootFs` must be what a read-only kernel mount shows, and likewise `ntfs` against an
//! ntfs-3g mount. Root only (loop devices, mounts); skipped with a note otherwise.

use std::collections::BTreeMap;
use std::path::Path;

use snapscan::disk::reader::{Budget, Disk, Volume};
use snapscan::fs::{btrfs, ext4, ntfs, xfs, FileType, RootFs};
use snapscan_tests::images::guard::{LoopDevice, Mount, NtfsMount};
use snapscan_tests::images::{self, is_root};

/// What one path looks like: kind, and the size plus content (files) or target (symlinks).
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

fn walk_native(fs: &dyn RootFs, skip: &dyn Fn(&str) -> bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let path = if dir.is_empty() {
            "/".to_owned()
        } else {
            dir.clone()
        };
        for e in fs
            .read_dir(&path)
            .unwrap_or_else(|e| panic!("native read_dir {path}: {e}"))
        {
            let p = format!("{dir}/{}", e.name);
            if skip(&p) {
                continue;
            }
            let node = match e.file_type {
                FileType::Dir => {
                    dirs.push(p.clone());
                    Node::Dir
                }
                FileType::Symlink => Node::Symlink(fs.read_link(&p).expect("native read_link")),
                FileType::File => Node::File(
                    fs.read_file(&p, 1 << 30)
                        .unwrap_or_else(|e| panic!("native read {p}: {e}")),
                ),
                FileType::Other => continue,
            };
            out.insert(p, node);
        }
    }
    out
}

fn walk_kernel(root: &Path, skip: &dyn Fn(&str) -> bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(root.join(dir.trim_start_matches('/'))).expect("kernel read_dir")
        {
            let e = e.expect("kernel dir entry");
            let p = format!("{dir}/{}", e.file_name().to_string_lossy());
            if skip(&p) {
                continue;
            }
            let full = e.path();
            let t = std::fs::symlink_metadata(&full).expect("lstat").file_type();
            let node = if t.is_dir() {
                dirs.push(p.clone());
                Node::Dir
            } else if t.is_symlink() {
                Node::Symlink(
                    std::fs::read_link(&full)
                        .expect("readlink")
                        .to_string_lossy()
                        .into_owned(),
                )
            } else if t.is_file() {
                Node::File(std::fs::read(&full).expect("read"))
            } else {
                continue;
            };
            out.insert(p, node);
        }
    }
    out
}

fn compare(
    what: &str,
    native: &BTreeMap<String, Node>,
    kernel: &BTreeMap<String, Node>,
    min_paths: usize,
) {
    let mut diffs = Vec::new();
    for (p, n) in native {
        match kernel.get(p) {
            None => diffs.push(format!("only native: {p}")),
            Some(k) if k != n => diffs.push(format!("differs: {p}")),
            Some(_) => {}
        }
    }
    for p in kernel.keys().filter(|p| !native.contains_key(*p)) {
        diffs.push(format!("only kernel: {p}"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} paths differ:\n{}",
        diffs.len(),
        kernel.len(),
        diffs
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        native.len() >= min_paths,
        "{what}: suspiciously few paths ({})",
        native.len()
    );
    println!("{what}: {} paths identical", native.len());
}

/// The `index`-th volume of a fixture: (image, start, size).
fn volume_of(name: &str, index: usize) -> (std::path::PathBuf, u64, u64) {
    let img = images::image(name).expect("fixture");
    let out = std::process::Command::new(snapscan_tests::snapscan_bin())
        .args(["inspect", "--json"])
        .arg(&img)
        .output()
        .expect("inspect");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let v = &r["volumes"][index];
    (
        img,
        v["start_bytes"].as_u64().expect("start"),
        v["size_bytes"].as_u64().expect("size"),
    )
}

/// Walk volume `index` of fixture `name` natively (opened by `open`) and through a read-only
/// kernel mount of type `fstype` with `options`, and compare.
fn native_vs_kernel<F: RootFs>(
    name: &str,
    index: usize,
    open: fn(Volume) -> Result<F, snapscan::fs::FsError>,
    fstype: &str,
    options: &str,
    min_paths: usize,
) {
    if !is_root() {
        snapscan_tests::skip("needs root for loop devices and mounts");
        return;
    }
    let (img, start, size) = volume_of(name, index);
    let disk = Disk::open(&img).expect("open");
    let fs = open(
        disk.volume(start, size, Budget::new(u64::MAX))
            .expect("volume"),
    )
    .unwrap_or_else(|e| panic!("{fstype}: {e}"));
    let skip = |p: &str| p == "/lost+found";
    let native = walk_native(&fs, &skip);
    let dev = LoopDevice::attach(&img, start, Some(size), true).expect("loop");
    let dir = tempfile::tempdir().expect("mount point");
    let mnt = Mount::new(dev.path(), dir.path(), fstype, options).expect("mount");
    compare(
        &format!("{fstype} ({name})"),
        &native,
        &walk_kernel(mnt.target(), &skip),
        min_paths,
    );
}

#[test]
fn ext4_native_matches_kernel_mount() {
    native_vs_kernel("debian-ext4-gpt", 1, ext4::open, "ext4", "ro,noload", 1000);
}

#[test]
fn xfs_native_matches_kernel_mount() {
    native_vs_kernel(
        "debian-xfs-mbr",
        0,
        xfs::open,
        "xfs",
        "ro,norecovery,nouuid",
        1000,
    );
}

#[test]
fn btrfs_native_matches_kernel_mount() {
    native_vs_kernel("debian-btrfs", 0, btrfs::open, "btrfs", "ro", 1000);
}

/// Fedora's layout: the root is the subvolume its fstab names, and its files are zstd, zlib and
/// LZO compressed extents.
#[test]
fn btrfs_native_matches_kernel_mount_of_the_fstab_subvolume() {
    native_vs_kernel(
        "rhel9-rpm-btrfs-subvol",
        0,
        btrfs::open,
        "btrfs",
        "ro,subvol=root",
        20,
    );
}

#[test]
fn rhel_xfs_native_matches_kernel_mount() {
    native_vs_kernel(
        "rhel9-rpm-xfs",
        0,
        xfs::open,
        "xfs",
        "ro,norecovery,nouuid",
        20,
    );
}

#[test]
fn ntfs_native_matches_ntfs_3g_mount() {
    if !is_root() {
        snapscan_tests::skip("needs root for loop devices and FUSE mounts");
        return;
    }
    let (img, start, size) = volume_of("windows-11", 2);
    let disk = Disk::open(&img).expect("open");
    let fs = ntfs::open(
        disk.volume(start, size, Budget::new(u64::MAX))
            .expect("volume"),
    )
    .expect("ntfs");
    // ntfs-3g hides the NTFS metadata files ($MFT, $Bitmap...) at the root.
    let skip = |p: &str| p.starts_with("/$") || p == "/System Volume Information";
    let native = walk_native(&fs, &skip);
    let dev = LoopDevice::attach(&img, start, Some(size), true).expect("loop");
    let dir = tempfile::tempdir().expect("mount point");
    let mnt = NtfsMount::new(dev.path(), dir.path(), true).expect("mount");
    compare(
        "ntfs (windows-11)",
        &native,
        &walk_kernel(mnt.target(), &skip),
        20,
    );
}

/// A bigger NTFS: the Debian tree's documentation (hundreds of files and directories, names in
/// mixed case), a multi-MiB file that must be non-resident and spread over several runs, and a
/// deep directory chain.
#[test]
fn ntfs_native_matches_ntfs_3g_mount_on_many_files() {
    if !is_root() {
        snapscan_tests::skip("needs root for loop devices and FUSE mounts");
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    let tree = work.path().join("tree");
    let debian = images::debian_root().expect("debian tree");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(debian.join("usr/share/doc"))
        .arg(&tree)
        .status()
        .expect("cp");
    assert!(status.success());
    // Symlinks become reparse points on NTFS, which the native reader does not follow.
    let status = std::process::Command::new("find")
        .arg(&tree)
        .args(["-type", "l", "-delete"])
        .status()
        .expect("find");
    assert!(status.success());
    let big: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(tree.join("Big File.bin"), &big).expect("big file");
    let deep = tree.join("a/B/c/D/e/F/g/H");
    std::fs::create_dir_all(&deep).expect("deep dirs");
    std::fs::write(deep.join("MixedCase.TXT"), "deep").expect("deep file");

    let img = work.path().join("ntfs.img");
    snapscan_tests::images::fs::build_fs(
        snapscan_tests::images::fs::FsKind::Ntfs,
        64 << 20,
        Some("many"),
        Some(&tree),
        &img,
    )
    .expect("build ntfs");
    let size = std::fs::metadata(&img).expect("stat").len();
    let disk = Disk::open(&img).expect("open");
    let fs =
        ntfs::open(disk.volume(0, size, Budget::new(u64::MAX)).expect("volume")).expect("ntfs");
    assert_eq!(
        fs.read_file("/a/b/C/d/E/f/G/h/mixedcase.txt", 100)
            .as_deref(),
        Ok(&b"deep"[..]),
        "NTFS lookups are case-insensitive"
    );
    let skip = |p: &str| p.starts_with("/$") || p == "/System Volume Information";
    let native = walk_native(&fs, &skip);
    let dev = LoopDevice::attach(&img, 0, None, true).expect("loop");
    let dir = tempfile::tempdir().expect("mount point");
    let mnt = NtfsMount::new(dev.path(), dir.path(), true).expect("mount");
    compare(
        "ntfs (many files)",
        &native,
        &walk_kernel(mnt.target(), &skip),
        500,
    );
}
