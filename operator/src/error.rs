//! The one error type of the spec and resolve stages, and the redaction every message goes through.
//!
//! Every message names where the problem is (`file:line: spec.path`), the offending value (API keys
//! are never shown) and the fix. All of these errors mean "invalid spec, usage or configuration"
//! (exit code 2): nothing was sent anywhere.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use regex::Regex;

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
        crate::spec::interpolate::env_var_name(name)
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
}

impl SpecError {
    /// Process exit code: every spec error is "invalid spec, usage or configuration".
    pub fn exit_code(&self) -> i32 {
        2
    }

    /// The location, for errors that have one.
    pub fn at(&self) -> Option<&At> {
        match self {
            SpecError::UnknownKey { at, .. }
            | SpecError::Invalid { at, .. }
            | SpecError::UnknownVariable { at, .. }
            | SpecError::UnknownSecret { at, .. } => Some(at),
            _ => None,
        }
    }
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

/// `<user id>/<40 hex>`: the shape of a TD API key, wherever it appears.
static API_KEY_SHAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d+/[0-9a-fA-F]{40}\b").expect("valid regex"));

/// Whether the key of a value says it holds an API key.
pub fn is_key_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "apikey" | "api_key" | "master_key" | "write_only_key"
    )
}

/// Whether a string contains something shaped like a TD API key.
pub fn looks_like_api_key(text: &str) -> bool {
    API_KEY_SHAPE.is_match(text)
}

/// A value as it may appear in a message: `***` under a key-named path, key-shaped substrings
/// and the user part of td:// URLs masked, long values cut.
pub fn shown(path: &SpecPath, value: &str) -> String {
    if path.last_key().is_some_and(is_key_name) {
        return "`***`".to_string();
    }
    if value.is_empty() {
        return "`\"\"`".to_string();
    }
    let masked = API_KEY_SHAPE.replace_all(value, "***");
    let masked = mask_td_url_user(&masked);
    let mut out: String = masked.chars().take(120).collect();
    if masked.chars().count() > 120 {
        out.push('…');
    }
    format!("`{out}`")
}

/// `td://KEY@host/db/t` → `td://***@host/db/t` (anything between `td://` and the last `@`).
pub fn mask_td_url_user(text: &str) -> String {
    let Some(start) = text.find("td://") else {
        return text.to_string();
    };
    let rest = &text[start + 5..];
    let end = rest.find(['?', ' ', '\n']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) if at > 0 => format!("{}td://***{}", &text[..start], &rest[at..]),
        _ => text.to_string(),
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
        assert!(looks_like_api_key(&key));
        assert!(!looks_like_api_key("123/abc"));
    }
}
