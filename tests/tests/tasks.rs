//! A query over a topic of several partitions runs as a task per partition, and the
//! servers sharing a service id (and their worker threads) share its tasks. A query that
//! groups by something other than the key runs as one task.

use serde_json::json;
use sluice_e2e::{Record, Server, consume_until, eventually, produce, unique};
use std::collections::HashMap;
use std::time::Duration;

/// The latest value per key of a table's output topic.
fn latest(records: &[(i32, Record)]) -> HashMap<String, serde_json::Value> {
    let mut out = HashMap::new();
    for (_, r) in records {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        out.insert(key, r.value_json());
    }
    out
}

#[test]
fn tasks_spread_over_servers_and_threads() {
    let service = unique("svc");
    let a = Server::start_with(&service, &[("--stream-threads", "2")]);
    let b = Server::start_with(&service, &[("--stream-threads", "1")]);
    let topic = unique("tasks_src");
    let per_key = unique("tasks_per_key");
    let per_page = unique("tasks_per_page");
    a.ok(&format!(
        "CREATE STREAM src (k STRING KEY, page STRING, v INT) WITH (kafka_topic='{topic}', partitions=4, value_format='JSON');"
    ));
    let earliest = json!({"auto.offset.reset": "earliest"});
    for sql in [
        format!(
            "CREATE TABLE per_key WITH (kafka_topic='{per_key}') AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM src GROUP BY k;"
        ),
        format!(
            "CREATE TABLE per_page WITH (kafka_topic='{per_page}') AS SELECT page, COUNT(*) AS n FROM src GROUP BY page;"
        ),
    ] {
        let (status, body) = a.ksql_with(&sql, earliest.clone());
        assert_eq!(status, 200, "{body}");
    }
    let records: Vec<Record> = (0..400)
        .map(|i| {
            Record::new(
                Some(&format!("k{}", i % 20)),
                Some(&format!(r#"{{"PAGE":"p{}","V":{i}}}"#, i % 3)),
                1_000 + i as i64,
            )
        })
        .collect();
    produce(&topic, &records);

    let ids = a.query_ids();
    let id = |prefix: &str| {
        ids.iter()
            .map(|(id, _)| id.clone())
            .find(|id| id.starts_with(prefix))
            .unwrap_or_else(|| panic!("no query {prefix}* in {ids:?}"))
    };
    let (by_key, by_page) = (id("CTAS_PER_KEY"), id("CTAS_PER_PAGE"));
    let tasks =
        |query: &str| [&a, &b].map(|s| s.metric("sluice_query_tasks", query).unwrap_or(0.0) as u32);
    // Grouped by the key: four tasks, shared by both servers (three workers in all).
    let shared = eventually(Duration::from_secs(60), "the tasks to spread", || {
        let [on_a, on_b] = tasks(&by_key);
        (on_a + on_b == 4 && on_a > 0 && on_b > 0).then_some((on_a, on_b))
    });
    // Grouped by a value column: the groups cross partitions, so one task.
    eventually(Duration::from_secs(60), "the single task to run", || {
        let [on_a, on_b] = tasks(&by_page);
        (on_a + on_b == 1).then_some(())
    });

    let want_by_key: HashMap<String, serde_json::Value> = (0..20)
        .map(|k| {
            let total: i64 = (0..400).filter(|i| i % 20 == k).sum();
            (format!("k{k}"), json!({"N": 20, "TOTAL": total}))
        })
        .collect();
    let out = consume_until(&per_key, Duration::from_secs(60), |r| {
        latest(r) == want_by_key
    });
    assert_eq!(latest(&out), want_by_key, "tasks held: {shared:?}");
    let want_by_page: HashMap<String, serde_json::Value> = (0..3)
        .map(|p| {
            let n = (0..400).filter(|i| i % 3 == p).count();
            (format!("p{p}"), json!({"N": n}))
        })
        .collect();
    let out = consume_until(&per_page, Duration::from_secs(60), |r| {
        latest(r) == want_by_page
    });
    assert_eq!(latest(&out), want_by_page);
}
