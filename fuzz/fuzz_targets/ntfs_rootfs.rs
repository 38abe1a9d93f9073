//! Fuzz the NTFS RootFs (the ntfs crate behind our in-volume resolution) and Windows detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::fs::ntfs;

fuzz_target!(|data: &[u8]| {
    snapscan_fuzz::tolerating_known_panics(|| {
        let Some(fs) = snapscan_fuzz::volume(data).and_then(|v| ntfs::open(v).ok()) else {
            return;
        };
        snapscan_fuzz::exercise(&fs);
    });
});
