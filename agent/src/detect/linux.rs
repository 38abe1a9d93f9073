//! Linux detection: distribution from os-release or the older release files, host name, and the
//! architecture of the system binaries.
//!
//! Order: `/etc/os-release`, `/usr/lib/os-release`, then the distribution files of systems that
//! predate os-release (`centos-release`, `redhat-release`, `SuSE-release`, `alpine-release`,
//! `lsb-release`, `debian_version`; Ubuntu also has `debian_version`, so it comes last). Every
//! read is small and bounded; paths resolve inside the volume (usr-merge symlinks such as
//! `/bin -> usr/bin` work). It does not run anything from the disk and does not list packages
//! (that is the inventory's job).

use super::{arch, OsFamily, OsInfo};
use crate::fs::{FsError, RootFs};

/// Largest release or hostname file read.
const SMALL_FILE: u64 = 64 * 1024;

/// Binaries whose ELF header gives the system's architecture, most telling first.
const ARCH_PROBES: &[&str] = &[
    "/usr/bin/bash",
    "/bin/bash",
    "/bin/sh",
    "/usr/bin/ls",
    "/bin/ls",
    "/bin/busybox",
    "/usr/lib/systemd/systemd",
    "/sbin/init",
    "/usr/bin/true",
    "/bin/true",
];

/// Detect a Linux root on a volume; `Ok(None)` if there is none.
pub fn detect(fs: &dyn RootFs) -> Result<Option<OsInfo>, FsError> {
    let Some(mut os) = release(fs)? else {
        return Ok(None);
    };
    os.hostname = hostname(fs);
    os.arch = ARCH_PROBES
        .iter()
        .find_map(|p| {
            let head = fs.read_prefix(p, arch::HEAD_LEN).ok()?;
            arch::elf_arch(&head)
        })
        .map(str::to_owned);
    Ok(Some(os))
}

/// Read a small file; absent or unreadable is `None`, but a device error stops detection.
fn small(fs: &dyn RootFs, path: &str) -> Result<Option<String>, FsError> {
    match fs.read_file(path, SMALL_FILE) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.is_device_error() => Err(e),
        Err(_) => Ok(None),
    }
}

fn release(fs: &dyn RootFs) -> Result<Option<OsInfo>, FsError> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = small(fs, path)? {
            if let Some(os) = from_os_release(&text) {
                return Ok(Some(os));
            }
        }
    }
    type Parser = fn(&str) -> Option<OsInfo>;
    let legacy: [(&str, Parser); 6] = [
        ("/etc/centos-release", from_redhat_release),
        ("/etc/redhat-release", from_redhat_release),
        ("/etc/SuSE-release", from_suse_release),
        ("/etc/alpine-release", from_alpine_release),
        ("/etc/lsb-release", from_lsb_release),
        ("/etc/debian_version", from_debian_version),
    ];
    for (path, parse) in legacy {
        if let Some(text) = small(fs, path)? {
            if let Some(os) = parse(&text) {
                return Ok(Some(os));
            }
        }
    }
    Ok(None)
}

/// `KEY=value` lines with shell-style quoting, as os-release(5) and lsb-release use.
fn key_values(text: &str) -> impl Iterator<Item = (&str, String)> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let (k, v) = line.split_once('=')?;
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        Some((k, unquote(v.trim())))
    })
}

fn unquote(v: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
        .unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn non_empty(s: String) -> Option<String> {
    let s = s.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Parse os-release(5). `ID` defaults to `linux` as the spec says, but a file with neither `ID`
/// nor `NAME` is not taken as an os-release.
pub fn from_os_release(text: &str) -> Option<OsInfo> {
    let mut os = OsInfo::new(OsFamily::Linux, "linux");
    let mut seen = false;
    for (k, v) in key_values(text) {
        let v = non_empty(v);
        match k {
            "ID" => {
                seen = true;
                if let Some(v) = v {
                    os.id = v.to_lowercase();
                }
            }
            "NAME" => {
                seen = true;
                os.name = v;
            }
            "VERSION_ID" => os.version_id = v,
            "PRETTY_NAME" => os.pretty_name = v,
            "VERSION_CODENAME" => os.version_codename = v,
            _ => {}
        }
    }
    seen.then_some(os)
}

/// The first whitespace-separated token that starts with a digit.
fn first_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
}

/// `Red Hat Enterprise Linux Server release 7.9 (Maipo)`, `CentOS Linux release 7.9.2009 (Core)`,
/// `Fedora release 38 (Thirty Eight)`, `Rocky Linux release 8.9 (Green Obsidian)`.
pub fn from_redhat_release(text: &str) -> Option<OsInfo> {
    let line = text.lines().next()?.trim();
    if line.is_empty() {
        return None;
    }
    let lower = line.to_lowercase();
    let (id, name) = [
        ("centos", "centos", "CentOS Linux"),
        ("red hat", "rhel", "Red Hat Enterprise Linux"),
        ("fedora", "fedora", "Fedora Linux"),
        ("rocky", "rocky", "Rocky Linux"),
        ("almalinux", "almalinux", "AlmaLinux"),
        ("oracle", "ol", "Oracle Linux Server"),
        ("scientific", "scientific", "Scientific Linux"),
    ]
    .iter()
    .find(|(key, _, _)| lower.contains(key))
    .map(|(_, id, name)| (*id, *name))
    .unwrap_or(("rhel", "Red Hat Enterprise Linux"));
    let mut os = OsInfo::new(OsFamily::Linux, id);
    os.name = Some(name.to_owned());
    os.version_id = first_version(line);
    os.pretty_name = Some(line.to_owned());
    Some(os)
}

/// `SUSE Linux Enterprise Server 11 (x86_64)` / `VERSION = 11` / `PATCHLEVEL = 4`.
pub fn from_suse_release(text: &str) -> Option<OsInfo> {
    let first = text.lines().next()?.trim();
    if first.is_empty() {
        return None;
    }
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    };
    let opensuse = first.to_lowercase().contains("opensuse");
    let mut os = OsInfo::new(OsFamily::Linux, if opensuse { "opensuse" } else { "sles" });
    os.version_id = match (field("VERSION"), field("PATCHLEVEL")) {
        (Some(v), Some(p)) if p != "0" => Some(format!("{v}.{p}")),
        (Some(v), _) => Some(v),
        (None, _) => first_version(first),
    };
    let name = first.split(" (").next().unwrap_or(first).trim().to_owned();
    os.pretty_name = Some(name.clone());
    os.name = Some(name);
    Some(os)
}

/// `/etc/alpine-release`: just the version (`3.19.1`).
pub fn from_alpine_release(text: &str) -> Option<OsInfo> {
    let v = non_empty(text.lines().next()?.to_owned())?;
    let mut os = OsInfo::new(OsFamily::Linux, "alpine");
    os.name = Some("Alpine Linux".into());
    os.pretty_name = Some(format!("Alpine Linux v{v}"));
    os.version_id = Some(v);
    Some(os)
}

/// `/etc/lsb-release`: `DISTRIB_ID`, `DISTRIB_RELEASE`, `DISTRIB_CODENAME`, `DISTRIB_DESCRIPTION`.
pub fn from_lsb_release(text: &str) -> Option<OsInfo> {
    let mut os = OsInfo::new(OsFamily::Linux, "linux");
    let mut seen = false;
    for (k, v) in key_values(text) {
        let v = non_empty(v);
        match k {
            "DISTRIB_ID" => {
                seen = v.is_some();
                if let Some(v) = v {
                    os.id = v.to_lowercase();
                    os.name = Some(v);
                }
            }
            "DISTRIB_RELEASE" => os.version_id = v,
            "DISTRIB_CODENAME" => os.version_codename = v,
            "DISTRIB_DESCRIPTION" => os.pretty_name = v,
            _ => {}
        }
    }
    seen.then_some(os)
}

/// `/etc/debian_version`: `12.5`, or `bookworm/sid` on testing.
pub fn from_debian_version(text: &str) -> Option<OsInfo> {
    let v = non_empty(text.lines().next()?.to_owned())?;
    let mut os = OsInfo::new(OsFamily::Linux, "debian");
    os.name = Some("Debian GNU/Linux".into());
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        let major = v.split('.').next().unwrap_or(&v).to_owned();
        os.pretty_name = Some(format!("Debian GNU/Linux {major}"));
        os.version_id = Some(major);
    } else {
        os.version_codename = v.split('/').next().map(str::to_owned);
        os.pretty_name = Some(format!("Debian GNU/Linux {v}"));
    }
    Some(os)
}

/// `/etc/hostname`, else SUSE's `/etc/HOSTNAME`, RHEL's `/etc/sysconfig/network` `HOSTNAME=`,
/// OpenRC's `/etc/conf.d/hostname` `hostname=`. The first label of a valid name only.
fn hostname(fs: &dyn RootFs) -> Option<String> {
    let plain = ["/etc/hostname", "/etc/HOSTNAME"]
        .iter()
        .filter_map(|p| fs.read_text(p, SMALL_FILE))
        .find_map(|t| {
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
        });
    let keyed = || {
        [
            ("/etc/sysconfig/network", "HOSTNAME"),
            ("/etc/conf.d/hostname", "hostname"),
        ]
        .iter()
        .filter_map(|(p, key)| Some((fs.read_text(p, SMALL_FILE)?, *key)))
        .find_map(|(t, key)| key_values(&t).find(|(k, _)| k == &key).map(|(_, v)| v))
    };
    plain.or_else(keyed).filter(|h| valid_hostname(h))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemTree;
    use crate::fs::Rooted;

    const ELF_X86_64: &[u8] = &[
        0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0x3e, 0, 1, 0, 0, 0,
    ];

    #[test]
    fn os_release_parsing() {
        let os = from_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n\
             VERSION_CODENAME=bookworm\nID=debian\n# comment\nHOME_URL='https://www.debian.org/'\n",
        )
        .expect("os-release");
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(os.version_codename.as_deref(), Some("bookworm"));
        assert_eq!(
            os.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(from_os_release("FOO=bar\n"), None, "neither ID nor NAME");
        assert_eq!(
            from_os_release("NAME=\"x\\\"y\"")
                .and_then(|o| o.name)
                .as_deref(),
            Some("x\"y")
        );
    }

    #[test]
    fn legacy_release_files() {
        struct Case {
            name: &'static str,
            got: Option<OsInfo>,
            id: &'static str,
            version: Option<&'static str>,
        }
        let cases = [
            Case { name: "centos 7", got: from_redhat_release("CentOS Linux release 7.9.2009 (Core)\n"), id: "centos", version: Some("7.9.2009") },
            Case { name: "rhel 7", got: from_redhat_release("Red Hat Enterprise Linux Server release 7.9 (Maipo)"), id: "rhel", version: Some("7.9") },
            Case { name: "fedora", got: from_redhat_release("Fedora release 38 (Thirty Eight)"), id: "fedora", version: Some("38") },
            Case { name: "sles 11 sp4", got: from_suse_release("SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n"), id: "sles", version: Some("11.4") },
            Case { name: "opensuse", got: from_suse_release("openSUSE 13.2 (x86_64)\nVERSION = 13.2\n"), id: "opensuse", version: Some("13.2") },
            Case { name: "alpine", got: from_alpine_release("3.19.1\n"), id: "alpine", version: Some("3.19.1") },
            Case { name: "ubuntu lsb", got: from_lsb_release("DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\nDISTRIB_CODENAME=trusty\nDISTRIB_DESCRIPTION=\"Ubuntu 14.04.6 LTS\"\n"), id: "ubuntu", version: Some("14.04") },
            Case { name: "debian 12.5", got: from_debian_version("12.5\n"), id: "debian", version: Some("12") },
            Case { name: "debian testing", got: from_debian_version("trixie/sid\n"), id: "debian", version: None },
        ];
        for c in cases {
            let os = c
                .got
                .unwrap_or_else(|| panic!("case {}: not detected", c.name));
            assert_eq!(os.id, c.id, "case {}", c.name);
            assert_eq!(os.version_id.as_deref(), c.version, "case {}", c.name);
        }
        assert_eq!(from_redhat_release(""), None);
        assert_eq!(from_alpine_release("\n"), None);
        assert_eq!(from_lsb_release("DISTRIB_RELEASE=1\n"), None);
    }

    #[test]
    fn detects_a_usr_merged_root() {
        let fs = Rooted(
            MemTree::default()
                .file(
                    "/usr/lib/os-release",
                    "ID=ubuntu\nVERSION_ID=\"22.04\"\nNAME=Ubuntu\n",
                )
                .symlink("/etc/os-release", "../usr/lib/os-release")
                .file("/usr/bin/bash", ELF_X86_64)
                .symlink("/bin", "usr/bin")
                .file("/etc/hostname", "\n# set by cloud-init\nweb-1\n"),
        );
        let os = detect(&fs).expect("detect").expect("linux");
        assert_eq!(os.id, "ubuntu");
        assert_eq!(os.hostname.as_deref(), Some("web-1"));
        assert_eq!(
            os.arch.as_deref(),
            if arch::elf_arch(ELF_X86_64).is_some() {
                Some("x86_64")
            } else {
                None
            }
        );
    }

    #[test]
    fn legacy_hostnames_and_no_linux() {
        let fs = Rooted(
            MemTree::default()
                .file("/etc/centos-release", "CentOS release 6.10 (Final)\n")
                .file("/etc/redhat-release", "CentOS release 6.10 (Final)\n")
                .file(
                    "/etc/sysconfig/network",
                    "NETWORKING=yes\nHOSTNAME=\"db.example.com\"\n",
                ),
        );
        let os = detect(&fs).expect("detect").expect("linux");
        assert_eq!(
            (os.id.as_str(), os.version_id.as_deref()),
            ("centos", Some("6.10"))
        );
        assert_eq!(os.hostname.as_deref(), Some("db.example.com"));

        let bad_host = Rooted(
            MemTree::default()
                .file("/etc/alpine-release", "3.19.1")
                .file("/etc/hostname", "evil\u{1b}[31m"),
        );
        assert_eq!(
            detect(&bad_host).expect("detect").and_then(|o| o.hostname),
            None
        );

        let data = Rooted(
            MemTree::default()
                .file("/home/user/notes.txt", "hi")
                .dir("/etc"),
        );
        assert_eq!(detect(&data), Ok(None));
    }
}
