//! The one connect/retry loop, on a real shard of each runtime with a real destination
//! replica (its snapshot handed over as the control thread would).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use ringlink_control::discovery::{EndpointMeta, EndpointSet, State};
use ringlink_control::thread::Phase;
use ringlink_control::RuntimeKind;
use tokio::sync::watch;

use super::*;
use crate::conn::{Direction, PerDirection};
use crate::discover::BalancerFamilies;
use crate::lifecycle::Lifecycle;
use crate::rt::{ShardMain, ShardSpec};
use crate::settings::DiscoverySettings;

/// What one case does with the attempts it is given.
#[derive(Clone, Copy)]
enum Fails {
    /// Every attempt fails to connect (retryable).
    Connecting,
    /// Every attempt fails after connecting (not retryable).
    Upstream,
}

struct Case(Fails);

impl ShardMain for Case {
    fn run<R: Runtime>(self) -> impl Future<Output = ()> {
        run_case::<R>(self.0)
    }
}

async fn run_case<R: Runtime>(fails: Fails) {
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let life = Lifecycle::new(phase_rx);
    let (tx, mut requests) = ringlink_control::dst::channel();
    let registry = prometheus::Registry::new();
    let settings = DiscoverySettings {
        destination: true,
        profile_suffixes: Vec::new(),
        profile_networks: Vec::new(),
        queue_capacity: PerDirection::from([10, 10]),
        failfast_timeout: PerDirection::from([Duration::from_secs(5); 2]),
        idle_timeout: PerDirection::from([Duration::from_secs(60); 2]),
    };
    let families = BalancerFamilies::register(&registry).unwrap();
    let dsts = Dsts::new(tx, families, 7, life.clone(), settings);
    let dst = dsts.get::<R>(Direction::Outbound, "svc.ns:80");
    let request = requests
        .try_recv()
        .expect("the shard asked for the destination");
    let endpoint: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let set = EndpointSet {
        version: 1,
        state: State::Resolved,
        exists: true,
        endpoints: BTreeMap::from([(
            endpoint,
            EndpointMeta {
                weight: 1,
                ..EndpointMeta::default()
            },
        )]),
        opaque: false,
        policy: None,
        profile: None,
    };
    let (_set_tx, set_rx) = watch::channel(Arc::new(set));
    request.reply.send(set_rx).unwrap();
    let pick = dst.pick::<R>(&dsts).await.expect("an endpoint");
    let mut target = Target {
        addr: pick.addr(),
        dst: Some(dst.clone()),
        pick: Some(pick),
        name: None,
        policy: None,
    };
    let attempts = Cell::new(0);
    let result = connect_balanced::<R, (), _, _>(&dsts, &mut target, |addr, tls| {
        assert!(tls.is_none(), "a plaintext endpoint");
        assert_eq!(addr, endpoint);
        attempts.set(attempts.get() + 1);
        async move {
            Err(match fails {
                Fails::Connecting => {
                    ProxyError::Connect(io::Error::from_raw_os_error(libc::ECONNREFUSED))
                }
                Fails::Upstream => ProxyError::upstream("garbage"),
            })
        }
    })
    .await;
    match fails {
        Fails::Connecting => {
            assert!(matches!(result, Err(ProxyError::Connect(_))));
            assert_eq!(attempts.get(), MAX_CONNECT_ATTEMPTS);
            // The endpoint that failed the last attempt backs off too, as after any other.
            assert_eq!(dst.ready_endpoints(), 0);
        }
        Fails::Upstream => {
            assert!(matches!(result, Err(ProxyError::Upstream(_))));
            assert_eq!(attempts.get(), 1, "only connect failures are retried");
            assert_eq!(dst.ready_endpoints(), 1);
        }
    }
    drop(target);
    phase_tx.send(Phase::Draining).unwrap();
    life.tasks_done().await;
}

fn run_on_both_runtimes(fails: Fails) {
    for kind in [RuntimeKind::Monoio, RuntimeKind::Glommio] {
        if crate::rt::probe(kind).is_err() {
            panic!("{kind:?} cannot run here");
        }
        let shard = crate::rt::spawn_shard(kind, ShardSpec { index: 0, cpu: 0 }, Case(fails))
            .expect("a shard");
        shard.join().expect("the case passed");
    }
}

#[test]
fn connect_failures_back_off_every_endpoint_they_hit() {
    run_on_both_runtimes(Fails::Connecting);
}

#[test]
fn other_failures_are_not_retried() {
    run_on_both_runtimes(Fails::Upstream);
}
