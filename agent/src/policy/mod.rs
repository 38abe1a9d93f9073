//! The policy gate of `snapscan scan --policy FILE`: rules an image must meet, checked against
//! what the built-in inventory found, with the verdict in `report.json` and as exit code 4.
//!
//! A policy is TOML ([`Policy`]): the OS it must run (family, ids, a version range), packages it
//! must not have (a purl, optionally a `vers` range of versions) and must have, the most
//! packages it may have, and files it must not hold (absolute glob patterns: leftover SSH host
//! keys, shell histories, cloud credentials). [`Policy::load`] checks every rule before a disk is
//! touched; [`find_files`] looks for the forbidden files on the scanned root (read-only, through
//! the same [`RootFs`] the inventory read); [`Policy::check`] gives the [`Verdict`].
//!
//! Not here: reading the packages (the inventory), vulnerability data (a policy names versions,
//! it does not look up advisories).

pub mod vers;

use std::path::Path;

use anyhow::Context;
use packageurl::PackageUrl;
use serde::{Deserialize, Serialize};

use crate::detect::{OsFamily, OsInfo};
use crate::fs::{FileType, FsError, RootFs};
use crate::inventory::{Ecosystem, Package};
use vers::Range;

/// Files matched by one pattern that are reported (the rest are counted).
const MAX_MATCHES: usize = 32;
/// Directory entries a pattern may list in all: a hostile tree cannot make the search endless.
const MAX_LISTED: usize = 100_000;

/// A policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The OS the image must run.
    #[serde(default)]
    pub os: Option<OsRule>,
    /// Packages it must not have.
    #[serde(default)]
    pub deny: Vec<PackageRule>,
    /// Packages it must have.
    #[serde(default)]
    pub require: Vec<PackageRule>,
    /// The most packages it may have.
    #[serde(default)]
    pub max_packages: Option<usize>,
    /// Absolute glob patterns (`*`, `?`, `[...]` within one path component) of files it must
    /// not hold.
    #[serde(default)]
    pub forbidden_files: Vec<String>,
}

/// What the OS must be; every field given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsRule {
    /// `linux` or `windows`.
    pub family: Option<OsFamily>,
    /// One of these os-release `ID`s (`debian`, `ubuntu`, `windows`).
    #[serde(default)]
    pub id: Vec<String>,
    /// A `vers` range of `VERSION_ID` (`vers:generic/>=12`).
    pub version: Option<String>,
}

/// One package rule: a purl (`pkg:deb/debian/openssl`, `pkg:rpm/openssl`: type and name, the
/// namespace when given) and optionally a `vers` range of its versions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRule {
    /// Which package.
    pub purl: String,
    /// Which of its versions (all when absent).
    pub vers: Option<String>,
    /// Why, for the report.
    pub reason: Option<String>,
}

/// The verdict of [`Policy::check`], in `report.json` as `policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The policy file.
    pub file: String,
    /// `true` when no rule is broken.
    pub passed: bool,
    /// The broken rules, one entry each.
    pub violations: Vec<Violation>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `os`, `deny`, `require`, `max_packages` or `forbidden_files`.
    pub rule: &'static str,
    /// What was found, or not.
    pub detail: String,
}

/// A package rule, parsed.
struct Matcher {
    ty: String,
    namespace: Option<String>,
    name: String,
    range: Option<Range>,
}

impl Matcher {
    fn new(rule: &PackageRule) -> Result<Matcher, String> {
        let purl: PackageUrl<'_> = rule
            .purl
            .parse()
            .map_err(|e| format!("purl '{}': {e}", rule.purl))?;
        if purl.version().is_some() {
            return Err(format!(
                "purl '{}': give versions as a vers range, not in the purl",
                rule.purl
            ));
        }
        let range = rule.vers.as_deref().map(Range::parse).transpose()?;
        Ok(Matcher {
            ty: purl.ty().to_owned(),
            namespace: purl.namespace().map(str::to_owned),
            name: purl.name().to_owned(),
            range,
        })
    }

    /// The packages of `packages` this rule names, on an OS with id `os_id`.
    fn matches<'p>(&self, packages: &'p [Package], os_id: &str) -> Vec<&'p Package> {
        packages
            .iter()
            .filter(|p| {
                let ty = match p.ecosystem {
                    Ecosystem::Deb => "deb",
                    Ecosystem::Rpm => "rpm",
                    Ecosystem::Apk => "apk",
                    Ecosystem::Windows => "generic",
                };
                ty == self.ty
                    && p.name == self.name
                    && self.namespace.as_deref().is_none_or(|ns| ns == os_id)
                    && self
                        .range
                        .as_ref()
                        .is_none_or(|r| p.version.as_deref().is_some_and(|v| r.contains(v)))
            })
            .collect()
    }
}

impl Policy {
    /// Read and check the policy at `path`.
    ///
    /// # Errors
    ///
    /// It cannot be read, is not valid TOML of this shape, or a rule is malformed (a bad purl or
    /// `vers` range, a relative file pattern).
    pub fn load(path: &Path) -> anyhow::Result<Policy> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the policy '{}'", path.display()))?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// Parse and check the policy `text` (what [`Policy::load`] reads from a file); `name` says
    /// where it came from in errors.
    ///
    /// # Errors
    ///
    /// As [`Policy::load`], but for reading.
    pub fn parse(text: &str, name: &str) -> anyhow::Result<Policy> {
        let policy: Policy = toml::from_str(text).with_context(|| format!("policy '{name}'"))?;
        policy
            .validate()
            .map_err(|e| anyhow::anyhow!("policy '{name}': {e}"))?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        for rule in self.deny.iter().chain(&self.require) {
            Matcher::new(rule)?;
        }
        if let Some(v) = self.os.as_ref().and_then(|o| o.version.as_deref()) {
            Range::parse(v).map_err(|e| format!("os.version: {e}"))?;
        }
        for p in &self.forbidden_files {
            if !p.starts_with('/') {
                return Err(format!("forbidden file '{p}' is not an absolute path"));
            }
            glob::Pattern::new(p).map_err(|e| format!("forbidden file '{p}': {e}"))?;
        }
        Ok(())
    }

    /// Check the image's OS, packages and the forbidden files found on it ([`find_files`]).
    pub fn check(
        &self,
        file: &Path,
        os: &OsInfo,
        packages: &[Package],
        found: &[String],
    ) -> Verdict {
        let mut v = Vec::new();
        let mut broken = |rule: &'static str, detail: String| v.push(Violation { rule, detail });
        if let Some(rule) = &self.os {
            if let Some(family) = rule.family {
                if family != os.family {
                    broken(
                        "os",
                        format!("the OS is {:?}, the policy wants {family:?}", os.family),
                    );
                }
            }
            if !rule.id.is_empty() && !rule.id.contains(&os.id) {
                broken(
                    "os",
                    format!(
                        "the OS is '{}', the policy wants one of {:?}",
                        os.id, rule.id
                    ),
                );
            }
            if let Some(range) = rule.version.as_deref().and_then(|r| Range::parse(r).ok()) {
                match os.version_id.as_deref() {
                    Some(ver) if range.contains(ver) => {}
                    Some(ver) => broken("os", format!("version {ver} is not in {range}")),
                    None => broken(
                        "os",
                        format!("the OS gives no version to check against {range}"),
                    ),
                }
            }
        }
        for rule in &self.deny {
            let Ok(m) = Matcher::new(rule) else { continue };
            for p in m.matches(packages, &os.id) {
                let why = rule
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                broken(
                    "deny",
                    format!(
                        "{} {} is denied by {}{}{why}",
                        p.name,
                        p.version.as_deref().unwrap_or("(no version)"),
                        rule.purl,
                        rule.vers
                            .as_deref()
                            .map(|r| format!(" {r}"))
                            .unwrap_or_default()
                    ),
                );
            }
        }
        for rule in &self.require {
            let Ok(m) = Matcher::new(rule) else { continue };
            if m.matches(packages, &os.id).is_empty() {
                broken(
                    "require",
                    format!(
                        "no package matches {}{}",
                        rule.purl,
                        rule.vers
                            .as_deref()
                            .map(|r| format!(" {r}"))
                            .unwrap_or_default()
                    ),
                );
            }
        }
        if let Some(max) = self.max_packages {
            if packages.len() > max {
                broken(
                    "max_packages",
                    format!("{} packages, at most {max} allowed", packages.len()),
                );
            }
        }
        for f in found {
            broken("forbidden_files", format!("{f} is present"));
        }
        Verdict {
            file: file.display().to_string(),
            passed: v.is_empty(),
            violations: v,
        }
    }
}

/// The files on `fs` matching any of `patterns` (absolute globs, matched component by
/// component; symbolic links are reported, not followed), at most [`MAX_MATCHES`] per pattern
/// with a last entry counting the rest.
///
/// # Errors
///
/// Device errors only (a directory that cannot be listed is one without matches).
pub fn find_files(fs: &dyn RootFs, patterns: &[String]) -> Result<Vec<String>, FsError> {
    let mut found = Vec::new();
    let mut listed = 0usize;
    for pattern in patterns {
        let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
        let mut frontier = vec![String::new()];
        for (depth, part) in parts.iter().enumerate() {
            let last = depth + 1 == parts.len();
            let mut next = Vec::new();
            let literal = !part.contains(['*', '?', '[']);
            for dir in &frontier {
                if literal {
                    let path = format!("{dir}/{part}");
                    match fs.symlink_metadata(&path) {
                        Ok(m) if last || m.file_type == FileType::Dir => next.push(path),
                        Ok(_) => {}
                        Err(e) if e.is_device_error() => return Err(e),
                        Err(_) => {}
                    }
                    continue;
                }
                let Ok(glob) = glob::Pattern::new(part) else {
                    continue;
                };
                let entries = match fs.read_dir(if dir.is_empty() { "/" } else { dir }) {
                    Ok(e) => e,
                    Err(e) if e.is_device_error() => return Err(e),
                    Err(_) => continue,
                };
                for e in entries {
                    listed += 1;
                    if listed > MAX_LISTED {
                        break;
                    }
                    if glob.matches(&e.name) {
                        let path = format!("{dir}/{}", e.name);
                        if last || e.file_type == FileType::Dir {
                            next.push(path);
                        }
                    }
                }
            }
            frontier = next;
        }
        frontier.sort();
        let total = frontier.len();
        found.extend(frontier.into_iter().take(MAX_MATCHES));
        if total > MAX_MATCHES {
            found.push(format!("{pattern}: {} more", total - MAX_MATCHES));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemTree;
    use crate::fs::Rooted;

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            ecosystem: Ecosystem::Deb,
            name: name.into(),
            version: Some(version.into()),
            arch: Some("amd64".into()),
            source: None,
            source_version: None,
            publisher: None,
        }
    }

    fn debian() -> OsInfo {
        let mut os = OsInfo::new(OsFamily::Linux, "debian");
        os.version_id = Some("12".into());
        os
    }

    fn policy(toml_text: &str) -> Policy {
        let p: Policy = toml::from_str(toml_text).expect("policy TOML");
        p.validate().expect("valid policy");
        p
    }

    fn rules_broken(p: &Policy, packages: &[Package], found: &[String]) -> Vec<&'static str> {
        let v = p.check(Path::new("p.toml"), &debian(), packages, found);
        assert_eq!(v.passed, v.violations.is_empty());
        v.violations.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn each_rule_passes_and_fails() {
        let packages = [
            pkg("openssl", "3.0.11-1~deb12u2"),
            pkg("bash", "5.2.15-2+b2"),
        ];
        let cases: [(&str, &str, Vec<&str>); 10] = [
            ("os", "[os]\nfamily = \"linux\"\nid = [\"debian\", \"ubuntu\"]\nversion = \"vers:generic/>=12\"", vec![]),
            ("os id", "[os]\nid = [\"rhel\"]", vec!["os"]),
            ("os version", "[os]\nversion = \"vers:generic/>=13\"", vec!["os"]),
            ("os family", "[os]\nfamily = \"windows\"", vec!["os"]),
            ("deny hit", "[[deny]]\npurl = \"pkg:deb/debian/openssl\"\nvers = \"vers:deb/<3.0.11-1~deb12u3\"", vec!["deny"]),
            ("deny miss", "[[deny]]\npurl = \"pkg:deb/debian/openssl\"\nvers = \"vers:deb/<3.0.11-1~deb12u2\"\n[[deny]]\npurl = \"pkg:deb/ubuntu/bash\"", vec![]),
            ("require hit", "[[require]]\npurl = \"pkg:deb/bash\"\nvers = \"vers:deb/>=5\"", vec![]),
            ("require miss", "[[require]]\npurl = \"pkg:deb/debian/openssh-server\"", vec!["require"]),
            ("max ok", "max_packages = 2", vec![]),
            ("max over", "max_packages = 1", vec!["max_packages"]),
        ];
        for (name, text, want) in cases {
            assert_eq!(
                rules_broken(&policy(text), &packages, &[]),
                want,
                "case {name}"
            );
        }
        let files = policy("forbidden_files = [\"/root/.bash_history\"]");
        assert_eq!(
            rules_broken(&files, &packages, &["/root/.bash_history".into()]),
            vec!["forbidden_files"]
        );
        assert!(rules_broken(&files, &packages, &[]).is_empty());
    }

    #[test]
    fn the_example_policy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packer/examples/policy.toml");
        let p = Policy::load(&path).expect("the example policy");
        assert!(p.max_packages.is_some() && !p.forbidden_files.is_empty() && !p.deny.is_empty());
    }

    #[test]
    fn malformed_policies_are_refused() {
        for bad in [
            "[[deny]]\npurl = \"openssl\"",
            "[[deny]]\npurl = \"pkg:deb/debian/openssl@1.0\"",
            "[[require]]\npurl = \"pkg:deb/bash\"\nvers = \"<5\"",
            "[os]\nversion = \"12\"",
            "forbidden_files = [\"root/.bash_history\"]",
            "forbidden_files = [\"/etc/[\"]",
        ] {
            let p: Policy = toml::from_str(bad).expect("TOML");
            assert!(p.validate().is_err(), "{bad}");
        }
        assert!(
            toml::from_str::<Policy>("max_pakages = 3").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn forbidden_files_are_found_by_glob_without_following_links() {
        let fs = Rooted(
            MemTree::default()
                .file("/etc/ssh/ssh_host_rsa_key", "k")
                .file("/etc/ssh/ssh_host_rsa_key.pub", "p")
                .file("/etc/ssh/ssh_host_ed25519_key", "k")
                .file("/home/alice/.bash_history", "h")
                .symlink("/home/bob", "/etc")
                .dir("/root"),
        );
        let patterns = [
            "/etc/ssh/ssh_host_*_key".to_owned(),
            "/home/*/.bash_history".to_owned(),
            "/home/*/ssh/ssh_host_rsa_key".to_owned(),
            "/root/.bash_history".to_owned(),
        ];
        let found = find_files(&fs, &patterns).expect("find");
        assert_eq!(
            found,
            [
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_rsa_key",
                "/home/alice/.bash_history",
            ]
        );
    }
}
