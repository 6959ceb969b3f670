//! The floor: what any export of a msgpack.gz result into gzip parts must at least spend —
//! gunzip the result and gzip the same bytes again, at the operator's part level, cut into parts
//! of the operator's size, no parsing, no network.

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

pub fn gunzip_gzip<R: Read>(input: R, level: u32, part_bytes: usize) -> io::Result<Floor> {
    let mut decoder = MultiGzDecoder::new(io::BufReader::with_capacity(1 << 16, input));
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
        let n = decoder.read(&mut buf)?;
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
}
