//! One accepted connection, top-down: a span, the connection's facts ([`dest`]), then the
//! direction's path — [`inbound`] or [`outbound`] — each a straight sequence over
//! [`detect`], [`opaque`] and [`transparent`], ending in `crate::http` or an opaque relay.
//! The path up to that end is the connection's prelude: it runs in a pooled block and
//! returns what lasts ([`then::Then`]), which the connection's task runs once the block is
//! back, so that an idle connection's task is not the size of the largest prelude.
//!
//! Where the next features land: mTLS termination and the direct (transport header) path
//! in `session/tls.rs` and `session/direct.rs`, authorization in `session/authz.rs`; each
//! fills in [`ConnMeta`](crate::conn::ConnMeta) for metrics, policy and tap to read.

pub mod authz;
pub mod dest;
pub mod detect;
pub mod direct;
pub mod inbound;
pub mod opaque;
pub mod outbound;
pub mod then;
pub mod tls;
pub mod transparent;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use tracing::Instrument;

use crate::conn::{Direction, NoTlsReason, Route, TlsStatus};
use crate::ctx::ShardCtx;
use crate::io::Transport;
use crate::lifecycle::TaskGuard;
use crate::rt::Runtime;
use crate::slot::Slot;
use crate::telemetry::Peer;

// === functions ===

/// Serves one accepted connection to its end.
///
/// A plain function returning the connection's future, not an `async fn`: an `async fn`
/// keeps a second copy of each argument in its state for the connection's whole life, and
/// this future is the connection's task.
pub fn serve<R: Runtime>(
    task: TaskGuard,
    ctx: Rc<ShardCtx<R>>,
    direction: Direction,
    client: R::Stream,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> {
    let span = tracing::info_span!(
        "conn",
        shard = ctx.index,
        client.addr = %peer,
        server.addr = tracing::field::Empty,
        direction = direction.as_str(),
        protocol = tracing::field::Empty,
    );
    let client = Transport::<R>::Plain(client);
    let fd = client.as_raw_fd();
    let (entry, mut dest) = span.in_scope(|| {
        crate::io::tune(fd, &ctx.settings.sockets, direction, true);
        let entry = ctx.life.register(fd);
        let dest = dest::destination(
            ctx.orig_dst.as_ref(),
            (&ctx.settings.own_addrs, &ctx.settings.inbound_ips),
            direction,
            fd,
            peer,
            TlsStatus::plaintext(ctx.identity.is_enabled(), accepted_plaintext(direction)),
        );
        (entry, dest)
    });
    async move {
        let _task = task;
        // Borrowed, not moved out: a moved-out copy would be a second one in the state.
        let Some(meta) = dest.as_mut() else {
            crate::io::reset(fd);
            return;
        };
        // The client's series, opened where its TLS status is known.
        let mut slot = None;
        // The prelude (detection, TLS, connecting, policy) runs in a pooled block that goes
        // back when it ends, so that the part of the connection that lasts (HTTP, opaque
        // forwarding) is not carried in a task the size of its largest prelude.
        let then = match meta.route {
            Route::ByAuthority => {
                let src = &*slot.insert(ctx.tcp.open(direction, Peer::Src, meta.local, &meta.tls));
                Slot::with(|| outbound::to_proxy(&ctx, meta, client, src, &entry)).await
            }
            Route::Direct => {
                Slot::with(|| direct::serve(&ctx, meta, client, &entry, &mut slot)).await
            }
            Route::Fixed(target) => {
                tracing::Span::current().record("server.addr", tracing::field::display(target));
                match direction {
                    Direction::Inbound => {
                        Slot::with(|| inbound::serve(&ctx, meta, target, client, &entry, &mut slot))
                            .await
                    }
                    Direction::Outbound => {
                        Slot::with(|| {
                            outbound::serve(&ctx, meta, target, client, &entry, &mut slot)
                        })
                        .await
                    }
                }
            }
        };
        let error = then.finish().await;
        if let Some(src) = slot {
            ctx.tcp.close(src, error.as_ref());
        }
        drop(entry);
    }
    .instrument(span)
}

/// Why an accepted connection is plaintext until TLS is found: an inbound client sent no
/// ClientHello for this proxy; an outbound client is the pod's own application.
fn accepted_plaintext(direction: Direction) -> NoTlsReason {
    match direction {
        Direction::Inbound => NoTlsReason::NoTlsFromRemote,
        Direction::Outbound => NoTlsReason::Loopback,
    }
}
