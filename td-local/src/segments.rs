//! Segments of stored rows (see `store`): writing one, reading a table's rows back, and
//! dropping a table's or a session's rows through them.
//!
//! A segment's rows are packed into blocks: `blocks` rows `first_block .. first_block + blocks`,
//! each holding the records of ~[`BLOCK_BYTES`] of JSON text. A segment is written in one go by
//! the one writer connection, with the block numbers given explicitly, so a table's rows are
//! found by ranges of the rowid, with no index to keep; and SQLite stores, logs and reads one
//! row per block, not one per record (per-row costs were most of a bulk-import perform's writes).

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

/// JSON text a block holds before it is stored: past this, the next record starts a new block.
/// A block is read into memory whole (beside its compressed copy), so this (or one record, if
/// larger) is about what a reader holds.
pub(crate) const BLOCK_BYTES: usize = 64 << 10;

/// A block as written, little-endian: the record count `n` (u32), then `n` × (`time` i64, text
/// length u32), then the records' JSON texts back to back. It is stored LZ4-compressed, behind
/// [`PACKED`] and its written length (u32): JSON records shrink ~5-fold, and a bulk import's
/// cost is mostly the bytes SQLite writes twice (WAL, then database) and the disk takes. A block
/// that would not shrink, and every block stored before compression, is stored as written.
#[derive(Debug, Default)]
struct BlockWriter {
    heads: Vec<(i64, u32)>,
    text: Vec<u8>,
    /// The last block, as written and compressed: room kept for the next.
    written: Vec<u8>,
    packed: Vec<u8>,
}

const COUNT_BYTES: usize = 4;
const HEAD_BYTES: usize = 12;

/// Stands where a stored block's record count would (no block holds 2^32 − 1 records: it closes
/// at `BLOCK_BYTES` of records, each a JSON object of 2 bytes or more): the written length and
/// the LZ4 block follow.
const PACKED: [u8; 4] = u32::MAX.to_le_bytes();
const PACKED_HEAD: usize = 8;
/// LZ4 expands a block less than 255-fold (a match's length costs a byte per 255); a stored
/// length past this is damage, not room to make.
const LZ4_MAX_RATIO: usize = 256;

impl BlockWriter {
    fn push(&mut self, time: i64, json: &str) -> Result<()> {
        let len = u32::try_from(json.len())
            .map_err(|_| Error::internal("a record's JSON text is over 4 GiB and cannot be stored"))?;
        self.heads.push((time, len));
        self.text.extend_from_slice(json.as_bytes());
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.text.len() >= BLOCK_BYTES
    }

    /// The block's bytes as stored; leaves the writer empty.
    fn seal(&mut self) -> Result<&[u8]> {
        let written = &mut self.written;
        written.clear();
        let count = u32::try_from(self.heads.len()).expect("a block holds fewer than 2^32 records");
        written.extend_from_slice(&count.to_le_bytes());
        for (time, len) in self.heads.drain(..) {
            written.extend_from_slice(&time.to_le_bytes());
            written.extend_from_slice(&len.to_le_bytes());
        }
        written.extend_from_slice(&self.text);
        self.text.clear();
        let length = u32::try_from(written.len())
            .map_err(|_| Error::internal("a block of rows is over 4 GiB and cannot be stored"))?;
        let room = PACKED_HEAD + lz4_flex::block::get_maximum_output_size(written.len());
        if self.packed.len() < room {
            self.packed.resize(room, 0);
        }
        let packed = lz4_flex::block::compress_into(written, &mut self.packed[PACKED_HEAD..])
            .expect("room for LZ4's worst case");
        if PACKED_HEAD + packed >= written.len() {
            return Ok(written);
        }
        self.packed[..4].copy_from_slice(&PACKED);
        self.packed[4..PACKED_HEAD].copy_from_slice(&length.to_le_bytes());
        Ok(&self.packed[..PACKED_HEAD + packed])
    }
}

fn damaged() -> Error {
    Error::internal("a stored block of rows is damaged")
}

/// A block as written, from its bytes as stored (see [`BlockWriter`]), into `into` (replacing
/// what it held). A block stored as written is swapped in, not copied: `stored` is then left
/// holding what `into` held.
pub(crate) fn unpack(stored: &mut Vec<u8>, into: &mut Vec<u8>) -> Result<()> {
    let Some(packed) = stored.strip_prefix(&PACKED) else {
        std::mem::swap(stored, into);
        return Ok(());
    };
    let (length, lz4) = packed.split_first_chunk::<4>().ok_or_else(damaged)?;
    let length = u32::from_le_bytes(*length) as usize;
    if length > lz4.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(damaged());
    }
    // Room is asked for, so that a damaged length past what memory allows is an error; and
    // only growth is zeroed: a buffer reused for blocks of one size is not cleared each time.
    into.try_reserve(length.saturating_sub(into.len()))
        .map_err(|_| damaged())?;
    into.resize(length, 0);
    match lz4_flex::block::decompress_into(lz4, into) {
        Ok(n) if n == length => Ok(()),
        _ => Err(damaged()),
    }
}

/// The rows of a stored block, `(time, record JSON bytes)`, in the order they were pushed.
/// A block that does not parse (the database was changed behind td-local's back) is an error.
pub(crate) fn block_rows(block: &[u8]) -> Result<BlockRows<'_>> {
    let count = block
        .get(..COUNT_BYTES)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(damaged)?;
    let text_start = count
        .checked_mul(HEAD_BYTES)
        .and_then(|h| h.checked_add(COUNT_BYTES))
        .filter(|&start| start <= block.len())
        .ok_or_else(damaged)?;
    let (heads, text) = block.split_at(text_start);
    let total: usize = heads[COUNT_BYTES..]
        .chunks_exact(HEAD_BYTES)
        .map(|h| u32::from_le_bytes(h[8..].try_into().expect("4 bytes")) as usize)
        .sum();
    if total != text.len() {
        return Err(damaged());
    }
    Ok(BlockRows {
        heads: heads[COUNT_BYTES..].chunks_exact(HEAD_BYTES),
        text,
        text_start,
    })
}

/// See [`block_rows`].
pub(crate) struct BlockRows<'a> {
    heads: std::slice::ChunksExact<'a, u8>,
    text: &'a [u8],
    /// Where `text` starts in the block.
    text_start: usize,
}

impl<'a> BlockRows<'a> {
    /// The rows as `(time, where the record's text starts in the block, the text)`.
    pub(crate) fn placed(self) -> impl Iterator<Item = (i64, usize, &'a [u8])> {
        let mut at = self.text_start;
        self.map(move |(time, text)| {
            let from = at;
            at += text.len();
            (time, from, text)
        })
    }
}

impl<'a> Iterator for BlockRows<'a> {
    type Item = (i64, &'a [u8]);

    fn next(&mut self) -> Option<(i64, &'a [u8])> {
        let head = self.heads.next()?;
        let time = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
        let (text, rest) = self.text.split_at(len);
        self.text = rest;
        Some((time, text))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.heads.size_hint()
    }
}

/// Who a new segment's rows belong to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner {
    Table(i64),
    /// A bulk-import session, until its commit gives them to the table.
    Session(i64),
}

/// Writes rows into a new segment and keeps its counts; [`Segment::finish`] stores them. Runs
/// inside the caller's transaction, so dropped unfinished it leaves nothing once that
/// transaction (or savepoint) is rolled back.
pub(crate) struct Segment<'c> {
    conn: &'c Connection,
    insert: rusqlite::CachedStatement<'c>,
    id: i64,
    first_block: i64,
    blocks: i64,
    block: BlockWriter,
    rows: i64,
    bytes: i64,
    max_time: Option<i64>,
}

impl<'c> Segment<'c> {
    pub(crate) fn create(conn: &'c Connection, owner: Owner) -> Result<Segment<'c>> {
        let (table_id, session_id) = match owner {
            Owner::Table(id) => (Some(id), None),
            Owner::Session(id) => (None, Some(id)),
        };
        let first_block: i64 =
            conn.query_row("SELECT COALESCE(MAX(rowid), 0) + 1 FROM blocks", [], |r| r.get(0))?;
        conn.execute(
            "INSERT INTO segments (table_id, session_id, first_block) VALUES (?1, ?2, ?3)",
            params![table_id, session_id, first_block],
        )?;
        Ok(Segment {
            conn,
            insert: conn.prepare_cached("INSERT INTO blocks (rowid, data) VALUES (?1, ?2)")?,
            id: conn.last_insert_rowid(),
            first_block,
            blocks: 0,
            block: BlockWriter::default(),
            rows: 0,
            bytes: 0,
            max_time: None,
        })
    }

    /// Adds a row: its `time` and its record's JSON text.
    pub(crate) fn push(&mut self, time: i64, json: &str) -> Result<()> {
        self.block.push(time, json)?;
        self.rows += 1;
        self.bytes += json.len() as i64;
        self.max_time = self.max_time.max(Some(time));
        if self.block.is_full() {
            self.store_block()?;
        }
        Ok(())
    }

    /// Adds rows `(time, record JSON)`, in order.
    pub(crate) fn push_all<'r>(&mut self, rows: impl IntoIterator<Item = (i64, &'r str)>) -> Result<()> {
        rows.into_iter()
            .try_for_each(|(time, json)| self.push(time, json))
    }

    fn store_block(&mut self) -> Result<()> {
        let id = self
            .first_block
            .checked_add(self.blocks)
            .ok_or_else(|| Error::internal("the blocks table has run out of row numbers"))?;
        self.insert.execute(params![id, self.block.seal()?])?;
        self.blocks += 1;
        Ok(())
    }

    /// Stores the last block and the segment's counts; returns its id.
    pub(crate) fn finish(mut self) -> Result<i64> {
        if !self.block.heads.is_empty() {
            self.store_block()?;
        }
        self.conn.execute(
            "UPDATE segments SET blocks = ?1, rows = ?2, bytes = ?3, max_time = ?4 WHERE id = ?5",
            params![self.blocks, self.rows, self.bytes, self.max_time, self.id],
        )?;
        Ok(self.id)
    }
}

/// A segment's blocks, as a reader walks them: `first ..= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocks {
    pub segment: i64,
    pub first: i64,
    pub last: i64,
}

/// The blocks of the segments `which` selects (a condition on `segments`, bound to `param`),
/// in the order they were written; empty segments have none.
fn blocks(conn: &Connection, which: &str, param: impl rusqlite::Params) -> Result<Vec<Blocks>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, first_block, first_block + blocks - 1 FROM segments WHERE ({which}) AND blocks > 0 ORDER BY id"
    ))?;
    let blocks = stmt
        .query_map(param, |r| {
            Ok(Blocks {
                segment: r.get(0)?,
                first: r.get(1)?,
                last: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(blocks)
}

/// The blocks of table `table_id`, in the order they were written.
pub(crate) fn table_blocks(conn: &Connection, table_id: i64) -> Result<Vec<Blocks>> {
    blocks(conn, "table_id = ?1", [table_id])
}

/// Reads block `id` as stored into `stored` (replacing what it held): [`unpack`] makes it the
/// block as written. Apart, so that a reader sharing a connection holds it only for the copy.
/// A segment's block that is not there is an error.
pub(crate) fn read_stored(conn: &Connection, id: i64, stored: &mut Vec<u8>) -> Result<()> {
    let mut stmt = conn.prepare_cached("SELECT data FROM blocks WHERE rowid = ?1")?;
    stmt.query_row([id], |r| {
        stored.clear();
        stored.extend_from_slice(r.get_ref(0)?.as_blob()?);
        Ok(())
    })
    .optional()?
    .ok_or_else(|| Error::internal("a stored block of rows is missing"))
}

/// Calls `each` with every row of table `table_id` in the order they were written: its
/// segment's id, `time` and record JSON. One block is held at a time.
pub(crate) fn for_each_row(
    conn: &Connection,
    table_id: i64,
    mut each: impl FnMut(i64, i64, &str) -> Result<()>,
) -> Result<()> {
    let (mut stored, mut block) = (Vec::new(), Vec::new());
    for segment in table_blocks(conn, table_id)? {
        for id in segment.first..=segment.last {
            read_stored(conn, id, &mut stored)?;
            unpack(&mut stored, &mut block)?;
            for (time, text) in block_rows(&block)? {
                let text =
                    std::str::from_utf8(text).map_err(|_| Error::internal("a stored record is not UTF-8"))?;
                each(segment.segment, time, text)?;
            }
        }
    }
    Ok(())
}

/// Deletes the segments `which` selects (a condition on `segments`, bound to `param`) and
/// their rows.
fn delete_segments(conn: &Connection, which: &str, param: impl rusqlite::Params + Copy) -> Result<()> {
    let mut delete = conn.prepare_cached("DELETE FROM blocks WHERE rowid BETWEEN ?1 AND ?2")?;
    for segment in blocks(conn, which, param)? {
        delete.execute(params![segment.first, segment.last])?;
    }
    conn.execute(&format!("DELETE FROM segments WHERE {which}"), param)?;
    Ok(())
}
/// Deletes the rows of the tables `tables` selects (SQL yielding table ids, `?1` = `param`).
pub(crate) fn delete_table_rows(conn: &Connection, tables: &str, param: i64) -> Result<()> {
    delete_segments(conn, &format!("table_id IN ({tables})"), [param])
}

/// Drops one segment and its rows.
pub(crate) fn delete_segment(conn: &Connection, id: i64) -> Result<()> {
    delete_segments(conn, "id = ?1", [id])
}

/// Drops the rows a bulk-import session has staged.
pub(crate) fn delete_session_rows(conn: &Connection, session_id: i64) -> Result<()> {
    delete_segments(conn, "session_id = ?1", [session_id])
}

/// Drops the staged rows of every session but those `keep` selects (SQL yielding session ids,
/// `?1` = `param`), and of sessions that are gone.
pub(crate) fn delete_session_rows_except(
    conn: &Connection,
    keep: &str,
    param: impl rusqlite::ToSql,
) -> Result<()> {
    delete_segments(
        conn,
        &format!("session_id IS NOT NULL AND session_id NOT IN ({keep})"),
        [&param as &dyn rusqlite::ToSql],
    )
}

/// The rows a session has staged.
pub(crate) fn session_rows(conn: &Connection, session_id: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(rows), 0) FROM segments WHERE session_id = ?1",
        params![session_id],
        |r| r.get(0),
    )?)
}

/// Gives a session's staged segments to a table (a commit): no row moves.
pub(crate) fn give_to_table(conn: &Connection, session_id: i64, table_id: i64) -> Result<()> {
    conn.execute(
        "UPDATE segments SET table_id = ?1, session_id = NULL WHERE session_id = ?2",
        params![table_id, session_id],
    )?;
    Ok(())
}

/// Segments of rows (see the module's comment): the `blocks` rows
/// `first_block .. first_block + blocks`, holding `rows` rows, of a table (`table_id`), or of a
/// bulk-import session's staged rows (`session_id`, `table_id` NULL) until the commit.
const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS blocks (
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    table_id INTEGER,
    session_id INTEGER,
    first_block INTEGER NOT NULL,
    blocks INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    max_time INTEGER
);
CREATE INDEX IF NOT EXISTS segments_by_table ON segments (table_id);
CREATE INDEX IF NOT EXISTS segments_by_session ON segments (session_id);
"#;

/// Makes the tables of stored rows (none is changed if it exists).
pub(crate) fn create_tables(conn: &Connection) -> Result<()> {
    Ok(conn.execute_batch(TABLES)?)
}

/// A data directory from before blocks keeps one `records` row per row, and segments name
/// their runs of rowids (`first_row`): each segment's rows are packed into blocks, in a new
/// segment with the same owner, counts and order. One transaction, at open.
pub(crate) fn pack_rows_into_blocks(conn: &Connection) -> Result<()> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "DROP INDEX IF EXISTS segments_by_table;
         DROP INDEX IF EXISTS segments_by_session;
         ALTER TABLE segments RENAME TO old_segments;",
    )?;
    create_tables(&tx)?;
    let old: Vec<(Option<i64>, Option<i64>, i64, i64)> = tx
        .prepare(
            "SELECT table_id, session_id, first_row, first_row + rows - 1 FROM old_segments ORDER BY id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows =
        tx.prepare("SELECT time, record FROM records WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid")?;
    for (table_id, session_id, first, last) in old {
        let owner = match (table_id, session_id) {
            (Some(table), _) => Owner::Table(table),
            (None, Some(session)) => Owner::Session(session),
            (None, None) => continue,
        };
        let mut segment = Segment::create(&tx, owner)?;
        let mut found = rows.query(params![first, last])?;
        while let Some(row) = found.next()? {
            segment.push(row.get(0)?, &row.get::<_, String>(1)?)?;
        }
        segment.finish()?;
    }
    drop(rows);
    tx.execute_batch("DROP TABLE old_segments; DROP TABLE records;")?;
    Ok(tx.commit()?)
}

/// Every row of table `table`, `(time, record JSON)`, for tests.
#[cfg(test)]
pub(crate) fn rows_of(conn: &Connection, table: i64) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    for_each_row(conn, table, |_, time, text| {
        rows.push((time, text.to_string()));
        Ok(())
    })
    .unwrap();
    rows
}

/// Every segment, in order: `(table_id, session_id, rows, bytes, max_time)`, for tests.
#[cfg(test)]
#[allow(clippy::type_complexity)]
pub(crate) fn segment_rows(conn: &Connection) -> Vec<(Option<i64>, Option<i64>, i64, i64, Option<i64>)> {
    let mut stmt = conn
        .prepare("SELECT table_id, session_id, rows, bytes, max_time FROM segments ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows fill a block until it holds `BLOCK_BYTES` of text, then start the next; all of
    /// them come back, in order, whatever the count and sizes.
    #[test]
    fn a_segment_holds_every_row_pushed_in_order_whatever_the_count() {
        let conn = Connection::open_in_memory().unwrap();
        create_tables(&conn).unwrap();
        let long = "é".repeat(BLOCK_BYTES);
        for count in [0, 1, 2, 500, 5_000] {
            let texts: Vec<String> = (0..count)
                .map(|i| format!(r#"{{"time":{i},"n":{count},"pad":"{}"}}"#, "x".repeat(i % 97)))
                .collect();
            let table = 100 + count as i64;
            let mut segment = Segment::create(&conn, Owner::Table(table)).unwrap();
            segment.push(-1, r#"{"time":-1}"#).unwrap();
            segment
                .push_all(texts.iter().enumerate().map(|(i, t)| (i as i64, t.as_str())))
                .unwrap();
            segment.push(-2, &long).unwrap();
            segment.push(-3, "{}").unwrap();
            segment.finish().unwrap();
            let mut expected = vec![(-1, r#"{"time":-1}"#.to_string())];
            expected.extend(texts.iter().enumerate().map(|(i, t)| (i as i64, t.clone())));
            expected.push((-2, long.clone()));
            expected.push((-3, "{}".to_string()));
            assert_eq!(rows_of(&conn, table), expected, "{count} rows");
            let (rows, max_time, blocks): (i64, i64, i64) = conn
                .query_row(
                    "SELECT rows, max_time, blocks FROM segments WHERE table_id = ?1",
                    [table],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            let text: usize = expected.iter().map(|(_, t)| t.len()).sum();
            assert_eq!((rows, max_time), (count as i64 + 3, (count as i64 - 1).max(-1)));
            assert!(
                (blocks as usize) <= text / BLOCK_BYTES + 2 && blocks >= 2,
                "{blocks} blocks for {text} bytes"
            );
        }
    }

    fn sealed(records: &[(i64, &str)]) -> (Vec<u8>, Vec<u8>) {
        let mut writer = BlockWriter::default();
        for &(time, text) in records {
            writer.push(time, text).unwrap();
        }
        let stored = writer.seal().unwrap().to_vec();
        (stored, writer.written)
    }

    fn unpacked(stored: &[u8]) -> Result<Vec<u8>> {
        let mut into = b"what the buffer held".to_vec();
        unpack(&mut stored.to_vec(), &mut into).map(|()| into)
    }

    #[test]
    fn a_block_of_json_records_is_stored_compressed_and_reads_back_as_written() {
        let texts: Vec<String> = (0..400)
            .map(|i| {
                format!(
                    r#"{{"code":200,"host":"10.0.{}.{}","path":"/item/{i}"}}"#,
                    i % 7,
                    i % 250
                )
            })
            .collect();
        let records: Vec<(i64, &str)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64, t.as_str()))
            .collect();
        let (stored, written) = sealed(&records);
        assert_eq!(stored[..4], PACKED);
        assert!(
            stored.len() * 3 < written.len(),
            "{} bytes stored for {}",
            stored.len(),
            written.len()
        );
        let back = unpacked(&stored).unwrap();
        assert_eq!(back, written);
        let rows: Vec<(i64, &[u8])> = block_rows(&back).unwrap().collect();
        assert_eq!(
            rows,
            records
                .iter()
                .map(|&(t, s)| (t, s.as_bytes()))
                .collect::<Vec<_>>()
        );
        // One record of one byte repeated: LZ4 near its largest ratio still reads back.
        let long = format!(r#"{{"x":"{}"}}"#, "x".repeat(1 << 20));
        let (stored, written) = sealed(&[(1, &long)]);
        assert!(
            stored.len() * 200 < written.len(),
            "{} bytes stored",
            stored.len()
        );
        assert_eq!(unpacked(&stored).unwrap(), written);
    }

    #[test]
    fn a_block_that_would_not_shrink_and_one_stored_before_compression_read_as_written() {
        // Printable noise: nothing for LZ4 to find.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: String = (0..2_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'#' + (state % 90) as u8)
            })
            .collect();
        let text = format!(r#"{{"noise":"{noise}"}}"#);
        let (stored, written) = sealed(&[(7, &text)]);
        assert_eq!(stored, written, "stored as written");
        assert_eq!(unpacked(&stored).unwrap(), written);
        // Blocks were stored as written before they were compressed.
        let (_, before) = sealed(&[(1, r#"{"a":"abcabcabcabcabcabcabcabcabc"}"#); 50]);
        assert_eq!(unpacked(&before).unwrap(), before);
        let conn = Connection::open_in_memory().unwrap();
        create_tables(&conn).unwrap();
        conn.execute("INSERT INTO blocks (rowid, data) VALUES (1, ?1)", [&before])
            .unwrap();
        conn.execute(
            "INSERT INTO segments (table_id, first_block, blocks, rows) VALUES (9, 1, 1, 50)",
            [],
        )
        .unwrap();
        let rows = rows_of(&conn, 9);
        assert_eq!(rows.len(), 50);
        assert_eq!(
            rows[49],
            (1, r#"{"a":"abcabcabcabcabcabcabcabcabc"}"#.to_string())
        );
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_panic() {
        let mut writer = BlockWriter::default();
        writer.push(5, r#"{"a":1}"#).unwrap();
        writer.push(6, r#"{"b":2}"#).unwrap();
        let block = writer.seal().unwrap().to_vec();
        assert_ne!(block[..4], PACKED, "too small to shrink");
        assert_eq!(
            block_rows(&block).unwrap().collect::<Vec<_>>(),
            vec![(5, &br#"{"a":1}"#[..]), (6, &br#"{"b":2}"#[..])]
        );
        for (time, at, text) in block_rows(&block).unwrap().placed() {
            assert_eq!(&block[at..at + text.len()], text, "row of time {time}");
        }
        for cut in 0..block.len() {
            assert!(block_rows(&block[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = block.clone();
        huge[..4].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(block_rows(&huge).is_err());

        // A compressed block cut short, or with a length that is not its own, does not read.
        let texts: Vec<String> = (0..300)
            .map(|i| format!(r#"{{"n":{i},"pad":"abcabcabc"}}"#))
            .collect();
        let records: Vec<(i64, &str)> = texts.iter().map(|t| (1, t.as_str())).collect();
        let (stored, _) = sealed(&records);
        assert_eq!(stored[..4], PACKED);
        let reads = |stored: &[u8]| unpacked(stored).and_then(|b| block_rows(&b).map(|r| r.count()));
        assert_eq!(reads(&stored).unwrap(), 300);
        for cut in 0..stored.len() {
            assert!(reads(&stored[..cut]).is_err(), "cut at {cut}");
            if cut >= PACKED.len() {
                assert!(unpacked(&stored[..cut]).is_err(), "unpacked, cut at {cut}");
            }
        }
        let length = u32::from_le_bytes(stored[4..8].try_into().unwrap());
        for wrong in [0, length - 1, length + 1, u32::MAX] {
            let mut bad = stored.clone();
            bad[4..8].copy_from_slice(&wrong.to_le_bytes());
            assert!(unpacked(&bad).is_err(), "length {wrong} for {length}");
        }
    }
}
