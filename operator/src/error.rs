//! The bottom of the crate: where a problem is in a spec ([`SpecPath`], [`At`]), the one error type
//! of the spec and resolve stages ([`SpecError`]), how every failure is classified for the runner
//! ([`Exit`], [`Class`], [`Classify`]), and the redaction every shown value goes through.
//!
//! Every spec message names where the problem is (`file:line: spec.path`), the offending value (API
//! keys are never shown) and the fix. Spec errors mean "invalid spec, usage or configuration"
//! (exit code 2): nothing was sent anywhere.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use td_model::key::{is_key_name, mask_keys};

/// One step of a path into the spec: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into the spec, shown dotted: `result_settings.mode`, `connections.target.api_key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpecPath(pub Vec<Seg>);

impl SpecPath {
    pub fn root() -> SpecPath {
        SpecPath(Vec::new())
    }

    /// `SpecPath::parse("result_settings.mode")` (keys only; for tests and literals).
    pub fn parse(dotted: &str) -> SpecPath {
        SpecPath(
            dotted
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| Seg::Key(s.to_string()))
                .collect(),
        )
    }

    pub fn key(&self, key: &str) -> SpecPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        SpecPath(segs)
    }

    pub fn index(&self, index: usize) -> SpecPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        SpecPath(segs)
    }

    pub fn parent(&self) -> Option<SpecPath> {
        let (_, rest) = self.0.split_last()?;
        Some(SpecPath(rest.to_vec()))
    }

    /// The last map key on the path (what a value is "called").
    pub fn last_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SpecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a problem is: the file, the YAML line when it could be found, and the spec path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// The file as named in messages (shared: every location of one file points at one string).
    pub file: Arc<str>,
    pub line: Option<usize>,
    pub path: SpecPath,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.path),
            None => write!(f, "{}: {}", self.file, self.path),
        }
    }
}

/// Everything that makes a spec unusable before any request is sent (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A file named on the command line or in the spec cannot be read.
    #[error("cannot read the {what} `{}`: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML (or the JSON text of `result_settings` is not JSON).
    #[error("{file}{}: not valid {format}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Syntax {
        file: String,
        line: Option<usize>,
        format: &'static str,
        message: String,
    },
    /// A key the spec does not define.
    #[error(
        "{at}: unknown key `{key}`{}. Keys allowed here: {}.",
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(),
        allowed.join(", ")
    )]
    UnknownKey {
        at: At,
        key: String,
        suggestion: Option<String>,
        allowed: Box<[String]>,
    },
    /// A value that is wrong, missing or in conflict with another.
    #[error("{at}: {problem}. {fix}")]
    Invalid { at: At, problem: String, fix: String },
    /// `${name}` with no `--param name=…`.
    #[error("{at}: unknown variable `${{{name}}}` (looked in: {}). Pass --param {name}=VALUE.", tried.join(", "))]
    UnknownVariable {
        at: At,
        name: String,
        tried: Vec<String>,
    },
    /// `${secret:NAME}` found in none of the secret sources.
    #[error(
        "{at}: unknown secret `{name}` (looked in: {}). Add `{name}` to the --secrets file or set {}.",
        tried.join(", "),
        env_var_name(name)
    )]
    UnknownSecret {
        at: At,
        name: String,
        tried: Vec<String>,
    },
    /// A command-line argument that cannot be used.
    #[error("{arg}: {problem}. {fix}")]
    Usage {
        arg: String,
        problem: String,
        fix: String,
    },
    /// Several problems of one spec, all reported at once: unknown keys first (a typo explains
    /// what follows it), then the rest in file order.
    #[error("{} problems in the spec:\n{}", errors.len(), errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Several { errors: Vec<SpecError> },
}

impl SpecError {
    /// The location, for errors that have one.
    pub fn at(&self) -> Option<&At> {
        match self {
            SpecError::UnknownKey { at, .. }
            | SpecError::Invalid { at, .. }
            | SpecError::UnknownVariable { at, .. }
            | SpecError::UnknownSecret { at, .. } => Some(at),
            SpecError::Several { errors } => errors.first().and_then(SpecError::at),
            _ => None,
        }
    }
}

/// The environment variable that holds secret `NAME`: upper-cased, every other character `_`
/// (`target.apikey` → `TARGET_APIKEY`).
pub(crate) fn env_var_name(secret: &str) -> String {
    secret
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Something the user should know that does not stop the task (a literal API key, say).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    #[serde(serialize_with = "serialize_display")]
    pub at: At,
    pub message: String,
}

fn serialize_display<S: serde::Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A value as it may appear in a message: `***` under a key-named path, key-shaped substrings
/// and the user part of URLs masked, long values cut.
pub(crate) fn shown(path: &SpecPath, value: &str) -> String {
    if path.last_key().is_some_and(is_key_name) {
        return "`***`".to_string();
    }
    if value.is_empty() {
        return "`\"\"`".to_string();
    }
    let masked = mask_keys(value);
    let mut out: String = masked.chars().take(120).collect();
    if masked.chars().count() > 120 {
        out.push('…');
    }
    format!("`{out}`")
}

/// What the process exit code says to the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// Success, also when the export had already been done.
    Success,
    /// Failed permanently: auth, permission, not found, source job failed, rejected rows.
    Failed,
    /// Invalid spec, usage or configuration: nothing was written (for an invalid spec, nothing sent).
    Invalid,
    /// Transient failure after retries, or interrupted: safe to run again.
    Transient,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Invalid => 2,
            Exit::Transient => 3,
        }
    }
}

/// How a failure is reported: its class in the status document, the exit code, and whether
/// running again later may succeed. Every error of every stage has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub name: &'static str,
    pub exit: Exit,
}

impl Class {
    pub const fn new(name: &'static str, exit: Exit) -> Class {
        Class { name, exit }
    }

    /// Whether running the task again later may succeed.
    pub fn is_transient(self) -> bool {
        self.exit == Exit::Transient
    }
}

/// An error that knows its [`Class`].
pub trait Classify: std::error::Error {
    fn class(&self) -> Class;
}

impl Classify for SpecError {
    fn class(&self) -> Class {
        Class::new("InvalidSpec", Exit::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_dotted_with_indexes() {
        let p = SpecPath::parse("connections.target").key("api_key");
        assert_eq!(p.to_string(), "connections.target.api_key");
        assert_eq!(SpecPath::parse("a").index(2).key("b").to_string(), "a[2].b");
        assert_eq!(SpecPath::root().to_string(), "(top level)");
    }

    #[test]
    fn shown_values_never_contain_api_keys() {
        let key = format!("123/{}", "ab".repeat(20));
        assert_eq!(shown(&SpecPath::parse("td.apikey"), "anything"), "`***`");
        assert_eq!(
            shown(&SpecPath::parse("x"), &format!("key {key} here")),
            "`key *** here`"
        );
        assert_eq!(
            shown(&SpecPath::parse("result_url"), "td://secret@host/db/t?mode=x"),
            "`td://***@host/db/t?mode=x`"
        );
        assert_eq!(
            shown(&SpecPath::parse("result_url"), "td://@/db/t"),
            "`td://@/db/t`"
        );
    }
}
