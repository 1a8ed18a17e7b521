//! Every example in `sql-examples/` runs against the real broker and produces exactly
//! the output it documents.

use sluice_e2e::{Server, examples::run_example, unique};
use std::path::Path;

#[test]
fn every_example_produces_its_expected_output() {
    let server = Server::start(&unique("examples"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql-examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("sql-examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("statements.sql").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no examples found in {}", root.display());
    for dir in dirs {
        let run_id = unique("run");
        if let Err(e) = run_example(&server.url, &dir, &run_id) {
            panic!("{}: {e}\nserver log:\n{}", dir.display(), server.log_text());
        }
    }
}
