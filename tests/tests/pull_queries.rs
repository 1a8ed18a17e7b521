//! Pull queries on tables against a real broker: answered from the table's view (a
//! local store that follows the table's topic), by key lookups where the WHERE clause
//! names the keys, and still right after updates, deletions, a restart and a drop.

use serde_json::{Value, json};
use sluice_e2e::{Record, Server, eventually, produce, unique};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Rows pull queries have read from the view of `topic` so far.
fn view_rows_read(server: &Server, topic: &str) -> f64 {
    server
        .sample("sluice_pull_view_rows_read_total", &[("topic", topic)])
        .unwrap_or(0.0)
}

/// Runs a pull query and returns its rows and how many rows it read from the view.
fn pull(server: &Server, topic: &str, sql: &str) -> (Vec<Value>, f64) {
    let before = view_rows_read(server, topic);
    let rows = server.query_rows(sql);
    (rows, view_rows_read(server, topic) - before)
}

fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// Creates the stream `src` (`id STRING KEY, v INT`) with `partitions`, and a table over
/// it by `create_table` (its topic written `{table}`); returns both topics.
fn stream_and_table(server: &Server, partitions: u32, create_table: &str) -> (String, String) {
    let source = unique("view_src");
    let table = unique("view_table");
    server.ok(&format!(
        "CREATE STREAM src (id STRING KEY, v INT) \
         WITH (kafka_topic='{source}', value_format='JSON', partitions={partitions});"
    ));
    server.ok(&create_table.replace("{table}", &table));
    (source, table)
}

/// Creates the source table `name` (`id STRING PRIMARY KEY, name STRING`) with
/// `partitions` and writes it the rows (id, name; None deletes); returns its topic.
fn source_table(
    server: &Server,
    name: &str,
    partitions: u32,
    rows: &[(&str, Option<&str>)],
) -> String {
    let topic = unique(&format!("view_{name}"));
    server.ok(&format!(
        "CREATE SOURCE TABLE {name} (id STRING PRIMARY KEY, name STRING) \
         WITH (kafka_topic='{topic}', value_format='JSON', partitions={partitions});"
    ));
    let records: Vec<Record> = rows
        .iter()
        .zip(1..)
        .map(|((id, v), ts)| {
            let value = v.map(|v| format!(r#"{{"NAME":"{v}"}}"#));
            Record::new(Some(id), value.as_deref(), ts)
        })
        .collect();
    produce(&topic, &records);
    topic
}

#[test]
fn a_table_query_answers_key_lookups_from_its_view_through_updates_and_restarts() {
    let mut server = Server::start(&unique("svc"));
    let (source, totals) = stream_and_table(
        &server,
        4,
        "CREATE TABLE totals WITH (kafka_topic='{table}') AS \
         SELECT id, COUNT(*) AS n, SUM(v) AS total FROM src GROUP BY id HAVING SUM(v) < 1000;",
    );
    let keys = 500;
    let records: Vec<Record> = (0..keys)
        .map(|i| Record::new(Some(&format!("k{i}")), Some(r#"{"V":1}"#), 1000 + i))
        .collect();
    produce(&source, &records);

    // A scan reads every row of the view.
    let all = eventually(WAIT, "every key in the table", || {
        let rows = server.query_rows("SELECT * FROM totals;");
        (rows.len() == keys as usize).then_some(rows)
    });
    assert!(all.contains(&json!(["k7", 1, 1])), "{all:?}");
    // The query's stores take room on disk, which /metrics reports.
    let query = server.query_id("CTAS_TOTALS");
    assert!(
        server
            .metric("sluice_query_state_bytes", &query)
            .unwrap_or(0.0)
            > 0.0
    );
    assert!(view_rows_read(&server, &totals) >= keys as f64);

    // A key lookup reads only its keys' rows.
    let (rows, read) = pull(&server, &totals, "SELECT * FROM totals WHERE id = 'k7';");
    assert_eq!(rows, [json!(["k7", 1, 1])]);
    assert_eq!(read, 1.0);
    let (rows, read) = pull(
        &server,
        &totals,
        "SELECT id, total FROM totals WHERE id IN ('k1', 'k2', 'nope') AND n = 1;",
    );
    assert_eq!(sorted(rows), [json!(["k1", 1]), json!(["k2", 1])]);
    assert_eq!(read, 2.0);
    // A range of a STRING key reads only the rows in it: k10 and k100 to k109.
    let (rows, read) = pull(
        &server,
        &totals,
        "SELECT id FROM totals WHERE id >= 'k10' AND id < 'k11';",
    );
    assert_eq!(rows.len(), 11, "{rows:?}");
    assert_eq!(read, 11.0);
    // The rest of the WHERE clause still applies to the rows a lookup finds.
    let (rows, _) = pull(
        &server,
        &totals,
        "SELECT * FROM totals WHERE id = 'k7' AND n > 1;",
    );
    assert!(rows.is_empty(), "{rows:?}");

    // An update, and a deletion (HAVING no longer holds): the lookups follow.
    produce(
        &source,
        &[
            Record::new(Some("k7"), Some(r#"{"V":5}"#), 5000),
            Record::new(Some("k8"), Some(r#"{"V":2000}"#), 5001),
        ],
    );
    eventually(WAIT, "k7's new total", || {
        let rows = server.query_rows("SELECT * FROM totals WHERE id = 'k7';");
        (rows == [json!(["k7", 2, 6])]).then_some(())
    });
    eventually(WAIT, "k8 deleted", || {
        server
            .query_rows("SELECT * FROM totals WHERE id = 'k8';")
            .is_empty()
            .then_some(())
    });
    assert_eq!(
        server.query_rows("SELECT * FROM totals;").len(),
        keys as usize - 1
    );

    // After a restart the view goes on from the offsets it stored.
    server.restart();
    let (rows, read) = pull(&server, &totals, "SELECT * FROM totals WHERE id = 'k7';");
    assert_eq!(rows, [json!(["k7", 2, 6])]);
    assert_eq!(read, 1.0);
    let log = server.log_text();
    let opened: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("following the table's topic"))
        .collect();
    assert_eq!(opened.len(), 2, "{log}");
    assert!(opened[0].contains("positions={}"), "{}", opened[0]);
    assert!(!opened[1].contains("positions={}"), "{}", opened[1]);

    // Dropping the table removes its view.
    let view_dir = server.state_dir().join("views").join(&totals);
    assert!(view_dir.exists());
    server.ok("DROP TABLE totals DELETE TOPIC;");
    assert!(!view_dir.exists());
}

#[test]
fn windowed_and_source_tables_answer_from_their_views() {
    let server = Server::start(&unique("svc"));
    let (source, windows) = stream_and_table(
        &server,
        2,
        "CREATE TABLE per_minute WITH (kafka_topic='{table}', key_format='JSON') AS \
         SELECT id, COUNT(*) AS n FROM src WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY id;",
    );
    produce(
        &source,
        &[
            Record::new(Some("a"), Some(r#"{"V":1}"#), 1_000),
            Record::new(Some("a"), Some(r#"{"V":1}"#), 2_000),
            Record::new(Some("a"), Some(r#"{"V":1}"#), 61_000),
            Record::new(Some("b"), Some(r#"{"V":1}"#), 3_000),
            Record::new(Some("ab"), Some(r#"{"V":1}"#), 4_000),
        ],
    );
    // Each window of the key, and no other key's.
    let rows = eventually(WAIT, "a's windows", || {
        let rows = server.query_rows("SELECT * FROM per_minute WHERE id = 'a';");
        (rows.len() == 2 && rows.iter().any(|r| r[3] == json!(2))).then_some(rows)
    });
    assert_eq!(
        sorted(rows),
        [json!(["a", 0, 60000, 2]), json!(["a", 60000, 120000, 1])]
    );
    let (rows, read) = pull(
        &server,
        &windows,
        "SELECT id, n FROM per_minute WHERE id = 'a' AND WINDOWSTART >= 60000;",
    );
    assert_eq!(rows, [json!(["a", 1])]);
    assert_eq!(read, 2.0);

    // A source table written by another client, with a KAFKA key: lookups by key.
    let users = source_table(
        &server,
        "users",
        3,
        &[
            ("u1", Some("ann")),
            ("u2", Some("bob")),
            ("u3", Some("cy")),
            ("u2", Some("bo")),
            ("u3", None),
        ],
    );
    let (rows, read) = pull(
        &server,
        &users,
        "SELECT * FROM users WHERE id IN ('u2', 'u3');",
    );
    assert_eq!(rows, [json!(["u2", "bo"])]);
    assert_eq!(read, 1.0);
    let (rows, read) = pull(&server, &users, "SELECT name FROM users;");
    assert_eq!(sorted(rows), [json!(["ann"]), json!(["bo"])]);
    assert_eq!(read, 2.0);
}

/// A table whose topic's records were all deleted (retention) answers at once: the view
/// reads nothing from such a partition, and there is nothing to wait for.
#[test]
fn a_table_whose_records_retention_removed_answers_at_once() {
    let server = Server::start(&unique("svc"));
    let topic = source_table(&server, "gone", 1, &[("a", Some("x")), ("b", Some("y"))]);
    let admin = sluice_runtime::KafkaAdmin::new(&sluice_e2e::bootstrap()).expect("an admin client");
    futures::executor::block_on(admin.delete_records_before(&[(topic.clone(), 0, 2)]))
        .expect("records deleted");
    let started = std::time::Instant::now();
    assert!(server.query_rows("SELECT * FROM gone;").is_empty());
    assert!(
        server
            .query_rows("SELECT * FROM gone WHERE id = 'a';")
            .is_empty()
    );
    // Well under the 30 s a pull query waits for a view that is behind.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A table whose topic gains partitions: its view reads the new ones too, so a pull
/// query soon sees the rows written there.
#[test]
fn a_table_whose_topic_gains_partitions_answers_from_all_of_them() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    let server = Server::start(&unique("svc"));
    let topic = source_table(&server, "grows", 1, &[("a", Some("x"))]);
    assert_eq!(
        server.query_rows("SELECT * FROM grows;"),
        [json!(["a", "x"])]
    );
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", sluice_e2e::bootstrap())
        .create()
        .expect("an admin client");
    let added = futures::executor::block_on(
        admin.create_partitions(&[NewPartitions::new(&topic, 4)], &AdminOptions::new()),
    )
    .expect("partitions added");
    assert!(added.iter().all(Result::is_ok), "{added:?}");
    // Twenty new keys: Kafka's partitioner puts most of them in the new partitions.
    let ids: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    let records: Vec<Record> = ids
        .iter()
        .map(|id| Record::new(Some(id), Some(r#"{"NAME":"y"}"#), 10))
        .collect();
    let sluice_admin =
        sluice_runtime::KafkaAdmin::new(&sluice_e2e::bootstrap()).expect("an admin client");
    eventually(
        Duration::from_secs(30),
        "the topic to show 4 partitions",
        || (sluice_admin.partitions(&topic).ok()?? == 4).then_some(()),
    );
    produce(&topic, &records);
    eventually(
        Duration::from_secs(30),
        "every row in the pull query",
        || {
            let rows = server.query_rows("SELECT * FROM grows;");
            (rows.len() == 21).then_some(())
        },
    );
    assert_eq!(
        server.query_rows("SELECT name FROM grows WHERE id = 'n7';"),
        [json!(["y"])]
    );
}

/// This server's count of parts of pull queries that owners answered (`answered`) or
/// that it answered for owners that could not (`answered_here`).
fn forwarded(server: &Server, outcome: &str) -> f64 {
    server
        .sample("sluice_pull_forwarded_total", &[("outcome", outcome)])
        .unwrap_or(0.0)
}

#[test]
fn pull_queries_are_answered_by_the_servers_that_own_the_partitions() {
    let service = unique("svc");
    let one_thread = [("--stream-threads", "1")];
    let a = Server::start_with(&service, &one_thread);
    let mut b = Server::start_with(&service, &one_thread);
    let (source, table) = stream_and_table(
        &a,
        4,
        "CREATE TABLE totals WITH (kafka_topic='{table}') AS \
         SELECT id, SUM(v) AS total FROM src GROUP BY id EMIT CHANGES;",
    );
    let ids: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let records: Vec<Record> = ids
        .iter()
        .zip(1..)
        .map(|(id, v)| Record::new(Some(id), Some(&format!(r#"{{"V":{v}}}"#)), v))
        .collect();
    produce(&source, &records);
    let query = a.query_id("CTAS_TOTALS");
    // The four tasks spread over both servers.
    eventually(WAIT, "each server to hold some of the tasks", || {
        let held = |s: &Server| s.metric("sluice_query_tasks", &query).unwrap_or(0.0);
        (held(&a) >= 1.0 && held(&b) >= 1.0 && held(&a) + held(&b) == 4.0).then_some(())
    });
    let expected: Vec<Value> = sorted(ids.iter().zip(1..).map(|(id, v)| json!([id, v])).collect());
    // A scan on either server: every row, each server's view reading only its own
    // partitions' rows and the other's answering for the rest.
    for (asked, other) in [(&a, &b), (&b, &a)] {
        let answered = forwarded(asked, "answered");
        let (rows, read_here) = eventually(WAIT, "the scan to see every row", || {
            let before = view_rows_read(other, &table);
            let (rows, read_here) = pull(asked, &table, "SELECT * FROM totals;");
            let read_there = view_rows_read(other, &table) - before;
            (sorted(rows.clone()) == expected && read_here + read_there == 40.0)
                .then_some((rows, read_here))
        });
        assert_eq!(rows.len(), 40);
        assert!(
            read_here > 0.0 && read_here < 40.0,
            "the asked server read {read_here} rows of its own view"
        );
        assert!(forwarded(asked, "answered") > answered);
    }
    // A key lookup reads only the key's partition, on the server owning it: the two
    // views together read one row per lookup.
    let before = view_rows_read(&a, &table) + view_rows_read(&b, &table);
    for (id, v) in ids.iter().zip(1..).take(10) {
        let rows = a.query_rows(&format!("SELECT total FROM totals WHERE id = '{id}';"));
        assert_eq!(rows, [json!([v])], "{id}");
    }
    let after = view_rows_read(&a, &table) + view_rows_read(&b, &table);
    assert_eq!(after - before, 10.0);
    // LIMIT counts the rows of every part.
    assert_eq!(a.query_rows("SELECT * FROM totals LIMIT 25;").len(), 25);
    // An owner that is gone: its partitions are answered here (until the group gives
    // its tasks to the servers left, which then own them).
    b.kill();
    let rows = a.query_rows("SELECT * FROM totals;");
    assert_eq!(sorted(rows), expected);
    // The group keeps a killed member for its session (6 s): that scan was sent to it.
    assert!(forwarded(&a, "answered_here") >= 1.0);
    let lookups: Vec<Value> = ids
        .iter()
        .map(|id| a.query_rows(&format!("SELECT * FROM totals WHERE id = '{id}';"))[0].clone())
        .collect();
    assert_eq!(sorted(lookups), expected);
}

#[test]
fn regrouped_and_windowed_tables_answer_across_servers() {
    let service = unique("svc");
    let one_thread = [("--stream-threads", "1")];
    let a = Server::start_with(&service, &one_thread);
    let b = Server::start_with(&service, &one_thread);
    let (source, _) = stream_and_table(
        &a,
        4,
        "CREATE TABLE bands WITH (kafka_topic='{table}') AS \
         SELECT v % 5 AS band, COUNT(*) AS n FROM src GROUP BY v % 5 EMIT CHANGES;",
    );
    let hourly = unique("view_hourly");
    a.ok(&format!(
        "CREATE TABLE hourly WITH (kafka_topic='{hourly}') AS SELECT id, COUNT(*) AS n \
         FROM src WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY id EMIT CHANGES;"
    ));
    let ids: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let records: Vec<Record> = ids
        .iter()
        .zip(0..)
        .map(|(id, v)| Record::new(Some(id), Some(&format!(r#"{{"V":{v}}}"#)), 1000 + v))
        .collect();
    produce(&source, &records);
    let queries = [a.query_id("CTAS_BANDS"), a.query_id("CTAS_HOURLY")];
    eventually(WAIT, "each server to hold tasks of both queries", || {
        let spread = queries.iter().all(|q| {
            let held = |s: &Server| s.metric("sluice_query_tasks", q).unwrap_or(0.0);
            held(&a) >= 1.0 && held(&b) >= 1.0
        });
        spread.then_some(())
    });
    let answered = forwarded(&b, "answered");
    // The regrouped table is written by the part that reads the repartition topic.
    let expected_bands: Vec<Value> = (0..5).map(|band| json!([band, 8])).collect();
    eventually(WAIT, "every band counted", || {
        let rows = sorted(b.query_rows("SELECT * FROM bands;"));
        (rows == expected_bands).then_some(())
    });
    // A windowed key's rows may lie in any partition: every owner is asked.
    eventually(WAIT, "every window counted", || {
        let rows = b.query_rows("SELECT id, n FROM hourly;");
        (rows.len() == 40).then_some(())
    });
    for id in ids.iter().take(8) {
        let rows = b.query_rows(&format!(
            "SELECT id, WINDOWSTART, n FROM hourly WHERE id = '{id}';"
        ));
        assert_eq!(rows, [json!([id, 0, 1])], "{id}");
    }
    assert!(forwarded(&b, "answered") > answered);
    assert_eq!(forwarded(&b, "answered_here"), 0.0);
}
