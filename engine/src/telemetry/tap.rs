//! A shard's side of tap (`linkerd viz tap`): whether anyone is tapping, and offering each
//! HTTP request to the live taps.
//!
//! The control thread's tap server publishes its live taps over a `watch` channel
//! ([`ringlink_control::tap::TapsRx`]). With tap disabled a shard holds nothing; with tap
//! enabled and nobody tapping, [`ShardTaps::active`] costs one atomic load of the channel's
//! version per request. Only then are the request's match view and metadata built; matching
//! runs here, on the shard, and a matched request's events (built here too) go to the tap's
//! bounded channel (see `ringlink_control::tap::registry`). The request's
//! [`RequestMetrics`](super::RequestMetrics) carries the taps that took it, and sends their
//! `response_init` and `response_end` from the same calls that record its metrics.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use ringlink_control::tap::{HeaderSource, Observed, TapRequest, TapSet, TapTls, Tapped, TapsRx};

use crate::balance::Labels;
use crate::conn::{Direction, TlsStatus};

// === types ===

/// One shard's view of the live taps. Shard-local.
#[derive(Default)]
pub struct ShardTaps {
    /// `None`: tap is disabled.
    rx: Option<RefCell<TapsRx>>,
    current: RefCell<Arc<TapSet>>,
}

/// What a tap sees of one HTTP request, from the connection and the request's head.
pub struct TapView<'a> {
    pub direction: Direction,
    /// The client's address.
    pub client: SocketAddr,
    /// Where the request goes: the endpoint (outbound) or the application (inbound).
    pub target: SocketAddr,
    /// The client connection's TLS.
    pub client_tls: &'a TlsStatus,
    /// The request's TLS to its endpoint (outbound: as the metrics' `server_id` sees it).
    pub target_tls: &'a TlsStatus,
    /// The endpoint's discovery labels (outbound).
    pub target_labels: Option<&'a Labels>,
    pub method: &'a str,
    pub scheme: Option<&'a str>,
    pub authority: Option<&'a str>,
    /// The path and query, as the request target carries them.
    pub path_and_query: &'a str,
    pub http2: bool,
    pub headers: &'a dyn HeaderSource,
}

// === impl ShardTaps ===

impl ShardTaps {
    /// A shard's view of the taps `rx` publishes (`None`: tap is disabled).
    pub fn new(rx: Option<TapsRx>) -> ShardTaps {
        let current = rx
            .as_ref()
            .map(|rx| rx.borrow().clone())
            .unwrap_or_default();
        ShardTaps {
            rx: rx.map(RefCell::new),
            current: RefCell::new(current),
        }
    }

    /// The live taps, or `None` when nobody is tapping (the common case: one atomic load).
    #[inline]
    pub fn active(&self) -> Option<Arc<TapSet>> {
        let rx = self.rx.as_ref()?;
        if rx.borrow().has_changed().unwrap_or(false) {
            let set = rx.borrow_mut().borrow_and_update().clone();
            *self.current.borrow_mut() = set;
        }
        let current = self.current.borrow();
        (!current.is_empty()).then(|| current.clone())
    }

    /// Offers a request to the live taps; returns those that took it (none, without
    /// allocating, when nobody is tapping).
    pub fn tap(&self, view: &TapView<'_>) -> Vec<Tapped> {
        let Some(taps) = self.active() else {
            return Vec::new();
        };
        let path = view
            .path_and_query
            .split_once('?')
            .map_or(view.path_and_query, |(path, _)| path);
        let empty = std::collections::BTreeMap::new();
        let dst_labels: &std::collections::BTreeMap<String, String> =
            view.target_labels.map_or(&empty, |labels| labels);
        let observed = Observed {
            src: view.client,
            dst: view.target,
            dst_labels: &dst_labels,
            route_labels: &(),
            scheme: view.scheme,
            method: view.method,
            authority: view.authority,
            path,
        };
        let dst_meta = match view.direction {
            Direction::Outbound => Some((dst_labels, tap_tls(view.target_tls))),
            Direction::Inbound => None,
        };
        let request = TapRequest {
            observed,
            outbound: view.direction == Direction::Outbound,
            src_tls: tap_tls(view.client_tls),
            dst_meta,
            http2: view.http2,
            path_and_query: view.path_and_query,
            headers: view.headers,
        };
        taps.tap(&request)
    }
}

/// A connection's TLS as tap metadata labels it.
fn tap_tls(tls: &TlsStatus) -> TapTls<'_> {
    match tls {
        TlsStatus::Disabled => TapTls::None("disabled"),
        TlsStatus::NoTls(reason) => TapTls::None(reason.as_str()),
        TlsStatus::Established { peer } => TapTls::Established {
            peer: peer.as_deref(),
        },
    }
}

/// An HTTP/1 header block as tap events carry it: names lower-cased, as an HTTP/2 peer (and
/// linkerd2-proxy's `http::HeaderMap`) writes them.
pub struct H1Headers<'a>(pub &'a ringlink_protocols::http1::Headers);

impl HeaderSource for H1Headers<'_> {
    fn each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for header in self.0 {
            f(&header.name.to_ascii_lowercase(), &header.value);
        }
    }
}

/// The path and query of an HTTP/1 request target (origin-form as is; absolute-form from
/// the first `/` after its authority; others: `/`).
pub fn h1_path_and_query(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => "/",
    }
}

/// The scheme of an HTTP/1 request target: its own in absolute-form, else `http` (as
/// linkerd2-proxy's URI normalization gives every HTTP/1 request).
pub fn h1_scheme(target: &str) -> &str {
    match target.split_once("://") {
        Some((scheme, _)) if !scheme.contains('/') => scheme,
        _ => "http",
    }
}
