//! The stream a connection is served on: the runtime's TCP stream, or mesh TLS over it.
//!
//! TLS runs tokio-rustls over the runtime's poll-based I/O (`Runtime::PollIo`), which needs no
//! runtime, only tokio's I/O traits; [`Transport`] gives both kinds the shard's
//! owned-buffer [`Reader`]/[`Writer`] shape, so HTTP/1 and opaque forwarding serve either,
//! and [`Transport::into_poll`] gives h2 the poll shape. Bytes are counted in plaintext, by
//! the layers above (as they are for TCP); TLS records and handshakes are not counted.
//!
//! `readable()` on a TLS stream reads what plaintext is there into the stream's own buffer
//! (readiness of the socket says nothing about whether a whole record arrived), so waiting
//! for it is as cancel-safe as on TCP: nothing read is lost.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};

use super::Counted;
use crate::rt::{Reader, Runtime, Stream, Writer};

// === types ===

/// TLS over the runtime's poll-based stream.
pub type TlsIo<R> = tokio_rustls::TlsStream<Counted<<R as Runtime>::PollIo>>;

/// A connection's stream.
pub enum Transport<R: Runtime> {
    Plain(R::Stream),
    Tls(Box<Tls<R>>),
}

/// A TLS stream and what its handshake established.
pub struct Tls<R: Runtime> {
    io: RefCell<TlsIo<R>>,
    fd: RawFd,
    /// Plaintext read ahead by [`Stream::readable`].
    ahead: RefCell<Ahead>,
}

/// Plaintext read ahead of the reader, and how the stream ended if it did.
#[derive(Default)]
struct Ahead {
    buf: Vec<u8>,
    eof: bool,
    error: Option<io::Error>,
}

pub enum TransportReader<R: Runtime> {
    Plain(<R::Stream as Stream>::Reader),
    /// Boxed, as are TLS futures below: plaintext connections carry only a pointer's worth
    /// of TLS in their (long-lived) tasks.
    Tls(Box<TlsReader<R>>),
}

pub enum TransportWriter<R: Runtime> {
    Plain(<R::Stream as Stream>::Writer),
    Tls(Box<WriteHalf<TlsIo<R>>>),
}

pub struct TlsReader<R: Runtime> {
    half: ReadHalf<TlsIo<R>>,
    ahead: Ahead,
    fd: RawFd,
}

/// A transport in tokio's poll shape, for h2.
pub enum PollTransport<R: Runtime> {
    Plain(R::PollIo),
    Tls(Box<TlsIo<R>>),
}

// === impl Transport ===

impl<R: Runtime> Transport<R> {
    /// A TLS stream after its handshake.
    pub fn tls(io: TlsIo<R>, fd: RawFd) -> Self {
        Transport::Tls(Box::new(Tls {
            io: RefCell::new(io),
            fd,
            ahead: RefCell::new(Ahead::default()),
        }))
    }

    /// The runtime's stream, for a TLS handshake over it: its poll shape.
    pub fn into_plain_poll(self) -> io::Result<(R::PollIo, RawFd)> {
        match self {
            Transport::Plain(stream) => {
                let fd = stream.as_raw_fd();
                Ok((R::poll_io(stream)?, fd))
            }
            Transport::Tls(_) => Err(io::Error::other("already TLS")),
        }
    }

    /// The stream in tokio's poll shape, and the plaintext already read ahead from it (to
    /// be read first).
    pub fn into_poll(self) -> io::Result<(PollTransport<R>, Vec<u8>)> {
        match self {
            Transport::Plain(stream) => Ok((PollTransport::Plain(R::poll_io(stream)?), Vec::new())),
            Transport::Tls(tls) => {
                let Tls { io, ahead, .. } = *tls;
                Ok((
                    PollTransport::Tls(Box::new(io.into_inner())),
                    ahead.into_inner().buf,
                ))
            }
        }
    }
}

impl<R: Runtime> AsRawFd for Transport<R> {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Transport::Plain(stream) => stream.as_raw_fd(),
            Transport::Tls(tls) => tls.fd,
        }
    }
}

impl<R: Runtime> Reader for Transport<R> {
    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        match self {
            Transport::Plain(stream) => Either::Left(stream.read(buf)),
            Transport::Tls(tls) => {
                let tls = &mut **tls;
                Either::Right(Box::pin(read_owned(
                    tls.io.get_mut(),
                    tls.ahead.get_mut(),
                    buf,
                    true,
                )))
            }
        }
    }

    fn read_more(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        match self {
            Transport::Plain(stream) => Either::Left(stream.read_more(buf)),
            Transport::Tls(tls) => {
                let tls = &mut **tls;
                Either::Right(Box::pin(read_owned(
                    tls.io.get_mut(),
                    tls.ahead.get_mut(),
                    buf,
                    false,
                )))
            }
        }
    }
}

impl<R: Runtime> Stream for Transport<R> {
    type Reader = TransportReader<R>;
    type Writer = TransportWriter<R>;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        match self {
            Transport::Plain(stream) => {
                let (rx, tx) = stream.into_split();
                (TransportReader::Plain(rx), TransportWriter::Plain(tx))
            }
            Transport::Tls(tls) => {
                let Tls { io, fd, ahead } = *tls;
                let (rx, tx) = tokio::io::split(io.into_inner());
                (
                    TransportReader::Tls(Box::new(TlsReader {
                        half: rx,
                        ahead: ahead.into_inner(),
                        fd,
                    })),
                    TransportWriter::Tls(Box::new(tx)),
                )
            }
        }
    }

    fn reunite(reader: Self::Reader, writer: Self::Writer) -> Option<Self> {
        match (reader, writer) {
            (TransportReader::Plain(rx), TransportWriter::Plain(tx)) => {
                R::Stream::reunite(rx, tx).map(Transport::Plain)
            }
            (TransportReader::Tls(rx), TransportWriter::Tls(tx)) => {
                if !rx.half.is_pair_of(&*tx) {
                    return None;
                }
                let TlsReader { half, ahead, fd } = *rx;
                Some(Transport::Tls(Box::new(Tls {
                    io: RefCell::new(half.unsplit(*tx)),
                    fd,
                    ahead: RefCell::new(ahead),
                })))
            }
            _ => None,
        }
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        match self {
            Transport::Plain(stream) => Either::Left(stream.readable()),
            Transport::Tls(tls) => Either::Right(poll_fn(move |cx| {
                let mut ahead = tls.ahead.borrow_mut();
                let mut io = tls.io.borrow_mut();
                poll_ahead(&mut *io, &mut ahead, cx)
            })),
        }
    }
}

// === impl TransportReader ===

impl<R: Runtime> Reader for TransportReader<R> {
    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        match self {
            TransportReader::Plain(rx) => Either::Left(rx.read(buf)),
            TransportReader::Tls(rx) => {
                let rx = &mut **rx;
                Either::Right(Box::pin(read_owned(&mut rx.half, &mut rx.ahead, buf, true)))
            }
        }
    }

    fn read_more(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        match self {
            TransportReader::Plain(rx) => Either::Left(rx.read_more(buf)),
            TransportReader::Tls(rx) => {
                let rx = &mut **rx;
                Either::Right(Box::pin(read_owned(
                    &mut rx.half,
                    &mut rx.ahead,
                    buf,
                    false,
                )))
            }
        }
    }

    /// A plaintext read gives up as the runtime's does. A TLS read is a poll of the TLS
    /// stream, which either hands over plaintext (ready) or has taken none (pending: what
    /// it read from the socket stays decrypted in the stream), so it gives up between
    /// polls and loses nothing.
    fn read_more_unless(
        &mut self,
        buf: Vec<u8>,
        give_up: impl Future<Output = ()>,
    ) -> impl Future<Output = (Option<io::Result<usize>>, Vec<u8>)> {
        match self {
            TransportReader::Plain(rx) => Either::Left(rx.read_more_unless(buf, give_up)),
            TransportReader::Tls(rx) => {
                let rx = &mut **rx;
                Either::Right(Box::pin(read_tls_unless(
                    &mut rx.half,
                    &mut rx.ahead,
                    buf,
                    give_up,
                )))
            }
        }
    }
}

// === impl TransportWriter ===

impl<R: Runtime> Writer for TransportWriter<R> {
    fn write_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> {
        match self {
            TransportWriter::Plain(tx) => Either::Left(tx.write_all(buf)),
            TransportWriter::Tls(tx) => Either::Right(Box::pin(async move {
                let result = write_all_tls(tx, &buf).await;
                (result, buf)
            })),
        }
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        match self {
            TransportWriter::Plain(tx) => Either::Left(tx.shutdown()),
            // close_notify, then FIN.
            TransportWriter::Tls(tx) => {
                Either::Right(poll_fn(move |cx| Pin::new(&mut *tx).poll_shutdown(cx)))
            }
        }
    }
}

// === impl PollTransport ===

impl<R: Runtime> AsyncRead for PollTransport<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PollTransport::Plain(io) => Pin::new(io).poll_read(cx, buf),
            PollTransport::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl<R: Runtime> AsyncWrite for PollTransport<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PollTransport::Plain(io) => Pin::new(io).poll_write(cx, data),
            PollTransport::Tls(io) => Pin::new(&mut **io).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PollTransport::Plain(io) => Pin::new(io).poll_flush(cx),
            PollTransport::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PollTransport::Plain(io) => Pin::new(io).poll_shutdown(cx),
            PollTransport::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

// === functions ===

/// [`read_tls`] with an owned buffer, cleared first when `replace` (as [`Reader::read`]
/// does) or appended to (as [`Reader::read_more`] does).
async fn read_owned(
    io: &mut (impl AsyncRead + Unpin),
    ahead: &mut Ahead,
    mut buf: Vec<u8>,
    replace: bool,
) -> (io::Result<usize>, Vec<u8>) {
    if replace {
        buf.clear();
    }
    let result = read_tls(io, ahead, &mut buf).await;
    (result, buf)
}

/// Reads plaintext into `buf`'s spare capacity (at least one byte's worth), from what was
/// read ahead first.
async fn read_tls(
    io: &mut (impl AsyncRead + Unpin),
    ahead: &mut Ahead,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    if buf.capacity() == buf.len() {
        buf.reserve(super::SMALL_BUFFER);
    }
    if !ahead.buf.is_empty() {
        let n = ahead.buf.len().min(buf.capacity() - buf.len());
        buf.extend(ahead.buf.drain(..n));
        return Ok(n);
    }
    if let Some(error) = ahead.error.take() {
        return Err(error);
    }
    if ahead.eof {
        return Ok(0);
    }
    let len = buf.len();
    buf.resize(buf.capacity(), 0);
    let read = poll_fn(|cx| {
        let mut out = ReadBuf::new(&mut buf[len..]);
        match Pin::new(&mut *io).poll_read(cx, &mut out) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(out.filled().len())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    buf.truncate(len + *read.as_ref().unwrap_or(&0));
    read
}

/// [`read_tls`] into `buf`'s spare capacity, unless `give_up` completes while it is still
/// pending: then `None`, with `buf` as it was.
async fn read_tls_unless(
    io: &mut (impl AsyncRead + Unpin),
    ahead: &mut Ahead,
    mut buf: Vec<u8>,
    give_up: impl Future<Output = ()>,
) -> (Option<io::Result<usize>>, Vec<u8>) {
    let len = buf.len();
    let result = {
        let mut read = std::pin::pin!(read_tls(io, ahead, &mut buf));
        let mut give_up = std::pin::pin!(give_up);
        poll_fn(|cx| {
            if let Poll::Ready(read) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(read));
            }
            give_up.as_mut().poll(cx).map(|()| None)
        })
        .await
    };
    if result.is_none() {
        // The pending read had made the spare capacity readable.
        buf.truncate(len);
    }
    (result, buf)
}

/// Completes once plaintext (or the end, or an error) has been read ahead.
fn poll_ahead(
    io: &mut (impl AsyncRead + Unpin),
    ahead: &mut Ahead,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if !ahead.buf.is_empty() || ahead.eof || ahead.error.is_some() {
        return Poll::Ready(Ok(()));
    }
    let mut chunk = [0u8; 4096];
    let mut out = ReadBuf::new(&mut chunk);
    match Pin::new(io).poll_read(cx, &mut out) {
        Poll::Ready(Ok(())) => {
            if out.filled().is_empty() {
                ahead.eof = true;
            } else {
                ahead.buf.extend_from_slice(out.filled());
            }
            Poll::Ready(Ok(()))
        }
        // Kept for the read that follows, as a TCP error would show there.
        Poll::Ready(Err(error)) => {
            ahead.error = Some(error);
            Poll::Ready(Ok(()))
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Writes all of `data`, then flushes the TLS records to the socket.
async fn write_all_tls(io: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, &data[at..])).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        at += n;
    }
    poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
}
