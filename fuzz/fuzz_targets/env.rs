//! `Config::from_env` over a few `LINKERD2_PROXY_*` / `RINGLINK_*` variables with arbitrary
//! values (what an injector, an annotation or an operator puts in the pod spec).
//!
//! The input is NUL-separated `NAME=VALUE` records (environment values cannot hold NUL). A
//! name that is not one of [`NAMES`] stands for `NAMES[sum of its bytes % len]`, so mutated
//! names still hit real variables; a later record for the same variable wins; values are
//! taken as lossy UTF-8.
//!
//! Checked, besides "no panic": every variable `from_env` reads is in [`NAMES`] (so the list
//! cannot go stale unnoticed); an error names a variable that was given, or one that is
//! missing, with an empty value and a reason naming a variable that was given; the answer
//! does not change when read twice or when every ignored variable is set too; an empty
//! environment is `Config::default()`; a configuration has its documented invariants (a
//! listen address, lowercase suffixes ending in `.`, TTL and backoff bounds, the control
//! plane's name unless on loopback, a verbatim workload, the shard count within bounds).

#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use ringlink_control::config::{DefaultPolicy, IGNORED_VARS};
use ringlink_control::{Config, ConfigError, Env};

/// Every variable `Config::from_env` reads, plus the ones it ignores on purpose (from
/// `control/src/config{,/*}.rs`; `grep -ohE '"(LINKERD2_PROXY|RINGLINK)_[A-Z0-9_]+"'`).
const NAMES: &[&str] = &[
    "LINKERD2_PROXY_ACCESS_LOG",
    "LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
    "LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
    "LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT",
    "LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT",
    "LINKERD2_PROXY_CONTROL_STREAM_LIFETIME",
    "LINKERD2_PROXY_CORES",
    "LINKERD2_PROXY_CORES_MAX",
    "LINKERD2_PROXY_CORES_MAX_RATIO",
    "LINKERD2_PROXY_CORES_MIN",
    "LINKERD2_PROXY_DESTINATION_CONTEXT",
    "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS",
    "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
    "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
    "LINKERD2_PROXY_DESTINATION_SVC_NAME",
    "LINKERD2_PROXY_DNS_MAX_TTL",
    "LINKERD2_PROXY_DNS_MIN_TTL",
    "LINKERD2_PROXY_IDENTITY_DIR",
    "LINKERD2_PROXY_IDENTITY_DISABLED",
    "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
    "LINKERD2_PROXY_IDENTITY_MAX_REFRESH",
    "LINKERD2_PROXY_IDENTITY_MIN_REFRESH",
    "LINKERD2_PROXY_IDENTITY_SERVER_ID",
    "LINKERD2_PROXY_IDENTITY_SERVER_NAME",
    "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
    "LINKERD2_PROXY_IDENTITY_SVC_NAME",
    "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
    "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
    "LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE",
    "LINKERD2_PROXY_INBOUND_ACCEPT_USER_TIMEOUT",
    "LINKERD2_PROXY_INBOUND_CONNECT_EXP_BACKOFF_JITTER",
    "LINKERD2_PROXY_INBOUND_CONNECT_EXP_BACKOFF_MAX",
    "LINKERD2_PROXY_INBOUND_CONNECT_EXP_BACKOFF_MIN",
    "LINKERD2_PROXY_INBOUND_CONNECT_KEEPALIVE",
    "LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT",
    "LINKERD2_PROXY_INBOUND_CONNECT_USER_TIMEOUT",
    "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
    "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT",
    "LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT",
    "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
    "LINKERD2_PROXY_INBOUND_HTTP_FAILFAST_TIMEOUT",
    "LINKERD2_PROXY_INBOUND_HTTP_QUEUE_CAPACITY",
    "LINKERD2_PROXY_INBOUND_IPS",
    "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
    "LINKERD2_PROXY_INBOUND_MAX_IN_FLIGHT",
    "LINKERD2_PROXY_INBOUND_PORTS",
    "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_ADAPTIVE_FLOW_CONTROL",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_FRAME_SIZE",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_HEADER_LIST_SIZE",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS",
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_SEND_BUF_SIZE",
    "LINKERD2_PROXY_INGRESS_MODE",
    "LINKERD2_PROXY_LOG",
    "LINKERD2_PROXY_LOG_FORMAT",
    "LINKERD2_PROXY_METRICS_RETAIN_IDLE",
    "LINKERD2_PROXY_OUTBOUND_ACCEPT_KEEPALIVE",
    "LINKERD2_PROXY_OUTBOUND_ACCEPT_USER_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_EXP_BACKOFF_JITTER",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_EXP_BACKOFF_MAX",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_EXP_BACKOFF_MIN",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_DISABLE_INFORMATIONAL_HEADERS",
    "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_CAPACITY",
    "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
    "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
    "LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT",
    "LINKERD2_PROXY_OUTBOUND_MAX_IN_FLIGHT",
    "LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_ADAPTIVE_FLOW_CONTROL",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_FRAME_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_HEADER_LIST_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_SEND_BUF_SIZE",
    "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS",
    "LINKERD2_PROXY_POLICY_SVC_ADDR",
    "LINKERD2_PROXY_POLICY_SVC_NAME",
    "LINKERD2_PROXY_POLICY_WORKLOAD",
    "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED",
    "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD",
    "LINKERD2_PROXY_TAP_SVC_NAME",
    "LINKERD2_PROXY_TRACE_ATTRIBUTES_PATH",
    "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR",
    "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME",
    "LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES",
    "LINKERD2_PROXY_TRACE_SERVICE_NAME",
    "RINGLINK_DNS_NAMESERVERS",
    "RINGLINK_L4_SPLICE",
    "RINGLINK_LISTEN_BACKLOG",
    "RINGLINK_METRICS_RECORDING",
    "RINGLINK_ORIG_DST_OVERRIDE",
    "RINGLINK_RUNTIME",
    // Written by injectors, read by neither proxy (`IGNORED_VARS`).
    "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY",
    "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS",
    "LINKERD2_PROXY_TRACE_ANNOTATIONS_PATH",
    "LINKERD2_PROXY_TRACE_PROTOCOL",
    "_pod_ns",
];

/// The variables given, recording every name `from_env` asks for.
#[derive(Default)]
struct RecordingEnv {
    vars: HashMap<&'static str, String>,
    asked: RefCell<Vec<&'static str>>,
}

// === impl RecordingEnv ===

impl RecordingEnv {
    fn parse(data: &[u8]) -> Self {
        let mut env = RecordingEnv::default();
        for record in data.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let (name, value) = match record.iter().position(|&b| b == b'=') {
                Some(eq) => (&record[..eq], &record[eq + 1..]),
                None => (record, &b""[..]),
            };
            let name = NAMES
                .iter()
                .find(|known| known.as_bytes() == name)
                .copied()
                .unwrap_or_else(|| {
                    let sum: usize = name.iter().map(|&b| usize::from(b)).sum();
                    NAMES[sum % NAMES.len()]
                });
            env.vars
                .insert(name, String::from_utf8_lossy(value).into_owned());
        }
        env
    }

    fn is_given(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }
}

impl Env for RecordingEnv {
    fn var(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        self.asked.borrow_mut().push(name);
        Ok(self.vars.get(name).cloned())
    }
}

fn check_error(env: &RecordingEnv, e: &ConfigError) {
    assert!(!e.reason.is_empty(), "{e:?}");
    let _ = e.to_string();
    if env.is_given(e.var) {
        return;
    }
    // A variable that is missing: because another one, which was given, needs it.
    assert_eq!(e.value, "", "{e:?}");
    assert!(
        env.vars.keys().any(|given| e.reason.contains(given)),
        "{e} names no variable of {:?}",
        env.vars.keys().collect::<Vec<_>>()
    );
}

fn check_config(env: &RecordingEnv, config: &Config) {
    assert!(!config.outbound_listen_addrs.is_empty());
    for (i, addr) in config.outbound_listen_addrs.iter().enumerate() {
        assert!(
            !config.outbound_listen_addrs[..i].contains(addr),
            "duplicate {addr}"
        );
    }
    for suffix in config
        .profile_suffixes
        .iter()
        .chain(&config.inbound_gateway_suffixes)
    {
        assert!(suffix.ends_with('.'), "{suffix:?}");
        assert_eq!(suffix.to_ascii_lowercase(), *suffix);
    }
    assert!(config.dns_min_ttl <= config.dns_max_ttl);
    for backoff in &config.connect_backoff {
        assert!(
            backoff.min <= backoff.max && !backoff.max.is_zero(),
            "{backoff:?}"
        );
        assert!((0.0..=100.0).contains(&backoff.jitter), "{backoff:?}");
    }
    for available in [1, 2, 64] {
        assert!((1..=available).contains(&config.cores.resolve(available)));
    }
    if let Some(identity) = &config.identity {
        assert!(identity.svc_name.is_some() || identity.svc_is_loopback());
        assert!(!identity.local_name.is_empty());
    }
    if let Some(policy) = &config.policy {
        assert!(policy.name.is_some() || policy.svc_is_loopback());
        let raw = env.vars.get("LINKERD2_PROXY_POLICY_WORKLOAD");
        assert_eq!(
            Some(&policy.workload.raw),
            raw,
            "workload not kept verbatim"
        );
        assert!(!policy.workload.namespace.is_empty() && !policy.workload.name().is_empty());
        if !matches!(
            policy.default_policy,
            DefaultPolicy::AllUnauthenticated
                | DefaultPolicy::AllAuthenticated
                | DefaultPolicy::Deny
        ) {
            assert!(
                !policy.cluster_networks.is_empty(),
                "{:?}",
                policy.default_policy
            );
        }
    }
    let watched = config.policy_watch_ports();
    assert!(!watched.contains(0));
    if config.policy.is_some() && config.admin_listen_addr.port() != 0 {
        assert!(watched.contains(config.admin_listen_addr.port()));
    }
    let ports: Vec<_> = config.inbound_opaque_ports.ranges().collect();
    for pair in ports.windows(2) {
        assert!(
            u32::from(*pair[0].end()) + 1 < u32::from(*pair[1].start()),
            "{ports:?}"
        );
    }
    assert!(!config.inbound_opaque_ports.contains(0));
}

fn answer(result: &Result<Config, ConfigError>) -> String {
    format!("{result:?}")
}

fuzz_target!(|data: &[u8]| {
    let env = RecordingEnv::parse(data);
    let result = Config::from_env(&env);
    for name in env.asked.borrow().iter() {
        assert!(
            NAMES.contains(name),
            "{name} is read but missing from NAMES"
        );
    }
    match &result {
        Ok(config) => check_config(&env, config),
        Err(e) => check_error(&env, e),
    }
    if env.vars.is_empty() {
        assert_eq!(answer(&result), answer(&Ok(Config::default())));
    }

    // Read twice, and with every ignored variable set as well: the same answer.
    assert_eq!(
        answer(&Config::from_env(&env)),
        answer(&result),
        "read twice"
    );
    let mut ignoring = RecordingEnv {
        vars: env.vars.clone(),
        ..Default::default()
    };
    for name in IGNORED_VARS {
        ignoring.vars.insert(name, "$(_pod_ns) \n".to_string());
    }
    assert_eq!(
        answer(&Config::from_env(&ignoring)),
        answer(&result),
        "ignored variables"
    );
});
