//! td-local's own speed and memory through a whole export, printed (not asserted):
//!
//! ```text
//! cargo build --release -p td-local --bins --examples   # the server too, or a stale one runs
//! target/release/examples/throughput [ROWS] [PATH/TO/td-local]
//! ```
//!
//! Starts the td-local binary (default: next to this example's directory) on port 0 with a temp
//! data directory, bulk-imports ROWS (default 1,000,000) www_access-like rows, runs
//! `SELECT * FROM www_access` as a presto job, downloads its msgpack.gz result, bulk-imports
//! those rows back into another table in ~16 MB parts, and prints rows/s per phase and the
//! server's peak RSS (VmHWM) after each phase.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use td_local::sample::{AGENTS, FIRST_TIME, PATHS, WWW_ACCESS_SCHEMA};

const PART_BYTES: usize = 16 << 20;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Api {
    http: reqwest::Client,
    url: String,
    auth: String,
}

impl Api {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("Authorization", &self.auth)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> Res<Value> {
        let mut req = self.req(method, path);
        if let Some(body) = body {
            req = req.body(body);
        }
        let res = req.send().await?;
        let status = res.status();
        let text = res.text().await?;
        if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
            return Err(format!("{path}: {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str) -> Res<Value> {
        self.call(reqwest::Method::POST, path, None).await
    }

    async fn get(&self, path: &str) -> Res<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn wait(&self, path: &str, field: &str, want: &str) -> Res<Value> {
        loop {
            let v = self.get(path).await?;
            match v[field].as_str() {
                Some(s) if s == want => return Ok(v),
                Some("error" | "killed") => return Err(format!("{path}: {v}").into()),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Bulk-imports `parts` into `db.table`; (upload, perform, commit) durations.
    async fn bulk_import(
        &self,
        session: &str,
        db: &str,
        table: &str,
        parts: Vec<Vec<u8>>,
    ) -> Res<[Duration; 3]> {
        let start = Instant::now();
        self.post(&format!("/v3/bulk_import/create/{session}/{db}/{table}"))
            .await?;
        for (n, part) in parts.into_iter().enumerate() {
            self.call(
                reqwest::Method::PUT,
                &format!("/v3/bulk_import/upload_part/{session}/part_{n:06}"),
                Some(part),
            )
            .await?;
        }
        let uploaded = start.elapsed();
        self.post(&format!("/v3/bulk_import/freeze/{session}")).await?;
        let job = self.post(&format!("/v3/bulk_import/perform/{session}")).await?;
        let job = job["job_id"].as_str().ok_or("no job_id")?.to_string();
        self.wait(&format!("/v3/job/status/{job}"), "status", "success")
            .await?;
        let shown = self
            .wait(&format!("/v3/bulk_import/show/{session}"), "status", "ready")
            .await?;
        let performed = start.elapsed();
        if shown["error_records"].as_u64() != Some(0) {
            return Err(format!("perform rejected records: {shown}").into());
        }
        self.post(&format!("/v3/bulk_import/commit/{session}")).await?;
        self.wait(&format!("/v3/bulk_import/show/{session}"), "status", "committed")
            .await?;
        let committed = start.elapsed();
        Ok([uploaded, performed - uploaded, committed - performed])
    }
}

/// Deterministic www_access-like rows as gzip'd msgpack parts.
fn generate(rows: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(20141003);
    let mut parts = PartWriter::default();
    let mut row = Vec::new();
    for i in 0..rows {
        row.clear();
        rmp::encode::write_map_len(&mut row, 7).unwrap();
        let s = |row: &mut Vec<u8>, k: &str, v: &str| {
            rmp::encode::write_str(row, k).unwrap();
            rmp::encode::write_str(row, v).unwrap();
        };
        rmp::encode::write_str(&mut row, "time").unwrap();
        rmp::encode::write_sint(&mut row, FIRST_TIME + i as i64 * 12).unwrap();
        let host = format!(
            "{}.{}.{}.{}",
            rng.random_range(1..224),
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(1..255)
        );
        s(&mut row, "host", &host);
        s(&mut row, "path", PATHS[rng.random_range(0..PATHS.len())]);
        s(
            &mut row,
            "method",
            if rng.random_bool(0.9) { "GET" } else { "POST" },
        );
        rmp::encode::write_str(&mut row, "code").unwrap();
        rmp::encode::write_sint(&mut row, [200, 200, 200, 404, 500][rng.random_range(0..5)]).unwrap();
        rmp::encode::write_str(&mut row, "size").unwrap();
        rmp::encode::write_sint(&mut row, rng.random_range(30..150)).unwrap();
        s(&mut row, "agent", AGENTS[rng.random_range(0..AGENTS.len())]);
        parts.push(&row);
    }
    parts.finish()
}

/// Cuts rows into gzip parts of about PART_BYTES.
struct PartWriter {
    gz: GzEncoder<Vec<u8>>,
    batch: Vec<u8>,
    parts: Vec<Vec<u8>>,
}

impl Default for PartWriter {
    fn default() -> PartWriter {
        PartWriter {
            gz: GzEncoder::new(Vec::new(), Compression::fast()),
            batch: Vec::new(),
            parts: Vec::new(),
        }
    }
}

impl PartWriter {
    fn push(&mut self, row: &[u8]) {
        self.batch.extend_from_slice(row);
        if self.batch.len() >= 1 << 20 {
            self.gz.write_all(&self.batch).unwrap();
            self.batch.clear();
            if self.gz.get_ref().len() >= PART_BYTES {
                let gz = std::mem::replace(&mut self.gz, GzEncoder::new(Vec::new(), Compression::fast()));
                self.parts.push(gz.finish().unwrap());
            }
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.gz.write_all(&self.batch).unwrap();
        self.parts.push(self.gz.finish().unwrap());
        self.parts
    }
}

/// The result's rows (msgpack arrays) as bulk-import parts of maps keyed by `names`.
fn transcode(result: &[u8], names: &[String]) -> (u64, Vec<Vec<u8>>) {
    let mut raw = Vec::new();
    MultiGzDecoder::new(result).read_to_end(&mut raw).unwrap();
    let mut cursor = &raw[..];
    let mut parts = PartWriter::default();
    let mut row = Vec::new();
    let mut rows = 0;
    while !cursor.is_empty() {
        let value = rmpv::decode::read_value(&mut cursor).unwrap();
        let cells = value.as_array().unwrap();
        let map: Vec<(rmpv::Value, rmpv::Value)> = names
            .iter()
            .zip(cells)
            .map(|(n, v)| (rmpv::Value::from(n.as_str()), v.clone()))
            .collect();
        row.clear();
        rmpv::encode::write_value(&mut row, &rmpv::Value::Map(map)).unwrap();
        parts.push(&row);
        rows += 1;
    }
    (rows, parts.finish())
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn rate(rows: u64, d: Duration) -> String {
    format!(
        "{:>9.0} rows/s ({:.2} s)",
        rows as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args
        .next()
        .map_or(Ok(1_000_000), |a| a.replace('_', "").parse())?;
    let binary = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap();
        me.parent().unwrap().parent().unwrap().join("td-local")
    });
    let data = tempfile::tempdir()?;
    let mut server = Command::new(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = server.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or("no listening line")?
        .to_string();
    let accounts = std::fs::read_to_string(data.path().join("accounts.yml"))?;
    let key = accounts
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_key:"))
        .ok_or("no key")?
        .trim()
        .trim_matches(['"', '\''])
        .to_string();
    let api = Api {
        http: reqwest::Client::builder().no_gzip().build()?,
        url,
        auth: format!("TD1 {key}"),
    };
    println!(
        "td-local pid {pid}, {rows} rows, start RSS {:.0} MiB",
        peak_rss_mib(pid)
    );
    let outcome = run(&api, rows, pid).await;
    let _ = server.kill();
    let _ = server.wait();
    outcome
}

async fn run(api: &Api, rows: u64, pid: u32) -> Res<()> {
    api.post("/v3/database/create/perf").await?;
    for table in ["www_access", "copy"] {
        api.post(&format!("/v3/table/create/perf/{table}/log")).await?;
    }
    let form = [("schema", WWW_ACCESS_SCHEMA)];
    api.req(reqwest::Method::POST, "/v3/table/update-schema/perf/www_access")
        .form(&form)
        .send()
        .await?
        .error_for_status()?;

    let parts = generate(rows);
    let [upload, perform, commit] = api.bulk_import("load", "perf", "www_access", parts).await?;
    println!("load upload           {}", rate(rows, upload));
    println!("load perform          {}", rate(rows, perform));
    println!("load commit           {}", rate(rows, commit));
    println!("load perform+commit   {}", rate(rows, perform + commit));
    println!("  peak RSS {:.0} MiB", peak_rss_mib(pid));

    let start = Instant::now();
    let issued = api
        .req(reqwest::Method::POST, "/v3/job/issue/presto/perf")
        .form(&[("query", "SELECT * FROM www_access")])
        .send()
        .await?
        .json::<Value>()
        .await?;
    let job = issued["job_id"].as_str().ok_or("no job_id")?.to_string();
    api.wait(&format!("/v3/job/status/{job}"), "status", "success")
        .await?;
    let query = start.elapsed();
    println!("SELECT * query        {}", rate(rows, query));
    println!("  peak RSS {:.0} MiB", peak_rss_mib(pid));

    let start = Instant::now();
    let result = api
        .req(
            reqwest::Method::GET,
            &format!("/v3/job/result/{job}?format=msgpack.gz"),
        )
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let download = start.elapsed();
    println!(
        "download              {} {:.1} MiB",
        rate(rows, download),
        result.len() as f64 / 1048576.0
    );
    println!("  peak RSS {:.0} MiB", peak_rss_mib(pid));

    let shown = api.get(&format!("/v3/job/show/{job}")).await?;
    let schema: Vec<(String, String)> =
        serde_json::from_str(shown["hive_result_schema"].as_str().ok_or("no schema")?)?;
    let names: Vec<String> = schema.into_iter().map(|(n, _)| n).collect();
    let (copied, parts) = transcode(&result, &names);
    drop(result);
    if copied != rows {
        return Err(format!("the result holds {copied} rows, not {rows}").into());
    }
    let [upload, perform, commit] = api.bulk_import("copy", "perf", "copy", parts).await?;
    println!("copy upload           {}", rate(rows, upload));
    println!("copy perform          {}", rate(rows, perform));
    println!("copy commit           {}", rate(rows, commit));
    println!("copy perform+commit   {}", rate(rows, perform + commit));
    println!("peak RSS over the run {:.0} MiB", peak_rss_mib(pid));
    Ok(())
}
