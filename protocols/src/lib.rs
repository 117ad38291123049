//! Bytes-level protocol code, pure functions over byte slices: no sockets, no runtime, no
//! config, so every entry point is unit-testable and fuzzable.
//!
//! - [`detect`]: what a connection speaks, from its first bytes (HTTP/1, HTTP/2 prior
//!   knowledge, TLS with its SNI, or opaque).
//!
//! The engine wires detection in with the HTTP issue; the codecs follow.

#![forbid(unsafe_code)]

pub mod detect;

pub use detect::{detect, Detected, Protocol, MAX_DETECT_BYTES};
