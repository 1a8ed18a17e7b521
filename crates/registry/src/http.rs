//! A client of a Confluent-compatible schema registry's REST API.

use crate::{
    RegisteredSchema, RegistryError, Result, SchemaReference, SchemaRegistry, SchemaType,
    resolve_imports,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Talks to the registry at `url`; schemas by id are cached (an id never changes).
pub struct HttpRegistry {
    url: String,
    agent: ureq::Agent,
    by_id: Mutex<HashMap<i32, RegisteredSchema>>,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl HttpRegistry {
    pub fn new(url: &str) -> HttpRegistry {
        HttpRegistry {
            url: url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Sends a request; `Ok(None)` for 404 (an unknown subject or id).
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Option<Value>> {
        let url = format!("{}{path}", self.url);
        let failed =
            |e: &dyn std::fmt::Display| RegistryError::Http(format!("{method} {url}: {e}"));
        let resp = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Content-Type", CONTENT_TYPE)
                .send(b.to_string()),
            ("DELETE", _) => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        }
        .map_err(|e| failed(&e))?;
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().map_err(|e| failed(&e))?;
        if status == 404 {
            return Ok(None);
        }
        if status >= 300 {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(failed(&format!("HTTP {status}: {message}")));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| failed(&e))
    }
}

fn schema_of(v: &Value) -> Result<RegisteredSchema> {
    let text = v["schema"]
        .as_str()
        .ok_or_else(|| RegistryError::Http(format!("a schema without text: {v}")))?;
    // The registry leaves `schemaType` out for AVRO.
    let schema_type = v["schemaType"]
        .as_str()
        .and_then(SchemaType::parse)
        .unwrap_or(SchemaType::Avro);
    Ok(RegisteredSchema {
        references: v["references"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| SchemaReference {
                name: r["name"].as_str().unwrap_or_default().to_string(),
                subject: r["subject"].as_str().unwrap_or_default().to_string(),
                version: r["version"].as_i64().unwrap_or(1) as i32,
            })
            .collect(),
        ..RegisteredSchema::new(schema_type, text)
    })
}

/// Subjects can hold `/` and other characters a path cannot.
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl HttpRegistry {
    /// A version of a subject (`latest` or a number), as stored.
    fn subject_version(
        &self,
        subject: &str,
        version: &str,
    ) -> Result<Option<(i32, RegisteredSchema)>> {
        let path = format!("/subjects/{}/versions/{version}", encode(subject));
        let Some(answer) = self.request("GET", &path, None)? else {
            return Ok(None);
        };
        let id = answer["id"]
            .as_i64()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| RegistryError::Http(format!("{subject} version {version}: {answer}")))?;
        Ok(Some((id, schema_of(&answer)?)))
    }
}

impl std::fmt::Debug for HttpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpRegistry({})", self.url)
    }
}

impl SchemaRegistry for HttpRegistry {
    fn register(&self, subject: &str, schema: &RegisteredSchema) -> Result<i32> {
        let mut body = json!({"schema": schema.text});
        if schema.schema_type != SchemaType::Avro {
            body["schemaType"] = json!(schema.schema_type.name());
        }
        if !schema.references.is_empty() {
            body["references"] = schema
                .references
                .iter()
                .map(|r| json!({"name": r.name, "subject": r.subject, "version": r.version}))
                .collect();
        }
        let answer = self
            .request(
                "POST",
                &format!("/subjects/{}/versions", encode(subject)),
                Some(&body),
            )?
            .ok_or_else(|| {
                RegistryError::Http(format!("registering under {subject}: not found"))
            })?;
        let id = answer["id"]
            .as_i64()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| RegistryError::Http(format!("registering under {subject}: {answer}")))?;
        // Not cached here: a schema by id is cached with its imports resolved, which
        // only a lookup does.
        Ok(id)
    }

    fn schema(&self, id: i32) -> Result<RegisteredSchema> {
        if let Some(s) = self.by_id.lock().expect("cache lock").get(&id) {
            return Ok(s.clone());
        }
        let answer = self
            .request("GET", &format!("/schemas/ids/{id}"), None)?
            .ok_or(RegistryError::IdNotFound(id))?;
        let mut schema = schema_of(&answer)?;
        resolve_imports(self, &mut schema)?;
        self.by_id
            .lock()
            .expect("cache lock")
            .insert(id, schema.clone());
        Ok(schema)
    }

    fn latest(&self, subject: &str) -> Result<Option<(i32, RegisteredSchema)>> {
        let Some((id, mut schema)) = self.subject_version(subject, "latest")? else {
            return Ok(None);
        };
        resolve_imports(self, &mut schema)?;
        Ok(Some((id, schema)))
    }

    fn version(&self, subject: &str, version: i32) -> Result<Option<(i32, RegisteredSchema)>> {
        self.subject_version(subject, &version.to_string())
    }

    fn delete_subject(&self, subject: &str) -> Result<()> {
        self.request("DELETE", &format!("/subjects/{}", encode(subject)), None)?;
        Ok(())
    }
}
