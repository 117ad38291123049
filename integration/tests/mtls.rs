//! Mesh TLS on the inbound side, as a linkerd2-proxy peer reaches a meshed pod: a
//! ClientHello for the proxy's identity is terminated with the certificate the Identity
//! service issued; the client's identity reaches the application as `l5d-client-id` (a
//! client-supplied one never does) and labels the metrics; TLS for another name passes
//! through untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Reply};
use ringlink_integration::identity::{
    self as mock, wait_ready, with_identity, IdentityServer, TokenDir,
};
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::proxy::{self, Proxy};
use ringlink_integration::tcp;
use ringlink_protocols::tls::{Credentials, MeshTls, TrustAnchors};
use ringlink_protocols::transport_header::{self, SessionProtocol, TransportHeader};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const CLIENT: &str = "client.default.serviceaccount.identity.linkerd.cluster.local";

struct Mesh {
    service: IdentityServer,
    proxy: Proxy,
    _dir: TokenDir,
}

/// A certified proxy whose inbound traffic goes to `backend`.
async fn meshed(runtime: &str, backend: SocketAddr, tag: &str) -> Mesh {
    meshed_with(runtime, Some(backend), tag).await
}

/// A certified proxy; without a `backend`, connections go to their original destination
/// (a connection to the inbound port itself is then a direct one).
async fn meshed_with(runtime: &str, backend: Option<SocketAddr>, tag: &str) -> Mesh {
    let service = mock::new();
    let dir = TokenDir::new(&format!("mtls-{tag}"), b"token");
    let mut proxy = proxy::new(runtime);
    if let Some(backend) = backend {
        proxy = proxy.orig_dst(backend);
    }
    let proxy = with_identity(proxy, &service, &dir, NAME).spawn();
    wait_ready(&proxy).await;
    Mesh {
        service,
        proxy,
        _dir: dir,
    }
}

/// A mesh TLS client with identity `name`, issued by the same Identity service.
fn client_config(service: &IdentityServer, name: &str) -> Arc<rustls::ClientConfig> {
    mesh_tls(service, name).client
}

fn mesh_tls(service: &IdentityServer, name: &str) -> MeshTls {
    let (key_pkcs8, chain) = service.issue(name, Duration::from_secs(3600));
    let anchors = TrustAnchors::from_pem(&service.trust_anchors_pem()).unwrap();
    let credentials = Credentials {
        name: name.to_string(),
        key_pkcs8,
        chain,
    };
    MeshTls::new(&credentials, &anchors).unwrap()
}

async fn connect_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// Sends one HTTP/1.1 request and reads the response head and its content-length body.
async fn exchange(io: &mut (impl AsyncRead + AsyncWrite + Unpin), request: &str) -> String {
    io.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

fn client_ids(app: &http1::Server) -> Vec<Vec<String>> {
    app.header_values("l5d-client-id")
}

const SPOOFED: &str = "GET / HTTP/1.1\r\nhost: web\r\nl5d-client-id: evil.example\r\n\r\n";

async fn terminates_mtls_and_sets_the_client_id(runtime: &'static str) {
    let server = http1::server(|_| Reply::ok("hello")).await;
    let mesh = meshed(runtime, server.addr, &format!("id-{runtime}")).await;
    let config = client_config(&mesh.service, CLIENT);
    let mut tls = connect_tls(mesh.proxy.inbound, config, NAME)
        .await
        .expect("handshake");
    let response = exchange(&mut tls, SPOOFED).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Keep-alive over TLS: a second request on the same session.
    let response = exchange(&mut tls, SPOOFED).await;
    assert!(response.ends_with("hello"), "{response}");
    assert_eq!(client_ids(&server), vec![vec![CLIENT.to_string()]; 2]);
    // The plaintext client's claim never reaches the application either.
    let mut plain = TcpStream::connect(mesh.proxy.inbound).await.unwrap();
    let response = exchange(&mut plain, SPOOFED).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(client_ids(&server)[2], Vec::<String>::new());
    let page = call(mesh.proxy.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let meshed = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(sum(&series, "request_total", &meshed), 2.0, "{}", page.body);
    let plaintext = [
        ("direction", "inbound"),
        ("tls", "no_identity"),
        ("no_tls_reason", "no_tls_from_remote"),
    ];
    assert_eq!(
        sum(&series, "request_total", &plaintext),
        1.0,
        "{}",
        page.body
    );
    let src = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &src), 1.0, "{}", page.body);
}

/// A client that trusts this mesh's anchors, presenting `chain` (or no certificate).
fn custom_client(
    anchors_pem: &str,
    cert: Option<(Vec<u8>, Vec<Vec<u8>>)>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(anchors_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((key, chain)) => builder
            .with_client_auth_cert(
                chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .unwrap(),
    };
    Arc::new(config)
}

async fn an_untrusted_client_certificate_is_refused(runtime: &'static str) {
    let server = http1::server(|_| Reply::ok("hello")).await;
    let mesh = meshed(runtime, server.addr, &format!("untrusted-{runtime}")).await;
    // A client that trusts this mesh, with a certificate from another mesh's CA: only the
    // proxy's check of the client certificate can fail.
    let other = mock::new();
    let cert = other.issue(CLIENT, Duration::from_secs(3600));
    let config = custom_client(&mesh.service.trust_anchors_pem(), Some(cert));
    assert!(!answered(&mesh, config).await);
    assert!(server.requests().is_empty(), "the application saw nothing");
}

async fn an_expired_client_certificate_is_refused(runtime: &'static str) {
    let server = http1::server(|_| Reply::ok("hello")).await;
    let mesh = meshed(runtime, server.addr, &format!("expired-{runtime}")).await;
    // From this mesh's CA, valid until now: expired by the time it is presented.
    let cert = mesh.service.issue(CLIENT, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let config = custom_client(&mesh.service.trust_anchors_pem(), Some(cert));
    assert!(!answered(&mesh, config).await);
    assert!(server.requests().is_empty(), "the application saw nothing");
    // The same client with a valid certificate is served.
    let cert = mesh.service.issue(CLIENT, Duration::from_secs(3600));
    let config = custom_client(&mesh.service.trust_anchors_pem(), Some(cert));
    assert!(answered(&mesh, config).await);
}

/// Whether a mesh TLS client with `config` gets an answer to a request (within 5 s: a
/// refusal must not stall).
async fn answered(mesh: &Mesh, config: Arc<rustls::ClientConfig>) -> bool {
    let outcome = async {
        let mut tls = connect_tls(mesh.proxy.inbound, config, NAME).await?;
        tls.write_all(SPOOFED.as_bytes()).await?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf).await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("answered or refused without a stall");
    matches!(outcome, Ok(n) if n > 0)
}

async fn tls_without_a_client_certificate_has_no_client_id(runtime: &'static str) {
    let server = http1::server(|_| Reply::ok("hello")).await;
    let mesh = meshed(runtime, server.addr, &format!("anon-{runtime}")).await;
    let config = custom_client(&mesh.service.trust_anchors_pem(), None);
    let mut tls = connect_tls(mesh.proxy.inbound, config, NAME)
        .await
        .expect("handshake");
    let response = exchange(&mut tls, SPOOFED).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(client_ids(&server), vec![Vec::<String>::new()]);
    let page = call(mesh.proxy.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let tls = [("direction", "inbound"), ("tls", "true")];
    assert_eq!(sum(&series, "request_total", &tls), 1.0, "{}", page.body);
    assert!(!page.body.contains("client_id="), "{}", page.body);
}

async fn tls_for_another_name_passes_through(runtime: &'static str) {
    let echo = tcp::echo().await;
    let mesh = meshed(runtime, echo.addr, &format!("other-{runtime}")).await;
    // A ClientHello for some other name: forwarded as it is to the application (here an
    // echo server, which sends it back: the client sees its own ClientHello).
    let mut stream = TcpStream::connect(mesh.proxy.inbound).await.unwrap();
    let config = client_config(&mesh.service, CLIENT);
    let name = ServerName::try_from("other.example".to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    stream.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(back, hello);
}

/// A direct connection's transport header for `port`.
fn header(port: u16, protocol: Option<SessionProtocol>) -> Vec<u8> {
    transport_header::encode(&TransportHeader {
        port,
        name: None,
        protocol,
    })
}

async fn direct_http1_through_the_transport_header(runtime: &'static str) {
    let server = http1::server(|_| Reply::ok("direct")).await;
    let mesh = meshed_with(runtime, None, &format!("direct-{runtime}")).await;
    let config = mesh_tls(&mesh.service, CLIENT).client_transport_header;
    let mut tls = connect_tls(mesh.proxy.inbound, config, NAME)
        .await
        .expect("handshake");
    tls.write_all(&header(server.addr.port(), Some(SessionProtocol::Http1)))
        .await
        .unwrap();
    let response = exchange(&mut tls, SPOOFED).await;
    assert!(response.ends_with("direct"), "{response}");
    assert_eq!(client_ids(&server), vec![vec![CLIENT.to_string()]]);
    let page = call(mesh.proxy.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let port = server.addr.port().to_string();
    let meshed = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT),
        ("target_port", port.as_str()),
    ];
    assert_eq!(sum(&series, "request_total", &meshed), 1.0, "{}", page.body);
}

async fn direct_opaque_through_the_transport_header(runtime: &'static str) {
    let echo = tcp::echo().await;
    let mesh = meshed_with(runtime, None, &format!("direct-opaque-{runtime}")).await;
    let config = mesh_tls(&mesh.service, CLIENT).client_transport_header;
    let mut tls = connect_tls(mesh.proxy.inbound, config, NAME)
        .await
        .expect("handshake");
    let mut sent = header(echo.addr.port(), None);
    sent.extend_from_slice(b"opaque bytes");
    tls.write_all(&sent).await.unwrap();
    let mut back = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(&back, b"opaque bytes");
}

/// What a linkerd2-proxy client sends for an HTTP/1 application's request to a meshed pod
/// (Linkerd ≥ 2.18): mesh TLS to the inbound port, a transport header saying HTTP/2, and the
/// request upgraded to HTTP/2 with `l5d-orig-proto`. The application gets HTTP/1.1.
async fn direct_h2_with_orig_proto_reaches_http1(runtime: &'static str) {
    let server = http1::server(|_| Reply::ok("downgraded")).await;
    let mesh = meshed_with(runtime, None, &format!("direct-orig-{runtime}")).await;
    let config = mesh_tls(&mesh.service, CLIENT).client_transport_header;
    let mut tls = connect_tls(mesh.proxy.inbound, config, NAME)
        .await
        .expect("handshake");
    tls.write_all(&header(server.addr.port(), Some(SessionProtocol::Http2)))
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let request = http::Request::builder()
        .uri("http://web.default.svc.cluster.local:8080/hello")
        .header("l5d-orig-proto", "HTTP/1.1")
        .header("l5d-client-id", "evil.example")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200, "{}", mesh.proxy.logs());
    assert_eq!(response.headers()["l5d-orig-proto"], "HTTP/1.1");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].version, 1, "HTTP/1.1 to the application");
    assert_eq!(client_ids(&server), vec![vec![CLIENT.to_string()]]);
}

/// Whether the proxy closes a direct connection after `send` without an answer.
async fn refused(mesh: &Mesh, config: Option<Arc<rustls::ClientConfig>>, send: Vec<u8>) -> bool {
    let outcome = async {
        let mut buf = [0u8; 64];
        match config {
            Some(config) => {
                let mut tls = connect_tls(mesh.proxy.inbound, config, NAME).await?;
                tls.write_all(&send).await?;
                tls.read(&mut buf).await
            }
            None => {
                let mut tcp = TcpStream::connect(mesh.proxy.inbound).await?;
                tcp.write_all(&send).await?;
                tcp.read(&mut buf).await
            }
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("closed without a stall");
    !matches!(outcome, Ok(n) if n > 0)
}

async fn direct_connections_refuse_what_is_not_meshed(runtime: &'static str) {
    let server = http1::server(|_| Reply::ok("direct")).await;
    let mesh = meshed_with(runtime, None, &format!("direct-refused-{runtime}")).await;
    let port = server.addr.port();
    let mut request = header(port, Some(SessionProtocol::Http1));
    request.extend_from_slice(SPOOFED.as_bytes());
    // Plaintext, even with a header.
    assert!(refused(&mesh, None, request.clone()).await, "plaintext");
    // Mesh TLS without the transport header's ALPN.
    let no_alpn = mesh_tls(&mesh.service, CLIENT).client;
    assert!(
        refused(&mesh, Some(no_alpn), request.clone()).await,
        "no ALPN"
    );
    // No client certificate.
    let mut anonymous = (*custom_client(&mesh.service.trust_anchors_pem(), None)).clone();
    anonymous.alpn_protocols = vec![transport_header::ALPN.to_vec()];
    assert!(
        refused(&mesh, Some(Arc::new(anonymous)), request.clone()).await,
        "anonymous"
    );
    // A header that declares more than its 64 KiB limit, and one that is garbage.
    let config = mesh_tls(&mesh.service, CLIENT).client_transport_header;
    let mut oversized = transport_header::PREFACE.to_vec();
    oversized.extend_from_slice(&(70_000u32).to_be_bytes());
    oversized.extend_from_slice(&[0u8; 64]);
    assert!(
        refused(&mesh, Some(config.clone()), oversized).await,
        "oversized"
    );
    assert!(
        refused(&mesh, Some(config), SPOOFED.as_bytes().to_vec()).await,
        "no header"
    );
    assert!(server.requests().is_empty(), "the application saw nothing");
    // The proxy still serves a proper one.
    let config = mesh_tls(&mesh.service, CLIENT).client_transport_header;
    let mut tls = connect_tls(mesh.proxy.inbound, config, NAME)
        .await
        .expect("handshake");
    tls.write_all(&header(port, Some(SessionProtocol::Http1)))
        .await
        .unwrap();
    assert!(exchange(&mut tls, SPOOFED).await.ends_with("direct"));
}

ringlink_integration::both_runtimes!(
    direct_h2_with_orig_proto_reaches_http1,
    direct_http1_through_the_transport_header,
    direct_opaque_through_the_transport_header,
    direct_connections_refuse_what_is_not_meshed,
);

ringlink_integration::both_runtimes!(
    terminates_mtls_and_sets_the_client_id,
    an_untrusted_client_certificate_is_refused,
    an_expired_client_certificate_is_refused,
    tls_without_a_client_certificate_has_no_client_id,
    tls_for_another_name_passes_through
);
