//! Running a job's SQL on SQLite: TD's UDFs, views over stored rows, and the result schema.
//!
//! A query runs on its own connection whose `main` is an empty in-memory database. Each TD table
//! the query names becomes a TEMP VIEW (`time` + one column per schema column) over a virtual
//! table of that table's rows (`rows`), which reads the store through a connection of its own.
//! The store is also attached read-only as `td_store`, where an authorizer refuses every read,
//! so a query sees the tables of its own account and nothing of td-local's bookkeeping
//! (`SELECT * FROM jobs` is "no such table", `td_store.jobs` is refused), and only read-only
//! statements run.
//!
//! The whole query (catalog lookup, views, every row) runs in one read transaction, so it reads
//! one committed state of the store.
//!
//! Results stream to a gzip'd msgpack file (one array per row) through a temp file and a rename,
//! while the Presto type of each column is inferred from the values seen.

mod rows;
mod sql;
pub(crate) mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, InterruptHandle, OpenFlags};

use td_model::schema::{parse_table_schema, TableColumn};

use crate::catalog::{column_key, column_name};
use crate::jobs::Outcome;
use crate::records::ColumnRead;
use crate::store::Store;

pub(crate) use sql::is_plain_identifier;

/// Schema name of the attached store inside a query connection.
const STORE_SCHEMA: &str = "td_store";

/// Why a query failed. The message is what the job shows in `debug.stderr`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("no such table: {0}")]
    NoSuchTable(String),
    #[error("only read-only statements (SELECT, WITH … SELECT) can run as a query")]
    NotReadOnly,
    #[error("query is empty")]
    Empty,
    #[error("writing the result: {0}")]
    Io(#[from] std::io::Error),
}

/// A TD table as the SQL sees it.
#[derive(Debug, Clone)]
struct TdTable {
    id: i64,
    columns: Vec<TableColumn>,
}

/// The tables of one account, by `(database, table)`.
type Catalog = BTreeMap<(String, String), TdTable>;

/// The views a query may read, by name, with the tables they show.
type Views = BTreeMap<String, TdTable>;

/// A SQLite connection prepared to run one account's queries against one database.
pub(crate) struct Engine {
    conn: Connection,
    rows: Rc<rows::RowSource>,
    catalog: Catalog,
    database: String,
    /// Set while [`Engine::declared_types`] runs (its temp table is allowed then).
    probing: Arc<AtomicBool>,
}

impl Engine {
    /// Opens a query connection on the store for `account_id`, database `database`;
    /// `TD_SCHEDULED_TIME()` returns `scheduled_time` (Unix seconds).
    pub(crate) fn open(
        store: &Store,
        account_id: i64,
        database: &str,
        scheduled_time: i64,
    ) -> Result<Engine, QueryError> {
        let conn = Connection::open_with_flags(
            ":memory:",
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Temporary B-trees (ORDER BY, GROUP BY, DISTINCT over many rows) go to files, not memory.
        conn.pragma_update(None, "temp_store", "FILE")?;
        time::register(&conn, scheduled_time)?;
        // Attached only so that naming the store's own tables is refused by the authorizer
        // ("no such table"); rows are read through `rows`.
        conn.execute(
            &format!("ATTACH DATABASE ?1 AS {STORE_SCHEMA}"),
            params![store_uri(store.path())],
        )?;
        let store_conn = Connection::open_with_flags(
            store_uri(store.path()),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        store_conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // One read transaction from the catalog lookup to the last row: the store's snapshot
        // starts with the first read and holds until the engine is dropped, so a table renamed
        // over or replaced meanwhile is seen whole before or whole after, never emptied.
        store_conn.execute_batch("BEGIN DEFERRED")?;
        let catalog = load_catalog(&store_conn, account_id)?;
        let rows = Rc::new(rows::RowSource::new(store_conn));
        rows::RowSource::register(&rows, &conn)?;
        Ok(Engine {
            conn,
            rows,
            catalog,
            database: database.to_string(),
            probing: Arc::default(),
        })
    }

    /// Lets another thread stop a running query (a killed job).
    pub(crate) fn interrupt_handle(&self) -> InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    /// Runs `query` (once: an engine serves one job) and streams its rows to `result_path`.
    ///
    /// Each result column's Presto type is, in this order: what SQLite's affinity of its
    /// expression says (a column or a `CAST`, through subqueries: see [`Engine::declared_types`]),
    /// else what its values were, else what its text says (a literal, a `CAST`, `COUNT` and TD's
    /// time functions: `sql::column_hints`), else the type of the TD column it is named after,
    /// else `varchar`. So a result with no rows, or only NULLs, is typed from the query as TD
    /// types it, not taken for varchar.
    pub(crate) fn run(self, query: &str, result_path: &Path) -> Result<Outcome, QueryError> {
        let (mut stmt, sql, views) = self.prepare(query)?;
        let sqlite_names = stmt.column_names();
        let names = presto_column_names(&sqlite_names);
        let declared = self.declared_types(&sql, names.len());
        let hints = sql::column_hints(&sql);
        let by_name: Vec<Option<String>> = sqlite_names
            .iter()
            .map(|name| self.view_column_type(&views, name))
            .collect();
        let mut types: Vec<ColumnType> = by_name
            .iter()
            .map(|ty| ColumnType {
                composite: ty.as_deref().is_some_and(is_composite),
                ..ColumnType::default()
            })
            .collect();
        let mut writer = ResultWriter::create(result_path)?;
        let count = match stream_rows(&mut stmt, &mut writer, &mut types) {
            Ok(count) => count,
            Err(e) => {
                writer.discard();
                return Err(e);
            }
        };
        let result_size = writer.finish(result_path)?;
        let schema: Vec<[&str; 2]> = names
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(i, (n, seen))| {
                let composite = by_name[i].as_deref().filter(|_| seen.composite && !seen.text);
                let presto = composite
                    .or(declared[i])
                    .or_else(|| seen.presto_name())
                    .or_else(|| hints.get(i).copied().flatten())
                    .or(by_name[i].as_deref())
                    .unwrap_or("varchar");
                [n.as_str(), presto]
            })
            .collect();
        Ok(Outcome {
            num_records: count,
            result_size,
            hive_result_schema: Some(serde_json::to_string(&schema).expect("strings serialize")),
            cmdout: format!("td-local: query ran on SQLite, {count} rows, {result_size} bytes of result\n"),
        })
    }

    /// Makes the views `query` needs and compiles it under the read-only authorizer; returns the
    /// statement, the SQL it was compiled from and the views it may read.
    fn prepare(&self, query: &str) -> Result<(rusqlite::Statement<'_>, String, Views), QueryError> {
        let query = query.trim().trim_end_matches(';').trim_end();
        if query.is_empty() {
            return Err(QueryError::Empty);
        }
        let resolved = sql::resolve(query, |db, table| {
            self.catalog.contains_key(&(db.to_string(), table.to_string()))
        });
        let views = self.create_views(&resolved)?;
        let refused = Arc::new(Mutex::new(None));
        let refused_in_hook = refused.clone();
        let probing = self.probing.clone();
        self.conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let verdict = authorize(&ctx, probing.load(Ordering::SeqCst));
            if let (Authorization::Deny, AuthAction::Read { table_name, .. }) = (verdict, ctx.action) {
                *refused_in_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(table_name.to_string());
            }
            verdict
        }));
        let stmt = self.conn.prepare(&resolved.sql).map_err(|e| {
            // The store's own tables are found by SQLite's name lookup but are not the user's.
            match refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(table) => QueryError::NoSuchTable(table),
                None => QueryError::Sql(e),
            }
        })?;
        if stmt.readonly() {
            Ok((stmt, resolved.sql, views))
        } else {
            Err(QueryError::NotReadOnly)
        }
    }

    /// The Presto type SQLite's affinity gives each of the `columns` result columns of `sql`
    /// (INTEGER → bigint, REAL → double, TEXT → varchar; none for the rest). SQLite tells it only
    /// through `CREATE TABLE … AS SELECT`, whose declared column types follow the expressions'
    /// affinity: a column (`time` is INTEGER), a `CAST`, either seen through subqueries and CTEs.
    /// The table is made with `LIMIT 0` in the query's own snapshot and dropped at once; if
    /// anything goes wrong, no column gets a type from here.
    fn declared_types(&self, sql: &str, columns: usize) -> Vec<Option<&'static str>> {
        self.probing.store(true, Ordering::SeqCst);
        let declared = self.probe(sql).unwrap_or_default();
        let _ = self
            .conn
            .execute_batch(&format!("DROP TABLE IF EXISTS temp.{PROBE_TABLE}"));
        self.probing.store(false, Ordering::SeqCst);
        if declared.len() == columns {
            declared
        } else {
            vec![None; columns]
        }
    }

    fn probe(&self, sql: &str) -> rusqlite::Result<Vec<Option<&'static str>>> {
        self.conn.execute_batch(&format!(
            "CREATE TEMP TABLE {PROBE_TABLE} AS SELECT * FROM ({sql}\n) LIMIT 0"
        ))?;
        let stmt = self.conn.prepare(&format!("SELECT * FROM temp.{PROBE_TABLE}"))?;
        let declared = stmt
            .columns()
            .iter()
            .map(|c| match c.decl_type() {
                Some("INT") => Some("bigint"),
                Some("REAL") => Some("double"),
                Some("TEXT") => Some("varchar"),
                _ => None,
            })
            .collect();
        Ok(declared)
    }

    /// The Presto type of the TD column `name` of the views the query reads (`time` is bigint),
    /// when every one of them that has it agrees.
    fn view_column_type(&self, views: &Views, name: &str) -> Option<String> {
        let name = name.to_lowercase();
        let mut found = None;
        for table in views.values() {
            let ty = if name == "time" {
                Some("bigint".to_string())
            } else {
                table
                    .columns
                    .iter()
                    .find(|c| column_name(c).eq_ignore_ascii_case(&name))
                    .map(|c| presto_of_td_type(&c.td_type))
            };
            match (&found, ty) {
                (_, None) => {}
                (None, Some(t)) => found = Some(t),
                (Some(f), Some(t)) if *f == t => {}
                _ => return None,
            }
        }
        found
    }

    /// Creates the views the query may read; returns them with their tables.
    fn create_views(&self, resolved: &sql::Resolved) -> Result<Views, QueryError> {
        let mut views = Views::new();
        for name in &resolved.identifiers {
            if let Some(table) = self.catalog.get(&(self.database.clone(), name.clone())) {
                self.create_view(name, table)?;
                views.insert(name.clone(), table.clone());
            }
        }
        for (db, name) in &resolved.qualified {
            let view = sql::qualified_view_name(db, name);
            let table = &self.catalog[&(db.clone(), name.clone())];
            self.create_view(&view, table)?;
            views.insert(view, table.clone());
        }
        Ok(views)
    }

    /// Makes view `view` of `table`: `time`, then its columns under their SQL names (a column
    /// whose name repeats one before it, ignoring case, is left out), read by the table's
    /// virtual table (`rows`), which is made once whatever the views of it. A column is named
    /// by its alias and reads the values stored under its key (`catalog::column_key`), as its
    /// TD type reads them (`records::ColumnRead`).
    fn create_view(&self, view: &str, table: &TdTable) -> Result<(), QueryError> {
        let rows_table = format!("td_local_rows_{}", table.id);
        let mut keys = Vec::new();
        let mut select = vec!["time AS time".to_string()];
        let mut seen = BTreeSet::from(["time".to_string()]);
        for column in &table.columns {
            let sql_name = column_name(column);
            if !seen.insert(sql_name.to_lowercase()) {
                continue;
            }
            select.push(format!("c{} AS {}", keys.len(), sql::quote_ident(sql_name)));
            keys.push((column_key(column).to_string(), ColumnRead::of(&column.td_type)));
        }
        let exists: bool = self.conn.query_row(
            "SELECT COUNT(*) > 0 FROM temp.sqlite_master WHERE name = ?1",
            params![rows_table],
            |r| r.get(0),
        )?;
        if !exists {
            self.conn
                .execute_batch(&self.rows.create_sql(&rows_table, table.id, keys))?;
        }
        self.conn.execute_batch(&format!(
            "CREATE TEMP VIEW {} AS SELECT {} FROM temp.{rows_table}",
            sql::quote_ident(view),
            select.join(", "),
        ))?;
        Ok(())
    }
}

/// Writes every row of `stmt` and notes the types seen; returns the row count.
fn stream_rows(
    stmt: &mut rusqlite::Statement<'_>,
    writer: &mut ResultWriter,
    types: &mut [ColumnType],
) -> Result<i64, QueryError> {
    let mut rows = stmt.query([])?;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        writer.start_row(types.len())?;
        for (i, ty) in types.iter_mut().enumerate() {
            let value = row.get_ref(i)?;
            match composite_value(ty, &value) {
                Some(parsed) => writer.composite(&parsed)?,
                None => {
                    ty.observe(&value);
                    writer.value(value)?;
                }
            }
        }
        count += 1;
    }
    Ok(count)
}

/// The array or map a text value of a composite column stands for (its JSON text, as the rows'
/// virtual table reads an array or map column).
fn composite_value(ty: &ColumnType, value: &ValueRef<'_>) -> Option<serde_json::Value> {
    match value {
        ValueRef::Text(text) if ty.composite => serde_json::from_slice::<serde_json::Value>(text)
            .ok()
            .filter(|v| v.is_array() || v.is_object()),
        _ => None,
    }
}

/// `file:` URI opening the store read-only (the query connection never writes it).
fn store_uri(path: &Path) -> String {
    let text = path.to_string_lossy();
    let encoded = percent_encoding::utf8_percent_encode(&text, PATH_ESCAPES);
    format!("file:{encoded}?mode=ro")
}

const PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'?')
    .add(b'#')
    .add(b'%')
    .add(b'"');

fn load_catalog(conn: &Connection, account_id: i64) -> Result<Catalog, QueryError> {
    let mut stmt = conn.prepare(
        "SELECT d.name, t.name, t.id, t.schema FROM tables t \
         JOIN databases d ON t.database_id = d.id WHERE d.account_id = ?1",
    )?;
    let rows = stmt.query_map(params![account_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut catalog = Catalog::new();
    for row in rows {
        let (db, table, id, schema) = row?;
        // A schema that no longer parses still leaves `time` readable.
        let columns = parse_table_schema(&schema).unwrap_or_default();
        catalog.insert((db, table), TdTable { id, columns });
    }
    Ok(catalog)
}

/// The statement may read its views (the store's attached tables not at all), and do nothing but
/// read; while `probing`, it may also make and drop the temp table of [`Engine::declared_types`].
fn authorize(ctx: &AuthContext<'_>, probing: bool) -> Authorization {
    let in_temp = ctx.database_name == Some("temp");
    match ctx.action {
        AuthAction::CreateTempTable { table_name } | AuthAction::DropTempTable { table_name }
            if probing && table_name == PROBE_TABLE =>
        {
            Authorization::Allow
        }
        AuthAction::Insert { .. } | AuthAction::Delete { .. } | AuthAction::Update { .. }
            if probing && in_temp =>
        {
            Authorization::Allow
        }
        AuthAction::Select | AuthAction::Function { .. } | AuthAction::Recursive => Authorization::Allow,
        // The store's own tables: only the rows' virtual tables read the store, on their own
        // connection.
        AuthAction::Read { .. } if ctx.database_name == Some(STORE_SCHEMA) => Authorization::Deny,
        AuthAction::Read { .. } => Authorization::Allow,
        _ => Authorization::Deny,
    }
}

/// The table a query's probe of declared types is made in (temp, dropped at once).
const PROBE_TABLE: &str = "td_local_declared_types";

/// The Presto type a TD column type reads as: `array<T>` as `array(T')` and `map<K,V>` as
/// `map(K',V')`, as Presto names them (https://prestodb.io/docs/current/language/types.html).
fn presto_of_td_type(td_type: &str) -> String {
    let ty = td_type.trim();
    let inner = |prefix: &str| ty.strip_prefix(prefix).and_then(|t| t.strip_suffix('>'));
    if let Some(item) = inner("array<") {
        return format!("array({})", presto_of_td_type(item));
    }
    if let Some((key, value)) = inner("map<").and_then(split_top_level) {
        return format!("map({},{})", presto_of_td_type(key), presto_of_td_type(value));
    }
    match ty {
        "long" | "int" => "bigint",
        "double" | "float" => "double",
        _ => "varchar",
    }
    .to_string()
}

/// Splits `K,V` at its first comma outside brackets.
fn split_top_level(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Whether a Presto type is an array or a map: SQLite has neither, so such a column's rows
/// carry the value's JSON text, which the result writes back as a msgpack array or map.
fn is_composite(presto: &str) -> bool {
    presto.starts_with("array(") || presto.starts_with("map(")
}

/// Presto names unnamed expressions `_col<position>`; SQLite names them after their text.
fn presto_column_names(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if is_plain_identifier(name) {
                name.to_lowercase()
            } else {
                format!("_col{i}")
            }
        })
        .collect()
}

/// What the values of one result column have been so far.
#[derive(Debug, Clone, Copy, Default)]
struct ColumnType {
    /// The column is named after an array or map column of the tables read: its JSON text
    /// values are written as the arrays and maps they are.
    composite: bool,
    integer: bool,
    real: bool,
    text: bool,
    blob: bool,
}

impl ColumnType {
    fn observe(&mut self, value: &ValueRef<'_>) {
        match value {
            ValueRef::Null => {}
            ValueRef::Integer(_) => self.integer = true,
            ValueRef::Real(_) => self.real = true,
            ValueRef::Text(_) => self.text = true,
            ValueRef::Blob(_) => self.blob = true,
        }
    }

    /// Mixed columns take the widest type; a column of only NULLs has none.
    fn presto_name(&self) -> Option<&'static str> {
        if self.text {
            Some("varchar")
        } else if self.blob {
            Some("varbinary")
        } else if self.real {
            Some("double")
        } else if self.integer {
            Some("bigint")
        } else {
            None
        }
    }
}

/// Streams msgpack arrays into `<result>.tmp`, renamed over the result when complete. Rows are
/// encoded on the query's thread and deflated on another, so the two run at once.
struct ResultWriter {
    /// Rows are encoded here and deflated in large pieces: one deflate call per tiny value
    /// write costs several times the compression itself.
    rows: Vec<u8>,
    chunks: Option<SyncSender<Vec<u8>>>,
    deflater: Option<JoinHandle<std::io::Result<BufWriter<File>>>>,
    tmp: PathBuf,
}

/// Encoded rows gathered before they are deflated.
const DEFLATE_CHUNK: usize = 1 << 17;

impl ResultWriter {
    fn create(path: &Path) -> std::io::Result<ResultWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("gz.tmp");
        let file = File::create(&tmp)?;
        // Two chunks in flight at most: memory stays at a few hundred KiB.
        let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let deflater = std::thread::Builder::new()
            .name("td-local-result".into())
            .spawn(move || {
                // Level 1, as the clients' parts are: a result is read once, so speed beats size.
                let mut gz = GzEncoder::new(
                    BufWriter::with_capacity(1 << 16, file),
                    flate2::Compression::fast(),
                );
                for chunk in received {
                    gz.write_all(&chunk)?;
                }
                gz.finish()
            })?;
        Ok(ResultWriter {
            rows: Vec::with_capacity(DEFLATE_CHUNK + (DEFLATE_CHUNK >> 2)),
            chunks: Some(chunks),
            deflater: Some(deflater),
            tmp,
        })
    }

    /// Hands the encoded rows to the deflating thread.
    fn send_rows(&mut self) -> std::io::Result<()> {
        let rows = std::mem::replace(
            &mut self.rows,
            Vec::with_capacity(DEFLATE_CHUNK + (DEFLATE_CHUNK >> 2)),
        );
        let sent = self.chunks.as_ref().is_some_and(|c| c.send(rows).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped on an error: it says which.
            self.join().and(Err(std::io::Error::other(
                "the result's deflating thread stopped",
            )))
        }
    }

    /// Waits for the deflating thread (its input closed) and takes back the file.
    fn join(&mut self) -> std::io::Result<BufWriter<File>> {
        self.chunks = None;
        match self.deflater.take().map(JoinHandle::join) {
            Some(Ok(written)) => written,
            Some(Err(_)) => Err(std::io::Error::other("the result's deflating thread panicked")),
            None => Err(std::io::Error::other("the result was already finished")),
        }
    }

    fn start_row(&mut self, len: usize) -> std::io::Result<()> {
        let len = u32::try_from(len).map_err(std::io::Error::other)?;
        if self.rows.len() >= DEFLATE_CHUNK {
            self.send_rows()?;
        }
        rmp::encode::write_array_len(&mut self.rows, len)?;
        Ok(())
    }

    fn value(&mut self, value: ValueRef<'_>) -> std::io::Result<()> {
        let w = &mut self.rows;
        match value {
            ValueRef::Null => rmp::encode::write_nil(w)?,
            ValueRef::Integer(i) => {
                rmp::encode::write_sint(w, i)?;
            }
            ValueRef::Real(f) => rmp::encode::write_f64(w, f)?,
            // SQLite's text need not be UTF-8 (`CAST(x'ff' AS TEXT)`); msgpack's must be.
            ValueRef::Text(bytes) if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() => {
                rmp::encode::write_str_len(w, u32::try_from(bytes.len()).map_err(std::io::Error::other)?)?;
                w.extend_from_slice(bytes);
            }
            ValueRef::Text(bytes) => rmp::encode::write_str(w, &String::from_utf8_lossy(bytes))?,
            ValueRef::Blob(bytes) => rmp::encode::write_bin(w, bytes)?,
        }
        Ok(())
    }

    /// An array or map, from its stored JSON (bytes as bytes).
    fn composite(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        rmpv::encode::write_value(&mut self.rows, &crate::records::json_to_msgpack(value))
            .map_err(std::io::Error::other)
    }

    /// Completes the gzip stream, moves it over `path` and returns its exact size.
    fn finish(mut self, path: &Path) -> std::io::Result<i64> {
        self.send_rows()?;
        let file = self.join()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, path)?;
        Ok(std::fs::metadata(path)?.len() as i64)
    }

    /// Drops a result that will not be completed.
    fn discard(mut self) {
        let _ = self.join();
        let _ = std::fs::remove_file(&self.tmp);
    }
}
