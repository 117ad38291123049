//! The soak's churn: each [`Kind`] a loop of its own on the load thread's tokio runtime,
//! connections alternating between ringlink's outbound and inbound listeners (even-numbered
//! to the outbound one). Rates are fixed (see [`Kind::describe`]); about 650 requests/s in
//! all, a moderate load, not saturation.
//!
//! What each exchange ended in is counted per kind in a [`Tally`]: `done` (completed as
//! intended), `aborted` (the client reset or left on purpose: expected, not a failure) and
//! unexpected errors, by message (a status other than the expected one, a reset or close by
//! the proxy, a timeout).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use ringlink_integration::ws;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant, MissedTickBehavior};

use super::backend::BIG_BODY;
use super::Kind;

// === constants ===

/// New HTTP/1 connections per second, one request each.
const CHURN_PER_SEC: u32 = 100;
/// Keep-alive HTTP/1 connections, and the pause between two requests on one.
const KEEPALIVE_CONNS: u64 = 8;
const KEEPALIVE_GAP: Duration = Duration::from_millis(25);
/// h2 connections, concurrent stream loops on each, the pause between two requests of a
/// loop, and how long a connection lives before it is closed and replaced.
const H2_CONNS: u64 = 2;
const H2_STREAMS: u64 = 8;
const H2_GAP: Duration = Duration::from_millis(50);
const H2_CONN_LIFETIME: Duration = Duration::from_secs(30);
/// Of every ten requests of an h2 stream loop, these are reset by the client: one right
/// after its headers (before any response), one after the response head of `/slow`.
const H2_RESET_BEFORE: u64 = 4;
const H2_RESET_AFTER: u64 = 9;
/// WebSocket sessions per second, and the messages each echoes before closing.
const WS_PER_SEC: u32 = 10;
const WS_MESSAGES: usize = 3;
/// Connections per second reset (SO_LINGER 0, then close) while sending a request body,
/// and while reading a `/big` response.
const RESET_REQUEST_PER_SEC: u32 = 10;
const RESET_RESPONSE_PER_SEC: u32 = 10;
/// What a mid-request reset sends of its announced body before resetting.
const RESET_REQUEST_SENT: usize = 4 << 10;
const RESET_REQUEST_ANNOUNCED: usize = 1 << 20;
/// What a mid-response reset reads of the `/big` body before resetting.
const RESET_RESPONSE_READ: usize = 16 << 10;
/// Concurrent slow readers: each reads [`SLOW_READ`] bytes every [`SLOW_READ_GAP`] through
/// a small receive buffer, so that the proxy's writes block; even-numbered sessions leave
/// after [`SLOW_LEAVE_AFTER`] bytes, odd-numbered ones read the whole `/big` body.
const SLOW_READERS: u64 = 4;
const SLOW_READ: usize = 8 << 10;
const SLOW_READ_GAP: Duration = Duration::from_millis(50);
const SLOW_LEAVE_AFTER: usize = 256 << 10;
const SLOW_RCVBUF: u32 = 16 << 10;

/// An exchange that takes longer is an error (a slow reader's whole body takes ~6.5 s).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const SLOW_TIMEOUT: Duration = Duration::from_secs(30);
/// A paced kind with this many exchanges in flight skips its next start (and counts it as
/// an error): the proxy is not keeping up with a load it should barely notice.
const MAX_IN_FLIGHT: usize = 200;
/// The pause after an error before a looping kind (keep-alive, h2, slow reader) reconnects.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
const HOST: &str = "soak.bench";
/// Unexpected-error messages are cut to this many characters, so that they group.
const MAX_MESSAGE: usize = 120;

// === types ===

/// Where the churn goes: ringlink's two plaintext listeners.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
}

/// What the exchanges of every kind ended in; shared by the load's tasks.
#[derive(Default)]
pub struct Tally {
    kinds: [KindTally; Kind::ALL.len()],
}

#[derive(Default)]
pub struct KindTally {
    done: AtomicU64,
    aborted: AtomicU64,
    errors: AtomicU64,
    by_message: Mutex<BTreeMap<String, u64>>,
}

/// A copy of one kind's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    pub done: u64,
    pub aborted: u64,
    pub errors: u64,
    pub by_message: BTreeMap<String, u64>,
}

/// A response head as a client read it.
#[derive(Debug, PartialEq, Eq)]
struct ResponseHead {
    status: u16,
    content_length: Option<u64>,
    proxy_error: Option<String>,
}

// === impl Targets ===

impl Targets {
    /// The listener for the `n`th connection of a kind, and its name.
    fn pick(&self, n: u64) -> (SocketAddr, &'static str) {
        if n.is_multiple_of(2) {
            (self.outbound, "outbound")
        } else {
            (self.inbound, "inbound")
        }
    }
}

// === impl Tally ===

impl Tally {
    pub fn kind(&self, kind: Kind) -> &KindTally {
        &self.kinds[kind as usize]
    }

    /// Sums over every kind: (done, aborted, errors).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.kinds.iter().fold((0, 0, 0), |(d, a, e), k| {
            (
                d + k.done.load(Ordering::Relaxed),
                a + k.aborted.load(Ordering::Relaxed),
                e + k.errors.load(Ordering::Relaxed),
            )
        })
    }
}

// === impl KindTally ===

impl KindTally {
    fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn aborted(&self) {
        self.aborted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an unexpected outcome on a connection to `listener`.
    fn error(&self, listener: &str, message: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut message = format!("{listener}: {message}");
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE) {
            message.truncate(cut);
            message.push('…');
        }
        let mut by_message = self.by_message.lock().unwrap_or_else(|e| e.into_inner());
        *by_message.entry(message).or_default() += 1;
    }

    pub fn counts(&self) -> KindCounts {
        KindCounts {
            done: self.done.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            by_message: self
                .by_message
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

// === functions ===

/// Runs `kind` until `deadline`, then waits for its exchanges in flight (each bounded by a
/// timeout). Aborting the returned future's task drops (and so closes) its connections.
pub async fn run(kind: Kind, targets: Targets, tally: Arc<Tally>, deadline: Instant) {
    match kind {
        Kind::Churn => {
            paced(CHURN_PER_SEC, deadline, tally, kind, move |n, t| {
                churn_once(targets, n, t)
            })
            .await
        }
        Kind::WebSocket => {
            paced(WS_PER_SEC, deadline, tally, kind, move |n, t| {
                websocket_once(targets, n, t)
            })
            .await
        }
        Kind::ResetRequest => {
            paced(RESET_REQUEST_PER_SEC, deadline, tally, kind, move |n, t| {
                reset_request_once(targets, n, t)
            })
            .await
        }
        Kind::ResetResponse => {
            paced(
                RESET_RESPONSE_PER_SEC,
                deadline,
                tally,
                kind,
                move |n, t| reset_response_once(targets, n, t),
            )
            .await
        }
        Kind::KeepAlive => {
            looping(KEEPALIVE_CONNS, tally, |i, t| {
                keepalive(targets, i, t, deadline)
            })
            .await
        }
        Kind::H2 => looping(H2_CONNS, tally, |i, t| h2_conns(targets, i, t, deadline)).await,
        Kind::SlowReader => {
            looping(SLOW_READERS, tally, |i, t| {
                slow_reader(targets, i, t, deadline)
            })
            .await
        }
    }
}

/// Starts `exchange(n)` `per_sec` times a second until `deadline`, then waits for those in
/// flight.
async fn paced<F, Fut>(per_sec: u32, deadline: Instant, tally: Arc<Tally>, kind: Kind, exchange: F)
where
    F: Fn(u64, Arc<Tally>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    let mut n = 0;
    while tick.tick().await < deadline {
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= MAX_IN_FLIGHT {
            tally.kind(kind).error(
                "-",
                format!("not started: {MAX_IN_FLIGHT} exchanges still in flight"),
            );
            continue;
        }
        in_flight.spawn(exchange(n, tally.clone()));
        n += 1;
    }
    while in_flight.join_next().await.is_some() {}
}

/// Runs `count` copies of `each(i)` (each loops until the deadline) and waits for them.
async fn looping<F, Fut>(count: u64, tally: Arc<Tally>, each: F)
where
    F: Fn(u64, Arc<Tally>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut loops = JoinSet::new();
    for i in 0..count {
        loops.spawn(each(i, tally.clone()));
    }
    while loops.join_next().await.is_some() {}
}

/// A new connection, one `GET /`, closed: by the server (`connection: close`, even `n`) or
/// by the client after the response (odd `n`).
async fn churn_once(targets: Targets, n: u64, tally: Arc<Tally>) {
    let (addr, listener) = targets.pick(n / 2);
    let tally = tally.kind(Kind::Churn);
    let close = if n.is_multiple_of(2) {
        "connection: close\r\n"
    } else {
        ""
    };
    let request = format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n{close}\r\n");
    let outcome = timeout(EXCHANGE_TIMEOUT, async {
        let mut stream = connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        exchange(&mut stream, request.as_bytes(), &mut buf).await?;
        if n.is_multiple_of(2) {
            // The server closes: the next read must see the end of the stream.
            match stream.read(&mut [0u8; 64]).await {
                Ok(0) => {}
                Ok(_) => return Err("bytes after a connection: close response".to_string()),
                Err(e) => return Err(format!("after the response: {e}")),
            }
        }
        Ok(())
    })
    .await;
    count_outcome(tally, listener, outcome);
}

/// A keep-alive connection doing `GET /` every [`KEEPALIVE_GAP`], reconnecting after an
/// error, until `deadline`.
async fn keepalive(targets: Targets, i: u64, tally: Arc<Tally>, deadline: Instant) {
    let (addr, listener) = targets.pick(i);
    let tally = tally.kind(Kind::KeepAlive);
    let request = format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
    let mut buf = Vec::with_capacity(1024);
    let mut stream = None;
    while Instant::now() < deadline {
        let outcome = timeout(EXCHANGE_TIMEOUT, async {
            let conn = match &mut stream {
                Some(conn) => conn,
                None => stream.insert(connect(addr).await.map_err(|e| format!("connect: {e}"))?),
            };
            exchange(conn, request.as_bytes(), &mut buf).await
        })
        .await;
        let failed = !matches!(outcome, Ok(Ok(())));
        count_outcome(tally, listener, outcome);
        if failed {
            stream = None;
            sleep(RECONNECT_DELAY).await;
        } else {
            sleep(KEEPALIVE_GAP).await;
        }
    }
}

/// h2 connections one after the other, each with [`H2_STREAMS`] stream loops for
/// [`H2_CONN_LIFETIME`] (or until `deadline`), then closed.
async fn h2_conns(targets: Targets, i: u64, tally: Arc<Tally>, deadline: Instant) {
    let mut generation = 0;
    while Instant::now() < deadline {
        let (addr, listener) = targets.pick(i + generation);
        generation += 1;
        let counts = tally.kind(Kind::H2);
        let until = deadline.min(Instant::now() + H2_CONN_LIFETIME);
        let connected = timeout(EXCHANGE_TIMEOUT, async {
            let tcp = connect(addr).await?;
            h2::client::handshake(tcp).await.map_err(io::Error::other)
        })
        .await;
        let (send, conn) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                counts.error(listener, format!("h2 connect: {e}"));
                sleep(RECONNECT_DELAY).await;
                continue;
            }
            Err(_) => {
                counts.error(listener, "h2 connect: timed out");
                continue;
            }
        };
        let driver = tokio::spawn(conn);
        let mut streams = JoinSet::new();
        for s in 0..H2_STREAMS {
            let (send, tally) = (send.clone(), tally.clone());
            streams.spawn(h2_stream_loop(send, s, listener, tally, until));
        }
        drop(send);
        while streams.join_next().await.is_some() {}
        // Every handle is gone: the connection closes once its streams are done.
        match timeout(EXCHANGE_TIMEOUT, driver).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => counts.error(listener, format!("h2 connection: {e}")),
            Ok(Err(e)) => counts.error(listener, format!("h2 connection task: {e}")),
            Err(_) => counts.error(listener, "h2 connection: did not close"),
        }
    }
}

/// Requests on one h2 connection every [`H2_GAP`] until `until`: most `GET /` read whole,
/// some reset by the client (RST_STREAM CANCEL) before or after the response head.
async fn h2_stream_loop(
    mut send: h2::client::SendRequest<Bytes>,
    s: u64,
    listener: &'static str,
    tally: Arc<Tally>,
    until: Instant,
) {
    let tally = tally.kind(Kind::H2);
    let mut n = s;
    while Instant::now() < until {
        let which = n % 10;
        n += 1;
        let outcome = timeout(EXCHANGE_TIMEOUT, async {
            send = send
                .clone()
                .ready()
                .await
                .map_err(|e| format!("ready: {e}"))?;
            let path = if which == H2_RESET_AFTER {
                "/slow"
            } else {
                "/"
            };
            let request = http::Request::get(format!("http://{HOST}{path}"))
                .body(())
                .expect("a valid request");
            let end_of_stream = which != H2_RESET_BEFORE;
            let (response, mut body) = send
                .send_request(request, end_of_stream)
                .map_err(|e| format!("send: {e}"))?;
            if which == H2_RESET_BEFORE {
                body.send_reset(Reason::CANCEL);
                return Ok(true);
            }
            let response = response.await.map_err(|e| format!("response: {e}"))?;
            let status = response.status().as_u16();
            if status != 200 {
                let proxy_error = (response.headers().get("l5d-proxy-error"))
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(" (l5d-proxy-error: {v})"))
                    .unwrap_or_default();
                return Err(format!("status {status}{proxy_error}"));
            }
            let mut recv = response.into_body();
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.map_err(|e| format!("body: {e}"))?;
                let _ = recv.flow_control().release_capacity(chunk.len());
                if which == H2_RESET_AFTER {
                    // Dropping the stream unfinished sends RST_STREAM(CANCEL).
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await;
        match outcome {
            Ok(Ok(true)) => tally.aborted(),
            Ok(Ok(false)) => tally.done(),
            Ok(Err(e)) => {
                tally.error(listener, e);
                sleep(RECONNECT_DELAY).await;
            }
            Err(_) => tally.error(listener, "timed out"),
        }
        sleep(H2_GAP).await;
    }
}

/// A WebSocket upgrade, [`WS_MESSAGES`] echoed messages, the closing handshake.
async fn websocket_once(targets: Targets, n: u64, tally: Arc<Tally>) {
    let (addr, listener) = targets.pick(n);
    let tally = tally.kind(Kind::WebSocket);
    let outcome = timeout(EXCHANGE_TIMEOUT, async {
        let mut client = ws::Client::connect(addr, HOST)
            .await
            .map_err(|e| format!("upgrade: {}", first_line(&e.to_string())))?;
        for m in 0..WS_MESSAGES {
            let message = ws::Message::Text(format!("soak {n} message {m}"));
            match client.roundtrip(&message).await {
                Ok(echo) if echo == message => {}
                Ok(other) => return Err(format!("echo: got {other:?}")),
                Err(e) => return Err(format!("echo: {e}")),
            }
        }
        match client.close(1000).await {
            Ok(ws::Message::Close(Some((1000, _)))) => Ok(()),
            Ok(other) => Err(format!("close: got {other:?}")),
            Err(e) => Err(format!("close: {e}")),
        }
    })
    .await;
    count_outcome(tally, listener, outcome);
}

/// A request announcing a 1 MiB body, 4 KiB of it, then a reset (SO_LINGER 0 and close):
/// at once for even `n`, after 20 ms (the proxy has connected upstream) for odd `n`.
async fn reset_request_once(targets: Targets, n: u64, tally: Arc<Tally>) {
    let (addr, listener) = targets.pick(n / 2);
    let tally = tally.kind(Kind::ResetRequest);
    let outcome = timeout(EXCHANGE_TIMEOUT, async {
        let mut stream = connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let head = format!(
            "POST /upload HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: \
             {RESET_REQUEST_ANNOUNCED}\r\n\r\n"
        );
        let body = vec![b'x'; RESET_REQUEST_SENT];
        (stream.write_all(&[head.as_bytes(), &body].concat()).await)
            .map_err(|e| format!("write: {e}"))?;
        if n % 2 == 1 {
            sleep(Duration::from_millis(20)).await;
        }
        reset(stream)
    })
    .await;
    count_abort(tally, listener, outcome);
}

/// `GET /big`, its head and 16 KiB of its body read, then a reset.
async fn reset_response_once(targets: Targets, n: u64, tally: Arc<Tally>) {
    let (addr, listener) = targets.pick(n);
    let tally = tally.kind(Kind::ResetResponse);
    let outcome = timeout(EXCHANGE_TIMEOUT, async {
        let mut stream = connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET /big HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
        (stream.write_all(request.as_bytes()).await).map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(RESET_RESPONSE_READ + 4096);
        let (head, head_len) = read_head(&mut stream, &mut buf).await?;
        expect_ok(&head)?;
        while buf.len() - head_len < RESET_RESPONSE_READ {
            buf.reserve(4096);
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("closed before the body was read".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("body: {e}")),
            }
        }
        reset(stream)
    })
    .await;
    count_abort(tally, listener, outcome);
}

/// Sessions one after the other until `deadline`: `GET /big` through a small receive
/// buffer, read slowly; even sessions leave early (close with unread data: the kernel
/// resets), odd ones read it all and close.
async fn slow_reader(targets: Targets, i: u64, tally: Arc<Tally>, deadline: Instant) {
    let tally = tally.kind(Kind::SlowReader);
    let mut session = 0;
    while Instant::now() < deadline {
        let (addr, listener) = targets.pick(i + session);
        let leave_early = session.is_multiple_of(2);
        session += 1;
        let outcome = timeout(SLOW_TIMEOUT, async {
            let socket = socket_for(addr).map_err(|e| format!("socket: {e}"))?;
            socket
                .set_recv_buffer_size(SLOW_RCVBUF)
                .map_err(|e| format!("SO_RCVBUF: {e}"))?;
            let mut stream = socket
                .connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let request = format!("GET /big HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
            (stream.write_all(request.as_bytes()).await).map_err(|e| format!("write: {e}"))?;
            let mut buf = Vec::with_capacity(SLOW_READ);
            let (head, head_len) = read_head(&mut stream, &mut buf).await?;
            expect_ok(&head)?;
            let mut read = buf.len() - head_len;
            let mut chunk = vec![0u8; SLOW_READ];
            while read < BIG_BODY {
                if leave_early && read >= SLOW_LEAVE_AFTER {
                    return Ok(true);
                }
                sleep(SLOW_READ_GAP).await;
                match stream.read(&mut chunk).await {
                    Ok(0) => return Err(format!("closed after {read} body bytes")),
                    Ok(n) => read += n,
                    Err(e) => return Err(format!("body after {read} bytes: {e}")),
                }
            }
            if read > BIG_BODY {
                return Err(format!("{} bytes after the body", read - BIG_BODY));
            }
            Ok(false)
        })
        .await;
        match outcome {
            Ok(Ok(true)) => tally.aborted(),
            Ok(Ok(false)) => tally.done(),
            Ok(Err(e)) => {
                tally.error(listener, e);
                sleep(RECONNECT_DELAY).await;
            }
            Err(_) => tally.error(listener, format!("not done within {SLOW_TIMEOUT:?}")),
        }
    }
}

fn count_outcome(
    tally: &KindTally,
    listener: &str,
    outcome: Result<Result<(), String>, tokio::time::error::Elapsed>,
) {
    match outcome {
        Ok(Ok(())) => tally.done(),
        Ok(Err(e)) => tally.error(listener, e),
        Err(_) => tally.error(listener, format!("not done within {EXCHANGE_TIMEOUT:?}")),
    }
}

/// An exchange that ends in the client's reset counts as aborted when it got that far.
fn count_abort(
    tally: &KindTally,
    listener: &str,
    outcome: Result<Result<(), String>, tokio::time::error::Elapsed>,
) {
    match outcome {
        Ok(Ok(())) => tally.aborted(),
        Ok(Err(e)) => tally.error(listener, e),
        Err(_) => tally.error(listener, format!("not done within {EXCHANGE_TIMEOUT:?}")),
    }
}

fn socket_for(addr: SocketAddr) -> io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Closes `stream` with SO_LINGER 0: the kernel sends RST instead of FIN.
fn reset(stream: TcpStream) -> Result<(), String> {
    stream
        .set_zero_linger()
        .map_err(|e| format!("SO_LINGER: {e}"))?;
    drop(stream);
    Ok(())
}

/// Writes `request` and reads its whole `200` response (framed by content-length).
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<(), String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let (head, head_len) = read_head(stream, buf).await?;
    expect_ok(&head)?;
    let total = head_len + head.content_length.unwrap_or(0) as usize;
    while buf.len() < total {
        buf.reserve(4096);
        match stream.read_buf(buf).await {
            Ok(0) => return Err("closed in the response body".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("body: {e}")),
        }
    }
    if buf.len() > total {
        return Err(format!("{} bytes after the response", buf.len() - total));
    }
    Ok(())
}

fn expect_ok(head: &ResponseHead) -> Result<(), String> {
    match head.status {
        200 => Ok(()),
        status => Err(format!(
            "status {status}{}",
            head.proxy_error
                .as_ref()
                .map(|e| format!(" (l5d-proxy-error: {e})"))
                .unwrap_or_default()
        )),
    }
}

/// Reads into `buf` until it holds a whole response head; the head and its length. Body
/// bytes read with it stay in `buf` after the head.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(ResponseHead, usize), String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_response_head(&buf[..end]).ok_or_else(|| {
                format!(
                    "malformed response head: {:?}",
                    first_line(&String::from_utf8_lossy(&buf[..end]))
                )
            })?;
            return Ok((head, end + 4));
        }
        if buf.len() > 64 << 10 {
            return Err("response head too long".to_string());
        }
        buf.reserve(4096);
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Err("closed before a response".to_string()),
            Ok(0) => return Err("closed in the response head".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn parse_response_head(head: &[u8]) -> Option<ResponseHead> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.split(' ');
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    let mut parsed = ResponseHead {
        status,
        content_length: None,
        proxy_error: None,
    };
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = Some(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("l5d-proxy-error") {
            parsed.proxy_error = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The backend never sends chunked bodies; the proxy must not make them.
            return None;
        }
    }
    Some(parsed)
}

fn first_line(text: &str) -> &str {
    text.split(['\r', '\n']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let ok = parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12").unwrap();
        assert_eq!((ok.status, ok.content_length), (200, Some(12)));
        let refused = parse_response_head(
            b"HTTP/1.1 502 Bad Gateway\r\nl5d-proxy-error: connection refused\r\ncontent-length: 0",
        )
        .unwrap();
        assert_eq!(
            expect_ok(&refused).unwrap_err(),
            "status 502 (l5d-proxy-error: connection refused)"
        );
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").is_none());
        assert!(parse_response_head(b"SSH-2.0-x").is_none());
    }

    #[test]
    fn messages_group_by_listener_and_are_cut() {
        let tally = KindTally::default();
        tally.error("outbound", "status 502");
        tally.error("outbound", "status 502");
        tally.error("inbound", "x".repeat(500));
        let counts = tally.counts();
        assert_eq!(counts.errors, 3);
        assert_eq!(counts.by_message["outbound: status 502"], 2);
        let long = counts
            .by_message
            .keys()
            .find(|m| m.starts_with("inbound"))
            .unwrap();
        assert_eq!(long.chars().count(), MAX_MESSAGE + 1);
    }

    #[test]
    fn every_kind_against_the_backend_alone() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(super::super::backend::serve(listener));
            let targets = Targets {
                outbound: addr,
                inbound: addr,
            };
            let tally = Arc::new(Tally::default());
            let deadline = Instant::now() + Duration::from_millis(1500);
            let mut kinds = JoinSet::new();
            for kind in Kind::ALL {
                kinds.spawn(run(kind, targets, tally.clone(), deadline));
            }
            while kinds.join_next().await.is_some() {}
            for kind in Kind::ALL {
                let counts = tally.kind(kind).counts();
                assert_eq!(counts.errors, 0, "{kind:?}: {counts:?}");
                assert!(counts.done + counts.aborted > 0, "{kind:?}: {counts:?}");
            }
            let h2 = tally.kind(Kind::H2).counts();
            assert!(h2.done > 0 && h2.aborted > 0, "{h2:?}");
        });
    }
}
