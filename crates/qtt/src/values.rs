//! Test values (the JSON in a case's `inputs` and `outputs`) to record bytes and back,
//! for a topic's formats and schema.

use serde_json::Value;
use sluice_plan::{Column, Format, FormatKind, SqlType};
use sluice_registry::avro::{self, Schema};
use sluice_registry::{
    RegisteredSchema, SchemaRegistry, SchemaType, frame, protobuf, subject, unframe,
};
use sluice_runtime::codec::registered::{Writer, nosr_writer};

/// Where the schema of a part of a schema-registry format is registered.
pub struct Registered<'a> {
    pub registry: &'a dyn SchemaRegistry,
    pub topic: &'a str,
    pub is_key: bool,
    /// The source on the topic: its columns give the schema when none is registered.
    pub source: &'a str,
}

impl Registered<'_> {
    /// The schema records are written with: the format's own id, else the latest under
    /// the topic's subject, else the one derived from the columns (registered now).
    fn writer(
        &self,
        format: &Format,
        columns: &[&Column],
    ) -> Result<(i32, RegisteredSchema), String> {
        if let Some(id) = format.schema_id {
            return Ok((id, self.registry.schema(id).map_err(|e| e.to_string())?));
        }
        let subject = subject(self.topic, self.is_key);
        if let Some(found) = self.registry.latest(&subject).map_err(|e| e.to_string())? {
            return Ok(found);
        }
        let derived = sluice_runtime::codec::registered::derived_schema(
            format,
            columns,
            self.is_key,
            self.source,
        )
        .ok_or_else(|| format!("the {} format has no registered schema", format.kind))?;
        let id = self
            .registry
            .register(&subject, &derived)
            .map_err(|e| e.to_string())?;
        Ok((id, derived))
    }
}

/// Serializes a case's key or value for a topic whose part has these columns.
pub fn encode(
    format: &Format,
    columns: &[&Column],
    v: &Value,
    registered: &Registered<'_>,
) -> Result<Option<Vec<u8>>, String> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(match format.kind {
        FormatKind::Avro => {
            let (id, schema) = registered.writer(format, columns)?;
            let mut out = Vec::new();
            frame(id, &mut out);
            avro::write_json(&Schema::parse(&schema.text)?, v, &mut out)?;
            out
        }
        FormatKind::JsonSr => {
            let (id, _) = registered.writer(format, columns)?;
            let mut out = Vec::new();
            frame(id, &mut out);
            out.extend_from_slice(v.to_string().as_bytes());
            out
        }
        FormatKind::Protobuf => {
            let (id, schema) = registered.writer(format, columns)?;
            let file = protobuf::parse_with_imports(&schema.text, &schema.imports)?;
            let (message, path) = file.message(format.full_name.as_deref())?;
            let mut out = Vec::new();
            frame(id, &mut out);
            protobuf::write_message_indexes(&mut out, &path);
            protobuf::write_message(message, v, &mut out)?;
            out
        }
        FormatKind::ProtobufNosr => {
            let Writer::Protobuf(file, path) = nosr_writer(format, columns, registered.is_key)?
            else {
                unreachable!("PROTOBUF_NOSR writes protobuf")
            };
            let mut out = Vec::new();
            protobuf::write_message(file.message_at(&path)?, v, &mut out)?;
            out
        }
        FormatKind::Json => v.to_string().into_bytes(),
        FormatKind::Delimited | FormatKind::None => text_of(v).into_bytes(),
        FormatKind::Kafka => {
            let ty = columns.first().map(|c| &c.ty);
            match (ty, v) {
                (Some(SqlType::Integer), Value::Number(n)) => {
                    (n.as_i64().ok_or_else(|| format!("{v} is not an INTEGER"))? as i32)
                        .to_be_bytes()
                        .to_vec()
                }
                (Some(SqlType::Bigint), Value::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| format!("{v} is not a BIGINT"))?
                    .to_be_bytes()
                    .to_vec(),
                (Some(SqlType::Double), Value::Number(n)) => n
                    .as_f64()
                    .ok_or_else(|| format!("{v} is not a DOUBLE"))?
                    .to_be_bytes()
                    .to_vec(),
                _ => text_of(v).into_bytes(),
            }
        }
    }))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads record bytes back into a test value, to compare with a case's expectations.
pub fn decode(
    format: &Format,
    columns: &[&Column],
    bytes: Option<&[u8]>,
    registry: &dyn SchemaRegistry,
) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).into_owned());
    match format.kind {
        FormatKind::Avro => {
            let read = || -> Result<Value, String> {
                let (id, payload) = unframe(bytes)?;
                let s = registry.schema(id).map_err(|e| e.to_string())?;
                if s.schema_type != SchemaType::Avro {
                    return Err(format!("schema {id} is not AVRO"));
                }
                avro::Reader::new(payload)
                    .decimals_as_numbers()
                    .json(&Schema::parse(&s.text)?)
            };
            read().unwrap_or_else(|e| Value::String(format!("<not AVRO: {e}>")))
        }
        FormatKind::Protobuf => {
            let read = || -> Result<Value, String> {
                let (id, payload) = unframe(bytes)?;
                let s = registry.schema(id).map_err(|e| e.to_string())?;
                let file = protobuf::parse_with_imports(&s.text, &s.imports)?;
                let mut r = protobuf::Reader::new(payload);
                let path = protobuf::read_message_indexes(&mut r)?;
                protobuf::read_message(file.message_at(&path)?, r.rest(), true)
            };
            read().unwrap_or_else(|e| Value::String(format!("<not PROTOBUF: {e}>")))
        }
        FormatKind::ProtobufNosr => {
            let read = || -> Result<Value, String> {
                let Writer::Protobuf(file, path) = nosr_writer(format, columns, false)? else {
                    unreachable!("PROTOBUF_NOSR writes protobuf")
                };
                protobuf::read_message(file.message_at(&path)?, bytes, true)
            };
            read().unwrap_or_else(|e| Value::String(format!("<not PROTOBUF_NOSR: {e}>")))
        }
        FormatKind::JsonSr => match unframe(bytes) {
            Ok((_, payload)) => serde_json::from_slice(payload).unwrap_or_else(|_| text(payload)),
            Err(e) => Value::String(format!("<not JSON_SR: {e}>")),
        },
        FormatKind::Json => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
        FormatKind::Kafka => {
            let ty = columns.first().map(|c| &c.ty);
            match (ty, bytes.len()) {
                (Some(SqlType::Integer), 4) => {
                    Value::from(i32::from_be_bytes(bytes.try_into().expect("4 bytes")))
                }
                (Some(SqlType::Bigint), 8) => {
                    Value::from(i64::from_be_bytes(bytes.try_into().expect("8 bytes")))
                }
                (Some(SqlType::Double), 8) => {
                    Value::from(f64::from_be_bytes(bytes.try_into().expect("8 bytes")))
                }
                _ => Value::String(String::from_utf8_lossy(bytes).into_owned()),
            }
        }
        _ => Value::String(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// Equality of test values, with numbers compared by value (1 equals 1.0) and a string
/// expectation matching a number written as that string. Field names match ignoring
/// case, as ksqlDB's harness reads expected JSON through the sink's schema, whose JSON
/// deserializer finds fields ignoring case (`{"json_v": ...}` is column `JSON_V`), and
/// for the same reason a field that is null and one that is absent are the same (a
/// schema's column missing from the JSON reads as null).
pub fn same(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())
                }
                _ => a == b,
            },
        },
        // A decimal given as text ("3.40") against the number written: by value, since
        // the written text is parsed here and its trailing zeros are gone.
        (Value::String(s), Value::Number(n)) => {
            *s == n.to_string()
                || s.parse::<f64>()
                    .ok()
                    .zip(n.as_f64())
                    .is_some_and(|(a, b)| a == b)
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            let present =
                |o: &serde_json::Map<String, Value>| o.values().filter(|v| !v.is_null()).count();
            present(a) == present(b)
                && a.iter().filter(|(_, v)| !v.is_null()).all(|(k, v)| {
                    b.get(k)
                        .or_else(|| {
                            b.iter()
                                .find(|(bk, _)| bk.eq_ignore_ascii_case(k))
                                .map(|(_, w)| w)
                        })
                        .is_some_and(|w| same(v, w))
                })
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(same(
            &json!({"A": 1.0, "B": [1]}),
            &json!({"A": 1, "B": [1.0]})
        ));
        assert!(!same(&json!({"A": 1}), &json!({"A": 2})));
        assert!(!same(&json!({"A": 1}), &json!({"A": 1, "B": 2})));
    }

    #[test]
    fn a_null_field_is_an_absent_one() {
        assert!(same(&json!({"A": 1}), &json!({"A": 1, "B": null})));
        assert!(same(
            &json!({"X": null, "B": null}),
            &json!({"A": null, "B": null})
        ));
        assert!(!same(&json!({"A": null}), &json!({"A": 1})));
        assert!(same(&json!({"A": 1, "B": null}), &json!({"A": 1})));
    }

    #[test]
    fn field_names_match_ignoring_case() {
        assert!(same(&json!({"json_v": "1"}), &json!({"JSON_V": "1"})));
        assert!(!same(&json!({"json_v": "1"}), &json!({"JSON_V": "2"})));
        assert!(!same(&json!({"json_w": "1"}), &json!({"JSON_V": "1"})));
    }

    #[test]
    fn kafka_integers_round_trip() {
        let col = Column::key("K", SqlType::Integer);
        let f = Format::new(FormatKind::Kafka);
        let registry = sluice_registry::MemoryRegistry::new();
        let registered = Registered {
            registry: &registry,
            topic: "t",
            is_key: true,
            source: "S",
        };
        let bytes = encode(&f, &[&col], &json!(7), &registered).unwrap();
        assert_eq!(bytes.as_deref(), Some(&[0, 0, 0, 7][..]));
        assert_eq!(decode(&f, &[&col], bytes.as_deref(), &registry), json!(7));
    }

    #[test]
    fn avro_values_round_trip_through_the_registry() {
        let cols = [
            Column::value("A", SqlType::Integer),
            Column::value(
                "D",
                SqlType::Decimal {
                    precision: 4,
                    scale: 2,
                },
            ),
        ];
        let refs: Vec<&Column> = cols.iter().collect();
        let f = Format::new(FormatKind::Avro);
        let registry = sluice_registry::MemoryRegistry::new();
        let registered = Registered {
            registry: &registry,
            topic: "t",
            is_key: false,
            source: "S",
        };
        let bytes = encode(&f, &refs, &json!({"a": 1, "d": 1.5}), &registered).unwrap();
        assert_eq!(bytes.as_ref().unwrap()[..5], [0, 0, 0, 0, 1]);
        assert_eq!(
            decode(&f, &refs, bytes.as_deref(), &registry),
            json!({"A": 1, "D": 1.5})
        );
    }
}
