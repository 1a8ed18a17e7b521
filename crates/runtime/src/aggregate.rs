//! Stream aggregation (GROUP BY), producing a table's changelog.
//!
//! Each input row, in order, updates its group's accumulators and emits the group's new
//! row. State lives in memory here: the deterministic driver runs it; on Kafka,
//! aggregations wait for changelogged state stores (the exactly-once issue).

use crate::accumulator::{Accumulator, value_arguments};
use crate::error::{Result, RuntimeError};
use crate::expr::{PhysExpr, compile, evaluate, output_field};
use crate::types::{FLAG_COUNT, PSEUDO_COUNT, arrow_type};
use datafusion_common::ScalarValue;
use datafusion_common::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, new_empty_array};
use datafusion_common::arrow::datatypes::Int64Type;
use datafusion_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::arrow::record_batch::RecordBatch;
use sluice_plan::{AggregateCall, Expr, LogicalSchema, NamedExpr, WindowSpec};
use std::collections::HashMap;
use std::sync::Arc;

struct Group {
    accumulators: Vec<Accumulator>,
    /// Whether the group's current row was emitted (passed HAVING).
    emitted: bool,
}

pub struct AggregateOp {
    group_by: Vec<PhysExpr>,
    calls: Vec<AggregateCall>,
    /// The value arguments of each aggregate (none for COUNT(*)); literal parameters
    /// are read by the accumulators themselves.
    args: Vec<Vec<PhysExpr>>,
    intermediate: SchemaRef,
    having: Option<PhysExpr>,
    projection: Vec<PhysExpr>,
    output: SchemaRef,
    groups: HashMap<Vec<ScalarValue>, Group>,
    window: Option<WindowSpec>,
    /// The largest timestamp seen: windows that ended more than the grace period before
    /// it are closed.
    stream_time: i64,
    /// Records dropped because every window they belong to was closed.
    pub late_records: u64,
}

/// Names of the window bounds after the output columns of a windowed aggregation; the
/// sink reads the start for the windowed key.
pub const WINDOW_START: &str = "$windowstart";
pub const WINDOW_END: &str = "$windowend";

/// The starts of the windows that contain `ts`, ascending.
fn window_starts(w: &WindowSpec, ts: i64) -> Vec<i64> {
    let mut starts = Vec::new();
    let mut start = ts - ts.rem_euclid(w.advance_ms);
    while start > ts - w.size_ms && start >= 0 {
        starts.push(start);
        start -= w.advance_ms;
    }
    starts.reverse();
    starts
}

impl AggregateOp {
    /// Compiles the step against rows of `input` (which end with the pseudo-columns).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: &Schema,
        window: Option<&WindowSpec>,
        group_by: &[Expr],
        calls: &[AggregateCall],
        having: Option<&Expr>,
        projection: &[NamedExpr],
        schema: &LogicalSchema,
    ) -> Result<AggregateOp> {
        let group_exprs = group_by
            .iter()
            .map(|e| compile(e, input))
            .collect::<Result<Vec<_>>>()?;
        let args = calls
            .iter()
            .map(|c| {
                c.args[..value_arguments(c)]
                    .iter()
                    .map(|a| compile(a, input))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        // The intermediate row: key columns, $agg0..., then the pseudo-columns.
        let mut fields: Vec<Field> = schema
            .keys()
            .zip(&group_exprs)
            .map(|(c, e)| output_field(&c.name, e, input))
            .collect::<Result<_>>()?;
        for (i, c) in calls.iter().enumerate() {
            fields.push(Field::new(
                format!("$agg{i}"),
                arrow_type(&c.return_type),
                true,
            ));
        }
        let n = input.fields().len();
        let pseudo: Vec<Field> = input.fields()[n - PSEUDO_COUNT..]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if window.is_some() {
            fields.push(Field::new("WINDOWSTART", DataType::Int64, false));
            fields.push(Field::new("WINDOWEND", DataType::Int64, false));
        }
        fields.extend(pseudo.iter().cloned());
        let intermediate = Arc::new(Schema::new(fields));
        let having = having.map(|h| compile(h, &intermediate)).transpose()?;
        let projection = projection
            .iter()
            .map(|p| compile(&p.expr, &intermediate))
            .collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Field> = schema
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.ty), true))
            .collect();
        if window.is_some() {
            out.push(Field::new(WINDOW_START, DataType::Int64, false));
            out.push(Field::new(WINDOW_END, DataType::Int64, false));
        }
        out.extend(pseudo);
        Ok(AggregateOp {
            group_by: group_exprs,
            calls: calls.to_vec(),
            args,
            intermediate,
            having,
            projection,
            output: Arc::new(Schema::new(out)),
            groups: HashMap::new(),
            window: window.cloned(),
            stream_time: i64::MIN,
            late_records: 0,
        })
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Aggregates a batch of input rows into the rows of the output table's changelog.
    pub fn process(&mut self, batch: &RecordBatch, errors: &mut u64) -> Result<RecordBatch> {
        let keys: Vec<ArrayRef> = self
            .group_by
            .iter()
            .map(|e| evaluate(e, batch, errors))
            .collect::<Result<_>>()?;
        let args: Vec<Vec<ArrayRef>> = self
            .args
            .iter()
            .map(|exprs| {
                exprs
                    .iter()
                    .map(|e| evaluate(e, batch, errors))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let n = batch.num_columns();
        let tombstone = batch.column(n - 1).as_boolean();
        let retract = batch.column(n - FLAG_COUNT).as_boolean();

        // Per emitted row: its group key, and the values of the intermediate row.
        let width = self.intermediate.fields().len();
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); width];
        let mut row_keys: Vec<Vec<ScalarValue>> = Vec::new();
        let rowtime = batch
            .column(n - PSEUDO_COUNT)
            .as_primitive::<Int64Type>()
            .clone();
        for row in 0..batch.num_rows() {
            if tombstone.value(row) || keys.iter().any(|k| k.is_null(row)) {
                continue;
            }
            let group_key = keys
                .iter()
                .map(|k| ScalarValue::try_from_array(k, row))
                .collect::<datafusion_common::Result<Vec<_>>>()?;
            let undo = retract.value(row);
            if undo && !self.groups.contains_key(&group_key) {
                continue;
            }
            // A change that stays in its group emits once, after the undo and the add
            // (KIP-904): the retraction then only undoes.
            let silent = undo
                && row + 1 < batch.num_rows()
                && !retract.value(row + 1)
                && !tombstone.value(row + 1)
                && keys.iter().zip(&group_key).all(|(k, v)| {
                    ScalarValue::try_from_array(k, row + 1).is_ok_and(|next| next == *v)
                });
            // Without a window, one group; with one, a group per open window.
            let windows: Vec<Option<i64>> = match &self.window {
                None => vec![None],
                Some(w) => {
                    let ts = rowtime.value(row);
                    self.stream_time = self.stream_time.max(ts);
                    let open: Vec<Option<i64>> = window_starts(w, ts)
                        .into_iter()
                        .filter(|s| s + w.size_ms + w.grace_ms > self.stream_time)
                        .map(Some)
                        .collect();
                    if open.is_empty() {
                        self.late_records += 1;
                    }
                    open
                }
            };
            for window_start in windows {
                let mut key = group_key.clone();
                if let Some(s) = window_start {
                    key.push(ScalarValue::Int64(Some(s)));
                }
                let group = match self.groups.get_mut(&key) {
                    Some(g) => g,
                    None => {
                        let accumulators = self
                            .calls
                            .iter()
                            .map(Accumulator::new)
                            .collect::<Result<_>>()?;
                        self.groups.entry(key.clone()).or_insert(Group {
                            accumulators,
                            emitted: false,
                        })
                    }
                };
                for (acc, arg) in group.accumulators.iter_mut().zip(&args) {
                    let v = arg
                        .iter()
                        .map(|a| ScalarValue::try_from_array(a, row))
                        .collect::<datafusion_common::Result<Vec<_>>>()?;
                    if undo {
                        acc.undo(&v)?;
                    } else {
                        acc.update(&v)?;
                    }
                }
                if silent {
                    continue;
                }
                let mut i = 0;
                for k in &group_key {
                    columns[i].push(k.clone());
                    i += 1;
                }
                for acc in &group.accumulators {
                    columns[i].push(acc.value()?);
                    i += 1;
                }
                if let (Some(s), Some(w)) = (window_start, &self.window) {
                    columns[i].push(ScalarValue::Int64(Some(s)));
                    columns[i + 1].push(ScalarValue::Int64(Some(s + w.size_ms)));
                    i += 2;
                }
                for c in &batch.columns()[n - PSEUDO_COUNT..] {
                    columns[i].push(ScalarValue::try_from_array(c, row)?);
                    i += 1;
                }
                row_keys.push(key);
            }
        }
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .zip(self.intermediate.fields())
            .map(|(values, f)| {
                if values.is_empty() {
                    Ok(new_empty_array(f.data_type()))
                } else {
                    ScalarValue::iter_to_array(values).map_err(RuntimeError::from)
                }
            })
            .collect::<Result<_>>()?;
        let intermediate = RecordBatch::try_new(self.intermediate.clone(), arrays)?;

        // HAVING: a group that stops passing after it was emitted gets a tombstone;
        // one that never passed emits nothing.
        let passes: Vec<bool> = match &self.having {
            Some(h) => {
                let mask = evaluate(h, &intermediate, errors)?;
                let mask = mask.as_boolean();
                (0..mask.len())
                    .map(|i| mask.is_valid(i) && mask.value(i))
                    .collect()
            }
            None => vec![true; intermediate.num_rows()],
        };
        let mut keep = Vec::with_capacity(passes.len());
        let mut deleted = Vec::with_capacity(passes.len());
        for (key, pass) in row_keys.iter().zip(&passes) {
            let group = self
                .groups
                .get_mut(key)
                .expect("every emitted row has a group");
            keep.push(*pass || group.emitted);
            deleted.push(!*pass);
            group.emitted = *pass;
        }

        let mut out: Vec<ArrayRef> = intermediate.columns()[..self.group_by.len()].to_vec();
        for (e, f) in self
            .projection
            .iter()
            .zip(&self.output.fields()[self.group_by.len()..])
        {
            let a = evaluate(e, &intermediate, errors)?;
            out.push(if a.data_type() == f.data_type() {
                a
            } else {
                datafusion_common::arrow::compute::cast(&a, f.data_type())?
            });
        }
        let m = intermediate.num_columns();
        if self.window.is_some() {
            // The window bounds, for the windowed key.
            let at = m - PSEUDO_COUNT - 2;
            out.extend(intermediate.columns()[at..at + 2].iter().cloned());
        }
        // ROWTIME, ROWPARTITION, ROWOFFSET; every row is the group's new row (no
        // retraction), its key is never null; the tombstones.
        out.extend(
            intermediate.columns()[m - PSEUDO_COUNT..m - FLAG_COUNT]
                .iter()
                .cloned(),
        );
        let no = BooleanArray::from(vec![false; intermediate.num_rows()]);
        out.push(Arc::new(no.clone()));
        out.push(Arc::new(no));
        out.push(Arc::new(BooleanArray::from(deleted)));
        let result = RecordBatch::try_new(self.output.clone(), out)?;
        Ok(datafusion_common::arrow::compute::filter_record_batch(
            &result,
            &BooleanArray::from(keep),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_fall_into_every_window_that_contains_them() {
        let tumbling = WindowSpec {
            size_ms: 10,
            advance_ms: 10,
            grace_ms: 0,
        };
        assert_eq!(window_starts(&tumbling, 0), vec![0]);
        assert_eq!(window_starts(&tumbling, 19), vec![10]);
        let hopping = WindowSpec {
            size_ms: 10,
            advance_ms: 5,
            grace_ms: 0,
        };
        assert_eq!(window_starts(&hopping, 12), vec![5, 10]);
        // Windows never start before the epoch.
        assert_eq!(window_starts(&hopping, 3), vec![0]);
    }
}
