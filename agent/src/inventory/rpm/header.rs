//! The rpm header blob: the serialized header that the rpm database stores per installed
//! package (the `blob` column of the sqlite `Packages` table, the values of the BerkeleyDB
//! `Packages` file), parsed by our own code into the few tags the inventory needs.
//!
//! Layout (all integers big-endian): `il` (index entry count), `dl` (data length), `il` index
//! entries of 16 bytes (`tag`, `type`, `offset` into the data, `count`), then `dl` bytes of data.
//! When the first entry is a region tag (`HEADERIMAGE` 61, `HEADERSIGNATURES` 62,
//! `HEADERIMMUTABLE` 63), it must be a 16-byte `BIN` whose trailer in the data repeats the tag
//! with a negative offset of at most `il` entries, as rpm's `hdrblobVerifyRegion` checks.
//!
//! Bounds are rpm's own (`hdrchkTags`, `hdrchkData`): at most [`MAX_INDEX_ENTRIES`] entries and
//! [`MAX_DATA_LEN`] data bytes, and the blob must be exactly `8 + 16 * il + dl` bytes. Every
//! entry's type must be known and its offset inside the data; the values read (`STRING`,
//! `STRING_ARRAY` and `I18NSTRING` as their first string, `INT32` as its first number) must end
//! inside the data. Strings are decoded lossily as UTF-8.
//!
//! It does not verify signatures or digests, does not read file lists, dependencies or any tag
//! other than those of [`Header`], and does not handle the lead and signature header of `.rpm`
//! package files (only the database form). Format: rpm's `lib/header.c` and
//! <https://rpm-software-management.github.io/rpm/manual/format_v4.html>.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

/// Most index entries in one header (rpm's `hdrchkTags`: below 2^16).
pub const MAX_INDEX_ENTRIES: u32 = 0xffff;
/// Most data bytes in one header (rpm's `hdrchkData`: below 2^24).
pub const MAX_DATA_LEN: u32 = 0x00ff_ffff;
/// The longest blob that can pass the two limits above: `8 + 16 * MAX_INDEX_ENTRIES +
/// MAX_DATA_LEN`.
pub const MAX_BLOB_LEN: usize = 8 + 16 * 0xffff + 0x00ff_ffff;

/// `RPMTAG_NAME`.
pub const TAG_NAME: u32 = 1000;
/// `RPMTAG_VERSION`.
pub const TAG_VERSION: u32 = 1001;
/// `RPMTAG_RELEASE`.
pub const TAG_RELEASE: u32 = 1002;
/// `RPMTAG_EPOCH`.
pub const TAG_EPOCH: u32 = 1003;
/// `RPMTAG_VENDOR`.
pub const TAG_VENDOR: u32 = 1011;
/// `RPMTAG_ARCH`.
pub const TAG_ARCH: u32 = 1022;
/// `RPMTAG_SOURCERPM`.
pub const TAG_SOURCERPM: u32 = 1044;

/// Region tags: `HEADERIMAGE`, `HEADERSIGNATURES`, `HEADERIMMUTABLE`.
const REGION_TAGS: [u32; 3] = [61, 62, 63];
/// Type numbers (`rpmTagType`).
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_BIN: u32 = 7;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;
/// Size of one index entry.
const ENTRY_LEN: usize = 16;

/// Why a header blob was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the 8-byte `il`/`dl` preamble.
    #[error("header blob of {0} bytes is shorter than its 8-byte preamble")]
    Truncated(usize),
    /// No index entries at all.
    #[error("header has no index entries")]
    Empty,
    /// `il` above [`MAX_INDEX_ENTRIES`].
    #[error("header claims {0} index entries, more than {MAX_INDEX_ENTRIES}")]
    TooManyEntries(u32),
    /// `dl` above [`MAX_DATA_LEN`].
    #[error("header claims {0} data bytes, more than {MAX_DATA_LEN}")]
    DataTooLarge(u32),
    /// The blob is not exactly `8 + 16 * il + dl` bytes.
    #[error("header blob is {actual} bytes, its preamble says {expected}")]
    LengthMismatch {
        /// From the preamble.
        expected: usize,
        /// The blob's length.
        actual: usize,
    },
    /// An index entry with a type rpm does not define.
    #[error("index entry {index} (tag {tag}) has unknown type {ty}")]
    BadType {
        /// Entry number.
        index: usize,
        /// Its tag.
        tag: u32,
        /// Its type.
        ty: u32,
    },
    /// An index entry whose offset is outside the data.
    #[error("index entry {index} (tag {tag}) has offset {offset}, outside the {len} data bytes")]
    OffsetOutOfRange {
        /// Entry number.
        index: usize,
        /// Its tag.
        tag: u32,
        /// Its offset, as stored (negative offsets show as large numbers).
        offset: u32,
        /// `dl`.
        len: u32,
    },
    /// A malformed region tag or trailer.
    #[error("bad header region: {0}")]
    BadRegion(&'static str),
    /// A tag read with a type it cannot have.
    #[error("tag {tag} has type {ty}, not {want}")]
    WrongType {
        /// The tag.
        tag: u32,
        /// Its type.
        ty: u32,
        /// What was expected.
        want: &'static str,
    },
    /// A value that runs past the end of the data (or a string without its NUL).
    #[error("value of tag {0} runs past the end of the header data")]
    ValueOutOfRange(u32),
    /// A tag every package has is absent.
    #[error("header has no {0} tag")]
    MissingTag(&'static str),
}

impl HeaderError {
    /// A short stable label for logs and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            HeaderError::Truncated(_) => "truncated",
            HeaderError::Empty => "empty",
            HeaderError::TooManyEntries(_) => "too_many_entries",
            HeaderError::DataTooLarge(_) => "data_too_large",
            HeaderError::LengthMismatch { .. } => "length_mismatch",
            HeaderError::BadType { .. } => "bad_type",
            HeaderError::OffsetOutOfRange { .. } => "offset_out_of_range",
            HeaderError::BadRegion(_) => "bad_region",
            HeaderError::WrongType { .. } => "wrong_type",
            HeaderError::ValueOutOfRange(_) => "value_out_of_range",
            HeaderError::MissingTag(_) => "missing_tag",
        }
    }
}

/// The tags of one installed package that the inventory uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `NAME`.
    pub name: String,
    /// `VERSION`.
    pub version: String,
    /// `RELEASE`.
    pub release: String,
    /// `EPOCH`, when the header has one (absent is not the same as 0 for display).
    pub epoch: Option<u32>,
    /// `ARCH` (`x86_64`, `noarch`); `gpg-pubkey` pseudo-packages have none.
    pub arch: Option<String>,
    /// `SOURCERPM`, the source package's file name (`glibc-2.34-60.el9.src.rpm`).
    pub source_rpm: Option<String>,
    /// `VENDOR` (`Red Hat, Inc.`).
    pub vendor: Option<String>,
}

impl Header {
    /// `[EPOCH:]VERSION-RELEASE`, as `rpm -q --qf '%{EVR}'` prints it: the epoch only when the
    /// header has one.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }
}

/// One index entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    ty: u32,
    offset: u32,
    count: u32,
}

/// The big-endian u32 at `at`, if the slice holds it.
fn be32(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let bytes: [u8; 4] = b.get(at..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// `u32` → `usize` (lossless on the 32- and 64-bit targets snapscan builds for).
fn us(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A checked view of one header: index entries and data.
struct Blob<'a> {
    entries: Vec<Entry>,
    data: &'a [u8],
}

impl<'a> Blob<'a> {
    fn new(blob: &'a [u8]) -> Result<Self, HeaderError> {
        let (Some(il), Some(dl)) = (be32(blob, 0), be32(blob, 4)) else {
            return Err(HeaderError::Truncated(blob.len()));
        };
        if il == 0 {
            return Err(HeaderError::Empty);
        }
        if il > MAX_INDEX_ENTRIES {
            return Err(HeaderError::TooManyEntries(il));
        }
        if dl > MAX_DATA_LEN {
            return Err(HeaderError::DataTooLarge(dl));
        }
        // Cannot overflow: il < 2^16 and dl < 2^24 (checked above).
        let index_end = us(il)
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(8))
            .ok_or(HeaderError::TooManyEntries(il))?;
        let expected = index_end
            .checked_add(us(dl))
            .ok_or(HeaderError::DataTooLarge(dl))?;
        if blob.len() != expected {
            return Err(HeaderError::LengthMismatch {
                expected,
                actual: blob.len(),
            });
        }
        let index = blob.get(8..index_end).unwrap_or_default();
        let data = blob.get(index_end..).unwrap_or_default();
        let mut entries = Vec::with_capacity(us(il));
        for (i, e) in index.chunks_exact(ENTRY_LEN).enumerate() {
            let entry = Entry {
                tag: be32(e, 0).unwrap_or_default(),
                ty: be32(e, 4).unwrap_or_default(),
                offset: be32(e, 8).unwrap_or_default(),
                count: be32(e, 12).unwrap_or_default(),
            };
            if entry.ty > TYPE_I18NSTRING {
                return Err(HeaderError::BadType {
                    index: i,
                    tag: entry.tag,
                    ty: entry.ty,
                });
            }
            if entry.offset > dl {
                return Err(HeaderError::OffsetOutOfRange {
                    index: i,
                    tag: entry.tag,
                    offset: entry.offset,
                    len: dl,
                });
            }
            entries.push(entry);
        }
        let blob = Blob { entries, data };
        blob.check_region(il)?;
        Ok(blob)
    }

    /// The region tag checks of rpm's `hdrblobVerifyRegion`, when the first entry is one.
    fn check_region(&self, il: u32) -> Result<(), HeaderError> {
        let Some(first) = self.entries.first() else {
            return Ok(());
        };
        if !REGION_TAGS.contains(&first.tag) {
            return Ok(());
        }
        if first.ty != TYPE_BIN || first.count != 16 {
            return Err(HeaderError::BadRegion("region tag is not a 16-byte BIN"));
        }
        let start = us(first.offset);
        let trailer = start
            .checked_add(ENTRY_LEN)
            .and_then(|end| self.data.get(start..end))
            .ok_or(HeaderError::BadRegion("region trailer outside the data"))?;
        let (tag, ty, offset, count) = (
            be32(trailer, 0).unwrap_or_default(),
            be32(trailer, 4).unwrap_or_default(),
            be32(trailer, 8).unwrap_or_default(),
            be32(trailer, 12).unwrap_or_default(),
        );
        if tag != first.tag || ty != TYPE_BIN || count != 16 {
            return Err(HeaderError::BadRegion(
                "region trailer does not repeat the region tag",
            ));
        }
        // The trailer's offset is minus the region's size in bytes.
        let size = i32::from_be_bytes(offset.to_be_bytes())
            .checked_neg()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(HeaderError::BadRegion(
                "region trailer offset is not negative",
            ))?;
        if size % 16 != 0 || size / 16 > il {
            return Err(HeaderError::BadRegion(
                "region trailer covers more entries than the header has",
            ));
        }
        Ok(())
    }

    fn find(&self, tag: u32) -> Option<Entry> {
        self.entries.iter().find(|e| e.tag == tag).copied()
    }

    /// The first string of a `STRING`, `STRING_ARRAY` or `I18NSTRING` tag.
    fn string(&self, tag: u32) -> Result<Option<String>, HeaderError> {
        let Some(e) = self.find(tag) else {
            return Ok(None);
        };
        if !matches!(e.ty, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) {
            return Err(HeaderError::WrongType {
                tag,
                ty: e.ty,
                want: "a string",
            });
        }
        if e.count == 0 {
            return Err(HeaderError::ValueOutOfRange(tag));
        }
        let rest = self.data.get(us(e.offset)..).unwrap_or_default();
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(HeaderError::ValueOutOfRange(tag))?;
        let bytes = rest.get(..nul).unwrap_or_default();
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The first number of an `INT32` tag.
    fn int32(&self, tag: u32) -> Result<Option<u32>, HeaderError> {
        let Some(e) = self.find(tag) else {
            return Ok(None);
        };
        if e.ty != TYPE_INT32 {
            return Err(HeaderError::WrongType {
                tag,
                ty: e.ty,
                want: "INT32",
            });
        }
        if e.count == 0 {
            return Err(HeaderError::ValueOutOfRange(tag));
        }
        be32(self.data, us(e.offset))
            .map(Some)
            .ok_or(HeaderError::ValueOutOfRange(tag))
    }
}

/// rpm writes `(none)` for an unset string in some old headers.
fn set(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty() && s != "(none)")
}

/// Parse one header blob as the rpm database stores it.
///
/// # Errors
///
/// Any [`HeaderError`]: a blob that breaks the bounds or layout described in the module
/// header, or lacks `NAME`, `VERSION` or `RELEASE`.
pub fn parse(blob: &[u8]) -> Result<Header, HeaderError> {
    let b = Blob::new(blob)?;
    let required = |tag, what| b.string(tag)?.ok_or(HeaderError::MissingTag(what));
    Ok(Header {
        name: required(TAG_NAME, "NAME")?,
        version: required(TAG_VERSION, "VERSION")?,
        release: required(TAG_RELEASE, "RELEASE")?,
        epoch: b.int32(TAG_EPOCH)?,
        arch: set(b.string(TAG_ARCH)?),
        source_rpm: set(b.string(TAG_SOURCERPM)?),
        vendor: set(b.string(TAG_VENDOR)?),
    })
}

/// Test helper: serialize a header from `(tag, type, value bytes, count)` entries, with a
/// `HEADERIMMUTABLE` region around all of them (as rpm writes installed headers).
#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn build(entries: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
    let mut data: Vec<u8> = Vec::new();
    let mut index: Vec<[u32; 4]> = Vec::new();
    for (tag, ty, value, count) in entries {
        if *ty == TYPE_INT32 {
            while !data.len().is_multiple_of(4) {
                data.push(0);
            }
        }
        index.push([*tag, *ty, u32::try_from(data.len()).expect("small"), *count]);
        data.extend_from_slice(value);
    }
    let il = u32::try_from(index.len() + 1).expect("small");
    let trailer_at = u32::try_from(data.len()).expect("small");
    let region_size = i32::try_from(il * 16).expect("small");
    for v in [
        63u32,
        TYPE_BIN,
        u32::from_be_bytes((-region_size).to_be_bytes()),
        16,
    ] {
        data.extend_from_slice(&v.to_be_bytes());
    }
    index.insert(0, [63, TYPE_BIN, trailer_at, 16]);
    let mut out = Vec::new();
    out.extend_from_slice(&il.to_be_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
    for e in &index {
        for v in e {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&data);
    out
}

/// Test helper: a typical installed package header.
#[cfg(test)]
pub(crate) fn sample(name: &str, epoch: Option<u32>) -> Vec<u8> {
    let z = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    };
    let (n, v, r, a) = (z(name), z("1.2.3"), z("4.el9"), z("x86_64"));
    let (src, vendor) = (z(&format!("{name}-src-1.2.3-4.el9.src.rpm")), z("Acme"));
    let e = epoch.map(u32::to_be_bytes);
    let mut entries: Vec<(u32, u32, &[u8], u32)> = vec![
        (TAG_NAME, TYPE_STRING, &n, 1),
        (TAG_VERSION, TYPE_STRING, &v, 1),
        (TAG_RELEASE, TYPE_STRING, &r, 1),
        (TAG_VENDOR, TYPE_STRING, &vendor, 1),
        (TAG_ARCH, TYPE_STRING, &a, 1),
        (TAG_SOURCERPM, TYPE_STRING, &src, 1),
    ];
    if let Some(e) = &e {
        entries.push((TAG_EPOCH, TYPE_INT32, e, 1));
    }
    build(&entries)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_sample() {
        let h = parse(&sample("bash", Some(1))).expect("parse");
        assert_eq!(
            h,
            Header {
                name: "bash".into(),
                version: "1.2.3".into(),
                release: "4.el9".into(),
                epoch: Some(1),
                arch: Some("x86_64".into()),
                source_rpm: Some("bash-src-1.2.3-4.el9.src.rpm".into()),
                vendor: Some("Acme".into()),
            }
        );
        assert_eq!(h.evr(), "1:1.2.3-4.el9");
        let h = parse(&sample("zlib", None)).expect("parse");
        assert_eq!((h.epoch, h.evr().as_str()), (None, "1.2.3-4.el9"));
    }

    /// Patch the big-endian u32 at `at`.
    fn patch(mut b: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        b
    }

    #[test]
    fn corruptions() {
        let good = sample("bash", Some(1));
        let il = 8usize; // region + 6 strings + epoch
        let dl = u32::from_be_bytes(good[4..8].try_into().expect("4")) as usize;
        let data_at = 8 + il * 16;
        // Entry 1 is NAME; entry 7 is EPOCH.
        let entry = |i: usize, field: usize| 8 + i * 16 + field * 4;
        struct Case {
            name: &'static str,
            blob: Vec<u8>,
            want: &'static str,
        }
        let cases = [
            Case {
                name: "empty",
                blob: vec![],
                want: "truncated",
            },
            Case {
                name: "half a preamble",
                blob: good[..5].to_vec(),
                want: "truncated",
            },
            Case {
                name: "no entries",
                blob: patch(good.clone(), 0, 0),
                want: "empty",
            },
            Case {
                name: "absurd index count",
                blob: patch(good.clone(), 0, 0xffff_fff0),
                want: "too_many_entries",
            },
            Case {
                name: "absurd data length",
                blob: patch(good.clone(), 4, 0x7fff_ffff),
                want: "data_too_large",
            },
            Case {
                name: "truncated data",
                blob: good[..good.len() - 1].to_vec(),
                want: "length_mismatch",
            },
            Case {
                name: "trailing bytes",
                blob: [good.clone(), vec![0]].concat(),
                want: "length_mismatch",
            },
            Case {
                name: "one more entry claimed",
                blob: patch(good.clone(), 0, il as u32 + 1),
                want: "length_mismatch",
            },
            Case {
                name: "unknown type",
                blob: patch(good.clone(), entry(1, 1), 77),
                want: "bad_type",
            },
            Case {
                name: "offset past the data",
                blob: patch(good.clone(), entry(1, 2), dl as u32 + 1),
                want: "offset_out_of_range",
            },
            Case {
                name: "negative offset",
                blob: patch(good.clone(), entry(2, 2), u32::MAX),
                want: "offset_out_of_range",
            },
            Case {
                name: "region not BIN",
                blob: patch(good.clone(), entry(0, 1), TYPE_STRING),
                want: "bad_region",
            },
            Case {
                name: "region trailer outside the data",
                blob: patch(good.clone(), entry(0, 2), dl as u32 - 8),
                want: "bad_region",
            },
            Case {
                name: "region trailer with another tag",
                blob: patch(good.clone(), data_at + dl - 16, 62),
                want: "bad_region",
            },
            Case {
                name: "region trailer offset positive",
                blob: patch(good.clone(), data_at + dl - 8, 16),
                want: "bad_region",
            },
            Case {
                name: "region trailer offset i32::MIN",
                blob: patch(good.clone(), data_at + dl - 8, 0x8000_0000),
                want: "bad_region",
            },
            Case {
                name: "region bigger than the index",
                blob: patch(good.clone(), data_at + dl - 8, (-(16 * 9i32)) as u32),
                want: "bad_region",
            },
            Case {
                name: "name is an INT32",
                blob: patch(good.clone(), entry(1, 1), TYPE_INT32),
                want: "wrong_type",
            },
            Case {
                name: "epoch is a string",
                blob: patch(good.clone(), entry(7, 1), TYPE_STRING),
                want: "wrong_type",
            },
            Case {
                name: "string without its NUL (points at the trailer's last byte)",
                blob: patch(good.clone(), entry(1, 2), dl as u32 - 1),
                want: "value_out_of_range",
            },
            Case {
                name: "int32 past the end",
                blob: patch(good.clone(), entry(7, 2), dl as u32 - 2),
                want: "value_out_of_range",
            },
            Case {
                name: "string with count 0",
                blob: patch(good.clone(), entry(1, 3), 0),
                want: "value_out_of_range",
            },
            Case {
                name: "no NAME",
                blob: patch(good.clone(), entry(1, 0), 5000),
                want: "missing_tag",
            },
        ];
        for c in cases {
            let got = parse(&c.blob).map_err(|e| e.kind());
            assert_eq!(got.err(), Some(c.want), "case {}", c.name);
        }
    }

    #[test]
    fn odd_but_valid() {
        let z = b"x\0";
        struct Case {
            name: &'static str,
            blob: Vec<u8>,
            want: (&'static str, Option<&'static str>),
        }
        let cases = [
            Case {
                name: "i18n and string-array names take the first string",
                blob: build(&[
                    (TAG_NAME, TYPE_I18NSTRING, b"first\0second\0", 2),
                    (TAG_VERSION, TYPE_STRING_ARRAY, b"1\0", 1),
                    (TAG_RELEASE, TYPE_STRING, b"2\0", 1),
                ]),
                want: ("first", None),
            },
            Case {
                name: "(none) arch is no arch",
                blob: build(&[
                    (TAG_NAME, TYPE_STRING, z, 1),
                    (TAG_VERSION, TYPE_STRING, z, 1),
                    (TAG_RELEASE, TYPE_STRING, z, 1),
                    (TAG_ARCH, TYPE_STRING, b"(none)\0", 1),
                ]),
                want: ("x", None),
            },
            Case {
                name: "no region tag (legacy header)",
                blob: {
                    // Drop the region entry and its trailer.
                    let b = build(&[
                        (TAG_NAME, TYPE_STRING, z, 1),
                        (TAG_VERSION, TYPE_STRING, z, 1),
                        (TAG_RELEASE, TYPE_STRING, z, 1),
                        (TAG_ARCH, TYPE_STRING, b"noarch\0", 1),
                    ]);
                    let dl = u32::from_be_bytes(b[4..8].try_into().expect("4")) - 16;
                    let mut out = Vec::new();
                    out.extend_from_slice(&4u32.to_be_bytes());
                    out.extend_from_slice(&dl.to_be_bytes());
                    out.extend_from_slice(&b[24..24 + 64]);
                    out.extend_from_slice(&b[24 + 64..24 + 64 + dl as usize]);
                    out
                },
                want: ("x", Some("noarch")),
            },
        ];
        for c in cases {
            let h = parse(&c.blob).unwrap_or_else(|e| panic!("case {}: {e}", c.name));
            assert_eq!(
                (h.name.as_str(), h.arch.as_deref()),
                c.want,
                "case {}",
                c.name
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_headers(at in 0usize..400, byte in any::<u8>()) {
            let mut b = sample("bash", Some(3));
            let len = b.len();
            b[at % len] = byte;
            let _ = parse(&b);
        }
    }
}
