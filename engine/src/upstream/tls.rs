//! Mesh TLS origination, as linkerd2-proxy's outbound does it: to an endpoint whose
//! discovery gave it an identity, TLS 1.3 with SNI = its server name, our certificate as
//! client authentication, and a check that its leaf carries exactly that identity. When
//! discovery gave the peer's inbound port for a transport header (`OpaqueTransport`, the
//! default since Linkerd 2.18), the connection goes to that port with ALPN
//! `transport.l5d.io/v1`, and, only if that ALPN was negotiated, starts with a transport
//! header naming the endpoint's port and the session protocol.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringlink_protocols::tls::{peer_identity, MeshTls};
use ringlink_protocols::transport_header::{self, SessionProtocol, TransportHeader};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::balance::EndpointTls;
use crate::conn::TlsStatus;
use crate::error::ProxyError;
use crate::io::{Counted, Transport};
use crate::rt::{Runtime, Stream, Writer};
use crate::settings::SocketSettings;

// === functions ===

/// Connects to the meshed endpoint `addr` with mesh TLS (see the module docs). Returns the
/// stream and its TLS status for the upstream's series.
pub async fn connect<R: Runtime>(
    mesh: Arc<MeshTls>,
    endpoint: &EndpointTls,
    addr: SocketAddr,
    protocol: Option<SessionProtocol>,
    timeout: Duration,
    dial: (&SocketSettings, crate::conn::Direction),
) -> Result<(Transport<R>, TlsStatus), ProxyError> {
    let header = endpoint.opaque_port.is_some();
    let to = match endpoint.opaque_port {
        Some(port) => SocketAddr::new(addr.ip(), port),
        None => addr,
    };
    let stream = super::connect::<R>(to, timeout, dial).await?;
    let failed =
        |why: String| ProxyError::Connect(io::Error::new(io::ErrorKind::ConnectionRefused, why));
    let (io, fd) = stream
        .into_plain_poll()
        .map_err(|error| failed(error.to_string()))?;
    let config = if header {
        mesh.client_transport_header.clone()
    } else {
        mesh.client.clone()
    };
    let name = ServerName::try_from(endpoint.server_name.clone())
        .map_err(|_| failed(format!("invalid server name {:?}", endpoint.server_name)))?;
    let handshake = TlsConnector::from(config).connect(name, Counted::uncounted(io, Vec::new()));
    let tls = match crate::rt::timeout::<R, _>(timeout, handshake).await {
        Some(Ok(tls)) => tls,
        Some(Err(error)) => {
            tracing::info!(dst.addr = %to, %error, "Mesh TLS handshake failed");
            return Err(failed(format!(
                "mesh TLS to {}: {error}",
                endpoint.server_id
            )));
        }
        None => return Err(ProxyError::ConnectTimeout(timeout)),
    };
    let session = &tls.get_ref().1;
    let peer = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| peer_identity(leaf));
    if peer.as_deref() != Some(&*endpoint.server_id) {
        return Err(failed(format!(
            "the endpoint's identity is {peer:?}, not {}",
            endpoint.server_id
        )));
    }
    let negotiated = session.alpn_protocol() == Some(transport_header::ALPN);
    let mut stream = Transport::<R>::tls(tokio_rustls::TlsStream::Client(tls), fd);
    if header && negotiated {
        let bytes = transport_header::encode(&TransportHeader {
            port: addr.port(),
            name: None,
            protocol,
        });
        let (rx, mut tx) = stream.into_split();
        let (written, _) = tx.write_all(bytes).await;
        stream = Transport::<R>::reunite(rx, tx).expect("the halves of one stream");
        if let Err(error) = written {
            return Err(failed(format!("transport header: {error}")));
        }
    }
    let status = TlsStatus::Established {
        peer: Some(endpoint.server_id.clone()),
    };
    Ok((stream, status))
}
