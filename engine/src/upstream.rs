//! Reaching upstream endpoints: the one connector ([`connect`]), the one connect/retry loop
//! over a balancer's endpoints ([`connect_balanced`]) for HTTP/1, h2 and opaque TCP alike,
//! and the pool of idle HTTP/1 connections ([`Pool`]).
//!
//! Where the next features land: TLS origination (when discovery gives the endpoint an
//! identity) and the transport header (`OpaqueTransport`) are properties of the connection
//! [`connect`] returns, not of its callers.

pub mod h2;
pub mod pool;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use std::sync::Arc;

use ringlink_protocols::transport_header::SessionProtocol;

use crate::balance::{EndpointTls, Pick};
use crate::conn::{Direction, NoTlsReason, TlsStatus};
use crate::discover::{Dst, Dsts};
use crate::error::ProxyError;
use crate::identity::ShardIdentity;
use crate::io::Transport;
use crate::rt::Runtime;
use crate::settings::SocketSettings;
use ringlink_control::policy::inbound::{Meta, ModifyHeader};
use ringlink_control::policy::outbound::{Retry, Timeouts};
use std::os::fd::AsRawFd;

pub use h2::H2Pool;
pub use pool::{Pool, Upstream};

/// Endpoints a balanced request or connection tries before it fails with the last error.
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

// === types ===

/// Where a request (or an opaque connection) goes: an address, and when a balancer chose
/// it, the destination and the pick that holds the endpoint's load until the exchange ends.
pub struct Target {
    pub addr: SocketAddr,
    pub dst: Option<Rc<Dst>>,
    pub pick: Option<Pick>,
    /// The destination name the request was routed by, if any (kept when discovery sent
    /// it to a fallback address).
    pub name: Option<Rc<str>>,
    /// What an outbound policy route decided (boxed: most requests have none).
    pub policy: Option<Box<PolicyRoute>>,
}

/// What an outbound policy's route decided for a request, beyond its endpoint.
#[derive(Debug)]
pub struct PolicyRoute {
    /// The `parent_*`, `route_*` and `backend_*` resources.
    pub parent: Arc<Meta>,
    pub route: Arc<Meta>,
    pub backend: Arc<Meta>,
    pub timeouts: Timeouts,
    /// A gRPC route matched (the `outbound_grpc_route_*` families).
    pub grpc: bool,
    /// The rule's retries.
    pub retry: Option<Arc<Retry>>,
    /// A ServiceProfile's retry budget, which each retry must fit in.
    pub budget: Option<Rc<crate::discover::Budget>>,
    /// Counted in the outbound route families (policy routes, not profile routes).
    pub record: bool,
    /// Header changes for the request, from the rule's then the backend's filters.
    pub request_headers: Vec<ModifyHeader>,
    /// Header changes for the response.
    pub response_headers: Vec<ModifyHeader>,
}

// === impl Target ===

impl Target {
    /// A fixed address, no balancer.
    pub fn addr(addr: SocketAddr) -> Self {
        Target {
            addr,
            dst: None,
            pick: None,
            name: None,
            policy: None,
        }
    }
}

// === functions ===

/// Connects to `addr` within `timeout`, with the TCP options of `direction`'s connections;
/// a failure is a [`ProxyError`] that keeps the OS error (`ConnectTimeout` for a timeout).
pub async fn connect<R: Runtime>(
    addr: SocketAddr,
    timeout: Duration,
    (sockets, direction): (&SocketSettings, Direction),
) -> Result<Transport<R>, ProxyError> {
    match R::connect(addr, timeout).await {
        Ok(stream) => {
            let stream = Transport::Plain(stream);
            crate::io::tune(stream.as_raw_fd(), sockets, direction, false);
            Ok(stream)
        }
        Err(error) => {
            tracing::info!(dst.addr = %addr, %error, "Connect failed");
            Err(ProxyError::connect(error, timeout))
        }
    }
}

/// Connects to `addr`: with mesh TLS when discovery says its proxy is meshed (`tls`) and
/// this proxy holds a certificate, else plaintext. Returns the stream and its TLS status.
pub async fn connect_endpoint<R: Runtime>(
    (identity, sockets): (&ShardIdentity, &SocketSettings),
    direction: Direction,
    addr: SocketAddr,
    tls: Option<&EndpointTls>,
    protocol: Option<SessionProtocol>,
    timeout: Duration,
) -> Result<(Transport<R>, TlsStatus), ProxyError> {
    // The replica is read (an `Arc` clone) only for a meshed endpoint.
    match tls.and_then(|endpoint| Some((endpoint, identity.current()?))) {
        // Boxed: inline, a handshake's state would enlarge every connection's task.
        Some((endpoint, mesh)) => {
            let dial = (sockets, direction);
            Box::pin(self::tls::connect::<R>(
                mesh, endpoint, addr, protocol, timeout, dial,
            ))
            .await
        }
        None => {
            let stream = connect::<R>(addr, timeout, (sockets, direction)).await?;
            let why = match direction {
                Direction::Inbound => NoTlsReason::Loopback,
                Direction::Outbound => NoTlsReason::NotProvidedByServiceDiscovery,
            };
            Ok((stream, TlsStatus::plaintext(identity.is_enabled(), why)))
        }
    }
}

/// Runs `attempt` on `target`'s address; when it fails with a retryable error (the
/// connection could not be made) and a balancer chose the address, the endpoint backs off
/// and another is picked, up to [`MAX_CONNECT_ATTEMPTS`] attempts in all. On success the
/// pick is marked connected. `target` is left on the last endpoint tried; when no other
/// endpoint could be picked, its pick is `None`.
pub async fn connect_balanced<R, T, F, Fut>(
    dsts: &Dsts,
    target: &mut Target,
    mut attempt: F,
) -> Result<T, ProxyError>
where
    R: Runtime,
    F: FnMut(SocketAddr, Option<Arc<EndpointTls>>) -> Fut,
    Fut: Future<Output = Result<T, ProxyError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let tls = target.pick.as_ref().and_then(Pick::tls);
        let error = match attempt(target.addr, tls).await {
            Ok(done) => {
                if let Some(pick) = &target.pick {
                    pick.connected();
                }
                return Ok(done);
            }
            Err(error) => error,
        };
        let (Some(failed), Some(dst)) = (&target.pick, &target.dst) else {
            return Err(error);
        };
        if !error.is_retryable() {
            return Err(error);
        }
        failed.connect_failed();
        if attempts >= MAX_CONNECT_ATTEMPTS {
            return Err(error);
        }
        match dst.pick::<R>(dsts).await {
            Ok(next) => {
                target.addr = next.addr();
                target.pick = Some(next);
            }
            Err(error) => {
                target.pick = None;
                return Err(error.into());
            }
        }
    }
}

/// Before a route's retry of a request to `target` (`left` retries remain after it): the
/// retry's backoff (its minimum doubling per retry, up to its maximum) is waited, then
/// another endpoint of the target's balancer is picked.
pub async fn before_retry<R: Runtime>(
    dsts: &Dsts,
    retry: &Retry,
    left: u32,
    target: &mut Target,
) -> Result<(), ProxyError> {
    if let Some(backoff) = retry.backoff {
        let tries = retry.max_retries.saturating_sub(left);
        let delay = backoff
            .min
            .saturating_mul(1u32 << tries.saturating_sub(1).min(16))
            .min(backoff.max);
        Box::pin(R::sleep(delay)).await;
    }
    if let Some(dst) = target.dst.clone() {
        let pick = dst.pick::<R>(dsts).await?;
        target.addr = pick.addr();
        target.pick = Some(pick);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
