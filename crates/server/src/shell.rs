//! The shell on a terminal: line editing, history in `~/.sluice_history`, tab completion
//! of keywords, streams, tables, columns, functions and properties, and Ctrl-C that
//! stops the running query (or clears the line) rather than the shell. Ctrl-D leaves.
//! Piped input goes through `Session::interactive` instead.

use crate::cli::{Session, split_statements};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// The words the shell completes: SQL keywords and shell commands always; sources,
/// columns, functions and properties as the server knows them.
pub struct Words {
    /// Keywords, properties and functions: read once.
    fixed: Vec<String>,
    /// The fixed words and the server's sources and columns, sorted.
    words: Vec<String>,
}

/// Words to complete besides the reserved ones: clause words, types, WITH properties and
/// the shell's commands.
const KEYWORDS: &[&str] = &[
    "TUMBLING",
    "HOPPING",
    "SESSION",
    "SIZE",
    "ADVANCE",
    "RETENTION",
    "GRACE",
    "PERIOD",
    "CHANGES",
    "FINAL",
    "REPLACE",
    "SOURCE",
    "STREAM",
    "TABLE",
    "DELETE",
    "TOPIC",
    "TERMINATE",
    "ALL",
    "SHOW",
    "LIST",
    "STREAMS",
    "TABLES",
    "QUERIES",
    "TOPICS",
    "FUNCTIONS",
    "PROPERTIES",
    "VARIABLES",
    "DESCRIBE",
    "EXTENDED",
    "FUNCTION",
    "EXPLAIN",
    "PRINT",
    "BEGINNING",
    "INTERVAL",
    "SET",
    "UNSET",
    "DEFINE",
    "UNDEFINE",
    "ALTER",
    "ADD",
    "COLUMN",
    "KEY",
    "PRIMARY",
    "HEADERS",
    "HEADER",
    "ARRAY",
    "MAP",
    "STRUCT",
    "STRING",
    "VARCHAR",
    "INT",
    "INTEGER",
    "BIGINT",
    "DOUBLE",
    "DECIMAL",
    "BOOLEAN",
    "BYTES",
    "DATE",
    "TIME",
    "TIMESTAMP",
    "KAFKA_TOPIC",
    "VALUE_FORMAT",
    "KEY_FORMAT",
    "FORMAT",
    "PARTITIONS",
    "REPLICAS",
    "WINDOW_TYPE",
    "WINDOW_SIZE",
    "TIMESTAMP_FORMAT",
    "RUN",
    "SCRIPT",
    "SPOOL",
    "OFF",
    "help",
    "history",
    "clear",
    "server",
    "version",
    "exit",
    "quit",
];

const PROPERTIES: &[&str] = &[
    "'auto.offset.reset'",
    "'processing.guarantee'",
    "'commit.interval.ms'",
    "'cache.max.bytes.buffering'",
    "'ksql.query.pull.table.scan.enabled'",
    "'ksql.query.pull.range.scan.enabled'",
    "'ksql.persistence.default.format.key'",
    "'ksql.persistence.default.format.value'",
];

impl Words {
    /// The keywords and properties, the server's functions, and its sources now.
    pub fn new(session: &Session) -> Words {
        let mut fixed: Vec<String> = KEYWORDS
            .iter()
            .chain(sluice_sql::parser::RESERVED)
            .chain(PROPERTIES)
            .map(|w| w.to_string())
            .collect();
        for entity in session.entities("SHOW FUNCTIONS;").unwrap_or_default() {
            for f in entity["functions"].as_array().into_iter().flatten() {
                fixed.extend(f["name"].as_str().map(str::to_string));
            }
        }
        let mut words = Words {
            fixed,
            words: Vec::new(),
        };
        words.refresh(session);
        words
    }

    /// Asks the server for its sources and their columns.
    pub fn refresh(&mut self, session: &Session) {
        let mut words = self.fixed.clone();
        for sql in ["SHOW STREAMS EXTENDED;", "SHOW TABLES EXTENDED;"] {
            for entity in session.entities(sql).unwrap_or_default() {
                for source in entity["sourceDescriptions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    words.extend(source["name"].as_str().map(str::to_string));
                    for field in source["fields"].as_array().into_iter().flatten() {
                        words.extend(field["name"].as_str().map(str::to_string));
                    }
                }
            }
        }
        words.sort();
        words.dedup();
        self.words = words;
    }

    /// The words that complete `prefix` (case-insensitively), in the prefix's case for
    /// keywords typed in lower case.
    pub fn complete(&self, prefix: &str) -> Vec<String> {
        if prefix.is_empty() {
            return Vec::new();
        }
        let lower = prefix.chars().all(|c| !c.is_ascii_uppercase());
        let upper = prefix.to_ascii_uppercase();
        self.words
            .iter()
            .filter(|w| w.to_ascii_uppercase().starts_with(&upper))
            .map(|w| {
                let keyword = KEYWORDS.contains(&w.as_str())
                    || sluice_sql::parser::RESERVED.contains(&w.as_str());
                if lower && keyword {
                    w.to_ascii_lowercase()
                } else {
                    w.clone()
                }
            })
            .collect()
    }
}

/// The editor's helper: completion from the shared words.
struct ShellHelper {
    words: Arc<Mutex<Words>>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\'' || c == '.'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let words = self.words.lock().unwrap_or_else(|p| p.into_inner());
        Ok((start, words.complete(&line[start..pos])))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// From now on Ctrl-C (SIGINT) stops the session's running query instead of the
/// process; at the terminal's prompt the line editor sees it as a key.
pub fn catch_interrupts(session: &mut Session) -> Result<(), String> {
    let interrupt = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone())
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    session.interrupt = Some(interrupt);
    Ok(())
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".sluice_history"))
}

/// Runs the shell on the terminal until `exit` or Ctrl-D.
pub fn run(session: &mut Session, out: &mut dyn Write) -> Result<(), String> {
    let words = Arc::new(Mutex::new(Words::new(session)));
    let mut editor: Editor<ShellHelper, DefaultHistory> =
        Editor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
    // After the editor: it puts its own SIGINT handler in place for as long as it lives
    // (which would swallow a Ctrl-C during a query); ours goes on top of it and chains
    // to it. At the prompt Ctrl-C is a key to the editor either way.
    catch_interrupts(session)?;
    session.fit_to_terminal = true;
    editor.set_helper(Some(ShellHelper {
        words: words.clone(),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let _ = writeln!(out, "{}", session.banner());
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            "sluice> "
        } else {
            "     > "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // Ctrl-C at the prompt drops what was typed.
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.to_string()),
        };
        if pending.is_empty() {
            // The history is copied out only for the command that shows it.
            let shown = line
                .trim()
                .eq_ignore_ascii_case("history")
                .then(|| editor.history().iter().cloned().collect::<Vec<_>>());
            match session.shell_command(line.trim(), out, shown.as_deref()) {
                Some(crate::cli::ShellAction::Exit) => {
                    let _ = editor.add_history_entry(line.trim());
                    break;
                }
                Some(crate::cli::ShellAction::Done) => {
                    let _ = editor.add_history_entry(line.trim());
                    continue;
                }
                None => {}
            }
        }
        pending.push_str(&line);
        pending.push('\n');
        let (statements, rest) = split_statements(&pending);
        let ran = !statements.is_empty();
        for stmt in statements {
            let _ = editor.add_history_entry(format!("{};", stmt.trim()));
            if let Err(e) = session.run(&stmt, out) {
                let _ = writeln!(out, "{}", e.0);
            }
            let _ = out.flush();
        }
        pending = rest.trim_start().to_string();
        if ran {
            // New sources and columns complete from now on.
            words
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refresh(session);
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_complete_case_insensitively() {
        let words = Words {
            fixed: Vec::new(),
            words: ["CLICKS", "COUNT", "CREATE", "PAGE", "SELECT"]
                .iter()
                .map(|w| w.to_string())
                .collect(),
        };
        assert_eq!(words.complete("cr"), ["create"]);
        assert_eq!(words.complete("C"), ["CLICKS", "COUNT", "CREATE"]);
        assert_eq!(words.complete("cl"), ["CLICKS"]);
        assert!(words.complete("").is_empty());
    }

    #[test]
    fn completion_replaces_the_word_under_the_cursor() {
        let helper = ShellHelper {
            words: Arc::new(Mutex::new(Words {
                fixed: Vec::new(),
                words: vec!["PAGEVIEWS".into(), "SELECT".into()],
            })),
        };
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, found) = helper.complete("SELECT * FROM pag", 17, &ctx).unwrap();
        assert_eq!((start, found), (14, vec!["PAGEVIEWS".to_string()]));
    }
}
