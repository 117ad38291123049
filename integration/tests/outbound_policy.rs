//! Outbound policy through the real binary, against the mock controller's
//! `OutboundPolicies` and Destination services and real backends, in the spirit of
//! linkerd2-proxy's `client_policy.rs` tests: routes chosen by header and path, weighted
//! backends (measured over 1,000 requests, and shifted live), route timeouts, failure
//! injection and header filters, an invalid policy, the fallback when the controller has no
//! policy, and the route metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringlink_integration::backend::{backend, Backend};
use ringlink_integration::controller::{self, Controller};
use ringlink_integration::http1::Conn;
use ringlink_integration::outbound_policy::*;
use ringlink_integration::{both_runtimes, metrics, proxy};

both_runtimes!(
    routes_by_header_and_path,
    weighted_split_follows_the_weights,
    weights_shift_live,
    route_timeout_answers_504,
    h2_route_timeout_answers_504,
    filters_fail_and_modify_headers,
    invalid_policy_answers_500,
    no_policy_uses_the_original_destination,
    route_metrics_carry_linkerd_labels,
    failing_endpoint_is_ejected_then_probed,
    retries_turn_30_percent_failures_into_success,
    bodies_are_replayed_within_the_limit_only,
    per_try_timeout_retries_a_stalled_try,
    grpc_unavailable_is_retried_with_its_body,
    h2_bodies_pass_a_retrying_route_whole,
    l5d_headers_set_retries_and_timeouts_where_allowed,
    opaque_policy_skips_detection,
    profile_routes_win_and_retry_within_their_budget,
    profile_budget_bounds_retries,
    profile_dst_overrides_split_traffic,
    profile_route_timeout_answers_504,
    upgraded_requests_are_retried_and_filtered,
    first_available_skips_a_backend_without_endpoints,
    a_routed_destination_is_in_use,
    a_policy_routes_without_the_profiles_endpoints,
    a_profiled_address_is_balanced_over_its_service,
);

/// The original destination every test connection claims: a Service's cluster IP in the
/// profile networks, where nothing listens.
const VIP: &str = "127.0.0.99:7000";

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

fn path(name: &str) -> String {
    format!("{name}.ns.svc.cluster.local:8080")
}

/// Backends `names`, each the only endpoint of `<name>.ns.svc.cluster.local:8080`.
async fn services(ctrl: &Controller, names: &[&'static str]) -> Vec<Backend> {
    let mut backends = Vec::new();
    for name in names {
        let b = backend(name, 0).await;
        ctrl.destination(&path(name)).add([b.addr]);
        backends.push(b);
    }
    backends
}

fn proxy_for(runtime: &'static str, ctrl: &Controller, orig_dst: SocketAddr) -> proxy::Proxy {
    proxy::new(runtime)
        .control_plane(ctrl)
        .env("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", "127.0.0.0/8")
        .orig_dst(orig_dst)
        .spawn()
}

async fn get(conn: &mut Conn, target: &str, extra: &str) -> ringlink_integration::http1::Response {
    conn.request(format!(
        "GET {target} HTTP/1.1\r\nhost: web.ns.svc.cluster.local:7000\r\n{extra}\r\n"
    ))
    .await
}

// === tests ===

async fn routes_by_header_and_path(runtime: &'static str) {
    let ctrl = controller::new();
    let _backends = services(&ctrl, &["web", "api", "canary"]).await;
    let routes = vec![
        http_route(
            "by-header",
            vec![rule(
                vec![header("x-canary", "yes")],
                to(balancer("canary", &path("canary"))),
            )],
        ),
        http_route(
            "by-path",
            vec![rule(
                vec![path_prefix("/api")],
                to(balancer("api", &path("api"))),
            )],
        ),
        http_route(
            "default",
            vec![rule(vec![], to(balancer("web", &path("web"))))],
        ),
    ];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    for (target, extra, expected) in [
        ("/", "", "web"),
        ("/api/users", "", "api"),
        ("/apiary", "", "web"),
        // The longer path match wins over a header match (Gateway API precedence).
        ("/api", "x-canary: yes\r\n", "api"),
        ("/other", "x-canary: yes\r\n", "canary"),
        ("/other", "x-canary: no\r\n", "web"),
    ] {
        let res = get(&mut conn, target, extra).await;
        assert_eq!(res.status, 200, "{target} {extra:?}: {}", res.head);
        assert_eq!(res.body_str(), expected, "{target} {extra:?}");
    }
    assert_eq!(
        ctrl.last_outbound_workload().as_deref(),
        Some(proxy::WORKLOAD),
        "the Watch names the workload"
    );
}

async fn weighted_split_follows_the_weights(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web", "canary"]).await;
    let split = random_available(vec![
        (balancer("web", &path("web")), 90),
        (balancer("canary", &path("canary")), 10),
    ]);
    let routes = vec![http_route("split", vec![rule(vec![], split)])];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..1000 {
        assert_eq!(get(&mut conn, "/", "").await.status, 200);
    }
    let (web, canary) = (backends[0].hits(), backends[1].hits());
    assert_eq!(web + canary, 1000);
    // 10 % of 1,000 has a standard deviation of 9.5: ±4 of them.
    assert!((62..=138).contains(&canary), "canary got {canary} of 1000");
}

async fn weights_shift_live(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web", "canary"]).await;
    let weights = |web, canary| {
        let split = random_available(vec![
            (balancer("web", &path("web")), web),
            (balancer("canary", &path("canary")), canary),
        ]);
        http_policy(
            "web",
            7000,
            vec![http_route("split", vec![rule(vec![], split)])],
        )
    };
    ctrl.outbound_policy(vip(), weights(100, 0));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..20 {
        assert_eq!(get(&mut conn, "/", "").await.body_str(), "web");
    }
    ctrl.outbound_policy(vip(), weights(0, 100));
    // The update reaches the shards; then every request (same connection) goes to the canary.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&mut conn, "/", "").await.body_str() != "canary" {
        assert!(
            Instant::now() < deadline,
            "the new weights never took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = backends[0].hits();
    for _ in 0..20 {
        assert_eq!(get(&mut conn, "/", "").await.body_str(), "canary");
    }
    assert_eq!(
        backends[0].hits(),
        before,
        "web gets nothing after the shift"
    );
    assert_eq!(
        ctrl.outbound_calls(vip()),
        1,
        "one stream carried both policies"
    );
}

async fn route_timeout_answers_504(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web"]).await;
    let routes = vec![http_route(
        "slow",
        vec![with_request_timeout(
            rule(vec![], to(balancer("web", &path("web")))),
            Duration::from_millis(300),
        )],
    )];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    assert_eq!(get(&mut conn, "/", "").await.status, 200, "fast enough");
    backends[0]
        .delay_ms
        .store(3000, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let res = get(&mut conn, "/", "").await;
    let took = started.elapsed();
    assert_eq!(res.status, 504, "{}", res.head);
    let error = res.header("l5d-proxy-error").unwrap_or_default();
    assert!(error.contains("timed out"), "l5d-proxy-error: {error:?}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    assert!(
        took >= Duration::from_millis(250),
        "answered after {took:?}"
    );
}

async fn h2_route_timeout_answers_504(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web"]).await;
    backends[0]
        .delay_ms
        .store(3000, std::sync::atomic::Ordering::SeqCst);
    let routes = vec![http_route(
        "slow",
        vec![with_request_timeout(
            rule(vec![], to(balancer("web", &path("web")))),
            Duration::from_millis(300),
        )],
    )];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let client = ringlink_integration::h2::Client::connect(proxy.outbound).await;
    let started = Instant::now();
    let reply = client
        .request("GET", "http://web.ns.svc.cluster.local:7000/", vec![], None)
        .await
        .expect("a response");
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(reply.headers.contains_key("l5d-proxy-error"));
}

async fn filters_fail_and_modify_headers(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web"]).await;
    let routes = vec![
        http_route(
            "broken",
            vec![with_filters(
                rule(
                    vec![path_prefix("/broken")],
                    to(balancer("web", &path("web"))),
                ),
                vec![fail_with(503, "injected by policy")],
            )],
        ),
        http_route(
            "decorated",
            vec![with_filters(
                rule(vec![], to(balancer("web", &path("web")))),
                vec![
                    add_request_header("x-route", "decorated"),
                    set_response_header("x-served-by", "ringlink-route"),
                ],
            )],
        ),
    ];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = get(&mut conn, "/broken", "").await;
    assert_eq!(res.status, 503, "{}", res.head);
    assert_eq!(res.header("l5d-proxy-error"), Some("injected by policy"));
    assert_eq!(
        backends[0].hits(),
        0,
        "an injected failure reaches no backend"
    );
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = get(&mut conn, "/fine", "").await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(res.header("x-served-by"), Some("ringlink-route"));
    let head = backends[0]
        .heads()
        .pop()
        .expect("the backend saw the request");
    assert!(
        head.to_ascii_lowercase().contains("x-route: decorated"),
        "{head}"
    );
}

async fn invalid_policy_answers_500(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web"]).await;
    let mut backend = balancer("web", &path("web"));
    backend.queue = None; // Linkerd requires a queue: the policy does not decode.
    let routes = vec![http_route("r", vec![rule(vec![], to(backend))])];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = get(&mut conn, "/", "").await;
    assert_eq!(res.status, 500, "{}", res.head);
    assert_eq!(backends[0].hits(), 0);
    // Fixed by the controller, the destination serves again.
    let routes = vec![http_route(
        "r",
        vec![rule(vec![], to(balancer("web", &path("web"))))],
    )];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = Conn::connect(proxy.outbound).await;
        if get(&mut conn, "/", "").await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the valid policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn no_policy_uses_the_original_destination(runtime: &'static str) {
    let ctrl = controller::new();
    let direct = backend("direct", 0).await;
    // The controller knows no policy for this address: it answers NotFound.
    let proxy = proxy_for(runtime, &ctrl, direct.addr);
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..3 {
        // (A Host under the profile suffixes would be routed by its name.)
        let res = conn
            .request("GET / HTTP/1.1\r\nhost: direct.example\r\n\r\n")
            .await;
        assert_eq!((res.status, res.body_str()), (200, "direct"));
    }
    assert_eq!(
        ctrl.outbound_calls(direct.addr),
        1,
        "asked once, not retried"
    );
}

async fn route_metrics_carry_linkerd_labels(runtime: &'static str) {
    let ctrl = controller::new();
    let _backends = services(&ctrl, &["web"]).await;
    let routes = vec![
        http_route(
            "broken",
            vec![with_filters(
                rule(
                    vec![path_prefix("/broken")],
                    to(balancer("web", &path("web"))),
                ),
                vec![fail_with(500, "nope")],
            )],
        ),
        http_route(
            "main",
            vec![rule(vec![], to(balancer("web", &path("web"))))],
        ),
    ];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..3 {
        assert_eq!(get(&mut conn, "/", "").await.status, 200);
    }
    let mut conn = Conn::connect(proxy.outbound).await;
    assert_eq!(get(&mut conn, "/broken", "").await.status, 500);
    let page = ringlink_integration::http::call(proxy.admin, "GET", "/metrics", "").await;
    let series = metrics::parse(&page.body);
    let route = [
        ("parent_group", "core"),
        ("parent_kind", "Service"),
        ("parent_namespace", "ns"),
        ("parent_name", "web"),
        ("parent_port", "7000"),
        ("route_group", "gateway.networking.k8s.io"),
        ("route_kind", "HTTPRoute"),
        ("route_name", "main"),
    ];
    let ok = [&route[..], &[("http_status", "200")]].concat();
    assert_eq!(
        metrics::sum(&series, "outbound_http_route_request_statuses_total", &ok),
        3.0,
        "{}",
        page.body
    );
    let backend = [
        &route[..],
        &[("backend_name", "web"), ("backend_port", "8080")],
    ]
    .concat();
    assert_eq!(
        metrics::sum(
            &series,
            "outbound_http_route_backend_requests_total",
            &backend
        ),
        3.0
    );
    let broken = [("route_name", "broken"), ("http_status", "500")];
    assert_eq!(
        metrics::sum(
            &series,
            "outbound_http_route_request_statuses_total",
            &broken
        ),
        1.0
    );
    assert!(
        metrics::sum(
            &series,
            "outbound_http_route_request_duration_seconds_count",
            &route
        ) >= 3.0
    );
}

async fn failing_endpoint_is_ejected_then_probed(runtime: &'static str) {
    let ctrl = controller::new();
    // The failing endpoint answers at once, the good one after 5 ms: the balancer prefers
    // the failing one until it is ejected (the trap failure accrual exists for).
    let (good, bad) = (backend("good", 5).await, backend("bad", 0).await);
    bad.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    ctrl.destination(&path("web")).add([good.addr, bad.addr]);
    let routes = vec![http_route(
        "r",
        vec![rule(vec![], to(balancer("web", &path("web"))))],
    )];
    let accrual = Some((3, Duration::from_secs(1), Duration::from_secs(60)));
    ctrl.outbound_policy(
        vip(),
        http_policy_with_accrual("web", 7000, routes, accrual),
    );
    let proxy = proxy::new(runtime)
        .control_plane(&ctrl)
        .env("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", "127.0.0.0/8")
        .orig_dst(vip())
        .shards(1)
        .spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    // Until three failures in a row eject it, the failing endpoint answers some requests.
    let mut failed = 0;
    for _ in 0..100 {
        if get(&mut conn, "/", "").await.status == 500 {
            failed += 1;
        }
    }
    assert_eq!(failed, 3, "ejected after max_failures");
    assert_eq!(bad.hits(), 3);
    // After its backoff, one probe; it fails and the endpoint leaves again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..50 {
        get(&mut conn, "/", "").await;
    }
    assert_eq!(bad.hits(), 4, "one probe after the backoff");
    // Healed, its next probe (after the doubled backoff) closes the breaker.
    bad.broken.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..100 {
        assert_eq!(get(&mut conn, "/", "").await.status, 200);
    }
    assert!(
        bad.hits() > 10,
        "back in the balancer: {} requests",
        bad.hits()
    );
}

/// A route retrying 5xx up to `max_retries` times, bodies up to 16 bytes.
fn retrying_policy(
    max_retries: u32,
    timeout: Option<Duration>,
) -> linkerd2_proxy_api::outbound::OutboundPolicy {
    let rule = with_retry(
        rule(vec![], to(balancer("web", &path("web")))),
        max_retries,
        16,
        (500, 599),
        timeout,
    );
    http_policy("web", 7000, vec![http_route("retrying", vec![rule])])
}

async fn retries_turn_30_percent_failures_into_success(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web"]).await;
    backends[0]
        .fail_percent
        .store(30, std::sync::atomic::Ordering::SeqCst);
    ctrl.outbound_policy(vip(), retrying_policy(5, None));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    let mut ok = 0;
    for _ in 0..1000 {
        if get(&mut conn, "/", "").await.status == 200 {
            ok += 1;
        }
    }
    assert!(ok >= 995, "{ok} of 1000 succeeded");
    // About 30 % of tries fail: some 430 retries, never more than 5 per request.
    let tries = backends[0].hits();
    assert!(
        (1300..1600).contains(&tries),
        "{tries} tries for 1000 requests"
    );
    let page = ringlink_integration::http::call(proxy.admin, "GET", "/metrics", "").await;
    let series = metrics::parse(&page.body);
    let retries = metrics::sum(
        &series,
        "outbound_http_route_retry_requests_total",
        &[("route_name", "retrying")],
    );
    assert_eq!(retries as usize, tries - 1000, "{}", page.body);
}

async fn bodies_are_replayed_within_the_limit_only(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web"]).await;
    backends[0]
        .fail_percent
        .store(100, std::sync::atomic::Ordering::SeqCst);
    ctrl.outbound_policy(vip(), retrying_policy(2, None));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let post = |body: &str| {
        format!(
            "POST /submit HTTP/1.1\r\nhost: web.ns.svc.cluster.local:7000\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // A small body is sent three times, whole each time.
    let mut conn = Conn::connect(proxy.outbound).await;
    assert_eq!(conn.request(post("hello")).await.status, 503);
    assert_eq!(backends[0].hits(), 3);
    assert!(backends[0].bodies().iter().all(|b| b == b"hello"));
    // A body over the limit (16 bytes) is sent once.
    let mut conn = Conn::connect(proxy.outbound).await;
    let long = "x".repeat(100);
    assert_eq!(conn.request(post(&long)).await.status, 503);
    assert_eq!(backends[0].hits(), 4, "not retried");
    assert_eq!(backends[0].bodies().last().map(Vec::len), Some(100));
    // The connection still serves the next request.
    backends[0]
        .fail_percent
        .store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(conn.request(post("again")).await.status, 200);
}

async fn per_try_timeout_retries_a_stalled_try(runtime: &'static str) {
    let ctrl = controller::new();
    let (slow, fast) = (backend("slow", 2000).await, backend("fast", 50).await);
    ctrl.destination(&path("web")).add([slow.addr, fast.addr]);
    ctrl.outbound_policy(vip(), retrying_policy(3, Some(Duration::from_millis(300))));
    let proxy = proxy_for(runtime, &ctrl, vip());
    for _ in 0..6 {
        let started = Instant::now();
        let mut conn = Conn::connect(proxy.outbound).await;
        let res = get(&mut conn, "/", "").await;
        assert_eq!((res.status, res.body_str()), (200, "fast"), "{}", res.head);
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
}

/// An h2 server answering gRPC calls: every other call (the first, the third…) fails with
/// a trailers-only `grpc-status: 14`; the others succeed with their request body echoed.
/// Counts calls and keeps the bodies.
async fn flaky_grpc() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(stream).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let mut body = request.into_body();
                    let mut data = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        data.extend_from_slice(&chunk);
                    }
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(data.clone());
                        seen.len()
                    };
                    let status = if n % 2 == 1 { "14" } else { "0" };
                    let response = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .header("grpc-status", status)
                        .body(())
                        .unwrap();
                    let _ = respond.send_response(response, true);
                }
            });
        }
    });
    (addr, bodies)
}

async fn grpc_unavailable_is_retried_with_its_body(runtime: &'static str) {
    let ctrl = controller::new();
    let (server, bodies) = flaky_grpc().await;
    ctrl.destination(&path("echo")).add([server]);
    let route = grpc_route_retrying("echo", balancer("echo", &path("echo")), 2);
    ctrl.outbound_policy(vip(), grpc_policy("echo", 7000, vec![route]));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let client = ringlink_integration::h2::Client::connect(proxy.outbound).await;
    for i in 0..5u8 {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        let message = vec![0, 0, 0, 0, 1, i];
        let reply = client
            .request_with(
                "POST",
                "http://echo.ns.svc.cluster.local:7000/ringlink.test.Echo/Echo",
                headers,
                message,
                None,
            )
            .await
            .expect("a response");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.headers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..]),
            "call {i} succeeded after its retry"
        );
    }
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 10, "each call tried twice");
    for (i, pair) in bodies.chunks(2).enumerate() {
        assert_eq!(pair[0], vec![0, 0, 0, 0, 1, i as u8]);
        assert_eq!(pair[0], pair[1], "the body is sent again whole");
    }
}

async fn h2_bodies_pass_a_retrying_route_whole(runtime: &'static str) {
    let ctrl = controller::new();
    let server = ringlink_integration::h2::server().await;
    ctrl.destination(&path("web")).add([server.addr]);
    ctrl.outbound_policy(vip(), retrying_policy(2, None));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let client = ringlink_integration::h2::Client::connect(proxy.outbound).await;
    // Within the limit (buffered for replay) and over it (streamed after its prefix).
    for len in [5, 16, 17, 100_000] {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let reply = client
            .request(
                "POST",
                "http://web.ns.svc.cluster.local:7000/echo",
                body.clone(),
                None,
            )
            .await
            .expect("a response");
        assert_eq!(reply.status, 200, "{len} bytes");
        assert_eq!(reply.body, body, "{len} bytes echoed whole");
    }
}

async fn l5d_headers_set_retries_and_timeouts_where_allowed(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["web"]).await;
    let web = &backends[0];
    web.fail_percent
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let allowing = allowing_l5d_headers(rule(
        vec![path_prefix("/allowed")],
        to(balancer("web", &path("web"))),
    ));
    let plain = rule(vec![], to(balancer("web", &path("web"))));
    let routes = vec![
        http_route("allowed", vec![allowing]),
        http_route("plain", vec![plain]),
    ];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    let retry = "l5d-retry-http: 5xx\r\nl5d-retry-limit: 3\r\n";
    assert_eq!(get(&mut conn, "/allowed", retry).await.status, 503);
    assert_eq!(web.hits(), 4, "three retries");
    assert!(
        web.heads()
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("l5d-retry")),
        "the headers are the proxy's, not the application's"
    );
    assert_eq!(get(&mut conn, "/other", retry).await.status, 503);
    assert_eq!(
        web.hits(),
        5,
        "a route that does not allow them ignores them"
    );
    // A timeout from the header.
    web.fail_percent
        .store(0, std::sync::atomic::Ordering::SeqCst);
    web.delay_ms
        .store(2000, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let res = get(&mut conn, "/allowed", "l5d-timeout: 200ms\r\n").await;
    assert_eq!(res.status, 504, "{}", res.head);
    assert!(started.elapsed() < Duration::from_millis(1500));
}

async fn opaque_policy_skips_detection(runtime: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server that speaks first: through detection it would wait for the client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"220 hello\r\n").await;
        }
    });
    let ctrl = controller::new();
    ctrl.outbound_policy(server, opaque_policy("smtp", server.port()));
    let proxy = proxy_for(runtime, &ctrl, server);
    let mut client = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(3), client.read_exact(&mut greeting))
        .await
        .expect("the greeting came without detection's wait")
        .unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    assert_eq!(ctrl.outbound_calls(server), 1);
}

// === ServiceProfiles ===

use linkerd2_proxy_api::destination as dst_pb;

/// A profile route for paths matching `regex`, 5xx failures, retryable or not.
fn profile_route(regex: &str, retryable: bool, timeout: Option<Duration>) -> dst_pb::Route {
    dst_pb::Route {
        condition: Some(dst_pb::RequestMatch {
            r#match: Some(dst_pb::request_match::Match::Path(dst_pb::PathMatch {
                regex: regex.to_string(),
            })),
        }),
        response_classes: vec![dst_pb::ResponseClass {
            condition: Some(dst_pb::ResponseMatch {
                r#match: Some(dst_pb::response_match::Match::Status(
                    dst_pb::HttpStatusRange { min: 500, max: 599 },
                )),
            }),
            is_failure: true,
        }],
        is_retryable: retryable,
        timeout: timeout.map(|t| t.try_into().unwrap()),
        ..Default::default()
    }
}

fn budget(ratio: f32, min_per_second: u32, ttl: Duration) -> dst_pb::RetryBudget {
    dst_pb::RetryBudget {
        retry_ratio: ratio,
        min_retries_per_second: min_per_second,
        ttl: Some(ttl.try_into().unwrap()),
    }
}

/// The VIP's profile names the `web` service; its endpoints are `backends`.
fn web_profile(ctrl: &Controller, backends: &[&Backend], profile: dst_pb::DestinationProfile) {
    ctrl.destination("web.ns.svc.cluster.local:7000")
        .add(backends.iter().map(|b| b.addr));
    ctrl.profile(
        VIP,
        dst_pb::DestinationProfile {
            fully_qualified_name: "web.ns.svc.cluster.local".to_string(),
            ..profile
        },
    );
}

async fn profile_routes_win_and_retry_within_their_budget(runtime: &'static str) {
    let ctrl = controller::new();
    let web = backend("web", 0).await;
    web.fail_percent
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let canary = services(&ctrl, &["canary"]).await;
    // A policy that would send everything to the canary: the profile's routes win.
    let routes = vec![http_route(
        "all",
        vec![rule(vec![], to(balancer("canary", &path("canary"))))],
    )];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    web_profile(
        &ctrl,
        &[&web],
        dst_pb::DestinationProfile {
            routes: vec![
                profile_route("/retry/.*", true, None),
                profile_route("/.*", false, None),
            ],
            retry_budget: Some(budget(0.2, 100, Duration::from_secs(10))),
            ..Default::default()
        },
    );
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    assert_eq!(get(&mut conn, "/retry/me", "").await.status, 503);
    assert_eq!(web.hits(), 4, "a retryable route: three retries");
    assert_eq!(get(&mut conn, "/other", "").await.status, 503);
    assert_eq!(web.hits(), 5, "not retryable: once");
    web.fail_percent
        .store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get(&mut conn, "/retry/me", "").await.body_str(), "web");
    assert_eq!(canary[0].hits(), 0, "the policy's route was not used");
}

async fn profile_budget_bounds_retries(runtime: &'static str) {
    let ctrl = controller::new();
    let web = backend("web", 0).await;
    web.fail_percent
        .store(100, std::sync::atomic::Ordering::SeqCst);
    web_profile(
        &ctrl,
        &[&web],
        dst_pb::DestinationProfile {
            routes: vec![profile_route("/.*", true, None)],
            // One retry per second, none earned by requests.
            retry_budget: Some(budget(0.0, 1, Duration::from_secs(10))),
            ..Default::default()
        },
    );
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..20 {
        assert_eq!(get(&mut conn, "/", "").await.status, 503);
    }
    // 20 requests in well under a second: the budget allows 10 retries in its window.
    let retries = web.hits() - 20;
    assert!(retries <= 10, "{retries} retries beyond the budget");
    assert!(retries >= 1, "the budget allows some");
}

async fn profile_dst_overrides_split_traffic(runtime: &'static str) {
    let ctrl = controller::new();
    let web = backend("web", 0).await;
    let split = services(&ctrl, &["stable", "canary"]).await;
    web_profile(
        &ctrl,
        &[&web],
        dst_pb::DestinationProfile {
            dst_overrides: vec![
                dst_pb::WeightedDst {
                    authority: path("stable"),
                    weight: 900,
                    ..Default::default()
                },
                dst_pb::WeightedDst {
                    authority: path("canary"),
                    weight: 100,
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    );
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..1000 {
        assert_eq!(get(&mut conn, "/", "").await.status, 200);
    }
    assert_eq!(web.hits(), 0, "overridden");
    let canary = split[1].hits();
    assert_eq!(split[0].hits() + canary, 1000);
    assert!((62..=138).contains(&canary), "canary got {canary} of 1000");
}

async fn profile_route_timeout_answers_504(runtime: &'static str) {
    let ctrl = controller::new();
    let web = backend("web", 2000).await;
    web_profile(
        &ctrl,
        &[&web],
        dst_pb::DestinationProfile {
            routes: vec![profile_route(
                "/.*",
                false,
                Some(Duration::from_millis(200)),
            )],
            ..Default::default()
        },
    );
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    let started = Instant::now();
    assert_eq!(get(&mut conn, "/", "").await.status, 504);
    assert!(started.elapsed() < Duration::from_millis(1500));
}

/// An h2c server standing for a meshed peer: every other request (the first, the third…)
/// answers 503, the others 200 with `upgraded` when the request carried `l5d-orig-proto`.
async fn flaky_h2_peer() -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(stream).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let upgraded = request.headers().contains_key("l5d-orig-proto");
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        *seen += 1;
                        *seen
                    };
                    let status = if n % 2 == 1 { 503 } else { 200 };
                    let response = http::Response::builder()
                        .status(status)
                        .header("l5d-orig-proto", "HTTP/1.1")
                        .body(())
                        .unwrap();
                    let body = if upgraded { "upgraded" } else { "plain" };
                    if let Ok(mut tx) = respond.send_response(response, false) {
                        let _ = tx.send_data(bytes::Bytes::from(body), true);
                    }
                }
            });
        }
    });
    (addr, count)
}

async fn upgraded_requests_are_retried_and_filtered(runtime: &'static str) {
    let ctrl = controller::new();
    let (peer, count) = flaky_h2_peer().await;
    // The endpoint's proxy takes HTTP/2: HTTP/1 requests go to it upgraded.
    ctrl.destination(&path("web"))
        .add_set(linkerd2_proxy_api::destination::WeightedAddrSet {
            addrs: vec![linkerd2_proxy_api::destination::WeightedAddr {
                protocol_hint: Some(linkerd2_proxy_api::destination::ProtocolHint {
                    protocol: Some(
                        linkerd2_proxy_api::destination::protocol_hint::Protocol::H2(
                            linkerd2_proxy_api::destination::protocol_hint::H2 {},
                        ),
                    ),
                    opaque_transport: None,
                }),
                ..controller::weighted(peer)
            }],
            metric_labels: Default::default(),
        });
    let rule = with_filters(
        with_retry(
            rule(vec![], to(balancer("web", &path("web")))),
            2,
            1024,
            (500, 599),
            None,
        ),
        vec![set_response_header("x-route", "retrying")],
    );
    let routes = vec![http_route("retrying", vec![rule])];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    for i in 0..3 {
        let res = get(&mut conn, "/", "").await;
        assert_eq!(res.status, 200, "request {i}: {}", res.head);
        assert_eq!(res.body_str(), "upgraded");
        assert_eq!(res.header("x-route"), Some("retrying"));
        assert_eq!(res.header("l5d-orig-proto"), None);
    }
    assert_eq!(*count.lock().unwrap(), 6, "each request tried twice");
}

async fn first_available_skips_a_backend_without_endpoints(runtime: &'static str) {
    let ctrl = controller::new();
    let backends = services(&ctrl, &["standby"]).await;
    // The primary service exists but has no endpoints.
    ctrl.destination(&path("primary")).no_endpoints(true);
    let first = first_available(vec![
        balancer("primary", &path("primary")),
        balancer("standby", &path("standby")),
    ]);
    let routes = vec![http_route("failover", vec![rule(vec![], first)])];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let deadline = Instant::now() + Duration::from_secs(10);
    // Once the primary's (empty) set is known, requests go to the standby at once.
    loop {
        let mut conn = Conn::connect(proxy.outbound).await;
        let res = get(&mut conn, "/", "").await;
        if res.status == 200 {
            assert_eq!(res.body_str(), "standby");
            break;
        }
        assert!(Instant::now() < deadline, "never failed over: {}", res.head);
    }
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..10 {
        assert_eq!(get(&mut conn, "/", "").await.body_str(), "standby");
    }
    assert!(backends[0].hits() >= 11);
}

async fn a_routed_destination_is_in_use(runtime: &'static str) {
    let ctrl = controller::new();
    let _backends = services(&ctrl, &["web"]).await;
    let routes = vec![http_route(
        "r",
        vec![rule(vec![], to(balancer("web", &path("web"))))],
    )];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy::new(runtime)
        .control_plane(&ctrl)
        .env("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", "127.0.0.0/8")
        .env("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "200ms")
        .orig_dst(vip())
        .shards(1)
        .spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(get(&mut conn, "/", "").await.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ctrl.outbound_calls(vip()),
        1,
        "never dropped as idle while routing"
    );
}

async fn a_policy_routes_without_the_profiles_endpoints(runtime: &'static str) {
    let ctrl = controller::new();
    let _backends = services(&ctrl, &["web"]).await;
    // The profile names a service whose endpoints never come (nothing scripted).
    ctrl.profile(
        VIP,
        dst_pb::DestinationProfile {
            fully_qualified_name: "unresolved.ns.svc.cluster.local".to_string(),
            ..Default::default()
        },
    );
    let routes = vec![http_route(
        "r",
        vec![rule(vec![], to(balancer("web", &path("web"))))],
    )];
    ctrl.outbound_policy(vip(), http_policy("web", 7000, routes));
    let proxy = proxy_for(runtime, &ctrl, vip());
    let started = Instant::now();
    let mut conn = Conn::connect(proxy.outbound).await;
    assert_eq!(get(&mut conn, "/", "").await.body_str(), "web");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for endpoints the policy does not use",
        started.elapsed()
    );
}

async fn a_profiled_address_is_balanced_over_its_service(runtime: &'static str) {
    let ctrl = controller::new();
    let web = backend("web", 0).await;
    web_profile(&ctrl, &[&web], dst_pb::DestinationProfile::default());
    let proxy = proxy_for(runtime, &ctrl, vip());
    let mut conn = Conn::connect(proxy.outbound).await;
    // A Host that names nothing: the profile's service still gets the request.
    let res = conn
        .request("GET / HTTP/1.1\r\nhost: whatever.example\r\n\r\n")
        .await;
    assert_eq!((res.status, res.body_str()), (200, "web"), "{}", res.head);
}
