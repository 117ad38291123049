//! `--soak MINUTES`: ringlink under connection churn for a long while, watched for leaks.
//!
//! For each ringlink runtime in `--only`, one after the other: a fresh ringlink (one shard,
//! on the proxy CPU) forwarding its outbound and inbound listeners to the soak's own backend
//! (`soak/backend.rs`: HTTP/1.1, h2c and WebSocket on one port, since the orig-dst override
//! names one address), and the churn of `soak/load.rs` for MINUTES: new HTTP/1 connections
//! with one request each, keep-alive connections, h2 connections with concurrent streams
//! some of which the client resets, WebSocket sessions, connections reset by the client
//! mid-request and mid-response, slow readers. Backend and churn share one tokio
//! current-thread runtime on a thread pinned to the load CPU.
//!
//! Every second: the proxy's RSS (`VmRSS`), its open file descriptors (`/proc/PID/fd`), and
//! its open connections from its `/metrics` (`tcp_open_connections`, by `peer`; ringlink
//! exposes no task gauge, so connections stand in for tasks). After the warm-up (the first
//! minute or 20 % of the run, whichever is shorter) RSS must stay within [`RSS_GROWTH_KIB`]
//! of its value at the end of the warm-up; once the churn has stopped and the proxy has
//! closed what it holds, the fds must be back to their count before the load (±
//! [`FD_TOLERANCE`]) and no connection open. See `benches/README.md`.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use crate::args::Options;
use crate::mesh::on_load_cpu;
use crate::pinning::Pinning;
use crate::process::Spawned;
use crate::proxy::{Binaries, ProxyKind, RinglinkPorts};
use crate::{kernel_version, procstat};

mod backend;
mod load;
mod report;

use load::{KindCounts, Tally, Targets};

// === constants ===

/// Most RSS may grow after the warm-up, in KiB.
pub const RSS_GROWTH_KIB: i64 = 2048;
/// How far the fd count may end from its count before the load.
pub const FD_TOLERANCE: u64 = 2;
/// The warm-up: this long, or [`WARM_UP_SHARE`] of the run if that is shorter.
const WARM_UP_MAX_SECS: i64 = 60;
const WARM_UP_SHARE: f64 = 0.2;
/// Samples before the load, a second apart, after the proxy has had this long to settle
/// from its readiness probes.
const BASELINE_SAMPLES: i64 = 3;
const BEFORE_BASELINE: Duration = Duration::from_secs(2);
/// After the load's deadline, exchanges still running get this long before they are
/// aborted (their connections dropped, as a client that leaves).
const LOAD_GRACE_SECS: i64 = 2;
/// After the load: at least this long, at most that long, for the proxy to close what it
/// holds (idle pooled upstream connections go after 3 s, swept every 1.5 s); it is over
/// early once [`SETTLED_SAMPLES`] samples in a row pass the end checks.
const SETTLE_MIN_SECS: i64 = 5;
const SETTLE_MAX_SECS: i64 = 30;
const SETTLED_SAMPLES: usize = 3;
/// How long a `/metrics` scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A progress line on stderr this often.
const PROGRESS_EVERY_SECS: i64 = 30;
/// The longest soak accepted: a week.
const MAX_MINUTES: f64 = 7.0 * 24.0 * 60.0;

// === types ===

/// The soak's options: `--soak MINUTES`, `--soak-csv PATH`, `--soak-kinds LIST`.
#[derive(Clone, Debug, PartialEq)]
pub struct SoakOptions {
    /// Minutes of churn per runtime; `None`: no soak, the tests run.
    pub minutes: Option<f64>,
    /// Where to write every per-second sample (CSV), if anywhere.
    pub csv: Option<PathBuf>,
    /// The kinds of churn, all by default; fewer to find which one leaks.
    pub kinds: Vec<Kind>,
}

/// One kind of churn (`soak/load.rs`). The discriminants index [`load::Tally`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Churn,
    KeepAlive,
    H2,
    WebSocket,
    ResetRequest,
    ResetResponse,
    SlowReader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Baseline,
    WarmUp,
    Soak,
    Settle,
}

/// The proxy's open connections by `peer`, from `tcp_open_connections`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open {
    pub src: u64,
    pub dst: u64,
}

/// One second's look at the proxy, and the churn's counts so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Seconds since the load started (negative before it).
    pub t: i64,
    pub phase: Phase,
    pub rss_kib: u64,
    pub fds: u64,
    /// `None` if the scrape failed.
    pub open: Option<Open>,
    pub requests: u64,
    pub aborted: u64,
    pub errors: u64,
}

/// One runtime's soak.
pub struct Outcome {
    pub samples: Vec<Sample>,
    pub warm_up_secs: i64,
    pub load_secs: i64,
    pub kinds: Vec<(Kind, KindCounts)>,
    /// Failed scrapes, and other oddities not in the verdict.
    pub notes: Vec<String>,
}

/// What the samples say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub rss_start_kib: u64,
    pub rss_warm_kib: u64,
    pub rss_max_kib: u64,
    pub growth_kib: i64,
    pub rss_end_kib: u64,
    pub fds_baseline: u64,
    pub fds_end: u64,
    pub open_end: Option<Open>,
    /// Seconds from the end of the load to the last sample.
    pub settled_secs: i64,
    /// Why it fails; empty: PASS.
    pub failures: Vec<String>,
}

/// What one runtime's soak does, on the load thread.
struct Plan {
    kinds: Vec<Kind>,
    targets: Targets,
    admin: SocketAddr,
    pid: u32,
    name: String,
    load_secs: i64,
    warm_up_secs: i64,
}

// === impl SoakOptions ===

impl Default for SoakOptions {
    fn default() -> Self {
        Self {
            minutes: None,
            csv: None,
            kinds: Kind::ALL.to_vec(),
        }
    }
}

impl SoakOptions {
    /// Takes one `--soak*` option.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<()> {
        match flag {
            "--soak" => {
                let minutes: f64 = value
                    .parse()
                    .with_context(|| format!("--soak expects minutes, got {value:?}"))?;
                if !(minutes > 0.0 && minutes <= MAX_MINUTES) {
                    bail!("--soak: {value} minutes is not in (0, {MAX_MINUTES}]");
                }
                self.minutes = Some(minutes);
            }
            "--soak-csv" => self.csv = Some(PathBuf::from(value)),
            "--soak-kinds" => {
                let mut kinds = Vec::new();
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let kind =
                        (Kind::ALL.into_iter().find(|k| k.name() == name)).ok_or_else(|| {
                            let known: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
                            anyhow!(
                                "--soak-kinds: unknown kind {name:?}: expected one of {}",
                                known.join(", ")
                            )
                        })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                if kinds.is_empty() {
                    bail!("--soak-kinds needs at least one kind");
                }
                self.kinds = kinds;
            }
            _ => bail!("unknown option {flag}"),
        }
        Ok(())
    }

    fn load_secs(&self) -> Option<i64> {
        self.minutes.map(|m| ((m * 60.0).round() as i64).max(1))
    }
}

// === impl Kind ===

impl Kind {
    pub const ALL: [Self; 7] = [
        Self::Churn,
        Self::KeepAlive,
        Self::H2,
        Self::WebSocket,
        Self::ResetRequest,
        Self::ResetResponse,
        Self::SlowReader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Churn => "churn",
            Self::KeepAlive => "keepalive",
            Self::H2 => "h2",
            Self::WebSocket => "ws",
            Self::ResetRequest => "reset-request",
            Self::ResetResponse => "reset-response",
            Self::SlowReader => "slow-reader",
        }
    }

    /// What it sends, and how much.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Churn => {
                "100 new HTTP/1.1 connections/s, one `GET /` each, closed by the server \
                 (`connection: close`) or by the client after the response"
            }
            Self::KeepAlive => "8 keep-alive HTTP/1.1 connections, a `GET /` every 25 ms each",
            Self::H2 => {
                "2 h2c connections, each replaced every 30 s, with 8 stream loops a request \
                 every 50 ms; of every 10 requests one reset (RST_STREAM CANCEL) right after \
                 its headers, one after the response head of a slow response"
            }
            Self::WebSocket => {
                "10 WebSocket upgrades/s, 3 echoed messages each, then the closing handshake"
            }
            Self::ResetRequest => {
                "10 connections/s sending a request that announces a 1 MiB body, 4 KiB of it, \
                 then reset by the client (SO_LINGER 0, close), at once or after 20 ms"
            }
            Self::ResetResponse => {
                "10 connections/s asking for a 1 MiB body, reset by the client after 16 KiB"
            }
            Self::SlowReader => {
                "4 slow readers one session after the other: a 1 MiB body through a 16 KiB \
                 receive buffer, 8 KiB read every 50 ms; every other session leaves after \
                 256 KiB"
            }
        }
    }
}

// === impl Phase ===

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "before",
            Self::WarmUp => "warm-up",
            Self::Soak => "soak",
            Self::Settle => "after",
        }
    }
}

// === impl Plan ===

impl Plan {
    async fn run(self) -> Result<Outcome> {
        tokio::time::sleep(BEFORE_BASELINE).await;
        let origin = Instant::now() + Duration::from_secs(BASELINE_SAMPLES as u64);
        let tally = Arc::new(Tally::default());
        let deadline = origin + Duration::from_secs(self.load_secs as u64);
        let mut load = JoinSet::new();
        let mut running: Vec<Kind> = Vec::new();
        let mut samples: Vec<Sample> = Vec::new();
        let mut notes = Vec::new();
        let mut failed_scrapes = 0;
        let mut t = -BASELINE_SAMPLES;
        loop {
            sleep_until(origin + Duration::from_secs(t.max(0) as u64) - secs_before(t)).await;
            if t == 0 {
                for &kind in &self.kinds {
                    let run = load::run(kind, self.targets, tally.clone(), deadline);
                    load.spawn(async move {
                        run.await;
                        kind
                    });
                }
                running = self.kinds.clone();
            }
            let after = t - self.load_secs;
            while let Some(done) = load.try_join_next() {
                running.retain(|&kind| done.as_ref().ok() != Some(&kind));
            }
            if after == LOAD_GRACE_SECS && !load.is_empty() {
                let names: Vec<_> = running.iter().map(|k| k.name()).collect();
                notes.push(format!(
                    "exchanges of {} still running {LOAD_GRACE_SECS} s after the load's end \
                     were dropped (their connections closed by the client)",
                    names.join(", ")
                ));
                load.abort_all();
            }
            let sample = self.sample(t, &tally, &mut failed_scrapes).await?;
            if t % PROGRESS_EVERY_SECS == 0 && t > 0 {
                eprintln!(
                    "{}: t={t} s RSS {} KiB, fds {}, open {}, requests {}, errors {}",
                    self.name,
                    sample.rss_kib,
                    sample.fds,
                    report::open_cell(sample.open),
                    sample.requests,
                    sample.errors
                );
            }
            samples.push(sample);
            if after >= SETTLE_MAX_SECS
                || (after >= SETTLE_MIN_SECS.max(LOAD_GRACE_SECS)
                    && load.is_empty()
                    && settled(&samples))
            {
                break;
            }
            t += 1;
        }
        if failed_scrapes > 0 {
            notes.push(format!(
                "{failed_scrapes} scrape(s) of /metrics failed (open connections `-`)"
            ));
        }
        Ok(Outcome {
            kinds: (self.kinds.iter())
                .map(|&kind| (kind, tally.kind(kind).counts()))
                .collect(),
            samples,
            warm_up_secs: self.warm_up_secs,
            load_secs: self.load_secs,
            notes,
        })
    }

    async fn sample(&self, t: i64, tally: &Tally, failed_scrapes: &mut u64) -> Result<Sample> {
        let phase = match t {
            t if t < 0 => Phase::Baseline,
            t if t < self.warm_up_secs => Phase::WarmUp,
            t if t <= self.load_secs => Phase::Soak,
            _ => Phase::Settle,
        };
        // fds first: the scrape's own connection is closed by the time it has been read.
        let fds = count_fds(self.pid)?;
        let rss_kib =
            procstat::rss_bytes(self.pid).with_context(|| format!("{} is gone", self.name))? / 1024;
        let open = match open_connections(self.admin).await {
            Ok(open) => Some(open),
            Err(error) => {
                if *failed_scrapes == 0 {
                    eprintln!("{}: scraping /metrics: {error:#}", self.name);
                }
                *failed_scrapes += 1;
                None
            }
        };
        let (requests, aborted, errors) = tally.totals();
        Ok(Sample {
            t,
            phase,
            rss_kib,
            fds,
            open,
            requests,
            aborted,
            errors,
        })
    }
}

// === functions ===

/// Runs the soak for each ringlink runtime in `--only` and prints its tables.
pub fn run(opts: &Options, pin: &Pinning, bins: &Binaries) -> Result<ExitCode> {
    let soak = &opts.soak;
    let load_secs = soak.load_secs().context("--soak was not given")?;
    let warm_up_secs = warm_up_secs(load_secs);
    print_header(soak, pin, load_secs, warm_up_secs);
    let runtimes: Vec<(ProxyKind, &str)> = (opts.proxies.iter())
        .filter_map(|&kind| match kind {
            ProxyKind::RinglinkMonoio => Some((kind, "monoio")),
            ProxyKind::RinglinkGlommio => Some((kind, "glommio")),
            _ => None,
        })
        .collect();
    if runtimes.is_empty() {
        println!("\nSkipped: neither ringlink-monoio nor ringlink-glommio is in --only.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut csv = match &soak.csv {
        Some(path) => {
            let mut file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
            file.write_all(report::csv_header().as_bytes())?;
            Some(file)
        }
        None => None,
    };
    let mut failed = false;
    for (kind, runtime) in runtimes {
        let name = kind.name();
        println!("\n## soak: {name}\n");
        eprintln!("{name}: soak of {load_secs} s");
        match soak_one(soak, pin, bins, name, runtime, load_secs, warm_up_secs) {
            Ok(outcome) => {
                let verdict = verdict(&outcome.samples, outcome.warm_up_secs, outcome.load_secs);
                print!("{}", report::render(name, &outcome, &verdict));
                eprintln!(
                    "{name}: soak {}",
                    if verdict.failures.is_empty() {
                        "PASS"
                    } else {
                        "FAIL"
                    }
                );
                failed |= !verdict.failures.is_empty();
                if let Some(file) = &mut csv {
                    file.write_all(report::csv_rows(name, &outcome.samples).as_bytes())?;
                }
            }
            Err(error) => {
                eprintln!("{name} soak: FAILED: {error:#}");
                println!("- FAILED: {error:#}");
                failed = true;
            }
        }
    }
    if let Some(path) = &soak.csv {
        println!("\nPer-second samples: {}", path.display());
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The warm-up: a minute, or a fifth of the run if shorter.
fn warm_up_secs(load_secs: i64) -> i64 {
    WARM_UP_MAX_SECS.min((load_secs as f64 * WARM_UP_SHARE).round() as i64)
}

fn print_header(soak: &SoakOptions, pin: &Pinning, load_secs: i64, warm_up_secs: i64) {
    println!("# ringlink-bench --soak\n");
    println!("- kernel: {}", kernel_version());
    println!(
        "- ringlink: one shard, `taskset -c {}`, fresh per runtime, its outbound and inbound \
         listeners forwarding (`RINGLINK_ORIG_DST_OVERRIDE`) to the soak's backend \
         (HTTP/1.1, h2c and WebSocket on one port); backend and churn on one tokio \
         current-thread runtime, a thread of ringlink-bench pinned to CPU {}; connections \
         alternate between the outbound and inbound listeners",
        pin.proxy_cpu, pin.load_cpu
    );
    if pin.is_shared() {
        println!("- WARNING: one CPU only: proxy, backend and churn share it");
    }
    println!("- churn for {load_secs} s per runtime:");
    for kind in &soak.kinds {
        println!("  - `{}`: {}", kind.name(), kind.describe());
    }
    println!(
        "- every second: RSS (`VmRSS`), open fds (`/proc/PID/fd`), open connections \
         (`tcp_open_connections` of `/metrics`, `peer=\"src\"` and `peer=\"dst\"`; ringlink \
         exposes no task gauge, so open connections stand in for its tasks); `requests`: \
         exchanges completed as intended, `aborted`: resets and early leaves by the client \
         (expected), `errors`: anything else (a status other than the expected one, a reset \
         or close by the proxy, a timeout)"
    );
    println!(
        "- PASS: after the {warm_up_secs} s warm-up RSS stays within {RSS_GROWTH_KIB} KiB of \
         its value at the end of the warm-up (`growth`: max − that value), and after the \
         churn has stopped ({LOAD_GRACE_SECS} s for exchanges in flight, then the rest \
         dropped) and the proxy has closed its idle connections (at least {SETTLE_MIN_SECS} \
         s, at most {SETTLE_MAX_SECS} s), open fds are within ±{FD_TOLERANCE} of their count \
         before the load and no connection is open. Unexpected errors are listed, not judged"
    );
}

/// One runtime: ringlink started, the baseline, the load with its samples, the settling.
fn soak_one(
    soak: &SoakOptions,
    pin: &Pinning,
    bins: &Binaries,
    name: &str,
    runtime: &str,
    load_secs: i64,
    warm_up_secs: i64,
) -> Result<Outcome> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the soak's backend")?;
    listener.set_nonblocking(true)?;
    let backend = listener.local_addr()?;
    let ports = RinglinkPorts::free()?;
    let mut cmd = ports.command(&bins.ringlink, pin, runtime);
    cmd.env("RINGLINK_ORIG_DST_OVERRIDE", backend.to_string());
    let mut process = Spawned::spawn(name, cmd)?;
    for addr in [ports.outbound, ports.inbound, ports.admin] {
        process.wait_for_port(addr, READY_TIMEOUT)?;
    }
    let pid = process.pid();
    let plan = Plan {
        kinds: soak.kinds.clone(),
        targets: Targets {
            outbound: ports.outbound,
            inbound: ports.inbound,
        },
        admin: ports.admin,
        pid,
        name: name.to_string(),
        load_secs,
        warm_up_secs,
    };
    let outcome = on_load_cpu(pin, move |rt| {
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(backend::serve(listener));
            plan.run().await
        })
    });
    // The proxy must have lived through it all.
    let stopped = process.stop();
    let outcome = outcome?;
    stopped?;
    Ok(outcome)
}

/// Baseline samples are a second apart before the origin.
fn secs_before(t: i64) -> Duration {
    Duration::from_secs(t.min(0).unsigned_abs())
}

/// Whether the last [`SETTLED_SAMPLES`] samples pass the end checks against the baseline.
fn settled(samples: &[Sample]) -> bool {
    let Some(baseline) = samples.iter().rev().find(|s| s.phase == Phase::Baseline) else {
        return false;
    };
    samples.len() >= SETTLED_SAMPLES
        && samples[samples.len() - SETTLED_SAMPLES..]
            .iter()
            .all(|s| s.phase == Phase::Settle && end_failures(baseline.fds, s).is_empty())
}

/// What is wrong at the end, judged on `last` against the fds counted before the load.
fn end_failures(fds_baseline: u64, last: &Sample) -> Vec<String> {
    let mut failures = Vec::new();
    if last.fds.abs_diff(fds_baseline) > FD_TOLERANCE {
        failures.push(format!(
            "{} fds at the end against {fds_baseline} before the load (±{FD_TOLERANCE})",
            last.fds
        ));
    }
    match last.open {
        Some(Open { src: 0, dst: 0 }) => {}
        Some(Open { src, dst }) => failures.push(format!(
            "{src} client and {dst} upstream connections still open at the end"
        )),
        None => failures.push("open connections at the end unknown (/metrics failed)".into()),
    }
    failures
}

/// Judges a runtime's samples: RSS growth after the warm-up, fds and connections at the end.
pub fn verdict(samples: &[Sample], warm_up_secs: i64, load_secs: i64) -> Verdict {
    let baseline = samples.iter().rev().find(|s| s.phase == Phase::Baseline);
    let warm = samples.iter().find(|s| s.t == warm_up_secs);
    let last = samples.last();
    let mut failures = Vec::new();
    let (Some(baseline), Some(warm), Some(last)) = (baseline, warm, last) else {
        return Verdict {
            rss_start_kib: baseline.map_or(0, |s| s.rss_kib),
            rss_warm_kib: 0,
            rss_max_kib: 0,
            growth_kib: 0,
            rss_end_kib: last.map_or(0, |s| s.rss_kib),
            fds_baseline: baseline.map_or(0, |s| s.fds),
            fds_end: last.map_or(0, |s| s.fds),
            open_end: last.and_then(|s| s.open),
            settled_secs: 0,
            failures: vec!["too few samples to judge".to_string()],
        };
    };
    let rss_max_kib = (samples.iter())
        .filter(|s| s.t >= warm_up_secs)
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(warm.rss_kib);
    let growth_kib = rss_max_kib as i64 - warm.rss_kib as i64;
    if growth_kib > RSS_GROWTH_KIB {
        let at = (samples.iter())
            .filter(|s| s.t >= warm_up_secs)
            .find(|s| s.rss_kib == rss_max_kib)
            .map_or(0, |s| s.t);
        failures.push(format!(
            "RSS grew {growth_kib} KiB after the warm-up (max {rss_max_kib} KiB at t={at} s), \
             more than {RSS_GROWTH_KIB}"
        ));
    }
    if last.phase != Phase::Settle {
        failures.push("the run ended before the load did".to_string());
    }
    failures.extend(end_failures(baseline.fds, last));
    Verdict {
        rss_start_kib: baseline.rss_kib,
        rss_warm_kib: warm.rss_kib,
        rss_max_kib,
        growth_kib,
        rss_end_kib: last.rss_kib,
        fds_baseline: baseline.fds,
        fds_end: last.fds,
        open_end: last.open,
        settled_secs: last.t - load_secs,
        failures,
    }
}

fn count_fds(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("listing {dir}"))?
        .count() as u64)
}

/// `tcp_open_connections` of the proxy's `/metrics`, summed by `peer`.
async fn open_connections(admin: SocketAddr) -> Result<Open> {
    let page = timeout(SCRAPE_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut page = Vec::new();
        stream.read_to_end(&mut page).await?;
        Ok::<_, std::io::Error>(page)
    })
    .await
    .map_err(|_| anyhow!("no answer within {SCRAPE_TIMEOUT:?}"))??;
    let page = String::from_utf8(page).context("a page not in UTF-8")?;
    let (head, body) = page.split_once("\r\n\r\n").context("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("answered {:?}", head.lines().next().unwrap_or_default());
    }
    let series = ringlink_integration::metrics::parse(body);
    let sum = |peer: &str| {
        ringlink_integration::metrics::sum(&series, "tcp_open_connections", &[("peer", peer)])
            as u64
    };
    Ok(Open {
        src: sum("src"),
        dst: sum("dst"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample(t: i64, phase: Phase, rss_kib: u64, fds: u64, open: u64) -> Sample {
        Sample {
            t,
            phase,
            rss_kib,
            fds,
            open: Some(Open { src: open, dst: 0 }),
            requests: (t.max(0) * 100) as u64,
            aborted: 0,
            errors: 0,
        }
    }

    /// 10 s of load, a 2 s warm-up, settled at 13 s.
    pub(super) fn run(rss_peak: u64, fds_end: u64, open_end: u64) -> Vec<Sample> {
        let mut samples = vec![sample(-1, Phase::Baseline, 9000, 18, 0)];
        samples.extend((0..2).map(|t| sample(t, Phase::WarmUp, 9500, 40, 20)));
        samples.extend((2..=10).map(|t| sample(t, Phase::Soak, 10000, 40, 20)));
        samples[6].rss_kib = rss_peak;
        samples.extend((11..13).map(|t| sample(t, Phase::Settle, 10000, 30, 5)));
        samples.push(sample(13, Phase::Settle, 9900, fds_end, open_end));
        samples
    }

    #[test]
    fn options() {
        let mut soak = SoakOptions::default();
        assert_eq!(soak.load_secs(), None);
        soak.set("--soak", "3").unwrap();
        assert_eq!(soak.load_secs(), Some(180));
        soak.set("--soak", "0.25").unwrap();
        assert_eq!(soak.load_secs(), Some(15));
        assert!(soak.set("--soak", "0").is_err());
        assert!(soak.set("--soak", "-1").is_err());
        assert!(soak.set("--soak", "NaN").is_err());
        soak.set("--soak-kinds", "h2, ws,h2").unwrap();
        assert_eq!(soak.kinds, [Kind::H2, Kind::WebSocket]);
        assert!(soak.set("--soak-kinds", "h3").is_err());
        assert!(soak.set("--soak-kinds", ",").is_err());
        soak.set("--soak-csv", "/tmp/x.csv").unwrap();
        assert_eq!(soak.csv, Some(PathBuf::from("/tmp/x.csv")));
        assert!(soak.set("--soak-what", "1").is_err());

        let parse = |args: &[&str]| Options::parse(args.iter().map(|a| a.to_string()));
        let opts = parse(&[
            "--soak",
            "3",
            "--soak-csv=s.csv",
            "--only",
            "ringlink-glommio",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(opts.soak.load_secs(), Some(180));
        assert_eq!(opts.soak.csv, Some(PathBuf::from("s.csv")));
        assert_eq!(opts.soak.kinds, Kind::ALL);
        assert_eq!(parse(&[]).unwrap().unwrap().soak, SoakOptions::default());
        assert!(parse(&["--soak"]).is_err());
        assert!(parse(&["--soak-kinds", "x"]).is_err());
    }

    #[test]
    fn warm_up_is_a_minute_or_a_fifth() {
        assert_eq!(warm_up_secs(180), 36);
        assert_eq!(warm_up_secs(3600), 60);
        assert_eq!(warm_up_secs(10), 2);
    }

    #[test]
    fn verdicts() {
        let pass = verdict(&run(10500, 19, 0), 2, 10);
        assert_eq!(pass.failures, Vec::<String>::new());
        assert_eq!(
            (
                pass.rss_start_kib,
                pass.rss_warm_kib,
                pass.rss_max_kib,
                pass.growth_kib
            ),
            (9000, 10000, 10500, 500)
        );
        assert_eq!(
            (pass.fds_baseline, pass.fds_end, pass.settled_secs),
            (18, 19, 3)
        );

        let grew = verdict(&run(12100, 18, 0), 2, 10);
        assert_eq!(grew.growth_kib, 2100);
        assert_eq!(grew.failures.len(), 1, "{:?}", grew.failures);
        assert!(grew.failures[0].contains("t=5 s"), "{:?}", grew.failures);

        let leaked = verdict(&run(10000, 25, 1), 2, 10);
        assert_eq!(leaked.failures.len(), 2, "{:?}", leaked.failures);

        assert!(!verdict(&[], 2, 10).failures.is_empty());
    }

    #[test]
    fn settling_needs_three_good_samples() {
        let mut samples = run(10000, 18, 0);
        assert!(!settled(&samples));
        samples.push(sample(14, Phase::Settle, 9900, 18, 0));
        assert!(!settled(&samples));
        samples.push(sample(15, Phase::Settle, 9900, 20, 0));
        assert!(settled(&samples));
    }
}
