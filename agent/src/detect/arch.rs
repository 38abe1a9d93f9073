//! CPU architecture from executable headers (placeholder, being written).

/// Architecture of an ELF file from its first bytes (`x86_64`, `aarch64`, ...).
pub fn elf_arch(_head: &[u8]) -> Option<&'static str> {
    None
}

/// Architecture of a PE file (Windows executable) from its first bytes.
pub fn pe_arch(_head: &[u8]) -> Option<&'static str> {
    None
}

/// Bytes to read from the start of an executable to decide its architecture.
pub const HEAD_LEN: u64 = 4096;
