//! Runs examples from `sql-examples/` against a running Sluice server and checks their
//! output: `sluice-example --server http://127.0.0.1:8088 sql-examples/clickstream-filter`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut url = "http://127.0.0.1:8088".to_string();
    let mut dirs = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => url = args.next().unwrap_or(url),
            "-h" | "--help" => {
                println!("usage: sluice-example [--server URL] EXAMPLE_DIR...");
                return ExitCode::SUCCESS;
            }
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    if dirs.is_empty() {
        eprintln!("usage: sluice-example [--server URL] EXAMPLE_DIR...");
        return ExitCode::from(2);
    }
    let run_id = sluice_e2e::unique("run");
    let mut failed = false;
    for dir in dirs {
        if let Err(e) = sluice_e2e::examples::run_example(&url, &dir, &run_id) {
            eprintln!("   FAILED: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
