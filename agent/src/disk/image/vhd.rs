//! VHD (Virtual PC / Hyper-V), fixed and dynamic, our own reader: the `vhd-core` crate reads
//! the whole file into memory to parse it, which a multi-gigabyte image cannot afford.
//!
//! A VHD ends with a 512-byte footer (a dynamic one also starts with a copy of it). A fixed VHD
//! is the disk followed by the footer. A dynamic VHD has a header that places the block
//! allocation table (BAT): one big-endian sector number per block (2 MiB by default), or
//! `0xFFFFFFFF` for a block never written (it reads as zeros); a block's data follows its
//! sector bitmap, which matters only for differencing disks (refused here). The virtual size
//! follows QEMU's rule: the CHS geometry for images from Virtual PC and unknown creators, the
//! footer's current size for Hyper-V, disk2vhd, XenServer and QEMU's `force_size` images, and
//! whenever the geometry is at its maximum.
//!
//! Bounds: the BAT is read only as far as the virtual size needs, and it must lie inside the
//! file, so its memory is bounded by the file's size; every checksum is verified.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::{corrupt, read_some, Image, Opened, VHD_COOKIE};
use crate::bytes::{arr, be16, be32, be64, byte};

const FOOTER: usize = 512;
const DYNAMIC_HEADER: usize = 1024;
const SECTOR: u64 = 512;
/// A BAT entry of a block never written.
const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// The largest CHS geometry: a disk this size or more uses the footer's current size.
const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;
/// The largest disk QEMU accepts (2040 GiB).
const MAX_SECTORS: u64 = 0xff00_0000;
/// Creators whose images are sized by the footer's current size, not by CHS.
const CURRENT_SIZE_CREATORS: [&[u8; 4]; 5] = [b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"];

/// Whether `file` (`len` bytes) ends with a VHD footer (how a fixed VHD is recognised).
pub(super) fn has_footer(file: &File, len: u64) -> io::Result<bool> {
    let Some(at) = len.checked_sub(SECTOR) else {
        return Ok(false);
    };
    let mut cookie = [0u8; 8];
    Ok(read_some(file, at, &mut cookie)? == cookie.len() && cookie == VHD_COOKIE)
}

/// Open the VHD in `file` (`len` bytes).
pub(super) fn open(file: File, len: u64) -> io::Result<Opened> {
    let footer = read_footer(&file, len)?;
    let size = footer.virtual_size();
    if size / SECTOR > MAX_SECTORS {
        return Err(corrupt(format!(
            "virtual size of {size} bytes is over the VHD limit of 2040 GiB"
        )));
    }
    let layout = match footer.disk_type {
        2 => {
            let data = len.saturating_sub(SECTOR);
            if size > data {
                return Err(corrupt(format!(
                    "fixed VHD of {size} bytes holds only {data} bytes of data"
                )));
            }
            Layout::Fixed
        }
        3 => dynamic(&file, len, &footer, size)?,
        4 => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a differencing VHD: its parent disk is not followed",
            ))
        }
        other => return Err(corrupt(format!("unknown VHD disk type {other}"))),
    };
    Ok(Opened {
        size,
        image: Box::new(Vhd { file, len, layout }),
    })
}

/// The fields of the footer used here.
struct Footer {
    data_offset: u64,
    current_size: u64,
    cylinders: u64,
    heads: u64,
    sectors_per_track: u64,
    disk_type: u32,
    creator_app: [u8; 4],
}

impl Footer {
    fn parse(b: &[u8]) -> io::Result<Footer> {
        if b.get(..8) != Some(VHD_COOKIE) {
            return Err(corrupt("no VHD footer ('conectix' cookie)"));
        }
        check_sum(b, 64, "footer")?;
        Ok(Footer {
            data_offset: be64(b, 16).unwrap_or_default(),
            current_size: be64(b, 48).unwrap_or_default(),
            cylinders: u64::from(be16(b, 56).unwrap_or_default()),
            heads: u64::from(byte(b, 58).unwrap_or_default()),
            sectors_per_track: u64::from(byte(b, 59).unwrap_or_default()),
            disk_type: be32(b, 60).unwrap_or_default(),
            creator_app: arr(b, 28).unwrap_or_default(),
        })
    }

    fn virtual_size(&self) -> u64 {
        let chs = self.cylinders * self.heads * self.sectors_per_track;
        let by_current = CURRENT_SIZE_CREATORS.contains(&&self.creator_app);
        if by_current || chs >= MAX_GEOMETRY_SECTORS {
            self.current_size
        } else {
            chs * SECTOR
        }
    }
}

/// The footer at the end of the file, or the copy at its start when the end is damaged.
fn read_footer(file: &File, len: u64) -> io::Result<Footer> {
    let mut buf = [0u8; FOOTER];
    let at_end = len
        .checked_sub(SECTOR)
        .map(|at| file.read_exact_at(&mut buf, at))
        .transpose()?
        .map(|()| Footer::parse(&buf));
    match at_end {
        Some(Ok(f)) => Ok(f),
        end_error => {
            file.read_exact_at(&mut buf, 0)?;
            Footer::parse(&buf).map_err(|e| match end_error {
                Some(Err(end)) => corrupt(format!("{end} at the end, and {e} at the start")),
                _ => e,
            })
        }
    }
}

/// Where the bytes of the virtual disk are.
#[derive(Debug)]
enum Layout {
    /// At the same offsets in the file.
    Fixed,
    /// In blocks of `block` bytes, each after a bitmap of `bitmap` bytes, where the BAT says.
    Dynamic {
        block: u64,
        bitmap: u64,
        bat: Vec<u32>,
    },
}

fn dynamic(file: &File, len: u64, footer: &Footer, size: u64) -> io::Result<Layout> {
    let at = footer.data_offset;
    let header_end = at.checked_add(DYNAMIC_HEADER as u64);
    if header_end.is_none_or(|end| end > len) {
        return Err(corrupt(format!(
            "dynamic header at {at:#x} is outside the {len}-byte file"
        )));
    }
    let mut h = [0u8; DYNAMIC_HEADER];
    file.read_exact_at(&mut h, at)?;
    if h.get(..8) != Some(b"cxsparse".as_slice()) {
        return Err(corrupt("no dynamic header ('cxsparse' cookie)"));
    }
    check_sum(&h, 36, "dynamic header")?;
    let table_offset = be64(&h, 16).unwrap_or_default();
    let max_entries = u64::from(be32(&h, 28).unwrap_or_default());
    let block = u64::from(be32(&h, 32).unwrap_or_default());
    if !block.is_power_of_two() || !(SECTOR..=256 << 20).contains(&block) {
        return Err(corrupt(format!(
            "block size {block} is not a power of two from 512 B to 256 MiB"
        )));
    }
    let entries = size.div_ceil(block);
    if entries > max_entries {
        return Err(corrupt(format!(
            "{size} bytes need {entries} blocks of {block} bytes, the table has {max_entries}"
        )));
    }
    let table_len = entries * 4;
    if table_offset
        .checked_add(table_len)
        .is_none_or(|end| end > len)
    {
        return Err(corrupt(format!(
            "block table of {table_len} bytes at {table_offset:#x} is outside the {len}-byte file"
        )));
    }
    let mut raw =
        vec![0u8; usize::try_from(table_len).map_err(|_| corrupt("block table too large"))?];
    file.read_exact_at(&mut raw, table_offset)?;
    let bat = raw
        .chunks_exact(4)
        .map(|c| be32(c, 0).unwrap_or(UNALLOCATED))
        .collect();
    let bitmap = (block / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
    Ok(Layout::Dynamic { block, bitmap, bat })
}

/// An opened VHD.
#[derive(Debug)]
struct Vhd {
    file: File,
    /// The file's length.
    len: u64,
    layout: Layout,
}

impl Image for Vhd {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let (block, bitmap, bat) = match &self.layout {
            Layout::Fixed => return self.file.read_exact_at(buf, offset),
            Layout::Dynamic { block, bitmap, bat } => (*block, *bitmap, bat),
        };
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            let index = at / block;
            let within = at % block;
            let take = usize::try_from(block - within)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let dst = buf
                .get_mut(done..done + take)
                .ok_or_else(|| corrupt("read outside the buffer"))?;
            let entry = usize::try_from(index)
                .ok()
                .and_then(|i| bat.get(i).copied())
                .ok_or_else(|| corrupt(format!("read at {at:#x} is past the block table")))?;
            if entry == UNALLOCATED {
                dst.fill(0);
            } else {
                let data = u64::from(entry) * SECTOR + bitmap + within;
                let end = data + u64::try_from(take).unwrap_or(u64::MAX);
                if end > self.len {
                    return Err(corrupt(format!(
                        "block {index} at sector {entry} is outside the {}-byte file",
                        self.len
                    )));
                }
                self.file.read_exact_at(dst, data)?;
            }
            done += take;
        }
        Ok(())
    }
}

/// Check the one's-complement checksum at `field` of a footer or header.
fn check_sum(b: &[u8], field: usize, what: &str) -> io::Result<()> {
    let stored = be32(b, field).unwrap_or_default();
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &v)| s.wrapping_add(u32::from(v)));
    if !sum != stored {
        return Err(corrupt(format!(
            "{what} checksum is {stored:#010x}, its bytes sum to {:#010x}",
            !sum
        )));
    }
    Ok(())
}
