//! Databases and tables of each account (docs/td-api.md §3): names, settings, schemas, and the calls
//! that change them. A table's rows are found through its id (`segments`), so a swap or a rename is a
//! catalog update inside one write transaction, and readers see it all or nothing.

use rusqlite::{params, Connection, OptionalExtension};
use td_model::name::check_name;
use td_model::schema::{parse_table_schema, table_schema_json, TableColumn};

use crate::error::{Error, Result};
use crate::lag::{self, CountLag};
use crate::records::read_by_schema;
use crate::segments;
use crate::store::now;

/// The only table type TD still creates.
pub(crate) const LOG_TYPE: &str = "log";
/// The most rows one `tail` returns.
pub(crate) const MAX_TAIL_COUNT: i64 = 10_000;

/// A database as `database/list` and `database/show` answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Database {
    pub id: i64,
    pub name: String,
    /// Rows in all its tables.
    pub count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const DATABASE_COLUMNS: &str = "d.id, d.name, d.created_at, d.updated_at, \
    (SELECT COALESCE(SUM(s.rows), 0) FROM segments s JOIN tables t ON s.table_id = t.id WHERE t.database_id = d.id)";

fn database_row(row: &rusqlite::Row) -> rusqlite::Result<Database> {
    Ok(Database {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        updated_at: row.get(3)?,
        count: row.get(4)?,
    })
}

/// The id of an account's database, if it exists.
pub(crate) fn find_database(conn: &Connection, account_id: i64, db: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM databases WHERE account_id = ?1 AND name = ?2",
            params![account_id, db],
            |r| r.get(0),
        )
        .optional()?)
}

/// The id of an account's database, or NotFound.
pub(crate) fn database_id(conn: &Connection, account_id: i64, db: &str) -> Result<i64> {
    find_database(conn, account_id, db)?
        .ok_or_else(|| Error::not_found(format!("database '{db}' does not exist")))
}

/// A table's id, or None if the table does not exist (the database must).
fn find_table(conn: &Connection, account_id: i64, db: &str, table: &str) -> Result<Option<i64>> {
    let db_id = database_id(conn, account_id, db)?;
    Ok(conn
        .query_row(
            "SELECT id FROM tables WHERE database_id = ?1 AND name = ?2",
            params![db_id, table],
            |r| r.get(0),
        )
        .optional()?)
}

/// The id of a table, or NotFound naming whichever of database or table is missing.
pub(crate) fn table_id(conn: &Connection, account_id: i64, db: &str, table: &str) -> Result<i64> {
    find_table(conn, account_id, db, table)?
        .ok_or_else(|| Error::not_found(format!("table '{db}.{table}' does not exist")))
}

/// Whether `db.table` exists (false when the database does not).
pub(crate) fn table_exists(conn: &Connection, account_id: i64, db: &str, table: &str) -> Result<bool> {
    if find_database(conn, account_id, db)?.is_none() {
        return Ok(false);
    }
    Ok(find_table(conn, account_id, db, table)?.is_some())
}

/// Creates a database if it does not exist; returns its id.
pub(crate) fn ensure_database(conn: &Connection, account_id: i64, db: &str) -> Result<i64> {
    insert_database(conn, account_id, db)?;
    database_id(conn, account_id, db)
}

/// Whether a new database was made (false: it existed).
fn insert_database(conn: &Connection, account_id: i64, db: &str) -> Result<bool> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO databases (account_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![account_id, db, now()],
    )?;
    Ok(inserted == 1)
}

/// Creates a table if it does not exist (the database must exist); returns its id.
pub(crate) fn ensure_table(conn: &Connection, account_id: i64, db: &str, table: &str) -> Result<i64> {
    insert_table(conn, account_id, db, table)?;
    table_id(conn, account_id, db, table)
}

/// Whether a new table was made (false: it existed). NotFound if the database does not exist.
fn insert_table(conn: &Connection, account_id: i64, db: &str, table: &str) -> Result<bool> {
    let db_id = database_id(conn, account_id, db)?;
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO tables (database_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![db_id, table, now()],
    )?;
    Ok(inserted == 1)
}

/// The account's databases, by name.
pub(crate) fn list_databases(conn: &Connection, account_id: i64) -> Result<Vec<Database>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {DATABASE_COLUMNS} FROM databases d WHERE d.account_id = ?1 ORDER BY d.name"
    ))?;
    let rows = stmt.query_map(params![account_id], database_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn show_database(conn: &Connection, account_id: i64, db: &str) -> Result<Database> {
    let id = database_id(conn, account_id, db)?;
    Ok(conn.query_row(
        &format!("SELECT {DATABASE_COLUMNS} FROM databases d WHERE d.id = ?1"),
        params![id],
        database_row,
    )?)
}

/// Creates a database: Invalid for a bad name, Conflict if it exists.
pub(crate) fn create_database(conn: &Connection, account_id: i64, db: &str) -> Result<()> {
    check_name("database", db)?;
    if !insert_database(conn, account_id, db)? {
        return Err(Error::conflict(format!("database '{db}' already exists")));
    }
    Ok(())
}

/// Deletes a database with its tables, their rows and import ids.
pub(crate) fn delete_database(conn: &Connection, account_id: i64, db: &str) -> Result<()> {
    let id = database_id(conn, account_id, db)?;
    segments::delete_table_rows(conn, "SELECT id FROM tables WHERE database_id = ?1", id)?;
    conn.execute(
        "DELETE FROM import_ids WHERE table_id IN (SELECT id FROM tables WHERE database_id = ?1)",
        params![id],
    )?;
    conn.execute("DELETE FROM tables WHERE database_id = ?1", params![id])?;
    conn.execute("DELETE FROM databases WHERE id = ?1", params![id])?;
    Ok(())
}

/// A table as `table/list` and `table/show` answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub id: i64,
    pub name: String,
    /// The schema JSON text, as stored and as TD sends it.
    pub schema: String,
    pub description: Option<String>,
    pub expire_days: Option<i64>,
    pub include_v: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub count: i64,
    /// Bytes of the rows' JSON text.
    pub estimated_storage_size: i64,
    /// The newest row's `time`.
    pub last_log_time: Option<i64>,
}

const TABLE_COLUMNS: &str = "t.id, t.name, t.schema, t.description, t.expire_days, t.include_v, \
    t.created_at, t.updated_at, \
    (SELECT COALESCE(SUM(s.rows), 0) FROM segments s WHERE s.table_id = t.id), \
    (SELECT COALESCE(SUM(s.bytes), 0) FROM segments s WHERE s.table_id = t.id), \
    (SELECT MAX(s.max_time) FROM segments s WHERE s.table_id = t.id), t.lag_count, t.lag_until";

fn table_row(row: &rusqlite::Row) -> rusqlite::Result<Table> {
    Ok(Table {
        id: row.get(0)?,
        name: row.get(1)?,
        schema: row.get(2)?,
        description: row.get(3)?,
        expire_days: row.get(4)?,
        include_v: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        // TD's counts lag changes of the rows (`crate::lag`).
        count: crate::lag::shown(row.get(8)?, row.get(11)?, row.get(12)?),
        estimated_storage_size: row.get(9)?,
        last_log_time: row.get(10)?,
    })
}

/// The tables of a database, by name.
pub(crate) fn list_tables(conn: &Connection, account_id: i64, db: &str) -> Result<Vec<Table>> {
    let db_id = database_id(conn, account_id, db)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {TABLE_COLUMNS} FROM tables t WHERE t.database_id = ?1 ORDER BY t.name"
    ))?;
    let rows = stmt.query_map(params![db_id], table_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn show_table(conn: &Connection, account_id: i64, db: &str, table: &str) -> Result<Table> {
    let id = table_id(conn, account_id, db, table)?;
    Ok(conn.query_row(
        &format!("SELECT {TABLE_COLUMNS} FROM tables t WHERE t.id = ?1"),
        params![id],
        table_row,
    )?)
}

/// Creates a `log` table: Invalid for another type or a bad name, NotFound without the
/// database, Conflict if it exists.
/// What `table/create` may set besides the name (TD's API description, createTable).
#[derive(Debug, Clone, Default)]
pub(crate) struct NewTable {
    pub schema: Option<Vec<TableColumn>>,
    pub settings: TableSettings,
    /// Makes the call repeatable: a create of an existing table made with the same key answers
    /// as the first did (td-client-java's live test `createTableWithIdempotentKey` creates twice
    /// and expects no error; without a key the second create fails).
    pub idempotent_key: Option<String>,
}

pub(crate) fn create_table(
    conn: &Connection,
    account_id: i64,
    db: &str,
    table: &str,
    kind: &str,
    new: &NewTable,
) -> Result<()> {
    if kind != LOG_TYPE {
        return Err(Error::invalid(format!(
            "table type '{kind}' is not supported: only 'log' tables exist"
        )));
    }
    check_name("table", table)?;
    new.settings.check_values()?;
    if !insert_table(conn, account_id, db, table)? {
        let id = table_id(conn, account_id, db, table)?;
        let made_with: Option<String> = conn.query_row(
            "SELECT idempotent_key FROM tables WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        return match (&new.idempotent_key, made_with) {
            (Some(key), Some(first)) if *key == first => Ok(()),
            _ => Err(table_exists_error(db, table)),
        };
    }
    let id = table_id(conn, account_id, db, table)?;
    conn.execute(
        "UPDATE tables SET idempotent_key = ?1 WHERE id = ?2",
        params![new.idempotent_key, id],
    )?;
    new.settings.apply(conn, id)?;
    if let Some(columns) = &new.schema {
        set_table_schema(conn, id, columns)?;
    }
    Ok(())
}

/// The Conflict a create of an existing table answers.
pub(crate) fn table_exists_error(db: &str, table: &str) -> Error {
    Error::conflict(format!("table '{db}.{table}' already exists"))
}

/// Removes a table with its rows and import ids.
fn drop_table(conn: &Connection, id: i64) -> Result<()> {
    segments::delete_table_rows(conn, "?1", id)?;
    conn.execute("DELETE FROM import_ids WHERE table_id = ?1", params![id])?;
    conn.execute("DELETE FROM tables WHERE id = ?1", params![id])?;
    Ok(())
}

pub(crate) fn delete_table(conn: &Connection, account_id: i64, db: &str, table: &str) -> Result<()> {
    drop_table(conn, table_id(conn, account_id, db, table)?)
}

fn set_table_name(conn: &Connection, id: i64, name: &str) -> Result<()> {
    conn.execute(
        "UPDATE tables SET name = ?1, updated_at = ?2 WHERE id = ?3",
        params![name, now(), id],
    )?;
    Ok(())
}

/// Exchanges two tables' names, so each name now holds the other's rows and schema. Not
/// idempotent: a retried swap swaps back (docs/td-api.md §3).
pub(crate) fn swap_tables(
    conn: &Connection,
    account_id: i64,
    db: &str,
    first: &str,
    second: &str,
    lag: CountLag,
) -> Result<()> {
    if first == second {
        return Err(Error::invalid(format!(
            "cannot swap table '{db}.{first}' with itself"
        )));
    }
    let first_id = table_id(conn, account_id, db, first)?;
    let second_id = table_id(conn, account_id, db, second)?;
    // Names are unique per database, so one table steps aside under a name no valid table can
    // have ('-' fails check_name) while the other takes its place.
    // Each name keeps showing its old count for the lag.
    let (first_count, second_count) = (
        lag::shown_count(conn, first_id)?,
        lag::shown_count(conn, second_id)?,
    );
    lag::show_as(conn, second_id, first_count, lag)?;
    lag::show_as(conn, first_id, second_count, lag)?;
    set_table_name(conn, first_id, &format!("{first}-swapping"))?;
    set_table_name(conn, second_id, first)?;
    set_table_name(conn, first_id, second)
}

/// Renames a table; with `overwrite` an existing target is dropped in the same transaction, so
/// readers of the target see its old rows or the new ones, never neither.
pub(crate) fn rename_table(
    conn: &Connection,
    account_id: i64,
    db: &str,
    from: &str,
    to: &str,
    overwrite: bool,
    lag: CountLag,
) -> Result<()> {
    check_name("table", to)?;
    if from == to {
        return Err(Error::invalid(format!(
            "cannot rename table '{db}.{from}' to its own name"
        )));
    }
    let source = table_id(conn, account_id, db, from)?;
    if let Some(target) = find_table(conn, account_id, db, to)? {
        if !overwrite {
            return Err(Error::conflict(format!(
                "table '{db}.{to}' already exists; pass overwrite=true to replace it"
            )));
        }
        // The name keeps showing the count it had for the lag.
        lag::show_as(conn, source, lag::shown_count(conn, target)?, lag)?;
        drop_table(conn, target)?;
    }
    set_table_name(conn, source, to)
}

/// The table settings `update` can change; absent ones stay as they are.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableSettings {
    pub expire_days: Option<i64>,
    pub include_v: Option<bool>,
    pub description: Option<String>,
}

impl TableSettings {
    /// `expire_days` 0 is "expiration disabled" (the toolbelt's `td table:expire DB TABLE 0`: "Set
    /// to 0 to disable the expiration", treasure-data/td `lib/td/command/list.rb`); below 0 is
    /// refused.
    fn check_values(&self) -> Result<()> {
        if let Some(days) = self.expire_days.filter(|d| *d < 0) {
            return Err(Error::invalid(format!(
                "expire_days must be a number of days (0: never expire), got {days}"
            )));
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.expire_days.is_none() && self.include_v.is_none() && self.description.is_none()
    }

    /// Sets what is given; the rest stays.
    fn apply(&self, conn: &Connection, id: i64) -> Result<()> {
        conn.execute(
            "UPDATE tables SET \
             expire_days = CASE WHEN ?1 IS NULL THEN expire_days WHEN ?1 = 0 THEN NULL ELSE ?1 END, \
             include_v = COALESCE(?2, include_v), description = COALESCE(?3, description), \
             updated_at = ?4 WHERE id = ?5",
            params![self.expire_days, self.include_v, self.description, now(), id],
        )?;
        Ok(())
    }
}

/// `table/update`: the settings given, and with `detect_schema` the columns of the table's rows
/// added to its schema. Nothing at all to do is refused.
pub(crate) fn update_table(
    conn: &Connection,
    account_id: i64,
    db: &str,
    table: &str,
    settings: &TableSettings,
    detect_schema: bool,
) -> Result<()> {
    settings.check_values()?;
    if settings.is_empty() && !detect_schema {
        return Err(Error::bad_request(
            "nothing to update: give expire_days, include_v, description or detect_schema",
        ));
    }
    let id = table_id(conn, account_id, db, table)?;
    settings.apply(conn, id)?;
    if detect_schema {
        crate::records::detect_schema(conn, id)?;
    }
    Ok(())
}

/// A table's schema JSON text, as stored.
pub(crate) fn stored_schema(conn: &Connection, table_id: i64) -> Result<String> {
    conn.query_row(
        "SELECT schema FROM tables WHERE id = ?1",
        params![table_id],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| Error::not_found("table does not exist"))
}

/// A table's schema.
pub(crate) fn table_schema(conn: &Connection, table_id: i64) -> Result<Vec<TableColumn>> {
    Ok(parse_table_schema(&stored_schema(conn, table_id)?)?)
}

/// Stores a table's schema.
pub(crate) fn set_table_schema(conn: &Connection, table_id: i64, columns: &[TableColumn]) -> Result<()> {
    conn.execute(
        "UPDATE tables SET schema = ?1, updated_at = ?2 WHERE id = ?3",
        params![table_schema_json(columns), now(), table_id],
    )?;
    Ok(())
}

/// The record key a schema column reads: element 0 of its `[key, type, alias]` tuple (td-model's
/// `TableColumn::name`).
///
/// TD's tuple is `[key, type, alias]`: td-client-java's `TDColumn.parseTuple` reads
/// `// [ key, type, name ]` as `new TDColumn(tuple[2], type, tuple[0].getBytes())` (name from
/// element 2, the physical key from element 0), and its live test `TestTDClient.tableOperation`
/// round-trips key "int_col_key_name" under the column name "int_col"; td-client-python's
/// `table_api.update_schema` documents `'[["sep_len", "long", "sep_len"], ...]'`. A 2-element
/// `[key, type]` is its own alias.
pub(crate) fn column_key(column: &TableColumn) -> &str {
    &column.name
}

/// The name SQL knows a schema column by: element 2 of its `[key, type, alias]` tuple (td-model's
/// `TableColumn::alias`), else its key. See [`column_key`].
pub(crate) fn column_name(column: &TableColumn) -> &str {
    column.alias.as_deref().unwrap_or(&column.name)
}

/// Whether `schema` already has a column for the record key `key`: one reading it, or one SQL
/// knows by that name (a column added for the key would repeat that name). Keys that have one
/// add no column when rows bring them.
pub(crate) fn has_column_for(schema: &[TableColumn], key: &str) -> bool {
    schema
        .iter()
        .any(|c| column_key(c) == key || column_name(c) == key)
}

/// Reads a schema a caller sends (`update-schema`, `append-schema`); a column name (alias) given
/// twice is refused.
/// A `schema` parameter. A column named twice is refused, or with `ignore_duplicates`
/// (`ignore_duplicate_schema`, on `update-schema` in TD's API description) its later mentions
/// are dropped: td-local's reading of the flag, which no public source spells out.
pub(crate) fn parse_schema_param(text: &str, ignore_duplicates: bool) -> Result<Vec<TableColumn>> {
    let mut columns = Vec::new();
    for column in parse_table_schema(text)? {
        if columns.iter().any(|c| column_name(c) == column_name(&column)) {
            if ignore_duplicates {
                continue;
            }
            return Err(Error::invalid(format!(
                "column '{}' appears twice in the schema",
                column_name(&column)
            )));
        }
        columns.push(column);
    }
    Ok(columns)
}

/// Replaces a table's schema (`update-schema`).
pub(crate) fn replace_schema(
    conn: &Connection,
    account_id: i64,
    db: &str,
    table: &str,
    columns: &[TableColumn],
) -> Result<()> {
    set_table_schema(conn, table_id(conn, account_id, db, table)?, columns)
}

/// Adds the columns the table lacks; existing ones keep their type (`append-schema`).
pub(crate) fn append_schema(
    conn: &Connection,
    account_id: i64,
    db: &str,
    table: &str,
    added: Vec<TableColumn>,
) -> Result<()> {
    let id = table_id(conn, account_id, db, table)?;
    let mut columns = table_schema(conn, id)?;
    merge_columns(&mut columns, added);
    set_table_schema(conn, id, &columns)
}

/// Appends to `schema` the columns of `new` it lacks, keeping existing columns' types: a column
/// is there when one has its name or reads its key (the key's values already have a column).
pub(crate) fn merge_columns(schema: &mut Vec<TableColumn>, new: impl IntoIterator<Item = TableColumn>) {
    for column in new {
        let there = schema
            .iter()
            .any(|c| column_name(c) == column_name(&column) || column_key(c) == column_key(&column));
        if !there {
            schema.push(column);
        }
    }
}

/// The newest `count` records (JSON text), newest first: by `time`, then the latest written,
/// each value a schema column reads as the column reads it (`records::read_by_schema`: TD applies
/// a column's type when it is read). Every row is looked at; `count` of them are held.
pub(crate) fn tail(
    conn: &Connection,
    account_id: i64,
    db: &str,
    table: &str,
    count: i64,
) -> Result<Vec<String>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let id = table_id(conn, account_id, db, table)?;
    let count = usize::try_from(count).unwrap_or(0);
    if count == 0 {
        return Ok(Vec::new());
    }
    // The heap's top is the oldest kept: (time, place written), smallest first.
    let mut kept: BinaryHeap<Reverse<(i64, u64, String)>> = BinaryHeap::with_capacity(count.min(1 << 16) + 1);
    let mut place = 0u64;
    segments::for_each_row(conn, id, |_, time, text| {
        place += 1;
        if kept.len() == count {
            match kept.peek() {
                Some(Reverse((t, p, _))) if (time, place) > (*t, *p) => drop(kept.pop()),
                _ => return Ok(()),
            }
        }
        kept.push(Reverse((time, place, text.to_string())));
        Ok(())
    })?;
    let schema = table_schema(conn, id)?;
    kept.into_sorted_vec()
        .into_iter()
        .map(|Reverse((_, _, text))| {
            if schema.is_empty() {
                return Ok(text);
            }
            let record = serde_json::from_str(&text)
                .map_err(|e| Error::internal(format!("a stored record is not a JSON map: {e}")))?;
            serde_json::to_string(&read_by_schema(record, &schema))
                .map_err(|e| Error::internal(e.to_string()))
        })
        .collect()
}

/// The names of a database's tables, sorted.
pub(crate) fn table_names(conn: &Connection, account_id: i64, db: &str) -> Result<Vec<String>> {
    let db_id = database_id(conn, account_id, db)?;
    let mut stmt = conn.prepare("SELECT name FROM tables WHERE database_id = ?1 ORDER BY name")?;
    let rows = stmt.query_map(params![db_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
