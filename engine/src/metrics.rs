//! Linkerd's TCP metric families, recorded per shard.
//!
//! Each shard has its own registry (with a `shard` const label), so the request path only
//! touches counters no other core writes. Label lookups (a hash and a read lock inside the
//! prometheus crate) happen once per connection when it opens; per read and write the shard
//! only adds to counters it already holds.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::shard::Direction;

/// `tls` label value until identity exists.
const TLS_DISABLED: &str = "disabled";

// === types ===

/// The TCP families of one shard (shared handles: cloning is cheap).
#[derive(Clone)]
pub struct TcpMetrics {
    open_total: IntCounterVec,
    close_total: IntCounterVec,
    open_connections: IntGaugeVec,
    read_bytes: IntCounterVec,
    write_bytes: IntCounterVec,
}

/// Which end of a proxied connection a series describes.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    /// The client that connected to the proxy.
    Src,
    /// The server the proxy connected to.
    Dst,
}

/// One open connection's series, looked up once.
pub struct PeerMetrics {
    labels: [String; 4],
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
        let names = ["direction", "peer", "tls", "target_addr"];
        let counter =
            |name: &str, help: &str, extra: &[&str]| -> prometheus::Result<IntCounterVec> {
                let labels: Vec<&str> = names.iter().chain(extra).copied().collect();
                let family = IntCounterVec::new(Opts::new(name, help), &labels)?;
                registry.register(Box::new(family.clone()))?;
                Ok(family)
            };
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "tcp_open_connections",
                "Number of currently open connections",
            ),
            &names,
        )?;
        registry.register(Box::new(open_connections.clone()))?;
        let metrics = TcpMetrics {
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
        };
        Ok((registry, metrics))
    }

    /// Records a connection opening and returns its series.
    pub fn open(&self, direction: Direction, peer: Peer, target: SocketAddr) -> PeerMetrics {
        let labels = [
            direction.as_str().to_string(),
            match peer {
                Peer::Src => "src",
                Peer::Dst => "dst",
            }
            .to_string(),
            TLS_DISABLED.to_string(),
            target.to_string(),
        ];
        let values: [&str; 4] = [&labels[0], &labels[1], &labels[2], &labels[3]];
        self.open_total.with_label_values(&values).inc();
        let open = self.open_connections.with_label_values(&values);
        open.inc();
        PeerMetrics {
            read_bytes: self.read_bytes.with_label_values(&values),
            write_bytes: self.write_bytes.with_label_values(&values),
            close_total: self.close_total.clone(),
            open,
            labels,
        }
    }
}

// === impl PeerMetrics ===

impl PeerMetrics {
    /// Records the close, with the errno of the error that ended it, if any.
    pub fn close(self, error: Option<&io::Error>) {
        self.open.dec();
        let errno = error.map(errno_name).unwrap_or_default();
        let [a, b, c, d] = &self.labels;
        self.close_total
            .with_label_values(&[a.as_str(), b, c, d, &errno])
            .inc();
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
