//! A case's `post` checks: the sources the statements left, and the topics.

use serde_json::Value;
use sluice_plan::{ColumnKind, FormatKind};
use sluice_registry::{RegisteredSchema, SchemaRegistry, SchemaType, avro, translate};
use sluice_sql::ast::StatementKind;
use sluice_sql::{SourceDesc, SourceKindName};
use std::collections::BTreeMap;

pub fn check(
    post: &Value,
    sources: &BTreeMap<String, SourceDesc>,
    topics: &[(String, u32)],
    registry: &dyn SchemaRegistry,
) -> Result<(), String> {
    for want in post["sources"].as_array().into_iter().flatten() {
        check_source(want, sources)?;
    }
    let t = &post["topics"];
    for want in t["topics"].as_array().into_iter().flatten() {
        let name = want["name"].as_str().unwrap_or_default();
        let Some((_, partitions)) = topics.iter().find(|(n, _)| n == name) else {
            return Err(format!("post: topic {name} does not exist"));
        };
        if let Some(p) = want["partitions"].as_u64()
            && p != *partitions as u64
        {
            return Err(format!(
                "post: topic {name} has {partitions} partitions, expected {p}"
            ));
        }
        for (k, schema, is_key) in [
            ("keyFormat", "keySchema", true),
            ("valueFormat", "valueSchema", false),
        ] {
            let format = format_name(&want[k]).and_then(|f| FormatKind::parse(&f));
            if let Some(expected) = want.get(schema).filter(|s| !s.is_null()) {
                check_registered(name, is_key, format, expected, registry)?;
            }
        }
    }
    if let Some(pattern) = t["blacklist"].as_str() {
        // Java's String.matches: the whole name. The cases only use `.*suffix`.
        for (name, _) in topics {
            let hit = match pattern.strip_prefix(".*") {
                Some(suffix) if !suffix.contains(['.', '*', '[', '(', '\\', '+', '?', '|']) => {
                    name.ends_with(suffix)
                }
                _ => {
                    return Err(format!(
                        "post: blacklist pattern {pattern} is not supported"
                    ));
                }
            };
            if hit {
                return Err(format!(
                    "post: topic {name} matches the blacklist {pattern}"
                ));
            }
        }
    }
    Ok(())
}

/// The schema registered for a topic's keys or values is the one expected (compared as
/// Avro schemas, or as the SQL types a JSON schema gives).
fn check_registered(
    topic: &str,
    is_key: bool,
    format: Option<FormatKind>,
    expected: &Value,
    registry: &dyn SchemaRegistry,
) -> Result<(), String> {
    let subject = sluice_registry::subject(topic, is_key);
    let Some((_, got)) = registry.latest(&subject).map_err(|e| e.to_string())? else {
        return Err(format!("post: no schema is registered under {subject}"));
    };
    let same = match format {
        Some(FormatKind::Avro) | None => {
            let want = avro::Schema::from_json(expected)?;
            avro::Schema::parse(&got.text)? == want
        }
        Some(kind @ (FormatKind::JsonSr | FormatKind::Protobuf)) => {
            let want = RegisteredSchema::new(
                if kind == FormatKind::JsonSr {
                    SchemaType::Json
                } else {
                    SchemaType::Protobuf
                },
                match expected {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            );
            translate::infer(&want, is_key, false, None)?
                == translate::infer(&got, is_key, false, None)?
        }
        Some(other) => return Err(format!("post: {other} schemas are not supported yet")),
    };
    if !same {
        return Err(format!(
            "post: the schema under {subject} is {}, expected {expected}",
            got.text
        ));
    }
    Ok(())
}

fn format_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_uppercase()),
        Value::Object(o) => o
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_uppercase),
        _ => None,
    }
}

fn check_source(want: &Value, sources: &BTreeMap<String, SourceDesc>) -> Result<(), String> {
    let name = want["name"].as_str().unwrap_or_default();
    let Some(src) = sources.get(name) else {
        return Err(format!("post: source {name} does not exist"));
    };
    let kind = match src.kind {
        SourceKindName::Stream => "stream",
        SourceKindName::Table => "table",
    };
    if let Some(t) = want["type"].as_str()
        && !t.eq_ignore_ascii_case(kind)
    {
        return Err(format!("post: {name} is a {kind}, expected a {t}"));
    }
    if let Some(schema) = want["schema"].as_str() {
        let sql = format!("CREATE {} X ({schema});", kind.to_uppercase());
        let stmt = sluice_sql::parse_statement(&sql)
            .map_err(|e| format!("post: cannot read the expected schema {schema}: {e}"))?;
        let StatementKind::CreateSource(c) = stmt.kind else {
            return Err(format!("post: cannot read the expected schema {schema}"));
        };
        let expected: Vec<(String, String, bool)> = c
            .columns
            .iter()
            .map(|col| {
                let key = !matches!(col.constraint, sluice_sql::ast::ColumnConstraint::None);
                (col.name.clone(), col.ty.to_string(), key)
            })
            .collect();
        let actual: Vec<(String, String, bool)> = src
            .topic
            .schema
            .columns
            .iter()
            .map(|col| {
                (
                    col.name.clone(),
                    col.ty.to_string(),
                    col.kind == ColumnKind::Key,
                )
            })
            .collect();
        if expected != actual {
            return Err(format!(
                "post: {name} has schema {}, expected {schema}",
                src.topic.schema
            ));
        }
    }
    for (k, actual) in [
        ("keyFormat", &src.topic.key_format),
        ("valueFormat", &src.topic.value_format),
    ] {
        if let Some(kind) = want[k]["windowType"].as_str() {
            let ours = match &src.topic.window {
                Some(w) => w.kind.name(),
                None => return Err(format!("post: {name} should be windowed ({kind})")),
            };
            if !kind.eq_ignore_ascii_case(ours) {
                return Err(format!("post: {name} has {ours} windows, expected {kind}"));
            }
            if let (Some(size), Some(w)) = (want[k]["windowSize"].as_i64(), &src.topic.window)
                && size != w.size_ms
            {
                return Err(format!(
                    "post: {name} windows are {} ms, expected {size}",
                    w.size_ms
                ));
            }
        }
        if let Some(f) = format_name(&want[k])
            && f != actual.kind.name()
        {
            return Err(format!("post: {name} {k} is {}, expected {f}", actual.kind));
        }
    }
    let unwrapped = |v: &Value| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|f| f == "UNWRAP_SINGLES"))
    };
    if want["valueFeatures"].is_array()
        && unwrapped(&want["valueFeatures"]) == src.topic.value_format.wrap_single_value
    {
        return Err(format!(
            "post: {name} value features differ: expected {}",
            want["valueFeatures"]
        ));
    }
    if want["keyFeatures"].is_array() {
        let keys = src.topic.schema.keys().count();
        // Formats that could wrap a single key column say they do not.
        let ours = keys == 1
            && matches!(
                src.topic.key_format.kind,
                FormatKind::Json | FormatKind::Avro | FormatKind::JsonSr
            );
        if unwrapped(&want["keyFeatures"]) != ours {
            return Err(format!(
                "post: {name} key features differ: expected {}",
                want["keyFeatures"]
            ));
        }
    }
    if let Some(is_source) = want["isSource"].as_bool()
        && is_source != src.is_source
    {
        return Err(format!(
            "post: {name} isSource is {}, expected {is_source}",
            src.is_source
        ));
    }
    Ok(())
}
