use std::collections::HashMap;

use super::*;

// === helpers ===

/// A clock that moves only when told.
#[derive(Clone)]
struct ManualClock(Rc<Cell<Instant>>);

impl ManualClock {
    fn new() -> Self {
        Self(Rc::new(Cell::new(Instant::now())))
    }

    fn advance(&self, d: Duration) {
        self.0.set(self.0.get() + d);
    }

    fn set(&self, t: Instant) {
        self.0.set(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.0.get()
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 8080))
}

fn endpoint(i: usize) -> Endpoint {
    Endpoint {
        addr: addr(i),
        labels: Labels::default(),
        weight: 10_000,
        tls: None,
        h2: false,
    }
}

fn snapshot(version: u64, ids: impl IntoIterator<Item = usize>) -> Snapshot {
    Snapshot {
        version,
        endpoints: ids.into_iter().map(endpoint).collect(),
    }
}

fn balancer(ids: impl IntoIterator<Item = usize>) -> (Balancer<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let mut b = Balancer::with_clock(clock.clone());
    b.apply(&snapshot(1, ids));
    (b, clock)
}

/// A pick of one particular endpoint, as if P2C had chosen it.
fn pick_of(b: &Balancer<ManualClock>, a: SocketAddr) -> Pick<ManualClock> {
    let state = b.endpoints[b.by_addr[&a]].clone();
    Pick::new(state, b.clock.clone(), b.decay_ns)
}

fn state(b: &Balancer<ManualClock>, a: SocketAddr) -> &EndpointState {
    &b.endpoints[b.by_addr[&a]]
}

/// `n` picks, each dropped at once; how many each address got.
fn count_picks(
    b: &Balancer<ManualClock>,
    rng: &mut XorShift,
    n: usize,
) -> HashMap<SocketAddr, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let p = b.pick(rng).expect("an endpoint is ready");
        *counts.entry(p.addr()).or_default() += 1;
    }
    counts
}

/// Closed-loop load: `concurrency` clients, each sending its next request when its last
/// response arrives; each endpoint answers after its fixed latency, sampled as the RTT.
struct Sim {
    clock: ManualClock,
    balancer: Balancer<ManualClock>,
    rng: XorShift,
    latency: HashMap<SocketAddr, Duration>,
    in_flight: Vec<(Instant, Pick<ManualClock>)>,
    concurrency: usize,
}

impl Sim {
    fn new(latencies: &[Duration], concurrency: usize) -> Self {
        let (balancer, clock) = balancer(0..latencies.len());
        let latency = latencies
            .iter()
            .enumerate()
            .map(|(i, &l)| (addr(i), l))
            .collect();
        Self {
            clock,
            balancer,
            rng: XorShift::new(7),
            latency,
            in_flight: Vec::new(),
            concurrency,
        }
    }

    /// Sends `n` requests; returns how many each endpoint got and the simulated time taken.
    fn run(&mut self, n: usize) -> (HashMap<SocketAddr, usize>, Duration) {
        let start = self.clock.now();
        let mut counts = HashMap::new();
        let mut sent = 0;
        while sent < n {
            if self.in_flight.len() < self.concurrency {
                let p = self.balancer.pick(&mut self.rng).expect("ready");
                *counts.entry(p.addr()).or_default() += 1;
                let done = self.clock.now() + self.latency[&p.addr()];
                self.in_flight.push((done, p));
                sent += 1;
            } else {
                self.complete_next();
            }
        }
        (counts, self.clock.now() - start)
    }

    fn complete_next(&mut self) {
        let (i, _) = self
            .in_flight
            .iter()
            .enumerate()
            .min_by_key(|(_, (done, _))| *done)
            .expect("in flight");
        let (done, p) = self.in_flight.swap_remove(i);
        self.clock.set(done);
        p.observe_rtt(self.latency[&p.addr()]);
    }
}

fn share(counts: &HashMap<SocketAddr, usize>, i: usize, total: usize) -> f64 {
    counts.get(&addr(i)).copied().unwrap_or(0) as f64 / total as f64
}

// === tests ===

#[test]
fn snapshot_crosses_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Snapshot>();
    send_sync::<Arc<Snapshot>>();
}

#[test]
fn empty_balancer_picks_nothing() {
    let b = Balancer::with_clock(ManualClock::new());
    assert_eq!(b.applied_version(), None);
    assert!(b.pick(&mut XorShift::new(1)).is_none());
}

#[test]
fn single_endpoint_is_picked() {
    let (b, _) = balancer([0]);
    let p = b.pick(&mut XorShift::new(1)).expect("one ready endpoint");
    assert_eq!(p.addr(), addr(0));
}

#[test]
fn p2c_prefers_lower_cost() {
    let (b, _) = balancer(0..2);
    // A sample above the estimate replaces it: endpoint 0 now costs 100 ms, endpoint 1 30 ms.
    pick_of(&b, addr(0)).observe_rtt(Duration::from_millis(100));
    let counts = count_picks(&b, &mut XorShift::new(3), 1_000);
    assert_eq!(counts.get(&addr(1)), Some(&1_000), "{counts:?}");
}

#[test]
fn pending_requests_raise_cost() {
    let (b, _) = balancer(0..2);
    let mut rng = XorShift::new(5);
    // Equal RTTs: each held pick makes its endpoint dearer, so they alternate.
    let held: Vec<_> = (0..10).map(|_| b.pick(&mut rng).unwrap()).collect();
    let on_0 = held.iter().filter(|p| p.addr() == addr(0)).count();
    assert_eq!(on_0, 5);
    assert_eq!(state(&b, addr(0)).pending.get(), 5);
    drop(held);
    assert_eq!(state(&b, addr(0)).pending.get(), 0);
    assert_eq!(state(&b, addr(1)).pending.get(), 0);

    // Endpoint 1 is 3x slower; with 6 in flight on 0 (cost 30 ms x 7) and 1 on 1
    // (90 ms x 2), the next goes to 1.
    pick_of(&b, addr(1)).observe_rtt(Duration::from_millis(90));
    let _busy: Vec<_> = (0..6).map(|_| pick_of(&b, addr(0))).collect();
    let _one = pick_of(&b, addr(1));
    assert_eq!(b.pick(&mut rng).unwrap().addr(), addr(1));
}

#[test]
fn weight_scales_cost() {
    let clock = ManualClock::new();
    let mut b = Balancer::with_clock(clock);
    let mut heavy = endpoint(0);
    heavy.weight = 30_000;
    b.apply(&Snapshot {
        version: 1,
        endpoints: vec![heavy, endpoint(1)],
    });
    let mut rng = XorShift::new(9);
    let held: Vec<_> = (0..40).map(|_| b.pick(&mut rng).unwrap()).collect();
    let on_heavy = held.iter().filter(|p| p.addr() == addr(0)).count();
    assert!(
        (28..=31).contains(&on_heavy),
        "{on_heavy} of 40 on the 3x weight"
    );
}

#[test]
fn fast_endpoint_gets_most_slow_gets_few() {
    let ms = Duration::from_millis;
    let mut sim = Sim::new(&[ms(1), ms(5), ms(50)], 8);
    let (counts, took) = sim.run(10_000);
    let (fast, mid, slow) = (
        share(&counts, 0, 10_000),
        share(&counts, 1, 10_000),
        share(&counts, 2, 10_000),
    );
    assert!(fast > 0.6, "fast {fast} mid {mid} slow {slow} in {took:?}");
    assert!(
        (0.05..0.4).contains(&mid),
        "fast {fast} mid {mid} slow {slow}"
    );
    assert!(slow < 0.03, "fast {fast} mid {mid} slow {slow}");
}

#[test]
fn traffic_leaves_an_endpoint_that_slows_down() {
    let ms = Duration::from_millis;
    let mut sim = Sim::new(&[ms(1), ms(5), ms(50)], 8);
    let (before, _) = sim.run(10_000);
    assert!(share(&before, 0, 10_000) > 0.6, "{before:?}");

    // The fast one becomes the slowest. Its first 100 ms sample replaces its estimate (peak),
    // so after a short transition it gets little. (The 5 ms one still carries part of its
    // 30 ms default, which decays over seconds, so the 50 ms and 100 ms ones still get a
    // share when it has requests pending.)
    sim.latency.insert(addr(0), ms(100));
    let (_, transition) = sim.run(500);
    let (after, _) = sim.run(2_000);
    assert!(
        transition < Duration::from_secs(2),
        "transition took {transition:?}"
    );
    let share_0 = share(&after, 0, 2_000);
    assert!(
        share_0 < 0.1,
        "share of the slowed endpoint {share_0}: {after:?}"
    );
    assert!(share(&after, 1, 2_000) > 0.5, "{after:?}");
}

#[test]
fn rtt_estimate_is_peak_sensitive_and_decays() {
    let (b, clock) = balancer([0]);
    let p = pick_of(&b, addr(0));
    let ep = state(&b, addr(0));
    assert_eq!(ep.rtt_ns.get(), nanos(DEFAULT_RTT));
    p.observe_rtt(Duration::from_millis(80));
    assert_eq!(ep.rtt_ns.get(), 80e6, "a peak replaces the estimate");
    // One time constant later a 10 ms sample moves it 1 - 1/e of the way.
    clock.advance(DEFAULT_DECAY);
    p.observe_rtt(Duration::from_millis(10));
    let expected = 10e6 + 70e6 * (-1f64).exp();
    assert!(
        (ep.rtt_ns.get() - expected).abs() < 1.0,
        "{}",
        ep.rtt_ns.get()
    );
    // Unsampled, the cost seen by pick decays toward zero.
    let now = clock.now();
    clock.advance(DEFAULT_DECAY);
    let later = clock.now();
    assert!(ep.rtt_now(later, b.decay_ns) < ep.rtt_now(now, b.decay_ns) * 0.4);
}

#[test]
fn failed_endpoint_is_skipped_until_its_backoff_passes() {
    let (b, clock) = balancer(0..3);
    let mut rng = XorShift::new(11);
    pick_of(&b, addr(0)).connect_failed();
    assert_eq!(b.ready_len(), 2);
    // Backoff is 100 ms jittered down to no less than 50 ms.
    for _ in 0..5 {
        let counts = count_picks(&b, &mut rng, 1_000);
        assert_eq!(counts.get(&addr(0)), None, "{counts:?}");
        clock.advance(Duration::from_millis(9));
    }
    clock.advance(Duration::from_millis(55));
    assert_eq!(b.ready_len(), 3);
    let counts = count_picks(&b, &mut rng, 1_000);
    assert!(counts[&addr(0)] > 200, "back after backoff: {counts:?}");

    // A second failure in a row doubles it: still out after 99 ms.
    let p = pick_of(&b, addr(0));
    p.connect_failed();
    p.connect_failed();
    clock.advance(Duration::from_millis(99));
    assert_eq!(b.ready_len(), 2);
    // A success clears it at once.
    p.connected();
    assert_eq!(b.ready_len(), 3);
}

#[test]
fn backoff_grows_to_ten_seconds() {
    let (b, clock) = balancer([0]);
    let p = pick_of(&b, addr(0));
    for _ in 0..20 {
        p.connect_failed();
    }
    let until = state(&b, addr(0)).backoff_until.get().unwrap();
    let delay = until - clock.now();
    assert!(
        delay >= MAX_BACKOFF / 2 && delay <= MAX_BACKOFF,
        "{delay:?}"
    );
}

#[test]
fn only_ready_endpoints_are_picked_or_none() {
    let (b, clock) = balancer(0..1_000);
    let mut rng = XorShift::new(13);
    for i in 1..1_000 {
        pick_of(&b, addr(i)).connect_failed();
    }
    for _ in 0..100 {
        assert_eq!(b.pick(&mut rng).unwrap().addr(), addr(0));
    }
    pick_of(&b, addr(0)).connect_failed();
    assert!(b.pick(&mut rng).is_none());
    clock.advance(MIN_BACKOFF);
    assert!(b.pick(&mut rng).is_some());
}

#[test]
fn apply_keeps_state_of_remaining_endpoints_and_drops_removed() {
    let (mut b, clock) = balancer(0..3);
    pick_of(&b, addr(0)).observe_rtt(Duration::from_millis(70));
    let held = pick_of(&b, addr(0));
    pick_of(&b, addr(1)).connect_failed();
    clock.advance(Duration::from_millis(10));

    b.apply(&snapshot(2, [0, 1, 3]));
    assert_eq!(b.applied_version(), Some(2));
    assert_eq!(b.len(), 3);
    assert!(!b.by_addr.contains_key(&addr(2)));
    let kept = state(&b, addr(0));
    assert_eq!(kept.rtt_ns.get(), 70e6);
    assert_eq!(kept.pending.get(), 1);
    assert!(!state(&b, addr(1)).is_ready(clock.now()), "backoff kept");
    let new = state(&b, addr(3));
    assert_eq!(new.rtt_ns.get(), nanos(DEFAULT_RTT));
    assert_eq!(new.pending.get(), 0);

    drop(held);
    assert_eq!(state(&b, addr(0)).pending.get(), 0);
    let counts = count_picks(&b, &mut XorShift::new(17), 1_000);
    assert_eq!(counts.get(&addr(2)), None, "{counts:?}");
}

#[test]
fn apply_takes_new_labels_and_weight_keeping_state() {
    let (mut b, _) = balancer([0]);
    let held = pick_of(&b, addr(0));
    held.observe_rtt(Duration::from_millis(70));
    let mut relabelled = endpoint(0);
    relabelled.weight = 1;
    relabelled.labels = Arc::new([("pod".to_string(), "web-0".to_string())].into());
    b.apply(&Snapshot {
        version: 2,
        endpoints: vec![relabelled.clone(), endpoint(0)],
    });
    assert_eq!(b.len(), 1, "a repeated address counts once");
    assert_eq!(held.endpoint(), relabelled);
    assert_eq!(state(&b, addr(0)).rtt_ns.get(), 70e6);
    assert_eq!(state(&b, addr(0)).pending.get(), 1);
    drop(held);
    assert_eq!(state(&b, addr(0)).pending.get(), 0);
}

#[test]
fn pick_of_removed_endpoint_drops_cleanly() {
    let (mut b, _) = balancer(0..2);
    let held = pick_of(&b, addr(1));
    b.apply(&snapshot(2, [0]));
    held.observe_rtt(Duration::from_millis(5));
    held.connect_failed();
    held.connected();
    assert_eq!(held.addr(), addr(1));
    drop(held);
    b.apply(&snapshot(3, []));
    assert!(b.is_empty());
    assert!(b.pick(&mut XorShift::new(1)).is_none());
}

#[test]
fn thousand_endpoint_snapshot_applies() {
    let (mut b, _) = balancer(0..1_000);
    assert_eq!(b.len(), 1_000);
    let before = b.endpoints[500].clone();
    b.apply(&snapshot(2, 0..1_000));
    assert!(
        Rc::ptr_eq(&before, &b.endpoints[500]),
        "state kept, not rebuilt"
    );
    b.apply(&snapshot(3, 500..1_500));
    assert_eq!(b.len(), 1_000);
    assert_eq!(b.applied_version(), Some(3));
    let counts = count_picks(&b, &mut XorShift::new(19), 10_000);
    assert!(counts.keys().all(|a| b.by_addr.contains_key(a)));
    assert!(
        counts.len() > 900,
        "picks spread over the set: {}",
        counts.len()
    );
}

#[test]
fn xorshift_below_is_in_range_and_spread() {
    let mut rng = XorShift::new(0);
    let mut seen = [0usize; 7];
    for _ in 0..7_000 {
        seen[rng.below(7)] += 1;
    }
    assert!(seen.iter().all(|&c| (800..1_200).contains(&c)), "{seen:?}");
}

fn accrual(max_failures: u32) -> Accrual {
    Accrual {
        max_failures,
        min_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
        jitter: 0.0,
    }
}

/// Picks until endpoint `a` is chosen (it must be ready), reporting nothing for the others.
fn pick_until(b: &Balancer<ManualClock>, rng: &mut XorShift, a: SocketAddr) -> Pick<ManualClock> {
    for _ in 0..1000 {
        let p = b.pick(rng).expect("an endpoint is ready");
        if p.addr() == a {
            return p;
        }
    }
    panic!("{a} was never picked");
}

#[test]
fn failing_endpoint_is_ejected_then_probed_once() {
    let (mut b, clock) = balancer([0, 1]);
    b.set_failure_accrual(Some(accrual(3)));
    let mut rng = XorShift::new(3);
    let bad = addr(0);
    for _ in 0..3 {
        pick_until(&b, &mut rng, bad).response(false);
    }
    assert_eq!(b.ejected_len(), 1);
    // During its backoff the healthy endpoint takes everything.
    let counts = count_picks(&b, &mut rng, 200);
    assert_eq!(counts.get(&bad), None, "{counts:?}");
    assert_eq!(
        b.next_ready_at(),
        Some(clock.now() + Duration::from_secs(1))
    );
    // After it, exactly one probe goes through while it is outstanding.
    clock.advance(Duration::from_secs(1));
    let probe = pick_until(&b, &mut rng, bad);
    let counts = count_picks(&b, &mut rng, 200);
    assert_eq!(counts.get(&bad), None, "a second probe: {counts:?}");
    // A failed probe ejects it again, for twice as long.
    probe.response(false);
    drop(probe);
    clock.advance(Duration::from_millis(1500));
    assert_eq!(count_picks(&b, &mut rng, 200).get(&bad), None);
    clock.advance(Duration::from_millis(500));
    // A successful probe closes the breaker.
    pick_until(&b, &mut rng, bad).response(true);
    assert_eq!(b.ejected_len(), 0);
    let counts = count_picks(&b, &mut rng, 400);
    assert!(counts.get(&bad).copied().unwrap_or(0) > 50, "{counts:?}");
}

#[test]
fn successes_reset_the_failure_count_and_no_accrual_never_ejects() {
    let (mut b, _clock) = balancer([0, 1]);
    let mut rng = XorShift::new(5);
    for _ in 0..20 {
        pick_until(&b, &mut rng, addr(0)).response(false);
    }
    assert_eq!(b.ejected_len(), 0, "without accrual nothing is ejected");
    b.set_failure_accrual(Some(accrual(3)));
    for _ in 0..10 {
        pick_until(&b, &mut rng, addr(0)).response(false);
        pick_until(&b, &mut rng, addr(0)).response(false);
        pick_until(&b, &mut rng, addr(0)).response(true);
    }
    assert_eq!(b.ejected_len(), 0, "never three failures in a row");
}

#[test]
fn a_probe_dropped_without_answer_lets_another_probe() {
    let (mut b, clock) = balancer([0, 1]);
    b.set_failure_accrual(Some(accrual(1)));
    let mut rng = XorShift::new(9);
    pick_until(&b, &mut rng, addr(0)).response(false);
    clock.advance(Duration::from_secs(1));
    drop(pick_until(&b, &mut rng, addr(0)));
    pick_until(&b, &mut rng, addr(0)).response(true);
    assert_eq!(b.ejected_len(), 0);
}

// === fidelity: the real balancer against a reference model of Linkerd's ===

/// A load balancer driven by [`closed_loop`]: `pick` sends a request at `now`, `respond`
/// reports its response head at `now`, `end` ends the exchange.
trait Model {
    type Token;
    fn pick(&mut self, now: Instant) -> Self::Token;
    fn index(&self, token: &Self::Token) -> usize;
    fn respond(&mut self, token: &Self::Token, rtt: Duration, now: Instant);
    fn end(&mut self, token: Self::Token, now: Instant);
}

/// The real [`Balancer`], used as the proxy uses it (`http::h1`, `http::h2::stream`):
/// `observe_rtt` at the response head, the pick dropped when the exchange ends.
struct Real {
    balancer: Balancer<ManualClock>,
    clock: ManualClock,
    rng: XorShift,
}

impl Real {
    fn new(n: usize, start: Instant, seed: u64) -> Self {
        let clock = ManualClock::new();
        clock.set(start);
        let mut balancer = Balancer::with_clock(clock.clone());
        balancer.apply(&snapshot(1, 0..n));
        Self {
            balancer,
            clock,
            rng: XorShift::new(seed),
        }
    }
}

impl Model for Real {
    type Token = Pick<ManualClock>;

    fn pick(&mut self, now: Instant) -> Pick<ManualClock> {
        self.clock.set(now);
        self.balancer.pick(&mut self.rng).expect("ready")
    }

    fn index(&self, pick: &Pick<ManualClock>) -> usize {
        self.balancer.by_addr[&pick.addr()]
    }

    fn respond(&mut self, pick: &Pick<ManualClock>, rtt: Duration, now: Instant) {
        self.clock.set(now);
        pick.observe_rtt(rtt);
    }

    fn end(&mut self, pick: Pick<ManualClock>, now: Instant) {
        self.clock.set(now);
        drop(pick);
    }
}

/// An independent model of Linkerd's balancer: tower's `p2c` over `PeakEwma` endpoints, as
/// `tower/src/load/peak_ewma.rs` computes it. Each endpoint has an estimate and the instant
/// it was last updated. Reading the load (done for both endpoints of a pair) first decays
/// the estimate toward zero — an update with a zero sample — and stores it; a sample above
/// the estimate replaces it, one below it is blended in as `e × d + rtt × (1 - d)` with
/// `d = exp(-elapsed / decay)`, elapsed since the last update or read. Load = estimate ×
/// (pending + 1), pending counting requests until their response (linkerd's
/// `PendingUntilFirstData`).
struct Reference {
    est_ns: Vec<f64>,
    at: Vec<Instant>,
    pending: Vec<u32>,
    decay_ns: f64,
    rng: XorShift,
}

impl Reference {
    fn new(n: usize, start: Instant, seed: u64) -> Self {
        Self {
            est_ns: vec![nanos(DEFAULT_RTT); n],
            at: vec![start; n],
            pending: vec![0; n],
            decay_ns: nanos(DEFAULT_DECAY),
            rng: XorShift::new(seed),
        }
    }

    /// tower's `RttEstimate::update`.
    fn update(&mut self, i: usize, rtt_ns: f64, now: Instant) {
        let est = self.est_ns[i];
        self.est_ns[i] = if est < rtt_ns {
            rtt_ns
        } else {
            let elapsed = nanos(now.saturating_duration_since(self.at[i]));
            let d = (-elapsed / self.decay_ns).exp();
            est * d + rtt_ns * (1.0 - d)
        };
        self.at[i] = now;
    }

    /// tower's `PeakEwma::load`.
    fn load(&mut self, i: usize, now: Instant) -> f64 {
        self.update(i, 0.0, now);
        self.est_ns[i] * f64::from(self.pending[i] + 1)
    }
}

impl Model for Reference {
    /// The endpoint and when the request was sent.
    type Token = (usize, Instant);

    fn pick(&mut self, now: Instant) -> (usize, Instant) {
        let n = self.est_ns.len();
        let i = if n == 1 {
            0
        } else {
            let (a, b) = distinct_pair(&mut self.rng, n);
            if self.load(a, now) <= self.load(b, now) {
                a
            } else {
                b
            }
        };
        self.pending[i] += 1;
        (i, now)
    }

    fn index(&self, &(i, _): &(usize, Instant)) -> usize {
        i
    }

    fn respond(&mut self, &(i, sent): &(usize, Instant), _: Duration, now: Instant) {
        // The handle drops at the response: its sample, then its pending count.
        self.update(i, nanos(now.saturating_duration_since(sent)), now);
        self.pending[i] -= 1;
    }

    fn end(&mut self, _: (usize, Instant), _: Instant) {}
}

/// A closed-loop load.
struct Load<'a> {
    /// Endpoint `i` answers after `latencies[i]`, ...
    latencies: &'a [Duration],
    /// ... spread uniformly by this fraction either way (0: fixed).
    jitter: f64,
    /// Clients, each sending its next request as soon as its last exchange ends; client `c`
    /// goes through shard `c % shards`.
    clients: usize,
    duration: Duration,
    seed: u64,
}

impl Load<'_> {
    /// Runs the load through `shards` (one balancer each, as ringlink's shards); returns how
    /// many requests each endpoint got.
    fn run<M: Model>(&self, shards: &mut [M], start: Instant) -> Vec<u64> {
        let mut latency_rng = XorShift::new(self.seed ^ 0x5EED);
        let mut counts = vec![0u64; self.latencies.len()];
        // (response at, client, latency, token)
        let mut in_flight: Vec<(Instant, usize, Duration, M::Token)> =
            Vec::with_capacity(self.clients);
        let mut send = |shards: &mut [M], client: usize, now: Instant| {
            let model = &mut shards[client % shards.len()];
            let token = model.pick(now);
            let i = model.index(&token);
            counts[i] += 1;
            let spread = 1.0 + self.jitter * (2.0 * latency_rng.unit() - 1.0);
            let latency = self.latencies[i].mul_f64(spread);
            (now + latency, client, latency, token)
        };
        for c in 0..self.clients {
            let sent = send(shards, c, start);
            in_flight.push(sent);
        }
        let end = start + self.duration;
        loop {
            let (k, _) = in_flight
                .iter()
                .enumerate()
                .min_by_key(|(_, (done, c, ..))| (*done, *c))
                .expect("in flight");
            let (done, client, latency, token) = in_flight.swap_remove(k);
            if done > end {
                break;
            }
            let model = &mut shards[client % shards.len()];
            model.respond(&token, latency, done);
            model.end(token, done);
            let sent = send(shards, client, done);
            in_flight.push(sent);
        }
        counts
    }

    /// The shares of the real balancer and of the reference, each over `shards` replicas.
    fn compare(&self, shards: usize) -> (Vec<f64>, Vec<f64>) {
        let start = Instant::now();
        let n = self.latencies.len();
        let mut real: Vec<Real> = (0..shards)
            .map(|s| Real::new(n, start, self.seed + s as u64))
            .collect();
        let mut model: Vec<Reference> = (0..shards)
            .map(|s| Reference::new(n, start, self.seed + s as u64))
            .collect();
        (
            shares(&self.run(&mut real, start)),
            shares(&self.run(&mut model, start)),
        )
    }
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

/// The issue's endpoints: 3.7, 6.0 and 52 ms.
const ISSUE_LATENCIES: [Duration; 3] = [
    Duration::from_micros(3_700),
    Duration::from_micros(6_000),
    Duration::from_micros(52_000),
];

/// The issue's case: three endpoints at 3.7, 6.0 and 52 ms, ten closed-loop clients. In
/// the long run, over a start-up, with jittered latencies and over two shards' replicas,
/// the balancer's shares stay within 3 points of the reference model's, and the slow
/// endpoint gets no more than 6 % (measured from outside, ringlink once sent it 10 %).
/// (Measured: 60 s 59.9/39.3/0.8 % vs the model's 60.0/39.4/0.6; 10 s 56.3/41.4/2.3 vs
/// 56.7/41.2/2.1; 5 s 56.0/41.3/2.7 vs 56.1/41.3/2.6.)
#[test]
fn shares_match_linkerds_peak_ewma_model() {
    // (seconds, jitter, shards)
    let cases = [(60, 0.0, 1), (5, 0.0, 1), (60, 0.5, 1), (20, 0.0, 2)];
    for (secs, jitter, shards) in cases {
        for seed in 1..=2 {
            let load = Load {
                latencies: &ISSUE_LATENCIES,
                jitter,
                clients: 10,
                duration: Duration::from_secs(secs),
                seed,
            };
            let (ours, model) = load.compare(shards);
            let case = format!("{secs} s, jitter {jitter}, {shards} shards, seed {seed}");
            for i in 0..3 {
                assert!(
                    (ours[i] - model[i]).abs() <= 0.03,
                    "{case}: endpoint {i}: ringlink {ours:.3?} vs model {model:.3?}"
                );
            }
            assert!(ours[2] <= 0.06, "{case}: the slow endpoint got {ours:.3?}");
            assert!(ours[0] > ours[1], "{case}: {ours:.3?}");
        }
    }
}
