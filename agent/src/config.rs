//! Settings, in layers (the `config` crate): built-in defaults → `/etc/snapscan/agent.toml` →
//! `/etc/snapscan/agent.d/*.toml` (in name order) → `SNAPSCAN_*` environment variables
//! (`SNAPSCAN_UPLOAD__SINK=qflow`: a double underscore separates tables). With `--config FILE`
//! that one file replaces the two `/etc` layers. Every table denies unknown keys, and every
//! `SNAPSCAN_*` variable must name a setting (except [`ENV_EXEMPT`]), so a typo is an error at
//! load time, not a silently ignored setting.
//!
//! The tables belong to the modules that use them; this module only assembles them into
//! [`Config`]: `[scan]` ([`crate::scan::ScanConfig`]), `[scanner]`
//! ([`crate::scanner::ScannerConfig`]), `[upload]` ([`crate::upload::UploadConfig`]), `[agent]`
//! ([`crate::agent::AgentConfig`]), `[metadata]` ([`crate::metadata::MetadataConfig`]),
//! `[compute]` ([`crate::compute::ComputeConfig`]), `[queue]` ([`crate::queue::QueueConfig`]) and
//! `[status]` ([`crate::agent::status::StatusConfig`]). No module imports [`Config`]: each takes
//! its own table. [`load`] validates each table and the chosen scanner's existence;
//! [`Config::preflight`] goes further, before any disk is touched: it sets the upload sink up
//! (URL, token) and checks that the scanner can run (program, secrets).
//!
//! Not here: reading secrets for use (the upload sink and the scanner runner read token files
//! and environment variables themselves, so that a secret never sits in a settings value that
//! could be printed).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::agent::status::StatusConfig;
use crate::agent::AgentConfig;
use crate::compute::ComputeConfig;
use crate::metadata::MetadataConfig;
use crate::queue::QueueConfig;
use crate::scan::ScanConfig;
use crate::scanner::ScannerConfig;
use crate::upload::{Sink, UploadConfig};

/// The system configuration file.
pub const SYSTEM_FILE: &str = "/etc/snapscan/agent.toml";
/// The drop-in directory: `*.toml` files read after [`SYSTEM_FILE`], in name order.
pub const DROP_IN_DIR: &str = "/etc/snapscan/agent.d";
/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "SNAPSCAN";
/// `SNAPSCAN_*` variables that are not settings: the one-shot commands' log filter, and the
/// test suite's own variables (`SNAPSCAN_TEST_CACHE`...).
pub const ENV_EXEMPT: [&str; 2] = ["SNAPSCAN_LOG", "SNAPSCAN_TEST_"];

/// Every setting.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How one disk is scanned.
    pub scan: ScanConfig,
    /// External scanners.
    pub scanner: ScannerConfig,
    /// Where results go.
    pub upload: UploadConfig,
    /// The daemon (`snapscan agent`).
    pub agent: AgentConfig,
    /// The metadata server.
    pub metadata: MetadataConfig,
    /// The Compute Engine API (the agent's own disks).
    pub compute: ComputeConfig,
    /// The Pub/Sub work queue and results topic.
    pub queue: QueueConfig,
    /// Progress in guest attributes.
    pub status: StatusConfig,
}

impl Config {
    /// Check what serde cannot, table by table, and that the default scanner exists.
    ///
    /// # Errors
    ///
    /// The first problem found, naming the table.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.scanner.validate()?;
        self.scanner
            .check(&self.scan.scanner)
            .context("invalid [scan] scanner")?;
        self.scan.validate().context("invalid [scan]")?;
        self.upload.validate().context("invalid [upload]")?;
        self.agent.validate().context("invalid [agent]")?;
        self.metadata.validate().context("invalid [metadata]")?;
        self.compute.validate().context("invalid [compute]")?;
        self.queue.validate().context("invalid [queue]")?;
        self.status.validate().context("invalid [status]")
    }

    /// Everything a scan needs that can be checked before touching a disk: the scanner
    /// (`scanner`, else `[scan] scanner`) can start here, its secrets are set, and the upload
    /// sink (the configured one, or QFlow at `upload_url`) is set up, its token read.
    ///
    /// # Errors
    ///
    /// What is wrong, naming the setting, file, program or variable.
    pub fn preflight(
        &self,
        scanner: Option<&str>,
        upload_url: Option<&str>,
    ) -> anyhow::Result<Sink> {
        let name = scanner.unwrap_or(&self.scan.scanner);
        self.scanner
            .preflight(name, &self.scan.scanner_search_path, true)?;
        Sink::from_config(&self.upload, upload_url).context("cannot set up the upload")
    }
}

/// The settings as TOML, with anything that may be a secret replaced by `***`: the values of
/// scanner environment variables whose name suggests a secret, and credentials in URLs. The
/// built-in scanner profiles are shown too (the argv a configured profile of the same name
/// replaces); one that cannot be used as it is (`command`, until its command is set) is named
/// in a comment.
///
/// # Errors
///
/// The settings cannot be encoded (not expected).
pub fn render_redacted(cfg: &Config) -> anyhow::Result<String> {
    let mut shown = cfg.clone();
    let mut unusable = Vec::new();
    for (name, profile) in cfg.scanner.effective() {
        if profile.validate().is_ok() {
            shown.scanner.profiles.insert(name, profile);
        } else {
            unusable.push(name);
        }
    }
    let mut value = toml::Value::try_from(&shown).context("cannot encode the settings")?;
    redact(&mut value, false);
    let mut text = String::from(
        "# snapscan settings in effect (secrets redacted), built-in scanner profiles included\n",
    );
    text.push_str(&toml::to_string_pretty(&value).context("cannot encode the settings")?);
    for name in unusable {
        text.push_str(&format!(
            "# [scanner.profiles.{name}] is built in and needs its `command` set to be used\n"
        ));
    }
    Ok(text)
}

/// Names of settings or variables whose values are treated as secrets.
fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "API_KEY",
        "APIKEY",
        "AUTH",
    ]
    .iter()
    .any(|w| upper.contains(w))
        && !upper.ends_with("_FILE")
        && !upper.ends_with("_ENV")
}

fn redact(v: &mut toml::Value, secret: bool) {
    match v {
        toml::Value::String(s) if secret => "***".clone_into(s),
        toml::Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = crate::redact::text(s) {
                *s = clean;
            }
        }
        toml::Value::Table(t) => {
            for (k, child) in t.iter_mut() {
                redact(child, secret || secret_name(k));
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|c| redact(c, secret)),
        _ => {}
    }
}

/// Load and validate the settings: `file` instead of the system layers when given.
///
/// # Errors
///
/// An unreadable or malformed file (named), an unknown key, a bad value or an invalid profile.
pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    load_from(file, Path::new(SYSTEM_FILE), Path::new(DROP_IN_DIR))
}

fn load_from(file: Option<&Path>, system: &Path, drop_ins: &Path) -> anyhow::Result<Config> {
    let mut builder = config::Config::builder();
    let files: Vec<(PathBuf, bool)> = match file {
        Some(f) => vec![(f.to_path_buf(), true)],
        None => {
            let mut v = vec![(system.to_path_buf(), false)];
            v.extend(drop_in_files(drop_ins)?.into_iter().map(|p| (p, true)));
            v
        }
    };
    for (path, required) in &files {
        if !required && !path.exists() {
            continue;
        }
        // Read it ourselves: the config crate's own errors do not say which file failed.
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read '{}'", path.display()))?;
        toml_check(&text).with_context(|| format!("'{}' is not valid TOML", path.display()))?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(setting_vars(std::env::vars())?)),
    );
    let merged = builder.build().context("cannot merge the settings")?;
    let cfg: Config = merged
        .try_deserialize()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| match file {
            Some(f) => format!("invalid settings in '{}'", f.display()),
            None => format!("invalid settings ({SYSTEM_FILE}, {DROP_IN_DIR}, {ENV_PREFIX}_*)"),
        })?;
    cfg.validate()?;
    Ok(cfg)
}

/// The tables a `SNAPSCAN_<TABLE>__<KEY>` variable can name.
const TABLES: [&str; 8] = [
    "scan", "scanner", "upload", "agent", "metadata", "compute", "queue", "status",
];

/// The environment variables that are settings: `SNAPSCAN_<TABLE>__<KEY>`. Every other
/// `SNAPSCAN_*` variable is an error (`SNAPSCAN_UPLOAD_SINK` is a typo of
/// `SNAPSCAN_UPLOAD__SINK`, and would otherwise be ignored), except [`ENV_EXEMPT`]. An unknown
/// key within a known table is left to the tables' own unknown-field check.
fn setting_vars(
    vars: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<config::Map<String, String>> {
    let prefix = format!("{ENV_PREFIX}_");
    let mut settings = config::Map::new();
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix(&prefix) else {
            continue;
        };
        if k == ENV_EXEMPT[0] || k.starts_with(ENV_EXEMPT[1]) {
            continue;
        }
        let table = rest.split_once("__").map(|(t, _)| t.to_ascii_lowercase());
        match table {
            Some(t) if TABLES.contains(&t.as_str()) => {
                settings.insert(k, v);
            }
            Some(t) => anyhow::bail!(
                "environment variable {k} names no settings table '{t}' (tables: {})",
                TABLES.join(", ")
            ),
            None => anyhow::bail!(
                "environment variable {k} is not a setting: a setting is \
                 {ENV_PREFIX}_<TABLE>__<KEY> with a double underscore (e.g. \
                 {ENV_PREFIX}_UPLOAD__SINK)"
            ),
        }
    }
    Ok(settings)
}

/// Parse as TOML only to report syntax errors with the file's name.
fn toml_check(text: &str) -> anyhow::Result<()> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The `*.toml` files of the drop-in directory, sorted by name; none when it does not exist.
fn drop_in_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list '{}'", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list '{}'", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn layers_and_errors() {
        struct Case {
            name: &'static str,
            system: Option<&'static str>,
            drop_ins: &'static [(&'static str, &'static str)],
            file: Option<&'static str>,
            /// `Ok(scanner, volume_timeout)` or `Err(substring of the error chain)`.
            want: Result<(&'static str, u64), &'static str>,
        }
        let cases = [
            Case {
                name: "defaults",
                system: None,
                drop_ins: &[],
                file: None,
                want: Ok(("inventory", 30)),
            },
            Case {
                name: "system file",
                system: Some("[scan]\nvolume_timeout_secs = 5\n"),
                drop_ins: &[],
                file: None,
                want: Ok(("inventory", 5)),
            },
            Case {
                name: "drop-ins override in name order",
                system: Some("[scan]\nvolume_timeout_secs = 5\n"),
                drop_ins: &[
                    ("20-b.toml", "[scan]\nvolume_timeout_secs = 7\n"),
                    ("10-a.toml", "[scan]\nvolume_timeout_secs = 6\n"),
                    ("30-c.conf", "[scan]\nvolume_timeout_secs = 99\n"),
                ],
                file: None,
                want: Ok(("inventory", 7)),
            },
            Case {
                name: "--config replaces the system layers",
                system: Some("[scan]\nvolume_timeout_secs = 5\n"),
                drop_ins: &[],
                file: Some("[scan]\nscanner = \"qscanner\"\n"),
                want: Ok(("qscanner", 30)),
            },
            Case {
                name: "unknown key",
                system: Some("[scan]\nvolume_timeout = 5\n"),
                drop_ins: &[],
                file: None,
                want: Err("unknown field"),
            },
            Case {
                name: "bad TOML names the file",
                system: None,
                drop_ins: &[("10-a.toml", "[scan\n")],
                file: None,
                want: Err("10-a.toml"),
            },
            Case {
                name: "unknown scanner",
                system: None,
                drop_ins: &[],
                file: Some("[scan]\nscanner = \"nope\"\n"),
                want: Err("unknown scanner 'nope'"),
            },
            Case {
                name: "command profile without a command",
                system: None,
                drop_ins: &[],
                file: Some("[scan]\nscanner = \"command\"\n"),
                want: Err("not usable"),
            },
            Case {
                name: "missing --config file",
                system: None,
                drop_ins: &[],
                file: None,
                want: Ok(("inventory", 30)),
            },
        ];
        for c in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let system = dir.path().join("agent.toml");
            if let Some(text) = c.system {
                write(dir.path(), "agent.toml", text);
            }
            let drop_dir = dir.path().join("agent.d");
            std::fs::create_dir(&drop_dir).expect("mkdir");
            for (name, text) in c.drop_ins {
                write(&drop_dir, name, text);
            }
            let file = c.file.map(|t| write(dir.path(), "given.toml", t));
            let got = load_from(file.as_deref(), &system, &drop_dir)
                .map(|cfg| (cfg.scan.scanner.clone(), cfg.scan.volume_timeout_secs))
                .map_err(|e| format!("{e:#}"));
            match (&got, &c.want) {
                (Ok((s, t)), Ok((ws, wt))) => {
                    assert_eq!((s.as_str(), *t), (*ws, *wt), "case {}", c.name)
                }
                (Err(e), Err(sub)) => assert!(e.contains(sub), "case {}: {e}", c.name),
                _ => panic!("case {}: got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn only_table_qualified_variables_are_settings() {
        let vars = [
            ("SNAPSCAN_SCAN__SCANNER", "qscanner"),
            ("SNAPSCAN_TEST_CACHE", "/var/cache"),
            ("SNAPSCAN_LOG", "debug"),
            ("SNAPSCANX__Y", "1"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let got = setting_vars(vars.into_iter()).expect("all known");
        assert_eq!(got.keys().collect::<Vec<_>>(), ["SNAPSCAN_SCAN__SCANNER"]);
    }

    #[test]
    fn unknown_snapscan_variables_are_errors() {
        struct Case {
            name: &'static str,
            var: &'static str,
            want: &'static str,
        }
        let cases = [
            Case {
                name: "single underscore",
                var: "SNAPSCAN_UPLOAD_SINK",
                want: "SNAPSCAN_UPLOAD_SINK is not a setting",
            },
            Case {
                name: "unknown table",
                var: "SNAPSCAN_UPLAOD__SINK",
                want: "names no settings table 'uplaod'",
            },
            Case {
                name: "near miss of the log variable",
                var: "SNAPSCAN_LOGS",
                want: "SNAPSCAN_LOGS is not a setting",
            },
        ];
        for c in cases {
            let vars = [(c.var.to_owned(), "x".to_owned())];
            let e = setting_vars(vars.into_iter()).expect_err(c.name);
            assert!(format!("{e:#}").contains(c.want), "case {}: {e:#}", c.name);
        }
    }

    #[test]
    fn shipped_default_file_is_the_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/agent.toml");
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load_from(Some(&shipped), &dir.path().join("x"), &dir.path().join("y"))
            .expect("image/agent.toml loads");
        let as_value = |c: &Config| toml::Value::try_from(c).expect("encode");
        assert_eq!(as_value(&cfg), as_value(&Config::default()));
    }

    #[test]
    fn redaction() {
        let text = r#"
            [upload.qflow]
            url = "https://user:hunter2@qflow.example/upload?x=1"
            token_env = "QFLOW_TOKEN"
            [scanner.profiles.mine]
            command = ["/opt/bin/scan", "{mount}"]
            env = { API_TOKEN = { value = "s3cr3t" }, REGION = { value = "eu" }, K = { from_env = "SECRET_K" } }
        "#;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", text);
        let cfg =
            load_from(Some(&file), &dir.path().join("x"), &dir.path().join("y")).expect("valid");
        let out = render_redacted(&cfg).expect("render");
        assert!(!out.contains("hunter2") && !out.contains("s3cr3t"), "{out}");
        assert!(
            out.contains("https://***@qflow.example/upload?x=1"),
            "{out}"
        );
        assert!(
            out.contains("\"eu\"") && out.contains("QFLOW_TOKEN"),
            "{out}"
        );
        // What is printed loads again.
        let again = write(dir.path(), "again.toml", &out.replace("***", "x"));
        load_from(Some(&again), &dir.path().join("x"), &dir.path().join("y")).expect("reload");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_from(
            Some(&dir.path().join("absent.toml")),
            &dir.path().join("agent.toml"),
            &dir.path().join("agent.d"),
        )
        .expect_err("absent file");
        assert!(format!("{err:#}").contains("absent.toml"), "{err:#}");
    }
}
