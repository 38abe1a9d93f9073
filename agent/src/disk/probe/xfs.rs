//! XFS, v4 and v5: the `XFSB` superblock at offset 0 with blkid's sanity checks on its geometry
//! (sector, block and inode sizes and their logs, allocation group count and size against the block
//! count, realtime extent size, `imax_pct`) and, for v5, the CRC feature and a good superblock
//! CRC32C; reported as `xfs` with the label and UUID. It does not read the secondary superblocks,
//! the allocation groups or the log, and does not recognise an external XFS log device.

use super::{c_label, FsKind, Probe, Source, CRC32C};
use crate::bytes::{be16, be32, be64, byte, dce_uuid, field_is, get, le32};
use crate::disk::reader::ReadAt;

pub(super) fn probe_xfs<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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

#[cfg(test)]
/// The smallest XFS images the probe accepts, and the cases built from them.
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img, UUID, UUID_STR};

    pub fn xfs(v5: bool) -> Img {
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

    /// XFS images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken XFS images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
