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
    BackendDispatcher, Backoff, ClientPolicy, FailureAccrual, Retry, RetryConditions, RouteBackend,
    RouteDistribution, RoutePolicy, Timeouts,
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
use crate::upstream::{PolicyRoute, Target};

// === types ===

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
            // In use while requests are routed by it, even when it is never picked from.
            parent.touch();
            parent.settle::<R>().await;
            if let Some(profile) = parent.profile() {
                return profile_route(ctx, &parent, profile, addr, request, cache).await;
            }
            match parent.policy() {
                Some(policy) => policy_route(ctx, &policy, addr, request, cache).await,
                None => match ctx.dsts.suffix_name(authority) {
                    Some(name) => balanced(ctx, direction, cache, &name, Some(addr)).await,
                    // The profile's service (or its one endpoint), as linkerd2-proxy
                    // balances a profiled address; else the address itself.
                    None => parent_target::<R>(ctx, &parent, addr).await,
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
            let (matched, rule) = http.find(view).ok_or(ProxyError::RouteNotFound)?;
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
    let mut rule = rule;
    if rule.allow_l5d_request_headers {
        l5d_overrides(view, grpc, &mut rule, &mut request_headers);
    }
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
        budget: None,
        record: true,
        request_headers,
        response_headers,
    }));
    Ok(target)
}

/// The `l5d-*` request headers a rule that allows them reads (`extensions.rs` in
/// linkerd2-proxy's outbound policy routes), removed from the request.
const L5D_HEADERS: [&str; 7] = [
    "l5d-retry-http",
    "l5d-retry-grpc",
    "l5d-retry-limit",
    "l5d-retry-timeout",
    "l5d-timeout",
    "l5d-request-timeout",
    "l5d-response-timeout",
];

/// Applies the request's `l5d-*` overrides to the rule's timeouts and retries, as
/// linkerd2-proxy does: `l5d-timeout` / `l5d-request-timeout` and `l5d-response-timeout`
/// replace the timeouts; `l5d-retry-http` (`5xx`, `gateway-error`, codes and ranges),
/// `l5d-retry-grpc` (`cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`,
/// `unavailable`), `l5d-retry-limit` and `l5d-retry-timeout` replace the retry's; a rule
/// without retries gets one from the headers (1 retry, 64 KiB, 25–250 ms backoff).
fn l5d_overrides(
    view: &RequestView<'_>,
    grpc: bool,
    rule: &mut RuleParts,
    request_headers: &mut Vec<ModifyHeader>,
) {
    let value = |name: &'static str| -> Option<String> {
        let name = http::HeaderName::from_static(name);
        let mut found = None;
        view.headers.any_value(&name, &mut |v| {
            found = std::str::from_utf8(v).ok().map(str::to_string);
            true
        });
        found
    };
    let [http, grpc_codes, limit, retry_timeout, timeout, request_timeout, response_timeout] =
        L5D_HEADERS.map(value);
    if [
        &http,
        &grpc_codes,
        &limit,
        &retry_timeout,
        &timeout,
        &request_timeout,
        &response_timeout,
    ]
    .iter()
    .all(|v| v.is_none())
    {
        return;
    }
    request_headers.push(ModifyHeader {
        remove: L5D_HEADERS
            .iter()
            .map(|n| http::HeaderName::from_static(n))
            .collect(),
        ..ModifyHeader::default()
    });
    if let Some(t) = timeout
        .or(request_timeout)
        .as_deref()
        .and_then(parse_l5d_duration)
    {
        rule.timeouts.request = Some(t);
    }
    if let Some(t) = response_timeout.as_deref().and_then(parse_l5d_duration) {
        rule.timeouts.response = Some(t);
    }
    let conditions = if grpc {
        grpc_codes.as_deref().map(parse_grpc_conditions)
    } else {
        http.as_deref().map(parse_http_conditions)
    };
    let limit = limit.and_then(|v| v.trim().parse::<u32>().ok());
    let retry_timeout = retry_timeout.as_deref().and_then(parse_l5d_duration);
    let retry = match &rule.retry {
        Some(retry) => Retry {
            max_retries: limit.unwrap_or(retry.max_retries),
            conditions: conditions.unwrap_or_else(|| retry.conditions.clone()),
            timeout: retry_timeout.or(retry.timeout),
            ..Retry::clone(retry)
        },
        None if conditions.is_none() && limit.is_none() && retry_timeout.is_none() => return,
        None => Retry {
            max_retries: limit.unwrap_or(1),
            max_request_bytes: 64 * 1024,
            conditions: conditions.unwrap_or(if grpc {
                RetryConditions::Grpc(Vec::new())
            } else {
                RetryConditions::Http(Vec::new())
            }),
            timeout: retry_timeout,
            backoff: Some(Backoff {
                min: std::time::Duration::from_millis(25),
                max: std::time::Duration::from_millis(250),
                jitter: 1.0,
            }),
        },
    };
    rule.retry = Some(Arc::new(retry));
}

/// `5xx`, `gateway-error` (502–504), a code or a `start-end` range, comma-separated; others
/// ignored.
fn parse_http_conditions(s: &str) -> RetryConditions {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..600).contains(c))
    };
    RetryConditions::Http(
        s.split(',')
            .filter_map(|c| {
                let c = c.trim();
                if c.eq_ignore_ascii_case("5xx") {
                    return Some((500, 599));
                }
                if c.eq_ignore_ascii_case("gateway-error") {
                    return Some((502, 504));
                }
                if let Some(code) = code(c) {
                    return Some((code, code));
                }
                let (start, end) = c.split_once('-')?;
                let (start, end) = (code(start)?, code(end)?);
                (start <= end).then_some((start, end))
            })
            .collect(),
    )
}

fn parse_grpc_conditions(s: &str) -> RetryConditions {
    RetryConditions::Grpc(
        s.split(',')
            .filter_map(|c| match c.trim().to_ascii_lowercase().as_str() {
                "cancelled" => Some(1),
                "deadline-exceeded" => Some(4),
                "resource-exhausted" => Some(8),
                "internal" => Some(13),
                "unavailable" => Some(14),
                _ => None,
            })
            .collect(),
    )
}

/// `0`, or digits with `ms`, `s`, `m`, `h` or `d` (the policy controller's durations).
fn parse_l5d_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let at = s.rfind(|c: char| c.is_ascii_digit())? + 1;
    let (magnitude, unit) = s.split_at(at);
    let magnitude = magnitude.parse::<u64>().ok()?;
    let ms: u64 = match unit {
        "" if magnitude == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(magnitude.checked_mul(ms)?))
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

/// The target a ServiceProfile with routes or overrides gives `request`: its first
/// matching route's timeout and (within the profile's budget) retries, to an authority of
/// `dst_overrides` drawn by weight, or else to the destination's own endpoints.
async fn profile_route<R: Runtime>(
    ctx: &ShardCtx<R>,
    parent: &Rc<crate::discover::Dst>,
    (profile, budget): (
        Arc<ringlink_control::profile::ProfileRouting>,
        Option<Rc<crate::discover::Budget>>,
    ),
    addr: std::net::SocketAddr,
    request: &Request<'_>,
    cache: &DstCache,
) -> Result<Target, ProxyError> {
    let route = profile.route(request.view.method, request.view.path());
    if let Some(budget) = &budget {
        budget.deposit();
    }
    let total: u64 = profile
        .dst_overrides
        .iter()
        .map(|(_, w)| u64::from(*w))
        .sum();
    let overridden = (total > 0).then(|| {
        let mut at = ctx.policies.random() % total;
        profile
            .dst_overrides
            .iter()
            .find(|(_, w)| {
                let hit = at < u64::from(*w);
                at = at.saturating_sub(u64::from(*w));
                hit
            })
            .map(|(authority, _)| authority.clone())
    });
    let target = match overridden.flatten() {
        Some(authority) => {
            let (host, port) = parse_authority(&authority)
                .ok_or_else(|| ProxyError::Unavailable(format!("bad override {authority}")))?;
            match name_of(&host, port) {
                Some(name) => balanced(ctx, Direction::Outbound, cache, &name, None).await?,
                None => discover::dns::resolve::<R>(&ctx.dns, &host, port)
                    .await
                    .map(Target::addr)
                    .map_err(ProxyError::Resolve)?,
            }
        }
        None => parent_target::<R>(ctx, parent, addr).await?,
    };
    let mut target = target;
    if let Some(route) = route {
        let none = Meta::new_default("profile");
        target.policy = Some(Box::new(PolicyRoute {
            parent: none.clone(),
            route: none.clone(),
            backend: none,
            timeouts: Timeouts {
                request: route.timeout,
                ..Timeouts::default()
            },
            grpc: false,
            retry: route.retry.clone(),
            budget,
            record: false,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }));
    }
    Ok(target)
}

/// An endpoint of an original destination's own set (its profile's service or endpoint),
/// or the address itself when discovery has none for it.
async fn parent_target<R: Runtime>(
    ctx: &ShardCtx<R>,
    parent: &Rc<crate::discover::Dst>,
    addr: std::net::SocketAddr,
) -> Result<Target, ProxyError> {
    match parent.pick::<R>(&ctx.dsts).await {
        Ok(pick) => Ok(Target {
            addr: pick.addr(),
            dst: Some(parent.clone()),
            pick: Some(pick),
            name: Some(parent.name.clone()),
            policy: None,
        }),
        Err(DstError::Fallback) => Ok(Target::addr(addr)),
        Err(error) => Err(error.into()),
    }
}

/// What a matched rule passes on, whichever its filter type.
struct RuleParts {
    meta: Arc<Meta>,
    timeouts: Timeouts,
    retry: Option<Arc<Retry>>,
    allow_l5d_request_headers: bool,
}

impl RuleParts {
    fn of<F>(rule: &RoutePolicy<F>) -> Self {
        RuleParts {
            meta: rule.meta.clone(),
            timeouts: rule.timeouts,
            retry: rule.retry.clone(),
            allow_l5d_request_headers: rule.allow_l5d_request_headers,
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
        // The first backend with a ready endpoint (a forward backend always is); the first
        // when none is.
        RouteDistribution::FirstAvailable(backends) if backends.len() > 1 => backends
            .iter()
            .find(|b| match &b.backend.dispatcher {
                BackendDispatcher::Balance { path, .. } => {
                    ctx.dsts.get::<R>(Direction::Outbound, path).has_ready()
                }
                BackendDispatcher::Forward(..) => true,
                BackendDispatcher::Fail { .. } => false,
            })
            .or_else(|| backends.first())
            .ok_or_else(none),
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

// === functions ===

/// Records `metrics`' request in `policy`'s route families too.
pub fn record<R: Runtime>(
    ctx: &ShardCtx<R>,
    policy: &PolicyRoute,
    metrics: &mut crate::telemetry::RequestMetrics,
) {
    if !policy.record {
        return;
    }
    let outbound = &ctx.http.outbound;
    metrics.routed(|| outbound.start(&policy.parent, &policy.route, &policy.backend, policy.grpc));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn l5d_durations_parse_as_the_policy_controller_writes_them() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("0", Some(ms(0))),
            ("250ms", Some(ms(250))),
            (" 2s ", Some(ms(2_000))),
            ("1m", Some(ms(60_000))),
            ("1h", Some(ms(3_600_000))),
            ("1d", Some(ms(86_400_000))),
            ("5", None),
            ("1.5s", None),
            ("ms", None),
            ("10x", None),
            ("99999999999999999999d", None),
        ] {
            assert_eq!(parse_l5d_duration(text), expected, "{text:?}");
        }
    }

    #[test]
    fn l5d_retry_conditions_parse_as_linkerd_does() {
        let RetryConditions::Http(ranges) =
            parse_http_conditions("5xx, gateway-error,429,400-404,404-400,600,abc")
        else {
            panic!("HTTP conditions");
        };
        assert_eq!(ranges, vec![(500, 599), (502, 504), (429, 429), (400, 404)]);
        let RetryConditions::Grpc(codes) =
            parse_grpc_conditions("unavailable,Internal,cancelled,deadline-exceeded,nope")
        else {
            panic!("gRPC conditions");
        };
        assert_eq!(codes, vec![14, 13, 1, 4]);
    }
}
