//! TRANSFORM, FILTER and REDUCE: functions taking lambdas.
//!
//! The analyzer passes each lambda as a constant STRING holding its parameters and typed
//! body (JSON), and the result type as a typed NULL last argument. The body is compiled
//! like any expression, over a batch whose columns are the lambda's parameters: all the
//! elements of a batch of arrays at once for TRANSFORM and FILTER, one element at a time
//! for REDUCE.
//!
//! A body that reads the row's columns gets them as arguments after the lambdas (before
//! the result type), and as parameters after its own: repeated for each element.
//!
//! ksqlDB runs lambdas as Java, where arithmetic on a NULL fails; the failure makes the
//! whole call NULL. Here a row whose arithmetic met a NULL operand does the same.

use super::{Body, TypedKernel};
use crate::expr::{PhysExpr, compile, evaluate};
use crate::types::arrow_type;
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, RecordBatch, RecordBatchOptions, new_null_array,
};
use datafusion_common::arrow::buffer::NullBuffer;
use datafusion_common::arrow::compute::concat;
use datafusion_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::{DataFusionError, Result, exec_err};
use sluice_plan::{Expr, SqlType};
use std::ops::Range;
use std::sync::Arc;

pub(super) const NAMES: &[&str] = &["TRANSFORM", "FILTER", "REDUCE"];

pub(super) fn lookup(name: &str, args: &[DataType]) -> Option<(Body, DataType)> {
    let kernel: TypedKernel = match name {
        "TRANSFORM" => transform,
        "FILTER" => filter,
        "REDUCE" => reduce,
        _ => return None,
    };
    Some((Body::Typed(kernel), args.last()?.clone()))
}

fn runtime_err(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

/// A compiled lambda.
struct Lambda {
    schema: SchemaRef,
    body: PhysExpr,
    /// The operands of the body's arithmetic: a NULL among them fails the call.
    strict: Vec<PhysExpr>,
}

impl Lambda {
    fn from_arg(arg: &ArrayRef) -> Result<Lambda> {
        let text = arg.as_string::<i32>();
        if text.is_empty() || text.is_null(0) {
            return exec_err!("a lambda argument must be a constant");
        }
        let (params, body): (Vec<(String, SqlType)>, Expr) =
            serde_json::from_str(text.value(0)).map_err(runtime_err)?;
        let schema = Arc::new(Schema::new(
            params
                .iter()
                .map(|(n, t)| Field::new(n, arrow_type(t), true))
                .collect::<Vec<_>>(),
        ));
        let mut operands = Vec::new();
        arithmetic_operands(&body, &mut operands);
        let mut strict = Vec::new();
        for e in operands {
            let c = compile(e, &schema).map_err(runtime_err)?;
            let numeric = c.data_type(&schema)?.is_numeric();
            if numeric {
                strict.push(c);
            }
        }
        Ok(Lambda {
            body: compile(&body, &schema).map_err(runtime_err)?,
            schema,
            strict,
        })
    }

    /// The body over `columns` (one per parameter), and per row whether it failed.
    fn apply(&self, columns: Vec<ArrayRef>) -> Result<(ArrayRef, Vec<bool>)> {
        let rows = columns.first().map_or(0, |c| c.len());
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let mut errors = 0;
        let out = evaluate(&self.body, &batch, &mut errors).map_err(runtime_err)?;
        let mut failed = vec![false; rows];
        for e in &self.strict {
            let v = evaluate(e, &batch, &mut errors).map_err(runtime_err)?;
            for (i, f) in failed.iter_mut().enumerate() {
                *f |= v.is_null(i);
            }
        }
        Ok((out, failed))
    }
}

/// The operands of every arithmetic operation in `e` (not inside nested lambdas, which
/// are opaque literals here).
fn arithmetic_operands<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    let mut walk = |c: &'a Expr| arithmetic_operands(c, out);
    match e {
        Expr::Column(_) | Expr::Literal(_) => {}
        Expr::Binary { op, left, right } => {
            if op.is_arithmetic() {
                out.push(left);
                out.push(right);
            }
            arithmetic_operands(left, out);
            arithmetic_operands(right, out);
        }
        Expr::Not(x) | Expr::Negate(x) | Expr::Cast { expr: x, .. } => walk(x),
        Expr::IsNull { expr, .. } | Expr::Field { expr, .. } => walk(expr),
        Expr::Case {
            whens, otherwise, ..
        } => {
            for (w, t) in whens {
                arithmetic_operands(w, out);
                arithmetic_operands(t, out);
            }
            if let Some(o) = otherwise {
                arithmetic_operands(o, out);
            }
        }
        Expr::Call { args, .. } | Expr::MakeArray { items: args, .. } => {
            args.iter().for_each(|a| arithmetic_operands(a, out))
        }
        Expr::Like { expr, pattern, .. } => {
            arithmetic_operands(expr, out);
            arithmetic_operands(pattern, out);
        }
        Expr::InList { expr, list, .. } => {
            arithmetic_operands(expr, out);
            list.iter().for_each(|a| arithmetic_operands(a, out));
        }
        Expr::Subscript { expr, index } => {
            arithmetic_operands(expr, out);
            arithmetic_operands(index, out);
        }
        Expr::MakeMap { entries, .. } => entries.iter().for_each(|(k, v)| {
            arithmetic_operands(k, out);
            arithmetic_operands(v, out);
        }),
        Expr::MakeStruct { fields, .. } => {
            fields.iter().for_each(|(_, v)| arithmetic_operands(v, out))
        }
    }
}

/// Reorders map entries (indexes into `keys`) as a Java `HashMap` sized for them
/// iterates them, which is the order ksqlDB's REDUCE folds a map in: by bucket of the
/// key's spread hash, then in insertion order. Keys other than STRINGs keep their order.
fn java_hash_map_order(keys: &ArrayRef, entries: &mut [usize]) {
    let Some(keys) = keys.as_string_opt::<i32>() else {
        return;
    };
    let n = entries.len();
    let mut capacity = n.next_power_of_two().max(1);
    while n as f64 > capacity as f64 * 0.75 {
        capacity *= 2;
    }
    let bucket = |i: usize| {
        let h = keys
            .value(i)
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32)) as u32;
        (h ^ (h >> 16)) as usize & (capacity - 1)
    };
    entries.sort_by_key(|&i| bucket(i));
}

/// The row's columns a call's lambdas read: its arguments from `first` on, before the
/// result type.
fn captured(a: &[ArrayRef], first: usize) -> &[ArrayRef] {
    &a[first.min(a.len().saturating_sub(1))..a.len().saturating_sub(1)]
}

/// Each of `columns` (one value per row) repeated for every element of its row: the
/// `len` elements are laid out by `offsets`.
fn per_element(columns: &[ArrayRef], offsets: &[i32], len: usize) -> Result<Vec<ArrayRef>> {
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = vec![0u32; len];
    for r in 0..offsets.len().saturating_sub(1) {
        for i in offsets_range(offsets, r) {
            rows[i] = r as u32;
        }
    }
    let rows = datafusion_common::arrow::array::UInt32Array::from(rows);
    columns
        .iter()
        .map(|c| Ok(datafusion_common::arrow::compute::take(c, &rows, None)?))
        .collect()
}

fn offsets_range(offsets: &[i32], r: usize) -> Range<usize> {
    offsets[r] as usize..offsets[r + 1] as usize
}

/// TRANSFORM(array, x => ...) or TRANSFORM(map, (k, v) => key, (k, v) => value).
fn transform(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    if rows == 0 {
        return Ok(new_null_array(returns, 0));
    }
    match a[0].data_type() {
        DataType::List(_) => {
            let l = a[0].as_list::<i32>();
            let offsets = l.value_offsets();
            let mut columns = vec![l.values().clone()];
            columns.extend(per_element(captured(a, 2), offsets, l.values().len())?);
            let (out, failed) = Lambda::from_arg(&a[1])?.apply(columns)?;
            let nulls =
                NullBuffer::from_iter((0..rows).map(|r| {
                    l.is_valid(r) && !failed[offsets_range(offsets, r)].iter().any(|f| *f)
                }));
            let DataType::List(field) = returns else {
                return exec_err!("TRANSFORM of an array returns an array");
            };
            let out = ListArray::try_new(field.clone(), l.offsets().clone(), out, Some(nulls))?;
            Ok(Arc::new(out))
        }
        DataType::Map(..) => {
            let m = a[0].as_map();
            let offsets = m.value_offsets();
            let mut columns = vec![m.keys().clone(), m.values().clone()];
            columns.extend(per_element(captured(a, 3), offsets, m.keys().len())?);
            let (keys, kf) = Lambda::from_arg(&a[1])?.apply(columns.clone())?;
            let (values, vf) = Lambda::from_arg(&a[2])?.apply(columns)?;
            let same = super::collections::equality(&keys);
            let picks = (0..rows)
                .map(|r| {
                    let range = offsets_range(offsets, r);
                    if m.is_null(r) || range.clone().any(|i| kf[i] || vf[i] || keys.is_null(i)) {
                        return None;
                    }
                    // ksqlDB refuses a transformed map with a repeated key.
                    for (n, i) in range.clone().enumerate() {
                        if range.clone().take(n).any(|j| same(i, j)) {
                            return None;
                        }
                    }
                    Some(range.collect())
                })
                .collect();
            super::collections::picked_map(&keys, &values, picks, returns)
        }
        other => exec_err!("TRANSFORM of {other}"),
    }
}

/// The element columns of a list (its values) or a map (its keys, its values), the
/// offsets of each row's elements, and which rows are not NULL.
type CollectionParts = (Vec<ArrayRef>, Vec<i32>, Vec<bool>);

fn collection_parts(a: &ArrayRef, rows: usize, function: &str) -> Result<CollectionParts> {
    Ok(match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            (
                vec![l.values().clone()],
                l.value_offsets().to_vec(),
                (0..rows).map(|r| l.is_valid(r)).collect(),
            )
        }
        DataType::Map(..) => {
            let m = a.as_map();
            (
                vec![m.keys().clone(), m.values().clone()],
                m.value_offsets().to_vec(),
                (0..rows).map(|r| m.is_valid(r)).collect(),
            )
        }
        other => return exec_err!("{function} of {other}"),
    })
}

/// FILTER(array, x => ...) or FILTER(map, (k, v) => ...).
fn filter(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    if rows == 0 {
        return Ok(new_null_array(returns, 0));
    }
    let (columns, offsets, valid) = collection_parts(&a[0], rows, "FILTER")?;
    let mut inputs = columns.clone();
    inputs.extend(per_element(captured(a, 2), &offsets, columns[0].len())?);
    let (keep, failed) = Lambda::from_arg(&a[1])?.apply(inputs)?;
    let keep = keep.as_boolean();
    let picks: Vec<Option<Vec<usize>>> = (0..rows)
        .map(|r| {
            let range = offsets_range(&offsets, r);
            if !valid[r] || range.clone().any(|i| failed[i]) {
                return None;
            }
            Some(
                range
                    .filter(|&i| keep.is_valid(i) && keep.value(i))
                    .collect(),
            )
        })
        .collect();
    match a[0].data_type() {
        DataType::List(_) => super::collections::picked(&columns[0], picks, returns),
        _ => super::collections::picked_map(&columns[0], &columns[1], picks, returns),
    }
}

/// REDUCE(array, initial, (s, x) => ...) or REDUCE(map, initial, (s, k, v) => ...): the
/// initial state for a NULL collection.
fn reduce(a: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
    if rows == 0 {
        return Ok(new_null_array(returns, 0));
    }
    let lambda = Lambda::from_arg(&a[2])?;
    let (elements, offsets, valid) = collection_parts(&a[0], rows, "REDUCE")?;
    let captured = captured(a, 3);
    let mut results: Vec<ArrayRef> = Vec::with_capacity(rows);
    for (r, valid) in valid.iter().enumerate() {
        let mut state = a[1].slice(r, 1);
        if *valid {
            let mut order: Vec<usize> = offsets_range(&offsets, r).collect();
            if elements.len() == 2 {
                java_hash_map_order(&elements[0], &mut order);
            }
            for i in order {
                let mut columns = vec![state.clone()];
                columns.extend(elements.iter().map(|e| e.slice(i, 1)));
                columns.extend(captured.iter().map(|c| c.slice(r, 1)));
                let (next, failed) = lambda.apply(columns)?;
                if failed[0] {
                    state = new_null_array(returns, 1);
                    break;
                }
                state = next;
            }
        }
        results.push(state);
    }
    if results.is_empty() {
        return Ok(new_null_array(returns, 0));
    }
    let refs: Vec<&dyn Array> = results.iter().map(|x| x.as_ref()).collect();
    Ok(concat(&refs)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::test_support::{int_lists, rows_of};
    use datafusion_common::arrow::array::{Int32Array, StringArray};
    use datafusion_common::arrow::datatypes::Int32Type;
    use sluice_plan::{BinaryOp, Literal};

    fn lambda_arg(params: &[(&str, SqlType)], body: Expr) -> ArrayRef {
        let params: Vec<(String, SqlType)> = params
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        let text = serde_json::to_string(&(params, body)).unwrap();
        Arc::new(StringArray::from(vec![text.as_str(); 3]))
    }

    fn plus(l: Expr, r: Expr) -> Expr {
        Expr::Binary {
            op: BinaryOp::Add,
            left: Box::new(l),
            right: Box::new(r),
        }
    }

    fn col(n: &str) -> Expr {
        Expr::Column(n.into())
    }

    #[test]
    fn transform_applies_to_each_element_and_fails_on_null_arithmetic() {
        let lists = int_lists(vec![
            Some(vec![Some(1), Some(2)]),
            Some(vec![Some(3), None]),
            None,
        ]);
        let t = lists.data_type().clone();
        let f = lambda_arg(
            &[("X", SqlType::Integer)],
            plus(col("X"), Expr::Literal(Literal::Integer(10))),
        );
        let out = transform(&[lists, f, new_null_array(&t, 3)], 3, &t).unwrap();
        assert_eq!(
            rows_of(&out),
            vec![Some(vec![Some(11), Some(12)]), None, None]
        );
    }

    #[test]
    fn a_body_reads_the_rows_columns_passed_after_the_lambda() {
        let lists = int_lists(vec![Some(vec![Some(1), Some(2)]), Some(vec![Some(3)])]);
        let t = lists.data_type().clone();
        let f = lambda_arg(
            &[("X", SqlType::Integer), ("N", SqlType::Integer)],
            plus(col("X"), col("N")),
        );
        let n: ArrayRef = Arc::new(Int32Array::from(vec![100, 200]));
        let out = transform(&[lists, f, n, new_null_array(&t, 2)], 2, &t).unwrap();
        assert_eq!(
            rows_of(&out),
            vec![Some(vec![Some(101), Some(102)]), Some(vec![Some(203)])]
        );
    }

    #[test]
    fn filter_keeps_true_elements() {
        let lists = int_lists(vec![Some(vec![Some(1), Some(5), None]), Some(vec![])]);
        let t = lists.data_type().clone();
        let f = lambda_arg(
            &[("X", SqlType::Integer)],
            Expr::Binary {
                op: BinaryOp::Gt,
                left: Box::new(col("X")),
                right: Box::new(Expr::Literal(Literal::Integer(2))),
            },
        );
        let out = filter(&[lists, f, new_null_array(&t, 2)], 2, &t).unwrap();
        assert_eq!(rows_of(&out), vec![Some(vec![Some(5)]), Some(vec![])]);
    }

    #[test]
    fn reduce_folds_from_the_initial_state() {
        let lists = int_lists(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![Some(1), None]),
        ]);
        let init: ArrayRef = Arc::new(Int32Array::from(vec![10, 7, 0]));
        let f = lambda_arg(
            &[("S", SqlType::Integer), ("X", SqlType::Integer)],
            plus(col("S"), col("X")),
        );
        let out = reduce(
            &[lists, init, f, new_null_array(&DataType::Int32, 3)],
            3,
            &DataType::Int32,
        )
        .unwrap();
        let out = out.as_primitive::<Int32Type>();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            vec![Some(13), Some(7), None]
        );
    }

    #[test]
    fn maps_fold_in_java_hash_map_order() {
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["yes, thanks", "nope", "sure, yeah"]));
        let mut order = vec![0, 1, 2];
        java_hash_map_order(&keys, &mut order);
        assert_eq!(order, vec![0, 2, 1]);
    }
}
