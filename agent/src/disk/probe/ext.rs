//! ext2, ext3 and ext4: the superblock at 1 KiB with magic `EF53`, a block size of at most 64 KiB
//! and, with `metadata_csum`, a good superblock CRC32C; named as blkid names them (ext4 when any
//! feature ext3 lacks is set, else ext3 when there is a journal, else ext2) and reported with the
//! label and UUID. An external journal device (blkid's `jbd`) and a superblock that needs recovery
//! but has no journal are not reported; the backup superblocks and the group descriptors are not
//! read.

use crc::{Algorithm, Crc};

use super::{c_label, FsKind, Probe, Source};
use crate::bytes::{dce_uuid, get, le16, le32};
use crate::disk::reader::ReadAt;

/// CRC32C without the final inversion, as ext4's `metadata_csum` stores it.
const CRC32C_EXT4: Crc<u32> = Crc::<u32>::new(&Algorithm {
    xorout: 0,
    check: 0x1CF9_6D7C,
    residue: 0,
    ..crc::CRC_32_ISCSI
});

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

pub(super) fn probe_ext<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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

#[cfg(test)]
/// The smallest ext2/3/4 images the probe accepts, and the cases built from them.
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img, UUID, UUID_STR};

    pub fn ext(compat: u32, incompat: u32, ro_compat: u32) -> Img {
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

    pub fn ext_csum(mut i: Img) -> Img {
        let crc = CRC32C_EXT4.checksum(&i.0[1024..2044]);
        i.le32(2044, crc);
        i
    }

    /// ext2/3/4 images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken ext2/3/4 images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
