//! `http1::error_response` with any message (error messages carry what a peer sent: a bad
//! authority, a header name) and any three-digit status. No panics; the bytes parse back
//! with `parse_response` as one complete head of exactly the reason, `content-length`,
//! `connection: close` (iff asked) and one `l5d-proxy-error` holding the sanitized message,
//! followed by exactly the body it announces (none for HEAD). `sanitize_header_value`
//! replaces control characters one for one and changes nothing else.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::http1::{
    error_response, parse_response, reason, response_body, sanitize_header_value, BodyKind, Limits,
    Parsed, Version,
};

fn check_sanitized(message: &str, sanitized: &str) {
    assert_eq!(message.chars().count(), sanitized.chars().count());
    for (before, after) in message.chars().zip(sanitized.chars()) {
        if before.is_control() {
            assert_eq!(after, ' ');
        } else {
            assert_eq!(after, before);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [s0, s1, flags, message @ ..] = data else {
        return;
    };
    // Statuses the proxy writes are 4xx and 5xx; any three-digit one must work.
    let status = 100 + u16::from_be_bytes([*s0, *s1]) % 500;
    let (close, head_request) = (flags & 1 != 0, flags & 2 != 0);
    let message = String::from_utf8_lossy(message);
    let sanitized = sanitize_header_value(&message);
    check_sanitized(&message, &sanitized);

    let out = error_response(status, &message, close, head_request);
    let limits = Limits {
        max_head_bytes: out.len(),
        max_headers: 8,
    };
    let (head, n) = match parse_response(&out, &limits) {
        Ok(Parsed::Complete(head, n)) => (head, n),
        other => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(&out)),
    };
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.status, status);
    assert_eq!(head.reason, reason(status));
    assert_eq!(head.headers.count("l5d-proxy-error"), 1);
    // httparse drops the spaces around a value.
    assert_eq!(
        head.headers.get("l5d-proxy-error"),
        Some(sanitized.trim_matches(' ').as_bytes())
    );
    assert_eq!(head.headers.get("content-type"), Some(&b"text/plain"[..]));
    assert_eq!(head.headers.has_token("connection", "close"), close);
    assert_eq!(head.headers.len(), 3 + usize::from(close));

    let body = format!("{sanitized}\n");
    let length = body.len().to_string();
    assert_eq!(head.headers.get("content-length"), Some(length.as_bytes()));
    let expected_body: &[u8] = if head_request { b"" } else { body.as_bytes() };
    assert_eq!(&out[n..], expected_body);
    let method = if head_request { "HEAD" } else { "GET" };
    match response_body(method, &head) {
        Ok(BodyKind::Empty) => {
            assert!(head_request || (100..200).contains(&status) || [204, 304].contains(&status))
        }
        Ok(BodyKind::Length(len)) => assert_eq!(len, body.len() as u64),
        other => panic!("{method} {status}: body {other:?}"),
    }
});
