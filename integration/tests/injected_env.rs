//! The binary started with exactly the environment a current Linkerd injector gives the
//! proxy container: it must run (alive, certified, still up a second later); and without
//! `LINKERD2_PROXY_POLICY_SVC_ADDR`, which a meshed proxy needs, it must exit 64 naming it.
//!
//! The block is the `linkerd-proxy` container's `env` in `linkerd/linkerd2` @ `b24cd40`
//! (2026-08-21), `cli/cmd/testdata/inject_emojivoto_deployment.golden.yml` (rendered from
//! `charts/partials/templates/_proxy.tpl` with the default values): every variable, in order,
//! with the values as written, `$(..)` references expanded as the kubelet does, and only the
//! addresses changed:
//! - the listeners are on `127.0.0.1`, port 0 except the admin one (the default log level
//!   logs no listening address, so the admin port is picked here);
//! - the Identity service is the mock one (`ringlink_integration::identity`), on loopback, so
//!   reached in plaintext; `IDENTITY_DIR` and `_TOKEN_FILE` point at a temporary directory;
//! - the Destination and policy controllers are loopback ports nothing listens on;
//! - the `fieldRef` values (pod name, namespace, IPs, ...) are made up, the pod IPs loopback.

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringlink_integration::http::call;
use ringlink_integration::identity::{self as mock, IdentityServer, TokenDir};
use ringlink_integration::proxy;

const EXIT_CONFIG: i32 = 64;
const TOKEN: &[u8] = b"projected-service-account-token";

/// Where the environment's addresses point.
struct Addrs {
    admin: SocketAddr,
    destination: SocketAddr,
    policy: SocketAddr,
}

/// The golden file's proxy `env`, in order: `(name, value)`, where a `fieldRef` value is the
/// made-up pod's and `$(..)` is expanded afterwards by [`expand`].
fn injected_env(identity: &IdentityServer, dir: &TokenDir, addrs: &Addrs) -> Vec<(String, String)> {
    let anchors = identity.trust_anchors_pem();
    let admin = addrs.admin.to_string();
    let destination = addrs.destination.to_string();
    let policy = addrs.policy.to_string();
    let identity_addr = identity.addr().to_string();
    let identity_dir = dir.0.display().to_string();
    let token_file = dir.token().display().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("_pod_name", "web-5f86686c4d-58p7k"),                 // fieldRef metadata.name
        ("_pod_ns", "emojivoto"),                              // fieldRef metadata.namespace
        ("_pod_uid", "0f4a9c1e-1b7d-4c43-9d5e-2f6a8b1c3d4e"),  // fieldRef metadata.uid
        ("_pod_ip", "127.0.0.1"),                              // fieldRef status.podIP
        ("_pod_nodeName", "node-1"),                           // fieldRef spec.nodeName
        ("_pod_containerName", "linkerd-proxy"),
        ("LINKERD2_PROXY_CORES", "1"),
        ("LINKERD2_PROXY_CORES_MIN", "1"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "false"),
        (
            "LINKERD2_PROXY_LOG",
            "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off",
        ),
        ("LINKERD2_PROXY_LOG_FORMAT", "plain"),
        // linkerd-dst-headless.linkerd.svc.cluster.local.:8086
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &destination),
        (
            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS",
            "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
        ),
        // linkerd-policy.linkerd.svc.cluster.local.:8090
        ("LINKERD2_PROXY_POLICY_SVC_ADDR", &policy),
        (
            "LINKERD2_PROXY_POLICY_WORKLOAD",
            "{\"ns\":\"$(_pod_ns)\", \"pod\":\"$(_pod_name)\"}\n",
        ),
        ("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "all-unauthenticated"),
        (
            "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS",
            "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
        ),
        ("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", "3s"),
        ("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", "5m"),
        ("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME", "1h"),
        ("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "100ms"),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "1000ms"),
        ("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "5s"),
        ("LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT", "90s"),
        ("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "127.0.0.1:0"), // 0.0.0.0:4190
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", &admin),          // 0.0.0.0:4191
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"), // 127.0.0.1:4140
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS", "127.0.0.1:0"), // 127.0.0.1:4140
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"), // 0.0.0.0:4143
        ("LINKERD2_PROXY_INBOUND_IPS", "127.0.0.1"),           // fieldRef status.podIPs
        ("LINKERD2_PROXY_INBOUND_PORTS", "80"),
        ("LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES", "svc.cluster.local."),
        ("LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE", "10000ms"),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE", "10000ms"),
        ("LINKERD2_PROXY_INBOUND_ACCEPT_USER_TIMEOUT", "30s"),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT", "30s"),
        ("LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS", "false"),
        ("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL", "10s"),
        ("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT", "3s"),
        ("LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL", "10s"),
        ("LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT", "3s"),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "25,587,3306,4444,5432,6379,9300,11211",
        ),
        (
            "LINKERD2_PROXY_DESTINATION_CONTEXT",
            "{\"ns\":\"$(_pod_ns)\", \"nodeName\":\"$(_pod_nodeName)\", \"pod\":\"$(_pod_name)\"}\n",
        ),
        ("_pod_sa", "web"), // fieldRef spec.serviceAccountName
        ("_l5d_ns", "linkerd"),
        ("_l5d_trustdomain", "cluster.local"),
        ("LINKERD2_PROXY_IDENTITY_DIR", &identity_dir), // /var/run/linkerd/identity/end-entity
        ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", &anchors),
        // /var/run/secrets/tokens/linkerd-identity-token
        ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", &token_file),
        // linkerd-identity-headless.linkerd.svc.cluster.local.:8080
        ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", &identity_addr),
        (
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            "$(_pod_sa).$(_pod_ns).serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            "LINKERD2_PROXY_IDENTITY_SVC_NAME",
            "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            "LINKERD2_PROXY_DESTINATION_SVC_NAME",
            "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            "LINKERD2_PROXY_POLICY_SVC_NAME",
            "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
        ),
    ];
    expand(&env)
}

/// The kubelet's `$(VAR)` expansion: a reference to a variable defined earlier in the list
/// is replaced by its value; anything else is left as written.
fn expand(env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut defined: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (name, value) in env {
        let mut expanded = String::new();
        let mut rest = *value;
        while let Some(at) = rest.find("$(") {
            expanded.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            match after.find(')').map(|end| (&after[..end], end)) {
                Some((var, end)) if defined.contains_key(var) => {
                    expanded.push_str(&defined[var]);
                    rest = &after[end + 1..];
                }
                _ => {
                    expanded.push_str("$(");
                    rest = after;
                }
            }
        }
        expanded.push_str(rest);
        defined.insert(name.to_string(), expanded.clone());
        out.push((name.to_string(), expanded));
    }
    out
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
}

/// The proxy, started with exactly `env` (nothing inherited); killed, by its PID, on drop.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(env: &[(String, String)]) -> Running {
        let mut cmd = Command::new(proxy::binary());
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        #[allow(unsafe_code)]
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn ringlink");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, stderr }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `GET path` on the admin server until it answers `want`, at most 10 s.
async fn wait_for(proxy: &mut Running, admin: SocketAddr, path: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = proxy.exited() {
            panic!("ringlink exited with {status}:\n{}", proxy.stderr());
        }
        // Connecting before the admin server listens is refused: retry.
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && call(admin, "GET", path, "").await.status == want
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want}:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_pods_environment_runs() {
    let identity = mock::new();
    identity.expect_token(TOKEN);
    let dir = TokenDir::new("injected-env", TOKEN);
    let addrs = Addrs {
        admin: closed_port(),
        destination: closed_port(),
        policy: closed_port(),
    };
    let env = injected_env(&identity, &dir, &addrs);
    // The expansion did what the kubelet does.
    let value = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(
        value("LINKERD2_PROXY_POLICY_WORKLOAD"),
        "{\"ns\":\"emojivoto\", \"pod\":\"web-5f86686c4d-58p7k\"}\n"
    );
    let local_name = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local";
    assert_eq!(value("LINKERD2_PROXY_IDENTITY_LOCAL_NAME"), local_name);

    let mut proxy = Running::start(&env);
    wait_for(&mut proxy, addrs.admin, "/live", 200).await;
    // Certified by the mock Identity service, with the injected name and token.
    wait_for(&mut proxy, addrs.admin, "/ready", 200).await;
    assert_eq!(identity.last_identity().as_deref(), Some(local_name));
    assert_eq!(identity.last_token().as_deref(), Some(TOKEN));
    // Still up a second later, with the Destination and policy controllers unreachable.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(proxy.exited(), None, "exited:\n{}", proxy.stderr());
    assert_eq!(call(addrs.admin, "GET", "/live", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_policy_address_it_exits_64_naming_it() {
    let identity = mock::new();
    let dir = TokenDir::new("injected-env-no-policy", TOKEN);
    let addrs = Addrs {
        admin: closed_port(),
        destination: closed_port(),
        policy: closed_port(),
    };
    let env: Vec<(String, String)> = injected_env(&identity, &dir, &addrs)
        .into_iter()
        .filter(|(k, _)| k != "LINKERD2_PROXY_POLICY_SVC_ADDR")
        .collect();
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        proxy::run_to_exit(&env, Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains("LINKERD2_PROXY_POLICY_SVC_ADDR"),
        "not named: {stderr}"
    );
    // Nothing was asked of the Identity service.
    assert_eq!(identity.calls(), 0);
}
