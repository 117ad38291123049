//! The tap API (`io.linkerd.proxy.tap.Tap/Observe`, what `linkerd viz tap` reads): served on
//! the control port only when `LINKERD2_PROXY_TAP_SVC_NAME` is set and identity is
//! configured; the tap controller's mTLS identity (or a loopback client) is served, other
//! identities get UNAUTHENTICATED; events for HTTP/1, h2 and gRPC through a real certified
//! proxy, matched, limited and extracted as linkerd2-proxy does; a client that never reads
//! costs the traffic nothing.

use std::net::SocketAddr;
use std::time::Duration;

use linkerd2_proxy_api::tap::tap_client::TapClient;
use linkerd2_proxy_api::tap::{ObserveRequest, TapEvent};
use ringlink_integration::grpc::{self, EchoClient, EchoRequest};
use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::identity::{
    self as mock, wait_ready, with_identity, IdentityServer, TokenDir,
};
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::proxy::{self, Proxy};
use ringlink_integration::tap::{self, Event, EventKind, Match, Observe};
use ringlink_protocols::tls::{Credentials, MeshTls, TrustAnchors};
use rustls::pki_types::ServerName;
use tonic::transport::Channel;

const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const TAP: &str = "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local";
const OTHER: &str = "other.default.serviceaccount.identity.linkerd.cluster.local";
const WAIT: Duration = Duration::from_secs(10);

struct Tapped {
    service: IdentityServer,
    proxy: Proxy,
    _dir: TokenDir,
}

/// A certified proxy with tap enabled, forwarding to `backend`.
async fn tapped(runtime: &str, backend: SocketAddr, tag: &str) -> Tapped {
    let service = mock::new();
    let dir = TokenDir::new(&format!("tap-{tag}"), b"token");
    let builder = proxy::new(runtime).orig_dst(backend);
    let proxy = with_identity(builder, &service, &dir, NAME)
        .env("LINKERD2_PROXY_TAP_SVC_NAME", TAP)
        .spawn();
    wait_ready(&proxy).await;
    assert!(proxy.tap.is_some(), "tap enabled:\n{}", proxy.logs());
    Tapped {
        service,
        proxy,
        _dir: dir,
    }
}

impl Tapped {
    /// A plaintext tap client from loopback.
    async fn client(&self) -> TapClient<Channel> {
        tap::connect(self.proxy.tap.unwrap(), None)
            .await
            .expect("tap connect")
    }

    /// An mTLS tap client with identity `name`.
    async fn client_as(&self, name: &str) -> TapClient<Channel> {
        let (key_pkcs8, chain) = self.service.issue(name, Duration::from_secs(3600));
        let anchors = TrustAnchors::from_pem(&self.service.trust_anchors_pem()).unwrap();
        let credentials = Credentials {
            name: name.to_string(),
            key_pkcs8,
            chain,
        };
        let config = MeshTls::new(&credentials, &anchors).unwrap().client;
        let server = ServerName::try_from(NAME.to_string()).unwrap();
        tap::connect(self.proxy.tap.unwrap(), Some((config, server)))
            .await
            .expect("tap connect over mTLS")
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let page = call(self.proxy.admin, "GET", "/metrics", "").await.body;
        sum(&parse(&page), name, labels)
    }

    /// Waits until the proxy counts `n` active Observe calls.
    async fn wait_active(&self, n: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.metric("tap_observe_active", &[]).await != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tap_observe_active never reached {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn observe(
    client: &mut TapClient<Channel>,
    req: ObserveRequest,
) -> tonic::Streaming<TapEvent> {
    client.observe(req).await.expect("observe").into_inner()
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn of_kind(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

async fn get(addr: SocketAddr, path: &str) -> http1::Response {
    let mut conn = Conn::connect(addr).await;
    conn.request(format!(
        "GET {path} HTTP/1.1\r\nhost: web.example:80\r\nx-test: yes\r\n\r\n"
    ))
    .await
}

// === tests ===

async fn enabled_only_with_the_service_name_and_identity(runtime: &'static str) {
    // Identity without the variable: no tap server.
    let service = mock::new();
    let dir = TokenDir::new("tap-off", b"token");
    let proxy = with_identity(proxy::new(runtime), &service, &dir, NAME).spawn();
    wait_ready(&proxy).await;
    assert!(proxy.tap.is_none(), "tap must be off:\n{}", proxy.logs());
    drop(proxy);
    // The variable without identity: no tap server, and a warning.
    let proxy = proxy::new(runtime)
        .env("LINKERD2_PROXY_TAP_SVC_NAME", TAP)
        .spawn();
    assert!(proxy.tap.is_none());
    assert!(
        proxy
            .wait_for_log("identity is not configured; tap is disabled", WAIT)
            .await,
        "{}",
        proxy.logs()
    );
    // Both: a tap server, which a loopback client can use.
    let backend = http1::server(|_| Reply::ok("hi")).await;
    let t = tapped(runtime, backend.addr, &format!("on-{runtime}")).await;
    let mut client = t.client().await;
    let mut events = observe(&mut client, Observe::new(1).path_prefix("/").build()).await;
    t.wait_active(1.0).await;
    assert_eq!(get(t.proxy.inbound, "/x").await.status, 200);
    let events = tap::until_end(&mut events, WAIT).await.expect("ends");
    assert_eq!(
        kinds(&events),
        [
            EventKind::RequestInit,
            EventKind::ResponseInit,
            EventKind::ResponseEnd
        ]
    );
}

async fn only_the_tap_controller_identity_is_served(runtime: &'static str) {
    let backend = http1::server(|_| Reply::ok("hi")).await;
    let t = tapped(runtime, backend.addr, &format!("authn-{runtime}")).await;
    let mut other = t.client_as(OTHER).await;
    let refused = other
        .observe(Observe::new(1).path_prefix("/").build())
        .await
        .expect_err("another identity is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "Unauthorized client");
    let mut controller = t.client_as(TAP).await;
    let mut events = observe(&mut controller, Observe::new(1).path_prefix("/").build()).await;
    t.wait_active(1.0).await;
    assert_eq!(get(t.proxy.inbound, "/y").await.status, 200);
    let events = tap::until_end(&mut events, WAIT).await.expect("ends");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].path.as_deref(), Some("/y"));
    assert!(
        t.metric("tap_observe_total", &[("result", "refused")])
            .await
            >= 1.0
    );
}

async fn invalid_requests_are_refused(runtime: &'static str) {
    let backend = http1::server(|_| Reply::ok("hi")).await;
    let t = tapped(runtime, backend.addr, &format!("invalid-{runtime}")).await;
    let mut client = t.client().await;
    let zero = client
        .observe(Observe::new(0).path_prefix("/").build())
        .await
        .expect_err("limit 0");
    assert_eq!(zero.code(), tonic::Code::InvalidArgument);
    assert_eq!(zero.message(), "limit must be positive");
    let no_match = client
        .observe(ObserveRequest {
            limit: 1,
            r#match: None,
            extract: None,
        })
        .await
        .expect_err("no match");
    assert_eq!(no_match.code(), tonic::Code::InvalidArgument);
    assert_eq!(no_match.message(), "missing required field");
    // Traffic was never affected.
    assert_eq!(get(t.proxy.inbound, "/z").await.status, 200);
}

async fn http1_events_by_path_prefix_with_headers_and_limit(runtime: &'static str) {
    let backend =
        http1::server(|req| Reply::ok(&"b".repeat(req.target.split('?').next().unwrap().len())))
            .await;
    let t = tapped(runtime, backend.addr, &format!("h1-{runtime}")).await;
    let mut client = t.client().await;
    let req = Observe::new(2).path_prefix("/tapped").headers(true).build();
    let mut events = observe(&mut client, req).await;
    t.wait_active(1.0).await;
    assert_eq!(get(t.proxy.inbound, "/other").await.status, 200);
    assert_eq!(get(t.proxy.inbound, "/tapped/a").await.status, 200);
    assert_eq!(get(t.proxy.inbound, "/tapped/bb?q=1").await.status, 200);
    // Over the limit: not tapped, and the stream ends with the second response.
    assert_eq!(get(t.proxy.inbound, "/tapped/c").await.status, 200);
    let events = tap::until_end(&mut events, WAIT).await.expect("ends");
    assert_eq!(events.len(), 6, "{events:#?}");
    let inits = of_kind(&events, EventKind::RequestInit);
    let paths: Vec<_> = inits.iter().map(|e| e.path.clone().unwrap()).collect();
    assert_eq!(paths, ["/tapped/a", "/tapped/bb"], "the path has no query");
    let first = inits[0];
    assert_eq!(first.direction, "inbound");
    assert_eq!(first.method.as_deref(), Some("GET"));
    assert_eq!(first.scheme.as_deref(), Some("http"));
    assert_eq!(first.authority.as_deref(), Some("web.example:80"));
    assert_eq!(first.destination, Some(backend.addr));
    assert_eq!(
        first.source_labels.get("tls").map(String::as_str),
        Some("no_tls_from_remote")
    );
    assert_eq!(header(&first.headers, "x-test"), Some(&b"yes"[..]));
    assert_ne!(inits[0].id, inits[1].id);
    let responses = of_kind(&events, EventKind::ResponseInit);
    assert!(responses.iter().all(|e| e.status == Some(200)));
    assert!(header(&responses[0].headers, "content-length").is_some());
    let ends = of_kind(&events, EventKind::ResponseEnd);
    let mut bytes: Vec<u64> = ends.iter().map(|e| e.response_bytes.unwrap()).collect();
    bytes.sort_unstable();
    assert_eq!(bytes, ["/tapped/a".len() as u64, "/tapped/bb".len() as u64]);
    assert!(ends.iter().all(|e| e.since_response_init.is_some()));
}

async fn h2_and_grpc_events_carry_pseudo_headers_and_grpc_status(runtime: &'static str) {
    let (backend, _handle) = grpc::serve("127.0.0.1:0".parse().unwrap()).await;
    let t = tapped(runtime, backend, &format!("grpc-{runtime}")).await;
    let mut client = t.client().await;
    let req = Observe::new(2)
        .path_prefix("/ringlink.test.Echo/")
        .headers(true)
        .build();
    let mut events = observe(&mut client, req).await;
    t.wait_active(1.0).await;
    let mut echo = EchoClient::connect(t.proxy.inbound).await.expect("grpc");
    echo.echo(EchoRequest::ok("hello")).await.expect("ok");
    let failed = echo
        .echo(EchoRequest::fail(tonic::Code::NotFound, "nope"))
        .await
        .expect_err("fails");
    assert_eq!(failed.code(), tonic::Code::NotFound);
    let events = tap::until_end(&mut events, WAIT).await.expect("ends");
    assert_eq!(events.len(), 6, "{events:#?}");
    let init = of_kind(&events, EventKind::RequestInit)[0];
    assert_eq!(init.method.as_deref(), Some("POST"));
    let names: Vec<&str> = init.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..4], [":method", ":scheme", ":authority", ":path"]);
    let response = of_kind(&events, EventKind::ResponseInit)[0];
    assert_eq!(response.headers[0].0, ":status");
    let mut statuses: Vec<u32> = of_kind(&events, EventKind::ResponseEnd)
        .iter()
        .map(|e| e.grpc_status.expect("grpc-status"))
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [0, tonic::Code::NotFound as u32]);
    let end = of_kind(&events, EventKind::ResponseEnd)[0];
    assert!(header(&end.trailers, "grpc-status").is_some(), "{end:#?}");
}

async fn matches_method_authority_port_and_not(runtime: &'static str) {
    let backend = http1::server(|_| Reply::ok("ok")).await;
    let t = tapped(runtime, backend.addr, &format!("match-{runtime}")).await;
    let mut client = t.client().await;
    let mut posts = observe(&mut client, Observe::new(1).method("POST").build()).await;
    let mut authority = observe(
        &mut client,
        Observe::new(1).authority("other.example:80").build(),
    )
    .await;
    let mut port = observe(
        &mut client,
        Observe::new(1)
            .destination_port(backend.addr.port())
            .build(),
    )
    .await;
    let mut wrong_port = observe(
        &mut client,
        Observe::new(1)
            .destination_port(backend.addr.port().wrapping_add(1).max(1))
            .build(),
    )
    .await;
    let mut not_get = observe(
        &mut client,
        Observe::new(1).not(Match::method("GET")).build(),
    )
    .await;
    t.wait_active(5.0).await;
    let mut conn = Conn::connect(t.proxy.inbound).await;
    let get = conn
        .request("GET /get HTTP/1.1\r\nhost: web.example:80\r\n\r\n")
        .await;
    assert_eq!(get.status, 200);
    let other = conn
        .request("GET /other HTTP/1.1\r\nhost: other.example:80\r\n\r\n")
        .await;
    assert_eq!(other.status, 200);
    let post = conn
        .request("POST /post HTTP/1.1\r\nhost: web.example:80\r\ncontent-length: 2\r\n\r\nhi")
        .await;
    assert_eq!(post.status, 200);
    let path = |events: Vec<Event>| events[0].path.clone().unwrap();
    assert_eq!(
        path(tap::until_end(&mut posts, WAIT).await.unwrap()),
        "/post"
    );
    assert_eq!(
        path(tap::until_end(&mut authority, WAIT).await.unwrap()),
        "/other"
    );
    assert_eq!(path(tap::until_end(&mut port, WAIT).await.unwrap()), "/get");
    assert_eq!(
        path(tap::until_end(&mut not_get, WAIT).await.unwrap()),
        "/post"
    );
    // A tap that matched nothing is still open, with nothing to say.
    assert!(tap::collect(&mut wrong_port, 1, Duration::from_millis(200))
        .await
        .is_empty());
}

async fn outbound_events_name_the_endpoint(runtime: &'static str) {
    let backend = http1::server(|_| Reply::ok("ok")).await;
    let t = tapped(runtime, backend.addr, &format!("out-{runtime}")).await;
    let mut client = t.client().await;
    let mut events = observe(&mut client, Observe::new(1).path_prefix("/out").build()).await;
    t.wait_active(1.0).await;
    assert_eq!(get(t.proxy.outbound, "/out").await.status, 200);
    let events = tap::until_end(&mut events, WAIT).await.expect("ends");
    let init = &events[0];
    assert_eq!(init.direction, "outbound");
    assert_eq!(init.destination, Some(backend.addr));
    // An endpoint discovery gave no identity: plaintext, and why.
    assert_eq!(
        init.destination_labels.get("tls").map(String::as_str),
        Some("not_provided_by_service_discovery"),
        "{init:#?}"
    );
}

async fn concurrent_observes_are_bounded_and_disconnects_are_cleaned_up(runtime: &'static str) {
    let backend = http1::server(|_| Reply::ok("ok")).await;
    let t = tapped(runtime, backend.addr, &format!("bound-{runtime}")).await;
    let mut client = t.client().await;
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(observe(&mut client, Observe::new(10).path_prefix("/").build()).await);
    }
    let refused = client
        .observe(Observe::new(10).path_prefix("/").build())
        .await
        .expect_err("the 17th");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    t.wait_active(16.0).await;
    // A request is seen by every tap.
    assert_eq!(get(t.proxy.inbound, "/all").await.status, 200);
    for stream in &mut open {
        let events = tap::collect(stream, 3, WAIT).await;
        assert_eq!(events.len(), 3);
    }
    // Clients going away (mid-stream: their limits are not reached) free their slots.
    drop(open);
    drop(client);
    t.wait_active(0.0).await;
    let mut client = t.client().await;
    let _again = observe(&mut client, Observe::new(1).path_prefix("/").build()).await;
    t.wait_active(1.0).await;
    assert_eq!(get(t.proxy.inbound, "/after").await.status, 200);
}

/// A tap client that never reads, while traffic flows: events are dropped and counted, every
/// request is answered, and the proxy's memory stays bounded.
async fn a_stalled_tap_client_costs_the_traffic_nothing(runtime: &'static str) {
    const REQUESTS: usize = 50_000;
    const CONNECTIONS: usize = 10;
    let backend = http1::server(|_| Reply::ok("ok")).await;
    let t = tapped(runtime, backend.addr, &format!("stall-{runtime}")).await;
    let mut client = t.client().await;
    let req = Observe::new(u32::MAX)
        .path_prefix("/")
        .headers(true)
        .build();
    let _never_read = observe(&mut client, req).await;
    t.wait_active(1.0).await;
    let rss_before = t.proxy.rss_kib();
    let inbound = t.proxy.inbound;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(inbound).await;
            let mut ok = 0;
            for i in 0..REQUESTS / CONNECTIONS {
                let res = conn
                    .request(format!(
                        "GET /load/{c}/{i} HTTP/1.1\r\nhost: web.example:80\r\n\r\n"
                    ))
                    .await;
                ok += usize::from(res.status == 200);
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    assert_eq!(ok, REQUESTS, "every request answered");
    let rss_after = t.proxy.rss_kib();
    let dropped = t.metric("tap_events_total", &[("result", "dropped")]).await;
    let sent = t.metric("tap_events_total", &[("result", "sent")]).await;
    assert!(dropped > 0.0, "events were dropped (sent {sent})");
    // Without the drops, 150,000 events (three per request). What was sent is one
    // channel's worth (400) plus what the tap client's HTTP/2 receive window takes in
    // without being read (hyper's 2 MiB stream window: some 20,000 small events).
    assert!(sent < 40_000.0, "sent {sent}, dropped {dropped}");
    assert!(
        sent + dropped >= REQUESTS as f64,
        "sent {sent}, dropped {dropped}"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

ringlink_integration::both_runtimes!(
    enabled_only_with_the_service_name_and_identity,
    http1_events_by_path_prefix_with_headers_and_limit,
    h2_and_grpc_events_carry_pseudo_headers_and_grpc_status,
);

mod monoio_only {
    macro_rules! monoio {
        ($($name:ident),+ $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name("monoio").await
            }
        )+};
    }
    monoio!(
        only_the_tap_controller_identity_is_served,
        invalid_requests_are_refused,
        matches_method_authority_port_and_not,
        outbound_events_name_the_endpoint,
        concurrent_observes_are_bounded_and_disconnects_are_cleaned_up,
        a_stalled_tap_client_costs_the_traffic_nothing,
    );
}

/// The `ringlink-tap` command against a real proxy: a person watching from a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_client_prints_a_proxys_events() {
    let backend = http1::server(|_| Reply::ok("ok")).await;
    let t = tapped("monoio", backend.addr, "cli").await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlink-tap"))
        .args(["--limit", "1", "--path-prefix", "/cli", "--headers"])
        .arg(t.proxy.tap.unwrap().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ringlink-tap");
    t.wait_active(1.0).await;
    assert_eq!(get(t.proxy.inbound, "/cli/item").await.status, 200);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("ringlink-tap ends after its limit")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("req id=") && lines[0].contains(":path=/cli/item"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("rsp id=") && lines[1].contains(":status=200"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("end id=") && lines[2].contains("response-length=2B"),
        "{stdout}"
    );
    assert!(stdout.contains("x-test"), "headers printed: {stdout}");
}
