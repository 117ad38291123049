//! Inbound connections, from the world to the application in this pod: opaque ports are
//! forwarded without detection; everything else goes the transparent way.
//!
//! Where the next features land: mTLS termination (a ClientHello whose SNI is this proxy's
//! identity, `session/tls.rs`), direct connections carrying the transport header
//! (`session/direct.rs`), and authorization per connection (`session/authz.rs`) before
//! dispatch.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use super::transparent;
use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::Runtime;
use crate::telemetry::PeerMetrics;

// === functions ===

/// Serves an inbound connection to the application at `target`; the client's series and
/// the error the client failed with, if any.
pub async fn serve<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    meta: &mut ConnMeta,
    target: SocketAddr,
    client: Transport<R>,
    entry: &ConnEntry,
    slot: &mut Option<PeerMetrics>,
) -> Option<io::Error> {
    if ctx.settings.is_opaque_port(target.port()) {
        return transparent::opaque_port(ctx, meta, target, client, entry, slot).await;
    }
    transparent::serve(ctx, meta, target, client, entry, slot).await
}
