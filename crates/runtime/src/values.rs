//! INSERT INTO ... VALUES: constant expressions made into one record for a topic.

use crate::codec::encode::PartEncoder;
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
) -> Result<OutputRecord> {
    let now = now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    });
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
    let part = |kind: ColumnKind| -> Vec<(usize, String)> {
        topic
            .schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind == kind)
            .map(|(i, c)| (i, c.name.clone()))
            .collect()
    };
    let mut buf = Vec::new();
    let key = PartEncoder::new(&topic.key_format, part(ColumnKind::Key), true)
        .encode(&arrays, 0, &mut buf)
        .map(|()| buf.clone());
    let value = PartEncoder::new(&topic.value_format, part(ColumnKind::Value), false)
        .encode(&arrays, 0, &mut buf)
        .map(|()| buf.clone());
    Ok(OutputRecord {
        key,
        value,
        timestamp,
    })
}
