//! Decoding `inbound.proto` messages built by hand.

use super::*;
use linkerd2_proxy_api::{
    grpc_route as grpc_api, http_route as http_api, http_types, inbound as api, meta as meta_api,
    net,
};
use std::collections::HashMap;

const TIMEOUT: prost_types::Duration = prost_types::Duration {
    seconds: 10,
    nanos: 0,
};

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn network(net: &str, except: &[&str]) -> api::Network {
    let n = |s: &str| net::IpNetwork::from(s.parse::<ipnet::IpNet>().unwrap());
    api::Network {
        net: Some(n(net)),
        except: except.iter().map(|s| n(s)).collect(),
    }
}

fn resource_meta(group: &str, kind: &str, name: &str) -> meta_api::Metadata {
    meta_api::Metadata {
        kind: Some(meta_api::metadata::Kind::Resource(meta_api::Resource {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "ns".into(),
            section: "".into(),
            port: 0,
        })),
    }
}

fn default_meta(name: &str) -> meta_api::Metadata {
    meta_api::Metadata {
        kind: Some(meta_api::metadata::Kind::Default(name.into())),
    }
}

fn unauthenticated() -> api::Authn {
    api::Authn {
        permit: Some(api::authn::Permit::Unauthenticated(
            api::authn::PermitUnauthenticated {},
        )),
    }
}

fn mesh_tls(clients: api::authn::permit_mesh_tls::Clients) -> api::Authn {
    api::Authn {
        permit: Some(api::authn::Permit::MeshTls(api::authn::PermitMeshTls {
            clients: Some(clients),
        })),
    }
}

fn pb_authz(name: &str, authn: api::Authn) -> api::Authz {
    api::Authz {
        networks: vec![network("10.0.0.0/8", &["10.1.0.0/16"])],
        authentication: Some(authn),
        labels: HashMap::new(),
        metadata: Some(resource_meta(
            "policy.linkerd.io",
            "authorizationpolicy",
            name,
        )),
    }
}

fn server(kind: api::proxy_protocol::Kind, authzs: Vec<api::Authz>) -> api::Server {
    api::Server {
        protocol: Some(api::ProxyProtocol { kind: Some(kind) }),
        server_ips: vec![],
        authorizations: authzs,
        labels: labels(&[
            ("group", "policy.linkerd.io"),
            ("kind", "server"),
            ("name", "web-http"),
        ]),
    }
}

fn detect(routes: Vec<api::HttpRoute>) -> api::proxy_protocol::Kind {
    api::proxy_protocol::Kind::Detect(api::proxy_protocol::Detect {
        timeout: Some(TIMEOUT),
        http_routes: routes,
        http_local_rate_limit: None,
    })
}

fn http_route(
    name: &str,
    authzs: Vec<api::Authz>,
    rules: Vec<api::http_route::Rule>,
) -> api::HttpRoute {
    api::HttpRoute {
        metadata: Some(resource_meta(
            "gateway.networking.k8s.io",
            "HTTPRoute",
            name,
        )),
        hosts: vec![],
        authorizations: authzs,
        rules,
    }
}

fn http_rule(
    matches: Vec<http_api::HttpRouteMatch>,
    filters: Vec<api::http_route::filter::Kind>,
) -> api::http_route::Rule {
    api::http_route::Rule {
        matches,
        filters: filters
            .into_iter()
            .map(|k| api::http_route::Filter { kind: Some(k) })
            .collect(),
    }
}

fn path_match(kind: http_api::path_match::Kind) -> http_api::HttpRouteMatch {
    http_api::HttpRouteMatch {
        path: Some(http_api::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

fn decode_http_match(m: http_api::HttpRouteMatch) -> Result<ServerPolicy, InvalidServer> {
    ServerPolicy::try_from(server(
        detect(vec![http_route(
            "r",
            vec![],
            vec![http_rule(vec![m], vec![])],
        )]),
        vec![],
    ))
}

fn decode_http_filter(f: api::http_route::filter::Kind) -> Result<ServerPolicy, InvalidServer> {
    ServerPolicy::try_from(server(
        detect(vec![http_route(
            "r",
            vec![],
            vec![http_rule(vec![], vec![f])],
        )]),
        vec![],
    ))
}

fn only_http_rule(p: &ServerPolicy) -> &HttpRule {
    let routes = p.protocol.http_routes().expect("HTTP routes");
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].rules.len(), 1);
    &routes[0].rules[0]
}

fn localhost() -> Authorization {
    Authorization {
        networks: vec![ip("127.0.0.1").into(), ip("::1").into()],
        authentication: Authentication::Unauthenticated,
        meta: Meta::new_default("localhost"),
    }
}

// === servers ===

#[test]
fn detect_without_routes_gets_a_default_route_with_the_server_authorizations() {
    let p = ServerPolicy::try_from(server(
        detect(vec![]),
        vec![pb_authz("a", unauthenticated())],
    ))
    .expect("decodes");
    assert_eq!(
        *p.meta,
        *resource("policy.linkerd.io", "server", "web-http")
    );
    assert!(p.local_rate_limit.is_empty());

    let expected_authz = Authorization {
        networks: vec![Network {
            net: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.1.0.0/16".parse().unwrap()],
        }],
        authentication: Authentication::Unauthenticated,
        meta: resource("policy.linkerd.io", "authorizationpolicy", "a"),
    };
    let authzs: Arc<[Authorization]> = vec![expected_authz, localhost()].into();
    assert_eq!(
        p.protocol,
        Protocol::Detect {
            timeout: Duration::from_secs(10),
            http: Arc::new([HttpRoute::catch_all(authzs.clone())]),
            tcp_authorizations: authzs,
        }
    );

    // Localhost is always admitted, excepted networks are not.
    assert!(p
        .authorize_connection(ip("127.0.0.1"), ClientTls::None)
        .is_ok());
    assert!(p.authorize_connection(ip("::1"), ClientTls::None).is_ok());
    assert!(p
        .authorize_connection(ip("10.2.0.1"), ClientTls::None)
        .is_ok());
    assert!(p
        .authorize_connection(ip("10.1.0.1"), ClientTls::None)
        .is_err());
    let req = TestReq::get("http://web/");
    let d = p.route_request(&req.view());
    assert_eq!(d.meta().map(|m| m.name()), Some("default"));
    assert_eq!(
        d.authorize(ip("127.0.0.1"), ClientTls::None)
            .map(|a| a.meta.name()),
        Ok("localhost")
    );
}

#[test]
fn route_authorizations_are_the_routes_then_the_servers() {
    let route_authz = pb_authz(
        "route-authz",
        mesh_tls(api::authn::permit_mesh_tls::Clients::Identities(
            api::authn::permit_mesh_tls::PermitClientIdentities {
                identities: vec![api::Identity {
                    name: "a.ns.serviceaccount.identity.linkerd.cluster.local".into(),
                }],
                suffixes: vec![api::IdentitySuffix {
                    parts: vec!["other".into(), "serviceaccount".into()],
                }],
            },
        )),
    );
    let p = ServerPolicy::try_from(server(
        api::proxy_protocol::Kind::Http1(api::proxy_protocol::Http1 {
            routes: vec![
                http_route("r1", vec![route_authz], vec![http_rule(vec![], vec![])]),
                http_route("r2", vec![], vec![http_rule(vec![], vec![])]),
            ],
            local_rate_limit: None,
        }),
        vec![pb_authz("server-authz", unauthenticated())],
    ))
    .expect("decodes");
    let Protocol::Http1(routes) = &p.protocol else {
        panic!("{:?}", p.protocol)
    };
    let names = |r: &HttpRoute| -> Vec<String> {
        r.rules[0]
            .policy
            .authorizations
            .iter()
            .map(|a| a.meta.name().to_string())
            .collect()
    };
    assert_eq!(
        names(&routes[0]),
        ["route-authz", "server-authz", "localhost"]
    );
    assert_eq!(names(&routes[1]), ["server-authz", "localhost"]);
    assert_eq!(
        *routes[0].rules[0].policy.meta,
        *resource("gateway.networking.k8s.io", "HTTPRoute", "r1")
    );
    assert_eq!(
        routes[0].rules[0].policy.authorizations[0].authentication,
        Authentication::TlsAuthenticated {
            identities: ["a.ns.serviceaccount.identity.linkerd.cluster.local".to_string()]
                .into_iter()
                .collect(),
            suffixes: vec![Suffix::new(".other.serviceaccount")],
        }
    );
}

#[test]
fn every_protocol_kind() {
    use api::proxy_protocol::{Grpc, Http2, Kind, Opaque, Tls};
    let authzs = || vec![pb_authz("a", unauthenticated())];

    let p = ServerPolicy::try_from(server(Kind::Opaque(Opaque {}), authzs())).unwrap();
    assert!(matches!(&p.protocol, Protocol::Opaque(a) if a.len() == 2));
    let p = ServerPolicy::try_from(server(Kind::Tls(Tls {}), authzs())).unwrap();
    assert!(matches!(&p.protocol, Protocol::Tls(a) if a.len() == 2));
    let p = ServerPolicy::try_from(server(
        Kind::Http2(Http2 {
            routes: vec![],
            local_rate_limit: None,
        }),
        authzs(),
    ))
    .unwrap();
    assert!(matches!(&p.protocol, Protocol::Http2(r) if r.len() == 1));
    let p = ServerPolicy::try_from(server(Kind::Grpc(Grpc { routes: vec![] }), authzs())).unwrap();
    let Protocol::Grpc(routes) = &p.protocol else {
        panic!("{:?}", p.protocol)
    };
    assert_eq!(
        **routes,
        [GrpcRoute::catch_all(p.protocol_authzs_for_test())]
    );
}

impl ServerPolicy {
    /// The server-level authorizations of a decoded gRPC server's default route.
    fn protocol_authzs_for_test(&self) -> Arc<[Authorization]> {
        match &self.protocol {
            Protocol::Grpc(r) => r[0].rules[0].policy.authorizations.clone(),
            _ => unreachable!(),
        }
    }
}

#[test]
fn invalid_servers() {
    use api::proxy_protocol::{Detect, Kind};

    let mut s = server(detect(vec![]), vec![]);
    s.protocol = None;
    assert!(matches!(
        ServerPolicy::try_from(s),
        Err(InvalidServer::MissingProxyProtocol)
    ));
    let mut s = server(detect(vec![]), vec![]);
    s.protocol = Some(api::ProxyProtocol { kind: None });
    assert!(matches!(
        ServerPolicy::try_from(s),
        Err(InvalidServer::MissingProxyProtocol)
    ));

    let no_timeout = Kind::Detect(Detect {
        timeout: None,
        http_routes: vec![],
        http_local_rate_limit: None,
    });
    assert!(matches!(
        ServerPolicy::try_from(server(no_timeout, vec![])),
        Err(InvalidServer::MissingDetectTimeout)
    ));
    let negative = Kind::Detect(Detect {
        timeout: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        http_routes: vec![],
        http_local_rate_limit: None,
    });
    assert!(matches!(
        ServerPolicy::try_from(server(negative, vec![])),
        Err(InvalidServer::InvalidTimeout(_))
    ));

    let mut s = server(detect(vec![]), vec![]);
    s.labels.remove("name");
    assert!(matches!(
        ServerPolicy::try_from(s),
        Err(InvalidServer::Meta(InvalidMeta::Name))
    ));

    // A route without metadata.
    let mut r = http_route("r", vec![], vec![]);
    r.metadata = None;
    assert!(matches!(
        ServerPolicy::try_from(server(detect(vec![r]), vec![])),
        Err(InvalidServer::HttpRoute(InvalidRoute::Meta(
            InvalidMeta::Missing
        )))
    ));
    let mut r = http_route("r", vec![], vec![]);
    r.metadata = Some(meta_api::Metadata { kind: None });
    assert!(ServerPolicy::try_from(server(detect(vec![r]), vec![])).is_err());

    // A host match without a match.
    let mut r = http_route("r", vec![], vec![]);
    r.hosts = vec![http_api::HostMatch { r#match: None }];
    assert!(matches!(
        ServerPolicy::try_from(server(detect(vec![r]), vec![])),
        Err(InvalidServer::HttpRoute(InvalidRoute::Match(
            InvalidMatch::MissingHost
        )))
    ));

    // The caller substitutes the invalid policy.
    let p = ServerPolicy::try_from(server(detect(vec![]), vec![api::Authz::default()]))
        .unwrap_or_else(|_| ServerPolicy::invalid(Duration::from_secs(10)));
    assert_eq!(p.meta.name(), "invalid");
}

// === authorizations ===

#[test]
fn authorizations() {
    use api::authn::permit_mesh_tls::{Clients, PermitClientIdentities};

    let decode = |a: api::Authz| Authorization::try_from(a);

    let a = decode(pb_authz(
        "tls",
        mesh_tls(Clients::Unauthenticated(
            api::authn::PermitUnauthenticated {},
        )),
    ))
    .unwrap();
    assert_eq!(a.authentication, Authentication::TlsUnauthenticated);

    let a = decode(pb_authz(
        "any-id",
        mesh_tls(Clients::Identities(PermitClientIdentities {
            identities: vec![],
            suffixes: vec![api::IdentitySuffix { parts: vec![] }],
        })),
    ))
    .unwrap();
    assert_eq!(
        a.authentication,
        Authentication::TlsAuthenticated {
            identities: Default::default(),
            suffixes: vec![Suffix::new("")],
        }
    );
    assert!(a.permits(ip("10.0.0.1"), tls("anything.at.all")));

    let mut pb = pb_authz("x", unauthenticated());
    pb.networks = vec![];
    assert!(matches!(decode(pb), Err(InvalidAuthz::MissingNetworks)));

    let mut pb = pb_authz("x", unauthenticated());
    pb.networks = vec![api::Network {
        net: None,
        except: vec![],
    }];
    assert!(matches!(decode(pb), Err(InvalidAuthz::MissingNetwork)));

    let mut pb = pb_authz("x", unauthenticated());
    pb.networks[0].net = Some(net::IpNetwork {
        ip: Some(ip("10.0.0.0").into()),
        prefix_len: 33,
    });
    assert!(matches!(decode(pb), Err(InvalidAuthz::Network(_))));

    let mut pb = pb_authz("x", unauthenticated());
    pb.networks[0].except = vec![net::IpNetwork {
        ip: None,
        prefix_len: 8,
    }];
    assert!(matches!(decode(pb), Err(InvalidAuthz::Network(_))));

    for authn in [
        None,
        Some(api::Authn { permit: None }),
        Some(api::Authn {
            permit: Some(api::authn::Permit::MeshTls(api::authn::PermitMeshTls {
                clients: None,
            })),
        }),
    ] {
        let mut pb = pb_authz("x", unauthenticated());
        pb.authentication = authn;
        assert!(matches!(
            decode(pb),
            Err(InvalidAuthz::MissingAuthentications)
        ));
    }

    // Without metadata, labels name the authorization.
    let mut pb = pb_authz("x", unauthenticated());
    pb.metadata = None;
    pb.labels = labels(&[("name", "legacy")]);
    let a = decode(pb).unwrap();
    assert_eq!(
        *a.meta,
        *resource("policy.linkerd.io", "serverauthorization", "legacy")
    );
    let mut pb = pb_authz("x", unauthenticated());
    pb.metadata = None;
    assert!(matches!(
        decode(pb),
        Err(InvalidAuthz::Meta(InvalidMeta::Name))
    ));
    let mut pb = pb_authz("x", unauthenticated());
    pb.metadata = Some(default_meta("audit"));
    assert!(decode(pb).unwrap().is_audit());
}

#[test]
fn meta_from_labels() {
    let m = |kv: &[(&str, &str)]| Meta::from_labels(labels(kv), "foog", "fook");
    assert_eq!(
        *m(&[("group", ""), ("kind", "default"), ("name", "foo")]).unwrap(),
        Meta::Default { name: "foo".into() }
    );
    assert!(matches!(
        &*m(&[("group", ""), ("kind", "default"), ("name", "foo")]).unwrap(),
        Meta::Default { .. }
    ));
    assert!(matches!(
        &*m(&[("name", "default:foo")]).unwrap(),
        Meta::Default { name } if name == "foo"
    ));
    assert_eq!(
        *m(&[("name", "bar:foo")]).unwrap(),
        *resource("foog", "bar", "foo")
    );
    assert_eq!(
        *m(&[("name", "foo")]).unwrap(),
        *resource("foog", "fook", "foo")
    );
    assert_eq!(
        *m(&[("name", "a:b:c")]).unwrap(),
        *resource("foog", "a", "b:c")
    );
    assert_eq!(
        *m(&[("group", "g"), ("kind", "k"), ("name", "default:x")]).unwrap(),
        *resource("g", "k", "default:x")
    );
    // With a kind label, a non-empty group keeps the resource even of kind `default`.
    assert!(matches!(
        &*m(&[("kind", "default"), ("name", "foo")]).unwrap(),
        Meta::Resource { group, .. } if group == "foog"
    ));
    assert!(matches!(m(&[("kind", "k")]), Err(InvalidMeta::Name)));

    assert_eq!(
        Meta::try_from(default_meta("d")).unwrap(),
        Meta::Default { name: "d".into() }
    );
    assert!(matches!(
        Meta::try_from(meta_api::Metadata { kind: None }),
        Err(InvalidMeta::Missing)
    ));
}

// === HTTP matches ===

#[test]
fn http_matches() {
    use http_api::{header_match, path_match::Kind, query_param_match};

    let m = http_api::HttpRouteMatch {
        path: Some(http_api::PathMatch {
            kind: Some(Kind::Prefix("/api".into())),
        }),
        headers: vec![
            http_api::HeaderMatch {
                name: "X-Foo".into(),
                value: Some(header_match::Value::Exact(b"bar".to_vec())),
            },
            http_api::HeaderMatch {
                name: "x-re".into(),
                value: Some(header_match::Value::Regex("a+".into())),
            },
        ],
        query_params: vec![
            http_api::QueryParamMatch {
                name: "q".into(),
                value: Some(query_param_match::Value::Exact("1".into())),
            },
            http_api::QueryParamMatch {
                name: "r".into(),
                value: Some(query_param_match::Value::Regex("[0-9]+".into())),
            },
        ],
        method: Some(http::Method::POST.into()),
    };
    let p = decode_http_match(m).unwrap();
    let rule = only_http_rule(&p);
    assert_eq!(rule.matches.len(), 1);
    let m = &rule.matches[0];
    assert_eq!(m.path, Some(MatchPath::Prefix("/api".into())));
    assert_eq!(
        m.headers,
        vec![
            MatchHeader::Exact(
                http::HeaderName::from_static("x-foo"),
                http::HeaderValue::from_static("bar")
            ),
            MatchHeader::Regex(http::HeaderName::from_static("x-re"), "a+".parse().unwrap()),
        ]
    );
    assert_eq!(
        m.query_params,
        vec![
            MatchQueryParam::Exact("q".into(), "1".into()),
            MatchQueryParam::Regex("r".into(), "[0-9]+".parse().unwrap()),
        ]
    );
    assert_eq!(m.method, Some(http::Method::POST));

    let req = TestReq::post("http://web/api/x?q=1&r=42")
        .header("x-foo", "bar")
        .header("x-re", "aaa");
    assert!(matches!(
        p.route_request(&req.view()),
        RouteDecision::Http(_)
    ));
    let req = TestReq::post("http://web/api/x?q=1&r=4x2")
        .header("x-foo", "bar")
        .header("x-re", "aaa");
    assert_eq!(p.route_request(&req.view()), RouteDecision::NotFound);

    // Unregistered methods decode too.
    let m = http_api::HttpRouteMatch {
        method: Some(http_types::HttpMethod {
            r#type: Some(http_types::http_method::Type::Unregistered("PURGE".into())),
        }),
        ..Default::default()
    };
    let p = decode_http_match(m).unwrap();
    assert_eq!(
        only_http_rule(&p).matches[0]
            .method
            .as_ref()
            .map(|m| m.as_str()),
        Some("PURGE")
    );

    for (kind, expected) in [
        (Kind::Exact("/x".into()), MatchPath::Exact("/x".into())),
        (
            Kind::Regex("/x/.*".into()),
            MatchPath::Regex("/x/.*".parse().unwrap()),
        ),
    ] {
        let p = decode_http_match(path_match(kind)).unwrap();
        assert_eq!(only_http_rule(&p).matches[0].path, Some(expected));
    }
}

#[test]
fn invalid_http_matches() {
    use http_api::{header_match, path_match::Kind, query_param_match};
    let invalid = |m: http_api::HttpRouteMatch| match decode_http_match(m) {
        Err(InvalidServer::HttpRoute(InvalidRoute::Match(e))) => e,
        other => panic!("{other:?}"),
    };

    assert!(matches!(
        invalid(path_match(Kind::Regex("/(".into()))),
        InvalidMatch::Regex(_)
    ));
    assert!(matches!(
        invalid(http_api::HttpRouteMatch {
            path: Some(http_api::PathMatch { kind: None }),
            ..Default::default()
        }),
        InvalidMatch::MissingPath
    ));
    let header = |name: &str, value: Option<header_match::Value>| http_api::HttpRouteMatch {
        headers: vec![http_api::HeaderMatch {
            name: name.into(),
            value,
        }],
        ..Default::default()
    };
    assert!(matches!(
        invalid(header(
            "bad header",
            Some(header_match::Value::Exact(b"x".to_vec()))
        )),
        InvalidMatch::HeaderName(_)
    ));
    assert!(matches!(
        invalid(header(
            "x",
            Some(header_match::Value::Exact(b"a\nb".to_vec()))
        )),
        InvalidMatch::HeaderValue(_)
    ));
    assert!(matches!(
        invalid(header("x", None)),
        InvalidMatch::MissingHeaderValue
    ));
    assert!(matches!(
        invalid(header("x", Some(header_match::Value::Regex("[".into())))),
        InvalidMatch::Regex(_)
    ));
    let query = |name: &str, value: Option<query_param_match::Value>| http_api::HttpRouteMatch {
        query_params: vec![http_api::QueryParamMatch {
            name: name.into(),
            value,
        }],
        ..Default::default()
    };
    assert!(matches!(
        invalid(query("", Some(query_param_match::Value::Exact("x".into())))),
        InvalidMatch::MissingQueryParamName
    ));
    assert!(matches!(
        invalid(query("q", None)),
        InvalidMatch::MissingQueryParamValue
    ));
    assert!(matches!(
        invalid(query(
            "q",
            Some(query_param_match::Value::Regex("(".into()))
        )),
        InvalidMatch::Regex(_)
    ));
    for method in [
        http_types::HttpMethod { r#type: None },
        http_types::HttpMethod {
            r#type: Some(http_types::http_method::Type::Registered(99)),
        },
        http_types::HttpMethod {
            r#type: Some(http_types::http_method::Type::Unregistered(
                "BAD METHOD".into(),
            )),
        },
    ] {
        assert!(matches!(
            invalid(http_api::HttpRouteMatch {
                method: Some(method),
                ..Default::default()
            }),
            InvalidMatch::Method(_)
        ));
    }
}

#[test]
fn hosts() {
    let mut r = http_route("r", vec![], vec![http_rule(vec![], vec![])]);
    r.hosts = vec![
        http_api::HostMatch {
            r#match: Some(http_api::host_match::Match::Exact("web.example.com".into())),
        },
        http_api::HostMatch {
            r#match: Some(http_api::host_match::Match::Suffix(
                http_api::host_match::Suffix {
                    reverse_labels: vec!["com".into(), "example".into()],
                },
            )),
        },
    ];
    let p = ServerPolicy::try_from(server(detect(vec![r]), vec![])).unwrap();
    let routes = p.protocol.http_routes().unwrap();
    assert_eq!(
        routes[0].hosts,
        vec![
            MatchHost::Exact("web.example.com".into()),
            MatchHost::Suffix(vec!["com".into(), "example".into()]),
        ]
    );
    let req = TestReq::get("http://api.example.com/");
    assert!(matches!(
        p.route_request(&req.view()),
        RouteDecision::Http(_)
    ));
    let req = TestReq::get("http://example.org/");
    assert_eq!(p.route_request(&req.view()), RouteDecision::NotFound);
}

// === HTTP filters ===

#[test]
fn http_filters() {
    use api::http_route::filter::Kind;

    let headers = |kv: &[(&str, &[u8])]| http_types::Headers {
        headers: kv
            .iter()
            .map(|(n, v)| http_types::headers::Header {
                name: n.to_string(),
                value: v.to_vec(),
            })
            .collect(),
    };
    let p = decode_http_filter(Kind::RequestHeaderModifier(
        http_api::RequestHeaderModifier {
            add: Some(headers(&[("x-add", b"1")])),
            set: Some(headers(&[("X-Set", b"2")])),
            remove: vec!["x-remove".into()],
        },
    ))
    .unwrap();
    assert_eq!(
        only_http_rule(&p).policy.filters,
        vec![HttpFilter::RequestHeaders(ModifyHeader {
            add: vec![(
                http::HeaderName::from_static("x-add"),
                http::HeaderValue::from_static("1")
            )],
            set: vec![(
                http::HeaderName::from_static("x-set"),
                http::HeaderValue::from_static("2")
            )],
            remove: vec![http::HeaderName::from_static("x-remove")],
        })]
    );

    let p = decode_http_filter(Kind::FailureInjector(http_api::HttpFailureInjector {
        status: 503,
        message: "injected".into(),
        ratio: Some(http_api::Ratio {
            numerator: 1,
            denominator: 4,
        }),
    }))
    .unwrap();
    assert_eq!(
        only_http_rule(&p).policy.filters,
        vec![HttpFilter::InjectFailure(InjectFailure {
            response: FailureResponse {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                message: "injected".into(),
            },
            distribution: Distribution::from_ratio(1, 4).unwrap(),
        })]
    );
    // Without a ratio, every request fails.
    let p = decode_http_filter(Kind::FailureInjector(http_api::HttpFailureInjector {
        status: 500,
        message: String::new(),
        ratio: None,
    }))
    .unwrap();
    let HttpFilter::InjectFailure(f) = &only_http_rule(&p).policy.filters[0] else {
        panic!()
    };
    assert_eq!(f.distribution, Distribution::default());

    // An unknown filter is kept as an internal error.
    let mut r = http_route("r", vec![], vec![http_rule(vec![], vec![])]);
    r.rules[0].filters = vec![api::http_route::Filter { kind: None }];
    let p = ServerPolicy::try_from(server(detect(vec![r]), vec![])).unwrap();
    assert_eq!(
        only_http_rule(&p).policy.filters,
        vec![HttpFilter::InternalError(
            "server policy configured with unknown filter"
        )]
    );
}

#[test]
fn redirects() {
    use api::http_route::filter::Kind;
    use http_api::path_modifier::Replace;

    let redirect = |host: &str, port: u32, path: Option<Replace>, status: u32| {
        let p = decode_http_filter(Kind::Redirect(http_api::RequestRedirect {
            scheme: Some(http_types::Scheme::from("https")),
            host: host.into(),
            path: path.map(|r| http_api::PathModifier { replace: Some(r) }),
            port,
            status,
        }))?;
        match &only_http_rule(&p).policy.filters[0] {
            HttpFilter::Redirect(r) => Ok(r.clone()),
            other => panic!("{other:?}"),
        }
    };

    let r = redirect("example.org", 8443, Some(Replace::Full("/new".into())), 302).unwrap();
    assert_eq!(
        r,
        RedirectRequest {
            scheme: Some(http::uri::Scheme::HTTPS),
            authority: Some(AuthorityOverride::Exact(
                "example.org:8443".parse().unwrap()
            )),
            path: Some(ModifyPath::ReplaceFullPath("/new".into())),
            status: Some(http::StatusCode::FOUND),
        }
    );
    let r = redirect("example.org", 0, Some(Replace::Prefix("/p".into())), 0).unwrap();
    assert_eq!(
        r.authority,
        Some(AuthorityOverride::Host("example.org".parse().unwrap()))
    );
    assert_eq!(r.path, Some(ModifyPath::ReplacePrefixMatch("/p".into())));
    assert_eq!(r.status, None);
    let r = redirect("", 8080, None, 0).unwrap();
    assert_eq!(
        r.authority,
        Some(AuthorityOverride::Port(8080.try_into().unwrap()))
    );
    let r = redirect("", 0, None, 0).unwrap();
    assert_eq!(r.authority, None);

    let invalid = |r: Result<RedirectRequest, InvalidServer>| match r {
        Err(InvalidServer::HttpRoute(InvalidRoute::Filter(e))) => e,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        invalid(redirect("", 70000, None, 0)),
        InvalidFilter::Port(70000)
    ));
    assert!(matches!(
        invalid(redirect("", 0, Some(Replace::Full("rel".into())), 0)),
        InvalidFilter::RelativePath
    ));
    assert!(matches!(
        invalid(redirect("", 0, Some(Replace::Prefix("rel".into())), 0)),
        InvalidFilter::RelativePath
    ));
    assert!(matches!(
        invalid(redirect("", 0, None, 1000)),
        InvalidFilter::Status(_)
    ));
    assert!(matches!(
        invalid(redirect("", 0, None, 70000)),
        InvalidFilter::StatusNonU16(70000)
    ));
    assert!(matches!(
        invalid(redirect("bad host", 0, None, 0)),
        InvalidFilter::Authority(_)
    ));
}

#[test]
fn invalid_http_filters() {
    use api::http_route::filter::Kind;
    let invalid = |k: Kind| match decode_http_filter(k) {
        Err(InvalidServer::HttpRoute(InvalidRoute::Filter(e))) => e,
        other => panic!("{other:?}"),
    };
    let fail = |status, ratio| {
        Kind::FailureInjector(http_api::HttpFailureInjector {
            status,
            message: String::new(),
            ratio,
        })
    };
    assert!(matches!(invalid(fail(99, None)), InvalidFilter::Status(_)));
    assert!(matches!(
        invalid(fail(1 << 20, None)),
        InvalidFilter::StatusNonU16(_)
    ));
    assert!(matches!(
        invalid(fail(
            500,
            Some(http_api::Ratio {
                numerator: 0,
                denominator: 0
            })
        )),
        InvalidFilter::Distribution(_)
    ));
    assert!(matches!(
        invalid(fail(
            500,
            Some(http_api::Ratio {
                numerator: 2,
                denominator: 1
            })
        )),
        InvalidFilter::Distribution(_)
    ));
    assert!(matches!(
        invalid(Kind::RequestHeaderModifier(
            http_api::RequestHeaderModifier {
                remove: vec!["bad name".into()],
                ..Default::default()
            }
        )),
        InvalidFilter::HeaderName(_)
    ));
    assert!(matches!(
        invalid(Kind::RequestHeaderModifier(
            http_api::RequestHeaderModifier {
                add: Some(http_types::Headers {
                    headers: vec![http_types::headers::Header {
                        name: "x".into(),
                        value: b"\r\n".to_vec(),
                    }],
                }),
                ..Default::default()
            }
        )),
        InvalidFilter::HeaderValue(_)
    ));
}

// === rate limits ===

#[test]
fn local_rate_limits() {
    use api::http_local_rate_limit::{r#override::ClientIdentities, Limit, Override};
    let limit = |rps| {
        Some(Limit {
            requests_per_second: rps,
        })
    };
    let ids = |names: &[&str]| {
        Some(ClientIdentities {
            identities: names
                .iter()
                .map(|n| api::Identity {
                    name: n.to_string(),
                })
                .collect(),
        })
    };
    let rl = api::HttpLocalRateLimit {
        metadata: Some(resource_meta(
            "policy.linkerd.io",
            "HTTPLocalRateLimitPolicy",
            "rl",
        )),
        total: limit(100),
        identity: limit(0),
        overrides: vec![
            Override {
                limit: limit(10),
                clients: ids(&["a.ns.sa", "spiffe://td/ns/a", "not an id", "trailing.dot."]),
            },
            Override {
                limit: limit(0),
                clients: ids(&["dropped.ns.sa"]),
            },
            Override {
                limit: limit(20),
                clients: ids(&["b.ns.sa", "a.ns.sa"]),
            },
        ],
    };
    let p = ServerPolicy::try_from(server(
        api::proxy_protocol::Kind::Http2(api::proxy_protocol::Http2 {
            routes: vec![],
            local_rate_limit: Some(rl),
        }),
        vec![],
    ))
    .unwrap();
    let rl = &*p.local_rate_limit;
    assert_eq!(
        rl.meta.as_deref(),
        Some(&*resource(
            "policy.linkerd.io",
            "HTTPLocalRateLimitPolicy",
            "rl"
        ))
    );
    assert_eq!(rl.total, NonZeroU32::new(100));
    assert_eq!(rl.per_identity, None);
    assert_eq!(rl.overrides.len(), 2);
    assert_eq!(rl.overrides[0].identities, ["a.ns.sa", "spiffe://td/ns/a"]);
    assert_eq!(
        rl.override_for("spiffe://td/ns/a"),
        Some((0, NonZeroU32::new(10).unwrap()))
    );
    // The last override naming an identity wins.
    assert_eq!(
        rl.override_for("a.ns.sa"),
        Some((1, NonZeroU32::new(20).unwrap()))
    );
    assert_eq!(
        rl.override_for("b.ns.sa"),
        Some((1, NonZeroU32::new(20).unwrap()))
    );
    assert_eq!(rl.override_for("dropped.ns.sa"), None);
    assert_eq!(rl.override_for("not an id"), None);

    assert_eq!(
        RateLimitError::Total(NonZeroU32::new(3).unwrap()).scope(),
        "total"
    );
    assert_eq!(
        RateLimitError::Override(NonZeroU32::new(3).unwrap()).to_string(),
        "override rate limit exceeded: 3rps"
    );

    // Detect and Http1 carry limits too; a limit with bad metadata is invalid.
    let p = ServerPolicy::try_from(server(
        api::proxy_protocol::Kind::Detect(api::proxy_protocol::Detect {
            timeout: Some(TIMEOUT),
            http_routes: vec![],
            http_local_rate_limit: Some(api::HttpLocalRateLimit {
                identity: limit(5),
                ..Default::default()
            }),
        }),
        vec![],
    ))
    .unwrap();
    assert_eq!(p.local_rate_limit.per_identity, NonZeroU32::new(5));
    assert!(matches!(
        ServerPolicy::try_from(server(
            api::proxy_protocol::Kind::Http1(api::proxy_protocol::Http1 {
                routes: vec![],
                local_rate_limit: Some(api::HttpLocalRateLimit {
                    metadata: Some(meta_api::Metadata { kind: None }),
                    ..Default::default()
                }),
            }),
            vec![],
        )),
        Err(InvalidServer::Meta(InvalidMeta::Missing))
    ));
}

// === gRPC routes ===

#[test]
fn grpc_routes() {
    use api::grpc_route::filter::Kind;

    let route = api::GrpcRoute {
        metadata: Some(resource_meta("gateway.networking.k8s.io", "GRPCRoute", "g")),
        hosts: vec![],
        authorizations: vec![pb_authz("route-authz", unauthenticated())],
        rules: vec![api::grpc_route::Rule {
            matches: vec![grpc_api::GrpcRouteMatch {
                rpc: Some(grpc_api::GrpcRpcMatch {
                    service: "pkg.Svc".into(),
                    method: "".into(),
                }),
                headers: vec![http_api::HeaderMatch {
                    name: "x-tenant".into(),
                    value: Some(http_api::header_match::Value::Exact(b"a".to_vec())),
                }],
            }],
            filters: vec![
                api::grpc_route::Filter {
                    kind: Some(Kind::FailureInjector(grpc_api::GrpcFailureInjector {
                        code: 14,
                        message: "unavailable".into(),
                        ratio: None,
                    })),
                },
                api::grpc_route::Filter {
                    kind: Some(Kind::RequestHeaderModifier(
                        http_api::RequestHeaderModifier {
                            remove: vec!["x-drop".into()],
                            ..Default::default()
                        },
                    )),
                },
                api::grpc_route::Filter { kind: None },
            ],
        }],
    };
    let p = ServerPolicy::try_from(server(
        api::proxy_protocol::Kind::Grpc(api::proxy_protocol::Grpc {
            routes: vec![route.clone()],
        }),
        vec![],
    ))
    .unwrap();
    let routes = p.protocol.grpc_routes().unwrap();
    let rule = &routes[0].rules[0];
    assert_eq!(
        rule.matches,
        vec![MatchGrpc {
            rpc: MatchRpc {
                service: Some("pkg.Svc".into()),
                method: None,
            },
            headers: vec![MatchHeader::Exact(
                http::HeaderName::from_static("x-tenant"),
                http::HeaderValue::from_static("a")
            )],
        }]
    );
    assert_eq!(
        rule.policy.filters,
        vec![
            GrpcFilter::InjectFailure(InjectFailure {
                response: GrpcFailureResponse {
                    code: 14,
                    message: "unavailable".into()
                },
                distribution: Distribution::default(),
            }),
            GrpcFilter::RequestHeaders(ModifyHeader {
                remove: vec![http::HeaderName::from_static("x-drop")],
                ..Default::default()
            }),
            GrpcFilter::InternalError("server policy configured with unknown filter"),
        ]
    );
    let names: Vec<_> = rule
        .policy
        .authorizations
        .iter()
        .map(|a| a.meta.name())
        .collect();
    assert_eq!(names, ["route-authz", "localhost"]);

    let req = TestReq::post("http://svc/pkg.Svc/Get").header("x-tenant", "a");
    let d = p.route_request(&req.view());
    assert!(d.is_grpc());
    assert_eq!(d.meta().map(|m| m.name()), Some("g"));
    let req = TestReq::post("http://svc/pkg.Other/Get").header("x-tenant", "a");
    assert_eq!(p.route_request(&req.view()), RouteDecision::NotFound);

    // Invalid shapes.
    let invalid = |r: api::GrpcRoute| match ServerPolicy::try_from(server(
        api::proxy_protocol::Kind::Grpc(api::proxy_protocol::Grpc { routes: vec![r] }),
        vec![],
    )) {
        Err(InvalidServer::GrpcRoute(e)) => e,
        other => panic!("{other:?}"),
    };
    let mut r = route.clone();
    r.rules[0].matches[0].rpc = None;
    assert!(matches!(
        invalid(r),
        InvalidRoute::Match(InvalidMatch::MissingRpc)
    ));
    let mut r = route.clone();
    r.rules[0].matches[0].headers[0].value = Some(http_api::header_match::Value::Regex("(".into()));
    assert!(matches!(
        invalid(r),
        InvalidRoute::Match(InvalidMatch::Regex(_))
    ));
    let mut r = route.clone();
    r.rules[0].filters = vec![api::grpc_route::Filter {
        kind: Some(Kind::FailureInjector(grpc_api::GrpcFailureInjector {
            code: 1 << 17,
            message: String::new(),
            ratio: None,
        })),
    }];
    assert!(matches!(
        invalid(r),
        InvalidRoute::Filter(InvalidFilter::GrpcCodeNonU16(_))
    ));
    let mut r = route.clone();
    r.authorizations = vec![api::Authz::default()];
    assert!(matches!(
        invalid(r),
        InvalidRoute::Authz(InvalidAuthz::MissingNetworks)
    ));
    let mut r = route;
    r.metadata = None;
    assert!(matches!(
        invalid(r),
        InvalidRoute::Meta(InvalidMeta::Missing)
    ));
}

use std::num::NonZeroU32;
