//! ServiceProfile routing, as linkerd2-proxy still follows it (`linkerd/service-profiles`):
//! a profile with routes or `dst_overrides` overrides the outbound policy of its original
//! destination ([`ProfileRouting::from_profile`]).
//!
//! - **Routes** are matched in order, the first whose condition holds wins (path regexes
//!   anchored to the whole path, methods, and `all`/`any`/`not` of them). A route's
//!   `timeout` bounds its requests; its response classes say which responses are failures
//!   (the first class that matches decides; none: success); an `is_retryable` route retries
//!   failures while the profile's [`RetryBudget`] allows.
//! - **`dst_overrides`** split the destination's requests between authorities by weight.

use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use regex::Regex;

use crate::policy::outbound::{Retry, RetryConditions};

/// What a profile with routes or overrides says about its destination's requests.
#[derive(Clone, Debug)]
pub struct ProfileRouting {
    pub routes: Vec<ProfileRoute>,
    pub retry_budget: Option<RetryBudget>,
    /// `(authority, weight)`; empty: the destination itself.
    pub dst_overrides: Vec<(String, u32)>,
}

/// One profile route.
#[derive(Clone, Debug)]
pub struct ProfileRoute {
    /// Its `route` metric label, if any.
    pub name: String,
    pub condition: RequestMatch,
    pub response_classes: Arc<[ResponseClass]>,
    pub timeout: Option<Duration>,
    /// For a retryable route: failures retried (at most [`PROFILE_MAX_RETRIES`] times a
    /// request, and only while the profile's budget allows).
    pub retry: Option<Arc<Retry>>,
}

/// Retries of one request on a retryable profile route, at most (the budget decides
/// first).
pub const PROFILE_MAX_RETRIES: u32 = 3;
/// Bodies longer than this are not retried (linkerd2-proxy's limit for header-driven
/// retries).
pub const PROFILE_MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A profile route's request condition.
#[derive(Clone, Debug)]
pub enum RequestMatch {
    All(Vec<RequestMatch>),
    Any(Vec<RequestMatch>),
    Not(Box<RequestMatch>),
    /// A regex the whole path must match.
    Path(Regex),
    Method(http::Method),
}

/// Whether a response matching `condition` is a failure.
#[derive(Clone, Debug)]
pub struct ResponseClass {
    pub condition: ResponseMatch,
    pub is_failure: bool,
}

#[derive(Clone, Debug)]
pub enum ResponseMatch {
    All(Vec<ResponseMatch>),
    Any(Vec<ResponseMatch>),
    Not(Box<ResponseMatch>),
    /// An inclusive status range.
    Status(u16, u16),
}

/// How many retries a profile allows: `ratio` of its requests, plus
/// `min_per_second`, over a window of `ttl`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    pub ratio: f32,
    pub min_per_second: u32,
    pub ttl: Duration,
}

impl ProfileRouting {
    /// The routing of `profile`, `None` when it has neither routes nor overrides (the
    /// outbound policy then applies). Routes whose condition does not decode are skipped.
    pub fn from_profile(profile: &pb::DestinationProfile) -> Option<Self> {
        if profile.routes.is_empty() && profile.dst_overrides.is_empty() {
            return None;
        }
        let routes = profile
            .routes
            .iter()
            .filter_map(|route| {
                let condition = request_match(route.condition.as_ref()?)?;
                let response_classes = route
                    .response_classes
                    .iter()
                    .filter_map(|class| {
                        Some(ResponseClass {
                            condition: response_match(class.condition.as_ref()?)?,
                            is_failure: class.is_failure,
                        })
                    })
                    .collect();
                let response_classes: Arc<[ResponseClass]> = response_classes;
                let retry = route.is_retryable.then(|| {
                    Arc::new(Retry {
                        max_retries: PROFILE_MAX_RETRIES,
                        max_request_bytes: PROFILE_MAX_REQUEST_BYTES,
                        conditions: RetryConditions::Profile(response_classes.clone()),
                        timeout: None,
                        backoff: None,
                    })
                });
                Some(ProfileRoute {
                    name: route
                        .metrics_labels
                        .get("route")
                        .cloned()
                        .unwrap_or_default(),
                    condition,
                    response_classes,
                    timeout: route.timeout.and_then(|t| Duration::try_from(t).ok()),
                    retry,
                })
            })
            .collect();
        let retry_budget = profile.retry_budget.as_ref().map(|b| RetryBudget {
            ratio: b.retry_ratio.clamp(0.0, 1000.0),
            min_per_second: b.min_retries_per_second,
            ttl: b
                .ttl
                .and_then(|t| Duration::try_from(t).ok())
                .filter(|t| !t.is_zero())
                .unwrap_or(Duration::from_secs(10)),
        });
        let dst_overrides = profile
            .dst_overrides
            .iter()
            .map(|d| (d.authority.trim_end_matches('.').to_string(), d.weight))
            .collect();
        Some(ProfileRouting {
            routes,
            retry_budget,
            dst_overrides,
        })
    }

    /// The first route whose condition `method` and `path` meet.
    pub fn route(&self, method: &str, path: &str) -> Option<&ProfileRoute> {
        self.routes
            .iter()
            .find(|r| r.condition.is_match(method, path))
    }
}

impl RequestMatch {
    pub fn is_match(&self, method: &str, path: &str) -> bool {
        match self {
            Self::All(all) => all.iter().all(|m| m.is_match(method, path)),
            Self::Any(any) => any.iter().any(|m| m.is_match(method, path)),
            Self::Not(m) => !m.is_match(method, path),
            Self::Path(re) => re.is_match(path),
            Self::Method(m) => m.as_str() == method,
        }
    }
}

impl ResponseClass {
    /// Whether `status` is a failure by the first of `classes` that matches it; none: 5xx
    /// when there are no classes at all, else a success.
    pub fn is_failure(classes: &[ResponseClass], status: u16) -> bool {
        if classes.is_empty() {
            return (500..600).contains(&status);
        }
        classes
            .iter()
            .find(|c| c.condition.is_match(status))
            .is_some_and(|c| c.is_failure)
    }
}

impl ResponseMatch {
    pub fn is_match(&self, status: u16) -> bool {
        match self {
            Self::All(all) => all.iter().all(|m| m.is_match(status)),
            Self::Any(any) => any.iter().any(|m| m.is_match(status)),
            Self::Not(m) => !m.is_match(status),
            Self::Status(min, max) => (*min..=*max).contains(&status),
        }
    }
}

fn request_match(m: &pb::RequestMatch) -> Option<RequestMatch> {
    use pb::request_match::Match;
    Some(match m.r#match.as_ref()? {
        Match::All(seq) => RequestMatch::All(
            seq.matches
                .iter()
                .map(request_match)
                .collect::<Option<_>>()?,
        ),
        Match::Any(seq) => RequestMatch::Any(
            seq.matches
                .iter()
                .map(request_match)
                .collect::<Option<_>>()?,
        ),
        Match::Not(m) => RequestMatch::Not(Box::new(request_match(m)?)),
        Match::Path(p) => RequestMatch::Path(Regex::new(&format!("^(?:{})$", p.regex)).ok()?),
        Match::Method(m) => RequestMatch::Method(http::Method::try_from(m.clone()).ok()?),
    })
}

fn response_match(m: &pb::ResponseMatch) -> Option<ResponseMatch> {
    use pb::response_match::Match;
    Some(match m.r#match.as_ref()? {
        Match::All(seq) => ResponseMatch::All(
            seq.matches
                .iter()
                .map(response_match)
                .collect::<Option<_>>()?,
        ),
        Match::Any(seq) => ResponseMatch::Any(
            seq.matches
                .iter()
                .map(response_match)
                .collect::<Option<_>>()?,
        ),
        Match::Not(m) => ResponseMatch::Not(Box::new(response_match(m)?)),
        Match::Status(range) => {
            let min = u16::try_from(range.min).ok()?;
            // A range without a maximum is the one status.
            let max = if range.max == 0 {
                min
            } else {
                u16::try_from(range.max).ok()?
            };
            ResponseMatch::Status(min, max)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(min: u32, max: u32) -> pb::ResponseMatch {
        pb::ResponseMatch {
            r#match: Some(pb::response_match::Match::Status(pb::HttpStatusRange {
                min,
                max,
            })),
        }
    }

    #[test]
    fn routes_match_in_order_and_classes_decide_failures() {
        let path = |re: &str| pb::RequestMatch {
            r#match: Some(pb::request_match::Match::Path(pb::PathMatch {
                regex: re.to_string(),
            })),
        };
        let profile = pb::DestinationProfile {
            routes: vec![
                pb::Route {
                    condition: Some(path("/books/[0-9]+")),
                    response_classes: vec![pb::ResponseClass {
                        condition: Some(status(500, 503)),
                        is_failure: true,
                    }],
                    is_retryable: true,
                    ..Default::default()
                },
                pb::Route {
                    condition: Some(path("/books.*")),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let routing = ProfileRouting::from_profile(&profile).expect("routes");
        let first = routing.route("GET", "/books/12").expect("a route");
        assert!(first.retry.is_some());
        assert!(ResponseClass::is_failure(&first.response_classes, 502));
        assert!(!ResponseClass::is_failure(&first.response_classes, 504));
        let second = routing.route("GET", "/books/x").expect("a route");
        assert!(second.retry.is_none());
        assert!(ResponseClass::is_failure(&second.response_classes, 504));
        assert!(routing.route("GET", "/x/books/1").is_none(), "anchored");
        assert!(ProfileRouting::from_profile(&pb::DestinationProfile::default()).is_none());
    }
}
