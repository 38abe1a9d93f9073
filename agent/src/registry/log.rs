//! Transaction log replay (new format, Windows 8.1 and later): the log entries of `*.LOG1` and
//! `*.LOG2` that continue a dirty primary file, as an in-memory overlay of pages.
//!
//! A new-format log is one sector holding a partial copy of the base block (file type 6), then
//! `HvLE` log entries from offset 512, each on a 512-byte boundary: a 40-byte header (size,
//! flags, sequence number, hive bins data size, dirty page count, two Marvin32 hashes), the dirty
//! page references (offset from the start of the hive bins data, size) and the pages. An entry
//! is valid when both hashes match and its sizes are consistent; a log is read up to its first
//! invalid entry. Entries are applied by sequence number, starting at the primary file's
//! secondary sequence number and stopping at the first one missing from both logs, whichever log
//! holds it (Windows switches logs to split entries): later pages replace earlier ones, and the
//! hive bins data size is the last applied entry's.
//!
//! It does not write anything (the overlay lives in memory only), does not read old-format logs
//! (`DIRT` dirty vectors, Windows 8 and older: such a log is ignored and the primary read as it
//! is), does not recover a primary base block with a bad checksum from the log's copy, and does
//! not heal the hive bins of a page. Spec: "Format of transaction log files" and "Multiple
//! transaction log files" in
//! <https://github.com/msuhanov/regf/blob/master/Windows%20registry%20file%20format%20specification.md>.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::collections::BTreeMap;

use super::cells::PAGE;
use super::HiveError;
use crate::bytes::{le32, le64};
use crate::fs::FileAt;

/// Where log entries start: the second 512-byte sector.
const FIRST_ENTRY: u64 = 512;
/// Log entries are aligned to, and sized in multiples of, this.
const SECTOR: u64 = 512;
/// Size of a log entry's header, before the dirty page references.
const ENTRY_HEADER: usize = 40;
/// File type of a new-format log in its base block copy.
const NEW_FORMAT_LOG: u32 = 6;
/// The Marvin32 seed the hashes use (bytes `82 EF 4D 88 7A 4E 55 C5`, little-endian).
pub const LOG_SEED: u64 = 0xC555_4E7A_884D_EF82;
/// Most bytes of log entries kept (both logs together); entries past it are not read. Real logs
/// hold a few MiB.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// Pages replayed from the logs: hive-bins offset of a 4 KiB page → its bytes.
#[derive(Debug, Default)]
pub struct Overlay {
    /// The pages, each [`PAGE`] bytes.
    pub pages: BTreeMap<u64, Vec<u8>>,
    /// The hive bins data size after the last applied entry; `None` when nothing was applied.
    pub bins_len: Option<u32>,
    /// Number of log entries applied.
    pub applied: u32,
}

/// One valid log entry, its pages read.
struct Entry {
    seq: u32,
    bins_len: u32,
    /// (hive-bins offset, page bytes), in the order listed.
    pages: Vec<(u64, Vec<u8>)>,
}

/// Replay `logs` (in `LOG1`, `LOG2` order) over a primary whose secondary sequence number is
/// `secondary`. Invalid logs and entries only end the replay early.
///
/// # Errors
///
/// Only device errors ([`HiveError::Device`]) reading a log.
pub fn replay(secondary: u32, logs: &[&dyn FileAt]) -> Result<Overlay, HiveError> {
    let mut budget = MAX_LOG_BYTES;
    let mut entries = Vec::new();
    for log in logs {
        entries.extend(read_log(*log, &mut budget)?);
    }
    let mut overlay = Overlay::default();
    let mut want = secondary;
    while let Some(i) = entries.iter().position(|e| e.seq == want) {
        let entry = entries.swap_remove(i);
        overlay.bins_len = Some(entry.bins_len);
        overlay.pages.extend(entry.pages);
        overlay.applied = overlay.applied.saturating_add(1);
        let Some(next) = want.checked_add(1) else {
            break;
        };
        want = next;
    }
    Ok(overlay)
}

/// The valid entries of one log, up to the first invalid one; none when it is not a new-format
/// log. Each entry read is taken from `budget`.
fn read_log(log: &dyn FileAt, budget: &mut u64) -> Result<Vec<Entry>, HiveError> {
    let mut head = [0u8; 512];
    if !read_fully(log, 0, &mut head)?
        || head.get(..4) != Some(b"regf")
        || le32(&head, 0x1C) != Some(NEW_FORMAT_LOG)
    {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut at = FIRST_ENTRY;
    while let Some(entry) = read_entry(log, at, budget)? {
        at = match at.checked_add(entry.1) {
            Some(next) => next,
            None => break,
        };
        out.push(entry.0);
    }
    Ok(out)
}

/// The entry at `at` and its size; `None` when it is absent or invalid.
fn read_entry(
    log: &dyn FileAt,
    at: u64,
    budget: &mut u64,
) -> Result<Option<(Entry, u64)>, HiveError> {
    let mut header = [0u8; ENTRY_HEADER];
    if !read_fully(log, at, &mut header)? || header.get(..4) != Some(b"HvLE") {
        return Ok(None);
    }
    let field = |off| le32(&header, off).unwrap_or(0);
    let size = u64::from(field(4));
    let (seq, bins_len, count) = (field(12), field(16), field(20));
    let fits = at
        .checked_add(size)
        .is_some_and(|end| end <= log.len() && size <= *budget);
    if size < 512
        || !size.is_multiple_of(SECTOR)
        || !fits
        || !u64::from(bins_len).is_multiple_of(PAGE)
    {
        return Ok(None);
    }
    let mut data = vec![0u8; usize::try_from(size).map_err(|_| HiveError::limit("log entry"))?];
    if !read_fully(log, at, &mut data)? {
        return Ok(None);
    }
    *budget = budget.saturating_sub(size);
    let hash1 = le64(&data, 24);
    let hash2 = le64(&data, 32);
    if hash1
        != data
            .get(ENTRY_HEADER..)
            .map(|rest| marvin32(LOG_SEED, rest))
        || hash2 != data.get(..32).map(|first| marvin32(LOG_SEED, first))
    {
        return Ok(None);
    }
    Ok(pages(&data, count, bins_len).map(|pages| {
        let entry = Entry {
            seq,
            bins_len,
            pages,
        };
        (entry, size)
    }))
}

/// The dirty pages of a hash-checked entry `data`, split into 4 KiB pages; `None` when the
/// references do not fit the entry or the hive bins data size, or are not page-aligned.
fn pages(data: &[u8], count: u32, bins_len: u32) -> Option<Vec<(u64, Vec<u8>)>> {
    let count = usize::try_from(count).ok()?;
    let refs_len = count.checked_mul(8)?;
    let mut page_at = ENTRY_HEADER.checked_add(refs_len)?;
    let page = usize::try_from(PAGE).ok()?;
    let mut out = Vec::new();
    for i in 0..count {
        let r = ENTRY_HEADER.checked_add(i.checked_mul(8)?)?;
        let offset = le32(data, r)?;
        let size = le32(data, r.checked_add(4)?)?;
        let end = offset.checked_add(size)?;
        if u64::from(offset) % PAGE != 0 || u64::from(size) % PAGE != 0 || end > bins_len {
            return None;
        }
        let body = crate::bytes::get(data, page_at, usize::try_from(size).ok()?)?;
        for (n, chunk) in body.chunks_exact(page).enumerate() {
            let n = u64::try_from(n).ok()?;
            let off = u64::from(offset).checked_add(n.checked_mul(PAGE)?)?;
            out.push((off, chunk.to_vec()));
        }
        page_at = page_at.checked_add(body.len())?;
    }
    Some(out)
}

/// Fill `buf` from `at`; `false` when the file ends first.
fn read_fully(file: &dyn FileAt, at: u64, buf: &mut [u8]) -> Result<bool, HiveError> {
    let n = file.read_at(at, buf).map_err(HiveError::from_fs)?;
    Ok(n == buf.len())
}

/// Marvin32 (the hash Windows uses for log entries) of `data` with `seed`: the data as
/// little-endian 32-bit words plus a padded tail, each mixed into two 32-bit lanes.
pub fn marvin32(seed: u64, data: &[u8]) -> u64 {
    let lo_hi = seed.to_le_bytes();
    let lane = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(0);
    let mut lo = lane(lo_hi.get(..4).unwrap_or_default());
    let mut hi = lane(lo_hi.get(4..).unwrap_or_default());
    let words = data.chunks_exact(4);
    let tail = words.remainder();
    for word in words {
        lo = lo.wrapping_add(lane(word));
        mix(&mut lo, &mut hi);
    }
    // The tail bytes, then a 0x80 byte, as one more word.
    let mut last = [0u8; 4];
    for (slot, b) in last.iter_mut().zip(tail) {
        *slot = *b;
    }
    if let Some(slot) = last.get_mut(tail.len()) {
        *slot = 0x80;
    }
    lo = lo.wrapping_add(u32::from_le_bytes(last));
    mix(&mut lo, &mut hi);
    mix(&mut lo, &mut hi);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// One Marvin32 mixing round over the two lanes.
fn mix(lo: &mut u32, hi: &mut u32) {
    *hi ^= *lo;
    *lo = lo.rotate_left(20);
    *lo = lo.wrapping_add(*hi);
    *hi = hi.rotate_left(9);
    *hi ^= *lo;
    *lo = lo.rotate_left(27);
    *lo = lo.wrapping_add(*hi);
    *hi = hi.rotate_left(19);
}

/// A log entry to write: sequence number, hive bins data size, pages (offset, bytes).
#[cfg(test)]
pub type TestEntry = (u32, u32, Vec<(u32, Vec<u8>)>);

/// Bytes of a new-format log holding `entries` (sequence number, hive bins data size, dirty
/// pages as (hive-bins offset, bytes)), after the primary's base block `base` (its file type
/// set to 6): what the unit tests replay.
#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
pub fn write_log(base: &[u8], entries: &[TestEntry]) -> Vec<u8> {
    let mut out = base[..512].to_vec();
    out[0x1C..0x20].copy_from_slice(&NEW_FORMAT_LOG.to_le_bytes());
    for (seq, bins_len, pages) in entries {
        let mut e = vec![0u8; ENTRY_HEADER];
        e[..4].copy_from_slice(b"HvLE");
        e[12..16].copy_from_slice(&seq.to_le_bytes());
        e[16..20].copy_from_slice(&bins_len.to_le_bytes());
        e[20..24].copy_from_slice(&(pages.len() as u32).to_le_bytes());
        for (off, bytes) in pages {
            e.extend(off.to_le_bytes());
            e.extend((bytes.len() as u32).to_le_bytes());
        }
        for (_, bytes) in pages {
            e.extend(bytes);
        }
        e.resize(e.len().next_multiple_of(512), 0);
        let size = e.len() as u32;
        e[4..8].copy_from_slice(&size.to_le_bytes());
        let h1 = marvin32(LOG_SEED, &e[ENTRY_HEADER..]);
        e[24..32].copy_from_slice(&h1.to_le_bytes());
        let h2 = marvin32(LOG_SEED, &e[..32]);
        e[32..40].copy_from_slice(&h2.to_le_bytes());
        out.extend(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marvin32_known_answers() {
        // The .NET runtime's Marvin test vectors.
        const SEED: u64 = 0x004F_B61A_001B_DBCC;
        let cases: [(&str, u64, &[u8], u64); 9] = [
            ("empty", SEED, b"", 0x30ed_35c1_00cd_3c7d),
            ("1 byte", SEED, &[0xaf], 0x48e7_3fc7_7d75_ddc1),
            ("2 bytes", SEED, &[0xe7, 0x0f], 0xb5f6_e1fc_485d_bff8),
            ("3 bytes", SEED, &[0x37, 0xf4, 0x95], 0xf0b0_7c78_9b8c_f7e8),
            (
                "4 bytes",
                SEED,
                &[0x86, 0x42, 0xdc, 0x59],
                0x7008_f2e8_7e9c_f556,
            ),
            (
                "5 bytes",
                SEED,
                &[0x15, 0x3f, 0xb7, 0x98, 0x26],
                0xe6c0_8c6d_a2af_a997,
            ),
            (
                "6 bytes",
                SEED,
                &[0x09, 0x32, 0xe6, 0x24, 0x6c, 0x47],
                0x6f04_bf1a_5ea2_4060,
            ),
            (
                "7 bytes",
                SEED,
                &[0xab, 0x42, 0x7e, 0xa8, 0xd1, 0x0f, 0xc7],
                0xe118_47e4_f067_8c41,
            ),
            ("abc", 0xd53c_d9ce_cd08_93b7, b"abc", 0x22c7_4339_4927_69bf),
        ];
        for (name, seed, data, want) in cases {
            assert_eq!(marvin32(seed, data), want, "case {name}");
        }
    }
}
