//! Scripts: statements that change how the later ones read. `DEFINE name = 'value'`
//! makes `${name}` stand for the value in the statements after it (`UNDEFINE` ends
//! that), and `CREATE TYPE name AS type` lets later statements use `name` as a type
//! (`DROP TYPE` ends that), as ksqlDB reads them.

use crate::ast::Statement;
use crate::ast::StatementKind;
use crate::error::SqlError;
use crate::parser::parse_statements_with_types;
use sluice_plan::SqlType;
use std::collections::BTreeMap;

/// What a session's earlier statements set for its later ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScriptContext {
    /// Variables, by name as defined (names are case-sensitive, as in ksqlDB).
    pub variables: BTreeMap<String, String>,
    /// Custom types, by upper-cased name.
    pub types: BTreeMap<String, SqlType>,
}

/// The byte ranges of a script's statements (each without its `;`), and where the text
/// after the last `;` starts. Quotes and comments are skipped over: a `;` in them ends
/// nothing.
pub fn split(text: &str) -> (Vec<(usize, usize)>, usize) {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'`' | b'"') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        // A doubled quote is an escaped one.
                        if bytes.get(i + 1) == Some(&q) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                ranges.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    (ranges, start.min(text.len()))
}

/// Replaces each `${name}` with the variable's value; an undefined one is an error.
pub fn substitute(text: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        let name = &after[..end];
        let value = variables
            .get(name)
            .ok_or_else(|| format!("Undefined variable: {name}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a script statement by statement, each with the variables and types the
/// statements before it left in `context` (which it updates): DEFINE, UNDEFINE, CREATE
/// TYPE and DROP TYPE take effect for the statements after them. Positions in errors
/// and statements count from the start of the script.
pub fn parse_script(sql: &str, context: &mut ScriptContext) -> Result<Vec<Statement>, SqlError> {
    let (ranges, rest) = split(sql);
    // Each piece keeps its `;`: errors quote the statement as written.
    let pieces = ranges
        .into_iter()
        .map(|(s, e)| (s, &sql[s..(e + 1).min(sql.len())]))
        .chain((rest < sql.len()).then(|| (rest, &sql[rest..])));
    let mut out = Vec::new();
    for (start, piece) in pieces {
        let substituted = if piece.contains("${") {
            substitute(piece, &context.variables).map_err(|message| {
                SqlError::semantic(
                    position_of(sql, start + piece.find("${").unwrap_or(0)),
                    message,
                )
            })?
        } else {
            piece.to_string()
        };
        // Padded with the lines and columns before it, so that positions count from
        // the start of the script.
        let before = &sql[..start];
        let lines = before.matches('\n').count();
        let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1);
        let padded = format!("{}{}{substituted}", "\n".repeat(lines), " ".repeat(column));
        for stmt in parse_statements_with_types(&padded, &context.types)? {
            match &stmt.kind {
                StatementKind::Define { name, value } => {
                    context.variables.insert(name.clone(), value.clone());
                }
                StatementKind::Undefine { name } => {
                    context.variables.remove(name);
                }
                StatementKind::CreateType { name, ty, .. } => {
                    context
                        .types
                        .entry(name.to_uppercase())
                        .or_insert_with(|| ty.clone());
                }
                StatementKind::DropType { name, .. } => {
                    context.types.remove(&name.to_uppercase());
                }
                _ => {}
            }
            out.push(stmt);
        }
    }
    Ok(out)
}

fn position_of(sql: &str, offset: usize) -> crate::Pos {
    let before = &sql[..offset.min(sql.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let column = (before.len() - before.rfind('\n').map_or(0, |n| n + 1)) as u32 + 1;
    crate::Pos::new(line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let text = "a 'x;y' `b;c`; -- d;\n e /* f; */ g; h";
        let (ranges, rest) = split(text);
        let parts: Vec<&str> = ranges.iter().map(|(s, e)| text[*s..*e].trim()).collect();
        assert_eq!(parts, vec!["a 'x;y' `b;c`", "-- d;\n e /* f; */ g"]);
        assert_eq!(text[rest..].trim(), "h");
    }

    #[test]
    fn variables_and_types_apply_to_the_statements_after_them() {
        let mut ctx = ScriptContext::default();
        let stmts = parse_script(
            "DEFINE topic = 'orders';\n\
             CREATE TYPE address AS STRUCT<street STRING, zip INT>;\n\
             CREATE STREAM s (id INT KEY, a ADDRESS) WITH (kafka_topic='${topic}', value_format='JSON');\n\
             UNDEFINE topic;",
            &mut ctx,
        )
        .unwrap();
        assert_eq!(stmts.len(), 4);
        let StatementKind::CreateSource(c) = &stmts[2].kind else {
            panic!("a CREATE STREAM")
        };
        assert!(
            matches!(c.columns[1].ty, SqlType::Struct(_)),
            "{:?}",
            c.columns[1].ty
        );
        assert!(
            stmts[2].text.contains("kafka_topic='orders'"),
            "{}",
            stmts[2].text
        );
        assert_eq!(
            stmts[2].pos.line, 3,
            "positions count from the script's start"
        );
        assert!(ctx.variables.is_empty());
        assert!(ctx.types.contains_key("ADDRESS"));
        let e = parse_script("SELECT * FROM s WHERE x = '${nope}';", &mut ctx).unwrap_err();
        assert!(e.to_string().contains("Undefined variable: nope"), "{e}");
        let e = parse_script("CREATE STREAM t (a NOPE) WITH (kafka_topic='t');", &mut ctx);
        assert!(e.is_err());
    }
}
