//! Operating-system detection over a [`RootFs`].
//!
//! [`detect`] looks at one volume and says which OS it holds, if any: Linux from os-release and
//! the older release files ([`linux`]), Windows from the registry hives ([`windows`]), the
//! architecture from executable headers ([`arch`]). Picking the OS root among several volumes is
//! the caller's job ([`crate::inspect`]). It reads a handful of small files; it never walks the
//! tree and never executes anything from the disk.

pub mod arch;
pub mod linux;
pub mod windows;

use serde::Serialize;

use crate::fs::{FsError, RootFs};

/// The OS family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Linux (any distribution).
    Linux,
    /// Microsoft Windows.
    Windows,
}

/// What was learnt about the OS on one volume. Fields are `None` when the disk does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsInfo {
    /// Linux or Windows.
    pub family: OsFamily,
    /// os-release `ID` (`debian`, `rhel`, `alpine`...), or `windows`.
    pub id: String,
    /// os-release `VERSION_ID`; for Windows `major.minor` (`10.0`).
    pub version_id: Option<String>,
    /// os-release `VERSION_CODENAME` (`bookworm`).
    pub version_codename: Option<String>,
    /// os-release `NAME`; for Windows the corrected name (`Windows 11 Pro`).
    pub name: Option<String>,
    /// os-release `PRETTY_NAME`; for Windows name and display version.
    pub pretty_name: Option<String>,
    /// Windows: the product (`Windows 11 Pro`), corrected for Windows 11, whose registry still
    /// says Windows 10; the same as [`OsInfo::name`].
    pub product_name: Option<String>,
    /// Windows `ProductName` as the registry has it (`Windows 10 Pro` on Windows 11).
    pub registry_product_name: Option<String>,
    /// Windows build with update revision (`22631.2861`).
    pub build: Option<String>,
    /// Windows `DisplayVersion` (or `ReleaseId` on older builds): `23H2`.
    pub display_version: Option<String>,
    /// Windows `EditionID` (`Professional`, `ServerDatacenter`).
    pub edition: Option<String>,
    /// Windows `InstallationType` (`Client`, `Server`, `Server Core`).
    pub installation_type: Option<String>,
    /// The host name the system gives itself.
    pub hostname: Option<String>,
    /// CPU architecture of the system binaries (`x86_64`, `aarch64`, `i686`, ...).
    pub arch: Option<String>,
    /// Index of the volume holding the OS root (set by the caller that knows the volumes).
    pub volume: Option<usize>,
}

impl OsInfo {
    /// An `OsInfo` with only family and id set.
    pub fn new(family: OsFamily, id: impl Into<String>) -> Self {
        OsInfo {
            family,
            id: id.into(),
            version_id: None,
            version_codename: None,
            name: None,
            pretty_name: None,
            product_name: None,
            registry_product_name: None,
            build: None,
            display_version: None,
            edition: None,
            installation_type: None,
            hostname: None,
            arch: None,
            volume: None,
        }
    }
}

/// Detect the OS on one volume: `Ok(None)` for a volume without an OS root (a /boot or data
/// volume). Errors are device or corruption errors that stopped detection; a volume whose root
/// directory cannot be listed is one (it is damaged, not empty).
pub fn detect(fs: &dyn RootFs) -> Result<Option<OsInfo>, FsError> {
    fs.read_dir("/")?;
    if let Some(os) = windows::detect(fs)? {
        return Ok(Some(os));
    }
    linux::detect(fs)
}
