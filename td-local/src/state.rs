//! What every request handler shares: the store, the accounts, the job runner, the data
//! directory, the limits, and the fault rules with the request log.

use std::path::PathBuf;
use std::sync::Arc;

use crate::accounts::Accounts;
use crate::faults::Faults;
use crate::lag::CountLag;
use crate::limits::Limits;
use crate::runner::Runner;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub accounts: Accounts,
    pub runner: Runner,
    pub faults: Faults,
    pub data_dir: Arc<PathBuf>,
    /// How much one request may make the server read, inflate and hold.
    pub limits: Limits,
    /// How long table counts lag changes of the rows.
    pub count_lag: CountLag,
}
