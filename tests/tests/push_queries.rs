//! Push queries over REST (`/query`, `/query-stream`, `/close-query`) against a real
//! broker, read as a client reads them: chunk by chunk.

use serde_json::{Value, json};
use sluice_e2e::{Record, Server, eventually, produce, unique};
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn post(server: &Server, path: &str, body: &Value) -> ureq::http::Response<ureq::Body> {
    ureq::post(&format!("{}{path}", server.url))
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .send_json(body)
        .expect("the server answers")
}

/// A streaming response that must have started (200); panics with the error otherwise.
fn started(resp: ureq::http::Response<ureq::Body>) -> ureq::Body {
    if resp.status() != 200 {
        let status = resp.status();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        panic!("status {status}: {text}");
    }
    resp.into_body()
}

fn clicks(server: &Server) -> String {
    let topic = unique("push_clicks");
    server.ok(&format!(
        "CREATE STREAM clicks (user_id STRING KEY, page STRING, ms INT) \
         WITH (kafka_topic='{topic}', value_format='JSON', partitions=1);"
    ));
    produce(
        &topic,
        &[
            Record::new(Some("u1"), Some(r#"{"PAGE":"/a","MS":50}"#), 1000),
            Record::new(Some("u2"), Some(r#"{"PAGE":"/b","MS":150}"#), 2000),
            Record::new(Some("u1"), Some(r#"{"PAGE":"/c","MS":250}"#), 3000),
            Record::new(Some("u1"), Some(r#"{"PAGE":"/d","MS":350}"#), 4000),
        ],
    );
    topic
}

#[test]
fn query_streams_a_json_array_until_the_limit() {
    let server = Server::start(&unique("svc"));
    clicks(&server);
    let resp = post(
        &server,
        "/query",
        &json!({
            "ksql": "SELECT user_id, page, ms * 2 AS ms2 FROM clicks WHERE ms > 100 EMIT CHANGES LIMIT 2;",
            "streamsProperties": {"auto.offset.reset": "earliest"},
        }),
    );
    let text = started(resp).read_to_string().expect("a body");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let header = &body[0]["header"];
    assert!(
        header["queryId"]
            .as_str()
            .is_some_and(|id| id.starts_with("transient_CLICKS_")),
        "{body}"
    );
    assert_eq!(
        header["schema"],
        "`USER_ID` STRING, `PAGE` STRING, `MS2` INTEGER"
    );
    assert_eq!(body[1], json!({"row": {"columns": ["u2", "/b", 300]}}));
    assert_eq!(body[2], json!({"row": {"columns": ["u1", "/c", 500]}}));
    assert_eq!(body[3], json!({"finalMessage": "Limit Reached"}));
    assert_eq!(body.as_array().map(Vec::len), Some(4), "{body}");
}

#[test]
fn query_stream_writes_a_table_push_query_line_by_line() {
    let server = Server::start(&unique("svc"));
    clicks(&server);
    let resp = post(
        &server,
        "/query-stream",
        &json!({
            "sql": "SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id EMIT CHANGES LIMIT 4;",
            "properties": {"auto.offset.reset": "earliest"},
        }),
    );
    let text = started(resp).read_to_string().expect("a body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines[0]["columnNames"], json!(["USER_ID", "N"]));
    assert_eq!(lines[0]["columnTypes"], json!(["STRING", "BIGINT"]));
    assert_eq!(
        lines[1..],
        [
            json!(["u1", 1]),
            json!(["u2", 1]),
            json!(["u1", 2]),
            json!(["u1", 3])
        ]
    );
}

#[test]
fn a_push_query_from_the_end_sees_new_rows_until_it_is_closed() {
    let server = Server::start(&unique("svc"));
    let topic = clicks(&server);
    let resp = post(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT page FROM clicks EMIT CHANGES;", "properties": {}}),
    );
    let mut reader = BufReader::new(started(resp).into_reader());
    let mut line = String::new();
    reader.read_line(&mut line).expect("a header line");
    let header: Value = serde_json::from_str(&line).expect("a JSON header");
    let id = header["queryId"].as_str().expect("a query id").to_string();
    // The query reads from the end: only records written from now on come out. Keep
    // writing until one arrives (the consumer may still be finding the end).
    let rows = std::sync::mpsc::channel::<String>();
    let reading = std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = rows.0.send(line.trim().to_string());
            line.clear();
        }
        // The response ended: everything after the rows read.
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
    });
    let first = eventually(
        WAIT,
        "a row of a record written after the query began",
        || {
            produce(
                &topic,
                &[Record::new(
                    Some("u9"),
                    Some(r#"{"PAGE":"/new","MS":1}"#),
                    5000,
                )],
            );
            rows.1.recv_timeout(Duration::from_secs(2)).ok()
        },
    );
    assert_eq!(first, r#"["/new"]"#);
    let closed = post(&server, "/close-query", &json!({"queryId": id}));
    assert_eq!(closed.status(), 200);
    // Closing ends the response.
    eventually(WAIT, "the response to end", || {
        reading.is_finished().then_some(())
    });
    let unknown = post(
        &server,
        "/close-query",
        &json!({"queryId": "transient_NONE_1"}),
    );
    assert_eq!(unknown.status(), 400);
}

fn query_rows(server: &Server, sql: &str) -> Vec<Value> {
    server.query_rows(sql)
}

#[test]
fn pull_queries_answer_with_the_table_and_the_stream_as_of_now() {
    let server = Server::start(&unique("svc"));
    clicks(&server);
    let counts = unique("push_counts");
    let created = server.ok(&format!(
        "CREATE TABLE counts WITH (kafka_topic='{counts}') AS \
         SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id;"
    ));
    // A table's query is named as ksqlDB names it.
    assert!(
        created[0]["commandStatus"]["queryId"]
            .as_str()
            .is_some_and(|id| id.starts_with("CTAS_COUNTS_")),
        "{created}"
    );
    // The table is as its query has written it so far: wait for the final counts.
    let all = eventually(WAIT, "the counts", || {
        let rows = query_rows(&server, "SELECT * FROM counts;");
        (rows == [json!(["u1", 3]), json!(["u2", 1])]).then_some(rows)
    });
    assert_eq!(all.len(), 2);
    assert_eq!(
        query_rows(
            &server,
            "SELECT user_id, n FROM counts WHERE user_id = 'u2';"
        ),
        [json!(["u2", 1])]
    );
    assert_eq!(
        query_rows(&server, "SELECT page FROM clicks WHERE ms > 100;"),
        [json!(["/b"]), json!(["/c"]), json!(["/d"])]
    );
    assert_eq!(
        query_rows(&server, "SELECT page FROM clicks LIMIT 1;"),
        [json!(["/a"])]
    );
    // A scan that does not select the key still keeps one row per key.
    let mut counts = query_rows(&server, "SELECT n FROM counts;");
    counts.sort_by_key(|r| r[0].as_i64());
    assert_eq!(counts, [json!([1]), json!([3])]);
}

#[test]
fn bad_push_queries_get_ksqldb_errors() {
    let server = Server::start(&unique("svc"));
    clicks(&server);
    for (sql, message) in [
        (
            "SELECT * FROM nowhere EMIT CHANGES;",
            "NOWHERE does not exist",
        ),
        (
            "SELECT page FROM clicks WHERE nope > 1;",
            "WHERE column 'NOPE' cannot be resolved",
        ),
        ("SHOW STREAMS;", "Only SELECT statements"),
    ] {
        let resp = post(&server, "/query", &json!({"ksql": sql}));
        assert_eq!(resp.status(), 400, "{sql}");
        let body: Value =
            serde_json::from_str(&resp.into_body().read_to_string().expect("a body")).unwrap();
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{sql}: {body}"
        );
    }
    // SELECT over /ksql is refused as ksqlDB refuses it.
    let (status, body) = server.ksql("SELECT * FROM clicks EMIT CHANGES;");
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("should be issued to the websocket endpoint '/query'")),
        "{body}"
    );
}

#[test]
fn inserts_stream_writes_rows_and_acks_each() {
    let server = Server::start(&unique("svc"));
    let topic = clicks(&server);
    let body = format!(
        "{}\n{}\n{}\n{}\n",
        json!({"target": "clicks"}),
        json!({"USER_ID": "u7", "page": "/x", "MS": 5}),
        json!({"USER_ID": "u8", "PAGE": "/y", "MS": "not a number"}),
        json!({"USER_ID": "u9", "PAGE": "/z", "NOPE": 1}),
    );
    let resp = ureq::post(&format!("{}/inserts-stream", server.url))
        .config()
        .http_status_as_error(false)
        .build()
        .send(&body)
        .expect("the server answers");
    assert_eq!(resp.status(), 200);
    let acks: Vec<Value> = resp
        .into_body()
        .read_to_string()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(acks.len(), 3, "{acks:?}");
    assert_eq!(acks[0], json!({"status": "ok", "seq": 0}));
    assert_eq!(acks[1]["status"], "error");
    assert_eq!(acks[2]["status"], "error");
    assert!(
        acks[2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NOPE")),
        "{acks:?}"
    );
    // The row is on the topic, after the four written before.
    let records = sluice_e2e::consume(&topic, 5, WAIT);
    assert_eq!(records.len(), 5);
    assert_eq!(records[4].key.as_deref(), Some(&b"u7"[..]));
    assert_eq!(records[4].value_json(), json!({"PAGE": "/x", "MS": 5}));
    // An unknown target is refused.
    let resp = post(&server, "/inserts-stream", &json!({"target": "nowhere"}));
    assert_eq!(resp.status(), 400);
}

/// HTTP/2 without TLS (prior knowledge), as ksqlDB's Java client speaks it, via curl.
#[test]
fn query_stream_answers_over_http2() {
    let server = Server::start(&unique("svc"));
    clicks(&server);
    let body = json!({
        "sql": "SELECT page FROM clicks EMIT CHANGES LIMIT 2;",
        "properties": {"auto.offset.reset": "earliest"},
    });
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "60",
            "-X",
            "POST",
        ])
        .args(["-w", "\nHTTP %{http_version}"])
        .args(["-d", &body.to_string()])
        .arg(format!("{}/query-stream", server.url))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"HTTP 2"), "{text}");
    assert!(lines[0].contains("\"queryId\""), "{text}");
    assert_eq!(lines[1..3], [r#"["/a"]"#, r#"["/b"]"#], "{text}");
}
