//! The rules of pull queries (a SELECT without EMIT): what they may contain, which
//! tables they may read, and, when table scans are off
//! (`ksql.query.pull.table.scan.enabled=false`), which WHERE clauses a key lookup or
//! key range scan can answer. The messages are ksqlDB's.

use crate::ast::{self, Expr, ExprKind, LiteralValue};
use crate::error::SqlError;
use crate::planner::{Catalog, SourceDesc, SourceKindName};
use sluice_plan::{BinaryOp, SqlType};
use std::ops::Bound;

const MORE_INFO: &str = "See https://cnfl.io/queries for more info.\nAdd EMIT CHANGES if you intended to issue a push query.";

/// Pull query settings.
#[derive(Clone, Debug)]
pub struct PullConfig {
    /// `ksql.query.pull.table.scan.enabled` (on by default).
    pub table_scan: bool,
    /// `ksql.query.pull.range.scan.enabled` (on by default).
    pub range_scan: bool,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            table_scan: true,
            range_scan: true,
        }
    }
}

/// Checks a pull query before it is planned (`check_planned` follows planning).
pub fn check(
    stmt: &ast::Statement,
    q: &ast::Query,
    catalog: &dyn Catalog,
    config: &PullConfig,
) -> Result<(), SqlError> {
    let fail = |m: String| Err(SqlError::semantic(stmt.pos, m));
    if !q.joins.is_empty() {
        return fail(format!(
            "Pull queries don't support JOIN clauses. {MORE_INFO}"
        ));
    }
    if q.window.is_some() {
        return fail(format!(
            "Pull queries don't support WINDOW clauses. {MORE_INFO}"
        ));
    }
    if !q.group_by.is_empty() {
        return fail(format!(
            "Pull queries don't support GROUP BY clauses. {MORE_INFO}"
        ));
    }
    if !q.partition_by.is_empty() {
        return fail(format!(
            "Pull queries don't support PARTITION BY clauses. {MORE_INFO}"
        ));
    }
    let select_columns: Vec<String> = q
        .select
        .iter()
        .flat_map(|item| match item {
            ast::SelectItem::Expr { expr, .. } | ast::SelectItem::StructStar { expr, .. } => {
                expr.column_names()
            }
            ast::SelectItem::Star { .. } => Vec::new(),
        })
        .collect();
    refuse_pseudo_columns(stmt, &select_columns, "SELECT")?;
    if let Some(w) = &q.where_clause {
        refuse_pseudo_columns(stmt, &w.column_names(), "WHERE")?;
    }
    let Some(source) = catalog.source(&q.from.name) else {
        // The planner reports the missing source.
        return Ok(());
    };
    if source.kind == SourceKindName::Stream {
        return Ok(());
    }
    if let Some(w) = &q.where_clause {
        check_in_lists(stmt, w, source)?;
        if !config.table_scan {
            check_key_lookup(stmt, w, source, config)?;
        }
    }
    Ok(())
}

/// Checks a pull query on a table once it has planned: the table must have a store.
pub fn check_planned(
    stmt: &ast::Statement,
    q: &ast::Query,
    catalog: &dyn Catalog,
) -> Result<(), SqlError> {
    match catalog.source(&q.from.name) {
        Some(source) if source.kind == SourceKindName::Table && !is_materialized(source) => {
            Err(SqlError::semantic(
                stmt.pos,
                format!(
                    "The `{name}` table isn't queryable. To derive a queryable table, you can do 'CREATE TABLE QUERYABLE_{name} AS SELECT * FROM {name}'. See https://cnfl.io/queries for more info.",
                    name = source.name
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// ROWPARTITION and ROWOFFSET are not kept in a table's store.
fn refuse_pseudo_columns(
    stmt: &ast::Statement,
    columns: &[String],
    clause: &str,
) -> Result<(), SqlError> {
    let mut found: Vec<&str> = Vec::new();
    for c in columns {
        if matches!(c.as_str(), "ROWPARTITION" | "ROWOFFSET") && !found.contains(&c.as_str()) {
            found.push(c);
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = found.iter().map(|c| format!("`{c}`")).collect();
    Err(SqlError::semantic(
        stmt.pos,
        format!(
            "Pull queries don't support the following columns in {clause} clauses: {}",
            list.join(", ")
        ),
    ))
}

/// A table has a store to answer pull queries when a query writes it (CREATE TABLE AS
/// SELECT) or it was created with CREATE SOURCE TABLE.
fn is_materialized(source: &SourceDesc) -> bool {
    source.is_source
        || crate::parse_statements(&source.sql)
            .map(|s| {
                s.iter()
                    .any(|s| matches!(s.kind, ast::StatementKind::CreateAs(_)))
            })
            .unwrap_or(false)
}

fn key_type<'a>(source: &'a SourceDesc, name: &str) -> Option<&'a SqlType> {
    source
        .topic
        .schema
        .keys()
        .find(|k| k.name == name)
        .map(|k| &k.ty)
}

/// `KEY IN (...)`, anywhere in the clause: each literal must convert to the key's type.
fn check_in_lists(stmt: &ast::Statement, e: &Expr, source: &SourceDesc) -> Result<(), SqlError> {
    let mut refusal = None;
    e.any(&mut |x| {
        if let ExprKind::InList { expr, list, .. } = &x.kind
            && let ExprKind::Column { name, .. } = &expr.kind
            && let Some(ty) = key_type(source, name)
            && let Some(item) = list.iter().find(|item| {
                matches!(
                    (&item.kind, ty),
                    (ExprKind::Literal(LiteralValue::String(_)), t) if *t != SqlType::String
                ) || matches!(
                    (&item.kind, ty),
                    (ExprKind::Literal(LiteralValue::Number(_)), SqlType::String)
                )
            })
        {
            refusal = Some(format!(
                "{item} can not be converted to the type of the key column: {name} {ty} KEY"
            ));
        }
        refusal.is_some()
    });
    match refusal {
        Some(message) => Err(SqlError::semantic(stmt.pos, message)),
        None => Ok(()),
    }
}

fn split<'a>(e: &'a Expr, op: BinaryOp, out: &mut Vec<&'a Expr>) {
    match &e.kind {
        ExprKind::Binary { op: o, left, right } if *o == op => {
            split(left, op, out);
            split(right, op, out);
        }
        _ => out.push(e),
    }
}

/// The keys a WHERE clause confines a pull query on a table to, when it names them:
/// each disjunct must pin every key column to literals with `=` or `IN`. Returns the
/// tuples of literal values (in the order of `keys`); None when some disjunct leaves a
/// key open (the query scans the table). The rows of those keys are a superset of the
/// answer: the whole clause is still applied to each.
pub fn key_lookups(w: &Expr, keys: &[&str]) -> Option<Vec<Vec<LiteralValue>>> {
    /// More tuples than this are read as a scan.
    const MAX_KEYS: usize = 10_000;
    let mut tuples: Vec<Vec<LiteralValue>> = Vec::new();
    for conjuncts in disjuncts_of(w) {
        let mut disjunct_tuples: Vec<Vec<LiteralValue>> = vec![Vec::new()];
        for key in keys {
            // The first conjunct that pins the key: any answer satisfies it.
            let values = conjuncts
                .iter()
                .find_map(|c| match key_constraint(c, key) {
                    Some((BinaryOp::Eq, values)) => Some(values),
                    _ => None,
                })?;
            disjunct_tuples = disjunct_tuples
                .iter()
                .flat_map(|t| {
                    values.iter().map(move |v| {
                        let mut t = t.clone();
                        t.push((*v).clone());
                        t
                    })
                })
                .collect();
            if disjunct_tuples.len() > MAX_KEYS {
                return None;
            }
        }
        tuples.extend(disjunct_tuples);
        if tuples.len() > MAX_KEYS {
            return None;
        }
    }
    tuples.sort_by_key(|t| format!("{t:?}"));
    tuples.dedup();
    Some(tuples)
}

/// The disjuncts of a WHERE clause, each as its conjuncts.
fn disjuncts_of(w: &Expr) -> Vec<Vec<&Expr>> {
    let mut disjuncts = Vec::new();
    split(w, BinaryOp::Or, &mut disjuncts);
    disjuncts
        .into_iter()
        .map(|d| {
            let mut conjuncts = Vec::new();
            split(d, BinaryOp::And, &mut conjuncts);
            conjuncts
        })
        .collect()
}

/// How a conjunct constrains `key` by literals, read as `key op value`: a comparison
/// with the key on either side (the operator turned round when the key is on the
/// right), or an IN list of literals (as `=` with each of them).
fn key_constraint<'a>(c: &'a Expr, key: &str) -> Option<(BinaryOp, Vec<&'a LiteralValue>)> {
    let is_key = |e: &Expr| matches!(&e.kind, ExprKind::Column { name, .. } if name == key);
    let literal = |e: &'a Expr| match &e.kind {
        ExprKind::Literal(v) => Some(v),
        _ => None,
    };
    match &c.kind {
        ExprKind::Binary { op, left, right } if op.is_comparison() => {
            if is_key(left) {
                Some((*op, vec![literal(right)?]))
            } else if is_key(right) {
                let turned = match op {
                    BinaryOp::Lt => BinaryOp::Gt,
                    BinaryOp::LtEq => BinaryOp::GtEq,
                    BinaryOp::Gt => BinaryOp::Lt,
                    BinaryOp::GtEq => BinaryOp::LtEq,
                    other => *other,
                };
                Some((turned, vec![literal(left)?]))
            } else {
                None
            }
        }
        ExprKind::InList {
            expr,
            list,
            negated: false,
        } if is_key(expr) => Some((
            BinaryOp::Eq,
            list.iter().map(literal).collect::<Option<_>>()?,
        )),
        _ => None,
    }
}

/// A range of a STRING key's values: its lower and upper bounds.
pub type KeyRange = (Bound<String>, Bound<String>);

/// The ranges a WHERE clause confines a table's single STRING key to, when it bounds it
/// in every disjunct with string literals (`=`, `IN`, `<`, `<=`, `>`, `>=`, `BETWEEN`).
/// None when some disjunct leaves the key unbounded (the query scans the table). As with
/// `key_lookups`, the rows in the ranges are a superset of the answer.
pub fn key_ranges(w: &Expr, key: &str) -> Option<Vec<KeyRange>> {
    let string = |v: &LiteralValue| match v {
        LiteralValue::String(s) => Some(s.clone()),
        _ => None,
    };
    let string_expr = |e: &Expr| match &e.kind {
        ExprKind::Literal(v) => string(v),
        _ => None,
    };
    let mut ranges = Vec::new();
    for conjuncts in disjuncts_of(w) {
        let (mut lower, mut upper) = (Bound::Unbounded, Bound::Unbounded);
        let mut points: Option<Vec<String>> = None;
        for c in conjuncts {
            // The first bound of each side: any answer is within it.
            let mut bound = |op: BinaryOp, v: String| match op {
                BinaryOp::Gt if lower == Bound::Unbounded => lower = Bound::Excluded(v),
                BinaryOp::GtEq if lower == Bound::Unbounded => lower = Bound::Included(v),
                BinaryOp::Lt if upper == Bound::Unbounded => upper = Bound::Excluded(v),
                BinaryOp::LtEq if upper == Bound::Unbounded => upper = Bound::Included(v),
                _ => {}
            };
            if let ExprKind::Between {
                expr,
                low,
                high,
                negated: false,
            } = &c.kind
                && matches!(&expr.kind, ExprKind::Column { name, .. } if name == key)
            {
                if let (Some(l), Some(h)) = (string_expr(low), string_expr(high)) {
                    bound(BinaryOp::GtEq, l);
                    bound(BinaryOp::LtEq, h);
                }
                continue;
            }
            match key_constraint(c, key) {
                Some((BinaryOp::Eq, values)) if points.is_none() => {
                    points = values.into_iter().map(string).collect();
                }
                Some((op, values)) => {
                    if let [v] = values.as_slice()
                        && let Some(v) = string(v)
                    {
                        bound(op, v);
                    }
                }
                None => {}
            }
        }
        match points {
            Some(values) => ranges.extend(
                values
                    .into_iter()
                    .map(|v| (Bound::Included(v.clone()), Bound::Included(v))),
            ),
            None if lower == Bound::Unbounded && upper == Bound::Unbounded => return None,
            None => ranges.push((lower, upper)),
        }
    }
    Some(ranges)
}

/// With table scans off, each disjunct of the WHERE clause must pin every key column
/// with `=` or `IN` (or, with range scans on, bound a single STRING key).
fn check_key_lookup(
    stmt: &ast::Statement,
    w: &Expr,
    source: &SourceDesc,
    config: &PullConfig,
) -> Result<(), SqlError> {
    let fail = |m: String| Err(SqlError::semantic(stmt.pos, m));
    let needs_scan = || fail("Query requires table scan to be enabled".into());
    let keys: Vec<&sluice_plan::Column> = source.topic.schema.keys().collect();
    let is_key = |e: &Expr| match &e.kind {
        ExprKind::Column { name, .. } => keys.iter().any(|k| k.name == *name),
        _ => false,
    };
    let mut disjuncts = Vec::new();
    split(w, BinaryOp::Or, &mut disjuncts);
    for disjunct in &disjuncts {
        let mut conjuncts = Vec::new();
        split(disjunct, BinaryOp::And, &mut conjuncts);
        // Key column -> how it is constrained: equality (true) or a range (false).
        let mut bound: Vec<(&str, bool)> = Vec::new();
        for c in &conjuncts {
            let (column, equality) = match &c.kind {
                ExprKind::Binary { op, left, right } if op.is_comparison() => {
                    let (key, other) = if is_key(left) {
                        (left, right)
                    } else if is_key(right) {
                        (right, left)
                    } else {
                        continue;
                    };
                    if !other.column_names().is_empty() {
                        return fail(
                            "A comparison must be between a key column and a resolvable expression."
                                .into(),
                        );
                    }
                    let ExprKind::Column { name, .. } = &key.kind else {
                        continue;
                    };
                    match op {
                        BinaryOp::Eq => (name.as_str(), true),
                        BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => {
                            (name.as_str(), false)
                        }
                        _ => {
                            let shown: Vec<String> = keys
                                .iter()
                                .map(|k| format!("`{}` {} KEY", k.name, k.ty))
                                .collect();
                            return fail(format!(
                                "Bound on key columns '[{}]' must currently be '='. ",
                                shown.join(", ")
                            ));
                        }
                    }
                }
                ExprKind::InList {
                    expr,
                    negated: false,
                    ..
                } if is_key(expr) => match &expr.kind {
                    ExprKind::Column { name, .. } => (name.as_str(), true),
                    _ => continue,
                },
                ExprKind::Like { .. } => {
                    return fail("Like condition must be between strings".into());
                }
                _ => continue,
            };
            if bound.iter().any(|(k, _)| *k == column) {
                return fail(
                    "A comparison condition on the key column cannot be combined with other comparisons such as an IN predicate"
                        .into(),
                );
            }
            bound.push((column, equality));
        }
        if bound.is_empty() {
            let shown = if disjuncts.len() == 1 {
                format!(": {disjunct}")
            } else {
                String::new()
            };
            return fail(format!(
                "WHERE clause missing key column for disjunct{shown}"
            ));
        }
        let ranged = bound.iter().any(|(_, eq)| !eq);
        if keys.len() > 1 && bound.len() < keys.len() {
            if ranged && bound.len() > 1 {
                return needs_scan();
            }
            return fail("Multi-column sources must specify every key in the WHERE clause.".into());
        }
        if ranged {
            let string_key = keys.len() == 1 && keys[0].ty == SqlType::String;
            if !config.range_scan || !string_key || disjuncts.len() > 1 || keys.len() > 1 {
                return needs_scan();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::planner::{Planned, PlannerConfig, SourceDesc, plan_statement};
    use std::collections::BTreeMap;

    /// A catalog with a stream S, a table T read from a topic, and AGG, a table a query
    /// writes (materialized).
    fn catalog() -> BTreeMap<String, SourceDesc> {
        let mut c = BTreeMap::new();
        for sql in [
            "CREATE STREAM S (ID STRING KEY, V INT) WITH (kafka_topic='s', value_format='JSON');",
            "CREATE TABLE T (ID STRING PRIMARY KEY, V INT) WITH (kafka_topic='t', value_format='JSON');",
            "CREATE TABLE AGG AS SELECT ID, COUNT(*) AS N FROM S GROUP BY ID;",
            "CREATE TABLE WAGG AS SELECT ID, COUNT(*) AS N FROM S WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY ID;",
        ] {
            let stmt = crate::parse_statement(sql).unwrap();
            match plan_statement(&stmt, &c, &PlannerConfig::default()).unwrap() {
                Planned::CreateSource { source, .. } | Planned::CreateAs { sink: source, .. } => {
                    c.insert(source.name.clone(), source);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        c
    }

    fn plan(sql: &str, properties: &[(&str, &str)]) -> Result<Planned, String> {
        let mut config = PlannerConfig::default();
        for (k, v) in properties {
            config.apply(k, v);
        }
        let stmt = crate::parse_statement(sql).map_err(|e| e.to_string())?;
        plan_statement(&stmt, &catalog(), &config).map_err(|e| e.to_string())
    }

    fn refusal(sql: &str, properties: &[(&str, &str)]) -> String {
        plan(sql, properties).expect_err("must be refused")
    }

    const NO_SCAN: &[(&str, &str)] = &[("ksql.query.pull.table.scan.enabled", "false")];

    #[test]
    fn clauses_a_pull_query_cannot_have() {
        assert!(
            refusal("SELECT * FROM S GROUP BY ID;", &[])
                .contains("Pull queries don't support GROUP BY clauses.")
        );
        assert!(
            refusal("SELECT * FROM S WINDOW TUMBLING (SIZE 1 SECOND);", &[])
                .contains("Pull queries don't support WINDOW clauses.")
        );
        assert!(
            refusal("SELECT ID, ROWOFFSET FROM S;", &[])
                .contains("following columns in SELECT clauses: `ROWOFFSET`")
        );
        assert!(
            refusal("SELECT * FROM AGG WHERE ROWPARTITION = 1;", &[])
                .contains("following columns in WHERE clauses: `ROWPARTITION`")
        );
    }

    #[test]
    fn only_materialized_tables_answer() {
        assert!(refusal("SELECT * FROM T;", &[]).contains(
            "The `T` table isn't queryable. To derive a queryable table, you can do 'CREATE TABLE QUERYABLE_T AS SELECT * FROM T'."
        ));
        assert!(plan("SELECT * FROM AGG;", &[]).is_ok());
        assert!(plan("SELECT * FROM S;", &[]).is_ok());
    }

    #[test]
    fn key_lookups_without_table_scans() {
        assert!(plan("SELECT * FROM AGG WHERE ID = 'a';", NO_SCAN).is_ok());
        assert!(plan("SELECT * FROM AGG WHERE ID IN ('a', 'b');", NO_SCAN).is_ok());
        // A single STRING key may be range-scanned.
        assert!(plan("SELECT * FROM AGG WHERE ID < 'b';", NO_SCAN).is_ok());
        assert_eq!(
            refusal("SELECT * FROM AGG WHERE N = 1;", NO_SCAN),
            "WHERE clause missing key column for disjunct: (N = 1)"
        );
        assert!(
            refusal("SELECT * FROM AGG WHERE ID != 'a';", NO_SCAN)
                .starts_with("Bound on key columns '[`ID` STRING KEY]' must currently be '='.")
        );
        assert!(
            refusal("SELECT * FROM AGG WHERE ID = 'a' AND ID IN ('a');", NO_SCAN)
                .contains("cannot be combined with other comparisons such as an IN predicate")
        );
        assert_eq!(
            refusal("SELECT * FROM AGG WHERE ID < 'b' OR ID > 'c';", NO_SCAN),
            "Query requires table scan to be enabled"
        );
        assert_eq!(
            refusal(
                "SELECT * FROM AGG WHERE ID < 'b';",
                &[NO_SCAN[0], ("ksql.query.pull.range.scan.enabled", "false")]
            ),
            "Query requires table scan to be enabled"
        );
        // With table scans on (the default), any predicate goes.
        assert!(plan("SELECT * FROM AGG WHERE N = 1;", &[]).is_ok());
    }

    #[test]
    fn a_windowed_table_scan_keeps_a_row_per_key_and_window() {
        // The scan's dedup must tell a key's windows apart even when the query shows
        // neither bound: they are hidden columns of its rows.
        let Ok(Planned::Select { schema, .. }) = plan("SELECT ID, N FROM WAGG;", &[]) else {
            panic!("a pull query plans");
        };
        let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["ID", "N", "$hidden_WINDOWSTART", "$hidden_WINDOWEND"]
        );
        let Ok(Planned::Select { schema, .. }) = plan("SELECT * FROM WAGG;", &[]) else {
            panic!("a pull query plans");
        };
        assert!(!schema.columns.iter().any(|c| c.name.starts_with('$')));
    }

    #[test]
    fn in_lists_must_fit_the_key() {
        assert_eq!(
            refusal("SELECT * FROM AGG WHERE ID IN ('a', 1);", &[]),
            "1 can not be converted to the type of the key column: ID STRING KEY"
        );
    }

    fn lookups(where_clause: &str, keys: &[&str]) -> Option<Vec<String>> {
        let stmt =
            crate::parse_statement(&format!("SELECT * FROM X WHERE {where_clause};")).unwrap();
        let crate::ast::StatementKind::Select(q) = &stmt.kind else {
            panic!("not a query")
        };
        super::key_lookups(q.where_clause.as_ref().unwrap(), keys).map(|tuples| {
            tuples
                .iter()
                .map(|t| {
                    t.iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect()
        })
    }

    #[test]
    fn key_lookups_are_found_where_every_disjunct_pins_every_key() {
        assert_eq!(
            lookups("ID = 'a' AND N > 1", &["ID"]).unwrap(),
            ["String(\"a\")"]
        );
        assert_eq!(
            lookups("'b' = ID OR ID IN ('a', 'b')", &["ID"]).unwrap(),
            ["String(\"a\")", "String(\"b\")"]
        );
        assert_eq!(
            lookups("A = 1 AND B IN (2, 3)", &["A", "B"]).unwrap(),
            ["Number(\"1\"),Number(\"2\")", "Number(\"1\"),Number(\"3\")"]
        );
        // A key left open in some disjunct, a range, or a computed value: a scan.
        assert_eq!(lookups("ID = 'a' OR N = 1", &["ID"]), None);
        assert_eq!(lookups("A = 1", &["A", "B"]), None);
        assert_eq!(lookups("ID > 'a'", &["ID"]), None);
        assert_eq!(lookups("ID = N", &["ID"]), None);
        assert_eq!(lookups("ID NOT IN ('a')", &["ID"]), None);
    }

    fn ranges(where_clause: &str) -> Option<Vec<String>> {
        let stmt =
            crate::parse_statement(&format!("SELECT * FROM X WHERE {where_clause};")).unwrap();
        let crate::ast::StatementKind::Select(q) = &stmt.kind else {
            panic!("not a query")
        };
        super::key_ranges(q.where_clause.as_ref().unwrap(), "ID")
            .map(|r| r.iter().map(|(l, u)| format!("{l:?}..{u:?}")).collect())
    }

    #[test]
    fn key_ranges_bound_a_string_key_in_every_disjunct() {
        assert_eq!(
            ranges("ID >= 'a' AND 'k' > ID AND N = 1").unwrap(),
            [r#"Included("a")..Excluded("k")"#]
        );
        assert_eq!(
            ranges("ID BETWEEN 'b' AND 'c' OR ID = 'x' OR ID IN ('y', 'z')").unwrap(),
            [
                r#"Included("b")..Included("c")"#,
                r#"Included("x")..Included("x")"#,
                r#"Included("y")..Included("y")"#,
                r#"Included("z")..Included("z")"#
            ]
        );
        assert_eq!(ranges("'m' < ID").unwrap(), [r#"Excluded("m")..Unbounded"#]);
        assert_eq!(ranges("ID > 'a' OR N = 1"), None);
        assert_eq!(ranges("ID <> 'a'"), None);
        assert_eq!(ranges("ID > 1"), None);
    }
}
