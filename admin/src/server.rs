//! Connections and routing.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod response;

use response::Response;

/// Largest request head accepted; larger gets 431 and the connection closes.
pub const MAX_HEAD: usize = 8 << 10;
/// Largest request body accepted (a log filter); larger gets 413.
pub const MAX_BODY: usize = 4 << 10;
/// How long a connection may take to send (the rest of) a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers parsed per request.
const MAX_HEADERS: usize = 32;

// === types ===

/// The run-time log filter (`LINKERD2_PROXY_LOG`), changeable through `/proxy-log-level`.
pub trait LogLevel: Send + Sync {
    fn get(&self) -> String;
    /// Replaces the filter; `Err` says why the new one is invalid.
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// What the admin server serves.
pub struct Admin {
    /// Set once the proxy serves traffic.
    pub ready: Arc<AtomicBool>,
    pub log_level: Box<dyn LogLevel>,
    /// The proxy's environment (`LINKERD2_PROXY_*` and `RINGLINK_*`) at startup.
    pub env: Vec<(String, String)>,
    /// `Some` when `LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED=true`: starts a drain.
    pub shutdown: Option<Box<dyn Fn() + Send + Sync>>,
    pub metrics: crate::Exposition,
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    query: Option<String>,
    body: Vec<u8>,
    close: bool,
    /// The client accepts `Content-Encoding: gzip`.
    gzip: bool,
}

// === functions ===

/// Serves admin requests on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let admin = admin.clone();
                tokio::spawn(async move {
                    if let Err(error) = connection(stream, peer, &admin).await {
                        tracing::debug!(%peer, %error, "Admin connection closed");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "Admin accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, admin: &Admin) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let request = match read_request(&mut stream, &mut buf).await? {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(response) => {
                stream.write_all(&response.close().encode()).await?;
                linger_close(stream).await;
                return Ok(());
            }
        };
        let close = request.close;
        let mut response = route(&request, peer, admin);
        if close {
            response = response.close();
        }
        stream.write_all(&response.encode()).await?;
        if close {
            return Ok(());
        }
    }
}

/// Reads one request. `Ok(None)`: the client closed between requests. `Err(response)`: the
/// request was refused (answer, then close). Non-HTTP bytes are an `io::Error`: just close.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Result<Option<Request>, Response>> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let parsed = parse_head(&req);
                    let gzip = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("accept-encoding")
                            && String::from_utf8_lossy(h.value)
                                .to_ascii_lowercase()
                                .contains("gzip")
                    });
                    let (method, target, close, length) = match parsed {
                        Ok(p) => p,
                        Err(response) => return Ok(Err(response)),
                    };
                    if length > MAX_BODY {
                        return Ok(Err(Response::text(413, "request body too large\n")));
                    }
                    buf.drain(..head_len);
                    while buf.len() < length {
                        if read_some(stream, buf).await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    let body: Vec<u8> = buf.drain(..length).collect();
                    let (path, query) = match target.split_once('?') {
                        Some((p, q)) => (p.to_string(), Some(q.to_string())),
                        None => (target, None),
                    };
                    return Ok(Ok(Some(Request {
                        method,
                        path,
                        query,
                        body,
                        close,
                        gzip,
                    })));
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                    return Ok(Err(Response::text(431, "request head too large\n")));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Ok(Err(Response::text(431, "too many headers\n")));
                }
                Err(error) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        error.to_string(),
                    ));
                }
            }
        }
        if read_some(stream, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(Ok(None));
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Closes after an error response without resetting it away: shut down writing, then read
/// and drop what the client still sends (bounded in bytes and time) so the close is a FIN.
async fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut left = 256usize << 10;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 2048];
    let n = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// `(method, target, close, content-length)` of a complete head.
#[allow(clippy::type_complexity)]
fn parse_head(req: &httparse::Request<'_, '_>) -> Result<(String, String, bool, usize), Response> {
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or("/").to_string();
    let http10 = req.version == Some(0);
    let mut close = http10;
    let mut length = 0usize;
    for header in req.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| Response::text(400, "bad content-length\n"))?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::text(411, "send a content-length\n"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
            close = value.contains("close") || (http10 && !value.contains("keep-alive"));
        }
    }
    Ok((method, target, close, length))
}

fn route(req: &Request, peer: SocketAddr, admin: &Admin) -> Response {
    let local = peer.ip().is_loopback();
    match req.path.as_str() {
        "/metrics" => only(req, &["GET", "HEAD"], || {
            let page = admin.metrics.render();
            if req.gzip {
                Response::body(
                    200,
                    "text/plain; version=0.0.4",
                    crate::gzip::compress(&page),
                )
                .header("content-encoding", "gzip")
            } else {
                Response::body(200, "text/plain; version=0.0.4", page)
            }
        }),
        "/live" => only(req, &["GET", "HEAD"], || Response::text(200, "live\n")),
        "/ready" => only(req, &["GET", "HEAD"], || {
            if admin.ready.load(Ordering::Acquire) {
                Response::text(200, "ready\n")
            } else {
                Response::text(503, "not ready\n")
            }
        }),
        "/env.json" => only(req, &["GET", "HEAD"], || {
            env_json(admin, req.query.as_deref())
        }),
        "/proxy-log-level" => only(req, &["GET", "PUT"], || {
            if !local {
                return Response::text(
                    403,
                    "access to /proxy-log-level is only allowed from localhost\n",
                );
            }
            if req.method == "GET" {
                return Response::text(200, &format!("{}\n", admin.log_level.get()));
            }
            match std::str::from_utf8(&req.body) {
                Ok(filter) => match admin.log_level.set(filter.trim()) {
                    Ok(()) => {
                        tracing::info!(filter = filter.trim(), "Log level changed");
                        Response::empty(204)
                    }
                    Err(error) => Response::text(400, &format!("{error}\n")),
                },
                Err(_) => Response::text(400, "the log filter must be UTF-8\n"),
            }
        }),
        "/shutdown" => match &admin.shutdown {
            None => Response::text(404, "not found\n"),
            Some(shutdown) => only(req, &["POST"], || {
                if !local {
                    return Response::text(403, "shutdown is only allowed from localhost\n");
                }
                tracing::info!("Shutdown requested through the admin server");
                shutdown();
                Response::text(200, "shutdown\n")
            }),
        },
        _ => Response::text(404, "not found\n"),
    }
}

/// Answers with `handler` when the method is allowed, 405 with `Allow` otherwise.
fn only(req: &Request, methods: &[&str], handler: impl FnOnce() -> Response) -> Response {
    if methods.contains(&req.method.as_str()) {
        let response = handler();
        if req.method == "HEAD" {
            response.without_body()
        } else {
            response
        }
    } else {
        Response::text(405, "method not allowed\n").header("allow", &methods.join(", "))
    }
}

/// The environment as a JSON object; `?NAME` (or `?A&B`) keeps only those names.
fn env_json(admin: &Admin, query: Option<&str>) -> Response {
    let wanted: Option<Vec<&str>> = query.map(|q| q.split('&').filter(|s| !s.is_empty()).collect());
    let mut out = String::from("{");
    let mut first = true;
    for (name, value) in &admin.env {
        if let Some(wanted) = &wanted {
            if !wanted.contains(&name.as_str()) {
                continue;
            }
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&format!(
            "\n  {}: {}",
            json_string(name),
            json_string(value)
        ));
    }
    out.push_str(if first { "}\n" } else { "\n}\n" });
    Response::body(200, "application/json", out.into_bytes())
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
