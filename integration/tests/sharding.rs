//! One shard per selected CPU, pinned, within the process's affinity mask.

use std::time::Duration;

use ringlink_integration::{proc, proxy, tcp};

fn shard_threads(pid: u32) -> Vec<(String, String)> {
    proc::thread_affinities(pid)
        .into_iter()
        .filter(|(name, _)| name.starts_with("ringlink-shard"))
        .collect()
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

async fn shards_pinned(runtime: &'static str) {
    if cpus() < 2 {
        panic!("this test needs 2 CPUs; this machine has {}", cpus());
    }
    let server = tcp::echo().await;
    let proxy = proxy::new(runtime).shards(2).orig_dst(server.addr).spawn();
    let mut threads = shard_threads(proxy.pid());
    threads.sort();
    // glommio adds a blocking-pool thread named after the executor; only pinned ones count.
    let pinned: Vec<_> = threads
        .iter()
        .filter(|(_, cpus)| !cpus.contains(['-', ',']))
        .collect();
    let mut allowed: Vec<&str> = pinned.iter().map(|(_, c)| c.as_str()).collect();
    allowed.sort();
    allowed.dedup();
    assert_eq!(allowed, ["0", "1"], "{threads:?}");
    // Traffic flows through both shards' listeners.
    for _ in 0..20 {
        assert_eq!(
            tcp::roundtrip(proxy.outbound, b"ping").await.unwrap(),
            b"ping"
        );
    }
}

async fn taskset_limits_shards(runtime: &'static str) {
    if cpus() < 2 {
        panic!("this test needs 2 CPUs; this machine has {}", cpus());
    }
    let server = tcp::echo().await;
    // Asking for 2 cores under `taskset -c 1` gets one shard, on CPU 1 only.
    let proxy = proxy::new(runtime)
        .shards(2)
        .taskset("1")
        .orig_dst(server.addr)
        .spawn();
    assert!(
        proxy.wait_for_log("shards=1", Duration::from_secs(2)).await,
        "{}",
        proxy.logs()
    );
    for (name, cpus) in proc::thread_affinities(proxy.pid()) {
        assert_eq!(cpus, "1", "thread {name} may run on {cpus}");
    }
    assert_eq!(
        tcp::roundtrip(proxy.outbound, b"ping").await.unwrap(),
        b"ping"
    );
}

ringlink_integration::both_runtimes!(shards_pinned, taskset_limits_shards);
