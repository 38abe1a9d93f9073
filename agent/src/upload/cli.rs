//! `snapscan upload`: send kept results again, e.g. after a failed upload. A path is one of:
//!
//! - a scan's output directory, or its `report.json`: every result file the report lists goes
//!   with the scan's own metadata fields (`upload_fields` of the report: snapshot, instance, OS,
//!   scan id...), so each gets the idempotency key of the first attempt and a receiver that
//!   already has it stores it once. A file that changed since the scan (its size differs from
//!   the report's) is refused rather than sent as the scan's result;
//! - any other file: sent alone with the `--field NAME=VALUE` fields.
//!
//! One line per file on stdout; exit 0 when every file was acknowledged.
//!
//! Not here: parsing the command line ([`crate::cli`]), loading settings or choosing the sink
//! (the caller builds it, and refuses to run without a destination).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::{upload, Sink, UploadItem};
use crate::cli::{UploadArgs, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::scan::report::{OutputFile, FORMAT};
use crate::scan::REPORT_FILE;

/// What `snapscan upload` reads of a kept `report.json`.
#[derive(Debug, Deserialize)]
struct KeptScan {
    format: String,
    outputs: Vec<OutputFile>,
    #[serde(default)]
    upload_fields: BTreeMap<String, String>,
}

/// One file to send and the fields that go with it.
struct Send {
    path: PathBuf,
    fields: BTreeMap<String, String>,
    /// The size the scan's report gives, for a kept scan's file.
    size: Option<u64>,
}

/// Parse `NAME=VALUE` fields.
fn parse_fields(raw: &[String]) -> Result<BTreeMap<String, String>, String> {
    raw.iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => Err(format!("--field '{f}' is not NAME=VALUE")),
        })
        .collect()
}

/// The kept scan at `path` (its directory or its `report.json`), or `None` for another file.
fn kept_scan(path: &Path) -> anyhow::Result<Option<(PathBuf, KeptScan)>> {
    let (dir, report) = if path.is_dir() {
        (path.to_path_buf(), path.join(REPORT_FILE))
    } else if path.file_name().is_some_and(|n| n == REPORT_FILE) {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, path.to_path_buf())
    } else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&report).with_context(|| {
        format!(
            "'{}' is not a kept scan: cannot read its {REPORT_FILE}",
            path.display()
        )
    })?;
    let kept: KeptScan = serde_json::from_str(&text)
        .with_context(|| format!("'{}' is not a snapscan report", report.display()))?;
    anyhow::ensure!(
        kept.format == FORMAT,
        "'{}' is a report of format '{}', not {FORMAT}",
        report.display(),
        kept.format
    );
    Ok(Some((dir, kept)))
}

/// What to send for the paths given.
fn plan(args: &UploadArgs) -> Result<Vec<Send>, (u8, String)> {
    let fields = parse_fields(&args.fields).map_err(|e| (EXIT_USAGE, e))?;
    let mut sends = Vec::new();
    for path in &args.files {
        match kept_scan(path) {
            Ok(Some((dir, kept))) => {
                if !fields.is_empty() {
                    return Err((
                        EXIT_USAGE,
                        format!(
                            "--field cannot go with the kept scan '{}': its files are sent with \
                             the scan's own fields",
                            path.display()
                        ),
                    ));
                }
                sends.extend(kept.outputs.into_iter().map(|o| Send {
                    path: dir.join(&o.name),
                    fields: kept.upload_fields.clone(),
                    size: Some(o.size_bytes),
                }));
            }
            Ok(None) => sends.push(Send {
                path: path.clone(),
                fields: fields.clone(),
                size: None,
            }),
            Err(e) => return Err((EXIT_FAILURE, format!("{e:#}"))),
        }
    }
    Ok(sends)
}

/// Run `snapscan upload` to `sink`; returns the exit code.
pub async fn run_cli(args: &UploadArgs, sink: &Sink) -> u8 {
    let sends = match plan(args) {
        Ok(s) => s,
        Err((code, e)) => {
            say!("error: {e}");
            return code;
        }
    };
    let mut code = EXIT_OK;
    for send in sends {
        let shown = send.path.display();
        let item = UploadItem::new(&send.path, send.fields).await;
        let line = match item {
            Err(e) => Err(format!("{e}")),
            Ok(item) if send.size.is_some_and(|s| s != item.len) => Err(format!(
                "changed since the scan ({} bytes, the report says {})",
                item.len,
                send.size.unwrap_or_default()
            )),
            Ok(item) => {
                let progress = crate::progress::Progress::start(&format!(
                    "uploading {shown} ({})",
                    indicatif::HumanBytes(item.len)
                ));
                let o = upload(sink, &item).await;
                progress.finish();
                if o.acknowledged {
                    Ok(format!(
                        "{}{}{}",
                        if o.duplicate {
                            "already stored (same idempotency key) at "
                        } else {
                            "stored at "
                        },
                        sink.describe(),
                        o.receipt
                            .map(|r| format!(", receipt {r}"))
                            .unwrap_or_default()
                    ))
                } else {
                    Err(format!(
                        "after {} attempt(s): {}",
                        o.attempts,
                        o.error.unwrap_or_default()
                    ))
                }
            }
        };
        let line = match line {
            Ok(done) => format!("{shown}: {done}"),
            Err(e) => {
                code = EXIT_FAILURE;
                format!("{shown}: NOT stored: {e}")
            }
        };
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let ok = parse_fields(&["a=1".into(), "b=x=y".into(), "c=".into()]).expect("ok");
        assert_eq!(ok["a"], "1");
        assert_eq!(ok["b"], "x=y");
        assert_eq!(ok["c"], "");
        assert!(parse_fields(&["novalue".into()]).is_err());
        assert!(parse_fields(&["=v".into()]).is_err());
    }

    #[test]
    fn kept_scans_are_recognised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = serde_json::json!({
            "format": FORMAT,
            "outputs": [{"name": "a.cdx.json", "size_bytes": 2, "sha256": "00"}],
            "upload_fields": {"scan_id": "s-1", "snapshot_name": "snap"},
        });
        std::fs::write(dir.path().join(REPORT_FILE), report.to_string()).expect("write");
        for given in [dir.path().to_path_buf(), dir.path().join(REPORT_FILE)] {
            let (d, kept) = kept_scan(&given).expect("readable").expect("a kept scan");
            assert_eq!(d, dir.path());
            assert_eq!(kept.outputs.len(), 1);
            assert_eq!(kept.upload_fields["scan_id"], "s-1");
        }
        let other = dir.path().join("x.json");
        std::fs::write(&other, b"{}").expect("write");
        assert!(kept_scan(&other).expect("fine").is_none());
        let empty = tempfile::tempdir().expect("tempdir");
        let e = kept_scan(empty.path()).expect_err("no report");
        assert!(format!("{e:#}").contains("not a kept scan"), "{e:#}");
    }
}
