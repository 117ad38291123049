//! HTTP/2 proxying with the h2 crate: the client connection is served by an h2 server, each
//! stream is forwarded on a multiplexed h2 client connection to its target, in its own
//! shard task, with flow control passing back-pressure through.
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
//!   are bounded here ([`MAX_EMPTY_DATA_FRAMES`]).
//! - Failures are answered: 502/504 with `l5d-proxy-error`, or for gRPC requests a
//!   trailers-only response with `grpc-status` UNAVAILABLE (14) or DEADLINE_EXCEEDED (4).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::or;
use futures_util::future::{FutureExt, Shared};
use h2::{client::SendRequest, server::SendResponse, Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use prometheus::IntCounter;
use ringlink_control::thread::{Phase, PhaseRx};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::balance::{Labels, Pick};
use crate::dst::{Dst, DstCache, DstError};
use crate::http1::reply::ProxyError;
use crate::http1::Route;
use crate::metrics::{
    is_grpc as is_grpc_type, parse_grpc_status, proxy_error_label, Peer, PeerMetrics,
    RequestMetrics, RouteCache,
};
use crate::rt::{Reader, Runtime};
use crate::shard::{ConnEntry, Direction, ShardState};

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;

/// Streams a client may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Largest header list (after HPACK decoding) accepted, in bytes.
pub const MAX_HEADER_LIST_SIZE: u32 = 64 << 10;
/// Streams reset by the client before they were accepted that may wait (rapid reset).
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the proxy may reset for protocol errors before the connection is closed.
pub const MAX_LOCAL_ERROR_RESETS: usize = 64;
/// Bytes buffered per stream for sending.
pub const MAX_SEND_BUFFER: usize = 256 << 10;
/// Consecutive empty DATA frames on one stream before it is reset.
pub const MAX_EMPTY_DATA_FRAMES: usize = 100;
/// How long a client connection may have no open stream before it is closed (GOAWAY).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a closing connection may take to flush its last frames.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

// === types ===

/// tokio-style I/O over a shard stream, replaying the bytes detection read first and
/// counting bytes for the TCP metrics.
pub struct Io<T> {
    inner: T,
    replay: Vec<u8>,
    at: usize,
    read_bytes: IntCounter,
    write_bytes: IntCounter,
}

/// The upstream connections of one client connection, by target.
struct Upstreams<R: Runtime> {
    state: Rc<ShardState>,
    direction: Direction,
    by_target: RefCell<HashMap<SocketAddr, Shared<Connecting>>>,
    /// The connection detection opened to the original destination, not yet used.
    eager: RefCell<Option<(SocketAddr, R::Stream)>>,
    /// The HTTP metrics of the connection's last route.
    routes: RefCell<RouteCache>,
    /// The destination of the connection's last balanced stream.
    dst: RefCell<DstCache>,
}

// === impl Io ===

impl<T> Io<T> {
    pub fn new(inner: T, replay: Vec<u8>, metrics: &PeerMetrics) -> Self {
        metrics.read_bytes.inc_by(replay.len() as u64);
        Io {
            inner,
            replay,
            at: 0,
            read_bytes: metrics.read_bytes.clone(),
            write_bytes: metrics.write_bytes.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
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
            this.read_bytes.inc_by((buf.filled().len() - before) as u64);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result {
            self.write_bytes.inc_by(n as u64);
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

// === functions ===

/// Serves an HTTP/2 client connection until it closes. `first` holds the bytes detection
/// read (the preface); `eager` the connection detection opened to the original destination.
#[allow(clippy::too_many_arguments)]
pub async fn serve<R: Runtime>(
    state: &Rc<ShardState>,
    direction: Direction,
    route: Route,
    client: R::Stream,
    first: Vec<u8>,
    eager: Option<R::Stream>,
    metrics: &PeerMetrics,
    phase: PhaseRx,
) -> Option<io::Error> {
    let fd = client.as_raw_fd();
    let mut client = client;
    let mut first = first;
    let detect_timeout = state.settings.detect_timeout(direction);
    // RFC 9113 §3.4: the preface must be followed by SETTINGS. The h2 crate would accept
    // other frames first, so the first frame header is checked here.
    let frame = PREFACE_LEN + 9;
    while first.len() < frame {
        first.reserve(frame);
        let read = or(
            async { Some(client.read_more(std::mem::take(&mut first)).await) },
            async {
                R::sleep(detect_timeout).await;
                None
            },
        )
        .await;
        match read {
            Some((Ok(n), buf)) if n > 0 => first = buf,
            Some((Ok(_), _)) => return None,
            Some((Err(error), _)) => return Some(error),
            None => return Some(io::ErrorKind::TimedOut.into()),
        }
    }
    let (kind, flags) = (first[PREFACE_LEN + 3], first[PREFACE_LEN + 4]);
    if kind != 0x4 || flags & 0x1 != 0 {
        tracing::info!(frame.kind = kind, "HTTP/2 preface not followed by SETTINGS");
        metrics.read_bytes.inc_by(first.len() as u64);
        // GOAWAY, last stream 0, PROTOCOL_ERROR.
        let goaway = vec![0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let (rx, mut tx) = crate::rt::Stream::into_split(client);
        if let (Ok(()), _) = crate::rt::Writer::write_all(&mut tx, goaway).await {
            metrics.write_bytes.inc_by(17);
        }
        let _ = crate::rt::Writer::shutdown(&mut tx).await;
        drop(<R::Stream as crate::rt::Stream>::reunite(rx, tx));
        return Some(io::Error::other("HTTP/2 protocol error"));
    }
    let io = match R::poll_io(client) {
        Ok(io) => Io::new(io, first, metrics),
        Err(error) => return Some(error),
    };
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io);
    let handshaken = or(async { Some(handshake.await) }, async {
        R::sleep(detect_timeout).await;
        None
    })
    .await;
    let mut conn = match handshaken {
        Some(Ok(conn)) => conn,
        Some(Err(error)) => {
            tracing::info!(%error, "HTTP/2 handshake failed");
            let _ = crate::sys::set_linger_zero(fd);
            return error
                .into_io()
                .or_else(|| Some(io::Error::other("h2 handshake")));
        }
        None => {
            tracing::info!("HTTP/2 client sent no SETTINGS");
            let _ = crate::sys::set_linger_zero(fd);
            return Some(io::ErrorKind::TimedOut.into());
        }
    };
    tracing::debug!("Serving HTTP/2");
    let upstreams = Rc::new(Upstreams::<R> {
        state: state.clone(),
        direction,
        by_target: RefCell::new(HashMap::new()),
        routes: RefCell::new(RouteCache::default()),
        dst: RefCell::new(DstCache::default()),
        eager: RefCell::new(eager.and_then(|s| match route {
            Route::Fixed(addr) => Some((addr, s)),
            Route::ByAuthority => None,
        })),
    });

    let mut ping = conn.ping_pong();
    let mut phase = phase;
    let mut draining = *phase.borrow() != Phase::Serving;
    if draining {
        conn.graceful_shutdown();
    }
    let side = match direction {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    };
    let interval = state.settings.h2_keepalive_interval[side];
    let ping_timeout = state.settings.h2_keepalive_timeout[side];
    // Without pings, the timer still drives the idle timeout.
    let period = if interval.is_zero() {
        IDLE_TIMEOUT / 10
    } else {
        interval
    };
    let mut tick = Box::pin(R::sleep(period));
    let mut last_ping = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    // Streams being proxied, and since when there were none.
    let active = Rc::new(std::cell::Cell::new(0usize));
    let mut idle_since: Option<Instant> = None;
    // Completes once the shard drains; polled until then, created once per connection.
    let mut drain = std::pin::pin!(async {
        let _ = phase.wait_for(|p| *p != Phase::Serving).await;
    });
    let mut drain_seen = false;
    let error = loop {
        let event = poll_fn(|cx| {
            if let Poll::Ready(accepted) = conn.poll_accept(cx) {
                return Poll::Ready(Event::Accept(accepted));
            }
            if let (Some(ping), Some(_)) = (ping.as_mut(), ping_sent) {
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
            Event::Accept(None) => break None,
            Event::Accept(Some(Err(error))) => {
                tracing::debug!(%error, "HTTP/2 connection failed");
                break error.into_io();
            }
            Event::Accept(Some(Ok((request, respond)))) => {
                let task = state.task();
                let upstreams = upstreams.clone();
                let active = active.clone();
                active.set(active.get() + 1);
                // Boxed once here: the stream's future is ~3 KiB, and the spawn moves it.
                let stream = Box::pin(proxy_stream::<R>(upstreams, route, request, respond));
                R::spawn(async move {
                    let _task = task;
                    stream.await;
                    active.set(active.get() - 1);
                });
                idle_since = None;
            }
            Event::Pong(ok) => {
                ping_sent = None;
                if !ok {
                    break None;
                }
            }
            Event::Drain => {
                draining = true;
                tracing::debug!("Draining: GOAWAY");
                conn.graceful_shutdown();
            }
            Event::Tick => {
                if ping_sent.is_some_and(|at| at.elapsed() >= ping_timeout) {
                    tracing::info!("HTTP/2 client did not answer PING; closing");
                    break Some(io::ErrorKind::TimedOut.into());
                }
                if active.get() > 0 {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_TIMEOUT
                    && !draining
                {
                    tracing::debug!("HTTP/2 connection idle; GOAWAY");
                    draining = true;
                    conn.graceful_shutdown();
                }
                if ping_sent.is_none() && !interval.is_zero() && last_ping.elapsed() >= interval {
                    if let Some(ping) = ping.as_mut() {
                        if ping.send_ping(h2::Ping::opaque()).is_ok() {
                            ping_sent = Some(Instant::now());
                            last_ping = Instant::now();
                        }
                    }
                }
                // With a ping out, wake when it is due; otherwise at the next interval.
                let next = match ping_sent {
                    Some(at) => ping_timeout.saturating_sub(at.elapsed()),
                    None if interval.is_zero() => period,
                    None => period.saturating_sub(last_ping.elapsed()),
                };
                tick = Box::pin(R::sleep(next.max(Duration::from_millis(1))));
            }
        }
    };
    // Let the connection flush what it owes (GOAWAY, last frames), but not wait on a peer
    // that stopped answering.
    let flushed = or(
        async {
            let _ = poll_fn(|cx| conn.poll_closed(cx)).await;
            true
        },
        async {
            R::sleep(CLOSE_FLUSH_TIMEOUT).await;
            false
        },
    )
    .await;
    if !flushed || error.is_some() {
        let _ = crate::sys::set_linger_zero(fd);
    }
    error
}

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

/// Forwards one stream and its response.
async fn proxy_stream<R: Runtime>(
    upstreams: Rc<Upstreams<R>>,
    route: Route,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (mut parts, body) = request.into_parts();
    let grpc = is_grpc(&parts.headers);
    let authority = parts.uri.authority().map(|a| a.to_string());
    let head_request = parts.method == http::Method::HEAD;
    let routed = upstreams
        .route(route, &mut parts, authority.as_deref())
        .await;
    let (mut target, dst, mut pick) = match routed {
        Ok(routed) => routed,
        Err(error) => {
            let mut metrics = upstreams.start(authority.as_deref(), None, None);
            return answer_error(&mut respond, grpc, head_request, &error, &mut metrics);
        }
    };
    let end = body.is_end_stream();
    // A cached connection may have been closed by the server (GOAWAY, EOF) since it was
    // last used: nothing was sent on it then, so one retry on a new connection is safe.
    let mut request = Some(Request::from_parts(parts, ()));
    let mut attempt = 0;
    let mut connects = 0;
    let send = loop {
        match upstreams.get(target).await {
            Ok(send) => {
                if let Some(pick) = &pick {
                    pick.connected();
                }
                break Ok(send);
            }
            Err(error) => {
                // A balanced stream that could not connect tries another endpoint.
                let (Some(failed), Some(dst)) = (&pick, &dst) else {
                    break Err(error);
                };
                if !matches!(
                    error,
                    ProxyError::Connect(_) | ProxyError::ConnectTimeout(_)
                ) {
                    break Err(error);
                }
                failed.connect_failed();
                connects += 1;
                if connects >= crate::http1::MAX_CONNECT_ATTEMPTS {
                    break Err(error);
                }
                match dst.pick::<R>(&upstreams.state).await {
                    Ok(next) => {
                        target = next.addr();
                        pick = Some(next);
                    }
                    Err(error) => {
                        pick = None;
                        break Err(error.into_proxy_error());
                    }
                }
            }
        }
    };
    let labels = pick.as_ref().map(Pick::labels);
    let mut metrics = upstreams.start(authority.as_deref(), Some(target), labels.as_ref());
    let mut send = match send {
        Ok(send) => Some(send),
        Err(error) => {
            return answer_error(&mut respond, grpc, head_request, &error, &mut metrics);
        }
    };
    let sent_at = std::time::Instant::now();
    let (response, up_body) = loop {
        attempt += 1;
        let send = match send.take() {
            Some(send) => send,
            None => match upstreams.get(target).await {
                Ok(send) => send,
                Err(error) => {
                    return answer_error(&mut respond, grpc, head_request, &error, &mut metrics)
                }
            },
        };
        let sent = match send.ready().await {
            Ok(mut send) => {
                let request = request.take().expect("sent once");
                match send.send_request(request, end) {
                    Ok(sent) => Ok(sent),
                    Err(error) => Err((error, None)),
                }
            }
            Err(error) => Err((error, request.take())),
        };
        match sent {
            Ok(sent) => break sent,
            Err((error, unsent)) => {
                upstreams.forget(target);
                match unsent {
                    Some(unsent) if attempt == 1 => {
                        tracing::debug!(%error, "Upstream connection closed; reconnecting");
                        request = Some(unsent);
                    }
                    _ => {
                        let error = ProxyError::Upstream(error.to_string());
                        return answer_error(
                            &mut respond,
                            grpc,
                            head_request,
                            &error,
                            &mut metrics,
                        );
                    }
                }
            }
        }
    };
    let request_side = async {
        if !end {
            pump(body, up_body).await
        } else {
            Pumped::default()
        }
    };
    let response_side = async {
        // A client reset while waiting drops the response future, which cancels the
        // upstream stream.
        let waited = or(async { Some(response.await) }, async {
            let reason = poll_fn(|cx| respond.poll_reset(cx)).await;
            tracing::debug!(?reason, "Client reset the stream");
            None
        })
        .await;
        // Whether the whole response reached the client.
        match waited {
            None => {
                metrics.error("client");
                false
            }
            Some(Ok(response)) => {
                let grpc = is_grpc_type(
                    response
                        .headers()
                        .get("content-type")
                        .map(HeaderValue::as_bytes),
                );
                metrics.response_head(response.status().as_u16(), grpc);
                if let Some(pick) = &pick {
                    pick.observe_rtt(sent_at.elapsed());
                }
                if let Some(code) = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| parse_grpc_status(v.as_bytes()))
                {
                    metrics.grpc_status(code);
                }
                let (parts, up_body) = response.into_parts();
                let end = up_body.is_end_stream();
                match respond.send_response(Response::from_parts(parts, ()), end) {
                    Ok(down) if !end => {
                        let pumped = pump(up_body, down).await;
                        if let Some(code) = pumped.grpc_status {
                            metrics.grpc_status(code);
                        }
                        match pumped.failed {
                            Some(side) => {
                                metrics.error(side.response_label());
                                false
                            }
                            None => true,
                        }
                    }
                    Ok(_) => true,
                    Err(error) => {
                        tracing::debug!(%error, "Client stream gone");
                        metrics.error("client");
                        false
                    }
                }
            }
            Some(Err(error)) => match error.reason() {
                Some(reason) if error.is_remote() || error.is_reset() => {
                    metrics.error("upstream");
                    respond.send_reset(reason);
                    false
                }
                _ => {
                    let error = ProxyError::Upstream(error.to_string());
                    answer_error(&mut respond, grpc, head_request, &error, &mut metrics);
                    false
                }
            },
        }
    };
    let (sent, completed) = crate::join::join(request_side, response_side).await;
    match sent.failed {
        // RFC 9113 §8.1: a server that has answered may stop the request body with a
        // reset (NO_ERROR); the exchange still succeeded.
        Some(Side::To) if completed => {}
        Some(side) => metrics.error(side.request_label()),
        None => {}
    }
    metrics.end();
}

/// How a [`pump`] ended.
#[derive(Default)]
struct Pumped {
    /// `grpc-status` from the trailers.
    grpc_status: Option<u32>,
    /// Which side broke the body, if one did.
    failed: Option<Side>,
}

/// The two ends of a [`pump`].
enum Side {
    /// The side data came from.
    From,
    /// The side data went to.
    To,
}

impl Side {
    /// The `error` label when the request body broke: its source is the client.
    fn request_label(&self) -> &'static str {
        match self {
            Side::From => "client",
            Side::To => "upstream",
        }
    }

    /// The `error` label when the response body broke: its source is the server.
    fn response_label(&self) -> &'static str {
        match self {
            Side::From => "upstream",
            Side::To => "client",
        }
    }
}

/// Moves a body (data, then trailers) from `from` to `to`, releasing `from`'s flow-control
/// window only as `to` accepts the data: a slow reader slows the writer.
async fn pump(mut from: RecvStream, mut to: SendStream<Bytes>) -> Pumped {
    let failed = |side| Pumped {
        grpc_status: None,
        failed: Some(side),
    };
    let mut empty = 0;
    loop {
        // While waiting for data, a reset from the receiving side ends the pump: dropping
        // `from` then cancels the sending side's stream.
        let next = poll_fn(|cx| {
            if let Poll::Ready(reset) = to.poll_reset(cx) {
                return Poll::Ready(Err(reset.ok()));
            }
            from.poll_data(cx).map(Ok)
        })
        .await;
        let next = match next {
            Ok(next) => next,
            Err(reason) => {
                tracing::debug!(?reason, "Stream reset by the receiving side");
                return failed(Side::To);
            }
        };
        match next {
            None => break,
            Some(Ok(data)) if data.is_empty() => {
                empty += 1;
                if empty > MAX_EMPTY_DATA_FRAMES {
                    tracing::info!("Too many empty DATA frames; resetting the stream");
                    to.send_reset(Reason::CANCEL);
                    return failed(Side::From);
                }
            }
            Some(Ok(mut data)) => {
                empty = 0;
                let n = data.len();
                while !data.is_empty() {
                    to.reserve_capacity(data.len());
                    match poll_fn(|cx| to.poll_capacity(cx)).await {
                        Some(Ok(0)) => continue,
                        Some(Ok(cap)) => {
                            let chunk = data.split_to(cap.min(data.len()));
                            if to.send_data(chunk, false).is_err() {
                                return failed(Side::To);
                            }
                        }
                        // The receiving side reset or went away.
                        _ => return failed(Side::To),
                    }
                }
                let _ = from.flow_control().release_capacity(n);
            }
            Some(Err(error)) => {
                to.send_reset(error.reason().unwrap_or(Reason::CANCEL));
                return failed(Side::From);
            }
        }
    }
    match poll_fn(|cx| from.poll_trailers(cx)).await {
        Ok(Some(trailers)) => {
            let grpc_status = trailers
                .get("grpc-status")
                .and_then(|v| parse_grpc_status(v.as_bytes()));
            let _ = to.send_trailers(trailers);
            Pumped {
                grpc_status,
                failed: None,
            }
        }
        Ok(None) => {
            let _ = to.send_data(Bytes::new(), true);
            Pumped::default()
        }
        Err(error) => {
            to.send_reset(error.reason().unwrap_or(Reason::CANCEL));
            failed(Side::From)
        }
    }
}

/// Answers a stream the proxy could not forward.
fn answer_error(
    respond: &mut SendResponse<Bytes>,
    grpc: bool,
    head_request: bool,
    error: &ProxyError,
    metrics: &mut RequestMetrics,
) {
    tracing::info!(status = error.status(), error = %error.message(), "Request failed");
    metrics.fail(error.status(), proxy_error_label(error));
    if grpc {
        let code = if error.status() == 504 { 4 } else { 14 };
        metrics.response_head(200, true);
        metrics.grpc_status(code);
    }
    let message = error.message().replace(['\r', '\n'], " ");
    let mut response = Response::new(());
    *response.status_mut() = if grpc {
        // Trailers-only: status 200, gRPC status in the (only) header block.
        StatusCode::OK
    } else {
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_GATEWAY)
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("l5d-proxy-error", value.clone());
        if grpc {
            headers.insert("grpc-message", value);
        }
    }
    if grpc {
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        let code = if error.status() == 504 { "4" } else { "14" };
        headers.insert("grpc-status", HeaderValue::from_static(code));
        let _ = respond.send_response(response, true);
    } else {
        let body = Bytes::from(format!("{message}\n"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("content-length", HeaderValue::from(body.len()));
        // A response to HEAD carries no DATA.
        if let Ok(mut stream) = respond.send_response(response, head_request) {
            if !head_request {
                let _ = stream.send_data(body, true);
            }
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

// === impl Upstreams ===

impl<R: Runtime> Upstreams<R> {
    /// Starts the metrics of a request on this connection.
    fn start(
        &self,
        authority: Option<&str>,
        target: Option<SocketAddr>,
        labels: Option<&Labels>,
    ) -> RequestMetrics {
        self.state.http_metrics.start(
            &mut self.routes.borrow_mut(),
            self.direction,
            authority,
            target,
            labels,
        )
    }

    /// Where a stream goes: the original destination, the endpoint a balancer picked (when
    /// its authority names a destination), or the authority's address.
    async fn route(
        &self,
        route: Route,
        parts: &mut http::request::Parts,
        authority: Option<&str>,
    ) -> Result<(SocketAddr, Option<Rc<Dst>>, Option<Pick>), ProxyError> {
        let state = &self.state;
        let (fallback, name) = match route {
            Route::Fixed(addr) => (Some(addr), crate::dst::suffix_name(state, authority)),
            Route::ByAuthority => {
                let by = parts
                    .headers
                    .get("l5d-dst-override")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| authority.map(str::to_string));
                parts.headers.remove("l5d-dst-override");
                let Some((host, port)) = by.as_deref().and_then(crate::http1::parse_authority)
                else {
                    return Err(ProxyError::BadRequest(
                        400,
                        "no authority to route by".into(),
                    ));
                };
                match crate::dst::name_of(&host, port) {
                    Some(name) => (None, Some(name)),
                    None => {
                        let addr = crate::dns::resolve::<R>(state, &host, port)
                            .await
                            .map_err(ProxyError::Resolve)?;
                        return Ok((addr, None, None));
                    }
                }
            }
        };
        let Some(name) = name else {
            let addr = fallback.expect("a fixed route has an address");
            return Ok((addr, None, None));
        };
        let dst = self.dst.borrow_mut().get::<R>(state, self.direction, &name);
        match dst.pick::<R>(state).await {
            Ok(pick) => Ok((pick.addr(), Some(dst), Some(pick))),
            Err(DstError::Fallback) => match fallback {
                Some(addr) => Ok((addr, None, None)),
                None => Ok((
                    crate::dst::fallback_addr::<R>(state, &name)
                        .await
                        .map_err(ProxyError::Resolve)?,
                    None,
                    None,
                )),
            },
            Err(error) => Err(error.into_proxy_error()),
        }
    }

    /// The h2 connection to `target`. The first stream to ask connects (or uses the eager
    /// connection); streams asking meanwhile wait for the same connection.
    async fn get(&self, target: SocketAddr) -> Result<SendRequest<Bytes>, ProxyError> {
        let existing = self.by_target.borrow().get(&target).cloned();
        let shared = match existing {
            Some(shared) => shared,
            None => {
                let eager = {
                    let mut eager = self.eager.borrow_mut();
                    match eager.take() {
                        Some((addr, stream)) if addr == target => Some(stream),
                        other => {
                            *eager = other;
                            None
                        }
                    }
                };
                let (state, direction) = (self.state.clone(), self.direction);
                let connecting: Connecting = Box::pin(async move {
                    let stream = match eager {
                        Some(stream) => stream,
                        None => {
                            let timeout = state.settings.connect_timeout(direction);
                            R::connect(target, timeout)
                                .await
                                .map_err(|e| ConnectFailure::from_io(&e, timeout))?
                        }
                    };
                    connect_h2::<R>(&state, direction, target, stream).await
                });
                let shared = connecting.shared();
                self.by_target.borrow_mut().insert(target, shared.clone());
                shared
            }
        };
        match shared.await {
            Ok(send) => Ok(send),
            Err(failure) => {
                // The next stream tries again.
                self.forget(target);
                Err(failure.into_error())
            }
        }
    }

    fn forget(&self, target: SocketAddr) {
        self.by_target.borrow_mut().remove(&target);
    }
}

/// A connection being (or already) made, awaited by every stream to its target.
type Connecting = Pin<Box<dyn Future<Output = Result<SendRequest<Bytes>, ConnectFailure>>>>;

/// Why an upstream h2 connection could not be made (cloneable, for every waiting stream).
#[derive(Clone, Debug)]
struct ConnectFailure {
    timeout: Option<Duration>,
    kind: io::ErrorKind,
    message: String,
}

impl ConnectFailure {
    fn from_io(error: &io::Error, timeout: Duration) -> Self {
        ConnectFailure {
            timeout: (error.kind() == io::ErrorKind::TimedOut).then_some(timeout),
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    fn into_error(self) -> ProxyError {
        match self.timeout {
            Some(timeout) => ProxyError::ConnectTimeout(timeout),
            None if self.kind == io::ErrorKind::Other => ProxyError::Upstream(self.message),
            None => ProxyError::Connect(io::Error::new(self.kind, self.message)),
        }
    }
}

/// The h2 client handshake on `stream`; the connection is driven by its own task, which
/// ends when the server closes it or every handle to it is gone.
async fn connect_h2<R: Runtime>(
    state: &Rc<ShardState>,
    direction: Direction,
    target: SocketAddr,
    stream: R::Stream,
) -> Result<SendRequest<Bytes>, ConnectFailure> {
    let fd = stream.as_raw_fd();
    let metrics = state.tcp_open(direction, Peer::Dst, target);
    let io = match R::poll_io(stream) {
        Ok(io) => Io::new(io, Vec::new(), &metrics),
        Err(error) => {
            let failure = ConnectFailure::from_io(&error, Duration::ZERO);
            state.tcp_close(metrics, Some(&error));
            return Err(failure);
        }
    };
    let handshake = h2::client::Builder::new()
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io)
        .await;
    let (send, conn) = match handshake {
        Ok(pair) => pair,
        Err(error) => {
            let io_error = io::Error::other(error.to_string());
            state.tcp_close(metrics, Some(&io_error));
            return Err(ConnectFailure {
                timeout: None,
                kind: io::ErrorKind::Other,
                message: format!("HTTP/2 handshake: {error}"),
            });
        }
    };
    let task = state.task();
    let entry: ConnEntry = state.register(fd);
    let state = state.clone();
    R::spawn(async move {
        let _task = task;
        let _entry = entry;
        let result = conn.await;
        let error = result.err().and_then(|e| e.into_io());
        state.tcp_close(metrics, error.as_ref());
    });
    Ok(send)
}
