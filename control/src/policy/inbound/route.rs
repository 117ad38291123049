//! Route selection shared by HTTP and gRPC routes (`linkerd/http/route/src/lib.rs`) and host
//! matching (`linkerd/http/route/src/http/match/host.rs`), on a borrowed view of a request.

use super::{Authorization, Meta};
use http::HeaderName;
use std::sync::Arc;

/// A request as route matching sees it, borrowed from whichever HTTP server parsed it.
///
/// Fill it from an `http::Request` (h2) as `method().as_str()`, `uri().scheme_str()`,
/// `uri().authority()`, `uri().path_and_query()` and `headers()`, or from an HTTP/1 request
/// line and header list the same way.
///
/// `authority` is the request's authority as linkerd2-proxy's `NormalizeUri`
/// (`linkerd/proxy/http/src/normalize_uri.rs`) leaves it before policy: an HTTP/2
/// `:authority` or an absolute-form target's authority; else (HTTP/1) the `Host` header; else
/// the original destination address. Host matches use its host part, as `Uri::host` does.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// The method, case-sensitive (`GET`).
    pub method: &'a str,
    /// The scheme, when known (`:scheme`, absolute-form); used only by redirects, which
    /// default to `http`.
    pub scheme: Option<&'a str>,
    /// `host[:port]` (see above).
    pub authority: Option<&'a str>,
    /// The origin-form target, `/path?query` (a fragment, if any, is ignored as `http::Uri`
    /// drops it).
    pub path_and_query: &'a str,
    /// The request's headers.
    pub headers: &'a dyn HeaderSource,
}

/// Header lookup for route matches, without copying headers.
///
/// Implemented for `http::HeaderMap`, for `Vec`s and slices of `(name, value)` pairs (names
/// compared ASCII-case-insensitively), and for closures through [`FnHeaders`].
pub trait HeaderSource {
    /// Calls `pred` with each value of the header `name`, in order, until it returns true;
    /// returns whether it did.
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

/// A [`HeaderSource`] with no headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHeaders;

/// A [`HeaderSource`] from a closure with the signature of [`HeaderSource::any_value`].
#[derive(Clone, Copy, Debug)]
pub struct FnHeaders<F>(pub F);

/// Routing rules under a common set of hostnames (`Route` in `linkerd/http/route/src/lib.rs`).
/// `P` is what a rule applies: an inbound [`RoutePolicy`], or an outbound rule's backends,
/// timeouts and retries (`crate::policy::outbound`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<M, P> {
    /// If any, the request's host must match one of them; when empty, all hosts match.
    pub hosts: Vec<MatchHost>,
    pub rules: Vec<Rule<M, P>>,
}

/// A route's rule: the request matches if any of `matches` does, or always when there are
/// none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule<M, P> {
    pub matches: Vec<M>,
    pub policy: P,
}

/// What a matched rule applies (`RoutePolicy` in `linkerd/proxy/server-policy/src/lib.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePolicy<F> {
    /// The route's meta (`route_*` labels), shared by all of its rules.
    pub meta: Arc<Meta>,
    /// The route's own authorizations followed by the server's.
    pub authorizations: Arc<[Authorization]>,
    /// Applied in order once the request is authorized.
    pub filters: Vec<F>,
}

/// A request matcher whose matches can be ranked (`Match` in `linkerd/http/route/src/lib.rs`).
pub trait Match {
    /// How well a request matched; greater is preferred. `Default` is what a rule with no
    /// matches scores.
    type Summary: Default + Ord;

    /// The match's summary, or `None` if the request does not match.
    fn match_request(&self, req: &RequestView<'_>) -> Option<Self::Summary> {
        self.match_prepared(&Prepared::new(req))
    }

    /// [`Match::match_request`] on a request whose parts were found once for all the
    /// routes ([`find`]).
    fn match_prepared(&self, req: &Prepared<'_, '_>) -> Option<Self::Summary>;
}

/// A request as the matches read it: the view, and its path and query, split once per
/// request rather than once per route.
pub struct Prepared<'v, 'a> {
    pub view: &'v RequestView<'a>,
    /// [`RequestView::path`].
    pub path: &'a str,
    /// [`RequestView::query`].
    pub query: Option<&'a str>,
}

impl<'v, 'a> Prepared<'v, 'a> {
    pub fn new(view: &'v RequestView<'a>) -> Self {
        Prepared {
            view,
            path: view.path(),
            query: view.query(),
        }
    }
}

/// How well a request matched a rule: first the host match (a route with hosts that match
/// beats one without hosts), then the route kind's own summary. Greater is preferred.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteMatch<S> {
    /// `None` when the route has no hosts.
    pub host: Option<HostMatch>,
    pub route: S,
}

/// A hostname match (`MatchHost` in `linkerd/http/route/src/http/match/host.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MatchHost {
    /// The host, ASCII-case-insensitively. Unless it ends with a dot, a request host's
    /// trailing dot is ignored.
    Exact(String),
    /// `*.example.com` as the reversed labels `["com", "example"]`; a leading empty label
    /// (`*.example.com.`) requires the request host's trailing dot. At least one label must
    /// precede the suffix.
    Suffix(Vec<String>),
}

/// How a host matched: exact beats any suffix; longer beats shorter within each kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// The length of the exact match.
    Exact(usize),
    /// The length of the suffix matched, dots included (`.example.com`).
    Suffix(usize),
}

/// Finds the best rule for a request (`find` in `linkerd/http/route/src/lib.rs`).
///
/// Each route with hosts must match the request's host; its host summary is its best host
/// match. Each rule scores its best match (the default [`Match::Summary`] with no matches). The
/// greatest [`RouteMatch`] wins, and on a tie the first route (then the first rule) wins.
/// Within one rule (and among one route's hosts) the summary is `Iterator::max`'s, the last of
/// equal ones, as in linkerd2-proxy (it matters only to a redirect's prefix replacement).
pub fn find<'r, M: Match, P>(
    routes: &'r [Route<M, P>],
    req: &RequestView<'_>,
) -> Option<(RouteMatch<M::Summary>, &'r P)> {
    let prepared = Prepared::new(req);
    find_among(routes.iter(), req, &prepared)
}

/// [`find`] among `candidates`, a subsequence of the routes in their order (the routes a
/// [`PathIndex`] leaves: the others cannot match the request's path).
fn find_among<'r, M: Match + 'r, P: 'r>(
    candidates: impl Iterator<Item = &'r Route<M, P>>,
    req: &RequestView<'_>,
    prepared: &Prepared<'_, '_>,
) -> Option<(RouteMatch<M::Summary>, &'r P)> {
    let host = req.host();
    best(candidates.filter_map(|route| {
        let host = if route.hosts.is_empty() {
            None
        } else {
            let host = host?;
            let matched = route
                .hosts
                .iter()
                .filter_map(|m| m.summarize_match(host))
                .max()?;
            Some(matched)
        };

        let (summary, policy) = best(route.rules.iter().filter_map(|rule| {
            if rule.matches.is_empty() {
                return Some((M::Summary::default(), &rule.policy));
            }
            let summary = rule
                .matches
                .iter()
                .filter_map(|m| m.match_prepared(prepared))
                .max()?;
            Some((summary, &rule.policy))
        }))?;

        Some((
            RouteMatch {
                host,
                route: summary,
            },
            policy,
        ))
    }))
}

/// HTTP routes indexed by the first path segment their path matches need, so that a request
/// is matched against the routes that can match its path rather than against all of them.
/// A route is indexed under a segment only when every match of every rule is an exact or
/// (non-`/`) prefix path match; any other route (a rule without matches, a match without a
/// path, a regex, the `/` prefix) is a candidate for every request. Candidates keep the
/// routes' order, so the result is [`find`]'s.
#[derive(Debug, Default)]
pub struct PathIndex {
    by_segment: std::collections::HashMap<Box<str>, Vec<u32>>,
    always: Vec<u32>,
}

impl PathIndex {
    /// The index of `routes`.
    pub fn new<P>(routes: &[Route<super::MatchRequest, P>]) -> Self {
        use super::MatchPath;
        let mut index = PathIndex::default();
        for (i, route) in routes.iter().enumerate() {
            let i = i as u32;
            let mut segments = Vec::new();
            let mut always = false;
            for rule in &route.rules {
                if rule.matches.is_empty() {
                    always = true;
                }
                for m in &rule.matches {
                    match &m.path {
                        Some(MatchPath::Exact(path)) => segments.push(first_segment(path)),
                        Some(MatchPath::Prefix(prefix))
                            if !prefix.trim_end_matches('/').is_empty() =>
                        {
                            segments.push(first_segment(prefix.trim_end_matches('/')))
                        }
                        _ => always = true,
                    }
                }
            }
            if always {
                index.always.push(i);
                continue;
            }
            segments.sort_unstable();
            segments.dedup();
            for segment in segments {
                let Some(segment) = segment else {
                    // A path that does not start with `/` matches no request path.
                    continue;
                };
                index.by_segment.entry(segment.into()).or_default().push(i);
            }
        }
        index
    }

    /// [`find`], among the routes that can match the request's path.
    pub fn find<'r, P>(
        &self,
        routes: &'r [Route<super::MatchRequest, P>],
        req: &RequestView<'_>,
    ) -> Option<(RouteMatch<super::RequestMatch>, &'r P)> {
        let prepared = Prepared::new(req);
        let indexed: &[u32] = first_segment(prepared.path)
            .and_then(|segment| self.by_segment.get(segment))
            .map_or(&[], Vec::as_slice);
        // Both lists ascend: merge them, in the routes' order.
        let (mut a, mut b) = (indexed.iter().peekable(), self.always.iter().peekable());
        let merged = std::iter::from_fn(move || {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            next.map(|&i| &routes[i as usize])
        });
        find_among(merged, req, &prepared)
    }
}

/// The first segment of a path (`/a/b` → `a`, `/` → ``), `None` when it does not start with
/// `/`.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').next().unwrap_or(""))
}

/// The greatest item, the first of equal ones (`best` in `linkerd/http/route/src/lib.rs`).
#[inline]
fn best<S: Ord, P>(items: impl Iterator<Item = (S, P)>) -> Option<(S, P)> {
    items.reduce(|(s0, p0), (s1, p1)| if s0 >= s1 { (s0, p0) } else { (s1, p1) })
}

// === impl RequestView ===

impl<'a> RequestView<'a> {
    /// The path, as `http::Uri::path` gives it: up to `?` (or `#`), and `/` when empty.
    pub fn path(&self) -> &'a str {
        let pq = self.without_fragment();
        let path = match pq.find('?') {
            Some(i) => &pq[..i],
            None => pq,
        };
        if path.is_empty() {
            "/"
        } else {
            path
        }
    }

    /// The query, as `http::Uri::query` gives it: after the first `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        let pq = self.without_fragment();
        pq.find('?').map(|i| &pq[i + 1..])
    }

    /// The authority's host, as `http::uri::Authority::host` gives it (an IPv6 literal keeps
    /// its brackets).
    pub fn host(&self) -> Option<&'a str> {
        let authority = self.authority?;
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        if host_port.starts_with('[') {
            let end = host_port.find(']').map_or(host_port.len(), |i| i + 1);
            Some(&host_port[..end])
        } else {
            Some(host_port.split(':').next().unwrap_or(host_port))
        }
    }

    /// The request's URI as linkerd2-proxy's normalized `http::Uri` (scheme `http` when none
    /// is known), for [`RedirectRequest::apply`](super::RedirectRequest::apply). Allocates;
    /// fails without an authority.
    pub fn uri(&self) -> Result<http::Uri, http::Error> {
        let mut uri = http::Uri::builder().scheme(self.scheme.unwrap_or("http"));
        if let Some(authority) = self.authority {
            uri = uri.authority(authority);
        }
        uri.path_and_query(self.without_fragment()).build()
    }

    fn without_fragment(&self) -> &'a str {
        let pq = self.path_and_query;
        match pq.find('#') {
            Some(i) => &pq[..i],
            None => pq,
        }
    }
}

impl std::fmt::Debug for RequestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestView")
            .field("method", &self.method)
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("path_and_query", &self.path_and_query)
            .finish_non_exhaustive()
    }
}

// === impl HeaderSource ===

impl HeaderSource for http::HeaderMap {
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.get_all(name).iter().any(|v| pred(v.as_bytes()))
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderSource for [(N, V)] {
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let name = name.as_str();
        self.iter()
            .filter(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
            .any(|(_, v)| pred(v.as_ref()))
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderSource for &[(N, V)] {
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        (**self).any_value(name, pred)
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderSource for Vec<(N, V)> {
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.as_slice().any_value(name, pred)
    }
}

impl HeaderSource for NoHeaders {
    fn any_value(&self, _: &HeaderName, _: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        false
    }
}

impl<F> HeaderSource for FnHeaders<F>
where
    F: Fn(&HeaderName, &mut dyn FnMut(&[u8]) -> bool) -> bool,
{
    fn any_value(&self, name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        (self.0)(name, pred)
    }
}

// === impl MatchHost ===

impl MatchHost {
    /// How `host` (a request's host, without port) matches, if it does.
    pub fn summarize_match(&self, mut host: &str) -> Option<HostMatch> {
        match self {
            Self::Exact(h) => {
                if !h.ends_with('.') {
                    host = host.strip_suffix('.').unwrap_or(host);
                }
                h.eq_ignore_ascii_case(host)
                    .then_some(HostMatch::Exact(h.len()))
            }
            Self::Suffix(labels) => {
                if labels.first().map(String::as_str) != Some("") {
                    host = host.strip_suffix('.').unwrap_or(host);
                }
                let mut len = 0;
                for label in labels {
                    host = strip_suffix_ignore_ascii_case(host, label)?;
                    host = host.strip_suffix('.')?;
                    len += label.len() + 1;
                }
                Some(HostMatch::Suffix(len))
            }
        }
    }
}

fn strip_suffix_ignore_ascii_case<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    let at = host.len().checked_sub(suffix.len())?;
    let (head, tail) = host.split_at_checked(at)?;
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// A host match written as in an HTTPRoute: `example.com`, or `*.example.com`. IP addresses
/// are refused, as in linkerd2-proxy.
impl std::str::FromStr for MatchHost {
    type Err = InvalidHost;

    fn from_str(host: &str) -> Result<Self, Self::Err> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return Err(InvalidHost);
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            return Ok(Self::Suffix(
                suffix.split('.').rev().map(String::from).collect(),
            ));
        }
        Ok(Self::Exact(host.to_string()))
    }
}

/// A host match that is an IP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host must not be an IP address")]
pub struct InvalidHost;

// === impl HostMatch ===

impl PartialOrd for HostMatch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HostMatch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Self::Exact(l), Self::Exact(r)) | (Self::Suffix(l), Self::Suffix(r)) => l.cmp(r),
            (Self::Exact(_), Self::Suffix(_)) => Ordering::Greater,
            (Self::Suffix(_), Self::Exact(_)) => Ordering::Less,
        }
    }
}
