//! JSON functions, and values written as Java (and Jackson) write them: TO_JSON_STRING and
//! the text of an element for ARRAY_JOIN.

use super::{Body, Kernel, bools_of, i32s_of, opt_str, str_at, string_lists_of, strings_of};
use datafusion_common::arrow::array::{Array, ArrayRef, AsArray};
use datafusion_common::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Time32MillisecondType, TimeUnit, TimestampMillisecondType,
};
use datafusion_common::{Result, exec_err};
use serde_json::Value;
use std::sync::Arc;

pub(super) const NAMES: &[&str] = &[
    "EXTRACTJSONFIELD",
    "IS_JSON_STRING",
    "JSON_ARRAY_LENGTH",
    "JSON_ARRAY_CONTAINS",
    "JSON_CONCAT",
    "JSON_KEYS",
    "JSON_ITEMS",
    "JSON_RECORDS",
    "TO_JSON_STRING",
];

pub(super) fn lookup(name: &str, args: &[DataType]) -> Option<(Body, DataType)> {
    let string_list = DataType::List(Arc::new(datafusion_common::arrow::datatypes::Field::new(
        "item",
        DataType::Utf8,
        true,
    )));
    let (kernel, returns): (Kernel, DataType) = match name {
        "EXTRACTJSONFIELD" => (extract_json_field, DataType::Utf8),
        "IS_JSON_STRING" => (
            |a, rows| {
                let s = str_at(a, 0);
                bools_of(rows, |r| {
                    Some(opt_str(s, r).is_some_and(|s| serde_json::from_str::<Value>(s).is_ok()))
                })
            },
            DataType::Boolean,
        ),
        "JSON_ARRAY_LENGTH" => (
            |a, rows| {
                let s = str_at(a, 0);
                i32s_of(rows, |r| match parse(opt_str(s, r)?)? {
                    Value::Array(items) => Some(items.len() as i32),
                    _ => None,
                })
            },
            DataType::Int32,
        ),
        "JSON_ARRAY_CONTAINS" => (json_array_contains, DataType::Boolean),
        "JSON_CONCAT" => (json_concat, DataType::Utf8),
        "JSON_KEYS" => (
            |a, rows| {
                let s = str_at(a, 0);
                string_lists_of(rows, |r| match parse(opt_str(s, r)?)? {
                    Value::Object(o) => Some(o.keys().map(|k| Some(k.clone())).collect()),
                    _ => None,
                })
            },
            string_list,
        ),
        "JSON_ITEMS" => (
            |a, rows| {
                let s = str_at(a, 0);
                string_lists_of(rows, |r| match parse(opt_str(s, r)?)? {
                    Value::Array(items) => {
                        Some(items.iter().map(|v| Some(v.to_string())).collect())
                    }
                    _ => None,
                })
            },
            string_list,
        ),
        "JSON_RECORDS" => (json_records, super::types_of_string_map()),
        "TO_JSON_STRING" if !args.is_empty() => (
            |a, rows| {
                let mut out = Vec::with_capacity(rows);
                for r in 0..rows {
                    let mut s = String::new();
                    write_json(&mut s, &a[0], r)?;
                    out.push(Some(s));
                }
                strings_of(rows, |r| out[r].take())
            },
            DataType::Utf8,
        ),
        _ => return None,
    };
    Some((Body::Plain(kernel), returns))
}

fn parse(s: &str) -> Option<Value> {
    serde_json::from_str(s).ok()
}

/// A step of a JSONPath: `.name`, `['name']` or `[index]`.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
}

/// `$.a.b[0]['c']`; `None` for a path that cannot be read.
fn json_path(path: &str) -> Option<Vec<Step>> {
    let mut rest = path.trim().strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            let quoted = inner
                .strip_prefix('\'')
                .and_then(|i| i.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')));
            steps.push(match quoted {
                Some(k) => Step::Key(k.to_string()),
                None => Step::Index(inner.parse().ok()?),
            });
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Finds the raw text of the value at `steps` in the JSON text `s`, keeping numbers as
/// they are written.
fn raw_at<'a>(s: &'a str, steps: &[Step]) -> Option<&'a str> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(s.trim());
    };
    let mut p = Scanner { s, i: 0 };
    p.ws();
    match step {
        Step::Key(k) => {
            p.eat(b'{')?;
            loop {
                p.ws();
                if p.peek()? == b'}' {
                    return None;
                }
                let key_start = p.i;
                p.skip_value()?;
                let key: String = serde_json::from_str(&s[key_start..p.i]).ok()?;
                p.ws();
                p.eat(b':')?;
                p.ws();
                let start = p.i;
                p.skip_value()?;
                if key == *k {
                    return raw_at(&s[start..p.i], rest);
                }
                p.ws();
                if p.peek()? == b',' {
                    p.i += 1;
                } else {
                    return None;
                }
            }
        }
        Step::Index(n) => {
            let n = usize::try_from(*n).ok()?;
            p.eat(b'[')?;
            let mut at = 0;
            loop {
                p.ws();
                if p.peek()? == b']' {
                    return None;
                }
                let start = p.i;
                p.skip_value()?;
                if at == n {
                    return raw_at(&s[start..p.i], rest);
                }
                at += 1;
                p.ws();
                if p.peek()? == b',' {
                    p.i += 1;
                } else {
                    return None;
                }
            }
        }
    }
}

/// A minimal cursor over JSON text, skipping whole values.
struct Scanner<'a> {
    s: &'a str,
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                loop {
                    match self.peek()? {
                        b'\\' => self.i += 2,
                        b'"' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => self.i += 1,
                    }
                }
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                loop {
                    self.ws();
                    match self.peek()? {
                        c if c == close => {
                            self.i += 1;
                            return Some(());
                        }
                        b',' | b':' => self.i += 1,
                        _ => self.skip_value()?,
                    }
                }
            }
            _ => {
                let start = self.i;
                while self.peek().is_some_and(|b| {
                    !matches!(b, b',' | b'}' | b']' | b':') && !b.is_ascii_whitespace()
                }) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

/// EXTRACTJSONFIELD(json, path): a string value unquoted, any other value as JSON text;
/// NULL when the path is missing, the value is null, or the text is not JSON.
fn extract_json_field(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, p) = (str_at(a, 0), str_at(a, 1));
    strings_of(rows, |r| {
        let text = opt_str(s, r)?;
        // The document must be valid up to its first value.
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        stream.next()?.ok()?;
        let raw = raw_at(text, &json_path(opt_str(p, r)?)?)?;
        match serde_json::from_str::<Value>(raw).ok()? {
            Value::Null => None,
            Value::String(v) => Some(v),
            Value::Number(_) | Value::Bool(_) => Some(raw.to_string()),
            v => Some(v.to_string()),
        }
    })
}

/// JSON_ARRAY_CONTAINS(json, value): whether the JSON array has an element equal to the
/// value (numbers by value, of the value's kind).
fn json_array_contains(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = str_at(a, 0);
    let wanted: Vec<Option<Value>> = (0..a[1].len())
        .map(|r| {
            let mut t = String::new();
            write_json(&mut t, &a[1], r).ok()?;
            serde_json::from_str(&t).ok()
        })
        .collect();
    let floating = matches!(a[1].data_type(), DataType::Float64);
    bools_of(rows, |r| {
        let Some(Value::Array(items)) = opt_str(s, r).and_then(parse) else {
            return Some(false);
        };
        let want = wanted[r].as_ref().unwrap_or(&Value::Null);
        Some(items.iter().any(|v| match (v, want) {
            (Value::Number(x), Value::Number(y)) => {
                if floating {
                    x.as_f64() == y.as_f64()
                } else {
                    x.as_i64().is_some() && x.as_i64() == y.as_i64()
                }
            }
            (x, y) => x == y,
        }))
    })
}

/// JSON_CONCAT: objects merge (later keys win), anything else concatenates as arrays (a
/// value that is not an array counts as a one-element array). NULL or invalid JSON
/// arguments give NULL.
fn json_concat(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let cols: Vec<_> = a.iter().map(|x| x.as_string::<i32>()).collect();
    strings_of(rows, |r| {
        let values: Vec<Value> = cols
            .iter()
            .map(|c| parse(opt_str(c, r)?))
            .collect::<Option<_>>()?;
        let out = if values.iter().all(Value::is_object) {
            let mut merged = serde_json::Map::new();
            for v in values {
                if let Value::Object(o) = v {
                    for (k, v) in o {
                        merged.insert(k, v);
                    }
                }
            }
            Value::Object(merged)
        } else {
            let mut items = Vec::new();
            for v in values {
                match v {
                    Value::Array(a) => items.extend(a),
                    other => items.push(other),
                }
            }
            Value::Array(items)
        };
        Some(out.to_string())
    })
}

fn json_records(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = str_at(a, 0);
    let mut b = super::string_map_builder();
    for r in 0..rows {
        match opt_str(s, r).and_then(parse) {
            Some(Value::Object(o)) => {
                for (k, v) in o {
                    b.keys().append_value(k);
                    b.values().append_value(v.to_string());
                }
                b.append(true)?;
            }
            _ => b.append(false)?,
        }
    }
    Ok(Arc::new(b.finish()))
}

/// Java's `Double.toString`: plain between 10^-3 and 10^7, else computerized scientific
/// notation; always a fractional part.
pub(super) fn java_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = v.abs();
    if v == 0.0 || (1e-3..1e7).contains(&abs) {
        return format!("{v:?}");
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exp}")
}

/// The unscaled value of a DECIMAL as `BigDecimal.toString` prints it (plain notation).
fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return format!("{}{}", v, "0".repeat((-scale) as usize));
    }
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale - digits.len() + 1))
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

fn time_text(ms: i64) -> String {
    let ms = ms.rem_euclid(86_400_000);
    let (h, m, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if f == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{f:03}")
    }
}

fn date_text(days: i32) -> Option<String> {
    let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
        .checked_add_signed(chrono::Duration::days(days as i64))?;
    Some(d.format("%Y-%m-%d").to_string())
}

fn timestamp_text(ms: i64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_millis(ms)?;
    Some(t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
}

/// The text of a primitive element as Java's `toString` gives it; `None` for NULL.
pub(super) fn java_text(a: &ArrayRef, i: usize) -> Result<Option<String>> {
    if a.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::Binary => super::strings::base64(a.as_binary::<i32>().value(i)),
        DataType::Float64 => java_double(a.as_primitive::<Float64Type>().value(i)),
        DataType::Float32 => java_double(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Date32 => date_text(a.as_primitive::<Date32Type>().value(i)).unwrap_or_default(),
        DataType::Time32(TimeUnit::Millisecond) => {
            time_text(a.as_primitive::<Time32MillisecondType>().value(i) as i64)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            timestamp_text(a.as_primitive::<TimestampMillisecondType>().value(i))
                .unwrap_or_default()
        }
        _ => {
            let mut s = String::new();
            write_json(&mut s, a, i)?;
            s
        }
    }))
}

/// Writes element `i` of `a` as JSON, as ksqlDB's TO_JSON_STRING does.
pub(super) fn write_json(out: &mut String, a: &ArrayRef, i: usize) -> Result<()> {
    if a.is_null(i) {
        out.push_str("null");
        return Ok(());
    }
    let quoted = |out: &mut String, s: &str| {
        out.push_str(&Value::String(s.to_string()).to_string());
    };
    match a.data_type() {
        DataType::Null => out.push_str("null"),
        DataType::Boolean => out.push_str(if a.as_boolean().value(i) {
            "true"
        } else {
            "false"
        }),
        DataType::Int8 => out.push_str(&a.as_primitive::<Int8Type>().value(i).to_string()),
        DataType::Int16 => out.push_str(&a.as_primitive::<Int16Type>().value(i).to_string()),
        DataType::Int32 => out.push_str(&a.as_primitive::<Int32Type>().value(i).to_string()),
        DataType::Int64 => out.push_str(&a.as_primitive::<Int64Type>().value(i).to_string()),
        DataType::Float32 | DataType::Float64 => {
            let v = match a.data_type() {
                DataType::Float32 => a.as_primitive::<Float32Type>().value(i) as f64,
                _ => a.as_primitive::<Float64Type>().value(i),
            };
            if v.is_finite() {
                out.push_str(&java_double(v));
            } else {
                quoted(out, &java_double(v));
            }
        }
        DataType::Decimal128(_, s) => out.push_str(&decimal_text(
            a.as_primitive::<Decimal128Type>().value(i),
            *s,
        )),
        DataType::Utf8 => quoted(out, a.as_string::<i32>().value(i)),
        DataType::Binary | DataType::Date32 | DataType::Time32(_) | DataType::Timestamp(..) => {
            let text = java_text(a, i)?.unwrap_or_default();
            quoted(out, &text);
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let items = l.value(i);
            out.push('[');
            for j in 0..items.len() {
                if j > 0 {
                    out.push(',');
                }
                write_json(out, &items, j)?;
            }
            out.push(']');
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            out.push('{');
            for (j, f) in fields.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                quoted(out, f.name());
                out.push(':');
                write_json(out, s.column(j), i)?;
            }
            out.push('}');
        }
        DataType::Map(..) => {
            let m = a.as_map();
            let o = m.value_offsets();
            let (keys, values) = (m.keys(), m.values());
            out.push('{');
            for (n, j) in (o[i] as usize..o[i + 1] as usize).enumerate() {
                if n > 0 {
                    out.push(',');
                }
                let key = java_text(keys, j)?.unwrap_or_else(|| "null".into());
                quoted(out, &key);
                out.push(':');
                write_json(out, values, j)?;
            }
            out.push('}');
        }
        other => return exec_err!("TO_JSON_STRING of {other} is not supported"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::test_support::{s, strings, texts};
    use datafusion_common::arrow::array::{Float64Array, ListArray};

    #[test]
    fn paths_read_dots_brackets_and_indexes() {
        assert_eq!(
            json_path("$.a['b c'][2]"),
            Some(vec![
                Step::Key("a".into()),
                Step::Key("b c".into()),
                Step::Index(2)
            ])
        );
        assert_eq!(json_path("a.b"), None);
    }

    #[test]
    fn extract_keeps_number_text_and_unquotes_strings() {
        let doc = r#"{"a": {"b": [1.50, "x", {"c": true}]}, "n": null}"#;
        let run = |path: &str| {
            let out =
                extract_json_field(&[strings(&[Some(doc)]), strings(&[Some(path)])], 1).unwrap();
            texts(&out).pop().unwrap()
        };
        assert_eq!(run("$.a.b[0]"), s("1.50"));
        assert_eq!(run("$.a.b[1]"), s("x"));
        assert_eq!(run("$.a.b[2]"), s(r#"{"c":true}"#));
        assert_eq!(run("$.a.b[3]"), None);
        assert_eq!(run("$.a.b[-1]"), None);
        assert_eq!(run("$.n"), None);
        assert_eq!(run("$.missing"), None);
    }

    #[test]
    fn concat_merges_objects_and_joins_arrays() {
        let out = json_concat(
            &[
                strings(&[Some(r#"{"a":1}"#), Some("[1]"), Some("1"), None]),
                strings(&[
                    Some(r#"{"a":2,"b":3}"#),
                    Some(r#"{"x":1}"#),
                    Some("2"),
                    Some("1"),
                ]),
            ],
            4,
        )
        .unwrap();
        assert_eq!(
            texts(&out),
            vec![s(r#"{"a":2,"b":3}"#), s(r#"[1,{"x":1}]"#), s("[1,2]"), None]
        );
    }

    #[test]
    fn java_numbers() {
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(123.456), "123.456");
        assert_eq!(java_double(1e7), "1.0E7");
        assert_eq!(java_double(1.5e-4), "1.5E-4");
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(time_text(60_220_000), "16:43:40");
        assert_eq!(timestamp_text(0).unwrap(), "1970-01-01T00:00:00.000");
    }

    #[test]
    fn to_json_writes_nested_values() {
        let l: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
        ]));
        let mut out = String::new();
        write_json(&mut out, &l, 0).unwrap();
        assert_eq!(out, "[1,null]");
        let d: ArrayRef = Arc::new(Float64Array::from(vec![2.0]));
        out.clear();
        write_json(&mut out, &d, 0).unwrap();
        assert_eq!(out, "2.0");
    }

    #[test]
    fn array_contains_compares_by_kind() {
        let docs = strings(&[Some("[1, \"a\"]"), Some("[1.5]"), Some("oops")]);
        let ints: ArrayRef = Arc::new(datafusion_common::arrow::array::Int32Array::from(vec![
            1, 1, 1,
        ]));
        let out = json_array_contains(&[docs, ints], 3).unwrap();
        let out = out.as_boolean();
        assert_eq!(
            (out.value(0), out.value(1), out.value(2)),
            (true, false, false)
        );
    }
}
