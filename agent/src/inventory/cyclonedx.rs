//! The inventory as a CycloneDX 1.5 JSON SBOM.
//!
//! [`sbom`] turns an [`Inventory`] and the [`OsInfo`] of its volume into a BOM:
//!
//! - `metadata.component` is the OS, of type `operating-system` (name = os-release `ID`,
//!   version = `VERSION_ID`, description = `PRETTY_NAME`); `metadata.tools.components` names
//!   snapscan and its version; `metadata.properties` carries `snapscan:subject` (the disk or
//!   snapshot scanned) and the databases read (`snapscan:source`).
//! - Every package is a component of type `library` (Windows programs: `application`) whose
//!   `bom-ref` is its purl: `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`,
//!   `pkg:apk/alpine/NAME@VERSION?arch=ARCH&distro=alpine-3.19.1`,
//!   `pkg:rpm/rhel/NAME@VERSION-RELEASE?arch=ARCH&distro=rhel-9.3&epoch=2` (namespace =
//!   os-release `ID`, `distro` = `ID-VERSION_ID`, else `ID-VERSION_CODENAME`, else `ID`). As the
//!   purl spec's rpm type says, an rpm epoch is the `epoch` qualifier, not part of the version;
//!   deb versions keep theirs (`1:2.3-4`), as the spec's deb examples do.
//!   Purls are built by the `packageurl` crate, which percent-encodes each part and applies the
//!   purl spec's per-type rules (deb names are lowercased, qualifiers sorted).
//! - Windows programs get **no purl**: the purl spec has no type for them, and a made-up
//!   `pkg:generic` one would look matchable to vulnerability tools without being so. Their
//!   `bom-ref` is `windows-program:ARCH/NAME@VERSION` (`any` and `unknown` fill missing parts),
//!   and the `Publisher` is the component's `publisher`.
//! - The source package (dpkg `Source`, apk origin) is the property `snapscan:package:source`,
//!   plus `snapscan:package:source_version` when dpkg gives one. Properties rather than
//!   `pedigree`, which describes modified components; Syft and Trivy do the same.
//! - `dependencies` has one entry: the OS depends on every package, so a consumer can tell
//!   which OS a package belongs to.
//!
//! Nothing here reads a clock or a random source: the serial number and timestamp come from the
//! caller in [`SbomMeta`], so equal input gives byte-equal output. Not written: hashes,
//! licenses, file lists, the package-to-package dependency graph, CycloneDX XML.
//! Spec: <https://cyclonedx.org/docs/1.5/json/>; purl: <https://github.com/package-url/purl-spec>.
//!
//! The `cyclonedx-bom` crate was considered: it writes 1.5 JSON, but its `Purl::new` cannot
//! express namespaces or qualifiers, and it brings regex, xml-rs, spdx, time, uuid and more for
//! what is here a few serde structs.

use std::collections::BTreeSet;

use packageurl::PackageUrl;
use serde::Serialize;

use super::{Ecosystem, Inventory, Package};
use crate::detect::OsInfo;

/// The CycloneDX version written.
pub const SPEC_VERSION: &str = "1.5";

/// What the caller knows about this SBOM that the inventory does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomMeta {
    /// The BOM's serial number, `urn:uuid:` and a lowercase RFC 4122 UUID.
    pub serial_number: String,
    /// When the BOM was made, RFC 3339 (`2024-05-01T12:00:00Z`).
    pub timestamp: String,
    /// The disk or snapshot scanned.
    pub subject: String,
}

/// A CycloneDX 1.5 BOM, as much of it as snapscan writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    /// Always `CycloneDX`.
    pub bom_format: &'static str,
    /// Always [`SPEC_VERSION`].
    pub spec_version: &'static str,
    /// From [`SbomMeta::serial_number`].
    pub serial_number: String,
    /// The BOM's version: 1.
    pub version: u32,
    /// Who, when, about what.
    pub metadata: Metadata,
    /// One per package.
    pub components: Vec<Component>,
    /// The OS depends on every package.
    pub dependencies: Vec<Dependency>,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// From [`SbomMeta::timestamp`].
    pub timestamp: String,
    /// The tool that made the BOM.
    pub tools: Tools,
    /// The OS the packages belong to.
    pub component: Component,
    /// `snapscan:subject` and `snapscan:source` entries.
    pub properties: Vec<Property>,
}

/// `metadata.tools` in the 1.5 object form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tools {
    /// snapscan, as an application.
    pub components: Vec<Component>,
}

/// A component: the OS, a package, or snapscan itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// `operating-system`, `library` or `application`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Unique within the BOM; the purl where there is one.
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    /// Who published it (Windows `Publisher`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Name.
    pub name: String,
    /// Version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Free text (the OS's pretty name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Package URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    /// Name-value pairs (`snapscan:package:source`...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

/// A CycloneDX property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Property {
    /// Namespaced name (`snapscan:...`).
    pub name: String,
    /// Value.
    pub value: String,
}

/// One `dependencies` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// The depending component's `bom-ref`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The `bom-ref`s it depends on.
    pub depends_on: Vec<String>,
}

fn property(name: &str, value: &str) -> Property {
    Property {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// The BOM of `inv`, found on a volume holding `os`. Serialize it with `serde_json`.
pub fn sbom(inv: &Inventory, os: &OsInfo, meta: &SbomMeta) -> Bom {
    let os_ref = format!(
        "os:{}@{}",
        os.id,
        os.version_id.as_deref().unwrap_or("unknown")
    );
    let mut seen = BTreeSet::new();
    let components: Vec<Component> = inv
        .packages
        .iter()
        .map(|p| component(p, os))
        // Equal identities (same program under two keys) would give equal bom-refs.
        .filter(|c| c.bom_ref.as_ref().is_some_and(|r| seen.insert(r.clone())))
        .collect();
    let mut properties = vec![property("snapscan:subject", &meta.subject)];
    properties.extend(inv.sources.iter().map(|s| property("snapscan:source", s)));
    Bom {
        bom_format: "CycloneDX",
        spec_version: SPEC_VERSION,
        serial_number: meta.serial_number.clone(),
        version: 1,
        metadata: Metadata {
            timestamp: meta.timestamp.clone(),
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    bom_ref: None,
                    publisher: None,
                    name: "snapscan".to_owned(),
                    version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                    description: None,
                    purl: None,
                    properties: Vec::new(),
                }],
            },
            component: Component {
                kind: "operating-system",
                bom_ref: Some(os_ref.clone()),
                publisher: None,
                name: os.id.clone(),
                version: os.version_id.clone(),
                description: os.pretty_name.clone(),
                purl: None,
                properties: Vec::new(),
            },
            properties,
        },
        dependencies: vec![Dependency {
            reference: os_ref,
            depends_on: components
                .iter()
                .filter_map(|c| c.bom_ref.clone())
                .collect(),
        }],
        components,
    }
}

/// One package as a component.
fn component(p: &Package, os: &OsInfo) -> Component {
    let purl = purl(p, os);
    let bom_ref = purl.clone().unwrap_or_else(|| {
        format!(
            "{}:{}/{}@{}",
            if p.ecosystem == Ecosystem::Windows {
                "windows-program"
            } else {
                "package"
            },
            p.arch.as_deref().unwrap_or("any"),
            p.name,
            p.version.as_deref().unwrap_or("unknown")
        )
    });
    let mut properties = Vec::new();
    if let Some(src) = &p.source {
        properties.push(property("snapscan:package:source", src));
    }
    if let Some(ver) = &p.source_version {
        properties.push(property("snapscan:package:source_version", ver));
    }
    Component {
        kind: if p.ecosystem == Ecosystem::Windows {
            "application"
        } else {
            "library"
        },
        bom_ref: Some(bom_ref),
        publisher: p.publisher.clone(),
        name: p.name.clone(),
        version: p.version.clone(),
        description: None,
        purl,
        properties,
    }
}

/// The purl of a package; `None` for Windows programs (no purl type) and names the purl
/// rules refuse (empty).
pub fn purl(p: &Package, os: &OsInfo) -> Option<String> {
    let ty = match p.ecosystem {
        Ecosystem::Deb => "deb",
        Ecosystem::Rpm => "rpm",
        Ecosystem::Apk => "apk",
        Ecosystem::Windows => return None,
    };
    let mut purl = PackageUrl::new(ty, p.name.as_str()).ok()?;
    if !os.id.is_empty() {
        purl.with_namespace(os.id.as_str()).ok()?;
    }
    let (epoch, version) = match p.version.as_deref() {
        Some(v) if p.ecosystem == Ecosystem::Rpm => match v.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
                (Some(e), Some(rest))
            }
            _ => (None, Some(v)),
        },
        v => (None, v),
    };
    if let Some(v) = version {
        purl.with_version(v).ok()?;
    }
    if let Some(e) = epoch {
        purl.add_qualifier("epoch", e).ok()?;
    }
    if let Some(arch) = &p.arch {
        purl.add_qualifier("arch", arch.as_str()).ok()?;
    }
    let release = os.version_id.as_ref().or(os.version_codename.as_ref());
    let distro = match release {
        Some(r) => format!("{}-{r}", os.id),
        None => os.id.clone(),
    };
    if !distro.is_empty() {
        purl.add_qualifier("distro", distro).ok()?;
    }
    Some(purl.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::OsFamily;

    fn pkg(eco: Ecosystem, name: &str, version: &str, arch: Option<&str>) -> Package {
        Package {
            ecosystem: eco,
            name: name.into(),
            version: Some(version.into()),
            arch: arch.map(str::to_owned),
            source: None,
            source_version: None,
            publisher: None,
        }
    }

    fn os(id: &str, version: Option<&str>, codename: Option<&str>) -> OsInfo {
        let mut os = OsInfo::new(OsFamily::Linux, id);
        os.version_id = version.map(str::to_owned);
        os.version_codename = codename.map(str::to_owned);
        os
    }

    #[test]
    fn purl_table() {
        struct Case {
            name: &'static str,
            package: Package,
            os: OsInfo,
            want: Option<&'static str>,
        }
        let debian = os("debian", Some("12"), Some("bookworm"));
        let cases = [
            Case {
                name: "debian",
                package: pkg(Ecosystem::Deb, "curl", "7.88.1-10+deb12u5", Some("amd64")),
                os: debian.clone(),
                want: Some("pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=debian-12"),
            },
            Case {
                name: "epoch and tilde",
                package: pkg(Ecosystem::Deb, "libgcc-s1", "1:12.2.0~rc1", Some("amd64")),
                os: debian.clone(),
                want: Some("pkg:deb/debian/libgcc-s1@1:12.2.0~rc1?arch=amd64&distro=debian-12"),
            },
            Case {
                name: "deb name lowercased per the purl spec",
                package: pkg(Ecosystem::Deb, "Foo", "1", None),
                os: debian.clone(),
                want: Some("pkg:deb/debian/foo@1?distro=debian-12"),
            },
            Case {
                name: "ubuntu",
                package: pkg(Ecosystem::Deb, "libc6", "2.35-0ubuntu3.6", Some("amd64")),
                os: os("ubuntu", Some("22.04"), None),
                want: Some("pkg:deb/ubuntu/libc6@2.35-0ubuntu3.6?arch=amd64&distro=ubuntu-22.04"),
            },
            Case {
                name: "sid: codename stands in for the version",
                package: pkg(Ecosystem::Deb, "bash", "5.2", Some("amd64")),
                os: os("debian", None, Some("trixie")),
                want: Some("pkg:deb/debian/bash@5.2?arch=amd64&distro=debian-trixie"),
            },
            Case {
                name: "alpine",
                package: pkg(
                    Ecosystem::Apk,
                    "musl",
                    "1.2.4_git20230717-r4",
                    Some("aarch64"),
                ),
                os: os("alpine", Some("3.19.1"), None),
                want: Some(
                    "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=aarch64&distro=alpine-3.19.1",
                ),
            },
            Case {
                name: "rpm",
                package: pkg(
                    Ecosystem::Rpm,
                    "openssl-libs",
                    "3.0.7-24.el9",
                    Some("x86_64"),
                ),
                os: os("rhel", Some("9.3"), None),
                want: Some("pkg:rpm/rhel/openssl-libs@3.0.7-24.el9?arch=x86_64&distro=rhel-9.3"),
            },
            Case {
                name: "rpm epoch is a qualifier",
                package: pkg(Ecosystem::Rpm, "hello", "2:1.0-1.el9", Some("noarch")),
                os: os("rocky", Some("9.3"), None),
                want: Some("pkg:rpm/rocky/hello@1.0-1.el9?arch=noarch&distro=rocky-9.3&epoch=2"),
            },
            Case {
                name: "rpm version with a colon that is not an epoch",
                package: pkg(Ecosystem::Rpm, "odd", "x:1-1", None),
                os: os("fedora", Some("40"), None),
                want: Some("pkg:rpm/fedora/odd@x:1-1?distro=fedora-40"),
            },
            Case {
                name: "odd characters are encoded",
                package: pkg(Ecosystem::Deb, "a b/c", "1 2?#", Some("am&d=64")),
                os: debian.clone(),
                want: Some(
                    "pkg:deb/debian/a%20b%2Fc@1%202%3F%23?arch=am%26d%3D64&distro=debian-12",
                ),
            },
            Case {
                name: "windows: none",
                package: pkg(Ecosystem::Windows, "7-Zip", "23.01", Some("x86_64")),
                os: OsInfo::new(OsFamily::Windows, "windows"),
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(
                purl(&c.package, &c.os).as_deref(),
                c.want,
                "case {}",
                c.name
            );
        }
    }

    #[test]
    fn sbom_shape() {
        let mut debian = os("debian", Some("12"), Some("bookworm"));
        debian.pretty_name = Some("Debian GNU/Linux 12 (bookworm)".into());
        let mut libc = pkg(Ecosystem::Deb, "libc6", "2.36-9", Some("amd64"));
        libc.source = Some("glibc".into());
        libc.source_version = Some("2.36-9+b1".into());
        let mut prog = pkg(
            Ecosystem::Windows,
            "7-Zip 23.01 (x64)",
            "23.01",
            Some("x86_64"),
        );
        prog.publisher = Some("Igor Pavlov".into());
        let inv = Inventory {
            packages: vec![libc.clone(), libc, prog],
            sources: vec!["/var/lib/dpkg/status".into()],
            warnings: vec![],
        };
        let meta = SbomMeta {
            serial_number: "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79".into(),
            timestamp: "2024-05-01T12:00:00Z".into(),
            subject: "snap-1".into(),
        };
        let got = serde_json::to_value(sbom(&inv, &debian, &meta)).expect("json");
        let want = serde_json::json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
            "version": 1,
            "metadata": {
                "timestamp": "2024-05-01T12:00:00Z",
                "tools": {"components": [
                    {"type": "application", "name": "snapscan", "version": env!("CARGO_PKG_VERSION")}
                ]},
                "component": {
                    "type": "operating-system",
                    "bom-ref": "os:debian@12",
                    "name": "debian",
                    "version": "12",
                    "description": "Debian GNU/Linux 12 (bookworm)"
                },
                "properties": [
                    {"name": "snapscan:subject", "value": "snap-1"},
                    {"name": "snapscan:source", "value": "/var/lib/dpkg/status"}
                ]
            },
            "components": [
                {
                    "type": "library",
                    "bom-ref": "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12",
                    "name": "libc6",
                    "version": "2.36-9",
                    "purl": "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12",
                    "properties": [
                        {"name": "snapscan:package:source", "value": "glibc"},
                        {"name": "snapscan:package:source_version", "value": "2.36-9+b1"}
                    ]
                },
                {
                    "type": "application",
                    "bom-ref": "windows-program:x86_64/7-Zip 23.01 (x64)@23.01",
                    "publisher": "Igor Pavlov",
                    "name": "7-Zip 23.01 (x64)",
                    "version": "23.01"
                }
            ],
            "dependencies": [{
                "ref": "os:debian@12",
                "dependsOn": [
                    "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12",
                    "windows-program:x86_64/7-Zip 23.01 (x64)@23.01"
                ]
            }]
        });
        assert_eq!(got, want);
    }
}
