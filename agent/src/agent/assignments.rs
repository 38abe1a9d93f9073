//! What the agent is asked to scan: the `snapscan-assignments` instance attribute (a JSON list),
//! checked entry by entry, and joined with the disks attached to the VM (`instance/disks/`).
//!
//! A malformed entry is an error of its own and the valid entries still count; a list that is
//! not JSON at all is one error. A disk is admitted only when it is attached, is not the boot
//! disk, and is attached READ_ONLY (the last two can be allowed in `[agent]`).
//!
//! Not here: finding the block device (that is [`crate::disk::resolve`]), running anything.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The instance attribute that holds the assignments.
pub const ATTRIBUTE: &str = "snapscan-assignments";

/// One disk to scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Unique id chosen by the launcher: `[A-Za-z0-9_-]`, at most 100 characters (it is the
    /// guest-attribute key of the job's status).
    pub id: String,
    /// The disk's device name on this VM.
    pub device_name: String,
    /// The snapshot the disk was created from.
    pub snapshot: String,
    /// The VM the snapshot was taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_instance: Option<String>,
    /// That VM's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_project: Option<String>,
    /// The scanner to run instead of the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// Free labels, passed on as upload fields `label_<key>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The assignment list read from the attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The valid entries, in list order.
    pub valid: Vec<Assignment>,
    /// One message per rejected entry (or for the whole list).
    pub errors: Vec<String>,
    /// The list as a whole could not be read: the previous assignments still stand.
    pub unreadable: bool,
}

/// Parse the attribute's value. `check_scanner` says whether a scanner name is usable.
pub fn parse(text: &str, check_scanner: &dyn Fn(&str) -> Result<(), String>) -> Parsed {
    let mut out = Parsed::default();
    let entries: Vec<serde_json::Value> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.errors
                .push(format!("{ATTRIBUTE} is not a JSON list: {e}"));
            out.unreadable = true;
            return out;
        }
    };
    let mut ids = BTreeSet::new();
    let mut devices = BTreeSet::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let a: Assignment = match serde_json::from_value(entry) {
            Ok(a) => a,
            Err(e) => {
                out.errors.push(format!("{ATTRIBUTE}[{i}]: {e}"));
                continue;
            }
        };
        let problem = if !valid_id(&a.id) {
            Some(format!(
                "id '{}' must be 1 to 100 characters of [A-Za-z0-9_-]",
                a.id
            ))
        } else if crate::disk::resolve::validate_device_name(&a.device_name).is_err() {
            Some(format!(
                "device_name '{}' is not a GCE device name",
                a.device_name
            ))
        } else if a.snapshot.trim().is_empty() {
            Some("snapshot is empty".to_owned())
        } else if !ids.insert(a.id.clone()) {
            Some(format!("id '{}' appears twice", a.id))
        } else if !devices.insert(a.device_name.clone()) {
            Some(format!("device_name '{}' is assigned twice", a.device_name))
        } else if let Some(Err(e)) = a.scanner.as_deref().map(check_scanner) {
            Some(e)
        } else {
            None
        };
        match problem {
            Some(p) => out.errors.push(format!("{ATTRIBUTE}[{i}]: {p}")),
            None => out.valid.push(a),
        }
    }
    out
}

/// An id usable as a guest-attribute key and a directory name.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One entry of `instance/disks/?recursive=true`. Every field is optional and unknown fields
/// are ignored: the server's schema is not ours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedDisk {
    /// The device name.
    pub device_name: Option<String>,
    /// Attachment index; 0 is the boot disk.
    pub index: Option<u32>,
    /// `READ_WRITE` or `READ_ONLY`.
    pub mode: Option<String>,
    /// `SCSI` or `NVME`.
    pub interface: Option<String>,
    /// `PERSISTENT`, `PERSISTENT-BALANCED`...: never matched exactly.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Parse `instance/disks/?recursive=true`.
///
/// # Errors
///
/// Not a JSON list of objects.
pub fn parse_disks(text: &str) -> Result<Vec<AttachedDisk>, String> {
    serde_json::from_str(text).map_err(|e| format!("instance/disks/ is not the expected JSON: {e}"))
}

/// Whether the boot disk and READ_WRITE disks may be scanned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Scan a disk attached READ_WRITE.
    pub allow_read_write: bool,
    /// Scan the boot disk (index 0).
    pub allow_boot_disk: bool,
}

/// Whether the assigned disk may be scanned now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Attached and allowed.
    Admit(AttachedDisk),
    /// Not attached (yet).
    NotAttached,
    /// Attached, but never to be scanned: why.
    Refuse(String),
}

/// Look the assignment's disk up among the attached ones.
pub fn admit(a: &Assignment, disks: &[AttachedDisk], policy: Policy) -> Admission {
    let Some(disk) = disks
        .iter()
        .find(|d| d.device_name.as_deref() == Some(a.device_name.as_str()))
    else {
        return Admission::NotAttached;
    };
    if disk.index == Some(0) && !policy.allow_boot_disk {
        return Admission::Refuse(format!(
            "'{}' is this VM's boot disk; refused ([agent] scan_boot_disk = false)",
            a.device_name
        ));
    }
    let read_only = disk
        .mode
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("READ_ONLY"));
    if !read_only && !policy.allow_read_write {
        return Admission::Refuse(format!(
            "'{}' is attached {}, not READ_ONLY; refused ([agent] scan_read_write = false)",
            a.device_name,
            disk.mode.as_deref().unwrap_or("in an unknown mode")
        ));
    }
    Admission::Admit(disk.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_scanner(name: &str) -> Result<(), String> {
        if name == "nope" {
            Err(format!("unknown scanner '{name}'"))
        } else {
            Ok(())
        }
    }

    #[test]
    fn valid_entries_survive_bad_ones() {
        let text = r#"[
            {"id": "a1", "device_name": "disk-a", "snapshot": "snap-a", "labels": {"team": "x"}},
            {"id": "a2", "device_name": "disk-b"},
            {"id": "../etc", "device_name": "disk-c", "snapshot": "s"},
            {"id": "a3", "device_name": "Bad/Name", "snapshot": "s"},
            {"id": "a1", "device_name": "disk-d", "snapshot": "s"},
            {"id": "a4", "device_name": "disk-a", "snapshot": "s"},
            {"id": "a5", "device_name": "disk-e", "snapshot": "s", "scanner": "nope"},
            42,
            {"id": "a6", "device_name": "disk-f", "snapshot": "snap-f", "future_field": 1}
        ]"#;
        let p = parse(text, &any_scanner);
        let ids: Vec<&str> = p.valid.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a1", "a6"]);
        assert_eq!(p.errors.len(), 7, "{:#?}", p.errors);
        assert!(!p.unreadable);
        for want in [
            "missing field `snapshot`",
            "../etc",
            "Bad/Name",
            "appears twice",
        ] {
            assert!(
                p.errors.iter().any(|e| e.contains(want)),
                "{want}: {:#?}",
                p.errors
            );
        }
        assert_eq!(p.valid[0].labels.get("team").map(String::as_str), Some("x"));
    }

    #[test]
    fn unreadable_list() {
        for text in ["", "{", "{\"id\": 1}", "null"] {
            let p = parse(text, &any_scanner);
            assert!(p.unreadable, "{text}");
            assert!(p.valid.is_empty());
            assert_eq!(p.errors.len(), 1);
        }
        assert_eq!(parse("[]", &any_scanner), Parsed::default());
    }

    #[test]
    fn admission() {
        let disks = parse_disks(
            r#"[{"deviceName":"boot","index":0,"mode":"READ_WRITE","type":"PERSISTENT","interface":"SCSI"},
                {"deviceName":"ro","index":1,"mode":"READ_ONLY","type":"PERSISTENT-BALANCED","extra":true},
                {"deviceName":"rw","index":2,"mode":"READ_WRITE"},
                {"index":3}]"#,
        )
        .expect("disks");
        let a = |dev: &str| Assignment {
            id: "x".into(),
            device_name: dev.into(),
            snapshot: "s".into(),
            source_instance: None,
            source_project: None,
            scanner: None,
            labels: BTreeMap::new(),
        };
        let strict = Policy::default();
        assert!(matches!(
            admit(&a("ro"), &disks, strict),
            Admission::Admit(_)
        ));
        assert_eq!(admit(&a("gone"), &disks, strict), Admission::NotAttached);
        assert!(
            matches!(admit(&a("rw"), &disks, strict), Admission::Refuse(e) if e.contains("READ_WRITE"))
        );
        assert!(
            matches!(admit(&a("boot"), &disks, strict), Admission::Refuse(e) if e.contains("boot"))
        );
        let lax = Policy {
            allow_read_write: true,
            allow_boot_disk: true,
        };
        assert!(matches!(admit(&a("rw"), &disks, lax), Admission::Admit(_)));
        assert!(matches!(
            admit(&a("boot"), &disks, lax),
            Admission::Admit(_)
        ));
        assert!(parse_disks("{}").is_err());
    }
}
