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
    let part = |kind: ColumnKind| -> Vec<(usize, &sluice_plan::Column)> {
        topic
            .schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind == kind)
            .collect()
    };
    let mut buf = Vec::new();
    let mut encode = |kind: ColumnKind, format: &sluice_plan::Format| -> Result<Option<Vec<u8>>> {
        let is_key = kind == ColumnKind::Key;
        let encoder = part_encoder(format, &part(kind), is_key, &topic.topic, registry)
            .map_err(RuntimeError::Plan)?;
        Ok(encoder
            .encode(arrays, 0, &mut buf)
            .map_err(RuntimeError::Plan)?
            .map(|()| buf.clone()))
    };
    let key = encode(ColumnKind::Key, &topic.key_format)?;
    let value = encode(ColumnKind::Value, &topic.value_format)?;
    Ok(OutputRecord {
        key,
        value,
        timestamp,
    })
}
