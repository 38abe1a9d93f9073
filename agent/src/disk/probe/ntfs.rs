//! NTFS: the `NTFS    ` OEM ID with a sane boot sector (sector, cluster and MFT record sizes, zero
//! FAT-era fields, `$MFT` and `$MFTMirr` inside the volume) and a `FILE` record where the MFT
//! starts; reported as `ntfs` with the volume serial as 16 uppercase hex digits and the label from
//! the `$VOLUME_NAME` attribute of `$Volume` (MFT record 3), read with the update-sequence fixups
//! applied. It reads at most 64 KiB of that record, takes the attribute to be resident (as NTFS
//! always writes it), and does not read `$MFTMirr`, the backup boot sector or anything else of the
//! MFT.

use super::{usize_from, utf16_label, FsKind, Probe, Source};
use crate::bytes::{arr, byte, field_is, le16, le32, le64};
use crate::disk::reader::ReadAt;

/// Largest cluster NTFS allows (Windows 10 1703 and later).
const NTFS_MAX_CLUSTER: u32 = 2 * 1024 * 1024;
/// Most of an MFT record read for the label.
const NTFS_MAX_RECORD_READ: u32 = 64 * 1024;

pub(super) fn probe_ntfs<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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

#[cfg(test)]
/// The smallest NTFS images the probe accepts, and the cases built from them.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent
// module guard the parser, which reads untrusted bytes.
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, utf16, Case, Img};

    pub fn ntfs(label: &str) -> Img {
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

    /// NTFS images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken NTFS images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
