//! Stage 2 (one thread per core): each raw chunk deflated on its own, as pigz does. A chunk ends
//! in a sync flush (byte-aligned, not final), so chunks laid end to end are one deflate stream:
//! each part stays a single ordinary gzip member, and its bytes do not depend on the thread count.

use std::io;
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use flate2::{Compress, Compression, FlushCompress};

use super::chunks::Chunk;
use super::Halt;

/// A deflated chunk and what the gzip trailer needs of its raw bytes.
pub(super) struct Deflated {
    pub bytes: Vec<u8>,
    pub crc: crc32fast::Hasher,
    pub raw_len: u64,
}

/// What a worker passes on, in the order it was handed chunks.
pub(super) enum Block {
    Data(Deflated),
    End,
}

/// Deflates every chunk from `chunks` onto `blocks`; returns each raw buffer on `free`.
pub(super) fn work(
    level: u32,
    chunks: Receiver<Chunk>,
    blocks: SyncSender<Block>,
    free: Sender<Vec<u8>>,
) -> Result<(), Halt> {
    let mut z = Compress::new(Compression::new(level), false);
    for chunk in chunks {
        let block = match chunk {
            Chunk::Raw(raw) => {
                let deflated = deflate(&mut z, &raw).map_err(Halt::Deflate)?;
                // The cutter may be done with buffers: then this one is simply dropped.
                let _ = free.send(raw);
                Block::Data(deflated)
            }
            Chunk::End => Block::End,
        };
        blocks.send(block).map_err(|_| Halt::Stopped)?;
    }
    Ok(())
}

/// `raw` as raw deflate data ending in a sync flush, from a fresh compressor state.
fn deflate(z: &mut Compress, raw: &[u8]) -> io::Result<Deflated> {
    z.reset();
    // Counted from here: not every backend zeroes its totals on reset.
    let start = z.total_in();
    let fed = |z: &Compress| (z.total_in() - start) as usize;
    // Deflate grows incompressible data by a few bytes per block; more means it lost its way.
    let most = raw.len() + (raw.len() >> 8) + 1024;
    let mut out = Vec::with_capacity(raw.len() / 4 + 64);
    loop {
        z.compress_vec(&raw[fed(z)..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // The flush is complete once all input is in and the compressor left room unused.
        if fed(z) == raw.len() && out.len() < out.capacity() {
            break;
        }
        if out.len() > most {
            return Err(io::Error::other(format!(
                "deflating {} bytes gave over {most} bytes without finishing",
                raw.len()
            )));
        }
        out.reserve(out.capacity().max(4096));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(raw);
    Ok(Deflated {
        bytes: out,
        crc,
        raw_len: raw.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// One compressor deflates chunk after chunk (as a worker does); each must stand alone.
    #[test]
    fn each_chunk_deflates_on_its_own_with_a_reused_compressor() {
        let mut z = Compress::new(Compression::new(3), false);
        for i in 0..50u32 {
            let raw: Vec<u8> = format!("chunk {i} ").repeat(1000 + i as usize).into_bytes();
            let mut deflated = deflate(&mut z, &raw).unwrap().bytes;
            deflated.extend([0x03, 0x00]);
            let mut back = Vec::new();
            flate2::read::DeflateDecoder::new(&deflated[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, raw, "chunk {i}");
        }
    }
}
