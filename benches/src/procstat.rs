//! CPU time and resident memory of a process and its descendants, from `/proc`.

use std::collections::HashMap;
use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// The fields of `/proc/PID/stat` the harness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    pub ppid: u32,
    /// `utime + stime` of all threads, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot in clock ticks: with the PID, identifies one process.
    pub start_ticks: u64,
}

/// A process as seen at one moment: its PID and start time, so that a later signal cannot
/// hit an unrelated process that reused the PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

pub fn stat(pid: u32) -> Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&stat).ok_or_else(|| anyhow!("malformed {path}"))
}

/// User plus system CPU time (all threads) of `root` plus all its current descendants (nginx's master and worker). A
/// descendant that exits between the scan and the read is left out.
pub fn tree_cpu_time(root: u32) -> Result<Duration> {
    let mut ticks = stat(root)?.cpu_ticks;
    for child in descendants(root)? {
        ticks += stat(child.pid).map_or(0, |s| s.cpu_ticks);
    }
    Ok(ticks_to_duration(ticks))
}

/// User plus system CPU time of the threads of `pid` whose name (`/proc/PID/task/TID/comm`)
/// starts with `prefix`: ringlink's shards are `ringlink-shard-N`.
pub fn threads_cpu_time(pid: u32, prefix: &str) -> Result<Duration> {
    let dir = format!("/proc/{pid}/task");
    let mut ticks = 0;
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry?.path();
        // A thread that exits between the listing and the reads is left out.
        let Ok(comm) = fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        if let Some(stat) = fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            ticks += stat.cpu_ticks;
        }
    }
    Ok(ticks_to_duration(ticks))
}

/// `VmRSS` of `root` plus its descendants, in bytes; pages shared between them (nginx's
/// master and worker share the binary and the configuration) are counted once per process.
pub fn tree_rss_bytes(root: u32) -> Result<u64> {
    let mut bytes = rss_bytes(root)?;
    for child in descendants(root)? {
        bytes += rss_bytes(child.pid).unwrap_or(0);
    }
    Ok(bytes)
}

/// All processes descending from `root` (children, grandchildren, ...), by one scan of
/// `/proc`.
pub fn descendants(root: u32) -> Result<Vec<ProcessId>> {
    let mut children: HashMap<u32, Vec<ProcessId>> = HashMap::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Processes come and go during the scan; a vanished one is simply not listed.
        if let Ok(stat) = stat(pid) {
            children.entry(stat.ppid).or_default().push(ProcessId {
                pid,
                start_ticks: stat.start_ticks,
            });
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            found.push(child);
            queue.push(child.pid);
        }
    }
    Ok(found)
}

/// Whether `process` is still running (and is the same process, not a PID reuse). A zombie
/// waiting to be reaped has exited.
pub fn is_alive(process: ProcessId) -> bool {
    stat(process.pid)
        .is_ok_and(|s| s.start_ticks == process.start_ticks && !matches!(s.state, 'Z' | 'X'))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64)
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

/// Fields are counted after the `)` closing the command name, which may itself contain
/// spaces and parentheses.
fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state): ppid is field 4, utime and stime are fields 14 and
    // 15, starttime is field 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
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
    fn stat_skips_odd_command_names() {
        let stat = "4242 (a b) c) S 17 4242 4242 0 -1 4194560 120 0 0 0 37 15 0 0 20 0 1 0 \
                    100 1000 200";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                state: 'S',
                ppid: 17,
                cpu_ticks: 52,
                start_ticks: 100
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_is_in_its_parents_tree() {
        let me = std::process::id();
        let parent = stat(me).unwrap().ppid;
        let tree = descendants(parent).unwrap();
        assert!(tree.iter().any(|p| p.pid == me));
        assert!(tree.iter().all(|&p| p.pid != parent));
        let mine = tree.into_iter().find(|p| p.pid == me).unwrap();
        assert!(is_alive(mine));
        assert!(!is_alive(ProcessId {
            start_ticks: mine.start_ticks + 1,
            ..mine
        }));
    }

    #[test]
    fn threads_by_name() {
        let me = std::process::id();
        let named = std::thread::Builder::new()
            .name("procstat-spin".to_string())
            .spawn(|| {
                // Spins until its own CPU time shows, for at most 2 s.
                let start = std::time::Instant::now();
                loop {
                    let spun = threads_cpu_time(std::process::id(), "procstat-spin").unwrap();
                    if spun > Duration::ZERO || start.elapsed() > Duration::from_secs(2) {
                        return spun;
                    }
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        assert!(named.join().unwrap() > Duration::ZERO);
        assert_eq!(
            threads_cpu_time(me, "no-such-thread").unwrap(),
            Duration::ZERO
        );
    }

    #[test]
    fn rss_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kib(status), Some(4321));
    }
}
