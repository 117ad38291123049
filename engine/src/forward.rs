//! L4 forwarding: one task per accepted connection, copying both ways with owned buffers.
//!
//! - Buffers start small (4 KiB) and grow to 64 KiB from the shard's pool when a read fills
//!   them, so 10,000 idle connections cost ~80 MiB of buffers, not 1.3 GiB, and bulk
//!   transfers still move 64 KiB per syscall.
//! - Each direction writes what it read before reading again: a slow reader on one side
//!   stops reads from the other (backpressure, bounded memory).
//! - End of stream is passed on as a half-close (FIN); an error on one side is passed on as
//!   a reset (RST) of the other.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use tracing::Instrument;

use prometheus::IntCounter;

use ringlink_protocols::Protocol;

use crate::balance::Pick;
use crate::dst::{Dst, DstError, Dsts};
use crate::http1::reply::ProxyError;
use crate::http1::{Eager, Route};
use crate::metrics::{Peer, PeerMetrics};
use crate::pool::Upstream;
use crate::rt::{Reader, Runtime, Stream, Writer};
use crate::shard::{ConnEntry, Direction, ShardState, TaskGuard};
use crate::sniff::{sniff, Sniffed};
use crate::sys;
use ringlink_control::thread::PhaseRx;

/// First buffer of each direction.
pub const SMALL_BUFFER: usize = 4 << 10;
/// Buffer used once reads fill the small one (64 KiB: 2.3–2.8× the throughput of 4 KiB on
/// large bodies, DESIGN.md §5).
pub const LARGE_BUFFER: usize = 64 << 10;

// === types ===

/// How long a client whose destination could not be reached gets to show it speaks HTTP
/// (and so be answered 502/504 rather than reset). HTTP clients send their request at once.
const DETECT_AFTER_CONNECT_FAILURE: Duration = Duration::from_millis(100);

/// Where an accepted connection goes.
enum Dest {
    /// Its (inbound: local) target.
    Target(SocketAddr),
    /// It was sent to the proxy's own outbound listener (this local address), not redirected.
    Proxy(SocketAddr),
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

// === functions ===

/// Serves one accepted connection to its end.
pub async fn serve<R: Runtime>(
    _task: TaskGuard,
    state: Rc<ShardState>,
    direction: Direction,
    client: R::Stream,
    peer: SocketAddr,
    phase: PhaseRx,
) {
    let span = tracing::info_span!(
        "conn",
        shard = state.index,
        client.addr = %peer,
        server.addr = tracing::field::Empty,
        direction = direction.as_str(),
        protocol = tracing::field::Empty,
    );
    async move {
        let mut client = client;
        let client_fd = client.as_raw_fd();
        let entry = state.register(client_fd);
        let Some(dest) = destination(&state, direction, client_fd) else {
            reset(client_fd);
            return;
        };
        let target = match dest {
            Dest::Target(target) => target,
            Dest::Proxy(local) => {
                // Addressed to the proxy itself: only HTTP can say where it goes.
                let src = state.tcp_open(direction, Peer::Src, local);
                let timeout = state.settings.outbound_detect_timeout;
                let http = Http {
                    state: &state,
                    direction,
                    route: Route::ByAuthority,
                    src: &src,
                    entry: &entry,
                    phase,
                };
                let error = match sniff::<R>(&mut client, None, timeout).await {
                    Ok((
                        Sniffed::Protocol(protocol @ (Protocol::Http1 | Protocol::Http2)),
                        first,
                    )) => {
                        http.serve::<R>(protocol, client, first, Eager::None, None)
                            .await
                    }
                    Ok((sniffed, _)) => {
                        detected(&state, direction, sniffed.name());
                        tracing::warn!(
                            "Refusing a connection addressed to the proxy itself that is not \
                             HTTP (routing loop)"
                        );
                        reset(client_fd);
                        None
                    }
                    Err(error) => Some(error),
                };
                state.tcp_close(src, error.as_ref());
                return;
            }
        };
        tracing::Span::current().record("server.addr", tracing::field::display(target));
        let timeout = state.settings.connect_timeout(direction);
        let src = state.tcp_open(direction, Peer::Src, target);
        // A profiled destination whose profile says opaque: balanced per connection over
        // its endpoints, without protocol detection.
        if direction == Direction::Outbound && crate::dst::has_profile(&state, target) {
            let dst = Dsts::get::<R>(&state, direction, &target.to_string());
            dst.settle::<R>(&state).await;
            if dst.is_opaque() {
                detected(&state, direction, "opaque-profile");
                let error = balanced_l4::<R>(&state, &dst, target, client, &src, &entry).await;
                state.tcp_close(src, error.as_ref());
                return;
            }
        }
        let fixed = |phase| Http {
            state: &state,
            direction,
            route: Route::Fixed(target),
            src: &src,
            entry: &entry,
            phase,
        };
        // An idle pooled HTTP/1 connection to the target means it speaks HTTP: detect
        // without a new connection, and serve the first request on the pooled one.
        let mut replay = None;
        if let Some(pooled) = state.pool::<R>().take(target) {
            let timeout = state.settings.detect_timeout(direction);
            match sniff::<R>(&mut client, None, timeout).await {
                Ok((Sniffed::Protocol(protocol @ (Protocol::Http1 | Protocol::Http2)), first)) => {
                    // The pooled HTTP/1 connection serves an HTTP/1 client only.
                    let eager = match protocol {
                        Protocol::Http1 => Eager::Open(pooled),
                        _ => {
                            state.pool::<R>().put(pooled);
                            Eager::None
                        }
                    };
                    let error = fixed(phase)
                        .serve::<R>(protocol, client, first, eager, None)
                        .await;
                    state.tcp_close(src, error.as_ref());
                    return;
                }
                Ok((sniffed, first)) => {
                    state.pool::<R>().put(pooled);
                    detected(&state, direction, sniffed.name());
                    replay = Some(first);
                }
                Err(error) => {
                    state.pool::<R>().put(pooled);
                    state.tcp_close(src, Some(&error));
                    return;
                }
            }
        }
        let upstream = match R::connect(target, timeout).await {
            Ok(upstream) => upstream,
            Err(error) => {
                tracing::info!(%error, "Connect failed");
                // An HTTP client that already sent its request gets a 502/504, not a reset.
                let failed = connect_failed::<R>(&state, direction, &mut client, target, error);
                let error = failed.await;
                match error {
                    Some((protocol, first, eager)) => {
                        let error = fixed(phase)
                            .serve::<R>(protocol, client, first, eager, None)
                            .await;
                        state.tcp_close(src, error.as_ref());
                    }
                    None => {
                        reset(client_fd);
                        state.tcp_close(src, None);
                    }
                }
                return;
            }
        };
        if state.is_closing() {
            state.tcp_close(src, None);
            return;
        }
        let upstream_fd = upstream.as_raw_fd();
        entry.set_upstream(upstream_fd);

        let opaque_port = direction == Direction::Inbound
            && state.settings.inbound_opaque_ports.contains(target.port());
        let first = if let Some(first) = replay {
            first
        } else if opaque_port {
            detected(&state, direction, "opaque-port");
            Vec::new()
        } else {
            let timeout = state.settings.detect_timeout(direction);
            match sniff::<R>(&mut client, Some(&upstream), timeout).await {
                Ok((Sniffed::Protocol(protocol @ (Protocol::Http1 | Protocol::Http2)), first)) => {
                    // The eagerly opened connection serves the first request (HTTP/1) or
                    // carries the multiplexed upstream connection (h2).
                    let (eager, stream) = match protocol {
                        Protocol::Http1 => (
                            Eager::Open(Upstream::<R>::from_stream(
                                &state, direction, target, upstream,
                            )),
                            None,
                        ),
                        _ => {
                            entry.set_upstream(-1);
                            (Eager::None, Some(upstream))
                        }
                    };
                    let error = fixed(phase)
                        .serve::<R>(protocol, client, first, eager, stream)
                        .await;
                    state.tcp_close(src, error.as_ref());
                    return;
                }
                Ok((sniffed, first)) => {
                    detected(&state, direction, sniffed.name());
                    if let Sniffed::Protocol(Protocol::Tls { sni: Some(sni) }) = &sniffed {
                        tracing::debug!(tls.sni = %sni, "TLS ClientHello");
                    }
                    first
                }
                Err(error) => {
                    tracing::debug!(%error, "Client failed during detection");
                    abort(upstream_fd, client_fd);
                    state.tcp_close(src, Some(&error));
                    return;
                }
            }
        };
        let dst = state.tcp_open(direction, Peer::Dst, target);

        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
        // Replay what detection read before anything else goes upstream.
        if !first.is_empty() {
            let n = first.len() as u64;
            src.read_bytes.inc_by(n);
            let (written, _) = upstream_tx.write_all(first).await;
            if let Err(error) = written {
                tracing::debug!(%error, "Write failed");
                abort(client_fd, upstream_fd);
                state.tcp_close(src, None);
                state.tcp_close(dst, Some(&error));
                drop(R::Stream::reunite(client_rx, client_tx));
                drop(R::Stream::reunite(upstream_rx, upstream_tx));
                return;
            }
            dst.write_bytes.inc_by(n);
        }
        let shut = [Cell::new(false), Cell::new(false)];
        let (sent, received) = crate::join::join(
            copy(
                &state,
                (&mut client_rx, &mut upstream_tx),
                [client_fd, upstream_fd],
                [&src.read_bytes, &dst.write_bytes],
                [&shut[0], &shut[1]],
            ),
            copy(
                &state,
                (&mut upstream_rx, &mut client_tx),
                [upstream_fd, client_fd],
                [&dst.read_bytes, &src.write_bytes],
                [&shut[1], &shut[0]],
            ),
        )
        .await;
        tracing::debug!(?sent, ?received, "Connection closed");
        // Which end each error came from: the client's (reading from it, writing to it) or
        // the server's.
        let client_error = match (&sent, &received) {
            (Err(Ended::ReadFailed(e)), _) | (_, Err(Ended::WriteFailed(e))) => Some(e),
            _ => None,
        };
        let server_error = match (&sent, &received) {
            (Err(Ended::WriteFailed(e)), _) | (_, Err(Ended::ReadFailed(e))) => Some(e),
            _ => None,
        };
        state.tcp_close(src, client_error);
        state.tcp_close(dst, server_error);
        drop(R::Stream::reunite(client_rx, client_tx));
        drop(R::Stream::reunite(upstream_rx, upstream_tx));
        drop(entry);
    }
    .instrument(span)
    .await
}

/// Forwards an opaque connection to an endpoint of `dst` (or to `target` when its profile
/// names no service): P2C over the endpoints, where each open connection counts as pending
/// and the connect latency is the RTT sample; an endpoint that refuses backs off and another
/// is tried.
async fn balanced_l4<R: Runtime>(
    state: &Rc<ShardState>,
    dst: &Dst,
    target: SocketAddr,
    client: R::Stream,
    src: &PeerMetrics,
    entry: &ConnEntry,
) -> Option<io::Error> {
    let client_fd = client.as_raw_fd();
    let timeout = state.settings.connect_timeout(Direction::Outbound);
    let mut attempts = 0;
    let (upstream, endpoint, _pick) = loop {
        attempts += 1;
        let pick = match dst.pick::<R>(state).await {
            Ok(pick) => Some(pick),
            Err(DstError::Fallback) => None,
            Err(error) => {
                tracing::info!(error = %error.into_proxy_error().message(), "No endpoint");
                reset(client_fd);
                return None;
            }
        };
        let endpoint = pick.as_ref().map_or(target, Pick::addr);
        let started = std::time::Instant::now();
        match R::connect(endpoint, timeout).await {
            Ok(upstream) => {
                if let Some(pick) = &pick {
                    pick.connected();
                    pick.observe_rtt(started.elapsed());
                }
                break (upstream, endpoint, pick);
            }
            Err(error) => {
                tracing::info!(dst.addr = %endpoint, %error, "Connect failed");
                match &pick {
                    Some(pick) if attempts < crate::http1::MAX_CONNECT_ATTEMPTS => {
                        pick.connect_failed();
                    }
                    _ => {
                        reset(client_fd);
                        return Some(error);
                    }
                }
            }
        }
    };
    if state.is_closing() {
        return None;
    }
    let upstream_fd = upstream.as_raw_fd();
    entry.set_upstream(upstream_fd);
    let dst_metrics = state.tcp_open(Direction::Outbound, Peer::Dst, endpoint);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    let shut = [Cell::new(false), Cell::new(false)];
    let (sent, received) = crate::join::join(
        copy(
            state,
            (&mut client_rx, &mut upstream_tx),
            [client_fd, upstream_fd],
            [&src.read_bytes, &dst_metrics.write_bytes],
            [&shut[0], &shut[1]],
        ),
        copy(
            state,
            (&mut upstream_rx, &mut client_tx),
            [upstream_fd, client_fd],
            [&dst_metrics.read_bytes, &src.write_bytes],
            [&shut[1], &shut[0]],
        ),
    )
    .await;
    let client_error = match (&sent, &received) {
        (Err(Ended::ReadFailed(e)), _) | (_, Err(Ended::WriteFailed(e))) => {
            Some(io::Error::new(e.kind(), e.to_string()))
        }
        _ => None,
    };
    let server_error = match (&sent, &received) {
        (Err(Ended::WriteFailed(e)), _) | (_, Err(Ended::ReadFailed(e))) => Some(e),
        _ => None,
    };
    state.tcp_close(dst_metrics, server_error);
    drop(R::Stream::reunite(client_rx, client_tx));
    drop(R::Stream::reunite(upstream_rx, upstream_tx));
    client_error
}

/// What an HTTP connection is served with, whichever version it speaks.
struct Http<'a> {
    state: &'a Rc<ShardState>,
    direction: Direction,
    route: Route,
    src: &'a PeerMetrics,
    entry: &'a ConnEntry,
    phase: PhaseRx,
}

impl Http<'_> {
    /// Serves `client` as `protocol` (HTTP/1 or h2). `eager` is for HTTP/1, `stream` (an
    /// open connection to the route's target) for h2. The protocols' futures are boxed:
    /// inline, they would enlarge every connection's task, opaque ones included.
    async fn serve<R: Runtime>(
        self,
        protocol: Protocol,
        client: R::Stream,
        first: Vec<u8>,
        eager: Eager<R>,
        stream: Option<R::Stream>,
    ) -> Option<io::Error> {
        let Http {
            state,
            direction,
            route,
            src,
            entry,
            phase,
        } = self;
        match protocol {
            Protocol::Http2 => {
                detected(state, direction, "h2");
                Box::pin(crate::h2::serve::<R>(
                    state, direction, route, client, first, stream, src, phase,
                ))
                .await
            }
            _ => {
                detected(state, direction, "http/1");
                Box::pin(crate::http1::serve::<R>(
                    state, direction, route, client, first, eager, src, entry,
                ))
                .await
            }
        }
    }
}

/// After the connection to `target` failed: if the client has already sent an HTTP/1
/// request (or sends one within [`DETECT_AFTER_CONNECT_FAILURE`]), the bytes read and the
/// failure to answer it with; otherwise `None`, and the caller resets the client.
async fn connect_failed<R: Runtime>(
    state: &ShardState,
    direction: Direction,
    client: &mut R::Stream,
    target: SocketAddr,
    error: io::Error,
) -> Option<(Protocol, Vec<u8>, Eager<R>)> {
    let opaque_port = direction == Direction::Inbound
        && state.settings.inbound_opaque_ports.contains(target.port());
    if opaque_port {
        return None;
    }
    match sniff::<R>(client, None, DETECT_AFTER_CONNECT_FAILURE).await {
        Ok((Sniffed::Protocol(Protocol::Http2), first)) => {
            Some((Protocol::Http2, first, Eager::None))
        }
        Ok((Sniffed::Protocol(Protocol::Http1), first)) => {
            let timeout = state.settings.connect_timeout(direction);
            let failure = if error.kind() == io::ErrorKind::TimedOut {
                ProxyError::ConnectTimeout(timeout)
            } else {
                ProxyError::Connect(error)
            };
            Some((Protocol::Http1, first, Eager::Failed(target, failure)))
        }
        _ => None,
    }
}

/// Records what detection decided: in the connection's span and in
/// `protocol_detect_total`.
fn detected(state: &ShardState, direction: Direction, protocol: &'static str) {
    tracing::Span::current().record("protocol", protocol);
    if state.settings.metrics_recording {
        state.tcp.detected(direction, protocol);
    }
}

/// Where a connection goes, or `None` (logged) when it must be refused.
fn destination(state: &ShardState, direction: Direction, fd: RawFd) -> Option<Dest> {
    let local = match sys::local_addr(fd) {
        Ok(local) => local,
        Err(error) => {
            tracing::info!(%error, "Connection lost before it was served");
            return None;
        }
    };
    let orig_dst = match state.orig_dst.original_dst(fd, local) {
        Ok(addr) => addr,
        Err(error) => {
            tracing::warn!(%error, "No original destination");
            return None;
        }
    };
    if state.is_own_listener(orig_dst, local) {
        if direction == Direction::Outbound {
            return Some(Dest::Proxy(local));
        }
        tracing::warn!(
            dst.addr = %orig_dst,
            "Refusing a connection whose original destination is the proxy itself (routing loop)"
        );
        return None;
    }
    Some(Dest::Target(match direction {
        Direction::Outbound => orig_dst,
        // Inbound traffic goes to the application in this pod, on the port it was sent to.
        Direction::Inbound => {
            let loopback = match orig_dst.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            SocketAddr::new(loopback, orig_dst.port())
        }
    }))
}

/// Copies `src` to `dst` until the end of `src` or an error, counting bytes read from `src`
/// and written to `dst`. `fds` is `[src, dst]`.
///
/// `shut` is `[src, dst]`: whether the proxy has shut down that socket's write side (each
/// direction sets the one it shuts, the other reads it).
pub async fn copy(
    state: &ShardState,
    (src, dst): (&mut impl Reader, &mut impl Writer),
    fds: [RawFd; 2],
    [read_bytes, write_bytes]: [&IntCounter; 2],
    shut: [&Cell<bool>; 2],
) -> Result<u64, Ended> {
    let mut buf = Vec::with_capacity(SMALL_BUFFER);
    let mut total = 0u64;
    let ended = loop {
        let (read, returned) = src.read(buf).await;
        buf = returned;
        let n = match read {
            // A reset reports its error to one operation only, and a readiness probe that
            // lost a race (glommio's MSG_PEEK, cancelled but already in flight) may have
            // taken it: then the read sees end of stream. The socket's state tells: closed
            // (not CLOSE_WAIT) while the proxy never sent it a FIN means it was reset.
            Ok(0) if !shut[0].get() && sys::was_reset(fds[0]) => {
                break Ended::ReadFailed(io::ErrorKind::ConnectionReset.into());
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
        if filled && buf.capacity() < LARGE_BUFFER {
            buf = state.take_buffer();
        } else if n < SMALL_BUFFER && buf.capacity() >= LARGE_BUFFER {
            state.return_buffer(std::mem::replace(
                &mut buf,
                Vec::with_capacity(SMALL_BUFFER),
            ));
        }
    };
    state.return_buffer(buf);
    match ended {
        Ended::Eof => Ok(total),
        Ended::ReadFailed(error) => {
            // The source failed: reset the destination, and wake the other direction, which
            // reads from the destination.
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
fn abort(victim: RawFd, failed: RawFd) {
    let _ = sys::set_linger_zero(victim);
    let _ = sys::shutdown(victim, Shutdown::Read);
    let _ = sys::shutdown(failed, Shutdown::Both);
}

/// Makes the client's socket close with a reset when its task drops it.
fn reset(fd: RawFd) {
    let _ = sys::set_linger_zero(fd);
}
