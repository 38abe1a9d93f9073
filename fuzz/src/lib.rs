//! What the fuzz targets share: a bounded volume over the input, a fixed exercise of a RootFs, the
//! image readers' exercise, and the known upstream panics that are tolerated.

use std::fs::File;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use snapscan::disk::image::{self, Format};
use snapscan::disk::reader::{Budget, Disk, Volume};
use snapscan::fs::RootFs;

/// The `ntfs` crate (0.4, the latest) panics on hostile volumes: when an I/O error reaches it
/// through binrw's field context ("Got a binrw error of unexpected type", ColinFinck/ntfs pull
/// request #36, unreleased) and when it slices index entries shorter than their header
/// (`index_entry.rs`). snapscan contains them like any parser panic (`fs::contain`); the fuzzer
/// looks for panics elsewhere, in snapscan's code above all.
///
/// The image crates (`imago`, `vmdk-core`, `vhdx-core`) are contained the same way, by
/// `disk::image`, which turns their panics into an error for that image.
fn known_upstream_panic(info: &panic::PanicHookInfo<'_>) -> bool {
    info.location().is_some_and(|l| {
        ["/ntfs-0.4.", "/imago-", "/vmdk-core-", "/vhdx-core-"]
            .iter()
            .any(|c| l.file().contains(c))
    })
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
            if !known_upstream_panic(info) {
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

/// Open the input as a `format` image and read its virtual disk at its start, its end and
/// places between. The input is written to a file of this process's own; backing files may come
/// only from an empty directory (none is opened), and an expanded tarball goes beside it.
pub fn image(format: Format, data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("snapscan-fuzz-{}", std::process::id()));
    let empty = dir.join("empty");
    let path = dir.join("input");
    if std::fs::create_dir_all(&empty).is_err() || std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(file) = File::open(&path) else { return };
    let opts = image::Options {
        backing_dir: Some(empty),
        temp_dir: dir,
    };
    tolerating_known_panics(|| {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let Ok(opened) = image::open(&path, file, len, format, &opts) else {
            return;
        };
        let mut buf = vec![0u8; 64 << 10];
        for i in 0..=16u64 {
            let at = (opened.size / 16).saturating_mul(i).min(opened.size);
            let n = usize::try_from(opened.size - at).map_or(buf.len(), |n| n.min(buf.len()));
            let _ = opened.image.read_exact_at(at, &mut buf[..n]);
        }
    });
}
