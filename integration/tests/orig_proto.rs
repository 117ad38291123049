//! HTTP/1 carried over HTTP/2 between proxies (`l5d-orig-proto`), the inbound half: a
//! linkerd2-proxy client upgrades an application's HTTP/1 requests to HTTP/2 for a meshed
//! endpoint; the server's proxy turns them back into HTTP/1 for its application, which
//! never sees the header, and echoes it on the response.

use std::future::poll_fn;

use bytes::Bytes;
use http::Request;
use ringlink_integration::http1::{self, Reply};
use ringlink_integration::{both_runtimes, proxy};
use tokio::net::TcpStream;

both_runtimes!(upgraded_http1_reaches_an_http1_application_as_http1);

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
