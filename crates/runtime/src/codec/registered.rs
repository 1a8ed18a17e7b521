//! Records of the schema-registry formats (AVRO, JSON_SR, PROTOBUF, and PROTOBUF_NOSR,
//! which has the schema but not the registry): the schema a part is written with, writer
//! schemas looked up by the id each record carries, and Arrow values written as Avro.

use super::encode::text_value;
use crate::error::RuntimeError;
use datafusion_common::arrow::array::{Array, AsArray};
use datafusion_common::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, Time32MillisecondType,
    TimestampMillisecondType,
};
use sluice_plan::{Column, Format, FormatKind, key_schema_name, value_schema_name};
use sluice_registry::avro::{self, Schema, write_bytes, write_decimal, write_long};
use sluice_registry::protobuf::{self, ProtoFile};
use sluice_registry::{RegisteredSchema, SchemaRegistry, SchemaType, translate};
use std::collections::HashMap;
use std::sync::Arc;

pub type Registry = Arc<dyn SchemaRegistry>;

/// The kind of schema a format's records are written with.
pub fn schema_type(format: FormatKind) -> Option<SchemaType> {
    match format {
        FormatKind::Avro => Some(SchemaType::Avro),
        FormatKind::JsonSr => Some(SchemaType::Json),
        FormatKind::Protobuf | FormatKind::ProtobufNosr => Some(SchemaType::Protobuf),
        _ => None,
    }
}

/// The schema ksqlDB registers for a part of a source named `source` on its topic.
pub fn derived_schema(
    format: &Format,
    columns: &[&Column],
    is_key: bool,
    source: &str,
) -> Option<RegisteredSchema> {
    let schema_type = schema_type(format.kind)?;
    let unwrapped = format.is_bare(columns.len(), is_key);
    let name = match (&format.full_name, schema_type) {
        (Some(n), _) => n.clone(),
        (None, SchemaType::Avro) if is_key => key_schema_name(source),
        (None, SchemaType::Avro) => value_schema_name(),
        (None, _) => String::new(),
    };
    let typed: Vec<(&str, &sluice_plan::SqlType)> =
        columns.iter().map(|c| (c.name.as_str(), &c.ty)).collect();
    Some(translate::part_schema(
        schema_type,
        &typed,
        unwrapped,
        is_key,
        &name,
        format.protobuf_nullable.as_deref(),
    ))
}

/// A schema records are written with (and read with, for PROTOBUF_NOSR).
#[derive(Clone)]
pub enum Writer {
    Avro(Arc<Schema>),
    Json,
    /// The file, and the path of indexes of the message written (shared: a writer is
    /// cloned out of `WriterSchemas` for each record).
    Protobuf(Arc<ProtoFile>, Arc<[i32]>),
}

impl Writer {
    /// The writer of a registered schema; a PROTOBUF one writes message `full_name`.
    pub fn of(schema: &RegisteredSchema, full_name: Option<&str>) -> Result<Writer, String> {
        Ok(match schema.schema_type {
            SchemaType::Avro => Writer::Avro(Arc::new(Schema::parse(&schema.text)?)),
            SchemaType::Json => Writer::Json,
            SchemaType::Protobuf => {
                let file = protobuf::parse_with_imports(&schema.text, &schema.imports)?;
                let (_, path) = file.message(full_name)?;
                Writer::Protobuf(Arc::new(file), path.into())
            }
        })
    }
}

/// The schema a sink part writes with and its id: the one named by `schema_id`, else
/// the one derived from its columns, registered under the topic's subject. A registry
/// that does not answer is `Unavailable` (the query waits for it, as its reads do).
pub fn writer_schema(
    registry: &Registry,
    format: &Format,
    columns: &[&Column],
    is_key: bool,
    topic: &str,
) -> Result<(i32, Writer), RuntimeError> {
    let failed = |e: sluice_registry::RegistryError, what: &str| match e {
        sluice_registry::RegistryError::Http(_) => RuntimeError::Unavailable(format!("{what}{e}")),
        other => RuntimeError::Plan(format!("{what}{other}")),
    };
    let (id, registered) = match format.schema_id {
        Some(id) => (id, registry.schema(id).map_err(|e| failed(e, ""))?),
        None => {
            let derived = derived_schema(format, columns, is_key, topic).ok_or_else(|| {
                RuntimeError::Plan(format!("the {} format is not supported yet", format.kind))
            })?;
            let subject = sluice_registry::subject(topic, is_key);
            let id = registry
                .register(&subject, &derived)
                .map_err(|e| failed(e, "Could not register schema for topic: "))?;
            (id, derived)
        }
    };
    let writer =
        Writer::of(&registered, format.full_name.as_deref()).map_err(RuntimeError::Plan)?;
    Ok((id, writer))
}

/// Why a writer schema was not found: the registry did not answer (the record must wait),
/// or it has no such schema (the record is bad).
#[derive(Debug)]
pub enum LookupError {
    Unavailable(String),
    Missing(String),
}

/// Writer schemas by id, fetched from the registry once each.
pub struct WriterSchemas {
    registry: Option<Registry>,
    by_id: HashMap<i32, Writer>,
}

impl WriterSchemas {
    pub fn new(registry: Option<Registry>) -> WriterSchemas {
        WriterSchemas {
            registry,
            by_id: HashMap::new(),
        }
    }

    pub fn get(&mut self, id: i32) -> Result<Writer, LookupError> {
        if let Some(s) = self.by_id.get(&id) {
            return Ok(s.clone());
        }
        let registry = self.registry.as_ref().ok_or_else(|| {
            LookupError::Missing(
                "no schema registry is configured (ksql.schema.registry.url)".into(),
            )
        })?;
        let registered = registry.schema(id).map_err(|e| match e {
            sluice_registry::RegistryError::Http(_) => LookupError::Unavailable(e.to_string()),
            other => LookupError::Missing(other.to_string()),
        })?;
        let writer = Writer::of(&registered, None).map_err(LookupError::Missing)?;
        self.by_id.insert(id, writer.clone());
        Ok(writer)
    }
}

/// A row's value as JSON in the shape `avro` and `protobuf` take (decimals as their
/// digits, bytes as base64, dates as days, times and timestamps as milliseconds).
pub fn json_value(a: &dyn Array, row: usize) -> serde_json::Value {
    use serde_json::{Value, json};
    if a.is_null(row) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Boolean => json!(a.as_boolean().value(row)),
        DataType::Int32 => json!(a.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(a.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => json!(a.as_primitive::<Float64Type>().value(row)),
        DataType::Date32 => json!(a.as_primitive::<Date32Type>().value(row)),
        DataType::Time32(_) => json!(a.as_primitive::<Time32MillisecondType>().value(row)),
        DataType::Timestamp(..) => json!(a.as_primitive::<TimestampMillisecondType>().value(row)),
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| json_value(items.as_ref(), i))
                    .collect(),
            )
        }
        DataType::Map(..) => {
            let entries = a.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            Value::Object(
                (0..entries.len())
                    .map(|i| (text_value(keys.as_ref(), i), json_value(values.as_ref(), i)))
                    .collect(),
            )
        }
        DataType::Struct(fields) => {
            let st = a.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(st.columns())
                    .map(|(f, c)| (f.name().clone(), json_value(c.as_ref(), row)))
                    .collect(),
            )
        }
        _ => json!(text_value(a, row)),
    }
}

/// Writes the columns of one row as an Avro record: each field takes the column of its
/// name (exactly, else ignoring case); a field without a column is NULL.
pub fn write_record(
    schema: &Schema,
    columns: &[(&str, &dyn Array)],
    row: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let Schema::Record { fields, .. } = schema.non_null() else {
        return match columns {
            [(_, a)] => write_value(schema, *a, row, out),
            _ => Err(format!(
                "cannot write {} columns with the Avro schema {}",
                columns.len(),
                avro::describe(schema)
            )),
        };
    };
    if schema.is_nullable() {
        // A record that may be null: the value is never null here (that is a tombstone).
        write_union_branch(schema, |b| matches!(b, Schema::Record { .. }), out)?;
    }
    for f in fields {
        let column = columns.iter().find(|(n, _)| *n == f.name).or_else(|| {
            columns
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&f.name))
        });
        let written = match (column, &f.default) {
            // A field the row leaves NULL (or has no column for) that cannot be NULL
            // takes its default, as the schema says.
            (None, Some(d)) => avro::write_json(&f.schema, d, out),
            (Some((_, a)), Some(d)) if a.is_null(row) && !f.schema.is_nullable() => {
                avro::write_json(&f.schema, d, out)
            }
            (Some((_, a)), _) => write_value(&f.schema, *a, row, out),
            (None, None) => write_null(&f.schema, out),
        };
        written.map_err(|e| format!("field {}: {e}", f.name))?;
    }
    Ok(())
}

fn write_union_branch(
    schema: &Schema,
    pick: impl Fn(&Schema) -> bool,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let Schema::Union(branches) = schema else {
        return Ok(());
    };
    let i = branches
        .iter()
        .position(pick)
        .ok_or_else(|| format!("no branch of {} takes the value", avro::describe(schema)))?;
    write_long(out, i as i64);
    Ok(())
}

fn write_null(schema: &Schema, out: &mut Vec<u8>) -> Result<(), String> {
    match schema {
        Schema::Null => Ok(()),
        Schema::Union(_) => write_union_branch(schema, |b| *b == Schema::Null, out),
        other => Err(format!(
            "a NULL cannot be written as Avro {}",
            avro::describe(other)
        )),
    }
}

/// Whether `schema` takes values of Arrow type `t` as they are.
fn takes(schema: &Schema, t: &DataType) -> bool {
    use DataType as D;
    matches!(
        (schema, t),
        (Schema::Boolean, D::Boolean)
            | (Schema::Int, D::Int32)
            | (Schema::Long, D::Int64 | D::Int32)
            | (Schema::Float | Schema::Double, D::Float64)
            | (Schema::String | Schema::Enum { .. }, D::Utf8)
            | (Schema::Bytes | Schema::Fixed { .. }, D::Binary)
            | (Schema::Decimal { .. }, D::Decimal128(..))
            | (Schema::Date, D::Date32)
            | (Schema::TimeMillis | Schema::TimeMicros, D::Time32(_))
            | (
                Schema::TimestampMillis | Schema::TimestampMicros,
                D::Timestamp(..) | D::Int64
            )
            | (Schema::Array(_), D::List(_))
            | (Schema::Map(_), D::Map(..))
            | (Schema::Record { .. }, D::Struct(_))
    )
}

/// Writes value `row` of `a` as `schema`.
pub fn write_value(
    schema: &Schema,
    a: &dyn Array,
    row: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if a.is_null(row) {
        return write_null(schema, out);
    }
    let t = a.data_type();
    let mismatch = || format!("cannot write {t} as Avro {}", avro::describe(schema));
    match schema {
        Schema::Union(branches) => {
            let i = branches
                .iter()
                .position(|b| takes(b, t))
                .or_else(|| branches.iter().position(|b| *b == Schema::String))
                .ok_or_else(mismatch)?;
            write_long(out, i as i64);
            write_value(&branches[i], a, row, out)
        }
        Schema::Null => Err(mismatch()),
        Schema::Boolean => {
            out.push(u8::from(
                a.as_boolean_opt().ok_or_else(mismatch)?.value(row),
            ));
            Ok(())
        }
        Schema::Int
        | Schema::Long
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros => {
            let v: i64 = match t {
                DataType::Int32 => a.as_primitive::<Int32Type>().value(row).into(),
                DataType::Int64 => a.as_primitive::<Int64Type>().value(row),
                DataType::Date32 => a.as_primitive::<Date32Type>().value(row).into(),
                DataType::Time32(_) => a.as_primitive::<Time32MillisecondType>().value(row).into(),
                DataType::Timestamp(..) => a.as_primitive::<TimestampMillisecondType>().value(row),
                _ => return Err(mismatch()),
            };
            let v = match schema {
                Schema::TimeMicros | Schema::TimestampMicros => v * 1000,
                Schema::Int | Schema::Date | Schema::TimeMillis if i32::try_from(v).is_err() => {
                    return Err(format!("{v} does not fit an Avro int"));
                }
                _ => v,
            };
            write_long(out, v);
            Ok(())
        }
        Schema::Float | Schema::Double => {
            let v = match t {
                DataType::Float64 => a.as_primitive::<Float64Type>().value(row),
                DataType::Int32 => a.as_primitive::<Int32Type>().value(row).into(),
                DataType::Int64 => a.as_primitive::<Int64Type>().value(row) as f64,
                _ => return Err(mismatch()),
            };
            if *schema == Schema::Float {
                out.extend_from_slice(&(v as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
            Ok(())
        }
        Schema::String => {
            match t {
                DataType::Utf8 => write_bytes(out, a.as_string::<i32>().value(row).as_bytes()),
                _ => write_bytes(out, text_value(a, row).as_bytes()),
            }
            Ok(())
        }
        Schema::Enum { symbols, .. } => {
            let s = a.as_string_opt::<i32>().ok_or_else(mismatch)?.value(row);
            let i = symbols
                .iter()
                .position(|x| x == s)
                .ok_or_else(|| format!("{s} is not a symbol of the enum"))?;
            write_long(out, i as i64);
            Ok(())
        }
        Schema::Bytes => {
            write_bytes(
                out,
                a.as_binary_opt::<i32>().ok_or_else(mismatch)?.value(row),
            );
            Ok(())
        }
        Schema::Fixed { size, .. } => {
            let b = a.as_binary_opt::<i32>().ok_or_else(mismatch)?.value(row);
            if b.len() != *size {
                return Err(format!("{} bytes do not fit a fixed of {size}", b.len()));
            }
            out.extend_from_slice(b);
            Ok(())
        }
        Schema::Decimal { scale, fixed, .. } => {
            let DataType::Decimal128(_, from) = t else {
                return Err(mismatch());
            };
            let v = a.as_primitive::<Decimal128Type>().value(row);
            let diff = i32::from(*from) - *scale as i32;
            let v = if diff > 0 {
                v / 10i128.pow(diff as u32)
            } else {
                v.checked_mul(10i128.pow((-diff) as u32))
                    .ok_or("a decimal too wide for the schema")?
            };
            write_decimal(out, v, *fixed);
            Ok(())
        }
        Schema::Array(items) => {
            let list = a.as_list_opt::<i32>().ok_or_else(mismatch)?;
            let values = list.value(row);
            if !values.is_empty() {
                write_long(out, values.len() as i64);
                for i in 0..values.len() {
                    write_value(items, values.as_ref(), i, out)?;
                }
            }
            write_long(out, 0);
            Ok(())
        }
        Schema::Map(value_schema) => {
            let map = a.as_map_opt().ok_or_else(mismatch)?;
            let entries = map.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            if !entries.is_empty() {
                write_long(out, entries.len() as i64);
                for i in 0..entries.len() {
                    write_bytes(out, text_value(keys.as_ref(), i).as_bytes());
                    write_value(value_schema, values.as_ref(), i, out)?;
                }
            }
            write_long(out, 0);
            Ok(())
        }
        Schema::Record { .. } => {
            let st = a.as_struct_opt().ok_or_else(mismatch)?;
            let DataType::Struct(fields) = t else {
                return Err(mismatch());
            };
            let columns: Vec<(&str, &dyn Array)> = fields
                .iter()
                .zip(st.columns())
                .map(|(f, c)| (f.name().as_str(), c.as_ref()))
                .collect();
            write_record(schema, &columns, row, out)
        }
    }
}

/// The encoder of a sink's key or value part; a schema-registry format finds (or
/// registers) the schema it writes with.
pub fn part_encoder(
    format: &Format,
    columns: &[(usize, &Column)],
    is_key: bool,
    topic: &str,
    registry: Option<&Registry>,
) -> Result<super::encode::PartEncoder, RuntimeError> {
    let encoder = super::encode::PartEncoder::new(
        format,
        columns.iter().map(|(i, c)| (*i, c.name.clone())).collect(),
        is_key,
    );
    if schema_type(format.kind).is_none() || columns.is_empty() {
        return Ok(encoder);
    }
    let typed: Vec<&Column> = columns.iter().map(|(_, c)| *c).collect();
    if format.kind == FormatKind::ProtobufNosr {
        let writer = nosr_writer(format, &typed, is_key).map_err(RuntimeError::Plan)?;
        return Ok(encoder.with_writer(None, writer));
    }
    let registry = registry.ok_or_else(|| RuntimeError::Plan(no_registry(format.kind)))?;
    let (id, writer) = writer_schema(registry, format, &typed, is_key, topic)?;
    Ok(encoder.with_writer(Some(id), writer))
}

/// PROTOBUF_NOSR's schema: derived from the columns, never registered.
pub fn nosr_writer(format: &Format, columns: &[&Column], is_key: bool) -> Result<Writer, String> {
    let derived = derived_schema(format, columns, is_key, "")
        .ok_or("PROTOBUF_NOSR derives its schema from the columns")?;
    Writer::of(&derived, None)
}

/// ksqlDB's message for a schema-registry format on a server without a registry.
pub fn no_registry(format: FormatKind) -> String {
    format!(
        "Cannot use the {format} format without a schema registry: set 'ksql.schema.registry.url'"
    )
}

/// Registers the schemas of a source declared with its columns, for the parts whose
/// topic has none registered yet (as ksqlDB does for CREATE with columns), so that
/// producers and readers of the topic find them.
pub fn register_declared(
    registry: &dyn SchemaRegistry,
    source: &str,
    topic: &sluice_plan::TopicSpec,
) -> Result<(), String> {
    for (format, kind) in [
        (&topic.key_format, sluice_plan::ColumnKind::Key),
        (&topic.value_format, sluice_plan::ColumnKind::Value),
    ] {
        let is_key = kind == sluice_plan::ColumnKind::Key;
        let columns: Vec<&Column> = topic
            .schema
            .columns
            .iter()
            .filter(|c| c.kind == kind)
            .collect();
        if format.schema_id.is_some() || columns.is_empty() {
            continue;
        }
        let Some(derived) = derived_schema(format, &columns, is_key, source) else {
            continue;
        };
        let subject = sluice_registry::subject(&topic.topic, is_key);
        if registry
            .latest(&subject)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            registry
                .register(&subject, &derived)
                .map_err(|e| format!("Could not register schema for topic: {e}"))?;
        }
    }
    Ok(())
}
