//! What statements ask of schema-registry formats (AVRO, JSON_SR, PROTOBUF): the schema
//! ids and names in WITH, and columns inferred from the registered schemas.

use crate::error::{Pos, SqlError};
use sluice_plan::{Column, ColumnKind, Format, FormatKind, SqlType, key_schema_name};
use sluice_registry::{SchemaRegistry, subject, translate};
use std::sync::Arc;

/// The properties that name registered schemas, by part.
const KEY_ID: &str = "KEY_SCHEMA_ID";
const VALUE_ID: &str = "VALUE_SCHEMA_ID";

/// A WITH property's value and position, as the planner reads them.
pub(crate) struct Setting<T> {
    pub value: Option<T>,
    pub pos: Option<Pos>,
}

/// Sets a part's registry options from WITH: its schema id (refused for formats that
/// cannot read one) and its record's full name (a key's defaults to ksqlDB's name for
/// the source's keys).
pub(crate) fn apply_options(
    format: &mut Format,
    is_key: bool,
    source: &str,
    id: Setting<i64>,
    full_name: Setting<String>,
) -> Result<(), SqlError> {
    let (part, id_property) = if is_key {
        ("KEY", KEY_ID)
    } else {
        ("VALUE", VALUE_ID)
    };
    if let Some(value) = id.value {
        if !format.kind.infers_schema() {
            return Err(SqlError::semantic(
                id.pos,
                format!(
                    "{part}_FORMAT should support schema inference when {id_property} is provided. Current format is {}.",
                    format.kind
                ),
            ));
        }
        format.schema_id =
            Some(i32::try_from(value).map_err(|_| {
                SqlError::semantic(id.pos, format!("Invalid {id_property}: {value}"))
            })?);
    }
    if let Some(name) = &full_name.value
        && name.trim().is_empty()
    {
        return Err(SqlError::semantic(
            full_name.pos,
            format!(
                "fullSchemaName cannot be empty. Format configuration: {{fullSchemaName={}}}",
                name.trim()
            ),
        ));
    }
    format.full_name = full_name.value;
    if format.full_name.is_none() && is_key && format.kind == FormatKind::Avro {
        format.full_name = Some(key_schema_name(source));
    }
    Ok(())
}

/// The columns of a part read from its registered schema: by id when the statement gives
/// one, else the latest under the topic's subject. `Ok(None)` when no schema is
/// registered for the part.
/// Column names come upper-cased, as ksqlDB's inference names them (AVRO and JSON_SR
/// field `c1` is column `C1`), except from a schema named by id, whose names are kept. A value read `whole` (WRAP_SINGLE_VALUE=false) is one
/// column, whatever its schema.
pub(crate) fn infer_part(
    registry: Option<&Arc<dyn SchemaRegistry>>,
    topic: &str,
    format: &Format,
    is_key: bool,
    whole: bool,
    pos: Pos,
) -> Result<Option<(Vec<Column>, bool)>, SqlError> {
    let Some(registry) = registry else {
        return Err(SqlError::semantic(
            pos,
            format!(
                "Cannot infer the columns of {} format {} without a schema registry.",
                if is_key { "key" } else { "value" },
                format.kind
            ),
        )
        .with_hint("Set 'ksql.schema.registry.url', or declare the columns."));
    };
    let failed = |e: String| SqlError::semantic(pos, e);
    let registered = match format.schema_id {
        Some(id) => registry.schema(id).map_err(|e| failed(e.to_string()))?,
        None => match registry
            .latest(&subject(topic, is_key))
            .map_err(|e| failed(e.to_string()))?
        {
            Some((_, s)) => s,
            None => return Ok(None),
        },
    };
    // With a schema id, the full name picks a PROTOBUF message; a key's default Avro
    // record name picks nothing.
    let message = format
        .full_name
        .as_deref()
        .filter(|_| format.kind == FormatKind::Protobuf);
    let inferred = translate::infer(&registered, is_key, whole, message).map_err(failed)?;
    let kind = if is_key {
        ColumnKind::Key
    } else {
        ColumnKind::Value
    };
    let columns = inferred
        .columns
        .into_iter()
        .map(|(name, ty)| match format.schema_id {
            // A schema named by id keeps its names as written.
            Some(_) => Column {
                name,
                ty,
                kind: kind.clone(),
            },
            None => Column {
                name: name.to_uppercase(),
                ty: upper_case_fields(ty),
                kind: kind.clone(),
            },
        })
        .collect();
    Ok(Some((columns, inferred.unwrapped)))
}

fn upper_case_fields(ty: SqlType) -> SqlType {
    match ty {
        SqlType::Struct(fields) => SqlType::Struct(
            fields
                .into_iter()
                .map(|f| sluice_plan::StructField {
                    name: f.name.to_uppercase(),
                    ty: upper_case_fields(f.ty),
                })
                .collect(),
        ),
        SqlType::Array(item) => SqlType::Array(Box::new(upper_case_fields(*item))),
        SqlType::Map { key, value } => SqlType::Map {
            key,
            value: Box::new(upper_case_fields(*value)),
        },
        other => other,
    }
}

/// ksqlDB's message for a value schema that should be registered and is not.
pub(crate) fn missing_value_schema(topic: &str, pos: Pos) -> SqlError {
    SqlError::semantic(
        pos,
        format!(
            "Schema for message values on topic '{topic}' does not exist in the Schema Registry.Subject: {}",
            subject(topic, false)
        ),
    )
    .with_hint("Register the topic's value schema, or declare the columns.")
}

/// A sink written with a registered value schema (`VALUE_SCHEMA_ID`) must produce the
/// schema's columns, in its order and of its types.
pub(crate) fn check_sink_columns(
    registry: Option<&Arc<dyn SchemaRegistry>>,
    format: &Format,
    columns: &[&Column],
    is_key: bool,
    pos: Pos,
) -> Result<(), SqlError> {
    let (Some(registry), Some(id)) = (registry, format.schema_id) else {
        return Ok(());
    };
    let registered = registry
        .schema(id)
        .map_err(|e| SqlError::semantic(pos, e.to_string()))?;
    let inferred = translate::infer(&registered, is_key, false, format.full_name.as_deref())
        .map_err(|e| SqlError::semantic(pos, e))?;
    let show = |cols: &mut dyn Iterator<Item = (&str, &SqlType)>| -> String {
        cols.map(|(n, t)| format!("`{n}` {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let changed: Vec<&&Column> = columns
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            inferred
                .columns
                .get(*i)
                .is_none_or(|(n, t)| *n != c.name || *t != c.ty)
        })
        .map(|(_, c)| c)
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(SqlError::semantic(
        pos,
        format!(
            "The following {} columns are changed, missing or reordered: [{}]. Schema from schema registry is [{}]",
            if is_key { "key" } else { "value" },
            show(&mut changed.iter().map(|c| (c.name.as_str(), &c.ty))),
            show(&mut inferred.columns.iter().map(|(n, t)| (n.as_str(), t))),
        ),
    ))
}
