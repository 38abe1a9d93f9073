//! A lazy, read-only reader of Windows registry hives (regf), for OS detection and the program
//! inventory.
//!
//! [`Hive::open`] reads the 4 KiB base block of a primary file and, when the hive is dirty (its
//! sequence numbers differ or its checksum is wrong, as in a snapshot of a running system), replays
//! the new-format transaction logs beside it (`SOFTWARE.LOG1`, `SOFTWARE.LOG2`) in memory (see
//! [`log`]). Everything else is read on demand through positioned reads, a cell at a time, with a
//! small page cache ([`cells`]): looking up `Microsoft\Windows NT\CurrentVersion` in a 100 MiB
//! `SOFTWARE` hive reads a few pages, and memory does not grow with the hive.
//!
//! What it reads: key nodes (`nk`, names ASCII-compressed or UTF-16LE, compared
//! case-insensitively), subkey lists (`lf`, `lh` with their hash used to skip non-matching subkeys,
//! `li`, and `ri` index roots of those), value lists and values (`vk`: data inline in the value for
//! at most 4 bytes, in one data cell, or in `db` big-data segments for more than 16344 bytes in
//! hives of version 1.4 and later), decoded as `REG_SZ`/`REG_EXPAND_SZ` strings, `REG_DWORD` and
//! `REG_QWORD`.
//!
//! What it does not: write, follow symbolic links between keys, read security (`sk`) or class
//! names, list deleted (free) cells, read volatile subkeys (they are never on disk), replay
//! old-format (`DIRT`) logs, or check `hbin` headers. The hive is untrusted: every offset and size
//! is checked (no panics, no `unsafe`), a cell is at most [`cells::MAX_CELL`] bytes, a value's data
//! at most what the caller allows, a subkey listing at most what the caller allows, a lookup visits
//! one subkey list per path component (an `ri` inside an `ri` is refused) and a listing one list,
//! so a cell loop cannot make the work unbounded. Device errors ([`HiveError::Device`]) stay apart
//! from a corrupt hive. Spec: Maxim Suhanov, "Windows registry file format specification",
//! <https://github.com/msuhanov/regf/blob/master/Windows%20registry%20file%20format%20specification.md>.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

pub mod cells;
pub mod log;

use cells::{BaseBlock, Cells};

use crate::bytes::{get, le16, le32, le64};
use crate::fs::{FileAt, FsError, RootFs};

/// `nk` flag: the name is stored one byte a character (Latin-1).
const KEY_COMP_NAME: u16 = 0x0020;
/// `vk` flag: the name is stored one byte a character (Latin-1).
const VALUE_COMP_NAME: u16 = 0x0001;
/// `vk` data size bit: the data sits in the data offset field itself.
const DATA_INLINE: u32 = 0x8000_0000;
/// Most data one cell holds; more is stored as big data (hive version 1.4 and later).
const MAX_CELL_DATA: u32 = 16344;
/// "No cell" in an offset field.
const NO_CELL: u32 = u32::MAX;
/// Most values looked at in one key.
pub const MAX_VALUES: u32 = 65_536;
/// `REG_SZ`.
pub const REG_SZ: u32 = 1;
/// `REG_EXPAND_SZ`.
pub const REG_EXPAND_SZ: u32 = 2;
/// `REG_DWORD`.
pub const REG_DWORD: u32 = 4;
/// `REG_QWORD`.
pub const REG_QWORD: u32 = 11;

/// Why a hive could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HiveError {
    /// The device failed or the parse was stopped ([`FsError::is_device_error`]): stop reading
    /// the volume.
    #[error("reading the hive failed: {0}")]
    Device(FsError),
    /// The file could not be opened or read (absent, not a file...), not a device error.
    #[error("cannot open the hive: {0}")]
    File(FsError),
    /// The hive's structures are inconsistent.
    #[error("corrupt hive: {0}")]
    Corrupt(String),
    /// The hive uses something this reader does not read.
    #[error("unsupported hive: {0}")]
    Unsupported(String),
    /// A bound of the reader (or the caller's) was reached.
    #[error("hive read limit reached: {0}")]
    Limit(String),
}

impl HiveError {
    /// Classify a file error: device errors apart from the rest.
    pub fn from_fs(e: FsError) -> HiveError {
        if e.is_device_error() {
            HiveError::Device(e)
        } else {
            HiveError::File(e)
        }
    }

    /// Whether this is a device error, which stops what reads the volume.
    pub fn is_device_error(&self) -> bool {
        matches!(self, HiveError::Device(_))
    }

    /// The device error inside, if this is one.
    pub fn into_device_error(self) -> Option<FsError> {
        match self {
            HiveError::Device(e) => Some(e),
            _ => None,
        }
    }

    /// A short stable label for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            HiveError::Device(_) => "device",
            HiveError::File(_) => "file",
            HiveError::Corrupt(_) => "corrupt",
            HiveError::Unsupported(_) => "unsupported",
            HiveError::Limit(_) => "limit",
        }
    }

    fn corrupt(offset: u32, what: &str) -> HiveError {
        HiveError::Corrupt(format!("{what} (cell {offset:#x})"))
    }

    fn limit(what: &str) -> HiveError {
        HiveError::Limit(what.to_owned())
    }
}

/// An opened hive: its base block read, its logs replayed.
#[derive(Debug)]
pub struct Hive<'a> {
    cells: Cells<'a>,
    base: BaseBlock,
    replayed: u32,
}

impl<'a> Hive<'a> {
    /// Open the hive at `path` of `fs`, replaying `path.LOG1` then `path.LOG2` when it is dirty
    /// (a log that is absent or unreadable, other than by a device error, is skipped).
    ///
    /// # Errors
    ///
    /// [`HiveError::File`] when the primary file cannot be opened, [`HiveError::Device`] on a
    /// device error, [`HiveError::Corrupt`]/[`HiveError::Unsupported`] for a bad base block.
    pub fn open_path(fs: &'a dyn RootFs, path: &str) -> Result<Hive<'a>, HiveError> {
        let primary = fs.open(path).map_err(HiveError::from_fs)?;
        let mut logs = Vec::new();
        // A clean hive's logs are never read, so not even looked up.
        let dirty = read_base(&*primary)?.is_dirty();
        for ext in ["LOG1", "LOG2"].into_iter().filter(|_| dirty) {
            match fs.open(&format!("{path}.{ext}")) {
                Ok(log) => logs.push(log),
                Err(e) if e.is_device_error() => return Err(HiveError::Device(e)),
                Err(_) => {}
            }
        }
        let logs: Vec<&dyn FileAt> = logs.iter().map(|l| &**l).collect();
        Hive::open(primary, &logs)
    }

    /// Open a primary file, with its transaction logs in `LOG1`, `LOG2` order (used only when
    /// the hive is dirty).
    ///
    /// # Errors
    ///
    /// As [`Hive::open_path`].
    pub fn open(
        primary: Box<dyn FileAt + 'a>,
        logs: &[&dyn FileAt],
    ) -> Result<Hive<'a>, HiveError> {
        let base = read_base(&*primary)?;
        let overlay = if base.is_dirty() {
            log::replay(base.secondary_seq, logs)?
        } else {
            log::Overlay::default()
        };
        let replayed = overlay.applied;
        Ok(Hive {
            cells: Cells::new(primary, base.bins_len, overlay),
            base,
            replayed,
        })
    }

    /// Number of log entries replayed (0 for a clean hive).
    pub fn replayed(&self) -> u32 {
        self.replayed
    }

    /// Whether the primary file is dirty (its sequence numbers differ or its checksum is wrong).
    pub fn is_dirty(&self) -> bool {
        self.base.is_dirty()
    }

    /// The root key.
    ///
    /// # Errors
    ///
    /// [`HiveError::Corrupt`] when the root cell is not a key node; device errors.
    pub fn root(&self) -> Result<Key<'_>, HiveError> {
        self.key_at(self.base.root)
    }

    /// The key at `path` below the root (`\`-separated, case-insensitive); `Ok(None)` when a
    /// component is absent.
    ///
    /// # Errors
    ///
    /// As [`Key::subkey`].
    pub fn key(&self, path: &str) -> Result<Option<Key<'_>>, HiveError> {
        self.root()?.subpath(path)
    }

    fn key_at(&self, offset: u32) -> Result<Key<'_>, HiveError> {
        let nk = self.cells.cell(offset)?;
        if nk.get(..2) != Some(b"nk") || nk.len() < 0x4C {
            return Err(HiveError::corrupt(offset, "not a key node"));
        }
        Ok(Key {
            hive: self,
            offset,
            nk,
        })
    }
}

/// The base block of a primary file.
fn read_base(primary: &dyn FileAt) -> Result<BaseBlock, HiveError> {
    let mut head = [0u8; 512];
    let n = primary.read_at(0, &mut head).map_err(HiveError::from_fs)?;
    BaseBlock::parse(head.get(..n).unwrap_or_default())
}

/// One key (`nk` cell) of a [`Hive`].
#[derive(Debug)]
pub struct Key<'h> {
    hive: &'h Hive<'h>,
    offset: u32,
    nk: Vec<u8>,
}

impl<'h> Key<'h> {
    fn field(&self, off: usize) -> u32 {
        // OK to default: `key_at` checked that the 0x4C-byte header is there.
        le32(&self.nk, off).unwrap_or(NO_CELL)
    }

    /// The key's name (lossily decoded).
    ///
    /// # Errors
    ///
    /// [`HiveError::Corrupt`] when the name does not fit the cell.
    pub fn name(&self) -> Result<String, HiveError> {
        let flags = le16(&self.nk, 2).unwrap_or(0);
        let len = usize::from(le16(&self.nk, 0x48).unwrap_or(0));
        let raw = get(&self.nk, 0x4C, len)
            .ok_or_else(|| HiveError::corrupt(self.offset, "key name past its cell"))?;
        Ok(decode_name(raw, flags & KEY_COMP_NAME != 0))
    }

    /// The subkey called `name` (case-insensitive); `Ok(None)` when absent.
    ///
    /// # Errors
    ///
    /// [`HiveError::Corrupt`] for a bad subkey list or key node on the way; device errors.
    pub fn subkey(&self, name: &str) -> Result<Option<Key<'h>>, HiveError> {
        let wanted = upcase(name);
        // The lh hash is of the uppercase name; Windows' table agrees with ours for ASCII.
        let hash = name.is_ascii().then(|| lh_hash(&wanted));
        let mut found = None;
        self.for_each_subkey(u32::MAX, &mut |cell, lh| {
            if let (Some(want), Some(h)) = (hash, lh) {
                if want != h {
                    return Ok(true);
                }
            }
            let key = self.hive.key_at(cell)?;
            if upcase(&key.name()?) == wanted {
                found = Some(key);
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// The key at `path` below this one (`\`-separated; empty components skipped).
    ///
    /// # Errors
    ///
    /// As [`Key::subkey`].
    pub fn subpath(&self, path: &str) -> Result<Option<Key<'h>>, HiveError> {
        let mut key = Key {
            hive: self.hive,
            offset: self.offset,
            nk: self.nk.clone(),
        };
        for component in path.split('\\').filter(|c| !c.is_empty()) {
            match key.subkey(component)? {
                Some(sub) => key = sub,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    /// At most `max` subkeys, in stored order (sorted by uppercase name).
    ///
    /// # Errors
    ///
    /// As [`Key::subkey`]: one bad subkey fails the listing.
    pub fn subkeys(&self, max: usize) -> Result<Vec<Key<'h>>, HiveError> {
        let mut out = Vec::new();
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        self.for_each_subkey(max, &mut |cell, _| {
            out.push(self.hive.key_at(cell)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Call `f` with the cell (and `lh` name hash, if listed in an `lh`) of each subkey until it
    /// returns `false`, at most `max` times and never more than the key's subkey count.
    fn for_each_subkey(
        &self,
        max: u32,
        f: &mut dyn FnMut(u32, Option<u32>) -> Result<bool, HiveError>,
    ) -> Result<(), HiveError> {
        let count = self.field(0x14);
        let list = self.field(0x1C);
        if count == 0 || list == NO_CELL {
            return Ok(());
        }
        let mut left = count.min(max);
        self.walk_list(list, true, &mut left, f).map(|_| ())
    }

    /// Walk one subkey list; `Ok(false)` once `f` stopped or `left` ran out.
    fn walk_list(
        &self,
        list: u32,
        allow_ri: bool,
        left: &mut u32,
        f: &mut dyn FnMut(u32, Option<u32>) -> Result<bool, HiveError>,
    ) -> Result<bool, HiveError> {
        let body = self.hive.cells.cell(list)?;
        let n = usize::from(le16(&body, 2).unwrap_or(0));
        let (stride, kind) = match body.get(..2) {
            Some(b"lf") => (8, ListKind::Lf),
            Some(b"lh") => (8, ListKind::Lh),
            Some(b"li") => (4, ListKind::Li),
            Some(b"ri") if allow_ri => (4, ListKind::Ri),
            _ => return Err(HiveError::corrupt(list, "not a subkey list")),
        };
        let items = get(&body, 4, n.saturating_mul(stride))
            .ok_or_else(|| HiveError::corrupt(list, "subkey list past its cell"))?;
        for item in items.chunks_exact(stride) {
            if *left == 0 {
                return Ok(false);
            }
            let cell = le32(item, 0).unwrap_or(NO_CELL);
            let go_on = match kind {
                ListKind::Ri => self.walk_list(cell, false, left, f)?,
                ListKind::Lh => {
                    *left = left.saturating_sub(1);
                    f(cell, le32(item, 4))?
                }
                ListKind::Lf | ListKind::Li => {
                    *left = left.saturating_sub(1);
                    f(cell, None)?
                }
            };
            if !go_on {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The value called `name` (`""` is the default value; case-insensitive); `Ok(None)` when
    /// absent.
    ///
    /// # Errors
    ///
    /// [`HiveError::Corrupt`] for a bad value list or value cell; device errors.
    pub fn value(&self, name: &str) -> Result<Option<Value<'h>>, HiveError> {
        let count = self.field(0x24);
        let list = self.field(0x28);
        if count == 0 || list == NO_CELL {
            return Ok(None);
        }
        if count > MAX_VALUES {
            return Err(HiveError::limit(
                "more values in one key than the reader looks at",
            ));
        }
        let body = self.hive.cells.cell(list)?;
        let len = usize::try_from(count).map_err(|_| HiveError::limit("value count"))?;
        let items = get(&body, 0, len.saturating_mul(4))
            .ok_or_else(|| HiveError::corrupt(list, "value list past its cell"))?;
        let wanted = upcase(name);
        for item in items.chunks_exact(4) {
            let cell = le32(item, 0).unwrap_or(NO_CELL);
            let value = self.value_at(cell)?;
            if upcase(&value.name()?) == wanted {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    fn value_at(&self, offset: u32) -> Result<Value<'h>, HiveError> {
        let vk = self.hive.cells.cell(offset)?;
        if vk.get(..2) != Some(b"vk") || vk.len() < 0x14 {
            return Err(HiveError::corrupt(offset, "not a key value"));
        }
        Ok(Value {
            hive: self.hive,
            offset,
            vk,
        })
    }
}

/// The kinds of subkey lists.
#[derive(Debug, Clone, Copy)]
enum ListKind {
    Lf,
    Lh,
    Li,
    Ri,
}

/// One value (`vk` cell) of a key; its data is read on demand.
#[derive(Debug)]
pub struct Value<'h> {
    hive: &'h Hive<'h>,
    offset: u32,
    vk: Vec<u8>,
}

impl Value<'_> {
    /// The value's name (`""` for the default value).
    ///
    /// # Errors
    ///
    /// [`HiveError::Corrupt`] when the name does not fit the cell.
    pub fn name(&self) -> Result<String, HiveError> {
        let len = usize::from(le16(&self.vk, 2).unwrap_or(0));
        let flags = le16(&self.vk, 0x10).unwrap_or(0);
        let raw = get(&self.vk, 0x14, len)
            .ok_or_else(|| HiveError::corrupt(self.offset, "value name past its cell"))?;
        Ok(decode_name(raw, flags & VALUE_COMP_NAME != 0))
    }

    /// The `REG_*` type code.
    pub fn data_type(&self) -> u32 {
        le32(&self.vk, 0x0C).unwrap_or(0)
    }

    /// The size of the data in bytes, as recorded.
    pub fn data_len(&self) -> u32 {
        le32(&self.vk, 4).unwrap_or(0) & !DATA_INLINE
    }

    /// The raw data, refused when longer than `max` bytes.
    ///
    /// # Errors
    ///
    /// [`HiveError::Limit`] above `max`; [`HiveError::Corrupt`] when the data cells do not
    /// hold the recorded size; device errors.
    pub fn data(&self, max: u32) -> Result<Vec<u8>, HiveError> {
        let size = le32(&self.vk, 4).unwrap_or(0);
        let offset = le32(&self.vk, 8).unwrap_or(NO_CELL);
        let len = size & !DATA_INLINE;
        if len > max {
            return Err(HiveError::limit("value data larger than the caller allows"));
        }
        let n = usize::try_from(len).map_err(|_| HiveError::limit("value size"))?;
        if size & DATA_INLINE != 0 {
            return get(&offset.to_le_bytes(), 0, n)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| HiveError::corrupt(self.offset, "inline data over 4 bytes"));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let cells = &self.hive.cells;
        let body = cells.cell(offset)?;
        if len > MAX_CELL_DATA && self.hive.base.minor >= 4 && body.get(..2) == Some(b"db") {
            return self.big_data(&body, offset, n);
        }
        get(&body, 0, n)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| HiveError::corrupt(offset, "value data past its cell"))
    }

    /// `n` bytes of big data from the `db` cell `db` at `offset`.
    fn big_data(&self, db: &[u8], offset: u32, n: usize) -> Result<Vec<u8>, HiveError> {
        let cells = &self.hive.cells;
        let segments = usize::from(le16(db, 2).unwrap_or(0));
        let list = cells.cell(le32(db, 4).unwrap_or(NO_CELL))?;
        let items = get(&list, 0, segments.saturating_mul(4))
            .ok_or_else(|| HiveError::corrupt(offset, "segment list past its cell"))?;
        let per_segment = usize::try_from(MAX_CELL_DATA).unwrap_or(16344);
        let mut out = Vec::with_capacity(n);
        for item in items.chunks_exact(4) {
            let want = n.saturating_sub(out.len()).min(per_segment);
            if want == 0 {
                break;
            }
            let segment = le32(item, 0).unwrap_or(NO_CELL);
            let body = cells.cell(segment)?;
            let part = get(&body, 0, want)
                .ok_or_else(|| HiveError::corrupt(segment, "big data segment too short"))?;
            out.extend_from_slice(part);
        }
        if out.len() != n {
            return Err(HiveError::corrupt(
                offset,
                "big data shorter than its value",
            ));
        }
        Ok(out)
    }

    /// The data as a string: `REG_SZ` or `REG_EXPAND_SZ`, UTF-16LE up to the first NUL, at
    /// most `max` bytes of data; `Ok(None)` for another type.
    ///
    /// # Errors
    ///
    /// As [`Value::data`].
    pub fn string(&self, max: u32) -> Result<Option<String>, HiveError> {
        if !matches!(self.data_type(), REG_SZ | REG_EXPAND_SZ) {
            return Ok(None);
        }
        Ok(Some(crate::bytes::utf16z(&self.data(max)?)))
    }

    /// The data as a `REG_DWORD`; `Ok(None)` for another type or size.
    ///
    /// # Errors
    ///
    /// As [`Value::data`].
    pub fn dword(&self) -> Result<Option<u32>, HiveError> {
        if self.data_type() != REG_DWORD || self.data_len() != 4 {
            return Ok(None);
        }
        Ok(le32(&self.data(4)?, 0))
    }

    /// The data as a `REG_QWORD`; `Ok(None)` for another type or size.
    ///
    /// # Errors
    ///
    /// As [`Value::data`].
    pub fn qword(&self) -> Result<Option<u64>, HiveError> {
        if self.data_type() != REG_QWORD || self.data_len() != 8 {
            return Ok(None);
        }
        Ok(le64(&self.data(8)?, 0))
    }
}

/// A stored name: Latin-1 one byte a character when `compressed`, else UTF-16LE.
fn decode_name(raw: &[u8], compressed: bool) -> String {
    if compressed {
        raw.iter().map(|&b| char::from(b)).collect()
    } else {
        let units = raw.chunks_exact(2).filter_map(|c| le16(c, 0));
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
}

/// The name as the registry compares it: UTF-16 code units, each character uppercased when its
/// uppercase is a single BMP character.
fn upcase(name: &str) -> Vec<u16> {
    let mut out = Vec::with_capacity(name.len());
    for c in name.chars() {
        let mut upper = c.to_uppercase();
        let one = match (upper.next(), upper.next()) {
            (Some(u), None) if u.len_utf16() == 1 => u,
            _ => c,
        };
        let mut buf = [0u16; 2];
        out.extend_from_slice(one.encode_utf16(&mut buf));
    }
    out
}

/// The `lh` hash: `h = 37 * h + unit` over the uppercase name's UTF-16 code units.
fn lh_hash(upper: &[u16]) -> u32 {
    upper
        .iter()
        .fold(0u32, |h, &u| h.wrapping_mul(37).wrapping_add(u32::from(u)))
}

#[cfg(test)]
// Test code builds hives from trusted constants.
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
mod tests {
    use super::*;

    /// A hive file held in memory.
    pub(crate) struct Mem(pub Vec<u8>);

    impl FileAt for Mem {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
    }

    /// How a test key stores its subkey list.
    #[derive(Clone, Copy)]
    enum List {
        Lh,
        Lf,
        Li,
        /// An `ri` over `li` lists of two entries each.
        Ri,
    }

    /// A key to lay out: name, values (name, type, data), subkeys.
    struct K {
        name: &'static str,
        list: List,
        values: Vec<(&'static str, u32, Vec<u8>)>,
        subs: Vec<K>,
    }

    fn k(name: &'static str, values: Vec<(&'static str, u32, Vec<u8>)>, subs: Vec<K>) -> K {
        K {
            name,
            list: List::Lh,
            values,
            subs,
        }
    }

    fn sz(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// The hint a subkey list stores after each cell, from the uppercase name.
    type Hint = fn(&str) -> Option<[u8; 4]>;

    /// Cells appended to one growing hive bin.
    #[derive(Default)]
    struct Bins(Vec<u8>);

    impl Bins {
        fn cell(&mut self, body: &[u8]) -> u32 {
            if self.0.is_empty() {
                self.0.extend(b"hbin");
                self.0.resize(32, 0);
            }
            let at = self.0.len() as u32;
            let size = (4 + body.len()).next_multiple_of(8);
            self.0.extend((-(size as i32)).to_le_bytes());
            self.0.extend(body);
            self.0.resize(at as usize + size, 0);
            at
        }

        fn key(&mut self, key: &K) -> u32 {
            let mut value_cells = Vec::new();
            for (name, ty, data) in &key.values {
                let (size, off) = if data.len() <= 4 {
                    let mut inline = [0u8; 4];
                    inline[..data.len()].copy_from_slice(data);
                    (data.len() as u32 | DATA_INLINE, u32::from_le_bytes(inline))
                } else if data.len() > MAX_CELL_DATA as usize {
                    let segs: Vec<u8> = data
                        .chunks(MAX_CELL_DATA as usize)
                        .flat_map(|c| self.cell(c).to_le_bytes())
                        .collect();
                    let count = (segs.len() / 4) as u16;
                    let list = self.cell(&segs);
                    let mut db = b"db".to_vec();
                    db.extend(count.to_le_bytes());
                    db.extend(list.to_le_bytes());
                    (data.len() as u32, self.cell(&db))
                } else {
                    (data.len() as u32, self.cell(data))
                };
                let mut vk = b"vk".to_vec();
                vk.extend((name.len() as u16).to_le_bytes());
                vk.extend(size.to_le_bytes());
                vk.extend(off.to_le_bytes());
                vk.extend(ty.to_le_bytes());
                vk.extend(VALUE_COMP_NAME.to_le_bytes());
                vk.extend([0, 0]);
                vk.extend(name.as_bytes());
                value_cells.extend(self.cell(&vk).to_le_bytes());
            }
            let values = if value_cells.is_empty() {
                NO_CELL
            } else {
                self.cell(&value_cells)
            };
            let mut subs: Vec<(String, u32)> = key
                .subs
                .iter()
                .map(|s| (s.name.to_uppercase(), self.key(s)))
                .collect();
            subs.sort();
            let list = if subs.is_empty() {
                NO_CELL
            } else {
                self.list(key.list, &subs)
            };
            let mut nk = vec![0u8; 0x4C];
            nk[..2].copy_from_slice(b"nk");
            nk[2..4].copy_from_slice(&KEY_COMP_NAME.to_le_bytes());
            nk[0x14..0x18].copy_from_slice(&(subs.len() as u32).to_le_bytes());
            nk[0x1C..0x20].copy_from_slice(&list.to_le_bytes());
            nk[0x24..0x28].copy_from_slice(&(key.values.len() as u32).to_le_bytes());
            nk[0x28..0x2C].copy_from_slice(&values.to_le_bytes());
            nk[0x48..0x4A].copy_from_slice(&(key.name.len() as u16).to_le_bytes());
            nk.extend(key.name.as_bytes());
            self.cell(&nk)
        }

        fn list(&mut self, kind: List, subs: &[(String, u32)]) -> u32 {
            let (sig, hint): (&[u8], Hint) = match kind {
                List::Lh => (b"lh", |n| {
                    let units: Vec<u16> = n.encode_utf16().collect();
                    Some(lh_hash(&units).to_le_bytes())
                }),
                List::Lf => (b"lf", |n| {
                    let mut h = [0u8; 4];
                    for (d, s) in h.iter_mut().zip(n.bytes()) {
                        *d = s;
                    }
                    Some(h)
                }),
                List::Li => (b"li", |_| None),
                List::Ri => {
                    let leaves: Vec<u8> = subs
                        .chunks(2)
                        .flat_map(|c| self.list(List::Li, c).to_le_bytes())
                        .collect();
                    let mut ri = b"ri".to_vec();
                    ri.extend(((leaves.len() / 4) as u16).to_le_bytes());
                    ri.extend(leaves);
                    return self.cell(&ri);
                }
            };
            let mut body = sig.to_vec();
            body.extend((subs.len() as u16).to_le_bytes());
            for (name, cell) in subs {
                body.extend(cell.to_le_bytes());
                if let Some(h) = hint(name) {
                    body.extend(h);
                }
            }
            self.cell(&body)
        }
    }

    /// A hive file (version 1.5, sequence numbers `seq`) with `root` as its root key.
    fn hive_bytes(root: &K, seq: (u32, u32)) -> Vec<u8> {
        let mut bins = Bins::default();
        let root_cell = bins.key(root);
        finish(bins, root_cell, seq)
    }

    /// A hive file of `bins` with `root_cell` as its root key.
    fn finish(bins: Bins, root_cell: u32, seq: (u32, u32)) -> Vec<u8> {
        let mut data = bins.0;
        data.resize(data.len().next_multiple_of(4096), 0);
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(b"regf");
        b[4..8].copy_from_slice(&seq.0.to_le_bytes());
        b[8..12].copy_from_slice(&seq.1.to_le_bytes());
        b[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        b[0x18..0x1C].copy_from_slice(&5u32.to_le_bytes());
        b[0x20..0x24].copy_from_slice(&1u32.to_le_bytes());
        b[0x24..0x28].copy_from_slice(&root_cell.to_le_bytes());
        b[0x28..0x2C].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let sum = b[..0x1FC]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .fold(0, |a, d| a ^ d);
        b[0x1FC..0x200].copy_from_slice(&sum.to_le_bytes());
        b.extend(data);
        b
    }

    fn open(bytes: Vec<u8>) -> Result<Hive<'static>, HiveError> {
        Hive::open(Box::new(Mem(bytes)), &[])
    }

    fn sample(list: List) -> K {
        let mut cv = k(
            "CurrentVersion",
            vec![
                ("ProductName", REG_SZ, sz("Windows 10 Pro")),
                ("UBR", REG_DWORD, 2861u32.to_le_bytes().to_vec()),
                ("InstallDate", REG_QWORD, 7u64.to_le_bytes().to_vec()),
                ("", REG_EXPAND_SZ, sz("%SystemRoot%")),
                ("Big", 3, (0..40_000u32).map(|i| i as u8).collect()),
                ("Tiny", REG_SZ, sz("a")),
            ],
            vec![],
        );
        cv.list = list;
        let mut nt = k(
            "Windows NT",
            vec![],
            vec![cv, k("Alpha", vec![], vec![]), k("Zulu", vec![], vec![])],
        );
        nt.list = list;
        let mut ms = k("Microsoft", vec![], vec![nt, k("Windows", vec![], vec![])]);
        ms.list = list;
        k("ROOT", vec![], vec![ms, k("Classes", vec![], vec![])])
    }

    #[test]
    fn lookups_and_values_for_every_list_kind() {
        for (name, list) in [
            ("lh", List::Lh),
            ("lf", List::Lf),
            ("li", List::Li),
            ("ri", List::Ri),
        ] {
            let hive = open(hive_bytes(&sample(list), (1, 1))).expect("open");
            assert!(!hive.is_dirty(), "case {name}");
            let key = hive
                .key(r"microsoft\WINDOWS NT\\currentversion")
                .expect("lookup")
                .unwrap_or_else(|| panic!("case {name}: no key"));
            assert_eq!(key.name().as_deref(), Ok("CurrentVersion"));
            let v = |n| key.value(n).expect("value").expect("present");
            assert_eq!(
                v("productname").string(100),
                Ok(Some("Windows 10 Pro".into()))
            );
            assert_eq!(v("UBR").dword(), Ok(Some(2861)));
            assert_eq!(v("UBR").string(100), Ok(None), "a DWORD is no string");
            assert_eq!(v("InstallDate").qword(), Ok(Some(7)));
            assert_eq!(v("").string(100), Ok(Some("%SystemRoot%".into())));
            assert_eq!(v("Tiny").string(100), Ok(Some("a".into())), "inline data");
            let big = v("Big").data(1 << 20).expect("big data");
            assert_eq!(big.len(), 40_000, "case {name}");
            assert!(big.iter().enumerate().all(|(i, &b)| b == i as u8));
            assert_eq!(v("Big").data(100).map_err(|e| e.kind()), Err("limit"));
            assert!(key.value("Missing").expect("lookup").is_none());
            assert!(hive.key(r"Microsoft\Nope").expect("lookup").is_none());
            let nt = hive.key(r"Microsoft\Windows NT").expect("ok").expect("nt");
            let names: Vec<String> = nt
                .subkeys(10)
                .expect("list")
                .iter()
                .map(|k| k.name().expect("name"))
                .collect();
            assert_eq!(names, ["Alpha", "CurrentVersion", "Zulu"], "case {name}");
            assert_eq!(
                nt.subkeys(2).expect("list").len(),
                2,
                "case {name}: bounded"
            );
        }
    }

    /// Overwrite the u32 at `at` of `bytes`.
    fn patch(mut bytes: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        bytes
    }

    #[test]
    fn corrupt_hives_are_errors_not_panics() {
        let good = hive_bytes(&sample(List::Lh), (1, 1));
        let root = u32::from_le_bytes(good[0x24..0x28].try_into().expect("4")) as usize;
        let nk = 4096 + root + 4;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty file", Vec::new(), "corrupt"),
            ("wrong signature", patch(good.clone(), 0, 0), "corrupt"),
            ("version 2.0", patch(good.clone(), 0x14, 2), "unsupported"),
            (
                "a log, not a primary",
                patch(good.clone(), 0x1C, 6),
                "corrupt",
            ),
            (
                "bins size not pages",
                patch(good.clone(), 0x28, 100),
                "corrupt",
            ),
            (
                "root past the bins",
                patch(good.clone(), 0x24, 0x7fff_fff8),
                "corrupt",
            ),
            (
                "root 0xffffffff",
                patch(good.clone(), 0x24, u32::MAX),
                "corrupt",
            ),
            ("root unaligned", patch(good.clone(), 0x24, 0x21), "corrupt"),
            (
                "root a free cell",
                patch(good.clone(), nk - 4, 88),
                "corrupt",
            ),
            (
                "root cell size 0",
                patch(good.clone(), nk - 4, 0),
                "corrupt",
            ),
            (
                "root cell huge",
                patch(good.clone(), nk - 4, 0x8000_0000),
                "corrupt",
            ),
            (
                "subkey list garbage",
                patch(good.clone(), nk + 0x1C, 0x20),
                "corrupt",
            ),
            (
                "subkey list 0xffffffff",
                patch(good.clone(), nk + 0x1C, u32::MAX - 7),
                "corrupt",
            ),
            ("truncated", good[..4096 + 64].to_vec(), "corrupt"),
        ];
        for (name, bytes, want) in cases {
            let got = open(bytes).and_then(|h| h.key(r"Microsoft\Windows NT").map(|k| k.is_some()));
            assert_eq!(got.map_err(|e| e.kind()), Err(want), "case {name}");
        }
        // A subkey count far larger than the list: only the list's entries are seen.
        let hive = open(patch(good.clone(), nk + 0x14, u32::MAX)).expect("open");
        assert_eq!(
            hive.root()
                .expect("root")
                .subkeys(usize::MAX)
                .expect("list")
                .len(),
            2
        );
    }

    #[test]
    fn ri_inside_ri_is_refused() {
        let mut bins = Bins::default();
        let leaf = bins.key(&k("A", vec![], vec![]));
        let inner = bins.list(List::Li, &[("A".into(), leaf)]);
        let ri = |bins: &mut Bins, to: u32| {
            let mut body = b"ri".to_vec();
            body.extend(1u16.to_le_bytes());
            body.extend(to.to_le_bytes());
            bins.cell(&body)
        };
        let ri1 = ri(&mut bins, inner);
        let ri2 = ri(&mut bins, ri1);
        let root = bins.key(&k("ROOT", vec![], vec![k("X", vec![], vec![])]));
        let at = root as usize + 4 + 0x1C;
        bins.0[at..at + 4].copy_from_slice(&ri2.to_le_bytes());
        let hive = open(finish(bins, root, (1, 1))).expect("open");
        let got = hive.root().expect("root").subkey("A").map_err(|e| e.kind());
        assert_eq!(got.err(), Some("corrupt"));
    }

    #[test]
    fn dirty_hive_replays_log_entries_in_sequence() {
        let old = hive_bytes(
            &k("ROOT", vec![("Name", REG_SZ, sz("old-value"))], vec![]),
            (7, 5),
        );
        let new = hive_bytes(
            &k("ROOT", vec![("Name", REG_SZ, sz("new-value"))], vec![]),
            (7, 5),
        );
        let page = |bytes: &[u8]| bytes[4096..8192].to_vec();
        let mut newer = new.clone();
        let at = newer
            .windows(18)
            .position(|w| w == &sz("new-value")[..18])
            .expect("value");
        newer[at..at + 18].copy_from_slice(&sz("NEWER-VAL")[..18]);
        let read = |logs: &[&dyn FileAt]| {
            let hive = Hive::open(Box::new(Mem(old.clone())), logs).expect("open");
            let v = hive
                .root()
                .expect("root")
                .value("Name")
                .expect("ok")
                .expect("value");
            (v.string(100).expect("string").expect("sz"), hive.replayed())
        };
        let log = |entries: &[(u32, Vec<u8>)]| {
            let entries: Vec<_> = entries
                .iter()
                .map(|(seq, p)| (*seq, 4096u32, vec![(0u32, p.clone())]))
                .collect();
            Mem(log::write_log(&old, &entries))
        };
        let one = log(&[(5, page(&new))]);
        assert_eq!(read(&[&one]), ("new-value".into(), 1));
        // Entries 5 and 6 split over LOG1 and LOG2, in either order.
        let first = log(&[(5, page(&new))]);
        let second = log(&[(6, page(&newer))]);
        assert_eq!(read(&[&first, &second]), ("NEWER-VAL".into(), 2));
        assert_eq!(read(&[&second, &first]), ("NEWER-VAL".into(), 2));
        // An entry that does not continue the primary (4, 6 alone) is not applied.
        assert_eq!(read(&[&log(&[(4, page(&new))])]), ("old-value".into(), 0));
        assert_eq!(read(&[&second]), ("old-value".into(), 0));
        // A damaged entry stops the replay: only the ones before it count.
        let mut bad = log(&[(5, page(&new)), (6, page(&newer))]);
        let last = bad.0.len() - 1;
        bad.0[last] ^= 1;
        assert_eq!(read(&[&bad]), ("new-value".into(), 1));
        // A clean hive ignores its logs.
        let clean = patch(old.clone(), 4, 5);
        let clean = patch(clean, 0x1FC, 0);
        let hive = Hive::open(Box::new(Mem(clean)), &[&one]).expect("open");
        assert!(hive.is_dirty(), "the checksum no longer matches");
        let hive = Hive::open(
            Box::new(Mem(hive_bytes(&k("ROOT", vec![], vec![]), (5, 5)))),
            &[&one],
        )
        .expect("open");
        assert_eq!(hive.replayed(), 0);
        // Not a new-format log: ignored.
        let mut old_format = log(&[(5, page(&new))]);
        old_format.0[0x1C] = 1;
        assert_eq!(read(&[&old_format]), ("old-value".into(), 0));
    }

    #[test]
    fn device_errors_stay_device_errors() {
        struct Broken;
        impl FileAt for Broken {
            fn len(&self) -> u64 {
                1 << 20
            }
            fn read_at(&self, _: u64, _: &mut [u8]) -> Result<usize, FsError> {
                Err(FsError::Io("sector 7".into()))
            }
        }
        let err = Hive::open(Box::new(Broken), &[]).expect_err("device error");
        assert!(err.is_device_error());
        let hive = hive_bytes(&k("ROOT", vec![], vec![]), (2, 1));
        let err = Hive::open(Box::new(Mem(hive)), &[&Broken]).expect_err("log device error");
        assert_eq!(
            err.into_device_error(),
            Some(FsError::Io("sector 7".into()))
        );
    }
}
