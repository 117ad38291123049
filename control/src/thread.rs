//! The control thread: a tokio current-thread runtime on its own OS thread. It owns
//! everything tokio-based, which must never run on a shard (DESIGN.md §2). Today that is
//! signal handling, the shutdown phase it publishes to every shard, the admin server, DNS
//! resolution for shards ([`crate::dns`]), destination watches ([`crate::dst`]: the
//! Destination service or DNS), inbound policy watches, the identity client and the tap
//! server ([`crate::tap::server`]).

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};

use ringlink_admin::{Admin, Exposition, LogLevel};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

// === types ===

/// Where the proxy is in its life, published to every shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving connections.
    Serving,
    /// SIGTERM/SIGINT (or `/shutdown`): stop accepting, let open connections finish within
    /// the grace period.
    Draining,
    /// A second signal: close what is left now.
    Closing,
}

/// What the control thread needs to serve the admin endpoints.
pub struct AdminSetup {
    /// Bound to `LINKERD2_PROXY_ADMIN_LISTEN_ADDR`.
    pub listener: std::net::TcpListener,
    /// Set by the binary once every shard serves.
    pub ready: Arc<AtomicBool>,
    pub log_level: Box<dyn LogLevel>,
    pub env: Vec<(String, String)>,
    /// `LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED`.
    pub shutdown_enabled: bool,
    /// Every shard's metrics, for `/metrics`.
    pub metrics: Exposition,
}

/// What the control thread needs to resolve names and watch destinations for shards.
pub struct DnsSetup {
    pub requests: tokio::sync::mpsc::Receiver<crate::dns::DnsRequest>,
    pub ttl: crate::dns::DnsTtl,
    /// `RINGLINK_DNS_NAMESERVERS`; empty: the system's.
    pub nameservers: Vec<std::net::SocketAddr>,
    pub dst_requests: tokio::sync::mpsc::Receiver<crate::dst::DstRequest>,
    pub destination: Option<crate::config::DestinationConfig>,
    pub suffixes: Vec<String>,
    /// The inbound policy client and the shards' requests for it, when a policy controller
    /// is configured.
    pub policy: Option<PolicySetup>,
}

/// What the control thread needs to watch inbound policies for shards.
pub struct PolicySetup {
    pub requests: tokio::sync::mpsc::Receiver<crate::policy::watch::PolicyRequest>,
    pub addr: String,
    pub workload: String,
    pub limits: crate::policy::watch::StreamLimits,
    pub detect_timeout: std::time::Duration,
    pub default: std::sync::Arc<
        dyn Fn(u16) -> std::sync::Arc<crate::policy::inbound::ServerPolicy> + Send + Sync,
    >,
    /// `LINKERD2_PROXY_INBOUND_PORTS` and the admin port: watched from startup, never
    /// expired.
    pub pinned: Vec<u16>,
}

/// A shard's view of the [`Phase`] (crosses threads; works on any runtime).
pub type PhaseRx = watch::Receiver<Phase>;

/// What the control thread needs to keep this proxy certified
/// (`LINKERD2_PROXY_IDENTITY_*`).
pub struct IdentitySetup {
    pub config: crate::config::IdentityConfig,
    /// Where each new certificate is published.
    pub publish: watch::Sender<Option<Arc<crate::identity::Certified>>>,
    /// Where the shards' TLS configurations for each new certificate are published.
    pub mesh: watch::Sender<Option<Arc<ringlink_protocols::tls::MeshTls>>>,
    /// Set once the first certificate is held: `/ready` answers 200 from then on.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<crate::identity::IdentityMetrics>,
}

/// The running control thread.
#[derive(Debug)]
pub struct ControlThread {
    phase: watch::Sender<Phase>,
    _thread: std::thread::JoinHandle<()>,
}

// === impl ControlThread ===

impl ControlThread {
    /// Starts the control thread; returns once its signal handlers are installed, so a
    /// signal sent after this returns is never lost to the default action.
    pub fn spawn(
        admin: AdminSetup,
        dns: DnsSetup,
        identity: Option<IdentitySetup>,
        tap: Option<crate::tap::server::TapServerSetup>,
    ) -> io::Result<ControlThread> {
        let (phase, _) = watch::channel(Phase::Serving);
        let publisher = phase.clone();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("ringlink-control".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut term = match signal(SignalKind::terminate()) {
                        Ok(s) => s,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let mut int = match signal(SignalKind::interrupt()) {
                        Ok(s) => s,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    admin.listener.set_nonblocking(true).ok();
                    let listener = match tokio::net::TcpListener::from_std(admin.listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let drain = publisher.clone();
                    let shutdown = admin.shutdown_enabled.then(|| {
                        Box::new(move || {
                            drain.send_if_modified(|phase| {
                                let start = *phase == Phase::Serving;
                                if start {
                                    *phase = Phase::Draining;
                                }
                                start
                            });
                        }) as Box<dyn Fn() + Send + Sync>
                    });
                    let admin = Admin {
                        ready: admin.ready,
                        log_level: admin.log_level,
                        env: admin.env,
                        shutdown,
                        metrics: admin.metrics,
                    };
                    tokio::spawn(ringlink_admin::serve(listener, Arc::new(admin)));
                    let resolver = crate::dns::resolver(&dns.nameservers);
                    tokio::spawn(crate::dns::serve(dns.requests, dns.ttl, resolver.clone()));
                    let discovery = dns.destination.as_ref().map(|d| {
                        tracing::info!(addr = %d.addr, "Using the Destination service");
                        crate::discovery::Discovery::new(&d.addr, d.context.clone())
                    });
                    // Outbound policies are asked for the original destinations that get a
                    // profile: only with a Destination service too.
                    let outbound = dns
                        .policy
                        .as_ref()
                        .filter(|_| discovery.is_some())
                        .map(|p| {
                            crate::policy::outbound::watch::OutboundPolicies::new(
                                &p.addr,
                                p.workload.clone(),
                                p.limits,
                                p.detect_timeout,
                            )
                        });
                    tokio::spawn(crate::dst::serve(
                        dns.dst_requests,
                        crate::dst::Sources {
                            discovery,
                            suffixes: dns.suffixes,
                            dns: resolver,
                            ttl: dns.ttl,
                            outbound,
                        },
                    ));
                    if let Some(policy) = dns.policy {
                        tracing::info!(addr = %policy.addr, "Using the policy controller");
                        let client = crate::policy::watch::Policies::new(
                            &policy.addr,
                            policy.workload,
                            policy.limits,
                            policy.detect_timeout,
                            policy.default,
                        );
                        let pinned = policy.pinned;
                        let requests = policy.requests;
                        tokio::spawn(async move {
                            crate::policy::watch::serve(requests, client, &pinned).await;
                        });
                    }
                    if let Some(identity) = identity {
                        spawn_identity(identity);
                    }
                    if let Some(tap) = tap {
                        tokio::spawn(crate::tap::server::serve(tap));
                    }
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        let name = tokio::select! {
                            _ = term.recv() => "SIGTERM",
                            _ = int.recv() => "SIGINT",
                        };
                        if *publisher.borrow() == Phase::Serving {
                            tracing::info!(signal = name, "Received signal, draining");
                            publisher.send_replace(Phase::Draining);
                        } else {
                            tracing::info!(
                                signal = name,
                                "Received another signal, closing connections now"
                            );
                            publisher.send_replace(Phase::Closing);
                        }
                    }
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ControlThread {
                phase,
                _thread: thread,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(io::Error::other("the control thread exited at startup")),
        }
    }

    /// A receiver for a shard.
    pub fn phase(&self) -> PhaseRx {
        self.phase.subscribe()
    }
}

/// Runs the identity client, and marks the proxy ready once the first certificate is held.
fn spawn_identity(identity: IdentitySetup) {
    let IdentitySetup {
        config,
        publish,
        mesh,
        ready,
        metrics,
    } = identity;
    let mut certified = publish.subscribe();
    tokio::spawn(async move {
        while certified.changed().await.is_ok() {
            let Some(certified) = certified.borrow_and_update().clone() else {
                continue;
            };
            match mesh_tls(&certified) {
                Ok(tls) => {
                    mesh.send_replace(Some(Arc::new(tls)));
                    if !ready.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        tracing::info!(name = %certified.name, "Certified: ready");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "Certificate cannot be used for TLS; keeping the last one")
                }
            }
        }
    });
    tokio::spawn(crate::identity::run_with_metrics(config, publish, metrics));
}

/// The shards' TLS configurations for a certificate.
fn mesh_tls(
    certified: &crate::identity::Certified,
) -> Result<ringlink_protocols::tls::MeshTls, ringlink_protocols::tls::TlsError> {
    use ringlink_protocols::tls::{Credentials, MeshTls, TrustAnchors};
    let anchors = TrustAnchors::from_pem(&certified.trust_anchors_pem)?;
    let credentials = Credentials {
        name: certified.name.clone(),
        key_pkcs8: certified.key_pkcs8.clone(),
        chain: certified.chain.clone(),
    };
    MeshTls::new(&credentials, &anchors)
}
