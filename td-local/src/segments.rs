//! Segments of stored rows (see `store`): writing one, and the SQL that finds and drops a
//! table's or a session's rows through them.
//!
//! A segment's rows are the `records` rows numbered `first_row .. first_row + rows`: a segment
//! is written in one go by the one writer connection, with the row numbers given explicitly, so
//! a table's rows are found by ranges of the rowid, with no index to keep and no column per row.

use rusqlite::{params, Connection};

use crate::error::{Error, Result};

/// Rows one statement inserts, in [`Segment::push_all`].
const ROWS_PER_INSERT: usize = 64;

/// An insert of `n` rows: `(rowid, time, record)` each.
fn insert_sql(n: usize) -> String {
    let values = vec!["(?, ?, ?)"; n].join(", ");
    format!("INSERT INTO records (rowid, time, record) VALUES {values}")
}

/// Who a new segment's rows belong to.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Table(i64),
    /// A bulk-import session, until its commit gives them to the table.
    Session(i64),
}

/// Writes rows into a new segment and keeps its counts; [`Segment::finish`] stores them. Runs
/// inside the caller's transaction, so dropped unfinished it leaves nothing once that
/// transaction (or savepoint) is rolled back.
pub struct Segment<'c> {
    conn: &'c Connection,
    insert: rusqlite::CachedStatement<'c>,
    id: i64,
    first_row: i64,
    rows: i64,
    bytes: i64,
    max_time: Option<i64>,
}

impl<'c> Segment<'c> {
    pub fn create(conn: &'c Connection, owner: Owner) -> Result<Segment<'c>> {
        let (table_id, session_id) = match owner {
            Owner::Table(id) => (Some(id), None),
            Owner::Session(id) => (None, Some(id)),
        };
        let first_row: i64 = conn.query_row("SELECT COALESCE(MAX(rowid), 0) + 1 FROM records", [], |r| {
            r.get(0)
        })?;
        conn.execute(
            "INSERT INTO segments (table_id, session_id, first_row) VALUES (?1, ?2, ?3)",
            params![table_id, session_id, first_row],
        )?;
        Ok(Segment {
            conn,
            insert: conn.prepare_cached(&insert_sql(1))?,
            id: conn.last_insert_rowid(),
            first_row,
            rows: 0,
            bytes: 0,
            max_time: None,
        })
    }

    /// Adds a row: its `time` and its record's JSON text.
    pub fn push(&mut self, time: i64, json: &str) -> Result<()> {
        let row = self.next_row(1)?;
        self.insert.execute(params![row, time, json])?;
        self.count(time, json);
        Ok(())
    }

    /// Adds rows `(time, record JSON)`, many to a statement: most of an insert's cost is the
    /// statement's, not the row's.
    pub fn push_all<'r>(&mut self, rows: impl IntoIterator<Item = (i64, &'r str)>) -> Result<()> {
        let mut rows = rows.into_iter().peekable();
        let mut many = self.conn.prepare_cached(&insert_sql(ROWS_PER_INSERT))?;
        loop {
            let mut chunk = Vec::with_capacity(ROWS_PER_INSERT);
            chunk.extend(rows.by_ref().take(ROWS_PER_INSERT));
            if chunk.len() < ROWS_PER_INSERT {
                return chunk
                    .into_iter()
                    .try_for_each(|(time, json)| self.push(time, json));
            }
            let first = self.next_row(ROWS_PER_INSERT as i64)?;
            for (i, (time, json)) in chunk.into_iter().enumerate() {
                many.raw_bind_parameter(3 * i + 1, first + i as i64)?;
                many.raw_bind_parameter(3 * i + 2, time)?;
                many.raw_bind_parameter(3 * i + 3, json)?;
                self.count(time, json);
            }
            many.raw_execute()?;
            if rows.peek().is_none() {
                return Ok(());
            }
        }
    }

    /// The row number of the next row, with room for `n` after it.
    fn next_row(&self, n: i64) -> Result<i64> {
        self.first_row
            .checked_add(self.rows + n - 1)
            .map(|_| self.first_row + self.rows)
            .ok_or_else(|| Error::internal("the records table has run out of row numbers"))
    }

    fn count(&mut self, time: i64, json: &str) {
        self.rows += 1;
        self.bytes += json.len() as i64;
        self.max_time = self.max_time.max(Some(time));
    }

    /// Stores the segment's counts; returns its id.
    pub fn finish(self) -> Result<i64> {
        self.conn.execute(
            "UPDATE segments SET rows = ?1, bytes = ?2, max_time = ?3 WHERE id = ?4",
            params![self.rows, self.bytes, self.max_time, self.id],
        )?;
        Ok(self.id)
    }
}

/// The SQL source (`FROM …`) of the rows of table `table_id` (SQL: a number or a parameter),
/// with the store's tables in `schema` (`""` or `name.`): `r` is the row, `s` its segment, and
/// the rows come in the order they were written in (`ORDER BY s.id, r.rowid` keeps it).
pub fn table_rows_source(schema: &str, table_id: &str) -> String {
    format!(
        "{schema}segments s JOIN {schema}records r \
         ON r.rowid BETWEEN s.first_row AND s.first_row + s.rows - 1 WHERE s.table_id = {table_id}"
    )
}

/// The row ranges `(first, last)` of the segments `which` selects (a condition on `segments`,
/// bound to `param`), in the order they were written; empty segments have none.
fn ranges(conn: &Connection, which: &str, param: impl rusqlite::Params) -> Result<Vec<(i64, i64)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT first_row, first_row + rows - 1 FROM segments WHERE ({which}) AND rows > 0 ORDER BY id"
    ))?;
    let ranges = stmt
        .query_map(param, |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ranges)
}

/// The row ranges `(first, last)` of table `table_id`, in the order they were written.
pub fn table_ranges(conn: &Connection, table_id: i64) -> Result<Vec<(i64, i64)>> {
    ranges(conn, "table_id = ?1", [table_id])
}

/// Deletes the segments `which` selects (a condition on `segments`, bound to `param`) and
/// their rows.
fn delete_segments(conn: &Connection, which: &str, param: impl rusqlite::Params + Copy) -> Result<()> {
    let mut delete = conn.prepare_cached("DELETE FROM records WHERE rowid BETWEEN ?1 AND ?2")?;
    for (first, last) in ranges(conn, which, param)? {
        delete.execute(params![first, last])?;
    }
    conn.execute(&format!("DELETE FROM segments WHERE {which}"), param)?;
    Ok(())
}

/// Deletes the rows of the tables `tables` selects (SQL yielding table ids, `?1` = `param`).
pub fn delete_table_rows(conn: &Connection, tables: &str, param: i64) -> Result<()> {
    delete_segments(conn, &format!("table_id IN ({tables})"), [param])
}

/// Drops one segment and its rows.
pub fn delete_segment(conn: &Connection, id: i64) -> Result<()> {
    delete_segments(conn, "id = ?1", [id])
}

/// Drops the rows a bulk-import session has staged.
pub fn delete_session_rows(conn: &Connection, session_id: i64) -> Result<()> {
    delete_segments(conn, "session_id = ?1", [session_id])
}

/// Drops the staged rows of every session but those `keep` selects (SQL yielding session ids,
/// `?1` = `param`), and of sessions that are gone.
pub fn delete_session_rows_except(conn: &Connection, keep: &str, param: impl rusqlite::ToSql) -> Result<()> {
    delete_segments(
        conn,
        &format!("session_id IS NOT NULL AND session_id NOT IN ({keep})"),
        [&param as &dyn rusqlite::ToSql],
    )
}

/// The rows a session has staged.
pub fn session_rows(conn: &Connection, session_id: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(rows), 0) FROM segments WHERE session_id = ?1",
        params![session_id],
        |r| r.get(0),
    )?)
}

/// Gives a session's staged segments to a table (a commit): no row moves.
pub fn give_to_table(conn: &Connection, session_id: i64, table_id: i64) -> Result<()> {
    conn.execute(
        "UPDATE segments SET table_id = ?1, session_id = NULL WHERE session_id = ?2",
        params![table_id, session_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Rows go in many to a statement and the rest one by one; all of them, in order, in one
    /// run of row numbers, whatever the count.
    #[test]
    fn a_segment_holds_every_row_pushed_in_order_whatever_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for count in [
            0,
            1,
            ROWS_PER_INSERT - 1,
            ROWS_PER_INSERT,
            2 * ROWS_PER_INSERT + 5,
        ] {
            let texts: Vec<String> = (0..count)
                .map(|i| format!(r#"{{"time":{i},"n":{count}}}"#))
                .collect();
            let table = 100 + count as i64;
            store
                .write(|tx| {
                    let mut segment = Segment::create(tx, Owner::Table(table))?;
                    segment.push(-1, r#"{"time":-1}"#)?;
                    segment.push_all(texts.iter().enumerate().map(|(i, t)| (i as i64, t.as_str())))?;
                    segment.finish().map(drop)
                })
                .unwrap();
            let rows: Vec<(i64, String)> = store
                .read(|conn| {
                    let mut stmt = conn.prepare(&format!(
                        "SELECT r.time, r.record FROM {} ORDER BY s.id, r.rowid",
                        table_rows_source("", "?1")
                    ))?;
                    let rows = stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    Ok(rows.collect::<rusqlite::Result<_>>()?)
                })
                .unwrap();
            let mut expected = vec![(-1, r#"{"time":-1}"#.to_string())];
            expected.extend(texts.iter().enumerate().map(|(i, t)| (i as i64, t.clone())));
            assert_eq!(rows, expected, "{count} rows");
            let counted: (i64, i64) = store
                .read(|conn| {
                    Ok(conn.query_row(
                        "SELECT rows, max_time FROM segments WHERE table_id = ?1",
                        [table],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .unwrap();
            assert_eq!(counted, (count as i64 + 1, count as i64 - 1));
        }
    }
}
