//! HTTP/1.1 proxying, the client connection's side: one task per client connection, its
//! requests served in order, each on an upstream connection from the shard's pool.
//!
//! Per request: read and check the head (limits, framing — anything ambiguous is answered
//! 400 and the connection closed, nothing forwarded) → route it ([`route`]) → take the
//! connection detection left, an idle pooled one, or connect, trying other endpoints of a
//! balancer on connect failure ([`upstream::connect_balanced`]) → [`exchange`] it on that
//! connection → pool the upstream connection if it is clean → next request, if both sides
//! keep the connection alive. Upgrades (101) and CONNECT (2xx) turn both connections into a
//! tunnel.
//!
//! Failures are answered, not dropped: 502 when the upstream cannot be reached or fails
//! before its response head, 504 on connect timeout, 400/431 for bad requests, each with
//! `l5d-proxy-error`.

pub mod bridge;
mod exchange;
pub mod pipe;
mod upgrade;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderName;
use ringlink_control::policy::inbound::{FnHeaders, ModifyHeader, RequestView};
use ringlink_control::policy::outbound::Retry;
use ringlink_protocols::authority::parse_authority;
use ringlink_protocols::grpc::is_grpc;
use ringlink_protocols::http1::{
    keep_alive, parse_request, request_body, strip_hop_by_hop, upgrade_protocol, BodyKind, Limits,
    RequestHead, Version,
};
use ringlink_protocols::transport_header::SessionProtocol;

use crate::balance::Pick;
use crate::conn::{ConnMeta, Direction, Route};
use crate::ctx::ShardCtx;
use crate::discover::DstCache;
use crate::error::{ErrorSource, ProxyError};
use crate::http::conn::{request_tls, Client, CLIENT_ID};
use crate::http::{authz, respond, route};
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::{Reader, Runtime, Stream};
use crate::slot::Slot;
use crate::telemetry::{
    h1_path_and_query, h1_scheme, H1Headers, PeerMetrics, RequestMetrics, RouteCache, TapView,
};
use crate::upstream::{self, Target, Upstream};
use exchange::Dispatched;
use pipe::{HeadError, Inbox, Outbox};

/// How long a closing connection keeps reading (and dropping) what the client still sends.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// How much it reads at most before closing anyway.
pub const LINGER_MAX_BYTES: usize = 1 << 20;

/// How long the rest of a head may take once its first byte arrived (slow-loris bound).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The read buffer a keep-alive connection waits for its next request with (an allocation
/// small enough for the allocator's per-thread cache).
const IDLE_BUFFER: usize = 1 << 10;

// === types ===

/// The upstream connection detection left behind, for the first request to its address.
pub enum Eager<R: Runtime> {
    None,
    /// Opened (or pooled) and unused. Boxed: the session keeps its `Eager` while it lives,
    /// and an idle connection should not hold an upstream connection's worth of it.
    Open(Box<Upstream<R>>),
    /// Connecting failed: the first request to this address is answered with the error.
    Failed(SocketAddr, ProxyError),
}

/// One client connection being served.
struct Session<'a, R: Runtime> {
    ctx: &'a Rc<ShardCtx<R>>,
    meta: &'a ConnMeta,
    rx: <Transport<R> as Stream>::Reader,
    tx: <Transport<R> as Stream>::Writer,
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
    /// Whether the connection waits for its next request with a buffer that holds most
    /// heads, or with a tiny one (`Session::await_request`).
    hot: bool,
}

/// How an exchange ended, for the session loop: the connection's keep-alive state.
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
    body: BodyKind,
    client_version: Version,
    client_keep_alive: bool,
    expect_continue: bool,
    /// `Upgrade` protocol that is forwarded (never `h2c`).
    upgrade: Option<String>,
    connect: bool,
    /// A HEAD request: answers carry no body.
    head_request: bool,
    /// A request that may be sent again on a new connection if a reused one was closed
    /// before it answered.
    retryable: bool,
    /// An outbound policy route's response header changes.
    response_headers: Vec<ModifyHeader>,
    /// An outbound policy route's retries, for a request that can be sent again: its
    /// policy, the retries left, and its body (arrived whole with the head, within the
    /// policy's `max_request_bytes`).
    retry: Option<Box<RetryPlan>>,
}

/// The retries of one request.
struct RetryPlan {
    policy: Arc<Retry>,
    left: Cell<u32>,
    body: Vec<u8>,
    /// A ServiceProfile's budget, which each retry must fit in.
    budget: Option<Rc<crate::discover::Budget>>,
}

impl RetryPlan {
    /// Whether a response with this status (and `grpc-status`) is tried again: a retry is
    /// left, the policy names it, and the budget (if any) allows one more.
    fn retries(&self, status: u16, grpc_status: Option<u32>) -> bool {
        self.left.get() > 0
            && self.policy.retries(status, grpc_status)
            && self.budget.as_ref().is_none_or(|b| b.try_withdraw())
    }
}

// === functions ===

/// Serves HTTP/1 requests on `client` until either side ends the connection. `eager` is
/// the connection detection left to the original destination, used for the first request
/// that goes there. Returns the error that ended the client connection, if one did.
///
/// A plain function returning the connection's future, not an `async fn`, which would keep
/// its arguments a second time in a state that lives as long as the connection.
pub fn serve<'a, R: Runtime>(
    ctx: &'a Rc<ShardCtx<R>>,
    client: Client<'a, R>,
    eager: Eager<R>,
) -> impl Future<Output = Option<io::Error>> + 'a {
    let Client {
        meta,
        stream,
        first,
        metrics,
        entry,
    } = client;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    // Detection read these from the client.
    metrics.read_bytes.inc_by(first.len() as u64);
    let (rx, tx) = stream.into_split();
    let mut session = Session::<R> {
        ctx,
        meta,
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
        hot: false,
    };
    let mut eager = eager;
    async move {
        let error = loop {
            // Idle between requests, the connection waits here, in its task's own small
            // state; the exchange's (several KiB) exists only while one runs, in a pooled
            // block.
            let next = match session.await_request().await {
                Some(next) => next,
                None => Slot::with(|| session.exchange(&mut eager)).await,
            };
            if matches!(next, Next::Abort(_)) {
                session.request.error("io");
            }
            session.request.end();
            match next {
                Next::Continue => continue,
                Next::Close => {
                    Box::pin(session.lingering_close()).await;
                    break None;
                }
                Next::Abort(error) => {
                    crate::io::reset(session.fd);
                    break Some(error);
                }
            }
        };
        drop(eager);
        let Session { rx, tx, .. } = session;
        drop(Transport::<R>::reunite(rx, tx));
        error
    }
}

// === impl Session ===

impl<R: Runtime> Session<'_, R> {
    /// Closes gracefully: FIN first, then whatever the client still sends (an unread
    /// request body, after an error response) is read and dropped for a short while, so
    /// that closing with unread data does not turn into a reset that destroys the response
    /// before the client has read it.
    async fn lingering_close(&mut self) {
        let _ = crate::sys::shutdown(self.fd, std::net::Shutdown::Write);
        let deadline = Instant::now() + LINGER_TIMEOUT;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(crate::io::SMALL_BUFFER);
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match crate::rt::timeout::<R, _>(remaining, self.rx.read(buf)).await {
                Some((Ok(n), returned)) if n > 0 => {
                    self.metrics.read_bytes.inc_by(n as u64);
                    discarded += n;
                    buf = returned;
                }
                _ => break,
            }
        }
    }

    /// Waits for the first bytes of the next request, unless a pipelined one is buffered:
    /// `Some` with what to do if the client closed or failed instead.
    ///
    /// A connection that has shown it is busy (its last wait was cold, below, and ended with
    /// a request) waits with a small buffer (most heads fit; a longer one grows it), taken
    /// here so that it holds no more. (Waiting for readiness without a buffer would cost a
    /// poll operation per request: 10–15 % more CPU per request.) If it is still idle at
    /// the shard's next park sweep but one (one to two seconds, `Lifecycle::park_idle`), it
    /// parks: the read is withdrawn without losing a byte, the buffer goes back, and the
    /// wait goes on with a [`crate::io::PARKED_BUFFER`] one.
    ///
    /// A cold connection — one that has not been back yet (its first wait), or has just
    /// parked — waits with a [`crate::io::PARKED_BUFFER`] one from the start. The head's next read
    /// makes room for the rest: one read more, once per connection that turns out busy.
    async fn await_request(&mut self) -> Option<Next> {
        if !self.buf.is_empty() {
            return None;
        }
        // Idle: a drain closes the connection at once.
        self.entry.set_idle(true);
        let (read, buf) = if self.hot {
            let mut buf = std::mem::take(&mut self.buf);
            if !(pipe::MIN_FIRST_READ..=IDLE_BUFFER).contains(&buf.capacity()) {
                buf = Vec::with_capacity(IDLE_BUFFER);
            }
            match self
                .rx
                .read_more_unless(buf, self.entry.parked(crate::lifecycle::Side::Client))
                .await
            {
                (Some(read), buf) => (read, buf),
                (None, buf) => {
                    drop(buf);
                    self.hot = false;
                    self.rx
                        .read_more(Vec::with_capacity(crate::io::PARKED_BUFFER))
                        .await
                }
            }
        } else {
            // The exchange's buffer goes before the wait begins.
            self.buf = Vec::new();
            self.hot = true;
            self.rx
                .read_more(Vec::with_capacity(crate::io::PARKED_BUFFER))
                .await
        };
        self.buf = buf;
        self.entry.set_idle(false);
        match read {
            Ok(0) => Some(Next::Close),
            Ok(n) => {
                self.metrics.read_bytes.inc_by(n as u64);
                None
            }
            Err(error) => Some(Next::Abort(error)),
        }
    }

    /// One request and its response.
    async fn exchange(&mut self, eager: &mut Eager<R>) -> Next {
        let head = self.read_head().await;
        let mut head = match head {
            Ok(head) => head,
            Err(next) => return next,
        };
        let plan = match self.plan(&head) {
            Ok(plan) => plan,
            Err(error) => return self.refuse(head.authority(), error).await,
        };
        if self.meta.policy.is_some() {
            match self.authorize(&head) {
                Ok(modify) => {
                    for change in &modify {
                        apply_header_changes(change, &mut head.headers);
                    }
                }
                Err(error) => {
                    let target = self.meta.route.fixed().map(Target::addr);
                    self.start_metrics(&head, target.as_ref());
                    return self.fail(&plan, error).await;
                }
            }
        }
        // Only requests addressed to the proxy itself may say where they go.
        let dst_override = match self.meta.route {
            Route::ByAuthority => head
                .headers
                .get("l5d-dst-override")
                .and_then(|v| std::str::from_utf8(v).ok()),
            _ => None,
        };
        let routed = {
            let headers = FnHeaders(|name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool| {
                head.headers.get_all(name.as_str()).any(pred)
            });
            let request = route::Request {
                view: RequestView {
                    method: &head.method,
                    scheme: None,
                    authority: head.authority(),
                    path_and_query: path_and_query(&head),
                    headers: &headers,
                },
                grpc: head.headers.get("content-type").is_some_and(is_grpc),
                http2: false,
            };
            let (direction, route) = (self.meta.direction, self.meta.route);
            route::route(
                self.ctx,
                direction,
                route,
                &request,
                dst_override,
                &self.dst,
            )
            .await
        };
        let mut target = match routed {
            Ok(target) => target,
            Err(error) if error.source() == ErrorSource::Client => {
                return self.refuse(head.authority(), error).await
            }
            Err(error) => {
                self.start_metrics(&head, None);
                return self.fail(&plan, error).await;
            }
        };
        let mut plan = plan;
        if let Some(policy) = &mut target.policy {
            for change in &policy.request_headers {
                apply_header_changes(change, &mut head.headers);
            }
            plan.response_headers = std::mem::take(&mut policy.response_headers);
            plan.retry = policy.retry.as_ref().and_then(|retry| {
                let body = match plan.body {
                    BodyKind::Empty => Vec::new(),
                    kind => {
                        let n = pipe::buffered_body_len(kind, &self.buf, &self.limits)?;
                        if n > retry.max_request_bytes {
                            return None;
                        }
                        self.buf[..n].to_vec()
                    }
                };
                Some(Box::new(RetryPlan {
                    policy: retry.clone(),
                    left: Cell::new(retry.max_retries),
                    body,
                    budget: policy.budget.clone(),
                }))
            });
        }
        self.rewrite(&mut head, &plan);
        if head.headers.get("host").is_none() {
            // A request without Host (HTTP/1.0) names its destination, or its address.
            let host = target
                .name
                .as_deref()
                .map_or_else(|| target.addr.to_string(), str::to_string);
            head.headers.append("host", host);
        }
        tracing::debug!(
            method = %head.method,
            target = %head.target,
            dst.addr = %target.addr,
            "Request"
        );
        if plan.connect && self.meta.route == Route::ByAuthority {
            self.start_metrics(&head, Some(&target));
            return self.connect_tunnel(&plan, target.addr).await;
        }
        // Between meshed proxies, HTTP/1 travels over HTTP/2 (`l5d-orig-proto`), except
        // what must stay HTTP/1 end to end: upgrades and CONNECT.
        let upgradable = plan.upgrade.is_none() && !plan.connect;
        let upgrade = upgradable && target.pick.as_ref().is_some_and(Pick::h2);
        // An outbound route's timeout bounds the whole exchange (boxed: only such routes
        // pay for the timer's state).
        let limit = target
            .policy
            .as_ref()
            .and_then(|p| route_timeout(&p.timeouts));
        let Some(limit) = limit else {
            if upgrade {
                return self.upgraded(&head, &plan, &mut target).await;
            }
            return self.forward(&head, &plan, &mut target, eager).await;
        };
        let bounded = crate::rt::timeout::<R, _>(
            limit,
            Box::pin(async {
                if upgrade {
                    self.upgraded(&head, &plan, &mut target).await
                } else {
                    self.forward(&head, &plan, &mut target, eager).await
                }
            }),
        )
        .await;
        match bounded {
            Some(next) => next,
            None => {
                self.entry.set_upstream(-1);
                tracing::info!(timeout = ?limit, "Route timeout");
                if self.request.head_at().is_some() {
                    // The response has begun: the client learns of it by the reset.
                    self.request.error("route_timeout");
                    return Next::Abort(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the route's timeout ran out during the response",
                    ));
                }
                self.start_metrics(&head, Some(&target));
                self.fail(&plan, ProxyError::RouteTimeout(limit)).await
            }
        }
    }

    /// Reads the next request head; `Err` with what to do when there is none to serve.
    async fn read_head(&mut self) -> Result<RequestHead, Next> {
        let mut inbox = Inbox {
            rx: &mut self.rx,
            buf: &mut self.buf,
            read_bytes: &self.metrics.read_bytes,
        };
        let read = inbox
            .read_head::<R, _>(&self.limits, Some(HEAD_TIMEOUT), parse_request)
            .await;
        match read {
            Ok(Some(head)) => Ok(head),
            Ok(None) => Err(Next::Close),
            Err(HeadError::Io(error)) => Err(Next::Abort(error)),
            Err(HeadError::Timeout) => Err(self.refuse(None, ProxyError::RequestTimeout).await),
            Err(HeadError::Parse(error)) => {
                tracing::info!(%error, "Invalid request");
                let error = ProxyError::bad_request(error.status(), error.to_string());
                Err(self.refuse(None, error).await)
            }
        }
    }

    /// Sends the request to `target`'s endpoint (another one of its balancer if connecting
    /// fails), once more on a new connection if a reused one was closed before it answered.
    async fn forward(
        &mut self,
        head: &RequestHead,
        plan: &Plan,
        target: &mut Target,
        eager: &mut Eager<R>,
    ) -> Next {
        let mut fresh = false;
        loop {
            let ctx = self.ctx.clone();
            let direction = self.meta.direction;
            let connected =
                upstream::connect_balanced::<R, _, _, _>(&ctx.dsts, target, |addr, tls| {
                    let ready = (!fresh)
                        .then(|| ready_upstream(&ctx, eager, addr))
                        .flatten();
                    let ctx = ctx.clone();
                    async move {
                        if let Some(ready) = ready {
                            return ready;
                        }
                        let timeout = ctx.settings.connect_timeout.get(direction);
                        let http1 = Some(SessionProtocol::Http1);
                        let (stream, status) = upstream::connect_endpoint::<R>(
                            (&ctx.identity, &ctx.settings.sockets),
                            direction,
                            addr,
                            tls.as_deref(),
                            http1,
                            timeout,
                        )
                        .await?;
                        Ok(Upstream::new(&ctx.tcp, direction, addr, stream, &status))
                    }
                })
                .await;
            self.start_metrics(head, Some(target));
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(error) => return self.fail(plan, error).await,
            };
            self.entry.set_upstream(conn.fd);
            let sent = Instant::now();
            let per_try = plan.retry.as_ref().and_then(|r| r.policy.timeout);
            let dispatched = match per_try {
                None => self.dispatch(head, plan, &mut conn).await,
                Some(limit) => {
                    let dispatch = Box::pin(self.dispatch(head, plan, &mut conn));
                    match crate::rt::timeout::<R, _>(limit, dispatch).await {
                        Some(dispatched) => dispatched,
                        None => Dispatched::TryTimeout(limit),
                    }
                }
            };
            self.entry.set_upstream(-1);
            if let (Some(pick), Some(at)) = (&target.pick, self.request.head_at()) {
                pick.observe_rtt(at.saturating_duration_since(sent));
            }
            // Failure accrual: a 5xx, or no response, counts against the endpoint.
            let answered = self.request.head_status().is_some_and(|s| s < 500);
            match dispatched {
                Dispatched::Done(next) => {
                    if let Some(pick) = &target.pick {
                        pick.response(answered);
                    }
                    return next;
                }
                Dispatched::Reusable(next) => {
                    if let Some(pick) = &target.pick {
                        pick.response(answered);
                    }
                    self.ctx.pool.put(conn);
                    return next;
                }
                Dispatched::Retry(error) if plan.retryable && conn.reused && !fresh => {
                    tracing::debug!(%error, "Reused connection was closed; retrying");
                    conn.error = Some(error);
                    fresh = true;
                }
                Dispatched::Retry(error) => {
                    if let Some(pick) = &target.pick {
                        pick.response(false);
                    }
                    let failed = ProxyError::upstream(error.to_string());
                    conn.error = Some(error);
                    return self.fail(plan, failed).await;
                }
                Dispatched::RetryStatus(status) => {
                    if let Some(pick) = &target.pick {
                        pick.response(false);
                    }
                    tracing::debug!(status, "Retrying the request (route policy)");
                    conn.error = Some(io::Error::other("response discarded for a retry"));
                    if let Err(error) = self.next_try(plan, target).await {
                        return self.fail(plan, error).await;
                    }
                    fresh = false;
                }
                Dispatched::TryTimeout(limit) => {
                    if let Some(pick) = &target.pick {
                        // It took at least this long: the balancer learns it is slow.
                        pick.observe_rtt(limit);
                        pick.response(false);
                    }
                    conn.error = Some(io::ErrorKind::TimedOut.into());
                    let retryable = self.request.head_at().is_none()
                        && plan.retry.as_ref().is_some_and(|r| {
                            r.left.get() > 0 && r.budget.as_ref().is_none_or(|b| b.try_withdraw())
                        });
                    if self.request.head_at().is_some() {
                        self.request.error("route_timeout");
                        return Next::Abort(io::ErrorKind::TimedOut.into());
                    }
                    if !retryable {
                        return self.fail(plan, ProxyError::RouteTimeout(limit)).await;
                    }
                    tracing::debug!(?limit, "Try timed out; retrying (route policy)");
                    if let Err(error) = self.next_try(plan, target).await {
                        return self.fail(plan, error).await;
                    }
                    fresh = false;
                }
            }
        }
    }

    /// Prepares the next try of a request its route retries: one retry fewer, its body put
    /// back before whatever the client sent after it, the policy's backoff waited, and
    /// another endpoint of the same backend picked.
    async fn next_try(&mut self, plan: &Plan, target: &mut Target) -> Result<(), ProxyError> {
        let retry = plan.retry.as_ref().expect("a request with retries");
        retry.left.set(retry.left.get().saturating_sub(1));
        self.request.retried();
        if !retry.body.is_empty() {
            self.buf.splice(0..0, retry.body.iter().copied());
        }
        let left = retry.left.get();
        upstream::before_retry::<R>(&self.ctx.dsts, &retry.policy, left, target).await
    }

    /// Authorizes the request against the connection's inbound policy (`http::authz`).
    fn authorize(&self, head: &RequestHead) -> Result<Vec<ModifyHeader>, ProxyError> {
        let headers = FnHeaders(|name: &HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool| {
            head.headers.get_all(name.as_str()).any(pred)
        });
        let view = RequestView {
            method: &head.method,
            scheme: None,
            authority: head.authority(),
            path_and_query: path_and_query(head),
            headers: &headers,
        };
        let target = self.meta.route.fixed().unwrap_or(self.meta.local);
        authz::request(self.ctx, self.meta, target, &view)
    }

    /// Checks the request and decides what it needs, from its head as the client sent it.
    fn plan(&self, head: &RequestHead) -> Result<Plan, ProxyError> {
        let bad = |why: &str| ProxyError::bad_request(400, why);
        let body = request_body(head).map_err(|e| ProxyError::bad_request(400, e.to_string()))?;
        let connect = head.method == "CONNECT";
        if connect && parse_authority(&head.target).is_none() {
            return Err(bad("CONNECT target must be host:port"));
        }
        if head.version == Version::Http11 && head.headers.count("host") != 1 && !connect {
            return Err(bad("HTTP/1.1 request needs exactly one Host header"));
        }
        let upgrade = upgrade_protocol(head);
        let idempotent = matches!(
            head.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        Ok(Plan {
            body,
            client_version: head.version,
            client_keep_alive: keep_alive(head.version, &head.headers) && !connect,
            // `Expect: 100-continue` is answered by the proxy itself, as nginx does: a
            // server that never sends 100 (HTTP/1.0-era servers) would otherwise leave the
            // client waiting and the proxy waiting for a response head.
            expect_continue: head.headers.has_token("expect", "100-continue")
                && body != BodyKind::Empty
                && head.version == Version::Http11,
            retryable: idempotent && body == BodyKind::Empty && upgrade.is_none(),
            response_headers: Vec::new(),
            retry: None,
            upgrade,
            connect,
            head_request: head.method == "HEAD",
        })
    }

    /// Rewrites the request's head for the upstream hop.
    fn rewrite(&self, head: &mut RequestHead, plan: &Plan) {
        if head.headers.has_token("expect", "100-continue") {
            head.headers.remove("expect");
        }
        strip_hop_by_hop(&mut head.headers);
        if let Some(protocol) = &plan.upgrade {
            head.headers.append("connection", "upgrade");
            head.headers.append("upgrade", protocol.as_bytes());
        }
        if plan.body == BodyKind::Chunked {
            head.headers.append("transfer-encoding", "chunked");
        }
        if self.meta.route == Route::ByAuthority {
            head.headers.remove("l5d-dst-override");
            if head.is_absolute_form() {
                // RFC 9112 §3.2.2: the target's authority replaces Host.
                if let Some(authority) = head.authority().map(str::to_string) {
                    head.headers.set("host", authority);
                }
                head.to_origin_form();
            }
        }
        if self.meta.direction == Direction::Inbound {
            // The client's verified identity, and never one the client claims.
            head.headers.remove(CLIENT_ID);
            if let Some(id) = self.meta.tls.peer() {
                head.headers.append(CLIENT_ID, id);
            }
        }
        head.version = Version::Http11;
    }

    /// Counts the request in the HTTP metrics, once. A balanced request whose endpoint is
    /// not known (no pick) has no target labels.
    fn start_metrics(&mut self, head: &RequestHead, target: Option<&Target>) {
        if self.request.is_started() || self.request.is_tapped() {
            return;
        }
        let addr = target
            .filter(|t| t.dst.is_none() || t.pick.is_some())
            .map(|t| t.addr);
        let pick = target.and_then(|t| t.pick.as_ref());
        let labels = pick.map(Pick::labels);
        let tls = request_tls(self.ctx, self.meta, pick);
        self.request = self.ctx.http.start_tls(
            &mut self.routes,
            self.meta.direction,
            &tls,
            head.authority(),
            addr,
            labels.as_ref(),
        );
        if let Some(policy) = target.and_then(|t| t.policy.as_deref()) {
            route::record(self.ctx, policy, &mut self.request);
        }
        // Requests with an endpoint are offered to the taps (as linkerd2-proxy taps in its
        // endpoint stacks).
        if let Some(addr) = addr.filter(|_| self.ctx.taps.active().is_some()) {
            let taps = self.ctx.taps.tap(&TapView {
                direction: self.meta.direction,
                client: self.meta.client,
                target: addr,
                client_tls: &self.meta.tls,
                target_tls: &tls,
                target_labels: labels.as_ref(),
                method: &head.method,
                scheme: Some(h1_scheme(&head.target)),
                authority: head.authority(),
                path_and_query: h1_path_and_query(&head.target),
                http2: false,
                headers: &H1Headers(&head.headers),
            });
            self.request.tapped(taps);
        }
    }

    /// Answers a request the proxy refuses, then closes the connection.
    async fn refuse(&mut self, authority: Option<&str>, error: ProxyError) -> Next {
        tracing::info!(status = error.status(), error = %error.message(), "Refused request");
        let tls = request_tls(self.ctx, self.meta, None);
        self.request = self.ctx.http.start_tls(
            &mut self.routes,
            self.meta.direction,
            &tls,
            authority,
            self.meta.route.fixed(),
            None,
        );
        self.request.fail(error.status(), error.label());
        let mut client = Outbox {
            tx: &mut self.tx,
            write_bytes: &self.metrics.write_bytes,
        };
        let _ = client.write(respond::h1(&error, true, false)).await;
        Next::Close
    }

    /// Answers a request that could not be forwarded. The connection stays open only if the
    /// request had no body left unread.
    async fn fail(&mut self, plan: &Plan, error: ProxyError) -> Next {
        tracing::info!(status = error.status(), error = %error.message(), "Request failed");
        self.request.fail(error.status(), error.label());
        let keep =
            plan.client_keep_alive && plan.body == BodyKind::Empty && !self.ctx.life.is_draining();
        let out = respond::h1(&error, !keep, plan.head_request);
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
}

/// The time an outbound route gives a request: its `request` timeout, else its `response`
/// timeout (both bound the whole exchange here).
pub(crate) fn route_timeout(
    timeouts: &ringlink_control::policy::outbound::Timeouts,
) -> Option<Duration> {
    match (timeouts.request, timeouts.response) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The request's target in origin form (`/path?query`); for an absolute-form target
/// (`scheme://authority/path?query`), the part from the first `/` after the authority.
fn path_and_query(head: &RequestHead) -> &str {
    if head.is_absolute_form() {
        let rest = head.target.split_once("://").map_or("", |(_, rest)| rest);
        rest.find('/').map_or("/", |at| &rest[at..])
    } else {
        head.target.as_str()
    }
}

/// A route's request header modifier, on an HTTP/1 head: added headers go last, a set one
/// replaces every value of its name, a removed one loses them all.
fn apply_header_changes(change: &ModifyHeader, headers: &mut ringlink_protocols::http1::Headers) {
    for (name, value) in &change.add {
        headers.append(name.as_str(), value.as_bytes());
    }
    for (name, value) in &change.set {
        headers.set(name.as_str(), value.as_bytes());
    }
    for name in &change.remove {
        headers.remove(name.as_str());
    }
}

/// The connection a request to `addr` can use without connecting: the one detection left
/// (or its failure), else an idle pooled one.
fn ready_upstream<R: Runtime>(
    ctx: &ShardCtx<R>,
    eager: &mut Eager<R>,
    addr: SocketAddr,
) -> Option<Result<Upstream<R>, ProxyError>> {
    let matches = match eager {
        Eager::Open(conn) => conn.addr == addr,
        Eager::Failed(failed, _) => *failed == addr,
        Eager::None => false,
    };
    if matches {
        match std::mem::replace(eager, Eager::None) {
            Eager::Open(conn) => return Some(Ok(*conn)),
            Eager::Failed(_, error) => return Some(Err(error)),
            Eager::None => {}
        }
    }
    ctx.pool.take(addr).map(Ok)
}
