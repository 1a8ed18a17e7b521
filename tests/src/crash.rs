//! The crash harness: a stateless and a stateful persistent query over a keyed,
//! partitioned topic, the server killed (`kill -9`) at random moments while they work,
//! and their outputs checked against what a failure-free run writes.
//!
//! The expected outputs are computed from the input records: the CSAS writes each
//! record that passes its filter, projected; each windowed key's last CTAS row has that
//! window's COUNT and SUM, and with the record cache off the CTAS writes one row per
//! input record; so do the totals per key and per bucket of values (the latter
//! regrouped through a repartition topic). A stream-stream join matches every fourth
//! record with its echo on a second stream, and must write each pair in the window once;
//! a stream-table join labels every record from a table of the keys. A table
//! aggregation regroups the totals per key by their SUM % 7 (through a repartition
//! topic that carries retractions): each band must end with the keys whose final sum
//! falls in it (checked under exactly-once only: at-least-once may repeat a retraction).
//! Under exactly-once the outputs must equal those exactly (not a record missing, not
//! one repeated); under at-least-once nothing may be missing.
//!
//! `sluice-crash` runs it from the command line with other counts; the e2e tests run it
//! small.

use crate::{Record, Server, consume_until, produce, unique};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct CrashRun {
    pub records: usize,
    pub keys: usize,
    pub partitions: u32,
    /// How many times the run is disrupted (see `disruption`).
    pub kills: usize,
    pub disruption: Disruption,
    pub exactly_once: bool,
    pub commit_interval_ms: u64,
    /// Whether the server's record cache is on (its default, 10 MB): the CTAS then
    /// writes fewer rows than records, and only the latest per window is checked.
    pub cache: bool,
    /// Seeds the moments of the kills.
    pub seed: u64,
    /// Which of the harness's queries run.
    pub queries: Queries,
    /// After the run, restarts the server three ways and measures how long its queries
    /// take to restore their state (`CrashReport::restores`).
    pub restore_timing: bool,
}

/// A topic's records as read, with their partitions.
type Output = [(i32, Record)];

/// The queries a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queries {
    /// All seven (see the module's overview).
    All,
    /// The CSAS and the windowed CTAS only: the issue's two queries, to measure what
    /// the guarantee costs them.
    Pair,
    /// Only the non-windowed COUNT and SUM per key (whose groups are in RocksDB): to
    /// see that query's memory alone.
    Totals,
}

/// What happens to the run at each of its random moments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruption {
    /// The server is killed with SIGKILL and started again.
    KillServer,
    /// The local broker (`scripts/kafka-local.sh`) is stopped and started again; the
    /// server keeps running and must resume by itself.
    RestartBroker,
    /// Two servers of one service run the queries; the first is killed and stays
    /// down, and the second must take over (once: more kills have no server left).
    FailOver,
    /// A second server of the service joins, takes some of every query's tasks, and
    /// goes again (killed or stopped, in turns), over and over, while the first keeps
    /// running: each join and each departure rebalances every query's group while the
    /// first server's transactions are open. The outputs are checked as after any
    /// other disruption.
    Churn,
}

/// What a run measured.
#[derive(Debug)]
pub struct CrashReport {
    /// From the queries' creation until every one had committed every input offset.
    pub elapsed: Duration,
    /// Input records per second over `elapsed` (every query reads each record).
    pub rate: f64,
    /// The server's peak resident memory (of its last process), in MiB.
    pub peak_rss_mib: Option<u64>,
    /// CPU time the server (its last process) used until the queries caught up.
    pub server_cpu_seconds: Option<f64>,
    pub csas_records: usize,
    pub ctas_records: usize,
    /// Rows the stream-stream join wrote.
    pub matched_records: usize,
    /// With `restore_timing`: per way of restarting, the changelog entries the queries
    /// read back and the seconds their tasks spent restoring (summed over tasks).
    pub restores: Vec<(&'static str, f64, f64)>,
    /// Commits the queries' groups refused (a rebalance moved their generation on
    /// mid-interval), on the server that ran to the end.
    pub refused_commits: f64,
}

const WINDOW_MS: i64 = 60_000;
/// Each record is 10 ms after the one before: a key sees `WINDOW_MS / 10 / keys`
/// records per window.
const STEP_MS: i64 = 10;
const BASE_TS: i64 = 1_700_000_000_000;

fn key(i: usize, keys: usize) -> String {
    format!("k{}", i % keys)
}

fn v(i: usize) -> i64 {
    (i % 97) as i64
}

fn ts(i: usize) -> i64 {
    BASE_TS + i as i64 * STEP_MS
}

fn input(i: usize, keys: usize) -> Record {
    Record::new(
        Some(&key(i, keys)),
        Some(&format!(r#"{{"N":{i},"V":{}}}"#, v(i))),
        ts(i),
    )
}

/// Every fourth record has an echo, on the second stream, 5 ms after it.
fn echoed(i: usize) -> bool {
    i % 4 == 1
}

fn echo_of(i: usize, keys: usize) -> Record {
    Record::new(
        Some(&key(i, keys)),
        Some(&format!(r#"{{"M":{i}}}"#)),
        ts(i) + ECHO_DELAY_MS,
    )
}

const ECHO_DELAY_MS: i64 = 5;

/// A stream's rows as (key, two number fields) to how many times each is written.
type Rows = BTreeMap<(Vec<u8>, i64, i64), i64>;
const JOIN_WITHIN_MS: i64 = 1_000;

/// The CSAS keeps records whose V is not a multiple of 3.
fn passes(i: usize) -> bool {
    v(i) % 3 != 0
}

/// Whether the server runs some task of some query.
fn runs_tasks(server: &Server) -> bool {
    server
        .query_ids()
        .iter()
        .any(|(id, _)| server.metric("sluice_query_tasks", id).unwrap_or(0.0) > 0.0)
}

/// A small deterministic generator for the kill moments (no dependency for it).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl CrashRun {
    /// Runs the scenario; Err describes how the outputs differ from the expected ones.
    pub fn run(&self) -> Result<CrashReport, String> {
        let mut server = Server::start_with(
            &unique("crash"),
            &[
                (
                    "--processing-guarantee",
                    if self.exactly_once {
                        "exactly_once_v2"
                    } else {
                        "at_least_once"
                    },
                ),
                ("--commit-interval-ms", &self.commit_interval_ms.to_string()),
                (
                    "--cache-max-bytes",
                    if self.cache { "10485760" } else { "0" },
                ),
            ],
        );
        let source = unique("crash_src");
        let csas = unique("crash_csas");
        let ctas = unique("crash_ctas");
        let totals = unique("crash_totals");
        let buckets = unique("crash_buckets");
        let bands = unique("crash_bands");
        let echo = unique("crash_echo");
        let matched = unique("crash_matched");
        let labels = unique("crash_labels");
        let labelled = unique("crash_labelled");
        server.ok(&format!(
            "CREATE STREAM src (k STRING KEY, n BIGINT, v INT) WITH (kafka_topic='{source}', \
             partitions={p}, key_format='KAFKA', value_format='JSON'); \
             CREATE STREAM echo (k STRING KEY, m BIGINT) WITH (kafka_topic='{echo}', \
             partitions={p}, key_format='KAFKA', value_format='JSON'); \
             CREATE TABLE labels (k STRING PRIMARY KEY, l BIGINT) WITH (kafka_topic='{labels}', \
             partitions={p}, key_format='KAFKA', value_format='JSON');",
            p = self.partitions
        ));
        // Each key's label, in the table the stream-table join looks up.
        let label_rows: Vec<Record> = (0..self.keys)
            .map(|k| {
                Record::new(
                    Some(&key(k, self.keys)),
                    Some(&format!(r#"{{"L":{k}}}"#)),
                    BASE_TS,
                )
            })
            .collect();
        produce(&labels, &label_rows);
        let all: Vec<Record> = (0..self.records).map(|i| input(i, self.keys)).collect();
        // The echoes of the records in `range`, which the stream-stream join matches.
        let echoes = |range: std::ops::Range<usize>| -> Vec<Record> {
            range
                .filter(|i| echoed(*i))
                .map(|i| echo_of(i, self.keys))
                .collect()
        };
        // The input arrives in chunks; the server is killed once in each gap, a random
        // moment after the chunk before it was written, while it works on it.
        let chunks = self.kills + 1;
        let chunk = all.len().div_ceil(chunks).max(1);
        let mut pieces = all.chunks(chunk);
        if self.kills == 0 {
            // A clean run measures the rate: everything is in the topic first.
            produce(&source, &all);
            produce(&echo, &echoes(0..self.records));
            pieces = [].chunks(1);
        }
        let started = Instant::now();
        let props = json!({"auto.offset.reset": "earliest"});
        let statements = [
            format!(
                "CREATE STREAM crash_csas WITH (kafka_topic='{csas}') AS \
                 SELECT k, n, v * 2 AS v2 FROM src WHERE v % 3 <> 0;"
            ),
            format!(
                "CREATE TABLE crash_ctas WITH (kafka_topic='{ctas}') AS \
                 SELECT k, COUNT(*) AS cnt, SUM(v) AS total FROM src \
                 WINDOW TUMBLING (SIZE {} SECONDS) GROUP BY k;",
                WINDOW_MS / 1000
            ),
            // Without a window, the groups live in RocksDB (restored from the changelog
            // at every start).
            format!(
                "CREATE TABLE crash_totals WITH (kafka_topic='{totals}') AS \
                 SELECT k, COUNT(*) AS cnt, SUM(v) AS total FROM src GROUP BY k;"
            ),
            // Grouped by a value: the rows go through a repartition topic to the task
            // that owns their group, in the same transactions as everything else.
            format!(
                "CREATE TABLE crash_buckets WITH (kafka_topic='{buckets}') AS \
                 SELECT v % 10 AS bucket, COUNT(*) AS cnt, SUM(v) AS total FROM src \
                 GROUP BY v % 10;"
            ),
            // A stream-stream join: its window stores are restored from the changelog.
            format!(
                "CREATE STREAM crash_matched WITH (kafka_topic='{matched}') AS \
                 SELECT s.k, s.n AS n, e.m AS m FROM src s \
                 JOIN echo e WITHIN {} SECONDS ON s.k = e.k;",
                JOIN_WITHIN_MS / 1000
            ),
            // A stream-table join: its table is in RocksDB, restored from its
            // checkpoint and the changelog's tail.
            format!(
                "CREATE STREAM crash_labelled WITH (kafka_topic='{labelled}') AS \
                 SELECT s.k, s.n AS n, l.l AS l FROM src s JOIN labels l ON s.k = l.k;"
            ),
            // A table regrouped: every change of a key's totals moves the key from one
            // band to another, through a repartition topic that carries the row it
            // leaves as a retraction.
            format!(
                "CREATE TABLE crash_bands WITH (kafka_topic='{bands}') AS \
                 SELECT total % 7 AS band, COUNT(*) AS cnt, SUM(cnt) AS total \
                 FROM crash_totals GROUP BY total % 7 HAVING COUNT(*) > 0;"
            ),
        ];
        let (skip, take) = match self.queries {
            Queries::All => (0, 7),
            Queries::Pair => (0, 2),
            Queries::Totals => (2, 1),
        };
        let (all, pair, totals_run) = (
            self.queries == Queries::All,
            self.queries != Queries::Totals,
            self.queries != Queries::Pair,
        );
        for sql in statements.into_iter().skip(skip).take(take) {
            let (status, body) = server.ksql_with(&sql, props.clone());
            if status != 200 {
                return Err(format!("{sql} failed: {body}"));
            }
        }
        // The second server of a fail-over run: it replays the command topic and waits
        // for the queries' leases.
        let mut standby = (self.disruption == Disruption::FailOver)
            .then(|| Server::start_with(&server.service_id, &server.flags()));
        let mut retired = Vec::new();
        let mut rng = XorShift(self.seed | 1);
        for (n, piece) in pieces.enumerate() {
            produce(&source, piece);
            produce(&echo, &echoes(n * chunk..n * chunk + piece.len()));
            if n < self.kills {
                let wait = Duration::from_millis(50 + rng.next() % 1000);
                std::thread::sleep(wait);
                match self.disruption {
                    Disruption::KillServer => {
                        server.kill();
                        server.restart();
                        // The next kill lands while the queries work, not while they
                        // start.
                        running(&server);
                    }
                    Disruption::RestartBroker => {
                        local_broker("stop")?;
                        std::thread::sleep(Duration::from_secs(2));
                        local_broker("start")?;
                    }
                    Disruption::Churn => {
                        let joiner = Server::start_with(&server.service_id, &server.flags());
                        // It leaves once it runs some of the queries' tasks, or after a
                        // while if the broker is slow to hand them over.
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while Instant::now() < deadline && !runs_tasks(&joiner) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        std::thread::sleep(wait);
                        let mut joiner = joiner;
                        // In turns it dies (its tasks come back after its session
                        // expires, its open transactions after their timeout) and
                        // leaves cleanly (at once, all committed).
                        if n % 2 == 0 {
                            joiner.kill();
                        } else {
                            joiner.stop();
                        }
                        // Dropping a server deletes the test's topics.
                        retired.push(joiner);
                    }
                    Disruption::FailOver => match standby.take() {
                        Some(next) => {
                            server.kill();
                            // Dropping a server deletes the test's topics: keep the
                            // dead one until the run is over.
                            retired.push(std::mem::replace(&mut server, next));
                        }
                        None => return Err("a fail-over run has one kill".into()),
                    },
                }
            }
        }
        // Processing time: until every query committed every input offset (the
        // outputs are read and checked after that).
        // (The bands read the totals' output, not the source.)
        let groups: Vec<String> = server
            .query_ids()
            .into_iter()
            .filter(|(id, _)| !id.to_uppercase().contains("CRASH_BANDS"))
            .map(|(id, _)| format!("_sluice-{}-query_{id}", server.service_id))
            .collect();
        // Asked every half second: each check opens clients, which loads the broker
        // that the queries share.
        let join_groups: Vec<String> = groups
            .iter()
            .filter(|g| g.to_uppercase().contains("CRASH_MATCHED"))
            .cloned()
            .collect();
        let caught_up = crate::eventually(
            Duration::from_secs(600),
            "the queries to commit every input offset",
            || {
                if caught_up(&source, &groups) && caught_up(&echo, &join_groups) {
                    return Some(started.elapsed());
                }
                std::thread::sleep(Duration::from_millis(450));
                None
            },
        );
        let expected_csas = (0..self.records).filter(|i| passes(*i)).count();
        let complete = |records: &[(i32, Record)], count: usize| -> bool {
            if self.exactly_once {
                records.len() >= count
            } else {
                // At-least-once may repeat: wait for every distinct record.
                let distinct: std::collections::HashSet<&Record> =
                    records.iter().map(|(_, r)| r).collect();
                distinct.len() >= count
            }
        };
        let wait = Duration::from_secs(120 + self.records as u64 / 2000);
        let windows = self.expected_windows();
        let exactly_once = self.exactly_once;
        let expected_matches = self.expected_matches();
        // The output of each query that ran (empty for the others).
        let output = |ran: bool, topic: &str, done: &dyn Fn(&Output) -> bool| {
            if ran {
                consume_until(topic, wait, done)
            } else {
                Vec::new()
            }
        };
        let csas_out = output(pair, &csas, &|r| complete(r, expected_csas));
        let ctas_out = output(pair, &ctas, &|r| ctas_done(&windows, r, exactly_once));
        let matched_out = output(all, &matched, &|r| {
            complete(r, expected_matches.values().sum::<i64>() as usize)
        });
        let labelled_out = output(all, &labelled, &|r| complete(r, self.records));
        let per_key = self.expected_totals();
        let totals_out = output(totals_run, &totals, &|r| {
            ctas_done(&per_key, r, exactly_once)
        });
        let per_bucket = self.expected_buckets();
        let buckets_out = output(all, &buckets, &|r| ctas_done(&per_bucket, r, exactly_once));
        // At-least-once may repeat a retraction as well as an addition, so only
        // exactly-once gives the bands a result to check.
        let per_band = self.expected_bands();
        let check_bands = exactly_once && all;
        let bands_out = output(check_bands, &bands, &|r| latest_per_key(r) == per_band);
        let elapsed = caught_up;
        let refused_commits = server
            .query_ids()
            .iter()
            .filter_map(|(id, _)| server.metric("sluice_query_refused_commits_total", id))
            .sum();
        let server_cpu_seconds = server.cpu_seconds();
        let peak_rss_mib = server.peak_rss_mib();
        if pair {
            self.check_csas(&csas_out)?;
            self.check_table("CTAS", windows, &ctas_out, true)?;
        }
        if all {
            self.check_matches(expected_matches, &matched_out)?;
            self.check_labelled(&labelled_out)?;
            self.check_table("Buckets", per_bucket, &buckets_out, true)?;
        }
        if check_bands {
            self.check_table("Bands", per_band, &bands_out, false)?;
        }
        if totals_run {
            self.check_table("Totals", per_key, &totals_out, true)?;
        }
        let restores = if self.restore_timing {
            restore_timings(&mut server)
        } else {
            Vec::new()
        };
        Ok(CrashReport {
            elapsed,
            rate: self.records as f64 / elapsed.as_secs_f64(),
            peak_rss_mib,
            server_cpu_seconds,
            csas_records: csas_out.len(),
            ctas_records: ctas_out.len(),
            matched_records: matched_out.len(),
            restores,
            refused_commits,
        })
    }

    /// Windowed key bytes (KAFKA string key, then the 8-byte window start) to the
    /// window's final COUNT and SUM.
    fn expected_windows(&self) -> HashMap<Vec<u8>, (i64, i64)> {
        let mut windows: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for i in 0..self.records {
            let start = ts(i) - ts(i).rem_euclid(WINDOW_MS);
            let mut k = key(i, self.keys).into_bytes();
            k.extend_from_slice(&start.to_be_bytes());
            let w = windows.entry(k).or_default();
            w.0 += 1;
            w.1 += v(i);
        }
        windows
    }

    /// KAFKA string keys to their final COUNT and SUM.
    fn expected_totals(&self) -> HashMap<Vec<u8>, (i64, i64)> {
        let mut totals: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for i in 0..self.records {
            let t = totals.entry(key(i, self.keys).into_bytes()).or_default();
            t.0 += 1;
            t.1 += v(i);
        }
        totals
    }

    /// KAFKA INT keys (V % 10, four big-endian bytes) to their final COUNT and SUM.
    fn expected_buckets(&self) -> HashMap<Vec<u8>, (i64, i64)> {
        let mut buckets: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for i in 0..self.records {
            let b = buckets
                .entry(((v(i) % 10) as i32).to_be_bytes().to_vec())
                .or_default();
            b.0 += 1;
            b.1 += v(i);
        }
        buckets
    }

    /// KAFKA INT keys (a key's final SUM % 7, four big-endian bytes) to how many keys
    /// end in the band and the sum of their counts; bands no key ends in are deleted
    /// (HAVING COUNT(*) > 0).
    fn expected_bands(&self) -> HashMap<Vec<u8>, (i64, i64)> {
        let mut bands: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for (count, total) in self.expected_totals().into_values() {
            let b = bands
                .entry(((total % 7) as i32).to_be_bytes().to_vec())
                .or_default();
            b.0 += 1;
            b.1 += count;
        }
        bands
    }

    /// The join's rows (key, N, M) to how many times each is written: every record
    /// of the key within the window of an echo (with few keys, more than its own).
    fn expected_matches(&self) -> Rows {
        let mut expected = Rows::new();
        let reach = (JOIN_WITHIN_MS / STEP_MS) as usize + 1;
        for j in (0..self.records).filter(|j| echoed(*j)) {
            let at = ts(j) + ECHO_DELAY_MS;
            for i in j.saturating_sub(reach)..(j + reach).min(self.records) {
                if key(i, self.keys) == key(j, self.keys) && (ts(i) - at).abs() <= JOIN_WITHIN_MS {
                    *expected
                        .entry((key(i, self.keys).into_bytes(), i as i64, j as i64))
                        .or_default() += 1;
                }
            }
        }
        expected
    }

    /// The join's rows must be the expected ones (each once under exactly-once).
    fn check_matches(&self, expected: Rows, out: &[(i32, Record)]) -> Result<(), String> {
        self.check_rows("join", expected, out, ["N", "M"])
    }

    /// The stream-table join's rows (key, N, L): every record with its key's label.
    fn check_labelled(&self, out: &[(i32, Record)]) -> Result<(), String> {
        let mut expected = Rows::new();
        for i in 0..self.records {
            *expected
                .entry((
                    key(i, self.keys).into_bytes(),
                    i as i64,
                    (i % self.keys) as i64,
                ))
                .or_default() += 1;
        }
        self.check_rows("stream-table join", expected, out, ["N", "L"])
    }

    /// The CSAS's rows (key, N, V2) must be the records that pass its filter.
    fn check_csas(&self, out: &[(i32, Record)]) -> Result<(), String> {
        let mut expected = Rows::new();
        for i in (0..self.records).filter(|i| passes(*i)) {
            *expected
                .entry((key(i, self.keys).into_bytes(), i as i64, v(i) * 2))
                .or_default() += 1;
        }
        self.check_rows("CSAS", expected, out, ["N", "V2"])
    }

    /// Compares a stream's rows, as (key, two number fields), with the expected ones:
    /// none missing, none unexpected, and under exactly-once none repeated.
    fn check_rows(
        &self,
        what: &str,
        expected: Rows,
        out: &[(i32, Record)],
        fields: [&str; 2],
    ) -> Result<(), String> {
        let mut seen = Rows::new();
        for (_, r) in out {
            let value = r.value_json();
            let field = |f: &str| {
                value[f]
                    .as_i64()
                    .ok_or_else(|| format!("{what} row without {f}"))
            };
            let row = (
                r.key.clone().unwrap_or_default(),
                field(fields[0])?,
                field(fields[1])?,
            );
            *seen.entry(row).or_default() += 1;
        }
        let missing = expected.keys().filter(|k| !seen.contains_key(*k)).count();
        let unexpected = seen.keys().filter(|k| !expected.contains_key(*k)).count();
        let repeated: i64 = seen.values().map(|n| n - 1).filter(|n| *n > 0).sum();
        if missing > 0 || unexpected > 0 || (self.exactly_once && repeated > 0) {
            // A few of each kind, to tell a lost or repeated run of records from
            // scattered ones.
            let show = |rows: Vec<&(Vec<u8>, i64, i64)>| -> String {
                rows.iter()
                    .take(5)
                    .map(|(k, a, b)| format!("({}, {a}, {b})", String::from_utf8_lossy(k)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            return Err(format!(
                "{what} output differs: {} rows expected, {} written: {missing} missing, \
                 {unexpected} unexpected, {repeated} repeated; missing e.g. {}; repeated \
                 e.g. {}",
                expected.len(),
                out.len(),
                show(expected.keys().filter(|k| !seen.contains_key(*k)).collect()),
                show(
                    seen.iter()
                        .filter(|(_, n)| **n > 1)
                        .map(|(k, _)| k)
                        .collect()
                ),
            ));
        }
        Ok(())
    }

    /// A table of (COUNT, SUM) per key: its latest row per key must be the expected one.
    /// `per_record`: each input record updates one of its keys once.
    fn check_table(
        &self,
        what: &str,
        expected: HashMap<Vec<u8>, (i64, i64)>,
        out: &[(i32, Record)],
        per_record: bool,
    ) -> Result<(), String> {
        let latest = latest_per_key(out);
        let wrong = |(k, v): &(&Vec<u8>, &(i64, i64))| {
            !latest
                .get(*k)
                .is_some_and(|seen| window_ok(seen, v, self.exactly_once))
        };
        let examples: Vec<String> = expected
            .iter()
            .filter(wrong)
            .take(3)
            .map(|(k, v)| format!("{k:?}: expected {v:?}, got {:?}", latest.get(k)))
            .collect();
        let wrong_count = expected.iter().filter(wrong).count();
        if wrong_count > 0 || latest.len() != expected.len() {
            return Err(format!(
                "{what} output differs: {wrong_count} of {} keys wrong ({} written), e.g. {examples:?}",
                expected.len(),
                latest.len()
            ));
        }
        // Without the cache each input record updates one key once, and exactly-once
        // writes each update once: as many rows as records.
        if per_record && self.exactly_once && !self.cache && out.len() != self.records {
            return Err(format!(
                "{what} wrote {} rows for {} records: updates were lost or repeated",
                out.len(),
                self.records
            ));
        }
        Ok(())
    }
}

/// Whether every group committed the end offset of every partition of `topic`.
/// Restarts the server after a clean stop (its stores checkpointed), after a kill (the
/// checkpoints written after the last restore, and a changelog tail), and after a kill
/// with every checkpoint removed (the whole changelog read again), and measures each
/// restore.
fn restore_timings(server: &mut Server) -> Vec<(&'static str, f64, f64)> {
    let ids: Vec<String> = server.query_ids().into_iter().map(|(id, _)| id).collect();
    let tasks = |server: &Server| -> Vec<f64> {
        ids.iter()
            .map(|id| server.metric("sluice_query_tasks", id).unwrap_or(0.0))
            .collect()
    };
    let all_tasks = tasks(server);
    let mut out = Vec::new();
    for way in ["clean stop", "kill", "kill, no checkpoint"] {
        match way {
            "clean stop" => server.restart(),
            _ => {
                server.kill();
                if way == "kill, no checkpoint" {
                    crate::remove_checkpoints(server.state_dir());
                }
                server.restart();
            }
        }
        // Every task back and none restoring.
        crate::eventually(Duration::from_secs(600), "every task to restore", || {
            let restoring: f64 = ids
                .iter()
                .map(|id| server.metric("sluice_query_restoring", id).unwrap_or(1.0))
                .sum();
            (tasks(server) == all_tasks && restoring == 0.0).then_some(())
        });
        let sum = |name: &str| -> f64 { ids.iter().filter_map(|id| server.metric(name, id)).sum() };
        out.push((
            way,
            sum("sluice_query_restored_entries"),
            sum("sluice_query_restore_seconds"),
        ));
    }
    out
}

/// Waits until every persistent query of the server runs tasks with their state
/// restored.
fn running(server: &Server) {
    let ids: Vec<String> = server.query_ids().into_iter().map(|(id, _)| id).collect();
    crate::eventually(Duration::from_secs(120), "the queries to run", || {
        ids.iter()
            .all(|id| {
                server.metric("sluice_query_tasks", id).unwrap_or(0.0) > 0.0
                    && server.metric("sluice_query_restoring", id) == Some(0.0)
            })
            .then_some(())
    });
}

fn caught_up(topic: &str, groups: &[String]) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let timeout = Duration::from_secs(10);
    let check = || -> Option<bool> {
        let probe: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", crate::bootstrap())
            .create()
            .ok()?;
        let md = probe.fetch_metadata(Some(topic), timeout).ok()?;
        let partitions: Vec<i32> = md
            .topics()
            .first()?
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut ends = Vec::new();
        for p in &partitions {
            ends.push(probe.fetch_watermarks(topic, *p, timeout).ok()?.1);
        }
        for group in groups {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", crate::bootstrap())
                .set("group.id", group)
                .create()
                .ok()?;
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition(topic, *p);
            }
            let committed = consumer.committed_offsets(tpl, timeout).ok()?;
            for (p, end) in partitions.iter().zip(&ends) {
                match committed.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) if o >= *end => {}
                    _ => return Some(false),
                }
            }
        }
        Some(true)
    };
    check().unwrap_or(false)
}

/// Runs `scripts/kafka-local.sh stop|start`.
fn local_broker(command: &str) -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-local.sh");
    let status = std::process::Command::new(script)
        .arg(command)
        .status()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !status.success() {
        return Err(format!("{script} {command} failed: {status}"));
    }
    Ok(())
}

/// The CTAS is done when every windowed key's last row has its final count (at
/// least, under at-least-once, where a repeated record counts twice).
fn ctas_done(
    expected: &HashMap<Vec<u8>, (i64, i64)>,
    records: &[(i32, Record)],
    exactly_once: bool,
) -> bool {
    if records.len() < expected.len() {
        return false;
    }
    let latest = latest_per_key(records);
    expected.iter().all(|(k, expected)| {
        latest
            .get(k)
            .is_some_and(|seen| window_ok(seen, expected, exactly_once))
    })
}

/// Under exactly-once a window's final (COUNT, SUM) is exact; under at-least-once
/// records may count twice, never zero times.
fn window_ok(seen: &(i64, i64), expected: &(i64, i64), exactly_once: bool) -> bool {
    if exactly_once {
        seen == expected
    } else {
        seen.0 >= expected.0 && seen.1 >= expected.1
    }
}

/// The last (COUNT, SUM) written per windowed key, in offset order per partition (a
/// key's rows are all in one partition); a tombstone deletes its key.
fn latest_per_key(records: &[(i32, Record)]) -> HashMap<Vec<u8>, (i64, i64)> {
    let mut latest = HashMap::new();
    for (_, r) in records {
        if r.value.is_none() {
            if let Some(k) = &r.key {
                latest.remove(k);
            }
            continue;
        }
        let value = r.value_json();
        if let (Some(k), Some(c), Some(t)) = (
            r.key.clone(),
            value["CNT"].as_i64(),
            value["TOTAL"].as_i64(),
        ) {
            latest.insert(k, (c, t));
        }
    }
    latest
}
