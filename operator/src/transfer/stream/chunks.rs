//! Stage 1 (one thread): the gunzipped result, row by row, transcoded into raw chunks of about
//! `chunk_bytes`, dealt to the deflate workers in turn.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};

use super::{Halt, Progress};
use crate::transfer::transcode::{Input, Transcoder};

/// What a deflate worker is handed.
pub(super) enum Chunk {
    /// Whole import records (msgpack maps), back to back.
    Raw(Vec<u8>),
    /// The result ended cleanly; a stage that closes without sending this failed.
    End,
}

/// Transcodes every row of `input` into chunks dealt round-robin over `workers` (chunk `i` to
/// worker `i % n`), which is the order the parts are put together in. Buffers come back on `free`.
pub(super) fn cut<R: Read>(
    mut input: Input<R>,
    mut transcoder: Transcoder,
    chunk_bytes: usize,
    progress: &Progress,
    workers: &[SyncSender<Chunk>],
    free: &Receiver<Vec<u8>>,
) -> Result<(), Halt> {
    let mut turn = 0usize;
    let mut deal = |chunk: Chunk| -> Result<(), Halt> {
        workers[turn % workers.len()]
            .send(chunk)
            .map_err(|_| Halt::Stopped)?;
        turn += 1;
        Ok(())
    };
    // A returned buffer still holds the chunk it carried.
    let buffer = || match free.try_recv() {
        Ok(mut used) => {
            used.clear();
            used
        }
        Err(_) => Vec::with_capacity(chunk_bytes + (chunk_bytes >> 3)),
    };
    let mut chunk = buffer();
    while transcoder.next_row(&mut input, &mut chunk)? {
        progress.rows.store(transcoder.rows(), Ordering::Relaxed);
        if chunk.len() >= chunk_bytes {
            deal(Chunk::Raw(std::mem::replace(&mut chunk, buffer())))?;
        }
    }
    // An empty result makes no chunk, and so no part.
    if !chunk.is_empty() {
        deal(Chunk::Raw(chunk))?;
    }
    deal(Chunk::End)
}
