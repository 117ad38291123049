//! `/metrics` counts what happened, per shard, with Linkerd's TCP and HTTP families and
//! labels.

use std::time::{Duration, Instant};

use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::metrics::{check_histograms, exact, parse, sum, Series};
use ringlink_integration::proxy::Proxy;
use ringlink_integration::{both_runtimes, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(
    tcp_counts_and_bytes_match_the_traffic,
    resets_are_counted_with_errno,
    client_resets_are_counted_on_the_client_series,
    an_upstream_reset_mid_response_is_the_upstreams,
    http_requests_responses_and_latency_match_the_traffic,
    grpc_statuses_classify_http2_responses,
    recording_off_records_nothing
);

async fn scrape(proxy: &Proxy) -> Vec<Series> {
    let reply = call(proxy.admin, "GET", "/metrics", "").await;
    assert_eq!(reply.status, 200);
    parse(&reply.body)
}

/// Scrapes until `done` holds (connections close asynchronously), up to 5 s.
async fn scrape_until(proxy: &Proxy, done: impl Fn(&[Series]) -> bool) -> Vec<Series> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let series = scrape(proxy).await;
        if done(&series) || Instant::now() > deadline {
            return series;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tcp_counts_and_bytes_match_the_traffic(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime).shards(2).orig_dst(server.addr).spawn();
    let target = server.addr.to_string();
    let (ip, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
    let mut sent = 0u64;
    for size in [1usize, 1000, 100_000, 3_000_000] {
        let msg = vec![7u8; size];
        assert_eq!(tcp::roundtrip(proxy.outbound, &msg).await.unwrap(), msg);
        sent += size as u64;
    }
    let out = [("direction", "outbound")];
    let series = scrape_until(&proxy, |s| sum(s, "tcp_close_total", &out) == 8.0).await;
    let src = [
        ("direction", "outbound"),
        ("peer", "src"),
        ("target_addr", &target),
        ("target_ip", &ip),
        ("target_port", &port),
        ("tls", "disabled"),
    ];
    let dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("target_addr", &target),
        ("target_ip", &ip),
        ("target_port", &port),
        ("tls", "disabled"),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &src), 4.0);
    assert_eq!(sum(&series, "tcp_open_total", &dst), 4.0);
    assert_eq!(sum(&series, "tcp_close_total", &src), 4.0);
    assert_eq!(
        sum(
            &series,
            "tcp_close_total",
            &[("errno", ""), ("peer", "dst")]
        ),
        4.0
    );
    assert_eq!(sum(&series, "tcp_open_connections", &out), 0.0);
    // Every byte the client sent was read from it and written to the server, and back.
    for (name, labels) in [
        ("tcp_read_bytes_total", &src),
        ("tcp_write_bytes_total", &dst),
        ("tcp_read_bytes_total", &dst),
        ("tcp_write_bytes_total", &src),
    ] {
        assert_eq!(sum(&series, name, labels), sent as f64, "{name} {labels:?}");
    }
    // Every per-shard series says which shard; together they add up to the totals.
    for s in series.iter().filter(|s| s.name.starts_with("tcp_")) {
        assert!(
            matches!(s.labels.get("shard").map(String::as_str), Some("0" | "1")),
            "{s:?}"
        );
    }
    let per_shard: f64 = ["0", "1"]
        .iter()
        .map(|shard| {
            sum(
                &series,
                "tcp_open_total",
                &[("shard", shard), ("peer", "src")],
            )
        })
        .sum();
    assert_eq!(per_shard, 4.0);
    // An open connection shows as open.
    let mut open = TcpStream::connect(proxy.outbound).await.unwrap();
    open.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    open.read_exact(&mut b).await.unwrap();
    let series = scrape(&proxy).await;
    assert_eq!(sum(&series, "tcp_open_connections", &src), 1.0);
    assert_eq!(sum(&series, "tcp_open_connections", &dst), 1.0);
    assert!(sum(&series, "process_open_fds", &[]) > 0.0);
    assert_eq!(sum(&series, "proxy_build_info", &[]), 1.0);
}

async fn resets_are_counted_with_errno(runtime: &'static str) {
    let server = tcp::resetter(3).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    stream.write_all(b"abc").await.unwrap();
    let mut buf = [0u8; 8];
    assert!(stream.read(&mut buf).await.is_err());
    let dst = [("peer", "dst"), ("errno", "ECONNRESET")];
    // Both sides' closes are counted as each side's task ends: wait for both.
    let series = scrape_until(&proxy, |s| {
        sum(s, "tcp_close_total", &dst) == 1.0 && sum(s, "tcp_close_total", &[]) >= 2.0
    })
    .await;
    assert_eq!(sum(&series, "tcp_close_total", &dst), 1.0, "{series:#?}");
    // Counted once, on the side that failed: the client was reset by the proxy, which is
    // not the client failing.
    let src = [("peer", "src"), ("errno", "")];
    assert_eq!(sum(&series, "tcp_close_total", &src), 1.0, "{series:#?}");
    assert_eq!(sum(&series, "tcp_close_total", &[]), 2.0, "{series:#?}");
}

async fn client_resets_are_counted_on_the_client_series(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    stream.write_all(b"abc").await.unwrap();
    let mut buf = [0u8; 3];
    stream.read_exact(&mut buf).await.unwrap();
    // Close with a reset (SO_LINGER 0) in the middle of the stream.
    stream.set_zero_linger().unwrap();
    drop(stream);
    let src = [("peer", "src"), ("errno", "ECONNRESET")];
    let series = scrape_until(&proxy, |s| sum(s, "tcp_close_total", &[]) == 2.0).await;
    assert_eq!(sum(&series, "tcp_close_total", &src), 1.0, "{series:#?}");
    let dst = [("peer", "dst"), ("errno", "")];
    assert_eq!(sum(&series, "tcp_close_total", &dst), 1.0, "{series:#?}");
    assert_eq!(sum(&series, "tcp_close_total", &[]), 2.0, "{series:#?}");
}

async fn an_upstream_reset_mid_response_is_the_upstreams(runtime: &'static str) {
    let server =
        tcp::answer_then_reset(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nabc").await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    conn.send("GET / HTTP/1.1\r\nhost: svc\r\n\r\n").await;
    // The client sees the head and 3 bytes of body, then the connection breaks.
    assert!(conn.response("GET").await.is_none());
    let all = [("direction", "outbound")];
    let series = scrape_until(&proxy, |s| sum(s, "tcp_close_total", &all) == 2.0).await;
    let dst = [("peer", "dst"), ("errno", "ECONNRESET")];
    assert_eq!(sum(&series, "tcp_close_total", &dst), 1.0, "{series:#?}");
    // The client's series closes once, without the upstream's errno.
    let src = [("peer", "src"), ("errno", "")];
    assert_eq!(sum(&series, "tcp_close_total", &src), 1.0, "{series:#?}");
    assert_eq!(sum(&series, "tcp_close_total", &all), 2.0, "{series:#?}");
    let failed = [("classification", "failure"), ("error", "upstream")];
    assert_eq!(sum(&series, "response_total", &failed), 1.0, "{series:#?}");
}

/// A server answering `/fail…` with 500 and anything else with 200.
async fn ok_or_fail_server() -> http1::Server {
    http1::server(|req| {
        if req.target.starts_with("/fail") {
            Reply::raw("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail")
        } else {
            Reply::ok("ok")
        }
    })
    .await
}

/// Labels of an HTTP route on shard 0.
fn route<'a>(
    direction: &'a str,
    authority: Option<&'a str>,
    target: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let (ip, port) = target.rsplit_once(':').unwrap();
    let mut labels = vec![
        ("direction", direction),
        ("target_addr", target),
        ("target_ip", ip),
        ("target_port", port),
        ("tls", "disabled"),
        ("shard", "0"),
    ];
    labels.extend(authority.map(|a| ("authority", a)));
    labels
}

fn with<'a>(
    labels: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    labels.iter().chain(extra).copied().collect()
}

async fn http_requests_responses_and_latency_match_the_traffic(runtime: &'static str) {
    let server = ok_or_fail_server().await;
    // No original destination: requests to the outbound port are routed by their `Host`.
    let proxy = proxy::new(runtime).spawn();
    let authority = server.addr.to_string();
    let mut conn = Conn::connect(proxy.outbound).await;
    for (path, status) in [
        ("/ok", 200),
        ("/fail", 500),
        ("/ok", 200),
        ("/fail", 500),
        ("/ok", 200),
    ] {
        let res = conn
            .request(format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n"))
            .await;
        assert_eq!(res.status, status);
    }
    let closed = tcp::closed_port().to_string();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn
        .request(format!("GET / HTTP/1.1\r\nHost: {closed}\r\n\r\n"))
        .await;
    assert_eq!(res.status, 502);
    let series = scrape_until(&proxy, |s| sum(s, "response_total", &[]) == 6.0).await;

    let ok = route("outbound", Some(&authority), &authority);
    assert_eq!(
        exact(&series, "request_total", &ok),
        Some(5.0),
        "{series:#?}"
    );
    let success = with(
        &ok,
        &[("status_code", "200"), ("classification", "success")],
    );
    assert_eq!(
        exact(&series, "response_total", &success),
        Some(3.0),
        "{series:#?}"
    );
    let failure = with(
        &ok,
        &[("status_code", "500"), ("classification", "failure")],
    );
    assert_eq!(
        exact(&series, "response_total", &failure),
        Some(2.0),
        "{series:#?}"
    );
    // The proxy's own 502: counted as a request to the closed port, failed with `error`.
    let refused = route("outbound", Some(&closed), &closed);
    assert_eq!(
        exact(&series, "request_total", &refused),
        Some(1.0),
        "{series:#?}"
    );
    let bad_gateway = with(
        &refused,
        &[
            ("status_code", "502"),
            ("classification", "failure"),
            ("error", "connect"),
        ],
    );
    assert_eq!(
        exact(&series, "response_total", &bad_gateway),
        Some(1.0),
        "{series:#?}"
    );
    assert_eq!(sum(&series, "request_total", &[]), 6.0);
    assert_eq!(sum(&series, "response_total", &[]), 6.0);

    // One latency observation per response, in consistent histograms.
    let histograms = check_histograms(&series, "response_latency_ms");
    let count = |labels: &[(&str, &str)], status| {
        histograms
            .iter()
            .find(|(l, _)| {
                l.len() == labels.len() + 1
                    && l.get("status_code").map(String::as_str) == Some(status)
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, n)| *n)
    };
    assert_eq!(count(&ok, "200"), Some(3.0), "{histograms:#?}");
    assert_eq!(count(&ok, "500"), Some(2.0), "{histograms:#?}");
    assert_eq!(count(&refused, "502"), Some(1.0), "{histograms:#?}");
    assert_eq!(histograms.len(), 3, "{histograms:#?}");
    // Linkerd's buckets, 1 ms to 50 s.
    let bounds: Vec<&str> = series
        .iter()
        .filter(|s| {
            s.name == "response_latency_ms_bucket"
                && s.labels.get("status_code").map(String::as_str) == Some("200")
        })
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(
        bounds,
        [
            "1", "2", "3", "4", "5", "10", "20", "30", "40", "50", "100", "200", "300", "400",
            "500", "1000", "2000", "3000", "4000", "5000", "10000", "20000", "30000", "40000",
            "50000", "+Inf"
        ]
    );
    for s in series.iter().filter(|s| {
        ["request_total", "response_total"].contains(&s.name.as_str())
            || s.name.starts_with("response_latency_ms")
    }) {
        assert_eq!(
            s.labels.get("shard").map(String::as_str),
            Some("0"),
            "{s:?}"
        );
    }

    // Inbound: no `authority` label.
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.inbound).await;
    let res = conn
        .request("GET /ok HTTP/1.1\r\nHost: svc.ns:80\r\n\r\n")
        .await;
    assert_eq!(res.status, 200);
    let series = scrape_until(&proxy, |s| sum(s, "response_total", &[]) == 1.0).await;
    let inbound = route("inbound", None, &authority);
    assert_eq!(
        exact(&series, "request_total", &inbound),
        Some(1.0),
        "{series:#?}"
    );
    let success = with(
        &inbound,
        &[("status_code", "200"), ("classification", "success")],
    );
    assert_eq!(
        exact(&series, "response_total", &success),
        Some(1.0),
        "{series:#?}"
    );
}

async fn recording_off_records_nothing(runtime: &'static str) {
    let server = ok_or_fail_server().await;
    let proxy = proxy::new(runtime)
        .env("RINGLINK_METRICS_RECORDING", "off")
        .orig_dst(server.addr)
        .spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..3 {
        let res = conn.request("GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n").await;
        assert_eq!(res.status, 200);
    }
    drop(conn);
    let echo = tcp::echo().await;
    let proxy2 = proxy::new(runtime)
        .env("RINGLINK_METRICS_RECORDING", "off")
        .orig_dst(echo.addr)
        .spawn();
    assert_eq!(
        tcp::roundtrip(proxy2.outbound, b"hello").await.unwrap(),
        b"hello"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    for proxy in [&proxy, &proxy2] {
        let series = scrape(proxy).await;
        let recorded: Vec<_> = series
            .iter()
            .filter(|s| !s.name.starts_with("process_") && s.name != "proxy_build_info")
            .collect();
        assert!(recorded.is_empty(), "{recorded:#?}");
    }
}

#[test]
fn recording_setting_must_be_on_or_off() {
    let (status, stderr) = proxy::new("monoio")
        .env("RINGLINK_METRICS_RECORDING", "maybe")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("RINGLINK_METRICS_RECORDING"), "{stderr}");
}

#[tokio::test]
async fn page_passes_promtool() {
    let server = tcp::echo().await;
    let proxy = proxy::new("monoio").shards(2).orig_dst(server.addr).spawn();
    for _ in 0..4 {
        tcp::roundtrip(proxy.outbound, b"hello").await.unwrap();
    }
    tcp::roundtrip(proxy.inbound, b"hello").await.unwrap();
    // HTTP series too: successes, failures, a proxy error, both directions.
    let http = ok_or_fail_server().await;
    let http_proxy = proxy::new("monoio").shards(2).spawn();
    let mut conn = Conn::connect(http_proxy.outbound).await;
    for path in ["/ok", "/fail", "/ok"] {
        conn.request(format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            http.addr
        ))
        .await;
    }
    let closed = tcp::closed_port();
    conn.request(format!("GET / HTTP/1.1\r\nHost: {closed}\r\n\r\n"))
        .await;
    let inbound = proxy::new("monoio").orig_dst(http.addr).spawn();
    Conn::connect(inbound.inbound)
        .await
        .request("GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n")
        .await;
    scrape_until(&http_proxy, |s| sum(s, "response_total", &[]) == 4.0).await;
    scrape_until(&inbound, |s| sum(s, "response_total", &[]) == 1.0).await;
    for proxy in [&proxy, &http_proxy, &inbound] {
        promtool_check(proxy).await;
    }
}

/// `promtool check metrics` accepts the proxy's page.
async fn promtool_check(proxy: &Proxy) {
    let page = call(proxy.admin, "GET", "/metrics", "").await.body;
    assert!(page.contains("tcp_open_total{"), "{page}");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: apt-get install prometheus (.ci/run does)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 3 is "lint problems", 1 a page promtool cannot parse. The one lint allowed is on
    // Linkerd's own family name, which compatibility requires.
    let allowed = "response_latency_ms metric names should not contain abbreviated units";
    let lints_allowed = out.status.code() == Some(3)
        && report
            .lines()
            .filter(|l| !l.is_empty())
            .all(|l| l == allowed);
    assert!(
        out.status.success() || lints_allowed,
        "promtool rejected the page:\n{report}\n{page}"
    );
    // promtool 2.42 does not report a series written twice; a merged page must not have any.
    let mut seen = std::collections::HashSet::new();
    for s in parse(&page) {
        assert!(
            seen.insert((s.name.clone(), s.labels.clone())),
            "twice: {s:?}"
        );
    }
}

#[tokio::test]
async fn idle_http_series_are_dropped_after_retain_idle() {
    let server = ok_or_fail_server().await;
    let proxy = proxy::new("monoio")
        .env("LINKERD2_PROXY_METRICS_RETAIN_IDLE", "1s")
        .orig_dst(server.addr)
        .spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let get = "GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n";
    assert_eq!(conn.request(get).await.status, 200);
    let series = scrape_until(&proxy, |s| sum(s, "response_total", &[]) == 1.0).await;
    assert_eq!(sum(&series, "request_total", &[]), 1.0);
    // The connection stays open, but no request is in flight: its series go once idle.
    let http = |s: &Series| s.name == "request_total" || s.name.starts_with("response_");
    let series = scrape_until(&proxy, |s| !s.iter().any(http)).await;
    let left: Vec<_> = series.iter().filter(|s| http(s)).collect();
    assert!(left.is_empty(), "{left:#?}");
    // The same connection's next request brings them back, counted from zero.
    assert_eq!(conn.request(get).await.status, 200);
    let series = scrape_until(&proxy, |s| sum(s, "response_total", &[]) == 1.0).await;
    assert_eq!(sum(&series, "request_total", &[]), 1.0);
    assert_eq!(sum(&series, "response_latency_ms_count", &[]), 1.0);
}

#[tokio::test]
async fn idle_series_are_dropped_after_retain_idle() {
    let server = tcp::echo().await;
    let proxy = proxy::new("monoio")
        .env("LINKERD2_PROXY_METRICS_RETAIN_IDLE", "1s")
        .orig_dst(server.addr)
        .spawn();
    let target = server.addr.to_string();
    let by_target = [("target_addr", target.as_str())];
    tcp::roundtrip(proxy.outbound, b"once").await.unwrap();
    let series = scrape_until(&proxy, |s| sum(s, "tcp_close_total", &by_target) == 2.0).await;
    assert_eq!(sum(&series, "tcp_open_total", &by_target), 2.0);
    // An open connection keeps its series however long it idles.
    let mut open = TcpStream::connect(proxy.outbound).await.unwrap();
    open.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    open.read_exact(&mut b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let series = scrape(&proxy).await;
    assert_eq!(
        sum(&series, "tcp_open_connections", &by_target),
        2.0,
        "{series:#?}"
    );
    drop(open);
    // Once closed and idle past the retention, every family forgets the target.
    let series = scrape_until(&proxy, |s| {
        !s.iter()
            .any(|x| x.labels.get("target_addr") == Some(&target))
    })
    .await;
    let left: Vec<_> = series
        .iter()
        .filter(|x| x.labels.get("target_addr") == Some(&target))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
    // New traffic brings the series back.
    tcp::roundtrip(proxy.outbound, b"again").await.unwrap();
    let series = scrape(&proxy).await;
    assert_eq!(sum(&series, "tcp_open_total", &by_target), 2.0);
}

async fn grpc_statuses_classify_http2_responses(runtime: &'static str) {
    use ringlink_integration::grpc::{self, EchoClient, EchoRequest};
    let (addr, _server) = grpc::serve("127.0.0.1:0".parse().unwrap()).await;
    let proxy = proxy::new(runtime).orig_dst(addr).spawn();
    let mut client = EchoClient::connect_via(proxy.outbound, "echo.svc:8080")
        .await
        .unwrap();
    for _ in 0..3 {
        client.echo(EchoRequest::ok("hi")).await.unwrap();
    }
    for _ in 0..2 {
        client
            .echo(EchoRequest::fail(tonic::Code::NotFound, "gone"))
            .await
            .unwrap_err();
    }
    // Streaming: the status comes in the trailers after the data.
    client
        .chat_all([EchoRequest::ok("a"), EchoRequest::ok("b")])
        .await
        .unwrap();
    let series = scrape_until(&proxy, |s| sum(s, "response_total", &[]) == 6.0).await;
    assert_eq!(
        exact(
            &series,
            "protocol_detect_total",
            &[
                ("direction", "outbound"),
                ("protocol", "h2"),
                ("shard", "0")
            ]
        ),
        Some(1.0),
        "one HTTP/2 connection: {series:#?}"
    );
    let target = addr.to_string();
    let labels = route("outbound", Some("echo.svc:8080"), &target);
    assert_eq!(
        exact(&series, "request_total", &labels),
        Some(6.0),
        "{series:#?}"
    );
    let ok = with(
        &labels,
        &[
            ("status_code", "200"),
            ("classification", "success"),
            ("grpc_status", "0"),
        ],
    );
    assert_eq!(
        exact(&series, "response_total", &ok),
        Some(4.0),
        "{series:#?}"
    );
    let not_found = with(
        &labels,
        &[
            ("status_code", "200"),
            ("classification", "failure"),
            ("grpc_status", "5"),
        ],
    );
    assert_eq!(
        exact(&series, "response_total", &not_found),
        Some(2.0),
        "{series:#?}"
    );
    for (_, count) in check_histograms(&series, "response_latency_ms") {
        assert_eq!(count, 6.0);
    }
}
