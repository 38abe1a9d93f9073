//! Disk assembly: a sparse disk file, a GPT (sgdisk) or MBR (sfdisk) partition table, and each
//! filesystem image copied in at its partition's offset (`dd conv=notrunc,sparse`).
//!
//! Partitions are laid out in the order given, each starting on a MiB boundary after a 1 MiB
//! gap for the table. MBR logical partitions (`logical: true`, after all primaries) go into one
//! extended partition, each preceded by 1 MiB for its EBR, and are numbered from 5 as Linux does.
//! The extended container itself is not returned: it is not a volume.

use std::path::Path;

use anyhow::{ensure, Context};

use super::cmd::{run, tool};
use super::fs::sparse_file;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Logical sector size of every disk built here.
pub const SECTOR: u64 = 512;

/// Which partition table to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// GUID partition table with its protective MBR and backup header.
    Gpt,
    /// DOS/MBR table, with an extended partition when any partition is logical.
    Mbr,
}

/// A partition to create.
#[derive(Debug, Clone)]
pub struct Partition<'a> {
    /// Size, a whole number of MiB.
    pub size_bytes: u64,
    /// sgdisk type code (`8300`, `ef00`, `0c01`...) for GPT; hex type id (`83`, `c`...) for MBR.
    pub type_code: &'static str,
    /// GPT partition name (ignored for MBR).
    pub name: &'static str,
    /// MBR only: a logical partition inside the extended one.
    pub logical: bool,
    /// A filesystem image to copy in (at most `size_bytes` long); `None` leaves it zeroed.
    pub content: Option<&'a Path>,
}

/// Where a partition ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Partition number as Linux names it (logical partitions from 5).
    pub number: u32,
    /// Offset from the start of the disk.
    pub start_bytes: u64,
    /// Length.
    pub size_bytes: u64,
}

/// Build the disk at `out`: `disk_bytes` long (or just large enough when `None`), with a
/// `table` holding `parts` and their contents. Returns where each partition went, in order.
pub fn assemble(
    table: Table,
    disk_bytes: Option<u64>,
    parts: &[Partition],
    out: &Path,
) -> anyhow::Result<Vec<Placed>> {
    let Layout {
        placed,
        extended,
        end,
    } = layout(table, parts)?;
    let disk_bytes = disk_bytes.unwrap_or(end + MIB);
    ensure!(
        disk_bytes >= end + MIB,
        "disk of {disk_bytes} bytes too small for partitions ending at {end}"
    );
    sparse_file(out, disk_bytes)?;
    match table {
        Table::Gpt => write_gpt(parts, &placed, out)?,
        Table::Mbr => write_mbr(parts, &placed, extended, out)?,
    }
    for (part, at) in parts.iter().zip(&placed) {
        if let Some(content) = part.content {
            let len = std::fs::metadata(content)
                .with_context(|| format!("failed to stat '{}'", content.display()))?
                .len();
            ensure!(
                len <= at.size_bytes,
                "'{}' ({len} bytes) does not fit partition {} ({} bytes)",
                content.display(),
                at.number,
                at.size_bytes
            );
            write_at(content, out, at.start_bytes)?;
        }
    }
    Ok(placed)
}

/// Where the partitions go.
struct Layout {
    /// Each partition, in the order given.
    placed: Vec<Placed>,
    /// The MBR extended container (start, size), when there are logical partitions.
    extended: Option<(u64, u64)>,
    /// End of the last partition.
    end: u64,
}

fn layout(table: Table, parts: &[Partition]) -> anyhow::Result<Layout> {
    let mut cursor = MIB;
    let mut placed = Vec::with_capacity(parts.len());
    let mut primary = 0u32;
    let mut logical = 4u32;
    let mut extended_start = None;
    for part in parts {
        ensure!(
            part.size_bytes > 0 && part.size_bytes % MIB == 0,
            "partition size {} is not a positive whole number of MiB",
            part.size_bytes
        );
        let number = if part.logical {
            ensure!(table == Table::Mbr, "logical partitions need an MBR table");
            if extended_start.is_none() {
                primary += 1;
                extended_start = Some(cursor);
            }
            // Room for this partition's EBR, kept MiB-aligned.
            cursor += MIB;
            logical += 1;
            logical
        } else {
            ensure!(
                extended_start.is_none(),
                "primary partitions must come before logical ones"
            );
            primary += 1;
            primary
        };
        placed.push(Placed {
            number,
            start_bytes: cursor,
            size_bytes: part.size_bytes,
        });
        cursor += part.size_bytes;
    }
    ensure!(
        table == Table::Gpt || primary <= 4,
        "an MBR holds at most 4 primary partitions (the extended one included)"
    );
    let extended = extended_start.map(|start| (start, cursor - start));
    Ok(Layout {
        placed,
        extended,
        end: cursor,
    })
}

fn write_gpt(parts: &[Partition], placed: &[Placed], out: &Path) -> anyhow::Result<()> {
    let mut cmd = tool("sgdisk");
    cmd.arg("--clear");
    for (part, at) in parts.iter().zip(placed) {
        let n = at.number;
        let first = at.start_bytes / SECTOR;
        let last = (at.start_bytes + at.size_bytes) / SECTOR - 1;
        cmd.arg(format!("--new={n}:{first}:{last}"))
            .arg(format!("--typecode={n}:{}", part.type_code))
            .arg(format!("--change-name={n}:{}", part.name));
    }
    run(cmd.arg(out), None)
        .with_context(|| format!("failed to write a GPT on '{}'", out.display()))?;
    Ok(())
}

fn write_mbr(
    parts: &[Partition],
    placed: &[Placed],
    extended: Option<(u64, u64)>,
    out: &Path,
) -> anyhow::Result<()> {
    let mut script = String::from("label: dos\nunit: sectors\n\n");
    let line = |start: u64, size: u64, kind: &str| {
        format!(
            "start={}, size={}, type={kind}\n",
            start / SECTOR,
            size / SECTOR
        )
    };
    for (part, at) in parts.iter().zip(placed) {
        if part.logical && at.number == 5 {
            if let Some((start, size)) = extended {
                script.push_str(&line(start, size, "5"));
            }
        }
        script.push_str(&line(at.start_bytes, at.size_bytes, part.type_code));
    }
    let mut cmd = tool("sfdisk");
    cmd.args(["--no-reread", "--no-tell-kernel", "--wipe", "never"])
        .arg(out);
    run(&mut cmd, Some(script.as_bytes()))
        .with_context(|| format!("failed to write an MBR on '{}'", out.display()))?;
    Ok(())
}

/// Copy the image `src` into `disk` at byte `offset`, leaving the rest of `disk` as it is and
/// keeping runs of zeros sparse.
pub fn write_at(src: &Path, disk: &Path, offset: u64) -> anyhow::Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    let what = || {
        format!(
            "failed to copy '{}' into '{}' at {offset}",
            src.display(),
            disk.display()
        )
    };
    let from = std::fs::File::open(src).with_context(what)?;
    let to = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .with_context(what)?;
    let len = from.metadata().with_context(what)?.len();
    // Copy only the data extents (SEEK_DATA/SEEK_HOLE): a sparse 64 GiB filesystem image holds
    // a few hundred MiB of data, and reading its holes would cost minutes.
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let at = i64::try_from(pos).with_context(what)?;
        let data = match lseek(from.as_raw_fd(), at, Whence::SeekData) {
            Ok(d) => u64::try_from(d).with_context(what)?,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(e) => return Err(e).with_context(what),
        };
        let hole = lseek(
            from.as_raw_fd(),
            i64::try_from(data).with_context(what)?,
            Whence::SeekHole,
        )
        .with_context(what)?;
        let hole = u64::try_from(hole).with_context(what)?.min(len);
        let mut cur = data;
        while cur < hole {
            let n = usize::try_from((hole - cur).min(buf.len() as u64)).with_context(what)?;
            from.read_exact_at(&mut buf[..n], cur).with_context(what)?;
            to.write_all_at(&buf[..n], offset + cur)
                .with_context(what)?;
            cur += n as u64;
        }
        pos = hole;
    }
    Ok(())
}
