//! `snapscan inspect`: what is on a disk, from the raw bytes, without root and without mounting.
//!
//! [`inspect`] opens a disk image or block device read-only and hands it to [`enumerate`], which
//! reads the partition table, probes each volume's superblock, reads the LVM PVs among them
//! natively ([`crate::disk::lvm`]: their VGs' visible logical volumes become further volumes,
//! after the partitions), and parses ext2/3/4, XFS, Btrfs and NTFS volumes natively (each under
//! [`crate::fs::contain`], so a hostile volume costs that volume only) to detect the OS. It picks
//! the disk's OS root among the volumes and reports bytes read and time taken. The scan pipeline
//! calls [`enumerate`] too, and gets the opened volumes along with the report.
//!
//! A disk image file in a VM image format (qcow2, VMDK, VHD, VHDX, the GCE tarball) is read as
//! the virtual disk it holds ([`crate::disk::image`]); `image_format` says which.
//!
//! It does not mount, activate LVM (no device-mapper, no LVM tools) or decrypt: vfat, exFAT and
//! LUKS volumes are identified (kind, label, UUID) but their contents are the scan pipeline's
//! business: such a volume's `not_read` says why it was not read and what would read it, and
//! no OS is claimed absent while one is unread.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::detect::{self, OsInfo};
use crate::disk::image::Format;
use crate::disk::lvm;
use crate::disk::partition::{self, Partition, TableKind};
use crate::disk::probe::{self, FsKind};
use crate::disk::reader::{Budget, Disk, Volume};
use crate::fs::{self, contain, FsError};

/// Limits for one inspection.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest a volume's native parse may take.
    pub volume_timeout: Duration,
    /// Most bytes a volume's native parse may request (a SOFTWARE hive can be 150 MiB).
    pub volume_read_budget: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            volume_timeout: Duration::from_secs(30),
            volume_read_budget: 1 << 30,
        }
    }
}

/// What `snapscan inspect --json` prints for one disk. Field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    /// The path given.
    pub source: String,
    /// Disk size in bytes (for an image file, its virtual disk's).
    pub size_bytes: u64,
    /// What the file holds: `raw` (also every block device), `qcow2`, `vmdk`, `vhd`, `vhdx` or
    /// `gce-tarball`.
    pub image_format: Format,
    /// `gpt`, `mbr` or `none`.
    pub partition_table: TableKind,
    /// Volumes in on-disk order: the partitions, or the whole disk when there is no table; then
    /// the logical volumes of the LVM PVs among them.
    pub volumes: Vec<VolumeReport>,
    /// The OS root's OS (its `volume` field says which volume), `null` if none was found.
    pub os: Option<OsInfo>,
    /// Why the partition table could not be read (the disk itself could be).
    pub error: Option<String>,
    /// Damage that was worked around, such as a corrupt primary GPT header.
    pub warnings: Vec<String>,
    /// Bytes read from the disk.
    pub bytes_read: u64,
    /// Wall time of the inspection in milliseconds.
    pub elapsed_ms: u64,
}

impl DiskReport {
    /// The OS of the disk: that of the first volume with one, its `volume` set to that
    /// volume's index.
    pub fn os_root(&self) -> Option<OsInfo> {
        self.volumes.iter().find_map(|v| {
            v.os.clone().map(|mut os| {
                os.volume = Some(v.index);
                os
            })
        })
    }
}

/// One volume of a [`DiskReport`].
#[derive(Debug, Clone, Serialize)]
pub struct VolumeReport {
    /// Position in [`DiskReport::volumes`].
    pub index: usize,
    /// Partition number as Linux numbers it (`sda5`: 5); `null` for a whole-disk volume and a
    /// logical volume.
    pub partition_number: Option<u32>,
    /// Offset on the disk in bytes. For a logical volume, where its first segment starts (the
    /// whole LV when [`LvmInfo::segments`] is 1 and it is linear; 0 when unknown).
    pub start_bytes: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// GPT type GUID or MBR type (`0x83`); `null` for a whole-disk volume.
    pub partition_type: Option<String>,
    /// Readable partition type (`Linux filesystem`).
    pub partition_type_name: Option<&'static str>,
    /// GPT partition name.
    pub partition_name: Option<String>,
    /// GPT unique partition GUID or MBR PARTUUID.
    pub partition_uuid: Option<String>,
    /// What the superblock says.
    pub filesystem: FsKind,
    /// Filesystem label.
    pub label: Option<String>,
    /// Filesystem UUID (or serial) as blkid prints it.
    pub uuid: Option<String>,
    /// The OS on this volume, if it is an OS root.
    pub os: Option<OsInfo>,
    /// Why this volume could not be read or parsed.
    pub error: Option<String>,
    /// Why the volume's contents were not looked at, and what would read them (`vfat: no
    /// native reader; `snapscan scan` as root mounts it`); `null` when they were, or when there
    /// is nothing to read (swap, an LVM PV whose LVs are volumes of their own, unknown).
    pub not_read: Option<String>,
    /// For an LVM logical volume: which one; `null` for a partition or whole disk.
    pub lvm: Option<LvmInfo>,
}

/// What a [`VolumeReport`] of an LVM logical volume says about it.
#[derive(Debug, Clone, Serialize)]
pub struct LvmInfo {
    /// VG name.
    pub vg: String,
    /// LV name.
    pub lv: String,
    /// VG UUID.
    pub vg_uuid: String,
    /// LV UUID.
    pub lv_uuid: String,
    /// Number of segments (1 for a plain linear LV).
    pub segments: usize,
    /// Index of the volume holding the PV of its first segment.
    pub pv_volume: Option<usize>,
    /// One linear segment on a PV of this disk: `start_bytes` and `size_bytes` then give the
    /// whole LV, so a loop device can map it without device-mapper.
    pub linear: bool,
}

/// Bytes the LVM label and metadata reads of one PV may request (two metadata areas at most).
const LVM_READ_BUDGET: u64 = 64 << 20;

/// Inspect one disk image or block device. Fails only when the disk cannot be opened or read.
pub fn inspect(path: &Path, opts: &Options) -> Result<DiskReport> {
    let started = Instant::now();
    let disk = Disk::open(path)?;
    let (mut report, _) = enumerate(&disk, opts)?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Build the report of an opened disk, and open its volumes: the second value is index-aligned
/// with [`DiskReport::volumes`], `None` where a volume could not be opened (a partition outside
/// the disk, an LV with an unsupported segment type or a PV missing). Each returned volume has
/// a fresh read budget of [`Options::volume_read_budget`] (the report's parses used their own).
/// Fails only when the disk cannot be read at all.
pub fn enumerate(disk: &Arc<Disk>, opts: &Options) -> Result<(DiskReport, Vec<Option<Volume>>)> {
    let started = Instant::now();
    let path = disk.path();
    let whole = disk
        .volume(0, disk.size(), Budget::new(u64::MAX))
        .context("cannot window the disk")?;
    let mut report = DiskReport {
        source: path.display().to_string(),
        size_bytes: disk.size(),
        image_format: disk.format(),
        partition_table: TableKind::None,
        volumes: Vec::new(),
        os: None,
        error: None,
        warnings: Vec::new(),
        bytes_read: 0,
        elapsed_ms: 0,
    };
    let mut volumes = Vec::new();
    if disk.size() == 0 {
        anyhow::bail!("'{}' is empty", path.display());
    }
    let table = contained_table(&whole, disk.logical_sector_size(), opts)
        .with_context(|| format!("cannot read '{}'", path.display()))?;
    match table {
        Ok(table) => {
            report.partition_table = table.kind;
            report.warnings = table.warnings;
            if table.kind == TableKind::None {
                let vol = whole.with_budget(Budget::new(opts.volume_read_budget));
                report
                    .volumes
                    .push(inspect_volume(blank(0, None, 0, disk.size()), &vol, opts));
                volumes.push(Some(vol));
            } else {
                for (index, part) in table.partitions.iter().enumerate() {
                    let vol =
                        disk.volume(part.start, part.size, Budget::new(opts.volume_read_budget));
                    let vol = match (&part.error, vol) {
                        (None, Ok(v)) => Ok(v),
                        (Some(e), _) => Err(e.clone()),
                        (None, Err(e)) => Err(e.to_string()),
                    };
                    let base = blank(index, Some(part), part.start, part.size);
                    match vol {
                        Ok(v) => {
                            report.volumes.push(inspect_volume(base, &v, opts));
                            volumes.push(Some(v));
                        }
                        Err(e) => {
                            report.volumes.push(VolumeReport {
                                error: Some(e),
                                ..base
                            });
                            volumes.push(None);
                        }
                    }
                }
            }
        }
        Err(e) => {
            report.partition_table = e.kind;
            report.error = Some(e.message);
        }
    }
    add_logical_volumes(&mut report, &mut volumes, opts);
    report.os = report.os_root();
    report.bytes_read = disk.bytes_read();
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let fresh = volumes
        .iter()
        .map(|v| {
            v.as_ref()
                .map(|v| v.with_budget(Budget::new(opts.volume_read_budget)))
        })
        .collect();
    Ok((report, fresh))
}

/// Read the LVM PVs among the volumes, and append each VG's visible LVs as volumes (inspected
/// like partitions). A PV that cannot be read gets the error on its own volume; a VG that cannot
/// be interpreted becomes a warning; an LV that cannot be opened is a volume with an error.
fn add_logical_volumes(report: &mut DiskReport, volumes: &mut Vec<Option<Volume>>, opts: &Options) {
    let mut pvs = Vec::new();
    for (index, (vr, vol)) in report.volumes.iter_mut().zip(volumes.iter()).enumerate() {
        let Some(vol) = vol.as_ref().filter(|_| vr.filesystem == FsKind::Lvm2Member) else {
            continue;
        };
        let v = vol.with_budget(Budget::new(LVM_READ_BUDGET));
        let budget = v.budget().clone();
        match contain::run(&budget, opts.volume_timeout, move || Ok(lvm::read_pv(&v))) {
            Ok(Ok(Some(pv))) => {
                for w in &pv.warnings {
                    report.warnings.push(format!("volume {index}: lvm: {w}"));
                }
                pvs.push((index, pv));
            }
            Ok(Ok(None)) => vr.error = Some("lvm label not found".into()),
            Ok(Err(e)) => vr.error = Some(e.to_string()),
            Err(e) => vr.error = Some(format!("lvm: {e}")),
        }
    }
    let parts = volumes.clone();
    for vg in lvm::assemble(&pvs) {
        let vg = match vg {
            Ok(vg) => vg,
            Err(e) => {
                report.warnings.push(e.to_string());
                continue;
            }
        };
        for lv in &vg.lvs {
            let first = lv.first_extent(&vg);
            let start = first
                .and_then(|(i, off)| parts.get(i)?.as_ref()?.start().checked_add(off))
                .unwrap_or(0);
            let base = VolumeReport {
                lvm: Some(LvmInfo {
                    vg: vg.name.clone(),
                    lv: lv.name.clone(),
                    vg_uuid: vg.uuid.clone(),
                    lv_uuid: lv.uuid.clone(),
                    segments: lv.segments.len(),
                    pv_volume: first.map(|(i, _)| i),
                    linear: lv.linear_extent(&vg).is_some(),
                }),
                ..blank(report.volumes.len(), None, start, lv.size_bytes)
            };
            match lv.open(&vg, &parts, Budget::new(opts.volume_read_budget)) {
                Ok(v) => {
                    report.volumes.push(inspect_volume(base, &v, opts));
                    volumes.push(Some(v));
                }
                Err(e) => {
                    report.volumes.push(VolumeReport {
                        error: Some(e.to_string()),
                        ..base
                    });
                    volumes.push(None);
                }
            }
        }
    }
}

/// A partition table that exists but is unusable: reported, not fatal.
struct TableFailure {
    kind: TableKind,
    message: String,
}

/// Read the table under containment. The outer error means the disk could not be read at all.
fn contained_table(
    whole: &Volume,
    sector_size: u32,
    opts: &Options,
) -> Result<Result<partition::Table, TableFailure>> {
    let w = whole.clone();
    let budget = whole.budget().clone();
    let result = contain::run(&budget, opts.volume_timeout, move || {
        Ok(partition::read_table(&w, sector_size))
    });
    match result {
        Ok(Ok(t)) => Ok(Ok(t)),
        Ok(Err(partition::TableError::Io(e))) => Err(e.into()),
        Ok(Err(e @ partition::TableError::Corrupt { kind, .. })) => Ok(Err(TableFailure {
            kind: if kind == "gpt" {
                TableKind::Gpt
            } else {
                TableKind::Mbr
            },
            message: e.to_string(),
        })),
        Err(e) => Ok(Err(TableFailure {
            kind: TableKind::None,
            message: e.to_string(),
        })),
    }
}

fn blank(index: usize, part: Option<&Partition>, start: u64, size: u64) -> VolumeReport {
    VolumeReport {
        index,
        partition_number: part.map(|p| p.number),
        start_bytes: start,
        size_bytes: size,
        partition_type: part.map(|p| p.type_id.clone()),
        partition_type_name: part.and_then(|p| p.type_name),
        partition_name: part.and_then(|p| p.name.clone()),
        partition_uuid: part.and_then(|p| p.uuid.clone()),
        filesystem: FsKind::Unknown,
        label: None,
        uuid: None,
        os: None,
        error: None,
        not_read: None,
        lvm: None,
    }
}

/// Probe `vol` and detect its OS, filling in `report`.
fn inspect_volume(mut report: VolumeReport, vol: &Volume, opts: &Options) -> VolumeReport {
    match probe::probe(vol) {
        Ok(p) => {
            report.filesystem = p.kind;
            report.label = p.label;
            report.uuid = p.uuid;
        }
        Err(e) => {
            report.error = Some(format!("cannot read the volume: {e}"));
            return report;
        }
    }
    match detect_os(report.filesystem, vol, opts) {
        Some(Ok(os)) => report.os = os,
        Some(Err(e)) => report.error = Some(e.to_string()),
        None => report.not_read = not_read(report.filesystem),
    }
    report
}

/// Why a volume of `kind` is not read natively, and what reads it; `None` when there is
/// nothing to read.
fn not_read(kind: FsKind) -> Option<String> {
    let name = kind.as_str();
    match kind {
        FsKind::Exfat | FsKind::Vfat => Some(format!(
            "{name}: no native reader; `snapscan scan` as root mounts it"
        )),
        FsKind::CryptoLuks | FsKind::Bitlocker => {
            Some(format!("{name}: encrypted; snapscan does not decrypt"))
        }
        FsKind::LinuxRaidMember => Some(format!(
            "{name}: md RAID arrays are not assembled; scan the array's device"
        )),
        _ => None,
    }
}

/// Native OS detection for the filesystems we can parse without the kernel; `None` for the
/// others.
fn detect_os(
    kind: FsKind,
    vol: &Volume,
    opts: &Options,
) -> Option<Result<Option<OsInfo>, FsError>> {
    fs::with_native(kind, vol, opts.volume_timeout, |fs| detect::detect(fs))
}

/// The short human summary `snapscan inspect` prints without `--json`.
pub fn render_text(r: &DiskReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}{}, partition table: {}",
        r.source,
        human_size(r.size_bytes),
        match r.image_format {
            Format::Raw => String::new(),
            f => format!(" {f} image"),
        },
        table_name(r.partition_table)
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error: {e}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    if !r.volumes.is_empty() {
        let _ = writeln!(
            out,
            "  {:>2}  {:>10}  {:>10}  {:<20}  {:<17}  {:<12}  OS",
            "#", "START", "SIZE", "TYPE", "FILESYSTEM", "LABEL"
        );
    }
    for v in &r.volumes {
        let ty = match &v.lvm {
            Some(l) => format!("{}/{}", l.vg, l.lv),
            None => v
                .partition_type_name
                .map(str::to_owned)
                .or_else(|| v.partition_type.clone())
                .unwrap_or_else(|| "-".into()),
        };
        let os = match (&v.os, &v.error, &v.not_read) {
            (_, Some(e), _) => format!("error: {e}"),
            (Some(os), None, _) => os_summary(os),
            // Not needed: another volume holds the OS (an EFI system partition, a data volume).
            (None, None, Some(_)) if r.os.is_some() => "skipped".into(),
            (None, None, Some(why)) => format!("not read: {why}"),
            (None, None, None) => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:>2}  {:>10}  {:>10}  {:<20}  {:<17}  {:<12}  {}",
            v.index,
            human_size(v.start_bytes),
            human_size(v.size_bytes),
            truncate(&ty, 20),
            v.filesystem.as_str(),
            truncate(v.label.as_deref().unwrap_or("-"), 12),
            os
        );
    }
    match &r.os {
        Some(os) => {
            let mut line = format!("  OS: {}", os_summary(os));
            for (k, v) in [
                ("arch", &os.arch),
                ("hostname", &os.hostname),
                ("build", &os.build),
            ] {
                if let Some(v) = v {
                    let _ = write!(line, ", {k} {v}");
                }
            }
            if let Some(i) = os.volume {
                let _ = write!(line, " (volume {i})");
            }
            let _ = writeln!(out, "{line}");
        }
        None => {
            // Only a disk whose every volume was looked at can be said to hold no OS.
            let unread: Vec<String> = r
                .volumes
                .iter()
                .filter(|v| v.not_read.is_some())
                .map(|v| v.index.to_string())
                .collect();
            if unread.is_empty() {
                let _ = writeln!(out, "  OS: none found");
            } else {
                let _ = writeln!(
                    out,
                    "  OS: not determined: volume {} not read (see above)",
                    unread.join(", ")
                );
            }
        }
    }
    out
}

fn os_summary(os: &OsInfo) -> String {
    os.pretty_name
        .clone()
        .or_else(|| os.name.clone())
        .unwrap_or_else(|| os.id.clone())
}

fn table_name(k: TableKind) -> &'static str {
    match k {
        TableKind::Gpt => "gpt",
        TableKind::Mbr => "mbr",
        TableKind::None => "none",
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut value = bytes;
    let mut rem = 0;
    while value >= 1024 && unit + 1 < UNITS.len() {
        rem = value % 1024;
        value /= 1024;
        unit += 1;
    }
    if unit == 0 || value >= 100 || rem == 0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value}.{} {}", rem * 10 / 1024, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        for (name, bytes, want) in [
            ("bytes", 512, "512 B"),
            ("exact MiB", 32 << 20, "32 MiB"),
            ("fraction", (1 << 30) + (1 << 29), "1.5 GiB"),
            ("large value", 200 * (1 << 20) + 5, "200 MiB"),
        ] {
            assert_eq!(human_size(bytes), want, "case {name}");
        }
    }
}
