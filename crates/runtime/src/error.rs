//! Errors of the runtime.

use datafusion_common::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The plan cannot run on this build (a newer plan version, an unknown function).
    #[error("cannot run plan: {0}")]
    Plan(String),
    /// Evaluating an expression failed for a whole batch.
    #[error("expression error: {0}")]
    Expr(#[from] DataFusionError),
    #[error("arrow error: {0}")]
    Arrow(#[from] datafusion_common::arrow::error::ArrowError),
    /// A state entry (from a changelog) that cannot be read back.
    #[error("state: {0}")]
    State(String),
    /// A local state store (RocksDB) failed.
    #[error("state store: {0}")]
    Store(#[from] sluice_state::StateError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A transaction's commit failed; a fatal error leaves the producer unusable.
    #[error("the transaction did not commit: {message}")]
    Commit { fatal: bool, message: String },
    /// A service the query needs (the schema registry) did not answer: the query waits
    /// and resumes from its last commit rather than skip records.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A task's state store is still locked by another holder in this process (the
    /// task's previous worker, winding down): the task waits, its worker goes on.
    #[error("the task's state store is locked: {0}")]
    StoreLocked(String),
    /// A record's event time is missing or invalid and `ksql.timestamp.throw.on.invalid`
    /// is set.
    #[error(
        "Fatal user code error in TimestampExtractor callback for record of {topic}: its {column} is not a valid timestamp"
    )]
    InvalidTimestamp { topic: String, column: String },
    /// An aggregate's result no longer fits its type (a DECIMAL sum past its precision):
    /// as in ksqlDB, the query stops rather than write a wrong total.
    #[error("Numeric field overflow: a DECIMAL sum passed its precision")]
    Overflow,
}

impl RuntimeError {
    /// Whether the error comes from the query itself (its plan, its state, a record it
    /// cannot get past) rather than from the broker or a service: running the query
    /// again from its last commit meets it again. Such a poison stops the query once it
    /// keeps coming back; the others are retried for as long as they last.
    pub fn is_poison(&self) -> bool {
        !matches!(
            self,
            RuntimeError::Kafka(_)
                | RuntimeError::Commit { .. }
                | RuntimeError::Unavailable(_)
                | RuntimeError::StoreLocked(_)
        )
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
