//! The pure model of Linkerd's tap `Observe` request: the `limit` check and the `match` tree.
//!
//! A tap client (`linkerd viz tap`) sends an `ObserveRequest` whose `match` field is a tree of
//! `all` / `any` / `not` over leaf matches on the source and destination TCP address (netmask
//! or port range), the destination endpoint's and the route's labels, and the HTTP request's
//! scheme, method, authority and path. This module decodes that tree once ([`Match`], rejecting
//! invalid trees with [`InvalidMatch`], reported as gRPC `INVALID_ARGUMENT`) and evaluates it
//! against a request's [`Observed`] view without allocating.
//!
//! The rules mirror linkerd2-proxy's `linkerd/proxy/tap/src/grpc/match_.rs` (decoding and
//! matching) and `linkerd/proxy/tap/src/grpc/server.rs` (the `limit` check and the error
//! status); the request view mirrors the `Inspect` trait of `linkerd/proxy/tap/src/lib.rs`.

use ipnet::{Ipv4Net, Ipv6Net};
use linkerd2_proxy_api::http_types::scheme;
use linkerd2_proxy_api::net::ip_address;
use linkerd2_proxy_api::tap::observe_request;
use linkerd2_proxy_api::tap::observe_request::r#match as pb;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

pub mod registry;
pub mod server;
#[cfg(test)]
mod tests;

pub use registry::{HeaderSource, TapMetrics, TapRequest, TapSet, TapTls, Tapped, TapsRx};

/// Checks an `ObserveRequest`'s `limit` (the number of requests to tap).
///
/// Mirrors `Server::observe` in linkerd2-proxy's `linkerd/proxy/tap/src/grpc/server.rs`: a
/// zero limit is refused with `INVALID_ARGUMENT` and the message `limit must be positive`.
pub fn check_limit(limit: u32) -> Result<(), String> {
    if limit == 0 {
        return Err("limit must be positive".to_string());
    }
    Ok(())
}

/// Why an `ObserveRequest`'s `match` tree was refused.
///
/// The variants and their messages are those of linkerd2-proxy's `InvalidMatch`
/// (`linkerd/proxy/tap/src/grpc/match_.rs`); the tap server returns the message as an
/// `INVALID_ARGUMENT` status (`linkerd/proxy/tap/src/grpc/server.rs`).
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
pub enum InvalidMatch {
    /// A required field (a match, a `not` operand, a label key or value, a port range, a
    /// netmask's address or mask, an HTTP match's value) is missing or empty.
    #[error("missing required field")]
    Empty,
    /// A port range bound exceeds 65535, or its minimum exceeds its maximum.
    #[error("invalid port number")]
    InvalidPort,
    /// A netmask's prefix length is too long for its address family.
    #[error("invalid network address")]
    InvalidNetwork,
    /// An HTTP method is an unknown registered value or not a valid token.
    #[error("invalid http method")]
    InvalidHttpMethod,
    /// A scheme is an unknown registered value or not a valid URI scheme.
    #[error("invalid request scheme")]
    InvalidScheme,
}

impl From<InvalidMatch> for tonic::Status {
    /// The status the tap server answers an invalid match with (`INVALID_ARGUMENT`).
    fn from(e: InvalidMatch) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// A decoded `ObserveRequest.match` tree.
///
/// Mirrors `Match` in linkerd2-proxy's `linkerd/proxy/tap/src/grpc/match_.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Matches when any operand matches (never for an empty list).
    Any(Vec<Match>),
    /// Matches when every operand matches (always for an empty list).
    All(Vec<Match>),
    /// Matches when the operand does not.
    Not(Box<Match>),
    /// The request's source (client) address.
    Source(TcpMatch),
    /// The request's destination (server) address.
    Destination(TcpMatch),
    /// A label of the destination endpoint (`dst_*` in tap output).
    DestinationLabel(LabelMatch),
    /// A label of the route the request took.
    RouteLabel(LabelMatch),
    /// The HTTP request's scheme, method, authority or path.
    Http(HttpMatch),
}

/// An exact `key` = `value` label match; a missing label never matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMatch {
    key: String,
    value: String,
}

/// A match on a TCP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpMatch {
    /// The port lies within `min..=max`.
    PortRange(u16, u16),
    /// The IP lies within the network (IPv4 and IPv6 never match each other's networks).
    Net(NetMatch),
}

/// A network of one address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMatch {
    Net4(Ipv4Net),
    Net6(Ipv6Net),
}

/// A match on the HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpMatch {
    /// The request's scheme; a request without one is taken as `http`.
    Scheme(Scheme),
    /// The request's method, compared exactly.
    Method(http::Method),
    /// The request's authority (URI authority, else `Host`); no authority never matches.
    Authority(StringMatch),
    /// The request's URI path.
    Path(StringMatch),
}

/// A decoded scheme, compared as linkerd compares `http::uri::Scheme`s.
///
/// `http` and `https` (registered, or unregistered and spelled in lower case) are the
/// standard schemes; any other unregistered spelling is kept as is and compared ASCII
/// case-insensitively with non-standard request schemes only (so an unregistered `HTTP`
/// never matches, as in linkerd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Other(String),
}

/// An exact or prefix string match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
}

/// Labels a request is observed with, looked up by key.
///
/// Stands for the `Labels` (`Arc<BTreeMap<String, String>>`) that linkerd's `Inspect` returns
/// for the destination endpoint and the route (`linkerd/proxy/tap/src/lib.rs`); `()` is the
/// empty set (linkerd's `None`, which no label match matches).
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for () {
    fn label(&self, _: &str) -> Option<&str> {
        None
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl Labels for [(String, String)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl<const N: usize> Labels for [(&str, &str); N] {
    fn label(&self, key: &str) -> Option<&str> {
        self.as_slice().label(key)
    }
}

impl Labels for Vec<(String, String)> {
    fn label(&self, key: &str) -> Option<&str> {
        self.as_slice().label(key)
    }
}

/// Slices are unsized: pass `&&[..]` (or a `Vec` / array) as an `Observed` label set.
impl<L: Labels + ?Sized> Labels for &L {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

impl<L: Labels + ?Sized> Labels for std::sync::Arc<L> {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

/// What a tap match sees of one request: the borrowed counterpart of linkerd's `Inspect`
/// (`linkerd/proxy/tap/src/lib.rs`) applied to an `http::Request`.
#[derive(Clone, Copy)]
pub struct Observed<'a> {
    /// The client's address.
    pub src: SocketAddr,
    /// The server's (endpoint's) address.
    pub dst: SocketAddr,
    /// The destination endpoint's labels (`&()` when there are none).
    pub dst_labels: &'a dyn Labels,
    /// The route's labels (`&()` when there are none).
    pub route_labels: &'a dyn Labels,
    /// The URI scheme, if the request target has one (linkerd then assumes `http`).
    pub scheme: Option<&'a str>,
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The URI authority, else the `Host` header, if either is present.
    pub authority: Option<&'a str>,
    /// The URI path.
    pub path: &'a str,
}

impl std::fmt::Debug for Observed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("scheme", &self.scheme)
            .field("method", &self.method)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

// === impl Match ===

impl Match {
    /// Decodes `ObserveRequest.match`; a missing match is [`InvalidMatch::Empty`]
    /// (linkerd's `Match::try_new`).
    pub fn try_new(m: Option<observe_request::Match>) -> Result<Self, InvalidMatch> {
        m.ok_or(InvalidMatch::Empty).and_then(Self::try_from)
    }

    /// Whether the observed request satisfies this tree. Allocation-free.
    pub fn matches(&self, req: &Observed<'_>) -> bool {
        match self {
            Match::Any(ms) => ms.iter().any(|m| m.matches(req)),
            Match::All(ms) => ms.iter().all(|m| m.matches(req)),
            Match::Not(m) => !m.matches(req),
            Match::Source(m) => m.matches(req.src),
            Match::Destination(m) => m.matches(req.dst),
            Match::DestinationLabel(m) => m.matches(req.dst_labels),
            Match::RouteLabel(m) => m.matches(req.route_labels),
            Match::Http(m) => m.matches(req),
        }
    }

    /// Decodes an `all`/`any` operand list. Entries whose oneof is unset are skipped, as in
    /// linkerd's `Match::from_seq`.
    fn from_seq(seq: pb::Seq) -> Result<Vec<Self>, InvalidMatch> {
        seq.matches
            .into_iter()
            .filter_map(|m| m.r#match)
            .map(Self::try_from)
            .collect()
    }
}

impl TryFrom<observe_request::Match> for Match {
    type Error = InvalidMatch;

    fn try_from(m: observe_request::Match) -> Result<Self, InvalidMatch> {
        m.r#match
            .ok_or(InvalidMatch::Empty)
            .and_then(Self::try_from)
    }
}

impl TryFrom<pb::Match> for Match {
    type Error = InvalidMatch;

    fn try_from(m: pb::Match) -> Result<Self, InvalidMatch> {
        match m {
            pb::Match::All(seq) => Self::from_seq(seq).map(Match::All),
            pb::Match::Any(seq) => Self::from_seq(seq).map(Match::Any),
            pb::Match::Not(m) => Self::try_from(*m).map(|m| Match::Not(Box::new(m))),
            pb::Match::Source(tcp) => TcpMatch::try_from(tcp).map(Match::Source),
            pb::Match::Destination(tcp) => TcpMatch::try_from(tcp).map(Match::Destination),
            pb::Match::DestinationLabel(l) => LabelMatch::try_from(l).map(Match::DestinationLabel),
            pb::Match::RouteLabel(l) => LabelMatch::try_from(l).map(Match::RouteLabel),
            pb::Match::Http(h) => HttpMatch::try_from(h).map(Match::Http),
        }
    }
}

// === impl LabelMatch ===

impl LabelMatch {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    fn matches(&self, labels: &dyn Labels) -> bool {
        labels.label(&self.key) == Some(self.value.as_str())
    }
}

impl TryFrom<pb::Label> for LabelMatch {
    type Error = InvalidMatch;

    /// Both key and value must be non-empty (linkerd's `LabelMatch::try_from`).
    fn try_from(l: pb::Label) -> Result<Self, InvalidMatch> {
        if l.key.is_empty() || l.value.is_empty() {
            return Err(InvalidMatch::Empty);
        }
        Ok(LabelMatch {
            key: l.key,
            value: l.value,
        })
    }
}

// === impl TcpMatch ===

impl TcpMatch {
    fn matches(&self, addr: SocketAddr) -> bool {
        match self {
            TcpMatch::PortRange(min, max) => (*min..=*max).contains(&addr.port()),
            TcpMatch::Net(net) => net.matches(addr.ip()),
        }
    }
}

impl TryFrom<pb::Tcp> for TcpMatch {
    type Error = InvalidMatch;

    /// Mirrors linkerd's `TcpMatch::try_from`: a port range missing one bound is the single
    /// port given by the other; both missing (zero) is [`InvalidMatch::Empty`]; a bound above
    /// 65535 or `min > max` is [`InvalidMatch::InvalidPort`].
    fn try_from(m: pb::Tcp) -> Result<Self, InvalidMatch> {
        match m.r#match.ok_or(InvalidMatch::Empty)? {
            pb::tcp::Match::Ports(range) => {
                let min = if range.min == 0 { range.max } else { range.min };
                let max = if range.max == 0 { range.min } else { range.max };
                if min == 0 || max == 0 {
                    return Err(InvalidMatch::Empty);
                }
                let min = u16::try_from(min).map_err(|_| InvalidMatch::InvalidPort)?;
                let max = u16::try_from(max).map_err(|_| InvalidMatch::InvalidPort)?;
                if min > max {
                    return Err(InvalidMatch::InvalidPort);
                }
                Ok(TcpMatch::PortRange(min, max))
            }
            pb::tcp::Match::Netmask(mask) => NetMatch::try_from(mask).map(TcpMatch::Net),
        }
    }
}

// === impl NetMatch ===

impl NetMatch {
    fn matches(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (NetMatch::Net4(net), IpAddr::V4(ip)) => net.contains(&ip),
            (NetMatch::Net6(net), IpAddr::V6(ip)) => net.contains(&ip),
            _ => false,
        }
    }
}

impl TryFrom<pb::tcp::Netmask> for NetMatch {
    type Error = InvalidMatch;

    /// Mirrors linkerd's `NetMatch::try_from`: a zero mask or a missing address is
    /// [`InvalidMatch::Empty`]; a mask longer than the address family allows is
    /// [`InvalidMatch::InvalidNetwork`].
    fn try_from(m: pb::tcp::Netmask) -> Result<Self, InvalidMatch> {
        if m.mask == 0 {
            return Err(InvalidMatch::Empty);
        }
        let mask = u8::try_from(m.mask).map_err(|_| InvalidMatch::InvalidNetwork)?;
        match m.ip.and_then(|a| a.ip).ok_or(InvalidMatch::Empty)? {
            ip_address::Ip::Ipv4(ip) => Ipv4Net::new(ip.into(), mask)
                .map(NetMatch::Net4)
                .map_err(|_| InvalidMatch::InvalidNetwork),
            ip_address::Ip::Ipv6(ip) => Ipv6Net::new(ip.into(), mask)
                .map(NetMatch::Net6)
                .map_err(|_| InvalidMatch::InvalidNetwork),
        }
    }
}

// === impl HttpMatch ===

impl HttpMatch {
    fn matches(&self, req: &Observed<'_>) -> bool {
        match self {
            HttpMatch::Scheme(s) => s.matches(req.scheme.unwrap_or("http")),
            HttpMatch::Method(m) => m.as_str() == req.method,
            HttpMatch::Authority(m) => req.authority.is_some_and(|a| m.matches(a)),
            HttpMatch::Path(m) => m.matches(req.path),
        }
    }
}

impl TryFrom<pb::Http> for HttpMatch {
    type Error = InvalidMatch;

    /// Mirrors linkerd's `HttpMatch::try_from`.
    fn try_from(m: pb::Http) -> Result<Self, InvalidMatch> {
        match m.r#match.ok_or(InvalidMatch::Empty)? {
            pb::http::Match::Scheme(s) => {
                Scheme::try_from(s.r#type.ok_or(InvalidMatch::Empty)?).map(HttpMatch::Scheme)
            }
            pb::http::Match::Method(m) => {
                let ty = m.r#type.ok_or(InvalidMatch::Empty)?;
                http::Method::try_from(ty)
                    .map(HttpMatch::Method)
                    .map_err(|_| InvalidMatch::InvalidHttpMethod)
            }
            pb::http::Match::Authority(s) => StringMatch::try_from(s).map(HttpMatch::Authority),
            pb::http::Match::Path(s) => StringMatch::try_from(s).map(HttpMatch::Path),
        }
    }
}

// === impl Scheme ===

impl Scheme {
    /// Compares with a request's scheme as `http::uri::Scheme`'s equality does: URI parsing
    /// recognises `http`/`https` in any case, other schemes compare case-insensitively.
    fn matches(&self, scheme: &str) -> bool {
        match self {
            Scheme::Http => scheme.eq_ignore_ascii_case("http"),
            Scheme::Https => scheme.eq_ignore_ascii_case("https"),
            Scheme::Other(s) => {
                !scheme.eq_ignore_ascii_case("http")
                    && !scheme.eq_ignore_ascii_case("https")
                    && scheme.eq_ignore_ascii_case(s)
            }
        }
    }
}

impl TryFrom<scheme::Type> for Scheme {
    type Error = InvalidMatch;

    /// Registered `HTTP`/`HTTPS` or an unregistered name `http::uri::Scheme` accepts; any
    /// other registered value is [`InvalidMatch::InvalidScheme`].
    fn try_from(t: scheme::Type) -> Result<Self, InvalidMatch> {
        match t {
            scheme::Type::Registered(r) if r == i32::from(scheme::Registered::Http) => {
                Ok(Scheme::Http)
            }
            scheme::Type::Registered(r) if r == i32::from(scheme::Registered::Https) => {
                Ok(Scheme::Https)
            }
            scheme::Type::Registered(_) => Err(InvalidMatch::InvalidScheme),
            scheme::Type::Unregistered(s) => match s.as_str() {
                // `http::uri::Scheme::from_str` recognises only these exact spellings.
                "http" => Ok(Scheme::Http),
                "https" => Ok(Scheme::Https),
                _ => {
                    http::uri::Scheme::from_str(&s).map_err(|_| InvalidMatch::InvalidScheme)?;
                    Ok(Scheme::Other(s))
                }
            },
        }
    }
}

// === impl StringMatch ===

impl StringMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
        }
    }
}

impl TryFrom<pb::http::StringMatch> for StringMatch {
    type Error = InvalidMatch;

    /// An unset oneof is [`InvalidMatch::Empty`]; empty strings are accepted (an empty
    /// prefix matches everything), as in linkerd.
    fn try_from(m: pb::http::StringMatch) -> Result<Self, InvalidMatch> {
        match m.r#match.ok_or(InvalidMatch::Empty)? {
            pb::http::string_match::Match::Exact(s) => Ok(StringMatch::Exact(s)),
            pb::http::string_match::Match::Prefix(s) => Ok(StringMatch::Prefix(s)),
        }
    }
}
