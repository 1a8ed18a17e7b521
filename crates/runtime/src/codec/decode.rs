//! Kafka record bytes into Arrow columns.
//!
//! One `ColumnBuilder` per column appends values as records arrive; a record that fails
//! to decode leaves no trace in any builder (the row is rolled back) and is reported.

use super::json_fields::{FieldSpan, match_fields, value_span};
use super::registered::{LookupError, Registry, Writer, WriterSchemas, nosr_writer};
use crate::types::arrow_type;
use datafusion_common::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, MapArray, StringBuilder, StructArray,
    Time32MillisecondBuilder, TimestampMillisecondBuilder, new_null_array,
};
use datafusion_common::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion_common::arrow::datatypes::{DataType, FieldRef, Fields};
use serde_json::Value;
use sluice_plan::{Column, Format, FormatKind, SqlType};
use sluice_registry::{avro, protobuf, unframe};
use std::collections::HashMap;
use std::sync::Arc;

/// Appends values of one SQL type.
pub enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Integer(Int32Builder),
    Bigint(Int64Builder),
    Double(Float64Builder),
    Decimal(Decimal128Builder, u8, u8),
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time32MillisecondBuilder),
    Timestamp(TimestampMillisecondBuilder),
    /// ARRAY: the elements of all rows in one child column, cut by offsets.
    List {
        field: FieldRef,
        items: Box<ColumnBuilder>,
        offsets: Vec<i32>,
        valid: Vec<bool>,
    },
    /// MAP: keys and values in two child columns, cut by offsets.
    Map {
        entries: FieldRef,
        keys: Box<ColumnBuilder>,
        values: Box<ColumnBuilder>,
        offsets: Vec<i32>,
        valid: Vec<bool>,
    },
    /// STRUCT: one child column per field.
    Struct {
        fields: Fields,
        /// Upper-cased field names, for case-insensitive JSON lookup.
        upper: Vec<String>,
        children: Vec<ColumnBuilder>,
        valid: Vec<bool>,
    },
    /// A column nothing downstream reads, whose every value is accepted as it is (a
    /// STRING read from text): its values are only counted, and it ends as NULLs.
    Unread {
        ty: DataType,
        len: usize,
    },
}

type DecodeResult = Result<(), String>;

impl ColumnBuilder {
    pub fn new(ty: &SqlType) -> Result<ColumnBuilder, String> {
        Ok(match ty {
            SqlType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::new()),
            SqlType::Integer => ColumnBuilder::Integer(Int32Builder::new()),
            SqlType::Bigint => ColumnBuilder::Bigint(Int64Builder::new()),
            SqlType::Double => ColumnBuilder::Double(Float64Builder::new()),
            SqlType::Decimal { precision, scale } => ColumnBuilder::Decimal(
                Decimal128Builder::new().with_data_type(arrow_type(ty)),
                *precision,
                *scale,
            ),
            SqlType::String => ColumnBuilder::String(StringBuilder::new()),
            SqlType::Bytes => ColumnBuilder::Bytes(BinaryBuilder::new()),
            SqlType::Date => ColumnBuilder::Date(Date32Builder::new()),
            SqlType::Time => ColumnBuilder::Time(Time32MillisecondBuilder::new()),
            SqlType::Timestamp => ColumnBuilder::Timestamp(TimestampMillisecondBuilder::new()),
            SqlType::Array(item) => {
                let DataType::List(field) = arrow_type(ty) else {
                    unreachable!("ARRAY is a List")
                };
                ColumnBuilder::List {
                    field,
                    items: Box::new(ColumnBuilder::new(item)?),
                    offsets: vec![0],
                    valid: Vec::new(),
                }
            }
            SqlType::Map { key, value } => {
                let DataType::Map(entries, _) = arrow_type(ty) else {
                    unreachable!("MAP is a Map")
                };
                ColumnBuilder::Map {
                    entries,
                    keys: Box::new(ColumnBuilder::new(key)?),
                    values: Box::new(ColumnBuilder::new(value)?),
                    offsets: vec![0],
                    valid: Vec::new(),
                }
            }
            SqlType::Struct(struct_fields) => {
                let DataType::Struct(fields) = arrow_type(ty) else {
                    unreachable!("STRUCT is a Struct")
                };
                ColumnBuilder::Struct {
                    fields,
                    upper: struct_fields
                        .iter()
                        .map(|f| f.name.to_uppercase())
                        .collect(),
                    children: struct_fields
                        .iter()
                        .map(|f| ColumnBuilder::new(&f.ty))
                        .collect::<Result<_, _>>()?,
                    valid: Vec::new(),
                }
            }
        })
    }

    pub fn len(&self) -> usize {
        use datafusion_common::arrow::array::ArrayBuilder;
        match self {
            ColumnBuilder::Boolean(b) => b.len(),
            ColumnBuilder::Integer(b) => b.len(),
            ColumnBuilder::Bigint(b) => b.len(),
            ColumnBuilder::Double(b) => b.len(),
            ColumnBuilder::Decimal(b, ..) => b.len(),
            ColumnBuilder::String(b) => b.len(),
            ColumnBuilder::Bytes(b) => b.len(),
            ColumnBuilder::Date(b) => b.len(),
            ColumnBuilder::Time(b) => b.len(),
            ColumnBuilder::Timestamp(b) => b.len(),
            ColumnBuilder::List { valid, .. }
            | ColumnBuilder::Map { valid, .. }
            | ColumnBuilder::Struct { valid, .. } => valid.len(),
            ColumnBuilder::Unread { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Unread { len, .. } => *len += 1,
            ColumnBuilder::Boolean(b) => b.append_null(),
            ColumnBuilder::Integer(b) => b.append_null(),
            ColumnBuilder::Bigint(b) => b.append_null(),
            ColumnBuilder::Double(b) => b.append_null(),
            ColumnBuilder::Decimal(b, ..) => b.append_null(),
            ColumnBuilder::String(b) => b.append_null(),
            ColumnBuilder::Bytes(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::List { offsets, valid, .. }
            | ColumnBuilder::Map { offsets, valid, .. } => {
                offsets.push(*offsets.last().expect("offsets start at 0"));
                valid.push(false);
            }
            ColumnBuilder::Struct {
                children, valid, ..
            } => {
                for c in children {
                    c.append_null();
                }
                valid.push(false);
            }
        }
    }

    /// Finishes the column, leaving the builder empty for the next batch.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Integer(b) => Arc::new(b.finish()),
            ColumnBuilder::Bigint(b) => Arc::new(b.finish()),
            ColumnBuilder::Double(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, ..) => Arc::new(b.finish()),
            ColumnBuilder::String(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::List {
                field,
                items,
                offsets,
                valid,
            } => Arc::new(ListArray::new(
                field.clone(),
                OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into()),
                items.finish(),
                nulls(std::mem::take(valid)),
            )),
            ColumnBuilder::Map {
                entries,
                keys,
                values,
                offsets,
                valid,
            } => {
                let DataType::Struct(fields) = entries.data_type() else {
                    unreachable!("map entries are a struct")
                };
                let entry_array =
                    StructArray::new(fields.clone(), vec![keys.finish(), values.finish()], None);
                Arc::new(MapArray::new(
                    entries.clone(),
                    OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into()),
                    entry_array,
                    nulls(std::mem::take(valid)),
                    false,
                ))
            }
            ColumnBuilder::Struct {
                fields,
                children,
                valid,
                ..
            } => Arc::new(StructArray::new(
                fields.clone(),
                children.iter_mut().map(|c| c.finish()).collect(),
                nulls(std::mem::take(valid)),
            )),
            ColumnBuilder::Unread { ty, len } => new_null_array(ty, std::mem::take(len)),
        }
    }

    /// Drops values appended after `len` (rolls back a half-decoded row).
    pub fn truncate(&mut self, len: usize) {
        // Nested builders first: a failed row may have reached their children only.
        match self {
            ColumnBuilder::List {
                items,
                offsets,
                valid,
                ..
            } => {
                valid.truncate(len);
                offsets.truncate(len + 1);
                items.truncate(offsets[len] as usize);
                return;
            }
            ColumnBuilder::Map {
                keys,
                values,
                offsets,
                valid,
                ..
            } => {
                valid.truncate(len);
                offsets.truncate(len + 1);
                keys.truncate(offsets[len] as usize);
                values.truncate(offsets[len] as usize);
                return;
            }
            ColumnBuilder::Struct {
                children, valid, ..
            } => {
                valid.truncate(len);
                for c in children {
                    c.truncate(len);
                }
                return;
            }
            ColumnBuilder::Unread { len: n, .. } => {
                *n = (*n).min(len);
                return;
            }
            _ => {}
        }
        if self.len() <= len {
            return;
        }
        // Builders cannot shrink: rebuild from the finished prefix. Rare (bad records only).
        let array = self.finish();
        let keep = array.slice(0, len);
        for i in 0..keep.len() {
            self.append_from(&keep, i);
        }
    }

    fn append_from(&mut self, array: &ArrayRef, i: usize) {
        use datafusion_common::arrow::array::{Array, AsArray};
        use datafusion_common::arrow::datatypes::*;
        if array.is_null(i) {
            self.append_null();
            return;
        }
        match self {
            ColumnBuilder::Boolean(b) => b.append_value(array.as_boolean().value(i)),
            ColumnBuilder::Integer(b) => b.append_value(array.as_primitive::<Int32Type>().value(i)),
            ColumnBuilder::Bigint(b) => b.append_value(array.as_primitive::<Int64Type>().value(i)),
            ColumnBuilder::Double(b) => {
                b.append_value(array.as_primitive::<Float64Type>().value(i))
            }
            ColumnBuilder::Decimal(b, ..) => {
                b.append_value(array.as_primitive::<Decimal128Type>().value(i))
            }
            ColumnBuilder::String(b) => b.append_value(array.as_string::<i32>().value(i)),
            ColumnBuilder::Bytes(b) => b.append_value(array.as_binary::<i32>().value(i)),
            ColumnBuilder::Date(b) => b.append_value(array.as_primitive::<Date32Type>().value(i)),
            ColumnBuilder::Time(b) => {
                b.append_value(array.as_primitive::<Time32MillisecondType>().value(i))
            }
            ColumnBuilder::Timestamp(b) => {
                b.append_value(array.as_primitive::<TimestampMillisecondType>().value(i))
            }
            ColumnBuilder::List { .. }
            | ColumnBuilder::Map { .. }
            | ColumnBuilder::Struct { .. }
            | ColumnBuilder::Unread { .. } => {
                unreachable!("nested and unread builders truncate structurally")
            }
        }
    }

    /// Appends a JSON value, coercing as ksqlDB's JSON deserializer does.
    pub fn append_json(&mut self, v: &Value) -> DecodeResult {
        if v.is_null() {
            self.append_null();
            return Ok(());
        }
        match self {
            ColumnBuilder::Unread { len, .. } => *len += 1,
            ColumnBuilder::Boolean(b) => match v {
                Value::Bool(x) => b.append_value(*x),
                Value::String(s) if s.eq_ignore_ascii_case("true") => b.append_value(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => b.append_value(false),
                _ => return Err(mismatch("BOOLEAN", v)),
            },
            ColumnBuilder::Integer(b) => {
                b.append_value(json_integer(v, "INTEGER").and_then(|x| {
                    i32::try_from(x)
                        .map_err(|_| format!("Can't convert {v} to INTEGER: out of range"))
                })?)
            }
            ColumnBuilder::Bigint(b) => b.append_value(json_integer(v, "BIGINT")?),
            ColumnBuilder::Double(b) => b.append_value(match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| mismatch("DOUBLE", v))?,
                Value::String(s) => s.trim().parse().map_err(|_| mismatch("DOUBLE", v))?,
                _ => return Err(mismatch("DOUBLE", v)),
            }),
            ColumnBuilder::Decimal(b, p, s) => {
                let text = match v {
                    Value::Number(n) => n.to_string(),
                    Value::String(t) => t.clone(),
                    _ => return Err(mismatch("DECIMAL", v)),
                };
                b.append_value(parse_decimal(&text, *p, *s)?)
            }
            ColumnBuilder::String(b) => match v {
                Value::String(s) => b.append_value(s),
                // Scalars and nested values become their JSON text, as in ksqlDB.
                other => b.append_value(other.to_string()),
            },
            ColumnBuilder::Bytes(b) => match v {
                Value::String(s) => b.append_value(base64_decode(s)?),
                _ => return Err(mismatch("BYTES", v)),
            },
            ColumnBuilder::Date(b) => {
                let days = json_integer(v, "DATE")?;
                b.append_value(i32::try_from(days).map_err(|_| mismatch("DATE", v))?)
            }
            ColumnBuilder::Time(b) => {
                let ms = json_integer(v, "TIME")?;
                b.append_value(i32::try_from(ms).map_err(|_| mismatch("TIME", v))?)
            }
            ColumnBuilder::Timestamp(b) => b.append_value(json_integer(v, "TIMESTAMP")?),
            ColumnBuilder::List {
                items,
                offsets,
                valid,
                ..
            } => {
                let Value::Array(elements) = v else {
                    return Err(mismatch("ARRAY", v));
                };
                for e in elements {
                    items.append_json(e)?;
                }
                offsets.push(items.len() as i32);
                valid.push(true);
            }
            ColumnBuilder::Map {
                keys,
                values,
                offsets,
                valid,
                ..
            } => {
                let Value::Object(entries) = v else {
                    return Err(mismatch("MAP", v));
                };
                for (k, e) in entries {
                    keys.append_json(&Value::String(k.clone()))?;
                    values.append_json(e)?;
                }
                offsets.push(keys.len() as i32);
                valid.push(true);
            }
            ColumnBuilder::Struct {
                fields,
                upper,
                children,
                valid,
            } => {
                let Value::Object(map) = v else {
                    return Err(mismatch("STRUCT", v));
                };
                for (i, child) in children.iter_mut().enumerate() {
                    let field = map.get(fields[i].name()).or_else(|| {
                        map.iter()
                            .find(|(name, _)| name.to_uppercase() == upper[i])
                            .map(|(_, v)| v)
                    });
                    match field {
                        Some(f) => child.append_json(f)?,
                        None => child.append_null(),
                    }
                }
                valid.push(true);
            }
        }
        Ok(())
    }

    /// Appends a JSON value given as its (valid) text. Strings without escapes, plain
    /// integers, decimals into DOUBLE and booleans go straight in; anything else is parsed
    /// and coerced by `append_json`, which gives the same results, only slower.
    pub fn append_raw_json(&mut self, raw: &str) -> DecodeResult {
        if raw == "null" || matches!(self, ColumnBuilder::Unread { .. }) {
            self.append_null();
            return Ok(());
        }
        let appended = match self {
            ColumnBuilder::String(b) => plain_string(raw).map(|s| b.append_value(s)),
            ColumnBuilder::Bigint(b) => plain_integer(raw).map(|v| b.append_value(v)),
            ColumnBuilder::Timestamp(b) => plain_integer(raw).map(|v| b.append_value(v)),
            ColumnBuilder::Integer(b) => plain_int32(raw).map(|v| b.append_value(v)),
            ColumnBuilder::Date(b) => plain_int32(raw).map(|v| b.append_value(v)),
            ColumnBuilder::Time(b) => plain_int32(raw).map(|v| b.append_value(v)),
            ColumnBuilder::Double(b) => match plain_integer(raw) {
                // As the JSON tree reads it: an integer, then widened.
                Some(v) => {
                    b.append_value(v as f64);
                    Some(())
                }
                // Out of range is an error, which the slow path words.
                None if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => raw
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(|v| b.append_value(v)),
                None => None,
            },
            ColumnBuilder::Boolean(b) => match raw {
                "true" | "false" => {
                    b.append_value(raw == "true");
                    Some(())
                }
                _ => None,
            },
            _ => None,
        };
        if appended.is_some() {
            return Ok(());
        }
        let v: Value =
            serde_json::from_str(raw).map_err(|e| format!("Failed to deserialize JSON: {e}"))?;
        self.append_json(&v)
    }

    /// Appends a DELIMITED field; an empty field is NULL.
    pub fn append_text(&mut self, s: &str) -> DecodeResult {
        if s.is_empty() {
            self.append_null();
            return Ok(());
        }
        let bad = |t: &str| format!("Can't convert '{s}' to {t}");
        match self {
            ColumnBuilder::Boolean(b) => b.append_value(match s.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad("BOOLEAN")),
            }),
            ColumnBuilder::Integer(b) => {
                b.append_value(s.trim().parse().map_err(|_| bad("INTEGER"))?)
            }
            ColumnBuilder::Bigint(b) => {
                b.append_value(s.trim().parse().map_err(|_| bad("BIGINT"))?)
            }
            ColumnBuilder::Double(b) => {
                b.append_value(s.trim().parse().map_err(|_| bad("DOUBLE"))?)
            }
            ColumnBuilder::Decimal(b, p, sc) => b.append_value(parse_decimal(s, *p, *sc)?),
            ColumnBuilder::String(b) => b.append_value(s),
            ColumnBuilder::Unread { len, .. } => *len += 1,
            ColumnBuilder::Bytes(b) => b.append_value(base64_decode(s)?),
            ColumnBuilder::Date(b) => b.append_value(s.trim().parse().map_err(|_| bad("DATE"))?),
            ColumnBuilder::Time(b) => b.append_value(s.trim().parse().map_err(|_| bad("TIME"))?),
            ColumnBuilder::Timestamp(b) => {
                b.append_value(s.trim().parse().map_err(|_| bad("TIMESTAMP"))?)
            }
            ColumnBuilder::List { .. }
            | ColumnBuilder::Map { .. }
            | ColumnBuilder::Struct { .. } => {
                return Err("the DELIMITED format does not support ARRAY, MAP or STRUCT".into());
            }
        }
        Ok(())
    }

    /// Appends a value in the KAFKA format: big-endian binary numbers, UTF-8 strings.
    pub fn append_kafka(&mut self, bytes: &[u8]) -> DecodeResult {
        fn fixed<const N: usize>(bytes: &[u8], t: &str) -> Result<[u8; N], String> {
            bytes.try_into().map_err(|_| {
                format!(
                    "Size of data received by the KAFKA deserializer for {t} is not {N} bytes: {}",
                    bytes.len()
                )
            })
        }
        match self {
            ColumnBuilder::Integer(b) => {
                b.append_value(i32::from_be_bytes(fixed(bytes, "INTEGER")?))
            }
            ColumnBuilder::Bigint(b) => b.append_value(i64::from_be_bytes(fixed(bytes, "BIGINT")?)),
            ColumnBuilder::Double(b) => b.append_value(f64::from_be_bytes(fixed(bytes, "DOUBLE")?)),
            ColumnBuilder::String(b) => b.append_value(
                std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?,
            ),
            ColumnBuilder::Bytes(b) => b.append_value(bytes),
            ColumnBuilder::Unread { len, .. } => *len += 1,
            ColumnBuilder::Boolean(_)
            | ColumnBuilder::Decimal(..)
            | ColumnBuilder::Date(_)
            | ColumnBuilder::Time(_)
            | ColumnBuilder::Timestamp(_)
            | ColumnBuilder::List { .. }
            | ColumnBuilder::Map { .. }
            | ColumnBuilder::Struct { .. } => {
                return Err("the KAFKA format does not support this type".to_string());
            }
        }
        Ok(())
    }
}

/// The contents of a JSON string literal that has no escapes.
fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// A JSON number written as a plain integer that fits a BIGINT.
fn plain_integer(raw: &str) -> Option<i64> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, raw),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated negative, so that i64::MIN fits.
    let mut v: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub((b - b'0') as i64)?;
    }
    if negative { Some(v) } else { v.checked_neg() }
}

fn plain_int32(raw: &str) -> Option<i32> {
    plain_integer(raw).and_then(|v| i32::try_from(v).ok())
}

/// A validity buffer, or none when every value is valid.
fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

fn mismatch(t: &str, v: &Value) -> String {
    let shown = v.to_string();
    let shown = if shown.len() > 100 {
        format!("{}...", &shown[..100])
    } else {
        shown
    };
    format!(
        "Can't convert type. sourceType: {}, requiredType: {t}, value: {shown}",
        json_type(v)
    )
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NullNode",
        Value::Bool(_) => "BooleanNode",
        Value::Number(n) if n.is_f64() => "DoubleNode",
        Value::Number(_) => "IntNode",
        Value::String(_) => "TextNode",
        Value::Array(_) => "ArrayNode",
        Value::Object(_) => "ObjectNode",
    }
}

/// An integer from JSON: a number with a fraction is truncated toward zero, as ksqlDB's
/// JSON deserializer reads it (Jackson's `intValue()`).
fn json_integer(v: &Value, t: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.abs() < 9.2e18)
                    .map(|f| f.trunc() as i64)
            })
            .ok_or_else(|| mismatch(t, v)),
        Value::String(s) => s.trim().parse().map_err(|_| mismatch(t, v)),
        _ => Err(mismatch(t, v)),
    }
}

/// Parses decimal text to an unscaled value of the given scale, rounding half up, and
/// refuses values that do not fit the precision.
pub fn parse_decimal(text: &str, precision: u8, scale: u8) -> Result<i128, String> {
    let t = text.trim();
    let bad = || format!("Can't convert '{text}' to DECIMAL({precision}, {scale})");
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exponent) = match digits.find(['e', 'E']) {
        Some(i) => (
            &digits[..i],
            digits[i + 1..].parse::<i32>().map_err(|_| bad())?,
        ),
        None => (digits, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let all: String = format!("{int}{frac}");
    // value = all * 10^(exponent - frac.len()); we want value * 10^scale.
    let shift = exponent - frac.len() as i32 + scale as i32;
    let mut unscaled: i128 = 0;
    let mut round_up = false;
    let keep = if shift >= 0 {
        all.len()
    } else {
        (all.len() as i32 + shift).max(0) as usize
    };
    for (i, b) in all.bytes().enumerate() {
        if i < keep {
            unscaled = unscaled
                .checked_mul(10)
                .and_then(|u| u.checked_add((b - b'0') as i128))
                .ok_or_else(bad)?;
        } else if i == keep {
            round_up = b >= b'5';
        }
    }
    if shift > 0 {
        for _ in 0..shift {
            unscaled = unscaled.checked_mul(10).ok_or_else(bad)?;
        }
    }
    if round_up {
        unscaled += 1;
    }
    if unscaled >= 10i128.pow(precision as u32) {
        return Err(format!(
            "Numeric field overflow: value {text} does not fit DECIMAL({precision}, {scale})"
        ));
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// Standard base64 (padding optional), as ksqlDB reads BYTES in JSON.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    sluice_registry::base64::decode(s).ok_or_else(|| format!("invalid base64 in BYTES value: {s}"))
}

/// Decodes the key or the value part of records into a set of columns.
pub struct PartDecoder {
    format: Format,
    /// Indexes into the row's builders, in the part's column order.
    columns: Vec<usize>,
    /// Upper-cased names, for case-insensitive JSON field lookup.
    names: Vec<String>,
    exact_names: Vec<String>,
    /// Whether a single column is read bare (not inside an object).
    unwrapped: bool,
    /// Where each column's value was found in the record being decoded.
    spans: Vec<Option<FieldSpan>>,
    /// Whether the fast JSON reader may be used: it needs column names that differ in
    /// more than case.
    scan_fields: bool,
    /// AVRO and PROTOBUF: the writer schemas of the ids records carry.
    writers: WriterSchemas,
    /// The last record failed because the schema registry did not answer.
    unavailable: bool,
    /// PROTOBUF_NOSR: the schema derived from the columns.
    nosr: Option<Writer>,
    /// AVRO: per writer schema id, where each of its record's fields goes.
    avro_plans: HashMap<i32, Option<Arc<AvroPlan>>>,
}

/// An Avro record's fields in order, each with the index (among the part's columns) of
/// the column it fills, if any.
type AvroPlan = Vec<(avro::Schema, Option<usize>)>;

impl PartDecoder {
    pub fn new(format: &Format, columns: &[(usize, &Column)], is_key: bool) -> PartDecoder {
        let unwrapped = format.is_bare(columns.len(), is_key);
        let names: Vec<String> = columns.iter().map(|(_, c)| c.name.to_uppercase()).collect();
        let scan_fields = names
            .iter()
            .enumerate()
            .all(|(i, n)| !names[..i].contains(n));
        PartDecoder {
            format: format.clone(),
            columns: columns.iter().map(|(i, _)| *i).collect(),
            exact_names: columns.iter().map(|(_, c)| c.name.clone()).collect(),
            names,
            unwrapped,
            spans: vec![None; columns.len()],
            scan_fields,
            writers: WriterSchemas::new(None),
            unavailable: false,
            avro_plans: HashMap::new(),
            nosr: (format.kind == FormatKind::ProtobufNosr && !columns.is_empty())
                .then(|| {
                    let typed: Vec<&Column> = columns.iter().map(|(_, c)| *c).collect();
                    nosr_writer(format, &typed, is_key).ok()
                })
                .flatten(),
        }
    }

    /// Looks writer schemas up in `registry` (AVRO).
    pub fn with_registry(mut self, registry: Option<Registry>) -> PartDecoder {
        self.writers = WriterSchemas::new(registry);
        self
    }

    /// Whether the last record failed for want of an answer from the schema registry
    /// rather than for its bytes: it must be read again later, not skipped.
    pub fn unavailable(&self) -> bool {
        self.unavailable
    }

    /// Decodes one key or value into the builders; `None` bytes are a null key/value.
    pub fn decode(&mut self, bytes: Option<&[u8]>, builders: &mut [ColumnBuilder]) -> DecodeResult {
        self.unavailable = false;
        if self.columns.is_empty() {
            return Ok(());
        }
        let Some(bytes) = bytes else {
            for &i in &self.columns {
                builders[i].append_null();
            }
            return Ok(());
        };
        match self.format.kind {
            FormatKind::Json => self.decode_json(bytes, builders),
            FormatKind::Delimited => self.decode_delimited(bytes, builders),
            FormatKind::Kafka => builders[self.columns[0]].append_kafka(bytes),
            FormatKind::None => Ok(()),
            FormatKind::JsonSr => {
                let (_, payload) = unframe(bytes)?;
                self.decode_json(payload, builders)
            }
            FormatKind::Avro | FormatKind::Protobuf => {
                let (id, payload) = unframe(bytes)?;
                let writer = match self.writers.get(id) {
                    Ok(w) => w,
                    Err(LookupError::Unavailable(e)) => {
                        self.unavailable = true;
                        return Err(e);
                    }
                    Err(LookupError::Missing(e)) => return Err(e),
                };
                if let Writer::Avro(schema) = &writer
                    && let Some(plan) = self.avro_plan(id, schema)
                {
                    return self
                        .decode_avro_record(&plan, payload, builders)
                        .map_err(|e| format!("Failed to deserialize AVRO: {e}"));
                }
                let value = read_with(&writer, payload, true)
                    .map_err(|e| format!("Failed to deserialize {}: {e}", self.format.kind))?;
                self.decode_tree(&value, builders)
            }
            FormatKind::ProtobufNosr => {
                let writer = self
                    .nosr
                    .as_ref()
                    .ok_or("PROTOBUF_NOSR without its schema")?;
                let value = read_with(writer, bytes, false)
                    .map_err(|e| format!("Failed to deserialize PROTOBUF_NOSR: {e}"))?;
                self.decode_tree(&value, builders)
            }
        }
    }

    fn decode_json(&mut self, bytes: &[u8], builders: &mut [ColumnBuilder]) -> DecodeResult {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return self.decode_json_tree(bytes, builders);
        };
        if self.unwrapped {
            if let Ok((start, end)) = value_span(text) {
                let appended = builders[self.columns[0]].append_raw_json(&text[start..end]);
                // Errors are worded as for the whole record, as below.
                return appended
                    .map_err(|e| self.decode_json_tree(bytes, builders).err().unwrap_or(e));
            }
        } else if self.scan_fields
            && match_fields(text, &self.exact_names, &self.names, &mut self.spans).is_ok()
        {
            for (span, &col) in self.spans.iter().zip(&self.columns) {
                let Some(s) = span else {
                    builders[col].append_null();
                    continue;
                };
                if let Err(e) = builders[col].append_raw_json(&text[s.start..s.end]) {
                    // Worded as for the whole record (positions count from its start);
                    // the caller rolls back what either attempt appended.
                    return Err(self.decode_json_tree(bytes, builders).err().unwrap_or(e));
                }
            }
            return Ok(());
        }
        self.decode_json_tree(bytes, builders)
    }

    /// Decodes through a `serde_json::Value`: for what the fast reader leaves, and for
    /// bad records, whose error messages come from here.
    fn decode_json_tree(&self, bytes: &[u8], builders: &mut [ColumnBuilder]) -> DecodeResult {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("Failed to deserialize JSON: {e}"))?;
        self.decode_tree(&value, builders)
    }

    /// How the fields of writer schema `id` fill the columns: None when records of it
    /// are read through a JSON tree (a bare column, a schema that is not a record, more
    /// columns than the fast path tracks).
    fn avro_plan(&mut self, id: i32, schema: &avro::Schema) -> Option<Arc<AvroPlan>> {
        if let Some(plan) = self.avro_plans.get(&id) {
            return plan.clone();
        }
        let plan = match schema {
            avro::Schema::Record { fields, .. } if !self.unwrapped && self.columns.len() <= 64 => {
                let mut taken = vec![false; self.columns.len()];
                let plan: AvroPlan = fields
                    .iter()
                    .map(|f| {
                        let upper = f.name.to_uppercase();
                        let column = (0..self.columns.len())
                            .find(|&k| !taken[k] && self.exact_names[k] == f.name)
                            .or_else(|| {
                                (0..self.columns.len())
                                    .find(|&k| !taken[k] && self.names[k] == upper)
                            });
                        if let Some(k) = column {
                            taken[k] = true;
                        }
                        (f.schema.clone(), column)
                    })
                    .collect();
                Some(Arc::new(plan))
            }
            _ => None,
        };
        self.avro_plans.insert(id, plan.clone());
        plan
    }

    /// Reads an Avro record straight into the builders (see `append_avro`); columns the
    /// record has no field for are NULL.
    fn decode_avro_record(
        &self,
        plan: &AvroPlan,
        payload: &[u8],
        builders: &mut [ColumnBuilder],
    ) -> DecodeResult {
        let mut r = avro::Reader::new(payload);
        let mut filled: u64 = 0;
        for (schema, column) in plan {
            match column {
                Some(k) => {
                    append_avro(&mut r, schema, &mut builders[self.columns[*k]])?;
                    filled |= 1 << k;
                }
                None => {
                    r.json(schema)?;
                }
            }
        }
        for (k, &col) in self.columns.iter().enumerate() {
            if filled & (1 << k) == 0 {
                builders[col].append_null();
            }
        }
        Ok(())
    }

    /// Appends a value given as JSON: the bare column, or an object's fields by name
    /// (exactly, else ignoring case).
    fn decode_tree(&self, value: &Value, builders: &mut [ColumnBuilder]) -> DecodeResult {
        if self.unwrapped {
            return builders[self.columns[0]].append_json(value);
        }
        let Value::Object(map) = value else {
            return Err(format!(
                "Can't convert type. sourceType: {}, requiredType: STRUCT, value: {value}",
                json_type(value)
            ));
        };
        for (k, &col) in self.columns.iter().enumerate() {
            let field = map.get(&self.exact_names[k]).or_else(|| {
                map.iter()
                    .find(|(name, _)| name.to_uppercase() == self.names[k])
                    .map(|(_, v)| v)
            });
            match field {
                Some(v) => builders[col].append_json(v)?,
                None => builders[col].append_null(),
            }
        }
        Ok(())
    }

    fn decode_delimited(&self, bytes: &[u8], builders: &mut [ColumnBuilder]) -> DecodeResult {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?;
        let fields = split_delimited(text, self.format.delimiter.unwrap_or(','));
        if fields.len() != self.columns.len() {
            return Err(format!(
                "Unexpected field count, csvFields:{} schemaFields:{}",
                fields.len(),
                self.columns.len()
            ));
        }
        for (field, &col) in fields.iter().zip(&self.columns) {
            builders[col].append_text(field)?;
        }
        Ok(())
    }
}

/// Appends one Avro value: the types that map one to one go straight into the builder,
/// the rest through JSON and its coercions (`append_json`), as the slow path reads them.
fn append_avro(
    r: &mut avro::Reader<'_>,
    schema: &avro::Schema,
    builder: &mut ColumnBuilder,
) -> DecodeResult {
    use avro::Schema as S;
    match (schema, builder) {
        (S::Union(branches), b) => {
            let branch = r.branch(branches)?;
            if *branch == S::Null {
                b.append_null();
                return Ok(());
            }
            append_avro(r, branch, b)
        }
        (S::String, ColumnBuilder::String(b)) => {
            b.append_value(r.string()?);
            Ok(())
        }
        (S::Int | S::Long, ColumnBuilder::Bigint(b)) => {
            b.append_value(r.long()?);
            Ok(())
        }
        (S::Int, ColumnBuilder::Integer(b)) => {
            let v = r.long()?;
            b.append_value(i32::try_from(v).map_err(|_| format!("{v} is not an int"))?);
            Ok(())
        }
        (S::Double, ColumnBuilder::Double(b)) => {
            b.append_value(r.double()?);
            Ok(())
        }
        (S::Float, ColumnBuilder::Double(b)) => {
            b.append_value(f64::from(r.float()?));
            Ok(())
        }
        (S::Boolean, ColumnBuilder::Boolean(b)) => {
            b.append_value(r.boolean()?);
            Ok(())
        }
        (schema, b) => b.append_json(&r.json(schema)?),
    }
}

/// Reads a record's payload as JSON with its writer schema; a PROTOBUF payload starts
/// with the message's indexes when it came `framed` (with a schema id).
fn read_with(writer: &Writer, payload: &[u8], framed: bool) -> Result<Value, String> {
    match writer {
        Writer::Avro(schema) => avro::Reader::new(payload).json(schema),
        Writer::Protobuf(file, path) => {
            let mut r = protobuf::Reader::new(payload);
            let framed_path;
            let path: &[i32] = if framed {
                framed_path = protobuf::read_message_indexes(&mut r)?;
                &framed_path
            } else {
                path
            };
            protobuf::read_message(file.message_at(path)?, r.rest(), false)
        }
        Writer::Json => Err("a JSON schema where a binary one was expected".into()),
    }
}

/// Splits a CSV line, honouring double-quoted fields with `""` escapes.
pub fn split_delimited(text: &str, delimiter: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.is_empty() {
            in_quotes = true;
        } else if c == delimiter {
            fields.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    fields.push(cur);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_with_rounding_and_range_checks() {
        assert_eq!(parse_decimal("12.345", 5, 2), Ok(1235));
        assert_eq!(parse_decimal("-1.5", 3, 1), Ok(-15));
        assert_eq!(parse_decimal("1e2", 5, 1), Ok(1000));
        assert!(parse_decimal("1000", 3, 0).is_err());
        assert!(parse_decimal("abc", 3, 0).is_err());
    }

    #[test]
    fn csv_fields_unquote() {
        assert_eq!(
            split_delimited("a,\"b,c\",,\"d\"\"e\"", ','),
            vec!["a", "b,c", "", "d\"e"]
        );
    }

    #[test]
    fn avro_records_read_straight_into_columns_as_through_the_tree() {
        use serde_json::json;
        use sluice_registry::{MemoryRegistry, RegisteredSchema, SchemaRegistry, SchemaType};
        let schema = json!({"type": "record", "name": "R", "fields": [
            {"name": "s", "type": ["null", "string"]},
            {"name": "i", "type": "int"},
            {"name": "l", "type": ["null", "long"]},
            {"name": "d", "type": "double"},
            {"name": "f", "type": "float"},
            {"name": "b", "type": "boolean"},
            {"name": "skipped", "type": {"type": "array", "items": "string"}},
            {"name": "n", "type": ["null", {"type": "record", "name": "N", "fields": [{"name": "x", "type": "int"}]}]},
            {"name": "i_as_string", "type": "int"}]});
        let registry = Arc::new(MemoryRegistry::new());
        let id = registry
            .register(
                "t-value",
                &RegisteredSchema::new(SchemaType::Avro, schema.to_string()),
            )
            .unwrap();
        let columns = [
            Column::value("S", SqlType::String),
            Column::value("I", SqlType::Bigint),
            Column::value("L", SqlType::Bigint),
            Column::value("D", SqlType::Double),
            Column::value("F", SqlType::Double),
            Column::value("B", SqlType::Boolean),
            Column::value(
                "N",
                SqlType::Struct(vec![sluice_plan::StructField {
                    name: "X".into(),
                    ty: SqlType::Integer,
                }]),
            ),
            Column::value("I_AS_STRING", SqlType::String),
            Column::value("MISSING", SqlType::Integer),
        ];
        let part: Vec<(usize, &Column)> = columns.iter().enumerate().collect();
        let parsed = avro::Schema::from_json(&schema).unwrap();
        let values = [
            json!({"s": "a", "i": 1, "l": 2, "d": 1.5, "f": 0.25, "b": true, "skipped": ["x"], "n": {"x": 3}, "i_as_string": 7}),
            json!({"s": null, "i": -1, "l": null, "d": -0.0, "f": 2.0, "b": false, "skipped": [], "n": null, "i_as_string": -7}),
        ];
        let builders = || -> Vec<ColumnBuilder> {
            columns
                .iter()
                .map(|c| ColumnBuilder::new(&c.ty).unwrap())
                .collect()
        };
        let (mut fast, mut slow) = (builders(), builders());
        let mut decoder = PartDecoder::new(&Format::new(FormatKind::Avro), &part, false)
            .with_registry(Some(registry.clone() as Registry));
        for v in &values {
            let mut bytes = Vec::new();
            sluice_registry::frame(id, &mut bytes);
            avro::write_json(&parsed, v, &mut bytes).unwrap();
            decoder.decode(Some(&bytes), &mut fast).unwrap();
            let tree = avro::Reader::new(&bytes[5..]).json(&parsed).unwrap();
            decoder.decode_tree(&tree, &mut slow).unwrap();
        }
        assert!(decoder.avro_plans[&id].is_some(), "the fast path was taken");
        for (f, s) in fast.iter_mut().zip(slow.iter_mut()) {
            assert_eq!(f.finish().to_data(), s.finish().to_data());
        }
        // A record cut short is an error, not a panic.
        let mut bytes = Vec::new();
        sluice_registry::frame(id, &mut bytes);
        bytes.extend_from_slice(&[2, 4, b'a']);
        assert!(decoder.decode(Some(&bytes), &mut builders()).is_err());
    }

    #[test]
    fn json_scalars_coerce_to_strings() {
        let mut b = ColumnBuilder::new(&SqlType::String).unwrap();
        b.append_json(&serde_json::json!(false)).unwrap();
        b.append_json(&serde_json::json!(1.5)).unwrap();
        let a = b.finish();
        use datafusion_common::arrow::array::AsArray;
        assert_eq!(a.as_string::<i32>().value(0), "false");
        assert_eq!(a.as_string::<i32>().value(1), "1.5");
    }

    /// Decodes `records` with the fast reader and through a `serde_json::Value`, and
    /// returns both results (the columns, or the first error).
    fn both_ways(columns: &[Column], records: &[&str]) -> [Result<Vec<ArrayRef>, String>; 2] {
        let indexed: Vec<(usize, &Column)> = columns.iter().enumerate().collect();
        let format = Format::new(FormatKind::Json);
        [true, false].map(|fast| {
            let mut decoder = PartDecoder::new(&format, &indexed, false);
            let mut builders: Vec<ColumnBuilder> = columns
                .iter()
                .map(|c| ColumnBuilder::new(&c.ty).unwrap())
                .collect();
            for r in records {
                if fast {
                    decoder.decode(Some(r.as_bytes()), &mut builders)?;
                } else {
                    decoder.decode_json_tree(r.as_bytes(), &mut builders)?;
                }
            }
            Ok(builders.iter_mut().map(|b| b.finish()).collect())
        })
    }

    #[test]
    fn the_fast_json_reader_agrees_with_the_json_tree() {
        let columns = [
            Column::value("S", SqlType::String),
            Column::value("i", SqlType::Integer),
            Column::value("B", SqlType::Bigint),
            Column::value("D", SqlType::Double),
            Column::value("F", SqlType::Boolean),
            Column::value("A", SqlType::Array(Box::new(SqlType::Bigint))),
        ];
        let good = [
            r#"{"S":"plain","i":1,"B":-9223372036854775808,"D":1.5,"F":true,"A":[1,2]}"#,
            r#"{"s":"esc\"aped\u00e9","I":"12","b":1.0,"d":-0,"f":"TRUE","a":null}"#,
            r#"{"S":12.50,"i":null,"B":"77","D":3,"D":1e300,"F":false,"x":{"y":[{}]}}"#,
            r#"{"S":{"n":[1,"two"]},"i":-2147483648,"B":4611686018427387904.0,"D":"2.5"}"#,
            r#"{"S":true,"I":1,"i":2,"Ä":3,"D":0.1,"B":9007199254740993}"#,
            r#" {} "#,
            r#"{"S":"dup","S":"last","s":"other"}"#,
            // A fraction into an integer column is truncated, as ksqlDB reads it.
            r#"{"B":1.5,"i":-2.7}"#,
        ];
        let [fast, tree] = both_ways(&columns, &good);
        assert!(fast.is_ok(), "{fast:?}");
        assert_eq!(fast, tree);
        for bad in [
            r#"{"i":2147483648}"#,
            r#"{"D":1e400}"#,
            r#"{"F":"yes"}"#,
            r#"{"S":"x",}"#,
            r#"[1,2]"#,
            r#"{"A":[1,"x"]}"#,
            "{\"S\":\"a\u{1}b\"}",
        ] {
            let [fast, tree] = both_ways(&columns, &[bad]);
            assert!(fast.is_err(), "{bad} decoded");
            assert_eq!(fast, tree, "{bad}");
        }
    }

    #[test]
    fn plain_integers_parse_to_the_limits() {
        assert_eq!(plain_integer("0"), Some(0));
        assert_eq!(plain_integer("-0"), Some(0));
        assert_eq!(plain_integer("9223372036854775807"), Some(i64::MAX));
        assert_eq!(plain_integer("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(plain_integer("9223372036854775808"), None);
        assert_eq!(plain_integer("-"), None);
        assert_eq!(plain_integer("1.5"), None);
        assert_eq!(plain_integer("1e3"), None);
    }

    #[test]
    fn truncate_rolls_back_a_row() {
        let mut b = ColumnBuilder::new(&SqlType::Integer).unwrap();
        b.append_json(&serde_json::json!(1)).unwrap();
        b.append_json(&serde_json::json!(2)).unwrap();
        b.truncate(1);
        assert_eq!(b.finish().len(), 1);
    }
}
