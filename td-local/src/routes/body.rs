//! Request bodies that carry gzip'd msgpack (streaming imports, bulk-import parts), received
//! under two limits (`crate::limits`): the bytes on the wire, and what they inflate to. The
//! body is inflated into a counter while it arrives (on the blocking pool), so a gzip bomb is
//! refused with 413 after at most `inflated` bytes of work and before the rest of it is read.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_LENGTH;
use axum::http::HeaderMap;
use futures::StreamExt;

use crate::error::Error;
use crate::inflate::{overflow, Measure, Overflow};
use crate::routes::error::{ApiError, ApiResult};

/// How much of a gzip'd body is taken.
#[derive(Debug, Clone, Copy)]
pub(super) struct GzipLimits {
    /// Bytes on the wire.
    pub bytes: usize,
    /// Bytes they may inflate to.
    pub inflated: usize,
}

fn too_large(what: &str, limits: GzipLimits) -> ApiError {
    Error::TooLarge(format!(
        "{what} is larger than {} bytes, the most td-local takes at once; split it",
        limits.bytes
    ))
    .into()
}

fn inflates_too_far(what: &str, over: Overflow) -> ApiError {
    Error::TooLarge(format!("{what} {over}; split it into smaller ones")).into()
}

/// Reads a body whole (with `Content-Length` or chunked). A declared length over the limit is
/// refused before any of the body is read. Data that is not gzip is received as it is: the
/// decoder that reads it later says so (a bulk-import part is then an error part, as TD's are).
pub(super) async fn read_gzip_body(
    headers: &HeaderMap,
    body: Body,
    limits: GzipLimits,
    what: &str,
) -> ApiResult<Vec<u8>> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.bytes as u64) {
        return Err(too_large(what, limits));
    }
    let (chunks, mut inflater_input) = tokio::sync::mpsc::channel::<Bytes>(4);
    let inflated = limits.inflated;
    let measuring = tokio::task::spawn_blocking(move || {
        let mut inflater = flate2::write::MultiGzDecoder::new(Measure::new(inflated));
        let mut gzip = true;
        while let Some(chunk) = inflater_input.blocking_recv() {
            if gzip {
                if let Err(e) = inflater.write_all(&chunk) {
                    match overflow(&e) {
                        Some(over) => return Some(over),
                        None => gzip = false,
                    }
                }
            }
        }
        let finished = if gzip { inflater.try_finish() } else { Ok(()) };
        finished.err().and_then(|e| overflow(&e))
    });
    let mut data = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::bad_request(format!("reading {what} failed: {e}")))?;
        if data.len() + chunk.len() > limits.bytes {
            return Err(too_large(what, limits));
        }
        data.extend_from_slice(&chunk);
        if chunks.send(chunk).await.is_err() {
            // The inflater stopped: past its limit.
            break;
        }
    }
    drop(chunks);
    match measuring.await {
        Ok(Some(over)) => Err(inflates_too_far(what, over)),
        Ok(None) => Ok(data),
        Err(e) => Err(Error::internal(format!("measuring {what} failed: {e}")).into()),
    }
}
