//! ringlink's sharded engine: one pinned single-threaded executor per core (glommio or
//! monoio, behind [`rt`]), each with its own `SO_REUSEPORT` listeners, forwarding
//! transparently to each connection's original destination.
//!
//! The request path takes no lock and crosses no thread: shard state is `Rc`/`Cell`, and
//! the only cross-thread values are snapshots from the control thread.

mod app;
pub mod balance;
mod dns;
mod dst;
mod forward;
mod h2;
mod http1;
mod join;
mod listen;
mod logging;
mod metrics;
mod orig_dst;
mod pool;
pub mod rt;
mod shard;
mod sniff;
mod sys;

pub use app::main;
pub use orig_dst::{FixedOrigDst, KernelOrigDst, OrigDst};
pub use shard::Direction;
