//! Typed proxy configuration, read from the environment.
//!
//! A Linkerd injector configures the proxy with environment variables only, so ringlink reads
//! the same names, with the same defaults and the same value syntax (DESIGN.md §1), plus a few
//! `RINGLINK_*` variables of its own. All reads go through the [`Env`] seam: [`SystemEnv`] in
//! the binary, a `HashMap` in tests.
//!
//! Parsing is strict and pure: a variable that is set but invalid (or empty) is a
//! [`ConfigError`] naming it, and the first such variable, in the order of [`Config`]'s fields,
//! is the one reported. `main` prints it on one line and exits with code 64.
//!
//! The groups with rules of their own live in submodules: `identity` (all or nothing),
//! `policy` (the policy controller, required once the proxy is meshed, and the inbound
//! default policy), `control` (control-plane stream limits), `connect` (connect backoff,
//! socket options, in-flight limits), `http2` (HTTP/2 server settings) and `telemetry`
//! (access log, trace collector, tap).
//!
//! Every variable a current Linkerd injector writes (L `charts/partials/templates/_proxy.tpl`,
//! plus the viz tap injector's `LINKERD2_PROXY_TAP_SVC_NAME`) is either read here or listed in
//! [`IGNORED_VARS`]: written, but read by linkerd2-proxy neither, so accepted with any value.

use std::{
    collections::HashMap,
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    ops::RangeInclusive,
    str::FromStr,
    time::Duration,
};

mod connect;
mod control;
mod http2;
mod identity;
#[cfg(test)]
mod injected_tests;
mod policy;
mod telemetry;
#[cfg(test)]
mod tests;

pub use connect::Backoff;
pub use control::ControlStreamLimits;
pub use http2::{H2FlowControl, H2ServerSettings};
pub use identity::{is_dns_like_name, is_loopback_host_port, IdentityConfig};
pub use policy::{DefaultPolicy, PolicyConfig, Workload, WorkloadKind};
pub use telemetry::{AccessLogFormat, TraceCollectorConfig};

use connect::{
    ACCEPT_KEEPALIVE, ACCEPT_USER_TIMEOUT, CONNECT_KEEPALIVE, CONNECT_USER_TIMEOUT,
    DEFAULT_CONNECT_BACKOFF, DEFAULT_MAX_IN_FLIGHT, MAX_IN_FLIGHT,
};
use telemetry::{ACCESS_LOG, TAP_SVC_NAME};

/// Variables a Linkerd injector writes (or wrote, back to 2.14) that linkerd2-proxy no longer
/// reads: ringlink accepts them with any value and ignores them.
/// - `_INBOUND_PORTS_REQUIRE_IDENTITY` / `_REQUIRE_TLS`: the constants are still defined in
///   linkerd2-proxy's `env.rs` but never read; inbound policy replaced them.
/// - `_TRACE_PROTOCOL` and `_TRACE_ANNOTATIONS_PATH`: written with tracing on, not read
///   (OpenTelemetry is the only protocol; only the labels file is read).
/// - The injector's helper variables, referenced as `$(..)` in other values: `_pod_name`,
///   `_pod_ns`, `_pod_uid`, `_pod_ip`, `_pod_nodeName`, `_pod_containerName`, `_pod_sa`,
///   `_l5d_ns`, `_l5d_trustdomain`.
pub const IGNORED_VARS: &[&str] = &[
    "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY",
    "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS",
    "LINKERD2_PROXY_TRACE_PROTOCOL",
    "LINKERD2_PROXY_TRACE_ANNOTATIONS_PATH",
    "_pod_name",
    "_pod_ns",
    "_pod_uid",
    "_pod_ip",
    "_pod_nodeName",
    "_pod_containerName",
    "_pod_sa",
    "_l5d_ns",
    "_l5d_trustdomain",
];

// Variable names, in the order `Config::from_env` reads them.
const OUTBOUND_LISTEN_ADDRS: &str = "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS";
const OUTBOUND_LISTEN_ADDR: &str = "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR";
const INBOUND_LISTEN_ADDR: &str = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR";
const ADMIN_LISTEN_ADDR: &str = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR";
const CONTROL_LISTEN_ADDR: &str = "LINKERD2_PROXY_CONTROL_LISTEN_ADDR";
const CORES: &str = "LINKERD2_PROXY_CORES";
const CORES_MIN: &str = "LINKERD2_PROXY_CORES_MIN";
const CORES_MAX: &str = "LINKERD2_PROXY_CORES_MAX";
const CORES_MAX_RATIO: &str = "LINKERD2_PROXY_CORES_MAX_RATIO";
const INBOUND_CONNECT_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT";
const OUTBOUND_CONNECT_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT";
const INBOUND_DETECT_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT";
const OUTBOUND_DETECT_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT";
const INBOUND_OPAQUE_PORTS: &str = "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION";
const SHUTDOWN_GRACE_PERIOD: &str = "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD";
const METRICS_RETAIN_IDLE: &str = "LINKERD2_PROXY_METRICS_RETAIN_IDLE";
const SHUTDOWN_ENDPOINT_ENABLED: &str = "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED";
const INBOUND_H2_KEEPALIVE_INTERVAL: &str =
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL";
const INBOUND_H2_KEEPALIVE_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT";
const OUTBOUND_H2_KEEPALIVE_INTERVAL: &str =
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL";
const OUTBOUND_H2_KEEPALIVE_TIMEOUT: &str =
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT";
const DNS_MIN_TTL: &str = "LINKERD2_PROXY_DNS_MIN_TTL";
const DNS_MAX_TTL: &str = "LINKERD2_PROXY_DNS_MAX_TTL";
const POOL_IDLE_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT";
const MAX_IDLE_CONNS_PER_ENDPOINT: &str = "LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT";
const LOG: &str = "LINKERD2_PROXY_LOG";
const LOG_FORMAT: &str = "LINKERD2_PROXY_LOG_FORMAT";
const RUNTIME: &str = "RINGLINK_RUNTIME";
const LISTEN_BACKLOG: &str = "RINGLINK_LISTEN_BACKLOG";
const ORIG_DST_OVERRIDE: &str = "RINGLINK_ORIG_DST_OVERRIDE";
const METRICS_RECORDING: &str = "RINGLINK_METRICS_RECORDING";
const L4_SPLICE: &str = "RINGLINK_L4_SPLICE";
const DESTINATION_SVC_ADDR: &str = "LINKERD2_PROXY_DESTINATION_SVC_ADDR";
const DESTINATION_SVC_NAME: &str = "LINKERD2_PROXY_DESTINATION_SVC_NAME";
const DESTINATION_CONTEXT: &str = "LINKERD2_PROXY_DESTINATION_CONTEXT";
const PROFILE_SUFFIXES: &str = "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES";
const PROFILE_NETWORKS: &str = "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS";
const INBOUND_DISCOVERY_IDLE_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT";
const OUTBOUND_DISCOVERY_IDLE_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT";
const INBOUND_HTTP_QUEUE_CAPACITY: &str = "LINKERD2_PROXY_INBOUND_HTTP_QUEUE_CAPACITY";
const OUTBOUND_HTTP_QUEUE_CAPACITY: &str = "LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_CAPACITY";
const INBOUND_HTTP_FAILFAST_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_HTTP_FAILFAST_TIMEOUT";
const OUTBOUND_HTTP_FAILFAST_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT";
const DNS_NAMESERVERS: &str = "RINGLINK_DNS_NAMESERVERS";
// (then the socket, backoff, in-flight and HTTP/2 variables of `connect` and `http2`)
const INBOUND_IPS: &str = "LINKERD2_PROXY_INBOUND_IPS";
const INBOUND_GATEWAY_SUFFIXES: &str = "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES";
const INGRESS_MODE: &str = "LINKERD2_PROXY_INGRESS_MODE";
const OUTBOUND_DISABLE_INFORMATIONAL_HEADERS: &str =
    "LINKERD2_PROXY_OUTBOUND_DISABLE_INFORMATIONAL_HEADERS";
const OUTBOUND_METRICS_HOSTNAME_LABELS: &str = "LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS";
// (then the access log, tap and trace variables of `telemetry`, the stream limits of
// `control`, the identity variables and the policy variables)

// Defaults, as in linkerd2-proxy.
const DEFAULT_OUTBOUND_LISTEN_ADDR: SocketAddr = v4([127, 0, 0, 1], 4140);
const DEFAULT_INBOUND_LISTEN_ADDR: SocketAddr = v4([0, 0, 0, 0], 4143);
const DEFAULT_ADMIN_LISTEN_ADDR: SocketAddr = v4([127, 0, 0, 1], 4191);
const DEFAULT_CONTROL_LISTEN_ADDR: SocketAddr = v4([0, 0, 0, 0], 4190);
const DEFAULT_INBOUND_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const DEFAULT_OUTBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_INBOUND_DETECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_OUTBOUND_DETECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(2 * 60);
const DEFAULT_METRICS_RETAIN_IDLE: Duration = Duration::from_secs(10 * 60);
const DEFAULT_H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_DNS_MIN_TTL: Duration = Duration::from_secs(1);
const DEFAULT_DNS_MAX_TTL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_MAX_IDLE_CONNS_PER_ENDPOINT: usize = 100;
const DEFAULT_LOG_FILTER: &str = "warn,ringlink=info,ringlink_engine=info,ringlink_control=info";
const DEFAULT_LISTEN_BACKLOG: u32 = 1024;
const DEFAULT_PROFILE_SUFFIXES: &str = "svc.cluster.local.";
const DEFAULT_INBOUND_DISCOVERY_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const DEFAULT_OUTBOUND_DISCOVERY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_HTTP_QUEUE_CAPACITY: usize = 10_000;
const DEFAULT_INBOUND_HTTP_FAILFAST_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_OUTBOUND_HTTP_FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);

const EXPECTED_ADDR: &str = "expected IP:PORT";
const EXPECTED_DURATION: &str = "expected a duration like 10s or 500ms";

/// Where configuration values come from: the process environment, or a map in tests.
pub trait Env {
    /// The value of `name`: `Ok(None)` when unset, an error naming `name` when it is set but
    /// not valid UTF-8.
    fn var(&self, name: &'static str) -> Result<Option<String>, ConfigError>;
}

/// The process environment (`std::env::var_os`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemEnv;

/// The proxy's configuration; see [`Config::from_env`] for the variables and their defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// `LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS` (comma-separated; takes precedence) or
    /// `LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR`; default `[127.0.0.1:4140]`. Never empty.
    pub outbound_listen_addrs: Vec<SocketAddr>,
    /// `LINKERD2_PROXY_INBOUND_LISTEN_ADDR`, default `0.0.0.0:4143`.
    pub inbound_listen_addr: SocketAddr,
    /// `LINKERD2_PROXY_ADMIN_LISTEN_ADDR`, default `127.0.0.1:4191`.
    pub admin_listen_addr: SocketAddr,
    /// `LINKERD2_PROXY_CONTROL_LISTEN_ADDR` (tap), default `0.0.0.0:4190`.
    pub control_listen_addr: SocketAddr,
    /// `LINKERD2_PROXY_CORES`, `_CORES_MIN`, `_CORES_MAX`, `_CORES_MAX_RATIO`.
    pub cores: Cores,
    /// `LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT`, default 300ms.
    pub inbound_connect_timeout: Duration,
    /// `LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT`, default 1s.
    pub outbound_connect_timeout: Duration,
    /// `LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT`, default 10s.
    pub inbound_detect_timeout: Duration,
    /// `LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT`, default 10s.
    pub outbound_detect_timeout: Duration,
    /// `LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`, e.g. `25,443,4444-4450`;
    /// default (and empty value) none.
    pub inbound_opaque_ports: PortSet,
    /// `LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD`, default 2m.
    pub shutdown_grace_period: Duration,
    /// `LINKERD2_PROXY_METRICS_RETAIN_IDLE`, default 10m: series with no open connection and
    /// no activity for this long are dropped.
    pub metrics_retain_idle: Duration,
    /// `LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED` (`true`/`false`), default false.
    pub shutdown_endpoint_enabled: bool,
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_SERVER_HTTP2_KEEP_ALIVE_INTERVAL`, default 10s: an
    /// HTTP/2 client connection is pinged this often (`0` disables the pings).
    pub h2_keepalive_interval: [Duration; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT`, default 3s: a ping
    /// unanswered this long closes the connection. Both are `[inbound, outbound]`.
    pub h2_keepalive_timeout: [Duration; 2],
    /// `LINKERD2_PROXY_DNS_MIN_TTL`, default 1s: DNS answers are cached at least this long.
    pub dns_min_ttl: Duration,
    /// `LINKERD2_PROXY_DNS_MAX_TTL`, default 5m: and at most this long.
    pub dns_max_ttl: Duration,
    /// `LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT`, default 3s: idle upstream
    /// HTTP/1 connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// `LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT`, default 100 (0 disables pooling).
    pub max_idle_conns_per_endpoint: usize,
    /// `LINKERD2_PROXY_LOG`, trimmed; only non-emptiness is checked here (the engine checks
    /// the syntax with tracing's `EnvFilter`).
    pub log_filter: String,
    /// `LINKERD2_PROXY_LOG_FORMAT` (`plain`/`json`), default plain.
    pub log_format: LogFormat,
    /// `RINGLINK_RUNTIME` (`glommio`/`monoio`), default monoio.
    pub runtime: RuntimeKind,
    /// `RINGLINK_LISTEN_BACKLOG`, 1..=65535, default 1024.
    pub listen_backlog: u32,
    /// `RINGLINK_ORIG_DST_OVERRIDE`: a fixed original destination used instead of
    /// `SO_ORIGINAL_DST` (a test and development seam). Default unset.
    pub orig_dst_override: Option<SocketAddr>,
    /// `RINGLINK_METRICS_RECORDING` (`on`/`off`), default on. Off skips recording TCP and
    /// HTTP metrics on the request path (the families stay registered, with no series): a
    /// switch to measure what recording costs.
    pub metrics_recording: bool,
    /// `RINGLINK_L4_SPLICE` (`on`/`off`), default on. On: opaque TCP between two plaintext
    /// sockets moves through kernel pipes with `splice(2)` where the runtime can wait for
    /// write readiness (monoio), never through the proxy's memory. Off: always copied
    /// through buffers (to compare the two).
    pub l4_splice: bool,
    /// `LINKERD2_PROXY_DESTINATION_SVC_ADDR` (`host:port`, plaintext until identity exists),
    /// `_SVC_NAME` and `_CONTEXT`. Unset: no control plane; names are resolved with DNS.
    pub destination: Option<DestinationConfig>,
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES` (comma-separated), default
    /// `svc.cluster.local.`: names under these are resolved by the Destination service.
    /// Lowercase, each ending with `.`; `.` alone matches every name.
    pub profile_suffixes: Vec<String>,
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS` (comma-separated CIDRs), default none:
    /// original destinations in these get `GetProfile`.
    pub profile_networks: Vec<Cidr>,
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_DISCOVERY_IDLE_TIMEOUT`, default 90s / 5s: a
    /// destination no request used for this long is dropped (and its stream closed).
    pub discovery_idle_timeout: [Duration; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_HTTP_QUEUE_CAPACITY`, default 10000: requests that
    /// may wait per balancer for an endpoint to be ready; more are refused with 503.
    pub http_queue_capacity: [usize; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_HTTP_FAILFAST_TIMEOUT`, default 1s / 3s: a request
    /// that waited this long for an endpoint is answered 504 and the balancer fails fast
    /// (503) until an endpoint is ready.
    pub http_failfast_timeout: [Duration; 2],
    /// `RINGLINK_DNS_NAMESERVERS` (comma-separated `IP:PORT`, UDP then TCP): the servers
    /// DNS asks instead of `/etc/resolv.conf`'s. Default: the system's.
    pub dns_nameservers: Vec<SocketAddr>,
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_ACCEPT_KEEPALIVE`, default none: TCP keepalive
    /// (idle time before probes) on accepted connections. The injector writes `10000ms`
    /// inbound. `[inbound, outbound]`, as the following arrays.
    pub accept_keepalive: [Option<Duration>; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_ACCEPT_USER_TIMEOUT`, default none:
    /// `TCP_USER_TIMEOUT` on accepted connections. The injector writes `30s` inbound.
    pub accept_user_timeout: [Option<Duration>; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_CONNECT_KEEPALIVE`, default none: TCP keepalive on
    /// connections the proxy opens. The injector writes `10000ms` outbound.
    pub connect_keepalive: [Option<Duration>; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_CONNECT_USER_TIMEOUT`, default none:
    /// `TCP_USER_TIMEOUT` on connections the proxy opens. The injector writes `30s` outbound.
    pub connect_user_timeout: [Option<Duration>; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_CONNECT_EXP_BACKOFF_{MIN,MAX,JITTER}`, default
    /// 100ms..10s / 100ms..60s, jitter 0.1: how reconnects to an endpoint back off (see
    /// [`Backoff`] for the all-or-none rule).
    pub connect_backoff: [Backoff; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_MAX_IN_FLIGHT`, default 100000: requests without a
    /// response yet, per direction, beyond which requests wait.
    pub max_in_flight: [usize; 2],
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_SERVER_HTTP2_*` other than keepalive (see
    /// [`H2ServerSettings`]), default unset.
    pub h2_server: [H2ServerSettings; 2],
    /// `LINKERD2_PROXY_INBOUND_IPS` (comma-separated IPs; the injector passes the pod's
    /// `status.podIPs`), default none: when set, only inbound connections to one of these
    /// addresses are served. Set but empty is an error, as in linkerd2-proxy.
    pub inbound_ips: Vec<IpAddr>,
    /// `LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES` (comma-separated DNS suffixes, written only
    /// for gateways), default none: names a gateway may forward to. Non-empty also adds the
    /// inbound port to [`Config::policy_watch_ports`].
    pub inbound_gateway_suffixes: Vec<String>,
    /// `LINKERD2_PROXY_INGRESS_MODE` (`true`/`false`), default false: outbound routes by
    /// the request's authority (`linkerd.io/inject: ingress`).
    pub ingress_mode: bool,
    /// `LINKERD2_PROXY_OUTBOUND_DISABLE_INFORMATIONAL_HEADERS` (`true`/`false`), default
    /// `ingress_mode`: outbound responses carry no `l5d-proxy-*` informational headers.
    pub disable_informational_headers: bool,
    /// `LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS` (`true`/`false`), default false:
    /// outbound metrics carry the target's hostname.
    pub outbound_metrics_hostname_labels: bool,
    /// `LINKERD2_PROXY_ACCESS_LOG` (`apache`/`json`), default none: no access log.
    pub access_log: Option<AccessLogFormat>,
    /// `LINKERD2_PROXY_TAP_SVC_NAME` (a DNS-like identity, written by the viz tap
    /// injector), default none: the tap client allowed on the control listener; unset
    /// disables tap.
    pub tap_svc_name: Option<String>,
    /// `LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR` and the other `LINKERD2_PROXY_TRACE_*`
    /// (see [`TraceCollectorConfig`]), default none: no trace export.
    pub trace_collector: Option<TraceCollectorConfig>,
    /// `LINKERD2_PROXY_CONTROL_STREAM_{INITIAL_TIMEOUT,IDLE_TIMEOUT,LIFETIME}` (see
    /// [`ControlStreamLimits`]), default no limits: bounds on the Destination and policy
    /// streams (not applied to a control plane on loopback).
    pub control_stream: ControlStreamLimits,
    /// `LINKERD2_PROXY_IDENTITY_*` (see [`IdentityConfig`]): the local identity and how to
    /// get it certified. Default (none of the identity variables set, or
    /// `LINKERD2_PROXY_IDENTITY_DISABLED` set): no identity, plaintext.
    pub identity: Option<IdentityConfig>,
    /// `LINKERD2_PROXY_POLICY_*`, `_INBOUND_DEFAULT_POLICY`, `_INBOUND_PORTS` (see
    /// [`PolicyConfig`]): the policy controller and the inbound default policy. Required once
    /// Destination or identity is configured; default (no control plane): none, no policy.
    pub policy: Option<PolicyConfig>,
}

/// Where the Destination service is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationConfig {
    /// `host:port`.
    pub addr: String,
    /// Its identity (`LINKERD2_PROXY_DESTINATION_SVC_NAME`), for when mTLS exists.
    pub name: Option<String>,
    /// `LINKERD2_PROXY_DESTINATION_CONTEXT`, sent with every lookup; default empty.
    pub context: String,
}

/// An IP network, `addr/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

/// Log output format (`LINKERD2_PROXY_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Which io_uring runtime the shards run on (`RINGLINK_RUNTIME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    Glommio,
    Monoio,
}

/// How many shards to run; see [`Cores::resolve`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cores {
    /// `LINKERD2_PROXY_CORES`: exactly this many (still bounded by `min`, `max`, available).
    pub exact: Option<usize>,
    /// `LINKERD2_PROXY_CORES_MIN`.
    pub min: Option<usize>,
    /// `LINKERD2_PROXY_CORES_MAX`.
    pub max: Option<usize>,
    /// `LINKERD2_PROXY_CORES_MAX_RATIO`: this fraction of the available CPUs, in (0, 1].
    pub max_ratio: Option<f64>,
}

/// A set of ports, kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<RangeInclusive<u16>>,
}

/// A variable that is set to a value ringlink cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// The value as found (lossily decoded if it was not UTF-8).
    pub value: String,
    /// What was wrong, briefly.
    pub reason: String,
}

/// Parses a Linkerd duration: `^\s*(\d+)(ms|s|m|h|d)?\s*$`, where a bare number is accepted
/// only if it is 0. Overflow is an error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() {
        return Err(EXPECTED_DURATION.to_string());
    }
    let millis_per_unit: u64 = match unit {
        "" => 0, // a bare number: accepted only if it is 0
        "ms" => 1,
        "s" => 1_000,
        "m" => 60 * 1_000,
        "h" => 60 * 60 * 1_000,
        "d" => 24 * 60 * 60 * 1_000,
        _ => return Err(EXPECTED_DURATION.to_string()),
    };
    let too_large = || "duration too large".to_string();
    let n = parse_digits(digits).ok_or_else(too_large)?;
    if unit.is_empty() && n != 0 {
        return Err(format!("missing unit, {EXPECTED_DURATION}"));
    }
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(too_large)
}

// === impl SystemEnv ===

impl Env for SystemEnv {
    fn var(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        os_var(name, std::env::var_os(name))
    }
}

/// Decodes a raw environment value, rejecting non-UTF-8 with an error naming the variable.
fn os_var(name: &'static str, value: Option<OsString>) -> Result<Option<String>, ConfigError> {
    value
        .map(|v| {
            v.into_string().map_err(|v| ConfigError {
                var: name,
                value: v.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".to_string(),
            })
        })
        .transpose()
}

// === impl HashMap (test env) ===

impl Env for HashMap<&'static str, String> {
    fn var(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(name).cloned())
    }
}

// === impl Config ===

impl Config {
    /// Reads the configuration from `env`; unset variables take their defaults.
    ///
    /// Every variable that is set must be valid and non-empty, except where linkerd2-proxy
    /// gives the empty value a meaning: the port lists
    /// (`LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`, `_INBOUND_PORTS`), the
    /// network and suffix lists (none), `_CONTROL_STREAM_*` (unset) and the opaque trace
    /// attributes. The first variable, in field order, that is invalid or (identity,
    /// policy) missing is returned as the error.
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let outbound_listen_addrs = match read(env, OUTBOUND_LISTEN_ADDRS, parse_socket_addrs)? {
            Some(addrs) => addrs,
            None => vec![read(env, OUTBOUND_LISTEN_ADDR, parse_socket_addr)?
                .unwrap_or(DEFAULT_OUTBOUND_LISTEN_ADDR)],
        };
        let addr = |var, default| Ok(read(env, var, parse_socket_addr)?.unwrap_or(default));
        let inbound_listen_addr = addr(INBOUND_LISTEN_ADDR, DEFAULT_INBOUND_LISTEN_ADDR)?;
        let admin_listen_addr = addr(ADMIN_LISTEN_ADDR, DEFAULT_ADMIN_LISTEN_ADDR)?;
        let control_listen_addr = addr(CONTROL_LISTEN_ADDR, DEFAULT_CONTROL_LISTEN_ADDR)?;

        let cores = Cores::from_env(env)?;

        let duration = |var, default| Ok(read(env, var, parse_duration)?.unwrap_or(default));
        let inbound_connect_timeout =
            duration(INBOUND_CONNECT_TIMEOUT, DEFAULT_INBOUND_CONNECT_TIMEOUT)?;
        let outbound_connect_timeout =
            duration(OUTBOUND_CONNECT_TIMEOUT, DEFAULT_OUTBOUND_CONNECT_TIMEOUT)?;
        let inbound_detect_timeout =
            duration(INBOUND_DETECT_TIMEOUT, DEFAULT_INBOUND_DETECT_TIMEOUT)?;
        let outbound_detect_timeout =
            duration(OUTBOUND_DETECT_TIMEOUT, DEFAULT_OUTBOUND_DETECT_TIMEOUT)?;

        let inbound_opaque_ports =
            read(env, INBOUND_OPAQUE_PORTS, |s| s.parse())?.unwrap_or_default();

        let shutdown_grace_period = duration(SHUTDOWN_GRACE_PERIOD, DEFAULT_SHUTDOWN_GRACE_PERIOD)?;
        let metrics_retain_idle = duration(METRICS_RETAIN_IDLE, DEFAULT_METRICS_RETAIN_IDLE)?;
        let shutdown_endpoint_enabled =
            read(env, SHUTDOWN_ENDPOINT_ENABLED, parse_bool)?.unwrap_or(false);
        let h2_keepalive_interval = [
            duration(INBOUND_H2_KEEPALIVE_INTERVAL, DEFAULT_H2_KEEPALIVE_INTERVAL)?,
            duration(
                OUTBOUND_H2_KEEPALIVE_INTERVAL,
                DEFAULT_H2_KEEPALIVE_INTERVAL,
            )?,
        ];
        let h2_keepalive_timeout = [
            duration(INBOUND_H2_KEEPALIVE_TIMEOUT, DEFAULT_H2_KEEPALIVE_TIMEOUT)?,
            duration(OUTBOUND_H2_KEEPALIVE_TIMEOUT, DEFAULT_H2_KEEPALIVE_TIMEOUT)?,
        ];
        let dns_min_ttl = duration(DNS_MIN_TTL, DEFAULT_DNS_MIN_TTL)?;
        let dns_max_ttl = duration(DNS_MAX_TTL, DEFAULT_DNS_MAX_TTL)?;
        if dns_max_ttl < dns_min_ttl {
            return Err(ConfigError {
                var: DNS_MAX_TTL,
                value: env.var(DNS_MAX_TTL)?.unwrap_or_default(),
                reason: format!("must not be less than {DNS_MIN_TTL}"),
            });
        }
        let pool_idle_timeout = duration(POOL_IDLE_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT)?;
        let max_idle_conns_per_endpoint = read(env, MAX_IDLE_CONNS_PER_ENDPOINT, |s| {
            s.parse::<usize>()
                .map_err(|_| "expected a number of connections".to_string())
        })?
        .unwrap_or(DEFAULT_MAX_IDLE_CONNS_PER_ENDPOINT);

        let log_filter =
            read(env, LOG, parse_log_filter)?.unwrap_or_else(|| DEFAULT_LOG_FILTER.to_string());
        let log_format = read(env, LOG_FORMAT, LogFormat::parse)?.unwrap_or(LogFormat::Plain);

        let runtime = read(env, RUNTIME, RuntimeKind::parse)?.unwrap_or(RuntimeKind::Monoio);
        let listen_backlog =
            read(env, LISTEN_BACKLOG, parse_listen_backlog)?.unwrap_or(DEFAULT_LISTEN_BACKLOG);
        let orig_dst_override = read(env, ORIG_DST_OVERRIDE, parse_socket_addr)?;
        let metrics_recording = read(env, METRICS_RECORDING, parse_on_off)?.unwrap_or(true);
        let l4_splice = read(env, L4_SPLICE, parse_on_off)?.unwrap_or(true);

        let destination = match read(env, DESTINATION_SVC_ADDR, parse_host_port)? {
            None => None,
            Some(addr) => Some(DestinationConfig {
                addr,
                name: read(env, DESTINATION_SVC_NAME, |s| Ok(s.trim().to_string()))?,
                context: env.var(DESTINATION_CONTEXT)?.unwrap_or_default(),
            }),
        };
        let profile_suffixes = read(env, PROFILE_SUFFIXES, parse_suffixes)?
            .unwrap_or_else(|| vec![DEFAULT_PROFILE_SUFFIXES.to_string()]);
        let profile_networks = read(env, PROFILE_NETWORKS, parse_networks)?.unwrap_or_default();
        let discovery_idle_timeout = [
            duration(
                INBOUND_DISCOVERY_IDLE_TIMEOUT,
                DEFAULT_INBOUND_DISCOVERY_IDLE_TIMEOUT,
            )?,
            duration(
                OUTBOUND_DISCOVERY_IDLE_TIMEOUT,
                DEFAULT_OUTBOUND_DISCOVERY_IDLE_TIMEOUT,
            )?,
        ];
        let capacity = |var| {
            Ok::<_, ConfigError>(
                read(env, var, |s| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|_| "expected a number of requests".to_string())
                })?
                .unwrap_or(DEFAULT_HTTP_QUEUE_CAPACITY),
            )
        };
        let http_queue_capacity = [
            capacity(INBOUND_HTTP_QUEUE_CAPACITY)?,
            capacity(OUTBOUND_HTTP_QUEUE_CAPACITY)?,
        ];
        let http_failfast_timeout = [
            duration(
                INBOUND_HTTP_FAILFAST_TIMEOUT,
                DEFAULT_INBOUND_HTTP_FAILFAST_TIMEOUT,
            )?,
            duration(
                OUTBOUND_HTTP_FAILFAST_TIMEOUT,
                DEFAULT_OUTBOUND_HTTP_FAILFAST_TIMEOUT,
            )?,
        ];
        let dns_nameservers = read(env, DNS_NAMESERVERS, parse_socket_addrs)?.unwrap_or_default();

        let optional_durations = |vars: [&'static str; 2]| {
            Ok::<_, ConfigError>([
                read(env, vars[0], parse_duration)?,
                read(env, vars[1], parse_duration)?,
            ])
        };
        let accept_keepalive = optional_durations(ACCEPT_KEEPALIVE)?;
        let accept_user_timeout = optional_durations(ACCEPT_USER_TIMEOUT)?;
        let connect_keepalive = optional_durations(CONNECT_KEEPALIVE)?;
        let connect_user_timeout = optional_durations(CONNECT_USER_TIMEOUT)?;
        let connect_backoff = [Backoff::from_env(env, 0)?, Backoff::from_env(env, 1)?];
        let in_flight = |var| {
            Ok::<_, ConfigError>(
                read(env, var, connect::parse_max_in_flight)?.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            )
        };
        let max_in_flight = [in_flight(MAX_IN_FLIGHT[0])?, in_flight(MAX_IN_FLIGHT[1])?];
        let h2_server = [
            H2ServerSettings::from_env(env, 0)?,
            H2ServerSettings::from_env(env, 1)?,
        ];
        let inbound_ips = read(env, INBOUND_IPS, parse_ip_list)?.unwrap_or_default();
        let inbound_gateway_suffixes =
            read(env, INBOUND_GATEWAY_SUFFIXES, parse_suffixes)?.unwrap_or_default();
        let ingress_mode = read(env, INGRESS_MODE, parse_bool)?.unwrap_or(false);
        let disable_informational_headers =
            read(env, OUTBOUND_DISABLE_INFORMATIONAL_HEADERS, parse_bool)?.unwrap_or(ingress_mode);
        let outbound_metrics_hostname_labels =
            read(env, OUTBOUND_METRICS_HOSTNAME_LABELS, parse_bool)?.unwrap_or(false);
        let access_log = read(env, ACCESS_LOG, AccessLogFormat::parse)?;
        let tap_svc_name = read(env, TAP_SVC_NAME, telemetry::parse_tap_svc_name)?;
        let trace_collector = TraceCollectorConfig::from_env(env)?;
        let control_stream = ControlStreamLimits::from_env(env)?;

        let identity = IdentityConfig::from_env(env)?;
        // A meshed proxy (Destination or identity configured) needs the policy controller.
        let meshed_by = if destination.is_some() {
            Some(DESTINATION_SVC_ADDR)
        } else if identity.is_some() {
            Some(identity::IDENTITY_SVC_ADDR)
        } else {
            None
        };
        let policy = PolicyConfig::from_env(env, meshed_by)?;

        Ok(Config {
            outbound_listen_addrs,
            inbound_listen_addr,
            admin_listen_addr,
            control_listen_addr,
            cores,
            inbound_connect_timeout,
            outbound_connect_timeout,
            inbound_detect_timeout,
            outbound_detect_timeout,
            inbound_opaque_ports,
            shutdown_grace_period,
            metrics_retain_idle,
            shutdown_endpoint_enabled,
            h2_keepalive_interval,
            h2_keepalive_timeout,
            dns_min_ttl,
            dns_max_ttl,
            pool_idle_timeout,
            max_idle_conns_per_endpoint,
            log_filter,
            log_format,
            runtime,
            listen_backlog,
            orig_dst_override,
            metrics_recording,
            l4_splice,
            destination,
            profile_suffixes,
            profile_networks,
            discovery_idle_timeout,
            http_queue_capacity,
            http_failfast_timeout,
            dns_nameservers,
            accept_keepalive,
            accept_user_timeout,
            connect_keepalive,
            connect_user_timeout,
            connect_backoff,
            max_in_flight,
            h2_server,
            inbound_ips,
            inbound_gateway_suffixes,
            ingress_mode,
            disable_informational_headers,
            outbound_metrics_hostname_labels,
            access_log,
            tap_svc_name,
            trace_collector,
            control_stream,
            identity,
            policy,
        })
    }
}

/// The configuration with every variable unset.
impl Default for Config {
    fn default() -> Self {
        Config {
            outbound_listen_addrs: vec![DEFAULT_OUTBOUND_LISTEN_ADDR],
            inbound_listen_addr: DEFAULT_INBOUND_LISTEN_ADDR,
            admin_listen_addr: DEFAULT_ADMIN_LISTEN_ADDR,
            control_listen_addr: DEFAULT_CONTROL_LISTEN_ADDR,
            cores: Cores::default(),
            inbound_connect_timeout: DEFAULT_INBOUND_CONNECT_TIMEOUT,
            outbound_connect_timeout: DEFAULT_OUTBOUND_CONNECT_TIMEOUT,
            inbound_detect_timeout: DEFAULT_INBOUND_DETECT_TIMEOUT,
            outbound_detect_timeout: DEFAULT_OUTBOUND_DETECT_TIMEOUT,
            inbound_opaque_ports: PortSet::default(),
            shutdown_grace_period: DEFAULT_SHUTDOWN_GRACE_PERIOD,
            metrics_retain_idle: DEFAULT_METRICS_RETAIN_IDLE,
            shutdown_endpoint_enabled: false,
            h2_keepalive_interval: [DEFAULT_H2_KEEPALIVE_INTERVAL; 2],
            h2_keepalive_timeout: [DEFAULT_H2_KEEPALIVE_TIMEOUT; 2],
            dns_min_ttl: DEFAULT_DNS_MIN_TTL,
            dns_max_ttl: DEFAULT_DNS_MAX_TTL,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            max_idle_conns_per_endpoint: DEFAULT_MAX_IDLE_CONNS_PER_ENDPOINT,
            log_filter: DEFAULT_LOG_FILTER.to_string(),
            log_format: LogFormat::Plain,
            runtime: RuntimeKind::Monoio,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            orig_dst_override: None,
            metrics_recording: true,
            l4_splice: true,
            destination: None,
            profile_suffixes: vec![DEFAULT_PROFILE_SUFFIXES.to_string()],
            profile_networks: Vec::new(),
            discovery_idle_timeout: [
                DEFAULT_INBOUND_DISCOVERY_IDLE_TIMEOUT,
                DEFAULT_OUTBOUND_DISCOVERY_IDLE_TIMEOUT,
            ],
            http_queue_capacity: [DEFAULT_HTTP_QUEUE_CAPACITY; 2],
            http_failfast_timeout: [
                DEFAULT_INBOUND_HTTP_FAILFAST_TIMEOUT,
                DEFAULT_OUTBOUND_HTTP_FAILFAST_TIMEOUT,
            ],
            dns_nameservers: Vec::new(),
            accept_keepalive: [None; 2],
            accept_user_timeout: [None; 2],
            connect_keepalive: [None; 2],
            connect_user_timeout: [None; 2],
            connect_backoff: DEFAULT_CONNECT_BACKOFF,
            max_in_flight: [DEFAULT_MAX_IN_FLIGHT; 2],
            h2_server: [H2ServerSettings::default(); 2],
            inbound_ips: Vec::new(),
            inbound_gateway_suffixes: Vec::new(),
            ingress_mode: false,
            disable_informational_headers: false,
            outbound_metrics_hostname_labels: false,
            access_log: None,
            tap_svc_name: None,
            trace_collector: None,
            control_stream: ControlStreamLimits::default(),
            identity: None,
            policy: None,
        }
    }
}

// === impl Config (lookups) ===

impl Config {
    /// Whether `host` (a DNS name) is resolved by the Destination service.
    pub fn in_profile_suffixes(&self, host: &str) -> bool {
        name_in_suffixes(host, &self.profile_suffixes)
    }

    /// The inbound ports whose policy is watched from startup, as linkerd2-proxy does:
    /// `LINKERD2_PROXY_INBOUND_PORTS`, plus the admin port, plus the inbound port when
    /// gateway suffixes are configured. Empty when policy is off. (A port 0 listener, bound
    /// to an ephemeral port, is left out.)
    pub fn policy_watch_ports(&self) -> PortSet {
        let Some(policy) = &self.policy else {
            return PortSet::default();
        };
        let admin = self.admin_listen_addr.port();
        let inbound =
            (!self.inbound_gateway_suffixes.is_empty()).then_some(self.inbound_listen_addr.port());
        policy
            .inbound_ports
            .ranges()
            .chain(
                [Some(admin), inbound]
                    .into_iter()
                    .flatten()
                    .filter(|port| *port != 0)
                    .map(|port| port..=port),
            )
            .collect()
    }

    /// Whether an inbound connection to `ip` may be served (`LINKERD2_PROXY_INBOUND_IPS`;
    /// every address when that is unset).
    pub fn inbound_ip_allowed(&self, ip: IpAddr) -> bool {
        self.inbound_ips.is_empty() || self.inbound_ips.contains(&ip)
    }
}

/// Whether `host` ends with one of `suffixes` (each lowercase and ending with `.`; `.` matches
/// any name), on a label boundary.
pub fn name_in_suffixes(host: &str, suffixes: &[String]) -> bool {
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    suffixes.iter().any(|suffix| {
        if suffix == "." {
            return true;
        }
        let suffix = suffix.trim_end_matches('.');
        host.len() > suffix.len()
            && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            || host.eq_ignore_ascii_case(suffix)
    })
}

// === impl Cidr ===

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a network, expected ADDR/PREFIX"))?;
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length up to {max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

// === impl LogFormat ===

impl LogFormat {
    /// The value's name as written in `LINKERD2_PROXY_LOG_FORMAT`.
    pub fn name(&self) -> &'static str {
        match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            s if s.eq_ignore_ascii_case("plain") => Ok(LogFormat::Plain),
            s if s.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            _ => Err("unknown log format, expected plain or json".to_string()),
        }
    }
}

// === impl RuntimeKind ===

impl RuntimeKind {
    /// The runtime's name as written in `RINGLINK_RUNTIME`.
    pub fn name(&self) -> &'static str {
        match self {
            RuntimeKind::Glommio => "glommio",
            RuntimeKind::Monoio => "monoio",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            s if s.eq_ignore_ascii_case("glommio") => Ok(RuntimeKind::Glommio),
            s if s.eq_ignore_ascii_case("monoio") => Ok(RuntimeKind::Monoio),
            _ => Err("unknown runtime, expected glommio or monoio".to_string()),
        }
    }
}

// === impl Cores ===

impl Cores {
    /// The number of shards to run, given the number of CPUs this process may run on.
    ///
    /// `exact` if set; else `floor(available * max_ratio)` (at least 1) if set; else 1, as a
    /// sidecar takes one core unless told otherwise. Then raised to `min` and lowered to `max`
    /// when set, and finally kept within `1..=available`.
    pub fn resolve(&self, available: usize) -> usize {
        let available = available.max(1);
        let mut n = match (self.exact, self.max_ratio) {
            (Some(exact), _) => exact,
            // `as` saturates (and maps NaN to 0); the clamp below restores at least 1.
            (None, Some(ratio)) => (available as f64 * ratio).floor() as usize,
            (None, None) => 1,
        };
        if let Some(min) = self.min {
            n = n.max(min);
        }
        if let Some(max) = self.max {
            n = n.min(max);
        }
        n.clamp(1, available)
    }

    fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let cores = Cores {
            exact: read(env, CORES, parse_core_count)?,
            min: read(env, CORES_MIN, parse_core_count)?,
            max: read(env, CORES_MAX, parse_core_count)?,
            max_ratio: read(env, CORES_MAX_RATIO, parse_core_ratio)?,
        };
        if let (Some(min), Some(max)) = (cores.min, cores.max) {
            if min > max {
                return Err(ConfigError {
                    var: CORES_MIN,
                    value: min.to_string(),
                    reason: format!("greater than {CORES_MAX}={max}"),
                });
            }
        }
        Ok(cores)
    }
}

// === impl PortSet ===

impl PortSet {
    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        let i = self.ranges.partition_point(|r| *r.end() < port);
        self.ranges.get(i).is_some_and(|r| r.contains(&port))
    }

    /// Whether the set has no ports.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The set as sorted, disjoint, non-adjacent inclusive ranges.
    pub fn ranges(&self) -> impl Iterator<Item = RangeInclusive<u16>> + '_ {
        self.ranges.iter().cloned()
    }
}

/// Builds a set from ranges in any order, possibly overlapping; reversed ranges are empty.
impl FromIterator<RangeInclusive<u16>> for PortSet {
    fn from_iter<I: IntoIterator<Item = RangeInclusive<u16>>>(iter: I) -> Self {
        let mut input: Vec<_> = iter.into_iter().filter(|r| !r.is_empty()).collect();
        input.sort_by_key(|r| *r.start());
        let mut ranges: Vec<RangeInclusive<u16>> = Vec::with_capacity(input.len());
        for r in input {
            match ranges.last_mut() {
                // Overlapping or adjacent: extend the previous range.
                Some(last) if u32::from(*r.start()) <= u32::from(*last.end()) + 1 => {
                    if r.end() > last.end() {
                        *last = *last.start()..=*r.end();
                    }
                }
                _ => ranges.push(r),
            }
        }
        PortSet { ranges }
    }
}

/// Parses a comma-separated list of ports and inclusive ranges (`25,443,4444-4450`), with
/// spaces allowed around items and empty items ignored. Port 0, ports above 65535 and
/// reversed ranges are errors.
impl FromStr for PortSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let range = match item.split_once('-') {
                None => {
                    let port = parse_port(item)?;
                    port..=port
                }
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_port(lo.trim())?, parse_port(hi.trim())?);
                    if lo > hi {
                        return Err(format!("reversed port range {lo}-{hi}"));
                    }
                    lo..=hi
                }
            };
            ranges.push(range);
        }
        Ok(ranges.into_iter().collect())
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected ports like 25,443,4444-4450, got {s:?}"));
    }
    match parse_digits(s).and_then(|n| u16::try_from(n).ok()) {
        Some(port) if port != 0 => Ok(port),
        _ => Err(format!("port {s} out of range 1-65535")),
    }
}

// === parsing helpers ===

/// Reads `var` and parses it when set; a parse failure becomes a `ConfigError` naming `var`
/// and carrying the value as found.
fn read<T>(
    env: &dyn Env,
    var: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = env.var(var)? else {
        return Ok(None);
    };
    match parse(&value) {
        Ok(v) => Ok(Some(v)),
        Err(reason) => Err(ConfigError { var, value, reason }),
    }
}

/// A non-empty string of ASCII digits as a `u64`; `None` if it is not one or overflows.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        let digit = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| EXPECTED_ADDR.to_string())
}

fn parse_socket_addrs(s: &str) -> Result<Vec<SocketAddr>, String> {
    if s.trim().is_empty() {
        return Err("expected a comma-separated list of IP:PORT".to_string());
    }
    let mut addrs = Vec::new();
    for item in s.split(',') {
        let addr = parse_socket_addr(item)
            .map_err(|_| format!("expected a comma-separated list of IP:PORT, got {item:?}"))?;
        if addrs.contains(&addr) {
            return Err(format!("duplicate address {addr}"));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

fn parse_host_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT".to_string())?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("expected HOST:PORT".to_string());
    }
    Ok(s.to_string())
}

fn parse_suffixes(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|suffix| {
            if suffix.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
                return Err(format!("{suffix:?} is not a DNS suffix"));
            }
            let mut suffix = suffix.to_ascii_lowercase();
            if !suffix.ends_with('.') {
                suffix.push('.');
            }
            Ok(suffix)
        })
        .collect()
}

fn parse_networks(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::parse)
        .collect()
}

/// Comma-separated IP addresses, duplicates dropped; empty items are errors (as in
/// linkerd2-proxy, where every item must parse).
fn parse_ip_list(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut ips = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        let ip: IpAddr = item.parse().map_err(|_| {
            format!("expected a comma-separated list of IP addresses, got {item:?}")
        })?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        s if s.eq_ignore_ascii_case("true") => Ok(true),
        s if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim() {
        s if s.eq_ignore_ascii_case("on") => Ok(true),
        s if s.eq_ignore_ascii_case("off") => Ok(false),
        _ => Err("expected on or off".to_string()),
    }
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("empty log filter".to_string()),
        s => Ok(s.to_string()),
    }
}

fn parse_listen_backlog(s: &str) -> Result<u32, String> {
    match parse_digits(s.trim()) {
        Some(n @ 1..=65535) => Ok(n as u32),
        _ => Err("expected an integer from 1 to 65535".to_string()),
    }
}

fn parse_core_count(s: &str) -> Result<usize, String> {
    match parse_digits(s.trim()).and_then(|n| usize::try_from(n).ok()) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err("expected an integer of at least 1".to_string()),
    }
}

fn parse_core_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err("expected a ratio greater than 0 and at most 1".to_string()),
    }
}

const fn v4(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        port,
    ))
}
