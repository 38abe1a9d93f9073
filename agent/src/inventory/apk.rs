//! apk: the installed packages of Alpine Linux (and Wolfi, Chainguard images).
//!
//! Reads `lib/apk/db/installed` (at most [`MAX_INSTALLED_LEN`]): one block per package, blocks
//! separated by a blank line, each line a one-letter key, a colon and a value. It takes `P:`
//! (name), `V:` (version), `A:` (architecture) and `o:` (origin, the source package); the
//! other keys (checksums, sizes, dependencies, the `F:`/`R:` file lists that make the file
//! big) are skipped. A block without `P:` or `V:` is skipped and counted in a warning.
//!
//! It does not read `etc/apk/world` (what was asked for, not what is installed), the scripts
//! archive, or the `lib/apk/db/triggers` file. Format:
//! <https://wiki.alpinelinux.org/wiki/Apk_spec#Installed_Database_V2>.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use super::{lines, non_empty, read_db, Ecosystem, Inventory, Package};
use crate::fs::{FsError, RootFs};

/// The apk installed database.
pub const INSTALLED: &str = "/lib/apk/db/installed";
/// Largest installed database read (file lists included; a large system's is 10-20 MiB).
pub const MAX_INSTALLED_LEN: u64 = 64 * 1024 * 1024;

/// What [`parse`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Installed packages, in file order.
    pub packages: Vec<Package>,
    /// Blocks skipped for lack of `P:` or `V:`.
    pub incomplete: usize,
}

/// Parse an apk installed database.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut block = Block::default();
    for line in lines(text) {
        if line.trim().is_empty() {
            block.finish(&mut out);
            continue;
        }
        block.seen = true;
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "P" => &mut block.name,
            "V" => &mut block.version,
            "A" => &mut block.arch,
            "o" => &mut block.origin,
            _ => continue,
        };
        *slot = non_empty(value);
    }
    block.finish(&mut out);
    out
}

/// The fields of one block read so far.
#[derive(Debug, Default)]
struct Block {
    /// Any line was seen.
    seen: bool,
    name: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    origin: Option<String>,
}

impl Block {
    fn finish(&mut self, out: &mut Parsed) {
        let b = std::mem::take(self);
        if !b.seen {
            return;
        }
        let (Some(name), Some(version)) = (b.name, b.version) else {
            out.incomplete = out.incomplete.saturating_add(1);
            return;
        };
        out.packages.push(Package {
            ecosystem: Ecosystem::Apk,
            name,
            version: Some(version),
            arch: b.arch,
            source: b.origin,
            source_version: None,
            publisher: None,
        });
    }
}

/// Read the installed database into `inv`.
pub(crate) fn read(fs: &dyn RootFs, inv: &mut Inventory) -> Result<(), FsError> {
    let Some(bytes) = read_db(fs, INSTALLED, MAX_INSTALLED_LEN, inv)? else {
        return Ok(());
    };
    let parsed = parse(&String::from_utf8_lossy(&bytes));
    if parsed.incomplete > 0 {
        inv.warnings.push(format!(
            "'{INSTALLED}': {} block(s) without P: or V: skipped",
            parsed.incomplete
        ));
    }
    inv.packages.extend(parsed.packages);
    inv.sources.push(INSTALLED.to_owned());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemTree;
    use crate::fs::Rooted;
    use proptest::prelude::*;

    /// (name, version, arch, origin)
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

    fn rows(parsed: &Parsed) -> Vec<Row<'_>> {
        parsed
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_deref().unwrap_or_default(),
                    p.arch.as_deref(),
                    p.source.as_deref(),
                )
            })
            .collect()
    }

    #[test]
    fn parse_table() {
        struct Case {
            name: &'static str,
            text: &'static str,
            want: Vec<Row<'static>>,
            incomplete: usize,
        }
        let cases = [
            Case {
                name: "normal blocks with file lists",
                text: "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:1\nI:2\n\
                       T:the musl c library\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\n\
                       a:0:0:755\nZ:Q1xyz=\n\n\
                       P:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\nD:so:libc.musl-x86_64.so.1\n",
                want: vec![
                    ("musl", "1.2.4_git20230717-r4", Some("x86_64"), Some("musl")),
                    ("libcrypto3", "3.1.4-r5", Some("x86_64"), Some("openssl")),
                ],
                incomplete: 0,
            },
            Case {
                name: "missing fields",
                text: "P:noversion\nA:x86_64\n\nV:1.0\n\nP:bare\nV:1\n",
                want: vec![("bare", "1", None, None)],
                incomplete: 2,
            },
            Case {
                name: "crlf and many blank lines",
                text: "\r\n\r\nP:busybox\r\nV:1.36.1-r15\r\nA:aarch64\r\n\r\n\r\n",
                want: vec![("busybox", "1.36.1-r15", Some("aarch64"), None)],
                incomplete: 0,
            },
            Case {
                name: "keys are case-sensitive: p: is provides-priority, not the name",
                text: "p:foo\nP:bar\nV:2\nv:9\n",
                want: vec![("bar", "2", None, None)],
                incomplete: 0,
            },
            Case {
                name: "value with colons",
                text: "P:x\nV:1:2\n",
                want: vec![("x", "1:2", None, None)],
                incomplete: 0,
            },
            Case {
                name: "garbage",
                text: "\u{0}\u{1}\u{fffd}no colon\n:::\n",
                want: vec![],
                incomplete: 1,
            },
            Case {
                name: "empty",
                text: "",
                want: vec![],
                incomplete: 0,
            },
        ];
        for c in cases {
            let got = parse(c.text);
            assert_eq!(rows(&got), c.want, "case {}", c.name);
            assert_eq!(got.incomplete, c.incomplete, "case {} incomplete", c.name);
        }
    }

    #[test]
    fn read_table() {
        struct Case {
            name: &'static str,
            tree: MemTree,
            packages: usize,
            sources: usize,
            warnings: usize,
        }
        let cases = [
            Case {
                name: "absent",
                tree: MemTree::default(),
                packages: 0,
                sources: 0,
                warnings: 0,
            },
            Case {
                name: "present",
                tree: MemTree::default().file(INSTALLED, "P:a\nV:1\n\nP:b\nV:2\n"),
                packages: 2,
                sources: 1,
                warnings: 0,
            },
            Case {
                name: "garbage bytes",
                tree: MemTree::default().file(INSTALLED, [0xff, 0x00, b'\n', 0xc3]),
                packages: 0,
                sources: 1,
                warnings: 1,
            },
            Case {
                name: "a directory",
                tree: MemTree::default().dir(INSTALLED),
                packages: 0,
                sources: 0,
                warnings: 1,
            },
            Case {
                name: "a dangling link",
                tree: MemTree::default().symlink(INSTALLED, "/nowhere"),
                packages: 0,
                sources: 0,
                warnings: 0,
            },
        ];
        for c in cases {
            let mut inv = Inventory::default();
            read(&Rooted(c.tree), &mut inv).unwrap_or_else(|e| panic!("case {}: {e}", c.name));
            let got = (inv.packages.len(), inv.sources.len(), inv.warnings.len());
            assert_eq!(got, (c.packages, c.sources, c.warnings), "case {}", c.name);
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC*") {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_block_like_text(
            text in "([PVAoCF]?:?[a-z0-9._:-]{0,10}(\r?\n)?){0,40}",
        ) {
            let parsed = parse(&text);
            prop_assert!(parsed.packages.iter().all(|p| !p.name.is_empty()));
        }
    }
}
