//! Rows shaped like `sample_datasets.www_access` (the same columns, value kinds and spread as
//! td-local's 5,000-row sample), as many as asked, encoded straight to gzip'd msgpack import parts.

use std::fmt::Write as _;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use td_local::internals::{AGENTS, FIRST_TIME, PATHS};

/// The table schema of `www_access` (`time` is implicit), as td-local's sample declares it.
pub const SCHEMA: &str = td_local::internals::WWW_ACCESS_SCHEMA;

/// Deterministic rows: the same `rows` give the same bytes on every machine.
pub struct RowWriter {
    rng: StdRng,
    next: u64,
    text: String,
}

impl RowWriter {
    pub fn new() -> RowWriter {
        RowWriter {
            rng: StdRng::seed_from_u64(20141003),
            next: 0,
            text: String::new(),
        }
    }

    /// Appends the next row, a msgpack map with an integer `time`, to `out`.
    pub fn write_next(&mut self, out: &mut Vec<u8>) {
        let rng = &mut self.rng;
        let code = match rng.random_range(0..100) {
            0..=89 => 200,
            90..=95 => 404,
            96..=98 => 500,
            _ => 301,
        };
        rmp::encode::write_map_len(out, 9).expect("Vec write");
        key(out, "time");
        rmp::encode::write_sint(out, FIRST_TIME + (self.next as i64) * 12).expect("Vec write");
        self.text.clear();
        let octets = (
            rng.random_range(1..224),
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(1..255),
        );
        write!(self.text, "{}.{}.{}.{}", octets.0, octets.1, octets.2, octets.3).expect("String write");
        string(out, "host", &self.text);
        string(out, "path", PATHS[rng.random_range(0..PATHS.len())]);
        string(out, "method", if rng.random_bool(0.9) { "GET" } else { "POST" });
        self.text.clear();
        if rng.random_bool(0.4) {
            self.text.push('-');
        } else {
            write!(self.text, "{}?from=home", PATHS[rng.random_range(0..PATHS.len())]).expect("String write");
        }
        string(out, "referer", &self.text);
        key(out, "code");
        rmp::encode::write_sint(out, code).expect("Vec write");
        key(out, "size");
        rmp::encode::write_sint(out, rng.random_range(30..150)).expect("Vec write");
        string(out, "agent", AGENTS[rng.random_range(0..AGENTS.len())]);
        string(out, "user", "-");
        self.next += 1;
    }
}

fn key(out: &mut Vec<u8>, k: &str) {
    rmp::encode::write_str(out, k).expect("Vec write");
}

fn string(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    rmp::encode::write_str(out, v).expect("Vec write");
}

/// `rows` rows as gzip'd msgpack parts of about `part_bytes` compressed bytes each.
pub fn import_parts(rows: u64, part_bytes: usize) -> Vec<Vec<u8>> {
    let new_part = || {
        GzEncoder::new(
            Vec::with_capacity(part_bytes + (part_bytes >> 3)),
            Compression::fast(),
        )
    };
    let mut writer = RowWriter::new();
    let mut parts = Vec::new();
    let mut gz = new_part();
    // Rows are gathered in 1 MiB batches: many tiny writes slow the gzip encoder down.
    let mut batch = Vec::with_capacity(1 << 20);
    let mut part_has_rows = false;
    for _ in 0..rows {
        writer.write_next(&mut batch);
        if batch.len() >= 1 << 20 {
            gz.write_all(&batch).expect("Vec write");
            batch.clear();
            part_has_rows = true;
            if gz.get_ref().len() >= part_bytes {
                parts.push(
                    std::mem::replace(&mut gz, new_part())
                        .finish()
                        .expect("Vec write"),
                );
                part_has_rows = false;
            }
        }
    }
    gz.write_all(&batch).expect("Vec write");
    // A part with no rows is not worth uploading, unless there are no rows at all.
    if part_has_rows || !batch.is_empty() || parts.is_empty() {
        parts.push(gz.finish().expect("Vec write"));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn rows_in(parts: &[Vec<u8>]) -> Vec<rmpv::Value> {
        let mut raw = Vec::new();
        for p in parts {
            flate2::read::GzDecoder::new(&p[..])
                .read_to_end(&mut raw)
                .unwrap();
        }
        let mut cursor = &raw[..];
        let mut rows = Vec::new();
        while !cursor.is_empty() {
            rows.push(rmpv::decode::read_value(&mut cursor).unwrap());
        }
        rows
    }

    #[test]
    fn parts_hold_exactly_the_rows_asked_for_with_increasing_time() {
        let parts = import_parts(30_000, 64 << 10);
        assert!(parts.len() > 1, "small parts make several");
        let rows = rows_in(&parts);
        assert_eq!(rows.len(), 30_000);
        let times: Vec<i64> = rows
            .iter()
            .map(|r| r.as_map().unwrap()[0].1.as_i64().unwrap())
            .collect();
        assert_eq!(times[0], FIRST_TIME);
        assert!(times.windows(2).all(|w| w[1] - w[0] == 12));
        let keys: Vec<&str> = rows[0]
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["time", "host", "path", "method", "referer", "code", "size", "agent", "user"]
        );
    }

    #[test]
    fn the_same_count_gives_the_same_bytes() {
        assert_eq!(
            rows_in(&import_parts(1_000, 16 << 20)),
            rows_in(&import_parts(1_000, 16 << 20))
        );
    }
}
