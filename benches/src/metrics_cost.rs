//! `--metrics-cost N`: what recording TCP and HTTP metrics costs ringlink per request.
//!
//! For each ringlink in `--only`, N rounds of the `http1` load (a warm-up, then the measured
//! wrk run, each on a fresh proxy) with recording on and with `RINGLINK_METRICS_RECORDING=off`,
//! the two alternating which goes first so that drift on a shared machine (another build
//! warming up or finishing) does not land on one side only. The cost is the difference of
//! the proxy's CPU time per request, as a share of the CPU time per request with recording
//! on: `(on - off) / on`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::args::Test;
use crate::proxy::{Proxy, ProxyKind};
use crate::{cpu_us, start_backend, Bench, WARM_UP_SECS};

// === types ===

/// One measured wrk run through one proxy process.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub requests_per_sec: f64,
    pub cpu_us_per_request: f64,
}

/// One round: the same load with recording on and off.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    pub on: Run,
    pub off: Run,
    /// Whether the recording-on run went first.
    pub on_first: bool,
}

// === functions ===

/// Runs the comparison and prints its table; `wrk_missing` is why wrk cannot run, if so.
pub fn run(
    bench: &Bench<'_>,
    backend: &Path,
    wrk_missing: Option<&str>,
    rounds: u32,
) -> Result<ExitCode> {
    println!(
        "- metrics cost: {rounds} rounds per proxy of the http1 load with recording on and \
         with `RINGLINK_METRICS_RECORDING=off` (fresh process each run, alternating which \
         goes first); cost = (on - off) / on of CPU µs/req"
    );
    println!("\n## metrics cost\n");
    if let Some(reason) = wrk_missing {
        eprintln!("metrics cost: skipped: {reason}");
        println!("Skipped: {reason}.");
        return Ok(ExitCode::SUCCESS);
    }
    let kinds: Vec<ProxyKind> = (bench.opts.proxies.iter().copied())
        .filter(|kind| kind.is_ringlink())
        .collect();
    if kinds.is_empty() {
        println!("Skipped: no ringlink in --only.");
        return Ok(ExitCode::SUCCESS);
    }
    let (backend_addr, backend_process) = start_backend(bench.pin, backend, &[])?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for &kind in &kinds {
        let mut done = Vec::new();
        for round in 0..rounds {
            let on_first = round % 2 == 0;
            eprintln!("{} metrics cost: round {}/{rounds}", kind.name(), round + 1);
            let measured = (|| -> Result<Round> {
                let (first, second) = (
                    measure(bench, kind, backend_addr, on_first)?,
                    measure(bench, kind, backend_addr, !on_first)?,
                );
                let (on, off) = if on_first {
                    (first, second)
                } else {
                    (second, first)
                };
                Ok(Round { on, off, on_first })
            })();
            match measured {
                Ok(round) => done.push(round),
                Err(error) => {
                    eprintln!("{} metrics cost: FAILED: {error:#}", kind.name());
                    failures.push(format!("{}: FAILED: {error:#}", kind.name()));
                }
            }
        }
        results.push((kind, done));
    }
    backend_process.stop()?;
    print!("{}", table(&results));
    for failure in &failures {
        println!("\n- {failure}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One fresh proxy, a warm-up, and the measured wrk run.
fn measure(
    bench: &Bench<'_>,
    kind: ProxyKind,
    backend: SocketAddr,
    recording: bool,
) -> Result<Run> {
    let env: &[(&str, &str)] = if recording {
        &[]
    } else {
        &[("RINGLINK_METRICS_RECORDING", "off")]
    };
    let proxy = Proxy::start_with_env(kind, Test::Http1, backend, bench.bins, bench.pin, env)?;
    let url = format!("http://{}/", proxy.addr);
    bench.wrk.run(&url, None, WARM_UP_SECS).context("warm-up")?;
    let before = proxy.cpu_time()?;
    let wrk = bench.wrk.run(&url, None, bench.opts.duration_secs)?;
    let after = proxy.cpu_time()?;
    proxy.stop()?;
    if !wrk.errors.is_empty() {
        eprintln!("{}: wrk reported {:?}", kind.name(), wrk.errors);
    }
    let cpu = cpu_us(before, after).context("no CPU time for the proxy")?;
    Ok(Run {
        requests_per_sec: wrk.requests_per_sec,
        cpu_us_per_request: cpu / wrk.requests.max(1) as f64,
    })
}

/// The rounds of each proxy, then a row of their means.
pub fn table(results: &[(ProxyKind, Vec<Round>)]) -> String {
    let mut out = String::from(
        "| proxy | round | first | rps on | rps off | CPU µs/req on | CPU µs/req off | \
         cost µs/req | cost % |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (kind, rounds) in results {
        let row = |out: &mut String, label: &str, first: &str, on: Run, off: Run| {
            let cost = on.cpu_us_per_request - off.cpu_us_per_request;
            out.push_str(&format!(
                "| {} | {label} | {first} | {:.0} | {:.0} | {:.2} | {:.2} | {cost:+.2} | {:+.1} % |\n",
                kind.name(),
                on.requests_per_sec,
                off.requests_per_sec,
                on.cpu_us_per_request,
                off.cpu_us_per_request,
                100.0 * cost / on.cpu_us_per_request,
            ));
        };
        for (i, round) in rounds.iter().enumerate() {
            let first = if round.on_first { "on" } else { "off" };
            row(&mut out, &(i + 1).to_string(), first, round.on, round.off);
        }
        if rounds.len() > 1 {
            let mean = |pick: fn(&Round) -> Run| {
                let n = rounds.len() as f64;
                Run {
                    requests_per_sec: rounds.iter().map(|r| pick(r).requests_per_sec).sum::<f64>()
                        / n,
                    cpu_us_per_request: rounds
                        .iter()
                        .map(|r| pick(r).cpu_us_per_request)
                        .sum::<f64>()
                        / n,
                }
            };
            row(&mut out, "mean", "", mean(|r| r.on), mean(|r| r.off));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_rounds_and_mean() {
        let run = |rps, cpu| Run {
            requests_per_sec: rps,
            cpu_us_per_request: cpu,
        };
        let rounds = vec![
            Round {
                on: run(1000.0, 10.0),
                off: run(1100.0, 9.0),
                on_first: true,
            },
            Round {
                on: run(1000.0, 12.0),
                off: run(1000.0, 12.0),
                on_first: false,
            },
        ];
        let t = table(&[(ProxyKind::RinglinkMonoio, rounds)]);
        assert!(
            t.contains(
                "| ringlink-monoio | 1 | on | 1000 | 1100 | 10.00 | 9.00 | +1.00 | +10.0 % |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| ringlink-monoio | 2 | off | 1000 | 1000 | 12.00 | 12.00 | +0.00 | +0.0 % |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| ringlink-monoio | mean |  | 1000 | 1050 | 11.00 | 10.50 | +0.50 | +4.5 % |"
            ),
            "{t}"
        );
        let widths: Vec<_> = t.lines().map(|l| l.matches('|').count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
    }
}
