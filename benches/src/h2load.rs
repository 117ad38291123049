//! Running h2load (nghttp2-client) over h2c and reading its summary.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::pinning::Pinning;
use crate::process;
use crate::tools;

/// Extra time h2load gets past `-D` (connection set-up, stopping) before it is killed.
const GRACE: Duration = Duration::from_secs(30);

pub struct H2loadReport {
    /// Requests that completed with a 2xx during the run.
    pub succeeded: u64,
    pub requests_per_sec: f64,
    /// h2load's "time for request" line: per request, from sending its HEADERS until the
    /// end of its response. h2load reports no percentiles.
    pub request_time: RequestTime,
    /// "N failed, N errored, N timeout" when any is non-zero, and non-2xx status counts.
    pub errors: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestTime {
    pub min: Duration,
    pub max: Duration,
    pub mean: Duration,
    pub sd: Duration,
}

/// h2load on the load CPU: `clients` h2c connections, `streams` concurrent streams each,
/// one thread.
pub struct H2load<'a> {
    pub pin: &'a Pinning,
    pub clients: u32,
    pub streams: u32,
}

// === impl H2load ===

impl H2load<'_> {
    /// Why the h2 test cannot run, if it cannot.
    pub fn unavailable() -> Option<String> {
        match tools::find_program("h2load") {
            Some(_) => None,
            None => Some("h2load not found (apt-get install nghttp2-client)".to_string()),
        }
    }

    /// `h2load -c CLIENTS -m STREAMS -D SECS http://ADDR/`: an `http://` URI makes h2load
    /// speak h2c with prior knowledge.
    pub fn run(&self, url: &str, secs: u32) -> Result<H2loadReport> {
        let mut cmd = self.pin.load("h2load");
        cmd.args(["-t1", &format!("-c{}", self.clients)]).args([
            &format!("-m{}", self.streams),
            &format!("-D{secs}"),
            url,
        ]);
        let out = process::output_within(cmd, Duration::from_secs(secs.into()) + GRACE)
            .context("running h2load")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "h2load against {url} failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report =
            parse(&stdout).with_context(|| format!("unexpected h2load output:\n{stdout}"))?;
        if report.succeeded == 0 {
            bail!("h2load against {url} completed no request:\n{stdout}");
        }
        Ok(report)
    }
}

pub fn parse(output: &str) -> Result<H2loadReport> {
    let mut requests_per_sec = None;
    let mut succeeded = None;
    let mut request_time = None;
    let mut errors = Vec::new();
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 4.00s, 170522.00 req/s, 5.85MB/s"
            let rps = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .ok_or_else(|| anyhow!("no req/s in {line:?}"))?;
            requests_per_sec = Some(rps.parse()?);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "requests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed, 0 errored, 0 timeout"
            let count = |what: &str| -> Result<u64> {
                rest.split(", ")
                    .find_map(|part| part.strip_suffix(what).map(str::trim))
                    .ok_or_else(|| anyhow!("no {what:?} count in {line:?}"))?
                    .parse()
                    .with_context(|| format!("bad {what:?} count in {line:?}"))
            };
            succeeded = Some(count(" succeeded")?);
            let failures = [" failed", " errored", " timeout"]
                .iter()
                .map(|what| count(what))
                .collect::<Result<Vec<_>>>()?;
            if failures.iter().any(|&n| n > 0) {
                errors.push(line.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // "status codes: 9 2xx, 0 3xx, 1 4xx, 0 5xx"
            let non_2xx = rest
                .split(", ")
                .filter(|part| !part.ends_with(" 2xx"))
                .any(|part| part.split_whitespace().next() != Some("0"));
            if non_2xx {
                errors.push(line.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            let values = rest
                .split_whitespace()
                .take(4)
                .map(parse_time)
                .collect::<Result<Vec<_>>>()?;
            let [min, max, mean, sd] = values[..] else {
                bail!("expected min, max, mean and sd in {line:?}");
            };
            request_time = Some(RequestTime { min, max, mean, sd });
        }
    }
    Ok(H2loadReport {
        succeeded: succeeded.ok_or_else(|| anyhow!("no \"requests:\" line"))?,
        requests_per_sec: requests_per_sec.ok_or_else(|| anyhow!("no \"finished in\" line"))?,
        request_time: request_time.ok_or_else(|| anyhow!("no \"time for request\" line"))?,
        errors,
    })
}

/// h2load's time format: a number followed by `us`, `ms` or `s`.
fn parse_time(v: &str) -> Result<Duration> {
    const UNITS: [(&str, f64); 4] = [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    let (number, scale) = UNITS
        .iter()
        .find_map(|&(unit, scale)| v.strip_suffix(unit).map(|n| (n, scale)))
        .ok_or_else(|| anyhow!("unknown time unit in {v:?}"))?;
    let number: f64 = number.parse().with_context(|| format!("bad time {v:?}"))?;
    Ok(Duration::from_secs_f64(number * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed output of h2load 1.52 against `bench-backend --h2`.
    const OUTPUT: &str = "\
starting benchmark...
spawning thread #0: 10 total client(s). Timing-based test with 0s of warm-up time and 3s of main duration for measurements.
progress: 100% of clients started
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 3.00s, 170522.00 req/s, 5.85MB/s
requests: 511566 total, 511666 started, 511566 done, 511560 succeeded, 6 failed, 0 errored, 0 timeout
status codes: 511560 2xx, 0 3xx, 0 4xx, 6 5xx
traffic: 17.56MB (18416376) total, 3.86MB (4049814) headers (space savings 76.92%), 7.72MB (8099628) data
                     min         max         mean         sd        +/- sd
time for request:       45us      2.38ms       541us       224us    71.03%
time for connect:        0us         0us         0us         0us     0.00%
time to 1st byte:        0us         0us         0us         0us     0.00%
req/s           :   16550.84    17450.57    17050.78      323.15    50.00%
";

    #[test]
    fn parses_summary() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.succeeded, 511_560);
        assert!((r.requests_per_sec - 170_522.0).abs() < 1e-6);
        assert_eq!(
            r.request_time,
            RequestTime {
                min: Duration::from_micros(45),
                max: Duration::from_micros(2380),
                mean: Duration::from_micros(541),
                sd: Duration::from_micros(224),
            }
        );
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    }

    #[test]
    fn clean_run_has_no_errors() {
        let clean = OUTPUT
            .replace("511560 succeeded, 6 failed", "511566 succeeded, 0 failed")
            .replace("6 5xx", "0 5xx");
        assert!(parse(&clean).unwrap().errors.is_empty());
    }

    #[test]
    fn missing_lines_fail() {
        assert!(parse("finished in 3.00s, 1.00 req/s, 1MB/s\n").is_err());
    }
}
