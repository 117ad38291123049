//! Protocol detection on live connections: bytes read for detection are replayed, a
//! server-speaks-first protocol is not held back by the detect timeout, silence falls back
//! to opaque, and opaque ports skip detection.

use std::time::{Duration, Instant};

use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::{both_runtimes, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(
    server_speaks_first_without_waiting,
    split_request_line_is_replayed,
    silent_client_falls_back_to_opaque,
    tls_client_hello_is_recognised,
    opaque_ports_skip_detection,
);

async fn server_speaks_first_without_waiting(runtime: &'static str) {
    // An SMTP-like server greets first; the detect timeout stays at its 10 s default.
    let listener = tcp::bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"220 ready\r\n").await.unwrap();
        let mut buf = [0u8; 6];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
    });
    let proxy = proxy::new(runtime).orig_dst(addr).spawn();
    let start = Instant::now();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    let mut banner = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut banner))
        .await
        .expect("the greeting was held back")
        .unwrap();
    assert_eq!(&banner, b"220 ready\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The client's bytes after the greeting still flow.
    stream.write_all(b"HELO x").await.unwrap();
    let mut back = [0u8; 6];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"HELO x");
    drop(stream);
    assert!(
        proxy
            .wait_for_log("protocol=\"server-first\"", Duration::from_secs(2))
            .await,
        "{}",
        proxy.logs()
    );
}

async fn split_request_line_is_replayed(runtime: &'static str) {
    let server = http1::server(|req| Reply::ok(&format!("{} {}", req.method, req.target))).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    conn.send("GET /split HTT").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.send("P/1.1\r\nhost: x\r\n\r\n").await;
    let res = conn.response("GET").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "GET /split");
    assert!(
        proxy
            .wait_for_log("protocol=\"http/1\"", Duration::from_secs(2))
            .await
    );
}

async fn silent_client_falls_back_to_opaque(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime)
        .env("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "300ms")
        .orig_dst(server.addr)
        .spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    // Looks like the start of a request, then nothing: detection waits, then gives up.
    stream.write_all(b"GET").await.unwrap();
    let mut back = [0u8; 3];
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the bytes read for detection were not replayed")
        .unwrap();
    assert_eq!(&back, b"GET");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    stream.write_all(b" more").await.unwrap();
    let mut more = [0u8; 5];
    stream.read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b" more");
    drop(stream);
    assert!(
        proxy
            .wait_for_log("protocol=\"timeout\"", Duration::from_secs(2))
            .await
    );
}

async fn tls_client_hello_is_recognised(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let hello = client_hello("web.example");
    let back = tcp::roundtrip(proxy.outbound, &hello).await.unwrap();
    assert_eq!(back, hello);
    assert!(
        proxy
            .wait_for_log("tls.sni=web.example", Duration::from_secs(2))
            .await,
        "{}",
        proxy.logs()
    );
}

async fn opaque_ports_skip_detection(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime)
        .env(
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            format!("1,{}", server.addr.port()),
        )
        .orig_dst(server.addr)
        .spawn();
    // "GET" alone would make detection wait for the rest of a request line.
    let start = Instant::now();
    let back = tcp::roundtrip(proxy.inbound, b"GET").await.unwrap();
    assert_eq!(back, b"GET");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        proxy
            .wait_for_log("protocol=\"opaque-port\"", Duration::from_secs(2))
            .await
    );
}

/// A minimal TLS 1.3 ClientHello record naming `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9u8; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}
