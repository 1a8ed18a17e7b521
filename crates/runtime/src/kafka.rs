//! Running a pipeline against Kafka, and the topic administration the engine needs.
//!
//! A join's state is rebuilt on start from its input topics (see `restore_input`).
//!
//! Guarantee in this version: at-least-once. Each query thread polls its consumer,
//! runs the records through the pipeline, produces the results, and every commit
//! interval flushes the producer and only then commits the consumed offsets. A failure
//! anywhere (a delivery error, a broker gone) drops the consumer and producer and starts
//! again from the last committed offsets, with backoff.

use crate::error::{Result, RuntimeError};
use crate::pipeline::{DecodeFailure, OutputRecord, Pipeline, SourceRecord};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_plan::QueryPlan;
use std::collections::BTreeMap;
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
    pub last_error: Mutex<Option<String>>,
}

/// A persistent query running on its own thread.
pub struct RunningQuery {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<QueryStats>,
}

impl RunningQuery {
    /// Starts the query. The plan is compiled first, so a plan this build cannot run is
    /// refused here rather than on its thread.
    pub fn start(name: &str, plan: &QueryPlan, config: QueryConfig) -> Result<RunningQuery> {
        // Fail fast on a plan this build cannot run.
        Pipeline::new(plan)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(QueryStats::default());
        let thread = {
            let (stop, stats, plan) = (stop.clone(), stats.clone(), plan.clone());
            let name = name.to_string();
            std::thread::Builder::new()
                .name(format!("query-{name}"))
                .spawn(move || run_with_retries(&name, &plan, &config, &stop, &stats))
                .map_err(|e| RuntimeError::Plan(format!("cannot start a thread: {e}")))?
        };
        Ok(RunningQuery {
            stop,
            thread: Some(thread),
            stats,
        })
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
}

impl Drop for RunningQuery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run_with_retries(
    name: &str,
    plan: &QueryPlan,
    config: &QueryConfig,
    stop: &AtomicBool,
    stats: &QueryStats,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        match run_once(name, plan, config, stop, stats) {
            Ok(()) => return,
            Err(e) => {
                let n = stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    query = name,
                    attempt = n,
                    "query failed, restarting from the last commit: {e}"
                );
                *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                let deadline = Instant::now() + backoff;
                while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Counts failed deliveries so the loop never commits offsets past a lost record.
#[derive(Default)]
struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

fn run_once(
    name: &str,
    plan: &QueryPlan,
    config: &QueryConfig,
    stop: &AtomicBool,
    stats: &QueryStats,
) -> Result<()> {
    let mut pipeline = Pipeline::new(plan)?;
    let topics: Vec<String> = pipeline
        .source_topics()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let sink_topic = pipeline.sink_topic().to_string();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("client.id", format!("{}-consumer", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &config.auto_offset_reset)
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        // A member that dies without leaving (kill -9) holds its partitions until its
        // session times out: keep that short so a restarted server resumes promptly.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000")
        .create()?;
    let tracker = DeliveryTracker::default();
    let producer: ThreadedProducer<DeliveryTracker> = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", format!("{}-producer", config.group_id))
        // Java's default partitioner, so keys land where ksqlDB would put them.
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(tracker)?;
    // A join keeps rows of its inputs (a table's current rows, a window's recent stream
    // rows): each such input's topic is read again up to where the group committed,
    // outputs dropped, before anything new is processed.
    for input in pipeline.restore_inputs() {
        restore_input(
            &consumer,
            &mut pipeline,
            input,
            &topics[input],
            config,
            name,
        )?;
    }
    let subscribed: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&subscribed)?;
    tracing::info!(query = name, sources = ?topics, sink = %sink_topic, "query started");

    let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut out: Vec<OutputRecord> = Vec::new();
    let mut healthy_since: Option<Instant> = None;
    const MAX_BATCH: usize = 2000;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping {
            let mut timeout = Duration::from_millis(50);
            while pipeline.pending() < MAX_BATCH {
                let Some(msg) = consumer.poll(timeout) else {
                    break;
                };
                timeout = Duration::ZERO;
                let msg = msg?;
                stats.records_in.fetch_add(1, Ordering::Relaxed);
                offsets.insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
                let Some(input) = topics.iter().position(|t| t == msg.topic()) else {
                    continue;
                };
                let record = source_record(&msg);
                if let Err(DecodeFailure {
                    partition,
                    offset,
                    reason,
                }) = pipeline.push(input, &record)
                {
                    stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(query = name, topic = %topics[input], partition, offset, "skipping a record: {reason}");
                }
            }
        }
        let errors_before = pipeline.expression_errors;
        let invalid_before = pipeline.invalid_timestamps;
        pipeline.flush(&mut out)?;
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
        for r in out.drain(..) {
            let mut record = BaseRecord::to(&sink_topic).timestamp(r.timestamp);
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(v) = &r.value {
                record = record.payload(v);
            }
            let mut pending = record;
            loop {
                match producer.send(pending) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        pending = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            stats.records_out.fetch_add(1, Ordering::Relaxed);
        }
        if stopping || last_commit.elapsed() >= config.commit_interval {
            flush_producer(&producer)?;
            // A commit can fail while the group rebalances (a member died or joined).
            // That is no reason to drop the consumer, which would only cause another
            // rebalance: keep the offsets and try again at the next interval.
            match commit_offsets(&consumer, &offsets) {
                Ok(()) => offsets.clear(),
                Err(e) => {
                    tracing::info!(
                        query = name,
                        "offsets not committed yet, retrying at the next interval: {e}"
                    );
                    // Partitions that moved to another member are theirs to commit now.
                    if let Ok(assigned) = consumer.assignment() {
                        offsets.retain(|(t, p), _| assigned.find_partition(t, *p).is_some());
                    }
                }
            }
            last_commit = Instant::now();
            // A query that has committed for a while after a restart is healthy again.
            match healthy_since {
                None => healthy_since = Some(Instant::now()),
                Some(t) if t.elapsed() > Duration::from_secs(5) => {
                    stats.restarts.store(0, Ordering::Relaxed);
                }
                Some(_) => {}
            }
        }
        if stopping {
            consumer.unsubscribe();
            tracing::info!(query = name, "query stopped");
            return Ok(());
        }
    }
}

fn source_record<'m>(msg: &'m rdkafka::message::BorrowedMessage<'_>) -> SourceRecord<'m> {
    SourceRecord {
        key: msg.key(),
        value: msg.payload(),
        timestamp: msg.timestamp().to_millis().unwrap_or(0),
        partition: msg.partition(),
        offset: msg.offset(),
    }
}

/// Reads an input's topic from the start up to the offsets the query's group will
/// resume from (or, with none committed, up to where it will start), running the
/// records through the pipeline with the outputs dropped: the join's state for that
/// table is then as it was when those offsets were committed.
fn restore_input(
    group: &BaseConsumer,
    pipeline: &mut Pipeline,
    input: usize,
    topic: &str,
    config: &QueryConfig,
    name: &str,
) -> Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(30);
    let metadata = group.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = group.committed_offsets(tpl, TIMEOUT)?;
    // A stream-table join's table is loaded whole before the query first reads its
    // stream (its changes emit nothing, so nothing is lost by reading them here): the
    // group then starts the table where the load ended.
    let bootstrap = pipeline.is_lookup_table(input);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut loaded = TopicPartitionList::new();
    for p in &partitions {
        let end = match committed.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ if bootstrap => {
                let end = group.fetch_watermarks(topic, *p, TIMEOUT)?.1;
                loaded.add_partition_offset(topic, *p, Offset::Offset(end))?;
                end
            }
            _ if config.auto_offset_reset == "earliest" => 0,
            _ => group.fetch_watermarks(topic, *p, TIMEOUT)?.1,
        };
        if end > 0 {
            ends.insert(*p, end);
        }
    }
    if ends.is_empty() {
        return Ok(());
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
        assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    reader.assign(&assignment)?;
    let started = Instant::now();
    let mut restored = 0u64;
    let mut dropped = Vec::new();
    while !ends.is_empty() {
        match reader.poll(Duration::from_millis(200)) {
            Some(msg) => {
                let msg = msg?;
                let Some(end) = ends.get(&msg.partition()).copied() else {
                    continue;
                };
                if msg.offset() < end {
                    let record = source_record(&msg);
                    // A record that does not decode was skipped (and logged) when it
                    // was first read; it changes no state now either.
                    let _ = pipeline.push(input, &record);
                    restored += 1;
                }
                if msg.offset() + 1 >= end {
                    ends.remove(&msg.partition());
                }
                if pipeline.pending() >= 2000 {
                    pipeline.flush(&mut dropped)?;
                    dropped.clear();
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
    pipeline.flush(&mut dropped)?;
    if loaded.count() > 0 {
        group.commit(&loaded, CommitMode::Sync)?;
    }
    tracing::info!(
        query = name,
        topic,
        records = restored,
        ms = started.elapsed().as_millis() as u64,
        "restored a join's rows from its input topic"
    );
    Ok(())
}

/// Waits until every record produced so far is delivered; a failed delivery fails the
/// interval, which then restarts from the last commit.
fn flush_producer(producer: &ThreadedProducer<DeliveryTracker>) -> Result<()> {
    producer.flush(Duration::from_secs(60))?;
    let ctx = producer.context();
    if ctx.failed.load(Ordering::SeqCst) > 0 {
        let e = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(RuntimeError::Plan(format!(
            "records could not be delivered: {e}"
        )));
    }
    Ok(())
}

/// Commits the next offsets to read, once everything before them was delivered.
fn commit_offsets(consumer: &BaseConsumer, offsets: &BTreeMap<(String, i32), i64>) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
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
