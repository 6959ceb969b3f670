//! How an export runs, apart from what it exports: the retry and poll policies and how parts are
//! made (size, threads, where they wait).
//! Read from the environment once, at the edge (the command line), and passed down; nothing below
//! reads the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::retry::{PollPolicy, RetryPolicy};
use crate::td::Proxies;

/// Parts are cut when their compressed size reaches this.
pub const PART_BYTES: usize = 16 << 20;
/// … or when their records (inflated) reach this: a sparse result (rows of NULLs deflate 100:1
/// and more) would otherwise make a part that inflates past what a server takes of one part
/// (td-local's limit is 1 GiB; TD's is not documented).
pub(crate) const PART_RAW_BYTES: usize = 256 << 20;

/// Scales every wait of the operator (retries, `Retry-After`, polling): `TDRE_TIME_SCALE=0.001`
/// turns seconds into milliseconds, for tests.
pub(crate) const TIME_SCALE_ENV: &str = "TDRE_TIME_SCALE";
/// Cuts parts at this many compressed bytes instead of [`PART_BYTES`]: `TDRE_PART_BYTES=50000`
/// spreads a small result over several parts (the fault and crash tests use it).
pub(crate) const PART_BYTES_ENV: &str = "TDRE_PART_BYTES";
/// Deflates on this many threads instead of one per core (the benchmark compares 1 with the default).
pub(crate) const COMPRESS_THREADS_ENV: &str = "TDRE_COMPRESS_THREADS";
/// More deflate threads than this buy nothing: the cutter feeding them is one thread.
const MAX_COMPRESS_THREADS: usize = 8;

/// How parts are made.
#[derive(Debug, Clone, PartialEq)]
pub struct PartOptions {
    /// Compressed bytes at which a part is cut.
    pub bytes: usize,
    /// Inflated bytes at which a part is cut (whichever comes first).
    pub raw_bytes: usize,
    /// Threads deflating at once.
    pub threads: usize,
    /// Where finished parts wait for their upload (unnamed temporary files): `TMPDIR`, else `/tmp`.
    pub dir: PathBuf,
}

impl Default for PartOptions {
    fn default() -> Self {
        PartOptions {
            bytes: PART_BYTES,
            raw_bytes: PART_RAW_BYTES,
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_COMPRESS_THREADS),
            dir: PathBuf::from("/tmp"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub retry: RetryPolicy,
    pub poll: PollPolicy,
    pub parts: PartOptions,
    /// The factor every wait was scaled by (also applied to `_retry` intervals).
    pub time_scale: f64,
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` (either case), as the environment gives them.
    pub proxies: Proxies,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: RetryPolicy::default(),
            poll: PollPolicy::default(),
            parts: PartOptions::default(),
            time_scale: 1.0,
            proxies: Proxies::default(),
        }
    }
}

impl Options {
    /// The defaults with the knobs of `vars` applied; a knob that does not parse is ignored.
    pub fn from_env(vars: &BTreeMap<String, String>) -> Options {
        let scale = vars
            .get(TIME_SCALE_ENV)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f >= 0.0)
            .unwrap_or(1.0);
        let count = |name: &str| {
            vars.get(name)
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
        };
        let var = |name: &str| {
            vars.get(name)
                .or_else(|| vars.get(&name.to_ascii_lowercase()))
                .filter(|v| !v.trim().is_empty())
                .cloned()
        };
        let defaults = Options::default();
        let parts = PartOptions {
            bytes: count(PART_BYTES_ENV).unwrap_or(defaults.parts.bytes),
            raw_bytes: defaults.parts.raw_bytes,
            threads: count(COMPRESS_THREADS_ENV)
                .map_or(defaults.parts.threads, |n| n.min(MAX_COMPRESS_THREADS)),
            dir: vars
                .get("TMPDIR")
                .filter(|d| !d.is_empty())
                .map_or(defaults.parts.dir.clone(), PathBuf::from),
        };
        Options {
            retry: defaults.retry.scaled(scale),
            poll: defaults.poll.scaled(scale),
            parts,
            time_scale: scale,
            proxies: Proxies {
                all: None,
                http: var("HTTP_PROXY"),
                https: var("HTTPS_PROXY"),
                no_proxy: var("NO_PROXY"),
            },
        }
    }

    /// `d` as this run waits it.
    pub fn scaled(&self, d: std::time::Duration) -> std::time::Duration {
        d.mul_f64(self.time_scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn knobs_scale_waits_and_cut_parts() {
        let o = Options::from_env(&vars(&[
            (TIME_SCALE_ENV, "0.001"),
            (PART_BYTES_ENV, "50000"),
            (COMPRESS_THREADS_ENV, "3"),
            ("TMPDIR", "/var/spool/parts"),
        ]));
        assert_eq!(o.parts.bytes, 50_000);
        assert_eq!(o.parts.threads, 3);
        assert_eq!(o.parts.dir, PathBuf::from("/var/spool/parts"));
        assert_eq!(o.retry, RetryPolicy::default().scaled(0.001));
        assert_eq!(o.poll, PollPolicy::default().scaled(0.001));
        assert_eq!(o.scaled(std::time::Duration::from_secs(2)).as_millis(), 2);
    }

    #[test]
    fn knobs_that_do_not_parse_leave_the_defaults() {
        let o = Options::from_env(&vars(&[
            (TIME_SCALE_ENV, "fast"),
            (PART_BYTES_ENV, "0"),
            (COMPRESS_THREADS_ENV, "many"),
        ]));
        assert_eq!(o, Options::default());
    }
}
