//! Linkerd's outbound policy route families (`linkerd/app/outbound/src/http/logical/policy/
//! route/metrics*.rs`), for requests an outbound policy routed:
//!
//! - `outbound_{http,grpc}_route_request_duration_seconds` (histogram, buckets 0.05, 0.5, 1
//!   and 10 s) and `…_request_statuses_total`, labelled by the parent (`parent_group`,
//!   `parent_kind`, `parent_namespace`, `parent_name`, `parent_port`,
//!   `parent_section_name`), the route (`route_group`, `route_kind`, `route_namespace`,
//!   `route_name`) and `hostname` (empty: ringlink does not export hostnames, as Linkerd's
//!   default);
//! - `outbound_{http,grpc}_route_backend_requests_total` and
//!   `…_backend_response_statuses_total`, labelled by parent, route and backend
//!   (`backend_group`, `backend_kind`, `backend_namespace`, `backend_name`, `backend_port`,
//!   `backend_section_name`).
//!
//! Statuses carry `http_status` (or `grpc_status`, `UNKNOWN` when there was none) and
//! `error` (Linkerd's names: `FAIL_FAST`, `REQUEST_TIMEOUT`, `RESET`, `IO`, `UNKNOWN`…),
//! empty when not set, as Linkerd writes them.
//!
//! Label sets are resolved once per (parent, route, backend) of a policy version and kept in
//! a per-shard map keyed by the policy objects' identities; a request does one map lookup
//! with three pointers, then adds to counters it holds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use ringlink_control::policy::inbound::Meta;

/// Route label sets kept before the map is cleared (a policy update leaves its old sets
/// behind; clearing is cheap and only re-resolves the live ones).
const MAX_ROUTES: usize = 4096;

const REQUEST_BUCKETS: [f64; 4] = [0.05, 0.5, 1.0, 10.0];

// === types ===

/// The route families of one shard's registry, for HTTP and for gRPC.
#[derive(Clone)]
pub struct RouteFamilies {
    http: Families,
    grpc: Families,
}

#[derive(Clone)]
struct Families {
    grpc: bool,
    durations: HistogramVec,
    statuses: IntCounterVec,
    backend_requests: IntCounterVec,
    backend_statuses: IntCounterVec,
    retry_requests: IntCounterVec,
    retry_successes: IntCounterVec,
}

/// The shard's resolved route series.
pub struct RouteMetrics {
    families: RouteFamilies,
    /// By the identities of (parent, route, backend) and gRPC-ness.
    map: RefCell<HashMap<SeriesId, Rc<Series>>>,
}

/// The identities of a (parent, route, backend), and whether it is gRPC.
type SeriesId = (usize, usize, usize, bool);

/// A (parent, route, backend), and whether it is gRPC; kept by its series so that the
/// identities the map is keyed by stay valid.
struct Key {
    parent: Arc<Meta>,
    route: Arc<Meta>,
    backend: Arc<Meta>,
    grpc: bool,
}

/// The series of one (parent, route, backend).
struct Series {
    _key: Key,
    families: Families,
    route_labels: Vec<String>,
    backend_labels: Vec<String>,
    duration: Histogram,
    backend_requests: IntCounter,
    /// Status series by (status, error): few per route.
    statuses: RefCell<Vec<(Status, IntCounter, IntCounter)>>,
}

/// What a request's statuses are labelled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The HTTP status, or for gRPC the status code (`None`: `UNKNOWN`).
    pub code: Option<u32>,
    pub error: Option<&'static str>,
}

/// One policy-routed request being recorded.
pub struct RouteRequest {
    series: Rc<Series>,
    start: Instant,
    /// Its route sent it again at least once.
    retried: bool,
}

// === impl RouteFamilies ===

impl RouteFamilies {
    pub fn register(registry: &Registry) -> prometheus::Result<RouteFamilies> {
        Ok(RouteFamilies {
            http: Families::register(registry, "http")?,
            grpc: Families::register(registry, "grpc")?,
        })
    }
}

impl Families {
    fn register(registry: &Registry, kind: &str) -> prometheus::Result<Families> {
        let status = if kind == "grpc" {
            "grpc_status"
        } else {
            "http_status"
        };
        let route = route_label_names();
        let backend = [route.clone(), meta_label_names("backend", true)].concat();
        let with = |base: &[String], extra: &[&str]| -> Vec<String> {
            base.iter()
                .cloned()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect()
        };
        let prefix = format!("outbound_{kind}_route");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}_request_duration_seconds"),
                "The time between request initialization and response completion",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &strs(&route),
        )?;
        let status_labels = with(&route, &[status, "error"]);
        let statuses = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_request_statuses_total"),
                "Completed request-response streams",
            ),
            &strs(&status_labels),
        )?;
        let backend_requests = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_backend_requests_total"),
                "The total number of requests dispatched to a backend",
            ),
            &strs(&backend),
        )?;
        let backend_status_labels = with(&backend, &[status, "error"]);
        let backend_statuses = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_backend_response_statuses_total"),
                "Completed responses",
            ),
            &strs(&backend_status_labels),
        )?;
        let retry_requests = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_retry_requests_total"),
                "Retry requests emitted",
            ),
            &strs(&route),
        )?;
        let retry_successes = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_retry_successes_total"),
                "Successful responses to retry requests",
            ),
            &strs(&route),
        )?;
        registry.register(Box::new(retry_requests.clone()))?;
        registry.register(Box::new(retry_successes.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(statuses.clone()))?;
        registry.register(Box::new(backend_requests.clone()))?;
        registry.register(Box::new(backend_statuses.clone()))?;
        Ok(Families {
            grpc: kind == "grpc",
            durations,
            statuses,
            backend_requests,
            backend_statuses,
            retry_requests,
            retry_successes,
        })
    }
}

// === impl RouteMetrics ===

impl RouteMetrics {
    pub fn new(families: RouteFamilies) -> Self {
        RouteMetrics {
            families,
            map: RefCell::new(HashMap::new()),
        }
    }

    /// Counts a request dispatched to `backend` by `route` of `parent`'s policy, and returns
    /// its recorder.
    pub fn start(
        &self,
        parent: &Arc<Meta>,
        route: &Arc<Meta>,
        backend: &Arc<Meta>,
        grpc: bool,
    ) -> RouteRequest {
        // Looked up by identity without touching the reference counts; the series keeps
        // the `Arc`s, so an address in the map is never reused by another meta.
        let id = (
            Arc::as_ptr(parent) as usize,
            Arc::as_ptr(route) as usize,
            Arc::as_ptr(backend) as usize,
            grpc,
        );
        let found = self.map.borrow().get(&id).cloned();
        let series = match found {
            Some(series) => series,
            None => {
                let key = Key {
                    parent: parent.clone(),
                    route: route.clone(),
                    backend: backend.clone(),
                    grpc,
                };
                let mut map = self.map.borrow_mut();
                if map.len() >= MAX_ROUTES {
                    map.clear();
                }
                let series = Rc::new(self.series(key));
                map.insert(id, series.clone());
                series
            }
        };
        series.backend_requests.inc();
        RouteRequest {
            series,
            start: Instant::now(),
            retried: false,
        }
    }

    /// Records a request the route's own filters answered (an injected failure, a
    /// redirect, an invalid policy) before any backend was chosen: the route's statuses
    /// and duration only.
    pub fn filtered(&self, parent: &Meta, route: &Meta, grpc: bool, status: Status) {
        let families = if grpc {
            &self.families.grpc
        } else {
            &self.families.http
        };
        let mut labels = meta_labels(parent, true);
        labels.extend(meta_labels(route, false));
        labels.push(String::new()); // hostname
        families
            .durations
            .with_label_values(&strs(&labels))
            .observe(0.0);
        labels.push(status_value(status.code, grpc));
        labels.push(status.error.unwrap_or_default().to_string());
        families.statuses.with_label_values(&strs(&labels)).inc();
    }

    fn series(&self, key: Key) -> Series {
        let families = if key.grpc {
            self.families.grpc.clone()
        } else {
            self.families.http.clone()
        };
        let mut route_labels = meta_labels(&key.parent, true);
        route_labels.extend(meta_labels(&key.route, false));
        route_labels.push(String::new()); // hostname
        let mut backend_labels = route_labels.clone();
        backend_labels.extend(meta_labels(&key.backend, true));
        Series {
            duration: families.durations.with_label_values(&strs(&route_labels)),
            backend_requests: families
                .backend_requests
                .with_label_values(&strs(&backend_labels)),
            families,
            route_labels,
            backend_labels,
            statuses: RefCell::new(Vec::new()),
            _key: key,
        }
    }
}

// === impl RouteRequest ===

impl RouteRequest {
    /// The request is sent again.
    pub fn retried(&mut self) {
        self.retried = true;
        self.series
            .families
            .retry_requests
            .with_label_values(&strs(&self.series.route_labels))
            .inc();
    }

    /// Records the request's end with its `status`.
    pub fn end(self, status: Status) {
        let series = &self.series;
        let success = status.error.is_none()
            && match (status.code, series.families.grpc) {
                (Some(code), true) => code == 0,
                (Some(code), false) => code < 500,
                (None, _) => false,
            };
        if self.retried && success {
            series
                .families
                .retry_successes
                .with_label_values(&strs(&series.route_labels))
                .inc();
        }
        series
            .duration
            .observe(Instant::now().duration_since(self.start).as_secs_f64());
        let mut statuses = series.statuses.borrow_mut();
        if let Some((_, route, backend)) = statuses.iter().find(|(s, ..)| *s == status) {
            route.inc();
            backend.inc();
            return;
        }
        let code = status_value(status.code, series.families.grpc);
        let error = status.error.unwrap_or_default();
        let mut route_values: Vec<&str> = series.route_labels.iter().map(String::as_str).collect();
        route_values.extend([code.as_str(), error]);
        let mut backend_values: Vec<&str> =
            series.backend_labels.iter().map(String::as_str).collect();
        backend_values.extend([code.as_str(), error]);
        let route = series.families.statuses.with_label_values(&route_values);
        let backend = series
            .families
            .backend_statuses
            .with_label_values(&backend_values);
        route.inc();
        backend.inc();
        statuses.push((status, route, backend));
    }
}

// === functions ===

/// `{scope}_group`, `_kind`, `_namespace`, `_name`, and for services `_port` and
/// `_section_name`.
fn meta_label_names(scope: &str, service: bool) -> Vec<String> {
    let mut names = ["group", "kind", "namespace", "name"].to_vec();
    if service {
        names.extend(["port", "section_name"]);
    }
    names.iter().map(|n| format!("{scope}_{n}")).collect()
}

/// The parent's, the route's, then `hostname`.
fn route_label_names() -> Vec<String> {
    let mut names = meta_label_names("parent", true);
    names.extend(meta_label_names("route", false));
    names.push("hostname".to_string());
    names
}

fn meta_labels(meta: &Meta, service: bool) -> Vec<String> {
    let mut values = vec![
        meta.group().to_string(),
        meta.kind().to_string(),
        meta.namespace().to_string(),
        meta.name().to_string(),
    ];
    if service {
        values.push(meta.port().map(|p| p.to_string()).unwrap_or_default());
        values.push(meta.section().to_string());
    }
    values
}

/// The `http_status` or `grpc_status` value.
fn status_value(code: Option<u32>, grpc: bool) -> String {
    match (code, grpc) {
        (Some(code), true) => grpc_code_name(code).to_string(),
        (None, true) => "UNKNOWN".to_string(),
        (Some(code), false) => code.to_string(),
        (None, false) => String::new(),
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The name Linkerd writes for a gRPC status code.
fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}
