//! A small writer of Windows registry hive files (regf), for synthetic Windows test disks.
//!
//! [`Hive`] holds a tree of keys and values in memory; [`Hive::to_bytes`] lays it out as a
//! structurally valid hive that `nt-hive`, hivex and Windows accept: the 4 KiB base block (equal
//! sequence numbers, version 1.5, root cell offset, hive bins size, XOR-32 checksum at 0x1FC),
//! `hbin` blocks of 4096-multiple sizes (the tail of each one a free cell), `nk` key nodes (the
//! root flagged `KEY_HIVE_ENTRY | KEY_NO_DELETE`, ASCII names stored compressed), `vk` values
//! (data of at most 4 bytes inline in the offset field, with the size's high bit set), `lh`
//! subkey lists sorted by uppercase name with their name hashes, value lists, `db` big-data
//! values (segment lists of 16344-byte cells) for data over [`MAX_VALUE_DATA`] bytes, and one
//! `sk` security cell that every key points to. [`Hive::deleted`] keys are written as free
//! cells (stale key data that no list reaches, as deleted keys leave it), and
//! [`Hive::dirty_with_log`] writes a dirty primary file with a new-format `.LOG1` whose one
//! `HvLE` entry holds the pages that differ in a newer hive. [`realistic`] generates
//! `SOFTWARE` and `SYSTEM` hives of real sizes.
//!
//! It deliberately does not write old-format (`DIRT`) logs, class names, volatile keys,
//! symbolic links or `ri` index roots (a key with more than 65535 subkeys is refused), and it does
//! not read hives. The output is deterministic: every timestamp is the same fixed instant. This
//! is a test double, not product code.
//!
//! Format reference: Maxim Suhanov, "Windows registry file format specification",
//! <https://github.com/msuhanov/regf/blob/master/Windows%20registry%20file%20format%20specification.md>.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{ensure, Context};
use snapscan::registry::log::{marvin32, LOG_SEED};

/// Every timestamp written: 2024-01-01T00:00:00Z as a FILETIME (100 ns since 1601).
const TIMESTAMP: u64 = 133_485_408_000_000_000;
/// Size of the base block, which the hive bins follow; cell offsets count from its end.
const BASE_BLOCK_SIZE: usize = 4096;
/// Size of an `hbin` header.
const HBIN_HEADER_SIZE: usize = 32;
/// An `hbin` (and the hive bins data) is a multiple of this.
const HBIN_ALIGN: usize = 4096;
/// "No cell" in an offset field.
const NO_CELL: u32 = u32::MAX;
/// The most value data one cell may hold; more is written as a `db` big-data cell (hive 1.4+).
pub const MAX_VALUE_DATA: usize = 16344;
/// The longest key name Windows accepts, in characters.
const MAX_KEY_NAME: usize = 255;
/// The longest value name Windows accepts, in characters.
const MAX_VALUE_NAME: usize = 16383;

/// `nk` flag: the root key of the hive.
const KEY_HIVE_ENTRY: u16 = 0x0004;
/// `nk` flag: the key cannot be deleted.
const KEY_NO_DELETE: u16 = 0x0008;
/// `nk` flag: the name is stored as (extended) ASCII, one byte a character.
const KEY_COMP_NAME: u16 = 0x0020;
/// `vk` flag: the name is stored as (extended) ASCII, one byte a character.
const VALUE_COMP_NAME: u16 = 0x0001;
/// `vk` data size bit: the data sits in the data offset field itself.
const DATA_INLINE: u32 = 0x8000_0000;

/// The data of one registry value, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// `REG_SZ` (1): a string, stored as NUL-terminated UTF-16LE.
    Sz(String),
    /// `REG_EXPAND_SZ` (2): a string with `%VARIABLE%` references, stored like `REG_SZ`.
    ExpandSz(String),
    /// `REG_BINARY` (3): raw bytes.
    Binary(Vec<u8>),
    /// `REG_DWORD` (4): a little-endian `u32`.
    Dword(u32),
    /// `REG_MULTI_SZ` (7): non-empty strings, each NUL-terminated, then one more NUL.
    MultiSz(Vec<String>),
    /// `REG_QWORD` (11): a little-endian `u64`.
    Qword(u64),
}

impl Data {
    /// The `REG_*` type code stored in the `vk` cell.
    pub fn type_code(&self) -> u32 {
        match self {
            Data::Sz(_) => 1,
            Data::ExpandSz(_) => 2,
            Data::Binary(_) => 3,
            Data::Dword(_) => 4,
            Data::MultiSz(_) => 7,
            Data::Qword(_) => 11,
        }
    }

    /// The bytes stored as the value's data. Errors for a `REG_MULTI_SZ` entry that is empty or
    /// holds a NUL, which the format cannot represent.
    fn encode(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Data::Sz(s) | Data::ExpandSz(s) => utf16z(s),
            Data::Binary(b) => b.clone(),
            Data::Dword(v) => v.to_le_bytes().to_vec(),
            Data::Qword(v) => v.to_le_bytes().to_vec(),
            Data::MultiSz(list) => {
                let mut out = Vec::new();
                for s in list {
                    ensure!(
                        !s.is_empty() && !s.contains('\0'),
                        "REG_MULTI_SZ entry {s:?} is empty or holds a NUL"
                    );
                    out.extend(utf16z(s));
                }
                out.extend([0, 0]);
                out
            }
        })
    }
}

/// A registry key: a name, values and subkeys. Get one with [`Hive::key`] or [`Key::key`].
#[derive(Debug, Clone)]
pub struct Key {
    name: String,
    values: Vec<(String, Data)>,
    subkeys: Vec<Key>,
    /// Uppercase subkey name → index in `subkeys`, so big keys are built in linear time.
    index: HashMap<Vec<u16>, usize>,
}

impl Key {
    fn new(name: &str) -> Key {
        Key {
            name: name.to_owned(),
            values: Vec::new(),
            subkeys: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The key's own name (one path component).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subkey at `path` (components separated by `\`; empty components are skipped), created
    /// with any missing intermediate keys. Names match case-insensitively, as in Windows.
    pub fn key(&mut self, path: &str) -> &mut Key {
        let mut key = self;
        for component in path.split('\\').filter(|c| !c.is_empty()) {
            let wanted = upcase(component);
            let index = match key.index.get(&wanted) {
                Some(&index) => index,
                None => {
                    key.subkeys.push(Key::new(component));
                    key.index.insert(wanted, key.subkeys.len() - 1);
                    key.subkeys.len() - 1
                }
            };
            key = &mut key.subkeys[index];
        }
        key
    }

    /// Set value `name` (`""` is the key's default value) to `data`, replacing a value of the
    /// same name (compared case-insensitively).
    pub fn set(&mut self, name: &str, data: Data) -> &mut Key {
        let wanted = upcase(name);
        match self.values.iter_mut().find(|(n, _)| upcase(n) == wanted) {
            Some(slot) => slot.1 = data,
            None => self.values.push((name.to_owned(), data)),
        }
        self
    }

    /// Set a `REG_SZ` value.
    pub fn sz(&mut self, name: &str, value: &str) -> &mut Key {
        self.set(name, Data::Sz(value.to_owned()))
    }

    /// Set a `REG_EXPAND_SZ` value.
    pub fn expand_sz(&mut self, name: &str, value: &str) -> &mut Key {
        self.set(name, Data::ExpandSz(value.to_owned()))
    }

    /// Set a `REG_DWORD` value.
    pub fn dword(&mut self, name: &str, value: u32) -> &mut Key {
        self.set(name, Data::Dword(value))
    }

    /// Set a `REG_QWORD` value.
    pub fn qword(&mut self, name: &str, value: u64) -> &mut Key {
        self.set(name, Data::Qword(value))
    }

    /// Set a `REG_MULTI_SZ` value (entries must be non-empty and free of NULs).
    pub fn multi_sz(&mut self, name: &str, value: &[&str]) -> &mut Key {
        self.set(
            name,
            Data::MultiSz(value.iter().map(|s| (*s).to_owned()).collect()),
        )
    }

    /// Set a `REG_BINARY` value.
    pub fn binary(&mut self, name: &str, value: &[u8]) -> &mut Key {
        self.set(name, Data::Binary(value.to_vec()))
    }

    /// Number of keys in this subtree, this one included.
    fn count(&self) -> usize {
        1 + self.subkeys.iter().map(Key::count).sum::<usize>()
    }
}

/// A registry hive being built. See the module documentation for what it writes.
#[derive(Debug, Clone)]
pub struct Hive {
    root: Key,
    deleted: Vec<Key>,
}

impl Default for Hive {
    fn default() -> Self {
        Hive::new()
    }
}

impl Hive {
    /// An empty hive whose root key is called `ROOT`.
    pub fn new() -> Hive {
        Hive::with_root_name("ROOT")
    }

    /// An empty hive with the given root key name (Windows uses names like
    /// `CMI-CreateHive{...}`; readers ignore it since paths start below the root).
    pub fn with_root_name(name: &str) -> Hive {
        Hive {
            root: Key::new(name),
            deleted: Vec::new(),
        }
    }

    /// The root key.
    pub fn root(&mut self) -> &mut Key {
        &mut self.root
    }

    /// The key at `path` below the root (`Microsoft\Windows NT\CurrentVersion`), created with
    /// its missing intermediate keys. See [`Key::key`].
    pub fn key(&mut self, path: &str) -> &mut Key {
        self.root.key(path)
    }

    /// The start of every `SYSTEM` hive: `Select` naming `ControlSet001`, whose computer name is
    /// `hostname`.
    pub fn system_base(hostname: &str) -> Hive {
        let mut hive = Hive::with_root_name("ROOT");
        hive.key("Select")
            .dword("Current", 1)
            .dword("Default", 1)
            .dword("Failed", 0)
            .dword("LastKnownGood", 1);
        hive.key(r"ControlSet001\Control\ComputerName\ComputerName")
            .sz("ComputerName", hostname);
        hive
    }

    /// A key written only as free cells, after the live tree: the stale data a deleted key
    /// leaves, which no subkey list reaches.
    pub fn deleted(&mut self, name: &str) -> &mut Key {
        self.deleted.push(Key::new(name));
        let last = self.deleted.len() - 1;
        &mut self.deleted[last]
    }

    /// Serialise the hive. Errors for what this writer does not support: more than 65535
    /// subkeys of one key, empty or over-long names.
    pub fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        self.to_bytes_with_sequence(1, 1)
    }

    /// Serialise with the given primary and secondary sequence numbers (differing: dirty).
    fn to_bytes_with_sequence(&self, primary: u32, secondary: u32) -> anyhow::Result<Vec<u8>> {
        let mut bins = Bins::default();
        let keys = u32::try_from(self.root.count()).context("too many keys")?;
        let sk = bins.alloc(&sk_cell(keys))?;
        // The single sk cell is its own predecessor and successor in the list of sk cells.
        bins.put_u32(sk, 4, sk);
        bins.put_u32(sk, 8, sk);
        let root = write_key(&mut bins, &self.root, NO_CELL, sk, true)?;
        bins.free = true;
        for key in &self.deleted {
            write_key(&mut bins, key, root, sk, false)?;
        }
        let data = bins.finish();

        let mut out = vec![0u8; BASE_BLOCK_SIZE];
        out[0..4].copy_from_slice(b"regf");
        put(&mut out, 0x04, primary);
        put(&mut out, 0x08, secondary); // equal means "clean"
        out[0x0C..0x14].copy_from_slice(&TIMESTAMP.to_le_bytes());
        put(&mut out, 0x14, 1u32); // major version
        put(&mut out, 0x18, 5u32); // minor version: 1.5 (Windows XP and later)
        put(&mut out, 0x1C, 0u32); // file type: primary file
        put(&mut out, 0x20, 1u32); // file format: direct memory load
        put(&mut out, 0x24, root);
        put(
            &mut out,
            0x28,
            u32::try_from(data.len()).context("hive too big")?,
        );
        put(&mut out, 0x2C, 1u32); // clustering factor
        let checksum = checksum(&out[..0x1FC]);
        put(&mut out, 0x1FC, checksum);
        out.extend(data);
        Ok(out)
    }

    /// A dirty primary file holding this hive (sequence numbers 2 and 1) and a new-format
    /// transaction log whose one entry (sequence number 1) holds the pages of `newer` that
    /// differ: a reader that replays the log sees `newer`, one that does not sees `self`.
    pub fn dirty_with_log(&self, newer: &Hive) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let primary = self.to_bytes_with_sequence(2, 1)?;
        let new = newer.to_bytes_with_sequence(2, 2)?;
        let bins_len = u32::from_le_bytes(new[0x28..0x2C].try_into()?);
        // Runs of differing 4 KiB pages of the hive bins data, as (offset, bytes).
        let mut runs: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut prev_dirty = false;
        for (i, page) in new[BASE_BLOCK_SIZE..].chunks(HBIN_ALIGN).enumerate() {
            let at = BASE_BLOCK_SIZE + i * HBIN_ALIGN;
            let dirty = primary.get(at..at + HBIN_ALIGN) != Some(page);
            match runs.last_mut() {
                Some((_, bytes)) if dirty && prev_dirty => bytes.extend(page),
                _ if dirty => runs.push((u32::try_from(i * HBIN_ALIGN)?, page.to_vec())),
                _ => {}
            }
            prev_dirty = dirty;
        }
        let mut entry = vec![0u8; 40];
        entry[0..4].copy_from_slice(b"HvLE");
        put(&mut entry, 12, 1); // sequence number: the primary's secondary one
        put(&mut entry, 16, bins_len);
        put(&mut entry, 20, u32::try_from(runs.len())?);
        for (offset, bytes) in &runs {
            entry.extend(offset.to_le_bytes());
            entry.extend(u32::try_from(bytes.len())?.to_le_bytes());
        }
        for (_, bytes) in &runs {
            entry.extend(bytes);
        }
        entry.resize(entry.len().next_multiple_of(512), 0);
        let size = u32::try_from(entry.len())?;
        put(&mut entry, 4, size);
        let hash1 = marvin32(LOG_SEED, &entry[40..]);
        entry[24..32].copy_from_slice(&hash1.to_le_bytes());
        let hash2 = marvin32(LOG_SEED, &entry[..32]);
        entry[32..40].copy_from_slice(&hash2.to_le_bytes());

        // The log's first sector: the base block with file type 6 (new-format log).
        let mut log = new[..512].to_vec();
        put(&mut log, 0x1C, 6);
        let checksum = checksum(&log[..0x1FC]);
        put(&mut log, 0x1FC, checksum);
        log.extend(entry);
        Ok((primary, log))
    }

    /// Serialise the hive into the file at `path` (replacing it).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).with_context(|| format!("failed to write '{}'", path.display()))
    }
}

/// The XOR-32 checksum of the base block's first 508 bytes, with 0 and `u32::MAX` avoided.
fn checksum(bytes: &[u8]) -> u32 {
    let sum = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .fold(0, |acc, dword| acc ^ dword);
    match sum {
        0 => 1,
        u32::MAX => u32::MAX - 1,
        sum => sum,
    }
}

/// The hive bins being filled: cells are appended to the current `hbin`; one that does not fit
/// closes it (its tail becomes a free cell) and opens the next, as large as the cell needs.
#[derive(Default)]
struct Bins {
    data: Vec<u8>,
    /// Where the next cell goes (offset into `data`, the same as the cell offset in the hive).
    cursor: usize,
    /// Cells are written free (positive size): the stale data of deleted keys.
    free: bool,
}

impl Bins {
    /// Append an allocated cell holding `body`; returns its offset.
    fn alloc(&mut self, body: &[u8]) -> anyhow::Result<u32> {
        let size = (4 + body.len()).next_multiple_of(8);
        if self.cursor + size > self.data.len() {
            self.close_bin();
            let bin = self.data.len();
            let bin_size = (HBIN_HEADER_SIZE + size).next_multiple_of(HBIN_ALIGN);
            self.data.resize(bin + bin_size, 0);
            self.data[bin..bin + 4].copy_from_slice(b"hbin");
            put(&mut self.data, bin + 4, u32::try_from(bin)?);
            put(&mut self.data, bin + 8, u32::try_from(bin_size)?);
            self.data[bin + 0x14..bin + 0x1C].copy_from_slice(&TIMESTAMP.to_le_bytes());
            self.cursor = bin + HBIN_HEADER_SIZE;
        }
        let offset = self.cursor;
        // An allocated cell has a negative size, a free one a positive size.
        let size_field = i32::try_from(size).context("cell too big")?;
        let size_field = if self.free { size_field } else { -size_field };
        self.data[offset..offset + 4].copy_from_slice(&size_field.to_le_bytes());
        self.data[offset + 4..offset + 4 + body.len()].copy_from_slice(body);
        self.cursor += size;
        Ok(u32::try_from(offset)?)
    }

    /// Overwrite the `u32` at `field` in the body of the cell at `cell`.
    fn put_u32(&mut self, cell: u32, field: usize, value: u32) {
        let at = usize::try_from(cell).expect("cell offsets fit in usize") + 4 + field;
        put(&mut self.data, at, value);
    }

    /// Turn the rest of the current bin into one free cell (positive size).
    fn close_bin(&mut self) {
        let rest = self.data.len() - self.cursor;
        if rest > 0 {
            let size = i32::try_from(rest).expect("a bin's free tail fits in i32");
            self.data[self.cursor..self.cursor + 4].copy_from_slice(&size.to_le_bytes());
        }
        self.cursor = self.data.len();
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_bin();
        self.data
    }
}

/// Write `key` and its subtree; returns the offset of its `nk` cell.
fn write_key(bins: &mut Bins, key: &Key, parent: u32, sk: u32, root: bool) -> anyhow::Result<u32> {
    let chars = key.name.encode_utf16().count();
    ensure!(
        (1..=MAX_KEY_NAME).contains(&chars) || (root && chars <= MAX_KEY_NAME),
        "key name {:?} must have 1 to {MAX_KEY_NAME} characters",
        key.name
    );
    ensure!(
        key.subkeys.len() <= usize::from(u16::MAX),
        "key {:?} has {} subkeys; this writer does not write index roots (ri) for more than {}",
        key.name,
        key.subkeys.len(),
        u16::MAX
    );
    let (name, compressed) = encode_name(&key.name);
    let mut flags = if compressed { KEY_COMP_NAME } else { 0 };
    if root {
        flags |= KEY_HIVE_ENTRY | KEY_NO_DELETE;
    }
    // Lengths of the longest subkey name and value name count UTF-16 bytes, whatever the storage.
    let max_subkey_name = key.subkeys.iter().map(|k| utf16_len(&k.name)).max();
    let max_value_name = key.values.iter().map(|(n, _)| utf16_len(n)).max();
    let mut data = Vec::with_capacity(key.values.len());
    for (value_name, value) in &key.values {
        data.push(
            value
                .encode()
                .with_context(|| format!("value {value_name:?} of key {:?}", key.name))?,
        );
    }
    let max_value_data = data.iter().map(Vec::len).max();

    let mut nk = vec![0u8; 0x4C];
    nk[0..2].copy_from_slice(b"nk");
    nk[2..4].copy_from_slice(&flags.to_le_bytes());
    nk[4..12].copy_from_slice(&TIMESTAMP.to_le_bytes());
    put(&mut nk, 0x10, parent);
    put(&mut nk, 0x14, u32::try_from(key.subkeys.len())?);
    put(&mut nk, 0x1C, NO_CELL); // subkeys list, patched below
    put(&mut nk, 0x20, NO_CELL); // volatile subkeys list
    put(&mut nk, 0x24, u32::try_from(key.values.len())?);
    put(&mut nk, 0x28, NO_CELL); // values list, patched below
    put(&mut nk, 0x2C, sk);
    put(&mut nk, 0x30, NO_CELL); // class name
    put(&mut nk, 0x34, u32::try_from(max_subkey_name.unwrap_or(0))?);
    put(&mut nk, 0x3C, u32::try_from(max_value_name.unwrap_or(0))?);
    put(&mut nk, 0x40, u32::try_from(max_value_data.unwrap_or(0))?);
    nk[0x48..0x4A].copy_from_slice(&u16::try_from(name.len())?.to_le_bytes());
    nk.extend(&name);
    let offset = bins.alloc(&nk)?;

    if !key.values.is_empty() {
        let mut list = Vec::with_capacity(4 * key.values.len());
        for ((value_name, value), data) in key.values.iter().zip(&data) {
            let vk = write_value(bins, value_name, value.type_code(), data)
                .with_context(|| format!("value {value_name:?} of key {:?}", key.name))?;
            list.extend(vk.to_le_bytes());
        }
        let list = bins.alloc(&list)?;
        bins.put_u32(offset, 0x28, list);
    }

    if !key.subkeys.is_empty() {
        // Windows finds subkeys by binary search over the uppercase names.
        let mut sorted: Vec<&Key> = key.subkeys.iter().collect();
        sorted.sort_by_cached_key(|k| upcase(&k.name));
        let mut lh = Vec::with_capacity(4 + 8 * sorted.len());
        lh.extend(b"lh");
        lh.extend(u16::try_from(sorted.len())?.to_le_bytes());
        for sub in sorted {
            let nk = write_key(bins, sub, offset, sk, false)?;
            lh.extend(nk.to_le_bytes());
            lh.extend(lh_hash(&sub.name).to_le_bytes());
        }
        let lh = bins.alloc(&lh)?;
        bins.put_u32(offset, 0x1C, lh);
    }
    Ok(offset)
}

/// Write one `vk` cell (and its data cell unless the data fits inline); returns its offset.
fn write_value(bins: &mut Bins, name: &str, type_code: u32, data: &[u8]) -> anyhow::Result<u32> {
    ensure!(
        utf16_len(name) / 2 <= MAX_VALUE_NAME,
        "value name longer than {MAX_VALUE_NAME} characters"
    );
    let len = u32::try_from(data.len())?;
    let (size_field, offset_field) = if data.len() <= 4 {
        let mut inline = [0u8; 4];
        inline[..data.len()].copy_from_slice(data);
        (len | DATA_INLINE, u32::from_le_bytes(inline))
    } else if data.len() > MAX_VALUE_DATA {
        // Big data: segments of MAX_VALUE_DATA bytes, a list of them, and the `db` cell.
        let mut list = Vec::new();
        for segment in data.chunks(MAX_VALUE_DATA) {
            list.extend(bins.alloc(segment)?.to_le_bytes());
        }
        let segments = u16::try_from(list.len() / 4).context("too many big-data segments")?;
        let list = bins.alloc(&list)?;
        let mut db = b"db".to_vec();
        db.extend(segments.to_le_bytes());
        db.extend(list.to_le_bytes());
        db.extend(0u32.to_le_bytes());
        (len, bins.alloc(&db)?)
    } else {
        (len, bins.alloc(data)?)
    };
    let (encoded, compressed) = encode_name(name);
    let mut vk = vec![0u8; 0x14];
    vk[0..2].copy_from_slice(b"vk");
    vk[2..4].copy_from_slice(&u16::try_from(encoded.len())?.to_le_bytes());
    put(&mut vk, 0x04, size_field);
    put(&mut vk, 0x08, offset_field);
    put(&mut vk, 0x0C, type_code);
    let flags = if compressed { VALUE_COMP_NAME } else { 0 };
    vk[0x10..0x12].copy_from_slice(&flags.to_le_bytes());
    vk.extend(&encoded);
    bins.alloc(&vk)
}

/// The `sk` cell: one self-relative security descriptor, shared by `keys` keys. Owner
/// Administrators, group SYSTEM, a DACL allowing full control to Administrators and SYSTEM and
/// read to Everyone, inherited by subkeys. The list links are patched by the caller.
fn sk_cell(keys: u32) -> Vec<u8> {
    const KEY_ALL_ACCESS: u32 = 0x000F_003F;
    const KEY_READ: u32 = 0x0002_0019;
    const CONTAINER_INHERIT_ACE: u8 = 0x02;
    let administrators = sid(5, &[32, 544]);
    let system = sid(5, &[18]);
    let everyone = sid(1, &[0]);

    let mut aces = Vec::new();
    for (mask, who) in [
        (KEY_ALL_ACCESS, &administrators),
        (KEY_ALL_ACCESS, &system),
        (KEY_READ, &everyone),
    ] {
        aces.push(0u8); // ACCESS_ALLOWED_ACE_TYPE
        aces.push(CONTAINER_INHERIT_ACE);
        aces.extend(u16_of(8 + who.len()).to_le_bytes());
        aces.extend(mask.to_le_bytes());
        aces.extend(who);
    }
    let mut dacl = vec![2u8, 0]; // ACL revision, padding
    dacl.extend(u16_of(8 + aces.len()).to_le_bytes());
    dacl.extend(3u16.to_le_bytes()); // ACE count
    dacl.extend(0u16.to_le_bytes());
    dacl.extend(aces);

    // Header (20 bytes), then DACL, owner, group.
    const SE_DACL_PRESENT: u16 = 0x0004;
    const SE_SELF_RELATIVE: u16 = 0x8000;
    let dacl_at = 20u32;
    let owner_at = dacl_at + u32::from(u16_of(dacl.len()));
    let group_at = owner_at + u32::from(u16_of(administrators.len()));
    let mut sd = vec![1u8, 0]; // revision, padding
    sd.extend((SE_SELF_RELATIVE | SE_DACL_PRESENT).to_le_bytes());
    sd.extend(owner_at.to_le_bytes());
    sd.extend(group_at.to_le_bytes());
    sd.extend(0u32.to_le_bytes()); // no SACL
    sd.extend(dacl_at.to_le_bytes());
    sd.extend(dacl);
    sd.extend(administrators);
    sd.extend(system);

    let mut sk = Vec::with_capacity(20 + sd.len());
    sk.extend(b"sk");
    sk.extend(0u16.to_le_bytes());
    sk.extend(NO_CELL.to_le_bytes()); // flink, patched
    sk.extend(NO_CELL.to_le_bytes()); // blink, patched
    sk.extend(keys.to_le_bytes()); // reference count
    sk.extend(u32::from(u16_of(sd.len())).to_le_bytes());
    sk.extend(sd);
    sk
}

/// A binary SID `S-1-<authority>-<subs...>`.
fn sid(authority: u8, subs: &[u32]) -> Vec<u8> {
    let mut out = vec![1u8, u8::try_from(subs.len()).expect("few sub-authorities")];
    out.extend([0, 0, 0, 0, 0, authority]);
    for sub in subs {
        out.extend(sub.to_le_bytes());
    }
    out
}

/// A small length as `u16`.
///
/// # Panics
/// If `n` does not fit, which the fixed security descriptor above never does.
fn u16_of(n: usize) -> u16 {
    u16::try_from(n).expect("security descriptor parts are small")
}

/// The hash stored next to each subkey in an `lh` list: `h = 37 * h + c` over the UTF-16 code
/// units of the uppercase name.
fn lh_hash(name: &str) -> u32 {
    upcase(name).into_iter().fold(0u32, |h, unit| {
        h.wrapping_mul(37).wrapping_add(u32::from(unit))
    })
}

/// The name as Windows compares it: UTF-16 code units, each uppercased on its own. Characters
/// whose uppercase is not a single BMP character (`ß`) stay as they are, as in Windows' table.
fn upcase(name: &str) -> Vec<u16> {
    name.chars()
        .flat_map(|c| {
            let mut upper = c.to_uppercase();
            let one = match (upper.next(), upper.next()) {
                (Some(u), None) if u.len_utf16() == 1 => u,
                _ => c,
            };
            let mut buf = [0u16; 2];
            one.encode_utf16(&mut buf).to_vec()
        })
        .collect()
}

/// The stored form of a key or value name: ASCII as one byte a character (compressed), anything
/// else as UTF-16LE. Returns the bytes and whether they are compressed.
fn encode_name(name: &str) -> (Vec<u8>, bool) {
    if name.is_ascii() {
        (name.as_bytes().to_vec(), true)
    } else {
        (
            name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            false,
        )
    }
}

/// Length of `s` in UTF-16 bytes.
fn utf16_len(s: &str) -> usize {
    2 * s.encode_utf16().count()
}

/// `s` as UTF-16LE with a terminating NUL.
fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Write `value` little-endian at `at`.
fn put(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// `SOFTWARE` and `SYSTEM` hives of real sizes and layouts, for tests and benchmarks of readers
/// that must not read a hive whole.
///
/// [`realistic::software`] holds the values of [`crate::windows::expected`] under
/// `Microsoft\Windows NT\CurrentVersion`, [`realistic::programs`] in the `Uninstall` keys
/// (native and `WOW6432Node`), and filler that imitates a real installation: COM classes
/// (`Classes\CLSID\{...}\InprocServer32`), file associations, servicing packages with big-data
/// blobs, and a big-data string ([`realistic::BIG_VALUE`]). [`realistic::system`] holds
/// `Select`, `ControlSet001` with the host name and a few thousand service keys. The filler is
/// deterministic.
pub mod realistic {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use snapscan::detect::OsInfo;
    use snapscan::disk::reader::Disk;
    use snapscan::inventory::Inventory;

    use super::Hive;
    use crate::windows::{expected, WindowsFlavor};

    /// Programs in the `SOFTWARE` hive of the `windows-real-hives` fixture.
    pub const FIXTURE_PROGRAMS: usize = 400;

    /// What snapscan's native readers find on a disk image, and what it cost.
    #[derive(Debug)]
    pub struct Native {
        /// The OS that inspection found.
        pub os: Option<OsInfo>,
        /// Bytes read from the image by inspection (partition table, probes, detection).
        pub inspect_bytes: u64,
        /// Wall time of inspection.
        pub inspect_time: Duration,
        /// The OS volume's inventory.
        pub inventory: Inventory,
        /// Bytes read by the inventory alone (a fresh disk handle: nothing cached).
        pub inventory_bytes: u64,
        /// Wall time of the inventory alone.
        pub inventory_time: Duration,
    }

    /// Inspect `image` natively (as `snapscan inspect` does), then collect the inventory of its
    /// OS volume through a fresh disk handle, measuring each.
    pub fn read_natively(image: &Path) -> anyhow::Result<Native> {
        let opts = snapscan::inspect::Options::default();
        let started = Instant::now();
        let disk = Disk::open(image)?;
        let (report, _) = snapscan::inspect::enumerate(&disk, &opts)?;
        let inspect_time = started.elapsed();
        let inspect_bytes = disk.bytes_read();
        let os = report.os_root().context("no OS found")?;
        let index = os.volume.context("the OS has no volume")?;
        let vol = report.volumes.get(index).context("no such volume")?;

        let started = Instant::now();
        let disk = Disk::open(image)?;
        let volume = disk.volume(
            vol.start_bytes,
            vol.size_bytes,
            snapscan::disk::reader::Budget::new(opts.volume_read_budget),
        )?;
        let found = os.clone();
        let inventory =
            snapscan::fs::with_native(vol.filesystem, &volume, opts.volume_timeout, move |fs| {
                snapscan::inventory::collect(fs, &found)
            })
            .context("no native reader for the OS volume")??;
        Ok(Native {
            os: Some(os),
            inspect_bytes,
            inspect_time,
            inventory,
            inventory_bytes: disk.bytes_read(),
            inventory_time: started.elapsed(),
        })
    }

    /// The key and value name of a big-data `REG_SZ` in the `SOFTWARE` hive, and its length in
    /// characters (over 16344 bytes of UTF-16: stored as `db`).
    pub const BIG_VALUE: (&str, &str, usize) = (
        r"Microsoft\Windows\CurrentVersion\Setup",
        "SetupLog",
        30_000,
    );

    /// The text of [`BIG_VALUE`].
    pub fn big_value_text() -> String {
        (0..BIG_VALUE.2)
            .map(|i| char::from(b'a' + u8::try_from(i % 26).expect("below 26")))
            .collect()
    }

    /// The programs in the `Uninstall` keys: `(DisplayName, DisplayVersion, Publisher, wow64)`,
    /// `count` of them, every fourth one 32-bit.
    pub fn programs(count: usize) -> Vec<(String, String, String, bool)> {
        (0..count)
            .map(|i| {
                (
                    format!("Contoso Tool {i:04}"),
                    format!("{}.{}.{}", 1 + i % 9, i % 17, i),
                    format!("Vendor {:02} Ltd.", i % 40),
                    i % 4 == 3,
                )
            })
            .collect()
    }

    /// A GUID-looking name for filler item `i` of kind `kind`.
    fn guid(kind: u32, i: usize) -> String {
        let i = u64::try_from(i).expect("small");
        let x = (u64::from(kind) << 40) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{{{:08X}-{:04X}-{:04X}-{:04X}-{:012X}}}",
            x >> 32,
            (x >> 16) & 0xFFFF,
            x & 0xFFFF,
            i & 0xFFFF,
            x & 0xFFFF_FFFF_FFFF
        )
    }

    /// A `SOFTWARE` hive with `programs` programs for `flavor`: `mib` MiB of servicing blobs
    /// plus about 16 MiB of keys (126 MiB in all for `mib` = 110).
    pub fn software(flavor: WindowsFlavor, programs: usize, mib: usize) -> Hive {
        let e = expected(flavor);
        let (build, ubr) = e.build.split_once('.').expect("build has a UBR");
        let mut hive = Hive::with_root_name("CMI-CreateHive{199DAFC2-6F16-4946-BF90-5A3FC3A60902}");
        // Classes first, as in a real hive: the biggest subtree, far from CurrentVersion.
        for i in 0..12_000 {
            let clsid = hive.key(&format!(r"Classes\CLSID\{}", guid(1, i)));
            clsid.sz("", &format!("Contoso Component {i}"));
            clsid
                .key("InprocServer32")
                .expand_sz("", &format!(r"%SystemRoot%\System32\component{i}.dll"))
                .sz("ThreadingModel", "Both");
        }
        for i in 0..3_000 {
            hive.key(&format!(r"Classes\.ext{i}"))
                .sz("", &format!("Contoso.File.{i}"))
                .sz("Content Type", "application/octet-stream");
        }
        hive.key(r"Microsoft\Windows NT\CurrentVersion")
            .sz("SystemRoot", r"C:\Windows")
            .sz("ProductName", e.product_name)
            .sz("EditionID", e.edition)
            .sz("InstallationType", e.installation_type)
            .sz("CurrentVersion", "6.3")
            .dword("CurrentMajorVersionNumber", 10)
            .dword("CurrentMinorVersionNumber", 0)
            .sz("CurrentBuild", build)
            .sz("CurrentBuildNumber", build)
            .dword("UBR", ubr.parse().expect("UBR is a number"))
            .sz("DisplayVersion", e.display_version)
            .sz("ReleaseId", "2009")
            .qword("InstallTime", 133_485_408_000_000_000)
            .binary("DigitalProductId4", &[0x5A; 1272]);
        for i in 0..400 {
            hive.key(r"Microsoft\Windows NT\CurrentVersion\Fonts").sz(
                &format!("Contoso Font {i} (TrueType)"),
                &format!("font{i}.ttf"),
            );
        }
        let (key, name, _) = BIG_VALUE;
        hive.key(key).sz(name, &big_value_text());
        for (i, (name, version, publisher, wow64)) in
            super::realistic::programs(programs).into_iter().enumerate()
        {
            let view = if wow64 { r"WOW6432Node\" } else { "" };
            hive.key(&format!(
                r"{view}Microsoft\Windows\CurrentVersion\Uninstall\{}",
                guid(2, i)
            ))
            .sz("DisplayName", &name)
            .sz("DisplayVersion", &version)
            .sz("Publisher", &publisher)
            .sz("InstallLocation", &format!(r"C:\Program Files\{name}\"))
            .expand_sz("UninstallString", &format!(r"MsiExec.exe /X{}", guid(2, i)))
            .sz("InstallDate", "20240110")
            .dword("EstimatedSize", 20_480)
            .dword("NoModify", 1)
            .dword("Language", 1033);
        }
        // Updates without DisplayName and hidden system components, as on real Windows.
        hive.key(r"Microsoft\Windows\CurrentVersion\Uninstall\AddressBook");
        hive.key(r"Microsoft\Windows\CurrentVersion\Uninstall\Connection Manager")
            .sz("DisplayName", "Connection Manager")
            .dword("SystemComponent", 1);
        // Servicing packages carry the bulk: one big-data blob each, up to the size asked for.
        let blob = 60 * 1024;
        for i in 0..(mib * 1024 * 1024 / blob) {
            let data: Vec<u8> = (0..blob)
                .map(|b| u8::try_from((b + i) % 251).expect("below 251"))
                .collect();
            hive.key(&format!(
                r"Microsoft\Windows\CurrentVersion\Component Based Servicing\Packages\Package_{i:05}~31bf3856ad364e35~amd64~~10.0.{build}.1"
            ))
            .dword("CurrentState", 112)
            .binary("CatalogBlob", &data);
        }
        for i in 0..6_000 {
            hive.key(&format!(
                r"Microsoft\Contoso\Component{:03}\Setting{i}",
                i % 500
            ))
            .dword("Enabled", 1)
            .sz("Path", &format!(r"C:\ProgramData\Contoso\{i}"));
        }
        hive
    }

    /// A `SYSTEM` hive of about `mib` MiB for `flavor`.
    pub fn system(flavor: WindowsFlavor, mib: usize) -> Hive {
        let e = expected(flavor);
        let mut hive = Hive::system_base(e.hostname);
        let set = hive.key("ControlSet001");
        set.key(r"Services\Tcpip\Parameters")
            .sz("Hostname", e.hostname)
            .sz("Domain", "");
        // Services and their parameters, each with a mid-size binary value, up to the size.
        let per_service = 4096;
        for i in 0..(mib * 1024 * 1024 / per_service) {
            set.key(&format!(r"Services\ContosoSvc{i:05}"))
                .dword("Start", 3)
                .dword("Type", 1)
                .expand_sz(
                    "ImagePath",
                    &format!(r"\SystemRoot\System32\drivers\svc{i}.sys"),
                )
                .binary("FailureActions", &vec![0x11; per_service - 512]);
        }
        hive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lh_hashes() {
        struct Case {
            name: &'static str,
            input: &'static str,
            want: u32,
        }
        let cases = [
            Case {
                name: "empty",
                input: "",
                want: 0,
            },
            Case {
                name: "one letter",
                input: "a",
                want: 65,
            },
            Case {
                name: "two letters",
                input: "Ab",
                want: 65 * 37 + 66,
            },
            Case {
                name: "case-insensitive",
                input: "select",
                want: lh_hash("SELECT"),
            },
            // Wraps around: 37^7 > 2^32.
            Case {
                name: "long",
                input: "CurrentVersion",
                want: "CURRENTVERSION"
                    .bytes()
                    .fold(0u64, |h, b| (h * 37 + u64::from(b)) % (1 << 32))
                    .try_into()
                    .expect("reduced mod 2^32"),
            },
        ];
        for case in cases {
            assert_eq!(lh_hash(case.input), case.want, "{}", case.name);
        }
    }

    #[test]
    fn base_block() {
        let mut hive = Hive::new();
        hive.key("A").dword("V", 1);
        let bytes = hive.to_bytes().expect("to_bytes");
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(&bytes[0..4], b"regf");
        assert_eq!(u32_at(0x04), u32_at(0x08), "sequence numbers");
        assert_eq!((u32_at(0x14), u32_at(0x18)), (1, 5), "version");
        assert_eq!(u32_at(0x1FC), checksum(&bytes[..0x1FC]));
        let data_size = usize::try_from(u32_at(0x28)).expect("usize");
        assert_eq!(bytes.len(), BASE_BLOCK_SIZE + data_size);
        assert_eq!(&bytes[BASE_BLOCK_SIZE..BASE_BLOCK_SIZE + 4], b"hbin");
        let root = BASE_BLOCK_SIZE + usize::try_from(u32_at(0x24)).expect("usize");
        assert_eq!(&bytes[root + 4..root + 6], b"nk");
        let flags = u16::from_le_bytes([bytes[root + 6], bytes[root + 7]]);
        assert_eq!(flags, KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME);
    }
}
