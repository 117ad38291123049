//! Upstream HTTP/2 connections, the client side of the proxy: one multiplexed connection per
//! target and client connection, made by the first stream that needs it (or taken from the
//! connection detection opened), shared by the streams that wait meanwhile, and driven by
//! its own shard task.
//!
//! HTTP/1 requests upgraded to HTTP/2 between proxies (`l5d-orig-proto`) leave on the
//! shard's shared connections instead (`upstream::h2::H2Pool`): an HTTP/1 client
//! connection carries one request at a time, and would not fill a connection of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{FutureExt, Shared};
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
use crate::upstream::{self, h2::Connecting};

// === types ===

/// The upstream connections of one client connection, by target, and what its streams
/// share.
pub struct Upstreams<R: Runtime> {
    pub ctx: Rc<ShardCtx<R>>,
    pub meta: ConnMeta,
    by_target: RefCell<HashMap<SocketAddr, Shared<Connecting>>>,
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
        Upstreams {
            ctx: ctx.clone(),
            meta: meta.clone(),
            by_target: RefCell::new(HashMap::new()),
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

    /// The h2 connection to `target` (with mesh TLS when `tls` says its proxy is meshed).
    /// The first stream to ask connects (or uses the eager connection); streams asking
    /// meanwhile wait for the same connection.
    pub async fn get(
        &self,
        target: SocketAddr,
        tls: Option<Arc<EndpointTls>>,
    ) -> Result<SendRequest<Bytes>, ProxyError> {
        // A meshed endpoint's connection is the shard's, shared by every client connection:
        // one mesh TLS handshake per endpoint and shard, not per client connection.
        if tls.is_some() {
            let (ctx, direction) = (&self.ctx, self.meta.direction);
            return ctx
                .h2
                .get(target, || dial_h2(ctx, direction, target, tls))
                .await;
        }
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
                let direction = self.meta.direction;
                let connecting: Connecting = match eager {
                    Some(stream) => {
                        let ctx = self.ctx.clone();
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
                    None => dial_h2(&self.ctx, direction, target, None),
                };
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

    pub fn forget(&self, target: SocketAddr) {
        self.by_target.borrow_mut().remove(&target);
    }
}
