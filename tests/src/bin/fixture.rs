//! `fixture NAME...`: build (or reuse from the cache) the named fixture disk images and print
//! their paths, one per line; `fixture --list` prints the catalogue; `fixture --formats NAME DIR`
//! writes fixture NAME in every VM image format into DIR (`images::formats`) and prints
//! `variant path` lines. Used by the benchmarks and handy for poking at a fixture by hand.

use std::process::ExitCode;

use snapscan_tests::images::{self, formats};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!("usage: fixture --list | fixture --formats NAME DIR | fixture NAME...");
        return ExitCode::from(2);
    }
    if args.iter().any(|a| a == "--list") {
        for f in images::catalogue() {
            println!("{:<24} {}", f.name, f.what);
        }
        return ExitCode::SUCCESS;
    }
    if let [flag, name, dir] = args.as_slice() {
        if flag == "--formats" {
            let built = images::image(name).and_then(|raw| {
                formats::VARIANTS
                    .iter()
                    .map(|&v| formats::build(&raw, v, dir.as_ref()).map(|p| (v.name, p)))
                    .collect::<anyhow::Result<Vec<_>>>()
            });
            return match built {
                Ok(list) => {
                    for (name, path) in list {
                        println!("{name} {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    for name in &args {
        match images::image(name) {
            Ok(path) => println!("{}", path.display()),
            Err(e) => {
                eprintln!("error: fixture {name}: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
