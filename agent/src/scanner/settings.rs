//! The `[scanner]` table: the configured profiles over the built-in ones, looking a scanner up by
//! name, and the pre-flight check that a chosen scanner can really run here (its program exists
//! and is executable, every secret it reads is set) before any disk is touched.
//!
//! Not here: the template language and the built-in profiles ([`super::profile`]), running a
//! scanner ([`mod@super::run`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::profile::{builtin_profiles, EnvSource, Profile};
use super::run::{resolve_program, SAFE_PATH};

/// The name of the built-in scanner (the package inventory).
pub const INVENTORY: &str = "inventory";

/// The `[scanner]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScannerConfig {
    /// External scanner profiles by name; they replace the built-in profiles of the same name
    /// (`qscanner`, `command`).
    pub profiles: BTreeMap<String, Profile>,
}

impl ScannerConfig {
    /// The profile called `name`: from the configuration, else built in. `None` for
    /// [`INVENTORY`] and unknown names.
    pub fn profile(&self, name: &str) -> Option<Profile> {
        self.profiles
            .get(name)
            .cloned()
            .or_else(|| builtin_profiles().remove(name))
    }

    /// Every profile in effect: the built-in ones, replaced by configured ones of the same name.
    pub fn effective(&self) -> BTreeMap<String, Profile> {
        let mut all = builtin_profiles();
        all.extend(self.profiles.clone());
        all
    }

    /// Every scanner name that can be chosen.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.effective().into_keys().collect();
        names.push(INVENTORY.to_owned());
        names.sort();
        names
    }

    /// Check what serde cannot: every configured profile's templates.
    ///
    /// # Errors
    ///
    /// The first invalid profile, named.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, profile) in &self.profiles {
            profile
                .validate()
                .with_context(|| format!("invalid [scanner.profiles.{name}]"))?;
        }
        Ok(())
    }

    /// Error unless `name` is [`INVENTORY`] or a usable profile.
    ///
    /// # Errors
    ///
    /// Unknown name, or a profile that does not validate (the built-in `command` profile until
    /// its command is configured).
    pub fn check(&self, name: &str) -> anyhow::Result<()> {
        if name == INVENTORY {
            return Ok(());
        }
        match self.profile(name) {
            Some(p) => p
                .validate()
                .with_context(|| format!("scanner profile '{name}' is not usable")),
            None => bail!(
                "unknown scanner '{name}' (known: {})",
                self.names().join(", ")
            ),
        }
    }

    /// [`check`](Self::check), then make sure scanner `name` can start on this machine: its
    /// program (for Linux and for Windows guests) is an executable file, found at its absolute
    /// path or in `search_path` (empty: [`SAFE_PATH`]); and, with `secrets`, every `{env:NAME}`
    /// and `from_env` variable it reads is set and not empty, and every `from_file` is a
    /// readable file. Secrets are only checked for presence, never shown.
    ///
    /// # Errors
    ///
    /// The first thing missing, naming the scanner, the program or the variable.
    pub fn preflight(
        &self,
        name: &str,
        search_path: &[PathBuf],
        secrets: bool,
    ) -> anyhow::Result<()> {
        self.check(name)?;
        let Some(profile) = self.profile(name) else {
            return Ok(());
        };
        let safe: Vec<PathBuf>;
        let search = if search_path.is_empty() {
            safe = std::env::split_paths(SAFE_PATH).collect();
            &safe
        } else {
            search_path
        };
        for windows in [false, true] {
            if let Some(program) = profile.argv_for(windows).first() {
                resolve_program(program, search, None)
                    .with_context(|| format!("scanner '{name}' cannot run"))?;
            }
        }
        if !secrets {
            return Ok(());
        }
        for var in profile.env_names() {
            if std::env::var_os(&var).is_none_or(|v| v.is_empty()) {
                bail!(
                    "scanner '{name}' reads the environment variable {var}, which is not set \
                     (for the agent: /etc/snapscan/agent.env)"
                );
            }
        }
        for (var, source) in &profile.env {
            if let EnvSource::FromFile(path) = source {
                std::fs::File::open(path)
                    .and_then(|f| f.metadata())
                    .and_then(|m| {
                        if m.is_file() {
                            Ok(())
                        } else {
                            Err(std::io::Error::other("not a regular file"))
                        }
                    })
                    .with_context(|| {
                        format!(
                            "scanner '{name}': env {var} reads '{}', which cannot be read",
                            path.display()
                        )
                    })?;
            }
        }
        Ok(())
    }
}
