//! The admin server, on the control thread (tokio): Linkerd's `/metrics`, `/live`, `/ready`,
//! `/proxy-log-level`, `/env.json` and `/shutdown`. It knows nothing of protocols or shards:
//! what it serves comes in through [`Admin`], a small set of hooks the binary fills in.
//!
//! HTTP/1.1 on httparse, one request at a time per connection (keep-alive), with explicit
//! limits: [`MAX_HEAD`] bytes of request head, [`MAX_BODY`] bytes of body, and
//! [`IDLE_TIMEOUT`] to send a request. Anything that is not HTTP closes the connection.

#![forbid(unsafe_code)]

mod gzip;
mod metrics;
mod server;

pub use metrics::Exposition;
pub use server::{serve, Admin, LogLevel, IDLE_TIMEOUT, MAX_BODY, MAX_HEAD};
