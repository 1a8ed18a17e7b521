//! Tokens of the ksqlDB dialect, produced by sqlparser's tokenizer.

use crate::error::{Pos, SqlError};
use sqlparser::dialect::Dialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// ksqlDB's lexical rules: identifiers of letters, digits, `_` and `@`; quoted
/// identifiers in backquotes or double quotes; `'` strings with `''` escapes.
#[derive(Debug)]
struct KsqlDialect;

impl Dialect for KsqlDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '@'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || ch == '"'
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tok {
    pub token: Token,
    pub pos: Pos,
    /// Byte offset of the token in the text.
    pub offset: usize,
}

/// Splits `sql` into tokens without whitespace and comments, ending with `Token::EOF`.
pub fn tokenize(sql: &str) -> Result<Vec<Tok>, SqlError> {
    let raw = Tokenizer::new(&KsqlDialect, sql)
        .tokenize_with_location()
        .map_err(|e| {
            let pos = Pos::new(e.location.line as u32, e.location.column as u32);
            SqlError::syntax(pos, e.message)
        })?;
    // Tokens come in order: walk a cursor forward instead of rescanning each line.
    let mut cursor = Cursor {
        pos: Pos::new(1, 1),
        offset: 0,
    };
    let mut out = Vec::with_capacity(raw.len());
    for t in raw {
        if matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        let pos = Pos::new(t.span.start.line as u32, t.span.start.column as u32);
        let offset = cursor.advance_to(sql, pos);
        out.push(Tok {
            token: t.token,
            pos,
            offset,
        });
    }
    let end = end_pos(sql);
    out.push(Tok {
        token: Token::EOF,
        pos: end,
        offset: sql.len(),
    });
    Ok(out)
}

/// A position in the text with its byte offset, moved forward only.
struct Cursor {
    pos: Pos,
    offset: usize,
}

impl Cursor {
    /// Moves forward to `target` and returns its byte offset (the end of the text when
    /// the position lies beyond it).
    fn advance_to(&mut self, sql: &str, target: Pos) -> usize {
        if target < self.pos {
            // Never expected (tokens come in order); rescan rather than misplace.
            self.pos = target;
            self.offset = byte_offset_slow(sql, target);
            return self.offset;
        }
        for c in sql[self.offset..].chars() {
            if self.pos == target {
                break;
            }
            self.offset += c.len_utf8();
            if c == '\n' {
                self.pos = Pos::new(self.pos.line + 1, 1);
            } else {
                self.pos.column += 1;
            }
        }
        self.offset
    }
}

/// The byte offset of a line/column position, by scanning (used only as a fallback).
fn byte_offset_slow(sql: &str, pos: Pos) -> usize {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in sql.char_indices() {
        if line == pos.line && column == pos.column {
            return i;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    sql.len()
}

fn end_pos(sql: &str) -> Pos {
    let line = sql.matches('\n').count() as u32 + 1;
    let last = sql.rsplit('\n').next().unwrap_or("");
    Pos::new(line, last.chars().count() as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_positions_and_offsets() {
        let sql = "SELECT a,\n  `b c` FROM t;";
        let toks = tokenize(sql).unwrap();
        let b = toks
            .iter()
            .find(|t| matches!(&t.token, Token::Word(w) if w.value == "b c"))
            .unwrap();
        assert_eq!(b.pos, Pos::new(2, 3));
        assert_eq!(&sql[b.offset..b.offset + 1], "`");
        assert_eq!(toks.last().unwrap().token, Token::EOF);
    }

    #[test]
    fn offsets_survive_multibyte_text() {
        let sql = "SELECT 'héllo wörld',\n  x FROM t;";
        let toks = tokenize(sql).unwrap();
        for t in &toks {
            if let Token::Word(w) = &t.token {
                assert!(sql[t.offset..].starts_with(&w.value), "{w} at {}", t.offset);
            }
        }
    }

    #[test]
    fn ksql_operators_tokenize() {
        let toks = tokenize("x => x->f, MAP('a' := 1)").unwrap();
        assert!(toks.iter().any(|t| t.token == Token::RArrow));
        assert!(toks.iter().any(|t| t.token == Token::Arrow));
        assert!(toks.iter().any(|t| t.token == Token::Assignment));
    }
}
