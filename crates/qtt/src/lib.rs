//! Runs ksqlDB's query-validation test cases (the `qtt` JSON format described in
//! `../shared/conformance/README.md`) against the deterministic test driver.
//!
//! Each case's statements are parsed and planned as the server would; the queries run on
//! in-memory topics record by record; the records they write are compared with the
//! case's expected outputs. A case that needs a feature Sluice does not have yet is a
//! SKIP with the reason, never a PASS.

mod post;
pub mod values;

use serde::Serialize;
use serde_json::Value;
use sluice_plan::{Column, ColumnKind, FormatKind};
use sluice_registry::{MemoryRegistry, RegisteredSchema, SchemaRegistry, SchemaType};
use sluice_runtime::Pipeline;
use sluice_runtime::codec::registered::{Registry, register_declared};
use sluice_runtime::driver::Driver;
use sluice_sql::{Planned, PlannerConfig, SourceDesc, SqlError, already_exists, plan_statement};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub outcome: Outcome,
    pub reason: String,
}

impl CaseResult {
    /// `PASS file::name`, or `FAIL file::name – reason`.
    pub fn line(&self) -> String {
        let word = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        };
        let reason = self.reason.replace('\n', " ");
        if reason.is_empty() {
            format!("{word} {}::{}", self.file, self.name)
        } else {
            format!("{word} {}::{} – {reason}", self.file, self.name)
        }
    }
}

/// The `.json` files named, and those directly inside the folders named, sorted.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                let path = e?.path();
                if path.extension().is_some_and(|x| x == "json") {
                    files.push(path);
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    Ok(files)
}

/// Runs every case of a file; a file that cannot be read is one failed result.
pub fn run_file(path: &Path) -> Vec<CaseResult> {
    run_file_with(path, &run_case)
}

/// Runs every case of a file with `run_case` (a case with `format` or `config` lists
/// once per entry); a case that panics fails with the panic's message.
pub fn run_file_with(
    path: &Path,
    run_case: &dyn Fn(&Value) -> Result<(), Verdict>,
) -> Vec<CaseResult> {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parsed: Result<Value, String> = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()));
    let doc = match parsed {
        Ok(d) => d,
        Err(e) => {
            return vec![CaseResult {
                file,
                name: "<file>".into(),
                outcome: Outcome::Fail,
                reason: format!("cannot read the file: {e}"),
            }];
        }
    };
    let mut results = Vec::new();
    for case in doc["tests"].as_array().into_iter().flatten() {
        if case["enabled"] == Value::Bool(false) {
            continue;
        }
        for (name, variant) in variants(case) {
            let (outcome, reason) =
                match std::panic::catch_unwind(AssertUnwindSafe(|| run_case(&variant))) {
                    Ok(Ok(())) => (Outcome::Pass, String::new()),
                    Ok(Err(Verdict::Fail(r))) => (Outcome::Fail, r),
                    Ok(Err(Verdict::Skip(r))) => (Outcome::Skip, r),
                    Err(panic) => (Outcome::Fail, format!("panic: {}", panic_message(&panic))),
                };
            results.push(CaseResult {
                file: file.clone(),
                name,
                outcome,
                reason,
            });
        }
    }
    results
}

thread_local! {
    /// Where the last panic on this thread happened, recorded by `quiet_panic_hook`.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A panic hook that prints nothing and remembers where the panic happened, so a case
/// that crashes the engine is reported as a failure with its message and location.
pub fn quiet_panic_hook() -> Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> {
    Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    })
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    let message = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    match PANIC_AT.with(|at| at.borrow_mut().take()) {
        Some(at) => format!("{message} at {at}"),
        None => message,
    }
}

/// A case expanded per `format` and `config` entry, with its name.
pub fn variants(case: &Value) -> Vec<(String, Value)> {
    let name = case["name"].as_str().unwrap_or("<unnamed>").to_string();
    if let Some(formats) = case["format"].as_array() {
        return formats
            .iter()
            .map(|f| {
                let f = f.as_str().unwrap_or_default();
                let mut c = case.clone();
                if let Some(stmts) = c["statements"].as_array_mut() {
                    for s in stmts {
                        if let Some(text) = s.as_str() {
                            *s = Value::String(text.replace("{FORMAT}", f));
                        }
                    }
                }
                (format!("{name} - {f}"), c)
            })
            .collect();
    }
    if let Some(configs) = case["config"].as_array() {
        return configs
            .iter()
            .map(|v| {
                let mut c = case.clone();
                if let Some(props) = c["properties"].as_object_mut() {
                    for p in props.values_mut() {
                        if p.as_str() == Some("{CONFIG}") {
                            *p = v.clone();
                        }
                    }
                }
                let shown = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                (format!("{name} - {shown}"), c)
            })
            .collect();
    }
    vec![(name, case.clone())]
}

/// Why a case did not pass.
pub enum Verdict {
    Fail(String),
    Skip(String),
}

pub fn fail<T>(reason: impl Into<String>) -> Result<T, Verdict> {
    Err(Verdict::Fail(reason.into()))
}

pub fn skip<T>(reason: impl Into<String>) -> Result<T, Verdict> {
    Err(Verdict::Skip(reason.into()))
}

/// The in-memory world of one case: catalog and topics.
struct Session {
    sources: BTreeMap<String, SourceDesc>,
    driver: Driver,
    planner: PlannerConfig,
    queries: usize,
    registry: Arc<MemoryRegistry>,
    /// Variables and custom types the statements so far defined.
    script: sluice_sql::script::ScriptContext,
}

/// A statement refused: by the rules (`Refused`) or for lack of a feature (`Unsupported`).
enum StatementFailure {
    Refused(String),
    /// Refused with the position of the problem in the statement.
    RefusedAt(sluice_sql::Pos, String),
    Unsupported(String),
}

impl From<SqlError> for StatementFailure {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Unsupported { message, .. } => StatementFailure::Unsupported(message),
            SqlError::Semantic {
                pos: Some(pos),
                message,
                ..
            } => StatementFailure::RefusedAt(pos, message),
            other => StatementFailure::Refused(other.to_string()),
        }
    }
}

impl Session {
    /// The source registered last on a topic.
    fn source_on(&self, topic: &str) -> Option<&SourceDesc> {
        self.sources.values().rev().find(|s| s.topic.topic == topic)
    }

    fn execute(&mut self, sql: &str) -> Result<(), StatementFailure> {
        let mut script = self.script.clone();
        for stmt in sluice_sql::script::parse_script(sql, &mut script)? {
            let planned = plan_statement(&stmt, &self.sources, &self.planner)?;
            match planned {
                Planned::CreateSource {
                    source,
                    if_not_exists,
                    or_replace,
                    create_topic,
                } => {
                    if self.sources.contains_key(&source.name) {
                        if if_not_exists {
                            continue;
                        }
                        if !or_replace {
                            return Err(StatementFailure::Refused(already_exists(
                                source.kind,
                                &source.name,
                                source.kind,
                            )));
                        }
                    }
                    register_declared(self.registry.as_ref(), &source.name, &source.topic)
                        .map_err(StatementFailure::Refused)?;
                    // ksqlDB's harness creates the topics CREATE statements name.
                    let partitions = create_topic.and_then(|c| c.partitions).unwrap_or(1);
                    self.driver.create_topic(&source.topic.topic, partitions);
                    self.sources.insert(source.name.clone(), source);
                }
                Planned::CreateAs {
                    sink,
                    if_not_exists,
                    create_topic,
                    plan,
                    ..
                } => {
                    if self.sources.contains_key(&sink.name) {
                        if if_not_exists {
                            continue;
                        }
                        return Err(StatementFailure::Refused(already_exists(
                            sink.kind, &sink.name, sink.kind,
                        )));
                    }
                    let pipeline = Pipeline::new(&plan, Some(self.registry.clone()))
                        .map_err(|e| StatementFailure::Unsupported(e.to_string()))?;
                    let partitions: Vec<(&str, u32)> = plan
                        .root
                        .sources()
                        .into_iter()
                        .map(|(name, t)| (name, self.driver.partitions(&t.topic).unwrap_or(1)))
                        .collect();
                    if let Some(e) = plan.root.copartitioning_error(&partitions) {
                        return Err(StatementFailure::Refused(e));
                    }
                    let source_partitions = plan
                        .root
                        .source_topics()
                        .first()
                        .and_then(|t| self.driver.partitions(&t.topic))
                        .unwrap_or(1);
                    self.driver.create_topic(
                        &sink.topic.topic,
                        create_topic.partitions.unwrap_or(source_partitions),
                    );
                    self.queries += 1;
                    let prefix = match sink.kind {
                        sluice_sql::SourceKindName::Stream => "CSAS",
                        sluice_sql::SourceKindName::Table => "CTAS",
                    };
                    let id = format!("{prefix}_{}_{}", sink.name, self.queries);
                    // With SLUICE_TEST_REPARTITION set, an aggregation that regroups
                    // rows runs in two parts through a repartition topic, as it does
                    // on Kafka over several partitions: the same cases check the cut.
                    let split = std::env::var_os("SLUICE_TEST_REPARTITION").and_then(|_| {
                        plan.root
                            .split_at_repartition(&|role| format!("{id}-{role}-repartition"))
                    });
                    match split {
                        Some((writers, reader)) => {
                            let part = |root| {
                                Pipeline::new(
                                    &sluice_plan::QueryPlan {
                                        root,
                                        ..(*plan).clone()
                                    },
                                    Some(self.registry.clone()),
                                )
                                .map_err(|e| StatementFailure::Unsupported(e.to_string()))
                            };
                            for (n, repartition) in writers.into_iter().enumerate() {
                                let partitions = match &repartition.partitions_of {
                                    Some(t) => self.driver.partitions(t).unwrap_or(1),
                                    None => source_partitions,
                                };
                                if let sluice_plan::Step::StreamSink { topic, .. } =
                                    &repartition.writer
                                {
                                    self.driver.create_topic(&topic.topic, partitions);
                                }
                                self.driver
                                    .add_query(&format!("{id}-{n}"), part(repartition.writer)?);
                            }
                            self.driver.add_query(&id, part(reader)?);
                        }
                        None => self.driver.add_query(&id, pipeline),
                    }
                    self.sources.insert(sink.name.clone(), sink);
                }
                Planned::InsertValues {
                    topic,
                    values,
                    rowtime,
                    ..
                } => {
                    let record = sluice_runtime::values::values_record(
                        &topic,
                        &values,
                        rowtime.as_ref(),
                        None,
                        Some(&(self.registry.clone() as Registry)),
                    )
                    .map_err(|e| StatementFailure::Refused(e.to_string()))?;
                    self.driver
                        .produce(&topic.topic, record.key, record.value, record.timestamp)
                        .map_err(|e| StatementFailure::Refused(e.to_string()))?;
                }
                Planned::InsertInto { plan, .. } => {
                    let pipeline = Pipeline::new(&plan, Some(self.registry.clone()))
                        .map_err(|e| StatementFailure::Unsupported(e.to_string()))?;
                    self.queries += 1;
                    self.driver
                        .add_query(&format!("INSERTQUERY_{}", self.queries), pipeline);
                }
                Planned::Drop {
                    kind,
                    name,
                    if_exists,
                    delete_topic,
                } => match self.sources.get(&name) {
                    None if if_exists => {}
                    None => {
                        return Err(StatementFailure::Refused(format!(
                            "{} {name} does not exist.",
                            kind.title()
                        )));
                    }
                    Some(s) if s.is_source && delete_topic => {
                        return Err(StatementFailure::Refused(format!(
                            "Cannot delete topic for read-only source: {name}"
                        )));
                    }
                    Some(_) => {
                        self.sources.remove(&name);
                    }
                },
                Planned::Terminate(_) => {
                    return Err(StatementFailure::Unsupported(
                        "TERMINATE in the test driver is not supported yet".into(),
                    ));
                }
                Planned::Property { name, value } => {
                    let mut props = serde_json::Map::new();
                    props.insert(name, value.map(Value::String).unwrap_or(Value::Null));
                    apply_properties(&mut self.planner, &Value::Object(props));
                }
                Planned::Show(_)
                | Planned::Describe { .. }
                | Planned::DescribeFunction(_)
                | Planned::ExplainQuery(_)
                | Planned::ExplainStatement(_) => {}
                Planned::Alter { source } => {
                    self.sources.insert(source.name.clone(), source);
                }
                Planned::CreateType {
                    name,
                    ty,
                    if_not_exists,
                } => match self.script.types.get(&name) {
                    Some(_) if if_not_exists => {}
                    Some(existing) => {
                        return Err(StatementFailure::Refused(format!(
                            "Cannot register custom type '{name}' since it is already registered with type: {existing}"
                        )));
                    }
                    None => {
                        self.script.types.insert(name, ty);
                    }
                },
                Planned::DropType { name, if_exists } => {
                    if self.script.types.remove(&name).is_none() && !if_exists {
                        return Err(StatementFailure::Refused(format!(
                            "Type {name} does not exist."
                        )));
                    }
                }
                Planned::AssertTopic {
                    topic,
                    exists,
                    partitions,
                    ..
                } => {
                    let found = self.driver.partitions(&topic);
                    if let Some(m) =
                        sluice_sql::planner::assert_topic_failure(&topic, exists, partitions, found)
                    {
                        return Err(StatementFailure::Refused(m));
                    }
                }
                Planned::AssertSchema {
                    subject,
                    id,
                    exists,
                    ..
                } => {
                    let found =
                        sluice_registry::has_schema(self.registry.as_ref(), subject.as_deref(), id);
                    if let Some(m) = sluice_sql::planner::assert_schema_failure(
                        subject.as_deref(),
                        id,
                        exists,
                        found,
                    ) {
                        return Err(StatementFailure::Refused(m));
                    }
                }
                Planned::Pause { query_id, paused } => {
                    let ids = match query_id {
                        Some(id) if !self.driver.has_query(&id) => {
                            return Err(StatementFailure::Refused(format!(
                                "Unknown queryId: {id}"
                            )));
                        }
                        Some(id) => vec![id],
                        None => self.driver.query_ids(),
                    };
                    for id in ids {
                        self.driver
                            .set_paused(&id, paused)
                            .map_err(|e| StatementFailure::Refused(e.to_string()))?;
                    }
                }
                Planned::Variable { name, value } => match value {
                    Some(v) => {
                        self.script.variables.insert(name, v);
                    }
                    None => {
                        self.script.variables.remove(&name);
                    }
                },
                Planned::Select { .. } => {
                    return Err(StatementFailure::Unsupported(
                        "push queries run over REST, not in the test driver".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The properties (of a case, or SET in its statements) that change planning.
fn apply_properties(planner: &mut PlannerConfig, props: &Value) {
    if let Some(map) = props.as_object() {
        for (name, value) in map {
            match value {
                Value::String(v) => planner.apply(name, v),
                other => planner.apply(name, &other.to_string()),
            }
        }
    }
}

/// Skips a case that describes ksqlDB before 7.0.
pub fn check_supported(case: &Value) -> Result<(), Verdict> {
    if let Some(max) = case["versions"]["max"].as_str()
        && max
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|m| m < 7)
    {
        return skip(format!(
            "describes ksqlDB behaviour before 7.0 (max version {max})"
        ));
    }
    Ok(())
}

/// The statements of a case, in order.
pub fn statements(case: &Value) -> Vec<String> {
    case["statements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The topics a case names up front (`topics`, with their partition counts) and those
/// its records are on (one partition), as ksqlDB's harness creates them.
pub fn case_topics(case: &Value) -> Vec<(String, u32)> {
    let mut topics = Vec::new();
    for t in case["topics"].as_array().into_iter().flatten() {
        if let Some(name) = t["name"].as_str() {
            topics.push((
                name.to_string(),
                t["partitions"].as_u64().unwrap_or(1) as u32,
            ));
        }
    }
    for r in case["inputs"]
        .as_array()
        .into_iter()
        .chain(case["outputs"].as_array())
        .flatten()
    {
        if let Some(t) = r["topic"].as_str() {
            topics.push((t.to_string(), 1));
        }
    }
    topics
}

fn run_case(case: &Value) -> Result<(), Verdict> {
    check_supported(case)?;
    let statements = statements(case);
    let registry = Arc::new(MemoryRegistry::new());
    let mut planner = PlannerConfig {
        registry: Some(registry.clone()),
        ..PlannerConfig::default()
    };
    apply_properties(&mut planner, &case["properties"]);
    let mut session = Session {
        sources: BTreeMap::new(),
        driver: Driver::from_env(),
        planner,
        queries: 0,
        registry,
        script: Default::default(),
    };
    for (name, partitions) in case_topics(case) {
        session.driver.create_topic(&name, partitions);
    }
    register_case_schemas(case, &session.registry).map_err(Verdict::Fail)?;
    let inputs = case["inputs"].as_array().cloned().unwrap_or_default();
    let outputs = case["outputs"].as_array().cloned().unwrap_or_default();

    // Statements.
    let expected_error = case.get("expectedException");
    let mut refused = None;
    // The statements are one script, a line each: a located error names the script's
    // line, as ksqlDB's messages do (`Line: 3, Col: 77: ...`, `at line 2:47`), so each
    // is parsed after as many empty lines as statements came before it.
    for (i, s) in statements.iter().enumerate() {
        match session.execute(&format!("{}{s}", "\n".repeat(i))) {
            Ok(()) => {}
            Err(StatementFailure::Unsupported(m)) => {
                return skip(format!("not supported yet: {m}"));
            }
            Err(StatementFailure::Refused(m)) => {
                refused = Some((s.clone(), m));
                break;
            }
            Err(StatementFailure::RefusedAt(pos, m)) => {
                refused = Some((
                    s.clone(),
                    format!("Line: {}, Col: {}: {m}", pos.line, pos.column),
                ));
                break;
            }
        }
    }
    match (expected_error, refused) {
        (Some(expected), Some((_, message))) => {
            return match expected["message"].as_str() {
                Some(want) if !message.contains(want) => fail(format!(
                    "refused with a different message: expected \"{want}\", got \"{message}\""
                )),
                _ => Ok(()),
            };
        }
        (None, Some((stmt, message))) => {
            return fail(format!("statement refused: {message} ({stmt})"));
        }
        (Some(_), None) if inputs.is_empty() => {
            return fail(format!(
                "expected the statements to be refused: {}",
                expected_error
                    .map(|e| e["message"].to_string())
                    .unwrap_or_default()
            ));
        }
        _ => {}
    }

    // Inputs, record by record.
    let mut produced: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut stopped = false;
    for r in &inputs {
        let topic = r["topic"].as_str().unwrap_or_default().to_string();
        let input = match encode_input(session.source_on(&topic), r, session.registry.as_ref()) {
            Ok(input) => input,
            Err(e) => return skip(format!("cannot serialize an input: {e}")),
        };
        let index = session.driver.records(&topic).len();
        produced.entry(topic.clone()).or_default().insert(index);
        if let Err(e) = session.driver.produce_with_headers(
            &topic,
            input.key,
            input.value,
            input.headers,
            input.timestamp,
        ) {
            // A case may expect the query to stop (Kafka Streams' StreamsException),
            // after the outputs it wrote until then.
            let cause = expected_error.and_then(|x| {
                x["causeMessage"].as_str().or_else(|| {
                    let streams = x["type"].as_str()?.ends_with("StreamsException");
                    streams.then(|| x["message"].as_str()).flatten()
                })
            });
            match cause {
                Some(cause) if e.to_string().contains(cause) => {
                    stopped = true;
                    break;
                }
                _ => return fail(format!("the query failed: {e}")),
            }
        }
    }
    if let Some(expected) = expected_error
        && !stopped
    {
        return fail(format!(
            "expected the statements to be refused: {}",
            expected["message"]
        ));
    }

    check_outputs(
        &session.driver,
        &session.sources,
        &outputs,
        &produced,
        session.registry.as_ref(),
    )
    .map_err(Verdict::Fail)?;
    post::check(
        &case["post"],
        &session.sources,
        &session.driver.topics(),
        session.registry.as_ref(),
    )
    .map_err(Verdict::Fail)
}

/// An input record, serialized as the source on its topic reads it.
pub struct EncodedInput {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<sluice_runtime::pipeline::Header>,
    pub timestamp: i64,
}

/// The source registered last on a topic.
pub fn source_on<'a>(
    sources: &'a BTreeMap<String, SourceDesc>,
    topic: &str,
) -> Option<&'a SourceDesc> {
    sources.values().rev().find(|s| s.topic.topic == topic)
}

/// Registers the schemas a case gives its topics (`keySchema`, `valueSchema`, with
/// their ids when given), as ksqlDB's harness does before the statements run.
///
/// Schemas with an id go first, so that the others (numbered after the highest id so
/// far) never take an id a later topic asks for.
pub fn register_case_schemas(case: &Value, registry: &MemoryRegistry) -> Result<(), String> {
    let mut numbered = Vec::new();
    let mut rest = Vec::new();
    for t in case["topics"].as_array().into_iter().flatten() {
        let topic = t["name"].as_str().unwrap_or_default();
        for (schema, id, format, is_key) in [
            ("keySchema", "keySchemaId", "keyFormat", true),
            ("valueSchema", "valueSchemaId", "valueFormat", false),
        ] {
            let Some(given) = t.get(schema).filter(|s| !s.is_null()) else {
                continue;
            };
            let format = t[format].as_str().or(t["format"].as_str());
            let schema_type = match format.and_then(FormatKind::parse) {
                Some(FormatKind::JsonSr) => SchemaType::Json,
                Some(FormatKind::Protobuf | FormatKind::ProtobufNosr) => SchemaType::Protobuf,
                Some(FormatKind::Avro) => SchemaType::Avro,
                // Without a format, the schema's own shape tells.
                _ => match given {
                    Value::String(s) if s.trim_start().starts_with("syntax") => {
                        SchemaType::Protobuf
                    }
                    Value::Object(o)
                        if ["oneOf", "properties", "$schema", "anyOf"]
                            .iter()
                            .any(|k| o.contains_key(*k))
                            || o.get("type").is_some_and(|t| t == "object") =>
                    {
                        SchemaType::Json
                    }
                    _ => SchemaType::Avro,
                },
            };
            let text = match given {
                Value::String(s) if schema_type == SchemaType::Protobuf => s.clone(),
                other => other.to_string(),
            };
            // Referenced schemas are registered under their import names, after the
            // schema that imports them: ksqlDB's harness gives that one the first id.
            let refs_key = if is_key {
                "keySchemaReferences"
            } else {
                "valueSchemaReferences"
            };
            let referenced: Vec<(String, RegisteredSchema)> = t[refs_key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let text = match &r["schema"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let kind = match r["format"].as_str().and_then(FormatKind::parse) {
                        Some(FormatKind::Avro) => SchemaType::Avro,
                        Some(FormatKind::JsonSr) => SchemaType::Json,
                        _ => SchemaType::Protobuf,
                    };
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        RegisteredSchema::new(kind, text),
                    )
                })
                .collect();
            let references = referenced
                .iter()
                .map(|(name, _)| sluice_registry::SchemaReference {
                    name: name.clone(),
                    subject: name.clone(),
                    version: 1,
                })
                .collect();
            let registered = RegisteredSchema {
                references,
                ..RegisteredSchema::new(schema_type, text)
            };
            let subject = sluice_registry::subject(topic, is_key);
            match t[id].as_i64().and_then(|i| i32::try_from(i).ok()) {
                Some(id) => numbered.push((subject, id, registered)),
                None => rest.push((subject, registered)),
            }
            rest.extend(referenced);
        }
    }
    for (subject, id, schema) in &numbered {
        registry.register_with_id(subject, *id, schema);
    }
    for (subject, schema) in &rest {
        registry
            .register(subject, schema)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Serializes a case's input record (`key`, `value`, `window`, `headers`, `timestamp`)
/// in the formats of the source on its topic (JSON when there is none).
pub fn encode_input(
    source: Option<&SourceDesc>,
    r: &Value,
    registry: &dyn SchemaRegistry,
) -> Result<EncodedInput, String> {
    let window = r.get("window").filter(|w| !w.is_null());
    let (key, value) = match source {
        Some(src) => {
            let keys: Vec<&Column> = src.topic.schema.keys().collect();
            let vals: Vec<&Column> = src.topic.schema.values().collect();
            let part = |is_key| values::Registered {
                registry,
                topic: &src.topic.topic,
                is_key,
                source: &src.name,
            };
            (
                values::encode(&src.topic.key_format, &keys, &r["key"], &part(true))?,
                values::encode(&src.topic.value_format, &vals, &r["value"], &part(false))?,
            )
        }
        None => {
            let raw = sluice_plan::Format::new(FormatKind::Json);
            let part = values::Registered {
                registry,
                topic: r["topic"].as_str().unwrap_or_default(),
                is_key: false,
                source: "",
            };
            (
                values::encode(&raw, &[], &r["key"], &part)?,
                values::encode(&raw, &[], &r["value"], &part)?,
            )
        }
    };
    // A windowed key: the key's bytes, then the start (time windows) or the end and the
    // start (sessions), 8 bytes big-endian each.
    let key = match (window, key) {
        (Some(w), Some(mut bytes)) => {
            let (start, end) = (
                w["start"].as_i64().unwrap_or(0),
                w["end"].as_i64().unwrap_or(0),
            );
            if w["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("session"))
            {
                bytes.extend_from_slice(&end.to_be_bytes());
            }
            bytes.extend_from_slice(&start.to_be_bytes());
            Some(bytes)
        }
        (_, key) => key,
    };
    // Headers: `{"KEY": ..., "VALUE": base64 or null}` each.
    let headers = r["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let value = h["VALUE"]
                .as_str()
                .and_then(|v| sluice_runtime::codec::decode::base64_decode(v).ok());
            (h["KEY"].as_str().unwrap_or_default().to_string(), value)
        })
        .collect();
    Ok(EncodedInput {
        key,
        value,
        headers,
        timestamp: r["timestamp"].as_i64().unwrap_or(0),
    })
}

/// Compares the records the queries wrote to each topic named in `outputs` with the
/// expected ones, in order. `produced` holds, per topic, the indexes of the records the
/// case itself wrote there, which are not outputs.
pub fn check_outputs(
    driver: &Driver,
    sources: &BTreeMap<String, SourceDesc>,
    outputs: &[Value],
    produced: &BTreeMap<String, BTreeSet<usize>>,
    registry: &dyn SchemaRegistry,
) -> Result<(), String> {
    let mut by_topic: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for o in outputs {
        by_topic
            .entry(o["topic"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(o);
    }
    for (topic, want) in &by_topic {
        let empty = BTreeSet::new();
        let inputs_here = produced.get(topic).unwrap_or(&empty);
        let got: Vec<_> = driver
            .records(topic)
            .iter()
            .enumerate()
            .filter(|(i, _)| !inputs_here.contains(i))
            .map(|(_, r)| r)
            .collect();
        let src = source_on(sources, topic);
        let part = |kind: ColumnKind| -> Vec<&Column> {
            src.map(|s| {
                s.topic
                    .schema
                    .columns
                    .iter()
                    .filter(|c| c.kind == kind)
                    .collect()
            })
            .unwrap_or_default()
        };
        let (keys, vals) = (part(ColumnKind::Key), part(ColumnKind::Value));
        let raw = sluice_plan::Format::new(FormatKind::Json);
        let key_format = src.map(|s| &s.topic.key_format).unwrap_or(&raw);
        let value_format = src.map(|s| &s.topic.value_format).unwrap_or(&raw);
        for (i, w) in want.iter().enumerate() {
            let Some(g) = got.get(i) else {
                return Err(format!(
                    "{topic}: expected {} records, got {}; first missing: {}",
                    want.len(),
                    got.len(),
                    w
                ));
            };
            // A time-windowed key ends with the window start, a session-windowed one
            // with the end and the start, each 8 bytes big-endian.
            let window = src.and_then(|s| s.topic.window.as_ref());
            let be = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
            let (key_bytes, got_window) = match (window, g.key.as_deref()) {
                (Some(spec), Some(k))
                    if spec.kind == sluice_plan::WindowKind::Session && k.len() >= 16 =>
                {
                    let (inner, times) = k.split_at(k.len() - 16);
                    let (end, start) = times.split_at(8);
                    (Some(inner), Some((be(start), be(end))))
                }
                (Some(spec), Some(k)) if k.len() >= 8 => {
                    let (inner, start) = k.split_at(k.len() - 8);
                    let start = be(start);
                    (Some(inner), Some((start, start + spec.size_ms)))
                }
                _ => (g.key.as_deref(), None),
            };
            let key = values::decode(key_format, &keys, key_bytes, registry);
            let value = values::decode(value_format, &vals, g.value.as_deref(), registry);
            let want_key = w.get("key").cloned().unwrap_or(Value::Null);
            let want_value = w.get("value").cloned().unwrap_or(Value::Null);
            if let Some(want) = w.get("window").filter(|x| !x.is_null()) {
                let expected = (want["start"].as_i64(), want["end"].as_i64());
                let matches = match got_window {
                    Some((start, end)) => {
                        expected.0 == Some(start) && expected.1.is_none_or(|e| e == end)
                    }
                    None => false,
                };
                if !matches {
                    return Err(format!(
                        "{topic} record {i}: expected window {want}, got {got_window:?}"
                    ));
                }
            }
            let ts_ok = w["timestamp"].as_i64().is_none_or(|t| t == g.timestamp);
            if !values::same(&want_key, &key) || !values::same(&want_value, &value) || !ts_ok {
                return Err(format!(
                    "{topic} record {i}: expected key={want_key} value={want_value} timestamp={}, got key={key} value={value} timestamp={}",
                    w["timestamp"], g.timestamp
                ));
            }
        }
        if got.len() > want.len() {
            let extra = got[want.len()];
            return Err(format!(
                "{topic}: expected {} records, got {}; first extra: key={} value={}",
                want.len(),
                got.len(),
                values::decode(key_format, &keys, extra.key.as_deref(), registry),
                values::decode(value_format, &vals, extra.value.as_deref(), registry)
            ));
        }
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(case: Value) -> (Outcome, String) {
        let dir = std::env::temp_dir().join(format!("sluice-qtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{}.json",
            case["name"].as_str().unwrap().replace(' ', "_")
        ));
        std::fs::write(&path, json!({"tests": [case]}).to_string()).unwrap();
        let r = run_file(&path).remove(0);
        (r.outcome, r.reason)
    }

    #[test]
    fn a_matching_projection_passes() {
        let (o, reason) = run(json!({
            "name": "projection",
            "statements": [
                "CREATE STREAM A (K STRING KEY, X INT) WITH (kafka_topic='a', value_format='JSON');",
                "CREATE STREAM B AS SELECT K, X + 1 AS Y FROM A WHERE X > 0;"
            ],
            "inputs": [
                {"topic": "a", "key": "k1", "value": {"x": 1}, "timestamp": 5},
                {"topic": "a", "key": "k2", "value": {"x": 0}, "timestamp": 6}
            ],
            "outputs": [{"topic": "B", "key": "k1", "value": {"Y": 2}, "timestamp": 5}],
            "post": {"sources": [{"name": "B", "type": "stream", "schema": "K STRING KEY, Y INT"}]}
        }));
        assert_eq!((o, reason.as_str()), (Outcome::Pass, ""));
    }

    #[test]
    fn a_wrong_expectation_fails() {
        let (o, reason) = run(json!({
            "name": "wrong",
            "statements": [
                "CREATE STREAM A (K STRING KEY, X INT) WITH (kafka_topic='a', value_format='JSON');",
                "CREATE STREAM B AS SELECT K, X FROM A;"
            ],
            "inputs": [{"topic": "a", "key": "k1", "value": {"x": 1}}],
            "outputs": [{"topic": "B", "key": "k1", "value": {"X": 2}}]
        }));
        assert_eq!(o, Outcome::Fail, "{reason}");
        assert!(reason.contains("record 0"), "{reason}");
    }

    #[test]
    fn expected_errors_match_on_message() {
        let case = |msg: &str| {
            json!({
                "name": "refused",
                "statements": [
                    "CREATE STREAM A (K STRING KEY, X INT) WITH (kafka_topic='a', value_format='JSON');",
                    "CREATE STREAM B AS SELECT X FROM A;"
                ],
                "expectedException": {"message": msg}
            })
        };
        assert_eq!(run(case("must include the key column K")).0, Outcome::Pass);
        assert_eq!(run(case("something else")).0, Outcome::Fail);
    }

    #[test]
    fn unsupported_features_skip() {
        let (o, reason) = run(json!({
            "name": "agg",
            "statements": [
                "CREATE STREAM A (K STRING KEY, X STRUCT<Y INT>) WITH (kafka_topic='a', value_format='JSON');",
                "CREATE STREAM C AS SELECT X->* FROM A PARTITION BY X->Y;"
            ],
            "inputs": [], "outputs": []
        }));
        assert_eq!(o, Outcome::Skip, "{reason}");
    }

    #[test]
    fn format_lists_expand() {
        let v = variants(
            &json!({"name": "n", "format": ["JSON", "DELIMITED"], "statements": ["X {FORMAT}"]}),
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].0, "n - DELIMITED");
        assert_eq!(v[1].1["statements"][0], "X DELIMITED");
    }
}
