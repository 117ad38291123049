//! Where io_uring is refused (a container's seccomp profile, `kernel.io_uring_disabled`),
//! monoio shards fall back to epoll and say so, and glommio refuses to start with a message
//! naming the fix instead of glommio's misleading panic.

use std::time::Duration;

use ringlink_integration::{proxy, tcp};

#[tokio::test]
async fn monoio_falls_back_to_epoll_and_still_proxies() {
    let server = tcp::echo().await;
    let proxy = proxy::new("monoio")
        .block_io_uring()
        .orig_dst(server.addr)
        .spawn();
    let logs = proxy.logs();
    assert!(logs.contains("driver=\"epoll\""), "{logs}");
    assert!(logs.contains("io_uring is unavailable"), "{logs}");
    for msg in [&b"over epoll"[..], &vec![3u8; 300_000][..]] {
        assert_eq!(tcp::roundtrip(proxy.outbound, msg).await.unwrap(), msg);
        assert_eq!(tcp::roundtrip(proxy.inbound, msg).await.unwrap(), msg);
    }
}

#[tokio::test]
async fn glommio_refuses_to_start_naming_the_fix() {
    let mut cmd = proxy::new("glommio").block_io_uring();
    cmd = cmd.env("LINKERD2_PROXY_LOG", "error");
    let (status, stderr) = cmd.run_to_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("io_uring") && stderr.contains("seccomp"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
