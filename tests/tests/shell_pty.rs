//! The interactive shell driven through a pseudo-terminal, as a person at a terminal
//! uses it: the banner, a statement over several lines, tab completion of a stream's
//! name, a push query whose rows fit the terminal's width and that Ctrl-C stops, an
//! error with a caret under its position,
//! the history file, and Ctrl-D to leave.

use rexpect::session::PtySession;
use sluice_e2e::{Record, Server, produce, sluice_bin, unique};
use std::process::Command;

/// Waits for `text` in the terminal's output (rexpect fails after its timeout).
fn expect(shell: &mut PtySession, text: &str) -> String {
    shell
        .exp_string(text)
        .unwrap_or_else(|e| panic!("the shell never showed {text:?}: {e}"))
}

#[test]
fn the_shell_at_a_terminal() {
    let server = Server::start(&unique("svc"));
    let topic = unique("pty_clicks");
    let stream = unique("pty_clicks").to_uppercase();
    server.ok(&format!(
        "CREATE STREAM {stream} (user_id STRING KEY, page STRING) WITH (kafka_topic='{topic}', value_format='JSON', partitions=1);"
    ));
    let long_page = format!("/{}", "x".repeat(100));
    produce(
        &topic,
        &[
            Record::new(Some("u1"), Some(r#"{"PAGE":"/landing"}"#), 1),
            Record::new(Some("u2"), Some(&format!(r#"{{"PAGE":"{long_page}"}}"#)), 2),
        ],
    );
    let home = std::env::temp_dir().join(unique("pty_home"));
    std::fs::create_dir_all(&home).unwrap();

    let mut command = Command::new(sluice_bin());
    command
        .arg("cli")
        .arg(&server.url)
        .env("HOME", &home)
        .env("TERM", "xterm")
        .env("COLUMNS", "60");
    let mut shell = rexpect::session::spawn_command(command, Some(30_000)).expect("a pty");

    // The banner names the client's version and the server's status.
    expect(&mut shell, env!("CARGO_PKG_VERSION"));
    expect(&mut shell, "RUNNING");
    expect(&mut shell, "sluice> ");

    // A statement continues over lines until its ';'.
    shell.send_line("SHOW").unwrap();
    expect(&mut shell, "     > ");
    shell.send_line("STREAMS;").unwrap();
    expect(&mut shell, &stream);
    expect(&mut shell, "sluice> ");

    // Tab completes the stream's name from its first letters: the statement only
    // succeeds if the whole name was filled in.
    let prefix = &stream[..stream.len() - 4];
    shell.send(&format!("DESCRIBE {prefix}\t")).unwrap();
    shell.flush().unwrap();
    expect(&mut shell, &stream[prefix.len()..]);
    shell.send_line(";").unwrap();
    expect(&mut shell, "USER_ID");
    expect(&mut shell, "PAGE");
    expect(&mut shell, "sluice> ");

    // A push query prints its rows as they come and runs until Ctrl-C, which stops the
    // query and not the shell.
    shell
        .send_line("SET 'auto.offset.reset'='earliest';")
        .unwrap();
    expect(&mut shell, "sluice> ");
    shell
        .send_line(&format!("SELECT page FROM {stream} EMIT CHANGES;"))
        .unwrap();
    expect(&mut shell, "/landing");
    // A row wider than the terminal is cut to fit it.
    expect(&mut shell, &format!("| {}", &long_page[..55]));
    // (rexpect reads bytes as Latin-1: `…`, E2 80 A6, ends in `¦`.)
    expect(&mut shell, "\u{a6} |");
    shell.send_control('c').unwrap();
    expect(&mut shell, "Query terminated");
    expect(&mut shell, "sluice> ");

    // An error shows the statement's line with a caret under the position.
    shell.send_line("SELECT *").unwrap();
    expect(&mut shell, "     > ");
    shell.send_line("FROM nowhere EMIT CHANGES;").unwrap();
    expect(&mut shell, "NOWHERE does not exist.");
    expect(&mut shell, "\n  FROM nowhere EMIT CHANGES");
    expect(&mut shell, "\n       ^");
    expect(&mut shell, "sluice> ");

    // The shell still answers after all that; Ctrl-D leaves it.
    shell.send_line("version").unwrap();
    expect(&mut shell, env!("CARGO_PKG_VERSION"));
    expect(&mut shell, "sluice> ");
    shell.send_control('d').unwrap();
    shell.exp_eof().expect("the shell leaves on Ctrl-D");
    let status = shell.process().wait().expect("the shell's status");
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );

    // The statements typed are in the history, one entry per statement.
    let history = std::fs::read_to_string(home.join(".sluice_history")).unwrap();
    assert!(history.contains("STREAMS;"), "{history}");
    assert!(
        history.contains(&format!("DESCRIBE {stream};")),
        "{history}"
    );
    assert!(history.contains("FROM nowhere EMIT CHANGES;"), "{history}");
}
