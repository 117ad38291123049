//! Inbound policy through the binary: the default policies
//! (`LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`) and the policy controller's `Server`s (the mock
//! controller's `InboundServerPolicies`), enforced per connection (opaque) and per request
//! (HTTP routes: 404, 403, gRPC `PERMISSION_DENIED`), with linkerd2-proxy's metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use linkerd2_proxy_api::http_route as route;
use linkerd2_proxy_api::inbound as api;
use linkerd2_proxy_api::meta as meta_api;
use linkerd2_proxy_api::net as net_api;
use ringlink_integration::controller::{self, Controller};
use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::proxy::{self, Proxy};
use ringlink_integration::{both_runtimes, h2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(
    the_default_policy_admits_everyone,
    the_deny_default_closes_connections,
    routes_and_authorizations_decide_each_request,
    h2_and_grpc_requests_are_refused_as_linkerd_refuses_them,
    an_opaque_server_authorizes_connections
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

fn resource(kind: &str, name: &str) -> meta_api::Metadata {
    meta_api::Metadata {
        kind: Some(meta_api::metadata::Kind::Resource(meta_api::Resource {
            group: "policy.linkerd.io".to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            ..Default::default()
        })),
    }
}

/// An authorization of any client from anywhere (`unauthenticated`), named `name`.
fn anyone(name: &str) -> api::Authz {
    api::Authz {
        networks: vec![
            api::Network {
                net: Some(net_api::IpNetwork::from((
                    "0.0.0.0".parse::<std::net::IpAddr>().unwrap(),
                    0,
                ))),
                except: Vec::new(),
            },
            api::Network {
                net: Some(net_api::IpNetwork::from((
                    "::".parse::<std::net::IpAddr>().unwrap(),
                    0,
                ))),
                except: Vec::new(),
            },
        ],
        authentication: Some(api::Authn {
            permit: Some(api::authn::Permit::Unauthenticated(
                api::authn::PermitUnauthenticated {},
            )),
        }),
        labels: HashMap::new(),
        metadata: Some(resource("authorizationpolicy", name)),
    }
}

/// An authorization of mesh TLS clients with identity `id` only.
fn only(id: &str, name: &str) -> api::Authz {
    use api::authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    api::Authz {
        authentication: Some(api::Authn {
            permit: Some(api::authn::Permit::MeshTls(api::authn::PermitMeshTls {
                clients: Some(Clients::Identities(PermitClientIdentities {
                    identities: vec![api::Identity {
                        name: id.to_string(),
                    }],
                    suffixes: Vec::new(),
                })),
            })),
        }),
        ..anyone(name)
    }
}

/// An HTTP route named `name` for paths under `prefix`, with `authz`.
fn http_route(name: &str, prefix: &str, authz: Vec<api::Authz>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(resource("httproute", name)),
        hosts: Vec::new(),
        authorizations: authz,
        rules: vec![api::http_route::Rule {
            matches: vec![route::HttpRouteMatch {
                path: Some(route::PathMatch {
                    kind: Some(route::path_match::Kind::Prefix(prefix.to_string())),
                }),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
    }
}

/// A `Server` named `name` detecting HTTP, with `routes` and no connection authorization.
fn http_server(name: &str, routes: Vec<api::HttpRoute>) -> api::Server {
    api::Server {
        protocol: Some(api::ProxyProtocol {
            kind: Some(api::proxy_protocol::Kind::Detect(
                api::proxy_protocol::Detect {
                    timeout: Some(prost_types::Duration {
                        seconds: 10,
                        nanos: 0,
                    }),
                    http_routes: routes,
                    http_local_rate_limit: None,
                },
            )),
        }),
        server_ips: Vec::new(),
        authorizations: Vec::new(),
        labels: HashMap::from([
            ("group".to_string(), "policy.linkerd.io".to_string()),
            ("kind".to_string(), "server".to_string()),
            ("name".to_string(), name.to_string()),
        ]),
    }
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
    let mut stream = TcpStream::connect(proxy.inbound).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(
        buf.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&buf)
    );
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
    let before = app.requests().len();
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
    // Only the authorized requests reached the application.
    let reached: Vec<String> = app.requests()[before..]
        .iter()
        .map(|r| r.target.clone())
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
                    tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
                    Ok(Ok(4))
                )
            }
            Err(_) => false,
        };
        if !answered {
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
