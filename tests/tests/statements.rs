//! Statements that shape the ones after them: CREATE TYPE (kept by every server and
//! across restarts, through the command topic), and DEFINE with `${name}` substitution
//! (per request, or from the request's `sessionVariables`).
//!
//! Needs a broker: `scripts/kafka-local.sh start` (the README's test command does it).

use serde_json::{Value, json};
use sluice_e2e::{Record, Server, consume, eventually, produce, unique};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The type of DESCRIBE's field `name`, as ksqlDB's schema JSON.
fn field_type(described: &Value, name: &str) -> Value {
    described[0]["sourceDescription"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["schema"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn custom_types_and_variables_apply_to_the_statements_after_them() {
    let mut server = Server::start(&unique("svc"));
    let topic = unique("people");
    // A type and a variable defined in the request serve its later statements.
    server.ok(&format!(
        "CREATE TYPE address AS STRUCT<street STRING, zip INT>;
         DEFINE people_topic = '{topic}';
         CREATE STREAM people (id INT KEY, home ADDRESS) \
           WITH (kafka_topic='${{people_topic}}', value_format='JSON', partitions=1);"
    ));
    let described = server.ok("DESCRIBE people;");
    assert_eq!(described[0]["sourceDescription"]["topic"], topic.as_str());
    assert_eq!(field_type(&described, "HOME")["type"], "STRUCT");

    let types = server.ok("SHOW TYPES;");
    assert_eq!(types[0]["@type"], "type_list");
    assert_eq!(types[0]["types"]["ADDRESS"]["type"], "STRUCT", "{types}");
    // The shell shows them as a table.
    let shown = std::process::Command::new(sluice_e2e::sluice_bin())
        .args(["cli", &server.url, "-e", "SHOW TYPES;"])
        .output()
        .expect("sluice cli runs");
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains("ADDRESS") && stdout.contains("STRUCT<STREET STRING, ZIP INTEGER>"),
        "{stdout}"
    );

    // A second registration is refused, or warned about with IF NOT EXISTS.
    let (status, body) = server.ksql("CREATE TYPE address AS STRUCT<x INT>;");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("already registered")),
        "{body}"
    );
    let warned = server.ok("CREATE TYPE IF NOT EXISTS address AS STRUCT<x INT>;");
    assert_eq!(warned[0]["@type"], "warning_entity", "{warned}");

    // Variables live for one request, or come with it.
    let (status, body) = server.ksql("DESCRIBE ${missing};");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Undefined variable: missing")),
        "{body}"
    );
    let body = json!({"ksql": "SHOW VARIABLES; DESCRIBE ${name};",
        "sessionVariables": {"name": "people"}});
    let answer: Value = ureq::post(&format!("{}/ksql", server.url))
        .send_json(&body)
        .expect("the server answers")
        .into_body()
        .read_json()
        .expect("JSON");
    assert_eq!(
        answer[0]["variables"],
        json!([{"name": "name", "value": "people"}])
    );
    assert_eq!(answer[1]["sourceDescription"]["name"], "PEOPLE");

    // ASSERT waits (up to its timeout) for what it asserts, and answers 417 if it never
    // holds.
    let held = server.ok(&format!("ASSERT TOPIC '{topic}' WITH (PARTITIONS=1);"));
    assert_eq!(held[0]["@type"], "assert_topic");
    assert_eq!(held[0]["exists"], true);
    let absent = unique("absent");
    let held = server.ok(&format!("ASSERT NOT EXISTS TOPIC '{absent}';"));
    assert_eq!(held[0]["exists"], false);
    for (sql, message) in [
        (
            format!("ASSERT TOPIC '{absent}' TIMEOUT 200 MILLISECONDS;"),
            format!("Topic {absent} does not exist"),
        ),
        (
            format!("ASSERT TOPIC '{topic}' WITH (PARTITIONS=3) TIMEOUT 200 MILLISECONDS;"),
            format!(
                "Mismatched configuration for topic {topic}: For config partitions, expected 3 got 1"
            ),
        ),
        (
            format!("ASSERT NOT EXISTS TOPIC '{topic}' TIMEOUT 200 MILLISECONDS;"),
            format!("Topic {topic} exists"),
        ),
    ] {
        let (status, body) = server.ksql(&sql);
        assert_eq!(status, 417, "{sql}: {body}");
        assert_eq!(body["message"], message.as_str(), "{sql}");
    }

    // The type outlives the server: the command topic holds it.
    server.restart();
    let types = server.ok("SHOW TYPES;");
    assert_eq!(types[0]["types"]["ADDRESS"]["type"], "STRUCT", "{types}");
    server.ok("DROP TYPE address;");
    let (status, body) = server.ksql(&format!(
        "CREATE STREAM other (home ADDRESS) WITH (kafka_topic='{topic}', value_format='JSON');"
    ));
    assert_eq!(status, 400, "a dropped type is gone: {body}");
    let (status, _) = server.ksql("DROP TYPE address;");
    assert_eq!(status, 400);
    server.ok("DROP TYPE IF EXISTS address;");
}

#[test]
fn a_paused_query_reads_nothing_until_resumed_even_across_a_restart() {
    let mut server = Server::start(&unique("svc"));
    let (src, paused_out, live_out) = (unique("src"), unique("paused"), unique("live"));
    server.ok(&format!(
        "CREATE STREAM src (v INT) WITH (kafka_topic='{src}', value_format='JSON', partitions=1);
         CREATE STREAM held WITH (kafka_topic='{paused_out}') AS SELECT v FROM src;
         CREATE STREAM live WITH (kafka_topic='{live_out}') AS SELECT v FROM src;"
    ));
    let id_of = |server: &Server, sink: &str| {
        server
            .query_ids()
            .into_iter()
            .find(|(id, _)| id.contains(sink))
            .expect("the query runs")
    };
    let record = |v: i32| Record::new(None, Some(&format!(r#"{{"V":{v}}}"#)), 1_000 + i64::from(v));
    produce(&src, &[record(1)]);
    assert_eq!(consume(&paused_out, 1, WAIT).len(), 1);

    let (held, _) = id_of(&server, "HELD");
    server.ok(&format!("PAUSE {held};"));
    assert_eq!(id_of(&server, "HELD").1, "PAUSED");
    produce(&src, &[record(2)]);
    // The live query read the record: the paused one had every chance to.
    assert_eq!(consume(&live_out, 2, WAIT).len(), 2);
    // The paused query lags one record behind, the live one none.
    let (live, _) = id_of(&server, "LIVE");
    let lag = |id: &str| {
        server.sample(
            "sluice_query_consumer_lag",
            &[("query", id), ("topic", &src), ("partition", "0")],
        )
    };
    eventually(WAIT, "the lags", || {
        (lag(&held) == Some(1.0) && lag(&live) == Some(0.0)).then_some(())
    });
    let seen: Vec<Value> = consume(&paused_out, 1, WAIT)
        .iter()
        .map(Record::value_json)
        .collect();
    assert_eq!(
        seen,
        vec![json!({"V": 1})],
        "the paused query read nothing; log:\n{}",
        server.log_text()
    );

    // Paused it stays across a restart (the command topic holds the pause) ...
    server.restart();
    assert_eq!(id_of(&server, "HELD").1, "PAUSED");
    // ... and resumed, it reads what it missed, from where it stopped.
    server.ok("RESUME ALL;");
    let values: Vec<Value> = consume(&paused_out, 2, WAIT)
        .iter()
        .map(Record::value_json)
        .collect();
    assert_eq!(values, vec![json!({"V": 1}), json!({"V": 2})]);
    assert_eq!(id_of(&server, "HELD").1, "RUNNING");
    eventually(WAIT, "no lag once resumed", || {
        let caught_up = server.sample(
            "sluice_query_consumer_lag",
            &[("query", &held), ("topic", &src), ("partition", "0")],
        ) == Some(0.0);
        caught_up.then_some(())
    });
    let (status, body) = server.ksql("PAUSE CSAS_NOPE_1;");
    assert_eq!(status, 400, "{body}");
}

/// A record a query cannot get past (an invalid event time, with
/// `ksql.timestamp.throw.on.invalid`) fails it again at every restart: after a few
/// attempts it stops for good, shows ERROR with the error in EXPLAIN, and leaves the
/// other queries running. RESUME starts it again (here, to fail again).
#[test]
fn a_poison_stops_its_query_with_the_error_shown() {
    let server = Server::start(&unique("svc"));
    // (What the strict query read with the poison, in the same transaction, was never
    // committed: its output stays empty.)
    let (src, strict_out, lenient_out) = (unique("src"), unique("strict"), unique("lenient"));
    server.ok(&format!(
        "CREATE STREAM src (k STRING KEY, ts STRING) WITH (kafka_topic='{src}', \
         value_format='JSON', partitions=1, timestamp='ts', timestamp_format='yyyy-MM-dd');"
    ));
    let strict =
        json!({"auto.offset.reset": "earliest", "ksql.timestamp.throw.on.invalid": "true"});
    let (status, body) = server.ksql_with(
        &format!("CREATE STREAM strict WITH (kafka_topic='{strict_out}') AS SELECT * FROM src;"),
        strict,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.ksql_with(
        &format!("CREATE STREAM lenient WITH (kafka_topic='{lenient_out}') AS SELECT * FROM src;"),
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(status, 200, "{body}");
    produce(
        &src,
        &[
            Record::new(Some("a"), Some(r#"{"TS":"2024-01-02"}"#), 1),
            Record::new(Some("b"), Some(r#"{"TS":"not a date"}"#), 2),
            Record::new(Some("c"), Some(r#"{"TS":"2024-01-03"}"#), 3),
        ],
    );
    // The lenient query skips the bad record and goes on.
    assert_eq!(consume(&lenient_out, 2, WAIT).len(), 2);
    let id_of = |sink: &str| {
        server
            .query_ids()
            .into_iter()
            .find(|(id, _)| id.contains(sink))
            .expect("the query exists")
    };
    let (strict_id, _) = id_of("STRICT");
    eventually(WAIT, "the poison to stop the query", || {
        (server.metric("sluice_query_failed", &strict_id) == Some(1.0)).then_some(())
    });
    assert_eq!(id_of("STRICT").1, "ERROR");
    assert_eq!(id_of("LENIENT").1, "RUNNING");
    let explained = server.ok(&format!("EXPLAIN {strict_id};"));
    let errors = &explained[0]["queryDescription"]["queryErrors"];
    assert_eq!(errors[0]["type"], "USER", "{explained}");
    assert!(
        errors[0]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("not a valid timestamp")),
        "{explained}"
    );

    // RESUME starts it again; the record is still there, so it stops again.
    let stops = || {
        server
            .log_text()
            .matches("query stopped: it keeps failing")
            .count()
    };
    assert_eq!(stops(), 1);
    server.ok(&format!("RESUME {strict_id};"));
    eventually(WAIT, "the resumed query to meet the poison again", || {
        (stops() == 2).then_some(())
    });
}

/// A query whose plan holds a DECIMAL literal runs, and runs again after a restart: its
/// plan is read back from the command topic each time (an i128 serde could not read
/// back there once made the server refuse such a query).
#[test]
fn a_query_with_a_decimal_literal_runs_again_after_a_restart() {
    let mut server = Server::start(&unique("svc"));
    let (src, out) = (unique("src"), unique("secs"));
    server.ok(&format!(
        "CREATE STREAM src (k STRING KEY, ms INT) WITH (kafka_topic='{src}', value_format='JSON', partitions=1);
         CREATE STREAM secs WITH (kafka_topic='{out}') AS SELECT k, ms / 1000.0 AS s FROM src;"
    ));
    produce(&src, &[Record::new(Some("a"), Some(r#"{"MS":1500}"#), 1)]);
    assert_eq!(consume(&out, 1, WAIT).len(), 1);
    server.restart();
    let health: Value = ureq::get(&format!("{}/healthcheck", server.url))
        .call()
        .expect("healthcheck")
        .into_body()
        .read_json()
        .expect("JSON");
    assert_eq!(health["isHealthy"], json!(true), "{health}");
    let (id, state) = server
        .query_ids()
        .into_iter()
        .find(|(id, _)| id.contains("SECS"))
        .expect("the query is back");
    assert_eq!(state, "RUNNING", "{id}");
    produce(&src, &[Record::new(Some("b"), Some(r#"{"MS":2500}"#), 2)]);
    let values: Vec<Value> = consume(&out, 2, WAIT)
        .iter()
        .map(Record::value_json)
        .collect();
    assert_eq!(values.len(), 2, "{values:?}");
    assert_eq!(values[1]["S"].as_f64(), Some(2.5), "{values:?}");
}
