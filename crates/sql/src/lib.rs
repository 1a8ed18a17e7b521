//! The ksqlDB dialect: parse SQL text, analyze it against the catalog, plan it.
//!
//! ```text
//! text ─► lexer (sqlparser's tokenizer) ─► parser (our grammar) ─► ast
//!      ─► planner + analyzer (names, types, ksqlDB's rules) ─► Planned (catalog changes, QueryPlan)
//! ```
//!
//! This crate never depends on the runtime: plans leave it as data (`sluice-plan`).

mod aggregate;
pub mod analyzer;
pub mod ast;
pub mod error;
pub mod functions;
mod join;
mod lexer;
pub mod parser;
pub mod planner;
pub mod pull;
mod registry;
pub mod script;

pub use aggregate::HIDDEN_PREFIX;
pub use error::{Pos, SqlError};
pub use parser::{parse_expression, parse_statement, parse_statements};
pub use planner::{
    Catalog, Planned, PlannerConfig, SourceDesc, SourceKindName, TopicCreation, already_exists,
    plan_last_query, plan_statement,
};
