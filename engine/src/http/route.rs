//! Where a request goes, decided once for HTTP/1 and h2: the connection's original
//! destination, the endpoint a balancer picks when the request's authority names a
//! destination, or the authority's own address when the client addressed the proxy.
//!
//! An outbound request to an original destination with an outbound policy goes where the
//! policy says ([`policy_route`]): the best matching HTTP (or gRPC) route's rule, its
//! filters (failure injection, redirect, header changes), then a backend drawn from the
//! rule's distribution, then an endpoint of that backend's balancer (or its one forward
//! address). The rule's timeouts travel with the [`Target`] ([`PolicyRoute`]).

use std::rc::Rc;
use std::sync::Arc;

use ringlink_control::policy::inbound::{find, Meta, ModifyHeader, RequestView};
use ringlink_control::policy::outbound::{
    BackendDispatcher, ClientPolicy, FailureAccrual, Retry, RouteBackend, RouteDistribution,
    RoutePolicy, Timeouts,
};
use ringlink_protocols::authority::{name_of, parse_authority};

use crate::balance::Accrual;
use crate::conn::{Direction, Route};
use crate::ctx::ShardCtx;
use crate::discover::{self, DstCache, DstError};
use crate::error::ProxyError;
use crate::http::authz;
use crate::rt::Runtime;
use crate::telemetry::RouteStatus;
use crate::upstream::Target;

// === types ===

/// What an outbound policy's route decided for a request, beyond its endpoint.
#[derive(Debug)]
pub struct PolicyRoute {
    /// The `parent_*`, `route_*` and `backend_*` resources.
    pub parent: Arc<Meta>,
    pub route: Arc<Meta>,
    pub backend: Arc<Meta>,
    pub timeouts: Timeouts,
    /// A gRPC route matched (the `outbound_grpc_route_*` families).
    pub grpc: bool,
    /// The rule's retries.
    pub retry: Option<Arc<Retry>>,
    /// Header changes for the request, from the rule's then the backend's filters.
    pub request_headers: Vec<ModifyHeader>,
    /// Header changes for the response.
    pub response_headers: Vec<ModifyHeader>,
}

/// The request as route matching sees it, and whether it is gRPC.
pub struct Request<'a> {
    pub view: RequestView<'a>,
    pub grpc: bool,
    pub http2: bool,
}

// === functions ===

/// The target of one request on a connection routed by `route`. `authority` is the
/// request's (`Host`, absolute-form URI or `:authority`); `dst_override` its
/// `l5d-dst-override`, which only requests addressed to the proxy itself may use. `cache`
/// is the connection's last destination.
pub async fn route<R: Runtime>(
    ctx: &ShardCtx<R>,
    direction: Direction,
    route: Route,
    request: &Request<'_>,
    dst_override: Option<&str>,
    cache: &DstCache,
) -> Result<Target, ProxyError> {
    let authority = request.view.authority;
    match route {
        // Inbound, a request goes to the application in this pod, whatever it names, as
        // linkerd2-proxy's inbound forwards to the local target.
        Route::Fixed(addr) if direction == Direction::Inbound => Ok(Target::addr(addr)),
        Route::Fixed(addr) if ctx.dsts.has_profile(addr) => {
            let parent = cache.parent::<R>(&ctx.dsts, direction, addr);
            parent.settle::<R>().await;
            match parent.policy() {
                Some(policy) => policy_route(ctx, &policy, addr, request, cache).await,
                None => match ctx.dsts.suffix_name(authority) {
                    Some(name) => balanced(ctx, direction, cache, &name, Some(addr)).await,
                    None => Ok(Target::addr(addr)),
                },
            }
        }
        Route::Fixed(addr) => match ctx.dsts.suffix_name(authority) {
            Some(name) => balanced(ctx, direction, cache, &name, Some(addr)).await,
            None => Ok(Target::addr(addr)),
        },
        // Direct connections are `Fixed` once their transport header is read.
        Route::Direct => Err(ProxyError::bad_request(
            400,
            "direct connection without a target",
        )),
        Route::ByAuthority => {
            let by = dst_override
                .or(authority)
                .ok_or_else(|| ProxyError::bad_request(400, "no authority to route by"))?;
            let (host, port) = parse_authority(by)
                .ok_or_else(|| ProxyError::bad_request(400, "authority is not host[:port]"))?;
            match name_of(&host, port) {
                Some(name) => balanced(ctx, direction, cache, &name, None).await,
                None => discover::dns::resolve::<R>(&ctx.dns, &host, port)
                    .await
                    .map(Target::addr)
                    .map_err(ProxyError::Resolve),
            }
        }
    }
}

/// The target the outbound `policy` gives `request` (see the module docs).
async fn policy_route<R: Runtime>(
    ctx: &ShardCtx<R>,
    policy: &Arc<ClientPolicy>,
    addr: std::net::SocketAddr,
    request: &Request<'_>,
    cache: &DstCache,
) -> Result<Target, ProxyError> {
    let mut request_headers = Vec::new();
    let mut response_headers = Vec::new();
    let view = &request.view;
    let grpc = request.grpc && policy.grpc_routes().is_some();
    // A failure the route's (or its backend's) filters answer is counted in the route's
    // statuses, as Linkerd counts it.
    let filtered = |route: &Arc<Meta>, error: ProxyError| {
        if ctx.http.is_recording() {
            let status = filtered_status(&error, grpc);
            ctx.http
                .outbound
                .filtered(&policy.parent, route, grpc, status);
        }
        error
    };
    let accrual;
    let (rule, backend) = match policy.grpc_routes().filter(|_| request.grpc) {
        Some(routes) => {
            accrual = routes.failure_accrual;
            let (_, rule) = find(&routes.routes, view).ok_or(ProxyError::RouteNotFound)?;
            authz::grpc_filters(ctx, &rule.filters, &mut request_headers)
                .map_err(|e| filtered(&rule.meta, e))?;
            let backend = draw(ctx, &rule.distribution)?;
            authz::grpc_filters(ctx, &backend.filters, &mut request_headers)
                .map_err(|e| filtered(&rule.meta, e))?;
            (RuleParts::of(rule), backend.backend.clone())
        }
        None => {
            let Some(http) = policy.http_routes(request.http2) else {
                // The policy routes no HTTP here (opaque, TLS, or gRPC routes for a
                // request that is not gRPC): to the original destination.
                return Ok(Target::addr(addr));
            };
            accrual = http.failure_accrual;
            let (matched, rule) = find(&http.routes, view).ok_or(ProxyError::RouteNotFound)?;
            let (req, resp) = (&mut request_headers, Some(&mut response_headers));
            authz::http_filters(ctx, &rule.filters, &matched.route, view, req, resp)
                .map_err(|e| filtered(&rule.meta, e))?;
            let backend = draw(ctx, &rule.distribution)?;
            let (req, resp) = (&mut request_headers, Some(&mut response_headers));
            authz::http_filters(ctx, &backend.filters, &matched.route, view, req, resp)
                .map_err(|e| filtered(&rule.meta, e))?;
            (RuleParts::of(rule), backend.backend.clone())
        }
    };
    let mut target = match &backend.dispatcher {
        BackendDispatcher::Forward(addr, _) => Target::addr(*addr),
        BackendDispatcher::Fail { message } => {
            return Err(ProxyError::Unavailable(format!(
                "backend failed: {message}"
            )))
        }
        BackendDispatcher::Balance { path, .. } => {
            let dst = cache.get::<R>(&ctx.dsts, Direction::Outbound, path);
            dst.set_queue(backend.queue.capacity, backend.queue.failfast_timeout);
            dst.set_failure_accrual(match accrual {
                FailureAccrual::None => None,
                FailureAccrual::ConsecutiveFailures {
                    max_failures,
                    backoff,
                } => Some(Accrual {
                    max_failures,
                    min_backoff: backoff.min,
                    max_backoff: backoff.max,
                    jitter: backoff.jitter,
                }),
            });
            balanced(ctx, Direction::Outbound, cache, path, None).await?
        }
    };
    target.policy = Some(Box::new(PolicyRoute {
        parent: policy.parent.clone(),
        route: rule.meta,
        backend: backend.meta.clone(),
        timeouts: rule.timeouts,
        grpc,
        retry: rule.retry,
        request_headers,
        response_headers,
    }));
    Ok(target)
}

/// The route statuses of a request a filter answered: an injected failure or a redirect by
/// its status (gRPC: its code), anything else (an invalid policy) as an `UNKNOWN` error.
fn filtered_status(error: &ProxyError, grpc: bool) -> RouteStatus {
    match error {
        ProxyError::Injected {
            grpc_status: Some(code),
            ..
        } if grpc => RouteStatus {
            code: Some(*code),
            error: None,
        },
        ProxyError::Injected { status, .. } | ProxyError::Redirect { status, .. } => RouteStatus {
            code: Some(u32::from(*status)),
            error: None,
        },
        _ => RouteStatus {
            code: None,
            error: Some("UNKNOWN"),
        },
    }
}

/// What a matched rule passes on, whichever its filter type.
struct RuleParts {
    meta: Arc<Meta>,
    timeouts: Timeouts,
    retry: Option<Arc<Retry>>,
}

impl RuleParts {
    fn of<F>(rule: &RoutePolicy<F>) -> Self {
        RuleParts {
            meta: rule.meta.clone(),
            timeouts: rule.timeouts,
            retry: rule.retry.clone(),
        }
    }
}

/// The backend a rule's distribution gives a request: the first one
/// (`first_available`), or one drawn by weight (`random_available`).
fn draw<'d, R: Runtime, F>(
    ctx: &ShardCtx<R>,
    distribution: &'d RouteDistribution<F>,
) -> Result<&'d RouteBackend<F>, ProxyError> {
    let none = || ProxyError::Unavailable("the route has no backends".to_string());
    match distribution {
        RouteDistribution::Empty => Err(none()),
        RouteDistribution::FirstAvailable(backends) => backends.first().ok_or_else(none),
        RouteDistribution::RandomAvailable(backends) => {
            let total: u64 = backends.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 {
                return Err(none());
            }
            let mut at = ctx.policies.random() % total;
            for (backend, weight) in backends.iter() {
                let weight = u64::from(*weight);
                if at < weight {
                    return Ok(backend);
                }
                at -= weight;
            }
            Err(none())
        }
    }
}

/// An endpoint of destination `name`, or, when discovery refused the name, `fallback` (the
/// original destination) or else the name's own DNS addresses.
async fn balanced<R: Runtime>(
    ctx: &ShardCtx<R>,
    direction: Direction,
    cache: &DstCache,
    name: &str,
    fallback: Option<std::net::SocketAddr>,
) -> Result<Target, ProxyError> {
    let dst = cache.get::<R>(&ctx.dsts, direction, name);
    let name: Rc<str> = dst.name.clone();
    match dst.pick::<R>(&ctx.dsts).await {
        Ok(pick) => Ok(Target {
            addr: pick.addr(),
            dst: Some(dst),
            pick: Some(pick),
            name: Some(name),
            policy: None,
        }),
        Err(DstError::Fallback) => {
            let addr = match fallback {
                Some(addr) => addr,
                None => discover::fallback_addr::<R>(&ctx.dns, &name)
                    .await
                    .map_err(ProxyError::Resolve)?,
            };
            Ok(Target {
                addr,
                dst: None,
                pick: None,
                name: Some(name),
                policy: None,
            })
        }
        Err(error) => Err(error.into()),
    }
}

// === impl PolicyRoute ===

impl PolicyRoute {
    /// Records `metrics`' request in the route families too.
    pub fn record<R: Runtime>(
        &self,
        ctx: &ShardCtx<R>,
        metrics: &mut crate::telemetry::RequestMetrics,
    ) {
        let outbound = &ctx.http.outbound;
        metrics.routed(|| outbound.start(&self.parent, &self.route, &self.backend, self.grpc));
    }
}
