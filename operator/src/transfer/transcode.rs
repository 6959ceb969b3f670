//! Rows from result form (msgpack arrays) to import form (msgpack maps with an integer `time`),
//! at the msgpack byte level: values are copied, not decoded, except `time` and booleans.
//!
//! A row is transcoded from a slice that holds it whole ([`Input`] keeps one in view), so each
//! value is found by walking its headers and copied in one piece.

use std::io::{self, Read};

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
    /// What every record repeats, encoded once and laid back to back: the map header, each
    /// column's key, and `time` with its value when every row gets the same. Then `SHORT` bytes
    /// of padding, so that any piece can be copied as a fixed-size block (see [`push_run`]).
    repeated: Vec<u8>,
    header: Span,
    /// Each column's key and how its value is carried.
    columns: Vec<(Span, Carry)>,
    fixed_time: Option<Span>,
    /// The `time_column`'s name, when rows take their `time` from it.
    time_column: Option<String>,
    rows: u64,
}

/// Where a piece of [`Transcoder::repeated`] is: its start and length.
#[derive(Debug, Clone, Copy)]
struct Span(usize, usize);

impl Span {
    /// Appends `bytes` to `to`, and says where they went.
    fn push(to: &mut Vec<u8>, bytes: &[u8]) -> Span {
        to.extend_from_slice(bytes);
        Span(to.len() - bytes.len(), bytes.len())
    }
}

/// Runs of up to this many bytes are copied as one block of this size.
const SHORT: usize = 16;

/// Appends `from[at..at + len]`. A short run is copied as a whole `SHORT`-byte block when `from`
/// holds one there, then cut back to `len`: a copy of constant size is a couple of moves, where
/// one of variable size is a call to `memcpy`, and most keys and values are a few bytes long.
#[inline]
fn push_run(out: &mut Vec<u8>, from: &[u8], at: usize, len: usize) {
    if len <= SHORT {
        if let Some(block) = from.get(at..at + SHORT) {
            let block: &[u8; SHORT] = block.try_into().expect("a block of SHORT bytes");
            let keep = out.len() + len;
            out.extend_from_slice(block);
            out.truncate(keep);
            return;
        }
    }
    out.extend_from_slice(&from[at..at + len]);
}

fn encoded_str(s: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(s.len() + 2);
    rmp::encode::write_str(&mut buf, s).expect("writing to a Vec cannot fail");
    buf
}

/// The result's bytes, buffered so that the next row is wholly in view: the buffer grows to
/// hold a row longer than it.
pub struct Input<R> {
    reader: R,
    buf: Vec<u8>,
    /// The bytes not yet transcoded are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<R: Read> Input<R> {
    /// The buffer's size, and what it shrinks back to after a long row.
    const BUFFER: usize = 1 << 16;

    pub fn new(reader: R) -> Input<R> {
        Input {
            reader,
            buf: vec![0; Self::BUFFER],
            start: 0,
            end: 0,
        }
    }

    fn view(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Fills the buffer after the bytes in view; `false` when the input had no more.
    fn more(&mut self) -> io::Result<bool> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        // A row over half the buffer doubles it; as the buffer is filled whole each time, a long
        // row is retried once per doubling, and walked O(its length) times in all.
        if self.end > self.buf.len() / 2 {
            self.buf.resize(self.buf.len() * 2, 0);
        } else if self.buf.len() > Self::BUFFER && self.end <= Self::BUFFER / 2 {
            // Past a long row: give its room back.
            self.buf.truncate(Self::BUFFER);
            self.buf.shrink_to_fit();
        }
        let before = self.end;
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(self.end > before)
    }
}

/// Why a row could not be transcoded from the bytes in view.
enum Short {
    /// The row goes on past them.
    More,
    Malformed(String),
    /// Not msgpack at all.
    Invalid(&'static str),
}

type Step<T> = Result<T, Short>;

/// Marks a `str 8` or `bin 8` in [`SCALAR_LEN`]: its length is 2 plus its second byte.
const STR8: u8 = u8::MAX;

/// The whole length of a value from its first byte, for the scalars whose first byte says it
/// (with [`STR8`] for the two that need their second); 0 for the rest, which are walked.
const SCALAR_LEN: [u8; 256] = {
    let mut len = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        len[b] = match b as u8 {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 1, // fixints, nil, false, true
            0xa0..=0xbf => 1 + (b as u8 & 0x1f),                 // fixstr
            0xcc | 0xd0 => 2,                                    // uint 8, int 8
            0xcd | 0xd1 => 3,                                    // uint 16, int 16
            0xce | 0xd2 | 0xca => 5,                             // uint 32, int 32, float 32
            0xcf | 0xd3 | 0xcb => 9,                             // uint 64, int 64, float 64
            0xd9 | 0xc4 => STR8,
            _ => 0,
        };
        b += 1;
    }
    len
};

/// A read position in the bytes in view.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Step<u8> {
        let b = *self.buf.get(self.pos).ok_or(Short::More)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let bytes = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or(Short::More)?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// A big-endian length of `N` bytes.
    fn len<const N: usize>(&mut self) -> Step<u64> {
        Ok(self
            .array::<N>()?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn skip(&mut self, n: u64) -> Step<()> {
        self.take(usize::try_from(n).map_err(|_| Short::More)?).map(drop)
    }

    /// Steps over one whole value, nested values and all (without recursion: any depth).
    fn skip_value(&mut self) -> Step<()> {
        // Most values are scalars whose first byte gives their length: step over them at once.
        let first = *self.buf.get(self.pos).ok_or(Short::More)?;
        let len = match SCALAR_LEN[usize::from(first)] {
            0 => return self.walk_value(),
            STR8 => 2 + usize::from(*self.buf.get(self.pos + 1).ok_or(Short::More)?),
            n => usize::from(n),
        };
        self.take(len).map(drop)
    }

    /// [`Self::skip_value`] for any value, header by header.
    fn walk_value(&mut self) -> Step<()> {
        let mut values: u64 = 1;
        while values > 0 {
            values -= 1;
            let m = Marker::from_u8(self.byte()?);
            let payload = match m {
                Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => 0,
                Marker::U8 | Marker::I8 => 1,
                Marker::U16 | Marker::I16 => 2,
                Marker::U32 | Marker::I32 | Marker::F32 => 4,
                Marker::U64 | Marker::I64 | Marker::F64 => 8,
                Marker::FixStr(n) => u64::from(n),
                Marker::Str8 | Marker::Bin8 => self.len::<1>()?,
                Marker::Str16 | Marker::Bin16 => self.len::<2>()?,
                Marker::Str32 | Marker::Bin32 => self.len::<4>()?,
                Marker::FixExt1 => 2,
                Marker::FixExt2 => 3,
                Marker::FixExt4 => 5,
                Marker::FixExt8 => 9,
                Marker::FixExt16 => 17,
                Marker::Ext8 => self.len::<1>()? + 1,
                Marker::Ext16 => self.len::<2>()? + 1,
                Marker::Ext32 => self.len::<4>()? + 1,
                Marker::FixArray(n) => {
                    values = values.saturating_add(u64::from(n));
                    0
                }
                Marker::FixMap(n) => {
                    values = values.saturating_add(2 * u64::from(n));
                    0
                }
                Marker::Array16 => {
                    values = values.saturating_add(self.len::<2>()?);
                    0
                }
                Marker::Array32 => {
                    values = values.saturating_add(self.len::<4>()?);
                    0
                }
                Marker::Map16 => {
                    values = values.saturating_add(2 * self.len::<2>()?);
                    0
                }
                Marker::Map32 => {
                    values = values.saturating_add(2 * self.len::<4>()?);
                    0
                }
                Marker::Reserved => return Err(Short::Invalid("reserved msgpack marker 0xc1")),
            };
            self.skip(payload)?;
        }
        Ok(())
    }
}

/// An integer value (any msgpack width) as i64; None for any other value.
fn int_of(value: &[u8]) -> Option<i64> {
    let mut c = Cursor { buf: value, pos: 0 };
    Some(match Marker::from_u8(c.byte().ok()?) {
        Marker::FixPos(v) => i64::from(v),
        Marker::FixNeg(v) => i64::from(v),
        Marker::U8 => i64::from(u8::from_be_bytes(c.array().ok()?)),
        Marker::U16 => i64::from(u16::from_be_bytes(c.array().ok()?)),
        Marker::U32 => i64::from(u32::from_be_bytes(c.array().ok()?)),
        Marker::U64 => i64::try_from(u64::from_be_bytes(c.array().ok()?)).ok()?,
        Marker::I8 => i64::from(i8::from_be_bytes(c.array().ok()?)),
        Marker::I16 => i64::from(i16::from_be_bytes(c.array().ok()?)),
        Marker::I32 => i64::from(i32::from_be_bytes(c.array().ok()?)),
        Marker::I64 => i64::from_be_bytes(c.array().ok()?),
        _ => return None,
    })
}

impl Transcoder {
    pub fn new(columns: &[MappedColumn], time: TimeFill) -> Transcoder {
        let mut repeated = Vec::new();
        let added = !matches!(time, TimeFill::Column(_));
        let mut map_len = Vec::new();
        rmp::encode::write_map_len(&mut map_len, columns.len() as u32 + u32::from(added))
            .expect("writing to a Vec cannot fail");
        let header = Span::push(&mut repeated, &map_len);
        let columns_ = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let carry = match time {
                    TimeFill::Column(t) if t == i => Carry::Time,
                    TimeFill::Parsed(t) if t == i => Carry::TimeFrom,
                    _ if c.is_boolean() => Carry::BoolToLong,
                    _ => Carry::Copy,
                };
                (Span::push(&mut repeated, &encoded_str(&c.target)), carry)
            })
            .collect();
        let fixed_time = match time {
            TimeFill::Fixed(t) => {
                let mut entry = b"\xa4time".to_vec();
                write_int(&mut entry, t);
                Some(Span::push(&mut repeated, &entry))
            }
            TimeFill::Column(_) | TimeFill::Parsed(_) => None,
        };
        repeated.extend([0; SHORT]);
        Transcoder {
            repeated,
            header,
            columns: columns_,
            fixed_time,
            time_column: match time {
                TimeFill::Parsed(i) => Some(columns[i].source.clone()),
                _ => None,
            },
            rows: 0,
        }
    }

    /// Rows transcoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Transcodes the next row of `input` onto `out`; `false` at a clean end of input.
    pub fn next_row<R: Read>(
        &mut self,
        input: &mut Input<R>,
        out: &mut Vec<u8>,
    ) -> Result<bool, TranscodeError> {
        let mark = out.len();
        loop {
            if input.view().is_empty() && !input.more()? {
                return Ok(false);
            }
            match self.row(input.view(), out) {
                Ok(len) => {
                    input.start += len;
                    self.rows += 1;
                    return Ok(true);
                }
                Err(short) => {
                    out.truncate(mark);
                    match short {
                        Short::More if input.more()? => continue,
                        // The input ended inside a row: cut short, as a broken download is.
                        Short::More => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                        Short::Invalid(why) => {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, why).into())
                        }
                        Short::Malformed(detail) => {
                            return Err(TranscodeError::Malformed {
                                row: self.rows + 1,
                                detail,
                            })
                        }
                    }
                }
            }
        }
    }

    /// Transcodes the row at the start of `view` onto `out`; its length in `view`.
    fn row(&self, view: &[u8], out: &mut Vec<u8>) -> Step<usize> {
        let mut c = Cursor { buf: view, pos: 0 };
        let len = match Marker::from_u8(c.byte()?) {
            Marker::FixArray(n) => u64::from(n),
            Marker::Array16 => c.len::<2>()?,
            Marker::Array32 => c.len::<4>()?,
            other => {
                return Err(Short::Malformed(format!(
                    "expected an array of values, found {other:?}"
                )))
            }
        };
        if len != self.columns.len() as u64 {
            return Err(Short::Malformed(format!(
                "has {len} values, the result schema has {}",
                self.columns.len()
            )));
        }
        let Span(at, len) = self.header;
        push_run(out, &self.repeated, at, len);
        let mut parsed_time = None;
        for &(Span(key_at, key_len), carry) in &self.columns {
            push_run(out, &self.repeated, key_at, key_len);
            let at = c.pos;
            c.skip_value()?;
            match carry {
                Carry::Copy => push_run(out, view, at, c.pos - at),
                Carry::BoolToLong => match Marker::from_u8(view[at]) {
                    Marker::True => out.push(1),
                    Marker::False => out.push(0),
                    _ => push_run(out, view, at, c.pos - at),
                },
                Carry::Time => match int_of(&view[at..c.pos]) {
                    Some(t) => write_int(out, t),
                    None => {
                        return Err(Short::Malformed(
                            "its `time` value is not an integer (unix seconds)".into(),
                        ))
                    }
                },
                Carry::TimeFrom => {
                    let value = &view[at..c.pos];
                    out.extend_from_slice(value);
                    let column = self.time_column.as_deref().unwrap_or_default();
                    parsed_time = Some(time_of(value).map_err(|value| {
                        Short::Malformed(format!(
                            "its time_column `{column}` holds {value}, which is not a time (Unix seconds, \
                             ISO-8601 or YYYY-MM-DD HH:MM:SS[.fff] with an optional zone)"
                        ))
                    })?);
                }
            }
        }
        if let Some(Span(at, len)) = self.fixed_time {
            push_run(out, &self.repeated, at, len);
        } else if let Some(t) = parsed_time {
            out.extend_from_slice(b"\xa4time");
            write_int(out, t);
        }
        Ok(c.pos)
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

fn write_int(out: &mut Vec<u8>, v: i64) {
    rmp::encode::write_sint(out, v).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::columns::map_columns;
    use proptest::prelude::*;
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
        transcode_from(t, input)
    }

    fn transcode_from(t: &mut Transcoder, reader: impl Read) -> Result<Vec<Value>, TranscodeError> {
        let mut input = Input::new(reader);
        let mut out = Vec::new();
        while t.next_row(&mut input, &mut out)? {}
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

    /// However wide a client wrote the integer, `time` is its value; past i64 it is no time.
    #[test]
    fn a_time_of_any_integer_width_is_read() {
        for t in [
            0i64,
            5,
            -3,
            -100,
            200,
            -30_000,
            60_000,
            -2_000_000_000,
            4_000_000_000,
            i64::MIN,
            i64::MAX,
        ] {
            let mut one = Vec::new();
            rmp::encode::write_sint(&mut one, t).unwrap();
            assert_eq!(int_of(&one), Some(t), "{t}");
            for wide in [
                [&[0xd3][..], &t.to_be_bytes()].concat(),
                [&[0xcf][..], &(t as u64).to_be_bytes()].concat(),
            ] {
                let expected = (wide[0] == 0xd3 || t >= 0).then_some(t);
                assert_eq!(int_of(&wide), expected, "{t} as {wide:?}");
            }
        }
        assert_eq!(int_of(&[0xcd, 0xff, 0xff]), Some(65_535));
        assert_eq!(int_of(&[0xd0, 0x80]), Some(-128));
        assert_eq!(int_of(&[0xca, 0, 0, 0, 0]), None);
        assert_eq!(int_of(&[0xd1, 0x01]), None);
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

    /// TD's Presto keeps NaN and ±Infinity in a `double` (td-local's SQLite cannot, so no
    /// end-to-end run shows them): the export copies them bit for bit.
    #[test]
    fn nan_and_infinities_are_copied_bit_for_bit() {
        let values = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0];
        let cols = columns(&[("a", "double"), ("b", "double"), ("c", "double"), ("d", "double")]);
        let input = encode(&[Value::Array(values.iter().map(|f| Value::F64(*f)).collect())]);
        let out = transcode_all(&mut Transcoder::new(&cols, TimeFill::Fixed(7)), &input).unwrap();
        let got: Vec<u64> = out[0].as_map().unwrap()[..4]
            .iter()
            .map(|(_, v)| match v {
                Value::F64(f) => f.to_bits(),
                other => panic!("not a double: {other:?}"),
            })
            .collect();
        assert_eq!(got, values.map(f64::to_bits));
    }

    /// The table of scalar lengths is a shortcut: for every first byte, and every cut of the
    /// bytes after it, it must step exactly as far as walking the value header by header does.
    #[test]
    fn the_scalar_shortcut_steps_over_every_value_as_walking_it_does() {
        let step = |buf: &[u8], walk: bool| {
            let mut c = Cursor { buf, pos: 0 };
            let r = if walk { c.walk_value() } else { c.skip_value() };
            match r {
                Ok(()) => Ok(c.pos),
                Err(Short::More) => Err("more"),
                Err(Short::Invalid(why)) => Err(why),
                Err(Short::Malformed(_)) => Err("malformed"),
            }
        };
        for first in 0..=255u8 {
            // Lengths read from the payload are 3 (or 0x0303…): short values end in view, long
            // ones run past it.
            let mut bytes = vec![first];
            bytes.extend([3u8; 64]);
            for cut in 0..=bytes.len() {
                let buf = &bytes[..cut];
                assert_eq!(
                    step(buf, false),
                    step(buf, true),
                    "first byte {first:#04x}, {cut} bytes"
                );
            }
        }
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
    /// A reader handing out its bytes in pieces of the sizes given, in turn.
    struct Trickle<'a> {
        bytes: &'a [u8],
        sizes: Vec<usize>,
        turn: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.turn % self.sizes.len()].max(1);
            self.turn += 1;
            let n = size.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::F64),
            ".{0,40}".prop_map(Value::from),
            (0usize..70_000).prop_map(|n| Value::from("x".repeat(n))),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Binary),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, b)| Value::Ext(t, b)),
        ];
        scalar.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((".{0,8}".prop_map(Value::from), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the result's bytes arrive (a byte at a time, or past the buffer's size), each
        /// row becomes the same record, its values byte for byte.
        #[test]
        fn rows_transcode_the_same_however_the_result_is_cut(
            rows in proptest::collection::vec(proptest::collection::vec(any_value(), 3), 1..12),
            sizes in proptest::collection::vec(1usize..100_000, 1..8),
        ) {
            let cols = columns(&[("a", "varchar"), ("b", "varchar"), ("c", "boolean")]);
            let input = encode(&rows.iter().cloned().map(Value::Array).collect::<Vec<_>>());
            let whole = transcode_all(&mut Transcoder::new(&cols, TimeFill::Fixed(9)), &input).unwrap();
            let trickle = Trickle { bytes: &input, sizes, turn: 0 };
            let cut = transcode_from(&mut Transcoder::new(&cols, TimeFill::Fixed(9)), trickle).unwrap();
            prop_assert_eq!(&cut, &whole);
            for (row, record) in rows.iter().zip(&whole) {
                let values: Vec<Value> = record.as_map().unwrap().iter().map(|(_, v)| v.clone()).collect();
                prop_assert_eq!(&values[..2], &row[..2]);
                let c = match &row[2] {
                    Value::Boolean(b) => Value::from(u8::from(*b)),
                    other => other.clone(),
                };
                prop_assert_eq!(&values[2], &c);
                prop_assert_eq!(&values[3], &Value::from(9));
            }
        }
    }

    /// Values nest as deep as a result makes them: they are stepped over, not recursed into.
    #[test]
    fn a_value_nested_a_million_deep_is_copied_without_recursion() {
        let depth = 1_000_000;
        let mut value = vec![0x91; depth]; // [[[…
        value.push(0xc0); // nil
        let mut input = vec![0x91];
        input.extend(&value);
        let cols = columns(&[("deep", "array(varchar)")]);
        let mut input_ = Input::new(&input[..]);
        let mut out = Vec::new();
        let mut t = Transcoder::new(&cols, TimeFill::Fixed(1));
        assert!(t.next_row(&mut input_, &mut out).unwrap());
        let mut expected = vec![0x82, 0xa4];
        expected.extend(b"deep");
        expected.extend(&value);
        expected.extend(b"\xa4time\x01");
        assert_eq!(out, expected);
        assert!(!t.next_row(&mut input_, &mut out).unwrap());
    }

    #[test]
    fn the_reserved_marker_is_a_corrupt_result_not_a_cut_one() {
        let cols = columns(&[("a", "varchar")]);
        let err = transcode_all(&mut Transcoder::new(&cols, TimeFill::Fixed(0)), &[0x91, 0xc1]).unwrap_err();
        let TranscodeError::Io(e) = err else {
            panic!("{err}")
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let err = transcode_all(
            &mut Transcoder::new(&cols, TimeFill::Fixed(0)),
            &[0x91, 0xa3, b'a'],
        )
        .unwrap_err();
        let TranscodeError::Io(e) = err else {
            panic!("{err}")
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
