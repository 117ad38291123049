//! Two ringlink proxies meshed, as two meshed pods: the client's proxy (outbound) learns
//! from the Destination service that the endpoint's proxy is meshed (its identity, and its
//! inbound port for a transport header, as Linkerd ≥ 2.18 sends them) and originates mesh
//! TLS to it; the server's proxy (inbound) takes the direct connection, checks the client's
//! identity and hands the request to the application with `l5d-client-id`.

use std::net::SocketAddr;

use linkerd2_proxy_api::destination as pb;
use ringlink_integration::controller::{self, Controller};
use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::identity::{
    self as mock, wait_ready, with_identity, IdentityServer, TokenDir,
};
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::proxy::{self, Proxy};
use ringlink_integration::{both_runtimes, h2};

const SERVER: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";
const CLIENT: &str = "client.ns.serviceaccount.identity.linkerd.cluster.local";
const SVC: &str = "web.ns.svc.cluster.local";

/// The application's endpoint as the Destination service describes a meshed pod: its
/// proxy's identity and, for the transport header, its inbound port.
fn meshed_endpoint(app: SocketAddr, identity: &str, inbound: SocketAddr) -> pb::WeightedAddr {
    pb::WeightedAddr {
        tls_identity: Some(pb::TlsIdentity {
            strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
                pb::tls_identity::DnsLikeIdentity {
                    name: identity.to_string(),
                },
            )),
            server_name: None,
        }),
        protocol_hint: Some(pb::ProtocolHint {
            protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
            opaque_transport: Some(pb::protocol_hint::OpaqueTransport {
                inbound_port: u32::from(inbound.port()),
            }),
        }),
        ..controller::weighted(app)
    }
}

struct Pair {
    _identity: IdentityServer,
    /// Keeps the destination's stream open.
    _dst: controller::DstSender,
    _ctrl: Controller,
    client: Proxy,
    server: Proxy,
    _dirs: (TokenDir, TokenDir),
}

/// The two proxies, the application behind the server's, and the endpoint the Destination
/// service gives for `SVC:port` (with `identity` as the server proxy's).
async fn pair(runtime: &'static str, app: SocketAddr, identity: &str, tag: &str) -> Pair {
    let service = mock::new();
    let server_dir = TokenDir::new(&format!("mesh-{tag}-s"), b"token");
    let server = with_identity(proxy::new(runtime), &service, &server_dir, SERVER).spawn();
    let ctrl = controller::new();
    let client = proxy::new(runtime).env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", ctrl.addr());
    let client_dir = TokenDir::new(&format!("mesh-{tag}-c"), b"token");
    let client = with_identity(client, &service, &client_dir, CLIENT).spawn();
    wait_ready(&server).await;
    wait_ready(&client).await;
    let dst = ctrl.destination(&format!("{SVC}:{}", app.port()));
    dst.add_set(pb::WeightedAddrSet {
        addrs: vec![meshed_endpoint(app, identity, server.inbound)],
        metric_labels: Default::default(),
    });
    Pair {
        _identity: service,
        _dst: dst,
        _ctrl: ctrl,
        client,
        server,
        _dirs: (server_dir, client_dir),
    }
}

fn client_ids(app: &http1::Server) -> Vec<Vec<String>> {
    app.header_values("l5d-client-id")
}

async fn http1_between_meshed_proxies(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("meshed")).await;
    let mesh = pair(runtime, app.addr, SERVER, &format!("h1-{runtime}")).await;
    let mut conn = Conn::connect(mesh.client.outbound).await;
    let authority = format!("{SVC}:{}", app.addr.port());
    for _ in 0..3 {
        let response = conn
            .request(format!(
                "GET / HTTP/1.1\r\nhost: {authority}\r\nl5d-client-id: evil\r\n\r\n"
            ))
            .await;
        assert_eq!(response.status, 200, "{}", mesh.client.logs());
        assert_eq!(response.body_str(), "meshed");
    }
    // The application saw the client proxy's identity, never the client's claim.
    assert_eq!(client_ids(&app), vec![vec![CLIENT.to_string()]; 3]);
    let page = call(mesh.client.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let dst = [("direction", "outbound"), ("peer", "dst"), ("tls", "true")];
    assert!(sum(&series, "tcp_open_total", &dst) >= 1.0, "{}", page.body);
    let page = call(mesh.server.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let inbound = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(
        sum(&series, "request_total", &inbound),
        3.0,
        "{}",
        page.body
    );
}

async fn h2_between_meshed_proxies(runtime: &'static str) {
    let app = h2::server().await;
    let mesh = pair(runtime, app.addr, SERVER, &format!("h2-{runtime}")).await;
    let client = h2::Client::connect(mesh.client.outbound).await;
    let uri = format!("http://{SVC}:{}/", app.addr.port());
    for _ in 0..3 {
        let reply = client.request("GET", &uri, Vec::new(), None).await.unwrap();
        assert_eq!(reply.status, 200, "{}", mesh.client.logs());
    }
    let page = call(mesh.server.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let inbound = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(
        sum(&series, "request_total", &inbound),
        3.0,
        "{}",
        page.body
    );
}

async fn a_peer_with_another_identity_is_refused(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("meshed")).await;
    // Discovery says the endpoint's proxy is `other`; the server's proxy is `SERVER`.
    let other = "other.ns.serviceaccount.identity.linkerd.cluster.local";
    let mesh = pair(runtime, app.addr, other, &format!("mismatch-{runtime}")).await;
    let mut conn = Conn::connect(mesh.client.outbound).await;
    let authority = format!("{SVC}:{}", app.addr.port());
    let response = conn
        .request(format!("GET / HTTP/1.1\r\nhost: {authority}\r\n\r\n"))
        .await;
    assert_eq!(response.status, 502, "{}", mesh.client.logs());
    assert!(
        response
            .header("l5d-proxy-error")
            .is_some_and(|e| e.contains(other)),
        "{:?}",
        response.header("l5d-proxy-error")
    );
    assert!(app.requests().is_empty());
}

both_runtimes!(
    http1_between_meshed_proxies,
    h2_between_meshed_proxies,
    a_peer_with_another_identity_is_refused
);
