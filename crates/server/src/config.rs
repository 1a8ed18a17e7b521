//! The server's configuration file: `sluice server --config sluice.toml` (TOML), or a
//! ksqlDB `ksql-server.properties` file (Java properties, when the name ends in
//! `.properties`), so that a ksqlDB deployment's file carries over.
//!
//! Keys are Sluice's flag names (`bootstrap-servers`, `service-id`, ...) or the ksqlDB
//! property names for the same settings (`bootstrap.servers`, `ksql.service.id`,
//! `listeners`, `ksql.streams.state.dir`, ...); TOML tables flatten to dotted names
//! (`[ksql] service.id = "x"` is `ksql.service.id`). An unknown key is refused by name.
//! Command-line flags beat `SLUICE_<KEY>` environment variables, which beat the file.

use std::collections::BTreeMap;
use std::path::Path;

/// A configuration setting of `sluice server`, named by its flag.
pub struct Setting {
    /// The flag's name (`bootstrap-servers`), also accepted as a key.
    pub flag: &'static str,
    /// ksqlDB's property names for the same setting.
    pub aliases: &'static [&'static str],
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        flag: "bootstrap-servers",
        aliases: &["bootstrap.servers", "ksql.streams.bootstrap.servers"],
    },
    Setting {
        flag: "listen",
        aliases: &["listeners"],
    },
    Setting {
        flag: "advertised-listener",
        aliases: &["ksql.advertised.listener"],
    },
    Setting {
        flag: "service-id",
        aliases: &["ksql.service.id"],
    },
    Setting {
        flag: "state-dir",
        aliases: &["ksql.streams.state.dir", "state.dir"],
    },
    Setting {
        flag: "commit-interval-ms",
        aliases: &["commit.interval.ms", "ksql.streams.commit.interval.ms"],
    },
    Setting {
        flag: "processing-guarantee",
        aliases: &["processing.guarantee", "ksql.streams.processing.guarantee"],
    },
    Setting {
        flag: "cache-max-bytes",
        aliases: &[
            "cache.max.bytes.buffering",
            "ksql.streams.cache.max.bytes.buffering",
        ],
    },
    Setting {
        flag: "stream-threads",
        aliases: &["num.stream.threads", "ksql.streams.num.stream.threads"],
    },
    Setting {
        flag: "queries-file",
        aliases: &["ksql.queries.file"],
    },
    Setting {
        flag: "basic-auth",
        aliases: &[],
    },
    Setting {
        flag: "max-request-bytes",
        aliases: &[],
    },
    Setting {
        flag: "schema-registry-url",
        aliases: &["ksql.schema.registry.url"],
    },
    Setting {
        flag: "tls-cert",
        aliases: &[],
    },
    Setting {
        flag: "tls-key",
        aliases: &[],
    },
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: unknown configuration key '{key}'{hint}")]
    UnknownKey {
        path: String,
        key: String,
        hint: String,
    },
    #[error("{path}: '{key}' and '{other}' both set {flag}")]
    Conflict {
        path: String,
        key: String,
        other: String,
        flag: &'static str,
    },
}

/// Reads a configuration file into its settings' values, by flag name.
pub fn read(path: &Path) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let pairs = if path.extension().is_some_and(|e| e == "properties") {
        parse_properties(&text)
    } else {
        parse_toml(&text).map_err(|message| ConfigError::Syntax {
            path: shown.clone(),
            message,
        })?
    };
    let mut settings: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
    for (key, value) in pairs {
        let Some(setting) = SETTINGS
            .iter()
            .find(|s| s.flag == key || s.aliases.contains(&key.as_str()))
        else {
            let hint = closest(&key)
                .map(|k| format!(" (did you mean '{k}'?)"))
                .unwrap_or_default();
            return Err(ConfigError::UnknownKey {
                path: shown,
                key,
                hint,
            });
        };
        let value = match setting.flag {
            // ksqlDB's `listeners` is a URL list: the first one's address.
            "listen" => listen_address(&value),
            _ => value,
        };
        if let Some((other, _)) = settings.get(setting.flag) {
            return Err(ConfigError::Conflict {
                path: shown,
                key,
                other: other.clone(),
                flag: setting.flag,
            });
        }
        settings.insert(setting.flag, (key, value));
    }
    Ok(settings.into_iter().map(|(f, (_, v))| (f, v)).collect())
}

/// `http://0.0.0.0:8088,https://...` -> `0.0.0.0:8088`.
fn listen_address(value: &str) -> String {
    let first = value.split(',').next().unwrap_or_default().trim();
    first
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(first)
        .trim_end_matches('/')
        .to_string()
}

/// The known key nearest to an unknown one, when it is near.
fn closest(key: &str) -> Option<&'static str> {
    let keys = SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(s.flag).chain(s.aliases.iter().copied()));
    sluice_sql::error::closest(key, keys)
}

/// Java properties: `key=value` or `key: value` lines; `#` and `!` start comments.
fn parse_properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .map(|l| {
            let at = l.find(['=', ':']).unwrap_or(l.len());
            let (key, value) = l.split_at(at);
            let value = value.get(1..).unwrap_or_default();
            (key.trim().to_string(), value.trim().to_string())
        })
        .collect()
}

/// TOML, with tables flattened to dotted keys and every value as text.
fn parse_toml(text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut pairs = Vec::new();
    flatten("", &toml::Value::Table(table), &mut pairs)?;
    Ok(pairs)
}

fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        toml::Value::Integer(i) => out.push((prefix.to_string(), i.to_string())),
        toml::Value::Boolean(b) => out.push((prefix.to_string(), b.to_string())),
        toml::Value::Float(f) => out.push((prefix.to_string(), f.to_string())),
        other => {
            return Err(format!(
                "{prefix}: {} values are not settings",
                other.type_str()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn toml_takes_flag_names_and_ksqldb_names_in_tables() {
        let path = write(
            "a.toml",
            r#"
bootstrap.servers = "broker:9092"
listeners = "http://0.0.0.0:8088"
commit-interval-ms = 50
[ksql]
service.id = "orders"
"#,
        );
        let s = read(&path).unwrap();
        assert_eq!(s["bootstrap-servers"], "broker:9092");
        assert_eq!(s["listen"], "0.0.0.0:8088");
        assert_eq!(s["commit-interval-ms"], "50");
        assert_eq!(s["service-id"], "orders");
    }

    #[test]
    fn a_ksqldb_properties_file_carries_over() {
        let path = write(
            "ksql-server.properties",
            "# from ksqlDB\nbootstrap.servers=b:9092\nksql.service.id = svc\nksql.streams.processing.guarantee: at_least_once\n",
        );
        let s = read(&path).unwrap();
        assert_eq!(s["bootstrap-servers"], "b:9092");
        assert_eq!(s["service-id"], "svc");
        assert_eq!(s["processing-guarantee"], "at_least_once");
    }

    #[test]
    fn unknown_and_conflicting_keys_are_refused_by_name() {
        let e = read(&write("b.toml", "bootstrap.server = \"x\"\n")).unwrap_err();
        assert!(
            e.to_string().contains(
                "unknown configuration key 'bootstrap.server' (did you mean 'bootstrap.servers'?)"
            ),
            "{e}"
        );
        let e = read(&write(
            "c.properties",
            "bootstrap.servers=a\nbootstrap-servers=b\n",
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("'bootstrap-servers' and 'bootstrap.servers' both set"),
            "{e}"
        );
        let e = read(&write("d.toml", "listen = [1]\n")).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    }
}
