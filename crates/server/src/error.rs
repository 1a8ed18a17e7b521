//! Errors of the server: failures to start, and statement errors as ksqlDB reports them.

use sluice_sql::SqlError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Runtime(#[from] sluice_runtime::RuntimeError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Startup(String),
}

/// A statement that could not be executed, rendered as ksqlDB's error JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementError {
    /// HTTP status.
    pub status: u16,
    /// ksqlDB's error code: 40001 bad statement, 40000 bad request, 50000 server error.
    pub error_code: u32,
    pub message: String,
    pub statement_text: String,
    /// Where in the statement the problem is (line, column), when known.
    pub position: Option<(u32, u32)>,
}

impl StatementError {
    pub fn bad_statement(message: String, text: &str) -> StatementError {
        StatementError {
            status: 400,
            error_code: 40001,
            message,
            statement_text: text.to_string(),
            position: None,
        }
    }

    /// A valid statement this version cannot run yet (reported like ksqlDB's bad statements).
    pub fn unsupported(message: String, text: &str) -> StatementError {
        StatementError::bad_statement(message, text)
    }

    pub fn bad_request(message: String) -> StatementError {
        StatementError {
            status: 400,
            error_code: 40000,
            message,
            statement_text: String::new(),
            position: None,
        }
    }

    /// A statement this server does not take (headless mode): HTTP 403.
    pub fn forbidden(message: String, text: &str) -> StatementError {
        StatementError {
            status: 403,
            error_code: 40300,
            message,
            statement_text: text.to_string(),
            position: None,
        }
    }

    /// An ASSERT that does not hold: HTTP 417, as ksqlDB answers it.
    pub fn assertion(message: String, text: &str) -> StatementError {
        StatementError {
            status: 417,
            error_code: 41700,
            message,
            statement_text: text.to_string(),
            position: None,
        }
    }

    pub fn server(message: String, text: &str) -> StatementError {
        StatementError {
            status: 500,
            error_code: 50000,
            message,
            statement_text: text.to_string(),
            position: None,
        }
    }

    /// A front-end error: syntax errors carry `line L:C:` as ksqlDB's do; hints follow
    /// the message on their own line.
    pub fn from_sql(e: &SqlError, text: &str) -> StatementError {
        StatementError {
            position: e.pos().map(|p| (p.line, p.column)),
            ..StatementError::bad_statement(e.full_message(), text)
        }
    }
}
