//! Rows from result form (msgpack arrays) to import form (msgpack maps with an integer `time`),
//! at the msgpack byte level: values are copied, not decoded, except `time` and booleans.

use std::io::{self, BufRead, Read, Write};

use rmp::Marker;

use super::columns::{MappedColumn, TimeFill};

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("reading the result: {0}")]
    Io(#[from] io::Error),
    #[error("result row {row}: {detail}")]
    Malformed { row: u64, detail: String },
}

/// How a column's value is carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carry {
    Copy,
    /// `true`/`false` become 1/0 (TD has no boolean type).
    BoolToLong,
    /// Must be an integer: it is the row's `time`.
    Time,
    /// Copied, and read as a time (seconds or a timestamp) for the row's `time` (`time_column`).
    TimeFrom,
}

/// Turns result rows into import records for one result schema.
pub struct Transcoder {
    /// Each column's target name, already encoded as a msgpack string.
    keys: Vec<Vec<u8>>,
    carry: Vec<Carry>,
    fixed_time: Option<i64>,
    /// The `time_column`'s name, when rows take their `time` from it.
    time_column: Option<String>,
    /// A value of the `time_column`, as read.
    scratch: Vec<u8>,
    rows: u64,
}

fn encoded_str(s: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(s.len() + 2);
    rmp::encode::write_str(&mut buf, s).expect("writing to a Vec cannot fail");
    buf
}

impl Transcoder {
    pub fn new(columns: &[MappedColumn], time: TimeFill) -> Transcoder {
        let carry = columns
            .iter()
            .enumerate()
            .map(|(i, c)| match time {
                TimeFill::Column(t) if t == i => Carry::Time,
                TimeFill::Parsed(t) if t == i => Carry::TimeFrom,
                _ if c.is_boolean() => Carry::BoolToLong,
                _ => Carry::Copy,
            })
            .collect();
        Transcoder {
            keys: columns.iter().map(|c| encoded_str(&c.target)).collect(),
            carry,
            fixed_time: match time {
                TimeFill::Fixed(t) => Some(t),
                TimeFill::Column(_) | TimeFill::Parsed(_) => None,
            },
            time_column: match time {
                TimeFill::Parsed(i) => Some(columns[i].source.clone()),
                _ => None,
            },
            scratch: Vec::new(),
            rows: 0,
        }
    }

    /// Rows transcoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Transcodes the next row of `input` into `out`; `false` at a clean end of input.
    pub fn next_row<R: BufRead, W: Write>(
        &mut self,
        input: &mut R,
        out: &mut W,
    ) -> Result<bool, TranscodeError> {
        if input.fill_buf()?.is_empty() {
            return Ok(false);
        }
        let row = self.rows + 1;
        let malformed = |detail: String| TranscodeError::Malformed { row, detail };
        let len = match read_marker(input)? {
            Marker::FixArray(n) => u32::from(n),
            Marker::Array16 => u32::from(read_u16(input)?),
            Marker::Array32 => read_u32(input)?,
            other => return Err(malformed(format!("expected an array of values, found {other:?}"))),
        };
        if len as usize != self.keys.len() {
            return Err(malformed(format!(
                "has {len} values, the result schema has {}",
                self.keys.len()
            )));
        }
        let added = self.fixed_time.is_some() || self.time_column.is_some();
        let entries = self.keys.len() as u32 + u32::from(added);
        rmp::encode::write_map_len(out, entries).map_err(io::Error::from)?;
        let mut time = self.fixed_time;
        for (key, carry) in self.keys.iter().zip(&self.carry) {
            out.write_all(key)?;
            match carry {
                Carry::Copy => copy_value(input, out)?,
                Carry::BoolToLong => match read_marker(input)? {
                    Marker::True => write_int(out, 1)?,
                    Marker::False => write_int(out, 0)?,
                    other => copy_after_marker(other, input, out)?,
                },
                Carry::Time => match read_int(input)? {
                    Some(t) => write_int(out, t)?,
                    None => {
                        return Err(malformed(
                            "its `time` value is not an integer (unix seconds)".into(),
                        ))
                    }
                },
                Carry::TimeFrom => {
                    self.scratch.clear();
                    copy_value(input, &mut self.scratch)?;
                    out.write_all(&self.scratch)?;
                    let column = self.time_column.as_deref().unwrap_or_default();
                    time = Some(time_of(&self.scratch).map_err(|value| {
                        malformed(format!(
                            "its time_column `{column}` holds {value}, which is not a time (Unix seconds, \
                             ISO-8601 or YYYY-MM-DD HH:MM:SS[.fff] with an optional zone)"
                        ))
                    })?);
                }
            }
        }
        if let Some(t) = time.filter(|_| added) {
            out.write_all(&encoded_str("time"))?;
            write_int(out, t)?;
        }
        self.rows = row;
        Ok(true)
    }
}

/// A `time_column` value as Unix seconds: an integer, or a timestamp string. `Err` shows the value.
fn time_of(mut encoded: &[u8]) -> Result<i64, String> {
    let value = rmpv::decode::read_value(&mut encoded).map_err(|e| format!("an unreadable value ({e})"))?;
    match &value {
        rmpv::Value::Integer(i) => i
            .as_i64()
            .and_then(|t| td_model::time::check_seconds(t).ok())
            .ok_or_else(|| format!("`{i}`")),
        rmpv::Value::String(s) => {
            let text = s.as_str().unwrap_or_default();
            td_model::time::parse_time(text)
                .map_err(|_| format!("`{}`", text.chars().take(80).collect::<String>()))
        }
        rmpv::Value::Nil => Err("null".to_string()),
        other => Err(format!("`{other}`")),
    }
}

fn write_int<W: Write>(out: &mut W, v: i64) -> io::Result<()> {
    rmp::encode::write_sint(out, v).map(drop).map_err(io::Error::from)
}

fn read_marker<R: Read>(r: &mut R) -> io::Result<Marker> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(Marker::from_u8(b[0]))
}

fn read_n<const N: usize, R: Read>(r: &mut R) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_u16<R: Read>(r: &mut R) -> io::Result<u16> {
    read_n::<2, _>(r).map(u16::from_be_bytes)
}

fn read_u32<R: Read>(r: &mut R) -> io::Result<u32> {
    read_n::<4, _>(r).map(u32::from_be_bytes)
}

/// Reads one integer value (any msgpack integer width); `None` for any other value, which is
/// then consumed.
fn read_int<R: Read>(r: &mut R) -> io::Result<Option<i64>> {
    let m = read_marker(r)?;
    Ok(Some(match m {
        Marker::FixPos(v) => i64::from(v),
        Marker::FixNeg(v) => i64::from(v),
        Marker::U8 => i64::from(read_n::<1, _>(r)?[0]),
        Marker::U16 => i64::from(read_u16(r)?),
        Marker::U32 => i64::from(read_u32(r)?),
        Marker::U64 => match i64::try_from(u64::from_be_bytes(read_n::<8, _>(r)?)) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
        Marker::I8 => i64::from(i8::from_be_bytes(read_n::<1, _>(r)?)),
        Marker::I16 => i64::from(i16::from_be_bytes(read_n::<2, _>(r)?)),
        Marker::I32 => i64::from(i32::from_be_bytes(read_n::<4, _>(r)?)),
        Marker::I64 => i64::from_be_bytes(read_n::<8, _>(r)?),
        other => {
            copy_after_marker(other, r, &mut io::sink())?;
            return Ok(None);
        }
    }))
}

/// Copies one whole msgpack value from `r` to `w`, unchanged.
pub fn copy_value<R: Read, W: Write>(r: &mut R, w: &mut W) -> io::Result<()> {
    let m = read_marker(r)?;
    copy_after_marker(m, r, w)
}

/// Copies a value whose marker was already read (and is re-emitted here).
fn copy_after_marker<R: Read, W: Write>(m: Marker, r: &mut R, w: &mut W) -> io::Result<()> {
    w.write_all(&[m.to_u8()])?;
    let payload: u64 = match m {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => 0,
        Marker::U8 | Marker::I8 => 1,
        Marker::U16 | Marker::I16 => 2,
        Marker::U32 | Marker::I32 | Marker::F32 => 4,
        Marker::U64 | Marker::I64 | Marker::F64 => 8,
        Marker::FixStr(n) => u64::from(n),
        Marker::Str8 | Marker::Bin8 => u64::from(copy_len::<1, _, _>(r, w)?),
        Marker::Str16 | Marker::Bin16 => u64::from(copy_len::<2, _, _>(r, w)?),
        Marker::Str32 | Marker::Bin32 => u64::from(copy_len::<4, _, _>(r, w)?),
        Marker::FixExt1 => 2,
        Marker::FixExt2 => 3,
        Marker::FixExt4 => 5,
        Marker::FixExt8 => 9,
        Marker::FixExt16 => 17,
        Marker::Ext8 => u64::from(copy_len::<1, _, _>(r, w)?) + 1,
        Marker::Ext16 => u64::from(copy_len::<2, _, _>(r, w)?) + 1,
        Marker::Ext32 => u64::from(copy_len::<4, _, _>(r, w)?) + 1,
        Marker::FixArray(n) => return copy_values(r, w, u64::from(n)),
        Marker::FixMap(n) => return copy_values(r, w, 2 * u64::from(n)),
        Marker::Array16 | Marker::Array32 | Marker::Map16 | Marker::Map32 => {
            let len = match m {
                Marker::Array16 | Marker::Map16 => copy_len::<2, _, _>(r, w)?,
                _ => copy_len::<4, _, _>(r, w)?,
            };
            let per_entry = if matches!(m, Marker::Map16 | Marker::Map32) {
                2
            } else {
                1
            };
            return copy_values(r, w, per_entry * u64::from(len));
        }
        Marker::Reserved => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reserved msgpack marker 0xc1",
            ))
        }
    };
    let copied = io::copy(&mut r.by_ref().take(payload), w)?;
    if copied != payload {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn copy_values<R: Read, W: Write>(r: &mut R, w: &mut W, n: u64) -> io::Result<()> {
    for _ in 0..n {
        copy_value(r, w)?;
    }
    Ok(())
}

/// Copies a big-endian length of `N` bytes and returns it.
fn copy_len<const N: usize, R: Read, W: Write>(r: &mut R, w: &mut W) -> io::Result<u32> {
    let b = read_n::<N, _>(r)?;
    w.write_all(&b)?;
    Ok(b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::columns::map_columns;
    use rmpv::Value;

    fn columns(spec: &[(&str, &str)]) -> Vec<MappedColumn> {
        map_columns(
            &spec
                .iter()
                .map(|(n, t)| td_model::schema::ResultColumn {
                    name: n.to_string(),
                    result_type: t.to_string(),
                })
                .collect::<Vec<_>>(),
        )
    }

    fn encode(rows: &[Value]) -> Vec<u8> {
        let mut buf = Vec::new();
        for r in rows {
            rmpv::encode::write_value(&mut buf, r).unwrap();
        }
        buf
    }

    fn transcode_all(t: &mut Transcoder, input: &[u8]) -> Result<Vec<Value>, TranscodeError> {
        let mut reader = io::BufReader::new(input);
        let mut out = Vec::new();
        while t.next_row(&mut reader, &mut out)? {}
        let mut cursor = &out[..];
        let mut values = Vec::new();
        while !cursor.is_empty() {
            values.push(rmpv::decode::read_value(&mut cursor).unwrap());
        }
        Ok(values)
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn arrays_become_maps_with_a_fixed_time() {
        let cols = columns(&[
            ("Code", "bigint"),
            ("name", "varchar"),
            ("tags", "array(varchar)"),
        ]);
        let input = encode(&[
            Value::Array(vec![200.into(), "a".into(), Value::Array(vec!["x".into()])]),
            Value::Array(vec![Value::from(-5), Value::Nil, Value::Array(vec![])]),
        ]);
        let mut t = Transcoder::new(&cols, TimeFill::Fixed(1_700_000_000));
        let out = transcode_all(&mut t, &input).unwrap();
        assert_eq!(t.rows(), 2);
        assert_eq!(
            out,
            vec![
                map(&[
                    ("code", 200.into()),
                    ("name", "a".into()),
                    ("tags", Value::Array(vec!["x".into()])),
                    ("time", 1_700_000_000.into())
                ]),
                map(&[
                    ("code", Value::from(-5)),
                    ("name", Value::Nil),
                    ("tags", Value::Array(vec![])),
                    ("time", 1_700_000_000.into())
                ]),
            ]
        );
    }

    #[test]
    fn time_comes_from_the_result_column_when_it_has_one() {
        let cols = columns(&[("time", "bigint"), ("x", "double")]);
        let input = encode(&[Value::Array(vec![Value::from(1_412_320_845u64), Value::F64(1.5)])]);
        let out = transcode_all(&mut Transcoder::new(&cols, TimeFill::Column(0)), &input).unwrap();
        assert_eq!(
            out,
            vec![map(&[("time", 1_412_320_845.into()), ("x", Value::F64(1.5))])]
        );
    }

    #[test]
    fn a_time_column_that_is_not_an_integer_is_an_error_naming_the_row() {
        let cols = columns(&[("time", "bigint")]);
        let input = encode(&[Value::Array(vec![1.into()]), Value::Array(vec![Value::Nil])]);
        let err = transcode_all(&mut Transcoder::new(&cols, TimeFill::Column(0)), &input).unwrap_err();
        assert!(err.to_string().contains("result row 2"), "{err}");
    }

    #[test]
    fn booleans_become_longs() {
        let cols = columns(&[("ok", "boolean")]);
        let input = encode(&[
            Value::Array(vec![true.into()]),
            Value::Array(vec![false.into()]),
            Value::Array(vec![Value::Nil]),
        ]);
        let out = transcode_all(&mut Transcoder::new(&cols, TimeFill::Fixed(0)), &input).unwrap();
        let oks: Vec<Value> = out.iter().map(|m| m.as_map().unwrap()[0].1.clone()).collect();
        assert_eq!(oks, vec![Value::from(1), Value::from(0), Value::Nil]);
    }

    #[test]
    fn every_msgpack_value_kind_is_copied_byte_for_byte() {
        let long = "é".repeat(40_000);
        let values = vec![
            Value::Nil,
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F32(1.25),
            Value::F64(-2.5),
            Value::from(long.as_str()),
            Value::Binary(vec![0, 1, 2, 255]),
            Value::Binary(vec![7; 70_000]),
            Value::Array((0..20).map(Value::from).collect()),
            Value::Map(vec![(
                Value::from("k"),
                Value::Map(vec![(Value::from(1), Value::from("v"))]),
            )]),
            Value::Ext(5, vec![1, 2, 3]),
            Value::Ext(-1, vec![9; 8]),
        ];
        let cols: Vec<MappedColumn> =
            columns(&(0..values.len()).map(|_| ("c", "varchar")).collect::<Vec<_>>());
        let input = encode(&[Value::Array(values.clone())]);
        let out = transcode_all(&mut Transcoder::new(&cols, TimeFill::Fixed(7)), &input).unwrap();
        let got: Vec<Value> = out[0].as_map().unwrap().iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(&got[..values.len()], &values[..]);
    }

    #[test]
    fn a_row_of_the_wrong_width_or_a_truncated_row_is_an_error() {
        let cols = columns(&[("a", "bigint"), ("b", "bigint")]);
        let input = encode(&[Value::Array(vec![1.into()])]);
        let err = transcode_all(&mut Transcoder::new(&cols, TimeFill::Fixed(0)), &input).unwrap_err();
        assert!(
            err.to_string().contains("has 1 values, the result schema has 2"),
            "{err}"
        );
        let mut input = encode(&[Value::Array(vec![1.into(), "abcdef".into()])]);
        input.truncate(input.len() - 2);
        assert!(transcode_all(&mut Transcoder::new(&cols, TimeFill::Fixed(0)), &input).is_err());
    }
}
