//! A read-only reader of BerkeleyDB files, as much as the rpm `Packages` database of RHEL 7/8
//! and older SUSE needs: every value of a hash (or btree) database, in page order.
//!
//! The metadata page (page 0) gives the access method by its magic (hash `0x061561`, btree
//! `0x053162`), read in either byte order (the order that matches is the file's: databases
//! written on big-endian machines stay big-endian), the page size (a power of two from 512 to
//! 64 KiB) and the last page number. Every page after it is then visited once, in file order:
//!
//! - hash pages (`P_HASH`, `P_HASH_UNSORTED`) hold key/data item pairs, each `H_KEYDATA`
//!   (inline, its length given by the previous item's offset) or `H_OFFPAGE` (a chain of
//!   overflow pages and the total length);
//! - btree leaf pages (`P_LBTREE`) hold `B_KEYDATA` / `B_OVERFLOW` pairs; deleted items are
//!   skipped;
//! - overflow pages (`P_OVERFLOW`) are read only through the chains that point at them: each
//!   page gives `hf_offset` bytes after its 26-byte header and names the next page.
//!
//! Bounds: the file must hold the metadata page; pages past the end of the file are not read;
//! every item offset and length is checked against its page; a chain may only visit pages that
//! exist, are overflow pages and have not been used by any chain before (which stops loops and
//! shared pages, so the values together are never larger than the file), and must give exactly
//! its stated length, at most [`MAX_VALUE_LEN`]. A bad item or chain is reported in
//! [`Values::errors`] and the rest is still read; only an unusable metadata page fails the
//! whole file.
//!
//! The key `00000000` (rpm's "next header instance" record, not a header) is skipped. Not
//! supported: duplicate items (`H_DUPLICATE`, `H_OFFDUP`, `B_DUPLICATE`: rpm's `Packages` has
//! unique keys), encrypted or checksummed files, queue/recno/heap databases, and the
//! transaction log (a file left mid-transaction is read as it is on disk). Format: Berkeley DB
//! `dbinc/db_page.h`, `dbinc/db_am.h`; rpm's own `lib/backend/bdb_ro.c` reads the same subset.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

/// Longest value returned: an rpm header blob can be at most
/// [`super::header::MAX_BLOB_LEN`] bytes.
pub const MAX_VALUE_LEN: usize = super::header::MAX_BLOB_LEN;

const HASH_MAGIC: u32 = 0x0006_1561;
const BTREE_MAGIC: u32 = 0x0005_3162;
/// Size of the generic page header (`PAGE`, `SIZEOF_PAGE`).
const PAGE_HEADER: usize = 26;
/// Page types.
const P_HASH_UNSORTED: u8 = 2;
const P_LBTREE: u8 = 5;
const P_OVERFLOW: u8 = 7;
const P_HASH: u8 = 13;
/// Hash item types.
const H_KEYDATA: u8 = 1;
const H_DUPLICATE: u8 = 2;
const H_OFFPAGE: u8 = 3;
const H_OFFDUP: u8 = 4;
/// Btree item types (low 7 bits; the top bit marks a deleted item).
const B_KEYDATA: u8 = 1;
const B_DUPLICATE: u8 = 2;
const B_OVERFLOW: u8 = 3;
const B_DELETE: u8 = 0x80;
/// Metadata flags: `DBMETA_CHKSUM`.
const DBMETA_CHKSUM: u8 = 0x01;

/// Why a BerkeleyDB file, or one item of it, could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BdbError {
    /// Shorter than a metadata page.
    #[error("file of {0} bytes is too short for a BerkeleyDB metadata page")]
    Truncated(usize),
    /// Neither the hash nor the btree magic, in either byte order.
    #[error("not a BerkeleyDB hash or btree file (magic {0:#010x})")]
    WrongMagic(u32),
    /// A page size that is not a power of two from 512 to 65536, or larger than the file.
    #[error("bad page size {0}")]
    BadPageSize(u32),
    /// A feature this reader does not have.
    #[error("unsupported BerkeleyDB feature: {0}")]
    Unsupported(&'static str),
    /// An item whose offset or length does not fit its page.
    #[error("page {page}: item {index} lies outside the page")]
    BadItem {
        /// Page number.
        page: u32,
        /// Item index on the page.
        index: usize,
    },
    /// A duplicate-set item, which rpm databases do not use.
    #[error("page {page}: item {index} is a duplicate set (type {kind}), not read")]
    DuplicateItem {
        /// Page number.
        page: u32,
        /// Item index on the page.
        index: usize,
        /// Item type.
        kind: u8,
    },
    /// A broken overflow chain.
    #[error("overflow chain from page {start}: {reason} at page {page}")]
    BadOverflow {
        /// First page of the chain.
        start: u32,
        /// Where it went wrong.
        page: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// An overflow chain that comes back to a page already used (a loop, or two chains sharing
    /// a page).
    #[error("overflow chain from page {start} loops back to page {page}")]
    OverflowLoop {
        /// First page of the chain.
        start: u32,
        /// The page seen twice.
        page: u32,
    },
    /// A value longer than [`MAX_VALUE_LEN`].
    #[error("value of {len} bytes on page {page} is longer than {MAX_VALUE_LEN}")]
    ValueTooLarge {
        /// The page holding the item.
        page: u32,
        /// Its stated length.
        len: u32,
    },
}

impl BdbError {
    /// A short stable label for logs and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            BdbError::Truncated(_) => "truncated",
            BdbError::WrongMagic(_) => "wrong_magic",
            BdbError::BadPageSize(_) => "bad_page_size",
            BdbError::Unsupported(_) => "unsupported",
            BdbError::BadItem { .. } => "bad_item",
            BdbError::DuplicateItem { .. } => "duplicate_item",
            BdbError::BadOverflow { .. } => "bad_overflow",
            BdbError::OverflowLoop { .. } => "overflow_loop",
            BdbError::ValueTooLarge { .. } => "value_too_large",
        }
    }
}

/// What [`values`] read from one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Values {
    /// Every value (except the zero key's), in page order.
    pub values: Vec<Vec<u8>>,
    /// Items that could not be read; the rest still was.
    pub errors: Vec<BdbError>,
}

/// The access method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Hash,
    Btree,
}

/// Integers in the file's byte order.
#[derive(Debug, Clone, Copy)]
struct Order {
    big: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let bytes: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }
}

fn us(v: impl Into<u64>) -> usize {
    usize::try_from(v.into()).unwrap_or(usize::MAX)
}

/// One item: inline bytes or an overflow chain.
enum Item<'a> {
    Inline(&'a [u8]),
    Overflow { pgno: u32, len: u32 },
}

/// The open file.
struct Db<'a> {
    file: &'a [u8],
    order: Order,
    method: Method,
    page_size: usize,
    pages: u32,
    /// Overflow pages already read by a chain.
    used: Vec<bool>,
}

/// Read every value of the BerkeleyDB hash or btree file `file`.
///
/// # Errors
///
/// Only for a file whose metadata page cannot be used ([`BdbError::Truncated`],
/// [`BdbError::WrongMagic`], [`BdbError::BadPageSize`], [`BdbError::Unsupported`]); damaged
/// items are in [`Values::errors`].
pub fn values(file: &[u8]) -> Result<Values, BdbError> {
    let mut db = Db::open(file)?;
    let mut out = Values::default();
    for pgno in 1..db.pages {
        let Some(page) = db.page(pgno) else { break };
        let kind = page.get(25).copied().unwrap_or_default();
        let hash = matches!(kind, P_HASH | P_HASH_UNSORTED) && db.method == Method::Hash;
        let btree = kind == P_LBTREE && db.method == Method::Btree;
        if !(hash || btree) {
            continue;
        }
        let entries = us(db.order.u16(page, 20).unwrap_or_default());
        let index_end = entries.saturating_mul(2).saturating_add(PAGE_HEADER);
        if index_end > db.page_size {
            // The index alone does not fit the page: report the page once.
            out.errors.push(BdbError::BadItem {
                page: pgno,
                index: entries,
            });
            continue;
        }
        let mut index = 0usize;
        while index < entries {
            let data_index = index.saturating_add(1);
            let pair = (|| {
                let key = db.item(pgno, index, entries)?;
                let value = db.item(pgno, data_index, entries)?;
                Ok::<_, BdbError>((key, value))
            })();
            index = index.saturating_add(2);
            match pair {
                Ok((Some(Item::Inline(key)), Some(value))) if key != [0u8; 4] => {
                    match db.resolve(pgno, value) {
                        Ok(v) => out.values.push(v),
                        Err(e) => out.errors.push(e),
                    }
                }
                Ok((Some(Item::Overflow { .. }), Some(value))) => match db.resolve(pgno, value) {
                    Ok(v) => out.values.push(v),
                    Err(e) => out.errors.push(e),
                },
                // The zero key, or a deleted pair.
                Ok(_) => {}
                Err(e) => out.errors.push(e),
            }
        }
    }
    Ok(out)
}

impl<'a> Db<'a> {
    fn open(file: &'a [u8]) -> Result<Self, BdbError> {
        // The hash metadata page is the larger of the two: 72 generic + 152 hash bytes.
        if file.len() < 512 {
            return Err(BdbError::Truncated(file.len()));
        }
        let le = Order { big: false };
        let be = Order { big: true };
        let magic = le.u32(file, 12).unwrap_or_default();
        let (order, method) = match (magic, be.u32(file, 12).unwrap_or_default()) {
            (HASH_MAGIC, _) => (le, Method::Hash),
            (BTREE_MAGIC, _) => (le, Method::Btree),
            (_, HASH_MAGIC) => (be, Method::Hash),
            (_, BTREE_MAGIC) => (be, Method::Btree),
            _ => return Err(BdbError::WrongMagic(magic)),
        };
        let page_size = order.u32(file, 20).unwrap_or_default();
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(BdbError::BadPageSize(page_size));
        }
        let page_size = us(page_size);
        if file.get(24).copied().unwrap_or_default() != 0 {
            return Err(BdbError::Unsupported("encrypted database"));
        }
        if file.get(26).copied().unwrap_or_default() & DBMETA_CHKSUM != 0 {
            return Err(BdbError::Unsupported("page checksums"));
        }
        let last = order.u32(file, 32).unwrap_or_default();
        let in_file = u32::try_from(file.len().checked_div(page_size).unwrap_or_default())
            .unwrap_or(u32::MAX);
        let pages = last.saturating_add(1).min(in_file);
        Ok(Db {
            file,
            order,
            method,
            page_size,
            pages,
            used: vec![false; us(pages)],
        })
    }

    /// Page `pgno`, if it is in the file.
    fn page(&self, pgno: u32) -> Option<&'a [u8]> {
        if pgno >= self.pages {
            return None;
        }
        let start = us(pgno).checked_mul(self.page_size)?;
        self.file.get(start..start.checked_add(self.page_size)?)
    }

    /// Item `index` of page `pgno` (which has `entries` items); `None` for a deleted btree item.
    fn item(&self, pgno: u32, index: usize, entries: usize) -> Result<Option<Item<'a>>, BdbError> {
        let bad = BdbError::BadItem { page: pgno, index };
        let page = self.page(pgno).ok_or(bad.clone())?;
        let o = self.order;
        let slot = |i: usize| {
            i.checked_mul(2)
                .and_then(|n| n.checked_add(PAGE_HEADER))
                .and_then(|at| o.u16(page, at))
                .map(us)
        };
        if index >= entries {
            return Err(bad);
        }
        let header_end = entries
            .checked_mul(2)
            .and_then(|n| n.checked_add(PAGE_HEADER))
            .ok_or(bad.clone())?;
        let off = slot(index).ok_or(bad.clone())?;
        if off < header_end || off >= self.page_size {
            return Err(bad);
        }
        match self.method {
            Method::Hash => {
                // Items are packed downwards from the end of the page: one ends where the
                // previous one starts.
                let end = match index.checked_sub(1) {
                    None => self.page_size,
                    Some(prev) => slot(prev).ok_or(bad.clone())?,
                };
                if end <= off || end > self.page_size {
                    return Err(bad);
                }
                let item = page.get(off..end).ok_or(bad.clone())?;
                match item.first().copied().unwrap_or_default() {
                    H_KEYDATA => Ok(Some(Item::Inline(item.get(1..).unwrap_or_default()))),
                    H_OFFPAGE => {
                        let pgno = o.u32(item, 4).ok_or(bad.clone())?;
                        let len = o.u32(item, 8).ok_or(bad)?;
                        Ok(Some(Item::Overflow { pgno, len }))
                    }
                    kind @ (H_DUPLICATE | H_OFFDUP) => Err(BdbError::DuplicateItem {
                        page: pgno,
                        index,
                        kind,
                    }),
                    _ => Err(bad),
                }
            }
            Method::Btree => {
                let len = us(o.u16(page, off).ok_or(bad.clone())?);
                let kind = page
                    .get(off.saturating_add(2))
                    .copied()
                    .ok_or(bad.clone())?;
                if kind & B_DELETE != 0 {
                    return Ok(None);
                }
                match kind {
                    B_KEYDATA => {
                        let start = off.saturating_add(3);
                        let data = start
                            .checked_add(len)
                            .and_then(|end| page.get(start..end))
                            .ok_or(bad)?;
                        Ok(Some(Item::Inline(data)))
                    }
                    B_OVERFLOW => {
                        let pgno = o.u32(page, off.saturating_add(4)).ok_or(bad.clone())?;
                        let len = o.u32(page, off.saturating_add(8)).ok_or(bad)?;
                        Ok(Some(Item::Overflow { pgno, len }))
                    }
                    B_DUPLICATE => Err(BdbError::DuplicateItem {
                        page: pgno,
                        index,
                        kind,
                    }),
                    _ => Err(bad),
                }
            }
        }
    }

    /// The bytes of a value item found on page `on`.
    fn resolve(&mut self, on: u32, item: Item<'_>) -> Result<Vec<u8>, BdbError> {
        match item {
            Item::Inline(bytes) if bytes.len() > MAX_VALUE_LEN => Err(BdbError::ValueTooLarge {
                page: on,
                len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            }),
            Item::Inline(bytes) => Ok(bytes.to_vec()),
            Item::Overflow { pgno, len } => self.chain(on, pgno, len),
        }
    }

    /// Follow an overflow chain from `start` for `len` bytes.
    fn chain(&mut self, on: u32, start: u32, len: u32) -> Result<Vec<u8>, BdbError> {
        let want = us(len);
        if want > MAX_VALUE_LEN {
            return Err(BdbError::ValueTooLarge { page: on, len });
        }
        let bad = |page, reason| BdbError::BadOverflow {
            start,
            page,
            reason,
        };
        let mut out = Vec::with_capacity(want.min(self.file.len()));
        let mut pgno = start;
        loop {
            let page = match self.page(pgno) {
                Some(p) if pgno != 0 => p,
                _ => return Err(bad(pgno, "page outside the file")),
            };
            let used = self
                .used
                .get_mut(us(pgno))
                .ok_or(bad(pgno, "page outside the file"))?;
            if *used {
                return Err(BdbError::OverflowLoop { start, page: pgno });
            }
            *used = true;
            if page.get(25).copied() != Some(P_OVERFLOW) {
                return Err(bad(pgno, "not an overflow page"));
            }
            let n = us(self.order.u16(page, 22).unwrap_or_default());
            let data = PAGE_HEADER
                .checked_add(n)
                .and_then(|end| page.get(PAGE_HEADER..end))
                .ok_or(bad(pgno, "data length larger than the page"))?;
            out.extend_from_slice(data);
            if out.len() > want {
                return Err(bad(pgno, "chain longer than its item says"));
            }
            let next = self.order.u32(page, 16).unwrap_or_default();
            if next == 0 {
                break;
            }
            pgno = next;
        }
        if out.len() != want {
            return Err(bad(pgno, "chain shorter than its item says"));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal hash or btree database writer for the tests: page 0 metadata, one leaf page
    /// holding `pairs`, values longer than `inline_max` on overflow chains of pages after it.
    /// Real files (from `db_load`) are checked by `tests/tests/inventory.rs`.
    pub(crate) fn build(
        method_btree: bool,
        big: bool,
        page_size: usize,
        pairs: &[(&[u8], &[u8])],
        inline_max: usize,
    ) -> Vec<u8> {
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut pages: Vec<Vec<u8>> = vec![vec![0; page_size], vec![0; page_size]];
        // Items of the leaf page, packed downwards.
        let mut items: Vec<Vec<u8>> = Vec::new();
        for (k, v) in pairs {
            for (i, bytes) in [k, v].into_iter().enumerate() {
                let overflow = i == 1 && bytes.len() > inline_max;
                let item = if overflow {
                    let first = pages.len() as u32;
                    let per = page_size - PAGE_HEADER;
                    let chunks: Vec<&[u8]> = bytes.chunks(per).collect();
                    for (n, chunk) in chunks.iter().enumerate() {
                        let mut p = vec![0; page_size];
                        let me = pages.len() as u32;
                        p[8..12].copy_from_slice(&w32(me));
                        let next = if n + 1 < chunks.len() { me + 1 } else { 0 };
                        p[16..20].copy_from_slice(&w32(next));
                        p[20..22].copy_from_slice(&w16(1));
                        p[22..24].copy_from_slice(&w16(chunk.len() as u16));
                        p[25] = P_OVERFLOW;
                        p[PAGE_HEADER..PAGE_HEADER + chunk.len()].copy_from_slice(chunk);
                        pages.push(p);
                    }
                    let mut it = vec![0u8; 12];
                    if method_btree {
                        it[2] = B_OVERFLOW;
                    } else {
                        it[0] = H_OFFPAGE;
                    }
                    it[4..8].copy_from_slice(&w32(first));
                    it[8..12].copy_from_slice(&w32(bytes.len() as u32));
                    it
                } else if method_btree {
                    let mut it = Vec::new();
                    it.extend_from_slice(&w16(bytes.len() as u16));
                    it.push(B_KEYDATA);
                    it.extend_from_slice(bytes);
                    it
                } else {
                    let mut it = vec![H_KEYDATA];
                    it.extend_from_slice(bytes);
                    it
                };
                items.push(item);
            }
        }
        let leaf = &mut pages[1];
        leaf[8..12].copy_from_slice(&w32(1));
        leaf[20..22].copy_from_slice(&w16(items.len() as u16));
        leaf[25] = if method_btree { P_LBTREE } else { P_HASH };
        let mut top = page_size;
        for (i, it) in items.iter().enumerate() {
            // Btree items are 4-byte aligned in real files; hash items are contiguous.
            top -= it.len();
            if method_btree {
                top &= !3;
            }
            leaf[top..top + it.len()].copy_from_slice(it);
            leaf[PAGE_HEADER + 2 * i..PAGE_HEADER + 2 * i + 2].copy_from_slice(&w16(top as u16));
        }
        let last = (pages.len() - 1) as u32;
        let meta = &mut pages[0];
        let magic = if method_btree {
            BTREE_MAGIC
        } else {
            HASH_MAGIC
        };
        meta[12..16].copy_from_slice(&w32(magic));
        meta[16..20].copy_from_slice(&w32(9));
        meta[20..24].copy_from_slice(&w32(page_size as u32));
        meta[25] = if method_btree { 9 } else { 8 };
        meta[32..36].copy_from_slice(&w32(last));
        pages.concat()
    }

    fn pairs(long: &[u8]) -> Vec<(&[u8], &[u8])> {
        vec![
            (&[0, 0, 0, 0], &[3, 0, 0, 0]),
            (&[1, 0, 0, 0], b"short value"),
            (&[2, 0, 0, 0], long),
        ]
    }

    fn long() -> Vec<u8> {
        (0..2900u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn reads_every_layout() {
        let long = long();
        for btree in [false, true] {
            for big in [false, true] {
                let file = build(btree, big, 1024, &pairs(&long), 200);
                let got = values(&file).expect("values");
                assert_eq!(got.errors, vec![], "btree {btree} big {big}");
                assert_eq!(
                    got.values,
                    vec![b"short value".to_vec(), long.clone()],
                    "btree {btree} big {big}"
                );
            }
        }
    }

    #[test]
    fn corruptions() {
        let long = long();
        let ps = 1024usize;
        let good = || build(false, false, ps, &pairs(&long), 200);
        let good_btree = || build(true, false, ps, &pairs(&long), 200);
        let set16 = |mut f: Vec<u8>, at: usize, v: u16| {
            f[at..at + 2].copy_from_slice(&v.to_le_bytes());
            f
        };
        let set32 = |mut f: Vec<u8>, at: usize, v: u32| {
            f[at..at + 4].copy_from_slice(&v.to_le_bytes());
            f
        };
        // Leaf at page 1, the long value's chain at pages 2..=4.
        let leaf = ps;
        // Offset in the leaf page of item `i` (3: the short value, 5: the long one).
        let item_off = |f: &[u8], i: usize| {
            u16::from_le_bytes([
                f[leaf + PAGE_HEADER + 2 * i],
                f[leaf + PAGE_HEADER + 2 * i + 1],
            ]) as usize
        };
        let ov = |n: usize| n * ps;
        struct Case {
            name: &'static str,
            file: Vec<u8>,
            /// `Err(kind)` for the whole file, or `Ok((values read, error kinds))`.
            want: Result<(usize, Vec<&'static str>), &'static str>,
        }
        let cases = [
            Case {
                name: "empty file",
                file: vec![],
                want: Err("truncated"),
            },
            Case {
                name: "wrong magic",
                file: set32(good(), 12, 0x0004_0988),
                want: Err("wrong_magic"),
            },
            Case {
                name: "page size not a power of two",
                file: set32(good(), 20, 1000),
                want: Err("bad_page_size"),
            },
            Case {
                name: "page size zero",
                file: set32(good(), 20, 0),
                want: Err("bad_page_size"),
            },
            Case {
                name: "encrypted",
                file: {
                    let mut f = good();
                    f[24] = 1;
                    f
                },
                want: Err("unsupported"),
            },
            Case {
                name: "last page past the file: only what is there is read",
                file: set32(good(), 32, u32::MAX),
                want: Ok((2, vec![])),
            },
            Case {
                name: "truncated file: the chain runs out of pages",
                file: good()[..ov(3)].to_vec(),
                want: Ok((1, vec!["bad_overflow"])),
            },
            Case {
                name: "item offset inside the index",
                file: set16(good(), leaf + PAGE_HEADER + 10, 10),
                want: Ok((1, vec!["bad_item"])),
            },
            Case {
                name: "item offset past the page",
                file: set16(good(), leaf + PAGE_HEADER + 10, 0xffff),
                want: Ok((1, vec!["bad_item"])),
            },
            Case {
                name: "absurd entry count",
                file: set16(good(), leaf + 20, 0xffff),
                want: Ok((0, vec!["bad_item"])),
            },
            Case {
                name: "odd entry count",
                file: set16(good(), leaf + 20, 5),
                want: Ok((1, vec!["bad_item"])),
            },
            Case {
                name: "overflow loop",
                file: set32(good(), ov(4) + 16, 2),
                want: Ok((1, vec!["overflow_loop"])),
            },
            Case {
                name: "overflow chain into the leaf page",
                file: set32(good(), ov(4) + 16, 1),
                want: Ok((1, vec!["bad_overflow"])),
            },
            Case {
                name: "overflow chain to page 0",
                file: {
                    let f = good();
                    let off = item_off(&f, 5);
                    set32(f, leaf + off + 4, 0)
                },
                want: Ok((1, vec!["bad_overflow"])),
            },
            Case {
                name: "overflow chain ends early",
                file: set32(good(), ov(3) + 16, 0),
                want: Ok((1, vec!["bad_overflow"])),
            },
            Case {
                name: "overflow page length beyond the page",
                file: set16(good(), ov(2) + 22, 2000),
                want: Ok((1, vec!["bad_overflow"])),
            },
            Case {
                name: "absurd overflow length",
                file: {
                    // Item 5 is the long value's H_OFFPAGE.
                    let f = good();
                    let off = item_off(&f, 5);
                    set32(f, leaf + off + 8, u32::MAX)
                },
                want: Ok((1, vec!["value_too_large"])),
            },
            Case {
                name: "unknown hash item type",
                file: {
                    let mut f = good();
                    let off = item_off(&f, 3);
                    f[leaf + off] = 9;
                    f
                },
                want: Ok((1, vec!["bad_item"])),
            },
            Case {
                name: "duplicate item",
                file: {
                    let mut f = good();
                    let off = item_off(&f, 3);
                    f[leaf + off] = H_DUPLICATE;
                    f
                },
                want: Ok((1, vec!["duplicate_item"])),
            },
            Case {
                name: "btree item length past the page",
                file: {
                    let f = good_btree();
                    let off = item_off(&f, 3);
                    set16(f, leaf + off, 0xfff0)
                },
                want: Ok((1, vec!["bad_item"])),
            },
            Case {
                name: "btree deleted item is skipped",
                file: {
                    let mut f = good_btree();
                    let off = item_off(&f, 3);
                    f[leaf + off + 2] |= B_DELETE;
                    f
                },
                want: Ok((1, vec![])),
            },
        ];
        for c in cases {
            let got = values(&c.file).map(|v| {
                (
                    v.values.len(),
                    v.errors.iter().map(BdbError::kind).collect::<Vec<_>>(),
                )
            });
            assert_eq!(got.map_err(|e| e.kind()), c.want, "case {}", c.name);
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = values(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_files(edits in proptest::collection::vec((0usize..5120, any::<u8>()), 1..8), btree: bool, big: bool) {
            let long = long();
            let mut f = build(btree, big, 1024, &pairs(&long), 200);
            let len = f.len();
            for (at, byte) in edits {
                f[at % len] = byte;
            }
            let _ = values(&f);
        }
    }
}
