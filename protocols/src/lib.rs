//! Bytes-level protocol code, pure functions over byte slices: no sockets, no runtime, no
//! config, so every entry point is unit-testable and fuzzable (and, for [`tls`], plain
//! rustls values built from bytes the caller read).
//!
//! - [`detect`]: what a connection speaks, from its first bytes (HTTP/1, HTTP/2 prior
//!   knowledge, TLS with its SNI, or opaque).
//! - [`http1`]: the HTTP/1.x codec on httparse (heads, body framing, chunked coding), the
//!   header rules a proxy applies, and the error responses it writes itself.
//! - [`http2`]: HTTP/2 frame-level checks before the h2 crate takes a connection over (the
//!   preface must be followed by SETTINGS) and the GOAWAY frame that refuses one.
//! - [`authority`]: `host[:port]` authorities and the destination names they resolve under.
//! - [`grpc`]: which messages are gRPC, and their `grpc-status`.
//! - [`transport_header`]: Linkerd's opaque transport header (`transport.l5d.io/v1`), the
//!   target port, name and session protocol a meshed client sends first: encoded as
//!   linkerd2-proxy (prost) writes it, decoded incrementally as it reads it.
//! - [`tls`]: the rustls configurations for Linkerd's mesh TLS (TLS 1.3 on *ring*, client
//!   certificates requested, the transport header's ALPN on the direct port) from a trust
//!   anchor bundle and credentials, and a peer's identity from its leaf certificate. The
//!   handshakes themselves are the caller's (rustls connections over its own I/O).

#![forbid(unsafe_code)]

pub mod authority;
pub mod detect;
pub mod grpc;
pub mod http1;
pub mod http2;
pub mod tls;
pub mod transport_header;

pub use detect::{detect, Detected, Protocol, MAX_DETECT_BYTES};
