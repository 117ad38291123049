//! The bench's own HTTP/1.1 load generator, for a load wrk cannot send: from a chosen
//! source address (wrk has no option for it).
//!
//! Closed loop, as wrk's: `connections` keep-alive connections, each sending one request,
//! reading its whole response (`content-length` framed) and sending the next, until the
//! duration is over. The request in flight at the deadline is completed and counted, so that
//! what the load counts equals what the proxy counted. Runs on the caller's tokio runtime
//! (the policy test gives it a current-thread one on a thread pinned to the load CPU).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One exchange (request written, response read) at most; a stalled one is an error.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a connection is opened again after an error.
const RECONNECT_DELAY: Duration = Duration::from_millis(10);

/// What to send, where from, and how many connections.
#[derive(Clone)]
pub struct Load {
    pub target: SocketAddr,
    /// The local address the connections are bound to (port 0).
    pub source: IpAddr,
    pub connections: usize,
    /// One whole request, sent as is on each exchange.
    pub request: Arc<[u8]>,
}

/// What a load run did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Responses read in full, whatever their status.
    pub completed: u64,
    /// Of those, the ones without a 2xx status, and the first such status.
    pub non_2xx: u64,
    pub first_non_2xx: Option<u16>,
    /// Failed connects and exchanges (timeouts, resets, malformed responses), and the first.
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the start until the last connection finished its last exchange.
    pub elapsed: Duration,
}

/// One response: its status and whether the server closes the connection after it.
struct Response {
    status: u16,
    close: bool,
}

// === impl LoadReport ===

impl LoadReport {
    pub fn requests_per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Errors and non-2xx responses, each as one line; empty if there were none.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.errors > 0 {
            problems.push(format!(
                "{} errors, the first: {}",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if self.non_2xx > 0 {
            problems.push(format!(
                "{} non-2xx responses, the first: {}",
                self.non_2xx,
                self.first_non_2xx.unwrap_or(0)
            ));
        }
        problems
    }

    fn add(&mut self, other: LoadReport) {
        self.completed += other.completed;
        self.non_2xx += other.non_2xx;
        self.first_non_2xx = self.first_non_2xx.or(other.first_non_2xx);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn error(&mut self, error: impl ToString) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }
}

// === functions ===

/// Runs `load` for `duration`.
pub async fn run(load: &Load, duration: Duration) -> LoadReport {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..load.connections)
        .map(|_| tokio::spawn(connection(load.clone(), deadline)))
        .collect();
    let mut report = LoadReport::default();
    for task in tasks {
        match task.await {
            Ok(counts) => report.add(counts),
            Err(_) => report.error("a load task panicked"),
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// One request on a new connection from `load.source`; the response's status.
pub async fn probe(load: &Load) -> io::Result<u16> {
    let mut stream = connect(load).await?;
    let mut buf = Vec::with_capacity(4096);
    let response = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        exchange(&mut stream, &load.request, &mut buf),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "probe timed out"))??;
    Ok(response.status)
}

/// One connection's loop: exchanges until `deadline`, reconnecting after an error or a
/// `connection: close`.
async fn connection(load: Load, deadline: Instant) -> LoadReport {
    let mut counts = LoadReport::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let conn = match &mut stream {
            Some(conn) => conn,
            None => match connect(&load).await {
                Ok(conn) => stream.insert(conn),
                Err(error) => {
                    counts.error(format!("connect: {error}"));
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            },
        };
        let outcome =
            tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(conn, &load.request, &mut buf)).await;
        match outcome {
            Ok(Ok(response)) => {
                counts.completed += 1;
                if !(200..300).contains(&response.status) {
                    counts.non_2xx += 1;
                    counts.first_non_2xx.get_or_insert(response.status);
                }
                if response.close {
                    stream = None;
                }
            }
            Ok(Err(error)) => {
                counts.error(error);
                stream = None;
            }
            Err(_) => {
                counts.error(format!("no response within {EXCHANGE_TIMEOUT:?}"));
                stream = None;
            }
        }
    }
    counts
}

async fn connect(load: &Load) -> io::Result<TcpStream> {
    let socket = match load.target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(load.source, 0))?;
    let stream = socket.connect(load.target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes `request` and reads one whole response into `buf` (cleared first). A response
/// must be framed by `content-length` (or have none, for an empty body); bytes after it are
/// an error, since one request is in flight at a time.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<Response> {
    stream.write_all(request).await?;
    buf.clear();
    let mut head: Option<(usize, usize, Response)> = None;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before a whole response: {:?}",
                    String::from_utf8_lossy(buf)
                ),
            ));
        }
        if head.is_none() {
            head = parse_head(buf)?;
        }
        if let Some((head_len, body_len, _)) = &head {
            let total = head_len + body_len;
            if buf.len() > total {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} bytes after the response", buf.len() - total),
                ));
            }
            if buf.len() == total {
                return Ok(head.take().expect("parsed").2);
            }
        }
    }
}

/// The response head's length, the body's length and the response, once the head is whole.
fn parse_head(buf: &[u8]) -> io::Result<Option<(usize, usize, Response)>> {
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}: {:?}", String::from_utf8_lossy(buf)),
        )
    };
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("a head not in UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid("a malformed status line"))?;
    let mut body_len = 0;
    let mut close = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("a malformed header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value
                .parse()
                .map_err(|_| invalid("a malformed content-length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("a chunked response (not supported)"));
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some((end + 4, body_len, Response { status, close })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_by_content_length() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nhello world\n";
        let (head, body, response) = parse_head(ok).unwrap().unwrap();
        assert_eq!(
            (head, body, response.status, response.close),
            (39, 12, 200, false)
        );
        assert!(parse_head(&ok[..20]).unwrap().is_none());
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (_, body, response) = parse_head(refused).unwrap().unwrap();
        assert_eq!((body, response.status, response.close), (0, 404, true));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn a_closed_loop_against_a_local_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let target = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let mut pending = Vec::new();
                        loop {
                            let n = stream.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            pending.extend_from_slice(&buf[..n]);
                            while let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                                pending.drain(..at + 4);
                                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                stream.write_all(ok).await.unwrap();
                            }
                        }
                    });
                }
            });
            let load = Load {
                target,
                source: "127.0.0.2".parse().unwrap(),
                connections: 4,
                request: Arc::from(&b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..]),
            };
            assert_eq!(probe(&load).await.unwrap(), 200);
            let report = run(&load, Duration::from_millis(200)).await;
            assert!(report.completed > 0, "{report:?}");
            assert!(report.problems().is_empty(), "{report:?}");
        });
    }
}
