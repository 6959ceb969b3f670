//! Treasure Data's rules, in one place for both sides of the wire: the operator that calls TD and
//! td-local that plays it. Nothing here does I/O.
//!
//! - [`url`]: `td://[APIKEY]@[HOST]/DATABASE/TABLE[?mode=…&time=…&legacy=…]`, parsed and rendered;
//! - [`name`]: database, table and column names;
//! - [`time`]: the time values TD reads (seconds, timestamps, zones) and the timestamps it writes;
//! - [`types`]: result (Presto/Hive) types → TD column types;
//! - [`schema`]: `hive_result_schema` and table schemas;
//! - [`key`]: API keys that never print, and masking of keys in any text;
//! - [`states`]: the words for a job's and a bulk-import session's states;
//! - [`settings`]: the TD connector's settings keys and their aliases.

pub mod key;
pub mod name;
pub mod schema;
pub mod settings;
pub mod states;
pub mod time;
pub mod types;
pub mod url;

pub use key::ApiKey;
pub use url::{Mode, TdUrl, UrlError};

/// The closest candidate to a misspelt word, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&word, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}
