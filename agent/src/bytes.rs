//! Checked readers of fixed-size fields in byte buffers from untrusted disks, and the ID formats
//! those fields print as. Every reader returns `None` instead of panicking when the field is not
//! wholly inside the buffer.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

/// `len` bytes at `off`.
pub fn get(b: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    b.get(off..off.checked_add(len)?)
}

/// `N` bytes at `off` as an array.
pub fn arr<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    get(b, off, N)?.try_into().ok()
}

/// The byte at `off`.
pub fn byte(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// Little-endian u16 at `off`.
pub fn le16(b: &[u8], off: usize) -> Option<u16> {
    arr(b, off).map(u16::from_le_bytes)
}

/// Little-endian u32 at `off`.
pub fn le32(b: &[u8], off: usize) -> Option<u32> {
    arr(b, off).map(u32::from_le_bytes)
}

/// Little-endian u64 at `off`.
pub fn le64(b: &[u8], off: usize) -> Option<u64> {
    arr(b, off).map(u64::from_le_bytes)
}

/// Big-endian u16 at `off`.
pub fn be16(b: &[u8], off: usize) -> Option<u16> {
    arr(b, off).map(u16::from_be_bytes)
}

/// Big-endian u32 at `off`.
pub fn be32(b: &[u8], off: usize) -> Option<u32> {
    arr(b, off).map(u32::from_be_bytes)
}

/// Big-endian u64 at `off`.
pub fn be64(b: &[u8], off: usize) -> Option<u64> {
    arr(b, off).map(u64::from_be_bytes)
}

/// Whether the bytes at `off` are `want`.
pub fn field_is(b: &[u8], off: usize, want: &[u8]) -> bool {
    get(b, off, want.len()) == Some(want)
}

/// UTF-16LE text up to the first NUL (or the end), lossily decoded.
pub fn utf16z(raw: &[u8]) -> String {
    let units = raw
        .chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok().map(u16::from_le_bytes))
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A 16-byte UUID in the usual `8-4-4-4-12` lowercase form (bytes in order, as Linux stores
/// them); `None` when all zero or not 16 bytes.
pub fn dce_uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex_lower(get(b, 0, 4)?),
        hex_lower(get(b, 4, 2)?),
        hex_lower(get(b, 6, 2)?),
        hex_lower(get(b, 8, 2)?),
        hex_lower(get(b, 10, 6)?)
    ))
}

/// A Microsoft GUID (first three groups little-endian, as GPT and BitLocker store them) in the
/// same form; `None` when all zero or not 16 bytes.
pub fn ms_guid(b: &[u8]) -> Option<String> {
    let g: [u8; 16] = b.try_into().ok()?;
    let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = g;
    dce_uuid(&[[a3, a2, a1, a0, b1, b0, c1, c0].as_slice(), rest.as_slice()].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_ids() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(le32(&b, 4), Some(0x0807_0605));
        assert_eq!(be16(&b, 0), Some(0x0102));
        assert_eq!(le64(&b, 1), None, "one byte short");
        assert_eq!(le16(&b, usize::MAX), None, "offset overflow");
        let linux = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        assert_eq!(
            ms_guid(&linux).as_deref(),
            Some("0fc63daf-8483-4772-8e79-3d69d8477de4")
        );
        assert_eq!(dce_uuid(&[0; 16]), None);
        assert_eq!(utf16z(&[b'h', 0, b'i', 0, 0, 0, b'x', 0]), "hi");
    }
}
