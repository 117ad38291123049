//! A connection redirected to its original destination, either direction: find out what it
//! speaks without delaying server-first protocols, then hand it to HTTP or forward it as
//! opaque TCP.
//!
//! 1. An idle pooled HTTP/1 connection to the target means it speaks HTTP: detect without a
//!    new connection, and serve the first request on the pooled one.
//! 2. Otherwise connect first (eagerly), then detect, racing the client, the server and the
//!    detect timeout ([`detect::sniff`]). A connect failure still answers an HTTP client
//!    with 502/504 ([`detect::after_connect_failure`]).
//! 3. HTTP goes to [`http::serve`] with the connection detection left; anything else is
//!    forwarded ([`opaque::forward`]), the bytes read replayed first.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use ringlink_protocols::Protocol;

use super::{detect, opaque};
use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::error::ProxyError;
use crate::http::{self, Client, Preconnected};
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::Runtime;
use crate::telemetry::{Detected, PeerMetrics};

// === functions ===

/// Serves a connection to `target` to its end; the error the client failed with, if any.
pub async fn serve<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    meta: &ConnMeta,
    target: SocketAddr,
    mut client: Transport<R>,
    src: &PeerMetrics,
    entry: &ConnEntry,
) -> Option<io::Error> {
    let direction = meta.direction;
    let detect_timeout = ctx.settings.detect_timeout.get(direction);
    let to_http = |stream, first| Client {
        meta,
        stream,
        first,
        metrics: src,
        entry,
    };
    let mut replay = None;
    if let Some(pooled) = ctx.pool.take(target) {
        let (sniffed, first) = match detect::sniff::<R>(&mut client, None, detect_timeout).await {
            Ok(sniffed) => sniffed,
            Err(error) => {
                ctx.pool.put(pooled);
                return Some(error);
            }
        };
        if let Some(version) = sniffed.http() {
            let pre = Preconnected::Pooled(pooled);
            return http::serve(ctx, version, to_http(client, first), pre).await;
        }
        ctx.pool.put(pooled);
        ctx.detected(direction, sniffed.detected());
        replay = Some(first);
    }
    let timeout = ctx.settings.connect_timeout.get(direction);
    let upstream = match R::connect(target, timeout).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::info!(%error, "Connect failed");
            let failure = ProxyError::connect(error, timeout);
            let late = detect::after_connect_failure::<R>(&mut client, failure).await;
            let Some((version, first, failure)) = late else {
                crate::io::reset(client.as_raw_fd());
                return None;
            };
            let pre = match failure {
                Some(failure) => Preconnected::Failed(target, failure),
                None => Preconnected::None,
            };
            return http::serve(ctx, version, to_http(client, first), pre).await;
        }
    };
    if ctx.life.is_closing() {
        return None;
    }
    entry.set_upstream(upstream.as_raw_fd());
    let first = match replay {
        Some(first) => first,
        None => {
            let sniffed = detect::sniff::<R>(&mut client, Some(&upstream), detect_timeout).await;
            let (sniffed, first) = match sniffed {
                Ok(sniffed) => sniffed,
                Err(error) => {
                    tracing::debug!(%error, "Client failed during detection");
                    crate::io::abort(upstream.as_raw_fd(), client.as_raw_fd());
                    return Some(error);
                }
            };
            if let Some(version) = sniffed.http() {
                // The eagerly opened connection serves the first request (HTTP/1) or
                // carries the multiplexed upstream connection (h2).
                let pre = Preconnected::Open(target, upstream);
                return http::serve(ctx, version, to_http(client, first), pre).await;
            }
            ctx.detected(direction, sniffed.detected());
            if let detect::Sniffed::Protocol(Protocol::Tls { sni: Some(sni) }) = &sniffed {
                tracing::debug!(tls.sni = %sni, "TLS ClientHello");
            }
            first
        }
    };
    opaque::forward(ctx, direction, (client, src), (upstream, target), first).await
}

/// An opaque port's connection (`LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`):
/// connected and forwarded at once, without detection.
pub async fn opaque_port<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    meta: &ConnMeta,
    target: SocketAddr,
    client: Transport<R>,
    src: &PeerMetrics,
    entry: &ConnEntry,
) -> Option<io::Error> {
    let timeout = ctx.settings.connect_timeout.get(meta.direction);
    let upstream = match R::connect(target, timeout).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::info!(%error, "Connect failed");
            crate::io::reset(client.as_raw_fd());
            return None;
        }
    };
    if ctx.life.is_closing() {
        return None;
    }
    entry.set_upstream(upstream.as_raw_fd());
    ctx.detected(meta.direction, Detected::OpaquePort);
    let client = (client, src);
    opaque::forward(ctx, meta.direction, client, (upstream, target), Vec::new()).await
}
