//! Partition tables: GPT (primary, else backup header), MBR with extended/logical partitions,
//! a protective MBR, or a filesystem on the whole disk.
//!
//! Both are parsed here rather than with the `gpt` and `mbrman` crates, which were tried: `gpt`
//! asserts (panics) on an entry size other than 128, loops over any entry count the header
//! claims and needs a writable device; `mbrman` panics (`unwrap` on `None` in
//! `find_alignment`) when every partition starts at LBA 0, and adds LBAs in unchecked `u32`
//! (fuzzing found both). A hostile disk must get a clear error instead. Every count, size and
//! offset from the disk is checked before it is used: an entry array above [`MAX_GPT_ARRAY`]
//! bytes is refused, partitions beyond the end of the disk or overlapping another are reported
//! on that partition, and the logical-partition chain must move forward, so a looping chain
//! ends.
//!
//! It does not look inside partitions (see [`super::probe`]) and does not understand LVM or RAID.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::io;

use serde::Serialize;

use super::probe::{self, FsKind};
use super::reader::{read_vec, ReadAt, Volume};

/// The largest GPT partition-entry array accepted (the usual one is 16 KiB).
pub const MAX_GPT_ARRAY: u64 = 1 << 20;
/// The CRC-32 of GPT headers and entry arrays.
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
/// Most logical partitions read from an extended partition (Linux allows 256 minors per disk).
const MAX_LOGICAL: usize = 256;

/// Kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR partition table.
    Mbr,
    /// No table: the disk holds one filesystem (or nothing known).
    None,
}

/// One partition, in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Partition number as Linux numbers it (GPT entry index + 1; MBR 1-4, logical from 5).
    pub number: u32,
    /// Start offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type: GPT type GUID (lowercase), or MBR type byte as `0x83`.
    pub type_id: String,
    /// A readable name of the type, when known.
    pub type_name: Option<&'static str>,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT unique partition GUID, or the MBR `PARTUUID` (`disksig-NN`).
    pub uuid: Option<String>,
    /// Why this partition cannot be read (beyond the end of the disk, overlapping another...).
    pub error: Option<String>,
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Kind of table.
    pub kind: TableKind,
    /// The partitions, in table order (logical partitions after the primaries).
    pub partitions: Vec<Partition>,
    /// Damage that was worked around (e.g. primary GPT header corrupt, backup used).
    pub warnings: Vec<String>,
}

/// Why the partition table could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A table is there but both copies (or the only copy) are unusable.
    #[error("corrupt {kind} partition table: {msg}")]
    Corrupt {
        /// `gpt` or `mbr`.
        kind: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// The device could not be read.
    #[error("cannot read the partition table: {0}")]
    Io(#[from] io::Error),
}

fn corrupt(kind: &'static str, msg: impl Into<String>) -> TableError {
    TableError::Corrupt {
        kind,
        msg: msg.into(),
    }
}

/// Read the partition table of `disk` (a window over the whole disk).
///
/// `sector_size` is the device's logical sector size (512 for image files); a GPT written for
/// 4096-byte sectors is found too.
pub fn read_table(disk: &Volume, sector_size: u32) -> Result<Table, TableError> {
    let mut sizes = vec![u64::from(sector_size)];
    for s in [512u64, 4096] {
        if !sizes.contains(&s) {
            sizes.push(s);
        }
    }
    for &ss in &sizes {
        if let Some(table) = gpt::read(disk, ss)? {
            return Ok(table);
        }
    }
    let sector0 = read_vec(
        disk,
        0,
        512.min(usize::try_from(disk.size()).unwrap_or(512)),
    )?;
    if is_whole_disk_filesystem(disk)? || !mbr::looks_like_mbr(&sector0) {
        return Ok(Table {
            kind: TableKind::None,
            partitions: Vec::new(),
            warnings: Vec::new(),
        });
    }
    if mbr::is_protective(&sector0) {
        return Err(corrupt(
            "gpt",
            "protective MBR but no valid GPT header (primary or backup)",
        ));
    }
    mbr::read(disk, sector_size)
}

/// A filesystem boot sector at offset 0 also ends in 55 AA: such a disk has no partition table.
fn is_whole_disk_filesystem(disk: &Volume) -> io::Result<bool> {
    Ok(matches!(
        probe::probe(disk)?.kind,
        FsKind::Ntfs | FsKind::Vfat | FsKind::Exfat | FsKind::Bitlocker
    ))
}

/// Mark partitions that leave the disk or overlap an earlier one. `first_usable` is the first
/// byte a partition may use.
fn check_bounds(parts: &mut [Partition], disk_size: u64, first_usable: u64) {
    let ranges: Vec<(u32, u64, Option<u64>)> = parts
        .iter()
        .map(|p| (p.number, p.start, p.start.checked_add(p.size)))
        .collect();
    for p in parts.iter_mut() {
        let end = p.start.checked_add(p.size);
        if p.size == 0 {
            p.error = Some("partition is empty".into());
        } else if end.is_none_or(|e| e > disk_size) {
            p.error = Some(format!(
                "partition ends at byte {} beyond the end of the {disk_size}-byte disk",
                end.map_or_else(|| "overflow".to_owned(), |e| e.to_string())
            ));
        } else if p.start < first_usable {
            p.error = Some(format!(
                "partition starts at byte {} inside the partition table",
                p.start
            ));
        } else if let Some(other) = ranges.iter().find(|(n, s, e)| {
            *n != p.number && e.is_some_and(|e| p.start < e) && end.is_some_and(|pe| *s < pe)
        }) {
            p.error = Some(format!("partition overlaps partition {}", other.0));
        }
    }
}

mod gpt {
    //! GPT headers and entry arrays (UEFI spec 2.10, section 5.3).
    use super::*;
    use crate::bytes::{le32, le64, ms_guid, utf16z};

    const SIGNATURE: &[u8; 8] = b"EFI PART";

    struct Header {
        alternate_lba: u64,
        first_usable: u64,
        entries_lba: u64,
        entry_count: u32,
        entry_size: u32,
        entries_crc: u32,
    }

    /// Parse and check the header in sector `lba`; `Err` says why it is unusable.
    fn header(disk: &Volume, lba: u64, ss: u64) -> Result<Header, String> {
        let at = lba.checked_mul(ss).ok_or("header LBA overflows")?;
        let len = usize::try_from(ss).map_err(|_| "sector size")?;
        let b = read_vec(disk, at, len).map_err(|e| format!("cannot read LBA {lba}: {e}"))?;
        if b.get(..8) != Some(&SIGNATURE[..]) {
            return Err(format!("no signature at LBA {lba}"));
        }
        let field = |v: Option<u32>| v.ok_or_else(|| "truncated header".to_owned());
        let header_size = field(le32(&b, 12))?;
        let hs = usize::try_from(header_size).map_err(|_| "header size")?;
        if hs < 92 || hs > len {
            return Err(format!("header size {header_size} is invalid"));
        }
        let stored_crc = field(le32(&b, 16))?;
        let mut h = b.get(..hs).ok_or("truncated header")?.to_vec();
        if let Some(crc) = h.get_mut(16..20) {
            crc.fill(0);
        }
        if CRC32.checksum(&h) != stored_crc {
            return Err(format!("header CRC mismatch at LBA {lba}"));
        }
        let my_lba = le64(&b, 24).ok_or("truncated header")?;
        if my_lba != lba {
            return Err(format!("header at LBA {lba} says it is at LBA {my_lba}"));
        }
        let header = Header {
            alternate_lba: le64(&b, 32).ok_or("truncated header")?,
            first_usable: le64(&b, 40).ok_or("truncated header")?,
            entries_lba: le64(&b, 72).ok_or("truncated header")?,
            entry_count: field(le32(&b, 80))?,
            entry_size: field(le32(&b, 84))?,
            entries_crc: field(le32(&b, 88))?,
        };
        if header.entry_size < 128 || !header.entry_size.is_multiple_of(8) {
            return Err(format!(
                "partition entry size {} is invalid",
                header.entry_size
            ));
        }
        let array = u64::from(header.entry_count).saturating_mul(u64::from(header.entry_size));
        if array > MAX_GPT_ARRAY {
            return Err(format!(
                "{} partition entries of {} bytes ({array} bytes) is more than the {MAX_GPT_ARRAY} accepted",
                header.entry_count, header.entry_size
            ));
        }
        Ok(header)
    }

    fn entries(disk: &Volume, h: &Header, ss: u64) -> Result<Vec<Partition>, String> {
        let len = u64::from(h.entry_count).saturating_mul(u64::from(h.entry_size));
        let at = h
            .entries_lba
            .checked_mul(ss)
            .ok_or("entry array LBA overflows")?;
        let len = usize::try_from(len).map_err(|_| "entry array size")?;
        let array =
            read_vec(disk, at, len).map_err(|e| format!("cannot read the entry array: {e}"))?;
        if CRC32.checksum(&array) != h.entries_crc {
            return Err("partition entry array CRC mismatch".into());
        }
        let size = usize::try_from(h.entry_size).map_err(|_| "entry size")?;
        let mut parts = Vec::new();
        for (i, e) in array.chunks_exact(size).enumerate() {
            let type_guid: [u8; 16] = e
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 16]);
            if type_guid == [0; 16] {
                continue;
            }
            let first = le64(e, 32).unwrap_or(0);
            let last = le64(e, 40).unwrap_or(0);
            let type_id = ms_guid(&type_guid).unwrap_or_default();
            let name = utf16z(e.get(56..128).unwrap_or_default());
            let sectors = last.checked_sub(first).and_then(|n| n.checked_add(1));
            parts.push(Partition {
                number: u32::try_from(i)
                    .ok()
                    .and_then(|i| i.checked_add(1))
                    .unwrap_or(u32::MAX),
                start: first.saturating_mul(ss),
                size: sectors.map_or(0, |n| n.saturating_mul(ss)),
                type_name: type_name(&type_id),
                type_id,
                name: (!name.is_empty()).then_some(name),
                uuid: e.get(16..32).and_then(ms_guid),
                error: None,
            });
        }
        Ok(parts)
    }

    /// Read a GPT with `ss`-byte sectors: `Ok(None)` when neither header is there.
    pub(super) fn read(disk: &Volume, ss: u64) -> Result<Option<Table>, TableError> {
        let last_lba = match disk.size().checked_div(ss).and_then(|n| n.checked_sub(1)) {
            Some(l) if l >= 2 => l,
            _ => return Ok(None),
        };
        let primary = header(disk, 1, ss);
        let backup_lba = match &primary {
            Ok(h) if h.alternate_lba <= last_lba && h.alternate_lba > 1 => h.alternate_lba,
            _ => last_lba,
        };
        let backup = header(disk, backup_lba, ss);
        let absent =
            |r: &Result<Header, String>| r.as_ref().is_err_and(|e| e.starts_with("no signature"));
        if absent(&primary) && absent(&backup) {
            return Ok(None);
        }
        let mut warnings = Vec::new();
        let mut candidates = Vec::new();
        for (which, h) in [("primary", primary), ("backup", backup)] {
            match h {
                Ok(h) => candidates.push((which, h)),
                Err(e) => warnings.push(format!("{which} GPT header unusable ({e})")),
            }
        }
        let mut last_error = None;
        for (which, h) in candidates {
            match entries(disk, &h, ss) {
                Ok(mut partitions) => {
                    if which == "backup" {
                        warnings.push("using the backup GPT header".into());
                    }
                    let first_usable = h.first_usable.saturating_mul(ss);
                    check_bounds(&mut partitions, disk.size(), first_usable);
                    return Ok(Some(Table {
                        kind: TableKind::Gpt,
                        partitions,
                        warnings,
                    }));
                }
                Err(e) => {
                    warnings.push(format!("{which} GPT entry array unusable ({e})"));
                    last_error = Some(e);
                }
            }
        }
        Err(corrupt(
            "gpt",
            last_error.unwrap_or_else(|| warnings.join("; ")),
        ))
    }

    fn type_name(guid: &str) -> Option<&'static str> {
        Some(match guid {
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => "EFI System",
            "21686148-6449-6e6f-744e-656564454649" => "BIOS boot",
            "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux filesystem",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
            "b921b045-1df0-41c3-af44-4c6f280d3fae" => "Linux root (ARM64)",
            "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
            "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
            "e6d6d379-f507-44c2-a23c-238f2a3df928" => "Linux LVM",
            "a19d880f-05fc-4d3b-a006-743f0f84911e" => "Linux RAID",
            "ca7d7ccb-63ed-4c53-861c-1742536059cc" => "Linux LUKS",
            "e3c9e316-0b5c-4db8-817d-f92df00215ae" => "Microsoft reserved",
            "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" => "Microsoft basic data",
            "de94bba4-06d1-4d40-a16a-bfd50179d6ac" => "Windows recovery",
            "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3" => "Microsoft LDM metadata",
            "af9b60a0-1431-4f62-bc68-3311714a69ad" => "Microsoft LDM data",
            _ => return None,
        })
    }
}

mod mbr {
    //! DOS partition tables: four primary entries and the chain of extended boot records.
    use super::*;
    use crate::bytes::{byte, le32};

    /// 55 AA at the end and boot flags that are 0x00 or 0x80, with at least one entry used.
    pub(super) fn looks_like_mbr(sector0: &[u8]) -> bool {
        if sector0.get(510..512) != Some(&[0x55, 0xaa][..]) {
            return false;
        }
        let entries: Vec<&[u8]> = (0..4usize)
            .filter_map(|i| {
                let at = i.checked_mul(16)?.checked_add(446)?;
                sector0.get(at..at.checked_add(16)?)
            })
            .collect();
        entries.len() == 4
            && entries
                .iter()
                .all(|e| matches!(e.first(), Some(0x00 | 0x80)))
            && entries.iter().any(|e| e.get(4).is_some_and(|&t| t != 0))
    }

    /// An MBR whose only purpose is to protect a GPT (type 0xEE).
    pub(super) fn is_protective(sector0: &[u8]) -> bool {
        (0..4usize).any(|i| {
            i.checked_mul(16)
                .and_then(|o| o.checked_add(446 + 4))
                .and_then(|at| sector0.get(at))
                == Some(&0xee)
        })
    }

    /// One 16-byte partition entry: type and LBA range.
    struct Entry {
        sys: u8,
        start: u32,
        sectors: u32,
    }

    fn entries(sector: &[u8]) -> [Option<Entry>; 4] {
        [0usize, 1, 2, 3].map(|i| {
            let at = i.checked_mul(16)?.checked_add(446)?;
            Some(Entry {
                sys: byte(sector, at.checked_add(4)?)?,
                start: le32(sector, at.checked_add(8)?)?,
                sectors: le32(sector, at.checked_add(12)?)?,
            })
        })
    }

    fn is_extended(sys: u8) -> bool {
        matches!(sys, 0x05 | 0x0f | 0x85)
    }

    pub(super) fn read(disk: &Volume, sector_size: u32) -> Result<Table, TableError> {
        let ss = u64::from(sector_size);
        let len = usize::try_from(ss).map_err(|_| corrupt("mbr", "sector size"))?;
        let sector0 = read_vec(disk, 0, len)?;
        let disk_id = le32(&sector0, 440).unwrap_or(0);
        let mut partitions = Vec::new();
        let mut push = |number: u32, lba: u64, e: &Entry| {
            partitions.push(Partition {
                number,
                start: lba.saturating_mul(ss),
                size: u64::from(e.sectors).saturating_mul(ss),
                type_id: format!("{:#04x}", e.sys),
                type_name: type_name(e.sys),
                name: None,
                uuid: (disk_id != 0).then(|| format!("{disk_id:08x}-{number:02x}")),
                error: None,
            });
        };
        let mut extended = None;
        for (number, e) in (1u32..).zip(entries(&sector0)) {
            let Some(e) = e.filter(|e| e.sys != 0) else {
                continue;
            };
            if is_extended(e.sys) {
                extended = extended.or(Some(e));
            } else {
                push(number, u64::from(e.start), &e);
            }
        }
        if let Some(ext) = extended {
            for (number, (lba, e)) in (5u32..).zip(logical_chain(disk, &ext, ss)?) {
                push(number, lba, &e);
            }
        }
        check_bounds(&mut partitions, disk.size(), ss);
        Ok(Table {
            kind: TableKind::Mbr,
            partitions,
            warnings: Vec::new(),
        })
    }

    /// Walk the extended boot records of extended partition `ext`: each holds one logical
    /// partition (relative to that EBR) and a link to the next EBR (relative to `ext`). Links
    /// must move forward and stay inside `ext`, and at most [`MAX_LOGICAL`] are followed, so a
    /// hostile chain cannot loop.
    fn logical_chain(disk: &Volume, ext: &Entry, ss: u64) -> Result<Vec<(u64, Entry)>, TableError> {
        let base = u64::from(ext.start);
        let end = base.saturating_add(u64::from(ext.sectors));
        let len = usize::try_from(ss).map_err(|_| corrupt("mbr", "sector size"))?;
        let mut out = Vec::new();
        let mut ebr = base;
        loop {
            let at = ebr
                .checked_mul(ss)
                .ok_or_else(|| corrupt("mbr", "EBR offset overflows"))?;
            let sector = read_vec(disk, at, len)
                .map_err(|e| corrupt("mbr", format!("cannot read the EBR at LBA {ebr}: {e}")))?;
            if sector.get(510..512) != Some(&[0x55, 0xaa][..]) {
                if ebr == base {
                    break; // an empty extended partition need not hold an EBR
                }
                return Err(corrupt(
                    "mbr",
                    format!("EBR at LBA {ebr} has no boot signature"),
                ));
            }
            let [first, second, ..] = entries(&sector);
            if let Some(part) = first.filter(|e| e.sys != 0 && e.sectors != 0) {
                out.push((ebr.saturating_add(u64::from(part.start)), part));
            }
            let next = match second.filter(|e| is_extended(e.sys) && e.start != 0) {
                Some(link) => base.saturating_add(u64::from(link.start)),
                None => break,
            };
            if next <= ebr || next >= end {
                return Err(corrupt(
                    "mbr",
                    format!("EBR at LBA {ebr} links to LBA {next}, outside or backwards"),
                ));
            }
            if out.len() >= MAX_LOGICAL {
                return Err(corrupt(
                    "mbr",
                    format!("more than {MAX_LOGICAL} logical partitions"),
                ));
            }
            ebr = next;
        }
        Ok(out)
    }

    fn type_name(sys: u8) -> Option<&'static str> {
        Some(match sys {
            0x01 | 0x04 | 0x06 | 0x0e => "FAT16",
            0x0b | 0x0c => "W95 FAT32",
            0x07 => "HPFS/NTFS/exFAT",
            0x82 => "Linux swap",
            0x83 => "Linux",
            0x8e => "Linux LVM",
            0xfd => "Linux RAID autodetect",
            0xef => "EFI (FAT-12/16/32)",
            0x27 => "Hidden NTFS WinRE",
            _ => return None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
mod tests {
    use super::*;
    use crate::disk::reader::{Budget, Disk};
    use std::sync::Arc;

    const SS: u64 = 512;

    struct TempDisk(Arc<Disk>);
    impl TempDisk {
        fn new(bytes: &[u8], tag: &str) -> Self {
            TempDisk(Disk::from_bytes(tag, bytes.to_vec()))
        }
        fn table(&self) -> Result<Table, TableError> {
            let v = self
                .0
                .volume(0, self.0.size(), Budget::new(u64::MAX))
                .expect("volume");
            read_table(&v, 512)
        }
    }

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    const LINUX: [u8; 16] = [
        0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ];

    /// Write a GPT header at `lba` pointing at an entry array at `entries_lba`.
    fn write_header(img: &mut [u8], lba: u64, alt: u64, entries_lba: u64, count: u32, esize: u32) {
        let at = (lba * SS) as usize;
        let array_len = (count as usize) * (esize as usize);
        let e_at = (entries_lba * SS) as usize;
        let ecrc = CRC32.checksum(&img[e_at..e_at + array_len.min(img.len() - e_at)]);
        let mut h = vec![0u8; 92];
        put(&mut h, 0, b"EFI PART");
        put(&mut h, 8, &0x0001_0000u32.to_le_bytes());
        put(&mut h, 12, &92u32.to_le_bytes());
        put(&mut h, 24, &lba.to_le_bytes());
        put(&mut h, 32, &alt.to_le_bytes());
        put(&mut h, 40, &34u64.to_le_bytes());
        put(&mut h, 48, &(img.len() as u64 / SS - 34).to_le_bytes());
        put(&mut h, 72, &entries_lba.to_le_bytes());
        put(&mut h, 80, &count.to_le_bytes());
        put(&mut h, 84, &esize.to_le_bytes());
        put(&mut h, 88, &ecrc.to_le_bytes());
        let crc = CRC32.checksum(&h);
        put(&mut h, 16, &crc.to_le_bytes());
        put(img, at, &h);
    }

    /// A 1 MiB GPT disk with partitions given as (first, last) LBAs.
    fn gpt_disk(parts: &[(u64, u64)]) -> Vec<u8> {
        let mut img = vec![0u8; 1 << 20];
        let last = img.len() as u64 / SS - 1;
        // Protective MBR.
        put(&mut img, 446 + 4, &[0xee]);
        put(&mut img, 510, &[0x55, 0xaa]);
        for (i, (first, end)) in parts.iter().enumerate() {
            let e = 2 * SS as usize + i * 128;
            put(&mut img, e, &LINUX);
            put(&mut img, e + 16, &[i as u8 + 1; 16]);
            put(&mut img, e + 32, &first.to_le_bytes());
            put(&mut img, e + 40, &end.to_le_bytes());
            let name: Vec<u8> = "root"
                .encode_utf16()
                .flat_map(|c| c.to_le_bytes())
                .collect();
            put(&mut img, e + 56, &name);
        }
        // The backup array is a copy of the primary one at last-32.
        let array: Vec<u8> = img[2 * SS as usize..34 * SS as usize].to_vec();
        put(&mut img, ((last - 32) * SS) as usize, &array);
        write_header(&mut img, 1, last, 2, 128, 128);
        write_header(&mut img, last, 1, last - 32, 128, 128);
        img
    }

    fn summary(t: &Result<Table, TableError>) -> String {
        match t {
            Ok(t) => format!(
                "{:?} [{}] {}",
                t.kind,
                t.partitions
                    .iter()
                    .map(|p| format!(
                        "{}:{}+{}{}",
                        p.number,
                        p.start,
                        p.size,
                        p.error
                            .as_ref()
                            .map(|e| format!(" !{e}"))
                            .unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.warnings.join("; ")
            ),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn gpt_table() {
        struct Case {
            name: &'static str,
            img: Vec<u8>,
            want: &'static str,
        }
        let good = gpt_disk(&[(34, 1000), (1001, 2000)]);
        let mut bad_primary = good.clone();
        bad_primary[SS as usize + 40] ^= 1; // first usable LBA: header CRC now wrong
        let mut both_bad = bad_primary.clone();
        let last = both_bad.len() - SS as usize;
        both_bad[last + 40] ^= 1;
        let mut huge = good.clone();
        write_header(&mut huge, 1, 2047, 2, 100_000, 128);
        let mut odd_entry = good.clone();
        write_header(&mut odd_entry, 1, 2047, 2, 128, 100);
        let mut bad_array = good.clone();
        bad_array[2 * SS as usize + 33] ^= 1; // entry 1 start LBA: array CRC now wrong
        let cases = vec![
            Case { name: "good", img: good.clone(), want: "Gpt [1:17408+495104, 2:512512+512000] " },
            Case {
                name: "primary header corrupt",
                img: bad_primary,
                want: "Gpt [1:17408+495104, 2:512512+512000] primary GPT header unusable (header CRC mismatch at LBA 1); using the backup GPT header",
            },
            Case { name: "both headers corrupt", img: both_bad, want: "error: corrupt gpt partition table: primary GPT header unusable (header CRC mismatch at LBA 1); backup GPT header unusable (header CRC mismatch at LBA 2047)" },
            Case {
                name: "absurd entry count falls back to the backup",
                img: huge,
                want: "Gpt [1:17408+495104, 2:512512+512000] primary GPT header unusable (100000 partition entries of 128 bytes (12800000 bytes) is more than the 1048576 accepted); using the backup GPT header",
            },
            Case {
                name: "entry size 100",
                img: odd_entry,
                want: "Gpt [1:17408+495104, 2:512512+512000] primary GPT header unusable (partition entry size 100 is invalid); using the backup GPT header",
            },
            Case {
                name: "primary array corrupt",
                img: bad_array,
                want: "Gpt [1:17408+495104, 2:512512+512000] primary GPT entry array unusable (partition entry array CRC mismatch); using the backup GPT header",
            },
            Case {
                name: "beyond the end and overlapping",
                img: gpt_disk(&[(34, 1000), (900, 1100), (2000, 5000)]),
                want: "Gpt [1:17408+495104 !partition overlaps partition 2, 2:460800+102912 !partition overlaps partition 1, 3:1024000+1536512 !partition ends at byte 2560512 beyond the end of the 1048576-byte disk] ",
            },
            Case {
                name: "last before first",
                img: gpt_disk(&[(500, 100)]),
                want: "Gpt [1:256000+0 !partition is empty] ",
            },
            Case { name: "zeros", img: vec![0; 1 << 20], want: "None [] " },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let d = TempDisk::new(&c.img, &format!("gpt{i}"));
            assert_eq!(summary(&d.table()), c.want, "case {}", c.name);
        }
    }

    fn mbr_entry(img: &mut [u8], slot: usize, sys: u8, start: u32, sectors: u32) {
        let at = 446 + slot * 16;
        put(img, at + 4, &[sys]);
        put(img, at + 8, &start.to_le_bytes());
        put(img, at + 12, &sectors.to_le_bytes());
    }

    #[test]
    fn mbr_table() {
        let mut img = vec![0u8; 1 << 20];
        put(&mut img, 440, &0x1234_5678u32.to_le_bytes());
        put(&mut img, 510, &[0x55, 0xaa]);
        mbr_entry(&mut img, 0, 0x0c, 100, 100);
        mbr_entry(&mut img, 1, 0x05, 200, 1800);
        // EBR 1 at LBA 200: logical at +10, next EBR at relative 500.
        let ebr = |img: &mut Vec<u8>, lba: usize, start: u32, n: u32, next: u32| {
            let at = lba * 512;
            put(img, at + 446 + 4, &[0x83]);
            put(img, at + 446 + 8, &start.to_le_bytes());
            put(img, at + 446 + 12, &n.to_le_bytes());
            if next != 0 {
                put(img, at + 462 + 4, &[0x05]);
                put(img, at + 462 + 8, &next.to_le_bytes());
                put(img, at + 462 + 12, &100u32.to_le_bytes());
            }
            put(img, at + 510, &[0x55, 0xaa]);
        };
        ebr(&mut img, 200, 10, 50, 500);
        ebr(&mut img, 700, 10, 60, 0);
        let d = TempDisk::new(&img, "mbr");
        let t = d.table().expect("table");
        assert_eq!(
            summary(&Ok(t.clone())),
            "Mbr [1:51200+51200, 5:107520+25600, 6:363520+30720] "
        );
        assert_eq!(t.partitions[0].uuid.as_deref(), Some("12345678-01"));
        assert_eq!(t.partitions[2].type_name, Some("Linux"));

        // A chain that points back at itself is refused, not followed forever.
        let mut looping = img.clone();
        put(&mut looping, 700 * 512 + 462 + 4, &[0x05]);
        put(&mut looping, 700 * 512 + 462 + 8, &0u32.to_le_bytes());
        put(&mut looping, 700 * 512 + 462 + 12, &1u32.to_le_bytes());
        put(&mut looping, 700 * 512 + 462 + 8, &300u32.to_le_bytes());
        let d = TempDisk::new(&looping, "mbr-loop");
        assert!(
            summary(&d.table()).starts_with("error: corrupt mbr partition table"),
            "{}",
            summary(&d.table())
        );

        // Every partition at LBA 0 (mbrman panicked on this): reported, not a crash.
        let mut at_zero = vec![0u8; 1 << 20];
        put(&mut at_zero, 510, &[0x55, 0xaa]);
        mbr_entry(&mut at_zero, 0, 0x83, 0, 100);
        mbr_entry(&mut at_zero, 1, 0x05, 0, 100);
        assert_eq!(
            summary(&TempDisk::new(&at_zero, "zero").table()),
            "Mbr [1:0+51200 !partition starts at byte 0 inside the partition table, \
             5:0+51200 !partition starts at byte 0 inside the partition table] "
        );

        // Boot flags other than 0x00/0x80: not an MBR.
        let mut not_mbr = img.clone();
        put(&mut not_mbr, 446, &[0x42]);
        assert_eq!(
            summary(&TempDisk::new(&not_mbr, "notmbr").table()),
            "None [] "
        );

        // A protective MBR without any GPT header is a corrupt GPT.
        let mut prot = vec![0u8; 1 << 20];
        put(&mut prot, 510, &[0x55, 0xaa]);
        mbr_entry(&mut prot, 0, 0xee, 1, 2047);
        assert_eq!(
            summary(&TempDisk::new(&prot, "prot").table()),
            "error: corrupt gpt partition table: protective MBR but no valid GPT header (primary or backup)"
        );
    }
}
