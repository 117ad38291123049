//! What /proc says about a process the tests started.

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    field_kib(&status, "VmRSS:")
}

fn field_kib(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `(thread name, Cpus_allowed_list)` of every thread of `pid`.
pub fn thread_affinities(pid: u32) -> Vec<(String, String)> {
    let mut threads = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in dir.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let get = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l[name.len()..].trim().to_string())
                .unwrap_or_default()
        };
        threads.push((get("Name:"), get("Cpus_allowed_list:")));
    }
    threads
}

/// Raises this process's open-file limit as far as it may go (root may raise the hard limit);
/// children inherit it. Returns the soft limit now in force.
#[allow(unsafe_code)]
pub fn raise_nofile_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid, writable rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    // Never lowered: tests running at the same time each raise it for their own needs.
    let want = want.max(limit.rlim_cur);
    let wanted = libc::rlimit {
        rlim_cur: want,
        rlim_max: want.max(limit.rlim_max),
    };
    // SAFETY: valid rlimit; failure (not root) is handled below.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return want;
    }
    let soft = libc::rlimit {
        rlim_cur: limit.rlim_max.min(want),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    soft.rlim_cur
}

/// Whether this process runs as root.
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// How many of process `pid`'s open sockets are TCP (IPv4) connections to `addr`: the
/// socket inodes of its descriptors, matched against `/proc/net/tcp`'s remote addresses.
pub fn tcp_sockets_to(pid: u32, addr: std::net::SocketAddr) -> usize {
    let std::net::SocketAddr::V4(addr) = addr else {
        panic!("tcp_sockets_to: IPv4 only");
    };
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    // /proc/net/tcp writes an IPv4 address as the hex of its bytes in host (little-endian)
    // order, and the port in network order.
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    );
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9 && fields[2] == remote && inodes.contains(fields[9])
        })
        .count()
}
