//! What the bench's binaries share: `ringlink-bench` (`src/main.rs`) and the gRPC load
//! generator `ringlink-grpc-load` (`src/bin/ringlink-grpc-load.rs`). See `README.md`.
//!
//! - [`pace`]: open-loop timetables, and a timer fine enough to keep one, so that latency is
//!   measured from when a request was due rather than from when it could be sent.
//! - [`hdr`]: latency histograms (HDR) and their percentiles.
//! - [`grpc_load`]: the gRPC load generator and its machine-readable report.

pub mod grpc_load;
pub mod hdr;
pub mod pace;
