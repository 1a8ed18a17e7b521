//! Plan expressions compiled to DataFusion physical expressions, and their evaluation
//! with ksqlDB's error semantics: a row whose expression fails yields NULL (and is
//! counted), it never fails the batch.

use crate::error::{Result, RuntimeError};
use crate::types::arrow_type;
use crate::{nested, udf};
use datafusion_common::ScalarValue;
use datafusion_common::arrow::array::{Array, ArrayRef, new_null_array};
use datafusion_common::arrow::compute::concat;
use datafusion_common::arrow::datatypes::{DataType, Field, Schema};
use datafusion_common::arrow::record_batch::RecordBatch;
use datafusion_common::config::ConfigOptions;
use datafusion_expr::Operator;
use datafusion_physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr,
    Literal as LiteralExpr, NegativeExpr, NotExpr,
};
use datafusion_physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use sluice_plan::{BinaryOp, Expr, Literal};
use std::sync::Arc;

pub type PhysExpr = Arc<dyn PhysicalExpr>;

/// Compiles `e` against rows of `schema`.
pub fn compile(e: &Expr, schema: &Schema) -> Result<PhysExpr> {
    Ok(match e {
        Expr::Column(name) => {
            let idx = schema
                .index_of(name)
                .map_err(|_| RuntimeError::Plan(format!("unknown column {name}")))?;
            Arc::new(Column::new(name, idx))
        }
        Expr::Literal(l) => Arc::new(LiteralExpr::new(literal(l)?)),
        Expr::Binary { op, left, right } => {
            let l = compile(left, schema)?;
            let r = compile(right, schema)?;
            let e: PhysExpr = Arc::new(BinaryExpr::new(l, operator(*op), r));
            // ksqlDB compares with Java semantics: a comparison with NULL is false.
            if op.is_plain_comparison() {
                null_as_false(e)?
            } else {
                e
            }
        }
        Expr::Not(inner) => Arc::new(NotExpr::new(compile(inner, schema)?)),
        Expr::Negate(inner) => Arc::new(NegativeExpr::new(compile(inner, schema)?)),
        Expr::IsNull { expr, negated } => {
            let inner = compile(expr, schema)?;
            if *negated {
                Arc::new(IsNotNullExpr::new(inner))
            } else {
                Arc::new(IsNullExpr::new(inner))
            }
        }
        Expr::Case {
            whens, otherwise, ..
        } => {
            let whens = whens
                .iter()
                .map(|(w, t)| Ok((compile(w, schema)?, compile(t, schema)?)))
                .collect::<Result<Vec<_>>>()?;
            let otherwise = otherwise.as_ref().map(|e| compile(e, schema)).transpose()?;
            Arc::new(CaseExpr::try_new(None, whens, otherwise)?)
        }
        Expr::Cast { expr, to } => {
            let inner = compile(expr, schema)?;
            let target = arrow_type(to);
            let from = inner.data_type(schema)?;
            if from == target {
                inner
            } else if from.is_nested() || target.is_nested() {
                internal_call("$cast", vec![inner], target, nested::cast_nested, schema)?
            } else if from == DataType::Utf8 && target == DataType::Date32 {
                internal_call("$todate", vec![inner], target, string_to_date, schema)?
            } else {
                Arc::new(CastExpr::new(inner, target, None))
            }
        }
        Expr::Subscript { expr, index } => {
            let base = compile(expr, schema)?;
            let index = compile(index, schema)?;
            match base.data_type(schema)? {
                DataType::List(item) => internal_call(
                    "$list_element",
                    vec![base, index],
                    item.data_type().clone(),
                    nested::list_element,
                    schema,
                )?,
                DataType::Map(entries, _) => {
                    let DataType::Struct(fields) = entries.data_type() else {
                        return Err(RuntimeError::Plan("map entries must be a struct".into()));
                    };
                    internal_call(
                        "$map_value",
                        vec![base, index],
                        fields[1].data_type().clone(),
                        nested::map_value,
                        schema,
                    )?
                }
                other => {
                    return Err(RuntimeError::Plan(format!("cannot subscript a {other}")));
                }
            }
        }
        Expr::Field { expr, name } => {
            let base = compile(expr, schema)?;
            let DataType::Struct(fields) = base.data_type(schema)? else {
                return Err(RuntimeError::Plan(format!("{expr} is not a struct")));
            };
            let Some((index, field)) = fields.find(name) else {
                return Err(RuntimeError::Plan(format!("{expr} has no field {name}")));
            };
            let index: PhysExpr =
                Arc::new(LiteralExpr::new(ScalarValue::Int32(Some(index as i32))));
            internal_call(
                "$field",
                vec![base, index],
                field.data_type().clone(),
                nested::struct_field,
                schema,
            )?
        }
        Expr::MakeArray { items, ty } => {
            let args = compile_all(items, schema)?;
            internal_call("$array", args, arrow_type(ty), nested::make_array, schema)?
        }
        Expr::MakeMap { entries, ty } => {
            let flat: Vec<Expr> = entries
                .iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect();
            let args = compile_all(&flat, schema)?;
            internal_call("$map", args, arrow_type(ty), nested::make_map, schema)?
        }
        Expr::MakeStruct { fields, ty } => {
            let values: Vec<Expr> = fields.iter().map(|(_, v)| v.clone()).collect();
            let args = compile_all(&values, schema)?;
            internal_call("$struct", args, arrow_type(ty), nested::make_struct, schema)?
        }
        Expr::Call { function, args, .. } => {
            let args = args
                .iter()
                .map(|a| compile(a, schema))
                .collect::<Result<Vec<_>>>()?;
            let types = args
                .iter()
                .map(|a| a.data_type(schema))
                .collect::<datafusion_common::Result<Vec<_>>>()?;
            let fun = udf::lookup(function, &types).ok_or_else(|| {
                RuntimeError::Plan(format!("no implementation of {function}{types:?}"))
            })?;
            Arc::new(ScalarFunctionExpr::try_new(
                fun,
                args,
                schema,
                Arc::new(ConfigOptions::default()),
            )?)
        }
        Expr::Like {
            expr,
            pattern,
            escape,
            negated,
        } => {
            let pattern = match (escape, pattern.as_ref()) {
                (None | Some('\\'), p) => compile(p, schema)?,
                (Some(esc), Expr::Literal(Literal::String(p))) => Arc::new(LiteralExpr::new(
                    ScalarValue::Utf8(Some(with_backslash_escape(p, *esc))),
                )),
                // A pattern read from the row is rewritten row by row.
                (Some(esc), p) => {
                    let esc: PhysExpr =
                        Arc::new(LiteralExpr::new(ScalarValue::Utf8(Some(esc.to_string()))));
                    internal_call(
                        "$LIKE_ESCAPE",
                        vec![compile(p, schema)?, esc],
                        DataType::Utf8,
                        |args, _, _| {
                            let patterns = datafusion_common::arrow::array::AsArray::as_string::<i32>(
                                &args[0],
                            );
                            let esc = datafusion_common::arrow::array::AsArray::as_string::<i32>(
                                &args[1],
                            );
                            let rewritten: datafusion_common::arrow::array::StringArray = (0
                                ..patterns.len())
                                .map(|i| {
                                    let e = esc.value(i).chars().next().unwrap_or('\\');
                                    (!patterns.is_null(i))
                                        .then(|| with_backslash_escape(patterns.value(i), e))
                                })
                                .collect();
                            Ok(Arc::new(rewritten))
                        },
                        schema,
                    )?
                }
            };
            Arc::new(LikeExpr::new(
                *negated,
                false,
                compile(expr, schema)?,
                pattern,
            ))
        }
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let list = list
                .iter()
                .map(|a| compile(a, schema))
                .collect::<Result<Vec<_>>>()?;
            Arc::new(InListExpr::try_new(
                compile(expr, schema)?,
                list,
                *negated,
                schema,
            )?)
        }
    })
}

fn compile_all(exprs: &[Expr], schema: &Schema) -> Result<Vec<PhysExpr>> {
    exprs.iter().map(|e| compile(e, schema)).collect()
}

/// A call of a runtime-internal kernel, typed by the plan.
fn internal_call(
    name: &'static str,
    args: Vec<PhysExpr>,
    returns: DataType,
    kernel: udf::TypedKernel,
    schema: &Schema,
) -> Result<PhysExpr> {
    let types = args
        .iter()
        .map(|a| a.data_type(schema))
        .collect::<datafusion_common::Result<Vec<_>>>()?;
    Ok(Arc::new(ScalarFunctionExpr::try_new(
        udf::internal(name, types, returns, kernel),
        args,
        schema,
        Arc::new(ConfigOptions::default()),
    )?))
}

/// `CASE WHEN e THEN true ELSE false END`: NULL becomes false.
fn null_as_false(e: PhysExpr) -> Result<PhysExpr> {
    let t: PhysExpr = Arc::new(LiteralExpr::new(ScalarValue::Boolean(Some(true))));
    let f: PhysExpr = Arc::new(LiteralExpr::new(ScalarValue::Boolean(Some(false))));
    Ok(Arc::new(CaseExpr::try_new(None, vec![(e, t)], Some(f))?))
}

/// Rewrites a LIKE pattern with a custom escape character to use `\`.
fn with_backslash_escape(p: &str, esc: char) -> String {
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == esc {
            if let Some(n) = chars.next() {
                out.push('\\');
                out.push(n);
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

fn literal(l: &Literal) -> Result<ScalarValue> {
    Ok(match l {
        Literal::Null(t) => ScalarValue::try_from(&arrow_type(t))?,
        Literal::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        Literal::Integer(v) => ScalarValue::Int32(Some(*v)),
        Literal::Bigint(v) => ScalarValue::Int64(Some(*v)),
        Literal::Double(v) => ScalarValue::Float64(Some(*v)),
        Literal::Decimal {
            unscaled,
            precision,
            scale,
        } => ScalarValue::Decimal128(Some(*unscaled), *precision, *scale as i8),
        Literal::String(s) => ScalarValue::Utf8(Some(s.clone())),
    })
}

fn operator(op: BinaryOp) -> Operator {
    match op {
        BinaryOp::Add => Operator::Plus,
        BinaryOp::Subtract => Operator::Minus,
        BinaryOp::Multiply => Operator::Multiply,
        BinaryOp::Divide => Operator::Divide,
        BinaryOp::Modulo => Operator::Modulo,
        BinaryOp::Eq => Operator::Eq,
        BinaryOp::NotEq => Operator::NotEq,
        BinaryOp::Lt => Operator::Lt,
        BinaryOp::LtEq => Operator::LtEq,
        BinaryOp::Gt => Operator::Gt,
        BinaryOp::GtEq => Operator::GtEq,
        BinaryOp::And => Operator::And,
        BinaryOp::Or => Operator::Or,
        BinaryOp::IsDistinctFrom => Operator::IsDistinctFrom,
        BinaryOp::IsNotDistinctFrom => Operator::IsNotDistinctFrom,
        BinaryOp::Concat => Operator::StringConcat,
    }
}

/// Evaluates `e` over `batch` into an array. When the batch as a whole fails (a division
/// by zero in one row, say), rows are evaluated one by one and the failing ones are NULL;
/// `errors` counts them.
pub fn evaluate(e: &PhysExpr, batch: &RecordBatch, errors: &mut u64) -> Result<ArrayRef> {
    match e
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
    {
        Ok(a) => Ok(a),
        Err(_) if batch.num_rows() > 0 => {
            let data_type = e.data_type(&batch.schema())?;
            let mut parts = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                let one = batch.slice(row, 1);
                match e.evaluate(&one).and_then(|v| v.into_array(1)) {
                    Ok(a) => parts.push(a),
                    Err(_) => {
                        *errors += 1;
                        parts.push(new_null_array(&data_type, 1));
                    }
                }
            }
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            Ok(concat(&refs)?)
        }
        Err(err) => Err(err.into()),
    }
}

/// The Arrow field an expression produces.
pub fn output_field(name: &str, e: &PhysExpr, schema: &Schema) -> Result<Field> {
    let t: DataType = e.data_type(schema)?;
    Ok(Field::new(name, t, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_common::arrow::array::{AsArray, Int32Array};
    use datafusion_common::arrow::datatypes::Int32Type;

    #[test]
    fn failing_rows_become_null() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("A", DataType::Int32, true),
            Field::new("B", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![6, 1, 9])),
                Arc::new(Int32Array::from(vec![3, 0, 3])),
            ],
        )
        .unwrap();
        let e = compile(
            &Expr::Binary {
                op: BinaryOp::Divide,
                left: Box::new(Expr::Column("A".into())),
                right: Box::new(Expr::Column("B".into())),
            },
            &schema,
        )
        .unwrap();
        let mut errors = 0;
        let out = evaluate(&e, &batch, &mut errors).unwrap();
        let out = out.as_primitive::<Int32Type>();
        assert_eq!(out.value(0), 2);
        assert!(out.is_null(1));
        assert_eq!(out.value(2), 3);
        assert_eq!(errors, 1);
    }

    #[test]
    fn comparisons_with_null_are_false() {
        let schema = Arc::new(Schema::new(vec![Field::new("A", DataType::Int32, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int32Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        let e = compile(
            &Expr::Binary {
                op: BinaryOp::Eq,
                left: Box::new(Expr::Column("A".into())),
                right: Box::new(Expr::Literal(Literal::Integer(1))),
            },
            &schema,
        )
        .unwrap();
        let out = evaluate(&e, &batch, &mut 0).unwrap();
        let out = out.as_boolean();
        assert!(out.value(0));
        assert!(out.is_valid(1) && !out.value(1));
    }

    #[test]
    fn custom_like_escapes_become_backslashes() {
        assert_eq!(with_backslash_escape("a!%b%", '!'), "a\\%b%");
    }

    #[test]
    fn like_escape_applies_to_patterns_read_from_the_row() {
        use datafusion_common::arrow::array::StringArray;
        let schema = Arc::new(Schema::new(vec![
            Field::new("V", DataType::Utf8, true),
            Field::new("P", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("%"),
                    Some("x"),
                    Some("x"),
                    None,
                ])),
                Arc::new(StringArray::from(vec![
                    Some("!%"),
                    Some("!%"),
                    Some("%"),
                    None,
                ])),
            ],
        )
        .unwrap();
        let e = compile(
            &Expr::Like {
                expr: Box::new(Expr::Column("V".into())),
                pattern: Box::new(Expr::Column("P".into())),
                escape: Some('!'),
                negated: false,
            },
            &schema,
        )
        .unwrap();
        let out = evaluate(&e, &batch, &mut 0).unwrap();
        let out = out.as_boolean();
        assert_eq!(
            (0..3).map(|i| out.value(i)).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert!(out.is_null(3));
    }
}

/// CAST(string AS DATE), as ksqlDB reads dates: `yyyy-MM-dd`, or a prefix of it
/// (`yyyy-MM`, `yyyy`: the first day); anything else is NULL.
fn string_to_date(
    args: &[ArrayRef],
    _: usize,
    _: &DataType,
) -> datafusion_common::Result<ArrayRef> {
    use datafusion_common::arrow::array::{AsArray, Date32Array};
    let texts = args[0].as_string::<i32>();
    let days: Date32Array = texts.iter().map(|t| t.and_then(parse_iso_date)).collect();
    Ok(Arc::new(days))
}

/// Days since 1970-01-01 of `yyyy[-MM[-dd]]`.
fn parse_iso_date(text: &str) -> Option<i32> {
    let mut parts = text.trim().splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: u32 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((date - epoch).num_days()).ok()
}

#[cfg(test)]
mod date_tests {
    use super::parse_iso_date;

    #[test]
    fn dates_and_their_prefixes_parse() {
        assert_eq!(parse_iso_date("1970-01-10"), Some(9));
        assert_eq!(parse_iso_date("1970-01"), Some(0));
        assert_eq!(parse_iso_date("1971"), Some(365));
        assert_eq!(parse_iso_date("1969-12-31"), Some(-1));
        assert_eq!(parse_iso_date("foo"), None);
        assert_eq!(parse_iso_date("1970-13-01"), None);
    }
}
