//! Linux detection (placeholder, being written).

use super::OsInfo;
use crate::fs::{FsError, RootFs};

/// Detect Linux on a volume: `Ok(None)` when the volume holds no Linux root.
pub fn detect(_fs: &dyn RootFs) -> Result<Option<OsInfo>, FsError> {
    Ok(None)
}
