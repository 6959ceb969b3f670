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
use flate2::read::MultiGzDecoder;
use rusqlite::{params, Connection};
use serde_json::{Map, Number, Value};
use td_model::name::is_reserved_column;
use td_model::schema::TableColumn;

use crate::catalog::{set_table_schema, table_schema};
use crate::error::{Error, Result};
use crate::store::now;

/// A row ready to store: its `time` and the whole record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub time: i64,
    pub record: Map<String, Value>,
}

/// Why one record of an import cannot be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("record {index} is not a map (msgpack records must be maps)")]
    NotAMap { index: usize },
    #[error("record {index} has no integer 'time' column")]
    NoTime { index: usize },
}

/// The key of the one-key object that stands for bytes in stored JSON.
pub const BINARY_KEY: &str = "\u{0}binary";

/// Bytes as stored JSON holds them.
pub fn binary_value(bytes: &[u8]) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(BINARY_KEY.to_string(), Value::String(BASE64.encode(bytes)));
    Value::Object(map)
}

/// The bytes a stored JSON value stands for, if it is one of [`binary_value`]'s objects.
pub fn as_binary(value: &Value) -> Option<Vec<u8>> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    BASE64.decode(map.get(BINARY_KEY)?.as_str()?).ok()
}

/// Converts one msgpack value to JSON as it is stored: binary as [`binary_value`], NaN and
/// extensions null.
pub fn msgpack_to_json(v: rmpv::Value) -> Value {
    convert(v, &binary_value)
}

/// Converts one msgpack value to JSON for showing (a `json`, `csv` or `tsv` result): binary as
/// base64 text. What TD shows for binary in those formats is unconfirmed; base64 is how Trino's
/// own client protocol writes `varbinary` in JSON.
pub fn msgpack_to_display(v: rmpv::Value) -> Value {
    convert(v, &|bytes| Value::String(BASE64.encode(bytes)))
}

fn convert(v: rmpv::Value, binary: &dyn Fn(&[u8]) -> Value) -> Value {
    use rmpv::Value as M;
    match v {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::from(n),
            (None, Some(n)) => Value::from(n),
            _ => Value::Null,
        },
        M::F32(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        M::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        // Text that is not UTF-8 is kept as the bytes it is.
        M::String(s) if s.is_str() => Value::String(s.into_str().unwrap_or_default()),
        M::String(s) => binary(&s.into_bytes()),
        M::Binary(b) => binary(&b),
        M::Array(items) => Value::Array(items.into_iter().map(|i| convert(i, binary)).collect()),
        M::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        M::String(s) => s.into_str().unwrap_or_default(),
                        other => other.to_string(),
                    };
                    (key, convert(v, binary))
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

/// Turns one decoded value into a row, checking it is a map with an integer `time`.
pub fn to_row(index: usize, value: rmpv::Value) -> Result<Row, RecordError> {
    let Value::Object(record) = msgpack_to_json(value) else {
        return Err(RecordError::NotAMap { index });
    };
    let time = record
        .get("time")
        .and_then(Value::as_i64)
        .ok_or(RecordError::NoTime { index })?;
    Ok(Row { time, record })
}

/// Decodes a gzip'd msgpack import body (any number of gzip members; empty is legal),
/// all or nothing: the first bad record rejects the whole body.
pub fn decode_import(body: &[u8]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if body.is_empty() {
        return Ok(rows);
    }
    read_msgpack_values(MultiGzDecoder::new(body), |value| {
        let row = to_row(rows.len(), value).map_err(|e| Error::bad_request(e.to_string()))?;
        rows.push(row);
        Ok(())
    })?;
    Ok(rows)
}

/// The TD type a value suggests when a new column is first seen (None for null).
fn guess_type(v: &Value) -> Option<&'static str> {
    match v {
        Value::Null => None,
        Value::Bool(_) => Some("string"),
        Value::Number(n) if n.is_f64() => Some("double"),
        Value::Number(_) => Some("long"),
        Value::String(_) => Some("string"),
        Value::Array(_) => Some("array<string>"),
        // Bytes go in a string column, as a varbinary result column does (td-model `td_type`).
        Value::Object(_) if as_binary(v).is_some() => Some("string"),
        Value::Object(_) => Some("map<string,string>"),
    }
}

/// Appends rows to a table and extends its schema with columns seen for the first time, as TD
/// does on import. Runs inside the caller's transaction.
pub fn insert_rows(conn: &Connection, table_id: i64, rows: &[Row]) -> Result<()> {
    let mut schema = table_schema(conn, table_id)?;
    let before = schema.len();
    {
        let mut stmt =
            conn.prepare_cached("INSERT INTO records (table_id, time, record) VALUES (?1, ?2, ?3)")?;
        for row in rows {
            let text = serde_json::to_string(&row.record).map_err(|e| Error::internal(e.to_string()))?;
            stmt.execute(params![table_id, row.time, text])?;
            extend_schema(&mut schema, &row.record);
        }
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
pub fn extend_schema(schema: &mut Vec<TableColumn>, record: &Map<String, Value>) {
    for (key, value) in record {
        if is_reserved_column(key) {
            continue;
        }
        if schema.iter().any(|c| c.name == *key) {
            continue;
        }
        if let Some(ty) = guess_type(value) {
            schema.push(TableColumn::new(key, ty));
        }
    }
}

/// A table's rows in the order they were stored.
pub fn table_rows(conn: &Connection, table_id: i64) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare("SELECT time, record FROM records WHERE table_id = ?1 ORDER BY rowid")?;
    let rows = stmt.query_map(params![table_id], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (time, text) = row?;
        let record = serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("a stored record is not a JSON map: {e}")))?;
        Ok(Row { time, record })
    })
    .collect()
}

/// How many rows a table holds.
pub fn row_count(conn: &Connection, table_id: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM records WHERE table_id = ?1",
        params![table_id],
        |r| r.get(0),
    )?)
}
