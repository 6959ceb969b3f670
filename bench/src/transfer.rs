//! The operator's transfer phase alone: download the job's msgpack.gz result, transcode, compress
//! and upload the parts, against a server that answers every upload at once (`tdre-bench sink`).
//! No session is created, frozen, performed or committed, and nothing polls: what is left is the
//! part of the export the operator's own code decides the speed of.
//!
//! Every use of the operator's library for this is in [`operator_transfer`], built the way
//! `operator/src/export/stream.rs` builds its stream run, so that a change to the pipe's signature
//! is adapted in that one function.

use std::sync::Arc;

use anyhow::Context;

/// What the transfer phase moved, as the operator's pipe counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Rows transcoded.
    pub rows: u64,
    /// Parts uploaded.
    pub parts: u64,
    /// Compressed result bytes downloaded.
    pub bytes_in: u64,
    /// Compressed part bytes uploaded.
    pub bytes_out: u64,
    /// The row count the source job reports (`num_records`), to check `rows` against.
    pub job_rows: Option<u64>,
    /// Threads the pipe deflated on.
    pub threads: usize,
}

/// Runs the operator's stream pipe on job `job_id`'s result from `source` (td-local, with
/// `apikey`), uploading every part to `sink` as `PUT /v3/bulk_import/upload_part/{session}/{part}`.
///
/// The same pieces as the operator's stream engine, in the same way: `TdClient` with the default
/// retry policy and an HTTP client of no proxies, the job's result schema through `map_columns`,
/// the row `time` from the result's `time` column (`time_fill`, no setting), `job_result` in
/// msgpack.gz, `pipe` with a `Transcoder` of those columns and the operator's part options (the
/// operator's part size, one deflate thread per core, parts waiting in temporary files under
/// `TMPDIR`, as `Options::from_env` reads them) — with `threads` deflate threads instead when given — and `TdClient::upload_part` for
/// each part's payload.
pub async fn operator_transfer(
    source: &str,
    apikey: &str,
    job_id: &str,
    sink: &str,
    session: &str,
    threads: Option<usize>,
) -> anyhow::Result<Transferred> {
    use td_result_export::internals::result_schema;
    use td_result_export::internals::RetryPolicy;
    use td_result_export::internals::Transcoder;
    use td_result_export::internals::{http_client, Proxies, TdClient};
    use td_result_export::internals::{map_columns, time_fill};
    use td_result_export::internals::{pipe, PartOptions, Progress};

    // As the operator makes them: TMPDIR, TDRE_PART_BYTES and TDRE_COMPRESS_THREADS apply.
    let defaults = td_result_export::Options::from_env(&std::env::vars().collect()).parts;
    let options = PartOptions {
        threads: threads.unwrap_or(defaults.threads),
        ..defaults
    };
    let http = http_client(&Proxies::default())?;
    let source = TdClient::new(http.clone(), source, apikey, RetryPolicy::default());
    let target = TdClient::new(http, sink, "sink", RetryPolicy::default());
    let job = source.job(job_id).await.context("reading the source job")?;
    let columns = map_columns(&result_schema(&job)?);
    let (fill, _time_source) = time_fill(&columns, None, None, &job)?;
    let body = source
        .job_result(job_id, "msgpack.gz")
        .await
        .context("starting the result download")?;
    let session = session.to_string();
    let moved = pipe(
        body,
        Transcoder::new(&columns, fill),
        &options,
        Arc::new(Progress::default()),
        move |part, payload| {
            let (target, session) = (target.clone(), session.clone());
            async move { target.upload_part(&session, &part, payload).await }
        },
    )
    .await?;
    Ok(Transferred {
        rows: moved.rows,
        parts: moved.parts,
        bytes_in: moved.bytes_in,
        bytes_out: moved.bytes_out,
        job_rows: job.num_records.map(|n| n.max(0) as u64),
        threads: options.threads,
    })
}

/// Writes to `out` the records the operator's pipe makes of job `job_id`'s result, read from
/// `result` (its msgpack.gz, downloaded beforehand): the bytes its parts compress, for the floor
/// on the operator's bytes. The same columns and `time` as [`operator_transfer`]; the rows' count.
pub async fn operator_records(
    source: &str,
    apikey: &str,
    job_id: &str,
    result: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<u64> {
    use std::io::Write;
    use td_result_export::internals::result_schema;
    use td_result_export::internals::RetryPolicy;
    use td_result_export::internals::{http_client, Proxies, TdClient};
    use td_result_export::internals::{map_columns, time_fill};
    use td_result_export::internals::{Input, Transcoder};

    let source = TdClient::new(
        http_client(&Proxies::default())?,
        source,
        apikey,
        RetryPolicy::default(),
    );
    let job = source.job(job_id).await.context("reading the source job")?;
    let columns = map_columns(&result_schema(&job)?);
    let (fill, _time_source) = time_fill(&columns, None, None, &job)?;
    let mut transcoder = Transcoder::new(&columns, fill);
    let opened = std::fs::File::open(result).with_context(|| format!("opening {}", result.display()))?;
    let mut input = Input::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(opened)));
    let mut file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut batch = Vec::with_capacity(1 << 17);
    while transcoder.next_row(&mut input, &mut batch)? {
        if batch.len() >= 1 << 16 {
            file.write_all(&batch)?;
            batch.clear();
        }
    }
    file.write_all(&batch)?;
    Ok(transcoder.rows())
}
