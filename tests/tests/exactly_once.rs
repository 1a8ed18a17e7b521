//! Exactly-once and at-least-once under `kill -9`, with the crash harness run small
//! (`sluice-crash` runs it with the counts).

use sluice_e2e::crash::CrashRun;

fn run(exactly_once: bool, seed: u64) {
    let run = CrashRun {
        records: 20_000,
        keys: 200,
        partitions: 4,
        kills: 3,
        exactly_once,
        commit_interval_ms: 100,
        seed,
    };
    if let Err(e) = run.run() {
        panic!("{run:?}: {e}");
    }
}

#[test]
fn exactly_once_survives_kills_without_a_gap_or_a_repeat() {
    run(true, 42);
}

#[test]
fn at_least_once_survives_kills_without_a_gap() {
    run(false, 7);
}
