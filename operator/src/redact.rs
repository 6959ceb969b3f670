//! Every secret value the run knows, masked in everything it writes, in one place: messages and
//! log lines on stderr, what stdout prints, and the status document. A secret put in a field
//! nobody expects a key in (`?mode=${secret:…}`, a connection's name) or echoed back by TD (a
//! query's text in a failed job's stderr) is masked as surely as a key in `td.apikey`.
//!
//! The values are the run's own: resolved `${secret:…}`s, the keys of the plan, the proxy
//! password. On top, anything shaped like a TD key and the user part of any URL is masked.

use std::io::Write;
use std::sync::RwLock;

use td_model::key::mask_keys;

/// Values shorter than this are not masked as text: they would mask ordinary words.
const SHORTEST: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds values to mask from now on.
pub(crate) fn remember<I, S>(values: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for value in values {
        let value = value.as_ref().trim();
        if value.chars().count() < SHORTEST {
            continue;
        }
        for form in forms(value) {
            if !secrets.contains(&form) {
                secrets.push(form);
            }
        }
    }
    // Longest first, so that a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// A secret as a server may echo it: as it is, URL-encoded, in base64 (standard and URL-safe,
/// padded or not), and for a TD key (`<account id>/<40 hex>`) its secret part alone.
fn forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let mut forms = vec![value.to_string()];
    let encoded =
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string();
    forms.push(encoded.clone());
    forms.push(encoded.to_lowercase());
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(value));
    }
    if let Some((_, secret)) = value.split_once('/') {
        if secret.len() >= 32 && secret.chars().all(|c| c.is_ascii_hexdigit()) {
            forms.push(secret.to_string());
        }
    }
    forms.retain(|f| f.chars().count() >= SHORTEST);
    forms.dedup();
    forms
}

/// `text` with every known secret (and its JSON-escaped form), every key-shaped string and every
/// URL's user part masked.
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    for secret in secrets.iter() {
        out = out.replace(secret.as_str(), "***");
        let escaped = serde_json::to_string(secret).unwrap_or_default();
        let escaped = &escaped[1..escaped.len().saturating_sub(1).max(1)];
        if escaped != secret {
            out = out.replace(escaped, "***");
        }
    }
    mask_keys(&out)
}

/// A writer that masks secrets line by line before they reach `W` (for the log).
pub struct Scrubbed<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: Write> Scrubbed<W> {
    pub fn new(inner: W) -> Scrubbed<W> {
        Scrubbed {
            inner,
            line: Vec::new(),
        }
    }
}

impl<W: Write> Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        if let Some(end) = self.line.iter().rposition(|b| *b == b'\n') {
            let rest = self.line.split_off(end + 1);
            let text = String::from_utf8_lossy(&self.line).into_owned();
            self.inner.write_all(scrub(&text).as_bytes())?;
            self.line = rest;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line).into_owned();
            self.inner.write_all(scrub(&text).as_bytes())?;
            self.line.clear();
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for Scrubbed<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_secrets_are_masked_wherever_they_appear() {
        remember(["s3cret-value-1", "abc", "with\"quote-x"]);
        assert_eq!(
            scrub("mode `s3cret-value-1` is not append"),
            "mode `***` is not append"
        );
        assert_eq!(
            scrub("abc stays: too short to be told from a word"),
            "abc stays: too short to be told from a word"
        );
        assert_eq!(scrub(r#"{"m":"with\"quote-x"}"#), r#"{"m":"***"}"#);
        let key = format!("12/{}", "cd".repeat(20));
        assert_eq!(
            scrub(&format!("td://{key}@h/d/t and {key}")),
            "td://***@h/d/t and ***"
        );
        let mut out = Vec::new();
        {
            let mut w = Scrubbed::new(&mut out);
            w.write_all(b"first s3cret-").unwrap();
            w.write_all(b"value-1 line\nsecond").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "first *** line\nsecond");
    }

    #[test]
    fn a_key_echoed_encoded_or_in_part_is_masked_too() {
        use base64::Engine;
        let key = format!("7311/{}", "a1b2c3d4e5".repeat(4));
        remember([key.as_str()]);
        let hex = key.split_once('/').unwrap().1;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
        let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key);
        for (echoed, form) in [
            (format!("invalid key part {hex} given"), "its 40-hex part"),
            (format!("apikey=7311%2F{hex}"), "URL-encoded"),
            (format!("apikey=7311%2f{hex}"), "URL-encoded, lowercase"),
            (format!("auth {b64} refused"), "base64"),
            (format!("auth {b64_url} refused"), "URL-safe base64"),
        ] {
            let shown = scrub(&echoed);
            assert!(
                !shown.contains(hex) && !shown.contains(&b64) && !shown.contains(&b64_url),
                "{form}: {shown}"
            );
            assert!(shown.contains("***"), "{form}: {shown}");
        }
    }
}
