//! Btrfs: the primary superblock at 64 KiB, with magic `_BHRfS_M`, on a volume of at least 1 MiB,
//! with a good CRC32C when that is its checksum type and a non-zero sector size; reported as
//! `btrfs` with the label and the filesystem UUID (shared by every device of a multi-device
//! filesystem). A superblock checksummed with xxhash64, SHA-256 or BLAKE2b is taken on its magic
//! alone; the mirror superblocks (64 MiB, 256 GiB) are not read and the other devices of the
//! filesystem are not looked for.

use super::{c_label, FsKind, Probe, Source, CRC32C};
use crate::bytes::{dce_uuid, get, le16, le32};
use crate::disk::reader::ReadAt;

const BTRFS_SB: u64 = 0x10000;

pub(super) fn probe_btrfs<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    // blkid does not look for Btrfs on anything under 1 MiB.
    if src.size < 1024 * 1024 || !src.has(BTRFS_SB + 0x40, b"_BHRfS_M") {
        return None;
    }
    let sb = src.read(BTRFS_SB, 4096)?;
    // csum_type 0 is CRC32C over the rest of the 4 KiB superblock. xxhash64, SHA-256 and BLAKE2b
    // superblocks are taken on the magic alone (blkid checks the first two).
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

#[cfg(test)]
/// The smallest Btrfs images the probe accepts, and the cases built from them.
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img, UUID, UUID_STR};

    pub fn btrfs() -> Img {
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

    pub fn btrfs_csum(mut i: Img) -> Img {
        let sb = 0x10000;
        let crc = CRC32C.checksum(&i.0[sb + 32..sb + 4096]);
        i.le32(sb, crc);
        i
    }

    /// Btrfs images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken Btrfs images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
