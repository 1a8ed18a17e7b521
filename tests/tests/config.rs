//! `sluice server --config FILE`: a TOML file or a ksqlDB properties file sets what the
//! flags set; flags win; an unknown key stops the server with its name.

use sluice_e2e::{Server, sluice_bin, unique};

/// The server's properties as SHOW PROPERTIES lists them.
fn properties(server: &Server) -> Vec<(String, String)> {
    let shown = server.ok("SHOW PROPERTIES;");
    shown[0]["properties"]
        .as_array()
        .expect("properties")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn value(props: &[(String, String)], name: &str) -> String {
    props
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {props:?}"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("sluice-config"));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the file is written");
    path
}

#[test]
fn a_ksqldb_properties_file_and_a_toml_file_configure_the_server() {
    let properties_file = write(
        "ksql-server.properties",
        "ksql.streams.processing.guarantee=at_least_once\nksql.streams.commit.interval.ms=250\n",
    );
    let path = properties_file.display().to_string();
    let server = Server::start_with(&unique("svc"), &[("--config", &path)]);
    let props = properties(&server);
    assert_eq!(
        value(&props, "ksql.streams.processing.guarantee"),
        "at_least_once"
    );
    assert_eq!(value(&props, "ksql.streams.commit.interval.ms"), "250");
    drop(server);

    // A flag beats the file.
    let toml = write(
        "sluice.toml",
        "commit-interval-ms = 300\n[ksql.streams]\ncache.max.bytes.buffering = 1024\n",
    );
    let path = toml.display().to_string();
    let server = Server::start_with(
        &unique("svc"),
        &[("--config", &path), ("--commit-interval-ms", "40")],
    );
    let props = properties(&server);
    assert_eq!(value(&props, "ksql.streams.commit.interval.ms"), "40");
    assert_eq!(
        value(&props, "ksql.streams.cache.max.bytes.buffering"),
        "1024"
    );
}

#[test]
fn an_unknown_key_stops_the_server_with_its_name() {
    let file = write("bad.toml", "ksql.service.idd = \"x\"\n");
    let out = std::process::Command::new(sluice_bin())
        .args(["server", "--config"])
        .arg(&file)
        .output()
        .expect("sluice runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "unknown configuration key 'ksql.service.idd' (did you mean 'ksql.service.id'?)"
        ),
        "{stderr}"
    );
}
