//! Linkerd's TCP metric families, recorded per shard; the HTTP families are in [`http`].
//!
//! Each shard has its own registry (with a `shard` const label), so the request path only
//! touches counters no other core writes. Label lookups (a hash and a read lock inside the
//! prometheus crate) happen once per connection when it opens; per read and write the shard
//! only adds to counters it already holds. With recording off
//! (`RINGLINK_METRICS_RECORDING=off`), a connection gets [`TcpMetrics::unrecorded`] series:
//! no lookup, no usage tracking, and its byte counts go to counters no registry exposes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::conn::{Direction, NoTlsReason, TlsStatus};

mod authz;
mod http;
mod tap;

use http::OmitEmptyLabels;
pub use http::{HttpFamilies, HttpMetrics, RequestMetrics, RouteCache, RouteStatus};
pub use tap::{h1_path_and_query, h1_scheme, H1Headers, ShardTaps, TapView};

/// Labels of every TCP series (besides the registry's `shard`): `direction`, `peer`, `tls`,
/// `target_addr`, `target_ip`, `target_port`, and as Linkerd adds them to `tls`,
/// `client_id` (a meshed client's), `server_id` (a meshed endpoint's) and `no_tls_reason`;
/// empty ones are left out of the page.
const LABELS: usize = 9;

// === types ===

/// The TCP families of one shard (shared handles: cloning is cheap).
#[derive(Clone)]
pub struct TcpMetrics {
    /// `protocol_detect_total{direction, protocol}`: what detection decided, per connection.
    detect: IntCounterVec,
    open_total: IntCounterVec,
    close_total: IntCounterVec,
    open_connections: IntGaugeVec,
    read_bytes: IntCounterVec,
    write_bytes: IntCounterVec,
    /// Counters in no registry, for connections not recorded.
    unrecorded: [IntCounter; 2],
    unrecorded_open: IntGauge,
}

/// A shard's TCP recording: its families, which series it uses, and whether it records at
/// all. Shard-local; services hold it in an `Rc`.
pub struct Tcp {
    metrics: TcpMetrics,
    usage: TcpUsage,
    recording: bool,
    /// The TLS status of plaintext upstream connections, per direction.
    plaintext: [TlsStatus; 2],
}

/// What protocol detection decided for a connection: the `protocol` label of
/// `protocol_detect_total`. One enum, so that a typo cannot make a new series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    H2,
    Tls,
    Opaque,
    /// The server spoke first.
    ServerFirst,
    /// Nobody spoke within the detect timeout.
    Timeout,
    /// The client closed before detection decided.
    ClientClosed,
    /// An inbound port in `LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`.
    OpaquePort,
    /// An outbound destination whose profile says opaque.
    OpaqueProfile,
}

/// Which end of a proxied connection a series describes.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    /// The client that connected to the proxy.
    Src,
    /// The server the proxy connected to.
    Dst,
}

/// Which label sets a shard uses and since when they are idle, so that series for
/// destinations no longer talked to are dropped (`LINKERD2_PROXY_METRICS_RETAIN_IDLE`) and the
/// page cannot grow without bound. Shard-local.
#[derive(Default)]
pub struct TcpUsage {
    /// By label set; each open connection shares its set's `Rc` rather than a copy.
    entries: RefCell<HashMap<Rc<[String; LABELS]>, Usage>>,
}

struct Usage {
    open: usize,
    last: Instant,
    errnos: Vec<String>,
}

/// One open connection's series, looked up once.
pub struct PeerMetrics {
    /// `None` for an unrecorded connection.
    labels: Option<Rc<[String; LABELS]>>,
    close_total: IntCounterVec,
    open: IntGauge,
    pub read_bytes: IntCounter,
    pub write_bytes: IntCounter,
}

// === impl TcpMetrics ===

impl TcpMetrics {
    /// A registry for shard `index` with the TCP families registered in it.
    pub fn for_shard(index: usize) -> prometheus::Result<(Registry, TcpMetrics)> {
        let labels = HashMap::from([("shard".to_string(), index.to_string())]);
        let registry = Registry::new_custom(None, Some(labels))?;
        let names: [&str; LABELS] = [
            "direction",
            "peer",
            "tls",
            "target_addr",
            "target_ip",
            "target_port",
            "client_id",
            "server_id",
            "no_tls_reason",
        ];
        let counter =
            |name: &str, help: &str, extra: &[&str]| -> prometheus::Result<IntCounterVec> {
                let labels: Vec<&str> = names.iter().chain(extra).copied().collect();
                let family = IntCounterVec::new(Opts::new(name, help), &labels)?;
                registry.register(Box::new(OmitEmptyLabels(family.clone())))?;
                Ok(family)
            };
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "tcp_open_connections",
                "Number of currently open connections",
            ),
            &names,
        )?;
        registry.register(Box::new(OmitEmptyLabels(open_connections.clone())))?;
        let detect = IntCounterVec::new(
            Opts::new(
                "protocol_detect_total",
                "Total count of connections by the protocol detection found (ringlink's own)",
            ),
            &["direction", "protocol"],
        )?;
        registry.register(Box::new(detect.clone()))?;
        let metrics = TcpMetrics {
            detect,
            open_total: counter("tcp_open_total", "Total count of opened connections", &[])?,
            close_total: counter(
                "tcp_close_total",
                "Total count of closed connections",
                &["errno"],
            )?,
            open_connections,
            read_bytes: counter(
                "tcp_read_bytes_total",
                "Total count of bytes read from peers",
                &[],
            )?,
            write_bytes: counter(
                "tcp_write_bytes_total",
                "Total count of bytes written to peers",
                &[],
            )?,
            unrecorded: [
                IntCounter::new("unrecorded_read_bytes", "Not exposed")?,
                IntCounter::new("unrecorded_write_bytes", "Not exposed")?,
            ],
            unrecorded_open: IntGauge::new("unrecorded_open", "Not exposed")?,
        };
        Ok((registry, metrics))
    }

    /// Counts one connection whose protocol detection decided `protocol`.
    pub fn detected(&self, direction: Direction, protocol: Detected) {
        self.detect
            .with_label_values(&[direction.as_str(), protocol.as_str()])
            .inc();
    }

    /// Records a connection opening and returns its series.
    pub fn open(
        &self,
        usage: &TcpUsage,
        direction: Direction,
        peer: Peer,
        target: SocketAddr,
        tls: &TlsStatus,
    ) -> PeerMetrics {
        let labels = [
            direction.as_str().to_string(),
            match peer {
                Peer::Src => "src",
                Peer::Dst => "dst",
            }
            .to_string(),
            tls.label().to_string(),
            target.to_string(),
            target.ip().to_string(),
            target.port().to_string(),
            match peer {
                Peer::Src => tls.peer().unwrap_or_default().to_string(),
                Peer::Dst => String::new(),
            },
            match peer {
                Peer::Src => String::new(),
                Peer::Dst => tls.peer().unwrap_or_default().to_string(),
            },
            tls.no_tls_reason().to_string(),
        ];
        let labels = usage.opened(labels);
        let values: [&str; LABELS] = labels.each_ref().map(String::as_str);
        self.open_total.with_label_values(&values).inc();
        let open = self.open_connections.with_label_values(&values);
        open.inc();
        PeerMetrics {
            read_bytes: self.read_bytes.with_label_values(&values),
            write_bytes: self.write_bytes.with_label_values(&values),
            close_total: self.close_total.clone(),
            open,
            labels: Some(labels),
        }
    }

    /// Series for a connection that is not recorded: the same handles, counting where no
    /// page shows it, without a label lookup.
    pub fn unrecorded(&self) -> PeerMetrics {
        let [read_bytes, write_bytes] = self.unrecorded.clone();
        PeerMetrics {
            labels: None,
            close_total: self.close_total.clone(),
            open: self.unrecorded_open.clone(),
            read_bytes,
            write_bytes,
        }
    }
}

// === impl Tcp ===

impl Tcp {
    pub fn new(metrics: TcpMetrics, recording: bool, identity: bool) -> Self {
        Tcp {
            metrics,
            usage: TcpUsage::default(),
            recording,
            plaintext: [
                TlsStatus::plaintext(identity, NoTlsReason::Loopback),
                TlsStatus::plaintext(identity, NoTlsReason::NotProvidedByServiceDiscovery),
            ],
        }
    }

    /// The TLS status of a plaintext upstream connection of `direction` on this proxy: to
    /// the pod's own application (inbound), or to an endpoint discovery gave no identity.
    pub fn plaintext(&self, direction: Direction) -> &TlsStatus {
        match direction {
            Direction::Inbound => &self.plaintext[0],
            Direction::Outbound => &self.plaintext[1],
        }
    }

    /// Records a TCP connection opening and returns its series.
    pub fn open(
        &self,
        direction: Direction,
        peer: Peer,
        target: SocketAddr,
        tls: &TlsStatus,
    ) -> PeerMetrics {
        if !self.recording {
            return self.metrics.unrecorded();
        }
        self.metrics.open(&self.usage, direction, peer, target, tls)
    }

    /// Records a TCP connection closing, with the error that ended it, if any.
    pub fn close(&self, metrics: PeerMetrics, error: Option<&io::Error>) {
        metrics.close(&self.usage, error);
    }

    /// Counts what detection decided for a connection.
    pub fn detected(&self, direction: Direction, protocol: Detected) {
        if self.recording {
            self.metrics.detected(direction, protocol);
        }
    }

    /// Drops series idle for `retain`; returns how many label sets went.
    pub fn evict(&self, retain: Duration) -> usize {
        self.usage.evict(&self.metrics, retain)
    }
}

// === impl Detected ===

impl Detected {
    pub fn as_str(self) -> &'static str {
        match self {
            Detected::Http1 => "http/1",
            Detected::H2 => "h2",
            Detected::Tls => "tls",
            Detected::Opaque => "opaque",
            Detected::ServerFirst => "server-first",
            Detected::Timeout => "timeout",
            Detected::ClientClosed => "client-closed",
            Detected::OpaquePort => "opaque-port",
            Detected::OpaqueProfile => "opaque-profile",
        }
    }
}

// === impl PeerMetrics ===

impl PeerMetrics {
    /// Records the close, with the errno of the error that ended it, if any.
    pub fn close(self, usage: &TcpUsage, error: Option<&io::Error>) {
        let Some(labels) = &self.labels else {
            return;
        };
        self.open.dec();
        let errno = error.map(errno_name).unwrap_or_default();
        usage.closed(labels, &errno);
        let mut values: Vec<&str> = labels.iter().map(String::as_str).collect();
        values.push(&errno);
        self.close_total.with_label_values(&values).inc();
    }
}

// === impl TcpUsage ===

impl TcpUsage {
    /// Counts a connection of `labels` open; the label set, shared with the others.
    fn opened(&self, labels: [String; LABELS]) -> Rc<[String; LABELS]> {
        let mut entries = self.entries.borrow_mut();
        let now = Instant::now();
        let shared = match entries.get_key_value(&labels) {
            Some((shared, _)) => shared.clone(),
            None => Rc::new(labels),
        };
        let usage = entries.entry(shared.clone()).or_insert_with(|| Usage {
            open: 0,
            last: now,
            errnos: Vec::new(),
        });
        usage.open += 1;
        usage.last = now;
        shared
    }

    fn closed(&self, labels: &[String; LABELS], errno: &str) {
        if let Some(usage) = self.entries.borrow_mut().get_mut(labels) {
            usage.open = usage.open.saturating_sub(1);
            usage.last = Instant::now();
            if !usage.errnos.iter().any(|e| e == errno) {
                usage.errnos.push(errno.to_string());
            }
        }
    }

    /// Drops the series of label sets with no open connection and no activity for `retain`.
    /// Returns how many label sets were dropped.
    pub fn evict(&self, metrics: &TcpMetrics, retain: Duration) -> usize {
        let now = Instant::now();
        let mut entries = self.entries.borrow_mut();
        let before = entries.len();
        entries.retain(|labels, usage| {
            if usage.open > 0 || now.duration_since(usage.last) < retain {
                return true;
            }
            let values: [&str; LABELS] = labels.each_ref().map(String::as_str);
            let _ = metrics.open_total.remove_label_values(&values);
            let _ = metrics.open_connections.remove_label_values(&values);
            let _ = metrics.read_bytes.remove_label_values(&values);
            let _ = metrics.write_bytes.remove_label_values(&values);
            for errno in &usage.errnos {
                let mut with_errno = values.to_vec();
                with_errno.push(errno);
                let _ = metrics.close_total.remove_label_values(&with_errno);
            }
            false
        });
        before - entries.len()
    }
}

/// Linkerd's `errno` label: the symbolic name of the OS error.
fn errno_name(error: &io::Error) -> String {
    let name = match error.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::ECONNABORTED) => "ECONNABORTED",
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH",
        Some(libc::ENETUNREACH) => "ENETUNREACH",
        Some(code) => return format!("E{code}"),
        None if error.kind() == io::ErrorKind::TimedOut => "ETIMEDOUT",
        None => return String::new(),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus::{Encoder, TextEncoder};

    use super::*;

    fn page(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Linkerd's TLS labels: `server_id` on a meshed endpoint's series, `client_id` on a
    /// meshed client's, `no_tls_reason` on plaintext ones, and no empty label but `errno`.
    #[test]
    fn tls_labels_are_linkerds() {
        let (registry, metrics) = TcpMetrics::for_shard(0).unwrap();
        let tcp = Tcp::new(metrics, true, true);
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let meshed = TlsStatus::Established {
            peer: Some(Arc::from(
                "web.ns.serviceaccount.identity.linkerd.cluster.local",
            )),
        };
        let dst = tcp.open(Direction::Outbound, Peer::Dst, addr, &meshed);
        let client = TlsStatus::Established {
            peer: Some(Arc::from(
                "client.ns.serviceaccount.identity.linkerd.cluster.local",
            )),
        };
        let src = tcp.open(Direction::Inbound, Peer::Src, addr, &client);
        let app = tcp.open(
            Direction::Inbound,
            Peer::Dst,
            addr,
            tcp.plaintext(Direction::Inbound),
        );
        tcp.close(app, None);
        let page = page(&registry);
        let line = |prefix: &str, needle: &str| {
            page.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(needle))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let dst_lines = line("tcp_open_total{", "peer=\"dst\",server_id=\"web.ns.");
        assert_eq!(dst_lines.len(), 1, "{page}");
        assert!(!dst_lines[0].contains("client_id"), "{page}");
        assert!(!dst_lines[0].contains("no_tls_reason"), "{page}");
        let src_lines = line("tcp_open_total{", "client_id=\"client.ns.");
        assert_eq!(src_lines.len(), 1, "{page}");
        assert!(src_lines[0].contains("peer=\"src\""), "{page}");
        assert!(!src_lines[0].contains("server_id"), "{page}");
        let app_lines = line("tcp_close_total{", "no_tls_reason=\"loopback\"");
        assert_eq!(app_lines.len(), 1, "{page}");
        assert!(app_lines[0].contains("errno=\"\""), "{page}");
        assert!(app_lines[0].contains("tls=\"no_identity\""), "{page}");
        drop((dst, src));
    }
}
