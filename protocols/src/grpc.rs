//! gRPC over HTTP: which messages are gRPC, and their `grpc-status`.
//!
//! - [`is_grpc`]: whether a `content-type` value is gRPC's. The one definition for the whole
//!   proxy, HTTP/1 and HTTP/2 alike.
//! - [`parse_grpc_status`]: a `grpc-status` header or trailer value.

/// The gRPC media type; `+codec` or `;parameters` may follow it.
const GRPC: &[u8] = b"application/grpc";

// === functions ===

/// Whether a `content-type` value makes a message gRPC: `application/grpc` (ASCII
/// case-insensitive) alone or followed by `+` (`application/grpc+proto`) or `;` (parameters).
/// gRPC-Web (`application/grpc-web`, `application/grpc-web+proto`) is not gRPC: its status
/// travels in the body, not in trailers.
pub fn is_grpc(content_type: &[u8]) -> bool {
    content_type.len() >= GRPC.len()
        && content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(content_type.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// A `grpc-status` header or trailer value: ASCII digits (gRPC's `1*DIGIT`), surrounding
/// ASCII whitespace allowed; no sign, no other whitespace.
pub fn parse_grpc_status(value: &[u8]) -> Option<u32> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
