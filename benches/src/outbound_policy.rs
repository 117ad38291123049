//! Test `outbound-policy`: what outbound policy routing costs ringlink per request.
//!
//! For each ringlink runtime in `--only`, with a fresh proxy (and a fresh mock controller)
//! per row, the same HTTP/1.1 keep-alive load sent to the proxy's **outbound** listener,
//! whose every connection claims the original destination [`VIP`]
//! (`RINGLINK_ORIG_DST_OVERRIDE`), a Service address in the profile networks where nothing
//! listens:
//!
//! - `direct`: the load straight to the backend (reference);
//! - `balanced`: the mock controller (`ringlink_integration::controller`) as Destination and
//!   policy service, a profile for the VIP (`web.ns.svc.cluster.local`) and no outbound
//!   policy (the mock answers `NotFound`): the requests, whose `host` is
//!   `web.ns.svc.cluster.local:7000`, are balanced by that name over its one endpoint, the
//!   backend. (ringlink routes an HTTP request to an original destination without a policy
//!   by its authority when that is under the profile suffixes, `http::route`'s
//!   `Route::Fixed`, not by the profile's name: without that `host` the request would go to
//!   the VIP.)
//! - `policy-20`: the same, plus an outbound policy for the VIP with [`ROUTES`] HTTP routes
//!   ([`policy`]): 17 for other path prefixes, two on the load's prefix whose header match
//!   fails, then the load's, whose rule retries 5xx (2 retries, bodies up to 64 KiB) and
//!   balances over `web.ns.svc.cluster.local:8080`, the backend. The backend always answers
//!   200: no retry happens; the row measures matching and the armed retry machinery.
//!
//! The load is the bench's own generator (`loadgen.rs`) on a thread pinned to the load CPU,
//! as the backend is; the proxy alone on the proxy CPU. Before the load, the row's routing
//! must be in force (`policy-20`: an unrouted path answered 404 `no route found`;
//! `balanced`: 200) and the load's request answered 200; after it, the proxy's
//! `response_total` of outbound 200s from the backend's address and, for `policy-20`,
//! `outbound_http_route_request_statuses_total` of the load's route with status 200 must
//! have grown by exactly the requests the load completed (warm-up and measured run), with
//! no retry, and the controller must have been asked for the destination the row routes
//! by and not the other's; else the row is not a measurement. See `benches/README.md`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use linkerd2_proxy_api::destination::DestinationProfile;
use linkerd2_proxy_api::http_route as route_api;
// The `outbound` feature of linkerd2-proxy-api is the integration harness's.
use linkerd2_proxy_api::outbound as pb;
use ringlink_integration::controller::{self, Controller};
use ringlink_integration::http::call;
use ringlink_integration::metrics::{parse, sum, Series};
use ringlink_integration::outbound_policy::{
    balancer, http_policy, http_route, path_prefix, rule, to, with_retry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::loadgen::{self, Load, LoadReport};
use crate::mesh::{mock_runtime, on_load_cpu, ringlink_runtimes};
use crate::process::Spawned;
use crate::proxy::RinglinkPorts;
use crate::report::{markdown, opt, ratio};
use crate::{procstat, start_backend, Bench, MIB, WARM_UP_SECS};

/// HTTP routes of the `policy-20` policy, the load's last.
pub const ROUTES: usize = 20;
/// The original destination every connection to the outbound listener claims: a Service's
/// cluster IP in the profile networks, where nothing listens.
pub const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 99), 7000);
/// The Service's name (the VIP's profile) and the load's `host`, which `balanced` routes by.
const SERVICE: &str = "web.ns.svc.cluster.local";
pub const AUTHORITY: &str = "web.ns.svc.cluster.local:7000";
/// The `Destination.Get` path of the `policy-20` rule's backend.
pub const BACKEND_PATH: &str = "web.ns.svc.cluster.local:8080";
/// The load's route, prefix and request path.
pub const LOAD_ROUTE: &str = "load";
const LOAD_PREFIX: &str = "/load";
const LOAD_PATH: &str = "/load/item";
/// The load route's retries: up to 2 retries of 5xx, request bodies up to 64 KiB.
pub const MAX_RETRIES: u32 = 2;
const MAX_RETRY_BODY: u32 = 64 * 1024;
/// Two of the never-matched routes share the load's prefix and fail on a header the load
/// sends with another value: an exact match and a regex.
const TENANT_HEADER: &str = "x-bench-tenant";
const USER_AGENT: &str = "ringlink-bench";
/// The load's source address (any loopback address does outbound).
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The name of ringlink's shard threads (`ringlink-shard-N`, truncated to 15 bytes by the
/// kernel).
const SHARD_THREAD: &str = "ringlink-shard";
/// How long a proxy gets to listen, and the row's routing to be in force.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// One probe exchange at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

// === types ===

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundPolicyRow {
    Direct,
    Balanced,
    Policy,
}

/// What one row measured.
struct Measured {
    row: OutboundPolicyRow,
    /// Which round of `--outbound-policy-rounds` (from 1).
    round: u32,
    load: LoadReport,
    /// The proxy's CPU µs over the measured run, all threads and its shard's alone; `None`
    /// for `direct`.
    cpu_us: Option<f64>,
    shard_us: Option<f64>,
    rss_mib: Option<f64>,
    /// How much the proxy's `response_total` of outbound 200s from the backend's address
    /// grew over the warm-up and the measured run; `None` for `direct`.
    backend_ok: Option<f64>,
    /// The same for `outbound_http_route_request_statuses_total` of the load's route and
    /// status 200 (0 for `balanced`, which no policy routes); `None` for `direct`.
    route_ok: Option<f64>,
    /// What makes the row not a measurement: load errors, non-2xx responses, requests not
    /// routed as intended.
    problems: Vec<String>,
}

/// The proxy's counters the checks compare before and after the load.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    backend_ok: f64,
    route_ok: f64,
    /// Every outbound route status (any route, any status).
    routed: f64,
    retries: f64,
}

/// The test's shared pieces: the runtime the mock controllers (and the probes and metrics
/// reads) run on, and the backend.
struct OutboundPolicyTest<'a> {
    bench: &'a Bench<'a>,
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
    let rt = mock_runtime("mock-outbound")?;
    let (backend, backend_process) = start_backend(bench.pin, backend_program, &[])?;
    let test = OutboundPolicyTest { bench, rt, backend };
    let mut failed = false;
    for runtime in runtimes {
        failed |= test.run_runtime(runtime);
    }
    backend_process.stop()?;
    Ok(failed)
}

/// The `policy-20` policy of Service `ns/web:7000`: [`ROUTES`] HTTP routes, each of one rule
/// balancing over [`BACKEND_PATH`]. The first 17 are for other path prefixes (`/r0` …
/// `/r16`); the next two are on the load's prefix but need a header value the load does not
/// send (`x-bench-tenant: gold` exactly, `user-agent` matching `curl/.*`), so they are
/// evaluated as far as the header; the last is the load's (prefix `/load`), whose rule
/// retries 5xx.
pub fn policy() -> pb::OutboundPolicy {
    let backend = || to(balancer("web", BACKEND_PATH));
    let mut routes: Vec<pb::HttpRoute> = (0..ROUTES - 3)
        .map(|i| {
            http_route(
                &format!("r{i}"),
                vec![rule(vec![path_prefix(&format!("/r{i}"))], backend())],
            )
        })
        .collect();
    let header = |name: &str, value: route_api::header_match::Value| route_api::HttpRouteMatch {
        headers: vec![route_api::HeaderMatch {
            name: name.to_string(),
            value: Some(value),
        }],
        ..path_prefix(LOAD_PREFIX)
    };
    routes.push(http_route(
        &format!("r{}", ROUTES - 3),
        vec![rule(
            vec![header(
                TENANT_HEADER,
                route_api::header_match::Value::Exact(b"gold".to_vec()),
            )],
            backend(),
        )],
    ));
    routes.push(http_route(
        &format!("r{}", ROUTES - 2),
        vec![rule(
            vec![header(
                "user-agent",
                route_api::header_match::Value::Regex("curl/.*".to_string()),
            )],
            backend(),
        )],
    ));
    let load = with_retry(
        rule(vec![path_prefix(LOAD_PREFIX)], backend()),
        MAX_RETRIES,
        MAX_RETRY_BODY,
        (500, 599),
        None,
    );
    routes.push(http_route(LOAD_ROUTE, vec![load]));
    http_policy("web", VIP.port(), routes)
}

/// The load's request (or a probe's, for another path), the same in every row: `host` is
/// the Service's name, which `balanced` routes by (and `policy-20`'s routes, for any host,
/// ignore).
fn request(path: &str) -> Arc<[u8]> {
    format!(
        "GET {path} HTTP/1.1\r\nhost: {AUTHORITY}\r\nuser-agent: {USER_AGENT}\r\n\
         {TENANT_HEADER}: bronze\r\n\r\n"
    )
    .into_bytes()
    .into()
}

/// Sends `request` to `target` on a connection of its own: the response's status and body
/// (`content-length` framed, or up to the end of the connection).
async fn fetch(target: SocketAddr, request: &[u8]) -> Result<(u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target).await?;
        stream.write_all(request).await?;
        let buf = &mut buf;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                });
                let body_start = end + 4;
                match length {
                    Some(length) if buf.len() >= body_start + length => {
                        let status = status_of(&head)?;
                        let body = &buf[body_start..body_start + length];
                        return Ok((status, String::from_utf8_lossy(body).into_owned()));
                    }
                    _ => {}
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                let text = String::from_utf8_lossy(buf).into_owned();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                return Ok((status_of(head)?, body.to_string()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let result = tokio::time::timeout(PROBE_TIMEOUT, exchange).await;
    result.map_err(|_| {
        anyhow!(
            "no whole response from {target} within {PROBE_TIMEOUT:?} (received {:?})",
            String::from_utf8_lossy(&buf)
        )
    })?
}

fn status_of(head: &str) -> Result<u16> {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {head:?}"))
}

/// The rows of one runtime; ratios are to `balanced` of the same round. A `round` column
/// when there is more than one round.
fn table(rows: &[Measured]) -> String {
    let rounds = rows.iter().map(|m| m.round).max().unwrap_or(1);
    let balanced = |round| {
        rows.iter()
            .find(|m| m.row == OutboundPolicyRow::Balanced && m.round == round)
    };
    let mut header = vec!["row"];
    if rounds > 1 {
        header.push("round");
    }
    header.extend([
        "rps",
        "CPU µs/req",
        "ratio vs balanced CPU/req",
        "shard µs/req",
        "ratio vs balanced shard/req",
        "RSS MiB",
        "requests",
        "backend 200s via the proxy",
        "load route 200s",
        "check",
    ]);
    let header: Vec<String> = header.into_iter().map(String::from).collect();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let cost = m.cpu_per_request();
            let shard = m.shard_per_request();
            let base = balanced(m.round);
            let mut cells = vec![m.row.name().to_string()];
            if rounds > 1 {
                cells.push(m.round.to_string());
            }
            cells.extend([
                format!("{:.0}", m.load.requests_per_sec()),
                opt(cost, 2),
                ratio(cost, base.and_then(Measured::cpu_per_request)),
                opt(shard, 2),
                ratio(shard, base.and_then(Measured::shard_per_request)),
                opt(m.rss_mib, 1),
                m.load.completed.to_string(),
                opt(m.backend_ok, 0),
                opt(m.route_ok, 0),
                if m.problems.is_empty() {
                    "ok".to_string()
                } else {
                    "FAILED, see below".to_string()
                },
            ]);
            cells
        })
        .collect();
    markdown(&header, &lines)
}

/// `row`'s cost per request (`cost`) against `base`'s, over the rounds where both are
/// valid: the ratio of their means, and each round's ratio. `None` if no round has both.
fn compare(
    rows: &[Measured],
    row: OutboundPolicyRow,
    base: OutboundPolicyRow,
    cost: fn(&Measured) -> Option<f64>,
) -> Option<(f64, Vec<f64>)> {
    let valid = |row, round| {
        rows.iter()
            .find(|m| m.row == row && m.round == round && m.problems.is_empty())
            .and_then(cost)
    };
    let last = rows.iter().map(|m| m.round).max()?;
    let pairs: Vec<(f64, f64)> = (1..=last)
        .filter_map(|round| Some((valid(row, round)?, valid(base, round)?)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let (sum_row, sum_base) = pairs
        .iter()
        .fold((0.0, 0.0), |(r, b), (x, y)| (r + x, b + y));
    let per_round = pairs.iter().map(|(x, y)| x / y).collect();
    Some((sum_row / sum_base, per_round))
}

/// `1.050× (+5.0 %)`, and with several rounds what the ratio is and each round's.
fn describe((ratio, per_round): &(f64, Vec<f64>)) -> String {
    let mut text = format!("{ratio:.3}× ({:+.1} %", 100.0 * (ratio - 1.0));
    if per_round.len() > 1 {
        let rounds: Vec<String> = per_round.iter().map(|r| format!("{r:.3}×")).collect();
        text.push_str(&format!(
            ", ratio of the means of {} rounds; per round: {}",
            per_round.len(),
            rounds.join(", ")
        ));
    }
    text.push(')');
    text
}

// === impl OutboundPolicyRow ===

impl OutboundPolicyRow {
    pub const ALL: [Self; 3] = [Self::Direct, Self::Balanced, Self::Policy];
    /// The rows measured unless `--outbound-policy-rows` says otherwise.
    pub const DEFAULT: [Self; 3] = Self::ALL;

    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Balanced => "balanced",
            Self::Policy => "policy-20",
        }
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
}

// === impl OutboundPolicyTest ===

impl OutboundPolicyTest<'_> {
    /// The table of one runtime, with its target line and notes; whether a row failed.
    fn run_runtime(&self, runtime: &str) -> bool {
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        let mut failed = false;
        let opts = self.bench.opts;
        for round in 1..=opts.outbound_policy_rounds {
            // Even rounds in the reverse order, so that drift does not favour one row.
            let mut order = opts.outbound_policy_rows.clone();
            if round % 2 == 0 {
                order.reverse();
            }
            for row in order {
                let what = match opts.outbound_policy_rounds {
                    1 => row.name().to_string(),
                    _ => format!("{} (round {round})", row.name()),
                };
                eprintln!("outbound-policy {runtime}: {what}");
                match self.measure(runtime, row) {
                    Ok(mut measured) => {
                        measured.round = round;
                        for problem in &measured.problems {
                            failed = true;
                            notes.push(format!("{what}: FAILED (not a measurement): {problem}"));
                        }
                        rows.push(measured);
                    }
                    Err(error) => {
                        eprintln!("outbound-policy {runtime} {what}: FAILED: {error:#}");
                        notes.push(format!("{what}: FAILED: {error:#}"));
                        failed = true;
                    }
                }
            }
        }
        println!("\n### {runtime}\n");
        print!("{}", table(&rows));
        let (policy, balanced) = (OutboundPolicyRow::Policy, OutboundPolicyRow::Balanced);
        if let Some(cpu) = compare(&rows, policy, balanced, Measured::cpu_per_request) {
            let shard = compare(&rows, policy, balanced, Measured::shard_per_request);
            println!(
                "\nTarget (routing through a {ROUTES}-route outbound policy with retries \
                 enabled costs ≤ 5 % more CPU per request than plain balancing): policy-20 \
                 costs {} balanced's CPU per request; target ≤ 1.05×. The shard thread \
                 alone: {}.",
                describe(&cpu),
                shard.as_ref().map_or_else(|| "-".to_string(), describe)
            );
        }
        for note in &notes {
            println!("\n- {note}");
        }
        failed
    }

    fn measure(&self, runtime: &str, row: OutboundPolicyRow) -> Result<Measured> {
        let pin = self.bench.pin;
        let duration = Duration::from_secs(u64::from(self.bench.opts.duration_secs));
        let warm_up = Duration::from_secs(u64::from(WARM_UP_SECS));
        let load_to = |target| Load {
            target,
            source: CLIENT_IP,
            connections: self.bench.opts.connections as usize,
            request: request(LOAD_PATH),
        };
        let run_load = |load: &Load, duration| {
            let load = load.clone();
            on_load_cpu(
                pin,
                move |rt| Ok(rt.block_on(loadgen::run(&load, duration))),
            )
        };
        if row == OutboundPolicyRow::Direct {
            let load = load_to(self.backend);
            let warm = run_load(&load, warm_up)?;
            let measured = run_load(&load, duration)?;
            let mut problems = warm.problems();
            problems.extend(measured.problems());
            return Ok(Measured {
                row,
                round: 1,
                load: measured,
                cpu_us: None,
                shard_us: None,
                rss_mib: None,
                backend_ok: None,
                route_ok: None,
                problems,
            });
        }
        let policy = row == OutboundPolicyRow::Policy;
        // A controller of the row's own: a `Get` stream is scripted per call, and a later
        // row must not find this one's.
        let ctrl = {
            let _entered = self.rt.enter();
            controller::new()
        };
        ctrl.profile(
            &VIP.to_string(),
            DestinationProfile {
                fully_qualified_name: SERVICE.to_string(),
                ..Default::default()
            },
        );
        // The profile's service, as a Destination service answers for it: ringlink resolves
        // the VIP's endpoints through it in both rows (and, in `policy-20`, waits for them
        // before it routes by the policy: unanswered, every connection would wait twice the
        // failfast timeout). `balanced` routes the load by `host`, the same name; only
        // `policy-20` asks for the rule's backend. Kept until the process is stopped:
        // dropping them ends the proxy's `Get` streams.
        let mut dsts = vec![ctrl.destination(AUTHORITY)];
        if policy {
            ctrl.outbound_policy(SocketAddr::V4(VIP), self::policy());
            dsts.push(ctrl.destination(BACKEND_PATH));
        }
        for dst in &dsts {
            dst.add([self.backend]);
        }
        let (process, ports) = self.start(runtime, &ctrl)?;
        let load = load_to(ports.outbound);
        self.until_in_force(ports.outbound, policy)?;
        let before = self.counters(ports.admin)?;
        let warm = run_load(&load, warm_up).context("warm-up")?;
        let pid = process.pid();
        let cpu_before = procstat::tree_cpu_time(pid)?;
        let shard_before = procstat::threads_cpu_time(pid, SHARD_THREAD)?;
        let measured = run_load(&load, duration)?;
        let cpu_after = procstat::tree_cpu_time(pid)?;
        let shard_after = procstat::threads_cpu_time(pid, SHARD_THREAD)?;
        let rss = procstat::rss_bytes(process.pid())? as f64 / MIB;
        let after = self.counters(ports.admin)?;
        process.stop()?;
        drop(dsts);
        let mut problems = warm.problems();
        problems.extend(measured.problems());
        let sent = (warm.completed + measured.completed) as f64;
        let backend_ok = after.backend_ok - before.backend_ok;
        let route_ok = after.route_ok - before.route_ok;
        if backend_ok != sent {
            problems.push(format!(
                "the proxy counted {backend_ok} outbound 200s from the backend \
                 (response_total, target_addr=\"{}\"), the load completed {sent} requests \
                 (warm-up and measured run)",
                self.backend
            ));
        }
        if policy {
            if route_ok != sent {
                problems.push(format!(
                    "the route {LOAD_ROUTE:?} counted {route_ok} 200s \
                     (outbound_http_route_request_statuses_total), the load completed {sent} \
                     requests (warm-up and measured run)"
                ));
            }
            let retries = after.retries - before.retries;
            if retries != 0.0 {
                problems.push(format!(
                    "{retries} retries (outbound_http_route_retry_requests_total): the \
                     backend failed some tries, the row measured more than the armed retries"
                ));
            }
        } else {
            let routed = after.routed - before.routed;
            if routed != 0.0 {
                problems.push(format!(
                    "{routed} requests were routed by an outbound policy, which this row has \
                     not"
                ));
            }
        }
        let calls = (ctrl.get_calls(AUTHORITY), ctrl.get_calls(BACKEND_PATH));
        if calls != (1, usize::from(policy)) {
            problems.push(format!(
                "the proxy asked the Destination service for {AUTHORITY} {} times and for \
                 {BACKEND_PATH} {} times (expected once and {})",
                calls.0,
                calls.1,
                if policy { "once" } else { "never" }
            ));
        }
        Ok(Measured {
            row,
            round: 1,
            load: measured,
            cpu_us: Some(cpu_after.saturating_sub(cpu_before).as_secs_f64() * 1e6),
            shard_us: Some(shard_after.saturating_sub(shard_before).as_secs_f64() * 1e6),
            rss_mib: Some(rss),
            backend_ok: Some(backend_ok),
            route_ok: Some(route_ok),
            problems,
        })
    }

    /// Starts ringlink for `runtime`: one shard on the proxy CPU, every outbound connection
    /// to [`VIP`], with `ctrl` as Destination and policy service (as the integration
    /// harness's `Builder::control_plane`) and the loopback as profile networks.
    fn start(&self, runtime: &str, ctrl: &Controller) -> Result<(Spawned, RinglinkPorts)> {
        let ports = RinglinkPorts::free()?;
        let mut cmd = ports.command(&self.bench.bins.ringlink, self.bench.pin, runtime);
        cmd.env("RINGLINK_ORIG_DST_OVERRIDE", VIP.to_string())
            .env("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", "127.0.0.0/8")
            .env(
                "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
                ctrl.addr().to_string(),
            )
            .env(
                "LINKERD2_PROXY_POLICY_SVC_ADDR",
                ctrl.policy_addr().to_string(),
            )
            .env(
                "LINKERD2_PROXY_POLICY_WORKLOAD",
                ringlink_integration::proxy::WORKLOAD,
            );
        let name = format!("ringlink-{runtime} (outbound)");
        let mut process = Spawned::spawn(&name, cmd)?;
        for addr in [ports.outbound, ports.admin] {
            process.wait_for_port(addr, READY_TIMEOUT)?;
        }
        Ok((process, ports))
    }

    /// Waits until the row's routing is in force: with the policy, an unrouted path is
    /// answered 404 `no route found` (without it, balanced by name to the backend: 200);
    /// then the load's request must be answered 200.
    fn until_in_force(&self, outbound: SocketAddr, policy: bool) -> Result<()> {
        let want = if policy { 404 } else { 200 };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let (status, body) = self.rt.block_on(fetch(outbound, &request("/unrouted")))?;
            let routed = !policy || body.contains("no route found");
            if status == want && routed {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "GET /unrouted was answered {status} {body:?}, not {want}{}, after \
                     {READY_TIMEOUT:?}",
                    if policy { " `no route found`" } else { "" }
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        match self.rt.block_on(fetch(outbound, &request(LOAD_PATH)))? {
            (200, _) => Ok(()),
            (status, body) => bail!("GET {LOAD_PATH} was answered {status} {body:?}, not 200"),
        }
    }

    fn counters(&self, admin: SocketAddr) -> Result<Counters> {
        let series = self.metrics(admin)?;
        let backend = self.backend.to_string();
        Ok(Counters {
            backend_ok: sum(
                &series,
                "response_total",
                &[
                    ("direction", "outbound"),
                    ("target_addr", backend.as_str()),
                    ("status_code", "200"),
                ],
            ),
            route_ok: sum(
                &series,
                "outbound_http_route_request_statuses_total",
                &[("route_name", LOAD_ROUTE), ("http_status", "200")],
            ),
            routed: sum(&series, "outbound_http_route_request_statuses_total", &[]),
            retries: sum(
                &series,
                "outbound_http_route_retry_requests_total",
                &[("route_name", LOAD_ROUTE)],
            ),
        })
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

    fn name(m: &Option<linkerd2_proxy_api::meta::Metadata>) -> String {
        match m.as_ref().and_then(|m| m.kind.as_ref()) {
            Some(linkerd2_proxy_api::meta::metadata::Kind::Resource(r)) => r.name.clone(),
            _ => String::new(),
        }
    }

    #[test]
    fn the_policy_has_20_routes_with_the_loads_last() {
        let policy = policy();
        let Some(pb::proxy_protocol::Kind::Detect(detect)) = policy.protocol.and_then(|p| p.kind)
        else {
            panic!("not a Detect policy");
        };
        let routes = detect.http1.unwrap().routes;
        assert_eq!(routes.len(), ROUTES);
        assert_eq!(detect.http2.unwrap().routes, routes);
        let last = routes.last().unwrap();
        assert_eq!(name(&last.metadata), LOAD_ROUTE);
        // Only the load's rule retries: 5xx, twice, bodies up to 64 KiB.
        let retry = last.rules[0]
            .retry
            .as_ref()
            .expect("the load's rule retries");
        assert_eq!((retry.max_retries, retry.max_request_bytes), (2, 65536));
        let ranges = &retry.conditions.as_ref().unwrap().status_ranges;
        assert_eq!((ranges[0].start, ranges[0].end), (500, 599));
        assert!(routes[..ROUTES - 1]
            .iter()
            .all(|r| r.rules[0].retry.is_none()));
        // Every rule balances over the backend's path.
        for route in &routes {
            let backends = match route.rules[0]
                .backends
                .as_ref()
                .and_then(|d| d.kind.as_ref())
            {
                Some(pb::http_route::distribution::Kind::RandomAvailable(r)) => &r.backends,
                other => panic!("{other:?}"),
            };
            let backend = backends[0]
                .backend
                .as_ref()
                .unwrap()
                .backend
                .as_ref()
                .unwrap();
            let Some(pb::backend::Kind::Balancer(p2c)) = &backend.kind else {
                panic!("not a balancer");
            };
            let path = match p2c.discovery.as_ref().and_then(|d| d.kind.as_ref()) {
                Some(pb::backend::endpoint_discovery::Kind::Dst(get)) => get.path.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(path, BACKEND_PATH);
        }
        // Two never-matched routes on the load's prefix, each with one header match; the
        // others on prefixes the load's path does not start with.
        let prefix = |r: &pb::HttpRoute| match r.rules[0].matches[0]
            .path
            .as_ref()
            .and_then(|p| p.kind.as_ref())
        {
            Some(route_api::path_match::Kind::Prefix(p)) => p.clone(),
            other => panic!("{other:?}"),
        };
        let on_load: Vec<_> = routes[..ROUTES - 1]
            .iter()
            .filter(|r| prefix(r) == LOAD_PREFIX)
            .collect();
        assert_eq!(on_load.len(), 2);
        assert!(on_load
            .iter()
            .all(|r| r.rules[0].matches[0].headers.len() == 1));
        assert!(routes[..ROUTES - 3]
            .iter()
            .all(|r| !LOAD_PATH.starts_with(&prefix(r))));
        assert!(last.rules[0].matches[0].headers.is_empty());
    }

    #[test]
    fn the_request_names_the_service() {
        let request = request(LOAD_PATH);
        let text = std::str::from_utf8(&request).unwrap();
        assert!(text.starts_with("GET /load/item HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nhost: web.ns.svc.cluster.local:7000\r\n"));
        assert!(text.contains("\r\nx-bench-tenant: bronze\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(status_of("HTTP/1.1 404 Not Found").unwrap(), 404);
        assert!(status_of("garbage").is_err());
    }

    #[test]
    fn the_table_has_one_cell_per_column() {
        let row = |row, cpu: Option<f64>, route: f64| Measured {
            row,
            round: 1,
            load: LoadReport {
                completed: 1000,
                elapsed: Duration::from_secs(1),
                ..Default::default()
            },
            cpu_us: cpu,
            shard_us: cpu.map(|us| us * 0.9),
            rss_mib: cpu.map(|_| 8.0),
            backend_ok: cpu.map(|_| 1002.0),
            route_ok: cpu.map(|_| route),
            problems: Vec::new(),
        };
        let t = table(&[
            row(OutboundPolicyRow::Direct, None, 0.0),
            row(OutboundPolicyRow::Balanced, Some(10_000.0), 0.0),
            row(OutboundPolicyRow::Policy, Some(10_400.0), 1002.0),
        ]);
        assert!(
            t.contains(
                "| policy-20 | 1000 | 10.40 | 1.04× | 9.36 | 1.04× | 8.0 | 1000 | 1002 | 1002 \
                 | ok |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| balanced | 1000 | 10.00 | 1.00× | 9.00 | 1.00× | 8.0 | 1000 | 1002 | 0 | ok |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| direct | 1000 | - | - | - | - | - | 1000 | - | - | ok |"),
            "{t}"
        );
        let widths: Vec<_> = t.lines().map(|l| l.matches('|').count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
    }

    #[test]
    fn rounds_are_compared_round_by_round() {
        let row = |row, round, cpu: f64| Measured {
            row,
            round,
            load: LoadReport {
                completed: 1000,
                elapsed: Duration::from_secs(1),
                ..Default::default()
            },
            cpu_us: Some(cpu),
            shard_us: Some(cpu),
            rss_mib: Some(8.0),
            backend_ok: Some(1000.0),
            route_ok: Some(1000.0),
            problems: Vec::new(),
        };
        let (balanced, policy) = (OutboundPolicyRow::Balanced, OutboundPolicyRow::Policy);
        let mut rows = vec![
            row(balanced, 1, 10_000.0),
            row(policy, 1, 11_000.0),
            row(policy, 2, 9_000.0),
            row(balanced, 2, 10_000.0),
        ];
        let t = table(&rows);
        assert!(t.contains("| row | round | rps |"), "{t}");
        assert!(t.contains("| policy-20 | 2 | 1000 | 9.00 | 0.90× |"), "{t}");
        let cpu = Measured::cpu_per_request;
        let compared = compare(&rows, policy, balanced, cpu).unwrap();
        assert_eq!(compared.0, 1.0);
        assert_eq!(
            describe(&compared),
            "1.000× (+0.0 %, ratio of the means of 2 rounds; per round: 1.100×, 0.900×)"
        );
        // A failed row leaves its round out.
        rows[2].problems.push("broken".to_string());
        let compared = compare(&rows, policy, balanced, cpu).unwrap();
        assert_eq!(describe(&compared), "1.100× (+10.0 %)");
        assert!(compare(&rows, policy, OutboundPolicyRow::Direct, cpu).is_none());
    }
}
