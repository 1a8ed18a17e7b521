//! HTTP Basic authentication, the request size limit, and the REST API over TLS.

use sluice_e2e::{Server, bootstrap, eventually, free_port, sluice_bin, unique};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn post(server: &Server, auth: Option<&str>, body: &str) -> u16 {
    let mut req = ureq::post(&format!("{}/ksql", server.url))
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send(body)
        .expect("the server answers")
        .status()
        .as_u16()
}

#[test]
fn requests_need_credentials_and_a_bounded_body() {
    let server = Server::start_with(
        &unique("svc"),
        &[
            ("--basic-auth", "admin:s3cret"),
            ("--max-request-bytes", "2000"),
        ],
    );
    let show = r#"{"ksql": "SHOW STREAMS;"}"#;
    // "admin:s3cret" and "admin:wrong" in base64.
    let good = "Basic YWRtaW46czNjcmV0";
    let bad = "Basic YWRtaW46d3Jvbmc=";
    assert_eq!(post(&server, None, show), 401);
    assert_eq!(post(&server, Some(bad), show), 401);
    assert_eq!(post(&server, Some(good), show), 200);
    // The health check stays open for load balancers.
    let health = ureq::get(&format!("{}/healthcheck", server.url))
        .call()
        .expect("healthcheck");
    assert_eq!(health.status().as_u16(), 200);
    // A body over the limit is refused before it is read.
    let big = format!(r#"{{"ksql": "SHOW STREAMS; -- {}"}}"#, "x".repeat(5000));
    assert_eq!(post(&server, Some(good), &big), 413);
}

/// A self-signed certificate for localhost and 127.0.0.1, and its key, as PEM files.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    cert.set_serial_number(&serial).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&cert.x509v3_context(None, None))
        .unwrap();
    cert.append_extension(san).unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
}

/// GET `path` over TLS, trusting `ca` (None: the system's roots): the status and body,
/// or None when the connection or the handshake fails.
fn https_get(port: u16, ca: Option<&Path>, path: &str) -> Option<(u16, String)> {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut connector = SslConnector::builder(SslMethod::tls()).ok()?;
    if let Some(ca) = ca {
        connector.set_ca_file(ca).ok()?;
    }
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut tls = connector.build().connect("localhost", tcp).ok()?;
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

#[test]
fn the_rest_api_answers_over_tls_only_to_clients_that_trust_it() {
    let dir = std::env::temp_dir().join(unique("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let port = free_port();
    let mut child = std::process::Command::new(sluice_bin())
        .args(["server", "--bootstrap-servers", &bootstrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--service-id", &unique("svc")])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sluice starts");
    let (status, body) = eventually(Duration::from_secs(60), "the server over TLS", || {
        https_get(port, Some(&cert), "/info")
    });
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("KsqlServerInfo"), "{body}");
    // A client that does not trust the certificate, or speaks plain HTTP, gets nothing.
    assert_eq!(https_get(port, None, "/info"), None);
    let plain = ureq::get(&format!("http://127.0.0.1:{port}/info"))
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .call();
    assert!(plain.is_err(), "plain HTTP is not served: {plain:?}");
    // The shell talks to it when told to trust the certificate.
    let url = format!("https://localhost:{port}");
    let cli = |extra: &[&str]| {
        std::process::Command::new(sluice_bin())
            .args(["cli", &url])
            .args(extra)
            .args(["-e", "SHOW STREAMS;"])
            .output()
            .expect("sluice cli runs")
    };
    let trusted = cli(&["--tls-ca", cert.to_str().expect("a UTF-8 path")]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(
        !cli(&[]).status.success(),
        "the system roots do not trust it"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A client of one server of a cluster: its base URL, an HTTP client (over TLS, trusting
/// the servers' certificate) and the credentials it presents.
struct Client {
    base: String,
    agent: ureq::Agent,
    auth: Option<&'static str>,
}

impl Client {
    fn plain(server: &Server, auth: Option<&'static str>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: server.url.clone(),
            agent,
            auth,
        }
    }

    /// A client of `https://127.0.0.1:{port}` trusting the certificates of `ca`.
    fn tls(port: u16, ca: &Path) -> Client {
        use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider, parse_pem};
        let pem = std::fs::read(ca).expect("the certificate");
        let certs: Vec<_> = parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                _ => None,
            })
            .collect();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(RootCerts::new_with_certs(&certs))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        Client {
            base: format!("https://127.0.0.1:{port}"),
            agent,
            auth: None,
        }
    }

    /// A POST: the status and the body.
    fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let mut request = self.agent.post(&format!("{}{path}", self.base));
        if let Some(auth) = self.auth {
            request = request.header("authorization", auth);
        }
        let resp = request.send_json(body).expect("the server answers");
        let status = resp.status().as_u16();
        (status, resp.into_body().read_to_string().expect("a body"))
    }

    /// The sum of the samples of the /metrics family `name` whose labels contain
    /// `label`.
    fn metric(&self, name: &str, label: &str) -> f64 {
        let mut request = self.agent.get(&format!("{}/metrics", self.base));
        if let Some(auth) = self.auth {
            request = request.header("authorization", auth);
        }
        let text = request
            .call()
            .ok()
            .and_then(|r| r.into_body().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// On two servers of one service: a table over 4 partitions whose tasks both servers
/// hold; a scan on the first must be answered in part by the second (forwarded with
/// whatever the first must present to it) and never in its place.
fn a_scan_is_forwarded_to_the_other_owner(a: &Client, b: &Client) {
    use sluice_e2e::{Record, produce};
    let source = unique("fwd_src");
    let table = unique("fwd_table");
    for sql in [
        format!(
            "CREATE STREAM src (id STRING KEY, v INT) \
             WITH (kafka_topic='{source}', value_format='JSON', partitions=4);"
        ),
        format!(
            "CREATE TABLE latest WITH (kafka_topic='{table}') AS \
             SELECT id, LATEST_BY_OFFSET(v) AS v FROM src GROUP BY id EMIT CHANGES;"
        ),
    ] {
        let request = serde_json::json!({
            "ksql": sql,
            "streamsProperties": {"auto.offset.reset": "earliest"},
        });
        let (status, body) = a.post("/ksql", &request);
        assert_eq!(status, 200, "{sql}: {body}");
    }
    let records: Vec<Record> = (0..20)
        .map(|i| Record::new(Some(&format!("k{i}")), Some(&format!(r#"{{"V":{i}}}"#)), i))
        .collect();
    produce(&source, &records);
    let wait = Duration::from_secs(60);
    eventually(wait, "each server to hold some of the tasks", || {
        let held = |c: &Client| c.metric("sluice_query_tasks", "CTAS_LATEST");
        (held(a) >= 1.0 && held(b) >= 1.0).then_some(())
    });
    eventually(
        wait,
        "a scan forwarded to the other owner to see every row",
        || {
            let scan = serde_json::json!({"sql": "SELECT * FROM latest;", "properties": {}});
            let (status, body) = a.post("/query-stream", &scan);
            assert_eq!(status, 200, "{body}");
            let rows = body.lines().skip(1).filter(|l| l.starts_with('[')).count();
            let answered = a.metric("sluice_pull_forwarded_total", "\"answered\"");
            (rows == 20 && answered >= 1.0).then_some(())
        },
    );
    // Had the owner refused (no credentials, or a TLS handshake that failed), this
    // server would have answered for its partitions itself.
    assert_eq!(
        a.metric("sluice_pull_forwarded_total", "answered_here"),
        0.0
    );
}

#[test]
fn pull_queries_forwarded_to_the_owners_carry_the_clients_credentials() {
    let service = unique("svc");
    let flags = [("--basic-auth", "admin:s3cret"), ("--stream-threads", "1")];
    let a = Server::start_with(&service, &flags);
    let b = Server::start_with(&service, &flags);
    let auth = Some("Basic YWRtaW46czNjcmV0");
    a_scan_is_forwarded_to_the_other_owner(&Client::plain(&a, auth), &Client::plain(&b, auth));
}

#[test]
fn pull_queries_are_forwarded_over_tls() {
    let dir = std::env::temp_dir().join(unique("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let service = unique("svc");
    let log = std::fs::File::create(dir.join("servers.log")).unwrap();
    // Each advertises https://127.0.0.1:<port> (its listener's address), which the
    // certificate names.
    let start = |port: u16| {
        std::process::Command::new(sluice_bin())
            .args(["server", "--bootstrap-servers", &bootstrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--service-id", &service, "--stream-threads", "1"])
            .arg("--state-dir")
            .arg(dir.join(format!("state-{port}")))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("sluice starts")
    };
    let ports = [free_port(), free_port()];
    let mut children: Vec<_> = ports.iter().map(|p| start(*p)).collect();
    let clients: Vec<Client> = ports.iter().map(|p| Client::tls(*p, &cert)).collect();
    for c in &clients {
        eventually(Duration::from_secs(60), "the server over TLS", || {
            c.agent
                .get(&format!("{}/healthcheck", c.base))
                .call()
                .ok()
                .map(|_| ())
        });
    }
    a_scan_is_forwarded_to_the_other_owner(&clients[0], &clients[1]);
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
}
