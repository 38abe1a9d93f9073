//! Cell access: the hive bins data of a primary file read lazily in 4 KiB pages, through the
//! replayed log pages first, with a small least-recently-used page cache.
//!
//! A cell offset counts from the start of the hive bins data, which follows the 4 KiB base
//! block: file offset = cell offset + 4096. A cell starts with its size as an `i32`, negative
//! when allocated, and is a multiple of 8 bytes. [`Cells::cell`] returns the body of an
//! allocated cell that lies wholly inside the hive bins data and is at most [`MAX_CELL`] bytes.
//!
//! It does not check the `hbin` headers (cells are found by offset, not by walking bins), and
//! never reads a cell it is not asked for. Memory is the cache ([`CACHE_PAGES`] pages) plus the
//! log overlay, whatever the hive's size.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use super::log::Overlay;
use super::HiveError;
use crate::bytes::le32;
use crate::fs::FileAt;

/// Size of a page: the unit of reads, of the cache and of log pages.
pub const PAGE: u64 = 4096;
/// Size of the base block, which the hive bins data follows.
pub const BASE_BLOCK: u64 = 4096;
/// Pages kept in the cache (4 MiB).
pub const CACHE_PAGES: usize = 1024;
/// Largest cell body read (a subkey list of 65535 entries is 512 KiB).
pub const MAX_CELL: u32 = 1 << 20;

/// The cells of one hive.
pub struct Cells<'a> {
    file: Box<dyn FileAt + 'a>,
    overlay: BTreeMap<u64, Vec<u8>>,
    /// Size of the hive bins data: no cell reaches past it.
    bins_len: u32,
    cache: RefCell<Lru>,
}

impl std::fmt::Debug for Cells<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cells")
            .field("bins_len", &self.bins_len)
            .field("overlay_pages", &self.overlay.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Cells<'a> {
    /// Cells of `file` whose hive bins data is `bins_len` bytes, with the replayed `overlay`.
    pub fn new(file: Box<dyn FileAt + 'a>, bins_len: u32, overlay: Overlay) -> Cells<'a> {
        Cells {
            file,
            bins_len: overlay.bins_len.unwrap_or(bins_len),
            overlay: overlay.pages,
            cache: RefCell::new(Lru::default()),
        }
    }

    /// The hive bins data size in use (the primary's, or the last applied log entry's).
    pub fn bins_len(&self) -> u32 {
        self.bins_len
    }

    /// The body of the allocated cell at `offset`.
    ///
    /// # Errors
    ///
    /// [`HiveError::Corrupt`] when the cell is free, too small, past the hive bins data or
    /// larger than [`MAX_CELL`]; [`HiveError::Device`] on a device error.
    pub fn cell(&self, offset: u32) -> Result<Vec<u8>, HiveError> {
        let corrupt = |what: &str| HiveError::corrupt(offset, what);
        if !offset.is_multiple_of(8) {
            return Err(corrupt("cell offset not 8-byte aligned"));
        }
        let mut head = [0u8; 4];
        self.read(offset, &mut head)?;
        let size = i32::from_le_bytes(head);
        if size >= 0 {
            return Err(corrupt("reference to a free cell"));
        }
        let size = size.unsigned_abs();
        if size < 8 || !size.is_multiple_of(8) {
            return Err(corrupt("bad cell size"));
        }
        if size > MAX_CELL {
            return Err(corrupt("cell larger than the reader allows"));
        }
        let body_at = offset
            .checked_add(4)
            .ok_or_else(|| corrupt("cell offset"))?;
        let body_len = size.saturating_sub(4);
        let mut body = vec![0u8; usize::try_from(body_len).map_err(|_| corrupt("cell size"))?];
        self.read(body_at, &mut body)?;
        Ok(body)
    }

    /// Fill `buf` from hive-bins offset `offset`, which must stay inside the hive bins data.
    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), HiveError> {
        let len = u32::try_from(buf.len()).map_err(|_| HiveError::corrupt(offset, "read size"))?;
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.bins_len)
        {
            return Err(HiveError::corrupt(offset, "cell past the hive bins data"));
        }
        let mut at = u64::from(offset);
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let page = at.saturating_sub(at % PAGE);
            let within = usize::try_from(at % PAGE).unwrap_or(0);
            let n = self.with_page(page, |bytes| {
                let src = bytes.get(within..).unwrap_or_default();
                let n = src.len().min(rest.len());
                if let (Some(dst), Some(src)) = (rest.get_mut(..n), src.get(..n)) {
                    dst.copy_from_slice(src);
                }
                n
            })?;
            if n == 0 {
                return Err(HiveError::corrupt(offset, "empty page"));
            }
            done = done.saturating_add(n);
            at = at.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        }
        Ok(())
    }

    /// Run `f` over the page at hive-bins offset `page`: from the overlay, the cache, or read.
    fn with_page<T>(&self, page: u64, f: impl FnOnce(&[u8]) -> T) -> Result<T, HiveError> {
        if let Some(bytes) = self.overlay.get(&page) {
            return Ok(f(bytes));
        }
        let mut cache = self.cache.borrow_mut();
        if let Some(bytes) = cache.get(page) {
            return Ok(f(bytes));
        }
        let mut bytes = vec![0u8; usize::try_from(PAGE).unwrap_or(4096)];
        let at = page.saturating_add(BASE_BLOCK);
        let n = self
            .file
            .read_at(at, &mut bytes)
            .map_err(HiveError::from_fs)?;
        if n == 0 {
            return Err(HiveError::Corrupt(format!(
                "hive file ends before offset {at:#x}"
            )));
        }
        // A short last page reads as zeros past the file's end: cells there are then invalid.
        let out = f(&bytes);
        cache.put(page, bytes);
        Ok(out)
    }
}

/// A least-recently-used map of pages, at most [`CACHE_PAGES`] of them.
#[derive(Default)]
struct Lru {
    /// Page offset → (last use, bytes).
    pages: HashMap<u64, (u64, Vec<u8>)>,
    /// Last use → page offset, oldest first.
    order: BTreeMap<u64, u64>,
    clock: u64,
}

impl Lru {
    fn tick(&mut self) -> u64 {
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    fn get(&mut self, page: u64) -> Option<&[u8]> {
        let now = self.tick();
        let (used, _) = self.pages.get_mut(&page)?;
        self.order.remove(used);
        *used = now;
        self.order.insert(now, page);
        self.pages.get(&page).map(|(_, b)| b.as_slice())
    }

    fn put(&mut self, page: u64, bytes: Vec<u8>) {
        if self.pages.len() >= CACHE_PAGES {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.pages.remove(&oldest);
            }
        }
        let now = self.tick();
        self.order.insert(now, page);
        if let Some((old, _)) = self.pages.insert(page, (now, bytes)) {
            self.order.remove(&old);
        }
    }
}

/// The fields of a primary file's base block that the reader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseBlock {
    /// Primary sequence number (offset 4).
    pub primary_seq: u32,
    /// Secondary sequence number (offset 8).
    pub secondary_seq: u32,
    /// Minor version (3 to 6; big data needs 4 or later).
    pub minor: u32,
    /// Offset of the root key's cell.
    pub root: u32,
    /// Size of the hive bins data.
    pub bins_len: u32,
    /// Whether the XOR-32 checksum at 0x1FC matches.
    pub checksum_ok: bool,
}

impl BaseBlock {
    /// Parse the first 512 bytes of a primary file.
    ///
    /// # Errors
    ///
    /// [`HiveError::Corrupt`] for a wrong signature, file type or format, and
    /// [`HiveError::Unsupported`] for a major version other than 1.
    pub fn parse(b: &[u8]) -> Result<BaseBlock, HiveError> {
        let field = |off| le32(b, off).ok_or_else(|| HiveError::Corrupt("short base block".into()));
        if b.get(..4) != Some(b"regf") {
            return Err(HiveError::Corrupt("no regf signature".into()));
        }
        let (major, minor) = (field(0x14)?, field(0x18)?);
        if major != 1 || !(2..=6).contains(&minor) {
            return Err(HiveError::Unsupported(format!(
                "hive version {major}.{minor}"
            )));
        }
        if field(0x1C)? != 0 || field(0x20)? != 1 {
            return Err(HiveError::Corrupt("not a primary hive file".into()));
        }
        let bins_len = field(0x28)?;
        if u64::from(bins_len) % PAGE != 0 {
            return Err(HiveError::Corrupt(format!(
                "hive bins data size {bins_len:#x} not a multiple of 4096"
            )));
        }
        let sum = (0..0x1FC)
            .step_by(4)
            .filter_map(|off| le32(b, off))
            .fold(0u32, |acc, d| acc ^ d);
        let sum = match sum {
            0 => 1,
            u32::MAX => u32::MAX.saturating_sub(1),
            s => s,
        };
        Ok(BaseBlock {
            primary_seq: field(4)?,
            secondary_seq: field(8)?,
            minor,
            root: field(0x24)?,
            bins_len,
            checksum_ok: le32(b, 0x1FC) == Some(sum),
        })
    }

    /// Dirty: the sequence numbers differ or the checksum is wrong; the logs may hold newer
    /// data.
    pub fn is_dirty(&self) -> bool {
        self.primary_seq != self.secondary_seq || !self.checksum_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::default();
        for page in 0..u64::try_from(CACHE_PAGES).expect("fits") {
            lru.put(page * PAGE, vec![1]);
        }
        assert!(lru.get(0).is_some(), "page 0 used again: now the newest");
        lru.put(u64::MAX - PAGE, vec![2]);
        assert_eq!(lru.pages.len(), CACHE_PAGES);
        assert_eq!(lru.order.len(), CACHE_PAGES);
        assert!(lru.get(0).is_some());
        assert!(lru.get(PAGE).is_none(), "the oldest page went");
    }
}
