//! A fake GCE metadata server: the double the agent's end-to-end tests and benchmarks run
//! against, faithful to what `../shared/reference/GCE.md` records of the real one.
//!
//! [`FakeMetadata`] serves `/computeMetadata/v1/` on `127.0.0.1` over real HTTP/1.1 (hyper),
//! from its own thread and tokio runtime, so synchronous `#[test]`s can point the `snapscan`
//! binary (or Google's own client libraries, through `GCE_METADATA_HOST`) at it:
//!
//! - every request must carry `Metadata-Flavor: Google` (else `403`) and must not carry
//!   `X-Forwarded-For` (else `403`); every answer carries `Metadata-Flavor: Google`, and every
//!   `200` an `ETag` (a hash of the body, never `0`);
//! - values: `instance/{id,name,zone,hostname}`, `project/{project-id,numeric-project-id}`,
//!   `instance/attributes/KEY`, `instance/disks/N/{device-name,index,interface,mode,type}`;
//!   a path ending in `/` is a listing (one entry a line, directories with `/`), or with
//!   `?recursive=true` JSON with camelCase keys; a directory without its `/` is a `301` to it;
//!   `?alt=json` JSON-encodes a single value; anything else is `404`;
//! - `?wait_for_change=true&last_etag=E&timeout_sec=N` answers at once when the ETag differs
//!   from `E` (`0` always does), else hangs until the value changes or `N` seconds pass, then
//!   answers the unchanged value with the same ETag; on a bare listing it is a `400`;
//! - guest attributes: `PUT`/`GET`/`DELETE instance/guest-attributes/NS/KEY` (names
//!   `[A-Za-z0-9_-]`), all `403` when disabled ([`FakeMetadata::set_guest_attributes_enabled`]);
//!   every write is logged with its time ([`FakeMetadata::max_writes_in_any_window`]);
//! - scripted failures: the next `n` requests answer a status ([`FakeMetadata::fail_next`]);
//! - the default service account's access token, `instance/service-accounts/default/token`
//!   (`{"access_token", "expires_in", "token_type": "Bearer"}`), a new one per request, valid for
//!   [`FakeMetadata::set_token_lifetime`] (3599 s) unless revoked; other fakes (the Compute API)
//!   check the tokens they get through a [`Handle`].
//!
//! It does not serve identity tokens, other service accounts, project attributes merged into
//! instance ones, or anything not listed above.

use crate::server::Background;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PREFIX: &str = "/computeMetadata/v1/";
/// Longest hang of a watch without `timeout_sec`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `READ_WRITE`.
    ReadWrite,
    /// `READ_ONLY`.
    ReadOnly,
}

/// One entry of `instance/disks/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `deviceName`.
    pub device_name: String,
    /// `index` (0: the boot disk).
    pub index: u32,
    /// `mode`.
    pub mode: Mode,
    /// `interface` (`SCSI`, `NVME`), absent when `None`.
    pub interface: Option<String>,
    /// `type`.
    pub kind: String,
}

impl Disk {
    /// The boot disk: index 0, READ_WRITE.
    pub fn boot(device_name: &str) -> Disk {
        Disk::read_write(device_name, 0)
    }

    /// A SCSI persistent disk attached READ_ONLY.
    pub fn read_only(device_name: &str, index: u32) -> Disk {
        Disk {
            device_name: device_name.to_owned(),
            index,
            mode: Mode::ReadOnly,
            interface: Some("SCSI".into()),
            kind: "PERSISTENT".into(),
        }
    }

    /// A SCSI persistent disk attached READ_WRITE.
    pub fn read_write(device_name: &str, index: u32) -> Disk {
        Disk {
            mode: Mode::ReadWrite,
            ..Disk::read_only(device_name, index)
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "deviceName": self.device_name,
            "index": self.index,
            "mode": match self.mode { Mode::ReadWrite => "READ_WRITE", Mode::ReadOnly => "READ_ONLY" },
            "type": self.kind,
        });
        if let (Some(i), Some(obj)) = (&self.interface, v.as_object_mut()) {
            obj.insert("interface".into(), json!(i));
        }
        v
    }
}

/// Who the fake VM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `instance/id` (above `i64::MAX`, as real ids can be).
    pub id: u64,
    /// `instance/name`.
    pub name: String,
    /// `instance/zone`, full form.
    pub zone: String,
    /// `project/project-id`.
    pub project: String,
    /// `project/numeric-project-id`.
    pub project_number: u64,
}

impl Default for Identity {
    fn default() -> Identity {
        Identity {
            id: 9_459_013_426_734_123_456,
            name: "snapscan-scanner-1".into(),
            zone: "projects/123456789012/zones/europe-west1-b".into(),
            project: "scan-project".into(),
            project_number: 123_456_789_012,
        }
    }
}

/// One guest-attribute write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestWrite {
    /// When it arrived.
    pub at: Instant,
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// One request, as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// Method.
    pub method: String,
    /// Path and query, as sent.
    pub path_and_query: String,
    /// Status answered (0: the connection went away first).
    pub status: u16,
    /// It carried `Metadata-Flavor: Google`.
    pub flavor: bool,
}

#[derive(Debug, Default)]
struct State {
    identity: Identity,
    attributes: BTreeMap<String, String>,
    disks: Vec<Disk>,
    guest: BTreeMap<(String, String), String>,
    guest_enabled: bool,
    writes: Vec<GuestWrite>,
    faults: VecDeque<u16>,
    requests: Vec<RequestLog>,
    /// Tokens issued, with when they stop being valid.
    tokens: Vec<(String, Instant)>,
    token_lifetime: Option<Duration>,
}

/// The default lifetime of an access token, as the real server gives (just under an hour).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// What other fakes may do with a running fake metadata server: read and change the attached
/// disks (as `attachDisk` does), set the attributes a new VM is created with, read its guest
/// attributes (as `instances.getGuestAttributes` does), check an access token.
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

impl Handle {
    /// The attached disks.
    pub fn disks(&self) -> Vec<Disk> {
        self.0.lock().disks.clone()
    }

    /// Change the attached disks (watches wake).
    pub fn update_disks(&self, f: impl FnOnce(&mut Vec<Disk>)) {
        self.0.update(|s| f(&mut s.disks));
    }

    /// Set instance attributes (as creating the VM with them does; watches wake).
    pub fn set_attributes(&self, items: &[(String, String)]) {
        self.0.update(|s| {
            for (k, v) in items {
                s.attributes.insert(k.clone(), v.clone());
            }
        });
    }

    /// The guest attributes of `namespace`: `(key, value)`, by key.
    pub fn guest_attributes(&self, namespace: &str) -> Vec<(String, String)> {
        self.0
            .lock()
            .guest
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A new access token that [`Handle::token_is_valid`] accepts (for another issuer, the
    /// fake OAuth endpoint), and how long it is valid.
    pub fn mint_token(&self) -> (String, Duration) {
        mint(&self.0)
    }

    /// Whether `token` was issued here and is still valid.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = Instant::now();
        self.0
            .lock()
            .tokens
            .iter()
            .any(|(t, until)| t == token && *until > now)
    }
}

struct Shared {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the state and wake every hanging watch.
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A running fake metadata server; dropping it stops it and drops its open connections.
pub struct FakeMetadata {
    server: Background,
    shared: Arc<Shared>,
}

impl FakeMetadata {
    /// Start on a free port.
    ///
    /// # Panics
    /// When it cannot start: a test cannot go on.
    pub fn start() -> FakeMetadata {
        FakeMetadata::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap_or_else(|e| panic!("cannot start the fake metadata server: {e:#}"))
    }

    /// Start on `addr` (a port an agent already tries to reach, say).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start_on(addr: SocketAddr) -> anyhow::Result<FakeMetadata> {
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                guest_enabled: true,
                ..State::default()
            }),
            changed,
        });
        let served = Arc::clone(&shared);
        let server = Background::start(addr, "fake-metadata", move |listener, stop| {
            serve(listener, served, stop)
        })?;
        Ok(FakeMetadata { server, shared })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `127.0.0.1:PORT`: the value of `GCE_METADATA_HOST`.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Replace the identity.
    pub fn set_identity(&self, identity: Identity) {
        self.shared.update(|s| s.identity = identity);
    }

    /// Set the instance attribute `key`.
    pub fn set_attribute(&self, key: &str, value: &str) {
        self.shared
            .update(|s| drop(s.attributes.insert(key.to_owned(), value.to_owned())));
    }

    /// Remove the instance attribute `key`.
    pub fn remove_attribute(&self, key: &str) {
        self.shared.update(|s| drop(s.attributes.remove(key)));
    }

    /// A handle for other fakes.
    pub fn handle(&self) -> Handle {
        Handle(Arc::clone(&self.shared))
    }

    /// How long the tokens issued from now on are valid (and the `expires_in` they say).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = Some(lifetime);
    }

    /// Make every token issued so far invalid (as a key rotation or revocation does).
    pub fn revoke_tokens(&self) {
        let now = Instant::now();
        for (_, until) in &mut self.shared.lock().tokens {
            *until = now;
        }
    }

    /// How many tokens were issued.
    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().tokens.len()
    }

    /// Replace the attached disks.
    pub fn set_disks(&self, disks: Vec<Disk>) {
        self.shared.update(|s| s.disks = disks);
    }

    /// The attached disks.
    pub fn disks(&self) -> Vec<Disk> {
        self.shared.lock().disks.clone()
    }

    /// Enable or disable (`403`) guest attributes.
    pub fn set_guest_attributes_enabled(&self, enabled: bool) {
        self.shared.update(|s| s.guest_enabled = enabled);
    }

    /// The guest attribute `namespace/key`.
    pub fn guest_attribute(&self, namespace: &str, key: &str) -> Option<String> {
        self.shared
            .lock()
            .guest
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned()
    }

    /// The guest attribute `namespace/key` parsed as JSON; `null` when absent or not JSON.
    pub fn guest_json(&self, namespace: &str, key: &str) -> Value {
        self.guest_attribute(namespace, key)
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or(Value::Null)
    }

    /// Every guest-attribute write so far.
    pub fn guest_writes(&self) -> Vec<GuestWrite> {
        self.shared.lock().writes.clone()
    }

    /// The most guest-attribute writes that fell within any `window`.
    pub fn max_writes_in_any_window(&self, window: Duration) -> usize {
        let times: Vec<Instant> = self.shared.lock().writes.iter().map(|w| w.at).collect();
        (0..times.len())
            .map(|i| {
                times
                    .iter()
                    .skip(i)
                    .take_while(|t| t.duration_since(times[i]) < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// The next `n` requests answer `status` at once (503 bursts, 429).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared
            .update(|s| s.faults.extend(std::iter::repeat_n(status, n)));
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }

    /// Stop serving and drop open connections (hanging watches included).
    pub fn shutdown(&mut self) {
        self.server.shutdown();
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

/// A new access token, valid for the set lifetime; with that lifetime.
fn mint(shared: &Shared) -> (String, Duration) {
    let mut state = shared.lock();
    let lifetime = state.token_lifetime.unwrap_or(TOKEN_LIFETIME);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let token = format!("ya29.fake-{}-{nanos:08x}", state.tokens.len() + 1);
    state
        .tokens
        .push((token.clone(), Instant::now() + lifetime));
    (token, lifetime)
}

/// A new access token, as the token endpoint answers it.
fn issue_token(shared: &Shared) -> Answer {
    let (token, lifetime) = mint(shared);
    let body = json!({
        "access_token": token,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
    });
    let mut a = answer(200, body.to_string(), false);
    if let Ok(v) = "application/json".parse() {
        a.headers_mut().insert("Content-Type", v);
    }
    a
}

fn answer(status: u16, body: impl Into<Bytes>, etag: bool) -> Answer {
    let body: Bytes = body.into();
    let mut b = Response::builder()
        .status(status)
        .header("Metadata-Flavor", "Google")
        .header("Content-Type", "application/text")
        .header("Server", "Metadata Server for VM");
    if etag {
        b = b.header("ETag", etag_of(&body));
    }
    b.body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A 16-hex-digit hash of the body, never `0`.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    hex::encode(digest.get(..8).unwrap_or_default())
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Answer {
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let flavor = req
        .headers()
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    let forwarded = req.headers().contains_key("x-forwarded-for");
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let body = crate::server::body(req).await;
    let fault = shared.lock().faults.pop_front();
    let answered = if let Some(status) = fault {
        answer(status, "injected failure\n", false)
    } else if !flavor || forwarded {
        answer(
            403,
            "missing Metadata-Flavor header or forwarded request\n",
            false,
        )
    } else {
        route(&method, &path, &query, body, shared).await
    };
    shared.lock().requests.push(RequestLog {
        method: method.to_string(),
        path_and_query,
        status: answered.status().as_u16(),
        flavor,
    });
    answered
}

async fn route(
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: Bytes,
    shared: &Shared,
) -> Answer {
    let Some(rel) = path.strip_prefix(PREFIX) else {
        return answer(404, "not found\n", false);
    };
    if let Some(rest) = rel.strip_prefix("instance/guest-attributes/") {
        return guest(method, rest, body, shared);
    }
    if rel == "instance/service-accounts/default/token" && method == Method::GET {
        return issue_token(shared);
    }
    if method != Method::GET {
        return answer(405, "method not allowed\n", false);
    }
    let recursive = query.get("recursive").is_some_and(|v| v == "true");
    let alt_json = query.get("alt").is_some_and(|v| v == "json");
    let wait = query.get("wait_for_change").is_some_and(|v| v == "true");
    if wait && rel.ends_with('/') && !recursive {
        return answer(
            400,
            "wait_for_change needs recursive=true on a directory\n",
            false,
        );
    }
    let timeout = query
        .get("timeout_sec")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_WAIT, Duration::from_secs);
    let last = query
        .get("last_etag")
        .cloned()
        .unwrap_or_else(|| "0".into());
    let mut changes = shared.changed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(text) = render(&shared.lock(), rel, recursive, alt_json) else {
            return answer(404, "not found\n", false);
        };
        if !rel.ends_with('/') && !rel.is_empty() && is_directory(&shared.lock(), rel) {
            // As the real server: a directory without its slash is a redirect to it.
            let mut moved = answer(301, "", false);
            let location = format!("{PREFIX}{rel}/{}", query_string(query));
            if let Ok(v) = location.parse() {
                moved.headers_mut().insert("Location", v);
            }
            return moved;
        }
        if !wait || etag_of(text.as_bytes()) != last {
            return answer(200, text, true);
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return answer(200, text, true);
            },
            () = tokio::time::sleep_until(deadline) => return answer(200, text, true),
        }
    }
}

/// Whether `rel` (without its slash) names a directory.
fn is_directory(s: &State, rel: &str) -> bool {
    render(s, &format!("{rel}/"), false, false).is_some()
}

/// `?k=v&...` of a parsed query, or nothing.
fn query_string(query: &BTreeMap<String, String>) -> String {
    if query.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("?{}", pairs.join("&"))
}

/// The text of a path, or `None` (404).
fn render(s: &State, rel: &str, recursive: bool, alt_json: bool) -> Option<String> {
    let tree = tree(s);
    let mut node = &tree;
    for seg in rel
        .trim_end_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
    {
        node = match node {
            Value::Object(map) => map.get(seg)?,
            Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    let is_dir = matches!(node, Value::Object(_) | Value::Array(_));
    if !is_dir && rel.ends_with('/') {
        return None;
    }
    if is_dir {
        if recursive {
            // Attribute keys are the user's own: never renamed.
            if rel.starts_with("instance/attributes") {
                return Some(node.to_string());
            }
            return Some(camel(node).to_string());
        }
        let names: Vec<String> = match node {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::Object(_) | Value::Array(_) => format!("{k}/"),
                    _ => k.clone(),
                })
                .collect(),
            Value::Array(items) => (0..items.len()).map(|i| format!("{i}/")).collect(),
            _ => Vec::new(),
        };
        return Some(names.iter().map(|n| format!("{n}\n")).collect());
    }
    let text = match node {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(if alt_json {
        match node {
            Value::String(s) => Value::String(s.clone()).to_string(),
            other => other.to_string(),
        }
    } else {
        text
    })
}

/// Everything served, with kebab-case path segments.
fn tree(s: &State) -> Value {
    let disks: Vec<Value> = s
        .disks
        .iter()
        .map(|d| {
            let j = d.json();
            let mut m = serde_json::Map::new();
            for (k, v) in j.as_object().into_iter().flatten() {
                m.insert(kebab(k), v.clone());
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "instance": {
            "id": s.identity.id,
            "name": s.identity.name,
            "hostname": format!("{}.{}.c.{}.internal", s.identity.name,
                s.identity.zone.rsplit('/').next().unwrap_or_default(), s.identity.project),
            "zone": s.identity.zone,
            "attributes": s.attributes,
            "disks": disks,
        },
        "project": {
            "project-id": s.identity.project,
            "numeric-project-id": s.identity.project_number,
        },
    })
}

/// `device-name` → `deviceName`.
fn camel_key(k: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in k.chars() {
        if c == '-' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `deviceName` → `device-name`.
fn kebab(k: &str) -> String {
    let mut out = String::new();
    for c in k.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Recursive JSON: camelCase keys, except inside `attributes` (user keys stay as set).
fn camel(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let child = if k == "attributes" {
                        v.clone()
                    } else {
                        camel(v)
                    };
                    (camel_key(k), child)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(camel).collect()),
        other => other.clone(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn guest(method: &Method, rest: &str, body: Bytes, shared: &Shared) -> Answer {
    if !shared.lock().guest_enabled {
        return answer(403, "guest attributes are disabled\n", false);
    }
    let (ns, key) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_name(ns) || !(key.is_empty() || valid_name(key)) {
        return answer(400, "bad namespace or key\n", false);
    }
    let id = (ns.to_owned(), key.to_owned());
    match (method, key.is_empty()) {
        (&Method::PUT, false) => {
            let value = String::from_utf8_lossy(&body).into_owned();
            shared.update(|s| {
                s.writes.push(GuestWrite {
                    at: Instant::now(),
                    namespace: id.0.clone(),
                    key: id.1.clone(),
                    value: value.clone(),
                });
                s.guest.insert(id, value);
            });
            answer(200, "", false)
        }
        (&Method::GET, false) => match shared.lock().guest.get(&id) {
            Some(v) => answer(200, v.clone(), true),
            None => answer(404, "not found\n", false),
        },
        (&Method::GET, true) => {
            let keys: String = shared
                .lock()
                .guest
                .keys()
                .filter(|(n, _)| n == ns)
                .map(|(_, k)| format!("{k}\n"))
                .collect();
            answer(200, keys, true)
        }
        (&Method::DELETE, false) => {
            shared.update(|s| drop(s.guest.remove(&id)));
            answer(200, "", false)
        }
        _ => answer(405, "method not allowed\n", false),
    }
}
