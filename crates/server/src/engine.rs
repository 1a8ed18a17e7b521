//! The engine: validates statements, writes them to the command topic, applies the
//! command log to the catalog, and runs the persistent queries.

use crate::cluster::{Cluster, QueryRun};
use crate::command::{Action, COMMAND_VERSION, Command, command_topic};
use crate::entities;
use crate::error::{ServerError, StatementError};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use sluice_plan::QueryPlan;
use sluice_registry::{HttpRegistry, MemoryRegistry};
use sluice_runtime::codec::registered::{Registry, no_registry, register_declared};
use sluice_runtime::driver::Driver;
use sluice_runtime::push::{Mode, PushConfig, ScanOrder, ViewRead, ViewRows};
use sluice_runtime::view::TableViews;
use sluice_runtime::{KafkaAdmin, QueryConfig};
use sluice_sql::ast::{LiteralValue, ShowTarget, Statement, StatementKind};
use sluice_sql::{
    Planned, PlannerConfig, SourceDesc, SourceKindName, already_exists, plan_statement,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bootstrap_servers: String,
    pub listen: String,
    pub service_id: String,
    pub state_dir: std::path::PathBuf,
    pub commit_interval: Duration,
    /// `processing.guarantee` of queries that do not set their own.
    pub exactly_once: bool,
    /// `cache.max.bytes.buffering` of queries that do not set their own.
    pub cache_max_bytes: usize,
    /// `num.stream.threads`: the threads each persistent query runs its tasks on.
    pub stream_threads: usize,
    /// Headless mode: the server runs the statements of this file, keeps no command
    /// topic, and takes only read-only statements over REST.
    pub queries_file: Option<std::path::PathBuf>,
    /// `user:password` that REST requests must present (HTTP Basic); None: open.
    pub basic_auth: Option<String>,
    /// Request bodies larger than this are refused with 413.
    pub max_request_bytes: usize,
    /// `auto.offset.reset` of queries whose properties do not set it.
    pub auto_offset_reset: String,
    /// `ksql.schema.registry.url`: where AVRO and JSON_SR schemas live (None: those
    /// formats are refused, except on the test driver, which keeps its own registry).
    pub schema_registry_url: Option<String>,
    /// The REST API over TLS: the certificate chain and the private key (PEM files).
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// `ksql.advertised.listener`: the URL other servers reach this one's REST API at,
    /// to forward pull queries to it (None: the listener's own address).
    pub advertised_listener: Option<String>,
}

impl ServerConfig {
    /// A server on `bootstrap_servers` with every other setting at its default.
    pub fn new(bootstrap_servers: &str) -> ServerConfig {
        ServerConfig {
            bootstrap_servers: bootstrap_servers.to_string(),
            listen: "127.0.0.1:8088".into(),
            service_id: "default".into(),
            state_dir: "./sluice-state".into(),
            commit_interval: Duration::from_millis(100),
            exactly_once: true,
            cache_max_bytes: 10 * 1024 * 1024,
            stream_threads: 1,
            queries_file: None,
            basic_auth: None,
            max_request_bytes: 2 * 1024 * 1024,
            auto_offset_reset: "latest".into(),
            schema_registry_url: None,
            tls_cert: None,
            tls_key: None,
            advertised_listener: None,
        }
    }
}

/// The plan with a filter after its stream source that drops rows without a key; plans
/// of another shape than sink, projection, filters and one stream source are kept.
fn without_null_keys(step: sluice_plan::Step) -> sluice_plan::Step {
    use sluice_plan::{BinaryOp, Expr, Step};
    match step {
        Step::StreamSink { input, topic } => Step::StreamSink {
            input: Box::new(without_null_keys(*input)),
            topic,
        },
        Step::StreamSelect {
            input,
            projection,
            schema,
            rekeyed,
        } => Step::StreamSelect {
            input: Box::new(without_null_keys(*input)),
            projection,
            schema,
            rekeyed,
        },
        Step::StreamFilter { input, predicate } => Step::StreamFilter {
            input: Box::new(without_null_keys(*input)),
            predicate,
        },
        source @ Step::StreamSource { .. } => {
            let Step::StreamSource { topic, .. } = &source else {
                unreachable!("matched a source")
            };
            let predicate = topic
                .schema
                .keys()
                .map(|k| Expr::IsNull {
                    expr: Box::new(Expr::Column(k.name.clone())),
                    negated: true,
                })
                .reduce(|a, b| Expr::Binary {
                    op: BinaryOp::And,
                    left: Box::new(a),
                    right: Box::new(b),
                });
            match predicate {
                Some(predicate) => Step::StreamFilter {
                    input: Box::new(source),
                    predicate,
                },
                None => source,
            }
        }
        other => other,
    }
}

/// Reads a `processing.guarantee` value: exactly-once (true) or at-least-once.
pub fn parse_guarantee(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "exactly_once_v2" | "exactly_once" => Ok(true),
        "at_least_once" => Ok(false),
        other => Err(format!(
            "Invalid value {other} for configuration processing.guarantee: expected exactly_once_v2 or at_least_once"
        )),
    }
}

/// The one-partition topic whose partition 0, in each query's group, is the query's
/// lease: the server holding it runs the query.
pub fn lease_topic(service_id: &str) -> String {
    format!("_sluice-{service_id}-leases")
}

/// The topic where queries report the records they skipped.
pub fn processing_log_topic(service_id: &str) -> String {
    format!("_sluice-{service_id}-processing-log")
}

/// The request property by which a server forwards a pull query to the owner of the
/// partitions it names (a JSON array): the owner answers for those alone.
pub const PULL_PARTITIONS: &str = "sluice.pull.partitions";

const GUARANTEE_PROPERTIES: [&str; 2] =
    ["processing.guarantee", "ksql.streams.processing.guarantee"];

/// How a command ended, for `GET /status/<commandId>`.
#[derive(Clone, Debug)]
pub struct CommandStatus {
    pub status: &'static str,
    pub message: String,
    pub query_id: Option<String>,
}

impl PushPlan {
    pub fn is_pull(&self) -> bool {
        matches!(self.config.mode, Mode::Pull { .. })
    }
}

/// A planned push query, ready to start.
#[derive(Clone)]
pub struct PushPlan {
    /// `transient_<SOURCE>_<n>`, as ksqlDB names them.
    pub id: String,
    pub plan: QueryPlan,
    pub schema: sluice_plan::LogicalSchema,
    pub is_table: bool,
    pub config: PushConfig,
}

/// A persistent query in the catalog.
pub struct PersistentQuery {
    pub id: String,
    pub statement: String,
    pub sink: String,
    pub sink_topic: String,
    pub inputs: Vec<String>,
    pub plan: QueryPlan,
    pub properties: BTreeMap<String, Value>,
    pub running: Option<QueryRun>,
    /// Why the query could not start, if it could not.
    pub error: Option<String>,
    /// PAUSE: the query reads nothing until RESUME.
    pub paused: bool,
}

impl PersistentQuery {
    /// The errors the query met here, as ksqlDB's `queryErrors`: why it could not
    /// start, or the last error it failed with.
    pub fn errors(&self) -> Vec<sluice_runtime::QueryError> {
        let start = self.error.as_ref().map(|e| sluice_runtime::QueryError {
            message: e.clone(),
            timestamp: 0,
            poison: true,
        });
        let run = self.running.as_ref().and_then(|r| r.last_error());
        start.into_iter().chain(run).collect()
    }

    pub fn state(&self) -> &'static str {
        match (&self.running, &self.error) {
            (Some(_), _) if self.paused => "PAUSED",
            (Some(r), _) if r.is_healthy() => "RUNNING",
            (Some(_), _) | (None, Some(_)) => "ERROR",
            (None, None) => "PENDING",
        }
    }
}

/// The catalog: every stream, table and persistent query.
#[derive(Default)]
pub struct Metastore {
    pub sources: BTreeMap<String, SourceDesc>,
    pub queries: BTreeMap<String, PersistentQuery>,
    /// Custom types (CREATE TYPE), by upper-cased name.
    pub types: BTreeMap<String, sluice_plan::SqlType>,
}

impl Metastore {
    fn readers_of(&self, name: &str) -> Vec<String> {
        self.queries
            .values()
            .filter(|q| q.inputs.iter().any(|i| i == name))
            .map(|q| q.id.clone())
            .collect()
    }

    fn writers_of(&self, name: &str) -> Vec<String> {
        self.queries
            .values()
            .filter(|q| q.sink == name)
            .map(|q| q.id.clone())
            .collect()
    }
}

/// The outcome of applying one command, which the statement that wrote it reports.
#[derive(Clone, Debug)]
pub struct Applied {
    pub message: String,
    pub query_id: Option<String>,
}

pub struct Engine {
    pub config: ServerConfig,
    pub cluster: Cluster,
    pub metastore: Mutex<Metastore>,
    planner: PlannerConfig,
    /// Serializes statements: each validates against the state all earlier ones left.
    statement_lock: tokio::sync::Mutex<()>,
    /// Offset of the last command applied (-1 before any).
    applied: watch::Sender<i64>,
    results: Mutex<HashMap<i64, Result<Applied, String>>>,
    /// Problems that make the server degraded (a command it could not apply).
    pub degraded: Mutex<Vec<String>>,
    stopping: AtomicBool,
    /// Numbers push queries for their ids.
    push_ids: std::sync::atomic::AtomicU64,
    /// Running push queries by id, for `/close-query`.
    pub push_queries: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Forwards pull queries to the servers owning the partitions they read.
    pub forwarder: crate::forward::Forwarder,
    /// Headless mode: where the next statement of the queries file is applied (its
    /// "offset", which numbers query ids as the command topic's offsets do).
    next_local: std::sync::atomic::AtomicI64,
    /// The last status of each command id applied here.
    statuses: Mutex<HashMap<String, CommandStatus>>,
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

impl Engine {
    /// Connects to Kafka, creates the command topic if needed, replays it, and starts
    /// the command runner. Returns once the replay is done and queries run again.
    pub async fn start(config: ServerConfig) -> Result<Arc<Engine>, ServerError> {
        let admin = KafkaAdmin::new(&config.bootstrap_servers)?;
        // Headless servers keep no command topic; they wait for the broker on their
        // processing log topic instead.
        let (topic, settings): (String, &[(&str, &str)]) = match config.queries_file {
            None => (
                command_topic(&config.service_id),
                &[("retention.ms", "-1"), ("cleanup.policy", "delete")],
            ),
            Some(_) => (processing_log_topic(&config.service_id), &[]),
        };
        // Wait for the broker: a server started with Kafka should come up once it is there.
        let mut backoff = Duration::from_millis(200);
        loop {
            match admin.create_topic(&topic, 1, None, settings).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("cannot create the topic {topic} yet ({e}); retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for internal in [
            processing_log_topic(&config.service_id),
            lease_topic(&config.service_id),
        ] {
            admin
                .create_topic(&internal, 1, None, &[])
                .await
                .map_err(|e| {
                    ServerError::Startup(format!("cannot create the topic {internal}: {e}"))
                })?;
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            // Java's default partitioner: INSERT ... VALUES records land where ksqlDB's would.
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        let views = TableViews::new(&config.state_dir, &config.bootstrap_servers);
        let owners = Box::new(sluice_runtime::owners::TaskOwners::new(
            &config.bootstrap_servers,
        )?);
        let engine = Arc::new(Engine::new(
            config,
            Cluster::Kafka {
                admin,
                producer,
                views,
                owners,
            },
            None,
        ));
        if let Some(path) = engine.config.queries_file.clone() {
            engine.run_queries_file(&path).await?;
            return Ok(engine);
        }
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        {
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("command-runner".into())
                .spawn(move || {
                    let mut ready = Some(ready_tx);
                    if let Err(e) = engine.run_commands(&mut ready) {
                        tracing::error!("the command runner stopped: {e}");
                        engine
                            .lock_degraded()
                            .push(format!("command runner stopped: {e}"));
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e.to_string()));
                        }
                    }
                })?;
        }
        ready_rx
            .await
            .map_err(|_| ServerError::Startup("the command runner stopped during replay".into()))?
            .map_err(|e| ServerError::Startup(format!("cannot read the command topic: {e}")))?;
        Ok(engine)
    }

    fn new(config: ServerConfig, cluster: Cluster, registry: Option<Registry>) -> Engine {
        let (applied, _) = watch::channel(-1);
        let registry = registry.or_else(|| {
            config
                .schema_registry_url
                .as_ref()
                .map(|url| Arc::new(HttpRegistry::new(url)) as Registry)
        });
        let forwarder = crate::forward::Forwarder::new(config.tls_cert.as_deref());
        Engine {
            config,
            cluster,
            metastore: Mutex::new(Metastore::default()),
            planner: PlannerConfig {
                registry,
                ..PlannerConfig::default()
            },
            statement_lock: tokio::sync::Mutex::new(()),
            applied,
            results: Mutex::new(HashMap::new()),
            degraded: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            push_ids: Default::default(),
            forwarder,
            push_queries: Mutex::new(HashMap::new()),
            next_local: Default::default(),
            statuses: Mutex::new(HashMap::new()),
        }
    }

    /// An engine over the test driver's topics: statements apply at once (there is no
    /// command topic) and queries run as records are written.
    pub fn in_memory(
        config: ServerConfig,
        driver: Arc<Mutex<Driver>>,
        registry: Arc<MemoryRegistry>,
    ) -> Arc<Engine> {
        Arc::new(Engine::new(config, Cluster::Memory(driver), Some(registry)))
    }

    /// The custom types (CREATE TYPE) statements may use.
    pub fn types(&self) -> BTreeMap<String, sluice_plan::SqlType> {
        self.lock_metastore().types.clone()
    }

    /// Where AVRO and JSON_SR schemas are registered and looked up.
    pub fn registry(&self) -> Option<&Registry> {
        self.planner.registry.as_ref()
    }

    fn lock_metastore(&self) -> std::sync::MutexGuard<'_, Metastore> {
        self.metastore.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_degraded(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.degraded.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_degraded(&self) -> bool {
        !self.lock_degraded().is_empty()
    }

    /// Stops every query, committing what each has processed.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let running: Vec<QueryRun> = {
            let mut ms = self.lock_metastore();
            ms.queries
                .values_mut()
                .filter_map(|q| q.running.take())
                .collect()
        };
        for q in running {
            q.stop();
        }
    }

    // ---- the command runner ----

    fn run_commands(
        self: &Arc<Self>,
        ready: &mut Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let topic = command_topic(&self.config.service_id);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .set(
                "group.id",
                format!("_sluice-{}-command-runner", self.config.service_id),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        // A topic created a moment ago may have no leader yet: retry for a while.
        let deadline = std::time::Instant::now() + KAFKA_TIMEOUT;
        let end = loop {
            match consumer.fetch_watermarks(&topic, 0, Duration::from_secs(5)) {
                Ok((_, end)) => break end,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::info!("waiting for the command topic: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!("replaying {end} commands from {topic}");
        let mut replaying = end > 0;
        if !replaying {
            let _ = ready.take().map(|r| r.send(Ok(())));
        }
        while !self.stopping.load(Ordering::SeqCst) {
            let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("reading the command topic: {e}");
                    continue;
                }
            };
            let offset = msg.offset();
            let result = match msg.payload().map(serde_json::from_slice::<Command>) {
                Some(Ok(cmd)) if cmd.version <= COMMAND_VERSION => {
                    self.apply(offset, &cmd, replaying)
                }
                Some(Ok(cmd)) => Err(format!(
                    "command {offset} has version {} but this server applies versions up to {COMMAND_VERSION}",
                    cmd.version
                )),
                Some(Err(e)) => Err(format!("command {offset} is corrupt: {e}")),
                None => Err(format!("command {offset} is empty")),
            };
            if let Err(e) = &result
                && replaying
            {
                // During replay, a command that cannot apply is a problem of the log.
                tracing::error!("cannot apply command {offset}: {e}");
                self.lock_degraded().push(e.clone());
            }
            self.results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(offset, result);
            self.applied.send_replace(offset);
            if replaying && offset + 1 >= end {
                replaying = false;
                self.start_all_queries();
                tracing::info!("replay done");
                let _ = ready.take().map(|r| r.send(Ok(())));
            }
        }
        Ok(())
    }

    /// Where a persistent query keeps its local state on this server.
    pub fn query_state_dir(&self, query_id: &str) -> std::path::PathBuf {
        self.config.state_dir.join(self.query_group(query_id))
    }

    /// A persistent query's consumer group, which also names its internal topics.
    fn query_group(&self, query_id: &str) -> String {
        format!("_sluice-{}-query_{query_id}", self.config.service_id)
    }

    fn query_config(&self, query_id: &str, props: &BTreeMap<String, Value>) -> QueryConfig {
        let prop = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| props.get(*n))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
        };
        QueryConfig {
            paused: Default::default(),
            registry: self.registry().cloned(),
            bootstrap_servers: self.config.bootstrap_servers.clone(),
            group_id: self.query_group(query_id),
            auto_offset_reset: prop(&["auto.offset.reset", "ksql.streams.auto.offset.reset"])
                .unwrap_or_else(|| self.config.auto_offset_reset.clone()),
            commit_interval: prop(&["commit.interval.ms", "ksql.streams.commit.interval.ms"])
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(self.config.commit_interval),
            exactly_once: prop(&GUARANTEE_PROPERTIES)
                .and_then(|v| parse_guarantee(&v).ok())
                .unwrap_or(self.config.exactly_once),
            lease_topic: lease_topic(&self.config.service_id),
            processing_log_topic: Some(processing_log_topic(&self.config.service_id)),
            log_rows: prop(&[
                "processing.log.include.rows",
                "ksql.logging.processing.rows.include",
            ])
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            cache_max_bytes: prop(&[
                "cache.max.bytes.buffering",
                "ksql.streams.cache.max.bytes.buffering",
            ])
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.config.cache_max_bytes),
            stream_threads: prop(&["num.stream.threads", "ksql.streams.num.stream.threads"])
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(self.config.stream_threads),
            purge_interval: prop(&[
                "repartition.purge.interval.ms",
                "ksql.streams.repartition.purge.interval.ms",
            ])
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(30), Duration::from_millis),
            state_dir: Some(self.query_state_dir(query_id)),
            advertised_url: self.config.advertised_listener.clone(),
        }
    }

    fn start_query(&self, q: &mut PersistentQuery) {
        let config = self.query_config(&q.id, &q.properties);
        config.paused.store(q.paused, Ordering::SeqCst);
        match self.cluster.start_query(&q.id, &q.plan, config) {
            Ok(r) => {
                if q.paused {
                    r.set_paused(true);
                }
                q.running = Some(r);
                q.error = None;
            }
            Err(e) => {
                tracing::error!(query = %q.id, "cannot start: {e}");
                q.error = Some(e.to_string());
            }
        }
    }

    fn start_all_queries(&self) {
        let mut ms = self.lock_metastore();
        for q in ms.queries.values_mut() {
            if q.running.is_none() {
                self.start_query(q);
            }
        }
    }

    /// Adds a persistent query writing into `sink`, and starts it unless the log is
    /// still being replayed (replay starts every query once it is done).
    #[allow(clippy::too_many_arguments)]
    fn register_query(
        &self,
        ms: &mut Metastore,
        id: String,
        cmd: &Command,
        sink: &SourceDesc,
        inputs: &[String],
        plan: &QueryPlan,
        replaying: bool,
    ) -> Applied {
        let mut q = PersistentQuery {
            id: id.clone(),
            statement: cmd.statement.clone(),
            sink: sink.name.clone(),
            sink_topic: sink.topic.topic.clone(),
            inputs: inputs.to_vec(),
            plan: plan.clone(),
            properties: cmd.properties.clone(),
            running: None,
            error: None,
            paused: false,
        };
        if !replaying {
            self.start_query(&mut q);
        }
        ms.queries.insert(id.clone(), q);
        Applied {
            message: format!("Created query with ID {id}"),
            query_id: Some(id),
        }
    }

    /// Applies one command to the catalog. Deterministic: every server gets the same result.
    fn apply(&self, offset: i64, cmd: &Command, replaying: bool) -> Result<Applied, String> {
        let mut stopped = Vec::new();
        let mut terminated: Vec<String> = Vec::new();
        let mut dropped_topics: Vec<String> = Vec::new();
        let result = {
            let mut ms = self.lock_metastore();
            match &cmd.action {
                Action::CreateSource { source, or_replace } => {
                    if ms.sources.contains_key(&source.name) && !or_replace {
                        return Err(already_exists(source.kind, &source.name, source.kind));
                    }
                    ms.sources.insert(source.name.clone(), source.clone());
                    Ok(Applied {
                        message: format!("{} created", source.kind.title()),
                        query_id: None,
                    })
                }
                Action::AlterSource { source } => {
                    if !ms.sources.contains_key(&source.name) {
                        return Err(format!("Source {} does not exist.", source.name));
                    }
                    ms.sources.insert(source.name.clone(), source.clone());
                    Ok(Applied {
                        message: format!("{} altered", source.kind.title()),
                        query_id: None,
                    })
                }
                Action::CreateQuery {
                    sink,
                    plan,
                    inputs,
                    kind,
                } => {
                    if let Some(missing) = inputs.iter().find(|i| !ms.sources.contains_key(*i)) {
                        return Err(format!("{missing} does not exist."));
                    }
                    let id = format!("{kind}_{}_{offset}", sink.name);
                    ms.sources.insert(sink.name.clone(), sink.clone());
                    Ok(self.register_query(&mut ms, id, cmd, sink, inputs, plan, replaying))
                }
                Action::InsertQuery {
                    target,
                    plan,
                    inputs,
                } => {
                    let Some(sink) = ms.sources.get(target) else {
                        return Err(format!("Source `{target}` does not exist."));
                    };
                    if let Some(missing) = inputs.iter().find(|i| !ms.sources.contains_key(*i)) {
                        return Err(format!("{missing} does not exist."));
                    }
                    let id = format!("INSERTQUERY_{offset}");
                    let sink = sink.clone();
                    Ok(self.register_query(&mut ms, id, cmd, &sink, inputs, plan, replaying))
                }
                Action::DropSource { name } => {
                    let Some(source) = ms.sources.remove(name) else {
                        return Err(format!("Source {name} does not exist."));
                    };
                    dropped_topics.push(source.topic.topic.clone());
                    for id in ms.writers_of(name) {
                        if let Some(mut q) = ms.queries.remove(&id) {
                            stopped.extend(q.running.take());
                        }
                    }
                    Ok(Applied {
                        message: format!(
                            "Source `{}` (topic: {}) was dropped.",
                            source.name, source.topic.topic
                        ),
                        query_id: None,
                    })
                }
                Action::Terminate { query_id } => {
                    let ids: Vec<String> = match query_id {
                        Some(id) => vec![id.clone()],
                        None => ms.queries.keys().cloned().collect(),
                    };
                    for id in &ids {
                        match ms.queries.remove(id) {
                            Some(mut q) => stopped.extend(q.running.take()),
                            None => return Err(format!("Unknown queryId: {id}")),
                        }
                    }
                    terminated.extend(ids);
                    Ok(Applied {
                        message: "Query terminated.".into(),
                        query_id: query_id.clone(),
                    })
                }
                Action::Pause { query_id, paused } => {
                    let ids: Vec<String> = match query_id {
                        Some(id) => vec![id.clone()],
                        None => ms.queries.keys().cloned().collect(),
                    };
                    for id in &ids {
                        let Some(q) = ms.queries.get_mut(id) else {
                            return Err(format!("Unknown queryId: {id}"));
                        };
                        q.paused = *paused;
                        // RESUME also starts again a query a poison stopped (its cause
                        // may be gone: a topic made again, a record deleted).
                        let failed = q.running.as_ref().is_some_and(|r| r.failed().is_some());
                        if !*paused && failed {
                            if let Some(run) = q.running.take() {
                                run.stop();
                            }
                            self.start_query(q);
                        } else if let Some(run) = &q.running {
                            run.set_paused(*paused);
                        }
                    }
                    Ok(Applied {
                        message: if *paused {
                            "Query paused.".into()
                        } else {
                            "Query resumed.".into()
                        },
                        query_id: query_id.clone(),
                    })
                }
                Action::CreateType { name, sql_type: ty } => {
                    ms.types.insert(name.clone(), ty.clone());
                    Ok(Applied {
                        message: format!(
                            "Registered custom type with name '{name}' and SQL type {ty}"
                        ),
                        query_id: None,
                    })
                }
                Action::DropType { name } => {
                    ms.types.remove(name);
                    Ok(Applied {
                        message: format!("Dropped type '{name}'"),
                        query_id: None,
                    })
                }
            }
        };
        // Stopping waits for the query's last commit: do it outside the catalog lock.
        for q in stopped {
            q.stop();
        }
        if let Some(views) = self.cluster.views() {
            for topic in dropped_topics {
                views.remove(&topic);
            }
        }
        // A terminated query's local state goes with it, on every server (each applies
        // the command); its changelog is deleted by the server that took the statement.
        for id in terminated {
            if let Some(dir) = self.query_config(&id, &BTreeMap::new()).state_dir
                && let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(query = %id, "cannot remove the local state {}: {e}", dir.display());
            }
        }
        let status = match &result as &Result<Applied, String> {
            Ok(a) => CommandStatus {
                status: "SUCCESS",
                message: a.message.clone(),
                query_id: a.query_id.clone(),
            },
            Err(e) => CommandStatus {
                status: "ERROR",
                message: e.clone(),
                query_id: None,
            },
        };
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cmd.command_id(), status);
        result
    }

    /// The status of a command this server applied (`GET /status/<commandId>`).
    pub fn command_status(&self, id: &str) -> Option<CommandStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    // ---- statements ----

    /// Plans a statement against the current catalog; the request's properties (SET,
    /// streamsProperties) shape the plan.
    fn plan(
        &self,
        stmt: &Statement,
        properties: &BTreeMap<String, Value>,
        text: &str,
    ) -> Result<Planned, StatementError> {
        let mut planner = self.planner.clone();
        for (name, value) in properties {
            match value {
                Value::String(v) => planner.apply(name, v),
                other => planner.apply(name, &other.to_string()),
            }
        }
        let ms = self.lock_metastore();
        plan_statement(stmt, &ms.sources, &planner).map_err(|e| StatementError::from_sql(&e, text))
    }

    /// A new id for a transient query over `source`: `transient_<SOURCE>_<n>`, as ksqlDB
    /// names them.
    pub fn transient_id(&self, source: &str) -> String {
        let n = self.push_ids.fetch_add(1, Ordering::Relaxed) + 1;
        format!("transient_{source}_{n}")
    }

    /// Plans a push query (`SELECT ... EMIT CHANGES`) or a pull query (no EMIT) against
    /// the current catalog.
    pub fn plan_push(
        &self,
        stmt: &Statement,
        properties: &BTreeMap<String, Value>,
    ) -> Result<PushPlan, StatementError> {
        let text = format!("{};", stmt.text);
        let Planned::Select {
            plan,
            schema,
            is_table,
            limit,
            pull,
        } = self.plan(stmt, properties, &text)?
        else {
            return Err(StatementError::bad_statement(
                "Only SELECT statements can be run as queries; send the others to /ksql.".into(),
                &text,
            ));
        };
        let source = plan
            .root
            .sources()
            .first()
            .map(|(name, _)| name.to_string())
            .unwrap_or_default();
        let requested_reset = ["auto.offset.reset", "ksql.streams.auto.offset.reset"]
            .iter()
            .find_map(|n| properties.get(*n))
            .and_then(Value::as_str);
        let offset_reset = requested_reset
            .unwrap_or(&self.config.auto_offset_reset)
            .to_string();
        // ksqlDB answers a push query that only filters and projects the new rows of a
        // persistent query's output as a scalable push query, named so.
        let scalable = match &stmt.kind {
            StatementKind::Select(q) => {
                !pull
                    && requested_reset == Some("latest")
                    && q.joins.is_empty()
                    && q.window.is_none()
                    && q.group_by.is_empty()
                    && q.partition_by.is_empty()
                    && !self.lock_metastore().writers_of(&source).is_empty()
            }
            _ => false,
        };
        let id = if scalable {
            let n = self.push_ids.fetch_add(1, Ordering::Relaxed) + 1;
            format!("SCALABLE_PUSH_QUERY_{n}")
        } else {
            self.transient_id(&source)
        };
        // A pull query forwarded here by another server, for the partitions this one
        // owns: answered from this server's view of those partitions, never forwarded on.
        let partitions = match properties.get(PULL_PARTITIONS) {
            None => None,
            Some(v) => Some(
                serde_json::from_value::<Vec<i32>>(v.clone())
                    .map_err(|e| StatementError::bad_request(format!("{PULL_PARTITIONS}: {e}")))?,
            ),
        };
        let view = if pull && is_table {
            self.table_view(stmt, &plan, partitions.clone())
        } else {
            None
        };
        if partitions.is_some() && view.is_none() {
            return Err(StatementError::bad_statement(
                format!("{PULL_PARTITIONS}: this server has no view of the query's table"),
                &text,
            ));
        }
        let mode = if !pull {
            Mode::Push
        } else if is_table {
            let key_index = |name: &str| schema.columns.iter().position(|c| c.name == name);
            // A scan of one source table comes out in its store's order. A view hands its
            // rows out in that order already (partition, then key bytes), so only a scan
            // of the topic is sorted.
            let scan_order = match plan.root.sources().as_slice() {
                _ if view.is_some() => None,
                [(_, topic)] => {
                    let key_columns: Option<Vec<(usize, sluice_plan::SqlType)>> = topic
                        .schema
                        .keys()
                        .map(|k| key_index(&k.name).map(|i| (i, k.ty.clone())))
                        .collect();
                    let partitions = self.cluster.partitions(&topic.topic).ok().flatten();
                    key_columns
                        .zip(partitions)
                        .map(|(key_columns, partitions)| ScanOrder {
                            partitions,
                            key_format: topic.key_format.kind,
                            key_columns,
                        })
                }
                _ => None,
            };
            Mode::Pull {
                table_keys: Some(
                    schema
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.kind == sluice_plan::ColumnKind::Key)
                        .map(|(i, _)| i)
                        .collect(),
                ),
                scan_order,
            }
        } else {
            Mode::Pull {
                table_keys: None,
                scan_order: None,
            }
        };
        // Hidden columns stay in the rows the plan makes, not in what the client sees.
        let hidden = |c: &sluice_plan::Column| c.name.starts_with(sluice_sql::HIDDEN_PREFIX);
        let shown = schema.columns.iter().any(hidden).then(|| {
            (0..schema.columns.len())
                .filter(|i| !hidden(&schema.columns[*i]))
                .collect()
        });
        let visible = sluice_plan::LogicalSchema {
            columns: schema
                .columns
                .iter()
                .filter(|c| !hidden(c))
                .cloned()
                .collect(),
        };
        // A scalable push query reads only rows with a key, as ksqlDB's does.
        let plan = if scalable {
            QueryPlan {
                root: without_null_keys(plan.root),
                ..*plan
            }
        } else {
            *plan
        };
        Ok(PushPlan {
            id,
            plan,
            schema: visible,
            is_table,
            config: PushConfig {
                registry: self.registry().cloned(),
                bootstrap_servers: self.config.bootstrap_servers.clone(),
                auto_offset_reset: offset_reset,
                limit,
                mode,
                shown,
                view,
            },
        })
    }

    /// What a pull query on a table reads from the table's view: the rows of the keys
    /// its WHERE clause pins, the key ranges it bounds, or all. Keys are looked up by
    /// their bytes, so only where those bytes are the ones our encoder writes: a KAFKA
    /// key (one canonical form), or a table a query here writes; ranges only of a KAFKA
    /// STRING key, whose bytes sort as its values do. None on the test driver, or when
    /// the view cannot be opened (the query then reads the topic).
    fn table_view(
        &self,
        stmt: &Statement,
        plan: &QueryPlan,
        partitions: Option<Vec<i32>>,
    ) -> Option<ViewRead> {
        use sluice_plan::{FormatKind, SqlType};
        let views = self.cluster.views()?;
        let sources = plan.root.sources();
        let [(name, topic)] = sources.as_slice() else {
            return None;
        };
        let written_here = !self.lock_metastore().writers_of(name).is_empty();
        let canonical = match topic.key_format.kind {
            FormatKind::Kafka => true,
            FormatKind::Json | FormatKind::Delimited => written_here,
            _ => false,
        };
        let keys: Vec<&sluice_plan::Column> = topic.schema.keys().collect();
        let sorted_strings = topic.key_format.kind == FormatKind::Kafka
            && topic.window.is_none()
            && matches!(keys.as_slice(), [k] if k.ty == SqlType::String);
        let where_clause = match &stmt.kind {
            StatementKind::Select(q) => q.where_clause.as_ref(),
            _ => None,
        };
        let lookups = where_clause.filter(|_| canonical).and_then(|w| {
            let names: Vec<&str> = keys.iter().map(|c| c.name.as_str()).collect();
            let tuples = sluice_sql::pull::key_lookups(w, &names)?;
            tuples
                .iter()
                .filter(|t| !t.iter().any(|v| matches!(v, LiteralValue::Null)))
                .map(|t| {
                    let row = names
                        .iter()
                        .zip(t)
                        .map(|(n, v)| (n.to_string(), literal_json(v)))
                        .collect();
                    sluice_runtime::values::json_key(topic, &row).ok().flatten()
                })
                // A key that does not encode: scan instead.
                .collect::<Option<Vec<Vec<u8>>>>()
        });
        let ranges = || {
            let w = where_clause.filter(|_| sorted_strings)?;
            let ranges = sluice_sql::pull::key_ranges(w, &keys[0].name)?;
            let bytes = |b: std::ops::Bound<String>| b.map(String::into_bytes);
            Some(ViewRows::Ranges(
                ranges
                    .into_iter()
                    .map(|(l, u)| (bytes(l), bytes(u)))
                    .collect(),
            ))
        };
        let rows = lookups
            .map(ViewRows::Keys)
            .or_else(ranges)
            .unwrap_or(ViewRows::All);
        match views.get(&topic.topic) {
            Ok(view) => Some(ViewRead {
                view,
                rows,
                windowed: topic.window.is_some(),
                partitions,
            }),
            Err(e) => {
                tracing::warn!(topic = %topic.topic, "no view of the table, reading its topic: {e}");
                None
            }
        }
    }

    /// Where a pull query on a table's view is answered: for each server that owns
    /// partitions it reads (their tasks' holder, see `sluice_runtime::owners`), those
    /// partitions; this server's own, and those nobody holds now, under None. Nothing
    /// when every partition is this server's (or the owners cannot be asked): it
    /// answers alone.
    pub fn pull_owners(&self, push: &PushPlan) -> Option<BTreeMap<Option<String>, Vec<i32>>> {
        let read = push
            .config
            .view
            .as_ref()
            .filter(|r| r.partitions.is_none())?;
        let owners = self.cluster.owners()?;
        let sources = push.plan.root.sources();
        let [(name, _)] = sources.as_slice() else {
            return None;
        };
        let writer = self.lock_metastore().writers_of(name).into_iter().next()?;
        let group = self.query_group(&writer);
        // The broker is asked (blocking briefly) only when no recent answer is known.
        let holders = match owners.known(&group) {
            Some(holders) => holders,
            None => tokio::task::block_in_place(|| owners.of_query(&group))
                .map_err(|e| tracing::warn!(%group, "cannot tell who holds the query's tasks: {e}"))
                .ok()?,
        };
        let count = read.view.known_partitions().len() as u32;
        let by_partition = holders.partition_owners(count);
        // A key lookup reads only its keys' partitions; a windowed key's partition
        // depends on its window too, so those read every partition.
        let wanted: Vec<i32> = match &read.rows {
            ViewRows::Keys(keys) if !read.windowed => {
                let mut ps: Vec<i32> = keys
                    .iter()
                    .map(|k| sluice_runtime::driver::partition_for(Some(k), count))
                    .collect();
                ps.sort_unstable();
                ps.dedup();
                ps
            }
            _ => (0..count as i32).collect(),
        };
        let me = self.config.advertised_listener.as_deref();
        let mut routes: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
        for p in wanted {
            let owner = by_partition.get(&p).filter(|o| Some(o.as_str()) != me);
            routes.entry(owner.cloned()).or_default().push(p);
        }
        routes.keys().any(Option::is_some).then_some(routes)
    }

    /// Executes one statement from a request and returns its entity.
    pub async fn execute(
        self: &Arc<Self>,
        stmt: &Statement,
        properties: &BTreeMap<String, Value>,
    ) -> Result<Value, StatementError> {
        let _serial = self.statement_lock.lock().await;
        let text = format!("{};", stmt.text);
        let planned = self.plan(stmt, properties, &text)?;
        let fail = |message: String| StatementError::bad_statement(message, &text);
        for name in GUARANTEE_PROPERTIES {
            if let Some(Value::String(v)) = properties.get(name) {
                parse_guarantee(v).map_err(fail)?;
            }
        }
        match planned {
            Planned::Show(target) => Ok(self.show(target, &text).await?),
            Planned::InsertValues {
                topic,
                values,
                rowtime,
                ..
            } => {
                let record =
                    sluice_runtime::values::values_record(
                        &topic,
                        &values,
                        rowtime.as_ref(),
                        None,
                        self.registry(),
                    )
                        .map_err(|e| fail(e.to_string()))?;
                self.cluster.produce(&topic.topic, &record).await.map_err(|e| {
                    StatementError::server(format!("Failed to insert values: {e}"), &text)
                })?;
                // ksqlDB answers an INSERT ... VALUES with no entity.
                Ok(Value::Null)
            }
            Planned::Select { .. } => Err(fail(
                "The following statement types should be issued to the websocket endpoint '/query':\n\t* PRINT\n\t* SELECT".into(),
            )),
            Planned::Property { .. } => Err(fail(
                "SET and UNSET apply to the statements after them in the same request".into(),
            )),
            // DEFINE and UNDEFINE took effect as the request was read.
            Planned::Variable { .. } => Ok(Value::Null),
            Planned::AssertTopic {
                topic,
                exists,
                partitions,
                timeout_ms,
                ..
            } => {
                let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
                loop {
                    let found = self.topic_partitions(&topic).await?;
                    match sluice_sql::planner::assert_topic_failure(&topic, exists, partitions, found)
                    {
                        None => {
                            return Ok(entities::assert_topic(&text, &topic, exists));
                        }
                        Some(m) if std::time::Instant::now() >= deadline => {
                            return Err(StatementError::assertion(m, &text));
                        }
                        Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            Planned::AssertSchema {
                subject,
                id,
                exists,
                timeout_ms,
            } => {
                let Some(registry) = self.registry().cloned() else {
                    return Err(fail(
                        "ASSERT SCHEMA needs a schema registry: set 'ksql.schema.registry.url'"
                            .into(),
                    ));
                };
                let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
                loop {
                    let (registry, s) = (registry.clone(), subject.clone());
                    let found = tokio::task::spawn_blocking(move || {
                        sluice_registry::has_schema(registry.as_ref(), s.as_deref(), id)
                    })
                    .await
                    .unwrap_or(false);
                    match sluice_sql::planner::assert_schema_failure(
                        subject.as_deref(),
                        id,
                        exists,
                        found,
                    ) {
                        None => {
                            return Ok(entities::assert_schema(
                                &text,
                                subject.as_deref(),
                                id,
                                exists,
                            ));
                        }
                        Some(m) if std::time::Instant::now() >= deadline => {
                            return Err(StatementError::assertion(m, &text));
                        }
                        Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            Planned::CreateType {
                name,
                ty,
                if_not_exists,
            } => {
                if let Some(existing) = self.lock_metastore().types.get(&name) {
                    let message = format!(
                        "Cannot register custom type '{name}' since it is already registered with type: {existing}"
                    );
                    if if_not_exists {
                        return Ok(entities::warning(&text, &message));
                    }
                    return Err(fail(message));
                }
                let cmd = Command::new(&text, properties, Action::CreateType { name, sql_type: ty });
                self.submit(cmd, &text).await
            }
            Planned::DropType { name, if_exists } => {
                if !self.lock_metastore().types.contains_key(&name) {
                    let message = format!("Type {name} does not exist.");
                    if if_exists {
                        return Ok(entities::warning(&text, &message));
                    }
                    return Err(fail(message));
                }
                let cmd = Command::new(&text, properties, Action::DropType { name });
                self.submit(cmd, &text).await
            }
            Planned::ExplainQuery(id) => {
                let ms = self.lock_metastore();
                match ms.queries.get(&id) {
                    Some(q) => Ok(entities::query_description(
                        &text,
                        &entities::QueryShown {
                            id: &q.id,
                            statement: &q.statement,
                            sources: &q.inputs,
                            sinks: std::slice::from_ref(&q.sink),
                            plan: &q.plan,
                            state: q.state(),
                            errors: &q.errors(),
                        },
                    )),
                    None => Err(fail(format!(
                        "Query with id:{id} does not exist, use SHOW QUERIES to view the full set of queries."
                    ))),
                }
            }
            Planned::ExplainStatement(plan) => {
                let sources: Vec<String> = plan
                    .root
                    .sources()
                    .iter()
                    .map(|(name, _)| name.to_string())
                    .collect();
                Ok(entities::query_description(
                    &text,
                    &entities::QueryShown {
                        id: "",
                        statement: &text,
                        sources: &sources,
                        sinks: &[],
                        plan: &plan,
                        state: "NOT_RUNNING",
                        errors: &[],
                    },
                ))
            }
            Planned::DescribeFunction(name) => match sluice_sql::functions::describe(&name) {
                Some(f) => Ok(entities::describe_function(&text, &f)),
                None => Err(fail(format!("Can't find any functions with the name '{name}'"))),
            },
            Planned::Describe { name, extended } => {
                let ms = self.lock_metastore();
                let Some(source) = ms.sources.get(&name) else {
                    return Err(fail(format!(
                        "Could not find STREAM/TABLE '{name}' in the Metastore"
                    )));
                };
                Ok(entities::source_description(
                    &text,
                    source,
                    &ms.readers_of(&name),
                    &ms.writers_of(&name),
                    extended,
                ))
            }
            Planned::CreateSource {
                source,
                if_not_exists,
                or_replace,
                create_topic,
            } => {
                if let Some(existing) = self.lock_metastore().sources.get(&source.name) {
                    if if_not_exists {
                        return Ok(entities::warning(
                            &text,
                            &already_exists(source.kind, &source.name, existing.kind),
                        ));
                    }
                    if !or_replace {
                        return Err(fail(already_exists(
                            source.kind,
                            &source.name,
                            existing.kind,
                        )));
                    }
                }
                let topic = source.topic.topic.clone();
                match (self.topic_partitions(&topic).await?, create_topic) {
                    (Some(_), _) => {}
                    (None, Some(c)) => self
                        .create_topic(&topic, c.partitions.unwrap_or(1), c.replicas)
                        .await
                        .map_err(|e| fail(format!("Could not create topic {topic}: {e}")))?,
                    (None, None) => {
                        return Err(fail(format!(
                            "Topic '{topic}' does not exist. If you want to create a new topic for the {} please re-run the statement providing the required 'PARTITIONS' configuration in the WITH clause (and optionally 'REPLICAS'). For example: CREATE {} {} (...) WITH (KAFKA_TOPIC='{topic}', PARTITIONS=2, REPLICAS=1, ...);",
                            source.kind.lower(),
                            source.kind.lower().to_uppercase(),
                            source.name
                        )));
                    }
                }
                // Schemas of declared columns are registered now, as ksqlDB does, so
                // producers find them before any query runs.
                match self.registry() {
                    Some(registry) => {
                        register_declared(registry.as_ref(), &source.name, &source.topic)
                            .map_err(fail)?
                    }
                    None => {
                        for f in [&source.topic.key_format, &source.topic.value_format] {
                            if f.kind.needs_schema_registry() {
                                return Err(fail(no_registry(f.kind)));
                            }
                        }
                    }
                }
                let cmd = Command::new(&text, properties, Action::CreateSource { source, or_replace });
                self.submit(cmd, &text).await
            }
            Planned::Alter { source } => {
                let cmd = Command::new(&text, properties, Action::AlterSource { source });
                self.submit(cmd, &text).await
            }
            Planned::CreateAs {
                sink,
                if_not_exists,
                or_replace,
                create_topic,
                plan,
                inputs,
            } => {
                if let Some(existing) = self.lock_metastore().sources.get(&sink.name) {
                    if if_not_exists {
                        return Ok(entities::warning(
                            &text,
                            &already_exists(sink.kind, &sink.name, existing.kind),
                        ));
                    }
                    if or_replace {
                        return Err(StatementError::unsupported(
                            "CREATE OR REPLACE of a query's sink is not supported yet".into(),
                            &text,
                        ));
                    }
                    return Err(fail(already_exists(sink.kind, &sink.name, existing.kind)));
                }
                // The plan must run on this build before it is accepted.
                sluice_runtime::Pipeline::new(&plan, self.registry().cloned())
                    .map_err(|e| StatementError::unsupported(e.to_string(), &text))?;
                let mut partitions = Vec::new();
                for (name, topic) in plan.root.sources() {
                    let n = self.topic_partitions(&topic.topic).await?.ok_or_else(|| {
                        fail(format!("Kafka topic does not exist: {}", topic.topic))
                    })?;
                    partitions.push((name, n));
                }
                if let Some(e) = plan.root.copartitioning_error(&partitions) {
                    return Err(fail(e));
                }
                let source_topic = plan
                    .root
                    .source_topics()
                    .first()
                    .map(|t| t.topic.clone())
                    .unwrap_or_default();
                let partitions = match create_topic.partitions {
                    Some(p) => p,
                    None => self.topic_partitions(&source_topic).await?.ok_or_else(|| {
                        fail(format!("Kafka topic does not exist: {source_topic}"))
                    })?,
                };
                let sink_topic = sink.topic.topic.clone();
                match self.topic_partitions(&sink_topic).await? {
                    Some(existing) if create_topic.partitions.is_some_and(|p| p != existing) => {
                        return Err(fail(format!(
                            "A Kafka topic with the name '{sink_topic}' already exists, with different partition/replica configuration than required. KSQL expects {partitions} partitions (topic has {existing})."
                        )));
                    }
                    Some(_) => {}
                    None => self
                        .create_topic(&sink_topic, partitions, create_topic.replicas)
                        .await
                        .map_err(|e| fail(format!("Could not create topic {sink_topic}: {e}")))?,
                }
                // ksqlDB names a query after what it creates: CSAS_... or CTAS_...
                let kind = match sink.kind {
                    SourceKindName::Table => "CTAS",
                    SourceKindName::Stream => "CSAS",
                };
                let cmd = Command::new(&text, properties, Action::CreateQuery {
                        sink,
                        plan,
                        inputs,
                        kind: kind.into(),
                    });
                self.submit(cmd, &text).await
            }
            Planned::InsertInto {
                target,
                plan,
                inputs,
            } => {
                sluice_runtime::Pipeline::new(&plan, self.registry().cloned())
                    .map_err(|e| StatementError::unsupported(e.to_string(), &text))?;
                let cmd = Command::new(&text, properties, Action::InsertQuery {
                        target,
                        plan,
                        inputs,
                    });
                self.submit(cmd, &text).await
            }
            Planned::Drop {
                kind,
                name,
                if_exists,
                delete_topic,
            } => {
                let (topic, registered) = {
                    let ms = self.lock_metastore();
                    let Some(source) = ms.sources.get(&name) else {
                        if if_exists {
                            return Ok(entities::current_status(
                                &text,
                                &format!("{}/`{name}`/drop", kind.lower()),
                                &format!("Source `{name}` does not exist."),
                                None,
                                -1,
                            ));
                        }
                        return Err(fail(format!("{} {name} does not exist.", kind.title())));
                    };
                    if source.is_source && delete_topic {
                        return Err(fail(format!(
                            "Cannot delete topic for read-only source: {name}"
                        )));
                    }
                    if source.kind != kind {
                        return Err(fail(format!(
                            "Incompatible data source type is {}, but statement was DROP {}",
                            source.kind.lower().to_uppercase(),
                            kind.lower().to_uppercase()
                        )));
                    }
                    let readers = ms.readers_of(&name);
                    if !readers.is_empty() {
                        return Err(fail(format!(
                            "Cannot drop {name}.\nThe following queries read from this source: [{}].\nThe following queries write into this source: [{}].\nYou need to terminate them before dropping {name}.",
                            readers.join(", "),
                            ms.writers_of(&name).join(", ")
                        )));
                    }
                    (
                        source.topic.topic.clone(),
                        [&source.topic.key_format, &source.topic.value_format]
                            .map(|f| f.kind.needs_schema_registry()),
                    )
                };
                let cmd = Command::new(&text, properties, Action::DropSource { name });
                let entity = self.submit(cmd, &text).await?;
                if delete_topic {
                    self.cluster
                        .delete_topic(&topic)
                        .await
                        .map_err(|e| fail(format!("Could not delete the topic {topic}: {e}")))?;
                    // As ksqlDB does, the topic's schemas go with it.
                    if let Some(registry) = self.registry() {
                        for (is_key, registered) in [(true, registered[0]), (false, registered[1])] {
                            let subject = sluice_registry::subject(&topic, is_key);
                            if registered && let Err(e) = registry.delete_subject(&subject) {
                                tracing::warn!("could not delete the subject {subject}: {e}");
                            }
                        }
                    }
                }
                Ok(entity)
            }
            Planned::Pause { query_id, paused } => {
                if let Some(id) = &query_id
                    && !self.lock_metastore().queries.contains_key(id)
                {
                    return Err(fail(format!("Unknown queryId: {id}")));
                }
                let cmd = Command::new(&text, properties, Action::Pause { query_id, paused });
                self.submit(cmd, &text).await
            }
            Planned::Terminate(query_id) => {
                if let Some(id) = &query_id
                    && !self.lock_metastore().queries.contains_key(id)
                {
                    return Err(fail(format!("Unknown queryId: {id}")));
                }
                let cmd = Command::new(&text, properties, Action::Terminate {
                        query_id: query_id.clone(),
                    });
                let ids: Vec<String> = match query_id {
                    Some(id) => vec![id],
                    None => self.lock_metastore().queries.keys().cloned().collect(),
                };
                let entity = self.submit(cmd, &text).await?;
                // The stopped queries' state and progress go with them.
                for id in ids {
                    let config = self.query_config(&id, &BTreeMap::new());
                    for topic in config.internal_topics() {
                        if let Err(e) = self.cluster.delete_topic(&topic).await {
                            tracing::warn!(query = %id, "cannot delete the topic {topic}: {e}");
                        }
                    }
                    for group in config.groups() {
                        if let Err(e) = self.cluster.delete_group(&group).await {
                            tracing::warn!(query = %id, "cannot delete the consumer group {group}: {e}");
                        }
                    }
                }
                Ok(entity)
            }
        }
    }

    /// Writes a command, waits until this server has applied it, and reports the outcome.
    async fn submit(&self, cmd: Command, text: &str) -> Result<Value, StatementError> {
        let Some(producer) = self.cluster.producer().filter(|_| !self.is_headless()) else {
            // Headless and in-memory servers keep no command topic: the statement
            // applies here, at once.
            let offset = self.next_local.fetch_add(1, Ordering::SeqCst);
            let result = self.apply(offset, &cmd, false);
            return self.applied_entity(&cmd, result, offset, text);
        };
        let topic = command_topic(&self.config.service_id);
        let payload =
            serde_json::to_vec(&cmd).map_err(|e| StatementError::server(e.to_string(), text))?;
        let id = cmd.command_id();
        let offset = producer
            .send(
                FutureRecord::to(&topic).key(&id).payload(&payload),
                KAFKA_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| {
                StatementError::server(
                    format!("Could not write the statement to the command topic: {e}"),
                    text,
                )
            })?
            .offset;
        let mut applied = self.applied.subscribe();
        let wait = applied.wait_for(|a| *a >= offset);
        tokio::time::timeout(KAFKA_TIMEOUT, wait)
            .await
            .map_err(|_| {
                StatementError::server(
                    "Timed out waiting for the statement to be applied; it will be applied when the command runner catches up".into(),
                    text,
                )
            })?
            .map_err(|_| StatementError::server("The command runner stopped".into(), text))?;
        let result = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&offset)
            .unwrap_or_else(|| Err("the command's result is missing".into()));
        self.applied_entity(&cmd, result, offset, text)
    }

    /// The entity of an applied command, or its refusal.
    fn applied_entity(
        &self,
        cmd: &Command,
        result: Result<Applied, String>,
        offset: i64,
        text: &str,
    ) -> Result<Value, StatementError> {
        match result {
            Ok(a) => Ok(entities::current_status(
                text,
                &cmd.command_id(),
                &a.message,
                a.query_id.as_deref(),
                offset,
            )),
            Err(message) => Err(StatementError::bad_statement(message, text)),
        }
    }

    /// The topic `/inserts-stream` writes rows of `name` to: a stream or table that is
    /// not read-only and has no header columns.
    pub fn insert_target(&self, name: &str) -> Result<sluice_plan::TopicSpec, String> {
        let ms = self.lock_metastore();
        let source = sluice_sql::planner::values_target(name, &ms.sources)?;
        if source.topic.schema.columns.iter().any(|c| {
            matches!(
                c.kind,
                sluice_plan::ColumnKind::Headers | sluice_plan::ColumnKind::Header(_)
            )
        }) {
            return Err(format!(
                "Cannot insert into {name} because it has header columns"
            ));
        }
        Ok(source.topic.clone())
    }

    /// Writes one record to a topic and waits until it is acknowledged.
    pub async fn produce(
        &self,
        topic: &str,
        record: &sluice_runtime::OutputRecord,
    ) -> Result<(), String> {
        self.cluster.produce(topic, record).await
    }

    pub fn is_headless(&self) -> bool {
        self.config.queries_file.is_some()
    }

    /// Headless mode: runs the file's statements in order (SET and UNSET apply to the
    /// statements after them), applying each here; any failure stops the start.
    async fn run_queries_file(self: &Arc<Self>, path: &std::path::Path) -> Result<(), ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ServerError::Startup(format!(
                "cannot read the queries file {}: {e}",
                path.display()
            ))
        })?;
        let mut script = sluice_sql::script::ScriptContext::default();
        let statements = sluice_sql::script::parse_script(&text, &mut script).map_err(|e| {
            ServerError::Startup(format!("{}: {}", path.display(), e.full_message()))
        })?;
        let mut properties = BTreeMap::new();
        for stmt in &statements {
            match &stmt.kind {
                StatementKind::SetProperty { name, value } => {
                    properties.insert(name.clone(), Value::String(value.clone()));
                }
                StatementKind::UnsetProperty { name } => {
                    properties.remove(name);
                }
                _ => {
                    self.execute(stmt, &properties).await.map_err(|e| {
                        ServerError::Startup(format!(
                            "{}: {} failed: {}",
                            path.display(),
                            stmt.text,
                            e.message
                        ))
                    })?;
                }
            }
        }
        tracing::info!(
            file = %path.display(),
            statements = statements.len(),
            "headless: the queries file is running"
        );
        Ok(())
    }

    async fn topic_partitions(&self, topic: &str) -> Result<Option<u32>, StatementError> {
        self.cluster
            .partitions(topic)
            .map_err(|e| StatementError::server(format!("Could not reach Kafka: {e}"), ""))
    }

    async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        replicas: Option<i16>,
    ) -> Result<(), String> {
        self.cluster
            .create_topic(topic, partitions, replicas, &[])
            .await
    }

    async fn show(&self, target: ShowTarget, text: &str) -> Result<Value, StatementError> {
        match target {
            ShowTarget::Streams { extended } | ShowTarget::Tables { extended } => {
                let kind = if matches!(target, ShowTarget::Streams { .. }) {
                    SourceKindName::Stream
                } else {
                    SourceKindName::Table
                };
                let ms = self.lock_metastore();
                let sources: Vec<&SourceDesc> =
                    ms.sources.values().filter(|s| s.kind == kind).collect();
                if extended {
                    let descriptions = sources
                        .iter()
                        .map(|s| {
                            entities::source_description_body(
                                s,
                                &ms.readers_of(&s.name),
                                &ms.writers_of(&s.name),
                                true,
                            )
                        })
                        .collect();
                    return Ok(entities::source_description_list(text, descriptions));
                }
                Ok(entities::source_list(text, kind, &sources))
            }
            ShowTarget::Queries { .. } => {
                let ms = self.lock_metastore();
                Ok(entities::queries(text, ms.queries.values()))
            }
            ShowTarget::Topics { all, .. } => {
                let topics = self.cluster.topics().map_err(|e| {
                    StatementError::server(format!("Could not list topics: {e}"), text)
                })?;
                let topics: Vec<(String, u32)> = topics
                    .into_iter()
                    .filter(|(n, _)| all || !n.starts_with('_'))
                    .collect();
                Ok(entities::topics(text, &topics))
            }
            ShowTarget::Properties => Ok(entities::properties(text, &self.config)),
            ShowTarget::Types => Ok(entities::type_list(text, &self.lock_metastore().types)),
            // The request's variables: answered where the request is read (rest.rs).
            ShowTarget::Variables => Ok(entities::variables(text, &BTreeMap::new())),
            ShowTarget::Functions => Ok(entities::function_names(
                text,
                &sluice_sql::functions::all_functions(),
            )),
        }
    }
}

/// A SQL literal as the JSON value `values::json_key` takes.
fn literal_json(v: &LiteralValue) -> Value {
    match v {
        LiteralValue::Null => Value::Null,
        LiteralValue::Boolean(b) => Value::Bool(*b),
        LiteralValue::Number(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        LiteralValue::String(text) => Value::String(text.clone()),
    }
}
