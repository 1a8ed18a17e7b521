//! `sluice cli`: a REST client of a Sluice (or ksqlDB) server, for people and for CI.
//!
//! Statements go to `/ksql`; SELECT goes to `/query-stream`, its rows printed as they
//! arrive. `SET`/`UNSET` and `DEFINE`/`UNDEFINE` are the shell's own: properties are
//! sent with every later statement, variables are substituted (`${name}`) before a
//! statement is sent. Run with `-e` or `-f`, the statements run in order and the first
//! that fails stops the run with a non-zero exit (ksqlDB's CLI exits 0 there).

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Tabular,
    Json,
}

/// A shell session: the server, the session's properties and variables.
pub struct Session {
    pub url: String,
    pub output: Output,
    properties: BTreeMap<String, Value>,
    variables: BTreeMap<String, String>,
    /// Set (by Ctrl-C, in the terminal shell) to stop the running query.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// SPOOL: everything printed is also written here.
    spool: Option<Arc<Mutex<std::fs::File>>>,
    /// Query rows are fitted to the terminal's width (in the terminal shell); else
    /// they are as wide as their data.
    pub fit_to_terminal: bool,
    /// The HTTP client: HTTPS trusts the system's roots, or `with_tls_ca`'s.
    agent: ureq::Agent,
}

/// An HTTP client whose HTTPS (OpenSSL) trusts `roots`; any HTTP status is an answer.
fn agent(roots: ureq::tls::RootCerts) -> ureq::Agent {
    agent_config(roots).build().into()
}

/// The configuration of `agent`, for more settings.
pub(crate) fn agent_config(
    roots: ureq::tls::RootCerts,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    use ureq::tls::{TlsConfig, TlsProvider};
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::NativeTls)
                .root_certs(roots)
                .build(),
        )
}

/// The certificates of a PEM file, as the only roots HTTPS trusts.
pub(crate) fn pem_roots(path: &std::path::Path) -> Result<ureq::tls::RootCerts, Failure> {
    use ureq::tls::{PemItem, RootCerts, parse_pem};
    let pem =
        std::fs::read(path).map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Failure(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(RootCerts::new_with_certs(&certs))
}

/// What a shell command did.
#[derive(Debug, PartialEq, Eq)]
pub enum ShellAction {
    Done,
    Exit,
}

const HELP: &str = "\
Statements end with ';' and may span lines. Besides ksqlDB's statements:
  SET 'property' = 'value';  UNSET 'property';    session properties, sent with each request
  DEFINE name = 'value';     UNDEFINE name;       variables, used as ${name}
  RUN SCRIPT 'file.sql';                          runs a file's statements
  SPOOL 'file';  SPOOL OFF;                       copies the output to a file
  help, history, clear, version, server [URL], exit (or Ctrl-D)
Tab completes keywords, streams, tables, columns, functions and properties.
Ctrl-C stops the running query; at the prompt it clears the line.";

/// Writes to the terminal and, while spooling, to the spool file.
struct Tee<'a> {
    out: &'a mut dyn Write,
    spool: Option<Arc<Mutex<std::fs::File>>>,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.spool {
            let _ = f.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf);
        }
        self.out.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Why a statement failed, already worded for the user.
#[derive(Debug)]
pub struct Failure(pub String);

impl Session {
    pub fn new(url: &str, output: Output, variables: BTreeMap<String, String>) -> Session {
        Session {
            url: url.trim_end_matches('/').to_string(),
            output,
            properties: BTreeMap::new(),
            variables,
            interrupt: None,
            spool: None,
            fit_to_terminal: false,
            agent: agent(ureq::tls::RootCerts::PlatformVerifier),
        }
    }

    /// Trusts only the certificates in this PEM file for HTTPS (a server with a
    /// self-signed or private certificate).
    pub fn with_tls_ca(mut self, path: &std::path::Path) -> Result<Session, Failure> {
        self.agent = agent(pem_roots(path)?);
        Ok(self)
    }

    /// The greeting: client and server versions and the server's status.
    pub fn banner(&self) -> String {
        format!(
            "sluice {} – {}\nStatements end with ';'. 'help' lists the shell's commands; 'exit' or Ctrl-D leaves.",
            env!("CARGO_PKG_VERSION"),
            self.server_info().unwrap_or_else(|e| e.0)
        )
    }

    /// The entities a statement's `/ksql` response holds.
    pub fn entities(&self, sql: &str) -> Result<Vec<Value>, Failure> {
        let body = json!({"ksql": sql, "streamsProperties": self.properties});
        let (status, reply) = self.post("/ksql", &body)?;
        let reply: Value = serde_json::from_str(&reply)
            .map_err(|e| Failure(format!("the server's answer is not JSON ({e}): {reply}")))?;
        if status != 200 {
            return Err(Failure(error_text(&reply, sql)));
        }
        Ok(reply.as_array().cloned().unwrap_or_default())
    }

    /// A shell command on a line of its own (no `;`): help, history, clear, version,
    /// server [URL], exit. None: the line is SQL.
    pub fn shell_command(
        &mut self,
        line: &str,
        out: &mut dyn Write,
        history: Option<&[String]>,
    ) -> Option<ShellAction> {
        let mut words = line.split_whitespace();
        let command = words.next()?.to_ascii_lowercase();
        let argument = words.next();
        if words.next().is_some() || line.contains(';') {
            return None;
        }
        match (command.as_str(), argument) {
            ("exit" | "quit", None) => return Some(ShellAction::Exit),
            ("help", None) => {
                let _ = writeln!(out, "{HELP}");
            }
            ("history", None) => match history {
                Some(h) => {
                    for (i, entry) in h.iter().enumerate() {
                        let _ = writeln!(out, "{:>5}  {entry}", i + 1);
                    }
                }
                None => {
                    let _ = writeln!(out, "history is kept by the shell on a terminal");
                }
            },
            ("clear", None) => {
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            ("version", None) => {
                let _ = writeln!(out, "{}", self.banner());
            }
            ("server", None) => {
                let _ = writeln!(out, "{}", self.url);
            }
            ("server", Some(url)) => {
                self.url = url.trim_end_matches('/').to_string();
                let _ = writeln!(out, "{}", self.banner());
            }
            _ => return None,
        }
        Some(ShellAction::Done)
    }

    /// Runs a script's statements in order; stops at the first that fails.
    pub fn run_script(&mut self, script: &str, out: &mut dyn Write) -> Result<(), Failure> {
        let (statements, rest) = split_statements(script);
        if !rest.trim().is_empty() {
            return Err(Failure(format!(
                "the script ends inside a statement (a ';' is missing): {}",
                rest.trim()
            )));
        }
        for stmt in statements {
            self.run(&stmt, out)?;
        }
        Ok(())
    }

    /// Runs one statement (its text without the closing `;`).
    pub fn run(&mut self, statement: &str, out: &mut dyn Write) -> Result<(), Failure> {
        let mut tee = Tee {
            out,
            spool: self.spool.clone(),
        };
        self.run_statement(statement, &mut tee)
    }

    fn run_statement(&mut self, statement: &str, out: &mut dyn Write) -> Result<(), Failure> {
        let text = substitute(without_leading_comments(statement), &self.variables)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let first = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        match first.as_str() {
            "" => Ok(()),
            "SET" | "UNSET" | "DEFINE" | "UNDEFINE" => self.session_statement(&first, &text, out),
            "RUN"
                if words
                    .get(1)
                    .is_some_and(|w| w.eq_ignore_ascii_case("SCRIPT")) =>
            {
                let path = unquote(text.trim()[3..].trim()[6..].trim());
                let script = std::fs::read_to_string(&path)
                    .map_err(|e| Failure(format!("cannot read {path}: {e}")))?;
                self.run_script(&script, out)
            }
            "SPOOL" => {
                let target = unquote(text.trim()[5..].trim());
                if target.eq_ignore_ascii_case("OFF") {
                    self.spool = None;
                    let _ = writeln!(out, "Spooling stopped.");
                } else {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&target)
                        .map_err(|e| Failure(format!("cannot spool to {target}: {e}")))?;
                    self.spool = Some(Arc::new(Mutex::new(file)));
                    let _ = writeln!(out, "Spooling to {target}.");
                }
                Ok(())
            }
            "SELECT" => self.query(&text, out),
            "PRINT" => self.print(&text, out),
            _ => self.statement(&text, out),
        }
    }

    /// SET 'k'='v', UNSET 'k', DEFINE name = 'value', UNDEFINE name.
    fn session_statement(
        &mut self,
        verb: &str,
        text: &str,
        out: &mut dyn Write,
    ) -> Result<(), Failure> {
        let body = text[verb.len()..].trim();
        let pair = || -> Result<(String, String), Failure> {
            let (k, v) = body
                .split_once('=')
                .ok_or_else(|| Failure(format!("expected {verb} name = 'value'")))?;
            Ok((unquote(k), unquote(v)))
        };
        match verb {
            "SET" => {
                let (k, v) = pair()?;
                let _ = writeln!(out, "Successfully changed local property '{k}' to '{v}'.");
                self.properties.insert(k, Value::String(v));
            }
            "UNSET" => {
                let k = unquote(body);
                self.properties.remove(&k);
                let _ = writeln!(out, "Successfully unset local property '{k}'.");
            }
            "DEFINE" => {
                let (k, v) = pair()?;
                self.variables.insert(k, v);
            }
            _ => {
                self.variables.remove(&unquote(body));
            }
        }
        Ok(())
    }

    fn statement(&mut self, text: &str, out: &mut dyn Write) -> Result<(), Failure> {
        let body = json!({"ksql": format!("{text};"), "streamsProperties": self.properties});
        let (status, reply) = self.post("/ksql", &body)?;
        let reply: Value = serde_json::from_str(&reply)
            .map_err(|e| Failure(format!("the server's answer is not JSON ({e}): {reply}")))?;
        if status != 200 {
            return Err(Failure(error_text(&reply, text)));
        }
        match self.output {
            Output::Json => {
                let _ = writeln!(out, "{reply:#}");
            }
            Output::Tabular => {
                for entity in reply.as_array().into_iter().flatten() {
                    let _ = write!(out, "{}", render_entity(entity));
                }
            }
        }
        Ok(())
    }

    /// A streamed response, to read line by line as it arrives; an error response is
    /// the statement's failure.
    fn stream(
        &self,
        path: &str,
        body: &Value,
        text: &str,
    ) -> Result<std::io::BufReader<impl std::io::Read + use<>>, Failure> {
        let resp = self.send(path, body)?;
        let status = resp.status().as_u16();
        let mut reader = std::io::BufReader::new(resp.into_body().into_reader());
        if status != 200 {
            let mut reply = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut reply);
            let reply: Value = serde_json::from_str(&reply).unwrap_or(Value::String(reply));
            return Err(Failure(error_text(&reply, text)));
        }
        Ok(reader)
    }

    /// PRINT: the topic's records as lines, as they arrive.
    fn print(&mut self, text: &str, out: &mut dyn Write) -> Result<(), Failure> {
        let body = json!({"ksql": format!("{text};"), "streamsProperties": self.properties});
        let mut reader = self.stream("/query", &body, text)?;
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = write!(out, "{line}");
            let _ = out.flush();
            line.clear();
        }
        Ok(())
    }

    /// A push or pull query: the header, then each row as it arrives.
    fn query(&mut self, text: &str, out: &mut dyn Write) -> Result<(), Failure> {
        let body = json!({"sql": format!("{text};"), "properties": self.properties});
        let mut reader = self.stream("/query-stream", &body, text)?;
        // The response is read on its own thread so that Ctrl-C is seen while no row comes.
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    return;
                }
            }
        });
        let mut widths: Vec<usize> = Vec::new();
        // Asked once per query, so a resized terminal counts from the next one.
        let room = self.fit_to_terminal.then(terminal_width).flatten();
        let mut rows = 0usize;
        let mut query_id = None;
        loop {
            let line = match lines.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let interrupted = self
                        .interrupt
                        .as_ref()
                        .is_some_and(|f| f.swap(false, Ordering::SeqCst));
                    if interrupted {
                        // Closing the query ends its response, and its reading thread.
                        if let Some(id) = &query_id {
                            let _ = self.post("/close-query", &json!({"queryId": id}));
                        }
                        let _ = writeln!(out, "Query terminated");
                        break;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let value: Value = serde_json::from_str(line.trim())
                .map_err(|e| Failure(format!("a malformed row ({e}): {line}")))?;
            if query_id.is_none() {
                query_id = value.get("queryId").cloned();
            }
            if self.output == Output::Json {
                let _ = writeln!(out, "{value}");
            } else if let Some(names) = value.get("columnNames").and_then(Value::as_array) {
                // Columns at least as wide as their names; a row wider than its column
                // widens it from then on.
                let names: Vec<String> = names.iter().map(cell).collect();
                widths = names.iter().map(|n| n.chars().count().max(8)).collect();
                let shown = fit(&widths, room);
                let _ = writeln!(out, "{}", rule(&shown));
                let _ = writeln!(out, "{}", table_row(&names, &shown));
                let _ = writeln!(out, "{}", rule(&shown));
            } else if let Some(cells) = value.as_array() {
                let cells: Vec<String> = cells.iter().map(cell).collect();
                for (w, c) in widths.iter_mut().zip(&cells) {
                    *w = (*w).max(c.chars().count());
                }
                let _ = writeln!(out, "{}", table_row(&cells, &fit(&widths, room)));
                rows += 1;
            } else if let Some(message) = value.get("message").and_then(Value::as_str) {
                return Err(Failure(message.to_string()));
            }
            let _ = out.flush();
        }
        if self.output == Output::Tabular {
            let _ = writeln!(out, "{}", rule(&fit(&widths, room)));
            let _ = writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" });
        }
        Ok(())
    }

    /// A pull query's column names and rows, read whole.
    pub fn pull(&mut self, sql: &str) -> Result<(Vec<String>, Vec<Vec<Value>>), Failure> {
        let body = json!({"sql": sql, "properties": self.properties});
        let (status, text) = self.post("/query-stream", &body)?;
        if status != 200 {
            let reply: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(Failure(error_text(&reply, sql)));
        }
        let mut names = Vec::new();
        let mut rows = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .map_err(|e| Failure(format!("a malformed row ({e}): {line}")))?;
            match value {
                Value::Array(row) => rows.push(row),
                header => {
                    if let Some(message) = header.get("message").and_then(Value::as_str) {
                        return Err(Failure(message.to_string()));
                    }
                    names = header["columnNames"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(cell)
                        .collect();
                }
            }
        }
        Ok((names, rows))
    }

    /// POSTs a JSON body; any HTTP status is an answer, only no answer is a failure.
    fn send(&self, path: &str, body: &Value) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        self.agent
            .post(&format!("{}{path}", self.url))
            .send_json(body)
            .map_err(|e| Failure(format!("cannot reach {}: {e}", self.url)))
    }

    fn post(&self, path: &str, body: &Value) -> Result<(u16, String), Failure> {
        let resp = self.send(path, body)?;
        let status = resp.status().as_u16();
        let text = resp
            .into_body()
            .read_to_string()
            .map_err(|e| Failure(format!("cannot read the answer: {e}")))?;
        Ok((status, text))
    }

    /// The server's version and status, for the banner.
    pub fn server_info(&self) -> Result<String, Failure> {
        let resp = self
            .agent
            .get(&format!("{}/info", self.url))
            .call()
            .map_err(|e| Failure(format!("cannot reach {}: {e}", self.url)))?;
        let info: Value =
            serde_json::from_str(&resp.into_body().read_to_string().unwrap_or_default())
                .map_err(|e| Failure(format!("not a Sluice or ksqlDB server: {e}")))?;
        let i = &info["KsqlServerInfo"];
        Ok(format!(
            "server {} (service {}), {}",
            i["version"].as_str().unwrap_or("?"),
            i["ksqlServiceId"].as_str().unwrap_or("?"),
            i["serverStatus"].as_str().unwrap_or("?")
        ))
    }

    /// The interactive shell: statements continue over lines until `;`.
    pub fn interactive(&mut self, input: &mut dyn BufRead, out: &mut dyn Write) {
        let _ = writeln!(out, "{}", self.banner());
        let mut pending = String::new();
        loop {
            let _ = write!(
                out,
                "{}",
                if pending.is_empty() {
                    "sluice> "
                } else {
                    "     > "
                }
            );
            let _ = out.flush();
            let mut line = String::new();
            if input.read_line(&mut line).map(|n| n == 0).unwrap_or(true) {
                let _ = writeln!(out);
                return;
            }
            if pending.is_empty() {
                match self.shell_command(line.trim(), out, None) {
                    Some(ShellAction::Exit) => return,
                    Some(ShellAction::Done) => continue,
                    None => {}
                }
            }
            pending.push_str(&line);
            let (statements, rest) = split_statements(&pending);
            for stmt in statements {
                if let Err(e) = self.run(&stmt, out) {
                    let _ = writeln!(out, "{}", e.0);
                }
            }
            pending = rest.trim_start().to_string();
        }
    }
}

/// `'text'` -> `text` (with `''` read as `'`); unquoted text as it is.
fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .map(|s| s.replace("''", "'"))
        .unwrap_or_else(|| s.to_string())
}

/// Splits text into complete statements (without their `;`) and the unfinished rest.
/// Semicolons inside quotes (`'...'`, `` `...` ``, `"..."`) and comments (`-- ...`,
/// `/* ... */`) do not end a statement; comments are kept in the text.
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    let (ranges, start) = sluice_sql::script::split(text);
    let statements = ranges
        .into_iter()
        .map(|(s, e)| text[s..e].trim())
        .filter(|stmt| !strip_comments(stmt).trim().is_empty())
        .map(str::to_string)
        .collect();
    let rest = text.get(start..).unwrap_or_default();
    let rest = if strip_comments(rest).trim().is_empty() {
        String::new()
    } else {
        rest.to_string()
    };
    (statements, rest)
}

/// The statement from its first word on: comments and blank space before it removed.
fn without_leading_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return text.trim_end();
        }
    }
}

/// The text with `-- ...` line comments removed (to tell empty statements apart).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces `${name}` with the variable's value; an undefined one is an error.
pub fn substitute(text: &str, variables: &BTreeMap<String, String>) -> Result<String, Failure> {
    sluice_sql::script::substitute(text, variables).map_err(|e| {
        Failure(format!(
            "{e} (DEFINE it with DEFINE name = '...'; or --define name=...)"
        ))
    })
}

/// An error as the user should see it: the message, and for a located error the
/// statement's line with a caret under the position.
fn error_text(reply: &Value, statement: &str) -> String {
    let message = reply["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| reply.to_string());
    let (Some(line), Some(column)) = (
        reply["position"]["line"].as_u64(),
        reply["position"]["column"].as_u64(),
    ) else {
        return message;
    };
    let Some(text) = statement.lines().nth(line.saturating_sub(1) as usize) else {
        return message;
    };
    let caret = " ".repeat(column.saturating_sub(1) as usize);
    format!("{message}\n  {text}\n  {caret}^")
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn rule(widths: &[usize]) -> String {
    let parts: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    format!("+{}+", parts.join("+"))
}

/// A row's cells, padded to their columns' widths; a cell wider than its column is
/// cut, its end shown as `…`.
fn table_row(cells: &[String], widths: &[usize]) -> String {
    let parts: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| {
            if c.chars().count() > *w {
                let cut: String = c.chars().take(w.saturating_sub(1)).collect();
                format!(" {cut}… ")
            } else {
                format!(" {c:<w$} ")
            }
        })
        .collect();
    format!("|{}|", parts.join("|"))
}

/// Column widths that fit a table into `room` characters (borders included), taken
/// from the widest columns first and never below a few characters; all of them when
/// there is no limit or they fit.
fn fit(widths: &[usize], room: Option<usize>) -> Vec<usize> {
    const NARROWEST: usize = 4;
    let mut shown = widths.to_vec();
    let Some(room) = room else {
        return shown;
    };
    let total = |w: &[usize]| w.iter().map(|w| w + 3).sum::<usize>() + 1;
    while total(&shown) > room {
        let Some(widest) = (0..shown.len()).max_by_key(|i| shown[*i]) else {
            break;
        };
        if shown[widest] <= NARROWEST {
            break;
        }
        shown[widest] -= 1;
    }
    shown
}

/// The terminal's width in columns: `COLUMNS` when set, else what the terminal on
/// standard output says.
fn terminal_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(columns);
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct it is given, which lives
    // for the call; on an error (no terminal) it writes nothing and we return None.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// A table with a header row, columns sized to the data.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = format!(
        "{}\n{}\n{}\n",
        rule(&widths),
        table_row(&header, &widths),
        rule(&widths)
    );
    for r in rows {
        out.push_str(&table_row(r, &widths));
        out.push('\n');
    }
    out.push_str(&rule(&widths));
    out.push('\n');
    out
}

/// One `/ksql` entity as the shell shows it.
pub fn render_entity(e: &Value) -> String {
    let s = |v: &Value| cell(v);
    let list = |key: &str, columns: &[(&str, &str)]| -> String {
        let rows: Vec<Vec<String>> = e[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| columns.iter().map(|(_, field)| s(&item[*field])).collect())
            .collect();
        let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
        table(&header, &rows)
    };
    match e["@type"].as_str().unwrap_or_default() {
        "currentStatus" => format!(
            "{}\n",
            e["commandStatus"]["message"].as_str().unwrap_or_default()
        ),
        "warning_entity" => format!("{}\n", s(&e["message"])),
        "streams" => list(
            "streams",
            &[
                ("Stream Name", "name"),
                ("Kafka Topic", "topic"),
                ("Key Format", "keyFormat"),
                ("Value Format", "valueFormat"),
            ],
        ),
        "tables" => list(
            "tables",
            &[
                ("Table Name", "name"),
                ("Kafka Topic", "topic"),
                ("Key Format", "keyFormat"),
                ("Value Format", "valueFormat"),
            ],
        ),
        "queries" => list(
            "queries",
            &[
                ("Query ID", "id"),
                ("Query Type", "queryType"),
                ("Status", "state"),
                ("Query", "queryString"),
            ],
        ),
        "kafka_topics" => list(
            "topics",
            &[("Kafka Topic", "name"), ("Partitions", "replicaInfo")],
        ),
        "queryDescription" => {
            let d = &e["queryDescription"];
            let errors: String = d["queryErrors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|q| format!("Error ({}): {}\n", s(&q["type"]), s(&q["errorMessage"])))
                .collect();
            format!(
                "ID: {}\nState: {}\n{errors}Statement: {}\nSources: {}\nSinks: {}\nExecution plan:\n{}\n",
                s(&d["id"]),
                s(&d["state"]),
                s(&d["statementText"]),
                d["sources"],
                d["sinks"],
                s(&d["executionPlan"])
            )
        }
        "function_names" => list("functions", &[("Function Name", "name"), ("Type", "type")]),
        "describe_function" => {
            let rows: Vec<Vec<String>> = e["functions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let args: Vec<String> = v["argumentTypes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(cell)
                        .collect();
                    vec![format!("({})", args.join(", ")), s(&v["returnType"])]
                })
                .collect();
            format!(
                "Name: {}\nType: {}\n{}\n{}",
                s(&e["name"]),
                s(&e["type"]),
                s(&e["description"]),
                if rows.is_empty() {
                    String::new()
                } else {
                    table(&["Arguments", "Returns"], &rows)
                }
            )
        }
        "properties" => list(
            "properties",
            &[("Property", "name"), ("Scope", "scope"), ("Value", "value")],
        ),
        "sourceDescription" => {
            let d = &e["sourceDescription"];
            let rows: Vec<Vec<String>> = d["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let key = match f["type"].as_str() {
                        Some("KEY") => " (key)",
                        _ => "",
                    };
                    vec![s(&f["name"]), format!("{}{key}", s(&f["schema"]["type"]))]
                })
                .collect();
            format!(
                "Name: {}\nType: {}\nKafka topic: {}\n{}",
                s(&d["name"]),
                s(&d["type"]),
                s(&d["topic"]),
                table(&["Field", "Type"], &rows)
            )
        }
        "type_list" => {
            let rows: Vec<Vec<String>> = e["types"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, schema)| vec![name.clone(), type_text(schema)])
                .collect();
            table(&["Type Name", "Schema"], &rows)
        }
        "variables" => list(
            "variables",
            &[("Variable Name", "name"), ("Value", "value")],
        ),
        "assert_topic" => format!(
            "Topic {} {}.\n",
            s(&e["topicName"]),
            if e["exists"] == true {
                "exists"
            } else {
                "does not exist"
            }
        ),
        "assert_schema" => format!(
            "Schema {}{}{}.\n",
            e["subject"]
                .as_str()
                .map(|n| format!("subject {n} "))
                .unwrap_or_default(),
            e["id"]
                .as_i64()
                .map(|n| format!("id {n} "))
                .unwrap_or_default(),
            if e["exists"] == true {
                "exists"
            } else {
                "does not exist"
            }
        ),
        _ => format!("{e:#}\n"),
    }
}

/// A type as ksqlDB's schema JSON gives it, as SQL (`STRUCT<A INT>`).
fn type_text(schema: &Value) -> String {
    let t = schema["type"].as_str().unwrap_or_default();
    match t {
        "ARRAY" => format!("ARRAY<{}>", type_text(&schema["memberSchema"])),
        "MAP" => format!("MAP<STRING, {}>", type_text(&schema["memberSchema"])),
        "STRUCT" => {
            let fields: Vec<String> = schema["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{} {}", cell(&f["name"]), type_text(&f["schema"])))
                .collect();
            format!("STRUCT<{}>", fields.join(", "))
        }
        other => other.to_string(),
    }
}

/// `--define k=v` pairs.
pub fn parse_defines(defines: &[String]) -> Result<BTreeMap<String, String>, String> {
    defines
        .iter()
        .map(|d| {
            d.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| format!("--define expects name=value, got {d}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let (stmts, rest) = split_statements(
            "CREATE STREAM a (x STRING) WITH (kafka_topic='a;b');\n-- a comment; still one\nSELECT `c;d` FROM a /* ; */ EMIT CHANGES;\nSELECT 'it''s;' FROM a",
        );
        assert_eq!(
            stmts,
            [
                "CREATE STREAM a (x STRING) WITH (kafka_topic='a;b')",
                "-- a comment; still one\nSELECT `c;d` FROM a /* ; */ EMIT CHANGES",
            ]
        );
        assert_eq!(rest, "\nSELECT 'it''s;' FROM a");
        let (stmts, rest) = split_statements(";; -- only a comment\n");
        assert!(stmts.is_empty());
        assert_eq!(rest, "");
    }

    #[test]
    fn leading_comments_are_not_the_statement() {
        assert_eq!(
            without_leading_comments("-- a\n /* b */\n  DEFINE x = '1' "),
            "DEFINE x = '1'"
        );
        assert_eq!(without_leading_comments("-- only"), "");
    }

    #[test]
    fn variables_are_substituted_and_undefined_ones_refused() {
        let vars: BTreeMap<String, String> = [("topic".to_string(), "orders".to_string())].into();
        assert_eq!(
            substitute("WITH (kafka_topic='${topic}')", &vars).unwrap(),
            "WITH (kafka_topic='orders')"
        );
        assert!(substitute("${missing}", &vars).is_err());
        assert_eq!(parse_defines(&["a=b=c".into()]).unwrap()["a"], "b=c");
        assert!(parse_defines(&["nope".into()]).is_err());
    }

    #[test]
    fn wide_rows_fit_the_terminal() {
        let widths = [8, 40, 10];
        assert_eq!(fit(&widths, None), widths);
        assert_eq!(fit(&widths, Some(200)), widths);
        // 68 characters wide: the widest column gives up what does not fit.
        let shown = fit(&widths, Some(50));
        assert_eq!(shown, vec![8, 22, 10]);
        assert_eq!(rule(&shown).len(), 50);
        let row = table_row(&["u1".into(), "x".repeat(40), "short".into()], &shown);
        assert_eq!(row.chars().count(), 50);
        assert!(row.contains(&format!("{}… ", "x".repeat(21))), "{row}");
        // Never narrower than a few characters, even in a tiny terminal.
        assert_eq!(fit(&widths, Some(5)), vec![4, 4, 4]);
    }

    #[test]
    fn errors_point_at_their_position() {
        let reply =
            json!({"message": "NOPE does not exist.", "position": {"line": 2, "column": 6}});
        assert_eq!(
            error_text(&reply, "SELECT *\nFROM nope EMIT CHANGES"),
            "NOPE does not exist.\n  FROM nope EMIT CHANGES\n       ^"
        );
    }

    #[test]
    fn entities_render_as_tables() {
        let e = json!({
            "@type": "streams",
            "streams": [{"name": "CLICKS", "topic": "clicks", "keyFormat": "KAFKA", "valueFormat": "JSON"}],
        });
        assert_eq!(
            render_entity(&e),
            "+-------------+-------------+------------+--------------+\n\
             | Stream Name | Kafka Topic | Key Format | Value Format |\n\
             +-------------+-------------+------------+--------------+\n\
             | CLICKS      | clicks      | KAFKA      | JSON         |\n\
             +-------------+-------------+------------+--------------+\n"
        );
    }
}
