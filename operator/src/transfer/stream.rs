//! The `stream` engine's pipe: result download → gunzip → transcode → gzip parts of ~16 MB →
//! bounded parallel upload. Memory stays flat: at most `parallel` parts wait or fly at once.

use std::future::Future;
use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::{read::MultiGzDecoder, Compression};
use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::transcode::{TranscodeError, Transcoder};

pub use crate::options::PART_BYTES;
/// Parts uploaded at once.
pub const PARALLEL_UPLOADS: usize = 2;
/// The parts' gzip level: fast to write; the importer decompresses whatever level it gets.
pub const PART_LEVEL: u32 = 3;
/// Transcoded rows reach the gzip encoder in batches of this size: flate2 runs its compressor (and
/// zeroes its 32 KiB output buffer) on every write, so row-sized writes cost more than the compression.
const BATCH_BYTES: usize = 64 << 10;

/// Counters shared with the progress display and the status document.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub parts: AtomicU64,
}

/// What a finished transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moved {
    pub rows: u64,
    pub parts: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
    #[error("uploading part {part}: {source}")]
    Upload { part: String, source: E },
    #[error("the transcoding thread stopped: {0}")]
    Join(String),
}

/// The deterministic name of the `index`-th part (0-based): a rerun overwrites the same parts.
pub fn part_name(index: u64) -> String {
    format!("part_{index:06}")
}

/// Streams `body` (a msgpack.gz result) through `transcoder` into parts of about `part_bytes`
/// compressed bytes handed to `upload`.
pub async fn pipe<S, U, F, E>(
    body: S,
    transcoder: Transcoder,
    part_bytes: usize,
    progress: Arc<Progress>,
    upload: U,
) -> Result<Moved, StreamError<E>>
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    U: Fn(String, Bytes) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (parts_tx, parts_rx) = mpsc::channel::<(String, Bytes)>(PARALLEL_UPLOADS);
    let counting = {
        let progress = progress.clone();
        body.inspect_ok(move |chunk| {
            progress.bytes_in.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        })
    };
    let reader = SyncIoBridge::new(StreamReader::new(counting));
    let cut_progress = progress.clone();
    let cutter = tokio::task::spawn_blocking(move || {
        let input = BufReader::with_capacity(1 << 16, MultiGzDecoder::new(reader));
        cut_parts(input, transcoder, part_bytes, &cut_progress, &parts_tx)
    });
    let uploaded = upload_parts(parts_rx, upload, &progress).await;
    let cut = cutter.await.map_err(|e| StreamError::Join(e.to_string()))?;
    uploaded?;
    let parts = cut?;
    Ok(Moved {
        rows: progress.rows.load(Ordering::Relaxed),
        parts,
        bytes_in: progress.bytes_in.load(Ordering::Relaxed),
        bytes_out: progress.bytes_out.load(Ordering::Relaxed),
    })
}

/// Transcodes every row of `input` into gzip parts cut at `part_bytes`, sent on `parts` in
/// order; returns how many parts there were. Blocking: runs on its own thread.
fn cut_parts<R: std::io::BufRead>(
    mut input: R,
    mut transcoder: Transcoder,
    part_bytes: usize,
    progress: &Progress,
    parts: &mpsc::Sender<(String, Bytes)>,
) -> Result<u64, TranscodeError> {
    let mut part = new_part(part_bytes);
    let mut count = 0u64;
    let mut rows_in_part = 0u64;
    let send = |encoder: GzEncoder<Vec<u8>>, count: &mut u64| -> Result<(), TranscodeError> {
        let bytes = Bytes::from(encoder.finish()?);
        let name = part_name(*count);
        *count += 1;
        // A closed channel means the uploader failed: stop; its error is the one reported.
        parts
            .blocking_send((name, bytes))
            .map_err(|_| TranscodeError::Io(std::io::ErrorKind::BrokenPipe.into()))
    };
    let mut batch = Vec::with_capacity(BATCH_BYTES << 1);
    while transcoder.next_row(&mut input, &mut batch)? {
        progress.rows.store(transcoder.rows(), Ordering::Relaxed);
        rows_in_part += 1;
        if batch.len() >= BATCH_BYTES {
            part.write_all(&batch)?;
            batch.clear();
            if part.get_ref().len() >= part_bytes {
                send(std::mem::replace(&mut part, new_part(part_bytes)), &mut count)?;
                rows_in_part = 0;
            }
        }
    }
    // An empty result makes no part at all.
    if rows_in_part > 0 {
        part.write_all(&batch)?;
        send(part, &mut count)?;
    }
    Ok(count)
}

/// Uploads the parts as they come, at most [`PARALLEL_UPLOADS`] at once; the first failure
/// stops taking parts (which stops the cutter) and is the one returned.
async fn upload_parts<U, F, E>(
    mut parts: mpsc::Receiver<(String, Bytes)>,
    upload: U,
    progress: &Arc<Progress>,
) -> Result<(), StreamError<E>>
where
    U: Fn(String, Bytes) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let upload = Arc::new(upload);
    let mut flying: JoinSet<Result<u64, StreamError<E>>> = JoinSet::new();
    let mut upload_error = None;
    while let Some((name, bytes)) = parts.recv().await {
        while flying.len() >= PARALLEL_UPLOADS {
            if let Some(Err(e)) = flying.join_next().await.map(flatten_join) {
                upload_error.get_or_insert(e);
            }
        }
        if upload_error.is_some() {
            break;
        }
        let upload = upload.clone();
        let progress = progress.clone();
        flying.spawn(async move {
            let len = bytes.len() as u64;
            upload(name.clone(), bytes)
                .await
                .map_err(|source| StreamError::Upload { part: name, source })?;
            progress.bytes_out.fetch_add(len, Ordering::Relaxed);
            progress.parts.fetch_add(1, Ordering::Relaxed);
            Ok(len)
        });
    }
    drop(parts);
    while let Some(done) = flying.join_next().await {
        if let Err(e) = flatten_join(done) {
            upload_error.get_or_insert(e);
        }
    }
    upload_error.map_or(Ok(()), Err)
}

fn new_part(part_bytes: usize) -> GzEncoder<Vec<u8>> {
    GzEncoder::new(
        Vec::with_capacity(part_bytes + (part_bytes >> 3)),
        Compression::new(PART_LEVEL),
    )
}

fn flatten_join<E: std::error::Error + 'static>(
    r: Result<Result<u64, StreamError<E>>, tokio::task::JoinError>,
) -> Result<u64, StreamError<E>> {
    r.map_err(|e| StreamError::Join(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Mutex;

    use rand::RngCore;
    use rmpv::Value;

    use super::*;
    use crate::transfer::columns::map_columns;
    use crate::transfer::columns::TimeFill;

    /// `rows` result rows `[time, payload]`, as a msgpack.gz body of two gzip members.
    fn result_body(rows: &[(i64, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for half in rows.chunks(rows.len().div_ceil(2)) {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            for (time, payload) in half {
                let row = Value::Array(vec![Value::from(*time), Value::Binary(payload.clone())]);
                rmpv::encode::write_value(&mut gz, &row).unwrap();
            }
            body.extend(gz.finish().unwrap());
        }
        body
    }

    fn decoded_rows(parts: &[(String, Bytes)]) -> Vec<Value> {
        let mut rows = Vec::new();
        for (_, part) in parts {
            let mut raw = Vec::new();
            MultiGzDecoder::new(&part[..]).read_to_end(&mut raw).unwrap();
            let mut cursor = &raw[..];
            while !cursor.is_empty() {
                rows.push(rmpv::decode::read_value(&mut cursor).unwrap());
            }
        }
        rows
    }

    #[tokio::test]
    async fn every_row_arrives_once_in_order_across_batches_and_parts() {
        // Incompressible payloads, so that the rows fill more than one part.
        let mut rng = rand::rng();
        let rows: Vec<(i64, Vec<u8>)> = (0..(PART_BYTES * 5 / 4) / 4096)
            .map(|i| {
                let mut payload = vec![0u8; 4096];
                rng.fill_bytes(&mut payload);
                (1_700_000_000 + i as i64, payload)
            })
            .collect();
        let body = result_body(&rows);
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let columns = map_columns(&[
            td_model::schema::ResultColumn {
                name: "time".into(),
                result_type: "bigint".into(),
            },
            td_model::schema::ResultColumn {
                name: "payload".into(),
                result_type: "varbinary".into(),
            },
        ]);
        let uploaded = Arc::new(Mutex::new(Vec::new()));
        let sink = uploaded.clone();
        let moved = pipe(
            futures::stream::iter(chunks),
            Transcoder::new(&columns, TimeFill::Column(0)),
            PART_BYTES,
            Arc::new(Progress::default()),
            move |name, bytes| {
                sink.lock().unwrap().push((name, bytes));
                async { Ok::<(), std::io::Error>(()) }
            },
        )
        .await
        .unwrap();

        let mut parts = uploaded.lock().unwrap().clone();
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["part_000000", "part_000001"]
        );
        assert_eq!(moved.rows, rows.len() as u64);
        assert_eq!(moved.parts, 2);
        let got = decoded_rows(&parts);
        assert_eq!(got.len(), rows.len());
        for (row, (time, payload)) in got.iter().zip(&rows) {
            let map = row.as_map().unwrap();
            assert_eq!(map[0], (Value::from("time"), Value::from(*time)));
            assert_eq!(map[1], (Value::from("payload"), Value::Binary(payload.clone())));
        }
    }
}
