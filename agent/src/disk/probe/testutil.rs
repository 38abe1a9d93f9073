//! What the probe tests share: [`Img`], a zeroed buffer with setters to lay out a superblock
//! field by field, the UUID every fixture carries, and [`Case`] with [`check`], which run a table
//! of images through [`probe`] and compare what it reports. Each filesystem's own fixture builder
//! and cases live in the `tests` module of its file.
// Fixtures are laid out with plain arithmetic on buffers we own; the lints of the parent module
// guard the parser, which reads untrusted bytes.
#![allow(clippy::arithmetic_side_effects)]

use super::{probe, FsKind, Probe};

/// A byte buffer with little helpers to patch fields.
#[derive(Clone)]
pub struct Img(pub Vec<u8>);

impl Img {
    pub fn new(len: usize) -> Self {
        Img(vec![0; len])
    }
    pub fn put(&mut self, off: usize, b: &[u8]) -> &mut Self {
        self.0[off..off + b.len()].copy_from_slice(b);
        self
    }
    pub fn le16(&mut self, off: usize, v: u16) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    pub fn le32(&mut self, off: usize, v: u32) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    pub fn le64(&mut self, off: usize, v: u64) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    pub fn be16(&mut self, off: usize, v: u16) -> &mut Self {
        self.put(off, &v.to_be_bytes())
    }
    pub fn be32(&mut self, off: usize, v: u32) -> &mut Self {
        self.put(off, &v.to_be_bytes())
    }
    pub fn be64(&mut self, off: usize, v: u64) -> &mut Self {
        self.put(off, &v.to_be_bytes())
    }
    pub fn done(&mut self) -> Vec<u8> {
        self.0.clone()
    }
}

pub const UUID: [u8; 16] = [
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01,
];
pub const UUID_STR: &str = "11223344-5566-7788-99aa-bbccddeeff01";

pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

pub fn p(kind: FsKind, label: Option<&str>, uuid: Option<&str>) -> Probe {
    Probe::new(kind, label.map(str::to_owned), uuid.map(str::to_owned))
}

pub fn unknown() -> Probe {
    p(FsKind::Unknown, None, None)
}

pub struct Case {
    name: &'static str,
    image: Vec<u8>,
    want: Probe,
}

pub fn case(name: &'static str, image: Vec<u8>, want: Probe) -> Case {
    Case { name, image, want }
}

pub fn check(cases: Vec<Case>) {
    for c in cases {
        let got = probe(c.image.as_slice()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(got, c.want, "case {}", c.name);
    }
}
