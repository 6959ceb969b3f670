//! The `stream` engine's pipe, in the order the data flows: result download → gunzip → transcode
//! into raw chunks ([`chunks`], one thread) → deflate the chunks on every core ([`deflate`]) →
//! gzip parts of ~16 MB in temporary files ([`parts`]) → bounded parallel upload (here).
//!
//! Memory stays flat whatever the result's size: a few raw chunks of a MiB are in flight, and a
//! finished part waits for its upload on disk. The parts' bytes follow from the result alone (not
//! from the thread count or timing), so a rerun, or a second run beside this one, uploads the same.

mod chunks;
mod deflate;
mod parts;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Arc;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::transcode::{Input, TranscodeError, Transcoder};
use crate::td::Payload;

pub use crate::options::{PartOptions, PART_BYTES};
pub(crate) use parts::Part;

/// Parts uploaded at once.
pub(crate) const PARALLEL_UPLOADS: usize = 2;
/// The parts' gzip level: fast to write; the importer decompresses whatever level it gets.
pub const PART_LEVEL: u32 = 3;
/// Raw (transcoded) bytes deflated as one piece: large enough that restarting the compressor costs
/// nothing measurable (<1% of size), small enough that a few in flight are a few MiB.
const CHUNK_BYTES: usize = 1 << 20;

/// Counters shared with the progress display and the status document.
#[derive(Debug, Default)]
pub struct Progress {
    /// What the write is doing (set past the pipe, by the session's driver).
    pub phase: crate::transfer::phase::PhaseCell,
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
    #[error(
        "writing a part to a temporary file in {}: {source}; set TMPDIR to a writable directory \
         with room for {} MiB", dir.display(), room.div_ceil(1 << 20)
    )]
    Spill {
        dir: PathBuf,
        source: std::io::Error,
        /// What the transfer keeps in temporary files at once (see [`spill_room`]).
        room: usize,
    },
    #[error("compressing a part: {0}")]
    Deflate(std::io::Error),
    #[error("uploading part {part}: {source}")]
    Upload { part: String, source: E },
    #[error("the transfer's threads stopped: {0}")]
    Join(String),
}

/// The most a transfer cutting parts at `part_bytes` keeps in temporary files at once: the part
/// being written, one waiting, and those uploading.
fn spill_room(part_bytes: usize) -> usize {
    (PARALLEL_UPLOADS + 2) * (part_bytes + (part_bytes >> 3))
}

/// Why a blocking stage ended early.
enum Halt {
    /// A stage beside it stopped (the uploader, or a stage that failed: that one says why).
    Stopped,
    Transcode(TranscodeError),
    Spill {
        dir: PathBuf,
        source: std::io::Error,
    },
    Deflate(std::io::Error),
}

impl Halt {
    fn spill(dir: &Path, source: std::io::Error) -> Halt {
        Halt::Spill {
            dir: dir.to_path_buf(),
            source,
        }
    }
}

impl From<TranscodeError> for Halt {
    fn from(e: TranscodeError) -> Self {
        Halt::Transcode(e)
    }
}

/// The deterministic name of the `index`-th part (0-based): a rerun overwrites the same parts.
pub(crate) fn part_name(index: u64) -> String {
    format!("part_{index:06}")
}

/// Streams `body` (a msgpack.gz result) through `transcoder` into parts cut as `options` says,
/// each handed to `upload` as soon as it is complete.
pub async fn pipe<S, U, F, E>(
    body: S,
    transcoder: Transcoder,
    options: &PartOptions,
    progress: Arc<Progress>,
    upload: U,
) -> Result<Moved, StreamError<E>>
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    U: Fn(String, Payload) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    // One part waits while the others upload; the cutter waits for room.
    let (parts_tx, parts_rx) = mpsc::channel::<Part>(1);
    let counting = {
        let progress = progress.clone();
        body.inspect_ok(move |chunk| {
            progress.bytes_in.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        })
    };
    let reader = SyncIoBridge::new(StreamReader::new(counting));
    let (options_, making_progress) = (options.clone(), progress.clone());
    let making = tokio::task::spawn_blocking(move || {
        let input = Input::new(MultiGzDecoder::new(reader));
        make_parts(input, transcoder, &options_, &making_progress, &parts_tx)
    });
    let uploaded = upload_parts(parts_rx, upload, &progress).await;
    let made = making.await.map_err(|e| StreamError::Join(e.to_string()))?;
    uploaded?;
    let parts = made.map_err(|halt| match halt {
        Halt::Stopped => StreamError::Join("a stage stopped without saying why".into()),
        Halt::Transcode(e) => StreamError::Transcode(e),
        Halt::Spill { dir, source } => StreamError::Spill {
            dir,
            source,
            room: spill_room(options.bytes),
        },
        Halt::Deflate(e) => StreamError::Deflate(e),
    })?;
    Ok(Moved {
        rows: progress.rows.load(Ordering::Relaxed),
        parts,
        bytes_in: progress.bytes_in.load(Ordering::Relaxed),
        bytes_out: progress.bytes_out.load(Ordering::Relaxed),
    })
}

/// Runs the blocking stages, each on its own thread, joined by bounded channels: the cutter
/// (here), `options.threads` deflate workers and the part assembler. Returns the part count, or
/// the failure of the first stage that failed (the others just stopped).
fn make_parts<R: std::io::Read + Send>(
    input: Input<R>,
    transcoder: Transcoder,
    options: &PartOptions,
    progress: &Progress,
    parts: &mpsc::Sender<Part>,
) -> Result<u64, Halt> {
    let workers = options.threads.max(1);
    let chunk_bytes = CHUNK_BYTES.min(options.bytes).max(1);
    std::thread::scope(|scope| {
        let (free_tx, free_rx) = channel::<Vec<u8>>();
        let (mut to_workers, mut from_workers, mut working) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..workers {
            let (chunk_tx, chunk_rx) = sync_channel(1);
            let (block_tx, block_rx) = sync_channel(1);
            let free = free_tx.clone();
            working.push(scope.spawn(move || deflate::work(PART_LEVEL, chunk_rx, block_tx, free)));
            to_workers.push(chunk_tx);
            from_workers.push(block_rx);
        }
        drop(free_tx);
        let assembling = scope.spawn(move || parts::assemble(&from_workers, options, parts));
        let cut = chunks::cut(input, transcoder, chunk_bytes, progress, &to_workers, &free_rx);
        drop(to_workers);
        let worked: Vec<Result<(), Halt>> = working.into_iter().map(joined).collect();
        let assembled = joined(assembling);
        // The first real failure in the order the data flows; the other stages merely stopped.
        match first_failure(std::iter::once(cut).chain(worked)) {
            Some(halt) => Err(halt),
            None => assembled,
        }
    })
}

fn joined<T>(stage: std::thread::ScopedJoinHandle<'_, Result<T, Halt>>) -> Result<T, Halt> {
    stage
        .join()
        .unwrap_or_else(|_| Err(Halt::Deflate(std::io::Error::other("a thread panicked"))))
}

fn first_failure(results: impl IntoIterator<Item = Result<(), Halt>>) -> Option<Halt> {
    results.into_iter().find_map(|r| match r {
        Ok(()) | Err(Halt::Stopped) => None,
        Err(halt) => Some(halt),
    })
}

/// Uploads the parts as they come, at most [`PARALLEL_UPLOADS`] at once; the first failure
/// stops taking parts (which stops the stages before) and is the one returned.
async fn upload_parts<U, F, E>(
    mut parts: mpsc::Receiver<Part>,
    upload: U,
    progress: &Arc<Progress>,
) -> Result<(), StreamError<E>>
where
    U: Fn(String, Payload) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let upload = Arc::new(upload);
    let mut flying: JoinSet<Result<u64, StreamError<E>>> = JoinSet::new();
    let mut upload_error = None;
    while let Some(Part { name, payload }) = parts.recv().await {
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
            let len = payload.len();
            upload(name.clone(), payload)
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

fn flatten_join<E: std::error::Error + 'static>(
    r: Result<Result<u64, StreamError<E>>, tokio::task::JoinError>,
) -> Result<u64, StreamError<E>> {
    r.map_err(|e| StreamError::Join(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use crate::options::PART_RAW_BYTES;
    use std::io::Read;
    use std::sync::Mutex;

    use flate2::read::GzDecoder;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use rand::RngCore;
    use rmpv::Value;

    use super::*;
    use crate::transfer::columns::{map_columns, TimeFill};

    /// `rows` result rows `[time, payload]`, as a msgpack.gz body of two gzip members (one empty
    /// member for no rows, as TD sends an empty result).
    fn result_body(rows: &[(i64, Vec<u8>)]) -> Vec<u8> {
        if rows.is_empty() {
            return GzEncoder::new(Vec::new(), Compression::fast()).finish().unwrap();
        }
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

    /// Rows with `payload_bytes` of random bytes each: incompressible, so they fill parts.
    fn random_rows(n: usize, payload_bytes: usize) -> Vec<(i64, Vec<u8>)> {
        let mut rng = rand::rng();
        (0..n)
            .map(|i| {
                let mut payload = vec![0u8; payload_bytes];
                rng.fill_bytes(&mut payload);
                (1_700_000_000 + i as i64, payload)
            })
            .collect()
    }

    fn transcoder() -> Transcoder {
        let column = |name: &str, result_type: &str| td_model::schema::ResultColumn {
            name: name.into(),
            result_type: result_type.into(),
        };
        let columns = map_columns(&[column("time", "bigint"), column("payload", "varbinary")]);
        Transcoder::new(&columns, TimeFill::Column(0))
    }

    fn part_options(bytes: usize, threads: usize, dir: &Path) -> PartOptions {
        PartOptions {
            bytes,
            raw_bytes: PART_RAW_BYTES,
            threads,
            dir: dir.to_path_buf(),
        }
    }

    type Uploaded = Arc<Mutex<Vec<(String, Bytes)>>>;

    /// Runs the pipe over `body` in pieces of 100 kB; the parts uploaded, sorted by name.
    async fn run(
        body: Vec<u8>,
        options: &PartOptions,
    ) -> (Result<Moved, StreamError<std::io::Error>>, Vec<(String, Bytes)>) {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let uploaded: Uploaded = Arc::default();
        let sink = uploaded.clone();
        let moved = pipe(
            futures::stream::iter(chunks),
            transcoder(),
            options,
            Arc::new(Progress::default()),
            move |name, payload: Payload| {
                sink.lock().unwrap().push((name, payload.to_bytes().unwrap()));
                async { Ok::<(), std::io::Error>(()) }
            },
        )
        .await;
        let mut parts = uploaded.lock().unwrap().clone();
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        (moved, parts)
    }

    /// The records of every part; each part must be exactly one gzip member, CRC and length
    /// checked, with nothing after it.
    fn decoded_rows(parts: &[(String, Bytes)]) -> Vec<Value> {
        let mut rows = Vec::new();
        for (name, part) in parts {
            let mut input = &part[..];
            let mut raw = Vec::new();
            GzDecoder::new(&mut input).read_to_end(&mut raw).unwrap();
            assert!(
                input.is_empty(),
                "{name}: {} bytes after the first gzip member",
                input.len()
            );
            let mut cursor = &raw[..];
            while !cursor.is_empty() {
                rows.push(rmpv::decode::read_value(&mut cursor).unwrap());
            }
        }
        rows
    }

    #[tokio::test]
    async fn every_row_arrives_once_in_order_across_chunks_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        // Incompressible rows: 2.5 MiB over 2 MiB parts cut from 1 MiB chunks.
        let bytes = 2 << 20;
        let rows = random_rows((bytes * 5 / 4) / 4096, 4096);
        let (moved, parts) = run(result_body(&rows), &part_options(bytes, 2, dir.path())).await;
        let moved = moved.unwrap();

        assert_eq!(
            parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["part_000000", "part_000001"]
        );
        assert_eq!(moved.rows, rows.len() as u64);
        assert_eq!(moved.parts, 2);
        assert_eq!(
            moved.bytes_out,
            parts.iter().map(|p| p.1.len() as u64).sum::<u64>()
        );
        let got = decoded_rows(&parts);
        assert_eq!(got.len(), rows.len());
        for (row, (time, payload)) in got.iter().zip(&rows) {
            let map = row.as_map().unwrap();
            assert_eq!(map[0], (Value::from("time"), Value::from(*time)));
            assert_eq!(map[1], (Value::from("payload"), Value::Binary(payload.clone())));
        }
    }

    #[tokio::test]
    async fn a_sparse_result_is_cut_by_its_inflated_size_too() {
        let dir = tempfile::tempdir().unwrap();
        // Rows that deflate 100:1 and more: 6 MiB of zeros in 4 KiB payloads.
        let rows: Vec<(i64, Vec<u8>)> = (0..1_536).map(|i| (1_700_000_000 + i, vec![0u8; 4096])).collect();
        let options = PartOptions {
            raw_bytes: 2 << 20,
            ..part_options(16 << 20, 2, dir.path())
        };
        let (moved, parts) = run(result_body(&rows), &options).await;
        assert_eq!(moved.unwrap().rows, rows.len() as u64);
        assert!(parts.len() >= 3, "{} parts: cut by inflated size", parts.len());
        for (name, part) in &parts {
            let mut raw = Vec::new();
            GzDecoder::new(&part[..]).read_to_end(&mut raw).unwrap();
            // A part is cut at the first chunk (about 1 MiB) that reaches the bound.
            assert!(
                raw.len() <= (2 << 20) + (2 << 20),
                "{name}: {} bytes inflated",
                raw.len()
            );
        }
        assert_eq!(decoded_rows(&parts).len(), rows.len());
    }

    #[tokio::test]
    async fn the_parts_are_the_same_bytes_whatever_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        // Compressible rows of varying length, over many chunks and several parts.
        let rows: Vec<(i64, Vec<u8>)> = (0..20_000)
            .map(|i| {
                (
                    1_700_000_000 + i,
                    format!("row {i} {}", "x".repeat(i as usize % 97)).into_bytes(),
                )
            })
            .collect();
        let body = result_body(&rows);
        let mut seen = Vec::new();
        for threads in [1, 2, 5] {
            let (moved, parts) = run(body.clone(), &part_options(40_000, threads, dir.path())).await;
            assert_eq!(moved.unwrap().rows, rows.len() as u64);
            assert!(parts.len() > 3, "{} parts", parts.len());
            assert_eq!(decoded_rows(&parts).len(), rows.len());
            seen.push(parts);
        }
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[0], seen[2]);
    }

    #[tokio::test]
    async fn parts_wait_in_files_that_have_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let held: Arc<Mutex<Vec<Payload>>> = Arc::default();
        let keep = held.clone();
        let body = result_body(&random_rows(300, 1000));
        let moved = pipe(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]),
            transcoder(),
            &part_options(50_000, 2, dir.path()),
            Arc::new(Progress::default()),
            move |_, payload: Payload| {
                keep.lock().unwrap().push(payload);
                async { Ok::<(), std::io::Error>(()) }
            },
        )
        .await
        .unwrap();
        assert!(moved.parts >= 3, "{moved:?}");
        let held = held.lock().unwrap();
        assert!(held.iter().all(|p| matches!(p, Payload::File { .. })));
        // The parts are still open here, yet nothing is left to see (or to clean up) in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_temp_dir_that_cannot_be_written_is_named_with_the_fix() {
        let missing = Path::new("/nonexistent/tdre-parts");
        // The room asked for follows the part size: 4 parts of 16 MiB + 1/8, or of 1 MiB + 1/8.
        for (part_bytes, room) in [(PART_BYTES, "room for 72 MiB"), (1 << 20, "room for 5 MiB")] {
            let (moved, parts) = run(
                result_body(&random_rows(10, 100)),
                &part_options(part_bytes, 2, missing),
            )
            .await;
            let e = moved.unwrap_err();
            assert!(matches!(e, StreamError::Spill { .. }), "{e:?}");
            let message = e.to_string();
            assert!(
                message.contains("/nonexistent/tdre-parts")
                    && message.contains("TMPDIR")
                    && message.contains(room),
                "{message}"
            );
            assert!(parts.is_empty());
        }
    }

    #[tokio::test]
    async fn a_failed_upload_stops_every_stage_and_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let body = result_body(&random_rows(2_000, 1000));
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let moved = pipe(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]),
            transcoder(),
            &part_options(20_000, 2, dir.path()),
            Arc::new(Progress::default()),
            move |name, _| {
                let call = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    match call {
                        1 => Err(std::io::Error::other(format!("{name} refused"))),
                        _ => Ok(()),
                    }
                }
            },
        )
        .await;
        match moved {
            Err(StreamError::Upload { part, .. }) => assert_eq!(part, "part_000001"),
            other => panic!("{other:?}"),
        }
        // ~100 parts' worth of rows: the stages stopped long before the end.
        assert!(calls.load(Ordering::SeqCst) < 10, "{calls:?}");
    }

    #[tokio::test]
    async fn a_malformed_result_is_the_error_and_its_last_part_is_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = result_body(&random_rows(50, 100));
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        std::io::Write::write_all(&mut gz, &[0x92, 0xc1, 0x00]).unwrap(); // 0xc1 is never valid msgpack
        body.extend(gz.finish().unwrap());
        let (moved, parts) = run(body, &part_options(PART_BYTES, 2, dir.path())).await;
        let e = moved.unwrap_err();
        assert!(e.to_string().contains("0xc1"), "{e}");
        assert!(parts.is_empty(), "{} parts", parts.len());
    }

    #[tokio::test]
    async fn an_empty_result_makes_no_part() {
        let dir = tempfile::tempdir().unwrap();
        let (moved, parts) = run(result_body(&[]), &part_options(PART_BYTES, 2, dir.path())).await;
        assert_eq!(moved.unwrap().parts, 0);
        assert!(parts.is_empty());
    }
}
