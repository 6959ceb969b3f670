//! Every treasure box (`treasure_boxes/*/`, a new one is picked up on its own) is a Digdag
//! project that works as written: its workflow parses, every task spec and every `py>` task's
//! params in it validate, it runs end to end against td-local in both forms (the `py>` form TD
//! Workflow runs and the `sh>` form of a self-hosted Digdag, through the stand-in Digdag of
//! [`crate::digdag`]) writing each target's rows exactly once per session, and nothing it would
//! push holds a key.
//!
//! A box's workflow (`NAME.dig`) starts with comment lines this test reads, in the grammar of the
//! examples (`tests/e2e/examples.rs`): `# secrets:` (the project's secrets, as td-local keys),
//! `# setup:` (what the account holds before: a database, a saved connection), and
//! `# expect: rows ACCOUNT DB.TABLE [time=…]` (each target); plus `# session: TIME` (the session
//! run, in the sample data's day) and `# source: QUERY_FILE` (the query whose result every target
//! holds, run by the test itself to know the rows); and, optionally, `# transfer: ENGINE` (the
//! engine every export of the box must have used).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_yaml_ng::Mapping;

use crate::digdag::{parse_dig, session_params, Digdag};
use crate::examples::{header, set_up, Expect, Header};
use crate::support::{fake_key, operator_bin, repo_root, sorted, RowTime, TdLocalRun};

/// The boxes issue #11 asks for; more may be there.
const REQUIRED: [&str; 6] = [
    "account_to_account",
    "cross_region_replace",
    "query_then_export",
    "daily_snapshot_with_time",
    "parallel_exports",
    "console_connection",
];

/// Every box: a directory of `treasure_boxes/`, sorted.
fn boxes() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo_root().join("treasure_boxes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// The box's one workflow file.
fn workflow_file(dir: &Path) -> PathBuf {
    let digs: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dig"))
        .collect();
    assert_eq!(
        digs.len(),
        1,
        "{}: one .dig per box, found {digs:?}",
        dir.display()
    );
    digs[0].clone()
}

/// Every file below `dir`, recursively, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => out.extend(files(&path)),
            false => out.push(path),
        }
    }
    out.sort();
    out
}

// ---- what `td wf push` uploads: every file .digdagignore does not exclude ----

/// Whether `pattern` (`*` and `?` as wildcards) matches all of `text`.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn at(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| at(rest, &t[i..])),
            Some((c, rest)) => t
                .split_first()
                .is_some_and(|(d, t)| (*c == '?' || c == d) && at(rest, t)),
        }
    }
    at(&p, &t)
}

/// The patterns of a `.digdagignore` or `.gitignore` (a line each; `#` comments).
fn patterns(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Whether `patterns` exclude `relative` (a file's path in the project): a pattern without `/`
/// matches any name on the path, one ending in `/` a directory's name, one with `/` inside the
/// path from the project's root.
fn excluded(patterns: &[String], relative: &Path) -> bool {
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    patterns.iter().any(|pattern| {
        let dir_only = pattern.ends_with('/');
        let pattern = pattern.trim_end_matches('/').trim_start_matches('/');
        if pattern.contains('/') {
            let depth = pattern.split('/').count();
            return parts.len() > depth - usize::from(!dir_only) && glob(pattern, &parts[..depth].join("/"));
        }
        parts
            .iter()
            .enumerate()
            .any(|(i, part)| glob(pattern, part) && (!dir_only || i + 1 < parts.len()))
    })
}

/// The files of `project` that `td wf push` would upload, relative to it.
fn pushed(project: &Path) -> Vec<PathBuf> {
    let ignore = patterns(&project.join(".digdagignore"));
    files(project)
        .into_iter()
        .map(|p| p.strip_prefix(project).unwrap().to_path_buf())
        .filter(|p| !excluded(&ignore, p))
        .collect()
}

// ---- a box's header ----

struct BoxTest {
    dir: PathBuf,
    dig: Mapping,
    header: Header,
    session_time: DateTime<Utc>,
    source: String,
    transfer: Option<String>,
}

impl BoxTest {
    fn load(dir: &Path) -> BoxTest {
        let file = workflow_file(dir);
        let text = std::fs::read_to_string(&file).unwrap();
        let optional = |directive: &str| {
            text.lines()
                .take_while(|l| l.starts_with('#'))
                .find_map(|l| l.strip_prefix(&format!("# {directive}: ")))
                .map(|v| v.trim().to_string())
        };
        let line = |directive: &str| {
            optional(directive).unwrap_or_else(|| panic!("{}: no `# {directive}:` line", file.display()))
        };
        let session_time = DateTime::parse_from_rfc3339(&line("session"))
            .unwrap_or_else(|e| panic!("{}: session: {e}", file.display()))
            .with_timezone(&Utc);
        let header = header(&text);
        assert!(
            header.expect.iter().any(|e| matches!(e, Expect::Rows { .. })),
            "{}: no `# expect: rows …` line",
            file.display()
        );
        BoxTest {
            dir: dir.to_path_buf(),
            dig: parse_dig(&file),
            header,
            session_time,
            source: line("source"),
            transfer: optional("transfer"),
        }
    }

    fn name(&self) -> String {
        name(&self.dir)
    }

    /// The session's built-in params (session id 1001).
    fn session(&self) -> Value {
        session_params("1001", self.session_time, &self.dig)
    }

    /// The root `_export`'s `td.database`: where the box's queries run.
    fn database(&self) -> String {
        let export = crate::digdag::to_json(self.dig.get("_export").expect("the workflow has an _export"));
        export["td"]["database"]
            .as_str()
            .expect("_export: td: database:")
            .to_string()
    }

    /// The project's secrets as td-local's keys.
    fn secrets(&self, td: &TdLocalRun) -> BTreeMap<String, String> {
        self.header
            .secrets
            .iter()
            .map(|(name, key)| (name.clone(), td.local_key(key)))
            .collect()
    }
}

/// `rows` without their `time`, sorted, and the times they hold.
fn without_time(rows: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let mut times: Vec<Value> = Vec::new();
    let rest = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let time = r.as_object_mut().unwrap().remove("time").unwrap_or(Value::Null);
            if !times.contains(&time) {
                times.push(time);
            }
            r
        })
        .collect();
    (sorted(rest), times)
}

/// Runs `the_box` in one form on a td-local of its own: the session twice (a second attempt of
/// the same session), then each target must hold the source query's result once.
fn run_box(the_box: &BoxTest, self_hosted: bool) {
    let name = the_box.name();
    let form = if self_hosted { "sh>" } else { "py>" };
    let td = TdLocalRun::start();
    set_up(&td, &the_box.header);
    let mut digdag = Digdag::new(&td, &the_box.dir, the_box.secrets(&td));
    let before = pushed(&digdag.project);
    let mut dig = the_box.dig.clone();
    if self_hosted {
        // As the README tells a self-hosted Digdag's user: `self_hosted: true` in the workflow.
        let export = dig.get_mut("_export").and_then(|e| e.as_mapping_mut()).unwrap();
        export.insert("self_hosted".into(), true.into());
    }
    let session = the_box.session();
    for attempt in 1..=2 {
        digdag.runs.clear();
        digdag.run_session(&dig, &session);
        let operators: Vec<&str> = digdag.runs.iter().map(|r| r.operator.as_str()).collect();
        assert!(
            operators.contains(&form) && !operators.contains(&if self_hosted { "py>" } else { "sh>" }),
            "{name} ({form} form, attempt {attempt}) ran {operators:?}:\n{}",
            digdag.transcript()
        );
    }
    if let Some(engine) = &the_box.transfer {
        // What the exports say they used: the py> tasks' stored params, the sh> tasks' status documents.
        let used: Vec<Value> = match self_hosted {
            false => vec![digdag.stored()["td_result_export"]["transfer"].clone()],
            true => files(&digdag.project.join("tmp"))
                .iter()
                .map(|f| crate::support::read_status(f)["export"]["transfer"].clone())
                .collect(),
        };
        assert!(
            !used.is_empty() && used.iter().all(|u| u == engine.as_str()),
            "{name} ({form} form): the exports used {used:?}, not {engine}:\n{}",
            digdag.transcript()
        );
    }

    // The rows: what the source query gives, once per target.
    let sql = std::fs::read_to_string(the_box.dir.join(&the_box.source)).unwrap();
    let sql = digdag.interpolate(&sql, &session, false);
    let job = td.successful_job(1, &the_box.database(), &sql);
    for expect in &the_box.header.expect {
        let Expect::Rows {
            account,
            db,
            table,
            time,
        } = expect
        else {
            continue;
        };
        let found = td
            .rows(*account, db, table)
            .unwrap_or_else(|| panic!("{name} ({form} form): account{account} has no {db}.{table}"));
        let expected = td.exported_rows(1, &job, time);
        assert!(
            !expected.is_empty(),
            "{name}: {} gives no rows in the session",
            the_box.source
        );
        let context =
            format!("{name} ({form} form): account{account} {db}.{table} after two attempts of the session");
        match time {
            // The job's start: the job td> (or the export) ran in the first attempt.
            RowTime::JobStart => {
                let (found, times) = without_time(&found);
                assert_eq!(found, without_time(&expected).0, "{context}");
                assert_eq!(
                    times.len(),
                    1,
                    "{context}: one time, the source job's start: {times:?}"
                );
            }
            _ => assert_eq!(found, expected, "{context}"),
        }
    }
    assert_eq!(
        pushed(&digdag.project),
        before,
        "{name} ({form} form): the run left files that `td wf push` would upload"
    );
}

#[test]
fn every_treasure_box_runs_its_py_form_on_td_local_writing_each_target_once_per_session() {
    for dir in boxes() {
        run_box(&BoxTest::load(&dir), false);
    }
}

#[test]
fn every_treasure_box_runs_its_sh_form_on_td_local_writing_each_target_once_per_session() {
    for dir in boxes() {
        run_box(&BoxTest::load(&dir), true);
    }
}

/// `validate` on `spec` with the session's params and key-shaped secrets in the environment.
fn validate(spec: &Path, session: &Value, env: &[(String, String)], what: &str) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(operator_bin());
    cmd.env_clear()
        .env("HOME", home.path())
        .current_dir(home.path())
        .arg("validate")
        .arg(spec)
        .args(["--param", "td.last_job_id=12345"])
        .envs(env.iter().cloned());
    for (k, v) in session.as_object().unwrap() {
        let v = v.as_str().map_or(v.to_string(), str::to_string);
        cmd.args(["--param", &format!("{k}={v}")]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A task spec: a YAML file with the operator key.
fn is_task_spec(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yml" || e == "yaml")
        && std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_yaml_ng::from_str::<Value>(&t).ok())
            .is_some_and(|d| d.get("td_result_export>").is_some())
}

#[test]
fn every_treasure_box_workflow_is_yaml_and_every_task_spec_and_py_task_in_it_validates() {
    let td = TdLocalRun::start();
    let scratch = tempfile::tempdir().unwrap();
    for source in boxes() {
        // A copy: nothing this test runs may write into the source tree.
        let dir = scratch.path().join(name(&source));
        crate::digdag::copy_dir(&source, &dir);
        let the_box = BoxTest::load(&dir);
        let name = the_box.name();
        let secrets: BTreeMap<String, String> = the_box
            .header
            .secrets
            .iter()
            .enumerate()
            .map(|(i, (secret, _))| (secret.clone(), fake_key(i as u32 + 1, 0xa0 + i as u8)))
            .collect();
        let env: Vec<(String, String)> = secrets
            .iter()
            .map(|(k, v)| (k.to_uppercase().replace(['.', '-'], "_"), v.clone()))
            .collect();
        let session = the_box.session();

        let specs: Vec<PathBuf> = files(&dir).into_iter().filter(|p| is_task_spec(p)).collect();
        for spec in &specs {
            validate(spec, &session, &env, &spec.display().to_string());
        }

        // Each py> task's params, made into the spec the py> entry makes of them.
        let digdag = Digdag::new(&td, &dir, secrets.clone());
        let py_tasks = digdag.py_tasks(&the_box.dig, &session);
        assert!(
            !py_tasks.is_empty(),
            "{name}: the workflow has no py> task (the TD Workflow form)"
        );
        for (task, params) in &py_tasks {
            let params_file = scratch.path().join(format!("{name}.params.json"));
            let spec_file = scratch.path().join(format!("{name}.spec.json"));
            std::fs::write(&params_file, params.to_string()).unwrap();
            let out = std::process::Command::new("python3")
                .current_dir(&dir)
                .env("PYTHONPATH", repo_root().join("operator/python"))
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("TD_RESULT_EXPORT_BIN", operator_bin())
                .args([
                    "-c",
                    "import json, sys\nfrom td_result_export.digdag import spec_from_params\n\
                     spec = spec_from_params(json.load(open(sys.argv[1])))\njson.dump(spec, open(sys.argv[2], 'w'))",
                ])
                .arg(&params_file)
                .arg(&spec_file)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let mut env = env.clone();
            let td_api_key = params["_env"]["TD_API_KEY"].as_str();
            assert!(
                td_api_key.is_some(),
                "{name} {task}: the py> task's _env gives TD_API_KEY (the source key)"
            );
            env.extend(
                params["_env"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
            );
            validate(&spec_file, &session, &env, &format!("{name} {task} (py> params)"));
        }

        let sh_tasks = files(&dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "dig"))
            .any(|p| std::fs::read_to_string(p).unwrap().contains("sh>: "));
        assert!(
            sh_tasks,
            "{name}: the workflow has no sh> task (the self-hosted form)"
        );
        assert!(!specs.is_empty(), "{name}: no task spec for the sh> form");
    }
}

/// The shape of a TD API key (`<account id>/<40 hex>`).
fn key_shaped() -> regex::Regex {
    regex::Regex::new(r"\b\d+/[0-9a-fA-F]{40}\b").unwrap()
}

#[test]
fn nothing_a_treasure_box_would_push_holds_a_key_and_its_secrets_run_output_and_local_data_stay_home() {
    let key = key_shaped();
    for dir in boxes() {
        let name = name(&dir);
        for file in pushed(&dir) {
            let text = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
            assert!(
                !key.is_match(&text),
                "{name}/{} holds a key-shaped string, and `td wf push` would upload it",
                file.display()
            );
        }
        for ignore in [".digdagignore", ".gitignore"] {
            let patterns = patterns(&dir.join(ignore));
            for never in [
                "secrets.yml",
                "tmp/status.json",
                "tmp/append-1001.json",
                ".td-local/accounts.yml",
                "scripts/__pycache__/export.cpython-39.pyc",
            ] {
                assert!(
                    excluded(&patterns, Path::new(never)),
                    "{name}/{ignore} does not exclude {never}"
                );
            }
            for kept in ["README.md", "queries/x.sql", "tasks/x.yml", "scripts/export.py"] {
                assert!(
                    !excluded(&patterns, Path::new(kept)),
                    "{name}/{ignore} excludes {kept}"
                );
            }
        }
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        for shown in [
            "td wf push",
            "td wf secrets",
            "td wf start",
            "digdag",
            "td-local",
            "--local",
        ] {
            assert!(readme.contains(shown), "{name}/README.md does not show `{shown}`");
        }
        assert!(
            files(&dir.join("queries"))
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "sql")),
            "{name} has no queries/*.sql"
        );
    }
}

#[test]
fn the_treasure_boxes_include_the_six_of_issue_11_each_listed_in_both_readmes() {
    let names: Vec<String> = boxes().iter().map(|d| name(d)).collect();
    let index = std::fs::read_to_string(repo_root().join("treasure_boxes/README.md")).unwrap();
    for required in REQUIRED {
        assert!(names.iter().any(|n| n == required), "no treasure box {required}");
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for name in &names {
        assert!(
            index.contains(&format!("[`{name}`]({name}/)")),
            "treasure_boxes/README.md does not list {name}"
        );
        assert!(
            readme.contains(&format!("[`{name}`](treasure_boxes/{name}/)")),
            "README.md's Treasure Boxes section does not list {name}"
        );
    }
}

#[test]
fn the_push_listing_follows_digdagignore() {
    let patterns: Vec<String> = ["tmp/", "secrets.yml", "*.pyc", "/local/data/"]
        .map(String::from)
        .to_vec();
    for (path, out) in [
        ("tmp/a.json", true),
        ("tmp", false),
        ("a/tmp/b", true),
        ("secrets.yml", true),
        ("conf/secrets.yml", true),
        ("secrets.yml.example", false),
        ("scripts/x.pyc", true),
        ("local/data/x", true),
        ("other/local/data/x", false),
        ("queries/a.sql", false),
    ] {
        assert_eq!(excluded(&patterns, Path::new(path)), out, "{path}");
    }
}

/// Each box is pushed on its own, so each carries its copy of the py> function; the copies stay
/// one text, so a fix to one is a fix to all.
#[test]
fn every_treasure_box_carries_the_same_py_function() {
    let copies: Vec<(String, String)> = boxes()
        .iter()
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("scripts/export.py"))
                .unwrap_or_else(|e| panic!("{}/scripts/export.py: {e}", name(dir)));
            (name(dir), text)
        })
        .collect();
    for (name, text) in &copies {
        assert_eq!(
            text, &copies[0].1,
            "{name}/scripts/export.py differs from {}'s",
            copies[0].0
        );
    }
}

/// The boxes install the release of this workspace when nothing else is given: their pin moves
/// with the version.
#[test]
fn every_treasure_box_pins_the_workspace_version() {
    let pin = format!("PACKAGE = \"td-result-export=={}\"", env!("CARGO_PKG_VERSION"));
    for dir in boxes() {
        let text = std::fs::read_to_string(dir.join("scripts/export.py")).unwrap();
        assert!(text.contains(&pin), "{}: no `{pin}`", name(&dir));
    }
}

/// A user with only the repository: the wheel put in a project's `wheels/` folder is what the
/// box installs, with no network (every package index unreachable), into a fresh Python. Needs
/// the built wheel: run by `.ci/run` after it builds one (TDRE_PY_VENV set).
#[test]
fn a_box_installs_the_wheel_in_its_project_with_no_network() {
    if std::env::var_os("TDRE_PY_VENV").is_none() {
        eprintln!("skipped: needs the wheel .ci/run builds (TDRE_PY_VENV)");
        return;
    }
    let wheel = std::fs::read_dir(repo_root().join("target/wheels"))
        .expect("target/wheels: the wheel is built")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel in target/wheels");
    let project = tempfile::tempdir().unwrap();
    let the_box = boxes().into_iter().next().unwrap();
    std::fs::create_dir_all(project.path().join("scripts")).unwrap();
    std::fs::copy(
        the_box.join("scripts/export.py"),
        project.path().join("scripts/export.py"),
    )
    .unwrap();
    std::fs::create_dir_all(project.path().join("wheels")).unwrap();
    std::fs::copy(
        &wheel,
        project.path().join("wheels").join(wheel.file_name().unwrap()),
    )
    .unwrap();
    let venv = project.path().join("venv");
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let out = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", "import sys; sys.path.insert(0, 'scripts'); import export; export.install({}); import td_result_export.digdag; print('installed')"])
        .current_dir(project.path())
        // No package index answers: only the project's wheel can be installed.
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_NO_CACHE_DIR", "1")
        .env_remove("PYTHONPATH")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("installed"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = venv.join("bin/td-result-export");
    assert!(binary.is_file(), "the wheel's executable is installed");
}

/// The `$ ` lines of a box README's "How to Run locally" section, continuation lines joined.
fn local_recipe(readme: &str) -> Vec<String> {
    let start = readme
        .find("# How to Run locally")
        .expect("the README has a How to Run locally section");
    let section = &readme[start..];
    let section = &section[..section[1..].find("\n# ").map_or(section.len(), |i| i + 1)];
    crate::support::recipe_commands(section.lines(), "    $ ", "")
}

/// Each box runs locally with exactly the commands its README gives, from a copy of its folder,
/// with the installed command on PATH (here: this build's) and nothing else in the environment:
/// its own query, into its own table, in a database the recipe makes (the export never makes
/// one, as TD's connector never does).
#[test]
fn every_treasure_box_runs_locally_with_the_commands_its_readme_gives() {
    for dir in boxes() {
        let the_box = BoxTest::load(&dir);
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let commands = local_recipe(&readme);
        assert!(
            commands.iter().any(|c| c.contains("td-result-export run")),
            "{}: no run command in {commands:?}",
            dir.display()
        );
        let work = tempfile::tempdir().unwrap();
        crate::digdag::copy_dir(&dir, work.path());
        let (script, out) = crate::support::run_recipe(&commands, work.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: the README's commands failed:\n{script}\n{stderr}",
            dir.display()
        );
        // The recipe's target: the first of the box's targets whose database it made.
        let data = work.path().join(".td-local");
        let written = the_box.header.expect.iter().find_map(|e| match e {
            Expect::Rows {
                account, db, table, ..
            } if script.contains(&format!("--account {account} {db}")) => Some((
                db.clone(),
                table.clone(),
                crate::examples::rows_in(&data, *account, db, table),
            )),
            _ => None,
        });
        let (db, table, rows) = written.unwrap_or_else(|| panic!("{}: no target written", dir.display()));
        assert!(!rows.is_empty(), "{}: {db}.{table} is empty", dir.display());
    }
}
