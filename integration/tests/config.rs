//! The binary reads Linkerd's environment: invalid values stop it with exit code 64 and one
//! line naming the variable; valid ones are honoured.

use std::time::Duration;

use ringlink_integration::proxy;

const EXIT_CONFIG: i32 = 64;

fn assert_rejected(env: &[(&str, &str)], var: &str) {
    let (status, stderr) = proxy::run_to_exit(env, Duration::from_secs(10));
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{env:?}: {stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].contains(var), "{var} not named in: {stderr}");
}

#[test]
fn invalid_values_exit_64_naming_the_variable() {
    for (var, value) in [
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "10"),
        ("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "1x"),
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "localhost:4140"),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0"),
        ("LINKERD2_PROXY_CORES", "zero"),
        ("LINKERD2_PROXY_CORES_MAX_RATIO", "1.5"),
        ("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "-1s"),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "25,70000",
        ),
        ("LINKERD2_PROXY_LOG_FORMAT", "xml"),
        ("RINGLINK_RUNTIME", "tokio"),
        ("RINGLINK_LISTEN_BACKLOG", "0"),
    ] {
        assert_rejected(&[(var, value)], var);
    }
}

#[test]
fn a_bad_log_filter_exits_64() {
    assert_rejected(&[("LINKERD2_PROXY_LOG", "info,[[[")], "LINKERD2_PROXY_LOG");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = proxy::run_to_exit(
        &[
            ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", &addr),
            ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(71), "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("cannot listen"),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_listening_addresses() {
    let proxy = proxy::new("monoio")
        .env("LINKERD2_PROXY_LOG_FORMAT", "json")
        .env("LINKERD2_PROXY_LOG", "info")
        .spawn();
    let logs = proxy.logs();
    let line = logs.lines().find(|l| l.contains("Listening")).unwrap();
    assert!(
        line.starts_with('{') && line.contains("\"direction\":\"outbound\""),
        "{line}"
    );
}
