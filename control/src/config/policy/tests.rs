use std::collections::HashMap;

use super::super::{Config, DESTINATION_SVC_ADDR};
use super::*;

// === helpers ===

const ADDR: &str = "linkerd-policy.linkerd.svc.cluster.local.:8090";
const NAME: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
/// As the injector writes it: a YAML `|` block, so with a final newline.
const WORKLOAD: &str = "{\"ns\":\"emojivoto\", \"pod\":\"web-5f86686c4d-58p7k\"}\n";
const NETWORKS: &str = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

/// The policy variables the injector writes (L `_proxy.tpl`).
fn injected() -> Vec<(&'static str, String)> {
    [
        (POLICY_SVC_ADDR, ADDR),
        (POLICY_WORKLOAD, WORKLOAD),
        (INBOUND_DEFAULT_POLICY, "all-unauthenticated"),
        (POLICY_CLUSTER_NETWORKS, NETWORKS),
        (INBOUND_PORTS, "80"),
        (POLICY_SVC_NAME, NAME),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// `vars` with each `(var, Some(value))` set and each `(var, None)` removed.
fn with(
    mut vars: Vec<(&'static str, String)>,
    changes: &[(&'static str, Option<&str>)],
) -> HashMap<&'static str, String> {
    for &(var, value) in changes {
        vars.retain(|(k, _)| *k != var);
        if let Some(value) = value {
            vars.push((var, value.to_string()));
        }
    }
    vars.into_iter().collect()
}

fn policy(env: &HashMap<&'static str, String>) -> Option<PolicyConfig> {
    match Config::from_env(env) {
        Ok(config) => config.policy,
        Err(e) => panic!("{env:?} should be valid: {e}"),
    }
}

fn error(env: &HashMap<&'static str, String>) -> ConfigError {
    match Config::from_env(env) {
        Ok(config) => panic!("{env:?} should be invalid, got {:?}", config.policy),
        Err(e) => e,
    }
}

/// Asserts that `changes` applied to the injected variables fail on `var`, carrying
/// `value`.
fn assert_rejected(changes: &[(&'static str, Option<&str>)], var: &str, value: &str) {
    let e = error(&with(injected(), changes));
    assert_eq!((e.var, e.value.as_str()), (var, value), "{changes:?}: {e}");
    assert!(!e.reason.is_empty());
}

fn workload(raw: &str) -> Result<Workload, String> {
    Workload::parse(raw)
}

// === on and off ===

#[test]
fn unset_is_no_policy() {
    assert_eq!(policy(&HashMap::new()), None);
    assert!(Config::default().policy.is_none());
    assert!(Config::default().policy_watch_ports().is_empty());
}

#[test]
fn injected_environment() {
    let p = policy(&with(injected(), &[])).expect("policy configured");
    assert_eq!(p.addr, ADDR);
    assert_eq!(p.name.as_deref(), Some(NAME));
    assert_eq!(p.workload.raw, WORKLOAD);
    assert_eq!(p.workload.namespace, "emojivoto");
    assert_eq!(
        p.workload.kind,
        WorkloadKind::Pod("web-5f86686c4d-58p7k".to_string())
    );
    assert_eq!(p.workload.name(), "web-5f86686c4d-58p7k");
    assert_eq!(p.default_policy, DefaultPolicy::AllUnauthenticated);
    assert_eq!(p.cluster_networks.len(), 5);
    assert!(p.cluster_networks[4].contains("fd00::1".parse().unwrap()));
    assert_eq!(p.inbound_ports, "80".parse().unwrap());
    assert!(!p.svc_is_loopback());
}

#[test]
fn only_the_cluster_and_port_settings_do_not_turn_policy_on() {
    // Without the controller's variables and unmeshed, the inbound settings are checked but
    // policy stays off.
    let env = with(
        injected(),
        &[
            (POLICY_SVC_ADDR, None),
            (POLICY_SVC_NAME, None),
            (POLICY_WORKLOAD, None),
            (INBOUND_DEFAULT_POLICY, Some("deny")),
        ],
    );
    assert_eq!(policy(&env), None);
    let e = error(&with(
        Vec::new(),
        &[(INBOUND_DEFAULT_POLICY, Some("allow-all"))],
    ));
    assert_eq!(e.var, INBOUND_DEFAULT_POLICY);
}

#[test]
fn any_controller_variable_asks_for_all() {
    // Each one alone: the address is the first missing one.
    for (var, value) in [(POLICY_SVC_NAME, NAME), (POLICY_WORKLOAD, WORKLOAD)] {
        let e = error(&with(Vec::new(), &[(var, Some(value))]));
        assert_eq!((e.var, e.value.as_str()), (POLICY_SVC_ADDR, ""), "{var}");
        assert!(e.reason.contains(var), "{e}");
    }
    // The address alone: its name is missing (off loopback), then the workload.
    let e = error(&with(Vec::new(), &[(POLICY_SVC_ADDR, Some(ADDR))]));
    assert_eq!(e.var, POLICY_SVC_NAME);
    assert!(e.reason.contains("loopback"), "{e}");
    let e = error(&with(
        Vec::new(),
        &[(POLICY_SVC_ADDR, Some(ADDR)), (POLICY_SVC_NAME, Some(NAME))],
    ));
    assert_eq!(e.var, POLICY_WORKLOAD);
    assert!(e.reason.contains(POLICY_SVC_ADDR), "{e}");
}

#[test]
fn each_required_variable_missing_is_named() {
    for var in [POLICY_SVC_ADDR, POLICY_SVC_NAME, POLICY_WORKLOAD] {
        let e = error(&with(injected(), &[(var, None)]));
        assert_eq!((e.var, e.value.as_str()), (var, ""), "{e}");
    }
}

#[test]
fn a_meshed_proxy_requires_the_controller() {
    let meshed = with(
        Vec::new(),
        &[(DESTINATION_SVC_ADDR, Some("localhost.:8086"))],
    );
    let e = error(&meshed);
    assert_eq!(e.var, POLICY_SVC_ADDR);
    assert!(e.reason.contains(DESTINATION_SVC_ADDR), "{e}");
    assert!(
        e.to_string().contains("LINKERD2_PROXY_POLICY_SVC_ADDR"),
        "{e}"
    );

    // Identity alone makes the proxy meshed too.
    let identity = [
        (
            super::super::identity::IDENTITY_DIR,
            Some("/var/run/linkerd/identity/end-entity"),
        ),
        (
            super::super::identity::IDENTITY_TRUST_ANCHORS,
            Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
        ),
        (
            super::super::identity::IDENTITY_TOKEN_FILE,
            Some("/var/run/secrets/tokens/linkerd-identity-token"),
        ),
        (
            super::super::identity::IDENTITY_SVC_ADDR,
            Some("localhost.:8080"),
        ),
        (
            super::super::identity::IDENTITY_LOCAL_NAME,
            Some("web.emojivoto.serviceaccount.identity.linkerd.cluster.local"),
        ),
    ];
    let e = error(&with(Vec::new(), &identity));
    assert_eq!(e.var, POLICY_SVC_ADDR);
    assert!(
        e.reason.contains(super::super::identity::IDENTITY_SVC_ADDR),
        "{e}"
    );
    // With the controller configured, both are fine.
    let mut env = with(injected(), &identity);
    assert!(policy(&env).is_some());
    env.insert(DESTINATION_SVC_ADDR, "localhost.:8086".to_string());
    assert!(policy(&env).is_some());
    // ...and dropping one of the controller's variables names it.
    env.remove(POLICY_WORKLOAD);
    assert_eq!(error(&env).var, POLICY_WORKLOAD);
}

#[test]
fn identity_disabled_is_not_meshed() {
    let env = with(
        Vec::new(),
        &[
            (super::super::identity::IDENTITY_DISABLED, Some("true")),
            (
                super::super::identity::IDENTITY_SVC_ADDR,
                Some("localhost.:8080"),
            ),
        ],
    );
    assert_eq!(policy(&env), None);
}

#[test]
fn the_name_may_be_omitted_on_loopback() {
    for addr in [
        "localhost.:8090",
        "localhost:8090",
        "127.0.0.1:8090",
        "[::1]:8090",
    ] {
        let p = policy(&with(
            injected(),
            &[(POLICY_SVC_ADDR, Some(addr)), (POLICY_SVC_NAME, None)],
        ))
        .expect("policy configured");
        assert_eq!((p.addr.as_str(), p.name.as_deref()), (addr, None));
        assert!(p.svc_is_loopback());
    }
    // Off loopback it is required.
    for addr in ["10.0.0.1:8090", "policy.example.com:8090"] {
        let e = error(&with(
            injected(),
            &[(POLICY_SVC_ADDR, Some(addr)), (POLICY_SVC_NAME, None)],
        ));
        assert_eq!(e.var, POLICY_SVC_NAME);
    }
}

// === values ===

#[test]
fn addr_and_name_rejected() {
    for bad in [
        "",
        " ",
        "linkerd-policy",
        ":8090",
        "host:",
        "host:0",
        "host:65536",
    ] {
        assert_rejected(&[(POLICY_SVC_ADDR, Some(bad))], POLICY_SVC_ADDR, bad);
    }
    for bad in [
        "",
        " ",
        "*.linkerd.cluster.local",
        "10.0.0.1",
        "a..b",
        "-a.b",
        "a b",
    ] {
        assert_rejected(&[(POLICY_SVC_NAME, Some(bad))], POLICY_SVC_NAME, bad);
    }
    // Checked even when policy is off.
    let e = error(&with(Vec::new(), &[(POLICY_SVC_NAME, Some("a b"))]));
    assert_eq!(e.var, POLICY_SVC_NAME);
}

#[test]
fn workload_forms() {
    let w = workload("{\"ns\":\"ns1\",\"pod\":\"pod-1\"}").unwrap();
    assert_eq!(
        (w.namespace.as_str(), &w.kind),
        ("ns1", &WorkloadKind::Pod("pod-1".to_string()))
    );
    // Whitespace around tokens and the injector's trailing newline; kept verbatim.
    let raw = " {\"ns\" : \"ns1\" ,\t\"pod\":\"pod-1\" }\n";
    let w = workload(&raw[1..]).unwrap();
    assert_eq!(w.raw, &raw[1..]);
    assert_eq!(w.name(), "pod-1");
    // Keys in any order; unknown keys, of any type, are ignored as the controller does.
    let w = workload(
        "{\"pod\":\"p\",\"nodeName\":\"n\",\"x\":[1,-2.5e3,{\"y\":null}],\"t\":true,\"ns\":\"s\"}",
    )
    .unwrap();
    assert_eq!((w.namespace.as_str(), w.name()), ("s", "p"));
    // External workloads.
    let w = workload("{\"ns\":\"vm\",\"external_workload\":\"db-1\"}").unwrap();
    assert_eq!(w.kind, WorkloadKind::External("db-1".to_string()));
    // Escapes are decoded.
    let w = workload("{\"ns\":\"n\\u0073\",\"pod\":\"p\\/1\"}").unwrap();
    assert_eq!((w.namespace.as_str(), w.name()), ("ns", "p/1"));
    // The legacy form.
    let w = workload("emojivoto:web-0").unwrap();
    assert_eq!(
        (w.namespace.as_str(), &w.kind, w.raw.as_str()),
        (
            "emojivoto",
            &WorkloadKind::Pod("web-0".to_string()),
            "emojivoto:web-0"
        )
    );
}

#[test]
fn workload_rejected() {
    for bad in [
        "",
        " ",
        "\n",
        "emojivoto",
        ":web",
        "emojivoto:",
        "emojivoto: web",
        "emojivoto:web\n",
        // Leading whitespace: the controller would take it for the legacy form.
        " {\"ns\":\"a\",\"pod\":\"b\"}",
        "{",
        "{}",
        "{\"ns\":\"a\"}",
        "{\"pod\":\"b\"}",
        "{\"ns\":\"a\",\"nonsense\":\"b\"}",
        "{\"ns\":\"\",\"pod\":\"b\"}",
        "{\"ns\":\"a\",\"pod\":\"\"}",
        "{\"ns\":\"a b\",\"pod\":\"c\"}",
        "{\"ns\":1,\"pod\":\"b\"}",
        "{\"ns\":\"a\",\"pod\":[\"b\"]}",
        "{\"ns\":\"a\",\"ns\":\"b\",\"pod\":\"c\"}",
        "{\"ns\":\"a\",\"pod\":\"b\",\"external_workload\":\"c\"}",
        "{\"ns\":\"a\",\"pod\":\"b\"} x",
        "{\"ns\":\"a\",\"pod\":\"b\"}{}",
        "{\"ns\":\"a\" \"pod\":\"b\"}",
        "{\"ns\":\"a\",\"pod\":\"b\",}",
        "{'ns':'a','pod':'b'}",
        "{\"ns\":\"a\",\"pod\":\"b\\q\"}",
        "{\"ns\":\"a\",\"pod\":\"b\\ud800\"}",
        "{\"ns\":\"a\",\"pod\":\"b\tc\"}",
        "{\"ns\":\"a\",\"pod\":\"b\",\"x\":01}",
        "{\"ns\":\"a\",\"pod\":\"b\",\"x\":1.}",
        "{\"ns\":\"a\",\"pod\":\"b\",\"x\":tru}",
        "{\"ns\":\"a\",\"pod\":\"b\",\"x\":[1,]}",
        "{\"ns\":\"a\",\"pod\":\"b\"",
    ] {
        assert!(workload(bad).is_err(), "{bad:?} accepted");
        assert_rejected(&[(POLICY_WORKLOAD, Some(bad))], POLICY_WORKLOAD, bad);
    }
    // Deep nesting is refused, not a stack overflow.
    let deep = format!(
        "{{\"ns\":\"a\",\"pod\":\"b\",\"x\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(workload(&deep).unwrap_err().contains("nested too deeply"));
}

#[test]
fn default_policy_values() {
    for (value, want) in [
        ("all-unauthenticated", DefaultPolicy::AllUnauthenticated),
        ("all-authenticated", DefaultPolicy::AllAuthenticated),
        (
            "cluster-unauthenticated",
            DefaultPolicy::ClusterUnauthenticated,
        ),
        ("cluster-authenticated", DefaultPolicy::ClusterAuthenticated),
        ("deny", DefaultPolicy::Deny),
        ("audit", DefaultPolicy::Audit),
        (" deny\n", DefaultPolicy::Deny),
    ] {
        let p = policy(&with(injected(), &[(INBOUND_DEFAULT_POLICY, Some(value))])).unwrap();
        assert_eq!(p.default_policy, want, "{value:?}");
        assert_eq!(want.name(), value.trim());
    }
    // Unset: all-unauthenticated, as linkerd2-proxy (which warns).
    let p = policy(&with(injected(), &[(INBOUND_DEFAULT_POLICY, None)])).unwrap();
    assert_eq!(p.default_policy, DefaultPolicy::AllUnauthenticated);
}

#[test]
fn default_policy_rejected() {
    // Exact names only; the old ones in linkerd2-proxy's doc comment are not accepted.
    for bad in [
        "",
        " ",
        "All-Unauthenticated",
        "DENY",
        "authenticated",
        "unauthenticated",
        "tls-unauthenticated",
        "all_unauthenticated",
        "allow",
    ] {
        assert_rejected(
            &[(INBOUND_DEFAULT_POLICY, Some(bad))],
            INBOUND_DEFAULT_POLICY,
            bad,
        );
    }
}

#[test]
fn cluster_policies_need_cluster_networks() {
    // As linkerd2-proxy: cluster-* without networks is fatal, and so is audit (its match
    // arm comes after the "no cluster networks" one).
    for value in ["cluster-authenticated", "cluster-unauthenticated", "audit"] {
        for networks in [None, Some(""), Some(" , ")] {
            let e = error(&with(
                injected(),
                &[
                    (INBOUND_DEFAULT_POLICY, Some(value)),
                    (POLICY_CLUSTER_NETWORKS, networks),
                ],
            ));
            assert_eq!((e.var, e.value.as_str()), (INBOUND_DEFAULT_POLICY, value));
            assert!(e.reason.contains(POLICY_CLUSTER_NETWORKS), "{e}");
        }
    }
    // deny and all-* need none.
    for value in ["deny", "all-authenticated", "all-unauthenticated"] {
        let p = policy(&with(
            injected(),
            &[
                (INBOUND_DEFAULT_POLICY, Some(value)),
                (POLICY_CLUSTER_NETWORKS, None),
            ],
        ))
        .unwrap();
        assert!(p.cluster_networks.is_empty());
    }
    // Checked whether policy is on or not.
    let e = error(&with(
        Vec::new(),
        &[(INBOUND_DEFAULT_POLICY, Some("cluster-authenticated"))],
    ));
    assert_eq!(e.var, INBOUND_DEFAULT_POLICY);
}

#[test]
fn cluster_networks() {
    let p = policy(&with(
        injected(),
        &[(POLICY_CLUSTER_NETWORKS, Some(" 10.0.0.0/8 ,, fd00::/8,"))],
    ))
    .unwrap();
    assert_eq!(p.cluster_networks.len(), 2);
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "x/8",
        "::/129",
        "10.0.0.0/8;fd00::/8",
    ] {
        assert_rejected(
            &[(POLICY_CLUSTER_NETWORKS, Some(bad))],
            POLICY_CLUSTER_NETWORKS,
            bad,
        );
    }
    // A bad network is reported before the default policy that needs it.
    let e = error(&with(
        injected(),
        &[
            (POLICY_CLUSTER_NETWORKS, Some("x")),
            (INBOUND_DEFAULT_POLICY, Some("nonsense")),
        ],
    ));
    assert_eq!(e.var, POLICY_CLUSTER_NETWORKS);
}

#[test]
fn inbound_ports() {
    let p = policy(&with(
        injected(),
        &[(INBOUND_PORTS, Some("80, 8080-8082,,9090"))],
    ))
    .unwrap();
    let want: PortSet = [80..=80, 8080..=8082, 9090..=9090].into_iter().collect();
    assert_eq!(p.inbound_ports, want);
    // Empty: none (the injector writes "" for a pod without container ports).
    let p = policy(&with(injected(), &[(INBOUND_PORTS, Some(""))])).unwrap();
    assert!(p.inbound_ports.is_empty());
    let p = policy(&with(injected(), &[(INBOUND_PORTS, None)])).unwrap();
    assert!(p.inbound_ports.is_empty());
    for bad in [
        "http", "80-79", "65536", "1-69420", "-1", "1,2-,50", "80 443",
    ] {
        assert_rejected(&[(INBOUND_PORTS, Some(bad))], INBOUND_PORTS, bad);
    }
}

#[test]
fn watched_ports_add_the_admin_port_and_the_gateway_port() {
    let env = with(
        injected(),
        &[
            (INBOUND_PORTS, Some("80,8080")),
            (super::super::ADMIN_LISTEN_ADDR, Some("0.0.0.0:4191")),
        ],
    );
    let c = Config::from_env(&env).unwrap();
    let want: PortSet = [80..=80, 4191..=4191, 8080..=8080].into_iter().collect();
    assert_eq!(c.policy_watch_ports(), want);
    let mut env = env;
    env.insert(
        super::super::INBOUND_GATEWAY_SUFFIXES,
        "svc.cluster.local.".to_string(),
    );
    let c = Config::from_env(&env).unwrap();
    let want: PortSet = [80..=80, 4143..=4143, 4191..=4191, 8080..=8080]
        .into_iter()
        .collect();
    assert_eq!(c.policy_watch_ports(), want);
    // Ephemeral (port 0) listeners are left out.
    env.insert(super::super::ADMIN_LISTEN_ADDR, "127.0.0.1:0".to_string());
    env.insert(super::super::INBOUND_LISTEN_ADDR, "127.0.0.1:0".to_string());
    let c = Config::from_env(&env).unwrap();
    let want: PortSet = [80..=80, 8080..=8080].into_iter().collect();
    assert_eq!(c.policy_watch_ports(), want);
}

#[test]
fn first_invalid_policy_variable_in_field_order() {
    let e = error(&with(
        injected(),
        &[
            (INBOUND_PORTS, Some("x")),
            (POLICY_WORKLOAD, Some("x")),
            (POLICY_SVC_NAME, Some("a b")),
        ],
    ));
    assert_eq!(e.var, POLICY_SVC_NAME);
    let e = error(&with(
        injected(),
        &[(INBOUND_PORTS, Some("x")), (POLICY_WORKLOAD, Some("x"))],
    ));
    assert_eq!(e.var, POLICY_WORKLOAD);
    // An invalid value is reported before a missing one.
    let e = error(&with(
        injected(),
        &[(POLICY_SVC_ADDR, None), (INBOUND_PORTS, Some("x"))],
    ));
    assert_eq!(e.var, INBOUND_PORTS);
}
