//! Startup and shutdown of the whole process: config, logging, CPUs, listeners, the control
//! thread, the shards.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringlink_admin::Exposition;
use ringlink_control::identity::IdentityMetrics;
use ringlink_control::policy::inbound::{defaults, BuiltinPolicy};
use ringlink_control::policy::watch::StreamLimits;
use ringlink_control::tap::server::TapServerSetup;
use ringlink_control::tap::{TapMetrics, TapSet, TapsRx};
use ringlink_control::thread::{AdminSetup, ControlThread, DnsSetup, IdentitySetup, PolicySetup};
use ringlink_control::{Config, SystemEnv};

use crate::conn::Direction;
use crate::discover::BalancerFamilies;
use crate::listen;
use crate::rt::{self, ShardSpec};
use crate::settings::Settings;
use crate::shard::ShardSeed;
use crate::telemetry::{HttpFamilies, TcpMetrics};
use crate::{logging, sys};

/// `EX_USAGE`: invalid configuration.
const EXIT_CONFIG: u8 = 64;
/// `EX_UNAVAILABLE`: the chosen runtime cannot run here.
const EXIT_UNAVAILABLE: u8 = 69;
/// `EX_SOFTWARE`: a shard panicked.
const EXIT_SOFTWARE: u8 = 70;
/// `EX_OSERR`: the OS refused something we need (a port, a thread).
const EXIT_OSERR: u8 = 71;

/// How often the main thread checks whether the shards have finished.
const SHARD_EXIT_POLL: Duration = Duration::from_millis(50);

// === types ===

/// Why the proxy stopped early.
#[derive(Debug)]
struct Fatal {
    code: u8,
    message: String,
}

// === functions ===

/// The `ringlink` binary.
pub fn main() -> ExitCode {
    let config = match Config::from_env(&SystemEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ringlink: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = match logging::init(&config.log_filter, config.log_format) {
        Ok(log) => log,
        Err(error) => {
            eprintln!(
                "ringlink: invalid LINKERD2_PROXY_LOG={:?}: {error}",
                config.log_filter
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(&config, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            tracing::error!(message = %fatal.message, "Fatal");
            eprintln!("ringlink: {}", fatal.message);
            ExitCode::from(fatal.code)
        }
    }
}

fn run(config: &Config, log: logging::LogHandle) -> Result<(), Fatal> {
    let driver = rt::probe(config.runtime).map_err(|message| Fatal {
        code: EXIT_UNAVAILABLE,
        message,
    })?;
    match sys::raise_nofile_limit() {
        Ok(limit) => tracing::debug!(limit, "Open file limit"),
        Err(error) => tracing::warn!(%error, "Could not raise the open file limit"),
    }
    let cpus = allowed_cpus();
    let shards = config.cores.resolve(cpus.len());
    let cpus = &cpus[..shards];

    let bound = bind(config, shards)?;
    let listening: Vec<(Direction, SocketAddr)> = bound
        .iter()
        .filter_map(|(direction, listeners)| Some((*direction, listeners[0].local_addr().ok()?)))
        .collect();
    let mut settings = Settings::from(config);
    settings.own_addrs = listening.iter().map(|(_, addr)| *addr).collect();
    let settings = Arc::new(settings);
    let (registries, shard_metrics) = registries(shards)?;
    let (dns_tx, dns_requests) = ringlink_control::dns::channel();
    let (dst_tx, dst_requests) = ringlink_control::dst::channel();
    let default_policy = default_policy(config);
    let (policy_tx, policy_setup) = match &config.policy {
        Some(policy) => {
            let (tx, requests) = ringlink_control::policy::watch::channel();
            let setup = PolicySetup {
                requests,
                addr: policy.addr.clone(),
                workload: policy.workload.raw.clone(),
                limits: StreamLimits {
                    connect_timeout: config
                        .control_stream
                        .initial_timeout
                        .unwrap_or(POLICY_CONNECT_TIMEOUT),
                    lifetime: config.control_stream.lifetime,
                    initial_timeout: config.control_stream.initial_timeout,
                    idle_timeout: config.control_stream.idle_timeout,
                },
                detect_timeout: config.inbound_detect_timeout,
                default: default_policy.clone(),
                pinned: config
                    .policy_watch_ports()
                    .ranges()
                    .flatten()
                    .take(MAX_PINNED_POLICY_PORTS)
                    .collect(),
            };
            (Some(tx), Some(setup))
        }
        None => (None, None),
    };
    let admin_addr = config.admin_listen_addr;
    let admin_listener = std::net::TcpListener::bind(admin_addr).map_err(|error| Fatal {
        code: EXIT_OSERR,
        message: format!("cannot listen on {admin_addr} (admin): {error}"),
    })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(admin_addr);
    let ready = Arc::new(AtomicBool::new(false));
    // With identity, the proxy is ready once it holds its first certificate.
    let (certified_tx, _certified) = tokio::sync::watch::channel(None);
    let (mesh_tx, mesh_rx) = tokio::sync::watch::channel(None);
    let identity_metrics = Arc::new(IdentityMetrics::default());
    let mut exposition = Exposition::new(registries, env!("CARGO_PKG_VERSION"));
    if config.identity.is_some() {
        let metrics = identity_metrics.clone();
        exposition = exposition.with_section(Box::new(move || metrics.render()));
    }
    let (tap, taps) = tap_server(config, &mesh_tx)?;
    if let Some(tap) = &tap {
        let metrics = tap.metrics.clone();
        exposition = exposition.with_section(Box::new(move || metrics.render()));
    }
    let identity = config.identity.clone().map(|config| IdentitySetup {
        config,
        publish: certified_tx,
        mesh: mesh_tx,
        ready: ready.clone(),
        metrics: identity_metrics,
    });
    let control = ControlThread::spawn(
        AdminSetup {
            listener: admin_listener,
            ready: ready.clone(),
            log_level: Box::new(log),
            env: proxy_env(),
            shutdown_enabled: config.shutdown_endpoint_enabled,
            metrics: exposition,
        },
        DnsSetup {
            requests: dns_requests,
            ttl: ringlink_control::dns::DnsTtl {
                min: config.dns_min_ttl,
                max: config.dns_max_ttl,
            },
            nameservers: config.dns_nameservers.clone(),
            dst_requests,
            destination: config.destination.clone(),
            suffixes: config.profile_suffixes.clone(),
            policy: policy_setup,
        },
        identity,
        tap,
    )
    .map_err(|error| Fatal {
        code: EXIT_OSERR,
        message: format!("cannot start the control thread: {error}"),
    })?;

    // Hand shard i its i-th listener of every address.
    let mut per_shard: Vec<Vec<(Direction, std::net::TcpListener)>> =
        (0..shards).map(|_| Vec::new()).collect();
    for (direction, listeners) in bound {
        for (shard, listener) in listeners.into_iter().enumerate() {
            per_shard[shard].push((direction, listener));
        }
    }
    let mut handles = Vec::with_capacity(shards);
    let seeds = per_shard.into_iter().zip(cpus).zip(shard_metrics);
    for (index, ((listeners, cpu), (tcp, http, balancer))) in seeds.enumerate() {
        let seed = ShardSeed {
            index,
            settings: settings.clone(),
            listeners,
            phase: control.phase(),
            tcp,
            http,
            dns: dns_tx.clone(),
            dst: dst_tx.clone(),
            balancer,
            identity: config
                .identity
                .as_ref()
                .map(|identity| (identity.local_name.clone(), mesh_rx.clone())),
            policies: (policy_tx.clone(), default_policy.clone()),
            taps: taps.clone(),
        };
        let handle = rt::spawn_shard(config.runtime, ShardSpec { index, cpu: *cpu }, seed)
            .map_err(|error| Fatal {
                code: EXIT_OSERR,
                message: format!("cannot start shard {index}: {error}"),
            })?;
        handles.push(handle);
    }
    tracing::info!(
        runtime = config.runtime.name(),
        driver,
        shards,
        cpus = ?cpus,
        "Started"
    );
    log_startup(config, &listening, admin_addr);
    if config.identity.is_none() {
        ready.store(true, Ordering::Release);
    }
    wait(config, handles)
}

/// The tap server's setup and the shards' view of its taps, when tap is enabled:
/// `LINKERD2_PROXY_TAP_SVC_NAME` set and identity configured (as linkerd2-proxy, which
/// disables tap without identity).
fn tap_server(
    config: &Config,
    mesh: &tokio::sync::watch::Sender<Option<Arc<ringlink_protocols::tls::MeshTls>>>,
) -> Result<(Option<TapServerSetup>, Option<TapsRx>), Fatal> {
    let Some(permitted) = config.tap_svc_name.clone() else {
        return Ok((None, None));
    };
    if config.identity.is_none() {
        tracing::warn!(
            "LINKERD2_PROXY_TAP_SVC_NAME is set but identity is not configured; tap is disabled"
        );
        return Ok((None, None));
    }
    let addr = config.control_listen_addr;
    let listener = std::net::TcpListener::bind(addr).map_err(|error| Fatal {
        code: EXIT_OSERR,
        message: format!("cannot listen on {addr} (tap): {error}"),
    })?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, client = %permitted, "Tap server listening");
    }
    let (publish, taps) = tokio::sync::watch::channel(Arc::new(TapSet::default()));
    let setup = TapServerSetup {
        listener,
        permitted,
        tls: mesh.subscribe(),
        publish,
        metrics: Arc::new(TapMetrics::default()),
    };
    Ok((Some(setup), Some(taps)))
}

/// Binds every listener, one socket per shard for each address.
fn bind(
    config: &Config,
    shards: usize,
) -> Result<Vec<(Direction, Vec<std::net::TcpListener>)>, Fatal> {
    let binds = config
        .outbound_listen_addrs
        .iter()
        .map(|addr| (Direction::Outbound, *addr))
        .chain([(Direction::Inbound, config.inbound_listen_addr)]);
    binds
        .map(|(direction, addr)| {
            listen::bind_shards(addr, shards, config.listen_backlog)
                .map(|listeners| (direction, listeners))
                .map_err(|error| Fatal {
                    code: EXIT_OSERR,
                    message: format!("cannot listen on {addr} ({direction}): {error}"),
                })
        })
        .collect()
}

/// Each shard's registry, and the metric families registered in it.
#[allow(clippy::type_complexity)]
fn registries(
    shards: usize,
) -> Result<
    (
        Vec<prometheus::Registry>,
        Vec<(TcpMetrics, HttpFamilies, BalancerFamilies)>,
    ),
    Fatal,
> {
    let metrics_error = |error: prometheus::Error| Fatal {
        code: EXIT_SOFTWARE,
        message: format!("cannot register metrics: {error}"),
    };
    let mut registries = Vec::with_capacity(shards);
    let mut families = Vec::with_capacity(shards);
    for index in 0..shards {
        let (registry, tcp) = TcpMetrics::for_shard(index).map_err(metrics_error)?;
        let http = HttpFamilies::register(&registry).map_err(metrics_error)?;
        let balancer = BalancerFamilies::register(&registry).map_err(metrics_error)?;
        registries.push(registry);
        families.push((tcp, http, balancer));
    }
    Ok((registries, families))
}

fn log_startup(config: &Config, listening: &[(Direction, SocketAddr)], admin: SocketAddr) {
    for (direction, addr) in listening {
        tracing::info!(%direction, %addr, "Listening");
    }
    tracing::info!(addr = %admin, "Admin server listening");
    if config.orig_dst_override.is_some() {
        tracing::info!(
            orig_dst = ?config.orig_dst_override,
            "Every connection is forwarded to RINGLINK_ORIG_DST_OVERRIDE"
        );
    }
    match &config.identity {
        None => tracing::info!(
            tls = "disabled",
            "Identity is not configured; proxying in plaintext"
        ),
        Some(identity) => tracing::info!(
            name = %identity.local_name,
            addr = %identity.svc_addr,
            "Identity configured; ready once certified"
        ),
    }
    if !config.metrics_recording {
        tracing::info!("RINGLINK_METRICS_RECORDING=off: TCP and HTTP metrics are not recorded");
    }
}

/// Waits for the shards, nudging them if their runtime needs it. Handles are joined only
/// once every shard has finished, so a nudged thread id is always valid.
fn wait(config: &Config, handles: Vec<rt::ShardHandle>) -> Result<(), Fatal> {
    let nudge = rt::nudge_interval(config.runtime).map_err(|error| Fatal {
        code: EXIT_OSERR,
        message: format!("cannot install the shard wake-up handler: {error}"),
    })?;
    while !handles.iter().all(rt::ShardHandle::is_finished) {
        std::thread::sleep(nudge.unwrap_or(SHARD_EXIT_POLL));
        if nudge.is_some() {
            handles
                .iter()
                .filter(|h| !h.is_finished())
                .for_each(rt::ShardHandle::nudge);
        }
    }
    let mut panicked = 0;
    for handle in handles {
        if handle.join().is_err() {
            panicked += 1;
        }
    }
    if panicked > 0 {
        return Err(Fatal {
            code: EXIT_SOFTWARE,
            message: format!("{panicked} shard(s) panicked"),
        });
    }
    tracing::info!("Shutdown complete");
    Ok(())
}

/// The proxy's own settings from the environment, for `/env.json`.
fn proxy_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("LINKERD2_PROXY_") || k.starts_with("RINGLINK_"))
        .collect();
    env.sort();
    env
}

/// The CPUs this process may run on (its affinity mask, which a cgroup cpuset narrows), in
/// ascending order.
fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    cpus.sort_unstable();
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// How long connecting to the policy controller may take when
/// `LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT` does not say.
const POLICY_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// At most this many ports of `LINKERD2_PROXY_INBOUND_PORTS` are watched from startup (a
/// range like `1-65535` must not open 65,535 streams); the others are watched when used.
const MAX_PINNED_POLICY_PORTS: usize = 1024;

/// Each port's policy before (or without) the policy controller's:
/// `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY` (all-unauthenticated without a control plane),
/// opaque for the ports that disable protocol detection.
fn default_policy(config: &Config) -> crate::policy::DefaultPolicy {
    let (builtin, networks) = match &config.policy {
        Some(policy) => (
            BuiltinPolicy::from(policy.default_policy),
            defaults::cluster_networks(&policy.cluster_networks),
        ),
        None => (BuiltinPolicy::AllUnauthenticated, Vec::new()),
    };
    let detect = Arc::new(builtin.policy(config.inbound_detect_timeout, &networks));
    let opaque = Arc::new(detect.opaque());
    let opaque_ports = config.inbound_opaque_ports.clone();
    Arc::new(move |port| {
        if opaque_ports.contains(port) {
            opaque.clone()
        } else {
            detect.clone()
        }
    })
}
