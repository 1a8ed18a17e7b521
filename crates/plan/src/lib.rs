//! The plan IR shared by the SQL front end (`sluice-sql`, which writes plans) and the
//! runtime (`sluice-runtime`, which executes them).
//!
//! Everything here is plain serializable data: SQL types, logical schemas, key and value
//! formats, resolved expressions and the versioned plan steps. Plans travel through the
//! command topic as JSON, so the runtime never needs the parser to run a query.

mod expr;
mod plan;
mod schema;
mod types;

pub use expr::{BinaryOp, Expr, Literal, format_decimal};
pub use plan::{
    AggregateCall, CarriedColumn, JoinKind, JoinShape, NamedExpr, PLAN_VERSION, QueryPlan,
    RETRACTION_HEADER, Repartition, Step, TableFunctionCall, TopicSpec, WindowKind, WindowSpec,
};
pub use schema::{
    Column, ColumnKind, Format, FormatKind, LogicalSchema, PSEUDO_COLUMNS, SCHEMA_NAMESPACE,
    key_schema_name, value_schema_name,
};
pub use types::{SqlType, StructField};
