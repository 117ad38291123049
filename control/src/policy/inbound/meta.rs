//! Names of policy resources (`linkerd/proxy/server-policy/src/meta.rs`).

use std::{borrow::Cow, hash::Hash, sync::Arc};

/// The resource a server, route, authorization or rate limit comes from: the `*_group`,
/// `*_kind` and `*_name` metric labels.
///
/// Equality and hashing compare only group, kind and name, so a `Resource` with group `""`
/// and kind `default` equals the `Default` of the same name, as in linkerd2-proxy.
#[derive(Debug, Eq)]
pub enum Meta {
    /// A built-in default (group `""`, kind `default`).
    Default { name: Cow<'static, str> },
    /// A Kubernetes resource.
    Resource {
        group: String,
        kind: String,
        name: String,
        /// Where the resource is: kept for the outbound `*_namespace`, `*_port` and
        /// `*_section_name` labels; not compared.
        location: Location,
    },
}

/// A resource's namespace, section and port (from the API's `Resource`; empty for
/// resources named by labels).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub namespace: String,
    pub section: String,
    /// `None` for a port of 0 (unset).
    pub port: Option<u16>,
}

impl Meta {
    /// A shared `Default` meta.
    pub fn new_default(name: impl Into<Cow<'static, str>>) -> Arc<Self> {
        Arc::new(Self::Default { name: name.into() })
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Default { name } => name,
            Self::Resource { name, .. } => name,
        }
    }

    /// The resource's kind; `default` for defaults.
    pub fn kind(&self) -> &str {
        match self {
            Self::Default { .. } => "default",
            Self::Resource { kind, .. } => kind,
        }
    }

    /// The resource's namespace; empty for defaults.
    pub fn namespace(&self) -> &str {
        match self {
            Self::Default { .. } => "",
            Self::Resource { location, .. } => &location.namespace,
        }
    }

    /// The resource's section name; empty for defaults.
    pub fn section(&self) -> &str {
        match self {
            Self::Default { .. } => "",
            Self::Resource { location, .. } => &location.section,
        }
    }

    /// The resource's port, if it has one.
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Default { .. } => None,
            Self::Resource { location, .. } => location.port,
        }
    }

    /// The resource's API group; empty for defaults.
    pub fn group(&self) -> &str {
        match self {
            Self::Default { .. } => "",
            Self::Resource { group, .. } => group,
        }
    }

    /// Whether this is the `audit` default, whose permits linkerd2-proxy logs as
    /// "Request allowed" (only a `Default`, as `Meta::is_audit` matches).
    pub fn is_audit(&self) -> bool {
        matches!(self, Self::Default { name } if name == "audit")
    }
}

impl PartialEq for Meta {
    fn eq(&self, other: &Self) -> bool {
        self.group() == other.group() && self.kind() == other.kind() && self.name() == other.name()
    }
}

impl Hash for Meta {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.group().hash(state);
        self.kind().hash(state);
        self.name().hash(state);
    }
}
