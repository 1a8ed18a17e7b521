//! Rows of a join's two inputs that arrive interleaved and run in one flush (one batch
//! per side, the join walking them in arrival order) must give exactly what running them
//! one record at a time gives, whatever the join.

mod common;

use sluice_runtime::pipeline::{OutputRecord, Pipeline, SourceRecord};

/// The pipeline of the last CREATE ... AS SELECT among the statements.
fn pipeline(statements: &str) -> Pipeline {
    let plan = sluice_sql::plan_last_query(statements).expect("plans");
    Pipeline::new(&plan, None).expect("compiles")
}

/// A record for input 0 or 1: its key, value (None: a tombstone) and time.
struct Record {
    input: usize,
    key: String,
    value: Option<String>,
    ts: i64,
}

/// Records of both inputs in a pseudo-random order, with few keys (so that rows meet),
/// times that mostly rise but go back now and then, some NULL values and tombstones,
/// and runs of one input of random length.
fn records(seed: u64, n: usize) -> Vec<Record> {
    let mut next = common::random(seed);
    let mut out = Vec::with_capacity(n);
    let mut ts = 0i64;
    let mut input = 0;
    while out.len() < n {
        let run = 1 + next(4);
        for _ in 0..run {
            ts += next(3000) as i64;
            let at = if next(10) == 0 {
                ts - next(5000) as i64
            } else {
                ts
            };
            let value = match next(12) {
                0 => None,
                1 => Some(r#"{"V":null,"N":1}"#.to_string()),
                v => Some(format!(r#"{{"V":"v{}","N":{v}}}"#, out.len())),
            };
            out.push(Record {
                input,
                key: next(5).to_string(),
                value,
                ts: at.max(0),
            });
        }
        input = 1 - input;
    }
    out
}

/// Pushes every record, flushing after each one (`one_by_one`) or once at the end.
fn run(p: &mut Pipeline, records: &[Record], one_by_one: bool) -> Vec<String> {
    let mut out: Vec<OutputRecord> = Vec::new();
    for (offset, r) in records.iter().enumerate() {
        let record = SourceRecord {
            key: Some(r.key.as_bytes()),
            value: r.value.as_ref().map(|v| v.as_bytes()),
            headers: &[],
            timestamp: r.ts,
            partition: 0,
            offset: offset as i64,
        };
        p.push(r.input, &record).expect("decodes");
        if one_by_one {
            p.flush(&mut out).expect("runs");
        }
    }
    p.flush(&mut out).expect("runs");
    let text = |b: &Option<Vec<u8>>| match b {
        Some(b) => String::from_utf8(b.clone()).expect("utf-8"),
        None => "null".into(),
    };
    out.iter()
        .map(|r| format!("{} => {} @{}", text(&r.key), text(&r.value), r.timestamp))
        .collect()
}

const STREAMS: &str =
    "CREATE STREAM L (K STRING KEY, V STRING, N INT) WITH (kafka_topic='l', format='JSON');
    CREATE STREAM R (K STRING KEY, V STRING, N INT) WITH (kafka_topic='r', format='JSON');";
const TABLES: &str =
    "CREATE TABLE L (K STRING PRIMARY KEY, V STRING, N INT) WITH (kafka_topic='l', format='JSON');
    CREATE TABLE R (K STRING PRIMARY KEY, V STRING, N INT) WITH (kafka_topic='r', format='JSON');";
const STREAM_AND_TABLE: &str =
    "CREATE STREAM L (K STRING KEY, V STRING, N INT) WITH (kafka_topic='l', format='JSON');
    CREATE TABLE R (K STRING PRIMARY KEY, V STRING, N INT) WITH (kafka_topic='r', format='JSON');";

#[test]
fn interleaved_rows_join_as_they_would_one_by_one() {
    let queries = [
        (
            STREAMS,
            "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV FROM L JOIN R WITHIN 5 SECONDS ON L.K = R.K;",
        ),
        (
            STREAMS,
            "CREATE STREAM O AS SELECT * FROM L FULL OUTER JOIN R WITHIN 5 SECONDS ON L.K = R.K;",
        ),
        (
            STREAMS,
            "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV FROM L LEFT JOIN R WITHIN (1 SECOND, 4 SECONDS) GRACE PERIOD 2 SECONDS ON L.K = R.K WHERE L.N > 3;",
        ),
        (
            STREAMS,
            "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV, R.N FROM L JOIN R WITHIN 5 SECONDS GRACE PERIOD 1 SECOND ON L.K = R.K;",
        ),
        (
            STREAM_AND_TABLE,
            "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV FROM L LEFT JOIN R ON L.K = R.K;",
        ),
        (
            STREAM_AND_TABLE,
            "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV FROM L JOIN R ON L.K = R.K WHERE R.N > 5;",
        ),
        (
            TABLES,
            "CREATE TABLE O AS SELECT * FROM L FULL OUTER JOIN R ON L.K = R.K;",
        ),
        (
            TABLES,
            "CREATE TABLE O AS SELECT L.K, COUNT(*) AS C FROM L JOIN R ON L.K = R.K GROUP BY L.K;",
        ),
    ];
    for (sources, query) in queries {
        let sql = format!("{sources}\n{query}");
        for seed in 1..=4 {
            let input = records(seed, 400);
            let one_by_one = run(&mut pipeline(&sql), &input, true);
            let interleaved = run(&mut pipeline(&sql), &input, false);
            assert!(!one_by_one.is_empty(), "{query}: no output to compare");
            assert_eq!(interleaved, one_by_one, "{query} (seed {seed})");
        }
    }
}
