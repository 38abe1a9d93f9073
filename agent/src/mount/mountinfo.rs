//! `/proc/self/mountinfo`: what is mounted where, with which options; and who uses a block
//! device (mounts of it, devices built on it).
//!
//! Used to wait for a FUSE mount to appear, to find leftovers under a dead scan's directory, by
//! tests to check the options a mount really got, and ([`users`]) to refuse scanning a host
//! block device whose filesystem, or a filesystem on something stacked on it, is mounted
//! read-write. The format is `proc(5)`'s: mount points and sources escape space, tab, newline and
//! backslash as `\NNN` octal.
//!
//! "Stacked on" a device means what sysfs shows: its partitions (`/sys/dev/block/M:m/<name>/`
//! with a `partition` file), its holders (`holders/`: device-mapper, md...), loop devices whose
//! `loop/backing_file` is the device, and recursively what is stacked on those. A mount counts as
//! read-write when its superblock is (`rw` among the per-superblock options), whatever the
//! per-mount flag of that one mount point says: a read-only bind of a read-write filesystem
//! still has writers.
//!
//! It does not parse `/proc/mounts` or `fstab` (see [`super::fstab`], which shares the octal
//! unescaping). It sees only this process's mount namespace, and does not look for other users
//! of a device than mounts and stacked devices (swap, a process or VM writing to it directly).

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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

/// A block device's number, `(major, minor)`.
pub type DevNum = (u32, u32);

/// Most devices followed from one device through sysfs (a bound on a hostile or odd sysfs).
const MAX_STACKED: usize = 4096;

/// A device stacked on another (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stacked {
    /// Its number.
    pub device: DevNum,
    /// Its kernel name (`sda1`, `dm-0`, `loop4`).
    pub name: String,
    /// Whether it is a partition (of the device or of something stacked on it).
    pub partition: bool,
}

/// A mount of a block device or of something stacked on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The kernel name of the stacked device that is mounted; `None` for the device itself.
    pub through: Option<String>,
    /// Whether its filesystem is mounted read-write.
    pub read_write: bool,
}

/// Who uses a block device: mounts of it and of what is stacked on it, and the devices other
/// than its partitions built on it (device-mapper, md, loop devices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// The mounts, in mountinfo order.
    pub mounts: Vec<Use>,
    /// Kernel names of the stacked devices that are not partitions.
    pub holders: Vec<String>,
}

impl Users {
    /// The read-write mounts.
    pub fn read_write(&self) -> impl Iterator<Item = &Use> {
        self.mounts.iter().filter(|u| u.read_write)
    }

    /// Nothing mounts the device or builds on it.
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.holders.is_empty()
    }
}

/// The users of block device `dev`, read from `/proc/self/mountinfo` and `/sys`.
///
/// # Errors
///
/// `/proc/self/mountinfo` cannot be read. What cannot be read in sysfs is skipped.
pub fn users(dev: DevNum) -> io::Result<Users> {
    let mounts = read()?;
    let stacked = stacked_on(Path::new("/sys"), dev, &block_device_number);
    Ok(users_in(&mounts, dev, &stacked))
}

/// The users of `dev` among `mounts` and `stacked` (the devices stacked on it).
pub fn users_in(mounts: &[MountInfo], dev: DevNum, stacked: &[Stacked]) -> Users {
    let mounts = mounts
        .iter()
        .filter_map(|m| {
            let through = if m.device == dev {
                None
            } else {
                Some(stacked.iter().find(|s| s.device == m.device)?.name.clone())
            };
            Some(Use {
                mount_point: m.mount_point.clone(),
                through,
                // The superblock's flag: a read-only bind of a read-write filesystem still has
                // writers.
                read_write: m.super_options.iter().any(|o| o == "rw"),
            })
        })
        .collect();
    let holders = stacked
        .iter()
        .filter(|s| !s.partition)
        .map(|s| s.name.clone())
        .collect();
    Users { mounts, holders }
}

/// The device number of `path` if it is a block device.
pub fn block_device_number(path: &Path) -> Option<DevNum> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let major = u32::try_from(nix::sys::stat::major(rdev)).ok()?;
    let minor = u32::try_from(nix::sys::stat::minor(rdev)).ok()?;
    Some((major, minor))
}

/// Devices stacked on `dev` according to the sysfs tree at `sys` (see the module docs); `dev`
/// itself is not among them. `backing` gives the device number of a loop device's backing file
/// when that is a block device. Unreadable entries are skipped.
pub fn stacked_on(
    sys: &Path,
    dev: DevNum,
    backing: &dyn Fn(&Path) -> Option<DevNum>,
) -> Vec<Stacked> {
    let class = sys.join("class/block");
    // Loop devices by the device they are backed by, read once.
    let loops: Vec<(String, DevNum)> = std::fs::read_dir(&class)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let file = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Some((name, backing(Path::new(file.trim_end_matches('\n')))?))
        })
        .collect();
    let mut seen = BTreeSet::from([dev]);
    let mut found = Vec::new();
    let mut todo = vec![(dev, sys.join(format!("dev/block/{}:{}", dev.0, dev.1)))];
    while let Some((number, dir)) = todo.pop() {
        // (name, sysfs directory, is a partition)
        let mut next: Vec<(String, PathBuf, bool)> = Vec::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().join("partition").is_file() {
                next.push((e.file_name().to_string_lossy().into_owned(), e.path(), true));
            }
        }
        for e in std::fs::read_dir(dir.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            next.push((name.clone(), class.join(&name), false));
        }
        for (name, over) in &loops {
            if *over == number {
                next.push((name.clone(), class.join(name), false));
            }
        }
        for (name, path, partition) in next {
            let Some(device) = read_dev(&path) else {
                continue;
            };
            if found.len() >= MAX_STACKED {
                tracing::warn!(
                    "more than {MAX_STACKED} devices stacked on {}:{}",
                    dev.0,
                    dev.1
                );
                return found;
            }
            if seen.insert(device) {
                found.push(Stacked {
                    device,
                    name,
                    partition,
                });
                todo.push((device, path));
            }
        }
    }
    found
}

/// The `dev` file (`major:minor`) of a sysfs block device directory.
fn read_dev(dir: &Path) -> Option<DevNum> {
    let text = std::fs::read_to_string(dir.join("dev")).ok()?;
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
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

    /// A sysfs tree: `sda` (8:0) with partitions `sda1` (8:1) and `sda2` (8:2), `dm-0` (253:0)
    /// held on `sda2`, and `loop4` (7:4) backed by `/dev/sda`.
    fn fake_sys(sys: &Path) {
        let put = |rel: &str, text: &str| {
            let p = sys.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        let sda = "devices/sda";
        put(&format!("{sda}/dev"), "8:0\n");
        put(&format!("{sda}/sda1/dev"), "8:1\n");
        put(&format!("{sda}/sda1/partition"), "1\n");
        put(&format!("{sda}/sda2/dev"), "8:2\n");
        put(&format!("{sda}/sda2/partition"), "2\n");
        std::fs::create_dir_all(sys.join(format!("{sda}/sda2/holders/dm-0"))).expect("holder");
        put("devices/dm-0/dev", "253:0\n");
        put("devices/loop4/dev", "7:4\n");
        put("devices/loop4/loop/backing_file", "/dev/sda\n");
        std::fs::create_dir_all(sys.join("dev/block")).expect("dev/block");
        std::fs::create_dir_all(sys.join("class/block")).expect("class/block");
        for (name, dir) in [
            ("sda", sda.to_owned()),
            ("sda1", format!("{sda}/sda1")),
            ("sda2", format!("{sda}/sda2")),
            ("dm-0", "devices/dm-0".into()),
            ("loop4", "devices/loop4".into()),
        ] {
            std::os::unix::fs::symlink(sys.join(&dir), sys.join("class/block").join(name))
                .expect("class link");
        }
        std::os::unix::fs::symlink(sys.join(sda), sys.join("dev/block/8:0")).expect("dev link");
    }

    #[test]
    fn finds_what_is_stacked_on_a_device_and_its_mounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sys(dir.path());
        let backing = |p: &Path| (p == Path::new("/dev/sda")).then_some((8, 0));
        let mut stacked = stacked_on(dir.path(), (8, 0), &backing);
        stacked.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<(&str, bool)> = stacked
            .iter()
            .map(|s| (s.name.as_str(), s.partition))
            .collect();
        assert_eq!(
            names,
            [
                ("dm-0", false),
                ("loop4", false),
                ("sda1", true),
                ("sda2", true)
            ]
        );
        let mounts = parse(
            "40 1 8:1 / /boot ro,relatime - ext4 /dev/sda1 ro\n\
             41 1 253:0 / /home rw,relatime - ext4 /dev/mapper/home rw\n\
             42 1 253:0 /x /srv/x ro,relatime - ext4 /dev/mapper/home rw\n\
             43 1 8:16 / /other rw - ext4 /dev/sdb rw\n",
        );
        let users = users_in(&mounts, (8, 0), &stacked);
        assert_eq!(users.holders.len(), 2, "{users:?}");
        let rw: Vec<_> = users
            .read_write()
            .map(|u| (u.mount_point.clone(), u.through.clone()))
            .collect();
        // The read-only bind of the read-write filesystem counts; /boot (ro) and sdb do not.
        assert_eq!(
            rw,
            [
                (PathBuf::from("/home"), Some("dm-0".to_owned())),
                (PathBuf::from("/srv/x"), Some("dm-0".to_owned())),
            ]
        );
        assert_eq!(users.mounts.len(), 3);
        assert!(users_in(&mounts, (8, 32), &[]).is_empty());
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
