//! The proxy's own failures on the data path: one [`ProxyError`], classified by who failed
//! ([`ErrorSource`]) and whether another attempt may help ([`ProxyError::is_retryable`]),
//! so that the status, `l5d-proxy-error`, the `error` metric label and the retry loop all
//! read the same value.

use std::io;
use std::time::Duration;

// === types ===

/// A failure the proxy answers for.
#[derive(Debug)]
pub enum ProxyError {
    /// The request was malformed (400) or its head too large (431).
    BadRequest { status: u16, why: String },
    /// The request's head did not arrive in time.
    RequestTimeout,
    /// No upstream connection: refused, reset, unreachable.
    Connect(io::Error),
    /// No upstream connection within the connect timeout.
    ConnectTimeout(Duration),
    /// The authority could not be resolved.
    Resolve(String),
    /// The upstream connection failed or sent something invalid before a response head.
    Upstream(io::Error),
    /// No endpoint to send the request to, at once: the destination does not exist, its
    /// balancer is failing fast or its queue is full (503).
    Unavailable(String),
    /// No endpoint became ready within the failfast timeout (504).
    FailFast(Duration),
    /// An outbound route's request (or response) timeout ran out before the response
    /// began (504; gRPC `DEADLINE_EXCEEDED`).
    RouteTimeout(Duration),
    /// The inbound policy has no route for the request (404; gRPC `NOT_FOUND`).
    RouteNotFound,
    /// The inbound policy's route does not authorize the client (403; gRPC
    /// `PERMISSION_DENIED`).
    Unauthorized,
    /// The inbound policy cannot be applied (500; gRPC `INTERNAL`).
    Policy(&'static str),
    /// A route's failure injector failed the request: `status` (or, for a gRPC route,
    /// `grpc_status`) with `message`.
    Injected {
        status: u16,
        grpc_status: Option<u32>,
        message: std::sync::Arc<str>,
    },
    /// A route's redirect filter answers `status` with `location`.
    Redirect { status: u16, location: String },
    /// The server's local rate limit refused the request (429; gRPC `RESOURCE_EXHAUSTED`).
    RateLimited(ringlink_control::policy::inbound::RateLimitError),
}

/// Who failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something the proxy cannot forward.
    Client,
    /// The upstream could not be reached or broke the exchange.
    Upstream,
    /// The proxy had nowhere to send the request (discovery, balancing).
    Proxy,
}

// === impl ProxyError ===

impl ProxyError {
    pub fn bad_request(status: u16, why: impl Into<String>) -> Self {
        ProxyError::BadRequest {
            status,
            why: why.into(),
        }
    }

    /// An upstream failure described by a message (no OS error behind it).
    pub fn upstream(why: impl Into<String>) -> Self {
        ProxyError::Upstream(io::Error::other(why.into()))
    }

    /// A failed connect attempt: a timeout (with the timeout that ran out) or another
    /// error, its `errno` kept.
    pub fn connect(error: io::Error, timeout: Duration) -> Self {
        if error.kind() == io::ErrorKind::TimedOut {
            ProxyError::ConnectTimeout(timeout)
        } else {
            ProxyError::Connect(error)
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ProxyError::BadRequest { status, .. } => *status,
            ProxyError::RequestTimeout => 408,
            ProxyError::Connect(_) | ProxyError::Resolve(_) | ProxyError::Upstream(_) => 502,
            ProxyError::ConnectTimeout(_)
            | ProxyError::FailFast(_)
            | ProxyError::RouteTimeout(_) => 504,
            ProxyError::Unavailable(_) => 503,
            ProxyError::RouteNotFound => 404,
            ProxyError::Unauthorized => 403,
            ProxyError::Policy(_) => 500,
            ProxyError::Injected { status, .. } | ProxyError::Redirect { status, .. } => *status,
            ProxyError::RateLimited(_) => 429,
        }
    }

    pub fn source(&self) -> ErrorSource {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::RequestTimeout
            | ProxyError::RouteNotFound
            | ProxyError::Unauthorized => ErrorSource::Client,
            ProxyError::Connect(_) | ProxyError::ConnectTimeout(_) | ProxyError::Upstream(_) => {
                ErrorSource::Upstream
            }
            ProxyError::Resolve(_)
            | ProxyError::Unavailable(_)
            | ProxyError::FailFast(_)
            | ProxyError::RouteTimeout(_)
            | ProxyError::Policy(_)
            | ProxyError::Injected { .. }
            | ProxyError::Redirect { .. }
            | ProxyError::RateLimited(_) => ErrorSource::Proxy,
        }
    }

    /// Whether another endpoint may succeed where this attempt failed: the connection
    /// could not be made, so nothing was sent.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProxyError::Connect(_) | ProxyError::ConnectTimeout(_))
    }

    /// The gRPC status a gRPC client is answered with: `DEADLINE_EXCEEDED` (4) for
    /// timeouts, `NOT_FOUND` (5) and `PERMISSION_DENIED` (7) for the inbound policy's
    /// refusals, else `UNAVAILABLE` (14).
    pub fn grpc_status(&self) -> u32 {
        match self {
            ProxyError::RouteNotFound => 5,
            ProxyError::Unauthorized => 7,
            ProxyError::Policy(_) => 13,
            ProxyError::RateLimited(_) => 8,
            ProxyError::Injected {
                grpc_status: Some(code),
                ..
            } => *code,
            _ if self.status() == 504 => 4,
            _ => 14,
        }
    }

    /// The `l5d-proxy-error` value.
    pub fn message(&self) -> String {
        match self {
            ProxyError::BadRequest { why, .. } => format!("invalid request: {why}"),
            ProxyError::RequestTimeout => "request head timed out".to_string(),
            ProxyError::Connect(error) => format!("connect error: {error}"),
            ProxyError::ConnectTimeout(after) => format!("connect timed out after {after:?}"),
            ProxyError::Resolve(why) => format!("failed to resolve authority: {why}"),
            ProxyError::Upstream(error) => format!("upstream error: {error}"),
            ProxyError::Unavailable(why) => format!("service unavailable: {why}"),
            ProxyError::FailFast(after) => {
                format!("no endpoint became ready within the failfast timeout ({after:?})")
            }
            ProxyError::RouteTimeout(after) => format!("request timed out after {after:?}"),
            ProxyError::RouteNotFound => "no route found for request".to_string(),
            ProxyError::Unauthorized => "unauthorized request on route".to_string(),
            ProxyError::Policy(why) => format!("invalid server policy: {why}"),
            ProxyError::Injected { message, .. } => message.to_string(),
            ProxyError::Redirect { location, .. } => format!("redirected to {location}"),
            ProxyError::RateLimited(limit) => limit.to_string(),
        }
    }

    /// The `error` label of the response the proxy answered with.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::Connect(_) => "connect",
            ProxyError::ConnectTimeout(_) => "connect_timeout",
            ProxyError::Resolve(_) => "resolve",
            ProxyError::Upstream(_) => "upstream",
            ProxyError::Unavailable(_) => "unavailable",
            ProxyError::FailFast(_) => "failfast",
            ProxyError::RouteTimeout(_) => "route_timeout",
            ProxyError::RouteNotFound => "route_not_found",
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::Policy(_) => "policy",
            ProxyError::Injected { .. } => "injected",
            ProxyError::Redirect { .. } => "redirect",
            ProxyError::RateLimited(_) => "ratelimit",
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_retryable_upstream_errors() {
        let refused = ProxyError::connect(io::ErrorKind::ConnectionRefused.into(), Duration::ZERO);
        assert!(refused.is_retryable());
        assert_eq!(refused.source(), ErrorSource::Upstream);
        assert_eq!(refused.status(), 502);
        let timeout = ProxyError::connect(io::ErrorKind::TimedOut.into(), Duration::from_secs(1));
        assert!(matches!(timeout, ProxyError::ConnectTimeout(_)));
        assert!(timeout.is_retryable());
        assert_eq!(timeout.status(), 504);
        assert_eq!(timeout.grpc_status(), 4);
    }

    #[test]
    fn other_errors_are_not_retried() {
        for error in [
            ProxyError::upstream("garbage"),
            ProxyError::bad_request(400, "x"),
            ProxyError::Unavailable("x".into()),
            ProxyError::FailFast(Duration::from_secs(1)),
        ] {
            assert!(!error.is_retryable(), "{error}");
        }
        assert_eq!(
            ProxyError::bad_request(431, "big").source(),
            ErrorSource::Client
        );
        assert_eq!(
            ProxyError::Unavailable("x".into()).source(),
            ErrorSource::Proxy
        );
        assert_eq!(ProxyError::Unavailable("x".into()).grpc_status(), 14);
    }

    #[test]
    fn a_connect_error_keeps_its_errno() {
        let error = ProxyError::connect(
            io::Error::from_raw_os_error(libc::ECONNREFUSED),
            Duration::ZERO,
        );
        let ProxyError::Connect(io) = error else {
            panic!("not a connect error");
        };
        assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
    }
}
