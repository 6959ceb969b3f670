//! `tdre-bench`: the Rust pieces of `bench/run`. Each subcommand prints its measurements as
//! `key=value` lines on stdout, for `bench/run` to collect (`sink` prints its address and serves).

mod api;
mod floor;
mod rows;
mod sink;
mod transfer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde_json::Value;
use td_result_export::internals::{PART_BYTES, PART_LEVEL};

use api::Api;

#[derive(Parser)]
#[command(name = "tdre-bench", about = "Benchmark pieces for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Account {
    /// td-local's base URL, e.g. http://127.0.0.1:8950
    #[arg(long)]
    endpoint: String,
    /// The account's master key.
    #[arg(long, env = "TDRE_BENCH_APIKEY", hide_env_values = true)]
    apikey: String,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk-imports `--rows` www_access-shaped rows into DATABASE.TABLE (appending) and times td-local.
    Load {
        #[command(flatten)]
        account: Account,
        #[arg(long)]
        database: String,
        #[arg(long)]
        table: String,
        #[arg(long)]
        rows: u64,
        /// Bulk-import session name (one per load).
        #[arg(long, default_value = "bench_load")]
        session: String,
    },
    /// Runs a presto query and waits for it; prints its job id.
    Query {
        #[command(flatten)]
        account: Account,
        #[arg(long)]
        database: String,
        #[arg(long)]
        query: String,
    },
    /// Downloads a job's msgpack.gz result to a file and times it.
    Download {
        #[command(flatten)]
        account: Account,
        #[arg(long)]
        job: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints a table's row count (`count=N`).
    Count {
        #[command(flatten)]
        account: Account,
        #[arg(long)]
        database: String,
        #[arg(long)]
        table: String,
        /// Delete the table once counted (keeps td-local's data directory small at 10M rows).
        #[arg(long)]
        drop: bool,
    },
    /// A server that discards bulk-import part uploads, answering each at once; prints
    /// `listening on http://…` first and serves until killed.
    Sink,
    /// The operator's transfer phase alone: its own pipe from the job's msgpack.gz result on
    /// td-local to the parts uploaded to `--sink` (see src/transfer.rs).
    Transfer {
        #[command(flatten)]
        account: Account,
        #[arg(long)]
        job: String,
        /// The sink's base URL (`tdre-bench sink`).
        #[arg(long)]
        sink: String,
        /// Session name in the upload paths.
        #[arg(long, default_value = "bench_transfer")]
        session: String,
        /// Deflate threads (default: as the operator picks them, one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Prints the operator's part constants (`part_level`, `part_bytes`) for bench/run.
    Constants,
    /// The floor: gunzip FILE and gzip the bytes again into parts, as the operator's parts are.
    Floor {
        file: PathBuf,
        /// gzip level (default: the operator's part level).
        #[arg(long, default_value_t = PART_LEVEL)]
        level: u32,
        /// The floor on the operator's bytes: gunzip FILE, and gzip these records (from
        /// `tdre-bench records`) instead of FILE's bytes.
        #[arg(long)]
        records: Option<PathBuf>,
    },
    /// Writes the records the operator's pipe makes of job JOB's result, downloaded to RESULT:
    /// the bytes its parts compress, for `floor --records`. Not timed.
    Records {
        #[command(flatten)]
        account: Account,
        #[arg(long)]
        job: String,
        result: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

fn fact(key: &str, value: impl std::fmt::Display) {
    println!("{key}={value}");
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // The transfer runs on the runtime the operator's binary runs on (`Runtime::new`: one worker
    // per core); the rest measure td-local and need no more than one thread.
    let runtime = match command {
        Command::Transfer { .. } => tokio::runtime::Runtime::new()?,
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Load {
            account,
            database,
            table,
            rows,
            session,
        } => {
            let api = Api::new(&account.endpoint, &account.apikey);
            load(&api, &database, &table, rows, &session).await
        }
        Command::Query {
            account,
            database,
            query,
        } => {
            let api = Api::new(&account.endpoint, &account.apikey);
            let start = Instant::now();
            let issued = api
                .post(&format!("/v3/job/issue/presto/{database}"), &[("query", &query)])
                .await?;
            let job_id = issued["job_id"]
                .as_str()
                .context("job/issue answered no job_id")?
                .to_string();
            let status = api.wait_job(&job_id).await?;
            fact("job_id", &job_id);
            fact("seconds", secs(start.elapsed()));
            fact("num_records", &status["num_records"]);
            fact("result_size", &status["result_size"]);
            Ok(())
        }
        Command::Download { account, job, out } => {
            let api = Api::new(&account.endpoint, &account.apikey);
            let mut file = tokio::fs::File::create(&out)
                .await
                .with_context(|| format!("creating {}", out.display()))?;
            let start = Instant::now();
            let bytes = api
                .download(&format!("/v3/job/result/{job}?format=msgpack.gz"), &mut file)
                .await?;
            fact("seconds", secs(start.elapsed()));
            fact("bytes", bytes);
            Ok(())
        }
        Command::Count {
            account,
            database,
            table,
            drop,
        } => {
            let api = Api::new(&account.endpoint, &account.apikey);
            fact("count", count(&api, &database, &table).await?);
            if drop {
                api.post(&format!("/v3/table/delete/{database}/{table}"), &[])
                    .await?;
            }
            Ok(())
        }
        Command::Constants => {
            fact("part_level", PART_LEVEL);
            fact("part_bytes", PART_BYTES);
            Ok(())
        }
        Command::Sink => sink::serve().await,
        Command::Records {
            account,
            job,
            result,
            out,
        } => {
            let rows =
                transfer::operator_records(&account.endpoint, &account.apikey, &job, &result, &out).await?;
            fact("rows", rows);
            fact("bytes", std::fs::metadata(&out)?.len());
            Ok(())
        }
        Command::Transfer {
            account,
            job,
            sink,
            session,
            threads,
        } => transfer_phase(&account, &job, &sink, &session, threads).await,
        Command::Floor { file, level, records } => {
            let open = |path: &PathBuf| {
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))
            };
            let input = open(&file)?;
            let records = records.as_ref().map(open).transpose()?;
            let start = Instant::now();
            let floor = match records {
                None => floor::gunzip_gzip(input, level, PART_BYTES)?,
                Some(records) => floor::gunzip_then_gzip(input, records, level, PART_BYTES)?,
            };
            fact("seconds", secs(start.elapsed()));
            fact("level", level);
            fact("raw_bytes", floor.raw);
            fact("out_bytes", floor.out);
            fact("parts", floor.parts);
            Ok(())
        }
    }
}

/// Times the operator's transfer phase and checks it against the sink's own counts and the job's
/// row count.
async fn transfer_phase(
    account: &Account,
    job: &str,
    sink: &str,
    session: &str,
    threads: Option<usize>,
) -> anyhow::Result<()> {
    let sink_api = Api::new(sink, "sink");
    let sink_stats = || async {
        let stats = sink_api.get("/_sink/stats").await?;
        let field = |k: &str| {
            stats[k]
                .as_u64()
                .with_context(|| format!("the sink's stats lack {k}: {stats}"))
        };
        anyhow::Ok((field("parts")?, field("bytes")?))
    };
    let (parts_before, bytes_before) = sink_stats().await?;
    let start = Instant::now();
    let moved =
        transfer::operator_transfer(&account.endpoint, &account.apikey, job, sink, session, threads).await?;
    let seconds = start.elapsed();
    let (parts_after, bytes_after) = sink_stats().await?;
    ensure!(
        (parts_after - parts_before, bytes_after - bytes_before) == (moved.parts, moved.bytes_out),
        "the sink received {} parts of {} bytes; the pipe says it sent {} of {}",
        parts_after - parts_before,
        bytes_after - bytes_before,
        moved.parts,
        moved.bytes_out
    );
    if let Some(expected) = moved.job_rows {
        ensure!(
            moved.rows == expected,
            "the pipe moved {} rows; job {job} has {expected}",
            moved.rows
        );
    }
    fact("seconds", secs(seconds));
    fact("rows", moved.rows);
    fact("parts", moved.parts);
    fact("bytes_in", moved.bytes_in);
    fact("bytes_out", moved.bytes_out);
    fact("threads", moved.threads);
    Ok(())
}

/// Creates the table with www_access's schema if needed and bulk-imports the rows through one
/// session, timing each step td-local does (the rows are generated before the clock starts).
async fn load(api: &Api, database: &str, table: &str, rows: u64, session: &str) -> anyhow::Result<()> {
    api.post_allow_conflict(&format!("/v3/database/create/{database}"), &[])
        .await?;
    api.post_allow_conflict(&format!("/v3/table/create/{database}/{table}/log"), &[])
        .await?;
    api.post(
        &format!("/v3/table/update-schema/{database}/{table}"),
        &[("schema", rows::SCHEMA)],
    )
    .await?;
    let before = count(api, database, table).await?;

    let generated = Instant::now();
    let parts = rows::import_parts(rows, PART_BYTES);
    fact("generate_seconds", secs(generated.elapsed()));
    fact("parts", parts.len());
    fact("part_bytes", parts.iter().map(Vec::len).sum::<usize>());

    let start = Instant::now();
    api.post(
        &format!("/v3/bulk_import/create/{session}/{database}/{table}"),
        &[],
    )
    .await?;
    for (n, part) in parts.into_iter().enumerate() {
        api.put(
            &format!("/v3/bulk_import/upload_part/{session}/part_{n:06}"),
            Bytes::from(part),
        )
        .await?;
    }
    let uploaded = start.elapsed();
    api.post(&format!("/v3/bulk_import/freeze/{session}"), &[])
        .await?;
    let performing = api
        .post(&format!("/v3/bulk_import/perform/{session}"), &[])
        .await?;
    // An integer, as TD answers (a string from older td-locals).
    let job_id = match &performing["job_id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => bail!("perform answered no job_id: {performing}"),
    };
    api.wait_job(&job_id).await?;
    let shown = wait_session(api, session, "ready").await?;
    let performed = start.elapsed();
    ensure!(
        shown["valid_records"].as_u64() == Some(rows) && shown["error_records"].as_u64() == Some(0),
        "perform kept {} rows and rejected {}, not {rows} and 0",
        shown["valid_records"],
        shown["error_records"]
    );
    api.post(&format!("/v3/bulk_import/commit/{session}"), &[])
        .await?;
    wait_session(api, session, "committed").await?;
    let committed = start.elapsed();
    fact("upload_seconds", secs(uploaded));
    fact("perform_seconds", secs(performed - uploaded));
    fact("commit_seconds", secs(committed - performed));
    fact("seconds", secs(committed));
    let after = count(api, database, table).await?;
    ensure!(
        after == before + rows,
        "{database}.{table} went from {before} to {after} rows, not by {rows}"
    );
    fact("rows", rows);
    Ok(())
}

async fn count(api: &Api, database: &str, table: &str) -> anyhow::Result<u64> {
    let shown = api.get(&format!("/v3/table/show/{database}/{table}")).await?;
    shown["count"]
        .as_u64()
        .with_context(|| format!("table/show answered no count: {shown}"))
}

async fn wait_session(api: &Api, session: &str, status: &str) -> anyhow::Result<serde_json::Value> {
    api.poll(
        &format!("/v3/bulk_import/show/{session}"),
        Duration::from_secs(3600),
        |b| Ok(b["status"].as_str() == Some(status)),
    )
    .await
}
