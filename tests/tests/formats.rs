//! Schema-registry formats on the real broker: a stream whose columns come from the
//! Avro schema its producer registered, filtered into an Avro stream and aggregated into
//! a PROTOBUF table, every record framed with the id of a schema the registry holds.
//!
//! Needs a broker: `scripts/kafka-local.sh start` (the README's test command does it).

use serde_json::{Value, json};
use sluice_e2e::registry::TestRegistry;
use sluice_e2e::{Record, Server, consume, consume_until, produce, sluice_bin, unique};
use sluice_registry::avro::{self, Schema};
use sluice_registry::{
    HttpRegistry, RegisteredSchema, SchemaRegistry, SchemaType, frame, protobuf, unframe,
};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A record's value read with the schema its id names, as JSON.
fn read(registry: &HttpRegistry, bytes: &[u8]) -> Value {
    let (id, payload) = unframe(bytes).expect("a framed record");
    let schema = registry
        .schema(id)
        .expect("the record's schema is registered");
    match schema.schema_type {
        SchemaType::Avro => avro::Reader::new(payload)
            .json(&Schema::parse(&schema.text).expect("an Avro schema"))
            .expect("Avro data"),
        SchemaType::Protobuf => {
            let file = protobuf::parse(&schema.text).expect("a protobuf schema");
            let mut r = protobuf::Reader::new(payload);
            let path = protobuf::read_message_indexes(&mut r).expect("message indexes");
            protobuf::read_message(
                file.message_at(&path).expect("the message"),
                r.rest(),
                false,
            )
            .expect("protobuf data")
        }
        SchemaType::Json => serde_json::from_slice(payload).expect("JSON"),
    }
}

#[test]
fn avro_orders_are_filtered_to_avro_and_totalled_to_protobuf() {
    let registry = TestRegistry::start();
    let server = Server::start_with(
        &unique("svc"),
        &[("--schema-registry-url", registry.url.as_str())],
    );
    let client = HttpRegistry::new(&registry.url);
    let (orders, big, totals) = (unique("orders"), unique("big"), unique("totals"));

    // The producer registers its schema; the stream's columns come from it.
    let schema = json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2}},
        {"name": "note", "type": ["null", "string"], "default": null}]});
    let id = client
        .register(
            &format!("{orders}-value"),
            &RegisteredSchema::new(SchemaType::Avro, schema.to_string()),
        )
        .expect("the registry takes the schema");
    server.ok(&format!(
        "CREATE STREAM orders WITH (kafka_topic='{orders}', value_format='AVRO', partitions=1);"
    ));
    let described = server.ok("DESCRIBE orders;");
    let fields: Vec<(String, String)> = described[0]["sourceDescription"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                f["schema"]["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("ID", "BIGINT"),
            ("CUSTOMER", "STRING"),
            ("AMOUNT", "DECIMAL"),
            ("NOTE", "STRING")
        ]
        .map(|(n, t)| (n.to_string(), t.to_string()))
    );

    server.ok(&format!(
        "CREATE STREAM big WITH (kafka_topic='{big}', value_format='AVRO') AS \
           SELECT id, customer, amount FROM orders WHERE amount > 10;"
    ));
    server.ok(&format!(
        "CREATE TABLE totals WITH (kafka_topic='{totals}', format='PROTOBUF') AS \
           SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer;"
    ));

    let parsed = Schema::parse(&schema.to_string()).expect("the producer's schema");
    let order = |id: i64, customer: &str, amount: &str, ts: i64| {
        let mut bytes = Vec::new();
        frame(id_of(&client, &orders), &mut bytes);
        avro::write_json(
            &parsed,
            &json!({"id": id, "customer": customer, "amount": amount, "note": null}),
            &mut bytes,
        )
        .expect("an order fits the schema");
        Record {
            key: None,
            value: Some(bytes),
            timestamp: ts,
        }
    };
    assert_eq!(id_of(&client, &orders), id);
    let held = server.ok(&format!("ASSERT SCHEMA SUBJECT '{orders}-value' ID {id};"));
    assert_eq!(held[0]["@type"], "assert_schema", "{held}");
    server.ok("ASSERT NOT EXISTS SCHEMA ID 9999;");
    let (status, body) = server.ksql("ASSERT SCHEMA ID 9999 TIMEOUT 100 MILLISECONDS;");
    assert_eq!(status, 417, "{body}");
    assert_eq!(body["message"], "Schema with id 9999 does not exist");
    produce(
        &orders,
        &[
            order(1, "ann", "12.50", 1_000),
            order(2, "bob", "3.00", 2_000),
            order(3, "ann", "40.25", 3_000),
        ],
    );

    let big_rows: Vec<Value> = consume(&big, 2, WAIT)
        .iter()
        .map(|r| read(&client, r.value.as_deref().expect("a value")))
        .collect();
    assert_eq!(
        big_rows,
        vec![
            json!({"ID": 1, "CUSTOMER": "ann", "AMOUNT": "12.50"}),
            json!({"ID": 3, "CUSTOMER": "ann", "AMOUNT": "40.25"}),
        ]
    );

    // The table's latest row per customer (the cache may merge updates).
    let latest = |records: &[(i32, Record)]| -> BTreeMap<String, Value> {
        records
            .iter()
            .map(|(_, r)| {
                let key = read(&client, r.key.as_deref().expect("a key"));
                let value = read(&client, r.value.as_deref().expect("a value"));
                (
                    key["CUSTOMER"].as_str().unwrap_or_default().to_string(),
                    value,
                )
            })
            .collect()
    };
    let want: BTreeMap<String, Value> = [
        ("ann".to_string(), json!({"N": 2, "TOTAL": "52.75"})),
        ("bob".to_string(), json!({"N": 1, "TOTAL": "3.00"})),
    ]
    .into();
    let got = latest(&consume_until(&totals, WAIT, |r| latest(r) == want));
    assert_eq!(got, want);

    // PRINT reads framed records with their registered schemas.
    let out = std::process::Command::new(sluice_bin())
        .args(["cli", &server.url, "-e"])
        .arg(format!("PRINT '{big}' FROM BEGINNING LIMIT 1;"))
        .output()
        .expect("sluice cli runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("Value format: AVRO\n"), "{printed}");
    assert!(
        printed.contains(r#"value: {"ID":1,"CUSTOMER":"ann","AMOUNT":"12.50"}"#),
        "{printed}"
    );

    let subjects = registry.subjects();
    for s in [
        format!("{big}-value"),
        format!("{totals}-key"),
        format!("{totals}-value"),
    ] {
        assert!(subjects.contains(&s), "{s} is registered: {subjects:?}");
    }

    // Dropping a table with its topic drops its schemas too.
    server.ok("DROP TABLE totals DELETE TOPIC;");
    let subjects = registry.subjects();
    assert!(
        !subjects.iter().any(|s| s.starts_with(&totals)),
        "the table's subjects are gone: {subjects:?}"
    );
    assert!(subjects.contains(&format!("{big}-value")));
}

/// The id of the latest value schema of `topic`.
fn id_of(client: &HttpRegistry, topic: &str) -> i32 {
    client
        .latest(&format!("{topic}-value"))
        .expect("the registry answers")
        .expect("a schema")
        .0
}

#[test]
fn a_record_whose_schema_the_registry_cannot_serve_waits_for_it_and_is_not_skipped() {
    let registry = TestRegistry::start();
    let server = Server::start_with(
        &unique("svc"),
        &[("--schema-registry-url", registry.url.as_str())],
    );
    let client = HttpRegistry::new(&registry.url);
    let (events, copies) = (unique("events"), unique("copies"));
    let v1 = json!({"type": "record", "name": "Event", "fields": [
        {"name": "id", "type": "long"}]});
    let v2 = json!({"type": "record", "name": "Event", "fields": [
        {"name": "id", "type": "long"},
        {"name": "source", "type": ["null", "string"], "default": null}]});
    let subject = format!("{events}-value");
    let register = |schema: &Value| {
        client
            .register(
                &subject,
                &RegisteredSchema::new(SchemaType::Avro, schema.to_string()),
            )
            .expect("registers")
    };
    let first = register(&v1);
    server.ok(&format!(
        "CREATE STREAM events WITH (kafka_topic='{events}', value_format='AVRO', partitions=1);
         CREATE STREAM copies WITH (kafka_topic='{copies}', value_format='JSON') AS SELECT id FROM events;"
    ));
    let (query, _) = server
        .query_ids()
        .into_iter()
        .find(|(id, _)| id.contains("COPIES"))
        .expect("the query runs");
    let event = |id: i32, schema: &Value, value: Value| {
        let mut bytes = Vec::new();
        frame(id, &mut bytes);
        avro::write_json(
            &Schema::from_json(schema).expect("a schema"),
            &value,
            &mut bytes,
        )
        .expect("fits");
        Record {
            key: None,
            value: Some(bytes),
            timestamp: 1_000,
        }
    };
    produce(&events, &[event(first, &v1, json!({"id": 1}))]);
    assert_eq!(consume(&copies, 1, WAIT)[0].value_json(), json!({"ID": 1}));

    // A producer moves to a new schema version; the registry goes down before the
    // query reads the record that carries its id.
    let second = register(&v2);
    registry.set_down(true);
    produce(
        &events,
        &[event(second, &v2, json!({"id": 2, "source": "web"}))],
    );
    sluice_e2e::eventually(WAIT, "the query to wait for the registry", || {
        server
            .metric("sluice_query_restarts", &query)
            .filter(|n| *n >= 1.0)
            .map(|_| ())
    });
    registry.set_down(false);
    let rows: Vec<Value> = consume(&copies, 2, WAIT)
        .iter()
        .map(Record::value_json)
        .collect();
    assert_eq!(rows, vec![json!({"ID": 1}), json!({"ID": 2})]);
    assert_eq!(
        server.metric("sluice_query_skipped_records_total", &query),
        Some(0.0),
        "no record was skipped"
    );
}

#[test]
fn a_protobuf_schema_that_imports_another_is_read_through_its_references() {
    let registry = TestRegistry::start();
    let server = Server::start_with(
        &unique("svc"),
        &[("--schema-registry-url", registry.url.as_str())],
    );
    let client = HttpRegistry::new(&registry.url);
    let (logistics, out) = (unique("logistics"), unique("events_json"));
    let event = "syntax = \"proto3\"; package ev; message Event { int64 timestamp = 1; }";
    client
        .register(
            "event.proto",
            &RegisteredSchema::new(SchemaType::Protobuf, event),
        )
        .expect("registers");
    let main = RegisteredSchema {
        references: vec![sluice_registry::SchemaReference {
            name: "event.proto".into(),
            subject: "event.proto".into(),
            version: 1,
        }],
        ..RegisteredSchema::new(
            SchemaType::Protobuf,
            "syntax = \"proto3\"; import \"event.proto\"; message Logistics { ev.Event event = 1; string note = 2; }",
        )
    };
    let id = client
        .register(&format!("{logistics}-value"), &main)
        .expect("registers");
    server.ok(&format!(
        "CREATE STREAM logistics WITH (kafka_topic='{logistics}', value_format='PROTOBUF', partitions=1);
         CREATE STREAM events_json WITH (kafka_topic='{out}', value_format='JSON') AS
           SELECT event->timestamp AS ts, note FROM logistics;"
    ));
    let schema = client.schema(id).expect("the schema, its imports resolved");
    let file = protobuf::parse_with_imports(&schema.text, &schema.imports).expect("parses");
    let (message, path) = file.message(None).expect("the first message");
    let mut bytes = Vec::new();
    frame(id, &mut bytes);
    protobuf::write_message_indexes(&mut bytes, &path);
    protobuf::write_message(
        message,
        &json!({"event": {"timestamp": 42}, "note": "shipped"}),
        &mut bytes,
    )
    .expect("fits");
    produce(
        &logistics,
        &[Record {
            key: None,
            value: Some(bytes),
            timestamp: 1_000,
        }],
    );
    let rows: Vec<Value> = consume(&out, 1, WAIT)
        .iter()
        .map(Record::value_json)
        .collect();
    assert_eq!(rows, vec![json!({"TS": 42, "NOTE": "shipped"})]);
}
