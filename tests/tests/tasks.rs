//! A query over a topic of several partitions runs as a task per partition, and the
//! servers sharing a service id (and their worker threads) share its tasks. A stream
//! aggregation that groups by something other than the key runs in two parts, each a
//! task per partition, with a repartition topic between them; so does a table
//! aggregation that does, its topic carrying each change's retraction.

use serde_json::json;
use sluice_e2e::{Record, Server, consume_until, eventually, latest_values, produce, unique};
use std::collections::HashMap;
use std::time::Duration;

#[test]
fn tasks_spread_over_servers_and_threads() {
    let service = unique("svc");
    let a = Server::start_with(&service, &[("--stream-threads", "2")]);
    let b = Server::start_with(&service, &[("--stream-threads", "1")]);
    let topic = unique("tasks_src");
    let per_key = unique("tasks_per_key");
    let per_page = unique("tasks_per_page");
    let users_topic = unique("tasks_users");
    let users_per_page = unique("tasks_users_per_page");
    a.ok(&format!(
        "CREATE STREAM src (k STRING KEY, page STRING, v INT) WITH (kafka_topic='{topic}', partitions=4, value_format='JSON');"
    ));
    a.ok(&format!(
        "CREATE TABLE users (id STRING PRIMARY KEY, page STRING) WITH (kafka_topic='{users_topic}', partitions=4, value_format='JSON');"
    ));
    // Repartition topics are purged of what was read often, to see it here.
    let earliest = json!({"auto.offset.reset": "earliest", "repartition.purge.interval.ms": "100"});
    for sql in [
        format!(
            "CREATE TABLE per_key WITH (kafka_topic='{per_key}') AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM src GROUP BY k;"
        ),
        format!(
            "CREATE TABLE per_page WITH (kafka_topic='{per_page}') AS SELECT page, COUNT(*) AS n FROM src GROUP BY page;"
        ),
        format!(
            "CREATE TABLE users_per_page WITH (kafka_topic='{users_per_page}') AS SELECT page, COUNT(*) AS n FROM users GROUP BY page;"
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
    // Twenty users on pages p0..p2, then the first ten move to p9.
    let users: Vec<Record> = (0..30)
        .map(|i| {
            let page = if i < 20 {
                format!("p{}", i % 3)
            } else {
                "p9".into()
            };
            Record::new(
                Some(&format!("u{}", i % 20)),
                Some(&format!(r#"{{"PAGE":"{page}"}}"#)),
                1_000 + i as i64,
            )
        })
        .collect();
    produce(&users_topic, &users);

    let (by_key, by_page, by_user_page) = (
        a.query_id("CTAS_PER_KEY"),
        a.query_id("CTAS_PER_PAGE"),
        a.query_id("CTAS_USERS_PER_PAGE"),
    );
    let tasks =
        |query: &str| [&a, &b].map(|s| s.metric("sluice_query_tasks", query).unwrap_or(0.0) as u32);
    // Grouped by the key: four tasks, shared by both servers (three workers in all).
    let shared = eventually(Duration::from_secs(60), "the tasks to spread", || {
        let [on_a, on_b] = tasks(&by_key);
        (on_a + on_b == 4 && on_a > 0 && on_b > 0).then_some((on_a, on_b))
    });
    // A stream grouped by a value column: four tasks write the rows to the
    // repartition topic by their new key, four more aggregate them.
    eventually(Duration::from_secs(60), "both parts' tasks to run", || {
        let [on_a, on_b] = tasks(&by_page);
        (on_a + on_b == 8).then_some(())
    });
    // A table grouped by a value column: as the stream, in two parts of four tasks.
    eventually(
        Duration::from_secs(60),
        "the table's parts' tasks to run",
        || {
            let [on_a, on_b] = tasks(&by_user_page);
            (on_a + on_b == 8).then_some(())
        },
    );

    let want_by_key: HashMap<String, serde_json::Value> = (0..20)
        .map(|k| {
            let total: i64 = (0..400).filter(|i| i % 20 == k).sum();
            (format!("k{k}"), json!({"N": 20, "TOTAL": total}))
        })
        .collect();
    let out = consume_until(&per_key, Duration::from_secs(60), |r| {
        latest_values(r) == want_by_key
    });
    assert_eq!(latest_values(&out), want_by_key, "tasks held: {shared:?}");
    // Either server answers a pull query on the table, whichever holds the key's task.
    let total_k3: i64 = (0..400).filter(|i| i % 20 == 3).sum();
    for server in [&a, &b] {
        assert_eq!(
            server.query_rows("SELECT n, total FROM per_key WHERE k = 'k3';"),
            [json!([20, total_k3])]
        );
        assert_eq!(server.query_rows("SELECT * FROM per_key;").len(), 20);
    }
    let want_by_page: HashMap<String, serde_json::Value> = (0..3)
        .map(|p| {
            let n = (0..400).filter(|i| i % 3 == p).count();
            (format!("p{p}"), json!({"N": n}))
        })
        .collect();
    let out = consume_until(&per_page, Duration::from_secs(60), |r| {
        latest_values(r) == want_by_page
    });
    assert_eq!(latest_values(&out), want_by_page);
    let want_users: HashMap<String, serde_json::Value> = [
        ("p9", 10),
        ("p0", (10..20).filter(|i| i % 3 == 0).count()),
        ("p1", (10..20).filter(|i| i % 3 == 1).count()),
        ("p2", (10..20).filter(|i| i % 3 == 2).count()),
    ]
    .into_iter()
    .map(|(p, n)| (p.to_string(), json!({"N": n})))
    .collect();
    let out = consume_until(&users_per_page, Duration::from_secs(60), |r| {
        latest_values(r) == want_users
    });
    assert_eq!(latest_values(&out), want_users);

    // The records went through the repartition topic: the query's own figures count
    // its source's records in and its table's rows out, not those.
    let records_in = a
        .metric("sluice_query_records_in_total", &by_page)
        .unwrap_or(0.0)
        + b.metric("sluice_query_records_in_total", &by_page)
            .unwrap_or(0.0);
    assert_eq!(records_in, 400.0);

    // Once the aggregation has committed them, the repartition topic's records go.
    let repartition = format!("_sluice-{service}-query_{by_page}-Aggregate-GroupBy-repartition");
    eventually(
        Duration::from_secs(60),
        "the repartition topic to be purged",
        || {
            let deleted: i64 = (0..4).map(|p| low_watermark(&repartition, p)).sum();
            let left = consume_until(&repartition, Duration::from_secs(1), |_| false);
            (deleted >= 400 && left.is_empty()).then_some(())
        },
    );
}

/// The first offset a partition still holds.
fn low_watermark(topic: &str, partition: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", sluice_e2e::bootstrap())
        .create()
        .expect("a consumer");
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map(|(low, _)| low)
        .unwrap_or(0)
}

/// A stream joined with a table on a value column: the clicks are written to a
/// repartition topic keyed by user, with as many partitions as the table, and each user's
/// clicks meet the user's row in the task that holds it.
#[test]
fn a_join_on_a_value_column_goes_through_a_repartition_topic() {
    let server = Server::start_with(&unique("svc"), &[("--stream-threads", "2")]);
    let clicks = unique("tasks_clicks");
    let users = unique("tasks_users");
    let enriched = unique("tasks_enriched");
    server.ok(&format!(
        "CREATE STREAM clicks (click_id STRING KEY, user_id STRING, page STRING) WITH (kafka_topic='{clicks}', partitions=4, value_format='JSON');"
    ));
    server.ok(&format!(
        "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) WITH (kafka_topic='{users}', partitions=4, value_format='JSON');"
    ));
    let user_rows: Vec<Record> = (0..10)
        .map(|u| {
            Record::new(
                Some(&format!("u{u}")),
                Some(&format!(r#"{{"NAME":"user {u}"}}"#)),
                1_000,
            )
        })
        .collect();
    produce(&users, &user_rows);
    let (status, body) = server.ksql_with(
        &format!(
            "CREATE STREAM enriched WITH (kafka_topic='{enriched}') AS SELECT c.user_id AS user_id, page, name FROM clicks c JOIN users u ON c.user_id = u.id;"
        ),
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(status, 200, "{body}");
    let click_rows: Vec<Record> = (0..200)
        .map(|i| {
            Record::new(
                Some(&format!("c{i}")),
                Some(&format!(r#"{{"USER_ID":"u{}","PAGE":"/p{i}"}}"#, i % 10)),
                2_000 + i as i64,
            )
        })
        .collect();
    produce(&clicks, &click_rows);

    let query = server.query_id("CSAS_ENRICHED");
    eventually(Duration::from_secs(60), "both parts' tasks to run", || {
        (server.metric("sluice_query_tasks", &query) == Some(8.0)).then_some(())
    });
    let out = consume_until(&enriched, Duration::from_secs(60), |r| r.len() >= 200);
    let mut seen: Vec<(String, String, String)> = out
        .iter()
        .map(|(_, r)| {
            let v = r.value_json();
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                v["PAGE"].as_str().unwrap_or_default().to_string(),
                v["NAME"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String, String)> = (0..200)
        .map(|i| {
            (
                format!("u{}", i % 10),
                format!("/p{i}"),
                format!("user {}", i % 10),
            )
        })
        .collect();
    want.sort();
    assert_eq!(seen, want);
}

/// Two streams joined on a value column of each: both sides move through repartition
/// topics keyed by customer, and each customer's order meets its payment.
#[test]
fn a_stream_stream_join_on_values_moves_both_sides() {
    let server = Server::start(&unique("svc"));
    let orders = unique("tasks_orders");
    let payments = unique("tasks_payments");
    let paid = unique("tasks_paid");
    server.ok(&format!(
        "CREATE STREAM orders (id STRING KEY, customer STRING, amount INT) WITH (kafka_topic='{orders}', partitions=4, value_format='JSON');"
    ));
    server.ok(&format!(
        "CREATE STREAM payments (id STRING KEY, customer STRING, paid INT) WITH (kafka_topic='{payments}', partitions=4, value_format='JSON');"
    ));
    let (status, body) = server.ksql_with(
        &format!(
            "CREATE STREAM paid WITH (kafka_topic='{paid}') AS SELECT o.customer AS customer, amount, paid FROM orders o JOIN payments p WITHIN 1 HOUR ON o.customer = p.customer;"
        ),
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(status, 200, "{body}");
    let rows = |prefix: &str, field: &str, offset: i64| -> Vec<Record> {
        (0..20)
            .map(|c| {
                Record::new(
                    Some(&format!("{prefix}{c}")),
                    Some(&format!(r#"{{"CUSTOMER":"c{c}","{field}":{}}}"#, c * 10)),
                    10_000 + offset + c as i64,
                )
            })
            .collect()
    };
    produce(&orders, &rows("o", "AMOUNT", 0));
    produce(&payments, &rows("p", "PAID", 1_000));

    let query = server.query_id("CSAS_PAID");
    // Two writing parts and the joining one, four tasks each.
    eventually(
        Duration::from_secs(60),
        "all three parts' tasks to run",
        || (server.metric("sluice_query_tasks", &query) == Some(12.0)).then_some(()),
    );
    let out = consume_until(&paid, Duration::from_secs(60), |r| r.len() >= 20);
    let mut seen: Vec<(String, serde_json::Value)> = out
        .iter()
        .map(|(_, r)| {
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                r.value_json(),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, serde_json::Value)> = (0..20)
        .map(|c| (format!("c{c}"), json!({"AMOUNT": c * 10, "PAID": c * 10})))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, want);
}

/// A task whose state store is still locked here (by the task's previous holder, winding
/// down; in this test, by the test itself) waits, while its worker runs its other tasks;
/// it starts once the lock is gone.
#[test]
fn a_task_whose_store_is_locked_waits_while_the_others_run() {
    let service = unique("svc");
    let mut server = Server::start_with(&service, &[("--stream-threads", "1")]);
    let (src, counts) = (unique("locked_src"), unique("locked_counts"));
    server.ok(&format!(
        "CREATE STREAM src (k STRING KEY, v INT) WITH (kafka_topic='{src}', value_format='JSON', partitions=4);"
    ));
    let (status, body) = server.ksql_with(
        &format!("CREATE TABLE counts WITH (kafka_topic='{counts}') AS SELECT k, COUNT(*) AS n FROM src GROUP BY k;"),
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(status, 200, "{body}");
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let partition = |k: &str| sluice_runtime::driver::partition_for(Some(k.as_bytes()), 4);
    let round = |ts: i64| -> Vec<Record> {
        keys.iter()
            .map(|k| Record::new(Some(k), Some(r#"{"V":1}"#), ts))
            .collect()
    };
    produce(&src, &round(1));
    let counted = |n: i64, only: &dyn Fn(&str) -> bool| {
        let want: HashMap<String, serde_json::Value> = keys
            .iter()
            .filter(|k| only(k))
            .map(|k| (k.clone(), json!({"N": n})))
            .collect();
        move |out: &[(i32, Record)]| {
            let seen = latest_values(out);
            want.iter().all(|(k, v)| seen.get(k) == Some(v))
        }
    };
    let out = consume_until(&counts, Duration::from_secs(60), counted(1, &|_| true));
    assert!(counted(1, &|_| true)(&out), "every key counted once");

    // Task 0's store is held while the server starts again.
    server.stop();
    let query = server_query_dir(&server, "CTAS_COUNTS");
    let held = sluice_state::StateDb::open(&query.join("task_0")).expect("the store opens");
    server.restart();
    produce(&src, &round(2));
    // The other three tasks count their keys' second records meanwhile.
    let others = |k: &str| partition(k) != 0;
    let out = consume_until(&counts, Duration::from_secs(60), counted(2, &others));
    assert!(
        counted(2, &others)(&out),
        "the other tasks ran while task 0 waited; log:\n{}",
        server.log_text()
    );
    // Let go: task 0 starts and counts its keys too.
    drop(held);
    let out = consume_until(&counts, Duration::from_secs(60), counted(2, &|_| true));
    assert!(
        counted(2, &|_| true)(&out),
        "task 0 ran once its store was free"
    );
}

/// The state directory of the query whose id starts with `prefix`.
fn server_query_dir(server: &Server, prefix: &str) -> std::path::PathBuf {
    std::fs::read_dir(server.state_dir())
        .expect("the state directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&format!("query_{prefix}")))
        })
        .expect("the query's state directory")
}
