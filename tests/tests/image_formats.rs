//! VM image formats read as the raw disk they hold. The benchmark Debian disk is written in every
//! format by the real tools (`qemu-img`, GNU tar), and for each:
//!
//! - every byte snapscan's reader gives equals what `qemu-img convert -O raw` makes of the file;
//! - `snapscan inspect` reports the raw disk's volumes and OS, and names the format;
//! - `snapscan scan` lists exactly the raw disk's packages (the built-in inventory reads the image
//!   natively) and leaves the image unchanged;
//! - an external scanner gets the image's root as a kernel mount (the decoded disk shown through
//!   FUSE to a read-only loop device) and finds the same packages there, and nothing is left
//!   mounted or attached;
//!
//! and damaged images (corrupt headers, huge virtual sizes, tables pointing outside the file, a
//! backing file that is itself, one outside the allowed directory) fail with an error that
//! names the format and the damage, quickly and without a panic.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use snapscan::disk::reader::{Disk, ReadAt};
use snapscan_tests::expect::{self, sbom_triples};
use snapscan_tests::images::formats::{self, Variant, VARIANTS};
use snapscan_tests::images::{self, is_root};
use snapscan_tests::inspect_json;
use snapscan_tests::scan_env::ScanEnv;

const FIXTURE: &str = "debian-ext4-gpt";
const CHUNK: usize = 4 << 20;
/// An external scanner that lists `name version` of each package in the mounted root's dpkg
/// status (`{{` is a literal brace in a template).
const LISTER: &str = "[scanner.profiles.lister]\n\
    command = [\"/bin/sh\", \"-c\", \"awk '/^Package: /{{p=$2}} /^Version: /{{print p, $2}}' \
    \\\"$0/var/lib/dpkg/status\\\" | sort > packages.txt\", \"{mount}\"]\n\
    outputs = [\"packages.txt\"]\n";

/// The fixture and every variant of it, in a temporary directory.
struct Images {
    dir: tempfile::TempDir,
    raw: std::path::PathBuf,
    built: Vec<(Variant, std::path::PathBuf)>,
}

fn images() -> Option<Images> {
    if !is_root() {
        snapscan_tests::skip("needs root to build the fixture disk");
        return None;
    }
    let raw = images::image(FIXTURE).expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let built = VARIANTS
        .iter()
        .map(|&v| {
            let started = Instant::now();
            let path = formats::build(&raw, v, dir.path())
                .unwrap_or_else(|e| panic!("build {}: {e:#}", v.name));
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            println!(
                "built {:<18} {:>6} MiB in {:.1} s",
                v.name,
                size >> 20,
                started.elapsed().as_secs_f64()
            );
            (v, path)
        })
        .collect();
    Some(Images { dir, raw, built })
}

/// Compare every byte of `disk` with the file `reference`; the first difference.
fn first_difference(disk: &Disk, reference: &Path) -> Option<String> {
    let file = std::fs::File::open(reference).expect("reference");
    let len = file.metadata().expect("stat").len();
    if disk.size() != len {
        return Some(format!("size {} != {len}", disk.size()));
    }
    let mut ours = vec![0u8; CHUNK];
    let mut theirs = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(CHUNK as u64)).expect("chunk");
        if let Err(e) = disk.read_exact_at(at, &mut ours[..n]) {
            return Some(format!("read at {at:#x}: {e}"));
        }
        file.read_exact_at(&mut theirs[..n], at)
            .expect("read reference");
        if ours[..n] != theirs[..n] {
            let i = ours[..n]
                .iter()
                .zip(&theirs[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Some(format!("differs at {:#x}", at + i as u64));
        }
        at += n as u64;
    }
    None
}

#[test]
fn every_format_reads_as_qemu_img_converts_it() {
    let Some(set) = images() else { return };
    let mut bad = Vec::new();
    for (v, path) in &set.built {
        let reference = formats::reference(path, *v, set.dir.path()).expect("reference");
        let started = Instant::now();
        let disk = Disk::open(path).unwrap_or_else(|e| panic!("open {}: {e:#}", v.name));
        assert_eq!(disk.format().name(), v.format, "{}", v.name);
        match first_difference(&disk, &reference) {
            Some(d) => bad.push(format!("{}: {d}", v.name)),
            None => println!(
                "{:<18} {} bytes equal to qemu-img's raw ({:.1} s)",
                v.name,
                disk.size(),
                started.elapsed().as_secs_f64()
            ),
        }
        std::fs::remove_file(&reference).expect("remove reference");
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The one SBOM of a scan's output directory.
fn sbom_of(env: &ScanEnv) -> Value {
    let path = std::fs::read_dir(env.out())
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".cdx.json"))
        .expect("an SBOM");
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
}

#[test]
fn inspect_and_scan_see_the_raw_disk_in_every_format() {
    let Some(set) = images() else { return };
    let raw = inspect_json(&set.raw);
    assert_eq!(raw["image_format"], "raw");
    let want = expect::debian_packages();
    for (v, path) in &set.built {
        let got = inspect_json(path);
        assert_eq!(got["image_format"], v.format, "{}", v.name);
        assert_eq!(got["os"], raw["os"], "{}: os", v.name);
        assert_eq!(got["volumes"], raw["volumes"], "{}: volumes", v.name);
        assert_eq!(got["partition_table"], raw["partition_table"], "{}", v.name);

        let before = expect::sha256_file(path);
        let env = ScanEnv::new("prefer = \"kernel\"\n");
        let out = env.scan(path, &[]);
        assert!(
            out.status.success(),
            "scan {}: {}",
            v.name,
            String::from_utf8_lossy(&out.stderr)
        );
        left_alone(path, &before, &env, v.name);
        let report = env.report();
        let root = report["os"]["volume"].as_u64().expect("root") as usize;
        assert_eq!(report["access"][root]["method"], "native", "{}", v.name);
        let packages = sbom_triples(&sbom_of(&env));
        assert_eq!(packages, want, "{}: packages", v.name);
        println!(
            "{:<18} inspect and scan as raw: {} packages, {} bytes read",
            v.name,
            packages.len(),
            got["bytes_read"]
        );

        let env = ScanEnv::new(LISTER);
        let started = Instant::now();
        let out = env.scan(path, &["--scanner", "lister"]);
        let elapsed = started.elapsed();
        assert!(
            out.status.success(),
            "external scan {}: {}",
            v.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let report = env.report();
        assert_eq!(report["access"][root]["method"], "kernel", "{}", v.name);
        let listed = std::fs::read_to_string(env.out().join("packages.txt")).expect("list");
        let listed: BTreeSet<(String, String)> = listed
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let names: BTreeSet<(String, String)> = want
            .iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect();
        assert_eq!(listed, names, "{}: packages in the mounted tree", v.name);
        left_alone(path, &before, &env, v.name);
        println!(
            "{:<18} external scanner over the mounted image: {} packages in {} ms",
            v.name,
            listed.len(),
            elapsed.as_millis()
        );
    }
}

/// After a scan of `path` in `env`: the image is unchanged (its digest still `before`), and
/// nothing is left mounted or attached.
fn left_alone(path: &Path, before: &str, env: &ScanEnv, name: &str) {
    assert_eq!(expect::sha256_file(path), before, "{name}: image changed");
    let left = env.left_behind(path);
    assert!(left.is_empty(), "{name}: left behind {left:#?}");
}

/// One damaged image: its bytes, and what the error must say.
struct Damage {
    what: &'static str,
    file: &'static str,
    bytes: Vec<u8>,
    says: &'static [&'static str],
}

fn patch(mut bytes: Vec<u8>, at: usize, with: &[u8]) -> Vec<u8> {
    bytes[at..at + with.len()].copy_from_slice(with);
    bytes
}

/// A small image of `format` made by qemu-img from 8 MiB of patterned data.
fn small(format: &str, options: &str, dir: &Path) -> Vec<u8> {
    let raw = dir.join("small.raw");
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i / 4096) as u8 | 1).collect();
    std::fs::write(&raw, data).expect("raw");
    let out = dir.join(format!("small.{format}"));
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", format, "-o", options])
        .arg(&raw)
        .arg(&out)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    std::fs::read(out).expect("read image")
}

#[test]
fn damaged_images_fail_with_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qcow2 = small("qcow2", "compat=1.1", dir.path());
    let vmdk = small("vmdk", "subformat=monolithicSparse", dir.path());
    let vhd = small("vpc", "subformat=dynamic,force_size=on", dir.path());
    let vhdx = small("vhdx", "subformat=dynamic", dir.path());
    let l1_offset = u64::from_be_bytes(qcow2[40..48].try_into().expect("8")) as usize;
    let vhd_bat_at = {
        let dyn_at = u64::from_be_bytes(vhd[16..24].try_into().expect("8")) as usize;
        u64::from_be_bytes(vhd[dyn_at + 16..dyn_at + 24].try_into().expect("8")) as usize
    };
    let mut self_backed = qcow2.clone();
    // A backing file name (at offset 8, its length at 16) that is the image itself.
    let name = b"loop.qcow2";
    let name_at = 0x1000 - name.len();
    self_backed = patch(self_backed, name_at, name);
    self_backed = patch(self_backed, 8, &(name_at as u64).to_be_bytes());
    self_backed = patch(self_backed, 16, &(name.len() as u32).to_be_bytes());
    let mut outside = self_backed.clone();
    let etc = b"/etc/hostname";
    let etc_at = 0x1000 - etc.len();
    outside = patch(outside, etc_at, etc);
    outside = patch(outside, 8, &(etc_at as u64).to_be_bytes());
    outside = patch(outside, 16, &(etc.len() as u32).to_be_bytes());
    let cases = [
        Damage {
            what: "qcow2 with a truncated header",
            file: "cut.qcow2",
            bytes: qcow2[..48].to_vec(),
            says: &["qcow2 image"],
        },
        Damage {
            what: "qcow2 claiming 2^62 bytes",
            file: "huge.qcow2",
            bytes: patch(qcow2.clone(), 24, &(1u64 << 62).to_be_bytes()),
            says: &["qcow2 image", "cannot map"],
        },
        Damage {
            what: "qcow2 whose L2 table is outside the file",
            file: "l2.qcow2",
            bytes: patch(
                qcow2.clone(),
                l1_offset,
                &((1u64 << 40) | (1 << 63)).to_be_bytes(),
            ),
            says: &["qcow2 image", "L2 table", "outside"],
        },
        Damage {
            what: "qcow2 that is its own backing file",
            file: "loop.qcow2",
            bytes: self_backed,
            says: &["qcow2 image", "loop"],
        },
        Damage {
            what: "qcow2 backed by a file outside the allowed directory",
            file: "outside.qcow2",
            bytes: outside,
            says: &["qcow2 image", "/etc/hostname", "outside"],
        },
        Damage {
            what: "VMDK with a corrupt header",
            file: "bad.vmdk",
            bytes: patch(vmdk.clone(), 4, &[0xff; 16]),
            says: &["vmdk image"],
        },
        Damage {
            what: "VMDK claiming 2^60 sectors",
            file: "huge.vmdk",
            bytes: patch(vmdk.clone(), 12, &(1u64 << 60).to_le_bytes()),
            says: &["vmdk image"],
        },
        Damage {
            what: "VHD with a bad footer checksum",
            file: "sum.vhd",
            bytes: {
                let n = vhd.len();
                patch(patch(vhd.clone(), n - 512 + 48, &[0xff]), 48, &[0xff])
            },
            says: &["vhd image", "checksum"],
        },
        Damage {
            what: "VHD whose block lies outside the file",
            file: "bat.vhd",
            bytes: patch(vhd.clone(), vhd_bat_at, &0x7fff_0000u32.to_be_bytes()),
            says: &["vhd", "outside the"],
        },
        Damage {
            what: "VHDX with its headers and region tables wiped",
            file: "bad.vhdx",
            bytes: patch(vhdx.clone(), 0x10000, &vec![0u8; 0x40000]),
            says: &["vhdx image"],
        },
        Damage {
            what: "GCE tarball cut short",
            file: "cut.tar.gz",
            bytes: b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03".to_vec(),
            says: &["gce-tarball image"],
        },
    ];
    let bin = snapscan_tests::snapscan_bin();
    let mut bad = Vec::new();
    for c in cases {
        let path = dir.path().join(c.file);
        std::fs::write(&path, &c.bytes).expect("write");
        let started = Instant::now();
        let out = Command::new(&bin)
            .args(["inspect", "--json"])
            .arg(&path)
            .output()
            .expect("run snapscan");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // A damaged partition table read through the image is a finding in the report.
        let text = format!("{stderr}{stdout}");
        let missing: Vec<_> = c.says.iter().filter(|s| !text.contains(**s)).collect();
        let reported = serde_json::from_str::<Value>(&stdout).is_ok_and(|r| !r["error"].is_null());
        let clean_fail = !out.status.success() || reported;
        if !clean_fail
            || !missing.is_empty()
            || text.contains("panicked")
            || took > Duration::from_secs(20)
        {
            bad.push(format!(
                "{}: exit {:?} in {took:?}, missing {missing:?}: {stderr}",
                c.what,
                out.status.code()
            ));
        } else {
            println!("{}: {}", c.what, stderr.trim());
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
