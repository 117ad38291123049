//! Connection and route authorization: `is_authorized` and `is_tls_authorized`
//! (`linkerd/app/inbound/src/policy.rs` and its tests), `check_authorized`
//! (`linkerd/app/inbound/src/policy/tcp.rs` and its tests), `Network::contains`.

use super::*;
use std::collections::BTreeSet;

fn authenticated(identities: &[&str], suffixes: Vec<Suffix>) -> Authentication {
    Authentication::TlsAuthenticated {
        identities: identities.iter().map(|s| s.to_string()).collect(),
        suffixes,
    }
}

fn opaque(authzs: Vec<Authorization>) -> ServerPolicy {
    ServerPolicy {
        meta: resource("policy.linkerd.io", "server", "test"),
        protocol: Protocol::Opaque(authzs.into()),
        local_rate_limit: Default::default(),
    }
}

#[test]
fn network_contains_with_exceptions() {
    let n = Network {
        net: "10.0.0.0/8".parse().unwrap(),
        except: vec![
            "10.1.0.0/16".parse().unwrap(),
            "10.2.3.4/32".parse().unwrap(),
        ],
    };
    for (addr, expected) in [
        ("10.0.0.1", true),
        ("10.255.255.255", true),
        ("10.1.0.1", false),
        ("10.1.255.255", false),
        ("10.2.3.4", false),
        ("10.2.3.5", true),
        ("11.0.0.1", false),
        ("::ffff:10.0.0.1", false),
    ] {
        assert_eq!(n.contains(ip(addr)), expected, "{addr}");
    }

    let all6 = Network {
        net: "::/0".parse().unwrap(),
        except: vec!["fd00::/8".parse().unwrap()],
    };
    assert!(all6.contains(ip("2001:db8::1")));
    assert!(!all6.contains(ip("fd00::1")));
    assert!(!all6.contains(ip("10.0.0.1")));

    let host: Network = ip("192.0.2.1").into();
    assert_eq!(host.net, "192.0.2.1/32".parse::<ipnet::IpNet>().unwrap());
}

#[test]
fn unauthenticated_permits_any_tls_state_within_networks() {
    let a = authz(&["192.0.2.0/24"], Authentication::Unauthenticated, "unauth");
    assert!(a.permits(ip("192.0.2.3"), ClientTls::None));
    assert!(a.permits(ip("192.0.2.3"), ClientTls::Tls { client_id: None }));
    assert!(a.permits(
        ip("192.0.2.3"),
        tls("foo.ns.serviceaccount.identity.linkerd.local")
    ));
    assert!(!a.permits(ip("192.0.3.3"), ClientTls::None));
}

#[test]
fn tls_unauthenticated_requires_tls() {
    let a = authz(&["0.0.0.0/0"], Authentication::TlsUnauthenticated, "tls");
    assert!(!a.permits(ip("192.0.2.3"), ClientTls::None));
    assert!(a.permits(ip("192.0.2.3"), ClientTls::Tls { client_id: None }));
    assert!(a.permits(ip("192.0.2.3"), tls("foo.bar")));
}

#[test]
fn no_networks_permit_no_one() {
    let a = Authorization {
        networks: vec![],
        authentication: Authentication::Unauthenticated,
        meta: Meta::new_default("none"),
    };
    assert!(!a.permits(ip("127.0.0.1"), ClientTls::None));
}

/// The cases of `linkerd/app/inbound/src/policy.rs`'s tests, plus the empty suffix.
#[test]
fn tls_authenticated_identities_and_suffixes() {
    let cases: &[(&str, Authentication, bool)] = &[
        (
            "spiffe://some-root/some-workload",
            authenticated(&["spiffe://some-root/some-workload"], vec![]),
            true,
        ),
        (
            "spiffe://some-root/some-workload-1",
            authenticated(&["spiffe://some-root/some-workload-2"], vec![]),
            false,
        ),
        (
            "some.id.local",
            authenticated(&["some.id.local"], vec![]),
            true,
        ),
        (
            "some.id.local.one",
            authenticated(&["some.id.local.two"], vec![]),
            false,
        ),
        (
            "some.id.local",
            authenticated(&[], vec![Suffix::new("id.local")]),
            true,
        ),
        (
            "some.id.local",
            authenticated(&[], vec![Suffix::new("another-id.local")]),
            false,
        ),
        // Suffixes never apply to URI identities.
        (
            "spiffe://some-root/some-workload-1",
            authenticated(&[], vec![Suffix::new("some-workload-1")]),
            false,
        ),
        (
            "spiffe://some-root/some-workload-1",
            authenticated(&[], vec![Suffix::from(vec![])]),
            false,
        ),
        (
            "spiffe://some-root/some-workload-1",
            authenticated(
                &[
                    "spiffe://some-root/some-workload-1",
                    "some.workload.one",
                    "some.workload.two",
                ],
                vec![],
            ),
            true,
        ),
        (
            "some.workload.one",
            authenticated(
                &[
                    "spiffe://some-root/some-workload-1",
                    "some.workload.one",
                    "some.workload.two",
                ],
                vec![],
            ),
            true,
        ),
        // The empty suffix (no labels) admits every DNS identity.
        (
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            authenticated(&[], vec![Suffix::from(vec![])]),
            true,
        ),
        // Labels become a dotted suffix: a whole-label match.
        (
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            authenticated(
                &[],
                vec![Suffix::from(vec![
                    "emojivoto".to_string(),
                    "serviceaccount".to_string(),
                    "identity".to_string(),
                    "linkerd".to_string(),
                    "cluster".to_string(),
                    "local".to_string(),
                ])],
            ),
            true,
        ),
        (
            "web.xemojivoto.serviceaccount.identity.linkerd.cluster.local",
            authenticated(
                &[],
                vec![Suffix::from(vec![
                    "emojivoto".to_string(),
                    "serviceaccount".to_string(),
                    "identity".to_string(),
                    "linkerd".to_string(),
                    "cluster".to_string(),
                    "local".to_string(),
                ])],
            ),
            false,
        ),
    ];
    for (id, authn, expected) in cases {
        assert_eq!(authn.permits(tls(id)), *expected, "{id} {authn:?}");
    }

    // An identity is required.
    let any = authenticated(&[], vec![Suffix::from(vec![])]);
    assert!(!any.permits(ClientTls::None));
    assert!(!any.permits(ClientTls::Tls { client_id: None }));

    assert_eq!(
        Suffix::from(vec!["cluster".to_string(), "local".to_string()]).as_str(),
        ".cluster.local"
    );
    let empty = Authentication::TlsAuthenticated {
        identities: BTreeSet::new(),
        suffixes: vec![],
    };
    assert!(!empty.permits(tls("foo.bar")));
}

/// `check_authorized` tests of `linkerd/app/inbound/src/policy/tcp/tests.rs`.
#[test]
fn connection_permits() {
    let unauth = authz(&["192.0.2.0/24"], Authentication::Unauthenticated, "unauth");
    let p = opaque(vec![unauth.clone()]);
    let permit = p
        .authorize_connection(ip("192.0.2.3"), ClientTls::None)
        .expect("unauthenticated connection must be permitted");
    assert_eq!(permit.authorization, &unauth);
    assert_eq!(permit.server.name(), "test");
    assert!(!permit.is_audit());

    let id = "foo.ns1.serviceaccount.identity.linkerd.cluster.local";
    let p = opaque(vec![authz(
        &["192.0.2.0/24"],
        authenticated(&[id], vec![]),
        "tls-auth",
    )]);
    assert!(p.authorize_connection(ip("192.0.2.3"), tls(id)).is_ok());
    assert!(p
        .authorize_connection(
            ip("192.0.2.3"),
            tls("bar.ns1.serviceaccount.identity.linkerd.cluster.local")
        )
        .is_err());
    assert!(p
        .authorize_connection(ip("192.0.2.3"), ClientTls::Tls { client_id: None })
        .is_err());

    let p = opaque(vec![authz(
        &["192.0.2.0/24"],
        authenticated(
            &[],
            vec![Suffix::from(vec![
                "cluster".to_string(),
                "local".to_string(),
            ])],
        ),
        "tls-suffix",
    )]);
    assert!(p.authorize_connection(ip("192.0.2.3"), tls(id)).is_ok());
    assert!(p
        .authorize_connection(
            ip("192.0.2.3"),
            tls("foo.ns1.serviceaccount.identity.linkerd.cluster.example.com")
        )
        .is_err());

    let p = opaque(vec![authz(
        &["192.0.2.0/24"],
        Authentication::TlsUnauthenticated,
        "tls-unauth",
    )]);
    assert!(p
        .authorize_connection(ip("192.0.2.3"), ClientTls::None)
        .is_err());
    assert!(p
        .authorize_connection(ip("192.0.2.3"), ClientTls::Tls { client_id: None })
        .is_ok());

    // No authorization: denied, named after the server.
    let e = opaque(vec![])
        .authorize_connection(ip("192.0.2.3"), ClientTls::None)
        .expect_err("denied");
    assert_eq!(e.to_string(), "unauthorized connection on server/test");
}

#[test]
fn the_first_satisfied_authorization_wins() {
    let a = authz(&["10.0.0.0/8"], authenticated(&["a.b"], vec![]), "first");
    let b = authz(&["10.0.0.0/8"], Authentication::Unauthenticated, "second");
    let c = authz(&["0.0.0.0/0"], Authentication::Unauthenticated, "third");
    let p = opaque(vec![a, b, c]);
    let name = |ip_s: &str, t: ClientTls<'_>| {
        p.authorize_connection(ip(ip_s), t)
            .map(|p| p.authorization.meta.name().to_string())
            .ok()
    };
    assert_eq!(name("10.0.0.1", tls("a.b")).as_deref(), Some("first"));
    assert_eq!(name("10.0.0.1", ClientTls::None).as_deref(), Some("second"));
    assert_eq!(name("192.168.0.1", tls("a.b")).as_deref(), Some("third"));
}

#[test]
fn detect_and_tls_ports_use_tcp_authorizations() {
    let authzs: Arc<[Authorization]> =
        Arc::new([authz(&["10.0.0.0/8"], Authentication::Unauthenticated, "a")]);
    for protocol in [
        Protocol::Detect {
            timeout: Duration::from_secs(1),
            http: Arc::new([]),
            tcp_authorizations: authzs.clone(),
        },
        Protocol::Tls(authzs.clone()),
    ] {
        let p = ServerPolicy {
            meta: Meta::new_default("srv"),
            protocol,
            local_rate_limit: Default::default(),
        };
        assert!(p
            .authorize_connection(ip("10.1.1.1"), ClientTls::None)
            .is_ok());
        assert!(p
            .authorize_connection(ip("11.1.1.1"), ClientTls::None)
            .is_err());
    }
}

#[test]
fn audit_permits_are_flagged() {
    let p = defaults::audit(Duration::from_secs(10));
    let permit = p
        .authorize_connection(ip("203.0.113.9"), ClientTls::None)
        .expect("audit admits everyone");
    assert!(permit.is_audit());
    let req = TestReq::get("http://example.com/");
    let decision = p.route_request(&req.view());
    let a = decision
        .authorize(ip("203.0.113.9"), ClientTls::None)
        .expect("authorized");
    assert!(a.is_audit());
}

/// `http_route` of `linkerd/app/inbound/src/policy/http/tests.rs`: a GET rule authorized
/// for one client, a POST rule authorized for no one, and no DELETE rule.
#[test]
fn route_authorization() {
    let rmeta = resource("gateway.networking.k8s.io", "httproute", "testrt");
    let rule = |method: http::Method, authorizations: Vec<Authorization>| HttpRule {
        matches: vec![MatchRequest {
            method: Some(method),
            ..MatchRequest::default()
        }],
        policy: HttpPolicy {
            meta: rmeta.clone(),
            authorizations: authorizations.into(),
            filters: vec![],
        },
    };
    let p = ServerPolicy {
        meta: resource("policy.linkerd.io", "Server", "testsrv"),
        protocol: Protocol::Http1(Arc::new([HttpRoute {
            hosts: vec![],
            rules: vec![
                rule(
                    http::Method::GET,
                    vec![authz(
                        &["192.168.3.3/32"],
                        Authentication::Unauthenticated,
                        "test",
                    )],
                ),
                rule(http::Method::POST, vec![]),
            ],
        }])),
        local_rate_limit: Default::default(),
    };
    let client = ip("192.168.3.3");
    let client_tls = tls("foo.bar.bah");

    let get = TestReq::new();
    let d = p.route_request(&get.view());
    assert_eq!(d.meta(), Some(&rmeta));
    let a = d.authorize(client, client_tls).expect("permitted");
    assert_eq!(a.meta.name(), "test");
    assert_eq!(
        d.authorize(ip("192.168.3.4"), client_tls),
        Err(RouteError::Unauthorized(Unauthorized))
    );

    let post = TestReq::new().method(http::Method::POST);
    let d = p.route_request(&post.view());
    assert!(matches!(d, RouteDecision::Http(_)));
    let RouteDecision::Http(m) = &d else {
        unreachable!()
    };
    assert_eq!(
        authorize_route(m.policy, client, client_tls),
        Err(Unauthorized)
    );
    assert_eq!(Unauthorized.to_string(), "unauthorized request on route");

    let delete = TestReq::new().method(http::Method::DELETE);
    let d = p.route_request(&delete.view());
    assert_eq!(d, RouteDecision::NotFound);
    assert_eq!(
        d.authorize(client, client_tls),
        Err(RouteError::NotFound(RouteNotFound))
    );
    assert_eq!(RouteNotFound.to_string(), "no route found for request");
}
