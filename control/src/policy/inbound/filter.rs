//! Route filters (`linkerd/http/route/src/http/filter/{inject_failure,modify_header,redirect}.rs`
//! and `linkerd/http/route/src/grpc/filter/inject_failure.rs`).

use super::http_route::{PathMatch, RequestMatch};
use http::{
    header::{HeaderMap, HeaderName, HeaderValue},
    uri::{Authority, InvalidUri, PathAndQuery, Scheme, Uri},
    StatusCode,
};
use std::{num::NonZeroU16, sync::Arc};

/// Fails a share of requests with `response` (`InjectFailure` in linkerd2-proxy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InjectFailure<T> {
    pub response: T,
    pub distribution: Distribution,
}

/// An HTTP failure: the status and the message (the `l5d-proxy-error` text).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FailureResponse {
    pub status: StatusCode,
    pub message: Arc<str>,
}

/// A gRPC failure: the status code and message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrpcFailureResponse {
    pub code: u16,
    pub message: Arc<str>,
}

/// A Bernoulli distribution of `numerator / denominator`, sampled exactly as
/// `rand::distr::Bernoulli::from_ratio` (which linkerd2-proxy uses) samples it, but from a
/// random `u64` the caller draws.
#[derive(Clone, Copy, Debug)]
pub struct Distribution {
    numerator: u32,
    denominator: u32,
    /// The probability scaled to 2^64; `u64::MAX` means always.
    p_int: u64,
}

/// A ratio that is not a probability: a zero denominator, or a numerator above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid request distribution: {numerator}/{denominator}")]
pub struct InvalidDistribution {
    pub numerator: u32,
    pub denominator: u32,
}

/// Request header changes (`ModifyHeader` in linkerd2-proxy), applied as add, then set, then
/// remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModifyHeader {
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// A path rewrite of a redirect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModifyPath {
    /// Replace the path and query.
    ReplaceFullPath(String),
    /// Replace the prefix a prefix match matched (keeping the query).
    ReplacePrefixMatch(String),
}

/// A redirect (`RedirectRequest` in `linkerd/http/route/src/http/filter/redirect.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RedirectRequest {
    pub scheme: Option<Scheme>,
    pub authority: Option<AuthorityOverride>,
    pub path: Option<ModifyPath>,
    /// `None` means 301.
    pub status: Option<StatusCode>,
}

/// How a redirect changes the authority.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthorityOverride {
    /// Host and port, as is.
    Exact(Authority),
    /// The host, keeping the request's port unless it is the scheme's default.
    Host(Authority),
    /// The port, keeping the request's host; the scheme's default port is left out.
    Port(NonZeroU16),
}

/// Where a redirect sends the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirection {
    pub status: StatusCode,
    pub location: Uri,
}

/// A redirect that cannot be applied to a request: linkerd2-proxy answers 500
/// (`HttpRouteInvalidRedirect`).
#[derive(Debug, thiserror::Error)]
pub enum InvalidRedirect {
    #[error("redirects may only replace the path prefix when a path prefix match applied")]
    ReplacePrefix,

    #[error("redirect produced an invalid location: {0}")]
    Location(#[from] http::Error),

    #[error("redirect produced an invalid authority: {0}")]
    Authority(#[from] InvalidUri),

    #[error("no authority to redirect to")]
    MissingAuthority,
}

// === impl InjectFailure ===

impl<T> InjectFailure<T> {
    /// The failure to answer with, if `random` (a uniformly random `u64`) falls in the
    /// failing share.
    #[inline]
    pub fn apply(&self, random: u64) -> Option<&T> {
        self.distribution.sample(random).then_some(&self.response)
    }
}

// === impl Distribution ===

impl Distribution {
    const ALWAYS: u64 = u64::MAX;
    const SCALE: f64 = 2.0 * (1u64 << 63) as f64;

    /// `numerator / denominator`, which must be at most 1 with a non-zero denominator.
    pub fn from_ratio(numerator: u32, denominator: u32) -> Result<Self, InvalidDistribution> {
        if numerator > denominator || denominator == 0 {
            return Err(InvalidDistribution {
                numerator,
                denominator,
            });
        }
        let p_int = if numerator == denominator {
            Self::ALWAYS
        } else {
            ((f64::from(numerator) / f64::from(denominator)) * Self::SCALE) as u64
        };
        Ok(Self {
            numerator,
            denominator,
            p_int,
        })
    }

    /// The ratio.
    pub fn ratio(&self) -> (u32, u32) {
        (self.numerator, self.denominator)
    }

    /// Whether `random`, a uniformly random `u64`, falls in the distribution's share.
    #[inline]
    pub fn sample(&self, random: u64) -> bool {
        self.p_int == Self::ALWAYS || random < self.p_int
    }
}

impl Default for Distribution {
    /// Always (1/1), what a failure injector without a ratio uses.
    fn default() -> Self {
        Self {
            numerator: 1,
            denominator: 1,
            p_int: Self::ALWAYS,
        }
    }
}

impl PartialEq for Distribution {
    fn eq(&self, other: &Self) -> bool {
        self.ratio() == other.ratio()
    }
}

impl Eq for Distribution {}

impl std::hash::Hash for Distribution {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.ratio().hash(state);
    }
}

// === impl ModifyHeader ===

impl ModifyHeader {
    /// Applies the changes to an `http::HeaderMap`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }

    /// Applies the changes to a list of `(name, value)` pairs, matching names
    /// ASCII-case-insensitively: an added header goes last, a set header replaces every value
    /// of the name with one value last, a removed header loses all of its values.
    pub fn apply_to_pairs(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        for (name, value) in &self.add {
            headers.push((name.as_str().to_string(), value.as_bytes().to_vec()));
        }
        for (name, value) in &self.set {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_str()));
            headers.push((name.as_str().to_string(), value.as_bytes().to_vec()));
        }
        for name in &self.remove {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_str()));
        }
    }
}

// === impl RedirectRequest ===

impl RedirectRequest {
    /// The redirect for a request whose URI is `orig_uri` (absolute: linkerd2-proxy's
    /// normalized URI, `http` when the request had no scheme) and that matched `rm`; `None`
    /// when the location would be the request's own URI (the filter is then skipped).
    pub fn apply(
        &self,
        orig_uri: &Uri,
        rm: &RequestMatch,
    ) -> Result<Option<Redirection>, InvalidRedirect> {
        let scheme = self
            .scheme
            .as_ref()
            .or_else(|| orig_uri.scheme())
            .cloned()
            .unwrap_or(Scheme::HTTP);
        let authority = self.authority(orig_uri, &scheme)?;
        let location = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(self.path_and_query(orig_uri, &rm.path_match)?)
            .build()?;
        if &location == orig_uri {
            return Ok(None);
        }
        Ok(Some(Redirection {
            status: self.status.unwrap_or(StatusCode::MOVED_PERMANENTLY),
            location,
        }))
    }

    fn authority(&self, orig_uri: &Uri, scheme: &Scheme) -> Result<Authority, InvalidRedirect> {
        let orig_authority = || {
            orig_uri
                .authority()
                .cloned()
                .ok_or(InvalidRedirect::MissingAuthority)
        };
        match &self.authority {
            None => orig_authority(),
            Some(AuthorityOverride::Exact(a)) => Ok(a.clone()),
            Some(AuthorityOverride::Host(h)) => {
                match orig_uri
                    .port_u16()
                    .and_then(|p| port_if_not_default(scheme, p))
                {
                    Some(p) => Ok(Authority::try_from(format!("{h}:{p}"))?),
                    None => Ok(h.clone()),
                }
            }
            Some(AuthorityOverride::Port(p)) => match port_if_not_default(scheme, p.get()) {
                Some(p) if Some(p) != orig_uri.port_u16() => {
                    let h = orig_uri.host().ok_or(InvalidRedirect::MissingAuthority)?;
                    Ok(Authority::try_from(format!("{h}:{p}"))?)
                }
                None if orig_uri.port().is_some() => {
                    let h = orig_uri.host().ok_or(InvalidRedirect::MissingAuthority)?;
                    Ok(h.parse()?)
                }
                _ => orig_authority(),
            },
        }
    }

    fn path_and_query(
        &self,
        orig_uri: &Uri,
        path_match: &PathMatch,
    ) -> Result<PathAndQuery, InvalidRedirect> {
        match &self.path {
            None => Ok(orig_uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))),
            Some(ModifyPath::ReplaceFullPath(p)) => Ok(PathAndQuery::try_from(p.as_str())?),
            Some(ModifyPath::ReplacePrefixMatch(new_prefix)) => match path_match {
                PathMatch::Prefix(len) if *len <= orig_uri.path().len() => {
                    let rest = orig_uri.path().get(*len..).unwrap_or("");
                    let mut path = new_prefix.clone();
                    if !rest.is_empty() && !rest.starts_with('/') {
                        path.push('/');
                    }
                    path.push_str(rest);
                    if let Some(q) = orig_uri.query() {
                        path.push('?');
                        path.push_str(q);
                    }
                    Ok(PathAndQuery::try_from(path)?)
                }
                _ => Err(InvalidRedirect::ReplacePrefix),
            },
        }
    }
}

fn port_if_not_default(scheme: &Scheme, port: u16) -> Option<u16> {
    if (*scheme == Scheme::HTTP && port == 80) || (*scheme == Scheme::HTTPS && port == 443) {
        None
    } else {
        Some(port)
    }
}
