//! Stage 3 (one thread): deflated chunks, taken from the workers in the order they were dealt,
//! laid end to end into gzip parts in unnamed temporary files (gone when closed, even after a
//! crash), cut once a part holds `part_bytes` (or its records inflate to `raw_bytes`). A part waits for its upload on disk, not in memory.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::deflate::{Block, Deflated};
use super::{part_name, Halt, PartOptions};
use crate::td::Payload;

/// The gzip header: deflate, no name, no time, unknown OS (what flate2's encoder writes).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed codes: it ends a deflate stream after a sync flush.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// A finished part, named by its place in the export.
pub(crate) struct Part {
    pub name: String,
    pub payload: Payload,
}

/// Puts the parts together from `blocks` (worker `i % n` holds chunk `i`) and sends each on
/// `parts`; returns how many there were.
pub(super) fn assemble(
    blocks: &[Receiver<Block>],
    options: &PartOptions,
    parts: &mpsc::Sender<Part>,
) -> Result<u64, Halt> {
    let mut count = 0u64;
    let mut building: Option<Building> = None;
    let send = |part: Building, count: &mut u64| -> Result<(), Halt> {
        let payload = part.finish(&options.dir)?;
        let name = part_name(*count);
        *count += 1;
        // A closed channel means the uploader failed: its error is the one reported.
        parts
            .blocking_send(Part { name, payload })
            .map_err(|_| Halt::Stopped)
    };
    for turn in 0usize.. {
        // A worker gone without `End` means a stage before this one failed.
        match blocks[turn % blocks.len()].recv().map_err(|_| Halt::Stopped)? {
            Block::Data(deflated) => {
                let part = match &mut building {
                    Some(part) => part,
                    None => building.insert(Building::start(&options.dir)?),
                };
                part.add(&deflated, &options.dir)?;
                if part.len >= options.bytes as u64 || part.raw_len >= options.raw_bytes as u64 {
                    send(building.take().expect("a part is being built"), &mut count)?;
                }
            }
            Block::End => break,
        }
    }
    if let Some(part) = building {
        send(part, &mut count)?;
    }
    Ok(count)
}

/// A part being written: one gzip member.
struct Building {
    file: File,
    len: u64,
    crc: crc32fast::Hasher,
    raw_len: u64,
}

impl Building {
    fn start(dir: &Path) -> Result<Building, Halt> {
        let spill = |e| Halt::spill(dir, e);
        let mut file = tempfile::tempfile_in(dir).map_err(spill)?;
        file.write_all(&GZIP_HEADER).map_err(spill)?;
        Ok(Building {
            file,
            len: GZIP_HEADER.len() as u64,
            crc: crc32fast::Hasher::new(),
            raw_len: 0,
        })
    }

    fn add(&mut self, deflated: &Deflated, dir: &Path) -> Result<(), Halt> {
        self.file
            .write_all(&deflated.bytes)
            .map_err(|e| Halt::spill(dir, e))?;
        self.len += deflated.bytes.len() as u64;
        self.crc.combine(&deflated.crc);
        self.raw_len += deflated.raw_len;
        Ok(())
    }

    /// Ends the deflate stream and writes the trailer (CRC-32 and length mod 2^32 of the raw bytes).
    fn finish(mut self, dir: &Path) -> Result<Payload, Halt> {
        let mut tail = Vec::with_capacity(10);
        tail.extend(FINAL_BLOCK);
        tail.extend(self.crc.finalize().to_le_bytes());
        tail.extend((self.raw_len as u32).to_le_bytes());
        self.file.write_all(&tail).map_err(|e| Halt::spill(dir, e))?;
        Ok(Payload::File {
            file: Arc::new(self.file),
            len: self.len + tail.len() as u64,
        })
    }
}
