//! The REST API, with ksqlDB's paths, request and response shapes.

use crate::engine::{Engine, PushPlan};
use crate::error::StatementError;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_plan::{ColumnKind, LogicalSchema};
use sluice_runtime::push::{PushEvent, PushQuery};
use sluice_sql::ast::{ShowTarget, Statement, StatementKind};
use sluice_sql::script::{ScriptContext, parse_script};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The body of `POST /ksql`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KsqlRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: BTreeMap<String, Value>,
    /// Variables for `${name}` in the statements, as DEFINE sets them.
    #[serde(default)]
    session_variables: BTreeMap<String, Value>,
}

/// A request's variables as text, and the server's custom types: what its statements
/// are read with.
fn script_context(engine: &Engine, variables: &BTreeMap<String, Value>) -> ScriptContext {
    ScriptContext {
        variables: variables
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect(),
        types: engine.types(),
    }
}

pub fn router(engine: Arc<Engine>) -> Router {
    let max_body = engine.config.max_request_bytes;
    Router::new()
        .route("/ksql", post(ksql))
        .route("/query", post(query))
        .route("/query-stream", post(query_stream))
        .route("/close-query", post(close_query))
        .route("/inserts-stream", post(inserts_stream))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/status/{*id}", get(status))
        .route_layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            authenticate,
        ))
        // Load balancers probe health without credentials.
        .route("/healthcheck", get(healthcheck))
        // A larger body is refused with 413 before it is read.
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(engine)
}

/// HTTP Basic authentication, when the server has credentials (`--basic-auth`).
async fn authenticate(
    State(engine): State<Arc<Engine>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(expected) = &engine.config.basic_auth else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| sluice_runtime::codec::decode::base64_decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if given.as_deref() == Some(expected.as_str()) {
        return next.run(request).await;
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"@type": "generic_error", "error_code": 40100, "message": "Unauthorized"}),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Basic realm=\"sluice\""),
    );
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A request's JSON body; a malformed one is a bad request.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, StatementError> {
    serde_json::from_slice(body)
        .map_err(|e| StatementError::bad_request(format!("Invalid request body: {e}")))
}

fn error_response(e: &StatementError, entities: Vec<Value>) -> Response {
    let mut body = if e.error_code == 40000 {
        json!({"@type": "generic_error", "error_code": e.error_code, "message": e.message})
    } else {
        json!({
            "@type": "statement_error",
            "error_code": e.error_code,
            "message": e.message,
            "statementText": e.statement_text,
            "entities": entities,
        })
    };
    if let Some((line, column)) = e.position {
        body["position"] = json!({"line": line, "column": column});
    }
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &body)
}

async fn ksql(State(engine): State<Arc<Engine>>, body: Bytes) -> Response {
    let req: KsqlRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&e, vec![]),
    };
    let mut script = script_context(&engine, &req.session_variables);
    let mut variables = script.variables.clone();
    let statements = match parse_script(&req.ksql, &mut script) {
        Ok(s) => s,
        Err(e) => return error_response(&StatementError::from_sql(&e, &req.ksql), vec![]),
    };
    let mut entities = Vec::with_capacity(statements.len());
    // SET and UNSET change the properties of the statements after them in this request,
    // DEFINE and UNDEFINE its variables (already substituted as it was read).
    let mut properties = req.streams_properties;
    for stmt in &statements {
        match &stmt.kind {
            StatementKind::Define { name, value } => {
                variables.insert(name.clone(), value.clone());
                continue;
            }
            StatementKind::Undefine { name } => {
                variables.remove(name);
                continue;
            }
            StatementKind::Show(ShowTarget::Variables) => {
                entities.push(crate::entities::variables(&stmt.text, &variables));
                continue;
            }
            StatementKind::SetProperty { name, value } => {
                properties.insert(name.clone(), Value::String(value.clone()));
                continue;
            }
            StatementKind::UnsetProperty { name } => {
                properties.remove(name);
                continue;
            }
            _ => {}
        }
        if engine.is_headless()
            && !matches!(
                stmt.kind,
                StatementKind::Show(_) | StatementKind::Describe { .. }
            )
        {
            let e = StatementError::forbidden(
                "The server runs headless (--queries-file): it takes only SHOW, LIST and DESCRIBE statements.".into(),
                &stmt.text,
            );
            return error_response(&e, entities);
        }
        match engine.execute(stmt, &properties).await {
            // Statements without an entity (INSERT ... VALUES) add nothing.
            Ok(Value::Null) => {}
            Ok(entity) => entities.push(entity),
            Err(e) => return error_response(&e, entities),
        }
    }
    json_response(StatusCode::OK, &Value::Array(entities))
}

/// The body of `POST /query-stream`.
#[derive(Debug, Deserialize)]
struct QueryStreamRequest {
    sql: String,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloseQueryRequest {
    query_id: String,
}

/// A push query started for one response; dropping it (the response ended or the
/// client went away) stops the query and forgets it.
struct PushGuard {
    engine: Arc<Engine>,
    id: String,
    _query: PushQuery,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        self.engine
            .push_queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// A request that carries one push query.
trait PushRequest: serde::de::DeserializeOwned {
    fn sql(&self) -> &str;
    fn properties(&self) -> &BTreeMap<String, Value>;
}

impl PushRequest for KsqlRequest {
    fn sql(&self) -> &str {
        &self.ksql
    }
    fn properties(&self) -> &BTreeMap<String, Value> {
        &self.streams_properties
    }
}

impl PushRequest for QueryStreamRequest {
    fn sql(&self) -> &str {
        &self.sql
    }
    fn properties(&self) -> &BTreeMap<String, Value> {
        &self.properties
    }
}

/// A query request and its one statement, parsed once.
fn one_statement<R: PushRequest>(body: &[u8]) -> Result<(R, Statement), StatementError> {
    let request: R = parse_body(body)?;
    let sql = request.sql();
    let mut statements =
        sluice_sql::parse_statements(sql).map_err(|e| StatementError::from_sql(&e, sql))?;
    if statements.len() != 1 {
        return Err(StatementError::bad_request(format!(
            "Expected exactly one SELECT statement, got {}",
            statements.len()
        )));
    }
    let stmt = statements.remove(0);
    Ok((request, stmt))
}

/// Registers a running transient query for `/close-query`; dropping the guard stops
/// and forgets it.
fn register(engine: &Arc<Engine>, id: String, query: PushQuery) -> PushGuard {
    engine
        .push_queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), query.stopper());
    PushGuard {
        engine: engine.clone(),
        id,
        _query: query,
    }
}

/// Plans and starts a request's push query; a pull query that reads partitions other
/// servers own is answered with them (see `forward`), with the client's credentials.
fn start_push(
    engine: &Arc<Engine>,
    stmt: &Statement,
    request: &impl PushRequest,
    headers: &axum::http::HeaderMap,
) -> Result<(PushPlan, mpsc::Receiver<PushEvent>, PushGuard), StatementError> {
    let push = engine.plan_push(stmt, request.properties())?;
    let (rx, query) = match engine.pull_owners(&push) {
        Some(routes) => {
            let authorization = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let sql = format!("{};", stmt.text);
            crate::forward::start(
                engine,
                &push,
                routes,
                &sql,
                request.properties(),
                authorization,
            )?
        }
        None => {
            let (tx, rx) = mpsc::channel(1024);
            let query = engine
                .cluster
                .start_push(&push.id, &push.plan, push.config.clone(), tx)
                .map_err(|e| StatementError::server(e.to_string(), request.sql()))?;
            (rx, query)
        }
    };
    let guard = register(engine, push.id.clone(), query);
    Ok((push, rx, guard))
}

/// A streamed response: the first chunk, then one chunk per event as `render` writes
/// it (None ends the stream after that chunk), then `end` if the events ran out.
fn streamed(
    content_type: &'static str,
    first: String,
    rx: mpsc::Receiver<PushEvent>,
    guard: PushGuard,
    render: impl Fn(PushEvent) -> (String, bool) + Send + 'static,
    end: &'static str,
) -> Response {
    let events = futures::stream::unfold(
        (Some(rx), guard, render),
        move |(rx, guard, render)| async move {
            let mut rx = rx?;
            let chunk = match rx.recv().await {
                Some(event) => {
                    let (text, last) = render(event);
                    (text, (!last).then_some(rx))
                }
                None => (end.to_string(), None),
            };
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(chunk.0)),
                (chunk.1, guard, render),
            ))
        },
    );
    let body = futures::stream::once(async move { Ok(Bytes::from(first)) }).chain(events);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

/// A result's columns as ksqlDB's header shows them; key columns are marked only in
/// the results of pull queries on tables.
fn schema_text(schema: &LogicalSchema, mark_keys: bool) -> String {
    schema
        .columns
        .iter()
        .map(|c| {
            let key = if mark_keys && c.kind == ColumnKind::Key {
                " KEY"
            } else {
                ""
            };
            format!("`{}` {}{key}", c.name, c.ty)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn error_event(message: &str) -> Value {
    json!({"@type": "generic_error", "error_code": 50000, "message": message})
}

/// `POST /query`: ksqlDB's original push query endpoint. The response is one JSON
/// array, streamed: a header with the query id and schema, a `row` per result row
/// (`tombstone: true` for a deleted table row), and a `finalMessage` at the LIMIT or an
/// `errorMessage` if the query fails.
async fn query(
    State(engine): State<Arc<Engine>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let (request, stmt) = match one_statement::<KsqlRequest>(&body) {
        Ok(parsed) => parsed,
        Err(e) => return error_response(&e, vec![]),
    };
    if let StatementKind::Print {
        topic,
        from_beginning,
        interval,
        limit,
    } = &stmt.kind
    {
        if engine.cluster.is_memory() {
            let e = StatementError::unsupported(
                "PRINT reads Kafka topics; this server runs on the test driver".into(),
                &stmt.text,
            );
            return error_response(&e, vec![]);
        }
        let config = sluice_runtime::push::PrintConfig {
            bootstrap_servers: engine.config.bootstrap_servers.clone(),
            topic: topic.clone(),
            from_beginning: *from_beginning,
            interval: interval.unwrap_or(1),
            limit: *limit,
            registry: engine.registry().cloned(),
        };
        return print(&engine, config, &stmt.text);
    }
    let (push, rx, guard) = match start_push(&engine, &stmt, &request, &headers) {
        Ok(started) => started,
        Err(e) => return error_response(&e, vec![]),
    };
    let header = json!({"header": {"queryId": push.id, "schema": schema_text(&push.schema, push.is_table && push.is_pull())}});
    streamed(
        "application/json",
        format!("[{header}"),
        rx,
        guard,
        |event| match event {
            PushEvent::Row { json, deletion } => {
                let columns = String::from_utf8_lossy(&json);
                let tombstone = if deletion { r#","tombstone":true"# } else { "" };
                (
                    format!(",\n{{\"row\":{{\"columns\":{columns}{tombstone}}}}}"),
                    false,
                )
            }
            PushEvent::LimitReached => (",\n{\"finalMessage\":\"Limit Reached\"}]\n".into(), true),
            PushEvent::Completed => (",\n{\"finalMessage\":\"Query Completed\"}]\n".into(), true),
            PushEvent::Error(e) => {
                let message = json!({"errorMessage": error_event(&e)});
                (format!(",\n{message}]\n"), true)
            }
        },
        "]\n",
    )
}

/// PRINT over `/query`: the topic's records as text lines, as they arrive; it can be
/// closed with `/close-query` like a push query.
fn print(engine: &Arc<Engine>, config: sluice_runtime::push::PrintConfig, text: &str) -> Response {
    let (tx, rx) = mpsc::channel(1024);
    let id = engine.transient_id(&format!("PRINT_{}", config.topic));
    let query = match sluice_runtime::push::print_topic(config, tx) {
        Ok(q) => q,
        Err(e) => return error_response(&StatementError::server(e.to_string(), text), vec![]),
    };
    let guard = register(engine, id, query);
    streamed(
        "text/plain",
        String::new(),
        rx,
        guard,
        |event| match event {
            PushEvent::Row { json, .. } => (format!("{}\n", String::from_utf8_lossy(&json)), false),
            PushEvent::LimitReached | PushEvent::Completed => (String::new(), true),
            PushEvent::Error(e) => (format!("{e}\n"), true),
        },
        "",
    )
}

/// `POST /query-stream`: the newer push query endpoint. By default the response is
/// `application/vnd.ksqlapi.delimited.v1`: a header line (query id, column names and
/// types), then one line per row, each a JSON array; with `Accept: application/json`
/// it is one JSON array of the header and the rows.
async fn query_stream(
    State(engine): State<Arc<Engine>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let started = one_statement::<QueryStreamRequest>(&body)
        .and_then(|(request, stmt)| start_push(&engine, &stmt, &request, &headers));
    let (push, rx, guard) = match started {
        Ok(started) => started,
        Err(e) => return error_response(&e, vec![]),
    };
    let header = json!({
        "queryId": push.id,
        "columnNames": push.schema.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "columnTypes": push.schema.columns.iter().map(|c| c.ty.to_string()).collect::<Vec<_>>(),
    });
    let json_array = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if json_array {
        streamed(
            "application/json",
            format!("[{header}"),
            rx,
            guard,
            |event| match event {
                PushEvent::Row { json, .. } => {
                    (format!(",\n{}", String::from_utf8_lossy(&json)), false)
                }
                PushEvent::LimitReached | PushEvent::Completed => ("]\n".into(), true),
                PushEvent::Error(e) => (format!(",\n{}]\n", error_event(&e)), true),
            },
            "]\n",
        )
    } else {
        streamed(
            "application/vnd.ksqlapi.delimited.v1",
            format!("{header}\n"),
            rx,
            guard,
            |event| match event {
                PushEvent::Row { json, .. } => {
                    (format!("{}\n", String::from_utf8_lossy(&json)), false)
                }
                PushEvent::LimitReached | PushEvent::Completed => (String::new(), true),
                PushEvent::Error(e) => (format!("{}\n", error_event(&e)), true),
            },
            "",
        )
    }
}

/// `POST /inserts-stream`: a first line `{"target": NAME}`, then one JSON object per
/// line, each a row of the target written as one record. The answer has a line per row,
/// in order: `{"status":"ok","seq":N}` once Kafka has it, or the row's error.
async fn inserts_stream(State(engine): State<Arc<Engine>>, body: Bytes) -> Response {
    if engine.is_headless() {
        return error_response(
            &StatementError::forbidden("The server runs headless: it takes no inserts.".into(), ""),
            vec![],
        );
    }
    let text = String::from_utf8_lossy(&body);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let target = lines
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["target"].as_str().map(str::to_string));
    let Some(target) = target else {
        return error_response(
            &StatementError::bad_request(
                "The first line must be {\"target\": \"STREAM_NAME\"}".into(),
            ),
            vec![],
        );
    };
    // Names are upper-cased unless quoted, as in SQL.
    let name = if target.starts_with('`') {
        target.trim_matches('`').to_string()
    } else {
        target.to_ascii_uppercase()
    };
    let topic = match engine.insert_target(&name) {
        Ok(t) => t,
        Err(m) => return error_response(&StatementError::bad_request(m), vec![]),
    };
    let mut acks = String::new();
    for (seq, line) in lines.enumerate() {
        let result = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(row)) => {
                match sluice_runtime::values::json_record(&topic, &row, engine.registry()) {
                    Ok(record) => engine.produce(&topic.topic, &record).await,
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(_) => Err("a row must be a JSON object".into()),
            Err(e) => Err(format!("a row is not JSON: {e}")),
        };
        let ack = match result {
            Ok(()) => json!({"status": "ok", "seq": seq}),
            Err(message) => json!({
                "status": "error", "seq": seq, "error_code": 40000, "message": message,
            }),
        };
        acks.push_str(&ack.to_string());
        acks.push('\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/vnd.ksqlapi.delimited.v1")],
        acks,
    )
        .into_response()
}

/// `POST /close-query`: stops a push query; its response then ends.
async fn close_query(State(engine): State<Arc<Engine>>, body: Bytes) -> Response {
    let req: CloseQueryRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&e, vec![]),
    };
    let stop = engine
        .push_queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&req.query_id)
        .cloned();
    match stop {
        Some(stop) => {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            json_response(StatusCode::OK, &json!({}))
        }
        None => error_response(
            &StatementError::bad_request(format!("No query with id {}", req.query_id)),
            vec![],
        ),
    }
}

async fn info(State(engine): State<Arc<Engine>>) -> Response {
    let status = if engine.is_degraded() {
        "DEGRADED"
    } else {
        "RUNNING"
    };
    json_response(
        StatusCode::OK,
        &json!({"KsqlServerInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "kafkaClusterId": "",
            "ksqlServiceId": engine.config.service_id,
            "serverStatus": status,
        }}),
    )
}

/// `GET /status/<commandId>`: how a command ended (command ids hold slashes:
/// `stream/`S`/create`).
async fn status(
    State(engine): State<Arc<Engine>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match engine.command_status(&id) {
        Some(s) => json_response(
            StatusCode::OK,
            &json!({"status": s.status, "message": s.message, "queryId": s.query_id}),
        ),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"@type": "generic_error", "error_code": 40400, "message": format!("Command not found: {id}")}),
        ),
    }
}

/// `GET /metrics`: Prometheus text exposition of the server's and each query's figures.
async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&engine),
    )
        .into_response()
}

async fn healthcheck(State(engine): State<Arc<Engine>>) -> Response {
    let problems = engine
        .degraded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let healthy = problems.is_empty();
    let body = json!({
        "isHealthy": healthy,
        "details": {
            "metastore": {"isHealthy": true},
            "kafka": {"isHealthy": true},
            "commandRunner": {"isHealthy": healthy, "problems": problems},
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}
