//! Logical schemas of streams and tables, and the formats of their keys and values.

use crate::SqlType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a column lives in a Kafka record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ColumnKind {
    Key,
    Value,
    /// Every header of the record, as `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`.
    Headers,
    /// The last header with this key, as BYTES.
    Header(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: SqlType,
    pub kind: ColumnKind,
}

impl Column {
    pub fn key(name: impl Into<String>, ty: SqlType) -> Column {
        Column {
            name: name.into(),
            ty,
            kind: ColumnKind::Key,
        }
    }

    pub fn value(name: impl Into<String>, ty: SqlType) -> Column {
        Column {
            name: name.into(),
            ty,
            kind: ColumnKind::Value,
        }
    }
}

/// The columns of a stream or table: key columns first, then value columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalSchema {
    pub columns: Vec<Column>,
}

/// Pseudo-columns every source row carries besides its declared columns.
pub const PSEUDO_COLUMNS: [(&str, SqlType); 3] = [
    ("ROWTIME", SqlType::Bigint),
    ("ROWPARTITION", SqlType::Integer),
    ("ROWOFFSET", SqlType::Bigint),
];

impl LogicalSchema {
    pub fn new(columns: Vec<Column>) -> LogicalSchema {
        let mut columns = columns;
        // Stable: keeps the declared order within keys and within values.
        columns.sort_by_key(|c| c.kind != ColumnKind::Key);
        LogicalSchema { columns }
    }

    pub fn keys(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.kind == ColumnKind::Key)
    }

    pub fn values(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.kind == ColumnKind::Value)
    }

    pub fn find(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// ksqlDB's schema text: `` `ID` BIGINT KEY, `NAME` STRING ``.
impl fmt::Display for LogicalSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{}` {}", c.name, c.ty)?;
            match &c.kind {
                ColumnKind::Key => f.write_str(" KEY")?,
                ColumnKind::Value => {}
                ColumnKind::Headers => f.write_str(" HEADERS")?,
                ColumnKind::Header(key) => write!(f, " HEADER('{key}')")?,
            }
        }
        Ok(())
    }
}

/// A serialization format of keys or values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FormatKind {
    Json,
    Delimited,
    Kafka,
    None,
    Avro,
    Protobuf,
    ProtobufNosr,
    JsonSr,
}

impl FormatKind {
    pub fn parse(name: &str) -> Option<FormatKind> {
        Some(match name.to_ascii_uppercase().as_str() {
            "JSON" => FormatKind::Json,
            "DELIMITED" => FormatKind::Delimited,
            "KAFKA" => FormatKind::Kafka,
            "NONE" => FormatKind::None,
            "AVRO" => FormatKind::Avro,
            "PROTOBUF" => FormatKind::Protobuf,
            "PROTOBUF_NOSR" => FormatKind::ProtobufNosr,
            "JSON_SR" => FormatKind::JsonSr,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FormatKind::Json => "JSON",
            FormatKind::Delimited => "DELIMITED",
            FormatKind::Kafka => "KAFKA",
            FormatKind::None => "NONE",
            FormatKind::Avro => "AVRO",
            FormatKind::Protobuf => "PROTOBUF",
            FormatKind::ProtobufNosr => "PROTOBUF_NOSR",
            FormatKind::JsonSr => "JSON_SR",
        }
    }

    /// Formats whose columns can be read from a registered schema.
    pub fn infers_schema(self) -> bool {
        self.needs_schema_registry()
    }

    /// Formats that need a schema registry.
    pub fn needs_schema_registry(self) -> bool {
        matches!(
            self,
            FormatKind::Avro | FormatKind::Protobuf | FormatKind::JsonSr
        )
    }
}

impl fmt::Display for FormatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format with its options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    pub kind: FormatKind,
    /// DELIMITED only: the field separator (',' when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// Values only: whether a single column is written wrapped in an object/record
    /// (`true`, ksqlDB's default) or as the bare value.
    #[serde(default = "default_wrap", skip_serializing_if = "is_true")]
    pub wrap_single_value: bool,
    /// Schema-registry formats: the id of the registered schema to read the columns from
    /// and write records with (`KEY_SCHEMA_ID`, `VALUE_SCHEMA_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<i32>,
    /// Schema-registry formats: the full name of the record schema written
    /// (`KEY_SCHEMA_FULL_NAME`, `VALUE_SCHEMA_FULL_NAME`); see `key_schema_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// PROTOBUF: how NULL is written for a field that may be NULL (`OPTIONAL` or
    /// `WRAPPER`, from `KEY|VALUE_PROTOBUF_NULLABLE_REPRESENTATION`); None: plain proto3
    /// fields, whose NULLs read back as defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protobuf_nullable: Option<String>,
}

/// The namespace of the record schemas ksqlDB names.
pub const SCHEMA_NAMESPACE: &str = "io.confluent.ksql.avro_schemas";

/// The full name of a value record schema when the statement gives none.
pub fn value_schema_name() -> String {
    format!("{SCHEMA_NAMESPACE}.KsqlDataSourceSchema")
}

/// The full name of the key record schema of source `source` when the statement gives
/// none, as ksqlDB names it (`OUTPUT` → `io.confluent.ksql.avro_schemas.OutputKey`).
pub fn key_schema_name(source: &str) -> String {
    let lower = source.to_lowercase();
    let mut chars = lower.chars();
    let capitalized: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    format!("{SCHEMA_NAMESPACE}.{capitalized}Key")
}

fn default_wrap() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Format {
    pub fn new(kind: FormatKind) -> Format {
        Format {
            kind,
            delimiter: None,
            wrap_single_value: true,
            schema_id: None,
            full_name: None,
            protobuf_nullable: None,
        }
    }

    /// Whether a part with `columns` columns is written as its one column's bare value
    /// rather than as a record of columns. PROTOBUF always writes a message.
    pub fn is_bare(&self, columns: usize, is_key: bool) -> bool {
        columns == 1
            && !matches!(self.kind, FormatKind::Protobuf | FormatKind::ProtobufNosr)
            && (is_key || !self.wrap_single_value || self.kind == FormatKind::Kafka)
    }
}
