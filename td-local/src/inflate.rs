//! Inflating gzip under a limit: a body may say it is small and inflate to gigabytes, so every
//! inflater td-local runs on what a caller sent counts what comes out and stops past the limit.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// What a capped inflater fails with once more than its limit has come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("inflates to more than {limit} bytes")]
pub(crate) struct Overflow {
    pub limit: usize,
}

/// Whether an I/O error is an [`Overflow`] (however deep a decoder passed it on).
pub(crate) fn overflow(e: &io::Error) -> Option<Overflow> {
    e.get_ref()?.downcast_ref::<Overflow>().copied()
}

/// Counts what is written to it and fails once more than `limit` bytes were: the sink of an
/// inflater that only measures (`flate2::write::MultiGzDecoder<Measure>`).
#[derive(Debug)]
pub(crate) struct Measure {
    limit: usize,
    written: usize,
}

impl Measure {
    pub(crate) fn new(limit: usize) -> Measure {
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
pub(crate) struct Capped<R> {
    inner: R,
    limit: usize,
    read: usize,
}

impl<R: Read> Capped<R> {
    pub(crate) fn new(inner: R, limit: usize) -> Capped<R> {
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

/// Bytes handed from the thread that reads them (an inflater) to the thread that uses them, in
/// chunks of this size: large enough that handing one over costs nothing measurable.
const HANDOFF_CHUNK: usize = 1 << 18;

enum Handoff {
    /// A chunk and how many of its bytes are read ones.
    Bytes(Vec<u8>, usize),
    End,
    Failed(io::Error),
}

/// The reading end of a hand-off: what [`Producer::pump`] read, in order, then its end or its
/// error. A producer that stops without either is an error here, never a clean end.
pub(crate) struct Handed {
    from: Receiver<Handoff>,
    free: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
    ended: bool,
}

/// The writing end of a hand-off (see [`handoff`]).
pub(crate) struct Producer {
    to: SyncSender<Handoff>,
    free: Receiver<Vec<u8>>,
}

/// A pipe from one thread's reads to another's: two chunks wait at most, and chunks go back
/// to the producer to be filled again, so memory holds a few chunks however much is read.
pub(crate) fn handoff() -> (Producer, Handed) {
    let (to, from) = mpsc::sync_channel(2);
    let (give_back, free) = mpsc::sync_channel(3);
    let producer = Producer { to, free };
    let handed = Handed {
        from,
        free: give_back,
        chunk: Vec::new(),
        len: 0,
        pos: 0,
        ended: false,
    };
    (producer, handed)
}

impl Producer {
    /// Reads `source` to its end (or its first error) into the hand-off; stops early once the
    /// reading end is gone.
    pub(crate) fn pump(self, mut source: impl Read) {
        loop {
            let mut chunk = self.free.try_recv().unwrap_or_default();
            chunk.resize(HANDOFF_CHUNK, 0);
            let mut len = 0;
            let failed = loop {
                match source.read(&mut chunk[len..]) {
                    Ok(0) => break None,
                    Ok(n) => {
                        len += n;
                        if len == chunk.len() {
                            break None;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e),
                }
            };
            // What was read before an end or an error is handed over first.
            let last = len < chunk.len();
            if len > 0 && self.to.send(Handoff::Bytes(chunk, len)).is_err() {
                return;
            }
            if last {
                let _ = self.to.send(failed.map_or(Handoff::End, Handoff::Failed));
                return;
            }
        }
    }
}

impl Read for Handed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if self.ended {
                return Ok(0);
            }
            match self.from.recv() {
                Ok(Handoff::Bytes(chunk, len)) => {
                    let used = std::mem::replace(&mut self.chunk, chunk);
                    if !used.is_empty() {
                        let _ = self.free.try_send(used);
                    }
                    (self.len, self.pos) = (len, 0);
                }
                Ok(Handoff::End) => self.ended = true,
                Ok(Handoff::Failed(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the inflating thread stopped before the end"));
                }
            }
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
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

    /// Bytes, chunk after chunk, arrive whole and in order, then the producer's error or end.
    #[test]
    fn a_handoff_passes_every_byte_in_order_then_the_end_or_the_error() {
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("broken at the end"));
                }
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let bytes: Vec<u8> = (0..3 * HANDOFF_CHUNK + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::thread::scope(|scope| {
            let (producer, mut handed) = handoff();
            scope.spawn(|| producer.pump(&bytes[..]));
            let mut got = Vec::new();
            handed.read_to_end(&mut got).unwrap();
            assert_eq!(got, bytes);

            let (producer, mut handed) = handoff();
            scope.spawn(|| producer.pump(Failing(&bytes)));
            let mut got = Vec::new();
            let e = handed.read_to_end(&mut got).unwrap_err();
            assert_eq!(e.to_string(), "broken at the end");
            assert_eq!(got, bytes, "the bytes before the error");

            let (producer, mut handed) = handoff();
            scope.spawn(|| producer.pump(io::empty()));
            assert_eq!(handed.read(&mut [0; 8]).unwrap(), 0);
        });
    }

    /// A producer gone without its end (it panicked, or its source could not be opened) is an
    /// error for the reader, never a short but clean read.
    #[test]
    fn a_producer_gone_without_its_end_is_an_error_not_an_end() {
        let (producer, mut handed) = handoff();
        drop(producer);
        let e = handed.read(&mut [0; 8]).unwrap_err();
        assert!(e.to_string().contains("stopped before the end"), "{e}");
    }

    /// A reader that stops early (a bad record) lets the producer stop too, not block.
    #[test]
    fn a_reader_that_stops_early_stops_the_producer() {
        let bytes = vec![1u8; 20 * HANDOFF_CHUNK];
        std::thread::scope(|scope| {
            let (producer, mut handed) = handoff();
            let pumping = scope.spawn(|| producer.pump(&bytes[..]));
            handed.read_exact(&mut [0; 10]).unwrap();
            drop(handed);
            pumping.join().unwrap();
        });
    }
}
