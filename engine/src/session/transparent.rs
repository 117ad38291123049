//! A connection redirected to its original destination, either direction: find out what it
//! speaks without delaying server-first protocols, then hand it to HTTP or forward it as
//! opaque TCP.
//!
//! 1. An idle pooled HTTP/1 connection to the target means it speaks HTTP: detect without a
//!    new connection, and serve the first request on the pooled one.
//! 2. Otherwise connect first (eagerly), then detect, racing the client, the server and the
//!    detect timeout ([`detect::sniff`]). A connect failure still answers an HTTP client
//!    with 502/504 ([`detect::after_connect_failure`]).
//! 3. Inbound, a TLS ClientHello for this proxy's identity is terminated ([`tls`]) and what
//!    it carries is detected in turn; TLS for any other name passes through as opaque.
//! 4. HTTP goes to [`http::serve`] with the connection detection left; anything else is
//!    forwarded ([`opaque::forward`]), the bytes read replayed first.
//!
//! The client's TCP series is opened once its TLS status is known, and returned for the
//! caller to close.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use ringlink_protocols::Protocol;

use super::detect::{self, Sniffed};
use super::then::Then;
use super::{authz, opaque, tls};
use crate::conn::{ConnMeta, Direction, TlsStatus};
use crate::ctx::ShardCtx;
use crate::http::{self, Client, Preconnected};
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::Runtime;
use crate::telemetry::{Detected, Peer, PeerMetrics};

// === functions ===

/// Serves a connection to `target` up to the part that lasts (its HTTP server or its
/// opaque forwarding). The client's series, opened once its TLS status is known, is left in
/// `slot`.
///
/// (A plain function returning its future, here and in the path's other steps: an `async
/// fn` keeps a second copy of its arguments in its state, which is part of every
/// connection's task for the connection's whole life.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn serve<'a, R: Runtime>(
    ctx: &'a Rc<ShardCtx<R>>,
    meta: &'a mut ConnMeta,
    target: SocketAddr,
    mut client: Transport<R>,
    entry: &'a ConnEntry,
    slot: &'a mut Option<PeerMetrics>,
) -> impl Future<Output = Then<'a>> + 'a {
    async move {
        let direction = meta.direction;
        // An inbound port's policy may set its own (`Detect{timeout}`).
        let detect_timeout = meta
            .policy
            .as_ref()
            .and_then(|policy| policy.protocol.detect_timeout())
            .unwrap_or_else(|| ctx.settings.detect_timeout.get(direction));
        let open = |meta: &ConnMeta| ctx.tcp.open(direction, Peer::Src, target, &meta.tls);
        let mut sniffed = None;
        if let Some(pooled) = ctx.pool.take(target) {
            // Detection's state is boxed (as is the connect below): inline, it would enlarge
            // the prelude's block for every connection.
            match Box::pin(detect::sniff::<R>(&mut client, None, detect_timeout)).await {
                Ok((found, first)) if found.http().is_some() => {
                    let version = found.http().expect("checked");
                    let src = &*slot.insert(open(meta));
                    let client = to_http(meta, client, first, src, entry);
                    let pre = Preconnected::Pooled(pooled);
                    return Then::Run(http::serve(ctx, version, client, pre));
                }
                Ok(found) => {
                    ctx.pool.put(pooled);
                    sniffed = Some(found);
                }
                Err(error) => {
                    ctx.pool.put(pooled);
                    *slot = Some(open(meta));
                    return Then::Done(Some(error));
                }
            }
        }
        let timeout = ctx.settings.connect_timeout.get(direction);
        let dial = (&ctx.settings.sockets, direction);
        let upstream = match Box::pin(crate::upstream::connect::<R>(target, timeout, dial)).await {
            Ok(upstream) => upstream,
            Err(failure) => {
                let src = &*slot.insert(open(meta));
                let late = Box::pin(detect::after_connect_failure::<R>(&mut client, failure)).await;
                let Some((version, first, failure)) = late else {
                    crate::io::reset(client.as_raw_fd());
                    return Then::Done(None);
                };
                let pre = match failure {
                    Some(failure) => Preconnected::Failed(target, failure),
                    None => Preconnected::None,
                };
                let client = to_http(meta, client, first, src, entry);
                return Then::Run(http::serve(ctx, version, client, pre));
            }
        };
        if ctx.life.is_closing() {
            *slot = Some(open(meta));
            return Then::Done(None);
        }
        entry.set_upstream(upstream.as_raw_fd());
        let (mut found, mut first) = match sniffed {
            Some(found) => found,
            None => match Box::pin(detect::sniff::<R>(
                &mut client,
                Some(&upstream),
                detect_timeout,
            ))
            .await
            {
                Ok(found) => found,
                Err(error) => {
                    tracing::debug!(%error, "Client failed during detection");
                    crate::io::abort(upstream.as_raw_fd(), client.as_raw_fd());
                    *slot = Some(open(meta));
                    return Then::Done(Some(error));
                }
            },
        };
        if let Sniffed::Protocol(Protocol::Tls { sni: Some(sni) }) = &found {
            if direction == Direction::Inbound && tls::is_ours(ctx, sni) {
                // Boxed: inline, the handshake's state would enlarge every connection's task.
                match Box::pin(terminate(ctx, meta, client, first, &upstream)).await {
                    Ok((tls_client, inner, inner_first)) => {
                        client = tls_client;
                        found = inner;
                        first = inner_first;
                    }
                    Err(error) => {
                        // The client's socket went with the handshake; the application's
                        // connection closes unused.
                        tracing::info!(%error, "Mesh TLS refused");
                        *slot = Some(open(meta));
                        return Then::Done(None);
                    }
                }
            } else {
                tracing::debug!(tls.sni = %sni, "TLS for another name: passed through");
            }
        }
        let src = &*slot.insert(open(meta));
        if let Some(version) = http_version(meta, &found) {
            // The eagerly opened connection serves the first request (HTTP/1) or carries the
            // multiplexed upstream connection (h2).
            let pre = Preconnected::Open(target, upstream);
            let client = to_http(meta, client, first, src, entry);
            return Then::Run(http::serve(ctx, version, client, pre));
        }
        ctx.detected(direction, found.detected());
        let fds = (client.as_raw_fd(), upstream.as_raw_fd());
        // Under a policy: authorized before anything is forwarded, and checked again from
        // the policy version read before that check (`authz::guarded`).
        let since = match &meta.policy {
            Some(policy) => {
                let since = authz::since(ctx, target);
                if !authz::connection(ctx, meta, target, policy) {
                    crate::io::abort(fds.1, fds.0);
                    return Then::Done(None);
                }
                Some(since)
            }
            None => None,
        };
        let forward = opaque::forward(
            ctx,
            direction,
            (client, src, entry),
            (upstream, target),
            first,
        );
        let Some(relay) = Box::pin(forward).await else {
            return Then::Done(None);
        };
        match since {
            None => Then::run(relay),
            Some(since) => {
                let meta: &'a ConnMeta = meta;
                Then::run(authz::guarded(ctx, meta, target, fds, since, relay))
            }
        }
    }
}

/// The HTTP version a connection is served as: what detection found, unless the inbound
/// port's policy says what the port speaks (linkerd2-proxy's `linkerd/app/inbound/src/
/// detect.rs`): an `Http1` server's plaintext connections are HTTP/1 whatever their bytes
/// (meshed ones are still detected: a peer proxy may carry HTTP/2), an `Http2` or `Grpc`
/// server's are HTTP/2. TLS passed through stays opaque.
fn http_version(meta: &ConnMeta, found: &Sniffed) -> Option<http::Version> {
    use ringlink_control::policy::inbound::Protocol as Server;
    if matches!(found, Sniffed::Protocol(Protocol::Tls { .. })) {
        return None;
    }
    let meshed = matches!(meta.tls, TlsStatus::Established { .. });
    let declared = match meta.policy.as_deref().map(|p| &p.protocol) {
        Some(Server::Http1(_)) if !meshed => Some(http::Version::Http1),
        Some(Server::Http2(_) | Server::Grpc(_)) => Some(http::Version::H2),
        _ => None,
    };
    declared.or_else(|| found.http())
}

/// Terminates mesh TLS on an inbound connection detected as a ClientHello for this proxy,
/// then detects what it carries. Fills in `meta.tls`.
async fn terminate<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    meta: &mut ConnMeta,
    client: Transport<R>,
    hello: Vec<u8>,
    upstream: &Transport<R>,
) -> io::Result<(Transport<R>, Sniffed, Vec<u8>)> {
    let timeout = ctx.settings.detect_timeout.get(meta.direction);
    let Some(mesh) = tls::certified(ctx, timeout).await else {
        return Err(io::Error::other("not certified yet"));
    };
    let accepted = tls::accept::<R>(mesh.server.clone(), client, hello, timeout).await?;
    let (mut client, peer) = (accepted.stream, accepted.peer);
    tracing::debug!(client.id = ?peer, "Terminated mesh TLS");
    meta.tls = TlsStatus::Established { peer };
    let (found, first) = detect::sniff::<R>(&mut client, Some(upstream), timeout).await?;
    Ok((client, found, first))
}

/// An opaque port's connection (`LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`):
/// connected and forwarded at once, without detection.
pub async fn opaque_port<'a, R: Runtime>(
    ctx: &'a Rc<ShardCtx<R>>,
    meta: &'a ConnMeta,
    target: SocketAddr,
    client: Transport<R>,
    entry: &'a ConnEntry,
    slot: &'a mut Option<PeerMetrics>,
) -> Then<'a> {
    let src = &*slot.insert(ctx.tcp.open(meta.direction, Peer::Src, target, &meta.tls));
    let since = authz::since(ctx, target);
    if let Some(policy) = meta.policy.clone() {
        if !authz::connection(ctx, meta, target, &policy) {
            crate::io::reset(client.as_raw_fd());
            return Then::Done(None);
        }
    }
    let timeout = ctx.settings.connect_timeout.get(meta.direction);
    let dial = (&ctx.settings.sockets, meta.direction);
    let upstream = match crate::upstream::connect::<R>(target, timeout, dial).await {
        Ok(upstream) => upstream,
        Err(_) => {
            crate::io::reset(client.as_raw_fd());
            return Then::Done(None);
        }
    };
    if ctx.life.is_closing() {
        return Then::Done(None);
    }
    entry.set_upstream(upstream.as_raw_fd());
    ctx.detected(meta.direction, Detected::OpaquePort);
    let fds = (client.as_raw_fd(), upstream.as_raw_fd());
    let forwarded = (client, src, entry);
    let forward = opaque::forward(
        ctx,
        meta.direction,
        forwarded,
        (upstream, target),
        Vec::new(),
    );
    let Some(relay) = forward.await else {
        return Then::Done(None);
    };
    Then::run(authz::guarded(ctx, meta, target, fds, since, relay))
}

fn to_http<'a, R: Runtime>(
    meta: &'a ConnMeta,
    stream: Transport<R>,
    first: Vec<u8>,
    metrics: &'a PeerMetrics,
    entry: &'a ConnEntry,
) -> Client<'a, R> {
    Client {
        meta,
        stream,
        first,
        metrics,
        entry,
    }
}
