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

/// Asserts that setting `var` to `value` alone fails, naming `var` and carrying `value`.
fn assert_invalid(var: &'static str, value: &str) -> ConfigError {
    let e = error(&[(var, value)]);
    assert_eq!(e.var, var, "{var}={value:?}: {e}");
    assert_eq!(e.value, value, "{var}={value:?}: {e}");
    assert!(!e.reason.is_empty());
    e
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const ALL_DURATION_VARS: [&str; 6] = [
    INBOUND_CONNECT_TIMEOUT,
    OUTBOUND_CONNECT_TIMEOUT,
    INBOUND_DETECT_TIMEOUT,
    OUTBOUND_DETECT_TIMEOUT,
    SHUTDOWN_GRACE_PERIOD,
    METRICS_RETAIN_IDLE,
];

// === parse_duration ===

#[test]
fn duration_units() {
    let cases = [
        ("0", Duration::ZERO),
        ("0ms", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("0d", Duration::ZERO),
        ("10ms", Duration::from_millis(10)),
        ("1500ms", Duration::from_millis(1500)),
        ("2s", Duration::from_secs(2)),
        ("3m", Duration::from_secs(180)),
        ("1h", Duration::from_secs(3600)),
        ("1d", Duration::from_secs(86_400)),
        ("007s", Duration::from_secs(7)),
    ];
    for (input, want) in cases {
        assert_eq!(parse_duration(input), Ok(want), "{input:?}");
    }
}

#[test]
fn duration_surrounding_whitespace() {
    assert_eq!(parse_duration("  10s "), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("\t500ms\n"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
}

#[test]
fn duration_bare_nonzero_number_rejected() {
    for input in ["1", "10", " 30 ", "00001"] {
        let e = parse_duration(input).unwrap_err();
        assert!(e.contains("missing unit"), "{input:?}: {e}");
    }
}

#[test]
fn duration_malformed_rejected() {
    for input in [
        "", "   ", "-1s", "-0", "+1s", "1.5s", "s", "ms", "10sec", "10S", "10 s", "1h30m", "10us",
        "1e3ms", "٣s", "0x10s",
    ] {
        assert_eq!(
            parse_duration(input),
            Err(EXPECTED_DURATION.to_string()),
            "{input:?}"
        );
    }
}

#[test]
fn duration_overflow_rejected() {
    for input in [
        "99999999999999999999d",
        "99999999999999999999ms",
        "99999999999999999999",
        "18446744073709551616ms", // u64::MAX + 1
        "213503982335d",          // fits in u64, overflows in milliseconds
    ] {
        assert_eq!(
            parse_duration(input),
            Err("duration too large".to_string()),
            "{input:?}"
        );
    }
    assert_eq!(
        parse_duration("18446744073709551615ms"),
        Ok(Duration::from_millis(u64::MAX))
    );
}

// === defaults ===

#[test]
fn defaults() {
    let c = config(&[]);
    assert_eq!(c.outbound_listen_addrs, vec![addr("127.0.0.1:4140")]);
    assert_eq!(c.inbound_listen_addr, addr("0.0.0.0:4143"));
    assert_eq!(c.admin_listen_addr, addr("127.0.0.1:4191"));
    assert_eq!(c.control_listen_addr, addr("0.0.0.0:4190"));
    assert_eq!(c.cores, Cores::default());
    assert_eq!(c.cores.resolve(8), 1);
    assert_eq!(c.inbound_connect_timeout, Duration::from_millis(300));
    assert_eq!(c.outbound_connect_timeout, Duration::from_secs(1));
    assert_eq!(c.inbound_detect_timeout, Duration::from_secs(10));
    assert_eq!(c.outbound_detect_timeout, Duration::from_secs(10));
    assert!(c.inbound_opaque_ports.is_empty());
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(120));
    assert_eq!(c.metrics_retain_idle, Duration::from_secs(600));
    assert!(!c.shutdown_endpoint_enabled);
    assert_eq!(
        c.log_filter,
        "warn,ringlink=info,ringlink_engine=info,ringlink_control=info"
    );
    assert_eq!(c.log_format, LogFormat::Plain);
    assert_eq!(c.runtime, RuntimeKind::Monoio);
    assert_eq!(c.listen_backlog, 1024);
    assert_eq!(c.orig_dst_override, None);
    assert!(c.metrics_recording);
}

#[test]
fn default_impl_matches_empty_env() {
    let (d, e) = (Config::default(), config(&[]));
    // `Config` is not `PartialEq` (it holds an f64); compare the Debug forms instead.
    assert_eq!(format!("{d:?}"), format!("{e:?}"));
}

#[test]
fn unrelated_vars_ignored() {
    let c = config(&[
        // Set by the injector, but not read by linkerd2-proxy either.
        ("LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY", "nonsense"),
        ("PATH", ""),
    ]);
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
}

// === listen addresses ===

#[test]
fn listen_addrs_valid() {
    let c = config(&[
        (OUTBOUND_LISTEN_ADDR, "127.0.0.1:5140"),
        (INBOUND_LISTEN_ADDR, " [::]:5143 "),
        (ADMIN_LISTEN_ADDR, "[::1]:5191"),
        (CONTROL_LISTEN_ADDR, "10.0.0.1:5190"),
    ]);
    assert_eq!(c.outbound_listen_addrs, vec![addr("127.0.0.1:5140")]);
    assert_eq!(c.inbound_listen_addr, addr("[::]:5143"));
    assert_eq!(c.admin_listen_addr, addr("[::1]:5191"));
    assert_eq!(c.control_listen_addr, addr("10.0.0.1:5190"));
}

#[test]
fn listen_addrs_invalid() {
    for var in [
        OUTBOUND_LISTEN_ADDR,
        INBOUND_LISTEN_ADDR,
        ADMIN_LISTEN_ADDR,
        CONTROL_LISTEN_ADDR,
        ORIG_DST_OVERRIDE,
    ] {
        for value in [
            "",
            "  ",
            "127.0.0.1",
            "localhost:4140",
            ":4140",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "::1:4140",
            "1.2.3.4:80,5.6.7.8:80",
        ] {
            let e = assert_invalid(var, value);
            assert_eq!(e.reason, "expected IP:PORT");
        }
    }
}

#[test]
fn outbound_addrs_list() {
    let c = config(&[(OUTBOUND_LISTEN_ADDRS, "127.0.0.1:4140, [::1]:4140")]);
    assert_eq!(
        c.outbound_listen_addrs,
        vec![addr("127.0.0.1:4140"), addr("[::1]:4140")]
    );
    let c = config(&[(OUTBOUND_LISTEN_ADDRS, "0.0.0.0:4140")]);
    assert_eq!(c.outbound_listen_addrs, vec![addr("0.0.0.0:4140")]);
}

#[test]
fn outbound_addrs_take_precedence_over_addr() {
    let c = config(&[
        (OUTBOUND_LISTEN_ADDRS, "127.0.0.1:1111,127.0.0.1:2222"),
        (OUTBOUND_LISTEN_ADDR, "127.0.0.1:3333"),
    ]);
    assert_eq!(
        c.outbound_listen_addrs,
        vec![addr("127.0.0.1:1111"), addr("127.0.0.1:2222")]
    );
    // The singular variable is not even looked at when the list is set.
    let c = config(&[
        (OUTBOUND_LISTEN_ADDRS, "127.0.0.1:1111"),
        (OUTBOUND_LISTEN_ADDR, "garbage"),
    ]);
    assert_eq!(c.outbound_listen_addrs, vec![addr("127.0.0.1:1111")]);
}

#[test]
fn outbound_addrs_invalid() {
    for value in [
        "",
        " ",
        ",",
        "127.0.0.1:4140,",
        ",127.0.0.1:4140",
        "127.0.0.1:4140,,[::1]:4140",
        "127.0.0.1:4140;[::1]:4140",
        "127.0.0.1",
    ] {
        assert_invalid(OUTBOUND_LISTEN_ADDRS, value);
    }
    let e = assert_invalid(OUTBOUND_LISTEN_ADDRS, "127.0.0.1:4140, 127.0.0.1:4140");
    assert!(e.reason.contains("duplicate"), "{e}");
    // Set-but-empty is an error even though the singular variable is valid.
    let e = error(&[
        (OUTBOUND_LISTEN_ADDRS, ""),
        (OUTBOUND_LISTEN_ADDR, "127.0.0.1:4140"),
    ]);
    assert_eq!(e.var, OUTBOUND_LISTEN_ADDRS);
}

#[test]
fn orig_dst_override() {
    let c = config(&[(ORIG_DST_OVERRIDE, "10.1.2.3:8080")]);
    assert_eq!(c.orig_dst_override, Some(addr("10.1.2.3:8080")));
    let c = config(&[(ORIG_DST_OVERRIDE, "[fd00::1]:80")]);
    assert_eq!(c.orig_dst_override, Some(addr("[fd00::1]:80")));
}

// === durations from the environment ===

#[test]
fn duration_vars_valid() {
    let c = config(&[
        (INBOUND_CONNECT_TIMEOUT, "1s"),
        (OUTBOUND_CONNECT_TIMEOUT, "250ms"),
        (INBOUND_DETECT_TIMEOUT, "2m"),
        (OUTBOUND_DETECT_TIMEOUT, "0"),
        (SHUTDOWN_GRACE_PERIOD, " 1h "),
        (METRICS_RETAIN_IDLE, "30s"),
    ]);
    assert_eq!(c.metrics_retain_idle, Duration::from_secs(30));
    assert_eq!(c.inbound_connect_timeout, Duration::from_secs(1));
    assert_eq!(c.outbound_connect_timeout, Duration::from_millis(250));
    assert_eq!(c.inbound_detect_timeout, Duration::from_secs(120));
    assert_eq!(c.outbound_detect_timeout, Duration::ZERO);
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(3600));
}

#[test]
fn duration_vars_invalid() {
    for var in ALL_DURATION_VARS {
        for value in ["", " ", "10", "-1s", "1.5s", "10x", "99999999999999999999d"] {
            let e = assert_invalid(var, value);
            assert_eq!(Err(e.reason), parse_duration(value), "{var}={value:?}");
        }
    }
}

#[test]
fn error_message_names_variable() {
    let e = assert_invalid(INBOUND_CONNECT_TIMEOUT, "10");
    assert_eq!(
        e.to_string(),
        "invalid LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT=\"10\": \
         missing unit, expected a duration like 10s or 500ms"
    );
}

#[test]
fn first_invalid_variable_reported() {
    // Fields are read in declaration order: listen addresses before cores before timeouts.
    let e = error(&[
        (SHUTDOWN_GRACE_PERIOD, "x"),
        (CORES, "0"),
        (ADMIN_LISTEN_ADDR, "x"),
    ]);
    assert_eq!(e.var, ADMIN_LISTEN_ADDR);
    let e = error(&[(SHUTDOWN_GRACE_PERIOD, "x"), (CORES, "0")]);
    assert_eq!(e.var, CORES);
    let e = error(&[(ORIG_DST_OVERRIDE, "x"), (INBOUND_DETECT_TIMEOUT, "x")]);
    assert_eq!(e.var, INBOUND_DETECT_TIMEOUT);
}

// === opaque ports ===

#[test]
fn opaque_ports_valid() {
    let c = config(&[(INBOUND_OPAQUE_PORTS, "25,443,587,3306,4444-4450")]);
    let ports = &c.inbound_opaque_ports;
    for port in [25, 443, 587, 3306, 4444, 4447, 4450] {
        assert!(ports.contains(port), "{port}");
    }
    for port in [1, 24, 26, 80, 4443, 4451, 65535] {
        assert!(!ports.contains(port), "{port}");
    }
    assert!(!ports.is_empty());
}

#[test]
fn opaque_ports_whitespace_and_empty_items() {
    let c = config(&[(INBOUND_OPAQUE_PORTS, " 25 , ,443,, 4444 - 4446 ,")]);
    let want: PortSet = [25..=25, 443..=443, 4444..=4446].into_iter().collect();
    assert_eq!(c.inbound_opaque_ports, want);
}

#[test]
fn opaque_ports_empty_value_is_no_ports() {
    for value in ["", "   ", ",", " , , "] {
        let c = config(&[(INBOUND_OPAQUE_PORTS, value)]);
        assert!(c.inbound_opaque_ports.is_empty(), "{value:?}");
    }
}

#[test]
fn opaque_ports_invalid() {
    let cases = [
        ("0", "out of range"),
        ("0-10", "out of range"),
        ("65536", "out of range"),
        ("1-65536", "out of range"),
        ("99999999999999999999999", "out of range"),
        ("4450-4444", "reversed"),
        ("http", "expected ports"),
        ("-1", "expected ports"),
        ("+25", "expected ports"),
        ("25-", "expected ports"),
        ("-25", "expected ports"),
        ("1-2-3", "expected ports"),
        ("25 443", "expected ports"),
        ("25;443", "expected ports"),
    ];
    for (value, reason) in cases {
        let e = assert_invalid(INBOUND_OPAQUE_PORTS, value);
        assert!(e.reason.contains(reason), "{value:?}: {e}");
    }
}

#[test]
fn port_set_boundaries() {
    let set: PortSet = "1,65535".parse().unwrap();
    assert!(set.contains(1));
    assert!(set.contains(65535));
    assert!(!set.contains(0));
    assert!(!set.contains(2));
    assert!(!set.contains(65534));

    let all: PortSet = "1-65535".parse().unwrap();
    assert!(all.contains(1) && all.contains(32768) && all.contains(65535));
    assert!(!all.contains(0));
}

#[test]
fn port_set_merges_and_sorts() {
    let set: PortSet = "100-200, 150-250, 251, 10, 9, 300-300, 260-270"
        .parse()
        .unwrap();
    assert_eq!(
        set.ranges().collect::<Vec<_>>(),
        vec![9..=10, 100..=251, 260..=270, 300..=300]
    );
    for port in [9, 10, 100, 199, 251, 260, 270, 300] {
        assert!(set.contains(port), "{port}");
    }
    for port in [8, 11, 99, 252, 259, 271, 299, 301] {
        assert!(!set.contains(port), "{port}");
    }
    // Same set written differently compares equal.
    let other: PortSet = "300,260-270,9-10,100-251".parse().unwrap();
    assert_eq!(set, other);
}

#[test]
fn port_set_from_iter() {
    let set: PortSet = [5..=5, 1..=3, 4..=4, 2..=2, RangeInclusive::new(10, 8)]
        .into_iter()
        .collect();
    assert_eq!(set.ranges().collect::<Vec<_>>(), vec![1..=5]);
    let top: PortSet = [65535..=65535, 65534..=65535].into_iter().collect();
    assert_eq!(top.ranges().collect::<Vec<_>>(), vec![65534..=65535]);
    assert!(PortSet::default().is_empty());
    assert!(!PortSet::default().contains(0));
}

// === cores ===

#[test]
fn cores_vars_valid() {
    let c = config(&[
        (CORES, "4"),
        (CORES_MIN, " 2 "),
        (CORES_MAX, "8"),
        (CORES_MAX_RATIO, "0.5"),
    ]);
    assert_eq!(
        c.cores,
        Cores {
            exact: Some(4),
            min: Some(2),
            max: Some(8),
            max_ratio: Some(0.5),
        }
    );
    let c = config(&[(CORES_MAX_RATIO, "1"), (CORES_MIN, "3"), (CORES_MAX, "3")]);
    assert_eq!(c.cores.max_ratio, Some(1.0));
    assert_eq!((c.cores.min, c.cores.max), (Some(3), Some(3)));
}

#[test]
fn cores_vars_invalid() {
    for var in [CORES, CORES_MIN, CORES_MAX] {
        for value in [
            "",
            " ",
            "0",
            "-1",
            "1.5",
            "two",
            "+2",
            "99999999999999999999999",
        ] {
            let e = assert_invalid(var, value);
            assert_eq!(e.reason, "expected an integer of at least 1");
        }
    }
    for value in ["", "0", "0.0", "-0.5", "1.01", "2", "NaN", "inf", "half"] {
        assert_invalid(CORES_MAX_RATIO, value);
    }
}

#[test]
fn cores_min_greater_than_max() {
    let e = error(&[(CORES_MIN, "4"), (CORES_MAX, "2")]);
    assert_eq!(e.var, CORES_MIN);
    assert_eq!(e.value, "4");
    assert!(e.reason.contains(CORES_MAX), "{e}");
}

#[test]
fn cores_resolve_default_is_one() {
    let cores = Cores::default();
    for available in [1, 2, 64] {
        assert_eq!(cores.resolve(available), 1);
    }
    // A nonsensical `available` of 0 is treated as 1.
    assert_eq!(cores.resolve(0), 1);
}

#[test]
fn cores_resolve_exact() {
    let cores = Cores {
        exact: Some(3),
        ..Cores::default()
    };
    assert_eq!(cores.resolve(8), 3);
    assert_eq!(cores.resolve(3), 3);
    // Capped by what is available.
    assert_eq!(cores.resolve(2), 2);
    // Exact wins over the ratio.
    let cores = Cores {
        exact: Some(3),
        max_ratio: Some(1.0),
        ..Cores::default()
    };
    assert_eq!(cores.resolve(8), 3);
}

#[test]
fn cores_resolve_ratio() {
    let ratio = |r| Cores {
        max_ratio: Some(r),
        ..Cores::default()
    };
    assert_eq!(ratio(0.5).resolve(8), 4);
    assert_eq!(ratio(0.5).resolve(7), 3); // floor
    assert_eq!(ratio(0.75).resolve(4), 3);
    assert_eq!(ratio(1.0).resolve(16), 16);
    assert_eq!(ratio(0.3).resolve(10), 3);
    // Never less than 1.
    assert_eq!(ratio(0.1).resolve(2), 1);
    assert_eq!(ratio(0.01).resolve(1), 1);
}

#[test]
fn cores_resolve_min_max_clamps() {
    let cores = Cores {
        min: Some(2),
        ..Cores::default()
    };
    assert_eq!(cores.resolve(8), 2); // default 1 raised to min
    assert_eq!(cores.resolve(1), 1); // ...but never above available

    let cores = Cores {
        max_ratio: Some(1.0),
        max: Some(4),
        ..Cores::default()
    };
    assert_eq!(cores.resolve(16), 4);
    assert_eq!(cores.resolve(3), 3);

    let cores = Cores {
        exact: Some(10),
        min: Some(2),
        max: Some(6),
        max_ratio: None,
    };
    assert_eq!(cores.resolve(32), 6);

    let cores = Cores {
        max_ratio: Some(0.25),
        min: Some(3),
        max: Some(5),
        exact: None,
    };
    assert_eq!(cores.resolve(4), 3); // floor(1) raised to 3
    assert_eq!(cores.resolve(16), 4);
    assert_eq!(cores.resolve(64), 5); // 16 lowered to 5
    assert_eq!(cores.resolve(2), 2); // min 3 capped by 2 available
}

#[test]
fn cores_resolve_from_env() {
    let c = config(&[(CORES_MAX_RATIO, "0.5"), (CORES_MAX, "3")]);
    assert_eq!(c.cores.resolve(4), 2);
    assert_eq!(c.cores.resolve(16), 3);
}

// === booleans, log, runtime, backlog ===

#[test]
fn shutdown_endpoint_enabled() {
    for (value, want) in [
        ("true", true),
        ("TRUE", true),
        (" True ", true),
        ("false", false),
        ("False", false),
    ] {
        let c = config(&[(SHUTDOWN_ENDPOINT_ENABLED, value)]);
        assert_eq!(c.shutdown_endpoint_enabled, want, "{value:?}");
    }
    for value in ["", " ", "1", "0", "yes", "no", "on", "t", "truee"] {
        let e = assert_invalid(SHUTDOWN_ENDPOINT_ENABLED, value);
        assert_eq!(e.reason, "expected true or false");
    }
}

#[test]
fn log_filter() {
    let c = config(&[(LOG, "debug")]);
    assert_eq!(c.log_filter, "debug");
    let c = config(&[(LOG, "  info,ringlink_engine=trace \n")]);
    assert_eq!(c.log_filter, "info,ringlink_engine=trace");
    for value in ["", "   ", "\t\n"] {
        assert_invalid(LOG, value);
    }
}

#[test]
fn log_format() {
    for (value, want) in [
        ("plain", LogFormat::Plain),
        ("PLAIN", LogFormat::Plain),
        ("json", LogFormat::Json),
        (" Json ", LogFormat::Json),
    ] {
        assert_eq!(config(&[(LOG_FORMAT, value)]).log_format, want, "{value:?}");
    }
    for value in ["", " ", "text", "jsonl", "logfmt"] {
        let e = assert_invalid(LOG_FORMAT, value);
        assert_eq!(e.reason, "unknown log format, expected plain or json");
    }
    assert_eq!(LogFormat::Plain.name(), "plain");
    assert_eq!(LogFormat::Json.name(), "json");
}

#[test]
fn runtime() {
    for (value, want) in [
        ("glommio", RuntimeKind::Glommio),
        ("GLOMMIO", RuntimeKind::Glommio),
        ("monoio", RuntimeKind::Monoio),
        (" MonoIO ", RuntimeKind::Monoio),
    ] {
        assert_eq!(config(&[(RUNTIME, value)]).runtime, want, "{value:?}");
    }
    for value in ["", " ", "tokio", "glommio,monoio", "mono"] {
        let e = assert_invalid(RUNTIME, value);
        assert_eq!(e.reason, "unknown runtime, expected glommio or monoio");
    }
    // Names round-trip through the parser.
    for kind in [RuntimeKind::Glommio, RuntimeKind::Monoio] {
        assert_eq!(config(&[(RUNTIME, kind.name())]).runtime, kind);
    }
}

#[test]
fn listen_backlog() {
    for (value, want) in [("1", 1), ("128", 128), (" 4096 ", 4096), ("65535", 65535)] {
        assert_eq!(
            config(&[(LISTEN_BACKLOG, value)]).listen_backlog,
            want,
            "{value:?}"
        );
    }
    for value in ["", " ", "0", "65536", "-1", "1k", "99999999999999999999999"] {
        let e = assert_invalid(LISTEN_BACKLOG, value);
        assert_eq!(e.reason, "expected an integer from 1 to 65535");
    }
}

#[test]
fn l4_splice() {
    assert!(config(&[]).l4_splice);
    for (value, want) in [("on", true), (" OFF", false), ("off", false)] {
        assert_eq!(config(&[(L4_SPLICE, value)]).l4_splice, want, "{value:?}");
    }
    for value in ["", "yes", "1", "spliced"] {
        let e = assert_invalid(L4_SPLICE, value);
        assert_eq!(e.reason, "expected on or off");
    }
}

#[test]
fn metrics_recording() {
    for (value, want) in [("on", true), ("ON", true), (" off ", false), ("Off", false)] {
        assert_eq!(
            config(&[(METRICS_RECORDING, value)]).metrics_recording,
            want,
            "{value:?}"
        );
    }
    for value in ["", " ", "true", "0", "no", "offf"] {
        let e = assert_invalid(METRICS_RECORDING, value);
        assert_eq!(e.reason, "expected on or off");
        assert_eq!(
            e.to_string(),
            format!("invalid RINGLINK_METRICS_RECORDING={value:?}: expected on or off")
        );
    }
}

// === env seam ===

/// An environment holding raw OS strings, like the real one.
struct OsEnv(HashMap<&'static str, OsString>);

impl Env for OsEnv {
    fn var(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        os_var(name, self.0.get(name).cloned())
    }
}

#[cfg(unix)]
#[test]
fn non_utf8_value_names_variable() {
    use std::os::unix::ffi::OsStringExt;

    let raw = OsString::from_vec(b"10\xffs".to_vec());
    let env = OsEnv(HashMap::from([(INBOUND_DETECT_TIMEOUT, raw)]));
    let e = Config::from_env(&env).unwrap_err();
    assert_eq!(e.var, INBOUND_DETECT_TIMEOUT);
    assert_eq!(e.value, "10\u{fffd}s");
    assert_eq!(e.reason, "not valid UTF-8");
}

#[test]
fn os_env_utf8_values_parse() {
    let env = OsEnv(HashMap::from([
        (RUNTIME, OsString::from("glommio")),
        (INBOUND_LISTEN_ADDR, OsString::from("127.0.0.1:9999")),
    ]));
    let c = Config::from_env(&env).unwrap();
    assert_eq!(c.runtime, RuntimeKind::Glommio);
    assert_eq!(c.inbound_listen_addr, addr("127.0.0.1:9999"));
}

#[test]
fn system_env_unset_is_none() {
    assert_eq!(
        SystemEnv.var("RINGLINK_TEST_VARIABLE_THAT_IS_NEVER_SET"),
        Ok(None)
    );
}

#[test]
fn hash_map_env() {
    let map = env(&[(RUNTIME, "glommio")]);
    assert_eq!(map.var(RUNTIME), Ok(Some("glommio".to_string())));
    assert_eq!(map.var(LOG), Ok(None));
}

#[test]
fn dns_ttls_and_pool_settings() {
    let config = Config::from_env(&env(&[])).unwrap();
    assert_eq!(config.dns_min_ttl, Duration::from_secs(1));
    assert_eq!(config.dns_max_ttl, Duration::from_secs(300));
    assert_eq!(config.pool_idle_timeout, Duration::from_secs(3));
    assert_eq!(config.max_idle_conns_per_endpoint, 100);
    let config = Config::from_env(&env(&[
        ("LINKERD2_PROXY_DNS_MIN_TTL", "10s"),
        ("LINKERD2_PROXY_DNS_MAX_TTL", "1m"),
        (
            "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
            "500ms",
        ),
        ("LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT", "0"),
    ]))
    .unwrap();
    assert_eq!(config.dns_min_ttl, Duration::from_secs(10));
    assert_eq!(config.dns_max_ttl, Duration::from_secs(60));
    assert_eq!(config.pool_idle_timeout, Duration::from_millis(500));
    assert_eq!(config.max_idle_conns_per_endpoint, 0);
    let error = Config::from_env(&env(&[
        ("LINKERD2_PROXY_DNS_MIN_TTL", "10s"),
        ("LINKERD2_PROXY_DNS_MAX_TTL", "5s"),
    ]))
    .unwrap_err();
    assert_eq!(error.var, "LINKERD2_PROXY_DNS_MAX_TTL");
    let error = Config::from_env(&env(&[(
        "LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT",
        "-1",
    )]))
    .unwrap_err();
    assert_eq!(
        error.var,
        "LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT"
    );
}

#[test]
fn http2_keepalive_settings() {
    let config = Config::from_env(&env(&[])).unwrap();
    assert_eq!(config.h2_keepalive_interval, [Duration::from_secs(10); 2]);
    assert_eq!(config.h2_keepalive_timeout, [Duration::from_secs(3); 2]);
    let config = Config::from_env(&env(&[
        (
            "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
            "1s",
        ),
        (
            "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
            "250ms",
        ),
    ]))
    .unwrap();
    assert_eq!(config.h2_keepalive_interval[0], Duration::from_secs(1));
    assert_eq!(config.h2_keepalive_timeout[1], Duration::from_millis(250));
    let error = Config::from_env(&env(&[(
        "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
        "soon",
    )]))
    .unwrap_err();
    assert_eq!(
        error.var,
        "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL"
    );
}

// === discovery ===

#[test]
fn destination_is_read_with_its_name_and_context() {
    let c = config(&[
        (
            DESTINATION_SVC_ADDR,
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
        ),
        (
            DESTINATION_SVC_NAME,
            "linkerd-destination.linkerd.serviceaccount.identity",
        ),
        (DESTINATION_CONTEXT, "{\"ns\":\"default\"}"),
        // A meshed proxy needs the policy controller too.
        (policy::POLICY_SVC_ADDR, "localhost.:8090"),
        (policy::POLICY_WORKLOAD, "default:web-0"),
    ]);
    let d = c.destination.expect("configured");
    assert_eq!(
        d.addr,
        "linkerd-dst-headless.linkerd.svc.cluster.local.:8086"
    );
    assert_eq!(
        d.name.as_deref(),
        Some("linkerd-destination.linkerd.serviceaccount.identity")
    );
    assert_eq!(d.context, "{\"ns\":\"default\"}");
    assert!(config(&[]).destination.is_none());
}

#[test]
fn destination_addr_must_be_host_and_port() {
    for bad in ["nonsense", ":8086", "host:", "host:0", "host:99999"] {
        assert_invalid(DESTINATION_SVC_ADDR, bad);
    }
}

#[test]
fn profile_suffixes_and_networks() {
    let c = config(&[]);
    assert_eq!(c.profile_suffixes, vec!["svc.cluster.local.".to_string()]);
    assert!(c.profile_networks.is_empty());
    assert!(c.in_profile_suffixes("web.ns.svc.cluster.local"));
    assert!(c.in_profile_suffixes("WEB.ns.svc.cluster.local."));
    assert!(!c.in_profile_suffixes("web.ns.svc.cluster.localx"));
    assert!(!c.in_profile_suffixes("xsvc.cluster.local.evil"));
    assert!(!c.in_profile_suffixes("example.com"));
    assert!(!c.in_profile_suffixes("10.0.0.1"));

    let c = config(&[
        (PROFILE_SUFFIXES, " Example.COM , test"),
        (PROFILE_NETWORKS, "10.0.0.0/8, 127.0.0.0/8,fd00::/8"),
    ]);
    assert_eq!(c.profile_suffixes, vec!["example.com.", "test."]);
    assert!(c.in_profile_suffixes("a.example.com"));
    assert!(c.in_profile_suffixes("disco.test"));
    assert!(!c.in_profile_suffixes("notexample.com"));
    let contains = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        c.profile_networks.iter().any(|n| n.contains(ip))
    };
    assert!(contains("10.255.0.1"));
    assert!(contains("127.0.0.2"));
    assert!(contains("fd12::1"));
    assert!(!contains("11.0.0.1"));
    assert!(!contains("::1"));

    assert!(config(&[(PROFILE_SUFFIXES, ".")]).in_profile_suffixes("anything.at.all"));
    assert!(config(&[(PROFILE_SUFFIXES, "")])
        .profile_suffixes
        .is_empty());
    for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
        assert_invalid(PROFILE_NETWORKS, bad);
    }
    assert_invalid(PROFILE_SUFFIXES, "a b");
}

#[test]
fn balancer_queue_failfast_and_idle_timeouts() {
    let c = config(&[]);
    assert_eq!(c.http_queue_capacity, [10_000, 10_000]);
    assert_eq!(
        c.http_failfast_timeout,
        [Duration::from_secs(1), Duration::from_secs(3)]
    );
    assert_eq!(
        c.discovery_idle_timeout,
        [Duration::from_secs(90), Duration::from_secs(5)]
    );
    let c = config(&[
        (OUTBOUND_HTTP_QUEUE_CAPACITY, "2"),
        (OUTBOUND_HTTP_FAILFAST_TIMEOUT, "250ms"),
        (OUTBOUND_DISCOVERY_IDLE_TIMEOUT, "1m"),
        (DNS_NAMESERVERS, "127.0.0.1:5353"),
    ]);
    assert_eq!(c.http_queue_capacity[1], 2);
    assert_eq!(c.http_failfast_timeout[1], Duration::from_millis(250));
    assert_eq!(c.discovery_idle_timeout[1], Duration::from_secs(60));
    assert_eq!(c.dns_nameservers, vec![addr("127.0.0.1:5353")]);
    assert_invalid(OUTBOUND_HTTP_QUEUE_CAPACITY, "-1");
    assert_invalid(INBOUND_HTTP_QUEUE_CAPACITY, "lots");
    assert_invalid(OUTBOUND_HTTP_FAILFAST_TIMEOUT, "3");
    assert_invalid(INBOUND_DISCOVERY_IDLE_TIMEOUT, "soon");
    assert_invalid(DNS_NAMESERVERS, "localhost:53");
}
