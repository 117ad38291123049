//! Running wrk and reading its `--latency` report.

use std::io::ErrorKind;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::pinning::Pinning;

pub struct WrkReport {
    /// Requests completed during the run.
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// wrk's "Socket errors" and "Non-2xx or 3xx responses" lines, if any.
    pub errors: Vec<String>,
}

/// One wrk run: one thread, `connections` keep-alive connections, on the load CPU.
pub struct Wrk<'a> {
    pub pin: &'a Pinning,
    pub connections: u32,
}

// === impl Wrk ===

impl Wrk<'_> {
    /// Fails if taskset cannot be run; `Ok(Some(reason))` if wrk is missing.
    pub fn unavailable(&self) -> Result<Option<String>> {
        let spawn = self.pin.load("wrk").arg("--version").output();
        match spawn {
            Err(error) if error.kind() == ErrorKind::NotFound => {
                bail!("taskset not found: apt-get install util-linux")
            }
            Err(error) => bail!("cannot run taskset: {error}"),
            Ok(out) if String::from_utf8_lossy(&out.stdout).contains("wrk") => Ok(None),
            Ok(out) => Ok(Some(format!(
                "wrk not found (apt-get install wrk): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    /// Runs wrk against `url` for `secs`; `host` replaces the `Host` header.
    pub fn run(&self, url: &str, host: Option<&str>, secs: u32) -> Result<WrkReport> {
        let mut cmd = self.pin.load("wrk");
        if let Some(host) = host {
            cmd.args(["-H", &format!("Host: {host}")]);
        }
        let out = cmd
            .args(["-t1", &format!("-c{}", self.connections)])
            .args([&format!("-d{secs}s"), "--latency", url])
            .output()
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk against {url} failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report = parse(&stdout).with_context(|| format!("unexpected wrk output:\n{stdout}"))?;
        if report.requests == 0 {
            bail!("wrk against {url} completed no requests:\n{stdout}");
        }
        Ok(report)
    }
}

pub fn parse(output: &str) -> Result<WrkReport> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = Vec::new();
    for line in output.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => requests_per_sec = Some(v.parse()?),
            (Some("50%"), Some(v)) => p50 = Some(parse_time(v)?),
            (Some("99%"), Some(v)) => p99 = Some(parse_time(v)?),
            (Some(n), Some("requests")) => requests = Some(n.parse()?),
            _ if line.starts_with("Socket errors:") || line.starts_with("Non-2xx") => {
                errors.push(line.to_string())
            }
            _ => {}
        }
    }
    Ok(WrkReport {
        requests: requests.ok_or_else(|| anyhow!("no \"N requests in\" line"))?,
        requests_per_sec: requests_per_sec.ok_or_else(|| anyhow!("no Requests/sec line"))?,
        p50: p50.ok_or_else(|| anyhow!("no 50% latency line (was --latency passed?)"))?,
        p99: p99.ok_or_else(|| anyhow!("no 99% latency line (was --latency passed?)"))?,
        errors,
    })
}

/// wrk's time format: a number followed by `us`, `ms`, `s`, `m` or `h`.
fn parse_time(v: &str) -> Result<Duration> {
    const UNITS: [(&str, f64); 5] = [
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
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

    const OUTPUT: &str = "\
Running 3s test @ http://127.0.0.1:40001/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  200.00us   5.00ms   90.00%
    Req/Sec    45.00k     1.00k   47.00k    80.00%
  Latency Distribution
     50%  980.00us
     75%    1.20ms
     90%    1.40ms
     99%    2.50ms
  134567 requests in 3.00s, 9.88MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
Requests/sec:  44855.67
Transfer/sec:      3.29MB
";

    #[test]
    fn parses_latency_report() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.requests, 134_567);
        assert!((r.requests_per_sec - 44_855.67).abs() < 1e-6);
        assert_eq!(r.p50, Duration::from_micros(980));
        assert_eq!(r.p99, Duration::from_micros(2500));
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn time_units() {
        assert_eq!(parse_time("1.50s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_time("2.00m").unwrap(), Duration::from_secs(120));
        assert!(parse_time("3.0x").is_err());
    }
}
