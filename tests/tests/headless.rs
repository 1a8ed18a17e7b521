//! Headless mode: `sluice server --queries-file FILE` runs the file's queries and takes
//! only read-only statements over REST.

use serde_json::json;
use sluice_e2e::{Record, Server, consume, produce, unique};
use std::time::Duration;

#[test]
fn a_queries_file_runs_and_the_api_is_read_only() {
    let input = unique("headless_in");
    let output = unique("headless_out");
    let dir = std::env::temp_dir().join(unique("headless"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("queries.sql");
    std::fs::write(
        &file,
        format!(
            "CREATE STREAM readings (sensor STRING KEY, celsius DOUBLE)\n  WITH (kafka_topic='{input}', value_format='JSON', partitions=1);\n\
             SET 'auto.offset.reset'='earliest';\n\
             CREATE STREAM hot WITH (kafka_topic='{output}') AS\n  SELECT sensor, celsius * 9 / 5 + 32 AS fahrenheit FROM readings WHERE celsius > 30;\n"
        ),
    )
    .unwrap();
    let mut server = Server::start_with(
        &unique("svc"),
        &[("--queries-file", file.to_str().unwrap())],
    );
    produce(
        &input,
        &[
            Record::new(Some("s1"), Some(r#"{"CELSIUS": 20.0}"#), 1),
            Record::new(Some("s2"), Some(r#"{"CELSIUS": 35.0}"#), 2),
        ],
    );
    let out = consume(&output, 1, Duration::from_secs(60));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value_json(), json!({"FAHRENHEIT": 95.0}));

    let ids = server.query_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (status, body) = server.ksql("CREATE STREAM more AS SELECT * FROM readings;");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("headless")),
        "{body}"
    );
    let (status, _) = server.ksql("DESCRIBE hot;");
    assert_eq!(status, 200);

    // A restart runs the same file as the same query, from where it committed.
    server.restart();
    assert_eq!(server.query_ids(), ids);
    produce(
        &input,
        &[Record::new(Some("s3"), Some(r#"{"CELSIUS": 40.0}"#), 3)],
    );
    let out = consume(&output, 2, Duration::from_secs(60));
    assert_eq!(
        out.iter().map(|r| r.value_json()).collect::<Vec<_>>(),
        [json!({"FAHRENHEIT": 95.0}), json!({"FAHRENHEIT": 104.0})]
    );
}
