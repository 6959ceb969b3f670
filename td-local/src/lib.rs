//! td-local: a Treasure Data REST API v3 server on an embedded SQLite database.
//!
//! Start it in process with [`TdLocal::start`] (port 0 picks a free port), read its base URL and
//! the accounts' keys, inject faults through [`TdLocal::faults`], and [`TdLocal::shutdown`] it.
//! The `td-local` binary serves the same thing from the command line.
//!
//! The modules, from the bottom up (each imports only modules below it):
//! - `error`, `accounts`, `faults`: what goes wrong, who calls, which faults to inject;
//! - `store`: the SQLite file and its transactions;
//! - `catalog`, `records`, `jobs`, `results`: databases and tables, rows, jobs, saved results;
//! - `import`, `bulk_import`, `query`, `output`, `result_format`: the work on them;
//! - `runner`: the background work of jobs; `sample`: the sample database;
//! - `inspect`: reading and setting up the data through the library, for tests and tools;
//! - `state`, `routes`: HTTP, where errors become statuses; `server`: the running server.

pub mod accounts;
pub mod bulk_import;
pub mod catalog;
pub mod error;
pub mod faults;
pub mod import;
pub mod inspect;
pub mod jobs;
pub mod output;
pub mod query;
pub mod records;
pub mod result_format;
pub mod results;
mod routes;
pub mod runner;
pub mod sample;
mod server;
pub mod state;
pub mod store;

pub use accounts::Account;
pub use error::Error;
pub use faults::{FaultAction, FaultRule, Faults, LoggedRequest, Trigger};
pub use inspect::{Inspect, SessionInfo};
pub use server::{Config, TdLocal};
