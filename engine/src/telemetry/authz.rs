//! Inbound policy decisions, with linkerd2-proxy's families and labels
//! (`linkerd/app/inbound/src/metrics/authz.rs`, label formats in
//! `linkerd/app/core/src/metrics.rs`):
//!
//! - `inbound_tcp_authz_allow_total` (`srv_*`, `authz_*`), `inbound_tcp_authz_deny_total`
//!   and `inbound_tcp_authz_terminate_total` (`srv_*`): connections;
//! - `inbound_http_authz_allow_total` (`srv_*`, `route_*`, `authz_*`),
//!   `inbound_http_authz_deny_total` (`srv_*`, `route_*`) and
//!   `inbound_http_route_not_found_total` (`srv_*`): requests;
//!
//! each with `target_addr`, `target_ip`, `target_port` and the client's TLS (`tls`,
//! `client_id` or `no_tls_reason`), plus `shard`. A default resource's empty `*_group` is
//! written, as Linkerd writes it.
//!
//! The allow counters are resolved once per label set and kept in a small per-shard cache,
//! so that an allowed request costs a hash lookup, not a label lookup.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use ringlink_control::policy::inbound::Meta;

use super::http::OmitEmptyLabels;
use crate::conn::TlsStatus;

/// Allow counters kept per shard before the cache starts over.
const MAX_CACHED: usize = 4096;

const TARGET: [&str; 3] = ["target_addr", "target_ip", "target_port"];
const SERVER: [&str; 4] = ["srv_group", "srv_kind", "srv_name", "srv_port"];
const ROUTE: [&str; 3] = ["route_group", "route_kind", "route_name"];
const AUTHZ: [&str; 3] = ["authz_group", "authz_kind", "authz_name"];
const TLS: [&str; 3] = ["tls", "client_id", "no_tls_reason"];

// === types ===

/// The policy families of one shard's registry (shared handles: cloning is cheap).
#[derive(Clone)]
pub struct AuthzFamilies {
    tcp_allow: IntCounterVec,
    tcp_deny: IntCounterVec,
    tcp_terminate: IntCounterVec,
    http_allow: IntCounterVec,
    http_deny: IntCounterVec,
    route_not_found: IntCounterVec,
    ratelimit: IntCounterVec,
}

/// A shard's policy recording: the families and the allow counters already resolved.
pub struct AuthzMetrics {
    families: AuthzFamilies,
    allowed: RefCell<HashMap<AllowKey, Vec<Cached>>>,
}

/// An allow counter's label set, as looked up: the metas by address (kept alive by the
/// entry), and the target. The client's TLS is compared in [`Cached`].
type AllowKey = (usize, usize, usize, SocketAddr);

/// A resolved allow counter: the client's TLS it is for, the counter, and the metas whose
/// addresses its key holds.
struct Cached {
    tls: TlsStatus,
    counter: IntCounter,
    _metas: (Arc<Meta>, Option<Arc<Meta>>, Arc<Meta>),
}

// === impl AuthzFamilies ===

impl AuthzFamilies {
    pub fn register(registry: &Registry) -> prometheus::Result<AuthzFamilies> {
        let family = |name: &str, help: &str, parts: &[&[&str]]| {
            let labels: Vec<&str> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let family = IntCounterVec::new(Opts::new(name, help), &labels)?;
            registry.register(Box::new(OmitEmptyLabels(family.clone())))?;
            Ok::<_, prometheus::Error>(family)
        };
        let ratelimit_labels: [&str; 4] = [
            "ratelimit_group",
            "ratelimit_kind",
            "ratelimit_name",
            "ratelimit_scope",
        ];
        Ok(AuthzFamilies {
            ratelimit: family(
                "inbound_http_local_ratelimit_total",
                "The total number of inbound HTTP requests that were rate-limited",
                &[&TARGET, &SERVER, &ratelimit_labels, &TLS],
            )?,
            tcp_allow: family(
                "inbound_tcp_authz_allow_total",
                "The total number of inbound TCP connections that were authorized",
                &[&TARGET, &SERVER, &AUTHZ, &TLS],
            )?,
            tcp_deny: family(
                "inbound_tcp_authz_deny_total",
                "The total number of inbound TCP connections that were denied",
                &[&TARGET, &SERVER, &TLS],
            )?,
            tcp_terminate: family(
                "inbound_tcp_authz_terminate_total",
                "The total number of inbound TCP connections that were terminated due to an \
                 authorization change",
                &[&TARGET, &SERVER, &TLS],
            )?,
            http_allow: family(
                "inbound_http_authz_allow_total",
                "The total number of inbound HTTP requests that were authorized",
                &[&TARGET, &SERVER, &ROUTE, &AUTHZ, &TLS],
            )?,
            http_deny: family(
                "inbound_http_authz_deny_total",
                "The total number of inbound HTTP requests that could not be processed due to \
                 a proxy error.",
                &[&TARGET, &SERVER, &ROUTE, &TLS],
            )?,
            route_not_found: family(
                "inbound_http_route_not_found_total",
                "The total number of inbound HTTP requests that could not be associated with a \
                 route",
                &[&TARGET, &SERVER, &TLS],
            )?,
        })
    }
}

// === impl AuthzMetrics ===

impl AuthzMetrics {
    pub fn new(families: AuthzFamilies) -> Self {
        AuthzMetrics {
            families,
            allowed: RefCell::new(HashMap::new()),
        }
    }

    /// A connection `authz` allowed on `server`'s port `target`.
    pub fn tcp_allow(
        &self,
        target: SocketAddr,
        server: &Arc<Meta>,
        authz: &Arc<Meta>,
        tls: &TlsStatus,
    ) {
        self.allowed(&self.families.tcp_allow, target, server, None, authz, tls);
    }

    /// A connection no authorization of `server` allowed.
    pub fn tcp_deny(&self, target: SocketAddr, server: &Meta, tls: &TlsStatus) {
        let labels = labels(target, server, None, None, tls);
        self.families
            .tcp_deny
            .with_label_values(&refs(&labels))
            .inc();
    }

    /// A live connection closed because a new policy no longer allows it.
    pub fn tcp_terminate(&self, target: SocketAddr, server: &Meta, tls: &TlsStatus) {
        let labels = labels(target, server, None, None, tls);
        self.families
            .tcp_terminate
            .with_label_values(&refs(&labels))
            .inc();
    }

    /// A request `authz` allowed on `route`.
    pub fn http_allow(
        &self,
        target: SocketAddr,
        server: &Arc<Meta>,
        route: &Arc<Meta>,
        authz: &Arc<Meta>,
        tls: &TlsStatus,
    ) {
        self.allowed(
            &self.families.http_allow,
            target,
            server,
            Some(route),
            authz,
            tls,
        );
    }

    /// A request no authorization of `route` allowed.
    pub fn http_deny(&self, target: SocketAddr, server: &Meta, route: &Meta, tls: &TlsStatus) {
        let labels = labels(target, server, Some(route), None, tls);
        self.families
            .http_deny
            .with_label_values(&refs(&labels))
            .inc();
    }

    /// A request a local rate limit refused: `limit`'s meta (if any) and `scope`.
    pub fn ratelimited(
        &self,
        target: SocketAddr,
        server: &Meta,
        limit: Option<&Meta>,
        scope: &str,
        tls: &TlsStatus,
    ) {
        let mut values = labels(target, server, None, None, tls);
        // The TLS labels go last; the rate limit's go before them.
        let tls_values = values.split_off(values.len() - 3);
        match limit {
            Some(meta) => values.extend([
                meta.group().to_string(),
                meta.kind().to_string(),
                meta.name().to_string(),
            ]),
            None => values.extend([String::new(), String::new(), String::new()]),
        }
        values.push(scope.to_string());
        values.extend(tls_values);
        self.families
            .ratelimit
            .with_label_values(&refs(&values))
            .inc();
    }

    /// A request no route of `server` matched.
    pub fn route_not_found(&self, target: SocketAddr, server: &Meta, tls: &TlsStatus) {
        let labels = labels(target, server, None, None, tls);
        self.families
            .route_not_found
            .with_label_values(&refs(&labels))
            .inc();
    }

    /// Counts an allowed connection or request. A hit looks the counter up by the metas'
    /// addresses and compares the TLS in place: no reference count of the (cross-shard)
    /// policy is touched.
    fn allowed(
        &self,
        family: &IntCounterVec,
        target: SocketAddr,
        server: &Arc<Meta>,
        route: Option<&Arc<Meta>>,
        authz: &Arc<Meta>,
        tls: &TlsStatus,
    ) {
        let key: AllowKey = (
            Arc::as_ptr(server) as usize,
            route.map_or(0, |r| Arc::as_ptr(r) as usize),
            Arc::as_ptr(authz) as usize,
            target,
        );
        if let Some(cached) = self.allowed.borrow().get(&key) {
            if let Some(hit) = cached.iter().find(|c| c.tls == *tls) {
                hit.counter.inc();
                return;
            }
        }
        let labels = labels(target, server, route.map(|r| &**r), Some(authz), tls);
        let counter = family.with_label_values(&refs(&labels));
        counter.inc();
        let mut allowed = self.allowed.borrow_mut();
        if allowed.len() >= MAX_CACHED {
            allowed.clear();
        }
        allowed.entry(key).or_default().push(Cached {
            tls: tls.clone(),
            counter,
            _metas: (server.clone(), route.cloned(), authz.clone()),
        });
    }
}

// === functions ===

/// The label values, in the family's order: target, server, route (if any), authz (if
/// any), TLS.
fn labels(
    target: SocketAddr,
    server: &Meta,
    route: Option<&Meta>,
    authz: Option<&Meta>,
    tls: &TlsStatus,
) -> Vec<String> {
    let mut out = vec![
        target.to_string(),
        target.ip().to_string(),
        target.port().to_string(),
        server.group().to_string(),
        server.kind().to_string(),
        server.name().to_string(),
        target.port().to_string(),
    ];
    for meta in [route, authz].into_iter().flatten() {
        out.push(meta.group().to_string());
        out.push(meta.kind().to_string());
        out.push(meta.name().to_string());
    }
    out.push(tls.label().to_string());
    out.push(tls.peer().unwrap_or_default().to_string());
    out.push(tls.no_tls_reason().to_string());
    out
}

fn refs(labels: &[String]) -> Vec<&str> {
    labels.iter().map(String::as_str).collect()
}
