//! Scanner profiles: the `[scanner.profiles.NAME]` configuration, the built-in profiles and the
//! argv/env template language.
//!
//! A template is a string with placeholders in braces: `{mount}`, `{output_dir}`, `{cache_dir}`,
//! `{os_family}` (`linux`/`windows`), `{os_id}`, `{snapshot}`, `{instance_id}`, `{disk}`,
//! `{device_name}`, `{job_id}` and `{env:NAME}` (the agent's own environment variable `NAME`, a
//! secret). `{{` and `}}` stand for literal braces. Templates are parsed by
//! [`Profile::validate`], at configuration load time, so an unknown placeholder or a stray brace
//! is a configuration error, never a scan-time surprise.
//!
//! Values that are missing at scan time: `{mount}` and `{output_dir}` are errors (a scanner run
//! against nothing makes no sense); `{cache_dir}` cannot be missing (using it without
//! `cache_dir = true` fails validation); `{env:NAME}` with `NAME` unset is an error (an empty
//! token is never what was meant); every other placeholder renders as the empty string.
//!
//! Secrets (`{env:NAME}`, and `env` entries read `from_env` or `from_file`) are kept apart from
//! their display form: [`Rendered::shown`] has `***` in their place, and only that form is ever
//! logged or stored.
//!
//! Not here: running anything (see [`mod@super::run`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ScannerError;

/// What a secret looks like wherever it would be displayed.
pub const REDACTED: &str = "***";

/// Largest secret file read (`from_file`).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// One external scanner: how to invoke it and how to judge its result.
///
/// Every field has a default, so a profile only states what differs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// The argv template; `command[0]` is the program: an absolute path, or a bare name looked
    /// up in the scanner's safe search path (never a relative path, never a placeholder).
    /// Default: empty (the built-in `command` profile must be given one).
    pub command: Vec<String>,
    /// The argv template used instead of `command` when the detected OS family is Windows.
    /// Default: none (`command` is used for every OS).
    pub command_windows: Option<Vec<String>>,
    /// Extra environment variables of the scanner (the environment is otherwise clean: see
    /// [`mod@super::run`]). `PATH` cannot be set. Default: none.
    pub env: BTreeMap<String, EnvSource>,
    /// Longest the scanner may run before its process group is terminated (the result is then
    /// retryable). Default 3600.
    pub timeout_secs: u64,
    /// Time between SIGTERM and SIGKILL when the scanner is stopped. Default 10.
    pub kill_grace_secs: u64,
    /// How exit codes are classified.
    pub exit_codes: ExitCodes,
    /// Which files of the output directory are results: patterns relative to it, where `*` and
    /// `?` match within one path component and `**` matches any number of components
    /// (`*.json`, `changelist.db`, `**/*.json`). Default: empty, meaning every regular file.
    pub outputs: Vec<String>,
    /// Give the scanner its own fresh cache directory for each scan (`{cache_dir}`, also its
    /// `HOME`), removed afterwards. Default false.
    pub cache_dir: bool,
    /// Bytes of stdout, and separately of stderr, written to the log; the last this many bytes
    /// of each are also kept for the report. Default 65536.
    pub log_cap_bytes: u64,
    /// The scanner needs the guest root mounted (`{mount}`); without a mount the run is refused.
    /// Default true.
    pub needs_mount: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            command: Vec::new(),
            command_windows: None,
            env: BTreeMap::new(),
            timeout_secs: 3600,
            kill_grace_secs: 10,
            exit_codes: ExitCodes::default(),
            outputs: Vec::new(),
            cache_dir: false,
            log_cap_bytes: 64 * 1024,
            needs_mount: true,
        }
    }
}

/// Where the value of one environment variable of the scanner comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EnvSource {
    /// A template (placeholders allowed); not a secret unless it uses `{env:NAME}`.
    Value(String),
    /// The agent's own environment variable of this name (a secret).
    FromEnv(String),
    /// The contents of this file, without one trailing newline (a secret). At most 64 KiB.
    FromFile(PathBuf),
}

/// Exit-code classes. A code in none of the lists is fatal; so is death by a signal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExitCodes {
    /// Complete success. Default `[0]`.
    pub success: Vec<i32>,
    /// The scan ran but not everything was covered; its outputs are still results. Default none.
    pub partial: Vec<i32>,
    /// A transient failure: running again may succeed. Default none.
    pub retryable: Vec<i32>,
}

impl Default for ExitCodes {
    fn default() -> Self {
        ExitCodes {
            success: vec![0],
            partial: Vec::new(),
            retryable: Vec::new(),
        }
    }
}

/// The profiles that exist without configuration; configured profiles of the same name replace
/// them.
///
/// - `qscanner`: Qualys qscanner's snapshot mode. **The invocation is an assumption** taken from
///   the design notes until Qualys confirms it:
///   `qscanner vmsnapshot --mount-path {mount} --output-dir {output_dir}
///   --qualys-url {env:QUALYS_URL} --auth-token {env:QUALYS_AUTH_TOKEN}` (`winvmsnapshot` for
///   Windows). The URL and token come from the agent's environment (`QUALYS_URL`,
///   `QUALYS_AUTH_TOKEN`, e.g. from a systemd `EnvironmentFile=`); both are redacted wherever the
///   command line is shown. Because the assumed syntax puts the token on the command line, it is
///   visible in `/proc/PID/cmdline` on the scanner VM while the scan runs. Exit 0 is success, 40
///   partial. It gets a fresh cache directory per scan through `HOME` and `XDG_CACHE_HOME`: no
///   `--cache-dir` flag is passed because none is documented. Every file it writes is a result.
/// - `command`: any program; its `command` must be configured (it does not validate until then).
pub fn builtin_profiles() -> BTreeMap<String, Profile> {
    let qscanner_argv = |mode: &str| -> Vec<String> {
        [
            "qscanner",
            mode,
            "--mount-path",
            "{mount}",
            "--output-dir",
            "{output_dir}",
            "--qualys-url",
            "{env:QUALYS_URL}",
            "--auth-token",
            "{env:QUALYS_AUTH_TOKEN}",
        ]
        .map(String::from)
        .to_vec()
    };
    let qscanner = Profile {
        command: qscanner_argv("vmsnapshot"),
        command_windows: Some(qscanner_argv("winvmsnapshot")),
        env: BTreeMap::from([(
            "XDG_CACHE_HOME".to_owned(),
            EnvSource::Value("{cache_dir}".to_owned()),
        )]),
        exit_codes: ExitCodes {
            success: vec![0],
            partial: vec![40],
            retryable: Vec::new(),
        },
        cache_dir: true,
        ..Profile::default()
    };
    BTreeMap::from([
        ("qscanner".to_owned(), qscanner),
        ("command".to_owned(), Profile::default()),
    ])
}

impl Profile {
    /// Check everything that can be checked without a disk: templates parse, placeholders are
    /// known, the program is a literal absolute path or bare name, `{cache_dir}` is only used
    /// with `cache_dir = true`, exit-code classes are disjoint, environment names are sane and
    /// output patterns stay inside the output directory.
    ///
    /// # Errors
    ///
    /// [`ScannerError::Profile`] describing the first problem.
    pub fn validate(&self) -> Result<(), ScannerError> {
        let bad = |msg: String| Err(ScannerError::Profile(msg));
        let mut argvs = vec![("command", &self.command)];
        if let Some(w) = &self.command_windows {
            argvs.push(("command_windows", w));
        }
        for (field, argv) in argvs {
            let Some(program) = argv.first() else {
                return bad(format!(
                    "{field} is empty: set the program and its arguments"
                ));
            };
            check_program(program).map_err(|m| ScannerError::Profile(format!("{field}: {m}")))?;
            for arg in argv {
                self.check_template(arg)
                    .map_err(|m| ScannerError::Profile(format!("{field}: {m}")))?;
            }
        }
        for (name, source) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return bad(format!("env: invalid variable name '{name}'"));
            }
            if name == "PATH" {
                return bad("env: PATH cannot be set (the scanner's PATH is fixed)".to_owned());
            }
            match source {
                EnvSource::Value(t) => self
                    .check_template(t)
                    .map_err(|m| ScannerError::Profile(format!("env {name}: {m}")))?,
                EnvSource::FromEnv(var) if !valid_env_name(var) => {
                    return bad(format!("env {name}: invalid from_env name '{var}'"));
                }
                EnvSource::FromFile(p) if !p.is_absolute() => {
                    return bad(format!(
                        "env {name}: from_file '{}' is not an absolute path",
                        p.display()
                    ));
                }
                EnvSource::FromEnv(_) | EnvSource::FromFile(_) => {}
            }
        }
        if self.timeout_secs == 0 {
            return bad("timeout_secs must be at least 1".to_owned());
        }
        let codes = &self.exit_codes;
        if codes.success.is_empty() {
            return bad("exit_codes.success is empty: every run would be fatal".to_owned());
        }
        for (i, a) in [&codes.success, &codes.partial, &codes.retryable]
            .iter()
            .enumerate()
        {
            for b in [&codes.success, &codes.partial, &codes.retryable]
                .iter()
                .skip(i.saturating_add(1))
            {
                if let Some(c) = a.iter().find(|c| b.contains(c)) {
                    return bad(format!("exit code {c} is in two exit_codes classes"));
                }
            }
        }
        for p in &self.outputs {
            let path = Path::new(p);
            if p.is_empty()
                || path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return bad(format!(
                    "outputs: '{p}' must be a non-empty pattern inside the output directory"
                ));
            }
        }
        Ok(())
    }

    /// The argv template for `os_family`.
    pub(crate) fn argv_for(&self, windows: bool) -> &[String] {
        match (&self.command_windows, windows) {
            (Some(w), true) => w,
            _ => &self.command,
        }
    }

    /// The agent's environment variables the profile reads: its `{env:NAME}` placeholders and
    /// `from_env` sources, sorted, each once.
    pub fn env_names(&self) -> Vec<String> {
        let mut templates: Vec<&String> = self.command.iter().collect();
        templates.extend(self.command_windows.iter().flatten());
        let mut names = Vec::new();
        for source in self.env.values() {
            match source {
                EnvSource::Value(t) => templates.push(t),
                EnvSource::FromEnv(var) => names.push(var.clone()),
                EnvSource::FromFile(_) => {}
            }
        }
        for t in templates {
            // A template that does not parse uses no variable; validate() reports it.
            for piece in parse(t).unwrap_or_default() {
                if let Piece::Env(var) = piece {
                    names.push(var);
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    fn check_template(&self, t: &str) -> Result<(), String> {
        let pieces = parse(t)?;
        if !self.cache_dir && pieces.contains(&Piece::Var(Var::CacheDir)) {
            return Err(format!(
                "'{t}' uses {{cache_dir}} but the profile does not set cache_dir = true"
            ));
        }
        Ok(())
    }
}

/// A program must be a literal: a bare name or an absolute path.
fn check_program(program: &str) -> Result<(), String> {
    let pieces = parse(program)?;
    if program.is_empty() || pieces.iter().any(|p| !matches!(p, Piece::Lit(_))) {
        return Err(format!(
            "the program '{program}' must be a literal name or absolute path"
        ));
    }
    if program.contains('/') && !Path::new(program).is_absolute() {
        return Err(format!(
            "the program '{program}' is a relative path: use an absolute path or a bare name"
        ));
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A named placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    Mount,
    OutputDir,
    CacheDir,
    OsFamily,
    OsId,
    Snapshot,
    InstanceId,
    Disk,
    DeviceName,
    JobId,
}

impl Var {
    const ALL: [(&'static str, Var); 10] = [
        ("mount", Var::Mount),
        ("output_dir", Var::OutputDir),
        ("cache_dir", Var::CacheDir),
        ("os_family", Var::OsFamily),
        ("os_id", Var::OsId),
        ("snapshot", Var::Snapshot),
        ("instance_id", Var::InstanceId),
        ("disk", Var::Disk),
        ("device_name", Var::DeviceName),
        ("job_id", Var::JobId),
    ];

    fn name(self) -> &'static str {
        Var::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
    Env(String),
}

fn parse(t: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            lit.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            lit.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!("'{t}': unmatched '}}' (write '}}}}' for a brace)"));
        } else {
            let Some(end) = tail.find('}') else {
                return Err(format!("'{t}': unclosed '{{' (write '{{{{' for a brace)"));
            };
            let name = &tail[1..end];
            let piece = if let Some(var) = name.strip_prefix("env:") {
                if !valid_env_name(var) {
                    return Err(format!("'{t}': invalid variable name in '{{{name}}}'"));
                }
                Piece::Env(var.to_owned())
            } else if let Some((_, v)) = Var::ALL.iter().find(|(n, _)| *n == name) {
                Piece::Var(*v)
            } else {
                let known: Vec<String> = Var::ALL.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                return Err(format!(
                    "'{t}': unknown placeholder '{{{name}}}' (known: {}, {{env:NAME}})",
                    known.join(", ")
                ));
            };
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
            rest = &tail[end.saturating_add(1)..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

/// A rendered template: the real value and the form that may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// What the scanner gets.
    pub value: String,
    /// What logs and reports get: every secret replaced by [`REDACTED`].
    pub shown: String,
    /// The secrets that went into `value`.
    pub secrets: Vec<String>,
}

/// The values placeholders take for one scan.
pub(crate) struct Values<'a> {
    /// Placeholder → value (`None`: unknown for this scan).
    pub vars: &'a dyn Fn(Var) -> Option<String>,
    /// The agent's environment.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Render a template that [`Profile::validate`] accepted.
pub(crate) fn render(t: &str, values: &Values<'_>) -> Result<Rendered, ScannerError> {
    let pieces = parse(t).map_err(ScannerError::Profile)?;
    let mut out = Rendered {
        value: String::new(),
        shown: String::new(),
        secrets: Vec::new(),
    };
    for piece in pieces {
        match piece {
            Piece::Lit(s) => {
                out.value.push_str(&s);
                out.shown.push_str(&s);
            }
            Piece::Var(v) => {
                let value = match ((values.vars)(v), v) {
                    (Some(s), _) => s,
                    (None, Var::Mount | Var::OutputDir | Var::CacheDir) => {
                        return Err(ScannerError::Context(format!(
                            "{{{}}} has no value for this scan",
                            v.name()
                        )))
                    }
                    (None, _) => String::new(),
                };
                out.value.push_str(&value);
                out.shown.push_str(&value);
            }
            Piece::Env(name) => {
                let secret = (values.env)(&name).ok_or_else(|| ScannerError::Secret {
                    name: format!("{{env:{name}}}"),
                    reason: format!("environment variable {name} is not set"),
                })?;
                out.value.push_str(&secret);
                out.shown.push_str(REDACTED);
                out.secrets.push(secret);
            }
        }
    }
    Ok(out)
}

/// The value of one `env` entry of a profile.
pub(crate) fn env_value(
    name: &str,
    source: &EnvSource,
    values: &Values<'_>,
) -> Result<Rendered, ScannerError> {
    let secret = |value: String| Rendered {
        shown: REDACTED.to_owned(),
        secrets: vec![value.clone()],
        value,
    };
    match source {
        EnvSource::Value(t) => render(t, values),
        EnvSource::FromEnv(var) => {
            (values.env)(var)
                .map(secret)
                .ok_or_else(|| ScannerError::Secret {
                    name: name.to_owned(),
                    reason: format!("environment variable {var} is not set"),
                })
        }
        EnvSource::FromFile(path) => {
            read_secret_file(path)
                .map(secret)
                .map_err(|reason| ScannerError::Secret {
                    name: name.to_owned(),
                    reason,
                })
        }
    }
}

/// A secret file's contents without one trailing newline. Errors never include the contents.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_SECRET_FILE_BYTES) {
        return Err(format!(
            "'{}' is larger than {MAX_SECRET_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("'{}' is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() || text.contains('\0') {
        return Err(format!("'{}' is empty or holds a NUL byte", path.display()));
    }
    Ok(text)
}

/// Whether `rel` (a relative path with `/` separators) matches `pattern`.
pub(crate) fn matches_output(pattern: &str, rel: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let path: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    match_components(&pat, &path)
}

fn match_components(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_components(rest, &path[skip..])),
        Some((p, rest)) => path.split_first().is_some_and(|(c, tail)| {
            match_name(p.as_bytes(), c.as_bytes()) && match_components(rest, tail)
        }),
    }
}

/// `*` and `?` within one path component.
fn match_name(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|skip| match_name(rest, &s[skip..])),
        Some((b'?', rest)) => s
            .split_first()
            .is_some_and(|(_, tail)| match_name(rest, tail)),
        Some((c, rest)) => s
            .split_first()
            .is_some_and(|(d, tail)| c == d && match_name(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var_value(v: Var) -> Option<String> {
        match v {
            Var::Mount => Some("/run/snapscan/m1".into()),
            Var::OutputDir => Some("/out".into()),
            Var::CacheDir => Some("/cache/q-1".into()),
            Var::OsFamily => Some("linux".into()),
            Var::OsId => Some("debian".into()),
            Var::Snapshot => Some("snap-1".into()),
            Var::InstanceId => Some("1234".into()),
            Var::Disk => Some("/dev/sdb".into()),
            Var::DeviceName => None,
            Var::JobId => Some("job-7".into()),
        }
    }

    fn env_lookup(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cr3t".to_owned())
    }

    #[test]
    fn rendering() {
        struct Case {
            name: &'static str,
            template: &'static str,
            /// `Ok((value, shown))` or `Err(error kind)`.
            want: Result<(&'static str, &'static str), &'static str>,
        }
        let cases = [
            Case {
                name: "literal",
                template: "vmsnapshot",
                want: Ok(("vmsnapshot", "vmsnapshot")),
            },
            Case {
                name: "mount",
                template: "{mount}",
                want: Ok(("/run/snapscan/m1", "/run/snapscan/m1")),
            },
            Case {
                name: "output_dir",
                template: "--out={output_dir}",
                want: Ok(("--out=/out", "--out=/out")),
            },
            Case {
                name: "cache_dir",
                template: "{cache_dir}",
                want: Ok(("/cache/q-1", "/cache/q-1")),
            },
            Case {
                name: "os_family",
                template: "{os_family}",
                want: Ok(("linux", "linux")),
            },
            Case {
                name: "os_id",
                template: "{os_id}",
                want: Ok(("debian", "debian")),
            },
            Case {
                name: "snapshot",
                template: "{snapshot}",
                want: Ok(("snap-1", "snap-1")),
            },
            Case {
                name: "instance_id",
                template: "{instance_id}",
                want: Ok(("1234", "1234")),
            },
            Case {
                name: "disk",
                template: "{disk}",
                want: Ok(("/dev/sdb", "/dev/sdb")),
            },
            Case {
                name: "missing device_name is empty",
                template: "[{device_name}]",
                want: Ok(("[]", "[]")),
            },
            Case {
                name: "job_id",
                template: "{job_id}",
                want: Ok(("job-7", "job-7")),
            },
            Case {
                name: "secret redacted",
                template: "--token={env:TOKEN}",
                want: Ok(("--token=s3cr3t", "--token=***")),
            },
            Case {
                name: "several",
                template: "{os_id}-{job_id}.json",
                want: Ok(("debian-job-7.json", "debian-job-7.json")),
            },
            Case {
                name: "escapes",
                template: "{{mount}} }}{{",
                want: Ok(("{mount} }{", "{mount} }{")),
            },
            Case {
                name: "escape next to placeholder",
                template: "{{{os_id}}}",
                want: Ok(("{debian}", "{debian}")),
            },
            Case {
                name: "unset env var",
                template: "{env:NOPE}",
                want: Err("secret"),
            },
            Case {
                name: "unknown placeholder",
                template: "{mnt}",
                want: Err("profile"),
            },
            Case {
                name: "unclosed",
                template: "{mount",
                want: Err("profile"),
            },
            Case {
                name: "stray close",
                template: "a}b",
                want: Err("profile"),
            },
            Case {
                name: "bad env name",
                template: "{env:1X}",
                want: Err("profile"),
            },
        ];
        let values = Values {
            vars: &var_value,
            env: &env_lookup,
        };
        for c in cases {
            let got = render(c.template, &values);
            match (&got, c.want) {
                (Ok(r), Ok((value, shown))) => {
                    assert_eq!(
                        (r.value.as_str(), r.shown.as_str()),
                        (value, shown),
                        "case {}",
                        c.name
                    );
                    assert!(!r.shown.contains("s3cr3t"), "case {}", c.name);
                }
                (Err(e), Err(kind)) => assert_eq!(e.kind(), kind, "case {}: {e}", c.name),
                _ => panic!("case {}: got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn missing_mount_or_output_dir_is_an_error() {
        let none = |_: Var| None;
        let values = Values {
            vars: &none,
            env: &env_lookup,
        };
        for (name, t) in [("mount", "{mount}"), ("output_dir", "x{output_dir}")] {
            let err = render(t, &values).expect_err(name);
            assert_eq!(err.kind(), "context", "case {name}");
        }
        assert_eq!(render("{os_id}", &values).expect("empty os_id").value, "");
    }

    #[test]
    fn env_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let values = Values {
            vars: &var_value,
            env: &env_lookup,
        };
        struct Case {
            name: &'static str,
            source: EnvSource,
            want: Result<(&'static str, &'static str), &'static str>,
        }
        let cases = [
            Case {
                name: "plain value",
                source: EnvSource::Value("{os_id}".into()),
                want: Ok(("debian", "debian")),
            },
            Case {
                name: "from env",
                source: EnvSource::FromEnv("TOKEN".into()),
                want: Ok(("s3cr3t", REDACTED)),
            },
            Case {
                name: "from env unset",
                source: EnvSource::FromEnv("NOPE".into()),
                want: Err("secret"),
            },
            Case {
                name: "from file, newline trimmed",
                source: EnvSource::FromFile(file.clone()),
                want: Ok(("from-file", REDACTED)),
            },
            Case {
                name: "empty file",
                source: EnvSource::FromFile(empty.clone()),
                want: Err("secret"),
            },
            Case {
                name: "missing file",
                source: EnvSource::FromFile(dir.path().join("absent")),
                want: Err("secret"),
            },
        ];
        for c in cases {
            let got = env_value("X", &c.source, &values);
            match (&got, c.want) {
                (Ok(r), Ok((value, shown))) => {
                    assert_eq!(
                        (r.value.as_str(), r.shown.as_str()),
                        (value, shown),
                        "case {}",
                        c.name
                    )
                }
                (Err(e), Err(kind)) => {
                    assert_eq!(e.kind(), kind, "case {}: {e}", c.name);
                    assert!(!e.to_string().contains("s3cr3t"), "case {}", c.name);
                }
                _ => panic!("case {}: got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn validation() {
        fn p(command: &[&str]) -> Profile {
            Profile {
                command: command.iter().map(|s| s.to_string()).collect(),
                ..Profile::default()
            }
        }
        struct Case {
            name: &'static str,
            profile: Profile,
            /// `None`: valid; else a substring of the error.
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "bare name",
                profile: p(&["scan", "{mount}", "{env:TOKEN}"]),
                want: None,
            },
            Case {
                name: "absolute program",
                profile: p(&["/opt/q/scan", "{{x}}"]),
                want: None,
            },
            Case {
                name: "empty command",
                profile: p(&[]),
                want: Some("command is empty"),
            },
            Case {
                name: "relative program",
                profile: p(&["bin/scan"]),
                want: Some("relative path"),
            },
            Case {
                name: "placeholder program",
                profile: p(&["{mount}/bin/sh"]),
                want: Some("literal"),
            },
            Case {
                name: "unknown placeholder",
                profile: p(&["scan", "--x={nope}"]),
                want: Some("unknown placeholder '{nope}'"),
            },
            Case {
                name: "cache_dir not enabled",
                profile: p(&["scan", "{cache_dir}"]),
                want: Some("cache_dir = true"),
            },
            Case {
                name: "cache_dir enabled",
                profile: Profile {
                    cache_dir: true,
                    ..p(&["scan", "{cache_dir}"])
                },
                want: None,
            },
            Case {
                name: "bad windows command",
                profile: Profile {
                    command_windows: Some(vec!["scan".into(), "{x}".into()]),
                    ..p(&["scan"])
                },
                want: Some("command_windows"),
            },
            Case {
                name: "PATH in env",
                profile: Profile {
                    env: BTreeMap::from([("PATH".into(), EnvSource::Value("/tmp".into()))]),
                    ..p(&["scan"])
                },
                want: Some("PATH cannot be set"),
            },
            Case {
                name: "bad env template",
                profile: Profile {
                    env: BTreeMap::from([("A".into(), EnvSource::Value("{bad}".into()))]),
                    ..p(&["scan"])
                },
                want: Some("env A"),
            },
            Case {
                name: "relative secret file",
                profile: Profile {
                    env: BTreeMap::from([("A".into(), EnvSource::FromFile("token".into()))]),
                    ..p(&["scan"])
                },
                want: Some("not an absolute path"),
            },
            Case {
                name: "overlapping exit codes",
                profile: Profile {
                    exit_codes: ExitCodes {
                        success: vec![0],
                        partial: vec![3],
                        retryable: vec![3],
                    },
                    ..p(&["scan"])
                },
                want: Some("exit code 3"),
            },
            Case {
                name: "no success code",
                profile: Profile {
                    exit_codes: ExitCodes {
                        success: vec![],
                        partial: vec![],
                        retryable: vec![],
                    },
                    ..p(&["scan"])
                },
                want: Some("success is empty"),
            },
            Case {
                name: "zero timeout",
                profile: Profile {
                    timeout_secs: 0,
                    ..p(&["scan"])
                },
                want: Some("timeout_secs"),
            },
            Case {
                name: "output escapes",
                profile: Profile {
                    outputs: vec!["../x".into()],
                    ..p(&["scan"])
                },
                want: Some("outputs"),
            },
        ];
        for c in cases {
            let got = c.profile.validate();
            match (&got, c.want) {
                (Ok(()), None) => {}
                (Err(e), Some(sub)) => {
                    assert_eq!(e.kind(), "profile", "case {}", c.name);
                    assert!(e.to_string().contains(sub), "case {}: {e}", c.name);
                }
                _ => panic!("case {}: got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn builtin_profiles_validate() {
        let builtin = builtin_profiles();
        assert_eq!(builtin.keys().collect::<Vec<_>>(), ["command", "qscanner"]);
        let q = &builtin["qscanner"];
        q.validate().expect("qscanner validates");
        assert_eq!(q.argv_for(false)[1], "vmsnapshot");
        assert_eq!(q.argv_for(true)[1], "winvmsnapshot");
        assert_eq!(q.exit_codes.partial, [40]);
        let err = builtin["command"]
            .validate()
            .expect_err("command needs a command");
        assert!(err.to_string().contains("command is empty"), "{err}");
    }

    #[test]
    fn profile_from_toml_through_the_config_crate() {
        struct Case {
            name: &'static str,
            toml: &'static str,
            /// `None`: parses; else a substring of the error.
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "full",
                toml: r#"
                    command = ["/opt/scan", "{mount}"]
                    command_windows = ["/opt/scan", "--win", "{mount}"]
                    timeout_secs = 60
                    kill_grace_secs = 2
                    outputs = ["*.json"]
                    cache_dir = true
                    log_cap_bytes = 100
                    needs_mount = false
                    exit_codes = { success = [0], partial = [40], retryable = [75] }
                    [env]
                    PLAIN = { value = "{os_id}" }
                    API_TOKEN = { from_file = "/etc/snapscan/token" }
                    Mixed_Case = { from_env = "QUALYS_AUTH_TOKEN" }
                "#,
                want: None,
            },
            Case {
                name: "defaults",
                toml: "command = [\"scan\"]",
                want: None,
            },
            Case {
                name: "unknown key",
                toml: "command = [\"scan\"]\ntimeout = 5",
                want: Some("unknown field"),
            },
            Case {
                name: "unknown env source",
                toml: "command = [\"scan\"]\n[env]\nA = { from_secret = \"x\" }",
                want: Some("from_secret"),
            },
        ];
        for c in cases {
            let got = config::Config::builder()
                .add_source(config::File::from_str(c.toml, config::FileFormat::Toml))
                .build()
                .and_then(|cfg| cfg.try_deserialize::<Profile>())
                .map_err(|e| e.to_string());
            match (&got, c.want) {
                (Ok(p), None) => {
                    p.validate().expect(c.name);
                    if c.name == "full" {
                        // The config crate must keep the case of environment names.
                        assert_eq!(
                            p.env.keys().collect::<Vec<_>>(),
                            ["API_TOKEN", "Mixed_Case", "PLAIN"]
                        );
                        assert_eq!(
                            p.env["API_TOKEN"],
                            EnvSource::FromFile("/etc/snapscan/token".into())
                        );
                        assert_eq!(
                            (p.needs_mount, p.exit_codes.retryable.as_slice()),
                            (false, &[75][..])
                        );
                    }
                }
                (Err(e), Some(sub)) => assert!(e.contains(sub), "case {}: {e}", c.name),
                _ => panic!("case {}: got {got:?}", c.name),
            }
        }
        assert_eq!(Profile::default().timeout_secs, 3600);
    }

    #[test]
    fn output_patterns() {
        let cases = [
            ("exact", "changelist.db", "changelist.db", true),
            (
                "exact mismatch",
                "changelist.db",
                "changelist.db.tmp",
                false,
            ),
            ("star", "*.json", "a.json", true),
            ("star stays in component", "*.json", "sub/a.json", false),
            ("star in subdir", "sub/*.json", "sub/a.json", true),
            ("question mark", "part-?.bin", "part-3.bin", true),
            ("question mark one char", "part-?.bin", "part-10.bin", false),
            ("double star any depth", "**/*.json", "a/b/c.json", true),
            ("double star zero depth", "**/*.json", "c.json", true),
            ("star matches empty", "*.json", ".json", true),
        ];
        for (name, pattern, path, want) in cases {
            assert_eq!(matches_output(pattern, path), want, "case {name}");
        }
    }
}
