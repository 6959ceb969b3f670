//! Running the binary in a clean, isolated environment.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;

/// The `td-result-export` binary, which Cargo builds before it runs this suite.
pub fn operator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_td-result-export"))
}

/// Root of the repository (for `schema/` and `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

/// A scratch directory that is the working directory and HOME of the commands it runs, so no
/// `TD_API_KEY`, `~/.td/td.conf` or `.td-local/` of the machine leaks into a test.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file in the sandbox and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// The binary with an empty environment except HOME = the sandbox, run in the sandbox.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(operator_bin());
        cmd.env_clear().env("HOME", self.path()).current_dir(self.path());
        cmd
    }
}

/// Snapshot settings for what the binary prints: what changes from run to run (`extra` pairs of
/// text → placeholder, loopback ports, durations, key-shaped strings, session hashes) is replaced,
/// so a snapshot pins the words users read and nothing else.
pub fn cli_snapshots(extra: &[(&str, &str)]) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    for (text, placeholder) in extra {
        settings.add_filter(&regex::escape(text), *placeholder);
    }
    settings.add_filter(r"\b\d+/[0-9a-fA-F]{40}\b", "[KEY]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(r"\bin \d+\.\d+ s\b", "in [SECS] s");
    settings.add_filter(r"tdre_[0-9a-f]{16}", "tdre_[HASH]");
    settings.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z", "[TIME]");
    settings
}

/// A case name as a snapshot name: `misspelt mode` → `misspelt_mode`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        match c {
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            _ if out.ends_with('_') || out.is_empty() => {}
            _ => out.push('_'),
        }
    }
    out.trim_end_matches('_').to_string()
}

/// A string shaped like a real TD API key (`<id>/<40 hex>`), distinct per `seed`.
pub fn fake_key(account: u32, seed: u8) -> String {
    format!("{account}/{}", format!("{seed:02x}").repeat(20))
}

// ---- e2e: a td-local in process and the binary run against it, with checks every run must pass ----

/// The knob that turns every wait of the operator (retries, Retry-After, polling) into milliseconds.
pub const FAST: (&str, &str) = ("TDRE_TIME_SCALE", "0.001");

/// A td-local on loopback (port 0) with its data in a temp dir, served by a runtime of its own so
/// plain `#[test]` functions can run the binary against it; and a sandbox to run the binary in.
///
/// Accounts are numbered as td-local numbers them (1 and 2). Specs name the keys as secrets that
/// every run receives through the environment: `${secret:source_key}` (account 1 master),
/// `${secret:target_key}` (account 2 master), `${secret:target_wo_key}` (account 2 write-only).
pub struct TdLocalRun {
    // Field order is drop order: the server, then its runtime, then its data.
    pub server: td_local::TdLocal,
    pub rt: tokio::runtime::Runtime,
    pub _data: tempfile::TempDir,
    pub sandbox: Sandbox,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct RunOutcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The status document it left (`Value::Null` when none was asked for or written).
    pub status: serde_json::Value,
}

impl RunOutcome {
    /// What a finished process printed, with the status document it left at `status_path`.
    pub fn from_output(out: std::process::Output, status_path: &Path) -> RunOutcome {
        RunOutcome {
            code: out.status.code().expect("exited, not killed by a signal"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: read_status(status_path),
        }
    }

    /// Panics with the run's output unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> &RunOutcome {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}\nstatus: {:#}",
            self.stdout, self.stderr, self.status
        );
        self
    }

    /// The error message of the status document (empty when there is none).
    pub fn error_message(&self) -> &str {
        self.status["error"]["message"].as_str().unwrap_or_default()
    }
}

impl TdLocalRun {
    /// A td-local as served by default: table counts lag a commit or rename by about 2 s, as
    /// TD's lag (by minutes); with the operator's waits scaled down, its count check ends
    /// `count_pending`.
    pub fn start() -> TdLocalRun {
        TdLocalRun::start_with_count_lag(td_local::CountLag::default())
    }

    /// A td-local whose table counts lag by `lag` (`CountLag::none()`: exact counts).
    pub fn start_with_count_lag(lag: td_local::CountLag) -> TdLocalRun {
        let data = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = rt
            .block_on(td_local::TdLocal::start(td_local::Config {
                count_lag: lag,
                ..td_local::Config::new(data.path().join("td"))
            }))
            .expect("td-local starts");
        TdLocalRun {
            server,
            rt,
            _data: data,
            sandbox: Sandbox::new(),
        }
    }

    /// `127.0.0.1:PORT`, for td:// URLs.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn master(&self, account: i64) -> String {
        self.account(account).master_key.clone()
    }

    pub fn write_only(&self, account: i64) -> String {
        self.account(account).write_only_key.clone()
    }

    fn account(&self, id: i64) -> &td_local::Account {
        self.server
            .accounts()
            .iter()
            .find(|a| a.id == id)
            .unwrap_or_else(|| panic!("td-local has no account {id}"))
    }

    /// A key of this td-local named as `${local:…}` names it: `account2.master_key`,
    /// `account1.write_only_key`.
    pub fn local_key(&self, name: &str) -> String {
        let (account, kind) = name
            .strip_prefix("account")
            .and_then(|rest| rest.split_once('.'))
            .unwrap_or_else(|| panic!("`{name}` is not accountN.master_key or accountN.write_only_key"));
        let account: i64 = account
            .parse()
            .unwrap_or_else(|_| panic!("`{name}`: no account number"));
        match kind {
            "master_key" => self.master(account),
            "write_only_key" => self.write_only(account),
            other => panic!("`{name}`: `{other}` is not master_key or write_only_key"),
        }
    }

    /// The result of `account`'s job `id` as records keyed by its column names (from the job's
    /// `hive_result_schema`), read as a client reads it (`job/result?format=json`, a JSON array a
    /// line): what an export of the job writes, but for `time`.
    pub fn result_records(&self, account: i64, id: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let schema = self
            .job(account, id)
            .hive_result_schema
            .expect("the job has a result schema");
        let columns: Vec<(String, String)> =
            serde_json::from_str(&schema).expect("the result schema is JSON");
        let request = reqwest::Client::new()
            .get(format!(
                "{}/v3/job/result/{id}?format=json",
                self.server.base_url()
            ))
            .header("Authorization", format!("TD1 {}", self.master(account)))
            .send();
        let text = self.rt.block_on(async {
            let response = request.await.expect("request sent");
            assert!(
                response.status().is_success(),
                "job/result answers {}",
                response.status()
            );
            response.text().await.expect("the result is text")
        });
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let cells: Vec<serde_json::Value> = serde_json::from_str(line).expect("a JSON array a row");
                columns.iter().map(|(name, _)| name.clone()).zip(cells).collect()
            })
            .collect()
    }

    /// Every key of every account: none may ever be printed or written into a status document.
    pub fn keys(&self) -> Vec<String> {
        self.server
            .accounts()
            .iter()
            .flat_map(|a| [a.master_key.clone(), a.write_only_key.clone()])
            .collect()
    }

    /// The spec lines for the source account: account 1 on this server, key from a secret.
    pub fn source_yaml(&self) -> String {
        format!(
            "td: {{endpoint: 'http://{}', apikey: '${{secret:source_key}}'}}\n",
            self.host()
        )
    }

    /// A td:// URL into account 2 on this server with its master key: `db/table?query`.
    pub fn target_url(&self, db_table_query: &str) -> String {
        format!("td://${{secret:target_key}}@{}/{db_table_query}", self.host())
    }

    /// The spec exporting account 1's job `job` into account 2's `db/table?query`.
    pub fn job_spec(&self, job: &str, db_table_query: &str) -> String {
        Spec::on(self).job(job).into_table(self, db_table_query).yaml()
    }

    /// A client of the operator's library for `account`'s master key (test setup only).
    pub fn client(&self, account: i64) -> td_result_export::internals::TdClient {
        td_result_export::internals::TdClient::new(
            td_result_export::internals::http_client(&Default::default()).expect("a client"),
            &self.server.base_url(),
            &self.master(account),
            td_result_export::internals::RetryPolicy::default(),
        )
    }

    /// Stores `records` (JSON maps, each with an integer `time`) in `db.table` of `account`,
    /// creating both if missing.
    pub fn insert(&self, account: i64, db: &str, table: &str, records: &[serde_json::Value]) {
        self.server
            .inspect()
            .insert(account, db, table, records)
            .expect("rows stored");
    }

    /// Creates `db` (empty) in `account`.
    pub fn create_database(&self, account: i64, db: &str) {
        self.server
            .inspect()
            .create_database(account, db)
            .expect("database created");
    }

    /// Issues `sql` on `db` of `account` as a presto job without waiting; returns its id.
    pub fn issue(&self, account: i64, db: &str, sql: &str) -> String {
        let client = self.client(account);
        self.rt
            .block_on(client.issue_query("presto", db, sql, None, &[]))
            .expect("query issued")
    }

    /// The job as TD shows it.
    pub fn job(&self, account: i64, id: &str) -> td_result_export::internals::Job {
        let client = self.client(account);
        self.rt.block_on(client.job(id)).expect("job shown")
    }

    /// Issues `sql` and waits until the job ended (any status); returns its id.
    pub fn finished_job(&self, account: i64, db: &str, sql: &str) -> String {
        let id = self.issue(account, db, sql);
        for _ in 0..600 {
            if self.job(account, &id).is_finished() {
                return id;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("job {id} did not finish in 12 s")
    }

    /// Like [`TdLocalRun::finished_job`], but the job must have succeeded.
    pub fn successful_job(&self, account: i64, db: &str, sql: &str) -> String {
        let id = self.finished_job(account, db, sql);
        let job = self.job(account, &id);
        assert_eq!(job.status.as_str(), "success", "job {id}: {:?}", job.debug);
        id
    }

    /// The rows of `db.table` of `account` (each record with its `time`), sorted by their JSON
    /// text; `None` when the table does not exist.
    pub fn rows(&self, account: i64, db: &str, table: &str) -> Option<Vec<serde_json::Value>> {
        let rows = self
            .server
            .inspect()
            .rows(account, db, table)
            .expect("rows read")?;
        let mut records: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|row| {
                let mut record = serde_json::Value::Object(row.record);
                assert_eq!(
                    record["time"], row.time,
                    "a record's time and its time column differ"
                );
                record["time"] = row.time.into();
                record
            })
            .collect();
        sort_rows(&mut records);
        Some(records)
    }

    /// The table's schema as stored: `[[name, type], …]`.
    pub fn schema(&self, account: i64, db: &str, table: &str) -> serde_json::Value {
        self.server
            .inspect()
            .schema(account, db, table)
            .expect("schema read")
            .expect("the table exists")
    }

    /// The tables of `db` in `account`, sorted.
    pub fn tables(&self, account: i64, db: &str) -> Vec<String> {
        self.server.inspect().tables(account, db).expect("tables listed")
    }

    /// The request log since the last [`TdLocalRun::clear_requests`].
    pub fn requests(&self) -> Vec<td_local::LoggedRequest> {
        self.server.faults().requests()
    }

    pub fn clear_requests(&self) {
        self.server.faults().clear_requests();
    }

    /// Logged requests of `method` whose path contains `path_part`.
    pub fn requests_to(&self, method: &str, path_part: &str) -> Vec<td_local::LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
            .collect()
    }

    /// Adds a fault rule.
    pub fn fault(&self, rule: td_local::FaultRule) -> u64 {
        self.server.faults().add(rule).expect("valid fault rule")
    }

    /// A master-key POST to the API with a form body (for calls the library client lacks, such
    /// as a `result_export` sent as TD would receive it); returns the status code and the JSON body.
    pub fn post_form(&self, account: i64, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let request = reqwest::Client::new()
            .post(format!("{}{path}", self.server.base_url()))
            .header("Authorization", format!("TD1 {}", self.master(account)))
            .form(form)
            .send();
        self.rt.block_on(async {
            let response = request.await.expect("request sent");
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(serde_json::Value::Null);
            (status, body)
        })
    }

    /// A job as `job/show` answers it, every field (the library client types only what it reads).
    pub fn job_json(&self, account: i64, id: &str) -> serde_json::Value {
        let request = reqwest::Client::new()
            .get(format!("{}/v3/job/show/{id}", self.server.base_url()))
            .header("Authorization", format!("TD1 {}", self.master(account)))
            .send();
        self.rt.block_on(async {
            let response = request.await.expect("request sent");
            response.json().await.expect("job/show answers JSON")
        })
    }

    /// Saves a result destination (a connection) named `name` with `url` on `account`.
    pub fn save_result(&self, account: i64, name: &str, url: &str) {
        self.server
            .inspect()
            .save_result(account, name, url)
            .expect("result saved");
    }

    /// Writes `spec` as `spec.yml` in the sandbox and runs `run spec.yml --status status.json`
    /// plus `args`, checked as [`TdLocalRun::run`] checks.
    pub fn export(&self, spec: &str, args: &[&str]) -> RunOutcome {
        self.sandbox.write("spec.yml", spec);
        let mut all = vec!["run", "spec.yml", "--status", "status.json"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Runs the binary in the sandbox with the keys as secrets in its environment and
    /// `TDRE_TIME_SCALE=0.001`, and checks what every run must satisfy: no key of this server in
    /// stdout, stderr or the status document; the status document (if any) valid against
    /// `schema/status.schema.json` with the process's exit code in it.
    pub fn run(&self, args: &[&str]) -> RunOutcome {
        self.run_command(self.command(args))
    }

    /// Runs `cmd` (a [`TdLocalRun::command`], maybe with more arguments or environment) to its
    /// end, with the checks of [`TdLocalRun::run`].
    pub fn run_command(&self, mut cmd: std::process::Command) -> RunOutcome {
        let out = cmd.output().expect("the binary runs");
        let outcome = RunOutcome::from_output(out, &self.sandbox.path().join("status.json"));
        check_outcome(&outcome, &self.keys());
        outcome
    }

    /// Starts a run in the background, its output kept for [`RunOutcome::from_output`].
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the operator starts")
    }

    /// The command [`TdLocalRun::run`] runs (to spawn it and signal it).
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(operator_bin());
        cmd.env_clear()
            .env("HOME", self.sandbox.path())
            .current_dir(self.sandbox.path())
            .env(FAST.0, FAST.1)
            .env("SOURCE_KEY", self.master(1))
            .env("TARGET_KEY", self.master(2))
            .env("TARGET_WO_KEY", self.write_only(2))
            .args(args);
        cmd
    }
}

/// The `time` an export gives each row of a result that has no integer `time` column of its own.
#[derive(Debug, Clone)]
pub enum RowTime {
    /// The source job's start (the default).
    JobStart,
    /// `result_settings.time`.
    Seconds(i64),
    /// `result_settings.time_column`: the column's value (seconds or a timestamp), whatever the
    /// result's `time`.
    Column(String),
}

impl TdLocalRun {
    /// The rows an export of `account`'s job `id` writes: its result ([`TdLocalRun::result_records`]),
    /// each row with its `time` — the result's own integer `time` column, else as `time` says;
    /// sorted as [`TdLocalRun::rows`] sorts them.
    pub fn exported_rows(&self, account: i64, id: &str, time: &RowTime) -> Vec<serde_json::Value> {
        let start =
            td_result_export::internals::job_start_time(&self.job(account, id)).expect("the job started");
        let rows = self.result_records(account, id).into_iter().map(|mut record| {
            let own = record.get("time").and_then(serde_json::Value::as_i64);
            let t = match (time, own) {
                (RowTime::Column(column), _) => match &record[column] {
                    serde_json::Value::Number(n) => n.as_i64().expect("integer seconds"),
                    serde_json::Value::String(s) => td_model::time::parse_time(s).expect("a timestamp"),
                    other => panic!("{column} holds {other}"),
                },
                (_, Some(own)) => own,
                (RowTime::JobStart, None) => start,
                (RowTime::Seconds(s), None) => *s,
            };
            record.insert("time".into(), t.into());
            serde_json::Value::Object(record)
        });
        sorted(rows.collect())
    }
}

/// The status document at `path`, or `Value::Null` when there is none.
pub fn read_status(path: &Path) -> serde_json::Value {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).expect("the status document is JSON"),
        Err(_) => serde_json::Value::Null,
    }
}

/// The checks every run passes: no key leaks; a status document that is valid and agrees with
/// the exit code.
pub fn check_outcome(outcome: &RunOutcome, keys: &[String]) {
    let document = outcome.status.to_string();
    for key in keys {
        for (what, text) in [
            ("stdout", outcome.stdout.as_str()),
            ("stderr", &outcome.stderr),
            ("the status document", &document),
        ] {
            assert!(
                !text.contains(key.as_str()),
                "an API key appears in {what}:\n{text}"
            );
        }
    }
    if !outcome.status.is_null() {
        assert_valid_status(&outcome.status);
        assert_eq!(
            outcome.status["exit_code"], outcome.code,
            "the status document's exit_code is the process's: {:#}",
            outcome.status
        );
    }
}

/// Asserts that `doc` is valid against `schema/status.schema.json`, listing every violation.
pub fn assert_valid_status(doc: &serde_json::Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let text =
            std::fs::read_to_string(repo_root().join("schema/status.schema.json")).expect("schema file");
        let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the status schema compiles")
    });
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the status document is not valid against schema/status.schema.json:\n{}\n{doc:#}",
        errors.join("\n")
    );
}

/// Sorts rows by their JSON text: canonical, as serde_json's default map keeps keys sorted.
pub fn sort_rows(rows: &mut [serde_json::Value]) {
    rows.sort_by_cached_key(|r| r.to_string());
}

/// The same rows, sorted as [`TdLocalRun::rows`] sorts them.
pub fn sorted(mut rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    sort_rows(&mut rows);
    rows
}

// ---- faults and crashes: one source job with many rows, exported again and again ----

/// The database [`ExportFixture`] writes into (account 2).
pub const TARGET_DB: &str = "dstdb";

/// `n` deterministic source records (`id`, `name`, `score`, `time`), varied enough that their
/// gzip'd msgpack takes some room (about 10 bytes a row).
pub fn source_records(n: usize, seed: u64) -> Vec<serde_json::Value> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = rng.random_range(6..24);
            let name: String = (0..len)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect();
            serde_json::json!({
                "id": i as i64,
                "name": name,
                "score": (i as f64) * 0.25,
                "time": 1_700_000_000i64 + i as i64 * 7,
            })
        })
        .collect()
}

/// A td-local with a finished source job (account 1, `srcdb.events`) and a target database
/// (account 2), from which each case exports into a table of its own.
pub struct ExportFixture {
    pub td: TdLocalRun,
    pub job_id: String,
    /// The rows one export writes, sorted as [`TdLocalRun::rows`] sorts them.
    pub expected: Vec<serde_json::Value>,
    /// `TDRE_PART_BYTES` for the runs, so the result spreads over several parts. Deflate emits
    /// its output in blocks of about 20 kB, so below that each block makes a part.
    pub part_bytes: usize,
}

impl ExportFixture {
    pub fn new(rows: usize, seed: u64) -> ExportFixture {
        ExportFixture::on(TdLocalRun::start(), rows, seed)
    }

    /// The fixture on a td-local started by the caller (e.g. with exact counts).
    pub fn on(td: TdLocalRun, rows: usize, seed: u64) -> ExportFixture {
        let records = source_records(rows, seed);
        td.insert(1, "srcdb", "events", &records);
        let job_id = td.successful_job(1, "srcdb", "SELECT id, name, score, time FROM events");
        td.create_database(2, TARGET_DB);
        ExportFixture {
            td,
            job_id,
            expected: sorted(records),
            part_bytes: 16_000,
        }
    }

    /// A fixture exporting `job_id` of account 1, whose export writes `expected` (sorted);
    /// account 2's target database must exist.
    pub fn with_job(td: TdLocalRun, job_id: String, expected: Vec<serde_json::Value>) -> ExportFixture {
        ExportFixture {
            td,
            job_id,
            expected,
            part_bytes: 16_000,
        }
    }

    /// Writes the spec of a `stream` export of the source job into `table` in `mode`; returns
    /// its file name in the sandbox.
    pub fn spec(&self, mode: &str, table: &str) -> String {
        self.spec_with(mode, table, "")
    }

    /// The spec with `extra` YAML lines added (e.g. `transfer: server\n`).
    pub fn spec_with(&self, mode: &str, table: &str, extra: &str) -> String {
        let name = format!("export-{mode}-{table}.yml");
        self.td
            .sandbox
            .write(&name, &self.spec_of(mode, table, extra).yaml());
        name
    }

    /// The spec [`ExportFixture::spec_with`] writes: `extra` is YAML of more top-level keys.
    pub fn spec_of(&self, mode: &str, table: &str, extra: &str) -> Spec {
        let extra: serde_json::Map<String, serde_json::Value> = match extra.trim() {
            "" => serde_json::Map::new(),
            text => serde_yaml_ng::from_str(text).expect("extra spec lines are a YAML map"),
        };
        let spec = Spec::on(&self.td)
            .job(&self.job_id)
            .into_table(&self.td, &format!("{TARGET_DB}/{table}?mode={mode}"));
        extra.into_iter().fold(spec, |spec, (k, v)| spec.with(&k, v))
    }

    /// The operator, ready to run `spec` with millisecond waits and small parts.
    pub fn command_for(&self, spec: &str) -> std::process::Command {
        let mut cmd = self.td.command(&["run", spec, "--status", "status.json"]);
        cmd.env("TDRE_PART_BYTES", self.part_bytes.to_string())
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs `spec` to its end, with the checks of [`TdLocalRun::run`] (no key leaks, a valid
    /// status document that agrees with the exit code).
    pub fn run_spec(&self, spec: &str) -> RunOutcome {
        self.td.run_command(self.command_for(spec))
    }

    /// The status document the last run left.
    pub fn status(&self) -> serde_json::Value {
        read_status(&self.td.sandbox.path().join("status.json"))
    }

    /// The rows of `table` in the target database, sorted; empty when it does not exist.
    pub fn rows_of(&self, table: &str) -> Vec<serde_json::Value> {
        self.td.rows(2, TARGET_DB, table).unwrap_or_default()
    }

    /// Tables of the target database a replace left behind (`<table>_tdre_<hex>`).
    pub fn temp_tables(&self) -> Vec<String> {
        self.td
            .tables(2, TARGET_DB)
            .into_iter()
            .filter(|t| t.contains("_tdre_"))
            .collect()
    }

    /// Asserts `table` holds exactly `expected` (as multisets: both sorted), readably.
    pub fn assert_rows(&self, table: &str, expected: &[serde_json::Value], context: &str) {
        let found = self.rows_of(table);
        if found != expected {
            let missing = expected.iter().filter(|r| !found.contains(r)).count();
            panic!(
                "{context}: {table} holds {} row(s), expected {} ({missing} expected row(s) missing; \
                 first found: {:?})",
                found.len(),
                expected.len(),
                found.first()
            );
        }
    }
}

impl RunOutcome {
    /// Like [`RunOutcome::expect_code`], naming the case.
    pub fn expect_exit(&self, code: i32, context: &str) -> &RunOutcome {
        assert_eq!(
            self.code, code,
            "{context}: exit code\nstdout:\n{}\nstderr:\n{}\nstatus: {:#}",
            self.stdout, self.stderr, self.status
        );
        self
    }
}

/// The commands of a how-to: the lines that start with `prefix` (the prefix dropped), each joined
/// with the continuation lines that follow a line ending in `\` (`continuation` dropped from them).
pub fn recipe_commands<'a>(
    lines: impl Iterator<Item = &'a str>,
    prefix: &str,
    continuation: &str,
) -> Vec<String> {
    let mut commands: Vec<String> = Vec::new();
    let mut continued = false;
    for line in lines {
        if let Some(command) = line.strip_prefix(prefix) {
            commands.push(command.to_string());
        } else if continued {
            let last = commands.last_mut().unwrap();
            last.push('\n');
            last.push_str(line.strip_prefix(continuation).unwrap_or(line));
        } else {
            continue;
        }
        continued = line.trim_end().ends_with('\\');
    }
    commands
}

/// Runs a how-to's commands with bash in `dir`, as a user would with the package installed: this
/// build's binaries first on PATH, HOME at `dir`, nothing else in the environment. Returns the
/// script and what it did.
pub fn run_recipe(commands: &[String], dir: &Path) -> (String, std::process::Output) {
    let bin_dir = operator_bin().parent().unwrap().to_path_buf();
    let script = format!("set -euo pipefail\n{}\n", commands.join("\n"));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    (script, out)
}

/// A task spec built by key and written out as YAML by serde: a test says what its spec holds,
/// not how YAML spells it (quoting, escapes and nesting are the serializer's).
#[derive(Debug, Clone)]
pub struct Spec(serde_json::Map<String, serde_json::Value>);

impl Spec {
    /// `td_result_export>:` reading from account 1 of `td`, its key from the secret `source_key`.
    pub fn on(td: &TdLocalRun) -> Spec {
        Spec(serde_json::Map::new())
            .with("td_result_export>", serde_json::Value::Null)
            .with(
                "td",
                serde_json::json!({"endpoint": format!("http://{}", td.host()), "apikey": "${secret:source_key}"}),
            )
    }

    /// Any top-level key.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Spec {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// Exports the finished job `id`.
    pub fn job(self, id: &str) -> Spec {
        self.with("job_id", id)
    }

    /// Writes to `result_url`.
    pub fn url(self, url: impl Into<String>) -> Spec {
        self.with("result_url", url.into())
    }

    /// Writes into account 2 of `td`: `db/table?query`, as [`TdLocalRun::target_url`].
    pub fn into_table(self, td: &TdLocalRun, db_table_query: &str) -> Spec {
        let url = td.target_url(db_table_query);
        self.url(url)
    }

    /// Writes through the connection `name`.
    pub fn connection(self, name: &str) -> Spec {
        self.with("result_connection", name)
    }

    /// `result_settings`, a JSON map.
    pub fn settings(self, settings: serde_json::Value) -> Spec {
        self.with("result_settings", settings)
    }

    /// The spec as YAML text.
    pub fn yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.0).expect("a spec serializes")
    }
}
