//! A fake Compute Engine API (`compute/v1`, real HTTP/1.1 on `127.0.0.1`) for one project and
//! zone, faithful to the parts the agent uses, and with real effects on the scanner VM's view:
//!
//! - every request needs `Authorization: Bearer T` with a token the fake metadata server issued
//!   and still considers valid ([`crate::gce_metadata::Handle::token_is_valid`]), else `401`;
//! - `disks.insert` (`sourceSnapshot` or `sourceImage`, labels; `409` for an existing name,
//!   `404` for an unknown source), `disks.get`, `disks.list` (`filter` of `labels.K=V` terms,
//!   pages of [`FakeCompute::set_page_size`]), `disks.delete` (`400 resourceInUseByAnotherResource`
//!   while attached), `instances.get`, `instances.attachDisk`, `instances.detachDisk`,
//!   `instances.delete` (detaching its disks, deleting the auto-delete ones), `zoneOperations.get`
//!   and `zoneOperations.wait`;
//! - for `snapscan launch`: `disks.createSnapshot` (a snapshot reading the disk's file),
//!   `snapshots.delete` and global operations, `instances.insert` (the scanner VM: its metadata
//!   items become the fake metadata server's attributes, its disks from `initializeParams`
//!   `sourceSnapshot` or `sourceImage` are created and really attached read-only, as at boot;
//!   [`FakeCompute::inserted`]) and
//!   `instances.getGuestAttributes` (the fake metadata server's);
//! - for fleets: `instanceGroupManagers.deleteInstances` of a zonal group
//!   ([`FakeCompute::add_group`]; `400` for an instance not in it, unless
//!   `skipInstancesOnValidationError`): the instance leaves the group and is deleted;
//! - each mutating call returns a zone operation that is `RUNNING` for
//!   [`FakeCompute::set_operation_delay`] (or a delay per call, [`FakeCompute::set_call_delay`])
//!   and then `DONE`, with its effect applied at that
//!   moment; a repeated `requestId` returns the first operation instead of acting twice;
//! - **attachDisk really attaches**: a read-only loop device over the snapshot's (or image's)
//!   file, a `google-<device>` link and serial ([`crate::gce::GceDisks`]; or a hot-plugged disk
//!   of a VM, [`crate::vm::Hotplug`]: any [`DiskBus`]), and the disk in the
//!   metadata server's `instance/disks/`; `detachDisk` removes both; `instances.delete` of the
//!   instance is recorded ([`FakeCompute::deleted_instances`]);
//! - faults: the next request whose path contains a string answers a status and reason
//!   ([`FakeCompute::fail_next`]); a disk quota ([`FakeCompute::set_disk_quota`]) makes an insert's
//!   operation end `DONE` with `QUOTA_EXCEEDED`, as the real API does.
//!
//! - the IAM permissions each successful call needs, by caller
//!   ([`FakeCompute::permissions_used`]), for checking the README's custom roles against them.
//!
//! Not here: regions (regional groups and their operations), images as boot disks (the inserted VM's boot disk is only named),
//! snapshots.insert (other snapshots are registered with [`FakeCompute::add_snapshot`]), IAM (a
//! valid token may do everything).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};

use crate::gce::DiskBus;
use crate::gce_metadata::{self, Disk as MetadataDisk};
use crate::server::Background;

/// A scanner VM's fakes for [`gce_metadata::Identity::default`]: its metadata server (the boot
/// disk only), its disk bus of GCE-style loop devices, and the Compute API of its project and
/// zone, where the instance is registered.
pub struct FakeVm {
    /// The metadata server.
    pub md: gce_metadata::FakeMetadata,
    /// The disks the guest sees.
    pub gce: Arc<Mutex<crate::gce::GceDisks>>,
    /// The Compute API.
    pub api: FakeCompute,
}

impl FakeVm {
    /// Start them.
    ///
    /// # Errors
    ///
    /// The disk bus cannot be set up (not root).
    pub fn start() -> anyhow::Result<FakeVm> {
        let id = gce_metadata::Identity::default();
        let zone = id.zone.rsplit('/').next().unwrap_or_default().to_owned();
        let md = gce_metadata::FakeMetadata::start();
        md.set_disks(vec![MetadataDisk::boot("persistent-disk-0")]);
        let gce = Arc::new(Mutex::new(crate::gce::GceDisks::new()?));
        let api = FakeCompute::start(
            &id.project,
            &zone,
            md.handle(),
            Arc::clone(&gce) as Arc<Mutex<dyn DiskBus>>,
        );
        api.add_instance(&id.name, &id.id.to_string());
        Ok(FakeVm { md, gce, api })
    }
}

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// `GET`, `POST`...
    pub method: String,
    /// Path and query.
    pub path_and_query: String,
    /// The status answered.
    pub status: u16,
}

/// A scripted failure.
#[derive(Debug, Clone)]
struct Fault {
    path_contains: String,
    status: u16,
    reason: String,
}

#[derive(Debug, Clone)]
struct FakeDisk {
    name: String,
    source_snapshot: Option<String>,
    source_image: Option<String>,
    labels: BTreeMap<String, String>,
    users: Vec<String>,
    file: PathBuf,
}

#[derive(Debug, Clone)]
struct Attached {
    device_name: String,
    disk: String,
    index: u32,
    auto_delete: bool,
}

/// What an operation does when it is done ([`Effect::call`]: the call that started it).
#[derive(Debug, Clone)]
enum Effect {
    CreateDisk(FakeDisk),
    DeleteDisk(String),
    Attach {
        instance: String,
        att: Attached,
    },
    Detach {
        instance: String,
        device_name: String,
    },
    DeleteInstance(String),
    /// `deleteInstances` of a managed instance group: out of the group, then deleted.
    LeaveGroup {
        group: String,
        instances: Vec<String>,
    },
    CreateSnapshot {
        path: String,
        file: PathBuf,
    },
    DeleteSnapshot(String),
    InsertInstance {
        name: String,
        disks: Vec<(FakeDisk, Attached)>,
        items: Vec<(String, String)>,
    },
    Fail {
        code: String,
        message: String,
        status: u16,
    },
}

impl Effect {
    /// The API call whose operation this is, for its delay.
    fn call(&self) -> &'static str {
        match self {
            Effect::CreateDisk(_) | Effect::Fail { .. } => "disks.insert",
            Effect::DeleteDisk(_) => "disks.delete",
            Effect::Attach { .. } => "instances.attachDisk",
            Effect::Detach { .. } => "instances.detachDisk",
            Effect::DeleteInstance(_) => "instances.delete",
            Effect::LeaveGroup { .. } => "instanceGroupManagers.deleteInstances",
            Effect::CreateSnapshot { .. } => "disks.createSnapshot",
            Effect::DeleteSnapshot(_) => "snapshots.delete",
            Effect::InsertInstance { .. } => "instances.insert",
        }
    }
}

#[derive(Debug, Clone)]
struct Op {
    name: String,
    kind: String,
    target: String,
    done_at: Instant,
    effect: Option<Effect>,
    /// Its effect is done: until then it is `RUNNING`, also past `done_at` while another
    /// request is applying it (as the real API, `DONE` means the disk is attached or gone).
    applied: bool,
    error: Option<(String, String, u16)>,
    /// A global operation (snapshots), not a zone's.
    global: bool,
}

struct State {
    project: String,
    zone: String,
    snapshots: BTreeMap<String, PathBuf>,
    images: BTreeMap<String, PathBuf>,
    disks: BTreeMap<String, FakeDisk>,
    instances: BTreeMap<String, Vec<Attached>>,
    instance_ids: BTreeMap<String, String>,
    deleted_instances: Vec<String>,
    /// The project's number, which names it too.
    project_number: Option<String>,
    /// Managed instance groups of the zone, by name: their instances.
    groups: BTreeMap<String, BTreeSet<String>>,
    ops: BTreeMap<String, Op>,
    request_ids: BTreeMap<String, String>,
    op_delay: Duration,
    /// Delays of single calls (`disks.insert`...), instead of `op_delay`.
    call_delays: BTreeMap<String, Duration>,
    page_size: usize,
    disk_quota: Option<usize>,
    faults: VecDeque<Fault>,
    requests: Vec<RequestLog>,
    deleted_disks: Vec<String>,
    deleted_snapshots: Vec<String>,
    inserted: BTreeMap<String, Value>,
    /// `(bearer token, IAM permission)` of every request that succeeded.
    permissions: Vec<(String, String)>,
    next_op: u64,
}

impl State {
    /// The file of a new disk's source: exactly one of a registered snapshot and image (`404`
    /// for an unknown one, `400` for neither or both).
    fn source_file(
        &self,
        snapshot: Option<&str>,
        image: Option<&str>,
    ) -> Result<PathBuf, Box<Answer>> {
        let (known, path) = match (snapshot, image) {
            (Some(p), None) => (self.snapshots.get(p), p),
            (None, Some(p)) => (self.images.get(p), p),
            _ => {
                return Err(Box::new(error(
                    400,
                    "invalid",
                    "exactly one of sourceSnapshot and sourceImage",
                )))
            }
        };
        known.cloned().ok_or_else(|| Box::new(not_found(path)))
    }
}

struct Shared {
    /// This, for the tasks that finish operations on time.
    me: std::sync::Weak<Shared>,
    state: Mutex<State>,
    metadata: gce_metadata::Handle,
    gce: Arc<Mutex<dyn DiskBus>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The value of metadata item `key` in an `instances.insert` body ([`FakeCompute::inserted`]).
#[must_use]
pub fn metadata_item<'a>(instance: &'a Value, key: &str) -> Option<&'a str> {
    instance["metadata"]["items"]
        .as_array()?
        .iter()
        .find(|i| i["key"] == key)?["value"]
        .as_str()
}

/// A running fake Compute API; stopped on drop.
pub struct FakeCompute {
    server: Background,
    shared: Arc<Shared>,
}

impl FakeCompute {
    /// Start for `project`/`zone`, checking tokens with `metadata` and attaching disks to
    /// `gce` (the scanner VM's disk bus).
    ///
    /// # Panics
    /// When it cannot start: a test cannot go on.
    pub fn start(
        project: &str,
        zone: &str,
        metadata: gce_metadata::Handle,
        gce: Arc<Mutex<dyn DiskBus>>,
    ) -> FakeCompute {
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            state: Mutex::new(State {
                project: project.to_owned(),
                zone: zone.to_owned(),
                snapshots: BTreeMap::new(),
                images: BTreeMap::new(),
                disks: BTreeMap::new(),
                instances: BTreeMap::new(),
                instance_ids: BTreeMap::new(),
                deleted_instances: Vec::new(),
                project_number: None,
                groups: BTreeMap::new(),
                ops: BTreeMap::new(),
                request_ids: BTreeMap::new(),
                op_delay: Duration::from_millis(200),
                call_delays: BTreeMap::new(),
                page_size: 500,
                disk_quota: None,
                faults: VecDeque::new(),
                requests: Vec::new(),
                deleted_disks: Vec::new(),
                deleted_snapshots: Vec::new(),
                inserted: BTreeMap::new(),
                permissions: Vec::new(),
                next_op: 1,
            }),
            metadata,
            gce,
        });
        let served = Arc::clone(&shared);
        let server = Background::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "fake-compute",
            move |listener, stop| serve(listener, served, stop),
        )
        .unwrap_or_else(|e| panic!("cannot start the fake Compute API: {e:#}"));
        FakeCompute { server, shared }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT/compute/v1`: the `[compute] url`.
    pub fn url(&self) -> String {
        format!("http://{}/compute/v1", self.server.addr())
    }

    /// Register the instance `name` (the scanner VM) with its numeric `id`; it has a boot disk.
    pub fn add_instance(&self, name: &str, id: &str) {
        let mut s = self.shared.lock();
        s.instances.insert(
            name.to_owned(),
            vec![Attached {
                device_name: "persistent-disk-0".into(),
                disk: format!("{name}-boot"),
                index: 0,
                auto_delete: true,
            }],
        );
        s.instance_ids.insert(name.to_owned(), id.to_owned());
    }

    /// The project's number: request paths may name the project by it.
    pub fn set_project_number(&self, number: u64) {
        self.shared.lock().project_number = Some(number.to_string());
    }

    /// A managed instance group `name` of the zone with these instances (registered already).
    pub fn add_group(&self, name: &str, instances: &[&str]) {
        self.shared.lock().groups.insert(
            name.to_owned(),
            instances.iter().map(|i| (*i).to_owned()).collect(),
        );
    }

    /// The instances of group `name` now.
    pub fn group_instances(&self, name: &str) -> Vec<String> {
        self.shared
            .lock()
            .groups
            .get(name)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forget the instance `name` (not yet created, for `instances.insert`).
    pub fn remove_instance(&self, name: &str) {
        let mut s = self.shared.lock();
        s.instances.remove(name);
        s.instance_ids.remove(name);
    }

    /// The body of the `instances.insert` that created `name`, once done.
    pub fn inserted(&self, name: &str) -> Option<Value> {
        self.shared.lock().inserted.get(name).cloned()
    }

    /// The snapshots that exist (registered or made), by path.
    pub fn snapshot_paths(&self) -> Vec<String> {
        self.shared.lock().snapshots.keys().cloned().collect()
    }

    /// Snapshots deleted so far, by path.
    pub fn deleted_snapshots(&self) -> Vec<String> {
        self.shared.lock().deleted_snapshots.clone()
    }

    /// Register the snapshot `path` (`projects/P/global/snapshots/S`) with the raw image file
    /// its disks read.
    pub fn add_snapshot(&self, path: &str, file: PathBuf) {
        self.shared.lock().snapshots.insert(path.to_owned(), file);
    }

    /// Register the image `path` (`projects/P/global/images/I`) with its raw file.
    pub fn add_image(&self, path: &str, file: PathBuf) {
        self.shared.lock().images.insert(path.to_owned(), file);
    }

    /// Make a disk exist already (a leftover), with `labels`, made from snapshot `snapshot`.
    pub fn add_disk(&self, name: &str, snapshot: &str, labels: &[(&str, &str)]) {
        let mut s = self.shared.lock();
        let file = s.snapshots.get(snapshot).cloned().unwrap_or_default();
        s.disks.insert(
            name.to_owned(),
            FakeDisk {
                name: name.to_owned(),
                source_snapshot: Some(snapshot.to_owned()),
                source_image: None,
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                users: Vec::new(),
                file,
            },
        );
    }

    /// How long an operation stays `RUNNING`.
    pub fn set_operation_delay(&self, delay: Duration) {
        self.shared.lock().op_delay = delay;
    }

    /// How long the operations of `call` (`disks.insert`, `disks.delete`,
    /// `disks.createSnapshot`, `instances.insert`, `instances.attachDisk`,
    /// `instances.detachDisk`, `instances.delete`, `snapshots.delete`) stay `RUNNING`, instead of
    /// [`FakeCompute::set_operation_delay`].
    pub fn set_call_delay(&self, call: &str, delay: Duration) {
        self.shared
            .lock()
            .call_delays
            .insert(call.to_owned(), delay);
    }

    /// Items per page of `disks.list`.
    pub fn set_page_size(&self, n: usize) {
        self.shared.lock().page_size = n.max(1);
    }

    /// At most `n` disks in the zone (the scanner's boot disk not counted).
    pub fn set_disk_quota(&self, n: usize) {
        self.shared.lock().disk_quota = Some(n);
    }

    /// The next request whose path contains `path_contains` answers `status` with `reason`.
    pub fn fail_next(&self, path_contains: &str, status: u16, reason: &str) {
        self.shared.lock().faults.push_back(Fault {
            path_contains: path_contains.to_owned(),
            status,
            reason: reason.to_owned(),
        });
    }

    /// The disks that exist, by name.
    pub fn disk_names(&self) -> Vec<String> {
        self.shared.lock().disks.keys().cloned().collect()
    }

    /// The labels of disk `name`.
    pub fn disk_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.shared.lock().disks.get(name).map(|d| d.labels.clone())
    }

    /// Disks deleted so far, in order.
    pub fn deleted_disks(&self) -> Vec<String> {
        self.shared.lock().deleted_disks.clone()
    }

    /// Device names attached to `instance` (boot disk included).
    pub fn attached(&self, instance: &str) -> Vec<String> {
        self.shared
            .lock()
            .instances
            .get(instance)
            .map(|a| a.iter().map(|a| a.device_name.clone()).collect())
            .unwrap_or_default()
    }

    /// Instances deleted through the API.
    pub fn deleted_instances(&self) -> Vec<String> {
        self.shared.lock().deleted_instances.clone()
    }

    /// The IAM permissions the successful requests needed, of the callers whose tokens
    /// `of(token)` accepts.
    pub fn permissions_used(
        &self,
        of: impl Fn(&str) -> bool,
    ) -> std::collections::BTreeSet<String> {
        self.shared
            .lock()
            .permissions
            .iter()
            .filter(|(t, _)| of(t))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every request answered.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    crate::server::serve_http(listener, shared, stopped, |req, shared| async move {
        handle(req, &shared).await
    })
    .await;
}

type Answer = Response<Full<Bytes>>;

fn reply(status: u16, body: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The API's error body.
fn error(status: u16, reason: &str, message: &str) -> Answer {
    reply(
        status,
        &json!({"error": {"code": status, "message": message,
                          "errors": [{"message": message, "domain": "global", "reason": reason}]}}),
    )
}

/// `404 notFound` for `resource`, worded as the API words it.
fn not_found(resource: &str) -> Answer {
    error(
        404,
        "notFound",
        &format!("The resource '{resource}' was not found"),
    )
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = crate::server::body(req).await;
    let answered = if !token
        .as_deref()
        .is_some_and(|t| shared.metadata.token_is_valid(t))
    {
        error(
            401,
            "authError",
            "Request is missing required authentication credential.",
        )
    } else {
        let fault = {
            let mut s = shared.lock();
            let at = s
                .faults
                .iter()
                .position(|f| path_and_query.contains(&f.path_contains));
            at.and_then(|i| s.faults.remove(i))
        };
        match fault {
            Some(f) => error(f.status, &f.reason, &format!("injected {}", f.reason)),
            None => route(&method, &path, &query, &body, shared).await,
        }
    };
    if answered.status().is_success() {
        let needed = permissions(&method, &path, &body);
        let who = token.unwrap_or_default();
        shared
            .lock()
            .permissions
            .extend(needed.into_iter().map(|p| (who.clone(), p.to_owned())));
    }
    shared.lock().requests.push(RequestLog {
        method: method.to_string(),
        path_and_query,
        status: answered.status().as_u16(),
    });
    answered
}

/// The IAM permissions a call needs, as Compute Engine's documentation lists them per method
/// (for `insert`: by what the body asks, e.g. a disk from a snapshot needs
/// `compute.snapshots.useReadOnly`, labels need `setLabels`).
fn permissions(method: &Method, path: &str, body: &[u8]) -> Vec<&'static str> {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let rel = path.split("/projects/").nth(1).unwrap_or_default();
    let parts: Vec<&str> = rel.split('/').skip(1).collect();
    let has_labels = |v: &Value| v["labels"].as_object().is_some_and(|m| !m.is_empty());
    let mut p = Vec::new();
    match (method.as_str(), parts.as_slice()) {
        (_, ["global", "operations", ..]) => p.push("compute.globalOperations.get"),
        (_, ["zones", _, "operations", ..]) => p.push("compute.zoneOperations.get"),
        ("DELETE", ["global", "snapshots", _]) => p.push("compute.snapshots.delete"),
        ("POST", ["zones", _, "disks"]) => {
            p.push("compute.disks.create");
            if body["sourceSnapshot"].is_string() {
                p.push("compute.snapshots.useReadOnly");
            }
            if body["sourceImage"].is_string() {
                p.push("compute.images.useReadOnly");
            }
            if has_labels(&body) {
                p.push("compute.disks.setLabels");
            }
        }
        ("GET", ["zones", _, "disks"]) => p.push("compute.disks.list"),
        ("GET", ["zones", _, "disks", _]) => p.push("compute.disks.get"),
        ("DELETE", ["zones", _, "disks", _]) => p.push("compute.disks.delete"),
        ("POST", ["zones", _, "disks", _, "createSnapshot"]) => {
            p.extend(["compute.disks.createSnapshot", "compute.snapshots.create"]);
            if has_labels(&body) {
                p.push("compute.snapshots.setLabels");
            }
        }
        ("POST", ["zones", _, "instances"]) => {
            p.push("compute.instances.create");
            for d in body["disks"].as_array().into_iter().flatten() {
                let init = &d["initializeParams"];
                p.push("compute.disks.create");
                if init["sourceImage"].is_string() {
                    p.push("compute.images.useReadOnly");
                }
                if init["sourceSnapshot"].is_string() {
                    p.push("compute.snapshots.useReadOnly");
                }
                if has_labels(init) {
                    p.push("compute.disks.setLabels");
                }
            }
            if body["metadata"]["items"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                p.push("compute.instances.setMetadata");
            }
            if has_labels(&body) {
                p.push("compute.instances.setLabels");
            }
            if body["serviceAccounts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                p.extend([
                    "compute.instances.setServiceAccount",
                    "iam.serviceAccounts.actAs",
                ]);
            }
            for n in body["networkInterfaces"].as_array().into_iter().flatten() {
                if n["subnetwork"].is_string() {
                    p.push("compute.subnetworks.use");
                } else if n["network"].is_string() {
                    p.push("compute.networks.use");
                }
            }
        }
        ("GET", ["zones", _, "instances", _]) => p.push("compute.instances.get"),
        ("GET", ["zones", _, "instances", _, "getGuestAttributes"]) => {
            p.push("compute.instances.getGuestAttributes");
        }
        ("POST", ["zones", _, "instances", _, "attachDisk"]) => {
            p.push("compute.instances.attachDisk");
            p.push(if body["mode"] == "READ_ONLY" {
                "compute.disks.useReadOnly"
            } else {
                "compute.disks.use"
            });
        }
        ("POST", ["zones", _, "instances", _, "detachDisk"]) => {
            p.push("compute.instances.detachDisk");
        }
        ("DELETE", ["zones", _, "instances", _]) => p.push("compute.instances.delete"),
        ("POST", ["zones", _, "instanceGroupManagers", _, "deleteInstances"]) => {
            p.push("compute.instanceGroupManagers.update");
        }
        _ => {}
    }
    p
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    shared: &Shared,
) -> Answer {
    let (zone_prefix, global_prefix, path) = {
        let s = shared.lock();
        // The project's number names it as well as its id does (`created-by` uses it).
        let path = match &s.project_number {
            Some(n) => path.replacen(
                &format!("/compute/v1/projects/{n}/"),
                &format!("/compute/v1/projects/{}/", s.project),
                1,
            ),
            None => path.to_owned(),
        };
        (
            format!("/compute/v1/projects/{}/zones/{}/", s.project, s.zone),
            format!("/compute/v1/projects/{}/global/", s.project),
            path,
        )
    };
    let path = path.as_str();
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(rel) = path.strip_prefix(&global_prefix) {
        let parts: Vec<&str> = rel.split('/').collect();
        return match (method.as_str(), parts.as_slice()) {
            ("DELETE", ["snapshots", name]) => delete_snapshot(shared, name, query),
            ("GET", ["operations", name]) => operation(shared, name),
            ("POST", ["operations", name, "wait"]) => wait_operation(shared, name).await,
            _ => not_found(path),
        };
    }
    let Some(rel) = path.strip_prefix(&zone_prefix) else {
        return not_found(path);
    };
    let parts: Vec<&str> = rel.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["disks"]) => insert_disk(shared, &body, query),
        ("GET", ["disks"]) => list_disks(shared, query),
        ("GET", ["disks", name]) => get_disk(shared, name),
        ("DELETE", ["disks", name]) => delete_disk(shared, name, query),
        ("POST", ["disks", name, "createSnapshot"]) => create_snapshot(shared, name, &body, query),
        ("POST", ["instances"]) => insert_instance(shared, &body, query),
        ("GET", ["instances", name]) => get_instance(shared, name),
        ("GET", ["instances", name, "getGuestAttributes"]) => guest_attributes(shared, name, query),
        ("POST", ["instances", name, "attachDisk"]) => attach_disk(shared, name, &body, query),
        ("POST", ["instances", name, "detachDisk"]) => detach_disk(shared, name, query),
        ("DELETE", ["instances", name]) => delete_instance(shared, name, query),
        ("POST", ["instanceGroupManagers", group, "deleteInstances"]) => {
            leave_group(shared, group, &body, query)
        }
        ("GET", ["operations", name]) => operation(shared, name),
        ("POST", ["operations", name, "wait"]) => wait_operation(shared, name).await,
        _ => not_found(path),
    }
}

/// `operations.wait`: as the real API, answers when the operation is DONE, or after a while
/// (here 2 s) with its status.
async fn wait_operation(shared: &Shared, name: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = operation(shared, name);
        let done = shared.lock().ops.get(name).is_none_or(|o| o.applied);
        if done || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The source path of a URL or partial URL (`https://.../projects/P/global/snapshots/S` →
/// `projects/P/global/snapshots/S`).
fn resource_path(url: &str) -> String {
    url.find("projects/")
        .map_or(url, |at| &url[at..])
        .trim_end_matches('/')
        .to_owned()
}

/// Start an operation with `effect` (or the one an earlier request with the same `requestId`
/// started); its JSON.
fn start(
    shared: &Shared,
    kind: &str,
    target: String,
    effect: Effect,
    query: &BTreeMap<String, String>,
) -> Answer {
    let global = matches!(effect, Effect::DeleteSnapshot(_));
    let name = {
        let mut s = shared.lock();
        if let Some(existing) = query.get("requestId").and_then(|r| s.request_ids.get(r)) {
            existing.clone()
        } else {
            let name = format!("operation-{}-{kind}", s.next_op);
            s.next_op += 1;
            let error = match &effect {
                Effect::Fail {
                    code,
                    message,
                    status,
                } => Some((code.clone(), message.clone(), *status)),
                _ => None,
            };
            let delay = s
                .call_delays
                .get(effect.call())
                .copied()
                .unwrap_or(s.op_delay);
            let op = Op {
                name: name.clone(),
                kind: kind.to_owned(),
                target,
                done_at: Instant::now() + delay,
                effect: Some(effect),
                applied: false,
                error,
                global,
            };
            s.ops.insert(name.clone(), op);
            if let Some(r) = query.get("requestId") {
                s.request_ids.insert(r.clone(), name.clone());
            }
            // Done on time whether or not anyone asks, as the real API is.
            if let Some(me) = shared.me.upgrade() {
                let op_name = name.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tokio::task::spawn_blocking(move || operation(&me, &op_name)).await;
                });
            }
            name
        }
    };
    operation(shared, &name)
}

/// An operation's JSON; once past its time, its effect is applied (once).
fn operation(shared: &Shared, name: &str) -> Answer {
    let effect = {
        let mut s = shared.lock();
        let Some(op) = s.ops.get_mut(name) else {
            return not_found(&format!("operations/{name}"));
        };
        if Instant::now() >= op.done_at {
            op.effect.take()
        } else {
            None
        }
    };
    if let Some(effect) = effect {
        let failed = apply(shared, effect).err();
        if let Some(op) = shared.lock().ops.get_mut(name) {
            op.applied = true;
            if let Some(message) = failed {
                op.error = Some(("RESOURCE_OPERATION_FAILED".into(), message, 400));
            }
        }
    }
    let s = shared.lock();
    let Some(op) = s.ops.get(name) else {
        return error(404, "notFound", "gone");
    };
    let done = op.applied;
    let scope = if op.global {
        format!("projects/{}/global", s.project)
    } else {
        format!("projects/{}/zones/{}", s.project, s.zone)
    };
    let mut v = json!({
        "kind": "compute#operation",
        "name": op.name,
        "operationType": op.kind,
        "targetLink": op.target,
        "status": if done { "DONE" } else { "RUNNING" },
        "selfLink": format!("https://compute.googleapis.com/compute/v1/{scope}/operations/{}", op.name),
    });
    if !op.global {
        v["zone"] = json!(scope);
    }
    if let (true, Some((code, message, status))) = (done, &op.error) {
        v["error"] = json!({"errors": [{"code": code, "message": message}]});
        v["httpErrorStatusCode"] = json!(status);
        v["httpErrorMessage"] = json!("BAD REQUEST");
    }
    reply(200, &v)
}

/// What an operation does, done.
fn apply(shared: &Shared, effect: Effect) -> Result<(), String> {
    match effect {
        Effect::CreateDisk(d) => {
            shared.lock().disks.insert(d.name.clone(), d);
        }
        Effect::DeleteDisk(name) => {
            let mut s = shared.lock();
            s.disks.remove(&name);
            s.deleted_disks.push(name);
        }
        Effect::Attach { instance, att } => attach(shared, instance, att)?,
        Effect::Detach {
            instance,
            device_name,
        } => detach(shared, &instance, &device_name)?,
        Effect::DeleteInstance(name) => {
            // Its disks are detached (gone from the guest's view) and the auto-delete ones
            // deleted, as the real API does.
            let disks = shared
                .lock()
                .instances
                .get(&name)
                .cloned()
                .unwrap_or_default();
            for a in disks.iter().filter(|a| a.index > 0) {
                detach(shared, &name, &a.device_name)?;
                if a.auto_delete {
                    apply(shared, Effect::DeleteDisk(a.disk.clone()))?;
                }
            }
            let mut s = shared.lock();
            s.instances.remove(&name);
            s.deleted_instances.push(name);
        }
        Effect::LeaveGroup { group, instances } => {
            for name in instances {
                if let Some(g) = shared.lock().groups.get_mut(&group) {
                    g.remove(&name);
                }
                apply(shared, Effect::DeleteInstance(name))?;
            }
        }
        Effect::CreateSnapshot { path, file } => {
            shared.lock().snapshots.insert(path, file);
        }
        Effect::DeleteSnapshot(path) => {
            let mut s = shared.lock();
            s.snapshots.remove(&path);
            s.deleted_snapshots.push(path);
        }
        Effect::InsertInstance { name, disks, items } => {
            {
                let mut s = shared.lock();
                let id = (9_000_000_000_000_000_000_u64 + s.next_op).to_string();
                s.instance_ids.insert(name.clone(), id);
                s.instances.insert(
                    name.clone(),
                    vec![Attached {
                        device_name: "persistent-disk-0".into(),
                        disk: name.clone(),
                        index: 0,
                        auto_delete: true,
                    }],
                );
            }
            shared.metadata.set_attributes(&items);
            for (disk, att) in disks {
                shared.lock().disks.insert(disk.name.clone(), disk);
                attach(shared, name.clone(), att)?;
            }
        }
        Effect::Fail { .. } => {}
    }
    Ok(())
}

/// Attach `att` to `instance`: a read-only loop device in the guest's view and the disk in
/// the metadata server's `instance/disks/`.
fn attach(shared: &Shared, instance: String, att: Attached) -> Result<(), String> {
    let file = shared
        .lock()
        .disks
        .get(&att.disk)
        .map(|d| d.file.clone())
        .ok_or("the disk went away")?;
    shared
        .gce
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .plug(&att.device_name, &file, true)
        .map_err(|e| format!("{e:#}"))?;
    shared.metadata.update_disks(|disks| {
        disks.push(MetadataDisk::read_only(&att.device_name, att.index));
    });
    let mut s = shared.lock();
    let url = format!(
        "projects/{}/zones/{}/instances/{instance}",
        s.project, s.zone
    );
    if let Some(d) = s.disks.get_mut(&att.disk) {
        d.users.push(url);
    }
    s.instances.entry(instance).or_default().push(att);
    Ok(())
}

/// Detach `device_name` from `instance`, from the guest's view and the metadata server.
fn detach(shared: &Shared, instance: &str, device_name: &str) -> Result<(), String> {
    let removed = {
        let mut s = shared.lock();
        let list = s.instances.entry(instance.to_owned()).or_default();
        let at = list.iter().position(|a| a.device_name == device_name);
        at.map(|i| list.remove(i))
    };
    let att = removed.ok_or("not attached")?;
    let _ = shared
        .gce
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unplug(device_name);
    shared
        .metadata
        .update_disks(|disks| disks.retain(|d| d.device_name != device_name));
    let mut s = shared.lock();
    let url = format!(
        "projects/{}/zones/{}/instances/{instance}",
        s.project, s.zone
    );
    if let Some(d) = s.disks.get_mut(&att.disk) {
        d.users.retain(|u| *u != url);
    }
    Ok(())
}

fn disk_json(s: &State, d: &FakeDisk) -> Value {
    let mut v = json!({
        "kind": "compute#disk",
        "name": d.name,
        "status": "READY",
        "sizeGb": "10",
        "labels": d.labels,
        "users": d.users,
        "zone": format!("projects/{}/zones/{}", s.project, s.zone),
    });
    if let Some(snap) = &d.source_snapshot {
        v["sourceSnapshot"] = json!(snap);
    }
    if let Some(image) = &d.source_image {
        v["sourceImage"] = json!(image);
    }
    v
}

fn insert_disk(shared: &Shared, body: &Value, query: &BTreeMap<String, String>) -> Answer {
    let Some(name) = body["name"].as_str().map(str::to_owned) else {
        return error(
            400,
            "required",
            "Required field 'resource.name' not specified",
        );
    };
    let labels: BTreeMap<String, String> =
        serde_json::from_value(body["labels"].clone()).unwrap_or_default();
    let snapshot = body["sourceSnapshot"].as_str().map(resource_path);
    let image = body["sourceImage"].as_str().map(resource_path);
    let (file, over_quota, target) = {
        let s = shared.lock();
        if s.disks.contains_key(&name)
            && !query
                .get("requestId")
                .is_some_and(|r| s.request_ids.contains_key(r))
        {
            return error(
                409,
                "alreadyExists",
                &format!(
                    "The resource 'projects/{}/zones/{}/disks/{name}' already exists",
                    s.project, s.zone
                ),
            );
        }
        let file = match s.source_file(snapshot.as_deref(), image.as_deref()) {
            Ok(f) => f,
            Err(answer) => return *answer,
        };
        let over = s.disk_quota.is_some_and(|q| s.disks.len() >= q);
        let target = format!("projects/{}/zones/{}/disks/{name}", s.project, s.zone);
        (file, over, target)
    };
    let effect = if over_quota {
        Effect::Fail {
            code: "QUOTA_EXCEEDED".into(),
            message: "Quota 'DISKS_TOTAL_GB' exceeded.  Limit: 10.0 in region".into(),
            status: 403,
        }
    } else {
        Effect::CreateDisk(FakeDisk {
            name,
            source_snapshot: snapshot,
            source_image: image,
            labels,
            users: Vec::new(),
            file,
        })
    };
    start(shared, "insert", target, effect, query)
}

fn get_disk(shared: &Shared, name: &str) -> Answer {
    let s = shared.lock();
    match s.disks.get(name) {
        Some(d) => reply(200, &disk_json(&s, d)),
        None => not_found(&format!("disks/{name}")),
    }
}

fn list_disks(shared: &Shared, query: &BTreeMap<String, String>) -> Answer {
    let s = shared.lock();
    let terms: Vec<(String, String)> = query
        .get("filter")
        .map(|f| {
            f.split_whitespace()
                .filter(|t| !t.eq_ignore_ascii_case("AND"))
                .filter_map(|t| {
                    let t = t.trim_matches(|c| c == '(' || c == ')');
                    let (k, v) = t.split_once('=')?;
                    Some((
                        k.strip_prefix("labels.")?.to_owned(),
                        v.trim_matches('"').to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let matching: Vec<Value> = s
        .disks
        .values()
        .filter(|d| terms.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
        .map(|d| disk_json(&s, d))
        .collect();
    let from: usize = query
        .get("pageToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(s.page_size)
        .cloned()
        .collect();
    let mut v = json!({"kind": "compute#diskList", "items": page});
    if from + s.page_size < matching.len() {
        v["nextPageToken"] = json!((from + s.page_size).to_string());
    }
    reply(200, &v)
}

fn delete_disk(shared: &Shared, name: &str, query: &BTreeMap<String, String>) -> Answer {
    let target = {
        let s = shared.lock();
        let Some(d) = s.disks.get(name) else {
            return not_found(&format!("disks/{name}"));
        };
        if !d.users.is_empty() {
            return error(
                400,
                "resourceInUseByAnotherResource",
                &format!(
                    "The disk resource '{name}' is already being used by '{}'",
                    d.users[0]
                ),
            );
        }
        format!("projects/{}/zones/{}/disks/{name}", s.project, s.zone)
    };
    start(
        shared,
        "delete",
        target,
        Effect::DeleteDisk(name.to_owned()),
        query,
    )
}

fn get_instance(shared: &Shared, name: &str) -> Answer {
    let s = shared.lock();
    let Some(attached) = s.instances.get(name) else {
        return not_found(&format!("instances/{name}"));
    };
    let disks: Vec<Value> = attached
        .iter()
        .map(|a| {
            json!({
                "deviceName": a.device_name,
                "source": format!("projects/{}/zones/{}/disks/{}", s.project, s.zone, a.disk),
                "mode": if a.index == 0 { "READ_WRITE" } else { "READ_ONLY" },
                "boot": a.index == 0,
                "index": a.index,
                "autoDelete": a.index == 0,
            })
        })
        .collect();
    reply(
        200,
        &json!({"kind": "compute#instance", "name": name, "status": "RUNNING",
                "id": s.instance_ids.get(name).cloned().unwrap_or_default(), "disks": disks}),
    )
}

fn attach_disk(
    shared: &Shared,
    instance: &str,
    body: &Value,
    query: &BTreeMap<String, String>,
) -> Answer {
    let source = body["source"]
        .as_str()
        .map(resource_path)
        .unwrap_or_default();
    let disk = source.rsplit('/').next().unwrap_or_default().to_owned();
    let device_name = body["deviceName"].as_str().unwrap_or(&disk).to_owned();
    let (index, target) = {
        let s = shared.lock();
        let Some(attached) = s.instances.get(instance) else {
            return not_found(&format!("instances/{instance}"));
        };
        if !s.disks.contains_key(&disk) {
            return not_found(&source);
        }
        if body["mode"].as_str() != Some("READ_ONLY") {
            // A disk made from a snapshot for scanning must never be attached writable here.
            return error(400, "invalid", "the fake attaches READ_ONLY only");
        }
        if attached.iter().any(|a| a.device_name == device_name) {
            return error(
                400,
                "invalid",
                &format!("device name '{device_name}' is in use"),
            );
        }
        let index = attached.iter().map(|a| a.index).max().unwrap_or(0) + 1;
        let target = format!(
            "projects/{}/zones/{}/instances/{instance}",
            s.project, s.zone
        );
        (index, target)
    };
    let effect = Effect::Attach {
        instance: instance.to_owned(),
        att: Attached {
            device_name,
            disk,
            index,
            auto_delete: body["autoDelete"].as_bool().unwrap_or(false),
        },
    };
    start(shared, "attachDisk", target, effect, query)
}

fn detach_disk(shared: &Shared, instance: &str, query: &BTreeMap<String, String>) -> Answer {
    let device_name = query.get("deviceName").cloned().unwrap_or_default();
    let target = {
        let s = shared.lock();
        let attached = s.instances.get(instance);
        if !attached.is_some_and(|a| a.iter().any(|a| a.device_name == device_name)) {
            return error(
                400,
                "invalid",
                &format!("No attached disk found with device name '{device_name}'"),
            );
        }
        format!(
            "projects/{}/zones/{}/instances/{instance}",
            s.project, s.zone
        )
    };
    let effect = Effect::Detach {
        instance: instance.to_owned(),
        device_name,
    };
    start(shared, "detachDisk", target, effect, query)
}

fn delete_instance(shared: &Shared, name: &str, query: &BTreeMap<String, String>) -> Answer {
    let target = {
        let s = shared.lock();
        if !s.instances.contains_key(name) {
            return not_found(&format!("instances/{name}"));
        }
        format!("projects/{}/zones/{}/instances/{name}", s.project, s.zone)
    };
    start(
        shared,
        "delete",
        target,
        Effect::DeleteInstance(name.to_owned()),
        query,
    )
}

/// `instanceGroupManagers.deleteInstances`: the listed instances (URLs or partial URLs) must be
/// the group's, unless `skipInstancesOnValidationError`.
fn leave_group(
    shared: &Shared,
    group: &str,
    body: &Value,
    query: &BTreeMap<String, String>,
) -> Answer {
    let (target, instances) = {
        let s = shared.lock();
        let Some(members) = s.groups.get(group) else {
            return not_found(&format!("instanceGroupManagers/{group}"));
        };
        let skip = body["skipInstancesOnValidationError"] == true;
        let mut instances = Vec::new();
        for url in body["instances"].as_array().into_iter().flatten() {
            let path = resource_path(url.as_str().unwrap_or_default());
            let zone_prefix = format!("projects/{}/zones/{}/instances/", s.project, s.zone);
            match path.strip_prefix(&zone_prefix) {
                Some(name) if members.contains(name) => instances.push(name.to_owned()),
                _ if skip => {}
                _ => {
                    return error(
                        400,
                        "invalid",
                        &format!("Instance '{path}' is not a member of {group}"),
                    )
                }
            }
        }
        let target = format!(
            "projects/{}/zones/{}/instanceGroupManagers/{group}",
            s.project, s.zone
        );
        (target, instances)
    };
    start(
        shared,
        "deleteInstances",
        target,
        Effect::LeaveGroup {
            group: group.to_owned(),
            instances,
        },
        query,
    )
}

fn create_snapshot(
    shared: &Shared,
    disk: &str,
    body: &Value,
    query: &BTreeMap<String, String>,
) -> Answer {
    let Some(name) = body["name"].as_str() else {
        return error(
            400,
            "required",
            "Required field 'resource.name' not specified",
        );
    };
    let (path, file, target) = {
        let s = shared.lock();
        let Some(d) = s.disks.get(disk) else {
            return not_found(&format!("disks/{disk}"));
        };
        let path = format!("projects/{}/global/snapshots/{name}", s.project);
        if s.snapshots.contains_key(&path) {
            return error(
                409,
                "alreadyExists",
                &format!("The resource '{path}' already exists"),
            );
        }
        let target = format!("projects/{}/zones/{}/disks/{disk}", s.project, s.zone);
        (path, d.file.clone(), target)
    };
    start(
        shared,
        "createSnapshot",
        target,
        Effect::CreateSnapshot { path, file },
        query,
    )
}

fn delete_snapshot(shared: &Shared, name: &str, query: &BTreeMap<String, String>) -> Answer {
    let path = {
        let s = shared.lock();
        let path = format!("projects/{}/global/snapshots/{name}", s.project);
        if !s.snapshots.contains_key(&path) {
            return not_found(&path);
        }
        path
    };
    start(
        shared,
        "delete",
        path.clone(),
        Effect::DeleteSnapshot(path),
        query,
    )
}

/// `instances.insert`: the VM with its metadata, a boot disk (named, not read) and the disks
/// to create from snapshots, read-only.
fn insert_instance(shared: &Shared, body: &Value, query: &BTreeMap<String, String>) -> Answer {
    let Some(name) = body["name"].as_str().map(str::to_owned) else {
        return error(
            400,
            "required",
            "Required field 'resource.name' not specified",
        );
    };
    let items: Vec<(String, String)> = body["metadata"]["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    Some((
                        i["key"].as_str()?.to_owned(),
                        i["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let (disks, target) = {
        let mut s = shared.lock();
        if s.instances.contains_key(&name) {
            return error(
                409,
                "alreadyExists",
                &format!("The resource 'instances/{name}' already exists"),
            );
        }
        let mut disks = Vec::new();
        for (i, d) in body["disks"].as_array().into_iter().flatten().enumerate() {
            if d["boot"].as_bool() == Some(true) {
                if d["initializeParams"]["sourceImage"].as_str().is_none() {
                    return error(400, "invalid", "the boot disk needs a sourceImage");
                }
                continue;
            }
            let init = &d["initializeParams"];
            let (snapshot, image) = (
                init["sourceSnapshot"].as_str().map(resource_path),
                init["sourceImage"].as_str().map(resource_path),
            );
            let file = match s.source_file(snapshot.as_deref(), image.as_deref()) {
                Ok(f) => f,
                Err(answer) => return *answer,
            };
            if d["mode"].as_str() != Some("READ_ONLY") {
                return error(400, "invalid", "the fake attaches READ_ONLY only");
            }
            let disk_name = d["initializeParams"]["diskName"]
                .as_str()
                .map_or_else(|| format!("{name}-{i}"), str::to_owned);
            let device_name = d["deviceName"].as_str().unwrap_or(&disk_name).to_owned();
            let labels =
                serde_json::from_value(d["initializeParams"]["labels"].clone()).unwrap_or_default();
            disks.push((
                FakeDisk {
                    name: disk_name.clone(),
                    source_snapshot: snapshot,
                    source_image: image,
                    labels,
                    users: Vec::new(),
                    file,
                },
                Attached {
                    device_name,
                    disk: disk_name,
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    auto_delete: d["autoDelete"].as_bool().unwrap_or(false),
                },
            ));
        }
        s.inserted.insert(name.clone(), body.clone());
        let target = format!("projects/{}/zones/{}/instances/{name}", s.project, s.zone);
        (disks, target)
    };
    start(
        shared,
        "insert",
        target,
        Effect::InsertInstance { name, disks, items },
        query,
    )
}

/// `instances.getGuestAttributes?queryPath=NS/`: the fake metadata server's; `404` when there
/// are none, as the real API answers.
fn guest_attributes(shared: &Shared, instance: &str, query: &BTreeMap<String, String>) -> Answer {
    if !shared.lock().instances.contains_key(instance) {
        return not_found(&format!("instances/{instance}"));
    }
    let query_path = query.get("queryPath").cloned().unwrap_or_default();
    let namespace = query_path.trim_end_matches('/');
    let items: Vec<Value> = shared
        .metadata
        .guest_attributes(namespace)
        .into_iter()
        .map(|(key, value)| json!({"namespace": namespace, "key": key, "value": value}))
        .collect();
    if items.is_empty() {
        return not_found(&format!("guestAttributes/{query_path}"));
    }
    reply(
        200,
        &json!({"kind": "compute#guestAttributes", "queryPath": query_path,
                "queryValue": {"items": items}}),
    )
}
