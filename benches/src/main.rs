//! `ringlink-bench`: measures ringlink against no proxy, a reference tokio forwarder, nginx
//! and haproxy, in one run on one machine, so that the ratios between them mean something
//! on a noisy host.
//!
//! Tests, each one table: (http1) wrk, small HTTP/1.1 keep-alive request/response; (h2)
//! h2load, the same over h2c; both with the proxy's CPU time per request and RSS; (grpc)
//! `ringlink-grpc-load`, unary gRPC calls, closed loop, with latency percentiles and the
//! proxy's CPU time per call; (latency) HTTP/1.1 at a fixed rate far below saturation (open
//! loop, `loadgen.rs`), latency percentiles and what each proxy adds over direct; (bulk) one
//! connection streaming `--bulk-mb` MiB into a sink, with MiB/s and the proxy's CPU time per
//! MiB. Every proxy process is fresh for each test. (mesh) two ringlinks meshed, mTLS
//! against plaintext, three tables per runtime (`mesh.rs`). (policy) ringlink's inbound port
//! with a 50-route × 20-authorization policy against the default one, a table per runtime
//! (`policy.rs`). (outbound-policy) ringlink's outbound port with a 20-route outbound policy
//! (retries enabled) against plain balancing by name, a table per runtime
//! (`outbound_policy.rs`). (tap) ringlink's inbound port with Linkerd's tap API off, on and idle, and
//! tapped by an `Observe` call matching none or all of the load, a table per runtime
//! (`tap.rs`). See `benches/README.md`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::args::{Options, Test, USAGE};
use crate::grpc::GrpcLoad;
use crate::h2load::H2load;
use crate::loadgen::Load;
use crate::pinning::Pinning;
use crate::process::Spawned;
use crate::proxy::{Binaries, Proxy, ProxyKind};
use crate::report::{Measured, Row};
use crate::wrk::Wrk;

mod args;
mod bulk;
mod configs;
mod destination;
mod grpc;
mod h2load;
mod idle;
mod loadgen;
mod mesh;
mod metrics_cost;
mod outbound_policy;
mod pinning;
mod policy;
mod process;
mod procstat;
mod proxy;
mod report;
mod soak;
mod tap;
mod tools;
mod wrk;

const WARM_UP_SECS: u32 = 2;
const BACKEND_STARTUP: Duration = Duration::from_secs(10);
const MIB: f64 = (1u64 << 20) as f64;

struct Bench<'a> {
    opts: &'a Options,
    pin: &'a Pinning,
    bins: &'a Binaries,
    wrk: Wrk<'a>,
    h2load: H2load<'a>,
    grpc: GrpcLoad<'a>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringlink-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let Some(opts) = Options::parse(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let pin = Pinning::detect()?;
    let wrk = Wrk {
        pin: &pin,
        connections: opts.connections,
    };
    let wrk_missing = wrk.unavailable()?;
    let h2load = H2load {
        pin: &pin,
        clients: opts.h2_connections,
        streams: opts.h2_streams,
    };
    let h2load_missing = H2load::unavailable();
    let bins = locate_binaries(&opts)?;
    if opts.soak.minutes.is_some() {
        return soak::run(&opts, &pin, &bins);
    }
    let backend = bins.ref_forwarder.with_file_name("bench-backend");
    let grpc_load = bins.ref_forwarder.with_file_name("ringlink-grpc-load");

    print_header(&opts, &pin, &bins);
    let bench = Bench {
        opts: &opts,
        pin: &pin,
        bins: &bins,
        wrk,
        h2load,
        grpc: GrpcLoad {
            pin: &pin,
            program: &grpc_load,
            concurrency: opts.grpc_concurrency,
            connections: opts.grpc_connections,
        },
    };
    if let Some(rounds) = opts.metrics_cost_rounds {
        return metrics_cost::run(&bench, &backend, wrk_missing.as_deref(), rounds);
    }
    let mut failed = false;
    for &test in &opts.tests {
        println!("\n## {}\n", test.name());
        let missing = match test {
            Test::Http1 | Test::Mesh => wrk_missing.as_ref(),
            Test::H2 => h2load_missing.as_ref(),
            // The grpc test's load is the bench's own (`ringlink-grpc-load`); the latency,
            // policy, outbound-policy and tap tests' too (`loadgen.rs`).
            Test::Grpc
            | Test::Latency
            | Test::Bulk
            | Test::Policy
            | Test::OutboundPolicy
            | Test::Tap
            | Test::Idle => None,
        };
        if let Some(reason) = missing {
            eprintln!("{}: skipped: {reason}", test.name());
            println!("Skipped: {reason}.");
            continue;
        }
        let flags: &[&str] = match test {
            Test::Http1 => &[],
            Test::H2 => &["--h2"],
            Test::Grpc => &["--grpc"],
            Test::Latency => &[],
            Test::Bulk => &["--sink"],
            Test::Mesh => {
                match mesh::run(&bench, &backend) {
                    Ok(mesh_failed) => failed |= mesh_failed,
                    Err(error) => {
                        eprintln!("mesh: FAILED: {error:#}");
                        println!("\n- FAILED: {error:#}");
                        failed = true;
                    }
                }
                continue;
            }
            Test::Policy => {
                match policy::run(&bench, &backend) {
                    Ok(policy_failed) => failed |= policy_failed,
                    Err(error) => {
                        eprintln!("policy: FAILED: {error:#}");
                        println!("\n- FAILED: {error:#}");
                        failed = true;
                    }
                }
                continue;
            }
            Test::OutboundPolicy => {
                match outbound_policy::run(&bench, &backend) {
                    Ok(policy_failed) => failed |= policy_failed,
                    Err(error) => {
                        eprintln!("outbound-policy: FAILED: {error:#}");
                        println!("\n- FAILED: {error:#}");
                        failed = true;
                    }
                }
                continue;
            }
            Test::Idle => {
                match idle::run(&bench, &backend) {
                    Ok(idle_failed) => failed |= idle_failed,
                    Err(error) => {
                        eprintln!("idle: FAILED: {error:#}");
                        println!("\n- FAILED: {error:#}");
                        failed = true;
                    }
                }
                continue;
            }
            Test::Tap => {
                match tap::run(&bench, &backend) {
                    Ok(tap_failed) => failed |= tap_failed,
                    Err(error) => {
                        eprintln!("tap: FAILED: {error:#}");
                        println!("\n- FAILED: {error:#}");
                        failed = true;
                    }
                }
                continue;
            }
        };
        let (backend_addr, backend_process) = start_backend(&pin, &backend, flags)?;
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for &kind in &opts.proxies {
            if let Some(reason) = bins.unavailable(kind, test) {
                eprintln!("{} {}: {reason}", kind.name(), test.name());
                notes.push(format!("{}: {reason}", kind.name()));
                continue;
            }
            eprintln!("{}: {}", kind.name(), test.name());
            match bench.measure(test, kind, backend_addr, &mut notes) {
                Ok(measured) => rows.push(Row { kind, measured }),
                Err(error) => {
                    eprintln!("{} {}: FAILED: {error:#}", kind.name(), test.name());
                    notes.push(format!("{}: FAILED: {error:#}", kind.name()));
                    failed = true;
                }
            }
        }
        backend_process.stop()?;

        print!("{}", report::table(test, &rows));
        for note in &notes {
            println!("\n- {note}");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_header(opts: &Options, pin: &Pinning, bins: &Binaries) {
    println!("# ringlink-bench\n");
    println!("- kernel: {}", kernel_version());
    println!("{pin}");
    let tests: &[Test] = if opts.metrics_cost_rounds.is_some() {
        &[Test::Http1]
    } else {
        &opts.tests
    };
    for test in tests {
        match test {
            Test::Http1 => println!(
                "- http1: `wrk -t1 -c{} -d{}s --latency` after a {WARM_UP_SECS} s warm-up run, \
                 backend `bench-backend` (HTTP/1.1)",
                opts.connections, opts.duration_secs
            ),
            Test::H2 => println!(
                "- h2: `h2load -t1 -c{} -m{} -D{}` (h2c, prior knowledge) after a \
                 {WARM_UP_SECS} s warm-up run, backend `bench-backend --h2`; `req mean`, \
                 `req sd`, `req max` are h2load's \"time for request\" (it reports no \
                 percentiles)",
                opts.h2_connections, opts.h2_streams, opts.duration_secs
            ),
            Test::Grpc => println!(
                "- grpc: `ringlink-grpc-load --unary --concurrency {} --connections {} \
                 --duration {}` (tonic, closed loop, unary `ringlink.test.Echo/Echo` calls) \
                 after a {WARM_UP_SECS} s warm-up run, backend `bench-backend --grpc` (the \
                 integration harness's tonic Echo service); latency from each call's start, \
                 HDR histogram",
                opts.grpc_concurrency, opts.grpc_connections, opts.duration_secs
            ),
            Test::Latency => println!(
                "- latency: ringlink-bench's own HTTP/1.1 client, open loop: {} requests/s on a \
                 fixed timetable over {} keep-alive connections (at most one request in flight \
                 each), on a thread pinned to CPU {}, {WARM_UP_SECS} s warm-up then {} s; \
                 latency from each request's scheduled time (no coordinated omission), HDR \
                 histogram; backend `bench-backend` (HTTP/1.1); `added` = row − direct, per \
                 percentile",
                opts.latency_rps, opts.latency_connections, pin.load_cpu, opts.duration_secs
            ),
            Test::Bulk => println!(
                "- bulk: {} MiB over one connection into `bench-backend --sink` (L4)",
                opts.bulk_mib
            ),
            Test::Mesh => println!(
                "- mesh: two ringlink processes (outbound and inbound, one shard each, both \
                 `taskset -c {proxy}`, each fresh per row) in front of `bench-backend`; \
                 wrk as in http1 through the outbound proxy (`Host` resolved by a mock \
                 Destination service), on `taskset -c {load}`; the handshake and idle \
                 clients on a thread of ringlink-bench pinned to CPU {load}; the mock \
                 Identity and Destination services on unpinned threads of ringlink-bench \
                 (idle once the proxies are certified and resolved); CPU µs/req sums both \
                 proxies",
                proxy = pin.proxy_cpu,
                load = pin.load_cpu
            ),
            Test::Policy => println!(
                "- policy: ringlink (one shard, `taskset -c {proxy}`, fresh per row) forwarding \
                 its inbound port to `bench-backend`; the load is ringlink-bench's own HTTP/1.1 \
                 client ({conns} keep-alive connections, closed loop, {WARM_UP_SECS} s warm-up \
                 then {secs} s) from 127.0.0.2, on a thread pinned to CPU {load}; rows in the \
                 order {rows}; `policy-50x20`: the mock policy controller (an unpinned thread \
                 of ringlink-bench, idle once the policy is sent) serves {routes} HTTP routes \
                 × {authz} authorizations for the backend's port",
                proxy = pin.proxy_cpu,
                load = pin.load_cpu,
                conns = opts.connections,
                secs = opts.duration_secs,
                rows = opts
                    .policy_rows
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                routes = policy::ROUTES,
                authz = policy::AUTHORIZATIONS,
            ),
            Test::OutboundPolicy => println!(
                "- outbound-policy: ringlink (one shard, `taskset -c {proxy}`, fresh per row, \
                 with a fresh mock controller per row as Destination and policy service on an \
                 unpinned thread of ringlink-bench, idle once it has answered) taking the load \
                 on its outbound port, every connection to the original destination {vip} \
                 (`RINGLINK_ORIG_DST_OVERRIDE`, in the profile networks 127.0.0.0/8); the load \
                 is ringlink-bench's own HTTP/1.1 client ({conns} keep-alive connections, \
                 closed loop, {WARM_UP_SECS} s warm-up then {secs} s, `host: {authority}`) on \
                 a thread pinned to CPU {load}; rows in the order {rows}; `balanced`: no \
                 outbound policy, balanced by the `host` over `{authority}` (the backend); \
                 `policy-20`: {routes} HTTP routes, the load's last, retrying 5xx up to \
                 {retries} times, balanced over `{path}` (the backend)",
                proxy = pin.proxy_cpu,
                load = pin.load_cpu,
                conns = opts.connections,
                secs = opts.duration_secs,
                vip = outbound_policy::VIP,
                authority = outbound_policy::AUTHORITY,
                rows = opts
                    .outbound_policy_rows
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                routes = outbound_policy::ROUTES,
                retries = outbound_policy::MAX_RETRIES,
                path = outbound_policy::BACKEND_PATH,
            ),
            Test::Idle => println!(
                "- idle: for each proxy (fresh per row), {n} client connections opened one \
                 after another from a thread pinned to CPU {load} and left idle, after {warm} \
                 held to warm up: `http1` keep-alive after one GET (backend `bench-backend`), \
                 `tcp` after 1 KiB that is not HTTP, echoed (backend `bench-backend --echo`; \
                 nginx `stream`, haproxy `mode tcp`); bytes per idle connection = growth of the \
                 proxy's RSS (all its processes) / {n}",
                n = idle::CONNECTIONS,
                warm = idle::WARM,
                load = pin.load_cpu
            ),
            Test::Tap => println!(
                "- tap: ringlink (one shard, `taskset -c {proxy}`, fresh per row, certified by \
                 the mock Identity service on an unpinned thread of ringlink-bench) forwarding \
                 its inbound port to `bench-backend`; the load is ringlink-bench's own HTTP/1.1 \
                 client ({conns} keep-alive connections, closed loop, {WARM_UP_SECS} s warm-up \
                 then {secs} s) from 127.0.0.1, on a thread pinned to CPU {load}; rows \
                 {rows}; the tap client (plaintext h2c from loopback, \
                 `LINKERD2_PROXY_TAP_SVC_NAME={svc}`) reads its Observe call on a thread of its \
                 own pinned to CPU {load}: `tap-nomatch` path prefix `{never}` (limit \
                 {nomatch}), `tap-all` every request (limit {all}, no headers)",
                proxy = pin.proxy_cpu,
                load = pin.load_cpu,
                conns = opts.connections,
                secs = opts.duration_secs,
                rows = tap::TapRow::ALL
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                svc = tap::TAP_SVC_NAME,
                never = tap::NEVER_SENT,
                nomatch = tap::NOMATCH_LIMIT,
                all = tap::ALL_LIMIT,
            ),
        }
    }
    if opts.metrics_cost_rounds.is_none() && opts.proxies.contains(&ProxyKind::Nginx) {
        match &bins.nginx {
            Some(nginx) => println!(
                "- nginx {}: `worker_processes 1`; http1 and latency `proxy_pass` with upstream \
                 keepalive; h2 and grpc `grpc_pass` to the h2c backend; bulk `stream` with \
                 `proxy_half_close`",
                nginx.version_string()
            ),
            None => println!("- nginx: not installed"),
        }
    }
    if opts.metrics_cost_rounds.is_none() && opts.proxies.contains(&ProxyKind::Haproxy) {
        match &bins.haproxy {
            Some(haproxy) => println!(
                "- haproxy {}: `nbthread 1`; http1 and latency `mode http` with `http-reuse \
                 always`; h2 and grpc `proto h2` on bind and server; bulk `mode tcp`",
                tools::haproxy_version(haproxy)
            ),
            None => println!("- haproxy: not installed"),
        }
    }
    println!(
        "- proxy CPU: utime + stime from /proc/PID/stat, summed over the proxy's processes \
         (nginx: master and worker), resolution {:?}",
        procstat::clock_tick()
    );
}

// === impl Bench ===

impl Bench<'_> {
    /// Runs `test` through a fresh `kind` proxy in front of `backend`; notes non-fatal
    /// oddities (load-generator errors) in `notes`.
    fn measure(
        &self,
        test: Test,
        kind: ProxyKind,
        backend: SocketAddr,
        notes: &mut Vec<String>,
    ) -> Result<Measured> {
        let name = kind.name();
        if matches!(
            test,
            Test::Mesh | Test::Policy | Test::OutboundPolicy | Test::Tap | Test::Idle
        ) {
            bail!(
                "the mesh, policy, outbound-policy, tap and idle tests measure their own rows \
                 (mesh.rs, policy.rs, outbound_policy.rs, tap.rs, idle.rs)"
            );
        }
        let proxy = Proxy::start(kind, test, backend, self.bins, self.pin)?;
        let url = format!("http://{}/", proxy.addr);
        let host = proxy.host.clone();
        let measured = match test {
            Test::Http1 => {
                self.wrk
                    .run(&url, host.as_deref(), WARM_UP_SECS)
                    .context("warm-up")?;
                let cpu_before = proxy.cpu_time()?;
                let wrk = self
                    .wrk
                    .run(&url, host.as_deref(), self.opts.duration_secs)?;
                let cpu_after = proxy.cpu_time()?;
                let rss_mib = proxy.rss_bytes()?.map(|b| b as f64 / MIB);
                notes.extend(
                    wrk.errors
                        .iter()
                        .map(|e| format!("{name}: wrk reported {e}")),
                );
                Measured::Http1 {
                    requests_per_sec: wrk.requests_per_sec,
                    p50: wrk.p50,
                    p99: wrk.p99,
                    cpu_us_per_request: cpu_us(cpu_before, cpu_after)
                        .map(|us| us / wrk.requests as f64),
                    rss_mib,
                }
            }
            Test::H2 => {
                self.h2load.run(&url, WARM_UP_SECS).context("warm-up")?;
                let cpu_before = proxy.cpu_time()?;
                let h2 = self.h2load.run(&url, self.opts.duration_secs)?;
                let cpu_after = proxy.cpu_time()?;
                let rss_mib = proxy.rss_bytes()?.map(|b| b as f64 / MIB);
                notes.extend(
                    h2.errors
                        .iter()
                        .map(|e| format!("{name}: h2load reported {e}")),
                );
                Measured::H2 {
                    requests_per_sec: h2.requests_per_sec,
                    request_time: h2.request_time,
                    cpu_us_per_request: cpu_us(cpu_before, cpu_after)
                        .map(|us| us / h2.succeeded as f64),
                    rss_mib,
                }
            }
            Test::Grpc => {
                self.grpc.run(proxy.addr, WARM_UP_SECS).context("warm-up")?;
                let cpu_before = proxy.cpu_time()?;
                let grpc = self.grpc.run(proxy.addr, self.opts.duration_secs)?;
                let cpu_after = proxy.cpu_time()?;
                let rss_mib = proxy.rss_bytes()?.map(|b| b as f64 / MIB);
                if let Some(error) = &grpc.first_error {
                    notes.push(format!(
                        "{name}: {} failed calls ({}), the first: {error}",
                        grpc.failed(),
                        grpc.errors_line()
                    ));
                }
                Measured::Grpc {
                    calls_per_sec: grpc.ok_per_sec(),
                    latency: grpc.latency,
                    errors: grpc.errors_line(),
                    cpu_us_per_call: cpu_us(cpu_before, cpu_after).map(|us| us / grpc.ok as f64),
                    rss_mib,
                }
            }
            Test::Latency => {
                let host = host.unwrap_or_else(|| proxy.addr.to_string());
                let load = Load {
                    target: proxy.addr,
                    source: Ipv4Addr::LOCALHOST.into(),
                    connections: self.opts.latency_connections as usize,
                    request: format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")
                        .into_bytes()
                        .into(),
                };
                let rate = f64::from(self.opts.latency_rps);
                let paced = |secs: u32| {
                    let load = load.clone();
                    let duration = Duration::from_secs(secs.into());
                    mesh::on_load_cpu(self.pin, move |rt| {
                        Ok(rt.block_on(loadgen::run_paced(&load, rate, duration)))
                    })
                };
                let warm = paced(WARM_UP_SECS).context("warm-up")?;
                let cpu_before = proxy.cpu_time()?;
                let wall = Instant::now();
                let run = paced(self.opts.duration_secs)?;
                let wall = wall.elapsed();
                let cpu_after = proxy.cpu_time()?;
                let mut problems = warm.load.problems();
                problems.extend(run.load.problems());
                if run.missed > 0 {
                    problems.push(format!(
                        "{} requests of the timetable were never sent",
                        run.missed
                    ));
                }
                notes.extend(problems.iter().map(|p| format!("{name}: {p}")));
                Measured::Latency {
                    requests_per_sec: run.load.completed as f64
                        / f64::from(self.opts.duration_secs),
                    latency: run.latency.summary(),
                    send_lag: run.send_lag.summary(),
                    errors: run.load.errors + run.load.non_2xx,
                    busy: cpu_us(cpu_before, cpu_after).map(|us| us / 1e6 / wall.as_secs_f64()),
                }
            }
            Test::Mesh | Test::Policy | Test::OutboundPolicy | Test::Tap | Test::Idle => {
                unreachable!("refused above")
            }
            Test::Bulk => {
                let cpu_before = proxy.cpu_time()?;
                let bulk = bulk::run(proxy.addr, self.opts.bulk_mib, self.pin.load_core())?;
                let cpu_after = proxy.cpu_time()?;
                Measured::Bulk {
                    mib_per_sec: bulk.mib_per_sec(),
                    cpu_us_per_mib: cpu_us(cpu_before, cpu_after)
                        .map(|us| us / (bulk.bytes as f64 / MIB)),
                }
            }
        };
        proxy.stop()?;
        Ok(measured)
    }
}

fn cpu_us(before: Option<Duration>, after: Option<Duration>) -> Option<f64> {
    Some(after?.saturating_sub(before?).as_secs_f64() * 1e6)
}

fn locate_binaries(opts: &Options) -> Result<Binaries> {
    let dir = process::exe_dir()?;
    for bin in ["bench-backend", "ref-forwarder", "ringlink-grpc-load"] {
        if !dir.join(bin).is_file() {
            bail!(
                "{} not found: build with `cargo build --release -p ringlink-benches`",
                dir.join(bin).display()
            );
        }
    }
    if opts.proxies.iter().any(|kind| kind.is_ringlink()) && !opts.ringlink.is_file() {
        bail!(
            "ringlink binary {} not found: build it with `cargo build --release -p \
             ringlink-engine`, pass --ringlink PATH, or leave ringlink out with --only",
            opts.ringlink.display()
        );
    }
    let wants = |kind| opts.proxies.contains(&kind);
    Ok(Binaries {
        ref_forwarder: dir.join("ref-forwarder"),
        ringlink: opts.ringlink.clone(),
        nginx: wants(ProxyKind::Nginx).then(tools::Nginx::find).flatten(),
        haproxy: wants(ProxyKind::Haproxy)
            .then(|| tools::find_program("haproxy"))
            .flatten(),
    })
}

pub(crate) fn start_backend(
    pin: &Pinning,
    program: &std::path::Path,
    flags: &[&str],
) -> Result<(SocketAddr, Spawned)> {
    let addr = process::free_addr()?;
    let mut cmd = pin.load(program);
    cmd.args(flags).arg(addr.to_string());
    let mut backend = Spawned::spawn("bench-backend", cmd)?;
    backend.wait_for_port(addr, BACKEND_STARTUP)?;
    Ok((addr, backend))
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
