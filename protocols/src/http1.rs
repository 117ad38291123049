//! HTTP/1.x wire format on httparse: message heads, body framing, chunked coding, head
//! encoding and the header rules a proxy must apply.
//!
//! Everything here is a pure function (or a small state machine) over bytes, so the
//! connection loops in the engine stay free of parsing and every entry point can be fuzzed.
//!
//! - [`parse_request`] / [`parse_response`]: one message head, with explicit [`Limits`].
//! - [`request_body`] / [`response_body`]: how the body is framed (RFC 9112 §6.3), rejecting
//!   every ambiguity that request smuggling lives on.
//! - [`ChunkedDecoder`]: walks a chunked body, telling data from framing, so bodies stream
//!   through without being buffered.
//! - [`encode_request`] / [`encode_response`]: heads back to bytes.
//! - [`strip_hop_by_hop`]: the headers a proxy must not forward (RFC 9110 §7.6.1).
//! - [`upgrade_protocol`]: the protocol an `Upgrade` request is tunnelled to (never `h2c`).
//! - [`error_response`]: the bytes of a response the proxy answers itself, with
//!   [`reason`] phrases and [`sanitize_header_value`] for what goes in a header.

mod body;
mod encode;
mod head;
mod parse;
mod respond;

pub use body::{request_body, response_body, BodyKind, ChunkedDecoder, Piece};
pub use encode::{encode_request, encode_response, write_chunked_end};
pub use head::{upgrade_protocol, Header, Headers, RequestHead, ResponseHead, Version};
pub use parse::{parse_request, parse_response, Parsed};
pub use respond::{error_response, reason, sanitize_header_value};

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

// === types ===

/// Bounds on what one message head may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest head (start line, headers and the blank line), in bytes. Also bounds a chunked
    /// body's trailer section and each chunk-size line.
    pub max_head_bytes: usize,
    /// Most header fields in one head.
    pub max_headers: usize,
}

/// Why a message cannot be proxied. Every variant is the peer's fault; [`Error::status`]
/// says what to answer a client with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("message head has more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("malformed message head: {0}")]
    Malformed(&'static str),
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("invalid or repeated Content-Length")]
    BadContentLength,
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    #[error("malformed chunked body: {0}")]
    BadChunk(&'static str),
}

// === impl Limits ===

impl Default for Limits {
    /// 64 KiB and 100 fields: hyper's header count, and room for large cookies.
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 << 10,
            max_headers: 100,
        }
    }
}

// === impl Error ===

impl Error {
    /// The status to answer a client whose request failed this way: 431 for heads over a
    /// limit, 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            Error::HeadTooLarge(_) | Error::TooManyHeaders(_) => 431,
            _ => 400,
        }
    }
}

// === functions ===

/// Whether a message with this version and headers leaves its connection open after it.
pub fn keep_alive(version: Version, headers: &Headers) -> bool {
    match version {
        Version::Http11 => !headers.has_token("connection", "close"),
        Version::Http10 => headers.has_token("connection", "keep-alive"),
    }
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade`. The caller adds
/// back the framing and connection headers of the hop it writes to.
pub fn strip_hop_by_hop(headers: &mut Headers) {
    let connection: Vec<u8> = headers
        .get_all("connection")
        .flat_map(|value| [value, b","].concat())
        .collect();
    let named = |name: &str| {
        connection
            .split(|&b| b == b',')
            .any(|token| head::trim(token).eq_ignore_ascii_case(name.as_bytes()))
    };
    headers.retain(|header| {
        let name = header.name.as_str();
        // Framing and routing fields stay even when `Connection` names them: dropping
        // `Content-Length` would leave the body without framing on the next hop.
        let protected = PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p));
        !(HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) || (named(name) && !protected))
    });
}

/// Fields a `Connection` header cannot make hop-by-hop.
const PROTECTED: [&str; 2] = ["content-length", "host"];

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];
