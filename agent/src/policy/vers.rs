//! Version ranges in the `vers` notation of the package-url project
//! (`vers:deb/>=1.2.3-1|<1.2.5`), and the version orders they are checked in.
//!
//! A range is a scheme and `|`-separated constraints, each a comparator (`=` when none, `!=`,
//! `<`, `<=`, `>`, `>=`) and a version, or `*` for every version. Containment follows the
//! specification: an `=` that matches is in, a `!=` that matches is out; of the rest, sorted,
//! a version is in when it is under a leading `<`/`<=`, over a trailing `>`/`>=`, or between a
//! `>`/`>=` and the `<`/`<=` right after it.
//!
//! Orders: `deb` is dpkg's (the `debversion` crate); `rpm` is rpmvercmp's (epoch, then version
//! and release, segment by segment: digits numerically, letters by byte, `~` before anything,
//! `^` after the end); `alpine` and `generic` compare like rpm's segments without epoch.

use std::cmp::Ordering;
use std::fmt;

/// How versions of a scheme are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// dpkg.
    Deb,
    /// rpmvercmp, `[EPOCH:]VERSION-RELEASE`.
    Rpm,
    /// apk, compared segment by segment.
    Alpine,
    /// Any other: segment by segment.
    Generic,
}

impl Scheme {
    fn parse(name: &str) -> Result<Scheme, String> {
        match name {
            "deb" => Ok(Scheme::Deb),
            "rpm" => Ok(Scheme::Rpm),
            "alpine" | "apk" => Ok(Scheme::Alpine),
            "generic" => Ok(Scheme::Generic),
            other => Err(format!(
                "version scheme '{other}' is not known (deb, rpm, alpine, generic)"
            )),
        }
    }

    /// Order two versions of this scheme.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Deb => match (
                a.parse::<debversion::Version>(),
                b.parse::<debversion::Version>(),
            ) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => segments(a, b),
            },
            Scheme::Rpm => rpm(a, b),
            Scheme::Alpine | Scheme::Generic => segments(a, b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed `vers:` range.
#[derive(Debug, Clone)]
pub struct Range {
    text: String,
    scheme: Scheme,
    /// `None`: `*`, every version.
    constraints: Option<Vec<(Op, String)>>,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Range {
    /// Parse `vers:<scheme>/<constraints>`.
    ///
    /// # Errors
    ///
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Range, String> {
        let rest = text
            .strip_prefix("vers:")
            .ok_or_else(|| format!("'{text}' does not start with 'vers:'"))?;
        let (scheme, list) = rest
            .split_once('/')
            .ok_or_else(|| format!("'{text}' has no '/' after its scheme"))?;
        let scheme = Scheme::parse(scheme)?;
        let list = list.trim();
        if list == "*" {
            return Ok(Range {
                text: text.to_owned(),
                scheme,
                constraints: None,
            });
        }
        let mut constraints = Vec::new();
        for c in list.split('|') {
            let c = c.trim();
            let (op, version) = [
                ("!=", Op::Ne),
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(p, op)| c.strip_prefix(p).map(|v| (*op, v)))
            .unwrap_or((Op::Eq, c));
            let version = version.trim();
            if version.is_empty() || version == "*" {
                return Err(format!("'{text}': constraint '{c}' has no version"));
            }
            constraints.push((op, version.to_owned()));
        }
        Ok(Range {
            text: text.to_owned(),
            scheme,
            constraints: Some(constraints),
        })
    }

    /// The scheme its versions are ordered by.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether `version` is in the range.
    pub fn contains(&self, version: &str) -> bool {
        let Some(constraints) = &self.constraints else {
            return true;
        };
        let cmp = |a: &str, b: &str| self.scheme.compare(a, b);
        for (op, v) in constraints {
            match op {
                Op::Eq if cmp(version, v) == Ordering::Equal => return true,
                Op::Ne if cmp(version, v) == Ordering::Equal => return false,
                _ => {}
            }
        }
        let mut bounds: Vec<&(Op, String)> = constraints
            .iter()
            .filter(|(op, _)| !matches!(op, Op::Eq | Op::Ne))
            .collect();
        bounds.sort_by(|a, b| cmp(&a.1, &b.1));
        let holds = |(op, v): &(Op, String)| {
            let o = cmp(version, v);
            match op {
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                Op::Eq | Op::Ne => false,
            }
        };
        if let Some(first) = bounds.first() {
            if matches!(first.0, Op::Lt | Op::Le) && holds(first) {
                return true;
            }
        }
        if let Some(last) = bounds.last() {
            if matches!(last.0, Op::Gt | Op::Ge) && holds(last) {
                return true;
            }
        }
        bounds.windows(2).any(|pair| match pair {
            [low, high] => {
                matches!(low.0, Op::Gt | Op::Ge)
                    && matches!(high.0, Op::Lt | Op::Le)
                    && holds(low)
                    && holds(high)
            }
            _ => false,
        })
    }
}

/// rpmvercmp of `[EPOCH:]VERSION[-RELEASE]`: epochs numerically (none is 0), then versions,
/// then releases (a side without a release matches any).
fn rpm(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = rpm_parts(a);
    let (eb, vb, rb) = rpm_parts(b);
    ea.cmp(&eb)
        .then_with(|| segments(va, vb))
        .then_with(|| match (ra, rb) {
            (Some(ra), Some(rb)) => segments(ra, rb),
            _ => Ordering::Equal,
        })
}

/// `[EPOCH:]VERSION[-RELEASE]` split: the epoch (0 when none), version and release.
fn rpm_parts(s: &str) -> (u64, &str, Option<&str>) {
    let (epoch, rest) = match s.split_once(':') {
        Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, s),
    };
    match rest.rsplit_once('-') {
        Some((v, r)) => (epoch, v, Some(r)),
        None => (epoch, rest, None),
    }
}

/// `s` without its leading zeros.
fn trim_zeros(s: &[u8]) -> &[u8] {
    let z = s.iter().position(|c| *c != b'0').unwrap_or(s.len());
    s.get(z..).unwrap_or_default()
}

/// rpmvercmp's segment comparison: runs of digits (numerically) and of letters (by byte),
/// other characters separate; `~` sorts before anything, even the end; `^` after the end but
/// before anything else.
fn segments(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let skip = |s: &[u8]| -> usize {
        s.iter()
            .position(|c| c.is_ascii_alphanumeric() || *c == b'~' || *c == b'^')
            .unwrap_or(s.len())
    };
    loop {
        a = a.get(skip(a)..).unwrap_or_default();
        b = b.get(skip(b)..).unwrap_or_default();
        match (a.first(), b.first()) {
            (Some(b'~'), Some(b'~')) | (Some(b'^'), Some(b'^')) => {
                a = a.get(1..).unwrap_or_default();
                b = b.get(1..).unwrap_or_default();
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (Some(b'^'), None) => return Ordering::Greater,
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), _) => return Ordering::Less,
            (_, Some(b'^')) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(_)) => {
                let numeric = x.is_ascii_digit();
                let run = |s: &[u8]| {
                    s.iter()
                        .position(|c| {
                            if numeric {
                                !c.is_ascii_digit()
                            } else {
                                !c.is_ascii_alphabetic()
                            }
                        })
                        .unwrap_or(s.len())
                };
                let (na, nb) = (run(a), run(b));
                let (sa, sb) = (
                    a.get(..na).unwrap_or_default(),
                    b.get(..nb).unwrap_or_default(),
                );
                if nb == 0 {
                    // A number against letters: the number is newer.
                    return if numeric {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    };
                }
                let o = if numeric {
                    let (ta, tb) = (trim_zeros(sa), trim_zeros(sb));
                    ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
                } else {
                    sa.cmp(sb)
                };
                if o != Ordering::Equal {
                    return o;
                }
                a = a.get(na..).unwrap_or_default();
                b = b.get(nb..).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders() {
        let cases = [
            (Scheme::Deb, "1:1.0", "2.0", Ordering::Greater),
            (Scheme::Deb, "1.0~rc1", "1.0", Ordering::Less),
            (Scheme::Deb, "3.0.11-1~deb12u2", "3.0.11-1", Ordering::Less),
            (Scheme::Rpm, "1.10-1", "1.9-1", Ordering::Greater),
            (Scheme::Rpm, "2:1.0-1", "1:9.9-9", Ordering::Greater),
            (Scheme::Rpm, "1.0~rc1-1", "1.0-1", Ordering::Less),
            (Scheme::Rpm, "1.0^git1-1", "1.0-1", Ordering::Greater),
            (Scheme::Rpm, "1.0a", "1.0", Ordering::Greater),
            (Scheme::Rpm, "1.0-1.el9", "1.0-1.el9", Ordering::Equal),
            (Scheme::Rpm, "1.0", "1.0-5", Ordering::Equal),
            (Scheme::Generic, "1.02", "1.2", Ordering::Equal),
            (Scheme::Alpine, "3.1.4-r0", "3.1.10-r0", Ordering::Less),
        ];
        for (scheme, a, b, want) in cases {
            assert_eq!(scheme.compare(a, b), want, "{scheme:?} {a} vs {b}");
            assert_eq!(
                scheme.compare(b, a),
                want.reverse(),
                "{scheme:?} {b} vs {a}"
            );
        }
    }

    #[test]
    fn ranges() {
        let cases = [
            ("vers:deb/<3.0.11-1~deb12u2", "3.0.9-1", true),
            ("vers:deb/<3.0.11-1~deb12u2", "3.0.11-1~deb12u2", false),
            ("vers:deb/>=1.0|<2.0", "1.5", true),
            ("vers:deb/>=1.0|<2.0", "2.0", false),
            ("vers:deb/>=1.0|<2.0|>=3.0", "3.1", true),
            ("vers:deb/>=1.0|<2.0|>=3.0", "2.5", false),
            ("vers:rpm/1.0-1|1.1-1", "1.1-1", true),
            ("vers:rpm/>=1.0|!=1.5", "1.5", false),
            ("vers:rpm/*", "0", true),
            ("vers:generic/>2", "10", true),
        ];
        for (range, version, want) in cases {
            let r = Range::parse(range).expect(range);
            assert_eq!(r.contains(version), want, "{version} in {range}");
        }
        for bad in [
            "deb/<1",
            "vers:npm/<1",
            "vers:deb",
            "vers:deb/<",
            "vers:deb/1|>=",
        ] {
            assert!(Range::parse(bad).is_err(), "{bad}");
        }
    }
}
