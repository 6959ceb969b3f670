//! Flat records: the shape nearly every import brings, a msgpack map of text keys to scalar
//! values. Such a record is read in place and written as stored JSON directly, without
//! building `rmpv` and `serde_json` values in between: the same text and time as the general
//! path (`records::to_row` and friends) gives, which a property test holds them to, under the
//! same rules (`records::Kind` gives new columns their types). Anything else goes the general
//! way: a record that is not flat (nested values, ext, non-text keys), and one whose shape is not
//! staged here (a key given twice, no integer `time`). A value whatever its column's type is
//! staged: TD applies the type when the column is read (`records::ColumnRead`).

use rmp::Marker;
use td_model::schema::TableColumn;

use crate::records::{self, Kind};

/// One value of a flat record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(&'a str),
    /// Binary, and text that is not UTF-8 (kept as the bytes it is).
    Bin(&'a [u8]),
}

impl Scalar<'_> {
    /// Which variant this is: finer than its kind (an integer past `i64::MAX` is no `time`).
    fn tag(self) -> u8 {
        match self {
            Scalar::Nil => 0,
            Scalar::Bool(_) => 1,
            Scalar::Int(_) => 2,
            Scalar::UInt(_) => 3,
            Scalar::Float(_) => 4,
            Scalar::Str(_) => 5,
            Scalar::Bin(_) => 6,
        }
    }

    fn kind(self) -> Kind {
        match self {
            Scalar::Nil => Kind::Null,
            Scalar::Bool(_) => Kind::Bool,
            Scalar::Int(_) | Scalar::UInt(_) => Kind::Integer,
            Scalar::Float(_) => Kind::Float,
            Scalar::Str(_) => Kind::Text,
            Scalar::Bin(_) => Kind::Binary,
        }
    }
}

/// A flat record read from its msgpack bytes: its entries in the order they came.
#[derive(Debug)]
pub(crate) struct FlatRecord<'a> {
    entries: Vec<(&'a str, Scalar<'a>)>,
}

impl<'a> FlatRecord<'a> {
    /// Reads `raw`, the bytes of exactly one msgpack value; None when it is not a map of text
    /// keys to scalars.
    pub(crate) fn parse(raw: &'a [u8]) -> Option<FlatRecord<'a>> {
        let mut buf = raw;
        let len = match Marker::from_u8(take_byte(&mut buf)?) {
            Marker::FixMap(n) => usize::from(n),
            Marker::Map16 => usize::from(u16::from_be_bytes(take_array(&mut buf)?)),
            Marker::Map32 => usize::try_from(u32::from_be_bytes(take_array(&mut buf)?)).ok()?,
            _ => return None,
        };
        // Each entry takes at least two bytes: a count past that is not this record.
        let mut entries = Vec::with_capacity(len.min(buf.len() / 2));
        for _ in 0..len {
            let Scalar::Str(key) = scalar(&mut buf)? else {
                return None;
            };
            entries.push((key, scalar(&mut buf)?));
        }
        if !buf.is_empty() {
            return None;
        }
        Some(FlatRecord { entries })
    }
}

/// What the records of one shape (the same keys in the same order, each value of the same
/// variant) share: whether they are rows, where their `time` is, the order and JSON of their keys.
/// Found once, it spares each record the sorting and schema lookups.
#[derive(Debug)]
struct Shape {
    keys: Vec<Box<str>>,
    tags: Vec<u8>,
    /// None: not staged here (no integer `time`, a key given twice); the general path decides.
    stored: Option<Stored>,
}

#[derive(Debug)]
struct Stored {
    /// The `time` entry's index.
    time: usize,
    /// Entry indexes in key order (as a `serde_json::Map` orders them), each with its key as
    /// JSON (`"key":`).
    order: Vec<(usize, String)>,
}

impl Shape {
    fn of(record: &FlatRecord, columns: &mut Vec<TableColumn>) -> Shape {
        let keys = record.entries.iter().map(|(k, _)| Box::from(*k)).collect();
        let tags = record.entries.iter().map(|(_, v)| v.tag()).collect();
        let kinds: Vec<Kind> = record.entries.iter().map(|(_, v)| v.kind()).collect();
        let mut order: Vec<usize> = (0..record.entries.len()).collect();
        order.sort_by_key(|&i| record.entries[i].0);
        let key = |i: usize| record.entries[i].0;
        let time = order.iter().copied().find(|&i| key(i) == "time");
        let once = order.windows(2).all(|w| key(w[0]) != key(w[1]));
        let stored = match time {
            Some(time) if once && matches!(record.entries[time].1, Scalar::Int(_)) => {
                records::extend_schema_by(columns, order.iter().map(|&i| (key(i), kinds[i])));
                let order = order
                    .iter()
                    .map(|&i| {
                        let mut json = String::with_capacity(key(i).len() + 3);
                        write_json_str(&mut json, key(i));
                        json.push(':');
                        (i, json)
                    })
                    .collect();
                Some(Stored { time, order })
            }
            _ => None,
        };
        Shape { keys, tags, stored }
    }

    fn fits(&self, record: &FlatRecord) -> bool {
        self.keys.len() == record.entries.len()
            && self
                .keys
                .iter()
                .zip(&self.tags)
                .zip(&record.entries)
                .all(|((key, tag), (k, v))| **key == **k && *tag == v.tag())
    }
}

/// The shapes seen lately, newest first: records of an import nearly always share a few.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    seen: Vec<Shape>,
}

impl Shapes {
    /// Shapes kept: past this many, records of the oldest shape are looked at afresh.
    const KEPT: usize = 8;

    /// Appends `record`'s stored JSON text to `out` and returns its `time`, adding the columns
    /// its shape brings to `columns`. None, with nothing written, when the general path must
    /// decide.
    pub(crate) fn stage(
        &mut self,
        record: &FlatRecord,
        columns: &mut Vec<TableColumn>,
        out: &mut String,
    ) -> Option<i64> {
        let at = match self.seen.iter().position(|shape| shape.fits(record)) {
            Some(at) => at,
            None => {
                self.seen.truncate(Self::KEPT - 1);
                self.seen.push(Shape::of(record, columns));
                self.seen.len() - 1
            }
        };
        if at > 0 {
            self.seen[..=at].rotate_right(1);
        }
        let stored = self.seen[0].stored.as_ref()?;
        // Always so: a shape is staged only when its `time` is an i64.
        let Scalar::Int(time) = record.entries[stored.time].1 else {
            return None;
        };
        out.push('{');
        for (n, (i, key)) in stored.order.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(key);
            write_json_value(out, record.entries[*i].1);
        }
        out.push('}');
        Some(time)
    }
}

fn write_json_value(out: &mut String, value: Scalar) {
    match value {
        Scalar::Nil => out.push_str("null"),
        Scalar::Bool(true) => out.push_str("true"),
        Scalar::Bool(false) => out.push_str("false"),
        Scalar::Int(n) => out.push_str(itoa::Buffer::new().format(n)),
        Scalar::UInt(n) => out.push_str(itoa::Buffer::new().format(n)),
        // As serde_json writes it, which is what the general path stores.
        Scalar::Float(f) if f.is_finite() => {
            out.push_str(&serde_json::to_string(&f).expect("a float serializes"))
        }
        Scalar::Float(f) => {
            out.push_str(&serde_json::to_string(&records::double_value(f)).expect("a JSON map serializes"))
        }
        Scalar::Str(s) => write_json_str(out, s),
        Scalar::Bin(bytes) => out
            .push_str(&serde_json::to_string(&records::binary_value(bytes)).expect("a JSON map serializes")),
    }
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it (`"`, `\\` and control
/// characters; nothing else): most text needs no escape and is copied as it is.
fn write_json_str(out: &mut String, s: &str) {
    // Folded without stopping early, which compiles to a vector loop.
    let escapes = s
        .bytes()
        .fold(false, |any, b| any | (b == b'"') | (b == b'\\') | (b < 0x20));
    if escapes {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

fn take_byte(buf: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = buf.split_first()?;
    *buf = rest;
    Some(b)
}

fn take_array<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = buf.split_first_chunk::<N>()?;
    *buf = rest;
    Some(*head)
}

fn take_slice<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

fn integer(n: u64) -> Scalar<'static> {
    i64::try_from(n).map_or(Scalar::UInt(n), Scalar::Int)
}

fn text(bytes: &[u8]) -> Scalar<'_> {
    std::str::from_utf8(bytes).map_or(Scalar::Bin(bytes), Scalar::Str)
}

/// Reads one scalar msgpack value; None for arrays, maps, ext and cut data.
fn scalar<'a>(buf: &mut &'a [u8]) -> Option<Scalar<'a>> {
    /// The bytes after a length of N bytes.
    fn sized<'a, const N: usize>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
        let bytes = take_array::<N>(buf)?;
        let len = usize::try_from(bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b))).ok()?;
        take_slice(buf, len)
    }
    Some(match Marker::from_u8(take_byte(buf)?) {
        Marker::Null => Scalar::Nil,
        Marker::True => Scalar::Bool(true),
        Marker::False => Scalar::Bool(false),
        Marker::FixPos(n) => Scalar::Int(i64::from(n)),
        Marker::FixNeg(n) => Scalar::Int(i64::from(n)),
        Marker::U8 => integer(u64::from(take_byte(buf)?)),
        Marker::U16 => integer(u64::from(u16::from_be_bytes(take_array(buf)?))),
        Marker::U32 => integer(u64::from(u32::from_be_bytes(take_array(buf)?))),
        Marker::U64 => integer(u64::from_be_bytes(take_array(buf)?)),
        Marker::I8 => Scalar::Int(i64::from(i8::from_be_bytes(take_array(buf)?))),
        Marker::I16 => Scalar::Int(i64::from(i16::from_be_bytes(take_array(buf)?))),
        Marker::I32 => Scalar::Int(i64::from(i32::from_be_bytes(take_array(buf)?))),
        Marker::I64 => Scalar::Int(i64::from_be_bytes(take_array(buf)?)),
        Marker::F32 => Scalar::Float(f64::from(f32::from_be_bytes(take_array(buf)?))),
        Marker::F64 => Scalar::Float(f64::from_be_bytes(take_array(buf)?)),
        Marker::FixStr(n) => text(take_slice(buf, usize::from(n))?),
        Marker::Str8 => text(sized::<1>(buf)?),
        Marker::Str16 => text(sized::<2>(buf)?),
        Marker::Str32 => text(sized::<4>(buf)?),
        Marker::Bin8 => Scalar::Bin(sized::<1>(buf)?),
        Marker::Bin16 => Scalar::Bin(sized::<2>(buf)?),
        Marker::Bin32 => Scalar::Bin(sized::<4>(buf)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A value and one of the ways a client may encode it.
    #[derive(Debug, Clone)]
    enum Raw {
        Nil,
        Bool(bool),
        /// Written in the fewest bytes.
        Sint(i64),
        /// Written as a full 8-byte integer, as some clients do.
        Wide(i64),
        Uint(u64),
        F32(f32),
        F64(f64),
        Str(String),
        /// Bytes sent as text (msgpack's old raw type).
        NonUtf8(Vec<u8>),
        Bin(Vec<u8>),
        /// Not flat: a nested value.
        Nested,
    }

    fn raw_value() -> impl Strategy<Value = Raw> {
        prop_oneof![
            Just(Raw::Nil),
            any::<bool>().prop_map(Raw::Bool),
            any::<i64>().prop_map(Raw::Sint),
            (-300i64..300).prop_map(Raw::Sint),
            any::<i64>().prop_map(Raw::Wide),
            any::<u64>().prop_map(Raw::Uint),
            any::<f32>().prop_map(Raw::F32),
            any::<f64>().prop_map(Raw::F64),
            prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e300)].prop_map(Raw::F64),
            "\\PC{0,12}".prop_map(Raw::Str),
            "[\"\\\\/\u{0}\u{1f}a-c]{0,6}".prop_map(Raw::Str),
            Just(Raw::NonUtf8(vec![0xff, b'a', 0xc0])),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Raw::Bin),
            Just(Raw::Nested),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("time".to_string()),
            Just("v".to_string()),
            Just("a".to_string()),
            Just("b".to_string()),
            Just("é".to_string()),
            Just(String::new()),
            "[a-z\"]{1,3}",
        ]
    }

    fn encode(entries: &[(String, Raw)]) -> Vec<u8> {
        use rmp::encode as e;
        let mut out = Vec::new();
        e::write_map_len(&mut out, entries.len() as u32).unwrap();
        for (k, v) in entries {
            e::write_str(&mut out, k).unwrap();
            match v {
                Raw::Nil => e::write_nil(&mut out).unwrap(),
                Raw::Bool(b) => e::write_bool(&mut out, *b).unwrap(),
                Raw::Sint(n) => drop(e::write_sint(&mut out, *n).unwrap()),
                Raw::Wide(n) => e::write_i64(&mut out, *n).unwrap(),
                Raw::Uint(n) => e::write_u64(&mut out, *n).unwrap(),
                Raw::F32(f) => e::write_f32(&mut out, *f).unwrap(),
                Raw::F64(f) => e::write_f64(&mut out, *f).unwrap(),
                Raw::Str(s) => e::write_str(&mut out, s).unwrap(),
                Raw::NonUtf8(b) => {
                    e::write_str_len(&mut out, b.len() as u32).unwrap();
                    out.extend_from_slice(b);
                }
                Raw::Bin(b) => e::write_bin(&mut out, b).unwrap(),
                Raw::Nested => {
                    e::write_array_len(&mut out, 1).unwrap();
                    e::write_nil(&mut out).unwrap();
                }
            }
        }
        out
    }

    /// Columns a batch has found already (with the types and aliases a schema may give them).
    fn columns() -> impl Strategy<Value = Vec<TableColumn>> {
        let ty = prop_oneof![
            Just("long"),
            Just("int"),
            Just("double"),
            Just("float"),
            Just("string"),
            Just("array<string>"),
            Just("map<string,string>"),
        ];
        proptest::collection::vec((key(), ty, proptest::option::of(key())), 0..4).prop_map(|cols| {
            cols.into_iter()
                .map(|(k, t, alias)| TableColumn {
                    alias,
                    ..TableColumn::new(k, t)
                })
                .collect()
        })
    }

    /// What the general path makes of a record: its time and stored JSON, or None when it is
    /// not a row; and the columns it adds to `columns` when it is.
    fn general(raw: &[u8], columns: &mut Vec<TableColumn>) -> Option<(i64, String)> {
        let value = records::decode_record(0, raw).unwrap();
        let has_time = value.as_map().is_some_and(|m| {
            m.iter()
                .any(|(k, v)| k.as_str() == Some("time") && v.as_i64().is_some())
        });
        if !has_time {
            return None;
        }
        let row = records::to_row(0, value).ok()?;
        records::extend_schema(columns, &row.record);
        Some((row.time, serde_json::to_string(&row.record).unwrap()))
    }

    fn fast(shapes: &mut Shapes, raw: &[u8], columns: &mut Vec<TableColumn>) -> Option<(i64, String)> {
        let record = FlatRecord::parse(raw)?;
        let mut json = String::new();
        let time = shapes.stage(&record, columns, &mut json);
        assert!(
            time.is_some() || json.is_empty(),
            "a record left to the general path was written"
        );
        time.map(|t| (t, json))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The fast path must be the general path, faster: the same rows, time, JSON text and
        /// new columns, for every flat record it stages; it leaves every other record to the
        /// general path, and declines every record that is not flat.
        #[test]
        fn a_flat_record_reads_as_the_general_path_reads_it(
            entries in proptest::collection::vec((key(), raw_value()), 0..7),
            columns in columns(),
        ) {
            let raw = encode(&entries);
            let flat_shaped = !entries.iter().any(|(_, v)| matches!(v, Raw::Nested));
            prop_assert_eq!(FlatRecord::parse(&raw).is_some(), flat_shaped, "{:?}", entries);
            if !flat_shaped {
                return Ok(());
            }
            let (mut fast_columns, mut general_columns) = (columns.clone(), columns.clone());
            let staged = fast(&mut Shapes::default(), &raw, &mut fast_columns);
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            let given_twice = keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k));
            let expected = if given_twice {
                // The general path decides (it keeps the reason of an ambiguous `time`).
                None
            } else {
                general(&raw, &mut general_columns)
            };
            prop_assert_eq!(staged, expected);
            prop_assert_eq!(fast_columns, general_columns);
        }

        /// Records sharing shapes, staged one after another as a batch stages them, read as
        /// each would alone: a shape seen before decides for the record in hand.
        #[test]
        fn records_of_shapes_seen_before_read_as_they_would_alone(
            keys in proptest::collection::vec(key(), 0..5),
            values in proptest::collection::vec(proptest::collection::vec(raw_value(), 5), 1..24),
            columns in columns(),
        ) {
            let mut shapes = Shapes::default();
            let (mut fast_columns, mut general_columns) = (columns.clone(), columns.clone());
            for row in &values {
                let entries: Vec<(String, Raw)> = keys.iter().cloned().zip(row.iter().cloned()).collect();
                let raw = encode(&entries);
                let alone = FlatRecord::parse(&raw).and_then(|_| {
                    fast(&mut Shapes::default(), &raw, &mut general_columns)
                });
                let shared = FlatRecord::parse(&raw).and_then(|_| fast(&mut shapes, &raw, &mut fast_columns));
                prop_assert_eq!(shared, alone);
            }
            prop_assert_eq!(fast_columns, general_columns);
        }
    }

    #[test]
    fn a_record_cut_short_or_with_bytes_after_it_is_not_flat() {
        let raw = encode(&[
            ("time".into(), Raw::Sint(1)),
            ("s".into(), Raw::Str("abc".into())),
        ]);
        assert!(FlatRecord::parse(&raw).is_some());
        for cut in 0..raw.len() {
            assert!(FlatRecord::parse(&raw[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = raw.clone();
        longer.push(0xc0);
        assert!(FlatRecord::parse(&longer).is_none());
        // A map declaring 2^32-1 entries reserves nothing it cannot fill.
        assert!(FlatRecord::parse(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa0]).is_none());
    }
}
