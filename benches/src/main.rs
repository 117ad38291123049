//! `ringlink-bench`: measures ringlink against no proxy and a reference tokio forwarder, in
//! one run on one machine, so that the ratios between them mean something on a noisy host.
//!
//! For each proxy: (A) wrk, small keep-alive request/response, with the proxy's CPU time per
//! request and RSS; (B) one connection streaming `--bulk-mb` MiB into a sink, with MiB/s and
//! the proxy's CPU time per MiB. See `benches/README.md`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::args::{Options, USAGE};
use crate::pinning::Pinning;
use crate::process::Spawned;
use crate::proxy::{Binaries, Proxy, ProxyKind};
use crate::report::Row;
use crate::wrk::Wrk;

mod args;
mod bulk;
mod pinning;
mod process;
mod procstat;
mod proxy;
mod report;
mod wrk;

const WARM_UP_SECS: u32 = 2;
const BACKEND_STARTUP: Duration = Duration::from_secs(10);
const MIB: f64 = (1u64 << 20) as f64;

struct Bench<'a> {
    opts: &'a Options,
    pin: &'a Pinning,
    bins: &'a Binaries,
    wrk: Wrk<'a>,
    http_backend: SocketAddr,
    sink_backend: SocketAddr,
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
    wrk.check_installed()?;
    let bins = locate_binaries(&opts)?;

    let backend = bins.ref_forwarder.with_file_name("bench-backend");
    let (http_addr, http_backend) = start_backend(&pin, &backend, &[])?;
    let (sink_addr, sink_backend) = start_backend(&pin, &backend, &["--sink"])?;

    println!("# ringlink-bench\n");
    println!("- kernel: {}", kernel_version());
    println!("{pin}");
    println!(
        "- test A: `wrk -t1 -c{} -d{}s --latency`, after a {WARM_UP_SECS} s warm-up run",
        opts.connections, opts.duration_secs
    );
    println!(
        "- test B: {} MiB over one connection into `bench-backend --sink`",
        opts.bulk_mib
    );
    println!(
        "- proxy CPU: utime + stime from /proc/PID/stat, resolution {:?}\n",
        procstat::clock_tick()
    );

    let bench = Bench {
        opts: &opts,
        pin: &pin,
        bins: &bins,
        wrk,
        http_backend: http_addr,
        sink_backend: sink_addr,
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &kind in &opts.proxies {
        match bench.measure(kind, &mut notes) {
            Ok(row) => rows.push(row),
            Err(error) => notes.push(format!("{}: FAILED: {error:#}", kind.name())),
        }
    }
    http_backend.stop()?;
    sink_backend.stop()?;

    print!("{}", report::table(&rows));
    for note in &notes {
        println!("\n- {note}");
    }
    Ok(if rows.len() == opts.proxies.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// === impl Bench ===

impl Bench<'_> {
    fn measure(&self, kind: ProxyKind, notes: &mut Vec<String>) -> Result<Row> {
        let name = kind.name();

        eprintln!("{name}: request/response");
        let proxy = Proxy::start(kind, self.http_backend, self.bins, self.pin)?;
        let url = format!("http://{}/", proxy.addr);
        self.wrk.run(&url, WARM_UP_SECS).context("warm-up")?;
        let cpu_before = proxy_cpu(&proxy)?;
        let wrk = self.wrk.run(&url, self.opts.duration_secs)?;
        let cpu_after = proxy_cpu(&proxy)?;
        let rss_mib = match proxy.pid() {
            Some(pid) => Some(procstat::rss_bytes(pid)? as f64 / MIB),
            None => None,
        };
        proxy.stop()?;
        notes.extend(
            wrk.errors
                .iter()
                .map(|e| format!("{name}: wrk reported {e}")),
        );

        eprintln!("{name}: bulk");
        let proxy = Proxy::start(kind, self.sink_backend, self.bins, self.pin)?;
        let bulk_cpu_before = proxy_cpu(&proxy)?;
        let bulk = bulk::run(proxy.addr, self.opts.bulk_mib, self.pin.load_core())?;
        let bulk_cpu_after = proxy_cpu(&proxy)?;
        proxy.stop()?;

        Ok(Row {
            kind,
            requests_per_sec: wrk.requests_per_sec,
            p50: wrk.p50,
            p99: wrk.p99,
            cpu_us_per_request: cpu_us(cpu_before, cpu_after).map(|us| us / wrk.requests as f64),
            rss_mib,
            bulk_mib_per_sec: bulk.mib_per_sec(),
            cpu_us_per_mib: cpu_us(bulk_cpu_before, bulk_cpu_after)
                .map(|us| us / (bulk.bytes as f64 / MIB)),
        })
    }
}

fn proxy_cpu(proxy: &Proxy) -> Result<Option<Duration>> {
    proxy.pid().map(procstat::cpu_time).transpose()
}

fn cpu_us(before: Option<Duration>, after: Option<Duration>) -> Option<f64> {
    Some(after?.saturating_sub(before?).as_secs_f64() * 1e6)
}

fn locate_binaries(opts: &Options) -> Result<Binaries> {
    let dir = process::exe_dir()?;
    for bin in ["bench-backend", "ref-forwarder"] {
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
             ringlink-engine`, pass --ringlink PATH, or use --only direct,ref-tokio",
            opts.ringlink.display()
        );
    }
    Ok(Binaries {
        ref_forwarder: dir.join("ref-forwarder"),
        ringlink: opts.ringlink.clone(),
    })
}

fn start_backend(
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
