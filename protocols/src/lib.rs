//! Bytes-level protocol code, pure functions over byte slices: no sockets, no runtime, no
//! config, so every entry point is unit-testable and fuzzable.
//!
//! - [`detect`]: what a connection speaks, from its first bytes (HTTP/1, HTTP/2 prior
//!   knowledge, TLS with its SNI, or opaque).
//! - [`http1`]: the HTTP/1.x codec on httparse (heads, body framing, chunked coding) and the
//!   header rules a proxy applies.

#![forbid(unsafe_code)]

pub mod detect;
pub mod http1;

pub use detect::{detect, Detected, Protocol, MAX_DETECT_BYTES};
