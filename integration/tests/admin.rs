//! The admin server of the real binary: readiness, liveness, env, run-time log level and the
//! shutdown endpoint, while shards serve traffic.

use std::time::Duration;

use ringlink_integration::http::call;
use ringlink_integration::{proxy, tcp};

#[tokio::test]
async fn ready_live_and_env() {
    let proxy = proxy::new("monoio").shards(2).spawn();
    assert_eq!(call(proxy.admin, "GET", "/ready", "").await.status, 200);
    let live = call(proxy.admin, "GET", "/live", "").await;
    assert_eq!((live.status, live.body.as_str()), (200, "live\n"));
    let env = call(proxy.admin, "GET", "/env.json?RINGLINK_RUNTIME", "").await;
    assert_eq!(env.status, 200);
    assert!(
        env.body.contains("\"RINGLINK_RUNTIME\": \"monoio\""),
        "{}",
        env.body
    );
    assert!(!env.body.contains("LINKERD2_PROXY_LOG"), "{}", env.body);
    assert_eq!(
        call(proxy.admin, "GET", "/metrics-nope", "").await.status,
        404
    );
}

#[tokio::test]
async fn log_level_changes_while_running() {
    let server = tcp::echo().await;
    let proxy = proxy::new("glommio")
        // The harness reads the listening addresses from ringlink_engine::app's info lines.
        .env("LINKERD2_PROXY_LOG", "warn,ringlink_engine::app=info")
        .orig_dst(server.addr)
        .spawn();
    let level = call(proxy.admin, "GET", "/proxy-log-level", "").await.body;
    assert_eq!(level, "ringlink_engine::app=info,warn\n");
    tcp::roundtrip(proxy.outbound, b"quiet").await.unwrap();
    assert!(!proxy.logs().contains("Connection closed"));

    let bad = call(proxy.admin, "PUT", "/proxy-log-level", "info,[[[").await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let put = call(
        proxy.admin,
        "PUT",
        "/proxy-log-level",
        "ringlink_engine=debug",
    )
    .await;
    assert_eq!(put.status, 204, "{put:?}");
    // The shards' connection logs follow the new filter.
    tcp::roundtrip(proxy.outbound, b"loud").await.unwrap();
    assert!(
        proxy
            .wait_for_log("Connection closed", Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn shutdown_endpoint_drains_when_enabled() {
    let mut off = proxy::new("monoio").spawn();
    assert_eq!(call(off.admin, "POST", "/shutdown", "").await.status, 404);
    assert!(off.wait_exit(Duration::from_millis(200)).await.is_none());

    let mut on = proxy::new("monoio")
        .env("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true")
        .spawn();
    let get = call(on.admin, "GET", "/shutdown", "").await;
    assert_eq!(get.status, 405);
    assert!(get.head.contains("allow: POST"), "{get:?}");
    assert_eq!(call(on.admin, "POST", "/shutdown", "").await.status, 200);
    on.assert_exits_cleanly(Duration::from_secs(5)).await;
}

/// Proxy CPU time (user + system) in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Nanoseconds the proxy's threads ran or waited to run (`/proc/PID/task/*/schedstat`):
/// the CPU they wanted, whether or not another process had it.
fn cpu_wanted_ns(pid: u32) -> u64 {
    let mut ns = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("schedstat");
        // A thread that ended meanwhile has no file any more.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().unwrap());
        ns += fields.next().unwrap() + fields.next().unwrap();
    }
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_while_the_shard_is_saturated() {
    use ringlink_integration::http1::{self, Conn, Reply};
    let server = http1::server(|_| Reply::ok("x")).await;
    // One shard, and the whole process (control thread included) on one CPU.
    let proxy = proxy::new("monoio")
        .orig_dst(server.addr)
        .taskset("0")
        .spawn();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..32 {
        let (stop, addr) = (stop.clone(), proxy.outbound);
        load.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = conn.request("GET / HTTP/1.1\r\nHost: s\r\n\r\n").await;
                assert_eq!(res.status, 200);
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ticks, wanted, started) = (
        cpu_ticks(proxy.pid()),
        cpu_wanted_ns(proxy.pid()),
        std::time::Instant::now(),
    );
    let mut slowest = Duration::ZERO;
    for path in ["/live", "/metrics", "/ready", "/live", "/metrics"] {
        let asked = std::time::Instant::now();
        let reply =
            tokio::time::timeout(Duration::from_secs(2), call(proxy.admin, "GET", path, ""))
                .await
                .unwrap_or_else(|_| panic!("{path} did not answer within 2 s under load"));
        assert_eq!(reply.status, 200, "{path}");
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The shard really was busy: the proxy ran, or was ready to run, most of the time
    // meanwhile (on a machine that other work shares, it may not have got the CPU).
    let elapsed = started.elapsed().as_secs_f64();
    let used = (cpu_ticks(proxy.pid()) - ticks) as f64 / 100.0;
    let busy = used / elapsed;
    // Saturating: a thread that ended meanwhile takes its time out of the second sum.
    let demand = cpu_wanted_ns(proxy.pid()).saturating_sub(wanted) as f64 / 1e9 / elapsed;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for task in load {
        requests += task.await.unwrap();
    }
    eprintln!(
        "admin slowest {slowest:?} while the proxy used {busy:.2} CPUs and wanted \
         {demand:.2}, {requests} requests"
    );
    assert!(
        demand > 0.8,
        "the proxy was not saturated (it wanted {demand:.2} CPUs, used {busy:.2})"
    );
    assert!(requests > 1000);
}
