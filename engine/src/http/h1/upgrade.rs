//! HTTP/1 requests carried over HTTP/2 to a peer proxy (`l5d-orig-proto`), as
//! linkerd2-proxy's `orig_proto::Upgrade` sends them: when discovery's protocol hint says
//! the endpoint's proxy takes HTTP/2 (every meshed pod), an HTTP/1 request that is neither
//! an `Upgrade` nor a `CONNECT` leaves on the shard's shared h2 connection to that endpoint
//! (`upstream::h2::H2Pool`) with `l5d-orig-proto: HTTP/1.1` (or `HTTP/1.0`, with
//! `; absolute-form` when the client used it). The peer turns it back into HTTP/1 for its
//! application and echoes the header, which is removed from the response here.
//!
//! The request body streams onto the h2 stream while the response is relayed (a server may
//! answer before it has read the body); the response body is relayed length-delimited as
//! the server declared it, else chunked (HTTP/1.1 clients, with the h2 trailers as the
//! chunked trailer section) or delimited by closing (HTTP/1.0 clients).

use std::io;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::or;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Request};
use ringlink_protocols::grpc::{is_grpc, parse_grpc_status};
use ringlink_protocols::http1::{self, BodyKind, Headers, RequestHead, ResponseHead, Version};

use super::bridge;
use super::pipe::{BodyError, Inbox, Outbox};
use super::{Next, Plan, Session};
use crate::error::ProxyError;
use crate::http::conn::dial_h2;
use crate::rt::Runtime;
use crate::telemetry::{H1Headers, RequestMetrics};
use crate::upstream::{self, h2::H2Key, Target};

/// The header naming the protocol an upgraded request was sent with.
pub const ORIG_PROTO: &str = "l5d-orig-proto";

/// Request headers that are HTTP/1 connection framing and never go into an h2 request.
const CONNECTION_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

// === types ===

/// How relaying an upgraded response ended.
enum Relayed {
    /// Relayed whole; whether the client connection can carry another request.
    Done { client_keep_alive: bool },
    /// The stream failed before its response head: answer the client with the error.
    Failed(ProxyError),
    /// The exchange broke after the head was relayed (or the client went away).
    Abort(io::Error),
    /// The response's status is one the route retries: nothing was relayed.
    Retry(u16),
}

/// The client's side of the response: where it is written, and the request's metrics.
struct Downstream<'a, W> {
    outbox: Outbox<'a, W>,
    request: &'a mut RequestMetrics,
}

// === impl Session ===

impl<R: Runtime> Session<'_, R> {
    /// Sends the request to `target`'s endpoint over the shard's shared h2 connection to it
    /// (another endpoint of its balancer if connecting fails) and relays the response.
    pub(super) async fn upgraded(
        &mut self,
        head: &RequestHead,
        plan: &Plan,
        target: &mut Target,
    ) -> Next {
        loop {
            let relayed = self.upgraded_once(head, plan, target).await;
            // Failure accrual: a 5xx, or no response, counts against the endpoint.
            if let Some(pick) = &target.pick {
                let answered = self.request.head_status().is_some_and(|s| s < 500);
                pick.response(answered && !matches!(relayed, Ok((_, Relayed::Retry(_)))));
            }
            let (sent_body, relayed) = match relayed {
                Ok(relayed) => relayed,
                Err(next) => return next,
            };
            return match relayed {
                Relayed::Done { client_keep_alive } if client_keep_alive && sent_body => {
                    Next::Continue
                }
                Relayed::Done { .. } => Next::Close,
                Relayed::Failed(error) => {
                    if sent_body {
                        self.fail(plan, error).await
                    } else {
                        // The client's body is unread: answer, then close.
                        let _ = self.fail(plan, error).await;
                        Next::Close
                    }
                }
                Relayed::Abort(error) => Next::Abort(error),
                Relayed::Retry(status) => {
                    tracing::debug!(status, "Retrying the request (route policy)");
                    if let Err(error) = self.next_try(plan, target).await {
                        return self.fail(plan, error).await;
                    }
                    continue;
                }
            };
        }
    }

    /// One try of [`Session::upgraded`]: `Err` with what to do when it ended before a
    /// response could be relayed.
    async fn upgraded_once(
        &mut self,
        head: &RequestHead,
        plan: &Plan,
        target: &mut Target,
    ) -> Result<(bool, Relayed), Next> {
        let ctx = self.ctx.clone();
        let direction = self.meta.direction;
        let connected = upstream::connect_balanced::<R, _, _, _>(&ctx.dsts, target, |addr, tls| {
            let ctx = ctx.clone();
            async move {
                let key = H2Key {
                    direction,
                    addr,
                    tls: tls.clone(),
                };
                ctx.h2
                    .get(&key, || dial_h2(&ctx, direction, addr, tls))
                    .await
            }
        })
        .await;
        self.start_metrics(head, Some(target));
        // The lease is held for the exchange: it counts against the connection's streams.
        let (mut send, _lease) = match connected {
            Ok(connected) => connected,
            Err(error) => return Err(self.fail(plan, error).await),
        };
        let request = match h2_request(head, plan.client_version) {
            Ok(request) => request,
            Err(error) => return Err(self.refuse(head.authority(), error).await),
        };
        let ends = matches!(plan.body, BodyKind::Empty | BodyKind::Length(0));
        let sent = Instant::now();
        let (response, body_tx) = match send.send_request(request, ends) {
            Ok(pair) => pair,
            Err(error) => {
                let error = ProxyError::upstream(format!("HTTP/2 request failed: {error}"));
                return Err(self.fail(plan, error).await);
            }
        };
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
                return Err(Next::Abort(error));
            }
        }
        let relayed = self.exchange_upgraded(plan, ends, body_tx, response).await;
        if let (Some(pick), Some(at)) = (&target.pick, self.request.head_at()) {
            pick.observe_rtt(at.saturating_duration_since(sent));
        }
        Ok(relayed)
    }

    /// Streams the request body (unless the request `ends` with its head) while the
    /// response is relayed. Returns whether the body was sent whole, and the relay's end.
    async fn exchange_upgraded(
        &mut self,
        plan: &Plan,
        ends: bool,
        mut body_tx: SendStream<Bytes>,
        response: ResponseFuture,
    ) -> (bool, Relayed) {
        let (ctx, limits, metrics) = (self.ctx, &self.limits, self.metrics);
        let draining = ctx.life.is_draining();
        let mut inbox = Inbox {
            rx: &mut self.rx,
            buf: &mut self.buf,
            read_bytes: &metrics.read_bytes,
        };
        let send = async {
            if ends {
                return Ok(());
            }
            let sent = bridge::h1_to_h2(&mut inbox, plan.body, limits, &mut body_tx).await;
            if sent.is_err() {
                body_tx.send_reset(h2::Reason::CANCEL);
            }
            sent.map(drop)
        };
        let mut down = Downstream {
            outbox: Outbox {
                tx: &mut self.tx,
                write_bytes: &metrics.write_bytes,
            },
            request: &mut self.request,
        };
        let relay = relay(plan, draining, response, &mut down);
        // A client that closes while it waits abandons the exchange (the stream is reset).
        let entry = self.entry;
        let relay = or(relay, async {
            entry.abandoned().await;
            tracing::debug!("The client closed before the response was relayed");
            Relayed::Abort(io::ErrorKind::ConnectionAborted.into())
        });
        let (sent, relayed) = bridge::race(send, relay).await;
        match (sent, relayed) {
            (Some(Err(error)), None) => {
                self.request.error("client");
                let error = match error {
                    BodyError::Framing(error) => {
                        tracing::info!(%error, "Invalid request body");
                        io::Error::new(io::ErrorKind::InvalidData, error.to_string())
                    }
                    BodyError::Src(error) | BodyError::Dst(error) => error,
                };
                (false, Relayed::Abort(error))
            }
            (sent, Some(relayed)) => {
                if let Some(Err(error)) = &sent {
                    tracing::debug!(?error, "Upstream stream stopped taking the request body");
                }
                (matches!(sent, Some(Ok(()))), relayed)
            }
            (_, None) => (false, Relayed::Abort(io::ErrorKind::Interrupted.into())),
        }
    }
}

// === functions ===

/// The h2 request an HTTP/1 request becomes: its method, `http://authority` and path (the
/// whole target when the client sent absolute-form), its end-to-end headers, and
/// `l5d-orig-proto` naming the client's `version`.
fn h2_request(head: &RequestHead, version: Version) -> Result<Request<()>, ProxyError> {
    let bad = |why: &str| ProxyError::bad_request(400, why);
    let absolute = head.is_absolute_form();
    let uri = if absolute {
        http::Uri::try_from(head.target.as_str()).map_err(|_| bad("invalid request target"))?
    } else {
        let authority = head
            .headers
            .get("host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| bad("no authority for the upgraded request"))?;
        let path = if head.target.starts_with('/') {
            head.target.as_str()
        } else {
            "/"
        };
        http::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| bad("invalid authority or path"))?
    };
    let method =
        http::Method::from_bytes(head.method.as_bytes()).map_err(|_| bad("invalid method"))?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    for header in head.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        if CONNECTION_HEADERS.contains(&name.as_str()) || name == ORIG_PROTO {
            continue;
        }
        // `te` may only say `trailers` in HTTP/2.
        if name == "te" && !header.value.eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&header.value),
        ) else {
            return Err(bad("header not valid in HTTP/2"));
        };
        headers.append(name, value);
    }
    let orig = match (version, absolute) {
        (Version::Http10, false) => "HTTP/1.0",
        (Version::Http10, true) => "HTTP/1.0; absolute-form",
        (_, false) => "HTTP/1.1",
        (_, true) => "HTTP/1.1; absolute-form",
    };
    headers.insert(ORIG_PROTO, HeaderValue::from_static(orig));
    Ok(request)
}

/// Waits for the response and relays it to the client as HTTP/1.
async fn relay<W: crate::rt::Writer>(
    plan: &Plan,
    draining: bool,
    response: ResponseFuture,
    down: &mut Downstream<'_, W>,
) -> Relayed {
    let response = match response.await {
        Ok(response) => response,
        Err(error) => {
            let why = match error.reason() {
                Some(reason) => format!("upgraded request failed with HTTP/2 reset: {reason:?}"),
                None => format!("upgraded request failed: {error}"),
            };
            return Relayed::Failed(ProxyError::upstream(why));
        }
    };
    if let Some(retry) = &plan.retry {
        let grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| parse_grpc_status(v.as_bytes()));
        if retry.retries(response.status().as_u16(), grpc_status) {
            return Relayed::Retry(response.status().as_u16());
        }
    }
    let (parts, mut body) = response.into_parts();
    let (mut res, kind) = response_head(plan, parts, body.is_end_stream());
    for change in &plan.response_headers {
        super::apply_header_changes(change, &mut res.headers);
    }
    let grpc = res.headers.get("content-type").is_some_and(is_grpc);
    down.request.response_head(res.status, grpc);
    let head_grpc_status = res.headers.get("grpc-status").and_then(parse_grpc_status);
    if down.request.is_tapped() {
        let headers = H1Headers(&res.headers);
        down.request
            .tap_response(res.status, false, &headers, head_grpc_status);
    }
    if let Some(code) = head_grpc_status {
        down.request.grpc_status(code);
    }
    let mut client_keep_alive = plan.client_keep_alive && !draining && kind != BodyKind::UntilClose;
    let chunked = kind == BodyKind::Chunked;
    if chunked {
        res.headers.append("transfer-encoding", "chunked");
    }
    if !client_keep_alive {
        res.headers.append("connection", "close");
    } else if plan.client_version == Version::Http10 {
        res.headers.append("connection", "keep-alive");
    }
    let mut out = Vec::with_capacity(256);
    http1::encode_response(&res, &mut out);
    if let (Err(error), _) = down.outbox.write(out).await {
        down.request.error("client");
        return Relayed::Abort(error);
    }
    if kind == BodyKind::Empty {
        if !body.is_end_stream() {
            // A body the client must not get (HEAD, 204, 304): let the stream go.
            drop(body);
        }
        return Relayed::Done { client_keep_alive };
    }
    match relay_body(down, &mut body, chunked).await {
        Ok(()) => {}
        Err(BodyError::Dst(error)) => {
            down.request.error("client");
            return Relayed::Abort(error);
        }
        Err(BodyError::Src(error)) => {
            tracing::debug!(%error, "Upstream stream failed during the response body");
            down.request.error("upstream");
            return Relayed::Abort(error);
        }
        Err(BodyError::Framing(error)) => {
            down.request.error("upstream");
            return Relayed::Abort(io::Error::other(error.to_string()));
        }
    }
    if kind == BodyKind::UntilClose {
        client_keep_alive = false;
    }
    Relayed::Done { client_keep_alive }
}

/// Relays the response body, and its trailers' `grpc-status` to the metrics.
async fn relay_body<W: crate::rt::Writer>(
    down: &mut Downstream<'_, W>,
    body: &mut RecvStream,
    chunked: bool,
) -> Result<(), BodyError> {
    let written_before = match down.request.is_tapped() {
        true => down.outbox.write_bytes.get(),
        false => 0,
    };
    let relayed = bridge::h2_to_h1(&mut down.outbox, body, chunked).await;
    if down.request.is_tapped() {
        let body = down.outbox.write_bytes.get().saturating_sub(written_before);
        down.request.tap_bytes(body as usize);
    }
    let trailers = relayed?;
    let code = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| parse_grpc_status(v.as_bytes()));
    if let Some(code) = code {
        down.request.grpc_status(code);
    }
    if let Some(trailers) = &trailers {
        down.request.tap_trailers(trailers);
    }
    Ok(())
}

/// The HTTP/1 head of an h2 response for `plan`'s client, and how its body is framed
/// toward the client.
fn response_head(
    plan: &Plan,
    parts: http::response::Parts,
    ends: bool,
) -> (ResponseHead, BodyKind) {
    let status = parts.status.as_u16();
    let mut headers = Headers::with_capacity(parts.headers.len() + 2);
    let mut length = None;
    for (name, value) in &parts.headers {
        if name.as_str() == ORIG_PROTO {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        headers.append(name.as_str(), value.as_bytes());
    }
    let bodiless = plan.head_request || status == 204 || status == 304 || status < 200;
    let kind = if bodiless {
        BodyKind::Empty
    } else if let Some(n) = length {
        if n == 0 {
            BodyKind::Empty
        } else {
            BodyKind::Length(n)
        }
    } else if ends {
        headers.append("content-length", "0");
        BodyKind::Empty
    } else if plan.client_version == Version::Http11 {
        BodyKind::Chunked
    } else {
        BodyKind::UntilClose
    };
    let head = ResponseHead {
        version: plan.client_version,
        status,
        reason: http1::reason(status).to_string(),
        headers,
    };
    (head, kind)
}
