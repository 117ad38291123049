//! The proxies under test and how each is started.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::args::Test;
use crate::configs;
use crate::pinning::Pinning;
use crate::process::{free_addr, Spawned};
use crate::procstat;
use crate::tools::Nginx;

/// How long a proxy gets to accept TCP connections after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// No proxy: the load goes straight to the backend.
    Direct,
    /// `ref-forwarder`, the tokio current-thread baseline.
    RefTokio,
    RinglinkMonoio,
    /// ringlink-monoio with a Destination service: the same backend, reached through a
    /// balancer (discovery snapshot, P2C pick, RTT sample) instead of straight.
    RinglinkBalanced,
    RinglinkGlommio,
    /// ringlink-monoio with opaque TCP copied through buffers (`RINGLINK_L4_SPLICE=off`),
    /// not spliced: the `bulk` test's comparison of the two.
    RinglinkCopy,
    /// nginx, one worker process, configured per test (see `configs.rs`).
    Nginx,
    /// haproxy, one thread, configured per test (see `configs.rs`).
    Haproxy,
}

/// Binaries the proxies are started from; `None` where a program is not installed.
pub struct Binaries {
    pub ref_forwarder: PathBuf,
    pub ringlink: PathBuf,
    pub nginx: Option<Nginx>,
    pub haproxy: Option<PathBuf>,
}

/// A started proxy; `process` is `None` for `direct`.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The `Host` the load must send (the balanced row's destination name), if any.
    pub host: Option<String>,
    /// Declared before `conf` so that, when dropped, the process is gone before its
    /// configuration directory is removed.
    process: Option<Spawned>,
    conf: Option<ConfDir>,
}

/// The loopback addresses a ringlink process listens on.
#[derive(Clone, Copy, Debug)]
pub struct RinglinkPorts {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub control: SocketAddr,
}

/// A temporary directory holding a generated configuration, removed on drop.
struct ConfDir {
    path: PathBuf,
}

// === impl ProxyKind ===

impl ProxyKind {
    pub const ALL: [Self; 8] = [
        Self::Direct,
        Self::RefTokio,
        Self::RinglinkMonoio,
        Self::RinglinkBalanced,
        Self::RinglinkGlommio,
        Self::RinglinkCopy,
        Self::Nginx,
        Self::Haproxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::RefTokio => "ref-tokio",
            Self::RinglinkMonoio => "ringlink-monoio",
            Self::RinglinkBalanced => "ringlink-monoio-balanced",
            Self::RinglinkGlommio => "ringlink-glommio",
            Self::RinglinkCopy => "ringlink-monoio-copy",
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    pub fn is_ringlink(self) -> bool {
        matches!(
            self,
            Self::RinglinkMonoio
                | Self::RinglinkBalanced
                | Self::RinglinkGlommio
                | Self::RinglinkCopy
        )
    }
}

// === impl Binaries ===

impl Binaries {
    /// Why `kind` cannot be measured in `test` on this machine, if it cannot.
    pub fn unavailable(&self, kind: ProxyKind, test: Test) -> Option<String> {
        match kind {
            ProxyKind::Nginx => match &self.nginx {
                None => Some(
                    "skipped: `nginx` not found in PATH or the sbin directories \
                     (apt-get install nginx)"
                        .to_string(),
                ),
                Some(nginx) if test == Test::Bulk && nginx.stream_module.is_none() => Some(
                    "skipped: the bulk test needs nginx's stream module, and \
                     ngx_stream_module.so was not found (apt-get install libnginx-mod-stream)"
                        .to_string(),
                ),
                Some(_) => None,
            },
            ProxyKind::RefTokio | ProxyKind::RinglinkBalanced
                if matches!(test, Test::Grpc | Test::Latency) =>
            {
                Some(format!(
                    "skipped: the {} test compares direct, ringlink and the HTTP proxies nginx \
                     and haproxy",
                    test.name()
                ))
            }
            ProxyKind::RinglinkCopy if test != Test::Bulk => {
                Some("skipped: the copy row is measured with bulk only".to_string())
            }
            ProxyKind::RinglinkBalanced if test != Test::Http1 => {
                Some("skipped: the balanced row is measured with HTTP/1 only".to_string())
            }
            ProxyKind::Haproxy if self.haproxy.is_none() => Some(
                "skipped: `haproxy` not found in PATH or the sbin directories \
                 (apt-get install haproxy)"
                    .to_string(),
            ),
            _ => None,
        }
    }
}

// === impl RinglinkPorts ===

impl RinglinkPorts {
    /// Loopback ports that were free a moment ago.
    pub fn free() -> Result<Self> {
        Ok(Self {
            outbound: free_addr()?,
            inbound: free_addr()?,
            admin: free_addr()?,
            control: free_addr()?,
        })
    }

    /// `taskset -c <proxy cpu> ringlink` listening on these ports, with one shard of
    /// `runtime` (`monoio` or `glommio`), logging warnings and errors.
    pub fn command(&self, ringlink: &Path, pin: &Pinning, runtime: &str) -> Command {
        let mut cmd = pin.proxy(ringlink);
        cmd.env(
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
            self.outbound.to_string(),
        )
        .env(
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
            self.inbound.to_string(),
        )
        .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", self.admin.to_string())
        .env(
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
            self.control.to_string(),
        )
        .env("LINKERD2_PROXY_CORES", "1")
        .env("RINGLINK_RUNTIME", runtime)
        .env("LINKERD2_PROXY_LOG", "warn");
        cmd
    }
}

// === impl Proxy ===

impl Proxy {
    /// Starts `kind` on the proxy CPU, set up for `test` and forwarding every connection to
    /// `target`, and waits until it accepts connections.
    pub fn start(
        kind: ProxyKind,
        test: Test,
        target: SocketAddr,
        bins: &Binaries,
        pin: &Pinning,
    ) -> Result<Self> {
        Self::start_with_env(kind, test, target, bins, pin, &[])
    }

    /// [`Proxy::start`], with `env` added to ringlink's environment (ignored for the others).
    pub fn start_with_env(
        kind: ProxyKind,
        test: Test,
        target: SocketAddr,
        bins: &Binaries,
        pin: &Pinning,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut conf = None;
        let mut host = None;
        let (addr, mut process) = match kind {
            ProxyKind::Direct => {
                return Ok(Self {
                    addr: target,
                    host: None,
                    process: None,
                    conf: None,
                })
            }
            ProxyKind::RefTokio => {
                let addr = free_addr()?;
                let mut cmd = pin.proxy(&bins.ref_forwarder);
                cmd.arg(addr.to_string()).arg(target.to_string());
                (addr, Spawned::spawn(kind.name(), cmd)?)
            }
            ProxyKind::RinglinkMonoio
            | ProxyKind::RinglinkBalanced
            | ProxyKind::RinglinkGlommio
            | ProxyKind::RinglinkCopy => {
                let runtime = match kind {
                    ProxyKind::RinglinkGlommio => "glommio",
                    _ => "monoio",
                };
                let ports = RinglinkPorts::free()?;
                let outbound = ports.outbound;
                let mut cmd = ports.command(&bins.ringlink, pin, runtime);
                cmd.env("RINGLINK_ORIG_DST_OVERRIDE", target.to_string())
                    .envs(env.iter().copied());
                if kind == ProxyKind::RinglinkCopy {
                    cmd.env("RINGLINK_L4_SPLICE", "off");
                }
                if kind == ProxyKind::RinglinkBalanced {
                    let mock = crate::destination::start(target)?;
                    cmd.env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", mock.addr.to_string())
                        // A proxy with a Destination service needs a policy controller; none
                        // listens there, so every port keeps its default policy.
                        .env("LINKERD2_PROXY_POLICY_SVC_ADDR", "127.0.0.1:1")
                        .env("LINKERD2_PROXY_POLICY_WORKLOAD", "bench:bench");
                    host = Some(format!("{}:{}", crate::destination::NAME, target.port()));
                }
                (outbound, Spawned::spawn(kind.name(), cmd)?)
            }
            ProxyKind::Nginx => {
                let nginx = bins.nginx.as_ref().context("nginx is not installed")?;
                let dir = conf.insert(ConfDir::create(kind, test)?);
                let addr = free_addr()?;
                let file = dir.write(
                    "nginx.conf",
                    &configs::nginx(&configs::NginxConfig {
                        dir: &dir.path,
                        listen: addr,
                        target,
                        test,
                        http2_directive: nginx.has_http2_directive(),
                        stream_module: nginx.stream_module.as_deref(),
                    }),
                )?;
                let mut cmd = pin.proxy(&nginx.binary);
                // `-e stderr`: the error log before the configuration is read would
                // otherwise go to the packaged path under /var/log.
                cmd.arg("-p").arg(&dir.path).args(["-e", "stderr", "-c"]);
                cmd.arg(file);
                (addr, Spawned::spawn(kind.name(), cmd)?)
            }
            ProxyKind::Haproxy => {
                let haproxy = bins.haproxy.as_ref().context("haproxy is not installed")?;
                let dir = conf.insert(ConfDir::create(kind, test)?);
                let addr = free_addr()?;
                let file = dir.write(
                    "haproxy.cfg",
                    &configs::haproxy(&configs::HaproxyConfig {
                        listen: addr,
                        target,
                        test,
                        maxconn: haproxy_maxconn(),
                    }),
                )?;
                // `-db`: stay in the foreground, one process, so that its PID is ours.
                let mut cmd = pin.proxy(haproxy);
                cmd.arg("-db").arg("-f").arg(file);
                (addr, Spawned::spawn(kind.name(), cmd)?)
            }
        };
        process.wait_for_port(addr, STARTUP_TIMEOUT)?;
        Ok(Self {
            addr,
            host,
            process: Some(process),
            conf,
        })
    }

    /// CPU time so far of the proxy's processes (nginx: master and worker); `None` for
    /// `direct`.
    pub fn cpu_time(&self) -> Result<Option<Duration>> {
        self.process
            .as_ref()
            .map(|p| procstat::tree_cpu_time(p.pid()))
            .transpose()
    }

    /// Summed `VmRSS` of the proxy's processes, in bytes; `None` for `direct`.
    pub fn rss_bytes(&self) -> Result<Option<u64>> {
        self.process
            .as_ref()
            .map(|p| procstat::tree_rss_bytes(p.pid()))
            .transpose()
    }

    pub fn stop(self) -> Result<()> {
        let stopped = match self.process {
            Some(process) => process.stop(),
            None => Ok(()),
        };
        drop(self.conf);
        stopped
    }
}

// === impl ConfDir ===

impl ConfDir {
    fn create(kind: ProxyKind, test: Test) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "ringlink-bench-{}-{}-{}",
            std::process::id(),
            kind.name(),
            test.name()
        ));
        // A leftover of an earlier run with the same PID would hold a stale pid file.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let file = self.path.join(name);
        fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))?;
        Ok(file)
    }
}

impl Drop for ConfDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// haproxy needs about two file descriptors per connection and refuses to start if its
/// `maxconn` would exceed the hard limit.
fn haproxy_maxconn() -> u64 {
    // The idle test holds 5,300 client connections (and as many to the backend in `tcp`).
    const WANTED: u64 = 12_000;
    hard_nofile_limit(Path::new("/proc/self/limits"))
        .map_or(WANTED, |limit| WANTED.min(limit.saturating_sub(100) / 2))
        .max(256)
}

/// The hard "Max open files" limit from `/proc/self/limits`; `None` if unlimited or
/// unreadable.
fn hard_nofile_limit(path: &Path) -> Option<u64> {
    read_nofile_limit(path, 4)
}

/// This process's soft "Max open files" limit (what its children inherit); `None` if
/// unlimited or unreadable.
pub fn soft_nofile_limit() -> Option<u64> {
    read_nofile_limit(Path::new("/proc/self/limits"), 3)
}

fn read_nofile_limit(path: &Path, field: usize) -> Option<u64> {
    let limits = fs::read_to_string(path).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  <soft>  <hard>  files"
    line.split_whitespace().nth(field)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(nginx: Option<Nginx>, haproxy: Option<PathBuf>) -> Binaries {
        Binaries {
            ref_forwarder: PathBuf::from("ref-forwarder"),
            ringlink: PathBuf::from("ringlink"),
            nginx,
            haproxy,
        }
    }

    #[test]
    fn missing_programs_are_skipped_with_a_reason() {
        let none = bins(None, None);
        for test in Test::ALL {
            let reason = none.unavailable(ProxyKind::Nginx, test).unwrap();
            assert!(reason.contains("nginx") && reason.contains("not found"));
            let reason = none.unavailable(ProxyKind::Haproxy, test).unwrap();
            assert!(reason.contains("haproxy") && reason.contains("not found"));
            let ref_tokio = none.unavailable(ProxyKind::RefTokio, test);
            assert_eq!(
                ref_tokio.is_some(),
                matches!(test, Test::Grpc | Test::Latency),
                "{test:?}"
            );
        }
        let no_stream = bins(
            Some(Nginx {
                binary: PathBuf::from("/usr/sbin/nginx"),
                version: Some((1, 22, 1)),
                stream_module: None,
            }),
            Some(PathBuf::from("/usr/sbin/haproxy")),
        );
        assert!(no_stream
            .unavailable(ProxyKind::Nginx, Test::Http1)
            .is_none());
        assert!(no_stream.unavailable(ProxyKind::Nginx, Test::H2).is_none());
        let reason = no_stream.unavailable(ProxyKind::Nginx, Test::Bulk).unwrap();
        assert!(reason.contains("stream module"));
        assert!(no_stream
            .unavailable(ProxyKind::Haproxy, Test::Bulk)
            .is_none());
    }

    #[test]
    fn nofile_limit() {
        let dir =
            std::env::temp_dir().join(format!("ringlink-bench-limits-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("limits");
        fs::write(
            &file,
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            1024                 524288               files\n",
        )
        .unwrap();
        assert_eq!(hard_nofile_limit(&file), Some(524_288));
        assert_eq!(read_nofile_limit(&file, 3), Some(1024));
        fs::write(&file, "Max open files  unlimited  unlimited  files\n").unwrap();
        assert_eq!(hard_nofile_limit(&file), None);
        fs::remove_dir_all(&dir).unwrap();
        assert!(haproxy_maxconn() >= 256);
    }
}
