//! A raw fixture disk written in the VM image formats by the tools that write them in real
//! life: `qemu-img convert` for qcow2 (v3, v2, compressed, and an overlay on a qcow2 backing
//! file), VMDK (monolithic sparse, streamOptimized), VHD (dynamic with QEMU's CHS sizing and
//! with `force_size`, fixed) and VHDX, and GNU tar + gzip for the GCE image tarball (`disk.raw`
//! stored sparse, as `gcloud compute images export` and Packer's googlecompute-export write
//! it). [`reference`] is what `qemu-img convert -O raw` makes of a converted image: the bytes a
//! reader of that format must give.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::cmd::{run, tool};

/// One way of writing a disk as an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Short name, also the file name.
    pub name: &'static str,
    /// What `snapscan inspect --json` must report as `image_format`.
    pub format: &'static str,
    how: How,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// `qemu-img convert -O <format> [-c] -o <options>`.
    Convert {
        format: &'static str,
        compress: bool,
        options: &'static str,
    },
    /// A qcow2 overlay, with nothing written to it, on a qcow2 copy of the disk.
    Overlay,
    /// `disk.raw` in a gzip-compressed GNU tar, stored sparse.
    Tarball,
}

const fn convert(
    name: &'static str,
    format: &'static str,
    qemu: &'static str,
    compress: bool,
    options: &'static str,
) -> Variant {
    Variant {
        name,
        format,
        how: How::Convert {
            format: qemu,
            compress,
            options,
        },
    }
}

/// Every variant.
pub const VARIANTS: [Variant; 11] = [
    convert("v3.qcow2", "qcow2", "qcow2", false, "compat=1.1"),
    convert("v2.qcow2", "qcow2", "qcow2", false, "compat=0.10"),
    convert("compressed.qcow2", "qcow2", "qcow2", true, "compat=1.1"),
    Variant {
        name: "overlay.qcow2",
        format: "qcow2",
        how: How::Overlay,
    },
    convert(
        "sparse.vmdk",
        "vmdk",
        "vmdk",
        false,
        "subformat=monolithicSparse",
    ),
    convert(
        "stream.vmdk",
        "vmdk",
        "vmdk",
        false,
        "subformat=streamOptimized",
    ),
    convert("dynamic.vhd", "vhd", "vpc", false, "subformat=dynamic"),
    convert(
        "dynamic-size.vhd",
        "vhd",
        "vpc",
        false,
        "subformat=dynamic,force_size=on",
    ),
    convert(
        "fixed.vhd",
        "vhd",
        "vpc",
        false,
        "subformat=fixed,force_size=on",
    ),
    convert("disk.vhdx", "vhdx", "vhdx", false, "subformat=dynamic"),
    Variant {
        name: "disk.tar.gz",
        format: "gce-tarball",
        how: How::Tarball,
    },
];

/// Write `raw` as `variant` in `dir`; the image file.
///
/// # Errors
///
/// A tool failed.
pub fn build(raw: &Path, variant: Variant, dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join(variant.name);
    match variant.how {
        How::Convert {
            format,
            compress,
            options,
        } => {
            let mut cmd = tool("qemu-img");
            cmd.args(["convert", "-f", "raw", "-O", format, "-o", options]);
            if compress {
                cmd.arg("-c");
            }
            run(cmd.arg(raw).arg(&out), None)?;
        }
        How::Overlay => {
            let base = dir.join("base.qcow2");
            run(
                tool("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(raw)
                    .arg(&base),
                None,
            )?;
            run(
                tool("qemu-img")
                    .args(["create", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2"])
                    .arg(&out),
                None,
            )?;
        }
        How::Tarball => {
            let stage = dir.join("tarball-stage");
            std::fs::create_dir_all(&stage)?;
            run(
                tool("cp")
                    .arg("--sparse=always")
                    .arg(raw)
                    .arg(stage.join("disk.raw")),
                None,
            )?;
            run(
                tool("tar")
                    .args(["--format=oldgnu", "-Sczf"])
                    .arg(&out)
                    .arg("-C")
                    .arg(&stage)
                    .arg("disk.raw"),
                None,
            )?;
            std::fs::remove_dir_all(&stage)?;
        }
    }
    Ok(out)
}

/// The raw disk `qemu-img convert -O raw` makes of `image` (for the tarball: its `disk.raw`,
/// unpacked by tar), in `dir`.
///
/// # Errors
///
/// A tool failed.
pub fn reference(image: &Path, variant: Variant, dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join(format!("{}.raw", variant.name));
    if variant.how == How::Tarball {
        let stage = dir.join("reference-stage");
        std::fs::create_dir_all(&stage)?;
        run(
            tool("tar").arg("-xSzf").arg(image).arg("-C").arg(&stage),
            None,
        )?;
        std::fs::rename(stage.join("disk.raw"), &out).context("tar made no disk.raw")?;
        std::fs::remove_dir_all(&stage)?;
    } else {
        // The format is named: qemu-img would probe a fixed VHD (no header) as raw.
        let format = match variant.how {
            How::Convert { format, .. } => format,
            How::Overlay | How::Tarball => "qcow2",
        };
        run(
            tool("qemu-img")
                .args(["convert", "-f", format, "-O", "raw"])
                .arg(image)
                .arg(&out),
            None,
        )?;
    }
    Ok(out)
}
