//! Tests of the outbound policy model: decoding `OutboundPolicies` updates
//! ([`ClientPolicy::try_from`]) and routing requests with the decoded routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::{grpc_route as grpc_api, http_route as http_api, meta as meta_api};
use linkerd2_proxy_api::{http_types, outbound as api};

use super::*;
use crate::policy::inbound::{find, HeaderSource, MatchPath, RequestView};

// === proto builders ===

fn dur(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).expect("test duration")
}

fn ms(n: u64) -> Option<prost_types::Duration> {
    Some(dur(Duration::from_millis(n)))
}

fn secs(n: u64) -> Option<prost_types::Duration> {
    Some(dur(Duration::from_secs(n)))
}

fn negative() -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    })
}

fn resource(group: &str, kind: &str, name: &str, port: u32) -> Option<meta_api::Metadata> {
    Some(meta_api::Metadata {
        kind: Some(meta_api::metadata::Kind::Resource(meta_api::Resource {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "ns".into(),
            section: String::new(),
            port,
        })),
    })
}

fn default_meta(name: &str) -> Option<meta_api::Metadata> {
    Some(meta_api::Metadata {
        kind: Some(meta_api::metadata::Kind::Default(name.into())),
    })
}

fn queue() -> Option<api::Queue> {
    Some(api::Queue {
        capacity: 100,
        failfast_timeout: secs(3),
    })
}

/// The policy controller's backend for a Service: P2C over `Destination.Get(path)`.
fn balancer(name: &str, path: &str) -> api::Backend {
    use api::backend::{balance_p2c, endpoint_discovery, BalanceP2c, EndpointDiscovery, Kind};
    api::Backend {
        metadata: resource("core", "Service", name, 8080),
        queue: queue(),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet { path: path.into() },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: ms(30),
                decay: secs(10),
            })),
        })),
    }
}

fn route_backend(backend: api::Backend) -> api::http_route::RouteBackend {
    #[allow(deprecated)]
    api::http_route::RouteBackend {
        backend: Some(backend),
        filters: vec![],
        request_timeout: None,
    }
}

fn random(backends: Vec<(api::Backend, u32)>) -> api::http_route::Distribution {
    use api::http_route::{distribution, WeightedRouteBackend};
    api::http_route::Distribution {
        kind: Some(distribution::Kind::RandomAvailable(
            distribution::RandomAvailable {
                backends: backends
                    .into_iter()
                    .map(|(b, weight)| WeightedRouteBackend {
                        backend: Some(route_backend(b)),
                        weight,
                    })
                    .collect(),
            },
        )),
    }
}

fn first(backends: Vec<api::Backend>) -> api::http_route::Distribution {
    use api::http_route::distribution;
    api::http_route::Distribution {
        kind: Some(distribution::Kind::FirstAvailable(
            distribution::FirstAvailable {
                backends: backends.into_iter().map(route_backend).collect(),
            },
        )),
    }
}

fn web() -> api::Backend {
    balancer("web", "web.ns.svc.cluster.local:8080")
}

fn rule(
    matches: Vec<http_api::HttpRouteMatch>,
    backends: api::http_route::Distribution,
) -> api::http_route::Rule {
    #[allow(deprecated)]
    api::http_route::Rule {
        matches,
        filters: vec![],
        backends: Some(backends),
        request_timeout: None,
        timeouts: None,
        retry: None,
        allow_l5d_request_headers: false,
    }
}

fn route(name: &str, rules: Vec<api::http_route::Rule>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: resource("gateway.networking.k8s.io", "HTTPRoute", name, 0),
        hosts: vec![],
        rules,
    }
}

fn prefix(p: &str) -> http_api::HttpRouteMatch {
    http_api::HttpRouteMatch {
        path: Some(http_api::PathMatch {
            kind: Some(http_api::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

fn header(name: &str, value: &str) -> http_api::HttpRouteMatch {
    http_api::HttpRouteMatch {
        headers: vec![http_api::HeaderMatch {
            name: name.into(),
            value: Some(http_api::header_match::Value::Exact(value.into())),
        }],
        ..Default::default()
    }
}

/// The policy controller's default route for a Service: no hosts, one rule matching
/// every path, to the Service itself.
fn default_route() -> api::HttpRoute {
    api::HttpRoute {
        metadata: default_meta("http"),
        hosts: vec![],
        rules: vec![rule(vec![prefix("/")], random(vec![(web(), 1)]))],
    }
}

fn detect(routes: Vec<api::HttpRoute>, accrual: Option<api::FailureAccrual>) -> api::ProxyProtocol {
    use api::proxy_protocol::{Detect, Http1, Http2, Kind, Opaque};
    api::ProxyProtocol {
        kind: Some(Kind::Detect(Detect {
            timeout: secs(10),
            opaque: Some(Opaque { routes: vec![] }),
            http1: Some(Http1 {
                routes: routes.clone(),
                failure_accrual: accrual,
            }),
            http2: Some(Http2 {
                routes,
                failure_accrual: accrual,
            }),
        })),
    }
}

fn policy(routes: Vec<api::HttpRoute>) -> api::OutboundPolicy {
    api::OutboundPolicy {
        metadata: resource("core", "Service", "web", 8080),
        protocol: Some(detect(routes, None)),
    }
}

fn decode(p: api::OutboundPolicy) -> ClientPolicy {
    ClientPolicy::try_from(p).expect("policy decodes")
}

fn decode_err(p: api::OutboundPolicy) -> InvalidPolicy {
    ClientPolicy::try_from(p).expect_err("policy must not decode")
}

/// Decodes a policy whose one route has this one rule, and returns the rule (HTTP/1).
fn one_rule(r: api::http_route::Rule) -> HttpRule {
    let p = decode(policy(vec![route("r", vec![r])]));
    p.http_routes(false).unwrap().routes[0].rules[0].clone()
}

fn one_rule_err(r: api::http_route::Rule) -> InvalidPolicy {
    decode_err(policy(vec![route("r", vec![r])]))
}

fn backoff(min: u64, max: u64, jitter: f32) -> api::ExponentialBackoff {
    api::ExponentialBackoff {
        min_backoff: ms(min),
        max_backoff: ms(max),
        jitter_ratio: jitter,
        respect_retry_after_hint: false,
    }
}

fn consecutive(max_failures: u32, b: Option<api::ExponentialBackoff>) -> api::FailureAccrual {
    api::FailureAccrual {
        ejection: None,
        kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
            api::failure_accrual::ConsecutiveFailures {
                max_failures,
                backoff: b,
            },
        )),
    }
}

fn with_accrual(accrual: api::FailureAccrual) -> std::result::Result<ClientPolicy, InvalidPolicy> {
    ClientPolicy::try_from(api::OutboundPolicy {
        metadata: resource("core", "Service", "web", 8080),
        protocol: Some(detect(vec![default_route()], Some(accrual))),
    })
}

fn http_retry(ranges: &[(u32, u32)]) -> api::http_route::Retry {
    use api::http_route::retry::{conditions::StatusRange, Conditions};
    api::http_route::Retry {
        max_retries: 3,
        max_request_bytes: 64 * 1024,
        conditions: Some(Conditions {
            status_ranges: ranges
                .iter()
                .map(|&(start, end)| StatusRange { start, end })
                .collect(),
        }),
        timeout: ms(250),
        backoff: Some(backoff(25, 250, 1.0)),
    }
}

fn request<'a>(path: &'a str, headers: &'a dyn HeaderSource) -> RequestView<'a> {
    RequestView {
        method: "GET",
        scheme: None,
        authority: Some("web.ns.svc.cluster.local:8080"),
        path_and_query: path,
        headers,
    }
}

fn balanced_path(b: &Backend) -> &str {
    match &b.dispatcher {
        BackendDispatcher::Balance { path, .. } => path,
        other => panic!("expected a balancer, got {other:?}"),
    }
}

// === valid policies ===

#[test]
fn default_http_service_policy() {
    let p = decode(policy(vec![default_route()]));
    assert_eq!(p.parent.name(), "web");
    assert_eq!(p.parent.kind(), "Service");
    assert_eq!(p.parent.namespace(), "ns");
    assert_eq!(p.parent.port(), Some(8080));
    assert!(!p.is_opaque());
    assert!(p.grpc_routes().is_none());
    let Protocol::Detect {
        timeout,
        http1,
        http2,
    } = &p.protocol
    else {
        panic!("expected Detect, got {:?}", p.protocol);
    };
    assert_eq!(*timeout, Duration::from_secs(10));
    for routes in [http1, http2] {
        assert_eq!(routes.failure_accrual, FailureAccrual::None);
        assert_eq!(routes.routes.len(), 1);
        let route = &routes.routes[0];
        assert!(route.hosts.is_empty());
        assert_eq!(route.rules.len(), 1);
        let rule = &route.rules[0];
        assert_eq!(rule.matches.len(), 1);
        assert!(matches!(&rule.matches[0].path, Some(MatchPath::Prefix(p)) if p == "/"));
        let policy = &rule.policy;
        assert_eq!(policy.meta.name(), "http");
        assert_eq!(policy.meta.kind(), "default");
        assert!(policy.filters.is_empty());
        assert_eq!(policy.timeouts, Timeouts::default());
        assert!(policy.retry.is_none());
        assert!(!policy.allow_l5d_request_headers);
        let RouteDistribution::RandomAvailable(backends) = &policy.distribution else {
            panic!("expected RandomAvailable, got {:?}", policy.distribution);
        };
        assert_eq!(backends.len(), 1);
        let (backend, weight) = &backends[0];
        assert_eq!(*weight, 1);
        assert!(backend.filters.is_empty());
        let backend = &backend.backend;
        assert_eq!(backend.meta.name(), "web");
        assert_eq!(backend.meta.port(), Some(8080));
        assert_eq!(
            backend.queue,
            Queue {
                capacity: 100,
                failfast_timeout: Duration::from_secs(3),
            }
        );
        let BackendDispatcher::Balance { path, load } = &backend.dispatcher else {
            panic!("expected a balancer, got {:?}", backend.dispatcher);
        };
        assert_eq!(path, "web.ns.svc.cluster.local:8080");
        assert_eq!(
            *load,
            Load::PeakEwma {
                default_rtt: Duration::from_millis(30),
                decay: Duration::from_secs(10),
            }
        );
    }
    assert!(Arc::ptr_eq(
        &p.http_routes(false).unwrap().routes,
        http1_routes(&p)
    ));
}

fn http1_routes(p: &ClientPolicy) -> &Arc<[HttpRoute]> {
    match &p.protocol {
        Protocol::Detect { http1, .. } => &http1.routes,
        _ => unreachable!(),
    }
}

#[test]
fn default_route_matches_any_request() {
    let p = decode(policy(vec![default_route()]));
    let routes = &p.http_routes(true).unwrap().routes;
    let none: Vec<(&str, &str)> = vec![];
    for path in ["/", "/api/v1/users?x=1", "/index.html"] {
        let (_, policy) = find(routes, &request(path, &none)).expect("default route matches");
        assert_eq!(policy.meta.name(), "http");
    }
}

#[test]
fn weighted_split() {
    let canary = balancer("web-canary", "web-canary.ns.svc.cluster.local:8080");
    let r = one_rule(rule(vec![], random(vec![(web(), 90), (canary, 10)])));
    let RouteDistribution::RandomAvailable(backends) = &r.policy.distribution else {
        panic!("expected RandomAvailable");
    };
    let split: Vec<_> = backends
        .iter()
        .map(|(b, w)| (b.backend.meta.name().to_string(), *w))
        .collect();
    assert_eq!(
        split,
        [("web".to_string(), 90), ("web-canary".to_string(), 10)]
    );
    assert_eq!(
        balanced_path(&backends[1].0.backend),
        "web-canary.ns.svc.cluster.local:8080"
    );
    // A zero weight is kept (the backend is never drawn).
    let r = one_rule(rule(vec![], random(vec![(web(), 0)])));
    assert!(matches!(&r.policy.distribution,
        RouteDistribution::RandomAvailable(b) if b[0].1 == 0));
}

#[test]
fn first_available_and_empty() {
    let other = balancer("other", "other.ns.svc.cluster.local:80");
    let r = one_rule(rule(vec![], first(vec![web(), other])));
    let RouteDistribution::FirstAvailable(backends) = &r.policy.distribution else {
        panic!("expected FirstAvailable");
    };
    assert_eq!(backends.len(), 2);
    assert_eq!(
        balanced_path(&backends[0].backend),
        "web.ns.svc.cluster.local:8080"
    );
    assert_eq!(
        balanced_path(&backends[1].backend),
        "other.ns.svc.cluster.local:80"
    );

    let empty = api::http_route::Distribution {
        kind: Some(api::http_route::distribution::Kind::Empty(
            api::http_route::distribution::Empty {},
        )),
    };
    let r = one_rule(rule(vec![], empty));
    assert!(matches!(r.policy.distribution, RouteDistribution::Empty));
}

#[test]
fn header_and_path_matches_route_requests() {
    let canary = balancer("web-canary", "web-canary.ns.svc.cluster.local:8080");
    let routes = vec![
        route(
            "canary",
            vec![rule(
                vec![http_api::HttpRouteMatch {
                    headers: header("x-canary", "true").headers,
                    ..prefix("/api")
                }],
                random(vec![(canary, 1)]),
            )],
        ),
        route(
            "api",
            vec![rule(vec![prefix("/api")], random(vec![(web(), 1)]))],
        ),
        route(
            "tenant",
            vec![rule(
                vec![header("x-tenant", "blue")],
                random(vec![(web(), 1)]),
            )],
        ),
    ];
    let p = decode(policy(routes));
    let routes = &p.http_routes(false).unwrap().routes;
    let route_of = |path: &str, headers: Vec<(&str, &str)>| {
        find(routes, &request(path, &headers)).map(|(_, p)| p.meta.name().to_string())
    };
    assert_eq!(
        route_of("/api/users", vec![("x-canary", "true")]).as_deref(),
        Some("canary")
    );
    assert_eq!(
        route_of("/api/users", vec![("X-Canary", "true")]).as_deref(),
        Some("canary")
    );
    assert_eq!(
        route_of("/api/users", vec![("x-canary", "false")]).as_deref(),
        Some("api")
    );
    assert_eq!(route_of("/api", vec![]).as_deref(), Some("api"));
    // Prefixes match whole segments.
    assert_eq!(
        route_of("/apiv2", vec![("x-tenant", "blue")]).as_deref(),
        Some("tenant")
    );
    assert_eq!(route_of("/apiv2", vec![]), None);
    // The canary route's backend is the canary Service.
    let (_, policy) = find(routes, &request("/api", &vec![("x-canary", "true")])).unwrap();
    let RouteDistribution::RandomAvailable(b) = &policy.distribution else {
        panic!("expected RandomAvailable");
    };
    assert_eq!(b[0].0.backend.meta.name(), "web-canary");
}

#[test]
fn rule_without_matches_matches_everything() {
    let p = decode(policy(vec![route(
        "all",
        vec![rule(vec![], random(vec![(web(), 1)]))],
    )]));
    let routes = &p.http_routes(false).unwrap().routes;
    assert!(routes[0].rules[0].matches.is_empty());
    let h = vec![("x-any", "1")];
    assert!(find(routes, &request("/whatever", &h)).is_some());
}

#[test]
fn hosts_are_decoded() {
    let mut r = route("hosts", vec![rule(vec![], random(vec![(web(), 1)]))]);
    r.hosts = vec![http_api::HostMatch {
        r#match: Some(http_api::host_match::Match::Exact("web.example.com".into())),
    }];
    let p = decode(policy(vec![r]));
    let routes = &p.http_routes(false).unwrap().routes;
    assert_eq!(routes[0].hosts.len(), 1);
    let h: Vec<(&str, &str)> = vec![];
    let view = |authority| RequestView {
        authority: Some(authority),
        ..request("/", &h)
    };
    assert!(find(routes, &view("web.example.com")).is_some());
    assert!(find(routes, &view("other.example.com")).is_none());
}

#[test]
fn timeouts() {
    let mut r = rule(vec![], random(vec![(web(), 1)]));
    r.timeouts = Some(http_api::Timeouts {
        response: ms(500),
        request: secs(2),
        idle: secs(30),
    });
    assert_eq!(
        one_rule(r).policy.timeouts,
        Timeouts {
            request: Some(Duration::from_secs(2)),
            response: Some(Duration::from_millis(500)),
            idle: Some(Duration::from_secs(30)),
        }
    );
}

#[test]
#[allow(deprecated)]
fn legacy_request_timeout_stands_in_for_request() {
    // As linkerd2-proxy's `try_rule`: `timeouts.request.or(request_timeout)`.
    let mut r = rule(vec![], random(vec![(web(), 1)]));
    r.request_timeout = secs(5);
    assert_eq!(
        one_rule(r.clone()).policy.timeouts,
        Timeouts {
            request: Some(Duration::from_secs(5)),
            ..Timeouts::default()
        }
    );
    // Alongside timeouts without a request timeout.
    r.timeouts = Some(http_api::Timeouts {
        response: ms(100),
        ..Default::default()
    });
    assert_eq!(
        one_rule(r.clone()).policy.timeouts,
        Timeouts {
            request: Some(Duration::from_secs(5)),
            response: Some(Duration::from_millis(100)),
            idle: None,
        }
    );
    // The new field wins.
    r.timeouts = Some(http_api::Timeouts {
        request: secs(1),
        ..Default::default()
    });
    assert_eq!(
        one_rule(r).policy.timeouts.request,
        Some(Duration::from_secs(1))
    );
}

#[test]
fn http_retry_policy() {
    let mut r = rule(vec![], random(vec![(web(), 1)]));
    r.retry = Some(http_retry(&[(500, 504), (429, 429)]));
    r.allow_l5d_request_headers = true;
    let policy = one_rule(r).policy;
    assert!(policy.allow_l5d_request_headers);
    let retry = policy.retry.expect("retry");
    assert_eq!(retry.max_retries, 3);
    assert_eq!(retry.max_request_bytes, 64 * 1024);
    assert_eq!(retry.timeout, Some(Duration::from_millis(250)));
    assert_eq!(
        retry.backoff,
        Some(Backoff {
            min: Duration::from_millis(25),
            max: Duration::from_millis(250),
            jitter: 1.0,
        })
    );
    assert!(matches!(&retry.conditions,
        RetryConditions::Http(r) if r == &[(500, 504), (429, 429)]));
    assert!(retry.retries(503, None));
    assert!(retry.retries(429, None));
    assert!(!retry.retries(505, None));
    assert!(!retry.retries(200, None));
}

#[test]
fn grpc_policy() {
    use api::grpc_route::{distribution, retry::Conditions, Distribution, RouteBackend};
    #[allow(deprecated)]
    let rule = api::grpc_route::Rule {
        matches: vec![grpc_api::GrpcRouteMatch {
            rpc: Some(grpc_api::GrpcRpcMatch {
                service: "echo.Echo".into(),
                method: "Say".into(),
            }),
            headers: vec![],
        }],
        filters: vec![
            api::grpc_route::Filter {
                kind: Some(api::grpc_route::filter::Kind::FailureInjector(
                    grpc_api::GrpcFailureInjector {
                        code: 14,
                        message: "chaos".into(),
                        ratio: None,
                    },
                )),
            },
            api::grpc_route::Filter { kind: None },
        ],
        backends: Some(Distribution {
            kind: Some(distribution::Kind::FirstAvailable(
                distribution::FirstAvailable {
                    backends: vec![RouteBackend {
                        backend: Some(balancer("echo", "echo.ns.svc.cluster.local:8080")),
                        filters: vec![],
                        request_timeout: None,
                    }],
                },
            )),
        }),
        request_timeout: secs(3),
        timeouts: None,
        retry: Some(api::grpc_route::Retry {
            max_retries: 70_000,
            max_request_bytes: 1024,
            conditions: Some(Conditions {
                cancelled: true,
                deadine_exceeded: true,
                resource_exhausted: true,
                internal: true,
                unavailable: true,
            }),
            timeout: None,
            backoff: None,
        }),
        allow_l5d_request_headers: false,
    };
    let p = decode(api::OutboundPolicy {
        metadata: resource("core", "Service", "echo", 8080),
        protocol: Some(api::ProxyProtocol {
            kind: Some(api::proxy_protocol::Kind::Grpc(api::proxy_protocol::Grpc {
                routes: vec![api::GrpcRoute {
                    metadata: resource("gateway.networking.k8s.io", "GRPCRoute", "echo", 0),
                    hosts: vec![],
                    rules: vec![rule],
                }],
                failure_accrual: Some(consecutive(5, Some(backoff(100, 1000, 0.5)))),
            })),
        }),
    });
    assert!(p.http_routes(false).is_none());
    assert!(!p.is_opaque());
    let grpc = p.grpc_routes().expect("gRPC routes");
    assert!(matches!(
        grpc.failure_accrual,
        FailureAccrual::ConsecutiveFailures {
            max_failures: 5,
            ..
        }
    ));
    let policy = &grpc.routes[0].rules[0].policy;
    assert_eq!(policy.meta.name(), "echo");
    assert_eq!(policy.timeouts.request, Some(Duration::from_secs(3)));
    assert!(matches!(&policy.filters[0],
        GrpcFilter::InjectFailure(f) if f.response.code == 14 && &*f.response.message == "chaos"));
    assert!(matches!(policy.filters[1], GrpcFilter::InternalError(_)));
    let retry = policy.retry.as_ref().expect("retry");
    // gRPC retries take any u32 (linkerd2-proxy's `grpc.rs` casts it).
    assert_eq!(retry.max_retries, 70_000);
    assert!(matches!(&retry.conditions,
        RetryConditions::Grpc(c) if c == &[1, 4, 8, 13, 14]));
    assert!(retry.retries(200, Some(14)));
    assert!(!retry.retries(503, None));
    assert!(!retry.retries(200, Some(2)));

    // The decoded route matches its RPC only.
    let h: Vec<(&str, &str)> = vec![];
    let rpc = |path| RequestView {
        method: "POST",
        ..request(path, &h)
    };
    assert!(find(&grpc.routes, &rpc("/echo.Echo/Say")).is_some());
    assert!(find(&grpc.routes, &rpc("/echo.Echo/Other")).is_none());
}

#[test]
fn grpc_retry_conditions_subset() {
    use api::grpc_route::retry::Conditions;
    let mut p = api::OutboundPolicy {
        metadata: resource("core", "Service", "echo", 8080),
        protocol: None,
    };
    #[allow(deprecated)]
    let rule = api::grpc_route::Rule {
        matches: vec![],
        filters: vec![],
        backends: Some(api::grpc_route::Distribution {
            kind: Some(api::grpc_route::distribution::Kind::Empty(
                api::grpc_route::distribution::Empty {},
            )),
        }),
        request_timeout: None,
        timeouts: None,
        retry: Some(api::grpc_route::Retry {
            max_retries: 1,
            max_request_bytes: 0,
            conditions: Some(Conditions {
                unavailable: true,
                deadine_exceeded: true,
                ..Default::default()
            }),
            timeout: ms(100),
            backoff: None,
        }),
        allow_l5d_request_headers: false,
    };
    p.protocol = Some(api::ProxyProtocol {
        kind: Some(api::proxy_protocol::Kind::Grpc(api::proxy_protocol::Grpc {
            routes: vec![api::GrpcRoute {
                metadata: default_meta("grpc"),
                hosts: vec![],
                rules: vec![rule.clone()],
            }],
            failure_accrual: None,
        })),
    });
    let decoded = decode(p.clone());
    let retry = decoded.grpc_routes().unwrap().routes[0].rules[0]
        .policy
        .retry
        .clone()
        .unwrap();
    assert!(matches!(&retry.conditions, RetryConditions::Grpc(c) if c == &[4, 14]));
    assert_eq!(retry.timeout, Some(Duration::from_millis(100)));

    // Without conditions the retry is invalid.
    let mut bad = rule;
    bad.retry.as_mut().unwrap().conditions = None;
    if let Some(api::proxy_protocol::Kind::Grpc(g)) =
        p.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        g.routes[0].rules = vec![bad];
    }
    assert!(matches!(decode_err(p), InvalidPolicy::RetryCondition));
}

#[test]
fn filters() {
    let mut r = rule(vec![], random(vec![(web(), 1)]));
    let headers = |name: &str, value: &str| {
        Some(http_types::Headers {
            headers: vec![http_types::headers::Header {
                name: name.into(),
                value: value.into(),
            }],
        })
    };
    use api::http_route::{filter::Kind, Filter};
    r.filters = vec![
        Filter {
            kind: Some(Kind::RequestHeaderModifier(
                http_api::RequestHeaderModifier {
                    add: headers("x-added", "1"),
                    set: None,
                    remove: vec!["x-secret".into()],
                },
            )),
        },
        Filter {
            kind: Some(Kind::ResponseHeaderModifier(
                http_api::ResponseHeaderModifier {
                    add: None,
                    set: headers("x-served-by", "web"),
                    remove: vec![],
                },
            )),
        },
        Filter {
            kind: Some(Kind::FailureInjector(http_api::HttpFailureInjector {
                status: 503,
                message: "injected".into(),
                ratio: None,
            })),
        },
        Filter {
            kind: Some(Kind::Redirect(http_api::RequestRedirect {
                scheme: None,
                host: "example.com".into(),
                path: None,
                port: 0,
                status: 302,
            })),
        },
        Filter { kind: None },
    ];
    // A route backend's filters decode the same way.
    if let Some(api::http_route::distribution::Kind::RandomAvailable(ra)) =
        r.backends.as_mut().and_then(|d| d.kind.as_mut())
    {
        ra.backends[0].backend.as_mut().unwrap().filters = vec![Filter {
            kind: Some(Kind::RequestHeaderModifier(
                http_api::RequestHeaderModifier {
                    set: headers("x-backend", "web"),
                    ..Default::default()
                },
            )),
        }];
    }
    let policy = one_rule(r).policy;
    let f = &policy.filters;
    assert_eq!(f.len(), 5);
    assert!(matches!(&f[0], HttpFilter::RequestHeaders(m)
        if m.add.len() == 1 && m.add[0].0 == "x-added" && m.remove.len() == 1 && m.remove[0] == "x-secret"));
    assert!(matches!(&f[1], HttpFilter::ResponseHeaders(m)
        if m.add.is_empty() && m.set.len() == 1 && m.set[0].0 == "x-served-by" && m.set[0].1 == "web"));
    assert!(matches!(&f[2], HttpFilter::InjectFailure(i)
        if i.response.status == 503 && &*i.response.message == "injected"));
    assert!(matches!(&f[3], HttpFilter::Redirect(_)));
    assert!(matches!(&f[4], HttpFilter::InternalError(_)));
    let RouteDistribution::RandomAvailable(b) = &policy.distribution else {
        panic!("expected RandomAvailable");
    };
    assert!(
        matches!(&b[0].0.filters[..], [HttpFilter::RequestHeaders(m)]
        if m.set[0].0 == "x-backend")
    );
}

#[test]
fn forward_backend() {
    let addr: SocketAddr = "10.1.2.3:8080".parse().unwrap();
    let backend = api::Backend {
        metadata: resource("core", "Service", "db", 8080),
        queue: queue(),
        kind: Some(api::backend::Kind::Forward(
            linkerd2_proxy_api::destination::WeightedAddr {
                addr: Some(addr.into()),
                weight: 7,
                ..Default::default()
            },
        )),
    };
    let r = one_rule(rule(vec![], first(vec![backend.clone()])));
    let RouteDistribution::FirstAvailable(b) = &r.policy.distribution else {
        panic!("expected FirstAvailable");
    };
    let BackendDispatcher::Forward(a, meta) = &b[0].backend.dispatcher else {
        panic!("expected Forward, got {:?}", b[0].backend.dispatcher);
    };
    assert_eq!(*a, addr);
    assert_eq!(meta.weight, 7);
    assert_eq!(b[0].backend.meta.name(), "db");

    // A forward without an address is invalid.
    let mut bad = backend;
    bad.kind = Some(api::backend::Kind::Forward(Default::default()));
    assert!(matches!(
        one_rule_err(rule(vec![], first(vec![bad]))),
        InvalidPolicy::ForwardAddr
    ));
}

#[test]
fn backend_without_dispatcher_fails_requests() {
    let mut b = web();
    b.kind = None;
    let r = one_rule(rule(vec![], first(vec![b])));
    let RouteDistribution::FirstAvailable(b) = &r.policy.distribution else {
        panic!("expected FirstAvailable");
    };
    let BackendDispatcher::Fail { message } = &b[0].backend.dispatcher else {
        panic!("expected Fail");
    };
    assert_eq!(&**message, "backend for Service ns/web has no dispatcher");
}

#[test]
fn penalty_peak_ewma_defaults() {
    use api::backend::{balance_p2c, Kind};
    let mut b = web();
    let Some(Kind::Balancer(p2c)) = b.kind.as_mut() else {
        unreachable!()
    };
    p2c.load = Some(balance_p2c::Load::PenaltyPeakEwma(
        balance_p2c::PenaltyPeakEwma {
            default_rtt: None,
            decay: secs(20),
            penalty: None,
            max_retry_after: None,
            penalty_decay: None,
        },
    ));
    let r = one_rule(rule(vec![], first(vec![b.clone()])));
    let RouteDistribution::FirstAvailable(backends) = &r.policy.distribution else {
        panic!("expected FirstAvailable");
    };
    assert!(matches!(
        backends[0].backend.dispatcher,
        BackendDispatcher::Balance {
            load: Load::PenaltyPeakEwma {
                default_rtt,
                decay,
                penalty,
            },
            ..
        } if default_rtt == Duration::from_millis(30)
            && decay == Duration::from_secs(20)
            && penalty == Duration::from_secs(5)
    ));
    // A present but invalid value is an error, not the default.
    let Some(Kind::Balancer(p2c)) = b.kind.as_mut() else {
        unreachable!()
    };
    if let Some(balance_p2c::Load::PenaltyPeakEwma(p)) = p2c.load.as_mut() {
        p.penalty = negative();
    }
    assert!(matches!(
        one_rule_err(rule(vec![], first(vec![b]))),
        InvalidPolicy::Duration(_)
    ));
}

#[test]
fn failure_accrual() {
    let b = || Some(backoff(1000, 60_000, 0.5));
    let p = with_accrual(consecutive(7, b())).unwrap();
    let expected = FailureAccrual::ConsecutiveFailures {
        max_failures: 7,
        backoff: Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.5,
        },
    };
    assert_eq!(p.http_routes(false).unwrap().failure_accrual, expected);
    assert_eq!(p.http_routes(true).unwrap().failure_accrual, expected);

    // Zero failures: no breaker.
    let p = with_accrual(consecutive(0, b())).unwrap();
    assert_eq!(
        p.http_routes(false).unwrap().failure_accrual,
        FailureAccrual::None
    );

    // A consecutive-failures accrual needs its backoff, valid.
    assert!(matches!(
        with_accrual(consecutive(7, None)).unwrap_err(),
        InvalidPolicy::Missing(_)
    ));
    assert!(matches!(
        with_accrual(consecutive(7, Some(backoff(10, 1, 0.0)))).unwrap_err(),
        InvalidPolicy::Backoff(_)
    ));

    // An accrual needs a kind.
    let no_kind = api::FailureAccrual {
        ejection: None,
        kind: None,
    };
    assert!(matches!(
        with_accrual(no_kind).unwrap_err(),
        InvalidPolicy::Missing(_)
    ));
}

#[test]
fn unified_failure_accrual_keeps_its_consecutive_part() {
    let unified = |max: u32, b: Option<api::ExponentialBackoff>| api::FailureAccrual {
        ejection: Some(api::EjectionConfig {
            min_ready_endpoints: 1,
        }),
        kind: Some(api::failure_accrual::Kind::Unified(
            api::failure_accrual::Unified {
                success_rate_threshold: 0.9,
                decay: secs(30),
                min_requests: 20,
                max_consecutive_failures: max,
                backoff: b,
            },
        )),
    };
    let p = with_accrual(unified(4, Some(backoff(100, 1000, 0.0)))).unwrap();
    assert_eq!(
        p.http_routes(false).unwrap().failure_accrual,
        FailureAccrual::ConsecutiveFailures {
            max_failures: 4,
            backoff: Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_millis(1000),
                jitter: 0.0,
            },
        }
    );
    for accrual in [unified(0, Some(backoff(100, 1000, 0.0))), unified(4, None)] {
        let p = with_accrual(accrual).unwrap();
        assert_eq!(
            p.http_routes(false).unwrap().failure_accrual,
            FailureAccrual::None
        );
    }
    assert!(matches!(
        with_accrual(unified(4, Some(backoff(100, 1000, 101.0)))).unwrap_err(),
        InvalidPolicy::Backoff(_)
    ));
}

#[test]
fn protocols() {
    use api::proxy_protocol::{Http1, Http2, Kind, Opaque, Tls};
    let with = |kind| api::OutboundPolicy {
        metadata: resource("core", "Service", "web", 8080),
        protocol: Some(api::ProxyProtocol { kind: Some(kind) }),
    };
    let p = decode(with(Kind::Http1(Http1 {
        routes: vec![default_route()],
        failure_accrual: None,
    })));
    assert!(matches!(&p.protocol, Protocol::Http1(r) if r.routes.len() == 1));
    assert!(p.http_routes(true).is_some());
    let p = decode(with(Kind::Http2(Http2 {
        routes: vec![default_route(), default_route()],
        failure_accrual: Some(consecutive(3, Some(backoff(1, 2, 0.0)))),
    })));
    assert!(matches!(&p.protocol, Protocol::Http2(r)
        if r.routes.len() == 2 && r.failure_accrual != FailureAccrual::None));
    let p = decode(with(Kind::Opaque(Opaque { routes: vec![] })));
    assert!(matches!(p.protocol, Protocol::Opaque));
    assert!(p.is_opaque());
    assert!(p.http_routes(false).is_none());
    let p = decode(with(Kind::Tls(Tls { routes: vec![] })));
    assert!(matches!(p.protocol, Protocol::Tls));
    assert!(p.is_opaque());

    // Detect's opaque part may be absent.
    let mut d = detect(vec![], None);
    if let Some(Kind::Detect(d)) = d.kind.as_mut() {
        d.opaque = None;
    }
    let p = decode(api::OutboundPolicy {
        protocol: Some(d),
        ..policy(vec![])
    });
    assert!(matches!(&p.protocol, Protocol::Detect { http1, .. } if http1.routes.is_empty()));
}

#[test]
fn default_parent_meta() {
    let p = decode(api::OutboundPolicy {
        metadata: default_meta("egress"),
        ..policy(vec![])
    });
    assert_eq!(p.parent.name(), "egress");
    assert_eq!(p.parent.kind(), "default");
}

// === invalid policies ===

#[test]
fn invalid_policy_and_protocol() {
    let mut p = policy(vec![default_route()]);
    p.metadata = None;
    assert!(matches!(
        decode_err(p),
        InvalidPolicy::Missing("policy metadata")
    ));

    let mut p = policy(vec![]);
    p.metadata = Some(meta_api::Metadata { kind: None });
    assert!(matches!(decode_err(p), InvalidPolicy::Meta(_)));

    let mut p = policy(vec![]);
    p.protocol = None;
    assert!(matches!(decode_err(p), InvalidPolicy::Missing("protocol")));

    let mut p = policy(vec![]);
    p.protocol = Some(api::ProxyProtocol { kind: None });
    assert!(matches!(
        decode_err(p),
        InvalidPolicy::Missing("protocol kind")
    ));

    let detect_with = |f: &dyn Fn(&mut api::proxy_protocol::Detect)| {
        let mut p = policy(vec![]);
        if let Some(api::proxy_protocol::Kind::Detect(d)) =
            p.protocol.as_mut().and_then(|p| p.kind.as_mut())
        {
            f(d);
        }
        decode_err(p)
    };
    assert!(matches!(
        detect_with(&|d| d.timeout = None),
        InvalidPolicy::Missing(_)
    ));
    assert!(matches!(
        detect_with(&|d| d.timeout = negative()),
        InvalidPolicy::Duration(_)
    ));
    assert!(matches!(
        detect_with(&|d| d.http1 = None),
        InvalidPolicy::Missing("Detect HTTP/1")
    ));
    assert!(matches!(
        detect_with(&|d| d.http2 = None),
        InvalidPolicy::Missing("Detect HTTP/2")
    ));
}

#[test]
fn invalid_routes() {
    let mut r = route("r", vec![rule(vec![], random(vec![(web(), 1)]))]);
    r.metadata = None;
    assert!(matches!(
        decode_err(policy(vec![r])),
        InvalidPolicy::Missing("route metadata")
    ));

    let mut r = route("r", vec![]);
    r.hosts = vec![http_api::HostMatch { r#match: None }];
    assert!(matches!(
        decode_err(policy(vec![r])),
        InvalidPolicy::Match(_)
    ));

    let bad_header = rule(vec![header("bad header", "x")], random(vec![(web(), 1)]));
    assert!(matches!(one_rule_err(bad_header), InvalidPolicy::Match(_)));

    let bad_regex = http_api::HttpRouteMatch {
        path: Some(http_api::PathMatch {
            kind: Some(http_api::path_match::Kind::Regex("(".into())),
        }),
        ..Default::default()
    };
    assert!(matches!(
        one_rule_err(rule(vec![bad_regex], random(vec![(web(), 1)]))),
        InvalidPolicy::Match(_)
    ));

    let mut bad_filter = rule(vec![], random(vec![(web(), 1)]));
    bad_filter.filters = vec![api::http_route::Filter {
        kind: Some(api::http_route::filter::Kind::FailureInjector(
            http_api::HttpFailureInjector {
                status: 1000,
                message: String::new(),
                ratio: None,
            },
        )),
    }];
    assert!(matches!(one_rule_err(bad_filter), InvalidPolicy::Filter(_)));

    let mut bad_response_header = rule(vec![], random(vec![(web(), 1)]));
    bad_response_header.filters = vec![api::http_route::Filter {
        kind: Some(api::http_route::filter::Kind::ResponseHeaderModifier(
            http_api::ResponseHeaderModifier {
                remove: vec!["bad header".into()],
                ..Default::default()
            },
        )),
    }];
    assert!(matches!(
        one_rule_err(bad_response_header),
        InvalidPolicy::Filter(_)
    ));
}

#[test]
fn invalid_distributions() {
    let mut r = rule(vec![], random(vec![]));
    assert!(matches!(
        one_rule_err(r.clone()),
        InvalidPolicy::EmptyDistribution("RandomAvailable")
    ));
    r.backends = Some(first(vec![]));
    assert!(matches!(
        one_rule_err(r.clone()),
        InvalidPolicy::EmptyDistribution("FirstAvailable")
    ));
    r.backends = None;
    assert!(matches!(
        one_rule_err(r.clone()),
        InvalidPolicy::Missing("distribution")
    ));
    r.backends = Some(api::http_route::Distribution { kind: None });
    assert!(matches!(
        one_rule_err(r.clone()),
        InvalidPolicy::Missing("distribution kind")
    ));
    // A weighted entry without its route backend, a route backend without its backend.
    r.backends = Some(random(vec![(web(), 1)]));
    if let Some(api::http_route::distribution::Kind::RandomAvailable(ra)) =
        r.backends.as_mut().and_then(|d| d.kind.as_mut())
    {
        ra.backends[0].backend = None;
    }
    assert!(matches!(
        one_rule_err(r.clone()),
        InvalidPolicy::Missing("route backend")
    ));
    r.backends = Some(random(vec![(web(), 1)]));
    if let Some(api::http_route::distribution::Kind::RandomAvailable(ra)) =
        r.backends.as_mut().and_then(|d| d.kind.as_mut())
    {
        ra.backends[0].backend.as_mut().unwrap().backend = None;
    }
    assert!(matches!(one_rule_err(r), InvalidPolicy::Missing("backend")));
}

#[test]
fn invalid_backends() {
    use api::backend::{balance_p2c, Kind};
    fn p2c(b: &mut api::Backend) -> &mut api::backend::BalanceP2c {
        match b.kind.as_mut() {
            Some(Kind::Balancer(p)) => p,
            _ => unreachable!(),
        }
    }
    let bad = |f: &dyn Fn(&mut api::Backend)| {
        let mut b = web();
        f(&mut b);
        one_rule_err(rule(vec![], random(vec![(b, 1)])))
    };
    assert!(matches!(
        bad(&|b| b.metadata = None),
        InvalidPolicy::Missing("backend metadata")
    ));
    assert!(matches!(
        bad(&|b| b.queue = None),
        InvalidPolicy::Missing("queue")
    ));
    assert!(matches!(
        bad(&|b| b.queue.as_mut().unwrap().failfast_timeout = None),
        InvalidPolicy::Missing(_)
    ));
    assert!(matches!(
        bad(&|b| b.queue.as_mut().unwrap().failfast_timeout = negative()),
        InvalidPolicy::Duration(_)
    ));
    assert!(matches!(
        bad(&|b| p2c(b).discovery = None),
        InvalidPolicy::Missing("balancer discovery")
    ));
    assert!(matches!(
        bad(&|b| p2c(b).discovery.as_mut().unwrap().kind = None),
        InvalidPolicy::Missing("balancer discovery kind")
    ));
    assert!(matches!(
        bad(&|b| p2c(b).load = None),
        InvalidPolicy::Missing("balancer load")
    ));
    assert!(matches!(
        bad(&|b| {
            p2c(b).load = Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: None,
                decay: secs(10),
            }))
        }),
        InvalidPolicy::Missing(_)
    ));
    assert!(matches!(
        bad(&|b| {
            p2c(b).load = Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: ms(30),
                decay: negative(),
            }))
        }),
        InvalidPolicy::Duration(_)
    ));
}

#[test]
fn invalid_timeouts() {
    for t in [
        http_api::Timeouts {
            response: negative(),
            ..Default::default()
        },
        http_api::Timeouts {
            request: negative(),
            ..Default::default()
        },
        http_api::Timeouts {
            idle: negative(),
            ..Default::default()
        },
    ] {
        let mut r = rule(vec![], random(vec![(web(), 1)]));
        r.timeouts = Some(t);
        assert!(matches!(one_rule_err(r), InvalidPolicy::Duration(_)));
    }
    let mut r = rule(vec![], random(vec![(web(), 1)]));
    #[allow(deprecated)]
    {
        r.request_timeout = negative();
    }
    assert!(matches!(one_rule_err(r), InvalidPolicy::Duration(_)));
}

#[test]
fn invalid_retries() {
    let with = |retry: api::http_route::Retry| {
        let mut r = rule(vec![], random(vec![(web(), 1)]));
        r.retry = Some(retry);
        one_rule_err(r)
    };
    // Inverted, zero and out-of-range status ranges (linkerd2-proxy's `http.rs`).
    for ranges in [[(504, 500)], [(0, 500)], [(500, 600)], [(70_000, 70_000)]] {
        assert!(
            matches!(with(http_retry(&ranges)), InvalidPolicy::RetryCondition),
            "{ranges:?}"
        );
    }
    let mut r = http_retry(&[(500, 599)]);
    r.conditions = None;
    assert!(matches!(with(r), InvalidPolicy::RetryCondition));

    let mut r = http_retry(&[(500, 599)]);
    r.max_retries = 70_000;
    assert!(matches!(with(r), InvalidPolicy::MaxRetries(70_000)));

    let mut r = http_retry(&[(500, 599)]);
    r.timeout = negative();
    assert!(matches!(with(r), InvalidPolicy::Duration(_)));

    // Backoffs, as `linkerd_exp_backoff::ExponentialBackoff::try_new` checks them.
    for b in [
        backoff(100, 10, 0.0),
        backoff(0, 0, 0.0),
        backoff(1, 10, -0.1),
        backoff(1, 10, 100.5),
        backoff(1, 10, f32::NAN),
        backoff(1, 10, f32::INFINITY),
    ] {
        let mut r = http_retry(&[(500, 599)]);
        r.backoff = Some(b);
        assert!(matches!(with(r), InvalidPolicy::Backoff(_)), "{b:?}");
    }
    let mut r = http_retry(&[(500, 599)]);
    r.backoff = Some(api::ExponentialBackoff {
        min_backoff: None,
        ..backoff(1, 10, 0.0)
    });
    assert!(matches!(with(r), InvalidPolicy::Missing(_)));
    let mut r = http_retry(&[(500, 599)]);
    r.backoff = Some(api::ExponentialBackoff {
        max_backoff: negative(),
        ..backoff(1, 10, 0.0)
    });
    assert!(matches!(with(r), InvalidPolicy::Duration(_)));

    // The bounds themselves are valid.
    let mut r = rule(vec![], random(vec![(web(), 1)]));
    let mut retry = http_retry(&[(1, 599)]);
    retry.max_retries = u32::from(u16::MAX);
    retry.backoff = Some(backoff(10, 10, 100.0));
    r.retry = Some(retry);
    let retry = one_rule(r).policy.retry.unwrap();
    assert_eq!(retry.max_retries, 65_535);
}

#[test]
fn errors_are_described() {
    let mut p = policy(vec![]);
    p.protocol = None;
    assert_eq!(decode_err(p).to_string(), "missing protocol");
    let mut r = rule(vec![], random(vec![(web(), 1)]));
    r.retry = Some(http_retry(&[(504, 500)]));
    assert_eq!(one_rule_err(r).to_string(), "invalid retry condition");
}

// === the invalid policy ===

#[test]
fn invalid_policy_fails_every_request() {
    let p = ClientPolicy::invalid(Duration::from_secs(10));
    assert!(
        matches!(p.protocol, Protocol::Detect { timeout, .. } if timeout == Duration::from_secs(10))
    );
    for http2 in [false, true] {
        let routes = &p.http_routes(http2).unwrap().routes;
        let h: Vec<(&str, &str)> = vec![];
        let (_, policy) = find(routes, &request("/anything", &h)).expect("catch-all");
        assert!(matches!(
            &policy.filters[..],
            [HttpFilter::InternalError(_)]
        ));
        assert!(matches!(policy.distribution, RouteDistribution::Empty));
    }
}
