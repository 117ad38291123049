//! Destinations for shards: the second shard → control request path (DESIGN.md §2).
//!
//! A shard that meets a destination name (`host:port`) for the first time sends a
//! [`DstRequest`]; the control thread answers with a `watch::Receiver` of versioned
//! [`EndpointSet`] snapshots, which the shard applies to its own balancer replica from then
//! on. Every shard watching one name shares one source:
//! - an `ip:port` (an original destination in the profile networks) is looked up with
//!   `GetProfile` and, with a policy controller, `OutboundPolicies.Watch`
//!   ([`profile_watch`]);
//! - a name under `LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES`, when a Destination service
//!   is configured, is watched with its `Get` stream ([`crate::discovery`]);
//! - any other name (and every name without a Destination service) is resolved with DNS and
//!   re-resolved when its TTL (clamped by `LINKERD2_PROXY_DNS_MIN_TTL` / `_MAX_TTL`) runs
//!   out; each address is an endpoint. A name that never resolved is published with
//!   `exists: false`; one that stops resolving keeps its last addresses (known endpoints
//!   keep serving) and is retried.
//!
//! A source stops once every shard has dropped its receiver: shards drop a destination no
//! request used for `*_DISCOVERY_IDLE_TIMEOUT`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use tokio::sync::{mpsc, oneshot, watch};

use crate::discovery::{Discovery, EndpointMeta, EndpointSet, PolicyRef, ProfileRef, State};
use crate::dns::DnsTtl;
use crate::policy::outbound::watch::{OutboundPolicies, OutboundState};
use crate::profile::ProfileRouting;

/// How many requests may wait for the control thread; a shard that finds the queue full
/// fails that request instead of waiting.
pub const DST_QUEUE_CAPACITY: usize = 1024;
/// The first retry of a failed DNS lookup; it doubles up to [`DNS_MAX_RETRY`].
const DNS_MIN_RETRY: Duration = Duration::from_millis(500);
const DNS_MAX_RETRY: Duration = Duration::from_secs(10);

// === types ===

/// A destination to watch, and where to send its snapshots (crosses threads).
#[derive(Debug)]
pub struct DstRequest {
    /// `host:port`, the host a lowercase DNS name without a trailing dot.
    pub name: String,
    pub reply: oneshot::Sender<watch::Receiver<Arc<EndpointSet>>>,
}

/// A shard's handle for sending [`DstRequest`]s.
pub type DstTx = mpsc::Sender<DstRequest>;

/// What answers [`DstRequest`]s.
pub struct Sources {
    /// The Destination service client, when one is configured.
    pub discovery: Option<Discovery>,
    /// `LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES`.
    pub suffixes: Vec<String>,
    pub dns: Result<TokioResolver, String>,
    pub ttl: DnsTtl,
    /// The policy controller's outbound policies, when one is configured.
    pub outbound: Option<OutboundPolicies>,
}

type Watches = Arc<Mutex<HashMap<String, watch::Sender<Arc<EndpointSet>>>>>;

// === functions ===

/// The channel shards send on and the receiver [`serve`] drains.
pub fn channel() -> (DstTx, mpsc::Receiver<DstRequest>) {
    mpsc::channel(DST_QUEUE_CAPACITY)
}

/// Answers requests until every sender is gone. Runs on the control thread's runtime.
pub async fn serve(mut requests: mpsc::Receiver<DstRequest>, sources: Sources) {
    let dns_watches: Watches = Arc::default();
    let profile_watches: Watches = Arc::default();
    while let Some(request) = requests.recv().await {
        let host = request
            .name
            .rsplit_once(':')
            .map_or(request.name.as_str(), |(host, _)| host);
        let is_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        let rx = match &sources.discovery {
            Some(discovery) if is_ip => {
                profile_watch(&sources, discovery, &profile_watches, &request.name)
            }
            None if is_ip => {
                let (tx, rx) = watch::channel(Arc::new(EndpointSet::pending()));
                fallback(&tx, 1, false);
                rx
            }
            Some(discovery) if crate::config::name_in_suffixes(host, &sources.suffixes) => {
                tracing::debug!(name = %request.name, "Watching with the Destination service");
                discovery.watch(&request.name)
            }
            _ => dns_watch(&sources, &dns_watches, &request.name),
        };
        let _ = request.reply.send(rx);
    }
}

/// The snapshots of an original destination `ip:port` in the profile networks, shared by
/// every shard watching it. Its profile (`GetProfile`) and, with a policy controller, its
/// outbound policy (`OutboundPolicies.Watch`) are asked for at once, as linkerd2-proxy's
/// `discover.rs` joins them; the first snapshot waits for both. The profile says whether
/// the traffic is opaque and what it is: one known endpoint (`endpoint`), a service whose
/// `fully_qualified_name` is then watched with `Get`, or neither (the endpoints fall back to
/// the original destination: [`State::Fallback`]). Every snapshot carries the profile's
/// `opaque` flag and the current policy, unless the profile has routes or `dst_overrides`
/// (a ServiceProfile then wins, as in linkerd2-proxy) or the controller has no policy for
/// the address (`NotFound`, `Unimplemented`: the endpoints alone decide). Profiles are read
/// once per watch; policies are followed live. A new watch (after the shards dropped the
/// destination as idle) reads the profile again.
fn profile_watch(
    sources: &Sources,
    discovery: &Discovery,
    watches: &Watches,
    target: &str,
) -> watch::Receiver<Arc<EndpointSet>> {
    let mut map = watches.lock().unwrap_or_else(|e| e.into_inner());
    // A watch every shard has left is ending: start another rather than join it.
    if let Some(tx) = map.get(target).filter(|tx| !tx.is_closed()) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(Arc::new(EndpointSet::pending()));
    map.insert(target.to_string(), tx.clone());
    drop(map);
    let policy = match (&sources.outbound, target.parse::<SocketAddr>()) {
        (Some(policies), Ok(addr)) => Some(policies.watch(addr)),
        _ => None,
    };
    let (discovery, suffixes) = (discovery.clone(), sources.suffixes.clone());
    let (watches, target) = (watches.clone(), target.to_string());
    tokio::spawn(async move {
        let mut watch = ProfileWatch {
            tx,
            policy,
            version: 0,
            opaque: false,
            profile: None,
        };
        watch.run(&discovery, &suffixes, &target).await;
        let mut map = watches.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&target).is_some_and(|t| t.same_channel(&watch.tx)) {
            map.remove(&target);
        }
    });
    rx
}

/// What woke a [`ProfileWatch`].
enum Event {
    /// The service's endpoints changed (`false`: its source is gone).
    Service(bool),
    Policy,
    Closed,
}

/// The state of one original destination's watch.
struct ProfileWatch {
    tx: watch::Sender<Arc<EndpointSet>>,
    policy: Option<watch::Receiver<OutboundState>>,
    version: u64,
    opaque: bool,
    /// The profile's routes and overrides, when it has any: the policy is not used.
    profile: Option<ProfileRef>,
}

impl ProfileWatch {
    /// Publishes until no shard watches the destination.
    async fn run(&mut self, discovery: &Discovery, suffixes: &[String], target: &str) {
        let (policy, tx) = (&mut self.policy, &self.tx);
        let first_policy = async move {
            if let Some(rx) = policy {
                // An error means the policy client is gone: no policy.
                let _ = rx.wait_for(|s| !matches!(s, OutboundState::Pending)).await;
            }
        };
        let profile = tokio::select! {
            (profile, ()) = async { tokio::join!(discovery.profile(target), first_policy) } => profile,
            _ = tx.closed() => return,
        };
        if let Some(profile) = &profile {
            self.opaque = profile.opaque_protocol;
            self.profile = ProfileRouting::from_profile(profile).map(|r| ProfileRef(Arc::new(r)));
        }
        let port = target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(0);
        let endpoint = profile
            .as_ref()
            .and_then(|p| p.endpoint.clone())
            .and_then(Discovery::profile_endpoint);
        let fqn = profile
            .as_ref()
            .map(|p| p.fully_qualified_name.trim_end_matches('.').to_string())
            .filter(|fqn| !fqn.is_empty() && crate::config::name_in_suffixes(fqn, suffixes));
        let mut service = match (endpoint, fqn) {
            (Some((addr, meta)), _) => {
                let endpoints = BTreeMap::from([(addr, meta)]);
                self.publish(State::Resolved, true, endpoints);
                None
            }
            (None, Some(fqn)) => {
                tracing::debug!(%target, name = %fqn, opaque = self.opaque, "Profile names a service");
                Some(discovery.watch(&format!("{fqn}:{port}")))
            }
            (None, None) => {
                self.publish(State::Fallback, true, BTreeMap::new());
                None
            }
        };
        loop {
            if let Some(service) = &mut service {
                let set = service.borrow_and_update().clone();
                self.publish(set.state, set.exists, set.endpoints.clone());
            }
            let (policy, tx) = (&mut self.policy, &self.tx);
            let service_changed = async {
                match &mut service {
                    Some(service) => service.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let policy_changed = async move {
                let changed = match policy {
                    Some(policy) => policy.changed().await.is_ok(),
                    None => false,
                };
                if !changed {
                    std::future::pending::<()>().await;
                }
            };
            let event = tokio::select! {
                alive = service_changed => Event::Service(alive),
                () = policy_changed => Event::Policy,
                _ = tx.closed() => Event::Closed,
            };
            match event {
                Event::Service(true) => {}
                Event::Service(false) | Event::Closed => return,
                // Republish the same endpoints with the new policy (a service's
                // endpoints are republished at the top of the loop).
                Event::Policy if service.is_none() => {
                    let set = self.tx.borrow().clone();
                    self.publish(set.state, set.exists, set.endpoints.clone());
                }
                Event::Policy => {}
            }
        }
    }

    fn publish(
        &mut self,
        state: State,
        exists: bool,
        endpoints: BTreeMap<SocketAddr, EndpointMeta>,
    ) {
        self.version += 1;
        let policy = match self.policy.as_ref().map(|rx| rx.borrow().clone()) {
            Some(OutboundState::Policy(policy)) if self.profile.is_none() => {
                Some(PolicyRef(policy))
            }
            _ => None,
        };
        self.tx.send_replace(Arc::new(EndpointSet {
            version: self.version,
            state,
            exists,
            endpoints,
            opaque: self.opaque,
            policy,
            profile: self.profile.clone(),
        }));
    }
}

fn fallback(tx: &watch::Sender<Arc<EndpointSet>>, version: u64, opaque: bool) {
    tx.send_replace(Arc::new(EndpointSet {
        version,
        state: State::Fallback,
        exists: true,
        endpoints: BTreeMap::new(),
        opaque,
        policy: None,
        profile: None,
    }));
}

/// The DNS-backed snapshots of `name`, starting its resolver task if it has none.
fn dns_watch(
    sources: &Sources,
    watches: &Watches,
    name: &str,
) -> watch::Receiver<Arc<EndpointSet>> {
    let mut map = watches.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = map.get(name) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(Arc::new(EndpointSet::pending()));
    let Some((host, port)) = name
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        publish(&tx, 1, false, BTreeMap::new());
        return rx;
    };
    match &sources.dns {
        Err(error) => {
            tracing::warn!(%name, %error, "No DNS resolver");
            publish(&tx, 1, false, BTreeMap::new());
        }
        Ok(resolver) => {
            map.insert(name.to_string(), tx.clone());
            tokio::spawn(run_dns(
                resolver.clone(),
                sources.ttl,
                host,
                port,
                tx,
                watches.clone(),
                name.to_string(),
            ));
        }
    }
    rx
}

/// Resolves `host` now and again at each answer's TTL, publishing changed address sets,
/// until no shard watches it.
async fn run_dns(
    resolver: TokioResolver,
    ttl: DnsTtl,
    host: String,
    port: u16,
    tx: watch::Sender<Arc<EndpointSet>>,
    watches: Watches,
    name: String,
) {
    let mut version = 0;
    let mut last: Option<BTreeMap<SocketAddr, EndpointMeta>> = None;
    let mut retry = DNS_MIN_RETRY;
    loop {
        let wait = match crate::dns::lookup(&resolver, &host, ttl).await {
            Ok(resolution) => {
                retry = DNS_MIN_RETRY;
                let endpoints: BTreeMap<SocketAddr, EndpointMeta> = resolution
                    .addrs
                    .iter()
                    .map(|ip| {
                        (
                            SocketAddr::new(*ip, port),
                            EndpointMeta {
                                weight: 1,
                                ..EndpointMeta::default()
                            },
                        )
                    })
                    .collect();
                if last.as_ref() != Some(&endpoints) {
                    version += 1;
                    tracing::debug!(%name, addrs = endpoints.len(), version, "DNS answer");
                    publish(&tx, version, true, endpoints.clone());
                    last = Some(endpoints);
                }
                resolution
                    .valid_until
                    .saturating_duration_since(Instant::now())
                    .max(ttl.min)
            }
            Err(error) => {
                tracing::debug!(%name, %error, "DNS lookup failed");
                if last.is_none() && version == 0 {
                    version += 1;
                    publish(&tx, version, false, BTreeMap::new());
                }
                let wait = retry;
                retry = (retry * 2).min(DNS_MAX_RETRY);
                wait
            }
        };
        tokio::select! {
            biased;
            _ = tx.closed() => {
                let mut map = watches.lock().unwrap_or_else(|e| e.into_inner());
                if tx.is_closed() {
                    if map.get(&name).is_some_and(|t| t.same_channel(&tx)) {
                        map.remove(&name);
                    }
                    tracing::debug!(%name, "No one watches the name; DNS refresh stopped");
                    return;
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn publish(
    tx: &watch::Sender<Arc<EndpointSet>>,
    version: u64,
    exists: bool,
    endpoints: BTreeMap<SocketAddr, EndpointMeta>,
) {
    tx.send_replace(Arc::new(EndpointSet {
        version,
        state: State::Resolved,
        exists,
        endpoints,
        opaque: false,
        policy: None,
        profile: None,
    }));
}
