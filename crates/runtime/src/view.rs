//! Table views: each table that pull queries read kept in a local RocksDB store, so that
//! a pull query looks its keys up (or scans the store) instead of reading the table's
//! topic from its start.
//!
//! A view follows its topic with its own consumer (read_committed, so it holds only
//! what committed transactions wrote) and applies each poll's records with the offsets
//! they reach in one write. It survives restarts: it goes on from the offsets it
//! stored. A pull query first notes the end of each of the topic's partitions, waits
//! until the view has read that far, and then reads the view: it sees every row
//! committed before it started, and perhaps a few newer ones.
//!
//! Views are opened when a pull query first needs one and kept until their table is
//! dropped. A view follows only the partitions pull queries have asked it about: on a
//! cluster, those whose tasks this server holds (the others' pull queries are forwarded
//! to their owners), and any this server had to answer for itself. A partition is read
//! from its start when first asked about, and followed from then on. A topic that gains
//! partitions is noticed by the next pull query (the topic's metadata is asked at most
//! every `PARTITIONS_CHECK`).

use crate::error::{Result, RuntimeError};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_state::{ViewChange, ViewDb, ViewRow};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How often pull queries ask whether the topic gained partitions: a metadata request
/// each time would add a round trip to every key lookup.
const PARTITIONS_CHECK: Duration = Duration::from_secs(2);

/// A table's topic kept in a local store.
pub struct TableView {
    topic: String,
    shared: Arc<Shared>,
    /// For the ends of the topic's partitions when a pull query starts (a client that
    /// many pull queries use at once).
    metadata: BaseConsumer,
    /// The topic's partitions as last seen, and when they were.
    partitions: Mutex<(Vec<i32>, Instant)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the view's thread and its readers share.
struct Shared {
    db: ViewDb,
    progress: Mutex<Progress>,
    advanced: Condvar,
    stop: AtomicBool,
    /// Rows pull queries have read from the view (a lookup reads only its keys' rows).
    rows_served: AtomicU64,
}

#[derive(Default)]
struct Progress {
    /// The next offset to read in each partition, of what is in the store.
    positions: BTreeMap<i32, i64>,
    /// Why the view stopped following its topic, if it did.
    error: Option<String>,
    /// The partitions the view follows (or is about to).
    followed: BTreeSet<i32>,
    /// Partitions first asked about, for the view's thread to start reading.
    added: Vec<i32>,
}

impl std::fmt::Debug for TableView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableView")
            .field("topic", &self.topic)
            .finish()
    }
}

fn consumer(bootstrap_servers: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        // Required by the client; nothing is ever committed, so the group never exists.
        .set("group.id", "_sluice-table-views")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()?)
}

impl TableView {
    /// Opens the view of `topic` stored in `dir` (creating it) and starts following the
    /// topic from where the store is.
    pub fn open(topic: &str, bootstrap_servers: &str, dir: &Path) -> Result<TableView> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RuntimeError::State(format!("{}: {e}", dir.display())))?;
        let db = ViewDb::open(dir)?;
        let metadata = consumer(bootstrap_servers)?;
        let partitions = topic_partitions(&metadata, topic)?;
        if partitions.is_empty() {
            return Err(RuntimeError::Plan(format!("topic {topic} does not exist")));
        }
        let mut positions = db.positions()?;
        // A store that is ahead of its topic, or has partitions the topic lacks, was
        // read from an earlier topic of the same name: start again.
        let mut stale = positions.keys().any(|p| !partitions.contains(p));
        for p in &partitions {
            let (_, high) = metadata.fetch_watermarks(topic, *p, METADATA_TIMEOUT)?;
            stale |= positions.get(p).is_some_and(|o| *o > high);
        }
        if stale {
            tracing::info!(topic, "the table view is ahead of its topic: rebuilding it");
            db.clear()?;
            positions.clear();
        }
        // The partitions the store has rows of are followed from where it is; others
        // once a pull query asks about them.
        let reader = consumer(bootstrap_servers)?;
        let mut assignment = TopicPartitionList::new();
        for (p, o) in &positions {
            assignment.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        reader.assign(&assignment)?;
        tracing::info!(
            topic,
            ?positions,
            "following the table's topic for pull queries"
        );
        let shared = Arc::new(Shared {
            db,
            progress: Mutex::new(Progress {
                followed: positions.keys().copied().collect(),
                positions,
                error: None,
                added: Vec::new(),
            }),
            advanced: Condvar::new(),
            stop: AtomicBool::new(false),
            rows_served: AtomicU64::new(0),
        });
        let follower = shared.clone();
        let name = topic.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("view-{topic}"))
            .spawn(move || follow(&name, &reader, &follower))
            .map_err(|e| RuntimeError::Plan(format!("cannot start a thread: {e}")))?;
        Ok(TableView {
            topic: topic.to_string(),
            shared,
            metadata,
            partitions: Mutex::new((partitions, Instant::now())),
            thread: Some(thread),
        })
    }

    /// The topic's partitions, asked again if they were last asked over
    /// `PARTITIONS_CHECK` ago.
    fn current_partitions(&self) -> Result<Vec<i32>> {
        let lock = || self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut known = lock();
            if known.1.elapsed() < PARTITIONS_CHECK {
                return Ok(known.0.clone());
            }
            // This query asks; the others go on with what is known meanwhile.
            known.1 = Instant::now();
        }
        let now = topic_partitions(&self.metadata, &self.topic)?;
        let mut known = lock();
        let added: Vec<i32> = now
            .iter()
            .filter(|p| !known.0.contains(p))
            .copied()
            .collect();
        if !added.is_empty() {
            tracing::info!(
                topic = self.topic,
                ?added,
                "the table's topic gained partitions"
            );
            known.0.extend(&added);
        }
        Ok(known.0.clone())
    }

    /// The topic's partitions as last seen, without asking the broker (the next
    /// `catch_up` asks when the answer is older than `PARTITIONS_CHECK`).
    pub fn known_partitions(&self) -> Vec<i32> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many rows pull queries have read from the view.
    pub fn rows_served(&self) -> u64 {
        self.shared.rows_served.load(Ordering::Relaxed)
    }

    /// Waits until the view holds every record the topic's partitions (those of
    /// `wanted`, or all) held when this was called, following those it did not yet;
    /// returns the partitions it waited for, in order.
    pub fn catch_up(&self, timeout: Duration, wanted: Option<&[i32]>) -> Result<Vec<i32>> {
        let mut partitions = self.current_partitions()?;
        partitions.retain(|p| wanted.is_none_or(|w| w.contains(p)));
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Ok(partitions);
        }
        {
            let mut progress = self.shared.lock();
            for p in &partitions {
                if progress.followed.insert(*p) {
                    progress.added.push(*p);
                }
            }
        }
        // The end of every partition in one request (a timestamp of -1 asks for the
        // end; read_committed makes it the end of what has committed).
        let mut latest = TopicPartitionList::new();
        for p in &partitions {
            latest.add_partition_offset(&self.topic, *p, Offset::End)?;
        }
        let metadata = &self.metadata;
        let mut ends = BTreeMap::new();
        for e in metadata
            .offsets_for_times(latest, METADATA_TIMEOUT)?
            .elements()
        {
            let end = match (e.error(), e.offset()) {
                (Ok(()), Offset::Offset(o)) => o,
                // No answer for the partition: ask for its watermarks alone.
                _ => {
                    metadata
                        .fetch_watermarks(&self.topic, e.partition(), METADATA_TIMEOUT)?
                        .1
                }
            };
            if end > 0 {
                ends.insert(e.partition(), end);
            }
        }
        // A partition the view has no position in has delivered it nothing: if retention
        // removed everything up to the end, nothing ever will, and there is nothing to
        // wait for.
        let unread: Vec<i32> = {
            let progress = self.shared.lock();
            ends.keys()
                .filter(|p| !progress.positions.contains_key(p))
                .copied()
                .collect()
        };
        for p in unread {
            let (low, _) = metadata.fetch_watermarks(&self.topic, p, METADATA_TIMEOUT)?;
            if ends.get(&p).is_some_and(|end| low >= *end) {
                ends.remove(&p);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut progress = self.shared.lock();
        loop {
            if let Some(e) = &progress.error {
                return Err(RuntimeError::Plan(format!(
                    "the view of {} stopped: {e}",
                    self.topic
                )));
            }
            if ends
                .iter()
                .all(|(p, end)| progress.positions.get(p).is_some_and(|o| o >= end))
            {
                return Ok(partitions);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RuntimeError::Unavailable(format!(
                    "the view of {} did not catch up with its topic within {timeout:?} (ends {ends:?}, read to {:?})",
                    self.topic, progress.positions
                )));
            }
            progress = self
                .shared
                .advanced
                .wait_timeout(progress, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The rows with `key` (a windowed table: with `key` and any window) in any of
    /// `partitions`.
    pub fn lookup(&self, partitions: &[i32], key: &[u8], windowed: bool) -> Result<Vec<ViewRow>> {
        self.read(|db| {
            let mut rows = Vec::new();
            for p in partitions {
                if windowed {
                    // Tumbling and hopping windows add their start (8 bytes), session
                    // windows their end and start (16).
                    let windows = db.with_key_prefix(*p, key)?.into_iter();
                    rows.extend(windows.filter(|r| matches!(r.key.len() - key.len(), 8 | 16)));
                } else {
                    rows.extend(db.get(*p, key)?);
                }
            }
            Ok(rows)
        })
    }

    /// The rows `read` reads from the view's store (counted as served).
    pub fn read(
        &self,
        read: impl FnOnce(&ViewDb) -> sluice_state::Result<Vec<ViewRow>>,
    ) -> Result<Vec<ViewRow>> {
        let rows = read(&self.shared.db)?;
        self.shared
            .rows_served
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(rows)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TableView {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The view's thread: reads the topic and applies what it reads until stopped. A store
/// that cannot be written stops it, and pull queries on the view then fail with why.
fn follow(topic: &str, reader: &BaseConsumer, shared: &Shared) {
    const MAX_RECORDS: usize = 5000;
    let mut changes = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        changes.clear();
        let (added, starts) = {
            let mut progress = shared.lock();
            let added = std::mem::take(&mut progress.added);
            let starts: Vec<Offset> = added
                .iter()
                .map(|p| {
                    progress
                        .positions
                        .get(p)
                        .map_or(Offset::Beginning, |o| Offset::Offset(*o))
                })
                .collect();
            (added, starts)
        };
        if !added.is_empty() {
            tracing::info!(topic, ?added, "the table view follows more partitions");
            let mut more = TopicPartitionList::new();
            for (p, start) in added.iter().zip(starts) {
                if let Err(e) = more.add_partition_offset(topic, *p, start) {
                    tracing::warn!(topic, "table view: {e}");
                }
            }
            if let Err(e) = reader.incremental_assign(&more) {
                // Tried again at the thread's next turn.
                tracing::warn!(topic, "table view: cannot read more partitions: {e}");
                shared.lock().added.extend(added);
            }
        }
        let mut timeout = Duration::from_millis(100);
        while changes.len() < MAX_RECORDS {
            match reader.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(topic, "table view: {e}");
                    break;
                }
                Some(Ok(msg)) => {
                    timeout = Duration::ZERO;
                    // A table drops records without a key.
                    let Some(key) = msg.key() else { continue };
                    let partition = msg.partition();
                    changes.push(match msg.payload() {
                        None => ViewChange::Delete {
                            partition,
                            key: key.to_vec(),
                        },
                        Some(value) => ViewChange::Put(ViewRow {
                            partition,
                            key: key.to_vec(),
                            offset: msg.offset(),
                            timestamp: msg.timestamp().to_millis().unwrap_or(0),
                            headers: crate::kafka::headers_of(&msg),
                            value: value.to_vec(),
                        }),
                    });
                }
            }
        }
        // The consumer's positions are past the records handed out and past the
        // transaction markers after them, which no record is delivered at.
        let positions: BTreeMap<i32, i64> = match reader.position() {
            Ok(list) => list
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(topic, "table view: {e}");
                continue;
            }
        };
        let moved = {
            let progress = shared.lock();
            positions
                .iter()
                .any(|(p, o)| progress.positions.get(p) != Some(o))
        };
        if changes.is_empty() && !moved {
            continue;
        }
        if let Err(e) = shared.db.apply(&changes, &positions) {
            tracing::error!(topic, "table view: {e}");
            shared.lock().error = Some(e.to_string());
            shared.advanced.notify_all();
            return;
        }
        shared.lock().positions.extend(positions);
        shared.advanced.notify_all();
    }
}

/// The partitions of `topic` (none when it does not exist).
fn topic_partitions(metadata: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    Ok(metadata
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)?
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The views of one server, under its state directory, by topic.
pub struct TableViews {
    dir: PathBuf,
    bootstrap_servers: String,
    open: Mutex<HashMap<String, Arc<TableView>>>,
}

impl TableViews {
    pub fn new(state_dir: &Path, bootstrap_servers: &str) -> TableViews {
        TableViews {
            dir: state_dir.join("views"),
            bootstrap_servers: bootstrap_servers.to_string(),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TableView>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The view of `topic`, opened now if it is not open yet.
    pub fn get(&self, topic: &str) -> Result<Arc<TableView>> {
        let mut open = self.lock();
        if let Some(v) = open.get(topic) {
            return Ok(v.clone());
        }
        let view = Arc::new(TableView::open(
            topic,
            &self.bootstrap_servers,
            &self.dir.join(topic),
        )?);
        open.insert(topic.to_string(), view.clone());
        Ok(view)
    }

    /// How many rows pull queries have read from each open view.
    pub fn rows_served(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .lock()
            .iter()
            .map(|(t, v)| (t.clone(), v.rows_served()))
            .collect();
        out.sort();
        out
    }

    /// Closes the view of `topic` (its table was dropped) and removes its store.
    pub fn remove(&self, topic: &str) {
        let view = self.lock().remove(topic);
        // Stops its thread and closes its store, unless a pull query still reads it.
        drop(view);
        let dir = self.dir.join(topic);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}
