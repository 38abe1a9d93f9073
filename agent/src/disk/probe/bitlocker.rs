//! BitLocker encrypted volumes: the Vista, Windows 7 and BitLocker To Go boot sectors, and for the
//! last two the FVE metadata block their boot sector points to (`-FVE-FS-`, 64-byte aligned);
//! reported as `bitlocker` with the volume GUID and the description entry as the label (a Vista
//! volume is reported with neither). It reads only the first metadata copy, at most 64 KiB of it,
//! does not check it against the other two copies, and decrypts nothing.

use super::{usize_from, utf16_label, FsKind, Probe, Source};
use crate::bytes::{field_is, get, le16, le32, le64, ms_guid};
use crate::disk::reader::ReadAt;

const BDE_VISTA: &[u8] = b"\xeb\x52\x90-FVE-FS-";
const BDE_WIN7: &[u8] = b"\xeb\x58\x90-FVE-FS-";
const BDE_TOGO: &[u8] = b"\xeb\x58\x90MSWIN4.1";
/// Largest FVE metadata block read for the description (the label).
const BDE_MAX_METADATA: u32 = 64 * 1024;

pub(super) fn probe_bitlocker<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
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

#[cfg(test)]
/// The smallest BitLocker images the probe accepts, and the cases built from them.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent
// module guard the parser, which reads untrusted bytes.
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, utf16, Case, Img, UUID};

    pub fn bitlocker(description: &str) -> Img {
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

    /// BitLocker images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
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
        ]
    }

    /// Broken BitLocker images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
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
        ]
    }
}
