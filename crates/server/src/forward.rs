//! Pull queries answered by the servers that own the partitions they read. This server
//! answers for its own partitions (and for those nobody holds now), forwards the query
//! to each other owner for theirs (`/query-stream`, with `sluice.pull.partitions`
//! naming them, and the client's credentials), and hands the client the rows of each
//! answer in turn, the LIMIT counted over all.
//!
//! An owner that cannot be reached or refuses, before it has sent a row, is answered
//! for here instead: this server's view reads the same committed rows from the table's
//! topic, so the answer is the same, only slower the first time (the view reads those
//! partitions from their start). An owner that fails midway fails the query, as a
//! partial answer cannot be completed without sending some rows twice.

use crate::engine::{Engine, PULL_PARTITIONS, PushPlan};
use crate::error::StatementError;
use serde_json::Value;
use sluice_runtime::push::{PushEvent, PushQuery};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long an owner may take to accept the connection: past it, this server answers
/// for the owner's partitions itself.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an owner may take to start its answer (its view may have to catch up) and
/// between rows.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The client that forwards pull queries, and its counts.
pub struct Forwarder {
    agent: ureq::Agent,
    /// Answers owners gave for their partitions.
    pub answered: AtomicU64,
    /// Owners that could not answer, whose partitions this server answered for.
    pub answered_here: AtomicU64,
}

impl Forwarder {
    /// Trusts, over HTTPS, the certificates of this server's own TLS listener (the
    /// servers of a cluster share one), else the system's roots.
    pub fn new(tls_cert: Option<&std::path::Path>) -> Forwarder {
        let roots = tls_cert
            .and_then(|path| {
                crate::cli::pem_roots(path)
                    .map_err(|e| tracing::warn!("forwarded pull queries: {}", e.0))
                    .ok()
            })
            .unwrap_or(ureq::tls::RootCerts::PlatformVerifier);
        let agent = crate::cli::agent_config(roots)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(ANSWER_TIMEOUT))
            .timeout_recv_body(Some(ANSWER_TIMEOUT))
            .build()
            .into();
        Forwarder {
            agent,
            answered: AtomicU64::new(0),
            answered_here: AtomicU64::new(0),
        }
    }
}

/// Where a part of the answer comes from.
enum Part {
    /// This server's view.
    Here,
    /// The owner at this URL, for these partitions.
    Owner { url: String, partitions: Vec<i32> },
}

/// Starts a pull query answered by the owners of `routes` (by owner, None for this
/// server; see `Engine::pull_owners`): returns the merged answer and this server's part
/// (which must be kept for as long as the answer is read).
pub fn start(
    engine: &Arc<Engine>,
    push: &PushPlan,
    mut routes: BTreeMap<Option<String>, Vec<i32>>,
    sql: &str,
    properties: &BTreeMap<String, Value>,
    authorization: Option<String>,
) -> Result<(mpsc::Receiver<PushEvent>, PushQuery), StatementError> {
    let (tx, rx) = mpsc::channel(1024);
    let mut parts = Vec::new();
    let query = match routes.remove(&None) {
        Some(here) => {
            let (here_tx, here_rx) = mpsc::channel(1024);
            parts.push((Part::Here, here_rx));
            start_here(engine, push, here, here_tx)
                .map_err(|e| StatementError::server(e.to_string(), sql))?
        }
        None => PushQuery::detached(),
    };
    for (url, partitions) in routes {
        let Some(url) = url else { continue };
        let (owner_tx, owner_rx) = mpsc::channel(1024);
        let mut body_properties = properties.clone();
        body_properties.insert(PULL_PARTITIONS.into(), partitions.clone().into());
        let body = serde_json::json!({"sql": sql, "properties": body_properties});
        let agent = engine.forwarder.agent.clone();
        let target = url.clone();
        let authorization = authorization.clone();
        tokio::task::spawn_blocking(move || {
            let answer = read_answer(&agent, &target, &body, authorization.as_deref(), &owner_tx);
            let end = match answer {
                Ok(()) => PushEvent::Completed,
                Err(e) => PushEvent::Error(e),
            };
            let _ = owner_tx.blocking_send(end);
        });
        parts.push((Part::Owner { url, partitions }, owner_rx));
    }
    let engine = engine.clone();
    let push = push.clone();
    // `/close-query` stops this server's part by this flag, and so the merge.
    let stop = query.stopper();
    tokio::spawn(async move { merge(&engine, &push, parts, &stop, tx).await });
    Ok((rx, query))
}

/// This server's part of the answer: its view, for `partitions`.
fn start_here(
    engine: &Engine,
    push: &PushPlan,
    partitions: Vec<i32>,
    tx: mpsc::Sender<PushEvent>,
) -> sluice_runtime::Result<PushQuery> {
    let mut config = push.config.clone();
    if let Some(view) = config.view.as_mut() {
        view.partitions = Some(partitions);
    }
    engine.cluster.start_push(&push.id, &push.plan, config, tx)
}

/// Hands the client each part's rows in turn, up to the LIMIT. The answer then just
/// ends, as a pull query on a table's ends alone (its channel closes).
async fn merge(
    engine: &Engine,
    push: &PushPlan,
    parts: Vec<(Part, mpsc::Receiver<PushEvent>)>,
    stop: &AtomicBool,
    tx: mpsc::Sender<PushEvent>,
) {
    let limit = push.config.limit;
    let mut sent = 0u64;
    // Parts answered here in place of an owner: they run until the merge ends.
    let mut stand_ins = Vec::new();
    for (part, mut rx) in parts {
        let mut rows = 0u64;
        let mut stood_in = false;
        loop {
            match rx.recv().await {
                Some(PushEvent::Row { .. }) if stop.load(Ordering::SeqCst) => return,
                Some(PushEvent::Row { json, deletion }) => {
                    rows += 1;
                    sent += 1;
                    if tx.send(PushEvent::Row { json, deletion }).await.is_err() {
                        // The client went away.
                        return;
                    }
                    if limit.is_some_and(|l| sent >= l) {
                        return;
                    }
                }
                // This server's part ends by closing; an owner's by `Completed`.
                Some(PushEvent::Completed | PushEvent::LimitReached) | None => break,
                Some(PushEvent::Error(e)) => match &part {
                    Part::Owner { url, partitions } if rows == 0 && !stood_in => {
                        tracing::warn!(
                            owner = %url,
                            ?partitions,
                            "the owner did not answer a pull query ({e}); answering for its partitions here"
                        );
                        engine
                            .forwarder
                            .answered_here
                            .fetch_add(1, Ordering::Relaxed);
                        let (here_tx, here_rx) = mpsc::channel(1024);
                        match start_here(engine, push, partitions.clone(), here_tx) {
                            Ok(query) => {
                                stand_ins.push(query);
                                stood_in = true;
                                rx = here_rx;
                            }
                            Err(e) => {
                                let _ = tx.send(PushEvent::Error(e.to_string())).await;
                                return;
                            }
                        }
                    }
                    _ => {
                        let _ = tx.send(PushEvent::Error(e)).await;
                        return;
                    }
                },
            }
        }
        if matches!(part, Part::Owner { .. }) && !stood_in {
            engine.forwarder.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Forwards the query to the owner at `url` and sends on the rows of its answer; the
/// caller sends its end.
fn read_answer(
    agent: &ureq::Agent,
    url: &str,
    body: &Value,
    authorization: Option<&str>,
    tx: &mpsc::Sender<PushEvent>,
) -> Result<(), String> {
    let mut request = agent
        .post(&format!("{url}/query-stream"))
        .header("Accept", "application/vnd.ksqlapi.delimited.v1");
    if let Some(a) = authorization {
        request = request.header("Authorization", a);
    }
    let response = request
        .send_json(body)
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let mut reader = std::io::BufReader::new(response.into_body().into_reader());
    if !status.is_success() {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut text);
        return Err(format!("{url} answered {status}: {}", error_message(&text)));
    }
    let mut line = String::new();
    let mut header = true;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("{url} stopped answering: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        if std::mem::take(&mut header) {
            continue;
        }
        if !text.starts_with('[') {
            return Err(format!("{url}: {}", error_message(text)));
        }
        let row = PushEvent::Row {
            json: text.as_bytes().to_vec(),
            deletion: false,
        };
        if tx.blocking_send(row).is_err() {
            // The merge ended (the client went away or the LIMIT was reached).
            return Ok(());
        }
    }
}

/// The message of ksqlDB's error JSON, or the text as it is.
fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string())
}
