//! State restored from a changelog behaves as if the query never stopped: a query
//! runs part of its input while recording changes at every "commit", a new pipeline is
//! restored from those changes alone, and it runs the rest; the outputs of the two
//! halves together equal those of one uninterrupted run, wherever the cut falls.

mod common;

use sluice_plan::QueryPlan;
use sluice_runtime::pipeline::{OutputRecord, Pipeline, SourceRecord};
use sluice_state::{MemoryStorage, Storage};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The plan of the last statement; the ones before it create its sources.
fn plan(statements: &str) -> QueryPlan {
    sluice_sql::plan_last_query(statements).expect("plans")
}

/// A record of one of the query's inputs (numbered as its sources are created).
#[derive(Clone)]
struct Input {
    input: usize,
    offset: i64,
    key: String,
    value: Option<String>,
    ts: i64,
}

fn run(pipeline: &mut Pipeline, records: &[Input], out: &mut Vec<OutputRecord>) {
    for r in records {
        let record = SourceRecord {
            key: Some(r.key.as_bytes()),
            value: r.value.as_deref().map(str::as_bytes),
            headers: &[],
            timestamp: r.ts,
            partition: 0,
            offset: r.offset,
        };
        pipeline.push(r.input, &record).expect("decodes");
        // Record by record, as the conformance cases run.
        pipeline.flush(out).expect("runs");
    }
}

/// A store the test keeps a handle on, to copy what the pipeline committed to it.
#[derive(Clone, Default)]
struct SharedStorage(Arc<Mutex<MemoryStorage>>);

impl SharedStorage {
    fn copy(&self) -> SharedStorage {
        SharedStorage(Arc::new(Mutex::new(self.0.lock().unwrap().clone())))
    }
}

impl Storage for SharedStorage {
    fn get(&self, key: &[u8]) -> sluice_state::Result<Option<Vec<u8>>> {
        self.0.lock().unwrap().get(key)
    }
    fn scan(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> sluice_state::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0.lock().unwrap().scan(from, to)
    }
    fn write(&mut self, changes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> sluice_state::Result<()> {
        self.0.lock().unwrap().write(changes)
    }
    fn clear(&mut self) -> sluice_state::Result<()> {
        self.0.lock().unwrap().clear()
    }
}

/// The stores of a pipeline by name, as the test holds them.
type Stores = BTreeMap<String, SharedStorage>;

fn copy(stores: &Stores) -> Stores {
    stores.iter().map(|(n, s)| (n.clone(), s.copy())).collect()
}

fn with_stores(p: &mut Pipeline, stores: &Stores) {
    p.use_state_stores(
        |name| {
            let store = stores.get(name).cloned().unwrap_or_default();
            Ok(Box::new(store))
        },
        1,
    )
    .unwrap();
}

fn opened(p: &mut Pipeline) -> Stores {
    let mut stores = Stores::new();
    p.use_state_stores(
        |name| {
            let store = SharedStorage::default();
            stores.insert(name.to_string(), store.clone());
            Ok(Box::new(store))
        },
        1,
    )
    .unwrap();
    stores
}

/// A restart: `stores` (None: state in memory) hold what the first run committed as of
/// changelog entry `checkpoint` or later; the rest of the changelog is replayed onto
/// them, all of it onto state in memory.
fn restored(
    plan: &QueryPlan,
    changelog: &[(Vec<u8>, Option<Vec<u8>>)],
    stores: Option<(&Stores, usize)>,
) -> Pipeline {
    let mut p = Pipeline::new(plan, None).unwrap();
    let from = match stores {
        Some((stores, checkpoint)) => {
            with_stores(&mut p, stores);
            checkpoint
        }
        None => 0,
    };
    p.clear_changelogged(stores.is_some()).unwrap();
    let stored = p.stored_state();
    for (i, (k, v)) in changelog.iter().enumerate() {
        if i < from && stored[k[0] as usize] {
            continue;
        }
        p.restore_change(k, v.as_deref()).unwrap();
    }
    p.finish_restore().unwrap();
    p
}

/// Checks every cut of `records` against the uninterrupted run: state in memory, and
/// aggregations' groups in state stores (which keep one group in memory) restored from
/// the whole changelog or from a checkpoint at each commit, with the stores as they
/// were at the checkpoint or as they were at the cut.
fn restores_at_every_cut(statements: &str, records: &[Input]) {
    let plan = plan(statements);
    // Each record at its own offset, as a topic would have them.
    let records: &[Input] = &records
        .iter()
        .enumerate()
        .map(|(i, r)| Input {
            offset: i as i64,
            ..r.clone()
        })
        .collect::<Vec<_>>();
    let mut whole = Vec::new();
    run(
        &mut Pipeline::new(&plan, None).unwrap(),
        records,
        &mut whole,
    );
    assert!(
        !whole.is_empty(),
        "the query writes something: {statements}"
    );
    for stored in [false, true] {
        for cut in 0..=records.len() {
            let mut first = Pipeline::new(&plan, None).unwrap();
            let stores = if stored {
                opened(&mut first)
            } else {
                Stores::new()
            };
            assert!(first.has_changelog());
            first.record_changes();
            let mut changelog: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            let mut out = Vec::new();
            // What the stores held at each commit, and how long the changelog was.
            let mut checkpoints = vec![(0, Stores::new())];
            // Commits every three records, so that keys are written more than once and
            // the restore must keep the last entry of each.
            for chunk in records[..cut].chunks(3) {
                run(&mut first, chunk, &mut out);
                let mut committed = Vec::new();
                first.take_changes(&mut committed).unwrap();
                first.commit_state(&committed).unwrap();
                changelog.extend(committed);
                checkpoints.push((changelog.len(), copy(&stores)));
            }
            let mut restarts = vec![(restored(&plan, &changelog, None), "from the start")];
            if stored {
                for (at, then) in &checkpoints {
                    restarts.push((
                        restored(&plan, &changelog, Some((then, *at))),
                        "from a checkpoint, stores as then",
                    ));
                    restarts.push((
                        // A copy: a run without recorded changes deletes expired
                        // windows from its stores at once.
                        restored(&plan, &changelog, Some((&copy(&stores), *at))),
                        "from a checkpoint, stores as at the cut",
                    ));
                }
            }
            for (mut second, how) in restarts {
                let mut out = out.clone();
                run(&mut second, &records[cut..], &mut out);
                assert_eq!(
                    out, whole,
                    "cut after {cut} records (state stores: {stored}, restored {how})"
                );
            }
        }
    }
}

fn rec(key: &str, value: Option<&str>, ts: i64) -> Input {
    on(0, key, value, ts)
}

fn on(input: usize, key: &str, value: Option<&str>, ts: i64) -> Input {
    Input {
        input,
        offset: 0,
        key: key.into(),
        value: value.map(Into::into),
        ts,
    }
}

#[test]
fn non_windowed_aggregates_restore() {
    let values = [
        ("a", 1, "x"),
        ("b", 2, "y"),
        ("a", 3, "x"),
        ("a", 4, "z"),
        ("b", 5, "y"),
        ("c", 6, "x"),
        ("a", 7, "y"),
    ];
    let records: Vec<Input> = values
        .iter()
        .enumerate()
        .map(|(i, (k, v, s))| {
            rec(
                "k",
                Some(&format!(r#"{{"G":"{k}","V":{v},"S":"{s}","D":{v}.5}}"#)),
                i as i64 * 10,
            )
        })
        .collect();
    restores_at_every_cut(
        "CREATE STREAM s (id STRING KEY, g STRING, v INT, s STRING, d DOUBLE) WITH (kafka_topic='s', key_format='KAFKA', value_format='JSON');
         CREATE TABLE t AS SELECT g, COUNT(*) AS n, SUM(v) AS total, AVG(d) AS mean, MIN(s) AS lo,
           COLLECT_LIST(s) AS all_s, COLLECT_SET(s) AS set_s, LATEST_BY_OFFSET(v) AS last_v,
           EARLIEST_BY_OFFSET(v, 2) AS first_two, TOPK(v, 2) AS top, HISTOGRAM(s) AS h,
           COUNT_DISTINCT(s) AS nd, STDDEV_SAMPLE(d) AS sd, CORRELATION(d, v) AS c
         FROM s GROUP BY g HAVING COUNT(*) < 4 EMIT CHANGES;",
        &records,
    );
}

#[test]
fn tumbling_and_session_windows_restore_with_their_stream_time() {
    let times = [0, 1_000, 61_000, 2_000, 130_000, 5_000, 131_000, 400_000];
    let records: Vec<Input> = times
        .iter()
        .enumerate()
        .map(|(i, t)| rec(["a", "b"][i % 2], Some(&format!(r#"{{"V":{i}}}"#)), *t))
        .collect();
    restores_at_every_cut(
        "CREATE STREAM s (id STRING KEY, v INT) WITH (kafka_topic='s', key_format='KAFKA', value_format='JSON');
         CREATE TABLE t AS SELECT id, COUNT(*) AS n, SUM(v) AS total FROM s
           WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) GROUP BY id EMIT CHANGES;",
        &records,
    );
    restores_at_every_cut(
        "CREATE STREAM s (id STRING KEY, v INT) WITH (kafka_topic='s', key_format='KAFKA', value_format='JSON');
         CREATE TABLE t AS SELECT id, COUNT(*) AS n, COLLECT_LIST(v) AS vs FROM s
           WINDOW SESSION (70 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY id EMIT CHANGES;",
        &records,
    );
    restores_at_every_cut(
        "CREATE STREAM s (id STRING KEY, v INT) WITH (kafka_topic='s', key_format='KAFKA', value_format='JSON');
         CREATE TABLE t AS SELECT id, COUNT(*) AS n FROM s
           WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 30 SECONDS, RETENTION 1 HOUR, GRACE PERIOD 0 SECONDS)
           GROUP BY id EMIT FINAL;",
        &records,
    );
}

#[test]
fn table_aggregation_restores_the_rows_it_retracts() {
    let records = vec![
        rec("1", Some(r#"{"REGION":"eu","AMOUNT":10}"#), 1),
        rec("2", Some(r#"{"REGION":"us","AMOUNT":5}"#), 2),
        rec("1", Some(r#"{"REGION":"us","AMOUNT":7}"#), 3),
        rec("2", None, 4),
        rec("3", Some(r#"{"REGION":"eu","AMOUNT":1}"#), 5),
        rec("1", Some(r#"{"REGION":"eu","AMOUNT":2}"#), 6),
    ];
    restores_at_every_cut(
        "CREATE TABLE accounts (id STRING PRIMARY KEY, region STRING, amount INT) WITH (kafka_topic='a', format='JSON');
         CREATE TABLE by_region AS SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM accounts GROUP BY region;",
        &records,
    );
}

#[test]
fn a_corrupt_changelog_entry_is_an_error() {
    let plan = plan(
        "CREATE STREAM s (id STRING KEY, v INT) WITH (kafka_topic='s', key_format='KAFKA', value_format='JSON');
         CREATE TABLE t AS SELECT id, COUNT(*) AS n FROM s GROUP BY id;",
    );
    let mut p = Pipeline::new(&plan, None).unwrap();
    assert!(p.restore_change(&[], Some(b"x")).is_err());
    assert!(p.restore_change(&[9, 0], Some(b"x")).is_err());
    assert!(p.restore_change(&[0, 0, 1], Some(b"x")).is_err());
}

/// Records of two inputs in a pseudo-random order: few keys, so that rows meet; times
/// that mostly rise but go back now and then; NULL fields and tombstones.
fn two_inputs(seed: u64, n: usize) -> Vec<Input> {
    let mut next = common::random(seed);
    let mut ts = 0i64;
    (0..n)
        .map(|i| {
            ts += next(2500) as i64;
            let at = if next(8) == 0 {
                ts - next(4000) as i64
            } else {
                ts
            };
            let value = match next(10) {
                0 => None,
                1 => Some(r#"{"V":null,"N":1,"F":"0"}"#.to_string()),
                v => Some(format!(r#"{{"V":"v{i}","N":{v},"F":"{}"}}"#, next(3))),
            };
            let input = next(2) as usize;
            on(input, &next(4).to_string(), value.as_deref(), at.max(0))
        })
        .collect()
}

const STREAMS: &str =
    "CREATE STREAM L (K STRING KEY, V STRING, N INT, F STRING) WITH (kafka_topic='l', format='JSON');
    CREATE STREAM R (K STRING KEY, V STRING, N INT, F STRING) WITH (kafka_topic='r', format='JSON');";
const TABLES: &str =
    "CREATE TABLE L (K STRING PRIMARY KEY, V STRING, N INT, F STRING) WITH (kafka_topic='l', format='JSON');
    CREATE TABLE R (K STRING PRIMARY KEY, V STRING, N INT, F STRING) WITH (kafka_topic='r', format='JSON');";
const STREAM_AND_TABLE: &str =
    "CREATE STREAM L (K STRING KEY, V STRING, N INT, F STRING) WITH (kafka_topic='l', format='JSON');
    CREATE TABLE R (K STRING PRIMARY KEY, V STRING, N INT, F STRING) WITH (kafka_topic='r', format='JSON');";

#[test]
fn stream_stream_joins_restore_their_windows_and_waiting_rows() {
    for query in [
        "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV FROM L JOIN R WITHIN 5 SECONDS ON L.K = R.K;",
        "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV, R.N FROM L LEFT JOIN R WITHIN (1 SECOND, 4 SECONDS) GRACE PERIOD 2 SECONDS ON L.K = R.K;",
        "CREATE STREAM O AS SELECT * FROM L FULL OUTER JOIN R WITHIN 3 SECONDS GRACE PERIOD 1 SECOND ON L.K = R.K;",
    ] {
        for seed in 1..=2 {
            restores_at_every_cut(&format!("{STREAMS}\n{query}"), &two_inputs(seed, 60));
        }
    }
}

#[test]
fn table_joins_restore_their_tables() {
    for (sources, query) in [
        (
            STREAM_AND_TABLE,
            "CREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV, R.N FROM L LEFT JOIN R ON L.K = R.K;",
        ),
        (
            TABLES,
            "CREATE TABLE O AS SELECT * FROM L FULL OUTER JOIN R ON L.K = R.K;",
        ),
        (
            TABLES,
            "CREATE TABLE O AS SELECT L.K, L.V AS LV, R.N AS RN FROM L JOIN R ON L.F = R.K;",
        ),
        (
            TABLES,
            "CREATE TABLE O AS SELECT L.K, L.V AS LV, R.N AS RN FROM L LEFT JOIN R ON L.F = R.K;",
        ),
        (
            TABLES,
            "CREATE TABLE O AS SELECT R.N, COUNT(*) AS C, SUM(L.N) AS S FROM L JOIN R ON L.K = R.K GROUP BY R.N;",
        ),
        (
            TABLES,
            "CREATE TABLE O AS SELECT R.N, COUNT(*) AS C, SUM(L.N) AS S FROM L LEFT JOIN R ON L.F = R.K GROUP BY R.N;",
        ),
    ] {
        for seed in 1..=2 {
            restores_at_every_cut(&format!("{sources}\n{query}"), &two_inputs(seed, 60));
        }
    }
}

#[test]
fn a_corrupt_join_entry_is_an_error() {
    let plan = plan(&format!(
        "{STREAMS}\nCREATE STREAM O AS SELECT * FROM L JOIN R WITHIN 5 SECONDS ON L.K = R.K;"
    ));
    for (entry, value) in [
        (vec![0u8, 0, 0, 1, 2], Some(&b"not a row"[..])),
        (vec![0u8, 7, 1], Some(&b""[..])),
        (vec![0u8, 1, 0], Some(&b""[..])),
    ] {
        let mut p = Pipeline::new(&plan, None).unwrap();
        p.restore_change(&entry, value).unwrap();
        assert!(p.finish_restore().is_err(), "{entry:?}");
    }
}

#[test]
fn expired_window_rows_leave_the_store_and_the_changelog() {
    let plan = plan(&format!(
        "{STREAMS}\nCREATE STREAM O AS SELECT L.K, L.V AS LV, R.V AS RV FROM L JOIN R WITHIN 1 SECOND GRACE PERIOD 0 SECONDS ON L.K = R.K;"
    ));
    let mut p = Pipeline::new(&plan, None).unwrap();
    let stores = opened(&mut p);
    p.record_changes();
    // Two keys, a record every 100 ms on alternate sides: 2 s of retention keeps about
    // 20 rows of the 600.
    let records: Vec<Input> = (0..600)
        .map(|i| {
            let mut r = on(
                i % 2,
                &(i / 2 % 2).to_string(),
                Some(&format!(r#"{{"V":"v{i}","N":{i},"F":"0"}}"#)),
                i as i64 * 100,
            );
            r.offset = i as i64;
            r
        })
        .collect();
    let mut out = Vec::new();
    let mut changelog: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for chunk in records.chunks(10) {
        run(&mut p, chunk, &mut out);
        let mut committed = Vec::new();
        p.take_changes(&mut committed).unwrap();
        p.commit_state(&committed).unwrap();
        // As compaction keeps it: the last entry per key, tombstones dropped.
        for (k, v) in committed {
            match v {
                Some(v) => changelog.insert(k, Some(v)),
                None => changelog.remove(&k),
            };
        }
    }
    assert!(!out.is_empty());
    let store = stores.values().next().expect("the join's store");
    let stored = store.scan(&[], None).unwrap();
    // Window rows in the store: under their key ([5, ...]) and in the time index ([4, ...]).
    let rows = stored.iter().filter(|(k, _)| k[0] == 5).count();
    let index = stored.iter().filter(|(k, _)| k[0] == 4).count();
    assert!(rows > 0 && rows <= 40, "{rows} window rows stored");
    assert_eq!(rows, index);
    let logged = changelog.keys().filter(|k| k[1] == 1).count();
    assert_eq!(logged, rows, "the changelog keeps the rows the store keeps");
}
