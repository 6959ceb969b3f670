//! Talking to TD: a typed client ([`TdClient`]) under the one retry policy, a result download that
//! resumes where a cut connection left it, what TD answers ([`wire`]), and how a failed call is
//! classified ([`TdError`]).

mod client;
mod download;
mod error;
mod payload;
pub mod wire;

pub use client::{http_client, Proxies, TdClient};
pub use error::{TdError, TdResult};
pub use payload::Payload;
pub use wire::{Job, JobDebug, JobStatus, SavedResult, Session, SessionAction, SessionStatus, Table};
