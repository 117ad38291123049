//! The per-shard balancer (`ringlink_engine::balance`): one P2C pick over 3, 100 and 1,000
//! ready endpoints (dropping the pick, as a request's end would), and applying a
//! 1,000-endpoint snapshot to a balancer that already has those endpoints.
//!
//! `cargo bench -p ringlink-benches --bench balance`; results in `benches/README.md`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringlink_engine::balance::{Balancer, Endpoint, Snapshot, XorShift};

fn snapshot(version: u64, n: usize) -> Snapshot {
    let labels = Arc::new(BTreeMap::from([(
        "namespace".to_string(),
        "default".to_string(),
    )]));
    Snapshot {
        version,
        endpoints: (0..n)
            .map(|i| Endpoint {
                addr: SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 8080)),
                labels: labels.clone(),
                weight: 10_000,
                tls: None,
                h2: false,
            })
            .collect(),
    }
}

/// A balancer over `n` endpoints whose RTT estimates differ, as after some traffic.
fn warmed(n: usize) -> Balancer {
    let mut b = Balancer::new();
    b.apply(&snapshot(1, n));
    let mut rng = XorShift::new(1);
    for i in 0..n * 4 {
        let p = b.pick(&mut rng).expect("ready");
        p.observe_rtt(Duration::from_micros(500 + (i as u64 % 50) * 100));
    }
    b
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/pick");
    for n in [3, 100, 1_000] {
        let b = warmed(n);
        let mut rng = XorShift::new(42);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| black_box(b.pick(&mut rng)).map(|p| p.addr()))
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let mut b = warmed(1_000);
    let snapshots = [snapshot(2, 1_000), snapshot(3, 1_000)];
    let mut i = 0;
    c.bench_function("balance/apply_1000_existing", |bench| {
        bench.iter(|| {
            i ^= 1;
            b.apply(black_box(&snapshots[i]));
        })
    });
}

criterion_group!(benches, pick, apply);
criterion_main!(benches);
