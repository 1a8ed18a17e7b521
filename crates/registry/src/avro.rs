//! Avro schemas (parsed from their JSON text) and Avro's binary encoding.
//!
//! Values cross this module as JSON (`serde_json::Value`): records and maps as objects,
//! unions as the value of their branch, bytes and fixed as base64 text, decimals as
//! their digits, dates as days, times and timestamps as milliseconds. That is the shape
//! the JSON decoder already coerces into SQL columns with ksqlDB's rules, and the shape
//! test cases write their values in.

use serde_json::{Map, Number, Value};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Schema {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record {
        /// The full name (namespace and name).
        name: String,
        fields: Vec<Field>,
    },
    Enum {
        name: String,
        symbols: Vec<String>,
    },
    Array(Box<Schema>),
    Map(Box<Schema>),
    Union(Vec<Schema>),
    Fixed {
        name: String,
        size: usize,
    },
    /// `bytes` (or `fixed` of `size`) holding a two's-complement unscaled value.
    Decimal {
        precision: u32,
        scale: u32,
        fixed: Option<usize>,
    },
    /// `int`: days since the epoch.
    Date,
    /// `int`: milliseconds of the day.
    TimeMillis,
    /// `long`: microseconds of the day.
    TimeMicros,
    /// `long`: milliseconds since the epoch.
    TimestampMillis,
    /// `long`: microseconds since the epoch.
    TimestampMicros,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub schema: Schema,
    /// The value written when a record has none for the field.
    pub default: Option<Value>,
}

type Result<T> = std::result::Result<T, String>;

impl Schema {
    /// Parses a schema's JSON text.
    pub fn parse(text: &str) -> Result<Schema> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("Invalid Avro schema: {e}"))?;
        Schema::from_json(&json)
    }

    pub fn from_json(json: &Value) -> Result<Schema> {
        parse(json, None, &mut HashMap::new())
    }

    /// Whether NULL is one of the schema's values.
    pub fn is_nullable(&self) -> bool {
        match self {
            Schema::Null => true,
            Schema::Union(branches) => branches.contains(&Schema::Null),
            _ => false,
        }
    }

    /// The schema without its NULL branch: `["null", T]` is `T`.
    pub fn non_null(&self) -> &Schema {
        match self {
            Schema::Union(branches) => {
                let mut others = branches.iter().filter(|b| **b != Schema::Null);
                match (others.next(), others.next()) {
                    (Some(only), None) => only,
                    _ => self,
                }
            }
            other => other,
        }
    }
}

fn full_name(obj: &Map<String, Value>, ns: Option<&str>) -> Result<(String, Option<String>)> {
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or("Invalid Avro schema: a named type needs a name")?;
    if name.contains('.') {
        let ns = name.rsplit_once('.').map(|(n, _)| n.to_string());
        return Ok((name.to_string(), ns));
    }
    let ns = obj
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(ns.map(str::to_string))
        .filter(|n| !n.is_empty());
    Ok((
        match &ns {
            Some(ns) => format!("{ns}.{name}"),
            None => name.to_string(),
        },
        ns,
    ))
}

fn parse(json: &Value, ns: Option<&str>, names: &mut HashMap<String, Schema>) -> Result<Schema> {
    match json {
        Value::String(name) => primitive(name)
            .or_else(|| {
                let qualified = ns.map(|ns| format!("{ns}.{name}"));
                qualified
                    .and_then(|q| names.get(&q).cloned())
                    .or_else(|| names.get(name).cloned())
            })
            .ok_or_else(|| format!("Invalid Avro schema: unknown type \"{name}\"")),
        Value::Array(branches) => Ok(Schema::Union(
            branches
                .iter()
                .map(|b| parse(b, ns, names))
                .collect::<Result<_>>()?,
        )),
        Value::Object(obj) => {
            let ty = obj
                .get("type")
                .ok_or("Invalid Avro schema: an object needs a type")?;
            let Value::String(ty) = ty else {
                return parse(ty, ns, names);
            };
            let int = |key: &str| obj.get(key).and_then(Value::as_u64);
            let logical = obj.get("logicalType").and_then(Value::as_str);
            let schema = match (ty.as_str(), logical) {
                ("record" | "error", _) => {
                    let (name, inner_ns) = full_name(obj, ns)?;
                    let mut fields = Vec::new();
                    for f in obj
                        .get("fields")
                        .and_then(Value::as_array)
                        .ok_or("Invalid Avro schema: a record needs fields")?
                    {
                        let fname = f
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or("Invalid Avro schema: a field needs a name")?;
                        let fty = f
                            .get("type")
                            .ok_or("Invalid Avro schema: a field needs a type")?;
                        fields.push(Field {
                            name: fname.to_string(),
                            schema: parse(fty, inner_ns.as_deref(), names)?,
                            default: f.get("default").cloned(),
                        });
                    }
                    let record = Schema::Record {
                        name: name.clone(),
                        fields,
                    };
                    names.insert(name, record.clone());
                    return Ok(record);
                }
                ("enum", _) => {
                    let (name, _) = full_name(obj, ns)?;
                    let symbols = obj
                        .get("symbols")
                        .and_then(Value::as_array)
                        .ok_or("Invalid Avro schema: an enum needs symbols")?
                        .iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect();
                    let e = Schema::Enum {
                        name: name.clone(),
                        symbols,
                    };
                    names.insert(name, e.clone());
                    return Ok(e);
                }
                ("array", _) => Schema::Array(Box::new(parse(
                    obj.get("items")
                        .ok_or("Invalid Avro schema: an array needs items")?,
                    ns,
                    names,
                )?)),
                ("map", _) => Schema::Map(Box::new(parse(
                    obj.get("values")
                        .ok_or("Invalid Avro schema: a map needs values")?,
                    ns,
                    names,
                )?)),
                ("fixed", logical) => {
                    let (name, _) = full_name(obj, ns)?;
                    let size =
                        int("size").ok_or("Invalid Avro schema: fixed needs a size")? as usize;
                    let f = if logical == Some("decimal") {
                        Schema::Decimal {
                            precision: int("precision").unwrap_or(0) as u32,
                            scale: int("scale").unwrap_or(0) as u32,
                            fixed: Some(size),
                        }
                    } else {
                        Schema::Fixed {
                            name: name.clone(),
                            size,
                        }
                    };
                    names.insert(name, f.clone());
                    return Ok(f);
                }
                ("bytes", Some("decimal")) => Schema::Decimal {
                    precision: int("precision").unwrap_or(0) as u32,
                    scale: int("scale").unwrap_or(0) as u32,
                    fixed: None,
                },
                ("int", Some("date")) => Schema::Date,
                ("int", Some("time-millis")) => Schema::TimeMillis,
                ("long", Some("time-micros")) => Schema::TimeMicros,
                ("long", Some("timestamp-millis" | "local-timestamp-millis")) => {
                    Schema::TimestampMillis
                }
                ("long", Some("timestamp-micros" | "local-timestamp-micros")) => {
                    Schema::TimestampMicros
                }
                (name, _) => parse(&Value::String(name.to_string()), ns, names)?,
            };
            Ok(schema)
        }
        other => Err(format!("Invalid Avro schema: {other}")),
    }
}

fn primitive(name: &str) -> Option<Schema> {
    Some(match name {
        "null" => Schema::Null,
        "boolean" => Schema::Boolean,
        "int" => Schema::Int,
        "long" => Schema::Long,
        "float" => Schema::Float,
        "double" => Schema::Double,
        "bytes" => Schema::Bytes,
        "string" => Schema::String,
        _ => return None,
    })
}

// ---- binary encoding ----

/// Appends a long (and an int) as Avro writes it: zig-zag, then 7 bits a byte.
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The minimal big-endian two's-complement bytes of an unscaled decimal.
pub fn decimal_bytes(unscaled: i128) -> Vec<u8> {
    let all = unscaled.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (all[start], all[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    all[start..].to_vec()
}

/// Writes a decimal's unscaled value, as bytes or into a fixed of `size` bytes.
pub fn write_decimal(out: &mut Vec<u8>, unscaled: i128, fixed: Option<usize>) {
    let bytes = decimal_bytes(unscaled);
    match fixed {
        None => write_bytes(out, &bytes),
        Some(size) => {
            let pad = if unscaled < 0 { 0xff } else { 0 };
            out.extend(std::iter::repeat_n(pad, size.saturating_sub(bytes.len())));
            out.extend_from_slice(&bytes[bytes.len().saturating_sub(size)..]);
        }
    }
}

/// Reads Avro binary data.
pub struct Reader<'a> {
    buf: &'a [u8],
    decimal_numbers: bool,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            decimal_numbers: false,
        }
    }

    /// Reads decimals as JSON numbers rather than their exact digits (for comparing with
    /// test cases, which write them as numbers).
    pub fn decimals_as_numbers(mut self) -> Reader<'a> {
        self.decimal_numbers = true;
        self
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn long(&mut self) -> Result<i64> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(TRUNCATED)?;
            self.buf = rest;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err("Invalid Avro data: a varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(TRUNCATED.into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("Invalid Avro data: length {n}"))?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| "Invalid Avro data: a string that is not UTF-8".into())
    }

    pub fn double(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn float(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn boolean(&mut self) -> Result<bool> {
        Ok(self.take(1)?[0] != 0)
    }

    /// Reads a union's branch index and returns that branch.
    pub fn branch<'s>(&mut self, branches: &'s [Schema]) -> Result<&'s Schema> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .and_then(|i| branches.get(i))
            .ok_or_else(|| format!("Invalid Avro data: union branch {i}"))
    }

    /// Reads one block count of an array or map; 0 ends it.
    fn block(&mut self) -> Result<usize> {
        let n = self.long()?;
        if n < 0 {
            self.long()?; // the block's size in bytes
        }
        Ok(n.unsigned_abs() as usize)
    }

    /// Reads one value of `schema` as JSON (see the module's overview).
    pub fn json(&mut self, schema: &Schema) -> Result<Value> {
        Ok(match schema {
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Bool(self.take(1)?[0] != 0),
            Schema::Int | Schema::Long | Schema::Date | Schema::TimeMillis => {
                Value::from(self.long()?)
            }
            Schema::TimestampMillis => Value::from(self.long()?),
            Schema::TimeMicros | Schema::TimestampMicros => {
                Value::from(self.long()?.div_euclid(1000))
            }
            Schema::Float => {
                let v = f32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                number(f64::from(v))
            }
            Schema::Double => number(f64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            Schema::Bytes => Value::String(base64(self.bytes()?)),
            Schema::Fixed { size, .. } => Value::String(base64(self.take(*size)?)),
            Schema::String => Value::String(
                std::str::from_utf8(self.bytes()?)
                    .map_err(|_| "Invalid Avro data: a string that is not UTF-8")?
                    .to_string(),
            ),
            Schema::Decimal { scale, fixed, .. } => {
                let raw = match fixed {
                    None => self.bytes()?,
                    Some(n) => self.take(*n)?,
                };
                let text = decimal_text(raw, *scale)?;
                match serde_json::from_str(&text) {
                    Ok(n) if self.decimal_numbers => n,
                    _ => Value::String(text),
                }
            }
            Schema::Record { fields, .. } => {
                let mut obj = Map::with_capacity(fields.len());
                for f in fields {
                    obj.insert(f.name.clone(), self.json(&f.schema)?);
                }
                Value::Object(obj)
            }
            Schema::Enum { symbols, .. } => {
                let i = self.long()?;
                Value::String(
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| symbols.get(i))
                        .ok_or_else(|| format!("Invalid Avro data: enum index {i}"))?
                        .clone(),
                )
            }
            Schema::Array(items) => {
                let mut out = Vec::new();
                loop {
                    let n = self.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        out.push(self.json(items)?);
                    }
                }
                Value::Array(out)
            }
            Schema::Map(values) => {
                let mut out = Map::new();
                loop {
                    let n = self.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        let k = std::str::from_utf8(self.bytes()?)
                            .map_err(|_| "Invalid Avro data: a map key that is not UTF-8")?
                            .to_string();
                        out.insert(k, self.json(values)?);
                    }
                }
                Value::Object(out)
            }
            Schema::Union(branches) => {
                let i = self.long()?;
                let branch = usize::try_from(i)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or_else(|| format!("Invalid Avro data: union branch {i}"))?;
                self.json(branch)?
            }
        })
    }
}

const TRUNCATED: &str = "Invalid Avro data: the record ends too early";

fn number(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// The digits of an unscaled two's-complement decimal with `scale` decimals.
pub fn decimal_text(raw: &[u8], scale: u32) -> Result<String> {
    if raw.len() > 16 {
        return Err("Invalid Avro data: a decimal wider than 16 bytes".into());
    }
    let mut v: i128 = if raw.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in raw {
        v = (v << 8) | i128::from(*b);
    }
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if v < 0 { "-" } else { "" };
    if scale == 0 {
        return Ok(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{int}.{frac}"))
}

pub(crate) use crate::base64::encode as base64;

pub(crate) fn unbase64(s: &str) -> Result<Vec<u8>> {
    crate::base64::decode(s).ok_or_else(|| format!("invalid base64 text: {s}"))
}

/// The unscaled value of decimal text at `scale` (rounding half up past it).
pub fn unscaled(text: &str, scale: u32) -> Result<i128> {
    let text = text.trim();
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exp) = match digits.split_once(['e', 'E']) {
        Some((m, e)) => (
            m,
            e.parse::<i32>()
                .map_err(|_| format!("not a decimal: {text}"))?,
        ),
        None => (digits, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = format!("{int}{frac}");
    if all.is_empty() || !all.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a decimal: {text}"));
    }
    // The value is all × 10^(exp - frac.len()); scale it to 10^-scale.
    let shift = exp - frac.len() as i32 + scale as i32;
    let mut v: i128 = all
        .parse()
        .map_err(|_| format!("decimal out of range: {text}"))?;
    if shift >= 0 {
        for _ in 0..shift {
            v = v
                .checked_mul(10)
                .ok_or_else(|| format!("decimal out of range: {text}"))?;
        }
    } else {
        let div = 10i128.pow((-shift) as u32);
        v = (v + div / 2) / div;
    }
    Ok(if neg { -v } else { v })
}

/// Writes a JSON value (the module's shape) as `schema`, coercing as a test case's values
/// need: numbers into any numeric schema, scalars into strings.
pub fn write_json(schema: &Schema, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    let mismatch = || format!("cannot write {v} as Avro {}", describe(schema));
    match schema {
        Schema::Null => {
            if !v.is_null() {
                return Err(mismatch());
            }
        }
        Schema::Union(branches) => {
            let branch = if v.is_null() {
                branches.iter().position(|b| *b == Schema::Null)
            } else {
                // The first branch that takes the value.
                let mut found = None;
                for (i, b) in branches.iter().enumerate() {
                    if *b == Schema::Null {
                        continue;
                    }
                    let mut tmp = Vec::new();
                    if write_json(b, v, &mut tmp).is_ok() {
                        write_long(out, i as i64);
                        out.extend_from_slice(&tmp);
                        found = Some(usize::MAX);
                        break;
                    }
                }
                found
            };
            match branch {
                Some(usize::MAX) => {}
                Some(i) => write_long(out, i as i64),
                None => return Err(mismatch()),
            }
        }
        _ if v.is_null() => return Err(mismatch()),
        Schema::Boolean => out.push(u8::from(v.as_bool().ok_or_else(mismatch)?)),
        Schema::Int
        | Schema::Long
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimestampMillis
        | Schema::TimeMicros
        | Schema::TimestampMicros => {
            let n = match v {
                Value::Number(n) => n.as_i64().ok_or_else(mismatch)?,
                Value::String(s) => s.trim().parse().map_err(|_| mismatch())?,
                _ => return Err(mismatch()),
            };
            let n = if matches!(schema, Schema::TimeMicros | Schema::TimestampMicros) {
                n * 1000
            } else {
                n
            };
            if matches!(schema, Schema::Int | Schema::Date | Schema::TimeMillis)
                && i32::try_from(n).is_err()
            {
                return Err(mismatch());
            }
            write_long(out, n);
        }
        Schema::Float | Schema::Double => {
            let f = match v {
                Value::Number(n) => n.as_f64().ok_or_else(mismatch)?,
                Value::String(s) => s.trim().parse().map_err(|_| mismatch())?,
                _ => return Err(mismatch()),
            };
            if *schema == Schema::Float {
                out.extend_from_slice(&(f as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        Schema::String => match v {
            Value::String(s) => write_bytes(out, s.as_bytes()),
            Value::Number(_) | Value::Bool(_) => write_bytes(out, v.to_string().as_bytes()),
            _ => return Err(mismatch()),
        },
        Schema::Bytes => write_bytes(out, &unbase64(v.as_str().ok_or_else(mismatch)?)?),
        Schema::Fixed { size, .. } => {
            let b = unbase64(v.as_str().ok_or_else(mismatch)?)?;
            if b.len() != *size {
                return Err(mismatch());
            }
            out.extend_from_slice(&b);
        }
        Schema::Decimal { scale, fixed, .. } => {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(mismatch()),
            };
            write_decimal(out, unscaled(&text, *scale)?, *fixed);
        }
        Schema::Enum { symbols, .. } => {
            let s = v.as_str().ok_or_else(mismatch)?;
            let i = symbols.iter().position(|x| x == s).ok_or_else(mismatch)?;
            write_long(out, i as i64);
        }
        Schema::Array(items) => {
            let a = v.as_array().ok_or_else(mismatch)?;
            if !a.is_empty() {
                write_long(out, a.len() as i64);
                for e in a {
                    write_json(items, e, out)?;
                }
            }
            write_long(out, 0);
        }
        Schema::Map(values) => {
            let m = v.as_object().ok_or_else(mismatch)?;
            if !m.is_empty() {
                write_long(out, m.len() as i64);
                for (k, e) in m {
                    write_bytes(out, k.as_bytes());
                    write_json(values, e, out)?;
                }
            }
            write_long(out, 0);
        }
        Schema::Record { fields, .. } => {
            let m = v.as_object().ok_or_else(mismatch)?;
            for f in fields {
                let fv = m.get(&f.name).or_else(|| {
                    m.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&f.name))
                        .map(|(_, v)| v)
                });
                let fv = match (fv, &f.default) {
                    (None | Some(Value::Null), Some(d)) if !f.schema.is_nullable() => d,
                    (fv, _) => fv.unwrap_or(&Value::Null),
                };
                write_json(&f.schema, fv, out).map_err(|e| format!("field {}: {e}", f.name))?;
            }
        }
    }
    Ok(())
}

/// A schema's type, as messages name it.
pub fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Record { name, .. } => format!("record {name}"),
        Schema::Enum { name, .. } => format!("enum {name}"),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(b) => format!(
            "union [{}]",
            b.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Schema::Fixed { name, .. } => format!("fixed {name}"),
        Schema::Decimal { .. } => "decimal".into(),
        Schema::Date => "date".into(),
        Schema::TimeMillis | Schema::TimeMicros => "time".into(),
        Schema::TimestampMillis | Schema::TimestampMicros => "timestamp".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(schema: &Value, v: &Value) -> Value {
        let s = Schema::from_json(schema).unwrap();
        let mut out = Vec::new();
        write_json(&s, v, &mut out).unwrap();
        let mut r = Reader::new(&out);
        let back = r.json(&s).unwrap();
        assert_eq!(r.remaining(), 0, "the whole record is read");
        back
    }

    #[test]
    fn longs_use_zig_zag_varints() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 1]),
        ] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(Reader::new(&out).long().unwrap(), v);
        }
        for v in [i64::MIN, i64::MAX, 1 << 40] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(Reader::new(&out).long().unwrap(), v);
        }
    }

    #[test]
    fn records_unions_and_collections_round_trip() {
        let schema = json!({"type": "record", "name": "R", "namespace": "n", "fields": [
            {"name": "a", "type": ["null", "int"]},
            {"name": "s", "type": "string"},
            {"name": "arr", "type": {"type": "array", "items": ["null", "string"]}},
            {"name": "m", "type": {"type": "map", "values": "long"}},
            {"name": "inner", "type": ["null", {"type": "record", "name": "I", "fields": [
                {"name": "x", "type": "double"}]}]},
            {"name": "again", "type": ["null", "I"]},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}}
        ]});
        let v = json!({"a": null, "s": "héllo", "arr": ["x", null], "m": {"k": -5},
            "inner": {"x": 1.5}, "again": null, "e": "B"});
        assert_eq!(round_trip(&schema, &v), v);
        // Field names match ignoring case, as ksqlDB's upper-cased columns need.
        let upper = json!({"A": 3, "S": "", "ARR": [], "M": {}, "INNER": null, "AGAIN": {"x": 2.0}, "E": "A"});
        assert_eq!(
            round_trip(&schema, &upper),
            json!({"a": 3, "s": "", "arr": [], "m": {}, "inner": null, "again": {"x": 2.0}, "e": "A"})
        );
    }

    #[test]
    fn logical_types_read_as_their_sql_values() {
        let dec = json!({"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2});
        assert_eq!(round_trip(&dec, &json!(-12.5)), json!("-12.50"));
        assert_eq!(round_trip(&dec, &json!("0.01")), json!("0.01"));
        assert_eq!(decimal_bytes(255), vec![0, 255]);
        assert_eq!(decimal_bytes(-1), vec![255]);
        assert_eq!(decimal_bytes(-129), vec![255, 127]);
        let fixed = json!({"type": "fixed", "name": "F", "size": 4, "logicalType": "decimal", "precision": 4, "scale": 1});
        assert_eq!(round_trip(&fixed, &json!(-3.3)), json!("-3.3"));
        let date = json!({"type": "int", "logicalType": "date"});
        assert_eq!(round_trip(&date, &json!(-10)), json!(-10));
        let micros = json!({"type": "long", "logicalType": "timestamp-micros"});
        assert_eq!(round_trip(&micros, &json!(1234)), json!(1234));
        assert_eq!(round_trip(&json!("bytes"), &json!("AQID")), json!("AQID"));
        assert_eq!(unscaled("1.005", 2).unwrap(), 101);
        assert_eq!(unscaled("1e2", 1).unwrap(), 1000);
    }

    #[test]
    fn scalars_coerce_into_strings_and_numbers() {
        assert_eq!(round_trip(&json!("string"), &json!(10)), json!("10"));
        assert_eq!(round_trip(&json!("long"), &json!("7")), json!(7));
        assert_eq!(
            round_trip(&json!(["null", "int", "string"]), &json!("x")),
            json!("x")
        );
        let s = Schema::from_json(&json!("int")).unwrap();
        assert!(write_json(&s, &json!(1u64 << 40), &mut Vec::new()).is_err());
        assert!(write_json(&s, &Value::Null, &mut Vec::new()).is_err());
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        let s = Schema::from_json(&json!({"type": "record", "name": "R", "fields": [
            {"name": "s", "type": "string"}, {"name": "u", "type": ["null", "int"]}]}))
        .unwrap();
        for bytes in [&[][..], &[10, b'a'], &[0, 9], &[0xff; 12]] {
            assert!(Reader::new(bytes).json(&s).is_err(), "{bytes:?}");
        }
        assert!(Schema::parse("{\"type\": \"nope\"}").is_err());
        assert!(Schema::parse("not json").is_err());
    }
}
