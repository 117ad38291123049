//! One shard: its listeners, its open connections, its buffer pool, and its drain.
//!
//! Everything here lives on one thread (`Rc`, `Cell`, `RefCell`); the only value that
//! crosses threads is the shutdown [`PhaseRx`] published by the control thread.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future::or;
use ringlink_control::thread::{Phase, PhaseRx};
use slab::Slab;

use crate::forward;
use crate::metrics::{HttpFamilies, HttpMetrics, Peer, PeerMetrics, TcpMetrics, TcpUsage};
use crate::orig_dst::{FixedOrigDst, KernelOrigDst, OrigDst};
use crate::pool::Pool;
use crate::rt::{Listener, Runtime, ShardMain};
use crate::sys;

/// Large copy buffers kept for reuse per shard (64 KiB each, so at most 16 MiB).
const MAX_POOLED_BUFFERS: usize = 256;
/// Pause after a failed accept (e.g. EMFILE) so that a shard does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

// === types ===

/// Which side of the pod a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the local application to the world, redirected to the outbound port.
    Outbound,
    /// From the world to the local application, redirected to the inbound port.
    Inbound,
}

/// Settings every shard shares (read-only, built once at startup).
#[derive(Debug)]
pub struct ShardSettings {
    pub inbound_connect_timeout: Duration,
    pub outbound_connect_timeout: Duration,
    pub shutdown_grace_period: Duration,
    /// The addresses the proxy's listeners are bound to, for loop detection.
    pub own_addrs: Vec<SocketAddr>,
    pub orig_dst_override: Option<SocketAddr>,
    /// How long an unused metric series is kept.
    pub metrics_retain_idle: Duration,
    /// Whether TCP and HTTP metrics are recorded (`RINGLINK_METRICS_RECORDING`).
    pub metrics_recording: bool,
    pub inbound_detect_timeout: Duration,
    pub outbound_detect_timeout: Duration,
    /// Inbound ports whose traffic skips detection.
    pub inbound_opaque_ports: ringlink_control::PortSet,
    /// HTTP/2 client connections are pinged this often (`[inbound, outbound]`; zero: never).
    pub h2_keepalive_interval: [Duration; 2],
    /// An unanswered ping closes the connection after this long (`[inbound, outbound]`).
    pub h2_keepalive_timeout: [Duration; 2],
    /// Idle upstream HTTP/1 connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// At most this many idle upstream HTTP/1 connections per endpoint.
    pub max_idle_conns_per_endpoint: usize,
    /// Whether a Destination service is configured (names under `profile_suffixes` in
    /// redirected HTTP traffic are then balanced over its endpoints).
    pub destination: bool,
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES`.
    pub profile_suffixes: Vec<String>,
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS`.
    pub profile_networks: Vec<ringlink_control::config::Cidr>,
    /// `[inbound, outbound]` queue capacity per balancer, failfast timeout and idle timeout
    /// of a destination.
    pub http_queue_capacity: [usize; 2],
    pub http_failfast_timeout: [Duration; 2],
    pub discovery_idle_timeout: [Duration; 2],
}

/// What a shard thread is handed at startup (crosses into the shard thread once).
pub struct ShardSeed {
    pub index: usize,
    pub settings: Arc<ShardSettings>,
    pub listeners: Vec<(Direction, std::net::TcpListener)>,
    pub phase: PhaseRx,
    pub tcp: TcpMetrics,
    pub http: HttpFamilies,
    /// Requests to the control thread's resolver.
    pub dns: ringlink_control::dns::DnsTx,
    /// Requests to the control thread's destination watches.
    pub dst: ringlink_control::dst::DstTx,
    pub balancer: crate::dst::BalancerFamilies,
}

/// A shard's own state, shared by its tasks through `Rc`.
pub struct ShardState {
    pub index: usize,
    pub settings: Arc<ShardSettings>,
    pub orig_dst: Box<dyn OrigDst>,
    pub tcp: TcpMetrics,
    pub tcp_usage: TcpUsage,
    pub http_metrics: HttpMetrics,
    /// Open connections' sockets (client, upstream), so that a drain can close them, and
    /// whether the connection is idle between HTTP requests.
    conns: RefCell<Slab<([RawFd; 2], bool)>>,
    /// Set once the drain begins: HTTP connections close after their current request.
    draining: Cell<bool>,
    /// The upstream HTTP/1 connection pool, a `pool::Pool<R>` for the shard's runtime.
    pool: std::cell::OnceCell<Box<dyn std::any::Any>>,
    pub dns: crate::dns::ShardDns,
    pub dsts: crate::dst::Dsts,
    /// Tasks still running (accept loops and connections); the shard ends at zero.
    tasks: Cell<usize>,
    /// Set once the grace period is over: connections still opening are closed at once.
    closing: Cell<bool>,
    /// The shard's main task, waiting for `tasks` to reach zero.
    drain_waiter: Cell<Option<Waker>>,
    buffers: RefCell<Vec<Vec<u8>>>,
}

/// Counts a running task for as long as it lives.
pub struct TaskGuard(Rc<ShardState>);

/// An open connection's entry in the shard's table; removed on drop.
pub struct ConnEntry {
    state: Rc<ShardState>,
    key: usize,
}

// === impl Direction ===

impl Direction {
    /// The index of this direction's value in `[inbound, outbound]` settings.
    pub fn index(self) -> usize {
        match self {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl ShardSettings ===

impl ShardSettings {
    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_CONNECT_TIMEOUT` for `direction`.
    pub fn connect_timeout(&self, direction: Direction) -> Duration {
        match direction {
            Direction::Outbound => self.outbound_connect_timeout,
            Direction::Inbound => self.inbound_connect_timeout,
        }
    }

    /// `LINKERD2_PROXY_{INBOUND,OUTBOUND}_DETECT_TIMEOUT` for `direction`.
    pub fn detect_timeout(&self, direction: Direction) -> Duration {
        match direction {
            Direction::Outbound => self.outbound_detect_timeout,
            Direction::Inbound => self.inbound_detect_timeout,
        }
    }
}

// === impl ShardSeed ===

impl ShardMain for ShardSeed {
    fn run<R: Runtime>(self) -> impl Future<Output = ()> {
        run::<R>(self)
    }
}

// === impl ShardState ===

impl ShardState {
    fn new(
        index: usize,
        settings: Arc<ShardSettings>,
        tcp: TcpMetrics,
        http: HttpFamilies,
        dns: ringlink_control::dns::DnsTx,
        dsts: crate::dst::Dsts,
    ) -> Self {
        let orig_dst: Box<dyn OrigDst> = match settings.orig_dst_override {
            Some(addr) => Box::new(FixedOrigDst(addr)),
            None => Box::new(KernelOrigDst),
        };
        let http_metrics = HttpMetrics::new(http, settings.metrics_recording);
        ShardState {
            index,
            settings,
            orig_dst,
            http_metrics,
            tcp,
            tcp_usage: TcpUsage::default(),
            conns: RefCell::new(Slab::new()),
            draining: Cell::new(false),
            pool: std::cell::OnceCell::new(),
            dns: crate::dns::ShardDns::new(dns),
            dsts,
            tasks: Cell::new(0),
            closing: Cell::new(false),
            drain_waiter: Cell::new(None),
            buffers: RefCell::new(Vec::new()),
        }
    }

    pub fn task(self: &Rc<Self>) -> TaskGuard {
        self.tasks.set(self.tasks.get() + 1);
        TaskGuard(self.clone())
    }

    pub fn register(self: &Rc<Self>, client: RawFd) -> ConnEntry {
        let key = self.conns.borrow_mut().insert(([client, -1], false));
        ConnEntry {
            state: self.clone(),
            key,
        }
    }

    /// Records a TCP connection opening on this shard and returns its series.
    pub fn tcp_open(&self, direction: Direction, peer: Peer, target: SocketAddr) -> PeerMetrics {
        if !self.settings.metrics_recording {
            return self.tcp.unrecorded();
        }
        self.tcp.open(&self.tcp_usage, direction, peer, target)
    }

    /// Records a TCP connection closing, with the error that ended it, if any.
    pub fn tcp_close(&self, metrics: PeerMetrics, error: Option<&std::io::Error>) {
        metrics.close(&self.tcp_usage, error);
    }

    /// The shard's pool of idle upstream HTTP/1 connections.
    pub fn pool<R: Runtime>(&self) -> &Pool<R> {
        self.pool
            .get_or_init(|| {
                Box::new(Pool::<R>::new(
                    self.settings.max_idle_conns_per_endpoint,
                    self.settings.pool_idle_timeout,
                ))
            })
            .downcast_ref()
            .expect("a shard runs on one runtime")
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts the drain: HTTP connections idle between requests are closed now (their
    /// tasks see end of stream), busy ones after their current response.
    fn start_drain(&self) {
        self.draining.set(true);
        for (_, (fds, idle)) in self.conns.borrow().iter() {
            if *idle {
                let _ = sys::shutdown(fds[0], std::net::Shutdown::Both);
            }
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Whether `dst` is one of the proxy's own listeners, which forwarding to would loop.
    pub fn is_own_listener(&self, dst: SocketAddr, local: SocketAddr) -> bool {
        dst == local
            || self.settings.own_addrs.iter().any(|own| {
                own.port() == dst.port()
                    && (own.ip() == dst.ip()
                        || (own.ip().is_unspecified()
                            && (dst.ip().is_loopback() || dst.ip() == local.ip())))
            })
    }

    /// A 64 KiB copy buffer, from the pool when one is free.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(forward::LARGE_BUFFER))
    }

    pub fn return_buffer(&self, buf: Vec<u8>) {
        let mut buffers = self.buffers.borrow_mut();
        if buf.capacity() == forward::LARGE_BUFFER && buffers.len() < MAX_POOLED_BUFFERS {
            buffers.push(buf);
        }
    }

    /// Shuts down every open connection's sockets; their tasks then see end-of-stream or an
    /// error and return by themselves.
    fn close_all(&self) {
        self.closing.set(true);
        for (_, (fds, _)) in self.conns.borrow().iter() {
            for fd in fds.iter().copied().filter(|fd| *fd >= 0) {
                let _ = sys::shutdown(fd, std::net::Shutdown::Both);
            }
        }
    }

    fn open_connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Completes once no task is left.
    async fn tasks_done(&self) {
        poll_fn(|cx| {
            if self.tasks.get() == 0 {
                Poll::Ready(())
            } else {
                self.drain_waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

// === impl TaskGuard ===

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let left = self.0.tasks.get() - 1;
        self.0.tasks.set(left);
        if left == 0 {
            if let Some(waker) = self.0.drain_waiter.take() {
                waker.wake();
            }
        }
    }
}

// === impl ConnEntry ===

impl ConnEntry {
    pub fn set_upstream(&self, fd: RawFd) {
        if let Some((fds, _)) = self.state.conns.borrow_mut().get_mut(self.key) {
            fds[1] = fd;
        }
    }

    /// Marks the connection idle between HTTP requests (closed at once by a drain) or not.
    pub fn set_idle(&self, idle: bool) {
        if let Some((_, entry)) = self.state.conns.borrow_mut().get_mut(self.key) {
            *entry = idle;
        }
        if idle && self.state.is_draining() {
            if let Some(([client, _], _)) = self.state.conns.borrow().get(self.key) {
                let _ = sys::shutdown(*client, std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for ConnEntry {
    fn drop(&mut self) {
        self.state.conns.borrow_mut().remove(self.key);
    }
}

// === functions ===

/// A shard's life: serve until the control thread says drain, then let connections finish
/// within the grace period, then close the rest and wait for every task to return.
pub async fn run<R: Runtime>(seed: ShardSeed) {
    let ShardSeed {
        index,
        settings,
        listeners,
        mut phase,
        tcp,
        http,
        dns,
        dst,
        balancer,
    } = seed;
    let seed = (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ std::process::id() as u64;
    let dsts = crate::dst::Dsts::new(dst, balancer, seed, phase.clone());
    let state = Rc::new(ShardState::new(index, settings, tcp, http, dns, dsts));
    for (direction, listener) in listeners {
        let addr = listener.local_addr().ok();
        match R::listener(listener) {
            Ok(listener) => R::spawn(accept_loop::<R>(
                state.task(),
                state.clone(),
                direction,
                listener,
                phase.clone(),
            )),
            Err(error) => {
                tracing::error!(shard = index, %direction, ?addr, %error, "Listener failed");
            }
        }
    }

    R::spawn(evict_loop::<R>(state.task(), state.clone(), phase.clone()));
    R::spawn(pool_sweep_loop::<R>(
        state.task(),
        state.clone(),
        phase.clone(),
    ));

    let _ = phase.wait_for(|p| *p != Phase::Serving).await;
    state.start_drain();
    state.pool::<R>().clear();
    let grace = state.settings.shutdown_grace_period;
    tracing::debug!(
        shard = index,
        connections = state.open_connections(),
        ?grace,
        "Draining"
    );
    let drained = or(
        async {
            state.tasks_done().await;
            true
        },
        async {
            or(R::sleep(grace), async {
                let _ = phase.wait_for(|p| *p == Phase::Closing).await;
            })
            .await;
            false
        },
    )
    .await;
    if !drained {
        tracing::info!(
            shard = index,
            connections = state.open_connections(),
            "Closing connections left after the grace period"
        );
        state.close_all();
        state.tasks_done().await;
    }
    tracing::debug!(shard = index, "Shard stopped");
}

/// Drops idle metric series every quarter of the retention period, until the drain.
async fn evict_loop<R: Runtime>(task: TaskGuard, state: Rc<ShardState>, phase: PhaseRx) {
    let retain = state.settings.metrics_retain_idle;
    let every = (retain / 4).max(Duration::from_millis(100));
    every_until_drain::<R>(task, phase, every, || {
        let evicted = state.tcp_usage.evict(&state.tcp, retain) + state.http_metrics.evict(retain);
        if evicted > 0 {
            tracing::debug!(shard = state.index, evicted, "Dropped idle metric series");
        }
    })
    .await
}

/// Closes expired idle upstream connections, until the drain.
async fn pool_sweep_loop<R: Runtime>(task: TaskGuard, state: Rc<ShardState>, phase: PhaseRx) {
    let every = (state.settings.pool_idle_timeout / 2).max(Duration::from_millis(50));
    every_until_drain::<R>(task, phase, every, || {
        let closed = state.pool::<R>().sweep();
        if closed > 0 {
            tracing::debug!(
                shard = state.index,
                closed,
                "Closed idle upstream connections"
            );
        }
    })
    .await
}

/// Runs `work` every `every` on the shard's timer until the drain begins.
async fn every_until_drain<R: Runtime>(
    _task: TaskGuard,
    mut phase: PhaseRx,
    every: Duration,
    mut work: impl FnMut(),
) {
    loop {
        let draining = or(
            async {
                R::sleep(every).await;
                false
            },
            async {
                let _ = phase.wait_for(|p| *p != Phase::Serving).await;
                true
            },
        )
        .await;
        if draining {
            return;
        }
        work();
    }
}

async fn accept_loop<R: Runtime>(
    _task: TaskGuard,
    state: Rc<ShardState>,
    direction: Direction,
    listener: R::Listener,
    mut phase: PhaseRx,
) {
    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            let _ = phase.wait_for(|p| *p != Phase::Serving).await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                R::spawn(forward::serve::<R>(
                    state.task(),
                    state.clone(),
                    direction,
                    stream,
                    peer,
                    phase.clone(),
                ));
            }
            Some(Err(error)) => {
                tracing::warn!(shard = state.index, %direction, %error, "Accept failed");
                R::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    // Dropping the listener closes it: this shard takes no new connections.
}
