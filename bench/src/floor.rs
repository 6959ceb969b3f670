//! The floor: what any export of a msgpack.gz result into gzip parts must at least spend —
//! gunzip the result and gzip the same bytes again, at the operator's part level, cut into parts
//! of the operator's size, no parsing, no network. And that floor on the bytes the operator
//! compresses ([`gunzip_then_gzip`]), which are more than the result's.

use std::io::{self, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Floor {
    /// Decompressed bytes.
    pub raw: u64,
    /// Compressed bytes written, over all parts.
    pub out: u64,
    pub parts: u64,
}

/// The floor: gunzip `input` and gzip the same bytes into parts.
pub fn gunzip_gzip<R: Read>(input: R, level: u32, part_bytes: usize) -> io::Result<Floor> {
    gzip_parts(gunzip(input), level, part_bytes)
}

/// The floor on the operator's bytes: gunzip `input` (the result, bytes dropped) and gzip
/// `records` — the records the operator makes of it, written out beforehand — into parts. What
/// the operator's pipe must at least spend, as it compresses maps, not the result's arrays;
/// `raw` counts the records' bytes.
pub fn gunzip_then_gzip<R: Read, S: Read>(
    input: R,
    records: S,
    level: u32,
    part_bytes: usize,
) -> io::Result<Floor> {
    io::copy(&mut gunzip(input), &mut io::sink())?;
    gzip_parts(io::BufReader::with_capacity(1 << 16, records), level, part_bytes)
}

fn gunzip<R: Read>(input: R) -> impl Read {
    MultiGzDecoder::new(io::BufReader::with_capacity(1 << 16, input))
}

/// Gzips everything `raw` reads into parts of `part_bytes` compressed bytes or so.
fn gzip_parts<R: Read>(mut raw: R, level: u32, part_bytes: usize) -> io::Result<Floor> {
    let new_part = || {
        GzEncoder::new(
            Vec::with_capacity(part_bytes + (part_bytes >> 3)),
            Compression::new(level),
        )
    };
    let mut part = new_part();
    let mut floor = Floor::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut part_has_bytes = false;
    let finish = |part: GzEncoder<Vec<u8>>, floor: &mut Floor| -> io::Result<()> {
        floor.out += part.finish()?.len() as u64;
        floor.parts += 1;
        Ok(())
    };
    loop {
        let n = raw.read(&mut buf)?;
        if n == 0 {
            break;
        }
        part.write_all(&buf[..n])?;
        floor.raw += n as u64;
        part_has_bytes = true;
        if part.get_ref().len() >= part_bytes {
            finish(std::mem::replace(&mut part, new_part()), &mut floor)?;
            part_has_bytes = false;
        }
    }
    if part_has_bytes {
        finish(part, &mut floor)?;
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_decompressed_byte_and_cuts_parts() {
        let mut raw = Vec::new();
        for i in 0..200_000u32 {
            raw.extend_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        }
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&raw).unwrap();
        let input = gz.finish().unwrap();
        let floor = gunzip_gzip(&input[..], 3, 64 << 10).unwrap();
        assert_eq!(floor.raw, raw.len() as u64);
        assert!(floor.parts > 1);
        assert!(floor.out > 0);
    }

    #[test]
    fn the_floor_on_the_operators_bytes_gunzips_the_result_and_gzips_the_records() {
        let gz = |raw: &[u8]| {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(raw).unwrap();
            gz.finish().unwrap()
        };
        let result: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let records: Vec<u8> = (0..300_000u32)
            .flat_map(|i| i.wrapping_mul(7).to_be_bytes())
            .collect();
        let floor = gunzip_then_gzip(&gz(&result)[..], &records[..], 3, 64 << 10).unwrap();
        assert_eq!(floor.raw, records.len() as u64);
        assert_eq!(floor.out, gzip_parts(&records[..], 3, 64 << 10).unwrap().out);
        // A result that is not gzip fails, as the floor must read it all.
        assert!(gunzip_then_gzip(&b"not gzip"[..], &records[..], 3, 64 << 10).is_err());
    }
}
