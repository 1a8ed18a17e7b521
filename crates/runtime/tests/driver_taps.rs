//! The test driver's query lifecycle and taps: queries added late read the backlog,
//! removed queries stop, and push and pull queries read the driver's topics.

use sluice_runtime::driver::{Driver, TapEvent};
use sluice_runtime::pipeline::Pipeline;
use sluice_runtime::push::{Mode, PushConfig, PushEvent, PushQuery};
use sluice_sql::{Planned, PlannerConfig, SourceDesc, parse_statement, plan_statement};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SOURCE: &str =
    "CREATE STREAM S (ID STRING KEY, V INT) WITH (kafka_topic='s', value_format='JSON');";

fn catalog() -> BTreeMap<String, SourceDesc> {
    let mut c = BTreeMap::new();
    let stmt = parse_statement(SOURCE).unwrap();
    let Planned::CreateSource { source, .. } =
        plan_statement(&stmt, &c, &PlannerConfig::default()).unwrap()
    else {
        panic!("a source");
    };
    c.insert(source.name.clone(), source);
    c
}

fn plan(sql: &str) -> Planned {
    let stmt = parse_statement(sql).unwrap();
    plan_statement(&stmt, &catalog(), &PlannerConfig::default()).unwrap()
}

fn persistent(sql: &str) -> Pipeline {
    let Planned::CreateAs { plan, .. } = plan(sql) else {
        panic!("a CREATE ... AS SELECT");
    };
    Pipeline::new(&plan, None).unwrap()
}

fn produce(d: &mut Driver, key: &str, v: i64) {
    d.produce(
        "s",
        Some(key.as_bytes().to_vec()),
        Some(format!(r#"{{"V":{v}}}"#).into_bytes()),
        v,
    )
    .unwrap();
}

fn values(d: &Driver, topic: &str) -> Vec<String> {
    d.records(topic)
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default()).unwrap())
        .collect()
}

#[test]
fn a_query_added_from_the_start_reads_the_backlog_then_follows() {
    let mut d = Driver::new();
    d.create_topic("s", 1);
    produce(&mut d, "a", 1);
    produce(&mut d, "b", 2);
    let q = "CREATE STREAM OUT AS SELECT ID, V * 10 AS W FROM S;";
    d.add_query_from_start("q1", persistent(q)).unwrap();
    produce(&mut d, "c", 3);
    assert_eq!(
        values(&d, "OUT"),
        [r#"{"W":10}"#, r#"{"W":20}"#, r#"{"W":30}"#]
    );
    // A query added without the backlog sees only what comes next.
    d.add_query(
        "q2",
        persistent("CREATE STREAM OUT2 AS SELECT ID, V FROM S;"),
    );
    produce(&mut d, "d", 4);
    assert_eq!(values(&d, "OUT2"), [r#"{"V":4}"#]);
    assert!(d.remove_query("q2"));
    assert!(!d.has_query("q2"));
    produce(&mut d, "e", 5);
    assert_eq!(
        values(&d, "OUT2").len(),
        1,
        "a removed query writes nothing"
    );
    assert_eq!(values(&d, "OUT").len(), 5);
}

#[test]
fn taps_get_the_backlog_then_new_records_or_the_end() {
    let mut d = Driver::new();
    d.create_topic("s", 1);
    produce(&mut d, "a", 1);
    let (follow_tx, follow) = std::sync::mpsc::channel();
    d.tap(vec!["s".into()], |_| true, true, follow_tx);
    let (scan_tx, scan) = std::sync::mpsc::channel();
    d.tap(vec!["s".into()], |_| true, false, scan_tx);
    produce(&mut d, "b", 2);
    let keys = |rx: &std::sync::mpsc::Receiver<TapEvent>| -> Vec<String> {
        rx.try_iter()
            .map(|e| match e {
                TapEvent::Record { record, .. } => String::from_utf8(record.key.unwrap()).unwrap(),
                TapEvent::End => "END".into(),
            })
            .collect()
    };
    assert_eq!(keys(&follow), ["a", "b"]);
    assert_eq!(keys(&scan), ["a", "END"]);
    assert_eq!(d.taps(), 1);
    drop(follow);
    produce(&mut d, "c", 3);
    assert_eq!(d.taps(), 0, "a tap whose receiver is gone is dropped");
}

fn collect(
    rx: &mut tokio::sync::mpsc::Receiver<PushEvent>,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !until(&seen) && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(PushEvent::Row { json, .. }) => seen.push(String::from_utf8(json).unwrap()),
            Ok(PushEvent::LimitReached) => seen.push("LIMIT".into()),
            Ok(PushEvent::Completed) => seen.push("COMPLETED".into()),
            Ok(PushEvent::Error(e)) => seen.push(format!("ERROR {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    seen
}

fn transient(sql: &str) -> (sluice_plan::QueryPlan, Option<u64>, bool) {
    let Planned::Select {
        plan, limit, pull, ..
    } = plan(sql)
    else {
        panic!("a SELECT");
    };
    (*plan, limit, pull)
}

#[test]
fn push_and_pull_queries_read_the_driver() {
    let driver = Mutex::new(Driver::new());
    driver.lock().unwrap().create_topic("s", 1);
    produce(&mut driver.lock().unwrap(), "a", 1);

    // A push query from the end sees only new rows, up to its LIMIT.
    let (push_plan, limit, _) = transient("SELECT ID, V FROM S EMIT CHANGES LIMIT 2;");
    let config = |reset: &str, limit, mode| PushConfig {
        bootstrap_servers: String::new(),
        auto_offset_reset: reset.into(),
        limit,
        mode,
        shown: None,
        registry: None,
        view: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let _push = PushQuery::start_on_driver(
        "p",
        &push_plan,
        config("latest", limit, Mode::Push),
        &driver,
        tx,
    )
    .unwrap();
    produce(&mut driver.lock().unwrap(), "b", 2);
    produce(&mut driver.lock().unwrap(), "c", 3);
    produce(&mut driver.lock().unwrap(), "d", 4);
    let rows = collect(&mut rx, |s| s.last().is_some_and(|l| l == "LIMIT"));
    assert_eq!(rows, [r#"["b",2]"#, r#"["c",3]"#, "LIMIT"]);

    // A pull query on the stream reads it to its end and says so.
    let (pull_plan, _, pull) = transient("SELECT ID, V FROM S WHERE V > 2;");
    assert!(pull);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mode = Mode::Pull {
        table_keys: None,
        scan_order: None,
    };
    let _pull =
        PushQuery::start_on_driver("q", &pull_plan, config("latest", None, mode), &driver, tx)
            .unwrap();
    let rows = collect(&mut rx, |s| s.last().is_some_and(|l| l == "COMPLETED"));
    assert_eq!(rows, [r#"["c",3]"#, r#"["d",4]"#, "COMPLETED"]);
}
