//! An HTTP connection as detection hands it over: the client's stream and what was read
//! from it ([`Client`]), the version it speaks, and the upstream connection detection left
//! behind ([`Preconnected`]).

use std::net::SocketAddr;

use crate::balance::Pick;
use crate::conn::{ConnMeta, Direction, TlsStatus};
use crate::ctx::ShardCtx;
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

// === functions ===

/// The TLS a request's metrics carry, as Linkerd labels it: inbound, the client
/// connection's (`client_id`); outbound, the endpoint's as discovery describes it
/// (`server_id`), or plaintext when discovery gave it no identity or none was picked.
pub fn request_tls<R: Runtime>(
    ctx: &ShardCtx<R>,
    meta: &ConnMeta,
    pick: Option<&Pick>,
) -> TlsStatus {
    match meta.direction {
        Direction::Inbound => meta.tls.clone(),
        Direction::Outbound => match pick.and_then(Pick::tls) {
            Some(endpoint) if ctx.identity.is_enabled() => TlsStatus::Established {
                peer: Some(endpoint.server_id.clone()),
            },
            _ => ctx.tcp.plaintext(Direction::Outbound).clone(),
        },
    }
}

/// A new h2 connection to `target` (with mesh TLS and a transport header saying HTTP/2 when
/// `tls` says its proxy is meshed), for the shard's shared pool or a client connection's.
pub fn dial_h2<R: Runtime>(
    ctx: &std::rc::Rc<ShardCtx<R>>,
    direction: Direction,
    target: SocketAddr,
    tls: Option<std::sync::Arc<crate::balance::EndpointTls>>,
) -> crate::upstream::h2::Connecting {
    use crate::upstream::{self, h2::ConnectFailure};
    let ctx = ctx.clone();
    Box::pin(async move {
        let timeout = ctx.settings.connect_timeout.get(direction);
        let h2 = Some(ringlink_protocols::transport_header::SessionProtocol::Http2);
        let (stream, status) = upstream::connect_endpoint::<R>(
            (&ctx.identity, &ctx.settings.sockets),
            direction,
            target,
            tls.as_deref(),
            h2,
            timeout,
        )
        .await
        .map_err(ConnectFailure::from_error)?;
        upstream::h2::handshake::<R>(&ctx.tcp, &ctx.life, direction, target, (stream, &status))
            .await
    })
}
