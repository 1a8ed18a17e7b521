//! Running a pipeline against Kafka, and the topic administration the engine needs.
//!
//! A query runs as tasks. When its plan allows (`Step::runs_per_partition`: no group or
//! join needs records of another partition) and its sources have the same number of
//! partitions, task `p` reads partition `p` of every source and keeps its own state;
//! otherwise one task reads every partition. The tasks' leases are the partitions of a
//! lease topic (the query's `-tasks` topic, or for a single task the service's lease
//! topic), handed out by the query's consumer group to its members: the worker threads
//! (`num.stream.threads`) of every server running the query. A worker reads its tasks'
//! partitions with a consumer that is assigned them, from the offsets the group
//! committed. When a worker dies or leaves, the group gives its leases to the others,
//! which restore the tasks' state and go on.
//!
//! - **exactly_once_v2** (the default): a transactional producer per worker thread,
//!   shared by its tasks (Kafka Streams' exactly_once_v2). Every commit interval, the
//!   output records of all its tasks, the changelog records of the state they changed,
//!   and the consumed offsets commit in one transaction; everything reads
//!   `read_committed`. Leases move only between transactions (see `run_worker`); a
//!   worker that lost its leases without knowing is fenced by the group generation its
//!   transaction carries, and a crashed one by its own next start.
//! - **at_least_once**: every interval the producer is flushed (outputs and changelog),
//!   then the offsets are committed; a crash in between repeats records.
//!
//! State: aggregations, materialized tables and joins write what changed each interval
//! to the query's compacted changelog topic and are rebuilt from it on start (state
//! stores kept from an earlier run replay only what follows their checkpoint, see
//! `restore_changelog`). A new query's stream-table join first loads its table whole
//! (`load_table`). A commit the group refuses during a rebalance restarts the worker's
//! tasks in place; any other failure (a delivery error, a fenced producer, a broker
//! gone) drops the worker's consumers, producer and state and starts again from the
//! last commit, with backoff.

use crate::codec::registered::Registry;
use crate::error::{Result, RuntimeError};
use crate::pipeline::{DecodeFailure, Header, OutputRecord, Pipeline, SourceRecord};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_plan::{QueryPlan, Step};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a query connects to Kafka.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    pub bootstrap_servers: String,
    /// The consumer group, unique per query: `_sluice-<service>-query_<id>`.
    pub group_id: String,
    /// `earliest` or `latest`, used when the group has no committed offset.
    pub auto_offset_reset: String,
    pub commit_interval: Duration,
    /// `processing.guarantee`: exactly_once_v2 (true) or at_least_once.
    pub exactly_once: bool,
    /// The one-partition topic whose partition, in the query's group, is its lease.
    pub lease_topic: String,
    /// Where records that cannot be processed are reported (None: only counted).
    pub processing_log_topic: Option<String>,
    /// `processing.log.include.rows`: the report carries the record's bytes.
    pub log_rows: bool,
    /// `cache.max.bytes.buffering`: a table's rows are held until the commit and only
    /// the latest per key is written; 0 writes every row.
    pub cache_max_bytes: usize,
    /// Where the query keeps the groups of its aggregations in RocksDB (None: in
    /// memory). Rebuilt from the changelog at every start: the changelog is the state's
    /// truth, the local store a copy that spares memory.
    pub state_dir: Option<std::path::PathBuf>,
    /// Where AVRO and JSON_SR schemas are registered and looked up.
    pub registry: Option<Registry>,
    /// PAUSE: the query reads nothing until resumed (see `RunningQuery::set_paused`).
    pub paused: Arc<AtomicBool>,
    /// `num.stream.threads`: the worker threads that run the query's tasks here.
    pub stream_threads: usize,
    /// `repartition.purge.interval.ms`: how often a task deletes what it committed of
    /// the repartition topics it reads.
    pub purge_interval: Duration,
    /// The REST address of this server, named in the lease consumers' client ids so
    /// that other servers can tell which server holds which task (see `owners`).
    pub advertised_url: Option<String>,
}

/// The most parts a query is cut into: two repartition writers and a reader.
const MAX_PARTS: usize = 2;

/// Groups of a RocksDB-backed aggregation kept in memory between commits, at most,
/// shared among the query's tasks (each keeps its part, but never fewer than
/// `MIN_CACHED_GROUPS`): a query's memory does not grow with its partitions.
const CACHED_GROUPS: usize = 100_000;
const MIN_CACHED_GROUPS: usize = 10_000;

impl QueryConfig {
    /// The topic the query's state is changelogged to (compacted, a partition per
    /// task).
    pub fn changelog_topic(&self) -> String {
        format!("{}-state-changelog", self.group_id)
    }

    /// The topic whose partitions are the leases of the query's tasks, when it runs as
    /// a task per partition.
    pub fn tasks_topic(&self) -> String {
        format!("{}-tasks", self.group_id)
    }

    /// A repartition topic of the query: `role` says what it feeds
    /// (`Aggregate-GroupBy`, `Join-left`, `Join-right`).
    pub fn repartition_topic(&self, role: &str) -> String {
        format!("{}-{role}-repartition", self.group_id)
    }

    /// The configuration of part `n` of a query cut at repartition topics: part 0 is
    /// the query's own; each other has its own group, and so its own leases,
    /// producers and changelog, and its own state directory.
    fn part(&self, n: usize) -> QueryConfig {
        if n == 0 {
            return self.clone();
        }
        QueryConfig {
            group_id: format!("{}-{n}", self.group_id),
            state_dir: self.state_dir.as_ref().map(|d| d.join(format!("part_{n}"))),
            ..self.clone()
        }
    }

    /// The consumer groups the query may use, to delete when it is dropped.
    pub fn groups(&self) -> Vec<String> {
        (0..=MAX_PARTS).map(|n| self.part(n).group_id).collect()
    }

    /// The internal topics the query may have created, to delete when it is dropped.
    pub fn internal_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = ["Aggregate-GroupBy", "Join-left", "Join-right"]
            .iter()
            .map(|role| self.repartition_topic(role))
            .collect();
        for n in 0..=MAX_PARTS {
            let part = self.part(n);
            topics.extend([part.changelog_topic(), part.tasks_topic()]);
        }
        topics
    }
}

/// An error a query failed with (ksqlDB's `QueryError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    pub message: String,
    /// When, in milliseconds since the epoch.
    pub timestamp: i64,
    /// A poison of the query's own (ksqlDB's USER errors), else the broker's or a
    /// service's (SYSTEM).
    pub poison: bool,
}

impl QueryError {
    fn of(e: &RuntimeError) -> QueryError {
        QueryError {
            message: e.to_string(),
            timestamp: now_millis(),
            poison: e.is_poison(),
        }
    }
}

/// What a running query reports.
#[derive(Debug, Default)]
pub struct QueryStats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records skipped because they could not be decoded.
    pub decode_errors: AtomicU64,
    /// Rows where an expression failed and yielded NULL.
    pub expression_errors: AtomicU64,
    /// Consecutive restarts after errors; 0 while healthy.
    pub restarts: AtomicU64,
    pub last_error: Mutex<Option<QueryError>>,
    /// Why the query stopped for good on this server: the same poison
    /// (`RuntimeError::is_poison`) came back `POISON_ATTEMPTS` times in a row.
    pub failed: Mutex<Option<QueryError>>,
    /// What each worker thread of the query on this server holds.
    workers: Mutex<Vec<WorkerState>>,
    /// Commits (transactions or offset commits) and the time they took, in total.
    pub commits: AtomicU64,
    pub commit_micros: AtomicU64,
    /// Commits the group refused (a rebalance moved its generation on during the
    /// interval): the interval was aborted and its tasks started again in place.
    pub refused_commits: AtomicU64,
    /// State entries read back from the changelog since the query started here (by every
    /// task start: a move, a restart in place), and how long that took.
    pub restored_entries: AtomicU64,
    pub restore_millis: AtomicU64,
    /// How many of the query's tasks here are restoring their state now.
    pub restoring: AtomicU64,
    /// How far each input partition read here lags behind its end, by worker.
    lags: Mutex<Vec<BTreeMap<(String, i32), i64>>>,
}

/// A worker thread's tasks, and whether it has seen that the query is paused.
#[derive(Clone, Copy, Debug, Default)]
struct WorkerState {
    tasks: usize,
    paused: bool,
}

impl QueryStats {
    /// The query's tasks this server runs now.
    pub fn tasks_held(&self) -> usize {
        self.lock_workers().iter().map(|w| w.tasks).sum()
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<WorkerState>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_worker(&self, worker: usize, f: impl FnOnce(&mut WorkerState)) {
        let mut workers = self.lock_workers();
        if workers.len() <= worker {
            workers.resize(worker + 1, WorkerState::default());
        }
        f(&mut workers[worker]);
    }

    fn set_worker_tasks(&self, worker: usize, tasks: usize) {
        self.with_worker(worker, |w| w.tasks = tasks);
    }

    fn set_worker_lags(&self, worker: usize, lags: BTreeMap<(String, i32), i64>) {
        let mut all = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() <= worker {
            all.resize(worker + 1, BTreeMap::new());
        }
        all[worker] = lags;
    }

    /// How far each input partition this server reads lags behind its end (records),
    /// as of the readers' last reports.
    pub fn lags(&self) -> BTreeMap<(String, i32), i64> {
        let all = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .flat_map(|w| w.iter().map(|(k, v)| (k.clone(), *v)))
            .collect()
    }

    fn set_worker_paused(&self, worker: usize, paused: bool) {
        self.with_worker(worker, |w| w.paused = paused);
    }

    /// Whether every worker that runs tasks has seen the query paused (or resumed).
    fn all_workers_see(&self, paused: bool) -> bool {
        self.lock_workers()
            .iter()
            .all(|w| w.tasks == 0 || w.paused == paused)
    }
}

/// A persistent query running on its own thread.
pub struct RunningQuery {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<QueryStats>,
}

impl RunningQuery {
    /// Starts the query. The plan is compiled first, so a plan this build cannot run is
    /// refused here rather than on its thread.
    pub fn start(name: &str, plan: &QueryPlan, config: QueryConfig) -> Result<RunningQuery> {
        // Fail fast on a plan this build cannot run.
        Pipeline::new(plan, config.registry.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let paused = config.paused.clone();
        let stats = Arc::new(QueryStats::default());
        let thread = {
            let (stop, stats, plan) = (stop.clone(), stats.clone(), plan.clone());
            let name = name.to_string();
            std::thread::Builder::new()
                .name(format!("query-{name}"))
                .spawn(move || run_query(&name, &plan, &config, &stop, &stats))
                .map_err(|e| RuntimeError::Plan(format!("cannot start a thread: {e}")))?
        };
        Ok(RunningQuery {
            stop,
            paused,
            thread: Some(thread),
            stats,
        })
    }

    /// PAUSE (true) or RESUME: a paused query reads no records, keeping its state and
    /// its position, and holds its lease.
    /// Returns once the query's workers have seen it (at most a few seconds, and at
    /// once when this server runs none of the query's tasks): records written after a
    /// PAUSE returns are not read.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stats.all_workers_see(paused) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the query after committing what it has processed, and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.stats.restarts.load(Ordering::Relaxed) == 0
    }

    /// Why the query stopped for good, if a poison stopped it.
    pub fn failed(&self) -> Option<QueryError> {
        self.stats
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The error the query last failed with, if it failed since it started.
    pub fn last_error(&self) -> Option<QueryError> {
        self.stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for RunningQuery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Runs the query on this server: works out its parts and their layouts, then runs
/// each part's workers (up to `num.stream.threads`, and no more than it has tasks)
/// until the query stops.
fn run_query(
    name: &str,
    plan: &QueryPlan,
    config: &QueryConfig,
    stop: &AtomicBool,
    stats: &QueryStats,
) {
    // The layout needs the broker: it is retried as a failed run is.
    let Some(parts) = retry(name, stop, stats, || plan_parts(plan, config)) else {
        return;
    };
    let threads = config.stream_threads.max(1);
    std::thread::scope(|scope| {
        for (n, part) in parts.iter().enumerate() {
            for worker in 0..threads.min(part.layout.tasks as usize) {
                // Each worker has its own slot in the stats.
                let slot = n * threads + worker;
                let spawned = std::thread::Builder::new()
                    .name(format!("query-{name}-{slot}"))
                    .spawn_scoped(scope, move || {
                        retry(name, stop, stats, || {
                            run_worker(name, part, stop, stats, slot)
                        })
                    });
                if let Err(e) = spawned {
                    tracing::warn!(query = name, "cannot start worker {slot}: {e}");
                }
            }
        }
    });
}

/// How many times in a row the same poison may fail a query before it stops for good
/// (with the pauses between, about 3 s of trying plus the attempts themselves).
pub const POISON_ATTEMPTS: u32 = 6;

/// Runs `f` until it succeeds or the query stops (None), with a growing pause after
/// each failure, which the query's stats show. A poison (`RuntimeError::is_poison`)
/// that fails it `POISON_ATTEMPTS` times in a row, with the query never healthy in
/// between, stops the whole query on this server, with the error in `stats.failed`;
/// errors of the broker are retried for as long as they last.
fn retry<T>(
    name: &str,
    stop: &AtomicBool,
    stats: &QueryStats,
    mut f: impl FnMut() -> Result<T>,
) -> Option<T> {
    let mut backoff = Duration::from_millis(100);
    let mut poisoned: Option<(String, u32)> = None;
    while !stop.load(Ordering::SeqCst) {
        match f() {
            Ok(v) => return Some(v),
            Err(e) => {
                let error = QueryError::of(&e);
                let attempt = stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                // Healthy until this failure: any earlier poison is behind it.
                let was_healthy = attempt == 1;
                *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
                let streak = match poisoned.take() {
                    Some((m, n)) if error.poison && !was_healthy && m == error.message => n + 1,
                    _ => 1,
                };
                if error.poison && streak >= POISON_ATTEMPTS {
                    tracing::error!(
                        query = name,
                        attempts = streak,
                        "query stopped: it keeps failing at the same point: {e}"
                    );
                    *stats.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                    stop.store(true, Ordering::SeqCst);
                    return None;
                }
                if error.poison {
                    poisoned = Some((error.message, streak));
                }
                tracing::warn!(
                    query = name,
                    attempt,
                    "query failed, restarting from the last commit: {e}"
                );
                let deadline = Instant::now() + backoff;
                while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    None
}

/// Counts failed deliveries so the loop never commits offsets past a lost record, and
/// notes how far the worker's tasks' changelog partitions are written (for their
/// checkpoints).
#[derive(Default)]
struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Per changelog partition of the worker's tasks, the offset after the last record
    /// delivered to it. (A worker's tasks all write the one changelog of its part.)
    changelog: String,
    changelog_ends: Mutex<HashMap<i32, i64>>,
}

impl DeliveryTracker {
    /// The offset after the last record delivered to a changelog partition (0: none).
    fn changelog_end(&self, partition: i32) -> i64 {
        let ends = self
            .changelog_ends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ends.get(&partition).copied().unwrap_or(0)
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
            Ok(msg) => {
                if self.changelog == msg.topic() {
                    let mut ends = self
                        .changelog_ends
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let end = ends.entry(msg.partition()).or_default();
                    *end = (*end).max(msg.offset() + 1);
                }
            }
        }
    }
}

/// The producer a query writes with: transactional under exactly-once.
type QueryProducer = ThreadedProducer<DeliveryTracker>;

/// The query's group hands out the partitions of its lease topic: each is the lease of
/// one task. A member (a worker thread) keeps the set it was given.
#[derive(Default)]
struct Lease {
    owned: Mutex<BTreeSet<i32>>,
    /// Counts the changes of `owned`, so that a worker notices them cheaply.
    moves: AtomicU64,
}

impl Lease {
    fn owned(&self) -> BTreeSet<i32> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientContext for Lease {}

impl ConsumerContext for Lease {
    fn pre_rebalance(&self, _: &BaseConsumer<Lease>, rebalance: &Rebalance<'_>) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        // Cooperative rebalancing: an assignment adds partitions, a revocation takes
        // some away.
        match rebalance {
            Rebalance::Assign(tpl) => owned.extend(tpl.elements().iter().map(|e| e.partition())),
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    owned.remove(&e.partition());
                }
            }
            Rebalance::Error(_) => owned.clear(),
        }
        self.moves.fetch_add(1, Ordering::SeqCst);
    }
}

type LeaseConsumer = BaseConsumer<Lease>;

/// How a query's work is cut into tasks, decided when it starts.
#[derive(Clone, Debug)]
struct Layout {
    /// 1: one task reads every partition of the sources. More: task `p` reads partition
    /// `p` of each source, keeps its state in partition `p` of the changelog, and has
    /// its own transactional producer.
    tasks: u32,
    /// The topic whose partitions, handed out by the query's group, are the tasks'
    /// leases: the service's one-partition lease topic for a single task, else the
    /// query's own with a partition per task.
    lease_topic: String,
    /// Whether the records read, and those written, are the query's own inputs and
    /// outputs in its stats (not those of a repartition topic between its parts).
    counts_input: bool,
    counts_output: bool,
    /// Repartition topics this part reads: what its tasks have committed of them is
    /// deleted, as nothing reads it again.
    purges: Vec<String>,
}

/// The query's layout: a task per partition when the plan allows it (see
/// `Step::runs_per_partition`) and its sources have the same number of partitions, more
/// than one; else a single task. Creates the topics the layout needs: the lease topic
/// of its tasks and, for a plan with state, the changelog with a partition per task. A
/// changelog kept by an earlier single-task run keeps the query on a single task, whose
/// state it holds.
fn plan_layout(
    plan: &QueryPlan,
    pipeline: &mut Pipeline,
    config: &QueryConfig,
    admin: &KafkaAdmin,
) -> Result<Layout> {
    let mut tasks = 1;
    if plan.root.runs_per_partition() {
        let mut counts = BTreeSet::new();
        for (_, spec) in plan.root.sources() {
            let count = admin.partitions(&spec.topic)?.ok_or_else(|| {
                RuntimeError::Unavailable(format!("the topic {} does not exist", spec.topic))
            })?;
            counts.insert(count);
        }
        if let [n] = counts.into_iter().collect::<Vec<_>>()[..] {
            tasks = n.max(1);
        }
    }
    if pipeline.has_changelog() {
        let changelog = config.changelog_topic();
        match admin.partitions(&changelog)? {
            Some(n) if n == tasks => {}
            Some(1) => tasks = 1,
            Some(n) => {
                return Err(RuntimeError::Plan(format!(
                    "the query's state is kept in {n} partitions, but it now runs as {tasks} tasks"
                )));
            }
            None => block_on(admin.create_topic(
                &changelog,
                tasks,
                None,
                &[("cleanup.policy", "compact")],
            ))?,
        }
    }
    let lease_topic = if tasks > 1 {
        block_on(admin.create_topic(&config.tasks_topic(), tasks, None, &[]))?;
        config.tasks_topic()
    } else {
        config.lease_topic.clone()
    };
    Ok(Layout {
        tasks,
        lease_topic,
        counts_input: true,
        counts_output: true,
        purges: Vec::new(),
    })
}

/// A part of a query that runs as tasks of its own: the whole plan, or one side of a
/// repartition topic.
struct Part {
    plan: QueryPlan,
    config: QueryConfig,
    layout: Layout,
}

/// The query's parts: when records must change partitions
/// (`Step::split_at_repartition`), the parts that write them to repartition topics
/// (created with the partition count of what they must be co-partitioned with, else
/// the most the sources have), and the part that reads them; else the plan as it is
/// (also when an earlier run kept the whole plan's state in one partition).
fn plan_parts(plan: &QueryPlan, config: &QueryConfig) -> Result<Vec<Part>> {
    let admin = KafkaAdmin::new(&config.bootstrap_servers)?;
    let mut most = 0;
    for (_, spec) in plan.root.sources() {
        most = most.max(admin.partitions(&spec.topic)?.unwrap_or(0));
    }
    let part = |root: Step, config: QueryConfig, counts: (bool, bool), purges: Vec<String>| {
        let plan = QueryPlan {
            root,
            ..plan.clone()
        };
        let mut pipeline = Pipeline::new(&plan, config.registry.clone())?;
        let layout = Layout {
            counts_input: counts.0,
            counts_output: counts.1,
            purges,
            ..plan_layout(&plan, &mut pipeline, &config, &admin)?
        };
        Ok::<_, RuntimeError>(Part {
            plan,
            config,
            layout,
        })
    };
    // A query that ran as a single task keeps its state in a one-partition changelog
    // under the query's own name, which the writing part (part 0) would take as its
    // own: such a query stays a single task.
    let single_before = admin.partitions(&config.changelog_topic())? == Some(1);
    let split = (most > 1 && !single_before)
        .then(|| {
            plan.root
                .split_at_repartition(&|role| config.repartition_topic(role))
        })
        .flatten();
    let Some((writers, reader)) = split else {
        return Ok(vec![part(
            plan.root.clone(),
            config.clone(),
            (true, true),
            Vec::new(),
        )?]);
    };
    let mut parts = Vec::new();
    let mut repartition_topics = Vec::new();
    for (n, repartition) in writers.into_iter().enumerate() {
        let partitions = match &repartition.partitions_of {
            Some(topic) => admin.partitions(topic)?.unwrap_or(most),
            None => most,
        };
        if let Step::StreamSink { topic, .. } = &repartition.writer {
            block_on(admin.create_topic(&topic.topic, partitions, None, &[]))?;
            repartition_topics.push(topic.topic.clone());
        }
        // The first writer keeps the query's group (its offsets are the sources'), the
        // reader is the second part, further writers follow.
        let group = if n == 0 { 0 } else { n + 1 };
        parts.push(part(
            repartition.writer,
            config.part(group),
            (true, false),
            Vec::new(),
        )?);
    }
    parts.push(part(
        reader,
        config.part(1),
        (false, true),
        repartition_topics,
    )?);
    Ok(parts)
}

/// Runs the query's tasks that one member of its group (a worker thread) holds, until
/// the query stops. Tasks come and go with the group's rebalances.
///
/// The worker's tasks share one producer and, under exactly-once, one transaction per
/// commit interval (Kafka Streams' exactly_once_v2). The lease consumer, whose
/// rebalances hand out and take back tasks, is polled only while no transaction is
/// open (right after a commit, or while nothing was read since): a task taken away has
/// committed all it did, so its next holder starts exactly where it stopped. A worker
/// that stops polling (a crash, a stall) is fenced by the group generation its
/// transaction carries (`send_offsets_to_transaction`) and, after a crash, by its own
/// next start, whose producer has the same id. A commit the group refuses (a rebalance
/// moved the generation on while the transaction was open) aborts the interval, and
/// the worker's tasks start again in place from the last commit, keeping the worker's
/// membership: leaving and rejoining would rebalance the group again and refuse the
/// other members' commits in turn.
fn run_worker(
    name: &str,
    part: &Part,
    stop: &AtomicBool,
    stats: &QueryStats,
    worker: usize,
) -> Result<()> {
    let Part { config, layout, .. } = part;
    let lease: LeaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set(
            "client.id",
            crate::owners::lease_client_id(&config.group_id, config.advertised_url.as_deref()),
        )
        .set("enable.auto.commit", "false")
        // Offsets a transaction has sent but not yet committed are waited for (KIP-447's
        // stable offsets), so a task's next holder starts where its last commit ended.
        .set("isolation.level", "read_committed")
        // A member that dies without leaving (kill -9) holds its leases until its
        // session times out: keep that short so another server takes over promptly.
        // (6 s is the broker's smallest by default.)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1500")
        // Restoring a large state polls nothing for a while.
        .set("max.poll.interval.ms", "1800000")
        // A member joining does not take leases from the others but those it gets.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create_with_context(Lease::default())?;
    lease.subscribe(&[&layout.lease_topic])?;
    // The records: the worker's tasks' partitions are assigned to this reader, which
    // never joins the group (so no rebalance moves them mid-transaction); the lease
    // consumer is the member that commits.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("client.id", format!("{}-consumer", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &config.auto_offset_reset)
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        // librdkafka prefetches up to 64 MB per consumer by default, and a server runs a
        // reader per worker of every query. 16 MB ahead (a worker takes 2,000 records a
        // turn) cut the crash harness's six queries from about 940 to 660 MiB at 1M
        // records, for about 5% of their rate (8 MB saved no more and cost 14%).
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "20000")
        .create()?;
    let mut held = Held {
        tasks: BTreeMap::new(),
        waiting: false,
        output: WorkerOutput::new(config, worker)?,
        stats,
        worker,
    };
    let mut seen_moves = 0;
    let mut last_start = Instant::now();
    let mut last_commit = Instant::now();
    let mut last_lag = Instant::now();
    let mut waiting_since = Instant::now();
    let mut healthy_since: Option<Instant> = None;
    let mut was_paused = false;
    // Whether anything was read since the last commit, and the offsets to commit.
    let mut dirty = false;
    let mut offsets = BTreeMap::new();
    const MAX_BATCH: usize = 2000;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if !dirty && !held.output.open {
            let idle = held.tasks.is_empty();
            match lease.poll(if idle && !stopping {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            }) {
                None | Some(Ok(_)) => {}
                Some(Err(e)) if is_transient(&e) => {}
                Some(Err(e)) => return Err(e.into()),
            }
            let moves = lease.context().moves.load(Ordering::SeqCst);
            // Tasks waiting for their stores are tried again, at most every 200 ms.
            let retry_waiting = held.waiting && last_start.elapsed() >= Duration::from_millis(200);
            if moves != seen_moves || retry_waiting {
                seen_moves = moves;
                last_start = Instant::now();
                held.take_moves(name, part, &lease, &reader)?;
            }
        }
        if held.tasks.is_empty() {
            if stopping {
                return Ok(());
            }
            if waiting_since.elapsed() > Duration::from_secs(30) {
                tracing::info!(query = name, "other workers run the query's tasks");
                waiting_since = Instant::now();
            }
            continue;
        }
        waiting_since = Instant::now();
        let paused = config.paused.load(Ordering::SeqCst);
        if paused != was_paused {
            was_paused = paused;
            stats.set_worker_paused(worker, paused);
            tracing::info!(
                query = name,
                "{}",
                if paused { "paused" } else { "resumed" }
            );
        }
        if !stopping && paused {
            // Paused: nothing is read; the leases are still served above.
            std::thread::sleep(Duration::from_millis(50));
        } else if !stopping {
            let mut timeout = Duration::from_millis(50);
            let mut read = 0;
            while read < MAX_BATCH {
                let Some(msg) = reader.poll(timeout) else {
                    break;
                };
                timeout = Duration::ZERO;
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(e) if is_transient(&e) => {
                        tracing::debug!(query = name, "the broker is unreachable; polling on");
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                read += 1;
                let p = if layout.tasks == 1 {
                    0
                } else {
                    msg.partition()
                };
                if let Some(task) = held.tasks.get_mut(&p) {
                    task.read(&msg, name, config, stats)?;
                    dirty = true;
                }
            }
        }
        // Measured while paused too: a paused query's lag grows.
        if last_lag.elapsed() >= LAG_INTERVAL {
            last_lag = Instant::now();
            match lags(&reader) {
                Ok(lags) => stats.set_worker_lags(worker, lags),
                Err(e) => tracing::debug!(query = name, "cannot measure the lag: {e}"),
            }
        }
        let commit_due = stopping || last_commit.elapsed() >= config.commit_interval;
        for task in held.tasks.values_mut() {
            task.process(
                commit_due,
                name,
                &mut held.output,
                &mut offsets,
                config,
                stats,
            )?;
        }
        if !commit_due {
            continue;
        }
        let commit_started = Instant::now();
        let work = held.output.open || !offsets.is_empty();
        let committed = held.output.commit(&lease, &offsets);
        // The next interval starts once this one is committed.
        last_commit = Instant::now();
        offsets.clear();
        dirty = false;
        match committed {
            Ok(()) => {
                for task in held.tasks.values_mut() {
                    task.committed(name, config, &held.output)?;
                }
                if work {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    stats.commit_micros.fetch_add(
                        commit_started.elapsed().as_micros() as u64,
                        Ordering::Relaxed,
                    );
                }
                // A query that has committed for a while after a restart is healthy
                // again.
                match healthy_since {
                    None => healthy_since = Some(Instant::now()),
                    Some(t) if t.elapsed() > Duration::from_secs(5) => {
                        stats.restarts.store(0, Ordering::Relaxed);
                    }
                    Some(_) => {}
                }
            }
            Err(e) if !stopping && held.output.can_go_on(&e) => {
                tracing::info!(
                    query = name,
                    "the commit was refused ({e}); the worker's tasks start again from the \
                     last commit"
                );
                stats.refused_commits.fetch_add(1, Ordering::Relaxed);
                held.close_tasks();
                // The tasks the worker still holds start again after the next lease
                // poll, whatever moved.
                seen_moves = u64::MAX;
            }
            // Stopping: the interval is read again at the next start.
            Err(e) if stopping => {
                tracing::warn!(query = name, "the last commit before stopping failed: {e}");
            }
            Err(e) => return Err(e),
        }
        if stopping {
            // The next start needs no more than the stores.
            for task in held.tasks.values_mut() {
                task.checkpoint(name);
            }
            tracing::info!(query = name, "query stopped");
            return Ok(());
        }
    }
}

/// This server's name in the transactional ids of a query's workers: kept in the
/// query's state directory, so that it is the same after a restart and differs between
/// servers (which have their own directories). Without a state directory, new at every
/// start.
fn server_instance(config: &QueryConfig) -> String {
    let fresh = || {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        format!("{:016x}", h.finish())
    };
    let Some(dir) = &config.state_dir else {
        return fresh();
    };
    let file = dir.join("sluice.instance");
    if let Ok(id) = std::fs::read_to_string(&file)
        && !id.trim().is_empty()
    {
        return id.trim().to_string();
    }
    let id = fresh();
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&file, &id)) {
        tracing::warn!(
            "cannot keep this server's instance id in {}: {e}",
            file.display()
        );
    }
    id
}

/// The tasks a worker holds and the producer they share, with the tasks published to
/// the query's stats (and withdrawn when the worker ends, however it ends).
struct Held<'a> {
    tasks: BTreeMap<i32, Task>,
    /// Some task the worker holds waits for its store (`start_tasks`).
    waiting: bool,
    output: WorkerOutput,
    stats: &'a QueryStats,
    worker: usize,
}

impl Held<'_> {
    fn publish(&self) {
        self.stats.set_worker_tasks(self.worker, self.tasks.len());
    }

    /// Follows a rebalance of the leases: drops the tasks taken away (everything they
    /// did is committed: the lease consumer is polled only then) and starts those
    /// given.
    fn take_moves(
        &mut self,
        name: &str,
        part: &Part,
        lease: &LeaseConsumer,
        reader: &BaseConsumer,
    ) -> Result<()> {
        let owned: BTreeSet<i32> = lease
            .context()
            .owned()
            .into_iter()
            .filter(|p| (*p as u32) < part.layout.tasks)
            .collect();
        let before: Vec<i32> = self.tasks.keys().copied().collect();
        self.tasks.retain(|p, task| {
            let keep = owned.contains(p);
            if !keep {
                // Its next holder, if on this server, restores from here.
                task.checkpoint(name);
                tracing::info!(query = name, task = p, "the task moved to another worker");
            }
            keep
        });
        self.start_tasks(owned, name, part, lease)?;
        self.publish();
        assign(reader, &self.tasks)?;
        let changed = !self.tasks.keys().copied().eq(before);
        if changed && !self.tasks.is_empty() {
            tracing::info!(
                query = name,
                tasks = ?self.tasks.keys().collect::<Vec<_>>(),
                of = part.layout.tasks,
                exactly_once = part.config.exactly_once,
                "running tasks"
            );
        }
        Ok(())
    }

    /// After an aborted interval: every task closes (its database too). Those the
    /// worker still holds start again at the next `take_moves`, from the last commit:
    /// their state restored from their stores and changelog, their input read again from
    /// the committed offsets. Not at once: the group moved on, and a member it dropped
    /// meanwhile ("unknown member") has lost its leases to others, which librdkafka
    /// reports only at the lease consumer's next poll. Restarting them in place made two
    /// workers run a task, the stale one unable to commit and holding its database.
    fn close_tasks(&mut self) {
        self.tasks.clear();
        self.publish();
    }

    /// Starts each of the tasks `wanted` that the worker does not run yet. A task whose
    /// store another worker here still holds is left for later (`waiting`): failing the
    /// worker would drop its consumers and rebalance the group again, and waiting here
    /// would keep the worker from its lease consumer, which may be about to say that
    /// the task is not its own any more.
    fn start_tasks(
        &mut self,
        wanted: BTreeSet<i32>,
        name: &str,
        part: &Part,
        lease: &LeaseConsumer,
    ) -> Result<()> {
        let was_waiting = std::mem::take(&mut self.waiting);
        for p in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.tasks.entry(p) {
                // A task already waiting only tries the lock: waiting for it again would
                // hold up the worker's other tasks at every retry.
                let lock_wait = if was_waiting {
                    Duration::ZERO
                } else {
                    STORE_LOCK_WAIT
                };
                match Task::start(name, part, p, lease, self.stats, lock_wait) {
                    Ok(task) => {
                        slot.insert(task);
                    }
                    Err(RuntimeError::StoreLocked(e)) => {
                        if !was_waiting {
                            tracing::info!(
                                query = name,
                                task = p,
                                "the task's store is still held here; starting it later: {e}"
                            );
                        }
                        self.waiting = true;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.output.abort();
        self.stats.set_worker_tasks(self.worker, 0);
        self.stats.set_worker_lags(self.worker, BTreeMap::new());
    }
}

/// Opens a task's database. A task that moved between two workers of this server may
/// still be closing on the one it left (which lets it go right after its lease
/// consumer's poll): RocksDB's lock is then waited for, briefly, and if it is still
/// held the task is left for later (`StoreLocked`, see `Held::start_tasks`).
/// How long a task's first start waits for its store's lock (its previous holder here
/// closing it) before it is left for later.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens a task's store, waiting up to `lock_wait` for another holder here to let it go.
fn open_task_db(dir: &std::path::Path, lock_wait: Duration) -> Result<sluice_state::StateDb> {
    let deadline = Instant::now() + lock_wait;
    loop {
        match sluice_state::StateDb::open(dir) {
            Err(e) if e.to_string().contains("lock") => {
                if Instant::now() >= deadline {
                    return Err(RuntimeError::StoreLocked(e.to_string()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

/// Errors the client recovers from by itself (it reconnects): a broker that went away
/// is no reason to drop a query's state.
fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown
        )
    )
}

/// How often a worker measures how far its input partitions lag behind their ends.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// How far each partition `reader` is assigned lags behind its end (of what has
/// committed, as the reader reads): the end, less the reader's position. A partition
/// the reader has read nothing from since it was assigned has no position and is left
/// out.
fn lags(reader: &BaseConsumer) -> Result<BTreeMap<(String, i32), i64>> {
    let positions = reader.position()?;
    let mut ends = TopicPartitionList::new();
    for e in positions.elements() {
        ends.add_partition_offset(e.topic(), e.partition(), Offset::End)?;
    }
    if ends.count() == 0 {
        return Ok(BTreeMap::new());
    }
    // A timestamp of -1 asks for the end, every partition in one request; briefly, as
    // the worker's commits wait meanwhile.
    let ends = reader.offsets_for_times(ends, Duration::from_secs(1))?;
    let mut lags = BTreeMap::new();
    for e in positions.elements() {
        if let (Offset::Offset(at), Some(Offset::Offset(end))) = (
            e.offset(),
            ends.find_partition(e.topic(), e.partition())
                .map(|x| x.offset()),
        ) {
            lags.insert((e.topic().to_string(), e.partition()), (end - at).max(0));
        }
    }
    Ok(lags)
}

/// Assigns the reader the partitions of the tasks: a partition it was reading goes on
/// from where it was, a new one from the group's committed offset.
fn assign(reader: &BaseConsumer, tasks: &BTreeMap<i32, Task>) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for task in tasks.values() {
        for topic in &task.topics {
            let partitions = match task.partition {
                Some(p) => vec![p],
                None => partitions_of(reader, topic)?,
            };
            for p in partitions {
                let offset = task
                    .positions
                    .get(&(topic.clone(), p))
                    .map_or(Offset::Stored, |o| Offset::Offset(*o));
                tpl.add_partition_offset(topic, p, offset)?;
            }
        }
    }
    reader.assign(&tpl)?;
    Ok(())
}

/// One task: a pipeline over one partition of each source (or all of them), with its
/// own state, and what it did since its last commit. Its records go out through its
/// worker's producer (`WorkerOutput`).
struct Task {
    /// The sources' partition it reads; None: every partition.
    partition: Option<i32>,
    pipeline: Pipeline,
    topics: Vec<String>,
    sink_topic: String,
    changelog: Option<(String, i32)>,
    /// The task's RocksDB database, when its state has stores there, and when it last
    /// wrote the stores' checkpoint.
    state_db: Option<sluice_state::StateDb>,
    last_checkpoint: Instant,
    /// The changelog's end once the state was restored, and after the last commit the
    /// end of what the worker's producer had delivered to the task's changelog
    /// partition: every entry before it is in the stores.
    stored_to: i64,
    /// The next offset to read of each partition, once the task has read from it.
    positions: BTreeMap<(String, i32), i64>,
    /// The next offsets to commit: those read since the last commit.
    offsets: BTreeMap<(String, i32), i64>,
    out: Vec<OutputRecord>,
    changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    problems: Vec<Vec<u8>>,
    cache: Option<SinkCache>,
    reads_headers: bool,
    counts_input: bool,
    counts_output: bool,
    /// The repartition topics whose committed records the task deletes, the client
    /// that deletes them (when there are any), and when it last did.
    purges: Vec<String>,
    purger: Option<KafkaAdmin>,
    last_purge: Instant,
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// How often a task's state stores are flushed and checkpointed (and at a clean stop):
/// a restart after a crash replays at most about this much of the changelog.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);

impl Task {
    /// Takes over task `index`: restores its state, and is then ready to read from the
    /// group's committed offsets. Called only when the worker has no transaction open
    /// (see `run_worker`), so a previous holder that let the task go committed all it
    /// did first.
    fn start(
        name: &str,
        part: &Part,
        index: i32,
        lease: &LeaseConsumer,
        stats: &QueryStats,
        lock_wait: Duration,
    ) -> Result<Task> {
        let Part {
            plan,
            config,
            layout,
        } = part;
        let partition = (layout.tasks > 1).then_some(index);
        let mut pipeline = Pipeline::new(plan, config.registry.clone())?;
        // Opened on the first store asked for: a query without one gets no database.
        let mut db: Option<sluice_state::StateDb> = None;
        if let Some(dir) = &config.state_dir {
            let dir = match partition {
                Some(p) => dir.join(format!("task_{p}")),
                None => dir.clone(),
            };
            pipeline.use_state_stores(
                |name| {
                    let db = match &mut db {
                        Some(db) => db,
                        None => {
                            std::fs::create_dir_all(&dir).map_err(|e| {
                                RuntimeError::State(format!("{}: {e}", dir.display()))
                            })?;
                            db.insert(open_task_db(&dir, lock_wait)?)
                        }
                    };
                    Ok(Box::new(db.storage(name)?))
                },
                (CACHED_GROUPS / layout.tasks.max(1) as usize).max(MIN_CACHED_GROUPS),
            )?;
        }
        let topics: Vec<String> = pipeline
            .source_topics()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let sink_topic = pipeline.sink_topic().to_string();
        let changelog = pipeline
            .has_changelog()
            .then(|| (config.changelog_topic(), index));
        // Where the group left each partition the task reads. Asked first: under
        // exactly-once the answer waits for offsets a transaction of the task's previous
        // holder has sent but not ended (stable offsets), so that transaction's
        // changelog records have committed or aborted before the restore reads them.
        let committed = committed_offsets(lease, &topics, partition)?;
        let mut restored_to = 0;
        if let Some((topic, p)) = &changelog {
            stats.restoring.fetch_add(1, Ordering::Relaxed);
            let restored = restore_changelog(&mut pipeline, topic, *p, db.as_ref(), config, name);
            stats.restoring.fetch_sub(1, Ordering::Relaxed);
            let (entries, took, end) = restored?;
            restored_to = end;
            stats.restored_entries.fetch_add(entries, Ordering::Relaxed);
            stats
                .restore_millis
                .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
            pipeline.record_changes();
        }
        // A stream-table join's table is loaded whole before a new query reads its
        // first stream record; a query that has run before has the table in its state.
        let lookups: Vec<usize> = (0..topics.len())
            .filter(|i| pipeline.is_lookup_table(*i))
            .collect();
        let mut positions = BTreeMap::new();
        for input in lookups {
            let topic = &topics[input];
            positions.extend(load_table(
                lease,
                &mut pipeline,
                input,
                topic,
                &committed,
                config,
                name,
            )?);
        }
        if !pipeline.joins_restored() && committed.values().any(Option::is_some) {
            return Err(RuntimeError::Plan(
                "the query's join state was kept by an earlier version of Sluice, which \
                 rebuilt it from the input topics and did not write it to the changelog; \
                 drop the query and create it again"
                    .into(),
            ));
        }
        let cache = (matches!(plan.root, Step::TableSink { .. }) && config.cache_max_bytes > 0)
            .then(|| SinkCache::new(config.cache_max_bytes));
        let purges = layout.purges.clone();
        let mut task = Task {
            partition,
            reads_headers: pipeline.reads_headers(),
            pipeline,
            topics,
            sink_topic,
            changelog,
            state_db: db,
            last_checkpoint: Instant::now(),
            stored_to: restored_to,
            // A table loaded whole is read on from where the load ended, and that
            // position commits with the first interval, whose changelog has the rows.
            offsets: positions.clone(),
            positions,
            out: Vec::new(),
            changes: Vec::new(),
            problems: Vec::new(),
            cache,
            counts_input: layout.counts_input,
            counts_output: layout.counts_output,
            purger: if purges.is_empty() {
                None
            } else {
                Some(KafkaAdmin::new(&config.bootstrap_servers)?)
            },
            purges,
            last_purge: Instant::now(),
        };
        // The restored stores are as far as the changelog's end: a crash from here on
        // replays only what follows.
        task.checkpoint(name);
        Ok(task)
    }

    /// Deletes the records of the repartition topics it reads that the task has
    /// committed (Kafka Streams' purge): they were read once, and nothing reads them
    /// again. A failure only waits for the next time.
    fn purge(&self, name: &str) {
        let Some(admin) = &self.purger else {
            return;
        };
        let before: Vec<(String, i32, i64)> = self
            .positions
            .iter()
            .filter(|((topic, _), _)| self.purges.contains(topic))
            .map(|((topic, p), o)| (topic.clone(), *p, *o))
            .collect();
        if before.is_empty() {
            return;
        }
        if let Err(e) = block_on(admin.delete_records_before(&before)) {
            tracing::warn!(
                query = name,
                "cannot delete consumed repartition records: {e}"
            );
        }
    }

    /// Records, in the task's state directory, how far into the changelog its stores
    /// are (`stored_to`), so that the next start replays only what follows. Valid at
    /// any time, even after a failed commit: the stores hold every changelog entry up
    /// to the last commit, and nothing the task sent after it counts. A failure only
    /// means a longer restore.
    fn checkpoint(&mut self, name: &str) {
        self.last_checkpoint = Instant::now();
        let (Some(db), Some((topic, partition))) = (&self.state_db, &self.changelog) else {
            return;
        };
        let checkpoint = sluice_state::Checkpoint {
            topic: topic.clone(),
            partition: *partition,
            offset: self.stored_to,
        };
        if let Err(e) = db.write_checkpoint(&checkpoint) {
            tracing::warn!(query = name, "cannot write the state's checkpoint: {e}");
        }
    }

    /// Hands a record to the pipeline; one that does not decode is counted and reported
    /// to the processing log.
    fn read(
        &mut self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        name: &str,
        config: &QueryConfig,
        stats: &QueryStats,
    ) -> Result<()> {
        if self.counts_input {
            stats.records_in.fetch_add(1, Ordering::Relaxed);
        }
        let at = (msg.topic().to_string(), msg.partition());
        self.positions.insert(at.clone(), msg.offset() + 1);
        self.offsets.insert(at, msg.offset() + 1);
        let Some(input) = self.topics.iter().position(|t| t == msg.topic()) else {
            return Ok(());
        };
        let headers = if self.reads_headers {
            headers_of(msg)
        } else {
            Vec::new()
        };
        let record = source_record(msg, &headers);
        let Err(DecodeFailure {
            partition,
            offset,
            reason,
            unavailable,
        }) = self.pipeline.push(input, &record)
        else {
            return Ok(());
        };
        let topic = &self.topics[input];
        if unavailable {
            // Nothing of this interval is committed: the query restarts from its last
            // commit once the registry answers again.
            return Err(RuntimeError::Unavailable(format!(
                "{topic} partition {partition} offset {offset}: {reason}"
            )));
        }
        stats.decode_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(query = name, %topic, partition, offset, "skipping a record: {reason}");
        if config.processing_log_topic.is_some() {
            let target = if reason.contains("key") {
                "key"
            } else {
                "value"
            };
            let bytes = if target == "key" {
                msg.key()
            } else {
                msg.payload()
            };
            let problem = ProcessingProblem {
                query: name,
                topic,
                partition,
                offset,
                target,
                message: &reason,
                bytes: bytes.filter(|_| config.log_rows),
            };
            self.problems.push(problem.to_json());
        }
        Ok(())
    }

    /// Runs what was read through the pipeline and sends the results; at a commit, also
    /// the state's changes, and adds the offsets read to those the worker commits (it
    /// then calls `committed`).
    fn process(
        &mut self,
        commit_due: bool,
        name: &str,
        output: &mut WorkerOutput,
        offsets: &mut BTreeMap<(String, i32), i64>,
        config: &QueryConfig,
        stats: &QueryStats,
    ) -> Result<()> {
        let pipeline = &mut self.pipeline;
        let errors_before = pipeline.expression_errors;
        let invalid_before = pipeline.invalid_timestamps;
        pipeline.flush(&mut self.out)?;
        let invalid = pipeline.invalid_timestamps - invalid_before;
        if invalid > 0 {
            stats.decode_errors.fetch_add(invalid, Ordering::Relaxed);
            tracing::warn!(
                query = name,
                records = invalid,
                "skipping records whose event-time column is NULL or negative"
            );
        }
        let new_errors = pipeline.expression_errors - errors_before;
        if new_errors > 0 {
            stats
                .expression_errors
                .fetch_add(new_errors, Ordering::Relaxed);
            tracing::warn!(
                query = name,
                rows = new_errors,
                "expressions failed for some rows; their results are NULL"
            );
        }
        // A table's rows wait in the cache, which keeps the latest per key, until the
        // commit (or until it is full).
        if let Some(cache) = &mut self.cache {
            for r in self.out.drain(..) {
                cache.put(r);
            }
            if commit_due || cache.is_full() {
                cache.drain_into(&mut self.out);
            }
        }
        if let Some(topic) = &config.processing_log_topic {
            for p in self.problems.drain(..) {
                output.send(BaseRecord::to(topic).payload(p.as_slice()))?;
            }
        }
        for r in self.out.drain(..) {
            let mut record = BaseRecord::to(&self.sink_topic).timestamp(r.timestamp);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            if !r.headers.is_empty() {
                record = record.headers(owned_headers(&r.headers));
            }
            output.send(record)?;
            if self.counts_output {
                stats.records_out.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !commit_due {
            return Ok(());
        }
        // The state changes of the interval go to the changelog with its outputs.
        self.pipeline.take_changes(&mut self.changes)?;
        if let Some((topic, partition)) = &self.changelog {
            let now = now_millis();
            for (k, v) in &self.changes {
                let mut record = BaseRecord::to(topic)
                    .partition(*partition)
                    .key(k.as_slice())
                    .timestamp(now);
                if let Some(v) = v {
                    record = record.payload(v.as_slice());
                }
                output.send(record)?;
            }
        }
        offsets.append(&mut self.offsets);
        Ok(())
    }

    /// After the worker's commit: the interval's state changes, now in the changelog,
    /// reach the local stores (only now that the changelog holds them); a checkpoint and
    /// a purge follow when due.
    fn committed(&mut self, name: &str, config: &QueryConfig, output: &WorkerOutput) -> Result<()> {
        self.pipeline.commit_state(&self.changes)?;
        self.changes.clear();
        // The commit flushed the producer: all the task sent to its changelog is
        // delivered, committed, and now in its stores.
        if let Some((_, partition)) = &self.changelog {
            let delivered = output.producer.context().changelog_end(*partition);
            self.stored_to = self.stored_to.max(delivered);
        }
        if self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            self.checkpoint(name);
        }
        if self.last_purge.elapsed() >= config.purge_interval {
            self.last_purge = Instant::now();
            self.purge(name);
        }
        Ok(())
    }
}

/// A worker's producer, shared by its tasks: under exactly-once one transaction at a
/// time carries every task's outputs, changelog records and offsets (Kafka Streams'
/// exactly_once_v2: a producer per thread, not per task).
struct WorkerOutput {
    producer: QueryProducer,
    exactly_once: bool,
    /// Whether a transaction is open: something was sent since the last commit.
    open: bool,
}

impl WorkerOutput {
    /// The producer of worker `slot` of the query on this server. Under exactly-once
    /// its transactional id is the worker's and the server's (`server_instance`), so the
    /// same worker of the same server, started again after a crash, fences its previous
    /// producer and aborts the transaction it left open at once.
    fn new(config: &QueryConfig, slot: usize) -> Result<WorkerOutput> {
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("client.id", format!("{}-producer", config.group_id))
            // Java's default partitioner, so keys land where ksqlDB would put them.
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            // Kafka Streams' default: records go out in batches between commits, which
            // flush them anyway; fewer, larger requests for the broker.
            .set("linger.ms", "100");
        if config.exactly_once {
            producer_config
                .set(
                    "transactional.id",
                    format!("{}-{}-{slot}", config.group_id, server_instance(config)),
                )
                // Kafka Streams' value under exactly-once: a transaction that a server
                // which crashed for good left open holds up the readers of its
                // partitions (the next holders of its tasks) this long at most.
                .set("transaction.timeout.ms", "10000");
        }
        let producer: QueryProducer = producer_config.create_with_context(DeliveryTracker {
            changelog: config.changelog_topic(),
            ..DeliveryTracker::default()
        })?;
        if config.exactly_once {
            producer.init_transactions(TIMEOUT)?;
        }
        Ok(WorkerOutput {
            producer,
            exactly_once: config.exactly_once,
            open: false,
        })
    }

    fn send(&mut self, record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
        if !self.open {
            if self.exactly_once {
                self.producer.begin_transaction()?;
            }
            self.open = true;
        }
        send(&self.producer, record)
    }

    /// Commits what was sent with the offsets read: in one transaction under
    /// exactly-once, else by committing the offsets once everything is delivered. A
    /// failed commit leaves no transaction open.
    fn commit(
        &mut self,
        lease: &LeaseConsumer,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<()> {
        if !self.open && offsets.is_empty() {
            return Ok(());
        }
        if self.exactly_once && !self.open {
            self.producer.begin_transaction()?;
        }
        self.open = false;
        if self.exactly_once {
            commit_transaction(&self.producer, lease, offsets)
        } else {
            flush_producer(&self.producer)?;
            commit_offsets(lease, offsets)
        }
    }

    /// Whether the worker can go on after a failed commit by starting its tasks again
    /// from the last commit: the producer still works (it was not fenced by another
    /// holder of its id, and no delivery failed for good).
    fn can_go_on(&self, e: &RuntimeError) -> bool {
        match e {
            RuntimeError::Kafka(KafkaError::Transaction(e)) => !e.is_fatal(),
            RuntimeError::Commit { fatal, .. } => !fatal,
            RuntimeError::Kafka(KafkaError::ConsumerCommit(_)) => true,
            _ => false,
        }
    }

    /// Drops what was sent since the last commit.
    fn abort(&mut self) {
        if self.open && self.exactly_once {
            let _ = self.producer.abort_transaction(TIMEOUT);
        }
        self.open = false;
    }
}

/// The rows of a table sink written since the last commit, the latest per key (Kafka
/// Streams' record cache): a key updated many times in an interval is written once.
struct SinkCache {
    max_bytes: usize,
    bytes: usize,
    /// Rows in the order their keys first appeared in the interval.
    rows: Vec<OutputRecord>,
    index: HashMap<Vec<u8>, usize>,
}

impl SinkCache {
    fn new(max_bytes: usize) -> SinkCache {
        SinkCache {
            max_bytes,
            bytes: 0,
            rows: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn size(r: &OutputRecord) -> usize {
        r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + 32
    }

    fn put(&mut self, r: OutputRecord) {
        self.bytes += Self::size(&r);
        let Some(key) = r.key.clone() else {
            self.rows.push(r);
            return;
        };
        match self.index.get(&key) {
            Some(&i) => {
                self.bytes -= Self::size(&self.rows[i]);
                self.rows[i] = r;
            }
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push(r);
            }
        }
    }

    fn is_full(&self) -> bool {
        self.bytes >= self.max_bytes
    }

    fn drain_into(&mut self, out: &mut Vec<OutputRecord>) {
        out.append(&mut self.rows);
        self.index.clear();
        self.bytes = 0;
    }
}

/// A record the query skipped, as the processing log reports it (ksqlDB's processing
/// log schema, with the record's partition and offset added).
struct ProcessingProblem<'a> {
    query: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// "key" or "value": the part that could not be read.
    target: &'a str,
    message: &'a str,
    /// The part's bytes, when `processing.log.include.rows` is set.
    bytes: Option<&'a [u8]>,
}

impl ProcessingProblem<'_> {
    fn to_json(&self) -> Vec<u8> {
        let record = self
            .bytes
            .map(crate::codec::encode::base64_encode)
            .map_or(serde_json::Value::Null, serde_json::Value::String);
        serde_json::json!({
            "level": "ERROR",
            "logger": format!("processing.{}.KsqlTopic.Source.deserializer", self.query),
            "time": now_millis(),
            "message": {
                "type": 0,
                "deserializationError": {
                    "target": self.target,
                    "errorMessage": self.message,
                    "recordB64": record,
                    "cause": [],
                    "topic": self.topic,
                    "partition": self.partition,
                    "offset": self.offset,
                },
                "recordProcessingError": null,
                "productionError": null,
                "serializationError": null,
                "kafkaStreamsThreadError": null,
            },
        })
        .to_string()
        .into_bytes()
    }
}

/// Sends a record, waiting while the producer's queue is full.
fn send(producer: &QueryProducer, record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    let mut pending = record;
    loop {
        match producer.send(pending) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                pending = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Commits the interval's outputs, changelog records and consumed offsets in one
/// transaction. On failure the transaction is aborted (when it still can be) and the
/// caller starts again from the last commit, state restored from the changelog.
fn commit_transaction(
    producer: &QueryProducer,
    consumer: &LeaseConsumer,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(60);
    let result = (|| -> Result<()> {
        if !offsets.is_empty() {
            let metadata = consumer.group_metadata().ok_or_else(|| {
                RuntimeError::Unavailable("the consumer has no group metadata".into())
            })?;
            producer.send_offsets_to_transaction(&offset_list(offsets)?, &metadata, TIMEOUT)?;
        }
        end_transaction(producer, TIMEOUT)
    })();
    if result.is_err() {
        let _ = producer.abort_transaction(TIMEOUT);
    }
    result
}

/// Ends the open transaction with a commit. Not rust-rdkafka's `commit_transaction`: it
/// flushes first in a loop that waits in whole 100 ms steps (it polls the event queue,
/// which the producer's own thread serves), so every commit with records still in flight
/// took 100 to 200 ms. librdkafka's commit flushes by itself and wakes as soon as the
/// last delivery report is served.
fn end_transaction(producer: &QueryProducer, timeout: Duration) -> Result<()> {
    use rdkafka::bindings as rd;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the handle is the producer's own, alive for the call; an error returned is
    // read, then destroyed, once.
    unsafe {
        let error = rd::rd_kafka_commit_transaction(producer.client().native_ptr(), timeout_ms);
        if error.is_null() {
            return Ok(());
        }
        let fatal = rd::rd_kafka_error_is_fatal(error) != 0;
        let message = std::ffi::CStr::from_ptr(rd::rd_kafka_error_string(error))
            .to_string_lossy()
            .into_owned();
        rd::rd_kafka_error_destroy(error);
        Err(RuntimeError::Commit { fatal, message })
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn partitions_of<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| RuntimeError::Unavailable(format!("the topic {topic} does not exist")))?;
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// A consumed record as the pipeline reads it; `headers` are the message's, collected by
/// `headers_of` when the pipeline reads headers.
pub(crate) fn source_record<'m>(
    msg: &'m rdkafka::message::BorrowedMessage<'_>,
    headers: &'m [Header],
) -> SourceRecord<'m> {
    SourceRecord {
        key: msg.key(),
        value: msg.payload(),
        headers,
        timestamp: msg.timestamp().to_millis().unwrap_or(0),
        partition: msg.partition(),
        offset: msg.offset(),
    }
}

/// Headers to send with a record.
fn owned_headers(headers: &[Header]) -> rdkafka::message::OwnedHeaders {
    headers.iter().fold(
        rdkafka::message::OwnedHeaders::new_with_capacity(headers.len()),
        |all, (key, value)| {
            all.insert(rdkafka::message::Header {
                key,
                value: value.as_deref(),
            })
        },
    )
}

/// A message's headers, in order.
pub(crate) fn headers_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> Vec<Header> {
    use rdkafka::message::Headers;
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads partitions of a topic from offset `from` (0: their start) up to the given
/// offsets (exclusive), committed records only, handing each record to `each`. Returns
/// how many it read.
fn read_up_to(
    config: &QueryConfig,
    topic: &str,
    from: i64,
    mut ends: BTreeMap<i32, i64>,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<()>,
) -> Result<u64> {
    ends.retain(|_, end| *end > from);
    if ends.is_empty() {
        return Ok(0);
    }
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        // Assigned partitions only; this group never commits.
        .set("group.id", format!("{}-restore", config.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in ends.keys() {
        let start = if from > 0 {
            Offset::Offset(from)
        } else {
            Offset::Beginning
        };
        assignment.add_partition_offset(topic, *p, start)?;
    }
    reader.assign(&assignment)?;
    let mut read = 0u64;
    while !ends.is_empty() {
        match reader.poll(Duration::from_millis(200)) {
            Some(msg) => {
                let msg = msg?;
                let Some(end) = ends.get(&msg.partition()).copied() else {
                    continue;
                };
                if msg.offset() < end {
                    each(&msg)?;
                    read += 1;
                }
                if msg.offset() + 1 >= end {
                    ends.remove(&msg.partition());
                }
            }
            // Transaction markers and compacted records take offsets no record is
            // delivered at: a partition whose position passed its end is done.
            None => {
                let positions = reader.position()?;
                ends.retain(|p, end| {
                    match positions.find_partition(topic, *p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o < *end,
                        _ => true,
                    }
                });
            }
        }
    }
    Ok(read)
}

/// Rebuilds a task's changelogged state from its partition of the changelog topic
/// (which `plan_layout` created), returning the entries read, the time taken and the
/// changelog's end. It reads to the partition's high watermark, committed records
/// only: a transaction the task's previous holder left open holds the read back until
/// it ends (fenced by that worker's next start, or aborted by its timeout), so what is
/// read is all that committed.
///
/// State stores kept by an earlier run of the task on this server, with a checkpoint of
/// how far into the changelog they are, are kept, and only the changelog's tail is
/// replayed onto them (state in memory is still read from the start). Otherwise they
/// are rebuilt from the start, with the checkpoint removed first: a crash mid-way must
/// not leave half-built stores that a checkpoint vouches for. The task writes the new
/// checkpoint once it is built (`Task::checkpoint`).
fn restore_changelog(
    pipeline: &mut Pipeline,
    topic: &str,
    partition: i32,
    db: Option<&sluice_state::StateDb>,
    config: &QueryConfig,
    name: &str,
) -> Result<(u64, Duration, i64)> {
    let started = Instant::now();
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .create()?;
    let (start, end) = probe.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    let stored = pipeline.stored_state();
    let checkpoint = db
        .and_then(|db| db.checkpoint())
        .filter(|_| stored.iter().any(|s| *s));
    let from = match checkpoint {
        Some(c)
            if c.topic == topic
                && c.partition == partition
                && (start..=end).contains(&c.offset) =>
        {
            Some(c.offset)
        }
        Some(c) => {
            tracing::warn!(
                query = name,
                topic,
                partition,
                checkpoint = ?c,
                low = start,
                high = end,
                "the state's checkpoint does not match its changelog; restoring from the start"
            );
            None
        }
        None => None,
    };
    if from.is_none()
        && let Some(db) = db
    {
        db.remove_checkpoint()?;
    }
    // What a join's replay pushed through to the aggregation is not its state.
    pipeline.clear_changelogged(from.is_some())?;
    let skip_before = from.unwrap_or(0);
    // With every piece of state in a store, the changelog's head is not even read.
    let read_from = if stored.iter().all(|s| *s) {
        skip_before
    } else {
        0
    };
    let entries = read_up_to(
        config,
        topic,
        read_from,
        BTreeMap::from([(partition, end)]),
        |msg| {
            let key = msg.key().unwrap_or_default();
            let in_store = key
                .first()
                .is_some_and(|n| stored.get(*n as usize) == Some(&true));
            if msg.offset() < skip_before && in_store {
                return Ok(());
            }
            pipeline.restore_change(key, msg.payload())
        },
    )?;
    pipeline.finish_restore()?;
    tracing::info!(
        query = name,
        topic,
        partition,
        entries,
        from = read_from,
        ms = started.elapsed().as_millis() as u64,
        "restored state from the changelog"
    );
    Ok((entries, started.elapsed(), end))
}

/// Runs a future to completion on this thread (rdkafka's admin futures are completed
/// by its own background thread, so no async runtime is needed).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => return v,
            std::task::Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

/// Each partition the task reads (of every topic, or partition `only` of each), with
/// the offset the query's group committed there, if any.
fn committed_offsets(
    group: &LeaseConsumer,
    topics: &[String],
    only: Option<i32>,
) -> Result<BTreeMap<(String, i32), Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let partitions = match only {
            Some(p) => vec![p],
            None => partitions_of(group, topic)?,
        };
        for p in partitions {
            tpl.add_partition(topic, p);
        }
    }
    let committed = group.committed_offsets(tpl, TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_string(), e.partition()), offset)
        })
        .collect())
}

/// Loads the table side of a stream-table join for a new query: each partition of its
/// topic (the task's partition) that the group has no offset for (`committed`) is read
/// to its end, through the pipeline with the outputs dropped (a table's changes emit
/// nothing in such a join, so nothing is lost). Returns where the loads ended, which
/// the task reads on from and commits with its first interval. Kafka Streams gets the same effect by
/// ordering records by time, which Sluice does not do yet.
fn load_table(
    group: &LeaseConsumer,
    pipeline: &mut Pipeline,
    input: usize,
    topic: &str,
    committed: &BTreeMap<(String, i32), Option<i64>>,
    config: &QueryConfig,
    name: &str,
) -> Result<BTreeMap<(String, i32), i64>> {
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for ((t, p), offset) in committed {
        if t == topic && offset.is_none() {
            ends.insert(*p, group.fetch_watermarks(topic, *p, TIMEOUT)?.1);
        }
    }
    let loaded: BTreeMap<(String, i32), i64> = ends
        .iter()
        .map(|(p, end)| ((topic.to_string(), *p), *end))
        .collect();
    if ends.is_empty() {
        return Ok(loaded);
    }
    let started = Instant::now();
    let mut dropped = Vec::new();
    let reads_headers = pipeline.reads_headers();
    let read = read_up_to(config, topic, 0, ends, |msg| {
        // A record that does not decode is skipped (and logged when the query reads
        // it past the load: it does not); it changes no state.
        let headers = if reads_headers {
            headers_of(msg)
        } else {
            Vec::new()
        };
        let _ = pipeline.push(input, &source_record(msg, &headers));
        if pipeline.pending() >= 2000 {
            pipeline.flush(&mut dropped)?;
            dropped.clear();
        }
        Ok(())
    })?;
    pipeline.flush(&mut dropped)?;
    if read > 0 {
        tracing::info!(
            query = name,
            topic,
            records = read,
            ms = started.elapsed().as_millis() as u64,
            "loaded a joined table"
        );
    }
    Ok(loaded)
}

/// Waits until every record produced so far is delivered; a failed delivery fails the
/// interval, which then restarts from the last commit.
fn flush_producer(producer: &QueryProducer) -> Result<()> {
    producer.flush(Duration::from_secs(60))?;
    let ctx = producer.context();
    if ctx.failed.load(Ordering::SeqCst) > 0 {
        let e = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(RuntimeError::Unavailable(format!(
            "records could not be delivered: {e}"
        )));
    }
    Ok(())
}

/// Commits the next offsets to read, once everything before them was delivered.
fn commit_offsets(consumer: &LeaseConsumer, offsets: &BTreeMap<(String, i32), i64>) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    consumer.commit(&offset_list(offsets)?, CommitMode::Sync)?;
    Ok(())
}

fn offset_list(offsets: &BTreeMap<(String, i32), i64>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    Ok(tpl)
}

/// Topic administration over an rdkafka admin client.
pub struct KafkaAdmin {
    admin: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

impl KafkaAdmin {
    pub fn new(bootstrap_servers: &str) -> Result<KafkaAdmin> {
        let admin = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .create()?;
        Ok(KafkaAdmin {
            admin,
            timeout: Duration::from_secs(30),
        })
    }

    /// Partition count of a topic, or None when it does not exist. Blocking.
    pub fn partitions(&self, topic: &str) -> Result<Option<u32>> {
        let md = self
            .admin
            .inner()
            .fetch_metadata(Some(topic), self.timeout)?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error() {
            None => Ok(Some(t.partitions().len() as u32)),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
            Some(e) => Err(RuntimeError::Kafka(KafkaError::MetadataFetch(e.into()))),
        }
    }

    /// All topic names. Blocking.
    pub fn topics(&self) -> Result<Vec<(String, u32)>> {
        let md = self.admin.inner().fetch_metadata(None, self.timeout)?;
        let mut names: Vec<(String, u32)> = md
            .topics()
            .iter()
            .map(|t| (t.name().to_string(), t.partitions().len() as u32))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Creates a topic; succeeds when it already exists.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        replicas: Option<i16>,
        config: &[(&str, &str)],
    ) -> Result<()> {
        let mut t = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(replicas.map(i32::from).unwrap_or(-1)),
        );
        for (k, v) in config {
            t = t.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        for r in self.admin.create_topics([&t], &opts).await? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(RuntimeError::Kafka(KafkaError::AdminOp(code)));
                }
            }
        }
        // The controller has created it, but a broker's metadata may not show it for a
        // moment: the next statement, which looks the topic up, would not find it.
        let deadline = Instant::now() + self.timeout;
        while self.partitions(topic)?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Deletes the records of each (topic, partition) before the offset given.
    pub async fn delete_records_before(&self, offsets: &[(String, i32, i64)]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, p, offset) in offsets {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
        }
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        self.admin.delete_records(&tpl, &opts).await?;
        Ok(())
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        for r in self.admin.delete_topics(&[topic], &opts).await? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => return Err(RuntimeError::Kafka(KafkaError::AdminOp(code))),
            }
        }
        Ok(())
    }

    /// Deletes a consumer group (a query's, once it is terminated).
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        for r in self.admin.delete_groups(&[group], &opts).await? {
            if let Err((_, code)) = r
                && code != RDKafkaErrorCode::GroupIdNotFound
                && code != RDKafkaErrorCode::NonEmptyGroup
            {
                return Err(RuntimeError::Kafka(KafkaError::AdminOp(code)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: Option<&str>, ts: i64) -> OutputRecord {
        OutputRecord {
            key: Some(key.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            timestamp: ts,
            headers: Vec::new(),
        }
    }

    #[test]
    fn the_cache_writes_the_latest_row_per_key_in_first_seen_order() {
        let mut cache = SinkCache::new(1 << 20);
        cache.put(row("a", Some("1"), 1));
        cache.put(row("b", Some("1"), 2));
        cache.put(row("a", Some("2"), 3));
        cache.put(row("b", None, 4));
        assert!(!cache.is_full());
        let mut out = Vec::new();
        cache.drain_into(&mut out);
        assert_eq!(out, vec![row("a", Some("2"), 3), row("b", None, 4)]);
        cache.put(row("a", Some("3"), 5));
        out.clear();
        cache.drain_into(&mut out);
        assert_eq!(out, vec![row("a", Some("3"), 5)]);
    }

    #[test]
    fn the_cache_is_full_at_its_size() {
        let mut cache = SinkCache::new(100);
        for i in 0..3 {
            cache.put(row(&format!("k{i}"), Some("0123456789"), i));
        }
        assert!(cache.is_full());
        // Replacing a key's row does not grow it.
        let mut small = SinkCache::new(100);
        for i in 0..10 {
            small.put(row("k", Some("0123456789"), i));
        }
        assert!(!small.is_full());
    }
}
