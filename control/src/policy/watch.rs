//! Inbound policies from Linkerd's policy controller: one
//! `io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort` stream per port, on the control
//! thread, shared by every shard (DESIGN.md §2), as linkerd2-proxy's
//! `linkerd/app/inbound/src/policy/api.rs` watches them.
//!
//! Each port's policy is published as an `Arc<ServerPolicy>` on a `watch` channel. Until the
//! first answer (and whenever the controller cannot be reached) the port keeps its last
//! policy, starting from the default one (`LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`, or opaque
//! for the ports that disable protocol detection). A policy the proxy cannot use is
//! published as [`ServerPolicy::invalid`], as linkerd2-proxy does (a catch-all route with
//! no authorization: requests are refused, connections closed). A
//! stream that ends or fails is retried with backoff, except after `InvalidArgument` or
//! `FailedPrecondition` (the controller refuses the port: the policy stays as it is); a
//! stream is also ended and reopened after its configured lifetime
//! (`LINKERD2_PROXY_CONTROL_STREAM_LIFETIME`), and retried when its first update, or the
//! next one, does not arrive within `_CONTROL_STREAM_INITIAL_TIMEOUT` or `_IDLE_TIMEOUT`
//! (linkerd2-proxy leaves these bounds off for a loopback control plane; ringlink applies
//! them wherever the controller is). A port's stream stops once no shard watches
//! it; the ports in `LINKERD2_PROXY_INBOUND_PORTS` are held for the proxy's life.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linkerd2_proxy_api::inbound as api;
use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::inbound::ServerPolicy;
use crate::discovery::Backoff;

/// A port's policy as the shards receive it.
pub type PolicyRx = watch::Receiver<Arc<ServerPolicy>>;

/// How many port requests may wait for the control thread; a shard that finds the queue
/// full keeps the port's default policy and asks again on a later connection.
pub const POLICY_QUEUE_CAPACITY: usize = 256;

/// A shard's request for a port's policy (crosses threads).
#[derive(Debug)]
pub struct PolicyRequest {
    pub port: u16,
    pub reply: oneshot::Sender<PolicyRx>,
}

/// A shard's handle for sending [`PolicyRequest`]s.
pub type PolicyTx = mpsc::Sender<PolicyRequest>;

// === types ===

/// How a port's stream is bounded (the `CONTROL_STREAM_*` settings).
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// How long connecting to the controller may take.
    pub connect_timeout: Duration,
    /// After how long a stream is ended and opened again (`None`: never).
    pub lifetime: Option<Duration>,
    /// `CONTROL_STREAM_INITIAL_TIMEOUT`: a stream whose first update does not arrive within
    /// this long is ended and retried (`None`: no bound).
    pub initial_timeout: Option<Duration>,
    /// `CONTROL_STREAM_IDLE_TIMEOUT`: likewise for the time between two updates.
    pub idle_timeout: Option<Duration>,
}

/// The policy client: the controller's channel, the workload the proxy runs for, and one
/// publisher per watched port. Cheap to clone; must be used inside a tokio runtime.
#[derive(Clone)]
pub struct Policies {
    client: InboundServerPoliciesClient<Channel>,
    workload: Arc<str>,
    limits: StreamLimits,
    /// The policy of a port before any answer.
    default: Arc<dyn Fn(u16) -> Arc<ServerPolicy> + Send + Sync>,
    /// The detect timeout an invalid policy carries.
    detect_timeout: Duration,
    watches: Arc<Mutex<HashMap<u16, watch::Sender<Arc<ServerPolicy>>>>>,
}

/// How one stream ended.
enum Outcome {
    /// Retry after a backoff (`received`: it delivered at least one policy).
    Retry { received: bool },
    /// Its lifetime ran out: reopen at once.
    Expired,
    /// The controller refused the port: keep the policy as it is.
    Refused,
}

// === impl Policies ===

impl Policies {
    /// A client of the policy controller at `addr` (plaintext HTTP/2, connected lazily).
    pub fn new(
        addr: impl std::fmt::Display,
        workload: impl Into<String>,
        limits: StreamLimits,
        detect_timeout: Duration,
        default: Arc<dyn Fn(u16) -> Arc<ServerPolicy> + Send + Sync>,
    ) -> Policies {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("HOST:PORT (checked by the configuration) is a valid URI authority")
            .connect_timeout(limits.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Policies {
            client: InboundServerPoliciesClient::new(channel),
            workload: Arc::from(workload.into()),
            limits,
            default,
            detect_timeout,
            watches: Arc::default(),
        }
    }

    /// The policy of `port`, kept current. The first caller for a port starts its stream;
    /// later callers share it. The stream stops once every receiver is dropped.
    pub fn watch(&self, port: u16) -> PolicyRx {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = watches.get(&port) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel((self.default)(port));
        watches.insert(port, tx.clone());
        drop(watches);
        tokio::spawn(self.clone().run(port, tx));
        rx
    }

    /// How many ports have a stream (or are backing off to retry one).
    pub fn active(&self) -> usize {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn run(self, port: u16, tx: watch::Sender<Arc<ServerPolicy>>) {
        let mut backoff = Backoff::new();
        loop {
            let outcome = tokio::select! {
                biased;
                _ = tx.closed() => None,
                outcome = self.stream(port, &tx) => Some(outcome),
            };
            let delay = match outcome {
                None => {
                    if self.release(port, &tx) {
                        tracing::debug!(port, "No one watches the port's policy; stream closed");
                        return;
                    }
                    continue;
                }
                Some(Outcome::Expired) => {
                    backoff.reset();
                    continue;
                }
                Some(Outcome::Refused) => loop {
                    tx.closed().await;
                    if self.release(port, &tx) {
                        return;
                    }
                },
                Some(Outcome::Retry { received }) => {
                    if received {
                        backoff.reset();
                    }
                    backoff.next()
                }
            };
            tracing::debug!(port, ?delay, "Policy stream ended; retrying");
            tokio::select! {
                biased;
                _ = tx.closed() => {
                    if self.release(port, &tx) {
                        return;
                    }
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One `WatchPort` stream, published on `tx` until it ends.
    async fn stream(&self, port: u16, tx: &watch::Sender<Arc<ServerPolicy>>) -> Outcome {
        let request = api::PortSpec {
            workload: self.workload.to_string(),
            port: u32::from(port),
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
            response = client.watch_port(request) => match response {
                Ok(response) => response.into_inner(),
                Err(status) => return failed(port, &status, false),
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
                _ = silence => {
                    tracing::debug!(port, ?bound, received, "Policy stream silent for too long; reopening");
                    return Outcome::Retry { received };
                }
            };
            match message {
                Ok(Some(server)) => {
                    received = true;
                    let policy = ServerPolicy::try_from(server).unwrap_or_else(|error| {
                        tracing::warn!(port, %error, "Server misconfigured; refusing its traffic");
                        ServerPolicy::invalid(self.detect_timeout)
                    });
                    tracing::debug!(port, "Inbound policy updated");
                    tx.send_replace(Arc::new(policy));
                }
                Ok(None) => return Outcome::Retry { received },
                Err(status) => return failed(port, &status, received),
            }
        }
    }

    /// Forgets `port` if no one watches it any more; `false` if someone subscribed again
    /// meanwhile (then the stream goes on).
    fn release(&self, port: u16, tx: &watch::Sender<Arc<ServerPolicy>>) -> bool {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if !tx.is_closed() {
            return false;
        }
        if watches.get(&port).is_some_and(|t| t.same_channel(tx)) {
            watches.remove(&port);
        }
        true
    }
}

fn failed(port: u16, status: &tonic::Status, received: bool) -> Outcome {
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition => {
            tracing::warn!(port, code = ?status.code(), message = status.message(), "Policy controller refused the port; keeping its policy");
            Outcome::Refused
        }
        code => {
            tracing::warn!(
                port,
                ?code,
                message = status.message(),
                "Unexpected policy controller response; retrying with a backoff"
            );
            Outcome::Retry { received }
        }
    }
}

// === functions ===

/// The shards' request channel.
pub fn channel() -> (PolicyTx, mpsc::Receiver<PolicyRequest>) {
    mpsc::channel(POLICY_QUEUE_CAPACITY)
}

/// Answers the shards' requests with `policies`' watches until every shard is gone. The
/// ports in `pinned` (`LINKERD2_PROXY_INBOUND_PORTS`) are watched from the start and
/// for as long as this runs.
pub async fn serve(
    mut requests: mpsc::Receiver<PolicyRequest>,
    policies: Policies,
    pinned: &[u16],
) {
    let _pinned: Vec<PolicyRx> = pinned.iter().map(|port| policies.watch(*port)).collect();
    while let Some(request) = requests.recv().await {
        let _ = request.reply.send(policies.watch(request.port));
    }
}
