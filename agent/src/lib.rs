//! snapscan: scan the disks of Google Compute Engine VMs from a dedicated scanner VM, read-only.
//!
//! The library holds everything; the `snapscan` binary only parses the command line and maps the
//! final error to an exit code. Modules are named after what they talk to:
//! [`disk`] (block access, partition tables, superblock probes), [`fs`] (native read-only
//! filesystem access behind [`fs::RootFs`]), [`detect`] (OS detection over a `RootFs`) and
//! [`inspect`] (the disk report that `snapscan inspect` prints).
#![deny(missing_docs)]

mod bytes;
pub mod cli;
pub mod config;
pub mod detect;
pub mod disk;
pub mod fs;
pub mod inspect;
pub mod inventory;
pub mod mount;
pub mod scan;
pub mod scanner;
pub mod upload;
