//! HTTP/1 test servers and clients written against the RFC, on tokio and httparse, with no
//! code shared with the proxy's codec: what they see is what crossed the wire.
//!
//! - [`server`]: answers each request with what a handler returns (raw bytes, so a test can
//!   send any framing) and records every request it read (head, decoded body, raw body).
//! - [`Conn`]: a keep-alive client that writes raw requests and reads whole responses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// === types ===

/// A request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// 0 or 1.
    pub version: u8,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from its framing.
    pub body: Vec<u8>,
    /// The body's bytes as they arrived (with chunk framing, if chunked).
    pub raw_body: Vec<u8>,
    /// The connection's number (from 0) on this server.
    pub conn: usize,
}

/// What the handler wants sent back.
pub struct Reply {
    pub bytes: Vec<u8>,
    /// Close the connection after writing.
    pub close: bool,
}

/// A running test server.
pub struct Server {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

/// A response as a client read it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The bytes of the head.
    pub head: String,
}

/// A client connection (to a proxy or a server).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

// === impl Request / Response ===

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }
}

impl Reply {
    /// `200 OK` with `body` and a content-length.
    pub fn ok(body: &str) -> Reply {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: false,
        }
    }

    /// Closes the connection after the reply.
    pub fn then_close(mut self) -> Reply {
        self.close = true;
        self
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// === impl Server ===

impl Server {
    /// Every request read so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The values of header `name` in each request so far, in order.
    pub fn header_values(&self, name: &str) -> Vec<Vec<String>> {
        self.requests()
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Starts a server on a free loopback port answering with `handler`.
pub async fn server(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let (reqs, conns) = (requests.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let conn = conns.fetch_add(1, Ordering::SeqCst);
            let (handler, reqs) = (handler.clone(), reqs.clone());
            tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = Vec::new();
                loop {
                    let Some(mut request) = read_request(&mut stream, &mut buf).await else {
                        return;
                    };
                    request.conn = conn;
                    let reply = handler(&request);
                    let close = reply.close
                        || request
                            .header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    reqs.lock().unwrap().push(request);
                    if stream.write_all(&reply.bytes).await.is_err() {
                        return;
                    }
                    if close {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    Server {
        addr,
        requests,
        connections,
    }
}

/// Reads one request (answering `Expect: 100-continue`); `None` at end of stream or on
/// anything unparseable.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let mut request = Request {
                method: req.method?.to_string(),
                target: req.path?.to_string(),
                version: req.version?,
                headers: pairs(req.headers),
                body: Vec::new(),
                raw_body: Vec::new(),
                conn: 0,
            };
            buf.drain(..n);
            if request
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            {
                stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .ok()?;
            }
            let chunked = request
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            let length: usize = request
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (body, raw) = if chunked {
                read_chunked(stream, buf).await?
            } else {
                while buf.len() < length {
                    fill(stream, buf).await?;
                }
                let body: Vec<u8> = buf.drain(..length).collect();
                (body.clone(), body)
            };
            request.body = body;
            request.raw_body = raw;
            return Some(request);
        }
        fill(stream, buf).await?;
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 << 10];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Decodes a chunked body (with trailers); returns (data, raw bytes).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut raw = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        raw.extend_from_slice(&line);
        let text = std::str::from_utf8(&line).ok()?.trim_end();
        let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let line = read_line(stream, buf).await?;
                raw.extend_from_slice(&line);
                if line == b"\r\n" {
                    return Some((data, raw));
                }
            }
        }
        while buf.len() < size + 2 {
            fill(stream, buf).await?;
        }
        data.extend_from_slice(&buf[..size]);
        raw.extend(buf.drain(..size + 2));
    }
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            return Some(buf.drain(..i + 2).collect());
        }
        fill(stream, buf).await?;
    }
}

fn pairs(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

// === impl Conn ===

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// A connection to `addr` from the address `from` (e.g. `127.0.0.2`, a loopback client
    /// that is not `localhost` to an inbound policy).
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Conn {
        Conn {
            stream: crate::tcp::connect_from(addr, from).await,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, raw: impl AsRef<[u8]>) {
        self.stream.write_all(raw.as_ref()).await.expect("write");
    }

    /// Sends `raw` and reads one response (to a request of `method`).
    pub async fn request(&mut self, raw: impl AsRef<[u8]>) -> Response {
        let raw = raw.as_ref();
        let method = raw
            .split(|&b| b == b' ')
            .next()
            .unwrap_or_default()
            .to_vec();
        self.send(raw).await;
        self.response(&String::from_utf8_lossy(&method))
            .await
            .expect("a response")
    }

    /// Reads one response to a `method` request; `None` if the connection ended first.
    pub async fn response(&mut self, method: &str) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = res.parse(&self.buf) {
                let status = res.code?;
                let version = res.version?;
                let headers = pairs(res.headers);
                let head = String::from_utf8_lossy(&self.buf[..n]).into_owned();
                self.buf.drain(..n);
                let mut response = Response {
                    status,
                    version,
                    headers,
                    body: Vec::new(),
                    head,
                };
                let bodiless = method == "HEAD"
                    || (method == "CONNECT" && (200..300).contains(&status))
                    || (100..200).contains(&status)
                    || status == 204
                    || status == 304;
                if bodiless {
                    return Some(response);
                }
                if response
                    .header("transfer-encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
                {
                    response.body = read_chunked(&mut self.stream, &mut self.buf).await?.0;
                } else if let Some(length) = response.header("content-length") {
                    let length: usize = length.parse().ok()?;
                    while self.buf.len() < length {
                        fill(&mut self.stream, &mut self.buf).await?;
                    }
                    response.body = self.buf.drain(..length).collect();
                } else {
                    while fill(&mut self.stream, &mut self.buf).await.is_some() {}
                    response.body = std::mem::take(&mut self.buf);
                }
                return Some(response);
            }
            fill(&mut self.stream, &mut self.buf).await?;
        }
    }

    /// Whether the other side closed the connection (reads until EOF or an error).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                self.stream.read(&mut byte)
            )
            .await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub fn into_stream(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}
