//! Unit tests over synthetic PVs laid out as LVM2 writes them: one valid image, then one field
//! patched per case with the exact error expected.
#![allow(clippy::arithmetic_side_effects, clippy::as_conversions)]

use super::label::{CRC32_LVM, MDA_MAGIC};
use super::*;
use crate::disk::reader::{Budget, Disk};

const IMG: usize = 1 << 20;
const MDA: usize = 4096;
const MDA_SIZE: usize = 61440;
const EXT: usize = 4096;
const PE_START: usize = 65536;
const PV_RAW: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz012345";
const PV_UUID: &str = "abcdef-ghij-klmn-opqr-stuv-wxyz-012345";

/// The LVs of the default text: `root` (extents 10-11 then 3 of pv0), a hidden one, a thin one
/// and a single-segment `swap`.
const LVS: &str = r#"
root {
id = "root-uuid"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 2
segment1 {
start_extent = 0
extent_count = 2
type = "striped"
stripe_count = 1	# linear
stripes = [
"pv0", 10
]
}
segment2 {
start_extent = 2
extent_count = 1
type = "striped"
stripe_count = 1
stripes = [
"pv0", 3
]
}
}
pool_tmeta {
id = "hidden-uuid"
status = ["READ", "WRITE"]
segment1 {
start_extent = 0
extent_count = 1
type = "striped"
stripe_count = 1
stripes = ["pv0", 20]
}
}
thin {
id = "thin-uuid"
status = ["READ", "WRITE", "VISIBLE"]
segment1 {
start_extent = 0
extent_count = 4
type = "thin"
thin_pool = "pool"
}
}
swap {
id = "swap-uuid"
status = ["READ", "WRITE", "VISIBLE"]
segment1 {
start_extent = 0
extent_count = 5
type = "striped"
stripe_count = 1
stripes = ["pv0", 100]
}
}
"#;

fn text(extent_size: &str, lvs: &str) -> String {
    format!(
        "vg0 {{\nid = \"vg-uuid\"\nseqno = 7\nformat = \"lvm2\"\n\
         status = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\nflags = []\nextent_size = {extent_size}\n\
         physical_volumes {{\npv0 {{\nid = \"{PV_UUID}\"\ndevice = \"/dev/loop9\"\n\
         status = [\"ALLOCATABLE\"]\ndev_size = 2048\npe_start = 128\npe_count = 240\n}}\n}}\n\
         logical_volumes {{\n{lvs}\n}}\n}}\n\
         contents = \"Text Format Volume Group\"\nversion = 1\n\0"
    )
}

fn put(img: &mut [u8], at: usize, bytes: &[u8]) {
    img[at..at + bytes.len()].copy_from_slice(bytes);
}

fn fix_label(img: &mut [u8]) {
    let crc = CRC32_LVM.checksum(&img[512 + 20..1024]);
    put(img, 512 + 16, &crc.to_le_bytes());
}

fn fix_mda(img: &mut [u8]) {
    let crc = CRC32_LVM.checksum(&img[MDA + 4..MDA + 512]);
    put(img, MDA, &crc.to_le_bytes());
}

/// Write `text` at `offset` in the metadata area (wrapping as LVM does) and point raw_locn[0]
/// at it.
fn set_text(img: &mut [u8], text: &[u8], offset: usize) {
    let first = text.len().min(MDA_SIZE - offset);
    put(img, MDA + offset, &text[..first]);
    put(img, MDA + 512, &text[first..]);
    put(img, MDA + 40, &(offset as u64).to_le_bytes());
    put(img, MDA + 48, &(text.len() as u64).to_le_bytes());
    put(img, MDA + 56, &CRC32_LVM.checksum(text).to_le_bytes());
    fix_mda(img);
}

/// A PV with its label in sector 1, one metadata area at 4 KiB and each extent filled with its
/// own number.
fn image(text: &str) -> Vec<u8> {
    let mut img = vec![0u8; IMG];
    put(&mut img, 512, b"LABELONE");
    put(&mut img, 512 + 8, &1u64.to_le_bytes());
    put(&mut img, 512 + 20, &32u32.to_le_bytes());
    put(&mut img, 512 + 24, b"LVM2 001");
    let h = 512 + 32;
    put(&mut img, h, PV_RAW);
    put(&mut img, h + 32, &(IMG as u64).to_le_bytes());
    put(&mut img, h + 40, &(PE_START as u64).to_le_bytes()); // data area, then a terminator
    put(&mut img, h + 72, &(MDA as u64).to_le_bytes());
    put(&mut img, h + 80, &(MDA_SIZE as u64).to_le_bytes());
    fix_label(&mut img);
    put(&mut img, MDA + 4, MDA_MAGIC);
    put(&mut img, MDA + 20, &1u32.to_le_bytes());
    put(&mut img, MDA + 24, &(MDA as u64).to_le_bytes());
    put(&mut img, MDA + 32, &(MDA_SIZE as u64).to_le_bytes());
    set_text(&mut img, text.as_bytes(), 512);
    for e in 0..240 {
        let at = PE_START + e * EXT;
        img[at..at + EXT].fill(e as u8);
    }
    img
}

fn vol(img: Vec<u8>) -> Volume {
    let disk = Disk::from_bytes("pv", img);
    disk.volume(0, disk.size(), Budget::new(u64::MAX))
        .expect("volume")
}

fn default_image() -> Vec<u8> {
    image(&text("8", LVS))
}

fn vg_of(img: Vec<u8>) -> (VolumeGroup, Volume) {
    let v = vol(img);
    let pv = read_pv(&v).expect("read").expect("a pv");
    let mut vgs = assemble(&[(0, pv)]);
    assert_eq!(vgs.len(), 1);
    (vgs.remove(0).expect("vg"), v)
}

#[test]
fn reads_a_valid_pv_and_maps_its_lvs() {
    let (vg, v) = vg_of(default_image());
    assert_eq!(
        (vg.name.as_str(), vg.uuid.as_str(), vg.seqno),
        ("vg0", "vg-uuid", 7)
    );
    assert_eq!(vg.extent_size_bytes, EXT as u64);
    assert_eq!(vg.pvs.len(), 1);
    assert_eq!(
        (
            vg.pvs[0].uuid.as_str(),
            vg.pvs[0].found,
            vg.pvs[0].pe_start_bytes
        ),
        (PV_UUID, Some(0), PE_START as u64)
    );
    let names: Vec<&str> = vg.lvs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["root", "thin", "swap"], "hidden LVs are left out");
    let root = &vg.lvs[0];
    assert_eq!(root.size_bytes, 3 * EXT as u64);
    assert_eq!(root.error, None);
    assert_eq!(root.linear_extent(&vg), None, "two segments");
    assert_eq!(
        root.first_extent(&vg),
        Some((0, (PE_START + 10 * EXT) as u64))
    );
    let swap = &vg.lvs[2];
    assert_eq!(
        swap.linear_extent(&vg),
        Some((0, (PE_START + 100 * EXT) as u64, 5 * EXT as u64))
    );

    let volumes = [Some(v)];
    let lv = root
        .open(&vg, &volumes, Budget::new(u64::MAX))
        .expect("open");
    let mut buf = vec![0u8; 3 * EXT];
    lv.read_exact_at(0, &mut buf).expect("read the lv");
    let want: Vec<u8> = [10u8, 11, 3]
        .iter()
        .flat_map(|&e| std::iter::repeat_n(e, EXT))
        .collect();
    assert_eq!(buf, want, "extents 10, 11, then 3");

    let thin = vg.lvs[1].open(&vg, &volumes, Budget::new(u64::MAX));
    assert_eq!(thin.map(|_| ()).map_err(|e| e.kind()), Err("unsupported"));
    let missing = root.open(&vg, &[None], Budget::new(u64::MAX));
    assert_eq!(
        missing.map(|_| ()).map_err(|e| e.to_string()),
        Err(format!("lvm physical volume {PV_UUID} is not on this disk"))
    );
}

#[test]
fn follows_text_that_wraps_around_the_area() {
    let mut img = default_image();
    let text = text("8", LVS);
    set_text(&mut img, text.as_bytes(), MDA_SIZE - 100);
    let (vg, _) = vg_of(img);
    assert_eq!(vg.lvs.len(), 3);
}

#[test]
fn no_label_is_none() {
    assert_eq!(
        read_pv(&vol(vec![0u8; 8192])).map(|p| p.is_some()),
        Ok(false)
    );
}

#[test]
fn damaged_pvs_give_exact_errors() {
    type Patch = fn(&mut Vec<u8>);
    let cases: [(&str, Patch, &str); 11] = [
        (
            "bad label crc",
            |i| i[512 + 100] ^= 1,
            "lvm label: checksum mismatch (position 0x200)",
        ),
        (
            "label in the wrong sector",
            |i| {
                put(i, 512 + 8, &2u64.to_le_bytes());
                fix_label(i);
            },
            "sector number does not match",
        ),
        (
            "pv header offset out of the sector",
            |i| {
                put(i, 512 + 20, &500u32.to_le_bytes());
                fix_label(i);
            },
            "pv header offset outside the label sector",
        ),
        (
            "bad mda checksum",
            |i| i[MDA + 100] ^= 1,
            "header checksum mismatch (position 0x1000)",
        ),
        (
            "bad mda magic",
            |i| {
                i[MDA + 5] = b'X';
                fix_mda(i);
            },
            "bad magic",
        ),
        (
            "mda header elsewhere",
            |i| {
                put(i, MDA + 24, &8192u64.to_le_bytes());
                fix_mda(i);
            },
            "disagrees with the pv header",
        ),
        (
            "bad text checksum",
            |i| i[MDA + 600] ^= 1,
            "text checksum mismatch",
        ),
        (
            "truncated text",
            |i| {
                let t = text("8", LVS);
                let cut = t.find("root {").expect("root");
                set_text(i, &t.as_bytes()[..cut], 512);
            },
            "unterminated section",
        ),
        (
            "text longer than the area",
            |i| {
                put(i, MDA + 48, &(1u64 << 40).to_le_bytes());
                fix_mda(i);
            },
            "does not fit the area",
        ),
        (
            "metadata area past the volume",
            |i| {
                put(i, 512 + 32 + 80, &(1u64 << 40).to_le_bytes());
                fix_label(i);
            },
            "does not fit the 1048576-byte volume",
        ),
        (
            "deep nesting",
            |i| {
                let deep = format!("vg0 {{ {} }}", "a { ".repeat(40) + &"} ".repeat(40));
                set_text(i, deep.as_bytes(), 512);
            },
            "nested deeper than 32 levels",
        ),
    ];
    for (name, patch, want) in cases {
        let mut img = default_image();
        patch(&mut img);
        let got = read_pv(&vol(img)).map(|p| p.is_some());
        match got {
            Err(e) => assert!(e.to_string().contains(want), "case {name}: {e}"),
            Ok(found) => panic!("case {name}: no error (pv found: {found})"),
        }
    }
}

#[test]
fn bad_segments_are_errors_of_their_lv() {
    let seg = |start: &str, count: &str, stripes: &str| {
        format!(
            "bad {{\nid = \"x\"\nstatus = [\"VISIBLE\"]\nsegment1 {{\nstart_extent = {start}\n\
             extent_count = {count}\ntype = \"striped\"\nstripe_count = 1\nstripes = [{stripes}]\n}}\n}}"
        )
    };
    for (name, lv, want) in [
        (
            "past the pv",
            seg("0", "2", "\"pv0\", 239"),
            "lie past the end of pv pv0",
        ),
        (
            "absurd extent count",
            seg("0", "4611686018427387904", "\"pv0\", 0"),
            "past the end of pv",
        ),
        (
            "negative extent",
            seg("0", "1", "\"pv0\", -1"),
            "negative pv extent",
        ),
        (
            "unknown pv",
            seg("0", "1", "\"pv7\", 0"),
            "unknown pv \"pv7\"",
        ),
        (
            "gap at the start",
            seg("3", "1", "\"pv0\", 0"),
            "not contiguous at extent 3",
        ),
        ("no extents", seg("0", "0", "\"pv0\", 0"), "not contiguous"),
        (
            "stripe list mismatch",
            seg("0", "1", "\"pv0\", 0, \"pv0\", 5"),
            "stripe_count",
        ),
    ] {
        let (vg, v) = vg_of(image(&text("8", &lv)));
        let lv = &vg.lvs[0];
        let err = lv
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(err.contains(want), "case {name}: {err:?}");
        let open = lv.open(&vg, &[Some(v)], Budget::new(u64::MAX));
        assert_eq!(
            open.map(|_| ()).map_err(|e| e.kind()),
            Err("corrupt"),
            "case {name}"
        );
    }
}

#[test]
fn absurd_extent_size_fails_the_vg() {
    let v = vol(image(&text("36028797018963968", LVS)));
    let pv = read_pv(&v).expect("read").expect("pv");
    let got = assemble(&[(0, pv)])
        .remove(0)
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        got,
        Err("corrupt lvm metadata: volume group vg0: missing or invalid extent_size".into())
    );
}

#[test]
fn newest_metadata_wins_across_pvs() {
    let old = image(&text("8", LVS));
    let newer = text("8", LVS)
        .replace("seqno = 7", "seqno = 9")
        .replace("swap {", "swap2 {");
    let pv_old = read_pv(&vol(old)).expect("read").expect("pv");
    let pv_new = read_pv(&vol(image(&newer))).expect("read").expect("pv");
    let vgs = assemble(&[(0, pv_old), (1, pv_new)]);
    assert_eq!(vgs.len(), 1, "one VG UUID");
    let vg = vgs[0].as_ref().expect("vg");
    assert_eq!(vg.seqno, 9);
    assert!(vg.lvs.iter().any(|l| l.name == "swap2"));
}
