//! `sluice`: the streaming SQL engine's one binary.

use clap::{Parser, Subcommand};
use sluice_server::ServerConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Streaming SQL on Kafka, compatible with ksqlDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server: REST API, command topic and persistent queries.
    Server(ServerArgs),
    /// The shell: a client of a running server. Interactive, or with -e / -f for scripts
    /// and CI (the first failing statement stops it with a non-zero exit).
    Cli(CliArgs),
    /// Versioned SQL migrations applied through a server, with their history in Kafka.
    Migrate(MigrateArgs),
    /// Runs conformance suites against the deterministic test driver.
    #[command(subcommand)]
    Test(TestSuite),
}

#[derive(Subcommand)]
enum TestSuite {
    /// ksqlDB query-validation cases (files, or folders of .json files).
    Qtt(QttArgs),
    /// ksqlDB REST query-validation cases, each against an in-process server.
    RestQtt(QttArgs),
}

#[derive(clap::Args)]
struct QttArgs {
    /// Case files, or folders whose .json files are read.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Writes the per-case results as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Exits non-zero when fewer cases than this pass.
    #[arg(long)]
    min_pass: Option<usize>,
}

#[derive(clap::Args)]
struct CliArgs {
    /// The server's address.
    #[arg(default_value = "http://127.0.0.1:8088", env = "SLUICE_SERVER")]
    url: String,
    /// Runs these statements and exits.
    #[arg(short = 'e', long = "execute", conflicts_with = "file")]
    execute: Option<String>,
    /// Runs the statements of this file and exits.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Defines a variable for `${name}` substitution: --define name=value.
    #[arg(long = "define")]
    defines: Vec<String>,
    /// For an https:// server: trust the certificates in this PEM file (else the
    /// system's roots).
    #[arg(long, env = "SLUICE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// How results are printed.
    #[arg(long, default_value = "tabular", value_parser = ["tabular", "json"])]
    output: String,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The project's config file (default: ./sluice-migrations.properties).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Writes a project: its config file and an empty migrations/ folder.
    NewProject { dir: PathBuf, url: String },
    /// Writes the next migration file, migrations/V<next>__<name>.sql.
    Create { name: String },
    /// Applies pending migrations in version order; stops at the first that fails.
    Apply {
        /// Every pending migration.
        #[arg(long, conflicts_with_all = ["next", "until"])]
        all: bool,
        /// Only the next pending migration.
        #[arg(long, conflicts_with = "until")]
        next: bool,
        /// Pending migrations up to this version, inclusive.
        #[arg(long)]
        until: Option<u32>,
        /// Prints what would run, runs nothing.
        #[arg(long)]
        dry_run: bool,
        /// A variable for `${name}`: --define name=value.
        #[arg(long = "define")]
        defines: Vec<String>,
    },
    /// Every migration with its state, checksum and times.
    Info,
    /// Fails when an applied migration's file changed or went away.
    Validate,
}

fn run_migrate(args: MigrateArgs) -> ExitCode {
    use sluice_server::migrate::{Project, Until, new_project};
    let mut out = std::io::stdout();
    let result = match args.command {
        MigrateCommand::NewProject { dir, url } => new_project(&dir, &url).map(|()| {
            println!("wrote {}", dir.display());
        }),
        command => Project::open(args.config.as_deref()).and_then(|project| match command {
            MigrateCommand::Create { name } => project.create(&name).map(|p| {
                println!("wrote {}", p.display());
            }),
            MigrateCommand::Apply {
                all,
                next,
                until,
                dry_run,
                defines,
            } => {
                let until = match (all, next, until) {
                    (_, true, _) => Until::Next,
                    (_, _, Some(v)) => Until::Version(v),
                    (true, _, _) => Until::All,
                    _ => {
                        return Err(sluice_server::cli::Failure(
                            "say which migrations: --all, --next or --until VERSION".into(),
                        ));
                    }
                };
                let defines = sluice_server::cli::parse_defines(&defines)
                    .map_err(sluice_server::cli::Failure)?;
                project
                    .apply(until, dry_run, defines, &mut out)
                    .map(|n| println!("applied {n} migration(s)"))
            }
            MigrateCommand::Info => project.info(&mut out),
            MigrateCommand::Validate => project.validate(&mut out),
            MigrateCommand::NewProject { .. } => unreachable!("handled above"),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.0);
            ExitCode::FAILURE
        }
    }
}

fn run_cli(args: CliArgs) -> ExitCode {
    use sluice_server::cli::{Output, Session, parse_defines};
    let variables = match parse_defines(&args.defines) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sluice cli: {e}");
            return ExitCode::from(2);
        }
    };
    let output = if args.output == "json" {
        Output::Json
    } else {
        Output::Tabular
    };
    let mut session = Session::new(&args.url, output, variables);
    if let Some(ca) = &args.tls_ca {
        session = match session.with_tls_ca(ca) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sluice cli: {}", e.0);
                return ExitCode::from(2);
            }
        };
    }
    let script = match (&args.execute, &args.file) {
        (Some(sql), _) => Some(sql.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                eprintln!("sluice cli: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => None,
    };
    let mut stdout = std::io::stdout();
    match script {
        Some(script) => match session.run_script(&script, &mut stdout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}", e.0);
                ExitCode::FAILURE
            }
        },
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            match sluice_server::shell::run(&mut session, &mut stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice cli: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            if let Err(e) = sluice_server::shell::catch_interrupts(&mut session) {
                eprintln!("sluice cli: {e}");
            }
            session.interactive(&mut std::io::stdin().lock(), &mut stdout);
            ExitCode::SUCCESS
        }
    }
}

fn run_qtt(args: QttArgs, suite: &str) -> ExitCode {
    let files = match sluice_qtt::collect_files(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sluice test {suite}: {e}");
            return ExitCode::from(2);
        }
    };
    // Panics in a case are reported as its failure; keep them off the terminal.
    std::panic::set_hook(sluice_qtt::quiet_panic_hook());
    let results = if suite == "rest-qtt" {
        match sluice_server::rest_qtt::run_files(&files) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sluice test {suite}: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        files.iter().flat_map(|f| sluice_qtt::run_file(f)).collect()
    };
    let _ = std::panic::take_hook();
    for r in &results {
        println!("{}", r.line());
    }
    let count = |o: sluice_qtt::Outcome| results.iter().filter(|r| r.outcome == o).count();
    let passed = count(sluice_qtt::Outcome::Pass);
    println!(
        "{passed} passed, {} failed, {} skipped",
        count(sluice_qtt::Outcome::Fail),
        count(sluice_qtt::Outcome::Skip)
    );
    if let Some(path) = args.report {
        let json = serde_json::to_string_pretty(&results).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("sluice test {suite}: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    match args.min_pass {
        Some(min) if passed < min => {
            eprintln!("sluice test {suite}: {passed} cases passed, fewer than the required {min}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        default_value = "127.0.0.1:9092",
        env = "SLUICE_BOOTSTRAP_SERVERS"
    )]
    bootstrap_servers: String,
    /// Address of the REST API.
    #[arg(long, default_value = "127.0.0.1:8088", env = "SLUICE_LISTEN")]
    listen: String,
    /// The URL other servers reach this one's REST API at, to forward pull queries
    /// for partitions this server owns (`ksql.advertised.listener`); default: the
    /// listener's address (its host name when it listens on every interface).
    #[arg(long, env = "SLUICE_ADVERTISED_LISTENER")]
    advertised_listener: Option<String>,
    /// Servers with the same service id share the command topic and run the same queries.
    #[arg(long, default_value = "default", env = "SLUICE_SERVICE_ID")]
    service_id: String,
    /// Local state of the queries.
    #[arg(long, default_value = "./sluice-state", env = "SLUICE_STATE_DIR")]
    state_dir: PathBuf,
    /// How often queries commit their progress, in milliseconds.
    #[arg(long, default_value_t = 100, env = "SLUICE_COMMIT_INTERVAL_MS")]
    commit_interval_ms: u64,
    /// exactly_once_v2 or at_least_once, for queries that do not set
    /// `processing.guarantee` themselves.
    #[arg(
        long,
        default_value = "exactly_once_v2",
        env = "SLUICE_PROCESSING_GUARANTEE",
        value_parser = ["exactly_once_v2", "at_least_once"]
    )]
    processing_guarantee: String,
    /// Bytes of table rows a query holds until its commit, writing only the latest row
    /// per key (`cache.max.bytes.buffering`); 0 writes every row.
    #[arg(long, default_value_t = 10 * 1024 * 1024, env = "SLUICE_CACHE_MAX_BYTES")]
    cache_max_bytes: usize,
    /// Threads each persistent query runs its tasks on, on this server
    /// (`num.stream.threads`); default: one per core.
    #[arg(long, env = "SLUICE_STREAM_THREADS")]
    stream_threads: Option<usize>,
    /// Headless mode: runs this file's statements, keeps no command topic, and takes
    /// only read-only statements over REST (queries, SHOW, DESCRIBE, metrics).
    #[arg(long, env = "SLUICE_QUERIES_FILE")]
    queries_file: Option<PathBuf>,
    /// `user:password` every REST request must present with HTTP Basic authentication
    /// (all but /healthcheck).
    #[arg(long, env = "SLUICE_BASIC_AUTH", hide_env_values = true)]
    basic_auth: Option<String>,
    /// Request bodies larger than this many bytes are refused with 413.
    #[arg(long, default_value_t = 2 * 1024 * 1024, env = "SLUICE_MAX_REQUEST_BYTES")]
    max_request_bytes: usize,
    /// The schema registry of the AVRO and JSON_SR formats
    /// (`ksql.schema.registry.url`), e.g. http://127.0.0.1:8081.
    #[arg(long, env = "SLUICE_SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
    /// Serves the REST API over TLS with this certificate chain (a PEM file); needs
    /// --tls-key.
    #[arg(long, env = "SLUICE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (a PEM file).
    #[arg(long, env = "SLUICE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// A configuration file: TOML, or ksqlDB's `.properties`. Its keys are these flags'
    /// names or ksqlDB's property names; flags and SLUICE_* variables win over it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
}

/// Parses the command line; for `sluice server --config FILE`, the file's settings are
/// added as flags wherever neither a flag nor its environment variable gave one.
fn parse_command_line() -> Result<Cli, String> {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&args);
    let Some(server) = matches.subcommand_matches("server") else {
        return Cli::from_arg_matches(&matches).map_err(|e| e.to_string());
    };
    let Some(path) = server.get_one::<PathBuf>("config") else {
        return Cli::from_arg_matches(&matches).map_err(|e| e.to_string());
    };
    let settings = sluice_server::config::read(path).map_err(|e| e.to_string())?;
    let mut args = args;
    for (flag, value) in settings {
        let id = flag.replace('-', "_");
        if matches!(
            server.value_source(&id),
            None | Some(ValueSource::DefaultValue)
        ) {
            args.push(format!("--{flag}").into());
            args.push(value.into());
        }
    }
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Test(TestSuite::Qtt(args)) => run_qtt(args, "qtt"),
        Command::Test(TestSuite::RestQtt(args)) => run_qtt(args, "rest-qtt"),
        Command::Cli(args) => run_cli(args),
        Command::Migrate(args) => run_migrate(args),
        Command::Server(args) => {
            let config = ServerConfig {
                bootstrap_servers: args.bootstrap_servers,
                listen: args.listen,
                service_id: args.service_id,
                state_dir: args.state_dir,
                commit_interval: Duration::from_millis(args.commit_interval_ms),
                exactly_once: args.processing_guarantee == "exactly_once_v2",
                cache_max_bytes: args.cache_max_bytes,
                stream_threads: args
                    .stream_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                queries_file: args.queries_file,
                basic_auth: args.basic_auth,
                max_request_bytes: args.max_request_bytes,
                auto_offset_reset: "latest".into(),
                schema_registry_url: args.schema_registry_url,
                tls_cert: args.tls_cert,
                tls_key: args.tls_key,
                advertised_listener: args.advertised_listener,
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sluice: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(sluice_server::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
