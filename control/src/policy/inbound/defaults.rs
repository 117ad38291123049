//! The built-in inbound policies (`linkerd/app/inbound/src/policy/defaults.rs`), used for
//! ports until (or instead of) the control plane describes them.

use super::{Authentication, Authorization, HttpRoute, Meta, Protocol, ServerPolicy, Suffix};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::{fmt, sync::Arc, time::Duration};

/// A built-in policy: the model behind `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`.
///
/// The environment value itself is parsed and validated by [`crate::config::DefaultPolicy`]
/// (with linkerd2-proxy's rule that only `deny` and `all-*` are accepted without cluster
/// networks); it maps onto this type with `From`. This type adds the internal
/// `all-tls-unauthenticated`, and builds the [`ServerPolicy`] of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinPolicy {
    /// `all-unauthenticated`: any client from anywhere (linkerd2-proxy's default when
    /// `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY` is unset).
    AllUnauthenticated,
    /// `all-authenticated`: any mesh-TLS client identity, from anywhere.
    AllAuthenticated,
    /// `cluster-unauthenticated`: any client from the cluster networks.
    ClusterUnauthenticated,
    /// `cluster-authenticated`: any mesh-TLS client identity from the cluster networks.
    ClusterAuthenticated,
    /// `audit`: any client from anywhere, each use logged "Request allowed".
    Audit,
    /// `deny`: no one (opaque, no authorization).
    Deny,
    /// `all-tls-unauthenticated`: any mesh-TLS client, identity or not, from anywhere. Built
    /// in, but not accepted from the environment.
    AllTlsUnauthenticated,
}

impl BuiltinPolicy {
    /// Every variant.
    pub const ALL: [Self; 7] = [
        Self::AllUnauthenticated,
        Self::AllAuthenticated,
        Self::ClusterUnauthenticated,
        Self::ClusterAuthenticated,
        Self::Audit,
        Self::Deny,
        Self::AllTlsUnauthenticated,
    ];

    /// The policy's name (also its meta's name).
    pub fn name(&self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::ClusterUnauthenticated => "cluster-unauthenticated",
            Self::ClusterAuthenticated => "cluster-authenticated",
            Self::Audit => "audit",
            Self::Deny => "deny",
            Self::AllTlsUnauthenticated => "all-tls-unauthenticated",
        }
    }

    /// The policy: one authorization named after it, in `Detect{detect_timeout}` with a
    /// catch-all HTTP route carrying that authorization; `deny` is `Opaque` with no
    /// authorization (`From<DefaultPolicy> for ServerPolicy` in
    /// `linkerd/app/inbound/src/policy.rs`). `cluster_networks`
    /// (`LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS`, see [`cluster_networks`]) is used by the
    /// `cluster-*` policies only.
    pub fn policy(&self, detect_timeout: Duration, cluster_networks: &[IpNet]) -> ServerPolicy {
        match self {
            Self::AllUnauthenticated => all_unauthenticated(detect_timeout),
            Self::AllAuthenticated => all_authenticated(detect_timeout),
            Self::ClusterUnauthenticated => {
                cluster_unauthenticated(cluster_networks.iter().copied(), detect_timeout)
            }
            Self::ClusterAuthenticated => {
                cluster_authenticated(cluster_networks.iter().copied(), detect_timeout)
            }
            Self::Audit => audit(detect_timeout),
            Self::Deny => deny(),
            Self::AllTlsUnauthenticated => all_mtls_unauthenticated(detect_timeout),
        }
    }

    /// The policy of ports in `LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`: the
    /// same authorization, `Opaque` (`Store::make_opaque` in
    /// `linkerd/app/inbound/src/policy/store.rs`).
    pub fn opaque_policy(
        &self,
        detect_timeout: Duration,
        cluster_networks: &[IpNet],
    ) -> ServerPolicy {
        self.policy(detect_timeout, cluster_networks).opaque()
    }
}

impl From<crate::config::DefaultPolicy> for BuiltinPolicy {
    fn from(p: crate::config::DefaultPolicy) -> Self {
        use crate::config::DefaultPolicy as Env;
        match p {
            Env::AllUnauthenticated => Self::AllUnauthenticated,
            Env::AllAuthenticated => Self::AllAuthenticated,
            Env::ClusterUnauthenticated => Self::ClusterUnauthenticated,
            Env::ClusterAuthenticated => Self::ClusterAuthenticated,
            Env::Deny => Self::Deny,
            Env::Audit => Self::Audit,
        }
    }
}

impl fmt::Display for BuiltinPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The configuration's CIDRs (`LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS`) as networks; a CIDR
/// whose prefix is too long for its address family is left out.
pub fn cluster_networks(cidrs: &[crate::config::Cidr]) -> Vec<IpNet> {
    cidrs
        .iter()
        .filter_map(|c| IpNet::new(c.addr, c.prefix).ok())
        .collect()
}

/// `all-authenticated`.
pub fn all_authenticated(timeout: Duration) -> ServerPolicy {
    mk("all-authenticated", all_nets(), authenticated(), timeout)
}

/// `all-unauthenticated`.
pub fn all_unauthenticated(timeout: Duration) -> ServerPolicy {
    mk(
        "all-unauthenticated",
        all_nets(),
        Authentication::Unauthenticated,
        timeout,
    )
}

/// `cluster-authenticated` over `nets`.
pub fn cluster_authenticated(
    nets: impl IntoIterator<Item = IpNet>,
    timeout: Duration,
) -> ServerPolicy {
    mk("cluster-authenticated", nets, authenticated(), timeout)
}

/// `cluster-unauthenticated` over `nets`.
pub fn cluster_unauthenticated(
    nets: impl IntoIterator<Item = IpNet>,
    timeout: Duration,
) -> ServerPolicy {
    mk(
        "cluster-unauthenticated",
        nets,
        Authentication::Unauthenticated,
        timeout,
    )
}

/// `audit`: as `all-unauthenticated`, but named `audit` so that its permits are logged.
pub fn audit(timeout: Duration) -> ServerPolicy {
    mk(
        "audit",
        all_nets(),
        Authentication::Unauthenticated,
        timeout,
    )
}

/// `all-tls-unauthenticated`.
pub fn all_mtls_unauthenticated(timeout: Duration) -> ServerPolicy {
    mk(
        "all-tls-unauthenticated",
        all_nets(),
        Authentication::TlsUnauthenticated,
        timeout,
    )
}

/// `deny`: opaque, with no authorization.
pub fn deny() -> ServerPolicy {
    ServerPolicy {
        meta: Meta::new_default("deny"),
        protocol: Protocol::Opaque(Arc::new([])),
        local_rate_limit: Default::default(),
    }
}

fn all_nets() -> [IpNet; 2] {
    [Ipv4Net::default().into(), Ipv6Net::default().into()]
}

/// Any client identity: no names, and the empty suffix.
fn authenticated() -> Authentication {
    Authentication::TlsAuthenticated {
        identities: Default::default(),
        suffixes: vec![Suffix::from(vec![])],
    }
}

fn mk(
    name: &'static str,
    nets: impl IntoIterator<Item = IpNet>,
    authentication: Authentication,
    timeout: Duration,
) -> ServerPolicy {
    let authorizations: Arc<[Authorization]> = Arc::new([Authorization {
        networks: nets.into_iter().map(Into::into).collect(),
        authentication,
        meta: Meta::new_default(name),
    }]);
    ServerPolicy {
        meta: Meta::new_default(name),
        protocol: Protocol::Detect {
            timeout,
            http: Arc::new([HttpRoute::catch_all(authorizations.clone())]),
            tcp_authorizations: authorizations,
        },
        local_rate_limit: Default::default(),
    }
}
