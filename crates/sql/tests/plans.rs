//! Planner snapshots. Each `tests/plans/*.sql` is read as a script (so CREATE TYPE and
//! DEFINE apply to the statements after them) and planned statement by statement; the
//! snapshot is the last query's plan as EXPLAIN renders it, and whether it runs as a task
//! per partition (and if so through a repartition topic, the two parts' plans). A file whose first line is
//! `-- fail=<text>` must be refused with a message containing the text, and the
//! message is its snapshot. New files write their snapshot with `INSTA_UPDATE=always`.

use sluice_sql::script::{ScriptContext, parse_script};
use sluice_sql::{Planned, PlannerConfig, SourceDesc, plan_statement};
use std::collections::BTreeMap;
use std::path::Path;

/// The last query's plan, or why a statement was refused.
fn render(text: &str) -> Result<String, String> {
    let mut context = ScriptContext::default();
    let statements = parse_script(text, &mut context).map_err(|e| e.to_string())?;
    let mut catalog: BTreeMap<String, SourceDesc> = BTreeMap::new();
    let mut last = None;
    for stmt in &statements {
        match plan_statement(stmt, &catalog, &PlannerConfig::default())
            .map_err(|e| e.to_string())?
        {
            Planned::CreateSource { source, .. } => {
                catalog.insert(source.name.clone(), source);
            }
            Planned::CreateAs { sink, plan, .. } => {
                catalog.insert(sink.name.clone(), sink);
                last = Some(plan);
            }
            Planned::CreateType { .. } | Planned::Variable { .. } => {}
            other => return Err(format!("a plan file holds {other:?}")),
        }
    }
    let plan = last.ok_or("the file has no query")?;
    let tasks = if plan.root.runs_per_partition() {
        "one per partition".to_string()
    } else if let Some((writers, reader)) = plan
        .root
        .split_at_repartition(&|role| format!("{role}-repartition"))
    {
        let mut parts = String::new();
        for w in &writers {
            parts.push_str(&w.writer.explain());
            if let Some(topic) = &w.partitions_of {
                parts.push_str(&format!("  (as many partitions as {topic})\n"));
            }
            parts.push('\n');
        }
        format!(
            "one per partition, in {} parts:\n{parts}{}",
            writers.len() + 1,
            reader.explain()
        )
    } else {
        "one over every partition".to_string()
    };
    Ok(format!("{}\ntasks: {tasks}", plan.root.explain()))
}

#[test]
fn plans_match_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/plans")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the plan files are there");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a plan file");
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name")
            .to_string();
        let fail = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-- fail="))
            .map(str::trim);
        match (fail, render(&text)) {
            (Some(want), Err(message)) => {
                assert!(message.contains(want), "{name}: refused with {message}");
                insta::assert_snapshot!(name, message);
            }
            (Some(want), Ok(plan)) => {
                panic!("{name}: should be refused ({want}), but plans:\n{plan}")
            }
            (None, Ok(plan)) => insta::assert_snapshot!(name, plan),
            (None, Err(e)) => panic!("{name}: {e}"),
        }
    }
}
