//! LUKS1 and LUKS2 encrypted volumes: the `LUKS\xba\xbe` magic at offset 0 (for LUKS2 only the
//! primary header, which records its own offset as 0); reported as `crypto_luks` with the UUID the
//! header stores as text and, for LUKS2, its label. It does not find a LUKS2 volume by a secondary
//! header alone, check the LUKS2 header checksum, parse the JSON metadata or key slots, or unlock
//! anything.

use super::{c_label, FsKind, Probe, Source};
use crate::bytes::{be16, be64, field_is, get};
use crate::disk::reader::ReadAt;

pub(super) fn probe_luks<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    let h = src.read(0, 264)?;
    if !field_is(&h, 0, b"LUKS\xba\xbe") {
        return None;
    }
    let version = be16(&h, 6)?;
    // A LUKS2 header records its own offset: the primary one says 0.
    if version == 2 && be64(&h, 256)? != 0 {
        return None;
    }
    // Both versions keep the UUID as text at 168; LUKS2 adds a label at 24.
    let uuid = c_label(get(&h, 168, 40)?);
    let label = if version == 2 {
        c_label(get(&h, 24, 48)?)
    } else {
        None
    };
    Some(Probe::new(FsKind::CryptoLuks, label, uuid))
}

#[cfg(test)]
/// The smallest LUKS images the probe accepts, and the cases built from them.
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img, UUID_STR};

    pub fn luks(version: u16) -> Img {
        let mut i = Img::new(16 * 1024);
        i.put(0, b"LUKS\xba\xbe")
            .be16(6, version)
            .put(168, UUID_STR.as_bytes());
        if version == 2 {
            i.be64(8, 16384).put(24, b"secret").put(72, b"sha256");
        }
        i
    }

    /// LUKS images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
            case(
                "luks1",
                luks(1).done(),
                p(FsKind::CryptoLuks, None, Some(UUID_STR)),
            ),
            case(
                "luks2",
                luks(2).done(),
                p(FsKind::CryptoLuks, Some("secret"), Some(UUID_STR)),
            ),
        ]
    }

    /// Broken LUKS images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![case(
            "luks2 header offset",
            luks(2).be64(256, 0x4000).done(),
            unknown(),
        )]
    }
}
