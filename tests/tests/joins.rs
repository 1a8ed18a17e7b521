//! Joins on the real broker: a clickstream enriched from a users table, and orders
//! matched to shipments, each across restarts that must restore the join's state (the
//! table's rows, the window's orders) from its RocksDB store, or with the checkpoints
//! gone, from the query's changelog.
//!
//! Needs a broker: `scripts/kafka-local.sh start` (the README's test command does it).

use serde_json::{Value, json};
use sluice_e2e::{Record, Server, consume, produce, unique};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The output records as (key, value JSON).
fn keyed(records: &[Record]) -> Vec<(String, Value)> {
    records
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap_or_default()).expect("utf-8 key"),
                if r.value.is_some() {
                    r.value_json()
                } else {
                    Value::Null
                },
            )
        })
        .collect()
}

/// The most changelog entries a start of a query restored, as its log tells.
fn restored_entries(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("restored state from the changelog"))
        .filter_map(|l| {
            let at = l.find("entries=")? + "entries=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn clickstream_is_enriched_from_a_users_table_across_a_restart() {
    let mut server = Server::start(&unique("svc"));
    let clicks = unique("clicks");
    let users = unique("users");
    let enriched = unique("enriched");
    server.ok(&format!(
        "CREATE TABLE users (user_id STRING PRIMARY KEY, name STRING, region STRING) \
           WITH (kafka_topic='{users}', value_format='JSON', partitions=2); \
         CREATE STREAM clicks (user_id STRING KEY, page STRING) \
           WITH (kafka_topic='{clicks}', value_format='JSON', partitions=2);"
    ));
    produce(
        &users,
        &[
            Record::new(Some("u1"), Some(r#"{"name":"Ann","region":"eu"}"#), 1_000),
            Record::new(Some("u2"), Some(r#"{"name":"Bob","region":"us"}"#), 1_000),
        ],
    );
    server.ok(&format!(
        "CREATE STREAM enriched WITH (kafka_topic='{enriched}') AS \
           SELECT c.user_id, page, name, UCASE(region) AS region \
           FROM clicks c LEFT JOIN users u ON c.user_id = u.user_id;"
    ));
    produce(
        &clicks,
        &[
            Record::new(Some("u1"), Some(r#"{"page":"/home"}"#), 2_000),
            Record::new(Some("u3"), Some(r#"{"page":"/about"}"#), 2_001),
        ],
    );
    let mut first = keyed(&consume(&enriched, 2, WAIT));
    first.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        first,
        vec![
            (
                "u1".into(),
                json!({"PAGE": "/home", "NAME": "Ann", "REGION": "EU"})
            ),
            (
                "u3".into(),
                json!({"PAGE": "/about", "NAME": null, "REGION": null})
            ),
        ]
    );

    assert!(
        server.log_text().contains("loaded a joined table"),
        "the new query loaded the users before the first click"
    );

    // After a restart the query must still know the users it read before: they are
    // behind its committed offsets, so only its restored state has them.
    server.restart();
    produce(
        &clicks,
        &[Record::new(Some("u2"), Some(r#"{"page":"/cart"}"#), 4_000)],
    );
    let all = keyed(&consume(&enriched, 3, WAIT));
    assert_eq!(
        all[2],
        (
            "u2".into(),
            json!({"PAGE": "/cart", "NAME": "Bob", "REGION": "US"})
        ),
        "log:\n{}",
        server.log_text()
    );
    // Killed, its state stores' checkpoints gone: the users come back from the
    // changelog alone.
    server.restart_without_checkpoints();
    produce(
        &clicks,
        &[Record::new(Some("u1"), Some(r#"{"page":"/help"}"#), 5_000)],
    );
    let all = keyed(&consume(&enriched, 4, WAIT));
    assert_eq!(
        all[3],
        (
            "u1".into(),
            json!({"PAGE": "/help", "NAME": "Ann", "REGION": "EU"})
        ),
        "log:\n{}",
        server.log_text()
    );
    assert!(
        restored_entries(&server.log_text()) > 0,
        "the restart restored the table from the changelog"
    );
}

#[test]
fn orders_are_matched_to_shipments_within_an_hour_across_a_restart() {
    let mut server = Server::start(&unique("svc"));
    let orders = unique("orders");
    let shipments = unique("shipments");
    let shipped = unique("shipped");
    server.ok(&format!(
        "CREATE STREAM orders (order_id STRING KEY, item STRING) \
           WITH (kafka_topic='{orders}', value_format='JSON', partitions=1); \
         CREATE STREAM shipments (order_id STRING KEY, carrier STRING) \
           WITH (kafka_topic='{shipments}', value_format='JSON', partitions=1); \
         CREATE STREAM shipped WITH (kafka_topic='{shipped}') AS \
           SELECT o.order_id, item, carrier FROM orders o \
           JOIN shipments s WITHIN 1 HOUR ON o.order_id = s.order_id;"
    ));
    const MINUTE: i64 = 60_000;
    let t0 = 1_700_000_000_000;
    produce(
        &orders,
        &[
            Record::new(Some("o1"), Some(r#"{"item":"book"}"#), t0),
            Record::new(Some("o2"), Some(r#"{"item":"lamp"}"#), t0 + MINUTE),
        ],
    );
    produce(
        &shipments,
        &[
            // Within the hour: matched.
            Record::new(Some("o1"), Some(r#"{"carrier":"ups"}"#), t0 + 30 * MINUTE),
            // Two hours later: outside the window, no match.
            Record::new(Some("o2"), Some(r#"{"carrier":"dhl"}"#), t0 + 121 * MINUTE),
        ],
    );
    let first = keyed(&consume(&shipped, 1, WAIT));
    assert_eq!(
        first,
        vec![("o1".into(), json!({"ITEM": "book", "CARRIER": "ups"}))]
    );

    // The order read before the restart is still in the window afterwards (in the
    // join's store): a second shipment for it within the hour is matched.
    server.restart();
    produce(
        &shipments,
        &[Record::new(
            Some("o1"),
            Some(r#"{"carrier":"fedex"}"#),
            t0 + 50 * MINUTE,
        )],
    );
    let all = keyed(&consume(&shipped, 2, WAIT));
    assert_eq!(
        all[1],
        ("o1".into(), json!({"ITEM": "book", "CARRIER": "fedex"})),
        "log:\n{}",
        server.log_text()
    );

    // Killed, its checkpoints gone: the order comes back from the changelog alone.
    server.restart_without_checkpoints();
    produce(
        &shipments,
        &[Record::new(
            Some("o1"),
            Some(r#"{"carrier":"dpd"}"#),
            t0 + 55 * MINUTE,
        )],
    );
    let all = keyed(&consume(&shipped, 3, WAIT));
    assert_eq!(
        all[2],
        ("o1".into(), json!({"ITEM": "book", "CARRIER": "dpd"})),
        "log:\n{}",
        server.log_text()
    );
    assert!(
        restored_entries(&server.log_text()) > 0,
        "the restart restored the windows from the changelog"
    );
}

#[test]
fn joins_of_topics_with_different_partition_counts_are_refused() {
    let server = Server::start(&unique("svc"));
    let (a, b) = (unique("a"), unique("b"));
    server.ok(&format!(
        "CREATE STREAM a (id STRING KEY, x INT) WITH (kafka_topic='{a}', value_format='JSON', partitions=1); \
         CREATE TABLE b (id STRING PRIMARY KEY, y INT) WITH (kafka_topic='{b}', value_format='JSON', partitions=2);"
    ));
    let (status, body) =
        server.ksql("CREATE STREAM ab AS SELECT a.id, x, y FROM a JOIN b ON a.id = b.id;");
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(
        body["message"],
        "Can't join `A` with `B` since the number of partitions don't match. `A` partitions = 1; `B` partitions = 2. Please repartition either one so that the number of partitions match."
    );
}

/// Sides joined on their keys, with the keys written in different formats: the same
/// key is different bytes on each side, which Kafka's partitioner puts in different
/// partitions. Every key must still meet its match.
#[test]
fn sides_whose_keys_are_written_in_different_formats_still_meet() {
    let server = Server::start(&unique("svc"));
    let (s1, s2, t, out, enriched) = (
        unique("fmt_s1"),
        unique("fmt_s2"),
        unique("fmt_t"),
        unique("fmt_out"),
        unique("fmt_enriched"),
    );
    server.ok(&format!(
        "CREATE STREAM s1 (id INT KEY, foo INT) WITH (kafka_topic='{s1}', key_format='DELIMITED', value_format='JSON', partitions=4);
         CREATE STREAM s2 (id INT KEY, val STRING) WITH (kafka_topic='{s2}', key_format='KAFKA', value_format='JSON', partitions=4);
         CREATE TABLE t (id INT PRIMARY KEY, name STRING) WITH (kafka_topic='{t}', key_format='KAFKA', value_format='JSON', partitions=4);"
    ));
    let keys = 24;
    let mut inserts = String::new();
    for i in 0..keys {
        inserts.push_str(&format!(
            "INSERT INTO s2 (id, val) VALUES ({i}, 'v{i}'); INSERT INTO t (id, name) VALUES ({i}, 'n{i}');"
        ));
    }
    server.ok(&inserts);
    server.ok(&format!(
        "CREATE STREAM joined WITH (kafka_topic='{out}') AS \
         SELECT s1.id, s2.val FROM s1 JOIN s2 WITHIN 1 HOURS ON s1.id = s2.id;
         CREATE STREAM enriched WITH (kafka_topic='{enriched}') AS \
         SELECT s1.id, t.name FROM s1 JOIN t ON s1.id = t.id;"
    ));
    // The stream-stream join moves the right side into the left's key format.
    let queries = server.query_ids();
    let joined = &queries
        .iter()
        .find(|(id, _)| id.contains("JOINED"))
        .expect("a query")
        .0;
    let repartition = format!(
        "_sluice-{}-query_{joined}-Join-right-repartition",
        server.service_id
    );
    sluice_e2e::eventually(WAIT, "the repartition topic", || {
        sluice_e2e::topic_exists(&repartition).then_some(())
    });
    let mut inserts = String::new();
    for i in 0..keys {
        inserts.push_str(&format!("INSERT INTO s1 (id, foo) VALUES ({i}, {i});"));
    }
    server.ok(&inserts);
    for (topic, prefix) in [(&out, "v"), (&enriched, "n")] {
        let mut got = keyed(&consume(topic, keys, WAIT));
        got.sort_by_key(|(k, _)| k.parse::<i32>().unwrap_or(-1));
        let column = if prefix == "v" { "VAL" } else { "NAME" };
        let want: Vec<(String, Value)> = (0..keys)
            .map(|i| (i.to_string(), json!({ column: format!("{prefix}{i}") })))
            .collect();
        assert_eq!(got, want, "{topic}; log:\n{}", server.log_text());
    }
}
