//! The JSON entities of ksqlDB's REST API, so its clients work unchanged.

use crate::engine::{PersistentQuery, ServerConfig};
use serde_json::{Value, json};
use sluice_plan::{ColumnKind, SqlType};
use sluice_sql::{SourceDesc, SourceKindName};

pub fn current_status(
    text: &str,
    command_id: &str,
    message: &str,
    query_id: Option<&str>,
    sequence: i64,
) -> Value {
    json!({
        "@type": "currentStatus",
        "statementText": text,
        "commandId": command_id,
        "commandStatus": {"status": "SUCCESS", "message": message, "queryId": query_id},
        "commandSequenceNumber": sequence,
        "warnings": [],
    })
}

pub fn warning(text: &str, message: &str) -> Value {
    json!({
        "@type": "warning_entity",
        "statementText": text,
        "message": message,
        "warnings": [],
    })
}

/// ASSERT TOPIC that holds.
pub fn assert_topic(text: &str, topic: &str, exists: bool) -> Value {
    json!({"@type": "assert_topic", "statementText": text, "topicName": topic,
        "exists": exists, "warnings": []})
}

/// ASSERT SCHEMA that holds.
pub fn assert_schema(text: &str, subject: Option<&str>, id: Option<i32>, exists: bool) -> Value {
    json!({"@type": "assert_schema", "statementText": text, "subject": subject, "id": id,
        "exists": exists, "warnings": []})
}

/// SHOW TYPES: each custom type's schema, by name.
pub fn type_list(text: &str, types: &std::collections::BTreeMap<String, SqlType>) -> Value {
    let types: serde_json::Map<String, Value> = types
        .iter()
        .map(|(name, ty)| (name.clone(), schema_json(ty)))
        .collect();
    json!({"@type": "type_list", "statementText": text, "types": types, "warnings": []})
}

/// SHOW VARIABLES: the variables DEFINE set for the request.
pub fn variables(text: &str, variables: &std::collections::BTreeMap<String, String>) -> Value {
    let list: Vec<Value> = variables
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({"@type": "variables", "statementText": text, "variables": list, "warnings": []})
}

pub fn source_list(text: &str, kind: SourceKindName, sources: &[&SourceDesc]) -> Value {
    let list: Vec<Value> = sources
        .iter()
        .map(|s| {
            json!({
                "type": kind_name(s.kind),
                "name": s.name,
                "topic": s.topic.topic,
                "keyFormat": s.topic.key_format.kind.name(),
                "valueFormat": s.topic.value_format.kind.name(),
                "isWindowed": s.topic.window.is_some(),
            })
        })
        .collect();
    match kind {
        SourceKindName::Stream => {
            json!({"@type": "streams", "statementText": text, "streams": list, "warnings": []})
        }
        SourceKindName::Table => {
            json!({"@type": "tables", "statementText": text, "tables": list, "warnings": []})
        }
    }
}

fn kind_name(k: SourceKindName) -> &'static str {
    match k {
        SourceKindName::Stream => "STREAM",
        SourceKindName::Table => "TABLE",
    }
}

/// A column's schema as ksqlDB describes it.
fn schema_json(t: &SqlType) -> Value {
    match t {
        SqlType::Array(item) => {
            json!({"type": "ARRAY", "fields": null, "memberSchema": schema_json(item)})
        }
        SqlType::Map { value, .. } => {
            json!({"type": "MAP", "fields": null, "memberSchema": schema_json(value)})
        }
        SqlType::Struct(fields) => json!({
            "type": "STRUCT",
            "fields": fields.iter().map(|f| json!({"name": f.name, "schema": schema_json(&f.ty)})).collect::<Vec<_>>(),
            "memberSchema": null,
        }),
        SqlType::Decimal { .. } => json!({
            "type": "DECIMAL", "fields": null, "memberSchema": null,
            "parameters": decimal_params(t),
        }),
        other => json!({"type": other.to_string(), "fields": null, "memberSchema": null}),
    }
}

fn decimal_params(t: &SqlType) -> Value {
    match t {
        SqlType::Decimal { precision, scale } => json!({"precision": precision, "scale": scale}),
        _ => Value::Null,
    }
}

pub fn source_description_body(
    s: &SourceDesc,
    readers: &[String],
    writers: &[String],
    extended: bool,
) -> Value {
    let fields: Vec<Value> = s
        .topic
        .schema
        .columns
        .iter()
        .map(|c| {
            let mut f = json!({"name": c.name, "schema": schema_json(&c.ty)});
            if c.kind == ColumnKind::Key {
                f["type"] = json!(if s.kind == SourceKindName::Table {
                    "PRIMARY_KEY"
                } else {
                    "KEY"
                });
            }
            f
        })
        .collect();
    let query = |id: &String| json!({"queryString": "", "sinks": [], "id": id});
    json!({
        "name": s.name,
        "windowType": match &s.topic.window {
            Some(w) if w.advance_ms == w.size_ms => json!("TUMBLING"),
            Some(_) => json!("HOPPING"),
            None => Value::Null,
        },
        "readQueries": readers.iter().map(query).collect::<Vec<_>>(),
        "writeQueries": writers.iter().map(query).collect::<Vec<_>>(),
        "fields": fields,
        "type": kind_name(s.kind),
        "timestamp": "",
        "statistics": "",
        "errorStats": "",
        "extended": extended,
        "keyFormat": s.topic.key_format.kind.name(),
        "valueFormat": s.topic.value_format.kind.name(),
        "topic": s.topic.topic,
        "partitions": 0,
        "replication": 0,
        "statement": s.sql,
        "queryOffsetSummaries": [],
        "sourceConstraints": [],
    })
}

pub fn source_description(
    text: &str,
    s: &SourceDesc,
    readers: &[String],
    writers: &[String],
    extended: bool,
) -> Value {
    json!({
        "@type": "sourceDescription",
        "statementText": text,
        "sourceDescription": source_description_body(s, readers, writers, extended),
        "warnings": [],
    })
}

pub fn source_description_list(text: &str, descriptions: Vec<Value>) -> Value {
    json!({
        "@type": "source_descriptions",
        "statementText": text,
        "sourceDescriptions": descriptions,
        "warnings": [],
    })
}

pub fn queries<'a>(text: &str, queries: impl Iterator<Item = &'a PersistentQuery>) -> Value {
    let list: Vec<Value> = queries
        .map(|q| {
            let state = q.state();
            json!({
                "queryString": q.statement,
                "sinks": [q.sink],
                "sinkKafkaTopics": [q.sink_topic],
                "id": q.id,
                "statusCount": {state: 1},
                "queryType": "PERSISTENT",
                "state": state,
            })
        })
        .collect();
    json!({"@type": "queries", "statementText": text, "queries": list, "warnings": []})
}

pub fn topics(text: &str, topics: &[(String, u32)]) -> Value {
    let list: Vec<Value> = topics
        .iter()
        .map(|(name, partitions)| json!({"name": name, "replicaInfo": vec![1; *partitions as usize]}))
        .collect();
    json!({"@type": "kafka_topics", "statementText": text, "topics": list, "warnings": []})
}

pub fn properties(text: &str, config: &ServerConfig) -> Value {
    let prop = |name: &str, value: String| json!({"name": name, "scope": "KSQL", "value": value});
    json!({
        "@type": "properties",
        "statementText": text,
        "properties": [
            prop("bootstrap.servers", config.bootstrap_servers.clone()),
            prop("ksql.service.id", config.service_id.clone()),
            prop("ksql.streams.state.dir", config.state_dir.display().to_string()),
            prop("ksql.streams.commit.interval.ms", config.commit_interval.as_millis().to_string()),
            prop("listeners", format!("http://{}", config.listen)),
            prop("ksql.streams.cache.max.bytes.buffering", config.cache_max_bytes.to_string()),
            prop(
                "ksql.streams.processing.guarantee",
                if config.exactly_once { "exactly_once_v2" } else { "at_least_once" }.into()
            ),
        ],
        "overwrittenProperties": [],
        "defaultProperties": [],
        "warnings": [],
    })
}

/// SHOW FUNCTIONS: every function's name and type.
pub fn function_names(text: &str, functions: &[sluice_sql::functions::FunctionInfo]) -> Value {
    let list: Vec<Value> = functions
        .iter()
        .map(|f| json!({"name": f.name, "category": "", "type": f.kind}))
        .collect();
    json!({"@type": "function_names", "statementText": text, "functions": list, "warnings": []})
}

/// DESCRIBE FUNCTION: what a function does and the arguments it takes.
pub fn describe_function(text: &str, f: &sluice_sql::functions::FunctionInfo) -> Value {
    let variants: Vec<Value> = f
        .signatures
        .iter()
        .map(|(args, returns)| {
            json!({
                "arguments": args.iter().map(|a| json!({"name": "", "type": a, "description": ""})).collect::<Vec<_>>(),
                "returnType": returns,
                "description": f.description,
                "argumentTypes": args,
            })
        })
        .collect();
    json!({
        "@type": "describe_function",
        "statementText": text,
        "name": f.name,
        "description": f.description,
        "author": "Sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "path": "internal",
        "type": f.kind,
        "functions": variants,
        "warnings": [],
    })
}

/// A query as EXPLAIN describes it.
pub struct QueryShown<'a> {
    pub id: &'a str,
    pub statement: &'a str,
    pub sources: &'a [String],
    pub sinks: &'a [String],
    pub plan: &'a sluice_plan::QueryPlan,
    pub state: &'a str,
    pub errors: &'a [sluice_runtime::QueryError],
}

/// EXPLAIN: a query's statement, sources and sinks, its plan as text, its state and the
/// errors it met.
pub fn query_description(text: &str, q: &QueryShown<'_>) -> Value {
    let QueryShown {
        id,
        statement,
        sources,
        sinks,
        plan,
        state,
        errors,
    } = q;
    let plan_text = plan.root.explain();
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| {
            json!({
                "errorMessage": e.message,
                "timestamp": e.timestamp,
                "type": if e.poison { "USER" } else { "SYSTEM" },
            })
        })
        .collect();
    let window = match &plan.root {
        sluice_plan::Step::StreamSink { topic, .. }
        | sluice_plan::Step::TableSink { topic, .. } => topic
            .window
            .as_ref()
            .map(|w| format!("{:?}", w.kind).to_uppercase()),
        _ => None,
    };
    json!({
        "@type": "queryDescription",
        "statementText": text,
        "queryDescription": {
            "id": id,
            "statementText": statement,
            "windowType": window,
            "sources": sources,
            "sinks": sinks,
            "topology": plan_text,
            "executionPlan": plan_text,
            "overriddenProperties": {},
            "state": state,
            "queryType": "PERSISTENT",
            "queryErrors": errors,
        },
        "warnings": [],
    })
}
