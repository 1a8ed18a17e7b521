//! HTTP Basic authentication and the request size limit.

use sluice_e2e::{Server, unique};

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
