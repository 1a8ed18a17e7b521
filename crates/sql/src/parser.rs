//! The ksqlDB grammar: a recursive-descent parser over sqlparser's tokens.
//!
//! sqlparser's tokenizer does the lexing; the statements and most clauses are ksqlDB's
//! own (`WITH (KAFKA_TOPIC=...)`, `EMIT CHANGES`, `WINDOW TUMBLING`, `->` dereference,
//! lambdas), so the grammar is ours.

use crate::ast::*;
use crate::error::{Pos, SqlError};
use crate::lexer::{Tok, tokenize};
use sluice_plan::{BinaryOp, SqlType, StructField};
use sqlparser::tokenizer::Token;
use std::collections::BTreeMap;

/// Words that cannot be used as unquoted identifiers.
pub const RESERVED: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AS",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "TRUE",
    "FALSE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "IS",
    "IN",
    "LIKE",
    "BETWEEN",
    "GROUP",
    "BY",
    "HAVING",
    "PARTITION",
    "EMIT",
    "LIMIT",
    "JOIN",
    "LEFT",
    "RIGHT",
    "FULL",
    "INNER",
    "OUTER",
    "ON",
    "WITHIN",
    "WINDOW",
    "CREATE",
    "INSERT",
    "INTO",
    "VALUES",
    "DROP",
    "WITH",
    "ESCAPE",
    "DISTINCT",
];

pub fn is_reserved(word: &str) -> bool {
    RESERVED.contains(&word)
}

/// Parses a script of `;`-terminated statements. The last `;` may be missing.
pub fn parse_statements(sql: &str) -> Result<Vec<Statement>, SqlError> {
    parse_statements_with_types(sql, &BTreeMap::new())
}

/// As `parse_statements`, where a type may also name one of `types` (CREATE TYPE
/// aliases, by upper-cased name). See `script::parse_script` for scripts whose
/// statements define variables and types for the ones after them.
pub fn parse_statements_with_types(
    sql: &str,
    types: &BTreeMap<String, SqlType>,
) -> Result<Vec<Statement>, SqlError> {
    let tokens = tokenize(sql)?;
    let mut p = Parser {
        tokens,
        i: 0,
        depth: 0,
        types: types.clone(),
    };
    let mut out = Vec::new();
    loop {
        while p.eat(&Token::SemiColon) {}
        if p.at_eof() {
            break;
        }
        let start = p.peek().clone();
        let kind = p.statement().map_err(|e| match e {
            // ksqlDB's grammar errors quote the statement they stopped in.
            SqlError::Syntax { pos, message, hint } if message.contains("\nExpecting {") => {
                let end = p.tokens[p.i.min(p.tokens.len() - 1)..]
                    .iter()
                    .find(|t| matches!(t.token, Token::SemiColon | Token::EOF))
                    .map(|t| (t.offset + 1).min(sql.len()))
                    .unwrap_or(sql.len());
                SqlError::Syntax {
                    pos,
                    message: format!("{message}\nStatement: {}", sql[start.offset..end].trim()),
                    hint,
                }
            }
            other => other,
        })?;
        let end = p.peek().offset;
        if !p.eat(&Token::SemiColon) && !p.at_eof() {
            return Err(p.unexpected("';' or the end of the statement"));
        }
        out.push(Statement {
            kind,
            text: sql[start.offset..end].trim().to_string(),
            pos: start.pos,
        });
    }
    Ok(out)
}

/// Parses exactly one statement.
pub fn parse_statement(sql: &str) -> Result<Statement, SqlError> {
    let mut all = parse_statements(sql)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(SqlError::syntax(Pos::new(1, 1), "no statement")),
        _ => Err(SqlError::syntax(
            all[1].pos,
            "expected one statement, found several",
        )),
    }
}

/// Parses a single expression (used by tests and tools).
pub fn parse_expression(sql: &str) -> Result<Expr, SqlError> {
    let tokens = tokenize(sql)?;
    let mut p = Parser {
        tokens,
        i: 0,
        depth: 0,
        types: BTreeMap::new(),
    };
    let e = p.expr()?;
    if !p.at_eof() {
        return Err(p.unexpected("the end of the expression"));
    }
    Ok(e)
}

/// Deep nesting beyond this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<Tok>,
    i: usize,
    depth: usize,
    /// Custom types by upper-cased name.
    types: BTreeMap<String, SqlType>,
}

impl Parser {
    // ---- token helpers ----

    fn peek(&self) -> &Tok {
        &self.tokens[self.i.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.tokens[(self.i + n).min(self.tokens.len() - 1)].token
    }

    fn pos(&self) -> Pos {
        self.peek().pos
    }

    fn at_eof(&self) -> bool {
        self.peek().token == Token::EOF
    }

    fn advance(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.tokens.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn eat(&mut self, token: &Token) -> bool {
        if &self.peek().token == token {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &Token, what: &str) -> Result<(), SqlError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    /// The unquoted word at `n` tokens ahead, upper-cased.
    fn keyword_at(&self, n: usize) -> Option<String> {
        match self.peek_at(n) {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn is_keyword(&self, kw: &str) -> bool {
        self.keyword_at(0).as_deref() == Some(kw)
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.is_keyword(kw) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn eat_keywords(&mut self, kws: &[&str]) -> bool {
        if kws
            .iter()
            .enumerate()
            .all(|(n, kw)| self.keyword_at(n).as_deref() == Some(kw))
        {
            for _ in kws {
                self.advance();
            }
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn unexpected(&self, expected: &str) -> SqlError {
        let t = self.peek();
        let found = match &t.token {
            Token::EOF => "the end of the input".to_string(),
            other => format!("'{other}'"),
        };
        SqlError::syntax(
            t.pos,
            format!("Syntax Error: expected {expected} but found {found}"),
        )
    }

    /// An identifier: unquoted words are upper-cased, quoted ones kept as written; a
    /// name may start with digits (`1R`), which the tokenizer splits from its letters.
    fn ident(&mut self, what: &str) -> Result<Ident, SqlError> {
        if let Token::Number(digits, _) = &self.peek().token
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Some(next) = self.tokens.get(self.i + 1)
            && let Token::Word(w) = &next.token
            && w.quote_style.is_none()
            && next.offset == self.peek().offset + digits.len()
        {
            let name = format!("{digits}{}", w.value).to_ascii_uppercase();
            self.advance();
            self.advance();
            return Ok(name);
        }
        match &self.peek().token {
            Token::Word(w) if w.quote_style.is_some() => {
                let v = w.value.clone();
                self.advance();
                Ok(v)
            }
            Token::Word(w) if !is_reserved(&w.value.to_ascii_uppercase()) => {
                let v = w.value.to_ascii_uppercase();
                self.advance();
                Ok(v)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// A variable's name, as written (variables are case-sensitive).
    fn variable_name(&mut self) -> Result<String, SqlError> {
        match &self.peek().token {
            Token::Word(w) => {
                let v = w.value.clone();
                self.advance();
                Ok(v)
            }
            _ => Err(self.unexpected("a variable name")),
        }
    }

    fn string_literal(&mut self, what: &str) -> Result<String, SqlError> {
        match &self.peek().token {
            Token::SingleQuotedString(s) => {
                let s = s.clone();
                self.advance();
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn unsigned_integer(&mut self, what: &str) -> Result<u64, SqlError> {
        match &self.peek().token {
            Token::Number(n, _) => {
                let v = n.parse::<u64>().map_err(|_| self.unexpected(what))?;
                self.advance();
                Ok(v)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    // ---- statements ----

    fn statement(&mut self) -> Result<StatementKind, SqlError> {
        let pos = self.pos();
        match self.keyword_at(0).as_deref() {
            Some("CREATE") => self.create(),
            Some("SELECT") => Ok(StatementKind::Select(self.query()?)),
            Some("DROP") if self.keyword_at(1).as_deref() == Some("TYPE") => {
                self.advance();
                self.advance();
                let if_exists = self.eat_keywords(&["IF", "EXISTS"]);
                let name = self.ident("a type name")?;
                Ok(StatementKind::DropType { name, if_exists })
            }
            Some("DROP") => self.drop_source(),
            Some("DEFINE") => {
                self.advance();
                let name = self.variable_name()?;
                self.expect(&Token::Eq, "'=' and the value")?;
                let value = self.string_literal("the value, in quotes")?;
                Ok(StatementKind::Define { name, value })
            }
            Some("UNDEFINE") => {
                self.advance();
                let name = self.variable_name()?;
                Ok(StatementKind::Undefine { name })
            }
            Some("TERMINATE") => {
                self.advance();
                if self.eat_keyword("ALL") {
                    Ok(StatementKind::Terminate(None))
                } else {
                    Ok(StatementKind::Terminate(Some(self.query_id()?)))
                }
            }
            Some("SHOW") | Some("LIST") => {
                self.advance();
                self.show()
            }
            Some("DESCRIBE") if self.keyword_at(1).as_deref() == Some("FUNCTION") => {
                self.advance();
                self.advance();
                let name = self.ident("a function name")?;
                Ok(StatementKind::DescribeFunction(name.to_ascii_uppercase()))
            }
            Some("DESCRIBE") => {
                self.advance();
                let name = self.ident("a stream or table name")?;
                let extended = self.eat_keyword("EXTENDED");
                Ok(StatementKind::Describe { name, extended })
            }
            Some("INSERT") if self.keyword_at(1).as_deref() == Some("INTO") => {
                self.advance();
                self.advance();
                let target = self.ident("a stream name")?;
                if self.is_keyword("SELECT") {
                    let query = self.query()?;
                    return Ok(StatementKind::InsertInto { target, query });
                }
                let columns = if self.eat(&Token::LParen) {
                    let mut columns = vec![self.ident("a column name")?];
                    while self.eat(&Token::Comma) {
                        columns.push(self.ident("a column name")?);
                    }
                    self.expect(&Token::RParen, "')'")?;
                    Some(columns)
                } else {
                    None
                };
                self.expect_keyword("VALUES")?;
                self.expect(&Token::LParen, "'('")?;
                let mut values = Vec::new();
                if !self.eat(&Token::RParen) {
                    values.push(self.expr()?);
                    while self.eat(&Token::Comma) {
                        values.push(self.expr()?);
                    }
                    self.expect(&Token::RParen, "')'")?;
                }
                Ok(StatementKind::InsertValues {
                    target,
                    columns,
                    values,
                })
            }
            Some("SET") => {
                self.advance();
                let name = self.string_literal("a property name in quotes")?;
                self.expect(&Token::Eq, "'='")?;
                let value = self.string_literal("a property value in quotes")?;
                Ok(StatementKind::SetProperty { name, value })
            }
            Some("UNSET") => {
                self.advance();
                let name = self.string_literal("a property name in quotes")?;
                Ok(StatementKind::UnsetProperty { name })
            }
            Some("ALTER") => {
                self.advance();
                let kind = if self.eat_keyword("STREAM") {
                    SourceKind::Stream
                } else if self.eat_keyword("TABLE") {
                    SourceKind::Table
                } else {
                    return Err(self.unexpected("STREAM or TABLE"));
                };
                let name = self.ident("a stream or table name")?;
                let mut columns = Vec::new();
                loop {
                    self.expect_keyword("ADD")?;
                    self.eat_keyword("COLUMN");
                    let column = self.ident("a column name")?;
                    let ty = self.data_type()?;
                    columns.push((column, ty));
                    if !self.eat(&Token::Comma) {
                        break;
                    }
                }
                Ok(StatementKind::Alter {
                    kind,
                    name,
                    columns,
                })
            }
            Some("EXPLAIN") => {
                self.advance();
                if matches!(
                    self.keyword_at(0).as_deref(),
                    Some("SELECT" | "CREATE" | "INSERT")
                ) {
                    Ok(StatementKind::ExplainStatement(Box::new(self.statement()?)))
                } else {
                    Ok(StatementKind::ExplainQuery(self.query_id()?))
                }
            }
            Some("PRINT") => {
                self.advance();
                // A topic name as written (quoted) or an identifier (kept as written too:
                // topic names are case-sensitive).
                let topic = match &self.peek().token {
                    Token::SingleQuotedString(s) => s.clone(),
                    Token::Word(w) => w.value.clone(),
                    _ => return Err(self.unexpected("a topic name")),
                };
                self.advance();
                let from_beginning = self.eat_keywords(&["FROM", "BEGINNING"]);
                let interval = if self.eat_keyword("INTERVAL") || self.eat_keyword("SAMPLE") {
                    Some(self.unsigned_integer("an interval")?)
                } else {
                    None
                };
                let limit = if self.eat_keyword("LIMIT") {
                    Some(self.unsigned_integer("a limit")?)
                } else {
                    None
                };
                Ok(StatementKind::Print {
                    topic,
                    from_beginning,
                    interval,
                    limit,
                })
            }
            Some("ASSERT") => self.assert(),
            Some(kw @ ("PAUSE" | "RESUME")) => {
                self.advance();
                let query_id = if self.eat_keyword("ALL") {
                    None
                } else {
                    Some(self.query_id()?)
                };
                Ok(StatementKind::Pause {
                    query_id,
                    paused: kw == "PAUSE",
                })
            }
            Some(kw @ "INSERT") => Err(SqlError::unsupported(
                pos,
                format!("{kw} statements are not supported yet"),
            )),
            // A word no statement starts with, worded as ksqlDB's grammar words it.
            Some(word) if matches!(&self.peek().token, Token::Word(w) if w.quote_style.is_none()) => {
                Err(SqlError::syntax(
                    pos,
                    format!("Syntax Error\nUnknown statement '{word}'"),
                ))
            }
            _ => Err(self.unexpected("a statement")),
        }
    }

    /// Query ids as ksqlDB writes them (`CSAS_S1_3`), matched case-insensitively.
    fn query_id(&mut self) -> Result<Ident, SqlError> {
        match &self.peek().token {
            Token::Word(w) => {
                let v = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_ascii_uppercase()
                };
                self.advance();
                Ok(v)
            }
            _ => Err(self.unexpected("a query id")),
        }
    }

    fn show(&mut self) -> Result<StatementKind, SqlError> {
        let all = self.eat_keyword("ALL");
        let word = self.keyword_at(0).ok_or_else(|| {
            self.unexpected("STREAMS, TABLES, QUERIES, TOPICS, PROPERTIES or FUNCTIONS")
        })?;
        self.advance();
        let target = match word.as_str() {
            "STREAMS" => ShowTarget::Streams {
                extended: self.eat_keyword("EXTENDED"),
            },
            "TABLES" => ShowTarget::Tables {
                extended: self.eat_keyword("EXTENDED"),
            },
            "QUERIES" => ShowTarget::Queries {
                extended: self.eat_keyword("EXTENDED"),
            },
            "TOPICS" => ShowTarget::Topics {
                all,
                extended: self.eat_keyword("EXTENDED"),
            },
            "PROPERTIES" => ShowTarget::Properties,
            "FUNCTIONS" => ShowTarget::Functions,
            "TYPES" => ShowTarget::Types,
            "VARIABLES" => ShowTarget::Variables,
            _ => {
                self.i -= 1;
                return Err(
                    self.unexpected("STREAMS, TABLES, QUERIES, TOPICS, PROPERTIES or FUNCTIONS")
                );
            }
        };
        Ok(StatementKind::Show(target))
    }

    fn drop_source(&mut self) -> Result<StatementKind, SqlError> {
        self.expect_keyword("DROP")?;
        let kind = self.source_kind()?;
        let if_exists = self.eat_keywords(&["IF", "EXISTS"]);
        let name = self.ident("a stream or table name")?;
        let delete_topic = self.eat_keywords(&["DELETE", "TOPIC"]);
        Ok(StatementKind::Drop {
            kind,
            name,
            if_exists,
            delete_topic,
        })
    }

    fn source_kind(&mut self) -> Result<SourceKind, SqlError> {
        if self.eat_keyword("STREAM") {
            Ok(SourceKind::Stream)
        } else if self.eat_keyword("TABLE") {
            Ok(SourceKind::Table)
        } else {
            Err(self.unexpected("STREAM or TABLE"))
        }
    }

    /// `ASSERT [NOT EXISTS] TOPIC name [WITH (...)] [TIMEOUT n unit]` or
    /// `ASSERT [NOT EXISTS] SCHEMA [SUBJECT name] [ID n] [TIMEOUT n unit]`.
    fn assert(&mut self) -> Result<StatementKind, SqlError> {
        self.expect_keyword("ASSERT")?;
        let exists = !self.eat_keywords(&["NOT", "EXISTS"]);
        // A name as written: a quoted string, or a word (topics and subjects are
        // case-sensitive).
        let name = |p: &mut Parser| -> Result<String, SqlError> {
            match &p.peek().token {
                Token::SingleQuotedString(s) => {
                    let s = s.clone();
                    p.advance();
                    Ok(s)
                }
                Token::Word(w) => {
                    let s = w.value.clone();
                    p.advance();
                    Ok(s)
                }
                _ => Err(p.unexpected("a name")),
            }
        };
        let timeout = |p: &mut Parser| -> Result<Option<u64>, SqlError> {
            if !p.eat_keyword("TIMEOUT") {
                return Ok(None);
            }
            let n = p.unsigned_integer("a timeout")?;
            let unit = p.keyword_at(0).unwrap_or_default();
            let ms = time_unit_ms(&unit).ok_or_else(|| p.unexpected("a time unit"))?;
            p.advance();
            Ok(Some(n.saturating_mul(ms)))
        };
        match self.keyword_at(0).as_deref() {
            Some("TOPIC") => {
                self.advance();
                let topic = name(self)?;
                let properties = if self.eat_keyword("WITH") {
                    self.properties()?
                } else {
                    Properties::default()
                };
                let timeout_ms = timeout(self)?;
                Ok(StatementKind::AssertTopic {
                    topic,
                    exists,
                    properties,
                    timeout_ms,
                })
            }
            Some("SCHEMA") => {
                self.advance();
                let subject = if self.eat_keyword("SUBJECT") {
                    Some(name(self)?)
                } else {
                    None
                };
                let id = if self.eat_keyword("ID") {
                    Some(self.unsigned_integer("a schema id")?)
                } else {
                    None
                };
                let timeout_ms = timeout(self)?;
                Ok(StatementKind::AssertSchema {
                    subject,
                    id,
                    exists,
                    timeout_ms,
                })
            }
            _ => {
                let t = self.peek();
                Err(SqlError::syntax(
                    t.pos,
                    format!(
                        "Syntax error at or near '{}' at line {}:{}",
                        t.token, t.pos.line, t.pos.column
                    ),
                ))
            }
        }
    }

    /// `CREATE TYPE [IF NOT EXISTS] name AS type`.
    fn create_type(&mut self) -> Result<StatementKind, SqlError> {
        self.expect_keyword("CREATE")?;
        self.expect_keyword("TYPE")?;
        let if_not_exists = self.eat_keywords(&["IF", "NOT", "EXISTS"]);
        let name = self.ident("a type name")?;
        self.expect_keyword("AS")?;
        let ty = self.data_type()?;
        Ok(StatementKind::CreateType {
            name,
            ty,
            if_not_exists,
        })
    }

    fn create(&mut self) -> Result<StatementKind, SqlError> {
        if self.keyword_at(1).as_deref() == Some("TYPE") {
            return self.create_type();
        }
        self.expect_keyword("CREATE")?;
        let or_replace = self.eat_keywords(&["OR", "REPLACE"]);
        let is_source = self.eat_keyword("SOURCE");
        let kind = self.source_kind()?;
        let if_not_exists = self.eat_keywords(&["IF", "NOT", "EXISTS"]);
        let name = self.ident("a stream or table name")?;
        let columns = if self.peek().token == Token::LParen {
            self.column_defs()?
        } else {
            Vec::new()
        };
        let properties = if self.eat_keyword("WITH") {
            self.properties()?
        } else {
            Properties::default()
        };
        if self.eat_keyword("AS") {
            if is_source {
                return Err(SqlError::syntax(
                    self.pos(),
                    "Syntax Error: SOURCE streams and tables cannot be created with AS SELECT",
                ));
            }
            if !columns.is_empty() {
                return Err(SqlError::syntax(
                    self.pos(),
                    "Syntax Error: a stream or table created AS SELECT takes its columns from the query",
                ));
            }
            let query = self.query()?;
            return Ok(StatementKind::CreateAs(CreateAs {
                kind,
                or_replace,
                if_not_exists,
                name,
                properties,
                query,
            }));
        }
        Ok(StatementKind::CreateSource(CreateSource {
            kind,
            or_replace,
            is_source,
            if_not_exists,
            name,
            columns,
            properties,
        }))
    }

    fn column_defs(&mut self) -> Result<Vec<ColumnDef>, SqlError> {
        self.expect(&Token::LParen, "'('")?;
        let mut cols = Vec::new();
        loop {
            let pos = self.pos();
            let name = self.ident("a column name")?;
            let ty = self.data_type()?;
            let constraint = if self.eat_keywords(&["PRIMARY", "KEY"]) {
                ColumnConstraint::PrimaryKey
            } else if self.eat_keyword("KEY") {
                ColumnConstraint::Key
            } else if self.eat_keyword("HEADERS") {
                ColumnConstraint::Headers
            } else if self.eat_keyword("HEADER") {
                self.expect(&Token::LParen, "'('")?;
                let k = self.string_literal("a header key in quotes")?;
                self.expect(&Token::RParen, "')'")?;
                ColumnConstraint::Header(k)
            } else {
                ColumnConstraint::None
            };
            cols.push(ColumnDef {
                name,
                ty,
                constraint,
                pos,
            });
            if !self.eat(&Token::Comma) {
                break;
            }
        }
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(cols)
    }

    fn properties(&mut self) -> Result<Properties, SqlError> {
        self.expect(&Token::LParen, "'('")?;
        let mut props = Properties::default();
        loop {
            let pos = self.pos();
            let name = match &self.peek().token {
                Token::Word(w) => w.value.to_ascii_uppercase(),
                Token::SingleQuotedString(s) => s.to_ascii_uppercase(),
                _ => return Err(self.unexpected("a property name")),
            };
            self.advance();
            self.expect(&Token::Eq, "'='")?;
            let value = match self.advance().token {
                Token::SingleQuotedString(s) => PropertyValue::String(s),
                Token::Number(n, _) => PropertyValue::Number(n),
                Token::Minus => match self.advance().token {
                    Token::Number(n, _) => PropertyValue::Number(format!("-{n}")),
                    _ => {
                        self.i -= 1;
                        return Err(self.unexpected("a number"));
                    }
                },
                Token::Word(w) if w.value.eq_ignore_ascii_case("true") => {
                    PropertyValue::Boolean(true)
                }
                Token::Word(w) if w.value.eq_ignore_ascii_case("false") => {
                    PropertyValue::Boolean(false)
                }
                _ => {
                    self.i -= 1;
                    return Err(self.unexpected("a property value"));
                }
            };
            if props.entries.iter().any(|(n, _, _)| n == &name) {
                return Err(SqlError::syntax(pos, format!("Duplicate property: {name}")));
            }
            props.entries.push((name, value, pos));
            if !self.eat(&Token::Comma) {
                break;
            }
        }
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(props)
    }

    // ---- types ----

    fn data_type(&mut self) -> Result<SqlType, SqlError> {
        self.depth += 1;
        let t = if self.depth > MAX_DEPTH {
            Err(SqlError::syntax(
                self.pos(),
                "Syntax Error: type nested too deeply",
            ))
        } else {
            self.data_type_inner()
        };
        self.depth -= 1;
        t
    }

    fn data_type_inner(&mut self) -> Result<SqlType, SqlError> {
        let pos = self.pos();
        let word = match &self.peek().token {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            _ => return Err(self.unexpected("a type")),
        };
        self.advance();
        Ok(match word.as_str() {
            // A type's parameters are numbers or strings, as in ksqlDB's grammar.
            "BOOLEAN" | "INT" | "INTEGER" | "BIGINT" | "DOUBLE" | "STRING" | "VARCHAR"
            | "BYTES"
                if self.peek().token == Token::LParen
                    && !matches!(
                        self.tokens.get(self.i + 1).map(|t| &t.token),
                        Some(Token::Number(..) | Token::SingleQuotedString(_))
                    ) =>
            {
                self.advance();
                return Err(SqlError::syntax(
                    self.pos(),
                    "Syntax Error\nExpecting {'STRING', INTEGER_VALUE}",
                ));
            }
            "BOOLEAN" => SqlType::Boolean,
            "INT" | "INTEGER" => SqlType::Integer,
            "BIGINT" => SqlType::Bigint,
            "DOUBLE" => SqlType::Double,
            "STRING" | "VARCHAR" => SqlType::String,
            "BYTES" => SqlType::Bytes,
            "DATE" => SqlType::Date,
            "TIME" => SqlType::Time,
            "TIMESTAMP" => SqlType::Timestamp,
            "DECIMAL" => {
                self.expect(&Token::LParen, "'(' and the precision")?;
                let precision = self.unsigned_integer("the precision")?;
                self.expect(&Token::Comma, "',' and the scale")?;
                let scale = self.unsigned_integer("the scale")?;
                self.expect(&Token::RParen, "')'")?;
                if precision == 0 || precision > 38 {
                    return Err(SqlError::semantic(
                        pos,
                        format!("DECIMAL precision must be between 1 and 38: {precision}"),
                    ));
                }
                if scale > precision {
                    return Err(SqlError::semantic(
                        pos,
                        format!(
                            "DECIMAL scale must be equal to or less than precision. scale: {scale}, precision: {precision}"
                        ),
                    ));
                }
                SqlType::Decimal {
                    precision: precision as u8,
                    scale: scale as u8,
                }
            }
            "ARRAY" => {
                self.expect(&Token::Lt, "'<'")?;
                let item = self.data_type()?;
                self.close_angle()?;
                SqlType::Array(Box::new(item))
            }
            "MAP" => {
                self.expect(&Token::Lt, "'<'")?;
                let key = self.data_type()?;
                self.expect(&Token::Comma, "','")?;
                let value = self.data_type()?;
                self.close_angle()?;
                SqlType::Map {
                    key: Box::new(key),
                    value: Box::new(value),
                }
            }
            "STRUCT" => {
                self.expect(&Token::Lt, "'<'")?;
                let mut fields = Vec::new();
                if !self.close_angle_now() {
                    loop {
                        let name = self.ident("a field name")?;
                        let ty = self.data_type()?;
                        fields.push(StructField { name, ty });
                        if !self.eat(&Token::Comma) {
                            break;
                        }
                    }
                    self.close_angle()?;
                }
                SqlType::Struct(fields)
            }
            // NULL is a literal, not a type: the grammar has no place for it here.
            "NULL" => {
                return Err(SqlError::syntax(
                    pos,
                    // ksqlDB's words for it in a column's type and in a CAST, both.
                    format!(
                        "Syntax Error: Syntax error at or near 'NULL' at line {}:{} (NULL is not a type)",
                        pos.line, pos.column
                    ),
                ));
            }
            other => match self.types.get(other) {
                Some(t) => t.clone(),
                None => {
                    return Err(SqlError::syntax(pos, format!("Unknown type: {other}")));
                }
            },
        })
    }

    /// Consumes one closing `>` of a type, splitting a `>>` token in two.
    fn close_angle(&mut self) -> Result<(), SqlError> {
        if self.close_angle_now() {
            Ok(())
        } else {
            Err(self.unexpected("'>'"))
        }
    }

    fn close_angle_now(&mut self) -> bool {
        match self.peek().token {
            Token::Gt => {
                self.advance();
                true
            }
            Token::ShiftRight => {
                let i = self.i.min(self.tokens.len() - 1);
                self.tokens[i].token = Token::Gt;
                self.tokens[i].pos.column += 1;
                true
            }
            Token::GtEq => {
                let i = self.i.min(self.tokens.len() - 1);
                self.tokens[i].token = Token::Eq;
                self.tokens[i].pos.column += 1;
                true
            }
            _ => false,
        }
    }

    // ---- queries ----

    fn query(&mut self) -> Result<Query, SqlError> {
        self.expect_keyword("SELECT")?;
        let mut select = Vec::new();
        loop {
            select.push(self.select_item()?);
            if !self.eat(&Token::Comma) {
                break;
            }
        }
        self.expect_keyword("FROM")?;
        let from = self.relation()?;
        let mut joins = Vec::new();
        while let Some(j) = self.join_clause()? {
            joins.push(j);
        }
        let window = if self.is_keyword("WINDOW") {
            Some(self.window()?)
        } else {
            None
        };
        let where_clause = if self.eat_keyword("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        if self.eat_keywords(&["GROUP", "BY"]) {
            // ksqlDB groups by value expressions: no bare predicates (`a AND b`).
            group_by = match self.grouping_set()? {
                Some(set) => set,
                None => self.value_expr_list()?,
            };
        }
        let having = if self.eat_keyword("HAVING") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut partition_by = Vec::new();
        if self.eat_keywords(&["PARTITION", "BY"]) {
            // ksqlDB partitions by value expressions: no bare predicates.
            partition_by = self.value_expr_list()?;
        }
        let emit = if self.eat_keywords(&["EMIT", "CHANGES"]) {
            Some(Emit::Changes)
        } else if self.eat_keywords(&["EMIT", "FINAL"]) {
            Some(Emit::Final)
        } else {
            None
        };
        let limit = if self.eat_keyword("LIMIT") {
            let pos = self.pos();
            match &self.peek().token {
                Token::Minus => {
                    let kind = if emit.is_some() { "Push" } else { "Pull" };
                    return Err(SqlError::semantic(
                        pos,
                        format!(
                            "{kind} queries don't support negative integers in the LIMIT clause. See https://cnfl.io/queries for more info."
                        ),
                    ));
                }
                Token::Number(n, _) if n.contains(['.', 'e', 'E']) => {
                    return Err(SqlError::semantic(
                        pos,
                        "Failed to prepare statement: Value must be integer for command: LIMIT",
                    ));
                }
                _ => Some(self.unsigned_integer("a row count")?),
            }
        } else {
            None
        };
        Ok(Query {
            select,
            from,
            joins,
            window,
            where_clause,
            group_by,
            having,
            partition_by,
            emit,
            limit,
        })
    }

    /// `WINDOW TUMBLING (SIZE d [, RETENTION d] [, GRACE PERIOD d])`, `WINDOW HOPPING (SIZE d,
    /// ADVANCE BY d ...)`, `WINDOW SESSION (d ...)`.
    fn window(&mut self) -> Result<WindowExpr, SqlError> {
        let pos = self.pos();
        self.expect_keyword("WINDOW")?;
        let kind_word = self.keyword_at(0).unwrap_or_default();
        self.advance();
        self.expect(&Token::LParen, "'('")?;
        let kind = match kind_word.as_str() {
            "TUMBLING" => {
                self.expect_keyword("SIZE")?;
                WindowKind::Tumbling {
                    size_ms: self.duration()?,
                }
            }
            "HOPPING" => {
                self.expect_keyword("SIZE")?;
                let size_ms = self.duration()?;
                self.expect(&Token::Comma, "','")?;
                self.expect_keyword("ADVANCE")?;
                self.expect_keyword("BY")?;
                WindowKind::Hopping {
                    size_ms,
                    advance_ms: self.duration()?,
                }
            }
            "SESSION" => WindowKind::Session {
                gap_ms: self.duration()?,
            },
            _ => {
                self.i -= 1;
                return Err(self.unexpected("TUMBLING, HOPPING or SESSION"));
            }
        };
        let (mut retention_ms, mut grace_ms) = (None, None);
        while self.eat(&Token::Comma) {
            if self.eat_keyword("RETENTION") {
                retention_ms = Some(self.duration()?);
            } else if self.eat_keywords(&["GRACE", "PERIOD"]) {
                grace_ms = Some(self.duration()?);
            } else {
                return Err(self.unexpected("RETENTION or GRACE PERIOD"));
            }
        }
        self.expect(&Token::RParen, "')'")?;
        Ok(WindowExpr {
            kind,
            retention_ms,
            grace_ms,
            pos,
        })
    }

    /// A duration, `n UNIT`, in milliseconds.
    fn duration(&mut self) -> Result<u64, SqlError> {
        let n = self.unsigned_integer("a duration")?;
        let unit = self.keyword_at(0).unwrap_or_default();
        let Some(ms) = time_unit_ms(&unit) else {
            return Err(self.unexpected("a time unit (MILLISECONDS ... DAYS)"));
        };
        self.advance();
        n.checked_mul(ms)
            .ok_or_else(|| SqlError::syntax(self.pos(), "Syntax Error: duration too large"))
    }

    /// `GROUP BY (a, b, c)`: a parenthesized list of two or more expressions that ends
    /// the clause. None (and nothing consumed) for anything else, such as `(a + b) * 2`.
    fn grouping_set(&mut self) -> Result<Option<Vec<Expr>>, SqlError> {
        if self.peek().token != Token::LParen {
            return Ok(None);
        }
        let start = self.i;
        self.advance();
        let Ok(list) = self.value_expr_list() else {
            self.i = start;
            return Ok(None);
        };
        let ends_clause = matches!(self.peek_at(1), Token::EOF | Token::SemiColon)
            || matches!(
                self.keyword_at(1).as_deref(),
                Some("HAVING" | "EMIT" | "LIMIT" | "PARTITION" | "WINDOW")
            );
        if list.len() > 1 && self.peek().token == Token::RParen && ends_clause {
            self.advance();
            return Ok(Some(list));
        }
        self.i = start;
        Ok(None)
    }

    /// `[INNER | LEFT [OUTER] | RIGHT [OUTER] | FULL [OUTER]] JOIN relation [WITHIN ...] ON
    /// expr`; None when no join follows.
    fn join_clause(&mut self) -> Result<Option<JoinClause>, SqlError> {
        let pos = self.pos();
        let join_type = match self.keyword_at(0).as_deref() {
            Some("JOIN") => JoinType::Inner,
            Some("INNER") => {
                self.advance();
                JoinType::Inner
            }
            Some("LEFT") => {
                self.advance();
                self.eat_keyword("OUTER");
                JoinType::Left
            }
            Some("RIGHT") => {
                self.advance();
                self.eat_keyword("OUTER");
                JoinType::Right
            }
            Some("FULL") => {
                self.advance();
                self.eat_keyword("OUTER");
                JoinType::Full
            }
            // `OUTER JOIN` alone is a full outer join.
            Some("OUTER") => {
                self.advance();
                JoinType::Full
            }
            _ => return Ok(None),
        };
        self.expect_keyword("JOIN")?;
        let relation = self.relation()?;
        let within = if self.eat_keyword("WITHIN") {
            let (before_ms, after_ms) = if self.eat(&Token::LParen) {
                let before = self.duration()?;
                self.expect(&Token::Comma, "','")?;
                let after = self.duration()?;
                self.expect(&Token::RParen, "')'")?;
                (before, after)
            } else {
                let d = self.duration()?;
                (d, d)
            };
            let grace_ms = if self.eat_keywords(&["GRACE", "PERIOD"]) {
                Some(self.duration()?)
            } else {
                None
            };
            Some(JoinWithin {
                before_ms,
                after_ms,
                grace_ms,
            })
        } else {
            None
        };
        self.expect_keyword("ON")?;
        let on = self.expr()?;
        Ok(Some(JoinClause {
            join_type,
            relation,
            within,
            on,
            pos,
        }))
    }

    fn relation(&mut self) -> Result<Relation, SqlError> {
        let pos = self.pos();
        let name = self.ident("a stream or table name")?;
        let alias = if self.eat_keyword("AS") {
            Some(self.ident("an alias")?)
        } else if let Token::Word(w) = &self.peek().token
            && (w.quote_style.is_some() || !is_clause_word(&w.value.to_ascii_uppercase()))
        {
            Some(self.ident("an alias")?)
        } else {
            None
        };
        Ok(Relation { name, alias, pos })
    }

    fn select_item(&mut self) -> Result<SelectItem, SqlError> {
        let pos = self.pos();
        if self.eat(&Token::Mul) {
            return Ok(SelectItem::Star {
                qualifier: None,
                pos,
            });
        }
        if matches!(self.peek_at(0), Token::Word(_))
            && self.peek_at(1) == &Token::Period
            && self.peek_at(2) == &Token::Mul
        {
            let q = self.ident("a source name")?;
            self.advance();
            self.advance();
            return Ok(SelectItem::Star {
                qualifier: Some(q),
                pos,
            });
        }
        let expr = self.expr()?;
        if self.peek_at(0) == &Token::Arrow && self.peek_at(1) == &Token::Mul {
            self.advance();
            self.advance();
            return Ok(SelectItem::StructStar { expr, pos });
        }
        let alias = if self.eat_keyword("AS") {
            Some(self.ident("an alias")?)
        } else if let Token::Word(w) = &self.peek().token
            && (w.quote_style.is_some() || !is_clause_word(&w.value.to_ascii_uppercase()))
        {
            Some(self.ident("an alias")?)
        } else {
            None
        };
        Ok(SelectItem::Expr { expr, alias })
    }

    /// Value expressions (ksqlDB's `valueExpression`: arithmetic and concatenation over
    /// primaries, no comparisons or boolean operators outside parentheses).
    fn value_expr_list(&mut self) -> Result<Vec<Expr>, SqlError> {
        let mut list = vec![self.concat_expr()?];
        while self.eat(&Token::Comma) {
            list.push(self.concat_expr()?);
        }
        Ok(list)
    }

    fn expr_list(&mut self) -> Result<Vec<Expr>, SqlError> {
        let mut list = vec![self.expr()?];
        while self.eat(&Token::Comma) {
            list.push(self.expr()?);
        }
        Ok(list)
    }

    // ---- expressions, lowest precedence first ----

    pub fn expr(&mut self) -> Result<Expr, SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SqlError::syntax(
                self.pos(),
                "Syntax Error: expression nested too deeply",
            ));
        }
        let e = self.or_expr();
        self.depth -= 1;
        e
    }

    fn or_expr(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.and_expr()?;
        while self.is_keyword("OR") {
            self.advance();
            let right = self.and_expr()?;
            left = binary(BinaryOp::Or, left, right);
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.not_expr()?;
        while self.is_keyword("AND") {
            self.advance();
            let right = self.not_expr()?;
            left = binary(BinaryOp::And, left, right);
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Result<Expr, SqlError> {
        if self.is_keyword("NOT") {
            let pos = self.advance().pos;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(SqlError::syntax(
                    pos,
                    "Syntax Error: expression nested too deeply",
                ));
            }
            let inner = self.not_expr();
            self.depth -= 1;
            return Ok(Expr::new(
                ExprKind::Unary {
                    op: UnaryOp::Not,
                    expr: Box::new(inner?),
                },
                pos,
            ));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, SqlError> {
        let left = self.concat_expr()?;
        let pos = self.pos();
        let op = match &self.peek().token {
            Token::Eq | Token::DoubleEq => Some(BinaryOp::Eq),
            Token::Neq => Some(BinaryOp::NotEq),
            Token::Lt => Some(BinaryOp::Lt),
            Token::LtEq => Some(BinaryOp::LtEq),
            Token::Gt => Some(BinaryOp::Gt),
            Token::GtEq => Some(BinaryOp::GtEq),
            _ => None,
        };
        if let Some(op) = op {
            self.advance();
            let right = self.concat_expr()?;
            return Ok(binary(op, left, right));
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if self.eat_keyword("NULL") {
                return Ok(Expr::new(
                    ExprKind::IsNull {
                        expr: Box::new(left),
                        negated,
                    },
                    pos,
                ));
            }
            if self.eat_keywords(&["DISTINCT", "FROM"]) {
                let right = self.concat_expr()?;
                let op = if negated {
                    BinaryOp::IsNotDistinctFrom
                } else {
                    BinaryOp::IsDistinctFrom
                };
                return Ok(binary(op, left, right));
            }
            return Err(self.unexpected("NULL or DISTINCT FROM"));
        }
        let negated = matches!(
            (self.keyword_at(0).as_deref(), self.keyword_at(1).as_deref()),
            (Some("NOT"), Some("BETWEEN" | "IN" | "LIKE"))
        );
        if negated {
            self.advance();
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.concat_expr()?;
            self.expect_keyword("AND")?;
            let high = self.concat_expr()?;
            return Ok(Expr::new(
                ExprKind::Between {
                    expr: Box::new(left),
                    low: Box::new(low),
                    high: Box::new(high),
                    negated,
                },
                pos,
            ));
        }
        if self.eat_keyword("IN") {
            self.expect(&Token::LParen, "'('")?;
            let list = self.expr_list()?;
            self.expect(&Token::RParen, "')'")?;
            return Ok(Expr::new(
                ExprKind::InList {
                    expr: Box::new(left),
                    list,
                    negated,
                },
                pos,
            ));
        }
        if self.eat_keyword("LIKE") {
            let pattern = self.concat_expr()?;
            let escape = if self.eat_keyword("ESCAPE") {
                Some(self.string_literal("an escape character in quotes")?)
            } else {
                None
            };
            return Ok(Expr::new(
                ExprKind::Like {
                    expr: Box::new(left),
                    pattern: Box::new(pattern),
                    escape,
                    negated,
                },
                pos,
            ));
        }
        Ok(left)
    }

    fn concat_expr(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.additive()?;
        while self.peek().token == Token::StringConcat {
            self.advance();
            let right = self.additive()?;
            left = binary(BinaryOp::Concat, left, right);
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().token {
                Token::Plus => BinaryOp::Add,
                Token::Minus => BinaryOp::Subtract,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.multiplicative()?;
            left = binary(op, left, right);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().token {
                Token::Mul => BinaryOp::Multiply,
                Token::Div => BinaryOp::Divide,
                Token::Mod => BinaryOp::Modulo,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.unary()?;
            left = binary(op, left, right);
        }
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        let op = match self.peek().token {
            Token::Minus => UnaryOp::Minus,
            Token::Plus => UnaryOp::Plus,
            _ => return self.postfix(),
        };
        let pos = self.advance().pos;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SqlError::syntax(
                pos,
                "Syntax Error: expression nested too deeply",
            ));
        }
        let inner = self.unary();
        self.depth -= 1;
        let inner = inner?;
        // A minus directly before a number literal is part of the literal.
        if op == UnaryOp::Minus
            && let ExprKind::Literal(LiteralValue::Number(n)) = &inner.kind
            && !n.starts_with('-')
        {
            return Ok(Expr::new(
                ExprKind::Literal(LiteralValue::Number(format!("-{n}"))),
                pos,
            ));
        }
        Ok(Expr::new(
            ExprKind::Unary {
                op,
                expr: Box::new(inner),
            },
            pos,
        ))
    }

    fn postfix(&mut self) -> Result<Expr, SqlError> {
        let mut e = self.primary()?;
        loop {
            match self.peek().token {
                Token::LBracket => {
                    let pos = self.advance().pos;
                    let index = self.expr()?;
                    self.expect(&Token::RBracket, "']'")?;
                    e = Expr::new(
                        ExprKind::Subscript {
                            expr: Box::new(e),
                            index: Box::new(index),
                        },
                        pos,
                    );
                }
                // `->*` ends the expression: a select item expands it.
                Token::Arrow if self.peek_at(1) == &Token::Mul => return Ok(e),
                Token::Arrow => {
                    let pos = self.advance().pos;
                    let field = self.ident("a field name")?;
                    e = Expr::new(
                        ExprKind::Dereference {
                            expr: Box::new(e),
                            field,
                        },
                        pos,
                    );
                }
                _ => return Ok(e),
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let tok = self.peek().clone();
        let pos = tok.pos;
        match tok.token {
            Token::Number(n, _) => {
                self.advance();
                Ok(Expr::new(ExprKind::Literal(LiteralValue::Number(n)), pos))
            }
            Token::SingleQuotedString(s) => {
                self.advance();
                Ok(Expr::new(ExprKind::Literal(LiteralValue::String(s)), pos))
            }
            Token::LParen => {
                if let Some(params) = self.lambda_params() {
                    return self.lambda(params, pos);
                }
                self.advance();
                let e = self.expr()?;
                self.expect(&Token::RParen, "')'")?;
                Ok(e)
            }
            Token::Word(w) => {
                let upper = w.value.to_ascii_uppercase();
                let quoted = w.quote_style.is_some();
                if !quoted {
                    match upper.as_str() {
                        "NULL" => {
                            self.advance();
                            return Ok(Expr::new(ExprKind::Literal(LiteralValue::Null), pos));
                        }
                        "TRUE" | "FALSE" => {
                            self.advance();
                            return Ok(Expr::new(
                                ExprKind::Literal(LiteralValue::Boolean(upper == "TRUE")),
                                pos,
                            ));
                        }
                        "CASE" => return self.case_expr(),
                        "CAST" => return self.cast_expr(),
                        "ARRAY" if self.peek_at(1) == &Token::LBracket => {
                            self.advance();
                            self.advance();
                            let items = if self.peek().token == Token::RBracket {
                                Vec::new()
                            } else {
                                self.expr_list()?
                            };
                            self.expect(&Token::RBracket, "']'")?;
                            return Ok(Expr::new(ExprKind::Array(items), pos));
                        }
                        "MAP" if self.peek_at(1) == &Token::LParen => return self.map_expr(),
                        "STRUCT" if self.peek_at(1) == &Token::LParen => {
                            return self.struct_expr();
                        }
                        _ => {}
                    }
                }
                if self.peek_at(1) == &Token::RArrow {
                    let name = self.ident("a lambda parameter")?;
                    return self.lambda(vec![name], pos);
                }
                if self.peek_at(1) == &Token::LParen {
                    return self.call();
                }
                let first = self.ident("an expression")?;
                if self.peek().token == Token::Period {
                    self.advance();
                    let name = self.ident("a column name")?;
                    return Ok(Expr::new(
                        ExprKind::Column {
                            qualifier: Some(first),
                            name,
                        },
                        pos,
                    ));
                }
                Ok(Expr::new(
                    ExprKind::Column {
                        qualifier: None,
                        name: first,
                    },
                    pos,
                ))
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// Looks ahead for `(a, b) =>` without consuming anything.
    fn lambda_params(&mut self) -> Option<Vec<Ident>> {
        let mut n = 1;
        let mut params = Vec::new();
        loop {
            match self.peek_at(n) {
                Token::Word(w) => {
                    params.push(if w.quote_style.is_some() {
                        w.value.clone()
                    } else {
                        w.value.to_ascii_uppercase()
                    });
                }
                _ => return None,
            }
            n += 1;
            match self.peek_at(n) {
                Token::Comma => n += 1,
                Token::RParen => break,
                _ => return None,
            }
        }
        if self.peek_at(n + 1) != &Token::RArrow {
            return None;
        }
        for _ in 0..=n {
            self.advance();
        }
        Some(params)
    }

    fn lambda(&mut self, params: Vec<Ident>, pos: Pos) -> Result<Expr, SqlError> {
        self.expect(&Token::RArrow, "'=>'")?;
        let body = self.expr()?;
        Ok(Expr::new(
            ExprKind::Lambda {
                params,
                body: Box::new(body),
            },
            pos,
        ))
    }

    fn call(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        let name = match &self.advance().token {
            Token::Word(w) if w.quote_style.is_some() => w.value.clone(),
            Token::Word(w) => w.value.to_ascii_uppercase(),
            _ => unreachable!("call() is entered on a word"),
        };
        self.expect(&Token::LParen, "'('")?;
        if self.eat(&Token::Mul) {
            self.expect(&Token::RParen, "')'")?;
            return Ok(Expr::new(
                ExprKind::Call {
                    name,
                    args: Vec::new(),
                    star: true,
                },
                pos,
            ));
        }
        let args = if self.peek().token == Token::RParen {
            Vec::new()
        } else {
            self.expr_list()?
        };
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(Expr::new(
            ExprKind::Call {
                name,
                args,
                star: false,
            },
            pos,
        ))
    }

    fn case_expr(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        self.expect_keyword("CASE")?;
        let operand = if self.is_keyword("WHEN") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut whens = Vec::new();
        while self.eat_keyword("WHEN") {
            let w = self.expr()?;
            self.expect_keyword("THEN")?;
            let t = self.expr()?;
            whens.push((w, t));
        }
        if whens.is_empty() {
            return Err(self.unexpected("WHEN"));
        }
        let otherwise = if self.eat_keyword("ELSE") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        self.expect_keyword("END")?;
        Ok(Expr::new(
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            },
            pos,
        ))
    }

    fn cast_expr(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        self.expect_keyword("CAST")?;
        self.expect(&Token::LParen, "'('")?;
        let e = self.expr()?;
        self.expect_keyword("AS")?;
        let to = self.data_type()?;
        self.expect(&Token::RParen, "')'")?;
        Ok(Expr::new(
            ExprKind::Cast {
                expr: Box::new(e),
                to,
            },
            pos,
        ))
    }

    fn map_expr(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        self.advance();
        self.expect(&Token::LParen, "'('")?;
        let mut entries = Vec::new();
        if self.peek().token != Token::RParen {
            loop {
                let k = self.expr()?;
                self.expect(&Token::Assignment, "':='")?;
                let v = self.expr()?;
                entries.push((k, v));
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
        }
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(Expr::new(ExprKind::Map(entries), pos))
    }

    fn struct_expr(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        self.advance();
        self.expect(&Token::LParen, "'('")?;
        let mut fields = Vec::new();
        if self.peek().token != Token::RParen {
            loop {
                let name = self.ident("a field name")?;
                self.expect(&Token::Assignment, "':='")?;
                let v = self.expr()?;
                fields.push((name, v));
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
        }
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(Expr::new(ExprKind::Struct(fields), pos))
    }
}

/// Words that end a select item or relation rather than naming an alias.
fn is_clause_word(w: &str) -> bool {
    is_reserved(w) || matches!(w, "EMIT" | "WINDOW")
}

/// A binary expression, positioned where its left operand starts.
fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
    let pos = left.pos;
    Expr::new(
        ExprKind::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        },
        pos,
    )
}

/// Milliseconds in a time unit, MILLISECOND to DAY, singular or plural (upper case).
pub(crate) fn time_unit_ms(unit: &str) -> Option<u64> {
    Some(match unit.trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(sql: &str) {
        let first = parse_statement(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let printed = first.kind.to_string();
        let second =
            parse_statement(&printed).unwrap_or_else(|e| panic!("reparse of {printed}: {e}"));
        // Positions differ between the two texts; the printed forms must not.
        assert_eq!(printed, second.kind.to_string(), "{sql}");
    }

    #[test]
    fn statements_round_trip() {
        for sql in [
            "CREATE STREAM s (id BIGINT KEY, name STRING, `Mixed` DECIMAL(4, 2)) WITH (kafka_topic='t', value_format='JSON', partitions=2);",
            "CREATE OR REPLACE SOURCE TABLE IF NOT EXISTS t (k INT PRIMARY KEY, m MAP<STRING, ARRAY<INT>>, s STRUCT<a INT, `b` STRUCT<c STRING>>) WITH (kafka_topic='t', format='JSON');",
            "CREATE STREAM s2 WITH (kafka_topic='out') AS SELECT id, UCASE(name) AS up, -price * 2 + 1 x FROM s WHERE id > 10 AND NOT name LIKE 'a%' EMIT CHANGES;",
            "SELECT CASE WHEN a IS NULL THEN 'n' WHEN a BETWEEN 1 AND 2 THEN 'b' ELSE 'c' END FROM s;",
            "SELECT CAST(a AS DECIMAL(10, 2)), a IN (1, 2, 3), a NOT IN (4), m['k'], s->f->g, arr[1][2] FROM s LIMIT 5;",
            "SELECT TRANSFORM(arr, x => x + 1), REDUCE(m, 0, (s, k, v) => s + v), ARRAY[1, 2], MAP('a' := 1), STRUCT(f := 1) FROM s;",
            "SELECT a || 'x' || b, a IS DISTINCT FROM b, a IS NOT DISTINCT FROM b, COUNT(*) FROM s GROUP BY a HAVING COUNT(*) > 1;",
            "SELECT * FROM s PARTITION BY a EMIT CHANGES;",
            "SELECT k, COUNT(*) FROM s WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) GROUP BY k EMIT CHANGES;",
            "SELECT k, COUNT(*) FROM s WINDOW HOPPING (SIZE 2 HOURS, ADVANCE BY 30 MINUTES, RETENTION 1 DAY) GROUP BY k;",
            "DROP STREAM IF EXISTS s DELETE TOPIC;",
            "INSERT INTO s SELECT a, b FROM t WHERE a > 1;",
            "SET 'auto.offset.reset'='earliest';",
            "UNSET 'auto.offset.reset';",
            "TERMINATE CSAS_S_1;",
            "TERMINATE ALL;",
            "SHOW STREAMS EXTENDED;",
            "LIST ALL TOPICS;",
            "DESCRIBE s EXTENDED;",
            "CREATE TYPE IF NOT EXISTS address AS STRUCT<street STRING, zip INT>;",
            "DROP TYPE IF EXISTS address;",
            "DEFINE topic = 'orders';",
            "UNDEFINE topic;",
            "SHOW TYPES;",
            "LIST VARIABLES;",
            "ASSERT TOPIC 'my-topic' WITH (partitions=3) TIMEOUT 10 SECONDS;",
            "ASSERT NOT EXISTS TOPIC t;",
            "ASSERT SCHEMA SUBJECT 't-value' ID 3 TIMEOUT 1 MINUTE;",
            "ASSERT NOT EXISTS SCHEMA ID 9;",
            "PAUSE CSAS_S_1;",
            "RESUME ALL;",
        ] {
            round_trip(sql);
        }
    }

    #[test]
    fn type_parameters_must_be_numbers_or_strings() {
        let sql = "CREATE STREAM I (K STRING (KEY)) WITH (kafka_topic='i', value_format='JSON');";
        assert_eq!(
            parse_statements(sql).unwrap_err().to_string(),
            format!(
                "line 1:28: Syntax Error\nExpecting {{'STRING', INTEGER_VALUE}}\nStatement: {sql}"
            )
        );
        assert!(
            parse_statement("CREATE STREAM I (K NULL) WITH (kafka_topic='i');")
                .unwrap_err()
                .to_string()
                .contains("Syntax Error")
        );
    }

    #[test]
    fn identifiers_may_start_with_digits() {
        let s = parse_statement("SELECT ROUND(v, -1) AS 1r FROM t;").unwrap();
        let StatementKind::Select(q) = s.kind else {
            panic!()
        };
        assert!(matches!(&q.select[0], SelectItem::Expr { alias: Some(a), .. } if a == "1R"));
        // A number followed by a separate word is still a number and an alias.
        assert!(parse_statement("SELECT 1 r FROM t;").is_ok());
    }

    #[test]
    fn identifiers_follow_ksqldb_case_rules() {
        let s = parse_statement("CREATE STREAM foo (`bar` INT, baz INT) WITH (kafka_topic='t');")
            .unwrap();
        let StatementKind::CreateSource(c) = s.kind else {
            panic!()
        };
        assert_eq!(c.name, "FOO");
        assert_eq!(c.columns[0].name, "bar");
        assert_eq!(c.columns[1].name, "BAZ");
    }

    #[test]
    fn precedence_is_sql_precedence() {
        let e = parse_expression("a + b * c = d OR NOT e AND f").unwrap();
        assert_eq!(e.to_string(), "(((A + (B * C)) = D) OR ((NOT E) AND F))");
    }

    #[test]
    fn errors_point_at_the_token() {
        let e = parse_statement("CREATE STREAM s (id INT,\n  name) WITH (kafka_topic='t');")
            .unwrap_err();
        assert_eq!(e.pos(), Some(Pos::new(2, 7)));
        assert!(e.to_string().contains("expected a type"), "{e}");
    }

    #[test]
    fn several_statements_keep_their_text() {
        let all = parse_statements("SHOW STREAMS;\n  SHOW QUERIES ;").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].text, "SHOW QUERIES");
        assert_eq!(all[1].pos, Pos::new(2, 3));
    }

    #[test]
    fn nested_types_close_with_shift_tokens() {
        let s = parse_statement("CREATE STREAM s (a ARRAY<ARRAY<INT>>, m MAP<STRING,ARRAY<INT>>);")
            .unwrap();
        let StatementKind::CreateSource(c) = s.kind else {
            panic!()
        };
        assert_eq!(c.columns[0].ty.to_string(), "ARRAY<ARRAY<INTEGER>>");
        assert_eq!(c.columns[1].ty.to_string(), "MAP<STRING, ARRAY<INTEGER>>");
    }

    #[test]
    fn group_and_partition_by_take_value_expressions() {
        for sql in [
            "SELECT COUNT(*) FROM s GROUP BY a AND b;",
            "SELECT COUNT(*) FROM s GROUP BY a = 1;",
            "SELECT * FROM s PARTITION BY a > 1 EMIT CHANGES;",
        ] {
            let e = parse_statement(sql).unwrap_err().to_string();
            assert!(e.contains("Syntax Error"), "{sql}: {e}");
        }
        for sql in [
            "SELECT COUNT(*) FROM s GROUP BY (a AND b);",
            "SELECT COUNT(*) FROM s GROUP BY a || 'x', b * 2;",
            "SELECT COUNT(*) FROM s GROUP BY (a, b);",
        ] {
            parse_statement(sql).unwrap();
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let sql = format!("SELECT {}1{} FROM s;", "(".repeat(5000), ")".repeat(5000));
        assert!(parse_statement(&sql).is_err());
        let sql = format!("SELECT {}1 FROM s;", "NOT ".repeat(5000));
        assert!(parse_statement(&sql).is_err());
        let sql = format!("SELECT {}1 FROM s;", "-".repeat(5000));
        assert!(parse_statement(&sql).is_err());
        let sql = format!(
            "CREATE STREAM s (a {}INT{});",
            "ARRAY<".repeat(5000),
            ">".repeat(5000)
        );
        assert!(parse_statement(&sql).is_err());
    }
}
