//! Rows on the wire and at rest: gzip'd msgpack maps in (imports, bulk-import parts), JSON text
//! in SQLite, msgpack maps out (tail). Also the table schema that grows with what is imported.
//!
//! JSON has no bytes, so a msgpack binary value is stored as a one-key object,
//! `{"\u0000binary": "<base64>"}` ([`binary_value`]): no TD column or map key starts with NUL, so
//! it cannot be taken for a user's map, and every way out (tail, queries, result output) turns it
//! back into bytes.

use std::io::{BufRead, BufReader, Read};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rusqlite::{params, Connection};
use serde_json::{Map, Number, Value};
use td_model::name::is_reserved_column;
use td_model::schema::TableColumn;

use crate::catalog::{column_key, has_column_for, set_table_schema, table_schema};
use crate::error::{Error, Result};
use crate::limits::RecordLimits;
use crate::segments::{self, Owner, Segment};
use crate::store::now;

/// A row ready to store: its `time` and the whole record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub time: i64,
    pub record: Map<String, Value>,
}

/// Why one record of an import cannot be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record {index} is not a map (msgpack records must be maps)")]
    NotAMap { index: usize },
    #[error("record {index} has no integer 'time' column")]
    NoTime { index: usize },
}

/// The key of the one-key object that stands for bytes in stored JSON.
pub(crate) const BINARY_KEY: &str = "\u{0}binary";

/// Bytes as stored JSON holds them.
pub fn binary_value(bytes: &[u8]) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(BINARY_KEY.to_string(), Value::String(BASE64.encode(bytes)));
    Value::Object(map)
}

/// The bytes a stored JSON value stands for, if it is one of [`binary_value`]'s objects.
pub(crate) fn as_binary(value: &Value) -> Option<Vec<u8>> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    BASE64.decode(map.get(BINARY_KEY)?.as_str()?).ok()
}

/// The key of the one-key object that stands for a NaN or an infinity in stored JSON (JSON has
/// neither; TD's `double` keeps them).
pub(crate) const NON_FINITE_KEY: &str = "\u{0}double";

/// A NaN or an infinity as stored JSON holds it; a finite `f` as the number it is.
pub fn double_value(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None => {
            let mut map = Map::with_capacity(1);
            map.insert(
                NON_FINITE_KEY.to_string(),
                Value::String(non_finite_text(f).to_string()),
            );
            Value::Object(map)
        }
    }
}

/// How a NaN or an infinity is written as text: as Presto's `CAST(x AS varchar)` and Trino's
/// client protocol write it.
pub(crate) fn non_finite_text(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// The NaN or infinity a stored JSON value stands for, if it is one of [`double_value`]'s objects.
pub(crate) fn as_non_finite(value: &Value) -> Option<f64> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    match map.get(NON_FINITE_KEY)?.as_str()? {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Converts one msgpack value to JSON as it is stored: binary as [`binary_value`], NaN and
/// infinities as [`double_value`], extensions null.
pub fn msgpack_to_json(v: rmpv::Value) -> Value {
    convert(v, &binary_value, &double_value)
}

/// Converts one msgpack value to JSON for showing (a `json`, `csv` or `tsv` result): binary as
/// base64 text, NaN and infinities as their text. What TD shows for either in those formats is
/// unconfirmed; both are how Trino's own client protocol writes them in JSON.
pub(crate) fn msgpack_to_display(v: rmpv::Value) -> Value {
    convert(v, &|bytes| Value::String(BASE64.encode(bytes)), &|f| {
        Number::from_f64(f).map_or_else(|| Value::String(non_finite_text(f).into()), Value::Number)
    })
}

fn convert(v: rmpv::Value, binary: &dyn Fn(&[u8]) -> Value, double: &dyn Fn(f64) -> Value) -> Value {
    use rmpv::Value as M;
    match v {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::from(n),
            (None, Some(n)) => Value::from(n),
            _ => Value::Null,
        },
        M::F32(f) => double(f64::from(f)),
        M::F64(f) => double(f),
        // Text that is not UTF-8 is kept as the bytes it is.
        M::String(s) if s.is_str() => Value::String(s.into_str().unwrap_or_default()),
        M::String(s) => binary(&s.into_bytes()),
        M::Binary(b) => binary(&b),
        M::Array(items) => Value::Array(items.into_iter().map(|i| convert(i, binary, double)).collect()),
        M::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        M::String(s) => s.into_str().unwrap_or_default(),
                        other => other.to_string(),
                    };
                    (key, convert(v, binary, double))
                })
                .collect(),
        ),
        M::Ext(..) => Value::Null,
    }
}

/// Converts stored JSON back to msgpack (for `tail` and result output); [`binary_value`]'s
/// objects become binary.
pub fn json_to_msgpack(v: &Value) -> rmpv::Value {
    use rmpv::Value as M;
    if let Some(bytes) = as_binary(v) {
        return M::Binary(bytes);
    }
    if let Some(f) = as_non_finite(v) {
        return M::F64(f);
    }
    match v {
        Value::Null => M::Nil,
        Value::Bool(b) => M::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                M::from(i)
            } else if let Some(u) = n.as_u64() {
                M::from(u)
            } else {
                M::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => M::from(s.as_str()),
        Value::Array(items) => M::Array(items.iter().map(json_to_msgpack).collect()),
        Value::Object(map) => M::Map(
            map.iter()
                .map(|(k, v)| (M::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

/// gzip of JSON values as msgpack, back to back: an import body, a part, a stored result.
pub fn gzip_msgpack(values: &[Value]) -> Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for value in values {
        rmpv::encode::write_value(&mut gz, &json_to_msgpack(value))
            .map_err(|e| Error::internal(format!("msgpack encoding failed: {e}")))?;
    }
    Ok(gz.finish()?)
}

/// Reads back-to-back msgpack values until a clean end of input.
pub fn read_msgpack_values<R: Read>(
    reader: R,
    mut each: impl FnMut(rmpv::Value) -> Result<()>,
) -> Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    loop {
        let at_end = reader
            .fill_buf()
            .map_err(|e| Error::bad_request(format!("invalid gzip or msgpack data: {e}")))?
            .is_empty();
        if at_end {
            return Ok(());
        }
        let value = rmpv::decode::read_value(&mut reader)
            .map_err(|e| Error::bad_request(format!("invalid msgpack data: {e}")))?;
        each(value)?;
    }
}

/// Maps an I/O error of reading a caller's data: an inflater past its limit is 413, the rest
/// is data that is not gzip'd msgpack (400).
fn read_error(e: std::io::Error) -> Error {
    match crate::inflate::overflow(&e) {
        Some(over) => Error::TooLarge(format!("the gzip'd data {over}")),
        None => Error::bad_request(format!("invalid gzip or msgpack data: {e}")),
    }
}

/// Reads back-to-back msgpack records a caller sent (an import body, a bulk-import part),
/// refusing (413) a record of more than `limits.bytes` bytes or `limits.values` values before
/// decoding it: a declared length or count is checked before anything is read or allocated for
/// it, so memory stays within the limit. `each` gets the record's index and its bytes (one whole
/// msgpack value; [`decode_record`] decodes it).
pub(crate) fn read_records<R: Read>(
    reader: R,
    limits: RecordLimits,
    mut each: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut raw = Vec::new();
    for index in 0.. {
        let buf = reader.fill_buf().map_err(read_error)?;
        if buf.is_empty() {
            return Ok(());
        }
        // A record the buffer holds whole is handed over where it is; the rest are copied.
        if let Some(len) = whole_record(buf, limits) {
            each(index, &buf[..len])?;
            reader.consume(len);
            continue;
        }
        raw.clear();
        copy_record(&mut reader, &mut raw, limits).map_err(|e| match e {
            CopyError::Io(e) => read_error(e),
            CopyError::TooLarge(what) => Error::TooLarge(format!(
                "record {index} is larger than {what}; td-local takes records of at most {} bytes \
                 and {} values",
                limits.bytes, limits.values
            )),
        })?;
        each(index, &raw)?;
    }
    Ok(())
}

/// Decodes record `index`, the bytes [`read_records`] handed over.
pub(crate) fn decode_record(index: usize, raw: &[u8]) -> Result<rmpv::Value> {
    rmpv::decode::read_value(&mut &raw[..])
        .map_err(|e| Error::bad_request(format!("invalid msgpack data in record {index}: {e}")))
}

enum CopyError {
    Io(std::io::Error),
    /// What the record would exceed.
    TooLarge(String),
}

impl From<std::io::Error> for CopyError {
    fn from(e: std::io::Error) -> CopyError {
        CopyError::Io(e)
    }
}

/// Copies the bytes of one msgpack value from `reader` into `raw`, walking it without decoding,
/// within `limits`. Each value's header is read from the reader's buffer, and the value is
/// copied in one piece when the buffer holds it (a record of small values costs one copy each).
fn copy_record(reader: &mut impl BufRead, raw: &mut Vec<u8>, limits: RecordLimits) -> Result<(), CopyError> {
    let mut pending: u64 = 1;
    let mut values: u64 = 0;
    while pending > 0 {
        pending -= 1;
        values += 1;
        let buf = reader.fill_buf()?;
        let head = value_head(buf)?;
        let marker = buf[0];
        let (head, data, items, head_copied) = match head {
            Some((head, data, items)) => (head, data, items, false),
            // The header runs past the buffer: copy its bytes, then read it from the copy.
            None => {
                let start = raw.len();
                copy_exact(reader, raw, head_len(marker), limits)?;
                let (head, data, items) = value_head(&raw[start..])?.expect("a whole header was copied");
                (head, data, items, true)
            }
        };
        pending += items;
        if values + pending > limits.values as u64 {
            return Err(CopyError::TooLarge(format!("{} values", limits.values)));
        }
        let data = usize::try_from(data).unwrap_or(usize::MAX);
        if head_copied {
            copy_exact(reader, raw, data, limits)?;
            continue;
        }
        let whole = head.saturating_add(data);
        let buf = reader.fill_buf()?;
        if whole <= buf.len() && raw.len() + whole <= limits.bytes {
            raw.extend_from_slice(&buf[..whole]);
            reader.consume(whole);
        } else {
            copy_exact(reader, raw, head, limits)?;
            copy_exact(reader, raw, data, limits)?;
        }
    }
    Ok(())
}

/// The length of the record at the start of `buf` when `buf` holds all of it and it is within
/// `limits`; None otherwise (then [`copy_record`] reads it, and says what is wrong).
fn whole_record(buf: &[u8], limits: RecordLimits) -> Option<usize> {
    let (mut at, mut pending, mut values) = (0usize, 1u64, 0u64);
    while pending > 0 {
        pending -= 1;
        values += 1;
        let (head, data, items) = value_head(buf.get(at..).filter(|b| !b.is_empty())?).ok()??;
        pending += items;
        if values + pending > limits.values as u64 {
            return None;
        }
        at = at.checked_add(head)?.checked_add(usize::try_from(data).ok()?)?;
        if at > buf.len() || at > limits.bytes {
            return None;
        }
    }
    Some(at)
}

/// Bytes of the length a msgpack value starting with `marker` declares after it.
fn length_bytes(marker: u8) -> usize {
    use rmp::Marker as M;
    match M::from_u8(marker) {
        M::Str8 | M::Bin8 | M::Ext8 => 1,
        M::Str16 | M::Bin16 | M::Array16 | M::Map16 | M::Ext16 => 2,
        M::Str32 | M::Bin32 | M::Array32 | M::Map32 | M::Ext32 => 4,
        _ => 0,
    }
}

/// Bytes of the header of a msgpack value starting with `marker`: the marker, its length and,
/// for an ext value, its type byte.
fn head_len(marker: u8) -> usize {
    use rmp::Marker as M;
    let ext_type = match M::from_u8(marker) {
        M::FixExt1 | M::FixExt2 | M::FixExt4 | M::FixExt8 | M::FixExt16 => 1,
        M::Ext8 | M::Ext16 | M::Ext32 => 1,
        _ => 0,
    };
    1 + length_bytes(marker) + ext_type
}

/// The header of the msgpack value at the start of `buf`: its length, the bytes of data that
/// follow it, and the values it contains; None when `buf` ends inside the header.
fn value_head(buf: &[u8]) -> Result<Option<(usize, u64, u64)>, CopyError> {
    use rmp::Marker as M;
    let Some(&marker) = buf.first() else {
        return Err(CopyError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the data ends inside a msgpack value",
        )));
    };
    let head = head_len(marker);
    if buf.len() < head {
        return Ok(None);
    }
    let length = buf[1..1 + length_bytes(marker)]
        .iter()
        .fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let (data, items) = match M::from_u8(marker) {
        M::FixPos(_) | M::FixNeg(_) | M::Null | M::True | M::False => (0, 0),
        M::U8 | M::I8 => (1, 0),
        M::U16 | M::I16 => (2, 0),
        M::U32 | M::I32 | M::F32 => (4, 0),
        M::U64 | M::I64 | M::F64 => (8, 0),
        M::FixStr(n) => (u64::from(n), 0),
        M::Str8 | M::Bin8 | M::Str16 | M::Bin16 | M::Str32 | M::Bin32 => (length, 0),
        // Ext: the type byte is in the header; `length` counts the data after it.
        M::FixExt1 => (1, 0),
        M::FixExt2 => (2, 0),
        M::FixExt4 => (4, 0),
        M::FixExt8 => (8, 0),
        M::FixExt16 => (16, 0),
        M::Ext8 | M::Ext16 | M::Ext32 => (length, 0),
        M::FixArray(n) => (0, u64::from(n)),
        M::FixMap(n) => (0, 2 * u64::from(n)),
        M::Array16 | M::Array32 => (0, length),
        M::Map16 | M::Map32 => (0, 2 * length),
        M::Reserved => {
            return Err(CopyError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reserved msgpack marker 0xc1",
            )))
        }
    };
    Ok(Some((head, data, items)))
}

/// Appends exactly `n` bytes of `reader` to `raw` (refusing to pass `limits.bytes` before reading
/// them); returns them. Copies from the reader's buffer: most values are a few bytes.
fn copy_exact<'a>(
    reader: &mut (impl BufRead + ?Sized),
    raw: &'a mut Vec<u8>,
    n: usize,
    limits: RecordLimits,
) -> Result<&'a [u8], CopyError> {
    if raw.len().saturating_add(n) > limits.bytes {
        return Err(CopyError::TooLarge(format!("{} bytes", limits.bytes)));
    }
    let start = raw.len();
    let mut left = n;
    while left > 0 {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Err(CopyError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the data ends inside a msgpack value ({} of {n} bytes)", n - left),
            )));
        }
        let take = buf.len().min(left);
        raw.extend_from_slice(&buf[..take]);
        reader.consume(take);
        left -= take;
    }
    Ok(&raw[start..])
}

/// Turns one decoded value into a row, checking it is a map with an integer `time`.
pub(crate) fn to_row(index: usize, value: rmpv::Value) -> Result<Row, RecordError> {
    let Value::Object(record) = msgpack_to_json(value) else {
        return Err(RecordError::NotAMap { index });
    };
    let time = record
        .get("time")
        .and_then(Value::as_i64)
        .ok_or(RecordError::NoTime { index })?;
    Ok(Row { time, record })
}

/// What kind of value a record holds under a key: all that the type rules below look at (the
/// type a new column gets, how a column reads a value), so that decoded JSON values, flat records
/// (`flat`) and stored JSON text (`query::rows`) are held to the same rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Integer,
    Float,
    Text,
    /// Bytes (stored as a [`binary_value`] object).
    Binary,
    Array,
    Map,
}

impl Kind {
    pub(crate) fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_f64() => Kind::Float,
            Value::Number(_) => Kind::Integer,
            Value::String(_) => Kind::Text,
            Value::Array(_) => Kind::Array,
            Value::Object(_) if as_binary(value).is_some() => Kind::Binary,
            Value::Object(_) if as_non_finite(value).is_some() => Kind::Float,
            Value::Object(_) => Kind::Map,
        }
    }

    /// The TD type a value of this kind suggests when a new column is first seen (None for null).
    fn guess_type(self) -> Option<&'static str> {
        match self {
            Kind::Null => None,
            // Bytes go in a string column, as a varbinary result column does (td-model `td_type`).
            Kind::Bool | Kind::Text | Kind::Binary => Some("string"),
            Kind::Integer => Some("long"),
            Kind::Float => Some("double"),
            Kind::Array => Some("array<string>"),
            Kind::Map => Some("map<string,string>"),
        }
    }
}

/// How a column of a TD type reads the value stored under its key. TD is schema-on-read: it
/// stores what was imported ("store-first, then schema-later",
/// https://docs.treasuredata.com/articles/schema) and applies a column's type when the column is
/// read, so a bulk import takes a value whatever its column's type (no error record), and
/// embulk-output-td converts values to the column types on the client side because TD does not
/// (https://github.com/treasure-data/embulk-output-td/pull/100). What a value of another type
/// reads as is not stated by any public source. Assumed: NULL, the harsher reading: the row is
/// counted valid and the value is silently lost. Except where the value converts without loss,
/// as Presto/Hive would read it: an integer in a `double` column reads as that number (3 as 3.0:
/// integers fit doubles), and a number in a `string` column as its text (3 as "3", 1.5 as "1.5":
/// the number as imported, written as JSON writes it), as a varchar column shows a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnRead {
    /// `long`, `int`: integers in i64's range.
    Long,
    /// `double`, `float`: numbers.
    Double,
    /// `string`: text, and every other value as td-local shows it (a number as its text, a
    /// boolean as "true"/"false", an array or map as its JSON, bytes as bytes).
    String,
    /// `array<…>`: arrays (their JSON text, which a query result writes back as an array).
    Array,
    /// `map<…>`: maps (their JSON text, which a query result writes back as a map).
    Map,
}

/// What a column makes of one stored value (see [`ColumnRead::reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadAs {
    Null,
    /// An integer (NULL past i64).
    Integer,
    /// A number, as a double.
    Real,
    /// A number, as its JSON text.
    NumberText,
    /// The value as td-local reads a value of its kind.
    AsStored,
}

impl ColumnRead {
    /// How a column of TD type `td_type` reads its values (`string` for a type td-model does not
    /// know, which a stored schema never has).
    pub(crate) fn of(td_type: &str) -> ColumnRead {
        let ty = td_type.trim();
        match ty {
            "long" | "int" => ColumnRead::Long,
            "double" | "float" => ColumnRead::Double,
            _ if ty.starts_with("array<") => ColumnRead::Array,
            _ if ty.starts_with("map<") => ColumnRead::Map,
            _ => ColumnRead::String,
        }
    }

    /// What this column makes of a stored value of kind `kind`.
    pub(crate) fn reads(self, kind: Kind) -> ReadAs {
        match (self, kind) {
            (_, Kind::Null) => ReadAs::Null,
            (ColumnRead::Long, Kind::Integer) => ReadAs::Integer,
            (ColumnRead::Double, Kind::Integer | Kind::Float) => ReadAs::Real,
            (ColumnRead::String, Kind::Integer | Kind::Float) => ReadAs::NumberText,
            (ColumnRead::String, _) => ReadAs::AsStored,
            (ColumnRead::Array, Kind::Array) | (ColumnRead::Map, Kind::Map) => ReadAs::AsStored,
            _ => ReadAs::Null,
        }
    }

    /// `value`, a stored JSON value, as this column reads it (for `tail`; queries read the stored
    /// text directly, `query::rows`, under the same [`ColumnRead::reads`]).
    pub(crate) fn read(self, value: Value) -> Value {
        match self.reads(Kind::of(&value)) {
            ReadAs::Null => Value::Null,
            ReadAs::Integer => value.as_i64().map_or(Value::Null, Value::from),
            ReadAs::Real => match as_non_finite(&value) {
                Some(_) => value,
                None => value.as_f64().map_or(Value::Null, double_value),
            },
            ReadAs::NumberText => match as_non_finite(&value) {
                Some(f) => Value::String(non_finite_text(f).to_string()),
                None => Value::String(value.to_string()),
            },
            ReadAs::AsStored => value,
        }
    }
}

/// `record`, a stored row, with each value a schema column reads as that column reads it (the
/// first column reading a key decides); keys no column reads are left as they are.
pub(crate) fn read_by_schema(mut record: Map<String, Value>, schema: &[TableColumn]) -> Map<String, Value> {
    for (key, value) in record.iter_mut() {
        if let Some(column) = schema.iter().find(|c| column_key(c) == key) {
            *value = ColumnRead::of(&column.td_type).read(std::mem::take(value));
        }
    }
    record
}

/// Appends rows to a table and extends its schema with columns seen for the first time, as TD
/// does on import. Runs inside the caller's transaction.
pub(crate) fn insert_rows(conn: &Connection, table_id: i64, rows: &[Row]) -> Result<()> {
    let mut schema = table_schema(conn, table_id)?;
    let before = schema.len();
    if !rows.is_empty() {
        let mut segment = Segment::create(conn, Owner::Table(table_id))?;
        for row in rows {
            let text = serde_json::to_string(&row.record).map_err(|e| Error::internal(e.to_string()))?;
            segment.push(row.time, &text)?;
            extend_schema(&mut schema, &row.record);
        }
        segment.finish()?;
    }
    if schema.len() != before {
        set_table_schema(conn, table_id, &schema)
    } else {
        conn.execute(
            "UPDATE tables SET updated_at = ?1 WHERE id = ?2",
            params![now(), table_id],
        )?;
        Ok(())
    }
}

/// Adds to `schema` the columns of `record` it does not have yet (never `time` or `v`).
pub(crate) fn extend_schema(schema: &mut Vec<TableColumn>, record: &Map<String, Value>) {
    extend_schema_by(
        schema,
        record.iter().map(|(key, value)| (key.as_str(), Kind::of(value))),
    );
}

/// [`extend_schema`] for a record read some other way, as its keys and the kinds of their values.
pub(crate) fn extend_schema_by<'k>(
    schema: &mut Vec<TableColumn>,
    entries: impl IntoIterator<Item = (&'k str, Kind)>,
) {
    for (key, kind) in entries {
        if is_reserved_column(key) || has_column_for(schema, key) {
            continue;
        }
        if let Some(ty) = kind.guess_type() {
            schema.push(TableColumn::new(key, ty));
        }
    }
}

/// `detect_schema`: adds to the table's schema a column for every key of its rows it lacks, typed
/// from the values (as a perform or an import would have).
pub(crate) fn detect_schema(conn: &Connection, table_id: i64) -> Result<()> {
    let mut columns = table_schema(conn, table_id)?;
    segments::for_each_row(conn, table_id, |_, _, text| {
        let record: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| Error::internal(format!("a stored record is not a JSON map: {e}")))?;
        extend_schema(&mut columns, &record);
        Ok(())
    })?;
    set_table_schema(conn, table_id, &columns)
}

/// A table's rows in the order they were stored.
pub(crate) fn table_rows(conn: &Connection, table_id: i64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    segments::for_each_row(conn, table_id, |_, time, text| {
        let record = serde_json::from_str(text)
            .map_err(|e| Error::internal(format!("a stored record is not a JSON map: {e}")))?;
        rows.push(Row { time, record });
        Ok(())
    })?;
    Ok(rows)
}

/// How many rows a table holds.
pub(crate) fn row_count(conn: &Connection, table_id: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(rows), 0) FROM segments WHERE table_id = ?1",
        params![table_id],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Hands out one byte a read: every header and value straddles a buffer's end.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn sample_values() -> Vec<rmpv::Value> {
        use rmpv::Value as V;
        let mut values: Vec<V> = [1usize, 2, 4, 8, 16, 3, 300, 70_000]
            .into_iter()
            .map(|len| V::Ext(5, vec![7; len]))
            .collect();
        values.push(V::Map(vec![
            ("time".into(), V::from(1_700_000_000)),
            ("s".into(), V::from("x".repeat(70_000))),
            ("b".into(), V::Binary(vec![1; 300])),
            (
                "a".into(),
                V::Array(vec![V::Nil, V::from(-1), V::from(1.5), V::from(u64::MAX)]),
            ),
            ("m".into(), V::Map(vec![(V::from(1), V::Boolean(true))])),
        ]));
        values
    }

    fn read_all(reader: impl Read, limits: RecordLimits) -> Result<Vec<rmpv::Value>> {
        let mut out = Vec::new();
        read_records(reader, limits, |index, raw| {
            out.push(decode_record(index, raw)?);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn records_read_the_same_however_the_input_is_split() {
        let values = sample_values();
        let mut raw = Vec::new();
        for value in &values {
            rmpv::encode::write_value(&mut raw, value).unwrap();
        }
        assert_eq!(read_all(&raw[..], RecordLimits::default()).unwrap(), values);
        assert_eq!(read_all(OneByte(&raw), RecordLimits::default()).unwrap(), values);
    }

    #[test]
    fn a_declared_length_or_count_past_the_limits_is_refused_before_it_is_read() {
        let limits = RecordLimits {
            bytes: 1000,
            values: 10,
        };
        // A string declaring 4 GiB with no bytes behind it.
        let huge = [0xdb, 0xff, 0xff, 0xff, 0xff];
        let e = read_all(&huge[..], limits).unwrap_err();
        assert!(
            matches!(&e, Error::TooLarge(m) if m.contains("1000 bytes")),
            "{e}"
        );
        // An array declaring 2^32-1 items.
        let many = [0xdd, 0xff, 0xff, 0xff, 0xff];
        let e = read_all(OneByte(&many), limits).unwrap_err();
        assert!(matches!(&e, Error::TooLarge(m) if m.contains("10 values")), "{e}");
        // Cut inside a value: not msgpack (400), not a limit.
        let cut = [0xa5, b'a', b'b'];
        assert!(matches!(read_all(&cut[..], limits), Err(Error::BadRequest(_))));
    }
}
