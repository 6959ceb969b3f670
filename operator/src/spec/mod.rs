//! The spec stage: YAML → `serde_json::Value` → interpolation → JSON Schema validation and
//! structure checks → typed [`TaskSpec`]. Nothing here touches the network.
//!
//! Order of checks, so the first error reported is the one that explains the rest: YAML syntax,
//! interpolation (unknown variables/secrets), unknown keys (with "did you mean"), the spec's
//! structure (exactly one source, exactly one target, what each needs), then values in line order,
//! then checks the schema cannot express (td:// URL, time value, legacy_mode needs transfer: server).

mod checks;
pub(crate) mod connections;
pub(crate) mod interpolate;
pub(crate) mod locate;
pub(crate) mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use td_model::time::{check_seconds, parse_time, TimeError};
pub(crate) use td_model::{ApiKey, Mode, TdUrl};

use crate::error::{shown, At, SpecError, SpecPath, Warning};
use checks::{
    ignored_key_warnings, literal_key_warnings, settings_from_json_text, structure_errors, value_checks,
};
pub(crate) use connections::ConnectionsFile;
pub use interpolate::{Environment, LocalAccount, LocalAccounts};
pub(crate) use interpolate::{Interpolator, Unresolved};
use locate::Locator;
use schema::{Ranked, Schema};

/// The engine a query runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Presto,
    Trino,
    Hive,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Presto => "presto",
            Engine::Trino => "trino",
            Engine::Hive => "hive",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who moves the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// This program reads the result and writes the target (exactly once).
    #[default]
    Stream,
    /// TD's own result export does it.
    Server,
}

/// `transfer:` — which engine the spec asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferChoice {
    /// Stream when the target account's key is known here, else server (docs/architecture.md §6).
    #[default]
    Auto,
    Stream,
    Server,
}

impl TransferChoice {
    /// The engine asked for, unless the choice is left to the run.
    pub fn fixed(self) -> Option<Transfer> {
        match self {
            TransferChoice::Auto => None,
            TransferChoice::Stream => Some(Transfer::Stream),
            TransferChoice::Server => Some(Transfer::Server),
        }
    }
}

impl Transfer {
    pub fn as_str(self) -> &'static str {
        match self {
            Transfer::Stream => "stream",
            Transfer::Server => "server",
        }
    }
}

impl fmt::Display for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A time the spec gives (`result_settings.time`, `scheduled_time`), read: Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TimeSetting")]
pub struct UnixTime(pub i64);

impl TryFrom<TimeSetting> for UnixTime {
    type Error = TimeError;

    fn try_from(setting: TimeSetting) -> Result<UnixTime, TimeError> {
        setting.to_seconds().map(UnixTime)
    }
}

/// A time as written: Unix seconds or a timestamp text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeSetting {
    Seconds(i64),
    Text(String),
}

impl TimeSetting {
    /// Unix seconds (a text is read as [`td_model::time::parse_time`] reads it).
    pub fn to_seconds(&self) -> Result<i64, TimeError> {
        match self {
            TimeSetting::Seconds(secs) => check_seconds(*secs),
            TimeSetting::Text(text) => parse_time(text),
        }
    }
}

/// `result_settings:` (the TD connector's settings). Keys this program does not know stay in
/// the raw settings ([`LoadedSpec::raw_settings`]): the server engine forwards them to TD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSettings {
    #[serde(alias = "database")]
    pub user_database_name: Option<String>,
    #[serde(alias = "table")]
    pub user_table_name: Option<String>,
    pub mode: Option<Mode>,
    pub time: Option<UnixTime>,
    pub time_column: Option<String>,
    pub legacy_mode: Option<bool>,
    pub on_schema_conflict: Option<OnSchemaConflict>,
    pub api_hostname: Option<String>,
    pub api_key: Option<ApiKey>,
}

/// `result_settings.on_schema_conflict`: what an append does when a column of the result would
/// read as NULL under the existing table's type for it. TD itself stores such values and reads
/// them as NULL without a word (docs/td-semantics.md, mistyped values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaConflict {
    /// Stop before any row moves (exit 2), naming each column.
    #[default]
    Stop,
    /// Write anyway.
    Write,
}

/// The `result_settings` keys this program reads (the stream engine honours all of them).
pub(crate) const KNOWN_SETTINGS: [&str; 11] = [
    "user_database_name",
    "database",
    "user_table_name",
    "table",
    "mode",
    "time",
    "time_column",
    "legacy_mode",
    "on_schema_conflict",
    "api_hostname",
    "api_key",
];

/// `td:` — the source account, as Digdag's td operators read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdSection {
    pub endpoint: Option<String>,
    pub apikey: Option<ApiKey>,
    pub use_ssl: Option<bool>,
    /// The default database of a query.
    pub database: Option<String>,
    pub proxy: Option<ProxySpec>,
}

/// `td.proxy:` as Digdag reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    pub enabled: Option<bool>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<ApiKey>,
    pub use_ssl: Option<bool>,
}

/// `priority:` as td> and `td query -P` take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PrioritySpec {
    Number(i64),
    Name(String),
}

/// Priority names and their numbers.
pub(crate) const PRIORITIES: [(&str, i8); 5] = [
    ("VERY LOW", -2),
    ("LOW", -1),
    ("NORMAL", 0),
    ("HIGH", 1),
    ("VERY HIGH", 2),
];

/// A query's priority, -2 (VERY LOW) to 2 (VERY HIGH): `priority:` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PrioritySpec")]
pub struct Priority(pub i8);

impl TryFrom<PrioritySpec> for Priority {
    type Error = String;

    fn try_from(spec: PrioritySpec) -> Result<Priority, String> {
        spec.to_number().map(Priority)
    }
}

impl PrioritySpec {
    /// -2 to 2, or why not.
    pub fn to_number(&self) -> Result<i8, String> {
        match self {
            PrioritySpec::Number(n) => i8::try_from(*n)
                .ok()
                .filter(|n| (-2..=2).contains(n))
                .ok_or_else(|| "is not between -2 and 2".to_string()),
            PrioritySpec::Name(name) => {
                let wanted = name.trim().replace(['_', '-'], " ").to_ascii_uppercase();
                PRIORITIES
                    .iter()
                    .find(|(n, _)| *n == wanted)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        "is not a priority (VERY LOW, LOW, NORMAL, HIGH, VERY HIGH or -2 to 2)".to_string()
                    })
            }
        }
    }
}

/// One `treasure_data` connection (`connections:` entry or `--connections` file entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub api_key: Option<ApiKey>,
    pub api_hostname: Option<String>,
}

/// `_retry:` as Digdag writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetrySpec {
    Limit(u32),
    Full {
        limit: u32,
        interval: Option<u64>,
        interval_type: Option<IntervalType>,
        max_interval: Option<u64>,
    },
}

/// `_retry.interval_type`: how the wait between attempts grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalType {
    #[default]
    Constant,
    /// Doubles after each attempt (up to `max_interval`).
    Exponential,
}

/// The validated, interpolated task spec (one field per top-level key of the schema), its times
/// and priority read. Its source and target, which take several keys together, are typed in
/// [`LoadedSpec::source`] and [`LoadedSpec::target`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    #[serde(rename = "td_result_export>", default)]
    pub operator: Option<String>,
    #[serde(default, deserialize_with = "job_id")]
    pub job_id: Option<String>,
    pub query: Option<String>,
    pub query_file: Option<String>,
    pub database: Option<String>,
    pub engine: Option<Engine>,
    pub priority: Option<Priority>,
    pub retry_limit: Option<u32>,
    pub pool_name: Option<String>,
    pub engine_version: Option<String>,
    pub scheduled_time: Option<UnixTime>,
    #[serde(default, deserialize_with = "result_url")]
    pub result_url: Option<ResultUrl>,
    pub result_connection: Option<String>,
    pub result_settings: Option<ResultSettings>,
    #[serde(default)]
    pub td: TdSection,
    #[serde(rename = "_retry")]
    pub retry: Option<RetrySpec>,
    pub idempotency_key: Option<String>,
    pub transfer: Option<TransferChoice>,
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSpec>,
}

fn job_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(id) => Ok(Some(id.to_string())),
            None => Err(serde::de::Error::custom(format!(
                "`{n}` is not a job id (write it as digits, e.g. \"12345\")"
            ))),
        },
        _ => Ok(None),
    }
}

/// `result_url:` — a td:// URL, or a result saved on the source account and a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ResultUrl {
    /// A td:// URL and the table it names.
    Td { url: TdUrl, table: String },
    /// `NAME:TABLE` (`td result:create NAME td://…/DATABASE` + `--result NAME:TABLE`).
    Saved { name: String, table: String },
}

impl ResultUrl {
    /// Reads a `result_url` value.
    pub fn parse(text: &str) -> Result<ResultUrl, String> {
        if text.starts_with("td://") {
            let url = TdUrl::parse_table(text).map_err(|e| e.to_string())?;
            let table = url
                .table
                .clone()
                .ok_or_else(|| "names no table: td://APIKEY@HOST/DATABASE/TABLE".to_string())?;
            return Ok(ResultUrl::Td { url, table });
        }
        let (name, table) = text
            .split_once(':')
            .ok_or_else(|| "is neither a td:// URL nor NAME:TABLE".to_string())?;
        let saved_name = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !saved_name(name) {
            return Err(format!(
                "`{name}` is not the name of a saved result (letters, digits, _ and -)"
            ));
        }
        td_model::name::check_name("table", table).map_err(|e| e.to_string())?;
        Ok(ResultUrl::Saved {
            name: name.to_string(),
            table: table.to_string(),
        })
    }
}

fn result_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ResultUrl>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| ResultUrl::parse(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// What the command line adds to a spec.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `--param name=value`
    pub params: BTreeMap<String, String>,
    /// `--secrets FILE`
    pub secrets_file: Option<PathBuf>,
    /// `--connections FILE`
    pub connections_file: Option<PathBuf>,
    /// `--local DIR`: every endpoint is the embedded td-local, with its data in DIR.
    pub local_dir: Option<PathBuf>,
    pub env: Environment,
    /// Where `${local:…}` and a local source's default key come from.
    pub local_accounts: LocalAccounts,
    /// Who runs this program, for messages that say what to fix where the user writes it.
    pub runner: Runner,
}

/// Who runs this program: a person or a script on the command line, or the py> entry point
/// (whose spec is a task's params, written to a temporary file the user never sees).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Runner {
    #[default]
    Cli,
    Py,
}

impl Runner {
    /// The spec line of `path` worth naming: none for a py> task, whose spec is JSON written on
    /// one line the user never sees.
    fn line(self, locator: &Locator, path: &SpecPath) -> Option<usize> {
        match self {
            Runner::Cli => locator.line(path),
            Runner::Py => None,
        }
    }
}

/// Data directory of the embedded td-local when `--local` is not given.
pub(crate) const DEFAULT_LOCAL_DIR: &str = ".td-local";

impl Inputs {
    /// Parses `--param` arguments (`name=value`; the value may contain `=`).
    pub fn parse_params<S: AsRef<str>>(args: &[S]) -> Result<BTreeMap<String, String>, SpecError> {
        args.iter()
            .map(|arg| {
                let arg = arg.as_ref();
                match arg.split_once('=') {
                    Some((name, value)) if !name.trim().is_empty() => {
                        Ok((name.trim().to_string(), value.to_string()))
                    }
                    _ => Err(SpecError::Usage {
                        arg: format!("--param {}", shown(&SpecPath::root(), arg)),
                        problem: "is not name=value".to_string(),
                        fix: "Write --param td.last_job_id=12345.".to_string(),
                    }),
                }
            })
            .collect()
    }

    /// Values for `${name}` from a YAML or JSON map in a file (`--params FILE`): nested maps give
    /// dotted names, scalars their text. A runner passes them so rather than on the command line,
    /// where every local user reads them (`/proc/*/cmdline`).
    pub fn params_from_file(path: &Path) -> Result<BTreeMap<String, String>, SpecError> {
        let text = read_text(path, "params file", MAX_SPEC_BYTES)?;
        let doc = parse_yaml(&text, &path.display().to_string())?;
        let mut found = BTreeMap::new();
        fn walk(value: &Value, name: String, depth: usize, found: &mut BTreeMap<String, String>) {
            match value {
                Value::String(s) => {
                    found.insert(name, s.clone());
                }
                Value::Bool(_) | Value::Number(_) => {
                    found.insert(name, value.to_string());
                }
                Value::Object(map) if depth < 8 => {
                    for (k, v) in map {
                        let child = if name.is_empty() {
                            k.clone()
                        } else {
                            format!("{name}.{k}")
                        };
                        walk(v, child, depth + 1, found);
                    }
                }
                _ => {}
            }
        }
        match &doc {
            Value::Object(_) | Value::Null => walk(&doc, String::new(), 0, &mut found),
            _ => {
                return Err(SpecError::Usage {
                    arg: format!("--params {}", path.display()),
                    problem: "it is not a map of names to values".to_string(),
                    fix: "Write a YAML or JSON map, e.g. {td: {last_job_id: 12345}}.".to_string(),
                })
            }
        }
        Ok(found)
    }

    fn interpolator(&self) -> Result<Interpolator, SpecError> {
        let secrets = match &self.secrets_file {
            Some(path) => {
                let text = read_text(path, "secrets file", MAX_SPEC_BYTES)?;
                let doc = parse_yaml(&text, &path.display().to_string())?;
                if !(doc.is_object() || doc.is_null()) {
                    return Err(SpecError::Invalid {
                        at: At {
                            file: path.display().to_string().into(),
                            line: Some(1),
                            path: SpecPath::root(),
                        },
                        problem: format!("the secrets file holds {}", schema::type_name(&doc)),
                        fix: "Write a YAML map, e.g. `target: {apikey: \"1/abc…\"}`.".to_string(),
                    });
                }
                Some((path.clone(), doc))
            }
            None => None,
        };
        let local_dir = self
            .local_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCAL_DIR));
        Ok(Interpolator::new(
            self.params.clone(),
            secrets,
            self.env.clone(),
            local_dir,
            self.local_accounts.clone(),
        ))
    }
}

/// What the spec exports: exactly one of `job_id`, `query`, `query_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Job {
        id: String,
    },
    /// A query (its text, or the file holding it) and the database it runs in (`database:`, else
    /// `td.database`).
    Query {
        text: QueryText,
        database: String,
    },
}

/// Where a query's text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryText {
    Inline(String),
    /// `query_file:`, relative to the spec's directory.
    File(String),
}

/// Where the spec writes: exactly one of `result_url` (a td:// URL or a saved result) and
/// `result_connection` (with its table in `result_settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Url(ResultUrl),
    Connection { name: String, table: String },
}

impl SourceSpec {
    /// The source of a spec whose structure has been checked (`checks::structure_errors`); an
    /// error (not a panic) should a spec ever get here without one.
    fn of(spec: &TaskSpec, at: &dyn Fn(&SpecPath) -> At) -> Result<SourceSpec, SpecError> {
        let database = spec.database.clone().or(spec.td.database.clone());
        match (&spec.job_id, &spec.query, &spec.query_file, database) {
            (Some(id), None, None, _) => Ok(SourceSpec::Job { id: id.clone() }),
            (None, Some(sql), None, Some(database)) => Ok(SourceSpec::Query {
                text: QueryText::Inline(sql.clone()),
                database,
            }),
            (None, None, Some(file), Some(database)) => Ok(SourceSpec::Query {
                text: QueryText::File(file.clone()),
                database,
            }),
            _ => Err(SpecError::Invalid {
                at: at(&SpecPath::root()),
                problem: "the spec needs exactly one source, and a database with a query".to_string(),
                fix: "Give job_id, or query (or query_file) with database.".to_string(),
            }),
        }
    }
}

impl TargetSpec {
    /// The target of a spec whose structure has been checked, as [`SourceSpec::of`].
    fn of(spec: &TaskSpec, at: &dyn Fn(&SpecPath) -> At) -> Result<TargetSpec, SpecError> {
        let table = spec
            .result_settings
            .as_ref()
            .and_then(|s| s.user_table_name.clone());
        match (&spec.result_url, &spec.result_connection, table) {
            (Some(url), None, _) => Ok(TargetSpec::Url(url.clone())),
            (None, Some(name), Some(table)) => Ok(TargetSpec::Connection {
                name: name.clone(),
                table,
            }),
            _ => Err(SpecError::Invalid {
                at: at(&SpecPath::root()),
                problem: "the spec needs exactly one target, and a table with result_connection".to_string(),
                fix: "Give result_url, or result_connection with result_settings.user_table_name."
                    .to_string(),
            }),
        }
    }
}

/// A spec that passed the spec stage, with what the resolve stage needs to locate later errors.
#[derive(Debug)]
pub struct LoadedSpec {
    pub spec: TaskSpec,
    pub source: SourceSpec,
    pub target: TargetSpec,
    /// `result_settings` as written (interpolated, JSON text read): what the server engine sends.
    pub raw_settings: Map<String, Value>,
    /// The `--connections` file, read and checked (its entries win over `connections:`).
    pub connections_file: Option<ConnectionsFile>,
    /// Things to tell the user that do not stop the task.
    pub warnings: Vec<Warning>,
    /// The spec file as named in messages.
    pub file: String,
    /// Directory that relative paths in the spec (query_file) are relative to.
    pub base_dir: PathBuf,
    locator: Locator,
    /// Who runs this program (a py> task's spec has no lines worth naming).
    runner: Runner,
    pub(crate) interpolator: Interpolator,
}

impl LoadedSpec {
    /// The embedded td-local's accounts (read, or created the first time).
    pub fn local_accounts(&self) -> Result<&[LocalAccount], String> {
        self.interpolator.local_accounts()
    }

    /// Location of a spec path, with its YAML line when it can be found.
    pub fn at(&self, path: &SpecPath) -> At {
        At {
            file: self.file.as_str().into(),
            line: self.runner.line(&self.locator, path),
            path: path.clone(),
        }
    }
}

/// The largest spec, secrets or connections file read (a task spec takes a few hundred bytes).
pub(crate) const MAX_SPEC_BYTES: u64 = 1 << 20;
/// The largest query text: Presto's default `query.max-length` (TD's own limit is unconfirmed).
pub(crate) const MAX_QUERY_BYTES: u64 = 1_000_000;

/// Reads a file named on the command line or in the spec: a regular file (not a device, a pipe
/// or a directory) of at most `max` bytes.
pub(crate) fn read_text(path: &Path, what: &'static str, max: u64) -> Result<String, SpecError> {
    use std::io::Read;
    let fail = |source: std::io::Error| SpecError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_file() {
        return Err(fail(std::io::Error::other("it is not a regular file")));
    }
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_string(&mut text))
        .map_err(fail)?;
    if read as u64 > max {
        return Err(fail(std::io::Error::other(format!(
            "it is larger than {max} bytes"
        ))));
    }
    Ok(text)
}

/// Loads and validates a spec file.
pub(crate) fn load(path: &Path, inputs: &Inputs) -> Result<LoadedSpec, SpecError> {
    let text = read_text(path, "spec file", MAX_SPEC_BYTES)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    match inputs.runner {
        Runner::Cli => load_str(&text, &path.display().to_string(), &base_dir, inputs),
        // The spec is the task's params in a temporary file: name the params, not the file.
        Runner::Py => load_str(&text, "py> task param", &base_dir, inputs).map_err(for_py_task),
    }
}

/// An error as a py> task's author fixes it: a secret comes from the task's `_env`.
fn for_py_task(e: SpecError) -> SpecError {
    match e {
        SpecError::UnknownSecret { at, name, .. } => SpecError::Invalid {
            problem: format!("`${{secret:{name}}}` is not set for this task"),
            fix: format!(
                "Add it to the task's environment: `_env: {{{}: ${{secret:{name}}}}}` (and `td wf secrets --set {name}` on TD Workflow).",
                crate::error::env_var_name(&name)
            ),
            at,
        },
        SpecError::Several { errors } => SpecError::Several {
            errors: errors.into_iter().map(for_py_task).collect(),
        },
        other => other,
    }
}

/// Loads and validates spec text; `file` names it in messages.
pub(crate) fn load_str(
    text: &str,
    file: &str,
    base_dir: &Path,
    inputs: &Inputs,
) -> Result<LoadedSpec, SpecError> {
    let interpolator = inputs.interpolator()?;
    let (locator, shape) = Locator::scan(text);
    let file_name: std::sync::Arc<str> = file.into();
    let at = |p: &SpecPath| At {
        file: file_name.clone(),
        line: inputs.runner.line(&locator, p),
        path: p.clone(),
    };
    refuse_shape(&shape, file)?;
    let mut doc = parse_yaml(text, file)?;
    if !doc.is_object() {
        return Err(SpecError::Invalid {
            at: at(&SpecPath::root()),
            problem: format!("the spec is {}, not a map", schema::type_name(&doc)),
            fix:
                "Write the task's keys at the top level: `td_result_export>:`, `job_id: …`, `result_url: …`."
                    .to_string(),
        });
    }
    let mut warnings = literal_key_warnings(&doc, &at);
    interpolate_tree(&interpolator, &mut doc, &SpecPath::root(), &at)?;
    settings_from_json_text(&mut doc, &at)?;
    let mut ranked = Schema::task().check(&doc, &at);
    ranked.extend(structure_errors(doc.as_object().expect("checked above"), &at));
    if let Some(err) = all_errors(ranked) {
        return Err(err);
    }
    value_checks(&doc, &at)?;
    let raw_settings = doc
        .get("result_settings")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let spec: TaskSpec = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = SpecPath::parse(&e.path().to_string());
        SpecError::Invalid {
            at: at(&path),
            problem: format!("{}", e.inner()),
            fix: "Write the value as the spec reference (`td-result-export schema`) describes it."
                .to_string(),
        }
    })?;
    let (source, target) = (SourceSpec::of(&spec, &at)?, TargetSpec::of(&spec, &at)?);
    warnings.extend(ignored_key_warnings(&spec, &at));
    let connections_file = match &inputs.connections_file {
        Some(path) => Some(connections::load(path, &interpolator)?),
        None => None,
    };
    Ok(LoadedSpec {
        spec,
        source,
        target,
        raw_settings,
        connections_file,
        warnings,
        file: file.to_string(),
        base_dir: base_dir.to_path_buf(),
        locator,
        runner: inputs.runner,
        interpolator,
    })
}

/// What the YAML walk found that no spec may hold: a key given twice (the parser would keep the
/// last silently), nesting deeper than any spec, an alias (a way to make a small text huge).
pub(crate) fn refuse_shape(shape: &locate::Shape, file: &str) -> Result<(), SpecError> {
    let at = |line: usize, path: SpecPath| At {
        file: file.into(),
        line: Some(line),
        path,
    };
    if let Some((path, first, again)) = &shape.duplicate {
        return Err(SpecError::Invalid {
            at: at(*again, path.clone()),
            problem: format!(
                "`{}` is given twice (lines {first} and {again})",
                path.last_key().unwrap_or("?")
            ),
            fix: "Keep one of them: a YAML map holds each key once.".to_string(),
        });
    }
    if let Some(line) = shape.too_deep {
        return Err(SpecError::Invalid {
            at: at(line, SpecPath::root()),
            problem: format!("maps and lists are nested deeper than {}", locate::MAX_DEPTH),
            fix: "A task spec nests a few levels at most: check the file is the spec you meant.".to_string(),
        });
    }
    if let Some(line) = shape.alias {
        return Err(SpecError::Invalid {
            at: at(line, SpecPath::root()),
            problem: "a YAML alias (*name) is used".to_string(),
            fix: "Write the value out: aliases are not read in task specs.".to_string(),
        });
    }
    Ok(())
}

/// YAML text → JSON value (an empty document is `null`).
pub(crate) fn parse_yaml(text: &str, file: &str) -> Result<Value, SpecError> {
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| SpecError::Syntax {
        file: file.to_string(),
        line: e.location().map(|l| l.line()),
        format: "YAML",
        message: e.to_string(),
    })
}

/// Every error, as one: unknown keys first (a typo explains what follows it: the key meant is
/// then "missing"), then the others, each group in file order.
pub(crate) fn all_errors(mut ranked: Vec<Ranked>) -> Option<SpecError> {
    // The schema's own summary of the top level ("not valid under any of the schemas") says
    // less than the structure errors that come with it.
    if ranked.iter().any(|(rank, _, _)| *rank == schema::RANK_STRUCTURE) {
        ranked.retain(|(rank, _, e)| {
            !(*rank == schema::RANK_VALUE && e.at().is_some_and(|a| a.path == SpecPath::root()))
        });
    }
    let mut seen = std::collections::HashSet::new();
    ranked.retain(|(_, _, e)| seen.insert(e.to_string()));
    // "`x` is missing" when another error already asks for `x` says it twice.
    let texts: Vec<String> = ranked.iter().map(|(_, _, e)| e.to_string()).collect();
    ranked.retain(|(_, _, e)| match e {
        SpecError::Invalid { problem, .. } if problem.ends_with("` is missing") => {
            let named = problem.trim_end_matches(" is missing");
            let own = e.to_string();
            !texts.iter().any(|t| *t != own && t.contains(named))
        }
        _ => true,
    });
    ranked.sort_by_key(|(rank, line, _)| {
        (
            u8::from(*rank != schema::RANK_UNKNOWN_KEY),
            line.unwrap_or(usize::MAX),
        )
    });
    let mut errors: Vec<SpecError> = ranked.into_iter().map(|(_, _, e)| e).collect();
    match errors.len() {
        0 => None,
        1 => errors.pop(),
        _ => Some(SpecError::Several { errors }),
    }
}

/// Replaces `${…}` in every string of `value` (keys are left alone).
pub(crate) fn interpolate_tree(
    interpolator: &Interpolator,
    value: &mut Value,
    path: &SpecPath,
    at: &dyn Fn(&SpecPath) -> At,
) -> Result<(), SpecError> {
    match value {
        Value::String(text) if text.contains("${") => {
            let replaced = if text.trim_start().starts_with("td://") {
                interpolator.interpolate_url(text)
            } else {
                interpolator.interpolate(text)
            };
            *text = replaced.map_err(|u| unresolved_error(u, at(path)))?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(interpolator, item, &path.index(i), at)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                interpolate_tree(interpolator, item, &path.key(key), at)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The error for a `${…}` that could not be replaced at `at`.
pub(crate) fn unresolved_error(unresolved: Unresolved, at: At) -> SpecError {
    match unresolved {
        Unresolved::Variable { name, tried } => SpecError::UnknownVariable { at, name, tried },
        Unresolved::Secret { name, tried } => SpecError::UnknownSecret { at, name, tried },
        Unresolved::Local { reference, problem } => SpecError::Invalid {
            at,
            problem: format!("`${{local:{reference}}}`: {problem}"),
            fix: "Write ${local:account1.master_key} (or accountN.write_only_key).".to_string(),
        },
        Unresolved::Structure { inside, found, part } => SpecError::Invalid {
            problem: format!(
                "the value of `${{{inside}}}` holds `{found}`, which would change the td:// URL it is put into ({part})"
            ),
            at,
            fix: "Pass a plain name: a value may not add a path, a parameter or a key to the URL.".to_string(),
        },
        Unresolved::Syntax { inside } => SpecError::Invalid {
            problem: format!("`${{{inside}}}` is not a variable name (expressions are not evaluated)"),
            at,
            fix: "Use ${name}, ${secret:NAME} or ${local:accountN.master_key}; compute values in the workflow and pass them with --param.".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LoadedSpec, SpecError> {
        let inputs = Inputs {
            params: [("day".to_string(), "20240101".to_string())].into(),
            ..Inputs::default()
        };
        load_str(text, "t.yml", Path::new("."), &inputs)
    }

    fn error(text: &str) -> String {
        load(text).expect_err("the spec should be refused").to_string()
    }

    #[test]
    fn a_minimal_spec_loads_with_defaults() {
        let spec =
            load("td_result_export>:\njob_id: 12345\nresult_url: td://@/testdb/output_table\n").unwrap();
        assert_eq!(spec.spec.job_id.as_deref(), Some("12345"));
        let Some(ResultUrl::Td { url, .. }) = &spec.spec.result_url else {
            panic!("a td:// URL")
        };
        assert_eq!(url.table.as_deref(), Some("output_table"));
        assert!(spec.warnings.is_empty());
    }

    #[test]
    fn result_settings_as_json_text_is_the_same_as_a_map() {
        let text = "job_id: '1'\nresult_connection: c\nresult_settings: '{\"database\": \"testdb\", \"table\": \"t_1\", \"mode\": \"replace\", \"time\": \"2024-01-01\"}'\n";
        let settings = load(text).unwrap().spec.result_settings.unwrap();
        assert_eq!(settings.user_database_name.as_deref(), Some("testdb"));
        assert_eq!(settings.mode, Some(Mode::Replace));
        assert_eq!(settings.time, Some(UnixTime(1704067200)));
        let bad = error("job_id: '1'\nresult_connection: c\nresult_settings: '{\"mode\": \"appendd\"'\n");
        assert!(
            bad.starts_with("t.yml:3: not valid JSON in result_settings"),
            "{bad}"
        );
    }

    #[test]
    fn errors_name_the_path_the_line_the_value_and_the_fix() {
        let err = error("job_id: '1'\nresult_connection: c\nresult_settings:\n  database: testdb\n  table: t_1\n  mode: appendd\n");
        assert_eq!(
            err,
            "t.yml:6: result_settings.mode: `appendd` is not one of append, replace. Did you mean `append`?"
        );
        let err = error("job_id: '1'\nreslt_url: td://@/db1/t_1\n");
        assert!(
            err.starts_with(
                "2 problems in the spec:\n  t.yml:2: reslt_url: unknown key `reslt_url` (did you mean `result_url`?)"
            ),
            "{err}"
        );
        assert!(err.ends_with("  t.yml: (top level): no target is given. Add result_url: td://@/DATABASE/TABLE, or result_connection: NAME with result_settings:."), "{err}");
    }

    #[test]
    fn a_misspelt_setting_is_named_before_the_missing_one_and_every_problem_is_shown_in_file_order() {
        let err = error(
            "job_id: '1'\nresult_connection: c\nresult_settings:\n  user_databse_name: db_1\n  user_table_name: t_1\n  mode: upsert\ntransfer: fast\n",
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines[0], "3 problems in the spec:", "{err}");
        assert!(
            lines[1].starts_with("  t.yml:4: result_settings.user_databse_name: unknown key `user_databse_name` (did you mean `user_database_name`?)"),
            "{err}"
        );
        assert!(
            lines[2].starts_with("  t.yml:6: result_settings.mode: `upsert`"),
            "{err}"
        );
        assert!(lines[3].starts_with("  t.yml:7: transfer:"), "{err}");
    }

    #[test]
    fn interpolated_values_are_validated_after_substitution() {
        let err = error("job_id: '1'\nresult_url: td://@/${day}x/t_1\nresult_settings: {time: 'soon'}\n");
        assert!(
            err.contains("result_settings.time: `soon` is not a time"),
            "{err}"
        );
        let ok = load("job_id: ${day}\nresult_url: td://@/db_${day}/t_1\n").unwrap();
        let Some(ResultUrl::Td { url, .. }) = ok.spec.result_url else {
            panic!("a td:// URL")
        };
        assert_eq!(url.database.as_deref(), Some("db_20240101"));
        let err = error("job_id: ${nope}\nresult_url: td://@/db1/t_1\n");
        assert!(
            err.starts_with("t.yml:1: job_id: unknown variable `${nope}` (looked in: --param)"),
            "{err}"
        );
    }

    #[test]
    fn literal_api_keys_warn_without_showing_the_key() {
        let key = format!("1/{}", "0a".repeat(20));
        let spec = load(&format!(
            "job_id: '1'\ntd: {{apikey: '{key}'}}\nresult_url: 'td://{key}@/db1/t_1'\n"
        ))
        .unwrap();
        let shown: Vec<String> = spec.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with("t.yml:2: td.apikey: an API key is written in the spec"));
        assert!(shown[1].starts_with("t.yml:3: result_url: an API key"));
        assert!(!format!("{shown:?}{:?}", spec.spec).contains(&key));
    }

    #[test]
    fn legacy_mode_cannot_be_streamed() {
        let err = error(
            "job_id: '1'\nresult_url: td://@/db1/t_1\nresult_settings: {legacy_mode: true}\ntransfer: stream\n",
        );
        assert!(
            err.contains("result_settings.legacy_mode") && err.contains("transfer is stream"),
            "{err}"
        );
        load("job_id: '1'\nresult_url: td://@/db1/t_1\nresult_settings: {legacy_mode: true}\n").unwrap();
        load("job_id: '1'\nresult_url: td://@/db1/t_1\nresult_settings: {legacy_mode: true}\ntransfer: server\n")
            .unwrap();
    }

    #[test]
    fn saved_results_are_named_with_a_table() {
        let spec = load("job_id: '1'\nresult_url: mydb:output_table\n").unwrap().spec;
        assert_eq!(
            spec.result_url,
            Some(ResultUrl::Saved {
                name: "mydb".into(),
                table: "output_table".into()
            })
        );
        let err = error("job_id: '1'\nresult_url: 'my db:output_table'\n");
        assert!(err.contains("result_url"), "{err}");
        let err = error("job_id: '1'\nresult_url: 'mydb:Bad'\n");
        assert!(err.contains("`Bad` is not a valid TD name for a table"), "{err}");
    }

    #[test]
    fn query_options_are_read_as_td_query_takes_them() {
        let spec = load(
            "query: SELECT 1\ntd: {database: sample_datasets}\npriority: VERY HIGH\nretry_limit: 2\n\
             pool_name: batch\nengine_version: stable\nscheduled_time: '2024-01-31 00:00:00'\nresult_url: td://@/db1/t_1\n",
        )
        .unwrap()
        .spec;
        assert_eq!(spec.priority, Some(Priority(2)));
        assert_eq!(spec.scheduled_time, Some(UnixTime(1706659200)));
        for (bad, needle) in [
            ("priority: 3", "is not between -2 and 2"),
            ("priority: URGENT", "is not a priority"),
        ] {
            let err = error(&format!(
                "query: SELECT 1\ndatabase: db1\n{bad}\nresult_url: td://@/db1/t_1\n"
            ));
            assert!(err.contains(needle) && err.contains("priority"), "{err}");
        }
        let err = error("query: SELECT 1\nresult_url: td://@/db1/t_1\n");
        assert!(err.contains("needs `database`"), "{err}");
    }

    #[test]
    fn time_settings_accept_seconds_and_timestamps() {
        let secs = |t: &str| TimeSetting::Text(t.to_string()).to_seconds();
        assert_eq!(secs("1700000000"), Ok(1700000000));
        assert_eq!(secs("2024-01-31 00:00:00 UTC"), Ok(1706659200));
        assert_eq!(secs("2024-01-31 09:00:00 +0900"), Ok(1706659200));
        assert_eq!(secs("2024-01-31T00:00:00Z"), Ok(1706659200));
        assert_eq!(secs("2024-01-31"), Ok(1706659200));
        assert!(secs("yesterday").is_err());
    }

    #[test]
    fn params_must_be_name_equals_value() {
        let params = Inputs::parse_params(&["a=1", "td.last_job_id=x=y"]).unwrap();
        assert_eq!(params["td.last_job_id"], "x=y");
        assert!(Inputs::parse_params(&["novalue"])
            .unwrap_err()
            .to_string()
            .contains("is not name=value"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Keys a spec may hold, and a few it may not.
        const KEYS: &[&str] = &[
            "td_result_export>",
            "job_id",
            "query",
            "query_file",
            "database",
            "engine",
            "priority",
            "retry_limit",
            "pool_name",
            "engine_version",
            "scheduled_time",
            "result_url",
            "result_connection",
            "result_settings",
            "td",
            "_retry",
            "idempotency_key",
            "transfer",
            "connections",
            "mode",
            "time",
            "time_column",
            "legacy_mode",
            "api_key",
            "limit",
            "interval",
            "endpoint",
            "apikey",
            "proxy",
            "user_database_name",
            "table",
            "nope",
        ];

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
                prop_oneof![
                    Just("td://@/db_1/t_1?mode=replace".to_string()),
                    Just("td://${secret:k}@h/db_1/t_1".to_string()),
                    Just("mydb:t_1".to_string()),
                    Just("${day}".to_string()),
                    Just("${secret:nope}".to_string()),
                    Just("1e10".to_string()),
                    Just("2024-01-31 00:00:00 JST".to_string()),
                    "[ -~]{0,40}",
                ]
                .prop_map(Value::from),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(|m| {
                        Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                    }),
                ]
            })
        }

        fn spec() -> impl Strategy<Value = Value> {
            prop::collection::btree_map(prop::sample::select(KEYS), value(), 0..8)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        }

        fn try_load(text: &str) {
            let inputs = Inputs {
                params: [("day".to_string(), "20240101".to_string())].into(),
                ..Inputs::default()
            };
            let _ = load_str(text, "t.yml", Path::new("."), &inputs);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// No spec, however made, panics the loader: it loads or it says why not.
            #[test]
            fn any_spec_loads_or_is_refused_without_a_panic(doc in spec()) {
                try_load(&serde_yaml_ng::to_string(&doc).unwrap());
            }

            /// Nor does any text at all.
            #[test]
            fn any_text_loads_or_is_refused_without_a_panic(text in "(?s).{0,300}") {
                try_load(&text);
            }
        }
    }
}
