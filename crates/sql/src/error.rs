//! Errors of the SQL front end. Every user error carries where in the statement it is.

use std::fmt;

/// A position in the statement text, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub fn new(line: u32, column: u32) -> Pos {
        Pos { line, column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The text does not follow the grammar.
    #[error("{pos}: {message}")]
    Syntax {
        pos: Pos,
        message: String,
        hint: Option<String>,
    },
    /// The statement is well formed but means nothing valid (unknown names, type errors,
    /// rules of streams and tables).
    #[error("{message}")]
    Semantic {
        pos: Option<Pos>,
        message: String,
        hint: Option<String>,
    },
    /// A valid ksqlDB statement that this version of Sluice cannot run yet.
    #[error("{message}")]
    Unsupported { pos: Option<Pos>, message: String },
}

impl SqlError {
    pub fn syntax(pos: Pos, message: impl Into<String>) -> SqlError {
        SqlError::Syntax {
            pos,
            message: message.into(),
            hint: None,
        }
    }

    pub fn semantic(pos: impl Into<Option<Pos>>, message: impl Into<String>) -> SqlError {
        SqlError::Semantic {
            pos: pos.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn unsupported(pos: impl Into<Option<Pos>>, message: impl Into<String>) -> SqlError {
        SqlError::Unsupported {
            pos: pos.into(),
            message: message.into(),
        }
    }

    pub fn with_hint(mut self, text: impl Into<String>) -> SqlError {
        match &mut self {
            SqlError::Syntax { hint, .. } | SqlError::Semantic { hint, .. } => {
                *hint = Some(text.into())
            }
            SqlError::Unsupported { .. } => {}
        }
        self
    }

    pub fn pos(&self) -> Option<Pos> {
        match self {
            SqlError::Syntax { pos, .. } => Some(*pos),
            SqlError::Semantic { pos, .. } | SqlError::Unsupported { pos, .. } => *pos,
        }
    }

    pub fn hint(&self) -> Option<&str> {
        match self {
            SqlError::Syntax { hint, .. } | SqlError::Semantic { hint, .. } => hint.as_deref(),
            SqlError::Unsupported { .. } => None,
        }
    }

    /// The message, with the hint on its own line when there is one.
    pub fn full_message(&self) -> String {
        match self.hint() {
            Some(h) => format!("{self}\nHint: {h}"),
            None => self.to_string(),
        }
    }
}

/// The closest candidate by edit distance, for "did you mean ...?" hints.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = if name.len() <= 3 {
        1
    } else {
        (name.len() / 3).max(2)
    };
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name.to_uppercase(), &c.to_uppercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_name() {
        assert_eq!(
            closest("PAGEVEIWS", ["PAGEVIEWS", "USERS"]),
            Some("PAGEVIEWS")
        );
        assert_eq!(closest("X", ["PAGEVIEWS", "USERS"]), None);
    }
}
