//! Throughput of the operator hot paths on one core, in records per second.
//!
//! Each scenario plans real SQL, builds the pipeline and pushes pre-encoded ~100-byte
//! JSON records through it in batches of 2,000 (as the Kafka runner does), outputs
//! encoded and dropped. Every scenario runs `--runs` times (default 5) on fresh state;
//! the harness prints each run and the median. Build with `--release`:
//!
//! ```sh
//! cargo run --release -p sluice-bench -- [--records N] [--runs N] [SCENARIO...]
//! ```
//!
//! A baseline (each record parsed into a `serde_json::Value` and written back) runs
//! first; every scenario's median is also printed as a ratio to it, which varies less
//! than records per second on a shared machine.
//!
//! Scenarios: `project` (decode, filter, project, encode), `project-avro` (the same
//! with AVRO values framed for a schema registry), `tumbling` (COUNT and SUM per
//! key over 10,000 keys in 1-minute windows), `stream-table` (lookups against a table of
//! 100,000 keys; `-rocksdb`: the table in RocksDB with every key cached, `-rocksdb-misses`:
//! 10,000 cached), `stream-stream` (two streams joined within 1 minute, records of the two
//! alternating one by one), `stream-stream-runs` (the same in runs of 500 per topic,
//! as a consumer's fetches deliver them), `stream-stream-rocksdb` (the window stores in
//! RocksDB), `grouped` (COUNT and SUM per key over 10,000
//! keys, no window), `tumbling-rocksdb` (the tumbling windows' groups in RocksDB behind
//! the in-memory cache, a commit every 20,000 records), `grouped-rocksdb` (the same with the groups in RocksDB behind the
//! in-memory cache, a commit every 20,000 records) and `grouped-rocksdb-misses` (100,000
//! keys, 10,000 kept in memory: a key seen before is read back from RocksDB).

use serde_json::json;
use sluice_plan::QueryPlan;
use sluice_registry::{MemoryRegistry, RegisteredSchema, SchemaRegistry, SchemaType, avro, frame};
use sluice_runtime::pipeline::{OutputRecord, Pipeline, SourceRecord};
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 2_000;

/// Records per commit. The server commits every 100 ms (`commit.interval.ms`), which at
/// the 250,000 records/s the RocksDB target asks for is 25,000 records: this is fewer.
const COMMIT_EVERY: usize = 20_000;

/// The plan of the last CREATE ... AS SELECT among the statements.
fn plan(sql: &str) -> QueryPlan {
    sluice_sql::plan_last_query(sql).expect("plans")
}

/// A record to push: the input it goes to, its key, value and time.
struct Input {
    input: usize,
    key: Vec<u8>,
    value: Vec<u8>,
    ts: i64,
}

/// Pushes the records through the pipeline in batches; returns the records written.
/// With a changelog, every `COMMIT_EVERY` records are a commit: the state changes are
/// taken (as for the changelog topic) and applied to the state stores.
fn run(pipeline: &mut Pipeline, records: &[Input]) -> usize {
    let mut out: Vec<OutputRecord> = Vec::with_capacity(BATCH * 2);
    let mut changes = Vec::new();
    let mut commit = |pipeline: &mut Pipeline| {
        pipeline.take_changes(&mut changes).expect("changes");
        pipeline.commit_state(&changes).expect("commits");
        changes.clear();
    };
    let mut written = 0;
    for (offset, r) in records.iter().enumerate() {
        let record = SourceRecord {
            key: Some(&r.key),
            value: Some(&r.value),
            headers: &[],
            timestamp: r.ts,
            partition: 0,
            offset: offset as i64,
        };
        pipeline.push(r.input, &record).expect("decodes");
        if pipeline.pending() >= BATCH {
            pipeline.flush(&mut out).expect("runs");
            if (offset + 1) % COMMIT_EVERY < BATCH {
                commit(pipeline);
            }
            written += out.len();
            out.clear();
        }
    }
    pipeline.flush(&mut out).expect("runs");
    commit(pipeline);
    written + out.len()
}

/// A ~100-byte click: `{"PAGE": ..., "MS": ..., "REF": ..., "AGENT": ...}`.
fn click(i: usize) -> Vec<u8> {
    format!(
        r#"{{"PAGE":"/products/item-{:05}","MS":{},"REF":"https://example.com/","AGENT":"bench/1.0"}}"#,
        i % 50_000,
        i % 1_000
    )
    .into_bytes()
}

/// The records pushed before the timed run (a table's contents), and the timed ones.
type Setup = (Vec<Input>, Vec<Input>);

struct Scenario {
    name: &'static str,
    sql: &'static str,
    /// Records pushed before the timed run (a table's contents), and the timed ones.
    setup: fn(usize, &MemoryRegistry) -> Setup,
    /// State (aggregation groups, join rows) in RocksDB, with at most this many in
    /// memory between commits (None: all in memory, no changelog).
    rocksdb_cached: Option<usize>,
}

/// Clicks of `keys` users in turn, time advancing 1 ms per 100
/// records (about 6M records per one-minute window).
fn keyed_clicks(n: usize, keys: usize) -> Vec<Input> {
    (0..n)
        .map(|i| Input {
            input: 0,
            key: (i % keys).to_string().into_bytes(),
            value: click(i),
            ts: (i / 100) as i64,
        })
        .collect()
}

const TUMBLING: &str = "CREATE STREAM clicks (user_id BIGINT KEY, page STRING, ms INT, ref STRING, agent STRING) WITH (kafka_topic='clicks', format='JSON');
    CREATE TABLE per_minute AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id;";

const GROUPED: &str = "CREATE STREAM clicks (user_id BIGINT KEY, page STRING, ms INT, ref STRING, agent STRING) WITH (kafka_topic='clicks', format='JSON');
    CREATE TABLE per_user AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total FROM clicks GROUP BY user_id;";

/// `keyed_clicks` as AVRO records: framed with the id of the schema ksqlDB would
/// register for the clicks stream's values.
fn avro_clicks(n: usize, registry: &MemoryRegistry) -> Vec<Input> {
    let schema = json!({"type": "record", "name": "KsqlDataSourceSchema",
        "namespace": "io.confluent.ksql.avro_schemas", "fields": [
        {"name": "PAGE", "type": ["null", "string"], "default": null},
        {"name": "MS", "type": ["null", "int"], "default": null},
        {"name": "REF", "type": ["null", "string"], "default": null},
        {"name": "AGENT", "type": ["null", "string"], "default": null}]});
    let id = registry
        .register(
            "clicks-value",
            &RegisteredSchema::new(SchemaType::Avro, schema.to_string()),
        )
        .expect("registers");
    let parsed = avro::Schema::from_json(&schema).expect("a schema");
    keyed_clicks(n, 10_000)
        .into_iter()
        .map(|mut r| {
            let json: serde_json::Value = serde_json::from_slice(&r.value).expect("JSON");
            let mut bytes = Vec::new();
            frame(id, &mut bytes);
            avro::write_json(&parsed, &json, &mut bytes).expect("fits");
            r.value = bytes;
            r
        })
        .collect()
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "project",
            sql: "CREATE STREAM clicks (user_id BIGINT KEY, page STRING, ms INT, ref STRING, agent STRING) WITH (kafka_topic='clicks', format='JSON');
                  CREATE STREAM out AS SELECT user_id, UCASE(page) AS page, ms * 2 AS ms2, ref FROM clicks WHERE ms > 100;",
            setup: |n, _| (Vec::new(), keyed_clicks(n, 10_000)),
            rocksdb_cached: None,
        },
        Scenario {
            name: "project-avro",
            sql: "CREATE STREAM clicks (user_id BIGINT KEY, page STRING, ms INT, ref STRING, agent STRING) WITH (kafka_topic='clicks', key_format='JSON', value_format='AVRO');
                  CREATE STREAM out AS SELECT user_id, UCASE(page) AS page, ms * 2 AS ms2, ref FROM clicks WHERE ms > 100;",
            setup: |n, registry| (Vec::new(), avro_clicks(n, registry)),
            rocksdb_cached: None,
        },
        Scenario {
            name: "tumbling",
            sql: TUMBLING,
            setup: |n, _| (Vec::new(), keyed_clicks(n, 10_000)),
            rocksdb_cached: None,
        },
        Scenario {
            name: "stream-table",
            sql: STREAM_TABLE,
            setup: users_and_clicks,
            rocksdb_cached: None,
        },
        // The table in RocksDB behind the cache: every user fits in memory...
        Scenario {
            name: "stream-table-rocksdb",
            sql: STREAM_TABLE,
            setup: users_and_clicks,
            rocksdb_cached: Some(200_000),
        },
        // ... or a tenth of them do: most lookups read RocksDB.
        Scenario {
            name: "stream-table-rocksdb-misses",
            sql: STREAM_TABLE,
            setup: users_and_clicks,
            rocksdb_cached: Some(10_000),
        },
        Scenario {
            name: "stream-stream",
            sql: STREAM_STREAM,
            setup: |n, _| (Vec::new(), orders_and_shipments(n, 1)),
            rocksdb_cached: None,
        },
        Scenario {
            name: "stream-stream-runs",
            sql: STREAM_STREAM,
            setup: |n, _| (Vec::new(), orders_and_shipments(n, 500)),
            rocksdb_cached: None,
        },
        // The window stores in RocksDB: a key's rows are read back once memory dropped
        // them (each order's shipment comes 500 orders later).
        Scenario {
            name: "stream-stream-rocksdb",
            sql: STREAM_STREAM,
            setup: |n, _| (Vec::new(), orders_and_shipments(n, 1)),
            rocksdb_cached: Some(100_000),
        },
        Scenario {
            name: "grouped",
            sql: GROUPED,
            setup: |n, _| (Vec::new(), keyed_clicks(n, 10_000)),
            rocksdb_cached: None,
        },
        Scenario {
            name: "tumbling-rocksdb",
            sql: TUMBLING,
            setup: |n, _| (Vec::new(), keyed_clicks(n, 10_000)),
            rocksdb_cached: Some(100_000),
        },
        Scenario {
            name: "grouped-rocksdb",
            sql: GROUPED,
            setup: |n, _| (Vec::new(), keyed_clicks(n, 10_000)),
            rocksdb_cached: Some(100_000),
        },
        // Ten times more keys than memory keeps, each seen every 100,000 records: a row
        // whose key was seen before reads its group back from RocksDB.
        Scenario {
            name: "grouped-rocksdb-misses",
            sql: GROUPED,
            setup: |n, _| (Vec::new(), keyed_clicks(n, 100_000)),
            rocksdb_cached: Some(10_000),
        },
    ]
}

const STREAM_TABLE: &str = "CREATE STREAM clicks (user_id BIGINT KEY, page STRING, ms INT, ref STRING, agent STRING) WITH (kafka_topic='clicks', format='JSON');
                  CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING, region STRING) WITH (kafka_topic='users', format='JSON');
                  CREATE STREAM enriched AS SELECT c.user_id, page, name, region FROM clicks c JOIN users u ON c.user_id = u.id;";

/// A table of 100,000 users, then clicks of users in turn.
fn users_and_clicks(n: usize, _: &MemoryRegistry) -> Setup {
    let table = (0..100_000)
        .map(|i| Input {
            input: 1,
            key: i.to_string().into_bytes(),
            value: format!(r#"{{"NAME":"user {i}","REGION":"region-{}"}}"#, i % 20).into_bytes(),
            ts: 0,
        })
        .collect();
    let timed = (0..n)
        .map(|i| Input {
            input: 0,
            key: ((i * 7) % 100_000).to_string().into_bytes(),
            value: click(i),
            ts: i as i64,
        })
        .collect();
    (table, timed)
}

const STREAM_STREAM: &str = "CREATE STREAM orders (id BIGINT KEY, item STRING, qty INT) WITH (kafka_topic='orders', format='JSON');
    CREATE STREAM shipments (id BIGINT KEY, carrier STRING, ref STRING) WITH (kafka_topic='shipments', format='JSON');
    CREATE STREAM shipped AS SELECT o.id, item, qty, carrier FROM orders o JOIN shipments s WITHIN 1 MINUTE ON o.id = s.id;";

/// Orders and their shipments, arriving in runs of `run` records of one topic (1: they
/// alternate record by record; a consumer's fetches deliver runs of a partition). Each
/// order's shipment comes 500 orders later, well within the window; ids never repeat, so
/// every shipment finds exactly one order.
fn orders_and_shipments(n: usize, run: usize) -> Vec<Input> {
    (0..n)
        .map(|i| {
            let shipment = (i / run) % 2 == 1;
            let seq = (i / (2 * run)) * run + i % run;
            let id = if shipment {
                seq.saturating_sub(500)
            } else {
                seq
            };
            Input {
                input: shipment as usize,
                key: id.to_string().into_bytes(),
                value: if shipment {
                    format!(
                        r#"{{"CARRIER":"carrier-{}","REF":"ref-{id:010}-padding-padding"}}"#,
                        id % 7
                    )
                } else {
                    format!(
                        r#"{{"ITEM":"item-{:06}-with-a-longer-name","QTY":{}}}"#,
                        id % 100_000,
                        id % 9
                    )
                }
                .into_bytes(),
                ts: (i / 10) as i64,
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut records = 500_000usize;
    let mut runs = 5usize;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => {
                records = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--records N")
            }
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            other => only.push(other.to_string()),
        }
    }
    // The baseline, measured in the same run so that ratios survive a noisy machine:
    // what a naive engine does per record, a JSON value parsed into a tree and written
    // back (serde_json, as Sluice decoded before its own scanner).
    let clicks: Vec<Vec<u8>> = (0..records).map(click).collect();
    let baseline = median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                let mut bytes = 0;
                for c in &clicks {
                    let v: serde_json::Value = serde_json::from_slice(c).expect("JSON");
                    bytes += serde_json::to_vec(&v).expect("writes").len();
                }
                std::hint::black_box(bytes);
                clicks.len() as f64 / started.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!(
        "{:<18} median {baseline:>10.0} records/s  (JSON tree round trip)",
        "baseline"
    );
    for s in scenarios() {
        if !only.is_empty() && !only.iter().any(|o| o == s.name) {
            continue;
        }
        let plan = plan(s.sql);
        let registry = Arc::new(MemoryRegistry::new());
        let (setup, timed) = (s.setup)(records, &registry);
        let mut rates = Vec::new();
        let mut written = 0;
        for _ in 0..runs {
            let mut pipeline =
                Pipeline::new(&plan, Some(registry.clone() as Arc<dyn SchemaRegistry>))
                    .expect("compiles");
            // Kept until the run ends: the database lives in it.
            let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(cached) = s.rocksdb_cached {
                let db = sluice_state::StateDb::open(&dir).expect("opens RocksDB");
                pipeline
                    .use_state_stores(
                        |name| Ok(Box::new(db.storage(name).expect("a column family"))),
                        cached,
                    )
                    .expect("stores");
                pipeline.record_changes();
            }
            run(&mut pipeline, &setup);
            let started = Instant::now();
            written = run(&mut pipeline, &timed);
            rates.push(timed.len() as f64 / started.elapsed().as_secs_f64());
            drop(pipeline);
            let _ = std::fs::remove_dir_all(&dir);
        }
        let shown: Vec<String> = rates.iter().map(|r| format!("{:.0}", r)).collect();
        let rate = median(rates);
        println!(
            "{:<18} median {:>10.0} records/s  {:.2}x baseline  (runs: {}; {} in, {} out per run)",
            s.name,
            rate,
            rate / baseline,
            shown.join(", "),
            timed.len(),
            written
        );
    }
}
