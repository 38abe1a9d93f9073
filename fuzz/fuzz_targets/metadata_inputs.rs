//! Fuzz what the agent reads from the metadata server and sysfs: the `snapscan-assignments`
//! attribute, the `instance/disks/` JSON (and the admission of every assignment against it),
//! a SCSI VPD page 0x80 and NVMe Identify Namespace data. None may panic; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::agent::assignments::{self, Policy};
use snapscan::disk::resolve;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = assignments::parse(&text, &|name| {
        if name.len() < 20 {
            Ok(())
        } else {
            Err(format!("unknown scanner '{name}'"))
        }
    });
    if let Ok(disks) = assignments::parse_disks(&text) {
        for a in &parsed.valid {
            let _ = assignments::admit(a, &disks, Policy::default());
        }
    }
    let _ = resolve::validate_device_name(&text);
    let _ = resolve::parse_vpd_pg80(data);
    let _ = resolve::nvme_device_name(data);
});
