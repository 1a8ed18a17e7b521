//! The deterministic test driver: queries over in-memory topics, record by record.
//!
//! Each record produced to a topic runs through every query that reads the topic before
//! the next record is taken, and the records a query writes run through the queries that
//! read *its* topic the same way, depth first. This is the semantics ksqlDB's own
//! query-validation tests expect (Kafka Streams' TopologyTestDriver with caching off).
//!
//! Push and pull queries read the driver through taps: a tap receives the records of
//! its topics (those already written, then, for a push query, each new one) on a
//! channel, so the query runs on its own thread as it would over Kafka.

use crate::error::Result;
use crate::pipeline::{Header, OutputRecord, Pipeline, SourceRecord};
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Sender;

/// A record in an in-memory topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub partition: i32,
    pub offset: i64,
    pub headers: Vec<Header>,
}

impl DriverRecord {
    /// The record as a pipeline reads it.
    pub fn source(&self) -> SourceRecord<'_> {
        SourceRecord {
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &self.headers,
            timestamp: self.timestamp,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// What a tap receives: a record of one of its topics (`input` indexes the topics it
/// asked for), or the end of the records written so far (for a tap that does not follow).
#[derive(Clone, Debug)]
pub enum TapEvent {
    Record { input: usize, record: DriverRecord },
    End,
}

struct Tap {
    id: u64,
    topics: Vec<String>,
    sender: Sender<TapEvent>,
}

#[derive(Debug, Default)]
struct Topic {
    partitions: u32,
    records: Vec<DriverRecord>,
    next_offset: Vec<i64>,
}

/// A record that a query skipped because it could not be decoded.
#[derive(Clone, Debug)]
pub struct SkippedRecord {
    pub query: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

#[derive(Default)]
pub struct Driver {
    topics: BTreeMap<String, Topic>,
    /// Every record written, as (topic, index in the topic), in the order written.
    history: Vec<(String, usize)>,
    queries: Vec<(String, Pipeline)>,
    taps: Vec<Tap>,
    next_tap: u64,
    pub skipped: Vec<SkippedRecord>,
    /// Aggregations keep their groups in state stores (in memory) with at most this
    /// many cached, and every record is a commit: the store path, checked by the same
    /// cases as the in-memory one (`SLUICE_TEST_STATE_STORES`).
    state_stores: Option<usize>,
    /// Paused queries, with where in `history` they stopped reading.
    paused: BTreeMap<String, usize>,
}

impl Driver {
    pub fn new() -> Driver {
        Driver::default()
    }

    /// A driver whose queries keep their aggregations' groups in state stores, with at
    /// most `max_cached` in memory, committing after every record.
    pub fn with_state_stores(max_cached: usize) -> Driver {
        Driver {
            state_stores: Some(max_cached),
            ..Driver::default()
        }
    }

    /// A driver as `SLUICE_TEST_STATE_STORES=N` asks (state stores caching N groups), or
    /// a plain one.
    pub fn from_env() -> Driver {
        match std::env::var("SLUICE_TEST_STATE_STORES")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(n) => Driver::with_state_stores(n),
            None => Driver::new(),
        }
    }

    /// Creates a topic; a topic that exists keeps its partitions.
    pub fn create_topic(&mut self, name: &str, partitions: u32) {
        let partitions = partitions.max(1);
        self.topics
            .entry(name.to_string())
            .or_insert_with(|| Topic {
                partitions,
                records: Vec::new(),
                next_offset: vec![0; partitions as usize],
            });
    }

    /// Deletes a topic and its records; false if there was none.
    pub fn delete_topic(&mut self, name: &str) -> bool {
        self.history.retain(|(t, _)| t != name);
        self.topics.remove(name).is_some()
    }

    /// Every topic and its partition count.
    pub fn topics(&self) -> Vec<(String, u32)> {
        self.topics
            .iter()
            .map(|(n, t)| (n.clone(), t.partitions))
            .collect()
    }

    pub fn partitions(&self, topic: &str) -> Option<u32> {
        self.topics.get(topic).map(|t| t.partitions)
    }

    pub fn add_query(&mut self, id: &str, mut pipeline: Pipeline) {
        if let Some(max_cached) = self.state_stores {
            pipeline.record_changes();
            // Memory stores cannot fail to open.
            let _ = pipeline.use_state_stores(
                |_| Ok(Box::new(sluice_state::MemoryStorage::default())),
                max_cached,
            );
        }
        let sink = pipeline.sink_topic().to_string();
        self.create_topic(&sink, 1);
        self.queries.push((id.to_string(), pipeline));
    }

    /// Adds a query that first reads the records its topics already hold (as a query
    /// with `auto.offset.reset=earliest` does), writing what they cause.
    pub fn add_query_from_start(&mut self, id: &str, pipeline: Pipeline) -> Result<()> {
        let topics: Vec<String> = pipeline
            .source_topics()
            .iter()
            .map(|t| t.to_string())
            .collect();
        self.add_query(id, pipeline);
        let backlog: Vec<(String, DriverRecord)> = self
            .history
            .iter()
            .filter(|(t, _)| topics.contains(t))
            .map(|(t, i)| (t.clone(), self.topics[t].records[*i].clone()))
            .collect();
        let only = self.queries.len() - 1;
        for (topic, record) in backlog {
            self.run(topic, record, Some(only))?;
        }
        Ok(())
    }

    /// Removes a query (TERMINATE); false if there is none with that id.
    pub fn remove_query(&mut self, id: &str) -> bool {
        let before = self.queries.len();
        self.queries.retain(|(q, _)| q != id);
        self.queries.len() != before
    }

    /// PAUSE (true) or RESUME of a query: a paused query reads nothing; resumed, it
    /// reads what was written meanwhile, in order.
    pub fn set_paused(&mut self, id: &str, paused: bool) -> Result<()> {
        if paused {
            let at = self.history.len();
            self.paused.entry(id.to_string()).or_insert(at);
            return Ok(());
        }
        let Some(from) = self.paused.remove(id) else {
            return Ok(());
        };
        let Some(n) = self.queries.iter().position(|(q, _)| q == id) else {
            return Ok(());
        };
        let topics: Vec<String> = self.queries[n]
            .1
            .source_topics()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let backlog: Vec<(String, DriverRecord)> = self.history[from..]
            .iter()
            .filter(|(t, _)| topics.contains(t))
            .map(|(t, i)| (t.clone(), self.topics[t].records[*i].clone()))
            .collect();
        for (topic, record) in backlog {
            self.run(topic, record, Some(n))?;
        }
        Ok(())
    }

    /// The ids of the queries, in the order they were added.
    pub fn query_ids(&self) -> Vec<String> {
        self.queries.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Whether a query with that id runs here.
    pub fn has_query(&self, id: &str) -> bool {
        self.queries.iter().any(|(q, _)| q == id)
    }

    /// Sends the records already written to `topics` (all of them, or only those of
    /// the inputs `from_start` selects) to `sender`, in the order written; then, if
    /// `follow`, each record written to them from now on, else `TapEvent::End`. A tap
    /// whose receiver is gone is dropped. Returns the tap's id for `untap`.
    pub fn tap(
        &mut self,
        topics: Vec<String>,
        from_start: impl Fn(usize) -> bool,
        follow: bool,
        sender: Sender<TapEvent>,
    ) -> u64 {
        for (topic, i) in &self.history {
            let Some(input) = topics.iter().position(|t| t == topic) else {
                continue;
            };
            if from_start(input) {
                let record = self.topics[topic].records[*i].clone();
                let _ = sender.send(TapEvent::Record { input, record });
            }
        }
        self.next_tap += 1;
        if follow {
            self.taps.push(Tap {
                id: self.next_tap,
                topics,
                sender,
            });
        } else {
            let _ = sender.send(TapEvent::End);
        }
        self.next_tap
    }

    /// Stops a tap.
    pub fn untap(&mut self, id: u64) {
        self.taps.retain(|t| t.id != id);
    }

    /// How many taps follow the topics (running push queries).
    pub fn taps(&self) -> usize {
        self.taps.len()
    }

    /// Every record written to a topic, in the order written.
    pub fn records(&self, topic: &str) -> &[DriverRecord] {
        self.topics
            .get(topic)
            .map(|t| t.records.as_slice())
            .unwrap_or(&[])
    }

    /// Produces a record and runs it, and everything it causes, through the queries.
    pub fn produce(
        &mut self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
    ) -> Result<()> {
        self.produce_with_headers(topic, key, value, Vec::new(), timestamp)
    }

    /// As `produce`, with record headers (which header columns read; the records the
    /// queries write carry none, but for a `retractions` topic's).
    pub fn produce_with_headers(
        &mut self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
        timestamp: i64,
    ) -> Result<()> {
        let first = self.append(topic, key, value, headers, timestamp);
        self.run(topic.to_string(), first, None)
    }

    /// Runs a record through the queries (only through the query at index `only`, when
    /// given), then what they write through every query, in the order written.
    fn run(&mut self, topic: String, record: DriverRecord, only: Option<usize>) -> Result<()> {
        let mut out = Vec::<OutputRecord>::new();
        let mut written = Vec::<(String, OutputRecord)>::new();
        let mut queue = VecDeque::from([(topic, record, only)]);
        while let Some((topic, record, only)) = queue.pop_front() {
            for (n, (id, pipeline)) in self.queries.iter_mut().enumerate() {
                if only.is_some_and(|o| o != n) || (only.is_none() && self.paused.contains_key(id))
                {
                    continue;
                }
                let Some(input) = pipeline.source_topics().iter().position(|t| *t == topic) else {
                    continue;
                };
                if let Err(f) = pipeline.push(input, &record.source()) {
                    self.skipped.push(SkippedRecord {
                        query: id.clone(),
                        topic: topic.clone(),
                        partition: f.partition,
                        offset: f.offset,
                        reason: f.reason,
                    });
                    continue;
                }
                pipeline.flush(&mut out)?;
                if self.state_stores.is_some() {
                    let mut changes = Vec::new();
                    pipeline.take_changes(&mut changes)?;
                    pipeline.commit_state(&changes)?;
                }
                let sink = pipeline.sink_topic().to_string();
                written.extend(out.drain(..).map(|o| (sink.clone(), o)));
            }
            // What the queries wrote is appended once every query has seen the record
            // that caused it, in the order the queries wrote it.
            for (sink, o) in written.drain(..) {
                let record = self.append(&sink, o.key, o.value, o.headers, o.timestamp);
                queue.push_back((sink, record, None));
            }
        }
        Ok(())
    }

    /// Appends a record to a topic (created with one partition if missing), choosing
    /// its partition from its key and giving it the partition's next offset, and hands
    /// it to the taps that follow the topic.
    fn append(
        &mut self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
        timestamp: i64,
    ) -> DriverRecord {
        let t = self
            .topics
            .entry(topic.to_string())
            .or_insert_with(|| Topic {
                partitions: 1,
                records: Vec::new(),
                next_offset: vec![0],
            });
        let partition = partition_for(key.as_deref(), t.partitions);
        let offset = t.next_offset[partition as usize];
        t.next_offset[partition as usize] += 1;
        let record = DriverRecord {
            key,
            value,
            timestamp,
            partition,
            offset,
            headers,
        };
        self.history.push((topic.to_string(), t.records.len()));
        t.records.push(record.clone());
        self.taps
            .retain(|tap| match tap.topics.iter().position(|x| x == topic) {
                Some(input) => tap
                    .sender
                    .send(TapEvent::Record {
                        input,
                        record: record.clone(),
                    })
                    .is_ok(),
                None => true,
            });
        record
    }
}

/// The partition Kafka's default partitioner picks for a key (murmur2); keyless records
/// go to partition 0.
pub fn partition_for(key: Option<&[u8]>, partitions: u32) -> i32 {
    match key {
        Some(k) if partitions > 1 => ((murmur2(k) & 0x7fff_ffff) as u32 % partitions) as i32,
        _ => 0,
    }
}

/// Kafka's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: i32 = 0x5bd1_e995;
    let len = data.len();
    let mut h: i32 = (0x9747_b28c_u32 as i32) ^ (len as i32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= ((k as u32) >> 24) as i32;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as i32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as i32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as i32;
        h = h.wrapping_mul(M);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(M);
    h ^= ((h as u32) >> 15) as i32;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }
}
