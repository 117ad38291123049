//! Decoding `OutboundPolicies` updates into [`ClientPolicy`], as linkerd2-proxy's
//! `linkerd/proxy/client-policy/src/{lib,http,grpc}.rs` decode them: the parent's metadata and
//! the protocol are required (`Detect` needs its timeout and both HTTP configurations); each
//! rule needs a distribution (a `random_available` or `first_available` one needs at least
//! one backend); each backend needs its metadata and queue; a backend with no dispatcher
//! fails its requests; a rule's deprecated `request_timeout` stands in for
//! `timeouts.request`; retry status ranges lie within 1..=599; a backoff's maximum is not
//! zero nor below its minimum, and its jitter ratio lies in 0..=100.
//!
//! Matches and filters reuse the inbound decoders (the same `http_route` / `grpc_route`
//! messages); a rule without matches keeps an empty list, which [`super::super::inbound::find`]
//! treats as matching every request. A filter without a kind becomes
//! [`HttpFilter::InternalError`] / [`GrpcFilter::InternalError`] (requests through it fail
//! 500), as the inbound decoder does; linkerd2-proxy rejects the whole policy instead. An HTTP
//! retry's `max_retries` must fit 16 bits, as linkerd2-proxy's `http.rs` requires.
//!
//! Failure accrual: `ConsecutiveFailures` needs its backoff (as in linkerd2-proxy) and becomes
//! [`FailureAccrual::None`] when `max_failures` is 0 (the breaker would never close). The
//! success-rate (`Unified`) kind of 2026 is kept as its consecutive-failures part
//! (`max_consecutive_failures` and `backoff`); without a backoff, or with
//! `max_consecutive_failures` 0, it is `None` (linkerd2-proxy rejects a missing backoff); a
//! backoff that is present but invalid is still an error. Its success-rate threshold and
//! window are not enforced. An accrual without a kind is invalid, as in linkerd2-proxy.
//!
//! Also unlike linkerd2-proxy: a `Detect` protocol's `opaque` part is ignored (it may be
//! absent), and resource metadata is decoded as the inbound decoder does (empty group, kind,
//! name or namespace are accepted).

use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::{http_route as http_api, outbound as api};

use super::{
    Backend, BackendDispatcher, Backoff, ClientPolicy, FailureAccrual, GrpcRoute, GrpcRoutes,
    HttpRoute, HttpRoutes, Load, Protocol, Queue, Retry, RetryConditions, RouteBackend,
    RouteDistribution, RoutePolicy, Timeouts,
};
use crate::discovery::Discovery;
use crate::policy::inbound::{
    GrpcFilter, HttpFilter, InvalidFilter, InvalidMatch, InvalidMeta, MatchGrpc, MatchHost,
    MatchRequest, Meta, ModifyHeader, Route, Rule,
};

/// Why an update could not be used (the destination then answers 500).
#[derive(Debug, thiserror::Error)]
pub enum InvalidPolicy {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid metadata: {0}")]
    Meta(#[from] InvalidMeta),
    #[error("invalid route match: {0}")]
    Match(#[from] InvalidMatch),
    #[error("invalid filter: {0}")]
    Filter(#[from] InvalidFilter),
    #[error("invalid {0} duration")]
    Duration(&'static str),
    #[error("invalid backoff: {0}")]
    Backoff(&'static str),
    #[error("{0} distribution has no backends")]
    EmptyDistribution(&'static str),
    #[error("invalid retry condition")]
    RetryCondition,
    #[error("HTTP retry max_retries must fit 16 bits: {0}")]
    MaxRetries(u32),
    #[error("invalid forward address")]
    ForwardAddr,
}

type Result<T> = std::result::Result<T, InvalidPolicy>;

impl TryFrom<api::OutboundPolicy> for ClientPolicy {
    type Error = InvalidPolicy;

    fn try_from(policy: api::OutboundPolicy) -> Result<Self> {
        use api::proxy_protocol::Kind;
        let parent = meta(policy.metadata, "policy metadata")?;
        let kind = policy
            .protocol
            .ok_or(InvalidPolicy::Missing("protocol"))?
            .kind
            .ok_or(InvalidPolicy::Missing("protocol kind"))?;
        let protocol = match kind {
            Kind::Detect(detect) => Protocol::Detect {
                timeout: duration("detect timeout", detect.timeout)?,
                http1: {
                    let h1 = detect
                        .http1
                        .ok_or(InvalidPolicy::Missing("Detect HTTP/1"))?;
                    http_routes(h1.routes, h1.failure_accrual)?
                },
                http2: {
                    let h2 = detect
                        .http2
                        .ok_or(InvalidPolicy::Missing("Detect HTTP/2"))?;
                    http_routes(h2.routes, h2.failure_accrual)?
                },
            },
            Kind::Http1(h1) => Protocol::Http1(http_routes(h1.routes, h1.failure_accrual)?),
            Kind::Http2(h2) => Protocol::Http2(http_routes(h2.routes, h2.failure_accrual)?),
            Kind::Grpc(grpc) => Protocol::Grpc(GrpcRoutes {
                routes: grpc
                    .routes
                    .into_iter()
                    .map(grpc_route)
                    .collect::<Result<_>>()?,
                failure_accrual: failure_accrual(grpc.failure_accrual)?,
            }),
            Kind::Opaque(_) => Protocol::Opaque,
            Kind::Tls(_) => Protocol::Tls,
        };
        Ok(ClientPolicy { parent, protocol })
    }
}

fn http_routes(
    routes: Vec<api::HttpRoute>,
    accrual: Option<api::FailureAccrual>,
) -> Result<HttpRoutes> {
    Ok(HttpRoutes::new(
        routes.into_iter().map(http_route).collect::<Result<_>>()?,
        failure_accrual(accrual)?,
    ))
}

fn http_route(route: api::HttpRoute) -> Result<HttpRoute> {
    let meta = meta(route.metadata, "route metadata")?;
    let hosts = hosts(route.hosts)?;
    let rules = route
        .rules
        .into_iter()
        .map(|rule| {
            #[allow(deprecated)]
            let legacy = rule.request_timeout;
            Ok(Rule {
                matches: rule
                    .matches
                    .into_iter()
                    .map(MatchRequest::try_from)
                    .collect::<std::result::Result<_, _>>()?,
                policy: RoutePolicy {
                    meta: meta.clone(),
                    filters: http_filters(rule.filters)?,
                    distribution: http_distribution(rule.backends)?,
                    timeouts: timeouts(rule.timeouts, legacy)?,
                    retry: rule.retry.map(http_retry).transpose()?.map(Arc::new),
                    allow_l5d_request_headers: rule.allow_l5d_request_headers,
                },
            })
        })
        .collect::<Result<_>>()?;
    Ok(Route { hosts, rules })
}

fn grpc_route(route: api::GrpcRoute) -> Result<GrpcRoute> {
    let meta = meta(route.metadata, "route metadata")?;
    let hosts = hosts(route.hosts)?;
    let rules = route
        .rules
        .into_iter()
        .map(|rule| {
            #[allow(deprecated)]
            let legacy = rule.request_timeout;
            Ok(Rule {
                matches: rule
                    .matches
                    .into_iter()
                    .map(MatchGrpc::try_from)
                    .collect::<std::result::Result<_, _>>()?,
                policy: RoutePolicy {
                    meta: meta.clone(),
                    filters: grpc_filters(rule.filters)?,
                    distribution: grpc_distribution(rule.backends)?,
                    timeouts: timeouts(rule.timeouts, legacy)?,
                    retry: rule.retry.map(grpc_retry).transpose()?.map(Arc::new),
                    allow_l5d_request_headers: rule.allow_l5d_request_headers,
                },
            })
        })
        .collect::<Result<_>>()?;
    Ok(Route { hosts, rules })
}

fn hosts(hosts: Vec<http_api::HostMatch>) -> Result<Vec<MatchHost>> {
    Ok(hosts
        .into_iter()
        .map(MatchHost::try_from)
        .collect::<std::result::Result<_, _>>()?)
}

fn http_filters(filters: Vec<api::http_route::Filter>) -> Result<Arc<[HttpFilter]>> {
    use api::http_route::filter::Kind;
    filters
        .into_iter()
        .map(|f| {
            Ok(match f.kind {
                Some(Kind::FailureInjector(f)) => HttpFilter::InjectFailure(f.try_into()?),
                Some(Kind::RequestHeaderModifier(m)) => HttpFilter::RequestHeaders(m.try_into()?),
                Some(Kind::ResponseHeaderModifier(m)) => {
                    // The same add/set/remove message under another name.
                    let m = http_api::RequestHeaderModifier {
                        add: m.add,
                        set: m.set,
                        remove: m.remove,
                    };
                    HttpFilter::ResponseHeaders(ModifyHeader::try_from(m)?)
                }
                Some(Kind::Redirect(r)) => HttpFilter::Redirect(r.try_into()?),
                None => HttpFilter::InternalError("client policy configured with unknown filter"),
            })
        })
        .collect()
}

fn grpc_filters(filters: Vec<api::grpc_route::Filter>) -> Result<Arc<[GrpcFilter]>> {
    use api::grpc_route::filter::Kind;
    filters
        .into_iter()
        .map(|f| {
            Ok(match f.kind {
                Some(Kind::FailureInjector(f)) => GrpcFilter::InjectFailure(f.try_into()?),
                Some(Kind::RequestHeaderModifier(m)) => GrpcFilter::RequestHeaders(m.try_into()?),
                None => GrpcFilter::InternalError("client policy configured with unknown filter"),
            })
        })
        .collect()
}

fn http_distribution(
    d: Option<api::http_route::Distribution>,
) -> Result<RouteDistribution<HttpFilter>> {
    use api::http_route::distribution::Kind;
    let backend = |b: Option<api::http_route::RouteBackend>| -> Result<RouteBackend<HttpFilter>> {
        let b = b.ok_or(InvalidPolicy::Missing("route backend"))?;
        Ok(RouteBackend {
            filters: http_filters(b.filters)?,
            backend: Arc::new(backend(b.backend)?),
        })
    };
    Ok(
        match d
            .ok_or(InvalidPolicy::Missing("distribution"))?
            .kind
            .ok_or(InvalidPolicy::Missing("distribution kind"))?
        {
            Kind::Empty(_) => RouteDistribution::Empty,
            Kind::FirstAvailable(first) => RouteDistribution::FirstAvailable(non_empty(
                "FirstAvailable",
                first
                    .backends
                    .into_iter()
                    .map(|b| backend(Some(b)))
                    .collect::<Result<_>>()?,
            )?),
            Kind::RandomAvailable(random) => RouteDistribution::RandomAvailable(non_empty(
                "RandomAvailable",
                random
                    .backends
                    .into_iter()
                    .map(|w| Ok((backend(w.backend)?, w.weight)))
                    .collect::<Result<_>>()?,
            )?),
        },
    )
}

fn grpc_distribution(
    d: Option<api::grpc_route::Distribution>,
) -> Result<RouteDistribution<GrpcFilter>> {
    use api::grpc_route::distribution::Kind;
    let backend = |b: Option<api::grpc_route::RouteBackend>| -> Result<RouteBackend<GrpcFilter>> {
        let b = b.ok_or(InvalidPolicy::Missing("route backend"))?;
        Ok(RouteBackend {
            filters: grpc_filters(b.filters)?,
            backend: Arc::new(backend(b.backend)?),
        })
    };
    Ok(
        match d
            .ok_or(InvalidPolicy::Missing("distribution"))?
            .kind
            .ok_or(InvalidPolicy::Missing("distribution kind"))?
        {
            Kind::Empty(_) => RouteDistribution::Empty,
            Kind::FirstAvailable(first) => RouteDistribution::FirstAvailable(non_empty(
                "FirstAvailable",
                first
                    .backends
                    .into_iter()
                    .map(|b| backend(Some(b)))
                    .collect::<Result<_>>()?,
            )?),
            Kind::RandomAvailable(random) => RouteDistribution::RandomAvailable(non_empty(
                "RandomAvailable",
                random
                    .backends
                    .into_iter()
                    .map(|w| Ok((backend(w.backend)?, w.weight)))
                    .collect::<Result<_>>()?,
            )?),
        },
    )
}

fn non_empty<T>(kind: &'static str, items: Vec<T>) -> Result<Arc<[T]>> {
    if items.is_empty() {
        return Err(InvalidPolicy::EmptyDistribution(kind));
    }
    Ok(items.into())
}

fn backend(backend: Option<api::Backend>) -> Result<Backend> {
    use api::backend::{balance_p2c::Load as ProtoLoad, endpoint_discovery, Kind};
    let backend = backend.ok_or(InvalidPolicy::Missing("backend"))?;
    let meta = meta(backend.metadata, "backend metadata")?;
    let dispatcher = match backend.kind {
        Some(Kind::Balancer(p2c)) => {
            let discovery = p2c
                .discovery
                .ok_or(InvalidPolicy::Missing("balancer discovery"))?
                .kind
                .ok_or(InvalidPolicy::Missing("balancer discovery kind"))?;
            let endpoint_discovery::Kind::Dst(dst) = discovery;
            let load = match p2c.load.ok_or(InvalidPolicy::Missing("balancer load"))? {
                ProtoLoad::PeakEwma(p) => Load::PeakEwma {
                    default_rtt: duration("peak EWMA default RTT", p.default_rtt)?,
                    decay: duration("peak EWMA decay", p.decay)?,
                },
                ProtoLoad::PenaltyPeakEwma(p) => Load::PenaltyPeakEwma {
                    default_rtt: duration_or(p.default_rtt, Duration::from_millis(30))?,
                    decay: duration_or(p.decay, Duration::from_secs(10))?,
                    penalty: duration_or(p.penalty, Duration::from_secs(5))?,
                },
            };
            BackendDispatcher::Balance {
                path: dst.path,
                load,
            }
        }
        Some(Kind::Forward(addr)) => {
            let (addr, meta) =
                Discovery::profile_endpoint(addr).ok_or(InvalidPolicy::ForwardAddr)?;
            BackendDispatcher::Forward(addr, meta)
        }
        None => BackendDispatcher::Fail {
            message: format!(
                "backend for {} {}{}{} has no dispatcher",
                meta.kind(),
                meta.namespace(),
                if meta.namespace().is_empty() { "" } else { "/" },
                meta.name()
            )
            .into(),
        },
    };
    let queue = backend.queue.ok_or(InvalidPolicy::Missing("queue"))?;
    Ok(Backend {
        meta,
        queue: Queue {
            capacity: queue.capacity as usize,
            failfast_timeout: duration("queue failfast timeout", queue.failfast_timeout)?,
        },
        dispatcher,
    })
}

fn timeouts(
    t: Option<http_api::Timeouts>,
    legacy: Option<prost_types::Duration>,
) -> Result<Timeouts> {
    let t = t.unwrap_or_default();
    let opt = |name, d: Option<prost_types::Duration>| d.map(|d| to_duration(name, d)).transpose();
    Ok(Timeouts {
        response: opt("response timeout", t.response)?,
        idle: opt("idle timeout", t.idle)?,
        request: opt("request timeout", t.request)?.or(opt("request timeout", legacy)?),
    })
}

fn http_retry(retry: api::http_route::Retry) -> Result<Retry> {
    let ranges = retry
        .conditions
        .ok_or(InvalidPolicy::RetryCondition)?
        .status_ranges
        .into_iter()
        .map(|r| {
            let start = u16::try_from(r.start).map_err(|_| InvalidPolicy::RetryCondition)?;
            let end = u16::try_from(r.end).map_err(|_| InvalidPolicy::RetryCondition)?;
            if start == 0 || end == 0 || end > 599 || start > end {
                return Err(InvalidPolicy::RetryCondition);
            }
            Ok((start, end))
        })
        .collect::<Result<_>>()?;
    if u16::try_from(retry.max_retries).is_err() {
        return Err(InvalidPolicy::MaxRetries(retry.max_retries));
    }
    Ok(Retry {
        max_retries: retry.max_retries,
        max_request_bytes: retry.max_request_bytes as usize,
        conditions: RetryConditions::Http(ranges),
        timeout: retry
            .timeout
            .map(|d| to_duration("retry timeout", d))
            .transpose()?,
        backoff: retry.backoff.map(backoff).transpose()?,
    })
}

fn grpc_retry(retry: api::grpc_route::Retry) -> Result<Retry> {
    let c = retry.conditions.ok_or(InvalidPolicy::RetryCondition)?;
    let codes = [
        (c.cancelled, 1),
        (c.deadine_exceeded, 4),
        (c.resource_exhausted, 8),
        (c.internal, 13),
        (c.unavailable, 14),
    ]
    .into_iter()
    .filter_map(|(on, code)| on.then_some(code))
    .collect();
    Ok(Retry {
        max_retries: retry.max_retries,
        max_request_bytes: retry.max_request_bytes as usize,
        conditions: RetryConditions::Grpc(codes),
        timeout: retry
            .timeout
            .map(|d| to_duration("retry timeout", d))
            .transpose()?,
        backoff: retry.backoff.map(backoff).transpose()?,
    })
}

fn failure_accrual(accrual: Option<api::FailureAccrual>) -> Result<FailureAccrual> {
    use api::failure_accrual::Kind;
    let Some(accrual) = accrual else {
        return Ok(FailureAccrual::None);
    };
    let (max_failures, proto_backoff) = match accrual
        .kind
        .ok_or(InvalidPolicy::Missing("failure accrual kind"))?
    {
        Kind::ConsecutiveFailures(c) => (
            c.max_failures,
            c.backoff
                .ok_or(InvalidPolicy::Missing("failure accrual backoff"))?,
        ),
        // Only the consecutive-failures part of the success-rate kind is kept; without it
        // (no backoff, or no failure count) the breaker is off.
        Kind::Unified(u) => match u.backoff {
            Some(b) => (u.max_consecutive_failures, b),
            None => return Ok(FailureAccrual::None),
        },
    };
    let backoff = backoff(proto_backoff)?;
    if max_failures == 0 {
        return Ok(FailureAccrual::None);
    }
    Ok(FailureAccrual::ConsecutiveFailures {
        max_failures,
        backoff,
    })
}

fn backoff(b: api::ExponentialBackoff) -> Result<Backoff> {
    let min = duration("backoff minimum", b.min_backoff)?;
    let max = duration("backoff maximum", b.max_backoff)?;
    let jitter = b.jitter_ratio;
    if min > max {
        return Err(InvalidPolicy::Backoff(
            "maximum must not be less than minimum",
        ));
    }
    if max.is_zero() {
        return Err(InvalidPolicy::Backoff("maximum must be non-zero"));
    }
    if !jitter.is_finite() || !(0.0..=100.0).contains(&jitter) {
        return Err(InvalidPolicy::Backoff("jitter must lie within 0 and 100"));
    }
    Ok(Backoff { min, max, jitter })
}

fn meta(m: Option<linkerd2_proxy_api::meta::Metadata>, what: &'static str) -> Result<Arc<Meta>> {
    Ok(Arc::new(Meta::try_from(
        m.ok_or(InvalidPolicy::Missing(what))?,
    )?))
}

fn duration(name: &'static str, d: Option<prost_types::Duration>) -> Result<Duration> {
    to_duration(name, d.ok_or(InvalidPolicy::Missing(name))?)
}

fn duration_or(d: Option<prost_types::Duration>, default: Duration) -> Result<Duration> {
    d.map_or(Ok(default), |d| to_duration("penalty peak EWMA", d))
}

fn to_duration(name: &'static str, d: prost_types::Duration) -> Result<Duration> {
    Duration::try_from(d).map_err(|_| InvalidPolicy::Duration(name))
}
