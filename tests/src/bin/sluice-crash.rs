//! The crash harness from the command line (see `sluice_e2e::crash`): a CSAS, CTASs and
//! a stream-stream join over partitioned topics, the server killed with SIGKILL at random
//! moments, the outputs checked against a failure-free run's. With `--kills 0` it
//! measures the sustained rate instead.
//!
//! `sluice-crash --records 200000 --keys 1000 --partitions 4 --kills 8 --guarantee exactly_once_v2`

use sluice_e2e::crash::{CrashRun, Disruption, Queries};
use std::process::ExitCode;

const USAGE: &str = "usage: sluice-crash [--records N] [--keys N] [--partitions N] [--kills N] \
[--guarantee exactly_once_v2|at_least_once] \
[--disruption kill-server|restart-broker|fail-over|churn] [--commit-interval-ms N] [--cache on|off] [--seed N] [--queries all|pair|totals] [--restore-timing on|off]";

fn main() -> ExitCode {
    let mut run = CrashRun {
        records: 200_000,
        keys: 1000,
        partitions: 4,
        kills: 8,
        disruption: Disruption::KillServer,
        exactly_once: true,
        commit_interval_ms: 100,
        cache: true,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        queries: Queries::All,
        restore_timing: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        let number = || value.parse::<u64>().ok();
        let ok = match flag.as_str() {
            "--records" => number().map(|n| run.records = n as usize),
            "--keys" => number().map(|n| run.keys = n.max(1) as usize),
            "--partitions" => number().map(|n| run.partitions = n.max(1) as u32),
            "--kills" => number().map(|n| run.kills = n as usize),
            "--commit-interval-ms" => number().map(|n| run.commit_interval_ms = n),
            "--seed" => number().map(|n| run.seed = n),
            "--queries" => match value.as_str() {
                "all" => Some(Queries::All),
                "pair" => Some(Queries::Pair),
                "totals" => Some(Queries::Totals),
                _ => None,
            }
            .map(|q| run.queries = q),
            "--restore-timing" => match value.as_str() {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            }
            .map(|on| run.restore_timing = on),
            "--cache" => match value.as_str() {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            }
            .map(|on| run.cache = on),
            "--disruption" => match value.as_str() {
                "kill-server" => Some(Disruption::KillServer),
                "restart-broker" => Some(Disruption::RestartBroker),
                "fail-over" => Some(Disruption::FailOver),
                "churn" => Some(Disruption::Churn),
                _ => None,
            }
            .map(|d| run.disruption = d),
            "--guarantee" => match value.as_str() {
                "exactly_once_v2" => Some(true),
                "at_least_once" => Some(false),
                _ => None,
            }
            .map(|e| run.exactly_once = e),
            _ => None,
        };
        if ok.is_none() {
            eprintln!("bad argument {flag} {value}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    eprintln!("sluice-crash: {run:?}");
    match run.run() {
        Ok(report) => {
            println!(
                "ok: {} records in {:.1} s ({:.0} records/s; server CPU {}), CSAS wrote {}, CTAS wrote {}, the join wrote {}, peak RSS {} MiB, {} commits refused in rebalances",
                run.records,
                report.elapsed.as_secs_f64(),
                report.rate,
                report
                    .server_cpu_seconds
                    .map_or("unknown".to_string(), |s| format!(
                        "{s:.1} s, {:.0} records per CPU second for all its queries",
                        run.records as f64 / s
                    )),
                report.csas_records,
                report.ctas_records,
                report.matched_records,
                report
                    .peak_rss_mib
                    .map_or("unknown".to_string(), |m| m.to_string()),
                report.refused_commits
            );
            for (way, entries, seconds) in &report.restores {
                println!(
                    "restart after {way}: {entries:.0} changelog entries read back, {seconds:.2} s of restore over the tasks"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
