//! The proxy's own answers to requests it could not forward, with `l5d-proxy-error` as
//! Linkerd sends it: HTTP/1 bytes, an h2 response, or for gRPC a trailers-only response
//! (`grpc-status` UNAVAILABLE, or DEADLINE_EXCEEDED for timeouts).

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderValue, Response, StatusCode};
use ringlink_protocols::http1::{error_response, reason, sanitize_header_value};

use crate::error::ProxyError;
use crate::telemetry::RequestMetrics;

// === functions ===

/// An HTTP/1.1 error response; `close` adds `connection: close`; `head_request` leaves the
/// body out.
pub fn h1(error: &ProxyError, close: bool, head_request: bool) -> Vec<u8> {
    if let ProxyError::Redirect { status, location } = error {
        return format!(
            "HTTP/1.1 {status} {}\r\nlocation: {}\r\ncontent-length: 0\r\n{}\r\n",
            reason(*status),
            sanitize_header_value(location),
            if close { "connection: close\r\n" } else { "" },
        )
        .into_bytes();
    }
    error_response(error.status(), &error.message(), close, head_request)
}

/// Answers an h2 stream the proxy could not forward, and records it.
pub fn h2(
    respond: &mut SendResponse<Bytes>,
    grpc: bool,
    head_request: bool,
    error: &ProxyError,
    metrics: &mut RequestMetrics,
) {
    tracing::info!(status = error.status(), error = %error.message(), "Request failed");
    metrics.fail(error.status(), error.label());
    let code = error.grpc_status();
    if grpc {
        metrics.response_head(200, true);
        metrics.grpc_status(code);
    }
    let message = sanitize_header_value(&error.message());
    // Sanitized, the message has no byte a header value may not hold.
    let value = HeaderValue::from_bytes(message.as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("proxy error"));
    let mut response = Response::new(());
    *response.status_mut() = if grpc {
        // Trailers-only: status 200, gRPC status in the (only) header block.
        StatusCode::OK
    } else {
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_GATEWAY)
    };
    if let ProxyError::Redirect { status, location } = error {
        *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND);
        if let Ok(location) = HeaderValue::from_str(location) {
            response.headers_mut().insert("location", location);
        }
        let _ = respond.send_response(response, true);
        return;
    }
    let headers = response.headers_mut();
    headers.insert("l5d-proxy-error", value.clone());
    if grpc {
        headers.insert("grpc-message", value);
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(code));
        let _ = respond.send_response(response, true);
    } else {
        let body = Bytes::from(format!("{message}\n"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("content-length", HeaderValue::from(body.len()));
        // A response to HEAD carries no DATA.
        if let Ok(mut stream) = respond.send_response(response, head_request) {
            if !head_request {
                let _ = stream.send_data(body, true);
            }
        }
    }
}
