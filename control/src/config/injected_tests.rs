//! The variables of an injected pod beyond identity and policy: socket options, connect
//! backoff, in-flight limits, HTTP/2 server settings, inbound IPs, gateway and ingress
//! mode, metrics labels, access log, tap, tracing, control stream limits, and the variables
//! that are written but ignored.

use super::connect::{
    ACCEPT_KEEPALIVE, ACCEPT_USER_TIMEOUT, CONNECT_BACKOFF_JITTER, CONNECT_BACKOFF_MAX,
    CONNECT_BACKOFF_MIN, CONNECT_KEEPALIVE, CONNECT_USER_TIMEOUT, MAX_IN_FLIGHT,
};
use super::control::{
    CONTROL_STREAM_IDLE_TIMEOUT, CONTROL_STREAM_INITIAL_TIMEOUT, CONTROL_STREAM_LIFETIME,
};
use super::http2::{
    ADAPTIVE_FLOW_CONTROL, INITIAL_CONNECTION_WINDOW_SIZE, INITIAL_STREAM_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE_VARS, MAX_HEADER_LIST_SIZE,
    MAX_PENDING_ACCEPT_RESET_STREAMS, MAX_SEND_BUF_SIZE,
};
use super::telemetry::{
    TRACE_ATTRIBUTES_PATH, TRACE_COLLECTOR_SVC_ADDR, TRACE_COLLECTOR_SVC_NAME,
    TRACE_EXTRA_ATTRIBUTES, TRACE_SERVICE_NAME,
};
use super::*;

// === helpers ===

fn env(vars: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
    vars.iter().map(|&(k, v)| (k, v.to_string())).collect()
}

fn config(vars: &[(&'static str, &str)]) -> Config {
    match Config::from_env(&env(vars)) {
        Ok(config) => config,
        Err(e) => panic!("{vars:?} should be valid: {e}"),
    }
}

fn error(vars: &[(&'static str, &str)]) -> ConfigError {
    match Config::from_env(&env(vars)) {
        Ok(config) => panic!("{vars:?} should be invalid, got {config:?}"),
        Err(e) => e,
    }
}

/// Asserts that `vars` fail naming `var` with `value`.
fn assert_rejected(vars: &[(&'static str, &str)], var: &'static str, value: &str) {
    let e = error(vars);
    assert_eq!((e.var, e.value.as_str()), (var, value), "{vars:?}: {e}");
    assert!(!e.reason.is_empty());
}

/// Asserts that setting `var` to `value` alone fails naming it.
fn assert_invalid(var: &'static str, value: &str) {
    assert_rejected(&[(var, value)], var, value);
}

const BAD_DURATIONS: [&str; 7] = [
    "",
    " ",
    "10",
    "-1s",
    "1.5s",
    "10 s",
    "99999999999999999999d",
];

// === defaults ===

#[test]
fn defaults() {
    let c = config(&[]);
    assert_eq!(c.accept_keepalive, [None; 2]);
    assert_eq!(c.accept_user_timeout, [None; 2]);
    assert_eq!(c.connect_keepalive, [None; 2]);
    assert_eq!(c.connect_user_timeout, [None; 2]);
    assert_eq!(
        c.connect_backoff,
        [
            Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(10),
                jitter: 0.1
            },
            Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(60),
                jitter: 0.1
            },
        ]
    );
    assert_eq!(c.max_in_flight, [100_000; 2]);
    assert_eq!(c.h2_server, [H2ServerSettings::default(); 2]);
    assert_eq!(
        c.h2_server[0].flow_control,
        H2FlowControl::Fixed {
            initial_stream_window_size: 65_535,
            initial_connection_window_size: 1_048_576
        }
    );
    assert!(c.inbound_ips.is_empty());
    assert!(c.inbound_ip_allowed("10.1.2.3".parse().unwrap()));
    assert!(c.inbound_gateway_suffixes.is_empty());
    assert!(!c.ingress_mode);
    assert!(!c.disable_informational_headers);
    assert!(!c.outbound_metrics_hostname_labels);
    assert_eq!(c.access_log, None);
    assert_eq!(c.tap_svc_name, None);
    assert_eq!(c.trace_collector, None);
    assert_eq!(c.control_stream, ControlStreamLimits::default());
    assert!(c.policy.is_none());
}

// === socket options ===

#[test]
fn keepalive_and_user_timeouts() {
    // What the injector writes.
    let c = config(&[
        (ACCEPT_KEEPALIVE[0], "10000ms"),
        (CONNECT_KEEPALIVE[1], "10000ms"),
        (ACCEPT_USER_TIMEOUT[0], "30s"),
        (CONNECT_USER_TIMEOUT[1], "30s"),
    ]);
    assert_eq!(c.accept_keepalive, [Some(Duration::from_secs(10)), None]);
    assert_eq!(c.connect_keepalive, [None, Some(Duration::from_secs(10))]);
    assert_eq!(c.accept_user_timeout, [Some(Duration::from_secs(30)), None]);
    assert_eq!(
        c.connect_user_timeout,
        [None, Some(Duration::from_secs(30))]
    );
    // The other four.
    let c = config(&[
        (ACCEPT_KEEPALIVE[1], "1s"),
        (CONNECT_KEEPALIVE[0], "0"),
        (ACCEPT_USER_TIMEOUT[1], "2m"),
        (CONNECT_USER_TIMEOUT[0], "500ms"),
    ]);
    assert_eq!(c.accept_keepalive[1], Some(Duration::from_secs(1)));
    assert_eq!(c.connect_keepalive[0], Some(Duration::ZERO));
    assert_eq!(c.accept_user_timeout[1], Some(Duration::from_secs(120)));
    assert_eq!(c.connect_user_timeout[0], Some(Duration::from_millis(500)));
    for vars in [
        ACCEPT_KEEPALIVE,
        ACCEPT_USER_TIMEOUT,
        CONNECT_KEEPALIVE,
        CONNECT_USER_TIMEOUT,
    ] {
        for var in vars {
            for bad in BAD_DURATIONS {
                assert_invalid(var, bad);
            }
        }
    }
}

// === backoff ===

#[test]
fn backoff_all_three() {
    for d in 0..2 {
        let c = config(&[
            (CONNECT_BACKOFF_MIN[d], "1s"),
            (CONNECT_BACKOFF_MAX[d], "1m"),
            (CONNECT_BACKOFF_JITTER[d], " 0.5 "),
        ]);
        assert_eq!(
            c.connect_backoff[d],
            Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
                jitter: 0.5
            }
        );
        // The other direction keeps its default.
        assert_eq!(c.connect_backoff[1 - d], DEFAULT_CONNECT_BACKOFF[1 - d]);
    }
    // Bounds of what linkerd2-proxy accepts: min = max, min 0, jitter 0 and 100.
    let c = config(&[
        (CONNECT_BACKOFF_MIN[0], "0"),
        (CONNECT_BACKOFF_MAX[0], "1ms"),
        (CONNECT_BACKOFF_JITTER[0], "100"),
        (CONNECT_BACKOFF_MIN[1], "3s"),
        (CONNECT_BACKOFF_MAX[1], "3s"),
        (CONNECT_BACKOFF_JITTER[1], "0"),
    ]);
    assert_eq!(c.connect_backoff[0].jitter, 100.0);
    assert_eq!(c.connect_backoff[1].min, c.connect_backoff[1].max);
    assert_eq!(c.connect_backoff[1].jitter, 0.0);
}

#[test]
fn backoff_min_and_max_without_jitter_is_jitter_zero() {
    // As linkerd2-proxy: `jitter.unwrap_or_default()`, not the default 0.1.
    let c = config(&[
        (CONNECT_BACKOFF_MIN[1], "10ms"),
        (CONNECT_BACKOFF_MAX[1], "1s"),
    ]);
    assert_eq!(
        c.connect_backoff[1],
        Backoff {
            min: Duration::from_millis(10),
            max: Duration::from_secs(1),
            jitter: 0.0
        }
    );
}

#[test]
fn backoff_partly_set_names_the_missing_variable() {
    for d in 0..2 {
        let (min, max, jitter) = (
            CONNECT_BACKOFF_MIN[d],
            CONNECT_BACKOFF_MAX[d],
            CONNECT_BACKOFF_JITTER[d],
        );
        assert_rejected(&[(min, "1s")], max, "");
        assert_rejected(&[(min, "1s"), (jitter, "0.1")], max, "");
        assert_rejected(&[(max, "1s")], min, "");
        assert_rejected(&[(max, "1s"), (jitter, "0.1")], min, "");
        assert_rejected(&[(jitter, "0.1")], min, "");
        let e = error(&[(jitter, "0.1")]);
        assert!(e.reason.contains(jitter), "{e}");
    }
}

#[test]
fn backoff_rejected() {
    for d in 0..2 {
        let (min, max, jitter) = (
            CONNECT_BACKOFF_MIN[d],
            CONNECT_BACKOFF_MAX[d],
            CONNECT_BACKOFF_JITTER[d],
        );
        for bad in BAD_DURATIONS {
            assert_rejected(&[(min, bad), (max, "1s")], min, bad);
            assert_rejected(&[(min, "1s"), (max, bad)], max, bad);
        }
        // min > max, and max 0.
        assert_rejected(&[(min, "2s"), (max, "1s")], max, "1s");
        assert_rejected(&[(min, "0"), (max, "0ms")], max, "0ms");
        // Jitter: a finite number in [0, 100].
        for bad in [
            "", " ", "x", "0.1.2", "-0.1", "-1", "100.5", "1e3", "NaN", "nan", "inf", "-inf",
        ] {
            assert_rejected(&[(min, "1s"), (max, "2s"), (jitter, bad)], jitter, bad);
        }
    }
}

// === in-flight limits ===

#[test]
fn max_in_flight() {
    let c = config(&[(MAX_IN_FLIGHT[0], "10"), (MAX_IN_FLIGHT[1], " 0 ")]);
    assert_eq!(c.max_in_flight, [10, 0]);
    for var in MAX_IN_FLIGHT {
        for bad in ["", " ", "-1", "1k", "1.5", "+1", "99999999999999999999999"] {
            assert_invalid(var, bad);
        }
    }
}

// === HTTP/2 server settings ===

#[test]
fn h2_server_settings() {
    for d in 0..2 {
        let c = config(&[
            (MAX_CONCURRENT_STREAMS[d], "100"),
            (MAX_FRAME_SIZE_VARS[d], "16384"),
            (MAX_HEADER_LIST_SIZE[d], "65536"),
            (MAX_PENDING_ACCEPT_RESET_STREAMS[d], "50"),
            (MAX_SEND_BUF_SIZE[d], "409600"),
            (INITIAL_STREAM_WINDOW_SIZE[d], "1"),
            (INITIAL_CONNECTION_WINDOW_SIZE[d], "2147483647"),
        ]);
        let h2 = c.h2_server[d];
        assert_eq!(
            h2,
            H2ServerSettings {
                flow_control: H2FlowControl::Fixed {
                    initial_stream_window_size: 1,
                    initial_connection_window_size: 2_147_483_647,
                },
                max_concurrent_streams: Some(100),
                max_frame_size: Some(16_384),
                max_header_list_size: Some(65_536),
                max_pending_accept_reset_streams: Some(50),
                max_send_buf_size: Some(409_600),
            }
        );
        assert_eq!(c.h2_server[1 - d], H2ServerSettings::default());
    }
}

#[test]
fn h2_flow_control() {
    let default = H2ServerSettings::default().flow_control;
    // Adaptive wins over fixed windows.
    let c = config(&[
        (ADAPTIVE_FLOW_CONTROL[0], "true"),
        (INITIAL_STREAM_WINDOW_SIZE[0], "1"),
        (INITIAL_CONNECTION_WINDOW_SIZE[0], "2"),
    ]);
    assert_eq!(c.h2_server[0].flow_control, H2FlowControl::Adaptive);
    let c = config(&[(ADAPTIVE_FLOW_CONTROL[1], "false")]);
    assert_eq!(c.h2_server[1].flow_control, default);
    // One window alone is ignored, as by linkerd2-proxy.
    let c = config(&[(INITIAL_STREAM_WINDOW_SIZE[0], "1000")]);
    assert_eq!(c.h2_server[0].flow_control, default);
    let c = config(&[(INITIAL_CONNECTION_WINDOW_SIZE[1], "1000")]);
    assert_eq!(c.h2_server[1].flow_control, default);
}

#[test]
fn h2_server_settings_rejected() {
    for d in 0..2 {
        for bad in ["", "yes", "1"] {
            assert_invalid(ADAPTIVE_FLOW_CONTROL[d], bad);
        }
        for var in [
            INITIAL_STREAM_WINDOW_SIZE[d],
            INITIAL_CONNECTION_WINDOW_SIZE[d],
        ] {
            for bad in ["", "-1", "x", "2147483648", "4294967296"] {
                assert_invalid(var, bad);
            }
        }
        for var in [MAX_CONCURRENT_STREAMS[d], MAX_HEADER_LIST_SIZE[d]] {
            for bad in ["", "-1", "x", "4294967296", "1.5"] {
                assert_invalid(var, bad);
            }
        }
        for bad in ["", "0", "16383", "16777216", "x"] {
            assert_invalid(MAX_FRAME_SIZE_VARS[d], bad);
        }
        for var in [MAX_PENDING_ACCEPT_RESET_STREAMS[d], MAX_SEND_BUF_SIZE[d]] {
            for bad in ["", "-1", "x", "99999999999999999999999"] {
                assert_invalid(var, bad);
            }
        }
    }
}

// === inbound IPs, gateway, ingress, labels ===

#[test]
fn inbound_ips() {
    // `status.podIPs`, comma-separated.
    let c = config(&[(INBOUND_IPS, "10.244.1.7,fd00::1:7")]);
    let v4: IpAddr = "10.244.1.7".parse().unwrap();
    let v6: IpAddr = "fd00::1:7".parse().unwrap();
    assert_eq!(c.inbound_ips, vec![v4, v6]);
    assert!(c.inbound_ip_allowed(v4) && c.inbound_ip_allowed(v6));
    assert!(!c.inbound_ip_allowed("10.244.1.8".parse().unwrap()));
    let c = config(&[(INBOUND_IPS, " 10.0.0.1 , 10.0.0.1")]);
    assert_eq!(c.inbound_ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    // Set but empty is an error, as in linkerd2-proxy.
    for bad in [
        "",
        " ",
        "10.0.0.1,",
        "10.0.0.1,,10.0.0.2",
        "10.0.1.1/24",
        "10.4.0.555",
        "blaah",
        "[::1]",
        "10.0.0.1:80",
    ] {
        assert_invalid(INBOUND_IPS, bad);
    }
}

#[test]
fn gateway_suffixes() {
    let c = config(&[(INBOUND_GATEWAY_SUFFIXES, "svc.cluster.local.")]);
    assert_eq!(c.inbound_gateway_suffixes, vec!["svc.cluster.local."]);
    let c = config(&[(INBOUND_GATEWAY_SUFFIXES, "")]);
    assert!(c.inbound_gateway_suffixes.is_empty());
    assert_invalid(INBOUND_GATEWAY_SUFFIXES, "a b");
}

#[test]
fn ingress_mode_and_informational_headers() {
    let c = config(&[(INGRESS_MODE, "true")]);
    assert!(c.ingress_mode);
    // The headers default to off in ingress mode...
    assert!(c.disable_informational_headers);
    // ...unless set explicitly.
    let c = config(&[
        (INGRESS_MODE, "true"),
        (OUTBOUND_DISABLE_INFORMATIONAL_HEADERS, "false"),
    ]);
    assert!(!c.disable_informational_headers);
    let c = config(&[(OUTBOUND_DISABLE_INFORMATIONAL_HEADERS, "true")]);
    assert!(!c.ingress_mode && c.disable_informational_headers);
    for var in [INGRESS_MODE, OUTBOUND_DISABLE_INFORMATIONAL_HEADERS] {
        for bad in ["", "1", "yes"] {
            assert_invalid(var, bad);
        }
    }
}

#[test]
fn metrics_hostname_labels() {
    assert!(
        !config(&[(OUTBOUND_METRICS_HOSTNAME_LABELS, "false")]).outbound_metrics_hostname_labels
    );
    assert!(config(&[(OUTBOUND_METRICS_HOSTNAME_LABELS, "true")]).outbound_metrics_hostname_labels);
    for bad in ["", "1", "on"] {
        assert_invalid(OUTBOUND_METRICS_HOSTNAME_LABELS, bad);
    }
}

// === access log, tap, tracing ===

#[test]
fn access_log() {
    for (value, want) in [
        ("apache", AccessLogFormat::Apache),
        ("APACHE", AccessLogFormat::Apache),
        ("json", AccessLogFormat::Json),
        (" Json ", AccessLogFormat::Json),
    ] {
        assert_eq!(config(&[(ACCESS_LOG, value)]).access_log, Some(want));
        assert_eq!(want.name(), value.trim().to_ascii_lowercase());
    }
    for bad in ["", " ", "plain", "common", "apache,json", "true"] {
        assert_invalid(ACCESS_LOG, bad);
    }
}

#[test]
fn tap_svc_name() {
    let name = "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local";
    assert_eq!(
        config(&[(TAP_SVC_NAME, name)]).tap_svc_name.as_deref(),
        Some(name)
    );
    for bad in [
        "",
        " ",
        "a b",
        "*.example.com",
        "spiffe://cluster.local/tap",
    ] {
        assert_invalid(TAP_SVC_NAME, bad);
    }
}

#[test]
fn trace_collector() {
    let addr = "collector.linkerd-jaeger.svc.cluster.local.:55678";
    let name = "collector.linkerd-jaeger.serviceaccount.identity.linkerd.cluster.local";
    // What the injector writes with tracing on.
    let c = config(&[
        (TRACE_ATTRIBUTES_PATH, "/var/run/linkerd/podinfo/labels"),
        (
            "LINKERD2_PROXY_TRACE_ANNOTATIONS_PATH",
            "/var/run/linkerd/podinfo/annotations",
        ),
        ("LINKERD2_PROXY_TRACE_PROTOCOL", "opentelemetry"),
        (TRACE_SERVICE_NAME, "linkerd-proxy"),
        (TRACE_COLLECTOR_SVC_ADDR, addr),
        (TRACE_COLLECTOR_SVC_NAME, name),
        (
            TRACE_EXTRA_ATTRIBUTES,
            "\nk8s.pod.ip=10.0.0.1\nk8s.container.name=linkerd-proxy",
        ),
    ]);
    assert_eq!(
        c.trace_collector,
        Some(TraceCollectorConfig {
            addr: addr.to_string(),
            name: Some(name.to_string()),
            service_name: Some("linkerd-proxy".to_string()),
            attributes_path: Some("/var/run/linkerd/podinfo/labels".into()),
            extra_attributes: Some(
                "\nk8s.pod.ip=10.0.0.1\nk8s.container.name=linkerd-proxy".to_string()
            ),
        })
    );
    // The opaque attributes alone do not turn tracing on, and are never rejected.
    let c = config(&[
        (TRACE_SERVICE_NAME, ""),
        (TRACE_EXTRA_ATTRIBUTES, "garbage"),
    ]);
    assert_eq!(c.trace_collector, None);
    // On loopback the name may be omitted.
    let c = config(&[(TRACE_COLLECTOR_SVC_ADDR, "localhost.:4317")]);
    assert_eq!(c.trace_collector.unwrap().name, None);
    // Otherwise address and name go together.
    assert_rejected(
        &[(TRACE_COLLECTOR_SVC_ADDR, addr)],
        TRACE_COLLECTOR_SVC_NAME,
        "",
    );
    assert_rejected(
        &[(TRACE_COLLECTOR_SVC_NAME, name)],
        TRACE_COLLECTOR_SVC_ADDR,
        "",
    );
    for bad in ["", "collector", "collector:", ":4317"] {
        assert_invalid(TRACE_COLLECTOR_SVC_ADDR, bad);
    }
    for bad in ["", "a b"] {
        assert_rejected(
            &[
                (TRACE_COLLECTOR_SVC_ADDR, addr),
                (TRACE_COLLECTOR_SVC_NAME, bad),
            ],
            TRACE_COLLECTOR_SVC_NAME,
            bad,
        );
    }
}

// === control stream limits ===

#[test]
fn control_stream_limits() {
    // What the injector writes by default.
    let c = config(&[
        (CONTROL_STREAM_INITIAL_TIMEOUT, "3s"),
        (CONTROL_STREAM_IDLE_TIMEOUT, "5m"),
        (CONTROL_STREAM_LIFETIME, "1h"),
    ]);
    assert_eq!(
        c.control_stream,
        ControlStreamLimits {
            initial_timeout: Some(Duration::from_secs(3)),
            idle_timeout: Some(Duration::from_secs(300)),
            lifetime: Some(Duration::from_secs(3600)),
        }
    );
    // Empty means unset (the injector writes "" when the values are not configured).
    let c = config(&[
        (CONTROL_STREAM_INITIAL_TIMEOUT, ""),
        (CONTROL_STREAM_IDLE_TIMEOUT, ""),
        (CONTROL_STREAM_LIFETIME, ""),
    ]);
    assert_eq!(c.control_stream, ControlStreamLimits::default());
    // Equal values are fine; an unset one does not constrain the others.
    let c = config(&[
        (CONTROL_STREAM_INITIAL_TIMEOUT, "1s"),
        (CONTROL_STREAM_IDLE_TIMEOUT, "1s"),
    ]);
    assert_eq!(c.control_stream.lifetime, None);
    assert_eq!(
        config(&[(CONTROL_STREAM_LIFETIME, "0")])
            .control_stream
            .lifetime,
        Some(Duration::ZERO)
    );
}

#[test]
fn control_stream_limits_rejected() {
    for var in [
        CONTROL_STREAM_INITIAL_TIMEOUT,
        CONTROL_STREAM_IDLE_TIMEOUT,
        CONTROL_STREAM_LIFETIME,
    ] {
        for bad in [" ", "10", "-1s", "1.5s", "soon"] {
            assert_invalid(var, bad);
        }
    }
    // Out of order, as linkerd2-proxy's three checks.
    assert_rejected(
        &[
            (CONTROL_STREAM_INITIAL_TIMEOUT, "3s"),
            (CONTROL_STREAM_IDLE_TIMEOUT, "1s"),
            (CONTROL_STREAM_LIFETIME, ""),
        ],
        CONTROL_STREAM_INITIAL_TIMEOUT,
        "3s",
    );
    assert_rejected(
        &[
            (CONTROL_STREAM_INITIAL_TIMEOUT, "3s"),
            (CONTROL_STREAM_LIFETIME, "1s"),
        ],
        CONTROL_STREAM_INITIAL_TIMEOUT,
        "3s",
    );
    assert_rejected(
        &[
            (CONTROL_STREAM_IDLE_TIMEOUT, "3s"),
            (CONTROL_STREAM_LIFETIME, "1s"),
        ],
        CONTROL_STREAM_IDLE_TIMEOUT,
        "3s",
    );
    let e = error(&[
        (CONTROL_STREAM_IDLE_TIMEOUT, "3s"),
        (CONTROL_STREAM_LIFETIME, "1s"),
    ]);
    assert!(e.reason.contains(CONTROL_STREAM_LIFETIME), "{e}");
}

// === ignored ===

#[test]
fn written_but_unread_variables_are_ignored() {
    let garbage: Vec<(&'static str, &str)> = IGNORED_VARS
        .iter()
        .map(|var| (*var, "\u{1}not a value at all"))
        .collect();
    let c = config(&garbage);
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
    let c = config(&[
        ("LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY", "25,443"),
        ("LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS", "25,443"),
        ("LINKERD2_PROXY_TRACE_PROTOCOL", "opentelemetry"),
        ("LINKERD2_PROXY_TRACE_ANNOTATIONS_PATH", ""),
    ]);
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
}

// === the field order ===

#[test]
fn first_invalid_of_the_new_variables_in_field_order() {
    let all_bad = [
        (CONTROL_STREAM_LIFETIME, "x"),
        (TRACE_COLLECTOR_SVC_ADDR, "x"),
        (TAP_SVC_NAME, "a b"),
        (ACCESS_LOG, "x"),
        (OUTBOUND_METRICS_HOSTNAME_LABELS, "x"),
        (INGRESS_MODE, "x"),
        (INBOUND_GATEWAY_SUFFIXES, "a b"),
        (INBOUND_IPS, "x"),
        (MAX_SEND_BUF_SIZE[0], "x"),
        (MAX_IN_FLIGHT[0], "x"),
        (CONNECT_BACKOFF_MIN[0], "x"),
        (CONNECT_USER_TIMEOUT[0], "x"),
        (CONNECT_KEEPALIVE[0], "x"),
        (ACCEPT_USER_TIMEOUT[0], "x"),
        (ACCEPT_KEEPALIVE[0], "x"),
        (DNS_NAMESERVERS, "x"),
    ];
    // Dropping the first-reported one each time walks the list backwards.
    for n in (1..=all_bad.len()).rev() {
        let e = error(&all_bad[..n]);
        assert_eq!(e.var, all_bad[n - 1].0, "{:?}", &all_bad[..n]);
    }
    // The identity and policy variables come last, in that order.
    let e = error(&[
        (super::policy::POLICY_WORKLOAD, "x"),
        (super::identity::IDENTITY_SVC_ADDR, "x"),
        (CONTROL_STREAM_LIFETIME, "x"),
    ]);
    assert_eq!(e.var, CONTROL_STREAM_LIFETIME);
    let e = error(&[
        (super::policy::POLICY_WORKLOAD, "x"),
        (super::identity::IDENTITY_SVC_ADDR, "x"),
    ]);
    assert_eq!(e.var, super::identity::IDENTITY_SVC_ADDR);
}
