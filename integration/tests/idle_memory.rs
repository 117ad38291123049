//! What an idle keep-alive HTTP/1 connection costs the proxy: after one request, a client
//! connection waits for its next request with a small read buffer, and its task carries no
//! detection, connect or timer state. Measured as the growth of the proxy's RSS over many
//! such connections; the bound is a regression guard (issue 15's target of 2 KiB is not
//! met).

use std::time::Duration;

use ringlink_integration::http1::{self, Conn, Reply};
use ringlink_integration::proc::raise_nofile_limit;
use ringlink_integration::proxy;

/// Connections held idle.
const CONNECTIONS: usize = 2_000;
/// The most an idle keep-alive connection may add to the proxy's RSS (18.9 KiB with monoio
/// and 13.3 KiB with glommio before detection, connects and timers left the connection's
/// task; 13.5 and 11.9 KiB now, in debug and release builds alike).
const BOUND_BYTES: u64 = 15 * 1024;

async fn idle_http1_connections_are_small(runtime: &'static str) {
    // The test's own sockets, plus the proxy's (it raises its own limit).
    if raise_nofile_limit(3 * CONNECTIONS as u64 + 256) < 3 * CONNECTIONS as u64 {
        panic!("cannot open {CONNECTIONS} connections: the open-file limit is too low");
    }
    let backend = http1::server(|_| Reply::ok("ok")).await;
    let proxy = proxy::new(runtime).orig_dst(backend.addr).spawn();
    let open = |n: usize| {
        let addr = proxy.inbound;
        async move {
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                let mut conn = Conn::connect(addr).await;
                let res = conn
                    .request("GET / HTTP/1.1\r\nhost: idle.example\r\n\r\n")
                    .await;
                assert_eq!(res.status, 200);
                conns.push(conn);
            }
            conns
        }
    };
    // Warm the shard (its pools, tables and allocator arenas) before measuring.
    let warm = open(200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proxy.rss_kib();
    let idle = open(CONNECTIONS).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proxy.rss_kib();
    let per_connection = (after.saturating_sub(before) * 1024) / CONNECTIONS as u64;
    eprintln!("{runtime}: {per_connection} B of RSS per idle keep-alive connection");
    assert!(
        per_connection <= BOUND_BYTES,
        "{runtime}: {per_connection} B per idle connection (RSS {before} KiB -> {after} KiB)"
    );
    // The connections are alive: each still answers.
    let mut idle = idle;
    for conn in idle.iter_mut().step_by(97) {
        let res = conn
            .request("GET /again HTTP/1.1\r\nhost: idle.example\r\n\r\n")
            .await;
        assert_eq!(res.status, 200);
    }
    drop(warm);
}

ringlink_integration::both_runtimes!(idle_http1_connections_are_small);
