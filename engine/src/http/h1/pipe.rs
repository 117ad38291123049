//! Moving HTTP/1 messages between sockets: reading heads, streaming bodies, tunnels.
//!
//! Each side's unparsed bytes live in one `Vec` that reads append to. A body is written on
//! as it arrives, never gathered whole: at most one read buffer (4 KiB, 64 KiB from the
//! shard's pool for large bodies) per direction is in memory.

use std::io;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use ringlink_protocols::http1::{self, BodyKind, ChunkedDecoder, Limits, Parsed, Piece};

use crate::io::{Buffers, LARGE_BUFFER, SMALL_BUFFER};
use crate::rt::{Reader, Runtime, Writer};

/// The least capacity a head's first read uses as it is, without growing the buffer.
pub const MIN_FIRST_READ: usize = 512;

// === types ===

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer sent something that is not a valid head.
    Parse(http1::Error),
    /// The head did not arrive within the head timeout.
    Timeout,
    Io(io::Error),
}

/// Why a body could not be moved.
#[derive(Debug)]
pub enum BodyError {
    /// Reading from the source failed or it closed early.
    Src(io::Error),
    /// Writing to the destination failed.
    Dst(io::Error),
    /// The source's chunked framing is invalid.
    Framing(http1::Error),
}

/// What to do with a chunked body's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunks {
    /// Forward it as it came (both hops use chunked coding).
    Keep,
    /// Forward only the data (the destination hop is delimited by closing).
    Strip,
}

/// One side's reading state: its socket's reader, the bytes read but not yet used, and
/// the counter of bytes read.
pub struct Inbox<'a, Rd> {
    pub rx: &'a mut Rd,
    pub buf: &'a mut Vec<u8>,
    pub read_bytes: &'a IntCounter,
}

/// One side's writing state.
pub struct Outbox<'a, Wr> {
    pub tx: &'a mut Wr,
    pub write_bytes: &'a IntCounter,
}

// === impl Inbox ===

impl<Rd: Reader> Inbox<'_, Rd> {
    /// Reads more into the buffer, making room for at least `want` bytes. Ok(0) at end of
    /// stream.
    pub async fn fill(&mut self, want: usize) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        let (result, buf) = self.rx.read_more(std::mem::take(self.buf)).await;
        *self.buf = buf;
        if let Ok(n) = result {
            self.read_bytes.inc_by(n as u64);
        }
        result
    }

    /// Reads a head with `parse`, returning it and dropping its bytes from the buffer.
    /// `Ok(None)` if the stream ended cleanly before any byte of a head. Once a head has
    /// begun, the rest must arrive within `timeout`, if there is one.
    pub async fn read_head<R: Runtime, T>(
        &mut self,
        limits: &Limits,
        timeout: Option<Duration>,
        parse: impl Fn(&[u8], &Limits) -> Result<Parsed<T>, http1::Error>,
    ) -> Result<Option<T>, HeadError> {
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                match parse(self.buf, limits).map_err(HeadError::Parse)? {
                    Parsed::Complete(head, n) => {
                        self.buf.drain(..n);
                        return Ok(Some(head));
                    }
                    Parsed::Partial => {}
                }
            }
            // A head's first read fills the buffer there is (an idle connection's is small:
            // most heads fit); later reads make room for a larger part.
            let want = if self.buf.is_empty() && self.buf.capacity() >= MIN_FIRST_READ {
                1
            } else {
                SMALL_BUFFER
                    .min(limits.max_head_bytes + 1 - self.buf.len())
                    .max(1)
            };
            let read = match (deadline, timeout) {
                (_, None) => self.fill(want).await,
                (None, Some(_)) if self.buf.is_empty() => self.fill(want).await,
                (_, Some(timeout)) => {
                    let at = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    let remaining = at.saturating_duration_since(Instant::now());
                    let timed_out = crate::rt::timeout::<R, _>(remaining, self.fill(want)).await;
                    match timed_out {
                        Some(read) => read,
                        None => return Err(HeadError::Timeout),
                    }
                }
            };
            match read {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {
                    if let Some(timeout) = timeout {
                        deadline.get_or_insert_with(|| Instant::now() + timeout);
                    }
                }
                Err(error) => return Err(HeadError::Io(error)),
            }
        }
    }
}

// === impl Outbox ===

impl<Wr: Writer> Outbox<'_, Wr> {
    /// Writes all of `buf`, returning it (cleared) for reuse.
    pub async fn write(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let n = buf.len() as u64;
        let (result, mut buf) = self.tx.write_all(buf).await;
        if result.is_ok() {
            self.write_bytes.inc_by(n);
        }
        buf.clear();
        (result, buf)
    }
}

// === functions ===

/// Moves one body of `kind` from `src` to `dst`. Bytes after the body (a pipelined next
/// message) stay in `src.buf`.
pub async fn body<Rd: Reader, Wr: Writer>(
    buffers: &Buffers,
    kind: BodyKind,
    chunks: Chunks,
    limits: &Limits,
    src: &mut Inbox<'_, Rd>,
    dst: &mut Outbox<'_, Wr>,
) -> Result<(), BodyError> {
    let mut remaining = match kind {
        BodyKind::Empty => return Ok(()),
        BodyKind::Length(n) => n,
        BodyKind::Chunked | BodyKind::UntilClose => u64::MAX,
    };
    let mut decoder = (kind == BodyKind::Chunked).then(|| ChunkedDecoder::new(limits));
    let mut filled = false;
    let result = loop {
        // How much of what is buffered belongs to the body, and whether that ends it.
        let (take, done, stripped) = match &mut decoder {
            Some(decoder) => match split_chunked(decoder, src.buf, chunks) {
                Ok(split) => split,
                Err(error) => break Err(BodyError::Framing(error)),
            },
            None => {
                let take = (src.buf.len() as u64).min(remaining) as usize;
                remaining -= take as u64;
                (take, remaining == 0, None)
            }
        };
        if take > 0 {
            let out = match stripped {
                Some(data) => {
                    src.buf.drain(..take);
                    data
                }
                None if take == src.buf.len() => std::mem::take(src.buf),
                None => {
                    let rest = src.buf.split_off(take);
                    std::mem::replace(src.buf, rest)
                }
            };
            if !out.is_empty() {
                let (written, out) = dst.write(out).await;
                if let Err(error) = written {
                    break Err(BodyError::Dst(error));
                }
                if src.buf.is_empty() && src.buf.capacity() < out.capacity() {
                    *src.buf = out;
                } else {
                    buffers.give(out);
                }
            }
        }
        if done {
            break Ok(());
        }
        debug_assert!(src.buf.is_empty() || decoder.is_some());
        if filled && src.buf.capacity() < LARGE_BUFFER && src.buf.is_empty() {
            buffers.give(std::mem::replace(src.buf, buffers.take()));
        }
        let want = if src.buf.capacity() >= LARGE_BUFFER {
            1
        } else {
            SMALL_BUFFER
        };
        let before = src.buf.capacity() - src.buf.len();
        match src.fill(want).await {
            Ok(0) if kind == BodyKind::UntilClose => break Ok(()),
            Ok(0) => break Err(BodyError::Src(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled = n >= before,
            Err(error) => break Err(BodyError::Src(error)),
        }
    };
    // Give a large buffer back unless it still holds bytes of the next message.
    if src.buf.capacity() >= LARGE_BUFFER && src.buf.len() <= SMALL_BUFFER {
        let mut small = Vec::with_capacity(SMALL_BUFFER);
        small.extend_from_slice(src.buf);
        buffers.give(std::mem::replace(src.buf, small));
    }
    result
}

/// The length of a whole body of `kind` at the start of `buf`, if all of it is there
/// (chunk framing included, for chunked bodies). `None` if more must be read, or for a body
/// delimited by closing.
pub fn buffered_body_len(kind: BodyKind, buf: &[u8], limits: &Limits) -> Option<usize> {
    match kind {
        BodyKind::Empty => Some(0),
        BodyKind::Length(n) => (n <= buf.len() as u64).then_some(n as usize),
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::new(limits);
            match split_chunked(&mut decoder, buf, Chunks::Keep) {
                Ok((n, true, _)) => Some(n),
                // Errors show again, and are handled, when the body is piped.
                _ => None,
            }
        }
        BodyKind::UntilClose => None,
    }
}

/// Walks the decoder over `buf`: how many bytes belong to the body, whether they end it,
/// and (with [`Chunks::Strip`]) the data among them.
fn split_chunked(
    decoder: &mut ChunkedDecoder,
    buf: &[u8],
    chunks: Chunks,
) -> Result<(usize, bool, Option<Vec<u8>>), http1::Error> {
    let mut at = 0;
    let mut data = (chunks == Chunks::Strip).then(Vec::new);
    loop {
        match decoder.feed(&buf[at..])? {
            Piece::Data(n) => {
                if let Some(data) = &mut data {
                    data.extend_from_slice(&buf[at..at + n]);
                }
                at += n;
            }
            Piece::Framing(n) => at += n,
            Piece::End(n) => return Ok((at + n, true, data)),
            Piece::NeedMore(n) => return Ok((at + n, false, data)),
        }
    }
}
