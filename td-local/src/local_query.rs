//! One query on a data directory, without a server: what `td-local query --data DIR "SQL"`
//! runs, and what [`crate::Inspect::query`] runs for tests. The query goes through the engine a
//! query job uses (the same views, UDFs, snapshot and result typing) into a result file beside
//! the store, which is read back and removed. A server may be serving the same directory: the
//! engine reads the store read-only, in one snapshot.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde_json::Value;

use crate::accounts::{self, Account, ACCOUNTS_FILE};
use crate::catalog;
use crate::jobs::Outcome;
use crate::query::{Engine, QueryError};
use crate::records;
use crate::result_format::{self, Format};
use crate::store::{self, Store, DB_FILE};

/// Why `td-local query` could not show a result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalQueryError {
    #[error(
        "{} holds no td-local data (no {DB_FILE} or {ACCOUNTS_FILE}); pass the --data directory \
         a `td-local serve` uses",
        .0.display()
    )]
    NoData(PathBuf),
    #[error("no account {0} in accounts.yml (the accounts are {1})")]
    NoAccount(i64, String),
    #[error("database '{0}' does not exist")]
    NoDatabase(String),
    #[error("the query failed: {error}{hint}\n  SQL: {sql}")]
    Query {
        error: QueryError,
        hint: &'static str,
        sql: String,
    },
    #[error(transparent)]
    Store(#[from] crate::Error),
    #[error("reading the result: {0}")]
    Io(#[from] io::Error),
}

/// A query's result in a file of its own (msgpack.gz arrays, as a job's), removed on drop.
#[derive(Debug)]
pub(crate) struct Ran {
    path: PathBuf,
    pub outcome: Outcome,
}

impl Drop for Ran {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Ran {
    /// The result's column names.
    pub(crate) fn columns(&self) -> Vec<String> {
        result_format::column_names(self.outcome.hive_result_schema.as_deref())
    }

    /// Calls `each` with every row (a msgpack array) in order until it returns false.
    pub(crate) fn rows(&self, mut each: impl FnMut(rmpv::Value) -> bool) -> crate::error::Result<()> {
        let file = File::open(&self.path)?;
        let mut more = true;
        records::read_msgpack_values(MultiGzDecoder::new(file), |row| {
            if more {
                more = each(row);
            }
            Ok(())
        })
    }

    /// Writes the result in `format` (json, csv or tsv: a first line of column names, then one
    /// line a row, as `job/result` serves them with a header).
    pub(crate) fn write(&self, format: Format, out: &mut dyn Write) -> io::Result<()> {
        let file = File::open(&self.path)?;
        result_format::convert(file, format, Some(&self.columns()), out)
    }
}

/// Runs `sql` as a query job of `account` on `database` would (`TD_SCHEDULED_TIME()` is now),
/// its result in a file under `data_dir/tmp`.
pub(crate) fn run(
    store: &Store,
    data_dir: &Path,
    account: i64,
    database: &str,
    sql: &str,
) -> Result<Ran, QueryError> {
    let path = data_dir.join("tmp").join(format!(
        "query-{}-{:016x}.msgpack.gz",
        std::process::id(),
        rand::random::<u64>()
    ));
    let engine = Engine::open(store, account, database, store::now())?;
    let outcome = engine.run(sql, &path)?;
    Ok(Ran { path, outcome })
}

/// What `td-local query` was asked.
#[derive(Debug, Clone)]
pub(crate) struct LocalQuery {
    pub data_dir: PathBuf,
    /// Tables named without a database are looked up here; without one, name them `db.table`.
    pub database: Option<String>,
    /// The account whose tables the query reads (its id in accounts.yml); the first by default.
    pub account: Option<i64>,
    pub sql: String,
}

impl LocalQuery {
    /// Opens the data directory (never creating one) and runs the query.
    pub(crate) fn run(&self) -> Result<Ran, LocalQueryError> {
        let dir = &self.data_dir;
        if !dir.join(DB_FILE).is_file() || !dir.join(ACCOUNTS_FILE).is_file() {
            return Err(LocalQueryError::NoData(dir.clone()));
        }
        let account = pick_account(&accounts::load_or_create(dir)?, self.account)?;
        let store = Store::open(dir)?;
        if let Some(db) = &self.database {
            if store
                .read(|conn| catalog::find_database(conn, account, db))?
                .is_none()
            {
                return Err(LocalQueryError::NoDatabase(db.clone()));
            }
        }
        let database = self.database.as_deref().unwrap_or_default();
        run(&store, dir, account, database, &self.sql).map_err(|error| {
            let unqualified = self.database.is_none() && error.to_string().contains("no such table");
            LocalQueryError::Query {
                hint: if unqualified {
                    " (no --database given: name tables as db.table, or pass --database)"
                } else {
                    ""
                },
                error,
                sql: self.sql.trim().to_string(),
            }
        })
    }
}

fn pick_account(accounts: &[Account], wanted: Option<i64>) -> Result<i64, LocalQueryError> {
    match wanted {
        None => Ok(accounts[0].id),
        Some(id) if accounts.iter().any(|a| a.id == id) => Ok(id),
        Some(id) => {
            let ids: Vec<String> = accounts.iter().map(|a| a.id.to_string()).collect();
            Err(LocalQueryError::NoAccount(id, ids.join(", ")))
        }
    }
}

/// The result as an aligned text table: a header of column names, a rule, at most `max_rows`
/// rows (numbers right-aligned, NULL for null, arrays and maps as JSON), and a closing line
/// counting the rows, saying so when some were left out.
pub(crate) fn text_table(ran: &Ran, max_rows: usize) -> crate::error::Result<String> {
    let columns = ran.columns();
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    ran.rows(|row| {
        let cells = match records::msgpack_to_display(row) {
            Value::Array(cells) => cells,
            other => vec![other],
        };
        rows.push(cells.into_iter().map(Cell::from).collect());
        rows.len() < max_rows
    })?;
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.text.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<Cell> = columns.iter().map(|c| Cell::text(c)).collect();
    push_line(&mut out, &header, &widths);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(rule.join("-+-").trim_end());
    out.push('\n');
    for row in &rows {
        push_line(&mut out, row, &widths);
    }
    let total = usize::try_from(ran.outcome.num_records).unwrap_or(usize::MAX);
    let noun = if total == 1 { "row" } else { "rows" };
    if rows.len() < total {
        let _ = writeln!(
            out,
            "({total} {noun}, the first {} shown; --max-rows N shows more)",
            rows.len()
        );
    } else {
        let _ = writeln!(out, "({total} {noun})");
    }
    Ok(out)
}

/// One cell as shown.
struct Cell {
    text: String,
    right: bool,
}

impl Cell {
    fn text(text: &str) -> Cell {
        Cell {
            text: text.to_string(),
            right: false,
        }
    }
}

impl From<Value> for Cell {
    fn from(value: Value) -> Cell {
        match value {
            Value::Null => Cell::text("NULL"),
            Value::Number(n) => Cell {
                text: n.to_string(),
                right: true,
            },
            // Line breaks and tabs would break the table.
            Value::String(s) => Cell::text(&s.replace('\n', "\\n").replace('\t', "\\t")),
            other => Cell::text(&other.to_string()),
        }
    }
}

fn push_line(out: &mut String, cells: &[Cell], widths: &[usize]) {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| {
            if cell.right {
                format!("{:>width$}", cell.text)
            } else {
                format!("{:<width$}", cell.text)
            }
        })
        .collect();
    out.push_str(padded.join(" | ").trim_end());
    out.push('\n');
}
