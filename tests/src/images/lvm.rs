//! LVM physical volumes without device-mapper: the real `pvcreate`, `vgcreate` and `lvcreate`
//! write the PV label and metadata onto a loop device over a PV-sized file, and the logical
//! volumes' contents (filesystem images) are then written at the offsets LVM reports (`pvs -o
//! pe_start`, `lvs --segments -o seg_pe_ranges`), which is what activation would map.
//!
//! The LVM commands see only our loop device (a device filter, no devices file), use a private
//! empty configuration directory, keep no metadata backups and never touch device-mapper
//! (`--activate n --zero n`, `--driverloaded n`), so they neither depend on nor change the
//! host's LVM state and do not clash with a host VG of the same name. Root only.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context};

use super::cmd::{run, tool};
use super::disk::write_at;
use super::fs::sparse_file;
use super::guard::LoopDevice;

/// A logical volume to create.
#[derive(Debug, Clone)]
pub struct LogicalVolume<'a> {
    /// LV name.
    pub name: &'static str,
    /// Size, a whole number of extents (4 MiB by default).
    pub size_bytes: u64,
    /// A filesystem image to write into it.
    pub content: Option<&'a Path>,
}

/// Where an LV's single linear segment lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedLv {
    /// LV name.
    pub name: String,
    /// Offset of its first byte from the start of the PV.
    pub offset_bytes: u64,
    /// Length.
    pub size_bytes: u64,
}

/// Make `out` a PV of `pv_bytes` holding VG `vg` with `lvs` (in order, each one linear segment),
/// and write each LV's content at its place. Returns where each LV went.
pub fn build_pv(
    vg: &str,
    lvs: &[LogicalVolume],
    pv_bytes: u64,
    out: &Path,
) -> anyhow::Result<Vec<PlacedLv>> {
    sparse_file(out, pv_bytes)?;
    let conf = tempfile::Builder::new()
        .prefix("snapscan-lvm-conf-")
        .tempdir()
        .context("failed to create an LVM configuration directory")?;
    let lo = LoopDevice::attach(out, 0, None, false)?;
    let dev = lo.path().to_owned();
    let config = format!(
        "devices {{ use_devicesfile=0 filter=[\"a|^{dev}$|\",\"r|.*|\"] scan=[\"/dev\"] }} \
         backup {{ backup=0 archive=0 }} \
         activation {{ udev_sync=0 udev_rules=0 monitoring=0 }} \
         global {{ use_lvmpolld=0 }}",
        dev = dev.display()
    );
    let lvm = |sub: &str| -> Command {
        let mut cmd = tool(sub);
        cmd.env("LVM_SYSTEM_DIR", conf.path())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .arg("--config")
            .arg(&config);
        cmd
    };
    let what = || format!("failed to build LVM PV '{}'", out.display());
    run(lvm("pvcreate").arg(&dev), None).with_context(what)?;
    run(lvm("vgcreate").arg(vg).arg(&dev), None).with_context(what)?;
    for lv in lvs {
        run(
            lvm("lvcreate")
                .args(["--driverloaded", "n", "--activate", "n", "--zero", "n"])
                .arg("--size")
                .arg(format!("{}b", lv.size_bytes))
                .arg("--name")
                .arg(lv.name)
                .arg(vg),
            None,
        )
        .with_context(what)?;
    }
    let pv = run(
        lvm("pvs").args([
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start,vg_extent_size",
        ]),
        None,
    )
    .with_context(what)?;
    let numbers: Vec<u64> = pv
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected pvs output {pv:?}"))?;
    let [pe_start, extent] = numbers[..] else {
        bail!("unexpected pvs output {pv:?}");
    };
    let segments = run(
        lvm("lvs").args([
            "--noheadings",
            "--segments",
            "--separator",
            ";",
            "-o",
            "lv_name,seg_pe_ranges,seg_size_pe",
        ]),
        None,
    )
    .with_context(what)?;
    // Done with LVM: free the loop device before writing through the file.
    lo.detach()?;

    let mut placed = Vec::with_capacity(lvs.len());
    for lv in lvs {
        let mine: Vec<&str> = segments
            .lines()
            .map(str::trim)
            .filter(|l| l.split(';').next() == Some(lv.name))
            .collect();
        let [segment] = mine[..] else {
            bail!(
                "LV {} has {} segments, want 1: {segments:?}",
                lv.name,
                mine.len()
            );
        };
        let fields: Vec<&str> = segment.split(';').collect();
        let [_, ranges, count] = fields[..] else {
            bail!("unexpected lvs line {segment:?}");
        };
        // `/dev/loop3:0-99`: PEs 0 to 99 of our PV.
        let first: u64 = ranges
            .rsplit(':')
            .next()
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("unexpected PE range {ranges:?}"))?;
        let count: u64 = count
            .trim()
            .parse()
            .with_context(|| format!("unexpected segment size {count:?}"))?;
        let lv_place = PlacedLv {
            name: lv.name.to_owned(),
            offset_bytes: pe_start + first * extent,
            size_bytes: count * extent,
        };
        ensure!(
            lv_place.size_bytes == lv.size_bytes,
            "LV {} is {} bytes, asked for {}",
            lv.name,
            lv_place.size_bytes,
            lv.size_bytes
        );
        if let Some(content) = lv.content {
            let len = std::fs::metadata(content)
                .with_context(|| format!("failed to stat '{}'", content.display()))?
                .len();
            ensure!(
                len <= lv_place.size_bytes,
                "'{}' does not fit LV {}",
                content.display(),
                lv.name
            );
            write_at(content, out, lv_place.offset_bytes)?;
        }
        placed.push(lv_place);
    }
    Ok(placed)
}
