//! `sluice migrate`: versioned SQL migrations applied through a server, for CI.
//!
//! A project is a directory with `sluice-migrations.properties` (the server's address
//! and the name of the migrations stream) and `migrations/V000001__name.sql`, ... Every
//! state change of a version (Running, Migrated, Error) is an event written with INSERT
//! ... VALUES to the stream `MIGRATION_EVENTS` in Kafka, through the server; the state
//! of a version is its latest event, read back with a pull query. So every CI runner
//! sees the same history, and a rerun applies nothing twice. `apply` holds a lock
//! (events keyed `LOCK`) while it runs.

use crate::cli::{Failure, Output, Session};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "sluice-migrations.properties";
const URL_KEY: &str = "sluice.server.url";
const STREAM_KEY: &str = "sluice.migrations.stream.name";
const TOPIC_KEY: &str = "sluice.migrations.topic.name";

/// A migrations project: its directory and settings.
pub struct Project {
    pub root: PathBuf,
    pub url: String,
    pub stream: String,
    pub topic: String,
}

/// A migration file: `V<version>__<name>.sql`.
#[derive(Clone, Debug)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub path: PathBuf,
    pub checksum: String,
}

/// What the events say about a version: its latest event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub state: String,
    pub name: String,
    pub checksum: String,
    pub started_on: String,
    pub completed_on: String,
    pub error: String,
}

/// Which pending migrations `apply` runs.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    All,
    Next,
    Version(u32),
}

/// Writes a new project: its config file and an empty `migrations/`.
pub fn new_project(dir: &Path, url: &str) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure(format!("cannot write {}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("migrations")).map_err(io)?;
    let config = dir.join(CONFIG_FILE);
    if config.exists() {
        return Err(Failure(format!("{} exists already", config.display())));
    }
    std::fs::write(
        &config,
        format!(
            "# Sluice migrations: the server the migrations run on, and where their history is kept.\n\
             {URL_KEY}={url}\n{STREAM_KEY}=MIGRATION_EVENTS\n{TOPIC_KEY}=sluice_migration_events\n"
        ),
    )
    .map_err(io)
}

/// FNV-1a, 64 bits, in hex: tells a changed file from the one that was applied.
pub fn checksum(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

impl Project {
    /// Reads the project whose config file is `config` (by default in the current
    /// directory).
    pub fn open(config: Option<&Path>) -> Result<Project, Failure> {
        let path = config
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(CONFIG_FILE));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Failure(format!(
                "cannot read {} ({e}); run `sluice migrate new-project DIR URL` first, or pass --config",
                path.display()
            ))
        })?;
        let mut props = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Failure(format!("{}: not key=value: {line}", path.display())))?;
            match k.trim() {
                key @ (URL_KEY | STREAM_KEY | TOPIC_KEY) => {
                    props.insert(key.to_string(), v.trim().to_string());
                }
                other => {
                    return Err(Failure(format!(
                        "{}: unknown setting {other}",
                        path.display()
                    )));
                }
            }
        }
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Project {
            root,
            url: props
                .remove(URL_KEY)
                .ok_or_else(|| Failure(format!("{}: {URL_KEY} is missing", path.display())))?,
            stream: props
                .remove(STREAM_KEY)
                .unwrap_or_else(|| "MIGRATION_EVENTS".into()),
            topic: props
                .remove(TOPIC_KEY)
                .unwrap_or_else(|| "sluice_migration_events".into()),
        })
    }

    /// The migration files, by version; two files with one version are an error.
    pub fn migrations(&self) -> Result<Vec<Migration>, Failure> {
        let dir = self.root.join("migrations");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Failure(format!("cannot read {}: {e}", dir.display())))?;
        let mut found: BTreeMap<u32, Migration> = BTreeMap::new();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((version, name)) = file
                .strip_suffix(".sql")
                .and_then(|f| f.strip_prefix('V'))
                .and_then(|f| f.split_once("__"))
            else {
                continue;
            };
            let Ok(version) = version.parse::<u32>() else {
                continue;
            };
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| Failure(format!("cannot read {file}: {e}")))?;
            let m = Migration {
                version,
                name: name.to_string(),
                path: entry.path(),
                checksum: checksum(&text),
            };
            if let Some(other) = found.insert(version, m) {
                return Err(Failure(format!(
                    "two migrations have version {version}: {} and {file}",
                    other.path.display()
                )));
            }
        }
        Ok(found.into_values().collect())
    }

    /// Writes the next migration file, `V<next>__<name>.sql`.
    pub fn create(&self, name: &str) -> Result<PathBuf, Failure> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Failure(format!(
                "a migration name is letters, digits and '_': {name}"
            )));
        }
        let next = self.migrations()?.last().map_or(1, |m| m.version + 1);
        let path = self
            .root
            .join("migrations")
            .join(format!("V{next:06}__{name}.sql"));
        std::fs::write(&path, format!("-- V{next:06}: {name}\n"))
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    /// A client of the server; an https:// server's certificate is checked against the
    /// system's roots, or against `SLUICE_TLS_CA` (a PEM file) when set.
    fn session(&self, defines: BTreeMap<String, String>) -> Result<Session, Failure> {
        let session = Session::new(&self.url, Output::Tabular, defines);
        match std::env::var_os("SLUICE_TLS_CA") {
            Some(ca) => session.with_tls_ca(std::path::Path::new(&ca)),
            None => Ok(session),
        }
    }

    /// Creates the migrations stream if it is missing.
    fn ensure_stream(&self, session: &mut Session) -> Result<(), Failure> {
        let sql = format!(
            "CREATE STREAM IF NOT EXISTS {} (VERSION_KEY STRING KEY, VERSION STRING, NAME STRING, \
             STATE STRING, CHECKSUM STRING, STARTED_ON STRING, COMPLETED_ON STRING, ERROR_REASON STRING) \
             WITH (KAFKA_TOPIC='{}', VALUE_FORMAT='JSON', PARTITIONS=1);",
            self.stream, self.topic
        );
        session.run_script(&sql, &mut std::io::sink())
    }

    /// Every version's latest event.
    pub fn history(&self, session: &mut Session) -> Result<BTreeMap<u32, Applied>, Failure> {
        self.ensure_stream(session)?;
        let (names, rows) = session.pull(&format!(
            "SELECT VERSION, NAME, STATE, CHECKSUM, STARTED_ON, COMPLETED_ON, ERROR_REASON FROM {};",
            self.stream
        ))?;
        let col = |row: &[Value], name: &str| -> String {
            names
                .iter()
                .position(|n| n == name)
                .and_then(|i| row.get(i))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut history = BTreeMap::new();
        for row in rows {
            let Ok(version) = col(&row, "VERSION").parse::<u32>() else {
                continue;
            };
            history.insert(
                version,
                Applied {
                    name: col(&row, "NAME"),
                    state: col(&row, "STATE"),
                    checksum: col(&row, "CHECKSUM"),
                    started_on: col(&row, "STARTED_ON"),
                    completed_on: col(&row, "COMPLETED_ON"),
                    error: col(&row, "ERROR_REASON"),
                },
            );
        }
        Ok(history)
    }

    fn record(
        &self,
        session: &mut Session,
        m: &Migration,
        applied: &Applied,
    ) -> Result<(), Failure> {
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let sql = format!(
            "INSERT INTO {} (VERSION_KEY, VERSION, NAME, STATE, CHECKSUM, STARTED_ON, COMPLETED_ON, ERROR_REASON) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {});",
            self.stream,
            q(&m.version.to_string()),
            q(&m.version.to_string()),
            q(&m.name),
            q(&applied.state),
            q(&m.checksum),
            q(&applied.started_on),
            q(&applied.completed_on),
            q(&applied.error),
        );
        session.run_script(&sql, &mut std::io::sink())
    }

    /// Applies the pending migrations `until` says, in version order, each recorded as
    /// Running and then Migrated (or Error, which stops the run). A migration that was
    /// applied and has changed since refuses the run.
    pub fn apply(
        &self,
        until: Until,
        dry_run: bool,
        defines: BTreeMap<String, String>,
        out: &mut dyn Write,
    ) -> Result<usize, Failure> {
        let mut session = self.session(defines.clone())?;
        self.ensure_stream(&mut session)?;
        let lock = self.lock(&mut session)?;
        let result = self.apply_locked(&mut session, until, dry_run, defines, out);
        self.unlock(&mut session, &lock)?;
        result
    }

    fn apply_locked(
        &self,
        session: &mut Session,
        until: Until,
        dry_run: bool,
        defines: BTreeMap<String, String>,
        out: &mut dyn Write,
    ) -> Result<usize, Failure> {
        let session = &mut *session;
        let history = self.history(session)?;
        let migrations = self.migrations()?;
        self.check_applied(&migrations, &history)?;
        let pending: Vec<&Migration> = migrations
            .iter()
            .filter(|m| {
                history
                    .get(&m.version)
                    .is_none_or(|a| a.state != "Migrated")
            })
            .filter(|m| match until {
                Until::Version(v) => m.version <= v,
                _ => true,
            })
            .take(if matches!(until, Until::Next) {
                1
            } else {
                usize::MAX
            })
            .collect();
        if pending.is_empty() {
            let _ = writeln!(out, "Nothing to apply: every migration is applied.");
            return Ok(0);
        }
        for m in &pending {
            let text = std::fs::read_to_string(&m.path)
                .map_err(|e| Failure(format!("cannot read {}: {e}", m.path.display())))?;
            if dry_run {
                let _ = writeln!(out, "would apply V{:06}__{}:\n{text}", m.version, m.name);
                continue;
            }
            let _ = writeln!(out, "applying V{:06}__{}", m.version, m.name);
            let started = now();
            let running = Applied {
                state: "Running".into(),
                started_on: started.clone(),
                ..Applied::default()
            };
            self.record(session, m, &running)?;
            // Each migration runs in a fresh session: its SET and DEFINE end with it.
            let mut script = self.session(defines.clone())?;
            match script.run_script(&text, out) {
                Ok(()) => {
                    let done = Applied {
                        state: "Migrated".into(),
                        completed_on: now(),
                        ..running
                    };
                    self.record(session, m, &done)?;
                }
                Err(e) => {
                    let failed = Applied {
                        state: "Error".into(),
                        error: e.0.clone(),
                        ..running
                    };
                    self.record(session, m, &failed)?;
                    return Err(Failure(format!(
                        "V{:06}__{} failed: {}",
                        m.version, m.name, e.0
                    )));
                }
            }
        }
        Ok(pending.len())
    }

    /// Takes the project's lock: an event keyed `LOCK` naming its owner and when it
    /// expires. The stream has one partition, so its events have one order, and the
    /// holder is the first claim after the last release (or expiry): of two runners
    /// claiming at once, the later claim gives way, whenever either reads.
    fn lock(&self, session: &mut Session) -> Result<String, Failure> {
        const HOLD_MS: i64 = 10 * 60 * 1000;
        if let Some((owner, expires)) = self.lock_holder(session)? {
            return Err(Failure(format!(
                "another apply holds the migrations lock ({owner}) until {}; try again later",
                utc_text(expires)
            )));
        }
        let owner = format!(
            "{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            now_ms()
        );
        self.write_lock(session, &owner, now_ms() + HOLD_MS)?;
        match self.lock_holder(session)? {
            Some((holder, _)) if holder == owner => Ok(owner),
            Some((holder, _)) => Err(Failure(format!(
                "another apply took the migrations lock first ({holder}); try again later"
            ))),
            None => Err(Failure("the migrations lock could not be read back".into())),
        }
    }

    fn unlock(&self, session: &mut Session, owner: &str) -> Result<(), Failure> {
        self.write_lock(session, owner, 0)
    }

    fn write_lock(&self, session: &mut Session, owner: &str, expires: i64) -> Result<(), Failure> {
        let sql = format!(
            "INSERT INTO {} (VERSION_KEY, NAME, STATE, CHECKSUM) VALUES ('LOCK', '{}', '{}', '{expires}');",
            self.stream,
            owner.replace('\'', "''"),
            if expires > 0 { "Locked" } else { "Released" }
        );
        session.run_script(&sql, &mut std::io::sink())
    }

    /// Who holds the lock now, and until when (epoch milliseconds): the first claim
    /// after the last release or expiry.
    fn lock_holder(&self, session: &mut Session) -> Result<Option<(String, i64)>, Failure> {
        let (_, rows) = session.pull(&format!(
            "SELECT NAME, STATE, CHECKSUM FROM {} WHERE VERSION_KEY = 'LOCK';",
            self.stream
        ))?;
        let now = now_ms();
        let mut holder: Option<(String, i64)> = None;
        for row in rows {
            let text = |i: usize| row.get(i).and_then(Value::as_str).unwrap_or_default();
            let (owner, state) = (text(0).to_string(), text(1));
            let expires: i64 = text(2).parse().unwrap_or(0);
            let free = holder.as_ref().is_none_or(|(_, until)| *until <= now);
            match state {
                "Locked" if free => holder = Some((owner, expires)),
                "Released" if holder.as_ref().is_some_and(|(h, _)| *h == owner) => holder = None,
                _ => {}
            }
        }
        Ok(holder.filter(|(_, until)| *until > now))
    }

    /// Applied migrations whose files changed or went away.
    fn check_applied(
        &self,
        migrations: &[Migration],
        history: &BTreeMap<u32, Applied>,
    ) -> Result<(), Failure> {
        let problems = self.problems(migrations, history);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Failure(problems.join("\n")))
        }
    }

    fn problems(&self, migrations: &[Migration], history: &BTreeMap<u32, Applied>) -> Vec<String> {
        let mut problems = Vec::new();
        for (version, applied) in history.iter().filter(|(_, a)| a.state == "Migrated") {
            match migrations.iter().find(|m| m.version == *version) {
                None => problems.push(format!(
                    "V{version:06}__{} was applied but its file is gone",
                    applied.name
                )),
                Some(m) if m.checksum != applied.checksum => problems.push(format!(
                    "V{version:06}__{} changed since it was applied (checksum {} now, {} applied)",
                    m.name, m.checksum, applied.checksum
                )),
                Some(_) => {}
            }
        }
        problems
    }

    /// Reports applied migrations whose files changed since.
    pub fn validate(&self, out: &mut dyn Write) -> Result<(), Failure> {
        let mut session = self.session(BTreeMap::new())?;
        let history = self.history(&mut session)?;
        self.check_applied(&self.migrations()?, &history)?;
        let _ = writeln!(out, "Every applied migration matches its file.");
        Ok(())
    }

    /// Every migration, with its state.
    pub fn info(&self, out: &mut dyn Write) -> Result<(), Failure> {
        let mut session = self.session(BTreeMap::new())?;
        let history = self.history(&mut session)?;
        let migrations = self.migrations()?;
        let mut versions: Vec<u32> = migrations.iter().map(|m| m.version).collect();
        versions.extend(history.keys());
        versions.sort();
        versions.dedup();
        let rows: Vec<Vec<String>> = versions
            .iter()
            .map(|v| {
                let file = migrations.iter().find(|m| m.version == *v);
                let applied = history.get(v).cloned().unwrap_or_default();
                vec![
                    format!("V{v:06}"),
                    file.map(|m| m.name.clone()).unwrap_or(applied.name.clone()),
                    if applied.state.is_empty() {
                        "Pending".into()
                    } else {
                        applied.state.clone()
                    },
                    file.map(|m| m.checksum.clone()).unwrap_or_default(),
                    applied.started_on.clone(),
                    applied.completed_on.clone(),
                    applied.error.clone(),
                ]
            })
            .collect();
        let _ = write!(
            out,
            "{}",
            crate::cli::table(
                &[
                    "Version",
                    "Name",
                    "State",
                    "Checksum",
                    "Started",
                    "Completed",
                    "Error"
                ],
                &rows
            )
        );
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time now, in RFC 3339 (UTC).
fn now() -> String {
    utc_text(now_ms())
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn utc_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_text(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_project_numbers_its_migrations_and_reads_them_back() {
        let dir = std::env::temp_dir().join(format!("sluice-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        new_project(&dir, "http://127.0.0.1:1").unwrap();
        assert!(new_project(&dir, "http://127.0.0.1:1").is_err());
        let project = Project::open(Some(&dir.join(CONFIG_FILE))).unwrap();
        assert_eq!(project.url, "http://127.0.0.1:1");
        let first = project.create("create_orders").unwrap();
        let second = project.create("add_totals").unwrap();
        assert!(first.ends_with("V000001__create_orders.sql"));
        assert!(second.ends_with("V000002__add_totals.sql"));
        assert!(project.create("bad name").is_err());
        let found = project.migrations().unwrap();
        assert_eq!(
            found
                .iter()
                .map(|m| (m.version, m.name.as_str()))
                .collect::<Vec<_>>(),
            [(1, "create_orders"), (2, "add_totals")]
        );
        assert_ne!(checksum("a"), checksum("b"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
