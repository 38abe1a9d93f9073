//! Synthetic Windows system trees (placeholder, being written).

use std::path::Path;

/// Which Windows to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowsFlavor {
    /// Windows Server 2022 Datacenter (build 20348), x86_64.
    Server2022,
    /// Windows 11 Pro 23H2 (build 22631), x86_64; its ProductName still says "Windows 10 Pro".
    Windows11,
}

/// Write a Windows system tree (registry hives, `System32/cmd.exe`...) under `dir`.
pub fn write_root(_dir: &Path, _flavor: WindowsFlavor) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
