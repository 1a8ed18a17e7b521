//! Push and pull queries: a plan run over Kafka for one client, its rows handed out as
//! they come.
//!
//! A push query is transient: it reads every partition of its sources with a consumer
//! that is assigned them (from the start or the end, by `auto.offset.reset`), commits
//! nothing and joins no group, so it leaves nothing behind. A stream-table join's table
//! is always read from its start, so that lookups find the rows written before the
//! query began. It stops when its client goes away (the channel closes), at its LIMIT,
//! or when it is closed.
//!
//! A pull query runs the same way from the start of its sources up to their ends as of
//! its start, then stops: a stream's rows all come out; a table's come out once the
//! scan is done, the latest row of each key that is not deleted (the table as of now).

use crate::codec::registered::Registry;
use crate::driver::{Driver, TapEvent};
use crate::error::{Result, RuntimeError};
use crate::pipeline::{OutputRecord, Pipeline, SourceRecord, is_row_deletion};
use crate::view::TableView;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_plan::QueryPlan;
use sluice_state::ViewRow;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::Sender;

#[derive(Clone, Debug)]
pub struct PushConfig {
    pub bootstrap_servers: String,
    /// `earliest` or `latest`.
    pub auto_offset_reset: String,
    pub limit: Option<u64>,
    pub mode: Mode,
    /// The indexes of the row's columns the client sees (None: all); the others are
    /// hidden columns the query needs, such as a table's key for a scan's dedup.
    pub shown: Option<Vec<usize>>,
    /// Where AVRO sources find their writers' schemas.
    pub registry: Option<Registry>,
    /// A pull query on a table with a view reads the view, not the topic.
    pub view: Option<ViewRead>,
}

/// What a pull query reads from a table's view.
#[derive(Clone, Debug)]
pub struct ViewRead {
    pub view: Arc<TableView>,
    pub rows: ViewRows,
    /// The table's keys are windowed: a key's rows are those of each of its windows.
    pub windowed: bool,
    /// The partitions to answer for (None: all): a server answers a pull query
    /// forwarded to it for the partitions it owns.
    pub partitions: Option<Vec<i32>>,
}

/// Which rows of a view a pull query reads: a superset of its answer, which its plan
/// then filters.
#[derive(Clone, Debug)]
pub enum ViewRows {
    All,
    /// The rows of these keys (their bytes as the table's topic has them).
    Keys(Vec<Vec<u8>>),
    /// The rows whose keys' bytes lie in one of these ranges.
    Ranges(Vec<KeyRange>),
}

pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

impl PushConfig {
    /// Whether the query reads an input from its start: with `earliest`, and always for
    /// a stream-table join's table, so that lookups find the rows written before.
    fn reads_from_start(&self, pipeline: &Pipeline, input: usize) -> bool {
        self.auto_offset_reset == "earliest" || pipeline.is_lookup_table(input)
    }
}

#[derive(Clone, Debug)]
pub enum Mode {
    /// Rows as they come, until stopped.
    Push,
    /// The sources up to their current end, then done. For a table result, the indexes
    /// of its key columns in a row: only each key's latest row is written, in
    /// `scan_order` when given.
    Pull {
        table_keys: Option<Vec<usize>>,
        scan_order: Option<ScanOrder>,
    },
}

/// A row's place in a scan: its key's partition, then its key's bytes.
type ScanPosition = (i32, Vec<u8>);

/// The order in which ksqlDB's stores hand out a table's rows: partition by partition
/// (as Kafka's default partitioner places the key), and by the key's serialized bytes
/// within a partition.
#[derive(Clone, Debug)]
pub struct ScanOrder {
    pub partitions: u32,
    pub key_format: sluice_plan::FormatKind,
    /// The source table's key columns: their index in a row and their type.
    pub key_columns: Vec<(usize, sluice_plan::SqlType)>,
}

impl ScanOrder {
    /// Where a row comes in the scan.
    fn position(&self, row: &[serde_json::Value]) -> ScanPosition {
        use serde_json::Value;
        use sluice_plan::{FormatKind, SqlType};
        let values: Vec<(&Value, &SqlType)> = self
            .key_columns
            .iter()
            .map(|(i, ty)| (row.get(*i).unwrap_or(&Value::Null), ty))
            .collect();
        let bytes = match (self.key_format, values.as_slice()) {
            (FormatKind::Kafka, [(v, ty)]) => match (ty, v) {
                (SqlType::Integer, Value::Number(n)) => {
                    (n.as_i64().unwrap_or(0) as i32).to_be_bytes().to_vec()
                }
                (SqlType::Bigint, Value::Number(n)) => {
                    n.as_i64().unwrap_or(0).to_be_bytes().to_vec()
                }
                (SqlType::Double, Value::Number(n)) => {
                    n.as_f64().unwrap_or(0.0).to_bits().to_be_bytes().to_vec()
                }
                (_, Value::String(s)) => s.as_bytes().to_vec(),
                (_, v) => v.to_string().into_bytes(),
            },
            (FormatKind::Delimited | FormatKind::Kafka, values) => values
                .iter()
                .map(|(v, _)| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    v => v.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
            (_, [(v, _)]) => v.to_string().into_bytes(),
            (_, values) => {
                serde_json::Value::Array(values.iter().map(|(v, _)| (*v).clone()).collect())
                    .to_string()
                    .into_bytes()
            }
        };
        (
            crate::driver::partition_for(Some(&bytes), self.partitions),
            bytes,
        )
    }
}

/// What a push query hands its client.
#[derive(Debug)]
pub enum PushEvent {
    /// A result row: a JSON array of the result's columns in order. A deletion (of a
    /// table's row) has the key columns and NULLs.
    Row { json: Vec<u8>, deletion: bool },
    /// The LIMIT was reached; nothing follows.
    LimitReached,
    /// A pull query over a stream has read its sources to their ends; nothing follows.
    Completed,
    /// The query failed; nothing follows.
    Error(String),
}

/// A running push query; dropping it stops it.
pub struct PushQuery {
    stop: Arc<AtomicBool>,
}

impl PushQuery {
    /// Compiles the plan (so a plan that cannot run fails here, before any response is
    /// started) and runs it over Kafka on its own thread, sending its rows to `rows`.
    pub fn start(
        name: &str,
        plan: &QueryPlan,
        config: PushConfig,
        rows: Sender<PushEvent>,
    ) -> Result<PushQuery> {
        let pipeline = Pipeline::rows(plan, config.registry.clone())?;
        Self::spawn(name, rows, move |stop, rows| match config.view.clone() {
            Some(read) => {
                let mut feed = ViewFeed::new(read)?;
                run(pipeline, &config, stop, rows, &mut feed)
            }
            None => {
                let mut feed = KafkaFeed::new(&pipeline, &config)?;
                run(pipeline, &config, stop, rows, &mut feed)
            }
        })
    }

    /// As `start`, over the test driver's topics. The query reads what they hold now
    /// before this returns, so every record written afterwards reaches it.
    pub fn start_on_driver(
        name: &str,
        plan: &QueryPlan,
        config: PushConfig,
        driver: &std::sync::Mutex<Driver>,
        rows: Sender<PushEvent>,
    ) -> Result<PushQuery> {
        let pipeline = Pipeline::rows(plan, config.registry.clone())?;
        let topics = pipeline
            .source_topics()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let pull = matches!(config.mode, Mode::Pull { .. });
        driver.lock().unwrap_or_else(|p| p.into_inner()).tap(
            topics,
            |input| pull || config.reads_from_start(&pipeline, input),
            !pull,
            tx,
        );
        Self::spawn(name, rows, move |stop, rows| {
            let mut feed = DriverFeed { records: rx };
            run(pipeline, &config, stop, rows, &mut feed)
        })
    }

    /// Runs `body` on its own thread until it returns or the stop flag is set; an error
    /// goes to the client as the query's last event.
    fn spawn(
        name: &str,
        rows: Sender<PushEvent>,
        body: impl FnOnce(&AtomicBool, &Sender<PushEvent>) -> Result<()> + Send + 'static,
    ) -> Result<PushQuery> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name(format!("push-{name}"))
            .spawn(move || {
                if let Err(e) = body(&flag, &rows) {
                    let _ = rows.blocking_send(PushEvent::Error(e.to_string()));
                }
            })
            .map_err(|e| RuntimeError::Plan(format!("cannot start a thread: {e}")))?;
        Ok(PushQuery { stop })
    }

    /// A query whose work runs elsewhere (a pull query all of whose partitions other
    /// servers answer): stopping it only sets its flag, which that work watches.
    pub fn detached() -> PushQuery {
        PushQuery {
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle that stops the query when set (for `/close-query`).
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

impl Drop for PushQuery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Where a push or pull query's records come from: Kafka, or the test driver's topics.
trait Feed {
    /// Pushes the records there are now into the pipeline (a few hundred at most,
    /// waiting up to 100 ms for the first). False once a pull query's scan is done.
    fn feed(&mut self, pipeline: &mut Pipeline) -> Result<bool>;
}

/// Runs a query over a feed until it is stopped, its client goes away, it reaches its
/// LIMIT or (a pull query) its scan is done, handing out its rows.
fn run(
    mut pipeline: Pipeline,
    config: &PushConfig,
    stop: &AtomicBool,
    rows: &Sender<PushEvent>,
    feed: &mut dyn Feed,
) -> Result<()> {
    let mut sent = 0u64;
    let mut out: Vec<OutputRecord> = Vec::new();
    let mut table = LatestRows::default();
    let table_scan = matches!(
        config.mode,
        Mode::Pull {
            table_keys: Some(_),
            ..
        }
    );
    if config.limit == Some(0) {
        if !table_scan {
            let _ = rows.blocking_send(PushEvent::LimitReached);
        }
        return Ok(());
    }
    let mut send = |json: Vec<u8>, deletion: bool| -> bool {
        let json = match &config.shown {
            Some(shown) => {
                let row: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap_or_default();
                let visible: Vec<&serde_json::Value> =
                    shown.iter().filter_map(|i| row.get(*i)).collect();
                serde_json::to_vec(&visible).unwrap_or_default()
            }
            None => json,
        };
        if rows
            .blocking_send(PushEvent::Row { json, deletion })
            .is_err()
        {
            return false;
        }
        sent += 1;
        if config.limit.is_some_and(|l| sent >= l) {
            // A table's scan just ends; a stream's says why.
            if !table_scan {
                let _ = rows.blocking_send(PushEvent::LimitReached);
            }
            return false;
        }
        true
    };
    while !stop.load(Ordering::SeqCst) && !rows.is_closed() {
        let more = feed.feed(&mut pipeline)?;
        pipeline.flush(&mut out)?;
        for r in out.drain(..) {
            let deletion = is_row_deletion(&r);
            let json = r.value.unwrap_or_default();
            if let Mode::Pull {
                table_keys: Some(keys),
                ..
            } = &config.mode
            {
                table.put(keys, json, deletion)?;
            } else if !send(json, deletion) {
                return Ok(());
            }
        }
        if !more {
            // The scan is done: a table's rows go out now.
            if let Mode::Pull {
                scan_order: Some(order),
                ..
            } = &config.mode
            {
                table.sort(order);
            }
            for json in table.rows.into_iter().flatten() {
                if !send(json, false) {
                    return Ok(());
                }
            }
            if matches!(
                config.mode,
                Mode::Pull {
                    table_keys: None,
                    ..
                }
            ) {
                let _ = rows.blocking_send(PushEvent::Completed);
            }
            return Ok(());
        }
    }
    Ok(())
}

/// A query's records from Kafka: a consumer assigned every partition of its sources.
struct KafkaFeed {
    consumer: BaseConsumer,
    topics: Vec<String>,
    pull: bool,
    /// A pull query's scan ends at each partition's end as of its start.
    ends: HashMap<(usize, i32), i64>,
    reads_headers: bool,
}

impl KafkaFeed {
    fn new(pipeline: &Pipeline, config: &PushConfig) -> Result<KafkaFeed> {
        let topics: Vec<String> = pipeline
            .source_topics()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            // Required by the client; nothing is ever committed, so the group never exists.
            .set("group.id", "_sluice-push-queries")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .create()?;
        const TIMEOUT: Duration = Duration::from_secs(30);
        let pull = matches!(config.mode, Mode::Pull { .. });
        let mut assignment = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for (input, topic) in topics.iter().enumerate() {
            let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
            let start = if pull || config.reads_from_start(pipeline, input) {
                Offset::Beginning
            } else {
                Offset::End
            };
            for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    assignment.add_partition_offset(topic, p.id(), start)?;
                    if pull {
                        let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
                        if high > low {
                            ends.insert((input, p.id()), high);
                        }
                    }
                }
            }
        }
        consumer.assign(&assignment)?;
        Ok(KafkaFeed {
            consumer,
            topics,
            pull,
            ends,
            reads_headers: pipeline.reads_headers(),
        })
    }
}

impl Feed for KafkaFeed {
    fn feed(&mut self, pipeline: &mut Pipeline) -> Result<bool> {
        if self.pull && self.ends.is_empty() {
            return Ok(false);
        }
        let mut timeout = Duration::from_millis(100);
        while pipeline.pending() < 500 {
            let Some(msg) = self.consumer.poll(timeout) else {
                if self.pull {
                    // Transaction markers take offsets no record is delivered at.
                    let positions = self.consumer.position()?;
                    let topics = &self.topics;
                    self.ends.retain(|(input, p), end| {
                        match positions
                            .find_partition(&topics[*input], *p)
                            .map(|e| e.offset())
                        {
                            Some(Offset::Offset(o)) => o < *end,
                            _ => true,
                        }
                    });
                }
                break;
            };
            timeout = Duration::ZERO;
            let msg = msg?;
            let Some(input) = self.topics.iter().position(|t| t == msg.topic()) else {
                continue;
            };
            if self.pull {
                let key = (input, msg.partition());
                match self.ends.get(&key) {
                    Some(end) if msg.offset() < *end => {
                        if msg.offset() + 1 >= *end {
                            self.ends.remove(&key);
                        }
                    }
                    // Past the end of the scan.
                    _ => continue,
                }
            }
            let headers = if self.reads_headers {
                crate::kafka::headers_of(&msg)
            } else {
                Vec::new()
            };
            let record = crate::kafka::source_record(&msg, &headers);
            // A record that does not decode is skipped, as persistent queries skip it.
            let _ = pipeline.push(input, &record);
        }
        Ok(true)
    }
}

/// A pull query's records from a table's view: the rows of its keys, or a scan (of
/// everything or of key ranges) page by page, once the view has caught up with the
/// topic.
struct ViewFeed {
    read: ViewRead,
    /// The topic's partitions when the query started.
    partitions: Vec<i32>,
    /// A range scan reads each range in each partition in turn: which one now.
    span: usize,
    /// The key of the last row of the previous page.
    after: Option<Vec<u8>>,
}

/// How long a pull query waits for a view to read what its topic held at the start.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

impl ViewFeed {
    fn new(read: ViewRead) -> Result<ViewFeed> {
        let partitions = read
            .view
            .catch_up(CATCH_UP_TIMEOUT, read.partitions.as_deref())?;
        Ok(ViewFeed {
            read,
            partitions,
            span: 0,
            after: None,
        })
    }

    /// The next page of rows, and whether more may follow.
    fn page(&mut self) -> Result<(Vec<ViewRow>, bool)> {
        const PAGE: usize = 500;
        /// A scan of everything: each partition's whole range.
        const ALL: &[KeyRange] = &[(Bound::Unbounded, Bound::Unbounded)];
        let view = &self.read.view;
        let ranges = match &self.read.rows {
            ViewRows::Keys(keys) => {
                let mut rows = Vec::new();
                for key in keys {
                    rows.extend(view.lookup(&self.partitions, key, self.read.windowed)?);
                }
                return Ok((rows, false));
            }
            ViewRows::All => ALL,
            ViewRows::Ranges(ranges) => ranges.as_slice(),
        };
        let partitions = &self.partitions;
        let Some((lower, upper)) = ranges.get(self.span / partitions.len().max(1)) else {
            return Ok((Vec::new(), false));
        };
        if partitions.is_empty() {
            return Ok((Vec::new(), false));
        }
        let partition = partitions[self.span % partitions.len()];
        let lower = match &self.after {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => lower.as_ref().map(Vec::as_slice),
        };
        let upper = upper.as_ref().map(Vec::as_slice);
        let rows = view.read(|db| db.range(partition, lower, upper, PAGE))?;
        if rows.len() == PAGE {
            self.after = rows.last().map(|r| r.key.clone());
        } else {
            self.span += 1;
            self.after = None;
        }
        Ok((rows, self.span < ranges.len() * partitions.len()))
    }
}

impl Feed for ViewFeed {
    fn feed(&mut self, pipeline: &mut Pipeline) -> Result<bool> {
        let (rows, more) = self.page()?;
        for r in &rows {
            let record = SourceRecord {
                key: Some(&r.key),
                value: Some(&r.value),
                headers: &r.headers,
                timestamp: r.timestamp,
                partition: r.partition,
                offset: r.offset,
            };
            // A record that does not decode is skipped, as persistent queries skip it.
            let _ = pipeline.push(0, &record);
        }
        Ok(more)
    }
}

/// A query's records from the test driver, through a tap.
struct DriverFeed {
    records: std::sync::mpsc::Receiver<TapEvent>,
}

impl Feed for DriverFeed {
    fn feed(&mut self, pipeline: &mut Pipeline) -> Result<bool> {
        use std::sync::mpsc::RecvTimeoutError;
        let mut event = self.records.recv_timeout(Duration::from_millis(100));
        while pipeline.pending() < 500 {
            match event {
                Ok(TapEvent::Record { input, record }) => {
                    // A record that does not decode is skipped, as persistent queries skip it.
                    let _ = pipeline.push(input, &record.source());
                }
                Ok(TapEvent::End) | Err(RecvTimeoutError::Disconnected) => return Ok(false),
                Err(RecvTimeoutError::Timeout) => break,
            }
            event = self.records.try_recv().map_err(|e| match e {
                std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
        Ok(true)
    }
}

/// A pull query's table: the latest row of each key, in the order keys first came.
#[derive(Default)]
struct LatestRows {
    rows: Vec<Option<Vec<u8>>>,
    index: HashMap<String, usize>,
}

impl LatestRows {
    /// Puts the rows in a store's scan order.
    fn sort(&mut self, order: &ScanOrder) {
        let mut keyed: Vec<(ScanPosition, Vec<u8>)> = std::mem::take(&mut self.rows)
            .into_iter()
            .flatten()
            .map(|json| {
                let row: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap_or_default();
                (order.position(&row), json)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        self.rows = keyed.into_iter().map(|(_, json)| Some(json)).collect();
        self.index.clear();
    }

    fn put(&mut self, keys: &[usize], json: Vec<u8>, deletion: bool) -> Result<()> {
        let row: Vec<serde_json::Value> = serde_json::from_slice(&json)
            .map_err(|e| RuntimeError::Plan(format!("a result row is not a JSON array: {e}")))?;
        let key = serde_json::to_string(&keys.iter().map(|i| row.get(*i)).collect::<Vec<_>>())
            .unwrap_or_default();
        let value = (!deletion).then_some(json);
        match self.index.get(&key) {
            Some(&i) => self.rows[i] = value,
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push(value);
            }
        }
        Ok(())
    }
}

/// PRINT: a topic's raw records as ksqlDB prints them, one line each (`rowtime: ...,
/// key: ..., value: ..., partition: ...`), after a line naming the formats detected in
/// the first record.
pub struct PrintConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub from_beginning: bool,
    /// Every n-th record (1: all).
    pub interval: u64,
    pub limit: Option<u64>,
    /// Where the schemas of framed AVRO, JSON_SR and PROTOBUF records are found.
    pub registry: Option<Registry>,
}

/// Starts printing a topic on its own thread; each line goes out as a `Row` whose `json`
/// is the line's text. Dropping the returned query stops it.
pub fn print_topic(config: PrintConfig, lines: Sender<PushEvent>) -> Result<PushQuery> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name(format!("print-{}", config.topic))
        .spawn(move || {
            if let Err(e) = print_run(&config, &flag, &lines) {
                let _ = lines.blocking_send(PushEvent::Error(e.to_string()));
            }
        })
        .map_err(|e| RuntimeError::Plan(format!("cannot start a thread: {e}")))?;
    Ok(PushQuery { stop })
}

fn print_run(config: &PrintConfig, stop: &AtomicBool, lines: &Sender<PushEvent>) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", "_sluice-print")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&config.topic), Duration::from_secs(30))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == config.topic)
    {
        if t.partitions().is_empty() {
            return Err(RuntimeError::Plan(format!(
                "Could not find topic '{}', or the KSQL user does not have permissions to list the topic.",
                config.topic
            )));
        }
        for p in t.partitions() {
            let start = if config.from_beginning {
                Offset::Beginning
            } else {
                Offset::End
            };
            assignment.add_partition_offset(&config.topic, p.id(), start)?;
        }
    }
    consumer.assign(&assignment)?;
    let (mut seen, mut printed) = (0u64, 0u64);
    let mut header = false;
    while !stop.load(Ordering::SeqCst) && !lines.is_closed() {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        seen += 1;
        if (seen - 1) % config.interval.max(1) != 0 {
            continue;
        }
        let registry = config.registry.as_deref();
        let (key_format, key) = printable(msg.key(), registry);
        let (value_format, value) = printable(msg.payload(), registry);
        if !header {
            header = true;
            let text = format!("Key format: {key_format}\nValue format: {value_format}");
            if lines
                .blocking_send(PushEvent::Row {
                    json: text.into_bytes(),
                    deletion: false,
                })
                .is_err()
            {
                return Ok(());
            }
        }
        let rowtime = msg
            .timestamp()
            .to_millis()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y/%m/%d %H:%M:%S%.3f Z").to_string())
            .unwrap_or_else(|| "N/A".into());
        let line = format!(
            "rowtime: {rowtime}, key: {key}, value: {value}, partition: {}",
            msg.partition()
        );
        if lines
            .blocking_send(PushEvent::Row {
                json: line.into_bytes(),
                deletion: false,
            })
            .is_err()
        {
            return Ok(());
        }
        printed += 1;
        if config.limit.is_some_and(|l| printed >= l) {
            let _ = lines.blocking_send(PushEvent::LimitReached);
            return Ok(());
        }
    }
    Ok(())
}

/// A framed record's payload as JSON text, read with its registered schema.
fn registered_text(
    schema: &sluice_registry::RegisteredSchema,
    payload: &[u8],
) -> Option<(&'static str, String)> {
    use sluice_registry::{SchemaType, avro, protobuf};
    let value = match schema.schema_type {
        SchemaType::Avro => {
            let parsed = avro::Schema::parse(&schema.text).ok()?;
            ("AVRO", avro::Reader::new(payload).json(&parsed).ok()?)
        }
        SchemaType::Json => ("JSON_SR", serde_json::from_slice(payload).ok()?),
        SchemaType::Protobuf => {
            let file = protobuf::parse_with_imports(&schema.text, &schema.imports).ok()?;
            let mut r = protobuf::Reader::new(payload);
            let path = protobuf::read_message_indexes(&mut r).ok()?;
            let message = file.message_at(&path).ok()?;
            (
                "PROTOBUF",
                protobuf::read_message(message, r.rest(), false).ok()?,
            )
        }
    };
    Some((value.0, value.1.to_string()))
}

/// A key or value as PRINT shows it, with the format it looks like: a record framed
/// with the id of a schema the registry has is read with that schema.
fn printable(
    bytes: Option<&[u8]>,
    registry: Option<&dyn sluice_registry::SchemaRegistry>,
) -> (&'static str, String) {
    let Some(b) = bytes else {
        return ("¯\\_(ツ)_/¯ - no data processed", "<null>".into());
    };
    if let Some(registry) = registry
        && let Ok((id, payload)) = sluice_registry::unframe(b)
        && let Ok(schema) = registry.schema(id)
        && let Some(shown) = registered_text(&schema, payload)
    {
        return shown;
    }
    if let Ok(text) = std::str::from_utf8(b) {
        let trimmed = text.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && serde_json::from_str::<serde_json::Value>(text).is_ok()
        {
            return ("JSON or KAFKA_STRING", text.to_string());
        }
        if !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return ("KAFKA_STRING", text.to_string());
        }
    }
    match b.len() {
        4 => (
            "KAFKA_INT",
            i32::from_be_bytes(b.try_into().expect("4 bytes")).to_string(),
        ),
        8 => (
            "KAFKA_BIGINT or KAFKA_DOUBLE",
            i64::from_be_bytes(b.try_into().expect("8 bytes")).to_string(),
        ),
        _ => (
            "BYTES",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
        ),
    }
}
