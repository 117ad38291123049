//! Network namespaces made by the test itself: a "pod" with Linkerd-shaped iptables rules
//! and a "peer" host joined to it by a veth pair. Addresses are from 198.18.0.0/15 and exist
//! only inside these namespaces.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;

/// The pod's address on the veth link.
pub const POD_IP: &str = "198.18.0.1";
/// The peer host's address.
pub const PEER_IP: &str = "198.18.0.2";
/// The pod's and the peer's IPv6 addresses (unique-local, only inside these namespaces).
pub const POD_IP6: &str = "fd00:198:18::1";
pub const PEER_IP6: &str = "fd00:198:18::2";
const POD_MAC: &str = "02:00:c6:12:00:01";
const PEER_MAC: &str = "02:00:c6:12:00:02";
/// The uid the proxy runs as, exempted from redirection like Linkerd's proxy uid.
pub const PROXY_UID: u32 = 2102;

static NEXT: AtomicUsize = AtomicUsize::new(0);

// === types ===

/// Two namespaces and a link; deleted on drop.
#[derive(Debug)]
pub struct Topology {
    pub pod: String,
    pub peer: String,
}

// === functions ===

/// Why these tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !crate::proc::is_root() {
        return Some("needs root (network namespaces and iptables)".into());
    }
    for tool in ["ip", "iptables", "ip6tables", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "needs `{tool}` (apt-get install iptables iproute2 util-linux)"
            ));
        }
    }
    None
}

fn run(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// === impl Topology ===

impl Topology {
    /// Creates the namespaces, the link (IPv4 and IPv6), and Linkerd's proxy-init rules in the
    /// pod, for both families:
    /// inbound TCP to 4143, the app's outbound TCP to 4140, the proxy's own traffic (uid
    /// 2102) and loopback traffic exempt.
    pub fn create() -> Topology {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let topo = Topology {
            pod: format!("rl-pod-{id}"),
            peer: format!("rl-peer-{id}"),
        };
        run(&["ip", "netns", "add", &topo.pod]);
        run(&["ip", "netns", "add", &topo.peer]);
        // No duplicate address detection in these namespaces: with it, link-local addresses
        // stay tentative for ~1 s and the first IPv6 connect waits on neighbour discovery.
        for ns in [&topo.pod, &topo.peer] {
            for scope in ["all", "default"] {
                let knob = format!("/proc/sys/net/ipv6/conf/{scope}/accept_dad");
                topo.exec_in(ns, &["sh", "-c", &format!("echo 0 > {knob}")]);
            }
        }
        let (a, b) = (
            format!("rlp{n}x{}", std::process::id() % 10000),
            format!("rlq{n}x{}", std::process::id() % 10000),
        );
        run(&[
            "ip", "link", "add", &a, "address", POD_MAC, "netns", &topo.pod, "type", "veth",
            "peer", "name", &b, "address", PEER_MAC, "netns", &topo.peer,
        ]);
        for (ns, dev, ip, ip6, other_ip, other_ip6, other_mac) in [
            (&topo.pod, &a, POD_IP, POD_IP6, PEER_IP, PEER_IP6, PEER_MAC),
            (&topo.peer, &b, PEER_IP, PEER_IP6, POD_IP, POD_IP6, POD_MAC),
        ] {
            topo.exec_in(ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", dev]);
            // nodad: usable at once, without duplicate address detection's delay.
            let ip6 = format!("{ip6}/64");
            topo.exec_in(ns, &["ip", "-6", "addr", "add", &ip6, "dev", dev, "nodad"]);
            topo.exec_in(ns, &["ip", "link", "set", dev, "up"]);
            topo.exec_in(ns, &["ip", "link", "set", "lo", "up"]);
            // Static neighbours: no ARP or neighbour discovery on the first connect (IPv6
            // neighbour discovery waits ~1 s while link-local addresses are tentative).
            for other in [other_ip, other_ip6] {
                let argv = [
                    "ip",
                    "neigh",
                    "replace",
                    other,
                    "lladdr",
                    other_mac,
                    "nud",
                    "permanent",
                    "dev",
                    dev,
                ];
                topo.exec_in(ns, &argv);
            }
        }
        let uid = PROXY_UID;
        for rule in [
            "-t nat -N PROXY_INIT_REDIRECT".to_string(),
            "-t nat -A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -j RETURN".into(),
            "-t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143".into(),
            "-t nat -A PREROUTING -j PROXY_INIT_REDIRECT".into(),
            "-t nat -N PROXY_INIT_OUTPUT".into(),
            format!("-t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner {uid} -j RETURN"),
            "-t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN".into(),
            "-t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140".into(),
            "-t nat -A OUTPUT -j PROXY_INIT_OUTPUT".into(),
        ] {
            for tool in ["iptables", "ip6tables"] {
                let mut argv = vec![tool];
                argv.extend(rule.split_whitespace());
                topo.exec_in(&topo.pod, &argv);
            }
        }
        topo
    }

    pub fn exec_in(&self, ns: &str, argv: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        run(&full);
    }

    /// A proxy that runs in the pod as the proxy's uid (exempt from the redirect rules).
    pub fn proxy(&self, runtime: &str) -> crate::proxy::Builder {
        let uid = PROXY_UID;
        crate::proxy::new(runtime).wrapper(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.pod.clone(),
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ])
    }

    /// Starts a server in namespace `ns` that accepts one connection on `addr` and echoes it
    /// until end of stream; returns once it listens. Joining gives the peer address it saw.
    pub fn echo_once_in(ns: &str, addr: SocketAddr) -> std::thread::JoinHandle<SocketAddr> {
        let ns = ns.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            Topology::run_in(&ns, move || async move {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready_tx.send(()).unwrap();
                let (mut stream, seen_from) = listener.accept().await.unwrap();
                let (mut r, mut w) = stream.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
                seen_from
            })
        });
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("echo server in namespace did not start");
        server
    }

    /// Runs `f` on a thread whose sockets live in namespace `ns`, on its own tokio runtime.
    pub fn run_in<F, Fut, T>(ns: &str, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            #[allow(unsafe_code)]
            // SAFETY: setns on a namespace fd we opened; it only affects this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .expect("namespace thread panicked")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
