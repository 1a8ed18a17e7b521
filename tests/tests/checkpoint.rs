//! A query's state stores outlive its server: a restart keeps them and replays only
//! the changelog written after their checkpoint, and a checkpoint that does not match
//! the changelog is not trusted.

use sluice_e2e::{Record, Server, consume_until, eventually, latest_values, produce, unique};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

const KEYS: usize = 50;

/// `rounds` rounds of one record per key, each with v = 1.
fn records(round: usize) -> Vec<Record> {
    (0..KEYS)
        .map(|k| {
            Record::new(
                Some(&format!("k{k}")),
                Some(r#"{"V":1}"#),
                1_000 + (round * KEYS + k) as i64,
            )
        })
        .collect()
}

/// Every key counted `rounds` times.
fn counted(rounds: usize) -> HashMap<String, serde_json::Value> {
    (0..KEYS)
        .map(|k| {
            (
                format!("k{k}"),
                serde_json::json!({"N": rounds, "TOTAL": rounds}),
            )
        })
        .collect()
}

/// Waits until the query runs both its tasks with their state restored, and returns
/// how many changelog entries the restore read.
fn restored_entries(server: &Server, query: &str) -> f64 {
    eventually(Duration::from_secs(60), "the tasks to restore", || {
        let tasks = server.metric("sluice_query_tasks", query)?;
        let restoring = server.metric("sluice_query_restoring", query)?;
        (tasks == 2.0 && restoring == 0.0)
            .then(|| server.metric("sluice_query_restored_entries", query))
            .flatten()
    })
}

#[test]
fn a_restart_replays_only_the_changelog_after_the_checkpoint() {
    let service = unique("ckpt");
    // One worker thread: a second one joining the group could get a commit of the
    // first refused, whose tasks would then restore in place, and the first start
    // would not be the clean one this test counts on.
    let mut server = Server::start_with(&service, &[("--stream-threads", "1")]);
    let src = unique("ckpt_src");
    let out = unique("ckpt_out");
    server.ok(&format!(
        "CREATE STREAM src (k STRING KEY, v INT) WITH (kafka_topic='{src}', partitions=2, value_format='JSON');"
    ));
    server.ok(&format!(
        "CREATE TABLE per_key WITH (kafka_topic='{out}') AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM src GROUP BY k;"
    ));
    let query = server.query_id("CTAS_PER_KEY");
    let query_dir = server
        .state_dir()
        .join(format!("_sluice-{service}-query_{query}"));
    let task_dir = |p: usize| -> PathBuf { query_dir.join(format!("task_{p}")) };
    let until = |rounds: usize| {
        let want = counted(rounds);
        let seen = consume_until(&out, Duration::from_secs(60), |r| latest_values(r) == want);
        assert_eq!(latest_values(&seen), want, "after {rounds} rounds");
    };
    for round in 0..3 {
        produce(&src, &records(round));
    }
    until(3);
    // The first start had nothing to restore.
    assert_eq!(restored_entries(&server, &query), 0.0);

    // A clean stop checkpoints the stores: the restart reads nothing of the changelog
    // and counts on from the stores.
    server.restart();
    assert_eq!(restored_entries(&server, &query), 0.0);
    for p in 0..2 {
        let checkpoint = std::fs::read_to_string(task_dir(p).join("sluice.checkpoint"))
            .unwrap_or_else(|e| panic!("task {p} has a checkpoint: {e}"));
        assert!(
            checkpoint.starts_with(&format!(
                "_sluice-{service}-query_{query}-state-changelog {p} "
            )),
            "{checkpoint}"
        );
    }
    produce(&src, &records(3));
    until(4);

    // A crash, then a checkpoint that claims more than the changelog holds (as after
    // the topic was recreated): that task's stores are rebuilt from the whole
    // changelog, the other's from its checkpoint on.
    server.kill();
    std::fs::write(
        task_dir(0).join("sluice.checkpoint"),
        format!("_sluice-{service}-query_{query}-state-changelog 0 999999999\n"),
    )
    .unwrap();
    server.restart();
    assert!(restored_entries(&server, &query) > 0.0);
    assert!(
        server
            .log_text()
            .contains("the state's checkpoint does not match its changelog"),
        "{}",
        server.log_text()
    );
    produce(&src, &records(4));
    until(5);
}
