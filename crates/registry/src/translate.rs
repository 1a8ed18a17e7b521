//! SQL columns to the schemas ksqlDB registers for them, and registered schemas back to
//! SQL columns (schema inference), for AVRO and JSON_SR.

use crate::avro::Schema;
use crate::{RegisteredSchema, SchemaType};
use serde_json::{Value, json};
#[cfg(test)]
use sluice_plan::{SCHEMA_NAMESPACE, key_schema_name, value_schema_name};
use sluice_plan::{SqlType, StructField};

/// The schema registered for a key or value part with these columns: one column read
/// bare (`unwrapped`) is its type's schema; otherwise a record (AVRO) or object (JSON_SR)
/// with a field per column. None for formats without a registry.
///
/// A PROTOBUF schema is always a message, named by the last part of `full_name` (else
/// `ConnectDefault1`), its fields plain proto3 fields unless `protobuf_nullable` says
/// `OPTIONAL` or `WRAPPER`.
pub fn part_schema(
    schema_type: SchemaType,
    columns: &[(&str, &SqlType)],
    unwrapped: bool,
    is_key: bool,
    full_name: &str,
    protobuf_nullable: Option<&str>,
) -> RegisteredSchema {
    let text = match schema_type {
        SchemaType::Avro => avro_part(columns, unwrapped, is_key, full_name).to_string(),
        SchemaType::Json => json_part(columns, unwrapped).to_string(),
        SchemaType::Protobuf => proto_part(columns, full_name, protobuf_nullable),
    };
    RegisteredSchema::new(schema_type, text)
}

fn proto_part(columns: &[(&str, &SqlType)], full_name: &str, nullable: Option<&str>) -> String {
    let (package, name) = match full_name.rsplit_once('.') {
        Some((package, name)) => (Some(package), Some(name)),
        None => (None, Some(full_name).filter(|n| !n.is_empty())),
    };
    let mut writer = ProtoWriter {
        imports: std::collections::BTreeSet::new(),
        next: 2,
        nullable: nullable.map(str::to_ascii_uppercase),
    };
    let fields: Vec<(String, &SqlType)> =
        columns.iter().map(|(n, t)| (n.to_string(), *t)).collect();
    let body = writer.message(name.unwrap_or("ConnectDefault1"), &fields, 0);
    let imports: String = writer
        .imports
        .iter()
        .map(|i| format!("import \"{i}\";\n"))
        .collect();
    let imports = if imports.is_empty() {
        imports
    } else {
        format!("{imports}\n")
    };
    let package = package
        .map(|p| format!("package {p};\n\n"))
        .unwrap_or_default();
    format!("syntax = \"proto3\";\n\n{package}{imports}{body}")
}

/// Writes `.proto` text for SQL columns as Kafka Connect's protobuf converter names
/// things: nested messages `ConnectDefault2`, `ConnectDefault3`, ... inside their parent.
struct ProtoWriter {
    imports: std::collections::BTreeSet<&'static str>,
    next: usize,
    nullable: Option<String>,
}

/// How a field is declared: its label (`optional `, `repeated `), type, and options.
struct ProtoType {
    label: &'static str,
    name: String,
    options: String,
}

impl ProtoWriter {
    fn message(&mut self, name: &str, fields: &[(String, &SqlType)], depth: usize) -> String {
        let pad = "  ".repeat(depth);
        let mut out = format!("{pad}message {name} {{\n");
        let mut nested = Vec::new();
        for (i, (field, ty)) in fields.iter().enumerate() {
            let t = self.field_type(ty, depth, &mut nested);
            out.push_str(&format!(
                "{pad}  {}{} {field} = {}{};\n",
                t.label,
                t.name,
                i + 1,
                t.options
            ));
        }
        for n in nested {
            out.push('\n');
            out.push_str(&n);
        }
        out.push_str(&format!("{pad}}}\n"));
        out
    }

    fn field_type(&mut self, ty: &SqlType, depth: usize, nested: &mut Vec<String>) -> ProtoType {
        let plain = |name: String| ProtoType {
            label: "",
            name,
            options: String::new(),
        };
        let (primitive, wrapper) = match ty {
            SqlType::Boolean => ("bool", "BoolValue"),
            SqlType::Integer => ("int32", "Int32Value"),
            SqlType::Bigint => ("int64", "Int64Value"),
            SqlType::Double => ("double", "DoubleValue"),
            SqlType::String => ("string", "StringValue"),
            SqlType::Bytes => ("bytes", "BytesValue"),
            _ => ("", ""),
        };
        if !primitive.is_empty() {
            return match self.nullable.as_deref() {
                Some("OPTIONAL") => ProtoType {
                    label: "optional ",
                    ..plain(primitive.into())
                },
                Some("WRAPPER") => {
                    self.imports.insert("google/protobuf/wrappers.proto");
                    plain(format!("google.protobuf.{wrapper}"))
                }
                _ => plain(primitive.into()),
            };
        }
        match ty {
            SqlType::Decimal { precision, scale } => {
                self.imports.insert("confluent/meta.proto");
                self.imports.insert("confluent/type/decimal.proto");
                ProtoType {
                    label: "",
                    name: "confluent.type.Decimal".into(),
                    options: format!(
                        " [(confluent.field_meta) = {{ params: [{{ key: \"precision\", value: \"{precision}\" }}, {{ key: \"scale\", value: \"{scale}\" }}] }}]"
                    ),
                }
            }
            SqlType::Date => {
                self.imports.insert("google/type/date.proto");
                plain("google.type.Date".into())
            }
            SqlType::Time => {
                self.imports.insert("google/type/timeofday.proto");
                plain("google.type.TimeOfDay".into())
            }
            SqlType::Timestamp => {
                self.imports.insert("google/protobuf/timestamp.proto");
                plain("google.protobuf.Timestamp".into())
            }
            SqlType::Array(item) => ProtoType {
                label: "repeated ",
                ..self.field_type(item, depth, nested)
            },
            SqlType::Map { key, value } => {
                let k = self.field_type(key, depth, nested).name;
                let v = self.field_type(value, depth, nested).name;
                plain(format!("map<{k}, {v}>"))
            }
            SqlType::Struct(fields) => {
                let name = format!("ConnectDefault{}", self.next);
                self.next += 1;
                let fields: Vec<(String, &SqlType)> =
                    fields.iter().map(|f| (f.name.clone(), &f.ty)).collect();
                nested.push(self.message(&name, &fields, depth + 1));
                plain(name)
            }
            _ => unreachable!("primitives are handled above"),
        }
    }
}

fn avro_part(
    columns: &[(&str, &SqlType)],
    unwrapped: bool,
    is_key: bool,
    full_name: &str,
) -> Value {
    let (namespace, name) = full_name.rsplit_once('.').unwrap_or(("", full_name));
    let with_namespace = |mut schema: Value| {
        if schema["type"] == "record" && !namespace.is_empty() {
            schema["namespace"] = json!(namespace);
        }
        schema
    };
    match columns {
        [(_, ty)] if unwrapped => {
            let schema = with_namespace(avro_type(ty, name));
            if is_key { schema } else { nullable(schema) }
        }
        _ => with_namespace(avro_record(
            name,
            columns.iter().map(|(n, t)| (n.to_string(), *t)),
        )),
    }
}

fn nullable(schema: Value) -> Value {
    json!(["null", schema])
}

fn avro_record<'a>(name: &str, fields: impl Iterator<Item = (String, &'a SqlType)>) -> Value {
    let fields: Vec<Value> = fields
        .map(|(field, ty)| {
            json!({
                "name": field,
                "type": nullable(avro_type(ty, &format!("{name}_{field}"))),
                "default": null,
            })
        })
        .collect();
    json!({"type": "record", "name": name, "fields": fields})
}

/// The Avro schema of a SQL type; `name` names a record made for a STRUCT.
fn avro_type(ty: &SqlType, name: &str) -> Value {
    match ty {
        SqlType::Boolean => json!("boolean"),
        SqlType::Integer => json!("int"),
        SqlType::Bigint => json!("long"),
        SqlType::Double => json!("double"),
        SqlType::String => json!("string"),
        SqlType::Bytes => json!("bytes"),
        SqlType::Decimal { precision, scale } => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        SqlType::Date => json!({"type": "int", "logicalType": "date"}),
        SqlType::Time => json!({"type": "int", "logicalType": "time-millis"}),
        SqlType::Timestamp => json!({"type": "long", "logicalType": "timestamp-millis"}),
        SqlType::Array(item) => json!({"type": "array", "items": nullable(avro_type(item, name))}),
        SqlType::Map { value, .. } => {
            json!({"type": "map", "values": nullable(avro_type(value, name))})
        }
        SqlType::Struct(fields) => {
            avro_record(name, fields.iter().map(|f| (f.name.clone(), &f.ty)))
        }
    }
}

fn json_part(columns: &[(&str, &SqlType)], unwrapped: bool) -> Value {
    match columns {
        [(_, ty)] if unwrapped => json_nullable(json_type(ty)),
        _ => json_object(columns.iter().map(|(n, t)| (n.to_string(), *t))),
    }
}

fn json_nullable(schema: Value) -> Value {
    json!({"oneOf": [{"type": "null"}, schema]})
}

fn json_object<'a>(fields: impl Iterator<Item = (String, &'a SqlType)>) -> Value {
    let mut properties = serde_json::Map::new();
    for (i, (name, ty)) in fields.enumerate() {
        let mut p = json_nullable(json_type(ty));
        p["connect.index"] = json!(i);
        properties.insert(name, p);
    }
    json!({"type": "object", "properties": properties})
}

/// The JSON schema of a SQL type, with Kafka Connect's annotations as ksqlDB writes them.
fn json_type(ty: &SqlType) -> Value {
    let logical = |title: &str, connect: &str| {
        json!({"type": "integer", "title": format!("org.apache.kafka.connect.data.{title}"),
            "connect.version": 1, "connect.type": connect})
    };
    match ty {
        SqlType::Boolean => json!({"type": "boolean"}),
        SqlType::Integer => json!({"type": "integer", "connect.type": "int32"}),
        SqlType::Bigint => json!({"type": "integer", "connect.type": "int64"}),
        SqlType::Double => json!({"type": "number", "connect.type": "float64"}),
        SqlType::String => json!({"type": "string"}),
        SqlType::Bytes => json!({"type": "string", "connect.type": "bytes"}),
        SqlType::Decimal { precision, scale } => json!({
            "type": "number", "title": "org.apache.kafka.connect.data.Decimal",
            "connect.version": 1, "connect.type": "bytes",
            "connect.parameters": {"scale": scale.to_string(),
                "connect.decimal.precision": precision.to_string()}}),
        SqlType::Date => logical("Date", "int32"),
        SqlType::Time => logical("Time", "int32"),
        SqlType::Timestamp => logical("Timestamp", "int64"),
        SqlType::Array(item) => json!({"type": "array", "items": json_nullable(json_type(item))}),
        SqlType::Map { value, .. } => json!({"type": "object", "connect.type": "map",
            "additionalProperties": json_nullable(json_type(value))}),
        SqlType::Struct(fields) => json_object(fields.iter().map(|f| (f.name.clone(), &f.ty))),
    }
}

/// Columns read from a registered schema.
#[derive(Debug, PartialEq)]
pub struct Inferred {
    pub columns: Vec<(String, SqlType)>,
    /// The schema is not a record/object: one column, read bare (`ROWKEY` or `ROWVAL`).
    pub unwrapped: bool,
}

/// The columns a registered key or value schema gives, with the schema's names. A key
/// is one column (`ROWKEY`), whatever its schema: ksqlDB reads keys unwrapped; so is a
/// value read `whole` (WRAP_SINGLE_VALUE=false), `ROWVAL`. A PROTOBUF schema is always
/// a message (`full_name`, else the first), whose fields are the columns.
pub fn infer(
    schema: &RegisteredSchema,
    is_key: bool,
    whole: bool,
    full_name: Option<&str>,
) -> Result<Inferred, String> {
    if schema.schema_type == SchemaType::Protobuf {
        let file = crate::protobuf::parse_with_imports(&schema.text, &schema.imports)?;
        let (message, _) = file.message(full_name)?;
        return Ok(Inferred {
            columns: message
                .fields
                .iter()
                .map(|f| Ok((f.name.clone(), sql_of_proto_field(f)?)))
                .collect::<Result<_, String>>()?,
            unwrapped: false,
        });
    }
    let whole = whole || is_key;
    let single = |ty: SqlType| Inferred {
        columns: vec![(if is_key { "ROWKEY" } else { "ROWVAL" }.to_string(), ty)],
        unwrapped: true,
    };
    match schema.schema_type {
        SchemaType::Avro => {
            let parsed = Schema::parse(&schema.text)?;
            if whole {
                return Ok(single(sql_of_avro(&parsed)?));
            }
            match parsed.non_null() {
                Schema::Record { fields, .. } => Ok(Inferred {
                    columns: fields
                        .iter()
                        .map(|f| Ok((f.name.clone(), sql_of_avro(&f.schema)?)))
                        .collect::<Result<_, String>>()?,
                    unwrapped: false,
                }),
                other => Ok(single(sql_of_avro(other)?)),
            }
        }
        SchemaType::Json => {
            let json: Value = serde_json::from_str(&schema.text)
                .map_err(|e| format!("Invalid JSON schema: {e}"))?;
            let json = json_non_null(&json);
            if whole {
                return Ok(single(sql_of_json(json)?));
            }
            match json_properties(json) {
                Some(props) => Ok(Inferred {
                    columns: props
                        .into_iter()
                        .map(|(n, s)| Ok((n, sql_of_json(s)?)))
                        .collect::<Result<_, String>>()?,
                    unwrapped: false,
                }),
                None => Ok(single(sql_of_json(json)?)),
            }
        }
        SchemaType::Protobuf => unreachable!("handled above"),
    }
}

fn sql_of_proto_field(f: &crate::protobuf::Field) -> Result<SqlType, String> {
    let ty = sql_of_proto(&f.ty)?;
    Ok(match (f.label, &f.ty) {
        (crate::protobuf::Label::Repeated, crate::protobuf::FieldType::Map(..)) => ty,
        (crate::protobuf::Label::Repeated, _) => SqlType::Array(Box::new(ty)),
        _ => ty,
    })
}

/// The SQL type of a protobuf field's type (ksqlDB's mapping through Kafka Connect:
/// unsigned 32-bit integers need a BIGINT).
pub fn sql_of_proto(ty: &crate::protobuf::FieldType) -> Result<SqlType, String> {
    use crate::protobuf::FieldType as F;
    Ok(match ty {
        F::Int32 | F::Sint32 | F::Sfixed32 => SqlType::Integer,
        F::Int64 | F::Sint64 | F::Sfixed64 | F::Uint32 | F::Fixed32 | F::Uint64 | F::Fixed64 => {
            SqlType::Bigint
        }
        F::Float | F::Double => SqlType::Double,
        F::Bool => SqlType::Boolean,
        F::String | F::Enum(_) => SqlType::String,
        F::Bytes => SqlType::Bytes,
        F::Wrapper(inner) => sql_of_proto(inner)?,
        F::Timestamp => SqlType::Timestamp,
        F::Date => SqlType::Date,
        F::TimeOfDay => SqlType::Time,
        F::Decimal { precision, scale } => SqlType::Decimal {
            precision: *precision as u8,
            scale: *scale as u8,
        },
        F::Map(k, v) => SqlType::Map {
            key: Box::new(sql_of_proto(k)?),
            value: Box::new(sql_of_proto(v)?),
        },
        F::Message(m) => SqlType::Struct(
            m.fields
                .iter()
                .map(|f| {
                    Ok(StructField {
                        name: f.name.clone(),
                        ty: sql_of_proto_field(f)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// The SQL type of an Avro schema (ksqlDB's mapping through Kafka Connect).
pub fn sql_of_avro(schema: &Schema) -> Result<SqlType, String> {
    Ok(match schema.non_null() {
        Schema::Boolean => SqlType::Boolean,
        Schema::Int => SqlType::Integer,
        Schema::Long => SqlType::Bigint,
        Schema::Float | Schema::Double => SqlType::Double,
        Schema::String | Schema::Enum { .. } => SqlType::String,
        Schema::Bytes | Schema::Fixed { .. } => SqlType::Bytes,
        Schema::Decimal {
            precision, scale, ..
        } => SqlType::Decimal {
            precision: if *precision == 0 {
                64
            } else {
                *precision as u8
            },
            scale: *scale as u8,
        },
        Schema::Date => SqlType::Date,
        Schema::TimeMillis | Schema::TimeMicros => SqlType::Time,
        Schema::TimestampMillis | Schema::TimestampMicros => SqlType::Timestamp,
        Schema::Array(items) => SqlType::Array(Box::new(sql_of_avro(items)?)),
        Schema::Map(values) => SqlType::Map {
            key: Box::new(SqlType::String),
            value: Box::new(sql_of_avro(values)?),
        },
        Schema::Record { fields, .. } => SqlType::Struct(
            fields
                .iter()
                .map(|f| {
                    Ok(StructField {
                        name: f.name.clone(),
                        ty: sql_of_avro(&f.schema)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        Schema::Null => return Err("Avro type null has no SQL type".into()),
        Schema::Union(_) => {
            return Err("Avro unions of more than one non-null type are not supported".into());
        }
    })
}

/// `{"oneOf": [{"type": "null"}, X]}` (or `anyOf`) is X.
fn json_non_null(schema: &Value) -> &Value {
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = schema.get(key) {
            let mut others = branches.iter().filter(|b| b["type"] != "null");
            if let (Some(only), None) = (others.next(), others.next()) {
                return json_non_null(only);
            }
        }
    }
    schema
}

/// The properties of an object schema (not a map), in `connect.index` order when given.
fn json_properties(schema: &Value) -> Option<Vec<(String, &Value)>> {
    if schema.get("connect.type").is_some_and(|t| t == "map") {
        return None;
    }
    let props = schema.get("properties")?.as_object()?;
    let mut fields: Vec<(String, &Value)> = props.iter().map(|(k, v)| (k.clone(), v)).collect();
    fields.sort_by_key(|(_, v)| {
        v.get("connect.index")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    });
    Some(fields)
}

/// The SQL type of a JSON schema (ksqlDB's mapping through Kafka Connect).
pub fn sql_of_json(schema: &Value) -> Result<SqlType, String> {
    let schema = json_non_null(schema);
    let ty = match schema.get("type") {
        Some(Value::Array(types)) => types
            .iter()
            .find(|t| *t != "null")
            .and_then(Value::as_str)
            .unwrap_or("null"),
        Some(Value::String(t)) => t.as_str(),
        _ if schema.get("properties").is_some() => "object",
        _ => return Err(format!("JSON schema without a type: {schema}")),
    };
    let title = schema["title"].as_str().unwrap_or("");
    let connect = schema["connect.type"].as_str().unwrap_or("");
    Ok(match ty {
        "boolean" => SqlType::Boolean,
        "integer" => match title {
            "org.apache.kafka.connect.data.Date" => SqlType::Date,
            "org.apache.kafka.connect.data.Time" => SqlType::Time,
            "org.apache.kafka.connect.data.Timestamp" => SqlType::Timestamp,
            _ if matches!(connect, "int8" | "int16" | "int32") => SqlType::Integer,
            _ => SqlType::Bigint,
        },
        "number" if title == "org.apache.kafka.connect.data.Decimal" => {
            let param = |k: &str| {
                let p = &schema["connect.parameters"][k];
                p.as_str()
                    .and_then(|s| s.parse().ok())
                    .or(p.as_u64().map(|v| v as u8))
            };
            SqlType::Decimal {
                precision: param("connect.decimal.precision").unwrap_or(64),
                scale: param("scale").unwrap_or(0),
            }
        }
        "number" => SqlType::Double,
        "string" if connect == "bytes" => SqlType::Bytes,
        "string" => SqlType::String,
        "array" => SqlType::Array(Box::new(sql_of_json(&schema["items"])?)),
        "object" => match json_properties(schema) {
            Some(props) => SqlType::Struct(
                props
                    .into_iter()
                    .map(|(name, s)| {
                        Ok(StructField {
                            name,
                            ty: sql_of_json(s)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            ),
            None => SqlType::Map {
                key: Box::new(SqlType::String),
                value: Box::new(sql_of_json(&schema["additionalProperties"])?),
            },
        },
        other => return Err(format!("JSON schema type {other} has no SQL type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn struct_of(fields: &[(&str, SqlType)]) -> SqlType {
        SqlType::Struct(
            fields
                .iter()
                .map(|(n, t)| StructField {
                    name: n.to_string(),
                    ty: t.clone(),
                })
                .collect(),
        )
    }

    fn every_type() -> Vec<(&'static str, SqlType)> {
        vec![
            ("B", SqlType::Boolean),
            ("I", SqlType::Integer),
            ("L", SqlType::Bigint),
            ("D", SqlType::Double),
            (
                "DEC",
                SqlType::Decimal {
                    precision: 4,
                    scale: 2,
                },
            ),
            ("S", SqlType::String),
            ("BY", SqlType::Bytes),
            ("DA", SqlType::Date),
            ("T", SqlType::Time),
            ("TS", SqlType::Timestamp),
            ("A", SqlType::Array(Box::new(SqlType::String))),
            (
                "M",
                SqlType::Map {
                    key: Box::new(SqlType::String),
                    value: Box::new(SqlType::Integer),
                },
            ),
            (
                "ST",
                struct_of(&[
                    ("x", SqlType::Integer),
                    ("Y", struct_of(&[("Z", SqlType::String)])),
                ]),
            ),
        ]
    }

    #[test]
    fn every_sql_type_round_trips_through_both_schema_kinds() {
        let cols = every_type();
        let refs: Vec<(&str, &SqlType)> = cols.iter().map(|(n, t)| (*n, t)).collect();
        for kind in [SchemaType::Avro, SchemaType::Json, SchemaType::Protobuf] {
            let schema = part_schema(kind, &refs, false, false, &value_schema_name(), None);
            let inferred = infer(&schema, false, false, None).unwrap();
            assert!(!inferred.unwrapped);
            let want: Vec<(String, SqlType)> = cols
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect();
            assert_eq!(inferred.columns, want, "{kind:?}: {}", schema.text);
        }
    }

    #[test]
    fn a_bare_key_is_rowkey_and_records_are_named_as_ksqldb_names_them() {
        let ty = SqlType::Decimal {
            precision: 64,
            scale: 2,
        };
        let key = part_schema(SchemaType::Avro, &[("K", &ty)], true, true, "x.Y", None);
        assert_eq!(
            key.text,
            r#"{"type":"bytes","logicalType":"decimal","precision":64,"scale":2}"#
        );
        assert_eq!(
            infer(&key, true, false, None).unwrap(),
            Inferred {
                columns: vec![("ROWKEY".into(), ty)],
                unwrapped: true
            }
        );
        let nested = struct_of(&[("F1", SqlType::Integer)]);
        let v = part_schema(
            SchemaType::Avro,
            &[("F1", &nested)],
            false,
            true,
            &key_schema_name("OUTPUT"),
            None,
        );
        let parsed: Value = serde_json::from_str(&v.text).unwrap();
        assert_eq!(parsed["name"], "OutputKey");
        assert_eq!(parsed["namespace"], SCHEMA_NAMESPACE);
        assert_eq!(parsed["fields"][0]["type"][1]["name"], "OutputKey_F1");
    }

    #[test]
    fn json_schemas_infer_integers_by_their_connect_type() {
        let s = |text: &str| RegisteredSchema::new(SchemaType::Json, text);
        let int = infer(
            &s(r#"{"oneOf":[{"type":"null"},{"type":"integer","connect.type":"int32"}]}"#),
            false,
            false,
            None,
        )
        .unwrap();
        assert_eq!(int.columns, vec![("ROWVAL".to_string(), SqlType::Integer)]);
        let plain = infer(&s(r#"{"type":"object","properties":{"b":{"type":"integer"},"a":{"type":["null","string"]}}}"#), false, false, None).unwrap();
        assert_eq!(
            plain.columns,
            vec![
                ("b".to_string(), SqlType::Bigint),
                ("a".to_string(), SqlType::String)
            ]
        );
    }
}
