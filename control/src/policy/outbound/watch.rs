//! Outbound policies from Linkerd's policy controller: one
//! `io.linkerd.proxy.outbound.OutboundPolicies/Watch` stream per original destination, on the
//! control thread, shared by every shard watching it, as linkerd2-proxy's
//! `linkerd/app/outbound/src/policy/api.rs` watches them.
//!
//! The request is `TrafficSpec{source_workload: LINKERD2_PROXY_POLICY_WORKLOAD, target:
//! Addr(ip:port)}`. Each update is decoded into a [`ClientPolicy`] (one that does not decode
//! is published as [`ClientPolicy::invalid`], which answers 500) and published as
//! [`OutboundState::Policy`].
//!
//! A stream refused with `NotFound` or `Unimplemented` (the controller knows no Service for
//! the address, or predates the API), `InvalidArgument` or `FailedPrecondition` is not
//! retried: before any policy the state becomes [`OutboundState::NotFound`] (the caller
//! routes by its endpoints alone), after one the last policy stays. Any other failure, a
//! stream that ends, or one silent past `CONTROL_STREAM_INITIAL_TIMEOUT` / `_IDLE_TIMEOUT`
//! is retried with backoff; one past `CONTROL_STREAM_LIFETIME` is reopened at once.
//! **Deviation:** when the first attempt fails that way, the state becomes `NotFound` too
//! (linkerd2-proxy keeps the destination waiting for the controller), so that an unreachable
//! controller delays no request; a later answer still takes effect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linkerd2_proxy_api::net::TcpAddress;
use linkerd2_proxy_api::outbound as api;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::ClientPolicy;
use crate::discovery::Backoff;
use crate::policy::watch::StreamLimits;

/// Where a destination's policy stands.
#[derive(Clone, Debug)]
pub enum OutboundState {
    /// No answer yet.
    Pending,
    Policy(Arc<ClientPolicy>),
    /// The controller has no policy for the address: route by its endpoints.
    NotFound,
}

/// The outbound policy client: the controller's channel, the workload, and one publisher
/// per watched address. Cheap to clone; must be used inside a tokio runtime.
#[derive(Clone)]
pub struct OutboundPolicies {
    client: OutboundPoliciesClient<Channel>,
    workload: Arc<str>,
    limits: StreamLimits,
    /// The detect timeout an invalid policy carries.
    detect_timeout: Duration,
    watches: Arc<Mutex<HashMap<SocketAddr, watch::Sender<OutboundState>>>>,
}

/// How one stream ended.
enum Outcome {
    Retry { received: bool },
    Expired,
    Refused,
}

impl OutboundPolicies {
    /// A client of the policy controller at `addr` (plaintext HTTP/2, connected lazily).
    pub fn new(
        addr: impl std::fmt::Display,
        workload: impl Into<String>,
        limits: StreamLimits,
        detect_timeout: Duration,
    ) -> Self {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("HOST:PORT (checked by the configuration) is a valid URI authority")
            .connect_timeout(limits.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        OutboundPolicies {
            client: OutboundPoliciesClient::new(channel),
            workload: Arc::from(workload.into()),
            limits,
            detect_timeout,
            watches: Arc::default(),
        }
    }

    /// The policy of `target`, kept current. The first caller starts its stream; later
    /// callers share it. The stream stops once every receiver is dropped.
    pub fn watch(&self, target: SocketAddr) -> watch::Receiver<OutboundState> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = watches.get(&target) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(OutboundState::Pending);
        watches.insert(target, tx.clone());
        drop(watches);
        tokio::spawn(self.clone().run(target, tx));
        rx
    }

    /// How many addresses have a stream (or are backing off to retry one).
    pub fn active(&self) -> usize {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn run(self, target: SocketAddr, tx: watch::Sender<OutboundState>) {
        let mut backoff = Backoff::new();
        loop {
            let outcome = tokio::select! {
                biased;
                _ = tx.closed() => None,
                outcome = self.stream(target, &tx) => Some(outcome),
            };
            let delay = match outcome {
                None => {
                    if self.release(target, &tx) {
                        return;
                    }
                    continue;
                }
                Some(Outcome::Expired) => {
                    backoff.reset();
                    continue;
                }
                Some(Outcome::Refused) => {
                    tx.send_if_modified(|state| {
                        let pending = matches!(state, OutboundState::Pending);
                        if pending {
                            *state = OutboundState::NotFound;
                        }
                        pending
                    });
                    loop {
                        tx.closed().await;
                        if self.release(target, &tx) {
                            return;
                        }
                    }
                }
                Some(Outcome::Retry { received }) => {
                    if received {
                        backoff.reset();
                    }
                    tx.send_if_modified(|state| {
                        let pending = matches!(state, OutboundState::Pending);
                        if pending {
                            *state = OutboundState::NotFound;
                        }
                        pending
                    });
                    backoff.next()
                }
            };
            tracing::debug!(%target, ?delay, "Outbound policy stream ended; retrying");
            tokio::select! {
                biased;
                _ = tx.closed() => {
                    if self.release(target, &tx) {
                        return;
                    }
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One `Watch` stream, published on `tx` until it ends.
    async fn stream(&self, target: SocketAddr, tx: &watch::Sender<OutboundState>) -> Outcome {
        let request = api::TrafficSpec {
            source_workload: self.workload.to_string(),
            target: Some(api::traffic_spec::Target::Addr(TcpAddress::from(target))),
        };
        let mut client = self.client.clone();
        let lifetime = async {
            match self.limits.lifetime {
                Some(lifetime) => tokio::time::sleep(lifetime).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lifetime);
        let mut updates = tokio::select! {
            response = client.watch(request) => match response {
                Ok(response) => response.into_inner(),
                Err(status) => return failed(target, &status, false),
            },
            _ = &mut lifetime => return Outcome::Expired,
        };
        let mut received = false;
        loop {
            let bound = if received {
                self.limits.idle_timeout
            } else {
                self.limits.initial_timeout
            };
            let silence = async {
                match bound {
                    Some(bound) => tokio::time::sleep(bound).await,
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                message = updates.message() => message,
                _ = &mut lifetime => return Outcome::Expired,
                _ = silence => return Outcome::Retry { received },
            };
            match message {
                Ok(Some(policy)) => {
                    received = true;
                    let policy = ClientPolicy::try_from(policy).unwrap_or_else(|error| {
                        tracing::warn!(%target, %error, "Invalid outbound policy; its requests fail");
                        ClientPolicy::invalid(self.detect_timeout)
                    });
                    tracing::debug!(%target, "Outbound policy updated");
                    tx.send_replace(OutboundState::Policy(Arc::new(policy)));
                }
                Ok(None) => return Outcome::Retry { received },
                Err(status) => return failed(target, &status, received),
            }
        }
    }

    /// Forgets `target` if no one watches it any more; `false` if someone subscribed again.
    fn release(&self, target: SocketAddr, tx: &watch::Sender<OutboundState>) -> bool {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if !tx.is_closed() {
            return false;
        }
        if watches.get(&target).is_some_and(|t| t.same_channel(tx)) {
            watches.remove(&target);
        }
        true
    }
}

fn failed(target: SocketAddr, status: &tonic::Status, received: bool) -> Outcome {
    match status.code() {
        Code::NotFound | Code::Unimplemented | Code::InvalidArgument | Code::FailedPrecondition => {
            tracing::debug!(%target, code = ?status.code(), "No outbound policy");
            Outcome::Refused
        }
        code => {
            tracing::warn!(%target, ?code, message = status.message(), "Outbound policy stream failed; retrying with a backoff");
            Outcome::Retry { received }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The watch against a scripted in-process `OutboundPolicies` server. The end-to-end
    //! behaviour (through the proxy) is tested with the integration crate's mock controller.

    use std::collections::VecDeque;

    use linkerd2_proxy_api::meta;
    use linkerd2_proxy_api::outbound::outbound_policies_server::{
        OutboundPolicies as Api, OutboundPoliciesServer,
    };
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
    use tonic::{Request, Response, Status};

    use super::*;

    type Item = Result<api::OutboundPolicy, Status>;
    type Updates = mpsc::UnboundedSender<Item>;
    /// A scripted answer: a stream of updates, or a refusal.
    type Answer = Result<mpsc::UnboundedReceiver<Item>, Status>;

    /// Each `Watch` call takes the next scripted answer; with none left it is `Unavailable`.
    #[derive(Clone, Default)]
    struct Mock {
        script: Arc<Mutex<VecDeque<Answer>>>,
        calls: Arc<Mutex<Vec<api::TrafficSpec>>>,
    }

    impl Mock {
        fn refuse(&self, status: Status) {
            self.script.lock().unwrap().push_back(Err(status));
        }

        fn stream(&self) -> Updates {
            let (tx, rx) = mpsc::unbounded_channel();
            self.script.lock().unwrap().push_back(Ok(rx));
            tx
        }

        fn calls(&self) -> usize {
            self.calls.lock().unwrap().len()
        }
    }

    #[tonic::async_trait]
    impl Api for Mock {
        type WatchStream = UnboundedReceiverStream<Item>;

        async fn get(
            &self,
            _: Request<api::TrafficSpec>,
        ) -> Result<Response<api::OutboundPolicy>, Status> {
            Err(Status::unimplemented("unused"))
        }

        async fn watch(
            &self,
            request: Request<api::TrafficSpec>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            self.calls.lock().unwrap().push(request.into_inner());
            match self.script.lock().unwrap().pop_front() {
                Some(Ok(rx)) => Ok(Response::new(UnboundedReceiverStream::new(rx))),
                Some(Err(status)) => Err(status),
                None => Err(Status::unavailable("nothing scripted")),
            }
        }
    }

    async fn serve(mock: Mock) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if tx.send(Ok::<_, std::io::Error>(conn)).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .serve_with_incoming(OutboundPoliciesServer::new(mock), ReceiverStream::new(rx)),
        );
        addr
    }

    fn limits() -> StreamLimits {
        StreamLimits {
            connect_timeout: Duration::from_secs(1),
            lifetime: None,
            initial_timeout: None,
            idle_timeout: None,
        }
    }

    fn client(addr: SocketAddr) -> OutboundPolicies {
        OutboundPolicies::new(
            addr,
            "web.ns.serviceaccount.identity",
            limits(),
            Duration::from_secs(7),
        )
    }

    fn target() -> SocketAddr {
        "10.96.0.10:8080".parse().unwrap()
    }

    fn opaque(name: &str) -> api::OutboundPolicy {
        api::OutboundPolicy {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default(name.into())),
            }),
            protocol: Some(api::ProxyProtocol {
                kind: Some(api::proxy_protocol::Kind::Opaque(
                    api::proxy_protocol::Opaque { routes: vec![] },
                )),
            }),
        }
    }

    async fn next(rx: &mut watch::Receiver<OutboundState>) -> OutboundState {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("state changes in time")
            .expect("publisher alive");
        rx.borrow_and_update().clone()
    }

    fn parent(state: &OutboundState) -> String {
        match state {
            OutboundState::Policy(p) => p.parent.name().to_string(),
            other => panic!("expected a policy, got {other:?}"),
        }
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn final_codes() {
        for code in [
            Code::NotFound,
            Code::Unimplemented,
            Code::InvalidArgument,
            Code::FailedPrecondition,
        ] {
            assert!(matches!(
                failed(target(), &tonic::Status::new(code, ""), true),
                Outcome::Refused
            ));
        }
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::Ok,
        ] {
            assert!(matches!(
                failed(target(), &tonic::Status::new(code, ""), true),
                Outcome::Retry { received: true }
            ));
        }
    }

    #[tokio::test]
    async fn not_found_is_final() {
        let mock = Mock::default();
        mock.refuse(Status::not_found("not a Service"));
        let client = client(serve(mock.clone()).await);
        let mut rx = client.watch(target());
        assert!(matches!(*rx.borrow(), OutboundState::Pending));
        assert!(matches!(next(&mut rx).await, OutboundState::NotFound));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(mock.calls(), 1, "not retried");
        let spec = mock.calls.lock().unwrap()[0].clone();
        assert_eq!(spec.source_workload, "web.ns.serviceaccount.identity");
        assert_eq!(
            spec.target,
            Some(api::traffic_spec::Target::Addr(TcpAddress::from(target())))
        );
        assert_eq!(client.active(), 1);
        drop(rx);
        eventually("the watch to be released", || client.active() == 0).await;
    }

    #[tokio::test]
    async fn updates_are_published_and_shared() {
        let mock = Mock::default();
        let updates = mock.stream();
        let client = client(serve(mock.clone()).await);
        let mut a = client.watch(target());
        let mut b = client.watch(target());
        updates.send(Ok(opaque("first"))).unwrap();
        assert_eq!(parent(&next(&mut a).await), "first");
        assert_eq!(parent(&next(&mut b).await), "first");
        // An update that does not decode answers 500.
        updates
            .send(Ok(api::OutboundPolicy {
                metadata: None,
                ..opaque("bad")
            }))
            .unwrap();
        let state = next(&mut a).await;
        let OutboundState::Policy(p) = &state else {
            panic!("expected the invalid policy, got {state:?}");
        };
        assert_eq!(p.parent.name(), "invalid");
        assert!(
            matches!(p.protocol, super::super::Protocol::Detect { timeout, .. } if timeout == Duration::from_secs(7))
        );
        updates.send(Ok(opaque("second"))).unwrap();
        assert_eq!(parent(&next(&mut a).await), "second");
        assert_eq!(mock.calls(), 1);
        assert_eq!(client.active(), 1);
        // A late subscriber sees the current policy.
        let c = client.watch(target());
        assert_eq!(parent(&c.borrow()), "second");
        // The stream ends once every receiver is gone.
        drop((a, b, c));
        eventually("the stream to close", || updates.is_closed()).await;
        eventually("the watch to be released", || client.active() == 0).await;
    }

    #[tokio::test]
    async fn failures_are_retried_and_keep_the_policy() {
        let mock = Mock::default();
        mock.refuse(Status::unavailable("controller starting"));
        let first = mock.stream();
        let second = mock.stream();
        let client = client(serve(mock.clone()).await);
        let mut rx = client.watch(target());
        // The first attempt failed: route by endpoints meanwhile (see the module's note).
        assert!(matches!(next(&mut rx).await, OutboundState::NotFound));
        first.send(Ok(opaque("one"))).unwrap();
        assert_eq!(parent(&next(&mut rx).await), "one");
        // A stream that fails is reopened; the policy stays until the next update.
        first.send(Err(Status::internal("boom"))).unwrap();
        eventually("a retry", || mock.calls() == 3).await;
        assert_eq!(parent(&rx.borrow()), "one");
        second.send(Ok(opaque("two"))).unwrap();
        assert_eq!(parent(&next(&mut rx).await), "two");
        // A final refusal after a policy keeps it, and is not retried.
        second.send(Err(Status::not_found("gone"))).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(mock.calls(), 3);
        assert_eq!(parent(&rx.borrow()), "two");
    }

    #[tokio::test]
    async fn silent_streams_are_reopened() {
        let mock = Mock::default();
        let _silent = mock.stream();
        let updates = mock.stream();
        let addr = serve(mock.clone()).await;
        let client = OutboundPolicies::new(
            addr,
            "w",
            StreamLimits {
                initial_timeout: Some(Duration::from_millis(200)),
                ..limits()
            },
            Duration::from_secs(1),
        );
        let mut rx = client.watch(target());
        updates.send(Ok(opaque("after-timeout"))).unwrap();
        // The silent stream is given up; the state is NotFound meanwhile.
        assert!(matches!(next(&mut rx).await, OutboundState::NotFound));
        assert_eq!(parent(&next(&mut rx).await), "after-timeout");
        assert_eq!(mock.calls(), 2);
    }
}
