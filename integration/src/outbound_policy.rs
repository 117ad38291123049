//! Builders of `OutboundPolicies` answers for tests, shaped like what Linkerd's policy
//! controller sends for an HTTP Service (`policy-controller/grpc/src/outbound.rs`): a
//! `Detect` protocol (10 s) with the same routes for HTTP/1 and HTTP/2, backends balanced
//! over `Destination.Get(path)` with PeakEWMA (30 ms, 10 s) and a queue of 100 with a 3 s
//! failfast timeout.

use std::net::SocketAddr;
use std::time::Duration;

use linkerd2_proxy_api::{http_route, meta, outbound as pb};

type Filter = pb::http_route::Filter;

/// A Kubernetes resource's metadata.
pub fn resource(group: &str, kind: &str, namespace: &str, name: &str, port: u16) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: group.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            section: String::new(),
            port: u32::from(port),
        })),
    }
}

/// The policy of Service `ns/name:port` with these HTTP routes.
pub fn http_policy(name: &str, port: u16, routes: Vec<pb::HttpRoute>) -> pb::OutboundPolicy {
    http_policy_with_accrual(name, port, routes, None)
}

/// [`http_policy`] whose endpoints break after `max_failures` consecutive failures, for a
/// backoff from `min` to `max`.
pub fn http_policy_with_accrual(
    name: &str,
    port: u16,
    routes: Vec<pb::HttpRoute>,
    accrual: Option<(u32, Duration, Duration)>,
) -> pb::OutboundPolicy {
    let failure_accrual = accrual.map(|(max_failures, min, max)| pb::FailureAccrual {
        kind: Some(pb::failure_accrual::Kind::ConsecutiveFailures(
            pb::failure_accrual::ConsecutiveFailures {
                max_failures,
                backoff: Some(pb::ExponentialBackoff {
                    min_backoff: Some(duration(min)),
                    max_backoff: Some(duration(max)),
                    jitter_ratio: 0.0,
                    ..Default::default()
                }),
            },
        )),
        ..Default::default()
    });
    pb::OutboundPolicy {
        metadata: Some(resource("core", "Service", "ns", name, port)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Detect(
                pb::proxy_protocol::Detect {
                    timeout: Some(duration(Duration::from_secs(10))),
                    opaque: Some(pb::proxy_protocol::Opaque { routes: vec![] }),
                    http1: Some(pb::proxy_protocol::Http1 {
                        routes: routes.clone(),
                        failure_accrual,
                    }),
                    http2: Some(pb::proxy_protocol::Http2 {
                        routes,
                        failure_accrual,
                    }),
                },
            )),
        }),
    }
}

/// The policy of an opaque Service `ns/name:port`.
pub fn opaque_policy(name: &str, port: u16) -> pb::OutboundPolicy {
    pb::OutboundPolicy {
        metadata: Some(resource("core", "Service", "ns", name, port)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Opaque(
                pb::proxy_protocol::Opaque { routes: vec![] },
            )),
        }),
    }
}

/// An HTTPRoute named `name` with these rules, for any host.
pub fn http_route(name: &str, rules: Vec<pb::http_route::Rule>) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: Some(resource(
            "gateway.networking.k8s.io",
            "HTTPRoute",
            "ns",
            name,
            0,
        )),
        hosts: vec![],
        rules,
    }
}

/// A rule: requests matching any of `matches` (all when empty) go to `backends`.
pub fn rule(
    matches: Vec<http_route::HttpRouteMatch>,
    backends: pb::http_route::Distribution,
) -> pb::http_route::Rule {
    #[allow(deprecated)]
    pb::http_route::Rule {
        matches,
        filters: vec![],
        backends: Some(backends),
        request_timeout: None,
        timeouts: None,
        retry: None,
        allow_l5d_request_headers: false,
    }
}

/// `rule` with a request timeout.
pub fn with_request_timeout(
    mut rule: pb::http_route::Rule,
    timeout: Duration,
) -> pb::http_route::Rule {
    rule.timeouts = Some(http_route::Timeouts {
        request: Some(duration(timeout)),
        ..Default::default()
    });
    rule
}

/// `rule` retrying responses with a status in `statuses` up to `max_retries` times, for
/// requests whose body is at most `max_request_bytes`, each try within `timeout`.
pub fn with_retry(
    mut rule: pb::http_route::Rule,
    max_retries: u32,
    max_request_bytes: u32,
    statuses: (u32, u32),
    timeout: Option<Duration>,
) -> pb::http_route::Rule {
    use pb::http_route::retry::{conditions::StatusRange, Conditions};
    rule.retry = Some(pb::http_route::Retry {
        max_retries,
        max_request_bytes,
        conditions: Some(Conditions {
            status_ranges: vec![StatusRange {
                start: statuses.0,
                end: statuses.1,
            }],
        }),
        timeout: timeout.map(duration),
        backoff: None,
    });
    rule
}

/// `rule` letting requests' `l5d-*` headers set its timeouts and retries.
pub fn allowing_l5d_headers(mut rule: pb::http_route::Rule) -> pb::http_route::Rule {
    rule.allow_l5d_request_headers = true;
    rule
}

/// `rule` with these filters.
pub fn with_filters(mut rule: pb::http_route::Rule, filters: Vec<Filter>) -> pb::http_route::Rule {
    rule.filters = filters;
    rule
}

/// A backend balanced over `Destination.Get(path)`.
pub fn balancer(name: &str, path: &str) -> pb::Backend {
    use pb::backend::{balance_p2c, endpoint_discovery, BalanceP2c, EndpointDiscovery, Kind};
    pb::Backend {
        metadata: Some(resource("core", "Service", "ns", name, 8080)),
        queue: Some(queue()),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: path.to_string(),
                    },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: Some(duration(Duration::from_millis(30))),
                decay: Some(duration(Duration::from_secs(10))),
            })),
        })),
    }
}

/// A backend of one address.
pub fn forward(name: &str, addr: SocketAddr) -> pb::Backend {
    pb::Backend {
        metadata: Some(resource("core", "Service", "ns", name, addr.port())),
        queue: Some(queue()),
        kind: Some(pb::backend::Kind::Forward(crate::controller::weighted(
            addr,
        ))),
    }
}

/// Backends drawn by weight.
pub fn random_available(backends: Vec<(pb::Backend, u32)>) -> pb::http_route::Distribution {
    use pb::http_route::{distribution, RouteBackend, WeightedRouteBackend};
    pb::http_route::Distribution {
        kind: Some(distribution::Kind::RandomAvailable(
            distribution::RandomAvailable {
                backends: backends
                    .into_iter()
                    .map(|(backend, weight)| WeightedRouteBackend {
                        backend: Some(RouteBackend {
                            backend: Some(backend),
                            filters: vec![],
                            #[allow(deprecated)]
                            request_timeout: None,
                        }),
                        weight,
                    })
                    .collect(),
            },
        )),
    }
}

/// One backend.
pub fn to(backend: pb::Backend) -> pb::http_route::Distribution {
    random_available(vec![(backend, 1)])
}

/// Requests whose path starts with the segments of `prefix`.
pub fn path_prefix(prefix: &str) -> http_route::HttpRouteMatch {
    http_route::HttpRouteMatch {
        path: Some(http_route::PathMatch {
            kind: Some(http_route::path_match::Kind::Prefix(prefix.to_string())),
        }),
        ..Default::default()
    }
}

/// Requests with header `name: value`.
pub fn header(name: &str, value: &str) -> http_route::HttpRouteMatch {
    http_route::HttpRouteMatch {
        headers: vec![http_route::HeaderMatch {
            name: name.to_string(),
            value: Some(http_route::header_match::Value::Exact(
                value.as_bytes().to_vec(),
            )),
        }],
        ..Default::default()
    }
}

/// Fails every request with `status` and `message`.
pub fn fail_with(status: u32, message: &str) -> Filter {
    Filter {
        kind: Some(pb::http_route::filter::Kind::FailureInjector(
            http_route::HttpFailureInjector {
                status,
                message: message.to_string(),
                ratio: None,
            },
        )),
    }
}

/// Adds request header `name: value`.
pub fn add_request_header(name: &str, value: &str) -> Filter {
    Filter {
        kind: Some(pb::http_route::filter::Kind::RequestHeaderModifier(
            http_route::RequestHeaderModifier {
                add: Some(headers(name, value)),
                ..Default::default()
            },
        )),
    }
}

/// Sets response header `name: value`.
pub fn set_response_header(name: &str, value: &str) -> Filter {
    Filter {
        kind: Some(pb::http_route::filter::Kind::ResponseHeaderModifier(
            http_route::ResponseHeaderModifier {
                set: Some(headers(name, value)),
                ..Default::default()
            },
        )),
    }
}

fn headers(name: &str, value: &str) -> linkerd2_proxy_api::http_types::Headers {
    linkerd2_proxy_api::http_types::Headers {
        headers: vec![linkerd2_proxy_api::http_types::headers::Header {
            name: name.to_string(),
            value: value.as_bytes().to_vec(),
        }],
    }
}

fn queue() -> pb::Queue {
    pb::Queue {
        capacity: 100,
        failfast_timeout: Some(duration(Duration::from_secs(3))),
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).expect("a test duration fits")
}

/// The policy of a gRPC Service `ns/name:port` with these gRPC routes.
pub fn grpc_policy(name: &str, port: u16, routes: Vec<pb::GrpcRoute>) -> pb::OutboundPolicy {
    pb::OutboundPolicy {
        metadata: Some(resource("core", "Service", "ns", name, port)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Grpc(pb::proxy_protocol::Grpc {
                routes,
                failure_accrual: None,
            })),
        }),
    }
}

/// A GRPCRoute named `name` whose one rule (any method) sends requests to `backend` and
/// retries `UNAVAILABLE` up to `max_retries` times.
pub fn grpc_route_retrying(name: &str, backend: pb::Backend, max_retries: u32) -> pb::GrpcRoute {
    use pb::grpc_route::{
        distribution, retry::Conditions, Distribution, Retry, RouteBackend, Rule,
    };
    #[allow(deprecated)]
    let rule = Rule {
        matches: vec![],
        filters: vec![],
        backends: Some(Distribution {
            kind: Some(distribution::Kind::FirstAvailable(
                distribution::FirstAvailable {
                    backends: vec![RouteBackend {
                        backend: Some(backend),
                        filters: vec![],
                        request_timeout: None,
                    }],
                },
            )),
        }),
        request_timeout: None,
        timeouts: None,
        retry: Some(Retry {
            max_retries,
            max_request_bytes: 1024,
            conditions: Some(Conditions {
                unavailable: true,
                ..Default::default()
            }),
            timeout: None,
            backoff: None,
        }),
        allow_l5d_request_headers: false,
    };
    pb::GrpcRoute {
        metadata: Some(resource(
            "gateway.networking.k8s.io",
            "GRPCRoute",
            "ns",
            name,
            0,
        )),
        hosts: vec![],
        rules: vec![rule],
    }
}

/// The first ready backend, in this order.
pub fn first_available(backends: Vec<pb::Backend>) -> pb::http_route::Distribution {
    use pb::http_route::{distribution, RouteBackend};
    pb::http_route::Distribution {
        kind: Some(distribution::Kind::FirstAvailable(
            distribution::FirstAvailable {
                backends: backends
                    .into_iter()
                    .map(|backend| RouteBackend {
                        backend: Some(backend),
                        filters: vec![],
                        #[allow(deprecated)]
                        request_timeout: None,
                    })
                    .collect(),
            },
        )),
    }
}
