//! Responses the proxy writes itself: errors, with `l5d-proxy-error` as Linkerd sends them.

use std::io;
use std::time::Duration;

// === types ===

/// A failure the proxy answers for, classified by who failed.
#[derive(Debug)]
pub enum ProxyError {
    /// The request was malformed (400) or its head too large (431).
    BadRequest(u16, String),
    /// The request's head did not arrive in time.
    RequestTimeout,
    /// No upstream connection: refused, reset, unreachable.
    Connect(io::Error),
    /// No upstream connection within the connect timeout.
    ConnectTimeout(Duration),
    /// The authority could not be resolved.
    Resolve(String),
    /// The upstream connection failed or sent garbage before a response head.
    Upstream(String),
    /// No endpoint to send the request to, at once: the destination does not exist, its
    /// balancer is failing fast or its queue is full (503).
    Unavailable(String),
    /// No endpoint became ready within the failfast timeout (504).
    FailFast(Duration),
}

// === impl ProxyError ===

impl ProxyError {
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::BadRequest(status, _) => *status,
            ProxyError::RequestTimeout => 408,
            ProxyError::Connect(_) | ProxyError::Resolve(_) | ProxyError::Upstream(_) => 502,
            ProxyError::ConnectTimeout(_) | ProxyError::FailFast(_) => 504,
            ProxyError::Unavailable(_) => 503,
        }
    }

    /// The `l5d-proxy-error` value.
    pub fn message(&self) -> String {
        match self {
            ProxyError::BadRequest(_, why) => format!("invalid request: {why}"),
            ProxyError::RequestTimeout => "request head timed out".to_string(),
            ProxyError::Connect(error) => format!("connect error: {error}"),
            ProxyError::ConnectTimeout(after) => format!("connect timed out after {after:?}"),
            ProxyError::Resolve(why) => format!("failed to resolve authority: {why}"),
            ProxyError::Upstream(why) => format!("upstream error: {why}"),
            ProxyError::Unavailable(why) => format!("service unavailable: {why}"),
            ProxyError::FailFast(after) => {
                format!("no endpoint became ready within the failfast timeout ({after:?})")
            }
        }
    }
}

// === functions ===

/// An error response; `close` adds `connection: close`; `head_request` leaves the body out
/// (its length is still given, as for any response to HEAD).
pub fn error_response(error: &ProxyError, close: bool, head_request: bool) -> Vec<u8> {
    let status = error.status();
    let message = sanitize(&error.message());
    let body = format!("{message}\n");
    let mut out = Vec::with_capacity(160 + 2 * message.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nl5d-proxy-error: {message}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        )
        .as_bytes(),
    );
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A header value can hold neither CR nor LF nor other controls.
fn sanitize(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
