//! SQL types as ksqlDB names them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A ksqlDB SQL type. Serialized as data (not SQL text) so plans need no parser to load.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SqlType {
    Boolean,
    Integer,
    Bigint,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    String,
    Bytes,
    Date,
    Time,
    Timestamp,
    Array(Box<SqlType>),
    Map {
        key: Box<SqlType>,
        value: Box<SqlType>,
    },
    Struct(Vec<StructField>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StructField {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: SqlType,
}

impl SqlType {
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            SqlType::Integer | SqlType::Bigint | SqlType::Double | SqlType::Decimal { .. }
        )
    }

    pub fn is_primitive(&self) -> bool {
        !matches!(
            self,
            SqlType::Array(_) | SqlType::Map { .. } | SqlType::Struct(_)
        )
    }

    /// The decimal type that holds every value of this integral or decimal type exactly,
    /// as ksqlDB widens INT to DECIMAL(10, 0) and BIGINT to DECIMAL(19, 0).
    pub fn as_decimal(&self) -> Option<(u8, u8)> {
        match self {
            SqlType::Integer => Some((10, 0)),
            SqlType::Bigint => Some((19, 0)),
            SqlType::Decimal { precision, scale } => Some((*precision, *scale)),
            _ => None,
        }
    }

    /// Rank in ksqlDB's numeric widening order INT < BIGINT < DECIMAL < DOUBLE.
    fn numeric_rank(&self) -> Option<u8> {
        match self {
            SqlType::Integer => Some(0),
            SqlType::Bigint => Some(1),
            SqlType::Decimal { .. } => Some(2),
            SqlType::Double => Some(3),
            _ => None,
        }
    }

    /// The type both operands of a numeric operation widen to, if any.
    pub fn common_numeric(a: &SqlType, b: &SqlType) -> Option<SqlType> {
        let (ra, rb) = (a.numeric_rank()?, b.numeric_rank()?);
        if let (Some((pa, sa)), Some((pb, sb))) = (a.as_decimal(), b.as_decimal())
            && (ra == 2 || rb == 2)
        {
            let scale = sa.max(sb);
            let int_digits = (pa - sa).max(pb - sb);
            let precision = (int_digits + scale).min(38);
            return Some(SqlType::Decimal { precision, scale });
        }
        Some(if ra >= rb { a.clone() } else { b.clone() })
    }

    /// Whether a value of `self` may be used where `to` is expected without an explicit
    /// CAST (ksqlDB's implicit widening).
    pub fn widens_to(&self, to: &SqlType) -> bool {
        if self == to {
            return true;
        }
        match (self.numeric_rank(), to.numeric_rank()) {
            (Some(a), Some(b)) => a < b || (a == 2 && b == 2),
            _ => false,
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::Integer => f.write_str("INTEGER"),
            SqlType::Bigint => f.write_str("BIGINT"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::String => f.write_str("STRING"),
            SqlType::Bytes => f.write_str("BYTES"),
            SqlType::Date => f.write_str("DATE"),
            SqlType::Time => f.write_str("TIME"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
            SqlType::Array(item) => write!(f, "ARRAY<{item}>"),
            SqlType::Map { key, value } => write!(f, "MAP<{key}, {value}>"),
            SqlType::Struct(fields) => {
                f.write_str("STRUCT<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{}` {}", field.name, field.ty)?;
                }
                f.write_str(">")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_follows_ksqldb_order() {
        assert!(SqlType::Integer.widens_to(&SqlType::Bigint));
        assert!(SqlType::Bigint.widens_to(&SqlType::Double));
        assert!(!SqlType::Double.widens_to(&SqlType::Integer));
        assert!(!SqlType::String.widens_to(&SqlType::Integer));
        assert_eq!(
            SqlType::common_numeric(&SqlType::Integer, &SqlType::Bigint),
            Some(SqlType::Bigint)
        );
        assert_eq!(
            SqlType::common_numeric(
                &SqlType::Integer,
                &SqlType::Decimal {
                    precision: 4,
                    scale: 2
                }
            ),
            Some(SqlType::Decimal {
                precision: 12,
                scale: 2
            })
        );
    }

    #[test]
    fn displays_as_ksqldb_does() {
        let t = SqlType::Map {
            key: Box::new(SqlType::String),
            value: Box::new(SqlType::Array(Box::new(SqlType::Decimal {
                precision: 4,
                scale: 2,
            }))),
        };
        assert_eq!(t.to_string(), "MAP<STRING, ARRAY<DECIMAL(4, 2)>>");
    }
}
