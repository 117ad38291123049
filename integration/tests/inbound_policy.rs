//! Inbound policy through the binary: the default policies
//! (`LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`) and the policy controller's `Server`s (the mock
//! controller's `InboundServerPolicies`), enforced per connection (opaque) and per request
//! (HTTP routes: 404, 403, gRPC `PERMISSION_DENIED`), with linkerd2-proxy's metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use linkerd2_proxy_api::inbound as api;
use ringlink_integration::controller::{self, Controller};
use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::identity::{self as mock, wait_ready, with_identity, TokenDir};
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::policy::{
    anyone, http_route, http_server, inject_failure, modify_headers, only, redirect, with_filters,
};
use ringlink_integration::proxy::{self, Proxy};
use ringlink_integration::{both_runtimes, h2};
use ringlink_protocols::tls::{Credentials, MeshTls, TrustAnchors};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

both_runtimes!(
    the_default_policy_admits_everyone,
    the_deny_default_closes_connections,
    routes_and_authorizations_decide_each_request,
    h2_and_grpc_requests_are_refused_as_linkerd_refuses_them,
    an_opaque_server_authorizes_connections,
    routes_authorize_client_identities,
    a_policy_update_terminates_live_connections,
    route_filters_modify_redirect_and_fail_requests,
    inbound_ips_limit_the_destinations,
    a_local_rate_limit_answers_429,
    the_audit_default_admits_and_names_itself,
    a_policy_the_proxy_cannot_use_refuses_only_its_port,
    unused_ports_are_forgotten_and_pinned_ones_kept,
    inbound_requests_go_to_the_application_whatever_they_name,
    an_http1_server_is_http1_whatever_the_bytes,
    cluster_and_authenticated_defaults_admit_whom_they_name
);

const WAIT: Duration = Duration::from_secs(10);

/// The clients' address: loopback, but not the `localhost` (127.0.0.1) that Linkerd's
/// decoding of a `Server` always admits (kubelet probes).
fn client_ip() -> std::net::IpAddr {
    "127.0.0.2".parse().unwrap()
}

/// A proxy whose inbound connections go to `app`, with `ctrl` as its policy controller.
fn with_policy(runtime: &'static str, ctrl: &Controller, app: SocketAddr) -> Proxy {
    proxy::new(runtime)
        .orig_dst(app)
        .control_plane(ctrl)
        .env("LINKERD2_PROXY_INBOUND_PORTS", app.port())
        .spawn()
}

/// The routes of [`routes_and_authorizations_decide_each_request`]: `/open` for anyone,
/// `/closed` for one identity only; nothing else is routed.
fn web_server() -> api::Server {
    http_server(
        "web",
        vec![
            http_route("open", "/open", vec![anyone("open-to-all")]),
            http_route(
                "closed",
                "/closed",
                vec![only(
                    "admin.ns.serviceaccount.identity.linkerd.cluster.local",
                    "admins",
                )],
            ),
        ],
    )
}

async fn metrics(proxy: &Proxy) -> Vec<ringlink_integration::metrics::Series> {
    parse(&call(proxy.admin, "GET", "/metrics", "").await.body)
}

/// Waits until the proxy applies the controller's policy: a request for an unrouted path
/// is answered 404 (the default policy routes everything).
async fn until_applied(proxy: &Proxy, authority: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut conn = Conn::connect_from(proxy.inbound, client_ip()).await;
        let response = conn
            .request(format!(
                "GET /unrouted HTTP/1.1\r\nhost: {authority}\r\n\r\n"
            ))
            .await;
        if response.status == 404 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "policy never applied:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn the_default_policy_admits_everyone(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let proxy = with_policy(runtime, &ctrl, app.addr);
    let mut conn = Conn::connect_from(proxy.inbound, client_ip()).await;
    for _ in 0..2 {
        let response = conn
            .request("GET /anything HTTP/1.1\r\nhost: app\r\n\r\n")
            .await;
        assert_eq!(response.status, 200, "{}", proxy.logs());
    }
    let series = metrics(&proxy).await;
    let allowed = [
        ("srv_kind", "default"),
        ("srv_name", "all-unauthenticated"),
        ("srv_group", ""),
        ("route_name", "default"),
        ("authz_name", "all-unauthenticated"),
        ("tls", "disabled"),
    ];
    assert_eq!(
        sum(&series, "inbound_http_authz_allow_total", &allowed),
        2.0,
        "{series:#?}"
    );
    // The controller was asked for the port, for the workload the injector names.
    assert!(ctrl.policy_calls(app.addr.port()) >= 1);
    assert_eq!(ctrl.last_workload().as_deref(), Some(proxy::WORKLOAD));
}

async fn the_deny_default_closes_connections(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let proxy = proxy::new(runtime)
        .orig_dst(app.addr)
        .control_plane(&ctrl)
        .env("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "deny")
        .spawn();
    // The proxy may close the connection (with a reset) before the connect even returns,
    // or before the request is written.
    if let Ok(mut stream) = TcpStream::connect(proxy.inbound).await {
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection stayed open");
        assert!(
            buf.is_empty(),
            "answered: {}",
            String::from_utf8_lossy(&buf)
        );
    }
    assert!(app.requests().is_empty());
    let series = metrics(&proxy).await;
    let denied = [("srv_kind", "default"), ("srv_name", "deny")];
    assert!(
        sum(&series, "inbound_tcp_authz_deny_total", &denied) >= 1.0,
        "{series:#?}"
    );
}

async fn routes_and_authorizations_decide_each_request(runtime: &'static str) {
    let app = http1::server(|req| Reply::ok(&req.target)).await;
    let ctrl = controller::new();
    ctrl.inbound_policy(app.addr.port(), web_server());
    let proxy = with_policy(runtime, &ctrl, app.addr);
    let authority = format!("web.test:{}", app.addr.port());
    until_applied(&proxy, &authority).await;
    // One keep-alive connection: each refusal is an answer, not a close.
    let mut conn = Conn::connect_from(proxy.inbound, client_ip()).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\n\r\n");
    let open = conn.request(get("/open/door")).await;
    assert_eq!(open.status, 200, "{}", proxy.logs());
    assert_eq!(open.body_str(), "/open/door");
    let closed = conn.request(get("/closed/door")).await;
    assert_eq!(closed.status, 403);
    assert_eq!(
        closed.header("l5d-proxy-error"),
        Some("unauthorized request on route")
    );
    let nowhere = conn.request(get("/elsewhere")).await;
    assert_eq!(nowhere.status, 404);
    let again = conn.request(get("/open/again")).await;
    assert_eq!(again.status, 200);
    // Only the authorized requests reached the application (besides the ones that checked
    // for the policy, which the default admitted).
    let reached: Vec<String> = app
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .filter(|target| target != "/unrouted")
        .collect();
    assert_eq!(reached, ["/open/door", "/open/again"]);
    let series = metrics(&proxy).await;
    let port = app.addr.port().to_string();
    let srv = [
        ("srv_kind", "server"),
        ("srv_name", "web"),
        ("srv_port", &port),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut labels: Vec<(&str, &str)> = srv.to_vec();
        labels.extend_from_slice(extra);
        labels
    };
    let allow = with(&[("route_name", "open"), ("authz_name", "open-to-all")]);
    assert_eq!(
        sum(&series, "inbound_http_authz_allow_total", &allow),
        2.0,
        "{series:#?}"
    );
    let deny = with(&[("route_name", "closed"), ("route_kind", "httproute")]);
    assert_eq!(
        sum(&series, "inbound_http_authz_deny_total", &deny),
        1.0,
        "{series:#?}"
    );
    assert!(sum(&series, "inbound_http_route_not_found_total", &srv) >= 1.0);
    // Refusals are the client's errors in the HTTP families.
    let forbidden = [("direction", "inbound"), ("status_code", "403")];
    assert_eq!(
        sum(&series, "response_total", &forbidden),
        1.0,
        "{series:#?}"
    );
    // A policy update applies to the next request on the same connection.
    ctrl.inbound_policy(
        app.addr.port(),
        http_server(
            "web",
            vec![http_route("all", "/", vec![anyone("everyone")])],
        ),
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let response = conn.request(get("/closed/door")).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 403);
        assert!(Instant::now() < deadline, "the update never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn h2_and_grpc_requests_are_refused_as_linkerd_refuses_them(runtime: &'static str) {
    let app = ringlink_integration::h2::server().await;
    let ctrl = controller::new();
    ctrl.inbound_policy(app.addr.port(), web_server());
    let proxy = with_policy(runtime, &ctrl, app.addr);
    let authority = format!("web.test:{}", app.addr.port());
    // Applied once an HTTP/1 request for an unrouted path is refused (the app speaks h2,
    // so the default's answer would be a 502).
    until_applied(&proxy, &authority).await;
    let client = h2::Client::connect_from(proxy.inbound, client_ip()).await;
    let uri = |path: &str| format!("http://{authority}{path}");
    let open = client
        .request("GET", &uri("/open"), Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(open.status, 200, "{}", proxy.logs());
    let closed = client
        .request("GET", &uri("/closed"), Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(closed.status, 403);
    let nowhere = client
        .request("GET", &uri("/nowhere"), Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(nowhere.status, 404);
    // gRPC: a trailers-only answer, HTTP 200 with grpc-status 7 (PERMISSION_DENIED) and
    // 5 (NOT_FOUND).
    let mut grpc = HeaderMap::new();
    grpc.insert("content-type", HeaderValue::from_static("application/grpc"));
    grpc.insert("te", HeaderValue::from_static("trailers"));
    let denied = client
        .request_with("POST", &uri("/closed/Call"), grpc.clone(), Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(denied.status, 200);
    assert_eq!(
        denied
            .headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("7")
    );
    let missing = client
        .request_with("POST", &uri("/nowhere/Call"), grpc, Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(
        missing
            .headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("5")
    );
}

async fn an_opaque_server_authorizes_connections(runtime: &'static str) {
    let echo = ringlink_integration::tcp::echo().await;
    let ctrl = controller::new();
    let mut server = http_server("db", Vec::new());
    server.protocol = Some(api::ProxyProtocol {
        kind: Some(api::proxy_protocol::Kind::Opaque(
            api::proxy_protocol::Opaque {},
        )),
    });
    server.authorizations = vec![only(
        "app.ns.serviceaccount.identity.linkerd.cluster.local",
        "app-only",
    )];
    ctrl.inbound_policy(echo.addr.port(), server);
    let proxy = with_policy(runtime, &ctrl, echo.addr);
    // A plaintext client has no identity: every connection is closed unanswered, once the
    // policy is applied (before, the default admits it and the echo answers).
    let deadline = Instant::now() + WAIT;
    loop {
        // The proxy may close (reset) a denied connection before the connect returns.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(client_ip(), 0)).unwrap();
        let answered = match socket.connect(proxy.inbound).await {
            Ok(mut stream) => {
                let _ = stream.write_all(b"ping").await;
                let mut buf = [0u8; 4];
                matches!(
                    tokio::time::timeout(WAIT, stream.read_exact(&mut buf)).await,
                    Ok(Ok(_))
                )
            }
            Err(_) => false,
        };
        let denied = [("srv_name", "db")];
        if !answered
            && sum(
                &metrics(&proxy).await,
                "inbound_tcp_authz_deny_total",
                &denied,
            ) >= 1.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "never denied:\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let series = metrics(&proxy).await;
    let denied = [
        ("srv_kind", "server"),
        ("srv_name", "db"),
        ("tls", "disabled"),
    ];
    assert!(
        sum(&series, "inbound_tcp_authz_deny_total", &denied) >= 1.0,
        "{series:#?}"
    );
}

const SERVER_ID: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";
const ADMIN_ID: &str = "admin.ns.serviceaccount.identity.linkerd.cluster.local";
const OTHER_ID: &str = "other.ns.serviceaccount.identity.linkerd.cluster.local";

/// A mesh TLS client for identity `name`, from [`client_ip`], to the proxy at `addr`.
async fn meshed_client(
    addr: SocketAddr,
    service: &mock::IdentityServer,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (key_pkcs8, chain) = service.issue(name, Duration::from_secs(3600));
    let anchors = TrustAnchors::from_pem(&service.trust_anchors_pem()).unwrap();
    let credentials = Credentials {
        name: name.to_string(),
        key_pkcs8,
        chain,
    };
    let config: Arc<rustls::ClientConfig> = MeshTls::new(&credentials, &anchors).unwrap().client;
    let tcp = ringlink_integration::tcp::connect_from(addr, client_ip()).await;
    let sni = ServerName::try_from(SERVER_ID.to_string()).unwrap();
    TlsConnector::from(config).connect(sni, tcp).await.unwrap()
}

/// One HTTP/1.1 GET on `io`; the response's status.
async fn status_of(
    io: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    path: &str,
) -> u16 {
    io.write_all(format!("GET {path} HTTP/1.1\r\nhost: web\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        io.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let length: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await.unwrap();
    text[9..12].parse().unwrap()
}

/// "Only meshed clients of identity X may call this port": a route authorizing one client
/// identity admits it over mesh TLS, and refuses another identity and plaintext clients.
async fn routes_authorize_client_identities(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    ctrl.inbound_policy(
        app.addr.port(),
        http_server(
            "web",
            vec![http_route("admin", "/", vec![only(ADMIN_ID, "admins")])],
        ),
    );
    let service = mock::new();
    let dir = TokenDir::new(&format!("policy-ids-{runtime}"), b"token");
    let proxy = with_identity(
        proxy::new(runtime).orig_dst(app.addr),
        &service,
        &dir,
        SERVER_ID,
    )
    .control_plane(&ctrl)
    .env("LINKERD2_PROXY_INBOUND_PORTS", app.addr.port())
    .spawn();
    wait_ready(&proxy).await;
    // Applied once a plaintext request is refused (the default admits it).
    let deadline = Instant::now() + WAIT;
    loop {
        let mut plain = Conn::connect_from(proxy.inbound, client_ip()).await;
        let response = plain.request("GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
        if response.status == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "policy never applied:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut admin = meshed_client(proxy.inbound, &service, ADMIN_ID).await;
    assert_eq!(status_of(&mut admin, "/").await, 200, "{}", proxy.logs());
    assert_eq!(status_of(&mut admin, "/again").await, 200);
    let mut other = meshed_client(proxy.inbound, &service, OTHER_ID).await;
    assert_eq!(status_of(&mut other, "/").await, 403);
    let series = metrics(&proxy).await;
    let allowed = [
        ("authz_name", "admins"),
        ("tls", "true"),
        ("client_id", ADMIN_ID),
    ];
    assert_eq!(
        sum(&series, "inbound_http_authz_allow_total", &allowed),
        2.0,
        "{series:#?}"
    );
    let denied = [
        ("route_name", "admin"),
        ("tls", "true"),
        ("client_id", OTHER_ID),
    ];
    assert_eq!(
        sum(&series, "inbound_http_authz_deny_total", &denied),
        1.0,
        "{series:#?}"
    );
    let plaintext = [("route_name", "admin"), ("tls", "no_identity")];
    assert!(sum(&series, "inbound_http_authz_deny_total", &plaintext) >= 1.0);
    // Of the meshed clients, only the admin's requests reached the application, with its
    // identity (plaintext ones may have, before the policy applied).
    let ids: Vec<Vec<String>> = app
        .header_values("l5d-client-id")
        .into_iter()
        .filter(|ids| !ids.is_empty())
        .collect();
    assert_eq!(ids, vec![vec![ADMIN_ID.to_string()]; 2]);
}

/// An opaque server's update that no longer admits a live connection closes it
/// (linkerd2-proxy's "Connection terminated due to policy change").
async fn a_policy_update_terminates_live_connections(runtime: &'static str) {
    let echo = ringlink_integration::tcp::echo().await;
    let ctrl = controller::new();
    let opaque = |authz: api::Authz| {
        let mut server = http_server("db", Vec::new());
        server.protocol = Some(api::ProxyProtocol {
            kind: Some(api::proxy_protocol::Kind::Opaque(
                api::proxy_protocol::Opaque {},
            )),
        });
        server.authorizations = vec![authz];
        server
    };
    ctrl.inbound_policy(echo.addr.port(), opaque(anyone("everyone")));
    let proxy = with_policy(runtime, &ctrl, echo.addr);
    // Wait for the controller's policy (allowed by `everyone`, counted under its name).
    let deadline = Instant::now() + WAIT;
    let mut stream = loop {
        let mut stream = ringlink_integration::tcp::connect_from(proxy.inbound, client_ip()).await;
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.unwrap();
        let series = metrics(&proxy).await;
        let allowed = [("srv_name", "db"), ("authz_name", "everyone")];
        if sum(&series, "inbound_tcp_authz_allow_total", &allowed) >= 1.0 {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "policy never applied:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Still open and served.
    stream.write_all(b"more").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"more");
    ctrl.inbound_policy(echo.addr.port(), opaque(only(ADMIN_ID, "admins")));
    // The live connection is closed: its reads end (EOF or reset) without more data.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "still open after the update:\n{}",
        proxy.logs()
    );
    assert!(rest.is_empty());
    let series = metrics(&proxy).await;
    let terminated = [("srv_name", "db"), ("tls", "disabled")];
    assert_eq!(
        sum(&series, "inbound_tcp_authz_terminate_total", &terminated),
        1.0,
        "{series:#?}"
    );
}

/// A route's filters, as linkerd2-proxy applies them: request headers modified, a redirect
/// answered by the proxy, a failure injected with its status and message.
async fn route_filters_modify_redirect_and_fail_requests(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let everyone = || vec![anyone("everyone")];
    ctrl.inbound_policy(
        app.addr.port(),
        http_server(
            "web",
            vec![
                with_filters(
                    http_route("headers", "/headers", everyone()),
                    vec![modify_headers(("x-route", "headers"), "x-secret")],
                ),
                with_filters(
                    http_route("moved", "/old", everyone()),
                    vec![redirect("/new", 301)],
                ),
                with_filters(
                    http_route("chaos", "/chaos", everyone()),
                    vec![inject_failure(503, "injected by policy")],
                ),
            ],
        ),
    );
    let proxy = with_policy(runtime, &ctrl, app.addr);
    until_applied(&proxy, "web").await;
    let mut conn = Conn::connect_from(proxy.inbound, client_ip()).await;
    let response = conn
        .request("GET /headers HTTP/1.1\r\nhost: web\r\nx-secret: hunter2\r\n\r\n")
        .await;
    assert_eq!(response.status, 200, "{}", proxy.logs());
    let seen = app
        .requests()
        .pop()
        .expect("the application got the request");
    assert!(
        seen.headers
            .iter()
            .any(|(n, v)| n == "x-route" && v == "headers"),
        "{:?}",
        seen.headers
    );
    assert!(!seen
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-secret")));
    let moved = conn.request("GET /old HTTP/1.1\r\nhost: web\r\n\r\n").await;
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("http://web/new"));
    let chaos = conn
        .request("GET /chaos HTTP/1.1\r\nhost: web\r\n\r\n")
        .await;
    assert_eq!(chaos.status, 503);
    assert_eq!(chaos.header("l5d-proxy-error"), Some("injected by policy"));
    // Neither the redirect nor the failure reached the application.
    let paths: Vec<String> = app.requests().iter().map(|r| r.target.clone()).collect();
    assert!(
        !paths.iter().any(|p| p == "/old" || p == "/chaos"),
        "{paths:?}"
    );
    // h2: the same answers.
    let client = h2::Client::connect_from(proxy.inbound, client_ip()).await;
    let moved = client
        .request("GET", "http://web/old", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.headers.get("location").map(|v| v.to_str().unwrap()),
        Some("http://web/new")
    );
    let chaos = client
        .request("GET", "http://web/chaos", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(chaos.status, 503);
}

/// `LINKERD2_PROXY_INBOUND_IPS`: an inbound connection whose original destination is not
/// one of the pod's addresses is refused; one that is, is served.
async fn inbound_ips_limit_the_destinations(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let elsewhere = proxy::new(runtime)
        .orig_dst(app.addr)
        .env("LINKERD2_PROXY_INBOUND_IPS", "10.9.9.9,fd00::9")
        .spawn();
    if let Ok(mut stream) = TcpStream::connect(elsewhere.inbound).await {
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection stayed open");
        assert!(
            buf.is_empty(),
            "answered: {}",
            String::from_utf8_lossy(&buf)
        );
    }
    assert!(app.requests().is_empty());
    let ours = proxy::new(runtime)
        .orig_dst(app.addr)
        .env("LINKERD2_PROXY_INBOUND_IPS", "10.9.9.9,127.0.0.1")
        .spawn();
    let mut conn = Conn::connect(ours.inbound).await;
    let response = conn.request("GET / HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(response.status, 200, "{}", ours.logs());
}

/// An `HTTPLocalRateLimitPolicy` of 3 requests per second for the server: a burst of 3,
/// then 429 with linkerd2-proxy's message, counted with the limit's labels.
async fn a_local_rate_limit_answers_429(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let mut server = http_server(
        "web",
        vec![http_route("all", "/", vec![anyone("everyone")])],
    );
    if let Some(api::ProxyProtocol {
        kind: Some(api::proxy_protocol::Kind::Detect(detect)),
    }) = &mut server.protocol
    {
        detect.http_local_rate_limit = Some(api::HttpLocalRateLimit {
            metadata: Some(ringlink_integration::policy::resource(
                "httplocalratelimitpolicy",
                "three-per-second",
            )),
            total: Some(api::http_local_rate_limit::Limit {
                requests_per_second: 3,
            }),
            identity: None,
            overrides: Vec::new(),
        });
    }
    ctrl.inbound_policy(app.addr.port(), server);
    let proxy = with_policy(runtime, &ctrl, app.addr);
    // Applied once the route's authorization name shows up in the allow counter.
    let deadline = Instant::now() + WAIT;
    let mut conn = Conn::connect_from(proxy.inbound, client_ip()).await;
    let mut statuses = Vec::new();
    loop {
        let series = metrics(&proxy).await;
        if sum(
            &series,
            "inbound_http_authz_allow_total",
            &[("authz_name", "everyone")],
        ) > 0.0
        {
            break;
        }
        let response = conn.request("GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
        assert!(
            Instant::now() < deadline,
            "policy never applied:\n{}",
            proxy.logs()
        );
        if response.status == 429 {
            statuses.push(429);
            break;
        }
    }
    // A second's wait refills the bucket; then 10 requests at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    statuses.clear();
    let mut refusal = None;
    for _ in 0..10 {
        let response = conn.request("GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
        if response.status == 429 {
            refusal = response.header("l5d-proxy-error").map(str::to_string);
        }
        statuses.push(response.status);
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=4).contains(&allowed), "{statuses:?}");
    assert_eq!(
        statuses.len() - allowed,
        statuses.iter().filter(|s| **s == 429).count()
    );
    assert_eq!(refusal.as_deref(), Some("total rate limit exceeded: 3rps"));
    let series = metrics(&proxy).await;
    let limited = [
        ("srv_name", "web"),
        ("ratelimit_kind", "httplocalratelimitpolicy"),
        ("ratelimit_name", "three-per-second"),
        ("ratelimit_scope", "total"),
    ];
    assert!(
        sum(&series, "inbound_http_local_ratelimit_total", &limited) >= 6.0,
        "{series:#?}"
    );
}

/// `audit`: every client admitted, under the `audit` default's name.
async fn the_audit_default_admits_and_names_itself(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let proxy = proxy::new(runtime)
        .orig_dst(app.addr)
        .control_plane(&ctrl)
        .env("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "audit")
        .env("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.0/8")
        .spawn();
    let mut conn = Conn::connect_from(proxy.inbound, client_ip()).await;
    let response = conn.request("GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
    assert_eq!(response.status, 200, "{}", proxy.logs());
    let series = metrics(&proxy).await;
    let allowed = [
        ("srv_kind", "default"),
        ("srv_name", "audit"),
        ("authz_name", "audit"),
    ];
    assert_eq!(
        sum(&series, "inbound_http_authz_allow_total", &allowed),
        1.0,
        "{series:#?}"
    );
    assert!(proxy.logs().contains("Request allowed"), "{}", proxy.logs());
}

/// A `Server` the proxy cannot decode (a path regex that does not compile) becomes
/// linkerd2-proxy's invalid policy for its port only: its requests are refused (the invalid
/// policy's route authorizes no one, so linkerd2-proxy answers 403 before its 500 filter),
/// while another port's policy goes on working.
async fn a_policy_the_proxy_cannot_use_refuses_only_its_port(runtime: &'static str) {
    use linkerd2_proxy_api::http_route as route;
    let broken_app = http1::server(|_| Reply::ok("broken")).await;
    let good_app = http1::server(|_| Reply::ok("good")).await;
    let ctrl = controller::new();
    let mut broken = http_route("broken", "/", vec![anyone("everyone")]);
    broken.rules[0].matches = vec![route::HttpRouteMatch {
        path: Some(route::PathMatch {
            kind: Some(route::path_match::Kind::Regex("(".to_string())),
        }),
        ..Default::default()
    }];
    ctrl.inbound_policy(broken_app.addr.port(), http_server("broken", vec![broken]));
    ctrl.inbound_policy(
        good_app.addr.port(),
        http_server(
            "good",
            vec![http_route("all", "/", vec![anyone("everyone")])],
        ),
    );
    // One proxy, the original destination fixed per test: two proxies for two ports.
    let broken_proxy = with_policy(runtime, &ctrl, broken_app.addr);
    let good_proxy = with_policy(runtime, &ctrl, good_app.addr);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut conn = Conn::connect_from(broken_proxy.inbound, client_ip()).await;
        let response = conn.request("GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
        if response.status == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never refused:\n{}",
            broken_proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        broken_proxy.logs().contains("Server misconfigured"),
        "{}",
        broken_proxy.logs()
    );
    let mut conn = Conn::connect_from(good_proxy.inbound, client_ip()).await;
    let response = conn.request("GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body_str(), "good");
}

/// A port outside `LINKERD2_PROXY_INBOUND_PORTS` is watched when a connection uses it and
/// forgotten (its `WatchPort` stream closed) after the inbound discovery idle timeout; a
/// pinned port's stream stays open.
async fn unused_ports_are_forgotten_and_pinned_ones_kept(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let pinned = 9;
    let proxy = proxy::new(runtime)
        .orig_dst(app.addr)
        .control_plane(&ctrl)
        .env("LINKERD2_PROXY_INBOUND_PORTS", pinned)
        .env("LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT", "1s")
        .env(
            "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
            "200ms",
        )
        .spawn();
    let mut conn = Conn::connect(proxy.inbound).await;
    let response = conn.request("GET / HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(response.status, 200, "{}", proxy.logs());
    drop(conn);
    let port = app.addr.port();
    let deadline = Instant::now() + WAIT;
    while ctrl.open_policy_streams(port) == 0 {
        assert!(Instant::now() < deadline, "the used port was never watched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idle for longer than the timeout: forgotten.
    while ctrl.open_policy_streams(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle port was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ctrl.open_policy_streams(pinned),
        1,
        "the pinned port's stream"
    );
}

/// Inbound, a request naming a service under the Destination suffixes still goes to the
/// application in this pod (its original destination), as linkerd2-proxy's inbound does:
/// discovery is for outbound traffic.
async fn inbound_requests_go_to_the_application_whatever_they_name(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("local")).await;
    let ctrl = controller::new();
    let proxy = with_policy(runtime, &ctrl, app.addr);
    let mut conn = Conn::connect(proxy.inbound).await;
    let request = format!(
        "GET / HTTP/1.1\r\nhost: web.ns.svc.cluster.local:{}\r\n\r\n",
        app.addr.port()
    );
    let response = conn.request(request).await;
    assert_eq!(response.status, 200, "{}", proxy.logs());
    assert_eq!(response.body_str(), "local");
    assert_eq!(
        ctrl.get_calls(&format!("web.ns.svc.cluster.local:{}", app.addr.port())),
        0
    );
}

/// A server whose protocol is `Http1` serves HTTP/1 without detection: bytes that are not
/// HTTP get an HTTP/1 400, not opaque forwarding; HTTP/1 requests are routed as usual.
async fn an_http1_server_is_http1_whatever_the_bytes(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let mut server = http_server(
        "web",
        vec![http_route("all", "/", vec![anyone("everyone")])],
    );
    let routes = match server.protocol.take().and_then(|p| p.kind) {
        Some(api::proxy_protocol::Kind::Detect(detect)) => detect.http_routes,
        _ => unreachable!("http_server detects"),
    };
    server.protocol = Some(api::ProxyProtocol {
        kind: Some(api::proxy_protocol::Kind::Http1(
            api::proxy_protocol::Http1 {
                routes,
                local_rate_limit: None,
            },
        )),
    });
    ctrl.inbound_policy(app.addr.port(), server);
    let proxy = with_policy(runtime, &ctrl, app.addr);
    // Applied once a request is counted under the server's route.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut conn = Conn::connect_from(proxy.inbound, client_ip()).await;
        let response = conn.request("GET / HTTP/1.1\r\nhost: web\r\n\r\n").await;
        assert_eq!(response.status, 200);
        let series = metrics(&proxy).await;
        if sum(
            &series,
            "inbound_http_authz_allow_total",
            &[("srv_name", "web")],
        ) > 0.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "policy never applied:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = ringlink_integration::tcp::connect_from(proxy.inbound, client_ip()).await;
    stream.write_all(b"HELO not-http\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// The `cluster-unauthenticated` default admits clients from the cluster networks only, and
/// `all-authenticated` meshed clients only.
async fn cluster_and_authenticated_defaults_admit_whom_they_name(runtime: &'static str) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let ctrl = controller::new();
    let cluster = proxy::new(runtime)
        .orig_dst(app.addr)
        .control_plane(&ctrl)
        .env(
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
            "cluster-unauthenticated",
        )
        .env(
            "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS",
            "127.0.0.2/32,10.0.0.0/8",
        )
        .spawn();
    let get = "GET / HTTP/1.1\r\nhost: web\r\n\r\n";
    let mut inside = Conn::connect_from(cluster.inbound, client_ip()).await;
    assert_eq!(inside.request(get).await.status, 200, "{}", cluster.logs());
    let outside_ip: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let mut outside = Conn::connect_from(cluster.inbound, outside_ip).await;
    assert_eq!(outside.request(get).await.status, 403);
    let series = metrics(&cluster).await;
    let denied = [("srv_name", "cluster-unauthenticated")];
    assert_eq!(
        sum(&series, "inbound_http_authz_deny_total", &denied),
        1.0,
        "{series:#?}"
    );

    let service = mock::new();
    let dir = TokenDir::new(&format!("policy-authn-{runtime}"), b"token");
    let authenticated = with_identity(
        proxy::new(runtime).orig_dst(app.addr),
        &service,
        &dir,
        SERVER_ID,
    )
    .control_plane(&ctrl)
    .env("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "all-authenticated")
    .spawn();
    wait_ready(&authenticated).await;
    let mut plain = Conn::connect_from(authenticated.inbound, client_ip()).await;
    assert_eq!(
        plain.request(get).await.status,
        403,
        "{}",
        authenticated.logs()
    );
    let mut meshed = meshed_client(authenticated.inbound, &service, OTHER_ID).await;
    assert_eq!(status_of(&mut meshed, "/").await, 200);
}
