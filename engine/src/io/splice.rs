//! Opaque TCP moved inside the kernel: `splice(2)` from one socket into a pipe and from the
//! pipe into the other, so the bytes never enter the proxy's memory (haproxy's trick for
//! `mode tcp`). Only for two plaintext sockets of a runtime that can wait for write
//! readiness ([`Stream::READINESS`]); TLS and glommio use [`super::duplex`].
//!
//! - Each direction tries the syscall first and waits for readiness (`POLL_ADD`) only when
//!   it would block, so a busy stream costs two splices per pipeful and no ring operation.
//!   A small read ([`DRAINED`]) drained the socket, and a write that moved less than
//!   asked filled the peer's buffer: then the next step waits for readiness at once,
//!   without a syscall that would only say `EAGAIN` (a small request/response exchange
//!   costs two splices and one `POLL_ADD`).
//! - A direction holds a pipe only while bytes are in it: an idle connection holds no
//!   pipe and no buffer, only its sockets. Empty pipes go back to the shard's pool
//!   ([`Pipes`]).
//! - Memory stays bounded by the pipe's size (64 KiB by default): a direction moves what
//!   it read out before reading again, so a slow reader stops reads from the writer.
//! - End of stream, resets and byte counts are handled as by [`super::copy`]: a half-close
//!   is passed on as FIN, an error as RST of the other socket.
//! - Where no pipe can be made (the descriptor limit), a direction moves its bytes through
//!   a buffer with non-blocking `recv`/`send` instead; the connection is kept.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::pin;

use prometheus::IntCounter;

use super::{Buffers, Closed, Ended};
use crate::rt::Stream;
use crate::sys;

/// Empty pipes kept for reuse per shard.
const MAX_POOLED_PIPES: usize = 64;
/// The most one splice asks for: more than a pipe holds, so each fills the pipe.
const SPLICE_LEN: usize = 1 << 20;
/// A read of less than this found the socket drained: the next waits for readiness first.
/// A larger partial read does not: in a stream, more has usually arrived while it was
/// written out (bulk moved 13 % less per second when any partial read waited).
const DRAINED: usize = 16 << 10;

// === types ===

/// The shard's pool of empty pipes. Shard-local.
#[derive(Default)]
pub struct Pipes {
    free: RefCell<Vec<Pipe>>,
    /// Makes no pipes, as at the descriptor limit (tests of the fallback).
    refuse: bool,
}

/// A pipe: its read end and its write end, both non-blocking, and what it holds (64 KiB
/// by default; less once the user's pipes exceed `pipe-user-pages-soft`).
struct Pipe {
    rx: OwnedFd,
    tx: OwnedFd,
    size: usize,
}

/// One socket of a spliced [`duplex`]: the whole stream (its readiness), its fd and its
/// byte counters.
pub struct End<'a, S> {
    pub stream: &'a S,
    pub fd: RawFd,
    pub read_bytes: &'a IntCounter,
    pub write_bytes: &'a IntCounter,
}

/// Where a direction's bytes are between reading and writing.
enum Held {
    /// Nothing read is unwritten.
    Nothing,
    /// `len` bytes in a pipe.
    Pipe(Pipe, usize),
    /// `buf[at..]`, where no pipe could be made.
    Buf(Vec<u8>, usize),
}

// === impl Pipes ===

impl Pipes {
    /// A pool that makes no pipes, as at the descriptor limit.
    #[cfg(test)]
    pub fn refusing() -> Pipes {
        Pipes {
            refuse: true,
            ..Pipes::default()
        }
    }

    fn take(&self) -> io::Result<Pipe> {
        if let Some(pipe) = self.free.borrow_mut().pop() {
            return Ok(pipe);
        }
        if self.refuse {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let (rx, tx, size) = sys::pipe()?;
        Ok(Pipe { rx, tx, size })
    }

    /// Gives back a pipe that holds nothing.
    fn give(&self, pipe: Pipe) {
        let mut free = self.free.borrow_mut();
        if free.len() < MAX_POOLED_PIPES {
            free.push(pipe);
        }
    }

    /// Pipes kept for reuse.
    #[cfg(test)]
    pub fn pooled(&self) -> usize {
        self.free.borrow().len()
    }
}

// === functions ===

/// Whether the two sockets can be spliced: both made non-blocking (which a splice into
/// a socket needs not to block the shard). Not spliced if that fails.
pub fn prepare(fds: [RawFd; 2]) -> bool {
    fds.iter().all(|&fd| match sys::set_nonblocking(fd) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%error, "Cannot splice: O_NONBLOCK refused");
            false
        }
    })
}

/// Moves bytes both ways between `client` and `upstream` until both directions are done;
/// both sockets must have been [`prepare`]d.
pub async fn duplex<S: Stream>(
    pipes: &Pipes,
    buffers: &Buffers,
    client: End<'_, S>,
    upstream: End<'_, S>,
) -> Closed {
    let shut = [Cell::new(false), Cell::new(false)];
    let sent = pin!(pump(
        (pipes, buffers),
        (client.stream, upstream.stream),
        [client.fd, upstream.fd],
        [client.read_bytes, upstream.write_bytes],
        [&shut[0], &shut[1]],
    ));
    let received = pin!(pump(
        (pipes, buffers),
        (upstream.stream, client.stream),
        [upstream.fd, client.fd],
        [upstream.read_bytes, client.write_bytes],
        [&shut[1], &shut[0]],
    ));
    let (sent, received) = super::join::join_pinned(sent, received).await;
    tracing::debug!(?sent, ?received, "Connection closed");
    super::closed(sent, received)
}

/// Moves `src` to `dst` until the end of `src` or an error: [`super::copy`] through a pipe.
///
/// A plain function returning its future: an `async fn` would keep its arguments twice in
/// the state every spliced connection holds for each direction.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn pump<'a, S: Stream>(
    (pipes, buffers): (&'a Pipes, &'a Buffers),
    (src, dst): (&'a S, &'a S),
    fds: [RawFd; 2],
    [read_bytes, write_bytes]: [&'a IntCounter; 2],
    shut: [&'a Cell<bool>; 2],
) -> impl Future<Output = Result<u64, Ended>> + 'a {
    async move {
        let mut held = Held::Nothing;
        let mut total = 0u64;
        // Whether the last read or write showed that the next one would block.
        let (mut drained, mut full) = (false, false);
        let ended = loop {
            if full {
                full = false;
                if let Err(error) = dst.writable().await {
                    break Ended::WriteFailed(error);
                }
            }
            // Write out what is held first.
            let written = match &mut held {
                Held::Nothing => None,
                Held::Pipe(pipe, len) => {
                    Some(match sys::splice(pipe.rx.as_raw_fd(), fds[1], *len) {
                        Ok(n) => {
                            full = n < *len;
                            *len -= n;
                            Ok(n)
                        }
                        Err(error) => Err(error),
                    })
                }
                Held::Buf(buf, at) => Some(match sys::send_nonblocking(fds[1], &buf[*at..]) {
                    Ok(n) => {
                        full = n < buf.len() - *at;
                        *at += n;
                        Ok(n)
                    }
                    Err(error) => Err(error),
                }),
            };
            match written {
                None => {}
                Some(Ok(0)) => break Ended::WriteFailed(io::ErrorKind::WriteZero.into()),
                Some(Ok(n)) => {
                    total += n as u64;
                    write_bytes.inc_by(n as u64);
                    held = match held {
                        Held::Pipe(pipe, 0) => {
                            pipes.give(pipe);
                            Held::Nothing
                        }
                        Held::Buf(buf, at) if at == buf.len() => {
                            buffers.give(buf);
                            Held::Nothing
                        }
                        other => other,
                    };
                    continue;
                }
                Some(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = dst.writable().await {
                        break Ended::WriteFailed(error);
                    }
                    continue;
                }
                Some(Err(error)) => break Ended::WriteFailed(error),
            }
            // Nothing held: read what `src` has.
            if drained {
                drained = false;
                if let Err(error) = src.readable().await {
                    break Ended::ReadFailed(error);
                }
            }
            let read = match pipes.take() {
                Ok(pipe) => match sys::splice(fds[0], pipe.tx.as_raw_fd(), SPLICE_LEN) {
                    Ok(n) if n > 0 => {
                        drained = n < DRAINED.min(pipe.size);
                        held = Held::Pipe(pipe, n);
                        Ok(n)
                    }
                    other => {
                        pipes.give(pipe);
                        other
                    }
                },
                Err(error) => {
                    tracing::debug!(%error, "No pipe; copying through a buffer");
                    let mut buf = buffers.take();
                    buf.resize(buf.capacity(), 0);
                    match sys::recv_nonblocking(fds[0], &mut buf) {
                        Ok(n) if n > 0 => {
                            drained = n < DRAINED;
                            buf.truncate(n);
                            held = Held::Buf(buf, 0);
                            Ok(n)
                        }
                        other => {
                            buffers.give(buf);
                            other
                        }
                    }
                }
            };
            match read {
                // As in `copy`: an end of stream on a socket that was reset (and whose error
                // the other direction took) is a reset.
                Ok(0) if !shut[0].get() && sys::was_reset(fds[0]) => {
                    break Ended::ReadFailed(io::Error::from_raw_os_error(libc::ECONNRESET));
                }
                Ok(0) => {
                    shut[1].set(true);
                    let _ = sys::shutdown(fds[1], std::net::Shutdown::Write);
                    break Ended::Eof;
                }
                Ok(n) => read_bytes.inc_by(n as u64),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = src.readable().await {
                        break Ended::ReadFailed(error);
                    }
                }
                Err(error) => break Ended::ReadFailed(error),
            }
        };
        // A pipe that still holds bytes (the destination failed) is closed, not pooled.
        if let Held::Buf(buf, _) = held {
            buffers.give(buf);
        }
        super::finish(ended, total, fds)
    }
}

#[cfg(test)]
mod tests;
