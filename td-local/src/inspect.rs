//! Reading and setting up a td-local through its library, for tests and tools: what the API
//! stored (rows, schemas, tables, jobs, bulk-import sessions) and the state a test needs before
//! it calls the API (rows, databases, saved results, finished jobs, interrupted performs).
//!
//! Get one from [`crate::TdLocal::inspect`]. Every call is blocking (one transaction on the
//! store, or one snapshot for a read), which is fine from a test, async ones included. Accounts
//! are named by id, as [`crate::Account::id`] numbers them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::Value;
use td_model::schema::parse_table_schema;

use crate::bulk_import::{self, Session};
use crate::catalog::{self, ensure_database, ensure_table, find_database};
use crate::error::{Error, Result};
use crate::jobs::{self, Job, NewJob, Outcome};
use crate::records::{self, Row};
use crate::results;
use crate::store::Store;

/// A handle on a server's data for tests and tools; cheap to clone and to send to a thread.
#[derive(Clone)]
pub struct Inspect {
    store: Store,
    data_dir: Arc<PathBuf>,
}

/// A bulk-import session as a test sees it: as stored, with its part count.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Its `id` outlives its name (see [`Inspect::session_leftovers`]).
    pub session: Session,
    /// Parts uploaded so far.
    pub parts: usize,
}

impl Inspect {
    pub(crate) fn new(store: Store, data_dir: &Path) -> Inspect {
        Inspect {
            store,
            data_dir: Arc::new(data_dir.to_path_buf()),
        }
    }

    /// Stores `records` (JSON maps, each with an integer `time`) in `db.table` of `account`,
    /// creating both if missing; the schema grows with new columns as an import's does.
    pub fn insert(&self, account: i64, db: &str, table: &str, records: &[Value]) -> Result<()> {
        let rows = records
            .iter()
            .map(|r| {
                let record = r
                    .as_object()
                    .ok_or_else(|| Error::invalid(format!("{r} is not a map")))?;
                let time = r["time"]
                    .as_i64()
                    .ok_or_else(|| Error::invalid(format!("{r} has no integer time")))?;
                Ok(Row {
                    time,
                    record: record.clone(),
                })
            })
            .collect::<Result<Vec<Row>>>()?;
        self.store.write(|tx| {
            ensure_database(tx, account, db)?;
            let table_id = ensure_table(tx, account, db, table)?;
            records::insert_rows(tx, table_id, &rows)
        })
    }

    /// Creates `db` in `account` if it does not exist.
    pub fn create_database(&self, account: i64, db: &str) -> Result<()> {
        self.store.write(|tx| ensure_database(tx, account, db).map(drop))
    }

    /// Creates `db.table` in `account` (both if missing).
    pub fn create_table(&self, account: i64, db: &str, table: &str) -> Result<()> {
        self.store.write(|tx| {
            ensure_database(tx, account, db)?;
            ensure_table(tx, account, db, table).map(drop)
        })
    }

    /// The tables of `db` in `account`, sorted; none when the database does not exist.
    pub fn tables(&self, account: i64, db: &str) -> Result<Vec<String>> {
        self.store.read(|conn| match find_database(conn, account, db)? {
            Some(_) => catalog::table_names(conn, account, db),
            None => Ok(Vec::new()),
        })
    }

    /// The id of `db.table`, if it exists.
    fn find_table(conn: &Connection, account: i64, db: &str, table: &str) -> Result<Option<i64>> {
        match catalog::table_id(conn, account, db, table) {
            Ok(id) => Ok(Some(id)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The rows of `db.table` in `account` in the order they were stored, each record with its
    /// `time`; `None` when the table does not exist.
    pub fn rows(&self, account: i64, db: &str, table: &str) -> Result<Option<Vec<Row>>> {
        self.store
            .read(|conn| match Self::find_table(conn, account, db, table)? {
                Some(id) => records::table_rows(conn, id).map(Some),
                None => Ok(None),
            })
    }

    /// How many rows `db.table` holds (NotFound when it does not exist), read in one snapshot.
    pub fn row_count(&self, account: i64, db: &str, table: &str) -> Result<i64> {
        self.store
            .read(|conn| records::row_count(conn, catalog::table_id(conn, account, db, table)?))
    }

    /// The schema of `db.table` as stored (`[[name, type], …]`); `None` when the table does not
    /// exist.
    pub fn schema(&self, account: i64, db: &str, table: &str) -> Result<Option<Value>> {
        let text = self
            .store
            .read(|conn| match Self::find_table(conn, account, db, table)? {
                Some(id) => catalog::stored_schema(conn, id).map(Some),
                None => Ok(None),
            })?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| Error::internal(format!("a stored schema is not JSON: {e}")))
        })
        .transpose()
    }

    /// Replaces the schema of `db.table` (`[[name, type], …]` JSON), as `update-schema` would.
    pub fn set_schema(&self, account: i64, db: &str, table: &str, schema: &str) -> Result<()> {
        let columns = parse_table_schema(schema)?;
        self.store
            .write(|tx| catalog::replace_schema(tx, account, db, table, &columns))
    }

    /// Saves a result destination, as `POST /v3/result/create/NAME` with `url` does.
    pub fn save_result(&self, account: i64, name: &str, url: &str) -> Result<()> {
        self.store.write(|tx| results::create(tx, account, name, url))
    }

    /// Makes a connection of `account` as TD's console does (Integrations → Authentications,
    /// type Treasure Data): `/v3/connections/lookup?name=NAME` finds it and an export's
    /// `result_connection_id` uses it, but `/v3/result/list` does not list it. `td_url` is
    /// `td://KEY@HOST[/DATABASE[/TABLE]]`; its key picks the account the rows go to. Returns
    /// the connection's id.
    pub fn create_connection(&self, account: i64, name: &str, td_url: &str) -> Result<i64> {
        self.store
            .write(|tx| results::create_console_connection(tx, account, name, td_url))
    }

    /// The bulk-import sessions of `account`, by name, with their part counts.
    pub fn bulk_imports(&self, account: i64) -> Result<Vec<SessionInfo>> {
        self.store.read(|conn| {
            bulk_import::list(conn, account)?
                .into_iter()
                .map(|session| {
                    let parts = bulk_import::list_parts(conn, account, &session.name)?.1.len();
                    Ok(SessionInfo { session, parts })
                })
                .collect()
        })
    }

    /// The rows a session keeps beside the table (parts, staged rows, rejected records), by
    /// session id: what must be gone once a session is deleted or committed.
    pub fn session_leftovers(&self, session_id: i64) -> Result<i64> {
        self.store.read(|conn| bulk_import::side_rows(conn, session_id))
    }

    /// Puts a session in `performing`, as if a perform job were running (one may finish before
    /// a test's next request).
    pub fn force_performing(&self, account: i64, name: &str) -> Result<()> {
        self.store
            .write(|tx| bulk_import::force_performing(tx, account, name, None))
    }

    /// Leaves a session as a crash in the middle of a perform does: `performing` under a perform
    /// job that never finished, with a row staged. Returns the job's id.
    pub fn interrupt_perform(&self, account: i64, name: &str) -> Result<i64> {
        self.store.write(|tx| {
            let session = bulk_import::load(tx, account, name)?;
            let job = NewJob {
                account_id: account,
                job_type: "bulk_import".into(),
                database: session.database.clone(),
                ..NewJob::default()
            };
            let job_id = jobs::insert(tx, &job)?;
            bulk_import::force_performing(tx, account, name, Some(job_id))?;
            bulk_import::stage_rows(tx, session.id, [(1, r#"{"time":1}"#)])?;
            Ok(job_id)
        })
    }

    /// Records a query job of `account` that succeeded with this result: `columns` are
    /// `(name, presto type)`, `rows` msgpack-ready JSON arrays, stored as TD stores results
    /// (gzip of msgpack arrays); the job started at `start_at`. Returns its id.
    pub fn finished_job(
        &self,
        account: i64,
        database: &str,
        columns: &[(&str, &str)],
        rows: &[Value],
        start_at: i64,
    ) -> Result<i64> {
        let id = self.store.write(|tx| {
            let job = NewJob {
                account_id: account,
                job_type: "presto".into(),
                database: database.into(),
                query: "SELECT …".into(),
                ..NewJob::default()
            };
            jobs::insert(tx, &job)
        })?;
        let result = records::gzip_msgpack(rows)?;
        let path = jobs::result_path(&self.data_dir, id);
        std::fs::create_dir_all(path.parent().expect("results live in a directory"))?;
        std::fs::write(&path, &result)?;
        let schema: Vec<[&str; 2]> = columns.iter().map(|(n, t)| [*n, *t]).collect();
        let outcome = Outcome {
            num_records: rows.len() as i64,
            result_size: result.len() as i64,
            hive_result_schema: Some(serde_json::json!(schema).to_string()),
            cmdout: String::new(),
        };
        self.store.write(|tx| {
            jobs::mark_running_since(tx, id, start_at)?;
            jobs::mark_success(tx, id, &outcome)
        })?;
        Ok(id)
    }

    /// Records a queued query job of `account` on `database` that never runs. Returns its id.
    pub fn queued_job(&self, account: i64, database: &str) -> Result<i64> {
        let job = NewJob {
            account_id: account,
            job_type: "presto".into(),
            database: database.into(),
            ..NewJob::default()
        };
        self.store.write(|tx| jobs::insert(tx, &job))
    }

    /// Any account's job, as stored.
    pub fn job(&self, id: i64) -> Result<Job> {
        self.store.read(|conn| jobs::get(conn, id))
    }

    /// How many jobs the server holds, of every account.
    pub fn job_count(&self) -> Result<i64> {
        self.store.read(jobs::count)
    }

    /// Runs `sql` as a query job of `account` on `db` would, without recording a job: the same
    /// engine, views and snapshot (`TD_SCHEDULED_TIME()` is now). Returns the result rows (msgpack arrays as JSON, binary as
    /// [`records::msgpack_to_json`] keeps it) and the `hive_result_schema` text.
    pub fn query(&self, account: i64, db: &str, sql: &str) -> Result<(Vec<Value>, String)> {
        let ran = crate::local_query::run(&self.store, &self.data_dir, account, db, sql)
            .map_err(|e| Error::invalid(format!("query failed: {e}")))?;
        let mut rows = Vec::new();
        ran.rows(|row| {
            rows.push(records::msgpack_to_json(row));
            true
        })?;
        Ok((rows, ran.outcome.hive_result_schema.clone().unwrap_or_default()))
    }

    /// Replaces a finished job's `hive_result_schema`, as if its engine had reported that one.
    pub fn set_result_schema(&self, id: i64, schema: &str) -> Result<()> {
        self.store.write(|tx| jobs::set_result_schema(tx, id, schema))
    }
}
