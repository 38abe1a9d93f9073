//! The directory trees that go onto the fixture filesystems: a real Debian 12 made once by
//! debootstrap and cached, and small synthetic roots that hold just what OS detection reads
//! (release files, host name, a system binary's ELF header) for distributions we cannot
//! bootstrap here.
//!
//! The synthetic roots follow the real distributions' layouts (usr-merge symlinks where the
//! distribution has them, `/etc/os-release -> ../usr/lib/os-release`, where the host name
//! lives) but are not complete systems. x86_64 binaries are copies of the host's `bash`;
//! the aarch64 one is a bare ELF header.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};

use super::cmd::{run, tool};
use super::guard::{lock_file, MountSweep};
use super::{cache_subdir, DEBIAN_HOSTNAME};

/// Bump to rebuild the cached Debian tree (and so every image made from it).
pub const DEBIAN_REV: u32 = 1;

/// The cached `debootstrap --variant=minbase bookworm` tree (built on first use, root only),
/// with `etc/hostname` set to `debian-fixture` and the downloaded `.deb` files removed as
/// `apt-get clean` would. Safe to call from several threads and processes at once.
pub fn debian_root() -> anyhow::Result<PathBuf> {
    debootstrap_cached("debian-bookworm-minbase", DEBIAN_REV, &[], DEBIAN_HOSTNAME)
}

/// A cached `debootstrap --variant=minbase bookworm` tree with the packages `include` added,
/// in `<cache>/<prefix>.r<rev>` (other revisions of the same prefix are removed once it is
/// built), `etc/hostname` set to `hostname` and the `.deb` files removed. Root only.
pub fn debootstrap_cached(
    prefix: &str,
    rev: u32,
    include: &[&str],
    hostname: &str,
) -> anyhow::Result<PathBuf> {
    let name = format!("{prefix}.r{rev}");
    let dir = crate::cache_dir().join(&name);
    if dir.join("etc/hostname").is_file() {
        return Ok(dir);
    }
    let _lock = lock_file(&cache_subdir("locks")?.join(format!("{name}.lock")))?;
    if dir.join("etc/hostname").is_file() {
        return Ok(dir);
    }
    super::require_root("a Debian tree (debootstrap)")?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .tempdir_in(cache_subdir("tmp")?)
        .context("failed to create a work directory for debootstrap")?;
    let target = work.path().join("root");
    {
        // debootstrap mounts proc and sys in the target; make sure nothing stays mounted.
        let sweep = MountSweep::new(work.path())?;
        let mut cmd = tool("debootstrap");
        cmd.arg("--variant=minbase");
        if !include.is_empty() {
            cmd.arg(format!("--include={}", include.join(",")));
        }
        cmd.arg("bookworm").arg(&target);
        if let Some(mirror) = std::env::var_os("SNAPSCAN_DEBIAN_MIRROR") {
            cmd.arg(mirror);
        }
        if let Err(e) = run(&mut cmd, None) {
            // debootstrap's own log says which step failed; its stderr often does not.
            let log =
                fs::read_to_string(target.join("debootstrap/debootstrap.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(e.context(format!(
                "debootstrap of Debian bookworm failed; end of debootstrap.log:\n{}",
                tail.join("\n")
            )));
        }
        sweep.sweep()?;
    }
    fs::write(target.join("etc/hostname"), format!("{hostname}\n"))
        .context("failed to write etc/hostname in the Debian tree")?;
    let archives = target.join("var/cache/apt/archives");
    for entry in fs::read_dir(&archives)
        .with_context(|| format!("failed to list '{}'", archives.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            fs::remove_file(&path)
                .with_context(|| format!("failed to remove '{}'", path.display()))?;
        }
    }
    fs::rename(&target, &dir).with_context(|| {
        format!(
            "failed to move the Debian tree into place at '{}'",
            dir.display()
        )
    })?;
    remove_stale_trees(prefix, &name)?;
    Ok(dir)
}

/// Remove cached trees `<prefix>.r*` other than `current` (hundreds of MB each).
fn remove_stale_trees(prefix: &str, current: &str) -> anyhow::Result<()> {
    let cache = crate::cache_dir();
    for entry in
        fs::read_dir(&cache).with_context(|| format!("failed to list '{}'", cache.display()))?
    {
        let entry = entry?;
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&format!("{prefix}.r")) && file != current {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("failed to remove '{}'", entry.path().display()))?;
        }
    }
    Ok(())
}

/// One thing in a synthetic tree.
enum Entry {
    /// A directory (parents are created for every entry anyway).
    Dir(&'static str),
    /// A text file.
    Text(&'static str, &'static str),
    /// A file with these bytes.
    Bytes(&'static str, Vec<u8>),
    /// A symlink and its target, written as is.
    Link(&'static str, &'static str),
}

use Entry::{Bytes, Dir, Link, Text};

/// The host's bash (an x86_64 ELF on the machines the tests run on), checked to be x86_64.
fn host_bash() -> anyhow::Result<Vec<u8>> {
    let bytes = fs::read("/usr/bin/bash")
        .or_else(|_| fs::read("/bin/bash"))
        .context("failed to read the host's bash")?;
    ensure!(
        bytes.get(..4) == Some(b"\x7fELF") && bytes.get(18..20) == Some(&[62, 0]),
        "the host's bash is not an x86_64 ELF; the synthetic roots expect one"
    );
    Ok(bytes)
}

/// A minimal ELF64 little-endian executable header for `machine` (183 = aarch64): enough for
/// anything that reads `e_machine`, not runnable.
pub fn elf64_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN, as PIE executables are
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    h
}

/// `e_machine` of aarch64.
pub const EM_AARCH64: u16 = 183;

/// The usr-merge symlinks of current distributions.
const USR_MERGE: [Entry; 4] = [
    Link("bin", "usr/bin"),
    Link("sbin", "usr/sbin"),
    Link("lib", "usr/lib"),
    Link("lib64", "usr/lib64"),
];

const UBUNTU_2204_OS_RELEASE: &str = r#"PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"#;

const UBUNTU_2204_DPKG_STATUS: &str = "Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 394
Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>
Architecture: amd64
Version: 12ubuntu4.6
Description: Debian base system miscellaneous files

Package: bash
Essential: yes
Status: install ok installed
Priority: required
Section: shells
Installed-Size: 1864
Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>
Architecture: amd64
Version: 5.1-6ubuntu1.1
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)
Description: GNU Bourne Again SHell

Package: openssl
Status: install ok installed
Priority: optional
Section: utils
Installed-Size: 2046
Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>
Architecture: amd64
Version: 3.0.2-0ubuntu1.15
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.2-0ubuntu1.2)
Description: Secure Sockets Layer toolkit - cryptographic utility
";

const RHEL9_OS_RELEASE: &str = r#"NAME="Red Hat Enterprise Linux"
VERSION="9.3 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.3 (Plow)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/9"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 9"
REDHAT_BUGZILLA_PRODUCT_VERSION=9.3
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.3"
"#;

const ALPINE_OS_RELEASE: &str = r#"NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
"#;

const ALPINE_APK_INSTALLED: &str = "C:Q1ZlaIuT1bcq2TlSuqVnPxX64ucdw=
P:musl
V:1.2.4_git20230717-r4
A:aarch64
S:392118
I:667648
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>
t:1705406735

C:Q1RGzgMnV0ShW7/cNDfBY1x3Jt2gk=
P:busybox
V:1.36.1-r15
A:aarch64
S:495842
I:929792
T:Size optimized toolbox of many common UNIX utilities
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1705406735

";

const SLES15_OS_RELEASE: &str = r#"NAME="SLES"
VERSION="15-SP5"
VERSION_ID="15.5"
PRETTY_NAME="SUSE Linux Enterprise Server 15 SP5"
ID="sles"
ID_LIKE="suse"
ANSI_COLOR="0;32"
CPE_NAME="cpe:/o:suse:sles:15:sp5"
DOCUMENTATION_URL="https://documentation.suse.com/"
"#;

/// The synthetic root of fixture `name`, as entries.
fn synthetic(name: &str) -> anyhow::Result<Vec<Entry>> {
    let bash = host_bash()?;
    let mut entries = match name {
        "whole-disk-ext4" => vec![
            Text("usr/lib/os-release", UBUNTU_2204_OS_RELEASE),
            Link("etc/os-release", "../usr/lib/os-release"),
            Text(
                "etc/lsb-release",
                "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n\
                 DISTRIB_DESCRIPTION=\"Ubuntu 22.04.4 LTS\"\n",
            ),
            Text("etc/debian_version", "bookworm/sid\n"),
            Text("etc/hostname", "ubuntu-whole\n"),
            Bytes("usr/bin/bash", bash),
            Link("usr/bin/sh", "dash"),
            Text("var/lib/dpkg/status", UBUNTU_2204_DPKG_STATUS),
        ],
        "rhel9" => vec![
            Text("usr/lib/os-release", RHEL9_OS_RELEASE),
            Link("etc/os-release", "../usr/lib/os-release"),
            Text(
                "etc/redhat-release",
                "Red Hat Enterprise Linux release 9.3 (Plow)\n",
            ),
            Link("etc/system-release", "redhat-release"),
            Text("etc/hostname", "rhel9-web\n"),
            Bytes("usr/bin/bash", bash),
            Link("usr/bin/sh", "bash"),
            Dir("var/lib/rpm"),
        ],
        "centos7-legacy" => vec![
            Text(
                "etc/centos-release",
                "CentOS Linux release 7.9.2009 (Core)\n",
            ),
            Link("etc/redhat-release", "centos-release"),
            Link("etc/system-release", "centos-release"),
            Text(
                "etc/sysconfig/network",
                "NETWORKING=yes\nHOSTNAME=centos7-legacy\n",
            ),
            Bytes("usr/bin/bash", bash),
            Link("usr/bin/sh", "bash"),
            Dir("var/lib/rpm"),
        ],
        "alpine" => vec![
            Text("etc/os-release", ALPINE_OS_RELEASE),
            Text("etc/alpine-release", "3.19.1\n"),
            Text("etc/hostname", "alpine-arm\n"),
            Bytes("bin/busybox", elf64_header(EM_AARCH64)),
            Link("bin/sh", "/bin/busybox"),
            Link("bin/ls", "/bin/busybox"),
            Dir("usr/bin"),
            Text("lib/apk/db/installed", ALPINE_APK_INSTALLED),
        ],
        "sles15" => vec![
            Text("usr/lib/os-release", SLES15_OS_RELEASE),
            Link("etc/os-release", "../usr/lib/os-release"),
            Text("etc/hostname", "sles15-db\n"),
            Bytes("bin/bash", bash),
            Link("bin/sh", "bash"),
            Dir("usr/bin"),
        ],
        "suse-legacy" => vec![
            Text(
                "etc/SuSE-release",
                "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
            ),
            Text("etc/HOSTNAME", "sles11-legacy\n"),
            Bytes("bin/bash", bash),
            Link("bin/sh", "bash"),
            Dir("usr/bin"),
        ],
        "ubuntu-lsb" => vec![
            Text(
                "etc/lsb-release",
                "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\nDISTRIB_CODENAME=trusty\n\
                 DISTRIB_DESCRIPTION=\"Ubuntu 14.04.6 LTS\"\n",
            ),
            // Ubuntu also ships debian_version; a detector must prefer lsb-release.
            Text("etc/debian_version", "jessie/sid\n"),
            Text("etc/hostname", "trusty-box\n"),
            Bytes("bin/bash", bash),
            Link("bin/sh", "dash"),
            Dir("usr/bin"),
        ],
        other => bail!("no synthetic root for fixture {other:?}"),
    };
    if matches!(name, "whole-disk-ext4" | "rhel9" | "centos7-legacy") {
        entries.extend(USR_MERGE);
        entries.extend([Dir("usr/sbin"), Dir("usr/lib64")]);
    }
    entries.extend([Dir("tmp"), Dir("root"), Dir("home"), Dir("var/log")]);
    Ok(entries)
}

/// Names of the fixtures whose root [`write_synthetic_root`] writes.
pub const SYNTHETIC: [&str; 7] = [
    "whole-disk-ext4",
    "rhel9",
    "centos7-legacy",
    "alpine",
    "sles15",
    "suse-legacy",
    "ubuntu-lsb",
];

/// Write the synthetic root of fixture `name` (one of [`SYNTHETIC`]) into the directory `dir`.
pub fn write_synthetic_root(name: &str, dir: &Path) -> anyhow::Result<()> {
    for entry in synthetic(name)? {
        let rel = match &entry {
            Dir(p) | Text(p, _) | Bytes(p, _) | Link(p, _) => *p,
        };
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("failed to create '{}'", parent.display()))?;
        }
        let done = match &entry {
            Dir(_) => fs::create_dir_all(&path),
            Text(_, text) => fs::write(&path, text),
            Bytes(_, bytes) => fs::write(&path, bytes),
            Link(_, target) => symlink(target, &path),
        };
        done.with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    // Binaries executable, as on the real systems.
    for bin in ["usr/bin/bash", "bin/bash", "bin/busybox"] {
        let path = dir.join(bin);
        if path.is_file() && !path.is_symlink() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("failed to make '{}' executable", path.display()))?;
        }
    }
    Ok(())
}
