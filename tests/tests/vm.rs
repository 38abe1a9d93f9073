//! The scanner image in a VM: a Debian 12 guest with snapscan installed by `image/install.sh`
//! boots under QEMU with systemd running the agent from `systemd/snapscan-agent.service`
//! (hardening included), two snapshot-like disks and a READ_WRITE decoy attached as GCE attaches
//! them, the fake metadata server at 169.254.169.254 and the fake QFlow receiver on the host
//! (`snapscan_tests::vm`); and the same guest making its own disk from a snapshot through the
//! fake Compute API, which hot-plugs it into the VM. Everything is asserted from the host; the
//! timings are printed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapscan_tests::compute::FakeCompute;
use snapscan_tests::expect::sha256_file;
use snapscan_tests::gce::DiskBus;
use snapscan_tests::gce_metadata::{Disk, FakeMetadata, Identity};
use snapscan_tests::images::{self, is_root};
use snapscan_tests::packer;
use snapscan_tests::qflow::FakeQflow;
use snapscan_tests::vm::{Guest, Hotplug, Vm, VmDisk};

const TOKEN: &str = "vm-test-token";

/// One VM at a time: two guests under software emulation on a small machine would only slow
/// each other past their deadlines.
static ONE_VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_vm() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn guest_attr(md: &FakeMetadata, key: &str) -> Value {
    md.guest_json("snapscan", key)
}

#[test]
fn the_image_boots_and_scans_its_assigned_disks() {
    if !is_root() {
        snapscan_tests::skip("needs root (debootstrap, loop devices)");
        return;
    }
    let _vm = one_vm();
    let t0 = Instant::now();
    let guest = Guest::build(&snapscan_tests::snapscan_bin(), TOKEN).expect("guest image");
    let built = t0.elapsed();
    let (ready, done) = scan_in_vm(&guest);
    eprintln!(
        "VM test timings: guest image {:.1} s; boot to agent READY {:.1} s; boot to both \
         jobs done and reported {:.1} s; total {:.1} s",
        built.as_secs_f64(),
        ready.as_secs_f64(),
        done.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn the_image_built_by_packer_does_the_same() {
    if !is_root() || !packer::available() {
        snapscan_tests::skip("needs root and packer");
        return;
    }
    let _vm = one_vm();
    let t0 = Instant::now();
    let work = tempfile::tempdir().expect("tempdir");
    let (key, public) = packer::ssh_key(work.path());
    let base = Guest::build_packer_base(TOKEN, &public).expect("base image");
    let out = work.path().join("out");
    let vars = json!({
        "base_image": base.image(),
        "base_image_format": "raw",
        "accelerator": "tcg",
        "ssh_private_key_file": key,
        "output_directory": out,
        "image_name": "snapscan-vmtest",
        "snapscan_binary": snapscan_tests::snapscan_bin(),
        "install_packages": false,
        "qemuargs": base.boot_args(),
    });
    let build = packer::build(
        "packer/snapscan.pkr.hcl",
        &["-only=qemu.scanner"],
        &vars,
        work.path(),
    );
    assert!(
        build.output.status.success(),
        "packer build failed:\n{}",
        build.describe()
    );
    let built = t0.elapsed();
    let guest = base.with_image(out.join("snapscan-vmtest.img"));
    let (ready, done) = scan_in_vm(&guest);
    eprintln!(
        "Packer VM test timings: packer build {:.1} s; boot to agent READY {:.1} s; boot to \
         both jobs done and reported {:.1} s; total {:.1} s",
        built.as_secs_f64(),
        ready.as_secs_f64(),
        done.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// Boot `guest` with two assigned read-only disks and a READ_WRITE decoy, and check from the
/// host that both are scanned and uploaded once, the decoy refused, the journal has the job
/// fields and no disk changed. Returns the uptimes at READY and at the end.
fn scan_in_vm(guest: &Guest) -> (Duration, Duration) {
    let disk_a = images::image("debian-ext4-gpt").expect("fixture");
    let disk_b = images::image("debian-xfs-mbr").expect("fixture");
    let decoy_dir = tempfile::tempdir().expect("tempdir");
    let decoy = decoy_dir.path().join("decoy.img");
    std::fs::copy(&disk_a, &decoy).expect("decoy copy");
    let hashes: Vec<String> = [&disk_a, &disk_b, &decoy]
        .iter()
        .map(|p| sha256_file(p))
        .collect();
    let md = FakeMetadata::start();
    md.set_disks(vec![
        Disk::boot("persistent-disk-0"),
        Disk::read_only("disk-a", 1),
        Disk::read_only("disk-b", 2),
        Disk::read_write("decoy-rw", 3),
    ]);
    md.set_attribute("enable-guest-attributes", "TRUE");
    md.set_attribute(
        "snapscan-assignments",
        &json!([
            {"id": "job-a", "device_name": "disk-a", "snapshot": "snap-a"},
            {"id": "job-b", "device_name": "disk-b", "snapshot": "snap-b"},
            {"id": "job-rw", "device_name": "decoy-rw", "snapshot": "snap-rw"},
        ])
        .to_string(),
    );
    let q = FakeQflow::start(TOKEN);
    let disks = [
        VmDisk {
            device_name: "disk-a".into(),
            image: disk_a.clone(),
            read_only: true,
        },
        VmDisk {
            device_name: "disk-b".into(),
            image: disk_b.clone(),
            read_only: true,
        },
        VmDisk {
            device_name: "decoy-rw".into(),
            image: decoy.clone(),
            read_only: false,
        },
    ];
    let mut vm = Vm::boot(guest, &disks, md.addr().port(), q.addr().port(), None).expect("boot");

    // READY: systemd prints "Started" for a Type=notify unit only after READY=1.
    let mut ready = None;
    let mut done = None;
    let deadline = Instant::now() + Duration::from_secs(480);
    while done.is_none() {
        if let Some(e) = vm.exited() {
            panic!("{e}\n--- console ---\n{}", vm.console());
        }
        assert!(
            Instant::now() < deadline,
            "timed out; guest attributes: {:?}\n--- console ---\n{}",
            [
                guest_attr(&md, "job-a"),
                guest_attr(&md, "job-b"),
                guest_attr(&md, "agent")
            ],
            vm.console()
        );
        let started = vm
            .console()
            .lines()
            .any(|l| l.contains("Started") && l.contains("snapscan-agent.s"));
        if started && ready.is_none() {
            ready = Some(vm.uptime());
        }
        if guest_attr(&md, "job-a")["state"] == "done"
            && guest_attr(&md, "job-b")["state"] == "done"
            && guest_attr(&md, "job-rw")["state"] == "failed"
            && guest_attr(&md, "agent")["done"] == 2
        {
            done = Some(vm.uptime());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ready = ready.expect("the console shows the agent started (READY=1)");
    let done = done.unwrap_or_default();

    // Both disks scanned and uploaded once; the decoy refused.
    let stored = q.stored();
    for job in ["job-a", "job-b"] {
        let n = stored
            .iter()
            .filter(|s| s.fields.get("job_id").map(String::as_str) == Some(job))
            .count();
        assert_eq!(n, 1, "{job}: {stored:#?}");
        assert_eq!(guest_attr(&md, job)["result"]["packages"], 88);
    }
    let refused = guest_attr(&md, "job-rw");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("READ_WRITE")),
        "{refused}"
    );

    // A clean shutdown (SIGTERM to the agent); the journal holds the structured fields.
    let journal = vm.power_down(Duration::from_secs(120)).expect("power down");
    let entries: Vec<Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    let has = |job: &str, state: &str| {
        entries.iter().any(|e| {
            e["JOB_ID"] == job
                && e["STATE"] == state
                && e["SNAPSHOT"].is_string()
                && e["DEVICE"].is_string()
        })
    };
    assert!(
        has("job-a", "done") && has("job-b", "done") && has("job-a", "scanned"),
        "journal: {journal}"
    );

    // No disk was written, the decoy included.
    let after: Vec<String> = [&disk_a, &disk_b, &decoy]
        .iter()
        .map(|p| sha256_file(p))
        .collect();
    assert_eq!(after, hashes, "a disk changed");
    (ready, done)
}

#[test]
fn the_image_makes_its_own_disk_from_a_snapshot_scans_and_deletes_it() {
    if !is_root() {
        snapscan_tests::skip("needs root (debootstrap, loop devices)");
        return;
    }
    let _vm = one_vm();
    let guest = Guest::build(&snapscan_tests::snapscan_bin(), TOKEN).expect("guest image");
    let image = images::image("debian-ext4-gpt").expect("fixture");
    let hash = sha256_file(&image);
    let snapshot = "projects/prod/global/snapshots/web-1-boot";
    let md = FakeMetadata::start();
    md.set_disks(vec![Disk::boot("persistent-disk-0")]);
    md.set_attribute("enable-guest-attributes", "TRUE");
    md.set_attribute(
        "snapscan-assignments",
        &json!([{"id": "vm-src", "source": {"snapshot": snapshot}}]).to_string(),
    );
    let q = FakeQflow::start(TOKEN);
    let me = Identity::default();
    let zone = me.zone.rsplit('/').next().unwrap_or_default().to_owned();
    let bus = Arc::new(Mutex::new(Hotplug::default()));
    let api = FakeCompute::start(
        &me.project,
        &zone,
        md.handle(),
        Arc::clone(&bus) as Arc<Mutex<dyn DiskBus>>,
    );
    api.add_instance(&me.name, &me.id.to_string());
    api.add_snapshot(snapshot, image.clone());
    api.set_operation_delay(Duration::from_secs(1));
    let mut vm = Vm::boot(
        &guest,
        &[],
        md.addr().port(),
        q.addr().port(),
        Some(api.addr().port()),
    )
    .expect("boot");
    bus.lock().expect("bus").bind(&vm);
    let deadline = Instant::now() + Duration::from_secs(480);
    let done = loop {
        if let Some(e) = vm.exited() {
            panic!("{e}\n--- console ---\n{}", vm.console());
        }
        assert!(
            Instant::now() < deadline,
            "timed out; job: {}; API: {:?}\n--- console ---\n{}",
            guest_attr(&md, "vm-src"),
            api.requests()
                .iter()
                .map(|r| format!("{} {} {}", r.method, r.path_and_query, r.status))
                .collect::<Vec<_>>(),
            vm.console()
        );
        let state = guest_attr(&md, "vm-src")["state"].clone();
        assert_ne!(state, "failed", "{}", guest_attr(&md, "vm-src"));
        if state == "done" && !api.deleted_disks().is_empty() {
            break vm.uptime();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let job = guest_attr(&md, "vm-src");
    assert_eq!(job["result"]["packages"], 88, "{job}");
    let stored = q.stored();
    assert_eq!(stored.len(), 1, "{stored:#?}");
    // The disk it made (from the snapshot, hot-plugged read-only) is detached and deleted.
    assert!(api.disk_names().is_empty(), "{:?}", api.disk_names());
    assert_eq!(api.attached(&me.name), ["persistent-disk-0"]);
    assert_eq!(md.disks(), [Disk::boot("persistent-disk-0")]);
    vm.power_down(Duration::from_secs(120)).expect("power down");
    assert_eq!(sha256_file(&image), hash, "the snapshot's image changed");
    eprintln!(
        "VM test (snapshot source) timings: boot to job done and disk deleted {:.1} s",
        done.as_secs_f64()
    );
}
