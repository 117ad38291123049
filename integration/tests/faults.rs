//! Faults hurt only the exchange they happen in: backends that stall, reset, never answer,
//! answer garbage or close reused connections; clients that trickle their heads (HTTP/1
//! and HTTP/2); control planes that are silent, speak garbage or reset every stream. Each
//! test runs a real proxy against real loopback sockets and checks that its memory stays
//! bounded, that other connections are served while the fault lasts and after, and that
//! the fault is answered and counted as documented.
//!
//! The backend faults route by authority (no original destination: `Host` names the
//! backend), so that one proxy reaches a faulty and a healthy backend side by side.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringlink_integration::h2::{self as h2srv, Client};
use ringlink_integration::http::call;
use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::metrics::{parse, sum, Series};
use ringlink_integration::proxy::{self, Proxy};
use ringlink_integration::{both_runtimes, eventually, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(
    a_backend_stalled_mid_body_is_released_when_the_client_leaves,
    a_backend_reset_mid_body_aborts_only_its_client,
    a_backend_that_never_answers_is_released_when_the_client_leaves,
    a_backend_answering_garbage_gets_502,
    a_reused_connection_closed_by_the_backend_is_retried_only_when_safe,
    slow_request_heads_get_408_while_others_are_served,
);

/// How much the proxy's resident memory may grow while a fault lasts. Socket buffers are the
/// kernel's; the proxy holds at most a read buffer or two per connection.
const MAX_GROWTH_KIB: u64 = 16 * 1024;

/// How long a bounded wait may take before the test calls it a hang.
const WAIT: Duration = Duration::from_secs(5);

// === backends ===

/// What [`backend`] does once it has read a request head.
#[derive(Clone, Copy)]
enum Then {
    /// Writes these bytes, then nothing more: it only waits for the proxy to close.
    Hold(&'static [u8]),
    /// Writes these bytes, then `a` forever (as fast as the proxy reads).
    Endless(&'static [u8]),
}

/// A misbehaving backend: one request head per connection, then [`Then`].
struct Backend {
    addr: SocketAddr,
    /// Request heads read.
    heads: Arc<AtomicUsize>,
    /// Connections the proxy closed (end of stream or an error), after their head.
    released: Arc<AtomicUsize>,
    /// Bytes written after the heads.
    written: Arc<AtomicU64>,
}

async fn backend(then: Then) -> Backend {
    let listener = tcp::bind().await;
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let (h, r, w) = (heads.clone(), released.clone(), written.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (h, r, w) = (h.clone(), r.clone(), w.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                while !seen.windows(4).any(|x| x == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                match then {
                    Then::Hold(reply) => {
                        if stream.write_all(reply).await.is_ok() {
                            w.fetch_add(reply.len() as u64, Ordering::SeqCst);
                            while let Ok(1..) = stream.read(&mut buf).await {}
                        }
                    }
                    Then::Endless(prefix) => {
                        let endless = vec![b'a'; 16 << 10];
                        if stream.write_all(prefix).await.is_ok() {
                            while stream.write_all(&endless).await.is_ok() {
                                w.fetch_add(endless.len() as u64, Ordering::SeqCst);
                            }
                        }
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Backend {
        addr,
        heads,
        released,
        written,
    }
}

// === impl Backend ===

impl Backend {
    fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    fn released(&self) -> usize {
        self.released.load(Ordering::SeqCst)
    }
}

// === helpers ===

/// A GET routed by authority to `addr`.
fn get(path: &str, addr: SocketAddr) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n")
}

async fn scrape(proxy: &Proxy) -> Vec<Series> {
    let reply = call(proxy.admin, "GET", "/metrics", "").await;
    assert_eq!(reply.status, 200);
    parse(&reply.body)
}

/// Scrapes until `done` holds (exchanges are recorded when they end), up to [`WAIT`].
async fn scrape_until(proxy: &Proxy, done: impl Fn(&[Series]) -> bool) -> Vec<Series> {
    let deadline = Instant::now() + WAIT;
    loop {
        let series = scrape(proxy).await;
        if done(&series) || Instant::now() > deadline {
            return series;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request to the healthy backend on a new connection: 200, within 2 s (a request
/// stuck behind a fault would take as long as the fault).
async fn served(proxy: &Proxy, healthy: SocketAddr) {
    let request = async {
        let mut conn = Conn::connect(proxy.outbound).await;
        conn.request(get("/healthy", healthy)).await
    };
    let res = tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .unwrap_or_else(|_| panic!("a healthy request stalled:\n{}", tail(proxy)));
    assert_eq!(res.status, 200, "{}", res.head);
}

/// Reads from `stream` until `enough` holds for what arrived, up to [`WAIT`].
async fn read_until(stream: &mut TcpStream, enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !enough(&got) {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "{other:?} after {:?}",
                String::from_utf8_lossy(&got).into_owned()
            ),
        }
    }
    got
}

/// Whether nothing arrives on `stream`, and it stays open, for `quiet`.
async fn stays_quiet(stream: &mut TcpStream, quiet: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(quiet, stream.read(&mut byte))
        .await
        .is_err()
}

/// The proxy's open connections, client and upstream, for failure messages.
async fn open_connections(proxy: &Proxy) -> String {
    let series = scrape(proxy).await;
    let open = |peer| sum(&series, "tcp_open_connections", &[("peer", peer)]);
    format!(
        "{} client and {} upstream connections",
        open("src"),
        open("dst")
    )
}

/// The proxy's last log lines, for failure messages.
fn tail(proxy: &Proxy) -> String {
    let logs = proxy.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The labels of a 502 the proxy answered for an upstream failure to `authority`.
fn bad_gateway(authority: &str) -> [(&str, &str); 4] {
    [
        ("authority", authority),
        ("status_code", "502"),
        ("classification", "failure"),
        ("error", "upstream"),
    ]
}

fn assert_bounded(proxy: &Proxy, before: u64, what: &str) {
    let grown = proxy.rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB {what}");
    assert!(
        grown < MAX_GROWTH_KIB,
        "the proxy grew by {grown} KiB {what}"
    );
}

// === backend faults (HTTP/1) ===

async fn a_backend_stalled_mid_body_is_released_when_the_client_leaves(runtime: &'static str) {
    const STALLED: usize = 20;
    // A head promising 100,000 bytes, ten of them, then silence.
    let stalled = backend(Then::Hold(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789",
    ))
    .await;
    let healthy = http1::server(|_| Reply::ok("fine")).await;
    let proxy = proxy::new(runtime).spawn();
    served(&proxy, healthy.addr).await;
    let before = proxy.rss_kib();

    let mut clients = Vec::new();
    for _ in 0..STALLED {
        let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
        stream
            .write_all(get("/stall", stalled.addr).as_bytes())
            .await
            .unwrap();
        // The client gets the head and the first bytes at once.
        let got = read_until(&mut stream, |b| b.ends_with(b"0123456789")).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
        assert!(text.contains("content-length: 100000\r\n"), "{text:?}");
        clients.push(stream);
    }
    // Then nothing, and the connection stays open: ringlink has no response body timeout.
    assert!(stays_quiet(&mut clients[0], Duration::from_millis(300)).await);
    for _ in 0..10 {
        served(&proxy, healthy.addr).await;
    }
    assert_bounded(&proxy, before, &format!("for {STALLED} stalled responses"));

    // The clients give up: the proxy must let go of the upstream connections too.
    drop(clients);
    if !eventually(WAIT, || stalled.released() == STALLED).await {
        panic!(
            "{} of {STALLED} stalled upstream connections closed {WAIT:?} after their \
             clients left; the proxy holds {}\n{}",
            stalled.released(),
            open_connections(&proxy).await,
            tail(&proxy)
        );
    }
    served(&proxy, healthy.addr).await;
}

async fn a_backend_reset_mid_body_aborts_only_its_client(runtime: &'static str) {
    const RESETS: usize = 10;
    let resetting =
        tcp::answer_then_reset(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nabc").await;
    let healthy = http1::server(|_| Reply::ok("fine")).await;
    let proxy = proxy::new(runtime).spawn();
    served(&proxy, healthy.addr).await;
    let before = proxy.rss_kib();

    for _ in 0..RESETS {
        let mut conn = Conn::connect(proxy.outbound).await;
        conn.send(get("/reset", resetting.addr)).await;
        // HTTP/1 cannot say "the rest is lost" but by breaking the connection.
        let res = tokio::time::timeout(WAIT, conn.response("GET"))
            .await
            .expect("the client was left hanging");
        assert!(res.is_none(), "a complete response after a reset: {res:?}");
        served(&proxy, healthy.addr).await;
    }
    assert_bounded(&proxy, before, &format!("after {RESETS} upstream resets"));

    let authority = resetting.addr.to_string();
    let failed = [
        ("authority", authority.as_str()),
        ("status_code", "200"),
        ("classification", "failure"),
        ("error", "upstream"),
    ];
    let reset = [
        ("peer", "dst"),
        ("target_addr", authority.as_str()),
        ("errno", "ECONNRESET"),
    ];
    // Nothing else failed. (A response is recorded just after its last byte is written:
    // wait for the last healthy one too.)
    let healthy_authority = healthy.addr.to_string();
    let ok = [
        ("authority", healthy_authority.as_str()),
        ("classification", "success"),
    ];
    let series = scrape_until(&proxy, |s| {
        sum(s, "response_total", &failed) == RESETS as f64
            && sum(s, "tcp_close_total", &reset) == RESETS as f64
            && sum(s, "response_total", &ok) == RESETS as f64 + 1.0
    })
    .await;
    assert_eq!(
        sum(&series, "response_total", &failed),
        RESETS as f64,
        "{series:#?}"
    );
    assert_eq!(
        sum(&series, "tcp_close_total", &reset),
        RESETS as f64,
        "{series:#?}"
    );
    assert_eq!(
        sum(&series, "response_total", &ok),
        RESETS as f64 + 1.0,
        "{series:#?}"
    );
}

async fn a_backend_that_never_answers_is_released_when_the_client_leaves(runtime: &'static str) {
    const WAITING: usize = 10;
    // Reads the request and sends nothing. ringlink has no response timeout (neither has
    // linkerd2-proxy without a route that sets one): the request waits as long as its
    // client does.
    let silent = backend(Then::Hold(b"")).await;
    let healthy = http1::server(|_| Reply::ok("fine")).await;
    let proxy = proxy::new(runtime).spawn();
    served(&proxy, healthy.addr).await;
    let before = proxy.rss_kib();

    let mut clients = Vec::new();
    for _ in 0..WAITING {
        let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
        stream
            .write_all(get("/silent", silent.addr).as_bytes())
            .await
            .unwrap();
        clients.push(stream);
    }
    assert!(eventually(WAIT, || silent.heads() == WAITING).await);
    // No answer, and no error either: the client's connection stays open and quiet.
    let quiet = Duration::from_secs(1);
    assert!(stays_quiet(&mut clients[0], quiet).await);
    for _ in 0..10 {
        served(&proxy, healthy.addr).await;
    }
    assert_bounded(
        &proxy,
        before,
        &format!("for {WAITING} unanswered requests"),
    );

    // The clients give up: the proxy must let go of the upstream connections too.
    drop(clients);
    if !eventually(WAIT, || silent.released() == WAITING).await {
        panic!(
            "{} of {WAITING} unanswered upstream connections closed {WAIT:?} after their \
             clients left; the proxy holds {}\n{}",
            silent.released(),
            open_connections(&proxy).await,
            tail(&proxy)
        );
    }
    served(&proxy, healthy.addr).await;
}

async fn a_backend_answering_garbage_gets_502(runtime: &'static str) {
    const GARBAGE: usize = 5;
    let garbage = http1::server(|_| Reply::raw("NOT HTTP AT ALL\r\n\r\n").then_close()).await;
    // A head that never ends: the proxy must stop at its 64 KiB head limit.
    let endless = backend(Then::Endless(b"HTTP/1.1 200 OK\r\nx-endless: ")).await;
    let healthy = http1::server(|_| Reply::ok("fine")).await;
    let proxy = proxy::new(runtime).spawn();
    served(&proxy, healthy.addr).await;
    let before = proxy.rss_kib();

    let mut conn = Conn::connect(proxy.outbound).await;
    for _ in 0..GARBAGE {
        let res = tokio::time::timeout(WAIT, conn.request(get("/garbage", garbage.addr)))
            .await
            .expect("an answer");
        assert_eq!(res.status, 502, "{}", res.head);
        let why = res.header("l5d-proxy-error").expect("l5d-proxy-error");
        assert!(why.contains("invalid response"), "{why}");
        // No request body was pending: the same client connection goes on.
        let res = conn.request(get("/healthy", healthy.addr)).await;
        assert_eq!(res.status, 200, "{}", res.head);
    }
    let res = tokio::time::timeout(WAIT, conn.request(get("/endless", endless.addr)))
        .await
        .expect("an answer to an endless head");
    assert_eq!(res.status, 502, "{}", res.head);
    assert!(res.header("l5d-proxy-error").is_some());
    // The proxy closed the upstream connection rather than read on.
    assert!(
        eventually(WAIT, || endless.released() == 1).await,
        "the endless backend is still writing ({} bytes)",
        endless.written.load(Ordering::SeqCst)
    );
    assert_bounded(&proxy, before, "for garbage and an endless response head");

    let (authority, endless_authority) = (garbage.addr.to_string(), endless.addr.to_string());
    let series = scrape_until(&proxy, |s| {
        sum(s, "response_total", &bad_gateway(&authority)) == GARBAGE as f64
            && sum(s, "response_total", &bad_gateway(&endless_authority)) == 1.0
    })
    .await;
    assert_eq!(
        sum(&series, "response_total", &bad_gateway(&authority)),
        GARBAGE as f64,
        "{series:#?}"
    );
    assert_eq!(
        sum(&series, "response_total", &bad_gateway(&endless_authority)),
        1.0,
        "{series:#?}"
    );
    served(&proxy, healthy.addr).await;
}

async fn a_reused_connection_closed_by_the_backend_is_retried_only_when_safe(
    runtime: &'static str,
) {
    // Answers the first request of each connection (keep-alive), and closes the connection
    // without answering as soon as a second one arrives on it.
    let per_conn = Arc::new(Mutex::new(HashMap::<usize, usize>::new()));
    let server = http1::server(move |req| {
        let mut per_conn = per_conn.lock().unwrap();
        let nth = per_conn.entry(req.conn).or_default();
        *nth += 1;
        if *nth == 1 {
            Reply::ok(&format!("conn {}", req.conn))
        } else {
            Reply::raw("").then_close()
        }
    })
    .await;
    let proxy = proxy::new(runtime).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request(get("/first", server.addr)).await;
    assert_eq!((res.status, res.body_str()), (200, "conn 0"));

    // A GET (idempotent, no body) on the reused connection: retried once, on a new one.
    let res = conn.request(get("/again", server.addr)).await;
    assert_eq!(
        (res.status, res.body_str()),
        (200, "conn 1"),
        "{}",
        res.head
    );
    let seen: Vec<_> = server
        .requests()
        .iter()
        .map(|r| (r.target.clone(), r.conn))
        .collect();
    assert_eq!(
        seen,
        [
            ("/first".into(), 0),
            ("/again".into(), 0),
            ("/again".into(), 1)
        ]
    );

    // A POST with a body on the reused connection: not retried, answered 502.
    conn.send(format!(
        "POST /post HTTP/1.1\r\nhost: {}\r\ncontent-length: 5\r\n\r\nhello",
        server.addr
    ))
    .await;
    let res = tokio::time::timeout(WAIT, conn.response("POST"))
        .await
        .expect("an answer")
        .expect("a response");
    assert_eq!(res.status, 502, "{}", res.head);
    let why = res.header("l5d-proxy-error").expect("l5d-proxy-error");
    assert!(why.contains("upstream"), "{why}");
    // Give a retry, if any, time to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let posts: Vec<_> = server
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.conn, r.body.clone()))
        .collect();
    assert_eq!(
        posts,
        [(1, b"hello".to_vec())],
        "sent once, on the reused one"
    );
    assert_eq!(server.connections(), 2);

    let authority = server.addr.to_string();
    let failed = [
        ("authority", authority.as_str()),
        ("status_code", "502"),
        ("error", "upstream"),
    ];
    let ok = [("authority", authority.as_str()), ("status_code", "200")];
    let series = scrape_until(&proxy, |s| sum(s, "response_total", &failed) == 1.0).await;
    assert_eq!(sum(&series, "response_total", &failed), 1.0, "{series:#?}");
    assert_eq!(sum(&series, "response_total", &ok), 2.0, "{series:#?}");
    // And the next request finds a working connection.
    let mut conn = Conn::connect(proxy.outbound).await;
    let res = conn.request(get("/after", server.addr)).await;
    assert_eq!(res.status, 200, "{}", res.head);
}

// === slow clients ===

/// A client that sends a request line at once, then one byte of header every 100 ms, and
/// never ends the head. Returns how long after the request line the first answer byte came,
/// and everything it read before the proxy closed the connection.
async fn slow_h1_client(addr: SocketAddr) -> (Duration, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let trickle: Vec<u8> = b"host: s\r\nx-slow: "
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'z', 400))
        .collect();
    let (mut sent, mut answered) = (0, None);
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(n) if n > 0 => {
                    answered.get_or_insert_with(|| started.elapsed());
                    got.extend_from_slice(&buf[..n]);
                }
                _ => break,
            },
            // Trickles until answered.
            _ = tokio::time::sleep(Duration::from_millis(100)),
                if answered.is_none() && sent < trickle.len() => {
                if stream.write_all(&trickle[sent..sent + 1]).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    let waited = answered.unwrap_or_else(|| started.elapsed());
    (waited, String::from_utf8_lossy(&got).into_owned())
}

async fn slow_request_heads_get_408_while_others_are_served(runtime: &'static str) {
    // `engine::http::h1::HEAD_TIMEOUT` is a fixed 10 s from the head's first byte (no
    // variable shortens it), and a trickle does not extend it: 40 clients trickle a byte
    // every 100 ms, all are answered 408 and closed ~10 s later, and every other request
    // meanwhile is served at once.
    const SLOW: usize = 40;
    let healthy = http1::server(|_| Reply::ok("fine")).await;
    let proxy = proxy::new(runtime).orig_dst(healthy.addr).spawn();
    served(&proxy, healthy.addr).await;
    let before = proxy.rss_kib();
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(slow_h1_client(proxy.outbound)))
        .collect();

    let started = Instant::now();
    let mut others = 1;
    while started.elapsed() < Duration::from_secs(8) {
        served(&proxy, healthy.addr).await;
        others += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_bounded(&proxy, before, &format!("for {SLOW} slow clients"));

    for client in slow {
        let (waited, got) = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .unwrap_or_else(|_| panic!("a slow client was never answered\n{}", tail(&proxy)))
            .unwrap();
        assert!(got.starts_with("HTTP/1.1 408 "), "{got:?}");
        let head = got.to_ascii_lowercase();
        assert!(head.contains("\r\nl5d-proxy-error: "), "{got:?}");
        assert!(head.contains("\r\nconnection: close\r\n"), "{got:?}");
        assert!(
            waited >= Duration::from_secs(9) && waited < Duration::from_secs(14),
            "answered after {waited:?}"
        );
    }
    // No slow head reached the backend.
    assert_eq!(healthy.requests().len(), others);
    let timed_out = [("status_code", "408"), ("error", "request_timeout")];
    let series = scrape_until(&proxy, |s| {
        sum(s, "response_total", &timed_out) == SLOW as f64
    })
    .await;
    assert_eq!(
        sum(&series, "response_total", &timed_out),
        SLOW as f64,
        "{series:#?}"
    );
    served(&proxy, healthy.addr).await;
}

/// An HTTP/2 client that sends the preface and SETTINGS, then trickles a HEADERS frame a
/// byte every 100 ms (it would take 20 s). Returns how long the proxy kept it open.
async fn slow_h2_client(addr: SocketAddr) -> Duration {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    // A HEADERS frame of 200 bytes on stream 1 (END_STREAM | END_HEADERS): GET, http, /,
    // :authority svc, then a header whose value never finishes arriving.
    let mut frame = vec![0, 0, 200, 1, 0x5, 0, 0, 0, 1];
    frame.extend_from_slice(&[0x82, 0x86, 0x84, 0x41, 3, b's', b'v', b'c']);
    // A literal `x-slow` of 182 bytes (length 127 + 55).
    frame.extend_from_slice(&[0x00, 6, b'x', b'-', b's', b'l', b'o', b'w', 0x7f, 55]);
    frame.resize(9 + 200, b'z');
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            // What the proxy sends (SETTINGS, PINGs) is read and ignored, never answered.
            read = stream.read(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                _ => return started.elapsed(),
            },
            _ = tokio::time::sleep(Duration::from_millis(100)), if sent < frame.len() => {
                if stream.write_all(&frame[sent..sent + 1]).await.is_err() {
                    return started.elapsed();
                }
                sent += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_h2_headers_are_closed_by_the_ping_keepalive() {
    // The h2 server has no timeout of its own for a frame that arrives slowly. What bounds
    // it is the PING keep-alive: a client in the middle of a HEADERS block cannot send
    // anything else (not even a PING acknowledgement), so it is closed once a PING goes
    // unanswered: at most the keep-alive interval plus its timeout (10 s + 3 s by default;
    // 500 ms each here).
    const SLOW: usize = 20;
    let server = h2srv::server().await;
    let proxy = proxy::new("monoio")
        .orig_dst(server.addr)
        .env(
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
            "500ms",
        )
        .env(
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
            "500ms",
        )
        .spawn();
    let client = Client::connect(proxy.outbound).await;
    let reply = client
        .request("GET", "http://svc/before", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let before = proxy.rss_kib();

    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(slow_h2_client(proxy.outbound)))
        .collect();
    // Other clients, on this connection (which answers PINGs) and new ones, are served.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let fresh = Client::connect(proxy.outbound).await;
        for client in [&client, &fresh] {
            let reply = tokio::time::timeout(
                Duration::from_secs(1),
                client.request("GET", "http://svc/meanwhile", Vec::new(), None),
            )
            .await
            .expect("a healthy h2 request stalled")
            .unwrap();
            assert_eq!(reply.body, b"/meanwhile");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_bounded(&proxy, before, &format!("for {SLOW} slow h2 clients"));

    for slow in slow {
        let open = tokio::time::timeout(WAIT, slow)
            .await
            .unwrap_or_else(|_| panic!("a slow h2 client was never closed\n{}", tail(&proxy)))
            .unwrap();
        assert!(open < Duration::from_secs(4), "closed after {open:?}");
    }
    assert!(
        proxy
            .wait_for_log("did not answer PING", Duration::from_secs(1))
            .await,
        "{}",
        tail(&proxy)
    );
    // No slow stream reached the server.
    assert!(
        server.authorities().iter().all(|a| a == "svc"),
        "{:?}",
        server.authorities()
    );
    let reply = client
        .request("GET", "http://svc/after", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(reply.body, b"/after");
}

// === control plane faults ===

/// The discovered name the tests ask for (under the default profile suffix).
const DISCOVERED: &str = "web.ns.svc.cluster.local:8080";

/// Runs a proxy whose Destination and policy controller are both at `ctrl`, which
/// misbehaves; `calls` counts what it received (connections or streams). The proxy starts
/// and serves what needs no control plane: outbound to its IP original destination, and
/// inbound under the default policy (`all-unauthenticated`), which a port keeps until the
/// controller answers (`ringlink_control::policy::watch`). A discovered name waits out
/// `LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT` (504) and then fails fast (503), as
/// README's Discovery paragraph says; the proxy retries the controller with backoff, not in
/// a loop, and its memory stays bounded.
async fn control_plane_fault(ctrl: SocketAddr, calls: impl Fn() -> usize) {
    let app = http1::server(|_| Reply::ok("app")).await;
    let proxy = proxy::new("monoio")
        .orig_dst(app.addr)
        .env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", ctrl)
        .env("LINKERD2_PROXY_POLICY_SVC_ADDR", ctrl)
        .env("LINKERD2_PROXY_POLICY_WORKLOAD", proxy::WORKLOAD)
        .env("LINKERD2_PROXY_INBOUND_PORTS", app.addr.port())
        .env("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", "1s")
        .env("LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT", "500ms")
        .spawn();
    assert_eq!(call(proxy.admin, "GET", "/ready", "").await.status, 200);

    // What needs no control plane is served.
    plain(&proxy, proxy.outbound).await;
    plain(&proxy, proxy.inbound).await;
    let before = proxy.rss_kib();

    // What needs discovery waits out the failfast timeout, then fails fast.
    let mut conn = Conn::connect(proxy.outbound).await;
    let discovered = format!("GET / HTTP/1.1\r\nhost: {DISCOVERED}\r\n\r\n");
    let started = Instant::now();
    let res = tokio::time::timeout(WAIT, conn.request(&discovered))
        .await
        .expect("an answer within the failfast timeout");
    let waited = started.elapsed();
    assert_eq!(res.status, 504, "{}", res.head);
    let why = res.header("l5d-proxy-error").expect("l5d-proxy-error");
    assert!(why.contains("failfast"), "{why}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    let started = Instant::now();
    let res = conn.request(&discovered).await;
    assert_eq!(res.status, 503, "{}", res.head);
    assert!(started.elapsed() < Duration::from_millis(450));

    // While the controller goes on misbehaving, the rest goes on being served.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        plain(&proxy, proxy.outbound).await;
        plain(&proxy, proxy.inbound).await;
        assert_eq!(conn.request(&discovered).await.status, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_bounded(&proxy, before, "while the control plane misbehaves");
    // Two clients (Destination, policy), retried with backoff from 100 ms doubling to 10 s:
    // a handful of calls in these ~3 s, never a busy loop.
    let calls = calls();
    eprintln!("{calls} calls to the misbehaving controller");
    assert!(
        calls <= 40,
        "{calls} calls to the controller\n{}",
        tail(&proxy)
    );

    let series = scrape(&proxy).await;
    assert_eq!(
        sum(&series, "response_total", &[("error", "failfast")]),
        1.0
    );
    assert!(sum(&series, "response_total", &[("error", "unavailable")]) >= 2.0);
    assert_eq!(call(proxy.admin, "GET", "/ready", "").await.status, 200);
}

/// A request that needs no discovery, on a new connection to `port`: 200.
async fn plain(proxy: &Proxy, port: SocketAddr) {
    let mut conn = Conn::connect(port).await;
    let res = tokio::time::timeout(WAIT, conn.request("GET / HTTP/1.1\r\nhost: app\r\n\r\n"))
        .await
        .unwrap_or_else(|_| panic!("a request without discovery stalled\n{}", tail(proxy)));
    assert_eq!(res.status, 200, "{}", res.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_control_plane_fails_only_discovered_traffic() {
    // Accepts connections and never reads or writes a byte.
    let listener = tcp::bind().await;
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    control_plane_fault(addr, || accepted.load(Ordering::SeqCst)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_speaking_garbage_fails_only_discovered_traffic() {
    // Answers every connection with 1 MiB of bytes that are not HTTP/2, then closes.
    let garbage = tcp::source(1 << 20).await;
    let accepted = garbage.accepted.clone();
    control_plane_fault(garbage.addr, || accepted.load(Ordering::SeqCst)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_resetting_every_stream_fails_only_discovered_traffic() {
    // A real HTTP/2 server that resets every stream (RST_STREAM REFUSED_STREAM) it is sent.
    let listener = tcp::bind().await;
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let count = streams.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    control_plane_fault(addr, || streams.load(Ordering::SeqCst)).await;
}
