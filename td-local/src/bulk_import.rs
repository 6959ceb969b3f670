//! Bulk-import sessions (docs/td-api.md §5): gzip'd msgpack parts are uploaded into a session, a
//! perform job validates them into staged rows (keeping rejected records aside), and a commit
//! hands the staged rows to the target table in one transaction, moving none. The HTTP side lives in
//! `routes::bulk_import`.
//!
//! States: `uploading` (optionally `upload_frozen`) → `performing` → `ready` → `committed`.
//! A call made in the wrong state is refused with 409 naming the current state. A commit goes
//! from `ready` to `committed` inside one transaction, so `committing` is never observed.

use std::io::Write;
use std::sync::mpsc;

use flate2::read::MultiGzDecoder;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use td_model::name::is_td_name;
use td_model::schema::{parse_table_schema, table_schema_json, TableColumn};

use crate::catalog::{self, merge_columns};
use crate::error::{Error, Result};
use crate::flat::{FlatRecord, Shapes};
use crate::inflate::{self, Capped};
use crate::jobs::{self, NewJob, Outcome};
use crate::lag::{self, CountLag};
use crate::limits::{Limits, BATCH_BYTES, BATCH_ROWS};
use crate::records;
use crate::segments::{self, Owner, Segment};
use crate::store::{now, Store};

pub(crate) use td_model::states::SessionState;

/// One session as stored.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub name: String,
    pub database: String,
    pub table: String,
    pub status: SessionState,
    pub upload_frozen: bool,
    pub job_id: Option<i64>,
    pub valid_records: Option<i64>,
    pub error_records: Option<i64>,
    pub valid_parts: Option<i64>,
    pub error_parts: Option<i64>,
    /// The columns the staged rows add to the table schema, computed by perform (schema JSON).
    new_columns: Option<String>,
}

const SESSION_COLUMNS: &str = "id, name, database_name, table_name, status, upload_frozen, job_id, \
    valid_records, error_records, valid_parts, error_parts, new_columns";

fn session_from_row(row: &rusqlite::Row) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        name: row.get(1)?,
        database: row.get(2)?,
        table: row.get(3)?,
        status: row.get(4)?,
        upload_frozen: row.get(5)?,
        job_id: row.get(6)?,
        valid_records: row.get(7)?,
        error_records: row.get(8)?,
        valid_parts: row.get(9)?,
        error_parts: row.get(10)?,
        new_columns: row.get(11)?,
    })
}

impl Session {
    /// The shape of `show` and of each `list` item; `job_id` is a string, as for jobs.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "database": self.database,
            "table": self.table,
            "status": self.status.as_str(),
            "upload_frozen": self.upload_frozen,
            "job_id": self.job_id.map(|id| id.to_string()),
            "valid_records": self.valid_records,
            "error_records": self.error_records,
            "valid_parts": self.valid_parts,
            "error_parts": self.error_parts,
        })
    }

    /// Refuses `action` unless the session is in one of `allowed`.
    fn require(&self, allowed: &[SessionState], action: &str) -> Result<()> {
        if allowed.contains(&self.status) {
            return Ok(());
        }
        let needed: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        Err(Error::conflict(format!(
            "cannot {action} bulk import session '{}': it is {}, and {action} needs {}",
            self.name,
            self.status.as_str(),
            needed.join(" or ")
        )))
    }

    /// Parts can change only while uploading and not frozen.
    fn require_open_for_upload(&self, action: &str) -> Result<()> {
        self.require(&[SessionState::Uploading], action)?;
        if self.upload_frozen {
            return Err(Error::conflict(format!(
                "cannot {action} bulk import session '{}': it is uploading but frozen; unfreeze it first",
                self.name
            )));
        }
        Ok(())
    }
}

/// An account's session by name, or 404.
pub(crate) fn load(conn: &Connection, account_id: i64, name: &str) -> Result<Session> {
    conn.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM bulk_imports WHERE account_id = ?1 AND name = ?2"),
        params![account_id, name],
        session_from_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found(format!("bulk import session '{name}' does not exist")))
}

/// An account's sessions, by name.
pub(crate) fn list(conn: &Connection, account_id: i64) -> Result<Vec<Session>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {SESSION_COLUMNS} FROM bulk_imports WHERE account_id = ?1 ORDER BY name"
    ))?;
    let sessions = stmt.query_map(params![account_id], session_from_row)?;
    Ok(sessions.collect::<rusqlite::Result<_>>()?)
}

/// A session name: TD's name characters and `-`, which TD takes in session names (not in
/// database or table names): pytd's `BulkImportWriter._bulk_import` names every session
/// `session-{uuid.uuid1()}` (https://github.com/treasure-data/pytd/blob/master/pytd/writer.py,
/// pytd 2.4.0), and its `load_table_from_dataframe(writer="bulk_import")` works against TD.
fn check_session_name(name: &str) -> Result<()> {
    if is_td_name(&name.replace('-', "_")) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{name}` is not a valid TD name for a bulk import session (use 3 to 128 characters of \
             lowercase a-z, 0-9, _ and -)"
        )))
    }
}

/// Creates a session importing into `db.table`: 422 bad name, 404 missing target, 409 exists.
pub(crate) fn create(conn: &Connection, account_id: i64, name: &str, db: &str, table: &str) -> Result<()> {
    check_session_name(name)?;
    catalog::table_id(conn, account_id, db, table)?;
    let t = now();
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO bulk_imports (account_id, name, database_name, table_name, status, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![account_id, name, db, table, SessionState::Uploading, t],
    )?;
    if inserted == 0 {
        return Err(Error::conflict(format!(
            "bulk import session '{name}' already exists"
        )));
    }
    Ok(())
}

/// Part names: not empty, no `/`, at most one `.` (what the official clients enforce). TD's
/// router answers a name with two dots 404, as a path it does not know (the API description's
/// finding, https://td-public.redocly.app/apis/td-api: the part is a path segment whose one `.`
/// is a format suffix); td-local does the same.
pub(crate) fn check_part_name(part: &str) -> Result<()> {
    let problem = if part.is_empty() {
        Some("must not be empty")
    } else if part.contains('/') {
        Some("must not contain '/'")
    } else if part.matches('.').count() > 1 {
        return Err(Error::not_found(format!(
            "no such path: part name '{part}' has more than one '.'"
        )));
    } else {
        None
    };
    match problem {
        Some(why) => Err(Error::invalid(format!("invalid part name '{part}': {why}"))),
        None => Ok(()),
    }
}

/// Stores a part; uploading a part name again replaces its data.
pub(crate) fn upload_part(
    conn: &Connection,
    account_id: i64,
    name: &str,
    part: &str,
    data: &[u8],
) -> Result<()> {
    check_part_name(part)?;
    let session = load(conn, account_id, name)?;
    session.require_open_for_upload("upload a part to")?;
    conn.execute(
        "INSERT OR REPLACE INTO bulk_import_parts (session_id, name, data, uploaded_at) VALUES (?1, ?2, ?3, ?4)",
        params![session.id, part, data, now()],
    )?;
    touch(conn, session.id)
}

pub(crate) fn delete_part(conn: &Connection, account_id: i64, name: &str, part: &str) -> Result<()> {
    check_part_name(part)?;
    let session = load(conn, account_id, name)?;
    session.require_open_for_upload("delete a part of")?;
    let deleted = conn.execute(
        "DELETE FROM bulk_import_parts WHERE session_id = ?1 AND name = ?2",
        params![session.id, part],
    )?;
    if deleted == 0 {
        return Err(Error::not_found(format!(
            "part '{part}' of bulk import session '{name}' does not exist"
        )));
    }
    touch(conn, session.id)
}

/// The session and its part names, in name order (the order perform reads them).
pub(crate) fn list_parts(conn: &Connection, account_id: i64, name: &str) -> Result<(Session, Vec<String>)> {
    let session = load(conn, account_id, name)?;
    let parts = part_names(conn, session.id)?;
    Ok((session, parts))
}

fn part_names(conn: &Connection, session_id: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM bulk_import_parts WHERE session_id = ?1 ORDER BY name")?;
    let names = stmt.query_map(params![session_id], |r| r.get(0))?;
    Ok(names.collect::<rusqlite::Result<_>>()?)
}

/// Freezes or unfreezes uploads; repeating either is harmless. Only while uploading.
pub(crate) fn set_frozen(conn: &Connection, account_id: i64, name: &str, frozen: bool) -> Result<()> {
    let session = load(conn, account_id, name)?;
    session.require(
        &[SessionState::Uploading],
        if frozen { "freeze" } else { "unfreeze" },
    )?;
    conn.execute(
        "UPDATE bulk_imports SET upload_frozen = ?1, updated_at = ?2 WHERE id = ?3",
        params![frozen, now(), session.id],
    )?;
    Ok(())
}

/// What a perform call asks for besides the session.
#[derive(Debug, Clone, Default)]
pub struct PerformOptions {
    pub priority: i64,
    pub pool_name: Option<String>,
}

/// Records a perform job and moves the session to `performing`; returns `(session id, job id)`
/// for [`run_perform`]. Allowed while uploading (frozen or not), and — as a new trial that
/// replaces the last one's staged rows, which TD takes (the toolbelt's `import:perform -f`,
/// treasure-data/td lib/td/command/bulk_import.rb) — when `performing` or `ready`.
pub(crate) fn start_perform(
    conn: &Connection,
    account_id: i64,
    name: &str,
    options: &PerformOptions,
) -> Result<(i64, i64)> {
    let session = load(conn, account_id, name)?;
    session.require(
        &[
            SessionState::Uploading,
            SessionState::Performing,
            SessionState::Ready,
        ],
        "perform",
    )?;
    let job_id = jobs::insert(
        conn,
        &NewJob {
            account_id,
            job_type: "bulk_import".into(),
            database: session.database.clone(),
            priority: options.priority,
            pool_name: options.pool_name.clone(),
            ..NewJob::default()
        },
    )?;
    conn.execute(
        "UPDATE bulk_imports SET status = ?1, job_id = ?2, valid_records = NULL, \
         error_records = NULL, valid_parts = NULL, error_parts = NULL, new_columns = NULL, updated_at = ?3 \
         WHERE id = ?4",
        params![SessionState::Performing, job_id, now(), session.id],
    )?;
    Ok((session.id, job_id))
}

/// Runs a perform job to its end (blocking): every part is decoded, valid rows are staged,
/// rejected records kept; the session becomes `ready` and the job `success`. A perform job
/// that cannot finish (an error, or killed) leaves the session `performing` under the dead job,
/// as TD does: embulk-output-td PR #133 ("Avoid stuck execution due to killed bulk import
/// perform job", https://github.com/treasure-data/embulk-output-td/pull/133) reports that a
/// killed perform job leaves the session's status unchanged, and the `td` toolbelt's
/// `import:perform` answers a `performing` session with "Add '-f' option to force start" (a
/// new trial). That a failed (not killed) perform does the same is assumed: the harsher reading.
pub(crate) fn run_perform(store: &Store, limits: &Limits, session_id: i64, job_id: i64) {
    let outcome = jobs::mark_running(store, job_id).and_then(|()| perform(store, limits, session_id, job_id));
    if let Err(e) = outcome {
        tracing::warn!(session_id, job_id, error = %e, "bulk import perform failed");
        let cleared = store.write(|tx| {
            if is_under(tx, session_id, job_id)? {
                clear_staging(tx, session_id)?;
            }
            Ok(())
        });
        if let Err(cleared) = cleared {
            tracing::error!(session_id, error = %cleared, "could not clear the failed perform's rows");
        }
        let _ = jobs::mark_error(store, job_id, &e.to_string());
    }
}

/// What perform learned from the parts.
#[derive(Debug, Default)]
struct Tally {
    valid_records: i64,
    error_records: i64,
    valid_parts: i64,
    error_parts: i64,
    new_columns: Vec<TableColumn>,
}

impl Tally {
    /// Counts a batch of a part's records.
    fn count(&mut self, batch: &DecodedPart) {
        self.valid_records += batch.rows.len() as i64;
        self.error_records += batch.errors.len() as i64;
        merge_columns(&mut self.new_columns, batch.columns.iter().cloned());
    }

    fn add(&mut self, part: Tally) {
        self.valid_records += part.valid_records;
        self.error_records += part.error_records;
        self.valid_parts += part.valid_parts;
        self.error_parts += part.error_parts;
        merge_columns(&mut self.new_columns, part.new_columns);
    }
}

fn perform(store: &Store, limits: &Limits, session_id: i64, job_id: i64) -> Result<()> {
    let parts = store.read(|conn| part_names(conn, session_id))?;
    store.write(|tx| {
        ensure_performing(tx, session_id, job_id)?;
        clear_staging(tx, session_id)
    })?;
    let tally = stage_parts(store, limits, session_id, job_id, parts)?;
    store.write(|tx| {
        ensure_performing(tx, session_id, job_id)?;
        finish_perform(tx, session_id, job_id, &tally)
    })
}

/// What the decoding thread hands the staging loop: batches of one part's records, then how
/// the part ended (an error part is not gzip'd msgpack as a whole, or passes a limit).
enum Decoded {
    Batch(DecodedPart),
    End { valid: bool },
}

/// Decodes and stages every part. Decoding (CPU) runs on its own thread, a batch ahead of the
/// staging writes (I/O), so memory holds a couple of batches whatever the parts inflate to.
fn stage_parts(
    store: &Store,
    limits: &Limits,
    session_id: i64,
    job_id: i64,
    parts: Vec<String>,
) -> Result<Tally> {
    let (sender, decoded) = mpsc::sync_channel::<Result<Decoded>>(1);
    // Batches written go back to the decoder to be filled again: their buffers (megabytes, in
    // pages of their own) are then faulted in once per perform, not once per batch.
    let (written_batches, emptied) = mpsc::sync_channel::<DecodedPart>(2);
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for part in parts {
                let stopped = std::cell::Cell::new(false);
                let decoded = decode_stored_part(store, session_id, &part, limits, |batch| {
                    sender.send(Ok(Decoded::Batch(batch))).map_err(|_| {
                        stopped.set(true);
                        Error::internal("the perform stopped")
                    })?;
                    Ok(emptied.try_recv().map(DecodedPart::emptied).unwrap_or_default())
                });
                let valid = match decoded {
                    Ok(decoded) => decoded.is_ok(),
                    Err(e) => return drop(sender.send(Err(e))),
                };
                if stopped.get() || sender.send(Ok(Decoded::End { valid })).is_err() {
                    return;
                }
            }
        });
        // Each batch is its own transaction (a part's rows, all dirty at once, would not fit
        // the page cache); a part found bad at its end has its batches dropped, so an error
        // part leaves no rows behind. Nothing reads a session's rows before the perform ends.
        let mut part = Tally::default();
        let mut written = PartWrites::default();
        for next in decoded {
            match next? {
                Decoded::Batch(batch) => {
                    let kept = (tally.error_records + part.error_records) as usize;
                    let keep = limits.kept_error_records.saturating_sub(kept);
                    store.write(|tx| {
                        ensure_performing(tx, session_id, job_id)?;
                        stage_part(tx, session_id, &batch, keep, &mut written)
                    })?;
                    part.count(&batch);
                    let _ = written_batches.try_send(batch);
                    continue;
                }
                Decoded::End { valid: true } => part.valid_parts = 1,
                Decoded::End { valid: false } => {
                    store.write(|tx| written.undo(tx))?;
                    part = Tally {
                        error_parts: 1,
                        ..Tally::default()
                    };
                }
            }
            tally.add(std::mem::take(&mut part));
            written = PartWrites::default();
        }
        Ok::<(), Error>(())
    })?;
    Ok(tally)
}

/// The session becomes `ready` with its counts, and the job `success`, in one transaction.
fn finish_perform(tx: &Connection, session_id: i64, job_id: i64, tally: &Tally) -> Result<()> {
    tx.execute(
        "UPDATE bulk_imports SET status = ?8, valid_records = ?1, error_records = ?2, valid_parts = ?3, \
         error_parts = ?4, new_columns = ?5, updated_at = ?6 WHERE id = ?7",
        params![
            tally.valid_records,
            tally.error_records,
            tally.valid_parts,
            tally.error_parts,
            table_schema_json(&tally.new_columns),
            now(),
            session_id,
            SessionState::Ready
        ],
    )?;
    let cmdout = format!(
        "valid records: {}, error records: {}, valid parts: {}, error parts: {}",
        tally.valid_records, tally.error_records, tally.valid_parts, tally.error_parts
    );
    let outcome = Outcome {
        num_records: tally.valid_records,
        cmdout,
        ..Outcome::default()
    };
    jobs::mark_success(tx, job_id, &outcome)
}

/// Whether the session is `performing` under `job_id`.
fn is_under(conn: &Connection, session_id: i64, job_id: i64) -> Result<bool> {
    let current: Option<(SessionState, Option<i64>)> = conn
        .query_row(
            "SELECT status, job_id FROM bulk_imports WHERE id = ?1",
            params![session_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(current.is_some_and(|(status, job)| status == SessionState::Performing && job == Some(job_id)))
}

/// Stops a perform whose session was deleted or performed again (a new trial), or whose job
/// was killed, while it ran.
fn ensure_performing(conn: &Connection, session_id: i64, job_id: i64) -> Result<()> {
    let job_active = jobs::status_of(conn, job_id)?.is_some_and(|s| s.is_active());
    if is_under(conn, session_id, job_id)? && job_active {
        Ok(())
    } else {
        Err(Error::conflict(
            "the bulk import session was deleted or performed again, or its perform job was killed, while the job ran",
        ))
    }
}

fn clear_staging(conn: &Connection, session_id: i64) -> Result<()> {
    segments::delete_session_rows(conn, session_id)?;
    conn.execute(
        "DELETE FROM bulk_import_errors WHERE session_id = ?1",
        params![session_id],
    )?;
    Ok(())
}

/// Decodes part `part` where it is stored, reading it from the database a piece at a time
/// (incremental blob I/O) instead of loading it whole. Err: the part could not be read (the
/// perform fails); Ok(Err): an error part (see [`decode_part`]).
fn decode_stored_part(
    store: &Store,
    session_id: i64,
    part: &str,
    limits: &Limits,
    send: impl FnMut(DecodedPart) -> Result<DecodedPart>,
) -> Result<Result<()>> {
    // Inflating is about a third of decoding: it runs on a thread of its own (with the part's
    // blob open in its own read transaction), a couple of chunks ahead of the records read here.
    let (producer, inflated) = inflate::handoff();
    std::thread::scope(|scope| {
        let inflating = scope.spawn(move || {
            store.read(|conn| {
                let rowid: i64 = conn.query_row(
                    "SELECT rowid FROM bulk_import_parts WHERE session_id = ?1 AND name = ?2",
                    params![session_id, part],
                    |r| r.get(0),
                )?;
                let blob = conn.blob_open(rusqlite::MAIN_DB, "bulk_import_parts", "data", rowid, true)?;
                // An empty part is no gzip at all: it holds no records.
                if blob.is_empty() {
                    producer.pump(std::io::empty());
                } else {
                    producer.pump(MultiGzDecoder::new(blob));
                }
                Ok(())
            })
        });
        let decoded = decode_part(inflated, limits, send);
        // A part that could not be read at all is the store's error, not the part's.
        let read = inflating
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read.map(|()| decoded)
    })
}

/// One part, decoded: staged rows as `(time, record JSON)`, rejected records as msgpack, and
/// the columns its rows would add to an empty schema.
#[derive(Debug, Default)]
struct DecodedPart {
    /// The staged rows' JSON texts, back to back.
    text: String,
    /// Each staged row's `time` and where its text ends in `text`.
    rows: Vec<(i64, usize)>,
    errors: Vec<Vec<u8>>,
    columns: Vec<TableColumn>,
    /// Bytes held in `text` and `errors`.
    bytes: usize,
    /// The shapes of this batch's flat records.
    shapes: Shapes,
}

impl DecodedPart {
    /// Takes record `index` (its msgpack bytes): a flat record straight to its JSON text, any
    /// other through decoded values.
    fn accept(&mut self, index: usize, raw: &[u8]) -> Result<()> {
        if let Some(record) = FlatRecord::parse(raw) {
            let start = self.text.len();
            if let Some(time) = self.shapes.stage(&record, &mut self.columns, &mut self.text) {
                self.rows.push((time, self.text.len()));
                self.bytes += self.text.len() - start;
                return Ok(());
            }
        }
        self.accept_value(index, records::decode_record(index, raw)?);
        Ok(())
    }

    /// The staged rows, `(time, record JSON)`, in the order they came.
    fn staged(&self) -> impl Iterator<Item = (i64, &str)> {
        let mut start = 0;
        self.rows.iter().map(move |&(time, end)| {
            let text = &self.text[start..end];
            start = end;
            (time, text)
        })
    }

    /// Takes a record that is not flat. Its values are staged whatever their columns' types: TD
    /// is schema-on-read and applies a column's type when the column is read
    /// (`records::ColumnRead`), so only a record that is no row (not a map, no integer `time`)
    /// is an error record.
    fn accept_value(&mut self, index: usize, value: rmpv::Value) {
        if !looks_like_record(&value) {
            self.reject(encode(&value));
            return;
        }
        match records::to_row(index, value) {
            Ok(row) => {
                records::extend_schema(&mut self.columns, &row.record);
                let text = serde_json::to_string(&row.record).expect("a JSON map always serializes");
                self.text.push_str(&text);
                self.rows.push((row.time, self.text.len()));
                self.bytes += text.len();
            }
            // A map whose `time` is ambiguous (repeated keys): keep the reason instead.
            Err(e) => self.reject(encode(&rmpv::Value::Map(vec![(
                "error".into(),
                e.to_string().into(),
            )]))),
        }
    }

    /// This batch with nothing in it, its buffers kept for the next.
    fn emptied(mut self) -> DecodedPart {
        self.text.clear();
        self.rows.clear();
        self.errors.clear();
        self.columns.clear();
        self.bytes = 0;
        self.shapes = Shapes::default();
        self
    }

    fn reject(&mut self, record: Vec<u8>) {
        self.bytes += record.len();
        self.errors.push(record);
    }

    fn is_full(&self) -> bool {
        self.rows.len() + self.errors.len() >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }
}

/// A map with an integer `time`: what `records::to_row` accepts, checked before it consumes
/// the value so a rejected record can be kept as it came.
fn looks_like_record(value: &rmpv::Value) -> bool {
    value.as_map().is_some_and(|entries| {
        entries
            .iter()
            .any(|(k, v)| k.as_str() == Some("time") && v.as_i64().is_some())
    })
}

fn encode(value: &rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).expect("writing msgpack to memory cannot fail");
    bytes
}

/// Decodes a part's `inflated` bytes, handing `send` a batch at a time (it answers with an empty
/// batch to fill next); a part that is not gzip'd msgpack as a whole, inflates past the part
/// limit or holds a record over the record limits is an error part (Err), whatever batches were
/// sent before.
fn decode_part(
    inflated: impl std::io::Read,
    limits: &Limits,
    mut send: impl FnMut(DecodedPart) -> Result<DecodedPart>,
) -> Result<()> {
    let mut batch = DecodedPart::default();
    let inflated = Capped::new(inflated, limits.part_inflated_bytes);
    records::read_records(inflated, limits.record, |index, raw| {
        batch.accept(index, raw)?;
        if batch.is_full() {
            let full = std::mem::take(&mut batch);
            batch = send(full)?;
        }
        Ok(())
    })?;
    send(batch).map(drop)
}

/// What a part has staged so far: its segments and kept error records (rowids), dropped if
/// the part turns out to be an error part.
#[derive(Debug, Default)]
struct PartWrites {
    segments: Vec<i64>,
    errors: Vec<i64>,
}

impl PartWrites {
    fn undo(&self, conn: &Connection) -> Result<()> {
        for id in &self.segments {
            segments::delete_segment(conn, *id)?;
        }
        let mut delete = conn.prepare_cached("DELETE FROM bulk_import_errors WHERE rowid = ?1")?;
        for rowid in &self.errors {
            delete.execute(params![rowid])?;
        }
        Ok(())
    }
}

/// Stages a batch's rows and the first `keep` of its rejected records, noting them in `written`.
fn stage_part(
    conn: &Connection,
    session_id: i64,
    batch: &DecodedPart,
    keep: usize,
    written: &mut PartWrites,
) -> Result<()> {
    written
        .segments
        .extend(stage_rows(conn, session_id, batch.staged())?);
    let mut errors =
        conn.prepare_cached("INSERT INTO bulk_import_errors (session_id, record) VALUES (?1, ?2)")?;
    for record in batch.errors.iter().take(keep) {
        errors.execute(params![session_id, record])?;
        written.errors.push(conn.last_insert_rowid());
    }
    Ok(())
}

/// Stages rows `(time, record JSON)` for a session's commit, in a segment of the session's;
/// returns the segment's id (none for no rows).
pub(crate) fn stage_rows<'r>(
    conn: &Connection,
    session_id: i64,
    rows: impl IntoIterator<Item = (i64, &'r str)>,
) -> Result<Option<i64>> {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return Ok(None);
    }
    let mut segment = Segment::create(conn, Owner::Session(session_id))?;
    segment.push_all(rows)?;
    Ok(Some(segment.finish()?))
}

/// Moves a session to `performing` (under `job_id`, if given) without doing the work: the state
/// tests need of a perform in flight.
pub(crate) fn force_performing(
    conn: &Connection,
    account_id: i64,
    name: &str,
    job_id: Option<i64>,
) -> Result<()> {
    let session = load(conn, account_id, name)?;
    conn.execute(
        "UPDATE bulk_imports SET status = ?1, job_id = COALESCE(?2, job_id), updated_at = ?3 WHERE id = ?4",
        params![SessionState::Performing, job_id, now(), session.id],
    )?;
    Ok(())
}

/// The rows a session keeps beside the table: its parts, staged rows and rejected records.
pub(crate) fn side_rows(conn: &Connection, session_id: i64) -> Result<i64> {
    let parts_and_errors: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM bulk_import_parts WHERE session_id = ?1) \
         + (SELECT COUNT(*) FROM bulk_import_errors WHERE session_id = ?1)",
        params![session_id],
        |r| r.get(0),
    )?;
    Ok(parts_and_errors + segments::session_rows(conn, session_id)?)
}

/// Gives the staged rows to the target table and extends its schema, all in the caller's
/// transaction: readers see every row of the commit or none. Only from `ready`. No row is
/// copied: the session's segments become the table's.
pub(crate) fn commit(conn: &Connection, account_id: i64, name: &str, lag: CountLag) -> Result<()> {
    let session = load(conn, account_id, name)?;
    session.require(&[SessionState::Ready], "commit")?;
    let table_id = catalog::table_id(conn, account_id, &session.database, &session.table)?;
    lag::hold(conn, table_id, lag)?;
    segments::give_to_table(conn, session.id, table_id)?;
    let mut schema = catalog::table_schema(conn, table_id)?;
    merge_columns(
        &mut schema,
        parse_table_schema(session.new_columns.as_deref().unwrap_or("[]"))?,
    );
    catalog::set_table_schema(conn, table_id, &schema)?;
    conn.execute(
        "UPDATE bulk_imports SET status = ?1, updated_at = ?2 WHERE id = ?3",
        params![SessionState::Committed, now(), session.id],
    )?;
    Ok(())
}

/// Deletes a session with its parts, staged rows and error records, in any state (a perform
/// still running notices and stops).
pub(crate) fn delete(conn: &Connection, account_id: i64, name: &str) -> Result<()> {
    let session = load(conn, account_id, name)?;
    clear_staging(conn, session.id)?;
    conn.execute(
        "DELETE FROM bulk_import_parts WHERE session_id = ?1",
        params![session.id],
    )?;
    conn.execute("DELETE FROM bulk_imports WHERE id = ?1", params![session.id])?;
    Ok(())
}

/// The rejected records of the last perform as one gzip'd msgpack stream; empty when none.
pub(crate) fn error_records(conn: &Connection, account_id: i64, name: &str) -> Result<Vec<u8>> {
    let session = load(conn, account_id, name)?;
    let mut stmt =
        conn.prepare("SELECT record FROM bulk_import_errors WHERE session_id = ?1 ORDER BY rowid")?;
    let mut rows = stmt.query(params![session.id])?;
    let mut gzip: Option<flate2::write::GzEncoder<Vec<u8>>> = None;
    while let Some(row) = rows.next()? {
        let record = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        gzip.get_or_insert_with(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()))
            .write_all(record)?;
    }
    Ok(match gzip {
        Some(gzip) => gzip.finish()?,
        None => Vec::new(),
    })
}

fn touch(conn: &Connection, session_id: i64) -> Result<()> {
    conn.execute(
        "UPDATE bulk_imports SET updated_at = ?1 WHERE id = ?2",
        params![now(), session_id],
    )?;
    Ok(())
}

/// At startup: a perform that was running when the server stopped died with it (its job is
/// marked failed by `jobs::recover`); its session stays `performing`, as TD leaves one whose
/// perform job died (see [`run_perform`]), and its staged rows are dropped.
pub(crate) fn recover(conn: &Connection) -> Result<()> {
    segments::delete_session_rows_except(
        conn,
        "SELECT id FROM bulk_imports WHERE status = ?1",
        SessionState::Ready,
    )?;
    conn.execute(
        "DELETE FROM bulk_import_errors WHERE session_id IN (SELECT id FROM bulk_imports WHERE status = ?1)",
        params![SessionState::Performing],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: i64, key: &str) -> Vec<u8> {
        let value = rmpv::Value::Map(vec![("time".into(), time.into()), (key.into(), 1.into())]);
        encode(&value)
    }

    /// A batch handed back to be filled again carries nothing of what it held (rows, rejected
    /// records, columns, shapes) but its buffers' room.
    #[test]
    fn an_emptied_batch_holds_nothing_of_the_last_but_its_room() {
        let mut batch = DecodedPart::default();
        for i in 0..100 {
            batch.accept(i, &record(i as i64, "a")).unwrap();
        }
        batch.accept(100, &encode(&rmpv::Value::from(7))).unwrap();
        assert_eq!(
            (batch.rows.len(), batch.errors.len(), batch.columns.len()),
            (100, 1, 1)
        );
        let room = batch.text.capacity();

        let mut again = batch.emptied();
        assert!(again.text.is_empty() && again.rows.is_empty() && again.errors.is_empty());
        assert_eq!((again.columns.len(), again.bytes), (0, 0));
        assert_eq!(again.text.capacity(), room);
        // The shape seen before is looked at afresh: its columns are reported again.
        again.accept(0, &record(5, "a")).unwrap();
        assert_eq!(again.columns.len(), 1);
        assert_eq!(
            again.staged().collect::<Vec<_>>(),
            vec![(5, r#"{"a":1,"time":5}"#)]
        );
    }
}
