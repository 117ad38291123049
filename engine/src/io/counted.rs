//! tokio-style I/O over a shard stream (for the h2 crate and TLS), replaying the bytes
//! detection read first and counting bytes for the TCP metrics.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// === types ===

/// tokio-style I/O over a shard stream, replaying the bytes detection read first and
/// counting bytes for the TCP metrics.
pub struct Counted<T> {
    inner: T,
    replay: Vec<u8>,
    at: usize,
    read_bytes: Option<IntCounter>,
    write_bytes: Option<IntCounter>,
}

// === impl Io ===

impl<T> Counted<T> {
    /// `inner`, read after `replay` (counted as read now), counting into `read_bytes` and
    /// `write_bytes`.
    pub fn new(
        inner: T,
        replay: Vec<u8>,
        read_bytes: &IntCounter,
        write_bytes: &IntCounter,
    ) -> Self {
        read_bytes.inc_by(replay.len() as u64);
        Counted {
            inner,
            replay,
            at: 0,
            read_bytes: Some(read_bytes.clone()),
            write_bytes: Some(write_bytes.clone()),
        }
    }

    /// `inner`, read after `replay`, counting nothing (TLS records under a stream whose
    /// plaintext is counted above it).
    pub fn uncounted(inner: T, replay: Vec<u8>) -> Self {
        Counted {
            inner,
            replay,
            at: 0,
            read_bytes: None,
            write_bytes: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.replay.len() {
            let n = (this.replay.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.replay[this.at..this.at + n]);
            this.at += n;
            if this.at == this.replay.len() {
                this.replay = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if let Some(read_bytes) = &this.read_bytes {
                read_bytes.inc_by((buf.filled().len() - before) as u64);
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result {
            if let Some(write_bytes) = &self.write_bytes {
                write_bytes.inc_by(n as u64);
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
