//! One shard's life: build its [`ShardCtx`] from the [`ShardSeed`] the process hands it,
//! accept on its listeners (one task per connection, [`session::serve`]), keep its metric
//! series and idle upstream connections trimmed, and drain when the control thread says so.
//!
//! Everything here lives on one thread (`Rc`, `Cell`, `RefCell`). What crosses threads:
//! the seed (once), the shutdown phase and endpoint snapshots (watch channels), and DNS and
//! destination requests to the control thread (bounded channels with one-shot replies).

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::or;
use ringlink_control::thread::{Phase, PhaseRx};

use crate::conn::Direction;
use crate::ctx::ShardCtx;
use crate::discover::{BalancerFamilies, Dsts, ShardDns};
use crate::identity::{MeshTlsRx, ShardIdentity};
use crate::io::{Buffers, Pipes};
use crate::lifecycle::{Lifecycle, TaskGuard};
use crate::orig_dst::{FixedOrigDst, KernelOrigDst, OrigDst};
use crate::policy::{DefaultPolicy, ShardPolicies};
use crate::rt::{Listener, Runtime, ShardMain};
use crate::session;
use crate::settings::Settings;
use crate::telemetry::{HttpFamilies, HttpMetrics, ShardTaps, Tcp, TcpMetrics};
use crate::upstream::Pool;
use ringlink_control::policy::watch::PolicyTx;

/// Pause after a failed accept (e.g. EMFILE) so that a shard does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// How often the shard sweeps its connections: for clients that closed while waiting for a
/// response (the longest an abandoned request keeps its upstream connection), and for idle
/// HTTP/1 connections and quiet copied relays to park (which they do after one to two of
/// these).
const CONN_SWEEP: Duration = Duration::from_secs(1);

/// Buffer bytes that parked copy directions must have let go, at the least, before the
/// heap is trimmed (see `conn_sweep_loop`): 64 relay directions' 4 KiB. A trim walks every
/// arena's free chunks, so it is not done for a few.
const TRIM_AFTER_PARKED_BYTES: usize = 256 << 10;

/// Per open connection, the parked bytes that make a trim due: half a relay direction's
/// buffer, so that a shard holding many connections trims in proportion to them.
const TRIM_PARKED_BYTES_PER_CONNECTION: usize = 2 << 10;

/// Closed connections, at the least, that make a trim due after a burst: the fall of the
/// shard's open connections from their peak since the last trim must also be half that
/// peak. Short connections come and go all the time; only a burst that has ended leaves
/// much freed memory behind.
const TRIM_AFTER_CLOSED: usize = 1024;

// === types ===

/// What a shard thread is handed at startup (crosses into the shard thread once).
pub struct ShardSeed {
    pub index: usize,
    pub settings: Arc<Settings>,
    pub listeners: Vec<(Direction, std::net::TcpListener)>,
    pub phase: PhaseRx,
    pub tcp: TcpMetrics,
    pub http: HttpFamilies,
    /// Requests to the control thread's resolver.
    pub dns: ringlink_control::dns::DnsTx,
    /// Requests to the control thread's destination watches.
    pub dst: ringlink_control::dst::DstTx,
    pub balancer: BalancerFamilies,
    /// The identity this proxy is certified for, and its TLS configurations as the control
    /// thread publishes them (`None`: identity is not configured).
    pub identity: Option<(String, MeshTlsRx)>,
    /// Requests to the control thread's policy watches (`None`: no policy controller), and
    /// each port's default policy.
    pub policies: (Option<PolicyTx>, DefaultPolicy),
    /// The tap server's live taps (`None`: tap is disabled).
    pub taps: Option<ringlink_control::tap::TapsRx>,
}

// === impl ShardSeed ===

impl ShardMain for ShardSeed {
    fn run<R: Runtime>(self) -> impl Future<Output = ()> {
        run::<R>(self)
    }
}

impl ShardSeed {
    /// The shard's services.
    #[allow(clippy::type_complexity)]
    fn into_ctx<R: Runtime>(
        self,
    ) -> (
        ShardCtx<R>,
        Vec<(Direction, std::net::TcpListener)>,
        Option<MeshTlsRx>,
    ) {
        let ShardSeed {
            index,
            settings,
            listeners,
            phase,
            tcp,
            http,
            dns,
            dst,
            balancer,
            identity,
            policies,
            taps,
        } = self;
        let seed =
            (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ std::process::id() as u64;
        let life = Lifecycle::new(phase);
        let dsts = Dsts::new(
            dst,
            balancer,
            seed,
            life.clone(),
            settings.discovery.clone(),
        );
        let orig_dst: Box<dyn OrigDst> = match settings.orig_dst_override {
            Some(addr) => Box::new(FixedOrigDst(addr)),
            None => Box::new(KernelOrigDst),
        };
        let (name, tls_rx) = identity.unzip();
        let tls_enabled = name.is_some();
        let shard_identity = ShardIdentity::new(name.as_deref());
        let ctx = ShardCtx {
            identity: shard_identity,
            policies: ShardPolicies::new(policies.0, policies.1),
            index,
            orig_dst,
            life,
            buffers: Buffers::default(),
            pipes: Pipes::default(),
            tcp: Rc::new(Tcp::new(tcp, settings.metrics_recording, tls_enabled)),
            http: HttpMetrics::new(http, settings.metrics_recording),
            dns: Rc::new(ShardDns::new(dns)),
            dsts,
            pool: Pool::new(
                settings.max_idle_conns_per_endpoint,
                settings.pool_idle_timeout,
            ),
            h2: Default::default(),
            taps: ShardTaps::new(taps),
            settings,
        };
        (ctx, listeners, tls_rx)
    }
}

// === functions ===

/// A shard's life: serve until the control thread says drain, then let connections finish
/// within the grace period, then close the rest and wait for every task to return.
pub async fn run<R: Runtime>(seed: ShardSeed) {
    let (ctx, listeners, tls_rx) = seed.into_ctx::<R>();
    let ctx = Rc::new(ctx);
    if let Some(rx) = tls_rx {
        R::spawn(crate::identity::watch_loop(
            ctx.life.task(),
            ctx.identity.clone(),
            rx,
            ctx.life.clone(),
        ));
    }
    let index = ctx.index;
    for (direction, listener) in listeners {
        let addr = listener.local_addr().ok();
        match R::listener(listener) {
            Ok(listener) => R::spawn(accept_loop::<R>(
                ctx.life.task(),
                ctx.clone(),
                direction,
                listener,
            )),
            Err(error) => {
                tracing::error!(shard = index, %direction, ?addr, %error, "Listener failed");
            }
        }
    }
    R::spawn(evict_loop::<R>(ctx.life.task(), ctx.clone()));
    R::spawn(pool_sweep_loop::<R>(ctx.life.task(), ctx.clone()));
    R::spawn(conn_sweep_loop::<R>(ctx.life.task(), ctx.clone()));

    ctx.life.drain_started().await;
    ctx.life.start_drain();
    ctx.pool.clear();
    ctx.h2.clear();
    let grace = ctx.settings.shutdown_grace_period;
    tracing::debug!(
        shard = index,
        connections = ctx.life.open_connections(),
        ?grace,
        "Draining"
    );
    let mut phase = ctx.life.phase();
    let closing = async {
        let _ = phase.wait_for(|p| *p == Phase::Closing).await;
    };
    let drained = or(
        async {
            ctx.life.tasks_done().await;
            true
        },
        async {
            or(R::sleep(grace), closing).await;
            false
        },
    )
    .await;
    if !drained {
        tracing::info!(
            shard = index,
            connections = ctx.life.open_connections(),
            "Closing connections left after the grace period"
        );
        ctx.life.close_all();
        ctx.life.tasks_done().await;
    }
    tracing::debug!(shard = index, "Shard stopped");
}

/// Drops idle metric series every quarter of the retention period, until the drain.
async fn evict_loop<R: Runtime>(task: TaskGuard, ctx: Rc<ShardCtx<R>>) {
    let retain = ctx.settings.metrics_retain_idle;
    let every = (retain / 4).max(Duration::from_millis(100));
    every_until_drain::<R>(task, &ctx, every, || {
        let evicted = ctx.tcp.evict(retain) + ctx.http.evict(retain);
        if evicted > 0 {
            tracing::debug!(shard = ctx.index, evicted, "Dropped idle metric series");
        }
    })
    .await
}

/// Closes expired idle upstream connections, until the drain.
async fn pool_sweep_loop<R: Runtime>(task: TaskGuard, ctx: Rc<ShardCtx<R>>) {
    let every = (ctx.settings.pool_idle_timeout / 2).max(Duration::from_millis(50));
    every_until_drain::<R>(task, &ctx, every, || {
        // Ports no inbound connection used for the inbound discovery idle timeout.
        let idle = ctx.settings.discovery.idle_timeout.get(Direction::Inbound);
        let forgotten = ctx.policies.evict(idle);
        if forgotten > 0 {
            tracing::debug!(shard = ctx.index, forgotten, "Forgot idle ports' policies");
        }
        let closed = ctx.pool.sweep() + ctx.h2.sweep(ctx.settings.pool_idle_timeout);
        if closed > 0 {
            tracing::debug!(
                shard = ctx.index,
                closed,
                "Closed idle upstream connections"
            );
        }
    })
    .await
}

/// When a shard's heap is due a trim (see `conn_sweep_loop`).
#[derive(Default)]
struct HeapTrim {
    /// Buffer bytes parked copies let go since the last trim.
    parked_bytes: usize,
    /// The most connections open at a sweep since the last trim.
    peak: usize,
    /// Connections open at the previous sweep.
    last_open: usize,
}

impl HeapTrim {
    /// Whether to trim now, at a sweep that found `open` connections open and `parked`
    /// bytes let go since the previous one; counts from here if so.
    fn due(&mut self, open: usize, parked: usize) -> bool {
        self.parked_bytes += parked;
        self.peak = self.peak.max(open);
        let parked_enough = self.parked_bytes
            >= TRIM_AFTER_PARKED_BYTES.max(open * TRIM_PARKED_BYTES_PER_CONNECTION);
        // A burst that is still closing is left to end first.
        let falling = open < std::mem::replace(&mut self.last_open, open);
        let burst_ended = !falling && self.peak - open >= TRIM_AFTER_CLOSED.max(self.peak / 2);
        if parked_enough || burst_ended {
            (self.parked_bytes, self.peak) = (0, open);
        }
        parked_enough || burst_ended
    }
}

/// Every [`CONN_SWEEP`]: abandons the pending responses of clients that closed meanwhile,
/// and parks the idle waits that have been idle since the previous sweep.
///
/// It also gives the heap's free pages back (glibc keeps freed memory between live
/// allocations resident) when, since the last trim, either
/// - copied relays parked and let go at least [`TRIM_AFTER_PARKED_BYTES`] of buffer, and
///   [`TRIM_PARKED_BYTES_PER_CONNECTION`] per open connection (counted at the sweep after
///   the one that parked them, by when they have run and freed it; HTTP/1 waits park too,
///   but their 1 KiB buffers are reused by the allocator and do not count), or
/// - the shard's open connections fell from their peak since the last trim by half the
///   peak and at least [`TRIM_AFTER_CLOSED`], and no longer fall (a burst of connections
///   ended).
///
/// A trim's cost grows with the heap's free chunks (6 ms after 6,000 parked relay reads
/// here); both rules spread it over parks or closes in proportion to the connections held.
async fn conn_sweep_loop<R: Runtime>(task: TaskGuard, ctx: Rc<ShardCtx<R>>) {
    let mut trim = HeapTrim::default();
    every_until_drain::<R>(task, &ctx, CONN_SWEEP, || {
        // What the waits parked at the last sweep let go (they have run since).
        let open = ctx.life.open_connections();
        if trim.due(open, ctx.buffers.take_parked_bytes()) {
            let start = std::time::Instant::now();
            let trimmed = crate::sys::trim_heap();
            tracing::debug!(shard = ctx.index, trimmed, took = ?start.elapsed(), "Heap trimmed");
        }
        let abandoned = ctx.life.abandon_closed();
        if abandoned > 0 {
            tracing::debug!(
                shard = ctx.index,
                abandoned,
                "Clients closed while waiting for responses"
            );
        }
        let parked = ctx.life.park_idle();
        if parked > 0 {
            tracing::debug!(shard = ctx.index, parked, "Idle connections parked");
        }
    })
    .await
}

/// Runs `work` every `every` on the shard's timer until the drain begins.
async fn every_until_drain<R: Runtime>(
    _task: TaskGuard,
    ctx: &ShardCtx<R>,
    every: Duration,
    mut work: impl FnMut(),
) {
    loop {
        if crate::rt::timeout::<R, _>(every, ctx.life.drain_started())
            .await
            .is_some()
        {
            return;
        }
        work();
    }
}

async fn accept_loop<R: Runtime>(
    _task: TaskGuard,
    ctx: Rc<ShardCtx<R>>,
    direction: Direction,
    listener: R::Listener,
) {
    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            ctx.life.drain_started().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                R::spawn(session::serve::<R>(
                    ctx.life.task(),
                    ctx.clone(),
                    direction,
                    stream,
                    peer,
                ));
            }
            // The one connection went away before it was accepted (glommio reads its peer
            // address after `accept`, which then fails with ENOTCONN): nothing to back off
            // from.
            Some(Err(error)) if accepted_connection_failed(&error) => {
                tracing::debug!(shard = ctx.index, %direction, %error, "Connection lost while accepted");
            }
            Some(Err(error)) => {
                tracing::warn!(shard = ctx.index, %direction, %error, "Accept failed");
                R::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    // Dropping the listener closes it: this shard takes no new connections.
}

/// Whether an accept error concerns only the connection being accepted (reset or aborted
/// by its client, or a network error accept(2) passes on), not the listener.
fn accepted_connection_failed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, NotConnected};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | NotConnected
    ) || matches!(
        error.raw_os_error(),
        Some(
            libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
        )
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::accepted_connection_failed;

    #[test]
    fn a_lost_connection_is_not_a_listener_failure() {
        for errno in [
            libc::ENOTCONN,
            libc::ECONNABORTED,
            libc::ECONNRESET,
            libc::EPROTO,
        ] {
            assert!(
                accepted_connection_failed(&Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        // What the listener itself runs into is backed off from and logged as a warning.
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EBADF,
        ] {
            assert!(
                !accepted_connection_failed(&Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(!accepted_connection_failed(&Error::from(ErrorKind::Other)));
    }

    /// A trim comes once a burst of connections has ended, not while it is still closing,
    /// and not for the coming and going of a steady load.
    #[test]
    fn the_heap_is_trimmed_after_a_burst_has_ended() {
        let mut trim = super::HeapTrim::default();
        for open in [3000, 2600, 3100, 2700, 3000] {
            assert!(!trim.due(open, 0), "a steady load, {open} open");
        }
        assert!(!trim.due(1200, 0), "still closing");
        assert!(!trim.due(10, 0), "still closing");
        assert!(trim.due(10, 0), "ended: 3,090 fewer than the peak");
        assert!(!trim.due(10, 0), "once");
        // A small shard's whole load ending is not a burst.
        let mut trim = super::HeapTrim::default();
        assert!(!trim.due(900, 0));
        assert!(!trim.due(0, 0));
        assert!(!trim.due(0, 0));
    }

    /// Parked copies trigger a trim once they let go enough buffer, in proportion to the
    /// connections held.
    #[test]
    fn the_heap_is_trimmed_after_enough_parked_buffer() {
        let mut trim = super::HeapTrim::default();
        assert!(!trim.due(10, 100 << 10));
        assert!(trim.due(10, 200 << 10), "256 KiB at the least");
        assert!(!trim.due(10, 0), "counted from the trim");
        // 5,000 connections: 10 MB (2 KiB each).
        assert!(!trim.due(5000, 8 << 20));
        assert!(trim.due(5000, 2 << 20));
    }
}
