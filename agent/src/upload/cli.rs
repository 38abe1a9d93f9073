//! `snapscan upload`: send result files to a sink by hand, e.g. the ones a scan kept locally
//! after its upload failed. One line per file on stdout; exit 0 when every file was
//! acknowledged.
//!
//! Not here: parsing the command line ([`crate::cli`]) or loading settings ([`crate::config`]).

use std::collections::BTreeMap;
use std::io::Write;

use super::{upload, Sink, UploadConfig, UploadItem};
use crate::cli::{UploadArgs, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// Parse `NAME=VALUE` fields.
fn parse_fields(raw: &[String]) -> Result<BTreeMap<String, String>, String> {
    raw.iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => Err(format!("--field '{f}' is not NAME=VALUE")),
        })
        .collect()
}

/// Run `snapscan upload`; returns the exit code.
pub async fn run_cli(args: &UploadArgs, cfg: &UploadConfig) -> u8 {
    let fields = match parse_fields(&args.fields) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let sink = match Sink::from_config(cfg, args.upload.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let mut code = EXIT_OK;
    for path in &args.files {
        let line = match UploadItem::new(path, fields.clone()).await {
            Err(e) => {
                code = EXIT_FAILURE;
                format!("{}: NOT stored: {e}", path.display())
            }
            Ok(item) => {
                let o = upload(&sink, &item).await;
                if o.acknowledged {
                    format!(
                        "{}: stored{} ({}){}",
                        path.display(),
                        if o.duplicate { " (already there)" } else { "" },
                        sink.describe(),
                        o.receipt
                            .map(|r| format!(", receipt {r}"))
                            .unwrap_or_default()
                    )
                } else {
                    code = EXIT_FAILURE;
                    format!(
                        "{}: NOT stored after {} attempt(s): {}",
                        path.display(),
                        o.attempts,
                        o.error.unwrap_or_default()
                    )
                }
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
}
