//! Test values (the JSON in a case's `inputs` and `outputs`) to record bytes and back,
//! for a topic's formats and schema.

use serde_json::Value;
use sluice_plan::{Column, Format, FormatKind, SqlType};

/// Serializes a case's key or value for a topic whose part has these columns.
pub fn encode(format: &Format, columns: &[&Column], v: &Value) -> Result<Option<Vec<u8>>, String> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(match format.kind {
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
        other => return Err(format!("the {other} format needs a schema registry")),
    }))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads record bytes back into a test value, to compare with a case's expectations.
pub fn decode(format: &Format, columns: &[&Column], bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    match format.kind {
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
/// deserializer finds fields ignoring case (`{"json_v": ...}` is column `JSON_V`).
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
            a.len() == b.len()
                && a.iter().all(|(k, v)| {
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
        assert!(!same(&json!({"A": 1}), &json!({"A": 1, "B": null})));
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
        let bytes = encode(&f, &[&col], &json!(7)).unwrap();
        assert_eq!(bytes.as_deref(), Some(&[0, 0, 0, 7][..]));
        assert_eq!(decode(&f, &[&col], bytes.as_deref()), json!(7));
    }
}
