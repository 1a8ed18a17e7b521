//! Arrow columns into Kafka record bytes, written as ksqlDB writes them.

use super::registered::{Writer, json_value, write_record, write_value};
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, StringArray,
};
use datafusion_common::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, Time32MillisecondType,
    TimeUnit, TimestampMillisecondType,
};
use sluice_plan::{Format, FormatKind, format_decimal};
use sluice_registry::{frame, protobuf};
use std::io::Write;

/// Encodes the key or the value part of output rows.
pub struct PartEncoder {
    format: Format,
    /// Indexes of the part's columns in the output batch, and their names.
    columns: Vec<(usize, String)>,
    /// For a JSON object, each column's `"NAME":` with the `{` or `,` before it, written
    /// once here rather than escaped again for every row.
    json_prefixes: Vec<Vec<u8>>,
    unwrapped: bool,
    /// Schema formats: the id of the registered schema the records are written with
    /// (framed in front of each; None for PROTOBUF_NOSR), and the schema.
    writer: Option<(Option<i32>, Writer)>,
}

/// A part's columns resolved against one batch: the type of each column is looked up
/// once per batch, not once per row.
pub struct BatchEncoder<'a> {
    part: &'a PartEncoder,
    columns: Vec<ColumnRef<'a>>,
    /// AVRO: the columns by name, as `write_record` matches them to the schema's fields.
    named: Vec<(&'a str, &'a dyn Array)>,
}

/// An output column, downcast to the types rows are most often made of.
enum ColumnRef<'a> {
    Utf8(&'a StringArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Boolean(&'a BooleanArray),
    Other(&'a ArrayRef),
}

impl<'a> ColumnRef<'a> {
    fn new(a: &'a ArrayRef) -> ColumnRef<'a> {
        match a.data_type() {
            DataType::Utf8 => ColumnRef::Utf8(a.as_string::<i32>()),
            DataType::Int32 => ColumnRef::Int32(a.as_primitive::<Int32Type>()),
            DataType::Int64 => ColumnRef::Int64(a.as_primitive::<Int64Type>()),
            DataType::Boolean => ColumnRef::Boolean(a.as_boolean()),
            _ => ColumnRef::Other(a),
        }
    }

    fn array(&self) -> &dyn Array {
        match self {
            ColumnRef::Utf8(a) => *a,
            ColumnRef::Int32(a) => *a,
            ColumnRef::Int64(a) => *a,
            ColumnRef::Boolean(a) => *a,
            ColumnRef::Other(a) => a.as_ref(),
        }
    }

    fn is_null(&self, row: usize) -> bool {
        self.array().is_null(row)
    }

    fn write_json(&self, out: &mut Vec<u8>, row: usize) {
        if self.is_null(row) {
            out.extend_from_slice(b"null");
            return;
        }
        match self {
            ColumnRef::Utf8(a) => write_json_string(out, a.value(row)),
            ColumnRef::Int32(a) => write_integer(out, a.value(row)),
            ColumnRef::Int64(a) => write_integer(out, a.value(row)),
            ColumnRef::Boolean(a) => {
                out.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
            }
            ColumnRef::Other(a) => write_json(out, a, row),
        }
    }
}

impl PartEncoder {
    pub fn new(format: &Format, columns: Vec<(usize, String)>, is_key: bool) -> PartEncoder {
        let unwrapped = format.is_bare(columns.len(), is_key);
        let json_prefixes = columns
            .iter()
            .enumerate()
            .map(|(n, (_, name))| {
                let mut p = vec![if n == 0 { b'{' } else { b',' }];
                write_json_string(&mut p, name);
                p.push(b':');
                p
            })
            .collect();
        PartEncoder {
            format: format.clone(),
            columns,
            json_prefixes,
            unwrapped,
            writer: None,
        }
    }

    /// Writes records with this schema (see `registered::part_encoder`).
    pub fn with_writer(mut self, id: Option<i32>, writer: Writer) -> PartEncoder {
        self.writer = Some((id, writer));
        self
    }

    /// The part's columns in `arrays`, ready to encode rows of that batch.
    pub fn bind<'a>(&'a self, arrays: &'a [ArrayRef]) -> BatchEncoder<'a> {
        let named = match &self.writer {
            Some((_, Writer::Avro(_))) => self
                .columns
                .iter()
                .map(|(i, name)| (name.as_str(), arrays[*i].as_ref()))
                .collect(),
            _ => Vec::new(),
        };
        BatchEncoder {
            part: self,
            columns: self
                .columns
                .iter()
                .map(|(i, _)| ColumnRef::new(&arrays[*i]))
                .collect(),
            named,
        }
    }

    /// Encodes row `row`; `None` when the part has no columns or (for keys) is all NULL.
    pub fn encode(
        &self,
        arrays: &[ArrayRef],
        row: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<()>, String> {
        self.bind(arrays).encode(row, out)
    }
}

impl BatchEncoder<'_> {
    /// Encodes row `row` into `out` (cleared first); `None` when the part has no columns
    /// or (for keys) is all NULL; an error when the row does not fit the part's
    /// registered schema.
    pub fn encode(&self, row: usize, out: &mut Vec<u8>) -> Result<Option<()>, String> {
        out.clear();
        let part = self.part;
        if self.columns.is_empty() {
            return Ok(None);
        }
        if let Some((id, writer)) = &part.writer {
            if part.unwrapped && self.columns[0].is_null(row) {
                return Ok(None);
            }
            if let Some(id) = id {
                frame(*id, out);
            }
            if let Writer::Protobuf(file, path) = writer {
                if id.is_some() {
                    protobuf::write_message_indexes(out, path);
                }
                let message = file.message_at(path)?;
                let row: serde_json::Map<String, serde_json::Value> = part
                    .columns
                    .iter()
                    .zip(&self.columns)
                    .map(|((_, name), c)| (name.clone(), json_value(c.array(), row)))
                    .collect();
                protobuf::write_message(message, &serde_json::Value::Object(row), out)?;
                return Ok(Some(()));
            }
        }
        match part.format.kind {
            FormatKind::Avro => {
                let Some((_, Writer::Avro(schema))) = &part.writer else {
                    return Err("an AVRO part without its writer schema".into());
                };
                if part.unwrapped {
                    write_value(schema, self.named[0].1, row, out)?;
                } else {
                    write_record(schema, &self.named, row, out)?;
                }
            }
            FormatKind::Json | FormatKind::JsonSr => {
                if part.unwrapped {
                    let c = &self.columns[0];
                    if c.is_null(row) {
                        return Ok(None);
                    }
                    c.write_json(out, row);
                } else {
                    for (c, prefix) in self.columns.iter().zip(&part.json_prefixes) {
                        out.extend_from_slice(prefix);
                        c.write_json(out, row);
                    }
                    out.push(b'}');
                }
            }
            FormatKind::Delimited => {
                let delimiter = part.format.delimiter.unwrap_or(',');
                let mut s = String::new();
                let mut all_null = true;
                for (n, column) in self.columns.iter().enumerate() {
                    if n > 0 {
                        s.push(delimiter);
                    }
                    let a = column.array();
                    if a.is_null(row) {
                        continue;
                    }
                    all_null = false;
                    let text = text_value(a, row);
                    if needs_csv_quotes(&text, delimiter, n == 0) {
                        s.push('"');
                        s.push_str(&text.replace('"', "\"\""));
                        s.push('"');
                    } else {
                        s.push_str(&text);
                    }
                }
                if all_null && part.columns.len() == 1 {
                    return Ok(None);
                }
                out.extend_from_slice(s.as_bytes());
            }
            FormatKind::Kafka => {
                let a = self.columns[0].array();
                if a.is_null(row) {
                    return Ok(None);
                }
                match a.data_type() {
                    DataType::Int32 => out
                        .extend_from_slice(&a.as_primitive::<Int32Type>().value(row).to_be_bytes()),
                    DataType::Int64 => out
                        .extend_from_slice(&a.as_primitive::<Int64Type>().value(row).to_be_bytes()),
                    DataType::Float64 => out.extend_from_slice(
                        &a.as_primitive::<Float64Type>().value(row).to_be_bytes(),
                    ),
                    DataType::Binary => out.extend_from_slice(a.as_binary::<i32>().value(row)),
                    _ => out.extend_from_slice(text_value(a, row).as_bytes()),
                }
            }
            FormatKind::None => return Ok(None),
            other => return Err(format!("the {other} format is not supported yet")),
        }
        Ok(Some(()))
    }
}

fn write_integer(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Apache Commons CSV's minimal quoting, which ksqlDB's DELIMITED format uses: quote an
/// empty first field, a first field not starting with a letter or digit, a field
/// starting with a character up to `#`, one containing the delimiter, a quote or a line
/// break, and one ending in whitespace.
fn needs_csv_quotes(text: &str, delimiter: char, first: bool) -> bool {
    let Some(c) = text.chars().next() else {
        return first;
    };
    (first && !c.is_ascii_alphanumeric())
        || c <= '#'
        || text.contains([delimiter, '"', '\n', '\r'])
        || text.chars().last().is_some_and(|c| c <= ' ')
}

/// A value as ksqlDB prints it in text formats.
pub fn text_value(a: &dyn Array, row: usize) -> String {
    match a.data_type() {
        DataType::Boolean => a.as_boolean().value(row).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => java_double(a.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, s) => {
            format_decimal(a.as_primitive::<Decimal128Type>().value(row), *s as u8)
        }
        DataType::Utf8 => a.as_string::<i32>().value(row).to_string(),
        DataType::Binary => base64_encode(a.as_binary::<i32>().value(row)),
        DataType::Date32 => a.as_primitive::<Date32Type>().value(row).to_string(),
        DataType::Time32(TimeUnit::Millisecond) => a
            .as_primitive::<Time32MillisecondType>()
            .value(row)
            .to_string(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .to_string(),
        other => format!("<{other}>"),
    }
}

/// Writes one value as JSON, as ksqlDB writes it.
pub(crate) fn write_json(s: &mut Vec<u8>, a: &ArrayRef, row: usize) {
    if a.is_null(row) {
        s.extend_from_slice(b"null");
        return;
    }
    match a.data_type() {
        DataType::Utf8 => write_json_string(s, a.as_string::<i32>().value(row)),
        DataType::Binary => write_json_string(s, &base64_encode(a.as_binary::<i32>().value(row))),
        DataType::Float64 => {
            let v = a.as_primitive::<Float64Type>().value(row);
            if v.is_finite() {
                s.extend_from_slice(java_double(v).as_bytes());
            } else {
                // JSON has no NaN or Infinity; Jackson writes them as strings.
                write_json_string(s, &java_double(v));
            }
        }
        DataType::Int32 => write_integer(s, a.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write_integer(s, a.as_primitive::<Int64Type>().value(row)),
        DataType::List(_) => {
            let list = a.as_list::<i32>();
            let items = list.value(row);
            s.push(b'[');
            for i in 0..items.len() {
                if i > 0 {
                    s.push(b',');
                }
                write_json(s, &items, i);
            }
            s.push(b']');
        }
        DataType::Map(..) => {
            let map = a.as_map();
            let entries = map.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            s.push(b'{');
            for i in 0..entries.len() {
                if i > 0 {
                    s.push(b',');
                }
                write_json_string(s, &text_value(keys, i));
                s.push(b':');
                write_json(s, values, i);
            }
            s.push(b'}');
        }
        DataType::Struct(fields) => {
            let st = a.as_struct();
            s.push(b'{');
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    s.push(b',');
                }
                write_json_string(s, f.name());
                s.push(b':');
                write_json(s, st.column(i), row);
            }
            s.push(b'}');
        }
        _ => s.extend_from_slice(text_value(a, row).as_bytes()),
    }
}

/// Writes a JSON string literal, copying the runs that need no escape in one go.
fn write_json_string(s: &mut Vec<u8>, v: &str) {
    s.push(b'"');
    let bytes = v.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            b if b < 0x20 => b"",
            _ => continue,
        };
        s.extend_from_slice(&bytes[run..i]);
        if escaped.is_empty() {
            let _ = write!(s, "\\u{:04x}", b);
        } else {
            s.extend_from_slice(escaped);
        }
        run = i + 1;
    }
    s.extend_from_slice(&bytes[run..]);
    s.push(b'"');
}

/// Formats a double as Java's `Double.toString` does, which is what ksqlDB writes.
pub fn java_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let abs = v.abs();
    if (1e-3..1e7).contains(&abs) {
        let s = format!("{v}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        format!("{mantissa}E{exp}")
    }
}

pub(crate) use sluice_registry::base64::encode as base64_encode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_like_java() {
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(0.5), "0.5");
        assert_eq!(java_double(1e10), "1.0E10");
        assert_eq!(java_double(1.5e-5), "1.5E-5");
        assert_eq!(java_double(1234567.0), "1234567.0");
        assert_eq!(java_double(12345678.0), "1.2345678E7");
    }

    #[test]
    fn csv_quoting_follows_commons_csv() {
        assert!(needs_csv_quotes(" lead", ',', false));
        assert!(needs_csv_quotes("trail\t", ',', false));
        assert!(needs_csv_quotes("a,b", ',', false));
        assert!(needs_csv_quotes("", ',', true));
        assert!(!needs_csv_quotes("", ',', false));
        assert!(!needs_csv_quotes("with white space", ',', false));
        assert!(!needs_csv_quotes("-1", ',', false));
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_encode(b""), "");
    }
}
