//! The server's figures in Prometheus' text format (`GET /metrics`).

use crate::engine::Engine;
use sluice_runtime::QueryStats;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// One metric family: its help, its type, and a sample per label set.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            let _ = writeln!(out, "{}{labels} {value}", self.name);
        }
    }
}

/// A label set; values are escaped as the format asks.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Per-query figures, each read from the query's stats.
type QueryFigure = (
    &'static str,
    &'static str,
    &'static str,
    fn(&QueryStats) -> f64,
);

const QUERY_FIGURES: &[QueryFigure] = &[
    (
        "sluice_query_records_in_total",
        "counter",
        "Records the query read from its sources.",
        |s| s.records_in.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_records_out_total",
        "counter",
        "Records the query wrote to its sink.",
        |s| s.records_out.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_skipped_records_total",
        "counter",
        "Records skipped because they could not be read (also on the processing log).",
        |s| s.decode_errors.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_expression_errors_total",
        "counter",
        "Rows where an expression failed and yielded NULL.",
        |s| s.expression_errors.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_restarts",
        "gauge",
        "Restarts after errors since the query was last healthy.",
        |s| s.restarts.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_failed",
        "gauge",
        "1 when a poison (the same error of the query's own, again and again) stopped the \
         query on this server; RESUME starts it again.",
        |s| s.failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() as u8 as f64,
    ),
    (
        "sluice_query_running_here",
        "gauge",
        "1 when this server runs some of the query's tasks.",
        |s| (s.tasks_held() > 0) as u8 as f64,
    ),
    (
        "sluice_query_tasks",
        "gauge",
        "The query's tasks (partitions of its sources) this server runs.",
        |s| s.tasks_held() as f64,
    ),
    (
        "sluice_query_commits_total",
        "counter",
        "Commits (transactions, or offset commits under at-least-once).",
        |s| s.commits.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_commit_seconds_total",
        "counter",
        "Time spent committing.",
        |s| s.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
    ),
    (
        "sluice_query_refused_commits_total",
        "counter",
        "Commits the query's group refused during a rebalance: the interval was aborted \
         and its tasks started again from the last commit.",
        |s| s.refused_commits.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_restoring",
        "gauge",
        "The query's tasks restoring their state from its changelog now.",
        |s| s.restoring.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_restored_entries",
        "gauge",
        "State entries read back from the changelog since the query started here (its tasks' \
         starts, moves and restarts in place).",
        |s| s.restored_entries.load(Ordering::Relaxed) as f64,
    ),
    (
        "sluice_query_restore_seconds",
        "gauge",
        "How long the last restore took.",
        |s| s.restore_millis.load(Ordering::Relaxed) as f64 / 1e3,
    ),
];

pub fn render(engine: &Engine) -> String {
    let mut families: Vec<Family> = QUERY_FIGURES
        .iter()
        .map(|(name, kind, help, _)| Family::new(name, kind, help))
        .collect();
    let mut lag = Family::new(
        "sluice_query_consumer_lag",
        "gauge",
        "Records of an input partition the query has yet to read (measured every 5 s).",
    );
    let mut state_bytes = Family::new(
        "sluice_query_state_bytes",
        "gauge",
        "Bytes the query's state stores take on this server's disk.",
    );
    let mut states = Family::new("sluice_queries", "gauge", "Persistent queries by state.");
    let mut by_state: std::collections::BTreeMap<&str, f64> = ["RUNNING", "ERROR", "PENDING"]
        .into_iter()
        .map(|s| (s, 0.0))
        .collect();
    {
        let ms = engine.metastore.lock().unwrap_or_else(|p| p.into_inner());
        for q in ms.queries.values() {
            *by_state.entry(q.state()).or_default() += 1.0;
            let Some(stats) = q.running.as_ref().and_then(|r| r.stats()) else {
                continue;
            };
            let l = labels(&[("query", &q.id)]);
            for (family, (_, _, _, read)) in families.iter_mut().zip(QUERY_FIGURES) {
                family.samples.push((l.clone(), read(stats)));
            }
            for ((topic, partition), n) in stats.lags() {
                let partition = partition.to_string();
                let l = labels(&[
                    ("query", &q.id),
                    ("topic", &topic),
                    ("partition", &partition),
                ]);
                lag.samples.push((l, n as f64));
            }
            let bytes = dir_bytes(&engine.query_state_dir(&q.id));
            state_bytes.samples.push((l, bytes as f64));
        }
    }
    families.push(lag);
    families.push(state_bytes);
    states.samples = by_state
        .into_iter()
        .map(|(s, n)| (labels(&[("state", s)]), n))
        .collect();
    families.push(states);
    let mut push = Family::new(
        "sluice_push_queries",
        "gauge",
        "Push and pull queries being answered now.",
    );
    let active = engine
        .push_queries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    push.samples.push((String::new(), active as f64));
    families.push(push);
    let mut view_rows = Family::new(
        "sluice_pull_view_rows_read_total",
        "counter",
        "Rows pull queries read from each table's view (a key lookup reads only its keys' rows).",
    );
    if let Some(views) = engine.cluster.views() {
        view_rows.samples = views
            .rows_served()
            .into_iter()
            .map(|(topic, n)| (labels(&[("topic", &topic)]), n as f64))
            .collect();
    }
    families.push(view_rows);
    let mut forwarded = Family::new(
        "sluice_pull_forwarded_total",
        "counter",
        "Parts of pull queries sent to the servers owning their partitions: answered by the owner, or answered here because the owner could not.",
    );
    let f = &engine.forwarder;
    forwarded.samples = vec![
        (
            labels(&[("outcome", "answered")]),
            f.answered.load(Ordering::Relaxed) as f64,
        ),
        (
            labels(&[("outcome", "answered_here")]),
            f.answered_here.load(Ordering::Relaxed) as f64,
        ),
    ];
    families.push(forwarded);
    let mut degraded = Family::new(
        "sluice_server_degraded",
        "gauge",
        "1 when the server could not apply a command (see /healthcheck).",
    );
    degraded
        .samples
        .push((String::new(), engine.is_degraded() as u8 as f64));
    families.push(degraded);
    let mut out = String::new();
    for f in &families {
        f.write(&mut out);
    }
    out
}

/// The bytes of the files under `dir` (0 when it does not exist).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("query", "a\"b\\c\nd")]),
            r#"{query="a\"b\\c\nd"}"#
        );
    }

    #[test]
    fn a_family_is_written_with_help_type_and_samples() {
        let mut f = Family::new("x_total", "counter", "Things.");
        f.samples.push((labels(&[("query", "Q")]), 3.0));
        let mut out = String::new();
        f.write(&mut out);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{query=\"Q\"} 3\n"
        );
    }

    #[test]
    fn a_directory_counts_the_bytes_of_every_file_below_it() {
        let dir = std::env::temp_dir().join(format!("sluice-dir-bytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("x"), [0u8; 10]).unwrap();
        std::fs::write(dir.join("a/b/y"), [0u8; 32]).unwrap();
        assert_eq!(dir_bytes(&dir), 42);
        assert_eq!(dir_bytes(&dir.join("nope")), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
