//! Plans stored by earlier versions keep running. Each file in `tests/plan-fixtures/`
//! holds a query plan as a server stores it in its command topic (the plan's serde
//! JSON), the records it was fed and the records it wrote when the file was made. The
//! test reads the plan as stored (it never plans the SQL again), runs it on the test
//! driver and compares every record written, byte for byte.
//!
//! The files are frozen: a new version adds files and never rewrites old ones, so a
//! change that breaks one changes how queries already running in the field behave.
//! `SLUICE_WRITE_PLAN_FIXTURES=1 cargo test -p sluice-runtime --test plan_fixtures`
//! writes the file of each entry of `FIXTURES` that has none yet (check its outputs by
//! hand before committing it).

use serde_json::{Value, json};
use sluice_plan::QueryPlan;
use sluice_runtime::driver::Driver;
use sluice_runtime::{Pipeline, driver::DriverRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A record to feed: topic, key (`hex:...` for bytes that are not text), value (None: a
/// tombstone), timestamp.
type Input = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    i64,
);

/// A fixture to write: its name, what it covers, the script whose last query is the
/// plan, the topics with their partition counts, and the records to feed.
struct Spec {
    name: &'static str,
    description: &'static str,
    sql: &'static str,
    topics: &'static [(&'static str, u32)],
    inputs: &'static [Input],
}

const FIXTURES: &[Spec] = &[
    Spec {
        name: "v1-filter-project",
        description: "A filter and a projection with functions, CASE and arithmetic",
        sql: "CREATE STREAM clicks (user STRING KEY, page STRING, ms INT, tags ARRAY<STRING>) \
              WITH (kafka_topic='clicks', value_format='JSON');
              CREATE STREAM slow AS SELECT user, UCASE(page) AS page, ms / 1000.0 AS secs, \
              CASE WHEN ms > 5000 THEN 'very' ELSE 'a bit' END AS how, tags[1] AS first_tag \
              FROM clicks WHERE ms > 1000 AND page LIKE '/p%';",
        topics: &[("clicks", 1)],
        inputs: &[
            (
                "clicks",
                Some("u1"),
                Some(r#"{"PAGE":"/p1","MS":1500,"TAGS":["a","b"]}"#),
                10,
            ),
            (
                "clicks",
                Some("u2"),
                Some(r#"{"PAGE":"/x","MS":9000,"TAGS":[]}"#),
                20,
            ),
            (
                "clicks",
                Some("u3"),
                Some(r#"{"PAGE":"/p2","MS":7000,"TAGS":null}"#),
                30,
            ),
            ("clicks", Some("u1"), Some(r#"{"PAGE":"/p3","MS":900}"#), 40),
            ("clicks", Some("u4"), Some("not json"), 50),
        ],
    },
    Spec {
        name: "v1-partition-by",
        description: "PARTITION BY a value column: the key changes",
        sql: "CREATE STREAM orders (id INT KEY, customer STRING, amount DOUBLE) \
              WITH (kafka_topic='orders', value_format='JSON');
              CREATE STREAM by_customer AS SELECT customer, id, amount FROM orders \
              PARTITION BY customer;",
        topics: &[("orders", 1)],
        inputs: &[
            (
                "orders",
                Some("hex:00000001"),
                Some(r#"{"CUSTOMER":"ann","AMOUNT":9.5}"#),
                1,
            ),
            (
                "orders",
                Some("hex:00000002"),
                Some(r#"{"CUSTOMER":"bob","AMOUNT":20}"#),
                2,
            ),
            (
                "orders",
                Some("hex:00000003"),
                Some(r#"{"CUSTOMER":null,"AMOUNT":1}"#),
                3,
            ),
        ],
    },
    Spec {
        name: "v1-tumbling-count-sum",
        description: "A tumbling-window COUNT and SUM per key, with a grace period and a late record",
        sql: "CREATE STREAM views (page STRING KEY, ms INT) \
              WITH (kafka_topic='views', value_format='JSON');
              CREATE TABLE per_minute AS SELECT page, COUNT(*) AS n, SUM(ms) AS total \
              FROM views WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) GROUP BY page;",
        topics: &[("views", 1)],
        inputs: &[
            ("views", Some("/a"), Some(r#"{"MS":10}"#), 1_000),
            ("views", Some("/a"), Some(r#"{"MS":20}"#), 30_000),
            ("views", Some("/b"), Some(r#"{"MS":5}"#), 59_999),
            ("views", Some("/a"), Some(r#"{"MS":7}"#), 61_000),
            ("views", Some("/a"), Some(r#"{"MS":1}"#), 80_000),
            // Late: its window (0-60 s) closed at 70 s.
            ("views", Some("/a"), Some(r#"{"MS":100}"#), 2_000),
        ],
    },
    Spec {
        name: "v1-session-emit-final",
        description: "Session windows that merge, written once each when they close (EMIT FINAL)",
        sql: "CREATE STREAM events (device STRING KEY, v INT) \
              WITH (kafka_topic='events', value_format='JSON');
              CREATE TABLE sessions AS SELECT device, COUNT(*) AS n, MAX(v) AS top \
              FROM events WINDOW SESSION (10 SECONDS, GRACE PERIOD 0 SECONDS) \
              GROUP BY device EMIT FINAL;",
        topics: &[("events", 1)],
        inputs: &[
            ("events", Some("d1"), Some(r#"{"V":1}"#), 0),
            ("events", Some("d1"), Some(r#"{"V":5}"#), 8_000),
            ("events", Some("d2"), Some(r#"{"V":2}"#), 9_000),
            ("events", Some("d1"), Some(r#"{"V":3}"#), 16_000),
            ("events", Some("d3"), Some(r#"{"V":0}"#), 60_000),
        ],
    },
    Spec {
        name: "v1-hopping-having",
        description: "Hopping windows with HAVING: a group that stops passing is deleted",
        sql: "CREATE STREAM readings (sensor STRING KEY, temp DOUBLE) \
              WITH (kafka_topic='readings', value_format='JSON');
              CREATE TABLE warm AS SELECT sensor, AVG(temp) AS avg_temp, COUNT(*) AS n \
              FROM readings WINDOW HOPPING (SIZE 20 SECONDS, ADVANCE BY 10 SECONDS) \
              GROUP BY sensor HAVING AVG(temp) > 20;",
        topics: &[("readings", 1)],
        inputs: &[
            ("readings", Some("s1"), Some(r#"{"TEMP":25}"#), 5_000),
            ("readings", Some("s1"), Some(r#"{"TEMP":10}"#), 12_000),
            ("readings", Some("s2"), Some(r#"{"TEMP":30}"#), 15_000),
        ],
    },
    Spec {
        name: "v1-table-regroup",
        description: "A table aggregated by a value column: updates move rows between groups \
                      and deletions leave them",
        sql: "CREATE TABLE users (id STRING PRIMARY KEY, region STRING, age INT) \
              WITH (kafka_topic='users', value_format='JSON');
              CREATE TABLE per_region AS SELECT region, COUNT(*) AS users, SUM(age) AS ages \
              FROM users GROUP BY region;",
        topics: &[("users", 1)],
        inputs: &[
            ("users", Some("u1"), Some(r#"{"REGION":"eu","AGE":30}"#), 1),
            ("users", Some("u2"), Some(r#"{"REGION":"eu","AGE":40}"#), 2),
            ("users", Some("u1"), Some(r#"{"REGION":"us","AGE":31}"#), 3),
            ("users", Some("u2"), Some(r#"{"REGION":"eu","AGE":41}"#), 4),
            ("users", Some("u2"), None, 5),
        ],
    },
    Spec {
        name: "v1-stream-table-join",
        description: "A stream LEFT JOIN a table on the table's key",
        sql: "CREATE STREAM orders (id STRING KEY, product STRING, qty INT) \
              WITH (kafka_topic='orders', value_format='JSON');
              CREATE TABLE products (id STRING PRIMARY KEY, name STRING, price DOUBLE) \
              WITH (kafka_topic='products', value_format='JSON');
              CREATE STREAM priced AS SELECT o.id, o.product, p.name, o.qty * p.price AS cost \
              FROM orders o LEFT JOIN products p ON o.product = p.id;",
        topics: &[("orders", 1), ("products", 1)],
        inputs: &[
            (
                "products",
                Some("p1"),
                Some(r#"{"NAME":"pen","PRICE":1.5}"#),
                1,
            ),
            ("orders", Some("o1"), Some(r#"{"PRODUCT":"p1","QTY":4}"#), 2),
            ("orders", Some("o2"), Some(r#"{"PRODUCT":"p2","QTY":1}"#), 3),
            ("products", Some("p1"), None, 4),
            ("orders", Some("o3"), Some(r#"{"PRODUCT":"p1","QTY":2}"#), 5),
        ],
    },
    Spec {
        name: "v1-stream-stream-join",
        description: "Two streams joined within a window, with an outer join's unmatched rows",
        sql: "CREATE STREAM impressions (ad STRING KEY, slot INT) \
              WITH (kafka_topic='impressions', value_format='JSON');
              CREATE STREAM clicks (ad STRING KEY, x INT) \
              WITH (kafka_topic='ad_clicks', value_format='JSON');
              CREATE STREAM clicked AS SELECT ROWKEY AS ad, i.slot, c.x \
              FROM impressions i FULL OUTER JOIN clicks c WITHIN 10 SECONDS GRACE PERIOD 0 SECONDS \
              ON i.ad = c.ad;",
        topics: &[("impressions", 1), ("ad_clicks", 1)],
        inputs: &[
            ("impressions", Some("a1"), Some(r#"{"SLOT":1}"#), 1_000),
            ("ad_clicks", Some("a1"), Some(r#"{"X":7}"#), 3_000),
            ("impressions", Some("a2"), Some(r#"{"SLOT":2}"#), 4_000),
            ("ad_clicks", Some("a3"), Some(r#"{"X":9}"#), 5_000),
            ("impressions", Some("a4"), Some(r#"{"SLOT":4}"#), 30_000),
        ],
    },
    Spec {
        name: "v1-table-table-join",
        description: "Two tables joined on their keys (LEFT), with updates and deletions on both sides",
        sql: "CREATE TABLE accounts (id STRING PRIMARY KEY, owner STRING) \
              WITH (kafka_topic='accounts', value_format='JSON');
              CREATE TABLE balances (id STRING PRIMARY KEY, amount BIGINT) \
              WITH (kafka_topic='balances', value_format='JSON');
              CREATE TABLE statements AS SELECT a.id, a.owner, b.amount \
              FROM accounts a LEFT JOIN balances b ON a.id = b.id;",
        topics: &[("accounts", 1), ("balances", 1)],
        inputs: &[
            ("accounts", Some("a1"), Some(r#"{"OWNER":"ann"}"#), 1),
            ("balances", Some("a1"), Some(r#"{"AMOUNT":100}"#), 2),
            ("balances", Some("a1"), Some(r#"{"AMOUNT":120}"#), 3),
            ("balances", Some("a1"), None, 4),
            ("accounts", Some("a1"), None, 5),
        ],
    },
    Spec {
        name: "v1-foreign-key-join",
        description: "A table joined to another by a foreign key",
        sql: "CREATE TABLE orders (id STRING PRIMARY KEY, customer STRING, total INT) \
              WITH (kafka_topic='fk_orders', value_format='JSON');
              CREATE TABLE customers (id STRING PRIMARY KEY, name STRING) \
              WITH (kafka_topic='fk_customers', value_format='JSON');
              CREATE TABLE named AS SELECT o.id, o.total, c.name \
              FROM orders o JOIN customers c ON o.customer = c.id;",
        topics: &[("fk_orders", 1), ("fk_customers", 1)],
        inputs: &[
            ("fk_customers", Some("c1"), Some(r#"{"NAME":"ann"}"#), 1),
            (
                "fk_orders",
                Some("o1"),
                Some(r#"{"CUSTOMER":"c1","TOTAL":5}"#),
                2,
            ),
            (
                "fk_orders",
                Some("o2"),
                Some(r#"{"CUSTOMER":"c2","TOTAL":6}"#),
                3,
            ),
            ("fk_customers", Some("c2"), Some(r#"{"NAME":"bob"}"#), 4),
            ("fk_customers", Some("c1"), Some(r#"{"NAME":"anne"}"#), 5),
            (
                "fk_orders",
                Some("o2"),
                Some(r#"{"CUSTOMER":"c1","TOTAL":6}"#),
                6,
            ),
        ],
    },
    Spec {
        name: "v1-explode",
        description: "EXPLODE: a row per array element (none for an empty array)",
        sql: "CREATE STREAM baskets (shop STRING KEY, items ARRAY<INT>) \
              WITH (kafka_topic='baskets', value_format='JSON');
              CREATE STREAM items AS SELECT shop, EXPLODE(items) AS item FROM baskets;",
        topics: &[("baskets", 1)],
        inputs: &[
            ("baskets", Some("s1"), Some(r#"{"ITEMS":[3,1,2]}"#), 1),
            ("baskets", Some("s2"), Some(r#"{"ITEMS":[]}"#), 2),
            ("baskets", Some("s3"), Some(r#"{"ITEMS":null}"#), 3),
        ],
    },
    Spec {
        name: "v1-collect-topk",
        description: "Per key LATEST_BY_OFFSET, COLLECT_LIST, TOPK and COUNT_DISTINCT",
        sql: "CREATE STREAM items (shop STRING KEY, item INT) \
              WITH (kafka_topic='items', value_format='JSON');
              CREATE TABLE shop_items AS SELECT shop, LATEST_BY_OFFSET(item) AS last_item, \
              COLLECT_LIST(item) AS all_items, TOPK(item, 2) AS top2, \
              COUNT_DISTINCT(item) AS kinds FROM items GROUP BY shop;",
        topics: &[("items", 1)],
        inputs: &[
            ("items", Some("s1"), Some(r#"{"ITEM":3}"#), 1),
            ("items", Some("s1"), Some(r#"{"ITEM":1}"#), 2),
            ("items", Some("s2"), Some(r#"{"ITEM":5}"#), 3),
            ("items", Some("s1"), Some(r#"{"ITEM":3}"#), 4),
            ("items", Some("s1"), Some(r#"{"ITEM":null}"#), 5),
        ],
    },
    Spec {
        name: "v1-delimited-kafka-key",
        description: "DELIMITED values and a KAFKA INT key, re-encoded as JSON",
        sql: "CREATE STREAM raw (id INT KEY, name STRING, score DOUBLE) \
              WITH (kafka_topic='raw', key_format='KAFKA', value_format='DELIMITED');
              CREATE STREAM cooked WITH (value_format='JSON') AS \
              SELECT id, name, ROUND(score, 1) AS score FROM raw;",
        topics: &[("raw", 1)],
        inputs: &[
            ("raw", Some("hex:0000002a"), Some("ann,1.26"), 1),
            ("raw", None, Some("bob,"), 2),
            ("raw", Some("hex:00000007"), Some("too,many,fields"), 3),
        ],
    },
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plan-fixtures")
}

/// Bytes as JSON: text when they are printable UTF-8, else `{"hex": ...}`.
fn bytes_json(bytes: &Option<Vec<u8>>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) if !s.chars().any(char::is_control) => json!(s),
            _ => json!({"hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>()}),
        },
    }
}

fn json_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => {
            let hex = other["hex"].as_str().expect("text or {\"hex\": ...}");
            Some(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect(),
            )
        }
    }
}

fn record_json(topic: &str, r: &DriverRecord) -> Value {
    json!({
        "topic": topic,
        "key": bytes_json(&r.key),
        "value": bytes_json(&r.value),
        "timestamp": r.timestamp,
    })
}

/// Runs a stored plan over the inputs; returns what it wrote to its sink topic.
fn run(plan: &QueryPlan, topics: &BTreeMap<String, u32>, inputs: &[Value]) -> Vec<Value> {
    let mut driver = Driver::new();
    for (topic, partitions) in topics {
        driver.create_topic(topic, *partitions);
    }
    let pipeline = Pipeline::new(plan, None).expect("the stored plan compiles");
    let sink = pipeline.sink_topic().to_string();
    driver.create_topic(&sink, 1);
    driver.add_query("fixture", pipeline);
    for input in inputs {
        let topic = input["topic"].as_str().expect("a topic");
        driver
            .produce(
                topic,
                json_bytes(&input["key"]),
                json_bytes(&input["value"]),
                input["timestamp"].as_i64().expect("a timestamp"),
            )
            .expect("the record runs");
    }
    driver
        .records(&sink)
        .iter()
        .map(|r| record_json(&sink, r))
        .collect()
}

/// Writes the file of a fixture that has none.
fn write(spec: &Spec, path: &Path) {
    let plan = sluice_sql::plan_last_query(spec.sql).expect("the fixture's SQL plans");
    let topics: BTreeMap<String, u32> = spec
        .topics
        .iter()
        .map(|(t, p)| (t.to_string(), *p))
        .collect();
    let inputs: Vec<Value> = spec
        .inputs
        .iter()
        .map(|(topic, key, value, ts)| {
            let key = match key.and_then(|k| k.strip_prefix("hex:")) {
                Some(hex) => json!({ "hex": hex }),
                None => json!(key),
            };
            json!({"topic": topic, "key": key, "value": value, "timestamp": ts})
        })
        .collect();
    let outputs = run(&plan, &topics, &inputs);
    let file = json!({
        "description": spec.description,
        "sql": spec.sql.split_whitespace().collect::<Vec<_>>().join(" "),
        "writtenBy": format!("sluice {} (plan version {})", env!("CARGO_PKG_VERSION"), plan.version),
        "plan": serde_json::to_value(&plan).expect("a plan serializes"),
        "topics": topics,
        "inputs": inputs,
        "outputs": outputs,
    });
    let text = serde_json::to_string_pretty(&file).expect("JSON") + "\n";
    std::fs::write(path, text).expect("the fixture is written");
    eprintln!("wrote {}", path.display());
}

#[test]
fn stored_plans_still_run_as_they_did() {
    let dir = fixtures_dir();
    if std::env::var_os("SLUICE_WRITE_PLAN_FIXTURES").is_some() {
        std::fs::create_dir_all(&dir).expect("the fixtures' folder");
        for spec in FIXTURES {
            let path = dir.join(format!("{}.json", spec.name));
            if !path.exists() {
                write(spec, &path);
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/plan-fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= FIXTURES.len(),
        "every fixture has its file ({} of {})",
        files.len(),
        FIXTURES.len()
    );
    for path in files {
        let name = path.display().to_string();
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("JSON");
        // The plan as stored: read from its text by this version's serde (as the
        // command topic's records are), never planned again.
        let plan: QueryPlan = serde_json::from_str(&fixture["plan"].to_string())
            .unwrap_or_else(|e| panic!("{name}: the stored plan no longer reads: {e}"));
        let topics: BTreeMap<String, u32> =
            serde_json::from_value(fixture["topics"].clone()).expect("topics");
        let inputs = fixture["inputs"].as_array().expect("inputs");
        let outputs = run(&plan, &topics, inputs);
        let expected = fixture["outputs"].as_array().expect("outputs");
        assert!(!expected.is_empty(), "{name}: a fixture writes something");
        assert_eq!(
            &outputs, expected,
            "{name}: the stored plan's outputs changed"
        );
    }
}
