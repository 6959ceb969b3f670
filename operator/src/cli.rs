//! Command line: `run`, `validate`, `schema`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::time::{Duration, Instant};

use td_result_export::{
    preview, scrub, Classify, Connected, Display, Endpoint, Environment, Error, ErrorInfo, Exit, ExportPlan,
    Inputs, Options, Preview, PreviewError, Runner, Source, StatusDoc, StatusFile, StatusRecorder,
    TargetAccount, Warning, STATUS_SCHEMA, TASK_SCHEMA,
};

const AFTER_HELP: &str = "\
Example spec (quickstart.yml):
  td_result_export>:
  td: {endpoint: local}                  # the embedded td-local; or api.treasuredata.com
  query: SELECT code, COUNT(1) AS cnt FROM www_access GROUP BY code
  database: sample_datasets
  result_url: td://${local:account2.master_key}@/testdb/output_table?mode=replace
  # or: job_id: ${td.last_job_id}, result_connection: NAME + result_settings: {...}

  td-result-export validate quickstart.yml
  td-result-export run quickstart.yml --status status.json

Exit codes:
  0  success (also when the export had already been done)
  1  failed permanently (auth, permission, not found, source job failed, rejected rows)
  2  invalid spec, usage or configuration: nothing was written (for an invalid spec, nothing was sent)
  3  transient failure after retries: safe to run again

Values: ${name} from --param name=value; ${secret:NAME} from --secrets FILE, then env NAME
(upper-cased, other characters as _); ${local:accountN.master_key} from td-local's accounts.
`td-result-export schema` prints the spec's JSON Schema.";

#[derive(Debug, Parser)]
#[command(
    name = "td-result-export",
    version,
    about = "Export a Treasure Data job's result into a table of another TD account, exactly once",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = "Global options")]
    log_format: LogFormat,
    /// More log output: -v every call to TD (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet", help_heading = "Global options")]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, help_heading = "Global options")]
    quiet: bool,
}

/// What `run --help` adds: the environment the command reads.
const RUN_AFTER_HELP: &str = "\
Environment:
  TD_API_KEY, TD_API_SERVER   the source account's key and host when the spec gives none
                              (then ~/.td/td.conf)
  NAME (upper-cased)          the value of ${secret:NAME} when --secrets does not have it
  HTTPS_PROXY, HTTP_PROXY,    proxies for the calls to TD (td.proxy in the spec wins)
  NO_PROXY
  TMPDIR                      where parts wait for their upload (at most about 70 MB)
  TDRE_PART_BYTES             compressed size a part is cut at (default 16 MiB)
  TDRE_COMPRESS_THREADS       deflate threads (default: the cores, at most 8)
  TDRE_LOG                    a tracing filter for the log, e.g. td_result_export=debug";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the export described by a task spec.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Check a task spec (schema, names, URLs, variables, secrets) without sending anything.
    Validate(SpecArgs),
    /// Print a JSON Schema: of the task spec (default) or of the status document.
    Schema {
        #[arg(value_enum, default_value_t = SchemaKind::Task)]
        which: SchemaKind,
    },
    /// td-local's commands, for trying a workflow with no TD account: serve, query, env,
    /// db:create, table:create, table:import, job:issue, result:create, connection:create.
    #[cfg(feature = "local")]
    Local {
        #[command(subcommand)]
        command: td_local::cli::Command,
    },
    /// td-local's commands: not in this build (built without the `local` feature).
    #[cfg(not(feature = "local"))]
    #[command(disable_help_flag = true)]
    Local {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaKind {
    Task,
    Status,
}

#[derive(Debug, Args)]
struct SpecArgs {
    /// The task spec (YAML).
    spec: PathBuf,
    /// A value for ${NAME} in the spec (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A YAML or JSON map of values for ${NAME} (nested maps give dotted names); --param wins.
    #[arg(long = "params", value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// YAML map of secrets for ${secret:NAME} (nested or dotted keys).
    #[arg(long, value_name = "FILE")]
    secrets: Option<PathBuf>,
    /// YAML map of connections: NAME: {type: treasure_data, api_key, api_hostname}.
    #[arg(long, value_name = "FILE")]
    connections: Option<PathBuf>,
    /// Use the embedded td-local for every endpoint, with its data in DIR.
    #[arg(long, value_name = "DIR")]
    local: Option<PathBuf>,
    /// Who runs this program (the py> entry point passes `py`: messages then name task params).
    #[arg(long, value_enum, default_value = "cli", hide = true)]
    runner: Runner,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Write the status document (JSON) here, atomically, while running and on exit.
    #[arg(long, value_name = "PATH")]
    status: Option<PathBuf>,
    /// Validate and resolve, print the plan (keys redacted), send nothing.
    #[arg(long)]
    dry_run: bool,
    /// After a successful export, print the target's row count and first rows (a small LIMIT
    /// query on the target account). Always done when the target is the embedded td-local.
    #[arg(long)]
    show: bool,
    /// The py> entry's private directory for this run (spec, params, status document): removed
    /// at exit when the entry has died meanwhile (SIGKILL), as nobody is left to remove it.
    #[arg(long, value_name = "DIR", hide = true)]
    entry_dir: Option<PathBuf>,
}

impl SpecArgs {
    fn inputs(&self) -> Result<Inputs, Error> {
        Ok(Inputs {
            params: {
                let mut params = match &self.params_file {
                    Some(path) => Inputs::params_from_file(path)?,
                    None => Default::default(),
                };
                params.extend(Inputs::parse_params(&self.params)?);
                params
            },
            secrets_file: self.secrets.clone(),
            connections_file: self.connections.clone(),
            local_dir: self.local.clone(),
            env: Environment::from_process(),
            local_accounts: td_result_export::embedded_local_accounts(),
            runner: self.runner,
        })
    }
}

/// Runs a command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    init_logging(&cli);
    let parent = rustix::process::getppid();
    let outcome = match &cli.command {
        Command::Schema { which } => {
            let _ = write!(
                std::io::stdout(),
                "{}",
                match which {
                    SchemaKind::Task => TASK_SCHEMA,
                    SchemaKind::Status => STATUS_SCHEMA,
                }
            );
            Ok(())
        }
        Command::Validate(args) => validate(&cli, args),
        Command::Run(args) => run_export(&cli, args),
        #[cfg(feature = "local")]
        Command::Local { command } => return run_local(command.clone()),
        #[cfg(not(feature = "local"))]
        Command::Local { .. } => {
            td_result_export::errln!(
                "error: {}. Fix: install the wheel (pip install td-result-export), or build with \
                 `cargo build -p td-result-export` (the `local` feature is on by default).",
                td_result_export::NO_LOCAL
            );
            return 2;
        }
    };
    let code = match outcome {
        Ok(()) => Exit::Success.code(),
        Err(error) => {
            report_error(&cli, &error);
            error.class().exit.code()
        }
    };
    if let Command::Run(RunArgs {
        entry_dir: Some(dir), ..
    }) = &cli.command
    {
        // Reparented: the entry that made the directory is gone and will not read it.
        if rustix::process::getppid() != parent {
            // A few tries: a file appearing while the tree is removed makes one fail.
            for _ in 0..3 {
                if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    code
}

/// A td-local command, as the `td-local` program runs it (its errors and exit code too).
#[cfg(feature = "local")]
fn run_local(command: td_local::cli::Command) -> i32 {
    let outcome = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(td_local::cli::run(command))
                .map_err(|e| e.to_string())
        });
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            td_result_export::errln!("Error: {e}");
            1
        }
    }
}

fn validate(cli: &Cli, args: &SpecArgs) -> Result<(), Error> {
    let prepared = td_result_export::prepare(&args.spec, &args.inputs()?)?;
    report_warnings(cli, &prepared.warnings);
    td_result_export::outln!(
        "valid: {}: {}",
        args.spec.display(),
        scrub(&summary(&prepared.plan))
    );
    Ok(())
}

fn run_export(cli: &Cli, args: &RunArgs) -> Result<(), Error> {
    // Something other than a file there (a FIFO would hang the read of an earlier document, a
    // link to a device would never end it) is refused before it is read.
    if let Some(path) = &args.status {
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                return Err(Error::Spec(td_result_export::SpecError::Usage {
                    arg: format!("--status {}", path.display()),
                    problem: "it is not a regular file (a directory, a pipe or a device)".to_string(),
                    fix: "Give the path of a regular file, or of one to create.".to_string(),
                }));
            }
        }
    }
    let recorder = StatusRecorder::new(StatusFile::new(args.status.clone()));
    // A document that cannot be written is found before anything is sent: a runner that reads
    // it must not be left with none, or an old one.
    if let (Some(path), false, Err(e)) = (&args.status, args.dry_run, recorder.try_write()) {
        return Err(Error::Spec(td_result_export::SpecError::Usage {
            arg: format!("--status {}", path.display()),
            problem: format!("the status document cannot be written there ({e})"),
            fix: "Give a path in an existing directory this process may write to.".to_string(),
        }));
    }
    let started = Instant::now();
    let result = prepare_and_export(cli, args, &recorder);
    let doc = match &result {
        Ok(None) => return Ok(()),
        Ok(Some(_)) => recorder.finish(Exit::Success, None),
        Err(e) => recorder.finish(e.class().exit, Some(ErrorInfo::of(e))),
    };
    if let (Ok(Some(preview)), false) = (&result, cli.quiet) {
        td_result_export::outln!("{}", scrub(&outcome_line(&doc, started.elapsed())));
        // Under py> the document is the entry point's, in a directory gone once the task ends.
        if let (Some(path), Runner::Cli) = (recorder.file().path(), args.spec.runner) {
            td_result_export::outln!("status document: {}", path.display());
        }
        match preview {
            Some(Ok(preview)) => {
                let _ = write!(std::io::stdout(), "\n{}", scrub(&preview.to_string()));
            }
            Some(Err(e)) => {
                td_result_export::errln!("note: no preview of the target: {}", scrub(&e.to_string()))
            }
            None => {}
        }
    }
    result.map(drop)
}

/// What a successful run shows of its target, when it shows it.
type Shown = Option<Result<Preview, PreviewError>>;

/// Runs the export; `Ok(None)` for a dry run (which prints the plan and writes no document).
fn prepare_and_export(cli: &Cli, args: &RunArgs, recorder: &StatusRecorder) -> Result<Option<Shown>, Error> {
    let prepared = td_result_export::prepare(&args.spec.spec, &args.spec.inputs()?)?;
    report_warnings(cli, &prepared.warnings);
    if args.dry_run {
        let json = serde_json::to_string_pretty(&prepared.plan).expect("a plan serializes");
        td_result_export::outln!("{}", scrub(&json));
        return Ok(None);
    }
    let plan = prepared.plan;
    let options = Options::from_env(&std::env::vars().collect());
    // Never shut down: the process ends right after the export. Shutting a runtime down while
    // a stage still runs (the blocking thread that reads the result through it, cut short by a
    // signal) makes tokio panic ("a Tokio 1.x context was found, but it is being shutdown");
    // exiting with it alive stops every thread at once, and every temporary file is unnamed.
    let runtime = tokio::runtime::Runtime::new()
        .map(std::mem::ManuallyDrop::new)
        .map_err(|e| {
            Error::Spec(td_result_export::SpecError::Usage {
                arg: "run".into(),
                problem: format!("cannot start the async runtime: {e}"),
                fix: "Check the machine's thread and file limits.".into(),
            })
        })?;
    let connected = runtime.block_on(td_result_export::run_export(
        &plan,
        recorder,
        &options,
        progress_display(cli),
        interrupted(),
    ))?;
    let expected = recorder
        .snapshot()
        .export
        .verification
        .and_then(|v| v.count)
        .map(|c| c.expected);
    Ok(Some(runtime.block_on(show(
        &plan,
        &connected,
        &options,
        expected,
        args.show && !cli.quiet,
    ))))
}

/// The target after the export: asked for with `--show`, and always for the embedded td-local
/// (the quickstart), where it costs nothing. Read through the run's own connection: no second
/// lookup, no second embedded td-local.
async fn show(
    plan: &ExportPlan,
    connected: &Connected,
    options: &Options,
    expected: Option<i64>,
    asked: bool,
) -> Shown {
    let local = matches!(&plan.target.account, TargetAccount::Known { account, .. } if account.endpoint == Endpoint::Local);
    if !(asked || local) {
        return None;
    }
    let client = connected.target()?;
    Some(preview(client, &connected.table, expected, &options.poll).await)
}

/// A bar on a terminal, plain lines otherwise; nothing when quiet or logging JSON.
fn progress_display(cli: &Cli) -> Display {
    use std::io::IsTerminal;
    match (cli.quiet, cli.log_format) {
        (true, _) | (_, LogFormat::Json) => Display::Off,
        _ if std::io::stderr().is_terminal() => Display::Bar,
        _ => Display::Lines,
    }
}

/// A log line nobody can read any more (the pipe of a killed py> runner) is dropped: the
/// subscriber would report the failed write with `eprint!`, which panics on a closed pipe and
/// skips the exit's clean-up.
struct Lossy<W>(W);

impl<W: std::io::Write> std::io::Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The one-line summary of a successful run.
fn outcome_line(doc: &StatusDoc, took: Duration) -> String {
    let e = &doc.export;
    let target = e.target.as_ref().map_or_else(String::new, |t| {
        format!(
            "{} {}.{} ({}, {})",
            t.endpoint, t.database, t.table, t.mode, e.transfer
        )
    });
    let job = e.source_job_id.as_deref().unwrap_or("?");
    if e.already_done {
        // What shows the earlier run did it: its session, else TD's export job.
        let record = match (e.session.as_deref(), e.export_job_id.as_deref()) {
            (Some(session), _) => format!(" (session {session})"),
            (None, Some(id)) => format!(" (export job {id})"),
            (None, None) => String::new(),
        };
        return format!(
            "already done: job {job} was exported to {target} by an earlier run{record}; nothing written"
        );
    }
    format!(
        "exported {} rows: job {job} → {target} in {:.1} s",
        e.rows,
        took.as_secs_f64()
    )
}

fn summary(plan: &ExportPlan) -> String {
    let source = match &plan.source {
        Source::Job { id } => format!("job {id} on {}", plan.source_account.endpoint),
        Source::Query { database, engine, .. } => {
            format!("{engine} query on {}/{database}", plan.source_account.endpoint).to_lowercase()
        }
    };
    let target_account = match &plan.target.account {
        TargetAccount::Known {
            account,
            connection: Some(name),
            ..
        } => format!("connection {name} ({})", account.endpoint),
        TargetAccount::Known {
            account,
            connection: None,
            ..
        } => account.endpoint.to_string(),
        TargetAccount::Connection { name, .. } => format!("connection {name} (looked up at run time)"),
    };
    let t = &plan.target;
    let database = t.database.as_deref().unwrap_or("(its database)");
    let mode = t.mode.map_or("the saved result's mode", |m| m.as_str());
    let engine = match &plan.engine {
        Some(engine) => engine.transfer.as_str(),
        None => "auto: stream or server, once looked up",
    };
    format!(
        "{source} → {target_account} {database}.{} ({mode}, {engine})",
        t.table
    )
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TDRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Every log line goes through the one place that masks secrets; colours only on a terminal.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| td_result_export::Scrubbed::new(Lossy(std::io::stderr())));
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.without_time().with_target(false).try_init(),
    };
}

fn report_warnings(cli: &Cli, warnings: &[Warning]) {
    for warning in warnings {
        match cli.log_format {
            LogFormat::Json => tracing::warn!(at = %warning.at, "{}", warning.message),
            LogFormat::Text if !cli.quiet => {
                td_result_export::errln!("warning: {}", scrub(&warning.to_string()))
            }
            LogFormat::Text => {}
        }
    }
}

fn report_error(cli: &Cli, error: &Error) {
    match cli.log_format {
        LogFormat::Json => tracing::error!(
            exit_code = error.class().exit.code(),
            "{}",
            scrub(&error.to_string())
        ),
        LogFormat::Text => td_result_export::errln!("error: {}", scrub(&error.to_string())),
    }
}
