//! `sluice test rest-qtt`: ksqlDB's REST query-validation cases (the `rest-qtt` format
//! of `../shared/conformance/README.md`), each run against its own in-process server on
//! the test driver's topics, spoken to over HTTP on loopback as a client would.
//!
//! A case runs as ksqlDB's harness runs it: the statements before the first query go to
//! `/ksql` one by one; the case's input records are then written (after the push query
//! has started, for a case that waits for it); the queries go to `/query`. The entities
//! and query responses are compared with the expected ones, and the records on the
//! case's output topics with its outputs. An expected error must be the response of one
//! of the statements.

use crate::engine::{Engine, ServerConfig};
use serde_json::{Value, json};
use sluice_qtt::{CaseResult, Verdict, fail, skip, values};
use sluice_runtime::driver::Driver;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a query's response may take before what has come is compared.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the cases of the files, in order.
pub fn run_files(files: &[PathBuf]) -> std::io::Result<Vec<CaseResult>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for file in files {
        results.extend(sluice_qtt::run_file_with(file, &|case| {
            run_case(&runtime, case)
        }));
    }
    Ok(results)
}

/// A server for one case; dropping it stops the server.
struct CaseServer {
    url: String,
    engine: Arc<Engine>,
    driver: Arc<Mutex<Driver>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CaseServer {
    fn drop(&mut self) {
        self.task.abort();
        self.engine.shutdown();
    }
}

impl CaseServer {
    fn start(runtime: &tokio::runtime::Runtime, case: &Value) -> Result<CaseServer, Verdict> {
        let driver = Arc::new(Mutex::new(Driver::from_env()));
        for (name, partitions) in harness_topics(case) {
            lock(&driver).create_topic(&name, partitions);
        }
        let mut config = ServerConfig::new("in-memory");
        // ksqlDB's harness runs its server with queries reading from the start.
        config.auto_offset_reset = "earliest".into();
        let registry = Arc::new(sluice_registry::MemoryRegistry::new());
        sluice_qtt::register_case_schemas(case, &registry).map_err(Verdict::Fail)?;
        let engine = Engine::in_memory(config, driver.clone(), registry);
        let router = crate::rest::router(engine.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .and_then(|l| Ok((l.local_addr()?, l)));
        let (addr, listener) = match listener {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on loopback: {e}")),
        };
        let task = runtime.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(CaseServer {
            url: format!("http://{addr}"),
            engine,
            driver,
            task,
        })
    }

    /// Writes the case's input records; returns the indexes, per topic, they took.
    fn produce_inputs(&self, case: &Value) -> Result<BTreeMap<String, BTreeSet<usize>>, Verdict> {
        let mut produced: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for r in case["inputs"].as_array().into_iter().flatten() {
            let topic = r["topic"].as_str().unwrap_or_default();
            let input = {
                let ms = self
                    .engine
                    .metastore
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let registry = self
                    .engine
                    .registry()
                    .expect("the test driver has a registry");
                sluice_qtt::encode_input(
                    sluice_qtt::source_on(&ms.sources, topic),
                    r,
                    registry.as_ref(),
                )
            };
            let input = match input {
                Ok(i) => i,
                Err(e) => return skip(format!("cannot serialize an input: {e}")),
            };
            let mut driver = lock(&self.driver);
            produced
                .entry(topic.to_string())
                .or_default()
                .insert(driver.records(topic).len());
            if let Err(e) = driver.produce_with_headers(
                topic,
                input.key,
                input.value,
                input.headers,
                input.timestamp,
            ) {
                return fail(format!("the query failed: {e}"));
            }
        }
        Ok(produced)
    }

    fn push_queries(&self) -> usize {
        self.engine
            .push_queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn lock(driver: &Mutex<Driver>) -> std::sync::MutexGuard<'_, Driver> {
    driver.lock().unwrap_or_else(|p| p.into_inner())
}

/// The topics ksqlDB's REST harness creates for a case: those it names (with their
/// partition counts), and those its records are on, with the partition count a
/// statement gives the topic, else 4 (the harness's default, which shows in the order
/// of table scans).
fn harness_topics(case: &Value) -> Vec<(String, u32)> {
    use sluice_sql::ast::{PropertyValue, StatementKind};
    // Each CREATE's topic, its PARTITIONS if given, and whether it is a source's (read).
    let mut created: Vec<(String, Option<u32>, bool)> = Vec::new();
    for text in sluice_qtt::statements(case) {
        // A statement the case expects refused may not parse: it names no topic.
        for stmt in sluice_sql::parse_statements(&text).unwrap_or_default() {
            let (properties, read) = match &stmt.kind {
                StatementKind::CreateSource(c) => (&c.properties, true),
                StatementKind::CreateAs(c) => (&c.properties, false),
                _ => continue,
            };
            let Some(PropertyValue::String(topic)) = properties.get("KAFKA_TOPIC") else {
                continue;
            };
            let partitions = match properties.get("PARTITIONS") {
                Some(PropertyValue::Number(n)) => n.parse().ok(),
                _ => None,
            };
            created.push((topic.clone(), partitions, read));
        }
    }
    let declared = |topic: &str| {
        created
            .iter()
            .find_map(|(t, p, _)| if t == topic { *p } else { None })
            .unwrap_or(4)
    };
    let named = |topic: &str| {
        case["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["name"] == topic)
    };
    let read = created
        .iter()
        .filter(|(_, _, read)| *read)
        .map(|(t, _, _)| (t.clone(), 4));
    let mut topics: Vec<(String, u32)> = Vec::new();
    for (name, partitions) in sluice_qtt::case_topics(case).into_iter().chain(read) {
        if !topics.iter().any(|(n, _)| *n == name) {
            let partitions = if named(&name) {
                partitions
            } else {
                declared(&name)
            };
            topics.push((name, partitions));
        }
    }
    topics
}

/// A response of the REST API to one statement.
#[derive(Debug)]
enum Response {
    /// `/ksql`: the entities of the statement (none for INSERT ... VALUES).
    Admin(Vec<Value>),
    /// `/query`: the elements of the streamed array.
    Query(Vec<Value>),
    /// Any endpoint: an error status and its body.
    Error { status: u16, body: Value },
}

fn is_query(statement: &str) -> bool {
    let upper = statement.trim_start().to_ascii_uppercase();
    upper.starts_with("SELECT") || upper.starts_with("PRINT")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(QUERY_TIMEOUT))
        .build()
        .into()
}

/// Sends a statement to `/ksql`.
fn send_admin(url: &str, statement: &str, properties: &Value) -> Result<Response, String> {
    let body = json!({"ksql": statement, "streamsProperties": properties});
    let mut resp = agent()
        .post(&format!("{url}/ksql"))
        .send_json(&body)
        .map_err(|e| format!("POST /ksql: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("POST /ksql: {e}"))?;
    let body: Value =
        serde_json::from_str(&text).map_err(|e| format!("POST /ksql answered {text}: {e}"))?;
    if status >= 300 {
        return Ok(Response::Error { status, body });
    }
    Ok(Response::Admin(
        body.as_array().cloned().unwrap_or_default(),
    ))
}

/// Sends a query to `/query` and reads its streamed array until it ends, `expected`
/// elements have come (a push query without a LIMIT never ends), or the time is up.
fn send_query(
    url: &str,
    statement: &str,
    properties: &Value,
    expected: usize,
) -> Result<Response, String> {
    let body = json!({"ksql": statement, "streamsProperties": properties});
    let mut resp = agent()
        .post(&format!("{url}/query"))
        .send_json(&body)
        .map_err(|e| format!("POST /query: {e}"))?;
    let status = resp.status().as_u16();
    let mut reader = resp.body_mut().as_reader();
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let mut text = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // The time is up: compare what has come.
            Err(_) => break,
        };
        text.extend_from_slice(&buf[..n]);
        if status < 300
            && (parse_elements(&text).len() >= expected.max(1) || Instant::now() > deadline)
        {
            break;
        }
    }
    if status >= 300 {
        let body = serde_json::from_slice(&text).unwrap_or(Value::Null);
        return Ok(Response::Error { status, body });
    }
    Ok(Response::Query(parse_elements(&text)))
}

/// The complete elements of a JSON array that may still be streaming.
fn parse_elements(text: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(text);
    let trimmed = text.trim_end();
    let complete = if trimmed.ends_with(']') {
        trimmed.to_string()
    } else {
        format!("{trimmed}]")
    };
    serde_json::from_str::<Vec<Value>>(&complete).unwrap_or_default()
}

/// Checks an error response against the case's `expectedError`: its status, its type
/// (ksqlDB's `KsqlStatementErrorMessage` is our `statement_error`) and its message,
/// which must contain the expected one.
fn matches_expected_error(expected: &Value, status: u16, body: &Value) -> Result<(), String> {
    let message = body["message"].as_str().unwrap_or_default();
    if let Some(want) = expected["status"].as_u64()
        && want != u64::from(status)
    {
        return Err(format!("expected status {want}, got {status} ({message})"));
    }
    if let Some(want) = expected["message"].as_str()
        && !message.contains(want)
    {
        return Err(format!(
            "refused with a different message: expected \"{want}\", got \"{message}\""
        ));
    }
    if expected["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("KsqlStatementErrorMessage"))
        && body["@type"] != "statement_error"
    {
        return Err(format!("expected a statement error, got {body}"));
    }
    Ok(())
}

fn run_case(runtime: &tokio::runtime::Runtime, case: &Value) -> Result<(), Verdict> {
    sluice_qtt::check_supported(case)?;
    if case.to_string().contains("\"protoSchema\"") {
        return skip("responses in the PROTOBUF wire shape are not supported yet");
    }
    let statements = sluice_qtt::statements(case);
    let properties = case.get("properties").cloned().unwrap_or_else(|| json!({}));
    let expected_error = case.get("expectedError");
    let expected: Vec<Value> = case["responses"].as_array().cloned().unwrap_or_default();
    let server = CaseServer::start(runtime, case)?;
    let first_query = statements
        .iter()
        .position(|s| is_query(s))
        .unwrap_or(statements.len());

    let mut responses: Vec<(usize, Value)> = Vec::new();
    // Checks a response: an error ends the case (passing if it was the expected one);
    // otherwise its entities or elements join the responses.
    let mut take = |index: usize, response: Response| -> Result<bool, Verdict> {
        match response {
            Response::Error { status, body } => match expected_error {
                Some(want) => {
                    matches_expected_error(want, status, &body).map_err(Verdict::Fail)?;
                    Ok(true)
                }
                None => fail(format!(
                    "statement {} refused with {status}: {}",
                    index + 1,
                    body["message"].as_str().unwrap_or(&body.to_string())
                )),
            },
            Response::Admin(entities) => {
                responses.extend(entities.into_iter().map(|e| (index, json!({"admin": e}))));
                Ok(false)
            }
            Response::Query(elements) => {
                responses.push((index, json!({"query": elements})));
                Ok(false)
            }
        }
    };

    for (i, statement) in statements[..first_query].iter().enumerate() {
        let response = send_admin(&server.url, statement, &properties).map_err(Verdict::Fail)?;
        if take(i, response)? {
            return Ok(());
        }
    }

    // The number of elements expected in each query's response, in order.
    let query_sizes: Vec<usize> = expected
        .iter()
        .filter_map(|r| r["query"].as_array().map(Vec::len))
        .collect();
    let queries: Vec<(usize, &String)> = statements.iter().enumerate().skip(first_query).collect();
    let wait_for_push = case["inputConditions"]["waitForActivePushQuery"] == json!(true);
    let produced;
    let mut query_responses = Vec::new();
    if wait_for_push {
        // Start the queries, wait until they run, then write the inputs.
        let handles: Vec<_> = queries
            .iter()
            .enumerate()
            .map(|(n, (_, statement))| {
                let (url, statement, properties) = (
                    server.url.clone(),
                    statement.to_string(),
                    properties.clone(),
                );
                let size = query_sizes.get(n).copied().unwrap_or(0);
                std::thread::spawn(move || send_query(&url, &statement, &properties, size))
            })
            .collect();
        let deadline = Instant::now() + QUERY_TIMEOUT;
        while server.push_queries() < queries.len()
            && Instant::now() < deadline
            && !handles.iter().any(|h| h.is_finished())
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        produced = server.produce_inputs(case)?;
        for h in handles {
            query_responses.push(
                h.join()
                    .map_err(|_| Verdict::Fail("the query's client panicked".into()))?,
            );
        }
    } else {
        produced = server.produce_inputs(case)?;
        for (n, (_, statement)) in queries.iter().enumerate() {
            let response = if is_query(statement) {
                let size = query_sizes.get(n).copied().unwrap_or(0);
                send_query(&server.url, statement, &properties, size)
            } else {
                send_admin(&server.url, statement, &properties)
            };
            query_responses.push(response);
        }
    }
    for ((index, _), response) in queries.iter().zip(query_responses) {
        if take(*index, response.map_err(Verdict::Fail)?)? {
            return Ok(());
        }
    }
    if let Some(e) = expected_error {
        return fail(format!("expected a statement to be refused: {e}"));
    }

    if let Some(outputs) = case["outputs"].as_array() {
        let ms = server
            .engine
            .metastore
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sluice_qtt::check_outputs(
            &lock(&server.driver),
            &ms.sources,
            outputs,
            &produced,
            server
                .engine
                .registry()
                .expect("the test driver has a registry")
                .as_ref(),
        )
        .map_err(Verdict::Fail)?;
    }

    for (i, want) in expected.iter().enumerate() {
        let Some((index, got)) = responses.get(i) else {
            return fail(format!(
                "expected {} responses, got {}; first missing: {want}",
                expected.len(),
                responses.len()
            ));
        };
        let result = match (&want["query"], &got["query"]) {
            (Value::Array(w), Value::Array(g)) if is_table_scan(&statements[*index], w) => {
                compare_unordered(w, g)
            }
            _ => compare(want, got),
        };
        if let Err(e) = result {
            return fail(format!("response {} (statement {}): {e}", i + 1, index + 1));
        }
    }
    Ok(())
}

/// Compares an expected response with the actual one: objects on the expected fields
/// only (`field|starts_with` compares a prefix), arrays element by element, numbers by
/// value.
fn compare(want: &Value, got: &Value) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (field, w) in w {
                let (name, operator) = field.split_once('|').unwrap_or((field, ""));
                let g = g.get(name).unwrap_or(&Value::Null);
                match operator {
                    "" => compare(w, g).map_err(|e| format!("{name}: {e}"))?,
                    "starts_with" => {
                        let (w, g) = (
                            w.as_str().unwrap_or_default(),
                            g.as_str().unwrap_or_default(),
                        );
                        if !g.starts_with(w) {
                            return Err(format!(
                                "{name}: expected a value starting with {w}, got {g}"
                            ));
                        }
                    }
                    other => return Err(format!("unknown comparison {other}")),
                }
            }
            Ok(())
        }
        (Value::Array(ws), Value::Array(gs)) => {
            for (i, w) in ws.iter().enumerate() {
                let Some(g) = gs.get(i) else {
                    return Err(format!(
                        "expected {} elements, got {}; first missing: {w}",
                        ws.len(),
                        gs.len()
                    ));
                };
                compare(w, g).map_err(|e| format!("[{i}]: {e}"))?;
            }
            if gs.len() > ws.len() {
                return Err(format!(
                    "expected {} elements, got {}; first extra: {}",
                    ws.len(),
                    gs.len(),
                    gs[ws.len()]
                ));
            }
            Ok(())
        }
        _ if values::same(want, got) => Ok(()),
        _ => Err(format!("expected {want}, got {got}")),
    }
}

/// Whether a query is a pull query on a table, whose rows come in no defined order
/// (ksqlDB documents none; its stores hand them out by partition): its header marks
/// key columns, which only a table's pull results have.
fn is_table_scan(statement: &str, expected: &[Value]) -> bool {
    !statement.to_ascii_uppercase().contains("EMIT ")
        && expected.iter().any(|e| {
            e["header"]["schema"]
                .as_str()
                .is_some_and(|s| s.contains(" KEY"))
        })
}

/// Compares a query's response whose rows may come in any order: the header and final
/// message in place, each expected row matched by a distinct actual row.
fn compare_unordered(want: &[Value], got: &[Value]) -> Result<(), String> {
    let (want_rows, want_other): (Vec<&Value>, Vec<&Value>) =
        want.iter().partition(|e| e.get("row").is_some());
    let (got_rows, got_other): (Vec<&Value>, Vec<&Value>) =
        got.iter().partition(|e| e.get("row").is_some());
    let owned = |v: Vec<&Value>| Value::Array(v.into_iter().cloned().collect());
    compare(&owned(want_other), &owned(got_other))?;
    let mut unused: Vec<&Value> = got_rows;
    for w in &want_rows {
        match unused.iter().position(|g| compare(w, g).is_ok()) {
            Some(i) => {
                unused.remove(i);
            }
            None => return Err(format!("expected row {w} is missing")),
        }
    }
    match unused.first() {
        Some(extra) => Err(format!("unexpected row {extra}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_qtt::Outcome;

    fn run(cases: Value) -> Vec<(Outcome, String)> {
        let dir = std::env::temp_dir().join(format!("sluice-rest-qtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{}.json",
            cases[0]["name"].as_str().unwrap().replace(' ', "_")
        ));
        std::fs::write(&path, json!({ "tests": cases }).to_string()).unwrap();
        run_files(&[path])
            .unwrap()
            .into_iter()
            .map(|r| (r.outcome, r.reason))
            .collect()
    }

    fn case(name: &str, query: &str, rows: Value) -> Value {
        json!({
            "name": name,
            "statements": [
                "CREATE STREAM S (K STRING KEY, V INT) WITH (kafka_topic='t', value_format='JSON');",
                "CREATE TABLE T AS SELECT K, SUM(V) AS TOTAL FROM S GROUP BY K;",
                query
            ],
            "inputs": [
                {"topic": "t", "key": "a", "value": {"V": 1}, "timestamp": 1},
                {"topic": "t", "key": "b", "value": {"V": 2}, "timestamp": 2},
                {"topic": "t", "key": "a", "value": {"V": 3}, "timestamp": 3}
            ],
            "responses": [
                {"admin": {"@type": "currentStatus"}},
                {"admin": {"@type": "currentStatus"}},
                {"query": rows}
            ]
        })
    }

    #[test]
    fn pull_and_push_responses_are_compared() {
        let header = json!({"header": {"schema": "`K` STRING KEY, `TOTAL` INTEGER"}});
        let results = run(json!([
            // Rows of a table scan may come in any order.
            case(
                "pull",
                "SELECT * FROM T;",
                json!([
                    header, {"row": {"columns": ["b", 2]}}, {"row": {"columns": ["a", 4]}}
                ])
            ),
            case(
                "wrong total",
                "SELECT * FROM T;",
                json!([
                    header, {"row": {"columns": ["a", 5]}}, {"row": {"columns": ["b", 2]}}
                ])
            ),
            case(
                "push",
                "SELECT K, V FROM S EMIT CHANGES LIMIT 2;",
                json!([
                    {"header": {"schema": "`K` STRING, `V` INTEGER"}},
                    {"row": {"columns": ["a", 1]}}, {"row": {"columns": ["b", 2]}},
                    {"finalMessage": "Limit Reached"}
                ])
            ),
        ]));
        assert_eq!(results[0], (Outcome::Pass, String::new()));
        assert_eq!(results[1].0, Outcome::Fail);
        assert!(
            results[1]
                .1
                .contains(r#"expected row {"row":{"columns":["a",5]}} is missing"#),
            "{}",
            results[1].1
        );
        assert_eq!(results[2], (Outcome::Pass, String::new()));
    }

    #[test]
    fn expected_errors_must_be_the_response() {
        let refused = |message: &str| {
            json!({
                "name": format!("refused {message}"),
                "statements": [
                    "CREATE STREAM S (K STRING KEY, V INT) WITH (kafka_topic='t', value_format='JSON');",
                    "SELECT * FROM S GROUP BY K;"
                ],
                "expectedError": {
                    "type": "io.confluent.ksql.rest.entity.KsqlStatementErrorMessage",
                    "message": message,
                    "status": 400
                }
            })
        };
        let results = run(json!([
            refused("Pull queries don't support GROUP BY clauses."),
            refused("something else")
        ]));
        assert_eq!(results[0], (Outcome::Pass, String::new()));
        assert_eq!(results[1].0, Outcome::Fail);
    }

    #[test]
    fn harness_topics_follow_the_statements() {
        let case = json!({
            "statements": [
                "CREATE STREAM A (K INT KEY) WITH (kafka_topic='a', value_format='JSON', PARTITIONS=2);",
                "CREATE STREAM B (K INT KEY) WITH (kafka_topic='b', value_format='JSON');"
            ],
            "inputs": [{"topic": "a"}],
            "topics": [{"name": "c", "partitions": 3}]
        });
        let mut topics = harness_topics(&case);
        topics.sort();
        assert_eq!(
            topics,
            [
                ("a".to_string(), 2),
                ("b".to_string(), 4),
                ("c".to_string(), 3)
            ]
        );
    }
}
