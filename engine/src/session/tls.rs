//! Mesh TLS termination on the inbound side, as linkerd2-proxy does it: a ClientHello whose
//! SNI is this proxy's identity is terminated with the current certificate (a client
//! certificate is requested but not required); the peer's identity is the first DNS name of
//! its verified leaf. A ClientHello for another name passes through untouched (the caller
//! forwards it as opaque TCP).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlink_protocols::tls::{peer_identity, MeshTls};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::ctx::ShardCtx;
use crate::io::{Counted, Transport};
use crate::rt::Runtime;

/// How often a connection that arrived before the first certificate checks for it.
const CERTIFIED_POLL: Duration = Duration::from_millis(20);

// === functions ===

/// Whether a ClientHello for `sni` is for this proxy (terminate) or another name (pass it
/// through).
pub fn is_ours<R: Runtime>(ctx: &ShardCtx<R>, sni: &str) -> bool {
    ctx.identity
        .name()
        .is_some_and(|name| name.eq_ignore_ascii_case(sni))
}

/// The current TLS configurations, waiting up to `timeout` for the first certificate (a
/// meshed client may connect before this proxy is certified).
pub async fn certified<R: Runtime>(ctx: &ShardCtx<R>, timeout: Duration) -> Option<Arc<MeshTls>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(tls) = ctx.identity.current() {
            return Some(tls);
        }
        if Instant::now() >= deadline {
            return None;
        }
        Box::pin(R::sleep(CERTIFIED_POLL)).await;
    }
}

/// A terminated TLS connection.
pub struct Accepted<R: Runtime> {
    pub stream: Transport<R>,
    /// The client's identity, if it presented a certificate.
    pub peer: Option<Arc<str>>,
    /// The application protocol negotiated, if any.
    pub alpn: Option<Vec<u8>>,
}

/// Terminates TLS on `client`, whose first bytes (the ClientHello) detection already read
/// into `first`. The handshake must end within `timeout`.
pub async fn accept<R: Runtime>(
    config: Arc<ServerConfig>,
    client: Transport<R>,
    first: Vec<u8>,
    timeout: Duration,
) -> io::Result<Accepted<R>> {
    let (io, fd) = client.into_plain_poll()?;
    let handshake = TlsAcceptor::from(config).accept(Counted::uncounted(io, first));
    let tls = match crate::rt::timeout::<R, _>(timeout, handshake).await {
        Some(accepted) => accepted?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ))
        }
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| peer_identity(leaf))
        .map(Arc::from);
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok(Accepted {
        stream: Transport::tls(tokio_rustls::TlsStream::Server(tls), fd),
        peer,
        alpn,
    })
}
