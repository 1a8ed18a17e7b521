//! Helpers for end-to-end tests against a real Kafka broker and the `sluice` binary.
//!
//! The broker is the one `scripts/kafka-local.sh start` runs (or `SLUICE_TEST_BOOTSTRAP`).
//! Every test uses its own topic names and service id, so tests run in parallel and
//! never see each other's data.

pub mod crash;
pub mod examples;
pub mod registry;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn bootstrap() -> String {
    std::env::var("SLUICE_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

thread_local! {
    /// The names this test (its thread) made; topics containing them are deleted when
    /// its server is dropped, so runs do not pile topics up in the local broker.
    static NAMES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        now % 100_000_000,
        N.fetch_add(1, Ordering::SeqCst)
    );
    NAMES.with(|n| n.borrow_mut().push(name.clone()));
    name
}

/// Deletes every topic whose name contains a name this test made (its inputs, sinks,
/// examples' topics and its server's command topic). Best effort: a test's result never
/// depends on it.
fn delete_test_topics() {
    let names = NAMES.with(|n| std::mem::take(&mut *n.borrow_mut()));
    if names.is_empty() {
        return;
    }
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let Ok(md) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) else {
        return;
    };
    let doomed: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        // Whole names only: `svc_1_2_7` must not match a topic of `svc_1_2_70`.
        .filter(|t| {
            names.iter().any(|n| {
                t.match_indices(n.as_str())
                    .any(|(i, _)| !t[i + n.len()..].starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .collect();
    if doomed.is_empty() {
        return;
    }
    let refs: Vec<&str> = doomed.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = futures::executor::block_on(admin.delete_topics(&refs, &opts));
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `sluice` binary built alongside the tests (or `SLUICE_BIN`).
pub fn sluice_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    // tests run from <target>/<profile>/deps/; the binary is in <target>/<profile>/.
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a target directory");
    let bin = dir.join("sluice");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --bin sluice) or set SLUICE_BIN",
        bin.display()
    );
    bin
}

/// A `sluice server` process on a free port.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub service_id: String,
    pub log: PathBuf,
    state_dir: PathBuf,
    listen: String,
    /// More `sluice server` flags, kept across restarts.
    extra_args: Vec<String>,
}

impl Server {
    pub fn start(service_id: &str) -> Server {
        Server::start_with(service_id, &[])
    }

    /// Starts a server with more flags, e.g. `("--commit-interval-ms", "50")`.
    pub fn start_with(service_id: &str, flags: &[(&str, &str)]) -> Server {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("sluice-e2e"));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut s = Server {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            service_id: service_id.to_string(),
            log: dir.join("server.log"),
            state_dir: dir.join("state"),
            listen: format!("127.0.0.1:{port}"),
            extra_args: flags
                .iter()
                .flat_map(|(k, v)| [k.to_string(), v.to_string()])
                .collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("a log file");
        let child = Command::new(sluice_bin())
            .args([
                "server",
                "--bootstrap-servers",
                &bootstrap(),
                "--listen",
                &self.listen,
            ])
            .args(["--service-id", &self.service_id])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sluice starts");
        self.child = Some(child);
        let url = format!("{}/healthcheck", self.url);
        eventually(
            Duration::from_secs(60),
            "the server to answer /healthcheck",
            || {
                if let Some(c) = self.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    panic!("the server exited with {status}; log:\n{}", self.log_text());
                }
                ureq::get(&url).call().ok().map(|_| ())
            },
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.wait();
        }
    }

    /// The extra flags it was started with, as pairs.
    /// Where the server keeps its queries' local state (`--state-dir`).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    pub fn flags(&self) -> Vec<(&str, &str)> {
        self.extra_args
            .chunks(2)
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect()
    }

    /// CPU time the process has used so far (user and system), in seconds; Linux only.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at its ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // Linux counts in USER_HZ, 100 per second on every common configuration.
        Some(ticks / 100.0)
    }

    /// The process's peak resident memory so far (VmHWM), in MiB; Linux only.
    pub fn peak_rss_mib(&self) -> Option<u64> {
        self.memory_mib("VmHWM:")
    }

    /// The process's resident memory now (VmRSS), in MiB; Linux only.
    pub fn rss_mib(&self) -> Option<u64> {
        self.memory_mib("VmRSS:")
    }

    /// A memory figure of `/proc/<pid>/status` (given in KiB), in MiB.
    fn memory_mib(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024)
    }

    /// Kills the server without warning (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// POST /ksql with the statements; returns the HTTP status and the JSON body.
    pub fn ksql(&self, sql: &str) -> (u16, Value) {
        self.ksql_with(sql, json!({}))
    }

    pub fn ksql_with(&self, sql: &str, props: Value) -> (u16, Value) {
        let body = json!({"ksql": sql, "streamsProperties": props});
        let resp = ureq::post(&format!("{}/ksql", self.url))
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(&body)
            .expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().expect("a body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, json)
    }

    /// Runs statements that must succeed, from the earliest offset.
    pub fn ok(&self, sql: &str) -> Value {
        let (status, body) = self.ksql_with(sql, json!({"auto.offset.reset": "earliest"}));
        assert_eq!(status, 200, "{sql}\n{body:#}\nlog:\n{}", self.log_text());
        body
    }

    /// The rows of a `/query` response (its header and final message left out); panics
    /// unless the query answers with 200 and without an error message.
    pub fn query_rows(&self, sql: &str) -> Vec<Value> {
        let resp = ureq::post(&format!("{}/query", self.url))
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .send_json(json!({"ksql": sql}))
            .expect("the server answers");
        let status = resp.status();
        let text = resp.into_body().read_to_string().expect("a body");
        assert_eq!(status, 200, "{sql}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let elements = body.as_array().expect("an array");
        if let Some(e) = elements.iter().find(|e| e.get("errorMessage").is_some()) {
            panic!("{sql} failed: {e}");
        }
        elements
            .iter()
            .filter_map(|e| e.get("row").map(|r| r["columns"].clone()))
            .collect()
    }

    /// A persistent query's figure `name` from /metrics; `None` until it is published.
    pub fn metric(&self, name: &str, query_id: &str) -> Option<f64> {
        self.sample(name, &[("query", query_id)])
    }

    /// The sample of the /metrics family `name` with exactly these labels, in order
    /// (none: the family's one unlabelled sample).
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = ureq::get(&format!("{}/metrics", self.url))
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let prefix = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{}}} ", labels.join(","))
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    }

    /// The id of the persistent query whose id starts with `prefix` (e.g. `CSAS_OUT`).
    pub fn query_id(&self, prefix: &str) -> String {
        let ids = self.query_ids();
        ids.iter()
            .map(|(id, _)| id.clone())
            .find(|id| id.starts_with(prefix))
            .unwrap_or_else(|| panic!("no query {prefix}* in {ids:?}"))
    }

    /// The ids of the persistent queries, from SHOW QUERIES.
    pub fn query_ids(&self) -> Vec<(String, String)> {
        let body = self.ok("SHOW QUERIES;");
        body[0]["queries"]
            .as_array()
            .expect("a query list")
            .iter()
            .map(|q| {
                (
                    q["id"].as_str().unwrap_or_default().to_string(),
                    q["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        delete_test_topics();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A record as the tests write and read them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
}

impl Record {
    pub fn new(key: Option<&str>, value: Option<&str>, timestamp: i64) -> Record {
        Record {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            timestamp,
        }
    }

    pub fn value_str(&self) -> &str {
        self.value
            .as_deref()
            .map(|v| std::str::from_utf8(v).expect("UTF-8"))
            .unwrap_or("<null>")
    }

    pub fn value_json(&self) -> Value {
        serde_json::from_slice(self.value.as_deref().expect("a value")).expect("JSON")
    }
}

/// Counts failed deliveries: a test must not blame the engine for records that never
/// reached the broker.
#[derive(Default)]
struct DeliveryCheck {
    failed: std::sync::Mutex<Vec<String>>,
}

impl rdkafka::ClientContext for DeliveryCheck {}

impl rdkafka::producer::ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }
    }
}

/// Produces the records and waits until every one is acknowledged; panics on any failure.
pub fn produce(topic: &str, records: &[Record]) {
    let producer: BaseProducer<DeliveryCheck> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        // A send retried while the broker restarts must not write a record twice: the
        // crash harness counts on each input record being there once.
        .set("enable.idempotence", "true")
        .create_with_context(DeliveryCheck::default())
        .expect("a producer");
    for r in records {
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic).timestamp(r.timestamp);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        // A full queue empties as deliveries are served: serve them and send again.
        let mut pending = rec;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    producer.poll(Duration::from_millis(10));
                    pending = back;
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let failed = producer
        .context()
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(
        failed.is_empty(),
        "{} of {} records to {topic} were not delivered: {}",
        failed.len(),
        records.len(),
        failed[0]
    );
}

/// Reads a topic from the beginning until `count` records have arrived (all partitions,
/// read_committed), then keeps reading briefly to catch any extra record.
pub fn consume(topic: &str, count: usize, timeout: Duration) -> Vec<Record> {
    consume_with_partitions(topic, count, timeout)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// As `consume`, with the partition each record came from.
pub fn consume_with_partitions(topic: &str, count: usize, timeout: Duration) -> Vec<(i32, Record)> {
    consume_until(topic, timeout, |records| records.len() >= count)
}

/// Reads a topic from the beginning (all partitions, read_committed) until `done` holds
/// for what has arrived, then briefly longer to catch any extra record; or until the
/// timeout. At-least-once outputs may repeat records, so "done" can be about distinct ones.
pub fn consume_until(
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[(i32, Record)]) -> bool,
) -> Vec<(i32, Record)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("e2e-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("a consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle: Option<Instant> = None;
    // `done` may be costly over many records: with many, ask it again only after new
    // records and a pause.
    let mut checked = (usize::MAX, Instant::now());
    let mut finished = false;
    loop {
        if !finished
            && checked.0 != out.len()
            && (out.len() < 5000 || checked.1.elapsed() > Duration::from_millis(250))
        {
            finished = done(&out);
            checked = (out.len(), Instant::now());
        }
        if finished {
            let until = *settle.get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
            if Instant::now() > until {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let _ = m.headers().map(|h| h.count());
            out.push((
                m.partition(),
                Record {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    timestamp: m.timestamp().to_millis().unwrap_or(-1),
                },
            ));
        }
    }
    out
}

/// Whether a topic exists.
pub fn topic_exists(topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("a client");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

/// The latest JSON value per key (as text) of a table's output records.
pub fn latest_values(records: &[(i32, Record)]) -> std::collections::HashMap<String, Value> {
    records
        .iter()
        .map(|(_, r)| {
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                r.value_json(),
            )
        })
        .collect()
}

impl Server {
    /// Kills the server (`kill -9`), removes its state checkpoints and starts it again:
    /// its queries rebuild their state stores from their changelogs alone.
    pub fn restart_without_checkpoints(&mut self) {
        self.kill();
        remove_checkpoints(self.state_dir());
        self.restart();
    }
}

/// Removes every state checkpoint under a server's state directory: its next start
/// rebuilds its state stores from the whole changelog.
pub fn remove_checkpoints(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            remove_checkpoints(&path);
        } else if path.file_name().is_some_and(|n| n == "sluice.checkpoint") {
            let _ = std::fs::remove_file(&path);
        }
    }
}
