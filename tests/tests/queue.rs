//! `snapscan agent` as a queue worker and `snapscan submit`, end to end as root: agents (each
//! its own fake VM: metadata server, Compute API attaching real loop devices, state) pulling
//! scan requests from the real Pub/Sub emulator (`snapscan_tests::pubsub`), results to the fake
//! QFlow receiver and the results topic.
//!
//! Not here: the metadata-assignment path and `snapscan launch` (`tests/tests/agent.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapscan_tests::agent::{
    assert_nothing_left, by_snapshot, finish, launcher, readme_role, receiver, snapshot,
    stored_by_job, Harness,
};
use snapscan_tests::gce_metadata::Identity;
use snapscan_tests::needs_root;
use snapscan_tests::oauth::FakeOauth;
use snapscan_tests::pubsub::Emulator;

const WORK_TOPIC: &str = "projects/scan-project/topics/scan-work";
const WORK_SUB: &str = "projects/scan-project/subscriptions/scan-work-agents";
const RESULTS_TOPIC: &str = "projects/scan-project/topics/scan-results";
const RESULTS_SUB: &str = "projects/scan-project/subscriptions/scan-results-test";

/// The emulator with the work topic and subscription (`ack_deadline_secs`), and the results
/// topic with a subscription the test reads.
fn work_queue(ack_deadline_secs: u64) -> Emulator {
    let emu = Emulator::start().unwrap_or_else(|e| panic!("{e:#}"));
    emu.create_topic(WORK_TOPIC).expect("topic");
    emu.create_subscription(WORK_SUB, WORK_TOPIC, ack_deadline_secs)
        .expect("subscription");
    emu.create_topic(RESULTS_TOPIC).expect("results topic");
    emu.create_subscription(RESULTS_SUB, RESULTS_TOPIC, 60)
        .expect("results subscription");
    emu
}

/// An agent's `[queue]` table for `emu`.
fn queue_config(emu: &Emulator, ack_deadline_secs: u64) -> String {
    format!(
        "[queue]\nsubscription = \"{WORK_SUB}\"\nresults_topic = \"{RESULTS_TOPIC}\"\n\
         url = \"{}\"\nack_deadline_secs = {ack_deadline_secs}\npull_wait_secs = 5\n",
        emu.url()
    )
}

/// A queued agent with its own fake VM (metadata server, Compute API with the fixtures'
/// snapshots, disks, state), started.
fn queued_agent(port: u16, emu: &Emulator, ack_deadline_secs: u64, op_delay: Duration) -> Harness {
    let mut h = Harness::new(port, &queue_config(emu, ack_deadline_secs));
    h.with_compute(&["debian-ext4-gpt", "debian-lvm"])
        .set_operation_delay(op_delay);
    h.start();
    h
}

/// Result messages read so far, by request id; waits until `ids` all have one (at most
/// `secs`).
fn wait_results(
    emu: &Emulator,
    results: &mut BTreeMap<String, Vec<Value>>,
    ids: &[String],
    secs: u64,
    logs: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        for m in emu.pull_now(RESULTS_SUB, 100, true).expect("pull results") {
            let id = m["data"]["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            results.entry(id).or_default().push(m["data"].clone());
        }
        if ids.iter().all(|id| results.contains_key(id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "results of {:?} missing after {secs} s; have {:?}\n{}",
            ids.iter()
                .filter(|id| !results.contains_key(*id))
                .collect::<Vec<_>>(),
            results.keys().collect::<Vec<_>>(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn queued_request(id: &str, fixture: &str) -> String {
    by_snapshot(id, fixture).to_string()
}

#[test]
fn queue_three_agents_do_every_request_once_and_refuse_poison() {
    needs_root!();
    let emu = work_queue(10);
    let (q, port) = receiver();
    let mut agents: Vec<Harness> = (0..3)
        .map(|_| queued_agent(port, &emu, 10, Duration::from_millis(200)))
        .collect();
    let ids: Vec<String> = (0..20).map(|i| format!("req-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let fixture = if i % 2 == 0 {
            "debian-ext4-gpt"
        } else {
            "debian-lvm"
        };
        emu.publish(WORK_TOPIC, &queued_request(id, fixture), &[])
            .expect("publish");
    }
    emu.publish(WORK_TOPIC, "{not json", &[("request_id", "poison-json")])
        .expect("publish");
    let missing = json!({"id": "poison-missing",
                         "source": {"snapshot": "projects/prod/global/snapshots/missing"}});
    emu.publish(WORK_TOPIC, &missing.to_string(), &[])
        .expect("publish");
    let mut all = ids.clone();
    all.extend(["poison-json".to_owned(), "poison-missing".to_owned()]);
    let mut results = BTreeMap::new();
    let logs = || {
        agents
            .iter()
            .map(Harness::log_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    wait_results(&emu, &mut results, &all, 300, &logs);
    for id in &ids {
        let r = &results[id];
        assert_eq!(r.len(), 1, "{id}: {r:?}");
        assert_eq!(r[0]["state"], "done", "{id}: {r:?}");
        assert!(
            r[0]["stored"].as_object().is_some_and(|s| !s.is_empty()),
            "{r:?}"
        );
    }
    assert_eq!(results["poison-json"][0]["state"], "failed");
    assert!(
        results["poison-json"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not JSON"),
        "{:?}",
        results["poison-json"]
    );
    assert_eq!(results["poison-missing"][0]["state"], "failed");
    let stored = stored_by_job(&q);
    for id in &ids {
        assert_eq!(stored.get(id), Some(&1), "{id}: {stored:?}");
    }
    assert_eq!(stored.len(), 20, "{stored:?}");
    // Flow control spread the work: no agent took it all.
    let workers = agents
        .iter()
        .filter(|h| ids.iter().any(|id| h.job_state(id) == "done"))
        .count();
    assert!(workers >= 2, "only {workers} agent(s) worked");
    for h in &agents {
        assert_nothing_left(h);
    }
    for h in &mut agents {
        assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    }
    // Nothing comes back after the ack deadline: every request, poison too, was acknowledged.
    std::thread::sleep(Duration::from_secs(11));
    let left = emu.pull_now(WORK_SUB, 100, false).expect("pull");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn queue_kill_redelivers_and_leases_are_extended() {
    needs_root!();
    let emu = work_queue(10);
    let (q, port) = receiver();
    // Agent A's Compute API takes 8 s per operation: the request's job outlives its 10 s
    // deadline before it is scanned.
    let mut a = queued_agent(port, &emu, 10, Duration::from_secs(8));
    emu.publish(
        WORK_TOPIC,
        &queued_request("req-slow", "debian-ext4-gpt"),
        &[],
    )
    .expect("publish");
    a.wait("A working on req-slow", 60, |h| {
        h.journal("req-slow").is_some()
    });
    // Past the subscription's deadline the message is still A's: its lease was extended.
    std::thread::sleep(Duration::from_secs(14));
    assert_eq!(a.job_state("req-slow"), "assigned", "{}", a.log_text());
    assert!(emu.pull_now(WORK_SUB, 10, false).expect("pull").is_empty());
    // Killed mid-job: the request returns when the lease runs out, and B does it.
    assert_eq!(a.stop(nix::sys::signal::Signal::SIGKILL), None);
    let b = queued_agent(port, &emu, 10, Duration::from_millis(200));
    let mut results = BTreeMap::new();
    wait_results(&emu, &mut results, &["req-slow".to_owned()], 120, &|| {
        b.log_text()
    });
    assert_eq!(results["req-slow"][0]["state"], "done");
    // A restarted does not go on with it: cancelled, its disk released, nothing stored twice.
    a.start();
    a.wait_job("req-slow", "cancelled", 60);
    assert_nothing_left(&a);
    assert_eq!(stored_by_job(&q).get("req-slow"), Some(&1));
}

#[test]
fn queue_sigterm_gives_its_request_back_at_once() {
    needs_root!();
    // A 60 s deadline: a request done well within it by another agent was given back, not
    // left to run out.
    let emu = work_queue(60);
    let (q, port) = receiver();
    let mut a = queued_agent(port, &emu, 60, Duration::from_secs(8));
    emu.publish(
        WORK_TOPIC,
        &queued_request("req-term", "debian-ext4-gpt"),
        &[],
    )
    .expect("publish");
    a.wait("A working on req-term", 60, |h| {
        h.journal("req-term").is_some()
    });
    let stopped = Instant::now();
    assert_eq!(a.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    assert!(a.log_text().contains("message(s) back"), "{}", a.log_text());
    let b = queued_agent(port, &emu, 60, Duration::from_millis(200));
    let mut results = BTreeMap::new();
    wait_results(&emu, &mut results, &["req-term".to_owned()], 45, &|| {
        format!("{}\n---\n{}", a.log_text(), b.log_text())
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "not given back"
    );
    assert_eq!(results["req-term"][0]["state"], "done");
    assert_eq!(a.job_state("req-term"), "cancelled");
    assert_nothing_left(&a);
    assert_eq!(stored_by_job(&q).get("req-term"), Some(&1));
}

const GROUP: &str = "scanners";

/// A queued agent of the managed instance group [`GROUP`] (its `created-by` metadata names it,
/// by project number as Compute Engine does) that leaves the group after `idle_secs` idle.
fn group_agent(port: u16, emu: &Emulator, idle_secs: u64) -> Harness {
    let config = format!(
        "[agent]\nidle_action = \"leave-group\"\nidle_grace_secs = {idle_secs}\n{}",
        queue_config(emu, 30)
    );
    let mut h = Harness::new(port, &config);
    let id = Identity::default();
    let zone = id.zone.rsplit('/').next().unwrap_or_default().to_owned();
    let api = h.with_compute(&["debian-ext4-gpt", "debian-lvm"]);
    api.set_project_number(id.project_number);
    api.add_group(GROUP, &[&id.name]);
    h.md.set_attribute(
        "created-by",
        &format!(
            "projects/{}/zones/{zone}/instanceGroupManagers/{GROUP}",
            id.project_number
        ),
    );
    h.start();
    h
}

#[test]
fn submit_waits_for_the_fleet_and_an_idle_fleet_leaves_its_group() {
    needs_root!();
    let emu = work_queue(30);
    let (q, port) = receiver();
    let agents: Vec<Harness> = (0..2).map(|_| group_agent(port, &emu, 20)).collect();
    let oauth = FakeOauth::start(agents[0].md.handle());
    let snapshots = [snapshot("debian-ext4-gpt"), snapshot("debian-lvm")];
    let child = launcher(
        &agents[0],
        &oauth,
        "submit",
        &[
            "--topic",
            WORK_TOPIC,
            "--snapshot",
            &snapshots[0],
            "--snapshot",
            &snapshots[1],
            "--wait",
            "--results-topic",
            RESULTS_TOPIC,
            "--timeout-secs",
            "240",
        ],
        &[("PUBSUB_EMULATOR_HOST", &emu.host())],
    );
    let (code, out, err) = finish(&agents[0], child, 300);
    assert_eq!(code, Some(0), "{out}\n{err}");
    // One request per snapshot, each done once, stored once.
    let stored = stored_by_job(&q);
    assert_eq!(stored.len(), 2, "{stored:?}\n{out}");
    for (id, n) in &stored {
        assert_eq!(*n, 1, "{id}: {stored:?}");
        assert!(out.contains(id.as_str()), "{id} not in\n{out}");
        assert!(err.contains(&format!("{id}: done")), "{err}");
    }
    assert!(err.contains("stored: "), "{err}");
    // Its own results subscription is gone again; the test's is left.
    let subs = emu.subscriptions("scan-project").expect("subscriptions");
    assert!(
        !subs.iter().any(|s| s.contains("snapscan-submit")),
        "{subs:?}"
    );
    // Idle for 20 s after the last job: each agent has its group delete it.
    let me = Identity::default().name;
    for h in &agents {
        h.wait("the instance to leave its group", 90, |h| {
            h.api().group_instances(GROUP).is_empty()
        });
        h.wait("the instance deleted", 30, |h| {
            h.api().deleted_instances() == [me.clone()]
        });
        let agent = h.guest("agent");
        assert!(
            agent["idle_action"]
                .as_str()
                .unwrap_or_default()
                .contains("leaving group"),
            "{agent}"
        );
        // No disk left in the API or the VM's view (the instance itself is gone).
        assert!(
            h.api().disk_names().is_empty(),
            "{:?}",
            h.api().disk_names()
        );
        assert!(h.gce().attached().is_empty(), "{:?}", h.gce().attached());
    }
    // The README's role for the fleet's instances has every permission they used.
    let role = readme_role("snapscanFleetScanner");
    for h in &agents {
        let used = h.api().permissions_used(|_| true);
        assert!(
            used.contains("compute.instanceGroupManagers.update"),
            "{used:?}"
        );
        let missing: Vec<&String> = used.difference(&role).collect();
        assert!(missing.is_empty(), "snapscanFleetScanner lacks {missing:?}");
    }
    // A request published now finds no worker left; it stays queued for a new instance.
    emu.publish(
        WORK_TOPIC,
        &queued_request("after-leaving", "debian-lvm"),
        &[],
    )
    .expect("publish");
    std::thread::sleep(Duration::from_secs(3));
    let left = emu.pull_now(WORK_SUB, 10, true).expect("pull");
    assert!(
        left.iter().any(|m| m["data"]["id"] == "after-leaving"),
        "{left:?}"
    );
    assert!(!stored_by_job(&q).contains_key("after-leaving"));
}
