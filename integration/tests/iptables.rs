//! The real thing: iptables `REDIRECT` rules shaped like Linkerd's proxy-init inside network
//! namespaces the test creates, the proxy running as Linkerd's proxy uid, and `SO_ORIGINAL_DST`
//! read from the kernel. Needs root; without it these tests fail and say so, unless
//! `RINGLINK_SKIP_ROOT_TESTS=1` asks to skip them (then they print that they did not run).

use std::net::SocketAddr;
use std::time::Duration;

use ringlink_integration::netns::{self, Topology, PEER_IP, PEER_IP6, POD_IP, POD_IP6};
use ringlink_integration::{both_runtimes, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(
    outbound_and_inbound_are_transparent,
    ipv6_is_transparent_too
);

/// Whether to run; panics with the reason when the environment cannot run these tests.
fn can_run(test: &str) -> bool {
    match netns::unavailable() {
        None => true,
        Some(why) if std::env::var_os("RINGLINK_SKIP_ROOT_TESTS").is_some() => {
            eprintln!("SKIPPED {test}: {why} (RINGLINK_SKIP_ROOT_TESTS is set)");
            false
        }
        Some(why) => panic!(
            "{test} did not run: {why}. Run as root, or set RINGLINK_SKIP_ROOT_TESTS=1 to skip it"
        ),
    }
}

async fn outbound_and_inbound_are_transparent(runtime: &'static str) {
    if !can_run("iptables::outbound_and_inbound_are_transparent") {
        return;
    }
    let topo = Topology::create();
    let proxy = proxy::new(runtime)
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140")
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143")
        .wrapper(
            &topo
                .proxy_wrapper()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .spawn();

    // Outbound: the app in the pod connects to a server on the peer host. The rules send it
    // to the proxy, which connects from its own uid (exempt) to the original destination.
    let remote: SocketAddr = format!("{PEER_IP}:8080").parse().unwrap();
    let peer_ns = topo.peer.clone();
    let (server_tx, server_rx) = std::sync::mpsc::channel();
    let server_thread = std::thread::spawn(move || {
        Topology::run_in(&peer_ns, move || async move {
            let listener = tokio::net::TcpListener::bind(remote).await.unwrap();
            server_tx.send(()).unwrap();
            let (mut stream, seen_from) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                match stream.read(&mut buf).await.unwrap() {
                    0 => break,
                    read => n += read as u64,
                }
            }
            stream.write_all(&n.to_be_bytes()).await.unwrap();
            seen_from
        })
    });
    server_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (client_local, echoed) = Topology::run_in(&topo.pod, move || async move {
        let mut stream = TcpStream::connect(remote).await.unwrap();
        let local = stream.local_addr().unwrap();
        tcp::write_pattern(&mut stream, 10 << 20).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut count = [0u8; 8];
        stream.read_exact(&mut count).await.unwrap();
        (local, u64::from_be_bytes(count))
    });
    let seen_from = server_thread.join().unwrap();
    assert_eq!(echoed, 10 << 20, "the peer received a different byte count");
    assert_eq!(seen_from.ip().to_string(), POD_IP);
    assert_ne!(
        seen_from.port(),
        client_local.port(),
        "the peer saw the app's own connection: it did not go through the proxy"
    );
    assert!(
        proxy
            .wait_for_log(&format!("server.addr={remote}"), Duration::from_secs(2))
            .await,
        "the proxy did not log the original destination:\n{}",
        proxy.logs()
    );

    // Inbound: the peer connects to the pod's address; PREROUTING sends it to 4143 and the
    // proxy forwards to the app on 127.0.0.1 at the same port.
    let app_ns = topo.pod.clone();
    let (app_tx, app_rx) = std::sync::mpsc::channel();
    let app_thread = std::thread::spawn(move || {
        Topology::run_in(&app_ns, move || async move {
            let listener = tokio::net::TcpListener::bind("0.0.0.0:8081").await.unwrap();
            app_tx.send(()).unwrap();
            let (mut stream, seen_from) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
            seen_from
        })
    });
    app_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let pod: SocketAddr = format!("{POD_IP}:8081").parse().unwrap();
    let reply = Topology::run_in(&topo.peer, move || async move {
        tcp::roundtrip(pod, b"hello").await.unwrap()
    });
    assert_eq!(reply, b"hello");
    let app_saw = app_thread.join().unwrap();
    assert!(
        app_saw.ip().is_loopback(),
        "the app saw {app_saw}: inbound traffic did not go through the proxy"
    );

    // A connection the app makes straight to the proxy's port is not redirected (loopback
    // is exempt) and is refused as a loop.
    let refused = Topology::run_in(&topo.pod, || async {
        match TcpStream::connect("127.0.0.1:4140").await {
            Err(e) => Err(e.kind()),
            Ok(mut s) => {
                let mut b = [0u8; 1];
                match s.read(&mut b).await {
                    Ok(n) => Ok(n),
                    Err(e) => Err(e.kind()),
                }
            }
        }
    });
    assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");
    assert!(
        proxy
            .wait_for_log("routing loop", Duration::from_secs(2))
            .await
    );
}

async fn ipv6_is_transparent_too(runtime: &'static str) {
    if !can_run("iptables::ipv6_is_transparent_too") {
        return;
    }
    let topo = Topology::create();
    // Linkerd's injector lists an IPv6 outbound address beside the IPv4 one; a dual-stack
    // inbound listener takes both families.
    let proxy = proxy::new(runtime)
        .env(
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
            "127.0.0.1:4140,[::1]:4140",
        )
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143")
        .wrapper(
            &topo
                .proxy_wrapper()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .spawn();

    // Outbound over IPv6: IP6T_SO_ORIGINAL_DST gives the peer's address.
    let remote: SocketAddr = format!("[{PEER_IP6}]:8080").parse().unwrap();
    let peer_ns = topo.peer.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        Topology::run_in(&peer_ns, move || async move {
            let listener = tokio::net::TcpListener::bind(remote).await.unwrap();
            ready_tx.send(()).unwrap();
            let (mut stream, seen_from) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
            seen_from
        })
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (local, reply) = Topology::run_in(&topo.pod, move || async move {
        let mut stream = TcpStream::connect(remote).await.unwrap();
        let local = stream.local_addr().unwrap();
        stream.write_all(b"six!").await.unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.unwrap();
        (local, buf)
    });
    let seen_from = server.join().unwrap();
    assert_eq!(&reply, b"six!");
    assert_eq!(seen_from.ip().to_string(), POD_IP6);
    assert_ne!(
        seen_from.port(),
        local.port(),
        "IPv6 outbound bypassed the proxy"
    );
    assert!(
        proxy
            .wait_for_log(&format!("server.addr={remote}"), Duration::from_secs(2))
            .await
    );

    // Inbound over IPv6: to the app on [::1] at the original port.
    let app_ns = topo.pod.clone();
    let (app_tx, app_rx) = std::sync::mpsc::channel();
    let app = std::thread::spawn(move || {
        Topology::run_in(&app_ns, move || async move {
            let listener = tokio::net::TcpListener::bind("[::]:8081").await.unwrap();
            app_tx.send(()).unwrap();
            let (mut stream, seen_from) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
            seen_from
        })
    });
    app_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let pod: SocketAddr = format!("[{POD_IP6}]:8081").parse().unwrap();
    let reply = Topology::run_in(&topo.peer, move || async move {
        tcp::roundtrip(pod, b"in-6").await.unwrap()
    });
    assert_eq!(reply, b"in-6");
    let app_saw = app.join().unwrap();
    assert_eq!(
        app_saw.ip().to_string(),
        "::1",
        "inbound IPv6 bypassed the proxy"
    );
}
