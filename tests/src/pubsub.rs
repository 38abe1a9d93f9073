//! The real Pub/Sub emulator (`gcloud beta emulators pubsub start`) on a free port of
//! `127.0.0.1`, for the queue tests: started in a process group of its own and killed with it
//! on drop. Topics, subscriptions, publishing and pulling go through its REST API with `curl`,
//! so the test's side of the queue does not use the agent's client.
//!
//! Not here: the agent's Pub/Sub client (`snapscan::queue`).

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};

/// A running emulator.
pub struct Emulator {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Emulator {
    /// Start it and wait until it answers (at most a minute).
    ///
    /// # Errors
    ///
    /// `gcloud` is missing, or the emulator did not come up.
    pub fn start() -> anyhow::Result<Emulator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new("gcloud")
            .args(["beta", "emulators", "pubsub", "start", "--quiet"])
            .arg(format!("--host-port=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .process_group(0)
            .spawn()
            .context("cannot run `gcloud beta emulators pubsub start` (the Cloud SDK with its Pub/Sub emulator and Java)")?;
        let emulator = Emulator { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while curl("GET", &format!("http://{}/", emulator.host()), None).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the Pub/Sub emulator did not answer within 60 s:\n{}",
                    emulator.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(emulator)
    }

    /// `127.0.0.1:PORT`, what `PUBSUB_EMULATOR_HOST` says.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/v1`, the `[queue] url`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.host())
    }

    /// What it printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let text = curl(method, &format!("{}/{path}", self.url()), body)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if v.get("error").is_some() {
            bail!("{method} {path}: {v}");
        }
        Ok(v)
    }

    /// Create `projects/P/topics/T` (`topic` is that path).
    ///
    /// # Errors
    ///
    /// The emulator refused.
    pub fn create_topic(&self, topic: &str) -> anyhow::Result<()> {
        self.call("PUT", topic, None).map(drop)
    }

    /// Create `subscription` (a path) on `topic` with `ack_deadline_secs`.
    ///
    /// # Errors
    ///
    /// The emulator refused.
    pub fn create_subscription(
        &self,
        subscription: &str,
        topic: &str,
        ack_deadline_secs: u64,
    ) -> anyhow::Result<()> {
        let body = json!({"topic": topic, "ackDeadlineSeconds": ack_deadline_secs});
        self.call("PUT", subscription, Some(&body)).map(drop)
    }

    /// The subscriptions of `project` (their paths).
    ///
    /// # Errors
    ///
    /// The emulator refused.
    pub fn subscriptions(&self, project: &str) -> anyhow::Result<Vec<String>> {
        let v = self.call("GET", &format!("projects/{project}/subscriptions"), None)?;
        Ok(v["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Publish `data` with `attributes` to `topic`; the message id.
    ///
    /// # Errors
    ///
    /// The emulator refused.
    pub fn publish(
        &self,
        topic: &str,
        data: &str,
        attributes: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let attrs: serde_json::Map<String, Value> = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let mut message = json!({"data": base64::engine::general_purpose::STANDARD.encode(data)});
        if !attrs.is_empty() {
            message["attributes"] = Value::Object(attrs);
        }
        let v = self.call(
            "POST",
            &format!("{topic}:publish"),
            Some(&json!({"messages": [message]})),
        )?;
        v["messageIds"][0]
            .as_str()
            .map(str::to_owned)
            .context("no message id")
    }

    /// Pull what `subscription` has now (at most `max`), acknowledging it when `ack`: each
    /// message's data parsed as JSON (`null` if it is not), with its attributes.
    ///
    /// # Errors
    ///
    /// The emulator refused.
    pub fn pull_now(
        &self,
        subscription: &str,
        max: usize,
        ack: bool,
    ) -> anyhow::Result<Vec<Value>> {
        let body = json!({"maxMessages": max, "returnImmediately": true});
        let v = self.call("POST", &format!("{subscription}:pull"), Some(&body))?;
        let received = v["receivedMessages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ids: Vec<Value> = received.iter().map(|r| r["ackId"].clone()).collect();
        if ack && !ids.is_empty() {
            self.call(
                "POST",
                &format!("{subscription}:acknowledge"),
                Some(&json!({"ackIds": ids})),
            )?;
        }
        Ok(received
            .iter()
            .map(|r| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["message"]["data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                json!({
                    "data": serde_json::from_slice::<Value>(&data).unwrap_or(Value::Null),
                    "attributes": r["message"]["attributes"],
                    "ack_id": r["ackId"],
                })
            })
            .collect())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // gcloud runs the emulator (Java) as a child: end the whole group.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// `curl -X method url [-d body]`; its output, or why it failed (no answer).
fn curl(method: &str, url: &str, body: Option<&Value>) -> anyhow::Result<String> {
    let mut cmd = crate::images::cmd::tool("curl");
    cmd.args(["-sS", "--max-time", "30", "-X", method, url]);
    if let Some(body) = body {
        cmd.args(["-H", "content-type: application/json", "-d"])
            .arg(body.to_string());
    } else if method != "GET" {
        cmd.args(["-H", "content-length: 0"]);
    }
    crate::images::cmd::run(&mut cmd, None)
}
