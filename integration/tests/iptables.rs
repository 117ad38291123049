//! The real thing: iptables `REDIRECT` rules shaped like Linkerd's proxy-init inside network
//! namespaces the test creates, the proxy running as Linkerd's proxy uid, and `SO_ORIGINAL_DST`
//! read from the kernel. Needs root; without it these tests fail and say so, unless
//! `RINGLINK_SKIP_ROOT_TESTS=1` asks to skip them (then they print that they did not run).

use std::net::SocketAddr;
use std::time::Duration;

use ringlink_integration::netns::{self, Topology, PEER_IP, PEER_IP6, POD_IP, POD_IP6};
use ringlink_integration::{both_runtimes, tcp};
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
    let proxy = topo
        .proxy(runtime)
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140")
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143")
        // The loop check below waits for detection on a silent connection.
        .env("LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT", "1s")
        .spawn();

    // Outbound: the app in the pod connects to a server on the peer host. The rules send it
    // to the proxy, which connects from its own uid (exempt) to the original destination.
    let remote: SocketAddr = format!("{PEER_IP}:8080").parse().unwrap();
    let (app_local, seen_from) = app_to_peer(&topo, remote, 10 << 20);
    assert_eq!(seen_from.ip().to_string(), POD_IP);
    assert_ne!(
        seen_from.port(),
        app_local.port(),
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
    let app_saw = peer_to_app(&topo, "0.0.0.0:8081", &format!("{POD_IP}:8081"));
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
    let proxy = topo
        .proxy(runtime)
        .env(
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
            "127.0.0.1:4140,[::1]:4140",
        )
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143")
        .spawn();

    // Outbound over IPv6: IP6T_SO_ORIGINAL_DST gives the peer's address.
    let remote: SocketAddr = format!("[{PEER_IP6}]:8080").parse().unwrap();
    let (app_local, seen_from) = app_to_peer(&topo, remote, 1 << 20);
    assert_eq!(seen_from.ip().to_string(), POD_IP6);
    assert_ne!(
        seen_from.port(),
        app_local.port(),
        "IPv6 outbound bypassed the proxy"
    );
    assert!(
        proxy
            .wait_for_log(&format!("server.addr={remote}"), Duration::from_secs(2))
            .await
    );

    // Inbound over IPv6: to the app on [::1] at the original port.
    let app_saw = peer_to_app(&topo, "[::]:8081", &format!("[{POD_IP6}]:8081"));
    assert_eq!(
        app_saw.ip().to_string(),
        "::1",
        "inbound IPv6 bypassed the proxy"
    );
}

/// The app in the pod sends `size` bytes to `remote` on the peer host, which echoes them;
/// checks every byte came back and returns the app's local address and the address the
/// peer saw.
fn app_to_peer(topo: &Topology, remote: SocketAddr, size: u64) -> (SocketAddr, SocketAddr) {
    let server = Topology::echo_once_in(&topo.peer, remote);
    let app_local = Topology::run_in(&topo.pod, move || async move {
        let stream = TcpStream::connect(remote).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (mut r, mut w) = stream.into_split();
        let send = async {
            let sent = tcp::write_pattern(&mut w, size).await.unwrap();
            w.shutdown().await.unwrap();
            sent
        };
        let (sent, (n, echoed)) =
            tokio::join!(send, async { tcp::read_hash(&mut r).await.unwrap() });
        assert_eq!(n, size, "the echo came back short");
        assert_eq!(echoed, sent, "the echo came back different");
        local
    });
    (app_local, server.join().unwrap())
}

/// The peer host connects to `pod_addr` and round-trips a message to an app listening on
/// `app_bind` in the pod; returns the address the app saw.
fn peer_to_app(topo: &Topology, app_bind: &str, pod_addr: &str) -> SocketAddr {
    let app = Topology::echo_once_in(&topo.pod, app_bind.parse().unwrap());
    let pod: SocketAddr = pod_addr.parse().unwrap();
    let reply = Topology::run_in(&topo.peer, move || async move {
        tcp::roundtrip(pod, b"hello").await.unwrap()
    });
    assert_eq!(reply, b"hello");
    app.join().unwrap()
}
