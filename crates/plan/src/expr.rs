//! Resolved, type-checked expressions as the runtime evaluates them.
//!
//! The analyzer has already resolved names, checked types and inserted the implicit
//! casts ksqlDB applies, so both operands of every binary operator have the same type
//! and every function call names an implementation the runtime knows.

use crate::SqlType;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Expr {
    /// A column of the step's input, by name.
    Column(String),
    Literal(Literal),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Not(Box<Expr>),
    Negate(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// Searched CASE; the simple form is rewritten to this one by the analyzer.
    Case {
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
        #[serde(rename = "type")]
        ty: SqlType,
    },
    Cast {
        expr: Box<Expr>,
        to: SqlType,
    },
    /// A scalar function by its registry name, with the resolved return type.
    Call {
        function: String,
        args: Vec<Expr>,
        #[serde(rename = "returns")]
        return_type: SqlType,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<char>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    /// An ARRAY's element (from 1; negative indexes count from the end; NULL out of
    /// range) or a MAP's value for a key (NULL when absent).
    Subscript {
        expr: Box<Expr>,
        index: Box<Expr>,
    },
    /// A STRUCT's field (`s->f`): NULL when the struct is.
    Field {
        expr: Box<Expr>,
        name: String,
    },
    /// `ARRAY[a, b, ...]`, items already cast to the element type.
    MakeArray {
        items: Vec<Expr>,
        #[serde(rename = "type")]
        ty: SqlType,
    },
    /// `MAP(k := v, ...)`, keys and values already cast.
    MakeMap {
        entries: Vec<(Expr, Expr)>,
        #[serde(rename = "type")]
        ty: SqlType,
    },
    /// `STRUCT(f := v, ...)`.
    MakeStruct {
        fields: Vec<(String, Expr)>,
        #[serde(rename = "type")]
        ty: SqlType,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Literal {
    /// A typed NULL.
    Null(SqlType),
    Boolean(bool),
    Integer(i32),
    Bigint(i64),
    Double(f64),
    /// Unscaled digits and the type's precision and scale.
    Decimal {
        #[serde(with = "unscaled")]
        unscaled: i128,
        precision: u8,
        scale: u8,
    },
    String(String),
}

/// A decimal's unscaled digits in a plan's JSON. Steps are internally tagged, so serde
/// buffers their fields before it reads them, and its buffer has no 128-bit integers:
/// a plan with a DECIMAL literal written as an i128 could not be read back, so a server
/// on Kafka refused every persistent query with one (its command is read back from the
/// command topic). The digits are written as a number when
/// they fit 64 bits (as plans always wrote them), else as a string, and read from either.
mod unscaled {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(*v) {
            Ok(n) => s.serialize_i64(n),
            Err(_) => s.serialize_str(&v.to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        struct Digits;
        impl Visitor<'_> for Digits {
            type Value = i128;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal's unscaled digits, as an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
                Ok(v.into())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
                Ok(v.into())
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<i128, E> {
                Ok(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Digits)
    }
}

impl Expr {
    /// The names of the columns this expression reads.
    pub fn column_refs(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }

    fn collect_refs<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Column(name) => out.push(name),
            Expr::Literal(_) => {}
            Expr::Binary { left, right, .. } => {
                left.collect_refs(out);
                right.collect_refs(out);
            }
            Expr::Not(e) | Expr::Negate(e) | Expr::Cast { expr: e, .. } => e.collect_refs(out),
            Expr::IsNull { expr, .. } => expr.collect_refs(out),
            Expr::Case {
                whens, otherwise, ..
            } => {
                for (w, t) in whens {
                    w.collect_refs(out);
                    t.collect_refs(out);
                }
                if let Some(e) = otherwise {
                    e.collect_refs(out);
                }
            }
            Expr::Call { args, .. } => args.iter().for_each(|a| a.collect_refs(out)),
            Expr::Like { expr, pattern, .. } => {
                expr.collect_refs(out);
                pattern.collect_refs(out);
            }
            Expr::InList { expr, list, .. } => {
                expr.collect_refs(out);
                list.iter().for_each(|a| a.collect_refs(out));
            }
            Expr::Subscript { expr, index } => {
                expr.collect_refs(out);
                index.collect_refs(out);
            }
            Expr::Field { expr, .. } => expr.collect_refs(out),
            Expr::MakeArray { items, .. } => items.iter().for_each(|a| a.collect_refs(out)),
            Expr::MakeMap { entries, .. } => entries.iter().for_each(|(k, v)| {
                k.collect_refs(out);
                v.collect_refs(out);
            }),
            Expr::MakeStruct { fields, .. } => fields.iter().for_each(|(_, v)| v.collect_refs(out)),
        }
    }
}

impl Literal {
    pub fn sql_type(&self) -> SqlType {
        match self {
            Literal::Null(t) => t.clone(),
            Literal::Boolean(_) => SqlType::Boolean,
            Literal::Integer(_) => SqlType::Integer,
            Literal::Bigint(_) => SqlType::Bigint,
            Literal::Double(_) => SqlType::Double,
            Literal::Decimal {
                precision, scale, ..
            } => SqlType::Decimal {
                precision: *precision,
                scale: *scale,
            },
            Literal::String(_) => SqlType::String,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    IsDistinctFrom,
    IsNotDistinctFrom,
    /// String concatenation `||`.
    Concat,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Subtract => "-",
            BinaryOp::Multiply => "*",
            BinaryOp::Divide => "/",
            BinaryOp::Modulo => "%",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::IsDistinctFrom => "IS DISTINCT FROM",
            BinaryOp::IsNotDistinctFrom => "IS NOT DISTINCT FROM",
            BinaryOp::Concat => "||",
        }
    }

    /// `=`, `<>`, `<`, `<=`, `>`, `>=`: the comparisons that are false (not NULL) when a
    /// side is NULL, in ksqlDB's Java semantics (unlike IS [NOT] DISTINCT FROM).
    pub fn is_plain_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }

    pub fn is_comparison(self) -> bool {
        self.is_plain_comparison()
            || matches!(self, BinaryOp::IsDistinctFrom | BinaryOp::IsNotDistinctFrom)
    }

    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryOp::Add
                | BinaryOp::Subtract
                | BinaryOp::Multiply
                | BinaryOp::Divide
                | BinaryOp::Modulo
        )
    }
}

/// Readable form for EXPLAIN and error messages.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(name) => f.write_str(name),
            Expr::Literal(l) => match l {
                Literal::Null(_) => f.write_str("null"),
                Literal::Boolean(b) => write!(f, "{}", if *b { "true" } else { "false" }),
                Literal::Integer(v) => write!(f, "{v}"),
                Literal::Bigint(v) => write!(f, "{v}"),
                Literal::Double(v) => write!(f, "{v:?}"),
                Literal::Decimal {
                    unscaled, scale, ..
                } => write!(f, "{}", format_decimal(*unscaled, *scale)),
                Literal::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            },
            Expr::Binary { op, left, right } => write!(f, "({left} {} {right})", op.symbol()),
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::Negate(e) => write!(f, "-{e}"),
            Expr::IsNull { expr, negated } => {
                write!(f, "({expr} IS {}NULL)", if *negated { "NOT " } else { "" })
            }
            Expr::Case {
                whens, otherwise, ..
            } => {
                f.write_str("(CASE")?;
                for (w, t) in whens {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END)")
            }
            Expr::Cast { expr, to } => write!(f, "CAST({expr} AS {to})"),
            Expr::Call { function, args, .. } => {
                write!(f, "{function}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                write!(
                    f,
                    "({expr} {}LIKE {pattern}",
                    if *negated { "NOT " } else { "" }
                )?;
                if let Some(c) = escape {
                    write!(f, " ESCAPE '{c}'")?;
                }
                f.write_str(")")
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                write!(f, "({expr} {}IN (", if *negated { "NOT " } else { "" })?;
                for (i, a) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("))")
            }
            Expr::Subscript { expr, index } => write!(f, "{expr}[{index}]"),
            Expr::Field { expr, name } => write!(f, "{expr}->{name}"),
            Expr::MakeArray { items, .. } => {
                f.write_str("ARRAY[")?;
                write_list(f, items.iter().map(|i| i.to_string()))?;
                f.write_str("]")
            }
            Expr::MakeMap { entries, .. } => {
                f.write_str("MAP(")?;
                write_list(f, entries.iter().map(|(k, v)| format!("{k}:={v}")))?;
                f.write_str(")")
            }
            Expr::MakeStruct { fields, .. } => {
                f.write_str("STRUCT(")?;
                write_list(f, fields.iter().map(|(n, v)| format!("{n}:={v}")))?;
                f.write_str(")")
            }
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: impl Iterator<Item = String>) -> fmt::Result {
    for (i, item) in items.enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        f.write_str(&item)?;
    }
    Ok(())
}

/// Formats an unscaled decimal as text, e.g. (1234, 2) as "12.34".
pub fn format_decimal(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_format_with_their_scale() {
        assert_eq!(format_decimal(1234, 2), "12.34");
        assert_eq!(format_decimal(-5, 2), "-0.05");
        assert_eq!(format_decimal(7, 0), "7");
    }

    #[test]
    fn expressions_round_trip_through_json() {
        let e = Expr::Binary {
            op: BinaryOp::Add,
            left: Box::new(Expr::Column("A".into())),
            right: Box::new(Expr::Literal(Literal::Integer(1))),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Expr>(&json).unwrap(), e);
        assert_eq!(e.to_string(), "(A + 1)");
    }

    #[test]
    fn decimal_literals_read_back_inside_steps() {
        for unscaled in [10_000, -5, i128::from(i64::MAX) * 1000] {
            let literal = Expr::Literal(Literal::Decimal {
                unscaled,
                precision: 38,
                scale: 1,
            });
            // A filter step is internally tagged: its fields are buffered first.
            let step = crate::Step::StreamFilter {
                input: Box::new(crate::Step::StreamSource {
                    name: "S".into(),
                    topic: crate::TopicSpec {
                        topic: "s".into(),
                        key_format: crate::Format::new(crate::FormatKind::Kafka),
                        value_format: crate::Format::new(crate::FormatKind::Json),
                        schema: crate::LogicalSchema::new(Vec::new()),
                        timestamp: None,
                        timestamp_format: None,
                        window: None,
                        retractions: false,
                    },
                }),
                predicate: literal,
            };
            let json = serde_json::to_string(&step).unwrap();
            assert_eq!(
                serde_json::from_str::<crate::Step>(&json).unwrap(),
                step,
                "{json}"
            );
        }
        // As plans wrote it before: a plain number.
        let old = r#"{"decimal":{"unscaled":10000,"precision":5,"scale":1}}"#;
        assert!(matches!(
            serde_json::from_str::<Literal>(old).unwrap(),
            Literal::Decimal {
                unscaled: 10_000,
                ..
            }
        ));
    }
}
