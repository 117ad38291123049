//! Upstream HTTP/2 connections, the client side of the proxy: one multiplexed connection per
//! target and client connection, made by the first stream that needs it (or taken from the
//! connection detection opened), shared by the streams that wait meanwhile, and driven by
//! its own shard task.
//!
//! Where the next feature lands: HTTP/1 requests upgraded to HTTP/2 between proxies
//! (`l5d-orig-proto`) leave on these connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{FutureExt, Shared};
use h2::client::SendRequest;

use super::{MAX_HEADER_LIST_SIZE, MAX_SEND_BUFFER};
use std::sync::Arc;

use ringlink_protocols::transport_header::SessionProtocol;

use crate::balance::{EndpointTls, Labels};
use crate::conn::ConnMeta;
use crate::conn::TlsStatus;
use crate::ctx::ShardCtx;
use crate::discover::DstCache;
use crate::error::ProxyError;
use crate::io::Counted;
use crate::io::Transport;
use crate::rt::Runtime;
use crate::telemetry::{Peer, RequestMetrics, RouteCache};
use crate::upstream;

// === types ===

/// The upstream connections of one client connection, by target, and what its streams
/// share.
pub struct Upstreams<R: Runtime> {
    pub ctx: Rc<ShardCtx<R>>,
    pub meta: ConnMeta,
    by_target: RefCell<HashMap<SocketAddr, Shared<Connecting>>>,
    /// The connection detection opened to the original destination, not yet used.
    eager: RefCell<Option<(SocketAddr, Transport<R>)>>,
    /// The HTTP metrics of the connection's last route.
    routes: RefCell<RouteCache>,
    /// The destination of the connection's last balanced stream.
    pub dst: DstCache,
}

/// A connection being (or already) made, awaited by every stream to its target.
type Connecting = Pin<Box<dyn Future<Output = Result<SendRequest<Bytes>, ConnectFailure>>>>;

/// Why an upstream h2 connection could not be made (cloneable, for every waiting stream).
#[derive(Clone, Debug)]
enum ConnectFailure {
    /// The TCP connection could not be made.
    Connect {
        timeout: Option<Duration>,
        errno: Option<i32>,
        kind: io::ErrorKind,
        message: String,
    },
    /// The connection was made but the HTTP/2 handshake failed.
    Handshake(String),
}

// === impl Upstreams ===

impl<R: Runtime> Upstreams<R> {
    pub fn new(
        ctx: &Rc<ShardCtx<R>>,
        meta: &ConnMeta,
        eager: Option<(SocketAddr, Transport<R>)>,
    ) -> Self {
        Upstreams {
            ctx: ctx.clone(),
            meta: meta.clone(),
            by_target: RefCell::new(HashMap::new()),
            eager: RefCell::new(eager),
            routes: RefCell::new(RouteCache::default()),
            dst: DstCache::default(),
        }
    }

    /// Starts the metrics of a request on this connection.
    pub fn start(
        &self,
        authority: Option<&str>,
        target: Option<SocketAddr>,
        labels: Option<&Labels>,
    ) -> RequestMetrics {
        self.ctx.http.start_tls(
            &mut self.routes.borrow_mut(),
            self.meta.direction,
            &self.meta.tls,
            authority,
            target,
            labels,
        )
    }

    /// The h2 connection to `target` (with mesh TLS when `tls` says its proxy is meshed).
    /// The first stream to ask connects (or uses the eager connection); streams asking
    /// meanwhile wait for the same connection.
    pub async fn get(
        &self,
        target: SocketAddr,
        tls: Option<Arc<EndpointTls>>,
    ) -> Result<SendRequest<Bytes>, ProxyError> {
        let existing = self.by_target.borrow().get(&target).cloned();
        let shared = match existing {
            Some(shared) => shared,
            None => {
                let eager = {
                    let mut eager = self.eager.borrow_mut();
                    match eager.take() {
                        Some((addr, stream)) if addr == target => Some(stream),
                        other => {
                            *eager = other;
                            None
                        }
                    }
                };
                let (ctx, direction) = (self.ctx.clone(), self.meta.direction);
                let connecting: Connecting = Box::pin(async move {
                    let (stream, status) = match eager {
                        Some(stream) => (stream, ctx.tcp.plaintext().clone()),
                        None => {
                            let timeout = ctx.settings.connect_timeout.get(direction);
                            let h2 = Some(SessionProtocol::Http2);
                            let tls = tls.as_deref();
                            upstream::connect_endpoint::<R>(&ctx.identity, target, tls, h2, timeout)
                                .await
                                .map_err(ConnectFailure::from_error)?
                        }
                    };
                    connect_h2::<R>(&ctx, direction, target, (stream, &status)).await
                });
                let shared = connecting.shared();
                self.by_target.borrow_mut().insert(target, shared.clone());
                shared
            }
        };
        match shared.await {
            Ok(send) => Ok(send),
            Err(failure) => {
                // The next stream tries again.
                self.forget(target);
                Err(failure.into_error())
            }
        }
    }

    pub fn forget(&self, target: SocketAddr) {
        self.by_target.borrow_mut().remove(&target);
    }
}

// === impl ConnectFailure ===

impl ConnectFailure {
    fn from_error(error: ProxyError) -> Self {
        match error {
            ProxyError::ConnectTimeout(timeout) => ConnectFailure::Connect {
                timeout: Some(timeout),
                errno: None,
                kind: io::ErrorKind::TimedOut,
                message: String::new(),
            },
            ProxyError::Connect(error) => ConnectFailure::Connect {
                timeout: None,
                errno: error.raw_os_error(),
                kind: error.kind(),
                message: error.to_string(),
            },
            other => ConnectFailure::Handshake(other.message()),
        }
    }

    fn into_error(self) -> ProxyError {
        match self {
            ConnectFailure::Connect {
                timeout: Some(timeout),
                ..
            } => ProxyError::ConnectTimeout(timeout),
            ConnectFailure::Connect {
                errno: Some(errno), ..
            } => ProxyError::Connect(io::Error::from_raw_os_error(errno)),
            ConnectFailure::Connect { kind, message, .. } => {
                ProxyError::Connect(io::Error::new(kind, message))
            }
            ConnectFailure::Handshake(why) => ProxyError::upstream(why),
        }
    }
}

// === functions ===

/// The h2 client handshake on `stream`; the connection is driven by its own task, which
/// ends when the server closes it or every handle to it is gone.
async fn connect_h2<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    direction: crate::conn::Direction,
    target: SocketAddr,
    (stream, tls): (Transport<R>, &TlsStatus),
) -> Result<SendRequest<Bytes>, ConnectFailure> {
    let fd = stream.as_raw_fd();
    let metrics = ctx.tcp.open(direction, Peer::Dst, target, tls);
    let io = match stream.into_poll() {
        Ok((io, ahead)) => Counted::new(io, ahead, &metrics.read_bytes, &metrics.write_bytes),
        Err(error) => {
            let failure = ConnectFailure::from_error(ProxyError::Connect(io::Error::new(
                error.kind(),
                error.to_string(),
            )));
            ctx.tcp.close(metrics, Some(&error));
            return Err(failure);
        }
    };
    let handshake = h2::client::Builder::new()
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io)
        .await;
    let (send, conn) = match handshake {
        Ok(pair) => pair,
        Err(error) => {
            let why = format!("the upstream did not speak HTTP/2 ({error})");
            let io_error = error
                .into_io()
                .unwrap_or_else(|| io::Error::other(why.clone()));
            ctx.tcp.close(metrics, Some(&io_error));
            return Err(ConnectFailure::Handshake(why));
        }
    };
    let task = ctx.life.task();
    let entry = ctx.life.register(fd);
    let tcp = ctx.tcp.clone();
    R::spawn(async move {
        let _task = task;
        let _entry = entry;
        let result = conn.await;
        let error = result.err().and_then(|e| e.into_io());
        tcp.close(metrics, error.as_ref());
    });
    Ok(send)
}
