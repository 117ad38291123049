//! The tap server: `io.linkerd.proxy.tap.Tap/Observe` on the control port, run on the
//! control thread.
//!
//! As linkerd2-proxy's (`linkerd/app/src/tap.rs`, `linkerd/proxy/tap/src/accept.rs`): each
//! connection is detected within [`DETECT_TIMEOUT`]; a TLS ClientHello is terminated with
//! the proxy's mesh certificate (asking for the client's), and a client whose verified
//! identity is `LINKERD2_PROXY_TAP_SVC_NAME` is served; a TLS client with another identity,
//! or none, gets `UNAUTHENTICATED` "Unauthorized client". A plaintext client gets
//! `UNAUTHENTICATED` "no_tls_from_remote", unless it connects from loopback (linkerd's
//! `NoServerTls::Loopback` case, which it serves): a person inside the pod may watch its
//! traffic with `ringlink-tap` without the tap controller's certificate.
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections (more are closed at once), at most
//! [`registry::MAX_TAPS`] `Observe` calls at once (more get `RESOURCE_EXHAUSTED`), and at
//! most [`registry::EVENT_CAPACITY`] events queued per call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use linkerd2_proxy_api::tap as api;
use linkerd2_proxy_api::tap::tap_server::TapServer;
use ringlink_protocols::tls::MeshTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

use super::registry::{Tap, TapMetrics, TapSet, EVENT_CAPACITY, MAX_TAPS};
use super::{check_limit, Match};

/// How long a new connection may take to send its first byte (linkerd2-proxy's tap server
/// detection timeout).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more are closed when accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// How often finished taps are dropped from the shards' set even when no call ends (a
/// shard may hold a finished tap for an instant while the call's end prunes).
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// The status message for a TLS client without the tap controller's identity.
const UNAUTHORIZED: &str = "Unauthorized client";

// === types ===

/// What the control thread needs to serve tap.
pub struct TapServerSetup {
    /// Bound to `LINKERD2_PROXY_CONTROL_LISTEN_ADDR`.
    pub listener: std::net::TcpListener,
    /// `LINKERD2_PROXY_TAP_SVC_NAME`: the one client identity served over TLS.
    pub permitted: String,
    /// The proxy's mesh TLS configurations, as the identity client publishes them.
    pub tls: watch::Receiver<Option<Arc<MeshTls>>>,
    /// Where the live taps are published to the shards.
    pub publish: watch::Sender<Arc<TapSet>>,
    pub metrics: Arc<TapMetrics>,
}

/// Whether a connection's client may tap, decided once per connection.
#[derive(Clone, Debug)]
pub struct TapPeer {
    pub addr: SocketAddr,
    /// `Err(message)`: every call gets `UNAUTHENTICATED` with this message.
    pub authorized: Result<(), String>,
}

/// The live taps, published to the shards whenever one starts or ends.
struct Registry {
    live: Mutex<Vec<Weak<Tap>>>,
    publish: watch::Sender<Arc<TapSet>>,
    next_base: AtomicU32,
    metrics: Arc<TapMetrics>,
}

/// The `Tap` gRPC service.
#[derive(Clone)]
struct Service {
    registry: Arc<Registry>,
}

/// One `Observe` call's response stream. Holds its tap until the limit is reached or the
/// client goes away; then ends once every tapped response has ended.
struct Events {
    rx: mpsc::Receiver<api::TapEvent>,
    tap: Option<Arc<Tap>>,
    registry: Arc<Registry>,
}

/// An accepted connection, detected (and TLS terminated) before tonic serves it.
struct TapIo {
    stream: Stream,
    peer: TapPeer,
    _permit: OwnedSemaphorePermit,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

// === functions ===

/// Serves tap until the process ends.
pub async fn serve(setup: TapServerSetup) {
    let TapServerSetup {
        listener,
        permitted,
        tls,
        publish,
        metrics,
    } = setup;
    let _ = listener.set_nonblocking(true);
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "Tap server cannot listen");
            return;
        }
    };
    let registry = Arc::new(Registry {
        live: Mutex::new(Vec::new()),
        publish,
        next_base: AtomicU32::new(0),
        metrics,
    });
    let (conns_tx, conns_rx) = mpsc::channel::<io::Result<TapIo>>(MAX_CONNECTIONS);
    let service = TapServer::new(Service {
        registry: registry.clone(),
    });
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::ReceiverStream::new(conns_rx);
        if let Err(error) = tonic::transport::Server::builder()
            .serve_with_incoming(service, incoming)
            .await
        {
            tracing::error!(%error, "Tap server failed");
        }
    });
    let permitted: Arc<str> = permitted.into();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "Tap accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = prune.tick() => {
                registry.prune();
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::info!(client = %addr, max = MAX_CONNECTIONS, "Too many tap connections; closing");
            continue;
        };
        let tls = tls.borrow().clone();
        let permitted = permitted.clone();
        let conns = conns_tx.clone();
        tokio::spawn(async move {
            match accept(stream, addr, tls, &permitted).await {
                Ok((stream, authorized)) => {
                    if let Err(reason) = &authorized {
                        tracing::info!(client = %addr, reason, "Unauthenticated tap client");
                    }
                    let io = TapIo {
                        stream,
                        peer: TapPeer { addr, authorized },
                        _permit: permit,
                    };
                    let _ = conns.send(Ok(io)).await;
                }
                Err(error) => tracing::debug!(client = %addr, %error, "Tap connection closed"),
            }
        });
    }
}

/// Detects TLS and terminates it; decides whether the client is the tap controller.
async fn accept(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<Arc<MeshTls>>,
    permitted: &str,
) -> io::Result<(Stream, Result<(), String>)> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(DETECT_TIMEOUT, stream.peek(&mut first))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no bytes within 1s"))??;
    if peeked == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    // A TLS record of type handshake.
    if first[0] != 0x16 {
        let authorized = if addr.ip().is_loopback() {
            Ok(())
        } else {
            Err("no_tls_from_remote".to_string())
        };
        return Ok((Stream::Plain(stream), authorized));
    }
    let Some(tls) = tls else {
        return Err(io::Error::other("not certified yet"));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| ringlink_protocols::tls::peer_identity(leaf));
    let authorized = match identity {
        Some(id) if id == permitted => Ok(()),
        _ => Err(UNAUTHORIZED.to_string()),
    };
    Ok((Stream::Tls(Box::new(stream)), authorized))
}

// === impl Registry ===

impl Registry {
    /// Adds a tap, unless [`MAX_TAPS`] are being served.
    fn register(&self, tap: &Arc<Tap>) -> Result<(), tonic::Status> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|t| t.strong_count() > 0);
        if live.len() >= MAX_TAPS {
            return Err(tonic::Status::resource_exhausted(format!(
                "too many concurrent taps (at most {MAX_TAPS})"
            )));
        }
        live.push(Arc::downgrade(tap));
        self.publish
            .send_replace(Arc::new(TapSet::new(live.clone())));
        Ok(())
    }

    /// Drops finished taps from the shards' set.
    fn prune(&self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let before = live.len();
        live.retain(|t| t.strong_count() > 0);
        if live.len() != before {
            self.publish
                .send_replace(Arc::new(TapSet::new(live.clone())));
        }
    }
}

// === impl Service ===

#[tonic::async_trait]
impl api::tap_server::Tap for Service {
    type ObserveStream = Events;

    async fn observe(
        &self,
        req: tonic::Request<api::ObserveRequest>,
    ) -> Result<tonic::Response<Events>, tonic::Status> {
        let metrics = &self.registry.metrics;
        let refused = |status: tonic::Status| {
            metrics.refused.fetch_add(1, Ordering::Relaxed);
            status
        };
        match req.extensions().get::<TapPeer>().map(|p| &p.authorized) {
            Some(Ok(())) => {}
            Some(Err(message)) => return Err(refused(tonic::Status::unauthenticated(message))),
            None => return Err(refused(tonic::Status::unauthenticated(UNAUTHORIZED))),
        }
        let req = req.into_inner();
        check_limit(req.limit).map_err(|m| refused(tonic::Status::invalid_argument(m)))?;
        let matcher = Match::try_new(req.r#match).map_err(|e| refused(e.into()))?;
        let headers = extract_headers(req.extract);
        let base_id = self.registry.next_base.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let tap = Arc::new(Tap::new(
            base_id,
            req.limit as usize,
            matcher,
            headers,
            tx,
            metrics.clone(),
        ));
        self.registry.register(&tap).map_err(refused)?;
        metrics.observes.fetch_add(1, Ordering::Relaxed);
        metrics.active.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(base_id, limit = req.limit, headers, "Tap started");
        Ok(tonic::Response::new(Events {
            rx,
            tap: Some(tap),
            registry: self.registry.clone(),
        }))
    }
}

/// Whether the request asks for headers (`extract.http.headers`); a missing `extract` (an
/// older control plane) means no headers, as in linkerd2-proxy.
fn extract_headers(extract: Option<api::observe_request::Extract>) -> bool {
    use api::observe_request::extract;
    matches!(
        extract.and_then(|e| e.extract),
        Some(extract::Extract::Http(extract::Http {
            extract: Some(extract::http::Extract::Headers(_)),
        }))
    )
}

// === impl Events ===

impl tokio_stream::Stream for Events {
    type Item = Result<api::TapEvent, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // At the limit, stop being matched: the channel then closes when the last tapped
        // response ends.
        if self.tap.as_ref().is_some_and(|tap| !tap.is_under_limit()) {
            self.tap = None;
            self.registry.prune();
        }
        self.rx.poll_recv(cx).map(|event| event.map(Ok))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.tap = None;
        self.registry.prune();
        self.registry.metrics.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl TapIo ===

impl Connected for TapIo {
    type ConnectInfo = TapPeer;

    fn connect_info(&self) -> TapPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TapIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TapIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
