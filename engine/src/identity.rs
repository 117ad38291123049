//! The shard's replica of this proxy's mesh TLS configurations: the control thread builds
//! them once per certificate ([`MeshTls`]) and publishes them; a shard task copies each into
//! the replica, so a handshake reads a `RefCell`, never a lock. A handshake keeps the
//! configuration it started with.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future::or;
use ringlink_protocols::tls::MeshTls;
use tokio::sync::watch;

use crate::lifecycle::{Lifecycle, TaskGuard};

// === types ===

/// What crosses from the control thread: each certificate's configurations.
pub type MeshTlsRx = watch::Receiver<Option<Arc<MeshTls>>>;

/// This proxy's identity, as one shard sees it. Shard-local.
pub struct ShardIdentity {
    /// The name this proxy is certified for, when identity is configured.
    name: Option<Arc<str>>,
    current: RefCell<Option<Arc<MeshTls>>>,
}

// === impl ShardIdentity ===

impl ShardIdentity {
    pub fn new(name: Option<&str>) -> Rc<Self> {
        Rc::new(ShardIdentity {
            name: name.map(Arc::from),
            current: RefCell::new(None),
        })
    }

    /// Whether identity is configured (whether or not a certificate is held yet).
    pub fn is_enabled(&self) -> bool {
        self.name.is_some()
    }

    /// The name this proxy is certified for: the SNI peers use to reach it.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The configurations of the current certificate, if one is held.
    pub fn current(&self) -> Option<Arc<MeshTls>> {
        self.current.borrow().clone()
    }
}

// === functions ===

/// Applies each new certificate's configurations until the drain or the control thread's
/// end.
pub async fn watch_loop(
    _task: TaskGuard,
    identity: Rc<ShardIdentity>,
    mut rx: MeshTlsRx,
    life: Rc<Lifecycle>,
) {
    loop {
        let tls = rx.borrow_and_update().clone();
        if tls.is_some() {
            tracing::debug!("Applied new TLS credentials");
        }
        *identity.current.borrow_mut() = tls;
        let changed = or(async { rx.changed().await.is_ok() }, async {
            life.drain_started().await;
            false
        })
        .await;
        if !changed {
            return;
        }
    }
}
