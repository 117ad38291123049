//! The shard's replica of the inbound policies (DESIGN.md §2): per port, the current
//! `Arc<ServerPolicy>` in a `RefCell`, so that a connection's or a request's check reads
//! shard-local memory, never a lock.
//!
//! The first connection to a port the shard has not seen takes the port's default policy
//! (`LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`, or opaque for the ports that disable protocol
//! detection) and, when a policy controller is configured, sends one request to the control
//! thread; a shard task then copies each policy the controller publishes for the port into
//! the replica, until the drain or until the port is forgotten. Ports no connection used for
//! the idle timeout are forgotten (and their streams end once no shard watches them).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use ringlink_control::policy::inbound::{PathIndex, RequestView, RouteDecision, ServerPolicy};
use ringlink_control::policy::watch::{PolicyRequest, PolicyRx, PolicyTx};

use crate::lifecycle::Lifecycle;
use crate::rt::Runtime;

/// The default policy of a port, before (or without) the controller's.
pub type DefaultPolicy = Arc<dyn Fn(u16) -> Arc<ServerPolicy> + Send + Sync>;

// === types ===

/// The inbound policies one shard knows. Shard-local.
pub struct ShardPolicies {
    ports: RefCell<HashMap<u16, Rc<PortPolicy>>>,
    /// The control thread's request queue; `None` without a policy controller (every port
    /// keeps its default).
    requests: Option<PolicyTx>,
    default: DefaultPolicy,
    /// xorshift64 state for failure injection.
    random: Cell<u64>,
}

/// A port's policy as a shard holds it: the policy the control thread published, and the
/// shard's index of its HTTP routes (built once per update, when there are many routes).
pub struct Replica {
    pub policy: Arc<ServerPolicy>,
    pub index: Option<PathIndex>,
}

/// One port's policy on a shard.
struct PortPolicy {
    /// In an `Rc`, so that a request's copy is a shard-local count, not an atomic one on a
    /// cache line every shard shares.
    current: RefCell<Rc<Replica>>,
    last_used: Cell<Instant>,
    /// Counts updates; wakes the port's live connections at each (so that they are checked
    /// again).
    changes: Rc<Changes>,
    /// Tells the port's follower task that the port was forgotten (its stream can end).
    gone: Rc<tokio::sync::Notify>,
}

/// A port's update counter and the connections waiting for its next update.
#[derive(Default)]
pub struct Changes {
    version: Cell<u64>,
    notify: tokio::sync::Notify,
}

// === impl ShardPolicies ===

impl ShardPolicies {
    pub fn new(requests: Option<PolicyTx>, default: DefaultPolicy) -> Rc<Self> {
        Rc::new(ShardPolicies {
            ports: RefCell::new(HashMap::new()),
            requests,
            default,
            random: Cell::new(seed()),
        })
    }

    /// The current policy of `port`. The first use of a port starts following the
    /// controller's policy for it (a shard task, ended by `life`'s drain).
    pub fn get<R: Runtime>(&self, port: u16, life: &Rc<Lifecycle>) -> Rc<Replica> {
        if let Some(known) = self.ports.borrow().get(&port) {
            known.last_used.set(Instant::now());
            return known.current.borrow().clone();
        }
        let policy = Rc::new(Replica::new((self.default)(port)));
        let entry = Rc::new(PortPolicy {
            current: RefCell::new(policy.clone()),
            last_used: Cell::new(Instant::now()),
            changes: Rc::default(),
            gone: Rc::default(),
        });
        self.ports.borrow_mut().insert(port, entry.clone());
        if let Some(requests) = &self.requests {
            let (reply, rx) = tokio::sync::oneshot::channel();
            match requests.try_send(PolicyRequest { port, reply }) {
                Ok(()) => R::spawn(follow(
                    life.task(),
                    (Rc::downgrade(&entry), entry.gone.clone()),
                    rx,
                    life.clone(),
                )),
                Err(error) => {
                    // Asked again by the next connection.
                    tracing::warn!(port, %error, "Cannot ask for the port's policy");
                    self.ports.borrow_mut().remove(&port);
                }
            }
        }
        policy
    }

    /// A pseudo-random number (failure injection's draw).
    pub fn random(&self) -> u64 {
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.set(x);
        x
    }

    /// The update counter of `port`, for a live connection to watch (`None` before the
    /// port's first [`ShardPolicies::get`]).
    pub fn changes(&self, port: u16) -> Option<Rc<Changes>> {
        self.ports.borrow().get(&port).map(|p| p.changes.clone())
    }

    /// Forgets the ports no connection used for `idle`; how many.
    pub fn evict(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let mut ports = self.ports.borrow_mut();
        let before = ports.len();
        ports.retain(|_, port| now.saturating_duration_since(port.last_used.get()) < idle);
        before - ports.len()
    }
}

impl Drop for PortPolicy {
    fn drop(&mut self) {
        // A permit, in case the follower is not waiting at this instant.
        self.gone.notify_one();
    }
}

// === impl Replica ===

impl Replica {
    fn new(policy: Arc<ServerPolicy>) -> Self {
        let index = policy.path_index();
        Replica { policy, index }
    }

    /// The route of a request, found with the index when there is one.
    pub fn route_request<'p>(&'p self, req: &RequestView<'_>) -> RouteDecision<'p> {
        self.policy.route_request_indexed(req, self.index.as_ref())
    }
}

impl std::ops::Deref for Replica {
    type Target = ServerPolicy;

    fn deref(&self) -> &ServerPolicy {
        &self.policy
    }
}

// === impl Changes ===

impl Changes {
    /// How many updates the port has had.
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Completes at the port's next update after `version` (at once if there was one).
    pub async fn after(&self, version: u64) {
        loop {
            let notified = self.notify.notified();
            if self.version.get() != version {
                return;
            }
            notified.await;
        }
    }
}

// === functions ===

/// A non-zero seed that differs between shards and runs.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish() | 1
}

/// Copies each policy the control thread publishes for a port into its replica, until the
/// drain, the control thread's end, or the port is forgotten.
async fn follow(
    _task: crate::lifecycle::TaskGuard,
    (port, gone): (Weak<PortPolicy>, Rc<tokio::sync::Notify>),
    reply: tokio::sync::oneshot::Receiver<PolicyRx>,
    life: Rc<Lifecycle>,
) {
    // Ends at the drain, or once the port is forgotten (dropping the receiver lets the
    // control thread end the port's stream when no other shard watches it).
    let ended = || {
        or(life.drain_started(), async {
            gone.notified().await;
        })
    };
    let Some(mut rx) = or(async { reply.await.ok() }, async {
        ended().await;
        None
    })
    .await
    else {
        return;
    };
    loop {
        let Some(entry) = port.upgrade() else {
            return;
        };
        let policy = rx.borrow_and_update().clone();
        if !Arc::ptr_eq(&policy, &entry.current.borrow().policy) {
            *entry.current.borrow_mut() = Rc::new(Replica::new(policy));
            entry.changes.version.set(entry.changes.version.get() + 1);
            entry.changes.notify.notify_waiters();
        }
        drop(entry);
        let changed = or(async { rx.changed().await.is_ok() }, async {
            ended().await;
            false
        })
        .await;
        if !changed {
            return;
        }
    }
}
