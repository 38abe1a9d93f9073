//! Linux swap areas: the `SWAP-SPACE` (v0) or `SWAPSPACE2` (v1) signature in the last 10 bytes of
//! the first page, for page sizes from 4 to 64 KiB, on a volume of at least 40 KiB that is not a
//! TuxOnIce image; reported as `swap`. A v1 area also needs a header of version 1 (in either byte
//! order) with a non-zero last page, and its label and UUID are reported only when the header's
//! padding is clear. A swap area holding a software-suspend image (blkid's `swsuspend`) is not
//! recognised, and the bad-page list is not read.

use super::{c_label, FsKind, Probe, Source};
use crate::bytes::{dce_uuid, get, le32};
use crate::disk::reader::ReadAt;

/// Page sizes whose last 10 bytes may hold the swap signature.
const SWAP_PAGE_SIZES: [u64; 5] = [0x1000, 0x2000, 0x4000, 0x8000, 0x10000];

pub(super) fn probe_swap<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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

#[cfg(test)]
/// The smallest swap images the probe accepts, and the cases built from them.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent
// module guard the parser, which reads untrusted bytes.
#[allow(clippy::arithmetic_side_effects)]
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img, UUID, UUID_STR};

    pub fn swap(page: usize, magic: &[u8; 10]) -> Img {
        let mut i = Img::new(64 * 1024);
        i.put(page - 10, magic)
            .le32(1024, 1)
            .le32(1028, 15)
            .put(1036, &UUID)
            .put(1052, b"swap0");
        i
    }

    /// swap images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken swap images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
