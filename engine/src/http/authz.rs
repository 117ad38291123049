//! Inbound authorization of a request against its port's policy, as linkerd2-proxy's
//! `linkerd/app/inbound/src/policy/http.rs` does it: the best matching route of the server
//! (`NotFound` → 404, or gRPC `NOT_FOUND`), then the first of that route's authorizations
//! the client satisfies (none → 403 `unauthorized request on route`, or gRPC
//! `PERMISSION_DENIED`); a route whose filter is an internal error (the invalid policy, an
//! unknown filter) answers 500. Each decision is counted in Linkerd's families.

use std::net::SocketAddr;

use ringlink_control::policy::inbound::{HttpFilter, RequestView, RouteDecision, RouteError};

use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::error::ProxyError;
use crate::rt::Runtime;

// === functions ===

/// Authorizes the request `view` on connection `meta` to `target`: `Ok` when it may go
/// on (or the connection has no policy: outbound), else the error to answer it with. The
/// port's current policy applies, so that an update reaches the next request of a live
/// connection, as linkerd2-proxy's per-connection policy watch does.
pub fn request<R: Runtime>(
    ctx: &ShardCtx<R>,
    meta: &ConnMeta,
    target: SocketAddr,
    view: &RequestView<'_>,
) -> Result<(), ProxyError> {
    if meta.policy.is_none() {
        return Ok(());
    }
    let policy = ctx.policies.get::<R>(target.port(), &ctx.life);
    let decision = policy.route_request(view);
    let authz = &ctx.http.authz;
    match decision.authorize(meta.client.ip(), meta.tls.client_tls()) {
        Ok(authorization) => {
            let route = decision.meta().expect("an authorized request has a route");
            if authorization.meta.is_audit() {
                tracing::info!(
                    server.name = policy.meta.name(),
                    route.name = route.name(),
                    client.addr = %meta.client,
                    client.id = ?meta.tls.peer(),
                    "Request allowed"
                );
            }
            authz.http_allow(target, &policy.meta, route, &authorization.meta, &meta.tls);
            if let RouteDecision::Http(matched) = &decision {
                for filter in &matched.policy.filters {
                    if let HttpFilter::InternalError(why) = filter {
                        return Err(ProxyError::Policy(why));
                    }
                }
            }
            Ok(())
        }
        Err(RouteError::NotFound(_)) => {
            tracing::info!(
                server.name = policy.meta.name(),
                "No route found for request"
            );
            authz.route_not_found(target, &policy.meta, &meta.tls);
            Err(ProxyError::RouteNotFound)
        }
        Err(RouteError::Unauthorized(_)) => {
            let route = decision.meta().expect("a denied request has a route");
            tracing::info!(
                server.name = policy.meta.name(),
                route.name = route.name(),
                client.addr = %meta.client,
                client.id = ?meta.tls.peer(),
                "Request denied"
            );
            authz.http_deny(target, &policy.meta, route, &meta.tls);
            Err(ProxyError::Unauthorized)
        }
    }
}
