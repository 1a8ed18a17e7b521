//! The first slice end to end: statements over REST, records through a real broker.
//!
//! Needs a broker: `scripts/kafka-local.sh start` (the README's test command does it).

use serde_json::json;
use sluice_e2e::{
    Record, Server, consume, consume_until, eventually, produce, topic_exists, unique,
};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn csas_filters_projects_and_skips_bad_records() {
    let server = Server::start(&unique("svc"));
    let input = unique("clicks");
    let output = unique("clicks_out");
    server.ok(&format!(
        "CREATE STREAM clicks (user_id BIGINT KEY, page STRING, ms INT, ref VARCHAR) \
         WITH (kafka_topic='{input}', value_format='JSON', partitions=1);"
    ));
    produce(
        &input,
        &[
            Record::new(
                None,
                Some(r#"{"page": " Home ", "ms": 3, "ref": "a"}"#),
                1000,
            ),
            Record::new(None, Some(r#"{"page": "cart", "ms": 12}"#), 2000),
            Record::new(None, Some(r#"{"page": "broken"#), 3000),
            Record::new(None, Some(r#"{"page": "x", "ms": "not a number"}"#), 4000),
            Record::new(
                None,
                Some(r#"{"PAGE": "Checkout", "MS": 7, "REF": "b"}"#),
                5000,
            ),
            Record::new(None, Some(r#"{"page": "nothing", "ms": null}"#), 6000),
        ],
    );
    // Keys are BIGINT in the KAFKA format: 8 bytes, big-endian.
    let mut keyed = vec![Record::new(
        None,
        Some(r#"{"page": "keyed", "ms": 1}"#),
        7000,
    )];
    keyed[0].key = Some(42i64.to_be_bytes().to_vec());
    produce(&input, &keyed);

    let body = server.ok(&format!(
        "CREATE STREAM clicks_out WITH (kafka_topic='{output}') AS SELECT \
           user_id, \
           UCASE(TRIM(page)) AS page, \
           LCASE(page) AS lower_page, \
           ms * 2 + 1 AS score, \
           CAST(ms AS DOUBLE) / 4 AS quarter, \
           CASE WHEN ms > 5 THEN 'slow' ELSE 'fast' END AS speed, \
           CONCAT(page, '-', ref) AS tag, \
           LEN(page) AS len, \
           SUBSTRING(page, 2, 3) AS part, \
           ROWTIME AS ts \
         FROM clicks WHERE ms IS NOT NULL AND ms < 100;"
    ));
    assert_eq!(body[0]["@type"], "currentStatus");
    let query_id = body[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(query_id.starts_with("CSAS_CLICKS_OUT_"), "{query_id}");

    let out = consume(&output, 4, WAIT);
    let values: Vec<serde_json::Value> = out.iter().map(Record::value_json).collect();
    assert_eq!(
        values,
        vec![
            json!({"PAGE": "HOME", "LOWER_PAGE": " home ", "SCORE": 7, "QUARTER": 0.75, "SPEED": "fast",
                   "TAG": " Home -a", "LEN": 6, "PART": "Hom", "TS": 1000}),
            json!({"PAGE": "CART", "LOWER_PAGE": "cart", "SCORE": 25, "QUARTER": 3.0, "SPEED": "slow",
                   "TAG": "cart-", "LEN": 4, "PART": "art", "TS": 2000}),
            json!({"PAGE": "CHECKOUT", "LOWER_PAGE": "checkout", "SCORE": 15, "QUARTER": 1.75, "SPEED": "slow",
                   "TAG": "Checkout-b", "LEN": 8, "PART": "hec", "TS": 5000}),
            json!({"PAGE": "KEYED", "LOWER_PAGE": "keyed", "SCORE": 3, "QUARTER": 0.25, "SPEED": "fast",
                   "TAG": "keyed-", "LEN": 5, "PART": "eye", "TS": 7000}),
        ]
    );
    let timestamps: Vec<i64> = out.iter().map(|r| r.timestamp).collect();
    assert_eq!(timestamps, vec![1000, 2000, 5000, 7000]);
    let keys: Vec<Option<Vec<u8>>> = out.iter().map(|r| r.key.clone()).collect();
    assert_eq!(
        keys,
        vec![None, None, None, Some(42i64.to_be_bytes().to_vec())]
    );

    // The two bad records were skipped, each with a log line naming where it was.
    let log = server.log_text();
    assert!(
        log.contains("offset=2") && log.contains("Failed to deserialize JSON"),
        "{log}"
    );
    assert!(
        log.contains("offset=3") && log.contains("requiredType: INTEGER"),
        "{log}"
    );
    // And each is reported on the processing log topic, without its bytes by default.
    let reports = consume(
        &format!("_sluice-{}-processing-log", server.service_id),
        2,
        WAIT,
    );
    let errors: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| r.value_json()["message"]["deserializationError"].clone())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (e, offset) in errors.iter().zip([2, 3]) {
        assert_eq!(e["topic"], input.as_str());
        assert_eq!(e["partition"], 0);
        assert_eq!(e["offset"], offset);
        assert_eq!(e["target"], "value");
        assert!(e["recordB64"].is_null(), "{e}");
        assert!(
            e["errorMessage"].as_str().is_some_and(|m| !m.is_empty()),
            "{e}"
        );
    }
    // The query's figures, for Prometheus.
    let metrics = |name: &str| server.metric(name, &query_id);
    eventually(WAIT, "the query's metrics", || {
        (metrics("sluice_query_records_in_total") == Some(7.0)
            && metrics("sluice_query_records_out_total") == Some(4.0)
            && metrics("sluice_query_skipped_records_total") == Some(2.0)
            && metrics("sluice_query_running_here") == Some(1.0)
            && metrics("sluice_query_commits_total").is_some_and(|n| n >= 1.0))
        .then_some(())
    });
}

#[test]
fn delimited_streams_round_trip() {
    let server = Server::start(&unique("svc"));
    let input = unique("csv_in");
    let output = unique("csv_out");
    server.ok(&format!(
        "CREATE STREAM csv_in (k STRING KEY, id INT, name STRING, price DOUBLE) \
         WITH (kafka_topic='{input}', value_format='DELIMITED', partitions=1);"
    ));
    produce(
        &input,
        &[
            Record::new(Some("a"), Some("1,apple,0.5"), 10),
            Record::new(Some("b"), Some("2,\"pear, green\",1.25"), 20),
            Record::new(Some("c"), Some("3,too,many,fields"), 30),
            Record::new(Some("d"), Some("4,,2"), 40),
        ],
    );
    server.ok(&format!(
        "CREATE STREAM csv_out WITH (kafka_topic='{output}') AS \
         SELECT k, name, price * 2 AS double_price FROM csv_in WHERE id <> 1;"
    ));
    let out = consume(&output, 2, WAIT);
    let got: Vec<(String, String, i64)> = out
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value_str().to_string(),
                r.timestamp,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("b".into(), "\"pear, green\",2.5".into(), 20),
            ("d".into(), ",4.0".into(), 40),
        ]
    );
}

#[test]
fn show_terminate_and_drop() {
    let server = Server::start(&unique("svc"));
    let input = unique("src");
    server.ok(&format!(
        "CREATE STREAM src (id INT KEY, v STRING) WITH (kafka_topic='{input}', value_format='JSON', partitions=2);"
    ));
    let sink_topic = unique("derived");
    let body = server.ok(&format!(
        "CREATE STREAM derived WITH (kafka_topic='{sink_topic}') AS SELECT id, v FROM src;"
    ));
    let query_id = body[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    // The sink topic takes the source's partition count.
    assert!(topic_exists(&sink_topic));

    let shown = server.ok("SHOW STREAMS;");
    let names: BTreeSet<&str> = shown[0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["SRC", "DERIVED"]));
    assert_eq!(
        server.query_ids(),
        vec![(query_id.clone(), "RUNNING".to_string())]
    );

    // A source a query reads cannot be dropped.
    let (status, err) = server.ksql("DROP STREAM src;");
    assert_eq!(status, 400);
    assert_eq!(err["@type"], "statement_error");
    assert_eq!(err["error_code"], 40001);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(&format!("read from this source: [{query_id}]")),
        "{err}"
    );

    let body = server.ok(&format!("TERMINATE {query_id};"));
    assert_eq!(body[0]["commandStatus"]["message"], "Query terminated.");
    assert!(server.query_ids().is_empty());

    let body = server.ok("DROP STREAM derived DELETE TOPIC;");
    assert_eq!(
        body[0]["commandStatus"]["message"],
        format!("Source `DERIVED` (topic: {sink_topic}) was dropped.")
    );
    eventually(WAIT, "the sink topic to be deleted", || {
        (!topic_exists(&sink_topic)).then_some(())
    });
    server.ok("DROP STREAM src;");
    server.ok("DROP STREAM IF EXISTS src;");
    let (status, _) = server.ksql("DROP STREAM src;");
    assert_eq!(status, 400);
}

#[test]
fn bad_statements_get_ksqldb_errors() {
    let server = Server::start(&unique("svc"));
    let (status, err) = server
        .ksql("CREATE STREAM s (id INT,\n name) WITH (kafka_topic='t', value_format='JSON');");
    assert_eq!(status, 400);
    assert_eq!(err["@type"], "statement_error");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2:6: Syntax Error"),
        "{err}"
    );
    assert_eq!(err["position"], json!({"line": 2, "column": 6}));

    let missing = unique("missing");
    let (status, err) = server.ksql(&format!(
        "CREATE STREAM s (id INT) WITH (kafka_topic='{missing}', value_format='JSON');"
    ));
    assert_eq!(status, 400);
    assert!(
        err["message"].as_str().unwrap().contains("does not exist"),
        "{err}"
    );
    assert!(!topic_exists(&missing));

    // The first statement of a request is kept when a later one fails.
    let topic = unique("t");
    let (status, err) = server.ksql(&format!(
        "CREATE STREAM ok1 (id INT) WITH (kafka_topic='{topic}', value_format='JSON', partitions=1);\n\
         CREATE STREAM bad AS SELECT nope FROM ok1;"
    ));
    assert_eq!(status, 400);
    assert_eq!(err["entities"].as_array().unwrap().len(), 1);
    assert_eq!(err["message"], "SELECT column 'NOPE' cannot be resolved.");

    let (status, err) = server.ksql("not json at all");
    assert_eq!(status, 400, "{err}");
    let resp = ureq::post(&format!("{}/ksql", server.url))
        .config()
        .http_status_as_error(false)
        .build()
        .send("{{{")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

/// A query survives a server restart and continues from its committed offsets: records
/// produced before, during and after the restart each come out exactly once.
#[test]
fn restart_resumes_from_committed_offsets() {
    let mut server = Server::start(&unique("svc"));
    let input = unique("events");
    let output = unique("events_out");
    server.ok(&format!(
        "CREATE STREAM events (id INT KEY, n BIGINT) WITH (kafka_topic='{input}', value_format='JSON', partitions=3);"
    ));
    server.ok(&format!(
        "CREATE STREAM events_out WITH (kafka_topic='{output}') AS SELECT id, n * 10 AS n10 FROM events;"
    ));
    let batch = |from: i64, to: i64| -> Vec<Record> {
        (from..to)
            .map(|n| {
                let mut r = Record::new(None, Some(&format!("{{\"n\": {n}}}")), 1_000 + n);
                r.key = Some(((n % 7) as i32).to_be_bytes().to_vec());
                r
            })
            .collect()
    };
    produce(&input, &batch(0, 500));
    consume(&output, 500, WAIT);

    server.stop();
    produce(&input, &batch(500, 800));
    server.restart();
    let queries = server.query_ids();
    assert_eq!(queries.len(), 1, "{queries:?}");
    eventually(WAIT, "the query to run again", || {
        (server.query_ids()[0].1 == "RUNNING").then_some(())
    });
    produce(&input, &batch(800, 1000));

    let out = consume(&output, 1000, WAIT);
    let mut ns: Vec<i64> = out
        .iter()
        .map(|r| r.value_json()["N10"].as_i64().unwrap() / 10)
        .collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..1000).collect::<Vec<_>>(),
        "every record exactly once"
    );
    for r in &out {
        let n = r.value_json()["N10"].as_i64().unwrap() / 10;
        assert_eq!(r.timestamp, 1_000 + n);
        assert_eq!(r.key, Some(((n % 7) as i32).to_be_bytes().to_vec()));
    }
}

/// After a kill -9, nothing is lost (at-least-once: records after the last commit may
/// come out twice).
#[test]
fn kill_loses_nothing() {
    let mut server = Server::start(&unique("svc"));
    let input = unique("k_in");
    let output = unique("k_out");
    server.ok(&format!(
        "CREATE STREAM k_in (n BIGINT) WITH (kafka_topic='{input}', value_format='JSON', partitions=2);"
    ));
    server.ok(&format!(
        "CREATE STREAM k_out WITH (kafka_topic='{output}') AS SELECT n FROM k_in;"
    ));
    let records: Vec<Record> = (0..2000)
        .map(|n| Record::new(Some(&n.to_string()), Some(&format!("{{\"n\": {n}}}")), n))
        .collect();
    produce(&input, &records[..1000]);
    eventually(WAIT, "some output", || {
        (!consume(&output, 1, Duration::from_secs(2)).is_empty()).then_some(())
    });
    server.kill();
    produce(&input, &records[1000..]);
    server.restart();
    // At-least-once: records after the last commit before the kill come out twice, so
    // wait for every distinct value, not for a count of records.
    let distinct = |records: &[(i32, Record)]| -> BTreeSet<i64> {
        records
            .iter()
            .map(|(_, r)| r.value_json()["N"].as_i64().unwrap())
            .collect()
    };
    let out = sluice_e2e::consume_until(&output, WAIT, |records| distinct(records).len() >= 2000);
    let seen = distinct(&out);
    let missing: Vec<i64> = (0..2000).filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} records missing (first {:?}); server log:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        server.log_text()
    );
}

/// PARTITION BY re-keys a stream: each record lands on the partition Kafka's Java
/// partitioner would choose for its new key, so downstream consumers (and ksqlDB) agree.
#[test]
fn partition_by_rekeys_onto_java_partitions() {
    let server = Server::start(&unique("svc"));
    let input = unique("orders");
    let output = unique("orders_by_customer");
    server.ok(&format!(
        "CREATE STREAM orders (order_id INT KEY, customer STRING, amount DOUBLE) \
         WITH (kafka_topic='{input}', value_format='JSON', partitions=1);"
    ));
    server.ok(&format!(
        "CREATE STREAM by_customer WITH (kafka_topic='{output}', partitions=4) AS \
         SELECT customer, order_id, amount FROM orders PARTITION BY customer;"
    ));
    let customers = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let records: Vec<Record> = (0..60)
        .map(|i| {
            let c = customers[i % customers.len()];
            let mut r = Record::new(
                None,
                Some(&format!(r#"{{"customer": "{c}", "amount": {i}.5}}"#)),
                100 + i as i64,
            );
            r.key = Some((i as i32).to_be_bytes().to_vec());
            r
        })
        .collect();
    produce(&input, &records);
    let out = sluice_e2e::consume_with_partitions(&output, 60, WAIT);
    assert_eq!(out.len(), 60);
    for (partition, r) in &out {
        let key = r.key.as_deref().expect("a key");
        assert!(customers.contains(&std::str::from_utf8(key).unwrap()));
        assert_eq!(
            *partition,
            sluice_runtime::driver::partition_for(Some(key), 4),
            "key {:?}",
            std::str::from_utf8(key)
        );
        let v = r.value_json();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            vec!["ORDER_ID", "AMOUNT"]
        );
    }
}

/// INSERT INTO ... SELECT merges a second stream into an existing one.
#[test]
fn insert_into_merges_streams() {
    let server = Server::start(&unique("svc"));
    let (web, mobile, all) = (unique("web"), unique("mobile"), unique("all_events"));
    for (name, topic) in [("web", &web), ("mobile", &mobile)] {
        server.ok(&format!(
            "CREATE STREAM {name} (user_id STRING KEY, action STRING) \
             WITH (kafka_topic='{topic}', value_format='JSON', partitions=1);"
        ));
    }
    server.ok(&format!(
        "CREATE STREAM all_events WITH (kafka_topic='{all}') AS SELECT user_id, action FROM web;"
    ));
    let body =
        server.ok("INSERT INTO all_events SELECT user_id, UCASE(action) AS action FROM mobile;");
    let id = body[0]["commandStatus"]["queryId"].as_str().unwrap();
    assert!(id.starts_with("INSERTQUERY_"), "{id}");
    let (status, err) =
        server.ksql("INSERT INTO all_events SELECT user_id, action, action AS extra FROM mobile;");
    assert_eq!(status, 400);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("Incompatible schema between results and sink."),
        "{err}"
    );

    produce(
        &web,
        &[Record::new(Some("u1"), Some(r#"{"action": "view"}"#), 1)],
    );
    produce(
        &mobile,
        &[Record::new(Some("u2"), Some(r#"{"action": "tap"}"#), 2)],
    );
    let mut got: Vec<(String, String)> = consume(&all, 2, WAIT)
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value_str().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("u1".to_string(), r#"{"ACTION":"view"}"#.to_string()),
            ("u2".to_string(), r#"{"ACTION":"TAP"}"#.to_string()),
        ]
    );
    assert_eq!(server.query_ids().len(), 2);
}

/// SET in a request applies to the statements after it: a query created after
/// `SET 'auto.offset.reset'='earliest'` reads records produced before it existed.
#[test]
fn set_applies_to_later_statements_in_the_request() {
    let server = Server::start(&unique("svc"));
    let input = unique("early");
    let output = unique("early_out");
    server.ok(&format!(
        "CREATE STREAM early (v INT) WITH (kafka_topic='{input}', value_format='JSON', partitions=1);"
    ));
    produce(&input, &[Record::new(None, Some(r#"{"v": 1}"#), 5)]);
    // No streamsProperties: only the SET makes the query start from the beginning.
    let (status, body) = server.ksql(&format!(
        "SET 'auto.offset.reset'='earliest';\n\
         CREATE STREAM early_out WITH (kafka_topic='{output}') AS SELECT v * 10 AS v10 FROM early;"
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_array().unwrap().len(),
        1,
        "SET returns no entity: {body}"
    );
    let out = consume(&output, 1, WAIT);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value_json(), json!({"V10": 10}));
}

/// INSERT INTO ... VALUES writes one record, keyed and encoded as the stream's formats
/// say, with ROWTIME as its timestamp when given.
#[test]
fn insert_values_writes_a_record() {
    let server = Server::start(&unique("svc"));
    let topic = unique("values");
    server.ok(&format!(
        "CREATE STREAM v (id STRING KEY, n INT, tag STRING) \
         WITH (kafka_topic='{topic}', value_format='JSON', partitions=3);"
    ));
    let body = server.ok(
        "INSERT INTO v (id, n, tag) VALUES ('k1', 7, 'x'); INSERT INTO v (ROWTIME, id, n) VALUES (5000, 'k2', 8);",
    );
    assert_eq!(body, json!([]));
    let out = sluice_e2e::consume_with_partitions(&topic, 2, WAIT);
    let mut rows: Vec<(String, serde_json::Value, i64)> = out
        .iter()
        .map(|(_, r)| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value_json(),
                r.timestamp,
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rows[0].0, "k1");
    assert_eq!(rows[0].1, json!({"N": 7, "TAG": "x"}));
    assert_eq!(
        rows[1],
        ("k2".to_string(), json!({"N": 8, "TAG": null}), 5000)
    );
    let (status, body) = server.ksql("INSERT INTO v (n) VALUES ('seven');");
    assert_eq!(status, 400, "{body}");
}

/// GET /status/<commandId> tells how a command ended.
#[test]
fn command_status_reports_how_a_command_ended() {
    let server = Server::start(&unique("svc"));
    let topic = unique("status");
    let body = server.ok(&format!(
        "CREATE STREAM st (x INT) WITH (kafka_topic='{topic}', value_format='JSON', partitions=1);"
    ));
    let id = body[0]["commandId"]
        .as_str()
        .expect("a command id")
        .to_string();
    assert_eq!(id, "stream/`ST`/create");
    let get = |id: &str| {
        let resp = ureq::get(&format!("{}/status/{}", server.url, id.replace('`', "%60")))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .expect("the server answers");
        let status = resp.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
        (status, body)
    };
    let (status, body) = get(&id);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "SUCCESS");
    assert_eq!(body["message"], "Stream created");
    let (status, _) = get("stream/`NOPE`/create");
    assert_eq!(status, 404);
}

/// An aggregation without a window keeps its groups in RocksDB under the state
/// directory; TERMINATE removes them with the query.
#[test]
fn an_aggregation_keeps_its_groups_in_rocksdb_until_terminated() {
    let server = Server::start(&unique("svc"));
    let input = unique("counted_in");
    server.ok(&format!(
        "CREATE STREAM src (id STRING KEY, v INT) WITH (kafka_topic='{input}', key_format='KAFKA', value_format='JSON', partitions=1);"
    ));
    let sink = unique("counted");
    let body = server.ksql_with(
        &format!(
            "CREATE TABLE counts WITH (kafka_topic='{sink}') AS \
             SELECT id, COUNT(*) AS n, SUM(v) AS total FROM src GROUP BY id;"
        ),
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(body.0, 200, "{}", body.1);
    let query_id = body.1[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    produce(
        &input,
        &[
            Record::new(Some("a"), Some(r#"{"V":1}"#), 1),
            Record::new(Some("b"), Some(r#"{"V":2}"#), 2),
            Record::new(Some("a"), Some(r#"{"V":3}"#), 3),
        ],
    );
    // The record cache may fold a's two updates into one row: wait for a's latest.
    let last_a = |rows: &[(i32, Record)]| {
        rows.iter()
            .rev()
            .find(|(_, r)| r.key.as_deref() == Some(b"a".as_slice()))
            .map(|(_, r)| r.value_json())
    };
    let out = consume_until(&sink, WAIT, |rows| {
        last_a(rows) == Some(json!({"N": 2, "TOTAL": 4}))
    });
    assert_eq!(last_a(&out), Some(json!({"N": 2, "TOTAL": 4})));
    let dir = server
        .state_dir()
        .join(format!("_sluice-{}-query_{query_id}", server.service_id));
    // RocksDB's files are there (its CURRENT file names the live manifest).
    eventually(WAIT, "the query's RocksDB files", || {
        dir.join("CURRENT").exists().then_some(())
    });
    server.ok(&format!("TERMINATE {query_id};"));
    eventually(WAIT, "the query's local state to be removed", || {
        (!dir.exists()).then_some(())
    });
}
