//! The binary part of an LVM2 physical volume: the label in one of the first four sectors, the
//! PV header after it, and the metadata area headers whose raw locations point at the text
//! metadata (LVM2's `lib/label/label.c`, `lib/format_text/layout.h`, `format-text.c`).
//!
//! [`read`] checks every checksum LVM checks (the label's CRC, each metadata area header's CRC
//! and magic, the text's CRC), follows a text that wraps around the end of its circular metadata
//! area, and keeps the newest valid copy (highest `seqno`) when the PV has two metadata areas.
//! Every size and offset is checked against the volume before it is read.
//!
//! It does not read the pre-committed metadata slot (`raw_locn[1]`: an interrupted LVM command),
//! the bootloader area, or the PV header extension.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use crc::{Algorithm, Crc};

use super::metadata::{self, Value, MAX_TEXT};
use super::LvmError;
use crate::bytes::{field_is, get, le32, le64};
use crate::disk::reader::{read_vec, ReadAt};

/// Bytes in a label sector and in a metadata area header.
pub const SECTOR: u64 = 512;
/// Magic of a metadata area header.
pub const MDA_MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";
/// LVM2's CRC: CRC-32 with the initial value 0xf597a6cf and no final inversion (`calc_crc` in
/// LVM2's `lib/misc/crc.c`).
pub const CRC32_LVM: Crc<u32> = Crc::<u32>::new(&Algorithm {
    init: 0xf597_a6cf_u32.reverse_bits(),
    xorout: 0,
    check: 0,
    residue: 0,
    ..crc::CRC_32_ISO_HDLC
});
/// The `raw_locn` flag of a metadata area that `pvchange --metadataignore` switched off.
const RAW_LOCN_IGNORED: u32 = 1;
/// Most data or metadata areas listed in a PV header (LVM writes one data area and at most two
/// metadata areas; the list must fit in the label sector anyway).
const MAX_AREAS: usize = 8;

/// A range of a PV in bytes from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// Offset from the start of the PV.
    pub offset: u64,
    /// Length (0 for a data area: "to the end of the device").
    pub size: u64,
}

/// What the label and header of a physical volume say.
#[derive(Debug, Clone)]
pub struct Pv {
    /// The PV UUID as LVM prints it (`xxxxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxxxx`).
    pub uuid: String,
    /// The device size recorded in the header.
    pub device_size_bytes: u64,
    /// The sector (0-3) holding the label.
    pub label_sector: u64,
    /// Data areas (where extents live).
    pub data_areas: Vec<Area>,
    /// Metadata areas.
    pub metadata_areas: Vec<Area>,
    /// The newest valid metadata found in this PV's metadata areas; `None` for a PV without
    /// metadata areas (`pvcreate --metadatacopies 0`) or with only empty ones.
    pub metadata: Option<Metadata>,
    /// Metadata areas that could not be used although another one could.
    pub warnings: Vec<String>,
}

/// One copy of a VG's text metadata.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// The VG's name (the text's top-level section).
    pub vg_name: String,
    /// The VG's UUID.
    pub vg_uuid: String,
    /// Its sequence number: higher is newer.
    pub seqno: u64,
    /// The parsed VG section.
    pub vg: Value,
}

/// Read the label, PV header and metadata of a volume. `Ok(None)` when no sector of the first
/// four has a `LABELONE` label.
pub fn read<R: ReadAt + ?Sized>(vol: &R) -> Result<Option<Pv>, LvmError> {
    let head_len = SECTOR.saturating_mul(4).min(vol.size());
    let head = read_vec(vol, 0, usize::try_from(head_len).unwrap_or(0))?;
    let mut first_error = None;
    for (index, sector) in head.chunks_exact(512).enumerate() {
        if !field_is(sector, 0, b"LABELONE") {
            continue;
        }
        let number = u64::try_from(index).unwrap_or(u64::MAX);
        match header(sector, number) {
            Ok(mut pv) => {
                read_metadata(vol, &mut pv)?;
                return Ok(Some(pv));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(None), Err)
}

fn header(sector: &[u8], number: u64) -> Result<Pv, LvmError> {
    let at = number.saturating_mul(SECTOR);
    let bad = |msg: &str| LvmError::corrupt(Some(at), format!("lvm label: {msg}"));
    let field = |v: Option<u64>| v.ok_or_else(|| bad("truncated"));
    if field(le64(sector, 8))? != number {
        return Err(bad("sector number does not match its position"));
    }
    let crc = field(le32(sector, 16).map(u64::from))?;
    if crc != u64::from(CRC32_LVM.checksum(get(sector, 20, 492).unwrap_or_default())) {
        return Err(bad("checksum mismatch"));
    }
    if !field_is(sector, 24, b"LVM2 001") {
        return Err(LvmError::Unsupported(format!(
            "label type {:?}",
            String::from_utf8_lossy(get(sector, 24, 8).unwrap_or_default())
        )));
    }
    let off = usize::try_from(field(le32(sector, 20).map(u64::from))?).unwrap_or(usize::MAX);
    if !(32..=448).contains(&off) {
        return Err(bad("pv header offset outside the label sector"));
    }
    let uuid = format_uuid(get(sector, off, 32).ok_or_else(|| bad("truncated"))?);
    let device_size_bytes = field(le64(sector, off.saturating_add(32)))?;
    let mut cursor = off.saturating_add(40);
    let data_areas = areas(sector, &mut cursor).ok_or_else(|| bad("area list overruns"))?;
    let metadata_areas = areas(sector, &mut cursor).ok_or_else(|| bad("area list overruns"))?;
    Ok(Pv {
        uuid,
        device_size_bytes,
        label_sector: number,
        data_areas,
        metadata_areas,
        metadata: None,
        warnings: Vec::new(),
    })
}

/// A zero-terminated list of `{offset, size}` pairs at `*cursor`, moving the cursor past it.
fn areas(sector: &[u8], cursor: &mut usize) -> Option<Vec<Area>> {
    let mut out = Vec::new();
    loop {
        let offset = le64(sector, *cursor)?;
        let size = le64(sector, cursor.checked_add(8)?)?;
        *cursor = cursor.checked_add(16)?;
        if offset == 0 {
            return Some(out);
        }
        if out.len() >= MAX_AREAS {
            return None;
        }
        out.push(Area { offset, size });
    }
}

/// LVM's printed form of a 32-character UUID: groups of 6-4-4-4-4-4-6.
pub fn format_uuid(raw: &[u8]) -> String {
    let mut s = String::with_capacity(38);
    for (i, &c) in raw.iter().take_while(|&&c| c != 0).enumerate() {
        if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
            s.push('-');
        }
        s.push(char::from(c));
    }
    s
}

/// Fill `pv.metadata` from the newest valid metadata area.
fn read_metadata<R: ReadAt + ?Sized>(vol: &R, pv: &mut Pv) -> Result<(), LvmError> {
    let mut errors = Vec::new();
    for area in pv.metadata_areas.clone() {
        match read_area(vol, area) {
            Ok(None) => {}
            Ok(Some(m)) => {
                if pv.metadata.as_ref().is_none_or(|old| m.seqno > old.seqno) {
                    pv.metadata = Some(m);
                }
            }
            // A read error is a device problem, not a damaged area: stop.
            Err(LvmError::Io(e)) => return Err(LvmError::Io(e)),
            Err(e) => errors.push(e),
        }
    }
    match (&pv.metadata, errors.is_empty()) {
        (None, false) => Err(errors.swap_remove(0)),
        _ => {
            pv.warnings = errors.iter().map(ToString::to_string).collect();
            Ok(())
        }
    }
}

/// One metadata area: its header, then the text its first raw location points at. `Ok(None)`
/// for an area without metadata (empty or ignored).
fn read_area<R: ReadAt + ?Sized>(vol: &R, area: Area) -> Result<Option<Metadata>, LvmError> {
    let at = area.offset;
    let bad = |msg: String| LvmError::corrupt(Some(at), format!("lvm metadata area: {msg}"));
    let end = at.checked_add(area.size);
    if area.size < SECTOR.saturating_mul(2) || end.is_none_or(|e| e > vol.size()) {
        return Err(bad(format!(
            "area of {} bytes does not fit the {}-byte volume",
            area.size,
            vol.size()
        )));
    }
    let h = read_vec(vol, at, 512)?;
    let field = |v: Option<u64>| v.ok_or_else(|| bad("truncated header".into()));
    if field(le32(&h, 0).map(u64::from))?
        != u64::from(CRC32_LVM.checksum(get(&h, 4, 508).unwrap_or_default()))
    {
        return Err(bad("header checksum mismatch".into()));
    }
    if !field_is(&h, 4, MDA_MAGIC) {
        return Err(bad("bad magic".into()));
    }
    let version = field(le32(&h, 20).map(u64::from))?;
    if version != 1 {
        return Err(LvmError::Unsupported(format!(
            "metadata area version {version}"
        )));
    }
    if field(le64(&h, 24))? != at || field(le64(&h, 32))? != area.size {
        return Err(bad(
            "header disagrees with the pv header about its place".into()
        ));
    }
    // raw_locn[0]: the committed metadata.
    let offset = field(le64(&h, 40))?;
    let size = field(le64(&h, 48))?;
    let checksum = field(le32(&h, 56).map(u64::from))?;
    let flags = field(le32(&h, 60).map(u64::from))?;
    if offset == 0 || flags & u64::from(RAW_LOCN_IGNORED) != 0 {
        return Ok(None);
    }
    let ring = area.size.saturating_sub(SECTOR);
    let max = u64::try_from(MAX_TEXT).unwrap_or(u64::MAX);
    if offset < SECTOR || offset >= area.size || size == 0 || size > ring || size > max {
        return Err(bad(format!(
            "text of {size} bytes at {offset:#x} does not fit the area"
        )));
    }
    // The text may wrap from the end of the area to just after its header.
    let first = size.min(area.size.saturating_sub(offset));
    let rest = size.saturating_sub(first);
    let mut text = read_vec(
        vol,
        at.saturating_add(offset),
        usize::try_from(first).unwrap_or(0),
    )?;
    if rest > 0 {
        text.extend(read_vec(
            vol,
            at.saturating_add(SECTOR),
            usize::try_from(rest).unwrap_or(0),
        )?);
    }
    if u64::from(CRC32_LVM.checksum(&text)) != checksum {
        return Err(bad("text checksum mismatch".into()));
    }
    let tree = metadata::parse(&text)?;
    let Some((vg_name, vg)) = tree
        .items()
        .iter()
        .find(|(_, v)| matches!(v, Value::Section(_)))
    else {
        return Err(bad("no volume group section in the text".into()));
    };
    let vg_uuid = vg
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("volume group {vg_name} has no id")))?
        .to_owned();
    let seqno = vg
        .get("seqno")
        .and_then(Value::as_int)
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| bad(format!("volume group {vg_name} has no seqno")))?;
    Ok(Some(Metadata {
        vg_name: vg_name.clone(),
        vg_uuid,
        seqno,
        vg: vg.clone(),
    }))
}
