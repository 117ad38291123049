use std::collections::HashMap;

use super::super::Config;
use super::*;

// === helpers ===

const ANCHORS: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const LOCAL: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const SVC_NAME: &str = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";
const SVC_ADDR: &str = "linkerd-identity-headless.linkerd.svc.cluster.local.:8080";

/// What the injector sets (L `_proxy.tpl`): identity, and the policy controller a meshed
/// proxy needs.
fn injected() -> Vec<(&'static str, String)> {
    [
        (
            super::super::policy::POLICY_SVC_ADDR,
            "linkerd-policy.linkerd.svc.cluster.local.:8090",
        ),
        (
            super::super::policy::POLICY_SVC_NAME,
            "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            super::super::policy::POLICY_WORKLOAD,
            "{\"ns\":\"default\", \"pod\":\"web-0\"}\n",
        ),
        (IDENTITY_DIR, "/var/run/linkerd/identity/end-entity"),
        (IDENTITY_TRUST_ANCHORS, ANCHORS),
        (
            IDENTITY_TOKEN_FILE,
            "/var/run/secrets/tokens/linkerd-identity-token",
        ),
        (IDENTITY_SVC_ADDR, SVC_ADDR),
        (IDENTITY_LOCAL_NAME, LOCAL),
        (IDENTITY_SVC_NAME, SVC_NAME),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

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

fn identity(env: &HashMap<&'static str, String>) -> Option<IdentityConfig> {
    match Config::from_env(env) {
        Ok(config) => config.identity,
        Err(e) => panic!("{env:?} should be valid: {e}"),
    }
}

fn error(env: &HashMap<&'static str, String>) -> ConfigError {
    match Config::from_env(env) {
        Ok(config) => panic!("{env:?} should be invalid, got {:?}", config.identity),
        Err(e) => e,
    }
}

// === IdentityConfig::from_env ===

#[test]
fn unset_is_no_identity() {
    assert_eq!(identity(&HashMap::new()), None);
    // The refresh bounds and the service name alone do not turn identity on.
    let env = with(
        Vec::new(),
        &[
            (IDENTITY_MIN_REFRESH, Some("1s")),
            (IDENTITY_MAX_REFRESH, Some("1h")),
            (IDENTITY_SVC_NAME, Some(SVC_NAME)),
        ],
    );
    assert_eq!(identity(&env), None);
}

#[test]
fn injected_environment() {
    let id = identity(&with(injected(), &[])).expect("identity configured");
    assert_eq!(
        id.dir,
        PathBuf::from("/var/run/linkerd/identity/end-entity")
    );
    assert_eq!(id.trust_anchors_pem, ANCHORS);
    assert_eq!(
        id.token_file,
        PathBuf::from("/var/run/secrets/tokens/linkerd-identity-token")
    );
    assert_eq!(id.svc_addr, SVC_ADDR);
    assert_eq!(id.svc_name.as_deref(), Some(SVC_NAME));
    assert_eq!(id.local_name, LOCAL);
    assert_eq!(id.min_refresh, Duration::from_secs(10));
    assert_eq!(id.max_refresh, Duration::from_secs(24 * 60 * 60));
    assert!(!id.svc_is_loopback());
    // The Debug form leaves the PEM out.
    assert!(!format!("{id:?}").contains("BEGIN"));
}

#[test]
fn refresh_bounds() {
    let env = with(
        injected(),
        &[
            (IDENTITY_MIN_REFRESH, Some("500ms")),
            (IDENTITY_MAX_REFRESH, Some("2h")),
        ],
    );
    let id = identity(&env).expect("identity configured");
    assert_eq!(id.min_refresh, Duration::from_millis(500));
    assert_eq!(id.max_refresh, Duration::from_secs(7200));
    for (var, bad) in [
        (IDENTITY_MIN_REFRESH, "10"),
        (IDENTITY_MAX_REFRESH, "1.5s"),
        (IDENTITY_MAX_REFRESH, ""),
    ] {
        let e = error(&with(injected(), &[(var, Some(bad))]));
        assert_eq!((e.var, e.value.as_str()), (var, bad), "{e}");
    }
    // Checked even when identity is off: a set variable must be valid.
    let e = error(&with(Vec::new(), &[(IDENTITY_MIN_REFRESH, Some("soon"))]));
    assert_eq!(e.var, IDENTITY_MIN_REFRESH);
}

#[test]
fn partly_configured_names_the_first_missing_variable() {
    let cases = [
        (IDENTITY_DIR, IDENTITY_TRUST_ANCHORS),
        (IDENTITY_TRUST_ANCHORS, IDENTITY_DIR),
        (IDENTITY_TOKEN_FILE, IDENTITY_DIR),
        (IDENTITY_SVC_ADDR, IDENTITY_DIR),
        (IDENTITY_LOCAL_NAME, IDENTITY_DIR),
    ];
    for (missing, first_set) in cases {
        let e = error(&with(injected(), &[(missing, None)]));
        assert_eq!(e.var, missing, "{e}");
        assert_eq!(e.value, "");
        assert!(e.reason.contains("must be set"), "{e}");
        assert!(e.reason.contains(first_set), "{e}");
    }

    // Any single one is enough to require the others, named in order.
    let e = error(&with(Vec::new(), &[(IDENTITY_SVC_ADDR, Some(SVC_ADDR))]));
    assert_eq!(e.var, IDENTITY_DIR, "{e}");
    assert!(e.reason.contains(IDENTITY_SVC_ADDR), "{e}");
    let e = error(&with(Vec::new(), &[(IDENTITY_LOCAL_NAME, Some(LOCAL))]));
    assert_eq!(e.var, IDENTITY_DIR, "{e}");
    let e = error(&with(
        injected(),
        &[(IDENTITY_DIR, None), (IDENTITY_TOKEN_FILE, None)],
    ));
    assert_eq!(e.var, IDENTITY_DIR, "{e}");
}

#[test]
fn invalid_values_are_reported_before_missing_ones() {
    let e = error(&with(Vec::new(), &[(IDENTITY_SVC_ADDR, Some("nonsense"))]));
    assert_eq!((e.var, e.value.as_str()), (IDENTITY_SVC_ADDR, "nonsense"));
}

#[test]
fn trust_anchors_must_be_pem() {
    for bad in ["", "  \n", "/var/run/linkerd/roots.pem"] {
        let e = error(&with(injected(), &[(IDENTITY_TRUST_ANCHORS, Some(bad))]));
        assert_eq!(
            (e.var, e.value.as_str()),
            (IDENTITY_TRUST_ANCHORS, bad),
            "{e}"
        );
    }
}

#[test]
fn empty_paths_are_invalid() {
    for var in [IDENTITY_DIR, IDENTITY_TOKEN_FILE] {
        let e = error(&with(injected(), &[(var, Some(""))]));
        assert_eq!(e.var, var, "{e}");
    }
}

#[test]
fn svc_name_may_be_omitted_only_for_loopback() {
    let e = error(&with(injected(), &[(IDENTITY_SVC_NAME, None)]));
    assert_eq!(e.var, IDENTITY_SVC_NAME, "{e}");
    assert!(e.reason.contains("loopback"), "{e}");

    for addr in [
        "localhost.:8080",
        "localhost:8080",
        "LocalHost.:8080",
        "127.0.0.1:8080",
        "127.1.2.3:8080",
        "[::1]:8080",
    ] {
        let env = with(
            injected(),
            &[(IDENTITY_SVC_NAME, None), (IDENTITY_SVC_ADDR, Some(addr))],
        );
        let id = identity(&env).expect("identity configured");
        assert!(id.svc_is_loopback(), "{addr}");
        assert_eq!(id.svc_name, None);
    }
    for addr in [
        "mlocalhost.:8080",
        "localhost1:8080",
        "10.0.0.1:8080",
        "[::2]:80",
    ] {
        let env = with(
            injected(),
            &[(IDENTITY_SVC_NAME, None), (IDENTITY_SVC_ADDR, Some(addr))],
        );
        assert_eq!(error(&env).var, IDENTITY_SVC_NAME, "{addr}");
    }
    assert_eq!(
        error(&with(
            injected(),
            &[(IDENTITY_SVC_NAME, Some("not a name"))]
        ))
        .var,
        IDENTITY_SVC_NAME
    );
}

#[test]
fn local_name_must_be_dns_like() {
    for bad in [
        "",
        "web default",
        "*.example.com",
        "10.0.0.1",
        "-web.ns",
        "web-.ns",
        "a..b",
        "spiffe://cluster.local/ns/default/sa/web",
    ] {
        let e = error(&with(injected(), &[(IDENTITY_LOCAL_NAME, Some(bad))]));
        assert_eq!((e.var, e.value.as_str()), (IDENTITY_LOCAL_NAME, bad), "{e}");
    }
    let id = identity(&with(
        injected(),
        &[(
            IDENTITY_LOCAL_NAME,
            Some(" default_sa.ns.serviceaccount.identity.linkerd.cluster.local "),
        )],
    ))
    .expect("identity configured");
    assert_eq!(
        id.local_name,
        "default_sa.ns.serviceaccount.identity.linkerd.cluster.local"
    );
}

#[test]
fn server_id_and_name_instead_of_local_name() {
    let base = with(injected(), &[(IDENTITY_LOCAL_NAME, None)]);
    let both = |id: &str, name: &str| {
        with(
            base.clone().into_iter().collect(),
            &[
                (IDENTITY_SERVER_ID, Some(id)),
                (IDENTITY_SERVER_NAME, Some(name)),
            ],
        )
    };
    let id = identity(&both(LOCAL, LOCAL)).expect("identity configured");
    assert_eq!(id.local_name, LOCAL);

    let e = error(&both(
        LOCAL,
        "other.ns.serviceaccount.identity.linkerd.cluster.local",
    ));
    assert_eq!(
        (e.var, e.value.as_str()),
        (IDENTITY_SERVER_ID, LOCAL),
        "{e}"
    );
    assert!(e.reason.contains(IDENTITY_SERVER_NAME), "{e}");

    let e = error(&both("spiffe://cluster.local/ns/default/sa/web", LOCAL));
    assert_eq!(e.var, IDENTITY_SERVER_ID, "{e}");

    // One without the other: the other is the missing variable.
    let only = |var: &'static str| with(base.clone().into_iter().collect(), &[(var, Some(LOCAL))]);
    assert_eq!(error(&only(IDENTITY_SERVER_ID)).var, IDENTITY_SERVER_NAME);
    assert_eq!(error(&only(IDENTITY_SERVER_NAME)).var, IDENTITY_SERVER_ID);
    let e = error(&with(Vec::new(), &[(IDENTITY_SERVER_NAME, Some(LOCAL))]));
    assert_eq!(e.var, IDENTITY_DIR, "{e}");
    assert!(e.reason.contains(IDENTITY_SERVER_NAME), "{e}");

    // `_LOCAL_NAME` wins, and the other two are then not read.
    let env = with(
        injected(),
        &[
            (IDENTITY_SERVER_ID, Some("ignored.example")),
            (IDENTITY_SERVER_NAME, Some("not a name")),
        ],
    );
    assert_eq!(identity(&env).expect("configured").local_name, LOCAL);
}

#[test]
fn disabled_means_no_identity() {
    let env = with(injected(), &[(IDENTITY_DISABLED, Some("true"))]);
    assert_eq!(identity(&env), None);
    // Even when the rest is incomplete or invalid.
    let env = with(
        Vec::new(),
        &[
            (IDENTITY_DISABLED, Some("1")),
            (IDENTITY_SVC_ADDR, Some("nonsense")),
        ],
    );
    assert_eq!(identity(&env), None);
    // An empty value does not disable it.
    let env = with(injected(), &[(IDENTITY_DISABLED, Some(""))]);
    assert!(identity(&env).is_some());
}

// === functions ===

#[test]
fn dns_like_names() {
    for good in [
        "a",
        "web.ns.serviceaccount.identity.linkerd.cluster.local",
        "web.ns.serviceaccount.identity.linkerd.cluster.local.",
        "under_score.example",
        "x1.example",
        "1x.example2",
    ] {
        assert!(is_dns_like_name(good), "{good:?}");
    }
    let long_label = format!("{}.example", "a".repeat(64));
    let long_name = ["abcdefghi"; 26].join(".");
    for bad in [
        "",
        ".",
        "a..b",
        ".a",
        "a b",
        "*.example",
        "127.0.0.1",
        "example.123",
        "-a.example",
        "a-.example",
        long_label.as_str(),
        long_name.as_str(),
        "exämple.com",
    ] {
        assert!(!is_dns_like_name(bad), "{bad:?}");
    }
}
