//! HTTP/1.1 through the proxy: messages arrive as sent (minus hop-by-hop headers), bodies in
//! every framing, keep-alive and pooling, upgrades and CONNECT, errors answered with
//! `l5d-proxy-error`, and every request-smuggling shape refused before anything is forwarded.

use std::time::Duration;

use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::{both_runtimes, proxy, tcp, ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_runtimes!(
    outbound_get_and_keep_alive_reuse_upstream,
    inbound_http_reaches_local_app,
    content_length_and_chunked_bodies_stream_both_ways,
    zero_length_bodies_are_kept,
    head_204_304_have_no_body,
    response_ending_with_eof,
    http10_with_and_without_host,
    absolute_uri_routes_by_authority,
    dst_override_routes_by_authority,
    connection_headers_are_removed,
    h2c_upgrade_is_stripped,
    websocket_upgrade_is_tunnelled,
    connect_is_tunnelled_and_bad_connect_refused,
    expect_100_continue,
    pipelined_requests_answered_in_order,
    pooled_connection_closed_by_server_is_not_reused,
    smuggling_requests_are_refused,
    oversized_heads_get_431,
    connect_refused_is_502,
    connect_timeout_is_504,
    invalid_response_is_502,
    large_body_is_streamed_with_bounded_memory,
    curl_through_the_proxy,
    large_response_heads_arrive_in_pieces,
    connection_cannot_strip_content_length,
    head_request_errors_have_no_body,
    idle_pooled_connections_expire,
    at_most_max_idle_connections_are_kept,
    slow_request_heads_time_out,
    error_response_survives_an_unread_body,
    full_duplex_server_streams_while_the_body_uploads,
    parked_idle_connections_lose_nothing,
);

/// Open upstream (`peer="dst"`) connections, from `/metrics`.
async fn open_upstream_connections(proxy: &proxy::Proxy) -> f64 {
    let page = ringlink_integration::http::call(proxy.admin, "GET", "/metrics", "").await;
    let series = ringlink_integration::metrics::parse(&page.body);
    ringlink_integration::metrics::sum(&series, "tcp_open_connections", &[("peer", "dst")])
}

fn echo_target() -> impl Fn(&http1::Request) -> Reply + Send + Sync + 'static {
    |req| Reply::ok(&format!("{} {}", req.method, req.target))
}

async fn outbound_get_and_keep_alive_reuse_upstream(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    for i in 0..3 {
        let res = conn
            .request(format!("GET /r{i} HTTP/1.1\r\nHost: svc\r\n\r\n"))
            .await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body_str(), format!("GET /r{i}"));
    }
    // A second client connection reuses the pooled upstream connection.
    let mut other = Conn::connect(proxy.outbound).await;
    let res = other
        .request("GET /other HTTP/1.1\r\nHost: svc\r\n\r\n")
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(server.connections(), 1, "one upstream connection for all");
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].header("host"), Some("svc"));
}

async fn inbound_http_reaches_local_app(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.inbound).await;
    let res = conn.request("GET /in HTTP/1.1\r\nHost: app\r\n\r\n").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "GET /in");
}

async fn content_length_and_chunked_bodies_stream_both_ways(runtime: &'static str) {
    let server = http1::server(|req| {
        if req.target == "/chunked" {
            Reply::raw(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
                 5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
            )
        } else {
            Reply::raw(
                [
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                        req.body.len()
                    )
                    .into_bytes(),
                    req.body.clone(),
                ]
                .concat(),
            )
        }
    })
    .await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut req = format!(
        "POST /len HTTP/1.1\r\nHost: svc\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let res = conn.request(&req).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, body, "content-length body came back intact");

    let chunked = "POST /chunked HTTP/1.1\r\nHost: svc\r\ntransfer-encoding: chunked\r\n\r\n\
                   3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nx-req-trailer: t\r\n\r\n";
    let res = conn.request(chunked).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert_eq!(res.body_str(), "hello world");
    let seen = server.requests().pop().unwrap();
    assert_eq!(seen.body, b"abcdefg");
    assert_eq!(
        seen.raw_body, b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nx-req-trailer: t\r\n\r\n",
        "chunks and trailers pass through as sent"
    );
}

async fn zero_length_bodies_are_kept(runtime: &'static str) {
    let server =
        http1::server(|_| Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn
        .request("POST / HTTP/1.1\r\nHost: svc\r\ncontent-length: 0\r\n\r\n")
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("0"));
    assert_eq!(server.requests()[0].header("content-length"), Some("0"));
    // The connection is still usable.
    let res = conn.request("GET / HTTP/1.1\r\nHost: svc\r\n\r\n").await;
    assert_eq!(res.status, 200);
}

async fn head_204_304_have_no_body(runtime: &'static str) {
    let server = http1::server(|req| match req.target.as_str() {
        "/204" => Reply::raw("HTTP/1.1 204 No Content\r\n\r\n"),
        "/304" => Reply::raw("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"),
        _ => Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
    })
    .await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("HEAD / HTTP/1.1\r\nHost: svc\r\n\r\n").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("10"));
    let res = conn.request("GET /204 HTTP/1.1\r\nHost: svc\r\n\r\n").await;
    assert_eq!(res.status, 204);
    let res = conn.request("GET /304 HTTP/1.1\r\nHost: svc\r\n\r\n").await;
    assert_eq!(res.status, 304);
    // Had any of those carried a body, this response would be garbled.
    conn.send("GET /204 HTTP/1.1\r\nHost: svc\r\n\r\n").await;
    let res = tokio::time::timeout(Duration::from_secs(5), conn.response("GET"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status, 204);
    assert_eq!(server.connections(), 1);
}

async fn response_ending_with_eof(runtime: &'static str) {
    let server =
        http1::server(|_| Reply::raw("HTTP/1.1 200 OK\r\n\r\nuntil the end").then_close()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("GET / HTTP/1.1\r\nHost: svc\r\n\r\n").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "until the end");
    assert_eq!(res.header("connection"), Some("close"));
}

async fn http10_with_and_without_host(runtime: &'static str) {
    let server = http1::server(|req| {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            req.target.len(),
            req.target
        ))
    })
    .await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    for (req, host) in [
        ("GET /a HTTP/1.0\r\nHost: svc\r\n\r\n", "svc".to_string()),
        ("GET /b HTTP/1.0\r\n\r\n", server.addr.to_string()),
    ] {
        let mut conn = Conn::connect(proxy.outbound).await;
        let res = conn.request(req).await;
        assert_eq!(res.status, 200);
        assert_eq!(
            res.version, 0,
            "an HTTP/1.0 client gets an HTTP/1.0 response"
        );
        assert_eq!(
            res.header("transfer-encoding"),
            None,
            "no chunks for HTTP/1.0"
        );
        assert!(conn.is_closed().await, "the end of the body is the close");
        let seen = server.requests().pop().unwrap();
        assert_eq!(res.body_str(), seen.target);
        assert_eq!(seen.header("host"), Some(host.as_str()));
    }
}

async fn absolute_uri_routes_by_authority(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    // No original destination override: connections to the outbound port are addressed to
    // the proxy itself, which routes HTTP by authority (`curl -x`).
    let proxy = proxy::new(runtime).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn
        .request(format!(
            "GET http://{}/abs?q=1 HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr, server.addr
        ))
        .await;
    assert_eq!(res.status, 200, "{}", proxy.logs());
    assert_eq!(res.body_str(), "GET /abs?q=1");
    let res = conn
        .request(format!(
            "GET http://localhost:{}/name HTTP/1.1\r\nHost: somewhere-else\r\n\r\n",
            server.addr.port()
        ))
        .await;
    assert_eq!(res.status, 200, "a name resolved by DNS: {}", proxy.logs());
    assert_eq!(res.body_str(), "GET /name");
    // RFC 9112 §3.2.2: the absolute-form authority replaces Host.
    let host = format!("localhost:{}", server.addr.port());
    assert_eq!(server.requests()[1].header("host"), Some(host.as_str()));
}

async fn dst_override_routes_by_authority(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn
        .request(format!(
            "GET /o HTTP/1.1\r\nHost: elsewhere\r\nl5d-dst-override: {}\r\n\r\n",
            server.addr
        ))
        .await;
    assert_eq!(res.status, 200);
    let seen = server.requests().pop().unwrap();
    assert_eq!(seen.header("l5d-dst-override"), None);
    assert_eq!(seen.header("host"), Some("elsewhere"));
    // A connection with neither redirect nor authority is refused, not looped.
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(res.status, 400);
    assert!(res.header("l5d-proxy-error").is_some());
}

async fn connection_headers_are_removed(runtime: &'static str) {
    let server = http1::server(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-res-hop\r\nx-res-hop: 1\r\n\
             keep-alive: timeout=5\r\nx-res-kept: 1\r\n\r\nok",
        )
    })
    .await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn
        .request(
            "GET / HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\
             Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
        )
        .await;
    assert_eq!(res.status, 200);
    let seen = server.requests().pop().unwrap();
    for name in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert_eq!(seen.header(name), None, "{name} was forwarded");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
    for name in ["x-res-hop", "keep-alive"] {
        assert_eq!(res.header(name), None, "{name} was forwarded");
    }
    assert_eq!(res.header("x-res-kept"), Some("1"));
}

async fn h2c_upgrade_is_stripped(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn
        .request(
            "GET / HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .await;
    assert_eq!(res.status, 200);
    let seen = server.requests().pop().unwrap();
    for name in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen.header(name), None, "{name} was forwarded");
    }
}

async fn websocket_upgrade_is_tunnelled(runtime: &'static str) {
    let server = ws::echo().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut client = ws::Client::connect(proxy.outbound, "svc").await.unwrap();
    for text in ["hello", "through the proxy"] {
        let back = client
            .roundtrip(&ws::Message::Text(text.to_string()))
            .await
            .unwrap();
        assert_eq!(back, ws::Message::Text(text.to_string()));
    }
    let big = ws::Message::Binary(vec![7u8; 200_000]);
    assert_eq!(client.roundtrip(&big).await.unwrap(), big);
    client.close(1000).await.unwrap();
}

async fn connect_is_tunnelled_and_bad_connect_refused(runtime: &'static str) {
    let echo = tcp::echo().await;
    let proxy = proxy::new(runtime).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    conn.send(format!(
        "CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        echo.addr, echo.addr
    ))
    .await;
    let res = conn.response("CONNECT").await.unwrap();
    assert_eq!(res.status, 200);
    let (mut stream, leftover) = conn.into_stream();
    assert!(leftover.is_empty());
    stream.write_all(b"any bytes at all\0\xff").await.unwrap();
    let mut back = [0u8; 18];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"any bytes at all\0\xff");

    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(res.status, 400);
    assert!(res.header("l5d-proxy-error").is_some());
}

async fn expect_100_continue(runtime: &'static str) {
    let server = http1::server(|req| Reply::ok(&String::from_utf8_lossy(&req.body))).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    conn.send("PUT / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
        .await;
    let interim = tokio::time::timeout(Duration::from_secs(5), conn.response("PUT"))
        .await
        .expect("100 Continue arrives before the body is sent")
        .unwrap();
    assert_eq!(interim.status, 100);
    conn.send("body").await;
    let res = conn.response("PUT").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "body");
    // The proxy answered 100 itself: a server that never sends 100 cannot stall the body.
    assert_eq!(server.requests()[0].header("expect"), None);
}

async fn pipelined_requests_answered_in_order(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    conn.send(
        "GET /1 HTTP/1.1\r\nHost: s\r\n\r\nPOST /2 HTTP/1.1\r\nHost: s\r\ncontent-length: 3\r\n\r\n\
         abcGET /3 HTTP/1.1\r\nHost: s\r\n\r\n",
    )
    .await;
    for (method, path) in [("GET", "/1"), ("POST", "/2"), ("GET", "/3")] {
        let res = conn.response(method).await.unwrap();
        assert_eq!(res.body_str(), format!("{method} {path}"));
    }
}

/// A busy keep-alive connection left idle parks (its read is withdrawn and its buffer given
/// back, after one to two seconds), and what arrives next is read whole: a head far larger
/// than the parked buffer, pipelined requests in one write, a head in pieces. A connection
/// turns busy again after one request, so each round sends two before it waits.
async fn parked_idle_connections_lose_nothing(runtime: &'static str) {
    parked_connections_through(proxy::new(runtime)).await
}

/// The same on monoio's epoll driver (io_uring refused by seccomp): a pending read is
/// withdrawn there by the driver's own cancellation, not an `ASYNC_CANCEL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_idle_connections_lose_nothing_on_epoll() {
    parked_connections_through(proxy::new("monoio").block_io_uring()).await
}

async fn parked_connections_through(proxy: proxy::Builder) {
    let server = http1::server(|req| {
        let long = req.header("x-long").map_or(0, str::len);
        Reply::ok(&format!("{} {} {long}", req.method, req.target))
    })
    .await;
    let proxy = proxy.orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    async fn get(conn: &mut Conn, path: &str) {
        let res = conn
            .request(format!("GET {path} HTTP/1.1\r\nHost: svc\r\n\r\n"))
            .await;
        assert_eq!(res.body_str(), format!("GET {path} 0"));
    }
    get(&mut conn, "/1").await;
    get(&mut conn, "/2").await;
    let parked = proxy.wait_for_park(0).await;

    // A 6 KiB head, in one write, into a connection that waits with 16 bytes.
    let long = "a".repeat(6000);
    let res = conn
        .request(format!(
            "GET /long HTTP/1.1\r\nHost: svc\r\nx-long: {long}\r\n\r\n"
        ))
        .await;
    assert_eq!(res.body_str(), "GET /long 6000");
    get(&mut conn, "/3").await;
    let parked = proxy.wait_for_park(parked).await;

    // Three pipelined requests, one with a body, in one write.
    conn.send(
        "GET /p1 HTTP/1.1\r\nHost: svc\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: svc\r\n\
         content-length: 3\r\n\r\nabcGET /p3 HTTP/1.1\r\nHost: svc\r\n\r\n",
    )
    .await;
    for (method, path) in [("GET", "/p1"), ("POST", "/p2"), ("GET", "/p3")] {
        let res = conn.response(method).await.expect("a response");
        assert_eq!(res.body_str(), format!("{method} {path} 0"));
    }
    get(&mut conn, "/4").await;
    proxy.wait_for_park(parked).await;

    // A head in pieces, the first smaller than the parked buffer.
    conn.send("GET").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.send(" /pieces HTTP/1.1\r\nHost: sv").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.send("c\r\n\r\n").await;
    let res = conn.response("GET").await.expect("a response");
    assert_eq!(res.body_str(), "GET /pieces 0");
    assert_eq!(server.requests().len(), 9);
}

async fn pooled_connection_closed_by_server_is_not_reused(runtime: &'static str) {
    // The server keeps no connection alive but does not say so: every pooled connection
    // is closed by the time the next request comes.
    let server = http1::server(|_| Reply::ok("fine").then_close()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    for _ in 0..20 {
        let mut conn = Conn::connect(proxy.outbound).await;
        for _ in 0..3 {
            let res = conn.request("GET / HTTP/1.1\r\nHost: svc\r\n\r\n").await;
            assert_eq!(res.status, 200, "{}", res.head);
        }
    }
    assert_eq!(server.requests().len(), 60);
}

async fn smuggling_requests_are_refused(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let cases = [
        "POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nHost: s\r\nContent-Length: -4\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 4, 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: identity\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: s\r\nX-Folded: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: s\r\nBad Name: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : s\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for case in cases {
        let mut conn = Conn::connect(proxy.outbound).await;
        conn.send(case).await;
        let res = tokio::time::timeout(Duration::from_secs(5), conn.response("POST"))
            .await
            .unwrap_or_else(|_| panic!("no answer to {case:?}"));
        // Malformed chunk framing is only seen while streaming, after the head was sent:
        // then the connection is reset instead.
        match res {
            Some(res) => {
                assert_eq!(res.status, 400, "{case:?}");
                assert!(res.header("l5d-proxy-error").is_some());
                assert_eq!(res.header("connection"), Some("close"));
                assert!(conn.is_closed().await);
            }
            None => assert!(case.contains("chunked\r\n\r\nzz") || case.contains("3\nabc")),
        }
    }
    let forwarded: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| !r.raw_body.is_empty() || r.method == "GET")
        .collect();
    assert!(
        forwarded.is_empty(),
        "a smuggling request reached the server whole: {forwarded:?}"
    );
}

async fn oversized_heads_get_431(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn
        .request(format!(
            "GET / HTTP/1.1\r\nHost: s\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70_000)
        ))
        .await;
    assert_eq!(res.status, 431);
    let mut conn = Conn::connect(proxy.outbound).await;
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let res = conn
        .request(format!("GET / HTTP/1.1\r\nHost: s\r\n{many}\r\n"))
        .await;
    assert_eq!(res.status, 431);
    assert!(server.requests().is_empty());
}

async fn connect_refused_is_502(runtime: &'static str) {
    let proxy = proxy::new(runtime).orig_dst(tcp::closed_port()).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(res.status, 502);
    let why = res.header("l5d-proxy-error").unwrap();
    assert!(why.contains("refused"), "{why}");
    // No body was pending: the connection stays usable, and fails the same way.
    let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(res.status, 502);
}

async fn connect_timeout_is_504(runtime: &'static str) {
    let (addr, _fillers, _listener) = tcp::unresponsive_listener();
    let proxy = proxy::new(runtime)
        .orig_dst(addr)
        .env("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "300ms")
        .spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n"),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(res.status, 504);
    assert!(res.header("l5d-proxy-error").unwrap().contains("timed out"));
}

async fn invalid_response_is_502(runtime: &'static str) {
    let server = http1::server(|_| Reply::raw("NOT HTTP AT ALL\r\n\r\n").then_close()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(res.status, 502);
    assert!(res.header("l5d-proxy-error").is_some());
}

async fn large_body_is_streamed_with_bounded_memory(runtime: &'static str) {
    const SIZE: usize = 256 << 20;
    let server = http1::server(|req| Reply::ok(&format!("{}", req.body.len()))).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let before = proxy.rss_kib();
    let mut stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    stream
        .write_all(
            format!("PUT / HTTP/1.1\r\nHost: s\r\ncontent-length: {SIZE}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..SIZE >> 20 {
        stream.write_all(&chunk).await.unwrap();
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).ends_with(&SIZE.to_string()) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    let grown = proxy.rss_kib().saturating_sub(before);
    assert!(
        grown < 32 << 10,
        "proxy grew by {grown} KiB for a 256 MiB body"
    );
}

async fn curl_through_the_proxy(runtime: &'static str) {
    let server = http1::server(|req| {
        Reply::ok(&format!("{} {} {}", req.method, req.target, req.body.len()))
    })
    .await;
    let proxy = proxy::new(runtime).spawn();
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .await
            .expect("curl is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let url = format!("http://localhost:{}/via-proxy", server.addr.port());
    // As a forward proxy: absolute-form, routed by its authority (resolved by DNS).
    let body = curl(vec![
        "-x".into(),
        format!("http://{}", proxy.outbound),
        url.clone(),
    ])
    .await;
    assert_eq!(body, "GET /via-proxy 0");
    // A chunked upload and keep-alive reuse in one curl run.
    let body = curl(vec![
        "-x".into(),
        format!("http://{}", proxy.outbound),
        "-H".into(),
        "Transfer-Encoding: chunked".into(),
        "--data-binary".into(),
        "0123456789".into(),
        url.clone(),
        "--next".into(),
        "-x".into(),
        format!("http://{}", proxy.outbound),
        url,
    ])
    .await;
    assert_eq!(body, "POST /via-proxy 10GET /via-proxy 0");
}

async fn large_response_heads_arrive_in_pieces(runtime: &'static str) {
    let big = "v".repeat(20_000);
    let server = http1::server(move |_| {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nx-big: {big}\r\ncontent-length: 2\r\n\r\nok"
        ))
    })
    .await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..3 {
        let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("x-big").map(str::len), Some(20_000));
        assert_eq!(res.body_str(), "ok");
    }
}

async fn connection_cannot_strip_content_length(runtime: &'static str) {
    let server = http1::server(|req| {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: {}\r\n\r\n{}",
            req.body.len(),
            String::from_utf8_lossy(&req.body)
        ))
    })
    .await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: s\r\n\r\n";
    let res = conn
        .request(format!(
            "POST /public HTTP/1.1\r\nHost: s\r\nConnection: content-length\r\n\
             Content-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), smuggled, "the body stayed a body");
    assert_eq!(
        res.header("content-length"),
        Some(smuggled.len().to_string().as_str())
    );
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        1,
        "a second request was smuggled: {requests:?}"
    );
    assert_eq!(requests[0].target, "/public");
}

async fn head_request_errors_have_no_body(runtime: &'static str) {
    let proxy = proxy::new(runtime).orig_dst(tcp::closed_port()).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..2 {
        // Were a body sent, the second response would be read from its bytes.
        let res = conn.request("HEAD / HTTP/1.1\r\nHost: s\r\n\r\n").await;
        assert_eq!(res.status, 502);
        assert!(res.header("l5d-proxy-error").is_some());
    }
    let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(res.status, 502);
    assert!(res.body_str().contains("connect error"));
}

async fn idle_pooled_connections_expire(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime)
        .orig_dst(server.addr)
        .env(
            "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
            "300ms",
        )
        .spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(res.status, 200);
    drop(conn);
    assert_eq!(open_upstream_connections(&proxy).await, 1.0, "pooled");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        open_upstream_connections(&proxy).await,
        0.0,
        "closed after the idle timeout"
    );
    // The next request gets a new connection and works.
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(res.status, 200);
}

async fn at_most_max_idle_connections_are_kept(runtime: &'static str) {
    // A slow server, so that concurrent requests need one upstream connection each.
    let server = http1::server(|_| {
        std::thread::sleep(Duration::from_millis(200));
        Reply::ok("slow")
    })
    .await;
    let proxy = proxy::new(runtime)
        .orig_dst(server.addr)
        .env("LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT", "2")
        .spawn();
    // Every client connects, and sends, before any answer can come back: the server's
    // handler blocks a thread of this test's runtime for its 200 ms, so clients left to
    // connect on their own tasks could find a pooled connection a finished request left.
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.push(Conn::connect(proxy.outbound).await);
    }
    for conn in &mut conns {
        conn.send("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
    }
    for conn in &mut conns {
        assert_eq!(conn.response("GET").await.expect("a response").status, 200);
    }
    assert_eq!(server.connections(), 5);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open_upstream_connections(&proxy).await != 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "more than 2 idle connections kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn slow_request_heads_time_out(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    // A head that starts and never ends (slow loris).
    conn.send("GET / HTTP/1.1\r\nHost: s\r\nX-Slow: ").await;
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(15), conn.response("GET"))
        .await
        .expect("the proxy gave up on the head")
        .expect("a response");
    assert_eq!(res.status, 408);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(13),
        "{waited:?}"
    );
    assert!(server.requests().is_empty());
}

async fn error_response_survives_an_unread_body(runtime: &'static str) {
    let server = http1::server(echo_target()).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    for _ in 0..5 {
        let stream = tokio::net::TcpStream::connect(proxy.outbound)
            .await
            .unwrap();
        let (mut rx, mut tx) = stream.into_split();
        // Refused at its head (CL + TE), with a body the proxy will never forward.
        let writer = tokio::spawn(async move {
            let mut req = b"POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 300000\r\n\
                            Transfer-Encoding: chunked\r\n\r\n"
                .to_vec();
            req.extend(std::iter::repeat_n(b'x', 300_000));
            let _ = tx.write_all(&req).await;
            tx
        });
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), rx.read_to_end(&mut response))
            .await
            .expect("closed");
        let _ = writer.await;
        // A graceful close (FIN, unread input drained), not a reset that may destroy the
        // response on its way.
        assert!(read.is_ok(), "{read:?}");
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "the client lost the 400 to a reset: {text:?}"
        );
    }
    assert!(server.requests().is_empty());
}

async fn full_duplex_server_streams_while_the_body_uploads(runtime: &'static str) {
    // A server that answers at once and echoes the body as it reads it: with the whole
    // body sent before the response is read, 20 MB would fill every socket buffer and
    // both sides would wait forever.
    const SIZE: usize = 20 << 20;
    let listener = tcp::bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let mut left = SIZE;
        let mut buf = vec![0u8; 64 << 10];
        while left > 0 {
            let n = stream.read(&mut buf[..left.min(64 << 10)]).await.unwrap();
            assert!(n > 0);
            left -= n;
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .await
                .unwrap();
            stream.write_all(&buf[..n]).await.unwrap();
            stream.write_all(b"\r\n").await.unwrap();
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        let _ = stream.read(&mut buf).await;
    });
    let proxy = proxy::new(runtime).orig_dst(addr).spawn();
    let stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let (mut rx, mut tx) = stream.into_split();
    let upload = tokio::spawn(async move {
        tx.write_all(
            format!("PUT / HTTP/1.1\r\nHost: s\r\ncontent-length: {SIZE}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let chunk = vec![0x42u8; 1 << 20];
        for _ in 0..SIZE >> 20 {
            tx.write_all(&chunk).await.unwrap();
        }
        tx
    });
    let mut received = 0usize;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = rx.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early after {received} bytes");
            received += n;
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 16 {
                tail.drain(..tail.len() - 16);
            }
            if tail.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(done.is_ok(), "stalled after {received} response bytes");
    assert!(received > SIZE, "{received}");
    upload.await.unwrap();
}
