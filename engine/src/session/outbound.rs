//! Outbound connections, from the application to the world: a connection addressed to the
//! proxy itself is HTTP routed by authority (or refused); a profiled destination whose
//! profile says opaque is balanced per connection; everything else goes the transparent
//! way to its original destination.
//!
//! Where the next features land: outbound policy (`OutboundPolicies.Watch`) picks the
//! protocol and routes here, and TLS origination happens in `crate::upstream`.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use super::then::Then;
use super::{detect, opaque, transparent};
use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::http::{self, Client, Preconnected};
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::Runtime;
use crate::telemetry::{Detected, Peer, PeerMetrics};

// === functions ===

/// Serves an outbound connection to its original destination `target` up to the part that
/// lasts; the client's series is left in `slot`.
///
/// (A plain function returning its future, here and in the path's other steps: an `async
/// fn` keeps a second copy of its arguments in its state, which is part of every
/// connection's task for the connection's whole life.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn serve<'a, R: Runtime>(
    ctx: &'a Rc<ShardCtx<R>>,
    meta: &'a mut ConnMeta,
    target: SocketAddr,
    client: Transport<R>,
    entry: &'a ConnEntry,
    slot: &'a mut Option<PeerMetrics>,
) -> impl Future<Output = Then<'a>> + 'a {
    async move {
        // A profiled destination whose profile says opaque: balanced per connection over its
        // endpoints, without protocol detection.
        if ctx.dsts.has_profile(target) {
            let dst = ctx.dsts.get::<R>(meta.direction, &target.to_string());
            dst.settle::<R>().await;
            if dst.is_opaque() {
                ctx.detected(meta.direction, Detected::OpaqueProfile);
                let src = &*slot.insert(ctx.tcp.open(meta.direction, Peer::Src, target, &meta.tls));
                return Then::run(async move {
                    opaque::balanced(ctx, &dst, target, (client, src), entry).await
                });
            }
        }
        transparent::serve(ctx, meta, target, client, entry, slot).await
    }
}

/// Serves a connection addressed to the proxy's outbound listener itself: only HTTP can say
/// where it goes; anything else is refused as a routing loop.
pub async fn to_proxy<'a, R: Runtime>(
    ctx: &'a Rc<ShardCtx<R>>,
    meta: &'a ConnMeta,
    mut client: Transport<R>,
    src: &'a PeerMetrics,
    entry: &'a ConnEntry,
) -> Then<'a> {
    let timeout = ctx.settings.detect_timeout.get(meta.direction);
    let (sniffed, first) = match detect::sniff::<R>(&mut client, None, timeout).await {
        Ok(sniffed) => sniffed,
        Err(error) => return Then::Done(Some(error)),
    };
    match sniffed.http() {
        Some(version) => {
            let client = Client {
                meta,
                stream: client,
                first,
                metrics: src,
                entry,
            };
            Then::Run(http::serve(ctx, version, client, Preconnected::None))
        }
        None => {
            ctx.detected(meta.direction, sniffed.detected());
            tracing::warn!(
                client.addr = %meta.client,
                "Refusing a connection addressed to the proxy itself that is not HTTP (routing loop)"
            );
            crate::io::reset(client.as_raw_fd());
            Then::Done(None)
        }
    }
}
