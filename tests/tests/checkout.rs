//! What a fresh checkout gives a new user before any scan: the test command
//! (`scripts/test-all.sh`) installs every tool the tests run, pins what it builds, makes a missing
//! tool a failure under CI; `.gitignore` covers what the quick start writes; the README has the
//! sections a first run needs.
//!
//! Not here: that the README's commands work (`tests/tests/image.rs` runs its `packer validate`,
//! every other suite runs the commands themselves).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The Debian packages `scripts/test-all.sh` installs (the `apt_install` list and the explicit
/// `apt-get install` of Node.js).
fn installed_by_test_command() -> BTreeSet<String> {
    let script = read("scripts/test-all.sh");
    let mut packages = BTreeSet::new();
    let mut in_list = false;
    for line in script.lines() {
        let line = line.trim();
        let words = if let Some(rest) = line.strip_prefix("apt_install ") {
            in_list = true;
            rest
        } else if in_list {
            line
        } else if let Some(at) = line.find("apt-get install") {
            &line[at..]
        } else {
            continue;
        };
        in_list = in_list && line.ends_with('\\');
        packages.extend(
            words
                .split_whitespace()
                .filter(|w| {
                    w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                })
                .filter(|w| !w.starts_with('-') && !["apt-get", "install"].contains(w))
                .map(str::to_owned),
        );
    }
    packages
}

/// Every program the tests run by name (a string literal given to `Command::new`, `tool` or `cmd`).
fn programs_the_tests_run() -> BTreeSet<String> {
    let mut programs = BTreeSet::new();
    let mut dirs = vec![repo().join("tests/src"), repo().join("tests/tests")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read tests dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            for opener in ["Command::new(\"", "tool(\"", "cmd(\""] {
                for (at, _) in text.match_indices(opener) {
                    let rest = &text[at + opener.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                        .collect();
                    if !name.is_empty() && rest[name.len()..].starts_with('"') {
                        programs.insert(name);
                    }
                }
            }
        }
    }
    programs
}

/// The Debian package that ships `program`, if dpkg knows one.
fn package_of(program: &str) -> Option<String> {
    let out = Command::new("dpkg")
        .args(["-S", &format!("*bin/{program}")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let (package, path) = line.split_once(": ")?;
            // Only the directories on PATH: klibc-utils also ships a `losetup`, `mount`... in
            // /usr/lib/klibc/bin, which nothing runs.
            let on_path = ["/bin", "/sbin", "/usr/bin", "/usr/sbin"]
                .iter()
                .any(|dir| path == format!("{dir}/{program}"));
            (on_path && !line.starts_with("diversion")).then(|| package.to_owned())
        })
}

fn dpkg_field(package: &str, field: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", &format!("-f=${{{field}}}"), package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// In every Debian base system: essential or of priority `required`.
fn in_base_system(package: &str) -> bool {
    dpkg_field(package, "Essential") == "yes" || dpkg_field(package, "Priority") == "required"
}

#[test]
fn the_test_command_installs_every_program_the_tests_run() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        snapscan_tests::skip("no dpkg: not a Debian machine");
        return;
    }
    let listed = installed_by_test_command();
    assert!(listed.contains("e2fsprogs"), "parsed the list: {listed:?}");
    // What a listed package pulls in directly counts as installed too.
    let pulled: BTreeSet<String> = listed
        .iter()
        .flat_map(|p| {
            dpkg_field(p, "Depends")
                .split([',', '|'])
                .filter_map(|d| d.split_whitespace().next().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    for program in programs_the_tests_run() {
        match package_of(&program) {
            Some(package) => {
                if !listed.contains(&package)
                    && !pulled.contains(&package)
                    && !in_base_system(&package)
                {
                    missing.push(format!("{program} (Debian package {package})"));
                }
            }
            None => unknown.push(program),
        }
    }
    assert!(
        missing.is_empty(),
        "scripts/test-all.sh does not install: {missing:?}"
    );
    if !unknown.is_empty() {
        snapscan_tests::skip(&format!("not installed here, so unchecked: {unknown:?}"));
    }
}

#[test]
fn the_test_command_fails_a_test_whose_tool_is_missing_and_pins_what_it_builds() {
    let script = read("scripts/test-all.sh");
    assert!(
        script
            .lines()
            .any(|l| l.trim_start().starts_with("export CI=")),
        "scripts/test-all.sh must export CI so a skipped test fails"
    );
    let install = script
        .lines()
        .find(|l| l.contains("cargo install cargo-fuzz"))
        .expect("scripts/test-all.sh installs cargo-fuzz");
    assert!(
        install.contains("--version"),
        "cargo-fuzz unpinned: {install}"
    );
    assert!(
        install.contains("--locked"),
        "cargo-fuzz unlocked: {install}"
    );
}

#[test]
fn the_quick_start_leaves_nothing_git_would_add() {
    let ignored: Vec<String> = read(".gitignore")
        .lines()
        .map(|l| l.trim().trim_matches('/').to_owned())
        .collect();
    // The default results directory of `snapscan scan` (see `[scan] results_dir`).
    assert!(
        ignored.iter().any(|l| l == "snapscan-results"),
        ".gitignore: {ignored:?}"
    );
}

#[test]
fn the_readme_has_what_a_first_run_needs() {
    let readme = read("README.md");
    let mut in_code = false;
    let headings: Vec<&str> = readme
        .lines()
        .filter(|l| {
            in_code ^= l.starts_with("```");
            !in_code
        })
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    for wanted in ["Install", "Troubleshooting", "Threat model", "Exit codes"] {
        assert!(
            headings.iter().any(|h| h.starts_with(wanted)),
            "README has no \"{wanted}\" section: {headings:?}"
        );
    }
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version"))
        .map(|v| {
            v.trim_start_matches([' ', '='])
                .trim_matches('"')
                .to_owned()
        })
        .expect("Cargo.toml sets rust-version");
    assert!(
        readme.contains(&format!("Rust {msrv}")),
        "README does not name the MSRV (Rust {msrv})"
    );
    for symptom in [
        "loop device",
        "FUSE",
        "metadata server",
        "guest attributes",
        "403",
    ] {
        assert!(
            readme.contains(symptom),
            "README troubleshooting misses \"{symptom}\""
        );
    }
}
