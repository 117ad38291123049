//! The typed per-shard context: the services a connection's path uses, bundled once per
//! shard and shared by its tasks through `Rc`. It holds the services; they never hold it
//! (each gets its own piece), so it cannot grow back into a god object.

use std::rc::Rc;
use std::sync::Arc;

use crate::conn::Direction;
use crate::discover::{Dsts, ShardDns};
use crate::identity::ShardIdentity;
use crate::io::{Buffers, Pipes};
use crate::lifecycle::Lifecycle;
use crate::orig_dst::OrigDst;
use crate::policy::ShardPolicies;
use crate::rt::Runtime;
use crate::settings::Settings;
use crate::telemetry::{Detected, HttpMetrics, ShardTaps, Tcp};
use crate::upstream::{H2Pool, Pool};

// === types ===

/// One shard's services. Shard-local.
pub struct ShardCtx<R: Runtime> {
    pub index: usize,
    pub settings: Arc<Settings>,
    pub orig_dst: Box<dyn OrigDst>,
    pub life: Rc<Lifecycle>,
    pub buffers: Buffers,
    /// Empty pipes for spliced opaque TCP.
    pub pipes: Pipes,
    pub tcp: Rc<Tcp>,
    pub http: HttpMetrics,
    pub dns: Rc<ShardDns>,
    pub dsts: Rc<Dsts>,
    /// This proxy's identity and mesh TLS configurations.
    pub identity: Rc<ShardIdentity>,
    /// The inbound policies of the ports this shard serves.
    pub policies: Rc<ShardPolicies>,
    /// Idle upstream HTTP/1 connections.
    pub pool: Pool<R>,
    /// Shared HTTP/2 connections to endpoints HTTP/1 requests are upgraded to.
    pub h2: H2Pool,
    /// The live taps (`linkerd viz tap`).
    pub taps: ShardTaps,
}

// === impl ShardCtx ===

impl<R: Runtime> ShardCtx<R> {
    /// Records what detection decided: in the connection's span and in
    /// `protocol_detect_total`.
    pub fn detected(&self, direction: Direction, protocol: Detected) {
        tracing::Span::current().record("protocol", protocol.as_str());
        self.tcp.detected(direction, protocol);
    }
}
