//! ringlink's sharded engine: one pinned single-threaded executor per core (glommio or
//! monoio, behind [`rt`]), each with its own `SO_REUSEPORT` listeners, connection pools and
//! balancer replicas, proxying each accepted connection — transparently to its original
//! destination, or by authority when a client addresses the proxy itself.
//!
//! The request path takes no lock and crosses no thread: shard state is `Rc`/`Cell`. What
//! crosses threads: snapshots from the control thread (endpoint sets, the shutdown phase)
//! and requests to it (DNS, destinations), never per request.
//!
//! # Layers
//!
//! Modules import one way, down these layers (`tests/layers.rs` in this crate fails on an
//! import that goes up). Within a layer, a module may use the ones listed before it.
//!
//! ```text
//! L7  logging < app            process: config → logging → CPUs → bind → control → shards
//! L6  shard                    ShardSeed → ShardCtx; accept, evict and sweep loops; drain
//! L5  session                  one connection: dest → inbound | outbound | direct
//!       dest < detect < tls < opaque < transparent < direct < inbound, outbound
//! L4  http                     serve → h1 | h2
//!       conn < route, respond < h1 (exchange, pipe) < h2 (client, downgrade, stream)
//! L3  ctx                      ShardCtx<R>: the L2 services, settings and lifecycle
//! L2  balance < telemetry < identity < policy < discover < upstream
//!                              services; none sees ShardCtx, each gets its own piece
//! L1  conn, settings, error, lifecycle, io
//!                              vocabulary: Direction, ConnMeta (with its TLS status),
//!                              PerDirection, Settings, ProxyError, tasks/conn table/drain,
//!                              buffers, duplex copy and splice, Transport (TCP or
//!                              mesh TLS)
//! L0  sys, orig_dst, listen, rt, slot
//!                              the runtime seam (the only place naming glommio/monoio),
//!                              syscalls, sockets, pooled futures (`unsafe` is only in
//!                              sys, slot and rt/glommio)
//! ```
//!
//! Mesh TLS: terminated in `session/tls.rs` (filling [`conn::ConnMeta`]'s TLS status and
//! peer identity) and on the transport-header path in `session/direct.rs`; originated in
//! `upstream/tls.rs` for endpoints discovery says are meshed; credentials from the
//! shard's `identity` replica; HTTP/1 a peer carried over HTTP/2 is downgraded in
//! `http/h2/downgrade.rs`. Where the next features plug in: the outbound HTTP/1 → HTTP/2
//! upgrade in `http/h1/exchange.rs` choosing `http/h2/client.rs`; a policy replica in L2
//! beside `discover`, connection authorization in `session/authz.rs`, routes, timeouts
//! and retries in `http/route.rs` and `upstream::connect_balanced`; tap in
//! `telemetry/tap.rs`, fed by the hooks `RequestMetrics` already has.

// L0
mod listen;
mod orig_dst;
pub mod rt;
mod slot;
mod sys;
// L1
mod conn;
mod error;
mod io;
mod lifecycle;
mod settings;
// L2
pub mod balance;
mod discover;
mod identity;
mod policy;
mod telemetry;
mod upstream;
// L3
mod ctx;
// L4
mod http;
// L5
mod session;
// L6
mod shard;
// L7
mod app;
mod logging;
pub mod tools;

pub use app::main;
