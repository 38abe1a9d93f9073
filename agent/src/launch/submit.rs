//! `snapscan submit`: the launcher of a fleet. It snapshots a VM's disks (or takes existing
//! snapshots, [`super::sources`]) and publishes one scan request per disk to the topic the
//! fleet's subscription reads: the assignment JSON with a `source`, and the request id as the
//! message's `request_id` attribute (ids are `<stamp>-<random>-<disk>`, new on every run, so a
//! request is never confused with an earlier one).
//!
//! With `--wait` it follows the results: before publishing anything it creates its own
//! subscription of `--results-topic`, filtered to this run's request ids (so no result can be
//! missed and other runs' are not seen), reads the agents' result messages until every request
//! has one, prints what each found and where its results were stored, and deletes the
//! subscription. A request delivered twice may be answered twice; the first answer counts.
//!
//! Not here: working the requests (the agents' queue worker, [`crate::agent`]), the Pub/Sub
//! calls ([`crate::queue`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::sources::{self, Planned, Seen, Snapshots, SourceArgs};
use crate::cli::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::compute;
use crate::queue::{self, QueueConfig};

/// Arguments of `snapscan submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The topic the fleet's subscription reads: `projects/P/topics/T`.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// The project of `--instance`, `--disk` and `--snapshot` names.
    #[arg(long)]
    pub project: String,
    /// The zone of `--instance` and `--disk` names.
    #[arg(long, default_value = "")]
    pub zone: String,
    /// What to scan.
    #[command(flatten)]
    pub sources: SourceArgs,
    /// The scanner every request runs (a profile of the fleet's settings).
    #[arg(long)]
    pub scanner: Option<String>,
    /// Follow the requests until each has a result, and print them.
    #[arg(long, requires = "results_topic")]
    pub wait: bool,
    /// With `--wait`: the topic the agents publish results to (their `[queue] results_topic`).
    #[arg(long, value_name = "TOPIC")]
    pub results_topic: Option<String>,
    /// With `--wait`: give up after this many seconds (the requests stay queued).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout_secs: u64,
    /// With `--wait`: delete the snapshots this run made once every request has its result.
    #[arg(long, requires = "wait")]
    pub delete_snapshots: bool,
    /// Print the requests instead of sending them; reads (the source VM) are still made.
    #[arg(long)]
    pub dry_run: bool,
    /// The Compute API base URL (tests, private endpoints).
    #[arg(long, default_value = compute::DEFAULT_URL, value_name = "URL")]
    pub compute_url: String,
    /// The Pub/Sub API base URL; `PUBSUB_EMULATOR_HOST` overrides it, as in Google's clients.
    #[arg(long, default_value = queue::DEFAULT_URL, value_name = "URL")]
    pub pubsub_url: String,
}

/// Run `snapscan submit`; returns the exit code.
pub async fn run(args: SubmitArgs) -> u8 {
    let policy = match check(&args) {
        Ok(policy) => policy,
        Err(e) => {
            say!("error: {e:#}");
            return EXIT_USAGE;
        }
    };
    let snaps = match Snapshots::new(
        &args.compute_url,
        args.dry_run,
        args.sources.takes_snapshots() || queue::emulator_host().is_none(),
        &args.project,
        &args.zone,
    )
    .await
    {
        Ok(s) => s,
        Err(code) => return code,
    };
    let qcfg = QueueConfig {
        url: args.pubsub_url.clone(),
        pull_wait_secs: 10,
        ..QueueConfig::default()
    };
    if let Err(e) = qcfg.validate() {
        say!("error: --pubsub-url: {e:#}");
        return EXIT_USAGE;
    }
    let client = match queue::Client::new(&qcfg, snaps.tokens.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            say!("error: {e:#}");
            return EXIT_FAILURE;
        }
    };
    let random = uuid::Uuid::new_v4().simple().to_string();
    let run_id = format!("{}-{}", snaps.stamp, &random[..6]);
    let submit = Submit {
        snaps,
        client,
        run_id,
        policy,
        args,
    };
    let mut reached = Reached::default();
    let code = match submit.go(&mut reached).await {
        Ok(code) => code,
        Err(e) => {
            say!("error: {e:#}");
            EXIT_FAILURE
        }
    };
    if let Some(sub) = &reached.results_sub {
        if let Err(e) = submit.client.delete_subscription(sub).await {
            say!("error: cannot delete {sub} (Pub/Sub deletes it after a day unused): {e}");
        }
    }
    // Only snapshots no request needs any more: none was published, or each has its result.
    if submit.args.delete_snapshots {
        let unneeded = !reached.published || reached.answered;
        let why = "requests without a result may still need them";
        submit.snaps.clean_up(&reached.planned, unneeded, why).await;
    }
    code
}

/// How far a run got.
#[derive(Default)]
struct Reached {
    /// Each disk, as soon as it is known (a snapshot may exist before its wait failed).
    planned: Vec<Planned>,
    /// The subscription of the results, once made.
    results_sub: Option<String>,
    /// A request was (or may have been) published.
    published: bool,
    /// Every request has its result.
    answered: bool,
}

/// The command line's problems that no request can fix; the text of `--policy`, read and
/// checked here once.
fn check(args: &SubmitArgs) -> anyhow::Result<Option<String>> {
    if args.sources.is_empty() {
        anyhow::bail!("nothing to scan: give --instance, --disk, --snapshot or --image");
    }
    let policy = args.sources.policy_text()?;
    queue::check_name(&args.topic, "topics").map_err(|e| anyhow::anyhow!("--topic: {e}"))?;
    if let Some(t) = &args.results_topic {
        queue::check_name(t, "topics").map_err(|e| anyhow::anyhow!("--results-topic: {e}"))?;
    }
    if args.sources.takes_snapshots() && args.zone.is_empty() && args.sources.source_zone.is_none()
    {
        anyhow::bail!("--instance and --disk need --zone (or --source-zone)");
    }
    if args.timeout_secs == 0 {
        anyhow::bail!("--timeout-secs must be at least 1");
    }
    Ok(policy)
}

struct Submit {
    snaps: Snapshots,
    client: Arc<queue::Client>,
    /// `<stamp>-<random>`: every request id of this run starts with it.
    run_id: String,
    /// The text of `--policy`, sent in every request.
    policy: Option<String>,
    args: SubmitArgs,
}

impl Submit {
    /// Snapshot, subscribe to the results (with `--wait`), publish, and wait if asked.
    async fn go(&self, reached: &mut Reached) -> anyhow::Result<u8> {
        let prefix = format!("{}-", self.run_id);
        self.snaps
            .plan(&self.args.sources, &prefix, &mut reached.planned)
            .await?;
        let planned = &reached.planned;
        if self.args.dry_run {
            for p in planned.iter() {
                println!("publish to {}: {}", self.args.topic, self.request(p));
            }
            say!("dry run: nothing was published");
            return Ok(EXIT_OK);
        }
        if let (true, Some(topic)) = (self.args.wait, &self.args.results_topic) {
            // Before the first request: a result can come before this run would look.
            let project = topic.split('/').nth(1).unwrap_or_default();
            let sub = format!(
                "projects/{project}/subscriptions/snapscan-submit-{}",
                self.run_id
            );
            let filter = format!("hasPrefix(attributes.request_id, \"{prefix}\")");
            self.client
                .create_subscription(&sub, topic, &filter)
                .await?;
            reached.results_sub = Some(sub);
        }
        for p in planned.iter() {
            reached.published = true;
            let attrs = BTreeMap::from([("request_id".to_owned(), p.id.clone())]);
            let data = self.request(p).to_string();
            let message = self
                .client
                .publish(&self.args.topic, data.as_bytes(), &attrs)
                .await?;
            println!("{}: {} (message {message})", p.id, p.source.path());
        }
        println!(
            "{} request(s) published to {}",
            planned.len(),
            self.args.topic
        );
        let Some(sub) = reached.results_sub.as_deref() else {
            return Ok(EXIT_OK);
        };
        let ids: BTreeSet<String> = planned.iter().map(|p| p.id.clone()).collect();
        let seen = tokio::select! {
            seen = self.follow(sub, &ids) => seen?,
            _ = tokio::signal::ctrl_c() => {
                say!("stopped waiting; the requests stay queued");
                return Ok(EXIT_INTERRUPTED);
            }
        };
        reached.answered = true;
        Ok(sources::report(planned, &seen))
    }

    /// The request of one disk: an assignment with a `source`.
    fn request(&self, p: &Planned) -> Value {
        let mut r = json!({
            "id": p.id,
            "source": p.source,
            "snapshot": p.snapshot,
            "source_project": p.source_project,
        });
        if let Some(vm) = &p.source_instance {
            r["source_instance"] = json!(vm);
        }
        if let Some(scanner) = &self.args.scanner {
            r["scanner"] = json!(scanner);
        }
        if let Some(policy) = &self.policy {
            r["policy"] = json!(policy);
        }
        r
    }

    /// Read result messages from `sub` until each of `ids` has one; each one's result.
    async fn follow(&self, sub: &str, ids: &BTreeSet<String>) -> anyhow::Result<Seen> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout_secs);
        let progress = crate::progress::Progress::start("waiting for results");
        let mut seen = Seen::new();
        while seen.len() < ids.len() {
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "timed out after {} s with {}/{} results; the other requests stay queued",
                    self.args.timeout_secs,
                    seen.len(),
                    ids.len()
                );
            }
            let got = match self.client.pull(sub, 100).await {
                Ok(got) => got,
                Err(e) if e.retryable => {
                    tracing::info!("{e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let acks: Vec<String> = got.iter().map(|m| m.ack_id.clone()).collect();
            for m in got {
                let Ok(v) = serde_json::from_slice::<Value>(&m.data) else {
                    continue;
                };
                let Some(id) = v["request_id"].as_str().filter(|id| ids.contains(*id)) else {
                    continue;
                };
                if seen.contains_key(id) {
                    continue;
                }
                say!("{id}: {}", sources::describe(&v));
                if let Some(stored) = v["stored"].as_object().filter(|s| !s.is_empty()) {
                    for (file, receipt) in stored {
                        say!(
                            "  {file} stored: {}",
                            receipt.as_str().unwrap_or("acknowledged")
                        );
                    }
                }
                seen.insert(id.to_owned(), v);
            }
            progress.set(format!("{}/{} results", seen.len(), ids.len()));
            self.client.acknowledge(sub, &acks).await?;
        }
        progress.finish();
        Ok(seen)
    }
}
