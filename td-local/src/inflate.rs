//! Inflating gzip under a limit: a body may say it is small and inflate to gigabytes, so every
//! inflater td-local runs on what a caller sent counts what comes out and stops past the limit.

use std::io::{self, Read, Write};

/// What a capped inflater fails with once more than its limit has come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("inflates to more than {limit} bytes")]
pub struct Overflow {
    pub limit: usize,
}

/// Whether an I/O error is an [`Overflow`] (however deep a decoder passed it on).
pub fn overflow(e: &io::Error) -> Option<Overflow> {
    e.get_ref()?.downcast_ref::<Overflow>().copied()
}

/// Counts what is written to it and fails once more than `limit` bytes were: the sink of an
/// inflater that only measures (`flate2::write::MultiGzDecoder<Measure>`).
#[derive(Debug)]
pub struct Measure {
    limit: usize,
    written: usize,
}

impl Measure {
    pub fn new(limit: usize) -> Measure {
        Measure { limit, written: 0 }
    }
}

impl Write for Measure {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        if self.written > self.limit {
            return Err(io::Error::other(Overflow { limit: self.limit }));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader (an inflater) that fails once more than `limit` bytes have been read from it.
#[derive(Debug)]
pub struct Capped<R> {
    inner: R,
    limit: usize,
    read: usize,
}

impl<R: Read> Capped<R> {
    pub fn new(inner: R, limit: usize) -> Capped<R> {
        Capped {
            inner,
            limit,
            read: 0,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        if self.read > self.limit {
            return Err(io::Error::other(Overflow { limit: self.limit }));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use flate2::read::MultiGzDecoder;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn both_ends_stop_one_byte_past_the_limit() {
        let body = gzip(&[7u8; 1000]);
        let mut out = Vec::new();
        Capped::new(MultiGzDecoder::new(&body[..]), 1000)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 1000);
        let e = Capped::new(MultiGzDecoder::new(&body[..]), 999)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(overflow(&e), Some(Overflow { limit: 999 }));

        let mut measured = flate2::write::MultiGzDecoder::new(Measure::new(999));
        let e = measured
            .write_all(&body)
            .and_then(|()| measured.try_finish())
            .unwrap_err();
        assert_eq!(overflow(&e), Some(Overflow { limit: 999 }));
        let mut measured = flate2::write::MultiGzDecoder::new(Measure::new(1000));
        measured.write_all(&body).unwrap();
        measured.try_finish().unwrap();
        assert_eq!(overflow(&io::Error::other("other")), None);
    }
}
