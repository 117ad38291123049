//! Protocol detection from a connection's first bytes (DESIGN.md §3).
//!
//! [`detect`] looks at what has been read so far and either decides or asks for more. It
//! never needs more than [`MAX_DETECT_BYTES`]: past that, whatever could not be recognised is
//! opaque. The caller replays every byte it read, whatever the answer.

mod client_hello;

pub use client_hello::server_name;

/// Most bytes detection ever asks for: a TLS record header plus the largest TLS record.
pub const MAX_DETECT_BYTES: usize = 5 + (16 << 10);

/// Longest HTTP/1 request line (with its line end) that detection accepts; a longer one is
/// opaque, however its bytes arrive.
const MAX_REQUEST_LINE: usize = 8 << 10;

/// Longest method name that detection waits on.
const MAX_METHOD: usize = 24;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// === types ===

/// What a connection speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// A TLS ClientHello, with its server name if it has one.
    Tls { sni: Option<String> },
    /// Anything else.
    Opaque,
}

/// The answer for the bytes read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// Decided.
    Protocol(Protocol),
    /// Read more (up to [`MAX_DETECT_BYTES`] in all) and ask again.
    NeedMore,
}

// === functions ===

/// Detects the protocol of a connection that has sent `buf` so far. With `buf` at
/// [`MAX_DETECT_BYTES`] or more the answer is never `NeedMore`.
pub fn detect(buf: &[u8]) -> Detected {
    let full = buf.len() >= MAX_DETECT_BYTES;
    if buf.is_empty() {
        return Detected::NeedMore;
    }
    // HTTP/2 prior knowledge.
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detected::Protocol(Protocol::Http2)
        } else {
            Detected::NeedMore
        };
    }
    // TLS: a handshake record.
    if buf[0] == 0x16 {
        return match client_hello::parse(buf) {
            client_hello::Parsed::Hello { sni } => Detected::Protocol(Protocol::Tls { sni }),
            client_hello::Parsed::Incomplete if !full => Detected::NeedMore,
            client_hello::Parsed::Incomplete | client_hello::Parsed::Invalid => {
                Detected::Protocol(Protocol::Opaque)
            }
        };
    }
    http1(buf)
}

/// An httparse-valid request line means HTTP/1; anything httparse rejects is opaque. The
/// line ends at the first LF (with or without CR, as RFC 9112 §2.2 lets servers accept).
fn http1(buf: &[u8]) -> Detected {
    let mut headers = [httparse::EMPTY_HEADER; 0];
    if !plausible_method(buf) {
        return Detected::Protocol(Protocol::Opaque);
    }
    // A line end past the limit counts as no line end, so the answer never depends on how
    // the bytes were split into reads.
    let window = &buf[..buf.len().min(MAX_REQUEST_LINE)];
    let Some(end) = window.iter().position(|b| *b == b'\n') else {
        // Not a whole line yet: go on only while it is valid so far and not too long.
        return match httparse::Request::new(&mut headers).parse(buf) {
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_LINE => Detected::NeedMore,
            _ => Detected::Protocol(Protocol::Opaque),
        };
    };
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    // Parse the request line alone, as a head with no headers.
    let mut head = Vec::with_capacity(line.len() + 4);
    head.extend_from_slice(line);
    head.extend_from_slice(b"\r\n\r\n");
    match httparse::Request::new(&mut headers).parse(&head) {
        Ok(httparse::Status::Complete(_)) => Detected::Protocol(Protocol::Http1),
        _ => Detected::Protocol(Protocol::Opaque),
    }
}

/// Whether `buf` starts like an HTTP method: 1 to [`MAX_METHOD`] uppercase letters (or `-`,
/// `_`), then a space or the end of what was read. httparse accepts any token as a method,
/// so without this a client-first protocol whose first message is a short lowercase word
/// ("ping", "hello") would look like the start of a request and wait out the detect timeout.
fn plausible_method(buf: &[u8]) -> bool {
    let method_len = buf
        .iter()
        .position(|b| !(b.is_ascii_uppercase() || *b == b'-' || *b == b'_'))
        .unwrap_or(buf.len());
    (1..=MAX_METHOD).contains(&method_len) && buf.get(method_len).is_none_or(|b| *b == b' ')
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
