//! Per-shard pools of idle upstream HTTP/1 connections, keyed by endpoint address.
//!
//! A connection is pooled only after a response left it clean (whole body read, nothing
//! extra, server kept it alive). Taking one checks, without blocking, that the server has not
//! closed it meanwhile (`sys::is_idle_and_open`): a reused connection that the server closed
//! is the classic source of spurious 502s. Idle connections expire after the pool's idle
//! timeout (checked when taken and by a sweep), and at most `max_idle` wait per endpoint.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::cell::Cell;

use crate::conn::{Direction, TlsStatus};
use crate::io::{Transport, SMALL_BUFFER};
use crate::rt::{Runtime, Stream};
use crate::telemetry::{Peer, PeerMetrics, Tcp};

// === types ===

/// An open connection to an upstream endpoint, split for concurrent use by one task.
pub struct Upstream<R: Runtime> {
    pub rx: <Transport<R> as Stream>::Reader,
    pub tx: <Transport<R> as Stream>::Writer,
    pub fd: RawFd,
    pub addr: SocketAddr,
    /// Whether it carried a request before this one.
    pub reused: bool,
    /// Its read buffer, kept between requests (empty whenever it is pooled).
    pub buf: Vec<u8>,
    metrics: Option<PeerMetrics>,
    /// The error that ended it, for `tcp_close_total{errno}`.
    pub error: Option<io::Error>,
    tcp: Rc<Tcp>,
}

/// The shard's idle connections for one runtime.
pub struct Pool<R: Runtime> {
    idle: RefCell<HashMap<SocketAddr, VecDeque<Idle<R>>>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Cleared for the drain: takes no more connections.
    closed: Cell<bool>,
}

struct Idle<R: Runtime> {
    conn: Upstream<R>,
    since: Instant,
}

// === impl Upstream ===

impl<R: Runtime> Upstream<R> {
    /// Wraps an open connection to `addr`, counting it in the TCP metrics until it drops.
    pub fn new(
        tcp: &Rc<Tcp>,
        direction: Direction,
        addr: SocketAddr,
        stream: Transport<R>,
        tls: &TlsStatus,
    ) -> Self {
        let fd = stream.as_raw_fd();
        let metrics = tcp.open(direction, Peer::Dst, addr, tls);
        let (rx, tx) = stream.into_split();
        Upstream {
            rx,
            tx,
            fd,
            addr,
            reused: false,
            buf: Vec::with_capacity(SMALL_BUFFER),
            metrics: Some(metrics),
            error: None,
            tcp: tcp.clone(),
        }
    }

    pub fn metrics(&self) -> &PeerMetrics {
        self.metrics.as_ref().expect("metrics live until drop")
    }
}

impl<R: Runtime> Drop for Upstream<R> {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            self.tcp.close(metrics, self.error.as_ref());
        }
    }
}

// === impl Pool ===

impl<R: Runtime> Pool<R> {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle,
            idle_timeout,
            closed: Cell::new(false),
        }
    }

    /// The most recently used idle connection to `addr` that is still open, if any.
    pub fn take(&self, addr: SocketAddr) -> Option<Upstream<R>> {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.get_mut(&addr)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(entry) = conns.pop_back() {
            if now.duration_since(entry.since) < self.idle_timeout
                && crate::sys::is_idle_and_open(entry.conn.fd)
            {
                found = Some(entry.conn);
                break;
            }
            // Expired or closed by the server: dropped here, never used.
        }
        if conns.is_empty() {
            idle.remove(&addr);
        }
        let mut conn = found?;
        conn.reused = true;
        Some(conn)
    }

    /// Keeps `conn` for a later request, dropping the oldest idle one to `conn.addr` if the
    /// endpoint already has `max_idle`.
    pub fn put(&self, conn: Upstream<R>) {
        if self.max_idle == 0 || self.closed.get() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let conns = idle.entry(conn.addr).or_default();
        if conns.len() >= self.max_idle {
            conns.pop_front();
        }
        conns.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes connections idle for longer than the timeout; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut closed = 0;
        let mut expired = Vec::new();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, conns| {
            while conns
                .front()
                .is_some_and(|c| now.duration_since(c.since) >= self.idle_timeout)
            {
                expired.extend(conns.pop_front());
                closed += 1;
            }
            !conns.is_empty()
        });
        drop(idle);
        drop(expired);
        closed
    }

    /// Closes every idle connection and takes no more (the shard is draining).
    pub fn clear(&self) {
        self.closed.set(true);
        let all = std::mem::take(&mut *self.idle.borrow_mut());
        drop(all);
    }
}
