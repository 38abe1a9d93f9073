//! exFAT: the `EXFAT   ` boot sector with blkid's sanity checks (jump, must-be-zero area, sector
//! and cluster shifts, number and placement of the FATs, cluster heap, root directory cluster) and
//! a good boot-region checksum; reported as `exfat` with the volume serial as `XXXX-XXXX` and the
//! label of the root directory's volume-label entry, found by following the directory's FAT chain
//! through at most 256 KiB. It does not read the backup boot region or check the FAT, the
//! allocation bitmap or the up-case table.

use super::{fat_serial, utf16_label, FsKind, Probe, Source};
use crate::bytes::{arr, byte, field_is, get, le16, le32};
use crate::disk::reader::ReadAt;

/// Most root-directory bytes read looking for the volume-label entry.
const EXFAT_MAX_ROOT_SCAN: u64 = 256 * 1024;

pub(super) fn probe_exfat<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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
/// The smallest exFAT images the probe accepts, and the cases built from them.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent
// module guard the parser, which reads untrusted bytes.
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, utf16, Case, Img};

    pub fn exfat(label: &str) -> Img {
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

    pub fn exfat_csum(mut i: Img) -> Img {
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

    /// exFAT images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken exFAT images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
