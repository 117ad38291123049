//! HTTP/1 carried over HTTP/2 between proxies (`l5d-orig-proto`), the inbound half: a
//! linkerd2-proxy client upgrades an application's HTTP/1 requests to HTTP/2 for a meshed
//! endpoint; the server's proxy turns them back into HTTP/1 for its application, which
//! never sees the header, and echoes it on the response.

use std::future::poll_fn;

use bytes::Bytes;
use http::Request;
use ringlink_integration::http1::{self, Reply};
use ringlink_integration::{both_runtimes, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

both_runtimes!(
    upgraded_http1_reaches_an_http1_application_as_http1,
    an_early_answer_arrives_while_the_body_is_unread
);

/// One request over a new h2c connection: status, `l5d-orig-proto` and body of the reply.
async fn h2_request(
    addr: std::net::SocketAddr,
    method: &str,
    body: &[u8],
) -> (u16, Option<String>, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let request = Request::builder()
        .method(method)
        .uri("http://app.ns.svc.cluster.local:8080/path?q=1")
        .header("l5d-orig-proto", "HTTP/1.1")
        .body(())
        .unwrap();
    let (response, mut stream) = send.send_request(request, body.is_empty()).unwrap();
    if !body.is_empty() {
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .unwrap();
    }
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let orig = response
        .headers()
        .get("l5d-orig-proto")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = poll_fn(|cx| body.poll_data(cx)).await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    (status, orig, data)
}

async fn upgraded_http1_reaches_an_http1_application_as_http1(runtime: &'static str) {
    let app = http1::server(|req| Reply::ok(&format!("{} {}", req.method, req.body.len()))).await;
    let proxy = proxy::new(runtime).orig_dst(app.addr).spawn();
    let (status, orig, body) = h2_request(proxy.inbound, "GET", b"").await;
    assert_eq!(status, 200, "{}", proxy.logs());
    assert_eq!(orig.as_deref(), Some("HTTP/1.1"), "echoed");
    assert_eq!(body, b"GET 0");
    let payload = vec![7u8; 100_000];
    let (status, _, body) = h2_request(proxy.inbound, "POST", &payload).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"POST 100000");
    let requests = app.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        // HTTP/1.1 on the application's side, without the header, with its Host.
        assert_eq!(request.version, 1);
        assert_eq!(request.target, "/path?q=1");
        assert!(
            !request
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("l5d-orig-proto")),
            "{:?}",
            request.headers
        );
        assert!(request
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("host") && v == "app.ns.svc.cluster.local:8080"));
    }
    assert_eq!(requests[1].body, payload);
}

/// An application that answers (413) after the request head, never reading the body: the
/// answer reaches the client while the body is still arriving, rather than both sides
/// waiting on each other (the body is larger than the sockets' buffers).
async fn an_early_answer_arrives_while_the_body_is_unread(runtime: &'static str) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Every connection (the proxy may open one before it knows what it needs).
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!";
                conn.write_all(answer).await.unwrap();
                // Holds the connection open, unread, for longer than the test waits.
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            });
        }
    });
    let proxy = proxy::new(runtime).orig_dst(app).spawn();
    let stream = TcpStream::connect(proxy.inbound).await.unwrap();
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    const LEN: usize = 32 << 20;
    let request = Request::builder()
        .method("POST")
        .uri("http://app.ns.svc.cluster.local:8080/upload")
        .header("l5d-orig-proto", "HTTP/1.1")
        .header("content-length", LEN.to_string())
        .body(())
        .unwrap();
    let payload = Bytes::from(vec![1u8; LEN]);
    let (response, mut body) = send.send_request(request, false).unwrap();
    // The h2 client buffers what flow control does not let through yet. The stream may
    // already be over: the answer can come first.
    let _ = body.send_data(payload, true);
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), response)
        .await
        .unwrap_or_else(|_| panic!("no answer while the body was unread:\n{}", proxy.logs()))
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let mut data = Vec::new();
    let mut response_body = response.into_body();
    while let Some(chunk) = poll_fn(|cx| response_body.poll_data(cx)).await {
        data.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(data, b"big!");
}
