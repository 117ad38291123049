//! One HTTP/2 stream, forwarded: route it, get (or make) the upstream connection to its
//! target, send it (once more on a new connection if the cached one had closed before
//! anything was sent), then pump the request body up and the response back, trailers and
//! resets included.

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::{or, zip};
use h2::client::ResponseFuture;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use ringlink_control::policy::inbound::{ModifyHeader, RequestView};
use ringlink_protocols::grpc::{is_grpc, parse_grpc_status};

use super::client::Upstreams;
use super::downgrade;
use super::retry;
use super::MAX_EMPTY_DATA_FRAMES;
use crate::balance::{EndpointTls, Pick};
use crate::error::ProxyError;
use crate::http::conn::CLIENT_ID;
use crate::http::{authz, respond, route};
use crate::rt::Runtime;
use crate::telemetry::RequestMetrics;
use crate::upstream::{self, h2::Lease, Target};

/// Looked up by name, not by `&str`: a string is parsed as a header name on every lookup.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// A ready handle on a shared upstream connection and the stream's lease on it.
pub(super) type Leased = (h2::client::SendRequest<Bytes>, Lease);

// === types ===

/// What a stream's response needs from its request.
struct Exchange {
    grpc: bool,
    head_request: bool,
    pick: Option<Pick>,
    sent_at: Instant,
    /// An outbound policy route's response header changes.
    response_headers: Vec<ModifyHeader>,
}

/// How a [`pump`] ended.
#[derive(Default)]
struct Pumped {
    /// `grpc-status` from the trailers.
    grpc_status: Option<u32>,
    /// Which side broke the body, if one did.
    failed: Option<Side>,
    /// DATA bytes moved.
    bytes: u64,
    /// The trailers, when asked to keep a copy (for the taps).
    trailers: Option<http::HeaderMap>,
    /// The sending side's reset code, when it reset the stream.
    reset: Option<Reason>,
}

/// The two ends of a [`pump`].
enum Side {
    /// The side data came from.
    From,
    /// The side data went to.
    To,
}

// === impl Side ===

impl Side {
    /// The `error` label when the request body broke: its source is the client.
    fn request_label(&self) -> &'static str {
        match self {
            Side::From => "client",
            Side::To => "upstream",
        }
    }

    /// The `error` label when the response body broke: its source is the server.
    fn response_label(&self) -> &'static str {
        match self {
            Side::From => "upstream",
            Side::To => "client",
        }
    }
}

// === functions ===

/// Forwards one stream and its response.
pub async fn proxy<R: Runtime>(
    upstreams: Rc<Upstreams<R>>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (mut parts, body) = request.into_parts();
    let grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_grpc(v.as_bytes()));
    // A clone shares the URI's bytes: no copy per request.
    let authority = parts.uri.authority().cloned();
    let authority = authority.as_ref().map(http::uri::Authority::as_str);
    let head_request = parts.method == http::Method::HEAD;
    let meta = &upstreams.meta;
    if meta.policy.is_some() {
        let view = RequestView {
            method: parts.method.as_str(),
            scheme: parts.uri.scheme_str(),
            authority,
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &parts.headers,
        };
        let target = meta.route.fixed().unwrap_or(meta.local);
        match authz::request(&upstreams.ctx, meta, target, &view) {
            Ok(modify) => {
                for change in &modify {
                    change.apply(&mut parts.headers);
                }
            }
            Err(error) => {
                let mut metrics = upstreams.start(authority, Some(target), None);
                return respond::h2(&mut respond, grpc, head_request, &error, &mut metrics);
            }
        }
    }
    // Only requests addressed to the proxy itself may say where they go.
    let dst_override = match meta.route {
        crate::conn::Route::ByAuthority => parts
            .headers
            .remove("l5d-dst-override")
            .and_then(|v| v.to_str().ok().map(str::to_string)),
        _ => None,
    };
    if meta.direction == crate::conn::Direction::Inbound {
        // The client's verified identity, and never one the client claims.
        parts.headers.remove(CLIENT_ID);
        if let Some(id) = meta
            .tls
            .peer()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            parts.headers.insert(CLIENT_ID, id);
        }
    }
    let request = route::Request {
        view: RequestView {
            method: parts.method.as_str(),
            scheme: parts.uri.scheme_str(),
            authority,
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &parts.headers,
        },
        grpc,
        http2: true,
    };
    let (direction, route) = (meta.direction, meta.route);
    let cache = &upstreams.dst;
    let routed = route::route(
        &upstreams.ctx,
        direction,
        route,
        &request,
        dst_override.as_deref(),
        cache,
    )
    .await;
    let mut target = match routed {
        Ok(target) => target,
        Err(error) => {
            let mut metrics = upstreams.start(authority, None, None);
            return respond::h2(&mut respond, grpc, head_request, &error, &mut metrics);
        }
    };
    if let Some(policy) = &target.policy {
        for change in &policy.request_headers {
            change.apply(&mut parts.headers);
        }
    }
    if meta.direction == crate::conn::Direction::Inbound
        && parts.headers.contains_key(downgrade::ORIG_PROTO)
    {
        // HTTP/1 that the peer proxy carried over HTTP/2: HTTP/1 again to the application.
        let mut metrics = upstreams.start(authority, Some(target.addr), None);
        upstreams.tap(&mut metrics, &parts, target.addr, None);
        let exchange = (parts, body);
        let ctx = &upstreams.ctx;
        Box::pin(downgrade::forward(
            ctx,
            target.addr,
            exchange,
            &mut respond,
            &mut metrics,
        ))
        .await;
        metrics.end();
        return;
    }
    // An outbound route's timeout bounds the exchange: before the response head it is
    // answered 504 (gRPC DEADLINE_EXCEEDED), after it the stream is reset.
    let limit = target
        .policy
        .as_ref()
        .and_then(|p| crate::http::h1::route_timeout(&p.timeouts));
    let deadline = limit.map(|limit| (limit, Instant::now() + limit));
    let mut body = body;
    let retry = target.policy.as_ref().and_then(|p| p.retry.clone());
    let mut prefix = None;
    if let Some(retry) = retry {
        // A body that arrives whole within the limit can be sent again (boxed: only
        // retried routes pay for this state).
        let replay = if body.is_end_stream() {
            Ok(retry::Body::Whole(Bytes::new(), None))
        } else {
            Box::pin(retry::read(&mut body, retry.max_request_bytes)).await
        };
        match replay {
            Ok(retry::Body::Whole(data, trailers)) => {
                let exchange = (parts, data, trailers);
                let head = (grpc, head_request, authority);
                let sent = Tries {
                    upstreams: upstreams.clone(),
                    target,
                    retry,
                    deadline,
                };
                return Box::pin(retried(sent, exchange, head, respond)).await;
            }
            Ok(retry::Body::Prefix(data)) => prefix = Some(data),
            Err(_) => {
                // The client broke the request body: nothing to send.
                let mut metrics = upstreams.start(authority, None, None);
                metrics.error("client");
                return;
            }
        }
    }
    let connected = within::<R, _>(deadline, connect::<R>(&upstreams, &mut target)).await;
    let mut metrics = upstreams.start(authority, Some(target.addr), target.pick.as_ref());
    if let Some(policy) = &target.policy {
        route::record(&upstreams.ctx, policy, &mut metrics);
    }
    if connected.is_ok() {
        upstreams.tap(&mut metrics, &parts, target.addr, target.pick.as_ref());
    }
    let (send, tls) = match connected {
        Ok(connected) => connected,
        Err(error) => return respond::h2(&mut respond, grpc, head_request, &error, &mut metrics),
    };
    let end = body.is_end_stream() && prefix.is_none();
    let request = Request::from_parts(parts, ());
    let sent = send_request(&upstreams, (target.addr, tls), send, request, end);
    // Held while the stream lives: it counts against the connection's stream limit.
    let (response, mut up_body, _lease) = match sent {
        Ok(sent) => sent,
        Err(error) => return respond::h2(&mut respond, grpc, head_request, &error, &mut metrics),
    };
    let exchange = Exchange {
        grpc,
        head_request,
        pick: target.pick,
        sent_at: Instant::now(),
        response_headers: target
            .policy
            .map(|p| p.response_headers)
            .unwrap_or_default(),
    };
    let request_side = async {
        if let Some(prefix) = prefix {
            // What was read while the body could still be retried goes first.
            if up_body.send_data(prefix, body.is_end_stream()).is_err() {
                return Pumped {
                    failed: Some(Side::To),
                    ..Pumped::default()
                };
            }
        }
        if !body.is_end_stream() {
            pump(body, up_body, false).await
        } else {
            Pumped::default()
        }
    };
    let response_side = relay_response(&exchange, response, &mut respond, &mut metrics);
    let both = async {
        if end {
            // Nothing to pump: the response alone (a join would cost its wakers).
            drop(request_side);
            (Pumped::default(), response_side.await)
        } else {
            // Each side is the h2 crate's state, cheap to poll (no syscall): a plain
            // zip, not the per-side wakers of `io::join` (made for the relays' sockets).
            zip(request_side, response_side).await
        }
    };
    let (sent, completed) = match deadline {
        None => both.await,
        Some((limit, at)) => {
            let left = at.saturating_duration_since(Instant::now());
            match crate::rt::timeout::<R, _>(left, Box::pin(both)).await {
                Some(done) => done,
                None if metrics.head_at().is_none() => {
                    tracing::info!(timeout = ?limit, "Route timeout");
                    let error = ProxyError::RouteTimeout(limit);
                    return respond::h2(&mut respond, grpc, head_request, &error, &mut metrics);
                }
                None => {
                    // The response has begun: the client learns of it by the reset.
                    tracing::info!(timeout = ?limit, "Route timeout during the response");
                    respond.send_reset(h2::Reason::CANCEL);
                    metrics.error("route_timeout");
                    metrics.end();
                    return;
                }
            }
        }
    };
    match sent.failed {
        // RFC 9113 §8.1: a server that has answered may stop the request body with a
        // reset (NO_ERROR); the exchange still succeeded.
        Some(Side::To) if completed => {}
        Some(side) => metrics.error(side.request_label()),
        None => {}
    }
    metrics.end();
}

/// Where a retried stream's tries go.
struct Tries<R: Runtime> {
    upstreams: Rc<Upstreams<R>>,
    target: Target,
    retry: std::sync::Arc<ringlink_control::policy::outbound::Retry>,
    /// The route's timeout and when it runs out.
    deadline: Option<(std::time::Duration, Instant)>,
}

/// A stream whose route retries it, its body buffered (`retry` module): the tries, then the
/// response relayed.
async fn retried<R: Runtime>(
    Tries {
        upstreams,
        mut target,
        retry,
        deadline,
    }: Tries<R>,
    (parts, data, trailers): (http::request::Parts, Bytes, Option<http::HeaderMap>),
    (grpc, head_request, authority): (bool, bool, Option<&str>),
    mut respond: SendResponse<Bytes>,
) {
    let mut metrics = upstreams.start(authority, Some(target.addr), target.pick.as_ref());
    if let Some(policy) = &target.policy {
        route::record(&upstreams.ctx, policy, &mut metrics);
    }
    upstreams.tap(&mut metrics, &parts, target.addr, target.pick.as_ref());
    let replay = retry::Replay {
        head: &parts,
        data: &data,
        trailers: trailers.as_ref(),
    };
    let budget = target.policy.as_ref().and_then(|p| p.budget.clone());
    let sent = retry::send::<R>(
        &upstreams,
        &mut target,
        (&retry, budget.as_deref()),
        &replay,
        deadline,
        &mut metrics,
    )
    .await;
    // Held while the stream lives: it counts against the connection's stream limit.
    let (response, sent_at, _lease) = match sent {
        Ok(sent) => sent,
        Err(error) => return respond::h2(&mut respond, grpc, head_request, &error, &mut metrics),
    };
    let exchange = Exchange {
        grpc,
        head_request,
        pick: target.pick,
        sent_at,
        response_headers: target
            .policy
            .map(|p| p.response_headers)
            .unwrap_or_default(),
    };
    let relay = relay_response(
        &exchange,
        async { Ok(response) },
        &mut respond,
        &mut metrics,
    );
    let relayed = match deadline {
        None => Some(relay.await),
        Some((_, at)) => {
            let left = at.saturating_duration_since(Instant::now());
            crate::rt::timeout::<R, _>(left, Box::pin(relay)).await
        }
    };
    if relayed.is_none() {
        respond.send_reset(h2::Reason::CANCEL);
        metrics.error("route_timeout");
    }
    metrics.end();
}

/// `future`'s result, or a route timeout once `deadline` (the limit and when it ends)
/// has passed.
pub(super) async fn within<R: Runtime, T>(
    deadline: Option<(std::time::Duration, Instant)>,
    future: impl std::future::Future<Output = Result<T, ProxyError>>,
) -> Result<T, ProxyError> {
    let Some((limit, at)) = deadline else {
        return future.await;
    };
    let left = at.saturating_duration_since(Instant::now());
    match crate::rt::timeout::<R, _>(left, Box::pin(future)).await {
        Some(result) => result,
        None => Err(ProxyError::RouteTimeout(limit)),
    }
}

/// The h2 connection to `target`'s endpoint, trying other endpoints of its balancer when
/// connecting fails; with the mesh TLS it was made with.
pub(super) async fn connect<R: Runtime>(
    upstreams: &Rc<Upstreams<R>>,
    target: &mut Target,
) -> Result<(Leased, Option<Arc<EndpointTls>>), ProxyError> {
    let dsts = upstreams.ctx.dsts.clone();
    upstream::connect_balanced::<R, _, _, _>(&dsts, target, |addr, tls| {
        let upstreams = upstreams.clone();
        async move {
            let send = upstreams.get(addr, tls.clone()).await?;
            Ok((send, tls))
        }
    })
    .await
}

/// Sends the request head on the handle [`connect`] made ready (`Upstreams::get` replaced a
/// shared connection the server had closed: nothing happened on the shard between its
/// readiness check and this send).
pub(super) fn send_request<R: Runtime>(
    upstreams: &Upstreams<R>,
    (target, tls): (std::net::SocketAddr, Option<Arc<EndpointTls>>),
    (mut conn, lease): Leased,
    request: Request<()>,
    end: bool,
) -> Result<(ResponseFuture, SendStream<Bytes>, Lease), ProxyError> {
    match conn.send_request(request, end) {
        Ok((response, body)) => Ok((response, body, lease)),
        Err(error) => {
            // Only a failed connection leaves the shard's pool: a request the h2 crate
            // refuses (a user error) must not make every client reconnect.
            if error.is_io() || error.is_go_away() {
                upstreams.forget(target, tls, &lease);
            }
            Err(upstream_error(&error))
        }
    }
}

/// Waits for the response and relays it, head and body, to the client; whether the whole
/// response reached the client.
async fn relay_response(
    exchange: &Exchange,
    response: impl std::future::Future<Output = Result<Response<RecvStream>, h2::Error>>,
    respond: &mut SendResponse<Bytes>,
    metrics: &mut RequestMetrics,
) -> bool {
    // A client reset while waiting drops the response future, which cancels the upstream
    // stream.
    let waited = or(async { Some(response.await) }, async {
        let reason = poll_fn(|cx| respond.poll_reset(cx)).await;
        tracing::debug!(?reason, "Client reset the stream");
        None
    })
    .await;
    let response = match waited {
        None => {
            metrics.error("client");
            return false;
        }
        Some(Ok(response)) => response,
        Some(Err(error)) => {
            if let Some(pick) = &exchange.pick {
                pick.response(false);
            }
            match error.reason() {
                Some(reason) if error.is_remote() || error.is_reset() => {
                    metrics.error("upstream");
                    metrics.tap_reset(u32::from(reason));
                    respond.send_reset(reason);
                }
                _ => {
                    let error = upstream_error(&error);
                    respond::h2(
                        respond,
                        exchange.grpc,
                        exchange.head_request,
                        &error,
                        metrics,
                    );
                }
            }
            return false;
        }
    };
    let grpc = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_grpc(v.as_bytes()));
    metrics.response_head(response.status().as_u16(), grpc);
    if let Some(pick) = &exchange.pick {
        pick.observe_rtt(exchange.sent_at.elapsed());
        // Failure accrual: a 5xx counts against the endpoint.
        pick.response(response.status().as_u16() < 500);
    }
    let head_grpc_status = response
        .headers()
        .get(GRPC_STATUS)
        .and_then(|v| parse_grpc_status(HeaderValue::as_bytes(v)));
    if metrics.is_tapped() {
        let status = response.status().as_u16();
        metrics.tap_response(status, true, response.headers(), head_grpc_status);
    }
    if let Some(code) = head_grpc_status {
        metrics.grpc_status(code);
    }
    let (mut parts, up_body) = response.into_parts();
    for change in &exchange.response_headers {
        change.apply(&mut parts.headers);
    }
    let end = up_body.is_end_stream();
    match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(down) if !end => {
            let pumped = pump(up_body, down, metrics.is_tapped()).await;
            if let Some(code) = pumped.grpc_status {
                metrics.grpc_status(code);
            }
            metrics.tap_bytes(pumped.bytes as usize);
            if let Some(trailers) = &pumped.trailers {
                metrics.tap_trailers(trailers);
            }
            if let Some(reason) = pumped.reset {
                metrics.tap_reset(u32::from(reason));
            }
            match pumped.failed {
                Some(side) => {
                    metrics.error(side.response_label());
                    false
                }
                None => true,
            }
        }
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, "Client stream gone");
            metrics.error("client");
            false
        }
    }
}

/// The error a stream is answered with when its upstream connection failed. A protocol or
/// frame-size error the proxy itself detected on the upstream's bytes means the upstream
/// does not speak HTTP/2 (an HTTP/1 server, say): the message says so.
pub(super) fn upstream_error(error: &h2::Error) -> ProxyError {
    let garbled = !error.is_remote()
        && matches!(
            error.reason(),
            Some(Reason::PROTOCOL_ERROR | Reason::FRAME_SIZE_ERROR)
        );
    if garbled {
        ProxyError::upstream(format!("the upstream did not speak HTTP/2 ({error})"))
    } else {
        ProxyError::upstream(error.to_string())
    }
}

/// Moves a body (data, then trailers) from `from` to `to`, releasing `from`'s flow-control
/// window only as `to` accepts the data: a slow reader slows the writer.
async fn pump(mut from: RecvStream, mut to: SendStream<Bytes>, keep_trailers: bool) -> Pumped {
    let mut bytes = 0;
    let failed = |side, bytes, reset| Pumped {
        failed: Some(side),
        bytes,
        reset,
        ..Pumped::default()
    };
    let mut empty = 0;
    // What `from` gave when it was asked whether its end was clean.
    let mut peeked = None;
    loop {
        // While waiting for data, a reset from the receiving side ends the pump: dropping
        // `from` then cancels the sending side's stream.
        let next = match peeked.take() {
            Some(next) => Ok(next),
            None => {
                poll_fn(|cx| {
                    if let Poll::Ready(reset) = to.poll_reset(cx) {
                        return Poll::Ready(Err(reset.ok()));
                    }
                    from.poll_data(cx).map(Ok)
                })
                .await
            }
        };
        let next = match next {
            Ok(next) => next,
            Err(reason) => {
                tracing::debug!(?reason, "Stream reset by the receiving side");
                return failed(Side::To, bytes, None);
            }
        };
        match next {
            None => break,
            Some(Ok(data)) if data.is_empty() => {
                empty += 1;
                if empty > MAX_EMPTY_DATA_FRAMES {
                    tracing::info!("Too many empty DATA frames; resetting the stream");
                    to.send_reset(Reason::CANCEL);
                    return failed(Side::From, bytes, None);
                }
            }
            Some(Ok(mut data)) => {
                empty = 0;
                let n = data.len();
                bytes += n as u64;
                // The source's last frame (its END_STREAM came with this data, or on
                // empty DATA frames right after it, as gRPC clients send it; and no
                // trailers follow): the end goes out on the last DATA frame, not on an
                // empty one after it (one frame less per body, for both HTTP/2 peers).
                // Whatever else the look ahead finds (more data, the end of the data
                // before trailers, a reset) is handled by the next turn.
                let last = loop {
                    match poll_fn(|cx| Poll::Ready(from.poll_data(cx))).await {
                        Poll::Ready(None) if from.is_end_stream() => break true,
                        Poll::Ready(Some(Ok(next)))
                            if next.is_empty() && empty < MAX_EMPTY_DATA_FRAMES =>
                        {
                            empty += 1;
                        }
                        Poll::Ready(other) => {
                            peeked = Some(other);
                            break false;
                        }
                        Poll::Pending => break false,
                    }
                };
                while !data.is_empty() {
                    to.reserve_capacity(data.len());
                    match poll_fn(|cx| to.poll_capacity(cx)).await {
                        Some(Ok(0)) => continue,
                        Some(Ok(cap)) => {
                            let chunk = data.split_to(cap.min(data.len()));
                            if to.send_data(chunk, last && data.is_empty()).is_err() {
                                return failed(Side::To, bytes, None);
                            }
                        }
                        // The receiving side reset or went away.
                        _ => return failed(Side::To, bytes, None),
                    }
                }
                let _ = from.flow_control().release_capacity(n);
                if last {
                    return Pumped {
                        bytes,
                        ..Pumped::default()
                    };
                }
            }
            Some(Err(error)) => {
                to.send_reset(error.reason().unwrap_or(Reason::CANCEL));
                return failed(Side::From, bytes, error.reason());
            }
        }
    }
    match poll_fn(|cx| from.poll_trailers(cx)).await {
        Ok(Some(trailers)) => {
            let grpc_status = trailers
                .get(GRPC_STATUS)
                .and_then(|v| parse_grpc_status(v.as_bytes()));
            let kept = keep_trailers.then(|| trailers.clone());
            let _ = to.send_trailers(trailers);
            Pumped {
                grpc_status,
                bytes,
                trailers: kept,
                ..Pumped::default()
            }
        }
        Ok(None) => {
            let _ = to.send_data(Bytes::new(), true);
            Pumped {
                bytes,
                ..Pumped::default()
            }
        }
        Err(error) => {
            to.send_reset(error.reason().unwrap_or(Reason::CANCEL));
            failed(Side::From, bytes, error.reason())
        }
    }
}
