//! `qflow-receiver [--token T] [--port P] [--keep-files]`: run the fake QFlow receiver of the
//! tests as a standalone server, for the upload benchmark and for poking at by hand. Prints the
//! upload URL on one line and serves until killed. The token comes from `--token`, else
//! `$QFLOW_TOKEN`. Without `--keep-files` each stored file is deleted once it has been hashed
//! (files go to a temporary directory under `$TMPDIR`). It injects no faults.

use std::io::Write;

use anyhow::{bail, Context};
use snapscan_tests::qflow::{FakeQflow, Options};

const USAGE: &str = "usage: qflow-receiver [--token TOKEN] [--port PORT] [--keep-files]";

fn main() -> anyhow::Result<()> {
    let mut token = std::env::var("QFLOW_TOKEN").ok();
    let mut options = Options {
        port: 0,
        keep_files: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--token" => token = Some(value().context("--token needs a value")?),
            "--port" => {
                let port = value().context("--port needs a value")?;
                options.port = port
                    .parse()
                    .with_context(|| format!("bad --port '{port}'"))?;
            }
            "--keep-files" => {
                options.keep_files = match inline.as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(other) => bail!("bad --keep-files '{other}': true or false"),
                }
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    let token = token.context("no token: pass --token or set QFLOW_TOKEN")?;
    let receiver = FakeQflow::try_start(&token, options)?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", receiver.url())
        .and_then(|()| stdout.flush())
        .context("failed to print the url")?;
    loop {
        std::thread::park();
    }
}
