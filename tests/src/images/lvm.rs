//! LVM physical volumes without device-mapper: the real `pvcreate`, `vgcreate`, `lvcreate` and
//! `lvextend` write the PV labels and metadata onto loop devices over PV-sized files, and the
//! logical volumes' contents (filesystem images) are then written at the offsets LVM reports
//! (`pvs -o pe_start`, `lvs --segments -o seg_start_pe,seg_pe_ranges`), segment by segment,
//! which is what activation would map.
//!
//! The LVM commands ([`LvmTools`]) see only our loop devices (a device filter, no devices
//! file), use a private empty configuration directory, keep no metadata backups and never touch
//! device-mapper (`--activate n --zero n`, `--driverloaded n`), so they neither depend on nor
//! change the host's LVM state and do not clash with a host VG of the same name. The agent
//! never runs LVM tools at all (it parses the metadata itself), so a fixture VG name that
//! collides with a "host" VG is irrelevant there; tests use [`LvmTools`] with `--readonly` to
//! get LVM's own view of a fixture. Root only.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

use super::cmd::{run, tool};
use super::fs::sparse_file;
use super::guard::LoopDevice;

/// LVM commands confined to a set of devices, with a private configuration directory.
pub struct LvmTools {
    conf: tempfile::TempDir,
    config: String,
}

impl LvmTools {
    /// Tools that see only `devices` (block device paths) and nothing of the host's LVM setup.
    pub fn new(devices: &[&Path]) -> anyhow::Result<LvmTools> {
        let conf = tempfile::Builder::new()
            .prefix("snapscan-lvm-conf-")
            .tempdir()
            .context("failed to create an LVM configuration directory")?;
        let accept: Vec<String> = devices
            .iter()
            .map(|d| format!("\"a|^{}$|\",", d.display()))
            .collect();
        let config = format!(
            "devices {{ use_devicesfile=0 filter=[{}\"r|.*|\"] scan=[\"/dev\"] }} \
             backup {{ backup=0 archive=0 }} \
             activation {{ udev_sync=0 udev_rules=0 monitoring=0 }} \
             global {{ use_lvmpolld=0 }}",
            accept.concat()
        );
        Ok(LvmTools { conf, config })
    }

    /// A command for LVM tool `sub` (`pvs`, `lvcreate`...) with the private configuration.
    pub fn cmd(&self, sub: &str) -> Command {
        let mut cmd = tool(sub);
        cmd.env("LVM_SYSTEM_DIR", self.conf.path())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    /// Run a reporting command (`pvs`, `lvs`) read-only, byte units, `;`-separated, no
    /// headings: one `Vec` of fields per line.
    pub fn report(
        &self,
        sub: &str,
        fields: &str,
        extra: &[&str],
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let mut cmd = self.cmd(sub);
        cmd.args(["--readonly", "--noheadings", "--units", "b", "--nosuffix"])
            .args(["--separator", ";", "-o", fields])
            .args(extra);
        let out = run(&mut cmd, None)?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().split(';').map(str::to_owned).collect())
            .collect())
    }
}

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

/// One step of building a VG with [`build_vg`].
#[derive(Debug, Clone)]
pub enum Step {
    /// `lvcreate` an LV of `size_bytes`, on PV number `pv` (an index into the PV files) or
    /// wherever LVM likes.
    Create {
        /// LV name.
        name: &'static str,
        /// Size, whole extents.
        size_bytes: u64,
        /// The PV to allocate from.
        pv: Option<usize>,
    },
    /// `lvextend` an LV by `add_bytes`, from PV number `pv` or anywhere.
    Extend {
        /// LV name.
        name: &'static str,
        /// Bytes to add, whole extents.
        add_bytes: u64,
        /// The PV to allocate from.
        pv: Option<usize>,
    },
}

/// One linear segment of an LV as LVM placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedSegment {
    /// Offset of the segment's first byte in the LV.
    pub lv_offset_bytes: u64,
    /// Which PV file (index into the `pvs` given to [`build_vg`]).
    pub pv: usize,
    /// Offset of the segment's first byte from the start of that PV.
    pub pv_offset_bytes: u64,
    /// Length.
    pub size_bytes: u64,
}

/// Make `pvs` (files of the given sizes) the PVs of VG `vg`, run `steps`, and write each
/// `(LV name, filesystem image)` of `contents` segment by segment where LVM put the LV. Returns
/// each LV's segments, by LV name, in LV order.
pub fn build_vg(
    vg: &str,
    pvs: &[(&Path, u64)],
    steps: &[Step],
    contents: &[(&str, &Path)],
) -> anyhow::Result<Vec<(String, Vec<PlacedSegment>)>> {
    let what = || format!("failed to build LVM VG {vg}");
    let mut loops = Vec::with_capacity(pvs.len());
    for &(file, bytes) in pvs {
        sparse_file(file, bytes)?;
        loops.push(LoopDevice::attach(file, 0, None, false)?);
    }
    let devs: Vec<PathBuf> = loops.iter().map(|l| l.path().to_owned()).collect();
    let dev_refs: Vec<&Path> = devs.iter().map(PathBuf::as_path).collect();
    let lvm = LvmTools::new(&dev_refs)?;
    run(lvm.cmd("pvcreate").args(&devs), None).with_context(what)?;
    run(lvm.cmd("vgcreate").arg(vg).args(&devs), None).with_context(what)?;
    let on = |pv: &Option<usize>| -> anyhow::Result<Vec<PathBuf>> {
        pv.map(|i| {
            devs.get(i)
                .cloned()
                .with_context(|| format!("no PV number {i}"))
        })
        .into_iter()
        .collect()
    };
    for step in steps {
        let mut cmd = match step {
            Step::Create {
                name,
                size_bytes,
                pv,
            } => {
                let mut cmd = lvm.cmd("lvcreate");
                cmd.args(["--activate", "n", "--zero", "n"])
                    .arg("--size")
                    .arg(format!("{size_bytes}b"))
                    .arg("--name")
                    .arg(name)
                    .arg(vg)
                    .args(on(pv)?);
                cmd
            }
            Step::Extend {
                name,
                add_bytes,
                pv,
            } => {
                let mut cmd = lvm.cmd("lvextend");
                cmd.arg("--size")
                    .arg(format!("+{add_bytes}b"))
                    .arg(format!("{vg}/{name}"))
                    .args(on(pv)?);
                cmd
            }
        };
        run(cmd.args(["--driverloaded", "n"]), None).with_context(what)?;
    }
    let pe_starts = lvm.report("pvs", "pv_name,pe_start,vg_extent_size", &[])?;
    let segments = lvm.report(
        "lvs",
        "lv_name,seg_start_pe,seg_size_pe,seg_pe_ranges",
        &["--segments"],
    )?;
    // Done with LVM: free the loop devices before writing through the files.
    for lo in loops {
        lo.detach()?;
    }

    let mut extent = 0u64;
    let mut pe_start = vec![0u64; devs.len()];
    for row in &pe_starts {
        let [dev, start, size] = &row[..] else {
            bail!("unexpected pvs line {row:?}");
        };
        let i = devs
            .iter()
            .position(|d| d.as_os_str() == dev.as_str())
            .with_context(|| format!("pvs names an unknown device {dev}"))?;
        pe_start[i] = start
            .parse()
            .with_context(|| format!("bad pe_start {start:?}"))?;
        extent = size
            .parse()
            .with_context(|| format!("bad extent size {size:?}"))?;
    }
    ensure!(extent > 0, "pvs gave no extent size: {pe_starts:?}");
    let mut placed: Vec<(String, Vec<PlacedSegment>)> = Vec::new();
    for row in &segments {
        let [name, start, count, ranges] = &row[..] else {
            bail!("unexpected lvs line {row:?}");
        };
        // `/dev/loop3:0-99`: PEs 0 to 99 of that PV.
        let (dev, range) = ranges
            .rsplit_once(':')
            .with_context(|| format!("unexpected PE range {ranges:?}"))?;
        let pv = devs
            .iter()
            .position(|d| d.as_os_str() == dev)
            .with_context(|| format!("lvs names an unknown device {dev}"))?;
        let first: u64 = range
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected PE range {ranges:?}"))?;
        let parse = |n: &str| -> anyhow::Result<u64> {
            n.parse()
                .with_context(|| format!("unexpected lvs number {n:?}"))
        };
        let seg = PlacedSegment {
            lv_offset_bytes: parse(start)? * extent,
            pv,
            pv_offset_bytes: pe_start[pv] + first * extent,
            size_bytes: parse(count)? * extent,
        };
        match placed.iter_mut().find(|(n, _)| n == name) {
            Some((_, segs)) => segs.push(seg),
            None => placed.push((name.clone(), vec![seg])),
        }
    }
    for (name, content) in contents {
        let (_, segs) = placed
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("no LV {name} to write '{}' into", content.display()))?;
        let len = std::fs::metadata(content)
            .with_context(|| format!("failed to stat '{}'", content.display()))?
            .len();
        let lv_size: u64 = segs.iter().map(|s| s.size_bytes).sum();
        ensure!(
            len <= lv_size,
            "'{}' does not fit LV {name}",
            content.display()
        );
        for seg in segs {
            copy_range(
                content,
                seg.lv_offset_bytes,
                seg.size_bytes,
                pvs[seg.pv].0,
                seg.pv_offset_bytes,
            )?;
        }
    }
    Ok(placed)
}

/// Copy up to `len` bytes of `src` from `from` (fewer if `src` ends first) into `dst` at `to`.
fn copy_range(src: &Path, from: u64, len: u64, dst: &Path, to: u64) -> anyhow::Result<()> {
    let what = || {
        format!(
            "failed to copy '{}' into '{}'",
            src.display(),
            dst.display()
        )
    };
    let input = File::open(src).with_context(what)?;
    let output = OpenOptions::new()
        .write(true)
        .open(dst)
        .with_context(what)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = buf
            .len()
            .min(usize::try_from(len - done).unwrap_or(usize::MAX));
        let n = input
            .read_at(&mut buf[..want], from + done)
            .with_context(what)?;
        if n == 0 {
            break;
        }
        // The PV file is sparse and fresh: zeros need no writing, and stay holes.
        if buf[..n].iter().any(|&b| b != 0) {
            output
                .write_all_at(&buf[..n], to + done)
                .with_context(what)?;
        }
        done += n as u64;
    }
    Ok(())
}

/// Make `out` a PV of `pv_bytes` holding VG `vg` with `lvs` (in order, each one linear segment),
/// and write each LV's content at its place. Returns where each LV went.
pub fn build_pv(
    vg: &str,
    lvs: &[LogicalVolume],
    pv_bytes: u64,
    out: &Path,
) -> anyhow::Result<Vec<PlacedLv>> {
    let steps: Vec<Step> = lvs
        .iter()
        .map(|lv| Step::Create {
            name: lv.name,
            size_bytes: lv.size_bytes,
            pv: None,
        })
        .collect();
    let contents: Vec<(&str, &Path)> = lvs
        .iter()
        .filter_map(|lv| Some((lv.name, lv.content?)))
        .collect();
    let placed = build_vg(vg, &[(out, pv_bytes)], &steps, &contents)?;
    let mut out = Vec::with_capacity(lvs.len());
    for lv in lvs {
        let segs = placed
            .iter()
            .find(|(n, _)| n == lv.name)
            .map(|(_, s)| s.as_slice())
            .unwrap_or_default();
        let [seg] = segs else {
            bail!("LV {} has {} segments, want 1", lv.name, segs.len());
        };
        ensure!(
            seg.size_bytes == lv.size_bytes,
            "LV {} is {} bytes, asked for {}",
            lv.name,
            seg.size_bytes,
            lv.size_bytes
        );
        out.push(PlacedLv {
            name: lv.name.to_owned(),
            offset_bytes: seg.pv_offset_bytes,
            size_bytes: seg.size_bytes,
        });
    }
    Ok(out)
}
