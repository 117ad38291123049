//! HTTP route matches (`linkerd/http/route/src/http/match{,/path,/header,/query_param}.rs`)
//! and the filters of inbound HTTP routes (`linkerd/proxy/server-policy/src/http.rs`).

use super::{
    filter::{FailureResponse, InjectFailure, ModifyHeader, RedirectRequest},
    route::{HeaderSource, Match, Prepared},
};
use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

/// Matches an HTTP request: all the given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchRequest {
    pub path: Option<MatchPath>,
    pub headers: Vec<MatchHeader>,
    pub query_params: Vec<MatchQueryParam>,
    pub method: Option<Method>,
}

/// A path match.
#[derive(Clone, Debug)]
pub enum MatchPath {
    /// The whole path, byte for byte.
    Exact(String),
    /// Whole leading segments: trailing slashes of the prefix and of the path are ignored,
    /// and what follows the prefix must be empty or start with `/`. `/` matches every path.
    Prefix(String),
    /// A regular expression whose leftmost-first match must span the whole path.
    Regex(Regex),
}

/// How a path matched. Only the length counts when ranking: an exact match is not preferred
/// to a regex or prefix match of the same length (`PathMatch`'s `Ord` in linkerd2-proxy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The length of the exact path.
    Exact(usize),
    /// The length of the whole path.
    Regex(usize),
    /// The length of the prefix without trailing slashes (1 for `/`).
    Prefix(usize),
}

/// How an HTTP request matched (`RequestMatch` in linkerd2-proxy), ranked by path-match
/// length, then the number of header matches, then of query-parameter matches, then whether
/// the method was matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestMatch {
    pub path_match: PathMatch,
    pub headers: usize,
    pub query_params: usize,
    pub method: bool,
}

/// A header match: any of the header's values may match.
#[derive(Clone, Debug)]
pub enum MatchHeader {
    /// The value, byte for byte.
    Exact(HeaderName, HeaderValue),
    /// A regular expression whose leftmost-first match spans the whole value; values that
    /// are not visible ASCII (`HeaderValue::to_str`) are skipped.
    Regex(HeaderName, Regex),
}

/// A query-parameter match on the `application/x-www-form-urlencoded` decoding of the query
/// (`+` is a space, `%XX` a byte, invalid UTF-8 replaced); any parameter of the name may
/// match.
#[derive(Clone, Debug)]
pub enum MatchQueryParam {
    Exact(String, String),
    Regex(String, Regex),
}

/// A filter of an inbound HTTP route (`Filter` in `linkerd/proxy/server-policy/src/http.rs`),
/// applied in order once the request is authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpFilter {
    /// Fail a share of requests with a status and message.
    InjectFailure(InjectFailure<FailureResponse>),
    /// Answer with a redirect (unless the location is the request's own URI).
    Redirect(RedirectRequest),
    /// Add, set and remove request headers.
    RequestHeaders(ModifyHeader),
    /// Add, set and remove response headers (outbound routes only).
    ResponseHeaders(ModifyHeader),
    /// Fail the request with 500 (`HttpInvalidPolicy`): an unknown filter in the policy, or
    /// the invalid policy.
    InternalError(&'static str),
}

// === impl MatchRequest ===

impl Match for MatchRequest {
    type Summary = RequestMatch;

    fn match_prepared(&self, req: &Prepared<'_, '_>) -> Option<RequestMatch> {
        let mut summary = RequestMatch::default();

        if let Some(method) = &self.method {
            if req.view.method != method.as_str() {
                return None;
            }
            summary.method = true;
        }

        if let Some(path) = &self.path {
            summary.path_match = path.match_length(req.path)?;
        }

        if !self.headers.iter().all(|h| h.is_match(req.view.headers)) {
            return None;
        }
        summary.headers = self.headers.len();

        if !self.query_params.is_empty() {
            let query = req.query?;
            if !self.query_params.iter().all(|q| q.is_match(query)) {
                return None;
            }
        }
        summary.query_params = self.query_params.len();

        Some(summary)
    }
}

// === impl RequestMatch ===

impl Default for RequestMatch {
    /// What a rule without matches scores: per the Gateway API, a prefix match on `/`.
    fn default() -> Self {
        Self {
            path_match: PathMatch::Prefix(1),
            headers: 0,
            query_params: 0,
            method: false,
        }
    }
}

impl PartialOrd for RequestMatch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RequestMatch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.path_match
            .cmp(&other.path_match)
            .then_with(|| self.headers.cmp(&other.headers))
            .then_with(|| self.query_params.cmp(&other.query_params))
            .then_with(|| self.method.cmp(&other.method))
    }
}

// === impl MatchPath ===

impl MatchPath {
    /// How `path` matches, if it does.
    pub fn match_length(&self, path: &str) -> Option<PathMatch> {
        match self {
            Self::Exact(p) => (p == path).then_some(PathMatch::Exact(p.len())),
            Self::Regex(re) => whole_match(re, path).then_some(PathMatch::Regex(path.len())),
            Self::Prefix(prefix) => {
                if prefix == "/" {
                    return Some(PathMatch::Prefix(1));
                }
                let prefix = prefix.trim_end_matches('/');
                let rest = path.trim_end_matches('/').strip_prefix(prefix)?;
                (rest.is_empty() || rest.starts_with('/'))
                    .then_some(PathMatch::Prefix(prefix.len()))
            }
        }
    }
}

impl PartialEq for MatchPath {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) | (Self::Prefix(a), Self::Prefix(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for MatchPath {}

// === impl PathMatch ===

impl PathMatch {
    /// The number of bytes of the path that matched.
    pub fn len(&self) -> usize {
        match self {
            Self::Exact(len) | Self::Regex(len) | Self::Prefix(len) => *len,
        }
    }

    /// Whether nothing matched (a prefix of `//`, say).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialOrd for PathMatch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PathMatch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.len().cmp(&other.len())
    }
}

// === impl MatchHeader ===

impl MatchHeader {
    /// Whether one of the request's values of the header matches.
    pub fn is_match(&self, headers: &dyn HeaderSource) -> bool {
        match self {
            Self::Exact(name, value) => headers.any_value(name, &mut |v| v == value.as_bytes()),
            Self::Regex(name, re) => headers.any_value(name, &mut |v| {
                visible_ascii(v).is_some_and(|v| whole_match(re, v))
            }),
        }
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        match self {
            Self::Exact(n, _) | Self::Regex(n, _) => n,
        }
    }
}

/// The value as `HeaderValue::to_str` gives it: only visible ASCII and tabs.
fn visible_ascii(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| (32..127).contains(&b) || b == b'\t') {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

impl PartialEq for MatchHeader {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(n, v), Self::Exact(m, w)) => n == m && v == w,
            (Self::Regex(n, a), Self::Regex(m, b)) => n == m && a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for MatchHeader {}

// === impl MatchQueryParam ===

impl MatchQueryParam {
    /// Whether one of the query's parameters matches; `query` is what follows the `?`.
    pub fn is_match(&self, query: &str) -> bool {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .any(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                with_form_decoded(k, |k| k == self.name())
                    && with_form_decoded(v, |v| self.value_matches(v))
            })
    }

    /// The parameter's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Exact(n, _) | Self::Regex(n, _) => n,
        }
    }

    fn value_matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(_, v) => v == value,
            Self::Regex(_, re) => whole_match(re, value),
        }
    }
}

impl PartialEq for MatchQueryParam {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(n, v), Self::Exact(m, w)) => n == m && v == w,
            (Self::Regex(n, a), Self::Regex(m, b)) => n == m && a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for MatchQueryParam {}

/// Calls `f` with `s` decoded as one `application/x-www-form-urlencoded` name or value, as
/// `form_urlencoded::parse` decodes them: `+` is a space, `%XX` (two hex digits) a byte, any
/// other `%` itself, and invalid UTF-8 is replaced with U+FFFD. Borrows `s` when there is
/// nothing to decode, and decodes short strings on the stack.
fn with_form_decoded<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return f(s);
    }
    const STACK: usize = 256;
    let mut stack = [0u8; STACK];
    let mut heap = Vec::new();
    let decoded: &[u8] = if s.len() <= STACK {
        let n = form_decode(s.as_bytes(), |i, b| stack[i] = b);
        &stack[..n]
    } else {
        heap.resize(s.len(), 0);
        let n = form_decode(s.as_bytes(), |i, b| heap[i] = b);
        &heap[..n]
    };
    match std::str::from_utf8(decoded) {
        Ok(d) => f(d),
        Err(_) => f(&String::from_utf8_lossy(decoded)),
    }
}

/// Writes the decoded bytes of `src` through `put(index, byte)` and returns how many there
/// are (never more than `src.len()`).
fn form_decode(src: &[u8], mut put: impl FnMut(usize, u8)) -> usize {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let (mut i, mut n) = (0, 0);
    while i < src.len() {
        let b = match src[i] {
            b'+' => b' ',
            b'%' => match (
                src.get(i + 1).and_then(|&b| hex(b)),
                src.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    i += 2;
                    hi << 4 | lo
                }
                _ => b'%',
            },
            b => b,
        };
        put(n, b);
        n += 1;
        i += 1;
    }
    n
}

/// Whether the regex's leftmost-first match spans all of `s`, as linkerd2-proxy checks path,
/// header and query-parameter regexes (`find`, then start and end).
#[inline]
pub(super) fn whole_match(re: &Regex, s: &str) -> bool {
    re.find(s)
        .is_some_and(|m| m.start() == 0 && m.end() == s.len())
}
