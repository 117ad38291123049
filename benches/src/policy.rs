//! Test `policy`: what inbound policy enforcement costs ringlink per request.
//!
//! For each ringlink runtime in `--only`, with a fresh proxy per row, the same HTTP/1.1
//! keep-alive load sent to the proxy's **inbound** listener, which forwards it to the backend
//! (`RINGLINK_ORIG_DST_OVERRIDE`):
//!
//! - `direct`: the load straight to the backend (reference);
//! - `default`: no policy controller, so the port has the built-in all-unauthenticated policy
//!   (one catch-all route, one authorization);
//! - `policy-50x20`: the mock policy controller (`ringlink_integration::controller`) serves
//!   the backend's port a `Server` (Detect, 10 s) with 50 HTTP routes of 20 authorizations
//!   each ([`server`]): 49 routes the load never matches (47 other path prefixes, two on the
//!   load's prefix whose header match fails), then the load's route, whose first 19
//!   authorizations refuse the load's client and whose 20th admits it.
//!
//! The load is the bench's own generator (`loadgen.rs`), bound to 127.0.0.2, an address only
//! the route's 20th authorization admits; 127.0.0.1 would be admitted earlier (by the third,
//! 127.0.0.0/8 except 127.0.0.2) and, without the route's, by the `localhost` authorization
//! (127.0.0.1, ::1) Linkerd's decoding appends to every route's. It runs on a thread pinned to the load CPU, as the backend is; the proxy alone on the
//! proxy CPU. Before the load, the policy must be in force (an unrouted path answered 404;
//! 200 under the default) and the load's request answered 200; after it, the proxy's
//! `inbound_http_authz_allow_total` for the intended route and authorization must have grown
//! by exactly the requests the load completed (warm-up and measured run), else the row is
//! not a measurement. See `benches/README.md`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use linkerd2_proxy_api::http_route as route_api;
use linkerd2_proxy_api::inbound as api;
use linkerd2_proxy_api::net::IpNetwork;
use ringlink_integration::controller::{self, Controller};
use ringlink_integration::http::call;
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::policy::{anyone, http_route, http_server, only};

use crate::loadgen::{self, Load, LoadReport};
use crate::mesh::{mock_runtime, on_load_cpu, ringlink_runtimes};
use crate::process::Spawned;
use crate::proxy::RinglinkPorts;
use crate::report::{markdown, opt, ratio};
use crate::{procstat, start_backend, Bench, MIB, WARM_UP_SECS};

/// Routes of the `policy-50x20` server, the load's last.
pub const ROUTES: usize = 50;
/// Authorizations of each route, the one admitting the load last.
pub const AUTHORIZATIONS: usize = 20;
/// The address the load is sent from: loopback, not `localhost`'s 127.0.0.1.
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The `Server`'s name (`srv_name`), the load's route and its admitting authorization.
const SERVER_NAME: &str = "bench";
const LOAD_ROUTE: &str = "load";
const LOAD_PREFIX: &str = "/load";
const LOAD_PATH: &str = "/load/item";
/// Two of the never-matched routes share the load's prefix and fail on a header the load
/// sends with another value: an exact match and a regex.
const TENANT_HEADER: &str = "x-bench-tenant";
const USER_AGENT: &str = "ringlink-bench";
/// The name of ringlink's shard threads (`ringlink-shard-N`, truncated to 15 bytes by the
/// kernel).
const SHARD_THREAD: &str = "ringlink-shard";
/// How long a proxy gets to listen, and the controller's policy to be in force.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

// === types ===

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyRow {
    Direct,
    Default,
    /// Not measured unless asked for: the default policy, with a policy controller (and a
    /// Destination service) configured that has no policy for the port. Separates what
    /// having a control plane costs from what enforcing the policy costs.
    DefaultController,
    Policy,
}

/// What one row measured.
struct Measured {
    row: PolicyRow,
    /// Which round of `--policy-rounds` (from 1).
    round: u32,
    load: LoadReport,
    /// The proxy's CPU µs over the measured run, all threads and its shard's alone; `None`
    /// for `direct`.
    cpu_us: Option<f64>,
    shard_us: Option<f64>,
    rss_mib: Option<f64>,
    /// How much the intended route's and authorization's `inbound_http_authz_allow_total`
    /// grew over the warm-up and the measured run; `None` for `direct`.
    allowed: Option<f64>,
    /// What makes the row not a measurement: load errors, non-2xx responses, requests the
    /// intended authorization did not admit.
    problems: Vec<String>,
}

/// The test's shared pieces: the mock controller and the runtime it (and the probes and
/// metrics reads) runs on, and the backend.
struct PolicyTest<'a> {
    bench: &'a Bench<'a>,
    ctrl: Controller,
    /// Declared after `ctrl`, which is dropped (its tasks aborted) first.
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
    let rt = mock_runtime("mock-policy")?;
    let ctrl = {
        let _entered = rt.enter();
        controller::new()
    };
    let (backend, backend_process) = start_backend(bench.pin, backend_program, &[])?;
    ctrl.inbound_policy(backend.port(), server());
    let test = PolicyTest {
        bench,
        ctrl,
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

/// The `policy-50x20` server: [`ROUTES`] HTTP routes, each with [`authorizations`]. The
/// first 47 are for other path prefixes (`/r0` … `/r46`); the next two are on the load's
/// prefix but need a header value the load does not send (`x-bench-tenant: gold` exactly,
/// `user-agent` matching `curl/.*`), so they are evaluated as far as the header; the last is
/// the load's (prefix `/load`).
pub fn server() -> api::Server {
    let authz = authorizations();
    let mut routes: Vec<api::HttpRoute> = (0..ROUTES - 3)
        .map(|i| http_route(&format!("r{i}"), &format!("/r{i}"), authz.clone()))
        .collect();
    let header = |name: &str, value: route_api::header_match::Value| route_api::HeaderMatch {
        name: name.to_string(),
        value: Some(value),
    };
    routes.push(with_header(
        http_route(&format!("r{}", ROUTES - 3), LOAD_PREFIX, authz.clone()),
        header(
            TENANT_HEADER,
            route_api::header_match::Value::Exact(b"gold".to_vec()),
        ),
    ));
    routes.push(with_header(
        http_route(&format!("r{}", ROUTES - 2), LOAD_PREFIX, authz.clone()),
        header(
            "user-agent",
            route_api::header_match::Value::Regex("curl/.*".to_string()),
        ),
    ));
    routes.push(http_route(LOAD_ROUTE, LOAD_PREFIX, authz));
    http_server(SERVER_NAME, routes)
}

/// [`AUTHORIZATIONS`] authorizations, of which only the last admits a plaintext client
/// from [`CLIENT_IP`]. Before it, in turn: mesh TLS for one identity (the client's address
/// is in its networks, 0.0.0.0/0 and ::/0, but it has no identity); unauthenticated from a
/// network the client is not in (`10.N.0.0/16`); unauthenticated from 127.0.0.0/8 except
/// the client's address. The last: unauthenticated from 127.0.0.2/32, `authz-19`.
fn authorizations() -> Vec<api::Authz> {
    let last = AUTHORIZATIONS - 1;
    (0..AUTHORIZATIONS)
        .map(|i| {
            let name = format!("authz-{i}");
            if i == last {
                return unauthenticated(&name, (CLIENT_IP, 32), None);
            }
            match i % 3 {
                0 => only(
                    &format!("client-{i}.bench.serviceaccount.identity.linkerd.cluster.local"),
                    &name,
                ),
                1 => unauthenticated(
                    &name,
                    (IpAddr::V4(Ipv4Addr::new(10, i as u8, 0, 0)), 16),
                    None,
                ),
                _ => unauthenticated(
                    &name,
                    (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                    Some((CLIENT_IP, 32)),
                ),
            }
        })
        .collect()
}

/// The name of the authorization that admits the load.
fn admitting_authz() -> String {
    format!("authz-{}", AUTHORIZATIONS - 1)
}

/// An unauthenticated authorization named `name` of clients in `net` but not in `except`.
fn unauthenticated(name: &str, net: (IpAddr, u8), except: Option<(IpAddr, u8)>) -> api::Authz {
    api::Authz {
        networks: vec![api::Network {
            net: Some(IpNetwork::from(net)),
            except: except.map(IpNetwork::from).into_iter().collect(),
        }],
        ..anyone(name)
    }
}

fn with_header(mut route: api::HttpRoute, header: route_api::HeaderMatch) -> api::HttpRoute {
    for rule in &mut route.rules {
        for m in &mut rule.matches {
            m.headers.push(header.clone());
        }
    }
    route
}

/// The load's request (or a probe's, for another path), the same in every row but for
/// `host`, which is the address the request is sent to, as wrk's is. Not a name under the
/// Destination service's suffixes (`svc.cluster.local.`): with a Destination service, the
/// inbound proxy looks such a name up and forwards to its endpoints instead of the original
/// destination, which the policy row has and the default row has not.
fn request(path: &str, target: SocketAddr) -> Arc<[u8]> {
    format!(
        "GET {path} HTTP/1.1\r\nhost: {target}\r\nuser-agent: {USER_AGENT}\r\n\
         {TENANT_HEADER}: bronze\r\n\r\n"
    )
    .into_bytes()
    .into()
}

/// The rows of one runtime; ratios are to `default` of the same round. A `round` column
/// when there is more than one round.
fn table(rows: &[Measured]) -> String {
    let rounds = rows.iter().map(|m| m.round).max().unwrap_or(1);
    let default = |round| {
        rows.iter()
            .find(|m| m.row == PolicyRow::Default && m.round == round)
    };
    let mut header = vec!["row"];
    if rounds > 1 {
        header.push("round");
    }
    header.extend([
        "rps",
        "CPU µs/req",
        "ratio vs default CPU/req",
        "shard µs/req",
        "ratio vs default shard/req",
        "RSS MiB",
        "requests",
        "admitted by the intended authz",
        "check",
    ]);
    let header: Vec<String> = header.into_iter().map(String::from).collect();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let cost = m.cpu_per_request();
            let shard = m.shard_per_request();
            let default = default(m.round);
            let mut cells = vec![m.row.name().to_string()];
            if rounds > 1 {
                cells.push(m.round.to_string());
            }
            cells.extend([
                format!("{:.0}", m.load.requests_per_sec()),
                opt(cost, 2),
                ratio(cost, default.and_then(Measured::cpu_per_request)),
                opt(shard, 2),
                ratio(shard, default.and_then(Measured::shard_per_request)),
                opt(m.rss_mib, 1),
                m.load.completed.to_string(),
                opt(m.allowed, 0),
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
    row: PolicyRow,
    base: PolicyRow,
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

// === impl PolicyRow ===

impl PolicyRow {
    pub const ALL: [Self; 4] = [
        Self::Direct,
        Self::Default,
        Self::DefaultController,
        Self::Policy,
    ];
    /// The rows measured unless `--policy-rows` says otherwise.
    pub const DEFAULT: [Self; 3] = [Self::Direct, Self::Default, Self::Policy];

    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Default => "default",
            Self::DefaultController => "default-controller",
            Self::Policy => "policy-50x20",
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

// === impl PolicyTest ===

impl PolicyTest<'_> {
    /// The table of one runtime, with its target line and notes; whether a row failed.
    fn run_runtime(&self, runtime: &str) -> bool {
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        let mut failed = false;
        let opts = self.bench.opts;
        for round in 1..=opts.policy_rounds {
            // Even rounds in the reverse order, so that drift does not favour one row.
            let mut order = opts.policy_rows.clone();
            if round % 2 == 0 {
                order.reverse();
            }
            for row in order {
                let what = match opts.policy_rounds {
                    1 => row.name().to_string(),
                    _ => format!("{} (round {round})", row.name()),
                };
                eprintln!("policy {runtime}: {what}");
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
                        eprintln!("policy {runtime} {what}: FAILED: {error:#}");
                        notes.push(format!("{what}: FAILED: {error:#}"));
                        failed = true;
                    }
                }
            }
        }
        println!("\n### {runtime}\n");
        print!("{}", table(&rows));
        let (policy, default) = (PolicyRow::Policy, PolicyRow::Default);
        if let Some(cpu) = compare(&rows, policy, default, Measured::cpu_per_request) {
            let shard = compare(&rows, policy, default, Measured::shard_per_request);
            println!(
                "\nTarget (enforcing a policy of {ROUTES} routes × {AUTHORIZATIONS} \
                 authorizations costs ≤ 3 % more CPU per request than all-unauthenticated): \
                 policy-50x20 costs {} default's CPU per request; target ≤ 1.03×. The shard \
                 thread alone: {}.",
                describe(&cpu),
                shard.as_ref().map_or_else(|| "-".to_string(), describe)
            );
        }
        let silent = PolicyRow::DefaultController;
        if let Some(cpu) = compare(&rows, policy, silent, Measured::cpu_per_request) {
            println!(
                "\nWith a controller on both sides: policy-50x20 costs {} default-controller's.",
                describe(&cpu)
            );
        }
        for note in &notes {
            println!("\n- {note}");
        }
        failed
    }

    fn measure(&self, runtime: &str, row: PolicyRow) -> Result<Measured> {
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
        if row == PolicyRow::Direct {
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
                allowed: None,
                problems,
            });
        }
        let policy = row == PolicyRow::Policy;
        // `default-controller`: a controller of its own, with no policy for the port (its
        // stream stays silent and the default applies).
        let silent;
        let ctrl = match row {
            PolicyRow::Policy => Some(&self.ctrl),
            PolicyRow::DefaultController => {
                let _entered = self.rt.enter();
                silent = controller::new();
                Some(&silent)
            }
            _ => None,
        };
        let (process, ports) = self.start(runtime, ctrl)?;
        let load = load_to(ports.inbound);
        self.until_in_force(&load, policy)?;
        let admitted = || -> Result<f64> {
            let series = self.metrics(ports.admin)?;
            let authz = admitting_authz();
            let labels: [(&str, &str); 4] = if policy {
                [
                    ("srv_kind", "server"),
                    ("srv_name", SERVER_NAME),
                    ("route_name", LOAD_ROUTE),
                    ("authz_name", authz.as_str()),
                ]
            } else {
                [
                    ("srv_kind", "default"),
                    ("srv_name", "all-unauthenticated"),
                    ("route_name", "default"),
                    ("authz_name", "all-unauthenticated"),
                ]
            };
            Ok(sum(&series, "inbound_http_authz_allow_total", &labels))
        };
        let admitted_before = admitted()?;
        let warm = run_load(&load, warm_up).context("warm-up")?;
        let pid = process.pid();
        let cpu_before = procstat::tree_cpu_time(pid)?;
        let shard_before = procstat::threads_cpu_time(pid, SHARD_THREAD)?;
        let measured = run_load(&load, duration)?;
        let cpu_after = procstat::tree_cpu_time(pid)?;
        let shard_after = procstat::threads_cpu_time(pid, SHARD_THREAD)?;
        let rss = procstat::rss_bytes(process.pid())? as f64 / MIB;
        let allowed = admitted()? - admitted_before;
        process.stop()?;
        let mut problems = warm.problems();
        problems.extend(measured.problems());
        let sent = (warm.completed + measured.completed) as f64;
        if allowed != sent {
            problems.push(format!(
                "the intended route and authorization admitted {allowed} requests, the load \
                 completed {sent} (warm-up and measured run)"
            ));
        }
        Ok(Measured {
            row,
            round: 1,
            load: measured,
            cpu_us: Some(cpu_after.saturating_sub(cpu_before).as_secs_f64() * 1e6),
            shard_us: Some(shard_after.saturating_sub(shard_before).as_secs_f64() * 1e6),
            rss_mib: Some(rss),
            allowed: Some(allowed),
            problems,
        })
    }

    /// Starts ringlink for `runtime`: one shard on the proxy CPU, its inbound port forwarding
    /// to the backend, with `ctrl` as its policy controller, if any.
    fn start(&self, runtime: &str, ctrl: Option<&Controller>) -> Result<(Spawned, RinglinkPorts)> {
        let ports = RinglinkPorts::free()?;
        let mut cmd = ports.command(&self.bench.bins.ringlink, self.bench.pin, runtime);
        cmd.env("RINGLINK_ORIG_DST_OVERRIDE", self.backend.to_string())
            // The backend's port is watched from startup (with a controller; inert without).
            .env(
                "LINKERD2_PROXY_INBOUND_PORTS",
                self.backend.port().to_string(),
            );
        if let Some(ctrl) = ctrl {
            cmd.env(
                "LINKERD2_PROXY_POLICY_SVC_ADDR",
                ctrl.policy_addr().to_string(),
            )
            .env(
                "LINKERD2_PROXY_POLICY_WORKLOAD",
                ringlink_integration::proxy::WORKLOAD,
            )
            // Required with a policy controller; the mock's, never asked (no outbound load).
            .env(
                "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
                ctrl.addr().to_string(),
            );
        }
        let name = format!("ringlink-{runtime} (controller: {})", ctrl.is_some());
        let mut process = Spawned::spawn(&name, cmd)?;
        for addr in [ports.inbound, ports.admin] {
            process.wait_for_port(addr, READY_TIMEOUT)?;
        }
        Ok((process, ports))
    }

    /// Waits until the port's policy is the one the row is about: with the controller's, an
    /// unrouted path is answered 404 (the default routes everything: 200); then the load's
    /// request must be answered 200.
    fn until_in_force(&self, load: &Load, policy: bool) -> Result<()> {
        let unrouted = Load {
            request: request("/unrouted", load.target),
            ..load.clone()
        };
        let want = if policy { 404 } else { 200 };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let status = self.rt.block_on(loadgen::probe(&unrouted))?;
            if status == want {
                break;
            }
            if !policy || Instant::now() >= deadline {
                bail!("GET /unrouted was answered {status}, not {want}, after {READY_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        match self.rt.block_on(loadgen::probe(load))? {
            200 => Ok(()),
            status => bail!("GET {LOAD_PATH} from {CLIENT_IP} was answered {status}, not 200"),
        }
    }

    fn metrics(&self, admin: SocketAddr) -> Result<Vec<ringlink_integration::metrics::Series>> {
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

    #[test]
    fn the_server_has_50_routes_of_20_authorizations() {
        let server = server();
        let Some(api::proxy_protocol::Kind::Detect(detect)) = server.protocol.and_then(|p| p.kind)
        else {
            panic!("not a Detect server");
        };
        assert_eq!(detect.timeout.map(|t| t.seconds), Some(10));
        assert_eq!(detect.http_routes.len(), ROUTES);
        for route in &detect.http_routes {
            assert_eq!(route.authorizations.len(), AUTHORIZATIONS);
        }
        // The load's route is last, and only the last authorization names the client.
        let last = detect.http_routes.last().unwrap();
        let name = |m: &Option<linkerd2_proxy_api::meta::Metadata>| match m
            .as_ref()
            .and_then(|m| m.kind.as_ref())
        {
            Some(linkerd2_proxy_api::meta::metadata::Kind::Resource(r)) => r.name.clone(),
            _ => String::new(),
        };
        assert_eq!(name(&last.metadata), LOAD_ROUTE);
        assert_eq!(
            name(&last.authorizations.last().unwrap().metadata),
            admitting_authz()
        );
        let with_headers = detect
            .http_routes
            .iter()
            .filter(|r| r.rules[0].matches[0].headers.len() == 1)
            .count();
        assert_eq!(with_headers, 2);
    }

    #[test]
    fn the_table_has_one_cell_per_column() {
        let row = |row, cpu: Option<f64>| Measured {
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
            allowed: cpu.map(|_| 1002.0),
            problems: Vec::new(),
        };
        let t = table(&[
            row(PolicyRow::Direct, None),
            row(PolicyRow::Default, Some(10_000.0)),
            row(PolicyRow::Policy, Some(10_200.0)),
        ]);
        assert!(
            t.contains(
                "| policy-50x20 | 1000 | 10.20 | 1.02× | 9.18 | 1.02× | 8.0 | 1000 | 1002 | ok |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| direct | 1000 | - | - | - | - | - | 1000 | - | ok |"),
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
            allowed: Some(1000.0),
            problems: Vec::new(),
        };
        let mut rows = vec![
            row(PolicyRow::Default, 1, 10_000.0),
            row(PolicyRow::Policy, 1, 11_000.0),
            row(PolicyRow::Policy, 2, 9_000.0),
            row(PolicyRow::Default, 2, 10_000.0),
        ];
        let t = table(&rows);
        assert!(t.contains("| row | round | rps |"), "{t}");
        assert!(
            t.contains("| policy-50x20 | 2 | 1000 | 9.00 | 0.90× |"),
            "{t}"
        );
        let cpu = Measured::cpu_per_request;
        let compared = compare(&rows, PolicyRow::Policy, PolicyRow::Default, cpu).unwrap();
        assert_eq!(compared.0, 1.0);
        assert_eq!(
            describe(&compared),
            "1.000× (+0.0 %, ratio of the means of 2 rounds; per round: 1.100×, 0.900×)"
        );
        // A failed row leaves its round out.
        rows[2].problems.push("broken".to_string());
        let compared = compare(&rows, PolicyRow::Policy, PolicyRow::Default, cpu).unwrap();
        assert_eq!(describe(&compared), "1.100× (+10.0 %)");
        assert!(compare(&rows, PolicyRow::Policy, PolicyRow::DefaultController, cpu).is_none());
    }
}
