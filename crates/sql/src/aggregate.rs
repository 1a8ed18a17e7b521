//! Planning GROUP BY: key columns, aggregate calls, and the select list and HAVING
//! rewritten over the aggregation's intermediate row.
//!
//! The rewrite works on the syntax tree: every sub-expression equal to a GROUP BY
//! expression becomes a reference to its key column, and every aggregate call becomes a
//! reference to `$aggN`. What is left is analyzed like any expression, over a scope of
//! the key columns and the aggregate results; an input column that survives the rewrite
//! is a non-aggregate expression not covered by the GROUP BY, which ksqlDB refuses.

use crate::analyzer::{Clause, ExprAnalyzer, Scope, ScopeColumn, is_aggregate};
use crate::ast::{self, ExprKind, SelectItem};
use crate::error::SqlError;
use sluice_plan::{AggregateCall, Column, LogicalSchema, NamedExpr, SqlType, Step, WindowSpec};

/// The planned aggregation: its step and the output schema.
pub struct PlannedAggregate {
    pub step: Step,
    pub schema: LogicalSchema,
}

/// The result type of an aggregate over arguments of these types; `literals` holds
/// the arguments written as literals (the parameters: how many, whether to ignore
/// NULLs), None for the others.
fn aggregate_type(
    name: &str,
    args: &[SqlType],
    literals: &[Option<&ast::LiteralValue>],
    pos: crate::Pos,
) -> Result<SqlType, SqlError> {
    let bad = || {
        let shown: Vec<String> = args.iter().map(|t| t.to_string()).collect();
        SqlError::semantic(
            pos,
            format!(
                "Function '{}' does not accept parameters ({}).",
                name.to_ascii_lowercase(),
                shown.join(", ")
            ),
        )
    };
    let literal_int = |i: usize| {
        matches!(args.get(i), Some(SqlType::Integer))
            && matches!(literals.get(i), Some(Some(ast::LiteralValue::Number(_))))
    };
    let literal_bool = |i: usize| {
        matches!(args.get(i), Some(SqlType::Boolean))
            && matches!(literals.get(i), Some(Some(ast::LiteralValue::Boolean(_))))
    };
    let array_of = |t: &SqlType| SqlType::Array(Box::new(t.clone()));
    // What MIN, MAX, TOPK and TOPKDISTINCT compare.
    let sortable = |t: &SqlType| {
        t.is_numeric()
            || matches!(
                t,
                SqlType::String
                    | SqlType::Bytes
                    | SqlType::Date
                    | SqlType::Time
                    | SqlType::Timestamp
            )
    };
    Ok(match (name, args) {
        ("COUNT", [] | [_]) => SqlType::Bigint,
        ("SUM", [t]) if t.is_numeric() => t.clone(),
        ("AVG", [t]) if t.is_numeric() => SqlType::Double,
        ("MIN" | "MAX", [t]) if sortable(t) => t.clone(),
        ("LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET", [t]) => t.clone(),
        ("LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET", [t, _]) if literal_bool(1) => t.clone(),
        ("LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET", [t, _]) if literal_int(1) => array_of(t),
        ("LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET", [t, _, _])
            if literal_int(1) && literal_bool(2) =>
        {
            array_of(t)
        }
        ("COLLECT_LIST" | "COLLECT_SET", [t]) => array_of(t),
        ("TOPK" | "TOPKDISTINCT", [t, _]) if literal_int(1) && sortable(t) => array_of(t),
        // TOPK(sort, other..., k): the rows with the k largest sort values, as structs.
        ("TOPK", [t, others @ .., _]) if literal_int(args.len() - 1) && sortable(t) => {
            let mut fields = vec![sluice_plan::StructField {
                name: "sort_col".into(),
                ty: t.clone(),
            }];
            for (i, o) in others.iter().enumerate() {
                fields.push(sluice_plan::StructField {
                    name: format!("col{i}"),
                    ty: o.clone(),
                });
            }
            array_of(&SqlType::Struct(fields))
        }
        ("HISTOGRAM", [SqlType::String]) => SqlType::Map {
            key: Box::new(SqlType::String),
            value: Box::new(SqlType::Bigint),
        },
        ("CORRELATION", [x, y]) if x.is_numeric() && y.is_numeric() => SqlType::Double,
        (
            "STDDEV_SAMP" | "STDDEV_SAMPLE",
            [SqlType::Integer | SqlType::Bigint | SqlType::Double],
        ) => SqlType::Double,
        ("ATTR", [t]) => t.clone(),
        ("COUNT_DISTINCT", [t]) if t.is_primitive() => SqlType::Bigint,
        (
            "COUNT" | "SUM" | "AVG" | "MIN" | "MAX" | "LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET"
            | "COLLECT_LIST" | "COLLECT_SET" | "HISTOGRAM" | "CORRELATION" | "ATTR" | "STDDEV_SAMP"
            | "STDDEV_SAMPLE" | "COUNT_DISTINCT" | "TOPK" | "TOPKDISTINCT",
            _,
        ) => return Err(bad()),
        _ => {
            return Err(SqlError::unsupported(
                pos,
                format!("The aggregate function {name} is not supported yet"),
            ));
        }
    })
}

struct Rewriter<'a> {
    input: &'a ExprAnalyzer<'a>,
    /// Display text of each GROUP BY expression, and its key column's name.
    groups: Vec<(String, String)>,
    /// Display text of each aggregate call, and the call.
    aggregates: Vec<(String, AggregateCall)>,
    /// Input columns found outside any GROUP BY expression.
    stray: Vec<String>,
    windowed: bool,
}

impl Rewriter<'_> {
    fn rewrite(&mut self, e: &ast::Expr) -> Result<ast::Expr, SqlError> {
        let text = e.to_string();
        if let Some((_, key)) = self.groups.iter().find(|(g, _)| *g == text) {
            return Ok(column(key, e.pos));
        }
        match &e.kind {
            ExprKind::Call { name, args, star } if is_aggregate(name) => {
                let upper = name.to_ascii_uppercase();
                if let Some(i) = self.aggregates.iter().position(|(t, _)| *t == text) {
                    return Ok(column(&format!("$agg{i}"), e.pos));
                }
                if args.iter().any(|a| a.any(&mut |x| matches!(&x.kind, ExprKind::Call { name, .. } if is_aggregate(name)))) {
                    return Err(SqlError::semantic(
                        e.pos,
                        format!("Aggregate functions can not be nested: {e}"),
                    ));
                }
                let typed = args
                    .iter()
                    .map(|a| self.input.analyze(a))
                    .collect::<Result<Vec<_>, _>>()?;
                let types: Vec<SqlType> = typed.iter().map(|t| t.1.clone()).collect();
                // COUNT(*) and COUNT(1) count rows; COUNT(x) counts non-NULL x.
                let counts_rows = upper == "COUNT"
                    && (*star
                        || matches!(args.as_slice(), [a] if matches!(a.kind, ExprKind::Literal(_))));
                let literals: Vec<Option<&ast::LiteralValue>> = args
                    .iter()
                    .map(|a| match &a.kind {
                        ExprKind::Literal(l) => Some(l),
                        _ => None,
                    })
                    .collect();
                if matches!(
                    upper.as_str(),
                    "EARLIEST_BY_OFFSET" | "LATEST_BY_OFFSET" | "TOPK" | "TOPKDISTINCT"
                ) && let Some((i, a)) = args
                    .iter()
                    .enumerate()
                    // TOPK's parameter is its last argument.
                    .skip(if upper.starts_with("TOPK") {
                        args.len().saturating_sub(1)
                    } else {
                        1
                    })
                    .find(|(i, _)| literals[*i].is_none())
                {
                    return Err(SqlError::semantic(
                        a.pos,
                        format!(
                            "Parameter {} passed to function {upper} must be a literal constant, but was expression: '{a}'",
                            i + 1
                        ),
                    ));
                }
                let return_type = aggregate_type(&upper, &types, &literals, e.pos)?;
                let call = AggregateCall {
                    function: upper,
                    args: if counts_rows {
                        Vec::new()
                    } else {
                        typed.into_iter().map(|t| t.0).collect()
                    },
                    return_type,
                };
                self.aggregates.push((text, call));
                Ok(column(&format!("$agg{}", self.aggregates.len() - 1), e.pos))
            }
            ExprKind::Column { name, .. } if name == "WINDOWSTART" || name == "WINDOWEND" => {
                if self.windowed {
                    Ok(e.clone())
                } else {
                    Err(SqlError::semantic(
                        e.pos,
                        format!(
                            "Window bounds column {name} can only be used in the SELECT clause of windowed aggregations"
                        ),
                    ))
                }
            }
            ExprKind::Column { name, .. } => {
                self.stray.push(name.clone());
                Ok(e.clone())
            }
            // Unknown functions are reported as such, before anything else.
            ExprKind::Call { name, .. } if crate::functions::lookup(name).is_none() => {
                let upper = name.to_ascii_uppercase();
                if crate::functions::KSQLDB_FUNCTIONS.contains(&upper.as_str()) {
                    return Err(SqlError::unsupported(
                        e.pos,
                        format!("The function {upper} is not supported yet"),
                    ));
                }
                Err(SqlError::semantic(
                    e.pos,
                    format!("Can't find any functions with the name '{name}'"),
                ))
            }
            _ => e.map_children(&mut |c| self.rewrite(c)),
        }
    }
}

fn column(name: &str, pos: crate::Pos) -> ast::Expr {
    ast::Expr::new(
        ExprKind::Column {
            qualifier: None,
            name: name.to_string(),
        },
        pos,
    )
}

fn list_names(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Plans `SELECT ... FROM input GROUP BY ... [HAVING ...]` for the sink `sink_name`.
/// Columns a query's plan needs but its rows do not show start with this.
pub const HIDDEN_PREFIX: &str = "$hidden_";

pub fn plan_aggregate(
    sink_name: &str,
    query: &ast::Query,
    input_scope: &Scope,
    input: Step,
    window: Option<WindowSpec>,
    transient: bool,
) -> Result<PlannedAggregate, SqlError> {
    if let Some(bound) = query.having.as_ref().and_then(|h| {
        h.column_names()
            .into_iter()
            .find(|c| matches!(c.as_str(), "WINDOWSTART" | "WINDOWEND"))
    }) {
        return Err(SqlError::semantic(
            query.having.as_ref().map(|h| h.pos),
            format!(
                "Window bounds column {bound} can only be used in the SELECT clause of windowed aggregations"
            ),
        ));
    }
    // Without a window there are no bounds: an unaliased bound in the projection is a
    // reserved name, whatever the GROUP BY says.
    if window.is_none() && !transient {
        for item in &query.select {
            if let SelectItem::Expr { expr, alias: None } = item
                && let ExprKind::Column { name, .. } = &expr.kind
                && matches!(name.as_str(), "WINDOWSTART" | "WINDOWEND")
            {
                return Err(crate::planner::reserved_name(name, false, expr.pos));
            }
        }
    }
    // `SELECT *` names every column of the input, each then a grouped or an aggregated
    // expression like any other.
    let expanded;
    let query = if query.select.iter().any(|i| {
        matches!(
            i,
            SelectItem::Star {
                qualifier: None,
                ..
            }
        )
    }) {
        expanded = expand_star(query, input_scope);
        &expanded
    } else {
        query
    };
    let analyzer = ExprAnalyzer {
        scope: input_scope,
        clause: Clause::Select,
    };
    // GROUP BY expressions, typed over the input.
    let mut group_by = Vec::with_capacity(query.group_by.len());
    for g in &query.group_by {
        if let Some(agg) = find_aggregate(g) {
            return Err(SqlError::semantic(
                g.pos,
                format!(
                    "GROUP BY does not support aggregate functions: {agg} is an aggregate function."
                ),
            ));
        }
        let mut bound = None;
        g.any(&mut |x| match &x.kind {
            ExprKind::Column { name, .. } if name == "WINDOWSTART" || name == "WINDOWEND" => {
                bound = Some(name.clone());
                true
            }
            _ => false,
        });
        if let Some(name) = bound {
            return Err(SqlError::semantic(
                g.pos,
                format!(
                    "Window bounds column {name} can only be used in the SELECT clause of windowed aggregations"
                ),
            ));
        }
        let typed = analyzer.analyze(g)?;
        if group_by
            .iter()
            .any(|(e, _): &(sluice_plan::Expr, _)| *e == typed.0)
        {
            return Err(SqlError::semantic(
                g.pos,
                format!("Duplicate GROUP BY expression: {g}"),
            ));
        }
        group_by.push(typed);
    }

    // Name the key columns after the select items that project them.
    let texts: Vec<String> = query.group_by.iter().map(|g| g.to_string()).collect();
    let mut key_names: Vec<Option<String>> = vec![None; texts.len()];
    let mut aliases = crate::planner::ColumnAliases::new(query, input_scope);
    let mut value_items: Vec<(&ast::Expr, String)> = Vec::new();
    for item in &query.select {
        let SelectItem::Expr { expr, alias } = item else {
            return Err(SqlError::unsupported(
                None,
                "SELECT * with GROUP BY is not supported yet",
            ));
        };
        let name = match alias {
            Some(a) => a.clone(),
            None => aliases.name(expr),
        };
        match texts.iter().position(|t| *t == expr.to_string()) {
            Some(i) => {
                if let Some(first) = &key_names[i] {
                    return Err(SqlError::semantic(
                        expr.pos,
                        format!(
                            "The projection contains a key column more than once: `{first}` and `{name}`."
                        ),
                    ));
                }
                key_names[i] = Some(name);
            }
            None => value_items.push((expr, name)),
        }
    }
    // Rewrite the value items and HAVING over the intermediate row.
    let mut rw = Rewriter {
        input: &analyzer,
        // A GROUP BY expression not projected gets a placeholder name: ksqlDB reports
        // the select list's errors first.
        groups: texts
            .iter()
            .cloned()
            .zip(key_names.iter().enumerate().map(|(i, n)| match n {
                Some(n) => n.clone(),
                None => format!("$key{i}"),
            }))
            .collect(),
        aggregates: Vec::new(),
        stray: Vec::new(),
        windowed: window.is_some(),
    };
    let rewritten: Vec<(ast::Expr, String)> = value_items
        .iter()
        .map(|(e, n)| Ok((rw.rewrite(e)?, n.clone())))
        .collect::<Result<_, SqlError>>()?;
    let aggregates_anywhere = query
        .select
        .iter()
        .any(|i| matches!(i, SelectItem::Expr { expr, .. } if find_aggregate(expr).is_some()))
        || query
            .having
            .as_ref()
            .is_some_and(|h| find_aggregate(h).is_some());
    if !aggregates_anywhere {
        return Err(SqlError::semantic(
            None,
            "GROUP BY requires aggregate functions in either the SELECT or HAVING clause.",
        ));
    }

    if !rw.stray.is_empty() {
        let shown: Vec<String> = value_items
            .iter()
            .filter(|(e, _)| e.any(&mut |x| matches!(&x.kind, ExprKind::Column { name, .. } if rw.stray.contains(name))))
            .map(|(e, _)| e.to_string())
            .collect();
        return Err(SqlError::semantic(
            None,
            format!(
                "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
                shown.join(", ")
            ),
        ));
    }
    let having = query.having.as_ref().map(|h| rw.rewrite(h)).transpose()?;
    if !rw.stray.is_empty() {
        return Err(SqlError::semantic(
            query.having.as_ref().map(|h| h.pos),
            format!(
                "Non-aggregate HAVING expression not part of GROUP BY: {}",
                rw.stray.join(", ")
            ),
        ));
    }

    let missing: Vec<String> = texts
        .iter()
        .zip(&key_names)
        .filter(|(_, n)| n.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    if !missing.is_empty() && !transient {
        let noun = if missing.len() == 1 {
            "grouping expression"
        } else {
            "grouping expressions"
        };
        return Err(SqlError::semantic(
            None,
            format!(
                "The query used to build `{sink_name}` must include the {noun} {} in its projection (eg, SELECT {}...).",
                list_names(&missing),
                missing.join(", ")
            ),
        ));
    }
    // A query's rows need not show what they are grouped by: an unnamed grouping
    // expression becomes a hidden column (named with a `$`, which no SQL name has).
    let key_names: Vec<String> = key_names
        .into_iter()
        .enumerate()
        .map(|(i, n)| n.unwrap_or_else(|| format!("{HIDDEN_PREFIX}key{i}")))
        .collect();

    // Analyze over the intermediate row: key columns, then $agg0...
    let mut columns: Vec<ScopeColumn> = key_names
        .iter()
        .zip(&group_by)
        .map(|(n, (_, t))| ScopeColumn {
            name: n.clone(),
            ty: t.clone(),
            origin: None,
        })
        .collect();
    for (i, (_, a)) in rw.aggregates.iter().enumerate() {
        columns.push(ScopeColumn {
            name: format!("$agg{i}"),
            ty: a.return_type.clone(),
            origin: None,
        });
    }
    if window.is_some() {
        for bound in ["WINDOWSTART", "WINDOWEND"] {
            columns.push(ScopeColumn {
                name: bound.to_string(),
                ty: SqlType::Bigint,
                origin: None,
            });
        }
    }
    let scope = Scope {
        qualifiers: input_scope.qualifiers.clone(),
        columns,
    };
    let over = ExprAnalyzer {
        scope: &scope,
        clause: Clause::Select,
    };
    let mut out_columns: Vec<Column> = key_names
        .iter()
        .zip(&group_by)
        .map(|(n, (_, t))| Column::key(n.clone(), t.clone()))
        .collect();
    let mut projection = Vec::with_capacity(rewritten.len());
    for (e, name) in &rewritten {
        let (expr, ty) = over.analyze(e)?;
        if out_columns.iter().any(|c| c.name == *name) {
            return Err(SqlError::semantic(
                e.pos,
                format!("Duplicate value columns found in schema: `{name}` {ty}"),
            ));
        }
        out_columns.push(Column::value(name.clone(), ty));
        projection.push(NamedExpr {
            name: name.clone(),
            expr,
        });
    }
    if projection.is_empty() && !transient {
        return Err(SqlError::semantic(
            None,
            "The projection contains no value columns.",
        ));
    }
    let having = match having {
        Some(h) => {
            // Errors name the aggregate calls as written, not their intermediate columns.
            let (e, ty) = over.analyze(&h).map_err(|e| match e {
                SqlError::Semantic { pos, message, hint } => {
                    let mut message = message;
                    for (i, (text, _)) in rw.aggregates.iter().enumerate() {
                        message = message.replace(&format!("`$agg{i}`"), text);
                    }
                    SqlError::Semantic {
                        pos,
                        message: format!("Error in HAVING expression: {message}"),
                        hint,
                    }
                }
                other => other,
            })?;
            if ty != SqlType::Boolean {
                return Err(SqlError::semantic(
                    h.pos,
                    format!("HAVING expression must be a boolean: {h} is {ty}"),
                ));
            }
            Some(e)
        }
        None => None,
    };
    let schema = LogicalSchema::new(out_columns);
    Ok(PlannedAggregate {
        step: Step::StreamAggregate {
            input: Box::new(input),
            window,
            group_by: group_by.into_iter().map(|(e, _)| e).collect(),
            aggregates: rw.aggregates.into_iter().map(|(_, a)| a).collect(),
            having,
            projection,
            schema: schema.clone(),
            emit_final: query.emit == Some(ast::Emit::Final),
        },
        schema,
    })
}

/// The name of the first aggregate call inside `e`, if any.
/// The query with its unqualified `*` replaced by the input's own columns (not the
/// pseudo-columns), in order.
fn expand_star(query: &ast::Query, input_scope: &Scope) -> ast::Query {
    let pseudo = |name: &str| {
        sluice_plan::PSEUDO_COLUMNS.iter().any(|(p, _)| *p == name)
            || name == "WINDOWSTART"
            || name == "WINDOWEND"
            || name.starts_with('$')
    };
    let mut q = query.clone();
    q.select = query
        .select
        .iter()
        .flat_map(|item| match item {
            SelectItem::Star {
                qualifier: None,
                pos,
            } => input_scope
                .columns
                .iter()
                .filter(|c| !pseudo(&c.name))
                .map(|c| SelectItem::Expr {
                    expr: column(&c.name, *pos),
                    alias: None,
                })
                .collect(),
            other => vec![other.clone()],
        })
        .collect();
    q
}

pub fn find_aggregate(e: &ast::Expr) -> Option<String> {
    let mut found = None;
    e.any(&mut |x| match &x.kind {
        ExprKind::Call { name, .. } if is_aggregate(name) => {
            found = Some(name.to_ascii_uppercase());
            true
        }
        _ => false,
    });
    found
}

/// Whether `e` reads a column outside every aggregate call in it.
fn reads_column_outside_aggregates(e: &ast::Expr) -> bool {
    match &e.kind {
        ExprKind::Call { name, .. } if is_aggregate(name) => false,
        ExprKind::Column { .. } => true,
        _ => {
            let mut found = false;
            // map_children visits each direct child; the tree is left as it was.
            let _ = e.map_children(&mut |c| {
                found |= reads_column_outside_aggregates(c);
                Ok::<_, SqlError>(c.clone())
            });
            found
        }
    }
}

/// Refuses a select list that aggregates without a GROUP BY, as ksqlDB does: naming
/// the items that are not aggregates, else the aggregate that needs the GROUP BY.
pub fn refuse_aggregates_without_group_by(query: &ast::Query) -> Result<(), SqlError> {
    let exprs: Vec<&ast::Expr> = query
        .select
        .iter()
        .filter_map(|item| match item {
            SelectItem::Expr { expr, .. } => Some(expr),
            _ => None,
        })
        .collect();
    let Some((first, agg)) = exprs
        .iter()
        .find_map(|e| find_aggregate(e).map(|a| (*e, a)))
    else {
        return Ok(());
    };
    let strays: Vec<String> = exprs
        .iter()
        .filter(|e| reads_column_outside_aggregates(e))
        .map(|e| e.to_string())
        .collect();
    if !strays.is_empty()
        || query
            .select
            .iter()
            .any(|i| !matches!(i, SelectItem::Expr { .. }))
    {
        return Err(SqlError::semantic(
            None,
            format!(
                "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
                strays.join(", ")
            ),
        ));
    }
    Err(SqlError::semantic(
        first.pos,
        format!("Use of aggregate function {agg} requires a GROUP BY clause."),
    ))
}
