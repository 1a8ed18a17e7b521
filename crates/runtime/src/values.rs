//! INSERT INTO ... VALUES and `/inserts-stream`: one row made into a record for a topic.

use crate::codec::decode::ColumnBuilder;
use crate::codec::registered::{Registry, part_encoder};
use crate::error::{Result, RuntimeError};
use crate::expr::{compile, evaluate};
use crate::pipeline::OutputRecord;
use crate::types::arrow_type;
use datafusion_common::arrow::array::{Array, ArrayRef, AsArray, new_null_array};
use datafusion_common::arrow::compute::cast;
use datafusion_common::arrow::datatypes::{Int64Type, Schema};
use datafusion_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use sluice_plan::{ColumnKind, Expr, NamedExpr, TopicSpec};
use std::sync::Arc;

/// The record that `values` (column name and constant expression; columns not named are
/// NULL) make for `topic`, written as its formats write rows. Its timestamp is `rowtime`
/// when given, else `now` (None: the time of the call).
pub fn values_record(
    topic: &TopicSpec,
    values: &[NamedExpr],
    rowtime: Option<&Expr>,
    now: Option<i64>,
    registry: Option<&Registry>,
) -> Result<OutputRecord> {
    let now = now.unwrap_or_else(now_millis);
    let empty = Arc::new(Schema::empty());
    let one_row = RecordBatch::try_new_with_options(
        empty.clone(),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let mut errors = 0u64;
    let mut constant = |e: &Expr| -> Result<ArrayRef> {
        let value = evaluate(&compile(e, &empty)?, &one_row, &mut errors)?;
        if errors > 0 {
            return Err(RuntimeError::Plan(format!(
                "the value {e:?} cannot be computed"
            )));
        }
        Ok(value)
    };
    let mut arrays = Vec::with_capacity(topic.schema.columns.len());
    for column in &topic.schema.columns {
        let ty = arrow_type(&column.ty);
        let array = match values.iter().find(|v| v.name == column.name) {
            Some(v) => {
                let a = constant(&v.expr)?;
                if a.data_type() == &ty {
                    a
                } else {
                    cast(&a, &ty)?
                }
            }
            None => new_null_array(&ty, 1),
        };
        arrays.push(array);
    }
    let timestamp = match rowtime {
        Some(e) => {
            let a = cast(
                &constant(e)?,
                &datafusion_common::arrow::datatypes::DataType::Int64,
            )?;
            let t = a.as_primitive::<Int64Type>();
            if t.is_null(0) { now } else { t.value(0) }
        }
        None => now,
    };
    encode_row(topic, &arrays, timestamp, registry)
}

/// The record for `topic` of a row given as a JSON object (field names matched to
/// column names regardless of case; missing fields are NULL), as `/inserts-stream`
/// takes rows. Its timestamp is the object's ROWTIME when present, else now.
pub fn json_record(
    topic: &TopicSpec,
    row: &serde_json::Map<String, serde_json::Value>,
    registry: Option<&Registry>,
) -> Result<OutputRecord> {
    let field = |name: &str| {
        row.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let arrays = json_arrays(topic, row)?;
    if let Some(extra) = row.keys().find(|k| {
        !k.eq_ignore_ascii_case("ROWTIME")
            && !topic
                .schema
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(k))
    }) {
        return Err(RuntimeError::Plan(format!("no column named {extra}")));
    }
    let timestamp = match field("ROWTIME") {
        Some(t) => t
            .as_i64()
            .ok_or_else(|| RuntimeError::Plan("ROWTIME must be a BIGINT".into()))?,
        None => now_millis(),
    };
    encode_row(topic, &arrays, timestamp, registry)
}

/// The key bytes `topic` has for key columns with the given values (a JSON object as
/// `json_record` takes), written as its key format writes them; None for a NULL key.
/// Not for schema-registry key formats, whose bytes name a registered schema.
pub fn json_key(
    topic: &TopicSpec,
    key: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<Vec<u8>>> {
    let arrays = json_arrays(topic, key)?;
    encode_part(topic, &arrays, ColumnKind::Key, None)
}

/// The one-row columns of `topic` for a row given as a JSON object (field names matched
/// to column names regardless of case; missing fields are NULL).
fn json_arrays(
    topic: &TopicSpec,
    row: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<ArrayRef>> {
    let field = |name: &str| {
        row.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let mut arrays = Vec::with_capacity(topic.schema.columns.len());
    for column in &topic.schema.columns {
        let mut builder = ColumnBuilder::new(&column.ty).map_err(RuntimeError::Plan)?;
        match field(&column.name) {
            Some(v) => builder
                .append_json(v)
                .map_err(|e| RuntimeError::Plan(format!("bad value for {}: {e}", column.name)))?,
            None => builder.append_null(),
        }
        arrays.push(builder.finish());
    }
    Ok(arrays)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A row of `topic`'s columns (one-row arrays) written as its formats write rows.
fn encode_row(
    topic: &TopicSpec,
    arrays: &[ArrayRef],
    timestamp: i64,
    registry: Option<&Registry>,
) -> Result<OutputRecord> {
    Ok(OutputRecord {
        key: encode_part(topic, arrays, ColumnKind::Key, registry)?,
        value: encode_part(topic, arrays, ColumnKind::Value, registry)?,
        timestamp,
        headers: Vec::new(),
    })
}

/// The key or the value part of a row of `topic`'s columns (one-row arrays).
fn encode_part(
    topic: &TopicSpec,
    arrays: &[ArrayRef],
    kind: ColumnKind,
    registry: Option<&Registry>,
) -> Result<Option<Vec<u8>>> {
    let columns: Vec<(usize, &sluice_plan::Column)> = topic
        .schema
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == kind)
        .collect();
    let is_key = kind == ColumnKind::Key;
    let format = if is_key {
        &topic.key_format
    } else {
        &topic.value_format
    };
    let encoder = part_encoder(format, &columns, is_key, &topic.topic, registry)?;
    let mut buf = Vec::new();
    Ok(encoder
        .encode(arrays, 0, &mut buf)
        .map_err(RuntimeError::Plan)?
        .map(|()| buf))
}
