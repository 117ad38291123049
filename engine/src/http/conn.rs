//! An HTTP connection as detection hands it over: the client's stream and what was read
//! from it ([`Client`]), the version it speaks, and the upstream connection detection left
//! behind ([`Preconnected`]).

use std::net::SocketAddr;

use crate::conn::ConnMeta;
use crate::error::ProxyError;
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::Runtime;
use crate::telemetry::PeerMetrics;
use crate::upstream::Upstream;

/// The header carrying a meshed client's verified identity to the application (inbound).
pub const CLIENT_ID: &str = "l5d-client-id";

// === types ===

/// The upstream connection detection left behind for the connection's first request to
/// its address, if any.
pub enum Preconnected<R: Runtime> {
    None,
    /// Opened eagerly to the original destination, while detection ran.
    Open(SocketAddr, Transport<R>),
    /// An idle pooled HTTP/1 connection to the original destination.
    Pooled(Upstream<R>),
    /// Connecting failed: the first request to this address is answered with the error.
    Failed(SocketAddr, ProxyError),
}

/// A detected HTTP connection: the client's stream, the bytes detection read from it, and
/// its series and table entry.
pub struct Client<'a, R: Runtime> {
    pub meta: &'a ConnMeta,
    pub stream: Transport<R>,
    pub first: Vec<u8>,
    pub metrics: &'a PeerMetrics,
    pub entry: &'a ConnEntry,
}

/// Which HTTP a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http1,
    H2,
}
