//! Setting a td-local up from the command line, the way a user sets up TD with the `td` toolbelt:
//! the keys a spec needs as environment variables, a database, a table, rows loaded from a file,
//! a query issued, a saved result and a console connection. Every step goes through TD's API
//! (the server already serving the data directory, or one started for the step), so what it makes
//! is what the same call makes on TD, checks included.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::accounts::{self, Account};
use crate::error::{Error, Result};
use crate::records::{gzip_msgpack, read_msgpack_values};
use crate::server::{Config, Embedded, TdLocal};

/// How often a step that waits for a job looks at it.
const JOB_POLL: Duration = Duration::from_millis(100);

/// The file formats `load` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RowFormat {
    /// A header line of column names, then one row a line; numbers are numbers, empty is null.
    Csv,
    /// One JSON object a line.
    Jsonl,
    /// msgpack maps back to back, gzipped or not.
    Msgpack,
}

impl RowFormat {
    /// The format a file's name says (`.csv`, `.jsonl`/`.json`/`.ndjson`, `.msgpack[.gz]`).
    pub fn of(path: &Path) -> Option<RowFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        match name.rsplit('.').next()? {
            "csv" => Some(RowFormat::Csv),
            "jsonl" | "json" | "ndjson" => Some(RowFormat::Jsonl),
            "msgpack" | "mpk" => Some(RowFormat::Msgpack),
            _ => None,
        }
    }
}

/// A td-local's data directory, reached through TD's API as one of its accounts.
pub(crate) struct Local {
    /// The server this step started (none when one already serves the directory).
    _started: Option<Box<TdLocal>>,
    base_url: String,
    account: Account,
    http: reqwest::Client,
}

/// The account `id` of `dir`'s accounts.yml (made, with fresh keys, the first time).
pub(crate) fn account(dir: &Path, id: i64) -> Result<Account> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::invalid(format!("cannot make the data directory {}: {e}", dir.display())))?;
    let all = accounts::load_or_create(dir)?;
    let ids: Vec<String> = all.iter().map(|a| a.id.to_string()).collect();
    all.into_iter().find(|a| a.id == id).ok_or_else(|| {
        Error::not_found(format!(
            "account {id} is not in {} (its accounts: {})",
            dir.join(accounts::ACCOUNTS_FILE).display(),
            ids.join(", ")
        ))
    })
}

/// The `export` lines that give a spec its keys: the source account's master key as
/// `TD_API_KEY` (what `td.apikey` falls back to) and the target's as `target_var` (by default
/// `TARGET_APIKEY`, what `${secret:target.apikey}` reads).
pub(crate) fn env_lines(
    dir: &Path,
    source: i64,
    target: i64,
    write_only_target: bool,
    target_var: &str,
) -> Result<String> {
    let valid = !target_var.is_empty()
        && target_var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(Error::invalid(format!(
            "--target-var '{target_var}' is not a variable name (A-Z, 0-9, _)"
        )));
    }
    let (source, target) = (account(dir, source)?, account(dir, target)?);
    let target_key = if write_only_target {
        &target.write_only_key
    } else {
        &target.master_key
    };
    Ok(format!(
        "export TD_API_KEY='{}'\nexport {target_var}='{}'\n",
        source.master_key, target_key
    ))
}

impl Local {
    /// Reaches `dir` as account `id`: through the server serving it, else one started here.
    pub(crate) async fn open(dir: &Path, id: i64) -> Result<Local> {
        let account = account(dir, id)?;
        let embedded = TdLocal::embedded(Config {
            admin: true,
            ..Config::new(PathBuf::from(dir))
        })
        .await?;
        let base_url = embedded.base_url();
        let started = match embedded {
            Embedded::Started(td) => Some(td),
            Embedded::Running(_) => None,
        };
        Ok(Local {
            _started: started,
            base_url,
            account,
            http: reqwest::Client::new(),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Body) -> Result<Value> {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header("Authorization", format!("TD1 {}", self.account.master_key));
        let request = match body {
            Body::None => request,
            Body::Form(form) => request.form(&form),
            Body::Bytes(bytes) => request.body(bytes),
        };
        let response = request
            .send()
            .await
            .map_err(|e| Error::internal(format!("td-local at {} did not answer: {e}", self.base_url)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Error::internal(format!("reading td-local's answer: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        Err(match status.as_u16() {
            404 => Error::not_found(message),
            409 => Error::conflict(message),
            400 => Error::bad_request(message),
            _ => Error::invalid(message),
        })
    }

    async fn post(&self, path: &str, form: Vec<(&str, String)>) -> Result<Value> {
        let form = form.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        self.call(reqwest::Method::POST, path, Body::Form(form)).await
    }

    pub(crate) async fn create_database(&self, db: &str) -> Result<()> {
        self.post(&format!("/v3/database/create/{}", seg(db)), vec![])
            .await
            .map(drop)
    }

    /// A log table, with its schema when given (`[[name, type], …]` as JSON text).
    pub(crate) async fn create_table(&self, db: &str, table: &str, schema: Option<&str>) -> Result<()> {
        let form = schema
            .map(|s| vec![("schema", s.to_string())])
            .unwrap_or_default();
        self.post(&format!("/v3/table/create/{}/{}/log", seg(db), seg(table)), form)
            .await
            .map(drop)
    }

    /// Imports `rows` (each given `time` when it has none); returns how many.
    pub(crate) async fn load(&self, db: &str, table: &str, mut rows: Vec<Value>, time: i64) -> Result<usize> {
        for row in &mut rows {
            let Value::Object(map) = row else {
                return Err(Error::invalid(format!("a row is not a map of columns: {row}")));
            };
            map.entry("time").or_insert(Value::from(time));
        }
        let body = gzip_msgpack(&rows)?;
        let path = format!("/v3/table/import/{}/{}/msgpack.gz", seg(db), seg(table));
        self.call(reqwest::Method::PUT, &path, Body::Bytes(body)).await?;
        Ok(rows.len())
    }

    /// Issues `sql` on `db` and waits for the job: its id once it succeeded, else its error.
    pub(crate) async fn issue(
        &self,
        engine: &str,
        db: &str,
        sql: &str,
        result: Option<&str>,
    ) -> Result<String> {
        let mut form = vec![("query", sql.to_string())];
        form.extend(result.map(|r| ("result", r.to_string())));
        let issued = self
            .post(&format!("/v3/job/issue/{}/{}", seg(engine), seg(db)), form)
            .await?;
        let id = issued["job_id"].as_str().unwrap_or_default().to_string();
        loop {
            let shown = self
                .call(reqwest::Method::GET, &format!("/v3/job/show/{id}"), Body::None)
                .await?;
            match shown["status"].as_str() {
                Some("success") => return Ok(id),
                Some("error") | Some("killed") => {
                    return Err(Error::invalid(format!(
                        "job {id} failed: {}",
                        shown["debug"]["stderr"].as_str().unwrap_or("(no message)").trim()
                    )))
                }
                _ => tokio::time::sleep(JOB_POLL).await,
            }
        }
    }

    /// A saved result (`td result:create NAME URL`).
    pub(crate) async fn create_result(&self, name: &str, url: &str) -> Result<()> {
        self.post(
            &format!("/v3/result/create/{}", seg(name)),
            vec![("url", url.to_string())],
        )
        .await
        .map(drop)
    }

    /// A connection as TD's console makes one: its key held by td-local. Returns its id.
    pub(crate) async fn create_connection(&self, name: &str, url: &str) -> Result<i64> {
        let made = self
            .post(
                &format!("/_td_local/connections/{}", seg(name)),
                vec![("url", url.to_string())],
            )
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::invalid(format!(
                    "the td-local serving this directory has no admin routes: restart it with \
                     `td-local serve --admin` to make a console connection ({e})"
                )),
                e => e,
            })?;
        Ok(made["id"].as_i64().unwrap_or_default())
    }
}

enum Body {
    None,
    Form(Vec<(String, String)>),
    Bytes(Vec<u8>),
}

/// A path segment, percent-encoded.
fn seg(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The rows of a file in `format`.
pub(crate) fn read_rows(path: &Path, format: RowFormat) -> Result<Vec<Value>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .map_err(|e| Error::invalid(format!("{} is not valid gzip: {e}", path.display())))?;
        plain
    } else {
        bytes
    };
    let at = |line: usize, why: String| Error::invalid(format!("{}:{line}: {why}", path.display()));
    match format {
        RowFormat::Jsonl => {
            let text = String::from_utf8_lossy(&bytes);
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| serde_json::from_str(l).map_err(|e| at(i + 1, e.to_string())))
                .collect()
        }
        RowFormat::Csv => {
            let mut reader = csv::Reader::from_reader(&bytes[..]);
            let names: Vec<String> = reader
                .headers()
                .map_err(|e| at(1, e.to_string()))?
                .iter()
                .map(str::to_owned)
                .collect();
            let mut rows = Vec::new();
            for (i, record) in reader.records().enumerate() {
                let record = record.map_err(|e| at(i + 2, e.to_string()))?;
                let row: Map<String, Value> = names
                    .iter()
                    .zip(record.iter())
                    .map(|(name, text)| (name.clone(), csv_value(text)))
                    .collect();
                rows.push(Value::Object(row));
            }
            widen_numbers(&mut rows, &names);
            Ok(rows)
        }
        RowFormat::Msgpack => {
            let mut rows = Vec::new();
            read_msgpack_values(&bytes[..], |v| {
                rows.push(crate::records::msgpack_to_json(v));
                Ok(())
            })?;
            Ok(rows)
        }
    }
}

/// A column of CSV numbers with a fraction anywhere is a column of doubles: its integers are
/// written as doubles too, so the table's column (typed by the first value TD sees) reads all
/// of them (a double in a `long` column reads as NULL).
fn widen_numbers(rows: &mut [Value], names: &[String]) {
    for name in names {
        let fractional = rows.iter().any(|r| r[name.as_str()].is_f64());
        if !fractional {
            continue;
        }
        for row in rows.iter_mut() {
            if let Some(i) = row[name.as_str()].as_i64() {
                row[name.as_str()] = Value::from(i as f64);
            }
        }
    }
}

/// A CSV field: an integer, else a finite number, else text; empty is null.
fn csv_value(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::from(f),
        _ => Value::String(text.to_string()),
    }
}
