//! Fuzz the ext4 RootFs (ext4-view behind our in-volume resolution) and Linux detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::fs::ext4;

fuzz_target!(|data: &[u8]| {
    let Some(fs) = snapscan_fuzz::volume(data).and_then(|v| ext4::open(v).ok()) else {
        return;
    };
    snapscan_fuzz::exercise(&fs);
});
