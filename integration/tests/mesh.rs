//! Two ringlink proxies meshed, as two meshed pods: the client's proxy (outbound) learns
//! from the Destination service that the endpoint's proxy is meshed (its identity, and its
//! inbound port for a transport header, as Linkerd ≥ 2.18 sends them) and originates mesh
//! TLS to it; the server's proxy (inbound) takes the direct connection, checks the client's
//! identity and hands the request to the application with `l5d-client-id`.

use std::net::SocketAddr;
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use ringlink_integration::controller::{self, Controller};
use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::identity::{
    self as mock, wait_ready, with_identity, IdentityServer, TokenDir,
};
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::proxy::{self, Proxy};
use ringlink_integration::{both_runtimes, h2, ws};

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
    let client_dir = TokenDir::new(&format!("mesh-{tag}-c"), b"token");
    let client = with_identity(proxy::new(runtime), &service, &client_dir, CLIENT)
        .control_plane(&ctrl)
        .spawn();
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
    let authority = format!("{SVC}:{}", app.addr.port());
    // Two client connections, three requests on each.
    for _ in 0..2 {
        let mut conn = Conn::connect(mesh.client.outbound).await;
        for _ in 0..3 {
            let response = conn
                .request(format!(
                    "GET / HTTP/1.1\r\nhost: {authority}\r\nl5d-client-id: evil\r\n\r\n"
                ))
                .await;
            assert_eq!(response.status, 200, "{}", mesh.client.logs());
            assert_eq!(response.body_str(), "meshed");
            assert_eq!(response.header("l5d-orig-proto"), None);
        }
    }
    // The application saw the client proxy's identity, never the client's claim, and
    // HTTP/1.1 without the upgrade's header.
    assert_eq!(client_ids(&app), vec![vec![CLIENT.to_string()]; 6]);
    assert_eq!(
        app.header_values("l5d-orig-proto"),
        vec![Vec::<String>::new(); 6]
    );
    assert!(app.requests().iter().all(|r| r.version == 1));
    // The six requests shared one HTTP/2 connection between the proxies.
    let page = call(mesh.client.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", SERVER),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &dst), 1.0, "{}", page.body);
    // Linkerd's labels on the client's side: the application's connections are loopback,
    // the requests carry the endpoint's identity.
    let src = [
        ("direction", "outbound"),
        ("peer", "src"),
        ("tls", "no_identity"),
        ("no_tls_reason", "loopback"),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &src), 2.0, "{}", page.body);
    let requests = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", SERVER),
    ];
    assert_eq!(
        sum(&series, "request_total", &requests),
        6.0,
        "{}",
        page.body
    );
    let page = call(mesh.server.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let src = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &src), 1.0, "{}", page.body);
    let app_conns = [
        ("direction", "inbound"),
        ("peer", "dst"),
        ("tls", "no_identity"),
        ("no_tls_reason", "loopback"),
    ];
    assert!(
        sum(&series, "tcp_open_total", &app_conns) >= 1.0,
        "{}",
        page.body
    );
    let h2 = [("direction", "inbound"), ("protocol", "h2")];
    assert_eq!(
        sum(&series, "protocol_detect_total", &h2),
        1.0,
        "{}",
        page.body
    );
    let inbound = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(
        sum(&series, "request_total", &inbound),
        6.0,
        "{}",
        page.body
    );
}

/// What the upgrade must keep of an HTTP/1 exchange: request bodies (chunked and
/// length-delimited), chunked responses with trailers, HTTP/1.0 clients, HEAD.
async fn http1_messages_survive_the_upgrade(runtime: &'static str) {
    let app = http1::server(|req| match req.target.as_str() {
        "/chunked" => Reply::raw(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-app: 1\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n",
        ),
        "/echo" => Reply::raw(format!(
            "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n{}",
            req.body.len(),
            String::from_utf8_lossy(&req.body)
        )),
        _ => Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"),
    })
    .await;
    let mesh = pair(runtime, app.addr, SERVER, &format!("msgs-{runtime}")).await;
    let authority = format!("{SVC}:{}", app.addr.port());
    let mut conn = Conn::connect(mesh.client.outbound).await;

    // A chunked request body arrives whole; a length-delimited answer comes back.
    let response = conn
        .request(format!(
            "POST /echo HTTP/1.1\r\nhost: {authority}\r\ntransfer-encoding: chunked\r\n\r\n\
             3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status, 201, "{}", mesh.client.logs());
    assert_eq!(response.body_str(), "abcdefg");

    // A length-delimited request body.
    let response = conn
        .request(format!(
            "PUT /echo HTTP/1.1\r\nhost: {authority}\r\ncontent-length: 5\r\n\r\nhello"
        ))
        .await;
    assert_eq!(response.status, 201);
    assert_eq!(response.body_str(), "hello");

    // A chunked response stays chunked for an HTTP/1.1 client, trailers included.
    conn.send(format!(
        "GET /chunked HTTP/1.1\r\nhost: {authority}\r\n\r\n"
    ))
    .await;
    let response = conn.response("GET").await.expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("x-app"), Some("1"));
    assert_eq!(response.body_str(), "hello world");

    // HEAD: the head only, and the connection goes on.
    let response = conn
        .request(format!("HEAD /plain HTTP/1.1\r\nhost: {authority}\r\n\r\n"))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("4"));
    assert!(response.body.is_empty());
    let response = conn
        .request(format!("GET /plain HTTP/1.1\r\nhost: {authority}\r\n\r\n"))
        .await;
    assert_eq!(response.body_str(), "body");

    // An HTTP/1.0 client gets an HTTP/1.0 answer, the chunked body delimited by closing.
    let mut old = Conn::connect(mesh.client.outbound).await;
    old.send(format!(
        "GET /chunked HTTP/1.0\r\nhost: {authority}\r\n\r\n"
    ))
    .await;
    let response = old.response("GET").await.expect("a response");
    assert_eq!(response.version, 0, "{}", response.head);
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.body_str(), "hello world");
    assert!(old.is_closed().await);

    // The application saw each request in the version its client sent it with.
    let requests = app.requests();
    assert_eq!(requests.len(), 6);
    assert_eq!(requests[0].body, b"abcdefg");
    let versions: Vec<u8> = requests.iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 1, 1, 1, 1, 0]);
    assert!(requests
        .iter()
        .all(|r| r.headers.iter().all(|(n, _)| n != "l5d-orig-proto")));
}

async fn h2_between_meshed_proxies(runtime: &'static str) {
    let app = h2::server().await;
    let mesh = pair(runtime, app.addr, SERVER, &format!("h2-{runtime}")).await;
    let uri = format!("http://{SVC}:{}/", app.addr.port());
    // Two client connections, three streams each.
    for _ in 0..2 {
        let client = h2::Client::connect(mesh.client.outbound).await;
        for _ in 0..3 {
            let reply = client.request("GET", &uri, Vec::new(), None).await.unwrap();
            assert_eq!(reply.status, 200, "{}", mesh.client.logs());
        }
    }
    // One mesh TLS connection between the proxies, shared by both client connections.
    let page = call(mesh.client.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", SERVER),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &dst), 1.0, "{}", page.body);
    let page = call(mesh.server.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let inbound = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(
        sum(&series, "request_total", &inbound),
        6.0,
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
    opaque_tcp_between_meshed_proxies,
    websocket_and_grpc_between_meshed_proxies,
    http1_between_meshed_proxies,
    http1_messages_survive_the_upgrade,
    h2_between_meshed_proxies,
    a_peer_with_another_identity_is_refused
);

/// What must stay end to end through the mesh: a WebSocket upgrade (HTTP/1 on the mesh TLS
/// connection, never upgraded to HTTP/2) and gRPC's trailers over h2.
async fn websocket_and_grpc_between_meshed_proxies(runtime: &'static str) {
    let echo = ws::echo().await;
    let mesh = pair(runtime, echo.addr, SERVER, &format!("ws-{runtime}")).await;
    let authority = format!("{SVC}:{}", echo.addr.port());
    let mut client = ws::Client::connect(mesh.client.outbound, &authority)
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", mesh.client.logs()));
    for text in ["meshed", "websocket"] {
        let reply = client
            .roundtrip(&ws::Message::Text(text.to_string()))
            .await
            .unwrap();
        assert_eq!(reply, ws::Message::Text(text.to_string()));
    }
    drop(client);
    // The server's proxy saw the upgrade as HTTP/1 with the client's identity.
    let page = call(mesh.server.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let inbound = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert!(
        sum(&series, "request_total", &inbound) >= 1.0,
        "{}",
        page.body
    );

    // gRPC: h2 with trailers, through the same pair shape.
    let app = h2::server().await;
    let mesh = pair(runtime, app.addr, SERVER, &format!("grpc-{runtime}")).await;
    let client = h2::Client::connect(mesh.client.outbound).await;
    // The test server's `/echo` returns the body and the request's trailers.
    let uri = format!("http://{SVC}:{}/echo", app.addr.port());
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    let reply = client
        .request_with(
            "POST",
            &uri,
            headers,
            b"\0\0\0\0\x02hi".to_vec(),
            Some(trailers),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", mesh.client.logs()));
    assert_eq!(reply.status, 200, "{}", mesh.client.logs());
    assert_eq!(reply.body, b"\0\0\0\0\x02hi");
    let trailers = reply.trailers.expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("x-server-trailer").map(|v| v.as_bytes()),
        Some(&b"done"[..])
    );
    let page = call(mesh.server.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    assert!(
        sum(&series, "request_total", &inbound) >= 1.0,
        "{}",
        page.body
    );
}

/// Opaque TCP between meshed proxies: the client's connection to an original destination
/// whose profile says opaque and names a meshed endpoint goes over mesh TLS with a transport
/// header (no session protocol) to the server's proxy, which forwards it to the port the
/// header names, with the client's identity on its series.
async fn opaque_tcp_between_meshed_proxies(runtime: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = ringlink_integration::tcp::echo().await;
    let service = mock::new();
    let server_dir = TokenDir::new(&format!("mesh-opaque-{runtime}-s"), b"token");
    let server = with_identity(proxy::new(runtime), &service, &server_dir, SERVER).spawn();
    let ctrl = controller::new();
    ctrl.profile(
        &echo.addr.to_string(),
        pb::DestinationProfile {
            endpoint: Some(meshed_endpoint(echo.addr, SERVER, server.inbound)),
            opaque_protocol: true,
            ..Default::default()
        },
    );
    let client_dir = TokenDir::new(&format!("mesh-opaque-{runtime}-c"), b"token");
    let client = with_identity(proxy::new(runtime), &service, &client_dir, CLIENT)
        .control_plane(&ctrl)
        .orig_dst(echo.addr)
        .env("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", "127.0.0.0/8")
        .spawn();
    wait_ready(&server).await;
    wait_ready(&client).await;
    let mut stream = tokio::net::TcpStream::connect(client.outbound)
        .await
        .unwrap();
    for word in [&b"opaque"[..], b"bytes"] {
        stream.write_all(word).await.unwrap();
        let mut back = vec![0u8; word.len()];
        stream
            .read_exact(&mut back)
            .await
            .unwrap_or_else(|e| panic!("{e}:\n{}", client.logs()));
        assert_eq!(back, word);
    }
    // Left quiet, both directions of each proxy's relay park, the one reading TLS too;
    // what comes next arrives whole (an echo of 100 KB, written in full before any of it
    // is read back, so both directions of both proxies carry bytes at once).
    for proxy in [&client, &server] {
        proxy.wait_for_parked_waits(2, Duration::from_secs(6)).await;
    }
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rx, mut tx) = stream.split();
    let (_, back) = tokio::join!(tx.write_all(&big), async {
        let mut back = vec![0u8; big.len()];
        rx.read_exact(&mut back).await.map(|_| back)
    });
    assert!(back.unwrap() == big, "the echo differs after parking");
    drop(stream);
    let page = call(server.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let src = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "true"),
        ("client_id", CLIENT),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &src), 1.0, "{}", page.body);
    let page = call(client.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", SERVER),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &dst), 1.0, "{}", page.body);
}
