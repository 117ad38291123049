//! The proxy under test: the real binary, in its own process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// === types ===

/// How to start a proxy.
#[derive(Clone, Debug)]
pub struct Builder {
    env: HashMap<String, String>,
    taskset: Option<String>,
    wrapper: Vec<String>,
    block_io_uring: bool,
}

/// A running proxy; killed (by its PID) when dropped.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    /// The tap server's address, when tap is enabled (`LINKERD2_PROXY_TAP_SVC_NAME` with
    /// identity).
    pub tap: Option<SocketAddr>,
    logs: Arc<Mutex<String>>,
}

// === functions ===

/// A proxy on ephemeral loopback ports with one shard, logging at debug.
/// The workload the tests' proxies say they run for (`LINKERD2_PROXY_POLICY_WORKLOAD`).
pub const WORKLOAD: &str = "test:test";

///
/// `runtime` is `monoio` or `glommio`, or `monoio-copy`: monoio with opaque TCP copied
/// through buffers (`RINGLINK_L4_SPLICE=off`), not spliced.
pub fn new(runtime: &str) -> Builder {
    let mut env = HashMap::new();
    let runtime = match runtime {
        "monoio-copy" => {
            env.insert("RINGLINK_L4_SPLICE".to_string(), "off".to_string());
            "monoio"
        }
        other => other,
    };
    for (k, v) in [
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        ("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "127.0.0.1:0"),
        ("LINKERD2_PROXY_LOG", "info,ringlink_engine=debug"),
        ("RINGLINK_RUNTIME", runtime),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    Builder {
        env,
        taskset: None,
        wrapper: Vec::new(),
        block_io_uring: false,
    }
}

/// The binary under test.
pub fn binary() -> PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>/ringlink-it
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("ringlink-it")
}

/// Runs the binary with exactly `env` and waits for it to exit.
pub fn run_to_exit(env: &[(&str, &str)], timeout: Duration) -> (ExitStatus, String) {
    let mut cmd = Command::new(binary());
    cmd.env_clear().envs(env.iter().copied());
    collect_exit(cmd, timeout)
}

/// Runs `cmd` to its exit, returning its status and stderr.
fn collect_exit(mut cmd: Command, timeout: Duration) -> (ExitStatus, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("spawn ringlink");
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, reader.join().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringlink did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// === impl Builder ===

impl Builder {
    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.insert(name.to_string(), value.to_string());
        self
    }

    /// Uses `ctrl` as the Destination service and the policy controller, with the workload
    /// linkerd2-proxy's own tests pass.
    pub fn control_plane(self, ctrl: &crate::controller::Controller) -> Self {
        self.env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", ctrl.addr())
            .env("LINKERD2_PROXY_POLICY_SVC_ADDR", ctrl.policy_addr())
            .env("LINKERD2_PROXY_POLICY_WORKLOAD", WORKLOAD)
    }

    pub fn shards(self, n: usize) -> Self {
        self.env("LINKERD2_PROXY_CORES", n)
    }

    /// Forwards every connection to `addr` instead of reading `SO_ORIGINAL_DST`.
    pub fn orig_dst(self, addr: SocketAddr) -> Self {
        self.env("RINGLINK_ORIG_DST_OVERRIDE", addr)
    }

    /// Runs the proxy under `taskset -c CPUS`.
    pub fn taskset(mut self, cpus: &str) -> Self {
        self.taskset = Some(cpus.to_string());
        self
    }

    /// Runs the proxy under a seccomp filter that refuses `io_uring_setup` with EPERM, as
    /// Docker >= 25's default profile does.
    pub fn block_io_uring(mut self) -> Self {
        self.block_io_uring = true;
        self
    }

    /// Runs the proxy through a wrapper command (e.g. `ip netns exec NS setpriv ...`).
    pub fn wrapper(mut self, argv: Vec<String>) -> Self {
        self.wrapper = argv;
        self
    }

    /// The command line and environment (with PATH, nothing else inherited).
    fn command(&self) -> Command {
        let mut argv: Vec<String> = self.wrapper.clone();
        if let Some(cpus) = &self.taskset {
            argv.extend(["taskset".into(), "-c".into(), cpus.clone()]);
        }
        argv.push(binary().display().to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env);
        if self.block_io_uring {
            refuse_io_uring(&mut cmd);
        }
        cmd
    }

    /// Runs the proxy expecting it to exit by itself; returns its status and stderr.
    pub fn run_to_exit(self, timeout: Duration) -> (ExitStatus, String) {
        collect_exit(self.command(), timeout)
    }

    /// Starts the proxy and waits until it listens.
    pub fn spawn(self) -> Proxy {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn ringlink");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("RINGLINK_TEST_ECHO_LOGS").is_some() {
                    eprintln!("proxy: {line}");
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = logs.lock().unwrap().clone();
            let outbound = listening(&text, "outbound");
            let inbound = listening(&text, "inbound");
            let admin = admin_addr(&text);
            if let (Some(outbound), Some(inbound), Some(admin)) = (outbound, inbound, admin) {
                return Proxy {
                    child,
                    outbound,
                    inbound,
                    admin,
                    tap: logged_addr(&text, "Tap server listening"),
                    logs,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("ringlink exited at startup with {status}:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ringlink did not start listening:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Installs, in the child, a seccomp filter that fails `io_uring_setup` with EPERM.
fn refuse_io_uring(cmd: &mut Command) {
    // Classic BPF over `struct seccomp_data` (nr at offset 0).
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let nr = libc::SYS_io_uring_setup as u32;
    let filter = [
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    #[allow(unsafe_code)]
    // SAFETY: the closure only calls prctl(2) with a filter that lives until exec (the
    // closure owns it), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Kills the proxy if the test process dies first, so that no proxy outlives its test.
fn die_with_parent(cmd: &mut Command) {
    #[allow(unsafe_code)]
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The admin server's address, from its "Admin server listening" line (plain or JSON).
fn admin_addr(logs: &str) -> Option<SocketAddr> {
    logged_addr(logs, "Admin server listening")
}

/// The `addr` field of the first log line with `message` (plain or JSON).
fn logged_addr(logs: &str, message: &str) -> Option<SocketAddr> {
    let line = logs.lines().find(|l| l.contains(message))?;
    let plain = "addr=";
    let json = "\"addr\":\"";
    if let Some(at) = line.find(json) {
        let rest = &line[at + json.len()..];
        return rest[..rest.find('"')?].parse().ok();
    }
    let rest = &line[line.find(plain)? + plain.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The address of the `direction` listener, from the "Listening" line (plain or JSON).
fn listening(logs: &str, direction: &str) -> Option<SocketAddr> {
    let plain = format!("Listening direction={direction} addr=");
    let json = format!("\"direction\":\"{direction}\"");
    for line in logs.lines() {
        if let Some(at) = line.find(&plain) {
            return line[at + plain.len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok();
        }
        if line.contains("\"Listening\"") && line.contains(&json) {
            let key = "\"addr\":\"";
            let rest = &line[line.find(key)? + key.len()..];
            return rest[..rest.find('"')?].parse().ok();
        }
    }
    None
}

// === impl Proxy ===

impl Proxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the proxy has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// How often the proxy's log says its shards parked idle waits (HTTP/1 keep-alive
    /// connections, copied relays).
    pub fn parks(&self) -> usize {
        self.logs().matches("Idle connections parked").count()
    }

    /// The waits the proxy's log says its shards parked, summed over their sweeps.
    pub fn parked_waits(&self) -> usize {
        self.logs()
            .lines()
            .filter(|line| line.contains("Idle connections parked"))
            .filter_map(|line| {
                line.split("parked=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    }

    /// Waits until the proxy has parked idle waits more often than `before` (a count from
    /// [`Proxy::parks`]), and returns the new count; panics after 6 s.
    pub async fn wait_for_park(&self, before: usize) -> usize {
        self.wait_until("a park", Duration::from_secs(6), |p| p.parks() > before)
            .await;
        self.parks()
    }

    /// Waits until the proxy's shards have parked at least `waits` waits in all
    /// ([`Proxy::parked_waits`]); panics after `timeout`.
    pub async fn wait_for_parked_waits(&self, waits: usize, timeout: Duration) {
        let what = format!("{waits} parked waits");
        self.wait_until(&what, timeout, |p| p.parked_waits() >= waits)
            .await
    }

    /// How often the proxy's log says a shard trimmed its heap.
    pub fn trims(&self) -> usize {
        self.logs().matches("Heap trimmed").count()
    }

    /// Waits until the proxy has trimmed its heap more often than `before` (a count from
    /// [`Proxy::trims`]); panics after `timeout`.
    pub async fn wait_for_trim(&self, before: usize, timeout: Duration) {
        self.wait_until("a heap trim", timeout, |p| p.trims() > before)
            .await
    }

    /// Polls `done` every 50 ms until it holds; panics with `what` and the logs after
    /// `timeout`.
    async fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the logs contain `needle`, up to `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // Only ever the process this harness started.
        #[allow(unsafe_code)]
        // SAFETY: kill(2) takes no pointers.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits for the proxy to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Asserts that the proxy exits with status 0 within `timeout`.
    pub async fn assert_exits_cleanly(&mut self, timeout: Duration) {
        let Some(status) = self.wait_exit(timeout).await else {
            panic!("ringlink did not exit within {timeout:?}:\n{}", self.logs());
        };
        assert!(
            status.success(),
            "ringlink exited with {status}:\n{}",
            self.logs()
        );
    }

    pub fn rss_kib(&self) -> u64 {
        crate::proc::rss_kib(self.child.id())
    }

    /// How many of the proxy's open sockets are TCP connections to `addr` (IPv4).
    pub fn fds_to(&self, addr: SocketAddr) -> usize {
        crate::proc::tcp_sockets_to(self.child.id(), addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
