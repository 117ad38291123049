//! Responses the proxy writes itself, when it cannot forward a request.

// === functions ===

/// An HTTP/1.1 error response with `message` (sanitized by [`sanitize_header_value`]) in an
/// `l5d-proxy-error` header and, followed by a line end, as a `text/plain` body. `close` adds
/// `connection: close`; `head_request` leaves the body out (its length is still given, as for
/// any response to HEAD).
pub fn error_response(status: u16, message: &str, close: bool, head_request: bool) -> Vec<u8> {
    let message = sanitize_header_value(message);
    let body = format!("{message}\n");
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         l5d-proxy-error: {message}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// `value` with every control character (`char::is_control`: CR, LF, NUL, DEL, …) made a
/// space, so it can be written as a header value. Used by the HTTP/1 and HTTP/2 error paths.
pub fn sanitize_header_value(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The reason phrase of RFC 9110 §15 for `status`; `""` for a status without one here.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
