//! Serialization formats: JSON, DELIMITED, KAFKA and NONE, as ksqlDB reads and writes them.

pub mod decode;
pub mod encode;
mod json_fields;
