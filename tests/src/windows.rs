//! Synthetic Windows system trees, to be copied onto NTFS test images.
//!
//! [`write_root`] writes into an ordinary directory what snapscan reads from a real Windows
//! volume: the `SOFTWARE` hive (`Microsoft\Windows NT\CurrentVersion` and the `Uninstall` keys,
//! native and `WOW6432Node`), the `SYSTEM` hive (`Select`, `ControlSet001` with the computer name,
//! TCP/IP host name and processor architecture), small but valid PE32+ x86-64 headers for
//! `System32\cmd.exe` and `System32\ntoskrnl.exe`, and the usual top-level skeleton. [`expected`]
//! and [`programs`] say what a correct reader finds there, so tests compare against data rather
//! than repeat literals. Hives come from [`crate::hive`].
//!
//! It deliberately does not make a bootable or complete Windows: no SAM, SECURITY or DEFAULT
//! hives, no `CurrentControlSet` (on disk it does not exist; readers must follow `Select`), no
//! user profiles beyond `Public` and `Default`, executables that are headers around a single
//! `ret`, and no NTFS attributes, ACLs or short names (the image builders handle the volume).
//! The values imitate real installations (Windows Server 2022 Datacenter 21H2 and Windows 11
//! Pro 23H2, both x64) but are not copied from any.

use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::hive::Hive;

/// Which Windows to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowsFlavor {
    /// Windows Server 2022 Datacenter (build 20348), x86_64.
    Server2022,
    /// Windows 11 Pro 23H2 (build 22631), x86_64; its ProductName still says "Windows 10 Pro".
    Windows11,
}

/// What a correct reader finds in the tree [`write_root`] writes; the field names follow
/// snapscan's `OsInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// `ProductName` as the registry has it (`Windows 10 Pro` on Windows 11).
    pub product_name: &'static str,
    /// The corrected name: `Windows 11 Pro` for a client build >= 22000.
    pub name: &'static str,
    /// `CurrentMajorVersionNumber.CurrentMinorVersionNumber`: `10.0`.
    pub version_id: &'static str,
    /// `CurrentBuild.UBR`: `22631.2861`.
    pub build: &'static str,
    /// `DisplayVersion`: `23H2`.
    pub display_version: &'static str,
    /// `EditionID`: `Professional`.
    pub edition: &'static str,
    /// `InstallationType`: `Client` or `Server`.
    pub installation_type: &'static str,
    /// The TCP/IP host name (equal to the computer name here).
    pub hostname: &'static str,
    /// Architecture of `cmd.exe` and `ntoskrnl.exe`: `x86_64`.
    pub arch: &'static str,
}

/// One `Uninstall\<key>` entry.
struct Program {
    /// The subkey name under `Uninstall`.
    key: &'static str,
    name: &'static str,
    version: &'static str,
    publisher: &'static str,
    /// Under `WOW6432Node` (a 32-bit installer) rather than the native view.
    wow64: bool,
}

/// Everything that differs between the flavors.
struct Spec {
    expected: Expected,
    current_build: &'static str,
    ubr: u32,
    build_lab_ex: &'static str,
    /// `ProductOptions\ProductType`: `WinNT` for clients, `ServerNT` for servers.
    product_type: &'static str,
    install_date: u32,
    programs: &'static [Program],
}

const VC_X64: Program = Program {
    key: "{5C9D8E2A-3F1B-4C6D-9A0E-7B2F4D8C1E63}",
    name: "Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.38.33130",
    version: "14.38.33130.0",
    publisher: "Microsoft Corporation",
    wow64: false,
};

const VC_X86: Program = Program {
    key: "{8E1F4A7B-2D6C-4B9E-A3F0-5C7D1E9B2A48}",
    name: "Microsoft Visual C++ 2015-2022 Redistributable (x86) - 14.38.33130",
    version: "14.38.33130.0",
    publisher: "Microsoft Corporation",
    wow64: true,
};

const SEVEN_ZIP: Program = Program {
    key: "7-Zip",
    name: "7-Zip 23.01 (x64)",
    version: "23.01",
    publisher: "Igor Pavlov",
    wow64: false,
};

fn spec(flavor: WindowsFlavor) -> Spec {
    match flavor {
        WindowsFlavor::Server2022 => Spec {
            expected: Expected {
                product_name: "Windows Server 2022 Datacenter",
                name: "Windows Server 2022 Datacenter",
                version_id: "10.0",
                build: "20348.2227",
                display_version: "21H2",
                edition: "ServerDatacenter",
                installation_type: "Server",
                hostname: "WIN-SRV2022",
                arch: "x86_64",
            },
            current_build: "20348",
            ubr: 2227,
            build_lab_ex: "20348.1.amd64fre.fe_release.210507-1500",
            product_type: "ServerNT",
            install_date: 1_704_931_200, // 2024-01-11
            programs: &[
                VC_X64,
                SEVEN_ZIP,
                Program {
                    key: "{3B7A2C9D-6E1F-4A58-B0C4-9D2E7F1A6C35}",
                    name: "Google Cloud SDK",
                    version: "458.0.0",
                    publisher: "Google LLC",
                    wow64: true,
                },
                VC_X86,
            ],
        },
        WindowsFlavor::Windows11 => Spec {
            expected: Expected {
                product_name: "Windows 10 Pro",
                name: "Windows 11 Pro",
                version_id: "10.0",
                build: "22631.2861",
                display_version: "23H2",
                edition: "Professional",
                installation_type: "Client",
                hostname: "DESKTOP-W11",
                arch: "x86_64",
            },
            current_build: "22631",
            ubr: 2861,
            build_lab_ex: "22621.1.amd64fre.ni_release.220506-1250",
            product_type: "WinNT",
            install_date: 1_702_339_200, // 2023-12-12
            programs: &[
                VC_X64,
                Program {
                    key: "Mozilla Firefox 121.0 (x64 en-US)",
                    name: "Mozilla Firefox (x64 en-US)",
                    version: "121.0",
                    publisher: "Mozilla",
                    wow64: false,
                },
                SEVEN_ZIP,
                Program {
                    key: "Google Chrome",
                    name: "Google Chrome",
                    version: "120.0.6099.130",
                    publisher: "Google LLC",
                    wow64: true,
                },
                VC_X86,
            ],
        },
    }
}

/// What [`write_root`] writes for `flavor`, as a reader should report it.
pub fn expected(flavor: WindowsFlavor) -> Expected {
    spec(flavor).expected
}

/// The installed programs [`write_root`] registers for `flavor` as `(DisplayName,
/// DisplayVersion, Publisher)`: the native `Uninstall` entries first, then the `WOW6432Node`
/// ones. The `AddressBook` entry, which like on real Windows has no `DisplayName`, is not a
/// program and is not listed.
pub fn programs(flavor: WindowsFlavor) -> Vec<(&'static str, &'static str, &'static str)> {
    let spec = spec(flavor);
    let native = spec.programs.iter().filter(|p| !p.wow64);
    let wow64 = spec.programs.iter().filter(|p| p.wow64);
    native
        .chain(wow64)
        .map(|p| (p.name, p.version, p.publisher))
        .collect()
}

/// Write a Windows system tree (registry hives, `System32/cmd.exe`...) under `dir`.
pub fn write_root(dir: &Path, flavor: WindowsFlavor) -> anyhow::Result<()> {
    let spec = spec(flavor);
    for sub in [
        "Program Files/Common Files",
        "Program Files (x86)/Common Files",
        "ProgramData/Microsoft/Windows/Start Menu/Programs",
        "Users/Default",
        "Users/Public/Documents",
        "Windows/System32/config",
        "Windows/System32/drivers/etc",
        "Windows/SysWOW64",
        "Windows/Temp",
    ] {
        let path = dir.join(sub);
        fs::create_dir_all(&path)
            .with_context(|| format!("failed to create '{}'", path.display()))?;
    }
    let config = dir.join("Windows/System32/config");
    software_hive(&spec).write(&config.join("SOFTWARE"))?;
    system_hive(&spec).write(&config.join("SYSTEM"))?;

    let files: [(&str, Vec<u8>); 4] = [
        (
            "Windows/System32/cmd.exe",
            pe32_plus_x86_64(SUBSYSTEM_CONSOLE),
        ),
        (
            "Windows/System32/ntoskrnl.exe",
            pe32_plus_x86_64(SUBSYSTEM_NATIVE),
        ),
        (
            "Windows/System32/drivers/etc/hosts",
            HOSTS.replace('\n', "\r\n").into(),
        ),
        (
            "Users/Public/Documents/desktop.ini",
            DESKTOP_INI.replace('\n', "\r\n").into(),
        ),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    Ok(())
}

/// The SOFTWARE hive: version information and installed programs.
fn software_hive(spec: &Spec) -> Hive {
    let e = &spec.expected;
    let mut hive = Hive::with_root_name("CMI-CreateHive{199DAFC2-6F16-4946-BF90-5A3FC3A60902}");
    hive.key(r"Microsoft\Windows NT\CurrentVersion")
        .sz("SystemRoot", r"C:\Windows")
        .sz("PathName", r"C:\Windows")
        .sz("ProductName", e.product_name)
        .sz("EditionID", e.edition)
        .sz("CompositionEditionID", e.edition)
        .sz("InstallationType", e.installation_type)
        .sz("CurrentVersion", "6.3")
        .dword("CurrentMajorVersionNumber", 10)
        .dword("CurrentMinorVersionNumber", 0)
        .sz("CurrentBuild", spec.current_build)
        .sz("CurrentBuildNumber", spec.current_build)
        .dword("UBR", spec.ubr)
        .sz("DisplayVersion", e.display_version)
        .sz("ReleaseId", "2009")
        .sz("BuildLabEx", spec.build_lab_ex)
        .sz("CurrentType", "Multiprocessor Free")
        .sz("RegisteredOwner", "Windows User")
        .sz("RegisteredOrganization", "")
        .dword("InstallDate", spec.install_date)
        // FILETIME of the same instant.
        .qword(
            "InstallTime",
            (u64::from(spec.install_date) + 11_644_473_600) * 10_000_000,
        )
        .binary("DigitalProductId", &digital_product_id());

    hive.key(r"Microsoft\Windows\CurrentVersion")
        .sz("ProgramFilesDir", r"C:\Program Files")
        .sz("ProgramFilesDir (x86)", r"C:\Program Files (x86)")
        .sz("CommonFilesDir", r"C:\Program Files\Common Files")
        .expand_sz("ProgramFilesPath", "%ProgramFiles%")
        .sz("DevicePath", r"%SystemRoot%\inf");
    hive.key(r"WOW6432Node\Microsoft\Windows\CurrentVersion")
        .sz("ProgramFilesDir", r"C:\Program Files (x86)")
        .sz("CommonFilesDir", r"C:\Program Files (x86)\Common Files");

    // Real Windows has Uninstall entries without DisplayName; readers must skip them.
    hive.key(r"Microsoft\Windows\CurrentVersion\Uninstall\AddressBook");
    hive.key(r"WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\AddressBook");
    for p in spec.programs {
        let view = if p.wow64 { r"WOW6432Node\" } else { "" };
        let base = if p.wow64 {
            r"C:\Program Files (x86)"
        } else {
            r"C:\Program Files"
        };
        let location = format!(r"{base}\{}\", p.name);
        hive.key(&format!(
            r"{view}Microsoft\Windows\CurrentVersion\Uninstall\{}",
            p.key
        ))
        .sz("DisplayName", p.name)
        .sz("DisplayVersion", p.version)
        .sz("Publisher", p.publisher)
        .sz("InstallLocation", &location)
        .expand_sz("UninstallString", &format!("{location}uninstall.exe"))
        .sz("InstallDate", "20240110")
        .dword("EstimatedSize", 20_480)
        .dword("NoModify", 1);
    }
    hive
}

/// The SYSTEM hive: control set selection, computer name, TCP/IP host name.
fn system_hive(spec: &Spec) -> Hive {
    let e = &spec.expected;
    let mut hive = Hive::system_base(e.hostname);
    let set = hive.key("ControlSet001");
    set.key(r"Control\ProductOptions")
        .sz("ProductType", spec.product_type)
        .multi_sz("ProductSuite", &["Terminal Server"]);
    set.key(r"Control\Session Manager\Environment")
        .sz("PROCESSOR_ARCHITECTURE", "AMD64")
        .sz("NUMBER_OF_PROCESSORS", "2")
        .expand_sz("Path", r"%SystemRoot%\system32;%SystemRoot%")
        .expand_sz("TEMP", r"%SystemRoot%\TEMP")
        .sz("OS", "Windows_NT");
    set.key(r"Services\Tcpip\Parameters")
        .sz("Hostname", e.hostname)
        .sz("NV Hostname", e.hostname)
        .sz("Domain", "")
        .sz("NV Domain", "")
        .expand_sz("DataBasePath", r"%SystemRoot%\System32\drivers\etc");
    hive
}

/// A made-up 164-byte `DigitalProductId` blob (the real one encodes the product key).
fn digital_product_id() -> Vec<u8> {
    let mut id = vec![0u8; 164];
    id[0..4].copy_from_slice(&164u32.to_le_bytes());
    id[4] = 3; // version
    id[8..31].copy_from_slice(b"00000-00000-00000-AA000");
    id
}

/// `IMAGE_SUBSYSTEM_NATIVE`, for drivers and the kernel.
const SUBSYSTEM_NATIVE: u16 = 1;
/// `IMAGE_SUBSYSTEM_WINDOWS_CUI`, for console programs.
const SUBSYSTEM_CONSOLE: u16 = 3;

/// A 1 KiB PE32+ image for x86-64: DOS header and stub, `PE\0\0`, COFF header (machine
/// 0x8664), the PE32+ optional header (magic 0x20b) with 16 empty data directories, and one
/// `.text` section whose code is a single `ret`.
fn pe32_plus_x86_64(subsystem: u16) -> Vec<u8> {
    const E_LFANEW: usize = 0x80;
    const FILE_ALIGNMENT: u32 = 0x200;
    const SECTION_ALIGNMENT: u32 = 0x1000;
    fn at(pe: &mut [u8], offset: usize, bytes: &[u8]) {
        pe[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    let mut pe = vec![0u8; 0x400];

    // DOS header: magic, the usual MS-DOS header fields, e_lfanew at 0x3C; then the stub.
    at(&mut pe, 0x00, b"MZ");
    at(&mut pe, 0x02, &0x90u16.to_le_bytes()); // bytes on last page
    at(&mut pe, 0x04, &3u16.to_le_bytes()); // pages
    at(&mut pe, 0x08, &4u16.to_le_bytes()); // header paragraphs
    at(&mut pe, 0x0C, &0xFFFFu16.to_le_bytes()); // max extra paragraphs
    at(&mut pe, 0x10, &0xB8u16.to_le_bytes()); // initial SP
    at(&mut pe, 0x18, &0x40u16.to_le_bytes()); // relocation table offset
    at(
        &mut pe,
        0x3C,
        &u32::try_from(E_LFANEW).expect("small").to_le_bytes(),
    );
    at(
        &mut pe,
        0x40,
        b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21",
    );
    at(
        &mut pe,
        0x4E,
        b"This program cannot be run in DOS mode.\r\r\n$",
    );

    // PE signature and COFF file header.
    let coff = E_LFANEW + 4;
    at(&mut pe, E_LFANEW, b"PE\0\0");
    at(&mut pe, coff, &0x8664u16.to_le_bytes()); // IMAGE_FILE_MACHINE_AMD64
    at(&mut pe, coff + 2, &1u16.to_le_bytes()); // sections
    at(&mut pe, coff + 4, &0x6578_2A00u32.to_le_bytes()); // timestamp (2023-12-12)
    at(&mut pe, coff + 16, &0xF0u16.to_le_bytes()); // size of optional header
    at(&mut pe, coff + 18, &0x0022u16.to_le_bytes()); // EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE

    // PE32+ optional header.
    let opt = coff + 20;
    at(&mut pe, opt, &0x20Bu16.to_le_bytes()); // PE32+ magic
    at(&mut pe, opt + 2, &[14, 38]); // linker version
    at(&mut pe, opt + 4, &FILE_ALIGNMENT.to_le_bytes()); // size of code
    at(&mut pe, opt + 16, &SECTION_ALIGNMENT.to_le_bytes()); // entry point
    at(&mut pe, opt + 20, &SECTION_ALIGNMENT.to_le_bytes()); // base of code
    at(&mut pe, opt + 24, &0x1_4000_0000u64.to_le_bytes()); // image base
    at(&mut pe, opt + 32, &SECTION_ALIGNMENT.to_le_bytes());
    at(&mut pe, opt + 36, &FILE_ALIGNMENT.to_le_bytes());
    for field in [40, 44, 48] {
        at(&mut pe, opt + field, &10u16.to_le_bytes()); // OS, image, subsystem version 10.0
    }
    at(&mut pe, opt + 56, &(2 * SECTION_ALIGNMENT).to_le_bytes()); // size of image
    at(&mut pe, opt + 60, &FILE_ALIGNMENT.to_le_bytes()); // size of headers
    at(&mut pe, opt + 68, &subsystem.to_le_bytes());
    // HIGH_ENTROPY_VA | DYNAMIC_BASE | NX_COMPAT | TERMINAL_SERVER_AWARE
    at(&mut pe, opt + 70, &0x8160u16.to_le_bytes());
    at(&mut pe, opt + 72, &0x10_0000u64.to_le_bytes()); // stack reserve
    at(&mut pe, opt + 80, &0x1000u64.to_le_bytes()); // stack commit
    at(&mut pe, opt + 88, &0x10_0000u64.to_le_bytes()); // heap reserve
    at(&mut pe, opt + 96, &0x1000u64.to_le_bytes()); // heap commit
    at(&mut pe, opt + 108, &16u32.to_le_bytes()); // data directories (all empty)

    // Section table: .text, one file-aligned block of code.
    let section = opt + 0xF0;
    at(&mut pe, section, b".text\0\0\0");
    at(&mut pe, section + 8, &1u32.to_le_bytes()); // virtual size
    at(&mut pe, section + 12, &SECTION_ALIGNMENT.to_le_bytes()); // virtual address
    at(&mut pe, section + 16, &FILE_ALIGNMENT.to_le_bytes()); // size of raw data
    at(&mut pe, section + 20, &FILE_ALIGNMENT.to_le_bytes()); // pointer to raw data
    at(&mut pe, section + 36, &0x6000_0020u32.to_le_bytes()); // CODE | EXECUTE | READ

    at(&mut pe, 0x200, &[0xC3]); // ret
    pe
}

/// The stock `hosts` file of a fresh Windows installation (written with CRLF line ends).
const HOSTS: &str = "# Copyright (c) 1993-2009 Microsoft Corp.
#
# This is a sample HOSTS file used by Microsoft TCP/IP for Windows.
#
# This file contains the mappings of IP addresses to host names. Each
# entry should be kept on an individual line. The IP address should
# be placed in the first column followed by the corresponding host name.
# The IP address and the host name should be separated by at least one
# space.
#
# For example:
#
#      102.54.94.97     rhino.acme.com          # source server
#       38.25.63.10     x.acme.com              # x client host

# localhost name resolution is handled within DNS itself.
#\t127.0.0.1       localhost
#\t::1             localhost
";

/// `Users/Public/Documents/desktop.ini` (written with CRLF line ends).
const DESKTOP_INI: &str = "
[.ShellClassInfo]
LocalizedResourceName=@%SystemRoot%\\system32\\shell32.dll,-21801
IconResource=%SystemRoot%\\system32\\imageres.dll,-112
IconFile=%SystemRoot%\\system32\\shell32.dll
IconIndex=-235
";
