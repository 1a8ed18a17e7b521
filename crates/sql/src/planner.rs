//! Turns parsed statements into what the engine executes: catalog changes and query plans.

use crate::analyzer::{Clause, ExprAnalyzer, Scope, ScopeColumn};
use crate::ast::{
    self, ColumnConstraint, CreateAs, CreateSource, ExprKind, Properties, PropertyValue,
    SelectItem, SourceKind, StatementKind,
};
use crate::error::{Pos, SqlError, closest};
use serde::{Deserialize, Serialize};
use sluice_plan::{
    Column, ColumnKind, Format, FormatKind, LogicalSchema, NamedExpr, PLAN_VERSION, PSEUDO_COLUMNS,
    QueryPlan, SqlType, Step, TopicSpec,
};

/// A stream or table the catalog knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDesc {
    pub name: String,
    pub kind: SourceKindName,
    pub topic: TopicSpec,
    /// Created with CREATE SOURCE: read-only.
    pub is_source: bool,
    /// The statement that created it.
    pub sql: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceKindName {
    Stream,
    Table,
}

impl From<SourceKind> for SourceKindName {
    fn from(k: SourceKind) -> Self {
        match k {
            SourceKind::Stream => SourceKindName::Stream,
            SourceKind::Table => SourceKindName::Table,
        }
    }
}

impl SourceKindName {
    /// "stream" or "table", as ksqlDB writes it in messages.
    pub fn lower(self) -> &'static str {
        match self {
            SourceKindName::Stream => "stream",
            SourceKindName::Table => "table",
        }
    }

    /// "Stream" or "Table".
    pub fn title(self) -> &'static str {
        match self {
            SourceKindName::Stream => "Stream",
            SourceKindName::Table => "Table",
        }
    }
}

/// What the planner needs to know about existing sources.
pub trait Catalog {
    fn source(&self, name: &str) -> Option<&SourceDesc>;
    fn source_names(&self) -> Vec<&str>;
}

/// A catalog can be a plain map from names to sources.
impl Catalog for std::collections::BTreeMap<String, SourceDesc> {
    fn source(&self, name: &str) -> Option<&SourceDesc> {
        self.get(name)
    }

    fn source_names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}

/// A value for a column of type `to` in INSERT VALUES: NULL, a value of a type that
/// widens to it, or a STRUCT (or ARRAY of them) built with its fields in another order,
/// some missing (NULL) or some the column does not have (left out), as ksqlDB takes them.
fn fit_value(typed: (sluice_plan::Expr, SqlType), to: &SqlType) -> Option<sluice_plan::Expr> {
    use sluice_plan::Expr;
    let (expr, from) = typed;
    if from == *to
        || matches!(expr, Expr::Literal(sluice_plan::Literal::Null(_)))
        || crate::analyzer::unify(&from, to).as_ref() == Some(to)
    {
        return Some(crate::analyzer::cast_to((expr, from), to));
    }
    match (expr, to) {
        (Expr::MakeStruct { fields, ty }, SqlType::Struct(targets)) => {
            let SqlType::Struct(given) = ty else {
                return None;
            };
            let mut out = Vec::with_capacity(targets.len());
            for t in targets {
                let found = fields
                    .iter()
                    .zip(&given)
                    .find(|((n, _), _)| *n == t.name)
                    .or_else(|| {
                        fields
                            .iter()
                            .zip(&given)
                            .find(|((n, _), _)| n.eq_ignore_ascii_case(&t.name))
                    });
                let value = match found {
                    Some(((_, v), g)) => fit_value((v.clone(), g.ty.clone()), &t.ty)?,
                    None => Expr::Literal(sluice_plan::Literal::Null(t.ty.clone())),
                };
                out.push((t.name.clone(), value));
            }
            Some(Expr::MakeStruct {
                fields: out,
                ty: to.clone(),
            })
        }
        (Expr::MakeArray { items, ty }, SqlType::Array(target)) => {
            let SqlType::Array(given) = ty else {
                return None;
            };
            let items = items
                .into_iter()
                .map(|i| fit_value((i, (*given).clone()), target))
                .collect::<Option<Vec<_>>>()?;
            Some(Expr::MakeArray {
                items,
                ty: to.clone(),
            })
        }
        _ => None,
    }
}

/// ksqlDB's message for a CREATE whose name is taken.
pub fn already_exists(kind: SourceKindName, name: &str, existing: SourceKindName) -> String {
    format!(
        "Cannot add {} '{name}': A {} with the same name already exists",
        kind.lower(),
        existing.lower()
    )
}

/// How to create a topic that does not exist yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicCreation {
    /// None: as many as the query's source topic has.
    pub partitions: Option<u32>,
    /// None: the broker's default.
    pub replicas: Option<i16>,
}

/// A statement made ready to execute.
#[derive(Clone, Debug, PartialEq)]
pub enum Planned {
    CreateSource {
        source: SourceDesc,
        if_not_exists: bool,
        or_replace: bool,
        /// Create the topic when it is missing (PARTITIONS was given).
        create_topic: Option<TopicCreation>,
    },
    /// CREATE STREAM|TABLE AS SELECT: a new sink and the persistent query that fills it.
    CreateAs {
        sink: SourceDesc,
        if_not_exists: bool,
        or_replace: bool,
        create_topic: TopicCreation,
        plan: Box<QueryPlan>,
        /// Names of the sources the query reads.
        inputs: Vec<String>,
    },
    /// A push query (`SELECT ... EMIT CHANGES [LIMIT n]`) or a pull query (without EMIT):
    /// a transient query whose rows go to the client. Its plan ends in a sink whose topic
    /// is never written; the runtime hands the rows out instead, every column of the
    /// sink's schema in order.
    Select {
        plan: Box<QueryPlan>,
        /// The result's columns, in the order the rows have them.
        schema: LogicalSchema,
        /// Whether the result is a table (rows are upserts by key; deletions possible).
        is_table: bool,
        limit: Option<u64>,
        /// A pull query: the result as of now (the sources read to their current end),
        /// then the response ends.
        pull: bool,
    },
    /// EXPLAIN of a running query, by id.
    ExplainQuery(String),
    /// EXPLAIN of a statement: the plan it would run.
    ExplainStatement(Box<QueryPlan>),
    /// DESCRIBE FUNCTION: a function that exists (see `functions::describe`).
    DescribeFunction(String),
    /// ALTER STREAM|TABLE ... ADD COLUMN: the source as it is with the new value columns.
    Alter {
        source: SourceDesc,
    },
    /// INSERT INTO ... VALUES: one record for the target's topic. The values are constant
    /// expressions, each of its column's type; columns not given are NULL.
    InsertValues {
        target: String,
        topic: TopicSpec,
        values: Vec<NamedExpr>,
        /// The record's timestamp when ROWTIME is given (else the time of insertion).
        rowtime: Option<sluice_plan::Expr>,
    },
    /// INSERT INTO an existing stream: a persistent query writing to its topic.
    InsertInto {
        target: String,
        plan: Box<QueryPlan>,
        inputs: Vec<String>,
    },
    Drop {
        kind: SourceKindName,
        name: String,
        if_exists: bool,
        delete_topic: bool,
    },
    Terminate(Option<String>),
    /// PAUSE (`paused`) or RESUME of a query, or of all (None).
    Pause {
        query_id: Option<String>,
        paused: bool,
    },
    Show(ast::ShowTarget),
    Describe {
        name: String,
        extended: bool,
    },
    /// SET (Some) or UNSET (None) of a property for the statements that follow.
    Property {
        name: String,
        value: Option<String>,
    },
    /// CREATE TYPE: a custom type for the statements after it (of every session).
    CreateType {
        name: String,
        ty: SqlType,
        if_not_exists: bool,
    },
    DropType {
        name: String,
        if_exists: bool,
    },
    /// DEFINE (Some) or UNDEFINE (None) of a variable: applied as the script is read
    /// (`script::parse_script`), nothing to execute.
    Variable {
        name: String,
        value: Option<String>,
    },
    /// ASSERT [NOT EXISTS] TOPIC: the topic exists (with these partitions and replicas,
    /// where given) or not, within the timeout.
    AssertTopic {
        topic: String,
        exists: bool,
        partitions: Option<u32>,
        replicas: Option<i16>,
        timeout_ms: u64,
    },
    /// ASSERT [NOT EXISTS] SCHEMA: a schema is registered (under the subject, with the
    /// id) or not, within the timeout.
    AssertSchema {
        subject: Option<String>,
        id: Option<i32>,
        exists: bool,
        timeout_ms: u64,
    },
}

/// Why ASSERT TOPIC fails, given the topic's partition count (None: no such topic);
/// None when it holds.
pub fn assert_topic_failure(
    topic: &str,
    exists: bool,
    partitions: Option<u32>,
    found: Option<u32>,
) -> Option<String> {
    match (exists, found) {
        (true, None) => Some(format!("Topic {topic} does not exist")),
        (true, Some(n)) => partitions.filter(|p| *p != n).map(|p| {
            format!(
                "Mismatched configuration for topic {topic}: For config partitions, expected {p} got {n}"
            )
        }),
        (false, Some(_)) => Some(format!("Topic {topic} exists")),
        (false, None) => None,
    }
}

/// Why ASSERT SCHEMA fails, given whether the schema was found; None when it holds.
pub fn assert_schema_failure(
    subject: Option<&str>,
    id: Option<i32>,
    exists: bool,
    found: bool,
) -> Option<String> {
    if exists == found {
        return None;
    }
    let mut what = String::from("Schema with");
    if let Some(s) = subject {
        what.push_str(&format!(" subject name {s}"));
    }
    if let Some(id) = id {
        what.push_str(&format!(" id {id}"));
    }
    Some(if exists {
        format!("{what} does not exist")
    } else {
        format!("{what} exists")
    })
}

/// How long an ASSERT waits when it names no TIMEOUT
/// (`ksql.assert.topic.default.timeout.ms`, `ksql.assert.schema.default.timeout.ms`).
pub const ASSERT_TIMEOUT_MS: u64 = 1_000;

/// Defaults that come from configuration rather than the statement.
#[derive(Clone, Debug)]
pub struct PlannerConfig {
    /// `ksql.persistence.default.format.key`
    pub default_key_format: FormatKind,
    /// `ksql.persistence.default.format.value`, unset by default as in ksqlDB.
    pub default_value_format: Option<FormatKind>,
    /// `ksql.persistence.wrap.single.values`: whether single-column values are wrapped
    /// when the statement does not say (None: wrapped).
    pub wrap_single_values: Option<bool>,
    /// `ksql.output.topic.name.prefix`: prepended to the default name of a sink topic.
    pub output_topic_prefix: String,
    /// `ksql.functions.collect_list.limit` and `ksql.functions.collect_set.limit`.
    pub collect_list_limit: Option<i64>,
    pub collect_set_limit: Option<i64>,
    /// `ksql.timestamp.throw.on.invalid`.
    pub throw_on_invalid_timestamp: bool,
    /// Planning a push query: its rows go to a client, not to a topic, so a projection
    /// need not include the source's key columns.
    pub transient: bool,
    /// What pull queries may do.
    pub pull: crate::pull::PullConfig,
    /// `ksql.new.query.planner.enabled` (off by default, as in ksqlDB): a stream's
    /// projection may leave out every key column, making a stream without keys.
    pub new_query_planner: bool,
    /// Where AVRO and JSON_SR schemas are looked up (inference, VALUE_SCHEMA_ID); None
    /// when the server has no registry.
    pub registry: Option<std::sync::Arc<dyn sluice_registry::SchemaRegistry>>,
}

impl PlannerConfig {
    /// Applies one ksqlDB property (from the server's configuration, SET, or a request's
    /// `streamsProperties`); properties the planner does not read are ignored.
    pub fn apply(&mut self, name: &str, value: &str) {
        let value = value.trim();
        match name {
            "ksql.persistence.default.format.value" => {
                self.default_value_format = FormatKind::parse(value);
            }
            "ksql.persistence.default.format.key" => {
                if let Some(k) = FormatKind::parse(value) {
                    self.default_key_format = k;
                }
            }
            "ksql.persistence.wrap.single.values" => {
                self.wrap_single_values = value.parse().ok();
            }
            "ksql.output.topic.name.prefix" => self.output_topic_prefix = value.to_string(),
            "ksql.functions.collect_list.limit" => self.collect_list_limit = value.parse().ok(),
            "ksql.timestamp.throw.on.invalid" => {
                self.throw_on_invalid_timestamp = value.eq_ignore_ascii_case("true")
            }
            "ksql.functions.collect_set.limit" => self.collect_set_limit = value.parse().ok(),
            "ksql.query.pull.table.scan.enabled" => {
                self.pull.table_scan = !value.eq_ignore_ascii_case("false");
            }
            "ksql.new.query.planner.enabled" => {
                self.new_query_planner = value.eq_ignore_ascii_case("true");
            }
            "ksql.query.pull.range.scan.enabled" => {
                self.pull.range_scan = !value.eq_ignore_ascii_case("false");
            }
            _ => {}
        }
    }
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            default_key_format: FormatKind::Kafka,
            default_value_format: None,
            wrap_single_values: None,
            output_topic_prefix: String::new(),
            collect_list_limit: None,
            throw_on_invalid_timestamp: false,
            collect_set_limit: None,
            transient: false,
            pull: Default::default(),
            new_query_planner: false,
            registry: None,
        }
    }
}

/// Plans a script of CREATE statements against a catalog of its own and returns the plan
/// of its last CREATE ... AS SELECT: how benchmarks and tests of the runtime get a plan
/// from SQL without a server.
pub fn plan_last_query(statements: &str) -> Result<QueryPlan, SqlError> {
    let mut catalog: std::collections::BTreeMap<String, SourceDesc> = Default::default();
    let mut last = None;
    for stmt in crate::parse_statements(statements)? {
        match plan_statement(&stmt, &catalog, &PlannerConfig::default())? {
            Planned::CreateSource { source, .. } => {
                catalog.insert(source.name.clone(), source);
            }
            Planned::CreateAs { sink, plan, .. } => {
                catalog.insert(sink.name.clone(), sink);
                last = Some(*plan);
            }
            other => {
                return Err(SqlError::Unsupported {
                    pos: None,
                    message: format!("only CREATE statements plan here, not {other:?}"),
                });
            }
        }
    }
    last.ok_or_else(|| SqlError::Unsupported {
        pos: None,
        message: "the statements have no CREATE ... AS SELECT".into(),
    })
}

pub fn plan_statement(
    stmt: &ast::Statement,
    catalog: &dyn Catalog,
    config: &PlannerConfig,
) -> Result<Planned, SqlError> {
    match &stmt.kind {
        StatementKind::CreateSource(c) => plan_create_source(stmt, c, catalog, config),
        StatementKind::CreateAs(c) => plan_create_as(stmt, c, catalog, config),
        StatementKind::InsertInto { target, query } => {
            plan_insert_into(stmt, target, query, catalog, config)
        }
        StatementKind::Select(query) => plan_select(stmt, query, catalog, config),
        StatementKind::InsertValues {
            target,
            columns,
            values,
        } => plan_insert_values(stmt, target, columns.as_deref(), values, catalog),
        StatementKind::Alter {
            kind,
            name,
            columns,
        } => plan_alter(stmt, *kind, name, columns, catalog),
        StatementKind::ExplainQuery(id) => Ok(Planned::ExplainQuery(id.clone())),
        StatementKind::Print { .. } => Err(SqlError::semantic(
            stmt.pos,
            "The following statement types should be issued to the websocket endpoint '/query':\n\t* PRINT\n\t* SELECT",
        )),
        StatementKind::ExplainStatement(inner) => {
            let inner_stmt = ast::Statement {
                kind: (**inner).clone(),
                ..stmt.clone()
            };
            let plan = match plan_statement(&inner_stmt, catalog, config)? {
                Planned::CreateAs { plan, .. }
                | Planned::InsertInto { plan, .. }
                | Planned::Select { plan, .. } => plan,
                _ => {
                    return Err(SqlError::semantic(
                        stmt.pos,
                        "EXPLAIN takes a query id or a SELECT, CREATE ... AS SELECT or INSERT INTO ... SELECT statement",
                    ));
                }
            };
            Ok(Planned::ExplainStatement(plan))
        }
        StatementKind::DescribeFunction(name) => {
            if crate::functions::describe(name).is_none() {
                return Err(SqlError::semantic(
                    stmt.pos,
                    format!("Can't find any functions with the name '{name}'"),
                ));
            }
            Ok(Planned::DescribeFunction(name.clone()))
        }
        StatementKind::Drop {
            kind,
            name,
            if_exists,
            delete_topic,
        } => Ok(Planned::Drop {
            kind: (*kind).into(),
            name: name.clone(),
            if_exists: *if_exists,
            delete_topic: *delete_topic,
        }),
        StatementKind::Terminate(id) => Ok(Planned::Terminate(id.clone())),
        StatementKind::Pause { query_id, paused } => Ok(Planned::Pause {
            query_id: query_id.clone(),
            paused: *paused,
        }),
        StatementKind::Show(t) => Ok(Planned::Show(*t)),
        StatementKind::Describe { name, extended } => Ok(Planned::Describe {
            name: name.clone(),
            extended: *extended,
        }),
        StatementKind::SetProperty { name, value } => Ok(Planned::Property {
            name: name.clone(),
            value: Some(value.clone()),
        }),
        StatementKind::UnsetProperty { name } => Ok(Planned::Property {
            name: name.clone(),
            value: None,
        }),
        StatementKind::CreateType {
            name,
            ty,
            if_not_exists,
        } => {
            const BUILT_IN: &[&str] = &[
                "BOOLEAN",
                "INT",
                "INTEGER",
                "BIGINT",
                "DOUBLE",
                "DECIMAL",
                "STRING",
                "VARCHAR",
                "BYTES",
                "DATE",
                "TIME",
                "TIMESTAMP",
                "ARRAY",
                "MAP",
                "STRUCT",
            ];
            if BUILT_IN.contains(&name.to_uppercase().as_str()) {
                return Err(SqlError::semantic(
                    stmt.pos,
                    format!(
                        "Cannot register custom type '{name}': it is the name of a built-in type."
                    ),
                ));
            }
            Ok(Planned::CreateType {
                name: name.to_uppercase(),
                ty: ty.clone(),
                if_not_exists: *if_not_exists,
            })
        }
        StatementKind::DropType { name, if_exists } => Ok(Planned::DropType {
            name: name.to_uppercase(),
            if_exists: *if_exists,
        }),
        StatementKind::AssertTopic {
            topic,
            exists,
            properties,
            timeout_ms,
        } => {
            let with = With::new(properties, &["PARTITIONS", "REPLICAS"], &[])?;
            let (partitions, replicas) = with.topic_creation()?;
            Ok(Planned::AssertTopic {
                topic: topic.clone(),
                exists: *exists,
                partitions,
                replicas,
                timeout_ms: timeout_ms.unwrap_or(ASSERT_TIMEOUT_MS),
            })
        }
        StatementKind::AssertSchema {
            subject,
            id,
            exists,
            timeout_ms,
        } => {
            if subject.is_none() && id.is_none() {
                return Err(SqlError::semantic(
                    stmt.pos,
                    "ASSERT SCHEMA statements much include a subject name or an id",
                ));
            }
            let id = match id {
                Some(id) => Some(i32::try_from(*id).map_err(|_| {
                    SqlError::semantic(stmt.pos, format!("Invalid schema id: {id}"))
                })?),
                None => None,
            };
            Ok(Planned::AssertSchema {
                subject: subject.clone(),
                id,
                exists: *exists,
                timeout_ms: timeout_ms.unwrap_or(ASSERT_TIMEOUT_MS),
            })
        }
        StatementKind::Define { name, value } => Ok(Planned::Variable {
            name: name.clone(),
            value: Some(value.clone()),
        }),
        StatementKind::Undefine { name } => Ok(Planned::Variable {
            name: name.clone(),
            value: None,
        }),
    }
}

// ---- WITH properties ----

const SOURCE_PROPERTIES: &[&str] = &[
    "KAFKA_TOPIC",
    "KEY_FORMAT",
    "VALUE_FORMAT",
    "FORMAT",
    "PARTITIONS",
    "REPLICAS",
    "VALUE_DELIMITER",
    "KEY_DELIMITER",
    "WRAP_SINGLE_VALUE",
    "TIMESTAMP",
    "TIMESTAMP_FORMAT",
];

/// The WITH properties of schema-registry formats.
const REGISTRY_PROPERTIES: &[&str] = &[
    "KEY_PROTOBUF_NULLABLE_REPRESENTATION",
    "VALUE_PROTOBUF_NULLABLE_REPRESENTATION",
    "KEY_SCHEMA_ID",
    "VALUE_SCHEMA_ID",
    "KEY_SCHEMA_FULL_NAME",
    "VALUE_SCHEMA_FULL_NAME",
    "VALUE_AVRO_SCHEMA_FULL_NAME",
];

/// The WITH clause, checked against the properties a statement accepts.
struct With<'a> {
    props: &'a Properties,
}

impl<'a> With<'a> {
    fn new(
        props: &'a Properties,
        allowed: &[&str],
        unsupported: &[&str],
    ) -> Result<Self, SqlError> {
        for (name, _, pos) in &props.entries {
            if unsupported.contains(&name.as_str()) {
                return Err(SqlError::unsupported(
                    *pos,
                    format!("The {name} property is not supported yet"),
                ));
            }
            if !allowed.contains(&name.as_str()) {
                let err = SqlError::semantic(
                    *pos,
                    format!("Invalid config variable(s) in the WITH clause: {name}"),
                );
                return Err(match closest(name, allowed.iter().copied()) {
                    Some(c) => err.with_hint(format!("Did you mean {c}?")),
                    None => err,
                });
            }
        }
        Ok(With { props })
    }

    fn pos(&self, name: &str) -> Option<Pos> {
        self.props
            .entries
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, p)| *p)
    }

    fn string(&self, name: &str) -> Result<Option<String>, SqlError> {
        match self.props.get(name) {
            None => Ok(None),
            Some(PropertyValue::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(SqlError::semantic(
                self.pos(name),
                format!("Property {name} must be a string in quotes, got {other}"),
            )),
        }
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, SqlError> {
        match self.props.get(name) {
            None => Ok(None),
            Some(PropertyValue::Number(n)) => n.parse().map(Some).map_err(|_| {
                SqlError::semantic(
                    self.pos(name),
                    format!("Property {name} must be an integer: {n}"),
                )
            }),
            Some(PropertyValue::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                SqlError::semantic(
                    self.pos(name),
                    format!("Property {name} must be an integer: {s}"),
                )
            }),
            Some(other) => Err(SqlError::semantic(
                self.pos(name),
                format!("Property {name} must be an integer, got {other}"),
            )),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, SqlError> {
        match self.props.get(name) {
            None => Ok(None),
            Some(PropertyValue::Boolean(b)) => Ok(Some(*b)),
            Some(PropertyValue::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(PropertyValue::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(SqlError::semantic(
                self.pos(name),
                format!("Property {name} must be true or false, got {other}"),
            )),
        }
    }

    fn format(&self, name: &str) -> Result<Option<FormatKind>, SqlError> {
        match self.string(name)? {
            None => Ok(None),
            Some(f) => FormatKind::parse(&f).map(Some).ok_or_else(|| {
                SqlError::semantic(
                    self.pos(name),
                    format!("Unknown format: {}", f.to_uppercase()),
                )
            }),
        }
    }

    /// KEY_FORMAT / VALUE_FORMAT / FORMAT, with FORMAT conflicting with either of the others.
    fn formats(&self) -> Result<(Option<FormatKind>, Option<FormatKind>), SqlError> {
        let both = self.format("FORMAT")?;
        let key = self.format("KEY_FORMAT")?;
        let value = self.format("VALUE_FORMAT")?;
        if both.is_some() && key.is_some() {
            return Err(SqlError::semantic(
                self.pos("FORMAT"),
                "Cannot supply both 'KEY_FORMAT' and 'FORMAT' properties, as 'FORMAT' sets both key and value formats. Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'.",
            ));
        }
        if both.is_some() && value.is_some() {
            return Err(SqlError::semantic(
                self.pos("FORMAT"),
                "Cannot supply both 'VALUE_FORMAT' and 'FORMAT' properties, as 'FORMAT' sets both key and value formats. Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'.",
            ));
        }
        Ok((key.or(both), value.or(both)))
    }

    fn delimiter(&self, name: &str, format: FormatKind) -> Result<Option<char>, SqlError> {
        let Some(d) = self.string(name)? else {
            return Ok(None);
        };
        if format != FormatKind::Delimited {
            return Err(SqlError::semantic(
                self.pos(name),
                format!("{format} does not support the following configs: [delimiter]"),
            )
            .with_hint(format!(
                "{name} can only be used with the DELIMITED format."
            )));
        }
        let c = match d.to_ascii_uppercase().as_str() {
            "TAB" => '\t',
            "SPACE" => ' ',
            _ if d.chars().count() == 1 => d.chars().next().unwrap_or(','),
            _ => {
                return Err(SqlError::semantic(
                    self.pos(name),
                    format!(
                        "Invalid delimiter value: '{d}'. Delimiter must be a single character or TAB or SPACE"
                    ),
                ));
            }
        };
        Ok(Some(c))
    }

    /// Sets a part's schema id and record name from WITH (see `registry::apply_options`).
    fn registry_options(
        &self,
        format: &mut Format,
        is_key: bool,
        source: &str,
    ) -> Result<(), SqlError> {
        let (id, names): (&str, &[&str]) = if is_key {
            ("KEY_SCHEMA_ID", &["KEY_SCHEMA_FULL_NAME"])
        } else {
            (
                "VALUE_SCHEMA_ID",
                &["VALUE_SCHEMA_FULL_NAME", "VALUE_AVRO_SCHEMA_FULL_NAME"],
            )
        };
        let nullable = if is_key {
            "KEY_PROTOBUF_NULLABLE_REPRESENTATION"
        } else {
            "VALUE_PROTOBUF_NULLABLE_REPRESENTATION"
        };
        if let Some(n) = self.string(nullable)? {
            let upper = n.to_ascii_uppercase();
            if !matches!(format.kind, FormatKind::Protobuf | FormatKind::ProtobufNosr) {
                return Err(SqlError::semantic(
                    self.pos(nullable),
                    format!(
                        "{} does not support the following configs: [nullableRepresentation]",
                        format.kind
                    ),
                ));
            }
            if !matches!(upper.as_str(), "OPTIONAL" | "WRAPPER") {
                return Err(SqlError::semantic(
                    self.pos(nullable),
                    format!("Invalid {nullable}: {n}. Valid values are OPTIONAL and WRAPPER."),
                ));
            }
            format.protobuf_nullable = Some(upper);
        }
        let name = names.iter().find(|n| self.pos(n).is_some()).copied();
        crate::registry::apply_options(
            format,
            is_key,
            source,
            crate::registry::Setting {
                value: self.integer(id)?,
                pos: self.pos(id),
            },
            crate::registry::Setting {
                value: match name {
                    Some(n) => self.string(n)?,
                    None => None,
                },
                pos: name.and_then(|n| self.pos(n)),
            },
        )
    }

    fn topic_creation(&self) -> Result<(Option<u32>, Option<i16>), SqlError> {
        let partitions = match self.integer("PARTITIONS")? {
            None => None,
            Some(p) if p >= 1 && p <= i32::MAX as i64 => Some(p as u32),
            Some(p) => {
                return Err(SqlError::semantic(
                    self.pos("PARTITIONS"),
                    format!(
                        "Invalid number of partitions: {p}. PARTITIONS must be a positive number."
                    ),
                ));
            }
        };
        let replicas = match self.integer("REPLICAS")? {
            None => None,
            Some(r) if r >= 1 && r <= i16::MAX as i64 => Some(r as i16),
            Some(r) => {
                return Err(SqlError::semantic(
                    self.pos("REPLICAS"),
                    format!("Invalid number of replicas: {r}. REPLICAS must be a positive number."),
                ));
            }
        };
        Ok((partitions, replicas))
    }
}

/// Checks that a format can carry the given columns.
fn check_format(format: FormatKind, columns: &[&Column], is_key: bool) -> Result<(), SqlError> {
    for c in columns {
        if is_key && contains_map(&c.ty) {
            return Err(SqlError::semantic(
                None,
                format!(
                    "Map keys, including types that contain maps, are not supported as they may lead to unexpected behavior due to inconsistent serialization. Key column name: `{}`. Column type: {}. See https://github.com/confluentinc/ksql/issues/6621 for more.",
                    c.name, c.ty
                ),
            ));
        }
        if format == FormatKind::Avro
            && let Some(bad) = avro_incompatible_name(&c.name, &c.ty)
        {
            return Err(SqlError::semantic(
                None,
                format!("Schema is not compatible with Avro: {bad}"),
            ));
        }
        if matches!(format, FormatKind::Kafka | FormatKind::Delimited) && !c.ty.is_primitive() {
            let kind = match c.ty {
                SqlType::Array(_) => "ARRAY",
                SqlType::Map { .. } => "MAP",
                _ => "STRUCT",
            };
            if is_key {
                return Err(key_schema_error(
                    format,
                    columns,
                    &format!(
                        "The '{format}' format does not support type '{kind}'{}",
                        if format == FormatKind::Delimited {
                            format!(", column: `{}`", c.name)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
            return Err(SqlError::semantic(
                None,
                format!("The '{format}' format does not support type '{kind}'"),
            ));
        }
        if format == FormatKind::Kafka
            && columns.len() == 1
            && !matches!(
                c.ty,
                SqlType::Integer
                    | SqlType::Bigint
                    | SqlType::Double
                    | SqlType::String
                    | SqlType::Bytes
            )
            && !(is_key
                && matches!(
                    c.ty,
                    SqlType::Decimal { .. } | SqlType::Date | SqlType::Time | SqlType::Timestamp
                ))
        {
            let reason = format!(
                "The 'KAFKA' format does not support type '{}'",
                type_keyword(&c.ty)
            );
            if is_key {
                return Err(key_schema_error(format, columns, &reason));
            }
            return Err(SqlError::semantic(None, reason));
        }
        if matches!(
            format,
            FormatKind::Json
                | FormatKind::JsonSr
                | FormatKind::Avro
                | FormatKind::Protobuf
                | FormatKind::ProtobufNosr
        ) && let SqlType::Map { key, .. } = &c.ty
            && **key != SqlType::String
        {
            return Err(SqlError::semantic(
                None,
                match format {
                    FormatKind::Avro => "Avro only supports MAPs with STRING keys",
                    FormatKind::Protobuf | FormatKind::ProtobufNosr => {
                        "PROTOBUF format only supports MAP types with STRING keys"
                    }
                    _ => "JSON only supports MAP types with STRING keys",
                },
            ));
        }
    }
    match format {
        FormatKind::Kafka if columns.len() > 1 => {
            let what = if is_key { "Key" } else { "Value" };
            Err(SqlError::semantic(
                None,
                format!(
                    "{what} format does not support schema.\nformat: KAFKA\nschema: Persistence{{columns=[{}], features=[]}}\nreason: The 'KAFKA' format only supports a single field. Got: [{}]",
                    columns
                        .iter()
                        .map(|c| format!(
                            "`{}` {}{}",
                            c.name,
                            c.ty,
                            if is_key { " KEY" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                        .join(", "),
                    columns
                        .iter()
                        .map(|c| format!("`{}` {}", c.name, c.ty))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
        FormatKind::Kafka
            if columns.iter().any(|c| {
                matches!(
                    c.ty,
                    SqlType::Decimal { .. }
                        | SqlType::Time
                        | SqlType::Date
                        | SqlType::Timestamp
                        | SqlType::Bytes
                ) && is_key
            }) =>
        {
            let c = columns[0];
            Err(SqlError::semantic(
                None,
                format!(
                    "Key format does not support schema.\nformat: KAFKA\nschema: Persistence{{columns=[`{}` {} KEY], features=[]}}\nreason: The 'KAFKA' format does not support type '{}'",
                    c.name,
                    c.ty,
                    type_keyword(&c.ty)
                ),
            ))
        }
        FormatKind::None if !columns.is_empty() => Err(SqlError::semantic(
            None,
            format!(
                "The 'NONE' format can only be used when no columns are defined. Got: [{}]",
                columns
                    .iter()
                    .map(|c| format!("`{}` {}{}", c.name, c.ty, if is_key { " KEY" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// Avro names start with a letter or `_` and go on with letters, digits and `_`: the
/// problem with a column's name or one of its fields', as Avro words it.
fn avro_incompatible_name(name: &str, ty: &SqlType) -> Option<String> {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Some(format!("Illegal initial character: {name}"));
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return Some(format!("Illegal character in: {name} ({c})"));
    }
    match ty {
        SqlType::Struct(fields) => fields
            .iter()
            .find_map(|f| avro_incompatible_name(&f.name, &f.ty)),
        SqlType::Array(item) => avro_incompatible_name("item", item),
        SqlType::Map { value, .. } => avro_incompatible_name("value", value),
        _ => None,
    }
}

/// ksqlDB's message for key columns a key format cannot hold.
fn key_schema_error(format: FormatKind, columns: &[&Column], reason: &str) -> SqlError {
    let shown: Vec<String> = columns
        .iter()
        .map(|c| format!("`{}` {} KEY", c.name, c.ty))
        .collect();
    SqlError::semantic(
        None,
        format!(
            "Key format does not support schema.\nformat: {format}\nschema: Persistence{{columns=[{}], features=[]}}\nreason: {reason}",
            shown.join(", ")
        ),
    )
}

fn type_keyword(t: &SqlType) -> String {
    let s = t.to_string();
    s.split(['(', '<']).next().unwrap_or("").to_string()
}

pub(crate) fn contains_map(t: &SqlType) -> bool {
    match t {
        SqlType::Map { .. } => true,
        SqlType::Array(i) => contains_map(i),
        SqlType::Struct(fields) => fields.iter().any(|f| contains_map(&f.ty)),
        _ => false,
    }
}

fn check_formats(topic: &TopicSpec) -> Result<(), SqlError> {
    let keys: Vec<&Column> = topic.schema.keys().collect();
    let values: Vec<&Column> = topic.schema.values().collect();
    check_format(topic.key_format.kind, &keys, true)?;
    check_format(topic.value_format.kind, &values, false)
}

/// A select item named like a pseudo-column: ksqlDB's message depends on whether the name
/// came from an alias.
pub(crate) fn reserved_name(name: &str, aliased: bool, pos: Pos) -> SqlError {
    if aliased {
        SqlError::semantic(
            pos,
            format!(
                "`{name}` is a reserved column name. You cannot use it as an alias for a column."
            ),
        )
    } else {
        SqlError::semantic(
            pos,
            format!("Reserved column name in select: `{name}`. Please remove or alias the column."),
        )
    }
}

pub(crate) const RESERVED_COLUMNS: &[&str] = &[
    "ROWTIME",
    "ROWPARTITION",
    "ROWOFFSET",
    "WINDOWSTART",
    "WINDOWEND",
];

// ---- CREATE STREAM / TABLE ----

/// A schema's full name only means something to a schema-registry format: with another
/// format ksqlDB refuses it, naming the format.
fn refuse_schema_names_without_registry(
    props: &Properties,
    config: &PlannerConfig,
) -> Result<(), SqlError> {
    let format_of = |names: &[&str]| -> Option<String> {
        names.iter().find_map(|n| match props.get(n) {
            Some(PropertyValue::String(f)) => Some(f.to_ascii_uppercase()),
            _ => None,
        })
    };
    let uses_registry = |f: &str| matches!(f, "AVRO" | "PROTOBUF" | "JSON_SR");
    for (property, formats, default) in [
        (
            "VALUE_AVRO_SCHEMA_FULL_NAME",
            &["VALUE_FORMAT", "FORMAT"][..],
            config.default_value_format.map(|f| f.name().to_string()),
        ),
        (
            "VALUE_SCHEMA_FULL_NAME",
            &["VALUE_FORMAT", "FORMAT"][..],
            config.default_value_format.map(|f| f.name().to_string()),
        ),
        (
            "KEY_SCHEMA_FULL_NAME",
            &["KEY_FORMAT", "FORMAT"][..],
            Some(config.default_key_format.name().to_string()),
        ),
    ] {
        let Some((_, _, pos)) = props.entries.iter().find(|(n, _, _)| n == property) else {
            continue;
        };
        if let Some(format) = format_of(formats).or(default)
            && !uses_registry(&format)
        {
            return Err(SqlError::semantic(
                *pos,
                format!("{format} does not support the following configs: [fullSchemaName]"),
            ));
        }
    }
    Ok(())
}

fn plan_create_source(
    stmt: &ast::Statement,
    c: &CreateSource,
    catalog: &dyn Catalog,
    config: &PlannerConfig,
) -> Result<Planned, SqlError> {
    let allowed: Vec<&str> = SOURCE_PROPERTIES
        .iter()
        .copied()
        .chain(["WINDOW_TYPE", "WINDOW_SIZE"])
        .chain(REGISTRY_PROPERTIES.iter().copied())
        .collect();
    refuse_schema_names_without_registry(&c.properties, config)?;
    let with = With::new(&c.properties, &allowed, &["RETENTION_MS"])?;
    // Neither a source stream or table, nor one that replaces an existing source.
    let replaces_source = catalog.source(&c.name).is_some_and(|s| s.is_source);
    if c.or_replace && (c.is_source || replaces_source) {
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "Cannot add {} '{}': CREATE OR REPLACE is not supported on source {}s.",
                c.kind.keyword().to_lowercase(),
                c.name,
                c.kind.keyword().to_lowercase()
            ),
        ));
    }
    let Some(topic) = with.string("KAFKA_TOPIC")? else {
        return Err(SqlError::semantic(
            stmt.pos,
            "Missing required property \"KAFKA_TOPIC\" which has no default value.",
        ));
    };
    let (key_format, value_format) = with.formats()?;
    let key_format = key_format.unwrap_or(config.default_key_format);
    let Some(value_format) = value_format.or(config.default_value_format) else {
        return Err(SqlError::semantic(
            stmt.pos,
            "Statement is missing the 'VALUE_FORMAT' property from the WITH clause.",
        )
        .with_hint("Either provide one or set a default via the 'ksql.persistence.default.format.value' config."));
    };

    let mut columns = Vec::with_capacity(c.columns.len());
    for col in &c.columns {
        if RESERVED_COLUMNS.contains(&col.name.as_str()) {
            return Err(SqlError::semantic(
                col.pos,
                format!(
                    "'{}' is a reserved column name. You cannot use it as a name for a column.",
                    col.name
                ),
            ));
        }
        if columns.iter().any(|x: &Column| x.name == col.name) {
            return Err(SqlError::semantic(
                col.pos,
                format!("Duplicate column names: {}", col.name),
            ));
        }
        let kind = match (&col.constraint, c.kind) {
            (ColumnConstraint::None, _) => ColumnKind::Value,
            (ColumnConstraint::Key, SourceKind::Stream)
            | (ColumnConstraint::PrimaryKey, SourceKind::Table) => ColumnKind::Key,
            (ColumnConstraint::Key, SourceKind::Table) => {
                return Err(SqlError::semantic(
                    col.pos,
                    format!(
                        "Column `{}` is a 'KEY' column: please use 'PRIMARY KEY' for tables.",
                        col.name
                    ),
                )
                .with_hint("Tables have PRIMARY KEYs, which are unique and NON NULL.\nStreams have KEYs, which have no uniqueness or NON NULL constraints."));
            }
            (ColumnConstraint::PrimaryKey, SourceKind::Stream) => {
                return Err(SqlError::semantic(
                    col.pos,
                    format!(
                        "Column `{}` is a 'PRIMARY KEY' column: please use 'KEY' for streams.",
                        col.name
                    ),
                )
                .with_hint("Tables have PRIMARY KEYs, which are unique and NON NULL.\nStreams have KEYs, which have no uniqueness or NON NULL constraints."));
            }
            (ColumnConstraint::Headers, _) => {
                let expected = headers_type();
                if col.ty != expected {
                    return Err(SqlError::semantic(
                        col.pos,
                        format!(
                            "Invalid type for HEADERS column: expected {expected}, got {}",
                            col.ty
                        ),
                    ));
                }
                ColumnKind::Headers
            }
            (ColumnConstraint::Header(key), _) => {
                if col.ty != SqlType::Bytes {
                    return Err(SqlError::semantic(
                        col.pos,
                        format!(
                            "Invalid type for HEADER('{key}') column: expected BYTES, got {}",
                            col.ty
                        ),
                    ));
                }
                ColumnKind::Header(key.clone())
            }
        };
        columns.push(Column {
            name: col.name.clone(),
            ty: col.ty.clone(),
            kind,
        });
    }
    // The formats' own settings are checked before the columns.
    let mut key = Format {
        delimiter: with.delimiter("KEY_DELIMITER", key_format)?,
        ..Format::new(key_format)
    };
    let mut value = Format {
        delimiter: with.delimiter("VALUE_DELIMITER", value_format)?,
        ..Format::new(value_format)
    };
    with.registry_options(&mut key, true, &c.name)?;
    with.registry_options(&mut value, false, &c.name)?;
    let bare_value = infer_columns(stmt, &with, &topic, &key, &value, &mut columns, config)?;
    if columns.is_empty() {
        return Err(SqlError::semantic(
            stmt.pos,
            "The statement does not define any columns.",
        )
        .with_hint("Declare the columns in parentheses after the name, or use a format whose schema is registered (AVRO, JSON_SR) to read them from the schema registry."));
    }
    if c.kind == SourceKind::Table && !columns.iter().any(|c| c.kind == ColumnKind::Key) {
        return Err(SqlError::semantic(
            stmt.pos,
            "Tables require a PRIMARY KEY. Please define the PRIMARY KEY.",
        )
        .with_hint("Use a column with PRIMARY KEY, e.g. `ID INT PRIMARY KEY`."));
    }
    let window = source_window(&with)?;
    if window.is_some() && !columns.iter().any(|c| c.kind == ColumnKind::Key) {
        return Err(SqlError::semantic(
            stmt.pos,
            "Windowed sources require a key column.",
        ));
    }
    let schema = LogicalSchema::new(columns);
    let (timestamp, timestamp_format) = timestamp_column(&with, &schema)?;
    let spec = TopicSpec {
        retractions: false,
        window,
        timestamp,
        timestamp_format,
        topic,
        key_format: key,
        value_format: Format {
            // A bare registered value is read unwrapped unless the statement says.
            wrap_single_value: match with.boolean("WRAP_SINGLE_VALUE")? {
                None if bare_value => false,
                _ => single_value_wrapping(&with, value_format, &schema, config)?,
            },
            ..value
        },
        schema,
    };
    check_formats(&spec)?;
    let (partitions, replicas) = with.topic_creation()?;
    Ok(Planned::CreateSource {
        source: SourceDesc {
            name: c.name.clone(),
            kind: c.kind.into(),
            topic: spec,
            is_source: c.is_source,
            sql: stmt.text.clone(),
        },
        if_not_exists: c.if_not_exists,
        or_replace: c.or_replace,
        create_topic: partitions.map(|p| TopicCreation {
            partitions: Some(p),
            replicas,
        }),
    })
}

/// Adds the key and value columns a statement leaves to the schema registry: a part
/// without declared columns whose format has registered schemas takes the registered
/// schema's columns (a key's only when one is registered). Returns whether the value
/// schema is a bare (not record) one.
fn infer_columns(
    stmt: &ast::Statement,
    with: &With<'_>,
    topic: &str,
    key: &Format,
    value: &Format,
    columns: &mut Vec<Column>,
    config: &PlannerConfig,
) -> Result<bool, SqlError> {
    let mut bare_value = false;
    for (format, kind) in [(key, ColumnKind::Key), (value, ColumnKind::Value)] {
        let is_key = kind == ColumnKind::Key;
        let declared = columns.iter().any(|c| c.kind == kind);
        if declared {
            if format.schema_id.is_some() {
                let property = if is_key {
                    "KEY_SCHEMA_ID"
                } else {
                    "VALUE_SCHEMA_ID"
                };
                return Err(SqlError::semantic(
                    with.pos(property),
                    format!(
                        "Table elements and {property} cannot both exist for create statement."
                    ),
                ));
            }
            continue;
        }
        if !format.kind.infers_schema() {
            continue;
        }
        let registry = config.registry.as_ref();
        let whole = !is_key && with.boolean("WRAP_SINGLE_VALUE")? == Some(false);
        match crate::registry::infer_part(registry, topic, format, is_key, whole, stmt.pos)? {
            Some((inferred, bare)) => {
                columns.extend(inferred);
                bare_value |= bare && !is_key;
            }
            None if is_key => {}
            None => return Err(crate::registry::missing_value_schema(topic, stmt.pos)),
        }
    }
    Ok(bare_value)
}

/// ksqlDB's default grace period when a window does not give one.
const DEFAULT_GRACE_MS: u64 = 24 * 60 * 60 * 1000;

fn window_spec(w: &ast::WindowExpr) -> Result<sluice_plan::WindowSpec, SqlError> {
    let mut kind = sluice_plan::WindowKind::Tumbling;
    let (size_ms, advance_ms) = match w.kind {
        ast::WindowKind::Tumbling { size_ms } => (size_ms, size_ms),
        ast::WindowKind::Hopping {
            size_ms,
            advance_ms,
        } => {
            kind = sluice_plan::WindowKind::Hopping;
            if advance_ms == 0 || advance_ms > size_ms {
                return Err(SqlError::semantic(
                    w.pos,
                    format!(
                        "Window advance must be positive and not larger than the window size: ADVANCE BY {advance_ms} ms, SIZE {size_ms} ms"
                    ),
                ));
            }
            (size_ms, advance_ms)
        }
        ast::WindowKind::Session { gap_ms } => {
            kind = sluice_plan::WindowKind::Session;
            (gap_ms, gap_ms)
        }
    };
    if size_ms == 0 {
        return Err(SqlError::semantic(w.pos, "Window size must be positive"));
    }
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Ok(sluice_plan::WindowSpec {
        kind,
        size_ms: ms(size_ms),
        advance_ms: ms(advance_ms),
        grace_ms: ms(w.grace_ms.unwrap_or(DEFAULT_GRACE_MS)),
        retention_ms: w.retention_ms.map(ms),
    })
}

/// `WITH (WINDOW_TYPE=..., WINDOW_SIZE=...)`: the source's keys are windowed.
fn source_window(with: &With<'_>) -> Result<Option<sluice_plan::WindowSpec>, SqlError> {
    let Some(kind) = with.string("WINDOW_TYPE")? else {
        if with.pos("WINDOW_SIZE").is_some() {
            return Err(SqlError::semantic(
                with.pos("WINDOW_SIZE"),
                "'WINDOW_SIZE' should not be set without 'WINDOW_TYPE'.",
            ));
        }
        return Ok(None);
    };
    let size = with
        .string("WINDOW_SIZE")?
        .map(|text| {
            parse_duration(&text).ok_or_else(|| {
                SqlError::semantic(
                    with.pos("WINDOW_SIZE"),
                    format!("Invalid WINDOW_SIZE property : {text}"),
                )
                .with_hint("Use a number and a unit, e.g. '30 SECONDS'.")
            })
        })
        .transpose()?;
    let window_kind = match kind.to_ascii_uppercase().as_str() {
        "SESSION" => sluice_plan::WindowKind::Session,
        "TUMBLING" => sluice_plan::WindowKind::Tumbling,
        "HOPPING" => sluice_plan::WindowKind::Hopping,
        other => {
            return Err(SqlError::semantic(
                with.pos("WINDOW_TYPE"),
                format!(
                    "Invalid WINDOW_TYPE property: {other}. Valid values are SESSION, TUMBLING and HOPPING."
                ),
            ));
        }
    };
    let session = window_kind == sluice_plan::WindowKind::Session;
    let size_ms = match (session, size) {
        (true, Some(_)) => {
            return Err(SqlError::semantic(
                with.pos("WINDOW_SIZE"),
                "'WINDOW_SIZE' should not be set for SESSION windows.",
            ));
        }
        (true, None) => 0,
        (false, Some(ms)) => ms,
        (false, None) => {
            return Err(SqlError::semantic(
                with.pos("WINDOW_TYPE"),
                format!(
                    "'WINDOW_SIZE' must be set for {} windows.",
                    kind.to_ascii_uppercase()
                ),
            ));
        }
    };
    Ok(Some(sluice_plan::WindowSpec {
        kind: window_kind,
        size_ms,
        advance_ms: size_ms,
        grace_ms: 0,
        retention_ms: None,
    }))
}

/// A duration such as '30 SECONDS' or '1 hour', in milliseconds.
fn parse_duration(text: &str) -> Option<i64> {
    let mut parts = text.split_whitespace();
    let n: i64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?.to_ascii_uppercase();
    if parts.next().is_some() {
        return None;
    }
    n.checked_mul(crate::parser::time_unit_ms(&unit)? as i64)
}

/// `WITH (TIMESTAMP='col')`: the column that holds the event time.
/// The event-time column (`TIMESTAMP`) and, for a STRING column, its pattern
/// (`TIMESTAMP_FORMAT`).
fn timestamp_column(
    with: &With<'_>,
    schema: &LogicalSchema,
) -> Result<(Option<String>, Option<String>), SqlError> {
    let Some(name) = with.string("TIMESTAMP")? else {
        if with.string("TIMESTAMP_FORMAT")?.is_some() {
            return Err(SqlError::semantic(
                with.pos("TIMESTAMP_FORMAT"),
                "TIMESTAMP_FORMAT requires TIMESTAMP to name the column it applies to.",
            ));
        }
        return Ok((None, None));
    };
    // Unquoted names in the property are upper-cased, like identifiers.
    let column = schema
        .find(&name)
        .or_else(|| schema.find(&name.to_uppercase()))
        .ok_or_else(|| {
            SqlError::semantic(
                with.pos("TIMESTAMP"),
                format!(
                    "The TIMESTAMP column set in the WITH clause does not exist in the schema: '{}'",
                    name.to_uppercase()
                ),
            )
        })?;
    if let Some(format) = with.string("TIMESTAMP_FORMAT")? {
        if column.ty != SqlType::String {
            return Err(SqlError::semantic(
                with.pos("TIMESTAMP_FORMAT"),
                format!(
                    "Timestamp column, `{}`, should be a String when TIMESTAMP_FORMAT is given.",
                    column.name
                ),
            ));
        }
        return Ok((Some(column.name.clone()), Some(format)));
    }
    if !matches!(column.ty, SqlType::Bigint | SqlType::Timestamp) {
        return Err(SqlError::semantic(
            with.pos("TIMESTAMP"),
            format!(
                "Timestamp column, `{}`, should be LONG(INT64), TIMESTAMP, or a String with a timestamp.format specified.",
                column.name
            ),
        ));
    }
    Ok((Some(column.name.clone()), None))
}

fn single_value_wrapping(
    with: &With<'_>,
    format: FormatKind,
    schema: &LogicalSchema,
    config: &PlannerConfig,
) -> Result<bool, SqlError> {
    let Some(wrap) = with.boolean("WRAP_SINGLE_VALUE")? else {
        // The configured default applies where the format can unwrap a single column.
        let unwrappable = wraps(format) && schema.values().count() == 1;
        return Ok(!(unwrappable && config.wrap_single_values == Some(false)));
    };
    // KAFKA and DELIMITED values are never wrapped: `false` says so, `true` cannot be.
    let unwrapped_only = matches!(format, FormatKind::Kafka | FormatKind::Delimited);
    if !(wraps(format) || unwrapped_only && !wrap) {
        return Err(SqlError::semantic(
            with.pos("WRAP_SINGLE_VALUE"),
            format!("Format '{format}' does not support 'WRAP_SINGLE_VALUE' set to '{wrap}'."),
        ));
    }
    if schema.values().count() != 1 {
        return Err(SqlError::semantic(
            with.pos("WRAP_SINGLE_VALUE"),
            "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas",
        ));
    }
    Ok(wrap)
}

/// Formats that write values as records (or objects) and can write a single one bare.
fn wraps(format: FormatKind) -> bool {
    matches!(
        format,
        FormatKind::Json
            | FormatKind::JsonSr
            | FormatKind::Avro
            | FormatKind::Protobuf
            | FormatKind::ProtobufNosr
    )
}

// ---- CREATE ... AS SELECT ----

fn plan_create_as(
    stmt: &ast::Statement,
    c: &CreateAs,
    catalog: &dyn Catalog,
    config: &PlannerConfig,
) -> Result<Planned, SqlError> {
    let q = &c.query;
    refuse_schema_names_without_registry(&c.properties, config)?;
    let allowed: Vec<&str> = SOURCE_PROPERTIES
        .iter()
        .chain(REGISTRY_PROPERTIES)
        .copied()
        .collect();
    let with = With::new(&c.properties, &allowed, &["RETENTION_MS"])?;
    let joined = if q.joins.is_empty() {
        None
    } else {
        Some(crate::join::plan_joins(stmt, q, catalog)?)
    };
    let source = match &joined {
        Some(j) => &j.sources[0],
        None => match catalog.source(&q.from.name) {
            Some(s) => s,
            None => {
                let err =
                    SqlError::semantic(q.from.pos, format!("{} does not exist.", q.from.name));
                return Err(match closest(&q.from.name, catalog.source_names()) {
                    Some(n) => err.with_hint(format!("Did you mean {n}?")),
                    None => err,
                });
            }
        },
    };
    let over_table = match &joined {
        Some(j) => j.produces_table,
        None => source.kind == SourceKindName::Table,
    };
    let grouped = !q.group_by.is_empty();
    // A TIMESTAMP column that nothing in the query could produce is refused first.
    if let Some(ts) = with.string("TIMESTAMP")? {
        let wanted = ts.to_uppercase();
        let star = q
            .select
            .iter()
            .any(|i| matches!(i, SelectItem::Star { .. }));
        let selected = q.select.iter().any(|i| match i {
            SelectItem::Expr {
                alias: Some(a), ..
            } => *a == ts || *a == wanted,
            SelectItem::Expr { expr, alias: None } => {
                matches!(&expr.kind, ExprKind::Column { name, .. } if *name == ts || *name == wanted)
            }
            _ => false,
        });
        let in_source =
            source.topic.schema.find(&ts).is_some() || source.topic.schema.find(&wanted).is_some();
        if !(selected || (star && in_source)) && joined.is_none() {
            return Err(SqlError::semantic(
                with.pos("TIMESTAMP"),
                format!(
                    "The TIMESTAMP column set in the WITH clause does not exist in the schema: '{wanted}'"
                ),
            ));
        }
    }
    if joined.is_none() && over_table && source.topic.window.is_some() && !config.transient {
        return Err(SqlError::semantic(
            stmt.pos,
            "KSQL does not support persistent queries on windowed tables.",
        ));
    }
    if q.having.is_some() && !grouped {
        return Err(SqlError::semantic(
            stmt.pos,
            "HAVING clause requires a GROUP BY clause.",
        ));
    }
    if !grouped {
        crate::aggregate::refuse_aggregates_without_group_by(q)?;
    } else if joined.is_none() && source.topic.value_format.kind == FormatKind::Kafka {
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "Source(s) {} are using the 'KAFKA' value format. This format does not yet support GROUP BY.",
                source.name
            ),
        ));
    }
    match (c.kind, grouped || over_table) {
        (SourceKind::Stream, true) => {
            return Err(SqlError::semantic(
                stmt.pos,
                "Invalid result type. Your SELECT query produces a TABLE. Please use CREATE TABLE AS SELECT statement instead.",
            ));
        }
        (SourceKind::Table, false) => {
            return Err(SqlError::semantic(
                stmt.pos,
                "Invalid result type. Your SELECT query produces a STREAM. Please use CREATE STREAM AS SELECT statement instead.",
            ));
        }
        _ => {}
    }
    if over_table && !q.partition_by.is_empty() {
        return Err(SqlError::semantic(
            stmt.pos,
            "Cannot repartition a TABLE source. PARTITION BY can only be used on streams.",
        ));
    }
    if !q.partition_by.is_empty() && !q.group_by.is_empty() {
        return Err(SqlError::semantic(
            stmt.pos,
            "PARTITION BY and GROUP BY in the same statement is not supported.",
        ));
    }
    if q.limit.is_some() {
        return Err(SqlError::semantic(
            stmt.pos,
            "CREATE STREAM AS SELECT statements don't support LIMIT clause.",
        ));
    }
    if q.emit == Some(ast::Emit::Final) && q.window.is_none() {
        return Err(SqlError::semantic(
            stmt.pos,
            "EMIT FINAL is only supported for windowed aggregations.",
        ));
    }

    let input_schema = &source.topic.schema;
    let (scope, mut root) = match &joined {
        Some(j) => (j.scope.clone(), j.root.clone()),
        None => single_source(source, q, grouped, over_table),
    };
    if let Some(w) = &q.where_clause {
        let analyzer = ExprAnalyzer {
            scope: &scope,
            clause: Clause::Where,
        };
        let (predicate, ty) = analyzer.analyze(w).map_err(|e| match e {
            SqlError::Semantic { pos, message, hint }
                if !message.starts_with("Invalid Predicate") =>
            {
                SqlError::Semantic {
                    pos,
                    message: format!("Error in WHERE expression: {message}"),
                    hint,
                }
            }
            other => other,
        })?;
        if ty != SqlType::Boolean {
            return Err(SqlError::semantic(
                w.pos,
                format!(
                    "Type error in WHERE expression: Should evaluate to boolean but is {w} ({ty}) instead."
                ),
            ));
        }
        root = if over_table {
            Step::TableFilter {
                input: Box::new(root),
                predicate,
            }
        } else {
            Step::StreamFilter {
                input: Box::new(root),
                predicate,
            }
        };
    }

    let grouped = !q.group_by.is_empty();
    let window = match &q.window {
        None => None,
        Some(_) if !grouped => {
            return Err(SqlError::semantic(
                stmt.pos,
                "WINDOW clause requires a GROUP BY clause.",
            ));
        }
        Some(_) if over_table => {
            return Err(SqlError::semantic(
                stmt.pos,
                "Windowing not supported for table aggregations.",
            ));
        }
        Some(w) => {
            let mut spec = window_spec(w)?;
            // EMIT FINAL without a grace period closes windows at their end.
            if q.emit == Some(ast::Emit::Final) && w.grace_ms.is_none() {
                spec.grace_ms = 0;
            }
            Some(spec)
        }
    };
    // Table functions (EXPLODE) run ahead of the projection, which reads their results.
    let with_functions;
    let (root, rewritten) = plan_table_functions(stmt, c, &scope, root, over_table)?;
    let (c, scope) = match rewritten {
        None => (c, scope),
        Some((rewritten, scope)) => {
            with_functions = rewritten;
            (&with_functions, scope)
        }
    };
    let q = &c.query;
    let (body, out_schema) = if grouped {
        let agg = crate::aggregate::plan_aggregate(
            &c.name,
            q,
            &scope,
            root,
            window.clone(),
            config.transient,
        )?;
        if over_table {
            check_table_aggregates(stmt.pos, &agg.step)?;
        }
        let mut agg = agg;
        if let Step::StreamAggregate { aggregates, .. } = &mut agg.step {
            for a in aggregates.iter_mut() {
                let limit = match a.function.as_str() {
                    "COLLECT_LIST" => config.collect_list_limit,
                    "COLLECT_SET" => config.collect_set_limit,
                    _ => None,
                };
                if let Some(limit) = limit {
                    a.args
                        .push(sluice_plan::Expr::Literal(sluice_plan::Literal::Bigint(
                            limit,
                        )));
                }
            }
        }
        // The aggregation's state is written in the source's value format (ksqlDB's
        // internal topics): a format without nested types cannot hold the state of
        // the functions that keep structs or lists.
        if let Step::StreamAggregate { aggregates, .. } = &agg.step
            && matches!(
                source.topic.value_format.kind,
                FormatKind::Delimited | FormatKind::Kafka
            )
            && aggregates
                .iter()
                .any(|a| !matches!(a.function.as_str(), "COUNT" | "SUM" | "MIN" | "MAX"))
        {
            return Err(SqlError::semantic(
                stmt.pos,
                "One of the functions used in the statement has an intermediate type that the value format can not handle. Please remove the function or change the format.",
            ));
        }
        (agg.step, agg.schema)
    } else {
        let (projection, out_schema) = if let Some(j) = &joined
            && q.partition_by.is_empty()
        {
            crate::join::plan_join_projection(stmt, c, j, &scope)?
        } else if q.partition_by.is_empty() {
            plan_projection(stmt, c, input_schema, &scope, config)?
        } else {
            match &joined {
                // `*` over a join is every joined column.
                Some(j) => plan_partition_by(
                    c,
                    &LogicalSchema::new(
                        j.star
                            .iter()
                            .map(|s| Column::value(s.name.clone(), s.ty.clone()))
                            .collect(),
                    ),
                    &scope,
                    Some(j),
                )?,
                None => plan_partition_by(c, input_schema, &scope, None)?,
            }
        };
        let step = if over_table {
            Step::TableSelect {
                input: Box::new(root),
                projection,
                schema: out_schema.clone(),
            }
        } else {
            Step::StreamSelect {
                input: Box::new(root),
                projection,
                schema: out_schema.clone(),
                rekeyed: !q.partition_by.is_empty(),
            }
        };
        (step, out_schema)
    };

    let (key_format, value_format) = with.formats()?;
    let value_format = value_format.unwrap_or(source.topic.value_format.kind);
    let key_format = match key_format {
        Some(k) => k,
        None if out_schema.keys().next().is_none() => FormatKind::None,
        // A result with a key cannot inherit NONE. A join keys it as the side it was
        // repartitioned to meet (the first with a key format); otherwise ksqlDB keys it
        // in its value format.
        None if source.topic.key_format.kind == FormatKind::None => joined
            .as_ref()
            .filter(|_| !grouped)
            .and_then(|j| {
                j.sources
                    .iter()
                    .map(|s| s.topic.key_format.kind)
                    .find(|k| *k != FormatKind::None)
            })
            .unwrap_or(value_format),
        None => source.topic.key_format.kind,
    };
    let inherit = |f: &Format, kind: FormatKind| if f.kind == kind { f.delimiter } else { None };
    let sink_timestamp = timestamp_column(&with, &out_schema)?;
    let mut sink_topic = TopicSpec {
        retractions: false,
        // An aggregation's window, else the source's: a projection keeps windowed keys.
        window: if grouped {
            window.clone()
        } else {
            source.topic.window.clone()
        },
        timestamp: sink_timestamp.0,
        timestamp_format: sink_timestamp.1,
        topic: with
            .string("KAFKA_TOPIC")?
            .unwrap_or_else(|| format!("{}{}", config.output_topic_prefix, c.name)),
        key_format: Format {
            delimiter: with
                .delimiter("KEY_DELIMITER", key_format)?
                .or(inherit(&source.topic.key_format, key_format)),
            ..Format::new(key_format)
        },
        value_format: Format {
            delimiter: with
                .delimiter("VALUE_DELIMITER", value_format)?
                .or(inherit(&source.topic.value_format, value_format)),
            wrap_single_value: single_value_wrapping(&with, value_format, &out_schema, config)?,
            ..Format::new(value_format)
        },
        schema: out_schema.clone(),
    };
    with.registry_options(&mut sink_topic.key_format, true, &c.name)?;
    with.registry_options(&mut sink_topic.value_format, false, &c.name)?;
    for (format, kind) in [
        (&sink_topic.key_format, ColumnKind::Key),
        (&sink_topic.value_format, ColumnKind::Value),
    ] {
        let columns: Vec<&Column> = out_schema
            .columns
            .iter()
            .filter(|c| c.kind == kind)
            .collect();
        crate::registry::check_sink_columns(
            config.registry.as_ref(),
            format,
            &columns,
            kind == ColumnKind::Key,
            stmt.pos,
        )?;
    }
    check_formats(&sink_topic)?;
    let (partitions, replicas) = with.topic_creation()?;

    let produces_table = grouped || over_table;
    let root = if produces_table {
        Step::TableSink {
            input: Box::new(body),
            topic: sink_topic.clone(),
        }
    } else {
        Step::StreamSink {
            input: Box::new(body),
            topic: sink_topic.clone(),
        }
    };
    Ok(Planned::CreateAs {
        sink: SourceDesc {
            name: c.name.clone(),
            kind: if produces_table {
                SourceKindName::Table
            } else {
                SourceKindName::Stream
            },
            topic: sink_topic,
            is_source: false,
            sql: stmt.text.clone(),
        },
        if_not_exists: c.if_not_exists,
        or_replace: c.or_replace,
        create_topic: TopicCreation {
            partitions,
            replicas,
        },
        plan: Box::new(QueryPlan {
            version: PLAN_VERSION,
            root,
            throw_on_invalid_timestamp: config.throw_on_invalid_timestamp,
        }),
        inputs: match &joined {
            Some(j) => j.sources.iter().map(|s| s.name.clone()).collect(),
            None => vec![source.name.clone()],
        },
    })
}

/// The scope and source step of a query over one stream or table.
fn single_source(
    source: &SourceDesc,
    q: &ast::Query,
    grouped: bool,
    over_table: bool,
) -> (Scope, Step) {
    let input_schema = &source.topic.schema;
    let mut scope_columns: Vec<ScopeColumn> = input_schema
        .columns
        .iter()
        .map(|c| ScopeColumn {
            name: c.name.clone(),
            ty: c.ty.clone(),
            origin: None,
        })
        .collect();
    for (name, ty) in PSEUDO_COLUMNS {
        scope_columns.push(ScopeColumn {
            name: name.to_string(),
            ty,
            origin: None,
        });
    }
    // A windowed source's rows carry their window's bounds.
    if source.topic.window.is_some() {
        for bound in ["WINDOWSTART", "WINDOWEND"] {
            scope_columns.push(ScopeColumn {
                name: bound.to_string(),
                ty: SqlType::Bigint,
                origin: None,
            });
        }
    }
    let scope = Scope {
        qualifiers: std::iter::once(source.name.clone())
            .chain(q.from.alias.clone())
            .collect(),
        columns: scope_columns,
    };

    let root = if over_table {
        Step::TableSource {
            name: source.name.clone(),
            topic: source.topic.clone(),
            // An aggregation undoes the row a change replaces.
            materialized: grouped,
        }
    } else {
        Step::StreamSource {
            name: source.name.clone(),
            topic: source.topic.clone(),
        }
    };
    (scope, root)
}

/// ksqlDB's table functions: each produces any number of rows per input row.
const TABLE_FUNCTIONS: &[&str] = &["EXPLODE", "CUBE_EXPLODE"];

/// Rewrites the select list's table function calls to the columns `$udtf0`, ... that a
/// flat-map step ahead of the projection fills; unaliased items keep the names ksqlDB
/// gives them. None when the query calls no table function.
#[allow(clippy::type_complexity)]
fn plan_table_functions(
    stmt: &ast::Statement,
    c: &CreateAs,
    scope: &Scope,
    root: Step,
    over_table: bool,
) -> Result<(Step, Option<(CreateAs, Scope)>), SqlError> {
    let is_udtf = |name: &str| TABLE_FUNCTIONS.contains(&name.to_ascii_uppercase().as_str());
    let calls_udtf = |e: &ast::Expr| {
        e.any(&mut |x| matches!(&x.kind, ExprKind::Call { name, .. } if is_udtf(name)))
    };
    if !c
        .query
        .select
        .iter()
        .any(|i| matches!(i, SelectItem::Expr { expr, .. } if calls_udtf(expr)))
    {
        return Ok((root, None));
    }
    if over_table {
        return Err(SqlError::semantic(
            stmt.pos,
            "Table source is not supported with table functions",
        ));
    }
    if !c.query.group_by.is_empty() {
        return Err(SqlError::semantic(
            stmt.pos,
            "Table functions cannot be used with aggregations.",
        ));
    }
    let analyzer = ExprAnalyzer {
        scope,
        clause: Clause::Select,
    };
    let mut functions: Vec<sluice_plan::TableFunctionCall> = Vec::new();
    let mut columns = scope.columns.clone();
    let mut aliases = ColumnAliases::new(&c.query, scope);
    let mut select = Vec::with_capacity(c.query.select.len());
    for item in &c.query.select {
        let SelectItem::Expr { expr, alias } = item else {
            select.push(item.clone());
            continue;
        };
        let name = match alias {
            Some(a) => a.clone(),
            None => aliases.name(expr),
        };
        let mut rewrite = |e: &ast::Expr| -> Result<ast::Expr, SqlError> {
            fn go(
                e: &ast::Expr,
                f: &mut dyn FnMut(&ast::Expr) -> Result<Option<ast::Expr>, SqlError>,
            ) -> Result<ast::Expr, SqlError> {
                match f(e)? {
                    Some(done) => Ok(done),
                    None => e.map_children(&mut |c| go(c, f)),
                }
            }
            go(e, &mut |x| {
                let ExprKind::Call { name, args, .. } = &x.kind else {
                    return Ok(None);
                };
                if !is_udtf(name) {
                    return Ok(None);
                }
                let upper = name.to_ascii_uppercase();
                let typed = args
                    .iter()
                    .map(|a| analyzer.analyze(a))
                    .collect::<Result<Vec<_>, _>>()?;
                let element = match typed.as_slice() {
                    // CUBE_EXPLODE: a row per combination of the array's elements and
                    // NULLs, each an array like the argument.
                    [(_, array @ SqlType::Array(_))] if upper == "CUBE_EXPLODE" => array.clone(),
                    [(_, SqlType::Array(item))] => (**item).clone(),
                    _ => {
                        let shown: Vec<String> = typed.iter().map(|t| t.1.to_string()).collect();
                        return Err(SqlError::semantic(
                            x.pos,
                            format!(
                                "Function '{}' does not accept parameters ({}).\nValid alternatives are:\nexplode(ARRAY<DECIMAL> input)\nexplode(ARRAY<T> list)",
                                upper.to_ascii_lowercase(),
                                shown.join(", ")
                            ),
                        ));
                    }
                };
                let column = format!("$udtf{}", functions.len());
                columns.push(ScopeColumn {
                    name: column.clone(),
                    ty: element.clone(),
                    origin: None,
                });
                functions.push(sluice_plan::TableFunctionCall {
                    function: upper,
                    args: typed.into_iter().map(|t| t.0).collect(),
                    return_type: element,
                });
                Ok(Some(ast::Expr::new(
                    ExprKind::Column {
                        qualifier: None,
                        name: column,
                    },
                    x.pos,
                )))
            })
        };
        select.push(SelectItem::Expr {
            expr: rewrite(expr)?,
            alias: Some(name),
        });
    }
    let root = Step::StreamFlatMap {
        input: Box::new(root),
        functions,
    };
    let mut rewritten = c.clone();
    rewritten.query.select = select;
    let scope = Scope {
        qualifiers: scope.qualifiers.clone(),
        columns,
    };
    Ok((root, Some((rewritten, scope))))
}

/// Aggregate functions that can undo a row, which aggregating a table needs (ksqlDB's
/// `TableUdaf`s).
const TABLE_AGGREGATES: &[&str] = &[
    "COUNT",
    "SUM",
    "AVG",
    "COLLECT_LIST",
    "COLLECT_SET",
    "HISTOGRAM",
    "CORRELATION",
    "ATTR",
    "STDDEV_SAMP",
    "STDDEV_SAMPLE",
];

fn check_table_aggregates(pos: Pos, step: &Step) -> Result<(), SqlError> {
    let Step::StreamAggregate { aggregates, .. } = step else {
        return Ok(());
    };
    let mut refused: Vec<&str> = Vec::new();
    for a in aggregates {
        if !TABLE_AGGREGATES.contains(&a.function.as_str()) && !refused.contains(&&*a.function) {
            refused.push(&a.function);
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let names = match refused.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => unreachable!(),
    };
    Err(SqlError::semantic(
        pos,
        format!(
            "The aggregation function{} {names} cannot be applied to a table source, only to a stream source.",
            if refused.len() == 1 { "" } else { "s" }
        ),
    ))
}

fn plan_insert_into(
    stmt: &ast::Statement,
    target: &str,
    query: &ast::Query,
    catalog: &dyn Catalog,
    config: &PlannerConfig,
) -> Result<Planned, SqlError> {
    let Some(sink) = catalog.source(target) else {
        // The error points at the target's name, after INTO.
        let upper = stmt.text.to_ascii_uppercase();
        let pos = upper
            .find("INTO")
            .map(|at| {
                let rest = &stmt.text[at + 4..];
                let offset = at + 4 + (rest.len() - rest.trim_start().len());
                Pos::new(stmt.pos.line, stmt.pos.column + offset as u32)
            })
            .unwrap_or(stmt.pos);
        return Err(SqlError::semantic(
            pos,
            format!("Source `{target}` does not exist."),
        ));
    };
    if sink.kind == SourceKindName::Table {
        return Err(SqlError::semantic(
            stmt.pos,
            format!("INSERT INTO can only be used to insert into a stream. {target} is a table."),
        ));
    }
    if sink.is_source {
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "Cannot insert into read-only {}: {target}",
                sink.kind.lower()
            ),
        ));
    }
    if sink
        .topic
        .schema
        .columns
        .iter()
        .any(|c| matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
    {
        return Err(SqlError::semantic(
            stmt.pos,
            format!("Cannot insert into {target} because it has header columns"),
        ));
    }
    // Plan the query as if it created the target, then write to the target's topic.
    let as_create = CreateAs {
        kind: SourceKind::Stream,
        or_replace: false,
        if_not_exists: false,
        name: target.to_string(),
        properties: Properties::default(),
        query: query.clone(),
    };
    let Planned::CreateAs {
        sink: result,
        plan,
        inputs,
        ..
    } = plan_create_as(stmt, &as_create, catalog, config)?
    else {
        unreachable!("plan_create_as plans a CreateAs");
    };
    if result.topic.schema != sink.topic.schema {
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
                result.topic.schema, sink.topic.schema
            ),
        ));
    }
    let mut plan = plan;
    if let Step::StreamSink { topic, .. } = &mut plan.root {
        *topic = sink.topic.clone();
    }
    Ok(Planned::InsertInto {
        target: target.to_string(),
        plan,
        inputs,
    })
}

/// A push or pull query, planned as if it created a stream (or, when its result is a table, a
/// table) with JSON formats, which nothing ever writes to.
fn plan_select(
    stmt: &ast::Statement,
    query: &ast::Query,
    catalog: &dyn Catalog,
    config: &PlannerConfig,
) -> Result<Planned, SqlError> {
    let json = |name: &str| {
        (
            name.to_string(),
            PropertyValue::String("JSON".into()),
            stmt.pos,
        )
    };
    if query.emit.is_none() {
        crate::pull::check(stmt, query, catalog, &config.pull)?;
    }
    // The runtime counts the LIMIT; persistent queries have none.
    let mut query = query.clone();
    let limit = query.limit.take();
    // A push query may aggregate without GROUP BY: all its rows are one group.
    let aggregates = query.select.iter().any(|i| {
        matches!(i, SelectItem::Expr { expr, .. } if crate::aggregate::find_aggregate(expr).is_some())
    });
    if query.emit.is_some() && query.group_by.is_empty() && aggregates {
        query.group_by = vec![ast::Expr::new(
            ExprKind::Literal(ast::LiteralValue::Number("1".into())),
            stmt.pos,
        )];
    }
    let as_create = |kind| CreateAs {
        kind,
        or_replace: false,
        if_not_exists: false,
        name: "TRANSIENT_QUERY".into(),
        properties: Properties {
            entries: vec![json("KEY_FORMAT"), json("VALUE_FORMAT")],
        },
        query: query.clone(),
    };
    let config = PlannerConfig {
        transient: true,
        ..config.clone()
    };
    // Whether the result is a stream or a table comes from the planner's own check.
    let planned = match plan_create_as(stmt, &as_create(SourceKind::Stream), catalog, &config) {
        Err(e) if e.to_string().contains("Your SELECT query produces a TABLE") => {
            plan_create_as(stmt, &as_create(SourceKind::Table), catalog, &config)?
        }
        other => other?,
    };
    let Planned::CreateAs { sink, plan, .. } = planned else {
        unreachable!("plan_create_as plans a CreateAs");
    };
    let is_table = sink.kind == SourceKindName::Table;
    if query.emit.is_none() {
        crate::pull::check_planned(stmt, &query, catalog)?;
    }
    let windowed_source = catalog
        .source(&query.from.name)
        .is_some_and(|s| s.topic.window.is_some());
    let has_key = sink.topic.schema.keys().next().is_some();
    let has_bounds = ["WINDOWSTART", "WINDOWEND"]
        .iter()
        .all(|b| sink.topic.schema.keys().any(|k| k.name == *b));
    if is_table && query.emit.is_none() && (!has_key || (windowed_source && !has_bounds)) {
        // The scan keeps each key's latest row: it must see the key (with its window),
        // as hidden columns when the query does not select it.
        let replanned = query.select.iter().any(|i| {
            matches!(i, SelectItem::Expr { alias: Some(a), .. } if a.starts_with(crate::HIDDEN_PREFIX))
        });
        if let Some(source) = catalog.source(&query.from.name)
            && !replanned
        {
            let mut with_keys = query.clone();
            with_keys.limit = limit;
            let keys = source
                .topic
                .schema
                .keys()
                .map(|k| k.name.clone())
                .filter(|_| !has_key);
            let bounds = ["WINDOWSTART", "WINDOWEND"].map(String::from);
            let bounds = bounds.into_iter().filter(|b| {
                windowed_source && !sink.topic.schema.columns.iter().any(|c| c.name == *b)
            });
            for name in keys.chain(bounds) {
                with_keys.select.push(SelectItem::Expr {
                    alias: Some(format!("{}{name}", crate::HIDDEN_PREFIX)),
                    expr: ast::Expr::new(
                        ExprKind::Column {
                            qualifier: None,
                            name,
                        },
                        stmt.pos,
                    ),
                });
            }
            with_keys.emit = None;
            return plan_select(stmt, &with_keys, catalog, &config);
        }
    }
    Ok(Planned::Select {
        plan,
        schema: sink.topic.schema.clone(),
        is_table,
        limit,
        pull: query.emit.is_none(),
    })
}

fn plan_alter(
    stmt: &ast::Statement,
    kind: SourceKind,
    name: &str,
    columns: &[(String, SqlType)],
    catalog: &dyn Catalog,
) -> Result<Planned, SqlError> {
    let fail = |m: String| SqlError::semantic(stmt.pos, m);
    let Some(source) = catalog.source(name) else {
        return Err(fail(format!("Source {name} does not exist.")));
    };
    let wanted: SourceKindName = kind.into();
    let noun = wanted.lower();
    if source.kind != wanted {
        return Err(fail(format!(
            "Incompatible data source type is {}, but statement was ALTER {}",
            source.kind.lower().to_uppercase(),
            noun.to_uppercase()
        )));
    }
    if source.is_source {
        return Err(fail(format!(
            "Cannot alter {noun} '{name}': ALTER operations are not supported on source {noun}s."
        )));
    }
    let made_by_query = crate::parse_statements(&source.sql)
        .map(|s| {
            s.iter()
                .any(|s| matches!(s.kind, StatementKind::CreateAs(_)))
        })
        .unwrap_or(false);
    if made_by_query {
        return Err(fail(
            "ALTER command is not supported for CREATE ... AS statements.".into(),
        ));
    }
    let mut altered = source.clone();
    for (column, ty) in columns {
        if altered.topic.schema.find(column).is_some() {
            return Err(fail(format!(
                "Cannot add column `{column}` to schema. A column with the same name already exists."
            )));
        }
        altered
            .topic
            .schema
            .columns
            .push(Column::value(column.clone(), ty.clone()));
    }
    Ok(Planned::Alter { source: altered })
}

/// The type of a HEADERS column: every header of the record.
fn headers_type() -> SqlType {
    SqlType::Array(Box::new(SqlType::Struct(vec![
        sluice_plan::StructField {
            name: "KEY".into(),
            ty: SqlType::String,
        },
        sluice_plan::StructField {
            name: "VALUE".into(),
            ty: SqlType::Bytes,
        },
    ])))
}

/// ksqlDB's hint when a name differs from a source's only in case: quoting matters.
fn case_hint(name: &str, catalog: &dyn Catalog) -> Option<String> {
    let other = catalog
        .source_names()
        .into_iter()
        .find(|n| *n != name && n.eq_ignore_ascii_case(name))?;
    Some(if other == other.to_ascii_uppercase() {
        format!("Did you mean {other}? Hint: try removing double quotes from the source name.")
    } else {
        format!(
            "Did you mean \"{other}\"? Hint: wrap the source name in double quotes to make it case-sensitive."
        )
    })
}

/// The stream or table rows of values can be inserted into (INSERT ... VALUES,
/// `/inserts-stream`): one that exists and is not read-only.
pub fn values_target<'c>(name: &str, catalog: &'c dyn Catalog) -> Result<&'c SourceDesc, String> {
    let Some(source) = catalog.source(name) else {
        let mut message = format!("Cannot insert values into an unknown stream/table: `{name}`");
        if let Some(hint) = case_hint(name, catalog) {
            message.push('\n');
            message.push_str(&hint);
        }
        return Err(message);
    };
    if source.is_source {
        return Err(format!(
            "Cannot insert values into read-only {}: {name}",
            source.kind.lower()
        ));
    }
    Ok(source)
}

fn plan_insert_values(
    stmt: &ast::Statement,
    target: &str,
    columns: Option<&[String]>,
    values: &[ast::Expr],
    catalog: &dyn Catalog,
) -> Result<Planned, SqlError> {
    let fail = |m: String| SqlError::semantic(stmt.pos, m);
    let sink = values_target(target, catalog).map_err(fail)?;
    let schema = &sink.topic.schema;
    let names: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => schema.columns.iter().map(|c| c.name.clone()).collect(),
    };
    if names.len() != values.len() {
        return Err(fail(format!(
            "Failed to prepare statement: Expected number columns and values to match: {}, {}",
            names.len(),
            values.len()
        )));
    }
    let scope = Scope {
        qualifiers: Vec::new(),
        columns: Vec::new(),
    };
    let analyzer = ExprAnalyzer {
        scope: &scope,
        clause: Clause::Select,
    };
    let mut planned = Vec::new();
    let mut rowtime = None;
    for (name, value) in names.iter().zip(values) {
        if matches!(
            name.as_str(),
            "ROWPARTITION" | "ROWOFFSET" | "WINDOWSTART" | "WINDOWEND"
        ) {
            return Err(fail(format!(
                "Inserting into column `{name}` is not allowed."
            )));
        }
        let ty = if name == "ROWTIME" {
            SqlType::Bigint
        } else {
            match schema.columns.iter().find(|c| &c.name == name) {
                Some(c) if matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)) => {
                    return Err(fail(format!("Cannot insert into HEADER columns: {name}")));
                }
                Some(c) => c.ty.clone(),
                None => return Err(fail(format!("Column name {name} does not exist."))),
            }
        };
        let typed = analyzer.analyze(value)?;
        let shown = typed.1.clone();
        let Some(expr) = fit_value(typed, &ty) else {
            return Err(SqlError::semantic(
                value.pos,
                format!("Expected type {ty} for field {name} but got {shown}({value})"),
            ));
        };
        if name == "ROWTIME" {
            rowtime = Some(expr);
        } else {
            planned.push(NamedExpr {
                name: name.clone(),
                expr,
            });
        }
    }
    if sink.kind == SourceKindName::Table {
        let missing: Vec<&str> = schema
            .keys()
            .filter(|k| {
                !planned.iter().any(|v| {
                    v.name == k.name
                        && !matches!(
                            v.expr,
                            sluice_plan::Expr::Literal(sluice_plan::Literal::Null(_))
                        )
                })
            })
            .map(|k| k.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(fail(format!(
                "Failed to insert values into '{target}'. Value for primary key column(s) {} is required for tables",
                missing.join(", ")
            )));
        }
    }
    Ok(Planned::InsertValues {
        target: target.to_string(),
        topic: sink.topic.clone(),
        values: planned,
        rowtime,
    })
}

/// A select item that is a bare NULL has no type to write it with.
pub(crate) fn refuse_untyped_null(expr: &ast::Expr) -> Result<(), SqlError> {
    if matches!(expr.kind, ExprKind::Literal(ast::LiteralValue::Null)) {
        return Err(SqlError::semantic(
            expr.pos,
            "Can't infer a type of null. Please explicitly cast it to a required type, e.g. CAST(null AS VARCHAR).",
        ));
    }
    Ok(())
}

/// The names ksqlDB gives unaliased select items (its `ColumnAliasGenerator`): a
/// column's name; a struct field's name, numbered (`NAME_1`) when a source column or an
/// earlier field already has it; else the next `KSQL_COL_n` that no source column or
/// alias has.
pub(crate) struct ColumnAliases<'a> {
    query: &'a ast::Query,
    generated: usize,
    /// The sources' column names.
    taken: std::collections::HashSet<String>,
    /// Per struct field name, how many items took it (source columns count one).
    fields: std::collections::HashMap<String, usize>,
}

impl<'a> ColumnAliases<'a> {
    pub(crate) fn new(query: &'a ast::Query, scope: &Scope) -> Self {
        let taken: std::collections::HashSet<String> = scope
            .columns
            .iter()
            .map(|c| c.origin.as_ref().map_or(&c.name, |(_, n)| n).clone())
            .collect();
        let fields = taken.iter().map(|n| (n.clone(), 1)).collect();
        ColumnAliases {
            query,
            generated: 0,
            taken,
            fields,
        }
    }

    pub(crate) fn name(&mut self, expr: &ast::Expr) -> String {
        match &expr.kind {
            ExprKind::Column { name, .. } => name.clone(),
            ExprKind::Dereference { field, .. } => {
                let n = self.fields.entry(field.clone()).or_default();
                *n += 1;
                match *n {
                    1 => field.clone(),
                    n => format!("{field}_{}", n - 1),
                }
            }
            _ => loop {
                let candidate = format!("KSQL_COL_{}", self.generated);
                self.generated += 1;
                let aliased = self.query.select.iter().any(
                    |i| matches!(i, SelectItem::Expr { alias: Some(a), .. } if *a == candidate),
                );
                if !aliased && !self.taken.contains(&candidate) {
                    break candidate;
                }
            },
        }
    }
}

/// An expression with its column references qualified by the source, as ksqlDB shows
/// expressions in messages (`ABS(INPUT.ID)`).
fn qualified(e: &ast::Expr, source: &str) -> String {
    fn go(e: &ast::Expr, source: &str) -> ast::Expr {
        match &e.kind {
            ExprKind::Column {
                qualifier: None,
                name,
            } => ast::Expr::new(
                ExprKind::Column {
                    qualifier: Some(source.to_string()),
                    name: name.clone(),
                },
                e.pos,
            ),
            _ => e
                .map_children(&mut |c| Ok::<_, ()>(go(c, source)))
                .unwrap_or_else(|()| e.clone()),
        }
    }
    go(e, source).to_string()
}

/// The select list of `... PARTITION BY exprs`: the partitioning expressions become the
/// key columns, named by the select items that project them; `*` brings the value
/// columns and then the old key columns, as values.
fn plan_partition_by(
    c: &CreateAs,
    input_schema: &LogicalSchema,
    scope: &Scope,
    joined: Option<&crate::join::Joined>,
) -> Result<(Vec<NamedExpr>, LogicalSchema), SqlError> {
    let q = &c.query;
    let analyzer = ExprAnalyzer {
        scope,
        clause: Clause::Select,
    };
    let is_null = |e: &ast::Expr| matches!(e.kind, ExprKind::Literal(ast::LiteralValue::Null));
    if q.partition_by.len() > 1 && q.partition_by.iter().any(is_null) {
        return Err(SqlError::semantic(
            None,
            "Cannot PARTITION BY multiple columns including NULL",
        ));
    }
    // PARTITION BY NULL: no key at all.
    let partitions: Vec<&ast::Expr> = q
        .partition_by
        .iter()
        .filter(|e| !matches!(e.kind, ExprKind::Literal(ast::LiteralValue::Null)))
        .collect();
    // PARTITION BY reads the input: a name only the select list has is not there yet.
    for p in &partitions {
        for name in p.column_names() {
            if scope.columns.iter().any(|c| c.name == name)
                || joined.is_some()
                || analyzer.analyze(p).is_ok()
            {
                continue;
            }
            let aliased = q
                .select
                .iter()
                .any(|i| matches!(i, SelectItem::Expr { alias: Some(a), .. } if *a == name));
            let mut message = format!("PARTITION BY column '{name}' cannot be resolved.");
            if aliased {
                message.push_str(&format!(
                    " '{name}' must be a column in the source schema since PARTITION BY is applied on the input."
                ));
            }
            return Err(SqlError::semantic(p.pos, message));
        }
    }
    let texts: Vec<String> = partitions.iter().map(|e| e.to_string()).collect();
    let mut key_names: Vec<Option<String>> = vec![None; partitions.len()];
    let mut values: Vec<(String, sluice_plan::Expr, SqlType)> = Vec::new();
    let mut aliases = ColumnAliases::new(q, scope);
    let mut star = false;
    for item in &q.select {
        match item {
            SelectItem::StructStar { pos, .. } => {
                return Err(SqlError::unsupported(
                    *pos,
                    "->* with PARTITION BY is not supported yet",
                ));
            }
            SelectItem::Star { .. } => {
                star = true;
                let moved = input_schema
                    .values()
                    .chain(input_schema.keys())
                    .filter(|col| !texts.iter().any(|t| *t == ast::quote_ident(&col.name)));
                for col in moved {
                    values.push((
                        col.name.clone(),
                        sluice_plan::Expr::Column(col.name.clone()),
                        col.ty.clone(),
                    ));
                }
            }
            SelectItem::Expr { expr, alias } => {
                let joined_name = match joined {
                    Some(j) if alias.is_none() => {
                        crate::join::item_name(j, scope, expr, &analyzer.analyze(expr)?.0)
                    }
                    _ => None,
                };
                let name = match (alias, joined_name) {
                    (Some(a), _) => a.clone(),
                    (None, Some(n)) => n,
                    (None, None) => aliases.name(expr),
                };
                if let Some(i) = texts.iter().position(|t| *t == expr.to_string()) {
                    key_names[i] = Some(name);
                    continue;
                }
                let (e, ty) = analyzer.analyze(expr)?;
                if RESERVED_COLUMNS.contains(&name.as_str()) {
                    return Err(reserved_name(&name, alias.is_some(), expr.pos));
                }
                values.push((name, e, ty));
            }
        }
    }
    let mut projection = Vec::new();
    let mut columns = Vec::new();
    for (i, p) in partitions.iter().enumerate() {
        let name = match key_names[i].take() {
            Some(n) => n,
            None if star => aliases.name(p),
            None => {
                let shown = qualified(
                    p,
                    &q.from.alias.clone().unwrap_or_else(|| q.from.name.clone()),
                );
                return Err(SqlError::semantic(
                    p.pos,
                    format!(
                        "The query used to build `{}` must include the partitioning expression {shown} in its projection (eg, SELECT {shown}...).",
                        c.name
                    ),
                ));
            }
        };
        let (e, ty) = analyzer.analyze(p)?;
        columns.push(Column::key(name.clone(), ty));
        projection.push(NamedExpr { name, expr: e });
    }
    for (name, e, ty) in values {
        if columns.iter().any(|c: &Column| c.name == name) {
            // A value column named like the new key is dropped from the value, as ksqlDB does.
            continue;
        }
        columns.push(Column::value(name.clone(), ty));
        projection.push(NamedExpr { name, expr: e });
    }
    if !columns.iter().any(|c| c.kind == ColumnKind::Value) {
        return Err(SqlError::semantic(
            None,
            "The projection contains no value columns.",
        ));
    }
    Ok((projection, LogicalSchema::new(columns)))
}

/// The select list of a non-aggregate query: stars expanded, every column named, the
/// source's key columns found (each must be projected, once).
fn plan_projection(
    stmt: &ast::Statement,
    c: &CreateAs,
    input_schema: &LogicalSchema,
    scope: &Scope,
    config: &PlannerConfig,
) -> Result<(Vec<NamedExpr>, LogicalSchema), SqlError> {
    let transient = config.transient;
    let q = &c.query;
    // The projection: expand stars, name every column, find the key columns.
    let analyzer = ExprAnalyzer {
        scope,
        clause: Clause::Select,
    };
    let mut projection: Vec<NamedExpr> = Vec::new();
    let mut out_columns: Vec<Column> = Vec::new();
    let mut aliases = ColumnAliases::new(q, scope);
    let mut key_aliases: Vec<(String, String)> = Vec::new(); // (source key, output name)
    for item in &q.select {
        match item {
            SelectItem::Star { qualifier, pos } => {
                if let Some(qual) = qualifier
                    && !scope.qualifiers.contains(qual)
                {
                    return Err(SqlError::semantic(
                        *pos,
                        format!(
                            "Failed to prepare statement: '{qual}' is not a valid stream/table name or alias."
                        ),
                    ));
                }
                // A query's rows over a windowed source show the window's bounds after
                // the key columns (as key columns of a table's rows).
                let bounds: Vec<Column> =
                    if transient && scope.columns.iter().any(|c| c.name == "WINDOWSTART") {
                        ["WINDOWSTART", "WINDOWEND"]
                            .map(|b| Column {
                                name: b.into(),
                                ty: SqlType::Bigint,
                                kind: ColumnKind::Key,
                            })
                            .into()
                    } else {
                        Vec::new()
                    };
                let keys = input_schema.keys().chain(&bounds);
                for col in keys.chain(
                    input_schema
                        .columns
                        .iter()
                        .filter(|c| c.kind != ColumnKind::Key),
                ) {
                    projection.push(NamedExpr {
                        name: col.name.clone(),
                        expr: sluice_plan::Expr::Column(col.name.clone()),
                    });
                    if col.kind == ColumnKind::Key {
                        key_aliases.push((col.name.clone(), col.name.clone()));
                        out_columns.push(col.clone());
                    } else {
                        // Header columns are values of the result.
                        out_columns.push(Column::value(col.name.clone(), col.ty.clone()));
                    }
                }
            }
            SelectItem::StructStar { expr, pos } => {
                let (e, ty) = analyzer.analyze(expr)?;
                let SqlType::Struct(fields) = ty else {
                    return Err(SqlError::semantic(
                        *pos,
                        format!("{expr} is not a STRUCT: ->* selects a struct's fields."),
                    ));
                };
                for f in fields {
                    projection.push(NamedExpr {
                        name: f.name.clone(),
                        expr: sluice_plan::Expr::Field {
                            expr: Box::new(e.clone()),
                            name: f.name.clone(),
                        },
                    });
                    out_columns.push(Column::value(f.name, f.ty));
                }
            }
            SelectItem::Expr { expr, alias } => {
                refuse_untyped_null(expr)?;
                let (e, ty) = analyzer.analyze(expr)?;
                let name = match alias {
                    Some(a) => a.clone(),
                    None => aliases.name(expr),
                };
                // A query's rows are not written to a topic: they may show pseudo-columns.
                if RESERVED_COLUMNS.contains(&name.as_str()) && !transient {
                    return Err(reserved_name(&name, alias.is_some(), expr.pos));
                }
                // A table query's rows over a windowed table are keyed by the window too.
                let is_key = matches!(&expr.kind, ExprKind::Column { name: n, .. }
                    if input_schema.find(n).is_some_and(|c| c.kind == ColumnKind::Key)
                        || (transient
                            && c.kind == SourceKind::Table
                            && matches!(n.as_str(), "WINDOWSTART" | "WINDOWEND")));
                if is_key && let ExprKind::Column { name: n, .. } = &expr.kind {
                    key_aliases.push((n.clone(), name.clone()));
                }
                out_columns.push(Column {
                    name: name.clone(),
                    ty,
                    kind: if is_key {
                        ColumnKind::Key
                    } else {
                        ColumnKind::Value
                    },
                });
                projection.push(NamedExpr { name, expr: e });
            }
        }
    }

    // Every source key column must be projected, once.
    let missing: Vec<&str> = input_schema
        .keys()
        .filter(|k| !key_aliases.iter().any(|(src, _)| *src == k.name))
        .map(|k| k.name.as_str())
        .collect();
    // ksqlDB's new query planner lets a stream drop its key: its records then have none.
    let keyless =
        config.new_query_planner && c.kind == SourceKind::Stream && key_aliases.is_empty();
    if !missing.is_empty() && !transient && !keyless {
        // ksqlDB names every key column when any is missing.
        let missing: Vec<&str> = input_schema.keys().map(|k| k.name.as_str()).collect();
        let (noun, list) = if missing.len() == 1 {
            ("key column", missing[0].to_string())
        } else {
            let (last, init) = missing.split_last().expect("non-empty");
            ("key columns", format!("{} and {last}", init.join(", ")))
        };
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "The query used to build `{}` must include the {noun} {list} in its projection (eg, SELECT {}...).",
                c.name,
                missing.join(", ")
            ),
        ));
    }
    for (i, (src, out)) in key_aliases.iter().enumerate() {
        if let Some((_, other)) = key_aliases[..i].iter().find(|(s, _)| s == src) {
            return Err(SqlError::semantic(
                stmt.pos,
                format!(
                    "The projection contains a key column more than once: `{other}` and `{out}`."
                ),
            ));
        }
    }
    for (i, col) in out_columns.iter().enumerate() {
        if out_columns[..i].iter().any(|c| c.name == col.name) {
            return Err(SqlError::semantic(
                stmt.pos,
                format!(
                    "Duplicate value columns found in schema: `{}` {}",
                    col.name, col.ty
                ),
            ));
        }
    }
    // A push query's rows need no value (they are not written as records).
    if !transient && !out_columns.iter().any(|c| c.kind == ColumnKind::Value) {
        return Err(SqlError::semantic(
            stmt.pos,
            "The projection contains no value columns.",
        ));
    }
    if !transient && !config.new_query_planner {
        // ksqlDB's default planner keeps the source's key order, whatever the
        // projection's.
        let rank = |name: &str| {
            key_aliases
                .iter()
                .find(|(_, out)| out == name)
                .and_then(|(src, _)| input_schema.keys().position(|k| k.name == *src))
        };
        let mut keys: Vec<Column> = out_columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Key)
            .cloned()
            .collect();
        keys.sort_by_key(|k| rank(&k.name));
        let mut keys = keys.into_iter();
        for col in out_columns.iter_mut().filter(|c| c.kind == ColumnKind::Key) {
            *col = keys.next().expect("as many keys");
        }
    }
    if transient && c.kind == SourceKind::Stream {
        // A push query's rows keep the select list's order: nothing is keyed.
        for col in &mut out_columns {
            col.kind = ColumnKind::Value;
        }
    }
    let out_schema = if transient {
        // A query's rows keep the select list's order.
        LogicalSchema {
            columns: out_columns,
        }
    } else {
        LogicalSchema::new(out_columns)
    };
    // Keep the projection in the schema's order (keys first).
    let projection: Vec<NamedExpr> = out_schema
        .columns
        .iter()
        .map(|c| {
            projection
                .iter()
                .find(|p| p.name == c.name)
                .cloned()
                .expect("every output column has an expression")
        })
        .collect();
    Ok((projection, out_schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse_statement;
    use std::collections::BTreeMap;

    type MapCatalog = BTreeMap<String, SourceDesc>;

    fn run(catalog: &mut MapCatalog, sql: &str) -> Result<Planned, SqlError> {
        let stmt = parse_statement(sql)?;
        let planned = plan_statement(&stmt, catalog, &PlannerConfig::default())?;
        match &planned {
            Planned::CreateSource { source, .. } | Planned::CreateAs { sink: source, .. } => {
                catalog.insert(source.name.clone(), source.clone());
            }
            _ => {}
        }
        Ok(planned)
    }

    fn catalog() -> MapCatalog {
        let mut c = MapCatalog::new();
        run(
            &mut c,
            "CREATE STREAM pageviews (id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pv', value_format='JSON', partitions=3);",
        )
        .unwrap();
        c
    }

    fn error(sql: &str) -> String {
        run(&mut catalog(), sql).unwrap_err().to_string()
    }

    #[test]
    fn alter_adds_value_columns_to_streams_made_by_create() {
        let mut c = catalog();
        let Planned::Alter { source } = run(
            &mut c,
            "ALTER STREAM pageviews ADD COLUMN referrer STRING, ADD tags ARRAY<STRING>;",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            source.topic.schema.to_string(),
            "`ID` BIGINT KEY, `PAGE` STRING, `MS` INTEGER, `REFERRER` STRING, `TAGS` ARRAY<STRING>"
        );
        assert_eq!(
            error("ALTER STREAM pageviews ADD COLUMN page STRING;"),
            "Cannot add column `PAGE` to schema. A column with the same name already exists."
        );
        assert_eq!(
            error("ALTER TABLE pageviews ADD COLUMN x INT;"),
            "Incompatible data source type is STREAM, but statement was ALTER TABLE"
        );
        run(&mut c, "CREATE STREAM copy AS SELECT * FROM pageviews;").unwrap();
        assert_eq!(
            run(&mut c, "ALTER STREAM copy ADD COLUMN x INT;")
                .unwrap_err()
                .to_string(),
            "ALTER command is not supported for CREATE ... AS statements."
        );
    }

    #[test]
    fn csas_plans_filter_project_sink() {
        let Planned::CreateAs { plan, sink, create_topic, .. } = run(
            &mut catalog(),
            "CREATE STREAM out AS SELECT id, UCASE(page) AS page, ms * 2 FROM pageviews WHERE ms > 10;",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(sink.topic.topic, "OUT");
        assert_eq!(create_topic.partitions, None);
        assert_eq!(
            sink.topic.schema.to_string(),
            "`ID` BIGINT KEY, `PAGE` STRING, `KSQL_COL_0` INTEGER"
        );
        assert_eq!(
            plan.root.explain(),
            "SINK OUT (key: KAFKA, value: JSON) [`ID` BIGINT KEY, `PAGE` STRING, `KSQL_COL_0` INTEGER]\n  PROJECT ID AS ID, UCASE(PAGE) AS PAGE, (MS * 2) AS KSQL_COL_0\n    FILTER (MS > 10)\n      SOURCE PAGEVIEWS (topic: pv, key: KAFKA, value: JSON) [`ID` BIGINT KEY, `PAGE` STRING, `MS` INTEGER]\n"
        );
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<QueryPlan>(&json).unwrap(), *plan);
    }

    #[test]
    fn unaliased_items_get_ksqldbs_generated_names() {
        let mut cat = catalog();
        run(
            &mut cat,
            "CREATE STREAM gen (KSQL_COL_1 INT KEY, ITEM STRUCT<ITEM INT, NAME STRING>, \
             OTHER STRUCT<NAME STRING>) WITH (kafka_topic='gen', format='JSON');",
        )
        .unwrap();
        let Planned::CreateAs { sink, .. } = run(
            &mut cat,
            "CREATE STREAM out AS SELECT KSQL_COL_1, ITEM->ITEM, ITEM->NAME, OTHER->NAME, \
             ABS(ITEM->ITEM), ABS(ITEM->ITEM) FROM gen;",
        )
        .unwrap() else {
            panic!()
        };
        // A field named like a source column, or like an earlier field, is numbered;
        // generated names skip the sources' column names.
        assert_eq!(
            sink.topic.schema.to_string(),
            "`KSQL_COL_1` INTEGER KEY, `ITEM_1` INTEGER, `NAME` STRING, `NAME_1` STRING, \
             `KSQL_COL_0` INTEGER, `KSQL_COL_2` INTEGER"
        );
    }

    #[test]
    fn group_by_plans_an_aggregate_table() {
        let Planned::CreateAs { plan, sink, .. } = run(
            &mut catalog(),
            "CREATE TABLE counts AS SELECT page AS p, COUNT(*) AS n, SUM(ms) + 1 AS total, UCASE(page) AS up \
             FROM pageviews GROUP BY page HAVING COUNT(*) > 1;",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(sink.kind, SourceKindName::Table);
        assert_eq!(
            sink.topic.schema.to_string(),
            "`P` STRING KEY, `N` BIGINT, `TOTAL` INTEGER, `UP` STRING"
        );
        assert_eq!(
            plan.root.explain().lines().nth(1).unwrap().trim(),
            "AGGREGATE BY PAGE [COUNT() AS $agg0, SUM(MS) AS $agg1] PROJECT $agg0 AS N, ($agg1 + 1) AS TOTAL, UCASE(P) AS UP HAVING ($agg0 > 1)"
        );
    }

    #[test]
    fn group_by_rules_are_ksqldbs() {
        assert_eq!(
            error("CREATE TABLE t AS SELECT page, COUNT(*) FROM pageviews GROUP BY page, ms;"),
            "The query used to build `T` must include the grouping expression MS in its projection (eg, SELECT MS...)."
        );
        assert_eq!(
            error("CREATE TABLE t AS SELECT page, ms, COUNT(*) FROM pageviews GROUP BY page;"),
            "Non-aggregate SELECT expression(s) not part of GROUP BY: MS\nEither add the column(s) to the GROUP BY or remove them from the SELECT."
        );
        assert_eq!(
            error("CREATE TABLE t AS SELECT SUM(ms), COUNT(*) FROM pageviews GROUP BY SUM(ms);"),
            "GROUP BY does not support aggregate functions: SUM is an aggregate function."
        );
        assert!(
            error("CREATE STREAM t AS SELECT page, COUNT(*) FROM pageviews GROUP BY page;")
                .contains("produces a TABLE")
        );
        assert_eq!(
            error("CREATE STREAM t AS SELECT COUNT(*) FROM pageviews;"),
            "Use of aggregate function COUNT requires a GROUP BY clause."
        );
        assert_eq!(
            error("CREATE TABLE t AS SELECT page, COUNT(*) FROM pageviews;"),
            "Non-aggregate SELECT expression(s) not part of GROUP BY: PAGE\nEither add the column(s) to the GROUP BY or remove them from the SELECT."
        );
        // The select list is checked before the key columns.
        assert_eq!(
            error("CREATE TABLE t AS SELECT ms + 1, COUNT(*) FROM pageviews GROUP BY 1 + ms;"),
            "Non-aggregate SELECT expression(s) not part of GROUP BY: (MS + 1)\nEither add the column(s) to the GROUP BY or remove them from the SELECT."
        );
    }

    #[test]
    fn queries_over_tables_produce_tables() {
        let mut cat = catalog();
        run(
            &mut cat,
            "CREATE TABLE users (id STRING PRIMARY KEY, region STRING, score INT) WITH (kafka_topic='users', value_format='JSON');",
        )
        .unwrap();
        let plan_of = |cat: &mut MapCatalog, sql: &str| match run(cat, sql).unwrap() {
            Planned::CreateAs { plan, sink, .. } => (plan, sink),
            other => panic!("unexpected {other:?}"),
        };
        let (plan, sink) = plan_of(
            &mut cat,
            "CREATE TABLE eu AS SELECT id, score FROM users WHERE region = 'eu';",
        );
        assert_eq!(sink.kind, SourceKindName::Table);
        let explain = plan.root.explain();
        assert!(explain.contains("TABLE SOURCE USERS"), "{explain}");
        assert!(matches!(&plan.root, Step::TableSink { input, .. }
            if matches!(&**input, Step::TableSelect { input, .. }
                if matches!(&**input, Step::TableFilter { .. }))));
        assert!(!plan.root.is_stateful());

        // Aggregating a table needs its old rows: the source is materialized.
        let (plan, _) = plan_of(
            &mut cat,
            "CREATE TABLE per_region AS SELECT region, SUM(score) FROM users GROUP BY region;",
        );
        assert!(plan.root.is_stateful());

        let error_of = |cat: &mut MapCatalog, sql: &str| run(cat, sql).unwrap_err().to_string();
        assert!(
            error_of(&mut cat, "CREATE STREAM s AS SELECT * FROM users;")
                .contains("produces a TABLE")
        );
        assert_eq!(
            error_of(
                &mut cat,
                "CREATE TABLE m AS SELECT region, MIN(score), MAX(score) FROM users GROUP BY region;"
            ),
            "The aggregation functions MIN and MAX cannot be applied to a table source, only to a stream source."
        );
        assert_eq!(
            error_of(
                &mut cat,
                "CREATE TABLE w AS SELECT region, COUNT(*) FROM users WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY region;"
            ),
            "Windowing not supported for table aggregations."
        );
    }

    #[test]
    fn partition_by_rekeys_the_stream() {
        let plan_of = |sql: &str| match run(&mut catalog(), sql).unwrap() {
            Planned::CreateAs { sink, .. } => sink.topic.schema.to_string(),
            _ => panic!(),
        };
        assert_eq!(
            plan_of("CREATE STREAM s AS SELECT * FROM pageviews PARTITION BY page;"),
            "`PAGE` STRING KEY, `MS` INTEGER, `ID` BIGINT"
        );
        assert_eq!(
            plan_of("CREATE STREAM s AS SELECT page AS p, ms FROM pageviews PARTITION BY page;"),
            "`P` STRING KEY, `MS` INTEGER"
        );
        assert_eq!(
            plan_of("CREATE STREAM s AS SELECT * FROM pageviews PARTITION BY ABS(ms);"),
            "`KSQL_COL_0` INTEGER KEY, `PAGE` STRING, `MS` INTEGER, `ID` BIGINT"
        );
        assert_eq!(
            error("CREATE STREAM s AS SELECT page FROM pageviews PARTITION BY ABS(ms);"),
            "The query used to build `S` must include the partitioning expression ABS(PAGEVIEWS.MS) in its projection (eg, SELECT ABS(PAGEVIEWS.MS)...)."
        );
    }

    #[test]
    fn key_must_be_projected() {
        assert_eq!(
            error("CREATE STREAM out AS SELECT page FROM pageviews;"),
            "The query used to build `OUT` must include the key column ID in its projection (eg, SELECT ID...)."
        );
        // ksqlDB's new query planner makes a stream without keys instead.
        let mut config = PlannerConfig::default();
        config.apply("ksql.new.query.planner.enabled", "true");
        let stmt = parse_statement("CREATE STREAM out AS SELECT page FROM pageviews;").unwrap();
        let Planned::CreateAs { sink, .. } = plan_statement(&stmt, &catalog(), &config).unwrap()
        else {
            panic!()
        };
        assert_eq!(sink.topic.schema.to_string(), "`PAGE` STRING");
    }

    #[test]
    fn keys_keep_the_sources_order() {
        let mut c = catalog();
        run(
            &mut c,
            "CREATE STREAM people (id INT KEY, age INT KEY, name STRING) WITH (kafka_topic='p', format='JSON');",
        )
        .unwrap();
        let Planned::CreateAs { sink, .. } = run(
            &mut c,
            "CREATE STREAM out AS SELECT age, id, name FROM people;",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            sink.topic.schema.to_string(),
            "`ID` INTEGER KEY, `AGE` INTEGER KEY, `NAME` STRING"
        );
    }

    #[test]
    fn reserved_names_are_refused() {
        assert_eq!(
            error("CREATE STREAM out AS SELECT id, ROWTIME FROM pageviews;"),
            "Reserved column name in select: `ROWTIME`. Please remove or alias the column."
        );
    }

    #[test]
    fn unknown_properties_are_named() {
        let e = run(
            &mut catalog(),
            "CREATE STREAM s (a INT) WITH (kafka_topic='t', value_format='json', partitons=1);",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid config variable(s) in the WITH clause: PARTITONS"
        );
        assert_eq!(e.hint(), Some("Did you mean PARTITIONS?"));
    }

    #[test]
    fn formats_are_checked() {
        assert_eq!(
            error("CREATE STREAM s (a INT) WITH (kafka_topic='t', value_format='foo');"),
            "Unknown format: FOO"
        );
        assert_eq!(
            error(
                "CREATE STREAM s (a ARRAY<INT>) WITH (kafka_topic='t', value_format='DELIMITED');"
            ),
            "The 'DELIMITED' format does not support type 'ARRAY'"
        );
        assert!(
            error("CREATE STREAM s (a INT) WITH (kafka_topic='t');")
                .contains("missing the 'VALUE_FORMAT'")
        );
    }

    #[test]
    fn streams_and_tables_use_their_own_key_words() {
        assert!(
            error("CREATE STREAM s (a INT PRIMARY KEY, b INT) WITH (kafka_topic='t', value_format='json');")
                .contains("please use 'KEY' for streams")
        );
        assert!(
            error("CREATE TABLE s (a INT KEY, b INT) WITH (kafka_topic='t', value_format='json');")
                .contains("please use 'PRIMARY KEY' for tables")
        );
    }

    #[test]
    fn where_errors_say_where() {
        assert_eq!(
            error("CREATE STREAM out AS SELECT * FROM pageviews WHERE ms = 'x';"),
            "Error in WHERE expression: Cannot compare MS (INTEGER) to 'x' (STRING) with EQUAL.\nStatement: (MS = 'x')"
        );
    }
}
