//! A schema registry for the end-to-end tests: the part of Confluent Schema Registry's
//! REST API that producers and Sluice use (register under a subject, with references;
//! a schema by id; a subject's versions; delete a subject), kept in memory, on loopback.
//!
//! Confluent's registry itself is not on the package registries this project may use;
//! this stands in for it on the wire, so the tests exercise Sluice's HTTP client and the
//! framing other clients write.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Store {
    /// (schema type, text, references) by id - 1.
    schemas: Vec<(String, String, Value)>,
    /// (subject, id) in registration order.
    versions: Vec<(String, usize)>,
}

/// A running registry; it serves until the test process ends.
pub struct TestRegistry {
    pub url: String,
    store: Arc<Mutex<Store>>,
    /// While set, every request is answered 503, as by a registry that is down.
    down: Arc<AtomicBool>,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let store = Arc::new(Mutex::new(Store::default()));
        let down = Arc::new(AtomicBool::new(false));
        let (shared, is_down) = (store.clone(), down.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (store, down) = (shared.clone(), is_down.clone());
                std::thread::spawn(move || serve(stream, &store, &down));
            }
        });
        TestRegistry { url, store, down }
    }

    /// Takes the registry down (every request answered 503) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every subject with a version, in name order.
    pub fn subjects(&self) -> Vec<String> {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = s.versions.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

fn serve(stream: TcpStream, store: &Mutex<Store>, down: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = if down.load(Ordering::SeqCst) {
            (
                503,
                json!({"error_code": 50301, "message": "the registry is down"}),
            )
        } else {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            route(&mut s, &method, &path, &body)
        };
        let text = answer.to_string();
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({"error_code": 40401, "message": format!("{what} not found")}),
    )
}

fn route(s: &mut Store, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let segments: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, segments.as_slice()) {
        ("POST", ["subjects", subject, "versions"]) => {
            let Some(text) = body["schema"].as_str() else {
                return (422, json!({"error_code": 42201, "message": "no schema"}));
            };
            let ty = body["schemaType"].as_str().unwrap_or("AVRO").to_string();
            let refs = body.get("references").cloned().unwrap_or(json!([]));
            let id = match s
                .schemas
                .iter()
                .position(|(t, x, r)| *t == ty && x == text && *r == refs)
            {
                Some(i) => i + 1,
                None => {
                    s.schemas.push((ty, text.to_string(), refs));
                    s.schemas.len()
                }
            };
            if !s.versions.iter().any(|(n, i)| n == subject && *i == id) {
                s.versions.push((subject.to_string(), id));
            }
            (200, json!({"id": id}))
        }
        ("GET", ["schemas", "ids", id]) => match id
            .parse::<usize>()
            .ok()
            .and_then(|i| i.checked_sub(1).and_then(|i| s.schemas.get(i)))
        {
            Some((ty, text, refs)) => (
                200,
                json!({"schema": text, "schemaType": ty, "references": refs}),
            ),
            None => not_found("Schema"),
        },
        ("GET", ["subjects", subject, "versions", version]) => {
            let versions: Vec<usize> = s
                .versions
                .iter()
                .filter(|(n, _)| n == subject)
                .map(|(_, i)| *i)
                .collect();
            let number = match *version {
                "latest" => versions.len(),
                n => n.parse().unwrap_or(0),
            };
            match number.checked_sub(1).and_then(|i| versions.get(i)) {
                Some(id) => {
                    let (ty, text, refs) = &s.schemas[id - 1];
                    (
                        200,
                        json!({"subject": subject, "version": number, "id": id,
                            "schema": text, "schemaType": ty, "references": refs}),
                    )
                }
                None => not_found("Subject"),
            }
        }
        ("DELETE", ["subjects", subject]) => {
            let before = s.versions.len();
            s.versions.retain(|(n, _)| n != subject);
            if before == s.versions.len() {
                return not_found("Subject");
            }
            (200, json!([1]))
        }
        _ => not_found("Endpoint"),
    }
}
