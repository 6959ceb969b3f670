//! The spec's checks beyond the JSON Schema: exactly one source and one target (in clearer words
//! than `oneOf`), values the schema cannot express (the td:// URL, the time, settings that fit the
//! target form), and warnings (literal API keys, keys that have no effect).

use serde_json::{Map, Value};
use td_model::key::{is_key_name, looks_like_api_key};
use td_model::time::TimeError;
use td_model::TdUrl;

use super::schema::{self, did_you_mean, Ranked, RANK_STRUCTURE, RANK_UNKNOWN_KEY};
use super::{PrioritySpec, ResultUrl, TaskSpec, TimeSetting, KNOWN_SETTINGS};
use crate::error::{shown, At, SpecError, SpecPath, Warning};

/// Warns about API keys written literally (before interpolation) instead of `${secret:…}`.
pub(super) fn literal_key_warnings(doc: &Value, at: &dyn Fn(&SpecPath) -> At) -> Vec<Warning> {
    fn walk(value: &Value, path: &SpecPath, out: &mut Vec<SpecPath>) {
        match value {
            Value::String(text) => {
                let literal_key = path.last_key().is_some_and(is_key_name)
                    && !text.trim().is_empty()
                    && !text.contains("${");
                let literal_in_url = text.starts_with("td://")
                    && text[5..]
                        .rfind('@')
                        .is_some_and(|i| i > 0 && !text[5..5 + i].contains("${"));
                let text_settings = path.last_key() == Some("result_settings")
                    && serde_json::from_str::<Value>(text).is_ok_and(|v| {
                        let mut inner = Vec::new();
                        walk(&v, path, &mut inner);
                        !inner.is_empty()
                    });
                if literal_key || literal_in_url || text_settings || looks_like_api_key(text) {
                    out.push(path.clone());
                }
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &path.index(i), out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, &path.key(k), out)),
            _ => {}
        }
    }
    let mut paths = Vec::new();
    walk(doc, &SpecPath::root(), &mut paths);
    paths.dedup();
    let mut warnings: Vec<Warning> = paths
        .into_iter()
        .map(|path| Warning {
            at: at(&path),
            message: "an API key is written in the spec; anyone who can read the spec can use it. \
                      Use ${secret:NAME} with --secrets FILE or an environment variable instead"
                .to_string(),
        })
        .collect();
    warnings.sort_by_key(|w| w.at.line);
    warnings
}

/// `result_settings` given as JSON text (Digdag accepts both) becomes the map it holds.
pub(super) fn settings_from_json_text(
    doc: &mut Value,
    at: &dyn Fn(&SpecPath) -> At,
) -> Result<(), SpecError> {
    let Some(Value::String(text)) = doc.get("result_settings") else {
        return Ok(());
    };
    let path = SpecPath::parse("result_settings");
    // JSON text is YAML too: the same walk finds a key given twice (serde_json keeps the last).
    if let (
        _,
        super::locate::Shape {
            duplicate: Some((dup, _, _)),
            ..
        },
    ) = super::locate::Locator::scan(text)
    {
        return Err(SpecError::Invalid {
            at: at(&path),
            problem: format!(
                "`{}` is given twice in the JSON text",
                dup.last_key().unwrap_or("?")
            ),
            fix: "Keep one of them.".to_string(),
        });
    }
    let parsed: Value = serde_json::from_str(text).map_err(|e| {
        let at = at(&path);
        SpecError::Syntax {
            file: at.file.to_string(),
            line: at.line,
            format: "JSON in result_settings",
            message: format!("{e} of the JSON text"),
        }
    })?;
    if !parsed.is_object() {
        return Err(SpecError::Invalid {
            at: at(&path),
            problem: format!("the JSON text holds {}, not a map", schema::type_name(&parsed)),
            fix: "Write a map: {\"user_database_name\": \"testdb\", \"user_table_name\": \"t\", \"mode\": \"append\"}."
                .to_string(),
        });
    }
    doc["result_settings"] = parsed;
    Ok(())
}

const SOURCES: [&str; 3] = ["job_id", "query", "query_file"];
const TARGETS: [&str; 2] = ["result_url", "result_connection"];

/// Exactly one source and one target, and what each needs; clearer than the schema's `oneOf`.
pub(super) fn structure_errors(doc: &Map<String, Value>, at: &dyn Fn(&SpecPath) -> At) -> Vec<Ranked> {
    let invalid = |path: SpecPath, problem: String, fix: &str| SpecError::Invalid {
        at: at(&path),
        problem,
        fix: fix.to_string(),
    };
    let mut errors = Vec::new();
    let source = exactly_one(doc, &SOURCES, at, "source").map_err(|(path, problem)| {
        let fix = match problem.as_str() {
            "no source is given" => {
                "Add job_id: (the id of the job whose result to export), or query: or query_file: with database:."
            }
            _ => "Give exactly one source: job_id, query or query_file.",
        };
        invalid(path, problem, fix)
    });
    let td_database = doc.get("td").and_then(|td| td.get("database")).is_some();
    match source {
        Ok(query @ ("query" | "query_file")) if !doc.contains_key("database") && !td_database => {
            errors.push(invalid(
                SpecPath::parse(query),
                format!("`{query}` needs `database`"),
                "Add database: (the source account's database the query runs in), or td: {database: …}.",
            ))
        }
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    if doc.contains_key("result_connection") && !doc.contains_key("result_settings") {
        errors.push(invalid(
            SpecPath::parse("result_connection"),
            "`result_connection` needs `result_settings`".to_string(),
            "Add result_settings: {user_database_name: DB, user_table_name: TABLE} (mode: append|replace).",
        ));
    }
    if let Err((path, problem)) = exactly_one(doc, &TARGETS, at, "target") {
        let fix = match problem.as_str() {
            "no target is given" => {
                "Add result_url: td://@/DATABASE/TABLE, or result_connection: NAME with result_settings:."
            }
            _ => "Give exactly one target: result_url or result_connection.",
        };
        errors.push(invalid(path, problem, fix));
    }
    if let Some(Value::Object(settings)) = doc.get("result_settings") {
        for (alias, name) in td_model::settings::ALIASES {
            if settings.contains_key(name) && settings.contains_key(alias) {
                errors.push(invalid(
                    SpecPath::parse("result_settings").key(alias),
                    format!("`{name}` and its alias `{alias}` are both given"),
                    &format!("Keep one of result_settings.{name} and result_settings.{alias}."),
                ));
            }
        }
    }
    let mut ranked: Vec<Ranked> = errors
        .into_iter()
        .map(|e| (RANK_STRUCTURE, e.at().and_then(|a| a.line), e))
        .collect();
    ranked.extend(misspelt_settings(doc, at));
    ranked
}

/// `result_settings` keys that are a typo of a key this program reads (`user_databse_name`):
/// unknown keys, with the key meant. A key like no known one stays: the server engine forwards
/// keys it does not know to TD's connector, which has more.
fn misspelt_settings(doc: &Map<String, Value>, at: &dyn Fn(&SpecPath) -> At) -> Vec<Ranked> {
    let Some(Value::Object(settings)) = doc.get("result_settings") else {
        return Vec::new();
    };
    let known: Vec<String> = KNOWN_SETTINGS.iter().map(|k| k.to_string()).collect();
    settings
        .keys()
        .filter(|key| !KNOWN_SETTINGS.contains(&key.as_str()))
        .filter_map(|key| {
            let suggestion = did_you_mean(key, KNOWN_SETTINGS)?;
            let err = SpecError::UnknownKey {
                at: at(&SpecPath::parse("result_settings").key(key)),
                key: key.clone(),
                suggestion: Some(suggestion),
                allowed: known.clone().into_boxed_slice(),
            };
            Some((RANK_UNKNOWN_KEY, err.at().and_then(|a| a.line), err))
        })
        .collect()
}

/// The one of `keys` that `doc` holds, or where and why there is not exactly one.
fn exactly_one(
    doc: &Map<String, Value>,
    keys: &[&'static str],
    at: &dyn Fn(&SpecPath) -> At,
    what: &str,
) -> Result<&'static str, (SpecPath, String)> {
    let line_of = |key: &str| {
        at(&SpecPath::parse(key))
            .line
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default()
    };
    let given: Vec<&'static str> = keys.iter().filter(|k| doc.contains_key(**k)).copied().collect();
    match given.as_slice() {
        [] => Err((SpecPath::root(), format!("no {what} is given"))),
        [one] => Ok(one),
        [first, second, ..] => Err((
            SpecPath::parse(second),
            format!(
                "`{first}`{} and `{second}`{} are both given",
                line_of(first),
                line_of(second)
            ),
        )),
    }
}

/// A spec error at `path`.
fn invalid(at: &dyn Fn(&SpecPath) -> At, path: &str, problem: String, fix: &str) -> SpecError {
    SpecError::Invalid {
        at: at(&SpecPath::parse(path)),
        problem,
        fix: fix.to_string(),
    }
}

/// Checks the schema cannot express: the target URL, times, priority, settings coherence with
/// the target form.
pub(super) fn value_checks(doc: &Value, at: &dyn Fn(&SpecPath) -> At) -> Result<(), SpecError> {
    let settings = doc
        .get("result_settings")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let url = match doc.get("result_url").and_then(Value::as_str) {
        Some(text) => Some(ResultUrl::parse(text).map_err(|problem| {
            invalid(
                at,
                "result_url",
                format!("{}: {problem}", shown(&SpecPath::parse("result_url"), text)),
                "Write td://APIKEY@HOST/DATABASE/TABLE[?mode=append|replace] (td://@/DATABASE/TABLE is the source \
                 account), or NAME:TABLE for a result saved on the source account.",
            )
        })?),
        None => None,
    };
    if let Some(ResultUrl::Td { url, .. }) = &url {
        url_settings_checks(url, &settings, at)?;
    }
    if doc.get("result_connection").is_some() {
        for (alias, name) in td_model::settings::ALIASES {
            if !settings.contains_key(name) && !settings.contains_key(alias) {
                return Err(invalid(
                    at,
                    "result_settings",
                    format!("`{name}` is missing"),
                    &format!("Add result_settings.{name}: the target's {alias}."),
                ));
            }
        }
    }
    if let Some(time) = settings.get("time") {
        time_check(time, "result_settings.time", at)?;
    }
    if let Some(time) = doc.get("scheduled_time") {
        time_check(time, "scheduled_time", at)?;
    }
    if let Some(priority) = doc.get("priority") {
        priority_check(priority, at)?;
    }
    let legacy = settings
        .get("legacy_mode")
        .and_then(Value::as_bool)
        .or(match &url {
            Some(ResultUrl::Td { url, .. }) => url.legacy,
            _ => None,
        })
        .unwrap_or(false);
    if legacy && doc.get("transfer").and_then(Value::as_str) == Some("stream") {
        return Err(invalid(
            at,
            "result_settings.legacy_mode",
            "`legacy_mode: true` chooses TD's server-side td:// connector, but transfer is stream"
                .to_string(),
            "Drop `transfer: stream` (auto then lets TD write the target) or drop legacy_mode.",
        ));
    }
    Ok(())
}

/// `priority:` is -2 to 2 or a name.
fn priority_check(priority: &Value, at: &dyn Fn(&SpecPath) -> At) -> Result<(), SpecError> {
    let read = serde_json::from_value::<PrioritySpec>(priority.clone())
        .map_err(|_| "is not a priority".to_string())
        .and_then(|p| p.to_number());
    read.map(drop).map_err(|problem| {
        invalid(
            at,
            "priority",
            format!(
                "{} {problem}",
                schema::shown_value(&SpecPath::parse("priority"), priority)
            ),
            "Give -2 to 2, or VERY LOW, LOW, NORMAL, HIGH or VERY HIGH.",
        )
    })
}

/// With a td:// URL, the settings may not name the target again, nor contradict the URL.
fn url_settings_checks(
    url: &TdUrl,
    settings: &Map<String, Value>,
    at: &dyn Fn(&SpecPath) -> At,
) -> Result<(), SpecError> {
    let target_keys = td_model::settings::ALIASES
        .iter()
        .flat_map(|(alias, name)| [*name, *alias]);
    for key in target_keys.chain(["api_key", "api_hostname"]) {
        if settings.contains_key(key) {
            return Err(invalid(
                at,
                &format!("result_settings.{key}"),
                format!("`{key}` is also named by result_url"),
                "With a td:// result_url, keep only mode, time, time_column, legacy_mode and on_schema_conflict in result_settings (or use result_connection).",
            ));
        }
    }
    let settings_mode = settings.get("mode").and_then(Value::as_str);
    if let (Some(url_mode), Some(mode)) = (url.mode, settings_mode) {
        if url_mode.as_str() != mode {
            return Err(invalid(
                at,
                "result_settings.mode",
                format!("`{mode}` contradicts result_url's ?mode={url_mode}"),
                "Give the mode in one place.",
            ));
        }
    }
    for (key, param, in_url) in [
        ("time", "time", url.time.is_some()),
        ("legacy_mode", "legacy", url.legacy.is_some()),
    ] {
        if in_url && settings.contains_key(key) {
            return Err(invalid(
                at,
                &format!("result_settings.{key}"),
                format!("`{key}` is also given by result_url's ?{param}="),
                "Give it in one place.",
            ));
        }
    }
    Ok(())
}

/// A time value reads as a time. The schema lets integers and strings through; a float such as
/// 1e10 is not seconds, and seconds must name a year from 0 to 9999.
fn time_check(time: &Value, path: &str, at: &dyn Fn(&SpecPath) -> At) -> Result<(), SpecError> {
    let read = match time {
        Value::Number(n) if n.is_f64() => Err("is not whole Unix seconds".to_string()),
        Value::Number(n) => n
            .as_i64()
            .ok_or(TimeError::OutOfRange)
            .and_then(|s| TimeSetting::Seconds(s).to_seconds())
            .map_err(|e| e.to_string()),
        Value::String(text) => TimeSetting::Text(text.clone())
            .to_seconds()
            .map_err(|e| e.to_string()),
        _ => Err(TimeError::Unreadable.to_string()),
    };
    read.map(drop).map_err(|problem| {
        invalid(
            at,
            path,
            format!("{} {problem}", schema::shown_value(&SpecPath::parse("time"), time)),
            "Give Unix seconds (1700000000) or a timestamp: 2024-01-31 00:00:00 UTC, 2024-01-31T00:00:00Z, 2024-01-31.",
        )
    })
}

/// Warns about keys that are accepted but have no effect.
pub(super) fn ignored_key_warnings(spec: &TaskSpec, at: &dyn Fn(&SpecPath) -> At) -> Vec<Warning> {
    let mut out = Vec::new();
    if spec.job_id.is_some() {
        let query_keys = [
            ("database", spec.database.is_some()),
            ("engine", spec.engine.is_some()),
            ("priority", spec.priority.is_some()),
            ("retry_limit", spec.retry_limit.is_some()),
            ("pool_name", spec.pool_name.is_some()),
            ("engine_version", spec.engine_version.is_some()),
            ("scheduled_time", spec.scheduled_time.is_some()),
        ];
        for (key, present) in query_keys {
            if present {
                out.push(Warning {
                    at: at(&SpecPath::parse(key)),
                    message: format!("`{key}` is ignored: the source is an existing job (job_id)"),
                });
            }
        }
    }
    for (name, connection) in &spec.connections {
        if connection.kind.is_none() {
            let path = SpecPath::parse("connections").key(name);
            out.push(Warning {
                at: at(&path),
                message: "`type` is missing; treasure_data is assumed".to_string(),
            });
        }
    }
    out
}
