//! What is known about one accepted connection, accumulated as it is served (STYLE.md #15):
//! its direction and addresses at accept, then where its requests go. Metrics, logs and
//! (later) authorization and tap read it; nothing re-derives it.
//!
//! Where the next facts land: TLS status and the peer's identity (mTLS termination fills
//! them after the ClientHello), then the policy permit.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ringlink_control::policy::inbound::{ClientTls, ServerPolicy};

// === types ===

/// The part of a connection that lasts once its prelude is done — its HTTP server or its
/// opaque relay — boxed: it ends with the error the client failed with, if any.
pub type Rest<'a> = Pin<Box<dyn Future<Output = Option<io::Error>> + 'a>>;

/// Which side of the pod a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the local application to the world, redirected to the outbound port.
    Outbound,
    /// From the world to the local application, redirected to the inbound port.
    Inbound,
}

/// Where a connection's requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Every request to this address (the original destination; inbound, the local
    /// application's port).
    Fixed(SocketAddr),
    /// Each request to its own authority (`l5d-dst-override`, absolute-form URI or `Host`):
    /// the client addressed the proxy itself, as a forward proxy.
    ByAuthority,
    /// Inbound, addressed to the inbound port itself by a meshed peer: mesh TLS carrying a
    /// transport header says which local port it is for (then it is `Fixed`).
    Direct,
}

/// One connection's facts.
#[derive(Clone, Debug)]
pub struct ConnMeta {
    pub direction: Direction,
    /// The peer that connected.
    pub client: SocketAddr,
    /// The proxy's address it connected to.
    pub local: SocketAddr,
    pub route: Route,
    /// Whether the connection is mesh TLS, and with whom.
    pub tls: TlsStatus,
    /// Inbound: the policy of the port it is for, once known (its HTTP requests are
    /// authorized per route against it).
    pub policy: Option<Arc<ServerPolicy>>,
}

/// A connection's TLS, as the `tls` metric label and `l5d-client-id` see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TlsStatus {
    /// Identity is not configured: no mesh TLS anywhere (ringlink without a control plane).
    Disabled,
    /// Identity is configured, but this connection is plaintext, for this reason.
    NoTls(NoTlsReason),
    /// Mesh TLS, with the peer's identity when it presented a certificate (inbound: the
    /// client's; outbound: the server's).
    Established { peer: Option<Arc<str>> },
}

/// Why a connection of a proxy with identity is plaintext: Linkerd's `no_tls_reason` label
/// (`linkerd/tls/src/{server,client}.rs`, `NoServerTls` and `NoClientTls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoTlsReason {
    /// An inbound client that sent no ClientHello for this proxy.
    NoTlsFromRemote,
    /// A connection between the proxy and its own pod's application.
    Loopback,
    /// An outbound endpoint that discovery gave no identity.
    NotProvidedByServiceDiscovery,
}

/// A value per direction, so that settings are never picked by hand-written matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerDirection<T> {
    pub inbound: T,
    pub outbound: T,
}

// === impl Direction ===

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl TlsStatus ===

impl TlsStatus {
    /// The status of a plaintext connection, given whether identity is configured and why
    /// the connection is plaintext.
    pub fn plaintext(identity: bool, why: NoTlsReason) -> Self {
        if identity {
            TlsStatus::NoTls(why)
        } else {
            TlsStatus::Disabled
        }
    }

    /// The `tls` label value, as Linkerd writes it.
    pub fn label(&self) -> &'static str {
        match self {
            TlsStatus::Disabled => "disabled",
            TlsStatus::NoTls(_) => "no_identity",
            TlsStatus::Established { .. } => "true",
        }
    }

    /// The `no_tls_reason` label value; empty (the label is left out) unless plaintext with
    /// identity.
    pub fn no_tls_reason(&self) -> &'static str {
        match self {
            TlsStatus::NoTls(why) => why.as_str(),
            _ => "",
        }
    }

    /// The client's TLS as the inbound policy sees it.
    pub fn client_tls(&self) -> ClientTls<'_> {
        match self {
            TlsStatus::Established { peer } => ClientTls::Tls {
                client_id: peer.as_deref(),
            },
            _ => ClientTls::None,
        }
    }

    /// The peer's identity, when the connection is mesh TLS with one.
    pub fn peer(&self) -> Option<&str> {
        match self {
            TlsStatus::Established { peer } => peer.as_deref(),
            _ => None,
        }
    }
}

// === impl NoTlsReason ===

impl NoTlsReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NoTlsReason::NoTlsFromRemote => "no_tls_from_remote",
            NoTlsReason::Loopback => "loopback",
            NoTlsReason::NotProvidedByServiceDiscovery => "not_provided_by_service_discovery",
        }
    }
}

// === impl Route ===

impl Route {
    /// The fixed target, if the connection has one.
    pub fn fixed(self) -> Option<SocketAddr> {
        match self {
            Route::Fixed(addr) => Some(addr),
            Route::ByAuthority | Route::Direct => None,
        }
    }
}

// === impl PerDirection ===

impl<T: Copy> PerDirection<T> {
    pub fn get(&self, direction: Direction) -> T {
        match direction {
            Direction::Inbound => self.inbound,
            Direction::Outbound => self.outbound,
        }
    }
}

impl<T: Copy> From<[T; 2]> for PerDirection<T> {
    /// From the `[inbound, outbound]` arrays the configuration uses.
    fn from([inbound, outbound]: [T; 2]) -> Self {
        PerDirection { inbound, outbound }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_direction_picks_the_side() {
        let p = PerDirection::from([1, 2]);
        assert_eq!(p.get(Direction::Inbound), 1);
        assert_eq!(p.get(Direction::Outbound), 2);
    }
}
