//! A shard's load balancer: power of two choices over ready endpoints by peak-EWMA cost, as
//! linkerd2-proxy balances (tower's `p2c` + `PeakEwma`), rebuilt from immutable snapshots.
//!
//! The control thread publishes an `Arc<Snapshot>` (a version and the endpoint set); each
//! shard applies it to its own [`Balancer`] replica, which keeps the live load state (RTT
//! estimate, pending requests, connect backoff) of the endpoints that remain. Everything here
//! is shard-local `Rc`/`Cell` state: no lock, no atomic, no runtime. Time comes from a
//! [`Clock`] and randomness from a caller-owned [`XorShift`], so tests are deterministic.
//!
//! Cost of an endpoint = `rtt_estimate × (pending + 1) / weight`, where the estimate is
//! peak-sensitive: a sample above it replaces it at once; a sample below it is blended in
//! with weight `1 - exp(-elapsed / decay)`. Between samples the estimate seen by `pick`
//! decays toward zero with the same time constant, so an endpoint that was slow and has not
//! been tried for a while is tried again.
//!
//! Speed: `cargo bench -p ringlink-benches --bench balance`; numbers in `benches/README.md`.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

// === constants ===

/// The RTT assumed for an endpoint that has no sample yet (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// The time constant of the RTT estimate (Linkerd's default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// The first connect backoff; it doubles per consecutive failure, up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest connect backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Circuit breaking (failure accrual) of a balancer's endpoints: after `max_failures`
/// failed responses in a row an endpoint is ejected for a backoff (`min_backoff`, doubling
/// per consecutive ejection up to `max_backoff`, lengthened by up to `jitter` of itself);
/// then one probe request is let through: its success closes the breaker, its failure
/// ejects the endpoint again (linkerd2-proxy's `ConsecutiveFailures`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accrual {
    pub max_failures: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A ratio (0.5: up to half of the backoff again).
    pub jitter: f32,
}

/// Random pairs tried before falling back to a scan for ready endpoints.
const PAIR_ATTEMPTS: usize = 3;

// === types ===

/// Metric labels from discovery (set- and endpoint-level, merged), shared between endpoints.
pub type Labels = Arc<BTreeMap<String, String>>;

/// One endpoint as discovery describes it. Keyed by `addr`: an endpoint that keeps its address
/// across snapshots keeps its load state, even if its labels or weight change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Metric labels from discovery, empty when it gave none.
    pub labels: Labels,
    /// Relative weight from discovery; cost is divided by it (0 counts as 1).
    pub weight: u32,
    /// How to reach the endpoint's proxy with mesh TLS, when discovery says it is meshed.
    pub tls: Option<Arc<EndpointTls>>,
    /// Discovery's protocol hint says the endpoint's proxy takes HTTP/2: HTTP/1 requests go
    /// to it upgraded (`l5d-orig-proto`).
    pub h2: bool,
}

/// A meshed endpoint's proxy, as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointTls {
    /// The identity its certificate must carry.
    pub server_id: Arc<str>,
    /// The SNI to ask for it with.
    pub server_name: String,
    /// Its inbound port, when traffic goes there with a transport header.
    pub opaque_port: Option<u16>,
}

/// An immutable, versioned endpoint set, as the control thread publishes it (`Arc<Snapshot>`
/// on a watch channel; it is `Send + Sync`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub endpoints: Vec<Endpoint>,
}

/// Where the balancer reads the time.
pub trait Clock: Clone {
    fn now(&self) -> Instant;
}

/// The real clock, [`Instant::now`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// A tiny xorshift64* generator: enough for choosing pairs, not for anything secret.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

/// A shard's balancer replica over one endpoint set. Shard-only: not `Send`.
pub struct Balancer<C: Clock = SystemClock> {
    clock: C,
    decay_ns: f64,
    /// In snapshot order; `pick` indexes it at random.
    endpoints: Vec<Rc<EndpointState>>,
    by_addr: HashMap<SocketAddr, usize>,
    applied_version: Option<u64>,
    accrual: Option<Accrual>,
}

/// A chosen endpoint, counted as pending until dropped. Report the outcome on it:
/// [`Pick::connected`] / [`Pick::connect_failed`] for a new connection, and
/// [`Pick::observe_rtt`] at the first response byte.
pub struct Pick<C: Clock = SystemClock> {
    endpoint: Rc<EndpointState>,
    clock: C,
    decay_ns: f64,
    /// This pick is its ejected endpoint's probe, not yet answered.
    probe: Cell<bool>,
}

/// The live state of one endpoint. Held by the balancer and by outstanding picks, so a pick
/// of an endpoint that a snapshot removed still drops cleanly.
#[derive(Debug)]
struct EndpointState {
    addr: SocketAddr,
    endpoint: RefCell<Endpoint>,
    /// `1 / max(weight, 1)`.
    inv_weight: Cell<f64>,
    rtt_ns: Cell<f64>,
    rtt_at: Cell<Instant>,
    pending: Cell<u32>,
    /// Consecutive connect failures.
    failures: Cell<u32>,
    /// Not picked before this instant.
    backoff_until: Cell<Option<Instant>>,
    jitter: Cell<u64>,
    /// The balancer's failure accrual (copied here for the picks).
    accrual: Cell<Option<Accrual>>,
    /// Failed responses in a row.
    response_failures: Cell<u32>,
    /// Ejections in a row (the backoff doubles with each).
    ejections: Cell<u32>,
    /// Ejected until this instant; after it, one probe at a time.
    ejected_until: Cell<Option<Instant>>,
    /// A probe request is in flight.
    probing: Cell<bool>,
}

// === impl SystemClock ===

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

// === impl XorShift ===

impl XorShift {
    /// A generator from `seed` (0 is replaced, as xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for `n` ≪ 2^32). `n > 0`.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// === impl Balancer ===

impl Balancer<SystemClock> {
    /// An empty balancer on the real clock; nothing is picked until a snapshot is applied.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }
}

impl Default for Balancer<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> Balancer<C> {
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            decay_ns: nanos(DEFAULT_DECAY),
            endpoints: Vec::new(),
            by_addr: HashMap::new(),
            applied_version: None,
            accrual: None,
        }
    }

    /// Breaks the circuit of endpoints whose responses keep failing (`None`: never). A
    /// change resets every endpoint's breaker.
    pub fn set_failure_accrual(&mut self, accrual: Option<Accrual>) {
        if self.accrual == accrual {
            return;
        }
        self.accrual = accrual;
        for endpoint in &self.endpoints {
            endpoint.accrual.set(accrual);
            endpoint.close_breaker();
        }
    }

    /// Endpoints whose breaker is open or probing now (a scan: for gauges).
    pub fn ejected_len(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.ejected_until.get().is_some())
            .count()
    }

    /// Replaces the endpoint set with `snapshot`'s. Endpoints whose address stays keep their
    /// RTT estimate, pending count and backoff (taking the new labels and weight); new ones
    /// start at [`DEFAULT_RTT`]; removed ones are forgotten (their outstanding picks still
    /// drop cleanly). A repeated address counts once.
    pub fn apply(&mut self, snapshot: &Snapshot) {
        let now = self.clock.now();
        let mut endpoints = Vec::with_capacity(snapshot.endpoints.len());
        let mut by_addr = HashMap::with_capacity(snapshot.endpoints.len());
        for ep in &snapshot.endpoints {
            if by_addr.contains_key(&ep.addr) {
                continue;
            }
            let state = match self.by_addr.get(&ep.addr) {
                Some(&i) => {
                    let state = self.endpoints[i].clone();
                    if *state.endpoint.borrow() != *ep {
                        state.update(ep);
                    }
                    state
                }
                None => {
                    let state = EndpointState::new(ep.clone(), now);
                    state.accrual.set(self.accrual);
                    Rc::new(state)
                }
            };
            by_addr.insert(ep.addr, endpoints.len());
            endpoints.push(state);
        }
        self.endpoints = endpoints;
        self.by_addr = by_addr;
        self.applied_version = Some(snapshot.version);
    }

    /// The version of the last snapshot applied, `None` before the first.
    pub fn applied_version(&self) -> Option<u64> {
        self.applied_version
    }

    /// Endpoints in the set, ready or not.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Endpoints not in connect backoff now (a scan: for gauges, not for the request path).
    pub fn ready_len(&self) -> usize {
        let now = self.clock.now();
        self.endpoints.iter().filter(|e| e.is_ready(now)).count()
    }

    /// The earliest instant an endpoint in backoff becomes ready again; `None` if none is in
    /// backoff (a scan: for callers waiting for readiness, not for the request path).
    pub fn next_ready_at(&self) -> Option<Instant> {
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| !e.probing.get())
            .filter_map(|e| e.ejected_until.get());
        self.endpoints
            .iter()
            .filter_map(|e| e.backoff_until.get())
            .chain(ejected)
            .min()
    }

    /// Chooses an endpoint: the cheaper of two distinct ready endpoints drawn at random, the
    /// only ready one if there is one, `None` if none is ready.
    pub fn pick(&self, rng: &mut XorShift) -> Option<Pick<C>> {
        let now = self.clock.now();
        let n = self.endpoints.len();
        let chosen = match n {
            0 => return None,
            1 => Some(0).filter(|&i| self.endpoints[i].is_ready(now)),
            _ => self
                .pick_pair(rng, now, n)
                .or_else(|| self.pick_scan(rng, now)),
        }?;
        let pick = Pick::new(
            self.endpoints[chosen].clone(),
            self.clock.clone(),
            self.decay_ns,
        );
        let endpoint = &self.endpoints[chosen];
        if endpoint.ejected_until.get().is_some() {
            // Past its ejection (else it was not ready): this request is the probe.
            endpoint.probing.set(true);
            pick.probe.set(true);
        }
        Some(pick)
    }

    /// P2C over random pairs of the whole set; `None` if no attempt drew two ready endpoints.
    fn pick_pair(&self, rng: &mut XorShift, now: Instant, n: usize) -> Option<usize> {
        for _ in 0..PAIR_ATTEMPTS {
            let (a, b) = distinct_pair(rng, n);
            let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
            if ea.is_ready(now) && eb.is_ready(now) {
                let cheaper = ea.cost(now, self.decay_ns) <= eb.cost(now, self.decay_ns);
                return Some(if cheaper { a } else { b });
            }
        }
        None
    }

    /// P2C over the ready endpoints found by a scan: the path when many are in backoff.
    /// Without allocating: one scan counts them, a second finds the two drawn.
    fn pick_scan(&self, rng: &mut XorShift, now: Instant) -> Option<usize> {
        let ready = || (0..self.endpoints.len()).filter(move |&i| self.endpoints[i].is_ready(now));
        match ready().count() {
            0 => None,
            1 => ready().next(),
            n => {
                let (x, y) = distinct_pair(rng, n);
                let mut found = ready().skip(x.min(y));
                let lo = found.next()?;
                let hi = found.nth(x.abs_diff(y) - 1)?;
                let (a, b) = if x < y { (lo, hi) } else { (hi, lo) };
                let cheaper = self.endpoints[a].cost(now, self.decay_ns)
                    <= self.endpoints[b].cost(now, self.decay_ns);
                Some(if cheaper { a } else { b })
            }
        }
    }
}

// === impl Pick ===

impl<C: Clock> Pick<C> {
    fn new(endpoint: Rc<EndpointState>, clock: C, decay_ns: f64) -> Self {
        endpoint.pending.set(endpoint.pending.get() + 1);
        Self {
            endpoint,
            clock,
            decay_ns,
            probe: Cell::new(false),
        }
    }

    /// Reports the response to this pick's request: a failure (5xx, an error) counts
    /// toward ejecting the endpoint under failure accrual; a success resets the count (and
    /// closes the breaker of an endpoint this pick probed).
    pub fn response(&self, success: bool) {
        let ep = &self.endpoint;
        let Some(accrual) = ep.accrual.get() else {
            return;
        };
        if self.probe.replace(false) {
            ep.probing.set(false);
            if success {
                ep.close_breaker();
            } else {
                ep.eject(&accrual, self.clock.now());
            }
            return;
        }
        if success {
            ep.response_failures.set(0);
            return;
        }
        let failures = ep.response_failures.get().saturating_add(1);
        ep.response_failures.set(failures);
        // (0 never ejects, as in linkerd, which compares for equality after counting.)
        if accrual.max_failures > 0
            && failures >= accrual.max_failures
            && ep.ejected_until.get().is_none()
        {
            ep.eject(&accrual, self.clock.now());
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// The endpoint as discovery last described it (labels and weight may have changed
    /// since the pick).
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.endpoint.borrow().clone()
    }

    /// How to reach the endpoint's proxy with mesh TLS, if it is meshed.
    pub fn tls(&self) -> Option<Arc<EndpointTls>> {
        self.endpoint.endpoint.borrow().tls.clone()
    }

    /// Whether HTTP/1 requests to the endpoint are upgraded to HTTP/2 (its hint is H2).
    pub fn h2(&self) -> bool {
        self.endpoint.endpoint.borrow().h2
    }

    /// The endpoint's discovery labels (shared, no copy).
    pub fn labels(&self) -> Labels {
        self.endpoint.endpoint.borrow().labels.clone()
    }

    /// Records a round-trip time, measured to the first response byte.
    pub fn observe_rtt(&self, rtt: Duration) {
        self.endpoint
            .observe(nanos(rtt), self.clock.now(), self.decay_ns);
    }

    /// The connection to this endpoint failed: it is not picked until its backoff (100 ms,
    /// doubling per consecutive failure up to 10 s, jittered down by up to half) has passed.
    pub fn connect_failed(&self) {
        let ep = &self.endpoint;
        let failures = ep.failures.get().saturating_add(1);
        ep.failures.set(failures);
        let delay = MIN_BACKOFF
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(MAX_BACKOFF);
        let mut rng = XorShift::new(ep.jitter.get());
        let delay = delay.mul_f64(1.0 - 0.5 * rng.unit());
        ep.jitter.set(rng.next_u64());
        ep.backoff_until.set(Some(self.clock.now() + delay));
    }

    /// A connection to this endpoint succeeded: its backoff is cleared.
    pub fn connected(&self) {
        self.endpoint.failures.set(0);
        self.endpoint.backoff_until.set(None);
    }
}

impl<C: Clock> Drop for Pick<C> {
    fn drop(&mut self) {
        let pending = &self.endpoint.pending;
        pending.set(pending.get().saturating_sub(1));
        if self.probe.get() {
            // The probe ended without a response: let another request probe.
            self.endpoint.probing.set(false);
        }
    }
}

// === impl EndpointState ===

impl EndpointState {
    fn new(endpoint: Endpoint, now: Instant) -> Self {
        let mut seed = DefaultHasher::new();
        endpoint.addr.hash(&mut seed);
        Self {
            addr: endpoint.addr,
            inv_weight: Cell::new(inv_weight(endpoint.weight)),
            endpoint: RefCell::new(endpoint),
            rtt_ns: Cell::new(nanos(DEFAULT_RTT)),
            rtt_at: Cell::new(now),
            pending: Cell::new(0),
            failures: Cell::new(0),
            backoff_until: Cell::new(None),
            jitter: Cell::new(seed.finish()),
            accrual: Cell::new(None),
            response_failures: Cell::new(0),
            ejections: Cell::new(0),
            ejected_until: Cell::new(None),
            probing: Cell::new(false),
        }
    }

    /// Ejects the endpoint for its next backoff.
    fn eject(&self, accrual: &Accrual, now: Instant) {
        let n = self.ejections.get();
        self.ejections.set(n.saturating_add(1));
        let base = accrual
            .min_backoff
            .saturating_mul(1u32 << n.min(16))
            .min(accrual.max_backoff);
        let mut rng = XorShift::new(self.jitter.get());
        let extra = base.mul_f64(f64::from(accrual.jitter.max(0.0)) * rng.unit());
        self.jitter.set(rng.next_u64());
        let delay = (base + extra).min(accrual.max_backoff.max(base));
        self.ejected_until.set(Some(now + delay));
        self.response_failures.set(0);
        tracing::info!(addr = %self.addr, ?delay, "Endpoint ejected after consecutive failures");
    }

    /// Closes the breaker: the endpoint is fully ready again.
    fn close_breaker(&self) {
        self.response_failures.set(0);
        self.ejections.set(0);
        self.ejected_until.set(None);
        self.probing.set(false);
    }

    /// Takes `endpoint`'s labels and weight (same address), keeping the load state.
    fn update(&self, endpoint: &Endpoint) {
        self.inv_weight.set(inv_weight(endpoint.weight));
        *self.endpoint.borrow_mut() = endpoint.clone();
    }

    fn is_ready(&self, now: Instant) -> bool {
        self.backoff_until.get().is_none_or(|until| now >= until)
            && self
                .ejected_until
                .get()
                .is_none_or(|until| now >= until && !self.probing.get())
    }

    /// The RTT estimate decayed toward zero since its last sample.
    fn rtt_now(&self, now: Instant, decay_ns: f64) -> f64 {
        let elapsed = nanos(now.saturating_duration_since(self.rtt_at.get()));
        self.rtt_ns.get() * (-elapsed / decay_ns).exp()
    }

    fn cost(&self, now: Instant, decay_ns: f64) -> f64 {
        self.rtt_now(now, decay_ns) * f64::from(self.pending.get() + 1) * self.inv_weight.get()
    }

    fn observe(&self, rtt_ns: f64, now: Instant, decay_ns: f64) {
        let estimate = self.rtt_ns.get();
        let next = if rtt_ns > estimate {
            rtt_ns
        } else {
            let elapsed = nanos(now.saturating_duration_since(self.rtt_at.get()));
            let keep = (-elapsed / decay_ns).exp();
            estimate * keep + rtt_ns * (1.0 - keep)
        };
        self.rtt_ns.set(next);
        self.rtt_at.set(now);
    }
}

// === helpers ===

fn inv_weight(weight: u32) -> f64 {
    1.0 / f64::from(weight.max(1))
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Two distinct indices in `0..n`, `n >= 2`.
fn distinct_pair(rng: &mut XorShift, n: usize) -> (usize, usize) {
    let a = rng.below(n);
    let mut b = rng.below(n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

#[cfg(test)]
mod tests;
