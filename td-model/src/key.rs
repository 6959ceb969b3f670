//! API keys: a type that never prints its value, and masking of keys wherever they hide in text.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize, Serializer};

/// A TD API key (`<user id>/<40 hex>`). Never printed: Debug, Display and Serialize all give `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for the `Authorization: TD1 …` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for ApiKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// `<user id>/<40 hex>`: the shape of a TD API key, wherever it appears.
static API_KEY_SHAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d+/[0-9a-fA-F]{40}\b").expect("valid regex"));

/// An `apikey=` (or `api_key=`) parameter of a URL or a form: its value runs to the next `&`,
/// `#` or white space, whatever its shape (`1%2Fabc…` is a key too).
static KEY_PARAM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(apikey|api_key)=[^&#\s]+").expect("valid regex"));

/// `<user id>/<40 hex>` and nothing else.
static WHOLE_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d+/[0-9a-fA-F]{40}$").expect("valid regex"));

/// Whether a text has the shape of a whole TD API key, `<user id>/<40 hex>`.
pub fn is_api_key(text: &str) -> bool {
    WHOLE_KEY.is_match(text)
}

/// Whether the key of a value says it holds an API key (`apikey`, `api_key`, …).
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

/// `text` with key-shaped substrings, `apikey=` values and the user part of every
/// `scheme://user@host` URL masked: `td://1/abc…@host/db/t` → `td://***@host/db/t`. Keys contain
/// `/` and may contain `@`, so a URL's user part runs up to the last `@` before its query,
/// fragment or the next white space.
pub fn mask_keys(text: &str) -> String {
    let shaped = API_KEY_SHAPE.replace_all(text, "***");
    let shaped = KEY_PARAM.replace_all(&shaped, "${1}=***");
    let mut out = String::with_capacity(shaped.len());
    let mut rest: &str = &shaped;
    while let Some(found) = rest.find("://") {
        let after = found + 3;
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let end = rest
            .find(|c: char| c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@').filter(|at| *at > 0) {
            if &rest[..at] != "***" && !is_placeholder(&rest[..at]) {
                out.push_str("***");
                rest = &rest[at..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A URL's user part that stands for a key in documentation (`APIKEY`) or in a spec
/// (`${secret:NAME}`), and is none.
fn is_placeholder(user: &str) -> bool {
    user.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        || (user.starts_with("${") && user.ends_with('}') && !user[2..].contains("${"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_never_print() {
        let key = ApiKey::new("1/secret");
        assert_eq!(format!("{key} {key:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"***\"");
        assert_eq!(key.expose(), "1/secret");
    }

    #[test]
    fn key_shapes_and_url_users_are_masked_anywhere_in_a_text() {
        let key = format!("123/{}", "ab".repeat(20));
        assert!(looks_like_api_key(&key) && !looks_like_api_key("123/abc"));
        assert!(
            is_api_key(&key)
                && !is_api_key(&format!("{key}x"))
                && !is_api_key("1/ab@cd")
                && !is_api_key("1/ab/cd")
        );
        assert_eq!(mask_keys(&format!("key {key} here")), "key *** here");
        assert_eq!(
            mask_keys("see td://1/abc@def@host:80/db/t?mode=replace now"),
            "see td://***@host:80/db/t?mode=replace now"
        );
        assert_eq!(mask_keys("td://@/db/t"), "td://@/db/t");
        assert_eq!(
            mask_keys("mysql://u:p@h/db/t and td://k@x/a/b"),
            "mysql://***@h/db/t and td://***@x/a/b"
        );
        assert_eq!(mask_keys(&format!("td://{key}@h/d/t")), "td://***@h/d/t");
        assert_eq!(
            mask_keys("td://@/d/t?mode=append&apikey=1%2Fsecret#x"),
            "td://@/d/t?mode=append&apikey=***#x"
        );
        assert_eq!(mask_keys("API_KEY=abc def"), "API_KEY=*** def");
        assert_eq!(mask_keys("no url"), "no url");
        assert_eq!(
            mask_keys("write td://APIKEY@HOST/DB/T"),
            "write td://APIKEY@HOST/DB/T"
        );
        assert_eq!(
            mask_keys("td://${secret:target.apikey}@h/d/t"),
            "td://${secret:target.apikey}@h/d/t"
        );
    }

    #[test]
    fn key_names_are_recognised_in_any_case() {
        assert!(is_key_name("apikey") && is_key_name("API_KEY") && is_key_name("write_only_key"));
        assert!(!is_key_name("key") && !is_key_name("api_hostname"));
    }
}
