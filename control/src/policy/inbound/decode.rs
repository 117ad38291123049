//! Decoding of the `InboundServerPolicies` API (`linkerd2-proxy-api` 0.20, `inbound.proto`)
//! with linkerd2-proxy's rules: the `proto` modules of `linkerd/proxy/server-policy/src/*.rs`
//! and of `linkerd/http/route/src/{http,grpc}/**`.

use super::{
    authz::is_dns_id, Authentication, AuthorityOverride, Authorization, Distribution,
    FailureResponse, GrpcFailureResponse, GrpcFilter, GrpcRoute, GrpcRule, HttpFilter, HttpRoute,
    HttpRule, InjectFailure, InvalidDistribution, LocalRateLimit, Location, MatchGrpc, MatchHeader,
    MatchHost, MatchPath, MatchQueryParam, MatchRequest, MatchRpc, Meta, ModifyHeader, ModifyPath,
    Network, Protocol, RateLimitOverride, RedirectRequest, RoutePolicy, ServerPolicy, Suffix,
};
use http::{
    header::{HeaderName, HeaderValue, InvalidHeaderName, InvalidHeaderValue},
    status::InvalidStatusCode,
    uri::{Authority, InvalidUri},
    Method, StatusCode,
};
use linkerd2_proxy_api::{
    grpc_route as grpc_api, http_route as http_api, http_types, inbound as api, meta as meta_api,
    net::InvalidIpNetwork,
};
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    num::{NonZeroU16, NonZeroU32},
    sync::Arc,
};

/// A `Server` that does not decode (`InvalidServer` in
/// `linkerd/proxy/server-policy/src/lib.rs`); use [`ServerPolicy::invalid`] in its place.
#[derive(Debug, thiserror::Error)]
pub enum InvalidServer {
    #[error("missing protocol detection timeout")]
    MissingDetectTimeout,

    #[error("invalid protocol detection timeout: {0:?}")]
    InvalidTimeout(#[from] prost_types::DurationError),

    #[error("missing proxy protocol")]
    MissingProxyProtocol,

    #[error("invalid label: {0}")]
    Meta(#[from] InvalidMeta),

    #[error("invalid authorization: {0}")]
    Authz(#[from] InvalidAuthz),

    #[error("invalid gRPC route: {0}")]
    GrpcRoute(#[source] InvalidRoute),

    #[error("invalid HTTP route: {0}")]
    HttpRoute(#[source] InvalidRoute),
}

/// Resource metadata or labels that do not decode.
#[derive(Debug, thiserror::Error)]
pub enum InvalidMeta {
    #[error("missing")]
    Missing,

    #[error("missing 'name' label")]
    Name,
}

/// An `Authz` that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum InvalidAuthz {
    #[error("missing networks")]
    MissingNetworks,

    #[error("missing network")]
    MissingNetwork,

    #[error("missing authentications")]
    MissingAuthentications,

    #[error("invalid network: {0}")]
    Network(#[from] InvalidIpNetwork),

    #[error("invalid label: {0}")]
    Meta(#[from] InvalidMeta),
}

/// An `HttpRoute` or `GrpcRoute` that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRoute {
    #[error("invalid route match: {0}")]
    Match(#[from] InvalidMatch),

    #[error("invalid filter: {0}")]
    Filter(#[from] InvalidFilter),

    #[error("invalid authorization: {0}")]
    Authz(#[from] InvalidAuthz),

    #[error("invalid metadata: {0}")]
    Meta(#[from] InvalidMeta),
}

/// A host, path, header, query-parameter, method or RPC match that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum InvalidMatch {
    #[error("host match must contain a match")]
    MissingHost,

    #[error("missing path match")]
    MissingPath,

    #[error("invalid regular expression: {0}")]
    Regex(#[from] regex::Error),

    #[error("invalid header name: {0}")]
    HeaderName(#[from] InvalidHeaderName),

    #[error("invalid header value: {0}")]
    HeaderValue(#[from] InvalidHeaderValue),

    #[error("missing a header value match")]
    MissingHeaderValue,

    #[error("missing a query param name")]
    MissingQueryParamName,

    #[error("missing a query param value")]
    MissingQueryParamValue,

    #[error("invalid method match: {0}")]
    Method(#[from] http_types::InvalidMethod),

    #[error("missing RPC match")]
    MissingRpc,
}

/// A header modifier, redirect or failure injector that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum InvalidFilter {
    #[error("invalid header name: {0}")]
    HeaderName(#[from] InvalidHeaderName),

    #[error("invalid header value: {0}")]
    HeaderValue(#[from] InvalidHeaderValue),

    #[error("invalid location scheme: {0}")]
    Scheme(#[from] http_types::InvalidScheme),

    #[error("invalid HTTP status code: {0}")]
    Status(#[from] InvalidStatusCode),

    #[error("HTTP status code must be a u16: {0}")]
    StatusNonU16(u32),

    #[error("gRPC status code is not a u16: {0}")]
    GrpcCodeNonU16(u32),

    #[error("invalid HTTP authority: {0}")]
    Authority(#[from] InvalidUri),

    #[error("port number must be a u16: {0}")]
    Port(u32),

    #[error("redirect paths must be absolute")]
    RelativePath,

    #[error("{0}")]
    Distribution(#[from] InvalidDistribution),
}

// === ServerPolicy ===

/// Decodes a `Server` as linkerd2-proxy does (`TryFrom<api::Server> for ServerPolicy` in
/// `linkerd/proxy/server-policy/src/lib.rs`):
/// - the server's authorizations are the API's followed by `localhost` (unauthenticated from
///   127.0.0.1 and ::1), which is always permitted;
/// - each route's authorizations are its own followed by the server's (`localhost` included);
/// - a protocol without routes gets one catch-all route named `default` carrying the server's
///   authorizations (for control planes that predate routes);
/// - the rate limit of `Detect`, `Http1` and `Http2` is decoded (zero limits are none);
/// - the server's meta comes from its labels (group `policy.linkerd.io`, kind `server` unless
///   labelled otherwise; see [`Meta::from_labels`]).
impl TryFrom<api::Server> for ServerPolicy {
    type Error = InvalidServer;

    fn try_from(proto: api::Server) -> Result<Self, Self::Error> {
        use api::proxy_protocol::Kind;

        let api::Server {
            protocol,
            authorizations,
            labels,
            server_ips: _,
        } = proto;

        let mut kind = protocol
            .and_then(|p| p.kind)
            .ok_or(InvalidServer::MissingProxyProtocol)?;

        let local_rate_limit = match &mut kind {
            Kind::Detect(d) => d.http_local_rate_limit.take(),
            Kind::Http1(h) => h.local_rate_limit.take(),
            Kind::Http2(h) => h.local_rate_limit.take(),
            Kind::Grpc(_) | Kind::Opaque(_) | Kind::Tls(_) => None,
        }
        .map(LocalRateLimit::try_from)
        .transpose()?
        .unwrap_or_default();

        let authorizations = mk_authorizations(authorizations, &[localhost()])?;

        let protocol = match kind {
            Kind::Detect(api::proxy_protocol::Detect {
                http_routes,
                timeout,
                http_local_rate_limit: _,
            }) => {
                let http = http_routes_or_default(http_routes, &authorizations)?;
                let timeout = timeout
                    .ok_or(InvalidServer::MissingDetectTimeout)?
                    .try_into()?;
                Protocol::Detect {
                    timeout,
                    http,
                    tcp_authorizations: authorizations,
                }
            }
            Kind::Http1(api::proxy_protocol::Http1 { routes, .. }) => {
                Protocol::Http1(http_routes_or_default(routes, &authorizations)?)
            }
            Kind::Http2(api::proxy_protocol::Http2 { routes, .. }) => {
                Protocol::Http2(http_routes_or_default(routes, &authorizations)?)
            }
            Kind::Grpc(api::proxy_protocol::Grpc { routes }) => {
                Protocol::Grpc(grpc_routes_or_default(routes, &authorizations)?)
            }
            Kind::Tls(_) => Protocol::Tls(authorizations),
            Kind::Opaque(_) => Protocol::Opaque(authorizations),
        };

        let meta = Meta::from_labels(labels, "policy.linkerd.io", "server")?;

        Ok(ServerPolicy {
            meta,
            protocol,
            local_rate_limit: Arc::new(local_rate_limit),
        })
    }
}

/// The authorization linkerd2-proxy adds to every decoded server.
fn localhost() -> Authorization {
    Authorization {
        networks: vec![
            Network::from(std::net::IpAddr::from(Ipv4Addr::LOCALHOST)),
            Network::from(std::net::IpAddr::from(Ipv6Addr::LOCALHOST)),
        ],
        authentication: Authentication::Unauthenticated,
        meta: Meta::new_default("localhost"),
    }
}

fn mk_authorizations(
    authzs: Vec<api::Authz>,
    parents: &[Authorization],
) -> Result<Arc<[Authorization]>, InvalidAuthz> {
    authzs
        .into_iter()
        .map(Authorization::try_from)
        .chain(parents.iter().cloned().map(Ok))
        .collect()
}

fn http_routes_or_default(
    routes: Vec<api::HttpRoute>,
    server_authzs: &Arc<[Authorization]>,
) -> Result<Arc<[HttpRoute]>, InvalidServer> {
    if routes.is_empty() {
        return Ok(Arc::new([HttpRoute::catch_all(server_authzs.clone())]));
    }
    routes
        .into_iter()
        .map(|r| try_http_route(r, server_authzs))
        .collect::<Result<_, _>>()
        .map_err(InvalidServer::HttpRoute)
}

fn grpc_routes_or_default(
    routes: Vec<api::GrpcRoute>,
    server_authzs: &Arc<[Authorization]>,
) -> Result<Arc<[GrpcRoute]>, InvalidServer> {
    if routes.is_empty() {
        return Ok(Arc::new([GrpcRoute::catch_all(server_authzs.clone())]));
    }
    routes
        .into_iter()
        .map(|r| try_grpc_route(r, server_authzs))
        .collect::<Result<_, _>>()
        .map_err(InvalidServer::GrpcRoute)
}

impl<M, F> super::Route<M, RoutePolicy<F>> {
    /// A route with no hosts and one rule without matches, named `default`, carrying
    /// `authorizations` and no filters (`http::default` / `grpc::default` in
    /// `linkerd/proxy/server-policy/src`).
    pub fn catch_all(authorizations: Arc<[Authorization]>) -> Self {
        Self {
            hosts: vec![],
            rules: vec![super::Rule {
                matches: vec![],
                policy: RoutePolicy {
                    meta: Meta::new_default("default"),
                    authorizations,
                    filters: vec![],
                },
            }],
        }
    }
}

// === Meta ===

impl Meta {
    /// The meta of a resource described by labels (`Meta::try_new_with_default` in
    /// `linkerd/proxy/server-policy/src/meta.rs`): `name` is required; `group` defaults to
    /// `default_group`; group `""` with kind `default` is a `Default`. Without a `kind` label,
    /// a name `default:x` is the `Default` `x`, a name `k:x` the resource `x` of kind `k`, and
    /// any other name is of kind `default_kind`.
    pub fn from_labels(
        mut labels: HashMap<String, String>,
        default_group: &'static str,
        default_kind: &'static str,
    ) -> Result<Arc<Meta>, InvalidMeta> {
        let name = labels.remove("name").ok_or(InvalidMeta::Name)?;
        let group = labels
            .remove("group")
            .unwrap_or_else(|| default_group.to_string());

        if let Some(kind) = labels.remove("kind") {
            if group.is_empty() && kind == "default" {
                return Ok(Meta::new_default(name));
            }
            return Ok(Arc::new(Meta::Resource {
                group,
                kind,
                name,
                location: Location::default(),
            }));
        }

        let meta = match name.split_once(':') {
            Some(("default", name)) => return Ok(Meta::new_default(name.to_string())),
            Some((kind, name)) => Meta::Resource {
                group,
                kind: kind.to_string(),
                name: name.to_string(),
                location: Location::default(),
            },
            None => Meta::Resource {
                group,
                kind: default_kind.to_string(),
                name,
                location: Location::default(),
            },
        };
        Ok(Arc::new(meta))
    }
}

/// `Metadata`: a default's name, or a resource's group, kind and name, with its namespace,
/// section and port (which equality ignores; outbound metrics label with them).
impl TryFrom<meta_api::Metadata> for Meta {
    type Error = InvalidMeta;

    fn try_from(pb: meta_api::Metadata) -> Result<Self, Self::Error> {
        match pb.kind.ok_or(InvalidMeta::Missing)? {
            meta_api::metadata::Kind::Default(name) => Ok(Self::Default { name: name.into() }),
            meta_api::metadata::Kind::Resource(r) => Ok(Self::Resource {
                group: r.group,
                kind: r.kind,
                name: r.name,
                location: Location {
                    namespace: r.namespace,
                    section: r.section,
                    port: u16::try_from(r.port).ok().filter(|p| *p != 0),
                },
            }),
        }
    }
}

// === Authorization ===

/// `Authz` (`linkerd/proxy/server-policy/src/authz.rs`): at least one network, each with a
/// net; an authentication; the meta from `metadata`, or else from labels (group
/// `policy.linkerd.io`, kind `serverauthorization`).
impl TryFrom<api::Authz> for Authorization {
    type Error = InvalidAuthz;

    fn try_from(proto: api::Authz) -> Result<Self, Self::Error> {
        use api::authn::{permit_mesh_tls::Clients, Permit};

        let api::Authz {
            networks,
            authentication,
            labels,
            metadata,
        } = proto;

        if networks.is_empty() {
            return Err(InvalidAuthz::MissingNetworks);
        }
        let networks = networks
            .into_iter()
            .map(|api::Network { net, except }| {
                let net = net.ok_or(InvalidAuthz::MissingNetwork)?.try_into()?;
                let except = except
                    .into_iter()
                    .map(ipnet::IpNet::try_from)
                    .collect::<Result<_, _>>()?;
                Ok(Network { net, except })
            })
            .collect::<Result<Vec<_>, InvalidAuthz>>()?;

        let permit = authentication
            .and_then(|a| a.permit)
            .ok_or(InvalidAuthz::MissingAuthentications)?;
        let authentication = match permit {
            Permit::Unauthenticated(_) => Authentication::Unauthenticated,
            Permit::MeshTls(tls) => {
                match tls.clients.ok_or(InvalidAuthz::MissingAuthentications)? {
                    Clients::Unauthenticated(_) => Authentication::TlsUnauthenticated,
                    Clients::Identities(ids) => Authentication::TlsAuthenticated {
                        identities: ids.identities.into_iter().map(|id| id.name).collect(),
                        suffixes: ids
                            .suffixes
                            .into_iter()
                            .map(|s| Suffix::from(s.parts))
                            .collect(),
                    },
                }
            }
        };

        let meta = match metadata {
            Some(m) => Arc::new(Meta::try_from(m)?),
            None => Meta::from_labels(labels, "policy.linkerd.io", "serverauthorization")?,
        };

        Ok(Authorization {
            networks,
            authentication,
            meta,
        })
    }
}

// === LocalRateLimit ===

/// `HttpLocalRateLimit` (`linkerd/proxy/server-policy/src/local_rate_limit.rs`): zero limits
/// are no limit; an override without a (non-zero) limit is dropped, as are override
/// identities linkerd2-proxy cannot parse as an identity.
impl TryFrom<api::HttpLocalRateLimit> for LocalRateLimit {
    type Error = InvalidMeta;

    fn try_from(proto: api::HttpLocalRateLimit) -> Result<Self, Self::Error> {
        let meta = proto
            .metadata
            .map(Meta::try_from)
            .transpose()?
            .map(Arc::new);
        let rps = |l: Option<api::http_local_rate_limit::Limit>| {
            l.and_then(|l| NonZeroU32::new(l.requests_per_second))
        };
        let total = rps(proto.total);
        let per_identity = rps(proto.identity);
        let overrides = proto
            .overrides
            .into_iter()
            .filter_map(|o| {
                let requests_per_second = rps(o.limit)?;
                let identities = o
                    .clients
                    .into_iter()
                    .flat_map(|c| c.identities)
                    .map(|id| id.name)
                    .filter(|name| is_identity(name))
                    .collect();
                Some(RateLimitOverride {
                    requests_per_second,
                    identities,
                })
            })
            .collect();
        Ok(LocalRateLimit::new(meta, total, per_identity, overrides))
    }
}

/// Whether linkerd2-proxy's `Id::from_str` accepts `name`: a DNS name without a trailing dot,
/// or else a URL, approximated here as a URL scheme followed by `:`.
fn is_identity(name: &str) -> bool {
    if is_dns_id(name) {
        return true;
    }
    let Some((scheme, _)) = name.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

// === HTTP routes ===

fn try_http_route(
    proto: api::HttpRoute,
    server_authzs: &[Authorization],
) -> Result<HttpRoute, InvalidRoute> {
    let api::HttpRoute {
        metadata,
        hosts,
        authorizations,
        rules,
    } = proto;

    let hosts = hosts
        .into_iter()
        .map(MatchHost::try_from)
        .collect::<Result<_, _>>()?;
    let authorizations = mk_authorizations(authorizations, server_authzs)?;
    let meta = Arc::new(Meta::try_from(metadata.ok_or(InvalidMeta::Missing)?)?);

    let rules = rules
        .into_iter()
        .map(|rule| {
            let matches = rule
                .matches
                .into_iter()
                .map(MatchRequest::try_from)
                .collect::<Result<_, _>>()?;
            let filters = rule
                .filters
                .into_iter()
                .map(|f| {
                    use api::http_route::filter::Kind;
                    Ok(match f.kind {
                        Some(Kind::RequestHeaderModifier(m)) => {
                            HttpFilter::RequestHeaders(m.try_into()?)
                        }
                        Some(Kind::Redirect(r)) => HttpFilter::Redirect(r.try_into()?),
                        Some(Kind::FailureInjector(f)) => HttpFilter::InjectFailure(f.try_into()?),
                        None => HttpFilter::InternalError(
                            "server policy configured with unknown filter",
                        ),
                    })
                })
                .collect::<Result<_, InvalidFilter>>()?;
            Ok(HttpRule {
                matches,
                policy: RoutePolicy {
                    meta: meta.clone(),
                    authorizations: authorizations.clone(),
                    filters,
                },
            })
        })
        .collect::<Result<_, InvalidRoute>>()?;

    Ok(HttpRoute { hosts, rules })
}

/// `HostMatch`: an exact host (not validated), or a suffix's reversed labels.
impl TryFrom<http_api::HostMatch> for MatchHost {
    type Error = InvalidMatch;

    fn try_from(hm: http_api::HostMatch) -> Result<Self, Self::Error> {
        match hm.r#match.ok_or(InvalidMatch::MissingHost)? {
            http_api::host_match::Match::Exact(h) => Ok(Self::Exact(h)),
            http_api::host_match::Match::Suffix(s) => Ok(Self::Suffix(s.reverse_labels)),
        }
    }
}

/// `HttpRouteMatch` (`linkerd/http/route/src/http/match.rs` and its submodules).
impl TryFrom<http_api::HttpRouteMatch> for MatchRequest {
    type Error = InvalidMatch;

    fn try_from(rm: http_api::HttpRouteMatch) -> Result<Self, Self::Error> {
        let path = rm.path.map(MatchPath::try_from).transpose()?;
        let headers = rm
            .headers
            .into_iter()
            .map(MatchHeader::try_from)
            .collect::<Result<_, _>>()?;
        let query_params = rm
            .query_params
            .into_iter()
            .map(MatchQueryParam::try_from)
            .collect::<Result<_, _>>()?;
        let method = rm.method.map(Method::try_from).transpose()?;
        Ok(Self {
            path,
            headers,
            query_params,
            method,
        })
    }
}

impl TryFrom<http_api::PathMatch> for MatchPath {
    type Error = InvalidMatch;

    fn try_from(pm: http_api::PathMatch) -> Result<Self, Self::Error> {
        use http_api::path_match::Kind;
        match pm.kind.ok_or(InvalidMatch::MissingPath)? {
            Kind::Exact(p) => Ok(Self::Exact(p)),
            Kind::Prefix(p) => Ok(Self::Prefix(p)),
            Kind::Regex(re) => Ok(Self::Regex(re.parse()?)),
        }
    }
}

impl TryFrom<http_api::HeaderMatch> for MatchHeader {
    type Error = InvalidMatch;

    fn try_from(hm: http_api::HeaderMatch) -> Result<Self, Self::Error> {
        use http_api::header_match::Value;
        let name = HeaderName::from_bytes(hm.name.as_bytes())?;
        match hm.value.ok_or(InvalidMatch::MissingHeaderValue)? {
            Value::Exact(v) => Ok(Self::Exact(name, HeaderValue::try_from(v)?)),
            Value::Regex(re) => Ok(Self::Regex(name, re.parse()?)),
        }
    }
}

impl TryFrom<http_api::QueryParamMatch> for MatchQueryParam {
    type Error = InvalidMatch;

    fn try_from(qm: http_api::QueryParamMatch) -> Result<Self, Self::Error> {
        use http_api::query_param_match::Value;
        if qm.name.is_empty() {
            return Err(InvalidMatch::MissingQueryParamName);
        }
        match qm.value.ok_or(InvalidMatch::MissingQueryParamValue)? {
            Value::Exact(v) => Ok(Self::Exact(qm.name, v)),
            Value::Regex(re) => Ok(Self::Regex(qm.name, re.parse()?)),
        }
    }
}

// === HTTP filters ===

/// `RequestHeaderModifier` (`linkerd/http/route/src/http/filter/modify_header.rs`).
impl TryFrom<http_api::RequestHeaderModifier> for ModifyHeader {
    type Error = InvalidFilter;

    fn try_from(rhm: http_api::RequestHeaderModifier) -> Result<Self, Self::Error> {
        fn pairs(
            hs: Option<http_types::Headers>,
        ) -> Result<Vec<(HeaderName, HeaderValue)>, InvalidFilter> {
            hs.into_iter()
                .flat_map(|h| h.headers)
                .map(|h| {
                    let name = h.name.parse::<HeaderName>()?;
                    let value = HeaderValue::from_bytes(&h.value)?;
                    Ok((name, value))
                })
                .collect()
        }
        Ok(Self {
            add: pairs(rhm.add)?,
            set: pairs(rhm.set)?,
            remove: rhm
                .remove
                .into_iter()
                .map(|n| n.parse::<HeaderName>())
                .collect::<Result<_, _>>()?,
        })
    }
}

/// `RequestRedirect` (`linkerd/http/route/src/http/filter/redirect.rs`): a host with a port
/// replaces the whole authority, a host alone only the host, a port alone only the port;
/// paths must be absolute; status 0 means the default (301).
impl TryFrom<http_api::RequestRedirect> for RedirectRequest {
    type Error = InvalidFilter;

    fn try_from(rr: http_api::RequestRedirect) -> Result<Self, Self::Error> {
        use http_api::path_modifier::Replace;

        let scheme = rr.scheme.map(http::uri::Scheme::try_from).transpose()?;

        let port = u16::try_from(rr.port).map_err(|_| InvalidFilter::Port(rr.port))?;
        let authority = match (rr.host, NonZeroU16::new(port)) {
            (h, p) if h.is_empty() => p.map(AuthorityOverride::Port),
            (h, Some(p)) => Some(AuthorityOverride::Exact(Authority::try_from(format!(
                "{h}:{p}"
            ))?)),
            (h, None) => Some(AuthorityOverride::Host(Authority::try_from(h)?)),
        };

        let path = rr
            .path
            .and_then(|p| p.replace)
            .map(|p| match p {
                Replace::Full(path) if path.starts_with('/') => {
                    Ok(ModifyPath::ReplaceFullPath(path))
                }
                Replace::Prefix(prefix) if prefix.starts_with('/') => {
                    Ok(ModifyPath::ReplacePrefixMatch(prefix))
                }
                _ => Err(InvalidFilter::RelativePath),
            })
            .transpose()?;

        let status =
            match u16::try_from(rr.status).map_err(|_| InvalidFilter::StatusNonU16(rr.status))? {
                0 => None,
                s => Some(StatusCode::from_u16(s)?),
            };

        Ok(Self {
            scheme,
            authority,
            path,
            status,
        })
    }
}

/// `HttpFailureInjector` (`linkerd/http/route/src/http/filter/inject_failure.rs`): without a
/// ratio, every request fails.
impl TryFrom<http_api::HttpFailureInjector> for InjectFailure<FailureResponse> {
    type Error = InvalidFilter;

    fn try_from(proto: http_api::HttpFailureInjector) -> Result<Self, Self::Error> {
        let status =
            u16::try_from(proto.status).map_err(|_| InvalidFilter::StatusNonU16(proto.status))?;
        Ok(Self {
            response: FailureResponse {
                status: StatusCode::from_u16(status)?,
                message: proto.message.into(),
            },
            distribution: distribution(proto.ratio)?,
        })
    }
}

fn distribution(ratio: Option<http_api::Ratio>) -> Result<Distribution, InvalidDistribution> {
    match ratio {
        Some(r) => Distribution::from_ratio(r.numerator, r.denominator),
        None => Ok(Distribution::default()),
    }
}

// === gRPC routes ===

fn try_grpc_route(
    proto: api::GrpcRoute,
    server_authzs: &[Authorization],
) -> Result<GrpcRoute, InvalidRoute> {
    let api::GrpcRoute {
        metadata,
        hosts,
        authorizations,
        rules,
    } = proto;

    let hosts = hosts
        .into_iter()
        .map(MatchHost::try_from)
        .collect::<Result<_, _>>()?;
    let authorizations = mk_authorizations(authorizations, server_authzs)?;
    let meta = Arc::new(Meta::try_from(metadata.ok_or(InvalidMeta::Missing)?)?);

    let rules = rules
        .into_iter()
        .map(|rule| {
            let matches = rule
                .matches
                .into_iter()
                .map(MatchGrpc::try_from)
                .collect::<Result<_, _>>()?;
            let filters = rule
                .filters
                .into_iter()
                .map(|f| {
                    use api::grpc_route::filter::Kind;
                    Ok(match f.kind {
                        Some(Kind::FailureInjector(f)) => GrpcFilter::InjectFailure(f.try_into()?),
                        Some(Kind::RequestHeaderModifier(m)) => {
                            GrpcFilter::RequestHeaders(m.try_into()?)
                        }
                        None => GrpcFilter::InternalError(
                            "server policy configured with unknown filter",
                        ),
                    })
                })
                .collect::<Result<_, InvalidFilter>>()?;
            Ok(GrpcRule {
                matches,
                policy: RoutePolicy {
                    meta: meta.clone(),
                    authorizations: authorizations.clone(),
                    filters,
                },
            })
        })
        .collect::<Result<_, InvalidRoute>>()?;

    Ok(GrpcRoute { hosts, rules })
}

/// `GrpcRouteMatch` (`linkerd/http/route/src/grpc/match.rs`): the RPC match is required; an
/// empty service or method matches any.
impl TryFrom<grpc_api::GrpcRouteMatch> for MatchGrpc {
    type Error = InvalidMatch;

    fn try_from(pb: grpc_api::GrpcRouteMatch) -> Result<Self, Self::Error> {
        let rpc = pb.rpc.ok_or(InvalidMatch::MissingRpc)?;
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Ok(Self {
            rpc: MatchRpc {
                service: non_empty(rpc.service),
                method: non_empty(rpc.method),
            },
            headers: pb
                .headers
                .into_iter()
                .map(MatchHeader::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// `GrpcFailureInjector` (`linkerd/http/route/src/grpc/filter/inject_failure.rs`).
impl TryFrom<grpc_api::GrpcFailureInjector> for InjectFailure<GrpcFailureResponse> {
    type Error = InvalidFilter;

    fn try_from(proto: grpc_api::GrpcFailureInjector) -> Result<Self, Self::Error> {
        Ok(Self {
            response: GrpcFailureResponse {
                code: u16::try_from(proto.code)
                    .map_err(|_| InvalidFilter::GrpcCodeNonU16(proto.code))?,
                message: proto.message.into(),
            },
            distribution: distribution(proto.ratio)?,
        })
    }
}
