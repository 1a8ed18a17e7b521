//! The engine that executes query plans.
//!
//! - `codec`: JSON, DELIMITED, KAFKA and NONE serdes between record bytes and Arrow columns;
//! - `expr` and `udf`: plan expressions as DataFusion physical expressions, ksqlDB's functions;
//! - `pipeline`: a compiled plan that turns a batch of source records into output records;
//! - `push`: push queries, run for one client and leaving nothing behind;
//! - `view`: tables kept in local stores that pull queries look keys up in;
//! - `snapshot`: operator state as bytes, for changelog records and restore;
//! - `values`: the record an INSERT INTO ... VALUES writes;
//! - `driver`: the deterministic test driver over in-memory topics;
//! - `kafka`: running a pipeline on a real broker (consumer group, producer, commits) and
//!   topic administration.
//!
//! The runtime never parses SQL: it executes the plans `sluice-sql` writes.

mod accumulator;
mod aggregate;
pub mod codec;
pub mod driver;
mod error;
pub mod expr;
mod join;
pub mod kafka;
mod nested;
pub mod owners;
pub mod pipeline;
pub mod push;
mod snapshot;
pub mod types;
pub mod udf;
pub mod values;
pub mod view;

pub use error::{Result, RuntimeError};
pub use kafka::{KafkaAdmin, QueryConfig, QueryError, QueryStats, RunningQuery};
pub use pipeline::{DecodeFailure, OutputRecord, Pipeline, SourceRecord};
