//! The Compute Engine resources the agent and the launcher handle (disks, instances, snapshots,
//! guest attributes, operations) as the API's JSON has them (camelCase, 64-bit numbers as
//! strings), and the calls on them.
//!
//! Not here: sending, retries, errors ([`super::Client::send`]).

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Call, Client, ComputeError};

/// A zone operation.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    /// Its name, for `zoneOperations.wait`.
    pub name: String,
    /// `PENDING`, `RUNNING` or `DONE`.
    pub status: String,
    /// `insert`, `attachDisk`...
    pub operation_type: String,
    /// The resource it acts on.
    pub target_link: String,
    /// Its own URL (a zone's or the global operations').
    pub self_link: String,
    /// When `DONE` and failed: its errors.
    pub error: Option<OperationErrors>,
    /// When failed: the HTTP status it stands for.
    pub http_error_status_code: Option<u16>,
    /// When failed: the message.
    pub http_error_message: Option<String>,
}

/// `error` of an operation.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct OperationErrors {
    /// Each error.
    pub errors: Vec<OperationError>,
}

/// One error of an operation.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct OperationError {
    /// `QUOTA_EXCEEDED`, `RESOURCE_NOT_FOUND`...
    pub code: String,
    /// What it says.
    pub message: String,
}

impl Operation {
    /// The codes and message of a failed operation; `None` when it succeeded.
    #[must_use]
    pub fn failure(&self) -> Option<(Vec<String>, String)> {
        let errors = self.error.as_ref().filter(|e| !e.errors.is_empty())?;
        let codes = errors.errors.iter().map(|e| e.code.clone()).collect();
        let message = errors
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Some((codes, message))
    }
}

/// A disk.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Disk {
    /// Its name.
    pub name: String,
    /// `CREATING`, `READY`, `FAILED`, `DELETING`...
    pub status: String,
    /// Size in GB (the API sends a string).
    pub size_gb: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Instances it is attached to (URLs).
    pub users: Vec<String>,
    /// The snapshot it was made from, if any.
    pub source_snapshot: Option<String>,
    /// The image it was made from, if any.
    pub source_image: Option<String>,
}

/// What a new disk is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// `projects/P/global/snapshots/S` (or a URL of one).
    Snapshot(String),
    /// `projects/P/global/images/I` (or a family, or a URL).
    Image(String),
}

/// A disk to create.
#[derive(Debug, Clone)]
pub struct NewDisk {
    /// Its name (unique in the zone).
    pub name: String,
    /// What it is made from.
    pub source: DiskSource,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The disk type (`pd-balanced`...); `None`: the API's default.
    pub disk_type: Option<String>,
}

/// An instance.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Instance {
    /// Its numeric id (a string).
    pub id: String,
    /// Its name.
    pub name: String,
    /// `RUNNING`, `STOPPING`...
    pub status: String,
    /// Its attached disks.
    pub disks: Vec<AttachedDisk>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A disk attached to an instance.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AttachedDisk {
    /// The device name the guest sees (`google-<name>`).
    pub device_name: String,
    /// The disk's URL.
    pub source: String,
    /// `READ_ONLY` or `READ_WRITE`.
    pub mode: String,
    /// The boot disk.
    pub boot: bool,
    /// Its index.
    pub index: u32,
    /// Deleted with the instance.
    pub auto_delete: bool,
}

/// A page of `disks.list`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DiskList {
    items: Vec<Disk>,
    next_page_token: Option<String>,
}

impl Client {
    /// `disks.insert`: start creating `disk`.
    ///
    /// # Errors
    ///
    /// The request was refused (quota, permission, an existing name...).
    pub async fn insert_disk(&self, disk: &NewDisk) -> Result<Operation, ComputeError> {
        let mut body = json!({"name": disk.name, "labels": disk.labels});
        match &disk.source {
            DiskSource::Snapshot(s) => body["sourceSnapshot"] = Value::from(s.as_str()),
            DiskSource::Image(i) => body["sourceImage"] = Value::from(i.as_str()),
        }
        if let Some(t) = &disk.disk_type {
            body["type"] = Value::from(format!(
                "projects/{}/zones/{}/diskTypes/{t}",
                self.project, self.zone
            ));
        }
        self.start(
            format!("create disk {}", disk.name),
            "disks",
            Some(body),
            Method::POST,
            Vec::new(),
        )
        .await
    }

    /// `disks.get`; `None` when there is no such disk.
    ///
    /// # Errors
    ///
    /// Any failure but not found.
    pub async fn get_disk(&self, name: &str) -> Result<Option<Disk>, ComputeError> {
        let answer = self
            .send(Call {
                what: format!("get disk {name}"),
                method: Method::GET,
                path: &format!("disks/{name}"),
                query: Vec::new(),
                body: None,
            })
            .await;
        match answer {
            Ok(v) => Ok(Some(parse(&format!("disk {name}"), v)?)),
            Err(ComputeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `disks.list` with `filter` (e.g. `labels.snapscan-instance=scanner-1`), every page.
    ///
    /// # Errors
    ///
    /// Any failure.
    pub async fn list_disks(&self, filter: &str) -> Result<Vec<Disk>, ComputeError> {
        let mut disks = Vec::new();
        let mut page: Option<String> = None;
        // Bounded: a server that keeps giving page tokens cannot keep us here.
        for _ in 0..1000 {
            let mut query = vec![("filter", filter.to_owned())];
            if let Some(p) = &page {
                query.push(("pageToken", p.clone()));
            }
            let answer = self
                .send(Call {
                    what: format!("list disks ({filter})"),
                    method: Method::GET,
                    path: "disks",
                    query,
                    body: None,
                })
                .await?;
            let list: DiskList = parse("disk list", answer)?;
            disks.extend(list.items);
            match list.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => page = Some(t),
                None => return Ok(disks),
            }
        }
        Ok(disks)
    }

    /// `disks.delete`: start deleting disk `name`.
    ///
    /// # Errors
    ///
    /// The request was refused (not found, still attached, permission...).
    pub async fn delete_disk(&self, name: &str) -> Result<Operation, ComputeError> {
        self.start(
            format!("delete disk {name}"),
            &format!("disks/{name}"),
            None,
            Method::DELETE,
            Vec::new(),
        )
        .await
    }

    /// `instances.get`.
    ///
    /// # Errors
    ///
    /// Any failure (not found included).
    pub async fn get_instance(&self, name: &str) -> Result<Instance, ComputeError> {
        let answer = self
            .send(Call {
                what: format!("get instance {name}"),
                method: Method::GET,
                path: &format!("instances/{name}"),
                query: Vec::new(),
                body: None,
            })
            .await?;
        parse(&format!("instance {name}"), answer)
    }

    /// `instances.attachDisk`: start attaching disk `disk` (of this zone) to `instance`
    /// read-only as `device_name`.
    ///
    /// # Errors
    ///
    /// The request was refused.
    pub async fn attach_disk(
        &self,
        instance: &str,
        disk: &str,
        device_name: &str,
    ) -> Result<Operation, ComputeError> {
        let body = json!({
            "source": self.disk_url(disk),
            "deviceName": device_name,
            "mode": "READ_ONLY",
            "autoDelete": false,
        });
        self.start(
            format!("attach disk {disk} to {instance}"),
            &format!("instances/{instance}/attachDisk"),
            Some(body),
            Method::POST,
            Vec::new(),
        )
        .await
    }

    /// `instances.detachDisk`: start detaching the disk attached as `device_name`.
    ///
    /// # Errors
    ///
    /// The request was refused (no such device included).
    pub async fn detach_disk(
        &self,
        instance: &str,
        device_name: &str,
    ) -> Result<Operation, ComputeError> {
        self.start(
            format!("detach {device_name} from {instance}"),
            &format!("instances/{instance}/detachDisk"),
            None,
            Method::POST,
            vec![("deviceName", device_name.to_owned())],
        )
        .await
    }

    /// `instances.delete`: start deleting instance `name` (this VM, when it is done).
    ///
    /// # Errors
    ///
    /// The request was refused.
    pub async fn delete_instance(&self, name: &str) -> Result<Operation, ComputeError> {
        self.start(
            format!("delete instance {name}"),
            &format!("instances/{name}"),
            None,
            Method::DELETE,
            Vec::new(),
        )
        .await
    }

    /// `instanceGroupManagers.deleteInstances` (or the regional one) of `group`
    /// (`projects/P/zones/Z/instanceGroupManagers/G`, `regions/R` for a regional group, as
    /// the instance's `created-by` metadata names it) on `instance` of this zone: the group
    /// deletes it and its target size drops by one.
    ///
    /// # Errors
    ///
    /// `group` is not a group's path, or the request was refused.
    pub async fn leave_group(
        &self,
        group: &str,
        instance: &str,
    ) -> Result<Operation, ComputeError> {
        let what = format!("remove instance {instance} from group {group}");
        let parts: Vec<&str> = group.trim_matches('/').split('/').collect();
        let valid = matches!(parts.as_slice(),
            ["projects", p, "zones" | "regions", l, "instanceGroupManagers", g]
                if ![p, l, g].iter().any(|x| x.is_empty()));
        if !valid {
            return Err(ComputeError::Failed {
                what,
                status: None,
                message: format!(
                    "'{group}' is not projects/P/zones|regions/L/instanceGroupManagers/G"
                ),
                retryable: false,
            });
        }
        let body = json!({
            "instances": [format!("projects/{}/zones/{}/instances/{instance}", self.project, self.zone)],
            "skipInstancesOnValidationError": true,
        });
        self.start(
            what,
            &format!("{}/deleteInstances", group.trim_matches('/')),
            Some(body),
            Method::POST,
            Vec::new(),
        )
        .await
    }
}

/// A guest attribute, as `instances.getGuestAttributes` lists them.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct GuestAttribute {
    /// Its namespace (`snapscan`).
    pub namespace: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GuestAttributes {
    query_value: GuestAttributeItems,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GuestAttributeItems {
    items: Vec<GuestAttribute>,
}

impl Client {
    /// `disks.createSnapshot`: start a snapshot `name` of disk `disk` (of this zone), with
    /// `labels`; it is `projects/<project>/global/snapshots/<name>`.
    ///
    /// # Errors
    ///
    /// The request was refused.
    pub async fn create_snapshot(
        &self,
        disk: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Operation, ComputeError> {
        self.start(
            format!("snapshot disk {disk} as {name}"),
            &format!("disks/{disk}/createSnapshot"),
            Some(json!({"name": name, "labels": labels})),
            Method::POST,
            Vec::new(),
        )
        .await
    }

    /// `snapshots.delete`: start deleting snapshot `name` of this project (a global operation).
    ///
    /// # Errors
    ///
    /// The request was refused.
    pub async fn delete_snapshot(&self, name: &str) -> Result<Operation, ComputeError> {
        self.start(
            format!("delete snapshot {name}"),
            &format!("projects/{}/global/snapshots/{name}", self.project),
            None,
            Method::DELETE,
            Vec::new(),
        )
        .await
    }

    /// `instances.insert` of `body` (an `Instance` resource) in this zone.
    ///
    /// # Errors
    ///
    /// The request was refused.
    pub async fn insert_instance(&self, body: Value) -> Result<Operation, ComputeError> {
        let name = body["name"].as_str().unwrap_or_default().to_owned();
        self.start(
            format!("create instance {name}"),
            "instances",
            Some(body),
            Method::POST,
            Vec::new(),
        )
        .await
    }

    /// `instances.getGuestAttributes` under `query_path` (`snapscan/`); none yet is an empty
    /// list.
    ///
    /// # Errors
    ///
    /// Any failure; not found when the instance is gone.
    pub async fn guest_attributes(
        &self,
        instance: &str,
        query_path: &str,
    ) -> Result<Vec<GuestAttribute>, ComputeError> {
        let answer = self
            .send(Call {
                what: format!("guest attributes of {instance}"),
                method: Method::GET,
                path: &format!("instances/{instance}/getGuestAttributes"),
                query: vec![("queryPath", query_path.to_owned())],
                body: None,
            })
            .await;
        match answer {
            Ok(v) => Ok(parse::<GuestAttributes>("guest attributes", v)?
                .query_value
                .items),
            // The API says 404 both for no attributes under the path and for no instance.
            Err(ComputeError::NotFound { .. }) => {
                self.get_instance(instance).await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }
}

/// `v` as a `T`, or an error naming `what`.
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    v: Value,
) -> Result<T, ComputeError> {
    serde_json::from_value(v).map_err(|e| ComputeError::Failed {
        what: what.to_owned(),
        status: None,
        message: format!("unexpected answer: {e}"),
        retryable: false,
    })
}
