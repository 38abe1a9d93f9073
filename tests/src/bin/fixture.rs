//! `fixture NAME...`: build (or reuse from the cache) the named fixture disk images and print
//! their paths, one per line; `fixture --list` prints the catalogue. Used by the benchmarks and
//! handy for poking at a fixture by hand.

use std::process::ExitCode;

use snapscan_tests::images;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!("usage: fixture --list | fixture NAME...");
        return ExitCode::from(2);
    }
    if args.iter().any(|a| a == "--list") {
        for f in images::catalogue() {
            println!("{:<24} {}", f.name, f.what);
        }
        return ExitCode::SUCCESS;
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
