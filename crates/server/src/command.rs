//! The command topic: the durable, ordered log of accepted statements.
//!
//! A statement that validates is written here with its plan and properties; a runner on
//! every server applies the log in order, so all servers build the same catalog and run
//! the same queries, and a restart replays it.

use serde::{Deserialize, Serialize};
use sluice_plan::QueryPlan;
use sluice_sql::SourceDesc;
use std::collections::BTreeMap;

/// The command format this build writes; newer commands put the server in a degraded state.
pub const COMMAND_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub version: u32,
    /// The statement as the user wrote it, with its `;`.
    pub statement: String,
    /// The request's `streamsProperties`, which the query runs with.
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    /// CREATE STREAM / TABLE over an existing topic.
    #[serde(rename_all = "camelCase")]
    CreateSource {
        source: SourceDesc,
        or_replace: bool,
    },
    /// CREATE ... AS SELECT: registers the sink and starts the query.
    #[serde(rename_all = "camelCase")]
    CreateQuery {
        sink: SourceDesc,
        plan: Box<QueryPlan>,
        inputs: Vec<String>,
        /// The query-id prefix, `CSAS` or `CTAS`.
        kind: String,
    },
    /// INSERT INTO ... SELECT: starts a query writing into an existing stream.
    #[serde(rename_all = "camelCase")]
    InsertQuery {
        target: String,
        plan: Box<QueryPlan>,
        inputs: Vec<String>,
    },
    /// ALTER STREAM / TABLE ... ADD COLUMN: the source's new definition.
    #[serde(rename_all = "camelCase")]
    AlterSource { source: SourceDesc },
    /// DROP STREAM / TABLE; terminates the query that writes into it.
    #[serde(rename_all = "camelCase")]
    DropSource { name: String },
    /// TERMINATE id, or TERMINATE ALL when `query_id` is None.
    #[serde(rename_all = "camelCase")]
    Terminate { query_id: Option<String> },
    /// PAUSE (`paused`) or RESUME of a query, or of all (None).
    #[serde(rename_all = "camelCase")]
    Pause {
        query_id: Option<String>,
        paused: bool,
    },
    /// CREATE TYPE: a custom type for later statements.
    #[serde(rename_all = "camelCase")]
    CreateType {
        name: String,
        sql_type: sluice_plan::SqlType,
    },
    /// DROP TYPE
    #[serde(rename_all = "camelCase")]
    DropType { name: String },
}

impl Command {
    /// The command of an accepted statement, with the properties it ran with.
    pub fn new(
        statement: &str,
        properties: &std::collections::BTreeMap<String, serde_json::Value>,
        action: Action,
    ) -> Command {
        Command {
            version: COMMAND_VERSION,
            statement: statement.to_string(),
            properties: properties.clone(),
            action,
        }
    }

    /// ksqlDB's command id: `stream/S1/create`, `terminate/CSAS_S1_0/execute`, ...
    pub fn command_id(&self) -> String {
        match &self.action {
            Action::CreateSource { source, .. } | Action::CreateQuery { sink: source, .. } => {
                format!("{}/`{}`/create", source.kind.lower(), source.name)
            }
            Action::InsertQuery { target, .. } => format!("stream/`{target}`/insert"),
            Action::AlterSource { source } => {
                format!("{}/`{}`/alter", source.kind.lower(), source.name)
            }
            Action::DropSource { name } => format!("stream/`{name}`/drop"),
            Action::Terminate { query_id } => {
                format!("terminate/{}/execute", query_id.as_deref().unwrap_or("ALL"))
            }
            Action::CreateType { name, .. } => format!("type/`{name}`/create"),
            Action::Pause { query_id, paused } => format!(
                "{}/{}/execute",
                if *paused { "pause" } else { "resume" },
                query_id.as_deref().unwrap_or("ALL")
            ),
            Action::DropType { name } => format!("type/`{name}`/drop"),
        }
    }
}

/// The command topic's name for a service id.
pub fn command_topic(service_id: &str) -> String {
    format!("_sluice-{service_id}-command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_json() {
        let c = Command {
            version: COMMAND_VERSION,
            statement: "TERMINATE ALL;".into(),
            properties: BTreeMap::new(),
            action: Action::Terminate { query_id: None },
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""type":"terminate""#), "{json}");
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
        assert_eq!(c.command_id(), "terminate/ALL/execute");
    }
}
