//! Upstream HTTP/2 connections, the client side of the proxy: the streams of every client
//! connection leave on the shard's shared connections (`upstream::h2::H2Pool`), one
//! multiplexed connection per endpoint, direction and TLS identity, made by the first
//! stream that needs it (over the connection detection opened, when it went there), shared
//! by the streams that wait meanwhile, and driven by its own shard task. So an idle client
//! connection holds no upstream connection, and the shard's streams to one endpoint share
//! one connection's reads and writes, as linkerd2-proxy's per-endpoint clients do.
//!
//! HTTP/1 requests upgraded to HTTP/2 between proxies (`l5d-orig-proto`) use the same
//! connections.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use h2::client::SendRequest;

use crate::balance::{EndpointTls, Pick};
use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::discover::DstCache;
use crate::error::ProxyError;
use crate::http::conn::{dial_h2, request_tls};
use crate::io::Transport;
use crate::rt::Runtime;
use crate::telemetry::{RequestMetrics, RouteCache, TapView};
use crate::upstream::{self, h2::H2Key, h2::Lease};

// === types ===

/// The upstream connections of one client connection, by target, and what its streams
/// share.
pub struct Upstreams<R: Runtime> {
    pub ctx: Rc<ShardCtx<R>>,
    pub meta: ConnMeta,
    /// The connection detection opened to the original destination, not yet used.
    eager: RefCell<Option<(SocketAddr, Transport<R>)>>,
    /// The HTTP metrics of the connection's last route.
    routes: RefCell<RouteCache>,
    /// The destination of the connection's last balanced stream.
    pub dst: DstCache,
}

// === impl Upstreams ===

impl<R: Runtime> Upstreams<R> {
    pub fn new(
        ctx: &Rc<ShardCtx<R>>,
        meta: &ConnMeta,
        eager: Option<(SocketAddr, Transport<R>)>,
    ) -> Self {
        // The connection detection opened is dropped at once if the shard already shares
        // one to the same endpoint: an idle client connection holds none.
        let eager = eager.filter(|(addr, _)| {
            !ctx.h2.contains(&H2Key {
                direction: meta.direction,
                addr: *addr,
                tls: None,
            })
        });
        Upstreams {
            ctx: ctx.clone(),
            meta: meta.clone(),
            eager: RefCell::new(eager),
            routes: RefCell::new(RouteCache::default()),
            dst: DstCache::default(),
        }
    }

    /// Starts the metrics of a request on this connection, to `target` (the endpoint
    /// `pick` chose, if a balancer did).
    pub fn start(
        &self,
        authority: Option<&str>,
        target: Option<SocketAddr>,
        pick: Option<&Pick>,
    ) -> RequestMetrics {
        let labels = pick.map(Pick::labels);
        let tls = request_tls(&self.ctx, &self.meta, pick);
        self.ctx.http.start_tls(
            &mut self.routes.borrow_mut(),
            self.meta.direction,
            &tls,
            authority,
            target,
            labels.as_ref(),
        )
    }

    /// Offers a request to the live taps (`linkerd viz tap`); those that take it ride on
    /// its `metrics`.
    pub fn tap(
        &self,
        metrics: &mut RequestMetrics,
        parts: &http::request::Parts,
        target: SocketAddr,
        pick: Option<&Pick>,
    ) {
        if self.ctx.taps.active().is_none() {
            return;
        }
        let labels = pick.map(Pick::labels);
        let tls = request_tls(&self.ctx, &self.meta, pick);
        let taps = self.ctx.taps.tap(&TapView {
            direction: self.meta.direction,
            client: self.meta.client,
            target,
            client_tls: &self.meta.tls,
            target_tls: &tls,
            target_labels: labels.as_ref(),
            method: parts.method.as_str(),
            scheme: parts.uri.scheme_str(),
            authority: parts.uri.authority().map(|a| a.as_str()),
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            http2: true,
            headers: &parts.headers,
        });
        metrics.tapped(taps);
    }

    /// The shard's shared h2 connection to `target` (with mesh TLS when `tls` says its
    /// proxy is meshed), and the stream's lease on it (hold it while the stream lives),
    /// made when there is none with room: over the connection detection opened, if it went
    /// to `target` in plaintext, else a new one. Streams asking meanwhile wait for the same
    /// connection.
    pub async fn get(
        &self,
        target: SocketAddr,
        tls: Option<Arc<EndpointTls>>,
    ) -> Result<(SendRequest<Bytes>, Lease), ProxyError> {
        let (ctx, direction) = (&self.ctx, self.meta.direction);
        let key = H2Key {
            direction,
            addr: target,
            tls: tls.clone(),
        };
        // Taken now: if the shard already shares a connection there, it closes unused.
        let eager = tls.is_none().then(|| self.take_eager(target)).flatten();
        ctx.h2
            .get(&key, || match eager {
                Some(stream) => {
                    let ctx = ctx.clone();
                    Box::pin(async move {
                        let status = ctx.tcp.plaintext(direction).clone();
                        upstream::h2::handshake::<R>(
                            &ctx.tcp,
                            &ctx.life,
                            direction,
                            target,
                            (stream, &status),
                        )
                        .await
                    })
                }
                None => dial_h2(ctx, direction, target, tls),
            })
            .await
    }

    /// The connection detection opened, if it went to `target` and is still unused.
    fn take_eager(&self, target: SocketAddr) -> Option<Transport<R>> {
        let mut eager = self.eager.borrow_mut();
        match eager.take() {
            Some((addr, stream)) if addr == target => Some(stream),
            other => {
                *eager = other;
                None
            }
        }
    }

    /// Stops sharing the connection to `target` that `lease` is on (one that failed under
    /// a request).
    pub fn forget(&self, target: SocketAddr, tls: Option<Arc<EndpointTls>>, lease: &Lease) {
        let key = H2Key {
            direction: self.meta.direction,
            addr: target,
            tls,
        };
        self.ctx.h2.forget(&key, lease);
    }
}
