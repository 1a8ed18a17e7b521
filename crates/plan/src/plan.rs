//! The query plan: a tree of versioned steps the runtime executes.
//!
//! Step names carry a version (`streamFilterV1`) as ksqlDB's do: a step's meaning never
//! changes once released; a new behaviour gets a new name, and the runtime keeps running
//! every version it ever wrote, so queries stored in the command topic survive upgrades.

use crate::{Expr, Format, LogicalSchema, SqlType};
use serde::{Deserialize, Serialize};

/// The plan format version this build writes. Plans with a higher version are refused.
pub const PLAN_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPlan {
    pub version: u32,
    pub root: Step,
    /// `ksql.timestamp.throw.on.invalid`: a record whose event time (its TIMESTAMP
    /// column) is missing or invalid stops the query instead of being skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub throw_on_invalid_timestamp: bool,
}

/// A Kafka topic with its formats and the schema of its records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    pub topic: String,
    pub key_format: Format,
    pub value_format: Format,
    pub schema: LogicalSchema,
    /// The column that holds each record's event time (`WITH (TIMESTAMP=...)`), a BIGINT
    /// or TIMESTAMP; None: the Kafka record's timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The Java date-time pattern the `timestamp` column (a STRING) is written in
    /// (`WITH (TIMESTAMP_FORMAT=...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_format: Option<String>,
    /// Keys are windowed (time windows: the key's bytes, then the window start as 8
    /// big-endian bytes, as Kafka Streams writes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    /// The topic carries a table's changes between two parts of a query (a table
    /// regrouped through a repartition topic): a record may carry, in the header
    /// `RETRACTION_HEADER`, the value of the row it undoes, read as a retraction ahead of
    /// the record's own row (if it has one: a record without a value only undoes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retractions: bool,
}

impl TopicSpec {
    /// What EXPLAIN adds to a topic's formats when it carries retractions.
    fn retractions_note(&self) -> &'static str {
        if self.retractions {
            ", with retractions"
        } else {
            ""
        }
    }
}

/// The record header that holds the value of the row a record of a `retractions` topic
/// undoes.
pub const RETRACTION_HEADER: &str = "sluice.retraction";

/// A window of an aggregation, and of the keys of its output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowSpec {
    #[serde(default, skip_serializing_if = "WindowKind::is_tumbling")]
    pub kind: WindowKind,
    /// TUMBLING windows advance by their size; HOPPING ones by `advance_ms`. For
    /// SESSION windows, `size_ms` is the inactivity gap.
    pub size_ms: i64,
    pub advance_ms: i64,
    /// Records for a window arriving later than its end plus this are dropped.
    pub grace_ms: i64,
    /// How long a window is kept after its start (RETENTION); None: size plus grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
}

impl WindowSpec {
    /// How long windows are kept: RETENTION, or at least their size and grace period.
    pub fn retention(&self) -> i64 {
        self.retention_ms
            .unwrap_or(0)
            .max(self.size_ms.saturating_add(self.grace_ms))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WindowKind {
    /// Fixed windows that advance by their size; keys carry the window start.
    #[default]
    Tumbling,
    /// Fixed windows that advance by less than their size; keys carry the start.
    Hopping,
    /// Windows that grow and merge per key; keys carry the end and the start.
    Session,
}

impl WindowKind {
    pub fn is_tumbling(&self) -> bool {
        *self == WindowKind::Tumbling
    }

    /// ksqlDB's name of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumbling => "TUMBLING",
            WindowKind::Hopping => "HOPPING",
            WindowKind::Session => "SESSION",
        }
    }
}

/// An aggregate function applied to expressions over the input rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregateCall {
    /// ksqlDB's name: COUNT, SUM, MIN, MAX, AVG.
    pub function: String,
    /// Empty for COUNT(*).
    pub args: Vec<Expr>,
    #[serde(rename = "returns")]
    pub return_type: crate::SqlType,
}

/// A table function (EXPLODE) over expressions of the input rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableFunctionCall {
    /// ksqlDB's name: EXPLODE.
    pub function: String,
    pub args: Vec<Expr>,
    /// The type of each value it produces.
    #[serde(rename = "returns")]
    pub return_type: crate::SqlType,
}

/// Which rows of a join are kept when the other side has no match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Outer,
}

impl JoinKind {
    /// Whether a left row without a match is kept (with NULLs for the right columns).
    pub fn keeps_left(self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Outer)
    }

    pub fn keeps_right(self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Outer)
    }
}

/// What a join joins, which decides when it emits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "camelCase")]
pub enum JoinShape {
    /// Two streams: a record joins the other side's records whose time is at most
    /// `before_ms` earlier and `after_ms` later (for a right record, mirrored). Without a
    /// grace period, a record with no match is emitted at once (with NULLs) for the
    /// sides an outer join keeps; with one, only once its window has closed and still
    /// nothing matched.
    #[serde(rename_all = "camelCase")]
    StreamStream {
        before_ms: i64,
        after_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_ms: Option<i64>,
    },
    /// A stream (left) looks up a table's (right) current row for its key; table
    /// changes emit nothing.
    StreamTable,
    /// Two tables: a change on either side emits the joined row for its key (a deletion
    /// when the result no longer exists).
    TableTable,
    /// Two tables, the left one's rows matched by a foreign key (`left_key`) to the right
    /// one's primary key; the result is keyed by the left table's primary key, whose
    /// columns (in the left rows) are named here.
    #[serde(rename_all = "camelCase")]
    ForeignKey { left_primary_key: Vec<String> },
}

/// A part of a query cut at a repartition topic (`Step::split_at_repartition`): it
/// writes rows keyed anew to the topic its sink names.
#[derive(Clone, Debug, PartialEq)]
pub struct Repartition {
    pub writer: Step,
    /// The topic whose partition count the repartition topic must have, to be
    /// co-partitioned with it (a join's other side); None: as many as the writer's
    /// sources have at most.
    pub partitions_of: Option<String>,
}

/// Whether a column is one of the pseudo-columns a repartition topic changes.
fn is_position(column: &str) -> bool {
    column == "ROWPARTITION" || column == "ROWOFFSET"
}

/// A column of a join's input carried into the joined row, under a new name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedColumn {
    pub from: String,
    #[serde(rename = "as")]
    pub to: String,
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
        /// The key columns are new (PARTITION BY): a record with no key gets one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rekeyed: bool,
    },
    /// Reads a topic as a table's changelog: each record upserts its key, a null value
    /// deletes it, records without a key are dropped. Rows downstream are the table's
    /// changes; a null row (`$tombstone`) is a deletion.
    #[serde(rename = "tableSourceV1")]
    TableSource {
        name: String,
        topic: TopicSpec,
        /// Keep the table's current rows, so that each change also carries the row it
        /// replaces (a retraction, ahead of the new row): aggregations over a table
        /// need the old row to undo it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        materialized: bool,
    },
    /// A table's rows for which the predicate is not true become deletions (Kafka
    /// Streams' `KTable.filter`: the downstream table must forget them).
    #[serde(rename = "tableFilterV1")]
    TableFilter { input: Box<Step>, predicate: Expr },
    /// Computes a table's columns; the key columns are the input's, unchanged.
    #[serde(rename = "tableSelectV1")]
    TableSelect {
        input: Box<Step>,
        projection: Vec<NamedExpr>,
        schema: LogicalSchema,
    },
    /// Applies table functions: each input row becomes as many rows as its longest
    /// function result, the results in columns `$udtf0`, `$udtf1`, ... after the
    /// input's columns (NULL where a shorter result ran out).
    #[serde(rename = "streamFlatMapV1")]
    StreamFlatMap {
        input: Box<Step>,
        functions: Vec<TableFunctionCall>,
    },
    /// Joins two inputs on a key computed on each side (`left_key`, `right_key`, of the
    /// same type). The joined row has the key column (the first column of `schema`),
    /// then the carried columns of the left side, then those of the right (NULL where a
    /// side has no match), then ROWTIME: the later of the joined records' times.
    #[serde(rename = "joinV1")]
    Join {
        left: Box<Step>,
        right: Box<Step>,
        kind: JoinKind,
        shape: JoinShape,
        left_key: Expr,
        right_key: Expr,
        left_columns: Vec<CarriedColumn>,
        right_columns: Vec<CarriedColumn>,
        schema: LogicalSchema,
    },
    /// Writes rows to a topic; the record timestamp is the input row's ROWTIME.
    #[serde(rename = "streamSinkV1")]
    StreamSink { input: Box<Step>, topic: TopicSpec },
    /// Groups a stream by `group_by` and aggregates each group, producing a table.
    ///
    /// Over a table's changes, a retraction row undoes the old row in its group before
    /// the new row is added (every aggregate here then supports undo).
    ///
    /// Rows with a NULL group key, and null rows, are dropped. Each input row updates
    /// its group and emits the group's new row: the intermediate row has the key columns
    /// (named as in `schema`) followed by the aggregate results `$agg0`, `$agg1`, ...;
    /// `having` and `projection` are evaluated over it. A group for which `having` turns
    /// false after it was emitted gets a tombstone.
    #[serde(rename = "streamAggregateV1")]
    StreamAggregate {
        input: Box<Step>,
        /// Aggregate per time window: the intermediate row then also has WINDOWSTART
        /// and WINDOWEND.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<WindowSpec>,
        group_by: Vec<Expr>,
        aggregates: Vec<AggregateCall>,
        having: Option<Expr>,
        /// The value columns, over the intermediate row.
        projection: Vec<NamedExpr>,
        schema: LogicalSchema,
        /// EMIT FINAL: a window's row is written once, when the window closes, instead
        /// of on every change.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        emit_final: bool,
    },
    /// Writes a table's changelog to a topic: upserts, and tombstones for deletions.
    #[serde(rename = "tableSinkV1")]
    TableSink { input: Box<Step>, topic: TopicSpec },
}

impl Step {
    /// The schema of the rows this step produces.
    pub fn schema(&self) -> &LogicalSchema {
        match self {
            Step::StreamSource { topic, .. }
            | Step::TableSource { topic, .. }
            | Step::StreamSink { topic, .. }
            | Step::TableSink { topic, .. } => &topic.schema,
            Step::StreamFilter { input, .. }
            | Step::TableFilter { input, .. }
            | Step::StreamFlatMap { input, .. } => input.schema(),
            Step::StreamSelect { schema, .. }
            | Step::TableSelect { schema, .. }
            | Step::StreamAggregate { schema, .. }
            | Step::Join { schema, .. } => schema,
        }
    }

    /// The steps this one reads: none for a source, two for a join.
    pub fn inputs(&self) -> Vec<&Step> {
        match self {
            Step::Join { left, right, .. } => vec![left, right],
            _ => self.input().into_iter().collect(),
        }
    }

    /// The single input of a step that has one (None for sources and joins).
    pub fn input(&self) -> Option<&Step> {
        match self {
            Step::StreamSource { .. } | Step::TableSource { .. } | Step::Join { .. } => None,
            Step::StreamFilter { input, .. }
            | Step::TableFilter { input, .. }
            | Step::StreamFlatMap { input, .. }
            | Step::StreamSelect { input, .. }
            | Step::TableSelect { input, .. }
            | Step::StreamSink { input, .. }
            | Step::StreamAggregate { input, .. }
            | Step::TableSink { input, .. } => Some(input),
        }
    }

    /// Whether the plan keeps state (aggregations, materialized tables), which needs
    /// state stores.
    pub fn is_stateful(&self) -> bool {
        matches!(
            self,
            Step::StreamAggregate { .. }
                | Step::Join { .. }
                | Step::TableSource {
                    materialized: true,
                    ..
                }
        ) || self.inputs().into_iter().any(Step::is_stateful)
    }

    /// Whether the plan can run as one task per partition: every record's state (its
    /// group, its join partners) depends only on records of the same partition number
    /// of the sources, because each aggregation groups by (at least) the key the
    /// sources were partitioned by, and each join joins the sides on those keys.
    /// Otherwise records would have to be moved between partitions by a repartition
    /// topic first, and the plan runs as one task over every partition. Stateless plans
    /// always can; PARTITION BY just before the sink is stateless too. (The sources'
    /// partition counts must also be equal; the runtime checks that.)
    pub fn runs_per_partition(&self) -> bool {
        let local = match self {
            Step::StreamAggregate {
                input, group_by, ..
            } => input.source_key_columns().is_some_and(|keys| {
                !keys.is_empty()
                    && keys.iter().all(|k| {
                        group_by
                            .iter()
                            .any(|g| matches!(g, Expr::Column(c) if c == k))
                    })
            }),
            Step::Join { .. } => self.source_key_columns().is_some(),
            _ => true,
        };
        local && self.inputs().into_iter().all(Step::runs_per_partition)
    }

    /// Cuts a plan whose records must change partitions into parts at repartition
    /// topics, so that each part runs as a task per partition. Two cuts apply:
    ///
    /// - An aggregation that groups by something other than its source's key: the
    ///   first part computes each row's group key and writes the row, keyed by it, to a
    ///   repartition topic (`Aggregate-GroupBy`), where Kafka's partitioner puts every
    ///   row of a group in one partition; the second reads that topic and aggregates by
    ///   the key it carries. Over a table, a change also carries the row it replaces,
    ///   to be undone in its (old) group: the topic is a `retractions` one, as Kafka
    ///   Streams' `KTable.groupBy` sends old and new values through its repartition
    ///   topic.
    /// - A join whose stream side is joined on something other than its source's key:
    ///   that side's rows are written keyed by their join key (`Join-left`,
    ///   `Join-right`) in the other side's key format and partition count, so that a key
    ///   lands in the partition of the other side that holds it.
    ///
    /// `topic` names a repartition topic from its role. Returns the writing parts and
    /// the reading one; None when the plan needs no cut or no cut applies: the input
    /// to regroup must be a plain stream or a source table's changes (no earlier join or
    /// aggregation; no window over a table), a join must not be a foreign-key one and
    /// moves only stream sides, and nothing downstream may read ROWPARTITION or
    /// ROWOFFSET, which the repartition topic would change.
    pub fn split_at_repartition(
        &self,
        topic: &dyn Fn(&str) -> String,
    ) -> Option<(Vec<Repartition>, Step)> {
        if self.runs_per_partition() {
            return None;
        }
        let mut writers = Vec::new();
        let reader = self.replace_stateful(&mut Vec::new(), &mut |step, above| match step {
            Step::StreamAggregate {
                input,
                group_by,
                aggregates,
                having,
                projection,
                schema,
                window,
                ..
            } => {
                // A table's retractions undo only in unwindowed groups.
                if window.is_some() && input.is_table_changes() {
                    return None;
                }
                let keys: Vec<&crate::Column> = schema.keys().collect();
                let reads_position = aggregates
                    .iter()
                    .flat_map(|a| a.args.iter())
                    .chain(having)
                    .chain(projection.iter().map(|p| &p.expr))
                    .flat_map(Expr::column_refs)
                    .any(is_position);
                if keys.len() != group_by.len() || reads_position {
                    return None;
                }
                let key_types: Vec<(&Expr, SqlType)> = group_by
                    .iter()
                    .zip(keys.iter().map(|k| k.ty.clone()))
                    .collect();
                // Only the columns the aggregates read travel; the group key goes as
                // the record's key and ROWTIME as its timestamp.
                let read: Vec<&str> = aggregates
                    .iter()
                    .flat_map(|a| a.args.iter())
                    .flat_map(Expr::column_refs)
                    .collect();
                let (source, keys) = input.rekeyed_into(
                    &key_types,
                    Some(&read),
                    topic("Aggregate-GroupBy"),
                    Format::new(crate::FormatKind::Json),
                    None,
                    &mut writers,
                )?;
                let mut regrouped = step.clone();
                if let Step::StreamAggregate {
                    input, group_by, ..
                } = &mut regrouped
                {
                    **input = source;
                    *group_by = keys;
                }
                Some(regrouped)
            }
            Step::Join {
                left,
                right,
                shape,
                left_key,
                right_key,
                left_columns,
                right_columns,
                schema,
                ..
            } => {
                // Every column of both sides is carried, ROWPARTITION and ROWOFFSET
                // too: only whether anything reads them matters.
                // A windowed source is only joined on its key (with its window), which
                // a repartition topic would not keep.
                let windowed = left
                    .sources()
                    .iter()
                    .chain(&right.sources())
                    .any(|(_, t)| t.window.is_some());
                if matches!(shape, JoinShape::ForeignKey { .. })
                    || windowed
                    || left_columns
                        .iter()
                        .chain(right_columns)
                        .any(|c| is_position(&c.from) && above.contains(&c.to.as_str()))
                {
                    return None;
                }
                let (left_keyed, mut right_keyed) =
                    (left.joined_on_key(left_key), right.joined_on_key(right_key));
                // The joined row's key column has the join key's type.
                let key_type = schema.columns.first()?.ty.clone();
                let (format, partitions_of) = match (left_keyed, right_keyed) {
                    // Both on their keys, written in different formats: the right side
                    // moves into the left's (as ksqlDB does).
                    (true, true) => match (left.single_source(), right.partitioning_format()) {
                        (Some(t), Some(r)) if !same_key_bytes(&t.key_format, r) => {
                            right_keyed = false;
                            (t.key_format.clone(), Some(t.topic.clone()))
                        }
                        _ => return None,
                    },
                    (true, false) => {
                        let t = left.single_source()?;
                        (t.key_format.clone(), Some(t.topic.clone()))
                    }
                    (false, true) => {
                        let t = right.single_source()?;
                        (t.key_format.clone(), Some(t.topic.clone()))
                    }
                    // Both sides move: any format, as long as both use it.
                    (false, false) => (Format::new(crate::FormatKind::Json), None),
                };
                if format.kind.needs_schema_registry() {
                    // The other side's key bytes carry its writer's schema id, which
                    // the repartitioned keys would not share.
                    return None;
                }
                let mut cut = step.clone();
                let Step::Join {
                    left,
                    right,
                    left_key,
                    right_key,
                    ..
                } = &mut cut
                else {
                    return None;
                };
                for (side, key, keyed, role) in [
                    (left, left_key, left_keyed, "Join-left"),
                    (right, right_key, right_keyed, "Join-right"),
                ] {
                    if keyed {
                        continue;
                    }
                    // Only a stream side moves: a table is joined on its key.
                    if !side.is_exact_stream() {
                        return None;
                    }
                    let (source, mut keys) = side.rekeyed_into(
                        &[(&*key, key_type.clone())],
                        None,
                        topic(role),
                        format.clone(),
                        partitions_of.clone(),
                        &mut writers,
                    )?;
                    **side = source;
                    *key = keys.pop()?;
                }
                Some(cut)
            }
            _ => None,
        })?;
        (!writers.is_empty() && reader.runs_per_partition()).then_some((writers, reader))
    }

    /// This plan with its first aggregation or join (below sinks, projections and
    /// filters) replaced by what `f` makes of it (None: there is none, or `f` declined);
    /// `f` also gets the columns the steps above it read.
    fn replace_stateful<'a>(
        &'a self,
        above: &mut Vec<&'a str>,
        f: &mut impl FnMut(&Step, &[&str]) -> Option<Step>,
    ) -> Option<Step> {
        match self {
            Step::StreamFilter { predicate, .. } | Step::TableFilter { predicate, .. } => {
                above.extend(predicate.column_refs());
            }
            Step::StreamSelect { projection, .. } | Step::TableSelect { projection, .. } => {
                above.extend(projection.iter().flat_map(|p| p.expr.column_refs()));
            }
            _ => {}
        }
        let mut step = self.clone();
        let slot: &mut Step = match &mut step {
            Step::StreamAggregate { .. } | Step::Join { .. } => return f(self, above),
            Step::TableSink { input, .. }
            | Step::StreamSink { input, .. }
            | Step::StreamFilter { input, .. }
            | Step::StreamSelect { input, .. }
            | Step::TableFilter { input, .. }
            | Step::TableSelect { input, .. } => input,
            _ => return None,
        };
        let input = self.input()?;
        *slot = input.replace_stateful(above, f)?;
        Some(step)
    }

    /// Writes this step's rows to `topic` keyed by `keys` (each expression with its
    /// type), with the columns `only` names (all when None): pushes the writing part to
    /// `writers` and returns the step that reads the topic back, with the key columns
    /// that now hold the keys. A table's changes travel with their retractions
    /// (`TopicSpec::retractions`). None when the rows are neither a plain stream's nor a
    /// table's changes (`is_table_changes`).
    fn rekeyed_into(
        &self,
        keys: &[(&Expr, SqlType)],
        only: Option<&[&str]>,
        topic: String,
        key_format: Format,
        partitions_of: Option<String>,
        writers: &mut Vec<Repartition>,
    ) -> Option<(Step, Vec<Expr>)> {
        let retractions = self.is_table_changes();
        if !retractions && !self.is_exact_stream() {
            return None;
        }
        let names: Vec<String> = (0..keys.len()).map(|i| format!("$KEY{i}")).collect();
        let mut columns = Vec::new();
        let mut select = Vec::new();
        for ((expr, ty), name) in keys.iter().zip(&names) {
            columns.push(crate::Column::key(name.clone(), ty.clone()));
            select.push(NamedExpr {
                name: name.clone(),
                expr: (*expr).clone(),
            });
        }
        let all = &self.schema().columns;
        let mut carried: Vec<&crate::Column> = all
            .iter()
            .filter(|c| only.is_none_or(|only| only.contains(&c.name.as_str())))
            .collect();
        if carried.is_empty() {
            // A record with no value is a tombstone, which a stream's readers drop:
            // carry one column so that the row is a row.
            carried.extend(all.first());
        }
        for c in carried {
            columns.push(crate::Column::value(c.name.clone(), c.ty.clone()));
            select.push(NamedExpr {
                name: c.name.clone(),
                expr: Expr::Column(c.name.clone()),
            });
        }
        let spec = TopicSpec {
            topic,
            key_format,
            value_format: Format::new(crate::FormatKind::Json),
            schema: LogicalSchema::new(columns),
            timestamp: None,
            timestamp_format: None,
            window: None,
            retractions,
        };
        writers.push(Repartition {
            writer: Step::StreamSink {
                input: Box::new(Step::StreamSelect {
                    input: Box::new(self.clone()),
                    projection: select,
                    schema: spec.schema.clone(),
                    rekeyed: true,
                }),
                topic: spec.clone(),
            },
            partitions_of,
        });
        let source = Step::StreamSource {
            name: "REPARTITION".into(),
            topic: spec,
        };
        Some((source, names.into_iter().map(Expr::Column).collect()))
    }

    /// Whether a join side joined on `key` is joined on the key its source was
    /// partitioned by.
    fn joined_on_key(&self, key: &Expr) -> bool {
        self.source_key_columns()
            .is_some_and(|k| matches!((k.as_slice(), key), ([k], Expr::Column(c)) if c == k))
    }

    /// The key format of the source records whose partitions this step's rows are in
    /// (a join's: its left side's); None when that is not one source's.
    fn partitioning_format(&self) -> Option<&Format> {
        match self {
            Step::StreamSource { topic, .. } | Step::TableSource { topic, .. } => {
                Some(&topic.key_format)
            }
            Step::Join { left, .. } => left.partitioning_format(),
            _ => {
                let inputs = self.inputs();
                match inputs.as_slice() {
                    [input] => input.partitioning_format(),
                    _ => None,
                }
            }
        }
    }

    /// The topic of the one source this step reads, if it reads one.
    fn single_source(&self) -> Option<&TopicSpec> {
        match self.sources()[..] {
            [(_, topic)] => Some(topic),
            _ => None,
        }
    }

    /// Whether this step's rows are the changes of a table whose rows are kept (each
    /// change comes after the retraction of the key's previous row), through table
    /// filters and projections only. A windowed table's rows are not: their windows are
    /// in their keys, which a regrouping replaces.
    fn is_table_changes(&self) -> bool {
        match self {
            Step::TableSource {
                materialized,
                topic,
                ..
            } => *materialized && topic.window.is_none(),
            Step::TableFilter { input, .. } | Step::TableSelect { input, .. } => {
                input.is_table_changes()
            }
            _ => false,
        }
    }

    /// Whether this step's rows come from streams only and have exactly its schema's
    /// columns (besides the pseudo-columns): a table function's result columns, for
    /// one, are not in its schema until a projection names them.
    fn is_exact_stream(&self) -> bool {
        fn streams_only(step: &Step) -> bool {
            match step {
                Step::StreamSource { .. } => true,
                Step::StreamFilter { input, .. }
                | Step::StreamSelect { input, .. }
                | Step::StreamFlatMap { input, .. } => streams_only(input),
                _ => false,
            }
        }
        match self {
            Step::StreamSource { .. } => true,
            Step::StreamFilter { input, .. } => input.is_exact_stream(),
            Step::StreamSelect { input, .. } => streams_only(input),
            _ => false,
        }
    }

    /// The columns of this step's rows that hold the key its source's records were
    /// partitioned by, in key order; None when the rows are not partitioned by their
    /// source's key any more (a new key, a windowed source, a foreign-key join).
    fn source_key_columns(&self) -> Option<Vec<&str>> {
        match self {
            Step::StreamSource { topic, .. } | Step::TableSource { topic, .. } => {
                // A windowed key's partition is the bare key's, but its columns differ.
                (topic.window.is_none())
                    .then(|| topic.schema.keys().map(|c| c.name.as_str()).collect())
            }
            Step::StreamFilter { input, .. }
            | Step::TableFilter { input, .. }
            | Step::StreamFlatMap { input, .. }
            | Step::StreamSink { input, .. }
            | Step::TableSink { input, .. } => input.source_key_columns(),
            Step::StreamSelect { rekeyed: true, .. } => None,
            Step::StreamSelect {
                input, projection, ..
            }
            | Step::TableSelect {
                input, projection, ..
            } => input
                .source_key_columns()?
                .into_iter()
                .map(|k| {
                    projection
                        .iter()
                        .find(|p| matches!(&p.expr, Expr::Column(c) if c == k))
                        .map(|p| p.name.as_str())
                })
                .collect(),
            Step::StreamAggregate { schema, .. } => {
                // Per partition only when it groups by the source key (checked by
                // `runs_per_partition`): its groups then stay in their partition.
                Some(schema.keys().map(|c| c.name.as_str()).collect())
            }
            Step::Join {
                left,
                right,
                shape,
                left_key,
                right_key,
                schema,
                ..
            } => {
                if matches!(shape, JoinShape::ForeignKey { .. }) {
                    return None;
                }
                // Keys written in different formats are different bytes, which Kafka's
                // partitioner puts in different partitions.
                let co_partitioned = match (left.partitioning_format(), right.partitioning_format())
                {
                    (Some(l), Some(r)) => same_key_bytes(l, r),
                    _ => true,
                };
                (co_partitioned && left.joined_on_key(left_key) && right.joined_on_key(right_key))
                    .then(|| {
                        schema
                            .columns
                            .first()
                            .map(|c| c.name.as_str())
                            .into_iter()
                            .collect()
                    })
            }
        }
    }

    /// The sources the plan reads, with their names in the catalog.
    pub fn sources(&self) -> Vec<(&str, &TopicSpec)> {
        match self {
            Step::StreamSource { name, topic } | Step::TableSource { name, topic, .. } => {
                vec![(name.as_str(), topic)]
            }
            _ => self.inputs().into_iter().flat_map(Step::sources).collect(),
        }
    }

    /// Why the plan's joins cannot run on topics with these partition counts (given per
    /// source, in the order of `sources`): the sides of a key join must be
    /// co-partitioned. A foreign-key join needs no co-partitioning.
    pub fn copartitioning_error(&self, partitions: &[(&str, u32)]) -> Option<String> {
        fn key_joined(step: &Step) -> bool {
            matches!(step, Step::Join { shape, .. } if !matches!(shape, JoinShape::ForeignKey { .. }))
                || step.inputs().into_iter().any(key_joined)
        }
        if !key_joined(self) {
            return None;
        }
        let (first, n) = partitions.first()?;
        partitions.iter().find(|(_, m)| m != n).map(|(other, m)| {
            format!(
                "Can't join `{first}` with `{other}` since the number of partitions don't match. `{first}` partitions = {n}; `{other}` partitions = {m}. Please repartition either one so that the number of partitions match."
            )
        })
    }

    /// Every source topic the plan reads.
    pub fn source_topics(&self) -> Vec<&TopicSpec> {
        match self {
            Step::StreamSource { topic, .. } | Step::TableSource { topic, .. } => vec![topic],
            _ => self
                .inputs()
                .into_iter()
                .flat_map(Step::source_topics)
                .collect(),
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
                "SOURCE {name} (topic: {}, key: {}, value: {}{}) [{}]",
                topic.topic,
                topic.key_format.kind,
                topic.value_format.kind,
                topic.retractions_note(),
                topic.schema
            ),
            Step::TableSource { name, topic, .. } => format!(
                "TABLE SOURCE {name} (topic: {}, key: {}, value: {}) [{}]",
                topic.topic, topic.key_format.kind, topic.value_format.kind, topic.schema
            ),
            Step::StreamFilter { predicate, .. } | Step::TableFilter { predicate, .. } => {
                format!("FILTER {predicate}")
            }
            Step::StreamFlatMap { functions, .. } => {
                let calls: Vec<String> = functions
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let args: Vec<String> = f.args.iter().map(|e| e.to_string()).collect();
                        format!("{}({}) AS $udtf{i}", f.function, args.join(", "))
                    })
                    .collect();
                format!("FLAT MAP {}", calls.join(", "))
            }
            Step::StreamSelect { projection, .. } | Step::TableSelect { projection, .. } => {
                let cols: Vec<String> = projection
                    .iter()
                    .map(|p| format!("{} AS {}", p.expr, p.name))
                    .collect();
                format!("PROJECT {}", cols.join(", "))
            }
            Step::StreamSink { topic, .. } | Step::TableSink { topic, .. } => format!(
                "SINK {} (key: {}, value: {}{}) [{}]",
                topic.topic,
                topic.key_format.kind,
                topic.value_format.kind,
                topic.retractions_note(),
                topic.schema
            ),
            Step::StreamAggregate {
                group_by,
                aggregates,
                having,
                projection,
                ..
            } => {
                let keys: Vec<String> = group_by.iter().map(|e| e.to_string()).collect();
                let aggs: Vec<String> = aggregates
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let args: Vec<String> = a.args.iter().map(|e| e.to_string()).collect();
                        format!("{}({}) AS $agg{i}", a.function, args.join(", "))
                    })
                    .collect();
                let cols: Vec<String> = projection
                    .iter()
                    .map(|p| format!("{} AS {}", p.expr, p.name))
                    .collect();
                let mut line = format!(
                    "AGGREGATE BY {} [{}] PROJECT {}",
                    keys.join(", "),
                    aggs.join(", "),
                    cols.join(", ")
                );
                if let Some(h) = having {
                    line.push_str(&format!(" HAVING {h}"));
                }
                line
            }
            Step::Join {
                kind,
                shape,
                left_key,
                right_key,
                ..
            } => {
                let within = match shape {
                    JoinShape::StreamStream {
                        before_ms,
                        after_ms,
                        grace_ms,
                    } => {
                        let mut w = format!(" WITHIN ({before_ms} ms, {after_ms} ms)");
                        if let Some(g) = grace_ms {
                            w.push_str(&format!(" GRACE {g} ms"));
                        }
                        w
                    }
                    JoinShape::StreamTable
                    | JoinShape::TableTable
                    | JoinShape::ForeignKey { .. } => String::new(),
                };
                format!(
                    "{kind:?} JOIN {shape_name}{within} ON {left_key} = {right_key}",
                    shape_name = match shape {
                        JoinShape::StreamStream { .. } => "STREAM-STREAM",
                        JoinShape::StreamTable => "STREAM-TABLE",
                        JoinShape::TableTable => "TABLE-TABLE",
                        JoinShape::ForeignKey { .. } => "FOREIGN-KEY",
                    }
                )
            }
        };
        out.push_str(&pad);
        out.push_str(&line);
        out.push('\n');
        for input in self.inputs() {
            input.explain_into(out, depth + 1);
        }
    }
}

/// Whether keys written in these two formats are the same bytes (and so land in the
/// same partitions). A schema-registry format's bytes carry the id of the schema each
/// topic registered, so two topics' keys never are.
fn same_key_bytes(a: &Format, b: &Format) -> bool {
    a.kind == b.kind
        && !a.kind.needs_schema_registry()
        && (a.kind != crate::FormatKind::Delimited
            || a.delimiter.unwrap_or(',') == b.delimiter.unwrap_or(','))
}
