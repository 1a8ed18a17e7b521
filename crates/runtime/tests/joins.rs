//! Joins end to end in the deterministic driver: SQL planned by `sluice-sql`, run record
//! by record, outputs read back as text.

use sluice_runtime::driver::Driver;
use sluice_runtime::pipeline::Pipeline;
use sluice_sql::{Planned, PlannerConfig, SourceDesc, parse_statements, plan_statement};
use std::collections::BTreeMap;

/// Plans the statements, creating their topics and queries in a new driver.
fn driver(statements: &str) -> Driver {
    let mut catalog: BTreeMap<String, SourceDesc> = BTreeMap::new();
    let mut driver = Driver::new();
    for stmt in parse_statements(statements).expect("statements parse") {
        match plan_statement(&stmt, &catalog, &PlannerConfig::default()).expect("plans") {
            Planned::CreateSource { source, .. } => {
                driver.create_topic(&source.topic.topic, 1);
                catalog.insert(source.name.clone(), source);
            }
            Planned::CreateAs { sink, plan, .. } => {
                driver.add_query(&sink.name, Pipeline::new(&plan, None).expect("runs"));
                catalog.insert(sink.name.clone(), sink);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    driver
}

fn produce(d: &mut Driver, topic: &str, key: &str, value: Option<&str>, ts: i64) {
    d.produce(
        topic,
        Some(key.as_bytes().to_vec()),
        value.map(|v| v.as_bytes().to_vec()),
        ts,
    )
    .expect("runs");
}

/// A topic's records as `key => value @ts` (`null` for tombstones).
fn output(d: &Driver, topic: &str) -> Vec<String> {
    let text = |b: &Option<Vec<u8>>| match b {
        Some(b) => String::from_utf8(b.clone()).expect("utf-8"),
        None => "null".into(),
    };
    d.records(topic)
        .iter()
        .map(|r| format!("{} => {} @{}", text(&r.key), text(&r.value), r.timestamp))
        .collect()
}

#[test]
fn stream_table_join_sees_the_table_as_of_each_stream_record() {
    let mut d = driver(
        "CREATE STREAM clicks (user_id BIGINT KEY, page STRING) WITH (kafka_topic='clicks', format='JSON');
         CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING) WITH (kafka_topic='users', format='JSON');
         CREATE STREAM enriched AS SELECT c.user_id, page, name FROM clicks c LEFT JOIN users u ON c.user_id = u.id;",
    );
    produce(&mut d, "clicks", "1", Some(r#"{"PAGE":"/a"}"#), 1);
    produce(&mut d, "users", "1", Some(r#"{"NAME":"ann"}"#), 2);
    produce(&mut d, "clicks", "1", Some(r#"{"PAGE":"/b"}"#), 3);
    produce(&mut d, "users", "1", None, 4);
    produce(&mut d, "clicks", "1", Some(r#"{"PAGE":"/c"}"#), 5);
    assert_eq!(
        output(&d, "ENRICHED"),
        [
            r#"1 => {"PAGE":"/a","NAME":null} @1"#,
            r#"1 => {"PAGE":"/b","NAME":"ann"} @3"#,
            r#"1 => {"PAGE":"/c","NAME":null} @5"#,
        ]
    );
}

#[test]
fn table_table_joins_delete_results_that_no_longer_exist() {
    let mut d = driver(
        "CREATE TABLE a (id BIGINT PRIMARY KEY, x INT) WITH (kafka_topic='a', format='JSON');
         CREATE TABLE b (id BIGINT PRIMARY KEY, y INT) WITH (kafka_topic='b', format='JSON');
         CREATE TABLE c (id BIGINT PRIMARY KEY, z INT) WITH (kafka_topic='c', format='JSON');
         CREATE TABLE abc AS SELECT a.id, x, y, z FROM a JOIN b ON a.id = b.id LEFT JOIN c ON a.id = c.id;",
    );
    produce(&mut d, "a", "7", Some(r#"{"X":1}"#), 10);
    produce(&mut d, "b", "7", Some(r#"{"Y":2}"#), 20);
    produce(&mut d, "c", "7", Some(r#"{"Z":3}"#), 30);
    produce(&mut d, "b", "7", None, 40);
    assert_eq!(
        output(&d, "ABC"),
        [
            r#"7 => {"X":1,"Y":2,"Z":null} @20"#,
            r#"7 => {"X":1,"Y":2,"Z":3} @30"#,
            // The inner join's deletion reaches through the left join.
            "7 => null @40",
        ]
    );
}

#[test]
fn an_aggregation_of_a_table_join_undoes_each_keys_previous_joined_row() {
    let mut d = driver(
        "CREATE TABLE a (id BIGINT PRIMARY KEY, x INT) WITH (kafka_topic='a', format='JSON');
         CREATE TABLE b (id BIGINT PRIMARY KEY, y INT) WITH (kafka_topic='b', format='JSON');
         CREATE TABLE totals AS SELECT a.id, SUM(x + COALESCE(y, 0)) AS total
           FROM a LEFT JOIN b ON a.id = b.id GROUP BY a.id;",
    );
    produce(&mut d, "a", "1", Some(r#"{"X":100}"#), 1);
    produce(&mut d, "b", "1", Some(r#"{"Y":5}"#), 2);
    produce(&mut d, "b", "1", Some(r#"{"Y":20}"#), 3);
    produce(&mut d, "b", "1", None, 4);
    assert_eq!(
        output(&d, "TOTALS"),
        [
            r#"1 => {"TOTAL":100} @1"#,
            r#"1 => {"TOTAL":105} @2"#,
            r#"1 => {"TOTAL":120} @3"#,
            r#"1 => {"TOTAL":100} @4"#,
        ]
    );
}

#[test]
fn a_filter_over_a_table_join_deletes_only_rows_that_passed() {
    let mut d = driver(
        "CREATE TABLE a (id BIGINT PRIMARY KEY, x INT) WITH (kafka_topic='a', format='JSON');
         CREATE TABLE b (id BIGINT PRIMARY KEY, y INT) WITH (kafka_topic='b', format='JSON');
         CREATE TABLE big AS SELECT a.id, x, y FROM a JOIN b ON a.id = b.id WHERE y > 5;",
    );
    produce(&mut d, "a", "1", Some(r#"{"X":1}"#), 1);
    // Joined, but filtered out: no deletion of a row never written.
    produce(&mut d, "b", "1", Some(r#"{"Y":4}"#), 2);
    produce(&mut d, "b", "1", Some(r#"{"Y":10}"#), 3);
    // Filtered out after it passed: the row is deleted.
    produce(&mut d, "b", "1", Some(r#"{"Y":3}"#), 4);
    produce(&mut d, "b", "1", None, 5);
    assert_eq!(
        output(&d, "BIG"),
        [r#"1 => {"X":1,"Y":10} @3"#, "1 => null @4"]
    );
}

/// A windowed key in the JSON key format: the key, then the window's start (and for
/// session windows, end first), as Kafka Streams writes them.
fn windowed_key(key: &str, bounds: &[i64]) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    for b in bounds {
        k.extend_from_slice(&b.to_be_bytes());
    }
    k
}

#[test]
fn joins_of_windowed_streams_match_keys_with_their_windows() {
    let mut d = driver(
        "CREATE STREAM a (id INT KEY, x INT) WITH (kafka_topic='a', format='JSON', window_type='TUMBLING', window_size='2 SECONDS');
         CREATE STREAM b (id INT KEY, y INT) WITH (kafka_topic='b', format='JSON', window_type='HOPPING', window_size='5 SECONDS');
         CREATE STREAM ab AS SELECT * FROM a JOIN b WITHIN 1 MINUTE ON a.id = b.id;",
    );
    let put = |d: &mut Driver, topic: &str, start: i64, value: &str| {
        d.produce(
            topic,
            Some(windowed_key("1", &[start])),
            Some(value.as_bytes().to_vec()),
            start,
        )
        .expect("runs");
    };
    put(&mut d, "a", 0, r#"{"X":1}"#);
    // Another window of the same key: no match.
    put(&mut d, "b", 1000, r#"{"Y":2}"#);
    // A window of another size that starts with a's: a time window's key is its start.
    put(&mut d, "b", 0, r#"{"Y":3}"#);
    let records = d.records("AB");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    // The result is keyed by a's windowed key; both sides' bounds are values.
    assert_eq!(r.key.as_deref(), Some(windowed_key("1", &[0]).as_slice()));
    assert_eq!(
        String::from_utf8(r.value.clone().unwrap()).unwrap(),
        r#"{"A_WINDOWSTART":0,"A_WINDOWEND":2000,"A_X":1,"B_ID":1,"B_WINDOWSTART":0,"B_WINDOWEND":5000,"B_Y":3}"#
    );
}

#[test]
fn stream_stream_outer_rows_wait_for_the_window_to_close_with_a_grace_period() {
    let mut d = driver(
        "CREATE STREAM orders (id BIGINT KEY, item STRING) WITH (kafka_topic='orders', format='JSON');
         CREATE STREAM shipments (id BIGINT KEY, carrier STRING) WITH (kafka_topic='shipments', format='JSON');
         CREATE STREAM shipped AS SELECT o.id, item, carrier FROM orders o LEFT JOIN shipments s
           WITHIN 10 SECONDS GRACE PERIOD 5 SECONDS ON o.id = s.id;",
    );
    produce(&mut d, "orders", "1", Some(r#"{"ITEM":"book"}"#), 1_000);
    produce(&mut d, "orders", "2", Some(r#"{"ITEM":"pen"}"#), 2_000);
    produce(
        &mut d,
        "shipments",
        "1",
        Some(r#"{"CARRIER":"ups"}"#),
        9_000,
    );
    // Nothing for order 2 yet: its window (until 12 s) and grace (5 s) are open.
    assert_eq!(
        output(&d, "SHIPPED"),
        [r#"1 => {"ITEM":"book","CARRIER":"ups"} @9000"#]
    );
    // Stream time passes 2 s + 10 s + 5 s: order 2 is emitted without a shipment;
    // order 1 matched, so it never is.
    produce(
        &mut d,
        "shipments",
        "3",
        Some(r#"{"CARRIER":"dhl"}"#),
        17_001,
    );
    assert_eq!(
        output(&d, "SHIPPED"),
        [
            r#"1 => {"ITEM":"book","CARRIER":"ups"} @9000"#,
            r#"2 => {"ITEM":"pen","CARRIER":null} @2000"#,
        ]
    );
}

#[test]
fn foreign_key_joins_follow_changes_of_the_foreign_key_and_of_the_right_rows() {
    let mut d = driver(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, total INT) WITH (kafka_topic='orders', format='JSON');
         CREATE TABLE customers (id BIGINT PRIMARY KEY, name STRING) WITH (kafka_topic='customers', format='JSON');
         CREATE TABLE named AS SELECT o.id, total, name FROM orders o JOIN customers c ON o.customer = c.id;",
    );
    produce(&mut d, "customers", "100", Some(r#"{"NAME":"ann"}"#), 1);
    produce(&mut d, "customers", "200", Some(r#"{"NAME":"bob"}"#), 2);
    produce(
        &mut d,
        "orders",
        "1",
        Some(r#"{"CUSTOMER":100,"TOTAL":5}"#),
        3,
    );
    produce(
        &mut d,
        "orders",
        "2",
        Some(r#"{"CUSTOMER":100,"TOTAL":6}"#),
        4,
    );
    produce(&mut d, "customers", "100", Some(r#"{"NAME":"ann b."}"#), 5);
    produce(
        &mut d,
        "orders",
        "2",
        Some(r#"{"CUSTOMER":200,"TOTAL":6}"#),
        6,
    );
    produce(&mut d, "customers", "100", None, 7);
    assert_eq!(
        output(&d, "NAMED"),
        [
            r#"1 => {"TOTAL":5,"NAME":"ann"} @3"#,
            r#"2 => {"TOTAL":6,"NAME":"ann"} @4"#,
            r#"1 => {"TOTAL":5,"NAME":"ann b."} @5"#,
            r#"2 => {"TOTAL":6,"NAME":"ann b."} @5"#,
            r#"2 => {"TOTAL":6,"NAME":"bob"} @6"#,
            // Only order 1 still refers to customer 100.
            "1 => null @7",
        ]
    );
}

#[test]
fn an_aggregation_over_a_foreign_key_join_moves_rows_between_groups() {
    let mut d = driver(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount INT) WITH (kafka_topic='orders', format='JSON');
         CREATE TABLE customers (id BIGINT PRIMARY KEY, region STRING) WITH (kafka_topic='customers', format='JSON');
         CREATE TABLE by_region AS SELECT c.region, COUNT(*) AS n, SUM(o.amount) AS total
           FROM orders o LEFT JOIN customers c ON o.customer = c.id GROUP BY c.region;",
    );
    produce(&mut d, "customers", "1", Some(r#"{"REGION":"eu"}"#), 1);
    produce(&mut d, "customers", "2", Some(r#"{"REGION":"us"}"#), 2);
    produce(
        &mut d,
        "orders",
        "10",
        Some(r#"{"CUSTOMER":1,"AMOUNT":5}"#),
        3,
    );
    produce(
        &mut d,
        "orders",
        "11",
        Some(r#"{"CUSTOMER":1,"AMOUNT":7}"#),
        4,
    );
    // The order moves to the other customer: out of eu, into us.
    produce(
        &mut d,
        "orders",
        "10",
        Some(r#"{"CUSTOMER":2,"AMOUNT":5}"#),
        5,
    );
    // The customer moves: its order goes with it.
    produce(&mut d, "customers", "1", Some(r#"{"REGION":"us"}"#), 6);
    // The order goes.
    produce(&mut d, "orders", "11", None, 7);
    let out = output(&d, "BY_REGION");
    assert_eq!(
        out,
        [
            r#""eu" => {"N":1,"TOTAL":5} @3"#,
            r#""eu" => {"N":2,"TOTAL":12} @4"#,
            r#""eu" => {"N":1,"TOTAL":7} @5"#,
            r#""us" => {"N":1,"TOTAL":5} @5"#,
            r#""eu" => {"N":0,"TOTAL":0} @6"#,
            r#""us" => {"N":2,"TOTAL":12} @6"#,
            r#""us" => {"N":1,"TOTAL":5} @7"#,
        ],
        "{out:#?}"
    );
}
