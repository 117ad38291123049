//! HTTP local rate limits (`linkerd/proxy/server-policy/src/local_rate_limit.rs`): the
//! limits as data, and their buckets. Each limit is governor's `Quota::per_second(rps)` as
//! linkerd2-proxy uses it: a GCRA bucket of `rps` requests replenished at `rps` per second.
//! The buckets are built with the policy on the control thread and shared by every shard
//! through the policy's `Arc` (one set per policy version, as linkerd2-proxy builds a
//! limiter per policy); a check is a compare-and-swap, no lock. Per-identity limits hash
//! each identity to one of [`IDENTITY_BUCKETS`] buckets: identities that collide share a
//! bucket (linkerd2-proxy keeps one per identity in a locked map).

use super::Meta;
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    sync::{Arc, OnceLock},
    time::Instant,
};

/// Buckets of a per-identity limit (clients without an identity share one of them).
pub const IDENTITY_BUCKETS: usize = 256;

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
    /// The buckets (not part of the limits' equality).
    buckets: Arc<Buckets>,
}

/// The GCRA buckets of one limit set.
#[derive(Default)]
struct Buckets {
    total: Option<Gcra>,
    overrides: Vec<Gcra>,
    per_identity: Vec<Gcra>,
    hasher: std::collections::hash_map::RandomState,
}

/// One GCRA bucket: the theoretical arrival time of the next request, in nanoseconds since
/// the process's epoch.
struct Gcra {
    rps: NonZeroU32,
    interval: u64,
    tolerance: u64,
    tat: AtomicU64,
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
        let buckets = Arc::new(Buckets {
            total: total.map(Gcra::new),
            overrides: overrides
                .iter()
                .map(|o| Gcra::new(o.requests_per_second))
                .collect(),
            per_identity: per_identity
                .map(|rps| (0..IDENTITY_BUCKETS).map(|_| Gcra::new(rps)).collect())
                .unwrap_or_default(),
            hasher: Default::default(),
        });
        Self {
            meta,
            total,
            per_identity,
            overrides,
            by_identity,
            buckets,
        }
    }

    /// Takes a request from `client_id` (its mesh TLS identity, if any), as linkerd2-proxy's
    /// `LocalRateLimit::check`: the total limit first; then the client's override, if it has
    /// one, and nothing else; otherwise its per-identity bucket.
    pub fn check(&self, client_id: Option<&str>) -> Result<(), RateLimitError> {
        self.check_at(client_id, now())
    }

    fn check_at(&self, client_id: Option<&str>, now: u64) -> Result<(), RateLimitError> {
        let buckets = &self.buckets;
        if let Some(total) = &buckets.total {
            if !total.admit(now) {
                return Err(RateLimitError::Total(total.rps));
            }
        }
        if let Some((i, _)) = client_id.and_then(|id| self.override_for(id)) {
            let bucket = &buckets.overrides[i];
            if !bucket.admit(now) {
                return Err(RateLimitError::Override(bucket.rps));
            }
            return Ok(());
        }
        if buckets.per_identity.is_empty() {
            return Ok(());
        }
        let index = match client_id {
            None => 0,
            Some(id) => {
                let mut hasher = buckets.hasher.build_hasher();
                hasher.write(id.as_bytes());
                (hasher.finish() as usize) % IDENTITY_BUCKETS
            }
        };
        let bucket = &buckets.per_identity[index];
        if !bucket.admit(now) {
            return Err(RateLimitError::PerIdentity(bucket.rps));
        }
        Ok(())
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

impl PartialEq for Buckets {
    /// Buckets are state, not limits: two limit sets with equal limits are equal.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Buckets {}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Buckets")
    }
}

impl Gcra {
    fn new(rps: NonZeroU32) -> Self {
        let interval = (1_000_000_000 / u64::from(rps.get())).max(1);
        Gcra {
            rps,
            interval,
            // A burst of `rps` requests.
            tolerance: interval * u64::from(rps.get() - 1),
            tat: AtomicU64::new(0),
        }
    }

    /// Whether a request at `now` fits, taking its place if it does.
    fn admit(&self, now: u64) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

/// Nanoseconds since the process's first check (monotonic, never zero).
fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
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

#[cfg(test)]
mod bucket_tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn rps(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let bucket = Gcra::new(NonZeroU32::new(10).unwrap());
        let t0 = SECOND;
        for _ in 0..10 {
            assert!(bucket.admit(t0));
        }
        assert!(!bucket.admit(t0), "an 11th request in the same instant");
        // A tenth of a second later, one more request fits.
        assert!(bucket.admit(t0 + SECOND / 10));
        assert!(!bucket.admit(t0 + SECOND / 10));
        // A second later the burst is back.
        for _ in 0..10 {
            assert!(bucket.admit(t0 + 2 * SECOND));
        }
    }

    #[test]
    fn total_then_override_or_per_identity() {
        let limits = LocalRateLimit::new(
            None,
            rps(100),
            rps(1),
            vec![RateLimitOverride {
                requests_per_second: NonZeroU32::new(3).unwrap(),
                identities: vec!["vip".to_string()],
            }],
        );
        let t = SECOND;
        // Per identity: one each, clients without an identity sharing one.
        assert!(limits.check_at(Some("a"), t).is_ok());
        assert_eq!(
            limits.check_at(Some("a"), t),
            Err(RateLimitError::PerIdentity(NonZeroU32::new(1).unwrap()))
        );
        assert!(limits.check_at(None, t).is_ok());
        assert!(limits.check_at(None, t).is_err());
        // The override: three, then refused with its own limit.
        for _ in 0..3 {
            assert!(limits.check_at(Some("vip"), t).is_ok());
        }
        assert_eq!(
            limits.check_at(Some("vip"), t),
            Err(RateLimitError::Override(NonZeroU32::new(3).unwrap()))
        );
        // The total bounds everything.
        let total = LocalRateLimit::new(None, rps(2), None, Vec::new());
        assert!(total.check_at(Some("x"), t).is_ok());
        assert!(total.check_at(None, t).is_ok());
        assert_eq!(
            total.check_at(Some("y"), t),
            Err(RateLimitError::Total(NonZeroU32::new(2).unwrap()))
        );
    }

    #[test]
    fn clones_share_their_buckets() {
        let limits = LocalRateLimit::new(None, rps(1), None, Vec::new());
        let clone = limits.clone();
        assert!(limits.check_at(None, SECOND).is_ok());
        assert!(clone.check_at(None, SECOND).is_err());
        assert_eq!(limits, LocalRateLimit::new(None, rps(1), None, Vec::new()));
    }
}
