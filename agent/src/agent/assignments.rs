//! What the agent is asked to scan: the `snapscan-assignments` instance attribute (a JSON list),
//! checked entry by entry, and joined with the disks attached to the VM (`instance/disks/`).
//!
//! A malformed entry is an error of its own and the valid entries still count; a list that is
//! not JSON at all is one error. A disk is admitted only when it is attached, is not the boot
//! disk, and is attached READ_ONLY (the last two can be allowed in `[agent]`).
//!
//! An entry names either a disk the launcher attached (`device_name`) or a `source` the agent
//! makes a disk of itself (`{"snapshot": "projects/P/global/snapshots/S"}`, `{"image": ...}`,
//! or `{"disk": "projects/P/zones/Z/disks/D"}` to attach an existing disk read-only); then the
//! device name is derived from the id ([`derived_device_name`]) and `snapshot` defaults to the
//! source's own name (the last segment of its path).
//!
//! Not here: finding the block device (that is [`crate::disk::resolve`]), running anything,
//! creating disks ([`super::provision`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::disk::resolve::Unopened;

/// The instance attribute that holds the assignments.
pub const ATTRIBUTE: &str = "snapscan-assignments";

/// One disk to scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Unique id chosen by the launcher: `[A-Za-z0-9_-]`, at most 100 characters (it is the
    /// guest-attribute key of the job's status).
    pub id: String,
    /// The disk's device name on this VM (derived from the id for a `source` entry).
    #[serde(default)]
    pub device_name: String,
    /// What the agent makes the disk from itself, instead of a disk the launcher attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The snapshot the disk was created from (default for a `source` entry: the last segment of
    /// its path).
    #[serde(default)]
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
    /// A policy (the TOML `scan --policy` reads) that the built-in inventory's findings are
    /// checked against; the verdict is in the job's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Free labels, passed on as upload fields `label_<key>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a disk to scan is made from, by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A snapshot: `projects/P/global/snapshots/S` (or its URL).
    Snapshot(String),
    /// An image: `projects/P/global/images/I` (or a family `.../images/family/F`, or a URL).
    Image(String),
    /// An existing disk, attached read-only as it is: `projects/P/zones/Z/disks/D`.
    Disk(String),
}

impl Source {
    /// The resource path as given.
    #[must_use]
    pub fn path(&self) -> &str {
        match self {
            Source::Snapshot(p) | Source::Image(p) | Source::Disk(p) => p,
        }
    }

    /// Whether the path has the shape of its kind (`projects/P/global/snapshots/S`...), after
    /// an optional `https://.../compute/v1/` prefix.
    fn problem(&self) -> Option<String> {
        let path = self.path();
        let rel = path.find("projects/").map_or(path, |at| &path[at..]);
        let parts: Vec<&str> = rel.split('/').collect();
        let ok = match (self, parts.as_slice()) {
            (Source::Snapshot(_), ["projects", p, "global", "snapshots", s]) => {
                !p.is_empty() && !s.is_empty()
            }
            (Source::Image(_), ["projects", p, "global", "images", i]) => {
                !p.is_empty() && !i.is_empty()
            }
            (Source::Image(_), ["projects", p, "global", "images", "family", f]) => {
                !p.is_empty() && !f.is_empty()
            }
            (Source::Disk(_), ["projects", p, "zones", z, "disks", d]) => {
                !p.is_empty() && !z.is_empty() && !d.is_empty()
            }
            _ => false,
        };
        (!ok).then(|| {
            let want = match self {
                Source::Snapshot(_) => "projects/P/global/snapshots/S",
                Source::Image(_) => "projects/P/global/images/I",
                Source::Disk(_) => "projects/P/zones/Z/disks/D",
            };
            format!("source '{path}' is not of the form {want}")
        })
    }
}

/// The device name the agent gives the disk of job `id`: `snapscan-` and the id in GCE's
/// alphabet (lower case, `_` as `-`), cut to fit 63 characters, and a hash of the id so that ids
/// differing only in case or `_`/`-` still get different names.
#[must_use]
pub fn derived_device_name(id: &str) -> String {
    derived_name(id, id)
}

/// The name of the disk the agent makes for job `id` on instance `instance`: as the device
/// name, with a hash of both, so that scanner VMs of one zone given the same id (two launches
/// of one VM) never pick the same disk.
#[must_use]
pub fn derived_disk_name(instance: &str, id: &str) -> String {
    derived_name(id, &format!("{instance}/{id}"))
}

/// `snapscan-<id in GCE's alphabet>-<8 hex digits of the hash of hashed>`, at most 63.
fn derived_name(id: &str, hashed: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(hashed.as_bytes());
    let hash = hex::encode(digest.get(..4).unwrap_or_default());
    let mut base: String = id
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .take(63 - "snapscan-".len() - 1 - hash.len())
        .collect();
    while base.ends_with('-') {
        base.pop();
    }
    if base.is_empty() {
        format!("snapscan-{hash}")
    } else {
        format!("snapscan-{base}-{hash}")
    }
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
        let mut a: Assignment = match serde_json::from_value(entry) {
            Ok(a) => a,
            Err(e) => {
                out.errors.push(format!("{ATTRIBUTE}[{i}]: {e}"));
                continue;
            }
        };
        if let Some(source) = &a.source {
            if a.device_name.is_empty() && valid_id(&a.id) {
                a.device_name = derived_device_name(&a.id);
            }
            if a.snapshot.trim().is_empty() {
                // The resource's own name: what `snapshot_name` and the SBOM's name say.
                a.snapshot = source
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        let problem = if !valid_id(&a.id) {
            Some(format!(
                "id '{}' must be 1 to 100 characters of [A-Za-z0-9_-]",
                a.id
            ))
        } else if a.device_name.is_empty() {
            Some("needs a device_name (a disk the launcher attached) or a source".to_owned())
        } else if crate::disk::resolve::validate_device_name(&a.device_name).is_err() {
            Some(format!(
                "device_name '{}' is not a GCE device name",
                a.device_name
            ))
        } else if let Some(p) = a.source.as_ref().and_then(Source::problem) {
            Some(p)
        } else if let Some(e) = a
            .policy
            .as_deref()
            .and_then(|text| crate::policy::Policy::parse(text, "policy").err())
        {
            Some(format!("{e:#}"))
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
    match refusal(disk, policy) {
        Some(why) => Admission::Refuse(why),
        None => Admission::Admit(disk.clone()),
    }
}

/// Why `disk` may not be scanned under `policy`, if it may not.
fn refusal(disk: &AttachedDisk, policy: Policy) -> Option<String> {
    let name = disk.device_name.as_deref().unwrap_or("(no device name)");
    if disk.index == Some(0) && !policy.allow_boot_disk {
        return Some(format!(
            "'{name}' is this VM's boot disk; refused ([agent] scan_boot_disk = false)"
        ));
    }
    if !is_read_only(disk) && !policy.allow_read_write {
        return Some(format!(
            "'{name}' is attached {}, not READ_ONLY; refused ([agent] scan_read_write = false)",
            disk.mode.as_deref().unwrap_or("in an unknown mode")
        ));
    }
    None
}

fn is_read_only(disk: &AttachedDisk) -> bool {
    disk.mode
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("READ_ONLY"))
}

/// What finding the device of `admitted` must leave unopened: the disks of `disks` that
/// `policy` refuses, and writable devices when `admitted` is attached READ_ONLY.
pub fn unopened(admitted: &AttachedDisk, disks: &[AttachedDisk], policy: Policy) -> Unopened {
    Unopened {
        refused: disks
            .iter()
            .filter(|d| d.device_name != admitted.device_name)
            .filter(|d| refusal(d, policy).is_some())
            .filter_map(|d| d.device_name.clone())
            .collect(),
        read_only: is_read_only(admitted),
    }
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
        for want in ["snapshot is empty", "../etc", "Bad/Name", "appears twice"] {
            assert!(
                p.errors.iter().any(|e| e.contains(want)),
                "{want}: {:#?}",
                p.errors
            );
        }
        assert_eq!(p.valid[0].labels.get("team").map(String::as_str), Some("x"));
    }

    #[test]
    fn source_entries_get_a_device_name_and_a_snapshot_name() {
        let text = r#"[
            {"id": "Scan_01", "source": {"snapshot": "projects/prod/global/snapshots/web-1"}},
            {"id": "img", "source": {"image": "https://compute.googleapis.com/compute/v1/projects/p/global/images/family/debian-12"}},
            {"id": "own", "source": {"disk": "projects/p/zones/z/disks/d1"}, "snapshot": "s"},
            {"id": "bad-path", "source": {"snapshot": "web-1"}},
            {"id": "bad-kind", "source": {"bucket": "gs://x"}},
            {"id": "nothing"}
        ]"#;
        let p = parse(text, &any_scanner);
        let got: Vec<(&str, &str)> = p
            .valid
            .iter()
            .map(|a| (a.device_name.as_str(), a.snapshot.as_str()))
            .collect();
        assert_eq!(got.len(), 3, "{:#?}", p.errors);
        assert!(got[0].0.starts_with("snapscan-scan-01-"), "{got:?}");
        assert_eq!(got[0].1, "web-1");
        assert_eq!(got[1].1, "debian-12");
        assert_eq!(got[2].1, "s");
        assert_ne!(derived_device_name("a_b"), derived_device_name("a-b"));
        assert!(derived_device_name(&"x".repeat(100)).len() <= 63);
        let (a, b) = (
            derived_disk_name("vm-a", "web-1"),
            derived_disk_name("vm-b", "web-1"),
        );
        assert_ne!(a, b);
        assert!(a.starts_with("snapscan-web-1-") && a.len() <= 63, "{a}");
        for want in [
            "is not of the form projects/P/global/snapshots/S",
            "bucket",
            "needs a device_name",
        ] {
            assert!(
                p.errors.iter().any(|e| e.contains(want)),
                "{want}: {:#?}",
                p.errors
            );
        }
    }

    #[test]
    fn a_policy_that_is_not_one_refuses_its_entry_only() {
        let text = r#"[
            {"id": "good", "device_name": "d1", "snapshot": "s", "policy": "max_packages = 10"},
            {"id": "bad", "device_name": "d2", "snapshot": "s", "policy": "[[deny]]\npurl = \"bash\""},
            {"id": "typo", "device_name": "d3", "snapshot": "s", "policy": "max_package = 1"}
        ]"#;
        let p = parse(text, &any_scanner);
        assert_eq!(p.valid.len(), 1, "{:#?}", p.errors);
        assert_eq!(p.valid[0].policy.as_deref(), Some("max_packages = 10"));
        for want in ["purl 'bash'", "max_package"] {
            assert!(
                p.errors.iter().any(|e| e.contains(want)),
                "{want}: {:#?}",
                p.errors
            );
        }
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
            source: None,
            snapshot: "s".into(),
            source_instance: None,
            source_project: None,
            scanner: None,
            policy: None,
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
