//! A stand-in Digdag that runs a workflow (`.dig`) of a treasure box against td-local, so the
//! boxes are tested as Digdag runs them, not as a test would call the binary.
//!
//! What it does, as Digdag does it: tasks (`+name`) run in the order written, those of a
//! `_parallel: true` group one after another here but each from the params the group started
//! with (a sibling's stored params are not seen); `_export`
//! and what earlier tasks stored (deep-merged, the stored over the exported) are the params of the
//! later ones; `${name}` in a task's values is replaced from its params and the session's
//! built-ins (`session_time`, `session_date`, `session_local_time`, `last_session_*`, …);
//! `${secret:NAME}` is replaced from the project's secrets in `_env` only, and elsewhere left for
//! the task to resolve (the operator reads it from the environment `_env` made).
//!
//! The operators: `td>` runs its query file (with `${…}` replaced) on td-local as the source
//! account and stores `td.last_job_id` / `td.last_job`; `py>` runs through the stand-in py> runner
//! `tests/workflow/digdag_runner.py` with every param, its `_env` in the environment, and stores
//! what the function stored; `sh>` runs as `sh -c COMMAND` with its `_env`; `if>` runs `_do` or
//! `_else_do`; `echo>` prints. Everything runs in a copy of the box (what `td wf push` uploads),
//! with `td-result-export` on PATH (and as the py> package's executable) a wrapper that adds
//! `--local DIR`: the box's own specs and params, with real TD hosts, run unchanged against
//! td-local.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::support::{operator_bin, repo_root, TdLocalRun, FAST};

/// A workflow file, parsed.
pub fn parse_dig(path: &Path) -> Mapping {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match serde_yaml_ng::from_str::<Yaml>(&text) {
        Ok(Yaml::Mapping(m)) => m,
        Ok(other) => panic!("{} is YAML but not a map: {other:?}", path.display()),
        Err(e) => panic!("{} is not YAML: {e}", path.display()),
    }
}

/// A YAML value as JSON (keys as strings).
pub fn to_json(value: &Yaml) -> Value {
    serde_json::to_value(value).expect("a workflow's values are JSON-shaped")
}

/// `over` merged into `base`, maps key by key (Digdag merges params so).
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                deep_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The interval between sessions of a `schedule:` (hourly> or daily>), for `last_session_*`.
fn interval(dig: &Mapping) -> Option<Duration> {
    let schedule = dig.get("schedule")?.as_mapping()?;
    match schedule.keys().next()?.as_str()? {
        "hourly>" => Some(Duration::hours(1)),
        "daily>" => Some(Duration::days(1)),
        other => panic!("the stand-in Digdag knows hourly> and daily>, not {other}"),
    }
}

/// The built-in params of a session at `time` (`session_*`, and `last_session_*` with a schedule).
pub fn session_params(id: &str, time: DateTime<Utc>, dig: &Mapping) -> Value {
    let mut params = json!({"session_id": id, "timezone": "UTC", "session_uuid": format!("00000000-0000-0000-0000-{id:0>12}")});
    let mut put = |prefix: &str, t: DateTime<Utc>| {
        for (name, format) in [
            ("time", "%Y-%m-%dT%H:%M:%S+00:00"),
            ("date", "%Y-%m-%d"),
            ("date_compact", "%Y%m%d"),
            ("local_time", "%Y-%m-%d %H:%M:%S"),
            ("tz_offset", "+0000"),
        ] {
            params[format!("{prefix}_{name}")] = t.format(format).to_string().into();
        }
        params[format!("{prefix}_unixtime")] = t.timestamp().into();
    };
    put("session", time);
    if let Some(step) = interval(dig) {
        put("last_session", time - step);
        put("next_session", time + step);
    }
    params
}

/// The value at a dotted `path` of `params`, as Digdag prints it into a string.
fn lookup(params: &Value, path: &str) -> Option<String> {
    let value = path.split('.').try_fold(params, |v, key| v.get(key))?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// What one operator task did (for the tests' assertions).
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub name: String,
    pub operator: String,
    pub stdout: String,
    pub stderr: String,
}

/// A project (a copy of a box) on td-local, and the sessions run in it.
pub struct Digdag<'a> {
    td: &'a TdLocalRun,
    /// The copy of the box the tasks run in.
    pub project: PathBuf,
    secrets: BTreeMap<String, String>,
    /// Holds the `td-result-export` wrapper (first on PATH) and the py> runner's files.
    work: tempfile::TempDir,
    store: Value,
    pub runs: Vec<TaskRun>,
}

/// Copies `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
}

/// The venv `.ci/run` installed the wheel into, when the tests run the installed package.
fn venv() -> Option<PathBuf> {
    std::env::var_os("TDRE_PY_VENV").map(PathBuf::from)
}

impl<'a> Digdag<'a> {
    /// A project made of a copy of `box_dir`, whose secrets (`td wf secrets --set`) are `secrets`.
    pub fn new(td: &'a TdLocalRun, box_dir: &Path, secrets: BTreeMap<String, String>) -> Digdag<'a> {
        let work = tempfile::tempdir().unwrap();
        let project = work.path().join("project");
        copy_dir(box_dir, &project);
        let bin = work.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let real = match venv() {
            Some(v) => v.join("bin/td-result-export"),
            None => operator_bin().to_path_buf(),
        };
        let wrapper = bin.join("td-result-export");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# td-result-export with every endpoint on td-local\ncase \"$1\" in\n  run|validate) exec '{}' \"$@\" --local '{}' ;;\n  *) exec '{0}' \"$@\" ;;\nesac\n",
                real.display(),
                td.server.data_dir().display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Digdag {
            td,
            project,
            secrets,
            work,
            store: json!({}),
            runs: Vec::new(),
        }
    }

    /// What each task run so far did, for a failure's message.
    pub fn transcript(&self) -> String {
        self.runs
            .iter()
            .map(|r| format!("{} ({}):\n{}{}", r.name, r.operator, r.stdout, r.stderr))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What the tasks stored so far (`td.last_job_id`, `td_result_export.transfer`, …).
    pub fn stored(&self) -> &Value {
        &self.store
    }

    fn bin_dir(&self) -> PathBuf {
        self.work.path().join("bin")
    }

    /// `${…}` in `text` replaced from `params`; `${secret:…}` from the secrets when `secrets` is
    /// true (in `_env`), else left as written.
    pub fn interpolate(&self, text: &str, params: &Value, secrets: bool) -> String {
        let re = regex::Regex::new(r"\$\{([^}]*)\}").unwrap();
        re.replace_all(text, |caps: &regex::Captures| {
            let expr = caps[1].trim();
            match expr.strip_prefix("secret:") {
                Some(name) if secrets => self
                    .secrets
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("no secret {name} is set (td wf secrets --set {name})")),
                Some(_) => caps[0].to_string(),
                None => lookup(params, expr).unwrap_or_else(|| panic!("`${{{expr}}}` names no param")),
            }
        })
        .into_owned()
    }

    /// Every string of `value` interpolated; those under `_env` with the secrets.
    fn interpolate_all(&self, value: &Value, params: &Value, in_env: bool) -> Value {
        match value {
            Value::String(s) => self.interpolate(s, params, in_env).into(),
            Value::Array(items) => items
                .iter()
                .map(|v| self.interpolate_all(v, params, in_env))
                .collect(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), self.interpolate_all(v, params, in_env || k == "_env")))
                .collect::<Map<_, _>>()
                .into(),
            other => other.clone(),
        }
    }

    /// Runs the workflow `dig` as one attempt of the session `session` (its built-in params).
    pub fn run_session(&mut self, dig: &Mapping, session: &Value) {
        let name = "+".to_string();
        self.run_task(&name, dig, session);
    }

    fn run_task(&mut self, name: &str, def: &Mapping, parent: &Value) {
        let mut params = parent.clone();
        if let Some(export) = def.get("_export") {
            deep_merge(&mut params, &to_json(export));
        }
        let operator = def
            .keys()
            .filter_map(Yaml::as_str)
            .find(|k| k.ends_with('>') && !k.starts_with('+'))
            .map(str::to_string);
        let children: Vec<(String, Mapping)> = def
            .iter()
            .filter_map(|(k, v)| {
                let k = k.as_str()?;
                k.starts_with('+').then(|| {
                    let v = v
                        .as_mapping()
                        .unwrap_or_else(|| panic!("task {name}{k} is not a map"));
                    (k.to_string(), v.clone())
                })
            })
            .collect();
        match operator {
            Some(op) => {
                assert!(children.is_empty(), "task {name} has an operator and subtasks");
                self.run_operator(name, &op, def, &params);
            }
            None => {
                // Tasks of a `_parallel: true` group start together: none sees what a sibling
                // stores, and the tasks after the group see what each stored (the last one's last).
                let parallel = def.get("_parallel").and_then(Yaml::as_bool) == Some(true);
                let before = self.store.clone();
                let mut after = before.clone();
                for (child, def) in children {
                    if parallel {
                        self.store = before.clone();
                    }
                    // The stored params of earlier tasks reach the later ones.
                    let mut visible = params.clone();
                    deep_merge(&mut visible, &self.store);
                    self.run_task(&format!("{name}{child}"), &def, &visible);
                    deep_merge(&mut after, &self.store);
                }
                self.store = after;
            }
        }
    }

    fn run_operator(&mut self, name: &str, op: &str, def: &Mapping, params: &Value) {
        let mut all = params.clone();
        deep_merge(&mut all, &self.store);
        all["task_name"] = name.into();
        let own: Map<String, Value> = def
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .filter(|(k, _)| !k.starts_with('+') && k != "_export" && k != "_do" && k != "_else_do")
            .map(|(k, v)| (k, to_json(v)))
            .collect();
        let context = all.clone();
        deep_merge(&mut all, &Value::Object(own));
        let task = self.interpolate_all(&all, &context, false);
        let env: BTreeMap<String, String> = task["_env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                    .collect()
            })
            .unwrap_or_default();
        let command = task[op].as_str().map(str::to_string).unwrap_or_default();
        let (stdout, stderr) = match op {
            "td>" => self.td_task(&command, &task),
            "py>" => self.py_task(name, &task, &env),
            "sh>" => self.sh_task(name, &command, &env),
            "echo>" => (command.clone(), String::new()),
            "if>" => {
                let branch = match command.as_str() {
                    "true" => "_do",
                    "false" => "_else_do",
                    other => panic!("{name}: if> takes true or false, not `{other}`"),
                };
                self.runs.push(TaskRun {
                    name: name.into(),
                    operator: format!("if> {branch}"),
                    stdout: String::new(),
                    stderr: String::new(),
                });
                if let Some(sub) = def.get(branch) {
                    let sub = sub
                        .as_mapping()
                        .unwrap_or_else(|| panic!("{name}: {branch} is not a map"));
                    self.run_task(&format!("{name}^{}", &branch[1..]), sub, params);
                }
                return;
            }
            other => panic!("the stand-in Digdag does not run {other} (task {name})"),
        };
        for key in self.td.keys() {
            assert!(
                !stdout.contains(&key) && !stderr.contains(&key),
                "{name} printed a key:\n{stdout}\n{stderr}"
            );
        }
        self.runs.push(TaskRun {
            name: name.into(),
            operator: op.into(),
            stdout,
            stderr,
        });
    }

    /// `td>`: the query file, with `${…}` replaced, run on td-local as the source account.
    fn td_task(&mut self, file: &str, task: &Value) -> (String, String) {
        let text =
            std::fs::read_to_string(self.project.join(file)).unwrap_or_else(|e| panic!("td>: {file}: {e}"));
        let sql = self.interpolate(&text, task, false);
        let database = task["td"]["database"]
            .as_str()
            .or(task["database"].as_str())
            .expect("td> needs td.database or database");
        let job = self.td.successful_job(1, database, &sql);
        let num_records = self.td.job_json(1, &job)["num_records"].clone();
        deep_merge(
            &mut self.store,
            &json!({"td": {"last_job_id": job, "last_job": {"id": job, "num_records": num_records}}}),
        );
        (format!("job {job}"), String::new())
    }

    fn py_task(&mut self, name: &str, task: &Value, env: &BTreeMap<String, String>) -> (String, String) {
        let function = task["py>"].as_str().expect("py>: MODULE.FUNCTION");
        let params_file = self.work.path().join("params.json");
        let out_file = self.work.path().join("out.json");
        std::fs::write(&params_file, json!({ "params": task }).to_string()).unwrap();
        let _ = std::fs::remove_file(&out_file);
        let python = venv().map_or(PathBuf::from("python3"), |v| v.join("bin/python"));
        let mut cmd = std::process::Command::new(python);
        cmd.arg(repo_root().join("tests/workflow/digdag_runner.py"))
            .arg(function)
            .arg(&params_file)
            .arg(&out_file);
        let mut env = env.clone();
        env.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
        let wrapper = self.bin_dir().join("td-result-export");
        env.insert("TD_RESULT_EXPORT_BIN".into(), wrapper.display().to_string());
        if venv().is_none() {
            let package = repo_root().join("operator/python");
            env.insert("PYTHONPATH".into(), package.display().to_string());
        }
        let (stdout, stderr) = self.run_process(name, cmd, &env);
        let out: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
        deep_merge(&mut self.store, &out["store_params"]);
        (stdout, stderr)
    }

    fn sh_task(&mut self, name: &str, command: &str, env: &BTreeMap<String, String>) -> (String, String) {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", command]);
        self.run_process(name, cmd, env)
    }

    /// Runs a task's process in the project with only HOME, PATH (the wrapper first), the fast
    /// waits and the task's `_env`; panics when it fails.
    fn run_process(
        &self,
        name: &str,
        mut cmd: std::process::Command,
        env: &BTreeMap<String, String>,
    ) -> (String, String) {
        let path = format!(
            "{}:{}",
            self.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.current_dir(&self.project)
            .env_clear()
            .env("HOME", self.work.path())
            .env("PATH", path)
            .env(FAST.0, FAST.1)
            .envs(env);
        let out = cmd.output().expect("the task's process starts");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "task {name} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        (stdout, stderr)
    }

    /// Every `py>` task of the workflow (both branches of each `if>`), with the params it would
    /// get in `session` after a `td>` stored `last_job_id`, interpolated as [`Digdag`] does.
    pub fn py_tasks(&self, dig: &Mapping, session: &Value) -> Vec<(String, Value)> {
        let mut params = session.clone();
        deep_merge(
            &mut params,
            &json!({"td": {"last_job_id": "12345", "last_job": {"id": "12345", "num_records": 1}}}),
        );
        let mut found = Vec::new();
        self.collect_py("+", dig, &params, &mut found);
        found
    }

    fn collect_py(&self, name: &str, def: &Mapping, parent: &Value, found: &mut Vec<(String, Value)>) {
        let mut params = parent.clone();
        if let Some(export) = def.get("_export") {
            deep_merge(&mut params, &to_json(export));
        }
        if def.contains_key("py>") {
            let own: Map<String, Value> = def
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_json(v))))
                .filter(|(k, _)| k != "_export")
                .collect();
            let mut all = params.clone();
            deep_merge(&mut all, &Value::Object(own));
            found.push((name.to_string(), self.interpolate_all(&all, &params, false)));
        }
        for (k, v) in def {
            let (Some(k), Some(v)) = (k.as_str(), v.as_mapping()) else {
                continue;
            };
            if k.starts_with('+') || k == "_do" || k == "_else_do" {
                self.collect_py(&format!("{name}{k}"), v, &params, found);
            }
        }
    }
}
