//! td-local: a Treasure Data REST API v3 server on an embedded SQLite database.
//!
//! Start it in process with [`TdLocal::start`] (port 0 picks a free port), read its base URL and
//! the accounts' keys, inject faults through [`TdLocal::faults`], and [`TdLocal::shutdown`] it.
//! The `td-local` binary serves the same thing from the command line.
//!
//! The modules, from the bottom up; each imports only modules listed before it, and only
//! `routes` knows HTTP statuses:
//! - `error`, `limits`, `inflate`, `faults`, `accounts`: what goes wrong, how much a request may
//!   make td-local hold, gzip inflated under a limit, which faults to inject, who holds a key;
//! - `store`, `segments`, `lag`: the SQLite file, its transactions, states stored as words, the
//!   segments rows are stored in, and the lag of table counts behind them;
//! - `results`, `catalog`, `jobs`: saved results, databases and tables, the jobs table;
//! - `records`, `flat`, `query`: rows at rest and on the wire (flat ones read in place), running
//!   SQL;
//! - `import`, `bulk_import`, `output`, `result_format`, `sample`: imports, bulk imports,
//!   td:// output, result downloads, the sample database;
//! - `runner`: the background work of jobs; `local_query`: one query on a data directory
//!   (`td-local query`); `inspect`: the data, read and set up for tests;
//! - `state`, `routes`: the HTTP side; `server`: the running server ([`TdLocal`]).

#![warn(unreachable_pub)]

pub mod accounts;
mod bulk_import;
mod catalog;
pub mod cli;
mod error;
mod faults;
mod flat;
mod import;
mod inflate;
mod inspect;
mod jobs;
mod lag;
pub mod limits;
mod local_query;
mod output;
mod query;
mod records;
mod result_format;
mod results;
mod routes;
mod runner;
mod sample;
mod schedules;
mod segments;
mod server;
mod setup;
mod state;
mod store;

pub use accounts::Account;
pub use error::Error;
pub use faults::{FaultAction, FaultRule, Faults, LoggedRequest, Trigger};
pub use inspect::{Inspect, SessionInfo};
pub use lag::CountLag;
pub use limits::Limits;
pub use server::{Config, Embedded, TdLocal};

/// Pieces the tests and benchmarks build data with. Not an API: no promise holds from one
/// version to the next.
#[doc(hidden)]
pub mod internals {
    pub use crate::jobs::result_path;
    pub use crate::records::{
        binary_value, double_value, gzip_msgpack, json_to_msgpack, msgpack_to_json, read_msgpack_values,
    };
    pub use crate::sample::{www_access_rows, AGENTS, FIRST_TIME, PATHS, WWW_ACCESS_SCHEMA};
}
