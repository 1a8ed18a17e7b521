//! INSERT INTO ... VALUES from SQL to the record's bytes.

use sluice_runtime::values::values_record;
use sluice_sql::{Planned, PlannerConfig, SourceDesc, parse_statements, plan_statement};
use std::collections::BTreeMap;

/// An INSERT's record: key bytes, value text, timestamp.
type Inserted = (Option<Vec<u8>>, Option<String>, i64);

/// Runs the statements; returns each INSERT's record, or the refusal of the first that
/// fails.
fn inserts(statements: &str) -> Result<Vec<Inserted>, String> {
    let mut catalog: BTreeMap<String, SourceDesc> = BTreeMap::new();
    let mut records = Vec::new();
    for stmt in parse_statements(statements).map_err(|e| e.to_string())? {
        match plan_statement(&stmt, &catalog, &PlannerConfig::default())
            .map_err(|e| e.to_string())?
        {
            Planned::CreateSource { source, .. } => {
                catalog.insert(source.name.clone(), source);
            }
            Planned::InsertValues {
                topic,
                values,
                rowtime,
                ..
            } => {
                let r = values_record(&topic, &values, rowtime.as_ref(), Some(99), None).unwrap();
                records.push((
                    r.key,
                    r.value.map(|v| String::from_utf8(v).unwrap()),
                    r.timestamp,
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok(records)
}

const STREAM: &str = "CREATE STREAM s (id INT KEY, name STRING, score DOUBLE) WITH (kafka_topic='s', value_format='JSON');";

#[test]
fn values_become_a_record_in_the_targets_formats() {
    let records = inserts(&format!(
        "{STREAM}
         INSERT INTO s (id, name, score) VALUES (1, 'a', 2);
         INSERT INTO s (name) VALUES ('b');
         INSERT INTO s VALUES (2, UCASE('c'), 1.5);
         INSERT INTO s (ROWTIME, id, name) VALUES (1234, 3, 'd');"
    ))
    .unwrap();
    assert_eq!(
        records,
        [
            (
                Some(1i32.to_be_bytes().to_vec()),
                Some(r#"{"NAME":"a","SCORE":2.0}"#.into()),
                99
            ),
            (None, Some(r#"{"NAME":"b","SCORE":null}"#.into()), 99),
            (
                Some(2i32.to_be_bytes().to_vec()),
                Some(r#"{"NAME":"C","SCORE":1.5}"#.into()),
                99
            ),
            (
                Some(3i32.to_be_bytes().to_vec()),
                Some(r#"{"NAME":"d","SCORE":null}"#.into()),
                1234
            ),
        ]
    );
}

#[test]
fn bad_values_are_refused_with_the_reason() {
    let refused = |sql: &str| inserts(&format!("{STREAM}\n{sql}")).unwrap_err();
    assert!(
        refused("INSERT INTO s (id, name) VALUES (1);")
            .contains("Expected number columns and values to match: 2, 1"),
    );
    assert!(refused("INSERT INTO s (score) VALUES ('x');").contains("Expected type DOUBLE"));
    assert!(
        refused("INSERT INTO s (nope) VALUES (1);").contains("Column name NOPE does not exist")
    );
    assert!(
        refused("INSERT INTO s (ROWPARTITION) VALUES (1);")
            .contains("Inserting into column `ROWPARTITION` is not allowed.")
    );
    assert!(refused("INSERT INTO t (id) VALUES (1);").contains("unknown stream/table: `T`"));
    let table = "CREATE TABLE t (id INT PRIMARY KEY, v STRING) WITH (kafka_topic='t', value_format='JSON');";
    let e = inserts(&format!("{table}\nINSERT INTO t (v) VALUES ('x');")).unwrap_err();
    assert!(
        e.contains("Value for primary key column(s) ID is required for tables"),
        "{e}"
    );
}
