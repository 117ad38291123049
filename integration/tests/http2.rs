//! HTTP/2 and gRPC through the proxy: streams multiplexed on one upstream connection,
//! bodies with flow control, trailers (gRPC status) preserved, RST_STREAM passed on both
//! ways, failures answered (502 or a gRPC status), GOAWAY on drain, real clients.

use std::process::Command;
use std::time::Duration;

use h2::Reason;
use http::HeaderMap;
use ringlink_integration::grpc::{self, EchoClient, EchoRequest};
use ringlink_integration::h2::{self as h2srv, Client};
use ringlink_integration::{both_runtimes, eventually, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

both_runtimes!(
    outbound_and_inbound_h2,
    concurrent_streams_share_one_upstream_connection,
    client_connections_share_the_upstream_connection,
    a_full_upstream_connection_gets_a_sibling,
    a_shared_connection_its_server_closed_is_replaced,
    late_answers_to_cancelled_streams_keep_the_shared_connection,
    bodies_and_trailers_are_preserved,
    server_reset_reaches_client,
    a_reset_after_data_is_not_a_clean_end,
    the_end_of_a_body_rides_on_its_last_data_frame,
    a_request_body_ends_on_its_last_data_frame,
    client_reset_reaches_server,
    grpc_unary_status_and_trailers,
    grpc_bidirectional_streaming,
    grpc_to_unreachable_server_gets_unavailable,
    h2_to_unreachable_server_gets_502,
    h2_routes_by_authority_when_addressed_directly,
    preface_without_settings_is_refused,
    drain_sends_goaway_and_finishes_streams,
    curl_and_h2load,
    slow_client_to_an_h2_server_is_still_h2,
    client_that_ignores_pings_is_closed,
);

async fn outbound_and_inbound_h2(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    for port in [proxy.outbound, proxy.inbound] {
        let client = Client::connect(port).await;
        let reply = client
            .request("GET", "http://svc.test/hello", Vec::new(), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"/hello");
    }
    assert_eq!(server.authorities(), ["svc.test", "svc.test"]);
    assert!(
        proxy
            .wait_for_log("protocol=\"h2\"", Duration::from_secs(2))
            .await
    );
}

async fn concurrent_streams_share_one_upstream_connection(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let client = Client::connect(proxy.outbound).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .request("GET", &format!("http://svc/{i}"), Vec::new(), None)
                .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap().unwrap();
        assert_eq!(reply.body, format!("/{i}").as_bytes());
    }
    assert_eq!(server.connections(), 1);
}

/// Client connections to one endpoint share the shard's one upstream connection (as
/// linkerd2-proxy's per-endpoint clients do): it outlives the client connections that used
/// it, and a client connection holds none of its own.
async fn client_connections_share_the_upstream_connection(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut clients = Vec::new();
    for i in 0..4 {
        let client = Client::connect(proxy.outbound).await;
        for j in 0..3 {
            let path = format!("http://svc/{i}-{j}");
            let reply = client
                .request("GET", &path, Vec::new(), None)
                .await
                .unwrap();
            assert_eq!(reply.body, format!("/{i}-{j}").as_bytes());
        }
        clients.push(client);
    }
    assert_eq!(
        server.handshakes(),
        1,
        "one h2 connection carried every stream"
    );
    drop(clients);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A later client connection finds it still open.
    let client = Client::connect(proxy.outbound).await;
    let reply = client
        .request("GET", "http://svc/later", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(reply.body, b"/later");
    assert_eq!(server.handshakes(), 1);
    // The connections detection opened to the same address were closed unused, not kept
    // per client connection: the proxy holds one connection to the server.
    let open = proxy.fds_to(server.addr);
    assert_eq!(open, 1, "the proxy's connections to the server");
}

/// A shared upstream connection full of long-lived streams (the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`) does not hold other clients' requests back: the
/// proxy makes another connection to the same server.
async fn a_full_upstream_connection_gets_a_sibling(runtime: &'static str) {
    let server = h2srv::server_with_max_streams(2).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    // One client fills the server's limit with two calls that never end.
    let watcher = Client::connect(proxy.outbound).await;
    let held = vec![
        watcher.hold("http://svc/wait-reset").await,
        watcher.hold("http://svc/wait-reset").await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.handshakes(), 1);
    // Another client's requests still get through, on a second connection.
    let other = Client::connect(proxy.outbound).await;
    for i in 0..3 {
        let path = format!("http://svc/other-{i}");
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            other.request("GET", &path, Vec::new(), None),
        )
        .await
        .expect("a request behind a full upstream connection was held back")
        .unwrap();
        assert_eq!(reply.body, format!("/other-{i}").as_bytes());
    }
    assert_eq!(server.handshakes(), 2, "a second connection carried them");
    drop(held);
}

/// A shared upstream connection that its server closed (GOAWAY, then EOF) between requests
/// is replaced: the next request goes out on a new connection, and no request fails.
async fn a_shared_connection_its_server_closed_is_replaced(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let client = Client::connect(proxy.outbound).await;
    let reply = client
        .request("GET", "http://svc/goaway", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"/goaway"[..])
    );
    // The server's side ends after the proxy acknowledged the GOAWAY's PING: the proxy
    // has read the GOAWAY by then.
    let ended = eventually(Duration::from_secs(5), || server.ended() > 0).await;
    assert!(ended, "the server kept its connection");
    for i in 0..3 {
        let reply = client
            .request("GET", &format!("http://svc/after/{i}"), Vec::new(), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "request {i}: {:?}", reply.headers);
        assert_eq!(reply.body, format!("/after/{i}").as_bytes());
    }
    assert_eq!(server.handshakes(), 2);
    assert!(
        proxy
            .wait_for_log("Shared HTTP/2 connection closed", Duration::from_secs(2))
            .await
    );
}

/// Clients cancel many streams, and the server's answers cross the cancellations (a busy
/// server's do). The h2 crate counts each answer that arrives for a stream it has already
/// forgotten as a reset of its own, and by default closes the connection after 1,024 over
/// its life: a shared upstream connection, which lives long and carries every client's
/// streams, must not be closed for that.
async fn late_answers_to_cancelled_streams_keep_the_shared_connection(runtime: &'static str) {
    use std::sync::atomic::Ordering;

    let (server, state) = late_answering_server().await;
    let proxy = proxy::new(runtime).orig_dst(server).spawn();
    let tcp = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    // In batches of 10: more resets at once would be a rapid-reset attack, which the
    // proxy answers with GOAWAY (`MAX_PENDING_ACCEPT_RESETS`).
    let batches = 130;
    for batch in 1..=batches {
        let mut streams = Vec::new();
        for _ in 0..10 {
            let mut send = send.clone().ready().await.unwrap();
            let request = http::Request::get("http://svc/late").body(()).unwrap();
            streams.push(send.send_request(request, true).unwrap());
        }
        // Until the proxy has sent them on.
        let sent = || state.requests.load(Ordering::SeqCst) >= batch * 10;
        assert!(
            eventually(Duration::from_secs(5), sent).await,
            "requests not sent on"
        );
        for (_response, mut stream) in streams {
            stream.send_reset(Reason::CANCEL);
        }
    }
    // Until every cancellation has reached the server (which answered each).
    let all = || state.resets.load(Ordering::SeqCst) >= batches * 10;
    assert!(
        eventually(Duration::from_secs(10), all).await,
        "{} of {} cancellations reached the server: {}",
        state.resets.load(Ordering::SeqCst),
        batches * 10,
        proxy.logs()
    );
    // The last answers read by the proxy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !state.goaway.load(Ordering::SeqCst),
        "the proxy closed its shared connection (GOAWAY): {}",
        proxy.logs()
    );
    assert_eq!(
        state.connections.load(Ordering::SeqCst),
        1,
        "upstream connections"
    );
}

/// What [`late_answering_server`] saw.
#[derive(Default)]
struct LateState {
    connections: std::sync::atomic::AtomicUsize,
    /// Request heads.
    requests: std::sync::atomic::AtomicUsize,
    /// Streams reset, each answered.
    resets: std::sync::atomic::AtomicUsize,
    goaway: std::sync::atomic::AtomicBool,
}

/// A raw HTTP/2 server that answers each stream (200, no body) only once the client has
/// reset it: its answer crosses the reset.
async fn late_answering_server() -> (std::net::SocketAddr, std::sync::Arc<LateState>) {
    use std::sync::atomic::Ordering;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = std::sync::Arc::new(LateState::default());
    let shared = state.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let state = shared.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if stream.read_exact(&mut preface).await.is_err() {
                    return;
                }
                stream.write_all(&raw_frame(4, 0, 0, &[])).await.unwrap();
                loop {
                    let mut head = [0u8; 9];
                    if stream.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let mut payload = vec![0u8; len];
                    if stream.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let answer = match (head[3], head[4] & 1) {
                        (4, 0) => raw_frame(4, 1, 0, &[]),
                        (1, _) => {
                            state.requests.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        // :status 200 (static table index 8), END_HEADERS | END_STREAM.
                        (3, _) => {
                            state.resets.fetch_add(1, Ordering::SeqCst);
                            raw_frame(1, 0x5, id, &[0x88])
                        }
                        (7, _) => {
                            state.goaway.store(true, Ordering::SeqCst);
                            continue;
                        }
                        _ => continue,
                    };
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, state)
}

async fn bodies_and_trailers_are_preserved(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let client = Client::connect(proxy.outbound).await;
    // Larger than every default flow-control window, so back-pressure must work.
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", "sent".parse().unwrap());
    let reply = client
        .request("POST", "http://svc/echo", body.clone(), Some(trailers))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body == body, "the body came back different");
    let trailers = reply.trailers.expect("trailers");
    assert_eq!(trailers["x-client-trailer"], "sent");
    assert_eq!(trailers["x-server-trailer"], "done");
    // An empty body stays empty.
    let reply = client
        .request("POST", "http://svc/echo", Vec::new(), None)
        .await
        .unwrap();
    assert!(reply.body.is_empty());
}

async fn server_reset_reaches_client(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let client = Client::connect(proxy.outbound).await;
    let error = client
        .request("GET", "http://svc/reset", Vec::new(), None)
        .await
        .expect_err("a reset stream");
    assert_eq!(error.reason(), Some(Reason::REFUSED_STREAM), "{error}");
    // The connection survives a stream reset.
    let reply = client
        .request("GET", "http://svc/after", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(reply.body, b"/after");
}

/// A body reset after its data is not a complete body: the proxy resets the client's
/// stream too, even though the reset came with (or right after) the last data (the case the
/// end-of-body shortcut checks for: the h2 crate's stream then also looks ended).
async fn a_reset_after_data_is_not_a_clean_end(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let client = Client::connect(proxy.outbound).await;
    for _ in 0..20 {
        let error = client
            .request("GET", "http://svc/data-then-reset", Vec::new(), None)
            .await
            .expect_err("a reset stream, not a complete body");
        assert_eq!(error.reason(), Some(Reason::INTERNAL_ERROR), "{error}");
    }
}

/// The proxy ends a body on its last DATA frame when the upstream did, not with an empty
/// DATA frame after it (read from the wire with a client of raw frames).
async fn the_end_of_a_body_rides_on_its_last_data_frame(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let frames = raw_h2_get(proxy.outbound, "/last-frame").await;
    let data: Vec<_> = frames.iter().filter(|f| f.0 == 0).collect();
    assert_eq!(
        data,
        [&(0u8, 1u8, b"/last-frame".to_vec())],
        "DATA frames (type, flags, payload) of the response: {frames:?}"
    );
}

/// GETs `path` over a raw HTTP/2 connection: the frames (type, flags, payload) of stream 1
/// until its END_STREAM.
async fn raw_h2_get(addr: std::net::SocketAddr, path: &str) -> Vec<(u8, u8, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // HPACK without Huffman: GET, http, then :path and :authority as literals.
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend(path.as_bytes());
    block.extend([0x01, 3]);
    block.extend(b"svc");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(raw_frame(4, 0, 0, &[]));
    out.extend(raw_frame(1, 0x5, 1, &block));
    stream.write_all(&out).await.unwrap();
    let read = read_stream_1(&mut stream);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the response ends")
}

/// A raw HTTP/2 server that records the frames (type, flags, payload) of each connection's
/// stream 1 until its END_STREAM, then answers it 200 without a body.
async fn raw_h2_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Vec<(u8, u8, Vec<u8>)>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if stream.read_exact(&mut preface).await.is_err() {
                    return;
                }
                stream.write_all(&raw_frame(4, 0, 0, &[])).await.unwrap();
                let frames = read_stream_1(&mut stream).await;
                // :status 200 (static table index 8), END_HEADERS | END_STREAM.
                stream
                    .write_all(&raw_frame(1, 0x5, 1, &[0x88]))
                    .await
                    .unwrap();
                let _ = tx.send(frames);
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    (addr, rx)
}

/// One HTTP/2 frame.
fn raw_frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(id.to_be_bytes());
    f.extend(payload);
    f
}

/// Reads frames, acknowledging the peer's SETTINGS, until stream 1 ends: its frames (type,
/// flags, payload).
async fn read_stream_1(stream: &mut tokio::net::TcpStream) -> Vec<(u8, u8, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if head[3] == 4 && head[4] & 1 == 0 {
            stream.write_all(&raw_frame(4, 1, 0, &[])).await.unwrap();
        }
        if id == 1 {
            frames.push((head[3], head[4], payload));
            if head[4] & 1 == 1 && matches!(head[3], 0 | 1) {
                return frames;
            }
        }
    }
}

/// A client's END_STREAM on an empty DATA frame after its last data (as gRPC clients send
/// it) reaches the server on the last DATA frame: one frame less (read from the wire with
/// a server of raw frames).
async fn a_request_body_ends_on_its_last_data_frame(runtime: &'static str) {
    let (server, mut streams) = raw_h2_server().await;
    let proxy = proxy::new(runtime).orig_dst(server).spawn();
    let client = Client::connect(proxy.outbound).await;
    // The test client sends its body, then END_STREAM on an empty DATA frame.
    let reply = client
        .request("POST", "http://svc/upload", b"hello".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let frames = tokio::time::timeout(Duration::from_secs(5), streams.recv())
        .await
        .unwrap()
        .unwrap();
    let data: Vec<_> = frames.iter().filter(|f| f.0 == 0).collect();
    assert_eq!(
        data,
        [&(0u8, 1u8, b"hello".to_vec())],
        "DATA frames (type, flags, payload) of the request: {frames:?}"
    );
}

async fn client_reset_reaches_server(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let client = Client::connect(proxy.outbound).await;
    client
        .open_and_reset("http://svc/wait-reset", Reason::CANCEL)
        .await;
    let reset = eventually(Duration::from_secs(5), || !server.resets().is_empty()).await;
    assert!(reset, "no reset upstream");
    assert_eq!(server.resets(), [Reason::CANCEL]);
}

async fn grpc_unary_status_and_trailers(runtime: &'static str) {
    let (addr, _server) = grpc::serve("127.0.0.1:0".parse().unwrap()).await;
    let proxy = proxy::new(runtime).orig_dst(addr).spawn();
    let mut client = EchoClient::connect_via(proxy.outbound, "echo.svc:8080")
        .await
        .unwrap();
    let (reply, trailers) = client.echo(EchoRequest::ok("hi")).await.unwrap();
    assert_eq!(reply.message, "hi");
    assert_eq!(trailers.get(grpc::TRAILER).unwrap(), "ok");
    let status = client
        .echo(EchoRequest::fail(Code::PermissionDenied, "nope"))
        .await
        .expect_err("a failing status");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "nope");
    assert_eq!(status.metadata().get(grpc::TRAILER).unwrap(), "nope");
}

async fn grpc_bidirectional_streaming(runtime: &'static str) {
    let (addr, _server) = grpc::serve("127.0.0.1:0".parse().unwrap()).await;
    let proxy = proxy::new(runtime).orig_dst(addr).spawn();
    let mut client = EchoClient::connect_via(proxy.outbound, "echo.svc:8080")
        .await
        .unwrap();
    let mut chat = client.chat().await.unwrap();
    for i in 0..20 {
        // Each reply arrives before the next message is sent: nothing is buffered whole.
        assert_eq!(chat.say(&format!("m{i}")).await.unwrap(), format!("m{i}"));
    }
    let (rest, trailers) = chat.finish().await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(trailers.get(grpc::TRAILER).unwrap(), "ok");
    let failed = client
        .chat_all([
            EchoRequest::ok("a"),
            EchoRequest::fail(Code::ResourceExhausted, "too much"),
        ])
        .await
        .expect_err("the stream fails");
    assert_eq!(failed.code(), Code::ResourceExhausted);
}

async fn grpc_to_unreachable_server_gets_unavailable(runtime: &'static str) {
    let proxy = proxy::new(runtime).orig_dst(tcp::closed_port()).spawn();
    let mut client = EchoClient::connect_via(proxy.outbound, "echo.svc:8080")
        .await
        .unwrap();
    let status = client.echo(EchoRequest::ok("hi")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.metadata().get("l5d-proxy-error").is_some());
}

async fn h2_to_unreachable_server_gets_502(runtime: &'static str) {
    let proxy = proxy::new(runtime).orig_dst(tcp::closed_port()).spawn();
    let client = Client::connect(proxy.outbound).await;
    let reply = client
        .request("GET", "http://svc/", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 502);
    assert!(reply.headers.get("l5d-proxy-error").is_some());
}

async fn h2_routes_by_authority_when_addressed_directly(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).spawn();
    let client = Client::connect(proxy.outbound).await;
    let reply = client
        .request(
            "GET",
            &format!("http://localhost:{}/by-name", server.addr.port()),
            Vec::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", proxy.logs());
    assert_eq!(reply.body, b"/by-name");
}

async fn preface_without_settings_is_refused(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    // The preface, then a PING frame where SETTINGS must come.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x08\x06\x00\x00\x00\x00\x00ABCDEFGH")
        .await
        .unwrap();
    let mut all = Vec::new();
    // The proxy closes the connection well before the 10 s detect timeout.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all))
        .await
        .expect("the connection was left open");
    // A GOAWAY frame: length 8, type 7, stream 0, last stream 0, error PROTOCOL_ERROR (1).
    assert_eq!(
        all,
        [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        "the proxy answers with GOAWAY(PROTOCOL_ERROR) and closes"
    );
    // At most the eager connection (which the server may not have accepted yet), and no
    // request on it.
    assert!(
        server.connections() <= 1,
        "only the eager connection was made"
    );
    assert!(server.authorities().is_empty());
}

async fn drain_sends_goaway_and_finishes_streams(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let client = Client::connect(proxy.outbound).await;
    let reply = client
        .request("GET", "http://svc/before", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    proxy.signal(libc::SIGTERM);
    // After GOAWAY, new streams are refused by the client library or the proxy, and the
    // proxy exits once the connection is done.
    let mut proxy = proxy;
    let exited = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(exited.is_some_and(|s| s.success()), "{}", proxy.logs());
    assert!(proxy.logs().contains("GOAWAY"), "{}", proxy.logs());
}

async fn curl_and_h2load(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let url = format!("http://{}/curl", proxy.outbound);
    let curl = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", &url])
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "/curl");
    let h2load = Command::new("h2load")
        .args(["-n", "2000", "-c", "4", "-m", "10", &url])
        .output()
        .expect("h2load is installed (nghttp2-client; .ci/run installs it)");
    let out = String::from_utf8_lossy(&h2load.stdout);
    assert!(
        out.contains("2000 succeeded, 0 failed, 0 errored"),
        "h2load: {out}"
    );
}

async fn slow_client_to_an_h2_server_is_still_h2(runtime: &'static str) {
    // An HTTP/2 server sends SETTINGS as soon as it accepts the proxy's eager connection;
    // that must not pass for a server-first protocol while the client is still silent.
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get("http://svc/slow").body(()).unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.authorities(), ["svc"]);
    assert!(
        proxy
            .wait_for_log("protocol=\"h2\"", Duration::from_secs(2))
            .await,
        "{}",
        proxy.logs()
    );
}

async fn client_that_ignores_pings_is_closed(runtime: &'static str) {
    let server = h2srv::server().await;
    let proxy = proxy::new(runtime)
        .orig_dst(server.addr)
        .env(
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
            "200ms",
        )
        .env(
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
            "300ms",
        )
        .spawn();
    // A healthy client answers PINGs (the h2 crate does) and stays connected.
    let client = Client::connect(proxy.outbound).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = client
        .request("GET", "http://svc/still-here", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(reply.body, b"/still-here");
    // A client that sends its preface and SETTINGS, then never reads or answers anything.
    let mut stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all))
        .await
        .expect("a client that ignores PINGs is closed");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(
        proxy
            .wait_for_log("did not answer PING", Duration::from_secs(2))
            .await,
        "{}",
        proxy.logs()
    );
}
