//! Test doubles and fixture builders shared by snapscan's end-to-end tests.
//!
//! Fixtures are real disk images made by real Debian tools (mkfs.*, sgdisk, sfdisk, cryptsetup,
//! LVM, debootstrap) and cached under [`cache_dir`], so a second run costs nothing.

pub mod hive;
pub mod images;
pub mod windows;

use std::path::PathBuf;

/// Where built fixtures are cached: `$SNAPSCAN_TEST_CACHE`, else `target/fixture-cache` in the
/// workspace. Created on first use.
pub fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("SNAPSCAN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("fixture-cache")
        });
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
