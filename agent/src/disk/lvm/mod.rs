//! LVM2 logical volumes read without device-mapper and without LVM's tools.
//!
//! The scanner VM's kernel has no device-mapper, and running `vgchange -ay` on a scanned disk
//! could clash with the scanner's own VG names and UUIDs (snapshots of VMs built from the same
//! image share them) or write metadata. So this module reads LVM itself, from the bytes:
//!
//! - [`read_pv`]: the PV label, header and newest valid text metadata of one volume
//!   ([`label`], [`metadata`]);
//! - [`assemble`]: the PVs of one disk grouped into [`VolumeGroup`]s by VG UUID, each with its
//!   visible [`LogicalVolume`]s and their segments mapped to the partitions holding the PVs;
//! - [`LogicalVolume::linear_extent`]: where a single-segment linear LV lies, for a read-only
//!   loop device with offset and size limit;
//! - [`LogicalVolume::open`]: any linear or striped LV as a [`Volume`] over a mapped
//!   [`Disk`] (see [`Disk::mapped`]), which the native parsers read unchanged.
//!
//! Names never matter here (nothing is registered with the kernel or LVM), so a VG whose name
//! collides with the host's is read like any other. Everything is checked: sizes and offsets
//! against the volumes, every segment against its PV's extent count, with checked arithmetic.
//!
//! It does not write, activate, repair or resolve LVM state: thin pools and thin LVs,
//! snapshots, RAID, mirrors, cache and VDO LVs are listed but reported as unsupported when
//! opened, and hidden LVs (`_tmeta`, `_rimage_0`, ...) are left out. A VG with PVs on other
//! disks keeps the LVs wholly on this disk's PVs; the others fail with
//! [`LvmError::MissingPv`]. Format reference: LVM2's `lib/format_text/` and `lib/label/`.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

pub mod label;
pub mod metadata;

use std::io;
use std::sync::Arc;

pub use label::Pv;
use metadata::Value;

use crate::disk::reader::{Budget, Disk, Layout, MappedExtent, ReadAt, Volume};

/// Bytes in an LVM sector (sizes in the metadata count 512-byte sectors).
const SECTOR: u64 = 512;

/// Why LVM metadata or a logical volume could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LvmError {
    /// The label, a header or the text metadata is damaged or inconsistent.
    #[error("corrupt lvm metadata: {0}")]
    Corrupt(String),
    /// A feature this reader does not implement (thin, snapshot, raid, ...).
    #[error("unsupported lvm feature: {0}")]
    Unsupported(String),
    /// The LV uses a PV that is not on this disk.
    #[error("lvm physical volume {0} is not on this disk")]
    MissingPv(String),
    /// Reading the volume failed.
    #[error("read error: {0}")]
    Io(String),
}

impl LvmError {
    /// A label for logs and metrics: `corrupt`, `unsupported`, `missing_pv` or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            LvmError::Corrupt(_) => "corrupt",
            LvmError::Unsupported(_) => "unsupported",
            LvmError::MissingPv(_) => "missing_pv",
            LvmError::Io(_) => "io",
        }
    }

    /// A [`LvmError::Corrupt`] naming the byte position where there is one.
    pub(crate) fn corrupt(at: Option<u64>, msg: String) -> Self {
        LvmError::Corrupt(match at {
            Some(at) => format!("{msg} (position {at:#x})"),
            None => msg,
        })
    }
}

impl From<io::Error> for LvmError {
    fn from(e: io::Error) -> Self {
        LvmError::Io(e.to_string())
    }
}

/// A volume group as this disk's PVs describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    /// VG name.
    pub name: String,
    /// VG UUID.
    pub uuid: String,
    /// Metadata sequence number of the copy used (the highest found).
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size_bytes: u64,
    /// The VG's PVs in metadata order (`pv0`, `pv1`, ...).
    pub pvs: Vec<PvInfo>,
    /// The visible LVs in metadata order.
    pub lvs: Vec<LogicalVolume>,
}

/// One PV of a [`VolumeGroup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvInfo {
    /// The PV's name in the metadata (`pv0`).
    pub name: String,
    /// PV UUID.
    pub uuid: String,
    /// The device path LVM last saw it at (a hint only: `/dev/sdb2`).
    pub device_hint: Option<String>,
    /// Offset of the first extent from the start of the PV.
    pub pe_start_bytes: u64,
    /// Number of extents.
    pub pe_count: u64,
    /// Index of the volume (in the caller's list) holding this PV, `None` if not on this disk.
    pub found: Option<usize>,
}

/// A visible logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    /// LV name.
    pub name: String,
    /// LV UUID.
    pub uuid: String,
    /// Size in bytes (all segments).
    pub size_bytes: u64,
    /// The status flags (`READ`, `WRITE`, `VISIBLE`).
    pub status: Vec<String>,
    /// Segments in logical order, contiguous from extent 0.
    pub segments: Vec<Segment>,
    /// Why this LV's metadata is unusable (a segment past its PV, an unknown PV name...).
    pub error: Option<LvmError>,
}

/// A run of an LV's extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First logical extent.
    pub start_extent: u64,
    /// Number of logical extents.
    pub extent_count: u64,
    /// Where they are.
    pub kind: SegmentKind,
}

/// How a [`Segment`] maps to PVs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// Contiguous extents of one PV.
    Linear {
        /// Index into [`VolumeGroup::pvs`].
        pv_index: usize,
        /// First extent on that PV.
        pv_start_extent: u64,
    },
    /// RAID 0 over several PVs: chunks of `stripe_size_bytes` round-robin.
    Striped {
        /// Chunk size in bytes.
        stripe_size_bytes: u64,
        /// Each stripe's PV (index into [`VolumeGroup::pvs`]) and first extent there; each
        /// holds `extent_count / stripes.len()` extents.
        stripes: Vec<(usize, u64)>,
    },
    /// Any other segment type (`thin`, `snapshot`, `raid1`, `mirror`, `cache`, ...).
    Unsupported(String),
}

/// Read the LVM PV label and metadata of `vol`; `Ok(None)` when it has no LVM label.
pub fn read_pv(vol: &Volume) -> Result<Option<Pv>, LvmError> {
    label::read(vol)
}

/// Group the PVs found on one disk (each with the index of the volume holding it) into volume
/// groups by VG UUID, using each VG's newest metadata. One result per VG, in the order their PVs
/// were given; a VG whose metadata cannot be interpreted is an error on its own.
pub fn assemble(pvs: &[(usize, Pv)]) -> Vec<Result<VolumeGroup, LvmError>> {
    let mut newest: Vec<&label::Metadata> = Vec::new();
    for (_, pv) in pvs {
        let Some(m) = &pv.metadata else { continue };
        match newest.iter_mut().find(|n| n.vg_uuid == m.vg_uuid) {
            Some(n) if m.seqno > n.seqno => *n = m,
            Some(_) => {}
            None => newest.push(m),
        }
    }
    newest.into_iter().map(|m| interpret(m, pvs)).collect()
}

fn interpret(m: &label::Metadata, found: &[(usize, Pv)]) -> Result<VolumeGroup, LvmError> {
    let vg = &m.vg;
    let bad = |msg: String| LvmError::Corrupt(format!("volume group {}: {msg}", m.vg_name));
    let extent_size_bytes = vg
        .get("extent_size")
        .and_then(Value::as_int)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|&s| s > 0)
        .and_then(|s| s.checked_mul(SECTOR))
        .ok_or_else(|| bad("missing or invalid extent_size".into()))?;
    let mut pvs = Vec::new();
    for (name, pv) in vg
        .get("physical_volumes")
        .map(Value::items)
        .unwrap_or_default()
    {
        let int = |key: &str| {
            pv.get(key)
                .and_then(Value::as_int)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| bad(format!("pv {name}: missing or invalid {key}")))
        };
        let uuid = pv
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("pv {name}: no id")))?
            .to_owned();
        pvs.push(PvInfo {
            name: name.clone(),
            found: found.iter().find(|(_, p)| p.uuid == uuid).map(|(i, _)| *i),
            uuid,
            device_hint: pv.get("device").and_then(Value::as_str).map(str::to_owned),
            pe_start_bytes: int("pe_start")?
                .checked_mul(SECTOR)
                .ok_or_else(|| bad(format!("pv {name}: pe_start out of range")))?,
            pe_count: int("pe_count")?,
        });
    }
    let lvs = vg
        .get("logical_volumes")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter(|(_, lv)| status(lv).iter().any(|s| s == "VISIBLE"))
        .map(|(name, lv)| logical_volume(name, lv, &pvs, extent_size_bytes))
        .collect();
    Ok(VolumeGroup {
        name: m.vg_name.clone(),
        uuid: m.vg_uuid.clone(),
        seqno: m.seqno,
        extent_size_bytes,
        pvs,
        lvs,
    })
}

fn status(lv: &Value) -> Vec<String> {
    lv.get("status")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn logical_volume(name: &str, lv: &Value, pvs: &[PvInfo], extent: u64) -> LogicalVolume {
    let mut out = LogicalVolume {
        name: name.to_owned(),
        uuid: lv
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        size_bytes: 0,
        status: status(lv),
        segments: Vec::new(),
        error: None,
    };
    match segments(lv, pvs) {
        Ok(segments) => {
            let extents = segments
                .last()
                .and_then(|s| s.start_extent.checked_add(s.extent_count))
                .unwrap_or(0);
            match extents.checked_mul(extent) {
                Some(size) => out.size_bytes = size,
                None => {
                    out.error = Some(LvmError::Corrupt(format!(
                        "lv {name}: {extents} extents overflow"
                    )))
                }
            }
            out.segments = segments;
        }
        Err(msg) => out.error = Some(LvmError::Corrupt(format!("lv {name}: {msg}"))),
    }
    out
}

/// An LV's segments, sorted, checked to be contiguous from extent 0 and to lie inside their PVs.
fn segments(lv: &Value, pvs: &[PvInfo]) -> Result<Vec<Segment>, String> {
    let int = |s: &Value, key: &str| {
        s.get(key)
            .and_then(Value::as_int)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| format!("segment without a valid {key}"))
    };
    let mut out = Vec::new();
    for (key, seg) in lv.items() {
        if !key.starts_with("segment") || !matches!(seg, Value::Section(_)) {
            continue;
        }
        let start_extent = int(seg, "start_extent")?;
        let extent_count = int(seg, "extent_count")?;
        let ty = seg.get("type").and_then(Value::as_str).unwrap_or_default();
        let kind = match ty {
            "striped" | "linear" => stripes(seg, pvs, extent_count)?,
            other => SegmentKind::Unsupported(other.to_owned()),
        };
        out.push(Segment {
            start_extent,
            extent_count,
            kind,
        });
    }
    out.sort_by_key(|s| s.start_extent);
    let mut next = 0u64;
    for s in &out {
        if s.start_extent != next || s.extent_count == 0 {
            return Err(format!(
                "segments are not contiguous at extent {}",
                s.start_extent
            ));
        }
        next = next
            .checked_add(s.extent_count)
            .ok_or("extent count overflows")?;
    }
    if out.is_empty() {
        return Err("no segments".into());
    }
    Ok(out)
}

fn stripes(seg: &Value, pvs: &[PvInfo], extent_count: u64) -> Result<SegmentKind, String> {
    let count = seg.get("stripe_count").and_then(Value::as_int).unwrap_or(1);
    let list = seg
        .get("stripes")
        .and_then(Value::as_list)
        .ok_or("segment without stripes")?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c >= 1 && Some(list.len()) == c.checked_mul(2))
        .ok_or("stripe_count does not match the stripes list")?;
    let per_stripe = u64::try_from(count)
        .ok()
        .and_then(|c| extent_count.checked_div(c))
        .filter(|p| p.checked_mul(u64::try_from(count).unwrap_or(0)) == Some(extent_count))
        .ok_or("extent_count is not a multiple of stripe_count")?;
    let mut areas = Vec::with_capacity(count);
    for pair in list.chunks_exact(2) {
        let (Some(Value::Str(pv)), Some(Value::Int(start))) = (pair.first(), pair.get(1)) else {
            return Err("malformed stripes list".into());
        };
        let index = pvs
            .iter()
            .position(|p| &p.name == pv)
            .ok_or_else(|| format!("unknown pv {pv:?}"))?;
        let start = u64::try_from(*start).map_err(|_| "negative pv extent".to_owned())?;
        let fits = start
            .checked_add(per_stripe)
            .zip(pvs.get(index))
            .is_some_and(|(end, p)| end <= p.pe_count);
        if !fits {
            return Err(format!(
                "extents {start}+{per_stripe} lie past the end of pv {pv}"
            ));
        }
        areas.push((index, start));
    }
    Ok(match areas[..] {
        [(pv_index, pv_start_extent)] => SegmentKind::Linear {
            pv_index,
            pv_start_extent,
        },
        _ => SegmentKind::Striped {
            stripe_size_bytes: seg
                .get("stripe_size")
                .and_then(Value::as_int)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|&s| s > 0)
                .and_then(|s| s.checked_mul(SECTOR))
                .ok_or("striped segment without a valid stripe_size")?,
            stripes: areas,
        },
    })
}

impl LogicalVolume {
    /// Whether the metadata marks it visible (hidden LVs are never listed, so always true for
    /// LVs from [`assemble`]).
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }

    /// For an LV of exactly one linear segment on a PV of this disk: the index of the volume
    /// holding the PV, the LV's byte offset within that volume, and its length. What a
    /// read-only loop device with `offset` and `sizelimit` needs.
    pub fn linear_extent(&self, vg: &VolumeGroup) -> Option<(usize, u64, u64)> {
        if self.error.is_some() {
            return None;
        }
        let [Segment {
            kind:
                SegmentKind::Linear {
                    pv_index,
                    pv_start_extent,
                },
            ..
        }] = self.segments[..]
        else {
            return None;
        };
        let (volume, offset) = pv_offset(vg, pv_index, pv_start_extent)?;
        Some((volume, offset, self.size_bytes))
    }

    /// The volume and byte offset in it of this LV's first byte, when its first segment is
    /// linear or striped and on this disk.
    pub fn first_extent(&self, vg: &VolumeGroup) -> Option<(usize, u64)> {
        match &self.segments.first()?.kind {
            SegmentKind::Linear {
                pv_index,
                pv_start_extent,
            } => pv_offset(vg, *pv_index, *pv_start_extent),
            SegmentKind::Striped { stripes, .. } => {
                let &(pv, start) = stripes.first()?;
                pv_offset(vg, pv, start)
            }
            SegmentKind::Unsupported(_) => None,
        }
    }

    /// This LV as a [`Volume`] with its own `budget`: a mapped disk over the partition volumes
    /// holding its PVs (`volumes[i]` is the volume of index `i` that [`PvInfo::found`] names).
    /// Fails for an LV with damaged metadata, an unsupported segment type or a PV that is not
    /// here, and when a segment does not fit the volume holding its PV.
    pub fn open(
        &self,
        vg: &VolumeGroup,
        volumes: &[Option<Volume>],
        budget: Budget,
    ) -> Result<Volume, LvmError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let extent = vg.extent_size_bytes;
        let overflow =
            || LvmError::Corrupt(format!("lv {}: extent arithmetic overflows", self.name));
        // Where `count` extents from `start` of PV `pv_index` are on the underlying disk.
        let place =
            |pv_index: usize, start: u64, count: u64| -> Result<(Arc<Disk>, u64), LvmError> {
                let pv = vg
                    .pvs
                    .get(pv_index)
                    .ok_or_else(|| LvmError::Corrupt(format!("lv {}: bad pv index", self.name)))?;
                let vol = pv
                    .found
                    .and_then(|i| volumes.get(i))
                    .and_then(Option::as_ref)
                    .ok_or_else(|| LvmError::MissingPv(pv.uuid.clone()))?;
                let from = start
                    .checked_mul(extent)
                    .and_then(|b| b.checked_add(pv.pe_start_bytes))
                    .ok_or_else(overflow)?;
                let end = count
                    .checked_mul(extent)
                    .and_then(|l| l.checked_add(from))
                    .ok_or_else(overflow)?;
                if end > vol.size() {
                    return Err(LvmError::Corrupt(format!(
                        "lv {}: extents of pv {} end at {end:#x}, past its {}-byte volume",
                        self.name,
                        pv.name,
                        vol.size()
                    )));
                }
                let at = vol.start().checked_add(from).ok_or_else(overflow)?;
                Ok((Arc::clone(vol.disk()), at))
            };
        let mut extents = Vec::with_capacity(self.segments.len());
        for seg in &self.segments {
            let start = seg.start_extent.checked_mul(extent).ok_or_else(overflow)?;
            let len = seg.extent_count.checked_mul(extent).ok_or_else(overflow)?;
            let layout = match &seg.kind {
                SegmentKind::Linear {
                    pv_index,
                    pv_start_extent,
                } => {
                    let (disk, offset) = place(*pv_index, *pv_start_extent, seg.extent_count)?;
                    Layout::Linear { disk, offset }
                }
                SegmentKind::Striped {
                    stripe_size_bytes,
                    stripes,
                } => {
                    let n = u64::try_from(stripes.len()).map_err(|_| overflow())?;
                    let per = seg.extent_count.checked_div(n).ok_or_else(overflow)?;
                    let stripes = stripes
                        .iter()
                        .map(|&(pv, first)| place(pv, first, per))
                        .collect::<Result<_, _>>()?;
                    Layout::Striped {
                        chunk: *stripe_size_bytes,
                        stripes,
                    }
                }
                SegmentKind::Unsupported(ty) => {
                    return Err(LvmError::Unsupported(format!(
                        "lv {}/{}: segment type {ty}",
                        vg.name, self.name
                    )))
                }
            };
            extents.push(MappedExtent { start, len, layout });
        }
        let disk = Disk::mapped(&format!("{}/{}", vg.name, self.name), extents)
            .map_err(|e| LvmError::Corrupt(format!("lv {}: {e}", self.name)))?;
        Ok(disk.volume(0, disk.size(), budget)?)
    }
}

fn pv_offset(vg: &VolumeGroup, pv_index: usize, pv_start_extent: u64) -> Option<(usize, u64)> {
    let pv = vg.pvs.get(pv_index)?;
    let offset = pv_start_extent
        .checked_mul(vg.extent_size_bytes)?
        .checked_add(pv.pe_start_bytes)?;
    Some((pv.found?, offset))
}

#[cfg(test)]
mod tests;
