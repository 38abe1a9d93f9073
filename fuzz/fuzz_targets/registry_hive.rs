//! Fuzz the lazy registry reader (`snapscan::registry`): the input is a primary hive file, or,
//! when its first byte is odd, a primary and a transaction log split at the offset in the next
//! four bytes. The reader opens it (replaying the log), looks up the keys detection and the
//! inventory read, and walks a few levels of keys and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::fs::{FileAt, FsError};
use snapscan::registry::{Hive, Key};

/// A file held in memory.
struct Bytes(Vec<u8>);

impl FileAt for Bytes {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let rest = usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.get(o..))
            .unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// Read every value of `key` and descend into its first subkeys.
fn walk(key: &Key<'_>, depth: u32) {
    let _ = key.name();
    for name in [
        "",
        "ProductName",
        "UBR",
        "DisplayName",
        "Hostname",
        "Current",
    ] {
        if let Ok(Some(v)) = key.value(name) {
            let _ = v.string(1 << 20);
            let _ = v.dword();
            let _ = v.qword();
            let _ = v.data(1 << 20);
        }
    }
    if depth == 0 {
        return;
    }
    if let Ok(subs) = key.subkeys(32) {
        for sub in &subs {
            walk(sub, depth - 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (primary, log) = match data.first() {
        Some(b) if b % 2 == 1 && data.len() >= 5 => {
            let at = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
            let rest = &data[5..];
            let at = at % (rest.len() + 1);
            (rest[..at].to_vec(), Some(Bytes(rest[at..].to_vec())))
        }
        _ => (data.to_vec(), None),
    };
    let logs: Vec<&dyn FileAt> = log.iter().map(|l| l as &dyn FileAt).collect();
    let Ok(hive) = Hive::open(Box::new(Bytes(primary)), &logs) else {
        return;
    };
    for path in [
        r"Microsoft\Windows NT\CurrentVersion",
        r"Microsoft\Windows\CurrentVersion\Uninstall",
        r"Select",
        r"ControlSet001\Services\Tcpip\Parameters",
    ] {
        if let Ok(Some(key)) = hive.key(path) {
            walk(&key, 1);
        }
    }
    if let Ok(root) = hive.root() {
        walk(&root, 3);
    }
});
