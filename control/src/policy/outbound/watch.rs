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
