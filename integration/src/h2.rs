//! An HTTP/2 (h2c, prior knowledge) test server and client on tokio and the h2 crate.
//!
//! The server's behaviour is chosen by the request path:
//! - `/echo`: 200 with the request body, then the request's trailers (if any) plus
//!   `x-server-trailer: done`;
//! - `/reset`: resets the stream with REFUSED_STREAM;
//! - `/wait-reset`: reads the body until the client resets it, and records the reason;
//! - `/data-then-reset`: 200, a DATA frame `partial` without END_STREAM, then a reset
//!   (INTERNAL_ERROR);
//! - anything else: 200 with the path as body.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::{server::SendResponse, Reason, RecvStream};
use http::{HeaderMap, Request, Response};
use tokio::net::{TcpListener, TcpStream};

// === types ===

pub struct Server {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    /// HTTP/2 connections that have ended.
    ended: Arc<AtomicUsize>,
    resets: Arc<Mutex<Vec<Reason>>>,
    authorities: Arc<Mutex<Vec<String>>>,
}

/// A client connection; each call opens a stream on it.
#[derive(Clone)]
pub struct Client {
    send: h2::client::SendRequest<Bytes>,
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

// === impl Server ===

impl Server {
    /// TCP connections accepted (a proxy's unused eager connections included).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections that completed the HTTP/2 handshake.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// HTTP/2 connections that have ended (a `/goaway` request ends its connection).
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// Reasons of the client resets `/wait-reset` streams saw.
    pub fn resets(&self) -> Vec<Reason> {
        self.resets.lock().unwrap().clone()
    }

    /// The `:authority` of every request, in order.
    pub fn authorities(&self) -> Vec<String> {
        self.authorities.lock().unwrap().clone()
    }
}

pub async fn server() -> Server {
    server_with(None).await
}

/// [`server`] advertising `SETTINGS_MAX_CONCURRENT_STREAMS` = `max_streams`.
pub async fn server_with_max_streams(max_streams: u32) -> Server {
    server_with(Some(max_streams)).await
}

async fn server_with(max_streams: Option<u32>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let resets = Arc::new(Mutex::new(Vec::new()));
    let authorities = Arc::new(Mutex::new(Vec::new()));
    let (conns, shakes, ends) = (connections.clone(), handshakes.clone(), ended.clone());
    let (rs, auths) = (resets.clone(), authorities.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let (rs, auths, shakes, ends) =
                (rs.clone(), auths.clone(), shakes.clone(), ends.clone());
            tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                if let Some(max) = max_streams {
                    builder.max_concurrent_streams(max);
                }
                let Ok(mut conn) = builder.handshake(stream).await else {
                    return;
                };
                shakes.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let authority = req.uri().authority().map(|a| a.to_string());
                    auths.lock().unwrap().extend(authority);
                    // Answered, then the connection is closed: GOAWAY, then EOF.
                    let goaway = req.uri().path() == "/goaway";
                    tokio::spawn(handle(req, respond, rs.clone()));
                    if goaway {
                        conn.graceful_shutdown();
                    }
                }
                ends.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        addr,
        connections,
        handshakes,
        ended,
        resets,
        authorities,
    }
}

async fn handle(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    resets: Arc<Mutex<Vec<Reason>>>,
) {
    let path = req.uri().path().to_string();
    let mut body = req.into_body();
    match path.as_str() {
        "/reset" => respond.send_reset(Reason::REFUSED_STREAM),
        "/data-then-reset" => {
            let Ok(mut stream) = respond.send_response(Response::new(()), false) else {
                return;
            };
            let _ = stream.send_data(Bytes::from_static(b"partial"), false);
            stream.send_reset(Reason::INTERNAL_ERROR);
        }
        "/wait-reset" => loop {
            match poll_fn(|cx| body.poll_data(cx)).await {
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
                }
                Some(Err(error)) => {
                    resets.lock().unwrap().extend(error.reason());
                    return;
                }
                None => return,
            }
        },
        "/echo" => {
            let mut data = Vec::new();
            while let Some(chunk) = poll_fn(|cx| body.poll_data(cx)).await {
                let Ok(chunk) = chunk else { return };
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            let mut trailers = poll_fn(|cx| body.poll_trailers(cx))
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            trailers.insert("x-server-trailer", "done".parse().unwrap());
            let Ok(mut stream) = respond.send_response(Response::new(()), false) else {
                return;
            };
            let _ = send_all(&mut stream, Bytes::from(data)).await;
            let _ = stream.send_trailers(trailers);
        }
        other => {
            let Ok(mut stream) = respond.send_response(Response::new(()), false) else {
                return;
            };
            let _ = stream.send_data(Bytes::from(other.to_string()), true);
        }
    }
}

/// Sends `data` respecting the peer's flow-control window.
async fn send_all(stream: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => {
                let chunk = data.split_to(n.min(data.len()));
                stream.send_data(chunk, false)?;
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(())
}

// === impl Client ===

impl Client {
    /// An h2c prior-knowledge connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::on(TcpStream::connect(addr).await.unwrap()).await
    }

    /// An h2c prior-knowledge connection to `addr` from the address `from`.
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Client {
        Client::on(crate::tcp::connect_from(addr, from).await).await
    }

    async fn on(stream: TcpStream) -> Client {
        let (send, conn) = h2::client::handshake(stream).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { send }
    }

    /// Sends a request with `body` and optional trailers; reads the whole response.
    pub async fn request(
        &self,
        method: &str,
        uri: &str,
        body: Vec<u8>,
        trailers: Option<HeaderMap>,
    ) -> Result<Reply, h2::Error> {
        self.request_with(method, uri, HeaderMap::new(), body, trailers)
            .await
    }

    /// [`Client::request`] with request `headers`.
    pub async fn request_with(
        &self,
        method: &str,
        uri: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        trailers: Option<HeaderMap>,
    ) -> Result<Reply, h2::Error> {
        let mut send = self.send.clone().ready().await?;
        let mut req = Request::builder().method(method).uri(uri).body(()).unwrap();
        *req.headers_mut() = headers;
        let end = body.is_empty() && trailers.is_none();
        let (response, mut stream) = send.send_request(req, end)?;
        if !end {
            send_all(&mut stream, Bytes::from(body)).await?;
            match trailers {
                Some(t) => stream.send_trailers(t)?,
                None => stream.send_data(Bytes::new(), true)?,
            }
        }
        let response = response.await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = poll_fn(|cx| body.poll_data(cx)).await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = poll_fn(|cx| body.poll_trailers(cx)).await?;
        Ok(Reply {
            status,
            headers,
            body: data,
            trailers,
        })
    }

    /// Opens a stream to `uri` whose body never ends, and keeps it open while the returned
    /// handle lives (a long-lived call, such as a gRPC watch).
    pub async fn hold(&self, uri: &str) -> h2::SendStream<Bytes> {
        let mut send = self.send.clone().ready().await.unwrap();
        let req = Request::builder().method("POST").uri(uri).body(()).unwrap();
        let (_response, mut stream) = send.send_request(req, false).unwrap();
        stream
            .send_data(Bytes::from_static(b"held"), false)
            .unwrap();
        stream
    }

    /// Opens a stream with an endless body, then resets it with `reason`.
    pub async fn open_and_reset(&self, uri: &str, reason: Reason) {
        let mut stream = self.hold(uri).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stream.send_reset(reason);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
