//! CPU time and resident memory of a process, from `/proc`.

use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// User plus system CPU time of the whole process (all threads), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("malformed {path}"))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_sec() as f64,
    ))
}

/// The resolution of [`cpu_time`]: one clock tick (10 ms at the usual 100 Hz).
pub fn clock_tick() -> Duration {
    Duration::from_secs_f64(1.0 / clock_ticks_per_sec() as f64)
}

/// `VmRSS` from `/proc/PID/status`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_rss_kib(&status)
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// `utime + stime` in clock ticks. Fields are counted after the `)` closing the command
/// name, which may itself contain spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[allow(unsafe_code)]
fn clock_ticks_per_sec() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        // SAFETY: sysconf only reads a configuration value.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(tck).ok().filter(|&t| t > 0).unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_odd_command_names() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 120 0 0 0 37 15 0 0 20 0 1 0 \
                    100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(52));
    }

    #[test]
    fn rss_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kib(status), Some(4321));
    }
}
