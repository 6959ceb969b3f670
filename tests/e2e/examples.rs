//! Every file in `examples/` runs end to end against td-local, as its header says: none is
//! skipped, and a new file is picked up on its own.
//!
//! A task spec's comment header holds, next to its prose, lines this test reads:
//!
//! ```text
//! # setup: job NAME ACCOUNT DB SQL…         a finished query job of ACCOUNT on DB, passed as --param NAME=ID
//! # setup: rows ACCOUNT DB.TABLE JSON       rows stored first (a JSON array of maps, each with an integer time)
//! # setup: saved_result NAME ACCOUNT URL    a result saved on ACCOUNT (td result:create NAME URL)
//! # setup: database ACCOUNT DB              an empty database (TD's own export writes into existing ones only)
//! # secrets: NAME=KEY …                     secrets in the environment (NAME upper-cased, other characters _)
//! # params: NAME=VALUE …                    --param NAME=VALUE
//! # run: ARG …                              more arguments (a path of the repository is made absolute)
//! # expect: rows ACCOUNT DB.TABLE [time=job_start|SECONDS|column:NAME]
//! # expect: plan PATH=VALUE                 a value of the dry-run plan (PATH dotted)
//! # expect: status PATH=VALUE               a value of the status document after the first run
//! # expect: rerun PATH=VALUE                … after the second run
//! ```
//!
//! ACCOUNT is `account1` or `account2`; KEY names a td-local key as `${local:…}` does
//! (`account2.master_key`), and `${local:…}` in a saved result's URL is replaced the same way.
//! Each example gets a td-local of its own; it is validated, dry-run, then run twice with
//! `--local` pointing every endpoint at that td-local (so examples written for real TD hosts run
//! unchanged), and its target must then hold exactly the source job's result, once, each row
//! with the time the header says. Any other file in `examples/` must be named by a `# run:` line
//! (the connections file): it is exercised by that example.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{check_outcome, repo_root, sorted, RowTime, RunOutcome, Sandbox, TdLocalRun, FAST};

/// Every file of `examples/`, sorted.
fn example_files() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no examples");
    found
}

/// Whether `path` is a task spec: a YAML map with the operator key.
fn is_task_spec(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_yaml_ng::from_str::<Value>(&text)
        .ok()
        .is_some_and(|doc| doc.get("td_result_export>").is_some())
}

#[derive(Debug)]
pub(crate) enum Setup {
    Job {
        param: String,
        account: i64,
        db: String,
        sql: String,
    },
    Rows {
        account: i64,
        db: String,
        table: String,
        rows: Vec<Value>,
    },
    SavedResult {
        name: String,
        account: i64,
        url: String,
    },
    Database {
        account: i64,
        db: String,
    },
}

#[derive(Debug)]
pub(crate) enum Expect {
    Rows {
        account: i64,
        db: String,
        table: String,
        time: RowTime,
    },
    /// `(document, path, value)`: `plan`, `status` or `rerun`.
    Value(String, String, String),
}

/// What an example's header asks for.
#[derive(Debug, Default)]
pub(crate) struct Header {
    pub setup: Vec<Setup>,
    pub secrets: Vec<(String, String)>,
    pub params: Vec<(String, String)>,
    pub run: Vec<String>,
    pub expect: Vec<Expect>,
}

fn account(word: &str, line: &str) -> i64 {
    word.strip_prefix("account")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`{word}` is not account1 or account2 in `{line}`"))
}

fn db_table(word: &str, line: &str) -> (String, String) {
    let (db, table) = word
        .split_once('.')
        .unwrap_or_else(|| panic!("`{word}` is not DB.TABLE in `{line}`"));
    (db.to_string(), table.to_string())
}

fn pairs(text: &str, line: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("`{pair}` is not NAME=VALUE in `{line}`"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Reads the header lines of `text` (the leading comment block); panics on a line it cannot read.
pub(crate) fn header(text: &str) -> Header {
    let mut header = Header::default();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some((directive, rest)) = line.trim_start_matches('#').trim().split_once(": ") else {
            continue;
        };
        let rest = rest.trim();
        match directive {
            "setup" => {
                let mut words = rest.splitn(2, ' ');
                let kind = words.next().unwrap();
                let args = words.next().unwrap_or_default();
                header.setup.push(match kind {
                    "job" => {
                        let w: Vec<&str> = args.splitn(4, ' ').collect();
                        assert_eq!(w.len(), 4, "setup: job NAME ACCOUNT DB SQL in `{line}`");
                        Setup::Job {
                            param: w[0].into(),
                            account: account(w[1], line),
                            db: w[2].into(),
                            sql: w[3].into(),
                        }
                    }
                    "rows" => {
                        let w: Vec<&str> = args.splitn(3, ' ').collect();
                        assert_eq!(w.len(), 3, "setup: rows ACCOUNT DB.TABLE JSON in `{line}`");
                        let (db, table) = db_table(w[1], line);
                        Setup::Rows {
                            account: account(w[0], line),
                            db,
                            table,
                            rows: serde_json::from_str(w[2])
                                .unwrap_or_else(|e| panic!("rows in `{line}`: {e}")),
                        }
                    }
                    "saved_result" => {
                        let w: Vec<&str> = args.split_whitespace().collect();
                        assert_eq!(w.len(), 3, "setup: saved_result NAME ACCOUNT URL in `{line}`");
                        Setup::SavedResult {
                            name: w[0].into(),
                            account: account(w[1], line),
                            url: w[2].into(),
                        }
                    }
                    "database" => {
                        let w: Vec<&str> = args.split_whitespace().collect();
                        assert_eq!(w.len(), 2, "setup: database ACCOUNT DB in `{line}`");
                        Setup::Database {
                            account: account(w[0], line),
                            db: w[1].into(),
                        }
                    }
                    other => panic!("unknown setup `{other}` in `{line}`"),
                });
            }
            "secrets" => header.secrets.extend(pairs(rest, line)),
            "params" => header.params.extend(pairs(rest, line)),
            "run" => header.run.extend(rest.split_whitespace().map(str::to_string)),
            "expect" => {
                let mut words = rest.split_whitespace();
                let kind = words.next().unwrap_or_default();
                header.expect.push(match kind {
                    "rows" => {
                        let w: Vec<&str> = words.collect();
                        assert!(
                            (2..=3).contains(&w.len()),
                            "expect: rows ACCOUNT DB.TABLE [time=…] in `{line}`"
                        );
                        let (db, table) = db_table(w[1], line);
                        let time = match w.get(2).map(|t| t.strip_prefix("time=").unwrap_or(t)) {
                            None | Some("job_start") => RowTime::JobStart,
                            Some(t) if t.starts_with("column:") => {
                                RowTime::Column(t["column:".len()..].into())
                            }
                            Some(t) => {
                                RowTime::Seconds(t.parse().unwrap_or_else(|_| panic!("time in `{line}`")))
                            }
                        };
                        Expect::Rows {
                            account: account(w[0], line),
                            db,
                            table,
                            time,
                        }
                    }
                    "plan" | "status" | "rerun" => {
                        let (path, value) = words
                            .next()
                            .and_then(|p| p.split_once('='))
                            .unwrap_or_else(|| panic!("expect: {kind} PATH=VALUE in `{line}`"));
                        Expect::Value(kind.into(), path.into(), value.into())
                    }
                    other => panic!("unknown expectation `{other}` in `{line}`"),
                });
            }
            _ => {}
        }
    }
    header
}

/// `${local:accountN.KIND}` in `text` replaced by that key of `td`.
pub(crate) fn with_local_keys(td: &TdLocalRun, text: &str) -> String {
    let mut out = text.to_string();
    for id in [1, 2] {
        for kind in ["master_key", "write_only_key"] {
            let name = format!("account{id}.{kind}");
            out = out.replace(&format!("${{local:{name}}}"), &td.local_key(&name));
        }
    }
    out
}

/// The value at a dotted path of `doc`.
fn at<'a>(doc: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(doc, |v, key| &v[key])
}

/// Whether `found` is what a header wrote as `expected` (JSON when it reads as JSON).
fn matches(found: &Value, expected: &str) -> bool {
    match serde_json::from_str::<Value>(expected) {
        Ok(value) if !value.is_string() => *found == value,
        _ => found.as_str() == Some(expected),
    }
}

/// One example, prepared on a td-local of its own.
struct Prepared<'a> {
    path: &'a Path,
    header: Header,
    td: TdLocalRun,
    /// `--param` pairs: the header's and each setup job's id.
    params: Vec<(String, String)>,
}

impl Prepared<'_> {
    fn name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// The binary run as `subcommand` on the example with the header's secrets, params and
    /// arguments, every endpoint on this td-local.
    fn command(&self, subcommand: &[&str]) -> std::process::Command {
        let spec = self.path.to_str().unwrap();
        let data = self.td.server.data_dir().to_str().unwrap();
        let mut args: Vec<String> = subcommand.iter().map(|s| s.to_string()).collect();
        args.extend([spec.to_string(), "--local".into(), data.into()]);
        for (name, value) in &self.params {
            args.extend(["--param".into(), format!("{name}={value}")]);
        }
        for arg in &self.header.run {
            let in_repo = repo_root().join(arg);
            args.push(match in_repo.is_file() {
                true => in_repo.to_str().unwrap().to_string(),
                false => arg.clone(),
            });
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.td.command(&args);
        for (name, key) in &self.header.secrets {
            let var: String = name
                .chars()
                .map(|c| match c.is_ascii_alphanumeric() {
                    true => c.to_ascii_uppercase(),
                    false => '_',
                })
                .collect();
            cmd.env(var, self.td.local_key(key));
        }
        cmd
    }

    fn run(&self, subcommand: &[&str], what: &str) -> RunOutcome {
        let out = self.td.run_command(self.command(subcommand));
        out.expect_exit(0, &format!("{} ({what})", self.name()));
        out
    }

    fn check_values(&self, document: &str, doc: &Value) {
        for expect in &self.header.expect {
            if let Expect::Value(kind, path, value) = expect {
                if kind == document {
                    let found = at(doc, path);
                    assert!(
                        matches(found, value),
                        "{}: expect: {kind} {path}={value}, found {found} in {doc:#}",
                        self.name()
                    );
                }
            }
        }
    }
}

/// Does what the header's `# setup:` lines say on `td`; returns the `--param` pairs: the header's
/// and each setup job's id.
pub(crate) fn set_up(td: &TdLocalRun, header: &Header) -> Vec<(String, String)> {
    let mut params = header.params.clone();
    for setup in &header.setup {
        match setup {
            Setup::Job {
                param,
                account,
                db,
                sql,
            } => params.push((param.clone(), td.successful_job(*account, db, sql))),
            Setup::Rows {
                account,
                db,
                table,
                rows,
            } => td.insert(*account, db, table, rows),
            Setup::SavedResult { name, account, url } => {
                td.save_result(*account, name, &with_local_keys(td, url))
            }
            Setup::Database { account, db } => td.create_database(*account, db),
        }
    }
    params
}

fn prepare(path: &Path) -> Prepared<'_> {
    let header = header(&std::fs::read_to_string(path).unwrap());
    let name = path.display();
    assert!(
        header.expect.iter().any(|e| matches!(e, Expect::Rows { .. })),
        "{name}: the header has no `# expect: rows …` line"
    );
    let td = TdLocalRun::start();
    let params = set_up(&td, &header);
    Prepared {
        path,
        header,
        td,
        params,
    }
}

/// Validates, dry-runs and runs `path` twice, checking what its header expects.
fn run_example(path: &Path) {
    let example = prepare(path);
    let name = example.name();
    example.run(&["validate"], "validate");
    let plan = example.run(&["run", "--dry-run"], "dry run");
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap_or_else(|e| panic!("{name}: the plan: {e}"));
    example.check_values("plan", &plan);
    let first = example.run(&["run", "--status", "status.json"], "run 1");
    example.check_values("status", &first.status);
    let second = example.run(&["run", "--status", "status.json"], "run 2");
    example.check_values("rerun", &second.status);

    // The job the last run read (a query without an idempotency key is issued again).
    let source_job = second.status["export"]["source_job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no source job in {:#}", second.status));
    for expect in &example.header.expect {
        if let Expect::Rows {
            account,
            db,
            table,
            time,
        } = expect
        {
            let found = example.td.rows(*account, db, table);
            let expected = example.td.exported_rows(1, source_job, time);
            assert!(!expected.is_empty(), "{name}: the source job has no rows");
            assert_eq!(
                found,
                Some(expected),
                "{name}: account{account} {db}.{table} holds the source job's result, once, after two runs"
            );
        }
    }
}

/// The names of the files of `dir`, recursively, with their sizes and times: what a run changed.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(listing(&entry.path()));
        } else {
            out.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

#[test]
fn every_example_runs_on_td_local_as_its_header_says() {
    let files = example_files();
    let before = listing(&repo_root().join("examples"));
    let (specs, others): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(|p| is_task_spec(p));
    let mut used = Vec::new();
    for spec in &specs {
        let text = std::fs::read_to_string(spec).unwrap();
        used.extend(header(&text).run.into_iter().map(|a| repo_root().join(a)));
        run_example(spec);
    }
    for other in others {
        assert!(
            used.contains(other),
            "{} is neither a task spec nor named by an example's `# run:` line, so no test runs it",
            other.display()
        );
    }
    assert!(specs.len() >= 10, "issue #11 asks for at least 10 examples");
    assert_eq!(
        listing(&repo_root().join("examples")),
        before,
        "running the examples wrote into examples/"
    );
}

/// Whether an example (its YAML, its text) shows a form.
type Shows = Box<dyn Fn(&Value, &str) -> bool>;

/// What the examples show between them: each form of issue #11 is in at least one of them.
#[test]
fn the_examples_show_every_form_issue_11_lists() {
    let specs: Vec<(String, Value, String)> = example_files()
        .into_iter()
        .filter(|p| is_task_spec(p))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let doc = serde_yaml_ng::from_str(&text).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), doc, text)
        })
        .collect();
    let url = |doc: &Value| doc["result_url"].as_str().unwrap_or_default().to_string();
    let settings = |doc: &Value, key: &str| !doc["result_settings"][key].is_null();
    let forms: Vec<(&str, Shows)> = vec![
        (
            "the embedded td-local",
            Box::new(|d, _| d["td"]["endpoint"] == "local"),
        ),
        ("an existing job", Box::new(|d, _| d["job_id"].is_string())),
        (
            "a query, then its export",
            Box::new(|d, _| d["query"].is_string()),
        ),
        (
            "td://@/db/table",
            Box::new(move |d, _| url(d).starts_with("td://@/")),
        ),
        (
            "another region by key and host",
            Box::new(move |d, _| {
                url(d).contains("@api.treasuredata.co.jp/") || url(d).contains("@api.eu01.")
            }),
        ),
        (
            "a connection and its settings from a connections file",
            Box::new(|d, text| d["result_connection"].is_string() && text.contains("# run: --connections")),
        ),
        (
            "a console connection, transfer auto picking server",
            Box::new(|d, text| {
                d["result_connection"].is_string() && text.contains("expect: status export.transfer=server")
            }),
        ),
        ("replace", Box::new(move |d, _| url(d).contains("mode=replace"))),
        ("a time of one's own", Box::new(move |d, _| settings(d, "time"))),
        ("time_column", Box::new(move |d, _| settings(d, "time_column"))),
        (
            "legacy mode",
            Box::new(move |d, _| settings(d, "legacy_mode") || url(d).contains("legacy=true")),
        ),
        ("_retry", Box::new(|d, _| d["_retry"].is_object())),
        (
            "idempotency_key from a --param",
            Box::new(|d, text| {
                d["idempotency_key"].as_str().is_some_and(|k| k.contains("${")) && text.contains("# params:")
            }),
        ),
        (
            "a saved result NAME:table",
            Box::new(move |d, _| !url(d).is_empty() && !url(d).starts_with("td://")),
        ),
    ];
    for (form, shows) in &forms {
        let showing: Vec<&str> = specs
            .iter()
            .filter(|(_, doc, text)| shows(doc, text))
            .map(|(name, ..)| name.as_str())
            .collect();
        assert!(!showing.is_empty(), "no example shows {form}");
    }
    for (name, _, text) in &specs {
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("# ") && first.len() > 10,
            "{name} starts with a comment saying what it shows"
        );
    }
}

#[test]
fn the_readme_lists_every_example() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for file in example_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            readme.contains(&format!("[`{name}`](examples/{name})")),
            "README.md's Examples section does not list {name}"
        );
    }
}

// ---- the quickstart, in detail ----

/// The keys td-local generated in `dir` (none may be printed).
fn local_keys(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("accounts.yml"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("_key:")
                .map(|(_, k)| k.trim().trim_matches('\'').to_string())
        })
        .collect()
}

fn run_quickstart(sandbox: &Sandbox, example: &Path) -> RunOutcome {
    let out = sandbox
        .cmd()
        .env(FAST.0, FAST.1)
        .arg("run")
        .arg(example)
        .args(["--local", "data", "--status", "status.json"])
        .output()
        .unwrap();
    let outcome = RunOutcome::from_output(out, &sandbox.path().join("status.json"));
    let keys = local_keys(&sandbox.path().join("data"));
    assert!(!keys.is_empty(), "td-local wrote its accounts");
    check_outcome(&outcome, &keys);
    outcome
}

/// Rows of `db.table` in `account` of the td-local data in `dir` (opened after the runs ended).
pub(crate) fn rows_in(dir: &Path, account: i64, db: &str, table: &str) -> Vec<Value> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let td = rt
        .block_on(td_local::TdLocal::start(td_local::Config::new(dir)))
        .unwrap();
    let rows = td
        .inspect()
        .rows(account, db, table)
        .unwrap()
        .expect("the table exists");
    rt.block_on(td.shutdown());
    sorted(rows.into_iter().map(|r| Value::Object(r.record)).collect())
}

#[test]
fn the_quickstart_replaces_account_2s_table_with_account_1s_code_counts() {
    let sandbox = Sandbox::new();
    let quickstart = repo_root().join("examples/quickstart.yml");
    let first = run_quickstart(&sandbox, &quickstart);
    first.expect_code(0);
    let second = run_quickstart(&sandbox, &quickstart);
    second.expect_code(0);

    let data = sandbox.path().join("data");
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for row in rows_in(&data, 1, "sample_datasets", "www_access") {
        *counts.entry(row["code"].as_i64().unwrap()).or_default() += 1;
    }
    let output = rows_in(&data, 2, "testdb", "output_table");
    let time = output[0]["time"].clone();
    assert!(time.is_i64(), "{output:?}");
    let expected: Vec<Value> = counts
        .into_iter()
        .map(|(code, cnt)| json!({"code": code, "cnt": cnt, "time": time}))
        .collect();
    assert_eq!(
        output,
        sorted(expected),
        "exactly the counts, once, after two runs"
    );
    assert_eq!(second.status["export"]["time_source"], "job_start");
    for out in [&first, &second] {
        assert!(
            out.stdout.contains(&format!("exported {} rows", output.len()))
                && out.stdout.contains("local testdb.output_table (replace, stream)")
                && out.stdout.contains("status document: status.json"),
            "the summary names rows, target and the status document: {}",
            out.stdout
        );
    }
}

/// Three quickstarts at once on one data directory: one embedded td-local serves it at a time
/// (a second would take the first one's running jobs for a crash's leftovers and fail them);
/// the others wait for it, and every run succeeds.
#[test]
fn quickstarts_run_at_once_on_one_data_directory_all_succeed() {
    let sandbox = Sandbox::new();
    let quickstart = repo_root().join("examples/quickstart.yml");
    let children: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new(crate::support::operator_bin())
                .env_clear()
                .env("HOME", sandbox.path())
                .current_dir(sandbox.path())
                .env(FAST.0, FAST.1)
                .arg("run")
                .arg(&quickstart)
                .args(["--local", "data", "--status", &format!("status_{i}.json")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {i}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Each example runs on td-local with exactly the commands its header gives, from a fresh
/// directory holding only a link to `examples/`, with the installed command on PATH (here: this
/// build's) and nothing else in the environment; the target it expects gets rows.
#[test]
fn every_example_runs_locally_with_the_commands_its_header_gives() {
    for path in example_files().iter().filter(|p| is_task_spec(p)) {
        let text = std::fs::read_to_string(path).unwrap();
        let header_lines = text.lines().take_while(|l| l.starts_with('#'));
        let commands = crate::support::recipe_commands(header_lines, "#   $ ", "#");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            commands
                .last()
                .is_some_and(|c| c.starts_with(&format!("td-result-export run examples/{name}"))),
            "{name}: the header's commands end with no run of it: {commands:?}"
        );
        let work = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(repo_root().join("examples"), work.path().join("examples")).unwrap();
        let (script, out) = crate::support::run_recipe(&commands, work.path());
        assert!(
            out.status.success(),
            "{name}: the header's commands failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let header = header(&text);
        let (account, db, table) = header
            .expect
            .iter()
            .find_map(|e| match e {
                Expect::Rows {
                    account, db, table, ..
                } => Some((*account, db.clone(), table.clone())),
                _ => None,
            })
            .unwrap();
        let rows = rows_in(&work.path().join(".td-local"), account, &db, &table);
        assert!(!rows.is_empty(), "{name}: {db}.{table} is empty");
    }
}
