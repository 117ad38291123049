//! Linkerd's inbound (server) policy: what may connect to a port, and which HTTP or gRPC
//! routes a request may take.
//!
//! The model follows linkerd2-proxy's `linkerd/proxy/server-policy` crate, the route matching
//! of `linkerd/http/route`, and the checks of `linkerd/app/inbound/src/policy{,/tcp,/http}.rs`.
//! Everything is built once on the control thread (decoded from the `InboundServerPolicies`
//! API with [`ServerPolicy::try_from`], or one of the [`defaults`]) and shared with the shards
//! behind `Arc`s: every type here is `Send + Sync` and a [`ServerPolicy`] clones in a few
//! reference-count increments.
//!
//! On the shards:
//! - a connection the proxy forwards as opaque TCP (a `Detect` port whose traffic is not
//!   HTTP, an `Opaque` or a `Tls` port) is checked with
//!   [`ServerPolicy::authorize_connection`];
//! - an HTTP request is checked with [`ServerPolicy::route_request`] (→ 404 / gRPC
//!   `NOT_FOUND` when no route matches), then [`RouteDecision::authorize`] or
//!   [`authorize_route`] (→ 403 / gRPC `PERMISSION_DENIED`), then the route's filters in
//!   order, then the server's [`LocalRateLimit`] (→ 429 / `RESOURCE_EXHAUSTED`), as
//!   `linkerd/app/inbound/src/policy/http.rs` does.
//!
//! None of these checks allocates.

use std::{net::IpAddr, sync::Arc, time::Duration};

mod authz;
mod decode;
pub mod defaults;
mod filter;
mod grpc_route;
mod http_route;
mod meta;
mod rate_limit;
mod route;

#[cfg(test)]
mod tests;

pub use self::{
    authz::{Authentication, Authorization, ClientTls, Network, Suffix},
    decode::{InvalidAuthz, InvalidFilter, InvalidMatch, InvalidMeta, InvalidRoute, InvalidServer},
    defaults::BuiltinPolicy,
    filter::{
        AuthorityOverride, Distribution, FailureResponse, GrpcFailureResponse, InjectFailure,
        InvalidDistribution, InvalidRedirect, ModifyHeader, ModifyPath, RedirectRequest,
        Redirection,
    },
    grpc_route::{GrpcFilter, GrpcMatch, MatchGrpc, MatchRpc, RpcMatch},
    http_route::{
        HttpFilter, MatchHeader, MatchPath, MatchQueryParam, MatchRequest, PathMatch, RequestMatch,
    },
    meta::{Location, Meta},
    rate_limit::{LocalRateLimit, RateLimitError, RateLimitOverride},
    route::{
        find, FnHeaders, HeaderSource, HostMatch, Match, MatchHost, NoHeaders, PathIndex,
        RequestView, Route, RouteMatch, RoutePolicy, Rule,
    },
};

/// An HTTP route (`linkerd/proxy/server-policy/src/http.rs`).
pub type HttpRoute = Route<MatchRequest, HttpPolicy>;
/// A rule of an [`HttpRoute`].
pub type HttpRule = Rule<MatchRequest, HttpPolicy>;
/// What an [`HttpRule`] applies: its meta, authorizations and filters.
pub type HttpPolicy = RoutePolicy<HttpFilter>;
/// A gRPC route (`linkerd/proxy/server-policy/src/grpc.rs`).
pub type GrpcRoute = Route<MatchGrpc, GrpcPolicy>;
/// A rule of a [`GrpcRoute`].
pub type GrpcRule = Rule<MatchGrpc, GrpcPolicy>;
/// What a [`GrpcRule`] applies.
pub type GrpcPolicy = RoutePolicy<GrpcFilter>;

/// The policy of one inbound port (`ServerPolicy` in
/// `linkerd/proxy/server-policy/src/lib.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPolicy {
    /// The `Server` resource (or default) the port belongs to: the `srv_*` metric labels.
    pub meta: Arc<Meta>,
    /// How the port's traffic is handled and authorized.
    pub protocol: Protocol,
    /// The HTTP rate limits of `Detect`, `Http1` and `Http2` servers (empty otherwise).
    pub local_rate_limit: Arc<LocalRateLimit>,
}

/// How a port's traffic is handled (`Protocol` in `linkerd/proxy/server-policy/src/lib.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Detect HTTP within `timeout`: HTTP requests take `http` routes, anything else is opaque
    /// TCP authorized by `tcp_authorizations`.
    Detect {
        timeout: Duration,
        http: Arc<[HttpRoute]>,
        tcp_authorizations: Arc<[Authorization]>,
    },
    /// HTTP/1 without detection (meshed connections are still detected, since they may carry
    /// HTTP/2 between proxies; `linkerd/app/inbound/src/detect.rs`).
    Http1(Arc<[HttpRoute]>),
    /// HTTP/2 without detection.
    Http2(Arc<[HttpRoute]>),
    /// gRPC (HTTP/2) without detection, routed by gRPC routes.
    Grpc(Arc<[GrpcRoute]>),
    /// Application TLS: forwarded as TCP once authorized, with no detection.
    Tls(Arc<[Authorization]>),
    /// Opaque TCP: forwarded once authorized, with no TLS or HTTP detection.
    Opaque(Arc<[Authorization]>),
}

/// An authorized connection: the first authorization the client satisfied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnPermit<'p> {
    /// The server's meta (`srv_*` labels).
    pub server: &'p Arc<Meta>,
    /// The authorization that applied (`authz_*` labels).
    pub authorization: &'p Authorization,
}

/// A connection no authorization permits; linkerd2-proxy closes it
/// (`ServerUnauthorized` in `linkerd/app/inbound/src/policy.rs`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unauthorized connection on {}/{}", server.kind(), server.name())]
pub struct Denied {
    /// The server's meta (`srv_*` labels).
    pub server: Arc<Meta>,
}

/// No route matched the request, or the port does not route HTTP: 404, or gRPC `NOT_FOUND`
/// (`HttpRouteNotFound` in `linkerd/app/inbound/src/policy/http.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no route found for request")]
pub struct RouteNotFound;

/// A route matched but none of its authorizations applies: 403 with
/// `l5d-proxy-error: unauthorized request on route`, or gRPC `PERMISSION_DENIED`
/// (`HttpRouteUnauthorized` in `linkerd/app/inbound/src/policy/http.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unauthorized request on route")]
pub struct Unauthorized;

/// The rule a request matched, with the summary that ranked it (the redirect filter needs
/// its path match).
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'p, S, F> {
    /// How well the request matched (host, then the route-kind's own ranking).
    pub summary: RouteMatch<S>,
    /// The matched rule's meta, authorizations and filters.
    pub policy: &'p RoutePolicy<F>,
}

impl<S: Clone, F> Clone for Matched<'_, S, F> {
    fn clone(&self) -> Self {
        Self {
            summary: self.summary.clone(),
            policy: self.policy,
        }
    }
}

/// An HTTP rule a request matched.
pub type HttpMatched<'p> = Matched<'p, RequestMatch, HttpFilter>;
/// A gRPC rule a request matched.
pub type GrpcMatched<'p> = Matched<'p, GrpcMatch, GrpcFilter>;

/// Where [`ServerPolicy::route_request`] sends a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteDecision<'p> {
    /// No route matched, or the port is `Tls`/`Opaque`: [`RouteNotFound`].
    NotFound,
    /// An HTTP route's rule matched (`Detect`, `Http1`, `Http2` ports).
    Http(HttpMatched<'p>),
    /// A gRPC route's rule matched (`Grpc` ports).
    Grpc(GrpcMatched<'p>),
}

// === impl ServerPolicy ===

impl ServerPolicy {
    /// The policy used in place of one the control plane sent but that does not decode
    /// (`ServerPolicy::invalid` in `linkerd/proxy/server-policy/src/lib.rs`, used by
    /// `linkerd/app/inbound/src/policy/api.rs`): `Detect{timeout}` with no TCP authorization
    /// and one catch-all route whose only filter is an internal error ("invalid server
    /// configuration", 500) and which has no authorization.
    ///
    /// As in linkerd2-proxy the route is authorized before its filters apply, so a request on
    /// this policy gets [`Unauthorized`] (403) and an opaque connection is [`Denied`]; the 500
    /// is only reached by a caller that skips authorization.
    pub fn invalid(timeout: Duration) -> Self {
        let meta = Meta::new_default("invalid");
        let route = HttpRoute {
            hosts: vec![],
            rules: vec![HttpRule {
                matches: vec![MatchRequest::default()],
                policy: HttpPolicy {
                    meta: meta.clone(),
                    authorizations: Arc::new([]),
                    filters: vec![HttpFilter::InternalError("invalid server configuration")],
                },
            }],
        };
        Self {
            meta,
            protocol: Protocol::Detect {
                timeout,
                http: Arc::new([route]),
                tcp_authorizations: Arc::new([]),
            },
            local_rate_limit: Default::default(),
        }
    }

    /// The same policy with protocol detection turned off, as linkerd2-proxy makes the policy
    /// of ports in `LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION` from the default
    /// one (`Store::make_opaque` in `linkerd/app/inbound/src/policy/store.rs`): `Detect` becomes
    /// `Opaque` with its TCP authorizations; any other protocol is kept.
    pub fn opaque(&self) -> Self {
        let protocol = match &self.protocol {
            Protocol::Detect {
                tcp_authorizations, ..
            } => Protocol::Opaque(tcp_authorizations.clone()),
            other => other.clone(),
        };
        Self {
            meta: self.meta.clone(),
            protocol,
            local_rate_limit: self.local_rate_limit.clone(),
        }
    }

    /// Authorizes a connection the proxy forwards as TCP (`check_authorized` in
    /// `linkerd/app/inbound/src/policy/tcp.rs`): the first of the `Detect`, `Tls` or `Opaque`
    /// authorizations whose networks hold `client_ip` and whose authentication `tls`
    /// satisfies. HTTP-only protocols (`Http1`, `Http2`, `Grpc`) authorize per request, so a
    /// connection is [`Denied`] on them.
    ///
    /// An audit authorization ([`ConnPermit::is_audit`]) is logged "Request allowed" by the
    /// caller; a denial "Connection denied". When the policy changes, the caller checks live
    /// connections again and closes those now denied ("Connection terminated due to policy
    /// change").
    pub fn authorize_connection(
        &self,
        client_ip: IpAddr,
        tls: ClientTls<'_>,
    ) -> Result<ConnPermit<'_>, Denied> {
        if let Some(authzs) = self.protocol.tcp_authorizations() {
            if let Some(authorization) = authzs.iter().find(|a| a.permits(client_ip, tls)) {
                return Ok(ConnPermit {
                    server: &self.meta,
                    authorization,
                });
            }
        }
        Err(Denied {
            server: self.meta.clone(),
        })
    }

    /// Finds the route for a request (`find` in `linkerd/http/route/src/lib.rs`, on the routes
    /// `AllowPolicy::routes` gives in `linkerd/app/inbound/src/policy.rs`): `Detect`, `Http1`
    /// and `Http2` ports route with their HTTP routes, `Grpc` ports with their gRPC routes,
    /// and `Tls`/`Opaque` ports route nothing.
    pub fn route_request(&self, req: &RequestView<'_>) -> RouteDecision<'_> {
        self.route_request_indexed(req, None)
    }

    /// The index of this policy's HTTP routes ([`PathIndex`]), worth building when there are
    /// many; `None` when there are few (or none).
    pub fn path_index(&self) -> Option<PathIndex> {
        const WORTH_INDEXING: usize = 8;
        match &self.protocol {
            Protocol::Detect { http, .. } | Protocol::Http1(http) | Protocol::Http2(http)
                if http.len() >= WORTH_INDEXING =>
            {
                Some(PathIndex::new(http))
            }
            _ => None,
        }
    }

    /// [`ServerPolicy::route_request`] with the HTTP routes' `index` (from
    /// [`ServerPolicy::path_index`] of this policy), if any: the same route, found among the
    /// routes that can match the request's path.
    pub fn route_request_indexed(
        &self,
        req: &RequestView<'_>,
        index: Option<&PathIndex>,
    ) -> RouteDecision<'_> {
        match &self.protocol {
            Protocol::Detect { http, .. } | Protocol::Http1(http) | Protocol::Http2(http) => {
                let found = match index {
                    Some(index) => index.find(http, req),
                    None => find(http, req),
                };
                match found {
                    Some((summary, policy)) => RouteDecision::Http(Matched { summary, policy }),
                    None => RouteDecision::NotFound,
                }
            }
            Protocol::Grpc(grpc) => match find(grpc, req) {
                Some((summary, policy)) => RouteDecision::Grpc(Matched { summary, policy }),
                None => RouteDecision::NotFound,
            },
            Protocol::Tls(_) | Protocol::Opaque(_) => RouteDecision::NotFound,
        }
    }
}

// === impl Protocol ===

impl Protocol {
    /// The connection-level authorizations of `Detect`, `Tls` and `Opaque`.
    pub fn tcp_authorizations(&self) -> Option<&[Authorization]> {
        match self {
            Self::Detect {
                tcp_authorizations, ..
            } => Some(tcp_authorizations),
            Self::Tls(authzs) | Self::Opaque(authzs) => Some(authzs),
            Self::Http1(_) | Self::Http2(_) | Self::Grpc(_) => None,
        }
    }

    /// The HTTP routes of `Detect`, `Http1` and `Http2`.
    pub fn http_routes(&self) -> Option<&[HttpRoute]> {
        match self {
            Self::Detect { http, .. } | Self::Http1(http) | Self::Http2(http) => Some(http),
            _ => None,
        }
    }

    /// The gRPC routes of `Grpc`.
    pub fn grpc_routes(&self) -> Option<&[GrpcRoute]> {
        match self {
            Self::Grpc(routes) => Some(routes),
            _ => None,
        }
    }

    /// The detection timeout of `Detect`.
    pub fn detect_timeout(&self) -> Option<Duration> {
        match self {
            Self::Detect { timeout, .. } => Some(*timeout),
            _ => None,
        }
    }
}

// === impl ConnPermit ===

impl ConnPermit<'_> {
    /// Whether the authorization is the `audit` default, whose use linkerd2-proxy logs at INFO
    /// as "Request allowed".
    pub fn is_audit(&self) -> bool {
        self.authorization.meta.is_audit()
    }
}

// === impl RouteDecision ===

impl<'p> RouteDecision<'p> {
    /// The matched rule's meta (the `route_*` labels), or `None` for [`Self::NotFound`].
    pub fn meta(&self) -> Option<&'p Arc<Meta>> {
        match self {
            Self::NotFound => None,
            Self::Http(m) => Some(&m.policy.meta),
            Self::Grpc(m) => Some(&m.policy.meta),
        }
    }

    /// The matched rule's authorizations.
    pub fn authorizations(&self) -> Option<&'p [Authorization]> {
        match self {
            Self::NotFound => None,
            Self::Http(m) => Some(&m.policy.authorizations),
            Self::Grpc(m) => Some(&m.policy.authorizations),
        }
    }

    /// Whether this is a gRPC route (errors are then answered as gRPC statuses).
    pub fn is_grpc(&self) -> bool {
        matches!(self, Self::Grpc(_))
    }

    /// Authorizes the request on its route: [`RouteNotFound`] when none matched, otherwise as
    /// [`authorize_route`].
    pub fn authorize(
        &self,
        client_ip: IpAddr,
        tls: ClientTls<'_>,
    ) -> Result<&'p Authorization, RouteError> {
        match self {
            Self::NotFound => Err(RouteError::NotFound(RouteNotFound)),
            Self::Http(m) => authorize_route(m.policy, client_ip, tls).map_err(Into::into),
            Self::Grpc(m) => authorize_route(m.policy, client_ip, tls).map_err(Into::into),
        }
    }
}

/// Why [`RouteDecision::authorize`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// 404 / gRPC `NOT_FOUND`.
    #[error(transparent)]
    NotFound(#[from] RouteNotFound),
    /// 403 / gRPC `PERMISSION_DENIED`.
    #[error(transparent)]
    Unauthorized(#[from] Unauthorized),
}

/// The first of a route's authorizations that the client satisfies (`authorize` in
/// `linkerd/app/inbound/src/policy/http.rs`, with `is_authorized` of
/// `linkerd/app/inbound/src/policy.rs`). A route's authorizations are its own followed by the
/// server's (see [`ServerPolicy::try_from`]). An audit authorization
/// ([`Authorization::is_audit`]) is logged "Request allowed"; a denial "Request denied".
pub fn authorize_route<'p, F>(
    route: &'p RoutePolicy<F>,
    client_ip: IpAddr,
    tls: ClientTls<'_>,
) -> Result<&'p Authorization, Unauthorized> {
    route
        .authorizations
        .iter()
        .find(|a| a.permits(client_ip, tls))
        .ok_or(Unauthorized)
}
