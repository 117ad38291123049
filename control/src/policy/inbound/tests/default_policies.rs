//! The built-in policies (`linkerd/app/inbound/src/policy/defaults.rs`) and their mapping
//! from the configuration's `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`.

use super::*;
use ipnet::IpNet;

const TIMEOUT: Duration = Duration::from_secs(10);

fn cluster() -> Vec<IpNet> {
    vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
}

/// Whether a client is admitted on a connection and on a request to the catch-all route.
fn admits(p: &ServerPolicy, client: &str, t: ClientTls<'_>) -> bool {
    let conn = p.authorize_connection(ip(client), t).is_ok();
    let req = TestReq::get("http://example.com/any/path?x=1");
    let decision = p.route_request(&req.view());
    let http = decision.authorize(ip(client), t).is_ok();
    assert_eq!(conn, http, "{} {client} {t:?}", p.meta.name());
    conn
}

#[test]
fn each_default_is_detect_with_one_authorization_on_a_catch_all_route() {
    for d in BuiltinPolicy::ALL {
        let p = d.policy(TIMEOUT, &cluster());
        assert_eq!(*p.meta, *Meta::new_default(d.name()));
        assert!(p.local_rate_limit.is_empty());
        if d == BuiltinPolicy::Deny {
            assert_eq!(p.protocol, Protocol::Opaque(Arc::new([])));
            continue;
        }
        let Protocol::Detect {
            timeout,
            http,
            tcp_authorizations,
        } = &p.protocol
        else {
            panic!("{d}: {:?}", p.protocol);
        };
        assert_eq!(*timeout, TIMEOUT);
        assert_eq!(tcp_authorizations.len(), 1);
        assert_eq!(tcp_authorizations[0].meta.name(), d.name());
        assert_eq!(
            **http,
            [HttpRoute::catch_all(tcp_authorizations.clone())],
            "{d}"
        );
        assert_eq!(http[0].rules[0].policy.meta.name(), "default");
    }
}

#[test]
fn who_each_default_admits() {
    let nets = cluster();
    let id = "web.ns.serviceaccount.identity.linkerd.cluster.local";
    let spiffe = "spiffe://cluster.local/ns/ns/sa/web";
    let id_tls = tls(id);
    let no_id = ClientTls::Tls { client_id: None };
    let plain = ClientTls::None;

    // (policy, [in-cluster plain, in-cluster TLS without id, in-cluster id, outside id,
    //  outside plain, in-cluster v6 id, in-cluster SPIFFE id])
    let table = [
        (
            BuiltinPolicy::AllUnauthenticated,
            [true, true, true, true, true, true, true],
        ),
        (
            BuiltinPolicy::AllAuthenticated,
            [false, false, true, true, false, true, false],
        ),
        (
            BuiltinPolicy::ClusterUnauthenticated,
            [true, true, true, false, false, true, true],
        ),
        (
            BuiltinPolicy::ClusterAuthenticated,
            [false, false, true, false, false, true, false],
        ),
        (
            BuiltinPolicy::Audit,
            [true, true, true, true, true, true, true],
        ),
        (
            BuiltinPolicy::AllTlsUnauthenticated,
            [false, true, true, true, false, true, true],
        ),
    ];
    for (d, expected) in table {
        let p = d.policy(TIMEOUT, &nets);
        let got = [
            admits(&p, "10.1.2.3", plain),
            admits(&p, "10.1.2.3", no_id),
            admits(&p, "10.1.2.3", id_tls),
            admits(&p, "192.168.1.1", id_tls),
            admits(&p, "192.168.1.1", plain),
            admits(&p, "fd00::5", id_tls),
            admits(&p, "10.1.2.3", tls(spiffe)),
        ];
        assert_eq!(got, expected, "{d}");
    }

    let deny = BuiltinPolicy::Deny.policy(TIMEOUT, &nets);
    assert!(deny
        .authorize_connection(ip("127.0.0.1"), ClientTls::None)
        .is_err());
    let req = TestReq::get("/");
    assert_eq!(deny.route_request(&req.view()), RouteDecision::NotFound);

    // Only `audit` is flagged.
    for d in [BuiltinPolicy::AllUnauthenticated, BuiltinPolicy::Audit] {
        let p = d.policy(TIMEOUT, &nets);
        let permit = p.authorize_connection(ip("1.2.3.4"), plain).unwrap();
        assert_eq!(permit.is_audit(), d == BuiltinPolicy::Audit);
    }
}

#[test]
fn cluster_defaults_without_networks_admit_no_one() {
    let p = BuiltinPolicy::ClusterUnauthenticated.policy(TIMEOUT, &[]);
    assert!(!admits(&p, "10.1.2.3", ClientTls::None));
}

#[test]
fn opaque_defaults_for_ports_without_detection() {
    let nets = cluster();
    for d in BuiltinPolicy::ALL {
        let p = d.opaque_policy(TIMEOUT, &nets);
        let detect = d.policy(TIMEOUT, &nets);
        assert_eq!(p.meta, detect.meta);
        assert_eq!(
            p.protocol,
            Protocol::Opaque(detect.protocol.tcp_authorizations().unwrap().into())
        );
        let req = TestReq::get("/");
        assert_eq!(p.route_request(&req.view()), RouteDecision::NotFound);
    }
    let p = BuiltinPolicy::ClusterAuthenticated.opaque_policy(TIMEOUT, &nets);
    assert!(p.authorize_connection(ip("10.0.0.1"), tls("a.b.c")).is_ok());
    assert!(p
        .authorize_connection(ip("10.0.0.1"), ClientTls::None)
        .is_err());
}

#[test]
fn names_and_the_configuration_mapping() {
    use crate::config::DefaultPolicy as Env;
    for (env, builtin) in [
        (Env::AllUnauthenticated, BuiltinPolicy::AllUnauthenticated),
        (Env::AllAuthenticated, BuiltinPolicy::AllAuthenticated),
        (
            Env::ClusterUnauthenticated,
            BuiltinPolicy::ClusterUnauthenticated,
        ),
        (
            Env::ClusterAuthenticated,
            BuiltinPolicy::ClusterAuthenticated,
        ),
        (Env::Deny, BuiltinPolicy::Deny),
        (Env::Audit, BuiltinPolicy::Audit),
    ] {
        assert_eq!(BuiltinPolicy::from(env), builtin);
        assert_eq!(env.name(), builtin.name());
        assert_eq!(builtin.to_string(), builtin.name());
    }
    assert_eq!(
        BuiltinPolicy::AllTlsUnauthenticated.name(),
        "all-tls-unauthenticated"
    );

    let cidrs: Vec<crate::config::Cidr> = ["10.0.0.0/8", "fd00::/8", "10.1.2.3/16"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let nets = defaults::cluster_networks(&cidrs);
    assert_eq!(nets.len(), 3);
    let p = BuiltinPolicy::ClusterUnauthenticated.policy(TIMEOUT, &nets);
    assert!(admits(&p, "10.200.0.1", ClientTls::None));
    assert!(admits(&p, "fd00::1", ClientTls::None));
    assert!(!admits(&p, "11.0.0.1", ClientTls::None));
}
