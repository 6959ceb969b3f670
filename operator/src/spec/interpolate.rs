//! `${name}`, `${secret:NAME}` and `${local:accountN.KEY}` in string values.
//!
//! - `${name}` comes from `--param name=value` (dotted names such as `td.last_job_id` are plain names).
//! - `${secret:NAME}` comes from the `--secrets` file (nested `a: {b: …}` or flat `a.b: …`), then
//!   the environment variable `NAME` upper-cased with every other character → `_`; `td.apikey`
//!   also falls back to `TD_API_KEY` and `~/.td/td.conf`, `td.endpoint` to `TD_API_SERVER` and td.conf.
//! - `${local:account2.master_key}` reads the embedded td-local's accounts in the local data
//!   directory, through the [`LocalAccounts`] the caller hands in (the library's edge passes
//!   td-local's own loader, which creates them the first time, as starting td-local would).
//!
//! Values are substituted as text; a value whose whole text was `${…}` stays a string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, OnceLock};

use regex::Regex;

pub(crate) use crate::error::env_var_name;
use serde_json::Value;

/// The process environment as the spec stage sees it (injectable for tests).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: BTreeMap<String, String>,
    /// Home directory, for `~/.td/td.conf`.
    pub home: Option<PathBuf>,
}

impl Environment {
    pub fn from_process() -> Environment {
        Environment {
            vars: std::env::vars().collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// `[account]` values of `~/.td/td.conf` (`apikey`, `endpoint`).
fn td_conf(home: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(home.join(".td").join("td.conf")) else {
        return BTreeMap::new();
    };
    let mut section = String::new();
    let mut values = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            if section == "account" && !line.starts_with(['#', ';']) {
                values.insert(key.trim().to_string(), value.trim().to_string());
            }
        }
    }
    values
}

/// An account of the embedded td-local, as `${local:…}` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAccount {
    pub id: i64,
    pub master_key: String,
    pub write_only_key: String,
}

type LoadAccounts = dyn Fn(&Path) -> Result<Vec<LocalAccount>, String> + Send + Sync;

/// Where the embedded td-local's accounts come from: a loader of a data directory's accounts.
#[derive(Clone)]
pub struct LocalAccounts(Arc<LoadAccounts>);

impl LocalAccounts {
    pub fn new(load: impl Fn(&Path) -> Result<Vec<LocalAccount>, String> + Send + Sync + 'static) -> Self {
        LocalAccounts(Arc::new(load))
    }

    fn load(&self, dir: &Path) -> Result<Vec<LocalAccount>, String> {
        (self.0)(dir)
    }
}

impl Default for LocalAccounts {
    /// No embedded td-local: `${local:…}` is an error.
    fn default() -> Self {
        LocalAccounts::new(|_| Err("the embedded td-local is not available here".to_string()))
    }
}

impl std::fmt::Debug for LocalAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalAccounts")
    }
}

/// Why a `${…}` could not be replaced (the caller adds the location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unresolved {
    Variable {
        name: String,
        tried: Vec<String>,
    },
    Secret {
        name: String,
        tried: Vec<String>,
    },
    /// `${local:…}` that is malformed or names a missing account.
    Local {
        reference: String,
        problem: String,
    },
    /// `${…}` whose inside is not a name (`${a + b}`: expressions are not evaluated).
    Syntax {
        inside: String,
    },
    /// A value put into a td:// URL that would change the URL's structure (`t?mode=replace`
    /// turning an append into a replace, say).
    Structure {
        inside: String,
        /// The character that may not be there.
        found: char,
        /// `the path`, `a parameter`, `the key`.
        part: &'static str,
    },
}

/// The sources of `${…}` values.
#[derive(Debug)]
pub(crate) struct Interpolator {
    params: BTreeMap<String, String>,
    secrets: Option<(PathBuf, serde_json::Value)>,
    env: Environment,
    local_dir: PathBuf,
    local: LocalAccounts,
    td_conf: OnceLock<BTreeMap<String, String>>,
    local_accounts: OnceLock<Result<Vec<LocalAccount>, String>>,
    /// Each secret value put in the spec, with where it came from: an error about a key says
    /// which secret (and which variable) to fix, not only which field it landed in.
    origins: std::sync::Mutex<Vec<(String, String)>>,
}

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$\{([^}]*)\}").expect("valid regex"));
static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_.\-]*$").expect("valid regex"));
static LOCAL_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^account([0-9]+)\.(master_key|write_only_key)$").expect("valid regex"));

impl Interpolator {
    /// `secrets` is the parsed `--secrets` file (its path, for messages) when one was given.
    pub(crate) fn new(
        params: BTreeMap<String, String>,
        secrets: Option<(PathBuf, Value)>,
        env: Environment,
        local_dir: PathBuf,
        local: LocalAccounts,
    ) -> Interpolator {
        Interpolator {
            params,
            secrets,
            env,
            local_dir,
            local,
            td_conf: OnceLock::new(),
            local_accounts: OnceLock::new(),
            origins: Default::default(),
        }
    }

    /// Replaces every `${…}` in `text`.
    pub(crate) fn interpolate(&self, text: &str) -> Result<String, Unresolved> {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in PLACEHOLDER.captures_iter(text) {
            let whole = caps.get(0).expect("group 0");
            out.push_str(&text[last..whole.start()]);
            out.push_str(&self.value_of(caps[1].trim())?);
            last = whole.end();
        }
        out.push_str(&text[last..]);
        Ok(out)
    }

    /// Replaces every `${…}` in a td:// URL template, refusing a value that would change the URL's
    /// structure: in the user part (the key, before the template's last `@`) `?`, `#` and white
    /// space; in the host, the path and the parameters also `/`, `@`, `&` and `=`.
    pub(crate) fn interpolate_url(&self, text: &str) -> Result<String, Unresolved> {
        let query = text.find('?').unwrap_or(text.len());
        let user_end = text[..query].rfind('@').unwrap_or(0);
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in PLACEHOLDER.captures_iter(text) {
            let whole = caps.get(0).expect("group 0");
            let inside = caps[1].trim();
            let value = self.value_of(inside)?;
            let param = text[..whole.start()]
                .rsplit(['?', '&'])
                .next()
                .unwrap_or_default();
            let (part, refused): (&'static str, &[char]) = if whole.start() < user_end {
                ("the key", &['?', '#'])
            } else if whole.start() < query {
                ("the host or path", &['?', '#', '/', '@', '&', '='])
            } else if param == "apikey=" {
                ("the key", &['?', '#', '&'])
            } else {
                ("a parameter", &['?', '#', '/', '@', '&', '='])
            };
            if let Some(found) = value.chars().find(|c| refused.contains(c) || c.is_whitespace()) {
                return Err(Unresolved::Structure {
                    inside: inside.to_string(),
                    found,
                    part,
                });
            }
            out.push_str(&text[last..whole.start()]);
            out.push_str(&value);
            last = whole.end();
        }
        out.push_str(&text[last..]);
        Ok(out)
    }

    fn value_of(&self, inside: &str) -> Result<String, Unresolved> {
        // A secret's value is masked in everything the run writes from the moment it is known,
        // whatever field it lands in (crate::redact).
        if let Some(name) = inside.strip_prefix("secret:") {
            let name = name.trim();
            let (value, found) = self.secret_found(name).map_err(|tried| Unresolved::Secret {
                name: name.to_string(),
                tried,
            })?;
            crate::redact::remember([&value]);
            self.note_origin(&value, format!("secret {name}, found in {found}"));
            return Ok(value);
        }
        if let Some(reference) = inside.strip_prefix("local:") {
            let value = self.local_key(reference.trim())?;
            crate::redact::remember([&value]);
            self.note_origin(&value, format!("td-local's {}", reference.trim()));
            return Ok(value);
        }
        if !NAME.is_match(inside) {
            return Err(Unresolved::Syntax {
                inside: inside.to_string(),
            });
        }
        self.params
            .get(inside)
            .cloned()
            .ok_or_else(|| Unresolved::Variable {
                name: inside.to_string(),
                tried: vec!["--param".to_string()],
            })
    }

    fn note_origin(&self, value: &str, origin: String) {
        if let Ok(mut origins) = self.origins.lock() {
            origins.push((value.to_string(), origin));
        }
    }

    /// Where a value the spec got from a secret or td-local came from, if it did
    /// (`secret target.apikey, found in env TARGET_APIKEY`).
    pub(crate) fn origin_of(&self, value: &str) -> Option<String> {
        let origins = self.origins.lock().ok()?;
        origins
            .iter()
            .find(|(v, _)| v == value)
            .map(|(_, origin)| origin.clone())
    }

    /// A secret's value, or the list of places that were tried.
    pub(crate) fn secret(&self, name: &str) -> Result<String, Vec<String>> {
        self.secret_found(name).map(|(value, _)| value)
    }

    /// A secret's value and where it was found (`--secrets FILE`, `env NAME`, `~/.td/td.conf`),
    /// or the list of places that were tried.
    pub(crate) fn secret_found(&self, name: &str) -> Result<(String, String), Vec<String>> {
        let mut tried = Vec::new();
        if let Some((path, doc)) = &self.secrets {
            if let Some(value) = lookup_dotted(doc, name) {
                return Ok((value, format!("--secrets {}", path.display())));
            }
            tried.push(format!("--secrets {}", path.display()));
        } else {
            tried.push("--secrets (not given)".to_string());
        }
        let var = env_var_name(name);
        if let Some(value) = self.env.var(&var) {
            return Ok((value.to_string(), format!("env {var}")));
        }
        tried.push(format!("env {var}"));
        let (conf_key, conf_env) = match name {
            "td.apikey" => ("apikey", "TD_API_KEY"),
            "td.endpoint" => ("endpoint", "TD_API_SERVER"),
            _ => return Err(tried),
        };
        if let Some(value) = self.env.var(conf_env) {
            return Ok((value.to_string(), format!("env {conf_env}")));
        }
        tried.push(format!("env {conf_env}"));
        if let Some(value) = self.td_conf().get(conf_key).filter(|v| !v.is_empty()) {
            return Ok((value.clone(), "~/.td/td.conf".to_string()));
        }
        tried.push("~/.td/td.conf".to_string());
        Err(tried)
    }

    fn td_conf(&self) -> &BTreeMap<String, String> {
        self.td_conf
            .get_or_init(|| self.env.home.as_deref().map(td_conf).unwrap_or_default())
    }

    /// The embedded td-local's accounts (read, or created the first time).
    pub(crate) fn local_accounts(&self) -> Result<&[LocalAccount], String> {
        let loaded = self.local_accounts.get_or_init(|| {
            self.local.load(&self.local_dir).map_err(|e| {
                format!(
                    "cannot open td-local's accounts in {}: {e}",
                    self.local_dir.display()
                )
            })
        });
        loaded.as_deref().map_err(Clone::clone)
    }

    /// The data directory of the embedded td-local.
    pub(crate) fn local_dir(&self) -> &Path {
        &self.local_dir
    }

    fn local_key(&self, reference: &str) -> Result<String, Unresolved> {
        let problem = |problem: String| Unresolved::Local {
            reference: reference.to_string(),
            problem,
        };
        let caps = LOCAL_REF
            .captures(reference)
            .ok_or_else(|| problem("expected accountN.master_key or accountN.write_only_key".to_string()))?;
        let id: i64 = caps[1]
            .parse()
            .map_err(|_| problem("account number too large".to_string()))?;
        let accounts = self.local_accounts().map_err(problem)?;
        let account = accounts.iter().find(|a| a.id == id).ok_or_else(|| {
            let ids: Vec<String> = accounts.iter().map(|a| format!("account{}", a.id)).collect();
            problem(format!(
                "td-local has no account {id} (it has {})",
                ids.join(", ")
            ))
        })?;
        Ok(match &caps[2] {
            "master_key" => account.master_key.clone(),
            _ => account.write_only_key.clone(),
        })
    }
}

/// `a.b.c` in a YAML map: nested first (`a: {b: {c: …}}`), then a flat key (`a.b.c: …`), then
/// a flat key under the first part (`a: {b.c: …}`). Scalars only.
fn lookup_dotted(doc: &Value, name: &str) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let nested = name.split('.').try_fold(doc, |node, part| node.get(part));
    if let Some(value) = nested.and_then(scalar) {
        return Some(value);
    }
    if let Some(value) = doc.get(name).and_then(scalar) {
        return Some(value);
    }
    let (head, tail) = name.split_once('.')?;
    doc.get(head).and_then(|inner| lookup_dotted(inner, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn interp(params: &[(&str, &str)], secrets: Option<Value>, vars: &[(&str, &str)]) -> Interpolator {
        Interpolator::new(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets.map(|s| (PathBuf::from("secrets.yml"), s)),
            Environment {
                vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                home: None,
            },
            PathBuf::from("/nonexistent/td-local"),
            LocalAccounts::default(),
        )
    }

    #[test]
    fn params_with_dotted_names_are_substituted_inside_text() {
        let i = interp(&[("td.last_job_id", "42"), ("day", "2024-01-01")], None, &[]);
        assert_eq!(i.interpolate("${td.last_job_id}").unwrap(), "42");
        assert_eq!(
            i.interpolate("t_${ day }_x ${day}").unwrap(),
            "t_2024-01-01_x 2024-01-01"
        );
        assert_eq!(
            i.interpolate("no placeholders $ {x}").unwrap(),
            "no placeholders $ {x}"
        );
    }

    #[test]
    fn a_value_may_not_change_a_td_urls_structure() {
        let i = interp(
            &[("t", "inj_tbl?mode=replace"), ("ok", "events"), ("k", "1/abc")],
            None,
            &[],
        );
        assert_eq!(
            i.interpolate_url("td://${k}@/db/${ok}?mode=append").unwrap(),
            "td://1/abc@/db/events?mode=append"
        );
        assert_eq!(
            i.interpolate_url("td://@/db/${t}?mode=append").unwrap_err(),
            Unresolved::Structure {
                inside: "t".into(),
                found: '?',
                part: "the host or path"
            }
        );
        let i = interp(&[("m", "append&mode=replace"), ("d", "db/x")], None, &[]);
        assert!(matches!(
            i.interpolate_url("td://@/db/t?mode=${m}"),
            Err(Unresolved::Structure {
                found: '&',
                part: "a parameter",
                ..
            })
        ));
        assert!(matches!(
            i.interpolate_url("td://@/${d}/t"),
            Err(Unresolved::Structure { found: '/', .. })
        ));
        assert_eq!(
            i.interpolate("t_${m}").unwrap(),
            "t_append&mode=replace",
            "plain text is not a URL"
        );
    }

    #[test]
    fn an_unknown_variable_is_named_with_the_sources_tried() {
        let err = interp(&[], None, &[])
            .interpolate("a ${missing.var} b")
            .unwrap_err();
        assert_eq!(
            err,
            Unresolved::Variable {
                name: "missing.var".into(),
                tried: vec!["--param".into()]
            }
        );
        let err = interp(&[], None, &[]).interpolate("${a + b}").unwrap_err();
        assert_eq!(
            err,
            Unresolved::Syntax {
                inside: "a + b".into()
            }
        );
    }

    #[test]
    fn secrets_come_from_nested_or_flat_keys_then_the_environment() {
        let secrets = json!({"target": {"apikey": "nested"}, "flat.key": "flat", "a": {"b.c": "mixed"}});
        let i = interp(&[], Some(secrets), &[("OTHER_SECRET", "from env")]);
        assert_eq!(i.interpolate("${secret:target.apikey}").unwrap(), "nested");
        assert_eq!(i.interpolate("${secret:flat.key}").unwrap(), "flat");
        assert_eq!(i.interpolate("${secret:a.b.c}").unwrap(), "mixed");
        assert_eq!(i.interpolate("${secret:other-secret}").unwrap(), "from env");
    }

    #[test]
    fn an_unknown_secret_lists_every_source_tried() {
        let i = interp(&[], Some(json!({})), &[]);
        let Unresolved::Secret { name, tried } = i.interpolate("${secret:td.apikey}").unwrap_err() else {
            panic!("expected a secret error");
        };
        assert_eq!(name, "td.apikey");
        assert_eq!(
            tried,
            [
                "--secrets secrets.yml",
                "env TD_APIKEY",
                "env TD_API_KEY",
                "~/.td/td.conf"
            ]
        );
    }

    #[test]
    fn td_apikey_falls_back_to_td_api_key_then_td_conf() {
        let i = interp(&[], None, &[("TD_API_KEY", "from-env")]);
        assert_eq!(i.secret("td.apikey").unwrap(), "from-env");

        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".td")).unwrap();
        std::fs::write(
            home.path().join(".td/td.conf"),
            "[other]\napikey = no\n[account]\n  user = me\n  apikey = from-conf\n  endpoint = https://x.example\n",
        )
        .unwrap();
        let mut i = interp(&[], None, &[]);
        i.env.home = Some(home.path().to_path_buf());
        assert_eq!(i.secret("td.apikey").unwrap(), "from-conf");
        assert_eq!(i.secret("td.endpoint").unwrap(), "https://x.example");
        let i = interp(&[], None, &[("TD_API_SERVER", "api.treasuredata.co.jp")]);
        assert_eq!(i.secret("td.endpoint").unwrap(), "api.treasuredata.co.jp");
    }

    #[test]
    fn local_references_read_the_embedded_accounts() {
        let mut i = interp(&[], None, &[]);
        i.local = LocalAccounts::new(|dir| {
            assert_eq!(dir, Path::new("/data"));
            Ok((1..=2)
                .map(|id| LocalAccount {
                    id,
                    master_key: format!("{id}/master"),
                    write_only_key: format!("{id}/wo"),
                })
                .collect())
        });
        i.local_dir = PathBuf::from("/data");
        assert_eq!(i.interpolate("${local:account2.master_key}").unwrap(), "2/master");
        assert_eq!(i.interpolate("${local:account1.write_only_key}").unwrap(), "1/wo");
        assert!(matches!(
            i.interpolate("${local:account9.master_key}"),
            Err(Unresolved::Local { problem, .. }) if problem.contains("no account 9")
        ));
        assert!(matches!(
            i.interpolate("${local:account1.key}"),
            Err(Unresolved::Local { .. })
        ));
        let none = interp(&[], None, &[]);
        assert!(matches!(
            none.interpolate("${local:account1.master_key}"),
            Err(Unresolved::Local { problem, .. }) if problem.contains("not available")
        ));
    }
}
