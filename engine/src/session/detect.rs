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
use ringlink_protocols::http2::{is_settings_header, FRAME_HEADER_LEN};
use ringlink_protocols::{detect, Detected, Protocol, MAX_DETECT_BYTES};

use crate::error::ProxyError;
use crate::http::Version;
use crate::io::{Transport, SMALL_BUFFER};
use crate::rt::{Reader, Runtime, Stream};
use crate::telemetry;

/// How long a client whose destination could not be reached gets to show it speaks HTTP
/// (and so be answered 502/504 rather than reset). HTTP clients send their request at once.
pub const DETECT_AFTER_CONNECT_FAILURE: Duration = Duration::from_millis(100);

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
    /// The HTTP version the client speaks, if it does.
    pub fn http(&self) -> Option<Version> {
        match self {
            Sniffed::Protocol(Protocol::Http1) => Some(Version::Http1),
            Sniffed::Protocol(Protocol::Http2) => Some(Version::H2),
            _ => None,
        }
    }

    /// What `protocol_detect_total` counts it as.
    pub fn detected(&self) -> telemetry::Detected {
        match self {
            Sniffed::Protocol(Protocol::Http1) => telemetry::Detected::Http1,
            Sniffed::Protocol(Protocol::Http2) => telemetry::Detected::H2,
            Sniffed::Protocol(Protocol::Tls { .. }) => telemetry::Detected::Tls,
            Sniffed::Protocol(Protocol::Opaque) => telemetry::Detected::Opaque,
            Sniffed::ServerFirst => telemetry::Detected::ServerFirst,
            Sniffed::Timeout => telemetry::Detected::Timeout,
            Sniffed::ClientClosed => telemetry::Detected::ClientClosed,
        }
    }
}

// === functions ===

/// Detects what `client` speaks, returning the answer and the bytes read from it. Without
/// an `upstream` (nothing to connect to yet), only the client and the timeout can decide.
pub async fn sniff<R: Runtime>(
    client: &mut Transport<R>,
    upstream: Option<&Transport<R>>,
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
                // Boxed: see `rt::timeout`.
                Box::pin(R::sleep(remaining)).await;
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

/// Whether the server's first bytes are an HTTP/2 SETTINGS frame header, peeked without
/// consuming them.
fn is_h2_settings(fd: std::os::fd::RawFd) -> bool {
    let mut header = [0u8; FRAME_HEADER_LEN];
    matches!(crate::sys::peek(fd, &mut header), Ok(FRAME_HEADER_LEN) if is_settings_header(&header))
}

/// After the connection to the target failed: if the client has already sent an HTTP
/// request (or sends one within [`DETECT_AFTER_CONNECT_FAILURE`]), its version, the bytes
/// read, and the failure to answer an HTTP/1 request with; otherwise `None`, and the caller
/// resets the client.
pub async fn after_connect_failure<R: Runtime>(
    client: &mut Transport<R>,
    error: ProxyError,
) -> Option<(Version, Vec<u8>, Option<ProxyError>)> {
    match sniff::<R>(client, None, DETECT_AFTER_CONNECT_FAILURE).await {
        Ok((sniffed, first)) => match sniffed.http()? {
            Version::H2 => Some((Version::H2, first, None)),
            Version::Http1 => Some((Version::Http1, first, Some(error))),
        },
        Err(_) => None,
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
