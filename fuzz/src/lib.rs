//! What the RootFs fuzz targets share: a bounded volume over the input, a fixed exercise, and the
//! one known upstream panic that is tolerated.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use snapscan::disk::reader::{Budget, Disk, Volume};
use snapscan::fs::RootFs;

/// The `ntfs` crate (0.4) panics when an I/O error reaches it through binrw's field context
/// ("Got a binrw error of unexpected type"): ColinFinck/ntfs pull request #36, unreleased.
/// snapscan contains it like any parser panic (`fs::contain`); the fuzzer looks for others.
const KNOWN_NTFS_PANIC: &str = "Got a binrw error of unexpected type";

/// A volume over the fuzz input with a read budget, so a parser loop that reads ends.
pub fn volume(data: &[u8]) -> Option<Volume> {
    let disk = Disk::from_bytes("fuzz", data.to_vec());
    disk.volume(0, disk.size(), Budget::new(256 << 20)).ok()
}

/// Run `f`; the known upstream panic ends the run quietly, any other panic aborts as usual.
pub fn tolerating_known_panics(f: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains(KNOWN_NTFS_PANIC) {
                fuzzer_hook(info);
            }
        }));
    });
    let _ = panic::catch_unwind(AssertUnwindSafe(f));
}

/// List the root and a few levels below it, read what is found, and run OS detection.
pub fn exercise(fs: &dyn RootFs) {
    let _ = snapscan::detect::detect(fs);
    let mut dirs = vec![String::from("/")];
    let mut visited = 0;
    while let Some(dir) = dirs.pop() {
        visited += 1;
        if visited > 64 {
            break;
        }
        let Ok(entries) = fs.read_dir(&dir) else { continue };
        for e in entries.into_iter().take(64) {
            let path = format!("{}/{}", dir.trim_end_matches('/'), e.name);
            let _ = fs.symlink_metadata(&path);
            let _ = fs.read_link(&path);
            let _ = fs.read_prefix(&path, 4096);
            if path.matches('/').count() < 4 {
                dirs.push(path);
            }
        }
    }
}
