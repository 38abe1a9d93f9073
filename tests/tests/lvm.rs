//! Native LVM reading against LVM itself and the kernel, on the LVM fixtures (root only: loop
//! devices, LVM tools, mounts; skipped with a note otherwise).
//!
//! - The VGs, LVs and segments that `snapscan::disk::lvm` parses from the raw disk equal what
//!   `pvs` and `lvs` report on read-only loop devices over the PV partitions (LVM confined to
//!   those devices with a private configuration, `--readonly`; nothing is activated).
//! - LV `root` of `debian-lvm`, read through the mapped reader by the native ext4 parser, gives
//!   the same files as the kernel mounting a read-only loop device at the LV's offset and size.
//! - The three-segment LV of `debian-lvm-multiseg` reads byte for byte like the concatenation
//!   of its segments cut out with `dd` at the places `lvs` names, and its files equal the
//!   kernel's mount of that concatenation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use snapscan::disk::lvm::{self, SegmentKind, VolumeGroup};
use snapscan::disk::probe::FsKind;
use snapscan::disk::reader::{Disk, ReadAt, Volume};
use snapscan::fs::{ext4, RootFs};
use snapscan::inspect::{self, DiskReport, Options};
use snapscan_tests::images::cmd::{run, tool};
use snapscan_tests::images::guard::{LoopDevice, Mount};
use snapscan_tests::images::lvm::LvmTools;
use snapscan_tests::images::{self, is_root};

/// A fixture read by snapscan: the image, the report, its volumes and the parsed VGs.
struct Parsed {
    img: PathBuf,
    report: DiskReport,
    volumes: Vec<Option<Volume>>,
    vgs: Vec<VolumeGroup>,
}

fn parse(name: &str) -> Parsed {
    let img = images::image(name).unwrap_or_else(|e| panic!("{e:#}"));
    let disk: Arc<Disk> = Disk::open(&img).expect("open");
    let (report, volumes) = inspect::enumerate(&disk, &Options::default()).expect("enumerate");
    let pvs: Vec<(usize, lvm::Pv)> = report
        .volumes
        .iter()
        .filter(|v| v.filesystem == FsKind::Lvm2Member)
        .map(|v| {
            let vol = volumes[v.index].as_ref().expect("pv volume");
            (v.index, lvm::read_pv(vol).expect("read pv").expect("a pv"))
        })
        .collect();
    let vgs = lvm::assemble(&pvs)
        .into_iter()
        .map(|vg| vg.expect("vg"))
        .collect();
    Parsed {
        img,
        report,
        volumes,
        vgs,
    }
}

/// Read-only loop devices over the PV partitions, and LVM tools confined to them.
fn lvm_view(p: &Parsed) -> (Vec<(usize, LoopDevice)>, LvmTools) {
    let loops: Vec<(usize, LoopDevice)> = p
        .report
        .volumes
        .iter()
        .filter(|v| v.filesystem == FsKind::Lvm2Member)
        .map(|v| {
            let lo = LoopDevice::attach(&p.img, v.start_bytes, Some(v.size_bytes), true)
                .unwrap_or_else(|e| panic!("{e:#}"));
            (v.index, lo)
        })
        .collect();
    let devs: Vec<&Path> = loops.iter().map(|(_, l)| l.path()).collect();
    let tools = LvmTools::new(&devs).unwrap_or_else(|e| panic!("{e:#}"));
    (loops, tools)
}

fn num(s: &str) -> u64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// One linear piece of an LV: (vg, lv, lv uuid, lv size, first extent, extent count, volume
/// index of the PV, first extent on the PV).
type Piece = (String, String, String, u64, u64, u64, usize, u64);

/// One PV: (volume index, pv uuid, pe_start, extent size, vg name, vg uuid).
type PvRow = (usize, String, u64, u64, String, String);

/// A view of the VGs: every LV's pieces and every PV.
type View = (BTreeSet<Piece>, BTreeSet<PvRow>);

/// LVM's own view of the VGs on the PV partitions.
fn lvm_tools_view(p: &Parsed) -> View {
    let (loops, tools) = lvm_view(p);
    let volume_of = |dev: &str| {
        loops
            .iter()
            .find(|(_, l)| l.path().as_os_str() == dev)
            .map(|(i, _)| *i)
            .unwrap_or_else(|| panic!("unknown device {dev}"))
    };
    let pvs = tools
        .report(
            "pvs",
            "pv_name,pv_uuid,pe_start,vg_extent_size,vg_name,vg_uuid",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pvs = pvs
        .iter()
        .map(|r| {
            (
                volume_of(&r[0]),
                r[1].clone(),
                num(&r[2]),
                num(&r[3]),
                r[4].clone(),
                r[5].clone(),
            )
        })
        .collect();
    let segs = tools
        .report(
            "lvs",
            "vg_name,lv_name,lv_uuid,lv_size,seg_start_pe,seg_size_pe,seg_pe_ranges,segtype",
            &["--segments"],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pieces = segs
        .iter()
        .map(|r| {
            assert_eq!(r[7], "linear", "fixture LVs are linear: {r:?}");
            let (dev, range) = r[6].rsplit_once(':').expect("pe range");
            let first = num(range.split('-').next().expect("first pe"));
            (
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                num(&r[3]),
                num(&r[4]),
                num(&r[5]),
                volume_of(dev),
                first,
            )
        })
        .collect();
    for (_, lo) in loops {
        lo.detach().unwrap_or_else(|e| panic!("{e:#}"));
    }
    (pieces, pvs)
}

/// Our view, in the same shape as [`lvm_tools_view`].
fn our_view(p: &Parsed) -> View {
    let mut pieces = BTreeSet::new();
    let mut pvs = BTreeSet::new();
    for vg in &p.vgs {
        for pv in &vg.pvs {
            pvs.insert((
                pv.found.expect("every PV is on the disk"),
                pv.uuid.clone(),
                pv.pe_start_bytes,
                vg.extent_size_bytes,
                vg.name.clone(),
                vg.uuid.clone(),
            ));
        }
        for lv in &vg.lvs {
            assert_eq!(lv.error, None, "{}", lv.name);
            for seg in &lv.segments {
                let SegmentKind::Linear {
                    pv_index,
                    pv_start_extent,
                } = seg.kind
                else {
                    panic!("{}: not linear: {seg:?}", lv.name);
                };
                pieces.insert((
                    vg.name.clone(),
                    lv.name.clone(),
                    lv.uuid.clone(),
                    lv.size_bytes,
                    seg.start_extent,
                    seg.extent_count,
                    vg.pvs[pv_index].found.expect("found"),
                    pv_start_extent,
                ));
            }
        }
    }
    (pieces, pvs)
}

#[test]
fn parsed_vgs_match_lvm_tools() {
    if !is_root() {
        snapscan_tests::skip("needs root for loop devices and LVM tools");
        return;
    }
    for (name, want_pieces) in [("debian-lvm", 2), ("debian-lvm-multiseg", 4)] {
        let p = parse(name);
        let (pieces, pvs) = lvm_tools_view(&p);
        assert_eq!(pieces.len(), want_pieces, "{name}: {pieces:?}");
        assert_eq!(our_view(&p), (pieces, pvs), "{name}: ours, then LVM's");
    }
}

/// Hashes of the given files under a native root and a kernel mount; they must be equal.
fn same_files(what: &str, native: &dyn RootFs, mount: &Path, files: &[&str]) {
    for file in files {
        let ours = native
            .read_file(file, 1 << 30)
            .unwrap_or_else(|e| panic!("{what}: native {file}: {e}"));
        let kernel = std::fs::read(mount.join(file.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{what}: kernel {file}: {e}"));
        assert!(!ours.is_empty(), "{what}: {file} is empty");
        assert_eq!(
            hex::encode(Sha256::digest(&ours)),
            hex::encode(Sha256::digest(&kernel)),
            "{what}: {file}"
        );
    }
}

#[test]
fn lv_root_reads_like_the_kernel_loop_mount() {
    if !is_root() {
        snapscan_tests::skip("needs root for loop devices and mounts");
        return;
    }
    let p = parse("debian-lvm");
    let vg = &p.vgs[0];
    let root = vg.lvs.iter().find(|l| l.name == "root").expect("LV root");
    let (pv_volume, offset, len) = root.linear_extent(vg).expect("one linear segment");
    let start = p.report.volumes[pv_volume].start_bytes + offset;
    let index = p
        .report
        .volumes
        .iter()
        .position(|v| v.lvm.as_ref().is_some_and(|l| l.lv == "root"))
        .expect("LV root in the report");
    assert_eq!(
        (
            p.report.volumes[index].start_bytes,
            p.report.volumes[index].size_bytes
        ),
        (start, len)
    );
    assert_eq!(p.report.os.as_ref().and_then(|o| o.volume), Some(index));
    let native = ext4::open(p.volumes[index].clone().expect("LV volume")).expect("ext4");
    let lo = LoopDevice::attach(&p.img, start, Some(len), true).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().expect("mount point");
    let mnt =
        Mount::new(lo.path(), dir.path(), "ext4", "ro,noload").unwrap_or_else(|e| panic!("{e:#}"));
    same_files(
        "debian-lvm root",
        &native,
        mnt.target(),
        &[
            "/etc/os-release",
            "/etc/hostname",
            "/var/lib/dpkg/status",
            "/usr/bin/dpkg",
        ],
    );
    mnt.unmount().unwrap_or_else(|e| panic!("{e:#}"));
    lo.detach().unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn multi_segment_lv_reads_as_its_segments() {
    if !is_root() {
        snapscan_tests::skip("needs root for loop devices, LVM tools and mounts");
        return;
    }
    let p = parse("debian-lvm-multiseg");
    let (pieces, pvs) = lvm_tools_view(&p);
    let data: Vec<&Piece> = pieces.iter().filter(|s| s.1 == "data").collect();
    assert_eq!(data.len(), 3, "{pieces:?}");
    assert!(
        data.iter().map(|s| s.6).collect::<BTreeSet<_>>().len() == 2,
        "the segments span both PVs: {data:?}"
    );
    // Cut each segment out of the image with dd where LVM says it is, and concatenate.
    let work = tempfile::tempdir().expect("work dir");
    let concat = work.path().join("data.img");
    for &(_, _, _, _, lv_first, count, volume, pv_first) in &data {
        let (_, _, pe_start, extent, _, _) = pvs.iter().find(|pv| pv.0 == *volume).expect("pv");
        let skip = p.report.volumes[*volume].start_bytes + pe_start + pv_first * extent;
        run(
            tool("dd")
                .arg(format!("if={}", p.img.display()))
                .arg(format!("of={}", concat.display()))
                .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
                .args(["iflag=skip_bytes,count_bytes", "oflag=seek_bytes"])
                .arg(format!("skip={skip}"))
                .arg(format!("count={}", count * extent))
                .arg(format!("seek={}", lv_first * extent)),
            None,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let want = std::fs::read(&concat).expect("read the concatenation");
    let index = p
        .report
        .volumes
        .iter()
        .position(|v| v.lvm.as_ref().is_some_and(|l| l.lv == "data"))
        .expect("LV data in the report");
    let vol = p.volumes[index].clone().expect("LV volume");
    let mut ours = vec![0u8; usize::try_from(vol.size()).expect("size")];
    vol.read_exact_at(0, &mut ours).expect("read the LV");
    assert_eq!(ours.len(), want.len(), "LV size");
    for (i, (a, b)) in ours.chunks(4 << 20).zip(want.chunks(4 << 20)).enumerate() {
        assert!(b.iter().any(|&x| x != 0), "extent {i} of the LV holds data");
        assert_eq!(
            hex::encode(Sha256::digest(a)),
            hex::encode(Sha256::digest(b)),
            "extent {i}"
        );
    }
    let native = ext4::open(vol).expect("ext4");
    let lo = LoopDevice::attach(&concat, 0, None, true).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().expect("mount point");
    let mnt =
        Mount::new(lo.path(), dir.path(), "ext4", "ro,noload").unwrap_or_else(|e| panic!("{e:#}"));
    same_files(
        "multi-segment LV",
        &native,
        mnt.target(),
        &["/README.txt", "/data/big.bin", "/data/small.txt"],
    );
    mnt.unmount().unwrap_or_else(|e| panic!("{e:#}"));
    lo.detach().unwrap_or_else(|e| panic!("{e:#}"));
}
