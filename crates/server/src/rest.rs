//! The REST API, with ksqlDB's paths, request and response shapes.

use crate::engine::Engine;
use crate::error::StatementError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_sql::ast::StatementKind;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The body of `POST /ksql`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KsqlRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: BTreeMap<String, Value>,
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/ksql", post(ksql))
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .with_state(engine)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
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
    let req: KsqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                &StatementError::bad_request(format!("Invalid request body: {e}")),
                vec![],
            );
        }
    };
    let statements = match sluice_sql::parse_statements(&req.ksql) {
        Ok(s) => s,
        Err(e) => return error_response(&StatementError::from_sql(&e, &req.ksql), vec![]),
    };
    let mut entities = Vec::with_capacity(statements.len());
    // SET and UNSET change the properties of the statements after them in this request.
    let mut properties = req.streams_properties;
    for stmt in &statements {
        match &stmt.kind {
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
        match engine.execute(stmt, &properties).await {
            Ok(entity) => entities.push(entity),
            Err(e) => return error_response(&e, entities),
        }
    }
    json_response(StatusCode::OK, &Value::Array(entities))
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
