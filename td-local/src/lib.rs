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

pub mod accounts;
pub mod bulk_import;
pub mod catalog;
pub mod cli;
pub mod error;
pub mod faults;
pub mod flat;
pub mod import;
pub mod inflate;
pub mod inspect;
pub mod jobs;
pub mod lag;
pub mod limits;
pub mod local_query;
pub mod output;
pub mod query;
pub mod records;
pub mod result_format;
pub mod results;
mod routes;
pub mod runner;
pub mod sample;
pub mod schedules;
pub mod segments;
mod server;
pub mod setup;
pub mod state;
pub mod store;

pub use accounts::Account;
pub use error::Error;
pub use faults::{FaultAction, FaultRule, Faults, LoggedRequest, Trigger};
pub use inspect::{Inspect, SessionInfo};
pub use lag::CountLag;
pub use limits::Limits;
pub use server::{Config, Embedded, TdLocal};
