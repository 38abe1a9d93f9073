//! External scanner runs end to end, with stand-in scanner scripts that each test writes into its
//! own temporary directory (never onto a scanned disk): argv rendering and the clean
//! environment, output collection, every exit-code class, the built-in `qscanner` profile (a
//! stand-in `qscanner` first on the search path), timeout and cancellation killing the whole
//! process group, leftovers of a finished scanner, a 50 MiB output flood, a file secret that
//! reaches the scanner but no log and no outcome, and the refusals (program on the scanned disk,
//! missing program, missing mount).
//!
//! The "scanned disk" here is a plain directory given as the mount point: the refusal is a path
//! check, so no kernel mount is needed. Every log line of the whole test binary is captured (one
//! global subscriber) so that secret checks cover all tests.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use snapscan::detect::OsFamily;
use snapscan::scanner::run::group_members;
use snapscan::scanner::{
    builtin_profiles, run, CancellationToken, Class, EnvSource, ExitCodes, Profile, RunOutcome,
    ScanContext, ScannerError,
};

/// Everything logged by this test binary.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer_buf = Arc::clone(&buf);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_writer(move || LogWriter(Arc::clone(&writer_buf)))
            .try_init()
            .expect("install the log subscriber");
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&log_buffer().lock().expect("log lock")).into_owned()
}

/// A temporary work area: `bin/` for stand-ins, `probe/` where they report, `out/`, `cache/`,
/// and `disk/` playing the mounted guest root.
struct Bench {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        log_buffer();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        for sub in ["bin", "probe", "out", "cache", "disk/bin"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        Bench { _dir: dir, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Write an executable `/bin/sh` script at `rel` (`@PROBE@` stands for the probe directory).
    fn script(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.path(rel);
        let probe = self.path("probe");
        let text = format!(
            "#!/bin/sh\nset -eu\n{}\n",
            body.replace("@PROBE@", &probe.display().to_string())
        );
        std::fs::write(&path, text).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn probe(&self, name: &str) -> String {
        std::fs::read_to_string(self.path("probe").join(name))
            .unwrap_or_else(|e| panic!("probe {name}: {e}"))
    }

    fn ctx(&self) -> ScanContext {
        ScanContext {
            mount: Some(self.path("disk")),
            ..ScanContext::new(self.path("out"), self.path("cache"), "job-1")
        }
    }
}

fn profile(argv: &[&str]) -> Profile {
    Profile {
        command: argv.iter().map(|s| s.to_string()).collect(),
        ..Profile::default()
    }
}

async fn run_ok(name: &str, p: &Profile, ctx: &ScanContext) -> RunOutcome {
    run(name, p, ctx, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The start of a stand-in that leaves a process group behind: it records its group (`pg.pid`),
/// starts a background child and records it last (`bg.pid`, renamed into place, so a test that
/// sees `bg.pid` can read both whole).
const GROUP: &str = "echo $$ > @PROBE@/pg.pid; sleep 1000 & echo $! > @PROBE@/bg.new; mv @PROBE@/bg.new @PROBE@/bg.pid";

/// No live process remains in the group the stand-in recorded (`pg.pid`), and its background
/// child (`bg.pid`) is dead.
fn assert_group_gone(b: &Bench, what: &str) {
    let pgid: i32 = b.probe("pg.pid").trim().parse().expect("pgid");
    let bg: i32 = b.probe("bg.pid").trim().parse().expect("background pid");
    assert_eq!(
        group_members(pgid).expect("/proc"),
        Vec::<i32>::new(),
        "{what}: group {pgid} survives"
    );
    // Independent of group_members: the background child is gone or a zombie.
    let state = std::fs::read_to_string(format!("/proc/{bg}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim().chars().next()))
        .flatten();
    assert!(
        matches!(state, None | Some('Z' | 'X')),
        "{what}: background child {bg} is alive (state {state:?})"
    );
}

#[tokio::test]
async fn success_renders_argv_and_collects_outputs() {
    let b = Bench::new();
    let scanner = b.script(
        "bin/scan",
        r#"printf '%s\n' "$@" > @PROBE@/args
env | sort > @PROBE@/env
pwd > @PROBE@/pwd
echo '{}' > a.json; echo '{}' > b.json; echo x > notes.txt
mkdir -p sub deep/er; echo '{}' > sub/c.json; echo '{}' > deep/er/d.json
ln -s /etc/passwd link.json; ln -s /etc etc.json
echo "scanned $1"; echo "a warning" >&2"#,
    );
    let p = Profile {
        command: [
            scanner.to_str().expect("utf-8"),
            "{mount}",
            "{output_dir}",
            "{os_family}",
            "{os_id}",
            "{snapshot}",
            "{instance_id}",
            "{disk}",
            "{device_name}",
            "{job_id}",
            "{{literal}}",
        ]
        .map(String::from)
        .to_vec(),
        env: BTreeMap::from([(
            "MARKER".to_owned(),
            EnvSource::Value("job={job_id}".to_owned()),
        )]),
        outputs: vec!["*.json".into(), "sub/*.json".into()],
        ..Profile::default()
    };
    let ctx = ScanContext {
        os_family: Some(OsFamily::Linux),
        os_id: Some("debian".into()),
        snapshot: Some("snap-1".into()),
        instance_id: Some("4711".into()),
        disk: Some("/dev/sdb".into()),
        device_name: None,
        ..b.ctx()
    };
    let out = run_ok("plain", &p, &ctx).await;
    assert_eq!(out.class, Class::Success);
    assert_eq!((out.exit_code, out.signal), (Some(0), None));
    let o = b.path("out");
    assert_eq!(
        out.outputs,
        [o.join("a.json"), o.join("b.json"), o.join("sub/c.json")]
    );
    let disk = b.path("disk");
    let want_args = [
        disk.to_str().expect("utf-8"),
        o.to_str().expect("utf-8"),
        "linux",
        "debian",
        "snap-1",
        "4711",
        "/dev/sdb",
        "",
        "job-1",
        "{literal}",
    ];
    assert_eq!(b.probe("args").lines().collect::<Vec<_>>(), want_args);
    assert_eq!(b.probe("pwd").trim(), o.to_str().expect("utf-8"));
    let env: BTreeMap<String, String> = b
        .probe("env")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert_eq!(
        env.get("PATH").map(String::as_str),
        Some(snapscan::scanner::SAFE_PATH)
    );
    assert_eq!(env.get("LANG").map(String::as_str), Some("C.UTF-8"));
    assert_eq!(env.get("HOME").map(String::as_str), o.to_str());
    assert_eq!(env.get("MARKER").map(String::as_str), Some("job=job-1"));
    let unexpected: Vec<&String> = env
        .keys()
        .filter(|k| !["PATH", "LANG", "HOME", "MARKER", "PWD", "SHLVL", "_"].contains(&k.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "environment not clean: {unexpected:?}"
    );
    assert_eq!(out.stdout_tail, format!("scanned {}\n", disk.display()));
    assert_eq!(out.stderr_tail, "a warning\n");
    assert!(log_text().contains("a warning"), "stderr reaches the log");
}

#[tokio::test]
async fn every_exit_code_class() {
    struct Case {
        name: &'static str,
        body: &'static str,
        want: Class,
        exit_code: Option<i32>,
        signal: Option<i32>,
    }
    let cases = [
        Case {
            name: "success",
            body: "exit 0",
            want: Class::Success,
            exit_code: Some(0),
            signal: None,
        },
        Case {
            name: "partial",
            body: "exit 40",
            want: Class::Partial,
            exit_code: Some(40),
            signal: None,
        },
        Case {
            name: "retryable",
            body: "exit 75",
            want: Class::Retryable,
            exit_code: Some(75),
            signal: None,
        },
        Case {
            name: "unknown code",
            body: "exit 3",
            want: Class::Fatal,
            exit_code: Some(3),
            signal: None,
        },
        Case {
            name: "signal",
            body: "kill -KILL $$",
            want: Class::Fatal,
            exit_code: None,
            signal: Some(9),
        },
    ];
    for c in cases {
        let b = Bench::new();
        let scanner = b.script("bin/scan", c.body);
        let p = Profile {
            exit_codes: ExitCodes {
                success: vec![0],
                partial: vec![40],
                retryable: vec![75],
            },
            ..profile(&[scanner.to_str().expect("utf-8")])
        };
        let out = run_ok(c.name, &p, &b.ctx()).await;
        assert_eq!(
            (
                out.class,
                out.exit_code,
                out.signal,
                out.timed_out,
                out.cancelled
            ),
            (c.want, c.exit_code, c.signal, false, false),
            "case {}",
            c.name
        );
    }
}

#[tokio::test]
async fn qscanner_profile_with_a_stand_in() {
    static ENV: std::sync::Once = std::sync::Once::new();
    ENV.call_once(|| {
        std::env::set_var("QUALYS_URL", "https://qualys.example");
        std::env::set_var("QUALYS_AUTH_TOKEN", "tok-7f3a9c1e");
    });
    let b = Bench::new();
    b.script(
        "bin/qscanner",
        r#"printf '%s\n' "$@" > @PROBE@/args-$1
echo "$HOME" > @PROBE@/home-$1
test "$XDG_CACHE_HOME" = "$HOME"
test -z "$(ls -A "$HOME")"
touch "$HOME/cached"
echo db > "$5/changelist.db"
exit 40"#,
    );
    let q = &builtin_profiles()["qscanner"];
    let mut homes = Vec::new();
    for (family, mode) in [
        (OsFamily::Linux, "vmsnapshot"),
        (OsFamily::Windows, "winvmsnapshot"),
    ] {
        let ctx = ScanContext {
            os_family: Some(family),
            search_path: vec![b.path("bin"), "/usr/bin".into(), "/bin".into()],
            ..b.ctx()
        };
        let out = run_ok("qscanner", q, &ctx).await;
        assert_eq!(out.class, Class::Partial, "{mode}: {}", out.stderr_tail);
        assert_eq!(out.exit_code, Some(40));
        assert_eq!(out.outputs, [b.path("out/changelist.db")]);
        let disk = b.path("disk");
        let out_dir = b.path("out");
        assert_eq!(
            b.probe(&format!("args-{mode}")).lines().collect::<Vec<_>>(),
            [
                mode,
                "--mount-path",
                disk.to_str().expect("utf-8"),
                "--output-dir",
                out_dir.to_str().expect("utf-8"),
                "--qualys-url",
                "https://qualys.example",
                "--auth-token",
                "tok-7f3a9c1e",
            ]
        );
        assert_eq!(
            out.argv[1..],
            [
                mode,
                "--mount-path",
                disk.to_str().expect("utf-8"),
                "--output-dir",
                out_dir.to_str().expect("utf-8"),
                "--qualys-url",
                "***",
                "--auth-token",
                "***",
            ]
        );
        let home = PathBuf::from(b.probe(&format!("home-{mode}")).trim());
        assert!(home.starts_with(b.path("cache")), "cache dir {home:?}");
        assert!(!home.exists(), "cache dir {home:?} left behind");
        homes.push(home);
    }
    assert_ne!(homes[0], homes[1], "a fresh cache dir per scan");
    assert!(!log_text().contains("tok-7f3a9c1e"), "token in the log");
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    struct Case {
        name: &'static str,
        /// `trap '' TERM` is inherited by the children: only SIGKILL stops them.
        body: String,
        grace_secs: u64,
        min_ms: u64,
        max_ms: u64,
    }
    let cases = [
        Case {
            name: "honours SIGTERM",
            body: format!("{GROUP}; wait"),
            grace_secs: 10,
            min_ms: 1000,
            max_ms: 5000,
        },
        Case {
            name: "ignores SIGTERM",
            body: format!("trap '' TERM; {GROUP}; wait"),
            grace_secs: 1,
            min_ms: 2000,
            max_ms: 6000,
        },
    ];
    for c in cases {
        let b = Bench::new();
        let scanner = b.script("bin/scan", &c.body);
        let p = Profile {
            timeout_secs: 1,
            kill_grace_secs: c.grace_secs,
            ..profile(&[scanner.to_str().expect("utf-8")])
        };
        let out = run_ok(c.name, &p, &b.ctx()).await;
        assert!(out.timed_out && !out.cancelled, "case {}", c.name);
        assert_eq!(out.class, Class::Retryable, "case {}", c.name);
        assert!(out.signal.is_some(), "case {}: {out:?}", c.name);
        assert!(
            (c.min_ms..c.max_ms).contains(&out.elapsed_ms),
            "case {}: {} ms",
            c.name,
            out.elapsed_ms
        );
        assert_group_gone(&b, c.name);
    }
}

#[tokio::test]
async fn cancel_kills_the_whole_group() {
    let b = Bench::new();
    let scanner = b.script("bin/scan", &format!("{GROUP}; wait"));
    let p = profile(&[scanner.to_str().expect("utf-8")]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let ready = b.path("probe/bg.pid");
    tokio::spawn(async move {
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    });
    let out = run("cancel", &p, &b.ctx(), cancel).await.expect("run");
    assert!(out.cancelled && !out.timed_out);
    assert_eq!(out.class, Class::Retryable);
    assert!(out.elapsed_ms < 5000, "{} ms", out.elapsed_ms);
    assert_group_gone(&b, "cancel");
}

#[tokio::test]
async fn leftovers_of_a_finished_scanner_are_stopped() {
    let b = Bench::new();
    // The background child keeps stdout open: without stopping it the run would never end.
    let scanner = b.script("bin/scan", &format!("{GROUP}; exit 0"));
    let p = profile(&[scanner.to_str().expect("utf-8")]);
    let started = Instant::now();
    let out = run_ok("leftover", &p, &b.ctx()).await;
    assert_eq!(out.class, Class::Success);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_group_gone(&b, "leftover");
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Peak RSS belongs to the whole process: the flood runs in a test process of its own, where no
/// other test (nor a failing test's backtrace) allocates meanwhile.
#[test]
fn output_flood_is_capped() {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "flood_alone",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the flood alone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run alone by output_flood_is_capped"]
async fn flood_alone() {
    const FLOOD: u64 = 50 * 1024 * 1024;
    const CAP: u64 = 4096;
    let b = Bench::new();
    let scanner = b.script(
        "bin/scan",
        &format!(
            "yes 0123456789abcdef | head -c {FLOOD}\nhead -c 1048576 /dev/zero | tr '\\0' x >&2"
        ),
    );
    let p = Profile {
        log_cap_bytes: CAP,
        ..profile(&[scanner.to_str().expect("utf-8")])
    };
    let hwm_before = vm_hwm_kib();
    let started = Instant::now();
    let out = run_ok("flood", &p, &b.ctx()).await;
    let secs = started.elapsed().as_secs_f64();
    let hwm_growth_kib = vm_hwm_kib().saturating_sub(hwm_before);
    println!(
        "flood: {} MiB in {secs:.2} s ({:.0} MiB/s), VmHWM growth {hwm_growth_kib} KiB",
        FLOOD >> 20,
        (FLOOD >> 20) as f64 / secs
    );
    assert_eq!(out.class, Class::Success);
    assert_eq!((out.stdout_bytes, out.stderr_bytes), (FLOOD, 1024 * 1024));
    let line = b"0123456789abcdef\n";
    let want_tail: String = (FLOOD - CAP..FLOOD)
        .map(|i| char::from(line[usize::try_from(i % 17).expect("small")]))
        .collect();
    assert_eq!(out.stdout_tail, want_tail, "the last {CAP} bytes");
    assert_eq!(out.stderr_tail, "x".repeat(4096));
    assert!(
        hwm_growth_kib < 32 * 1024,
        "peak RSS grew by {hwm_growth_kib} KiB"
    );
    let log = log_text();
    let logged = log
        .lines()
        .filter(|l| l.contains("0123456789abcdef"))
        .count();
    assert!(
        logged > 0 && logged <= 4096 / 17,
        "{logged} flood lines logged"
    );
    assert!(
        !log.contains(&"x".repeat(4097)),
        "an over-long line was logged whole"
    );
}

#[tokio::test]
async fn secret_from_a_file_reaches_only_the_scanner() {
    let b = Bench::new();
    let mut raw = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut raw,
    )
    .expect("random");
    let secret = hex::encode(raw);
    let secret_file = b.path("token");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
    let scanner = b.script(
        "bin/scan",
        r#"printf %s "$API_TOKEN" | sha256sum | cut -d' ' -f1 > @PROBE@/hash
echo "token=$API_TOKEN"
echo "stderr $API_TOKEN" >&2
echo '{}' > result.json"#,
    );
    let p = Profile {
        env: BTreeMap::from([("API_TOKEN".to_owned(), EnvSource::FromFile(secret_file))]),
        ..profile(&[scanner.to_str().expect("utf-8")])
    };
    let out = run_ok("secret", &p, &b.ctx()).await;
    assert_eq!(out.class, Class::Success);
    assert_eq!(
        b.probe("hash").trim(),
        hex::encode(Sha256::digest(secret.as_bytes()))
    );
    let json = serde_json::to_string(&out).expect("json");
    assert!(!json.contains(&secret), "secret in the outcome: {json}");
    assert_eq!(out.stdout_tail, "token=***\n");
    assert_eq!(out.stderr_tail, "stderr ***\n");
    let log = log_text();
    assert!(!log.contains(&secret), "secret in the log");
    assert!(log.contains("token=***"), "redacted line not logged");
}

#[tokio::test]
async fn program_on_the_scanned_disk_is_refused() {
    let b = Bench::new();
    let evil = b.script("disk/bin/evil", "touch @PROBE@/ran");
    std::os::unix::fs::symlink(&evil, b.path("bin/innocent")).expect("symlink");
    struct Case {
        name: &'static str,
        program: String,
        search_path: Vec<PathBuf>,
    }
    let cases = [
        Case {
            name: "absolute path into the disk",
            program: evil.display().to_string(),
            search_path: vec!["/usr/bin".into()],
        },
        Case {
            name: "symlink into the disk",
            program: b.path("bin/innocent").display().to_string(),
            search_path: vec!["/usr/bin".into()],
        },
        Case {
            name: "bare name found through a symlink",
            program: "innocent".into(),
            search_path: vec![b.path("bin"), "/usr/bin".into()],
        },
        Case {
            name: "search path on the disk",
            program: "sh".into(),
            search_path: vec![b.path("disk/bin"), "/bin".into()],
        },
    ];
    for c in cases {
        let ctx = ScanContext {
            search_path: c.search_path,
            ..b.ctx()
        };
        let err = run(
            c.name,
            &profile(&[&c.program]),
            &ctx,
            CancellationToken::new(),
        )
        .await
        .expect_err(c.name);
        assert_eq!(err.kind(), "on_scanned_disk", "case {}: {err}", c.name);
        assert!(!b.path("probe/ran").exists(), "case {}: it ran", c.name);
    }
}

#[tokio::test]
async fn refusals_are_clear_errors() {
    let b = Bench::new();
    let no_mount = ScanContext {
        mount: None,
        ..b.ctx()
    };
    struct Case<'a> {
        name: &'static str,
        profile: Profile,
        ctx: &'a ScanContext,
        kind: &'static str,
        message: &'static str,
    }
    let ctx = b.ctx();
    let cases = [
        Case {
            name: "missing bare program",
            profile: profile(&["snapscan-no-such-scanner"]),
            ctx: &ctx,
            kind: "not_found",
            message:
                "scanner program 'snapscan-no-such-scanner' not found (searched /usr/local/sbin:",
        },
        Case {
            name: "missing absolute program",
            profile: profile(&["/opt/no/such/scanner"]),
            ctx: &ctx,
            kind: "not_found",
            message: "'/opt/no/such/scanner' not found",
        },
        Case {
            name: "relative program",
            profile: profile(&["bin/scan"]),
            ctx: &ctx,
            kind: "profile",
            message: "relative path",
        },
        Case {
            name: "no mount",
            profile: profile(&["true"]),
            ctx: &no_mount,
            kind: "context",
            message: "needs the guest root mounted",
        },
        Case {
            name: "unset secret",
            profile: profile(&["true", "{env:SNAPSCAN_TEST_UNSET_SECRET}"]),
            ctx: &ctx,
            kind: "secret",
            message: "SNAPSCAN_TEST_UNSET_SECRET is not set",
        },
    ];
    for c in cases {
        let err: ScannerError = run(c.name, &c.profile, c.ctx, CancellationToken::new())
            .await
            .expect_err(c.name);
        assert_eq!(err.kind(), c.kind, "case {}: {err}", c.name);
        assert!(
            err.to_string().contains(c.message),
            "case {}: {err}",
            c.name
        );
    }
    // Without needs_mount, no mount is fine.
    let p = Profile {
        needs_mount: false,
        ..profile(&["true"])
    };
    assert_eq!(
        run_ok("no mount needed", &p, &no_mount).await.class,
        Class::Success
    );
}
