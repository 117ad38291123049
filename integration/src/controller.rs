//! A mock Linkerd controller: a real tonic server on loopback serving
//! `io.linkerd.proxy.destination.Destination`, and a second one serving
//! `io.linkerd.proxy.inbound.InboundServerPolicies` and
//! `io.linkerd.proxy.outbound.OutboundPolicies` ([`Controller::policy_addr`]), from
//! `linkerd2-proxy-api`'s generated code.
//!
//! Outbound policies are scripted per target address ([`Controller::outbound_policy`]):
//! every open `Watch` stream of the target receives the policy, now and at each later
//! update; a target with no policy is answered `NotFound`, as Linkerd's policy controller
//! answers for addresses that are not Services. Setting a policy later does not reach a
//! client that was refused (linkerd2-proxy does not retry `NotFound`) until it asks again.
//! `Get` (unary) is answered `Unimplemented`; builders of policies are in
//! [`crate::outbound_policy`].
//!
//! Inbound policies are scripted per port ([`Controller::inbound_policy`]): every open
//! `WatchPort` stream of that port receives the policy, now and at each later update; a
//! port with no policy keeps its streams open and silent (the proxy's default applies).
//!
//! Each destination is scripted per `Get` stream: [`Controller::destination`] queues a
//! stream for a name and returns its [`DstSender`]; the next `Get` for that name takes it
//! and sees, in order, whatever the test sends on it (updates may be sent before the `Get`
//! arrives). A `Get` for a name with no queued stream is answered `Unavailable`, which a
//! client retries. Every `Get` is counted per name. `GetProfile` answers with the profile
//! set for the target ([`Controller::profile`]), or `NotFound`.
//!
//! ```ignore
//! let ctrl = controller::new();
//! let dst = ctrl.destination("web.ns.svc.cluster.local:8080");
//! dst.add([backend_addr]);
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use linkerd2_proxy_api::inbound as inbound_pb;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::{
    InboundServerPolicies, InboundServerPoliciesServer,
};
use linkerd2_proxy_api::outbound as outbound_pb;
use linkerd2_proxy_api::outbound::outbound_policies_server::{
    OutboundPolicies, OutboundPoliciesServer,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

type Item = Result<pb::Update, Status>;

/// A running controller; it stops when dropped or when the test's runtime ends.
#[derive(Debug)]
pub struct Controller {
    addr: SocketAddr,
    policy_addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    policy_task: JoinHandle<()>,
}

/// The test's end of one scripted `Get` stream.
#[derive(Clone, Debug)]
pub struct DstSender {
    tx: mpsc::UnboundedSender<Item>,
}

#[derive(Debug, Default)]
struct State {
    /// Streams waiting for a `Get`, per name.
    queued: HashMap<String, VecDeque<mpsc::UnboundedReceiver<Item>>>,
    /// `Get` calls per name.
    calls: HashMap<String, usize>,
    /// The context token of the last `Get`.
    last_context_token: Option<String>,
    /// Profiles by target (`ip:port`), and the open `GetProfile` streams.
    profiles: HashMap<String, pb::DestinationProfile>,
    profile_streams: Vec<mpsc::UnboundedSender<Result<pb::DestinationProfile, Status>>>,
    profile_calls: HashMap<String, usize>,
    /// Inbound policies by port, and the open `WatchPort` streams of each port.
    policies: HashMap<u32, inbound_pb::Server>,
    policy_streams: HashMap<u32, Vec<mpsc::UnboundedSender<Result<inbound_pb::Server, Status>>>>,
    /// `WatchPort` calls per port, and the workload the last one named.
    policy_calls: HashMap<u32, usize>,
    last_workload: Option<String>,
    /// Outbound policies by target, their open `Watch` streams, and the calls per target.
    outbound: HashMap<SocketAddr, outbound_pb::OutboundPolicy>,
    outbound_streams: HashMap<SocketAddr, Vec<OutboundTx>>,
    outbound_calls: HashMap<SocketAddr, usize>,
    last_outbound_workload: Option<String>,
}

type OutboundTx = mpsc::UnboundedSender<Result<outbound_pb::OutboundPolicy, Status>>;

#[derive(Clone, Debug)]
struct Service {
    state: Arc<Mutex<State>>,
}

/// Starts a controller on `127.0.0.1:0`. Must be called inside a tokio runtime.
pub fn new() -> Controller {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind controller");
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let addr = listener.local_addr().expect("controller address");
    let state = Arc::new(Mutex::new(State::default()));
    let service = Service {
        state: state.clone(),
    };
    let destination = DestinationServer::new(service.clone());
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .serve_with_incoming(destination, TcpIncoming::from(listener))
            .await;
        if let Err(e) = result {
            eprintln!("mock controller on {addr} stopped: {e}");
        }
    });
    // The policy service listens on its own address, as Linkerd's does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind policy service");
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let policy_addr = listener.local_addr().expect("policy service address");
    let policies = InboundServerPoliciesServer::new(service.clone());
    let outbound = OutboundPoliciesServer::new(service);
    let policy_task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(policies)
            .add_service(outbound)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
        if let Err(e) = result {
            eprintln!("mock policy service on {policy_addr} stopped: {e}");
        }
    });
    Controller {
        addr,
        policy_addr,
        state,
        task,
        policy_task,
    }
}

impl Controller {
    /// The Destination service's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the policy services (InboundServerPolicies and OutboundPolicies).
    pub fn policy_addr(&self) -> SocketAddr {
        self.policy_addr
    }

    /// Queues a stream for the next `Get` of `name` (`host:port`, as the client asks).
    pub fn destination(&self, name: &str) -> DstSender {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock()
            .queued
            .entry(name.to_string())
            .or_default()
            .push_back(rx);
        DstSender { tx }
    }

    /// Answers every `GetProfile` of `target` (`ip:port`) with `profile` (then keeps the
    /// stream open). A target with no profile is answered `NotFound`.
    pub fn profile(&self, target: &str, profile: pb::DestinationProfile) {
        self.lock().profiles.insert(target.to_string(), profile);
    }

    /// How many `GetProfile` calls `target` has had.
    pub fn profile_calls(&self, target: &str) -> usize {
        self.lock().profile_calls.get(target).copied().unwrap_or(0)
    }

    /// How many `Get` calls `name` has had.
    pub fn get_calls(&self, name: &str) -> usize {
        self.lock().calls.get(name).copied().unwrap_or(0)
    }

    /// Sets the inbound policy of `port`, sending it on every open `WatchPort` stream of the
    /// port and to every later one.
    pub fn inbound_policy(&self, port: u16, server: inbound_pb::Server) {
        let mut state = self.lock();
        let port = u32::from(port);
        if let Some(streams) = state.policy_streams.get_mut(&port) {
            streams.retain(|tx| tx.send(Ok(server.clone())).is_ok());
        }
        state.policies.insert(port, server);
    }

    /// Ends every open `WatchPort` stream of `port` with `status` (the proxy retries).
    pub fn fail_policy_streams(&self, port: u16, status: Status) {
        let mut state = self.lock();
        for tx in state
            .policy_streams
            .remove(&u32::from(port))
            .unwrap_or_default()
        {
            let _ = tx.send(Err(status.clone()));
        }
    }

    /// How many `WatchPort` streams of `port` the client still holds open.
    pub fn open_policy_streams(&self, port: u16) -> usize {
        let mut state = self.lock();
        let streams = state.policy_streams.entry(u32::from(port)).or_default();
        streams.retain(|tx| !tx.is_closed());
        streams.len()
    }

    /// How many `WatchPort` calls `port` has had.
    pub fn policy_calls(&self, port: u16) -> usize {
        self.lock()
            .policy_calls
            .get(&u32::from(port))
            .copied()
            .unwrap_or(0)
    }

    /// Sets the outbound policy of `target`, sending it on every open `Watch` stream of the
    /// target and to every later one.
    pub fn outbound_policy(&self, target: SocketAddr, policy: outbound_pb::OutboundPolicy) {
        let mut state = self.lock();
        if let Some(streams) = state.outbound_streams.get_mut(&target) {
            streams.retain(|tx| tx.send(Ok(policy.clone())).is_ok());
        }
        state.outbound.insert(target, policy);
    }

    /// Ends every open `Watch` stream of `target` with `status`.
    pub fn fail_outbound_streams(&self, target: SocketAddr, status: Status) {
        let streams = self.lock().outbound_streams.remove(&target);
        for tx in streams.unwrap_or_default() {
            let _ = tx.send(Err(status.clone()));
        }
    }

    /// How many `Watch` streams of `target` the client still holds open.
    pub fn open_outbound_streams(&self, target: SocketAddr) -> usize {
        let mut state = self.lock();
        let streams = state.outbound_streams.entry(target).or_default();
        streams.retain(|tx| !tx.is_closed());
        streams.len()
    }

    /// How many `Watch` calls `target` has had.
    pub fn outbound_calls(&self, target: SocketAddr) -> usize {
        self.lock()
            .outbound_calls
            .get(&target)
            .copied()
            .unwrap_or(0)
    }

    /// The source workload the last outbound `Watch` named.
    pub fn last_outbound_workload(&self) -> Option<String> {
        self.lock().last_outbound_workload.clone()
    }

    /// The workload the last `WatchPort` named.
    pub fn last_workload(&self) -> Option<String> {
        self.lock().last_workload.clone()
    }

    /// The context token the last `Get` carried.
    pub fn last_context_token(&self) -> Option<String> {
        self.lock().last_context_token.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
        self.policy_task.abort();
    }
}

impl DstSender {
    /// Adds endpoints with weight 1 and no metadata.
    pub fn add(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.add_set(pb::WeightedAddrSet {
            addrs: addrs.into_iter().map(weighted).collect(),
            metric_labels: HashMap::new(),
        });
    }

    /// Adds a set as given (metric labels, identities, hints, …).
    pub fn add_set(&self, set: pb::WeightedAddrSet) {
        self.send(pb::update::Update::Add(set));
    }

    pub fn remove(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.send(pb::update::Update::Remove(pb::AddrSet {
            addrs: addrs.into_iter().map(Into::into).collect(),
        }));
    }

    pub fn no_endpoints(&self, exists: bool) {
        self.send(pb::update::Update::NoEndpoints(pb::NoEndpoints { exists }));
    }

    /// Ends the stream with status `code`.
    pub fn fail(&self, code: Code) {
        let _ = self
            .tx
            .send(Err(Status::new(code, "mock controller: scripted failure")));
    }

    /// Ends the stream with status OK.
    pub fn end_stream(self) {}

    /// Whether the client has gone (the stream was reset or the connection closed); only
    /// meaningful once a `Get` has taken this stream.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the client has gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    fn send(&self, update: pb::update::Update) {
        let _ = self.tx.send(Ok(pb::Update {
            update: Some(update),
        }));
    }
}

/// An endpoint with weight 1 and nothing else.
pub fn weighted(addr: SocketAddr) -> pb::WeightedAddr {
    pb::WeightedAddr {
        addr: Some(addr.into()),
        weight: 1,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Destination for Service {
    type GetStream = UnboundedReceiverStream<Item>;
    type GetProfileStream = UnboundedReceiverStream<Result<pb::DestinationProfile, Status>>;

    async fn get(
        &self,
        request: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state.calls.entry(request.path.clone()).or_default() += 1;
        state.last_context_token = Some(request.context_token);
        match state
            .queued
            .get_mut(&request.path)
            .and_then(VecDeque::pop_front)
        {
            Some(rx) => Ok(Response::new(UnboundedReceiverStream::new(rx))),
            None => Err(Status::unavailable(format!(
                "mock controller: nothing scripted for {}",
                request.path
            ))),
        }
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let path = request.into_inner().path;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state.profile_calls.entry(path.clone()).or_default() += 1;
        let Some(profile) = state.profiles.get(&path).cloned() else {
            return Err(Status::not_found(format!(
                "mock controller: no profile for {path}"
            )));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(profile));
        state.profile_streams.push(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for Service {
    type WatchPortStream = UnboundedReceiverStream<Result<inbound_pb::Server, Status>>;

    async fn get_port(
        &self,
        _request: Request<inbound_pb::PortSpec>,
    ) -> Result<Response<inbound_pb::Server>, Status> {
        Err(Status::unimplemented(
            "mock controller: GetPort is unused by proxies",
        ))
    }

    async fn watch_port(
        &self,
        request: Request<inbound_pb::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let spec = request.into_inner();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state.policy_calls.entry(spec.port).or_default() += 1;
        state.last_workload = Some(spec.workload);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(server) = state.policies.get(&spec.port) {
            let _ = tx.send(Ok(server.clone()));
        }
        state.policy_streams.entry(spec.port).or_default().push(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl OutboundPolicies for Service {
    type WatchStream = UnboundedReceiverStream<Result<outbound_pb::OutboundPolicy, Status>>;

    async fn get(
        &self,
        _request: Request<outbound_pb::TrafficSpec>,
    ) -> Result<Response<outbound_pb::OutboundPolicy>, Status> {
        Err(Status::unimplemented(
            "mock controller: Get is unused by proxies",
        ))
    }

    async fn watch(
        &self,
        request: Request<outbound_pb::TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use outbound_pb::traffic_spec::Target;
        let spec = request.into_inner();
        let target = match spec.target {
            Some(Target::Addr(addr)) => SocketAddr::try_from(addr)
                .map_err(|_| Status::invalid_argument("mock controller: bad target address"))?,
            _ => {
                return Err(Status::invalid_argument(
                    "mock controller: no target address",
                ))
            }
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state.outbound_calls.entry(target).or_default() += 1;
        state.last_outbound_workload = Some(spec.source_workload);
        let Some(policy) = state.outbound.get(&target).cloned() else {
            return Err(Status::not_found(format!(
                "mock controller: no outbound policy for {target}"
            )));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(policy));
        state.outbound_streams.entry(target).or_default().push(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}
