//! The syntax tree of ksqlDB statements, as written (names not yet resolved).
//!
//! `Display` prints SQL that parses back to the same tree.

use crate::error::Pos;
use sluice_plan::SqlType;
use std::fmt;

/// A name as ksqlDB reads it: unquoted names are upper-cased, quoted ones kept.
pub type Ident = String;

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub kind: StatementKind,
    /// The statement's own text, without the trailing `;`.
    pub text: String,
    pub pos: Pos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Stream,
    Table,
}

impl SourceKind {
    pub fn keyword(self) -> &'static str {
        match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum StatementKind {
    CreateSource(CreateSource),
    CreateAs(CreateAs),
    /// `INSERT INTO target SELECT ...`
    InsertInto {
        target: Ident,
        query: Query,
    },
    /// `INSERT INTO target [(columns)] VALUES (values)`
    InsertValues {
        target: Ident,
        columns: Option<Vec<Ident>>,
        values: Vec<Expr>,
    },
    Select(Query),
    /// `ALTER STREAM|TABLE name ADD [COLUMN] name type, ...`
    Alter {
        kind: SourceKind,
        name: Ident,
        columns: Vec<(Ident, SqlType)>,
    },
    Drop {
        kind: SourceKind,
        name: Ident,
        if_exists: bool,
        delete_topic: bool,
    },
    /// `TERMINATE id` or `TERMINATE ALL` (None).
    Terminate(Option<Ident>),
    /// `PAUSE id|ALL` (`paused`) or `RESUME id|ALL`: a query stops reading its input,
    /// keeping its state and position, until resumed.
    Pause {
        query_id: Option<Ident>,
        paused: bool,
    },
    Show(ShowTarget),
    Describe {
        name: Ident,
        extended: bool,
    },
    /// `DESCRIBE FUNCTION name`
    DescribeFunction(Ident),
    /// `PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]`
    Print {
        topic: String,
        from_beginning: bool,
        interval: Option<u64>,
        limit: Option<u64>,
    },
    /// `EXPLAIN query_id`
    ExplainQuery(Ident),
    /// `EXPLAIN statement`: its plan, without running it.
    ExplainStatement(Box<StatementKind>),
    /// `SET 'name'='value'`: applies to the statements that follow in the same request.
    SetProperty {
        name: String,
        value: String,
    },
    /// `UNSET 'name'`
    UnsetProperty {
        name: String,
    },
    /// `CREATE TYPE [IF NOT EXISTS] name AS type`: a name for a type.
    CreateType {
        name: Ident,
        ty: SqlType,
        if_not_exists: bool,
    },
    /// `DROP TYPE [IF EXISTS] name`
    DropType {
        name: Ident,
        if_exists: bool,
    },
    /// `DEFINE name = 'value'`: `${name}` in the statements after it is the value.
    Define {
        name: String,
        value: String,
    },
    /// `UNDEFINE name`
    Undefine {
        name: String,
    },
    /// `ASSERT [NOT EXISTS] TOPIC name [WITH (...)] [TIMEOUT n unit]`
    AssertTopic {
        topic: String,
        exists: bool,
        properties: Properties,
        timeout_ms: Option<u64>,
    },
    /// `ASSERT [NOT EXISTS] SCHEMA [SUBJECT name] [ID n] [TIMEOUT n unit]`
    AssertSchema {
        subject: Option<String>,
        id: Option<u64>,
        exists: bool,
        timeout_ms: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowTarget {
    Streams { extended: bool },
    Tables { extended: bool },
    Queries { extended: bool },
    Topics { all: bool, extended: bool },
    Properties,
    Functions,
    Types,
    Variables,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ColumnConstraint {
    None,
    Key,
    PrimaryKey,
    Headers,
    Header(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDef {
    pub name: Ident,
    pub ty: SqlType,
    pub constraint: ColumnConstraint,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PropertyValue {
    String(String),
    Number(String),
    Boolean(bool),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::String(s) => write!(f, "{s}"),
            PropertyValue::Number(n) => write!(f, "{n}"),
            PropertyValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// `WITH (name=value, ...)`; names upper-cased.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    pub entries: Vec<(Ident, PropertyValue, Pos)>,
}

impl Properties {
    pub fn get(&self, name: &str) -> Option<&PropertyValue> {
        self.entries
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CreateSource {
    pub kind: SourceKind,
    pub or_replace: bool,
    pub is_source: bool,
    pub if_not_exists: bool,
    pub name: Ident,
    pub columns: Vec<ColumnDef>,
    pub properties: Properties,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CreateAs {
    pub kind: SourceKind,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub name: Ident,
    pub properties: Properties,
    pub query: Query,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Changes,
    Final,
}

/// `WINDOW TUMBLING|HOPPING|SESSION (...)`, durations in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowExpr {
    pub kind: WindowKind,
    pub retention_ms: Option<u64>,
    pub grace_ms: Option<u64>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WindowKind {
    Tumbling { size_ms: u64 },
    Hopping { size_ms: u64, advance_ms: u64 },
    Session { gap_ms: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub select: Vec<SelectItem>,
    pub from: Relation,
    /// `JOIN`s after the first source, joined left to right.
    pub joins: Vec<JoinClause>,
    pub window: Option<WindowExpr>,
    pub where_clause: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub partition_by: Vec<Expr>,
    pub emit: Option<Emit>,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SelectItem {
    /// `*` or `alias.*`
    Star {
        qualifier: Option<Ident>,
        pos: Pos,
    },
    Expr {
        expr: Expr,
        alias: Option<Ident>,
    },
    /// `expr->*`: every field of a struct, each a column named after the field.
    StructStar {
        expr: Expr,
        pos: Pos,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Relation {
    pub name: Ident,
    pub alias: Option<Ident>,
    pub pos: Pos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinType {
    /// As ksqlDB writes the type in messages (`[INNER] JOIN`, `LEFT [OUTER] JOIN`).
    pub fn describe(self) -> &'static str {
        match self {
            JoinType::Inner => "[INNER] JOIN",
            JoinType::Left => "LEFT [OUTER] JOIN",
            JoinType::Right => "RIGHT [OUTER] JOIN",
            JoinType::Full => "[FULL] OUTER JOIN",
        }
    }
}

/// `[INNER|LEFT|RIGHT|FULL [OUTER]] JOIN relation [WITHIN ...] ON expr`.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinClause {
    pub join_type: JoinType,
    pub relation: Relation,
    pub within: Option<JoinWithin>,
    pub on: Expr,
    pub pos: Pos,
}

/// `WITHIN n unit` (before = after) or `WITHIN (before, after)`, with an optional
/// `GRACE PERIOD`.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinWithin {
    pub before_ms: u64,
    pub after_ms: u64,
    pub grace_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Minus,
    Plus,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LiteralValue {
    Null,
    Boolean(bool),
    /// A number as written; its type (INT, BIGINT, DECIMAL or DOUBLE) follows from the text.
    Number(String),
    String(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Column {
        qualifier: Option<Ident>,
        name: Ident,
    },
    Literal(LiteralValue),
    Binary {
        op: sluice_plan::BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<String>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast {
        expr: Box<Expr>,
        to: SqlType,
    },
    /// A function call; `COUNT(*)` has `star` set and no arguments.
    Call {
        name: Ident,
        args: Vec<Expr>,
        star: bool,
    },
    Subscript {
        expr: Box<Expr>,
        index: Box<Expr>,
    },
    Dereference {
        expr: Box<Expr>,
        field: Ident,
    },
    Lambda {
        params: Vec<Ident>,
        body: Box<Expr>,
    },
    Array(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Struct(Vec<(Ident, Expr)>),
}

impl Expr {
    pub fn new(kind: ExprKind, pos: Pos) -> Expr {
        Expr { kind, pos }
    }

    /// The names of the columns this expression reads, in order, with repeats.
    pub fn column_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.any(&mut |e| {
            if let ExprKind::Column { name, .. } = &e.kind {
                names.push(name.clone());
            }
            false
        });
        names
    }
}

/// Writes an identifier so that it reads back the same: plain when it is upper-case
/// letters, digits and `_` (and not a keyword ksqlDB reserves), back-quoted otherwise.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !crate::parser::is_reserved(name);
    if plain {
        name.to_string()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Column { qualifier, name } => {
                if let Some(q) = qualifier {
                    write!(f, "{}.", quote_ident(q))?;
                }
                f.write_str(&quote_ident(name))
            }
            ExprKind::Literal(l) => match l {
                LiteralValue::Null => f.write_str("null"),
                LiteralValue::Boolean(b) => write!(f, "{b}"),
                LiteralValue::Number(n) => f.write_str(n),
                LiteralValue::String(s) => f.write_str(&quote_string(s)),
            },
            ExprKind::Binary { op, left, right } => {
                write!(f, "({left} {} {right})", op.symbol())
            }
            ExprKind::Unary { op, expr } => match op {
                UnaryOp::Not => write!(f, "(NOT {expr})"),
                UnaryOp::Minus => write!(f, "-{expr}"),
                UnaryOp::Plus => write!(f, "+{expr}"),
            },
            ExprKind::IsNull { expr, negated } => {
                write!(f, "({expr} IS {}NULL)", if *negated { "NOT " } else { "" })
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => write!(
                f,
                "({expr} {}BETWEEN {low} AND {high})",
                if *negated { "NOT " } else { "" }
            ),
            ExprKind::InList {
                expr,
                list,
                negated,
            } => {
                write!(f, "({expr} {}IN (", if *negated { "NOT " } else { "" })?;
                write_list(f, list)?;
                f.write_str("))")
            }
            ExprKind::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                write!(
                    f,
                    "({expr} {}LIKE {pattern}",
                    if *negated { "NOT " } else { "" }
                )?;
                if let Some(e) = escape {
                    write!(f, " ESCAPE {}", quote_string(e))?;
                }
                f.write_str(")")
            }
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => {
                f.write_str("(CASE")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in whens {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END)")
            }
            ExprKind::Cast { expr, to } => write!(f, "CAST({expr} AS {})", type_sql(to)),
            ExprKind::Call { name, args, star } => {
                write!(f, "{}(", quote_ident(name))?;
                if *star {
                    f.write_str("*")?;
                }
                write_list(f, args)?;
                f.write_str(")")
            }
            ExprKind::Subscript { expr, index } => write!(f, "{expr}[{index}]"),
            ExprKind::Dereference { expr, field } => write!(f, "{expr}->{}", quote_ident(field)),
            ExprKind::Lambda { params, body } => {
                f.write_str("(")?;
                let params: Vec<String> = params.iter().map(|p| quote_ident(p)).collect();
                f.write_str(&params.join(", "))?;
                write!(f, ") => {body}")
            }
            ExprKind::Array(items) => {
                f.write_str("ARRAY[")?;
                write_list(f, items)?;
                f.write_str("]")
            }
            ExprKind::Map(entries) => {
                f.write_str("MAP(")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}:={v}")?;
                }
                f.write_str(")")
            }
            ExprKind::Struct(fields) => {
                f.write_str("STRUCT(")?;
                for (i, (n, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}:={v}", quote_ident(n))?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A type as SQL text that parses back (struct field names quoted).
pub fn type_sql(t: &SqlType) -> String {
    t.to_string()
}

impl fmt::Display for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return Ok(());
        }
        f.write_str(" WITH (")?;
        for (i, (n, v, _)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match v {
                PropertyValue::String(s) => write!(f, "{n}={}", quote_string(s))?,
                other => write!(f, "{n}={other}")?,
            }
        }
        f.write_str(")")
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        for (i, item) in self.select.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match item {
                SelectItem::Star { qualifier, .. } => match qualifier {
                    Some(q) => write!(f, "{}.*", quote_ident(q))?,
                    None => f.write_str("*")?,
                },
                SelectItem::StructStar { expr, .. } => write!(f, "{expr}->*")?,
                SelectItem::Expr { expr, alias } => {
                    write!(f, "{expr}")?;
                    if let Some(a) = alias {
                        write!(f, " AS {}", quote_ident(a))?;
                    }
                }
            }
        }
        write!(f, " FROM {}", quote_ident(&self.from.name))?;
        if let Some(a) = &self.from.alias {
            write!(f, " {}", quote_ident(a))?;
        }
        for j in &self.joins {
            let word = match j.join_type {
                JoinType::Inner => "INNER JOIN",
                JoinType::Left => "LEFT JOIN",
                JoinType::Right => "RIGHT JOIN",
                JoinType::Full => "FULL OUTER JOIN",
            };
            write!(f, " {word} {}", quote_ident(&j.relation.name))?;
            if let Some(a) = &j.relation.alias {
                write!(f, " {}", quote_ident(a))?;
            }
            if let Some(w) = &j.within {
                write!(
                    f,
                    " WITHIN ({} MILLISECONDS, {} MILLISECONDS)",
                    w.before_ms, w.after_ms
                )?;
                if let Some(g) = w.grace_ms {
                    write!(f, " GRACE PERIOD {g} MILLISECONDS")?;
                }
            }
            write!(f, " ON {}", j.on)?;
        }
        if let Some(w) = &self.window {
            match w.kind {
                WindowKind::Tumbling { size_ms } => {
                    write!(f, " WINDOW TUMBLING (SIZE {size_ms} MILLISECONDS")?
                }
                WindowKind::Hopping {
                    size_ms,
                    advance_ms,
                } => write!(
                    f,
                    " WINDOW HOPPING (SIZE {size_ms} MILLISECONDS, ADVANCE BY {advance_ms} MILLISECONDS"
                )?,
                WindowKind::Session { gap_ms } => {
                    write!(f, " WINDOW SESSION ({gap_ms} MILLISECONDS")?
                }
            }
            if let Some(r) = w.retention_ms {
                write!(f, ", RETENTION {r} MILLISECONDS")?;
            }
            if let Some(g) = w.grace_ms {
                write!(f, ", GRACE PERIOD {g} MILLISECONDS")?;
            }
            f.write_str(")")?;
        }
        if let Some(w) = &self.where_clause {
            write!(f, " WHERE {w}")?;
        }
        if !self.group_by.is_empty() {
            f.write_str(" GROUP BY ")?;
            write_list(f, &self.group_by)?;
        }
        if let Some(h) = &self.having {
            write!(f, " HAVING {h}")?;
        }
        if !self.partition_by.is_empty() {
            f.write_str(" PARTITION BY ")?;
            write_list(f, &self.partition_by)?;
        }
        match self.emit {
            Some(Emit::Changes) => f.write_str(" EMIT CHANGES")?,
            Some(Emit::Final) => f.write_str(" EMIT FINAL")?,
            None => {}
        }
        if let Some(l) = self.limit {
            write!(f, " LIMIT {l}")?;
        }
        Ok(())
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatementKind::CreateSource(c) => {
                f.write_str("CREATE ")?;
                if c.or_replace {
                    f.write_str("OR REPLACE ")?;
                }
                if c.is_source {
                    f.write_str("SOURCE ")?;
                }
                write!(f, "{} ", c.kind.keyword())?;
                if c.if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                f.write_str(&quote_ident(&c.name))?;
                if !c.columns.is_empty() {
                    f.write_str(" (")?;
                    for (i, col) in c.columns.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{} {}", quote_ident(&col.name), type_sql(&col.ty))?;
                        match &col.constraint {
                            ColumnConstraint::None => {}
                            ColumnConstraint::Key => f.write_str(" KEY")?,
                            ColumnConstraint::PrimaryKey => f.write_str(" PRIMARY KEY")?,
                            ColumnConstraint::Headers => f.write_str(" HEADERS")?,
                            ColumnConstraint::Header(k) => {
                                write!(f, " HEADER({})", quote_string(k))?
                            }
                        }
                    }
                    f.write_str(")")?;
                }
                write!(f, "{}", c.properties)
            }
            StatementKind::CreateAs(c) => {
                f.write_str("CREATE ")?;
                if c.or_replace {
                    f.write_str("OR REPLACE ")?;
                }
                write!(f, "{} ", c.kind.keyword())?;
                if c.if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                write!(f, "{}{} AS {}", quote_ident(&c.name), c.properties, c.query)
            }
            StatementKind::InsertInto { target, query } => {
                write!(f, "INSERT INTO {} {query}", quote_ident(target))
            }
            StatementKind::InsertValues {
                target,
                columns,
                values,
            } => {
                write!(f, "INSERT INTO {} ", quote_ident(target))?;
                if let Some(columns) = columns {
                    let names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
                    write!(f, "({}) ", names.join(", "))?;
                }
                let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                write!(f, "VALUES ({})", values.join(", "))
            }
            StatementKind::Select(q) => write!(f, "{q}"),
            StatementKind::Alter {
                kind,
                name,
                columns,
            } => {
                write!(f, "ALTER {} {}", kind.keyword(), quote_ident(name))?;
                for (i, (c, ty)) in columns.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}ADD COLUMN {} {ty}", quote_ident(c))?;
                }
                Ok(())
            }
            StatementKind::Drop {
                kind,
                name,
                if_exists,
                delete_topic,
            } => {
                write!(f, "DROP {} ", kind.keyword())?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                f.write_str(&quote_ident(name))?;
                if *delete_topic {
                    f.write_str(" DELETE TOPIC")?;
                }
                Ok(())
            }
            StatementKind::Pause { query_id, paused } => write!(
                f,
                "{} {}",
                if *paused { "PAUSE" } else { "RESUME" },
                query_id.as_deref().map_or("ALL".to_string(), quote_ident)
            ),
            StatementKind::Terminate(id) => match id {
                Some(id) => write!(f, "TERMINATE {}", quote_ident(id)),
                None => f.write_str("TERMINATE ALL"),
            },
            StatementKind::Show(target) => {
                let ext = |e: bool| if e { " EXTENDED" } else { "" };
                match target {
                    ShowTarget::Streams { extended } => write!(f, "SHOW STREAMS{}", ext(*extended)),
                    ShowTarget::Tables { extended } => write!(f, "SHOW TABLES{}", ext(*extended)),
                    ShowTarget::Queries { extended } => {
                        write!(f, "SHOW QUERIES{}", ext(*extended))
                    }
                    ShowTarget::Topics { all, extended } => write!(
                        f,
                        "SHOW{} TOPICS{}",
                        if *all { " ALL" } else { "" },
                        ext(*extended)
                    ),
                    ShowTarget::Properties => f.write_str("SHOW PROPERTIES"),
                    ShowTarget::Functions => f.write_str("SHOW FUNCTIONS"),
                    ShowTarget::Types => f.write_str("SHOW TYPES"),
                    ShowTarget::Variables => f.write_str("SHOW VARIABLES"),
                }
            }
            StatementKind::CreateType {
                name,
                ty,
                if_not_exists,
            } => write!(
                f,
                "CREATE TYPE {}{} AS {ty}",
                if *if_not_exists { "IF NOT EXISTS " } else { "" },
                quote_ident(name)
            ),
            StatementKind::DropType { name, if_exists } => write!(
                f,
                "DROP TYPE {}{}",
                if *if_exists { "IF EXISTS " } else { "" },
                quote_ident(name)
            ),
            StatementKind::Define { name, value } => {
                write!(f, "DEFINE {name} = {}", quote_string(value))
            }
            StatementKind::Undefine { name } => write!(f, "UNDEFINE {name}"),
            StatementKind::AssertTopic {
                topic,
                exists,
                properties,
                timeout_ms,
            } => {
                write!(
                    f,
                    "ASSERT {}TOPIC {}",
                    if *exists { "" } else { "NOT EXISTS " },
                    quote_string(topic)
                )?;
                write!(f, "{properties}")?;
                if let Some(ms) = timeout_ms {
                    write!(f, " TIMEOUT {ms} MILLISECONDS")?;
                }
                Ok(())
            }
            StatementKind::AssertSchema {
                subject,
                id,
                exists,
                timeout_ms,
            } => {
                write!(
                    f,
                    "ASSERT {}SCHEMA",
                    if *exists { "" } else { "NOT EXISTS " }
                )?;
                if let Some(s) = subject {
                    write!(f, " SUBJECT {}", quote_string(s))?;
                }
                if let Some(id) = id {
                    write!(f, " ID {id}")?;
                }
                if let Some(ms) = timeout_ms {
                    write!(f, " TIMEOUT {ms} MILLISECONDS")?;
                }
                Ok(())
            }
            StatementKind::SetProperty { name, value } => {
                write!(f, "SET {}={}", quote_string(name), quote_string(value))
            }
            StatementKind::UnsetProperty { name } => write!(f, "UNSET {}", quote_string(name)),
            StatementKind::Describe { name, extended } => {
                write!(
                    f,
                    "DESCRIBE {}{}",
                    quote_ident(name),
                    if *extended { " EXTENDED" } else { "" }
                )
            }
            StatementKind::DescribeFunction(name) => write!(f, "DESCRIBE FUNCTION {name}"),
            StatementKind::ExplainQuery(id) => write!(f, "EXPLAIN {id}"),
            StatementKind::Print {
                topic,
                from_beginning,
                interval,
                limit,
            } => {
                write!(f, "PRINT '{topic}'")?;
                if *from_beginning {
                    f.write_str(" FROM BEGINNING")?;
                }
                if let Some(i) = interval {
                    write!(f, " INTERVAL {i}")?;
                }
                if let Some(l) = limit {
                    write!(f, " LIMIT {l}")?;
                }
                Ok(())
            }
            StatementKind::ExplainStatement(inner) => write!(f, "EXPLAIN {inner}"),
        }
    }
}

impl Expr {
    /// A copy of this expression with each direct child replaced by `f(child)`.
    pub fn map_children<E>(&self, f: &mut impl FnMut(&Expr) -> Result<Expr, E>) -> Result<Expr, E> {
        let b = |e: &Expr, f: &mut dyn FnMut(&Expr) -> Result<Expr, E>| f(e).map(Box::new);
        let kind = match &self.kind {
            ExprKind::Column { .. } | ExprKind::Literal(_) => self.kind.clone(),
            ExprKind::Binary { op, left, right } => ExprKind::Binary {
                op: *op,
                left: b(left, f)?,
                right: b(right, f)?,
            },
            ExprKind::Unary { op, expr } => ExprKind::Unary {
                op: *op,
                expr: b(expr, f)?,
            },
            ExprKind::IsNull { expr, negated } => ExprKind::IsNull {
                expr: b(expr, f)?,
                negated: *negated,
            },
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => ExprKind::Between {
                expr: b(expr, f)?,
                low: b(low, f)?,
                high: b(high, f)?,
                negated: *negated,
            },
            ExprKind::InList {
                expr,
                list,
                negated,
            } => ExprKind::InList {
                expr: b(expr, f)?,
                list: list.iter().map(&mut *f).collect::<Result<_, _>>()?,
                negated: *negated,
            },
            ExprKind::Like {
                expr,
                pattern,
                escape,
                negated,
            } => ExprKind::Like {
                expr: b(expr, f)?,
                pattern: b(pattern, f)?,
                escape: escape.clone(),
                negated: *negated,
            },
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => ExprKind::Case {
                operand: operand.as_ref().map(|o| b(o, f)).transpose()?,
                whens: whens
                    .iter()
                    .map(|(w, t)| Ok((f(w)?, f(t)?)))
                    .collect::<Result<_, E>>()?,
                otherwise: otherwise.as_ref().map(|o| b(o, f)).transpose()?,
            },
            ExprKind::Cast { expr, to } => ExprKind::Cast {
                expr: b(expr, f)?,
                to: to.clone(),
            },
            ExprKind::Call { name, args, star } => ExprKind::Call {
                name: name.clone(),
                args: args.iter().map(&mut *f).collect::<Result<_, _>>()?,
                star: *star,
            },
            ExprKind::Subscript { expr, index } => ExprKind::Subscript {
                expr: b(expr, f)?,
                index: b(index, f)?,
            },
            ExprKind::Dereference { expr, field } => ExprKind::Dereference {
                expr: b(expr, f)?,
                field: field.clone(),
            },
            ExprKind::Lambda { params, body } => ExprKind::Lambda {
                params: params.clone(),
                body: b(body, f)?,
            },
            ExprKind::Array(items) => {
                ExprKind::Array(items.iter().map(&mut *f).collect::<Result<_, _>>()?)
            }
            ExprKind::Map(entries) => ExprKind::Map(
                entries
                    .iter()
                    .map(|(k, v)| Ok((f(k)?, f(v)?)))
                    .collect::<Result<_, E>>()?,
            ),
            ExprKind::Struct(fields) => ExprKind::Struct(
                fields
                    .iter()
                    .map(|(n, v)| Ok((n.clone(), f(v)?)))
                    .collect::<Result<_, E>>()?,
            ),
        };
        Ok(Expr::new(kind, self.pos))
    }

    /// Whether `pred` holds for this expression or any expression inside it.
    pub fn any(&self, pred: &mut impl FnMut(&Expr) -> bool) -> bool {
        if pred(self) {
            return true;
        }
        let mut found = false;
        let _ = self.map_children(&mut |c: &Expr| -> Result<Expr, ()> {
            found = found || c.any(pred);
            Ok(c.clone())
        });
        found
    }
}
