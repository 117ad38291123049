//! HTTP/2 proxying with the h2 crate, the client connection's side: the connection is served
//! by an h2 server, each stream is forwarded ([`stream`]) on a multiplexed h2 client
//! connection to its target ([`client`]), in its own shard task, with flow control passing
//! back-pressure through.
//!
//! - Trailers (gRPC status) are forwarded; RST_STREAM is passed on in both directions with
//!   its reason; a client stream reset while waiting for the response cancels the upstream
//!   stream.
//! - h2 has no timers: PING keep-alive runs on the shard runtime's timer (a PING every
//!   `*_SERVER_HTTP2_KEEP_ALIVE_INTERVAL`; no PONG within `*_KEEP_ALIVE_TIMEOUT` closes the
//!   connection), and so does the idle timeout (no stream for [`IDLE_TIMEOUT`]: GOAWAY).
//! - The drain sends GOAWAY and lets open streams finish.
//! - Limits against abuse: concurrent streams, header list size, pending-accept and local
//!   error resets (rapid reset, CVE-2023-44487 and its 2024 cousin), send buffer; the h2
//!   crate bounds CONTINUATION frames by the header list size and keeps at most one PING
//!   and one SETTINGS acknowledgement pending; runs of empty DATA frames (CVE-2019-9518)
//!   are bounded per stream ([`MAX_EMPTY_DATA_FRAMES`]).
//! - Failures are answered: 502/504 with `l5d-proxy-error`, or for gRPC requests a
//!   trailers-only response with `grpc-status` UNAVAILABLE (14) or DEADLINE_EXCEEDED (4).

pub mod client;
pub mod downgrade;
mod retry;
pub mod stream;

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::{Connection, SendResponse};
use h2::RecvStream;
use http::Request;
use ringlink_protocols::http2::{check_preface, goaway, PrefaceCheck, PROTOCOL_ERROR};

use crate::ctx::ShardCtx;
use crate::http::conn::Client;
use crate::io::Counted;
use crate::io::{PollTransport, Transport};
use crate::rt::{Reader, Runtime};
use client::Upstreams;

/// Streams a client may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Largest header list (after HPACK decoding) accepted, in bytes; bytes buffered per
/// stream for sending. The same for the client connection and the upstream ones.
pub use crate::upstream::h2::{MAX_HEADER_LIST_SIZE, MAX_SEND_BUFFER};
/// Streams reset by the client before they were accepted that may wait (rapid reset).
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the proxy may reset for protocol errors before the connection is closed.
pub const MAX_LOCAL_ERROR_RESETS: usize = 64;
/// Consecutive empty DATA frames on one stream before it is reset.
pub const MAX_EMPTY_DATA_FRAMES: usize = 100;
/// How long a client connection may have no open stream before it is closed (GOAWAY).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a closing connection may take to flush its last frames.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

// === types ===

type ServerConn<R> = Connection<Counted<PollTransport<R>>, Bytes>;

/// A stream the client opened, or why the connection ended.
type Accepted = Option<Result<(Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

/// What woke the connection loop. Short-lived, so the size of `Accept` does not matter.
#[allow(clippy::large_enum_variant)]
enum Event {
    Accept(Accepted),
    Pong(bool),
    Drain,
    Tick,
}

/// The PING keep-alive and idle bookkeeping of one connection.
struct Keepalive {
    interval: Duration,
    timeout: Duration,
    /// How often the timer wakes the loop.
    period: Duration,
    last_ping: Instant,
    ping_sent: Option<Instant>,
    /// Since when no stream was open, if none is.
    idle_since: Option<Instant>,
}

// === functions ===

/// Serves an HTTP/2 client connection until it closes. `client.first` holds the bytes
/// detection read (the preface); `eager` the connection detection opened to the original
/// destination.
pub async fn serve<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    client: Client<'_, R>,
    eager: Option<(SocketAddr, Transport<R>)>,
) -> Option<std::io::Error> {
    let Client {
        meta,
        stream,
        first,
        metrics,
        ..
    } = client;
    let fd = stream.as_raw_fd();
    let detect_timeout = ctx.settings.detect_timeout.get(meta.direction);
    // Boxed, as the handshake below: the preface check's state would otherwise size the
    // connection's future (3.0 KiB against 2.3) for as long as the connection lives.
    let checked = Box::pin(preface::<R>(stream, first, detect_timeout, metrics)).await;
    let (stream, first) = match checked {
        Ok(checked) => checked,
        Err(error) => return error,
    };
    let io = match stream.into_poll() {
        Ok((io, ahead)) => {
            let mut first = first;
            first.extend_from_slice(&ahead);
            Counted::new(io, first, &metrics.read_bytes, &metrics.write_bytes)
        }
        Err(error) => return Some(error),
    };
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io);
    // Boxed: the handshake's state (~4 KiB) would otherwise size the connection's task for
    // as long as the connection lives.
    let handshake = Box::pin(crate::rt::timeout::<R, _>(detect_timeout, handshake));
    let mut conn = match handshake.await {
        Some(Ok(conn)) => conn,
        Some(Err(error)) => {
            tracing::info!(%error, "HTTP/2 handshake failed");
            crate::io::reset(fd);
            return error
                .into_io()
                .or_else(|| Some(std::io::Error::other("h2 handshake")));
        }
        None => {
            tracing::info!("HTTP/2 client sent no SETTINGS");
            crate::io::reset(fd);
            return Some(std::io::ErrorKind::TimedOut.into());
        }
    };
    tracing::debug!("Serving HTTP/2");
    let upstreams = Rc::new(Upstreams::<R>::new(
        ctx,
        meta,
        eager.filter(|(addr, _)| meta.route.fixed() == Some(*addr)),
    ));
    let error = serve_streams(ctx, &mut conn, &upstreams).await;
    // Let the connection flush what it owes (GOAWAY, last frames), but not wait on a peer
    // that stopped answering.
    let closed = poll_fn(|cx| conn.poll_closed(cx));
    let flushed = crate::rt::timeout::<R, _>(CLOSE_FLUSH_TIMEOUT, closed).await;
    if flushed.is_none() || error.is_some() {
        crate::io::reset(fd);
    }
    error
}

/// RFC 9113 §3.4: the preface must be followed by SETTINGS. The h2 crate would accept other
/// frames first, so the first frame header is read and checked here; a client that sends
/// something else gets GOAWAY(PROTOCOL_ERROR). Returns the stream and the bytes read.
async fn preface<R: Runtime>(
    mut stream: Transport<R>,
    mut first: Vec<u8>,
    timeout: Duration,
    metrics: &crate::telemetry::PeerMetrics,
) -> Result<(Transport<R>, Vec<u8>), Option<std::io::Error>> {
    loop {
        match check_preface(&first) {
            PrefaceCheck::Settings => return Ok((stream, first)),
            PrefaceCheck::NeedMore => {}
            PrefaceCheck::NotSettings { kind } => {
                tracing::info!(frame.kind = kind, "HTTP/2 preface not followed by SETTINGS");
                metrics.read_bytes.inc_by(first.len() as u64);
                let (rx, mut tx) = crate::rt::Stream::into_split(stream);
                let frame = goaway(0, PROTOCOL_ERROR).to_vec();
                let n = frame.len() as u64;
                if let (Ok(()), _) = crate::rt::Writer::write_all(&mut tx, frame).await {
                    metrics.write_bytes.inc_by(n);
                }
                let _ = crate::rt::Writer::shutdown(&mut tx).await;
                drop(<Transport<R> as crate::rt::Stream>::reunite(rx, tx));
                return Err(Some(std::io::Error::other("HTTP/2 protocol error")));
            }
        }
        first.reserve(ringlink_protocols::http2::PREFACE_AND_FRAME_HEADER);
        let read = stream.read_more(std::mem::take(&mut first));
        match crate::rt::timeout::<R, _>(timeout, read).await {
            Some((Ok(n), buf)) if n > 0 => first = buf,
            Some((Ok(_), _)) => return Err(None),
            Some((Err(error), _)) => return Err(Some(error)),
            None => return Err(Some(std::io::ErrorKind::TimedOut.into())),
        }
    }
}

/// Accepts streams, spawning a task for each, and keeps the connection alive (PING), idle
/// and draining (GOAWAY) on the shard's timer, until the connection ends.
async fn serve_streams<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    conn: &mut ServerConn<R>,
    upstreams: &Rc<Upstreams<R>>,
) -> Option<std::io::Error> {
    let direction = upstreams.meta.direction;
    let mut ping = conn.ping_pong();
    let mut draining = ctx.life.is_draining();
    if draining {
        conn.graceful_shutdown();
    }
    let mut keepalive = Keepalive::new(
        ctx.settings.h2_keepalive_interval.get(direction),
        ctx.settings.h2_keepalive_timeout.get(direction),
    );
    let mut tick = Box::pin(R::sleep(keepalive.period));
    // Streams being proxied.
    let active = Rc::new(Cell::new(0usize));
    // Completes once the shard drains; polled until then, created once per connection.
    let life = ctx.life.clone();
    let mut drain = std::pin::pin!(async move { life.drain_started().await });
    let mut drain_seen = false;
    loop {
        let event = poll_fn(|cx| {
            if let Poll::Ready(accepted) = conn.poll_accept(cx) {
                return Poll::Ready(Event::Accept(accepted));
            }
            if let (Some(ping), Some(_)) = (ping.as_mut(), keepalive.ping_sent) {
                if let Poll::Ready(pong) = ping.poll_pong(cx) {
                    return Poll::Ready(Event::Pong(pong.is_ok()));
                }
            }
            if !drain_seen && drain.as_mut().poll(cx).is_ready() {
                drain_seen = true;
                return Poll::Ready(Event::Drain);
            }
            if tick.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Tick);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Accept(None) => return None,
            Event::Accept(Some(Err(error))) => {
                tracing::debug!(%error, "HTTP/2 connection failed");
                return error.into_io();
            }
            Event::Accept(Some(Ok((request, respond)))) => {
                let task = ctx.life.task();
                let active = active.clone();
                active.set(active.get() + 1);
                // Boxed once here: the stream's future is ~3 KiB, and the spawn moves it.
                let stream = Box::pin(stream::proxy::<R>(upstreams.clone(), request, respond));
                R::spawn(async move {
                    let _task = task;
                    stream.await;
                    active.set(active.get() - 1);
                });
                keepalive.idle_since = None;
            }
            Event::Pong(ok) => {
                keepalive.ping_sent = None;
                if !ok {
                    return None;
                }
            }
            Event::Drain => {
                draining = true;
                tracing::debug!("Draining: GOAWAY");
                conn.graceful_shutdown();
            }
            Event::Tick => {
                if keepalive.ping_overdue() {
                    tracing::info!("HTTP/2 client did not answer PING; closing");
                    return Some(std::io::ErrorKind::TimedOut.into());
                }
                if keepalive.idle(active.get()) && !draining {
                    tracing::debug!("HTTP/2 connection idle; GOAWAY");
                    draining = true;
                    conn.graceful_shutdown();
                }
                if keepalive.ping_due() {
                    if let Some(ping) = ping.as_mut() {
                        if ping.send_ping(h2::Ping::opaque()).is_ok() {
                            keepalive.sent();
                        }
                    }
                }
                tick = Box::pin(R::sleep(keepalive.next_tick()));
            }
        }
    }
}

// === impl Keepalive ===

impl Keepalive {
    fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval,
            timeout,
            // Without pings, the timer still drives the idle timeout.
            period: if interval.is_zero() {
                IDLE_TIMEOUT / 10
            } else {
                interval
            },
            last_ping: Instant::now(),
            ping_sent: None,
            idle_since: None,
        }
    }

    fn ping_overdue(&self) -> bool {
        self.ping_sent
            .is_some_and(|at| at.elapsed() >= self.timeout)
    }

    /// Whether the connection has had no stream for [`IDLE_TIMEOUT`], given `active`
    /// streams now.
    fn idle(&mut self, active: usize) -> bool {
        if active > 0 {
            self.idle_since = None;
            return false;
        }
        self.idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_TIMEOUT
    }

    fn ping_due(&self) -> bool {
        self.ping_sent.is_none()
            && !self.interval.is_zero()
            && self.last_ping.elapsed() >= self.interval
    }

    fn sent(&mut self) {
        self.ping_sent = Some(Instant::now());
        self.last_ping = Instant::now();
    }

    /// With a ping out, wake when it is due; otherwise at the next interval.
    fn next_tick(&self) -> Duration {
        let next = match self.ping_sent {
            Some(at) => self.timeout.saturating_sub(at.elapsed()),
            None if self.interval.is_zero() => self.period,
            None => self.period.saturating_sub(self.last_ping.elapsed()),
        };
        next.max(Duration::from_millis(1))
    }
}
