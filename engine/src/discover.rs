//! A shard's destinations: one [`Balancer`] replica per destination name, kept up to date
//! from the control thread's snapshots (DESIGN.md §2), with the request queue and failfast
//! in front of it.
//!
//! - The first request for a name (`host:port`) sends one [`DstRequest`] to the control
//!   thread and spawns the destination's watch task, which applies every snapshot to the
//!   shard's replica (endpoints that stay keep their load state), wakes queued requests, and
//!   updates the `outbound_http_balancer_endpoints` / `ringlink_balancer_snapshot_version`
//!   gauges. Later requests find the destination in the shard's map: no lock, no channel,
//!   no atomic on the request path.
//! - [`Dst::pick`] returns a [`Pick`] at once when an endpoint is ready. Otherwise the
//!   request waits (at most `*_HTTP_QUEUE_CAPACITY` per destination; more get 503) until a
//!   snapshot or an ended backoff makes one ready, or until `*_HTTP_FAILFAST_TIMEOUT`: then
//!   it gets 504 and the destination fails fast (503 at once) until an endpoint is ready.
//! - An original destination in the profile networks is a destination too, named by its
//!   `ip:port`: the control thread reads its profile and publishes the service's endpoints
//!   (or one endpoint, or "fall back"), with the profile's opaque flag. Opaque TCP to it is
//!   balanced per connection (`session::opaque`): P2C on open connections and connect
//!   latency, the same balancer.
//! - A destination no request used for `*_DISCOVERY_IDLE_TIMEOUT` is dropped from the map,
//!   and its watch task ends, dropping its receiver: once every shard has, the control thread
//!   closes the Destination stream (or stops re-resolving the DNS name).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use ringlink_control::discovery::{EndpointSet, ProtocolHint, State};
use ringlink_control::dst::{DstRequest, DstTx};
use ringlink_control::policy::outbound::ClientPolicy;
use ringlink_control::profile::{ProfileRouting, RetryBudget};
use ringlink_control::thread::Phase;
use ringlink_protocols::authority::{name_of, parse_authority};
use tokio::sync::{oneshot, watch, Notify};

use crate::balance::{Balancer, Endpoint, EndpointTls, Labels, Pick, Snapshot, XorShift};
use crate::conn::Direction;
use crate::error::ProxyError;
use crate::lifecycle::{Lifecycle, TaskGuard};
use crate::rt::Runtime;
use crate::settings::DiscoverySettings;

pub mod dns;

pub use dns::ShardDns;

/// How long a new destination waits for the control thread's receiver.
const WATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a queued request looks again while an endpoint's breaker is open (a probe's
/// success makes it ready without a snapshot to wake the queue).
const PROBE_POLL: Duration = Duration::from_millis(50);
/// How often a destination's task refreshes its gauges and checks for idleness (at most).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

// === types ===

/// The balancer gauges of one shard's registry.
#[derive(Clone)]
pub struct BalancerFamilies {
    endpoints: IntGaugeVec,
    version: IntGaugeVec,
}

/// A shard's destinations, by name.
pub struct Dsts {
    tx: DstTx,
    /// The shard's tasks and phase, for the watch tasks.
    life: Rc<Lifecycle>,
    settings: DiscoverySettings,
    map: RefCell<HashMap<Rc<str>, Rc<Dst>>>,
    rng: RefCell<XorShift>,
    families: BalancerFamilies,
}

/// One destination's balancer replica on this shard.
pub struct Dst {
    pub name: Rc<str>,
    direction: Direction,
    /// Requests that may wait for an endpoint, and for how long (a policy backend's
    /// queue replaces the settings' values).
    queue_capacity: Cell<usize>,
    failfast_timeout: Cell<Duration>,
    balancer: RefCell<Balancer>,
    set: Cell<SetState>,
    /// Woken when a snapshot is applied.
    notify: Notify,
    queued: Cell<usize>,
    failfast: Cell<bool>,
    last_used: Cell<Instant>,
    /// Dropped from the shard's map (idle): not updated any more; look the name up again.
    evicted: Cell<bool>,
    /// The destination's profile marks its traffic opaque.
    opaque: Cell<bool>,
    /// The outbound policy of an original destination, from the last snapshot.
    policy: RefCell<Option<Arc<ClientPolicy>>>,
    /// Its ServiceProfile routing, when the profile has routes or overrides, and the
    /// shard's retry budget for them.
    profile: RefCell<Option<ProfileState>>,
    gauges: Gauges,
}

struct Gauges {
    ready: IntGauge,
    pending: IntGauge,
    version: IntGauge,
    labels: [String; 2],
}

/// What the last snapshot said about the destination as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetState {
    /// No answer yet.
    Pending,
    Resolved {
        exists: bool,
    },
    /// Discovery refused the name: use the original destination.
    Fallback,
    /// The control thread could not take the request.
    Unavailable,
}

/// Why no endpoint was picked.
#[derive(Debug)]
pub enum DstError {
    /// Forward to the original destination instead.
    Fallback,
    /// The destination does not exist (or its name does not resolve).
    NotFound(Rc<str>),
    /// Refused at once: failing fast, queue full, or no control thread.
    Unavailable(String),
    /// No endpoint became ready within the failfast timeout.
    FailFast(Duration),
}

/// A ServiceProfile's routing and, if it has one, the shard's retry budget for it.
pub type ProfileState = (Arc<ProfileRouting>, Option<Rc<Budget>>);

/// A ServiceProfile's retry budget on one shard: retries may be `ratio` of the requests
/// plus `min_per_second`, counted over the last `ttl` (ten slots of a tenth each), as
/// linkerd2-proxy's budget bounds them; a retry the budget does not allow is not made.
#[derive(Debug)]
pub struct Budget {
    params: RetryBudget,
    /// `(slot start, requests, retries)`, oldest first.
    slots: RefCell<std::collections::VecDeque<(Instant, u32, u32)>>,
}

/// Counts a queued request for as long as it waits.
struct Queued<'a>(&'a Cell<usize>);

// === impl BalancerFamilies ===

impl BalancerFamilies {
    pub fn register(registry: &Registry) -> prometheus::Result<BalancerFamilies> {
        let endpoints = IntGaugeVec::new(
            Opts::new(
                "outbound_http_balancer_endpoints",
                "The number of endpoints currently in a HTTP request balancer",
            ),
            &[
                "direction",
                "backend_name",
                "backend_port",
                "endpoint_state",
            ],
        )?;
        let version = IntGaugeVec::new(
            Opts::new(
                "ringlink_balancer_snapshot_version",
                "The version of the last endpoint snapshot the shard applied to a balancer",
            ),
            &["direction", "backend_name", "backend_port"],
        )?;
        registry.register(Box::new(endpoints.clone()))?;
        registry.register(Box::new(version.clone()))?;
        Ok(BalancerFamilies { endpoints, version })
    }
}

// === impl Dsts ===

impl Dsts {
    pub fn new(
        tx: DstTx,
        families: BalancerFamilies,
        seed: u64,
        life: Rc<Lifecycle>,
        settings: DiscoverySettings,
    ) -> Rc<Self> {
        Rc::new(Dsts {
            tx,
            life,
            settings,
            map: RefCell::new(HashMap::new()),
            rng: RefCell::new(XorShift::new(seed)),
            families,
        })
    }

    /// Whether outbound traffic to `target` is looked up with `GetProfile` (a Destination
    /// service is configured and the address is in
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS`).
    pub fn has_profile(&self, target: std::net::SocketAddr) -> bool {
        self.settings.destination
            && self
                .settings
                .profile_networks
                .iter()
                .any(|net| net.contains(target.ip()))
    }

    /// The destination a redirected request's authority names: with a Destination service,
    /// a name under the profile suffixes; `None` otherwise (the request goes to the original
    /// destination).
    pub fn suffix_name(&self, authority: Option<&str>) -> Option<String> {
        if !self.settings.destination {
            return None;
        }
        let (host, port) = parse_authority(authority?)?;
        if !ringlink_control::config::name_in_suffixes(&host, &self.settings.profile_suffixes) {
            return None;
        }
        name_of(&host, port)
    }

    /// The destination `name` (`host:port`, lowercase, no trailing dot), asking the control
    /// thread for it the first time.
    pub fn get<R: Runtime>(self: &Rc<Self>, direction: Direction, name: &str) -> Rc<Dst> {
        let dsts = self;
        if let Some(dst) = dsts.map.borrow().get(name) {
            if dst.direction == direction {
                return dst.clone();
            }
        }
        let name: Rc<str> = Rc::from(name);
        let (host, port) = name.rsplit_once(':').unwrap_or((&name, ""));
        let labels = [host.to_string(), port.to_string()];
        let gauge = |state: &str| {
            dsts.families.endpoints.with_label_values(&[
                direction.as_str(),
                &labels[0],
                &labels[1],
                state,
            ])
        };
        let gauges = Gauges {
            ready: gauge("ready"),
            pending: gauge("pending"),
            version: dsts.families.version.with_label_values(&[
                direction.as_str(),
                &labels[0],
                &labels[1],
            ]),
            labels,
        };
        let dst = Rc::new(Dst {
            name: name.clone(),
            direction,
            queue_capacity: Cell::new(dsts.settings.queue_capacity.get(direction)),
            failfast_timeout: Cell::new(dsts.settings.failfast_timeout.get(direction)),
            balancer: RefCell::new(Balancer::new()),
            set: Cell::new(SetState::Pending),
            notify: Notify::new(),
            queued: Cell::new(0),
            failfast: Cell::new(false),
            last_used: Cell::new(Instant::now()),
            evicted: Cell::new(false),
            opaque: Cell::new(false),
            policy: RefCell::new(None),
            profile: RefCell::new(None),
            gauges,
        });
        dsts.map.borrow_mut().insert(name.clone(), dst.clone());
        let (reply, answer) = oneshot::channel();
        match dsts.tx.try_send(DstRequest {
            name: name.to_string(),
            reply,
        }) {
            Ok(()) => {
                R::spawn(watch_loop::<R>(
                    dsts.life.task(),
                    dsts.clone(),
                    dst.clone(),
                    answer,
                ));
            }
            Err(error) => {
                tracing::warn!(%name, %error, "Cannot ask the control thread for a destination");
                dsts.map.borrow_mut().remove(&name);
                dst.evicted.set(true);
                dst.set.set(SetState::Unavailable);
                dst.remove_gauges(&dsts.families);
            }
        }
        dst
    }

    /// Draws from the shard's generator (for callers that balance by themselves).
    fn pick(&self, dst: &Dst) -> Option<Pick> {
        dst.balancer.borrow().pick(&mut self.rng.borrow_mut())
    }
}

// === impl Dst ===

impl Dst {
    /// Whether the shard's map still holds this destination (a connection's cached
    /// destination is looked up again once it is not).
    pub fn is_live(&self) -> bool {
        !self.evicted.get()
    }

    /// Endpoints not in connect backoff now.
    #[cfg(test)]
    pub fn ready_endpoints(&self) -> usize {
        self.balancer.borrow().ready_len()
    }

    /// Marks the destination used now (it is dropped after the discovery idle timeout
    /// without use).
    pub fn touch(&self) {
        self.last_used.set(Instant::now());
    }

    /// Whether an endpoint is ready now (a scan).
    pub fn has_ready(&self) -> bool {
        self.balancer.borrow().ready_len() > 0
    }

    /// Whether the last snapshot marked the traffic opaque.
    pub fn is_opaque(&self) -> bool {
        self.opaque.get()
    }

    /// The outbound policy the last snapshot carried (an original destination's, when the
    /// policy controller has one).
    pub fn policy(&self) -> Option<Arc<ClientPolicy>> {
        self.policy.borrow().clone()
    }

    /// The ServiceProfile routing the last snapshot carried, and its retry budget.
    pub fn profile(&self) -> Option<ProfileState> {
        self.profile.borrow().clone()
    }

    /// Uses a policy backend's queue: how many requests may wait for an endpoint, and for
    /// how long.
    pub fn set_queue(&self, capacity: usize, failfast_timeout: Duration) {
        self.queue_capacity.set(capacity);
        self.failfast_timeout.set(failfast_timeout);
    }

    /// Breaks the circuit of endpoints whose responses keep failing (a policy backend's
    /// failure accrual; `None`: never).
    pub fn set_failure_accrual(&self, accrual: Option<crate::balance::Accrual>) {
        self.balancer.borrow_mut().set_failure_accrual(accrual);
    }

    /// Waits until the control thread has answered (at most the failfast timeout).
    pub async fn settle<R: Runtime>(&self) {
        let deadline = Instant::now() + self.failfast_timeout.get();
        loop {
            let notified = std::pin::pin!(self.notify.notified());
            let mut notified = notified;
            notified.as_mut().enable();
            let now = Instant::now();
            // A policy or profile routes without this destination's own endpoints.
            let routed = self.policy.borrow().is_some() || self.profile.borrow().is_some();
            if self.set.get() != SetState::Pending || routed || now >= deadline {
                return;
            }
            let _ = crate::rt::timeout::<R, _>(deadline - now, notified).await;
        }
    }

    /// A ready endpoint, waiting for one if need be (see the module docs).
    pub async fn pick<R: Runtime>(&self, dsts: &Dsts) -> Result<Pick, DstError> {
        let now = Instant::now();
        self.last_used.set(now);
        if let Some(pick) = self.try_pick(dsts) {
            return Ok(pick);
        }
        self.settled()?;
        if self.failfast.get() {
            return Err(DstError::Unavailable(format!(
                "{} is failing fast: no endpoint is ready",
                self.name
            )));
        }
        let (capacity, timeout) = (self.queue_capacity.get(), self.failfast_timeout.get());
        if self.queued.get() >= capacity {
            return Err(DstError::Unavailable(format!(
                "the queue of {} is full ({capacity} requests)",
                self.name
            )));
        }
        let _queued = Queued::new(&self.queued);
        let deadline = now + timeout;
        loop {
            let notified = std::pin::pin!(self.notify.notified());
            let mut notified = notified;
            notified.as_mut().enable();
            if let Some(pick) = self.try_pick(dsts) {
                return Ok(pick);
            }
            self.settled()?;
            let now = Instant::now();
            if now >= deadline {
                self.failfast.set(true);
                tracing::info!(dst = %self.name, ?timeout, "No endpoint ready; failing fast");
                return Err(DstError::FailFast(timeout));
            }
            let wake = {
                let balancer = self.balancer.borrow();
                let mut wake = balancer
                    .next_ready_at()
                    .map_or(deadline, |at| at.min(deadline));
                if balancer.ejected_len() > 0 {
                    // A probe's answer wakes no one: look again soon.
                    wake = wake.min(now + PROBE_POLL);
                }
                wake
            };
            let _ = crate::rt::timeout::<R, _>(wake.saturating_duration_since(now), notified).await;
        }
    }

    fn try_pick(&self, dsts: &Dsts) -> Option<Pick> {
        let pick = dsts.pick(self)?;
        self.failfast.set(false);
        Some(pick)
    }

    /// An error when no endpoint can come without a new snapshot saying otherwise.
    fn settled(&self) -> Result<(), DstError> {
        match self.set.get() {
            SetState::Fallback => Err(DstError::Fallback),
            SetState::Resolved { exists: false } => Err(DstError::NotFound(self.name.clone())),
            SetState::Unavailable => Err(DstError::Unavailable(
                "the control thread is unavailable".to_string(),
            )),
            _ => Ok(()),
        }
    }

    /// Applies a snapshot to the replica and wakes queued requests.
    fn apply(&self, set: &EndpointSet) {
        let snapshot = Snapshot {
            version: set.version,
            endpoints: set
                .endpoints
                .iter()
                .map(|(addr, meta)| Endpoint {
                    addr: *addr,
                    labels: Labels::new(meta.labels.clone()),
                    weight: meta.weight,
                    tls: endpoint_tls(meta),
                    h2: meta.protocol == ProtocolHint::H2,
                })
                .collect(),
        };
        self.balancer.borrow_mut().apply(&snapshot);
        // Opaque when the profile says so, or the policy's protocol is opaque (or TLS).
        let policy = set.policy.as_ref().map(|p| p.0.clone());
        self.opaque
            .set(set.opaque || policy.as_ref().is_some_and(|p| p.is_opaque()));
        *self.policy.borrow_mut() = policy;
        let mut profile = self.profile.borrow_mut();
        let same = match (&*profile, &set.profile) {
            (Some((current, _)), Some(new)) => Arc::ptr_eq(current, &new.0),
            (None, None) => true,
            _ => false,
        };
        if !same {
            *profile = set.profile.as_ref().map(|p| {
                let budget = p.0.retry_budget.map(|b| Rc::new(Budget::new(b)));
                (p.0.clone(), budget)
            });
        }
        drop(profile);
        self.set.set(match set.state {
            State::Pending => SetState::Pending,
            State::Resolved => SetState::Resolved { exists: set.exists },
            State::Fallback => SetState::Fallback,
        });
        tracing::debug!(
            dst = %self.name,
            version = set.version,
            endpoints = snapshot.endpoints.len(),
            "Applied endpoint snapshot"
        );
        self.gauges.version.set(set.version as i64);
        self.update_gauges();
        self.notify.notify_waiters();
    }

    fn update_gauges(&self) {
        let balancer = self.balancer.borrow();
        let ready = balancer.ready_len();
        self.gauges.ready.set(ready as i64);
        self.gauges.pending.set((balancer.len() - ready) as i64);
    }

    fn remove_gauges(&self, families: &BalancerFamilies) {
        let [host, port] = &self.gauges.labels;
        let dir = self.direction.as_str();
        for state in ["ready", "pending"] {
            let _ = families
                .endpoints
                .remove_label_values(&[dir, host, port, state]);
        }
        let _ = families.version.remove_label_values(&[dir, host, port]);
    }
}

// === impl Budget ===

impl Budget {
    const SLOTS: u32 = 10;

    pub fn new(params: RetryBudget) -> Self {
        Budget {
            params,
            slots: RefCell::new(std::collections::VecDeque::new()),
        }
    }

    /// Counts a request.
    pub fn deposit(&self) {
        self.with_current(|slot| slot.1 += 1);
    }

    /// Takes a retry from the budget; `false` when none is left.
    pub fn try_withdraw(&self) -> bool {
        let (requests, retries) = self.with_current(|_| {});
        let ttl = self.params.ttl.as_secs_f64();
        let allowed = f64::from(self.params.min_per_second) * ttl
            + f64::from(self.params.ratio) * f64::from(requests);
        if f64::from(retries) + 1.0 > allowed {
            return false;
        }
        self.with_current(|slot| slot.2 += 1);
        true
    }

    /// Drops the slots older than the window, applies `f` to the current one, and returns
    /// the window's requests and retries.
    fn with_current(&self, f: impl FnOnce(&mut (Instant, u32, u32))) -> (u32, u32) {
        let now = Instant::now();
        let width = self.params.ttl / Self::SLOTS;
        let mut slots = self.slots.borrow_mut();
        while slots
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.0) >= self.params.ttl)
        {
            slots.pop_front();
        }
        if slots
            .back()
            .is_none_or(|s| now.saturating_duration_since(s.0) >= width)
        {
            slots.push_back((now, 0, 0));
        }
        f(slots.back_mut().expect("a current slot"));
        slots.iter().fold((0, 0), |(r, t), s| (r + s.1, t + s.2))
    }
}

// === impl Queued ===

impl<'a> Queued<'a> {
    fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Queued(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

// === impl DstError ===

impl From<DstError> for ProxyError {
    /// The error a request gets for it (`Fallback` is not an error: callers handle it).
    fn from(error: DstError) -> ProxyError {
        match error {
            DstError::Fallback => ProxyError::Unavailable("no fallback".to_string()),
            DstError::NotFound(name) => ProxyError::Unavailable(format!("{name} not found")),
            DstError::Unavailable(why) => ProxyError::Unavailable(why),
            DstError::FailFast(after) => ProxyError::FailFast(after),
        }
    }
}

// === functions ===

/// How to reach a meshed endpoint's proxy: DNS-like identities only (a URI identity is
/// SPIFFE, which this proxy does not verify), the SNI defaulting to the identity.
fn endpoint_tls(meta: &ringlink_control::discovery::EndpointMeta) -> Option<Arc<EndpointTls>> {
    use ringlink_control::discovery::Identity;
    let tls = meta.identity.as_ref()?;
    let Identity::Dns(server_id) = &tls.identity else {
        return None;
    };
    Some(Arc::new(EndpointTls {
        server_id: Arc::from(server_id.as_str()),
        server_name: tls.server_name.clone().unwrap_or_else(|| server_id.clone()),
        opaque_port: meta.opaque_transport_port,
    }))
}

/// Where a request addressed by name goes when discovery refused the name and there is no
/// original destination: the name's own DNS addresses.
pub async fn fallback_addr<R: Runtime>(
    dns: &ShardDns,
    name: &str,
) -> Result<std::net::SocketAddr, String> {
    let (host, port) = name.rsplit_once(':').unwrap_or((name, "80"));
    dns::resolve::<R>(dns, host, port.parse().unwrap_or(80)).await
}

/// A connection's last destination, so that its next request to the same name skips the
/// shard's map.
#[derive(Default)]
pub struct DstCache(
    RefCell<Option<Rc<Dst>>>,
    RefCell<Option<(SocketAddr, Rc<Dst>)>>,
);

impl DstCache {
    /// The shard's destination for the original destination `addr` (named `ip:port`),
    /// kept apart from [`DstCache::get`]'s so that a connection whose requests a policy
    /// routes to backends keeps both.
    pub fn parent<R: Runtime>(
        &self,
        dsts: &Rc<Dsts>,
        direction: Direction,
        addr: SocketAddr,
    ) -> Rc<Dst> {
        let mut cached = self.1.borrow_mut();
        if let Some((at, dst)) = &*cached {
            if *at == addr && dst.is_live() {
                return dst.clone();
            }
        }
        let dst = dsts.get::<R>(direction, &addr.to_string());
        *cached = Some((addr, dst.clone()));
        dst
    }

    /// The shard's destination `name`, from the cache when it is the last one. The cache
    /// is borrowed only inside this call, so that a connection's concurrent streams can
    /// share it.
    pub fn get<R: Runtime>(&self, dsts: &Rc<Dsts>, direction: Direction, name: &str) -> Rc<Dst> {
        let mut cached = self.0.borrow_mut();
        if let Some(dst) = &*cached {
            if *dst.name == *name && dst.is_live() {
                return dst.clone();
            }
        }
        let dst = dsts.get::<R>(direction, name);
        *cached = Some(dst.clone());
        dst
    }
}

/// Applies the destination's snapshots until the drain, the control thread's end, or the
/// destination going idle.
async fn watch_loop<R: Runtime>(
    _task: TaskGuard,
    dsts: Rc<Dsts>,
    dst: Rc<Dst>,
    answer: oneshot::Receiver<watch::Receiver<Arc<EndpointSet>>>,
) {
    let mut phase = dsts.life.phase();
    let rx = or(
        async {
            crate::rt::timeout::<R, _>(WATCH_TIMEOUT, answer)
                .await
                .and_then(Result::ok)
        },
        // The drain does not wait for the control thread's answer.
        async {
            dsts.life.drain_started().await;
            None
        },
    )
    .await;
    let Some(mut rx) = rx else {
        tracing::info!(dst = %dst.name, "No answer from the control thread for a destination (or draining)");
        dst.set.set(SetState::Unavailable);
        dst.notify.notify_waiters();
        forget(&dsts, &dst);
        return;
    };
    let idle_timeout = dsts.settings.idle_timeout.get(dst.direction);
    let every = (idle_timeout / 2).clamp(Duration::from_millis(10), HOUSEKEEPING);
    loop {
        let set = rx.borrow_and_update().clone();
        dst.apply(&set);
        loop {
            enum Event {
                Changed(bool),
                Draining,
                Tick,
            }
            let event = or(
                or(
                    async { Event::Changed(rx.changed().await.is_ok()) },
                    async {
                        let _ = phase.wait_for(|p| *p != Phase::Serving).await;
                        Event::Draining
                    },
                ),
                async {
                    R::sleep(every).await;
                    Event::Tick
                },
            )
            .await;
            match event {
                Event::Changed(true) => break,
                // The control thread is gone, or the shard drains: keep the last set.
                Event::Changed(false) | Event::Draining => return,
                Event::Tick => {
                    dst.update_gauges();
                    let idle = dst.last_used.get().elapsed() >= idle_timeout;
                    if idle && dst.queued.get() == 0 {
                        tracing::debug!(dst = %dst.name, "Destination idle; dropped");
                        forget(&dsts, &dst);
                        return;
                    }
                }
            }
        }
    }
}

/// Drops `dst` from the shard's map and its gauges from the page.
fn forget(dsts: &Dsts, dst: &Rc<Dst>) {
    let mut map = dsts.map.borrow_mut();
    if map.get(&dst.name).is_some_and(|d| Rc::ptr_eq(d, dst)) {
        map.remove(&dst.name);
    }
    dst.evicted.set(true);
    dst.remove_gauges(&dsts.families);
}
