//! Inbound authorization of a request against its port's policy, as linkerd2-proxy's
//! `linkerd/app/inbound/src/policy/http.rs` does it: the best matching route of the server
//! (`NotFound` → 404, or gRPC `NOT_FOUND`), then the first of that route's authorizations
//! the client satisfies (none → 403 `unauthorized request on route`, or gRPC
//! `PERMISSION_DENIED`). Then the route's filters, in order: an internal error (the invalid
//! policy, an unknown filter) answers 500, a failure injector fails its share of requests
//! with its status (or gRPC code) and message, a redirect answers 3xx with `location`, and
//! request header modifiers are returned for the caller to apply. Each decision is counted
//! in Linkerd's families.

use std::net::SocketAddr;

use ringlink_control::policy::inbound::{
    GrpcFilter, HttpFilter, ModifyHeader, RequestMatch, RequestView, RouteDecision, RouteError,
};

use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::error::ProxyError;
use crate::rt::Runtime;

// === functions ===

/// Authorizes the request `view` on connection `meta` to `target`: `Ok` with the header
/// modifications to apply when it may go on (none when the connection has no policy:
/// outbound), else the error to answer it with. The
/// port's current policy applies, so that an update reaches the next request of a live
/// connection, as linkerd2-proxy's per-connection policy watch does.
pub fn request<R: Runtime>(
    ctx: &ShardCtx<R>,
    meta: &ConnMeta,
    target: SocketAddr,
    view: &RequestView<'_>,
) -> Result<Vec<ModifyHeader>, ProxyError> {
    if meta.policy.is_none() {
        return Ok(Vec::new());
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
            let modify = filters(ctx, &decision, view)?;
            let limits = &policy.local_rate_limit;
            // The buckets are the proxy's, shared by the shards with the policy.
            if let Err(limited) = limits.check(meta.tls.peer()) {
                tracing::info!(server.name = policy.meta.name(), "{limited}");
                let limit = limits.meta.as_deref();
                authz.ratelimited(target, &policy.meta, limit, limited.scope(), &meta.tls);
                return Err(ProxyError::RateLimited(limited));
            }
            Ok(modify)
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

/// Applies the matched route's filters, in order (`linkerd/app/inbound/src/policy/http.rs`,
/// `apply_http_filters` / `apply_grpc_filters`).
fn filters<R: Runtime>(
    ctx: &ShardCtx<R>,
    decision: &RouteDecision<'_>,
    view: &RequestView<'_>,
) -> Result<Vec<ModifyHeader>, ProxyError> {
    let mut modify = Vec::new();
    match decision {
        RouteDecision::Http(matched) => {
            let route_match = &matched.summary.route;
            http_filters(
                ctx,
                &matched.policy.filters,
                route_match,
                view,
                &mut modify,
                None,
            )?
        }
        RouteDecision::Grpc(matched) => grpc_filters(ctx, &matched.policy.filters, &mut modify)?,
        RouteDecision::NotFound => {}
    }
    Ok(modify)
}

/// Applies an HTTP route's `filters` in order, inbound or outbound: an internal error
/// (the invalid policy, an unknown filter) answers 500, a failure injector fails its share
/// of requests with its status and message, a redirect answers 3xx with `location`;
/// request header modifiers are pushed to `request` and response header modifiers to
/// `response` (dropped when `None`) for the caller to apply.
pub fn http_filters<R: Runtime>(
    ctx: &ShardCtx<R>,
    filters: &[HttpFilter],
    route_match: &RequestMatch,
    view: &RequestView<'_>,
    request: &mut Vec<ModifyHeader>,
    mut response: Option<&mut Vec<ModifyHeader>>,
) -> Result<(), ProxyError> {
    for filter in filters {
        match filter {
            HttpFilter::InternalError(why) => return Err(ProxyError::Policy(why)),
            HttpFilter::InjectFailure(inject) => {
                if let Some(failure) = inject.apply(ctx.policies.random()) {
                    return Err(ProxyError::Injected {
                        status: failure.status.as_u16(),
                        grpc_status: None,
                        message: failure.message.clone(),
                    });
                }
            }
            HttpFilter::Redirect(redirect) => {
                let uri = view
                    .uri()
                    .map_err(|_| ProxyError::Policy("cannot redirect the request"))?;
                match redirect.apply(&uri, route_match) {
                    Ok(Some(to)) => {
                        return Err(ProxyError::Redirect {
                            status: to.status.as_u16(),
                            location: to.location.to_string(),
                        })
                    }
                    Ok(None) => {}
                    Err(_) => return Err(ProxyError::Policy("invalid redirect")),
                }
            }
            HttpFilter::RequestHeaders(headers) => request.push(headers.clone()),
            HttpFilter::ResponseHeaders(headers) => {
                if let Some(response) = response.as_deref_mut() {
                    response.push(headers.clone());
                }
            }
        }
    }
    Ok(())
}

/// Applies a gRPC route's `filters` in order, as [`http_filters`] does (a failure answers
/// with its gRPC status).
pub fn grpc_filters<R: Runtime>(
    ctx: &ShardCtx<R>,
    filters: &[GrpcFilter],
    request: &mut Vec<ModifyHeader>,
) -> Result<(), ProxyError> {
    for filter in filters {
        match filter {
            GrpcFilter::InternalError(why) => return Err(ProxyError::Policy(why)),
            GrpcFilter::InjectFailure(inject) => {
                if let Some(failure) = inject.apply(ctx.policies.random()) {
                    return Err(ProxyError::Injected {
                        status: 200,
                        grpc_status: Some(u32::from(failure.code)),
                        message: failure.message.clone(),
                    });
                }
            }
            GrpcFilter::RequestHeaders(headers) => request.push(headers.clone()),
        }
    }
    Ok(())
}
