//! Builders of the policy controller's messages (`InboundServerPolicies` `Server`s) for
//! tests: servers, routes and authorizations as Linkerd's policy controller sends them.

use std::collections::HashMap;

use linkerd2_proxy_api::http_route as route;
use linkerd2_proxy_api::inbound as api;
use linkerd2_proxy_api::meta as meta_api;
use linkerd2_proxy_api::net as net_api;

pub fn resource(kind: &str, name: &str) -> meta_api::Metadata {
    meta_api::Metadata {
        kind: Some(meta_api::metadata::Kind::Resource(meta_api::Resource {
            group: "policy.linkerd.io".to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            ..Default::default()
        })),
    }
}

/// An authorization of any client from anywhere (`unauthenticated`), named `name`.
pub fn anyone(name: &str) -> api::Authz {
    api::Authz {
        networks: vec![
            api::Network {
                net: Some(net_api::IpNetwork::from((
                    "0.0.0.0".parse::<std::net::IpAddr>().unwrap(),
                    0,
                ))),
                except: Vec::new(),
            },
            api::Network {
                net: Some(net_api::IpNetwork::from((
                    "::".parse::<std::net::IpAddr>().unwrap(),
                    0,
                ))),
                except: Vec::new(),
            },
        ],
        authentication: Some(api::Authn {
            permit: Some(api::authn::Permit::Unauthenticated(
                api::authn::PermitUnauthenticated {},
            )),
        }),
        labels: HashMap::new(),
        metadata: Some(resource("authorizationpolicy", name)),
    }
}

/// An authorization of mesh TLS clients with identity `id` only.
pub fn only(id: &str, name: &str) -> api::Authz {
    use api::authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    api::Authz {
        authentication: Some(api::Authn {
            permit: Some(api::authn::Permit::MeshTls(api::authn::PermitMeshTls {
                clients: Some(Clients::Identities(PermitClientIdentities {
                    identities: vec![api::Identity {
                        name: id.to_string(),
                    }],
                    suffixes: Vec::new(),
                })),
            })),
        }),
        ..anyone(name)
    }
}

/// An HTTP route named `name` for paths under `prefix`, with `authz`.
pub fn http_route(name: &str, prefix: &str, authz: Vec<api::Authz>) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(resource("httproute", name)),
        hosts: Vec::new(),
        authorizations: authz,
        rules: vec![api::http_route::Rule {
            matches: vec![route::HttpRouteMatch {
                path: Some(route::PathMatch {
                    kind: Some(route::path_match::Kind::Prefix(prefix.to_string())),
                }),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
    }
}

/// A `Server` named `name` detecting HTTP, with `routes` and no connection authorization.
pub fn http_server(name: &str, routes: Vec<api::HttpRoute>) -> api::Server {
    api::Server {
        protocol: Some(api::ProxyProtocol {
            kind: Some(api::proxy_protocol::Kind::Detect(
                api::proxy_protocol::Detect {
                    timeout: Some(prost_types::Duration {
                        seconds: 10,
                        nanos: 0,
                    }),
                    http_routes: routes,
                    http_local_rate_limit: None,
                },
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

/// `route` with `filters` on its (first) rule.
pub fn with_filters(
    mut route: api::HttpRoute,
    filters: Vec<api::http_route::filter::Kind>,
) -> api::HttpRoute {
    route.rules[0].filters = filters
        .into_iter()
        .map(|kind| api::http_route::Filter { kind: Some(kind) })
        .collect();
    route
}

/// A request header modifier adding `add` and removing `remove`.
pub fn modify_headers(add: (&str, &str), remove: &str) -> api::http_route::filter::Kind {
    use linkerd2_proxy_api::http_types::headers::Header;
    api::http_route::filter::Kind::RequestHeaderModifier(route::RequestHeaderModifier {
        add: Some(linkerd2_proxy_api::http_types::Headers {
            headers: vec![Header {
                name: add.0.to_string(),
                value: add.1.as_bytes().to_vec(),
            }],
        }),
        set: None,
        remove: vec![remove.to_string()],
    })
}

/// A redirect to the same host and `path` with `status`.
pub fn redirect(path: &str, status: u32) -> api::http_route::filter::Kind {
    api::http_route::filter::Kind::Redirect(route::RequestRedirect {
        scheme: None,
        host: String::new(),
        path: Some(route::PathModifier {
            replace: Some(route::path_modifier::Replace::Full(path.to_string())),
        }),
        port: 0,
        status,
    })
}

/// A failure injector failing every request with `status` and `message`.
pub fn inject_failure(status: u32, message: &str) -> api::http_route::filter::Kind {
    api::http_route::filter::Kind::FailureInjector(route::HttpFailureInjector {
        status,
        message: message.to_string(),
        ratio: Some(route::Ratio {
            numerator: 1,
            denominator: 1,
        }),
    })
}
