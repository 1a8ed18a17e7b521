//! Planning the FROM clause of a join: sources joined left to right into one row.
//!
//! A source's columns appear in the joined row prefixed with its alias (`L.A` is the
//! column `L_A`), as ksqlDB names them; an unqualified name that only one source has
//! finds that source's column. The row's key is the join key: a column named after the
//! join expressions when they are plain columns (any of them may be projected as the
//! key), or the synthetic `ROWKEY` when none is, or for FULL OUTER joins, where either
//! side may be missing.

use crate::analyzer::{Clause, ExprAnalyzer, Scope, ScopeColumn};
use crate::ast::{self, ExprKind, JoinType};
use crate::error::{Pos, SqlError, closest};
use crate::planner::{Catalog, SourceDesc, SourceKindName};
use sluice_plan::{
    BinaryOp, CarriedColumn, Column, Expr, FormatKind, JoinKind, JoinShape, LogicalSchema,
    NamedExpr, PSEUDO_COLUMNS, SqlType, Step,
};

/// The name of the joined row's key column when it is not synthetic: not valid SQL, so
/// a query cannot name it; it is projected through the columns equal to it.
pub(crate) const JOIN_KEY: &str = "$joinkey";

/// A column `*` expands to.
pub(crate) struct StarColumn {
    /// The alias of the source it comes from (None: the synthetic key).
    pub qualifier: Option<String>,
    /// Its name in the joined row, which is also its name in the output.
    pub name: String,
    pub ty: SqlType,
}

/// A column of the joined row that always equals the join key.
pub(crate) struct KeyEquivalent {
    /// The column in the joined row (`L_A`).
    pub column: String,
    /// How ksqlDB shows it in messages (`L.A`).
    pub shown: String,
    /// The output name of an unaliased reference to it.
    pub default_name: String,
}

pub(crate) struct JoinKey {
    /// The key column of the joined row.
    pub column: String,
    pub ty: SqlType,
    /// `ROWKEY`: no source column equals the key.
    pub synthetic: bool,
    pub equivalents: Vec<KeyEquivalent>,
    /// A foreign-key join: the result's key is the left table's primary key, these
    /// columns of the joined row; and the left table's name, for messages.
    pub foreign: Option<(Vec<(String, String)>, String)>,
}

/// The planned FROM clause of a join.
pub(crate) struct Joined {
    pub root: Step,
    pub scope: Scope,
    pub star: Vec<StarColumn>,
    pub key: JoinKey,
    /// Both sides of every join are tables: the result is a table.
    pub produces_table: bool,
    /// The sources in FROM order.
    pub sources: Vec<SourceDesc>,
    /// The sources' aliases, in FROM order, with their column names.
    pub sources_by_alias: Vec<(String, Vec<String>)>,
}

/// One source of the join and the names it is known by.
struct Side {
    desc: SourceDesc,
    alias: String,
}

impl Side {
    fn is_table(&self) -> bool {
        self.desc.kind == SourceKindName::Table
    }

    /// The source's columns as a join sees them: a windowed source's window bounds
    /// come after its key columns, as values (ksqlDB's joined schema).
    fn columns(&self) -> Vec<(String, SqlType)> {
        let schema = &self.desc.topic.schema;
        if self.desc.topic.window.is_none() {
            return schema
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.clone()))
                .collect();
        }
        let mut columns: Vec<(String, SqlType)> = schema
            .keys()
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect();
        for bound in ["WINDOWSTART", "WINDOWEND"] {
            columns.push((bound.to_string(), SqlType::Bigint));
        }
        columns.extend(
            schema
                .columns
                .iter()
                .filter(|c| c.kind != sluice_plan::ColumnKind::Key)
                .map(|c| (c.name.clone(), c.ty.clone())),
        );
        columns
    }

    /// The source's own row: its columns under their own names, qualified by the alias.
    fn own_scope(&self) -> Scope {
        let mut columns: Vec<ScopeColumn> = self
            .columns()
            .into_iter()
            .map(|(name, ty)| ScopeColumn {
                origin: Some((self.alias.clone(), name.clone())),
                name,
                ty,
            })
            .collect();
        for (name, ty) in PSEUDO_COLUMNS {
            columns.push(ScopeColumn {
                name: name.to_string(),
                ty,
                origin: Some((self.alias.clone(), name.to_string())),
            });
        }
        Scope {
            qualifiers: vec![self.alias.clone()],
            columns,
        }
    }

    /// The source's columns in the joined row: `ALIAS_NAME`.
    fn joined_columns(&self) -> Vec<(CarriedColumn, ScopeColumn)> {
        let own = self.own_scope();
        own.columns
            .into_iter()
            .map(|c| {
                let to = format!("{}_{}", self.alias, c.name);
                (
                    CarriedColumn {
                        from: c.name.clone(),
                        to: to.clone(),
                    },
                    ScopeColumn {
                        name: to,
                        ty: c.ty,
                        origin: c.origin,
                    },
                )
            })
            .collect()
    }

    fn step(&self) -> Step {
        if self.is_table() {
            Step::TableSource {
                name: self.desc.name.clone(),
                topic: self.desc.topic.clone(),
                materialized: false,
            }
        } else {
            Step::StreamSource {
                name: self.desc.name.clone(),
                topic: self.desc.topic.clone(),
            }
        }
    }
}

fn lookup(catalog: &dyn Catalog, r: &ast::Relation) -> Result<Side, SqlError> {
    let Some(desc) = catalog.source(&r.name) else {
        let err = SqlError::semantic(r.pos, format!("{} does not exist.", r.name));
        return Err(match closest(&r.name, catalog.source_names()) {
            Some(n) => err.with_hint(format!("Did you mean {n}?")),
            None => err,
        });
    };
    Ok(Side {
        desc: desc.clone(),
        alias: r.alias.clone().unwrap_or_else(|| r.name.clone()),
    })
}

/// Every column reference in an expression: (qualifier, name, position).
fn column_refs(e: &ast::Expr, out: &mut Vec<(Option<String>, String, Pos)>) {
    if let ExprKind::Column { qualifier, name } = &e.kind {
        out.push((qualifier.clone(), name.clone(), e.pos));
        return;
    }
    let _ = e.map_children(&mut |c| {
        column_refs(c, out);
        Ok::<_, ()>(c.clone())
    });
}

/// The expression with its column references qualified by the source that has them,
/// as ksqlDB shows join criteria (`(T.ID = 0)`).
fn qualify(e: &ast::Expr, sides: &[Side]) -> ast::Expr {
    match &e.kind {
        ExprKind::Column {
            qualifier: None,
            name,
        } => {
            let owner = sides
                .iter()
                .find(|s| s.desc.topic.schema.find(name).is_some());
            ast::Expr::new(
                ExprKind::Column {
                    qualifier: owner.map(|s| s.alias.clone()),
                    name: name.clone(),
                },
                e.pos,
            )
        }
        _ => e
            .map_children(&mut |c| Ok::<_, ()>(qualify(c, sides)))
            .unwrap_or_else(|()| e.clone()),
    }
}

/// The sides (indexes into `sides`) an expression's columns come from; an unknown
/// qualifier is an error.
fn referenced_sides(e: &ast::Expr, sides: &[Side], scope: &Scope) -> Result<Vec<usize>, SqlError> {
    let mut refs = Vec::new();
    column_refs(e, &mut refs);
    let mut found = Vec::new();
    for (qualifier, name, pos) in refs {
        // Resolve through the analyzer for its messages (unknown or ambiguous names).
        ExprAnalyzer {
            scope,
            clause: Clause::JoinOn,
        }
        .analyze(&ast::Expr::new(
            ExprKind::Column {
                qualifier: qualifier.clone(),
                name: name.clone(),
            },
            pos,
        ))?;
        let side = match &qualifier {
            Some(q) => sides.iter().position(|s| s.alias == *q),
            None => sides
                .iter()
                .position(|s| s.desc.topic.schema.find(&name).is_some()),
        };
        if let Some(i) = side
            && !found.contains(&i)
        {
            found.push(i);
        }
    }
    Ok(found)
}

/// The two sides of the i-th join's criteria and the sources they reference, checked
/// as ksqlDB checks them before anything else about the join.
fn criteria<'q>(
    i: usize,
    j: &'q ast::JoinClause,
    sides: &[Side],
    all_scope: &Scope,
) -> Result<(&'q ast::Expr, &'q ast::Expr, usize, usize), SqlError> {
    let shown_criteria = qualify(&j.on, &sides[..=i + 1]);
    // Qualifiers first: an unknown one is the error, whatever else is wrong.
    let mut refs = Vec::new();
    column_refs(&j.on, &mut refs);
    for (qualifier, _, pos) in refs {
        if let Some(q) = qualifier
            && !sides.iter().any(|s| s.alias == q)
        {
            return Err(SqlError::semantic(
                pos,
                format!(
                    "Failed to prepare statement: '{q}' is not a valid stream/table name or alias."
                ),
            ));
        }
    }
    let ExprKind::Binary {
        op: BinaryOp::Eq,
        left: a,
        right: b,
    } = &j.on.kind
    else {
        return Err(SqlError::unsupported(
            j.on.pos,
            format!(
                "Unsupported join expression: {shown_criteria}. Joins need an equality of an expression of each side."
            ),
        ));
    };
    let a_sides = referenced_sides(a, &sides[..=i + 1], all_scope)?;
    let b_sides = referenced_sides(b, &sides[..=i + 1], all_scope)?;
    for (e, refs) in [(a, &a_sides), (b, &b_sides)] {
        if refs.len() != 1 {
            return Err(SqlError::semantic(
                e.pos,
                format!(
                    "Invalid comparison expression '{}' in join '{shown_criteria}'. Each side of the join comparision must contain references from exactly one source.",
                    qualify(e, &sides[..=i + 1])
                ),
            ));
        }
    }
    let (a_side, b_side) = (a_sides[0], b_sides[0]);
    if a_side == b_side {
        let name = &sides[a_side].desc.name;
        return Err(SqlError::semantic(
            j.on.pos,
            format!(
                "Each side of the join must reference exactly one source and not the same source. Left side references `{name}` and right references `{name}`"
            ),
        ));
    }
    Ok((a.as_ref(), b.as_ref(), a_side, b_side))
}

/// Plans `FROM a JOIN b ON ... [JOIN c ON ...]`.
pub(crate) fn plan_joins(
    stmt: &ast::Statement,
    q: &ast::Query,
    catalog: &dyn Catalog,
) -> Result<Joined, SqlError> {
    let mut sides = vec![lookup(catalog, &q.from)?];
    for j in &q.joins {
        let side = lookup(catalog, &j.relation)?;
        if q.joins.len() == 1 && side.desc.name == sides[0].desc.name {
            return Err(SqlError::semantic(
                j.pos,
                format!(
                    "Can not join '{0}' to '{0}': self joins are not yet supported.",
                    side.desc.name
                ),
            ));
        }
        sides.push(side);
    }
    let kafka: Vec<&str> = sides
        .iter()
        .filter(|s| s.desc.topic.value_format.kind == FormatKind::Kafka)
        .map(|s| s.desc.name.as_str())
        .collect();
    if !kafka.is_empty() {
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "Source(s) {} are using the 'KAFKA' value format. This format does not yet support JOIN.",
                kafka.join(", ")
            ),
        ));
    }
    let windowed = check_windows(stmt, &sides)?;

    let by_alias: Vec<(String, Vec<String>)> = sides
        .iter()
        .map(|s| {
            (
                s.alias.clone(),
                s.columns().into_iter().map(|(name, _)| name).collect(),
            )
        })
        .collect();
    // The whole join's scope, for resolving the criteria.
    let all_scope = Scope {
        qualifiers: sides.iter().map(|s| s.alias.clone()).collect(),
        columns: sides
            .iter()
            .flat_map(|s| s.joined_columns().into_iter().map(|(_, c)| c))
            .collect(),
    };

    // The left input so far: its step, its row's scope, and how it is carried.
    let first = &sides[0];
    let mut root = first.step();
    let mut left_is_table = first.is_table();
    let mut left_scope = first.own_scope();
    let mut left_columns: Vec<CarriedColumn> =
        first.joined_columns().into_iter().map(|(c, _)| c).collect();
    let mut joined_scope: Vec<ScopeColumn> =
        first.joined_columns().into_iter().map(|(_, c)| c).collect();
    let mut key: Option<JoinKey> = None;
    let mut produces_table = left_is_table;

    for (i, j) in q.joins.iter().enumerate() {
        criteria(i, j, &sides, &all_scope)?;
    }
    for (i, j) in q.joins.iter().enumerate() {
        let right = &sides[i + 1];
        let left_sides = &sides[..=i];
        let (a, b, a_side, b_side) = criteria(i, j, &sides, &all_scope)?;
        let (left_expr, right_expr) = if b_side == i + 1 {
            (a, b)
        } else if a_side == i + 1 {
            (b, a)
        } else {
            return Err(SqlError::semantic(
                j.on.pos,
                format!(
                    "A join criteria is expected to reference the source (`{}`) in the FROM clause, instead the right source references `{}` and the left source references `{}`",
                    right.desc.name, sides[b_side].desc.name, sides[a_side].desc.name
                ),
            ));
        };
        let current_left_scope = Scope {
            qualifiers: left_sides.iter().map(|s| s.alias.clone()).collect(),
            columns: left_scope.columns.clone(),
        };
        let on = |scope: &Scope, e: &ast::Expr| {
            ExprAnalyzer {
                scope,
                clause: Clause::JoinOn,
            }
            .analyze(e)
        };
        let (mut left_key, left_ty) = on(&current_left_scope, left_expr)?;
        let (right_key, right_ty) = on(&right.own_scope(), right_expr)?;
        let shown_left = qualify(left_expr, left_sides);
        let shown_right = qualify(right_expr, std::slice::from_ref(right));
        if left_ty != right_ty {
            return Err(SqlError::semantic(
                j.on.pos,
                format!(
                    "Invalid join condition: types don't match. Got {shown_left}{{{left_ty}}} = {shown_right}{{{right_ty}}}."
                ),
            ));
        }
        // The join key becomes a key column: it cannot hold a map.
        if crate::planner::contains_map(&left_ty) {
            // Named as in the joined row: `<alias>_<column>`.
            let name = match (&left_key, left_sides) {
                (sluice_plan::Expr::Column(c), [only]) => format!("{}_{c}", only.alias),
                (sluice_plan::Expr::Column(c), _) => c.clone(),
                _ => left_expr.to_string(),
            };
            return Err(SqlError::semantic(
                None,
                format!(
                    "Map keys, including types that contain maps, are not supported as they may lead to unexpected behavior due to inconsistent serialization. Key column name: `{name}`. Column type: {left_ty}. See https://github.com/confluentinc/ksql/issues/6621 for more."
                ),
            ));
        }
        let got = |t: JoinType| {
            // ksqlDB names the first source of the left side.
            let l = sides[0].desc.name.clone();
            format!("{l} {} {}", t.describe(), right.desc.name)
        };
        // Whether an expression is a plain reference to a key column of its source.
        let is_key_column = |e: &ast::Expr, side: &Side| {
            matches!(&e.kind, ExprKind::Column { name, .. }
                if side.desc.topic.schema.find(name).is_some_and(|c| c.kind == sluice_plan::ColumnKind::Key))
        };
        let shape = match (left_is_table, right.is_table()) {
            (false, false) => {
                let Some(w) = &j.within else {
                    return Err(SqlError::semantic(
                        j.pos,
                        "Stream-Stream joins must have a WITHIN clause specified. None was provided. To learn about how to specify a WITHIN clause with a stream-stream join, please visit: https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select",
                    ));
                };
                JoinShape::StreamStream {
                    before_ms: w.before_ms as i64,
                    after_ms: w.after_ms as i64,
                    grace_ms: w.grace_ms.map(|g| g as i64),
                }
            }
            (false, true) => {
                if j.within.is_some() {
                    return Err(SqlError::semantic(
                        j.pos,
                        "A window definition was provided for a Stream-Table join. These joins are not windowed. Please drop the window definition (ie. the WITHIN clause) and try to execute your join again.",
                    ));
                }
                match j.join_type {
                    JoinType::Full => {
                        return Err(SqlError::semantic(
                            j.pos,
                            format!(
                                "Invalid join type: full-outer join not supported for stream-table join. Got {}.",
                                got(j.join_type)
                            ),
                        ));
                    }
                    JoinType::Right => {
                        return Err(SqlError::semantic(
                            j.pos,
                            format!(
                                "Invalid join type: right join not supported for stream-table join. Got {}.",
                                got(j.join_type)
                            ),
                        ));
                    }
                    _ => {}
                }
                if !is_key_column(right_expr, right) {
                    return Err(SqlError::semantic(
                        j.on.pos,
                        format!(
                            "Invalid join condition: stream-table joins require to join on the table's primary key. Got {shown_left} = {shown_right}."
                        ),
                    ));
                }
                JoinShape::StreamTable
            }
            (true, false) => {
                return Err(SqlError::semantic(
                    j.pos,
                    format!(
                        "Invalid join order: table-stream joins are not supported; only stream-table joins. Got {}.",
                        got(j.join_type)
                    ),
                ));
            }
            (true, true) => {
                if j.within.is_some() {
                    return Err(SqlError::semantic(
                        j.pos,
                        "A window definition was provided for a Table-Table join. These joins are not windowed. Please drop the window definition (i.e. the WITHIN clause) and try to execute your join again.",
                    ));
                }
                // The right side must be the right table's whole primary key.
                if !is_key_column(right_expr, right) || right.desc.topic.schema.keys().count() != 1
                {
                    // Shown in the order the criteria were written.
                    let (l, r) = if a_side == i + 1 {
                        (&shown_right, &shown_left)
                    } else {
                        (&shown_left, &shown_right)
                    };
                    return Err(SqlError::semantic(
                        j.on.pos,
                        format!(
                            "Invalid join condition: table-table joins require to join on the primary key of the right input table. Got {l} = {r}."
                        ),
                    ));
                }
                let left_is_key = i == 0
                    && is_key_column(left_expr, &sides[0])
                    && sides[0].desc.topic.schema.keys().count() == 1
                    || i > 0
                        && key.as_ref().is_some_and(|k| {
                            matches!(&left_key, sluice_plan::Expr::Column(c)
                                if key_columns(k, &by_alias).iter().any(|e| e.column == *c))
                        });
                if left_is_key {
                    JoinShape::TableTable
                } else if i > 0 {
                    return Err(SqlError::unsupported(
                        j.on.pos,
                        "Foreign-key joins after another join are not supported yet",
                    ));
                } else {
                    match j.join_type {
                        JoinType::Right => {
                            return Err(SqlError::semantic(
                                j.pos,
                                "RIGHT OUTER JOIN on a foreign key is not supported",
                            ));
                        }
                        JoinType::Full => {
                            return Err(SqlError::semantic(
                                j.pos,
                                "FULL OUTER JOIN on a foreign key is not supported",
                            ));
                        }
                        _ => {}
                    }
                    JoinShape::ForeignKey {
                        left_primary_key: sides[0]
                            .desc
                            .topic
                            .schema
                            .keys()
                            .map(|c| c.name.clone())
                            .collect(),
                    }
                }
            }
        };
        let left_owner = if b_side == i + 1 { a_side } else { b_side };
        if windowed && matches!(shape, JoinShape::ForeignKey { .. }) {
            return Err(SqlError::semantic(
                j.pos,
                "Foreign-key table-table joins are not supported on windowed tables.",
            ));
        }
        if windowed
            && (!is_key_column(left_expr, &sides[left_owner]) || !is_key_column(right_expr, right))
        {
            return Err(SqlError::semantic(
                j.pos,
                "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.",
            ));
        }

        // The key's names: the plain columns of the criteria, and those the left
        // input's key already had when the criteria's left side is one of them.
        let mut equivalents = Vec::new();
        if j.join_type != JoinType::Full {
            if let (Some(prev), sluice_plan::Expr::Column(c)) = (&key, &left_key) {
                let previous = key_columns(prev, &by_alias);
                if previous.iter().any(|e| e.column == *c) {
                    equivalents.extend(previous);
                }
            }
            for (expr, plan_expr, owner) in [
                (left_expr, &left_key, &sides[left_owner]),
                (right_expr, &right_key, right),
            ] {
                let (ExprKind::Column { name, .. }, sluice_plan::Expr::Column(_)) =
                    (&expr.kind, plan_expr)
                else {
                    continue;
                };
                let column = format!("{}_{name}", owner.alias);
                if equivalents
                    .iter()
                    .any(|e: &KeyEquivalent| e.column == column)
                {
                    continue;
                }
                equivalents.push(KeyEquivalent {
                    default_name: default_name(&by_alias, &owner.alias, name),
                    shown: format!("{}.{name}", owner.alias),
                    column,
                });
            }
        }
        let foreign = match &shape {
            JoinShape::ForeignKey { left_primary_key } => {
                equivalents.clear();
                Some((
                    left_primary_key
                        .iter()
                        .map(|k| (format!("{}_{k}", sides[0].alias), k.clone()))
                        .collect(),
                    sides[0].desc.name.clone(),
                ))
            }
            _ => None,
        };
        // A later join on the earlier join's key reads its key column, which its
        // deletions carry too.
        if let (Some(prev), sluice_plan::Expr::Column(c)) = (&key, &left_key)
            && prev.foreign.is_none()
            && prev.equivalents.iter().any(|e| e.column == *c)
        {
            left_key = sluice_plan::Expr::Column(prev.column.clone());
        }
        let synthetic = equivalents.is_empty() && foreign.is_none();
        let key_column = if synthetic {
            synthetic_key_name(&sides)
        } else {
            JOIN_KEY.to_string()
        };

        let right_joined = right.joined_columns();
        let right_columns: Vec<CarriedColumn> =
            right_joined.iter().map(|(c, _)| c.clone()).collect();
        let mut schema_columns = vec![Column::key(key_column.clone(), left_ty.clone())];
        for c in joined_scope
            .iter()
            .chain(right_joined.iter().map(|(_, c)| c))
        {
            schema_columns.push(Column::value(c.name.clone(), c.ty.clone()));
        }
        let schema = LogicalSchema::new(schema_columns);
        root = Step::Join {
            left: Box::new(root),
            right: Box::new(right.step()),
            kind: match j.join_type {
                JoinType::Inner => JoinKind::Inner,
                JoinType::Left => JoinKind::Left,
                JoinType::Right => JoinKind::Right,
                JoinType::Full => JoinKind::Outer,
            },
            shape,
            left_key,
            right_key,
            left_columns: std::mem::take(&mut left_columns),
            right_columns,
            schema,
        };
        joined_scope.extend(right_joined.into_iter().map(|(_, c)| c));
        // The next join's left input is this join's row, whose columns keep their names.
        left_columns = joined_scope
            .iter()
            .map(|c| CarriedColumn {
                from: c.name.clone(),
                to: c.name.clone(),
            })
            .collect();
        left_scope = Scope {
            qualifiers: Vec::new(),
            columns: joined_scope.clone(),
        };
        produces_table = produces_table && right.is_table();
        left_is_table = produces_table;
        key = Some(JoinKey {
            column: key_column,
            ty: left_ty,
            synthetic,
            equivalents,
            foreign,
        });
    }
    let key = key.expect("a join has at least one JOIN clause");

    let mut columns = joined_scope;
    for (name, ty) in PSEUDO_COLUMNS {
        columns.push(ScopeColumn {
            name: name.to_string(),
            ty,
            origin: None,
        });
    }
    if key.synthetic {
        columns.push(ScopeColumn {
            name: key.column.clone(),
            ty: key.ty.clone(),
            origin: None,
        });
    }
    let mut star = Vec::new();
    if key.synthetic {
        star.push(StarColumn {
            qualifier: None,
            name: key.column.clone(),
            ty: key.ty.clone(),
        });
    }
    for s in &sides {
        for (name, ty) in s.columns() {
            star.push(StarColumn {
                qualifier: Some(s.alias.clone()),
                name: format!("{}_{name}", s.alias),
                ty,
            });
        }
    }
    Ok(Joined {
        root,
        scope: Scope {
            qualifiers: sides.iter().map(|s| s.alias.clone()).collect(),
            columns,
        },
        star,
        key,
        produces_table,
        sources_by_alias: by_alias,
        sources: sides.into_iter().map(|s| s.desc).collect(),
    })
}

/// The columns of a join's result equal to its key: the key equivalents, or the left
/// table's key column of a foreign-key join.
fn key_columns(key: &JoinKey, by_alias: &[(String, Vec<String>)]) -> Vec<KeyEquivalent> {
    match &key.foreign {
        Some((primary, _)) if primary.len() == 1 => {
            let (row, raw) = &primary[0];
            let alias = &row[..row.len() - raw.len() - 1];
            vec![KeyEquivalent {
                column: row.clone(),
                shown: format!("{alias}.{raw}"),
                default_name: default_name(by_alias, alias, raw),
            }]
        }
        Some(_) => Vec::new(),
        None => key
            .equivalents
            .iter()
            .map(|e| KeyEquivalent {
                column: e.column.clone(),
                shown: e.shown.clone(),
                default_name: e.default_name.clone(),
            })
            .collect(),
    }
}

/// The output name of an unaliased select item that is a column of a joined source (see
/// [`default_name`]); None for other items.
pub(crate) fn item_name(j: &Joined, scope: &Scope, item: &ast::Expr, e: &Expr) -> Option<String> {
    let (ExprKind::Column { .. }, Expr::Column(col)) = (&item.kind, e) else {
        return None;
    };
    let column = scope.columns.iter().find(|c| c.name == *col)?;
    Some(match &column.origin {
        Some((alias, name)) => default_name(&j.sources_by_alias, alias, name),
        None => col.clone(),
    })
}

/// The output name of an unaliased reference to a source's column: the column's own
/// name when no other joined source has a column of that name, else `ALIAS_NAME`.
fn default_name(sources: &[(String, Vec<String>)], alias: &str, name: &str) -> String {
    // Every source has the pseudo-columns.
    let shared = PSEUDO_COLUMNS.iter().any(|(p, _)| *p == name)
        || sources
            .iter()
            .filter(|(a, _)| a != alias)
            .any(|(_, columns)| columns.iter().any(|c| c == name));
    if shared {
        format!("{alias}_{name}")
    } else {
        name.to_string()
    }
}

/// `ROWKEY`, or when a source has a column of that name, `ROWKEY_n` with n one more than
/// the highest such suffix any source column has (`ROWKEY` itself counting as 0), as
/// ksqlDB's alias generator numbers it.
fn synthetic_key_name(sides: &[Side]) -> String {
    let names = || {
        sides
            .iter()
            .flat_map(|s| s.desc.topic.schema.columns.iter().map(|c| c.name.as_str()))
    };
    if !names().any(|n| n == "ROWKEY") {
        return "ROWKEY".into();
    }
    let highest = names()
        .filter_map(|n| n.strip_prefix("ROWKEY_")?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    format!("ROWKEY_{}", highest + 1)
}

/// ksqlDB's rules for joining windowed sources.
/// Whether the sources are windowed.
fn check_windows(stmt: &ast::Statement, sides: &[Side]) -> Result<bool, SqlError> {
    let windowed: Vec<&Side> = sides
        .iter()
        .filter(|s| s.desc.topic.window.is_some())
        .collect();
    if windowed.is_empty() {
        return Ok(false);
    }
    if let Some(plain) = sides.iter().find(|s| s.desc.topic.window.is_none()) {
        let w = windowed[0];
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "Can not join windowed source to non-windowed source.\n`{}` is {} windowed\n`{}` is not windowed",
                w.desc.name,
                w.desc
                    .topic
                    .window
                    .as_ref()
                    .map(|w| w.kind.name())
                    .unwrap_or_default(),
                plain.desc.name
            ),
        ));
    }
    let kinds: Vec<_> = windowed
        .iter()
        .map(|s| s.desc.topic.window.as_ref().map(|w| w.kind))
        .collect();
    let session =
        |k: &Option<sluice_plan::WindowKind>| *k == Some(sluice_plan::WindowKind::Session);
    if kinds.iter().any(session) && !kinds.iter().all(session) {
        let name = |s: &Side| {
            s.desc
                .topic
                .window
                .as_ref()
                .map(|w| w.kind.name())
                .unwrap_or_default()
        };
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "Incompatible windowed sources.\nLeft source: {}\nRight source: {}\nSession windowed sources can only be joined to other session windowed sources, and may still not result in expected behaviour as session bounds must be an exact match for the join to work\nHopping and tumbling windowed sources can only be joined to other hopping and tumbling windowed sources",
                name(windowed[0]),
                name(windowed[1])
            ),
        ));
    }
    Ok(true)
}

/// The select list of a join: stars expanded, every column named, and the key found
/// among the items (a column equal to the join key, or the synthetic key).
pub(crate) fn plan_join_projection(
    stmt: &ast::Statement,
    c: &ast::CreateAs,
    j: &Joined,
    scope: &Scope,
) -> Result<(Vec<NamedExpr>, LogicalSchema), SqlError> {
    let q = &c.query;
    let analyzer = ExprAnalyzer {
        scope,
        clause: Clause::Select,
    };
    let foreign = j.key.foreign.as_ref();
    let is_key = |column: &str| match foreign {
        Some((primary, _)) => primary.iter().any(|(p, _)| p == column),
        None => column == j.key.column || j.key.equivalents.iter().any(|e| e.column == column),
    };
    // A foreign-key join's result has every column of the left table's key; another
    // join has one key, which the first column equal to it names.
    let takes_key = |keys: &[(String, String)], column: &str| {
        is_key(column)
            && (keys.is_empty() || foreign.is_some() || keys.iter().any(|(_, k)| k == column))
    };
    // (output name, the key column it projects)
    let mut keys: Vec<(String, String)> = Vec::new();
    // A star brings the key only when no item names it explicitly: the first of the
    // key's columns (in the order of the join criteria) that a star expands to.
    let starred = |col: &StarColumn| {
        q.select.iter().any(|item| {
            matches!(item, ast::SelectItem::Star { qualifier, .. }
                if qualifier.is_none() || col.qualifier.as_ref() == qualifier.as_ref())
        })
    };
    let mut explicit_key = false;
    for item in &q.select {
        if let ast::SelectItem::Expr { expr, .. } = item
            && let Ok((Expr::Column(c), _)) = analyzer.analyze(expr)
            && is_key(&c)
        {
            explicit_key = true;
        }
    }
    let star_key: Option<String> = if explicit_key || foreign.is_some() {
        None
    } else {
        std::iter::once(j.key.column.as_str())
            .chain(j.key.equivalents.iter().map(|e| e.column.as_str()))
            .find(|k| j.star.iter().any(|s| s.name == *k && starred(s)))
            .map(str::to_string)
    };
    let mut values: Vec<(String, Expr, SqlType)> = Vec::new();
    let mut aliases = crate::planner::ColumnAliases::new(q, scope);
    for item in &q.select {
        match item {
            ast::SelectItem::StructStar { pos, .. } => {
                return Err(SqlError::unsupported(
                    *pos,
                    "->* in a join's projection is not supported yet",
                ));
            }
            ast::SelectItem::Star { qualifier, pos } => {
                if let Some(qual) = qualifier
                    && !scope.qualifiers.contains(qual)
                {
                    return Err(SqlError::semantic(
                        *pos,
                        format!(
                            "Failed to prepare statement: '{qual}' is not a valid stream/table name or alias."
                        ),
                    ));
                }
                for col in j
                    .star
                    .iter()
                    .filter(|s| qualifier.is_none() || s.qualifier.as_ref() == qualifier.as_ref())
                {
                    let key = match (&star_key, foreign) {
                        (_, Some(_)) => {
                            takes_key(&keys, &col.name) && !keys.iter().any(|(_, k)| *k == col.name)
                        }
                        (Some(k), None) => *k == col.name && keys.is_empty(),
                        (None, None) => false,
                    };
                    if key {
                        keys.push((col.name.clone(), col.name.clone()));
                    } else {
                        values.push((
                            col.name.clone(),
                            Expr::Column(col.name.clone()),
                            col.ty.clone(),
                        ));
                    }
                }
            }
            ast::SelectItem::Expr { expr, alias } => {
                crate::planner::refuse_untyped_null(expr)?;
                let (e, ty) = analyzer.analyze(expr)?;
                let key_column = match &e {
                    Expr::Column(col) if is_key(col) => Some(col.clone()),
                    _ => None,
                };
                let name = match (alias, &expr.kind, &e) {
                    (Some(a), _, _) => a.clone(),
                    (None, _, _) => {
                        item_name(j, scope, expr, &e).unwrap_or_else(|| aliases.name(expr))
                    }
                };
                // ksqlDB words this the same way in a join whether or not the name
                // came from an alias.
                if crate::planner::RESERVED_COLUMNS.contains(&name.as_str()) {
                    return Err(crate::planner::reserved_name(&name, false, expr.pos));
                }
                match key_column {
                    Some(col) if takes_key(&keys, &col) => {
                        keys.push((name, col));
                    }
                    _ => values.push((name, e, ty)),
                }
            }
        }
    }
    if let Some((primary, table)) = foreign {
        let missing: Vec<String> = primary
            .iter()
            .filter(|(p, _)| !keys.iter().any(|(_, k)| k == p))
            .map(|(_, raw)| format!("`{raw}`"))
            .collect();
        if !missing.is_empty() {
            return Err(SqlError::semantic(
                stmt.pos,
                format!(
                    "Primary key columns missing in projection. For foreign-key table-table joins, the projection must include all primary key columns from the left input table (`{table}`). Missing columns: {}.",
                    missing.join(", ")
                ),
            ));
        }
    }
    if keys.is_empty() {
        if j.key.synthetic {
            let k = &j.key.column;
            return Err(SqlError::semantic(
                stmt.pos,
                format!(
                    "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\nThe query used to build `{}` must include the join expression {k} in its projection (eg, SELECT {k}...).\n{k} was added as a synthetic key column because the join criteria did not match any source column. This expression must be included in the projection and may be aliased.",
                    c.name
                ),
            ));
        }
        let shown: Vec<&str> = j.key.equivalents.iter().map(|e| e.shown.as_str()).collect();
        let list = match shown.split_last() {
            Some((last, [])) => format!("expression {last}"),
            Some((last, init)) => format!("expressions {} or {last}", init.join(", ")),
            None => String::new(),
        };
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "The query used to build `{}` must include the join {list} in its projection (eg, SELECT {}...).",
                c.name,
                shown.first().copied().unwrap_or_default()
            ),
        ));
    }
    if let Some((_, column)) = keys
        .iter()
        .enumerate()
        .find(|(i, (_, k))| keys[..*i].iter().any(|(_, p)| p == k))
        .map(|(_, k)| k)
    {
        let mut names: Vec<&str> = keys
            .iter()
            .filter(|(_, k)| k == column)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        let (last, init) = names.split_last().expect("two or more");
        let shown = if j.key.synthetic || foreign.is_some() {
            column.clone()
        } else {
            // The first column equal to the key, as the source named it.
            j.key.equivalents[0].column.clone()
        };
        return Err(SqlError::semantic(
            stmt.pos,
            format!(
                "The projection contains a key column (`{shown}`) more than once, aliased as: {} and {last}.",
                init.join(", ")
            ),
        ));
    }
    let mut columns = Vec::new();
    let mut projection = Vec::new();
    for (name, column) in &keys {
        // Another join's key is the join key, whichever column equal to it named it.
        let (expr, ty) = match foreign {
            Some(_) => {
                let c = scope.columns.iter().find(|c| c.name == *column);
                (
                    Expr::Column(column.clone()),
                    c.map_or(j.key.ty.clone(), |c| c.ty.clone()),
                )
            }
            None => (Expr::Column(j.key.column.clone()), j.key.ty.clone()),
        };
        columns.push(Column::key(name.clone(), ty));
        projection.push(NamedExpr {
            name: name.clone(),
            expr,
        });
    }
    for (name, e, ty) in values {
        if let Some(prev) = columns.iter().find(|c| c.name == name) {
            return Err(SqlError::semantic(
                stmt.pos,
                format!(
                    "Duplicate value columns found in schema: `{}` {}",
                    prev.name, ty
                ),
            ));
        }
        columns.push(Column::value(name.clone(), ty));
        projection.push(NamedExpr { name, expr: e });
    }
    if columns.len() == keys.len() {
        return Err(SqlError::semantic(
            stmt.pos,
            "The projection contains no value columns.",
        ));
    }
    Ok((projection, LogicalSchema::new(columns)))
}

#[cfg(test)]
mod tests {
    use crate::parser::parse_statement;
    use crate::planner::{Planned, PlannerConfig, SourceDesc, plan_statement};
    use std::collections::BTreeMap;

    type MapCatalog = BTreeMap<String, SourceDesc>;

    fn catalog() -> MapCatalog {
        let mut c = MapCatalog::new();
        for sql in [
            "CREATE STREAM clicks (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='clicks', value_format='JSON');",
            "CREATE STREAM orders (id BIGINT KEY, item STRING) WITH (kafka_topic='orders', value_format='JSON');",
            "CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING, region STRING) WITH (kafka_topic='users', value_format='JSON');",
            "CREATE TABLE regions (id BIGINT PRIMARY KEY, region STRING) WITH (kafka_topic='regions', value_format='JSON');",
        ] {
            plan(&mut c, sql).unwrap();
        }
        c
    }

    fn plan(c: &mut MapCatalog, sql: &str) -> Result<Planned, crate::error::SqlError> {
        let stmt = parse_statement(sql)?;
        let planned = plan_statement(&stmt, c, &PlannerConfig::default())?;
        if let Planned::CreateSource { source, .. } | Planned::CreateAs { sink: source, .. } =
            &planned
        {
            c.insert(source.name.clone(), source.clone());
        }
        Ok(planned)
    }

    fn schema(sql: &str) -> String {
        match plan(&mut catalog(), sql).unwrap() {
            Planned::CreateAs { sink, .. } => sink.topic.schema.to_string(),
            other => panic!("{other:?}"),
        }
    }

    fn error(sql: &str) -> String {
        plan(&mut catalog(), sql).unwrap_err().to_string()
    }

    #[test]
    fn joined_columns_are_prefixed_and_the_key_is_a_join_column() {
        assert_eq!(
            schema("CREATE STREAM out AS SELECT * FROM clicks c JOIN users u ON c.user_id = u.id;"),
            "`C_USER_ID` BIGINT KEY, `C_PAGE` STRING, `C_MS` INTEGER, `U_ID` BIGINT, `U_NAME` STRING, `U_REGION` STRING"
        );
        assert_eq!(
            schema(
                "CREATE STREAM out AS SELECT u.id, page, name FROM clicks c LEFT JOIN users u ON c.user_id = u.id;"
            ),
            "`ID` BIGINT KEY, `PAGE` STRING, `NAME` STRING"
        );
    }

    #[test]
    fn full_outer_and_expression_joins_have_a_synthetic_key() {
        assert_eq!(
            schema(
                "CREATE TABLE out AS SELECT * FROM users u FULL OUTER JOIN regions r ON u.id = r.id;"
            ),
            "`ROWKEY` BIGINT KEY, `U_ID` BIGINT, `U_NAME` STRING, `U_REGION` STRING, `R_ID` BIGINT, `R_REGION` STRING"
        );
        assert!(
            error(
                "CREATE STREAM out AS SELECT c.page FROM clicks c JOIN orders o WITHIN 1 MINUTE ON ABS(c.user_id) = ABS(o.id);"
            )
            .contains("must include the join expression ROWKEY")
        );
        // Sources with a ROWKEY column: the next number after the highest ROWKEY_n.
        let mut c = catalog();
        for sql in [
            "CREATE STREAM a (ROWKEY INT KEY, ROWKEY_2 INT) WITH (kafka_topic='a', format='JSON');",
            "CREATE STREAM b (ROWKEY INT KEY, V INT) WITH (kafka_topic='b', format='JSON');",
        ] {
            plan(&mut c, sql).unwrap();
        }
        let planned = plan(
            &mut c,
            "CREATE STREAM out AS SELECT * FROM a FULL OUTER JOIN b WITHIN 1 SECOND ON a.ROWKEY = b.ROWKEY;",
        )
        .unwrap();
        let Planned::CreateAs { sink, .. } = planned else {
            panic!("a query")
        };
        assert_eq!(sink.topic.schema.columns[0].name, "ROWKEY_3");
    }

    #[test]
    fn join_rules_are_ksqldbs() {
        assert!(
            error("CREATE STREAM out AS SELECT c.user_id, page FROM clicks c JOIN orders o ON c.user_id = o.id;")
                .contains("Stream-Stream joins must have a WITHIN clause")
        );
        assert_eq!(
            error(
                "CREATE STREAM out AS SELECT u.id FROM users u JOIN clicks c ON u.id = c.user_id;"
            ),
            "Invalid join order: table-stream joins are not supported; only stream-table joins. Got USERS [INNER] JOIN CLICKS."
        );
        assert_eq!(
            error(
                "CREATE STREAM out AS SELECT c.user_id FROM clicks c JOIN users u ON c.page = u.name;"
            ),
            "Invalid join condition: stream-table joins require to join on the table's primary key. Got C.PAGE = U.NAME."
        );
        assert_eq!(
            error(
                "CREATE STREAM out AS SELECT c.user_id FROM clicks c JOIN users u ON c.page = u.id;"
            ),
            "Invalid join condition: types don't match. Got C.PAGE{STRING} = U.ID{BIGINT}."
        );
        assert_eq!(
            error(
                "CREATE STREAM out AS SELECT page FROM clicks c JOIN users u ON c.user_id = u.id;"
            ),
            "The query used to build `OUT` must include the join expressions C.USER_ID or U.ID in its projection (eg, SELECT C.USER_ID...)."
        );
        assert_eq!(
            error(
                "CREATE TABLE out AS SELECT u.id, region FROM users u JOIN regions r ON u.id = r.id;"
            ),
            "Column 'REGION' is ambiguous. Could be U.REGION or R.REGION."
        );
    }

    #[test]
    fn n_way_joins_chain_their_keys() {
        assert_eq!(
            schema(
                "CREATE STREAM out AS SELECT r.id, page, name, r.region FROM clicks c JOIN users u ON c.user_id = u.id JOIN regions r ON c.user_id = r.id;"
            ),
            "`R_ID` BIGINT KEY, `PAGE` STRING, `NAME` STRING, `R_REGION` STRING"
        );
    }
}
