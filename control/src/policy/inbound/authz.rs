//! Authorizations (`linkerd/proxy/server-policy/src/authz{,/network}.rs`) and the client
//! checks of `is_authorized` / `is_tls_authorized` in `linkerd/app/inbound/src/policy.rs`.

use super::Meta;
use ipnet::IpNet;
use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

/// Which clients an authorization admits: a network and the addresses carved out of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Network {
    pub net: IpNet,
    pub except: Vec<IpNet>,
}

/// One way to be admitted: a client whose address is in one of `networks` and whose TLS
/// satisfies `authentication`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Authorization {
    pub networks: Vec<Network>,
    pub authentication: Authentication,
    /// The `authz_*` labels.
    pub meta: Arc<Meta>,
}

/// What a client must prove.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Authentication {
    /// Anything, TLS or not.
    Unauthenticated,
    /// Mesh TLS, with or without a client identity.
    TlsUnauthenticated,
    /// Mesh TLS with a client identity in `identities`, or (for DNS-like identities) ending
    /// with one of `suffixes`.
    TlsAuthenticated {
        identities: BTreeSet<String>,
        suffixes: Vec<Suffix>,
    },
}

/// An identity suffix. From the API's labels `["ns", "serviceaccount", …]` it is
/// `.ns.serviceaccount.…`; from no labels it is empty, which every identity ends with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Suffix {
    ends_with: String,
}

/// The client side of a connection's TLS, as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTls<'a> {
    /// No mesh TLS: plaintext, another TLS, or a port that skips TLS detection.
    None,
    /// Mesh TLS terminated by the proxy, with the client's identity if it presented one.
    Tls { client_id: Option<&'a str> },
}

// === impl Network ===

impl Network {
    /// Whether `ip` is in the network and not in one of its exceptions.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(&ip) && !self.except.iter().any(|net| net.contains(&ip))
    }
}

impl From<IpNet> for Network {
    fn from(net: IpNet) -> Self {
        Self {
            net,
            except: vec![],
        }
    }
}

impl From<IpAddr> for Network {
    fn from(addr: IpAddr) -> Self {
        Self::from(IpNet::from(addr))
    }
}

impl std::str::FromStr for Network {
    type Err = ipnet::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(s.parse::<IpNet>()?))
    }
}

// === impl Authorization ===

impl Authorization {
    /// `is_authorized` (`linkerd/app/inbound/src/policy.rs`): the client's address is in one
    /// of the networks, and its TLS satisfies the authentication.
    #[inline]
    pub fn permits(&self, client_ip: IpAddr, tls: ClientTls<'_>) -> bool {
        self.networks.iter().any(|n| n.contains(client_ip)) && self.authentication.permits(tls)
    }

    /// Whether this is the `audit` default (see [`Meta::is_audit`]).
    pub fn is_audit(&self) -> bool {
        self.meta.is_audit()
    }
}

// === impl Authentication ===

impl Authentication {
    /// `is_tls_authorized` (`linkerd/app/inbound/src/policy.rs`).
    ///
    /// A client identity is DNS-like when it parses as a DNS name without a trailing dot
    /// (linkerd2-proxy's `Id::from_str` tries that first); anything else (a SPIFFE URI) must
    /// be listed in `identities` exactly, since suffixes apply to DNS-like identities only.
    #[inline]
    pub fn permits(&self, tls: ClientTls<'_>) -> bool {
        match self {
            Self::Unauthenticated => true,
            Self::TlsUnauthenticated => matches!(tls, ClientTls::Tls { .. }),
            Self::TlsAuthenticated {
                identities,
                suffixes,
            } => match tls {
                ClientTls::Tls {
                    client_id: Some(id),
                } => {
                    identities.contains(id)
                        || (!suffixes.is_empty()
                            && is_dns_id(id)
                            && suffixes.iter().any(|s| s.contains(id)))
                }
                _ => false,
            },
        }
    }
}

/// Whether linkerd2-proxy's `Id::from_str` would make `id` an `Id::Dns`.
pub(super) fn is_dns_id(id: &str) -> bool {
    !id.ends_with('.') && ringlink_protocols::authority::is_dns_name(id)
}

// === impl Suffix ===

impl From<Vec<String>> for Suffix {
    fn from(parts: Vec<String>) -> Self {
        let ends_with = if parts.is_empty() {
            String::new()
        } else {
            let mut s = String::new();
            for part in &parts {
                s.push('.');
                s.push_str(part);
            }
            s
        };
        Self { ends_with }
    }
}

impl Suffix {
    /// A suffix matched as is (no dot is added).
    pub fn new(ends_with: &str) -> Self {
        Self {
            ends_with: ends_with.to_string(),
        }
    }

    /// What names must end with.
    pub fn as_str(&self) -> &str {
        &self.ends_with
    }

    /// Whether `name` ends with the suffix (an empty suffix contains every name).
    #[inline]
    pub fn contains(&self, name: &str) -> bool {
        name.ends_with(&self.ends_with)
    }
}
