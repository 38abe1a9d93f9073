//! `/proc/self/mountinfo`: what is mounted where, with which options.
//!
//! Used to wait for a FUSE mount to appear, to find leftovers under a dead scan's directory, and
//! by tests to check the options a mount really got. The format is `proc(5)`'s: mount points and
//! sources escape space, tab, newline and backslash as `\NNN` octal.
//!
//! It does not parse `/proc/mounts` or `fstab` (see [`super::fstab`], which shares the octal
//! unescaping).

use std::io;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique id of the mount (later mounts have higher ids).
    pub mount_id: u64,
    /// Id of the parent mount.
    pub parent_id: u64,
    /// `major:minor` of the mounted device (`st_dev` of files in it).
    pub device: (u32, u32),
    /// The mount point, unescaped.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`, `nodev`, `nosuid`, `noexec`, `relatime`...).
    pub mount_options: Vec<String>,
    /// Filesystem type (`ext4`, `fuseblk`...).
    pub fs_type: String,
    /// Mount source (`/dev/loop3`...), unescaped.
    pub source: String,
    /// Per-superblock options (`norecovery`, `nologreplay`...).
    pub super_options: Vec<String>,
}

impl MountInfo {
    /// Whether `option` is among the per-mount or the per-superblock options.
    pub fn has_option(&self, option: &str) -> bool {
        self.mount_options
            .iter()
            .chain(&self.super_options)
            .any(|o| o == option)
    }
}

/// Read and parse `/proc/self/mountinfo`.
pub fn read() -> io::Result<Vec<MountInfo>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The mounts on `target` (the latest, topmost, last); `target` must be canonical.
pub fn mounts_on(target: &Path) -> io::Result<Vec<MountInfo>> {
    Ok(read()?
        .into_iter()
        .filter(|m| m.mount_point == target)
        .collect())
}

/// Parse mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let options = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
    Some(MountInfo {
        mount_id: fields.first()?.parse().ok()?,
        parent_id: fields.get(1)?.parse().ok()?,
        device: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(unescape_octal(fields.get(4)?)),
        mount_options: options(fields.get(5)?),
        fs_type: (*fields.get(sep.checked_add(1)?)?).to_owned(),
        source: unescape_octal(fields.get(sep.checked_add(2)?)?),
        super_options: options(fields.get(sep.checked_add(3)?)?),
    })
}

/// Undo the `\NNN` octal escapes of mountinfo and fstab (`\040` is a space).
pub(crate) fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        let digits = i
            .checked_add(1)
            .and_then(|s| bytes.get(s..s.checked_add(3)?))
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let value = digits.and_then(|d| {
            let v = d
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c.wrapping_sub(b'0')));
            u8::try_from(v).ok()
        });
        match value {
            Some(v) => {
                out.push(v);
                i = i.saturating_add(4);
            }
            None => {
                out.push(b);
                i = i.saturating_add(1);
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    97 29 7:3 / /run/snapscan/scan-1-0/mnt/root ro,nosuid,nodev,noexec,relatime - xfs /dev/loop3 ro,attr2,inode64,norecovery\n\
                    garbage\n";
        let got = parse(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(got[0].fs_type, "ext3");
        assert_eq!(got[0].device, (98, 0));
        assert_eq!(got[1].source, "/dev/loop3");
        assert!(got[1].has_option("norecovery"));
        assert!(got[1].has_option("noexec"));
        assert!(!got[1].has_option("rw"));
    }

    #[test]
    fn unescapes() {
        struct Case {
            name: &'static str,
            input: &'static str,
            want: &'static str,
        }
        let cases = [
            Case {
                name: "space",
                input: "a\\040b",
                want: "a b",
            },
            Case {
                name: "backslash",
                input: "a\\134b",
                want: "a\\b",
            },
            Case {
                name: "not octal",
                input: "a\\09b",
                want: "a\\09b",
            },
            Case {
                name: "trailing backslash",
                input: "a\\",
                want: "a\\",
            },
            Case {
                name: "too large",
                input: "\\777",
                want: "\\777",
            },
        ];
        for c in cases {
            assert_eq!(unescape_octal(c.input), c.want, "case {}", c.name);
        }
    }
}
