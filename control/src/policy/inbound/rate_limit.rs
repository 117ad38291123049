//! HTTP local rate limits as data (`linkerd/proxy/server-policy/src/local_rate_limit.rs`); the
//! limiters themselves (GCRA buckets) belong to whoever enforces them.

use super::Meta;
use std::{collections::HashMap, num::NonZeroU32, sync::Arc};

/// A server's HTTP rate limits, checked after a request is routed, authorized and filtered:
/// first the `total` limit; then, for a client identity with an override, that override's
/// limit (shared by all the identities it lists) and nothing else; otherwise the
/// `per_identity` limit, one bucket per identity, with every client without an identity
/// sharing one bucket (`LocalRateLimit::check`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalRateLimit {
    /// The `HTTPLocalRateLimitPolicy` resource (the `ratelimit_*` labels).
    pub meta: Option<Arc<Meta>>,
    /// Requests per second for the whole server.
    pub total: Option<NonZeroU32>,
    /// Requests per second for each client identity.
    pub per_identity: Option<NonZeroU32>,
    /// Per-identity overrides, in the API's order.
    pub overrides: Vec<RateLimitOverride>,
    /// Identity → index in `overrides` (the last override naming an identity wins).
    by_identity: HashMap<String, usize>,
}

/// One override: a limit shared by the listed identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitOverride {
    pub requests_per_second: NonZeroU32,
    pub identities: Vec<String>,
}

/// A request over a limit: 429, or gRPC `RESOURCE_EXHAUSTED` (`RateLimitError` in
/// linkerd2-proxy, with its messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    #[error("total rate limit exceeded: {0}rps")]
    Total(NonZeroU32),
    #[error("per-identity rate limit exceeded: {0}rps")]
    PerIdentity(NonZeroU32),
    #[error("override rate limit exceeded: {0}rps")]
    Override(NonZeroU32),
}

impl LocalRateLimit {
    /// Limits with the given overrides (indexed by identity).
    pub fn new(
        meta: Option<Arc<Meta>>,
        total: Option<NonZeroU32>,
        per_identity: Option<NonZeroU32>,
        overrides: Vec<RateLimitOverride>,
    ) -> Self {
        let by_identity = overrides
            .iter()
            .enumerate()
            .flat_map(|(i, o)| o.identities.iter().map(move |id| (id.clone(), i)))
            .collect();
        Self {
            meta,
            total,
            per_identity,
            overrides,
            by_identity,
        }
    }

    /// Whether there is no limit at all.
    pub fn is_empty(&self) -> bool {
        self.total.is_none() && self.per_identity.is_none() && self.overrides.is_empty()
    }

    /// The override for a client identity: its index in [`Self::overrides`] (one bucket per
    /// index) and its limit.
    pub fn override_for(&self, client_id: &str) -> Option<(usize, NonZeroU32)> {
        let &i = self.by_identity.get(client_id)?;
        Some((i, self.overrides[i].requests_per_second))
    }
}

impl RateLimitError {
    /// The `scope` label of `inbound_http_local_ratelimit_total`: `total` or `identity`.
    pub fn scope(&self) -> &'static str {
        match self {
            Self::Total(_) => "total",
            Self::PerIdentity(_) | Self::Override(_) => "identity",
        }
    }
}
