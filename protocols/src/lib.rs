//! Bytes-level protocol code (detection, HTTP/1 on httparse, h2 glue, TLS ClientHello parsing,
//! transport header): lands with the HTTP issue. Nothing here yet; the L4 engine needs none.
#![forbid(unsafe_code)]
