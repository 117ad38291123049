//! Where a request goes, decided once for HTTP/1 and h2: the connection's original
//! destination, the endpoint a balancer picks when the request's authority names a
//! destination, or the authority's own address when the client addressed the proxy.
//!
//! Where the next features land: outbound policy routes (matches, weighted backends,
//! timeouts) choose the [`Target`] here.

use std::rc::Rc;

use ringlink_protocols::authority::{name_of, parse_authority};

use crate::conn::{Direction, Route};
use crate::ctx::ShardCtx;
use crate::discover::{self, DstCache, DstError};
use crate::error::ProxyError;
use crate::rt::Runtime;
use crate::upstream::Target;

// === functions ===

/// The target of one request on a connection routed by `route`. `authority` is the
/// request's (`Host`, absolute-form URI or `:authority`); `dst_override` its
/// `l5d-dst-override`, which only requests addressed to the proxy itself may use. `cache`
/// is the connection's last destination.
pub async fn route<R: Runtime>(
    ctx: &ShardCtx<R>,
    direction: Direction,
    route: Route,
    authority: Option<&str>,
    dst_override: Option<&str>,
    cache: &DstCache,
) -> Result<Target, ProxyError> {
    match route {
        // Inbound, a request goes to the application in this pod, whatever it names, as
        // linkerd2-proxy's inbound forwards to the local target.
        Route::Fixed(addr) if direction == Direction::Inbound => Ok(Target::addr(addr)),
        Route::Fixed(addr) => match ctx.dsts.suffix_name(authority) {
            Some(name) => balanced(ctx, direction, cache, &name, Some(addr)).await,
            None => Ok(Target::addr(addr)),
        },
        // Direct connections are `Fixed` once their transport header is read.
        Route::Direct => Err(ProxyError::bad_request(
            400,
            "direct connection without a target",
        )),
        Route::ByAuthority => {
            let by = dst_override
                .or(authority)
                .ok_or_else(|| ProxyError::bad_request(400, "no authority to route by"))?;
            let (host, port) = parse_authority(by)
                .ok_or_else(|| ProxyError::bad_request(400, "authority is not host[:port]"))?;
            match name_of(&host, port) {
                Some(name) => balanced(ctx, direction, cache, &name, None).await,
                None => discover::dns::resolve::<R>(&ctx.dns, &host, port)
                    .await
                    .map(Target::addr)
                    .map_err(ProxyError::Resolve),
            }
        }
    }
}

/// An endpoint of destination `name`, or, when discovery refused the name, `fallback` (the
/// original destination) or else the name's own DNS addresses.
async fn balanced<R: Runtime>(
    ctx: &ShardCtx<R>,
    direction: Direction,
    cache: &DstCache,
    name: &str,
    fallback: Option<std::net::SocketAddr>,
) -> Result<Target, ProxyError> {
    let dst = cache.get::<R>(&ctx.dsts, direction, name);
    let name: Rc<str> = dst.name.clone();
    match dst.pick::<R>(&ctx.dsts).await {
        Ok(pick) => Ok(Target {
            addr: pick.addr(),
            dst: Some(dst),
            pick: Some(pick),
            name: Some(name),
        }),
        Err(DstError::Fallback) => {
            let addr = match fallback {
                Some(addr) => addr,
                None => discover::fallback_addr::<R>(&ctx.dns, &name)
                    .await
                    .map_err(ProxyError::Resolve)?,
            };
            Ok(Target {
                addr,
                dst: None,
                pick: None,
                name: Some(name),
            })
        }
        Err(error) => Err(error.into()),
    }
}
