//! Schema-registry formats: AVRO, JSON_SR (and the registry PROTOBUF will use).
//!
//! - [`SchemaRegistry`]: where schemas live, by subject (`<topic>-key`, `<topic>-value`)
//!   and by id. [`MemoryRegistry`] serves the test driver; [`HttpRegistry`] talks to a
//!   Confluent-compatible registry (`ksql.schema.registry.url`).
//! - [`avro`]: Avro schemas and Avro's binary encoding.
//! - [`base64`]: how BYTES travel as text.
//! - [`translate`]: SQL columns to the schemas ksqlDB registers, and registered schemas
//!   back to columns (schema inference).
//!
//! Records of these formats carry the Confluent framing: a zero byte, the writer
//! schema's id (4 bytes, big-endian), then the payload.

pub mod avro;
pub mod base64;
mod http;
pub mod protobuf;
pub mod translate;

pub use http::HttpRegistry;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found in the schema registry")]
    SubjectNotFound(String),
    #[error("Schema {0} not found in the schema registry")]
    IdNotFound(i32),
    #[error("schema registry request failed: {0}")]
    Http(String),
    #[error("{0}")]
    Schema(String),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The kind of a registered schema, as the registry names it (`schemaType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaType {
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    pub fn parse(name: &str) -> Option<SchemaType> {
        match name.to_ascii_uppercase().as_str() {
            "AVRO" => Some(SchemaType::Avro),
            "JSON" => Some(SchemaType::Json),
            "PROTOBUF" => Some(SchemaType::Protobuf),
            _ => None,
        }
    }
}

/// A schema as the registry stores it: its kind, its text, and the schemas it imports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredSchema {
    pub schema_type: SchemaType,
    pub text: String,
    /// Other registered schemas this one refers to (a `.proto` file's imports).
    pub references: Vec<SchemaReference>,
    /// The referenced schemas' texts by import name, with theirs in turn: filled in by
    /// the registry's lookups, so a schema can be parsed without asking again.
    pub imports: BTreeMap<String, String>,
}

/// A reference from one schema to a version of a subject, under an import name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

impl RegisteredSchema {
    pub fn new(schema_type: SchemaType, text: impl Into<String>) -> RegisteredSchema {
        RegisteredSchema {
            schema_type,
            text: text.into(),
            references: Vec::new(),
            imports: BTreeMap::new(),
        }
    }

    /// The same schema as the registry tells them apart: kind, text and references.
    pub fn same_as(&self, other: &RegisteredSchema) -> bool {
        self.schema_type == other.schema_type
            && self.text == other.text
            && self.references == other.references
    }
}

/// Where schemas are registered and looked up.
pub trait SchemaRegistry: Send + Sync + std::fmt::Debug {
    /// Registers `schema` under `subject` (a new version unless it is already there) and
    /// returns its id.
    fn register(&self, subject: &str, schema: &RegisteredSchema) -> Result<i32>;
    /// The schema with this id.
    fn schema(&self, id: i32) -> Result<RegisteredSchema>;
    /// The latest version under `subject`, with its id; `None` when the subject is unknown.
    fn latest(&self, subject: &str) -> Result<Option<(i32, RegisteredSchema)>>;
    /// Removes a subject and its versions (DROP ... DELETE TOPIC).
    fn delete_subject(&self, subject: &str) -> Result<()>;
    /// Version `version` (from 1) of `subject`, with its id, as stored: its imports are
    /// not resolved (see `resolve_imports`).
    fn version(&self, subject: &str, version: i32) -> Result<Option<(i32, RegisteredSchema)>>;
}

/// Fills in the texts of the schemas `schema` refers to, and of theirs in turn. A
/// reference cycle ends where an import name was seen.
pub fn resolve_imports(registry: &dyn SchemaRegistry, schema: &mut RegisteredSchema) -> Result<()> {
    let mut pending: Vec<SchemaReference> = schema.references.clone();
    let mut fetched = 0;
    while let Some(r) = pending.pop() {
        if schema.imports.contains_key(&r.name) {
            continue;
        }
        fetched += 1;
        if fetched > 256 {
            return Err(RegistryError::Schema(
                "schema references nest too deep".into(),
            ));
        }
        let (_, referenced) = registry.version(&r.subject, r.version)?.ok_or_else(|| {
            RegistryError::SubjectNotFound(format!("{} version {}", r.subject, r.version))
        })?;
        pending.extend(referenced.references.iter().cloned());
        schema.imports.insert(r.name.clone(), referenced.text);
    }
    Ok(())
}

/// Whether the registry has a schema under `subject` (any version, the one with `id`
/// when given), or with `id` under any subject. An unreachable registry has none.
pub fn has_schema(registry: &dyn SchemaRegistry, subject: Option<&str>, id: Option<i32>) -> bool {
    match (subject, id) {
        (Some(s), None) => matches!(registry.latest(s), Ok(Some(_))),
        (Some(s), Some(id)) => (1..)
            .map_while(|v| registry.version(s, v).ok().flatten())
            .any(|(found, _)| found == id),
        (None, Some(id)) => registry.schema(id).is_ok(),
        (None, None) => false,
    }
}

/// The registry subject of a topic's keys or values (Confluent's TopicNameStrategy).
pub fn subject(topic: &str, is_key: bool) -> String {
    format!("{topic}-{}", if is_key { "key" } else { "value" })
}

/// The first byte of a framed record.
pub const MAGIC_BYTE: u8 = 0;

/// Splits a framed record into its schema id and payload.
pub fn unframe(bytes: &[u8]) -> Result<(i32, &[u8]), String> {
    match bytes {
        [MAGIC_BYTE, a, b, c, d, rest @ ..] => Ok((i32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [] | [MAGIC_BYTE, ..] => Err(format!(
            "Size of data received is not valid: {} bytes, a schema registry record needs at least 5",
            bytes.len()
        )),
        _ => Err("Unknown magic byte!".into()),
    }
}

/// Starts a framed record for schema `id` in `out` (cleared first).
pub fn frame(id: i32, out: &mut Vec<u8>) {
    out.clear();
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&id.to_be_bytes());
}

/// A registry in memory: the test driver's, and for servers without a registry URL
/// that run only other formats.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    /// Schemas by id.
    by_id: BTreeMap<i32, RegisteredSchema>,
    /// Ids of each subject's versions, oldest first.
    subjects: BTreeMap<String, Vec<i32>>,
}

impl MemoryRegistry {
    pub fn new() -> MemoryRegistry {
        MemoryRegistry::default()
    }

    /// Registers `schema` under `subject` with a chosen id (a test case's `valueSchemaId`).
    pub fn register_with_id(&self, subject: &str, id: i32, schema: &RegisteredSchema) {
        let mut m = self.inner.lock().expect("registry lock");
        m.by_id.insert(id, schema.clone());
        m.subjects.entry(subject.to_string()).or_default().push(id);
    }

    /// Every subject registered, in name order.
    pub fn subjects(&self) -> Vec<String> {
        let m = self.inner.lock().expect("registry lock");
        m.subjects.keys().cloned().collect()
    }
}

impl SchemaRegistry for MemoryRegistry {
    fn register(&self, subject: &str, schema: &RegisteredSchema) -> Result<i32> {
        let mut m = self.inner.lock().expect("registry lock");
        let schema = &RegisteredSchema {
            imports: BTreeMap::new(),
            ..schema.clone()
        };
        let same = |id: &i32, m: &Memory| m.by_id.get(id).is_some_and(|s| s.same_as(schema));
        if let Some(id) = m
            .subjects
            .get(subject)
            .and_then(|ids| ids.iter().find(|id| same(id, &m)))
        {
            return Ok(*id);
        }
        // The registry gives a schema the same id under every subject.
        let id = match m.by_id.iter().find(|(_, s)| s.same_as(schema)) {
            Some((id, _)) => *id,
            None => m.by_id.keys().next_back().map_or(1, |last| last + 1),
        };
        m.by_id.insert(id, schema.clone());
        m.subjects.entry(subject.to_string()).or_default().push(id);
        Ok(id)
    }

    fn schema(&self, id: i32) -> Result<RegisteredSchema> {
        let mut found = {
            let m = self.inner.lock().expect("registry lock");
            m.by_id
                .get(&id)
                .cloned()
                .ok_or(RegistryError::IdNotFound(id))?
        };
        resolve_imports(self, &mut found)?;
        Ok(found)
    }

    fn latest(&self, subject: &str) -> Result<Option<(i32, RegisteredSchema)>> {
        let count = {
            let m = self.inner.lock().expect("registry lock");
            m.subjects.get(subject).map_or(0, Vec::len)
        };
        let Some((id, mut schema)) = self.version(subject, count as i32)? else {
            return Ok(None);
        };
        resolve_imports(self, &mut schema)?;
        Ok(Some((id, schema)))
    }

    fn version(&self, subject: &str, version: i32) -> Result<Option<(i32, RegisteredSchema)>> {
        let found = {
            let m = self.inner.lock().expect("registry lock");
            usize::try_from(version - 1)
                .ok()
                .and_then(|v| m.subjects.get(subject).and_then(|ids| ids.get(v)))
                .map(|id| (*id, m.by_id[id].clone()))
        };
        Ok(found)
    }

    fn delete_subject(&self, subject: &str) -> Result<()> {
        let mut m = self.inner.lock().expect("registry lock");
        m.subjects.remove(subject);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> RegisteredSchema {
        RegisteredSchema::new(SchemaType::Avro, text)
    }

    #[test]
    fn a_schema_s_imports_are_resolved_through_its_references() {
        let r = MemoryRegistry::new();
        let event = RegisteredSchema::new(SchemaType::Protobuf, "message Event {}");
        r.register("event.proto", &event).unwrap();
        let main = RegisteredSchema {
            references: vec![SchemaReference {
                name: "event.proto".into(),
                subject: "event.proto".into(),
                version: 1,
            }],
            ..RegisteredSchema::new(SchemaType::Protobuf, "import \"event.proto\";")
        };
        let id = r.register("t-value", &main).unwrap();
        let found = r.schema(id).unwrap();
        assert_eq!(found.imports["event.proto"], "message Event {}");
        assert_eq!(r.latest("t-value").unwrap().unwrap().1, found);
        assert_eq!(r.version("t-value", 2).unwrap(), None);
    }

    #[test]
    fn a_reference_cycle_ends() {
        let r = MemoryRegistry::new();
        let refer = |to: &str, text: &str| RegisteredSchema {
            references: vec![SchemaReference {
                name: to.into(),
                subject: to.into(),
                version: 1,
            }],
            ..RegisteredSchema::new(SchemaType::Protobuf, text)
        };
        r.register("a", &refer("b", "A")).unwrap();
        let id = r.register("b", &refer("a", "B")).unwrap();
        let b = r.schema(id).unwrap();
        assert_eq!(b.imports.len(), 2, "{:?}", b.imports);
    }

    #[test]
    fn a_schema_keeps_its_id_across_subjects_and_versions_grow() {
        let r = MemoryRegistry::new();
        assert_eq!(r.register("a-value", &avro("\"int\"")).unwrap(), 1);
        assert_eq!(r.register("a-value", &avro("\"int\"")).unwrap(), 1);
        assert_eq!(r.register("b-value", &avro("\"int\"")).unwrap(), 1);
        assert_eq!(r.register("a-value", &avro("\"long\"")).unwrap(), 2);
        assert_eq!(r.latest("a-value").unwrap().unwrap().0, 2);
        assert_eq!(r.latest("c-value").unwrap(), None);
        assert_eq!(r.schema(1).unwrap(), avro("\"int\""));
        r.delete_subject("a-value").unwrap();
        assert_eq!(r.latest("a-value").unwrap(), None);
    }

    #[test]
    fn framing_round_trips_and_refuses_other_bytes() {
        let mut out = Vec::new();
        frame(258, &mut out);
        out.push(7);
        assert_eq!(unframe(&out).unwrap(), (258, &[7u8][..]));
        assert!(unframe(&[1, 0, 0, 0, 1]).unwrap_err().contains("magic"));
        assert!(unframe(&[0, 0]).is_err());
    }
}
