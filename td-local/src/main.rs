//! `td-local serve --data DIR [--listen 127.0.0.1:PORT] [--admin]`
//! `td-local query --data DIR [--database DB] [--format table|json|csv|tsv] "SQL"`

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use td_local::local_query::{text_table, LocalQuery};
use td_local::result_format::Format;
use td_local::{Config, TdLocal};

#[derive(Parser)]
#[command(
    name = "td-local",
    version,
    about = "A Treasure Data API v3 server on an embedded database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
    Tsv,
}

/// glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB); past
/// that, part bodies (16 MiB each) and a perform's batch buffers come from the heap, which
/// keeps them once freed: RSS grew by ~50 MiB with each bulk import and never came down. A fixed
/// threshold maps such blocks on their own and unmaps them when they are freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn hand_large_blocks_back() {
    const MMAP_THRESHOLD: libc::c_int = 256 << 10;
    // SAFETY: mallopt sets a parameter of the allocator; it allocates and frees nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    hand_large_blocks_back();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TD_LOCAL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve {
            data,
            listen,
            admin,
            count_lag,
        } => {
            let lag = td_local::CountLag::new(std::time::Duration::from_secs_f64(count_lag));
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
    count_lag: td_local::CountLag,
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
        data.join(td_local::accounts::ACCOUNTS_FILE).display()
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
