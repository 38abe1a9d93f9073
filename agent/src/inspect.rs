//! `snapscan inspect`: what is on a disk, from the raw bytes, without root and without mounting.
//!
//! [`inspect`] opens a disk image or block device read-only, reads the partition table, probes
//! each volume's superblock, and parses ext2/3/4 and NTFS volumes natively (each under
//! [`crate::fs::contain`], so a hostile volume costs that volume only) to detect the OS. It picks
//! the disk's OS root among the volumes and reports bytes read and time taken.
//!
//! It does not mount, activate LVM or decrypt: XFS, Btrfs, LVM and LUKS volumes are identified
//! (kind, label, UUID) but their contents are the scan pipeline's business.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::detect::{self, OsInfo};
use crate::disk::partition::{self, Partition, TableKind};
use crate::disk::probe::{self, FsKind};
use crate::disk::reader::{Budget, Disk, ReadAt, Volume};
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
    /// Disk size in bytes.
    pub size_bytes: u64,
    /// `gpt`, `mbr` or `none`.
    pub partition_table: TableKind,
    /// Volumes in on-disk order: the partitions, or the whole disk when there is no table.
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

/// One volume of a [`DiskReport`].
#[derive(Debug, Clone, Serialize)]
pub struct VolumeReport {
    /// Position in [`DiskReport::volumes`].
    pub index: usize,
    /// Partition number as Linux numbers it (`sda5`: 5); `null` for a whole-disk volume.
    pub partition_number: Option<u32>,
    /// Offset on the disk in bytes.
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
}

/// Inspect one disk image or block device. Fails only when the disk cannot be opened or read.
pub fn inspect(path: &Path, opts: &Options) -> Result<DiskReport> {
    let started = Instant::now();
    let disk = Disk::open(path)?;
    let whole = disk
        .volume(0, disk.size(), Budget::new(u64::MAX))
        .context("cannot window the disk")?;
    let mut report = DiskReport {
        source: path.display().to_string(),
        size_bytes: disk.size(),
        partition_table: TableKind::None,
        volumes: Vec::new(),
        os: None,
        error: None,
        warnings: Vec::new(),
        bytes_read: 0,
        elapsed_ms: 0,
    };
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
                report.volumes.push(inspect_volume(0, None, &whole, opts));
            } else {
                for (index, part) in table.partitions.iter().enumerate() {
                    let vol =
                        disk.volume(part.start, part.size, Budget::new(opts.volume_read_budget));
                    let vol = match (&part.error, vol) {
                        (None, Ok(v)) => Ok(v),
                        (Some(e), _) => Err(e.clone()),
                        (None, Err(e)) => Err(e.to_string()),
                    };
                    report.volumes.push(match vol {
                        Ok(v) => inspect_volume(index, Some(part), &v, opts),
                        Err(e) => VolumeReport {
                            error: Some(e),
                            ..blank(index, Some(part), part.start, part.size)
                        },
                    });
                }
            }
        }
        Err(e) => {
            report.partition_table = e.kind;
            report.error = Some(e.message);
        }
    }
    report.os = report.volumes.iter().find_map(|v| {
        v.os.clone().map(|mut os| {
            os.volume = Some(v.index);
            os
        })
    });
    report.bytes_read = disk.bytes_read();
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
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
    }
}

fn inspect_volume(
    index: usize,
    part: Option<&Partition>,
    vol: &Volume,
    opts: &Options,
) -> VolumeReport {
    let mut report = blank(index, part, vol.start(), vol.size());
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
        Ok(os) => report.os = os,
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// Native OS detection for the filesystems we can parse without the kernel; `Ok(None)` for the
/// others.
fn detect_os(kind: FsKind, vol: &Volume, opts: &Options) -> Result<Option<OsInfo>, FsError> {
    fs::with_native(kind, vol, opts.volume_timeout, |fs| detect::detect(fs)).unwrap_or(Ok(None))
}

/// The short human summary `snapscan inspect` prints without `--json`.
pub fn render_text(r: &DiskReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}, partition table: {}",
        r.source,
        human_size(r.size_bytes),
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
        let ty = v
            .partition_type_name
            .map(str::to_owned)
            .or_else(|| v.partition_type.clone())
            .unwrap_or_else(|| "-".into());
        let os = match (&v.os, &v.error) {
            (_, Some(e)) => format!("error: {e}"),
            (Some(os), None) => os_summary(os),
            (None, None) => "-".into(),
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
            let _ = writeln!(out, "  OS: none found");
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
