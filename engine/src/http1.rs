//! HTTP/1.1 proxying: one task per client connection, its requests served in order, each on
//! an upstream connection from the shard's [`Pool`].
//!
//! Per request: read and check the head (limits, framing — anything ambiguous is answered
//! 400 and the connection closed, nothing forwarded) → pick the endpoint (the original
//! destination, or the request's authority when the client addressed the proxy itself) →
//! take an idle connection or connect → write the rewritten head and stream the body →
//! read the response head (forwarding 1xx) → stream the response body → pool the upstream
//! connection if it is clean → next request, if both sides keep the connection alive.
//! Upgrades (101) and CONNECT (2xx) turn both connections into a tunnel.
//!
//! Failures are answered, not dropped: 502 when the upstream cannot be reached or fails
//! before its response head, 504 on connect timeout, 400/431 for bad requests, each with
//! `l5d-proxy-error`.

mod pipe;
pub mod reply;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use ringlink_protocols::http1::{
    self, keep_alive, parse_request, parse_response, request_body, response_body, strip_hop_by_hop,
    BodyKind, Limits, RequestHead, ResponseHead, Version,
};

use crate::balance::Pick;
use crate::dst::{Dst, DstCache, DstError};
use crate::metrics::{
    is_grpc, parse_grpc_status, proxy_error_label, PeerMetrics, RequestMetrics, RouteCache,
};
use crate::pool::Upstream;
use crate::rt::{Reader, Runtime, Stream};
use crate::shard::{ConnEntry, Direction, ShardState};
use pipe::{BodyError, Chunks, HeadError, Inbox, Outbox};
use reply::{error_response, ProxyError};

/// How long a closing connection keeps reading (and dropping) what the client still sends.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// How much it reads at most before closing anyway.
pub const LINGER_MAX_BYTES: usize = 1 << 20;

/// Endpoints a balanced request tries to connect to before it is answered with the error.
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

/// How long the rest of a head may take once its first byte arrived (slow-loris bound).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

// === types ===

/// Where a connection's requests go.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    /// Every request to this address (the original destination).
    Fixed(SocketAddr),
    /// Each request to its own authority (`l5d-dst-override`, absolute-form URI or `Host`):
    /// the client addressed the proxy itself, as a forward proxy.
    ByAuthority,
}

/// The target of a balanced request before its endpoint is picked.
fn unpicked(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// The upstream connection detection left behind, for the first request to its address.
pub enum Eager<R: Runtime> {
    None,
    /// Opened and unused.
    Open(Upstream<R>),
    /// Connecting failed: the first request to this address is answered with the error.
    Failed(SocketAddr, ProxyError),
}

/// One client connection being served.
struct Session<'a, R: Runtime> {
    state: &'a Rc<ShardState>,
    direction: Direction,
    route: Route,
    rx: <R::Stream as Stream>::Reader,
    tx: <R::Stream as Stream>::Writer,
    fd: RawFd,
    buf: Vec<u8>,
    metrics: &'a PeerMetrics,
    entry: &'a ConnEntry,
    limits: Limits,
    /// The HTTP metrics of the connection's last route, and of the request being served.
    routes: RouteCache,
    request: RequestMetrics,
    /// The destination of the connection's last balanced request.
    dst: DstCache,
}

/// How an exchange ended, for the session loop.
enum Next {
    /// Serve the next request.
    Continue,
    /// Close the client connection gracefully.
    Close,
    /// Close the client connection with a reset (a response could not be completed).
    Abort(io::Error),
}

/// What a request turned out to need, decided from its head.
struct Plan {
    /// Where the request goes; for a balanced request, set once an endpoint is picked.
    target: SocketAddr,
    /// The balancer the request goes through, when its authority names a destination.
    dst: Option<Rc<Dst>>,
    body: BodyKind,
    client_version: Version,
    client_keep_alive: bool,
    expect_continue: bool,
    /// `Upgrade` protocol that is forwarded (never `h2c`).
    upgrade: bool,
    connect: bool,
    /// A HEAD request: answers carry no body.
    head_request: bool,
    /// A request that may be sent again on a new connection if a reused one was closed
    /// before it answered.
    retryable: bool,
}

// === functions ===

/// Serves HTTP/1 requests on `client` until either side ends the connection. `first` holds
/// the bytes detection read; `eager` is the connection detection opened to the original
/// destination, used for the first request that goes there.
#[allow(clippy::too_many_arguments)]
pub async fn serve<R: Runtime>(
    state: &Rc<ShardState>,
    direction: Direction,
    route: Route,
    client: R::Stream,
    first: Vec<u8>,
    eager: Eager<R>,
    metrics: &PeerMetrics,
    entry: &ConnEntry,
) -> Option<io::Error> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
    // Detection read these from the client.
    metrics.read_bytes.inc_by(first.len() as u64);
    let (rx, tx) = client.into_split();
    let mut session = Session::<R> {
        state,
        direction,
        route,
        rx,
        tx,
        fd,
        buf: first,
        metrics,
        entry,
        limits: Limits::default(),
        routes: RouteCache::default(),
        request: RequestMetrics::default(),
        dst: DstCache::default(),
    };
    let mut eager = eager;
    let error = loop {
        let next = session.exchange(&mut eager).await;
        if matches!(next, Next::Abort(_)) {
            session.request.error("io");
        }
        session.request.end();
        match next {
            Next::Continue => continue,
            Next::Close => {
                session.lingering_close().await;
                break None;
            }
            Next::Abort(error) => {
                let _ = crate::sys::set_linger_zero(session.fd);
                break Some(error);
            }
        }
    };
    drop(eager);
    let Session { rx, tx, .. } = session;
    drop(R::Stream::reunite(rx, tx));
    error
}

impl<R: Runtime> Session<'_, R> {
    /// Closes gracefully: FIN first, then whatever the client still sends (an unread
    /// request body, after an error response) is read and dropped for a short while, so
    /// that closing with unread data does not turn into a reset that destroys the response
    /// before the client has read it.
    async fn lingering_close(&mut self) {
        let _ = crate::sys::shutdown(self.fd, std::net::Shutdown::Write);
        let deadline = std::time::Instant::now() + LINGER_TIMEOUT;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(crate::forward::SMALL_BUFFER);
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let rx = &mut self.rx;
            let read = futures_lite::future::or(async { Some(rx.read(buf).await) }, async {
                R::sleep(remaining).await;
                None
            })
            .await;
            match read {
                Some((Ok(n), returned)) if n > 0 => {
                    self.metrics.read_bytes.inc_by(n as u64);
                    discarded += n;
                    buf = returned;
                }
                _ => break,
            }
        }
    }

    /// One request and its response.
    async fn exchange(&mut self, eager: &mut Eager<R>) -> Next {
        // Idle (closed at once by a drain) only if no pipelined request is buffered.
        self.entry.set_idle(self.buf.is_empty());
        let head = {
            let mut inbox = Inbox {
                rx: &mut self.rx,
                buf: &mut self.buf,
                read_bytes: &self.metrics.read_bytes,
            };
            inbox
                .read_head::<R, _>(&self.limits, Some(HEAD_TIMEOUT), parse_request)
                .await
        };
        self.entry.set_idle(false);
        let mut head = match head {
            Ok(Some(head)) => head,
            Ok(None) => return Next::Close,
            Err(HeadError::Io(error)) => return Next::Abort(error),
            Err(HeadError::Timeout) => {
                return self.refuse(None, ProxyError::RequestTimeout).await;
            }
            Err(HeadError::Parse(error)) => {
                tracing::info!(%error, "Invalid request");
                let status = error.status();
                return self
                    .refuse(None, ProxyError::BadRequest(status, error.to_string()))
                    .await;
            }
        };
        let mut plan = match self.plan(&mut head).await {
            Ok(plan) => plan,
            Err(error) => return self.refuse(head.authority(), error).await,
        };
        let mut pick = match self.pick(&mut plan).await {
            Ok(pick) => pick,
            Err(error) => {
                self.start_metrics(&head, &plan, None);
                return self.fail(&plan, error).await;
            }
        };
        tracing::debug!(
            method = %head.method,
            target = %head.target,
            dst.addr = %plan.target,
            "Request"
        );
        if plan.connect && matches!(self.route, Route::ByAuthority) {
            self.start_metrics(&head, &plan, pick.as_ref());
            return self.connect_tunnel(plan.target).await;
        }

        let mut attempt = 0;
        let mut connects = 0;
        loop {
            attempt += 1;
            let mut conn = match self.upstream(plan.target, eager, attempt > 1).await {
                Ok(conn) => conn,
                Err(error) => {
                    // A balanced request that could not connect tries another endpoint (the
                    // failed one backs off), within the failfast budget.
                    if let (Some(failed), Some(dst)) = (&pick, &plan.dst) {
                        if matches!(
                            error,
                            ProxyError::Connect(_) | ProxyError::ConnectTimeout(_)
                        ) {
                            failed.connect_failed();
                            connects += 1;
                            if connects < MAX_CONNECT_ATTEMPTS {
                                match dst.pick::<R>(self.state).await {
                                    Ok(next) => {
                                        plan.target = next.addr();
                                        pick = Some(next);
                                        attempt = 0;
                                        continue;
                                    }
                                    Err(error) => {
                                        let error = error.into_proxy_error();
                                        self.start_metrics(&head, &plan, None);
                                        return self.fail(&plan, error).await;
                                    }
                                }
                            }
                        }
                    }
                    self.start_metrics(&head, &plan, pick.as_ref());
                    return self.fail(&plan, error).await;
                }
            };
            if let Some(pick) = &pick {
                pick.connected();
            }
            self.start_metrics(&head, &plan, pick.as_ref());
            self.entry.set_upstream(conn.fd);
            let sent = std::time::Instant::now();
            let dispatched = self.dispatch(&head, &plan, &mut conn).await;
            self.entry.set_upstream(-1);
            if let (Some(pick), Some(at)) = (&pick, self.request.head_at()) {
                pick.observe_rtt(at.saturating_duration_since(sent));
            }
            match dispatched {
                Dispatched::Done(next) => return next,
                Dispatched::Reusable(next) => {
                    self.state.pool::<R>().put(conn);
                    return next;
                }
                Dispatched::Retry(error) if plan.retryable && conn.reused && attempt == 1 => {
                    tracing::debug!(%error, "Reused connection was closed; retrying");
                    conn.error = Some(error);
                }
                Dispatched::Retry(error) => {
                    let failed = ProxyError::Upstream(error.to_string());
                    conn.error = Some(error);
                    return self.fail(&plan, failed).await;
                }
            }
        }
    }

    /// Checks the request and rewrites its head for the upstream hop.
    async fn plan(&mut self, head: &mut RequestHead) -> Result<Plan, ProxyError> {
        let bad = |why: &str| ProxyError::BadRequest(400, why.to_string());
        let body = request_body(head).map_err(|e| ProxyError::BadRequest(400, e.to_string()))?;
        let connect = head.method == "CONNECT";
        if connect && parse_authority(&head.target).is_none() {
            return Err(bad("CONNECT target must be host:port"));
        }
        if head.version == Version::Http11 && head.headers.count("host") != 1 && !connect {
            return Err(bad("HTTP/1.1 request needs exactly one Host header"));
        }
        let (target, dst) = match self.route {
            Route::Fixed(addr) => {
                let name = crate::dst::suffix_name(self.state, head.authority());
                (addr, name.map(|name| self.dst(&name)))
            }
            Route::ByAuthority => {
                let authority = head
                    .headers
                    .get("l5d-dst-override")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_string)
                    .or_else(|| head.authority().map(str::to_string))
                    .ok_or_else(|| bad("no authority to route by"))?;
                let (host, port) = parse_authority(&authority)
                    .ok_or_else(|| bad("authority is not host[:port]"))?;
                match crate::dst::name_of(&host, port) {
                    Some(name) => (unpicked(port), Some(self.dst(&name))),
                    None => (
                        crate::dns::resolve::<R>(self.state, &host, port)
                            .await
                            .map_err(ProxyError::Resolve)?,
                        None,
                    ),
                }
            }
        };
        let client_version = head.version;
        let client_keep_alive = keep_alive(head.version, &head.headers) && !connect;
        let upgrade_to = upgrade_protocol(head);
        // `Expect: 100-continue` is answered by the proxy itself, as nginx does: a server
        // that never sends 100 (HTTP/1.0-era servers) would otherwise leave the client
        // waiting and the proxy waiting for a response head.
        let expect_continue = head.headers.has_token("expect", "100-continue")
            && body != BodyKind::Empty
            && head.version == Version::Http11;
        if head.headers.has_token("expect", "100-continue") {
            head.headers.remove("expect");
        }
        strip_hop_by_hop(&mut head.headers);
        if let Some(protocol) = &upgrade_to {
            head.headers.append("connection", "upgrade");
            head.headers.append("upgrade", protocol.as_bytes());
        }
        if body == BodyKind::Chunked {
            head.headers.append("transfer-encoding", "chunked");
        }
        if matches!(self.route, Route::ByAuthority) {
            head.headers.remove("l5d-dst-override");
            if head.is_absolute_form() {
                // RFC 9112 §3.2.2: the target's authority replaces Host.
                if let Some(authority) = head.authority().map(str::to_string) {
                    head.headers.set("host", authority);
                }
                head.to_origin_form();
            }
        }
        if head.headers.get("host").is_none() {
            // A balanced request's endpoint is not known yet: its destination name is.
            let host = dst
                .as_ref()
                .map_or_else(|| target.to_string(), |dst| dst.name.to_string());
            head.headers.append("host", host);
        }
        head.version = Version::Http11;
        let idempotent = matches!(
            head.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        Ok(Plan {
            target,
            dst,
            body,
            client_version,
            client_keep_alive,
            expect_continue,
            upgrade: upgrade_to.is_some(),
            connect,
            head_request: head.method == "HEAD",
            retryable: idempotent && body == BodyKind::Empty && upgrade_to.is_none(),
        })
    }

    fn dst(&mut self, name: &str) -> Rc<Dst> {
        self.dst.get::<R>(self.state, self.direction, name)
    }

    /// Picks the endpoint of a balanced request (setting `plan.target`), or falls back to
    /// the original destination (or the authority's DNS addresses) when discovery says so.
    async fn pick(&mut self, plan: &mut Plan) -> Result<Option<Pick>, ProxyError> {
        let Some(dst) = plan.dst.clone() else {
            return Ok(None);
        };
        match dst.pick::<R>(self.state).await {
            Ok(pick) => {
                plan.target = pick.addr();
                Ok(Some(pick))
            }
            Err(DstError::Fallback) => {
                plan.dst = None;
                if let Route::ByAuthority = self.route {
                    plan.target = crate::dst::fallback_addr::<R>(self.state, &dst.name)
                        .await
                        .map_err(ProxyError::Resolve)?;
                }
                Ok(None)
            }
            Err(error) => Err(error.into_proxy_error()),
        }
    }

    /// Counts the request in the HTTP metrics, once.
    fn start_metrics(&mut self, head: &RequestHead, plan: &Plan, pick: Option<&Pick>) {
        if self.request.is_started() {
            return;
        }
        let target = (plan.dst.is_none() || pick.is_some()).then_some(plan.target);
        let labels = pick.map(Pick::labels);
        self.request = self.state.http_metrics.start(
            &mut self.routes,
            self.direction,
            head.authority(),
            target,
            labels.as_ref(),
        );
    }

    /// An idle pooled connection to `target`, the eager one, or a new one.
    async fn upstream(
        &mut self,
        target: SocketAddr,
        eager: &mut Eager<R>,
        fresh: bool,
    ) -> Result<Upstream<R>, ProxyError> {
        if !fresh {
            let matches = match eager {
                Eager::Open(conn) => conn.addr == target,
                Eager::Failed(addr, _) => *addr == target,
                Eager::None => false,
            };
            if matches {
                match std::mem::replace(eager, Eager::None) {
                    Eager::Open(conn) => return Ok(conn),
                    Eager::Failed(_, error) => return Err(error),
                    Eager::None => {}
                }
            }
            if let Some(conn) = self.state.pool::<R>().take(target) {
                return Ok(conn);
            }
        }
        match Upstream::<R>::connect(self.state, self.direction, target).await {
            Ok(conn) => Ok(conn),
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                tracing::info!(dst.addr = %target, "Connect timed out");
                Err(ProxyError::ConnectTimeout(self.connect_timeout()))
            }
            Err(error) => {
                tracing::info!(dst.addr = %target, %error, "Connect failed");
                Err(ProxyError::Connect(error))
            }
        }
    }

    fn connect_timeout(&self) -> Duration {
        self.state.settings.connect_timeout(self.direction)
    }

    /// Sends the request on `conn` and relays the response.
    async fn dispatch(
        &mut self,
        head: &RequestHead,
        plan: &Plan,
        conn: &mut Upstream<R>,
    ) -> Dispatched {
        let up_metrics = conn.metrics();
        let (up_read, up_write) = (
            up_metrics.read_bytes.clone(),
            up_metrics.write_bytes.clone(),
        );
        let mut up_buf = std::mem::take(&mut conn.buf);
        up_buf.clear();
        if plan.expect_continue && self.buf.is_empty() {
            let mut client = Outbox {
                tx: &mut self.tx,
                write_bytes: &self.metrics.write_bytes,
            };
            if let (Err(error), _) = client
                .write(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                .await
            {
                self.request.error("client");
                return Dispatched::Done(Next::Abort(error));
            }
        }
        let mut out = Vec::with_capacity(512);
        http1::encode_request(head, &mut out);
        let mut body_sent = plan.body == BodyKind::Empty;
        // A body that has already arrived whole goes out with the head, in one write.
        if !body_sent {
            if let Some(n) = pipe::buffered_body_len(plan.body, &self.buf, &self.limits) {
                out.extend(self.buf.drain(..n));
                body_sent = true;
            }
        }
        let mut outbox = Outbox {
            tx: &mut conn.tx,
            write_bytes: &up_write,
        };
        let (written, returned) = outbox.write(out).await;
        drop(returned);
        if let Err(error) = written {
            return Dispatched::Retry(error);
        }
        let relayed = if body_sent || plan.upgrade || plan.connect {
            if !body_sent {
                match self.send_body(plan, &mut conn.tx, &up_write).await {
                    Ok(()) => body_sent = true,
                    Err(BodyError::Dst(error)) => {
                        // The server may have answered early (e.g. 413) and closed: relay
                        // its response if there is one; the client's body is then unread.
                        tracing::debug!(%error, "Upstream stopped reading the request body");
                    }
                    Err(error) => return Dispatched::Done(self.body_failed(error)),
                }
            }
            relay_response::<R>(
                self.state,
                &self.limits,
                head,
                plan,
                body_sent,
                &mut self.tx,
                &self.metrics.write_bytes,
                &mut self.request,
                &mut conn.rx,
                &mut up_buf,
                &up_read,
            )
            .await
        } else {
            // The request body streams while the response is relayed, so a server that
            // answers before it has read the whole body (full duplex, early errors) never
            // waits on the proxy.
            let (state, limits, metrics) = (self.state, &self.limits, self.metrics);
            let mut inbox = Inbox {
                rx: &mut self.rx,
                buf: &mut self.buf,
                read_bytes: &metrics.read_bytes,
            };
            let mut outbox = Outbox {
                tx: &mut conn.tx,
                write_bytes: &up_write,
            };
            let send = pipe::body(
                state,
                plan.body,
                Chunks::Keep,
                limits,
                &mut inbox,
                &mut outbox,
            );
            let relay = relay_response::<R>(
                state,
                limits,
                head,
                plan,
                true,
                &mut self.tx,
                &metrics.write_bytes,
                &mut self.request,
                &mut conn.rx,
                &mut up_buf,
                &up_read,
            );
            let (sent, relayed) = race_body_and_response(send, relay).await;
            match sent {
                Some(Ok(())) => body_sent = true,
                Some(Err(BodyError::Dst(error))) => {
                    tracing::debug!(%error, "Upstream stopped reading the request body");
                }
                Some(Err(error)) => return Dispatched::Done(self.body_failed(error)),
                // The response is over but the body is not: both connections close.
                None => tracing::debug!("Response ended before the request body"),
            }
            let Some(relayed) = relayed else {
                // Only a failed body abandons the response, and that returned above.
                return Dispatched::Done(Next::Abort(io::ErrorKind::Interrupted.into()));
            };
            relayed
        };
        match relayed {
            Relayed::Done {
                client_keep_alive,
                server_keep_alive,
            } => {
                let next = if client_keep_alive && body_sent {
                    Next::Continue
                } else {
                    Next::Close
                };
                if server_keep_alive && body_sent && up_buf.is_empty() {
                    conn.buf = up_buf;
                    Dispatched::Reusable(next)
                } else {
                    Dispatched::Done(next)
                }
            }
            Relayed::Tunnel => Dispatched::Done(self.tunnel(conn, up_buf).await),
            Relayed::Retry(error) => Dispatched::Retry(error),
            Relayed::Invalid(why) => {
                conn.error = Some(io::Error::other(why.clone()));
                Dispatched::Done(self.fail(plan, ProxyError::Upstream(why)).await)
            }
            Relayed::UpstreamFailed(error) => {
                conn.error = Some(io::Error::new(error.kind(), error.to_string()));
                Dispatched::Done(Next::Abort(error))
            }
            Relayed::Abort(error) => Dispatched::Done(Next::Abort(error)),
        }
    }

    /// Streams the request body from the client to the upstream connection.
    async fn send_body(
        &mut self,
        plan: &Plan,
        tx: &mut <R::Stream as Stream>::Writer,
        write_bytes: &prometheus::IntCounter,
    ) -> Result<(), BodyError> {
        let mut inbox = Inbox {
            rx: &mut self.rx,
            buf: &mut self.buf,
            read_bytes: &self.metrics.read_bytes,
        };
        let mut outbox = Outbox { tx, write_bytes };
        pipe::body(
            self.state,
            plan.body,
            Chunks::Keep,
            &self.limits,
            &mut inbox,
            &mut outbox,
        )
        .await
    }

    fn body_failed(&mut self, error: BodyError) -> Next {
        self.request.error("client");
        match error {
            BodyError::Framing(error) => {
                tracing::info!(%error, "Invalid request body");
                Next::Abort(io::Error::other(error.to_string()))
            }
            BodyError::Src(error) | BodyError::Dst(error) => Next::Abort(error),
        }
    }

    /// Answers a request the proxy refuses, then closes the connection.
    async fn refuse(&mut self, authority: Option<&str>, error: ProxyError) -> Next {
        tracing::info!(status = error.status(), error = %error.message(), "Refused request");
        let target = match self.route {
            Route::Fixed(addr) => Some(addr),
            Route::ByAuthority => None,
        };
        self.request = self.state.http_metrics.start(
            &mut self.routes,
            self.direction,
            authority,
            target,
            None,
        );
        self.request.fail(error.status(), proxy_error_label(&error));
        let out = error_response(&error, true, false);
        let mut client = Outbox {
            tx: &mut self.tx,
            write_bytes: &self.metrics.write_bytes,
        };
        let _ = client.write(out).await;
        Next::Close
    }

    /// Answers a request that could not be forwarded. The connection stays open only if the
    /// request had no body left unread.
    async fn fail(&mut self, plan: &Plan, error: ProxyError) -> Next {
        tracing::info!(status = error.status(), error = %error.message(), "Request failed");
        self.request.fail(error.status(), proxy_error_label(&error));
        let keep =
            plan.client_keep_alive && plan.body == BodyKind::Empty && !self.state.is_draining();
        let out = error_response(&error, !keep, plan.head_request);
        let mut client = Outbox {
            tx: &mut self.tx,
            write_bytes: &self.metrics.write_bytes,
        };
        match client.write(out).await {
            (Ok(()), _) if keep => Next::Continue,
            (Ok(()), _) => Next::Close,
            (Err(error), _) => Next::Abort(error),
        }
    }

    /// CONNECT addressed to the proxy: connect to the authority, answer 200, tunnel.
    async fn connect_tunnel(&mut self, target: SocketAddr) -> Next {
        let plan_close = Plan {
            target,
            dst: None,
            body: BodyKind::Empty,
            client_version: Version::Http11,
            client_keep_alive: false,
            expect_continue: false,
            upgrade: false,
            connect: true,
            head_request: false,
            retryable: false,
        };
        let mut conn = match Upstream::<R>::connect(self.state, self.direction, target).await {
            Ok(conn) => conn,
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                return self
                    .fail(
                        &plan_close,
                        ProxyError::ConnectTimeout(self.connect_timeout()),
                    )
                    .await
            }
            Err(error) => return self.fail(&plan_close, ProxyError::Connect(error)).await,
        };
        self.entry.set_upstream(conn.fd);
        let mut client = Outbox {
            tx: &mut self.tx,
            write_bytes: &self.metrics.write_bytes,
        };
        self.request.response_head(200, false);
        if let (Err(error), _) = client.write(b"HTTP/1.1 200 OK\r\n\r\n".to_vec()).await {
            self.request.error("client");
            return Next::Abort(error);
        }
        self.request.end();
        self.tunnel(&mut conn, Vec::new()).await
    }

    /// Copies bytes both ways until both sides are done, starting with what each side
    /// already sent past its head.
    async fn tunnel(&mut self, conn: &mut Upstream<R>, up_buf: Vec<u8>) -> Next {
        let up_metrics = conn.metrics();
        let (up_read, up_write) = (
            up_metrics.read_bytes.clone(),
            up_metrics.write_bytes.clone(),
        );
        if !self.buf.is_empty() {
            let mut outbox = Outbox {
                tx: &mut conn.tx,
                write_bytes: &up_write,
            };
            if let (Err(error), _) = outbox.write(std::mem::take(&mut self.buf)).await {
                return Next::Abort(error);
            }
        }
        if !up_buf.is_empty() {
            let mut client = Outbox {
                tx: &mut self.tx,
                write_bytes: &self.metrics.write_bytes,
            };
            if let (Err(error), _) = client.write(up_buf).await {
                return Next::Abort(error);
            }
        }
        let shut = [std::cell::Cell::new(false), std::cell::Cell::new(false)];
        let (sent, received) = crate::join::join(
            crate::forward::copy(
                self.state,
                (&mut self.rx, &mut conn.tx),
                [self.fd, conn.fd],
                [&self.metrics.read_bytes, &up_write],
                [&shut[0], &shut[1]],
            ),
            crate::forward::copy(
                self.state,
                (&mut conn.rx, &mut self.tx),
                [conn.fd, self.fd],
                [&up_read, &self.metrics.write_bytes],
                [&shut[1], &shut[0]],
            ),
        )
        .await;
        tracing::debug!(?sent, ?received, "Tunnel closed");
        Next::Close
    }
}

/// The outcome of sending a request on one connection.
enum Dispatched {
    /// The exchange is over; the upstream connection is closed.
    Done(Next),
    /// The exchange is over and left the upstream connection clean, ready for another.
    Reusable(Next),
    /// The connection failed before any response byte: the request may be retried.
    Retry(io::Error),
}

/// Runs the request body `send` and the response `relay` together. The body is abandoned
/// (`None`) if it is still pending once the response is over; the response is abandoned
/// (`None`) if the body fails on the client's side, since a server waiting for the rest of
/// the body would never answer.
async fn race_body_and_response<S, V>(
    send: S,
    relay: V,
) -> (Option<Result<(), BodyError>>, Option<Relayed>)
where
    S: Future<Output = Result<(), BodyError>>,
    V: Future<Output = Relayed>,
{
    let mut send = std::pin::pin!(send);
    let mut relay = std::pin::pin!(relay);
    let mut sent = None;
    std::future::poll_fn(|cx| {
        if sent.is_none() {
            if let Poll::Ready(result) = send.as_mut().poll(cx) {
                if matches!(result, Err(BodyError::Src(_) | BodyError::Framing(_))) {
                    return Poll::Ready((Some(result), None));
                }
                sent = Some(result);
            }
        }
        match relay.as_mut().poll(cx) {
            Poll::Ready(relayed) => {
                // One more chance for a body whose last write just completed.
                if sent.is_none() {
                    if let Poll::Ready(result) = send.as_mut().poll(cx) {
                        sent = Some(result);
                    }
                }
                Poll::Ready((sent.take(), Some(relayed)))
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// What relaying a response ended with.
enum Relayed {
    /// Relayed whole; whether each side's connection can carry another exchange.
    Done {
        client_keep_alive: bool,
        server_keep_alive: bool,
    },
    /// The response head was relayed and both connections are now a tunnel.
    Tunnel,
    /// The upstream connection failed before any response byte (the request may be
    /// retried).
    Retry(io::Error),
    /// The upstream sent something that is not a valid response, before anything was
    /// relayed: answer 502.
    Invalid(String),
    /// The upstream failed during the response body.
    UpstreamFailed(io::Error),
    /// The exchange broke (client gone, upstream gone after the head).
    Abort(io::Error),
}

/// Reads the response to `head` from the upstream connection and relays it to the client:
/// interim responses, the head (rewritten for the client's hop) and the body.
/// `body_sent` says whether the request body is known to be complete (it may still be
/// streaming, concurrently, when it is not).
#[allow(clippy::too_many_arguments)]
async fn relay_response<R: Runtime>(
    state: &Rc<ShardState>,
    limits: &Limits,
    head: &RequestHead,
    plan: &Plan,
    body_sent: bool,
    client_tx: &mut <R::Stream as Stream>::Writer,
    client_write: &prometheus::IntCounter,
    request: &mut RequestMetrics,
    up_rx: &mut <R::Stream as Stream>::Reader,
    up_buf: &mut Vec<u8>,
    up_read: &prometheus::IntCounter,
) -> Relayed {
    // The response head, relaying interim (1xx) responses.
    let mut response_started = false;
    let response = loop {
        let mut inbox = Inbox {
            rx: &mut *up_rx,
            buf: &mut *up_buf,
            read_bytes: up_read,
        };
        let read = inbox
            .read_head::<R, ResponseHead>(limits, None, parse_response)
            .await;
        let mut res = match read {
            Ok(Some(res)) => res,
            Ok(None) if !response_started => {
                return Relayed::Retry(io::ErrorKind::UnexpectedEof.into())
            }
            Ok(None) => {
                request.error("upstream");
                return Relayed::Abort(io::ErrorKind::UnexpectedEof.into());
            }
            Err(HeadError::Io(error)) if !response_started => return Relayed::Retry(error),
            Err(HeadError::Io(error)) => {
                request.error("upstream");
                return Relayed::Abort(error);
            }
            Err(HeadError::Timeout) => unreachable!("no response head timeout"),
            Err(HeadError::Parse(error)) => {
                return Relayed::Invalid(format!("invalid response: {error}"));
            }
        };
        response_started = true;
        if res.status == 101 && plan.upgrade {
            break res;
        }
        if (100..200).contains(&res.status) {
            // Interim responses go to HTTP/1.1 clients only.
            if plan.client_version == Version::Http11 {
                res.version = Version::Http11;
                strip_hop_by_hop(&mut res.headers);
                let mut out = Vec::with_capacity(64);
                http1::encode_response(&res, &mut out);
                let mut client = Outbox {
                    tx: &mut *client_tx,
                    write_bytes: client_write,
                };
                if let (Err(error), _) = client.write(out).await {
                    request.error("client");
                    return Relayed::Abort(error);
                }
            }
            continue;
        }
        break res;
    };

    let mut res = response;
    let grpc = is_grpc(res.headers.get("content-type"));
    request.response_head(res.status, grpc);
    if let Some(code) = res.headers.get("grpc-status").and_then(parse_grpc_status) {
        request.grpc_status(code);
    }
    let res_body = match response_body(&head.method, &res) {
        Ok(kind) => kind,
        Err(error) => {
            return Relayed::Invalid(format!("invalid response: {error}"));
        }
    };
    let tunnel =
        (res.status == 101 && plan.upgrade) || (plan.connect && (200..300).contains(&res.status));
    let server_keep_alive =
        keep_alive(res.version, &res.headers) && res_body != BodyKind::UntilClose && !tunnel;
    // Whether the client connection can carry another request after this one.
    let mut client_keep_alive =
        plan.client_keep_alive && body_sent && !state.is_draining() && !tunnel;
    let upgrade_protocol = res.headers.get("upgrade").map(<[u8]>::to_vec);
    strip_hop_by_hop(&mut res.headers);
    res.version = plan.client_version;
    let chunks = match res_body {
        BodyKind::Chunked if plan.client_version == Version::Http11 => {
            res.headers.append("transfer-encoding", "chunked");
            Chunks::Keep
        }
        BodyKind::Chunked => {
            // An HTTP/1.0 client cannot read chunks: send the data, end by closing.
            client_keep_alive = false;
            Chunks::Strip
        }
        BodyKind::UntilClose => {
            client_keep_alive = false;
            Chunks::Keep
        }
        _ => Chunks::Keep,
    };
    if tunnel {
        if let Some(protocol) = upgrade_protocol {
            res.headers.append("connection", "upgrade");
            res.headers.append("upgrade", protocol);
        }
    } else if !client_keep_alive {
        res.headers.append("connection", "close");
    } else if plan.client_version == Version::Http10 {
        res.headers.append("connection", "keep-alive");
    }
    let mut out = Vec::with_capacity(256);
    http1::encode_response(&res, &mut out);
    // A body that has already arrived whole goes out with the head, in one write.
    let mut res_body = res_body;
    if !tunnel && chunks == Chunks::Keep {
        if let Some(n) = pipe::buffered_body_len(res_body, up_buf, limits) {
            out.extend(up_buf.drain(..n));
            res_body = BodyKind::Empty;
        }
    }
    let mut client = Outbox {
        tx: &mut *client_tx,
        write_bytes: client_write,
    };
    if let (Err(error), _) = client.write(out).await {
        request.error("client");
        return Relayed::Abort(error);
    }
    if tunnel {
        request.end();
        return Relayed::Tunnel;
    }
    let mut inbox = Inbox {
        rx: &mut *up_rx,
        buf: &mut *up_buf,
        read_bytes: up_read,
    };
    let relayed = pipe::body(state, res_body, chunks, limits, &mut inbox, &mut client).await;
    match relayed {
        Ok(()) => {}
        Err(BodyError::Dst(error)) => {
            request.error("client");
            return Relayed::Abort(error);
        }
        Err(BodyError::Src(error)) => {
            request.error("upstream");
            tracing::debug!(%error, "Upstream failed during the response body");
            return Relayed::UpstreamFailed(error);
        }
        Err(BodyError::Framing(error)) => {
            request.error("upstream");
            tracing::info!(%error, "Invalid response body");
            return Relayed::Abort(io::Error::other(error.to_string()));
        }
    }
    Relayed::Done {
        client_keep_alive,
        server_keep_alive,
    }
}

/// The protocol an `Upgrade` request asks for, if it is one the proxy tunnels: anything but
/// `h2c` (which is stripped: the upstream hop stays HTTP/1.1).
fn upgrade_protocol(head: &RequestHead) -> Option<String> {
    if !head.headers.has_token("connection", "upgrade") {
        return None;
    }
    let value = std::str::from_utf8(head.headers.get("upgrade")?)
        .ok()?
        .trim();
    if value.is_empty() || value.eq_ignore_ascii_case("h2c") {
        return None;
    }
    Some(value.to_string())
}

/// `host[:port]` (port 80 by default), with IPv6 literals in brackets.
pub fn parse_authority(authority: &str) -> Option<(String, u16)> {
    let authority = authority.trim();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, 80),
        }
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    valid.then(|| (host.to_string(), port))
}
