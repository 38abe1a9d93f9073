//! LVM2 physical volumes: a `LABELONE` label of type `LVM2 001` in one of the first four 512-byte
//! sectors, whose recorded sector number and CRC agree; reported as `lvm2_member` with the PV UUID
//! in LVM's `6-4-4-4-4-4-6` form and no label. It reads nothing past the label: the PV header, the
//! metadata areas and the volume group are read by [`crate::disk::lvm`].

use super::{FsKind, Probe, Source};
use crate::bytes::{field_is, get, le32, le64};
use crate::disk::lvm::label::CRC32_LVM;
use crate::disk::reader::ReadAt;

pub(super) fn probe_lvm2<R: ReadAt + ?Sized>(src: &Source<'_, R>) -> Option<Probe> {
    (0..4u64).find_map(|sector| lvm2_label(src, sector))
}

fn lvm2_label<R: ReadAt + ?Sized>(src: &Source<'_, R>, sector: u64) -> Option<Probe> {
    let b = src.read(sector.checked_mul(512)?, 512)?;
    if !field_is(&b, 0, b"LABELONE") || !field_is(&b, 0x18, b"LVM2 001") {
        return None;
    }
    // sector_xl names the sector the label sits in; crc_xl covers offset_xl to the sector end.
    if le64(&b, 8)? != sector || le32(&b, 16)? != CRC32_LVM.checksum(b.get(20..)?) {
        return None;
    }
    let raw = get(&b, 32, 32)?;
    let uuid = (!raw.iter().all(|&c| c == 0)).then(|| {
        let mut s = Vec::with_capacity(38);
        for (i, &c) in raw.iter().enumerate() {
            if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
                s.push(b'-');
            }
            s.push(c);
        }
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        String::from_utf8_lossy(s.get(..end).unwrap_or_default()).into_owned()
    });
    Some(Probe::new(FsKind::Lvm2Member, None, uuid))
}

#[cfg(test)]
/// The smallest LVM2 physical volume images the probe accepts, and the cases built from them.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent
// module guard the parser, which reads untrusted bytes.
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
pub(super) mod tests {
    use super::*;
    use crate::disk::probe::testutil::{case, p, unknown, Case, Img};

    pub fn lvm_label(mut i: Img, sector: usize, pv_uuid: &[u8; 32]) -> Img {
        let s = sector * 512;
        i.put(s, b"LABELONE")
            .le64(s + 8, sector as u64)
            .le32(s + 20, 32)
            .put(s + 24, b"LVM2 001")
            .put(s + 32, pv_uuid);
        let crc = CRC32_LVM.checksum(&i.0[s + 20..s + 512]);
        i.le32(s + 16, crc);
        i
    }

    pub const PV_UUID: &[u8; 32] = b"C2saHb0k0Q4l3veqGkduOactvLevHjZe";

    /// LVM2 physical volume images `probe` must recognise, with what it must report.
    pub fn recognised() -> Vec<Case> {
        vec![
            case(
                "lvm2 label in sector 1",
                lvm_label(Img::new(8192), 1, PV_UUID).done(),
                p(
                    FsKind::Lvm2Member,
                    None,
                    Some("C2saHb-0k0Q-4l3v-eqGk-duOa-ctvL-evHjZe"),
                ),
            ),
            case(
                "lvm2 label in sector 3",
                lvm_label(Img::new(8192), 3, PV_UUID).done(),
                p(
                    FsKind::Lvm2Member,
                    None,
                    Some("C2saHb-0k0Q-4l3v-eqGk-duOa-ctvL-evHjZe"),
                ),
            ),
        ]
    }

    /// Broken LVM2 physical volume images `probe` must not recognise.
    pub fn rejected() -> Vec<Case> {
        vec![
            case(
                "lvm2 crc mismatch",
                lvm_label(Img::new(8192), 1, PV_UUID).put(600, b"x").done(),
                unknown(),
            ),
            case(
                "lvm2 wrong sector number",
                lvm_label(Img::new(8192), 1, PV_UUID).le64(520, 2).done(),
                unknown(),
            ),
            case(
                "lvm2 in sector 4",
                lvm_label(Img::new(8192), 4, PV_UUID).done(),
                unknown(),
            ),
        ]
    }
}
