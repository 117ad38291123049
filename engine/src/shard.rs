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

/// The fewest parked waits after which the heap is trimmed (see `conn_sweep_loop`): 64
/// copied relay directions free 256 KiB at least. A trim walks every arena's free chunks,
/// so it is not done for a few.
const TRIM_AFTER_PARKED: usize = 64;

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

/// Every [`CONN_SWEEP`]: abandons the pending responses of clients that closed meanwhile,
/// and parks the idle waits that have been idle since the previous sweep.
///
/// Once the waits parked since the heap was last trimmed are at least [`TRIM_AFTER_PARKED`]
/// and an eighth of the shard's open connections, the next sweep (by when those waits have
/// let their buffers go) gives the heap's free pages back: the buffers are scattered
/// between live allocations, where the allocator keeps them resident. A trim's cost grows
/// with the heap's free chunks (6 ms for 6,000 parked relay reads here), so it is spread
/// over parks in proportion to the connections held.
async fn conn_sweep_loop<R: Runtime>(task: TaskGuard, ctx: Rc<ShardCtx<R>>) {
    let (mut trim, mut parked_since_trim) = (false, 0);
    every_until_drain::<R>(task, &ctx, CONN_SWEEP, || {
        if std::mem::take(&mut trim) {
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
        parked_since_trim += parked;
        if parked_since_trim >= TRIM_AFTER_PARKED.max(ctx.life.open_connections() / 8) {
            (trim, parked_since_trim) = (true, 0);
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
}
