//! JSON Schema validation of the interpolated spec, with the schema's errors turned into
//! [`SpecError`]s that name the path, the value, the line and the fix (did-you-mean included).

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

pub(crate) use td_model::did_you_mean;
use td_model::name::NAME_PATTERN;

use crate::error::{shown, At, Seg, SpecError, SpecPath};

/// JSON Schema (draft 2020-12) of the task spec; `schema/` holds the source.
pub const TASK_SCHEMA: &str = include_str!("../../schema/td_result_export.schema.json");

/// A compiled schema plus its JSON (walked to find allowed keys and descriptions).
pub(crate) struct Schema {
    json: Value,
    validator: Validator,
}

/// How urgent an error is: unknown keys first (a typo explains everything after it), then the
/// spec's structure (one source, one target), then everything else in line order.
pub(crate) type Ranked = (u8, Option<usize>, SpecError);
pub(crate) const RANK_UNKNOWN_KEY: u8 = 0;
pub(crate) const RANK_STRUCTURE: u8 = 1;
pub(crate) const RANK_VALUE: u8 = 2;

impl Schema {
    pub(crate) fn compile(json: Value) -> Schema {
        let validator = jsonschema::draft202012::new(&json).expect("the embedded schema compiles");
        Schema { json, validator }
    }

    /// The task spec schema, as embedded in the binary.
    pub(crate) fn task() -> Schema {
        Schema::compile(serde_json::from_str(TASK_SCHEMA).expect("the embedded schema is JSON"))
    }

    /// A `--connections` file: a map of name → the task schema's `connection`.
    pub(crate) fn connections_file() -> Schema {
        let task: Value = serde_json::from_str(TASK_SCHEMA).expect("the embedded schema is JSON");
        Schema::compile(serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "description": "Connections by name.",
            "type": "object",
            "additionalProperties": {"$ref": "#/$defs/connection"},
            "$defs": task["$defs"],
        }))
    }

    /// Every problem with `doc`, ranked; `at` locates a path.
    pub(crate) fn check(&self, doc: &Value, at: &dyn Fn(&SpecPath) -> At) -> Vec<Ranked> {
        let mut out = Vec::new();
        for error in self.validator.iter_errors(doc) {
            self.convert(&error, at, &mut out);
        }
        out
    }

    fn convert(&self, error: &ValidationError<'_>, at: &dyn Fn(&SpecPath) -> At, out: &mut Vec<Ranked>) {
        let path = pointer_to_path(error.instance_path().as_str());
        let ranked = |rank: u8, err: SpecError| {
            let line = err.at().and_then(|a| a.line);
            (rank, line, err)
        };
        match error.kind() {
            _ if path == SpecPath::parse("td_result_export>") => {
                let err = SpecError::Invalid {
                    at: at(&path),
                    problem: format!(
                        "the operator key takes no value, but has {}",
                        shown_value(&path, error.instance())
                    ),
                    fix: "Leave it empty (`td_result_export>:`) and put the job id in job_id.".to_string(),
                };
                // Ranked with the structure: a job id here is why "no source" would follow.
                out.push(ranked(RANK_STRUCTURE, err));
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = self.allowed_keys(&path);
                for key in unexpected {
                    let err = SpecError::UnknownKey {
                        at: at(&path.key(key)),
                        key: key.clone(),
                        suggestion: did_you_mean(key, allowed.iter().map(String::as_str)),
                        allowed: allowed.clone().into_boxed_slice(),
                    };
                    out.push(ranked(RANK_UNKNOWN_KEY, err));
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                let fix = self.description(&path.key(name)).unwrap_or_default();
                let err = SpecError::Invalid {
                    at: at(&path),
                    problem: format!("`{name}` is missing"),
                    fix: format!("Add {name}: {fix}"),
                };
                out.push(ranked(RANK_STRUCTURE, err));
            }
            ValidationErrorKind::PropertyNames { error } => self.convert(error, at, out),
            kind => {
                let (problem, fix) = self.value_problem(kind, error, &path);
                let err = SpecError::Invalid {
                    at: at(&path),
                    problem,
                    fix,
                };
                out.push(ranked(RANK_VALUE, err));
            }
        }
    }

    /// What is wrong with a value, and the fix.
    fn value_problem(
        &self,
        kind: &ValidationErrorKind,
        error: &ValidationError<'_>,
        path: &SpecPath,
    ) -> (String, String) {
        let value = error.instance();
        let shown = shown_value(path, value);
        let described = || self.fix_from_description(path);
        match kind {
            ValidationErrorKind::Enum { options } => {
                let options: Vec<String> = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|o| o.as_str().map_or(o.to_string(), str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let text = value.as_str().map_or(value.to_string(), str::to_string);
                let fix = match did_you_mean(&text, options.iter().map(String::as_str)) {
                    Some(s) => format!("Did you mean `{s}`?"),
                    None => format!("Use one of: {}.", options.join(", ")),
                };
                (format!("{shown} is not one of {}", options.join(", ")), fix)
            }
            ValidationErrorKind::Constant { expected_value } => (
                format!("{shown} must be {expected_value}"),
                format!("Write {expected_value}."),
            ),
            ValidationErrorKind::Type { kind } => {
                let expected: Vec<&str> = match kind {
                    TypeKind::Single(t) => vec![json_type_name(&t.to_string())],
                    TypeKind::Multiple(ts) => ts.iter().map(|t| json_type_name(&t.to_string())).collect(),
                };
                let problem = format!(
                    "{shown} is {}, but {} is expected",
                    type_name(value),
                    expected.join(" or ")
                );
                (problem, described())
            }
            ValidationErrorKind::Pattern { pattern } => {
                let (what, fix) = match pattern.as_str() {
                    NAME_PATTERN => ("is not a valid TD name", format!("Use {}.", td_model::name::NAME_RULE)),
                    "^(td://|[A-Za-z0-9_-]+:[^/])" => (
                        "is not a td:// URL, nor NAME:TABLE",
                        "Write td://APIKEY@HOST/DATABASE/TABLE (td://@/DATABASE/TABLE is the source account), or \
                         NAME:TABLE for a result saved on the source account."
                            .to_string(),
                    ),
                    "^[0-9]+$" => ("is not a job id", "A job id is digits only, e.g. \"12345\".".to_string()),
                    _ => ("does not match the expected pattern", described()),
                };
                (format!("{shown} {what}"), fix)
            }
            ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
                (format!("{shown} is below the minimum {limit}"), described())
            }
            ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
                (format!("{shown} is above the maximum {limit}"), described())
            }
            ValidationErrorKind::MinLength { .. } => (format!("{shown} is empty"), described()),
            ValidationErrorKind::MaxLength { limit } => {
                (format!("{shown} is longer than {limit} characters"), described())
            }
            // "Exactly one source/target" is checked first with clearer words (see checks.rs);
            // these only remain as a fallback.
            _ => (error.masked().to_string(), described()),
        }
    }

    /// The schema node describing the value at `path` (before following `$ref`, so a property's own
    /// description wins over its type's).
    fn node_at(&self, path: &SpecPath) -> Option<&Value> {
        let mut node = &self.json;
        for seg in &path.0 {
            let object = self.expand(node);
            node = match seg {
                Seg::Key(key) => object
                    .get("properties")
                    .and_then(|p| p.get(key))
                    .or_else(|| object.get("additionalProperties").filter(|a| a.is_object()))?,
                Seg::Index(_) => object.get("items")?,
            };
        }
        Some(node)
    }

    /// Follows `$ref` and a `then` that carries the object's definition.
    fn expand<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        loop {
            if let Some(target) = node.get("$ref").and_then(Value::as_str) {
                match target
                    .strip_prefix("#/")
                    .map(|p| p.split('/').try_fold(&self.json, |n, s| n.get(s)))
                {
                    Some(Some(next)) => node = next,
                    _ => return node,
                }
            } else if node.get("properties").is_none() && node.get("then").is_some() {
                node = &node["then"];
            } else {
                return node;
            }
        }
    }

    /// Keys a map at `path` may hold.
    pub(crate) fn allowed_keys(&self, path: &SpecPath) -> Vec<String> {
        self.node_at(path)
            .map(|n| self.expand(n))
            .and_then(|n| n.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The schema's description of the value at `path`.
    pub(crate) fn description(&self, path: &SpecPath) -> Option<String> {
        let node = self.node_at(path)?;
        node.get("description")
            .or_else(|| self.expand(node).get("description"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn fix_from_description(&self, path: &SpecPath) -> String {
        match self.description(path) {
            Some(d) => format!("Expected: {d}"),
            None => String::new(),
        }
    }
}

/// `/result_settings/mode` → `result_settings.mode`.
pub(crate) fn pointer_to_path(pointer: &str) -> SpecPath {
    SpecPath(
        pointer
            .split('/')
            .skip(1)
            .map(|s| {
                let s = s.replace("~1", "/").replace("~0", "~");
                match s.parse::<usize>() {
                    Ok(n) if !s.starts_with('0') || s == "0" => Seg::Index(n),
                    _ => Seg::Key(s),
                }
            })
            .collect(),
    )
}

/// A value as shown in messages (redacted; strings without JSON quotes).
pub(crate) fn shown_value(path: &SpecPath, value: &Value) -> String {
    match value {
        Value::String(s) => shown(path, s),
        Value::Object(_) | Value::Array(_) => format!("the {}", type_name(value)),
        other => shown(path, &other.to_string()),
    }
}

/// `integer` → `an integer` (JSON Schema's type names in this project's words).
fn json_type_name(name: &str) -> &'static str {
    match name {
        "null" => "nothing",
        "boolean" => "a boolean (true or false)",
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a map",
        _ => "another type",
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_likely_typos_only() {
        let keys = ["result_url", "result_connection", "result_settings", "job_id"];
        assert_eq!(did_you_mean("reslt_url", keys).as_deref(), Some("result_url"));
        assert_eq!(
            did_you_mean("result_setting", keys).as_deref(),
            Some("result_settings")
        );
        assert_eq!(did_you_mean("JOB_ID", keys).as_deref(), Some("job_id"));
        assert_eq!(
            did_you_mean("appendd", ["append", "replace"]).as_deref(),
            Some("append")
        );
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(
            pointer_to_path("/result_settings/mode").to_string(),
            "result_settings.mode"
        );
        assert_eq!(pointer_to_path("/a~1b/0/c").to_string(), "a/b[0].c");
        assert!(pointer_to_path("").is_root());
    }

    #[test]
    fn the_schema_walk_finds_keys_and_descriptions_through_refs() {
        let schema = Schema::task();
        let settings = schema.allowed_keys(&SpecPath::parse("result_settings"));
        assert!(
            settings.contains(&"user_database_name".to_string()) && settings.contains(&"table".to_string())
        );
        let conn = schema.allowed_keys(&SpecPath::parse("connections.anything"));
        assert_eq!(conn, ["api_hostname", "api_key", "type"]);
        assert!(schema
            .description(&SpecPath::parse("result_settings.mode"))
            .unwrap()
            .contains("append"));
        assert!(schema
            .description(&SpecPath::parse("database"))
            .unwrap()
            .contains("source account"));
    }
}
