//! The control thread's inbound policy client (`ringlink_control::policy::watch`) against
//! the mock controller's `InboundServerPolicies`: defaults until the first answer, updates,
//! retries, refusals, stream lifetimes and policies the proxy cannot use. No proxy binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::inbound as api;
use linkerd2_proxy_api::meta as meta_api;
use ringlink_control::policy::inbound::{Protocol, ServerPolicy};
use ringlink_control::policy::watch::{Policies, PolicyRx, StreamLimits};
use ringlink_integration::controller;
use tonic::Status;

const WORKLOAD: &str = r#"{"ns":"emojivoto","pod":"web-5f7d8"}"#;
const WAIT: Duration = Duration::from_secs(10);
const DETECT: Duration = Duration::from_secs(10);

fn client(ctrl: &controller::Controller, lifetime: Option<Duration>) -> Policies {
    client_with(
        ctrl,
        StreamLimits {
            connect_timeout: Duration::from_secs(1),
            lifetime,
            initial_timeout: None,
            idle_timeout: None,
        },
    )
}

fn client_with(ctrl: &controller::Controller, limits: StreamLimits) -> Policies {
    // The default names itself after the port, so that tests can tell it apart.
    let default = Arc::new(|port: u16| {
        let mut policy = ServerPolicy::invalid(DETECT);
        policy.meta = Arc::new(ringlink_control::policy::inbound::Meta::Default {
            name: format!("default-{port}").into(),
        });
        Arc::new(policy)
    });
    Policies::new(ctrl.policy_addr(), WORKLOAD, limits, DETECT, default)
}

/// A server resource named `name`: opaque, any client.
fn server(name: &str) -> api::Server {
    api::Server {
        protocol: Some(api::ProxyProtocol {
            kind: Some(api::proxy_protocol::Kind::Opaque(
                api::proxy_protocol::Opaque {},
            )),
        }),
        server_ips: Vec::new(),
        authorizations: Vec::new(),
        labels: HashMap::from([
            ("group".to_string(), "policy.linkerd.io".to_string()),
            ("kind".to_string(), "server".to_string()),
            ("name".to_string(), name.to_string()),
        ]),
    }
}

/// A server whose HTTP route has a path regex that does not compile.
fn broken_server() -> api::Server {
    use linkerd2_proxy_api::http_route as route;
    let mut server = server("broken");
    server.protocol = Some(api::ProxyProtocol {
        kind: Some(api::proxy_protocol::Kind::Http1(
            api::proxy_protocol::Http1 {
                routes: vec![api::HttpRoute {
                    metadata: Some(meta_api::Metadata {
                        kind: Some(meta_api::metadata::Kind::Default("broken".to_string())),
                    }),
                    hosts: Vec::new(),
                    authorizations: Vec::new(),
                    rules: vec![api::http_route::Rule {
                        matches: vec![route::HttpRouteMatch {
                            path: Some(route::PathMatch {
                                kind: Some(route::path_match::Kind::Regex("(".to_string())),
                            }),
                            ..Default::default()
                        }],
                        filters: Vec::new(),
                    }],
                }],
                local_rate_limit: None,
            },
        )),
    });
    server
}

async fn wait_for(rx: &mut PolicyRx, name: &str) -> Arc<ServerPolicy> {
    let wanted = name.to_string();
    let found = tokio::time::timeout(WAIT, rx.wait_for(|p| p.meta.name() == wanted))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|policy| policy.clone());
    found.unwrap_or_else(|| panic!("no policy named {name}; last {:?}", rx.borrow().meta))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn default_until_the_controller_answers_then_its_updates() {
    let ctrl = controller::new();
    let policies = client(&ctrl, None);
    let mut rx = policies.watch(8080);
    assert_eq!(rx.borrow().meta.name(), "default-8080");
    eventually("a WatchPort call", || ctrl.policy_calls(8080) == 1).await;
    assert_eq!(ctrl.last_workload().as_deref(), Some(WORKLOAD));
    ctrl.inbound_policy(8080, server("web-http"));
    let policy = wait_for(&mut rx, "web-http").await;
    assert!(matches!(policy.protocol, Protocol::Opaque(_)));
    ctrl.inbound_policy(8080, server("web-v2"));
    wait_for(&mut rx, "web-v2").await;
    // A second watcher of the port shares the stream.
    let second = policies.watch(8080);
    assert_eq!(second.borrow().meta.name(), "web-v2");
    assert_eq!(ctrl.policy_calls(8080), 1);
    assert_eq!(policies.active(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_stream_is_retried_and_keeps_the_last_policy() {
    let ctrl = controller::new();
    ctrl.inbound_policy(9090, server("first"));
    let policies = client(&ctrl, None);
    let mut rx = policies.watch(9090);
    wait_for(&mut rx, "first").await;
    ctrl.fail_policy_streams(9090, Status::unavailable("controller restarting"));
    eventually("a second WatchPort call", || ctrl.policy_calls(9090) >= 2).await;
    assert_eq!(rx.borrow().meta.name(), "first");
    ctrl.inbound_policy(9090, server("second"));
    wait_for(&mut rx, "second").await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_port_is_not_retried() {
    let ctrl = controller::new();
    let policies = client(&ctrl, None);
    let rx = policies.watch(7070);
    eventually("a WatchPort call", || ctrl.policy_calls(7070) == 1).await;
    ctrl.fail_policy_streams(7070, Status::invalid_argument("no such port"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ctrl.policy_calls(7070), 1);
    assert_eq!(rx.borrow().meta.name(), "default-7070");
}

#[tokio::test(flavor = "current_thread")]
async fn a_stream_is_reopened_after_its_lifetime() {
    let ctrl = controller::new();
    ctrl.inbound_policy(6060, server("lived"));
    let policies = client(&ctrl, Some(Duration::from_millis(200)));
    let mut rx = policies.watch(6060);
    wait_for(&mut rx, "lived").await;
    eventually("three WatchPort calls", || ctrl.policy_calls(6060) >= 3).await;
    assert_eq!(rx.borrow().meta.name(), "lived");
}

#[tokio::test(flavor = "current_thread")]
async fn a_policy_the_proxy_cannot_use_becomes_the_invalid_one() {
    let ctrl = controller::new();
    ctrl.inbound_policy(5050, broken_server());
    let policies = client(&ctrl, None);
    let mut rx = policies.watch(5050);
    let policy = wait_for(&mut rx, "invalid").await;
    assert!(policy.protocol.http_routes().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn the_stream_stops_when_no_one_watches() {
    let ctrl = controller::new();
    let policies = client(&ctrl, None);
    let rx = policies.watch(4040);
    eventually("a WatchPort call", || ctrl.policy_calls(4040) == 1).await;
    drop(rx);
    eventually("the port forgotten", || policies.active() == 0).await;
}

#[tokio::test(flavor = "current_thread")]
async fn silent_streams_are_reopened_within_their_bounds() {
    let ctrl = controller::new();
    let limits = StreamLimits {
        connect_timeout: Duration::from_secs(1),
        lifetime: None,
        initial_timeout: Some(Duration::from_millis(150)),
        idle_timeout: Some(Duration::from_millis(300)),
    };
    let policies = client_with(&ctrl, limits);
    // No first update: the stream is retried.
    let silent = policies.watch(3030);
    eventually("three WatchPort calls", || ctrl.policy_calls(3030) >= 3).await;
    assert_eq!(silent.borrow().meta.name(), "default-3030");
    // Updates, then silence: retried too, the policy kept.
    ctrl.inbound_policy(2020, server("kept"));
    let mut rx = policies.watch(2020);
    wait_for(&mut rx, "kept").await;
    let before = ctrl.policy_calls(2020);
    eventually("a reopened stream", || ctrl.policy_calls(2020) > before).await;
    assert_eq!(rx.borrow().meta.name(), "kept");
}
