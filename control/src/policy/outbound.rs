//! Linkerd's outbound (client) policy: how traffic to one original destination is
//! routed, split over backends, timed out, retried and circuit-broken.
//!
//! The model follows linkerd2-proxy's `linkerd/proxy/client-policy` crate. It is decoded on
//! the control thread from an `OutboundPolicies.Watch` update ([`ClientPolicy::try_from`],
//! in `decode`) and shared with the shards behind `Arc`s; route matching reuses the inbound
//! matches ([`super::inbound::find`], [`super::inbound::MatchRequest`],
//! [`super::inbound::MatchGrpc`]) with an outbound rule policy ([`RoutePolicy`]).
//!
//! An update that does not decode becomes [`ClientPolicy::invalid`]: every HTTP request to
//! the destination is answered 500, as linkerd2-proxy's `policy/api.rs` does, and the
//! error is logged on the control thread.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::inbound::{
    GrpcFilter, HttpFilter, MatchGrpc, MatchRequest, Meta, PathIndex, Route, Rule,
};
use crate::discovery::EndpointMeta;

mod decode;
pub mod watch;

#[cfg(test)]
mod tests;

pub use decode::InvalidPolicy;

/// An outbound HTTP route (`http::Route` in linkerd2-proxy's client-policy).
pub type HttpRoute = Route<MatchRequest, RoutePolicy<HttpFilter>>;
/// A rule of an [`HttpRoute`].
pub type HttpRule = Rule<MatchRequest, RoutePolicy<HttpFilter>>;
/// An outbound gRPC route.
pub type GrpcRoute = Route<MatchGrpc, RoutePolicy<GrpcFilter>>;
/// A rule of a [`GrpcRoute`].
pub type GrpcRule = Rule<MatchGrpc, RoutePolicy<GrpcFilter>>;

/// The policy of one outbound destination (`ClientPolicy`).
#[derive(Clone, Debug)]
pub struct ClientPolicy {
    /// The resource the policy is for (the Service): the `parent_*` labels.
    pub parent: Arc<Meta>,
    pub protocol: Protocol,
}

/// How the destination's traffic is handled (`Protocol`).
#[derive(Clone, Debug)]
pub enum Protocol {
    /// Detect HTTP for at most `timeout` (then opaque); HTTP/1 and HTTP/2 have their
    /// routes.
    Detect {
        timeout: Duration,
        http1: HttpRoutes,
        http2: HttpRoutes,
    },
    Http1(HttpRoutes),
    Http2(HttpRoutes),
    Grpc(GrpcRoutes),
    /// Opaque TCP: no detection, no HTTP routes.
    Opaque,
    /// TLS passed through: no detection, no HTTP routes.
    Tls,
}

/// The HTTP routes of a protocol, and its endpoints' circuit breaker.
#[derive(Clone, Debug)]
pub struct HttpRoutes {
    pub routes: Arc<[HttpRoute]>,
    pub failure_accrual: FailureAccrual,
    /// The routes indexed by path ([`PathIndex`]) when there are enough to be worth it.
    pub index: Option<Arc<PathIndex>>,
}

/// The gRPC routes, and the endpoints' circuit breaker.
#[derive(Clone, Debug)]
pub struct GrpcRoutes {
    pub routes: Arc<[GrpcRoute]>,
    pub failure_accrual: FailureAccrual,
}

/// What an outbound rule applies (`RoutePolicy` in client-policy): its route's meta (the
/// `route_*` labels), filters in order, where requests go, and its timeouts and retries.
#[derive(Clone, Debug)]
pub struct RoutePolicy<F> {
    pub meta: Arc<Meta>,
    pub filters: Arc<[F]>,
    pub distribution: RouteDistribution<F>,
    pub timeouts: Timeouts,
    /// `None`: no retries.
    pub retry: Option<Arc<Retry>>,
    /// The `l5d-*` request headers may override the timeouts and retries.
    pub allow_l5d_request_headers: bool,
}

/// How a rule's requests are spread over its backends (`RouteDistribution`).
#[derive(Clone, Debug)]
pub enum RouteDistribution<F> {
    /// No backend: requests fail (503).
    Empty,
    /// The first backend that is ready.
    FirstAvailable(Arc<[RouteBackend<F>]>),
    /// A backend drawn by weight (weights of zero never drawn).
    RandomAvailable(Arc<[(RouteBackend<F>, u32)]>),
}

/// One backend of a rule, with the filters applied when it is chosen.
#[derive(Clone, Debug)]
pub struct RouteBackend<F> {
    pub filters: Arc<[F]>,
    pub backend: Arc<Backend>,
}

/// A backend (`Backend`): its meta (the `backend_*` labels), its queue, and how its
/// endpoints are found.
#[derive(Clone, Debug)]
pub struct Backend {
    pub meta: Arc<Meta>,
    pub queue: Queue,
    pub dispatcher: BackendDispatcher,
}

/// How long requests may wait for an endpoint of a backend, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub capacity: usize,
    pub failfast_timeout: Duration,
}

/// Where a backend's requests go (`BackendDispatcher`).
#[derive(Clone, Debug)]
pub enum BackendDispatcher {
    /// One endpoint, described as a Destination endpoint is.
    Forward(SocketAddr, EndpointMeta),
    /// A P2C balancer over the endpoints of `Destination.Get(path)`.
    Balance { path: String, load: Load },
    /// Every request fails with this message (a backend the controller could not
    /// resolve).
    Fail { message: Arc<str> },
}

/// The balancer's load estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    PeakEwma {
        default_rtt: Duration,
        decay: Duration,
    },
    /// Peak-EWMA with a latency penalty for failed responses (the 2026 addition); the
    /// penalty is kept, the balancer uses it as the cost of a failure.
    PenaltyPeakEwma {
        default_rtt: Duration,
        decay: Duration,
        penalty: Duration,
    },
}

/// Route timeouts (`linkerd/http/route` `Timeouts`): `request` bounds the whole exchange,
/// `response` the wait for the response head, `idle` the silence on an open body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub request: Option<Duration>,
    pub response: Option<Duration>,
    pub idle: Option<Duration>,
}

/// A rule's retry policy.
#[derive(Clone, Debug)]
pub struct Retry {
    pub max_retries: u32,
    /// Requests with a longer body are not retried.
    pub max_request_bytes: usize,
    pub conditions: RetryConditions,
    /// Each try's own timeout.
    pub timeout: Option<Duration>,
    pub backoff: Option<Backoff>,
}

/// Which responses are retried.
#[derive(Clone, Debug)]
pub enum RetryConditions {
    /// HTTP statuses in these inclusive ranges.
    Http(Vec<(u16, u16)>),
    /// gRPC status codes (from the response's trailers, or its headers when it has none).
    Grpc(Vec<u32>),
    /// A ServiceProfile route's failures, by its response classes.
    Profile(Arc<[crate::profile::ResponseClass]>),
}

/// An exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub jitter: f32,
}

/// When an endpoint leaves its balancer (`FailureAccrual`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum FailureAccrual {
    #[default]
    None,
    /// After `max_failures` failures in a row, for a backoff that grows with each
    /// further ejection; then one probe request decides.
    ConsecutiveFailures { max_failures: u32, backoff: Backoff },
}

// === impl HttpRoutes ===

impl HttpRoutes {
    /// Routes from this many on are indexed by path (as inbound policies are).
    pub const WORTH_INDEXING: usize = 8;

    /// `routes`, indexed by path when there are many.
    pub fn new(routes: Arc<[HttpRoute]>, failure_accrual: FailureAccrual) -> Self {
        let index =
            (routes.len() >= Self::WORTH_INDEXING).then(|| Arc::new(PathIndex::new(&routes)));
        HttpRoutes {
            routes,
            failure_accrual,
            index,
        }
    }

    /// The best route for `req` and its rule ([`super::inbound::find`]).
    pub fn find(
        &self,
        req: &super::inbound::RequestView<'_>,
    ) -> Option<(
        super::inbound::RouteMatch<super::inbound::RequestMatch>,
        &RoutePolicy<HttpFilter>,
    )> {
        match &self.index {
            Some(index) => index.find(&self.routes, req),
            None => super::inbound::find(&self.routes, req),
        }
    }
}

// === impl Retry ===

impl Retry {
    /// Whether a response with this HTTP status (or, for gRPC conditions, this gRPC status
    /// code) is retried.
    pub fn retries(&self, http_status: u16, grpc_status: Option<u32>) -> bool {
        match &self.conditions {
            RetryConditions::Http(ranges) => ranges
                .iter()
                .any(|&(start, end)| (start..=end).contains(&http_status)),
            RetryConditions::Grpc(codes) => grpc_status.is_some_and(|c| codes.contains(&c)),
            RetryConditions::Profile(classes) => {
                crate::profile::ResponseClass::is_failure(classes, http_status)
            }
        }
    }
}

// === impl ClientPolicy ===

impl ClientPolicy {
    /// The policy that answers every request 500 (an update that did not decode).
    pub fn invalid(timeout: Duration) -> Self {
        let meta = Meta::new_default("invalid");
        let routes = HttpRoutes {
            index: None,
            routes: Arc::new([Route {
                hosts: vec![],
                rules: vec![Rule {
                    matches: vec![MatchRequest::default()],
                    policy: RoutePolicy {
                        meta: meta.clone(),
                        filters: Arc::new([HttpFilter::InternalError("invalid client policy")]),
                        distribution: RouteDistribution::Empty,
                        timeouts: Timeouts::default(),
                        retry: None,
                        allow_l5d_request_headers: false,
                    },
                }],
            }]),
            failure_accrual: FailureAccrual::None,
        };
        ClientPolicy {
            parent: meta,
            protocol: Protocol::Detect {
                timeout,
                http1: routes.clone(),
                http2: routes,
            },
        }
    }

    /// The HTTP routes for requests of this version (`http2`: HTTP/2 without gRPC),
    /// `None` when the policy routes no HTTP (opaque, TLS, gRPC-only for HTTP/1).
    pub fn http_routes(&self, http2: bool) -> Option<&HttpRoutes> {
        match &self.protocol {
            Protocol::Detect {
                http1, http2: h2, ..
            } => Some(if http2 { h2 } else { http1 }),
            Protocol::Http1(routes) | Protocol::Http2(routes) => Some(routes),
            Protocol::Grpc(_) | Protocol::Opaque | Protocol::Tls => None,
        }
    }

    /// The gRPC routes, when the policy's protocol is gRPC.
    pub fn grpc_routes(&self) -> Option<&GrpcRoutes> {
        match &self.protocol {
            Protocol::Grpc(routes) => Some(routes),
            _ => None,
        }
    }

    /// Whether the traffic is forwarded without detection (opaque or TLS).
    pub fn is_opaque(&self) -> bool {
        matches!(self.protocol, Protocol::Opaque | Protocol::Tls)
    }
}
