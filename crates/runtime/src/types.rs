//! How SQL types are laid out in Arrow.

use datafusion_common::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use sluice_plan::{LogicalSchema, PSEUDO_COLUMNS, SqlType};
use std::sync::Arc;

pub fn arrow_type(t: &SqlType) -> DataType {
    match t {
        SqlType::Boolean => DataType::Boolean,
        SqlType::Integer => DataType::Int32,
        SqlType::Bigint => DataType::Int64,
        SqlType::Double => DataType::Float64,
        SqlType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
        SqlType::String => DataType::Utf8,
        SqlType::Bytes => DataType::Binary,
        SqlType::Date => DataType::Date32,
        SqlType::Time => DataType::Time32(TimeUnit::Millisecond),
        SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        SqlType::Array(item) => {
            DataType::List(Arc::new(Field::new("item", arrow_type(item), true)))
        }
        SqlType::Map { key, value } => DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(key), false),
                    Field::new("value", arrow_type(value), true),
                ])),
                false,
            )),
            false,
        ),
        SqlType::Struct(fields) => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| Field::new(&f.name, arrow_type(&f.ty), true))
                .collect::<Vec<_>>(),
        )),
    }
}

/// Name of the runtime's own last column: whether the row came from a record with a
/// null value. ksqlDB treats such a row as null: filters drop it and a projection
/// writes a null value (a tombstone). Not a valid SQL name, so it cannot clash.
pub const TOMBSTONE: &str = "$tombstone";

/// Name of the runtime's next-to-last column: whether the row's key is null (the record
/// had no key). A projection passes it through; a new key (PARTITION BY, GROUP BY) is
/// never null as a whole, even when its columns are NULL.
pub const KEY_NULL: &str = "$keynull";

/// Name of the runtime's flag ahead of the other two: whether the row is a retraction,
/// the old row of a table change, which an aggregation undoes and a sink skips. Only a
/// materialized table source writes such rows.
pub const RETRACT: &str = "$retract";

/// The Arrow schema of rows in flight: the logical columns, then the pseudo-columns
/// ROWTIME, ROWPARTITION and ROWOFFSET and the three flags, which every batch carries
/// at its end.
pub fn row_schema(schema: &LogicalSchema, windowed: bool) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .columns
        .iter()
        .map(|c| Field::new(&c.name, arrow_type(&c.ty), true))
        .collect();
    // A windowed source's rows carry their window's bounds, read from the key.
    if windowed {
        for bound in WINDOW_BOUNDS {
            fields.push(Field::new(bound, DataType::Int64, false));
        }
    }
    for (name, ty) in PSEUDO_COLUMNS {
        fields.push(Field::new(name, arrow_type(&ty), false));
    }
    fields.push(Field::new(RETRACT, DataType::Boolean, false));
    fields.push(Field::new(KEY_NULL, DataType::Boolean, false));
    fields.push(Field::new(TOMBSTONE, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

/// The window bounds of a windowed source's rows, as SQL names them.
pub const WINDOW_BOUNDS: [&str; 2] = ["WINDOWSTART", "WINDOWEND"];

/// Number of flags at the end of every row batch: retraction, null key, tombstone.
pub const FLAG_COUNT: usize = 3;

/// Number of trailing columns every row batch carries: the pseudo-columns and the flags.
pub const PSEUDO_COUNT: usize = PSEUDO_COLUMNS.len() + FLAG_COUNT;
