//! Linkerd's traffic policies as plain data, decoded on the control thread and read by the
//! shards.
//!
//! [`inbound`] is the server side: what the `InboundServerPolicies` API (or a built-in
//! default) says about one inbound port, with the connection and request checks
//! linkerd2-proxy makes against it.

pub mod inbound;
pub mod watch;
