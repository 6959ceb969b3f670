//! The `td-local` command line: `serve`, `query`, and the setup steps (`env`, `db:create`,
//! `table:create`, `table:import`, `job:issue`, `result:create`, `connection:create`). A library
//! module, so that `td-result-export local …` offers the same commands from the wheel.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::local_query::{text_table, LocalQuery};
use crate::result_format::Format;
use crate::setup::{self, Local, RowFormat};
use crate::{Config, TdLocal};

#[derive(Parser)]
#[command(
    name = "td-local",
    version,
    about = "A Treasure Data API v3 server on an embedded database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the API until SIGINT or SIGTERM.
    Serve {
        /// Data directory: database, job results and accounts.yml (the API keys).
        #[arg(long, default_value = ".td-local")]
        data: PathBuf,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8950")]
        listen: SocketAddr,
        /// Serve the /_td_local/ admin routes (fault injection, request log, accounts); each
        /// call needs `Authorization: TD1 <master key>` of one of the accounts in accounts.yml.
        #[arg(long)]
        admin: bool,
        /// Seconds a table's count lags a bulk-import commit, rename or swap, as TD's counts
        /// lag (drawn between 1x and 1.5x; rows are visible to queries at once); 0 for exact.
        #[arg(long, default_value_t = 2.0, value_name = "SECONDS", value_parser = lag_seconds, allow_negative_numbers = true)]
        count_lag: f64,
    },
    /// Run one query on a data directory (no server needed; a server may be serving it) and
    /// print the result: an aligned table by default.
    Query {
        /// Data directory of a td-local (as given to `serve --data`).
        #[arg(long, default_value = ".td-local")]
        data: PathBuf,
        /// Database of tables named without one; without it, name tables as db.table.
        #[arg(long)]
        database: Option<String>,
        /// Account whose tables are read (its id in accounts.yml); the first by default.
        #[arg(long)]
        account: Option<i64>,
        /// table: aligned columns; json, csv, tsv: a line of column names, then a line a row.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Rows the table shows at most (json, csv and tsv print every row).
        #[arg(long, default_value_t = 20)]
        max_rows: usize,
        /// The SQL (SQLite's, with TD's time functions), e.g. "SELECT * FROM db.table".
        sql: String,
    },
    /// Print the `export` lines that give a spec its keys: the source account's master key as
    /// TD_API_KEY, the target's as TARGET_APIKEY (`eval "$(td-local env)"`).
    Env {
        #[command(flatten)]
        data: DataArg,
        /// The source account (its id in accounts.yml).
        #[arg(long, default_value_t = 1)]
        source: i64,
        /// The target account.
        #[arg(long, default_value_t = 2)]
        target: i64,
        /// Give the target's write-only key instead of its master key.
        #[arg(long)]
        write_only: bool,
        /// The variable the target's key goes in (the spec's `${secret:NAME}` upper-cased).
        #[arg(long, default_value = "TARGET_APIKEY")]
        target_var: String,
    },
    /// Create a database (`td db:create`).
    #[command(name = "db:create")]
    DbCreate {
        #[command(flatten)]
        on: On,
        database: String,
    },
    /// Create a table (`td table:create`), with a schema if given.
    #[command(name = "table:create")]
    TableCreate {
        #[command(flatten)]
        on: On,
        database: String,
        table: String,
        /// Columns as TD's schema JSON, e.g. '[["code","long"],["name","string"]]'.
        #[arg(long)]
        schema: Option<String>,
    },
    /// Load rows from a file into a table (`td table:import`): CSV with a header line, JSON
    /// lines, or msgpack maps (gzipped or not). Rows without `time` get --time.
    #[command(name = "table:import")]
    TableImport {
        #[command(flatten)]
        on: On,
        database: String,
        table: String,
        file: PathBuf,
        /// The file's format; by default from its name (.csv, .jsonl, .msgpack[.gz]).
        #[arg(long, value_enum)]
        format: Option<RowFormat>,
        /// `time` (Unix seconds) of rows that have none; now by default.
        #[arg(long)]
        time: Option<i64>,
        /// Create the database and the table if missing (`--auto-create-table`).
        #[arg(long)]
        auto_create: bool,
    },
    /// Issue a query as a job (`td query -w`), wait for it, and print its id: what a spec's
    /// `job_id` names.
    #[command(name = "job:issue")]
    JobIssue {
        #[command(flatten)]
        on: On,
        /// presto, trino or hive.
        #[arg(long, default_value = "presto")]
        engine: String,
        /// Where the job writes its result (a td:// URL or a saved result's NAME:TABLE).
        #[arg(long)]
        result: Option<String>,
        database: String,
        sql: String,
    },
    /// Save a result destination (`td result:create NAME URL`).
    #[command(name = "result:create")]
    ResultCreate {
        #[command(flatten)]
        on: On,
        name: String,
        /// A td:// URL: td://KEY@HOST/DATABASE (the key picks the account written to).
        url: String,
    },
    /// Make a connection as TD's console makes one (its key kept by td-local, not listed by
    /// result:list); prints its id.
    #[command(name = "connection:create")]
    ConnectionCreate {
        #[command(flatten)]
        on: On,
        name: String,
        /// A td:// URL whose key picks the account written to.
        url: String,
    },
}

/// The data directory a command works on.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArg {
    /// Data directory of a td-local (as given to `serve --data`).
    #[arg(long, default_value = ".td-local")]
    pub data: PathBuf,
}

/// Where a setup step acts: a data directory (through the server serving it, or one started for
/// the step) and one of its accounts.
#[derive(Debug, Clone, clap::Args)]
pub struct On {
    #[command(flatten)]
    pub data: DataArg,
    /// The account acted as (its id in accounts.yml).
    #[arg(long, default_value_t = 1)]
    pub account: i64,
}

impl On {
    async fn open(&self) -> crate::error::Result<Local> {
        Local::open(&self.data.data, self.account).await
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
    Tsv,
}

pub async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve {
            data,
            listen,
            admin,
            count_lag,
        } => {
            let lag = crate::CountLag::new(std::time::Duration::from_secs_f64(count_lag));
            serve(data, listen, admin, lag).await
        }
        Command::Query {
            data,
            database,
            account,
            format,
            max_rows,
            sql,
        } => {
            let query = LocalQuery {
                data_dir: data,
                database,
                account,
                sql,
            };
            let ran = query.run()?;
            let mut stdout = std::io::stdout().lock();
            match format {
                OutputFormat::Table => stdout.write_all(text_table(&ran, max_rows)?.as_bytes())?,
                OutputFormat::Json => ran.write(Format::Json, &mut stdout)?,
                OutputFormat::Csv => ran.write(Format::Csv, &mut stdout)?,
                OutputFormat::Tsv => ran.write(Format::Tsv, &mut stdout)?,
            }
            Ok(stdout.flush()?)
        }
        Command::Env {
            data,
            source,
            target,
            write_only,
            target_var,
        } => {
            print!(
                "{}",
                setup::env_lines(&data.data, source, target, write_only, &target_var)?
            );
            Ok(())
        }
        Command::DbCreate { on, database } => {
            on.open().await?.create_database(&database).await?;
            eprintln!("database {database} created");
            Ok(())
        }
        Command::TableCreate {
            on,
            database,
            table,
            schema,
        } => {
            on.open()
                .await?
                .create_table(&database, &table, schema.as_deref())
                .await?;
            eprintln!("table {database}.{table} created");
            Ok(())
        }
        Command::TableImport {
            on,
            database,
            table,
            file,
            format,
            time,
            auto_create,
        } => {
            let format = format.or_else(|| RowFormat::of(&file)).ok_or_else(|| {
                format!(
                    "cannot tell the format of {} from its name: pass --format csv, jsonl or msgpack",
                    file.display()
                )
            })?;
            let rows = setup::read_rows(&file, format)?;
            let local = on.open().await?;
            if auto_create {
                ignore_existing(local.create_database(&database).await)?;
                ignore_existing(local.create_table(&database, &table, None).await)?;
            }
            let time = time.unwrap_or_else(crate::store::now);
            let n = local.load(&database, &table, rows, time).await?;
            eprintln!("{n} rows imported into {database}.{table}");
            Ok(())
        }
        Command::JobIssue {
            on,
            engine,
            result,
            database,
            sql,
        } => {
            let id = on
                .open()
                .await?
                .issue(&engine, &database, &sql, result.as_deref())
                .await?;
            println!("{id}");
            Ok(())
        }
        Command::ResultCreate { on, name, url } => {
            on.open().await?.create_result(&name, &url).await?;
            eprintln!("saved result {name} created");
            Ok(())
        }
        Command::ConnectionCreate { on, name, url } => {
            let id = on.open().await?.create_connection(&name, &url).await?;
            println!("{id}");
            Ok(())
        }
    }
}

/// A create that finds its object already there is done.
fn ignore_existing(made: crate::error::Result<()>) -> crate::error::Result<()> {
    match made {
        Err(crate::error::Error::Conflict { .. }) => Ok(()),
        other => other,
    }
}

/// `--count-lag`: a number of seconds from 0 to a day.
fn lag_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "`{text}` is not a number of seconds from 0 to 86400 (0: exact counts)"
        )),
    }
}

async fn serve(
    data: PathBuf,
    listen: SocketAddr,
    admin: bool,
    count_lag: crate::CountLag,
) -> Result<(), Box<dyn std::error::Error>> {
    // Handlers go in before the listening line: a parent may signal as soon as it reads it.
    let stop = shutdown_signal()?;
    let server = TdLocal::start(Config {
        listen,
        admin,
        count_lag,
        ..Config::new(data.clone())
    })
    .await?;
    // The first stdout line is the contract for parents that start us with port 0: flush it now,
    // whatever buffering stdout has when it is a pipe.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.base_url())?;
    stdout.flush()?;
    drop(stdout);
    eprintln!(
        "data in {} (API keys in {})",
        data.display(),
        data.join(crate::accounts::ACCOUNTS_FILE).display()
    );
    stop.await;
    server.shutdown().await;
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM; the handlers are installed when this is called.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
