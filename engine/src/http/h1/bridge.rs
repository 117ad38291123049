//! Bodies between an HTTP/1 connection and an h2 stream, both ways, for the requests that
//! change protocol between proxies (`l5d-orig-proto`): the outbound upgrade (an HTTP/1
//! client's body onto an h2 stream, the h2 response body back to it) and the inbound
//! downgrade (the reverse).
//!
//! HTTP/1 framing (length, chunks, close) becomes h2 DATA frames and END_STREAM; h2 data
//! becomes a length-delimited or chunked HTTP/1 body, with h2 trailers as a chunked body's
//! trailer section. h2 flow control is honoured both ways: data is sent only as the
//! stream's window allows, and received capacity is released once written on.

use std::future::{poll_fn, Future};
use std::io;
use std::task::Poll;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::HeaderMap;
use ringlink_protocols::http1::{BodyKind, ChunkedDecoder, Limits, Piece};

use super::pipe::{BodyError, Inbox, Outbox};
use crate::io::SMALL_BUFFER;
use crate::rt::{Reader, Writer};

// === functions ===

/// Streams an HTTP/1 body of `kind` from `inbox` onto the h2 stream `down`, ending the
/// stream. Bytes after the body stay in the inbox.
pub async fn h1_to_h2<Rd: Reader>(
    inbox: &mut Inbox<'_, Rd>,
    kind: BodyKind,
    limits: &Limits,
    down: &mut SendStream<Bytes>,
) -> Result<u64, BodyError> {
    let mut sent = 0u64;
    let mut left = match kind {
        BodyKind::Length(n) => n,
        BodyKind::Empty => 0,
        _ => u64::MAX,
    };
    let mut chunks = (kind == BodyKind::Chunked).then(|| ChunkedDecoder::new(limits));
    while left > 0 {
        if inbox.buf.is_empty() && inbox.fill(SMALL_BUFFER).await.map_err(BodyError::Src)? == 0 {
            if kind == BodyKind::UntilClose {
                break;
            }
            return Err(BodyError::Src(io::ErrorKind::UnexpectedEof.into()));
        }
        let Some(decoder) = &mut chunks else {
            let n = (inbox.buf.len() as u64).min(left) as usize;
            left -= n as u64;
            sent += n as u64;
            send(down, Bytes::copy_from_slice(&inbox.buf[..n])).await?;
            inbox.buf.drain(..n);
            continue;
        };
        match decoder.feed(inbox.buf).map_err(BodyError::Framing)? {
            Piece::Data(n) => {
                sent += n as u64;
                send(down, Bytes::copy_from_slice(&inbox.buf[..n])).await?;
                inbox.buf.drain(..n);
            }
            Piece::Framing(n) => {
                inbox.buf.drain(..n);
            }
            Piece::End(n) => {
                inbox.buf.drain(..n);
                break;
            }
            Piece::NeedMore(n) => {
                inbox.buf.drain(..n);
                if inbox.fill(SMALL_BUFFER).await.map_err(BodyError::Src)? == 0 {
                    return Err(BodyError::Src(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }
    down.send_data(Bytes::new(), true).map_err(dst_error)?;
    Ok(sent)
}

/// Streams the h2 body `body` to the HTTP/1 connection, chunk-encoded when `chunked` (its
/// trailers then become the chunked body's trailer section). Returns the trailers, if any.
pub async fn h2_to_h1<Wr: Writer>(
    outbox: &mut Outbox<'_, Wr>,
    body: &mut RecvStream,
    chunked: bool,
) -> Result<Option<HeaderMap>, BodyError> {
    let mut out = Vec::new();
    while let Some(data) = poll_fn(|cx| body.poll_data(cx)).await {
        let data = data.map_err(src_error)?;
        let n = data.len();
        if n == 0 {
            continue;
        }
        out.reserve(n + 16);
        if chunked {
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
        let (written, buf) = outbox.write(out).await;
        written.map_err(BodyError::Dst)?;
        out = buf;
        let _ = body.flow_control().release_capacity(n);
    }
    let trailers = poll_fn(|cx| body.poll_trailers(cx))
        .await
        .map_err(src_error)?;
    if chunked {
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.iter().flatten() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            // No CR or LF may end the line early, whatever the peer's HPACK carried.
            out.extend(value.as_bytes().iter().map(|&b| match b {
                b'\r' | b'\n' | 0 => b' ',
                b => b,
            }));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        outbox.write(out).await.0.map_err(BodyError::Dst)?;
    }
    Ok(trailers)
}

/// Runs the request body `send` and the response `relay` together. The body is abandoned
/// (`None`) if it is still pending once the response is over; the response is abandoned
/// (`None`) if the body fails on the client's side, since the server would wait for the
/// rest of it.
pub async fn race<S, V, T>(send: S, relay: V) -> (Option<Result<(), BodyError>>, Option<T>)
where
    S: Future<Output = Result<(), BodyError>>,
    V: Future<Output = T>,
{
    let mut send = std::pin::pin!(send);
    let mut relay = std::pin::pin!(relay);
    let mut sent = None;
    std::future::poll_fn(|cx| {
        if sent.is_none() {
            if let Poll::Ready(result) = send.as_mut().poll(cx) {
                if let Err(BodyError::Src(_) | BodyError::Framing(_)) = &result {
                    return Poll::Ready((Some(result), None));
                }
                sent = Some(result);
            }
        }
        match relay.as_mut().poll(cx) {
            Poll::Ready(relayed) => Poll::Ready((sent.take(), Some(relayed))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Sends `data` on the stream as its flow control allows.
pub async fn send(down: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), BodyError> {
    while !data.is_empty() {
        down.reserve_capacity(data.len());
        match poll_fn(|cx| down.poll_capacity(cx)).await {
            Some(Ok(0)) => continue,
            Some(Ok(cap)) => {
                let chunk = data.split_to(cap.min(data.len()));
                down.send_data(chunk, false).map_err(dst_error)?;
            }
            Some(Err(error)) => return Err(dst_error(error)),
            None => return Err(BodyError::Dst(io::ErrorKind::BrokenPipe.into())),
        }
    }
    Ok(())
}

fn src_error(error: h2::Error) -> BodyError {
    BodyError::Src(h2_io(error))
}

fn dst_error(error: h2::Error) -> BodyError {
    BodyError::Dst(h2_io(error))
}

/// An h2 error as an I/O error: the socket's own when there is one.
pub fn h2_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        if let Some(error) = error.into_io() {
            return error;
        }
        return io::Error::other("HTTP/2 I/O error");
    }
    io::Error::other(error.to_string())
}
