//! `snapscan::disk::probe` against `blkid -p` on images made by the real tools.
//!
//! Each case makes a small image (sparse file) in a temporary directory with the real mkfs,
//! mkswap, cryptsetup or pvcreate, then asserts that our probe and `blkid -p -o export` agree on
//! TYPE, LABEL and UUID, and that the type is the one the case made. A missing tool skips its
//! cases with a printed note; LVM needs root (a loop device) and is skipped with a note
//! otherwise. Runs as root in CI.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use snapscan::disk::probe::{probe, FsKind, Probe};
use snapscan::disk::reader::{Budget, Disk};

/// A directory under `std::env::temp_dir()`, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "snapscan-probe-vs-blkid-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A tool from `PATH` or the sbin directories (which a non-login root shell may lack).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Run a command; on failure, the error names it and carries its stderr.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A sparse file of `mib` MiB.
fn sparse(path: &Path, mib: u64) {
    File::create(path)
        .and_then(|f| f.set_len(mib * 1024 * 1024))
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

/// Undo `blkid -o export` quoting: a backslash before a shell-special character. (Labels in
/// these cases are ASCII, so the `M-`/`^` notation for other bytes never appears.)
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// TYPE, LABEL and UUID as `blkid -p` reports them (`None` for TYPE when it finds nothing).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: Option<String>,
    label: Option<String>,
    uuid: Option<String>,
}

fn blkid(blkid: &Path, image: &Path) -> Seen {
    let out = Command::new(blkid)
        .args(["-p", "-o", "export"])
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("cannot run blkid: {e}"));
    // Exit status 2: nothing recognised.
    match out.status.code() {
        Some(0) => {}
        Some(2) => {
            return Seen {
                kind: None,
                label: None,
                uuid: None,
            }
        }
        _ => panic!(
            "blkid -p {} failed ({}): {}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    let vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), unescape(v)))
        .collect();
    Seen {
        // Our names are blkid's TYPE in lowercase (`LVM2_member` is `lvm2_member`).
        kind: vars.get("TYPE").map(|t| t.to_lowercase()),
        label: vars.get("LABEL").cloned(),
        uuid: vars.get("UUID").cloned(),
    }
}

fn ours(image: &Path) -> Probe {
    let disk = Disk::open(image).unwrap_or_else(|e| panic!("open {}: {e:#}", image.display()));
    let vol = disk
        .volume(0, disk.size(), Budget::new(u64::MAX))
        .unwrap_or_else(|e| panic!("volume of {}: {e}", image.display()));
    probe(&vol).unwrap_or_else(|e| panic!("probe {}: {e}", image.display()))
}

/// Compare on one image; `Err` describes the disagreement.
fn compare(blkid_path: &Path, name: &str, image: &Path, want: FsKind) -> Result<(), String> {
    let theirs = blkid(blkid_path, image);
    let got = ours(image);
    println!(
        "{name:<22} blkid: {:<18} {:<12} {:<38} ours: {:<18} {:<12} {}",
        theirs.kind.as_deref().unwrap_or("-"),
        theirs.label.as_deref().unwrap_or("-"),
        theirs.uuid.as_deref().unwrap_or("-"),
        got.kind.as_str(),
        got.label.as_deref().unwrap_or("-"),
        got.uuid.as_deref().unwrap_or("-"),
    );
    let mine = Seen {
        kind: (got.kind != FsKind::Unknown).then(|| got.kind.as_str().to_owned()),
        label: got.label.clone(),
        uuid: got.uuid.clone(),
    };
    if mine != theirs {
        return Err(format!("{name}: blkid says {theirs:?}, we say {mine:?}"));
    }
    if got.kind != want {
        return Err(format!(
            "{name}: the image should hold {want}, both say {}",
            got.kind
        ));
    }
    Ok(())
}

/// One image: its size, the tool that must exist, and the arguments that make it (the image
/// path is appended, except where `args` holds `{img}`), then bytes patched in at an offset.
struct Case {
    name: &'static str,
    mib: u64,
    tool: &'static str,
    args: &'static [&'static str],
    patch: Option<(u64, &'static [u8])>,
    want: FsKind,
}

const UUID: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

const CASES: &[Case] = &[
    Case {
        name: "ext2",
        mib: 32,
        tool: "mkfs.ext2",
        args: &["-q", "-F", "-L", "ext2-lab", "-U", UUID],
        patch: None,
        want: FsKind::Ext2,
    },
    Case {
        name: "ext3",
        mib: 32,
        tool: "mkfs.ext3",
        args: &["-q", "-F", "-L", "ext3-lab", "-U", UUID],
        patch: None,
        want: FsKind::Ext3,
    },
    Case {
        name: "ext4",
        mib: 32,
        tool: "mkfs.ext4",
        args: &["-q", "-F", "-L", "ext4-lab", "-U", UUID],
        patch: None,
        want: FsKind::Ext4,
    },
    Case {
        name: "ext4 metadata_csum",
        mib: 32,
        tool: "mkfs.ext4",
        args: &[
            "-q",
            "-F",
            "-O",
            "metadata_csum,64bit",
            "-L",
            "csum",
            "-U",
            UUID,
        ],
        patch: None,
        want: FsKind::Ext4,
    },
    Case {
        name: "ext4 no csum, no label",
        mib: 32,
        tool: "mkfs.ext4",
        args: &["-q", "-F", "-O", "^metadata_csum"],
        patch: None,
        want: FsKind::Ext4,
    },
    Case {
        name: "xfs v5",
        mib: 320,
        tool: "mkfs.xfs",
        args: &["-q", "-f", "-L", "xfs-lab"],
        patch: None,
        want: FsKind::Xfs,
    },
    Case {
        name: "xfs v4",
        mib: 320,
        tool: "mkfs.xfs",
        args: &["-q", "-f", "-m", "crc=0", "-L", "xfs4-lab"],
        patch: None,
        want: FsKind::Xfs,
    },
    Case {
        name: "btrfs",
        mib: 256,
        tool: "mkfs.btrfs",
        args: &["-q", "-f", "-L", "btrfs-lab"],
        patch: None,
        want: FsKind::Btrfs,
    },
    Case {
        name: "btrfs xxhash",
        mib: 256,
        tool: "mkfs.btrfs",
        args: &["-q", "-f", "--csum", "xxhash", "-L", "btrfs-xx"],
        patch: None,
        want: FsKind::Btrfs,
    },
    Case {
        name: "vfat fat12",
        mib: 4,
        tool: "mkfs.vfat",
        args: &["-F", "12", "-n", "FAT12LAB"],
        patch: None,
        want: FsKind::Vfat,
    },
    Case {
        name: "vfat fat16",
        mib: 64,
        tool: "mkfs.vfat",
        args: &["-F", "16", "-n", "MY DISK"],
        patch: None,
        want: FsKind::Vfat,
    },
    Case {
        name: "vfat fat32",
        mib: 64,
        tool: "mkfs.vfat",
        args: &["-F", "32", "-s", "1", "-n", "FAT32LAB", "-i", "1234abcd"],
        patch: None,
        want: FsKind::Vfat,
    },
    Case {
        name: "vfat no label",
        mib: 64,
        tool: "mkfs.vfat",
        args: &["-F", "32", "-s", "1"],
        patch: None,
        want: FsKind::Vfat,
    },
    Case {
        name: "exfat",
        mib: 64,
        tool: "mkfs.exfat",
        args: &["-L", "exfat-lab"],
        patch: None,
        want: FsKind::Exfat,
    },
    Case {
        name: "ntfs",
        mib: 64,
        tool: "mkntfs",
        args: &["-F", "-Q", "-q", "-L", "ntfs-lab"],
        patch: None,
        want: FsKind::Ntfs,
    },
    Case {
        name: "swap",
        mib: 16,
        tool: "mkswap",
        args: &["-L", "swap-lab", "-U", UUID],
        patch: None,
        want: FsKind::Swap,
    },
    Case {
        name: "swap 64k pages",
        mib: 16,
        tool: "mkswap",
        args: &["-p", "65536", "-L", "swap64"],
        patch: None,
        want: FsKind::Swap,
    },
    Case {
        // A container signature wins over the filesystem still visible behind it.
        name: "luks magic over ext4",
        mib: 32,
        tool: "mkfs.ext4",
        args: &["-q", "-F", "-L", "inner"],
        patch: Some((0, b"LUKS\xba\xbe\x00\x01")),
        want: FsKind::CryptoLuks,
    },
    Case {
        name: "luks1",
        mib: 32,
        tool: "cryptsetup",
        args: &[
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks1",
            "--pbkdf-force-iterations",
            "1000",
            "--uuid",
            UUID,
            "--key-file",
            "{key}",
            "{img}",
        ],
        patch: None,
        want: FsKind::CryptoLuks,
    },
    Case {
        name: "luks2",
        mib: 32,
        tool: "cryptsetup",
        args: &[
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--label",
            "luks-lab",
            "--key-file",
            "{key}",
            "{img}",
        ],
        patch: None,
        want: FsKind::CryptoLuks,
    },
];

/// Overwrite `bytes` at `at` in the file at `path`.
fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(bytes, at))
        .unwrap_or_else(|e| panic!("cannot patch {}: {e}", path.display()));
}

#[test]
fn filesystems_and_containers_agree_with_blkid() {
    let Some(blkid_path) = find_tool("blkid") else {
        snapscan_tests::skip("blkid not found: no comparison");
        return;
    };
    let tmp = TempDir::new("fs");
    let key = tmp.0.join("key");
    fs::write(&key, b"snapscan-test-passphrase").expect("write key file");

    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let Some(tool) = find_tool(case.tool) else {
            snapscan_tests::skip(&format!("case {}: {} not found", case.name, case.tool));
            continue;
        };
        let img = tmp.0.join(format!("{i}.img"));
        sparse(&img, case.mib);
        let mut cmd = Command::new(tool);
        let mut placed = false;
        for arg in case.args {
            match *arg {
                "{img}" => {
                    cmd.arg(&img);
                    placed = true;
                }
                "{key}" => {
                    cmd.arg(&key);
                }
                a => {
                    cmd.arg(a);
                }
            }
        }
        if !placed {
            cmd.arg(&img);
        }
        if let Err(e) = run(&mut cmd) {
            failures.push(format!("{}: cannot make the image: {e}", case.name));
            continue;
        }
        if let Some((at, bytes)) = case.patch {
            patch(&img, at, bytes);
        }
        if let Err(e) = compare(&blkid_path, case.name, &img, case.want) {
            failures.push(e);
        }
        let _ = fs::remove_file(&img);
    }

    // Nothing at all: both must say so.
    let zeros = tmp.0.join("zeros.img");
    sparse(&zeros, 8);
    if let Err(e) = compare(&blkid_path, "zeros", &zeros, FsKind::Unknown) {
        failures.push(e);
    }

    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}

/// Whether this process runs as root (uid 0), from `/proc/self/status`.
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A loop device over an image, detached on drop.
struct Loop {
    losetup: PathBuf,
    dev: String,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new(&self.losetup).args(["-d", &self.dev])) {
            eprintln!("warning: cannot detach {}: {e}", self.dev);
        }
    }
}

#[test]
fn lvm2_pv_agrees_with_blkid() {
    let tools = ["blkid", "losetup", "pvcreate"].map(find_tool);
    let [Some(blkid_path), Some(losetup), Some(pvcreate)] = tools else {
        snapscan_tests::skip("blkid, losetup or pvcreate not found: no LVM2 comparison");
        return;
    };
    if !is_root() {
        snapscan_tests::skip("not root, no loop device: no LVM2 comparison");
        return;
    }
    let tmp = TempDir::new("lvm");
    let img = tmp.0.join("pv.img");
    sparse(&img, 16);
    {
        // pvcreate wants a block device; this kernel has no device-mapper, but writing the PV
        // label needs none.
        let dev = run(Command::new(&losetup).args(["-f", "--show"]).arg(&img))
            .expect("attach a loop device")
            .trim()
            .to_owned();
        let _loop = Loop {
            losetup,
            dev: dev.clone(),
        };
        run(Command::new(&pvcreate)
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .args([
                "-ff",
                "-y",
                "--config",
                "devices { use_devicesfile = 0 }",
                &dev,
            ]))
        .expect("pvcreate");
    }
    compare(&blkid_path, "lvm2 pv", &img, FsKind::Lvm2Member).unwrap_or_else(|e| panic!("{e}"));
}
