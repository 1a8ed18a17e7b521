//! `sluice cli` run as CI runs it: scripts with -f and -e against a real server.

use sluice_e2e::{Record, Server, produce, sluice_bin, unique};
use std::process::Command;

fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(sluice_bin())
        .arg("cli")
        .arg(&server.url)
        .args(args)
        .output()
        .expect("sluice cli runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_script_runs_in_order_with_variables_and_session_properties() {
    let server = Server::start(&unique("svc"));
    let topic = unique("cli_orders");
    let dir = std::env::temp_dir().join(unique("cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("deploy.sql");
    std::fs::write(
        &script,
        "-- deploys the orders pipeline\n\
         DEFINE big = '100';\n\
         CREATE STREAM orders (id STRING KEY, amount INT)\n  WITH (kafka_topic='${topic}', value_format='JSON', partitions=1);\n\
         SET 'auto.offset.reset'='earliest';\n\
         CREATE STREAM big_orders WITH (kafka_topic='${topic}_big') AS SELECT id, amount FROM orders WHERE amount > ${big};\n\
         SHOW STREAMS;\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = cli(
        &server,
        &[
            "-f",
            script.to_str().unwrap(),
            "--define",
            &format!("topic={topic}"),
        ],
    );
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Stream created"), "{stdout}");
    assert!(
        stdout.contains("Created query with ID CSAS_BIG_ORDERS_"),
        "{stdout}"
    );
    assert!(stdout.contains("| BIG_ORDERS "), "{stdout}");
    assert!(stdout.contains("Successfully changed local property 'auto.offset.reset'"));

    produce(
        &topic,
        &[
            Record::new(Some("a"), Some(r#"{"AMOUNT":50}"#), 1),
            Record::new(Some("b"), Some(r#"{"AMOUNT":150}"#), 2),
            Record::new(Some("c"), Some(r#"{"AMOUNT":250}"#), 3),
        ],
    );
    // A pull query over the derived stream, as a table of rows.
    let wanted = "| c        | 250      |";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (ok, stdout, stderr) = cli(&server, &["-e", "SELECT id, amount FROM big_orders;"]);
        assert!(ok, "{stderr}");
        if stdout.contains(wanted) {
            assert!(stdout.contains("| ID       | AMOUNT   |"), "{stdout}");
            assert!(stdout.contains("2 rows"), "{stdout}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stdout}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A running query's plan, and a statement's.
    let (ok, stdout, stderr) = cli(&server, &["-e", "SHOW QUERIES;"]);
    assert!(ok, "{stderr}");
    let id = stdout
        .split_whitespace()
        .find(|w| w.starts_with("CSAS_BIG_ORDERS_"))
        .expect("the query's id")
        .to_string();
    let (ok, stdout, stderr) = cli(&server, &["-e", &format!("EXPLAIN {id};")]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("ID: {id}")) && stdout.contains("State: RUNNING"),
        "{stdout}"
    );
    assert!(stdout.contains("Execution plan:"), "{stdout}");
    let (ok, stdout, stderr) = cli(
        &server,
        &[
            "-e",
            "EXPLAIN SELECT id FROM orders WHERE amount > 5 EMIT CHANGES;",
        ],
    );
    assert!(
        ok && stdout.contains("State: NOT_RUNNING"),
        "{stdout}{stderr}"
    );
    let (ok, _, stderr) = cli(&server, &["-e", "EXPLAIN CSAS_NOPE_9;"]);
    assert!(
        !ok && stderr.contains("Query with id:CSAS_NOPE_9 does not exist"),
        "{stderr}"
    );
    // PRINT shows the raw records with the formats they look like.
    let (ok, stdout, stderr) = cli(
        &server,
        &["-e", &format!("PRINT '{topic}' FROM BEGINNING LIMIT 2;")],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("Key format: KAFKA_STRING\nValue format: JSON or KAFKA_STRING\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "rowtime: 1970/01/01 00:00:00.001 Z, key: a, value: {\"AMOUNT\":50}, partition: 0\n"
        ),
        "{stdout}"
    );
    assert_eq!(stdout.matches("rowtime:").count(), 2, "{stdout}");
    // The functions, and one described.
    let (ok, stdout, stderr) = cli(&server, &["-e", "SHOW FUNCTIONS; DESCRIBE FUNCTION ucase;"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| UCASE "), "{stdout}");
    assert!(
        stdout.contains("| COUNT ") && stdout.contains("AGGREGATE"),
        "{stdout}"
    );
    assert!(stdout.contains("Name: UCASE\nType: SCALAR"), "{stdout}");
    assert!(stdout.contains("| (STRING)  | STRING  |"), "{stdout}");
    let (ok, _, stderr) = cli(&server, &["-e", "DESCRIBE FUNCTION nope;"]);
    assert!(
        !ok && stderr.contains("Can't find any functions with the name 'NOPE'"),
        "{stderr}"
    );
    // JSON output for machines.
    let (ok, stdout, _) = cli(&server, &["--output", "json", "-e", "SHOW STREAMS;"]);
    assert!(ok);
    let body: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(body[0]["@type"], "streams");
}

#[test]
fn the_first_failing_statement_stops_the_script_with_an_error() {
    let server = Server::start(&unique("svc"));
    let topic = unique("cli_fail");
    let (ok, stdout, stderr) = cli(
        &server,
        &[
            "-e",
            &format!(
                "CREATE STREAM s (x INT) WITH (kafka_topic='{topic}', value_format='JSON', partitions=1);\n\
                 CREATE STREAM t AS SELECT nope FROM s;\n\
                 CREATE STREAM u AS SELECT x FROM s;"
            ),
        ],
    );
    assert!(!ok, "the run must fail:\n{stdout}");
    assert!(stderr.contains("NOPE"), "{stderr}");
    // The caret points into the statement.
    assert!(stderr.contains("^"), "{stderr}");
    // The statement after the failing one never ran.
    let (status, body) = server.ksql("DESCRIBE u;");
    assert_eq!(status, 400, "{body}");
    // An undefined variable fails before anything is sent.
    let (ok, _, stderr) = cli(&server, &["-e", "DESCRIBE ${missing};"]);
    assert!(!ok);
    assert!(stderr.contains("Undefined variable: missing"), "{stderr}");
}

/// The shell fed on stdin, as a person types: Ctrl-C (SIGINT) ends the running push
/// query and the shell goes on; RUN SCRIPT and SPOOL work; `exit` leaves.
#[test]
fn ctrl_c_stops_the_query_not_the_shell() {
    use std::io::{BufRead, BufReader, Write};
    let server = Server::start(&unique("svc"));
    let topic = unique("cli_clicks");
    server.ok(&format!(
        "CREATE STREAM clicks (user_id STRING KEY, page STRING) WITH (kafka_topic='{topic}', value_format='JSON', partitions=1);"
    ));
    produce(
        &topic,
        &[Record::new(Some("u1"), Some(r#"{"PAGE":"/a"}"#), 1)],
    );
    let dir = std::env::temp_dir().join(unique("cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("show.sql");
    std::fs::write(&script, "SHOW STREAMS;\n").unwrap();
    let spool = dir.join("spool.txt");

    let mut child = Command::new(sluice_bin())
        .arg("cli")
        .arg(&server.url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sluice cli runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "SPOOL '{}';", spool.display()).unwrap();
    writeln!(stdin, "SET 'auto.offset.reset'='earliest';").unwrap();
    writeln!(stdin, "SELECT page FROM clicks EMIT CHANGES;").unwrap();
    stdin.flush().unwrap();
    // Wait for the row: the query runs and waits for more.
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("/a") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the shell ended early: {seen}"
        );
        seen.push_str(&line);
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    writeln!(stdin, "RUN SCRIPT '{}';", script.display()).unwrap();
    writeln!(stdin, "SPOOL OFF;").unwrap();
    writeln!(stdin, "exit").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let all = format!("{seen}{rest}");
    assert!(status.success(), "{all}");
    assert!(rest.contains("Query terminated"), "{all}");
    assert!(rest.contains("| CLICKS "), "{all}");
    let spooled = std::fs::read_to_string(&spool).unwrap();
    assert!(
        spooled.contains("/a") && spooled.contains("| CLICKS "),
        "{spooled}"
    );
}
