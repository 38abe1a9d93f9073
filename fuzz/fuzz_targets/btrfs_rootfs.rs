//! Fuzz the btrfs RootFs (lambutter behind our in-volume resolution) and Linux detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::fs::btrfs;

fuzz_target!(|data: &[u8]| {
    let Some(fs) = snapscan_fuzz::volume(data).and_then(|v| btrfs::open(v).ok()) else {
        return;
    };
    snapscan_fuzz::exercise(&fs);
});
