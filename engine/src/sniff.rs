//! Protocol detection on a live connection, without making server-first protocols wait.
//!
//! The upstream connection is opened first. Then the proxy waits for whichever happens first:
//! the client sends bytes (read them, run [`protocols::detect`], repeat while it needs more),
//! the server sends bytes (a server-speaks-first protocol such as SMTP or MySQL: opaque, at
//! once), or the detect timeout (opaque, as in Linkerd). Only readiness waits and timers are
//! ever raced and dropped, never a read, so no byte is lost; every byte read here is replayed
//! upstream by the caller.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use ringlink_protocols::{detect, Detected, Protocol, MAX_DETECT_BYTES};

use crate::forward::SMALL_BUFFER;
use crate::rt::{Reader, Runtime, Stream};

// === types ===

/// What detection found.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// The client's first bytes say what it speaks.
    Protocol(Protocol),
    /// The server spoke first.
    ServerFirst,
    /// Nobody spoke within the detect timeout.
    Timeout,
    /// The client closed (or half-closed) before detection decided.
    ClientClosed,
}

enum First {
    Client,
    Server,
    Deadline,
}

// === impl Sniffed ===

impl Sniffed {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Sniffed::Protocol(Protocol::Http1) => "http/1",
            Sniffed::Protocol(Protocol::Http2) => "h2",
            Sniffed::Protocol(Protocol::Tls { .. }) => "tls",
            Sniffed::Protocol(Protocol::Opaque) => "opaque",
            Sniffed::ServerFirst => "server-first",
            Sniffed::Timeout => "timeout",
            Sniffed::ClientClosed => "client-closed",
        }
    }
}

// === functions ===

/// Detects what `client` speaks, returning the answer and the bytes read from it. Without
/// an `upstream` (nothing to connect to yet), only the client and the timeout can decide.
pub async fn sniff<R: Runtime>(
    client: &mut R::Stream,
    upstream: Option<&R::Stream>,
    timeout: Duration,
) -> io::Result<(Sniffed, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = Vec::with_capacity(SMALL_BUFFER);
    let mut upstream = upstream;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let first = first_of(
            async { client.readable().await.map(|()| First::Client) },
            async {
                match upstream {
                    Some(upstream) => upstream.readable().await.map(|()| First::Server),
                    None => std::future::pending().await,
                }
            },
            async {
                R::sleep(remaining).await;
                Ok(First::Deadline)
            },
        )
        .await;
        match first {
            // An HTTP/2 server sends its SETTINGS as soon as it accepts, before the client's
            // preface may have arrived: that is not a server-first protocol. Stop watching
            // the server and wait for the client.
            Ok(First::Server) if upstream.is_some_and(|u| is_h2_settings(u.as_raw_fd())) => {
                upstream = None;
                continue;
            }
            // A readiness error shows again on the read that follows; let the copy see it.
            Ok(First::Server) | Err(_) => return Ok((Sniffed::ServerFirst, seen)),
            Ok(First::Deadline) => return Ok((Sniffed::Timeout, seen)),
            Ok(First::Client) => {}
        }
        let (read, returned) = client.read(buf).await;
        buf = returned;
        match read? {
            0 => return Ok((Sniffed::ClientClosed, seen)),
            n => seen.extend_from_slice(&buf[..n]),
        }
        match detect(&seen) {
            Detected::Protocol(protocol) => return Ok((Sniffed::Protocol(protocol), seen)),
            Detected::NeedMore => {
                debug_assert!(seen.len() < MAX_DETECT_BYTES);
            }
        }
    }
}

/// Whether the server's first bytes are an HTTP/2 SETTINGS frame header (type 4, no ACK
/// flag, stream 0), peeked without consuming them.
fn is_h2_settings(fd: std::os::fd::RawFd) -> bool {
    let mut header = [0u8; 9];
    match crate::sys::peek(fd, &mut header) {
        Ok(9) => {
            header[3] == 0x4
                && header[4] & 0x1 == 0
                && header[5..9].iter().all(|&b| b == 0)
                && u32::from_be_bytes([0, header[0], header[1], header[2]]).is_multiple_of(6)
        }
        _ => false,
    }
}

/// The output of whichever of three futures completes first; the others are dropped, so they
/// must be cancel-safe.
async fn first_of<T>(
    a: impl Future<Output = T>,
    b: impl Future<Output = T>,
    c: impl Future<Output = T>,
) -> T {
    or(a, or(b, c)).await
}
