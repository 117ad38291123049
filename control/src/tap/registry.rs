//! The live taps, shared between the tap server (control thread) and the shards.
//!
//! Each `Observe` call becomes one [`Tap`]: its decoded match, its limit and count, and the
//! sending half of its bounded event channel. The server keeps the strong reference (in the
//! response stream) and publishes a [`TapSet`] of weak ones to every shard over a `watch`
//! channel. A shard upgrades them only while one of its requests is being checked, so a tap
//! whose client went away or whose limit was reached is never evaluated again, and its
//! channel closes once the last tapped response has ended (each [`Tapped`] request holds a
//! sender), which ends the `Observe` stream, as linkerd2-proxy's
//! `linkerd/proxy/tap/src/grpc/server.rs` does.
//!
//! Events are built on the shard (only for matched requests) and sent with `try_send`: when
//! a tap client does not read, its channel fills ([`EVENT_CAPACITY`]) and further events
//! are dropped and counted in [`TapMetrics`], never queued without bound and never waited
//! for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use linkerd2_proxy_api::http_types;
use linkerd2_proxy_api::tap as api;
use linkerd2_proxy_api::tap::tap_event::http as pb_http;
use tokio::sync::mpsc;

use super::{Match, Observed};

#[cfg(test)]
mod tests;

/// Events buffered per `Observe` call; beyond this, events are dropped (and counted) until
/// the client reads. linkerd2-proxy's `PER_RESPONSE_EVENT_BUFFER_CAPACITY`.
pub const EVENT_CAPACITY: usize = 400;

/// `Observe` calls served at once; one more is refused with `RESOURCE_EXHAUSTED`.
pub const MAX_TAPS: usize = 16;

// === types ===

/// What every shard sees: the taps being served. Weak, so that a finished tap is skipped
/// (and its channel can close) without waiting for the shards to take a new snapshot.
#[derive(Debug, Default)]
pub struct TapSet {
    taps: Vec<Weak<Tap>>,
}

/// The shards' view of the live taps, published by the tap server.
pub type TapsRx = tokio::sync::watch::Receiver<Arc<TapSet>>;

/// One `Observe` call.
#[derive(Debug)]
pub struct Tap {
    base_id: u32,
    /// Requests tapped so far (across shards).
    count: AtomicUsize,
    limit: usize,
    matcher: Match,
    headers: bool,
    events: mpsc::Sender<api::TapEvent>,
    metrics: Arc<TapMetrics>,
}

/// Counters of the tap server, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct TapMetrics {
    /// Events handed to a tap's channel.
    pub sent: AtomicU64,
    /// Events dropped because a tap's channel was full (its client reads too slowly).
    pub dropped: AtomicU64,
    /// `Observe` calls accepted.
    pub observes: AtomicU64,
    /// `Observe` calls refused (invalid request, unauthenticated client, too many taps).
    pub refused: AtomicU64,
    /// `Observe` calls being served.
    pub active: AtomicU64,
}

/// How a connection's TLS looks to a tap event's metadata (`tls` and `client_id` /
/// `server_id` labels, as linkerd2-proxy writes them).
#[derive(Clone, Copy, Debug)]
pub enum TapTls<'a> {
    /// Mesh TLS, with the peer's identity if it presented one.
    Established { peer: Option<&'a str> },
    /// No mesh TLS, for this reason (`disabled`, `loopback`, `no_tls_from_remote`, …).
    None(&'a str),
}

/// A header block a tap event may carry: called once per field, in order.
pub trait HeaderSource {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8]));
}

/// No headers.
impl HeaderSource for () {
    fn each(&self, _: &mut dyn FnMut(&str, &[u8])) {}
}

impl HeaderSource for http::HeaderMap {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in self {
            f(name.as_str(), value.as_bytes());
        }
    }
}

/// One request as a tap sees it on a shard.
pub struct TapRequest<'a> {
    /// What the match tree is evaluated against.
    pub observed: Observed<'a>,
    pub outbound: bool,
    /// The client connection's TLS.
    pub src_tls: TapTls<'a>,
    /// The endpoint's labels and TLS; `None` where linkerd2-proxy has no destination
    /// metadata (inbound).
    pub dst_meta: Option<(&'a BTreeMap<String, String>, TapTls<'a>)>,
    /// HTTP/2: the header block gains the pseudo-headers.
    pub http2: bool,
    /// The path and query, for the `:path` pseudo-header.
    pub path_and_query: &'a str,
    pub headers: &'a dyn HeaderSource,
}

/// A request one tap took: the events of its response go to that tap's channel.
#[derive(Debug)]
pub struct Tapped {
    id: pb_http::StreamId,
    events: mpsc::Sender<api::TapEvent>,
    metrics: Arc<TapMetrics>,
    /// The metadata every event of this request carries.
    base: api::TapEvent,
    headers: bool,
    request_init_at: Instant,
    response_init_at: Option<Instant>,
    grpc_status: Option<u32>,
    response_bytes: u64,
}

// === impl TapSet ===

impl TapSet {
    pub fn new(taps: Vec<Weak<Tap>>) -> TapSet {
        TapSet { taps }
    }

    /// No tap is being served (the shards' fast path).
    pub fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    pub fn len(&self) -> usize {
        self.taps.len()
    }

    /// Offers a request to every live tap; returns those that took it.
    pub fn tap(&self, req: &TapRequest<'_>) -> Vec<Tapped> {
        self.taps
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|tap| tap.tap(req))
            .collect()
    }
}

// === impl Tap ===

impl Tap {
    /// A tap of at most `limit` requests matching `matcher`, sending to `events`.
    pub fn new(
        base_id: u32,
        limit: usize,
        matcher: Match,
        headers: bool,
        events: mpsc::Sender<api::TapEvent>,
        metrics: Arc<TapMetrics>,
    ) -> Tap {
        Tap {
            base_id,
            count: AtomicUsize::new(0),
            limit,
            matcher,
            headers,
            events,
            metrics,
        }
    }

    /// Whether more requests may be tapped.
    pub fn is_under_limit(&self) -> bool {
        self.count.load(Ordering::Relaxed) < self.limit
    }

    /// Takes the request if it matches and the limit allows, and sends its `request_init`
    /// event. A request whose `request_init` cannot be sent (the channel is full) is not
    /// tapped, as in linkerd2-proxy.
    pub fn tap(&self, req: &TapRequest<'_>) -> Option<Tapped> {
        if !self.is_under_limit() || !self.matcher.matches(&req.observed) {
            return None;
        }
        let stream = self.count.fetch_add(1, Ordering::Relaxed);
        if stream >= self.limit {
            return None;
        }
        let id = pb_http::StreamId {
            base: self.base_id,
            stream: stream as u64,
        };
        let request_init_at = Instant::now();
        let base = base_event(req);
        let observed = &req.observed;
        let headers = self.headers.then(|| {
            let mut out = Vec::new();
            if req.http2 {
                let scheme = observed.scheme.unwrap_or_default();
                let authority = observed.authority.unwrap_or_default();
                push(&mut out, ":method", observed.method.as_bytes());
                push(&mut out, ":scheme", scheme.as_bytes());
                push(&mut out, ":authority", authority.as_bytes());
                push(&mut out, ":path", req.path_and_query.as_bytes());
            }
            req.headers
                .each(&mut |name, value| push(&mut out, name, value));
            http_types::Headers { headers: out }
        });
        let init = pb_http::RequestInit {
            id: Some(id),
            method: Some(method(observed.method)),
            scheme: observed.scheme.map(scheme),
            authority: observed.authority.unwrap_or_default().to_string(),
            path: observed.path.to_string(),
            headers,
        };
        let event = with_event(base.clone(), pb_http::Event::RequestInit(init));
        match self.events.try_send(event) {
            Ok(()) => self.metrics.sent.fetch_add(1, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
        };
        Some(Tapped {
            id,
            events: self.events.clone(),
            metrics: self.metrics.clone(),
            base,
            headers: self.headers,
            request_init_at,
            response_init_at: None,
            grpc_status: None,
            response_bytes: 0,
        })
    }
}

// === impl Tapped ===

impl Tapped {
    /// The response's head arrived: `response_init`. `grpc_status` is the head's
    /// `grpc-status` (a trailers-only response), if any.
    pub fn response_init(
        &mut self,
        status: u16,
        http2: bool,
        headers: &dyn HeaderSource,
        grpc_status: Option<u32>,
    ) {
        let now = Instant::now();
        self.response_init_at = Some(now);
        self.grpc_status = grpc_status;
        let headers = self.headers.then(|| {
            let mut out = Vec::new();
            if http2 {
                push(&mut out, ":status", status.to_string().as_bytes());
            }
            headers.each(&mut |name, value| push(&mut out, name, value));
            http_types::Headers { headers: out }
        });
        let init = pb_http::ResponseInit {
            id: Some(self.id),
            since_request_init: duration(now.saturating_duration_since(self.request_init_at)),
            http_status: u32::from(status),
            headers,
        };
        self.send(pb_http::Event::ResponseInit(init));
    }

    /// Whether the response's head was seen (`response_init` sent).
    pub fn responded(&self) -> bool {
        self.response_init_at.is_some()
    }

    /// Counts response body bytes.
    pub fn response_bytes(&mut self, n: u64) {
        self.response_bytes += n;
    }

    /// The response's `grpc-status` (from its trailers).
    pub fn grpc_status(&mut self, code: u32) {
        self.grpc_status = Some(code);
    }

    /// The response ended: `response_end`, with its trailers when headers are extracted.
    pub fn end(mut self, trailers: Option<&dyn HeaderSource>) {
        let end = self.grpc_status.map(api::eos::End::GrpcStatusCode);
        let trailers = trailers.filter(|_| self.headers).map(|t| {
            let mut out = Vec::new();
            t.each(&mut |name, value| push(&mut out, name, value));
            http_types::Headers { headers: out }
        });
        self.finish(end, trailers);
    }

    /// The exchange failed (reset with `reset_code`, an HTTP/2 error code, when there was
    /// one): `response_end` with that code.
    pub fn fail(mut self, reset_code: Option<u32>) {
        let end = reset_code.map(api::eos::End::ResetErrorCode);
        self.finish(end, None);
    }

    fn finish(&mut self, end: Option<api::eos::End>, trailers: Option<http_types::Headers>) {
        let now = Instant::now();
        let end = pb_http::ResponseEnd {
            id: Some(self.id),
            since_request_init: duration(now.saturating_duration_since(self.request_init_at)),
            since_response_init: self
                .response_init_at
                .and_then(|at| duration(now.saturating_duration_since(at))),
            response_bytes: self.response_bytes,
            eos: Some(api::Eos { end }),
            trailers,
        };
        self.send(pb_http::Event::ResponseEnd(end));
    }

    fn send(&self, event: pb_http::Event) {
        let event = with_event(self.base.clone(), event);
        match self.events.try_send(event) {
            Ok(()) => {
                self.metrics.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

// === impl TapMetrics ===

impl TapMetrics {
    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP tap_events_total Tap events sent to tap clients, and dropped because a \
             client read too slowly.\n\
             # TYPE tap_events_total counter\n\
             tap_events_total{{result=\"sent\"}} {}\n\
             tap_events_total{{result=\"dropped\"}} {}\n\
             # HELP tap_observe_total Tap Observe calls, accepted and refused.\n\
             # TYPE tap_observe_total counter\n\
             tap_observe_total{{result=\"accepted\"}} {}\n\
             tap_observe_total{{result=\"refused\"}} {}\n\
             # HELP tap_observe_active Tap Observe calls being served.\n\
             # TYPE tap_observe_active gauge\n\
             tap_observe_active {}\n",
            load(&self.sent),
            load(&self.dropped),
            load(&self.observes),
            load(&self.refused),
            load(&self.active),
        )
    }
}

// === functions ===

/// The metadata every event of a request carries (linkerd2-proxy's `base_event`).
fn base_event(req: &TapRequest<'_>) -> api::TapEvent {
    let direction = if req.outbound {
        api::tap_event::ProxyDirection::Outbound
    } else {
        api::tap_event::ProxyDirection::Inbound
    };
    let mut source_meta = api::tap_event::EndpointMeta::default();
    tls_labels(&mut source_meta.labels, req.src_tls, "client_id");
    let destination_meta = req.dst_meta.map(|(labels, tls)| {
        let mut meta = api::tap_event::EndpointMeta {
            labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        tls_labels(&mut meta.labels, tls, "server_id");
        meta
    });
    api::TapEvent {
        proxy_direction: direction.into(),
        source: Some(tcp_address(req.observed.src)),
        source_meta: Some(source_meta),
        destination: Some(tcp_address(req.observed.dst)),
        destination_meta,
        route_meta: None,
        event: None,
    }
}

fn tls_labels(labels: &mut std::collections::HashMap<String, String>, tls: TapTls<'_>, peer: &str) {
    match tls {
        TapTls::Established { peer: id } => {
            labels.insert("tls".into(), "true".into());
            labels.insert(peer.into(), id.unwrap_or_default().into());
        }
        TapTls::None(reason) => {
            labels.insert("tls".into(), reason.into());
        }
    }
}

fn tcp_address(addr: SocketAddr) -> linkerd2_proxy_api::net::TcpAddress {
    linkerd2_proxy_api::net::TcpAddress::from(addr)
}

fn with_event(mut base: api::TapEvent, event: pb_http::Event) -> api::TapEvent {
    base.event = Some(api::tap_event::Event::Http(api::tap_event::Http {
        event: Some(event),
    }));
    base
}

fn push(out: &mut Vec<http_types::headers::Header>, name: &str, value: &[u8]) {
    out.push(http_types::headers::Header {
        name: name.to_string(),
        value: value.to_vec(),
    });
}

fn method(method: &str) -> http_types::HttpMethod {
    match http::Method::from_bytes(method.as_bytes()) {
        Ok(m) => http_types::HttpMethod::from(m),
        Err(_) => http_types::HttpMethod {
            r#type: Some(http_types::http_method::Type::Unregistered(
                method.to_string(),
            )),
        },
    }
}

fn scheme(scheme: &str) -> http_types::Scheme {
    http_types::Scheme::from(scheme)
}

fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}
