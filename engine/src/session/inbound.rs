//! Inbound connections, from the world to the application in this pod, under the inbound
//! policy of the port they are for (`crate::policy`): a port whose policy is `Opaque` or
//! `Tls` (by default the ports in `LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`)
//! is authorized per connection and forwarded without detection; everything else goes the
//! transparent way (mesh TLS termination, detection), its opaque connections authorized
//! per connection and its HTTP requests per route.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use ringlink_control::policy::inbound::Protocol;

use super::then::Then;
use super::transparent;
use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::Runtime;
use crate::telemetry::PeerMetrics;

// === functions ===

/// Serves an inbound connection to the application at `target` up to the part that lasts;
/// the client's series is left in `slot`.
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
        let policy = ctx.policies.get::<R>(target.port(), &ctx.life);
        let opaque = matches!(policy.protocol, Protocol::Opaque(_) | Protocol::Tls(_));
        meta.policy = Some(policy.policy.clone());
        if opaque {
            return transparent::opaque_port(ctx, meta, target, client, entry, slot).await;
        }
        transparent::serve(ctx, meta, target, client, entry, slot).await
    }
}
