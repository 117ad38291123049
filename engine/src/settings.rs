//! The settings every shard reads: built once at startup from the [`Config`], shared
//! read-only (`Arc`) by all shards. Per-direction values are [`PerDirection`]s, picked with
//! `.get(direction)`, never by a hand-written match.

use std::net::SocketAddr;
use std::time::Duration;

use ringlink_control::config::Cidr;
use ringlink_control::Config;

use crate::conn::PerDirection;

// === types ===

#[derive(Debug)]
pub struct Settings {
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_CONNECT_TIMEOUT`.
    pub connect_timeout: PerDirection<Duration>,
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_DETECT_TIMEOUT`.
    pub detect_timeout: PerDirection<Duration>,
    pub shutdown_grace_period: Duration,
    /// The addresses the proxy's listeners are bound to, for loop detection (set once they
    /// are bound).
    pub own_addrs: Vec<SocketAddr>,
    pub orig_dst_override: Option<SocketAddr>,
    /// How long an unused metric series is kept.
    pub metrics_retain_idle: Duration,
    /// Whether TCP and HTTP metrics are recorded (`RINGLINK_METRICS_RECORDING`).
    pub metrics_recording: bool,
    /// Whether opaque TCP between plaintext sockets is spliced (`RINGLINK_L4_SPLICE`).
    pub l4_splice: bool,
    /// HTTP/2 client connections are pinged this often (zero: never).
    pub h2_keepalive_interval: PerDirection<Duration>,
    /// An unanswered ping closes the connection after this long.
    pub h2_keepalive_timeout: PerDirection<Duration>,
    /// Idle upstream HTTP/1 connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// At most this many idle upstream HTTP/1 connections per endpoint.
    pub max_idle_conns_per_endpoint: usize,
    /// What the shard's destinations need.
    pub discovery: DiscoverySettings,
    /// TCP options of accepted (`accept`) and connected (`connect`) sockets.
    pub sockets: SocketSettings,
    /// `LINKERD2_PROXY_INBOUND_IPS`: the pod's addresses, the only original destinations
    /// inbound connections may have (empty: any).
    pub inbound_ips: Vec<std::net::IpAddr>,
}

/// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_{ACCEPT,CONNECT}_{KEEPALIVE,USER_TIMEOUT}`: TCP
/// keepalive (the idle time before the first probe) and `TCP_USER_TIMEOUT`, per direction;
/// `None` leaves the kernel's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketSettings {
    pub accept_keepalive: PerDirection<Option<Duration>>,
    pub accept_user_timeout: PerDirection<Option<Duration>>,
    pub connect_keepalive: PerDirection<Option<Duration>>,
    pub connect_user_timeout: PerDirection<Option<Duration>>,
}

/// The settings of a shard's destinations ([`crate::discover::Dsts`]).
#[derive(Clone, Debug)]
pub struct DiscoverySettings {
    /// Whether a Destination service is configured (names under `profile_suffixes` in
    /// redirected HTTP traffic are then balanced over its endpoints).
    pub destination: bool,
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES`.
    pub profile_suffixes: Vec<String>,
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS`.
    pub profile_networks: Vec<Cidr>,
    /// Requests that may wait for an endpoint per balancer.
    pub queue_capacity: PerDirection<usize>,
    /// How long a request waits for an endpoint before 504 and failfast.
    pub failfast_timeout: PerDirection<Duration>,
    /// A destination unused this long is dropped.
    pub idle_timeout: PerDirection<Duration>,
}

// === impl Settings ===

impl From<&Config> for Settings {
    /// Everything but `own_addrs`, which are known once the listeners are bound.
    fn from(config: &Config) -> Self {
        Settings {
            connect_timeout: PerDirection {
                inbound: config.inbound_connect_timeout,
                outbound: config.outbound_connect_timeout,
            },
            detect_timeout: PerDirection {
                inbound: config.inbound_detect_timeout,
                outbound: config.outbound_detect_timeout,
            },
            shutdown_grace_period: config.shutdown_grace_period,
            own_addrs: Vec::new(),
            orig_dst_override: config.orig_dst_override,
            metrics_retain_idle: config.metrics_retain_idle,
            metrics_recording: config.metrics_recording,
            l4_splice: config.l4_splice,
            h2_keepalive_interval: config.h2_keepalive_interval.into(),
            h2_keepalive_timeout: config.h2_keepalive_timeout.into(),
            pool_idle_timeout: config.pool_idle_timeout,
            max_idle_conns_per_endpoint: config.max_idle_conns_per_endpoint,
            discovery: DiscoverySettings {
                destination: config.destination.is_some(),
                profile_suffixes: config.profile_suffixes.clone(),
                profile_networks: config.profile_networks.clone(),
                queue_capacity: config.http_queue_capacity.into(),
                failfast_timeout: config.http_failfast_timeout.into(),
                idle_timeout: config.discovery_idle_timeout.into(),
            },
            inbound_ips: config.inbound_ips.clone(),
            sockets: SocketSettings {
                accept_keepalive: config.accept_keepalive.into(),
                accept_user_timeout: config.accept_user_timeout.into(),
                connect_keepalive: config.connect_keepalive.into(),
                connect_user_timeout: config.connect_user_timeout.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Direction;

    #[test]
    fn per_direction_values_come_from_the_config_arrays() {
        let config = Config {
            http_queue_capacity: [7, 9],
            inbound_connect_timeout: Duration::from_millis(300),
            outbound_connect_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let settings = Settings::from(&config);
        assert_eq!(settings.discovery.queue_capacity.get(Direction::Inbound), 7);
        assert_eq!(
            settings.discovery.queue_capacity.get(Direction::Outbound),
            9
        );
        assert_eq!(
            settings.connect_timeout.get(Direction::Inbound),
            Duration::from_millis(300)
        );
        assert_eq!(
            settings.connect_timeout.get(Direction::Outbound),
            Duration::from_secs(1)
        );
    }
}
