//! What the RootFs fuzz targets share: a bounded volume over the input, a fixed exercise, and the
//! one known upstream panic that is tolerated.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use snapscan::disk::reader::{Budget, Disk, Volume};
use snapscan::fs::RootFs;

/// The `ntfs` crate (0.4, the latest) panics on hostile volumes: when an I/O error reaches it
/// through binrw's field context ("Got a binrw error of unexpected type", ColinFinck/ntfs pull
/// request #36, unreleased) and when it slices index entries shorter than their header
/// (`index_entry.rs`). snapscan contains them like any parser panic (`fs::contain`); the fuzzer
/// looks for panics elsewhere, in snapscan's code above all.
fn known_ntfs_panic(info: &panic::PanicHookInfo<'_>) -> bool {
    info.location()
        .is_some_and(|l| l.file().contains("/ntfs-0.4."))
}

/// A volume over the fuzz input with a read budget, so a parser loop that reads ends.
pub fn volume(data: &[u8]) -> Option<Volume> {
    let disk = Disk::from_bytes("fuzz", data.to_vec());
    disk.volume(0, disk.size(), Budget::new(256 << 20)).ok()
}

/// Run `f`; a known upstream panic ends the run quietly, any other panic aborts as usual.
pub fn tolerating_known_panics(f: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !known_ntfs_panic(info) {
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
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
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
