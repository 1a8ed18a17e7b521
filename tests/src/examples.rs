//! Runs an example from `sql-examples/`: its statements against a server, its input
//! records into Kafka, and its expected output checked record by record.

use crate::{Record, consume, produce};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// An input or output record as the example files write it (`window: {start}` for a
/// windowed key).
fn record_of(v: &Value) -> Result<(String, Record), String> {
    let topic = v["topic"]
        .as_str()
        .ok_or("a record needs a topic")?
        .to_string();
    let bytes = |v: &Value| -> Option<Vec<u8>> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.as_bytes().to_vec()),
            other => Some(other.to_string().into_bytes()),
        }
    };
    // A time-windowed key, as Kafka Streams writes it: the key, then the window's start
    // as 8 bytes big-endian.
    let mut key = bytes(&v["key"]);
    if let (Some(k), Some(start)) = (key.as_mut(), v["window"]["start"].as_i64()) {
        k.extend_from_slice(&start.to_be_bytes());
    }
    Ok((
        topic,
        Record {
            key,
            value: bytes(&v["value"]),
            timestamp: v["timestamp"].as_i64().unwrap_or(0),
        },
    ))
}

fn read(dir: &Path, name: &str, run_id: &str) -> Result<String, String> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.replace("${RUN_ID}", run_id))
}

fn same_value(expected: &Option<Vec<u8>>, actual: &Option<Vec<u8>>) -> bool {
    match (expected, actual) {
        (Some(e), Some(a)) => {
            match (
                serde_json::from_slice::<Value>(e),
                serde_json::from_slice::<Value>(a),
            ) {
                (Ok(e), Ok(a)) => e == a,
                _ => e == a,
            }
        }
        (e, a) => e == a,
    }
}

fn show(r: &Record) -> String {
    let text = |b: &Option<Vec<u8>>| {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "null".into())
    };
    format!(
        "key={} value={} timestamp={}",
        text(&r.key),
        text(&r.value),
        r.timestamp
    )
}

/// Runs the example in `dir` against the server at `url`, printing what it does.
/// Returns an error describing the first difference from the expected output.
/// Runs statements over REST from the earliest offsets, and prints what each did.
fn submit(url: &str, statements: &str) -> Result<(), String> {
    let resp = ureq::post(&format!("{url}/ksql"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(
            json!({"ksql": statements, "streamsProperties": {"auto.offset.reset": "earliest"}}),
        )
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("the statements failed ({status}): {body}"));
    }
    let entities: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    for e in entities.as_array().into_iter().flatten() {
        let msg = e["commandStatus"]["message"].as_str().unwrap_or("");
        println!(
            "   {} -> {msg}",
            e["statementText"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(())
}

pub fn run_example(url: &str, dir: &Path, run_id: &str) -> Result<(), String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("== example {name}");
    // An example may declare its sources first (`sources.sql`) and fill them
    // (`setup.json`, a table's contents) before its queries start.
    if dir.join("sources.sql").exists() {
        submit(url, &read(dir, "sources.sql", run_id)?)?;
    }
    if dir.join("setup.json").exists() {
        let setup: Value =
            serde_json::from_str(&read(dir, "setup.json", run_id)?).map_err(|e| e.to_string())?;
        let records = setup.as_array().ok_or("setup.json must be a list")?;
        for v in records {
            let (topic, record) = record_of(v)?;
            produce(&topic, std::slice::from_ref(&record));
        }
        println!("   produced {} setup records", records.len());
    }
    submit(url, &read(dir, "statements.sql", run_id)?)?;

    let inputs: Value =
        serde_json::from_str(&read(dir, "input.json", run_id)?).map_err(|e| e.to_string())?;
    let mut count = 0;
    for v in inputs.as_array().ok_or("input.json must be a list")? {
        let (topic, record) = record_of(v)?;
        produce(&topic, std::slice::from_ref(&record));
        count += 1;
    }
    println!("   produced {count} input records");

    let expected: Value =
        serde_json::from_str(&read(dir, "expected.json", run_id)?).map_err(|e| e.to_string())?;
    let expected: Vec<(String, Record)> = expected
        .as_array()
        .ok_or("expected.json must be a list")?
        .iter()
        .map(record_of)
        .collect::<Result<_, _>>()?;
    let mut topics: Vec<&String> = expected.iter().map(|(t, _)| t).collect();
    topics.dedup();
    for topic in topics {
        let want: Vec<&Record> = expected
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, r)| r)
            .collect();
        let got = consume(topic, want.len(), Duration::from_secs(60));
        println!("   output records on {topic}:");
        for r in &got {
            println!("     {}", show(r));
        }
        if got.len() != want.len() {
            return Err(format!(
                "{topic}: expected {} records, got {}",
                want.len(),
                got.len()
            ));
        }
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            if w.key != g.key || !same_value(&w.value, &g.value) || w.timestamp != g.timestamp {
                return Err(format!(
                    "{topic} record {i}: expected {}, got {}",
                    show(w),
                    show(g)
                ));
            }
        }
    }
    println!("   ok: the output is as expected");
    Ok(())
}
