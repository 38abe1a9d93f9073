//! The fixtures: how each one is built and what is on it.
//!
//! Each [`Recipe`] pairs a builder (work directory and output path in, image out) with its
//! expectation. Sizes are the smallest that comfortably fit the content (XFS cannot go below
//! 300 MiB); every image is a sparse file, so unused space costs nothing on disk.

use std::path::Path;

use anyhow::Context;

use super::cmd::{run, tool};
use super::disk::{assemble, Partition, Table, MIB};
use super::fs::{build_fs, sparse_file, FsKind};
use super::lvm::{build_pv, build_vg, LogicalVolume, Step};
use super::roots::{debian_root, write_synthetic_root, DEBIAN_REV};
use super::rpm::{RootLayout, RpmDb};
use super::{Expect, ExpectLv, ExpectOs, ExpectVolume, Fixture, DEBIAN_HOSTNAME, IMAGES_REV};
use crate::hive::realistic;
use crate::windows::{expected, write_root, WindowsFlavor};

/// A builder: `(work directory, output image)`.
type Build = fn(&Path, &Path) -> anyhow::Result<()>;

/// How to make one fixture.
pub(super) struct Recipe {
    pub name: &'static str,
    pub what: &'static str,
    /// Bump when this fixture's builder or content changes.
    pub rev: u32,
    pub needs_root: bool,
    /// Built from the cached Debian tree (its revision goes into the cache key).
    pub debian: bool,
    pub expect: fn() -> Expect,
    pub build: Build,
}

impl Recipe {
    /// The version part of the cached file's name.
    pub fn version(&self) -> String {
        let mut v = format!("v{IMAGES_REV}.{}", self.rev);
        if self.debian {
            v.push_str(&format!(".d{DEBIAN_REV}"));
        }
        v
    }
}

/// Every fixture, in a stable order.
pub fn catalogue() -> Vec<Fixture> {
    RECIPES
        .iter()
        .map(|r| Fixture {
            name: r.name,
            what: r.what,
            expect: (r.expect)(),
            needs_root: r.needs_root,
        })
        .collect()
}

pub(super) fn recipe(name: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name)
}

const RECIPES: &[Recipe] = &[
    Recipe {
        name: "debian-ext4-gpt",
        what: "2 GiB GPT disk: EFI vfat + ext4 root with a real debootstrap Debian 12 (benchmark disk)",
        rev: 1,
        needs_root: true,
        debian: true,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("vfat", Some("EFI"), false), vol("ext4", Some("root"), true)],
            os: Some(debian(1)),
        },
        build: debian_ext4_gpt,
    },
    Recipe {
        name: "debian-ext4-gpt-64g",
        what: "the same Debian GPT disk at 64 GiB (sparse): inspect reads must not grow with size",
        rev: 1,
        needs_root: true,
        debian: true,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("vfat", Some("EFI"), false), vol("ext4", Some("root"), true)],
            os: Some(debian(1)),
        },
        build: debian_ext4_gpt_64g,
    },
    Recipe {
        name: "debian-xfs-mbr",
        what: "MBR disk with one XFS root holding a real Debian 12 (kernel-mount path, MBR)",
        rev: 1,
        needs_root: true,
        debian: true,
        expect: || Expect {
            partition_table: "mbr",
            volumes: vec![vol("xfs", Some("root"), true)],
            os: Some(debian(0)),
        },
        build: debian_xfs_mbr,
    },
    Recipe {
        name: "debian-btrfs",
        what: "GPT disk with one Btrfs root holding a real Debian 12 (mkfs.btrfs --rootdir)",
        rev: 1,
        needs_root: true,
        debian: true,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("btrfs", Some("root"), true)],
            os: Some(debian(0)),
        },
        build: debian_btrfs,
    },
    Recipe {
        name: "debian-lvm",
        what: "GPT: ext4 /boot + LVM PV (VG vg0: LV root ext4 with Debian 12, LV swap); OS root is not the /boot volume; the root's /etc/fstab mounts /boot by LABEL and / by /dev/mapper name",
        rev: 2,
        needs_root: true,
        debian: true,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![
                vol("ext4", Some("boot"), false),
                ExpectVolume {
                    logical_volumes: vec![
                        lv("vg0", "root", "ext4", Some("root"), true, 1),
                        lv("vg0", "swap", "swap", Some("swap"), false, 1),
                    ],
                    ..vol("lvm2_member", None, true)
                },
            ],
            os: Some(debian(1)),
        },
        build: debian_lvm,
    },
    Recipe {
        name: "debian-lvm-multiseg",
        what: "GPT with two LVM PVs of one VG vg0: LV data (ext4 with files) in 3 segments over both PVs, LV b between",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![
                ExpectVolume {
                    logical_volumes: vec![
                        lv("vg0", "data", "ext4", Some("multiseg"), false, 3),
                        lv("vg0", "b", "ext4", Some("lvb"), false, 1),
                    ],
                    ..vol("lvm2_member", None, false)
                },
                vol("lvm2_member", None, false),
            ],
            os: None,
        },
        build: debian_lvm_multiseg,
    },
    Recipe {
        name: "debian-logical",
        what: "MBR with an extended partition: primary vfat, logical 5 swap, logical 6 ext4 Debian 12 root",
        rev: 1,
        needs_root: true,
        debian: true,
        expect: || Expect {
            partition_table: "mbr",
            volumes: vec![
                vol("vfat", Some("FATBOOT"), false),
                vol("swap", Some("swap"), false),
                vol("ext4", Some("root"), true),
            ],
            os: Some(debian(2)),
        },
        build: debian_logical,
    },
    Recipe {
        name: "whole-disk-ext4",
        what: "ext4 on the whole disk (no table): Ubuntu 22.04 root, os-release only in usr/lib, usr-merge symlinks",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "none",
            volumes: vec![vol("ext4", Some("cloudimg-rootfs"), true)],
            os: Some(linux(
                "ubuntu",
                Some("22.04"),
                Some("Ubuntu 22.04.4 LTS"),
                Some("ubuntu-whole"),
                Some("x86_64"),
            )),
        },
        build: |work, out| {
            let root = synthetic_root(work, "whole-disk-ext4")?;
            build_fs(FsKind::Ext4, 16 * MIB, Some("cloudimg-rootfs"), Some(&root), out)
        },
    },
    Recipe {
        name: "rhel9",
        what: "GPT + XFS: RHEL 9.3 root (os-release via usr/lib symlink, /etc/redhat-release, usr-merge)",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("xfs", Some("root"), true)],
            os: Some(rhel93()),
        },
        build: |work, out| synthetic_gpt(work, out, "rhel9", FsKind::Xfs, 300),
    },
    Recipe {
        name: "centos7-legacy",
        what: "GPT + ext4: CentOS 7 without os-release (centos-release, redhat-release symlink, HOSTNAME in sysconfig/network)",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("ext4", Some("root"), true)],
            os: Some(linux(
                "centos",
                Some("7.9.2009"),
                Some("CentOS Linux release 7.9.2009 (Core)"),
                Some("centos7-legacy"),
                Some("x86_64"),
            )),
        },
        build: |work, out| synthetic_gpt(work, out, "centos7-legacy", FsKind::Ext4, 16),
    },
    Recipe {
        name: "alpine",
        what: "GPT + ext4: Alpine 3.19 for aarch64 (ELF header stub, bin/sh -> /bin/busybox absolute symlink)",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("ext4", Some("root"), true)],
            os: Some(linux(
                "alpine",
                Some("3.19.1"),
                Some("Alpine Linux v3.19"),
                Some("alpine-arm"),
                Some("aarch64"),
            )),
        },
        build: |work, out| synthetic_gpt(work, out, "alpine", FsKind::Ext4, 16),
    },
    Recipe {
        name: "sles15",
        what: "GPT + ext4: SLES 15 SP5 (os-release via usr/lib symlink, no usr-merge)",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("ext4", Some("root"), true)],
            os: Some(linux(
                "sles",
                Some("15.5"),
                Some("SUSE Linux Enterprise Server 15 SP5"),
                Some("sles15-db"),
                Some("x86_64"),
            )),
        },
        build: |work, out| synthetic_gpt(work, out, "sles15", FsKind::Ext4, 16),
    },
    Recipe {
        name: "suse-legacy",
        what: "GPT + ext4: SLES 11 SP4 with only /etc/SuSE-release and /etc/HOSTNAME",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("ext4", Some("root"), true)],
            os: Some(linux(
                "sles",
                Some("11.4"),
                Some("SUSE Linux Enterprise Server 11"),
                Some("sles11-legacy"),
                Some("x86_64"),
            )),
        },
        build: |work, out| synthetic_gpt(work, out, "suse-legacy", FsKind::Ext4, 16),
    },
    Recipe {
        name: "ubuntu-lsb",
        what: "GPT + ext4: Ubuntu 14.04 with only /etc/lsb-release (and debian_version, which must lose)",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("ext4", Some("root"), true)],
            os: Some(linux(
                "ubuntu",
                Some("14.04"),
                Some("Ubuntu 14.04.6 LTS"),
                Some("trusty-box"),
                Some("x86_64"),
            )),
        },
        build: |work, out| synthetic_gpt(work, out, "ubuntu-lsb", FsKind::Ext4, 16),
    },
    Recipe {
        name: "luks",
        what: "GPT with a LUKS2 partition (labelled) and a LUKS1 partition; encrypted, no OS",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![
                vol("crypto_luks", Some("cryptroot"), false),
                vol("crypto_luks", None, false),
            ],
            os: None,
        },
        build: luks,
    },
    Recipe {
        name: "windows-server-2022",
        what: "GPT: EFI vfat + MSR (unformatted) + NTFS with a synthetic Windows Server 2022 (registry hives, PE headers)",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || windows_expect(WindowsFlavor::Server2022),
        build: |work, out| windows(work, out, WindowsFlavor::Server2022),
    },
    Recipe {
        name: "windows-11",
        what: "GPT: EFI vfat + MSR (unformatted) + NTFS with a synthetic Windows 11 Pro (ProductName still says Windows 10)",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || windows_expect(WindowsFlavor::Windows11),
        build: |work, out| windows(work, out, WindowsFlavor::Windows11),
    },
    Recipe {
        name: "windows-real-hives",
        what: "GPT: EFI vfat + MSR + NTFS with a synthetic Windows Server 2022 whose SOFTWARE (126 MiB, 400 programs) and SYSTEM (20 MiB) hives have real sizes",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || windows_expect(WindowsFlavor::Server2022),
        build: |work, out| windows_real_hives(work, out),
    },
    Recipe {
        name: "vfat-data",
        what: "MBR with one FAT data volume holding a few files; no OS",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || data_expect("vfat", "FATDATA"),
        build: |work, out| data_disk(work, out, FsKind::Vfat, "FATDATA", "c"),
    },
    Recipe {
        name: "exfat-data",
        what: "MBR with one exFAT data volume (empty: nothing here can write files into exFAT); no OS",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || data_expect("exfat", "EXFATDATA"),
        build: |work, out| data_disk(work, out, FsKind::Exfat, "EXFATDATA", "7"),
    },
    Recipe {
        name: "ntfs-data",
        what: "MBR with one NTFS data volume holding a few files, no Windows directory; no OS",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || data_expect("ntfs", "NTFSDATA"),
        build: |work, out| data_disk(work, out, FsKind::Ntfs, "NTFSDATA", "7"),
    },
    Recipe {
        name: "dirty-ext4",
        what: "ext4 on the whole disk, shut down after writes: its journal needs recovery (nothing-written tests)",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "none",
            volumes: vec![vol("ext4", Some(super::dirty::DIRTY_LABEL), false)],
            os: None,
        },
        build: super::dirty::dirty_ext4,
    },
    Recipe {
        name: "dirty-xfs",
        what: "XFS on the whole disk, shut down after writes: its log is dirty (nothing-written tests)",
        rev: 1,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "none",
            volumes: vec![vol("xfs", Some(super::dirty::DIRTY_LABEL), false)],
            os: None,
        },
        build: super::dirty::dirty_xfs,
    },
    Recipe {
        name: "rhel9-rpm-sqlite",
        what: "GPT + ext4: the rhel9 root with packages installed by rpm into a real var/lib/rpm/rpmdb.sqlite",
        rev: super::rpm::RPM_REV,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("ext4", Some("root"), true)],
            os: Some(rhel93()),
        },
        build: |work, out| super::rpm::rpm_image(work, out, RpmDb::Sqlite, RootLayout::Ext4),
    },
    Recipe {
        name: "rhel7-rpm-bdb",
        what: "GPT + ext4: RHEL 7.9 root whose rpm database is a BerkeleyDB hash Packages (db_load of the sqlite fixture's headers)",
        rev: super::rpm::RPM_REV,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("ext4", Some("root"), true)],
            os: Some(linux(
                "rhel",
                Some("7.9"),
                Some("Red Hat Enterprise Linux Server 7.9 (Maipo)"),
                Some(super::rpm::RHEL7_HOSTNAME),
                Some("x86_64"),
            )),
        },
        build: |work, out| super::rpm::rpm_image(work, out, RpmDb::Bdb, RootLayout::Ext4),
    },
    Recipe {
        name: "rhel9-rpm-xfs",
        what: "GPT + XFS: the rhel9-rpm-sqlite root on XFS, as RHEL and its rebuilds install",
        rev: super::rpm::RPM_REV,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("xfs", Some("root"), true)],
            os: Some(rhel93()),
        },
        build: |work, out| super::rpm::rpm_image(work, out, RpmDb::Sqlite, RootLayout::Xfs),
    },
    Recipe {
        name: "rhel9-rpm-btrfs-subvol",
        what: "GPT + Btrfs in Fedora's layout: the rhel9-rpm-sqlite root in subvolume `root` (named by its fstab), `home` beside it, zstd/zlib/LZO-compressed extents",
        rev: super::rpm::RPM_REV,
        needs_root: true,
        debian: false,
        expect: || Expect {
            partition_table: "gpt",
            volumes: vec![vol("btrfs", Some("fedora"), true)],
            os: Some(rhel93()),
        },
        build: |work, out| {
            super::rpm::rpm_image(work, out, RpmDb::Sqlite, RootLayout::BtrfsSubvolumes)
        },
    },
    Recipe {
        name: "empty",
        what: "4 MiB of zeros: no table, no filesystem, no OS",
        rev: 1,
        needs_root: false,
        debian: false,
        expect: || Expect {
            partition_table: "none",
            volumes: vec![vol("unknown", None, false)],
            os: None,
        },
        build: |_, out| sparse_file(out, 4 * MIB),
    },
];

fn vol(filesystem: &'static str, label: Option<&'static str>, has_os: bool) -> ExpectVolume {
    ExpectVolume {
        filesystem,
        label,
        has_os,
        logical_volumes: Vec::new(),
    }
}

fn lv(
    vg: &'static str,
    name: &'static str,
    filesystem: &'static str,
    label: Option<&'static str>,
    has_os: bool,
    segments: usize,
) -> ExpectLv {
    ExpectLv {
        vg,
        name,
        filesystem,
        label,
        has_os,
        segments,
    }
}

/// A Linux OS on volume 0 (the only volume of every synthetic disk).
/// The OS of the rhel9 roots.
fn rhel93() -> ExpectOs {
    linux(
        "rhel",
        Some("9.3"),
        Some("Red Hat Enterprise Linux 9.3 (Plow)"),
        Some("rhel9-web"),
        Some("x86_64"),
    )
}

fn linux(
    id: &'static str,
    version_id: Option<&'static str>,
    pretty_name: Option<&'static str>,
    hostname: Option<&'static str>,
    arch: Option<&'static str>,
) -> ExpectOs {
    ExpectOs {
        family: "linux",
        id,
        version_id,
        pretty_name: pretty_name.map(str::to_owned),
        hostname,
        arch,
        volume: 0,
        name: None,
        registry_product_name: None,
        build: None,
    }
}

/// The cached Debian 12 tree, on volume `volume`.
fn debian(volume: usize) -> ExpectOs {
    ExpectOs {
        volume,
        ..linux(
            "debian",
            Some("12"),
            Some("Debian GNU/Linux 12 (bookworm)"),
            Some(DEBIAN_HOSTNAME),
            Some("x86_64"),
        )
    }
}

fn windows_expect(flavor: WindowsFlavor) -> Expect {
    let e = expected(flavor);
    Expect {
        partition_table: "gpt",
        volumes: vec![
            vol("vfat", Some("SYSTEM"), false),
            vol("unknown", None, false),
            vol("ntfs", Some("Windows"), true),
        ],
        os: Some(ExpectOs {
            family: "windows",
            id: "windows",
            version_id: Some(e.version_id),
            pretty_name: Some(format!("{} {}", e.name, e.display_version)),
            hostname: Some(e.hostname),
            arch: Some(e.arch),
            volume: 2,
            name: Some(e.name),
            registry_product_name: Some(e.product_name),
            build: Some(e.build),
        }),
    }
}

fn data_expect(filesystem: &'static str, label: &'static str) -> Expect {
    Expect {
        partition_table: "mbr",
        volumes: vec![vol(filesystem, Some(label), false)],
        os: None,
    }
}

/// A directory `work/name` holding the given files.
fn tree(work: &Path, name: &str, files: &[(&str, &[u8])]) -> anyhow::Result<std::path::PathBuf> {
    let dir = work.join(name);
    for (rel, bytes) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("failed to create '{}'", parent.display()))?;
        }
        std::fs::write(&path, bytes)
            .with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create '{}'", dir.display()))?;
    Ok(dir)
}

fn synthetic_root(work: &Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = work.join("root");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create '{}'", dir.display()))?;
    write_synthetic_root(name, &dir)?;
    Ok(dir)
}

/// GPT type code of a Linux x86-64 root partition.
const GPT_LINUX_ROOT: &str = "8304";

fn part<'a>(
    size_mib: u64,
    type_code: &'static str,
    name: &'static str,
    content: Option<&'a Path>,
) -> Partition<'a> {
    Partition {
        size_bytes: size_mib * MIB,
        type_code,
        name,
        logical: false,
        content,
    }
}

/// `p` as an MBR logical partition.
fn logical(p: Partition<'_>) -> Partition<'_> {
    Partition { logical: true, ..p }
}

/// A synthetic distribution root on a one-partition GPT disk.
fn synthetic_gpt(
    work: &Path,
    out: &Path,
    name: &str,
    kind: FsKind,
    size_mib: u64,
) -> anyhow::Result<()> {
    let root = synthetic_root(work, name)?;
    let fs = work.join("root.fs");
    build_fs(kind, size_mib * MIB, Some("root"), Some(&root), &fs)?;
    assemble(
        Table::Gpt,
        None,
        &[part(size_mib, GPT_LINUX_ROOT, "root", Some(&fs))],
        out,
    )?;
    Ok(())
}

/// A small EFI system partition tree.
fn esp_tree(work: &Path, windows: bool) -> anyhow::Result<std::path::PathBuf> {
    if windows {
        tree(
            work,
            "esp",
            &[(
                "EFI/Microsoft/Boot/BCD",
                b"regf placeholder: boot configuration data\n",
            )],
        )
    } else {
        tree(
            work,
            "esp",
            &[(
                "EFI/debian/grub.cfg",
                b"search.fs_label root root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n",
            )],
        )
    }
}

/// Size of the Debian root filesystem on the smaller Debian disks.
const DEBIAN_FS_MIB: u64 = 448;

fn debian_ext4_gpt(work: &Path, out: &Path) -> anyhow::Result<()> {
    debian_ext4_gpt_sized(work, out, 2048)
}

fn debian_ext4_gpt_64g(work: &Path, out: &Path) -> anyhow::Result<()> {
    debian_ext4_gpt_sized(work, out, 64 * 1024)
}

/// The Debian GPT disk at any size (`DISK_MIB`), to show that inspect's reads do not grow with it.
#[allow(non_snake_case)]
fn debian_ext4_gpt_sized(work: &Path, out: &Path, DISK_MIB: u64) -> anyhow::Result<()> {
    let debian = debian_root()?;
    const ESP_MIB: u64 = 32;
    // 1 MiB before the first partition for the GPT, 1 MiB after the last for the backup.
    let root_mib = DISK_MIB - 1 - ESP_MIB - 1;
    let esp = work.join("esp.fs");
    build_fs(
        FsKind::Vfat,
        ESP_MIB * MIB,
        Some("EFI"),
        Some(&esp_tree(work, false)?),
        &esp,
    )?;
    let root = work.join("root.fs");
    build_fs(
        FsKind::Ext4,
        root_mib * MIB,
        Some("root"),
        Some(&debian),
        &root,
    )?;
    assemble(
        Table::Gpt,
        Some(DISK_MIB * MIB),
        &[
            part(ESP_MIB, "ef00", "EFI System", Some(&esp)),
            part(root_mib, GPT_LINUX_ROOT, "root", Some(&root)),
        ],
        out,
    )?;
    Ok(())
}

fn debian_xfs_mbr(work: &Path, out: &Path) -> anyhow::Result<()> {
    let debian = debian_root()?;
    let root = work.join("root.fs");
    build_fs(
        FsKind::Xfs,
        DEBIAN_FS_MIB * MIB,
        Some("root"),
        Some(&debian),
        &root,
    )?;
    assemble(
        Table::Mbr,
        None,
        &[part(DEBIAN_FS_MIB, "83", "", Some(&root))],
        out,
    )?;
    Ok(())
}

fn debian_btrfs(work: &Path, out: &Path) -> anyhow::Result<()> {
    // mkfs.btrfs --rootdir wants room for doubled metadata and whole chunks.
    const BTRFS_MIB: u64 = 640;
    let debian = debian_root()?;
    let root = work.join("root.fs");
    build_fs(
        FsKind::Btrfs,
        BTRFS_MIB * MIB,
        Some("root"),
        Some(&debian),
        &root,
    )?;
    assemble(
        Table::Gpt,
        None,
        &[part(BTRFS_MIB, GPT_LINUX_ROOT, "root", Some(&root))],
        out,
    )?;
    Ok(())
}

/// A /boot tree: kernel and initrd look-alikes and a grub directory.
/// Replace `path` in the ext4 image `fs` with `content` (debugfs, no mount).
fn replace_file(fs: &Path, path: &str, content: &[u8], work: &Path) -> anyhow::Result<()> {
    let local = work.join("replace_file.tmp");
    std::fs::write(&local, content)
        .with_context(|| format!("failed to write '{}'", local.display()))?;
    let script = format!("rm {path}\nwrite {} {path}\n", local.display());
    run(
        tool("debugfs").arg("-w").arg("-f").arg("-").arg(fs),
        Some(script.as_bytes()),
    )?;
    Ok(())
}

fn boot_tree(work: &Path) -> anyhow::Result<std::path::PathBuf> {
    // A bzImage starts its setup header at 0x1f1; "HdrS" at 0x202 marks it.
    let mut vmlinuz = vec![0u8; 16 * 1024];
    vmlinuz[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    vmlinuz[0x202..0x206].copy_from_slice(b"HdrS");
    let initrd = b"070701 cpio newc placeholder\n".repeat(64);
    tree(
        work,
        "boot",
        &[
            ("vmlinuz-6.1.0-18-amd64", &vmlinuz),
            ("initrd.img-6.1.0-18-amd64", &initrd),
            ("config-6.1.0-18-amd64", b"CONFIG_64BIT=y\nCONFIG_X86_64=y\n"),
            (
                "System.map-6.1.0-18-amd64",
                b"ffffffff81000000 T _text\nffffffff81000000 T startup_64\n",
            ),
            (
                "grub/grub.cfg",
                b"set root='lvmid/vg0/root'\nlinux /vmlinuz-6.1.0-18-amd64 root=/dev/mapper/vg0-root ro\n",
            ),
            ("grub/grubenv", &[b'#'; 1024]),
        ],
    )
}

fn debian_lvm(work: &Path, out: &Path) -> anyhow::Result<()> {
    let debian = debian_root()?;
    const BOOT_MIB: u64 = 64;
    const SWAP_MIB: u64 = 32;
    // 1 MiB of PV label and metadata before the first extent, then whole 4 MiB extents.
    const PV_MIB: u64 = 1 + DEBIAN_FS_MIB + SWAP_MIB + 3;
    let boot = work.join("boot.fs");
    build_fs(
        FsKind::Ext4,
        BOOT_MIB * MIB,
        Some("boot"),
        Some(&boot_tree(work)?),
        &boot,
    )?;
    let root = work.join("root.fs");
    build_fs(
        FsKind::Ext4,
        DEBIAN_FS_MIB * MIB,
        Some("root"),
        Some(&debian),
        &root,
    )?;
    replace_file(
        &root,
        "/etc/fstab",
        b"# written by the fixture builder\n\
          /dev/mapper/vg0-root / ext4 errors=remount-ro 0 1\n\
          LABEL=boot /boot ext4 defaults,nodev 0 2\n\
          /dev/vg0/swap none swap sw 0 0\n\
          tmpfs /tmp tmpfs defaults 0 0\n",
        work,
    )?;
    let swap = work.join("swap.fs");
    build_fs(FsKind::Swap, SWAP_MIB * MIB, Some("swap"), None, &swap)?;
    let pv = work.join("pv.img");
    build_pv(
        "vg0",
        &[
            LogicalVolume {
                name: "root",
                size_bytes: DEBIAN_FS_MIB * MIB,
                content: Some(&root),
            },
            LogicalVolume {
                name: "swap",
                size_bytes: SWAP_MIB * MIB,
                content: Some(&swap),
            },
        ],
        PV_MIB * MIB,
        &pv,
    )?;
    assemble(
        Table::Gpt,
        None,
        &[
            part(BOOT_MIB, "8300", "boot", Some(&boot)),
            part(PV_MIB, "8e00", "lvm", Some(&pv)),
        ],
        out,
    )?;
    Ok(())
}

/// The files of the multi-segment LV: enough data that every segment holds some of it.
fn multiseg_tree(work: &Path) -> anyhow::Result<std::path::PathBuf> {
    let big: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    tree(
        work,
        "multiseg",
        &[
            ("README.txt", b"a file system in three LVM segments\n"),
            ("data/big.bin", &big),
            ("data/small.txt", b"small\n"),
        ],
    )
}

fn debian_lvm_multiseg(work: &Path, out: &Path) -> anyhow::Result<()> {
    // 1 MiB of PV label and metadata, then 4 MiB extents: PV 1 holds 4, PV 2 holds 2.
    const PV1_MIB: u64 = 20;
    const PV2_MIB: u64 = 12;
    let data = work.join("data.fs");
    build_fs(
        FsKind::Ext4,
        16 * MIB,
        Some("multiseg"),
        Some(&multiseg_tree(work)?),
        &data,
    )?;
    let b = work.join("b.fs");
    let b_tree = tree(work, "b", &[("b.txt", b"LV b\n")])?;
    build_fs(FsKind::Ext4, 4 * MIB, Some("lvb"), Some(&b_tree), &b)?;
    let (pv1, pv2) = (work.join("pv1.img"), work.join("pv2.img"));
    // data: extents 0-1 of PV 1; b: extent 2; data grows into extent 3 (a second segment,
    // not contiguous with the first) and then into PV 2 (a third).
    let placed = build_vg(
        "vg0",
        &[(&pv1, PV1_MIB * MIB), (&pv2, PV2_MIB * MIB)],
        &[
            Step::Create {
                name: "data",
                size_bytes: 8 * MIB,
                pv: Some(0),
            },
            Step::Create {
                name: "b",
                size_bytes: 4 * MIB,
                pv: Some(0),
            },
            Step::Extend {
                name: "data",
                add_bytes: 4 * MIB,
                pv: Some(0),
            },
            Step::Extend {
                name: "data",
                add_bytes: 4 * MIB,
                pv: Some(1),
            },
        ],
        &[("data", &data), ("b", &b)],
    )?;
    let segments = placed
        .iter()
        .find(|(n, _)| n == "data")
        .map_or(0, |(_, s)| s.len());
    anyhow::ensure!(
        segments == 3,
        "LV data has {segments} segments, want 3: {placed:?}"
    );
    assemble(
        Table::Gpt,
        None,
        &[
            part(PV1_MIB, "8e00", "lvm1", Some(&pv1)),
            part(PV2_MIB, "8e00", "lvm2", Some(&pv2)),
        ],
        out,
    )?;
    Ok(())
}

fn debian_logical(work: &Path, out: &Path) -> anyhow::Result<()> {
    let debian = debian_root()?;
    let fat = work.join("fat.fs");
    build_fs(
        FsKind::Vfat,
        32 * MIB,
        Some("FATBOOT"),
        Some(&esp_tree(work, false)?),
        &fat,
    )?;
    let swap = work.join("swap.fs");
    build_fs(FsKind::Swap, 32 * MIB, Some("swap"), None, &swap)?;
    let root = work.join("root.fs");
    build_fs(
        FsKind::Ext4,
        DEBIAN_FS_MIB * MIB,
        Some("root"),
        Some(&debian),
        &root,
    )?;
    assemble(
        Table::Mbr,
        None,
        &[
            part(32, "c", "", Some(&fat)),
            logical(part(32, "82", "", Some(&swap))),
            logical(part(DEBIAN_FS_MIB, "83", "", Some(&root))),
        ],
        out,
    )?;
    Ok(())
}

fn luks(work: &Path, out: &Path) -> anyhow::Result<()> {
    use super::cmd::{run, tool};
    let key = work.join("key");
    std::fs::write(&key, b"snapscan test key, not a secret\n")
        .with_context(|| format!("failed to write '{}'", key.display()))?;
    let format = |luks_type: &str, label: Option<&str>, size_mib: u64, file: &Path| {
        sparse_file(file, size_mib * MIB)?;
        let mut cmd = tool("cryptsetup");
        cmd.args(["luksFormat", "--batch-mode", "--type", luks_type])
            .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg("--key-file")
            .arg(&key);
        if let Some(label) = label {
            cmd.arg("--label").arg(label);
        }
        run(cmd.arg(file), None)
            .with_context(|| format!("failed to format '{}' as {luks_type}", file.display()))
    };
    let luks2 = work.join("luks2.img");
    format("luks2", Some("cryptroot"), 32, &luks2)?;
    let luks1 = work.join("luks1.img");
    format("luks1", None, 8, &luks1)?;
    assemble(
        Table::Gpt,
        None,
        &[
            part(32, "8309", "cryptroot", Some(&luks2)),
            part(8, "8309", "cryptdata", Some(&luks1)),
        ],
        out,
    )?;
    Ok(())
}

fn windows(work: &Path, out: &Path, flavor: WindowsFlavor) -> anyhow::Result<()> {
    windows_disk(work, out, flavor, 64, |_| Ok(()))
}

/// Windows Server 2022 whose hives have the sizes of a real installation.
fn windows_real_hives(work: &Path, out: &Path) -> anyhow::Result<()> {
    windows_disk(work, out, WindowsFlavor::Server2022, 256, |root| {
        let flavor = WindowsFlavor::Server2022;
        let config = root.join("Windows/System32/config");
        realistic::software(flavor, realistic::FIXTURE_PROGRAMS, 110)
            .write(&config.join("SOFTWARE"))?;
        realistic::system(flavor, 20).write(&config.join("SYSTEM"))
    })
}

/// A Windows disk: ESP, MSR and an NTFS volume of `ntfs_mib` MiB holding [`write_root`]'s tree
/// for `flavor`, changed by `adjust` before it is copied.
fn windows_disk(
    work: &Path,
    out: &Path,
    flavor: WindowsFlavor,
    ntfs_mib: u64,
    adjust: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    const ESP_MIB: u64 = 32;
    const MSR_MIB: u64 = 16;
    let esp = work.join("esp.fs");
    build_fs(
        FsKind::Vfat,
        ESP_MIB * MIB,
        Some("SYSTEM"),
        Some(&esp_tree(work, true)?),
        &esp,
    )?;
    let root = work.join("windows");
    std::fs::create_dir_all(&root)
        .with_context(|| format!("failed to create '{}'", root.display()))?;
    write_root(&root, flavor)?;
    adjust(&root)?;
    let ntfs = work.join("ntfs.fs");
    build_fs(
        FsKind::Ntfs,
        ntfs_mib * MIB,
        Some("Windows"),
        Some(&root),
        &ntfs,
    )?;
    assemble(
        Table::Gpt,
        None,
        &[
            part(ESP_MIB, "ef00", "EFI system partition", Some(&esp)),
            part(MSR_MIB, "0c01", "Microsoft reserved partition", None),
            part(ntfs_mib, "0700", "Basic data partition", Some(&ntfs)),
        ],
        out,
    )?;
    Ok(())
}

/// A one-partition MBR disk with a data filesystem (with a few files where it can hold them).
fn data_disk(
    work: &Path,
    out: &Path,
    kind: FsKind,
    label: &str,
    mbr_type: &'static str,
) -> anyhow::Result<()> {
    const SIZE_MIB: u64 = 32;
    let files = tree(
        work,
        "data",
        &[
            ("README.txt", b"Quarterly reports and photos.\n"),
            (
                "reports/2024-q1.csv",
                b"month,revenue\njan,100\nfeb,120\nmar,130\n",
            ),
            (
                "photos/pixel.bin",
                &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a],
            ),
        ],
    )?;
    let root = (kind != FsKind::Exfat).then_some(files.as_path());
    let fs = work.join("data.fs");
    build_fs(kind, SIZE_MIB * MIB, Some(label), root, &fs)?;
    assemble(
        Table::Mbr,
        None,
        &[part(SIZE_MIB, mbr_type, "", Some(&fs))],
        out,
    )?;
    Ok(())
}
