//! SIGTERM drains: no new connections, open ones finish within the grace period, then the
//! rest are closed and the proxy exits 0. A second signal closes at once.

use std::time::{Duration, Instant};

use ringlink_integration::{both_runtimes, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(
    open_connection_finishes_after_sigterm,
    grace_period_closes_what_is_left,
    second_signal_closes_at_once,
    idle_proxy_exits_promptly,
);

/// A connection through the proxy that has carried one byte each way.
async fn echoed_connection(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf).await.unwrap();
    stream
}

async fn open_connection_finishes_after_sigterm(runtime: &'static str) {
    let server = tcp::echo().await;
    let mut proxy = proxy::new(runtime).shards(2).orig_dst(server.addr).spawn();
    let mut open = TcpStream::connect(proxy.outbound).await.unwrap();
    open.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).await.unwrap();

    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_for_log("draining", Duration::from_secs(5)).await);
    // Listeners close: new connections are refused...
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(proxy.outbound).await {
            Err(_) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(_) => panic!("still accepting after SIGTERM"),
        }
    }
    // ...while the open one still works, in both directions.
    open.write_all(b"after!").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");
    assert!(
        proxy.wait_exit(Duration::from_millis(300)).await.is_none(),
        "exited early"
    );

    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    proxy.assert_exits_cleanly(Duration::from_secs(5)).await;
}

async fn grace_period_closes_what_is_left(runtime: &'static str) {
    let server = tcp::echo().await;
    let mut proxy = proxy::new(runtime)
        .env("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "1s")
        .orig_dst(server.addr)
        .spawn();
    let mut idle = echoed_connection(proxy.outbound).await;
    let mut buf = [0u8; 1];

    let start = Instant::now();
    proxy.signal(libc::SIGTERM);
    proxy.assert_exits_cleanly(Duration::from_secs(10)).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the grace period"
    );
    // The client sees its connection closed.
    let n = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(proxy.logs().contains("grace period"));
}

async fn second_signal_closes_at_once(runtime: &'static str) {
    let server = tcp::echo().await;
    let mut proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    // Held open: the drain must not end by itself.
    let _idle = echoed_connection(proxy.outbound).await;
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_for_log("draining", Duration::from_secs(5)).await);
    proxy.signal(libc::SIGINT);
    // The default grace period is 2 minutes; the second signal ends it now.
    proxy.assert_exits_cleanly(Duration::from_secs(5)).await;
}

async fn idle_proxy_exits_promptly(runtime: &'static str) {
    let mut proxy = proxy::new(runtime).shards(2).spawn();
    proxy.signal(libc::SIGINT);
    proxy.assert_exits_cleanly(Duration::from_secs(5)).await;
    assert!(proxy.logs().contains("Shutdown complete"));
}
