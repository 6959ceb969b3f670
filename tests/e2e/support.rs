//! Running the binary in a clean, isolated environment.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;

/// The `td-result-export` binary, freshly built.
///
/// Cargo builds another package's binaries only when that package's own tests run, so a plain
/// `cargo test -p tdre-tests` could run a stale binary (or none). The first call runs
/// `cargo build --bin td-result-export` into this test binary's own target dir and profile (a no-op
/// when it is up to date, as under `cargo test --workspace`).
pub fn operator_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => "dev",
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "td-result-export",
                "--bin",
                "td-result-export",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building td-result-export failed");
        profile_dir.join(format!("td-result-export{}", std::env::consts::EXE_SUFFIX))
    })
}

/// Root of the repository (for `schema/` and `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
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

/// A string shaped like a real TD API key (`<id>/<40 hex>`), distinct per `seed`.
pub fn fake_key(account: u32, seed: u8) -> String {
    format!("{account}/{}", format!("{seed:02x}").repeat(20))
}

// ---- td-local in process, a source job with many rows, the target's rows (faults, crash) ----

/// The same binary as [`Sandbox::cmd`], as a plain `std::process::Command` (to spawn and kill).
pub fn sandboxed_command(sandbox: &Sandbox) -> std::process::Command {
    let mut cmd = std::process::Command::new(operator_bin());
    cmd.env_clear()
        .env("HOME", sandbox.path())
        .current_dir(sandbox.path());
    cmd
}

/// A td-local serving on loopback (port 0) from a temp dir, on a runtime of its own, so plain
/// `#[test]` functions can run the operator binary against it.
pub struct LocalTd {
    // Field order is drop order: the server, then its runtime, then its data.
    pub td: td_local::TdLocal,
    pub rt: tokio::runtime::Runtime,
    pub _dir: tempfile::TempDir,
}

impl LocalTd {
    pub fn start() -> LocalTd {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let td = rt
            .block_on(td_local::TdLocal::start(td_local::Config::new(
                dir.path().join("td"),
            )))
            .expect("td-local starts");
        LocalTd { td, rt, _dir: dir }
    }

    pub fn base_url(&self) -> String {
        self.td.base_url()
    }

    /// The master key of account `n` (0-based).
    pub fn master_key(&self, n: usize) -> String {
        self.td.accounts()[n].master_key.clone()
    }

    pub fn account_id(&self, n: usize) -> i64 {
        self.td.accounts()[n].id
    }

    pub fn faults(&self) -> &td_local::Faults {
        self.td.faults()
    }

    /// A client of the operator's library for account `n`, with the default retry policy.
    pub fn client(&self, n: usize) -> td_result_export::td::TdClient {
        td_result_export::td::TdClient::new(
            td_result_export::td::http_client(),
            &self.base_url(),
            &self.master_key(n),
            td_result_export::retry::RetryPolicy::default(),
        )
    }

    /// Appends `records` (JSON maps, each with an integer `time`) to `db.table` of account `n`,
    /// creating both if missing.
    pub fn insert_records(&self, n: usize, db: &str, table: &str, records: &[serde_json::Value]) {
        let account = self.account_id(n);
        let rows: Vec<td_local::records::Row> = records
            .iter()
            .map(|r| td_local::records::Row {
                time: r["time"].as_i64().expect("records have an integer time"),
                record: r.as_object().expect("records are maps").clone(),
            })
            .collect();
        self.td
            .store()
            .write(|tx| {
                td_local::store::ensure_database(tx, account, db)?;
                let table_id = td_local::store::ensure_table(tx, account, db, table)?;
                td_local::records::insert_rows(tx, table_id, &rows)
            })
            .expect("rows inserted");
    }

    /// Runs `sql` on `db` of account `n` as a presto job and waits for its success; returns its id.
    pub fn finished_query(&self, n: usize, db: &str, sql: &str) -> String {
        let client = self.client(n);
        self.rt.block_on(async {
            let id = client
                .issue_query("presto", db, sql, None)
                .await
                .expect("query issued");
            for _ in 0..600 {
                let job = client.job(&id).await.expect("job shown");
                match job.status.as_str() {
                    "success" => return id,
                    "error" | "killed" => panic!("query job {id} ended {}: {:?}", job.status, job.debug),
                    _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            }
            panic!("query job {id} did not finish in 30 s")
        })
    }

    /// The rows of `db.table` of account `n` as canonical JSON texts (keys sorted), sorted, so
    /// two tables compare as multisets; `None` when the table does not exist.
    pub fn table_rows(&self, n: usize, db: &str, table: &str) -> Option<Vec<String>> {
        let account = self.account_id(n);
        self.td
            .store()
            .read(|conn| {
                let Ok(table_id) = td_local::store::table_id(conn, account, db, table) else {
                    return Ok(None);
                };
                let mut stmt = conn.prepare("SELECT record FROM records WHERE table_id = ?1")?;
                let texts = stmt
                    .query_map([table_id], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(Some(texts))
            })
            .expect("rows read")
            .map(|texts| {
                let mut rows: Vec<String> = texts.iter().map(|t| canonical_json(t)).collect();
                rows.sort_unstable();
                rows
            })
    }

    /// The names of the tables in `db` of account `n`, sorted.
    pub fn table_names(&self, n: usize, db: &str) -> Vec<String> {
        let account = self.account_id(n);
        self.td
            .store()
            .read(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT t.name FROM tables t JOIN databases d ON d.id = t.database_id \
                     WHERE d.account_id = ?1 AND d.name = ?2 ORDER BY t.name",
                )?;
                let names = stmt
                    .query_map(rusqlite::params![account, db], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(names)
            })
            .expect("tables listed")
    }
}

/// A JSON text re-serialized with its object keys sorted (whatever map order serde_json keeps).
pub fn canonical_json(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).expect("stored records are JSON");
    write_sorted(&value)
}

fn write_sorted(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        write_sorted(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(write_sorted).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// `n` deterministic source records (`id`, `name`, `score`, `time`), varied enough that their
/// gzip'd msgpack takes some room.
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

/// Canonical texts of records, sorted: what [`LocalTd::table_rows`] returns for a table that
/// holds exactly these records.
pub fn canonical_rows(records: &[serde_json::Value]) -> Vec<String> {
    let mut rows: Vec<String> = records.iter().map(|r| canonical_json(&r.to_string())).collect();
    rows.sort_unstable();
    rows
}

/// The same rows, each `times` times.
pub fn repeated(rows: &[String], times: usize) -> Vec<String> {
    let mut all: Vec<String> = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.clone(), times))
        .collect();
    all.sort_unstable();
    all
}

/// Where [`ExportFixture`] writes: account 1 (0-based), this database and table.
pub const TARGET_DB: &str = "dstdb";
pub const TARGET_TABLE: &str = "events_out";

/// One td-local with a finished source job (account 0, `srcdb.events`, `rows` rows) and a target
/// database (account 1), a sandbox to run the operator in, and the rows one export must write.
pub struct ExportFixture {
    pub td: LocalTd,
    pub sandbox: Sandbox,
    pub job_id: String,
    /// Canonical rows of the source job's result, sorted.
    pub expected: Vec<String>,
    /// `TDRE_PART_BYTES` for the runs: small, so the result spreads over several parts. Deflate
    /// emits its output in blocks of about 20 kB, so below that each block makes a part.
    pub part_bytes: usize,
}

impl ExportFixture {
    pub fn new(rows: usize, seed: u64) -> ExportFixture {
        let td = LocalTd::start();
        let records = source_records(rows, seed);
        td.insert_records(0, "srcdb", "events", &records);
        let job_id = td.finished_query(0, "srcdb", "SELECT id, name, score, time FROM events");
        td.insert_records(1, TARGET_DB, "unrelated", &[]);
        ExportFixture {
            td,
            sandbox: Sandbox::new(),
            job_id,
            expected: canonical_rows(&records),
            part_bytes: 16_000,
        }
    }

    /// Writes the spec of a `stream` export of the source job into `table` in `mode`.
    pub fn spec(&self, mode: &str, table: &str) -> PathBuf {
        self.spec_with(mode, table, "")
    }

    /// The spec with `extra` YAML lines appended (e.g. `transfer: server\n`).
    pub fn spec_with(&self, mode: &str, table: &str, extra: &str) -> PathBuf {
        let host = self.td.base_url().trim_start_matches("http://").to_string();
        self.sandbox.write(
            &format!("export-{mode}-{table}.yml"),
            &format!(
                "td_result_export>:\njob_id: '{job}'\ntd:\n  endpoint: '{base}'\n  apikey: '{source}'\n\
                 result_url: 'td://{target}@{host}/{TARGET_DB}/{table}?mode={mode}'\n{extra}",
                job = self.job_id,
                base = self.td.base_url(),
                source = self.td.master_key(0),
                target = self.td.master_key(1),
            ),
        )
    }

    /// Where the runs write their status document.
    pub fn status_path(&self) -> PathBuf {
        self.sandbox.path().join("status.json")
    }

    /// The operator, ready to run the export into the target table in `mode`, with millisecond
    /// waits and small parts.
    pub fn command(&self, mode: &str) -> std::process::Command {
        self.command_for(&self.spec(mode, TARGET_TABLE))
    }

    /// The operator, ready to run `spec` with millisecond waits and small parts.
    pub fn command_for(&self, spec: &Path) -> std::process::Command {
        let mut cmd = sandboxed_command(&self.sandbox);
        cmd.env("TDRE_TIME_SCALE", "0.001")
            .env("TDRE_PART_BYTES", self.part_bytes.to_string())
            .arg("run")
            .arg(spec)
            .arg("--status")
            .arg(self.status_path())
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs the export into the target table to its end; returns the exit code and output.
    pub fn run(&self, mode: &str) -> RunOutcome {
        run_to_end(self.command(mode))
    }

    /// Runs `spec` to its end.
    pub fn run_spec(&self, spec: &Path) -> RunOutcome {
        run_to_end(self.command_for(spec))
    }

    /// The rows of `table` in the target database (canonical, sorted); empty when missing.
    pub fn rows_of(&self, table: &str) -> Vec<String> {
        self.td.table_rows(1, TARGET_DB, table).unwrap_or_default()
    }

    /// The target table's rows (canonical, sorted); empty when it does not exist.
    pub fn target_rows(&self) -> Vec<String> {
        self.rows_of(TARGET_TABLE)
    }

    /// Tables of the target database left over by a replace (`<table>_tdre_<hex>`).
    pub fn temp_tables(&self) -> Vec<String> {
        self.td
            .table_names(1, TARGET_DB)
            .into_iter()
            .filter(|t| t.contains("_tdre_"))
            .collect()
    }

    /// The status document the last run wrote.
    pub fn status(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.status_path()).expect("status document written");
        serde_json::from_str(&text).expect("status document is JSON")
    }

    /// Asserts the target table holds exactly `expected` (as a multiset).
    pub fn assert_target(&self, expected: &[String], context: &str) {
        self.assert_rows(TARGET_TABLE, expected, context)
    }

    /// Asserts `table` holds exactly `expected` (as a multiset), with a readable failure.
    pub fn assert_rows(&self, table: &str, expected: &[String], context: &str) {
        let found = self.rows_of(table);
        if found != expected {
            let missing = expected.iter().filter(|r| !found.contains(r)).count();
            panic!(
                "{context}: the target holds {} row(s), expected {} ({} expected row(s) missing; \
                 first found: {:?})",
                found.len(),
                expected.len(),
                missing,
                found.first()
            );
        }
    }
}

/// Runs a command to its end and collects its output.
pub fn run_to_end(mut cmd: std::process::Command) -> RunOutcome {
    let out = cmd.output().expect("the operator runs");
    RunOutcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How a run of the operator ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutcome {
    /// Panics with the output unless the run exited with `code`.
    pub fn expect_code(&self, code: i32, context: &str) -> &RunOutcome {
        assert_eq!(
            self.code,
            Some(code),
            "{context}: expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Validates a status document against `schema/status.schema.json`; panics naming each error.
pub fn assert_valid_status(doc: &serde_json::Value) {
    let schema_text =
        std::fs::read_to_string(repo_root().join("schema/status.schema.json")).expect("status schema");
    let schema: serde_json::Value = serde_json::from_str(&schema_text).expect("schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the status schema compiles");
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "status document invalid: {errors:?}\n{doc:#}");
}
