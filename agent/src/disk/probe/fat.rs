//! FAT12, FAT16 and FAT32: a boot sector with one of blkid's FAT magics (or, without one, the
//! `55AA` boot signature and no OS/2 JFS or HPFS pseudo boot sector), a BIOS parameter block that
//! passes blkid's checks (sector and cluster sizes, media byte, a cluster count that fits the FAT
//! type) and, on FAT32, FSInfo signatures that are valid or zero; reported as `vfat` with the
//! volume serial as `XXXX-XXXX` and the label of the root directory's volume-label entry, the
//! boot-sector copy standing in only when the directory cannot be read. It reads at most 256 KiB of
//! root directory (and at most 100 clusters of a FAT32 one), ignores long file names, and does not
//! tell FAT12 from FAT16 or FAT32 in what it reports.

use super::{c_label, fat_serial, FsKind, Probe, Source};
use crate::bytes::{arr, byte, field_is, get, le16, le32};
use crate::disk::reader::ReadAt;

const FAT12_MAX: u32 = 0xFF4;
const FAT16_MAX: u32 = 0xFFF4;
const FAT32_MAX: u32 = 0x0FFF_FFF6;
/// Most root-directory bytes read looking for the volume-label entry.
const FAT_MAX_ROOT_SCAN: usize = 256 * 1024;

pub(super) fn probe_vfat<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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

#[cfg(test)]
/// The smallest FAT images the probe accepts, and the cases built from them.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent
// module guard the parser, which reads untrusted bytes.
#[allow(clippy::arithmetic_side_effects)]
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img};

    pub fn fat16(root_label: Option<&[u8; 11]>) -> Img {
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

    pub fn fat32(root_label: Option<&[u8; 11]>) -> Img {
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

    /// FAT images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        let mut fat_label = *b"DATA       ";
        let e5_label = {
            fat_label[0] = 0x05;
            fat_label
        };
        vec![
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
        ]
    }

    /// Broken FAT images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
