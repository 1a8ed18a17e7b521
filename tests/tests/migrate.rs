//! `sluice migrate` as a CI job runs it: a project applied step by step against a real
//! server, its history kept in Kafka.

use sluice_e2e::{Server, sluice_bin, unique};
use std::path::Path;
use std::process::Command;

fn migrate(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(sluice_bin())
        .current_dir(dir)
        .arg("migrate")
        .args(args)
        .output()
        .expect("sluice migrate runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The state `info` shows for a version.
fn state(dir: &Path, version: &str) -> String {
    let (ok, text) = migrate(dir, &["info"]);
    assert!(ok, "{text}");
    text.lines()
        .find(|l| l.contains(version))
        .and_then(|l| l.split('|').nth(3))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no {version} in:\n{text}"))
}

#[test]
fn migrations_apply_in_order_once_and_report_changes() {
    let server = Server::start(&unique("svc"));
    let dir = std::env::temp_dir().join(unique("migrations"));
    let (ok, text) = migrate(
        Path::new("/"),
        &["new-project", dir.to_str().unwrap(), &server.url],
    );
    assert!(ok, "{text}");
    // Each test run keeps its history in its own stream and topic.
    let config = dir.join("sluice-migrations.properties");
    let events = unique("events");
    let settings = std::fs::read_to_string(&config)
        .unwrap()
        .replace("=MIGRATION_EVENTS", &format!("={}", events.to_uppercase()))
        .replace("=sluice_migration_events", &format!("={events}"));
    std::fs::write(&config, settings).unwrap();

    let topic = unique("orders");
    for name in ["create_orders", "big_orders", "broken"] {
        let (ok, text) = migrate(&dir, &["create", name]);
        assert!(ok, "{text}");
    }
    let file = |v: &str, name: &str| dir.join("migrations").join(format!("V{v}__{name}.sql"));
    std::fs::write(
        file("000001", "create_orders"),
        "CREATE STREAM orders (id STRING KEY, amount INT)\n  WITH (kafka_topic='${topic}', value_format='JSON', partitions=1);\n",
    )
    .unwrap();
    std::fs::write(
        file("000002", "big_orders"),
        "CREATE STREAM big_orders WITH (kafka_topic='${topic}_big') AS SELECT id, amount FROM orders WHERE amount > 100;\n",
    )
    .unwrap();
    std::fs::write(
        file("000003", "broken"),
        "CREATE STREAM broken AS SELECT nope FROM orders;\n",
    )
    .unwrap();
    let define = format!("topic={topic}");

    // --next applies one version.
    let (ok, text) = migrate(&dir, &["apply", "--next", "--define", &define]);
    assert!(ok, "{text}");
    assert_eq!(state(&dir, "V000001"), "Migrated");
    assert_eq!(state(&dir, "V000002"), "Pending");
    // A dry run runs nothing.
    let (ok, text) = migrate(&dir, &["apply", "--all", "--dry-run", "--define", &define]);
    assert!(
        ok && text.contains("would apply V000002__big_orders"),
        "{text}"
    );
    assert_eq!(state(&dir, "V000002"), "Pending");
    // Without saying which, apply refuses; outside a project every command fails.
    let (ok, text) = migrate(&dir, &["apply"]);
    assert!(!ok && text.contains("--all, --next or --until"), "{text}");
    for args in [
        &["info"][..],
        &["validate"],
        &["create", "x"],
        &["apply", "--all"],
    ] {
        let (ok, text) = migrate(Path::new("/"), args);
        assert!(!ok, "{args:?} outside a project: {text}");
    }
    // --until applies up to a version, that one included.
    let (ok, text) = migrate(&dir, &["apply", "--until", "2", "--define", &define]);
    assert!(ok, "{text}");
    assert_eq!(state(&dir, "V000002"), "Migrated");
    assert_eq!(state(&dir, "V000003"), "Pending");
    // --all applies the rest, and stops at the one that fails, with an error.
    let (ok, text) = migrate(&dir, &["apply", "--all", "--define", &define]);
    assert!(!ok, "{text}");
    assert!(text.contains("V000003__broken failed"), "{text}");
    assert_eq!(state(&dir, "V000002"), "Migrated");
    assert_eq!(state(&dir, "V000003"), "Error");
    let (status, body) = server.ksql("DESCRIBE big_orders;");
    assert_eq!(status, 200, "{body}");

    // Fixed, it applies; then nothing is left and a rerun applies nothing.
    std::fs::write(
        file("000003", "broken"),
        "CREATE STREAM not_broken WITH (kafka_topic='${topic}_not_broken') AS SELECT id, amount FROM orders;\n",
    )
    .unwrap();
    let (ok, text) = migrate(&dir, &["apply", "--all", "--define", &define]);
    assert!(ok, "{text}");
    assert_eq!(state(&dir, "V000003"), "Migrated");
    let (ok, text) = migrate(&dir, &["apply", "--all"]);
    assert!(ok && text.contains("Nothing to apply"), "{text}");
    let (ok, text) = migrate(&dir, &["validate"]);
    assert!(ok, "{text}");

    // While another runner holds the lock, apply waits its turn; an expired lock is
    // taken over.
    let future = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 600_000;
    let lock_event = |state: &str, expires: u128| {
        let (status, body) = server.ksql(&format!(
            "INSERT INTO {} (VERSION_KEY, NAME, STATE, CHECKSUM) VALUES ('LOCK', 'ci-runner-2', '{state}', '{expires}');",
            events.to_uppercase()
        ));
        assert_eq!(status, 200, "{body}");
    };
    lock_event("Locked", future);
    let (ok, text) = migrate(&dir, &["apply", "--all"]);
    assert!(
        !ok && text.contains("holds the migrations lock (ci-runner-2)"),
        "{text}"
    );
    // The holder's release frees it.
    lock_event("Released", 0);
    let (ok, text) = migrate(&dir, &["apply", "--all"]);
    assert!(ok && text.contains("Nothing to apply"), "{text}");
    // An expired claim is no lock.
    lock_event("Locked", 1);
    let (ok, text) = migrate(&dir, &["apply", "--all"]);
    assert!(ok, "{text}");

    // An applied file that changes is reported, and stops apply.
    std::fs::write(file("000001", "create_orders"), "-- edited\n").unwrap();
    let (ok, text) = migrate(&dir, &["validate"]);
    assert!(
        !ok && text.contains("V000001__create_orders changed since it was applied"),
        "{text}"
    );
    let (ok, _) = migrate(&dir, &["apply", "--all"]);
    assert!(!ok);
}
