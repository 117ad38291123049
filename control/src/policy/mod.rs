//! Linkerd's traffic policies as plain data, decoded on the control thread and read by the
//! shards.
//!
//! [`inbound`] is the server side: what the `InboundServerPolicies` API (or a built-in
//! default) says about one inbound port, with the connection and request checks
//! linkerd2-proxy makes against it. [`outbound`] is the client side: how requests to one
//! original destination are routed, split, timed out, retried and circuit-broken.

pub mod inbound;
pub mod outbound;
pub mod watch;
