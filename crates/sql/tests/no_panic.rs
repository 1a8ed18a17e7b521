//! No input panics the front end: random SQL-like token soups and arbitrary text go
//! through the parser and, when they parse, the planner. Errors are fine; panics are not.

use proptest::prelude::*;
use sluice_sql::{PlannerConfig, SourceDesc, parse_statements, plan_statement};
use std::collections::BTreeMap;

type Fixed = BTreeMap<String, SourceDesc>;

/// A catalog with one stream, S(K STRING KEY, A INT, B STRING, D DOUBLE).
fn catalog() -> Fixed {
    let stmt = &parse_statements(
        "CREATE STREAM S (K STRING KEY, A INT, B STRING, D DOUBLE) WITH (kafka_topic='s', value_format='JSON');",
    )
    .unwrap()[0];
    let empty = Fixed::new();
    let sluice_sql::Planned::CreateSource { source, .. } =
        plan_statement(stmt, &empty, &PlannerConfig::default()).unwrap()
    else {
        panic!("a source")
    };
    Fixed::from([(source.name.clone(), source)])
}

const FRAGMENTS: &[&str] = &[
    "CREATE",
    "STREAM",
    "TABLE",
    "AS",
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "PARTITION",
    "EMIT",
    "CHANGES",
    "FINAL",
    "LIMIT",
    "WITH",
    "(",
    ")",
    ",",
    ";",
    "*",
    "+",
    "-",
    "/",
    "%",
    "=",
    "<>",
    "<",
    ">=",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "TRUE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "INT",
    "BIGINT",
    "DOUBLE",
    "STRING",
    "DECIMAL(4, 2)",
    "ARRAY",
    "MAP",
    "STRUCT",
    "<",
    ">",
    "[",
    "]",
    "->",
    "=>",
    ":=",
    "KEY",
    "PRIMARY",
    "S",
    "K",
    "A",
    "B",
    "D",
    "X",
    "`q`",
    "'str'",
    "''",
    "0",
    "1",
    "2147483648",
    "1.5",
    "1e3",
    "COUNT",
    "SUM",
    "MAX",
    "AVG",
    "UCASE",
    "SUBSTRING",
    "GREATEST",
    "AS_VALUE",
    "LATEST_BY_OFFSET",
    "ROWTIME",
    "'2018'",
    "IN",
    "BETWEEN",
    "LIKE",
    "ESCAPE",
    "DROP",
    "TERMINATE",
    "SHOW",
    "QUERIES",
    "INSERT",
    "INTO",
    "kafka_topic='t'",
    "value_format='JSON'",
    "PARTITIONS=2",
    "TIMESTAMP='A'",
    "DESCRIBE",
    "--",
    "/*",
    "*/",
    "\n",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.join(" "))
}

fn check(sql: &str) {
    let catalog = catalog();
    if let Ok(statements) = parse_statements(sql) {
        for stmt in &statements {
            let _ = plan_statement(stmt, &catalog, &PlannerConfig::default());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn token_soups_never_panic(sql in soup()) {
        check(&sql);
    }

    #[test]
    fn well_formed_prefixes_never_panic(tail in soup()) {
        check(&format!("CREATE STREAM O AS SELECT {tail}"));
        check(&format!("CREATE TABLE O AS SELECT K, COUNT(*) FROM S GROUP BY {tail}"));
        check(&format!("SELECT * FROM S WHERE {tail}"));
    }

    #[test]
    fn arbitrary_text_never_panics(sql in "\\PC{0,200}") {
        check(&sql);
    }
}
