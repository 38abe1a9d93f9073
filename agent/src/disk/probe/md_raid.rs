//! Linux md RAID members: a v0.90 superblock (either byte order) in the last 64 KiB-aligned 64 KiB
//! of the device, or a v1 superblock 8 KiB before the end (1.0), at the start (1.1) or 4 KiB in
//! (1.2) whose recorded offset and checksum agree; reported as `linux_raid_member` with the array
//! UUID and, for v1, the array name as the label. There is no checksum check for v0.90, and it does
//! not read the other members, the write-intent bitmap or the array's data: what the array holds
//! spans several devices and is not probed.

use super::{c_label, usize_from, FsKind, Probe, Source};
use crate::bytes::{arr, be32, dce_uuid, get, le16, le32, le64};
use crate::disk::reader::ReadAt;

const MD_MAGIC: u32 = 0xa92b_4efc;
/// Size of the v0.90 reserved area at the end of the device.
const MD_RESERVED: u64 = 0x10000;
/// Largest `max_dev` that fits a v1 superblock in its 4 KiB slot.
const MD_MAX_DEV: u32 = (4096 - 256) / 2;

pub(super) fn probe_md_raid<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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

#[cfg(test)]
/// The smallest Linux md RAID images the probe accepts, and the cases built from them.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent
// module guard the parser, which reads untrusted bytes.
#[allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used
)]
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img, UUID, UUID_STR};

    /// An md v1 superblock at `off` of `i`.
    pub fn md1(mut i: Img, off: usize) -> Img {
        i.le32(off, MD_MAGIC)
            .le32(off + 4, 1)
            .put(off + 16, &UUID)
            .put(off + 32, b"host:0")
            .le64(off + 144, (off / 512) as u64)
            .le32(off + 220, 4);
        md1_csum(i, off)
    }

    pub fn md1_csum(mut i: Img, off: usize) -> Img {
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

    pub fn md0(len: usize) -> Img {
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

    /// Linux md RAID images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken Linux md RAID images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
