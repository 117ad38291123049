//! Test `mesh`: what mesh TLS costs, with two ringlink processes meshed as two pods are
//! (client → ringlink outbound → ringlink inbound → backend), in one run:
//!
//! - **Requests through the pair.** wrk through the outbound proxy, whose mock Destination
//!   service resolves the request's authority to one endpoint: `pair-plain` (the inbound
//!   proxy's listener, no hint: HTTP/1 between the proxies, pooled), `pair-plain-h2hint` (the
//!   same with protocol hint H2: HTTP/1 requests carried over one h2 connection,
//!   `l5d-orig-proto`, in plaintext) and `pair-mtls` (the backend, with the inbound proxy's
//!   identity and its inbound port for a transport header: mesh TLS, the same h2 upgrade);
//!   `direct` is wrk straight to the backend. CPU per request is both proxies' together.
//! - **Full handshakes** against the inbound proxy alone: a client that opens a connection,
//!   does a full mTLS handshake (client certificate, ALPN `transport.l5d.io/v1`), sends a
//!   transport header and one HTTP/1 request, reads the response and closes, in a loop;
//!   against the same loop in plaintext through a plaintext inbound proxy.
//! - **Idle connections**: the inbound proxy's RSS growth per idle mTLS connection
//!   (handshake done, transport header sent), against idle plaintext connections.
//!
//! The mock Identity service and the metrics reader are the integration harness's
//! (`ringlink_integration`); the mTLS client is the proxy's own client configuration
//! (`ringlink_protocols::tls::MeshTls`, ring). See `benches/README.md`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use linkerd2_proxy_api::destination as pb;
use ringlink_integration::http::call;
use ringlink_integration::identity::{self as mock_identity, IdentityServer, TokenDir};
use ringlink_integration::metrics::{parse, sum, Series};
use ringlink_protocols::tls::{Credentials, MeshTls, TrustAnchors};
use ringlink_protocols::transport_header::{self, SessionProtocol, TransportHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::pinning::Pinning;
use crate::process::Spawned;
use crate::proxy::{soft_nofile_limit, ProxyKind, RinglinkPorts};
use crate::report::{latency, markdown, opt, ratio};
use crate::{destination, procstat, start_backend, Bench, MIB, WARM_UP_SECS};

/// The inbound proxy's identity (the server's), and the outbound proxy's (the client's).
const SERVER_ID: &str = "web.bench.serviceaccount.identity.linkerd.cluster.local";
const CLIENT_ID: &str = "client.bench.serviceaccount.identity.linkerd.cluster.local";
/// Connections the handshake loop keeps in flight.
const HANDSHAKE_CONCURRENCY: usize = 16;
/// How long the handshake loop runs before it is measured.
const HANDSHAKE_WARM_UP: Duration = Duration::from_secs(1);
/// Idle connections opened to measure memory (fewer if the file-descriptor limit is low).
const IDLE_CONNECTIONS: usize = 2000;
/// Connections opened at once when making the idle ones.
const IDLE_OPEN_CONCURRENCY: usize = 32;
/// How long the idle connections sit before the proxy's RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// One exchange of the handshake loop, or one idle connection's setup, at most.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a proxy gets to listen and to answer `/ready` with 200 (certified).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n";

// === types ===

/// One row of the request-path table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PairPath {
    Direct,
    Plain,
    PlainH2Hint,
    Mtls,
}

/// What one row of the request-path table measured.
struct PairRow {
    path: PairPath,
    requests: u64,
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// CPU µs over the measured run: (outbound, inbound); `None` for `direct`.
    cpu_us: Option<(f64, f64)>,
    /// RSS MiB after the run: (outbound, inbound).
    rss_mib: Option<(f64, f64)>,
    /// Connections the outbound proxy opened to the inbound proxy (whole life).
    hop_connections: Option<f64>,
    errors: Vec<String>,
}

/// What one row of the handshake table measured.
struct HandshakeRow {
    tls: bool,
    report: LoopReport,
    /// The inbound proxy's CPU µs over the measured loop.
    cpu_us: f64,
}

/// What one row of the idle-connection table measured.
struct IdleRow {
    tls: bool,
    connections: usize,
    rss_before: u64,
    rss_after: u64,
}

/// What the handshake loop did.
#[derive(Clone, Debug, Default)]
struct LoopReport {
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

/// How the bench's own client reaches the inbound proxy.
#[derive(Clone)]
enum Dial {
    /// Plain TCP.
    Plain { addr: SocketAddr },
    /// Mesh TLS with a client certificate and ALPN `transport.l5d.io/v1`, SNI = the inbound
    /// proxy's identity; `header` is the transport header sent once the handshake is done.
    Mtls {
        addr: SocketAddr,
        connector: TlsConnector,
        name: ServerName<'static>,
        header: Arc<[u8]>,
    },
}

/// Which of the pair a ringlink process is: the client's proxy (wrk connects to its outbound
/// port) or the server's (it takes traffic on its inbound port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Outbound,
    Inbound,
}

/// A ringlink process of the test. The token directory outlives the process.
struct Ringlink {
    process: Spawned,
    ports: RinglinkPorts,
    _token: Option<TokenDir>,
}

/// The test's shared pieces: the mock Identity service, on a tokio runtime that also
/// serves the admin calls, and the backend.
struct Mesh<'a> {
    bench: &'a Bench<'a>,
    identity: IdentityServer,
    /// Declared after `identity`, which is dropped (its task aborted) first.
    rt: tokio::runtime::Runtime,
    backend: SocketAddr,
    notes: Vec<String>,
    failed: bool,
}

// === functions ===

/// The ringlink runtimes `--only` selects, in its order; `None` (said on stdout) when it
/// selects neither.
pub(crate) fn ringlink_runtimes(bench: &Bench<'_>) -> Option<Vec<&'static str>> {
    let runtimes: Vec<&'static str> = (bench.opts.proxies.iter())
        .filter_map(|kind| match kind {
            ProxyKind::RinglinkMonoio => Some("monoio"),
            ProxyKind::RinglinkGlommio => Some("glommio"),
            _ => None,
        })
        .collect();
    if runtimes.is_empty() {
        println!("Skipped: neither ringlink-monoio nor ringlink-glommio is in --only.");
        return None;
    }
    Some(runtimes)
}

/// A one-thread tokio runtime (unpinned) for a test's mock control-plane services.
pub(crate) fn mock_runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("a tokio runtime for {name}"))
}

/// Sets on `cmd` what an injector sets for a proxy certified by the mock Identity service
/// as `name` (as `ringlink_integration::identity::with_identity` does), with a policy
/// controller address where none listens, so that every port keeps its default policy
/// (all-unauthenticated). The token directory, named after `tag`, must outlive the process.
pub(crate) fn certified(
    cmd: &mut Command,
    identity: &IdentityServer,
    tag: &str,
    name: &str,
) -> TokenDir {
    let dir = TokenDir::new(tag, b"token");
    cmd.env("LINKERD2_PROXY_IDENTITY_DIR", &dir.0)
        .env(
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            identity.trust_anchors_pem(),
        )
        .env("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", dir.token())
        .env(
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
            identity.addr().to_string(),
        )
        .env("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", name)
        // A meshed proxy needs a policy controller.
        .env(
            "LINKERD2_PROXY_POLICY_SVC_ADDR",
            ringlink_integration::identity::NO_POLICY_CONTROLLER,
        )
        .env(
            "LINKERD2_PROXY_POLICY_WORKLOAD",
            ringlink_integration::proxy::WORKLOAD,
        );
    dir
}

/// Polls the admin server at `admin` until `/ready` answers 200 (a certified proxy: once it
/// has its certificate); whether it did within `timeout`.
pub(crate) fn until_ready(
    rt: &tokio::runtime::Runtime,
    admin: SocketAddr,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        // `call` panics if it cannot connect: check first that the admin port is up.
        if std::net::TcpStream::connect(admin).is_ok()
            && rt.block_on(call(admin, "GET", "/ready", "")).status == 200
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the test for each ringlink runtime in `--only` and prints its tables; whether a
/// row failed.
pub fn run(bench: &Bench<'_>, backend_program: &Path) -> Result<bool> {
    let Some(runtimes) = ringlink_runtimes(bench) else {
        return Ok(false);
    };
    let rt = mock_runtime("mock-identity")?;
    let identity = {
        let _entered = rt.enter();
        mock_identity::new()
    };
    let (backend, backend_process) = start_backend(bench.pin, backend_program, &[])?;
    let mut mesh = Mesh {
        bench,
        identity,
        rt,
        backend,
        notes: Vec::new(),
        failed: false,
    };
    for runtime in runtimes {
        mesh.run_runtime(runtime);
    }
    backend_process.stop()?;
    Ok(mesh.failed)
}

/// The Destination endpoint of `path`'s outbound proxy.
fn endpoint(path: PairPath, backend: SocketAddr, inbound: SocketAddr) -> pb::WeightedAddr {
    let h2 = || pb::ProtocolHint {
        protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
        opaque_transport: None,
    };
    let plain = |addr: SocketAddr| pb::WeightedAddr {
        addr: Some(addr.into()),
        weight: 1,
        ..Default::default()
    };
    match path {
        PairPath::Direct | PairPath::Plain => plain(inbound),
        PairPath::PlainH2Hint => pb::WeightedAddr {
            protocol_hint: Some(h2()),
            ..plain(inbound)
        },
        // As the Destination service describes a meshed pod (Linkerd ≥ 2.18): the
        // application's address, its proxy's identity, and its inbound port for a transport
        // header (integration/tests/mesh.rs `meshed_endpoint`).
        PairPath::Mtls => pb::WeightedAddr {
            tls_identity: Some(pb::TlsIdentity {
                strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
                    pb::tls_identity::DnsLikeIdentity {
                        name: SERVER_ID.to_string(),
                    },
                )),
                server_name: None,
            }),
            protocol_hint: Some(pb::ProtocolHint {
                opaque_transport: Some(pb::protocol_hint::OpaqueTransport {
                    inbound_port: u32::from(inbound.port()),
                }),
                ..h2()
            }),
            ..plain(backend)
        },
    }
}

/// Connects, does what `dial` says (handshake and transport header for mTLS), sends
/// [`REQUEST`], reads the whole response, and closes.
async fn exchange(dial: &Dial) -> io::Result<()> {
    match dial {
        Dial::Plain { addr } => {
            let mut tcp = connect(*addr).await?;
            request_response(&mut tcp).await?;
            tcp.shutdown().await
        }
        Dial::Mtls {
            addr,
            connector,
            name,
            header,
        } => {
            let tcp = connect(*addr).await?;
            let mut tls = connector.connect(name.clone(), tcp).await?;
            tls.write_all(header).await?;
            request_response(&mut tls).await?;
            tls.shutdown().await
        }
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Sends [`REQUEST`] and reads a response head and its `content-length` body; fails unless
/// the status is 2xx.
async fn request_response(io: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> io::Result<()> {
    io.write_all(REQUEST).await?;
    let mut response = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before a whole response: {:?}",
                    String::from_utf8_lossy(&response)
                ),
            ));
        }
        response.extend_from_slice(&buf[..n]);
        let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        if !status.starts_with('2') {
            return Err(io::Error::other(format!("response status {status}")));
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if response.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

/// Runs `f` on a thread pinned to the load CPU, on a tokio current-thread runtime there.
pub(crate) fn on_load_cpu<T: Send>(
    pin: &Pinning,
    f: impl FnOnce(&tokio::runtime::Runtime) -> Result<T> + Send,
) -> Result<T> {
    let core = pin.load_core();
    thread::scope(|scope| {
        scope
            .spawn(move || {
                if !core_affinity::set_for_current(core) {
                    bail!("cannot pin the client thread to CPU {}", core.id);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                f(&rt)
            })
            .join()
            .map_err(|_| anyhow!("the client thread panicked"))?
    })
}

/// [`HANDSHAKE_CONCURRENCY`] loops of [`exchange`] until `duration` is over.
async fn exchange_loop(dial: Dial, duration: Duration) -> LoopReport {
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..HANDSHAKE_CONCURRENCY)
        .map(|_| {
            let (dial, completed, errors, first_error) = (
                dial.clone(),
                completed.clone(),
                errors.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let outcome = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(&dial)).await;
                    match outcome {
                        Ok(Ok(())) => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(error)) => record(&errors, &first_error, error.to_string()),
                        Err(_) => record(&errors, &first_error, "timed out".to_string()),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        if task.await.is_err() {
            record(&errors, &first_error, "a client task panicked".to_string());
        }
    }
    let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    LoopReport {
        completed: completed.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed: start.elapsed(),
    }
}

fn record(errors: &AtomicU64, first: &Mutex<Option<String>>, error: String) {
    errors.fetch_add(1, Ordering::Relaxed);
    first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(error);
}

/// Opens `n` connections as `dial` says and leaves them idle: mTLS ones with the handshake
/// done and the transport header sent, plaintext ones connected and nothing sent. Returns
/// the streams (to be held open) and how many failed.
async fn open_idle(dial: Dial, n: usize) -> (Vec<Box<dyn Send>>, usize) {
    let tasks: Vec<_> = (0..IDLE_OPEN_CONCURRENCY)
        .map(|i| {
            let dial = dial.clone();
            let count = n / IDLE_OPEN_CONCURRENCY + usize::from(i < n % IDLE_OPEN_CONCURRENCY);
            tokio::spawn(async move {
                let mut open: Vec<Box<dyn Send>> = Vec::with_capacity(count);
                let mut failed = 0;
                for _ in 0..count {
                    let opened = tokio::time::timeout(EXCHANGE_TIMEOUT, open_one(&dial)).await;
                    match opened {
                        Ok(Ok(conn)) => open.push(conn),
                        _ => failed += 1,
                    }
                }
                (open, failed)
            })
        })
        .collect();
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for task in tasks {
        match task.await {
            Ok((conns, lost)) => {
                open.extend(conns);
                failed += lost;
            }
            Err(_) => failed += n / IDLE_OPEN_CONCURRENCY,
        }
    }
    (open, failed)
}

async fn open_one(dial: &Dial) -> io::Result<Box<dyn Send>> {
    match dial {
        Dial::Plain { addr } => Ok(Box::new(connect(*addr).await?)),
        Dial::Mtls {
            addr,
            connector,
            name,
            header,
        } => {
            let tcp = connect(*addr).await?;
            let mut tls = connector.connect(name.clone(), tcp).await?;
            tls.write_all(header).await?;
            tls.flush().await?;
            Ok(Box::new(tls))
        }
    }
}

/// Sum of `request_total` of the inbound direction, only mTLS ones from [`CLIENT_ID`] if
/// `tls`.
fn inbound_requests(series: &[Series], tls: bool) -> f64 {
    let mut labels = vec![("direction", "inbound")];
    if tls {
        labels.extend([("tls", "true"), ("client_id", CLIENT_ID)]);
    }
    sum(series, "request_total", &labels)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

// === impl PairPath ===

impl PairPath {
    const ALL: [Self; 4] = [Self::Direct, Self::Plain, Self::PlainH2Hint, Self::Mtls];

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Plain => "pair-plain",
            Self::PlainH2Hint => "pair-plain-h2hint",
            Self::Mtls => "pair-mtls",
        }
    }
}

// === impl Role ===

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

// === impl PairRow ===

impl PairRow {
    /// Both proxies' CPU µs per request.
    fn cpu_per_request(&self) -> Option<f64> {
        self.cpu_us
            .map(|(out, inb)| (out + inb) / self.requests.max(1) as f64)
    }
}

// === impl Ringlink ===

impl Ringlink {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn cpu_us(&self) -> Result<f64> {
        Ok(procstat::tree_cpu_time(self.pid())?.as_secs_f64() * 1e6)
    }

    fn rss_bytes(&self) -> Result<u64> {
        procstat::rss_bytes(self.pid())
    }

    fn stop(self) -> Result<()> {
        self.process.stop()
    }
}

// === impl Mesh ===

impl Mesh<'_> {
    fn pin(&self) -> &Pinning {
        self.bench.pin
    }

    /// The three tables of one runtime, with their notes.
    fn run_runtime(&mut self, runtime: &str) {
        self.notes.clear();
        let mut pairs = Vec::new();
        for path in PairPath::ALL {
            eprintln!("mesh {runtime}: {}", path.name());
            match self.measure_pair(runtime, path) {
                Ok(row) => {
                    if !row.errors.is_empty() {
                        self.failed = true;
                        for error in &row.errors {
                            self.notes.push(format!(
                                "{}: FAILED (not a measurement): {error}",
                                path.name()
                            ));
                        }
                    }
                    pairs.push(row);
                }
                Err(error) => self.fail(path.name(), error),
            }
        }
        let mut handshakes = Vec::new();
        for tls in [false, true] {
            let name = inbound_name(tls);
            eprintln!("mesh {runtime}: handshakes {name}");
            match self.measure_handshakes(runtime, tls) {
                Ok(row) => {
                    if row.report.errors > 0 {
                        self.failed = true;
                        self.notes.push(format!(
                            "handshakes {name}: FAILED (not a measurement): {} errors, the \
                             first: {}",
                            row.report.errors,
                            row.report.first_error.as_deref().unwrap_or("?")
                        ));
                    }
                    handshakes.push(row);
                }
                Err(error) => self.fail(&format!("handshakes {name}"), error),
            }
        }
        let mut idle = Vec::new();
        for tls in [false, true] {
            let name = inbound_name(tls);
            eprintln!("mesh {runtime}: idle connections {name}");
            match self.measure_idle(runtime, tls) {
                Ok(row) => idle.push(row),
                Err(error) => self.fail(&format!("idle {name}"), error),
            }
        }

        println!("\n### {runtime}: requests through the pair\n");
        print!("{}", pair_table(&pairs));
        let cost = |path| {
            pairs
                .iter()
                .find(|row| row.path == path && row.errors.is_empty())
                .and_then(PairRow::cpu_per_request)
        };
        if let (Some(mtls), Some(plain), Some(h2hint)) = (
            cost(PairPath::Mtls),
            cost(PairPath::Plain),
            cost(PairPath::PlainH2Hint),
        ) {
            println!(
                "\nTarget (mTLS adds ≤ 30 % CPU per request over the plaintext pair, pooled \
                 connections): pair-mtls costs {:.2}× pair-plain ({:+.0} %) and {:.2}× \
                 pair-plain-h2hint ({:+.0} %, TLS alone).",
                mtls / plain,
                100.0 * (mtls / plain - 1.0),
                mtls / h2hint,
                100.0 * (mtls / h2hint - 1.0),
            );
        }
        println!("\n### {runtime}: full handshakes against the inbound proxy (one shard)\n");
        print!("{}", handshake_table(&handshakes));
        println!("\n### {runtime}: idle connections to the inbound proxy\n");
        print!("{}", idle_table(&idle));
        for note in &self.notes {
            println!("\n- {note}");
        }
    }

    fn fail(&mut self, what: &str, error: anyhow::Error) {
        eprintln!("mesh {what}: FAILED: {error:#}");
        self.notes.push(format!("{what}: FAILED: {error:#}"));
        self.failed = true;
    }

    /// Starts ringlink for `runtime` with `env` added and, if `identity` is given, certified
    /// by the mock Identity service under that name; waits until it listens and `/ready`
    /// answers 200.
    fn start(
        &self,
        runtime: &str,
        role: Role,
        identity: Option<&str>,
        env: &[(&str, String)],
    ) -> Result<Ringlink> {
        let ports = RinglinkPorts::free()?;
        let mut cmd = ports.command(&self.bench.bins.ringlink, self.pin(), runtime);
        cmd.envs(env.iter().map(|(k, v)| (*k, v)));
        let token = identity.map(|name| {
            let tag = format!("bench-{runtime}-{}-{}", role.name(), ports.admin.port());
            certified(&mut cmd, &self.identity, &tag, name)
        });
        let mut process = Spawned::spawn(&format!("ringlink-{runtime} ({})", role.name()), cmd)?;
        // Only the port the role takes traffic on: a probe of a meshed proxy's outbound port
        // would be a routing loop (and logged as one).
        let serving = match role {
            Role::Outbound => ports.outbound,
            Role::Inbound => ports.inbound,
        };
        for addr in [serving, ports.admin] {
            process.wait_for_port(addr, READY_TIMEOUT)?;
        }
        let proxy = Ringlink {
            process,
            ports,
            _token: token,
        };
        if !until_ready(&self.rt, proxy.ports.admin, READY_TIMEOUT) {
            bail!(
                "ringlink ({}) did not answer /ready with 200 within {READY_TIMEOUT:?}",
                role.name()
            );
        }
        Ok(proxy)
    }

    fn metrics(&self, proxy: &Ringlink) -> Vec<Series> {
        parse(
            &self
                .rt
                .block_on(call(proxy.ports.admin, "GET", "/metrics", ""))
                .body,
        )
    }

    /// The inbound proxy of the handshake and idle tests: certified, taking direct
    /// connections (no orig-dst override), for mTLS; else plaintext, forwarding to the
    /// backend.
    fn start_inbound(&self, runtime: &str, tls: bool, env: &[(&str, String)]) -> Result<Ringlink> {
        let mut env = env.to_vec();
        if !tls {
            env.push(("RINGLINK_ORIG_DST_OVERRIDE", self.backend.to_string()));
        }
        self.start(runtime, Role::Inbound, tls.then_some(SERVER_ID), &env)
    }

    /// How the bench's client reaches `inbound`: mTLS as a meshed peer named [`CLIENT_ID`]
    /// with a transport header for the backend's port (HTTP/1), or plaintext.
    fn dial(&self, inbound: &Ringlink, tls: bool) -> Result<Dial> {
        let addr = inbound.ports.inbound;
        if !tls {
            return Ok(Dial::Plain { addr });
        }
        let (key_pkcs8, chain) = self.identity.issue(CLIENT_ID, Duration::from_secs(3600));
        let anchors = TrustAnchors::from_pem(&self.identity.trust_anchors_pem())?;
        let credentials = Credentials {
            name: CLIENT_ID.to_string(),
            key_pkcs8,
            chain,
        };
        let mesh = MeshTls::new(&credentials, &anchors)?;
        let header = transport_header::encode(&TransportHeader {
            port: self.backend.port(),
            name: None,
            protocol: Some(SessionProtocol::Http1),
        });
        Ok(Dial::Mtls {
            addr,
            connector: TlsConnector::from(mesh.client_transport_header),
            name: ServerName::try_from(SERVER_ID)?.to_owned(),
            header: header.into(),
        })
    }

    fn measure_pair(&self, runtime: &str, path: PairPath) -> Result<PairRow> {
        let secs = self.bench.opts.duration_secs;
        let wrk = &self.bench.wrk;
        if path == PairPath::Direct {
            let url = format!("http://{}/", self.backend);
            wrk.run(&url, None, WARM_UP_SECS).context("warm-up")?;
            let run = wrk.run(&url, None, secs)?;
            return Ok(PairRow {
                path,
                requests: run.requests,
                requests_per_sec: run.requests_per_sec,
                p50: run.p50,
                p99: run.p99,
                cpu_us: None,
                rss_mib: None,
                hop_connections: None,
                errors: run.errors,
            });
        }
        let tls = path == PairPath::Mtls;
        let inbound = self.start_inbound(runtime, tls, &[])?;
        let mock = destination::start_with(endpoint(path, self.backend, inbound.ports.inbound))?;
        let outbound = self.start(
            runtime,
            Role::Outbound,
            tls.then_some(CLIENT_ID),
            &[
                ("RINGLINK_ORIG_DST_OVERRIDE", self.backend.to_string()),
                ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", mock.addr.to_string()),
                (
                    "LINKERD2_PROXY_POLICY_SVC_ADDR",
                    ringlink_integration::identity::NO_POLICY_CONTROLLER.to_string(),
                ),
                (
                    "LINKERD2_PROXY_POLICY_WORKLOAD",
                    ringlink_integration::proxy::WORKLOAD.to_string(),
                ),
            ],
        )?;
        let url = format!("http://{}/", outbound.ports.outbound);
        let host = format!("{}:{}", destination::NAME, self.backend.port());
        wrk.run(&url, Some(&host), WARM_UP_SECS)
            .context("warm-up")?;
        let before = (outbound.cpu_us()?, inbound.cpu_us()?);
        let run = wrk.run(&url, Some(&host), secs)?;
        let after = (outbound.cpu_us()?, inbound.cpu_us()?);
        let rss = (mib(outbound.rss_bytes()?), mib(inbound.rss_bytes()?));
        // The connections to the inbound proxy: to its listener, or with mesh TLS (to its
        // inbound port, though the series names the endpoint). Not the outbound proxy's
        // eager connection to each client connection's original destination (the backend
        // here, through the override), opened while detecting the protocol and unused.
        let inbound_addr = inbound.ports.inbound.to_string();
        let hop = match tls {
            true => ("tls", "true"),
            false => ("target_addr", inbound_addr.as_str()),
        };
        let hop = [("direction", "outbound"), ("peer", "dst"), hop];
        let hop_connections = sum(&self.metrics(&outbound), "tcp_open_total", &hop);
        let served = inbound_requests(&self.metrics(&inbound), tls);
        let mut errors = run.errors;
        // Every measured request must have crossed the inbound proxy (with the client's
        // identity, for mTLS): the outbound proxy also has the backend as its original
        // destination, which a failed lookup would fall back to.
        if served < run.requests as f64 {
            errors.push(format!(
                "the inbound proxy counted {served} requests{}, fewer than wrk's {}",
                if tls { " with tls=true" } else { "" },
                run.requests
            ));
        }
        outbound.stop()?;
        inbound.stop()?;
        Ok(PairRow {
            path,
            requests: run.requests,
            requests_per_sec: run.requests_per_sec,
            p50: run.p50,
            p99: run.p99,
            cpu_us: Some((after.0 - before.0, after.1 - before.1)),
            rss_mib: Some(rss),
            hop_connections: Some(hop_connections),
            errors,
        })
    }

    fn measure_handshakes(&self, runtime: &str, tls: bool) -> Result<HandshakeRow> {
        let inbound = self.start_inbound(runtime, tls, &[])?;
        let dial = self.dial(&inbound, tls)?;
        let warm = {
            let dial = dial.clone();
            on_load_cpu(self.pin(), |rt| {
                Ok(rt.block_on(exchange_loop(dial, HANDSHAKE_WARM_UP)))
            })?
        };
        let before = inbound.cpu_us()?;
        let duration = Duration::from_secs(u64::from(self.bench.opts.duration_secs));
        let mut report = on_load_cpu(self.pin(), |rt| {
            Ok(rt.block_on(exchange_loop(dial, duration)))
        })?;
        let after = inbound.cpu_us()?;
        let served = inbound_requests(&self.metrics(&inbound), tls);
        let done = (warm.completed + report.completed) as f64;
        if warm.errors > 0 {
            report.errors += warm.errors;
            report.first_error = report.first_error.or(warm.first_error);
        }
        if served < done {
            report.errors += 1;
            report.first_error.get_or_insert(format!(
                "the inbound proxy counted {served} requests, the client completed {done}"
            ));
        }
        inbound.stop()?;
        Ok(HandshakeRow {
            tls,
            report,
            cpu_us: after - before,
        })
    }

    fn measure_idle(&self, runtime: &str, tls: bool) -> Result<IdleRow> {
        // Each connection takes a descriptor here and one in the proxy (which raises its own
        // limit to the hard one).
        let n = soft_nofile_limit()
            .map_or(IDLE_CONNECTIONS, |limit| {
                IDLE_CONNECTIONS.min(usize::try_from(limit.saturating_sub(200)).unwrap_or(0))
            })
            .max(1);
        // Idle plaintext connections wait in protocol detection: keep them there.
        let inbound = self.start_inbound(
            runtime,
            tls,
            &[("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "60s".to_string())],
        )?;
        let dial = self.dial(&inbound, tls)?;
        // Warm up what the first connections allocate once (TLS, the backend pool, the
        // allocator's arenas), then read the baseline.
        let warm = {
            let dial = dial.clone();
            on_load_cpu(self.pin(), |rt| {
                Ok(rt.block_on(exchange_loop(dial, Duration::from_millis(500))))
            })?
        };
        if warm.errors > 0 {
            bail!(
                "warm-up: {} errors, the first: {}",
                warm.errors,
                warm.first_error.unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(300));
        let rss_before = inbound.rss_bytes()?;
        let (opened_tx, opened_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let pin = self.pin();
        let measured = thread::scope(|scope| -> Result<u64> {
            let client = scope.spawn(move || {
                on_load_cpu(pin, move |rt| {
                    let (conns, failed) = rt.block_on(open_idle(dial, n));
                    let _ = opened_tx.send(failed);
                    // Held until the RSS is read.
                    let _ = release_rx.recv();
                    drop(conns);
                    Ok(())
                })
            });
            let failed = opened_rx.recv();
            let measured = match failed {
                Ok(0) => {
                    thread::sleep(IDLE_SETTLE);
                    inbound.rss_bytes()
                }
                Ok(failed) => Err(anyhow!("{failed} of {n} idle connections failed to open")),
                Err(_) => Err(anyhow!(
                    "the client thread ended before opening connections"
                )),
            };
            let _ = release_tx.send(());
            client
                .join()
                .map_err(|_| anyhow!("the client thread panicked"))??;
            measured
        })?;
        inbound.stop()?;
        Ok(IdleRow {
            tls,
            connections: n,
            rss_before,
            rss_after: measured,
        })
    }
}

fn inbound_name(tls: bool) -> &'static str {
    if tls {
        "inbound-mtls"
    } else {
        "inbound-plain"
    }
}

fn pair_table(rows: &[PairRow]) -> String {
    let cost_of = |path| {
        rows.iter()
            .find(|row| row.path == path)
            .and_then(PairRow::cpu_per_request)
    };
    let (h2hint, plain) = (cost_of(PairPath::PlainH2Hint), cost_of(PairPath::Plain));
    let header: Vec<String> = [
        "path",
        "rps",
        "p50",
        "p99",
        "CPU µs/req",
        "outbound µs/req",
        "inbound µs/req",
        "ratio vs pair-plain-h2hint CPU/req",
        "ratio vs pair-plain CPU/req",
        "RSS MiB outbound",
        "RSS MiB inbound",
        "proxy→proxy conns",
        "wrk errors",
    ]
    .map(String::from)
    .to_vec();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let n = row.requests.max(1) as f64;
            let cost = row.cpu_per_request();
            vec![
                row.path.name().to_string(),
                format!("{:.0}", row.requests_per_sec),
                latency(row.p50),
                latency(row.p99),
                opt(cost, 1),
                opt(row.cpu_us.map(|(out, _)| out / n), 1),
                opt(row.cpu_us.map(|(_, inb)| inb / n), 1),
                ratio(cost, h2hint),
                ratio(cost, plain),
                opt(row.rss_mib.map(|(out, _)| out), 1),
                opt(row.rss_mib.map(|(_, inb)| inb), 1),
                opt(row.hop_connections, 0),
                if row.errors.is_empty() {
                    "0".to_string()
                } else {
                    "yes, see below".to_string()
                },
            ]
        })
        .collect();
    markdown(&header, &lines)
}

fn handshake_table(rows: &[HandshakeRow]) -> String {
    let cost = |row: &HandshakeRow| row.cpu_us / row.report.completed.max(1) as f64;
    let plain = rows.iter().find(|row| !row.tls).map(cost);
    let header: Vec<String> = [
        "inbound",
        "conn/s",
        "CPU µs/conn",
        "ratio vs inbound-plain CPU/conn",
        "shard busy",
        "conn/s at a full shard",
        "connections",
        "errors",
    ]
    .map(String::from)
    .to_vec();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let secs = row.report.elapsed.as_secs_f64();
            let per_conn = cost(row);
            vec![
                inbound_name(row.tls).to_string(),
                format!("{:.0}", row.report.completed as f64 / secs),
                format!("{per_conn:.1}"),
                ratio(Some(per_conn), plain),
                format!("{:.0} %", 100.0 * row.cpu_us / 1e6 / secs),
                format!("{:.0}", 1e6 / per_conn),
                row.report.completed.to_string(),
                row.report.errors.to_string(),
            ]
        })
        .collect();
    markdown(&header, &lines)
}

fn idle_table(rows: &[IdleRow]) -> String {
    let per_conn = |row: &IdleRow| {
        row.rss_after.saturating_sub(row.rss_before) as f64 / 1024.0 / row.connections as f64
    };
    let plain = rows.iter().find(|row| !row.tls).map(per_conn);
    let header: Vec<String> = [
        "inbound",
        "idle connections",
        "RSS MiB before",
        "RSS MiB after",
        "KiB/conn",
        "ratio vs inbound-plain KiB/conn",
    ]
    .map(String::from)
    .to_vec();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let kib = per_conn(row);
            vec![
                inbound_name(row.tls).to_string(),
                row.connections.to_string(),
                format!("{:.1}", mib(row.rss_before)),
                format!("{:.1}", mib(row.rss_after)),
                format!("{kib:.1}"),
                ratio(Some(kib), plain),
            ]
        })
        .collect();
    markdown(&header, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_one_cell_per_column() {
        let pair = |path, cpu: Option<(f64, f64)>| PairRow {
            path,
            requests: 1000,
            requests_per_sec: 100.0,
            p50: Duration::from_micros(300),
            p99: Duration::from_micros(900),
            cpu_us: cpu,
            rss_mib: cpu.map(|_| (9.0, 8.0)),
            hop_connections: cpu.map(|_| 1.0),
            errors: Vec::new(),
        };
        let t = pair_table(&[
            pair(PairPath::Direct, None),
            pair(PairPath::Plain, Some((10_000.0, 10_000.0))),
            pair(PairPath::PlainH2Hint, Some((12_000.0, 12_000.0))),
            pair(PairPath::Mtls, Some((15_000.0, 15_000.0))),
        ]);
        assert!(
            t.contains("| pair-mtls | 100 | 300 µs | 900 µs | 30.0 | 15.0 | 15.0 | 1.25× | 1.50× | 9.0 | 8.0 | 1 | 0 |"),
            "{t}"
        );
        let h = handshake_table(&[
            HandshakeRow {
                tls: false,
                report: LoopReport {
                    completed: 1000,
                    elapsed: Duration::from_secs(1),
                    ..Default::default()
                },
                cpu_us: 100_000.0,
            },
            HandshakeRow {
                tls: true,
                report: LoopReport {
                    completed: 500,
                    elapsed: Duration::from_secs(1),
                    ..Default::default()
                },
                cpu_us: 500_000.0,
            },
        ]);
        assert!(
            h.contains("| inbound-mtls | 500 | 1000.0 | 10.00× | 50 % | 1000 | 500 | 0 |"),
            "{h}"
        );
        let i = idle_table(&[IdleRow {
            tls: true,
            connections: 1024,
            rss_before: 8 << 20,
            rss_after: 10 << 20,
        }]);
        assert!(
            i.contains("| inbound-mtls | 1024 | 8.0 | 10.0 | 2.0 | - |"),
            "{i}"
        );
        for table in [t, h, i] {
            let widths: Vec<_> = table.lines().map(|l| l.matches('|').count()).collect();
            assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
        }
    }

    #[test]
    fn the_meshed_endpoint_is_what_linkerd_sends() {
        let backend: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let inbound: SocketAddr = "127.0.0.1:4143".parse().unwrap();
        let plain = endpoint(PairPath::Plain, backend, inbound);
        assert_eq!(plain.addr, Some(inbound.into()));
        assert!(plain.tls_identity.is_none() && plain.protocol_hint.is_none());
        let hint = endpoint(PairPath::PlainH2Hint, backend, inbound)
            .protocol_hint
            .unwrap();
        assert!(hint.opaque_transport.is_none());
        let mtls = endpoint(PairPath::Mtls, backend, inbound);
        assert_eq!(mtls.addr, Some(backend.into()));
        assert!(mtls.tls_identity.is_some());
        let hint = mtls.protocol_hint.unwrap();
        assert_eq!(hint.opaque_transport.unwrap().inbound_port, 4143);
        assert!(matches!(
            hint.protocol,
            Some(pb::protocol_hint::Protocol::H2(_))
        ));
    }
}
