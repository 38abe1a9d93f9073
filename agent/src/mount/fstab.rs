//! A guest's `/etc/fstab`: which volumes hold `/usr`, `/var`, `/boot`, `/opt` when a Linux
//! system is split over several.
//!
//! [`parse`] keeps only entries that name a block device (`UUID=`, `LABEL=`, `PARTUUID=`,
//! `PARTLABEL=`, `/dev/...` including `/dev/disk/by-*/` links and LVM names) with a mount point;
//! it skips comments, swap, `none`, pseudo and network filesystems and bind mounts. Fields are
//! unescaped (`\040` is a space). [`submounts`] picks the mount points a scan places under the
//! root; [`FstabEntry::matches`] tells whether an entry names a given volume, from the identity
//! the caller probed ([`VolumeIdentity`]).
//!
//! What it does not do: read the file (the caller reads it through its `RootFs`), resolve
//! `/dev/sdX`-style names (they depend on the guest's device order and never match), or honour
//! `noauto`/`nofail` (exposed through [`FstabEntry::has_option`] for the caller to decide).
//! See `fstab(5)`.

use super::mountinfo::unescape_octal;

/// What the first fstab field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `UUID=` or `/dev/disk/by-uuid/`: the filesystem UUID.
    Uuid(String),
    /// `LABEL=` or `/dev/disk/by-label/`: the filesystem label.
    Label(String),
    /// `PARTUUID=` or `/dev/disk/by-partuuid/`: the GPT partition GUID (or MBR `xxxxxxxx-NN`).
    PartUuid(String),
    /// `PARTLABEL=` or `/dev/disk/by-partlabel/`: the GPT partition name.
    PartLabel(String),
    /// Any other `/dev/` path (`/dev/sda1`, `/dev/mapper/vg0-root`, `/dev/vg0/root`).
    Path(String),
}

/// One fstab entry that names a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// The device.
    pub spec: Spec,
    /// Where it is mounted, without a trailing `/` (except for `/` itself).
    pub mount_point: String,
    /// The filesystem type (`ext4`, `xfs`, `auto`...).
    pub fs_type: String,
    /// Mount options, split at commas.
    pub options: Vec<String>,
}

/// What the caller knows about a volume, to match fstab entries against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeIdentity {
    /// Filesystem UUID.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
    /// Partition UUID (GPT GUID or MBR `disksig-NN`).
    pub partuuid: Option<String>,
    /// GPT partition name.
    pub partlabel: Option<String>,
    /// LVM volume group and logical volume names, for a logical volume.
    pub lvm: Option<(String, String)>,
}

/// Mount points a scan places under the root (package databases, kernels, add-on software),
/// when a separate volume holds them. `/home` and the like hold no system software.
pub const SUBMOUNT_POINTS: [&str; 5] = ["/usr", "/usr/local", "/var", "/boot", "/opt"];

/// Filesystem types that never name a block device.
const PSEUDO_TYPES: [&str; 22] = [
    "swap",
    "none",
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "ramfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "efivarfs",
    "hugetlbfs",
    "mqueue",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "overlay",
    "9p",
];

/// The entries of fstab `text` that name a block device; see the module docs.
pub fn parse(text: &str) -> Vec<FstabEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<FstabEntry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let spec = unescape_octal(fields.next()?);
    let mount_point = unescape_octal(fields.next()?);
    let fs_type = fields
        .next()
        .map(unescape_octal)
        .unwrap_or_else(|| "auto".into());
    let options: Vec<String> = fields
        .next()
        .map(|o| unescape_octal(o).split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| vec!["defaults".into()]);
    if !mount_point.starts_with('/')
        || PSEUDO_TYPES.contains(&fs_type.as_str())
        || options.iter().any(|o| o == "bind" || o == "rbind")
    {
        return None;
    }
    Some(FstabEntry {
        spec: parse_spec(&spec)?,
        mount_point: normalize(&mount_point),
        fs_type,
        options,
    })
}

/// Builds a [`Spec`] from a tag's value.
type MakeSpec = fn(String) -> Spec;

/// `UUID=...` and friends (values may be quoted), or a `/dev/` path.
fn parse_spec(spec: &str) -> Option<Spec> {
    let tagged: [(&str, MakeSpec); 4] = [
        ("UUID=", Spec::Uuid),
        ("LABEL=", Spec::Label),
        ("PARTUUID=", Spec::PartUuid),
        ("PARTLABEL=", Spec::PartLabel),
    ];
    for (tag, make) in tagged {
        if let Some(value) = spec.strip_prefix(tag) {
            let value = value.trim_matches('"');
            return (!value.is_empty()).then(|| make(value.to_owned()));
        }
    }
    let links: [(&str, MakeSpec); 4] = [
        ("/dev/disk/by-uuid/", Spec::Uuid),
        ("/dev/disk/by-label/", Spec::Label),
        ("/dev/disk/by-partuuid/", Spec::PartUuid),
        ("/dev/disk/by-partlabel/", Spec::PartLabel),
    ];
    for (dir, make) in links {
        if let Some(value) = spec.strip_prefix(dir) {
            return (!value.is_empty()).then(|| make(unescape_udev(value)));
        }
    }
    spec.starts_with("/dev/")
        .then(|| Spec::Path(spec.to_owned()))
}

/// Undo udev's `\xNN` escapes in `/dev/disk/by-label/` names (`\x20` is a space).
fn unescape_udev(name: &str) -> String {
    let mut out = Vec::with_capacity(name.len());
    let bytes = name.as_bytes();
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        let hex = i
            .checked_add(2)
            .and_then(|s| bytes.get(s..s.checked_add(2)?))
            .filter(|_| b == b'\\' && bytes.get(i.saturating_add(1)) == Some(&b'x'))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
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

/// `/usr/` → `/usr`, `//var` → `/var`; `/` stays.
fn normalize(mount_point: &str) -> String {
    let parts: Vec<&str> = mount_point.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// The LVM names a `/dev/mapper/VG-LV` (with `--` standing for `-` inside names) or `/dev/VG/LV`
/// path stands for.
fn lvm_names(path: &str) -> Option<(String, String)> {
    if let Some(name) = path.strip_prefix("/dev/mapper/") {
        return split_mapper_name(name);
    }
    let rest = path.strip_prefix("/dev/")?;
    let (vg, lv) = rest.split_once('/')?;
    // Directories udev and the kernel make under /dev that are not volume groups.
    const NOT_VGS: [&str; 10] = [
        "disk", "mapper", "md", "block", "char", "bus", "cdrom", "input", "net", "shm",
    ];
    if vg.is_empty() || lv.is_empty() || lv.contains('/') || NOT_VGS.contains(&vg) {
        return None;
    }
    Some((vg.to_owned(), lv.to_owned()))
}

/// Split a device-mapper name `VG-LV` at the single `-`; `--` is a literal `-`.
fn split_mapper_name(name: &str) -> Option<(String, String)> {
    let bytes = name.as_bytes();
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        if b == b'-' {
            if bytes.get(i.saturating_add(1)) == Some(&b'-') {
                i = i.saturating_add(2);
                continue;
            }
            let vg = name.get(..i)?.replace("--", "-");
            let lv = name.get(i.saturating_add(1)..)?.replace("--", "-");
            return (!vg.is_empty() && !lv.is_empty()).then_some((vg, lv));
        }
        i = i.saturating_add(1);
    }
    None
}

impl FstabEntry {
    /// Whether this entry names `volume`. UUIDs compare without regard to case; labels exactly;
    /// `/dev/` paths match only LVM names (`/dev/sdX` depends on the guest's device order).
    pub fn matches(&self, volume: &VolumeIdentity) -> bool {
        let same = |want: &str, have: &Option<String>, fold: bool| {
            have.as_deref().is_some_and(|h| {
                if fold {
                    h.eq_ignore_ascii_case(want)
                } else {
                    h == want
                }
            })
        };
        match &self.spec {
            Spec::Uuid(u) => same(u, &volume.uuid, true),
            Spec::Label(l) => same(l, &volume.label, false),
            Spec::PartUuid(u) => same(u, &volume.partuuid, true),
            Spec::PartLabel(l) => same(l, &volume.partlabel, false),
            Spec::Path(p) => lvm_names(p).is_some_and(|names| volume.lvm.as_ref() == Some(&names)),
        }
    }

    /// The LVM volume group and logical volume this entry names, if it names one by path.
    pub fn lvm(&self) -> Option<(String, String)> {
        match &self.spec {
            Spec::Path(p) => lvm_names(p),
            _ => None,
        }
    }

    /// Whether the options include `option` (e.g. `nofail`, `noauto`).
    pub fn has_option(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }

    /// The value of a `key=value` option (e.g. `subvol` for btrfs).
    pub fn option_value(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
    }
}

/// The entries for [`SUBMOUNT_POINTS`], parents first (`/usr` before `/usr/local`); where a
/// mount point appears twice the later entry wins, as it would on the guest.
pub fn submounts(entries: &[FstabEntry]) -> Vec<&FstabEntry> {
    let mut picked: Vec<&FstabEntry> = Vec::new();
    for e in entries {
        if !SUBMOUNT_POINTS.contains(&e.mount_point.as_str()) {
            continue;
        }
        picked.retain(|p| p.mount_point != e.mount_point);
        picked.push(e);
    }
    picked.sort_by(|a, b| {
        let depth = |e: &FstabEntry| e.mount_point.matches('/').count();
        depth(a)
            .cmp(&depth(b))
            .then_with(|| a.mount_point.cmp(&b.mount_point))
    });
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(spec: Spec, mount_point: &str, fs_type: &str, options: &[&str]) -> FstabEntry {
        FstabEntry {
            spec,
            mount_point: mount_point.into(),
            fs_type: fs_type.into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn parse_table() {
        struct Case {
            name: &'static str,
            line: &'static str,
            want: Option<FstabEntry>,
        }
        let cases = [
            Case {
                name: "uuid",
                line: "UUID=0a3b-11 / ext4 errors=remount-ro 0 1",
                want: Some(entry(
                    Spec::Uuid("0a3b-11".into()),
                    "/",
                    "ext4",
                    &["errors=remount-ro"],
                )),
            },
            Case {
                name: "quoted uuid",
                line: "UUID=\"ab-cd\" /var xfs defaults 0 2",
                want: Some(entry(
                    Spec::Uuid("ab-cd".into()),
                    "/var",
                    "xfs",
                    &["defaults"],
                )),
            },
            Case {
                name: "label with escaped space",
                line: "LABEL=my\\040data /opt ext4 defaults,nofail 0 2",
                want: Some(entry(
                    Spec::Label("my data".into()),
                    "/opt",
                    "ext4",
                    &["defaults", "nofail"],
                )),
            },
            Case {
                name: "partuuid",
                line: "PARTUUID=6f1e-02\t/boot\text4\tdefaults\t0 2",
                want: Some(entry(
                    Spec::PartUuid("6f1e-02".into()),
                    "/boot",
                    "ext4",
                    &["defaults"],
                )),
            },
            Case {
                name: "partlabel",
                line: "PARTLABEL=usr /usr/ ext4 ro",
                want: Some(entry(
                    Spec::PartLabel("usr".into()),
                    "/usr",
                    "ext4",
                    &["ro"],
                )),
            },
            Case {
                name: "mapper path",
                line: "/dev/mapper/vg0-root / ext4 defaults 0 1",
                want: Some(entry(
                    Spec::Path("/dev/mapper/vg0-root".into()),
                    "/",
                    "ext4",
                    &["defaults"],
                )),
            },
            Case {
                name: "by-label link",
                line: "/dev/disk/by-label/EFI\\x20SYS /boot/efi vfat umask=0077 0 1",
                want: Some(entry(
                    Spec::Label("EFI SYS".into()),
                    "/boot/efi",
                    "vfat",
                    &["umask=0077"],
                )),
            },
            Case {
                name: "escaped mount point",
                line: "/dev/sdb1 /srv/my\\040files ext4",
                want: Some(entry(
                    Spec::Path("/dev/sdb1".into()),
                    "/srv/my files",
                    "ext4",
                    &["defaults"],
                )),
            },
            Case {
                name: "comment",
                line: "  # UUID=x / ext4 defaults 0 1",
                want: None,
            },
            Case {
                name: "blank",
                line: "   ",
                want: None,
            },
            Case {
                name: "swap",
                line: "UUID=5e-2 none swap sw 0 0",
                want: None,
            },
            Case {
                name: "swap on a path",
                line: "/dev/vg0/swap swap swap defaults 0 0",
                want: None,
            },
            Case {
                name: "bind mount",
                line: "/dev/shm/x /var/x none bind 0 0",
                want: None,
            },
            Case {
                name: "bind via options only",
                line: "/dev/sda3 /srv ext4 bind",
                want: None,
            },
            Case {
                name: "tmpfs",
                line: "tmpfs /tmp tmpfs defaults 0 0",
                want: None,
            },
            Case {
                name: "proc",
                line: "proc /proc proc defaults 0 0",
                want: None,
            },
            Case {
                name: "nfs",
                line: "server:/export /mnt nfs defaults 0 0",
                want: None,
            },
            Case {
                name: "not a device",
                line: "/srv/data /data ext4 defaults 0 0",
                want: None,
            },
            Case {
                name: "empty uuid",
                line: "UUID= / ext4 defaults",
                want: None,
            },
        ];
        for c in cases {
            let got = parse(c.line);
            assert_eq!(got.first(), c.want.as_ref(), "case {}", c.name);
            assert!(got.len() <= 1, "case {}", c.name);
        }
    }

    #[test]
    fn lvm_names_table() {
        struct Case {
            name: &'static str,
            path: &'static str,
            want: Option<(&'static str, &'static str)>,
        }
        let cases = [
            Case {
                name: "mapper",
                path: "/dev/mapper/vg0-root",
                want: Some(("vg0", "root")),
            },
            Case {
                name: "mapper with dashes",
                path: "/dev/mapper/my--vg-lv--data--1",
                want: Some(("my-vg", "lv-data-1")),
            },
            Case {
                name: "vg/lv",
                path: "/dev/vg0/root",
                want: Some(("vg0", "root")),
            },
            Case {
                name: "plain partition",
                path: "/dev/sda1",
                want: None,
            },
            Case {
                name: "md",
                path: "/dev/md/root",
                want: None,
            },
            Case {
                name: "mapper without dash",
                path: "/dev/mapper/luksroot",
                want: None,
            },
            Case {
                name: "mapper only doubled dashes",
                path: "/dev/mapper/a--b",
                want: None,
            },
        ];
        for c in cases {
            let want = c.want.map(|(a, b)| (a.to_owned(), b.to_owned()));
            assert_eq!(lvm_names(c.path), want, "case {}", c.name);
        }
    }

    #[test]
    fn matching_table() {
        let volume = VolumeIdentity {
            uuid: Some("0A3B-11CD".into()),
            label: Some("root".into()),
            partuuid: Some("6f1e0e1c-02".into()),
            partlabel: Some("Linux root".into()),
            lvm: Some(("vg-0".into(), "root".into())),
        };
        struct Case {
            name: &'static str,
            line: &'static str,
            want: bool,
        }
        let cases = [
            Case {
                name: "uuid case-insensitive",
                line: "UUID=0a3b-11cd / ext4",
                want: true,
            },
            Case {
                name: "other uuid",
                line: "UUID=0a3b-11ce / ext4",
                want: false,
            },
            Case {
                name: "label",
                line: "LABEL=root / ext4",
                want: true,
            },
            Case {
                name: "label is case-sensitive",
                line: "LABEL=ROOT / ext4",
                want: false,
            },
            Case {
                name: "partuuid",
                line: "PARTUUID=6F1E0E1C-02 / ext4",
                want: true,
            },
            Case {
                name: "partlabel",
                line: "PARTLABEL=Linux\\040root / ext4",
                want: true,
            },
            Case {
                name: "mapper name",
                line: "/dev/mapper/vg--0-root / ext4",
                want: true,
            },
            Case {
                name: "vg/lv path",
                line: "/dev/vg-0/root / ext4",
                want: true,
            },
            Case {
                name: "other lv",
                line: "/dev/vg-0/var /var ext4",
                want: false,
            },
            Case {
                name: "sd path never matches",
                line: "/dev/sda1 / ext4",
                want: false,
            },
        ];
        for c in cases {
            let e = parse(c.line);
            let e = e
                .first()
                .unwrap_or_else(|| panic!("case {}: parsed nothing", c.name));
            assert_eq!(e.matches(&volume), c.want, "case {}", c.name);
        }
        assert!(!parse("UUID=x / ext4")[0].matches(&VolumeIdentity::default()));
    }

    #[test]
    fn submounts_parents_first() {
        let text = "\
# /etc/fstab: static file system information.
UUID=r / ext4 errors=remount-ro 0 1
UUID=ul /usr/local ext4 defaults 0 2
UUID=h /home ext4 defaults 0 2
UUID=v1 /var ext4 defaults 0 2
/dev/mapper/vg0-usr /usr ext4 defaults 0 2
UUID=b /boot ext4 defaults,nofail 0 2
UUID=e /boot/efi vfat umask=0077 0 1
UUID=o /opt/ xfs defaults 0 2
UUID=v2 /var xfs defaults 0 2
UUID=s none swap sw 0 0
tmpfs /tmp tmpfs defaults 0 0
";
        let entries = parse(text);
        let got: Vec<(&str, &Spec)> = submounts(&entries)
            .into_iter()
            .map(|e| (e.mount_point.as_str(), &e.spec))
            .collect();
        let usr = Spec::Path("/dev/mapper/vg0-usr".into());
        let boot = Spec::Uuid("b".into());
        let opt = Spec::Uuid("o".into());
        let var = Spec::Uuid("v2".into());
        let local = Spec::Uuid("ul".into());
        assert_eq!(
            got,
            [
                ("/boot", &boot),
                ("/opt", &opt),
                ("/usr", &usr),
                ("/var", &var),
                ("/usr/local", &local)
            ]
        );
        let boot = entries.iter().find(|e| e.mount_point == "/boot");
        assert!(boot.is_some_and(|e| e.has_option("nofail")));
        let efi = entries.iter().find(|e| e.mount_point == "/boot/efi");
        assert_eq!(efi.and_then(|e| e.option_value("umask")), Some("0077"));
    }
}
