//! Exactly-once and at-least-once under `kill -9`, with the crash harness run small
//! (`sluice-crash` runs it with the counts).

use sluice_e2e::crash::{CrashRun, Disruption, Queries};

fn run(exactly_once: bool, cache: bool, seed: u64) {
    let run = CrashRun {
        records: 20_000,
        keys: 200,
        partitions: 4,
        kills: 3,
        disruption: Disruption::KillServer,
        exactly_once,
        commit_interval_ms: 100,
        cache,
        seed,
        queries: Queries::All,
        restore_timing: false,
    };
    if let Err(e) = run.run() {
        panic!("{run:?}: {e}");
    }
}

#[test]
fn exactly_once_survives_kills_without_a_gap_or_a_repeat() {
    // The cache off: every update is checked, not a row may be repeated.
    run(true, false, 42);
}

#[test]
fn at_least_once_survives_kills_without_a_gap() {
    run(false, true, 7);
}

/// Scale-out: two servers run the queries; the one running them is killed mid-way and
/// never comes back; the other takes them over and finishes, exactly once.
#[test]
fn a_second_server_takes_over_exactly_once() {
    let run = CrashRun {
        records: 20_000,
        keys: 200,
        partitions: 4,
        kills: 1,
        disruption: Disruption::FailOver,
        exactly_once: true,
        commit_interval_ms: 100,
        cache: true,
        seed: 11,
        queries: Queries::All,
        restore_timing: false,
    };
    if let Err(e) = run.run() {
        panic!("{run:?}: {e}");
    }
}

/// The broker goes away and comes back twice; the queries resume by themselves. It
/// stops the shared local broker, so it is ignored in `cargo test` and run on its own
/// by `scripts/test.sh` (`--ignored`), after every other test.
#[test]
#[ignore]
fn exactly_once_survives_broker_restarts() {
    let run = CrashRun {
        records: 20_000,
        keys: 200,
        partitions: 4,
        kills: 2,
        disruption: Disruption::RestartBroker,
        exactly_once: true,
        commit_interval_ms: 100,
        cache: false,
        seed: 3,
        queries: Queries::All,
        restore_timing: false,
    };
    if let Err(e) = run.run() {
        panic!("{run:?}: {e}");
    }
}

/// Servers joining and leaving while the first one works: every query's group
/// rebalances again and again with transactions open, and no record is lost or
/// written twice.
#[test]
fn exactly_once_survives_servers_joining_and_leaving() {
    let run = CrashRun {
        records: 20_000,
        keys: 200,
        partitions: 4,
        kills: 4,
        disruption: Disruption::Churn,
        exactly_once: true,
        // Longer intervals: more rebalances land while a transaction is open.
        commit_interval_ms: 500,
        cache: false,
        seed: 5,
        queries: Queries::All,
        restore_timing: false,
    };
    match run.run() {
        Ok(report) => eprintln!("commits refused in rebalances: {}", report.refused_commits),
        Err(e) => panic!("{run:?}: {e}"),
    }
}
