//! HTTP on a detected connection: [`serve`] hands it to the HTTP/1 ([`h1`]) or HTTP/2
//! ([`h2`]) server side, whose requests are routed once ([`route`]), sent upstream through
//! the one connector (`crate::upstream`), and answered with the proxy's own errors
//! ([`respond`]) when they cannot be.
//!
//! Each protocol is split along hyper's server/client line: `h1` (the client connection's
//! request loop) and `h1::exchange` (one request on one upstream connection); `h2` (the
//! client connection), `h2::stream` (one stream) and `h2::client` (upstream connections),
//! so that HTTP/1 requests can later leave on an h2 upstream (`l5d-orig-proto`).

pub mod authz;
pub mod conn;
pub mod h1;
pub mod h2;
pub mod respond;
pub mod route;

use std::rc::Rc;

use crate::conn::Rest;
use crate::ctx::ShardCtx;
use crate::rt::Runtime;
use crate::telemetry::Detected;
use crate::upstream::Upstream;

pub use conn::{Client, Preconnected, Version};

// === functions ===

/// The future that serves `client` as `version` until it closes; the error that ended it,
/// for its close series. Boxed, for the connection's task to run once the prelude that
/// detected it has given its block back (`crate::session::then`).
pub fn serve<'a, R: Runtime>(
    ctx: &'a Rc<ShardCtx<R>>,
    version: Version,
    client: Client<'a, R>,
    pre: Preconnected<R>,
) -> Rest<'a> {
    let direction = client.meta.direction;
    match version {
        Version::H2 => {
            ctx.detected(direction, Detected::H2);
            // The pooled HTTP/1 connection cannot carry h2: keep it for another client.
            let eager = match pre {
                Preconnected::Open(addr, stream) => Some((addr, stream)),
                Preconnected::Pooled(pooled) => {
                    ctx.pool.put(pooled);
                    None
                }
                Preconnected::None | Preconnected::Failed(..) => None,
            };
            if eager.is_some() {
                client.entry.set_upstream(-1);
            }
            Box::pin(h2::serve::<R>(ctx, client, eager))
        }
        Version::Http1 => {
            ctx.detected(direction, Detected::Http1);
            let eager = match pre {
                Preconnected::Open(addr, stream) => {
                    let plaintext = ctx.tcp.plaintext(direction);
                    let upstream = Upstream::new(&ctx.tcp, direction, addr, stream, plaintext);
                    h1::Eager::Open(Box::new(upstream))
                }
                Preconnected::Pooled(pooled) => h1::Eager::Open(Box::new(pooled)),
                Preconnected::Failed(addr, error) => h1::Eager::Failed(addr, error),
                Preconnected::None => h1::Eager::None,
            };
            Box::pin(h1::serve::<R>(ctx, client, eager))
        }
    }
}
