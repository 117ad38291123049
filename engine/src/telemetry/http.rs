//! Linkerd's legacy HTTP metric families, recorded per shard: `request_total`,
//! `response_total` and `response_latency_ms`.
//!
//! Labels: `direction`, `authority` (outbound only: the request's `Host` / `:authority`),
//! `target_addr`, `target_ip`, `target_port`, `tls`, and the registry's `shard`;
//! `response_total` adds `status_code`, `classification` (`success`/`failure`), `grpc_status`
//! (gRPC responses) and `error` (the proxy failed the exchange), and `response_latency_ms`
//! (Linkerd's buckets, 1 ms to 50 s) adds `status_code`. Latency runs from
//! [`HttpMetrics::start`] (the request's head read and its target chosen: like Linkerd's,
//! it leaves out name resolution) to [`RequestMetrics::response_head`] (the response's head
//! received), or to the proxy's own error response. A label with no value (an inbound
//! `authority`, a `grpc_status` on a plain HTTP response) is left out of the page, as Linkerd
//! does, rather than written as `""`.
//!
//! Classification, as Linkerd's default classifier: an exchange the proxy failed (`error`) is
//! a failure; a gRPC response (`content-type: application/grpc…`) is a success only with
//! `grpc-status: 0` (a missing status is a failure); otherwise 5xx is a failure and anything
//! else a success.
//!
//! # Use (one request)
//!
//! ```text
//! let mut routes = RouteCache::default();                       // one per connection
//! let mut m = state.http_metrics.start(&mut routes, direction, authority, Some(target));
//! m.response_head(status, grpc::is_grpc(content_type));         // upstream's head arrived
//! m.grpc_status(0);                                             // from headers or trailers
//! m.error("upstream");                                          // the exchange broke
//! m.fail(error.status(), error.label());                        // or: the proxy answered
//! m.end();                                                      // or drop it
//! ```
//!
//! # Cost on the request path
//!
//! Label sets are resolved once per route (direction, authority, target) and kept in a
//! per-shard map of [`Route`]s; a connection keeps its last route in a [`RouteCache`], so a
//! keep-alive connection's requests to one authority do no hashing and no label lookup:
//! `start` compares the cached route's authority and target and increments one counter;
//! `end` finds its response series in a short per-route list and adds to one counter and one
//! histogram (a handful of uncontended atomics; the registry's collect side is what crosses
//! threads). Routes unused for `LINKERD2_PROXY_METRICS_RETAIN_IDLE` are evicted with their
//! series, as the TCP families are, so the page stays bounded. With recording off
//! (`RINGLINK_METRICS_RECORDING=off`), `start` returns a [`RequestMetrics`] that does nothing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::authz::{AuthzFamilies, AuthzMetrics};
pub use outbound::{RouteFamilies, RouteMetrics, RouteRequest, Status as RouteStatus};

mod outbound;
use crate::balance::Labels;
use crate::conn::{Direction, TlsStatus};
use ringlink_control::tap::{HeaderSource, Tapped};

/// Linkerd's `response_latency_ms` bucket bounds, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0,
];

/// Labels every HTTP family has (before the registry's `shard`). `dst_labels` carries the
/// endpoint's discovery labels encoded (see [`encode_dst_labels`]); the page shows them as
/// one `dst_<name>` label each.
const ROUTE_LABELS: [&str; 10] = [
    "direction",
    "authority",
    "target_addr",
    "target_ip",
    "target_port",
    "tls",
    "client_id",
    "server_id",
    "no_tls_reason",
    DST_LABELS,
];
const DST_LABELS: &str = "dst_labels";
/// Separators of the encoded `dst_labels` value: between pairs, and between name and value.
const PAIR_SEP: char = '\u{1e}';
const NAME_SEP: char = '\u{1f}';

/// `error` value when a request ended with neither a response nor a reason (its task was
/// dropped).
const CANCELLED: &str = "cancelled";

// === types ===

/// The HTTP families of one shard's registry. Shared handles: built where the registry is,
/// handed to the shard once, cheap to clone.
#[derive(Clone)]
pub struct HttpFamilies {
    requests: IntCounterVec,
    responses: IntCounterVec,
    latency: HistogramVec,
    /// The inbound policy's decisions.
    authz: AuthzFamilies,
    /// The outbound policy's routes.
    outbound: RouteFamilies,
}

/// A shard's HTTP recording: its families and the series it resolved, per route. Shard-local.
pub struct HttpMetrics {
    /// The inbound policy's decisions.
    pub authz: AuthzMetrics,
    /// The outbound policy's routes.
    pub outbound: RouteMetrics,
    families: HttpFamilies,
    routes: RefCell<HashMap<RouteKey, Rc<Route>>>,
    recording: bool,
}

/// One connection's last route, so that its next request to the same authority and target
/// skips the shard's map. Keep one per client connection.
#[derive(Default)]
pub struct RouteCache(Option<Rc<Route>>);

/// What distinguishes one route's label set from another's.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RouteKey {
    direction: Direction,
    tls: TlsStatus,
    authority: Option<Box<str>>,
    target: Option<SocketAddr>,
    dst: Option<Labels>,
}

/// The series of one label set, resolved once. Shard-local.
pub struct Route {
    families: HttpFamilies,
    key: RouteKey,
    labels: [String; 10],
    requests: IntCounter,
    /// `response_total` series by outcome; a route sees few distinct outcomes.
    responses: RefCell<Vec<(Outcome, IntCounter)>>,
    /// `response_latency_ms` series by status code.
    latencies: RefCell<Vec<(u16, Histogram)>>,
    in_flight: Cell<usize>,
    last_used: Cell<Instant>,
    /// Dropped from the shard's map and from the families: not to be recorded into.
    evicted: Cell<bool>,
}

/// The `response_total` labels beyond the route's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    status: Option<u16>,
    success: bool,
    grpc_status: Option<u32>,
    error: Option<&'static str>,
}

/// One request being recorded: `request_total` was counted by
/// [`HttpMetrics::start`]; `response_total` and `response_latency_ms` are recorded by
/// [`RequestMetrics::end`] or on drop, once.
#[derive(Default)]
pub struct RequestMetrics {
    /// The route and when the request's head was read; `None` when not recording (or ended).
    started: Option<(Rc<Route>, Instant)>,
    status: Option<u16>,
    /// Time from the request's head to the response's head.
    latency: Option<Duration>,
    grpc: bool,
    grpc_status: Option<u32>,
    error: Option<&'static str>,
    /// When the response's head arrived (kept even when not recording: balancers take
    /// their RTT samples from it).
    head_at: Option<Instant>,
    /// The taps that took this request (`linkerd viz tap`), recording or not.
    taps: Option<Box<[Tapped]>>,
    /// The exchange broke: the taps see a failed response.
    broke: bool,
    /// The outbound policy route's series, when a policy routed the request.
    route: Option<Box<RouteRequest>>,
    /// The first response head's status, recording or not (failure accrual reads it).
    head_status: Option<u16>,
}

/// Writes a family's series without their empty labels (Linkerd leaves out a label that has
/// no value; the `prometheus` crate needs every series of a family to name the same labels).
pub(super) struct OmitEmptyLabels<C>(pub(super) C);

// === impl HttpFamilies ===

impl HttpFamilies {
    /// Registers the HTTP families in a shard's `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<HttpFamilies> {
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            ROUTE_LABELS.iter().chain(extra).copied().collect()
        };
        let requests = IntCounterVec::new(
            Opts::new("request_total", "Total count of HTTP requests."),
            &with(&[]),
        )?;
        let responses = IntCounterVec::new(
            Opts::new("response_total", "Total count of HTTP responses."),
            &with(&["status_code", "classification", "grpc_status", "error"]),
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "response_latency_ms",
                "Elapsed times between a request's headers being received and its response \
                 headers being received, in milliseconds.",
            )
            .buckets(LATENCY_BUCKETS_MS.to_vec()),
            &with(&["status_code"]),
        )?;
        registry.register(Box::new(OmitEmptyLabels(requests.clone())))?;
        registry.register(Box::new(OmitEmptyLabels(responses.clone())))?;
        registry.register(Box::new(OmitEmptyLabels(latency.clone())))?;
        Ok(HttpFamilies {
            requests,
            responses,
            latency,
            authz: AuthzFamilies::register(registry)?,
            outbound: RouteFamilies::register(registry)?,
        })
    }
}

// === impl HttpMetrics ===

impl HttpMetrics {
    /// Whether this shard records (`RINGLINK_METRICS_RECORDING`).
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// A shard's recorder over its `families`; with `recording` false it records nothing.
    pub fn new(families: HttpFamilies, recording: bool) -> Self {
        HttpMetrics {
            authz: AuthzMetrics::new(families.authz.clone()),
            outbound: RouteMetrics::new(families.outbound.clone()),
            families,
            routes: RefCell::new(HashMap::new()),
            recording,
        }
    }

    /// Counts a request (`request_total`) whose head was read and routed, and returns its
    /// recorder; its latency starts now. `authority` is the request's `Host` / `:authority`
    /// (ignored inbound); `target` is the address it is forwarded to (`None` when none was
    /// chosen, e.g. a request refused before routing). `cache` is the connection's.
    #[cfg(test)]
    pub fn start(
        &self,
        cache: &mut RouteCache,
        direction: Direction,
        authority: Option<&str>,
        target: Option<SocketAddr>,
        dst: Option<&Labels>,
    ) -> RequestMetrics {
        let tls = TlsStatus::Disabled;
        self.start_tls(cache, direction, &tls, authority, target, dst)
    }

    /// [`HttpMetrics::start`] for a connection with `tls` (the `tls` and inbound
    /// `client_id` labels).
    pub fn start_tls(
        &self,
        cache: &mut RouteCache,
        direction: Direction,
        tls: &TlsStatus,
        authority: Option<&str>,
        target: Option<SocketAddr>,
        dst: Option<&Labels>,
    ) -> RequestMetrics {
        if !self.recording {
            return RequestMetrics::default();
        }
        let authority = match direction {
            Direction::Outbound => authority,
            Direction::Inbound => None,
        };
        let route = match &cache.0 {
            Some(route) if route.is(direction, tls, authority, target, dst) => route.clone(),
            _ => {
                let route = self.route(direction, tls, authority, target, dst);
                cache.0 = Some(route.clone());
                route
            }
        };
        let now = Instant::now();
        route.requests.inc();
        route.in_flight.set(route.in_flight.get() + 1);
        route.last_used.set(now);
        RequestMetrics {
            started: Some((route, now)),
            status: None,
            latency: None,
            grpc: false,
            grpc_status: None,
            error: None,
            head_at: None,
            taps: None,
            broke: false,
            route: None,
            head_status: None,
        }
    }

    /// The route of a label set, resolved (label lookup) the first time it is seen.
    fn route(
        &self,
        direction: Direction,
        tls: &TlsStatus,
        authority: Option<&str>,
        target: Option<SocketAddr>,
        dst: Option<&Labels>,
    ) -> Rc<Route> {
        let key = RouteKey {
            direction,
            tls: tls.clone(),
            authority: authority.map(Box::from),
            target,
            dst: dst.filter(|l| !l.is_empty()).cloned(),
        };
        let mut routes = self.routes.borrow_mut();
        if let Some(route) = routes.get(&key) {
            return route.clone();
        }
        let labels = [
            direction.as_str().to_string(),
            authority.unwrap_or_default().to_string(),
            target.map(|t| t.to_string()).unwrap_or_default(),
            target.map(|t| t.ip().to_string()).unwrap_or_default(),
            target.map(|t| t.port().to_string()).unwrap_or_default(),
            tls.label().to_string(),
            match direction {
                Direction::Inbound => tls.peer().unwrap_or_default().to_string(),
                Direction::Outbound => String::new(),
            },
            match direction {
                Direction::Inbound => String::new(),
                Direction::Outbound => tls.peer().unwrap_or_default().to_string(),
            },
            tls.no_tls_reason().to_string(),
            key.dst
                .as_deref()
                .map(encode_dst_labels)
                .unwrap_or_default(),
        ];
        let requests = self
            .families
            .requests
            .with_label_values(&labels.each_ref().map(String::as_str));
        let route = Rc::new(Route {
            families: self.families.clone(),
            key: key.clone(),
            labels,
            requests,
            responses: RefCell::new(Vec::new()),
            latencies: RefCell::new(Vec::new()),
            in_flight: Cell::new(0),
            last_used: Cell::new(Instant::now()),
            evicted: Cell::new(false),
        });
        routes.insert(key, route.clone());
        route
    }

    /// Drops the series of routes with no request in flight and none started or ended for
    /// `retain`. Returns how many routes were dropped.
    pub fn evict(&self, retain: Duration) -> usize {
        let now = Instant::now();
        let mut routes = self.routes.borrow_mut();
        let before = routes.len();
        routes.retain(|_, route| {
            if route.in_flight.get() > 0 || now.duration_since(route.last_used.get()) < retain {
                return true;
            }
            route.evicted.set(true);
            let labels = route.labels.each_ref().map(String::as_str);
            let _ = self.families.requests.remove_label_values(&labels);
            for (outcome, _) in route.responses.borrow().iter() {
                let extra = outcome.labels();
                let values: Vec<&str> = labels
                    .iter()
                    .copied()
                    .chain(extra.iter().map(String::as_str))
                    .collect();
                let _ = self.families.responses.remove_label_values(&values);
            }
            for (status, _) in route.latencies.borrow().iter() {
                let status = status.to_string();
                let values: Vec<&str> = labels.iter().copied().chain([status.as_str()]).collect();
                let _ = self.families.latency.remove_label_values(&values);
            }
            false
        });
        before - routes.len()
    }
}

// === impl Route ===

impl Route {
    fn is(
        &self,
        direction: Direction,
        tls: &TlsStatus,
        authority: Option<&str>,
        target: Option<SocketAddr>,
        dst: Option<&Labels>,
    ) -> bool {
        let dst = dst.filter(|l| !l.is_empty());
        !self.evicted.get()
            && self.key.direction == direction
            && self.key.tls == *tls
            && self.key.target == target
            && self.key.authority.as_deref() == authority
            && match (&self.key.dst, dst) {
                (None, None) => true,
                (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
    }

    fn response(&self, outcome: Outcome) -> IntCounter {
        let mut responses = self.responses.borrow_mut();
        if let Some((_, counter)) = responses.iter().find(|(o, _)| *o == outcome) {
            return counter.clone();
        }
        let extra = outcome.labels();
        let values: Vec<&str> = self
            .labels
            .iter()
            .chain(extra.iter())
            .map(String::as_str)
            .collect();
        let counter = self.families.responses.with_label_values(&values);
        responses.push((outcome, counter.clone()));
        counter
    }

    fn latency(&self, status: u16) -> Histogram {
        let mut latencies = self.latencies.borrow_mut();
        if let Some((_, histogram)) = latencies.iter().find(|(s, _)| *s == status) {
            return histogram.clone();
        }
        let status_label = status.to_string();
        let values: Vec<&str> = self
            .labels
            .iter()
            .map(String::as_str)
            .chain([status_label.as_str()])
            .collect();
        let histogram = self.families.latency.with_label_values(&values);
        latencies.push((status, histogram.clone()));
        histogram
    }
}

// === impl Outcome ===

impl Outcome {
    /// Values of `status_code`, `classification`, `grpc_status`, `error`.
    fn labels(&self) -> [String; 4] {
        [
            self.status.map(|s| s.to_string()).unwrap_or_default(),
            if self.success { "success" } else { "failure" }.to_string(),
            self.grpc_status.map(|c| c.to_string()).unwrap_or_default(),
            self.error.unwrap_or_default().to_string(),
        ]
    }
}

// === impl RequestMetrics ===

impl RequestMetrics {
    /// The response's head arrived (from upstream): its status, and whether it is gRPC
    /// (see `ringlink_protocols::grpc::is_grpc`). Latency is measured to the first call; interim (1xx) heads are not
    /// responses.
    pub fn response_head(&mut self, status: u16, grpc: bool) {
        let now = Instant::now();
        self.head_at.get_or_insert(now);
        self.head_status.get_or_insert(status);
        let Some((_, start)) = &self.started else {
            return;
        };
        if self.latency.is_none() {
            self.latency = Some(now.saturating_duration_since(*start));
        }
        self.status = Some(status);
        self.grpc = grpc;
    }

    /// The first response head's status from upstream, recording or not.
    pub fn head_status(&self) -> Option<u16> {
        self.head_status
    }

    /// When the first response head arrived, recording or not.
    pub fn head_at(&self) -> Option<Instant> {
        self.head_at
    }

    /// Whether [`HttpMetrics::start`] counted this request (always false when not recording).
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    /// The response's `grpc-status` (from its headers or trailers).
    pub fn grpc_status(&mut self, code: u32) {
        if let Some(taps) = &mut self.taps {
            taps.iter_mut().for_each(|t| t.grpc_status(code));
        }
        if self.started.is_some() {
            self.grpc_status = Some(code);
        }
    }

    /// The exchange broke (e.g. `"upstream"` reset mid-body, `"client"` went away): it is a
    /// failure, labelled with the first reason given.
    pub fn error(&mut self, reason: &'static str) {
        self.broke = true;
        if self.started.is_some() {
            self.error.get_or_insert(reason);
        }
    }

    /// The taps that took this request (see [`super::ShardTaps::tap`]).
    pub fn tapped(&mut self, taps: Vec<Tapped>) {
        if !taps.is_empty() {
            self.taps = Some(taps.into_boxed_slice());
        }
    }

    /// Whether a tap took this request (its response's headers and body are wanted).
    #[inline]
    pub fn is_tapped(&self) -> bool {
        self.taps.is_some()
    }

    /// The upstream's response head, for the taps (`response_init`); `grpc_status` is the
    /// head's own `grpc-status` (a trailers-only response).
    pub fn tap_response(
        &mut self,
        status: u16,
        http2: bool,
        headers: &dyn HeaderSource,
        grpc_status: Option<u32>,
    ) {
        if let Some(taps) = &mut self.taps {
            for tap in taps.iter_mut() {
                tap.response_init(status, http2, headers, grpc_status);
            }
        }
    }

    /// Response body bytes relayed to the client, for the taps.
    #[inline]
    pub fn tap_bytes(&mut self, n: usize) {
        if let Some(taps) = &mut self.taps {
            taps.iter_mut().for_each(|t| t.response_bytes(n as u64));
        }
    }

    /// The response's trailers arrived: the taps' `response_end`, with them.
    pub fn tap_trailers(&mut self, trailers: &dyn HeaderSource) {
        if let Some(taps) = self.taps.take() {
            Vec::from(taps)
                .into_iter()
                .for_each(|t| t.end(Some(trailers)));
        }
    }

    /// The exchange was reset with this HTTP/2 error code: the taps' `response_end` says so.
    pub fn tap_reset(&mut self, code: u32) {
        if let Some(taps) = self.taps.take() {
            Vec::from(taps).into_iter().for_each(|t| t.fail(Some(code)));
        }
    }

    /// Ends the taps: a response that ended, or one that failed (the proxy answered, the
    /// exchange broke, or no response came).
    fn end_taps(&mut self) {
        let Some(taps) = self.taps.take() else {
            return;
        };
        for tap in Vec::from(taps) {
            if self.broke || !tap.responded() {
                tap.fail(None);
            } else {
                tap.end(None);
            }
        }
    }

    /// The request was routed by an outbound policy: its route's series (recorded at the
    /// end, only when this request is recorded).
    pub fn routed(&mut self, route: impl FnOnce() -> RouteRequest) {
        if self.started.is_some() && self.route.is_none() {
            self.route = Some(Box::new(route()));
        }
    }

    /// The request is sent again (its route's retry policy): counted in the route's
    /// `retry_requests_total`.
    pub fn retried(&mut self) {
        if let Some(route) = &mut self.route {
            route.retried();
        }
    }

    /// The proxy answered the request itself with `status` (e.g. 502) because of `reason`
    /// (see [`crate::error::ProxyError::label`]).
    pub fn fail(&mut self, status: u16, reason: &'static str) {
        if self.started.is_none() {
            return;
        }
        self.response_head(status, false);
        self.grpc_status = None;
        self.error(reason);
    }

    /// Records the response (`response_total`, and `response_latency_ms` when there was a
    /// response head). Called by drop too; only the first call records.
    pub fn end(&mut self) {
        self.end_taps();
        let Some((route, start)) = self.started.take() else {
            return;
        };
        route.in_flight.set(route.in_flight.get().saturating_sub(1));
        let now = Instant::now();
        route.last_used.set(now);
        if route.evicted.get() {
            return;
        }
        let error = match (self.status, self.error) {
            (None, None) => Some(CANCELLED),
            (_, error) => error,
        };
        let success = error.is_none()
            && if self.grpc {
                self.grpc_status == Some(0)
            } else {
                self.status.is_some_and(|s| s < 500)
            };
        let outcome = Outcome {
            status: self.status,
            success,
            grpc_status: self.grpc_status.filter(|_| self.grpc),
            error,
        };
        if let Some(status) = self.status {
            let latency = self.latency.unwrap_or_else(|| now.duration_since(start));
            route.latency(status).observe(latency.as_secs_f64() * 1e3);
        }
        route.response(outcome).inc();
        if let Some(policy_route) = self.route.take() {
            policy_route.end(self.route_status(error));
        }
    }

    /// The route families' status labels: an error the proxy answered or saw, by Linkerd's
    /// name, without a status (an injected failure or a redirect keeps its status and has
    /// no error, as Linkerd records them); else the response's status (gRPC: its code).
    fn route_status(&self, error: Option<&'static str>) -> RouteStatus {
        let error = match error {
            None | Some("injected" | "redirect") => None,
            Some("failfast" | "unavailable") => Some("FAIL_FAST"),
            Some("route_timeout") => Some("REQUEST_TIMEOUT"),
            Some(CANCELLED) => Some("CANCEL"),
            Some("upstream" | "io" | "connect" | "connect_timeout") => Some("IO"),
            Some(_) => Some("UNKNOWN"),
        };
        let code = match error {
            Some(_) => None,
            None if self.grpc => self.grpc_status,
            None => self.status.map(u32::from),
        };
        RouteStatus { code, error }
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        self.end();
    }
}

// === impl OmitEmptyLabels ===

impl<C: Collector> Collector for OmitEmptyLabels<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.0.collect();
        for family in &mut families {
            for metric in family.mut_metric() {
                let labels = metric.take_label();
                let mut out = Vec::with_capacity(labels.len());
                // A clean close's `errno` is empty on purpose: Linkerd writes `errno=""`, and
                // a default resource's empty `srv_group` (`route_`, `authz_`, `ratelimit_`)
                // beside its kind.
                let has_kind = |group: &str| {
                    let kind = format!("{}_kind", group.trim_end_matches("_group"));
                    labels
                        .iter()
                        .any(|p| p.name() == kind && !p.value().is_empty())
                };
                let kept: Vec<bool> = labels
                    .iter()
                    .map(|p| {
                        p.name() == "errno" || (p.name().ends_with("_group") && has_kind(p.name()))
                    })
                    .collect();
                for (pair, kept) in labels.into_iter().zip(kept) {
                    if pair.value().is_empty() && !kept {
                        continue;
                    }
                    if pair.name() == DST_LABELS {
                        for (name, value) in decode_dst_labels(pair.value()) {
                            let mut label = prometheus::proto::LabelPair::default();
                            label.set_name(format!("dst_{name}"));
                            label.set_value(value.to_string());
                            out.push(label);
                        }
                        continue;
                    }
                    out.push(pair);
                }
                metric.set_label(out);
            }
        }
        families
    }
}

// === functions ===

/// Discovery labels as one label value: `name␟value␞name␟value…`. Names that are not valid
/// Prometheus label name characters, and separators inside values, are dropped.
fn encode_dst_labels(labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (name, value) in labels {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid || value.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(PAIR_SEP);
        }
        out.push_str(name);
        out.push(NAME_SEP);
        out.extend(value.chars().filter(|c| *c != PAIR_SEP && *c != NAME_SEP));
    }
    out
}

fn decode_dst_labels(encoded: &str) -> impl Iterator<Item = (&str, &str)> {
    encoded
        .split(PAIR_SEP)
        .filter_map(|pair| pair.split_once(NAME_SEP))
}

#[cfg(test)]
mod tests;
