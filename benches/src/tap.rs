//! Test `tap`: what serving Linkerd's tap API (`io.linkerd.proxy.tap.Tap/Observe`, what
//! `linkerd viz tap` reads) costs ringlink per request.
//!
//! For each ringlink runtime in `--only`, with a fresh proxy per row, certified by the mock
//! Identity service (tap needs identity) as `mesh.rs` certifies its proxies, the same HTTP/1.1
//! keep-alive load sent to the proxy's **inbound** listener, which forwards it to the backend
//! (`RINGLINK_ORIG_DST_OVERRIDE`):
//!
//! - `direct`: the load straight to the backend (reference);
//! - `tap-disabled`: no `LINKERD2_PROXY_TAP_SVC_NAME`, so no tap server (the ratios' base);
//! - `tap-idle`: [`TAP_SVC_NAME`] set: a tap server on the control port, nobody tapping
//!   (the shard checks for taps once per request);
//! - `tap-nomatch`: one open `Observe` call whose match (path prefix [`NEVER_SENT`]) the
//!   load never satisfies: every request is matched against it, none is tapped;
//! - `tap-all`: one open `Observe` call matching every request (an empty `all`, as
//!   `linkerd viz tap` sends without a filter), limit [`ALL_LIMIT`], no headers extracted:
//!   each request makes three events, which the bench's tap client reads as fast as it can.
//!
//! The load (`loadgen.rs`) and the tap client (the integration harness's, plaintext h2c from
//! loopback) each run on a thread of their own pinned to the load CPU, as the backend is; the
//! proxy alone on the proxy CPU. Before the load, the load's request must be answered 200;
//! the tap server must listen on the control port exactly when the row enables it; with an
//! `Observe` call, the proxy must count it active and a probe request (the load's for
//! `tap-all`, `GET /never-sent` for `tap-nomatch`) must reach the client as a request-init
//! event within 2 s. After it, the client must have received every event the proxy sent
//! (`tap_events_total{result="sent"}`), and: `tap-nomatch` exactly one request-init (the
//! probe's); `tap-all` three events per tapped request and one dropped request-init per
//! other request, sent or dropped ([`check_events`]); `tap-idle` none. Else the row is not a
//! measurement. See `benches/README.md`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use linkerd2_proxy_api::tap::tap_event::{self, http as ev};
use linkerd2_proxy_api::tap::{ObserveRequest, TapEvent};
use ringlink_integration::http::call;
use ringlink_integration::identity::{self as mock_identity, IdentityServer, TokenDir};
use ringlink_integration::metrics::{parse, sum, Series};
use ringlink_integration::tap::{self as tap_client, Observe};
use tokio::sync::oneshot;

use crate::loadgen::{self, Load, LoadReport};
use crate::mesh::{certified, mock_runtime, on_load_cpu, ringlink_runtimes, until_ready};
use crate::pinning::Pinning;
use crate::process::Spawned;
use crate::proxy::RinglinkPorts;
use crate::report::{markdown, opt, ratio};
use crate::{procstat, start_backend, Bench, WARM_UP_SECS};

/// The tap controller's identity, as the viz injector sets `LINKERD2_PROXY_TAP_SVC_NAME`.
/// The bench's client is plaintext from loopback, which the proxy serves whatever the name.
pub const TAP_SVC_NAME: &str = "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local";
/// The proxy's identity.
const PROXY_ID: &str = "web.bench.serviceaccount.identity.linkerd.cluster.local";
/// The `tap-nomatch` call's path prefix: only its probe is sent there.
pub const NEVER_SENT: &str = "/never-sent";
/// The limits of the two `Observe` calls: more requests than a run sends.
pub const NOMATCH_LIMIT: u32 = 1_000_000;
pub const ALL_LIMIT: u32 = 100_000_000;
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOAD_PATH: &str = "/load/item";
const USER_AGENT: &str = "ringlink-bench";
/// Events of one tapped HTTP request: request-init, response-init, response-end.
const EVENTS_PER_REQUEST: u64 = 3;
/// The name of ringlink's shard threads (`ringlink-shard-N`).
const SHARD_THREAD: &str = "ringlink-shard";
/// How long a proxy gets to listen and be certified, and an `Observe` call to be active.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the probe's request-init event gets to reach the client.
const EVENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the events sent before the load ended get to reach the client.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

// === types ===

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapRow {
    Direct,
    Disabled,
    Idle,
    NoMatch,
    All,
}

/// What one row measured.
struct Measured {
    row: TapRow,
    load: LoadReport,
    /// The proxy's CPU µs over the measured run, all threads and its shard's alone; `None`
    /// for `direct`.
    cpu_us: Option<f64>,
    shard_us: Option<f64>,
    /// Requests through the proxy while the row's `Observe` call was open: the tap probe,
    /// the warm-up and the measured run; `None` without a call.
    tapped: Option<u64>,
    /// What the bench's tap client received; `None` without an `Observe` call.
    received: Option<Received>,
    /// `tap_events_total{result="sent"}` and `{result="dropped"}` after the run; `None`
    /// without a tap server.
    sent: Option<f64>,
    dropped: Option<f64>,
    /// What makes the row not a measurement.
    problems: Vec<String>,
}

/// Events the tap client received, all kinds, and of those request-init.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Received {
    events: u64,
    request_inits: u64,
}

/// What the tap client's thread counts, read by the test's thread.
#[derive(Debug, Default)]
struct Counts {
    events: AtomicU64,
    request_inits: AtomicU64,
    /// How the stream ended, if the proxy ended it before the client stopped.
    ended: Mutex<Option<String>>,
}

/// An open `Observe` call, read on a thread pinned to the load CPU until closed (or
/// dropped).
struct Watch {
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// A certified ringlink of the test. The token directory outlives the process.
struct Ringlink {
    process: Spawned,
    ports: RinglinkPorts,
    _token: TokenDir,
}

/// The test's shared pieces: the mock Identity service, on a tokio runtime that also runs
/// the probes and metrics reads, and the backend.
struct TapTest<'a> {
    bench: &'a Bench<'a>,
    identity: IdentityServer,
    /// Declared after `identity`, which is dropped (its task aborted) first.
    rt: tokio::runtime::Runtime,
    backend: SocketAddr,
}

// === functions ===

/// Runs the test for each ringlink runtime in `--only` and prints a table per runtime;
/// whether a row failed.
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
    let test = TapTest {
        bench,
        identity,
        rt,
        backend,
    };
    let mut failed = false;
    for runtime in runtimes {
        failed |= test.run_runtime(runtime);
    }
    backend_process.stop()?;
    Ok(failed)
}

/// The row's `Observe` call, if it has one.
fn observe_request(row: TapRow) -> Option<ObserveRequest> {
    match row {
        TapRow::NoMatch => Some(Observe::new(NOMATCH_LIMIT).path_prefix(NEVER_SENT).build()),
        TapRow::All => Some(Observe::new(ALL_LIMIT).build()),
        TapRow::Direct | TapRow::Disabled | TapRow::Idle => None,
    }
}

/// A request for `path`, with `host` the address it is sent to (as wrk's).
fn request(path: &str, target: SocketAddr) -> Arc<[u8]> {
    format!("GET {path} HTTP/1.1\r\nhost: {target}\r\nuser-agent: {USER_AGENT}\r\n\r\n")
        .into_bytes()
        .into()
}

/// What makes a row's tap counts wrong, if anything: the client must have received every
/// event the proxy sent; `tap-idle` sends none; `tap-nomatch` only the probe's (one
/// request-init); `tap-all` offers every request to the tap: a request whose request-init
/// is dropped (the client's channel full) is not tapped, one drop; a tapped one makes three
/// events, each sent or dropped.
fn check_events(
    row: TapRow,
    tapped: Option<u64>,
    received: Option<Received>,
    sent: Option<f64>,
    dropped: Option<f64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !row.enables_tap() {
        return problems;
    }
    let (Some(sent), Some(dropped)) = (sent, dropped) else {
        problems.push("the proxy's /metrics has no tap_events_total".to_string());
        return problems;
    };
    let Some(received) = received else {
        if sent + dropped > 0.0 {
            problems.push(format!(
                "nobody taps, yet the proxy sent {sent} and dropped {dropped} events"
            ));
        }
        return problems;
    };
    if received.events as f64 != sent {
        problems.push(format!(
            "the tap client received {} events, the proxy sent {sent} (waited {SETTLE_TIMEOUT:?})",
            received.events
        ));
    }
    match row {
        TapRow::NoMatch if received.request_inits != 1 => problems.push(format!(
            "the tap client received {} request-init events, not exactly 1 (the probe's to \
             {NEVER_SENT}): the load's requests were tapped",
            received.request_inits
        )),
        TapRow::All => {
            let requests = tapped.unwrap_or(0);
            let inits = received.request_inits;
            let expected = (EVENTS_PER_REQUEST * inits + requests.saturating_sub(inits)) as f64;
            if inits > requests || sent + dropped != expected {
                problems.push(format!(
                    "the proxy sent {sent} and dropped {dropped} events for {requests} \
                     requests of which {inits} were tapped (request-init received), not \
                     {EVENTS_PER_REQUEST} per tapped request and one per other ({expected})"
                ));
            }
        }
        _ => {}
    }
    problems
}

/// The rows of one runtime; ratios are to `tap-disabled`.
fn table(rows: &[Measured]) -> String {
    let base = rows.iter().find(|m| m.row == TapRow::Disabled);
    let header: Vec<String> = [
        "row",
        "rps",
        "CPU µs/req",
        "ratio vs tap-disabled CPU/req",
        "shard µs/req",
        "ratio vs tap-disabled shard/req",
        "requests",
        "tapped requests",
        "events received",
        "events/req",
        "events sent",
        "events dropped",
        "check",
    ]
    .map(String::from)
    .to_vec();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let cost = m.cpu_per_request();
            let shard = m.shard_per_request();
            vec![
                m.row.name().to_string(),
                format!("{:.0}", m.load.requests_per_sec()),
                opt(cost, 2),
                ratio(cost, base.and_then(Measured::cpu_per_request)),
                opt(shard, 2),
                ratio(shard, base.and_then(Measured::shard_per_request)),
                m.load.completed.to_string(),
                opt(m.received.map(|r| r.request_inits as f64), 0),
                opt(m.received.map(|r| r.events as f64), 0),
                opt(m.events_per_request(), 4),
                opt(m.sent, 0),
                opt(m.dropped, 0),
                if m.problems.is_empty() {
                    "ok".to_string()
                } else {
                    "FAILED, see below".to_string()
                },
            ]
        })
        .collect();
    markdown(&header, &lines)
}

/// The tap client's loop: opens the `Observe` call (said on `opened`), then counts events
/// until `stop` fires or the stream ends.
async fn read_events(
    addr: SocketAddr,
    request: ObserveRequest,
    counts: &Counts,
    opened: mpsc::Sender<Result<()>>,
    mut stop: oneshot::Receiver<()>,
) {
    let open = async {
        let mut client = tap_client::connect(addr, None)
            .await
            .with_context(|| format!("connecting a tap client to {addr}"))?;
        let response = client.observe(request).await.map_err(|status| {
            anyhow!(
                "the proxy refused the Observe call: {:?}: {}",
                status.code(),
                status.message()
            )
        })?;
        Ok::<_, anyhow::Error>((client, response.into_inner()))
    };
    // The client is held while the stream is read.
    let (_client, mut stream) = tokio::select! {
        _ = &mut stop => return,
        result = open => match result {
            Ok(opened) => opened,
            Err(error) => {
                let _ = opened.send(Err(error));
                return;
            }
        },
    };
    let _ = opened.send(Ok(()));
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stop => return,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(event)) => counts.record(&event),
            Ok(None) => return counts.end("the proxy ended the Observe stream".to_string()),
            Err(status) => {
                return counts.end(format!(
                    "the Observe stream failed: {:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
        }
    }
}

/// The sum of `name`'s series matching `labels`; `None` if the page has no `name`.
fn metric(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .any(|s| s.name == name)
        .then(|| sum(series, name, labels))
}

/// `1.050× (+5.0 %)`.
fn describe(ratio: f64) -> String {
    format!("{ratio:.3}× ({:+.1} %)", 100.0 * (ratio - 1.0))
}

// === impl TapRow ===

impl TapRow {
    pub const ALL: [Self; 5] = [
        Self::Direct,
        Self::Disabled,
        Self::Idle,
        Self::NoMatch,
        Self::All,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Disabled => "tap-disabled",
            Self::Idle => "tap-idle",
            Self::NoMatch => "tap-nomatch",
            Self::All => "tap-all",
        }
    }

    /// Whether the proxy of this row serves tap.
    fn enables_tap(self) -> bool {
        matches!(self, Self::Idle | Self::NoMatch | Self::All)
    }
}

// === impl Measured ===

impl Measured {
    fn cpu_per_request(&self) -> Option<f64> {
        self.cpu_us.map(|us| us / self.load.completed.max(1) as f64)
    }

    fn shard_per_request(&self) -> Option<f64> {
        self.shard_us
            .map(|us| us / self.load.completed.max(1) as f64)
    }

    fn events_per_request(&self) -> Option<f64> {
        Some(self.received?.events as f64 / self.tapped?.max(1) as f64)
    }
}

// === impl Counts ===

impl Counts {
    fn record(&self, event: &TapEvent) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let Some(tap_event::Event::Http(tap_event::Http {
            event: Some(ev::Event::RequestInit(_)),
        })) = &event.event
        {
            self.request_inits.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn received(&self) -> Received {
        Received {
            events: self.events.load(Ordering::Relaxed),
            request_inits: self.request_inits.load(Ordering::Relaxed),
        }
    }

    fn end(&self, how: String) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(how);
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

// === impl Watch ===

impl Watch {
    /// Opens `request` on the tap server at `addr` from a thread pinned to the load CPU,
    /// with a tokio current-thread runtime of its own; returns once the proxy has accepted
    /// the call (its response headers are in).
    fn open(pin: &Pinning, addr: SocketAddr, request: ObserveRequest) -> Result<Watch> {
        let counts = Arc::new(Counts::default());
        let (opened_tx, opened_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let core = pin.load_core();
        let thread = {
            let counts = counts.clone();
            thread::Builder::new()
                .name("tap-client".to_string())
                .spawn(move || {
                    let rt = if core_affinity::set_for_current(core) {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("a tokio runtime for the tap client")
                    } else {
                        Err(anyhow!(
                            "cannot pin the tap client thread to CPU {}",
                            core.id
                        ))
                    };
                    match rt {
                        Ok(rt) => {
                            rt.block_on(read_events(addr, request, &counts, opened_tx, stop_rx))
                        }
                        Err(error) => {
                            let _ = opened_tx.send(Err(error));
                        }
                    }
                })
                .context("spawning the tap client thread")?
        };
        // Dropped (stopped and joined) on every error below.
        let watch = Watch {
            counts,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match opened_rx.recv_timeout(tap_client::CONNECT_TIMEOUT + READY_TIMEOUT) {
            Ok(Ok(())) => Ok(watch),
            Ok(Err(error)) => Err(error),
            Err(_) => bail!("the tap client did not open its Observe call on {addr}"),
        }
    }

    fn received(&self) -> Received {
        self.counts.received()
    }

    /// Stops the client (closing the call) and returns how the stream ended, if the proxy
    /// ended it first.
    fn close(mut self) -> Option<String> {
        self.shut();
        self.counts.ended()
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shut();
    }
}

// === impl Ringlink ===

impl Ringlink {
    fn stop(self) -> Result<()> {
        self.process.stop()
    }
}

// === impl TapTest ===

impl TapTest<'_> {
    /// The table of one runtime, with its ratio lines and notes; whether a row failed.
    fn run_runtime(&self, runtime: &str) -> bool {
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        let mut failed = false;
        for row in TapRow::ALL {
            eprintln!("tap {runtime}: {}", row.name());
            match self.measure(runtime, row) {
                Ok(measured) => {
                    for problem in &measured.problems {
                        failed = true;
                        notes.push(format!(
                            "{}: FAILED (not a measurement): {problem}",
                            row.name()
                        ));
                    }
                    rows.push(measured);
                }
                Err(error) => {
                    eprintln!("tap {runtime} {}: FAILED: {error:#}", row.name());
                    notes.push(format!("{}: FAILED: {error:#}", row.name()));
                    failed = true;
                }
            }
        }
        println!("\n### {runtime}\n");
        print!("{}", table(&rows));
        let valid = |row| rows.iter().find(|m| m.row == row && m.problems.is_empty());
        if let Some(base) = valid(TapRow::Disabled) {
            for row in [TapRow::Idle, TapRow::NoMatch, TapRow::All] {
                let Some(m) = valid(row) else { continue };
                let cpu = m.cpu_per_request().zip(base.cpu_per_request());
                let shard = m.shard_per_request().zip(base.shard_per_request());
                if let (Some((cpu, cpu_base)), Some((shard, shard_base))) = (cpu, shard) {
                    println!(
                        "\n{} costs {} tap-disabled's CPU per request; the shard thread alone {}.",
                        row.name(),
                        describe(cpu / cpu_base),
                        describe(shard / shard_base)
                    );
                }
            }
        }
        for note in &notes {
            println!("\n- {note}");
        }
        failed
    }

    fn measure(&self, runtime: &str, row: TapRow) -> Result<Measured> {
        let pin = self.bench.pin;
        let duration = Duration::from_secs(u64::from(self.bench.opts.duration_secs));
        let warm_up = Duration::from_secs(u64::from(WARM_UP_SECS));
        let load_to = |target| Load {
            target,
            source: CLIENT_IP,
            connections: self.bench.opts.connections as usize,
            request: request(LOAD_PATH, target),
        };
        let run_load = |load: &Load, duration| {
            let load = load.clone();
            on_load_cpu(
                pin,
                move |rt| Ok(rt.block_on(loadgen::run(&load, duration))),
            )
        };
        if row == TapRow::Direct {
            let load = load_to(self.backend);
            let warm = run_load(&load, warm_up)?;
            let measured = run_load(&load, duration)?;
            let mut problems = warm.problems();
            problems.extend(measured.problems());
            return Ok(Measured {
                row,
                load: measured,
                cpu_us: None,
                shard_us: None,
                tapped: None,
                received: None,
                sent: None,
                dropped: None,
                problems,
            });
        }
        let proxy = self.start(runtime, row.enables_tap())?;
        let load = load_to(proxy.ports.inbound);
        match self.rt.block_on(loadgen::probe(&load))? {
            200 => {}
            status => bail!("GET {LOAD_PATH} through the proxy was answered {status}, not 200"),
        }
        let watch = match observe_request(row) {
            Some(observe) => Some(self.open_tap(&proxy, row, observe, &load)?),
            None => None,
        };
        let warm = run_load(&load, warm_up).context("warm-up")?;
        let pid = proxy.process.pid();
        let cpu_before = procstat::tree_cpu_time(pid)?;
        let shard_before = procstat::threads_cpu_time(pid, SHARD_THREAD)?;
        let measured = run_load(&load, duration)?;
        let cpu_after = procstat::tree_cpu_time(pid)?;
        let shard_after = procstat::threads_cpu_time(pid, SHARD_THREAD)?;
        let series = self.settle(proxy.ports.admin, watch.as_ref())?;
        let sent = metric(&series, "tap_events_total", &[("result", "sent")]);
        let dropped = metric(&series, "tap_events_total", &[("result", "dropped")]);
        let received = watch.as_ref().map(Watch::received);
        // The probe, then the load's requests.
        let tapped = watch
            .as_ref()
            .map(|_| 1 + warm.completed + measured.completed);
        let mut problems = warm.problems();
        problems.extend(measured.problems());
        problems.extend(check_events(row, tapped, received, sent, dropped));
        if let Some(ended) = watch.and_then(Watch::close) {
            problems.push(format!("{ended} before the run was over"));
        }
        proxy.stop()?;
        Ok(Measured {
            row,
            load: measured,
            cpu_us: Some(cpu_after.saturating_sub(cpu_before).as_secs_f64() * 1e6),
            shard_us: Some(shard_after.saturating_sub(shard_before).as_secs_f64() * 1e6),
            tapped,
            received,
            sent,
            dropped,
            problems,
        })
    }

    /// Starts ringlink for `runtime`: one shard on the proxy CPU, certified, its inbound port
    /// forwarding to the backend, serving tap if `tap`; waits until it is ready and the tap
    /// server listens on the control port exactly when `tap`.
    fn start(&self, runtime: &str, tap: bool) -> Result<Ringlink> {
        let ports = RinglinkPorts::free()?;
        let mut cmd = ports.command(&self.bench.bins.ringlink, self.bench.pin, runtime);
        cmd.env("RINGLINK_ORIG_DST_OVERRIDE", self.backend.to_string());
        let tag = format!("bench-tap-{runtime}-{}", ports.admin.port());
        let token = certified(&mut cmd, &self.identity, &tag, PROXY_ID);
        if tap {
            cmd.env("LINKERD2_PROXY_TAP_SVC_NAME", TAP_SVC_NAME);
        } else {
            cmd.env_remove("LINKERD2_PROXY_TAP_SVC_NAME");
        }
        let name = format!("ringlink-{runtime} (tap: {tap})");
        let mut process = Spawned::spawn(&name, cmd)?;
        for addr in [ports.inbound, ports.admin] {
            process.wait_for_port(addr, READY_TIMEOUT)?;
        }
        if !until_ready(&self.rt, ports.admin, READY_TIMEOUT) {
            bail!("{name} did not answer /ready with 200 within {READY_TIMEOUT:?}");
        }
        // Bound before the shards start, so listening by now if at all.
        let listening = std::net::TcpStream::connect(ports.control).is_ok();
        if listening != tap {
            bail!(
                "{name}: the tap server {} on the control port {}",
                if listening {
                    "listens"
                } else {
                    "does not listen"
                },
                ports.control
            );
        }
        Ok(Ringlink {
            process,
            ports,
            _token: token,
        })
    }

    /// Opens the row's `Observe` call and checks it is in force: the proxy counts it active,
    /// and a probe request (`GET /never-sent` for `tap-nomatch`, the load's for `tap-all`)
    /// reaches the client as a request-init event within [`EVENT_TIMEOUT`].
    fn open_tap(
        &self,
        proxy: &Ringlink,
        row: TapRow,
        observe: ObserveRequest,
        load: &Load,
    ) -> Result<Watch> {
        let watch = Watch::open(self.bench.pin, proxy.ports.control, observe)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let series = self.metrics(proxy.ports.admin)?;
            if metric(&series, "tap_observe_active", &[]) == Some(1.0) {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the proxy's tap_observe_active never reached 1 within {READY_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let path = match row {
            TapRow::NoMatch => NEVER_SENT,
            _ => LOAD_PATH,
        };
        let probe = Load {
            request: request(path, load.target),
            ..load.clone()
        };
        match self.rt.block_on(loadgen::probe(&probe))? {
            200 => {}
            status => bail!("the tap probe GET {path} was answered {status}, not 200"),
        }
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while watch.received().request_inits == 0 {
            if let Some(ended) = watch.counts.ended() {
                bail!("{ended} before the probe's event arrived");
            }
            if Instant::now() >= deadline {
                bail!(
                    "the tap probe GET {path} made no request-init event within \
                     {EVENT_TIMEOUT:?}: the tap is not in force"
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(watch)
    }

    /// The proxy's metrics once the tap client (if any) has received every event the proxy
    /// sent, or after [`SETTLE_TIMEOUT`].
    fn settle(&self, admin: SocketAddr, watch: Option<&Watch>) -> Result<Vec<Series>> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let series = self.metrics(admin)?;
            let Some(watch) = watch else {
                return Ok(series);
            };
            let sent = metric(&series, "tap_events_total", &[("result", "sent")]);
            if sent == Some(watch.received().events as f64) || Instant::now() >= deadline {
                return Ok(series);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self, admin: SocketAddr) -> Result<Vec<Series>> {
        // `call` panics if it cannot connect: check first.
        std::net::TcpStream::connect(admin)
            .map_err(|error| anyhow!("the admin port {admin}: {error}"))?;
        let reply = self.rt.block_on(call(admin, "GET", "/metrics", ""));
        if reply.status != 200 {
            bail!("GET /metrics answered {}", reply.status);
        }
        Ok(parse(&reply.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::tap::observe_request::r#match as pb;

    #[test]
    fn the_calls_match_nothing_of_the_load_and_everything() {
        let http = |m: &pb::Match| match m {
            pb::Match::Http(pb::Http {
                r#match: Some(pb::http::Match::Path(path)),
            }) => path.r#match.clone(),
            _ => None,
        };
        let nomatch = observe_request(TapRow::NoMatch).unwrap();
        assert_eq!(nomatch.limit, NOMATCH_LIMIT);
        let Some(pb::Match::All(all)) = nomatch.r#match.and_then(|m| m.r#match) else {
            panic!("not an `all`");
        };
        let prefixes: Vec<_> = (all.matches.iter())
            .filter_map(|m| m.r#match.as_ref().and_then(http))
            .collect();
        assert_eq!(
            prefixes,
            [pb::http::string_match::Match::Prefix(
                NEVER_SENT.to_string()
            )]
        );
        let all = observe_request(TapRow::All).unwrap();
        assert_eq!(all.limit, ALL_LIMIT);
        assert!(matches!(
            all.r#match.and_then(|m| m.r#match),
            Some(pb::Match::All(pb::Seq { matches })) if matches.is_empty()
        ));
        assert!(observe_request(TapRow::Idle).is_none());
    }

    #[test]
    fn events_are_checked_per_row() {
        let got = |events, request_inits| {
            Some(Received {
                events,
                request_inits,
            })
        };
        // tap-all: three events per tapped request, sent or dropped, one dropped per other;
        // all sent received. Here 9 of 10 tapped, one of their events dropped.
        assert!(check_events(TapRow::All, Some(10), got(26, 9), Some(26.0), Some(2.0)).is_empty());
        assert_eq!(
            check_events(TapRow::All, Some(10), got(26, 9), Some(26.0), Some(0.0)).len(),
            1
        );
        assert_eq!(
            check_events(TapRow::All, Some(10), got(20, 7), Some(24.0), Some(0.0)).len(),
            1
        );
        // tap-nomatch: the probe's request-init only.
        assert!(
            check_events(TapRow::NoMatch, Some(99), got(3, 1), Some(3.0), Some(0.0)).is_empty()
        );
        assert_eq!(
            check_events(TapRow::NoMatch, Some(99), got(6, 2), Some(6.0), Some(0.0)).len(),
            1
        );
        // tap-idle: nothing sent; a tap server.
        assert!(check_events(TapRow::Idle, None, None, Some(0.0), Some(0.0)).is_empty());
        assert_eq!(check_events(TapRow::Idle, None, None, None, None).len(), 1);
        assert!(check_events(TapRow::Disabled, None, None, None, None).is_empty());
    }

    #[test]
    fn the_table_has_one_cell_per_column() {
        let row = |row, cpu: Option<f64>, received: Option<Received>| Measured {
            row,
            load: LoadReport {
                completed: 1000,
                elapsed: Duration::from_secs(1),
                ..Default::default()
            },
            cpu_us: cpu,
            shard_us: cpu.map(|us| us * 0.5),
            tapped: received.map(|_| 1250),
            received,
            sent: row
                .enables_tap()
                .then(|| received.map_or(0.0, |r| r.events as f64)),
            dropped: row.enables_tap().then_some(0.0),
            problems: Vec::new(),
        };
        let all = Received {
            events: 3750,
            request_inits: 1250,
        };
        let t = table(&[
            row(TapRow::Direct, None, None),
            row(TapRow::Disabled, Some(10_000.0), None),
            row(TapRow::All, Some(15_000.0), Some(all)),
        ]);
        assert!(
            t.contains(
                "| tap-all | 1000 | 15.00 | 1.50× | 7.50 | 1.50× | 1000 | 1250 | 3750 | 3.0000 | 3750 | 0 | ok |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| tap-disabled | 1000 | 10.00 | 1.00× | 5.00 | 1.00× | 1000 | - | - | - | - | - | ok |"),
            "{t}"
        );
        let widths: Vec<_> = t.lines().map(|l| l.matches('|').count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
    }
}
