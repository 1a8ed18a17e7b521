//! Serialization formats: JSON, DELIMITED, KAFKA, NONE, and the schema-registry formats
//! AVRO and JSON_SR, as ksqlDB reads and writes them.

pub mod decode;
pub mod encode;
mod json_fields;
pub mod registered;
