//! Opaque TCP through the proxy is indistinguishable from a direct connection: bytes,
//! half-closes and resets all arrive, for both directions and both shard runtimes, spliced
//! (monoio) or copied (glommio, and monoio with `RINGLINK_L4_SPLICE=off`).

use std::time::{Duration, Instant};

use ringlink_integration::{both_runtimes, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// monoio splices opaque TCP; these run it with the copy (`RINGLINK_L4_SPLICE=off`) too.
mod monoio_copy {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn integrity_200mb_each_way() {
        super::integrity_200mb_each_way("monoio-copy").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_close_still_receives_reply() {
        super::half_close_still_receives_reply("monoio-copy").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_reset_reaches_client() {
        super::server_reset_reaches_client("monoio-copy").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_reset_reaches_server() {
        super::client_reset_reaches_server("monoio-copy").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_relays_lose_nothing() {
        super::parked_relays_lose_nothing(ringlink_integration::proxy::new("monoio-copy")).await
    }
    /// On monoio's epoll driver (io_uring refused), where the driver's own cancellation
    /// withdraws a pending read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_relays_lose_nothing_on_epoll() {
        let proxy = ringlink_integration::proxy::new("monoio-copy").block_io_uring();
        super::parked_relays_lose_nothing(proxy).await
    }
}

/// glommio copies opaque TCP (a spliced relay holds no buffer, so it never parks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_relays_lose_nothing_on_glommio() {
    parked_relays_lose_nothing(proxy::new("glommio")).await
}

both_runtimes!(
    outbound_echo,
    inbound_echo_reaches_local_app_port,
    integrity_200mb_each_way,
    thousand_concurrent_connections,
    half_close_still_receives_reply,
    server_reset_reaches_client,
    client_reset_reaches_server,
    closed_port_closes_client_promptly,
    connect_timeout_is_honoured,
    loop_to_own_listener_is_refused,
);

async fn outbound_echo(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    for msg in [&b"hello"[..], &[0u8; 1][..], &vec![7u8; 100_000][..]] {
        let back = tcp::roundtrip(proxy.outbound, msg).await.unwrap();
        assert_eq!(back, msg);
    }
    assert_eq!(server.accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

async fn inbound_echo_reaches_local_app_port(runtime: &'static str) {
    // Inbound forwards to 127.0.0.1 at the original destination's port, whatever its IP.
    let server = tcp::echo().await;
    let orig = std::net::SocketAddr::new([127, 0, 0, 2].into(), server.addr.port());
    let proxy = proxy::new(runtime).orig_dst(orig).spawn();
    let back = tcp::roundtrip(proxy.inbound, b"inbound").await.unwrap();
    assert_eq!(back, b"inbound");
}

async fn integrity_200mb_each_way(runtime: &'static str) {
    const SIZE: u64 = 200 << 20;
    let server = tcp::hasher(SIZE).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let stream = TcpStream::connect(proxy.outbound).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let sent = tcp::write_pattern(&mut w, SIZE).await.unwrap();
        w.shutdown().await.unwrap();
        sent
    });
    let mut server_hash = [0u8; 32];
    r.read_exact(&mut server_hash).await.unwrap();
    let (received, reply_hash) = tcp::read_hash(&mut r).await.unwrap();
    let sent_hash = writer.await.unwrap();
    assert_eq!(server_hash, sent_hash, "upstream received different bytes");
    assert_eq!(received, SIZE);
    assert_eq!(
        reply_hash,
        tcp::pattern_hash(SIZE).await,
        "client received different bytes"
    );
}

async fn thousand_concurrent_connections(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime).shards(2).orig_dst(server.addr).spawn();
    let mut streams = Vec::new();
    for _ in 0..1000 {
        streams.push(TcpStream::connect(proxy.outbound).await.unwrap());
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            tokio::spawn(async move {
                let msg = format!("connection {i}");
                s.write_all(msg.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
                let mut back = String::new();
                s.read_to_string(&mut back).await.unwrap();
                assert_eq!(back, msg);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        server.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1000
    );
}

async fn half_close_still_receives_reply(runtime: &'static str) {
    // The hasher replies only after it sees EOF: the client's FIN must reach it while the
    // client's read side stays open.
    let server = tcp::hasher(1000).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    let sent = tcp::write_pattern(&mut stream, 5000).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut hash = [0u8; 32];
    stream.read_exact(&mut hash).await.unwrap();
    assert_eq!(hash, sent);
    let (n, reply) = tcp::read_hash(&mut stream).await.unwrap();
    assert_eq!(n, 1000);
    assert_eq!(reply, tcp::pattern_hash(1000).await);
}

async fn server_reset_reaches_client(runtime: &'static str) {
    let server = tcp::resetter(5).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 16];
    let result = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("client was not told");
    let error = result.expect_err("expected a reset, got data or EOF");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
}

async fn client_reset_reaches_server(runtime: &'static str) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = proxy::new(runtime).orig_dst(addr).spawn();
    let mut client = TcpStream::connect(proxy.outbound).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let (mut upstream, _) = listener.accept().await.unwrap();
    let mut buf = [0u8; 1];
    upstream.read_exact(&mut buf).await.unwrap();
    client.set_zero_linger().unwrap();
    drop(client);
    let result = tokio::time::timeout(Duration::from_secs(5), upstream.read(&mut buf))
        .await
        .expect("upstream was not told");
    let error = result.expect_err("expected a reset, got data or EOF");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
}

async fn closed_port_closes_client_promptly(runtime: &'static str) {
    let proxy = proxy::new(runtime).orig_dst(tcp::closed_port()).spawn();
    let start = Instant::now();
    let outcome = refusal(proxy.outbound).await;
    // Refused upstream: the client is reset, as it would have been connecting directly.
    assert_eq!(outcome, Err(std::io::ErrorKind::ConnectionReset));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(
        proxy
            .wait_for_log("Connect failed", Duration::from_secs(2))
            .await
    );
}

/// Connects and waits for the proxy to close the connection: `Ok(())` for EOF, or the
/// error, which may already surface from `connect` when the reset is quick.
async fn refusal(addr: std::net::SocketAddr) -> Result<(), std::io::ErrorKind> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.kind())?;
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("the connection was left open")
    {
        Ok(0) => Ok(()),
        Ok(_) => panic!("unexpected data"),
        Err(error) => Err(error.kind()),
    }
}

async fn connect_timeout_is_honoured(runtime: &'static str) {
    // A listener whose accept queue is full drops SYNs, so connecting to it hangs.
    let socket = tcp::unresponsive_listener();
    let target = socket.0;
    let proxy = proxy::new(runtime)
        .env("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "300ms")
        .orig_dst(target)
        .spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let result = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("connect timeout was not honoured");
    assert!(result.is_err() || result.as_ref().ok() == Some(&0));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    assert!(
        proxy
            .wait_for_log("Connect failed", Duration::from_secs(2))
            .await
    );
    drop(socket);
}

async fn loop_to_own_listener_is_refused(runtime: &'static str) {
    // No override: the kernel has no NAT record for a connection made straight to the
    // outbound port, so its original destination is the proxy itself. Only HTTP, routed by
    // its authority, may use it; anything else is a loop.
    let proxy = proxy::new(runtime)
        .env("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "500ms")
        .spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    stream
        .write_all(b"\x16not http, not anything\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("the connection was left open");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    // A client that says nothing is refused once the detect timeout has passed.
    assert_eq!(
        refusal(proxy.outbound).await,
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert!(
        proxy
            .wait_for_log("routing loop", Duration::from_secs(2))
            .await
    );
}

/// A copied relay whose directions both wait through two park sweeps parks them (each read
/// is withdrawn and its buffer goes; one to two seconds), and what comes next still
/// arrives whole and in order: 100 KB each way, far more than a parked wait's 16 bytes,
/// then, after parking again, a half-close each way with bytes after the first.
async fn parked_relays_lose_nothing(proxy: proxy::Builder) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = proxy.orig_dst(listener.local_addr().unwrap()).spawn();
    let mut client = TcpStream::connect(proxy.outbound).await.unwrap();
    // Not HTTP: detection hands it to the opaque relay.
    client.write_all(b"hello\n").await.unwrap();
    let (mut upstream, _) = listener.accept().await.unwrap();
    let mut hello = [0u8; 6];
    upstream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    upstream.write_all(b"world\n").await.unwrap();
    client.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"world\n");
    let parked = proxy.wait_for_park(0).await;

    let down: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let up: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    upstream.write_all(&down).await.unwrap();
    let mut got = vec![0u8; down.len()];
    client.read_exact(&mut got).await.unwrap();
    assert!(got == down, "the bytes from upstream differ after parking");
    client.write_all(&up).await.unwrap();
    let mut got = vec![0u8; up.len()];
    upstream.read_exact(&mut got).await.unwrap();
    assert!(got == up, "the bytes from the client differ after parking");
    proxy.wait_for_park(parked).await;

    // Half-closes after parking: each side's FIN arrives after its bytes, and the other
    // direction still flows.
    client.write_all(b"last").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let within = Duration::from_secs(5);
    tokio::time::timeout(within, upstream.read_to_end(&mut rest))
        .await
        .expect("the client's FIN did not arrive")
        .unwrap();
    assert_eq!(rest, b"last");
    upstream.write_all(b"reply after FIN").await.unwrap();
    upstream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(within, client.read_to_end(&mut rest))
        .await
        .expect("the upstream's FIN did not arrive")
        .unwrap();
    assert_eq!(rest, b"reply after FIN");
}
