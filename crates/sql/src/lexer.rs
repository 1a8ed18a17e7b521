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
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    for t in raw {
        if matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        let pos = Pos::new(t.span.start.line as u32, t.span.start.column as u32);
        let offset = byte_offset(sql, &line_starts, pos);
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

fn byte_offset(sql: &str, line_starts: &[usize], pos: Pos) -> usize {
    let Some(&start) = line_starts.get(pos.line.saturating_sub(1) as usize) else {
        return sql.len();
    };
    sql[start..]
        .char_indices()
        .nth(pos.column.saturating_sub(1) as usize)
        .map(|(i, _)| start + i)
        .unwrap_or(sql.len())
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
    fn ksql_operators_tokenize() {
        let toks = tokenize("x => x->f, MAP('a' := 1)").unwrap();
        assert!(toks.iter().any(|t| t.token == Token::RArrow));
        assert!(toks.iter().any(|t| t.token == Token::Arrow));
        assert!(toks.iter().any(|t| t.token == Token::Assignment));
    }
}
