//! Opaque TCP: the bytes detection read replayed upstream, then both directions relayed:
//! spliced through kernel pipes ([`io::splice`]) between plaintext sockets where the
//! runtime allows it, copied ([`io::duplex`]) otherwise; and a profiled opaque destination
//! balanced per connection (P2C, where each open connection counts as pending and the
//! connect latency is the RTT sample).

use std::future::Future;
use std::io::Error as IoError;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use futures_util::future::Either;

use crate::conn::{Direction, TlsStatus};
use crate::ctx::ShardCtx;
use crate::discover::{Dst, DstError};
use crate::error::ProxyError;
use crate::io::{self, End, Transport};
use crate::lifecycle::ConnEntry;
use crate::rt::{Runtime, Stream, Writer};
use crate::telemetry::{Peer, PeerMetrics};
use crate::upstream::{self, Target};

// === functions ===

/// Replays `first` (what detection read) to `upstream` (connected to `target`), then gives
/// the relay that forwards both directions until both end, closes the upstream's series and
/// returns the error the client failed with, if it did, for the client's. `None` if the
/// replay failed: both sockets are then aborted and the upstream's series closed.
///
/// The replay is part of the connection's prelude (`crate::session::then`), so that the
/// relay, which lasts, holds only what relaying needs.
pub async fn forward<'a, R: Runtime>(
    ctx: &'a ShardCtx<R>,
    direction: Direction,
    client: (Transport<R>, &'a PeerMetrics, &'a ConnEntry),
    (upstream, target): (Transport<R>, SocketAddr),
    first: Vec<u8>,
) -> Option<impl Future<Output = Option<IoError>> + 'a> {
    let plaintext = ctx.tcp.plaintext(direction);
    forward_to(ctx, direction, client, (upstream, target, plaintext), first).await
}

/// [`forward`] to an upstream whose TLS status is `tls`.
pub async fn forward_to<'a, R: Runtime>(
    ctx: &'a ShardCtx<R>,
    direction: Direction,
    (client, src, entry): (Transport<R>, &'a PeerMetrics, &'a ConnEntry),
    (upstream, target, tls): (Transport<R>, SocketAddr, &TlsStatus),
    first: Vec<u8>,
) -> Option<impl Future<Output = Option<IoError>> + 'a> {
    let (client_fd, upstream_fd) = (client.as_raw_fd(), upstream.as_raw_fd());
    let dst = ctx.tcp.open(direction, Peer::Dst, target, tls);
    match replay::<R>(upstream, first, src, &dst).await {
        Ok(upstream) => Some(relay(ctx, (client, src, entry), (upstream, dst))),
        Err(error) => {
            tracing::debug!(%error, "Write failed");
            io::abort(client_fd, upstream_fd);
            ctx.tcp.close(dst, Some(&error));
            None
        }
    }
}

/// Writes `first` (the bytes detection read from the client) to `upstream` before anything
/// else; the stream back, or the error writing failed with.
async fn replay<R: Runtime>(
    upstream: Transport<R>,
    first: Vec<u8>,
    src: &PeerMetrics,
    dst: &PeerMetrics,
) -> Result<Transport<R>, IoError> {
    if first.is_empty() {
        return Ok(upstream);
    }
    let n = first.len() as u64;
    src.read_bytes.inc_by(n);
    let (upstream_rx, mut upstream_tx) = upstream.into_split();
    let (written, _) = upstream_tx.write_all(first).await;
    let upstream = Transport::<R>::reunite(upstream_rx, upstream_tx)
        .expect("the halves of one stream reunite");
    written.map(|()| {
        dst.write_bytes.inc_by(n);
        upstream
    })
}

/// Relays both directions until both end, then closes the upstream's series (`dst`):
/// spliced through kernel pipes when both streams are plaintext TCP of a runtime that can
/// wait for write readiness (and `RINGLINK_L4_SPLICE` is on), copied through buffers
/// otherwise. Returns the error the client failed with, if it did.
///
/// Not an `async fn`: the choice is made before the future exists, so the future holds each
/// stream once (an `async fn` would also keep the streams it matched on).
fn relay<'a, R: Runtime>(
    ctx: &'a ShardCtx<R>,
    (client, src, entry): (Transport<R>, &'a PeerMetrics, &'a ConnEntry),
    (upstream, dst): (Transport<R>, PeerMetrics),
) -> impl Future<Output = Option<IoError>> + 'a {
    let (client_fd, upstream_fd) = (client.as_raw_fd(), upstream.as_raw_fd());
    let spliced = <R::Stream as Stream>::READINESS && ctx.settings.l4_splice;
    match (client, upstream) {
        (Transport::Plain(client), Transport::Plain(upstream))
            if spliced && io::splice::prepare([client_fd, upstream_fd]) =>
        {
            Either::Left(splice(ctx, (client, src), (upstream, dst)))
        }
        // Boxed: inline, the copy's futures would size every spliced connection's task too.
        (client, upstream) => {
            Either::Right(Box::pin(copy(ctx, (client, src, entry), (upstream, dst))))
        }
    }
}

/// [`relay`] through kernel pipes ([`io::splice::duplex`]). A plain function returning its
/// future, which holds each stream once (an `async fn` would keep its arguments twice).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn splice<'a, R: Runtime>(
    ctx: &'a ShardCtx<R>,
    (client, src): (R::Stream, &'a PeerMetrics),
    (upstream, dst): (R::Stream, PeerMetrics),
) -> impl Future<Output = Option<IoError>> + 'a {
    async move {
        let closed = io::splice::duplex(
            &ctx.pipes,
            &ctx.buffers,
            io::splice::End {
                fd: client.as_raw_fd(),
                stream: &client,
                read_bytes: &src.read_bytes,
                write_bytes: &src.write_bytes,
            },
            io::splice::End {
                fd: upstream.as_raw_fd(),
                stream: &upstream,
                read_bytes: &dst.read_bytes,
                write_bytes: &dst.write_bytes,
            },
        )
        .await;
        ctx.tcp.close(dst, closed.upstream.as_ref());
        closed.client
    }
}

/// [`relay`] through buffers ([`io::duplex`]).
async fn copy<R: Runtime>(
    ctx: &ShardCtx<R>,
    (client, src, entry): (Transport<R>, &PeerMetrics, &ConnEntry),
    (upstream, dst): (Transport<R>, PeerMetrics),
) -> Option<IoError> {
    let (client_fd, upstream_fd) = (client.as_raw_fd(), upstream.as_raw_fd());
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    let closed = io::duplex(
        &ctx.buffers,
        entry,
        End {
            rx: &mut client_rx,
            tx: &mut client_tx,
            fd: client_fd,
            read_bytes: &src.read_bytes,
            write_bytes: &src.write_bytes,
        },
        End {
            rx: &mut upstream_rx,
            tx: &mut upstream_tx,
            fd: upstream_fd,
            read_bytes: &dst.read_bytes,
            write_bytes: &dst.write_bytes,
        },
    )
    .await;
    // Whole again, so that dropping them only closes the sockets.
    drop(Transport::<R>::reunite(client_rx, client_tx));
    drop(Transport::<R>::reunite(upstream_rx, upstream_tx));
    ctx.tcp.close(dst, closed.upstream.as_ref());
    closed.client
}

/// Forwards an opaque connection to an endpoint of `dst` (or to `target` when its profile
/// names no service). An endpoint that refuses backs off and another is tried. Returns the
/// error the client failed with, if it did.
pub async fn balanced<R: Runtime>(
    ctx: &ShardCtx<R>,
    dst: &Rc<Dst>,
    orig_dst: SocketAddr,
    (client, src): (Transport<R>, &PeerMetrics),
    entry: &ConnEntry,
) -> Option<IoError> {
    let client_fd = client.as_raw_fd();
    let mut target = match dst.pick::<R>(&ctx.dsts).await {
        Ok(pick) => Target {
            addr: pick.addr(),
            dst: Some(dst.clone()),
            pick: Some(pick),
            name: Some(dst.name.clone()),
            policy: None,
        },
        Err(DstError::Fallback) => Target::addr(orig_dst),
        Err(error) => {
            tracing::info!(error = %ProxyError::from(error), "No endpoint");
            io::reset(client_fd);
            return None;
        }
    };
    let timeout = ctx.settings.connect_timeout.get(Direction::Outbound);
    let identity = (&*ctx.identity, &ctx.settings.sockets);
    let connected =
        upstream::connect_balanced::<R, _, _, _>(&ctx.dsts, &mut target, |addr, tls| {
            let started = Instant::now();
            async move {
                let tls = tls.as_deref();
                let outbound = Direction::Outbound;
                let (stream, status) =
                    upstream::connect_endpoint::<R>(identity, outbound, addr, tls, None, timeout)
                        .await?;
                Ok((stream, status, started.elapsed()))
            }
        })
        .await;
    let upstream = match connected {
        Ok((upstream, status, rtt)) => {
            if let Some(pick) = &target.pick {
                pick.observe_rtt(rtt);
            }
            (upstream, status)
        }
        Err(error) => {
            // The client did nothing wrong: it is reset, and its series closes without an
            // error.
            tracing::info!(%error, "No endpoint could be reached");
            io::reset(client_fd);
            return None;
        }
    };
    if ctx.life.is_closing() {
        return None;
    }
    entry.set_upstream(upstream.0.as_raw_fd());
    // The pick is held (counted as pending) while the connection lives.
    let _pick = target.pick;
    let (upstream, status) = upstream;
    let to = (upstream, target.addr, &status);
    match forward_to(
        ctx,
        Direction::Outbound,
        (client, src, entry),
        to,
        Vec::new(),
    )
    .await
    {
        Some(relay) => relay.await,
        None => None,
    }
}
