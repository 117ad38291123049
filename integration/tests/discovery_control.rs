//! The control thread's Destination client (`ringlink_control::discovery`) against the mock
//! controller, on a tokio current-thread runtime like the control thread's. No proxy binary.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use ringlink_control::discovery::{Discovery, EndpointSet, Identity, ProtocolHint, State};
use ringlink_integration::controller::{self, weighted};
use tokio::sync::watch;
use tonic::Code;

const NAME: &str = "web.ns.svc.cluster.local:8080";
const TOKEN: &str = r#"{"ns":"test"}"#;
const WAIT: Duration = Duration::from_secs(5);

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 8080))
}

fn addrs(set: &EndpointSet) -> BTreeSet<SocketAddr> {
    set.endpoints.keys().copied().collect()
}

/// Waits (bounded) for a snapshot that satisfies `ok`; panics with the last one seen.
async fn until(
    rx: &mut watch::Receiver<Arc<EndpointSet>>,
    what: &str,
    ok: impl Fn(&EndpointSet) -> bool,
) -> Arc<EndpointSet> {
    let wait = async {
        loop {
            let set = rx.borrow_and_update().clone();
            if ok(&set) {
                return set;
            }
            rx.changed().await.expect("the resolver stopped publishing");
        }
    };
    match tokio::time::timeout(WAIT, wait).await {
        Ok(set) => set,
        Err(_) => panic!(
            "timed out waiting for {what}; last snapshot: {:?}",
            rx.borrow()
        ),
    }
}

/// Waits (bounded) until the controller has seen `n` `Get`s for `name`.
async fn until_calls(ctrl: &controller::Controller, name: &str, n: usize) {
    let wait = async {
        while ctrl.get_calls(name) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(WAIT, wait).await.is_err() {
        panic!("{name}: {} Get calls, expected {n}", ctrl.get_calls(name));
    }
}

#[tokio::test]
async fn resolves_adds_and_removes_with_increasing_versions() {
    let ctrl = controller::new();
    let dst = ctrl.destination(NAME);
    let discovery = Discovery::new(ctrl.addr(), TOKEN);
    let mut rx = discovery.watch(NAME);
    {
        let first = rx.borrow();
        assert_eq!((first.version, first.state), (0, State::Pending));
        assert!(first.endpoints.is_empty());
    }

    dst.add([addr(1), addr(2)]);
    let added = until(&mut rx, "two endpoints", |s| {
        addrs(s) == BTreeSet::from([addr(1), addr(2)])
    })
    .await;
    assert_eq!(added.state, State::Resolved);
    assert!(added.exists);
    assert!(added.version >= 1);
    assert_eq!(added.endpoints[&addr(1)].weight, 1);

    dst.remove([addr(1)]);
    let removed = until(&mut rx, "one endpoint left", |s| {
        addrs(s) == BTreeSet::from([addr(2)])
    })
    .await;
    assert!(removed.version > added.version);

    // An endpoint with everything discovery can say about it.
    let mut rich = weighted(addr(3));
    rich.weight = 10_000;
    rich.metric_labels = HashMap::from([("pod".into(), "web-3".into())]);
    rich.tls_identity = Some(pb::TlsIdentity {
        strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
            pb::tls_identity::DnsLikeIdentity {
                name: "web.ns.serviceaccount.identity.linkerd.cluster.local".into(),
            },
        )),
        server_name: None,
    });
    rich.protocol_hint = Some(pb::ProtocolHint {
        protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
        opaque_transport: Some(pb::protocol_hint::OpaqueTransport { inbound_port: 4143 }),
    });
    rich.authority_override = Some(pb::AuthorityOverride {
        authority_override: "web.other.svc.cluster.local:80".into(),
    });
    rich.http2 = Some(pb::Http2ClientParams {
        keep_alive: Some(pb::http2_client_params::KeepAlive {
            interval: Some(Duration::from_secs(10).try_into().unwrap()),
            timeout: Some(Duration::from_secs(3).try_into().unwrap()),
            while_idle: true,
        }),
        ..Default::default()
    });
    dst.add_set(pb::WeightedAddrSet {
        addrs: vec![rich],
        metric_labels: HashMap::from([
            ("namespace".into(), "ns".into()),
            ("pod".into(), "set-level".into()),
        ]),
    });
    let rich = until(&mut rx, "the third endpoint", |s| {
        s.endpoints.contains_key(&addr(3))
    })
    .await;
    assert!(rich.version > removed.version);
    assert_eq!(addrs(&rich), BTreeSet::from([addr(2), addr(3)]));
    let meta = &rich.endpoints[&addr(3)];
    assert_eq!(meta.weight, 10_000);
    assert_eq!(meta.labels["namespace"], "ns");
    assert_eq!(
        meta.labels["pod"], "web-3",
        "endpoint labels win over the set's"
    );
    let identity = meta.identity.as_ref().expect("an identity");
    assert_eq!(
        identity.identity,
        Identity::Dns("web.ns.serviceaccount.identity.linkerd.cluster.local".into())
    );
    assert_eq!(meta.protocol, ProtocolHint::H2);
    assert_eq!(meta.opaque_transport_port, Some(4143));
    assert_eq!(
        meta.authority_override.as_deref(),
        Some("web.other.svc.cluster.local:80")
    );
    let keep_alive = meta.http2.as_ref().and_then(|h| h.keep_alive).unwrap();
    assert_eq!(keep_alive.interval, Some(Duration::from_secs(10)));
    assert_eq!(keep_alive.timeout, Some(Duration::from_secs(3)));
    assert!(keep_alive.while_idle);

    assert_eq!(ctrl.get_calls(NAME), 1);
    assert_eq!(ctrl.last_context_token().as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn watchers_of_one_name_share_one_stream() {
    let ctrl = controller::new();
    let dst = ctrl.destination(NAME);
    let discovery = Discovery::new(ctrl.addr(), TOKEN);
    let mut a = discovery.watch(NAME);
    let mut b = discovery.clone().watch(NAME);
    dst.add([addr(1)]);
    let seen_a = until(&mut a, "the endpoint (a)", |s| !s.endpoints.is_empty()).await;
    let seen_b = until(&mut b, "the endpoint (b)", |s| !s.endpoints.is_empty()).await;
    assert_eq!(seen_a, seen_b);

    // A late watcher gets the current snapshot at once, from the same stream.
    let late = discovery.watch(NAME);
    assert_eq!(addrs(&late.borrow()), BTreeSet::from([addr(1)]));

    // Give a second stream (if any) time to show up at the controller.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ctrl.get_calls(NAME), 1);
    assert_eq!(discovery.active(), 1);
}

#[tokio::test]
async fn reconnects_when_the_stream_ends_and_starts_from_scratch() {
    let ctrl = controller::new();
    let first = ctrl.destination(NAME);
    let discovery = Discovery::new(ctrl.addr(), TOKEN);
    let mut rx = discovery.watch(NAME);
    first.add([addr(1), addr(2)]);
    let before = until(&mut rx, "two endpoints", |s| s.endpoints.len() == 2).await;

    // The stream ends and the controller has nothing for the retry: known endpoints stay.
    first.end_stream();
    until_calls(&ctrl, NAME, 2).await;
    assert_eq!(**rx.borrow(), *before);

    // The next stream's first update replaces the set (1 is gone, though never removed).
    let second = ctrl.destination(NAME);
    second.add([addr(2), addr(3)]);
    let after = until(&mut rx, "the new stream's endpoints", |s| {
        addrs(s) == BTreeSet::from([addr(2), addr(3)])
    })
    .await;
    assert!(after.version > before.version);
    assert_eq!(after.state, State::Resolved);
    assert!(ctrl.get_calls(NAME) >= 3);

    // A stream that fails (rather than ends) is retried too.
    let third = ctrl.destination(NAME);
    let calls = ctrl.get_calls(NAME);
    second.fail(Code::Unavailable);
    third.no_endpoints(true);
    let empty = until(&mut rx, "the third stream's answer", |s| {
        s.endpoints.is_empty()
    })
    .await;
    assert!(empty.exists);
    assert_eq!(ctrl.get_calls(NAME), calls + 1);
}

#[tokio::test]
async fn no_endpoints_says_whether_the_service_exists() {
    let ctrl = controller::new();
    let dst = ctrl.destination(NAME);
    let discovery = Discovery::new(ctrl.addr(), TOKEN);
    let mut rx = discovery.watch(NAME);
    dst.add([addr(1)]);
    until(&mut rx, "an endpoint", |s| !s.endpoints.is_empty()).await;

    dst.no_endpoints(false);
    let gone = until(&mut rx, "a service that does not exist", |s| !s.exists).await;
    assert!(gone.endpoints.is_empty());
    assert_eq!(gone.state, State::Resolved);

    dst.no_endpoints(true);
    let empty = until(&mut rx, "a service that exists", |s| s.exists).await;
    assert!(empty.endpoints.is_empty());
    assert!(empty.version > gone.version);
}

#[tokio::test]
async fn invalid_argument_falls_back_and_is_not_retried() {
    let ctrl = controller::new();
    let dst = ctrl.destination(NAME);
    let discovery = Discovery::new(ctrl.addr(), TOKEN);
    let mut rx = discovery.watch(NAME);
    dst.add([addr(1)]);
    until(&mut rx, "an endpoint", |s| !s.endpoints.is_empty()).await;

    dst.fail(Code::InvalidArgument);
    let fallback = until(&mut rx, "the fallback", |s| s.state == State::Fallback).await;
    assert!(fallback.endpoints.is_empty());

    // Longer than the first retry's backoff: no second Get.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ctrl.get_calls(NAME), 1);
    // A new watcher gets the fallback without asking again.
    let late = discovery.watch(NAME);
    assert_eq!(late.borrow().state, State::Fallback);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ctrl.get_calls(NAME), 1);
}

#[tokio::test]
async fn the_last_receiver_dropped_ends_the_stream() {
    let ctrl = controller::new();
    let dst = ctrl.destination(NAME);
    let discovery = Discovery::new(ctrl.addr(), TOKEN);
    let mut rx = discovery.watch(NAME);
    let other = discovery.watch(NAME);
    dst.add([addr(1)]);
    until(&mut rx, "an endpoint", |s| !s.endpoints.is_empty()).await;

    drop(rx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !dst.is_closed(),
        "one receiver is left; the stream must stay"
    );
    assert_eq!(discovery.active(), 1);

    drop(other);
    tokio::time::timeout(WAIT, dst.closed())
        .await
        .expect("the Get stream ends once no one watches");
    let wait = async {
        while discovery.active() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the name is forgotten");

    // Watching again asks again.
    let again = ctrl.destination(NAME);
    let mut rx = discovery.watch(NAME);
    again.add([addr(2)]);
    until(&mut rx, "the new stream's endpoint", |s| {
        addrs(s) == BTreeSet::from([addr(2)])
    })
    .await;
    assert_eq!(ctrl.get_calls(NAME), 2);
}
