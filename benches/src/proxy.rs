//! The proxies under test and how each is started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::pinning::Pinning;
use crate::process::{free_addr, Spawned};

/// How long a proxy gets to accept TCP connections after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// No proxy: the load goes straight to the backend.
    Direct,
    /// `ref-forwarder`, the tokio current-thread baseline.
    RefTokio,
    RinglinkMonoio,
    RinglinkGlommio,
}

/// Binaries the proxies are started from.
pub struct Binaries {
    pub ref_forwarder: PathBuf,
    pub ringlink: PathBuf,
}

/// A started proxy; `process` is `None` for `direct`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub process: Option<Spawned>,
}

// === impl ProxyKind ===

impl ProxyKind {
    pub const ALL: [Self; 4] = [
        Self::Direct,
        Self::RefTokio,
        Self::RinglinkMonoio,
        Self::RinglinkGlommio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::RefTokio => "ref-tokio",
            Self::RinglinkMonoio => "ringlink-monoio",
            Self::RinglinkGlommio => "ringlink-glommio",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn is_ringlink(self) -> bool {
        matches!(self, Self::RinglinkMonoio | Self::RinglinkGlommio)
    }
}

// === impl Proxy ===

impl Proxy {
    /// Starts `kind` on the proxy CPU, forwarding every connection to `target`, and waits
    /// until it accepts connections.
    pub fn start(
        kind: ProxyKind,
        target: SocketAddr,
        bins: &Binaries,
        pin: &Pinning,
    ) -> Result<Self> {
        let (addr, mut process) = match kind {
            ProxyKind::Direct => {
                return Ok(Self {
                    addr: target,
                    process: None,
                })
            }
            ProxyKind::RefTokio => {
                let addr = free_addr()?;
                let mut cmd = pin.proxy(&bins.ref_forwarder);
                cmd.arg(addr.to_string()).arg(target.to_string());
                (addr, Spawned::spawn(kind.name(), cmd)?)
            }
            ProxyKind::RinglinkMonoio | ProxyKind::RinglinkGlommio => {
                let runtime = match kind {
                    ProxyKind::RinglinkMonoio => "monoio",
                    _ => "glommio",
                };
                let outbound = free_addr()?;
                let mut cmd = pin.proxy(&bins.ringlink);
                cmd.env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string())
                    .env(
                        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
                        free_addr()?.to_string(),
                    )
                    .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", free_addr()?.to_string())
                    .env(
                        "LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
                        free_addr()?.to_string(),
                    )
                    .env("LINKERD2_PROXY_CORES", "1")
                    .env("RINGLINK_RUNTIME", runtime)
                    .env("RINGLINK_ORIG_DST_OVERRIDE", target.to_string())
                    .env("LINKERD2_PROXY_LOG", "warn");
                (outbound, Spawned::spawn(kind.name(), cmd)?)
            }
        };
        process.wait_for_port(addr, STARTUP_TIMEOUT)?;
        Ok(Self {
            addr,
            process: Some(process),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Spawned::pid)
    }

    pub fn stop(self) -> Result<()> {
        match self.process {
            Some(process) => process.stop(),
            None => Ok(()),
        }
    }
}
