//! `/metrics` counts what happened, per shard, with Linkerd's TCP families and labels.

use std::time::{Duration, Instant};

use ringlink_integration::http::call;
use ringlink_integration::metrics::{parse, sum, Series};
use ringlink_integration::proxy::Proxy;
use ringlink_integration::{both_runtimes, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(
    tcp_counts_and_bytes_match_the_traffic,
    resets_are_counted_with_errno
);

async fn scrape(proxy: &Proxy) -> Vec<Series> {
    let reply = call(proxy.admin, "GET", "/metrics", "").await;
    assert_eq!(reply.status, 200);
    parse(&reply.body)
}

/// Scrapes until `done` holds (connections close asynchronously), up to 5 s.
async fn scrape_until(proxy: &Proxy, done: impl Fn(&[Series]) -> bool) -> Vec<Series> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let series = scrape(proxy).await;
        if done(&series) || Instant::now() > deadline {
            return series;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tcp_counts_and_bytes_match_the_traffic(runtime: &'static str) {
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime).shards(2).orig_dst(server.addr).spawn();
    let target = server.addr.to_string();
    let mut sent = 0u64;
    for size in [1usize, 1000, 100_000, 3_000_000] {
        let msg = vec![7u8; size];
        assert_eq!(tcp::roundtrip(proxy.outbound, &msg).await.unwrap(), msg);
        sent += size as u64;
    }
    let out = [("direction", "outbound")];
    let series = scrape_until(&proxy, |s| sum(s, "tcp_close_total", &out) == 8.0).await;
    let src = [
        ("direction", "outbound"),
        ("peer", "src"),
        ("target_addr", &target),
        ("tls", "disabled"),
    ];
    let dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("target_addr", &target),
        ("tls", "disabled"),
    ];
    assert_eq!(sum(&series, "tcp_open_total", &src), 4.0);
    assert_eq!(sum(&series, "tcp_open_total", &dst), 4.0);
    assert_eq!(sum(&series, "tcp_close_total", &src), 4.0);
    assert_eq!(
        sum(
            &series,
            "tcp_close_total",
            &[("errno", ""), ("peer", "dst")]
        ),
        4.0
    );
    assert_eq!(sum(&series, "tcp_open_connections", &out), 0.0);
    // Every byte the client sent was read from it and written to the server, and back.
    for (name, labels) in [
        ("tcp_read_bytes_total", &src),
        ("tcp_write_bytes_total", &dst),
        ("tcp_read_bytes_total", &dst),
        ("tcp_write_bytes_total", &src),
    ] {
        assert_eq!(sum(&series, name, labels), sent as f64, "{name} {labels:?}");
    }
    // Every per-shard series says which shard; together they add up to the totals.
    for s in series.iter().filter(|s| s.name.starts_with("tcp_")) {
        assert!(
            matches!(s.labels.get("shard").map(String::as_str), Some("0" | "1")),
            "{s:?}"
        );
    }
    let per_shard: f64 = ["0", "1"]
        .iter()
        .map(|shard| {
            sum(
                &series,
                "tcp_open_total",
                &[("shard", shard), ("peer", "src")],
            )
        })
        .sum();
    assert_eq!(per_shard, 4.0);
    // An open connection shows as open.
    let mut open = TcpStream::connect(proxy.outbound).await.unwrap();
    open.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    open.read_exact(&mut b).await.unwrap();
    let series = scrape(&proxy).await;
    assert_eq!(sum(&series, "tcp_open_connections", &src), 1.0);
    assert_eq!(sum(&series, "tcp_open_connections", &dst), 1.0);
    assert!(sum(&series, "process_open_fds", &[]) > 0.0);
    assert_eq!(sum(&series, "proxy_build_info", &[]), 1.0);
}

async fn resets_are_counted_with_errno(runtime: &'static str) {
    let server = tcp::resetter(3).await;
    let proxy = proxy::new(runtime).orig_dst(server.addr).spawn();
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    stream.write_all(b"abc").await.unwrap();
    let mut buf = [0u8; 8];
    assert!(stream.read(&mut buf).await.is_err());
    let dst = [("peer", "dst"), ("errno", "ECONNRESET")];
    let series = scrape_until(&proxy, |s| sum(s, "tcp_close_total", &dst) == 1.0).await;
    assert_eq!(sum(&series, "tcp_close_total", &dst), 1.0, "{series:#?}");
    assert_eq!(sum(&series, "tcp_close_total", &[("peer", "src")]), 1.0);
}

#[tokio::test]
async fn page_passes_promtool() {
    let server = tcp::echo().await;
    let proxy = proxy::new("monoio").shards(2).orig_dst(server.addr).spawn();
    for _ in 0..4 {
        tcp::roundtrip(proxy.outbound, b"hello").await.unwrap();
    }
    tcp::roundtrip(proxy.inbound, b"hello").await.unwrap();
    let page = call(proxy.admin, "GET", "/metrics", "").await.body;
    assert!(page.contains("tcp_open_total{"), "{page}");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: apt-get install prometheus (.ci/run does)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the page:\n{}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn idle_series_are_dropped_after_retain_idle() {
    let server = tcp::echo().await;
    let proxy = proxy::new("monoio")
        .env("LINKERD2_PROXY_METRICS_RETAIN_IDLE", "1s")
        .orig_dst(server.addr)
        .spawn();
    let target = server.addr.to_string();
    let by_target = [("target_addr", target.as_str())];
    tcp::roundtrip(proxy.outbound, b"once").await.unwrap();
    let series = scrape_until(&proxy, |s| sum(s, "tcp_close_total", &by_target) == 2.0).await;
    assert_eq!(sum(&series, "tcp_open_total", &by_target), 2.0);
    // An open connection keeps its series however long it idles.
    let mut open = TcpStream::connect(proxy.outbound).await.unwrap();
    open.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    open.read_exact(&mut b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let series = scrape(&proxy).await;
    assert_eq!(
        sum(&series, "tcp_open_connections", &by_target),
        2.0,
        "{series:#?}"
    );
    drop(open);
    // Once closed and idle past the retention, every family forgets the target.
    let series = scrape_until(&proxy, |s| {
        !s.iter()
            .any(|x| x.labels.get("target_addr") == Some(&target))
    })
    .await;
    let left: Vec<_> = series
        .iter()
        .filter(|x| x.labels.get("target_addr") == Some(&target))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
    // New traffic brings the series back.
    tcp::roundtrip(proxy.outbound, b"again").await.unwrap();
    let series = scrape(&proxy).await;
    assert_eq!(sum(&series, "tcp_open_total", &by_target), 2.0);
}
