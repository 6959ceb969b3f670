//! Talking to TD: a typed client ([`TdClient`]) under the one retry policy, a result download that
//! resumes where a cut connection left it, what TD answers ([`wire`]), and how a failed call is
//! classified ([`TdError`]).

mod client;
mod download;
mod error;
mod payload;
pub(crate) mod wire;

pub(crate) use client::Submitted;
pub use client::{http_client, Proxies, TdClient};
pub(crate) use error::TdError;
pub use payload::Payload;
pub use wire::{Job, Session, SessionAction};
pub(crate) use wire::{JobStatus, SavedResult, SessionStatus, Table};

/// The domain key of a call's `attempt`-th reissue (0: the key itself): when the job a domain key
/// names failed, the call is made again under the next key, so that a rerun still gets a job that
/// can succeed while a repeat of a live one still finds it.
pub(crate) fn nth_domain_key(key: &str, attempt: u32) -> String {
    match attempt {
        0 => key.to_string(),
        n => format!("{key}-{n}"),
    }
}
