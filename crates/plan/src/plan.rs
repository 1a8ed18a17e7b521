//! The query plan: a tree of versioned steps the runtime executes.
//!
//! Step names carry a version (`streamFilterV1`) as ksqlDB's do: a step's meaning never
//! changes once released; a new behaviour gets a new name, and the runtime keeps running
//! every version it ever wrote, so queries stored in the command topic survive upgrades.

use crate::{Expr, Format, LogicalSchema};
use serde::{Deserialize, Serialize};

/// The plan format version this build writes. Plans with a higher version are refused.
pub const PLAN_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPlan {
    pub version: u32,
    pub root: Step,
}

/// A Kafka topic with its formats and the schema of its records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    pub topic: String,
    pub key_format: Format,
    pub value_format: Format,
    pub schema: LogicalSchema,
}

/// An output column and the expression that computes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedExpr {
    pub name: String,
    pub expr: Expr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "@step")]
pub enum Step {
    /// Reads a topic as a stream. Rows carry the schema's columns plus the pseudo-columns
    /// ROWTIME, ROWPARTITION and ROWOFFSET.
    #[serde(rename = "streamSourceV1")]
    StreamSource {
        /// The source's name in the catalog, for EXPLAIN and logs.
        name: String,
        topic: TopicSpec,
    },
    /// Keeps the rows for which the predicate is true (NULL counts as false).
    #[serde(rename = "streamFilterV1")]
    StreamFilter { input: Box<Step>, predicate: Expr },
    /// Computes the output columns; `schema` names them and says which are keys.
    #[serde(rename = "streamSelectV1")]
    StreamSelect {
        input: Box<Step>,
        projection: Vec<NamedExpr>,
        schema: LogicalSchema,
    },
    /// Writes rows to a topic; the record timestamp is the input row's ROWTIME.
    #[serde(rename = "streamSinkV1")]
    StreamSink { input: Box<Step>, topic: TopicSpec },
}

impl Step {
    /// The schema of the rows this step produces.
    pub fn schema(&self) -> &LogicalSchema {
        match self {
            Step::StreamSource { topic, .. } | Step::StreamSink { topic, .. } => &topic.schema,
            Step::StreamFilter { input, .. } => input.schema(),
            Step::StreamSelect { schema, .. } => schema,
        }
    }

    pub fn input(&self) -> Option<&Step> {
        match self {
            Step::StreamSource { .. } => None,
            Step::StreamFilter { input, .. }
            | Step::StreamSelect { input, .. }
            | Step::StreamSink { input, .. } => Some(input),
        }
    }

    /// Every source topic the plan reads.
    pub fn source_topics(&self) -> Vec<&TopicSpec> {
        match self {
            Step::StreamSource { topic, .. } => vec![topic],
            _ => self.input().map(Step::source_topics).unwrap_or_default(),
        }
    }

    /// A readable, indented rendering for EXPLAIN.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        self.explain_into(&mut out, 0);
        out
    }

    fn explain_into(&self, out: &mut String, depth: usize) {
        let pad = " ".repeat(depth * 2);
        let line = match self {
            Step::StreamSource { name, topic } => format!(
                "SOURCE {name} (topic: {}, key: {}, value: {}) [{}]",
                topic.topic, topic.key_format.kind, topic.value_format.kind, topic.schema
            ),
            Step::StreamFilter { predicate, .. } => format!("FILTER {predicate}"),
            Step::StreamSelect { projection, .. } => {
                let cols: Vec<String> = projection
                    .iter()
                    .map(|p| format!("{} AS {}", p.expr, p.name))
                    .collect();
                format!("PROJECT {}", cols.join(", "))
            }
            Step::StreamSink { topic, .. } => format!(
                "SINK {} (key: {}, value: {}) [{}]",
                topic.topic, topic.key_format.kind, topic.value_format.kind, topic.schema
            ),
        };
        out.push_str(&pad);
        out.push_str(&line);
        out.push('\n');
        if let Some(input) = self.input() {
            input.explain_into(out, depth + 1);
        }
    }
}
