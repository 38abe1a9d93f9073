//! Identify what a volume holds by superblock magic: filesystems (ext2/3/4, XFS, Btrfs, NTFS,
//! FAT, exFAT), swap, and containers (LVM2 physical volume, LUKS1/2, BitLocker, Linux md RAID
//! member), with the label and UUID where they sit next to the magic.
//!
//! The checks follow util-linux `libblkid` (`libblkid/src/superblocks/*.c`) so that [`probe`]
//! agrees with `blkid -p` on TYPE, LABEL and UUID: the same signature offsets, the same sanity
//! checks and checksums where they are cheap (ext4 `metadata_csum`, XFS v5 and Btrfs CRC32C, the md
//! v1 superblock sum, the LVM label CRC, the exFAT boot-region checksum), the same precedence
//! (RAID, LVM, LUKS and BitLocker win over a filesystem found inside them) and the same label
//! and UUID formatting. Where it reads a directory for a label (FAT and exFAT root directory, the
//! NTFS `$Volume` record) it reads at most a few hundred KiB.
//!
//! It does not mount anything, walk a filesystem, open a container or assemble an array, and it
//! does not report several signatures: the first match in blkid's order wins, where `blkid -p`
//! would call two filesystems on one volume ambivalent and report neither. Specs: the ext4 and
//! XFS on-disk format docs in the kernel tree, `btrfs-progs` `kernel-shared/ctree.h`, Microsoft's
//! FAT and exFAT specifications, the LUKS1/LUKS2 on-disk format documents, LVM2
//! `lib/format_text/layout.h`, md `include/uapi/linux/raid/md_p.h`, and libyal's BitLocker notes.
//!
//! This file holds what the probes share: [`probe`], which reads the head of the volume once and
//! tries each signature in blkid's order, the [`FsKind`] and [`Probe`] it returns, the
//! bounds-checked `Source` every probe reads through, and the label, serial and CRC32C helpers
//! more than one probe uses. Each signature has its own file, named after it: `md_raid`, `lvm2`,
//! `luks` and `bitlocker` for the containers, then `fat`, `swap`, `xfs`, `ext`, `ntfs`, `btrfs`
//! and `exfat`. Each one exposes a single `probe_*` function and keeps its unit tests: a builder
//! for the smallest image it accepts and the cases it must recognise and reject. The tests here
//! run those cases through [`probe`] and cover what is shared (container precedence, label
//! decoding, read errors, truncated and random input); `testutil` holds the image builder and
//! case runner they all use.
//!
//! Every byte read comes from the volume being probed, which is untrusted: all offsets and sizes
//! from the disk go through checked arithmetic and `get`, never indexing. The lints below hold
//! for every file of the module.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fmt;
use std::io;

use serde::Serialize;

use crc::Crc;

use super::reader::{read_vec, ReadAt};
use crate::bytes::{get, utf16z};

mod bitlocker;
mod btrfs;
mod exfat;
mod ext;
mod fat;
mod luks;
mod lvm2;
mod md_raid;
mod ntfs;
mod swap;
#[cfg(test)]
mod testutil;
mod xfs;

/// What a volume holds, named as in the `inspect --json` output (`blkid`'s TYPE, lowercased).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    /// ext2: no journal and no feature ext2 lacks.
    Ext2,
    /// ext3: a journal and no feature ext3 lacks.
    Ext3,
    /// ext4: any feature ext3 does not understand (extents, 64bit, flex_bg, metadata_csum...).
    Ext4,
    /// XFS (v4 or v5).
    Xfs,
    /// Btrfs (this device of the filesystem).
    Btrfs,
    /// NTFS.
    Ntfs,
    /// FAT12, FAT16 or FAT32.
    Vfat,
    /// exFAT.
    Exfat,
    /// Linux swap area (v0 or v1).
    Swap,
    /// LVM2 physical volume.
    Lvm2Member,
    /// LUKS1 or LUKS2 encrypted volume.
    CryptoLuks,
    /// BitLocker encrypted volume.
    Bitlocker,
    /// Member of a Linux md RAID array (superblock 0.90, 1.0, 1.1 or 1.2).
    LinuxRaidMember,
    /// Nothing recognised.
    Unknown,
}

impl FsKind {
    /// The name used in JSON (same as the serde form): `"ext4"`, `"lvm2_member"`,
    /// `"crypto_luks"`, `"linux_raid_member"`...
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Ntfs => "ntfs",
            FsKind::Vfat => "vfat",
            FsKind::Exfat => "exfat",
            FsKind::Swap => "swap",
            FsKind::Lvm2Member => "lvm2_member",
            FsKind::CryptoLuks => "crypto_luks",
            FsKind::Bitlocker => "bitlocker",
            FsKind::LinuxRaidMember => "linux_raid_member",
            FsKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`probe`] found on a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The filesystem or container; [`FsKind::Unknown`] when nothing matched.
    pub kind: FsKind,
    /// The volume label, decoded lossily and with trailing whitespace removed, as blkid prints
    /// it; `None` when there is none (or it is empty).
    pub label: Option<String>,
    /// The UUID or serial in blkid's format: `8-4-4-4-12` lowercase for DCE UUIDs, `XXXX-XXXX`
    /// for FAT and exFAT, 16 uppercase hex digits for NTFS, `6-4-4-4-4-4-6` for an LVM2 PV.
    /// `None` when absent or all zeroes.
    pub uuid: Option<String>,
}

impl Probe {
    fn new(kind: FsKind, label: Option<String>, uuid: Option<String>) -> Self {
        Probe { kind, label, uuid }
    }
}

/// Identify what `r` holds.
///
/// Reads only a few small blocks: the first 4 KiB, the superblock of whichever signature
/// matches, the md RAID superblock slots near the end, and for FAT, exFAT and NTFS the start of
/// the root directory or the `$Volume` record for the label (a few hundred KiB at most). Never
/// panics. Returns an I/O error only when the volume cannot be read at all at offset 0, or when
/// a read was cancelled (`ErrorKind::Interrupted`, see [`super::reader::Budget::cancel`]); a
/// read that fails further in (a small or damaged volume) just means that signature is absent.
pub fn probe(r: &(impl ReadAt + ?Sized)) -> io::Result<Probe> {
    let size = r.size();
    let head_len = usize::try_from(size.min(HEAD_LEN)).unwrap_or(0);
    let head = read_vec(r, 0, head_len)?;
    let src = Source {
        r,
        size,
        head,
        stop: RefCell::new(None),
    };
    // blkid ignores devices of 1 KiB or less (an extended-partition stub, for example).
    let found = if size <= 1024 {
        None
    } else {
        let probes: [fn(&Source<'_, _>) -> Option<Probe>; 11] = [
            // Containers first: what is inside them may carry a filesystem signature too.
            md_raid::probe_md_raid,
            lvm2::probe_lvm2,
            luks::probe_luks,
            bitlocker::probe_bitlocker,
            // Filesystems, in blkid's order.
            fat::probe_vfat,
            swap::probe_swap,
            xfs::probe_xfs,
            ext::probe_ext,
            ntfs::probe_ntfs,
            btrfs::probe_btrfs,
            exfat::probe_exfat,
        ];
        probes.iter().find_map(|p| p(&src))
    };
    if let Some(e) = src.stop.take() {
        return Err(e);
    }
    Ok(found.unwrap_or(Probe::new(FsKind::Unknown, None, None)))
}

/// How much of the start of the volume is read up front (most signatures live here).
const HEAD_LEN: u64 = 4096;

/// The volume being probed: bounds-checked reads that turn failure into "absent".
struct Source<'a, R: ReadAt + ?Sized> {
    r: &'a R,
    size: u64,
    head: Vec<u8>,
    /// A cancellation seen by any read: every later read fails and [`probe`] returns it.
    stop: RefCell<Option<io::Error>>,
}

impl<R: ReadAt + ?Sized> Source<'_, R> {
    /// `len` bytes at `off`, or `None` when they are outside the volume or cannot be read.
    fn read(&self, off: u64, len: usize) -> Option<Vec<u8>> {
        if self.stop.borrow().is_some() {
            return None;
        }
        let end = off.checked_add(u64::try_from(len).ok()?)?;
        if end > self.size {
            return None;
        }
        if end <= u64::try_from(self.head.len()).ok()? {
            let start = usize::try_from(off).ok()?;
            return get(&self.head, start, len).map(<[u8]>::to_vec);
        }
        match read_vec(self.r, off, len) {
            Ok(buf) => Some(buf),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                *self.stop.borrow_mut() = Some(e);
                None
            }
            Err(_) => None,
        }
    }

    /// Whether the bytes at `off` are `magic`.
    fn has(&self, off: u64, magic: &[u8]) -> bool {
        self.read(off, magic.len()).is_some_and(|b| b == magic)
    }
}

fn usize_from(v: impl Into<u64>) -> Option<usize> {
    usize::try_from(v.into()).ok()
}

/// C `isspace` in the "C" locale, which is what blkid trims labels with.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn label_from(s: &str) -> Option<String> {
    let t = s.trim_end_matches(is_c_space);
    (!t.is_empty()).then(|| t.to_owned())
}

/// A NUL-terminated (or full-width) byte label, lossy UTF-8, trailing whitespace removed.
fn c_label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    label_from(&String::from_utf8_lossy(raw.get(..end)?))
}

/// A UTF-16LE label (NTFS, exFAT, BitLocker), up to the first NUL, lossy, trailing whitespace
/// removed.
fn utf16_label(raw: &[u8]) -> Option<String> {
    label_from(&utf16z(raw))
}

/// A FAT/exFAT volume serial as blkid prints it (`XXXX-XXXX`); `None` when zero.
fn fat_serial(serial: [u8; 4]) -> Option<String> {
    let [a, b, c, d] = serial;
    (serial != [0; 4]).then(|| format!("{d:02X}{c:02X}-{b:02X}{a:02X}"))
}

/// CRC32C (Castagnoli), as XFS and Btrfs store it.
const CRC32C: Crc<u32> = Crc::<u32>::new(&crc::CRC_32_ISCSI);

#[cfg(test)]
// Test fixtures are built with plain arithmetic and indexing on buffers we own; the lints above
// guard the parser, which reads untrusted bytes.
#[allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]
mod tests {
    use super::bitlocker::tests::bitlocker;
    use super::btrfs::tests::btrfs;
    use super::exfat::tests::{exfat, exfat_csum};
    use super::ext::tests::{ext, ext_csum};
    use super::fat::tests::{fat16, fat32};
    use super::luks::tests::luks;
    use super::lvm2::tests::{lvm_label, PV_UUID};
    use super::md_raid::tests::{md0, md1};
    use super::ntfs::tests::ntfs;
    use super::swap::tests::swap;
    use super::testutil::{case, check, p, unknown, Img, UUID_STR};
    use super::xfs::tests::xfs;
    use super::*;
    use proptest::prelude::*;

    /// The `tests::recognised` cases of every family's file.
    #[test]
    fn recognises_each_signature() {
        for cases in [
            ext::tests::recognised(),
            xfs::tests::recognised(),
            btrfs::tests::recognised(),
            ntfs::tests::recognised(),
            fat::tests::recognised(),
            exfat::tests::recognised(),
            swap::tests::recognised(),
            lvm2::tests::recognised(),
            luks::tests::recognised(),
            bitlocker::tests::recognised(),
            md_raid::tests::recognised(),
        ] {
            check(cases);
        }
    }

    #[test]
    fn containers_win_over_filesystems_inside() {
        let ext4 = || ext(0x4, 0x2 | 0x40, 0x3);
        let len = ext4().0.len();
        check(vec![
            case(
                "md 1.0 at the end of a disk with ext4 at the start",
                md1(ext4(), len - 8192).done(),
                p(FsKind::LinuxRaidMember, Some("host:0"), Some(UUID_STR)),
            ),
            case(
                "md 1.2 over ext4",
                md1(ext4(), 4096).done(),
                p(FsKind::LinuxRaidMember, Some("host:0"), Some(UUID_STR)),
            ),
            case(
                "lvm2 label in sector 1 over ext4",
                lvm_label(ext4(), 1, PV_UUID).done(),
                p(
                    FsKind::Lvm2Member,
                    None,
                    Some("C2saHb-0k0Q-4l3v-eqGk-duOa-ctvL-evHjZe"),
                ),
            ),
            case(
                "luks header over a stale swap signature",
                {
                    let mut i = swap(4096, b"SWAPSPACE2");
                    i.put(0, b"LUKS\xba\xbe")
                        .be16(6, 1)
                        .put(168, UUID_STR.as_bytes());
                    i.done()
                },
                p(FsKind::CryptoLuks, None, Some(UUID_STR)),
            ),
            case(
                "bitlocker over a stale fat boot sector",
                {
                    let mut i = bitlocker("x");
                    i.put(0x0b, &fat16(None).0[0x0b..0x3e])
                        .put(0x1fe, b"\x55\xaa");
                    i.done()
                },
                p(
                    FsKind::Bitlocker,
                    Some("x"),
                    Some("44332211-6655-8877-99aa-bbccddeeff01"),
                ),
            ),
        ]);
    }

    /// What no probe may claim, then the `tests::rejected` cases of every family's file.
    #[test]
    fn rejects_broken_signatures() {
        check(vec![
            case("empty", Vec::new(), unknown()),
            case("all zeroes", vec![0; 1 << 20], unknown()),
            case(
                "1 KiB is too small for anything",
                luks(1).done()[..1024].to_vec(),
                unknown(),
            ),
        ]);
        for cases in [
            ext::tests::rejected(),
            xfs::tests::rejected(),
            btrfs::tests::rejected(),
            ntfs::tests::rejected(),
            fat::tests::rejected(),
            exfat::tests::rejected(),
            swap::tests::rejected(),
            lvm2::tests::rejected(),
            luks::tests::rejected(),
            bitlocker::tests::rejected(),
            md_raid::tests::rejected(),
        ] {
            check(cases);
        }
    }

    #[test]
    fn labels_are_decoded_and_trimmed() {
        check(vec![
            case(
                "ext label invalid utf-8",
                ext(0, 0, 0).put(1024 + 0x78, b"caf\xe9\0\0").done(),
                p(FsKind::Ext2, Some("caf\u{fffd}"), Some(UUID_STR)),
            ),
            case(
                "ext label all spaces",
                ext(0, 0, 0).put(1024 + 0x78, b"        ").done(),
                p(FsKind::Ext2, None, Some(UUID_STR)),
            ),
            case(
                "ext label full width without NUL",
                ext(0, 0, 0).put(1024 + 0x78, b"0123456789abcdef").done(),
                p(FsKind::Ext2, Some("0123456789abcdef"), Some(UUID_STR)),
            ),
            case(
                "luks2 label with trailing tab",
                luks(2).put(24, b"vault\t").done(),
                p(FsKind::CryptoLuks, Some("vault"), Some(UUID_STR)),
            ),
            case(
                "exfat label stops at NUL",
                exfat_csum(exfat("ab").put(64 * 512 + 1, &[5]).clone()).done(),
                p(FsKind::Exfat, Some("ab"), Some("1122-3344")),
            ),
            case(
                "exfat lone surrogate",
                exfat_csum(exfat("ab").put(64 * 512 + 2, &[0x00, 0xd8]).clone()).done(),
                p(FsKind::Exfat, Some("\u{fffd}b"), Some("1122-3344")),
            ),
        ]);
    }

    #[test]
    fn kind_names_match_serde() {
        let all = [
            FsKind::Ext2,
            FsKind::Ext3,
            FsKind::Ext4,
            FsKind::Xfs,
            FsKind::Btrfs,
            FsKind::Ntfs,
            FsKind::Vfat,
            FsKind::Exfat,
            FsKind::Swap,
            FsKind::Lvm2Member,
            FsKind::CryptoLuks,
            FsKind::Bitlocker,
            FsKind::LinuxRaidMember,
            FsKind::Unknown,
        ];
        for k in all {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()), "{k:?}");
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(FsKind::Lvm2Member.as_str(), "lvm2_member");
        assert_eq!(FsKind::CryptoLuks.as_str(), "crypto_luks");
        assert_eq!(FsKind::LinuxRaidMember.as_str(), "linux_raid_member");
    }

    #[test]
    fn crc_known_answers() {
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
    }

    /// Every valid fixture above, for the truncation and mutation tests.
    fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("ext4", ext_csum(ext(0x4, 0x2c2, 0x400)).done()),
            ("xfs", xfs(true).done()),
            ("btrfs", btrfs().done()),
            ("ntfs", ntfs("Windows").done()),
            ("fat16", fat16(Some(b"DATA       ")).done()),
            ("fat32", fat32(Some(b"DATA       ")).done()),
            ("exfat", exfat("USB").done()),
            ("swap", swap(4096, b"SWAPSPACE2").done()),
            ("lvm2", lvm_label(Img::new(8192), 1, PV_UUID).done()),
            ("luks2", luks(2).done()),
            ("bitlocker", bitlocker("d").done()),
            ("md", md1(Img::new(128 * 1024), 4096).done()),
            ("md0", md0(256 * 1024).done()),
        ]
    }

    #[test]
    fn truncated_images_do_not_panic() {
        for (name, img) in fixtures() {
            let mut cuts: Vec<usize> = vec![0, 1, 3, 11, 512, 1024, 1025, 1100, 2048, 4095, 4096];
            cuts.extend((1..16).map(|k| img.len() * k / 16));
            cuts.push(img.len() - 1);
            for cut in cuts.into_iter().filter(|&c| c <= img.len()) {
                let got = probe(&img[..cut]);
                assert!(got.is_ok(), "{name} cut at {cut}: {got:?}");
            }
        }
    }

    /// xorshift64*: deterministic noise without another dependency.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn random_bytes_are_unknown() {
        for seed in 1..=32u64 {
            for len in [0, 1, 600, 1025, 4096, 65 * 1024, 1024 * 1024 + 4096] {
                let img = noise(seed, len);
                assert_eq!(
                    probe(img.as_slice()).unwrap(),
                    unknown(),
                    "seed {seed} len {len}"
                );
            }
        }
    }

    #[test]
    fn random_bytes_behind_each_magic_do_not_panic() {
        // Keep each signature's magic but scramble everything else around it.
        for (name, img) in fixtures() {
            for seed in 1..=16u64 {
                let mut bad = noise(seed, img.len());
                for (i, (b, orig)) in bad.iter_mut().zip(&img).enumerate() {
                    if i % 3 == 0 {
                        *b = *orig;
                    }
                }
                let got = probe(bad.as_slice());
                assert!(got.is_ok(), "{name} seed {seed}: {got:?}");
            }
        }
    }

    /// A reader that fails every read from `fail_from` on, with `kind`.
    struct Failing {
        data: Vec<u8>,
        fail_from: u64,
        kind: io::ErrorKind,
    }

    impl ReadAt for Failing {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            if offset + buf.len() as u64 > self.fail_from {
                return Err(io::Error::new(self.kind, "injected"));
            }
            self.data.read_exact_at(offset, buf)
        }
    }

    #[test]
    fn read_errors() {
        struct ErrCase {
            name: &'static str,
            data: Vec<u8>,
            fail_from: u64,
            kind: io::ErrorKind,
            want: Result<FsKind, io::ErrorKind>,
        }
        let cases = [
            ErrCase {
                name: "unreadable at offset 0 is an error",
                data: ext(0, 0, 0).done(),
                fail_from: 0,
                kind: io::ErrorKind::Other,
                want: Err(io::ErrorKind::Other),
            },
            ErrCase {
                name: "unreadable past 4 KiB: ext is still found",
                data: ext(0, 0, 0).done(),
                fail_from: 4096,
                kind: io::ErrorKind::Other,
                want: Ok(FsKind::Ext2),
            },
            ErrCase {
                name: "unreadable past 4 KiB hides btrfs",
                data: btrfs().done(),
                fail_from: 4096,
                kind: io::ErrorKind::Other,
                want: Ok(FsKind::Unknown),
            },
            ErrCase {
                name: "a cancelled read is returned",
                data: btrfs().done(),
                fail_from: 4096,
                kind: io::ErrorKind::Interrupted,
                want: Err(io::ErrorKind::Interrupted),
            },
        ];
        for c in cases {
            let r = Failing {
                data: c.data,
                fail_from: c.fail_from,
                kind: c.kind,
            };
            let got = probe(&r).map(|p| p.kind).map_err(|e| e.kind());
            assert_eq!(got, c.want, "case {}", c.name);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..=128 * 1024)) {
            let _ = probe(data.as_slice());
        }

        #[test]
        fn never_panics_on_mutated_fixtures(
            which in 0usize..13,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let (_, mut img) = fixtures().swap_remove(which);
            for (at, v) in edits {
                let i = at.index(img.len());
                img[i] = v;
            }
            let len = img.len();
            img.truncate(len - cut.index(len / 4));
            let _ = probe(img.as_slice());
        }
    }
}
