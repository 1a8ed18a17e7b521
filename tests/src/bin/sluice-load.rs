//! A load test of the query endpoints: many concurrent `/query-stream` clients against
//! one server (or `--servers N` sharing a service id, the clients spread over them, so
//! that pull queries are forwarded to the owners of their keys' partitions) on the
//! local broker, for a bounded time, on loopback only. Some clients
//! (`--push-percent`, half by default) run push queries from the start of a stream with
//! a LIMIT, the others pull queries (key lookups on a table a query maintains); each
//! client loops until the time is up. It reports requests, errors, latency percentiles
//! and the servers' memory, and fails when any request failed, when push queries are
//! left running at the end, or when a server's memory grew past `--max-growth-mib` from
//! its level after warm-up.
//!
//! `sluice-load --clients 200 --seconds 60` (with the broker up and `SLUICE_BIN` set)

use serde_json::json;
use sluice_e2e::{Record, Server, eventually, produce, unique};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: sluice-load [--clients N] [--seconds N] [--keys N] [--push-percent N] [--max-growth-mib N] [--servers N]";

struct Load {
    clients: usize,
    seconds: u64,
    keys: usize,
    /// The share of clients that run push queries; the others run pull queries.
    push_percent: usize,
    max_growth_mib: u64,
    servers: usize,
}

fn main() -> ExitCode {
    let mut load = Load {
        clients: 200,
        seconds: 60,
        keys: 1000,
        push_percent: 50,
        max_growth_mib: 256,
        servers: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        let Some(value) = value else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--clients" => load.clients = value.max(1) as usize,
            "--seconds" => load.seconds = value.max(1),
            "--keys" => load.keys = value.max(1) as usize,
            "--push-percent" => load.push_percent = value.min(100) as usize,
            "--max-growth-mib" => load.max_growth_mib = value,
            "--servers" => load.servers = value.max(1) as usize,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    run(&load)
}

/// What the clients measured.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    rows: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    first_error: Mutex<Option<String>>,
}

fn run(load: &Load) -> ExitCode {
    let service = unique("load");
    let servers: Vec<Server> = (0..load.servers).map(|_| Server::start(&service)).collect();
    let server = &servers[0];
    let topic = unique("load_events");
    server.ok(&format!(
        "CREATE STREAM events (k STRING KEY, n INT) WITH (kafka_topic='{topic}', value_format='JSON', partitions=4);"
    ));
    let table_topic = unique("load_totals");
    server.ok(&format!(
        "CREATE TABLE totals WITH (kafka_topic='{table_topic}') AS SELECT k, SUM(n) AS total, COUNT(*) AS c FROM events GROUP BY k;"
    ));
    let records: Vec<Record> = (0..load.keys * 10)
        .map(|i| {
            let key = format!("k{}", i % load.keys);
            Record::new(Some(&key), Some(&format!(r#"{{"N":{}}}"#, i % 7)), i as i64)
        })
        .collect();
    produce(&topic, &records);
    if servers.len() > 1 {
        let query = server.query_id("CTAS_TOTALS");
        eventually(
            Duration::from_secs(120),
            "every server to hold some of the table's tasks",
            || {
                servers
                    .iter()
                    .all(|s| s.metric("sluice_query_tasks", &query).unwrap_or(0.0) >= 1.0)
                    .then_some(())
            },
        );
    }
    // Wait until the table holds every key with its final count (the query's tasks
    // go at their own pace: one key's count says nothing of another partition's).
    let url = server.url.clone();
    eventually(
        Duration::from_secs(120),
        "the table to hold every key",
        || {
            let rows = query(&url, "SELECT c FROM totals WHERE c = 10;").ok()?;
            (rows.len() == load.keys).then_some(())
        },
    );

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..load.clients)
        .map(|client| {
            let url = servers[client % servers.len()].url.clone();
            let (tally, stop, keys) = (tally.clone(), stop.clone(), load.keys);
            // Spread the push clients evenly among the pull clients.
            let push = (client + 1) * load.push_percent / 100 > client * load.push_percent / 100;
            std::thread::spawn(move || {
                let mut n = client;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    let sql = if push {
                        "SELECT k, n FROM events EMIT CHANGES LIMIT 5;".to_string()
                    } else {
                        format!("SELECT total FROM totals WHERE k = 'k{}';", n % keys)
                    };
                    let t = Instant::now();
                    match query(&url, &sql) {
                        Ok(rows) if !rows.is_empty() => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            tally.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
                            let us = t.elapsed().as_micros() as u64;
                            tally.latencies_us.lock().unwrap().push(us);
                        }
                        Ok(_) => record_error(&tally, format!("{sql}: no rows")),
                        Err(e) => record_error(&tally, format!("{sql}: {e}")),
                    }
                }
            })
        })
        .collect();

    // Memory: its level once every client is in its loop, its peak, its level at the end.
    std::thread::sleep(Duration::from_secs(load.seconds.min(5)));
    let rss = || -> Vec<u64> { servers.iter().map(|s| s.rss_mib().unwrap_or(0)).collect() };
    let warm_rss = rss();
    let mut peak_rss = warm_rss.clone();
    while started.elapsed() < Duration::from_secs(load.seconds) {
        std::thread::sleep(Duration::from_millis(500));
        for (peak, now) in peak_rss.iter_mut().zip(rss()) {
            *peak = (*peak).max(now);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let end_rss = rss();
    // Every push query must be gone once its client is.
    let leftover = eventually(Duration::from_secs(30), "push queries to end", || {
        let running: f64 = servers
            .iter()
            .map(|s| s.sample("sluice_push_queries", &[]))
            .sum::<Option<f64>>()?;
        (running == 0.0).then_some(running)
    });
    let forwarded: f64 = servers
        .iter()
        .filter_map(|s| s.sample("sluice_pull_forwarded_total", &[("outcome", "answered")]))
        .fold(0.0, |sum, n| sum + n);

    let mut latencies = tally.latencies_us.lock().unwrap().clone();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|us| *us as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    let (ok, errors) = (
        tally.ok.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    println!(
        "{} clients on {} server(s) for {elapsed:.1} s: {ok} queries ({:.0}/s), {} rows, {errors} errors, {forwarded} pull query parts forwarded; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server RSS (MiB) {warm_rss:?} after warm-up, peak {peak_rss:?}, {end_rss:?} at the end; push queries left: {leftover}",
        load.clients,
        servers.len(),
        ok as f64 / elapsed,
        tally.rows.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    if let Some(e) = tally.first_error.lock().unwrap().as_ref() {
        eprintln!("first error: {e}");
    }
    let grew = peak_rss
        .iter()
        .zip(&warm_rss)
        .map(|(peak, warm)| peak.saturating_sub(*warm))
        .max()
        .unwrap_or(0);
    if errors > 0 || ok == 0 || grew > load.max_growth_mib {
        eprintln!("sluice-load: FAILED (errors {errors}, memory grew {grew} MiB)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn record_error(tally: &Tally, e: String) {
    tally.errors.fetch_add(1, Ordering::Relaxed);
    tally.first_error.lock().unwrap().get_or_insert(e);
}

/// Runs a query over `/query-stream` and returns its rows (the lines after the header).
fn query(url: &str, sql: &str) -> Result<Vec<String>, String> {
    let body = json!({"sql": sql, "properties": {"auto.offset.reset": "earliest"}});
    let mut resp = ureq::post(&format!("{url}/query-stream"))
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .send_json(&body)
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    let mut lines = text.lines();
    let header = lines.next().ok_or("an empty response")?;
    if !header.contains("queryId") {
        return Err(format!("no header: {header}"));
    }
    let rows: Vec<String> = lines.map(str::to_string).collect();
    if let Some(bad) = rows.iter().find(|r| !r.starts_with('[')) {
        return Err(format!("not a row: {bad}"));
    }
    Ok(rows)
}
