//! Endpoint discovery through Linkerd's Destination API (`Get`), on the control thread.
//!
//! [`Discovery::watch`] gives a `watch::Receiver` of immutable, versioned [`EndpointSet`]
//! snapshots for a name such as `web.default.svc.cluster.local:8080` (DESIGN.md §2). Every
//! caller watching one name shares one `Get` stream; the stream ends when the last receiver
//! is dropped. The stream's updates are folded into the set the way a Linkerd proxy does:
//! - `add` inserts or replaces endpoints, with the set's metric labels overlaid by each
//!   endpoint's own, its weight, TLS identity, protocol hint, authority override and HTTP/2
//!   client parameters;
//! - `remove` removes endpoints;
//! - `no_endpoints` empties the set and says whether the service exists at all.
//!
//! When the stream ends or fails, the last set keeps being published (known endpoints keep
//! serving while the controller is away) and `Get` is retried with exponential backoff and
//! jitter; a new stream starts from scratch, so its first update replaces the set. A stream
//! rejected with `InvalidArgument` means the controller will never resolve the name: the
//! snapshot says [`State::Fallback`] (use the original destination) and nothing is retried.
//!
//! All of it runs on the control thread's tokio current-thread runtime: [`Discovery::new`]
//! and [`Discovery::watch`] must be called inside that runtime (they spawn tasks).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// The first retry waits about this long; each further one twice as long, up to
/// [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

// === types ===

/// The resolver: one per control thread, cheap to clone.
#[derive(Clone, Debug)]
pub struct Discovery {
    client: DestinationClient<Channel>,
    context_token: Arc<str>,
    watches: Arc<Mutex<HashMap<String, watch::Sender<Arc<EndpointSet>>>>>,
}

/// A snapshot of one destination's endpoints. Immutable once published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSet {
    /// Grows by one with every snapshot published for the name, across reconnects.
    pub version: u64,
    pub state: State,
    /// `false` after `no_endpoints { exists: false }`: the controller does not know the
    /// service. `true` otherwise.
    pub exists: bool,
    pub endpoints: BTreeMap<SocketAddr, EndpointMeta>,
    /// The destination's traffic is opaque (from its profile's `opaque_protocol`): forward
    /// it as TCP, without protocol detection.
    pub opaque: bool,
    /// For an original destination (`ip:port`): its outbound policy, when the policy
    /// controller has one and no ServiceProfile with routes overrides it.
    pub policy: Option<PolicyRef>,
    /// For an original destination: its ServiceProfile's routes and overrides, when it has
    /// any (they then replace the policy).
    pub profile: Option<ProfileRef>,
}

/// Shared profile routing; snapshots compare it by identity.
#[derive(Clone, Debug)]
pub struct ProfileRef(pub Arc<crate::profile::ProfileRouting>);

impl PartialEq for ProfileRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProfileRef {}

/// A shared outbound policy; snapshots compare it by identity.
#[derive(Clone, Debug)]
pub struct PolicyRef(pub Arc<crate::policy::outbound::ClientPolicy>);

impl PartialEq for PolicyRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PolicyRef {}

/// Where a resolution stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No update received yet (version 0).
    Pending,
    /// The controller has answered; `endpoints` and `exists` are its answer (possibly from
    /// a stream that has since ended and is being retried).
    Resolved,
    /// The controller refused the name (`InvalidArgument`): forward to the original
    /// destination. Final; the name is not asked again while it is watched.
    Fallback,
}

/// What discovery says about one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointMeta {
    pub weight: u32,
    /// The set's metric labels overlaid with the endpoint's own (`dst_*` labels).
    pub labels: BTreeMap<String, String>,
    pub identity: Option<TlsIdentity>,
    pub protocol: ProtocolHint,
    /// Send opaque traffic to this port of the peer proxy with a transport header.
    pub opaque_transport_port: Option<u16>,
    pub authority_override: Option<String>,
    pub http2: Option<Http2Params>,
}

/// The identity an endpoint's proxy presents, and the SNI to ask for it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsIdentity {
    pub identity: Identity,
    /// The TLS server name; `None` when the controller sent none.
    pub server_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Dns(String),
    Uri(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtocolHint {
    #[default]
    Unknown,
    /// The peer is a meshed proxy that accepts HTTP/2 (HTTP/1 may be upgraded to it).
    H2,
    /// The peer's port is opaque.
    Opaque,
}

/// HTTP/2 client settings for connections to the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http2Params {
    pub flow_control: Option<Http2FlowControl>,
    pub keep_alive: Option<Http2KeepAlive>,
    pub internals: Option<Http2Internals>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2FlowControl {
    pub initial_connection_window_size: u32,
    pub initial_stream_window_size: u32,
    pub adaptive_flow_control: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2KeepAlive {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub while_idle: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Internals {
    pub max_concurrent_reset_streams: u32,
    pub max_frame_size: u32,
    pub max_send_buf_size: u32,
}

/// How a `Get` stream finished.
enum Outcome {
    /// Ended cleanly or failed; retry.
    Retry { received: bool },
    /// `InvalidArgument`: do not retry.
    Invalid,
}

/// The running fold of one name's updates.
struct Publisher {
    tx: watch::Sender<Arc<EndpointSet>>,
    version: u64,
    exists: bool,
    endpoints: BTreeMap<SocketAddr, EndpointMeta>,
}

// === impl Discovery ===

impl Discovery {
    /// A resolver asking the Destination service at `addr` (plaintext HTTP/2), sending
    /// `context_token` (`LINKERD2_PROXY_DESTINATION_CONTEXT`) with every lookup. Connects
    /// lazily; must be called inside a tokio runtime.
    pub fn new(addr: impl std::fmt::Display, context_token: impl Into<String>) -> Discovery {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("HOST:PORT (checked by the configuration) is a valid URI authority")
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        Discovery {
            client: DestinationClient::new(channel),
            context_token: Arc::from(context_token.into()),
            watches: Arc::default(),
        }
    }

    /// Snapshots for `name` (`host:port`). The first caller for a name starts its `Get`
    /// stream; later callers share it. The stream stops once every receiver is dropped.
    pub fn watch(&self, name: &str) -> watch::Receiver<Arc<EndpointSet>> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = watches.get(name) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Arc::new(EndpointSet::pending()));
        watches.insert(name.to_string(), tx.clone());
        drop(watches);
        tokio::spawn(self.clone().run(name.to_string(), tx));
        rx
    }

    /// The first profile of `target` (`ip:port`) from `GetProfile`; `None` when the
    /// controller has none for it (an error or an empty stream).
    pub async fn profile(&self, target: &str) -> Option<pb::DestinationProfile> {
        let request = pb::GetDestination {
            scheme: "k8s".to_string(),
            path: target.to_string(),
            context_token: self.context_token.to_string(),
        };
        let mut client = self.client.clone();
        let mut profiles = match client.get_profile(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::debug!(%target, code = ?status.code(), "No profile");
                return None;
            }
        };
        match profiles.message().await {
            Ok(profile) => profile,
            Err(status) => {
                tracing::debug!(%target, code = ?status.code(), "Profile stream failed");
                None
            }
        }
    }

    /// The endpoint described by a profile's `endpoint` field.
    pub fn profile_endpoint(addr: pb::WeightedAddr) -> Option<(SocketAddr, EndpointMeta)> {
        endpoint(&HashMap::new(), addr)
    }

    /// How many names have a stream (or are backing off to retry one).
    pub fn active(&self) -> usize {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn run(self, name: String, tx: watch::Sender<Arc<EndpointSet>>) {
        let mut publisher = Publisher {
            tx,
            version: 0,
            exists: true,
            endpoints: BTreeMap::new(),
        };
        // A second handle on the channel, to wait for its receivers to go while the stream
        // borrows the publisher.
        let watched = publisher.tx.clone();
        let mut backoff = Backoff::new();
        loop {
            let outcome = tokio::select! {
                biased;
                _ = watched.closed() => None,
                outcome = self.stream(&name, &mut publisher) => Some(outcome),
            };
            match outcome {
                None => {
                    if self.release(&name, &publisher.tx) {
                        tracing::debug!(%name, "No one watches the destination; stream closed");
                        return;
                    }
                }
                Some(Outcome::Invalid) => {
                    tracing::debug!(%name, "Destination refused the name; using the original destination");
                    publisher.fallback();
                    loop {
                        publisher.tx.closed().await;
                        if self.release(&name, &publisher.tx) {
                            return;
                        }
                    }
                }
                Some(Outcome::Retry { received }) => {
                    if received {
                        backoff.reset();
                    }
                    let delay = backoff.next();
                    tracing::debug!(%name, ?delay, "Destination stream ended; retrying");
                    tokio::select! {
                        biased;
                        _ = publisher.tx.closed() => {
                            if self.release(&name, &publisher.tx) {
                                return;
                            }
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One `Get` stream, folded into `publisher` until it ends.
    async fn stream(&self, name: &str, publisher: &mut Publisher) -> Outcome {
        let request = pb::GetDestination {
            scheme: "k8s".to_string(),
            path: name.to_string(),
            context_token: self.context_token.to_string(),
        };
        let mut client = self.client.clone();
        let mut updates = match client.get(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return failed(name, &status, false),
        };
        let mut received = false;
        loop {
            match updates.message().await {
                Ok(Some(update)) => {
                    // A new stream starts from scratch: its first update replaces the set.
                    if !received {
                        publisher.endpoints.clear();
                        publisher.exists = true;
                        received = true;
                    }
                    publisher.apply(name, update);
                }
                Ok(None) => return Outcome::Retry { received },
                Err(status) => return failed(name, &status, received),
            }
        }
    }

    /// Forgets `name` if no one watches it any more; `false` if someone subscribed again
    /// meanwhile (then the stream goes on).
    fn release(&self, name: &str, tx: &watch::Sender<Arc<EndpointSet>>) -> bool {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if !tx.is_closed() {
            return false;
        }
        if watches.get(name).is_some_and(|t| t.same_channel(tx)) {
            watches.remove(name);
        }
        true
    }
}

fn failed(name: &str, status: &tonic::Status, received: bool) -> Outcome {
    if status.code() == Code::InvalidArgument {
        return Outcome::Invalid;
    }
    tracing::debug!(%name, code = ?status.code(), message = status.message(), "Destination stream failed");
    Outcome::Retry { received }
}

// === impl EndpointSet ===

impl EndpointSet {
    /// The snapshot before any answer (version 0).
    pub fn pending() -> EndpointSet {
        EndpointSet {
            version: 0,
            state: State::Pending,
            exists: true,
            endpoints: BTreeMap::new(),
            opaque: false,
            policy: None,
            profile: None,
        }
    }
}

// === impl Publisher ===

impl Publisher {
    fn apply(&mut self, name: &str, update: pb::Update) {
        use pb::update::Update as Kind;
        match update.update {
            Some(Kind::Add(set)) => {
                self.exists = true;
                for addr in set.addrs {
                    let Some((sock, meta)) = endpoint(&set.metric_labels, addr) else {
                        tracing::debug!(%name, "Ignoring an endpoint without a valid address");
                        continue;
                    };
                    self.endpoints.insert(sock, meta);
                }
            }
            Some(Kind::Remove(set)) => {
                for addr in set.addrs {
                    if let Some(sock) = socket_addr(addr) {
                        self.endpoints.remove(&sock);
                    }
                }
            }
            Some(Kind::NoEndpoints(no)) => {
                self.endpoints.clear();
                self.exists = no.exists;
            }
            None => return,
        }
        self.publish(State::Resolved);
    }

    fn fallback(&mut self) {
        self.endpoints.clear();
        self.publish(State::Fallback);
    }

    fn publish(&mut self, state: State) {
        self.version += 1;
        self.tx.send_replace(Arc::new(EndpointSet {
            version: self.version,
            state,
            exists: self.exists,
            endpoints: self.endpoints.clone(),
            opaque: false,
            policy: None,
            profile: None,
        }));
    }
}

fn socket_addr(addr: linkerd2_proxy_api::net::TcpAddress) -> Option<SocketAddr> {
    SocketAddr::try_from(addr).ok()
}

fn endpoint(
    set_labels: &HashMap<String, String>,
    addr: pb::WeightedAddr,
) -> Option<(SocketAddr, EndpointMeta)> {
    let sock = socket_addr(addr.addr?)?;
    let mut labels: BTreeMap<String, String> = set_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(addr.metric_labels);
    let (protocol, opaque_transport_port) = match addr.protocol_hint {
        None => (ProtocolHint::Unknown, None),
        Some(hint) => {
            use pb::protocol_hint::Protocol;
            let protocol = match hint.protocol {
                Some(Protocol::H2(_)) => ProtocolHint::H2,
                Some(Protocol::Opaque(_)) => ProtocolHint::Opaque,
                None => ProtocolHint::Unknown,
            };
            let port = hint
                .opaque_transport
                .and_then(|t| u16::try_from(t.inbound_port).ok())
                .filter(|port| *port != 0);
            (protocol, port)
        }
    };
    let meta = EndpointMeta {
        weight: addr.weight,
        labels,
        identity: addr.tls_identity.and_then(tls_identity),
        protocol,
        opaque_transport_port,
        authority_override: addr
            .authority_override
            .map(|a| a.authority_override)
            .filter(|a| !a.is_empty()),
        http2: addr.http2.map(http2_params),
    };
    Some((sock, meta))
}

fn tls_identity(id: pb::TlsIdentity) -> Option<TlsIdentity> {
    use pb::tls_identity::Strategy;
    let identity = match id.strategy? {
        Strategy::DnsLikeIdentity(dns) => Identity::Dns(dns.name),
        Strategy::UriLikeIdentity(uri) => Identity::Uri(uri.uri),
    };
    Some(TlsIdentity {
        identity,
        server_name: id.server_name.map(|s| s.name).filter(|s| !s.is_empty()),
    })
}

fn http2_params(p: pb::Http2ClientParams) -> Http2Params {
    Http2Params {
        flow_control: p.flow_control.map(|f| Http2FlowControl {
            initial_connection_window_size: f.initial_connection_window_size,
            initial_stream_window_size: f.initial_stream_window_size,
            adaptive_flow_control: f.adaptive_flow_control,
        }),
        keep_alive: p.keep_alive.map(|k| Http2KeepAlive {
            interval: k.interval.and_then(|d| duration(d.seconds, d.nanos)),
            timeout: k.timeout.and_then(|d| duration(d.seconds, d.nanos)),
            while_idle: k.while_idle,
        }),
        internals: p.internals.map(|i| Http2Internals {
            max_concurrent_reset_streams: i.max_concurrent_reset_streams,
            max_frame_size: i.max_frame_size,
            max_send_buf_size: i.max_send_buf_size,
        }),
    }
}

/// A protobuf duration; `None` if negative.
fn duration(seconds: i64, nanos: i32) -> Option<Duration> {
    let seconds = u64::try_from(seconds).ok()?;
    let nanos = u32::try_from(nanos).ok()?;
    Some(Duration::from_secs(seconds) + Duration::from_nanos(u64::from(nanos)))
}

// === Backoff ===

/// Exponential backoff from [`MIN_BACKOFF`] to [`MAX_BACKOFF`], each delay drawn uniformly
/// from its upper half ("equal jitter"), so that proxies restarted together do not retry in
/// step.
pub(crate) struct Backoff {
    attempt: u32,
    random: u64,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Backoff {
            attempt: 0,
            random: hasher.finish() | 1,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    pub(crate) fn next(&mut self) -> Duration {
        let ceiling = MIN_BACKOFF
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(MAX_BACKOFF);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let half = ceiling / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.random % nanos.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let mut backoff = Backoff::new();
        let mut ceiling = MIN_BACKOFF;
        for _ in 0..12 {
            let delay = backoff.next();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(MAX_BACKOFF);
        }
        backoff.reset();
        assert!(backoff.next() <= MIN_BACKOFF);
    }

    #[test]
    fn endpoint_labels_overlay_set_labels() {
        let set = HashMap::from([
            ("namespace".to_string(), "ns".to_string()),
            ("pod".to_string(), "set".to_string()),
        ]);
        let addr = pb::WeightedAddr {
            addr: Some(SocketAddr::from(([10, 0, 0, 1], 80)).into()),
            weight: 7,
            metric_labels: HashMap::from([("pod".to_string(), "web-1".to_string())]),
            ..Default::default()
        };
        let (sock, meta) = endpoint(&set, addr).unwrap();
        assert_eq!(sock, SocketAddr::from(([10, 0, 0, 1], 80)));
        assert_eq!(meta.weight, 7);
        assert_eq!(meta.labels["namespace"], "ns");
        assert_eq!(meta.labels["pod"], "web-1");
        assert!(endpoint(&set, pb::WeightedAddr::default()).is_none());
    }
}
