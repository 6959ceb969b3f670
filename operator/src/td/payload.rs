//! A request body that can be sent again: a retry resends it from its first byte.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

/// A file body is read in pieces of this size, so that sending it holds no more than this.
const READ_BYTES: usize = 256 << 10;

#[derive(Debug, Clone)]
pub enum Payload {
    Bytes(Bytes),
    /// The first `len` bytes of a file, read afresh for every attempt (a part the operator spilled
    /// to a temporary file instead of holding it in memory).
    File {
        file: Arc<File>,
        len: u64,
    },
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body of one attempt.
    pub(crate) fn body(&self) -> reqwest::Body {
        match self {
            Payload::Bytes(b) => b.clone().into(),
            Payload::File { file, len } => reqwest::Body::wrap_stream(read_file(file.clone(), *len)),
        }
    }

    /// Every byte, in memory (for tests and small bodies).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        match self {
            Payload::Bytes(b) => Ok(b.clone()),
            Payload::File { file, len } => {
                let mut buf = vec![0; *len as usize];
                file.read_exact_at(&mut buf, 0)?;
                Ok(buf.into())
            }
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::Bytes(b)
    }
}

/// `len` bytes of `file` from its start, [`READ_BYTES`] at a time, each read on the blocking pool.
/// Positional reads: attempts never share an offset.
fn read_file(file: Arc<File>, len: u64) -> impl Stream<Item = io::Result<Bytes>> {
    futures::stream::try_unfold(0u64, move |offset| {
        let file = file.clone();
        async move {
            if offset >= len {
                return Ok(None);
            }
            let n = (len - offset).min(READ_BYTES as u64) as usize;
            let piece = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; n];
                file.read_exact_at(&mut buf, offset).map(|()| Bytes::from(buf))
            })
            .await
            .map_err(io::Error::other)??;
            Ok(Some((piece, offset + n as u64)))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures::TryStreamExt;

    use super::*;

    #[tokio::test]
    async fn a_file_body_is_read_whole_from_its_start_every_time() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(READ_BYTES * 2 + 17)).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        file.write_all(b"not part of the body").unwrap();
        let file = Arc::new(file);
        let len = data.len() as u64;
        for _ in 0..2 {
            let read: Vec<Bytes> = read_file(file.clone(), len).try_collect().await.unwrap();
            assert_eq!(read.len(), 3);
            assert_eq!(read.concat(), data);
        }
        let payload = Payload::File { file, len };
        assert_eq!(payload.to_bytes().unwrap(), data);
    }
}
