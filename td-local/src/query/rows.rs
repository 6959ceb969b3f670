//! A TD table's rows as a virtual table of the query connection: `time` and one column per
//! schema column, read from each stored record's JSON once (not once per column, as SQLite's
//! JSON functions would), in the order the rows were written.
//!
//! The rows are read through a connection of their own to the store, in one read transaction
//! that starts before the catalog is read, so a query sees one committed state. A cursor reads
//! a table's rows a stored block at a time: the first itself, the rest through a thread that
//! reads and takes apart a few blocks ahead of it, so that reading the store and finding values
//! in records run beside SQLite's work on the query's thread.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::c_int;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use rusqlite::types::{ToSqlOutput, Value as Sql, ValueRef};
use rusqlite::vtab::{
    read_only_module, Context, CreateVTab, Filters, IndexInfo, VTab, VTabConnection, VTabCursor, VTabKind,
};
use rusqlite::{ffi, Connection};
use serde_json::value::RawValue;

use crate::records::{ColumnRead, Kind, ReadAs};
use crate::segments;

/// The module's name in SQL.
pub(super) const MODULE: &str = "td_local_rows";

/// The store's rows as the query connection's virtual tables read them.
pub(super) struct RowSource {
    /// Shared with the scans' reading threads (see [`ReadAhead`]).
    conn: Arc<Mutex<Connection>>,
    /// The record key of each of a table's columns (after `time`) and how the column reads it,
    /// by table id: set before the table's virtual table is made.
    columns: RefCell<BTreeMap<i64, Vec<(String, ColumnRead)>>>,
}

impl RowSource {
    /// `conn` is a read-only connection to the store, already in the read transaction the whole
    /// query reads in.
    pub(super) fn new(conn: Connection) -> RowSource {
        RowSource {
            conn: Arc::new(Mutex::new(conn)),
            columns: RefCell::default(),
        }
    }

    /// Registers `source` on `query` as [`MODULE`].
    pub(super) fn register(source: &Rc<RowSource>, query: &Connection) -> rusqlite::Result<()> {
        query.create_module(MODULE, read_only_module::<RowsTab>(), Some(source.clone()))
    }

    /// The SQL making the virtual table `name` over table `table_id`'s rows, whose columns are
    /// `time`, then `c0`, `c1`, … reading record keys `keys`, each as its [`ColumnRead`] reads it.
    pub(super) fn create_sql(&self, name: &str, table_id: i64, keys: Vec<(String, ColumnRead)>) -> String {
        self.columns.borrow_mut().insert(table_id, keys);
        format!("CREATE VIRTUAL TABLE temp.{name} USING {MODULE}({table_id})")
    }
}

#[repr(C)]
struct RowsTab {
    /// SQLite's part; must come first.
    base: ffi::sqlite3_vtab,
    source: Rc<RowSource>,
    table_id: i64,
    columns: Arc<Columns>,
}

/// Which column each record key feeds, sorted by key for lookup while a record is read, and
/// how each column reads its values.
struct Columns {
    by_key: Vec<(String, usize)>,
    count: usize,
    reads: Vec<ColumnRead>,
}

impl Columns {
    fn new(keys: &[(String, ColumnRead)]) -> Columns {
        let mut by_key: Vec<(String, usize)> = keys.iter().map(|(key, _)| key.clone()).zip(0..).collect();
        by_key.sort();
        Columns {
            by_key,
            count: keys.len(),
            reads: keys.iter().map(|(_, read)| *read).collect(),
        }
    }

    /// Where in `by_key` the columns key `key` feeds are (an empty range for none).
    fn find(&self, key: &[u8]) -> std::ops::Range<usize> {
        let start = self.by_key.partition_point(|(k, _)| k.as_bytes() < key);
        let len = self.by_key[start..]
            .iter()
            .take_while(|(k, _)| k.as_bytes() == key)
            .count();
        start..start + len
    }

    /// The columns key `key` feeds.
    fn of<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = usize> + 'a {
        self.by_key[self.find(key)].iter().map(|(_, column)| *column)
    }
}

unsafe impl<'vtab> VTab<'vtab> for RowsTab {
    type Aux = Rc<RowSource>;
    type Cursor = RowsCursor<'vtab>;

    fn connect(
        _db: &mut VTabConnection,
        aux: Option<&Rc<RowSource>>,
        args: &[&[u8]],
    ) -> rusqlite::Result<(String, RowsTab)> {
        let module_error = |m: &str| rusqlite::Error::ModuleError(m.to_string());
        let source = aux.ok_or_else(|| module_error("no row source"))?.clone();
        let table_id = args
            .get(3)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.trim().parse::<i64>().ok())
            .ok_or_else(|| module_error("a table id is needed"))?;
        let keys = source
            .columns
            .borrow()
            .get(&table_id)
            .cloned()
            .ok_or_else(|| module_error("the table's columns were not registered"))?;
        let mut schema = String::from("CREATE TABLE x(time INTEGER");
        for i in 0..keys.len() {
            schema.push_str(&format!(", c{i}"));
        }
        schema.push(')');
        let tab = RowsTab {
            base: ffi::sqlite3_vtab::default(),
            source,
            table_id,
            columns: Arc::new(Columns::new(&keys)),
        };
        Ok((schema, tab))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<()> {
        // A full scan: constraints are left to SQLite. The columns the scan reads go to
        // `filter`, so records are taken apart for those only.
        info.set_estimated_cost(1_000_000.0);
        info.set_idx_str(&info.col_used().to_string());
        Ok(())
    }

    fn open(&'vtab mut self) -> rusqlite::Result<RowsCursor<'vtab>> {
        Ok(RowsCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            source: self.source.clone(),
            table_id: self.table_id,
            columns: self.columns.clone(),
            used: Arc::new(Used::default()),
            unread: VecDeque::new(),
            ahead: None,
            current: ReadBlock::default(),
            at: 0,
            passed: 0,
            values: Values::default(),
            phantom: PhantomData,
        })
    }
}

impl CreateVTab<'_> for RowsTab {
    const KIND: VTabKind = VTabKind::Default;
}

/// The record columns a scan reads, from SQLite's `colUsed`: bit 0 is `time` (kept beside each
/// record), bit `n` is record column `n - 1`, and bit 63 stands for that one and every later one.
#[derive(Default)]
struct Used {
    /// The columns, in order: a row's cells are theirs.
    columns: Vec<usize>,
    /// Where each column's cell is in a row's cells, for those read.
    slots: Vec<Option<usize>>,
}

impl Used {
    fn new(col_used: u64, count: usize) -> Used {
        let columns: Vec<usize> = (0..count)
            .filter(|&c| col_used & (1u64 << (c + 1).min(63)) != 0)
            .collect();
        let mut slots = vec![None; count];
        for (slot, &column) in columns.iter().enumerate() {
            slots[column] = Some(slot);
        }
        Used { columns, slots }
    }
}

/// A stored block read and taken apart: each row's `time` and the values of the columns the
/// scan reads, as SQL gets them.
#[derive(Default)]
struct ReadBlock {
    /// The block as stored (see `segments::unpack`).
    stored: Vec<u8>,
    block: Vec<u8>,
    times: Vec<i64>,
    /// `times.len()` × the columns read, row by row.
    cells: Vec<Cell>,
}

/// One column value of a row: what [`cell`] makes of its stored JSON.
enum Cell {
    Value(Sql),
    /// Text as it lies in the block: a string with no escapes (inside its quotes), a map or an
    /// array (its JSON).
    InBlock(std::ops::Range<usize>),
    Word(&'static str),
}

impl ReadBlock {
    fn rows(&self) -> usize {
        self.times.len()
    }

    /// Reads block `id`: only the copy of its stored bytes is done under the connection's lock.
    fn fetch(&mut self, conn: &Mutex<Connection>, id: i64) -> crate::error::Result<()> {
        {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            segments::read_stored(&conn, id, &mut self.stored)?;
        }
        segments::unpack(&mut self.stored, &mut self.block)
    }

    /// Takes the block apart: its rows' times and the `used` columns of each.
    fn take_apart(
        &mut self,
        columns: &Columns,
        used: &Used,
        values: &mut Values,
    ) -> crate::error::Result<()> {
        self.times.clear();
        self.cells.clear();
        for (time, from, text) in segments::block_rows(&self.block)?.placed() {
            self.times.push(time);
            if used.columns.is_empty() {
                continue;
            }
            values.read_from(text, columns);
            self.cells
                .extend(used.columns.iter().map(|&c| match &values.spans[c] {
                    Some(span) => cell(&text[span.clone()], from + span.start, columns.reads[c]),
                    None => Cell::Value(Sql::Null),
                }));
        }
        Ok(())
    }
}

/// Blocks read and taken apart on a thread of its own, a few ahead of the scan, so that the
/// query's thread spends itself on SQL. It stops when dropped.
struct ReadAhead {
    /// Each block with rows, then `None` after the last: a thread that stops without saying
    /// so failed, and the scan must not take that for the end of the table.
    blocks: Option<Receiver<Result<Option<ReadBlock>, String>>>,
    spent: Sender<ReadBlock>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Blocks read ahead of the scan: a few hundred KiB.
const BLOCKS_AHEAD: usize = 2;

impl ReadAhead {
    fn start(
        conn: Arc<Mutex<Connection>>,
        unread: VecDeque<(i64, i64)>,
        columns: Arc<Columns>,
        used: Arc<Used>,
    ) -> std::io::Result<ReadAhead> {
        let (sender, blocks) = sync_channel(BLOCKS_AHEAD);
        let (spent, spent_blocks) = channel::<ReadBlock>();
        let thread = std::thread::Builder::new()
            .name("td-local-scan".into())
            .spawn(move || {
                let mut values = Values::default();
                // A block without rows is not sent: its buffers serve the next.
                let mut unsent = None;
                for id in unread.into_iter().flat_map(|(first, last)| first..=last) {
                    let mut read = unsent
                        .take()
                        .or_else(|| spent_blocks.try_recv().ok())
                        .unwrap_or_default();
                    let done = read
                        .fetch(&conn, id)
                        .and_then(|()| read.take_apart(&columns, &used, &mut values));
                    let failed = done.is_err();
                    if read.rows() == 0 && !failed {
                        unsent = Some(read);
                        continue;
                    }
                    let sent = sender.send(done.map(|()| Some(read)).map_err(|e| e.to_string()));
                    if sent.is_err() || failed {
                        return;
                    }
                }
                let _ = sender.send(Ok(None));
            })?;
        Ok(ReadAhead {
            blocks: Some(blocks),
            spent,
            thread: Some(thread),
        })
    }

    /// The next block with rows; None past the last.
    fn next(&self) -> Result<Option<ReadBlock>, String> {
        match self.blocks.as_ref().map(Receiver::recv) {
            Some(Ok(next)) => next,
            _ => Err("the scan's reading thread stopped".to_string()),
        }
    }

    /// Hands a block back to be filled again.
    fn give_back(&self, block: ReadBlock) {
        let _ = self.spent.send(block);
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next block.
        self.blocks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[repr(C)]
struct RowsCursor<'vtab> {
    /// SQLite's part; must come first.
    base: ffi::sqlite3_vtab_cursor,
    source: Rc<RowSource>,
    table_id: i64,
    columns: Arc<Columns>,
    /// The record columns the scan reads (see `best_index`).
    used: Arc<Used>,
    /// The blocks (ranges of ids) not read yet, before the read-ahead takes them over.
    unread: VecDeque<(i64, i64)>,
    ahead: Option<ReadAhead>,
    current: ReadBlock,
    at: usize,
    /// Rows before the current block's, for the rowid.
    passed: i64,
    /// For the blocks the query's thread reads itself.
    values: Values,
    phantom: PhantomData<&'vtab RowsTab>,
}

impl RowsCursor<'_> {
    /// Moves to the next block that has rows; leaves `current` empty at the end of the table.
    /// The first block is read here; the rest, if any, by a [`ReadAhead`], so a small table (or
    /// an inner loop over one) costs no thread.
    fn fill(&mut self) -> rusqlite::Result<()> {
        let module_error = |e: String| rusqlite::Error::ModuleError(e);
        self.passed += self.current.rows() as i64;
        self.at = 0;
        let read_yet = self.passed > 0;
        if read_yet && self.ahead.is_none() && !self.unread.is_empty() {
            let unread = std::mem::take(&mut self.unread);
            let ahead = ReadAhead::start(
                self.source.conn.clone(),
                unread,
                self.columns.clone(),
                self.used.clone(),
            )
            .map_err(|e| module_error(format!("starting the scan's reading thread: {e}")))?;
            self.ahead = Some(ahead);
        }
        if let Some(ahead) = &self.ahead {
            match ahead.next().map_err(module_error)? {
                Some(next) => ahead.give_back(std::mem::replace(&mut self.current, next)),
                None => {
                    self.current = ReadBlock::default();
                    self.ahead = None;
                }
            }
            return Ok(());
        }
        // No rows until a block with some is taken apart.
        self.current.times.clear();
        while self.current.rows() == 0 {
            let Some((first, last)) = self.unread.pop_front() else {
                break;
            };
            if first < last {
                self.unread.push_front((first + 1, last));
            }
            self.current
                .fetch(&self.source.conn, first)
                .and_then(|()| {
                    self.current
                        .take_apart(&self.columns, &self.used, &mut self.values)
                })
                .map_err(|e| module_error(e.to_string()))?;
        }
        Ok(())
    }
}

unsafe impl VTabCursor for RowsCursor<'_> {
    fn filter(
        &mut self,
        _idx_num: c_int,
        idx_str: Option<&str>,
        _args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        self.ahead = None;
        let segments = {
            let conn = self.source.conn.lock().unwrap_or_else(|p| p.into_inner());
            segments::table_blocks(&conn, self.table_id)
                .map_err(|e| rusqlite::Error::ModuleError(e.to_string()))?
        };
        self.unread = segments.iter().map(|s| (s.first, s.last)).collect();
        // Without the plan's columns (not expected), every column is read.
        let col_used = idx_str.and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
        self.used = Arc::new(Used::new(col_used, self.columns.count));
        self.current = ReadBlock::default();
        self.passed = 0;
        self.fill()
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.at += 1;
        if self.at >= self.current.rows() {
            self.fill()?;
        }
        Ok(())
    }

    fn eof(&self) -> bool {
        self.at >= self.current.rows()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        let Some(column) = usize::try_from(i).ok().and_then(|i| i.checked_sub(1)) else {
            return ctx.set_result(&self.current.times[self.at]);
        };
        let cell = self
            .used
            .slots
            .get(column)
            .copied()
            .flatten()
            .and_then(|slot| self.current.cells.get(self.at * self.used.columns.len() + slot))
            .ok_or_else(|| rusqlite::Error::ModuleError(format!("column {i} was read but not announced")))?;
        let value = match cell {
            Cell::Value(value) => ValueRef::from(value),
            Cell::InBlock(text) => ValueRef::Text(&self.current.block[text.clone()]),
            Cell::Word(word) => ValueRef::Text(word.as_bytes()),
        };
        ctx.set_result(&ToSqlOutput::Borrowed(value))
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.passed + self.at as i64 + 1)
    }
}

/// Where each column's value lies in a row's record (its JSON text), reused from row to row.
#[derive(Default)]
struct Values {
    spans: Vec<Option<std::ops::Range<usize>>>,
    /// For the n-th key of the last record read: the key and the columns it fed (a range of
    /// `Columns::by_key`). Records of a table nearly always list the same keys in the same
    /// order, so a key is matched with one comparison.
    hints: Vec<(Vec<u8>, std::ops::Range<usize>)>,
}

impl Values {
    /// Finds each column's value in `text`, a stored record, in one pass over it.
    fn read_from(&mut self, text: &[u8], columns: &Columns) {
        self.spans.clear();
        self.spans.resize(columns.count, None);
        let (spans, hints) = (&mut self.spans, &mut self.hints);
        let mut n = 0;
        let scanned = scan_compact(text, |key, value| {
            if hints.len() <= n {
                hints.push((key.to_vec(), columns.find(key)));
            }
            let (hint, fed) = &mut hints[n];
            if hint.as_slice() != key {
                hint.clear();
                hint.extend_from_slice(key);
                *fed = columns.find(key);
            }
            for (_, column) in &columns.by_key[fed.clone()] {
                // The last of a key given twice wins, as serde_json's maps keep it.
                spans[*column] = Some(value.clone());
            }
            n += 1;
        });
        if scanned.is_none() {
            self.read_json(text, columns);
        }
    }

    /// [`Values::read_from`] for a record not written as td-local writes records (a key with
    /// escapes, spaces): serde_json reads it, or finds it is no JSON map and no column has a value.
    fn read_json(&mut self, text: &[u8], columns: &Columns) {
        self.spans.iter_mut().for_each(|s| *s = None);
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let found = serde::Deserializer::deserialize_map(
            &mut de,
            SpanVisitor {
                text,
                columns,
                spans: &mut self.spans,
            },
        );
        // One map and nothing after it, or no values at all.
        if found.and_then(|()| de.end()).is_err() {
            self.spans.iter_mut().for_each(|s| *s = None);
        }
    }
}

/// Reads `text` as a JSON map written the way serde_json writes one compactly (which is how
/// td-local stores every record), handing `found` each key (unescaped) and the span of its value.
/// None, part way through perhaps, for anything else: a key with escapes, a space, text that is
/// not such a map. Values are delimited, not fully checked: they are JSON that serde_json wrote.
fn scan_compact(text: &[u8], mut found: impl FnMut(&[u8], std::ops::Range<usize>)) -> Option<()> {
    if text.first() != Some(&b'{') {
        return None;
    }
    if text == b"{}" {
        return Some(());
    }
    let mut at = 1;
    loop {
        if text.get(at) != Some(&b'"') {
            return None;
        }
        let key_start = at + 1;
        let key_end = key_start + memchr::memchr2(b'"', b'\\', text.get(key_start..)?)?;
        if text[key_end] != b'"' || text.get(key_end + 1) != Some(&b':') {
            return None;
        }
        let value_start = key_end + 2;
        at = value_end(text, value_start)?;
        found(&text[key_start..key_end], value_start..at);
        match text.get(at)? {
            b',' => at += 1,
            b'}' if at + 1 == text.len() => return Some(()),
            _ => return None,
        }
    }
}

/// Where the JSON value starting at `at` ends (the index after it).
fn value_end(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => string_end(text, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match text.get(i)? {
                    b'"' => {
                        i = string_end(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A literal, or a number (its characters; serde_json wrote it, so not checked further).
        b't' => literal(text, at, b"true"),
        b'f' => literal(text, at, b"false"),
        b'n' => literal(text, at, b"null"),
        _ => {
            let len = text[at..]
                .iter()
                .position(|&b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))?;
            (len > 0).then_some(at + len)
        }
    }
}

/// Where `word`, expected at `at`, ends.
fn literal(text: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    text.get(at..)?.starts_with(word).then_some(at + word.len())
}

/// Where the JSON string starting at `at` (its opening quote) ends (the index after its
/// closing quote).
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', text.get(i..)?)?;
        if text[j] == b'"' {
            return Some(j + 1);
        }
        i = j + 2;
    }
}

/// A record's key: borrowed from the text unless written with escapes (serde's own `Cow`
/// always copies).
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Notes, for each key of a record that feeds a column, where its value lies.
struct SpanVisitor<'a> {
    text: &'a str,
    columns: &'a Columns,
    spans: &'a mut Vec<Option<std::ops::Range<usize>>>,
}

impl<'de> serde::de::Visitor<'de> for SpanVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a stored record (a JSON map)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            let start = value.get().as_ptr() as usize - self.text.as_ptr() as usize;
            for column in self.columns.of(key.as_bytes()) {
                // The last of a key given twice wins, as serde_json's maps keep it.
                self.spans[column] = Some(start..start + value.get().len());
            }
        }
        Ok(())
    }
}

/// One stored JSON value as its column reads it (`read`, its TD type: `records::ColumnRead`),
/// `raw` lying at `at` in its block. A value of another type than its column's reads as NULL,
/// an integer in a `double` column as a double, a number in a `string` column as its text.
fn cell(raw: &[u8], at: usize, read: ColumnRead) -> Cell {
    match read.reads(kind(raw)) {
        ReadAs::Null => Cell::Value(Sql::Null),
        ReadAs::Integer => match std::str::from_utf8(raw).ok().and_then(|r| r.parse::<i64>().ok()) {
            Some(n) => Cell::Value(Sql::Integer(n)),
            // Past i64: no `long`.
            None => Cell::Value(Sql::Null),
        },
        // SQLite keeps an infinity; a NaN it turns into NULL, which no virtual table can avoid.
        ReadAs::Real => Cell::Value(Sql::Real(real(raw))),
        ReadAs::NumberText if raw.starts_with(NON_FINITE_PREFIX.as_bytes()) => {
            Cell::Value(Sql::Text(crate::records::non_finite_text(real(raw)).to_string()))
        }
        ReadAs::NumberText => Cell::InBlock(at..at + raw.len()),
        ReadAs::AsStored => stored_cell(raw, at),
    }
}

/// The kind of the stored JSON value `raw` (`records::Kind::of` without parsing it).
fn kind(raw: &[u8]) -> Kind {
    match raw.first() {
        None | Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::Text,
        Some(b'{') if raw.starts_with(BINARY_PREFIX.as_bytes()) => {
            Kind::of(&serde_json::from_slice(raw).unwrap_or_default())
        }
        Some(b'{') if raw.starts_with(NON_FINITE_PREFIX.as_bytes()) => {
            Kind::of(&serde_json::from_slice(raw).unwrap_or_default())
        }
        Some(b'{') => Kind::Map,
        Some(b'[') => Kind::Array,
        Some(_) if raw.iter().all(|b| b.is_ascii_digit() || *b == b'-') => Kind::Integer,
        Some(_) => Kind::Float,
    }
}

/// A stored number, or the NaN or infinity of a `records::double_value` object.
fn real(raw: &[u8]) -> f64 {
    if raw.starts_with(NON_FINITE_PREFIX.as_bytes()) {
        let value = serde_json::from_slice(raw).unwrap_or_default();
        return crate::records::as_non_finite(&value).unwrap_or(f64::NAN);
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One stored JSON value as SQL reads it, as SQLite's `->>` would give it, but: a map or an
/// array is its JSON text, a binary value's object its bytes, and a boolean the text `true` or
/// `false` (its column is a `string` one, see `records::guess_type`), not SQLite's 1 or 0: TD
/// stores a boolean a bulk import brings as the string "true"/"false" (pytd's `_cast_dtypes`
/// relies on it, "Bulk Import API internally handles boolean string as a boolean type, and hence
/// "True" ("False") will be stored as "true" ("false")":
/// https://github.com/treasure-data/pytd/blob/master/pytd/writer.py), and td-client's CSV reader
/// sends "true"/"false" cells as msgpack booleans. `raw` lies at `at` in its block.
fn stored_cell(raw: &[u8], at: usize) -> Cell {
    let in_block = at..at + raw.len();
    match raw.first() {
        None | Some(b'n') => Cell::Value(Sql::Null),
        Some(b't') => Cell::Word("true"),
        Some(b'f') => Cell::Word("false"),
        Some(b'"') if memchr::memchr(b'\\', raw).is_none() => Cell::InBlock(at + 1..at + raw.len() - 1),
        Some(b'"') => Cell::Value(Sql::Text(serde_json::from_slice(raw).unwrap_or_default())),
        Some(b'{') if raw.starts_with(BINARY_PREFIX.as_bytes()) => {
            let value: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
            match crate::records::as_binary(&value) {
                Some(bytes) => Cell::Value(Sql::Blob(bytes)),
                None => Cell::InBlock(in_block),
            }
        }
        Some(b'{' | b'[') => Cell::InBlock(in_block),
        Some(_) if raw.iter().all(|b| b.is_ascii_digit() || *b == b'-') => {
            match std::str::from_utf8(raw).ok().and_then(|r| r.parse::<i64>().ok()) {
                Some(n) => Cell::Value(Sql::Integer(n)),
                // Past i64, as SQLite reads such a JSON number.
                None => Cell::Value(Sql::Real(real(raw))),
            }
        }
        Some(_) => Cell::Value(Sql::Real(real(raw))),
    }
}

/// How a stored binary value's JSON text starts (`records::binary_value`).
const BINARY_PREFIX: &str = "{\"\\u0000binary\"";

/// How a stored NaN or infinity's JSON text starts (`records::double_value`).
const NON_FINITE_PREFIX: &str = "{\"\\u0000double\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_a_scan_reads_follow_col_used_and_bit_63_stands_for_the_rest() {
        let time_only = Used::new(0b1, 3);
        assert!(time_only.columns.is_empty());
        let some = Used::new(0b1010, 3);
        assert_eq!(some.columns, vec![0, 2]);
        assert_eq!(some.slots, vec![Some(0), None, Some(1)]);
        let wide = Used::new(1 << 63, 70);
        assert_eq!(wide.columns, (62..70).collect::<Vec<_>>());
        assert_eq!(Used::new(u64::MAX, 70).columns.len(), 70);
    }

    /// A value of another type than its column's reads NULL; an integer in a `double` column
    /// reads as a double and a number in a `string` column as its text.
    #[test]
    fn a_value_of_another_type_than_its_column_reads_as_null() {
        let read = |raw: &str, read: ColumnRead| resolved(raw.as_bytes(), cell(raw.as_bytes(), 0, read));
        let text = |t: &str| Sql::Text(t.to_string());
        assert_eq!(read("\"abc\"", ColumnRead::Long), Sql::Null);
        assert_eq!(read("1.5", ColumnRead::Long), Sql::Null);
        assert_eq!(read("true", ColumnRead::Long), Sql::Null);
        assert_eq!(read("18446744073709551615", ColumnRead::Long), Sql::Null);
        assert_eq!(read("-7", ColumnRead::Long), Sql::Integer(-7));
        assert_eq!(read("3", ColumnRead::Double), Sql::Real(3.0));
        assert_eq!(read("\"1.5\"", ColumnRead::Double), Sql::Null);
        assert_eq!(read("3", ColumnRead::String), text("3"));
        assert_eq!(read("1.5", ColumnRead::String), text("1.5"));
        assert_eq!(read("[1]", ColumnRead::String), text("[1]"));
        assert_eq!(read("\"x\"", ColumnRead::Array), Sql::Null);
        assert_eq!(read("[1]", ColumnRead::Array), text("[1]"));
        assert_eq!(read("[1]", ColumnRead::Map), Sql::Null);
        assert_eq!(read("{\"k\":1}", ColumnRead::Map), text("{\"k\":1}"));
        assert_eq!(read("null", ColumnRead::String), Sql::Null);
    }

    #[test]
    fn the_binary_prefix_is_how_serde_json_writes_the_binary_key() {
        let text = serde_json::to_string(&crate::records::binary_value(b"ab")).unwrap();
        assert!(text.starts_with(BINARY_PREFIX), "{text}");
        assert!(crate::records::BINARY_KEY.starts_with('\u{0}'));
    }

    #[test]
    fn the_non_finite_prefix_is_how_serde_json_writes_the_double_key() {
        let text = serde_json::to_string(&crate::records::double_value(f64::NAN)).unwrap();
        assert!(text.starts_with(NON_FINITE_PREFIX), "{text}");
        assert!(crate::records::NON_FINITE_KEY.starts_with('\u{0}'));
    }

    /// An infinity reads as one in a `double` column and as its text in a `string` one; a NaN
    /// reads as NaN here, which SQLite then turns into NULL.
    #[test]
    fn nan_and_infinities_read_as_doubles_or_as_their_text() {
        let stored = |f: f64| serde_json::to_string(&crate::records::double_value(f)).unwrap();
        let read = |raw: &str, read: ColumnRead| resolved(raw.as_bytes(), cell(raw.as_bytes(), 0, read));
        assert_eq!(
            read(&stored(f64::INFINITY), ColumnRead::Double),
            Sql::Real(f64::INFINITY)
        );
        assert_eq!(
            read(&stored(f64::NEG_INFINITY), ColumnRead::Double),
            Sql::Real(f64::NEG_INFINITY)
        );
        assert!(matches!(read(&stored(f64::NAN), ColumnRead::Double), Sql::Real(f) if f.is_nan()));
        assert_eq!(
            read(&stored(f64::NEG_INFINITY), ColumnRead::String),
            Sql::Text("-Infinity".into())
        );
        assert_eq!(read(&stored(f64::NAN), ColumnRead::Long), Sql::Null);
    }
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            "[a-c\"\\\\/{}\\[\\],:\u{0}\u{1f}é ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `string` columns reading `keys`.
    fn string_columns(keys: &[impl AsRef<str>]) -> Vec<(String, ColumnRead)> {
        keys.iter()
            .map(|k| (k.as_ref().to_string(), ColumnRead::String))
            .collect()
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        "[ab\"\\\\é ]{0,3}"
    }

    /// A cell as SQL gets it, `text` being the block it was read from.
    fn resolved(text: &[u8], cell: Cell) -> Sql {
        match cell {
            Cell::Value(value) => value,
            Cell::InBlock(span) => Sql::Text(String::from_utf8(text[span].to_vec()).unwrap()),
            Cell::Word(word) => Sql::Text(word.to_string()),
        }
    }

    fn column_read() -> impl proptest::strategy::Strategy<Value = ColumnRead> {
        use proptest::prelude::*;
        prop_oneof![
            Just(ColumnRead::Long),
            Just(ColumnRead::Double),
            Just(ColumnRead::String),
            Just(ColumnRead::Array),
            Just(ColumnRead::Map),
        ]
    }

    fn stored_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            json_value(),
            any::<u64>().prop_map(serde_json::Value::from),
            proptest::collection::vec(any::<u8>(), 0..5).prop_map(|b| crate::records::binary_value(&b)),
            Just(serde_json::json!({"\u{0}binary": "not base64!"})),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// A query reads a stored value as `tail` does (`ColumnRead::read`): the scan's reading
        /// of the stored text is the plain reading of the value the column makes of it.
        #[test]
        fn a_query_reads_a_stored_value_as_its_column_type_reads_it(
            value in stored_value(),
            read in column_read(),
        ) {
            let text = serde_json::to_string(&value).unwrap();
            let scanned = resolved(text.as_bytes(), cell(text.as_bytes(), 0, read));
            let read_text = serde_json::to_string(&read.read(value)).unwrap();
            let plain = resolved(read_text.as_bytes(), stored_cell(read_text.as_bytes(), 0));
            proptest::prop_assert_eq!(scanned, plain, "{} in a {:?} column", text, read);
        }

        /// The scan of a record as td-local writes it finds what serde_json finds, and a record
        /// written any other way (spaces, escaped keys) is read by serde_json itself.
        #[test]
        fn the_scan_finds_each_columns_value_where_serde_json_does(
            record in proptest::collection::btree_map(key(), json_value(), 0..6),
            keys in proptest::collection::vec(key(), 0..5),
            pretty in proptest::prelude::any::<bool>(),
        ) {
            let record = serde_json::Value::Object(record.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&record).unwrap()
            } else {
                serde_json::to_string(&record).unwrap()
            };
            let columns = Columns::new(&string_columns(&keys));
            let (mut scanned, mut general) = (Values::default(), Values::default());
            scanned.read_from(text.as_bytes(), &columns);
            general.spans.resize(columns.count, None);
            general.read_json(text.as_bytes(), &columns);
            proptest::prop_assert_eq!(&scanned.spans, &general.spans, "{}", text);
            // Read again with the hints of the first read, as the next row would be.
            scanned.read_from(text.as_bytes(), &columns);
            proptest::prop_assert_eq!(&scanned.spans, &general.spans, "{}", text);
        }
    }

    /// Spaces and bare words stop the scan; serde_json then reads the record as JSON (or as no
    /// JSON at all), just as it would have alone.
    #[test]
    fn a_record_not_written_compactly_is_read_by_serde_json() {
        let columns = Columns::new(&string_columns(&["a", "b"]));
        for text in [
            r#"{"a": 1,"b":2}"#,
            r#"{"a":1 ,"b":2}"#,
            r#"{"a":1,"b":2 }"#,
            r#"{"a" :1,"b":true}"#,
            r#"{ "a":1,"b":null}"#,
            r#"{"a":xyz,"b":1}"#,
            r#"{"a":truex,"b":1}"#,
            r#"{"a":-1.5e+3,"b":[1, {"c": "}"}]}"#,
        ] {
            let mut scanned = Values::default();
            scanned.read_from(text.as_bytes(), &columns);
            let mut general = Values::default();
            general.spans.resize(columns.count, None);
            general.read_json(text.as_bytes(), &columns);
            assert_eq!(scanned.spans, general.spans, "{text}");
        }
    }

    #[test]
    fn text_that_is_not_a_json_map_has_no_values() {
        let columns = Columns::new(&string_columns(&["a"]));
        for text in [&b"[1]"[..], b"{\"a\":1", b"{\"a\":1}x", b"", b"{\"a\"1}", b"\xff"] {
            let mut values = Values::default();
            values.read_from(text, &columns);
            assert_eq!(values.spans, vec![None], "{:?}", String::from_utf8_lossy(text));
        }
    }
}
