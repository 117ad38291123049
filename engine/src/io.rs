//! Moving bytes between two sockets: the shard's buffer pool, the one-direction [`copy`],
//! the two-direction [`duplex`] (L4 forwarding, HTTP tunnels), resets, and [`join`].
//!
//! - Buffers start small ([`SMALL_BUFFER`]) and grow to [`LARGE_BUFFER`] from the shard's
//!   pool when a read fills them, so 10,000 idle connections cost ~80 MiB of buffers, not
//!   1.3 GiB, and bulk transfers still move 64 KiB per syscall.
//! - Each direction writes what it read before reading again: a slow reader on one side
//!   stops reads from the other (backpressure, bounded memory).
//! - A direction that has waited for bytes through two of the shard's park sweeps (one to
//!   two seconds, `Lifecycle::park_idle`) parks: its pending read is withdrawn without
//!   losing a byte, its buffer goes, and it waits with [`PARKED_BUFFER`] bytes.
//! - End of stream is passed on as a half-close (FIN); an error on one side is passed on as
//!   a reset (RST) of the other.
//! - Opaque TCP between two plaintext sockets is moved without copying where the runtime
//!   allows it ([`splice`]).

mod counted;
mod join;
pub mod splice;
mod transport;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::pin::pin;

use prometheus::IntCounter;

use crate::lifecycle::{ConnEntry, Side};
use crate::rt::{Reader, Writer};
use crate::sys;

pub use counted::Counted;
pub use splice::Pipes;
pub use transport::{PollTransport, Transport};

/// First buffer of each direction.
pub const SMALL_BUFFER: usize = 4 << 10;
/// Buffer used once reads fill the small one (64 KiB: 2.3–2.8× the throughput of 4 KiB on
/// large bodies, DESIGN.md §5).
pub const LARGE_BUFFER: usize = 64 << 10;
/// Large copy buffers kept for reuse per shard (at most 16 MiB).
const MAX_POOLED_BUFFERS: usize = 256;
/// What a parked wait reads with: about the least the allocator hands out. Its first read
/// takes what fits; the next is a [`SMALL_BUFFER`] one again.
pub const PARKED_BUFFER: usize = 16;

// === types ===

/// The shard's pool of large copy buffers, and what parked copies let go. Shard-local.
#[derive(Default)]
pub struct Buffers {
    free: RefCell<Vec<Vec<u8>>>,
    /// Bytes of buffer that parked copy directions let go since the shard last asked
    /// ([`Buffers::take_parked_bytes`]).
    parked_bytes: Cell<usize>,
}

/// How one direction of a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The source closed; the end of stream was passed on.
    Eof,
    /// Reading the source failed (e.g. it was reset).
    ReadFailed(io::Error),
    /// Writing to the destination failed (e.g. it was reset).
    WriteFailed(io::Error),
}

/// One socket of a [`duplex`]: its halves, its fd and its byte counters.
pub struct End<'a, Rd, Wr> {
    pub rx: &'a mut Rd,
    pub tx: &'a mut Wr,
    pub fd: RawFd,
    pub read_bytes: &'a IntCounter,
    pub write_bytes: &'a IntCounter,
}

/// How a [`duplex`] ended: the error each side failed with, if it did (reading from it or
/// writing to it), with its OS error kept for `tcp_close_total{errno}`.
#[derive(Debug, Default)]
pub struct Closed {
    pub client: Option<io::Error>,
    pub upstream: Option<io::Error>,
}

// === impl Buffers ===

impl Buffers {
    /// A 64 KiB copy buffer, from the pool when one is free.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(LARGE_BUFFER))
    }

    /// Bytes of buffer let go by parked copy directions since the last call.
    pub fn take_parked_bytes(&self) -> usize {
        self.parked_bytes.take()
    }

    /// Gives back the buffer of a copy direction that parked, counting its bytes.
    fn give_parked(&self, buf: Vec<u8>) {
        self.parked_bytes
            .set(self.parked_bytes.get() + buf.capacity());
        self.give(buf);
    }

    /// Gives a buffer back; only large ones are kept, up to the pool's bound.
    pub fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if buf.capacity() == LARGE_BUFFER && free.len() < MAX_POOLED_BUFFERS {
            free.push(buf);
        }
    }
}

// === functions ===

/// Copies both ways between `client` and `upstream` until both directions are done.
pub async fn duplex<CR, CW, UR, UW>(
    buffers: &Buffers,
    entry: &ConnEntry,
    client: End<'_, CR, CW>,
    upstream: End<'_, UR, UW>,
) -> Closed
where
    CR: Reader,
    CW: Writer,
    UR: Reader,
    UW: Writer,
{
    let shut = [Cell::new(false), Cell::new(false)];
    let sent = pin!(copy(
        buffers,
        (entry, Side::Client),
        (client.rx, upstream.tx),
        [client.fd, upstream.fd],
        [client.read_bytes, upstream.write_bytes],
        [&shut[0], &shut[1]],
    ));
    let received = pin!(copy(
        buffers,
        (entry, Side::Upstream),
        (upstream.rx, client.tx),
        [upstream.fd, client.fd],
        [upstream.read_bytes, client.write_bytes],
        [&shut[1], &shut[0]],
    ));
    let (sent, received) = join::join_pinned(sent, received).await;
    tracing::debug!(?sent, ?received, "Connection closed");
    closed(sent, received)
}

/// Which end each direction's error came from: the client's (reading from it, writing to
/// it) or the upstream's.
fn closed(sent: Result<u64, Ended>, received: Result<u64, Ended>) -> Closed {
    let mut closed = Closed::default();
    match sent {
        Err(Ended::ReadFailed(e)) => closed.client = Some(e),
        Err(Ended::WriteFailed(e)) => closed.upstream = Some(e),
        _ => {}
    }
    match received {
        Err(Ended::ReadFailed(e)) => closed.upstream = closed.upstream.or(Some(e)),
        Err(Ended::WriteFailed(e)) => closed.client = closed.client.or(Some(e)),
        _ => {}
    }
    closed
}

/// Copies `src` to `dst` until the end of `src` or an error, counting bytes read from `src`
/// and written to `dst`. `fds` is `[src, dst]`.
///
/// A read that waits through two park sweeps is withdrawn (`entry`'s wait for `side`, the
/// one `src` is), and the wait goes on with a [`PARKED_BUFFER`].
///
/// `shut` is `[src, dst]`: whether the proxy has shut down that socket's write side (each
/// direction sets the one it shuts, the other reads it).
pub async fn copy(
    buffers: &Buffers,
    (entry, side): (&ConnEntry, Side),
    (src, dst): (&mut impl Reader, &mut impl Writer),
    fds: [RawFd; 2],
    [read_bytes, write_bytes]: [&IntCounter; 2],
    shut: [&Cell<bool>; 2],
) -> Result<u64, Ended> {
    let mut buf = Vec::with_capacity(SMALL_BUFFER);
    let mut total = 0u64;
    let ended = loop {
        buf.clear();
        let (read, returned) = match src.read_more_unless(buf, entry.parked(side)).await {
            (Some(read), buf) => (read, buf),
            (None, buf) => {
                buffers.give_parked(buf);
                src.read(Vec::with_capacity(PARKED_BUFFER)).await
            }
        };
        buf = returned;
        let n = match read {
            // A reset reports its error to one operation only, and a readiness probe that
            // lost a race (glommio's MSG_PEEK, cancelled but already in flight) may have
            // taken it: then the read sees end of stream. The socket's state tells: closed
            // (not CLOSE_WAIT) while the proxy never sent it a FIN means it was reset.
            Ok(0) if !shut[0].get() && sys::was_reset(fds[0]) => {
                break Ended::ReadFailed(io::Error::from_raw_os_error(libc::ECONNRESET));
            }
            Ok(0) => {
                // Pass the half-close on; the other direction goes on.
                shut[1].set(true);
                let _ = dst.shutdown().await;
                break Ended::Eof;
            }
            Ok(n) => n,
            Err(error) => break Ended::ReadFailed(error),
        };
        total += n as u64;
        read_bytes.inc_by(n as u64);
        let filled = n == buf.capacity();
        let (written, returned) = dst.write_all(buf).await;
        buf = returned;
        if let Err(error) = written {
            break Ended::WriteFailed(error);
        }
        write_bytes.inc_by(n as u64);
        if buf.capacity() < SMALL_BUFFER {
            // After a parked wait.
            buf = Vec::with_capacity(SMALL_BUFFER);
        } else if filled && buf.capacity() < LARGE_BUFFER {
            buf = buffers.take();
        } else if n < SMALL_BUFFER && buf.capacity() >= LARGE_BUFFER {
            buffers.give(std::mem::replace(
                &mut buf,
                Vec::with_capacity(SMALL_BUFFER),
            ));
        }
    };
    buffers.give(buf);
    finish(ended, total, fds)
}

/// A direction's result once it ended; a failure resets the other socket (`fds` is
/// `[src, dst]`) and wakes the other direction, which reads from it.
fn finish(ended: Ended, total: u64, fds: [RawFd; 2]) -> Result<u64, Ended> {
    match ended {
        Ended::Eof => Ok(total),
        Ended::ReadFailed(error) => {
            tracing::debug!(%error, "Read failed");
            abort(fds[1], fds[0]);
            Err(Ended::ReadFailed(error))
        }
        Ended::WriteFailed(error) => {
            tracing::debug!(%error, "Write failed");
            abort(fds[0], fds[1]);
            Err(Ended::WriteFailed(error))
        }
    }
}

/// Makes `victim` close with a reset, and wakes any read pending on either socket.
pub fn abort(victim: RawFd, failed: RawFd) {
    let _ = sys::set_linger_zero(victim);
    let _ = sys::shutdown(victim, Shutdown::Read);
    let _ = sys::shutdown(failed, Shutdown::Both);
}

/// Applies the TCP options `settings` give accepted (`accepted`) or connected sockets of
/// `direction` to `fd`; a failure is logged, the connection kept.
pub fn tune(
    fd: RawFd,
    settings: &crate::settings::SocketSettings,
    direction: crate::conn::Direction,
    accepted: bool,
) {
    let (keepalive, user_timeout) = if accepted {
        (settings.accept_keepalive, settings.accept_user_timeout)
    } else {
        (settings.connect_keepalive, settings.connect_user_timeout)
    };
    if let Some(idle) = keepalive.get(direction) {
        if let Err(error) = sys::set_tcp_keepalive(fd, idle) {
            tracing::debug!(%error, "Cannot set TCP keepalive");
        }
    }
    if let Some(timeout) = user_timeout.get(direction) {
        if let Err(error) = sys::set_tcp_user_timeout(fd, timeout) {
            tracing::debug!(%error, "Cannot set TCP_USER_TIMEOUT");
        }
    }
}

/// Makes a socket close with a reset when its task drops it.
pub fn reset(fd: RawFd) {
    let _ = sys::set_linger_zero(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_only_large_buffers_up_to_its_bound() {
        let buffers = Buffers::default();
        buffers.give(Vec::with_capacity(SMALL_BUFFER));
        assert!(buffers.free.borrow().is_empty());
        for _ in 0..MAX_POOLED_BUFFERS + 3 {
            buffers.give(Vec::with_capacity(LARGE_BUFFER));
        }
        assert_eq!(buffers.free.borrow().len(), MAX_POOLED_BUFFERS);
        assert_eq!(buffers.take().capacity(), LARGE_BUFFER);
        assert_eq!(buffers.free.borrow().len(), MAX_POOLED_BUFFERS - 1);
    }
}
