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
//! Every byte read comes from the volume being probed, which is untrusted: all offsets and sizes
//! from the disk go through checked arithmetic and `get`, never indexing.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fmt;
use std::io;

use serde::Serialize;

use crc::{Algorithm, Crc};

use super::lvm::label::CRC32_LVM;
use super::reader::{read_vec, ReadAt};
use crate::bytes::{
    arr, be16, be32, be64, byte, dce_uuid, field_is, get, le16, le32, le64, ms_guid, utf16z,
};

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
            probe_md_raid,
            probe_lvm2,
            probe_luks,
            probe_bitlocker,
            // Filesystems, in blkid's order.
            probe_vfat,
            probe_swap,
            probe_xfs,
            probe_ext,
            probe_ntfs,
            probe_btrfs,
            probe_exfat,
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
/// CRC32C without the final inversion, as ext4's `metadata_csum` stores it.
const CRC32C_EXT4: Crc<u32> = Crc::<u32>::new(&Algorithm {
    xorout: 0,
    check: 0x1CF9_6D7C,
    residue: 0,
    ..crc::CRC_32_ISCSI
});

// ---------------------------------------------------------------------------------------------
// Linux md RAID.

const MD_MAGIC: u32 = 0xa92b_4efc;
/// Size of the v0.90 reserved area at the end of the device.
const MD_RESERVED: u64 = 0x10000;
/// Largest `max_dev` that fits a v1 superblock in its 4 KiB slot.
const MD_MAX_DEV: u32 = (4096 - 256) / 2;

fn probe_md_raid<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    if src.size > MD_RESERVED {
        // v0.90: the last 64 KiB-aligned 64 KiB of the device.
        let v0 = (src.size & !0xFFFF).checked_sub(MD_RESERVED)?;
        if let Some(p) = md_v0(src, v0) {
            return Some(p);
        }
        // v1.0: 8 KiB before the end, 4 KiB aligned (mdadm: ((sectors - 16) & !7) * 512).
        let v1_0 = (src.size & !0xFFF).checked_sub(0x2000)?;
        if let Some(p) = md_v1(src, v1_0) {
            return Some(p);
        }
    }
    // v1.1 at the start, v1.2 4 KiB in.
    md_v1(src, 0).or_else(|| md_v1(src, 0x1000))
}

fn md_v0<R: ReadAt + ?Sized>(src: &Source<'_, R>, off: u64) -> Option<Probe> {
    let sb = src.read(off, 64)?;
    let big = if le32(&sb, 0)? == MD_MAGIC {
        false
    } else if be32(&sb, 0)? == MD_MAGIC {
        true
    } else {
        return None;
    };
    let word = |o: usize| if big { be32(&sb, o) } else { le32(&sb, o) };
    let minor = word(8)?;
    let used = u64::from(word(32)?).checked_mul(1024)?;
    if src.size < used.checked_add(MD_RESERVED)? || off < used {
        return None;
    }
    // blkid (on a little-endian host) byte-swaps each word of a little-endian superblock, so the
    // UUID reads like mdadm's `%08x:%08x:%08x:%08x` of the native words.
    let words: &[usize] = if minor >= 90 {
        &[20, 52, 56, 60]
    } else {
        &[20]
    };
    let mut uuid = [0u8; 16];
    for (slot, &at) in uuid.chunks_exact_mut(4).zip(words) {
        let mut w: [u8; 4] = arr(&sb, at)?;
        if !big {
            w.reverse();
        }
        slot.copy_from_slice(&w);
    }
    Some(Probe::new(FsKind::LinuxRaidMember, None, dce_uuid(&uuid)))
}

fn md_v1<R: ReadAt + ?Sized>(src: &Source<'_, R>, off: u64) -> Option<Probe> {
    let sb = src.read(off, 256)?;
    if le32(&sb, 0)? != MD_MAGIC || le32(&sb, 4)? != 1 || le64(&sb, 144)? != off / 512 {
        return None;
    }
    let max_dev = le32(&sb, 220)?;
    if max_dev > MD_MAX_DEV {
        return None;
    }
    let len = usize_from(max_dev)?.checked_mul(2)?.checked_add(256)?;
    let full = src.read(off, len)?;
    // The sum of all little-endian 32-bit words with sb_csum taken as zero, folded to 32 bits.
    let expected = le32(&sb, 216)?;
    let mut sum = full
        .chunks_exact(4)
        .filter_map(|w| le32(w, 0))
        .fold(0u64, |acc, w| acc.wrapping_add(u64::from(w)));
    if let Some(tail) = le16(full.chunks_exact(4).remainder(), 0) {
        sum = sum.wrapping_add(u64::from(tail));
    }
    sum = sum.wrapping_sub(u64::from(expected));
    let folded = (sum & 0xFFFF_FFFF).wrapping_add(sum.wrapping_shr(32));
    if folded & 0xFFFF_FFFF != u64::from(expected) {
        return None;
    }
    Some(Probe::new(
        FsKind::LinuxRaidMember,
        c_label(get(&sb, 32, 32)?),
        dce_uuid(get(&sb, 16, 16)?),
    ))
}

// ---------------------------------------------------------------------------------------------
// LVM2 physical volume.

fn probe_lvm2<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    (0..4u64).find_map(|sector| lvm2_label(src, sector))
}

fn lvm2_label<R: ReadAt + ?Sized>(src: &Source<'_, R>, sector: u64) -> Option<Probe> {
    let b = src.read(sector.checked_mul(512)?, 512)?;
    if !field_is(&b, 0, b"LABELONE") || !field_is(&b, 0x18, b"LVM2 001") {
        return None;
    }
    // sector_xl names the sector the label sits in; crc_xl covers offset_xl to the sector end.
    if le64(&b, 8)? != sector || le32(&b, 16)? != CRC32_LVM.checksum(b.get(20..)?) {
        return None;
    }
    let raw = get(&b, 32, 32)?;
    let uuid = (!raw.iter().all(|&c| c == 0)).then(|| {
        let mut s = Vec::with_capacity(38);
        for (i, &c) in raw.iter().enumerate() {
            if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
                s.push(b'-');
            }
            s.push(c);
        }
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        String::from_utf8_lossy(s.get(..end).unwrap_or_default()).into_owned()
    });
    Some(Probe::new(FsKind::Lvm2Member, None, uuid))
}

// ---------------------------------------------------------------------------------------------
// LUKS.

fn probe_luks<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let h = src.read(0, 264)?;
    if !field_is(&h, 0, b"LUKS\xba\xbe") {
        return None;
    }
    let version = be16(&h, 6)?;
    // A LUKS2 header records its own offset: the primary one says 0.
    if version == 2 && be64(&h, 256)? != 0 {
        return None;
    }
    // Both versions keep the UUID as text at 168; LUKS2 adds a label at 24.
    let uuid = c_label(get(&h, 168, 40)?);
    let label = if version == 2 {
        c_label(get(&h, 24, 48)?)
    } else {
        None
    };
    Some(Probe::new(FsKind::CryptoLuks, label, uuid))
}

// ---------------------------------------------------------------------------------------------
// BitLocker.

const BDE_VISTA: &[u8] = b"\xeb\x52\x90-FVE-FS-";
const BDE_WIN7: &[u8] = b"\xeb\x58\x90-FVE-FS-";
const BDE_TOGO: &[u8] = b"\xeb\x58\x90MSWIN4.1";
/// Largest FVE metadata block read for the description (the label).
const BDE_MAX_METADATA: u32 = 64 * 1024;

fn probe_bitlocker<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let h = src.read(0, 512)?;
    let meta_at = if field_is(&h, 0, BDE_VISTA) {
        return Some(Probe::new(FsKind::Bitlocker, None, None));
    } else if field_is(&h, 0, BDE_WIN7) {
        le64(&h, 176)?
    } else if field_is(&h, 0, BDE_TOGO) {
        le64(&h, 440)?
    } else {
        return None;
    };
    if meta_at == 0 || !meta_at.is_multiple_of(64) {
        return None;
    }
    // FVE metadata: a 64-byte block header ("-FVE-FS-"), then a 48-byte metadata header
    // (size, version, header size, copy of size, volume GUID), then entries.
    let fve = src.read(meta_at, 64 + 48)?;
    if !field_is(&fve, 0, b"-FVE-FS-") {
        return None;
    }
    let uuid = ms_guid(get(&fve, 64 + 16, 16)?);
    let meta_size = le32(&fve, 64)?;
    let label = (meta_size <= BDE_MAX_METADATA)
        .then(|| src.read(meta_at, usize_from(meta_size)?.checked_add(64)?))
        .flatten()
        .and_then(|full| bitlocker_description(full.get(64..)?, meta_size));
    Some(Probe::new(FsKind::Bitlocker, label, uuid))
}

/// The description entry (type 7, string) of an FVE metadata header, as a label.
fn bitlocker_description(meta: &[u8], meta_size: u32) -> Option<String> {
    let end = usize_from(meta_size)?;
    let mut at = 48usize;
    while at.checked_add(8)? < end {
        let size = usize::from(le16(meta, at)?);
        let next = at.checked_add(size)?;
        if !at.is_multiple_of(2) || size < 8 || next > end {
            return None;
        }
        if le16(meta, at.checked_add(2)?)? == 7 && le16(meta, at.checked_add(4)?)? == 2 {
            return utf16_label(meta.get(at.checked_add(8)?..next)?);
        }
        at = next;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// FAT.

const FAT12_MAX: u32 = 0xFF4;
const FAT16_MAX: u32 = 0xFFF4;
const FAT32_MAX: u32 = 0x0FFF_FFF6;
/// Most root-directory bytes read looking for the volume-label entry.
const FAT_MAX_ROOT_SCAN: usize = 256 * 1024;

fn probe_vfat<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let bs = src.read(0, 512)?;
    // blkid's magics, in order; the 1- and 2-byte ones need more evidence.
    let strong = field_is(&bs, 0x52, b"MSWIN")
        || field_is(&bs, 0x52, b"FAT32   ")
        || field_is(&bs, 0x36, b"MSDOS")
        || field_is(&bs, 0x36, b"FAT16   ")
        || field_is(&bs, 0x36, b"FAT12   ")
        || field_is(&bs, 0x36, b"FAT     ");
    let weak = matches!(byte(&bs, 0), Some(0xEB | 0xE9)) || field_is(&bs, 0x1fe, b"\x55\xaa");
    if !strong {
        if !weak || !field_is(&bs, 0x1fe, b"\x55\xaa") {
            return None;
        }
        // OS/2 puts a FAT-like pseudo boot sector in front of JFS and HPFS.
        if field_is(&bs, 0x36, b"JFS     ") || field_is(&bs, 0x36, b"HPFS    ") {
            return None;
        }
    }
    let bpb = FatBpb::parse(&bs)?;

    let (root_label, boot_label, serial) = if bpb.fat_length16 != 0 {
        // FAT12/16: a fixed root directory after the FATs; EBPB at 0x24.
        let root = u64::from(bpb.reserved)
            .checked_add(u64::from(bpb.fat_size))?
            .checked_mul(u64::from(bpb.sector_size))?;
        let len = usize::from(bpb.dir_entries).checked_mul(32)?;
        let root_label = fat_dir_label(src, root, len);
        let sig = byte(&bs, 0x26)?;
        let boot = (sig == 0x29).then(|| arr::<11>(&bs, 0x2b)).flatten();
        let serial = matches!(sig, 0x28 | 0x29)
            .then(|| arr::<4>(&bs, 0x27))
            .flatten();
        (root_label, boot, serial)
    } else if bpb.fat_length32 != 0 {
        // FAT32: the root directory is a cluster chain; EBPB at 0x40.
        let root_label = fat32_root_label(src, &bpb, le32(&bs, 0x2c)?);
        let boot = (byte(&bs, 0x42)? == 0x29)
            .then(|| arr::<11>(&bs, 0x47))
            .flatten();
        let serial = arr::<4>(&bs, 0x43);
        // The FSInfo sector, when there is one, has its signatures (or zeroes).
        let fsinfo = le16(&bs, 0x30)?;
        if fsinfo != 0 {
            let at = u64::from(fsinfo).checked_mul(u64::from(bpb.sector_size))?;
            let fi = src.read(at, 512)?;
            let sig1 = get(&fi, 0, 4)?;
            let sig2 = get(&fi, 484, 4)?;
            if !matches!(sig1, b"RRaA" | b"RRdA" | b"\0\0\0\0")
                || !matches!(sig2, b"rrAa" | b"\0\0\0\0")
            {
                return None;
            }
        }
        (root_label, boot, serial)
    } else {
        (RootLabel::Unreadable, None, None)
    };
    // blkid's LABEL is the root directory's volume-label entry (what Windows and `fatlabel`
    // show); the boot-sector copy is only a fallback here when the directory cannot be read.
    let label = match root_label {
        RootLabel::Found(raw) => c_label(&raw),
        RootLabel::None => None,
        RootLabel::Unreadable => boot_label
            .filter(|l| l != b"NO NAME    ")
            .and_then(|l| c_label(&l)),
    };
    Some(Probe::new(FsKind::Vfat, label, serial.and_then(fat_serial)))
}

/// The BIOS parameter block fields blkid validates.
struct FatBpb {
    sector_size: u16,
    cluster_size: u8,
    reserved: u16,
    dir_entries: u16,
    fat_length16: u16,
    fat_length32: u32,
    /// Sectors taken by all FATs.
    fat_size: u32,
}

impl FatBpb {
    fn parse(bs: &[u8]) -> Option<Self> {
        let fats = byte(bs, 0x10)?;
        let reserved = le16(bs, 0x0e)?;
        let media = byte(bs, 0x15)?;
        let cluster_size = byte(bs, 0x0d)?;
        let sector_size = le16(bs, 0x0b)?;
        if fats == 0
            || reserved == 0
            || !(media >= 0xf8 || media == 0xf0)
            || !cluster_size.is_power_of_two()
            || !sector_size.is_power_of_two()
            || !(512..=4096).contains(&sector_size)
        {
            return None;
        }
        let dir_entries = le16(bs, 0x11)?;
        let sectors = match le16(bs, 0x13)? {
            0 => le32(bs, 0x20)?,
            n => u32::from(n),
        };
        let fat_length16 = le16(bs, 0x16)?;
        let fat_length32 = le32(bs, 0x24)?;
        let fat_length = if fat_length16 == 0 {
            fat_length32
        } else {
            u32::from(fat_length16)
        };
        let fat_size = fat_length.checked_mul(u32::from(fats))?;
        let dir_size = u32::from(dir_entries)
            .checked_mul(32)?
            .div_ceil(u32::from(sector_size));
        let meta = u32::from(reserved)
            .checked_add(fat_size)?
            .checked_add(dir_size)?;
        let clusters = sectors
            .checked_sub(meta)?
            .checked_div(u32::from(cluster_size))?;
        let max = if fat_length16 == 0 && fat_length32 != 0 {
            FAT32_MAX
        } else if clusters > FAT12_MAX {
            FAT16_MAX
        } else {
            FAT12_MAX
        };
        if clusters > max {
            return None;
        }
        Some(FatBpb {
            sector_size,
            cluster_size,
            reserved,
            dir_entries,
            fat_length16,
            fat_length32,
            fat_size,
        })
    }
}

/// Outcome of looking for the volume-label entry in a FAT root directory.
enum RootLabel {
    /// The 11 bytes of the label entry's name.
    Found([u8; 11]),
    /// The directory was read and has no label entry.
    None,
    /// The directory could not be read at all.
    Unreadable,
}

/// Look for the volume-label entry in `len` bytes of directory at `off` (at most
/// [`FAT_MAX_ROOT_SCAN`]).
fn fat_dir_label<R: ReadAt + ?Sized>(src: &Source<'_, R>, off: u64, len: usize) -> RootLabel {
    let Some(dir) = src.read(off, len.min(FAT_MAX_ROOT_SCAN)) else {
        return RootLabel::Unreadable;
    };
    for ent in dir.chunks_exact(32) {
        let (Some(first), Some(attr)) = (byte(ent, 0), byte(ent, 11)) else {
            break;
        };
        if first == 0 {
            break;
        }
        let cluster_high = le16(ent, 20).unwrap_or(1);
        let cluster_low = le16(ent, 26).unwrap_or(1);
        if first == 0xe5 || cluster_high != 0 || cluster_low != 0 || attr & 0x3f == 0x0f {
            continue;
        }
        if attr & (0x08 | 0x10) == 0x08 {
            if let Some(mut name) = arr::<11>(ent, 0) {
                // 0x05 stands for a leading 0xE5 (which marks a free entry).
                if let Some(c @ 0x05) = name.first_mut() {
                    *c = 0xe5;
                }
                return RootLabel::Found(name);
            }
        }
    }
    RootLabel::None
}

fn fat32_root_label<R: ReadAt + ?Sized>(src: &Source<'_, R>, bpb: &FatBpb, root: u32) -> RootLabel {
    let sector = u64::from(bpb.sector_size);
    let cluster_bytes = u64::from(bpb.cluster_size).saturating_mul(sector);
    let data_start = u64::from(bpb.reserved).saturating_add(u64::from(bpb.fat_size));
    let entries = u64::from(bpb.fat_length32).saturating_mul(sector) / 4;
    let fat_start = u64::from(bpb.reserved).saturating_mul(sector);
    let Ok(cluster_len) = usize::try_from(cluster_bytes) else {
        return RootLabel::Unreadable;
    };
    let mut result = RootLabel::Unreadable;
    let mut next = root;
    let mut budget = FAT_MAX_ROOT_SCAN;
    // blkid follows at most 100 clusters; we also stop after FAT_MAX_ROOT_SCAN bytes.
    for _ in 0..100 {
        if next < 2 || u64::from(next) >= entries || budget == 0 {
            break;
        }
        let Some(off) = next
            .checked_sub(2)
            .map(u64::from)
            .and_then(|n| n.checked_mul(bpb.cluster_size.into()))
            .and_then(|s| s.checked_add(data_start))
            .and_then(|s| s.checked_mul(sector))
        else {
            break;
        };
        let len = cluster_len.min(budget);
        budget = budget.saturating_sub(len);
        match fat_dir_label(src, off, len) {
            found @ RootLabel::Found(_) => return found,
            RootLabel::None => result = RootLabel::None,
            RootLabel::Unreadable => break,
        }
        let Some(at) = u64::from(next)
            .checked_mul(4)
            .and_then(|o| o.checked_add(fat_start))
        else {
            break;
        };
        match src.read(at, 4).and_then(|b| le32(&b, 0)) {
            Some(v) => next = v & 0x0fff_ffff,
            None => break,
        }
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Swap.

/// Page sizes whose last 10 bytes may hold the swap signature.
const SWAP_PAGE_SIZES: [u64; 5] = [0x1000, 0x2000, 0x4000, 0x8000, 0x10000];

fn probe_swap<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    if src.size < 10 * 4096 {
        return None;
    }
    let (v1, _) = SWAP_PAGE_SIZES.iter().find_map(|&page| {
        let magic = src.read(page.checked_sub(10)?, 10)?;
        match magic.as_slice() {
            b"SWAPSPACE2" => Some((true, page)),
            b"SWAP-SPACE" => Some((false, page)),
            _ => None,
        }
    })?;
    // TuxOnIce keeps a valid swap header at the end of the first page of its image.
    if src.has(0, b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c") {
        return None;
    }
    if !v1 {
        // Version 0 has no label or UUID.
        return Some(Probe::new(FsKind::Swap, None, None));
    }
    // The v1 header at 1024: version, last_page, nr_badpages, uuid[16], volume_name[16].
    let h = src.read(1024, 512)?;
    let version = le32(&h, 0)?;
    if (version != 1 && version.swap_bytes() != 1) || le32(&h, 4)? == 0 {
        return None;
    }
    // blkid's sanity check that there is no garbage in the padding before trusting the rest.
    if le32(&h, 44 + 32 * 4)? != 0 || le32(&h, 44 + 33 * 4)? != 0 {
        return Some(Probe::new(FsKind::Swap, None, None));
    }
    let label = c_label(get(&h, 28, 16)?);
    Some(Probe::new(FsKind::Swap, label, dce_uuid(get(&h, 12, 16)?)))
}

// ---------------------------------------------------------------------------------------------
// XFS.

fn probe_xfs<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let sb = src.read(0, 512)?;
    if !field_is(&sb, 0, b"XFSB") {
        return None;
    }
    let blocksize = be32(&sb, 4)?;
    let dblocks = be64(&sb, 8)?;
    let rextsize = be32(&sb, 80)?;
    let agblocks = be32(&sb, 84)?;
    let agcount = be32(&sb, 88)?;
    let versionnum = be16(&sb, 100)?;
    let sectsize = be16(&sb, 102)?;
    let inodesize = be16(&sb, 104)?;
    let blocklog = byte(&sb, 120)?;
    let sectlog = byte(&sb, 121)?;
    let inodelog = byte(&sb, 122)?;
    let inopblog = byte(&sb, 123)?;
    let imax_pct = byte(&sb, 127)?;
    let features2 = be32(&sb, 200)?;

    let pow = |log: u8| 1u64.checked_shl(u32::from(log));
    let rext_bytes = u64::from(rextsize).checked_mul(u64::from(blocksize))?;
    let max_dblocks = u64::from(agcount).checked_mul(u64::from(agblocks))?;
    let min_dblocks = u64::from(agcount.checked_sub(1)?)
        .checked_mul(u64::from(agblocks))?
        .checked_add(64)?;
    let sane = agcount > 0
        && (512..=32768).contains(&sectsize)
        && (9..=15).contains(&sectlog)
        && Some(u64::from(sectsize)) == pow(sectlog)
        && (512..=65536).contains(&blocksize)
        && (9..=16).contains(&blocklog)
        && Some(u64::from(blocksize)) == pow(blocklog)
        && (256..=2048).contains(&inodesize)
        && (8..=11).contains(&inodelog)
        && Some(u64::from(inodesize)) == pow(inodelog)
        && blocklog.checked_sub(inodelog) == Some(inopblog)
        && (4096..=1 << 30).contains(&rext_bytes)
        && imax_pct <= 100
        && dblocks != 0
        && dblocks <= max_dblocks
        && dblocks >= min_dblocks;
    if !sane {
        return None;
    }
    if versionnum & 0x0f == 5 {
        // v5 needs the "more bits" flag, the CRC feature and a good superblock CRC32C (over
        // one sector, with the sb_crc field at 224 taken as zero).
        if versionnum & 0x8000 == 0 || features2 & 0x100 == 0 {
            return None;
        }
        let mut sector = src.read(0, usize::from(sectsize))?;
        let stored = le32(&sector, 224)?;
        sector.get_mut(224..228)?.fill(0);
        if CRC32C.checksum(&sector) != stored {
            return None;
        }
    }
    let label = c_label(get(&sb, 108, 12)?);
    Some(Probe::new(FsKind::Xfs, label, dce_uuid(get(&sb, 32, 16)?)))
}

// ---------------------------------------------------------------------------------------------
// ext2/3/4.

const EXT_COMPAT_HAS_JOURNAL: u32 = 0x0004;
const EXT_INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
/// Incompatible features ext3 understands: filetype, recover, meta_bg.
const EXT3_INCOMPAT_SUPP: u32 = 0x0002 | 0x0004 | 0x0010;
/// Incompatible features ext2 understands: filetype, meta_bg.
const EXT2_INCOMPAT_SUPP: u32 = 0x0002 | 0x0010;
/// Read-only-compatible features ext2 and ext3 understand: sparse_super, large_file, btree_dir.
const EXT3_RO_COMPAT_SUPP: u32 = 0x0001 | 0x0002 | 0x0004;
const EXT4_RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
/// Largest `s_log_block_size`: 64 KiB blocks.
const EXT_MAX_LOG_BLOCK_SIZE: u32 = 6;

fn probe_ext<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let sb = src.read(1024, 1024)?;
    if le16(&sb, 0x38)? != 0xEF53 {
        return None;
    }
    let compat = le32(&sb, 0x5c)?;
    let incompat = le32(&sb, 0x60)?;
    let ro_compat = le32(&sb, 0x64)?;
    // The block-size shift must be sane (blkid only asks < 256 when there is no checksum; the
    // kernel refuses anything above 64 KiB blocks).
    if le32(&sb, 0x18)? > EXT_MAX_LOG_BLOCK_SIZE {
        return None;
    }
    if ro_compat & EXT4_RO_COMPAT_METADATA_CSUM != 0
        && CRC32C_EXT4.checksum(get(&sb, 0, 1020)?) != le32(&sb, 1020)?
    {
        return None;
    }
    // blkid's order: an external journal is "jbd", not a filesystem; then ext4 (any feature
    // ext3 lacks), ext3 (a journal), ext2 (nothing ext2 lacks).
    let kind = if incompat & EXT_INCOMPAT_JOURNAL_DEV != 0 {
        return None;
    } else if ro_compat & !EXT3_RO_COMPAT_SUPP != 0 || incompat & !EXT3_INCOMPAT_SUPP != 0 {
        FsKind::Ext4
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
        FsKind::Ext3
    } else if incompat & !EXT2_INCOMPAT_SUPP == 0 {
        FsKind::Ext2
    } else {
        // "needs recovery" without a journal: none of ext2/3/4 claims it.
        return None;
    };
    let label = c_label(get(&sb, 0x78, 16)?);
    Some(Probe::new(kind, label, dce_uuid(get(&sb, 0x68, 16)?)))
}

// ---------------------------------------------------------------------------------------------
// NTFS.

/// Largest cluster NTFS allows (Windows 10 1703 and later).
const NTFS_MAX_CLUSTER: u32 = 2 * 1024 * 1024;
/// Most of an MFT record read for the label.
const NTFS_MAX_RECORD_READ: u32 = 64 * 1024;

fn probe_ntfs<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let bs = src.read(0, 512)?;
    if !field_is(&bs, 3, b"NTFS    ") {
        return None;
    }
    let sector_size = le16(&bs, 0x0b)?;
    if !(256..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
        return None;
    }
    let spc_raw = byte(&bs, 0x0d)?;
    let sectors_per_cluster: u32 = match spc_raw {
        1 | 2 | 4 | 8 | 16 | 32 | 64 | 128 => u32::from(spc_raw),
        240..=249 => 1u32.checked_shl(u32::from(256u16.checked_sub(u16::from(spc_raw))?))?,
        _ => return None,
    };
    let cluster = u32::from(sector_size).checked_mul(sectors_per_cluster)?;
    if cluster > NTFS_MAX_CLUSTER {
        return None;
    }
    // The FAT-era BPB fields must be zero.
    if le16(&bs, 0x0e)? != 0
        || le16(&bs, 0x11)? != 0
        || le16(&bs, 0x13)? != 0
        || le16(&bs, 0x16)? != 0
        || le32(&bs, 0x20)? != 0
        || byte(&bs, 0x10)? != 0
    {
        return None;
    }
    // Clusters per MFT record: a power of two up to 64, or -n meaning 2^n bytes.
    let cpm = i8::from_le_bytes([byte(&bs, 0x40)?]);
    let record: u32 = match cpm {
        1 | 2 | 4 | 8 | 16 | 32 | 64 => u32::from(cpm.unsigned_abs()).checked_mul(cluster)?,
        // 0xe1..=0xf7 as a signed byte; blkid refuses a shift of 31.
        -30..=-9 => 1u32.checked_shl(u32::from(cpm.unsigned_abs()))?,
        _ => return None,
    };
    if record < 4 {
        return None;
    }
    let clusters = le64(&bs, 0x28)?.checked_div(u64::from(sectors_per_cluster))?;
    let mft = le64(&bs, 0x30)?;
    if mft > clusters || le64(&bs, 0x38)? > clusters {
        return None;
    }
    let mft_off = mft.checked_mul(u64::from(cluster))?;
    if !src.has(mft_off, b"FILE") {
        return None;
    }
    // Record 3 is $Volume; its $VOLUME_NAME attribute is the label.
    let vol_off = mft_off.checked_add(u64::from(record).checked_mul(3)?)?;
    let vol = src.read(vol_off, usize_from(record.min(NTFS_MAX_RECORD_READ))?)?;
    if !field_is(&vol, 0, b"FILE") {
        return None;
    }
    let label = ntfs_volume_name(vol, record);
    let serial = le64(&bs, 0x48)?;
    let uuid = (serial != 0).then(|| format!("{serial:016X}"));
    Some(Probe::new(FsKind::Ntfs, label, uuid))
}

/// The `$VOLUME_NAME` (0x60) attribute of an MFT record, after applying the update-sequence
/// fixups (blkid skips them; they only matter when the name crosses a 512-byte boundary).
fn ntfs_volume_name(mut rec: Vec<u8>, record_size: u32) -> Option<String> {
    ntfs_apply_fixups(&mut rec);
    let size = usize_from(record_size)?.min(rec.len());
    let allocated = usize_from(le32(&rec, 0x1c)?)?;
    let mut at = usize::from(le16(&rec, 0x14)?);
    while at.checked_add(22)? <= size && at <= allocated {
        let kind = le32(&rec, at)?;
        let len = usize_from(le32(&rec, at.checked_add(4)?)?)?;
        if len == 0 || kind == 0xffff_ffff {
            break;
        }
        if kind == 0x60 {
            let val_len = usize_from(le32(&rec, at.checked_add(16)?)?)?;
            let val_off = usize::from(le16(&rec, at.checked_add(20)?)?);
            let start = at.checked_add(val_off)?;
            let end = start.checked_add(val_len)?;
            return if end <= size {
                utf16_label(rec.get(start..end)?)
            } else {
                None
            };
        }
        at = at.checked_add(len)?;
    }
    None
}

/// Put back the last two bytes of each 512-byte stride of a multi-sector record, where the
/// stride still ends in the update sequence number.
fn ntfs_apply_fixups(rec: &mut [u8]) {
    let (Some(usa_off), Some(usa_count)) = (le16(rec, 4), le16(rec, 6)) else {
        return;
    };
    let usa_off = usize::from(usa_off);
    let Some(usn) = arr::<2>(rec, usa_off) else {
        return;
    };
    for i in 1..usize::from(usa_count) {
        let (Some(fix_at), Some(end)) = (
            i.checked_mul(2).and_then(|o| o.checked_add(usa_off)),
            i.checked_mul(512).and_then(|o| o.checked_sub(2)),
        ) else {
            return;
        };
        let Some(fix) = arr::<2>(rec, fix_at) else {
            return;
        };
        match end.checked_add(2).and_then(|e| rec.get_mut(end..e)) {
            Some(tail) if *tail == usn => tail.copy_from_slice(&fix),
            _ => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Btrfs.

const BTRFS_SB: u64 = 0x10000;

fn probe_btrfs<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    // blkid does not look for Btrfs on anything under 1 MiB.
    if src.size < 1024 * 1024 || !src.has(BTRFS_SB + 0x40, b"_BHRfS_M") {
        return None;
    }
    let sb = src.read(BTRFS_SB, 4096)?;
    // csum_type 0 is CRC32C over the rest of the 4 KiB superblock. xxhash64, SHA-256 and BLAKE2b
    // superblocks are taken on the magic alone (blkid checks the first two; see the report).
    if le16(&sb, 196)? == 0 && CRC32C.checksum(sb.get(32..)?) != le32(&sb, 0)? {
        return None;
    }
    if le32(&sb, 144)? == 0 {
        return None;
    }
    let label = c_label(get(&sb, 299, 256)?);
    Some(Probe::new(
        FsKind::Btrfs,
        label,
        dce_uuid(get(&sb, 32, 16)?),
    ))
}

// ---------------------------------------------------------------------------------------------
// exFAT.

/// Most root-directory bytes read looking for the volume-label entry.
const EXFAT_MAX_ROOT_SCAN: u64 = 256 * 1024;

fn probe_exfat<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let bs = src.read(0, 512)?;
    if !field_is(&bs, 3, b"EXFAT   ") {
        return None;
    }
    let fat_offset = le32(&bs, 80)?;
    let fat_length = le32(&bs, 84)?;
    let heap = le32(&bs, 88)?;
    let cluster_count = le32(&bs, 92)?;
    let root = le32(&bs, 96)?;
    let sector_shift = byte(&bs, 108)?;
    let cluster_shift = byte(&bs, 109)?;
    let fats = byte(&bs, 110)?;
    let fats_len = fat_length.checked_mul(u32::from(fats))?;
    let sane = le16(&bs, 510)? == 0xAA55
        && field_is(&bs, 0, b"\xeb\x76\x90")
        && get(&bs, 11, 53)?.iter().all(|&b| b == 0)
        && (1..=2).contains(&fats)
        && (9..=12).contains(&sector_shift)
        && cluster_shift <= 25u8.checked_sub(sector_shift)?
        && fat_offset >= 24
        && heap
            .checked_sub(fats_len)
            .is_some_and(|max| fat_offset <= max)
        && fat_offset
            .checked_add(fats_len)
            .is_some_and(|min| heap >= min)
        && heap <= 0x8000_0000
        && root >= 2
        && root <= cluster_count.saturating_add(1);
    if !sane {
        return None;
    }
    // The boot checksum: over the first 11 sectors (less VolumeFlags and PercentInUse), repeated
    // through the 12th.
    let sector = 1usize.checked_shl(u32::from(sector_shift))?;
    let region = src.read(0, sector.checked_mul(12)?)?;
    let sum = region
        .get(..sector.checked_mul(11)?)?
        .iter()
        .enumerate()
        .filter(|&(i, _)| !matches!(i, 106 | 107 | 112))
        .fold(0u32, |sum, (_, &b)| {
            sum.rotate_right(1).wrapping_add(u32::from(b))
        });
    let stored = region.get(sector.checked_mul(11)?..)?;
    if !stored.chunks_exact(4).all(|w| le32(w, 0) == Some(sum)) {
        return None;
    }
    let label = exfat_label(src, fat_offset, heap, root, sector_shift, cluster_shift);
    let uuid = arr::<4>(&bs, 100).and_then(fat_serial);
    Some(Probe::new(FsKind::Exfat, label, uuid))
}

/// The volume-label entry (0x83) of the exFAT root directory, following its FAT chain.
fn exfat_label<R: ReadAt + ?Sized>(
    src: &Source<'_, R>,
    fat_offset: u32,
    heap: u32,
    root: u32,
    sector_shift: u8,
    cluster_shift: u8,
) -> Option<String> {
    let cluster_bytes = 1u64.checked_shl(u32::from(sector_shift.checked_add(cluster_shift)?))?;
    let chunk = cluster_bytes.min(EXFAT_MAX_ROOT_SCAN);
    let cluster_off = |c: u32| -> Option<u64> {
        let rel = u64::from(c.checked_sub(2)?).checked_shl(u32::from(cluster_shift))?;
        u64::from(heap)
            .checked_add(rel)?
            .checked_shl(u32::from(sector_shift))
    };
    let mut cluster = root;
    let mut scanned = 0u64;
    while scanned < EXFAT_MAX_ROOT_SCAN {
        let dir = src.read(cluster_off(cluster)?, usize::try_from(chunk).ok()?)?;
        for ent in dir.chunks_exact(32) {
            match byte(ent, 0)? {
                0x00 => return None,
                0x83 => {
                    let chars = usize::from(byte(ent, 1)?).checked_mul(2)?.min(22);
                    return utf16_label(get(ent, 2, chars)?);
                }
                _ => {}
            }
        }
        scanned = scanned.checked_add(chunk)?;
        if chunk < cluster_bytes {
            return None;
        }
        let fat_entry = u64::from(fat_offset)
            .checked_shl(u32::from(sector_shift))?
            .checked_add(u64::from(cluster).checked_mul(4)?)?;
        cluster = le32(&src.read(fat_entry, 4)?, 0)?;
        if !(2..=0x0fff_fff6).contains(&cluster) {
            return None;
        }
    }
    None
}

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
    use super::*;
    use proptest::prelude::*;

    /// A byte buffer with little helpers to patch fields.
    #[derive(Clone)]
    struct Img(Vec<u8>);

    impl Img {
        fn new(len: usize) -> Self {
            Img(vec![0; len])
        }
        fn put(&mut self, off: usize, b: &[u8]) -> &mut Self {
            self.0[off..off + b.len()].copy_from_slice(b);
            self
        }
        fn le16(&mut self, off: usize, v: u16) -> &mut Self {
            self.put(off, &v.to_le_bytes())
        }
        fn le32(&mut self, off: usize, v: u32) -> &mut Self {
            self.put(off, &v.to_le_bytes())
        }
        fn le64(&mut self, off: usize, v: u64) -> &mut Self {
            self.put(off, &v.to_le_bytes())
        }
        fn be16(&mut self, off: usize, v: u16) -> &mut Self {
            self.put(off, &v.to_be_bytes())
        }
        fn be32(&mut self, off: usize, v: u32) -> &mut Self {
            self.put(off, &v.to_be_bytes())
        }
        fn be64(&mut self, off: usize, v: u64) -> &mut Self {
            self.put(off, &v.to_be_bytes())
        }
        fn done(&mut self) -> Vec<u8> {
            self.0.clone()
        }
    }

    const UUID: [u8; 16] = [
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        0x01,
    ];
    const UUID_STR: &str = "11223344-5566-7788-99aa-bbccddeeff01";

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    // --- fixture builders: the smallest structure each probe accepts -------------------------

    fn ext(compat: u32, incompat: u32, ro_compat: u32) -> Img {
        let mut i = Img::new(192 * 1024);
        let sb = 1024;
        i.le16(sb + 0x38, 0xEF53)
            .le32(sb + 0x18, 2)
            .le32(sb + 0x5c, compat)
            .le32(sb + 0x60, incompat)
            .le32(sb + 0x64, ro_compat)
            .put(sb + 0x68, &UUID)
            .put(sb + 0x78, b"rootfs  ");
        i
    }

    fn ext_csum(mut i: Img) -> Img {
        let crc = CRC32C_EXT4.checksum(&i.0[1024..2044]);
        i.le32(2044, crc);
        i
    }

    fn xfs(v5: bool) -> Img {
        let mut i = Img::new(64 * 1024);
        i.put(0, b"XFSB")
            .be32(4, 4096)
            .be64(8, 16384)
            .put(32, &UUID)
            .be32(80, 1)
            .be32(84, 4096)
            .be32(88, 4)
            .be16(100, if v5 { 0xB4A5 } else { 0xB4A4 })
            .be16(102, 512)
            .be16(104, 256)
            .be16(106, 16)
            .put(108, b"data")
            .put(120, &[12, 9, 8, 4])
            .put(127, &[25])
            .be32(200, if v5 { 0x18a } else { 0x8a });
        if v5 {
            let crc = CRC32C.checksum(&i.0[..512]);
            i.le32(224, crc);
        }
        i
    }

    fn btrfs() -> Img {
        let mut i = Img::new(1024 * 1024);
        let sb = 0x10000;
        i.put(sb + 32, &UUID)
            .le64(sb + 48, 0x10000)
            .put(sb + 0x40, b"_BHRfS_M")
            .le32(sb + 144, 4096)
            .le32(sb + 148, 16384)
            .put(sb + 299, b"pool");
        btrfs_csum(i)
    }

    fn btrfs_csum(mut i: Img) -> Img {
        let sb = 0x10000;
        let crc = CRC32C.checksum(&i.0[sb + 32..sb + 4096]);
        i.le32(sb, crc);
        i
    }

    fn ntfs(label: &str) -> Img {
        let mut i = Img::new(64 * 1024);
        i.put(0, b"\xeb\x52\x90NTFS    ")
            .le16(0x0b, 512)
            .put(0x0d, &[8])
            .put(0x15, &[0xf8])
            .le64(0x28, 0x10000)
            .le64(0x30, 4)
            .le64(0x38, 2)
            .put(0x40, &[0xf6]) // 2^10 = 1024-byte records
            .put(0x44, &[1])
            .le64(0x48, 0x0123_4567_89ab_cdef)
            .put(0x1fe, b"\x55\xaa");
        let mft = 4 * 4096;
        i.put(mft, b"FILE");
        let rec = mft + 3 * 1024;
        let name = utf16(label);
        let attr_len = (24 + name.len()).div_ceil(8) * 8;
        i.put(rec, b"FILE")
            .le16(rec + 4, 0x30) // update sequence array at 0x30, 3 entries
            .le16(rec + 6, 3)
            .le16(rec + 0x14, 0x38)
            .le32(rec + 0x18, 0x38 + attr_len as u32 + 8)
            .le32(rec + 0x1c, 1024)
            .le32(rec + 0x38, 0x60)
            .le32(rec + 0x38 + 4, attr_len as u32)
            .le32(rec + 0x38 + 16, name.len() as u32)
            .le16(rec + 0x38 + 20, 24)
            .put(rec + 0x38 + 24, &name)
            .le32(rec + 0x38 + attr_len, 0xffff_ffff);
        // Fixups: the true last two bytes of each 512-byte stride go to the array, the update
        // sequence number takes their place.
        let usn = [0x07, 0x00];
        let (t1, t2) = (
            [i.0[rec + 510], i.0[rec + 511]],
            [i.0[rec + 1022], i.0[rec + 1023]],
        );
        i.put(rec + 0x30, &usn)
            .put(rec + 0x32, &t1)
            .put(rec + 0x34, &t2);
        i.put(rec + 510, &usn).put(rec + 1022, &usn);
        i
    }

    fn fat16(root_label: Option<&[u8; 11]>) -> Img {
        let mut i = Img::new(64 * 1024);
        i.put(0, b"\xeb\x3c\x90mkfs.fat")
            .le16(0x0b, 512)
            .put(0x0d, &[4])
            .le16(0x0e, 4)
            .put(0x10, &[2])
            .le16(0x11, 512)
            .le16(0x13, 32768)
            .put(0x15, &[0xf8])
            .le16(0x16, 32)
            .put(0x26, &[0x29])
            .put(0x27, &[0xef, 0xbe, 0xad, 0xde])
            .put(0x2b, b"BOOTLABEL  ")
            .put(0x36, b"FAT16   ")
            .put(0x1fe, b"\x55\xaa");
        if let Some(l) = root_label {
            let root = (4 + 2 * 32) * 512;
            i.put(root, b"LONGNAME   ").put(root + 11, &[0x0f]); // an LFN entry is skipped
            i.put(root + 32, l).put(root + 32 + 11, &[0x08]);
        }
        i
    }

    fn fat32(root_label: Option<&[u8; 11]>) -> Img {
        let mut i = Img::new(96 * 1024);
        i.put(0, b"\xeb\x58\x90mkfs.fat")
            .le16(0x0b, 512)
            .put(0x0d, &[1])
            .le16(0x0e, 32)
            .put(0x10, &[2])
            .put(0x15, &[0xf8])
            .le32(0x20, 70000)
            .le32(0x24, 64)
            .le32(0x2c, 2)
            .le16(0x30, 1)
            .put(0x42, &[0x29])
            .put(0x43, &[0x78, 0x56, 0x34, 0x12])
            .put(0x47, b"NO NAME    ")
            .put(0x52, b"FAT32   ")
            .put(0x1fe, b"\x55\xaa");
        i.put(512, b"RRaA").put(512 + 484, b"rrAa");
        i.le32(32 * 512 + 8, 0x0fff_ffff); // root cluster 2 ends its chain
        if let Some(l) = root_label {
            let root = (32 + 128) * 512;
            i.put(root, l).put(root + 11, &[0x08]);
        }
        i
    }

    fn exfat(label: &str) -> Img {
        let mut i = Img::new(40 * 1024);
        i.put(0, b"\xeb\x76\x90EXFAT   ")
            .le64(72, 0x8000)
            .le32(80, 24)
            .le32(84, 8)
            .le32(88, 64)
            .le32(92, 100)
            .le32(96, 2)
            .put(100, &[0x44, 0x33, 0x22, 0x11])
            .le16(104, 0x0100)
            .put(108, &[9, 3, 1, 0x80])
            .le16(510, 0xAA55);
        let root = 64 * 512;
        let name = utf16(label);
        i.put(root, &[0x83, label.encode_utf16().count() as u8])
            .put(root + 2, &name);
        i.put(root + 32, &[0x81]); // allocation bitmap entry
        exfat_csum(i)
    }

    fn exfat_csum(mut i: Img) -> Img {
        let mut sum = 0u32;
        for (n, &b) in i.0[..11 * 512].iter().enumerate() {
            if !matches!(n, 106 | 107 | 112) {
                sum = sum.rotate_right(1).wrapping_add(u32::from(b));
            }
        }
        for w in 0..128 {
            i.le32(11 * 512 + 4 * w, sum);
        }
        i
    }

    fn swap(page: usize, magic: &[u8; 10]) -> Img {
        let mut i = Img::new(64 * 1024);
        i.put(page - 10, magic)
            .le32(1024, 1)
            .le32(1028, 15)
            .put(1036, &UUID)
            .put(1052, b"swap0");
        i
    }

    fn lvm_label(mut i: Img, sector: usize, pv_uuid: &[u8; 32]) -> Img {
        let s = sector * 512;
        i.put(s, b"LABELONE")
            .le64(s + 8, sector as u64)
            .le32(s + 20, 32)
            .put(s + 24, b"LVM2 001")
            .put(s + 32, pv_uuid);
        let crc = CRC32_LVM.checksum(&i.0[s + 20..s + 512]);
        i.le32(s + 16, crc);
        i
    }

    const PV_UUID: &[u8; 32] = b"C2saHb0k0Q4l3veqGkduOactvLevHjZe";

    fn luks(version: u16) -> Img {
        let mut i = Img::new(16 * 1024);
        i.put(0, b"LUKS\xba\xbe")
            .be16(6, version)
            .put(168, UUID_STR.as_bytes());
        if version == 2 {
            i.be64(8, 16384).put(24, b"secret").put(72, b"sha256");
        }
        i
    }

    fn bitlocker(description: &str) -> Img {
        let mut i = Img::new(64 * 1024);
        let meta = 0x2000;
        i.put(0, BDE_WIN7).le64(176, meta as u64);
        let desc = utf16(description);
        let entry_len = 8 + desc.len();
        let size = 48 + entry_len as u32;
        i.put(meta, b"-FVE-FS-")
            .le16(meta + 10, 2)
            .le32(meta + 64, size)
            .le32(meta + 64 + 4, 1)
            .le32(meta + 64 + 8, 48)
            .le32(meta + 64 + 12, size)
            .put(meta + 64 + 16, &UUID);
        let e = meta + 64 + 48;
        i.le16(e, entry_len as u16)
            .le16(e + 2, 7)
            .le16(e + 4, 2)
            .le16(e + 6, 1)
            .put(e + 8, &desc);
        i
    }

    /// An md v1 superblock at `off` of `i`.
    fn md1(mut i: Img, off: usize) -> Img {
        i.le32(off, MD_MAGIC)
            .le32(off + 4, 1)
            .put(off + 16, &UUID)
            .put(off + 32, b"host:0")
            .le64(off + 144, (off / 512) as u64)
            .le32(off + 220, 4);
        md1_csum(i, off)
    }

    fn md1_csum(mut i: Img, off: usize) -> Img {
        let max_dev = u32::from_le_bytes(i.0[off + 220..off + 224].try_into().unwrap()) as usize;
        i.le32(off + 216, 0);
        let mut sum = 0u64;
        for w in i.0[off..off + 256 + 2 * max_dev].chunks_exact(4) {
            sum += u64::from(u32::from_le_bytes(w.try_into().unwrap()));
        }
        let sum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
        i.le32(off + 216, sum);
        i
    }

    fn md0(len: usize) -> Img {
        let mut i = Img::new(len);
        let off = (len & !0xFFFF) - 0x10000;
        i.le32(off, MD_MAGIC)
            .le32(off + 4, 0)
            .le32(off + 8, 90)
            .put(off + 20, &[0x11, 0x22, 0x33, 0x44])
            .le32(off + 32, 64) // 64 KiB used per device
            .put(off + 52, &[0x55, 0x66, 0x77, 0x88])
            .put(off + 56, &[0x99, 0xaa, 0xbb, 0xcc])
            .put(off + 60, &[0xdd, 0xee, 0xff, 0x01]);
        i
    }

    fn p(kind: FsKind, label: Option<&str>, uuid: Option<&str>) -> Probe {
        Probe::new(kind, label.map(str::to_owned), uuid.map(str::to_owned))
    }

    fn unknown() -> Probe {
        p(FsKind::Unknown, None, None)
    }

    struct Case {
        name: &'static str,
        image: Vec<u8>,
        want: Probe,
    }

    fn case(name: &'static str, image: Vec<u8>, want: Probe) -> Case {
        Case { name, image, want }
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            let got = probe(c.image.as_slice()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(got, c.want, "case {}", c.name);
        }
    }

    #[test]
    fn recognises_each_signature() {
        let mut fat_label = *b"DATA       ";
        let e5_label = {
            fat_label[0] = 0x05;
            fat_label
        };
        check(vec![
            case(
                "ext2",
                ext(0, 0x2, 0x3).done(),
                p(FsKind::Ext2, Some("rootfs"), Some(UUID_STR)),
            ),
            case(
                "ext3",
                ext(0x4, 0x2, 0x3).done(),
                p(FsKind::Ext3, Some("rootfs"), Some(UUID_STR)),
            ),
            case(
                "ext3 needing recovery",
                ext(0x4, 0x6, 0x3).done(),
                p(FsKind::Ext3, Some("rootfs"), Some(UUID_STR)),
            ),
            case(
                "ext4 extents",
                ext(0x4, 0x2 | 0x40, 0x3).done(),
                p(FsKind::Ext4, Some("rootfs"), Some(UUID_STR)),
            ),
            case(
                "ext4 without journal",
                ext(0, 0x2 | 0x200, 0x3).done(),
                p(FsKind::Ext4, Some("rootfs"), Some(UUID_STR)),
            ),
            case(
                "ext4 ro_compat huge_file only",
                ext(0x4, 0x2, 0x8).done(),
                p(FsKind::Ext4, Some("rootfs"), Some(UUID_STR)),
            ),
            case(
                "ext4 metadata_csum good",
                ext_csum(ext(0x4, 0x2c2, 0x400)).done(),
                p(FsKind::Ext4, Some("rootfs"), Some(UUID_STR)),
            ),
            case(
                "ext no label no uuid",
                ext(0, 0, 0).put(1024 + 0x68, &[0; 32]).done(),
                p(FsKind::Ext2, None, None),
            ),
            case(
                "xfs v4",
                xfs(false).done(),
                p(FsKind::Xfs, Some("data"), Some(UUID_STR)),
            ),
            case(
                "xfs v5",
                xfs(true).done(),
                p(FsKind::Xfs, Some("data"), Some(UUID_STR)),
            ),
            case(
                "btrfs",
                btrfs().done(),
                p(FsKind::Btrfs, Some("pool"), Some(UUID_STR)),
            ),
            case(
                "btrfs xxhash is not checked",
                btrfs().le16(0x10000 + 196, 1).done(),
                p(FsKind::Btrfs, Some("pool"), Some(UUID_STR)),
            ),
            case(
                "ntfs",
                ntfs("Windows").done(),
                p(FsKind::Ntfs, Some("Windows"), Some("0123456789ABCDEF")),
            ),
            case(
                // 0x38 + 24 + 2 * 220 crosses the first 512-byte stride: needs the fixups.
                "ntfs long label across a sector end",
                ntfs(&"x".repeat(220)).done(),
                p(
                    FsKind::Ntfs,
                    Some(&"x".repeat(220)),
                    Some("0123456789ABCDEF"),
                ),
            ),
            case(
                "fat16 root label",
                fat16(Some(b"DATA       ")).done(),
                p(FsKind::Vfat, Some("DATA"), Some("DEAD-BEEF")),
            ),
            case(
                "fat16 label 0x05 means 0xE5",
                fat16(Some(&e5_label)).done(),
                p(FsKind::Vfat, Some("\u{fffd}ATA"), Some("DEAD-BEEF")),
            ),
            case(
                "fat16 no root label entry",
                fat16(None).done(),
                p(FsKind::Vfat, None, Some("DEAD-BEEF")),
            ),
            case(
                "fat16 boot label when the root directory is cut off",
                fat16(None).done()[..20 * 1024].to_vec(),
                p(FsKind::Vfat, Some("BOOTLABEL"), Some("DEAD-BEEF")),
            ),
            case(
                "fat16 EBPB 0x28 has a serial but no label",
                fat16(None).put(0x26, &[0x28]).done()[..20 * 1024].to_vec(),
                p(FsKind::Vfat, None, Some("DEAD-BEEF")),
            ),
            case(
                "fat32 root label",
                fat32(Some(b"EFI SYSTEM ")).done(),
                p(FsKind::Vfat, Some("EFI SYSTEM"), Some("1234-5678")),
            ),
            case(
                "fat32 NO NAME",
                fat32(None).done(),
                p(FsKind::Vfat, None, Some("1234-5678")),
            ),
            case(
                "fat found by 55AA alone",
                fat16(None).put(0, &[0; 11]).put(0x36, &[0; 8]).done(),
                p(FsKind::Vfat, None, Some("DEAD-BEEF")),
            ),
            case(
                "exfat",
                exfat("USB").done(),
                p(FsKind::Exfat, Some("USB"), Some("1122-3344")),
            ),
            case(
                "exfat unicode label",
                exfat("Straße").done(),
                p(FsKind::Exfat, Some("Straße"), Some("1122-3344")),
            ),
            case(
                "swap v1 4k pages",
                swap(4096, b"SWAPSPACE2").done(),
                p(FsKind::Swap, Some("swap0"), Some(UUID_STR)),
            ),
            case(
                "swap v1 64k pages",
                swap(65536, b"SWAPSPACE2").done(),
                p(FsKind::Swap, Some("swap0"), Some(UUID_STR)),
            ),
            case(
                "swap v1 big-endian header",
                swap(8192, b"SWAPSPACE2").be32(1024, 1).done(),
                p(FsKind::Swap, Some("swap0"), Some(UUID_STR)),
            ),
            case(
                "swap v0",
                swap(4096, b"SWAP-SPACE").done(),
                p(FsKind::Swap, None, None),
            ),
            case(
                "swap with garbage in the padding",
                swap(4096, b"SWAPSPACE2").le32(1196, 7).done(),
                p(FsKind::Swap, None, None),
            ),
            case(
                "lvm2 label in sector 1",
                lvm_label(Img::new(8192), 1, PV_UUID).done(),
                p(
                    FsKind::Lvm2Member,
                    None,
                    Some("C2saHb-0k0Q-4l3v-eqGk-duOa-ctvL-evHjZe"),
                ),
            ),
            case(
                "lvm2 label in sector 3",
                lvm_label(Img::new(8192), 3, PV_UUID).done(),
                p(
                    FsKind::Lvm2Member,
                    None,
                    Some("C2saHb-0k0Q-4l3v-eqGk-duOa-ctvL-evHjZe"),
                ),
            ),
            case(
                "luks1",
                luks(1).done(),
                p(FsKind::CryptoLuks, None, Some(UUID_STR)),
            ),
            case(
                "luks2",
                luks(2).done(),
                p(FsKind::CryptoLuks, Some("secret"), Some(UUID_STR)),
            ),
            case(
                "bitlocker win7",
                bitlocker("DESKTOP C: 2024").done(),
                p(
                    FsKind::Bitlocker,
                    Some("DESKTOP C: 2024"),
                    Some("44332211-6655-8877-99aa-bbccddeeff01"),
                ),
            ),
            case(
                "bitlocker vista",
                Img::new(8192).put(0, BDE_VISTA).done(),
                p(FsKind::Bitlocker, None, None),
            ),
            case(
                "md 1.1 at the start",
                md1(Img::new(128 * 1024), 0).done(),
                p(FsKind::LinuxRaidMember, Some("host:0"), Some(UUID_STR)),
            ),
            case(
                "md 1.2 at 4 KiB",
                md1(Img::new(128 * 1024), 4096).done(),
                p(FsKind::LinuxRaidMember, Some("host:0"), Some(UUID_STR)),
            ),
            case(
                "md 1.0 at the end",
                md1(Img::new(128 * 1024 + 1536), 128 * 1024 - 8192).done(),
                p(FsKind::LinuxRaidMember, Some("host:0"), Some(UUID_STR)),
            ),
            case(
                "md 1.2 with an odd max_dev",
                md1_csum(
                    md1(Img::new(128 * 1024), 4096).le32(4096 + 220, 5).clone(),
                    4096,
                )
                .done(),
                p(FsKind::LinuxRaidMember, Some("host:0"), Some(UUID_STR)),
            ),
            case(
                "md 0.90 little-endian",
                md0(256 * 1024 + 4096).done(),
                p(
                    FsKind::LinuxRaidMember,
                    None,
                    Some("44332211-8877-6655-ccbb-aa9901ffeedd"),
                ),
            ),
            case(
                "md 0.90 big-endian",
                {
                    let mut i = md0(256 * 1024);
                    let off = 256 * 1024 - 0x10000;
                    i.be32(off, MD_MAGIC).be32(off + 8, 90).be32(off + 32, 64);
                    i.done()
                },
                p(FsKind::LinuxRaidMember, None, Some(UUID_STR)),
            ),
        ]);
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
            case(
                "ext block size shift 7",
                ext(0, 0, 0).le32(1024 + 0x18, 7).done(),
                unknown(),
            ),
            case(
                "ext block size shift huge",
                ext(0, 0, 0).le32(1024 + 0x18, 0xffff_fff0).done(),
                unknown(),
            ),
            case(
                "ext metadata_csum mismatch",
                ext_csum(ext(0x4, 0x2c2, 0x400))
                    .put(1024 + 0x78, b"X")
                    .done(),
                unknown(),
            ),
            case("ext journal device", ext(0, 0x8, 0).done(), unknown()),
            case(
                "ext recovery flag without journal",
                ext(0, 0x4, 0).done(),
                unknown(),
            ),
            case("xfs zero agcount", xfs(false).be32(88, 0).done(), unknown()),
            case(
                "xfs sectsize not 2^sectlog",
                xfs(false).be16(102, 1024).done(),
                unknown(),
            ),
            case(
                "xfs dblocks beyond the AGs",
                xfs(false).be64(8, 16385).done(),
                unknown(),
            ),
            case(
                "xfs inopblog mismatch",
                xfs(false).put(123, &[3]).done(),
                unknown(),
            ),
            case(
                "xfs v5 crc mismatch",
                xfs(true).put(108, b"x").done(),
                unknown(),
            ),
            case(
                "xfs v5 without the crc feature",
                xfs(true).be32(200, 0x8a).done(),
                unknown(),
            ),
            case(
                "btrfs crc mismatch",
                btrfs().put(0x10000 + 299, b"X").done(),
                unknown(),
            ),
            case(
                "btrfs zero sectorsize",
                btrfs_csum({
                    let mut i = btrfs();
                    i.le32(0x10000 + 144, 0);
                    i
                })
                .done(),
                unknown(),
            ),
            case(
                "btrfs under 1 MiB",
                btrfs().done()[..1024 * 1024 - 1].to_vec(),
                unknown(),
            ),
            case(
                "ntfs sector size 1000",
                ntfs("w").le16(0x0b, 1000).done(),
                unknown(),
            ),
            case(
                "ntfs bad sectors per cluster",
                ntfs("w").put(0x0d, &[3]).done(),
                unknown(),
            ),
            case(
                "ntfs FAT field set",
                ntfs("w").put(0x10, &[2]).done(),
                unknown(),
            ),
            case(
                "ntfs bad clusters per record",
                ntfs("w").put(0x40, &[3]).done(),
                unknown(),
            ),
            case(
                "ntfs mft beyond the volume",
                ntfs("w").le64(0x30, 1 << 40).done(),
                unknown(),
            ),
            case(
                "ntfs no FILE record",
                ntfs("w").put(4 * 4096, b"BAAD").done(),
                unknown(),
            ),
            case(
                "fat without 55AA (weak magic)",
                fat16(None).put(0x36, &[0; 8]).put(0x1fe, &[0, 0]).done(),
                unknown(),
            ),
            case(
                "fat bytes per sector 1000",
                fat16(None).le16(0x0b, 1000).done(),
                unknown(),
            ),
            case(
                "fat bytes per sector 8192",
                fat16(None).le16(0x0b, 8192).done(),
                unknown(),
            ),
            case(
                "fat sectors per cluster 3",
                fat16(None).put(0x0d, &[3]).done(),
                unknown(),
            ),
            case(
                "fat sectors per cluster 0",
                fat16(None).put(0x0d, &[0]).done(),
                unknown(),
            ),
            case("fat no FATs", fat16(None).put(0x10, &[0]).done(), unknown()),
            case(
                "fat bad media byte",
                fat16(None).put(0x15, &[0x12]).done(),
                unknown(),
            ),
            case(
                "fat more metadata than sectors",
                fat16(None).le16(0x13, 10).done(),
                unknown(),
            ),
            case(
                "fat16 too many clusters",
                fat16(None).le16(0x13, 0).le32(0x20, 1 << 24).done(),
                unknown(),
            ),
            case(
                "fat32 bad fsinfo",
                fat32(None).put(512, b"XXXX").done(),
                unknown(),
            ),
            case(
                "jfs pseudo boot sector",
                fat16(None).put(0x36, b"JFS     ").put(3, &[0; 8]).done(),
                unknown(),
            ),
            case(
                "exfat checksum mismatch",
                exfat("x").put(120, &[1]).done(),
                unknown(),
            ),
            case(
                "exfat nonzero must-be-zero",
                exfat_csum(exfat("x").put(20, &[1]).clone()).done(),
                unknown(),
            ),
            case(
                "exfat bad sector shift",
                exfat_csum(exfat("x").put(108, &[13]).clone()).done(),
                unknown(),
            ),
            case(
                "exfat fats overlap heap",
                exfat_csum(exfat("x").le32(84, 60).clone()).done(),
                unknown(),
            ),
            case(
                "swap too small",
                swap(4096, b"SWAPSPACE2").done()[..40959].to_vec(),
                unknown(),
            ),
            case(
                "swap bad version",
                swap(4096, b"SWAPSPACE2").le32(1024, 2).done(),
                unknown(),
            ),
            case(
                "swap no pages",
                swap(4096, b"SWAPSPACE2").le32(1028, 0).done(),
                unknown(),
            ),
            case(
                "swap tuxonice",
                swap(4096, b"SWAPSPACE2")
                    .put(0, b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c")
                    .done(),
                unknown(),
            ),
            case(
                "lvm2 crc mismatch",
                lvm_label(Img::new(8192), 1, PV_UUID).put(600, b"x").done(),
                unknown(),
            ),
            case(
                "lvm2 wrong sector number",
                lvm_label(Img::new(8192), 1, PV_UUID).le64(520, 2).done(),
                unknown(),
            ),
            case(
                "lvm2 in sector 4",
                lvm_label(Img::new(8192), 4, PV_UUID).done(),
                unknown(),
            ),
            case(
                "luks2 header offset",
                luks(2).be64(256, 0x4000).done(),
                unknown(),
            ),
            case(
                "bitlocker metadata offset unaligned",
                bitlocker("x").le64(176, 0x2001).done(),
                unknown(),
            ),
            case(
                "bitlocker metadata signature",
                bitlocker("x").put(0x2000, b"-FVE-XX-").done(),
                unknown(),
            ),
            case(
                "md 1.2 checksum",
                md1(Img::new(128 * 1024), 4096).put(4096 + 40, b"x").done(),
                unknown(),
            ),
            case(
                "md 1.2 super_offset",
                md1_csum(
                    md1(Img::new(128 * 1024), 4096).le64(4096 + 144, 0).clone(),
                    4096,
                )
                .done(),
                unknown(),
            ),
            case(
                "md 1.2 max_dev too large",
                md1_csum(
                    md1(Img::new(128 * 1024), 4096)
                        .le32(4096 + 220, 5000)
                        .clone(),
                    4096,
                )
                .done(),
                unknown(),
            ),
            case(
                "md 0.90 uses more than it has",
                md0(256 * 1024).le32(256 * 1024 - 0x10000 + 32, 512).done(),
                unknown(),
            ),
        ]);
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
