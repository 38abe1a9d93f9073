//! CPU architecture from executable headers: ELF for Linux, PE/COFF for Windows.
//!
//! Both functions look only at the first [`HEAD_LEN`] bytes of a file that the caller read: the
//! ELF identification and `e_machine` field, or the MS-DOS header's `e_lfanew`, the `PE\0\0`
//! signature and the COFF `Machine` field. Names follow `uname -m` (`x86_64`, `aarch64`,
//! `ppc64le`, `s390x`, `mips64`...). Nothing else is parsed (no program headers, sections or
//! optional header), and nothing is loaded or run. The bytes come from an untrusted disk: every
//! read is bounds-checked and every offset computed with checked arithmetic, so any input, however
//! short or hostile, gives `None` rather than a panic.
//!
//! References: the System V gABI "ELF Header" chapter
//! (<https://www.sco.com/developers/gabi/latest/ch4.eheader.html>) and Microsoft's "PE Format"
//! (<https://learn.microsoft.com/en-us/windows/win32/debug/pe-format>).

#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

/// Bytes to read from the start of an executable to decide its architecture. The ELF fields are
/// in the first 20 bytes; a PE header whose `e_lfanew` points beyond this is not recognised
/// (linkers put it at 0x80-0x118).
pub const HEAD_LEN: u64 = 4096;

/// `e_ident[EI_CLASS]`: the word size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `ELFCLASS32`.
    Elf32,
    /// `ELFCLASS64`.
    Elf64,
}

/// A constraint of an [`ELF_MACHINES`] row on the class or byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Is<T> {
    /// Anything.
    Any,
    /// Exactly this.
    Only(T),
}

impl<T: PartialEq> Is<T> {
    fn matches(&self, value: &T) -> bool {
        match self {
            Is::Any => true,
            Is::Only(want) => want == value,
        }
    }
}

/// `e_ident[EI_DATA]`: the byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    /// `ELFDATA2LSB`.
    Little,
    /// `ELFDATA2MSB`.
    Big,
}

use crate::bytes::arr;
use Class::{Elf32, Elf64};
use Endian::{Big, Little};
use Is::{Any, Only};

/// `(e_machine, class, byte order, name)`; the first matching row wins.
const ELF_MACHINES: &[(u16, Is<Class>, Is<Endian>, &str)] = &[
    (62, Only(Elf64), Only(Little), "x86_64"),   // EM_X86_64
    (3, Only(Elf32), Only(Little), "i686"),      // EM_386
    (183, Only(Elf64), Only(Little), "aarch64"), // EM_AARCH64
    (183, Only(Elf64), Only(Big), "aarch64_be"),
    (40, Only(Elf32), Only(Little), "arm"), // EM_ARM
    (40, Only(Elf32), Only(Big), "armeb"),
    (243, Only(Elf64), Only(Little), "riscv64"), // EM_RISCV
    (243, Only(Elf32), Only(Little), "riscv32"),
    (21, Only(Elf64), Only(Little), "ppc64le"), // EM_PPC64
    (21, Only(Elf64), Only(Big), "ppc64"),
    (20, Only(Elf32), Only(Big), "ppc"),   // EM_PPC
    (22, Only(Elf64), Only(Big), "s390x"), // EM_S390
    (22, Only(Elf32), Only(Big), "s390"),
    (8, Only(Elf64), Any, "mips64"), // EM_MIPS; uname says mips64 for both byte orders
    (8, Only(Elf32), Any, "mips"),
    (258, Only(Elf64), Only(Little), "loongarch64"), // EM_LOONGARCH
    (258, Only(Elf32), Only(Little), "loongarch32"),
    (43, Only(Elf64), Only(Big), "sparc64"), // EM_SPARCV9
    (2, Only(Elf32), Only(Big), "sparc"),    // EM_SPARC
    (50, Only(Elf64), Only(Little), "ia64"), // EM_IA_64
    (15, Only(Elf32), Only(Big), "parisc"),  // EM_PARISC
    (4, Only(Elf32), Only(Big), "m68k"),     // EM_68K
    (42, Only(Elf32), Only(Little), "sh4"),  // EM_SH
    (0x9026, Only(Elf64), Only(Little), "alpha"), // EM_ALPHA (unofficial, used by Linux)
];

/// COFF `Machine` → name (`IMAGE_FILE_MACHINE_*`).
const PE_MACHINES: &[(u16, &str)] = &[
    (0x8664, "x86_64"),      // AMD64
    (0x014c, "i686"),        // I386
    (0xaa64, "aarch64"),     // ARM64 (also ARM64X)
    (0xa641, "aarch64"),     // ARM64EC
    (0x01c4, "arm"),         // ARMNT (Thumb-2, Windows RT)
    (0x01c0, "arm"),         // ARM
    (0x01c2, "arm"),         // THUMB
    (0x0200, "ia64"),        // IA64
    (0x5064, "riscv64"),     // RISCV64
    (0x5032, "riscv32"),     // RISCV32
    (0x6264, "loongarch64"), // LOONGARCH64
    (0x6232, "loongarch32"), // LOONGARCH32
];

/// Architecture of an ELF file from its first bytes (`x86_64`, `aarch64`, ...): `None` when the
/// bytes are not an ELF header or name a machine not in the table.
pub fn elf_arch(head: &[u8]) -> Option<&'static str> {
    if head.get(..4)? != b"\x7fELF" {
        return None;
    }
    let class = match head.get(4)? {
        1 => Elf32,
        2 => Elf64,
        _ => return None,
    };
    let endian = match head.get(5)? {
        1 => Little,
        2 => Big,
        _ => return None,
    };
    let raw = arr::<2>(head, 0x12)?; // e_machine, after e_ident[16] and e_type
    let machine = match endian {
        Little => u16::from_le_bytes(raw),
        Big => u16::from_be_bytes(raw),
    };
    ELF_MACHINES
        .iter()
        .find(|(m, c, e, _)| *m == machine && c.matches(&class) && e.matches(&endian))
        .map(|(_, _, _, name)| *name)
}

/// Architecture of a PE file (Windows executable) from its first bytes (`x86_64`, `i686`,
/// `aarch64`, `arm`, ...): `None` when the bytes are not an MS-DOS header pointing at a `PE\0\0`
/// signature within `head`, or the machine is not in the table.
pub fn pe_arch(head: &[u8]) -> Option<&'static str> {
    if head.get(..2)? != b"MZ" {
        return None;
    }
    let e_lfanew = usize::try_from(u32::from_le_bytes(arr::<4>(head, 0x3c)?)).ok()?;
    if &arr::<4>(head, e_lfanew)? != b"PE\0\0" {
        return None;
    }
    let machine = u16::from_le_bytes(arr::<2>(head, e_lfanew.checked_add(4)?)?);
    PE_MACHINES
        .iter()
        .find(|(m, _)| *m == machine)
        .map(|(_, name)| *name)
}

#[cfg(test)]
// Fixture builders index and add freely: they build headers, they do not parse them.
#[allow(clippy::arithmetic_side_effects, clippy::as_conversions)]
mod tests {
    use super::*;

    /// A 64-byte ELF header with the given class, data encoding and machine.
    fn elf(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[6] = 1; // EV_CURRENT
        let m = if data == 2 {
            machine.to_be_bytes()
        } else {
            machine.to_le_bytes()
        };
        h[0x12..0x14].copy_from_slice(&m);
        h
    }

    /// `len` bytes starting with an MS-DOS header whose `e_lfanew` is `lfanew`, and the PE
    /// signature and machine there if they fit.
    fn pe(lfanew: u32, machine: u16, len: usize) -> Vec<u8> {
        let mut h = vec![0u8; len];
        h[..2].copy_from_slice(b"MZ");
        h[0x3c..0x40].copy_from_slice(&lfanew.to_le_bytes());
        let at = lfanew as usize;
        if at + 6 <= len {
            h[at..at + 4].copy_from_slice(b"PE\0\0");
            h[at + 4..at + 6].copy_from_slice(&machine.to_le_bytes());
        }
        h
    }

    #[test]
    fn elf_table() {
        struct Case {
            name: &'static str,
            head: Vec<u8>,
            want: Option<&'static str>,
        }
        let mut truncated = elf(2, 1, 62);
        truncated.truncate(0x13);
        let cases = [
            Case {
                name: "x86_64",
                head: elf(2, 1, 62),
                want: Some("x86_64"),
            },
            Case {
                name: "i386",
                head: elf(1, 1, 3),
                want: Some("i686"),
            },
            Case {
                name: "aarch64",
                head: elf(2, 1, 183),
                want: Some("aarch64"),
            },
            Case {
                name: "aarch64 big-endian",
                head: elf(2, 2, 183),
                want: Some("aarch64_be"),
            },
            Case {
                name: "armhf",
                head: elf(1, 1, 40),
                want: Some("arm"),
            },
            Case {
                name: "riscv64",
                head: elf(2, 1, 243),
                want: Some("riscv64"),
            },
            Case {
                name: "ppc64le",
                head: elf(2, 1, 21),
                want: Some("ppc64le"),
            },
            Case {
                name: "ppc64 big-endian",
                head: elf(2, 2, 21),
                want: Some("ppc64"),
            },
            Case {
                name: "s390x",
                head: elf(2, 2, 22),
                want: Some("s390x"),
            },
            Case {
                name: "mips64el",
                head: elf(2, 1, 8),
                want: Some("mips64"),
            },
            Case {
                name: "mips64 big-endian",
                head: elf(2, 2, 8),
                want: Some("mips64"),
            },
            Case {
                name: "mipsel",
                head: elf(1, 1, 8),
                want: Some("mips"),
            },
            Case {
                name: "loongarch64",
                head: elf(2, 1, 258),
                want: Some("loongarch64"),
            },
            Case {
                name: "x86_64 machine in a 32-bit file",
                head: elf(1, 1, 62),
                want: None,
            },
            Case {
                name: "unknown machine",
                head: elf(2, 1, 0xbeef),
                want: None,
            },
            Case {
                name: "bad class",
                head: elf(3, 1, 62),
                want: None,
            },
            Case {
                name: "bad data encoding",
                head: elf(2, 0, 62),
                want: None,
            },
            Case {
                name: "truncated in e_machine",
                head: truncated,
                want: None,
            },
            Case {
                name: "magic only",
                head: b"\x7fELF".to_vec(),
                want: None,
            },
            Case {
                name: "empty",
                head: Vec::new(),
                want: None,
            },
            Case {
                name: "script",
                head: b"#!/bin/sh\nexec true\n".to_vec(),
                want: None,
            },
            Case {
                name: "PE file",
                head: pe(0x80, 0x8664, 512),
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(elf_arch(&c.head), c.want, "case {}", c.name);
        }
    }

    #[test]
    fn pe_table() {
        struct Case {
            name: &'static str,
            head: Vec<u8>,
            want: Option<&'static str>,
        }
        let mut not_pe = pe(0x80, 0x8664, 512);
        not_pe[0x80..0x84].copy_from_slice(b"NE\0\0");
        let mut bad_mz = pe(0x80, 0x8664, 512);
        bad_mz[0] = b'Z';
        let cases = [
            Case {
                name: "x86_64",
                head: pe(0x80, 0x8664, 512),
                want: Some("x86_64"),
            },
            Case {
                name: "i386",
                head: pe(0xf8, 0x14c, 512),
                want: Some("i686"),
            },
            Case {
                name: "arm64",
                head: pe(0x100, 0xaa64, 512),
                want: Some("aarch64"),
            },
            Case {
                name: "armnt",
                head: pe(0x80, 0x1c4, 512),
                want: Some("arm"),
            },
            Case {
                name: "header at the end of the head",
                head: pe(4090, 0x8664, 4096),
                want: Some("x86_64"),
            },
            Case {
                name: "machine cut off",
                head: pe(4092, 0x8664, 4096),
                want: None,
            },
            Case {
                name: "e_lfanew beyond the head",
                head: pe(8192, 0x8664, 4096),
                want: None,
            },
            Case {
                name: "e_lfanew at u32::MAX",
                head: pe(u32::MAX, 0x8664, 4096),
                want: None,
            },
            Case {
                name: "e_lfanew inside the DOS header",
                head: pe(0, 0x8664, 512),
                want: None,
            },
            Case {
                name: "unknown machine",
                head: pe(0x80, 0x1234, 512),
                want: None,
            },
            Case {
                name: "NE executable",
                head: not_pe,
                want: None,
            },
            Case {
                name: "no MZ",
                head: bad_mz,
                want: None,
            },
            Case {
                name: "truncated before e_lfanew",
                head: b"MZ\x90\x00".to_vec(),
                want: None,
            },
            Case {
                name: "empty",
                head: Vec::new(),
                want: None,
            },
            Case {
                name: "ELF file",
                head: elf(2, 1, 62),
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(pe_arch(&c.head), c.want, "case {}", c.name);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(head in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = elf_arch(&head);
            let _ = pe_arch(&head);
        }

        #[test]
        fn never_panics_on_cut_headers(
            lfanew in 0u32..600,
            machine in proptest::num::u16::ANY,
            len in 0usize..600,
        ) {
            let mut head = pe(lfanew, machine, 600);
            head.truncate(len);
            let _ = pe_arch(&head);
            let mut head = elf(2, 1, machine);
            head.truncate(len.min(64));
            let _ = elf_arch(&head);
        }
    }
}
