//! The bench's own HTTP/1.1 load generator, for a load wrk cannot send: from a chosen
//! source address (wrk has no option for it).
//!
//! Closed loop, as wrk's: `connections` keep-alive connections, each sending one request,
//! reading its whole response (`content-length` framed) and sending the next, until the
//! duration is over. The request in flight at the deadline is completed and counted, so that
//! what the load counts equals what the proxy counted. Runs on the caller's tokio runtime
//! (the policy test gives it a current-thread one on a thread pinned to the load CPU).
//!
//! Open loop ([`run_paced`], the latency test): requests are due on a fixed timetable
//! (`rate` per second, [`ringlink_benches::pace`]) shared by the connections, each with at
//! most one request in flight. A free connection claims the next due request, waits for its
//! due time, sends it; its latency is measured from the due time, so a request that had to
//! wait for a connection still busy with a slow response counts that wait, as wrk2 does.
//! With enough connections for the rate (each is free again long before its next turn),
//! the timetable is kept whatever the responses do.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringlink_benches::hdr::Latencies;
use ringlink_benches::pace::{HrTimer, Schedule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One exchange (request written, response read) at most; a stalled one is an error.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a connection is opened again after an error.
const RECONNECT_DELAY: Duration = Duration::from_millis(10);
/// How long past the timetable's end an open-loop run may take to send what is still due;
/// what is left then is reported as missed.
const PACED_DRAIN: Duration = Duration::from_secs(10);

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

/// What an open-loop run did.
#[derive(Clone, Debug, Default)]
pub struct PacedReport {
    /// Responses, errors, and the time from the timetable's start until the last response.
    pub load: LoadReport,
    /// Of every response read in full: from its request's due time until its end.
    pub latency: Latencies,
    /// Of the same requests: from the due time until the request was written (the timer's
    /// lateness, and waits for a free connection or a reconnect).
    pub send_lag: Latencies,
    /// Requests of the timetable never sent (the run gave up draining).
    pub missed: u64,
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

/// Runs `load` open loop: `rate` requests per second for `duration`, on a timetable shared
/// by `load.connections` connections (opened before the first request is due), each with
/// at most one request in flight.
pub async fn run_paced(load: &Load, rate: f64, duration: Duration) -> PacedReport {
    let recorded = Arc::new(Mutex::new(PacedReport::default()));
    let mut streams = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        match connect(load).await {
            Ok(stream) => streams.push(Some(stream)),
            Err(error) => {
                let mut r = recorded.lock().expect("recorded");
                r.load.error(format!("connect: {error}"));
                streams.push(None);
            }
        }
    }
    let start = Instant::now();
    let schedule = Arc::new(Schedule::new(start, rate, duration));
    let give_up = start + duration + PACED_DRAIN;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            tokio::spawn(paced_connection(
                load.clone(),
                stream,
                schedule.clone(),
                give_up,
                recorded.clone(),
            ))
        })
        .collect();
    for task in tasks {
        if task.await.is_err() {
            recorded
                .lock()
                .expect("recorded")
                .load
                .error("a load task panicked");
        }
    }
    let mut report = std::mem::take(&mut *recorded.lock().expect("recorded"));
    report.missed = schedule.sends() - schedule.claimed();
    report.load.elapsed = start.elapsed();
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

/// One connection of an open-loop run: claims due requests from `schedule` and sends each at
/// its due time, reconnecting after an error or a `connection: close`.
async fn paced_connection(
    load: Load,
    mut stream: Option<TcpStream>,
    schedule: Arc<Schedule>,
    give_up: Instant,
    recorded: Arc<Mutex<PacedReport>>,
) {
    let mut timer = match HrTimer::new() {
        Ok(timer) => timer,
        Err(error) => {
            let mut r = recorded.lock().expect("recorded");
            r.load.error(format!("timerfd: {error}"));
            return;
        }
    };
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < give_up {
        let Some(due) = schedule.claim() else { break };
        if let Err(error) = timer.sleep_until(due).await {
            let mut r = recorded.lock().expect("recorded");
            r.load.error(format!("timerfd: {error}"));
            return;
        }
        let conn = match &mut stream {
            Some(conn) => conn,
            None => match connect(&load).await {
                Ok(conn) => stream.insert(conn),
                Err(error) => {
                    // This request is lost (counted as an error); the next one retries.
                    let mut r = recorded.lock().expect("recorded");
                    r.load.error(format!("connect: {error}"));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let outcome =
            tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(conn, &load.request, &mut buf)).await;
        let done = Instant::now();
        let mut r = recorded.lock().expect("recorded");
        match outcome {
            Ok(Ok(response)) => {
                r.load.completed += 1;
                r.latency.record(done - due);
                r.send_lag.record(sent - due);
                if !(200..300).contains(&response.status) {
                    r.load.non_2xx += 1;
                    r.load.first_non_2xx.get_or_insert(response.status);
                }
                if response.close {
                    stream = None;
                }
            }
            Ok(Err(error)) => {
                r.load.error(error);
                stream = None;
            }
            Err(_) => {
                r.load
                    .error(format!("no response within {EXCHANGE_TIMEOUT:?}"));
                stream = None;
            }
        }
    }
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

            // Open loop: 2000/s for 250 ms is 500 requests, each timed from its due time.
            let paced = run_paced(&load, 2000.0, Duration::from_millis(250)).await;
            assert_eq!(paced.load.completed, 500, "{paced:?}");
            assert!(paced.load.problems().is_empty(), "{paced:?}");
            assert_eq!(paced.missed, 0);
            assert_eq!(paced.latency.len(), 500);
            assert_eq!(paced.send_lag.len(), 500);
            let (latency, lag) = (paced.latency.summary(), paced.send_lag.summary());
            assert!(latency.p50 >= lag.p50, "{latency:?} {lag:?}");
            assert!(paced.load.elapsed >= Duration::from_millis(249));
        });
    }
}
