//! The helpers a Linkerd-injected pod runs from the proxy image, against a real proxy and
//! real redirection: `linkerd-await` (the postStart hook) waits for the proxy's `/ready`,
//! then runs its command and, with `--shutdown`, shuts the proxy down; the CNI-mode
//! `linkerd2-network-validator` succeeds only when the pod's connections are redirected to
//! the outbound port (iptables in a network namespace the test makes).

use std::process::Command;
use std::time::{Duration, Instant};

use ringlink_integration::identity::{self as mock, with_identity, TokenDir};
use ringlink_integration::netns::{self, Topology, PEER_IP, POD_IP};
use ringlink_integration::proxy;

const AWAIT: &str = env!("CARGO_BIN_EXE_linkerd-await-it");
const VALIDATOR: &str = env!("CARGO_BIN_EXE_network-validator-it");

fn run(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(program).args(args).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code(), stderr)
}

#[tokio::test]
async fn await_returns_once_ready_and_runs_its_command() {
    let mut proxy = proxy::new("monoio")
        .env("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true")
        .spawn();
    let port = proxy.admin.port().to_string();
    // As the postStart hook runs it.
    let (code, stderr) = tokio::task::spawn_blocking({
        let port = port.clone();
        move || run(AWAIT, &["--timeout=2m", &format!("--port={port}")])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    // Wrapping a command: its status, after the proxy is ready; then --shutdown stops the
    // proxy.
    let (code, _) = tokio::task::spawn_blocking(move || {
        run(
            AWAIT,
            &["--port", &port, "--shutdown", "--", "sh", "-c", "exit 3"],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(3));
    proxy.assert_exits_cleanly(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn await_gives_up_on_a_proxy_that_is_never_ready() {
    // Certified by an Identity service that refuses its token: never ready.
    let service = mock::new();
    service.expect_token("another token");
    let dir = TokenDir::new("await-never", b"token");
    let proxy = with_identity(
        proxy::new("monoio"),
        &service,
        &dir,
        "web.ns.serviceaccount.identity.linkerd.cluster.local",
    )
    .spawn();
    let port = proxy.admin.port().to_string();
    let started = Instant::now();
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        run(
            AWAIT,
            &[
                "--timeout=1s",
                "--backoff=100ms",
                &format!("--port={port}"),
                "--",
                "true",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("not ready"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_validator_fails_without_redirection() {
    // Nothing listens at the connect address and nothing redirects it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connect = closed.local_addr().unwrap().to_string();
    drop(closed);
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen_addr = listen.local_addr().unwrap().to_string();
    drop(listen);
    let (code, stderr) = run(
        VALIDATOR,
        &[
            "--log-format",
            "plain",
            "--log-level",
            "info",
            "--connect-addr",
            &connect,
            "--listen-addr",
            &listen_addr,
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not redirected"), "{stderr}");
}

#[test]
fn the_validator_succeeds_in_a_redirected_pod() {
    if let Some(why) = netns::unavailable() {
        if std::env::var_os("RINGLINK_SKIP_ROOT_TESTS").is_some() {
            eprintln!("SKIPPED: {why} (RINGLINK_SKIP_ROOT_TESTS is set)");
            return;
        }
        panic!("did not run: {why}. Run as root, or set RINGLINK_SKIP_ROOT_TESTS=1 to skip it");
    }
    let topo = Topology::create();
    // In the pod (Linkerd's iptables rules), a connection to the peer is redirected to the
    // outbound port, where the validator listens, as in CNI mode.
    let connect = format!("{PEER_IP}:20001");
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.pod, VALIDATOR])
        .args([
            "--connect-addr",
            &connect,
            "--listen-addr",
            "0.0.0.0:4140",
            "--timeout",
            "5s",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // From the peer (no redirection), the same check fails.
    let connect = format!("{POD_IP}:20001");
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.peer, VALIDATOR])
        .args([
            "--connect-addr",
            &connect,
            "--listen-addr",
            "0.0.0.0:4140",
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
