//! One HTTP/1 request on one upstream connection, the client side of the proxy: write the
//! rewritten head, stream the body (concurrently with the response, so servers that answer
//! early or full-duplex never wait on the proxy), read the response head (relaying 1xx),
//! stream the response body, and say whether each connection can carry another exchange.
//! Upgrades (101) and CONNECT (2xx) become tunnels.

use std::future::Future;

use futures_lite::future::or;
use std::io;
use std::net::SocketAddr;
use std::task::Poll;

use prometheus::IntCounter;
use ringlink_protocols::grpc::{is_grpc, parse_grpc_status};
use ringlink_protocols::http1::{
    self, keep_alive, parse_response, response_body, strip_hop_by_hop, BodyKind, Limits,
    RequestHead, ResponseHead, Version,
};

use super::pipe::{self, BodyError, Chunks, HeadError, Inbox, Outbox};
use super::{Next, Plan, Session};
use crate::ctx::ShardCtx;
use crate::error::ProxyError;
use crate::io::Transport;
use crate::rt::{Runtime, Stream};
use crate::telemetry::{H1Headers, RequestMetrics};
use crate::upstream::{self, Upstream};

// === types ===

/// The outcome of sending a request on one connection.
pub(super) enum Dispatched {
    /// The exchange is over; the upstream connection is closed.
    Done(Next),
    /// The exchange is over and left the upstream connection clean, ready for another.
    Reusable(Next),
    /// The connection failed before any response byte: the request may be retried.
    Retry(io::Error),
    /// The response's status is one its route retries (nothing was relayed; the upstream
    /// connection is closed).
    RetryStatus(u16),
    /// The route's per-try timeout ran out.
    TryTimeout(std::time::Duration),
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
    /// The client closed while it waited for the response.
    Abandoned,
    /// The response's status is one the route retries: nothing was relayed.
    RetryStatus(u16),
}

/// The client's side of a response being relayed: where it is written, and its metrics.
struct Downstream<'a, W> {
    tx: &'a mut W,
    write_bytes: &'a IntCounter,
    request: &'a mut RequestMetrics,
}

type Writer<R> = <Transport<R> as Stream>::Writer;
type Reader<R> = <Transport<R> as Stream>::Reader;

// === impl Session ===

impl<R: Runtime> Session<'_, R> {
    /// Sends the request on `conn` and relays the response.
    pub(super) async fn dispatch(
        &mut self,
        head: &RequestHead,
        plan: &Plan,
        conn: &mut Upstream<R>,
    ) -> Dispatched {
        let up_write = conn.metrics().write_bytes.clone();
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
        if let (Err(error), _) = outbox.write(out).await {
            return Dispatched::Retry(error);
        }
        let relayed = if body_sent || plan.upgrade.is_some() || plan.connect {
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
            let up_read = conn.metrics().read_bytes.clone();
            let entry = self.entry;
            let mut down = Downstream {
                tx: &mut self.tx,
                write_bytes: &self.metrics.write_bytes,
                request: &mut self.request,
            };
            let mut up = Inbox {
                rx: &mut conn.rx,
                buf: &mut up_buf,
                read_bytes: &up_read,
            };
            let relay = relay_response(
                self.ctx,
                &self.limits,
                head,
                plan,
                body_sent,
                &mut down,
                &mut up,
            );
            // A client that closes while it waits abandons the exchange (its upstream
            // connection is closed, not pooled).
            let abandoned = async {
                entry.abandoned().await;
                Relayed::Abandoned
            };
            let relayed = or(relay, abandoned).await;
            if matches!(relayed, Relayed::Abandoned) {
                down.request.error("client");
                tracing::debug!("The client closed before the response was relayed");
            }
            relayed
        } else {
            match self.body_with_response(head, plan, conn, &mut up_buf).await {
                Ok((relayed, sent)) => {
                    body_sent = sent;
                    relayed
                }
                Err(next) => return Dispatched::Done(next),
            }
        };
        self.finish(plan, conn, relayed, body_sent, up_buf).await
    }

    /// Streams the request body while the response is relayed, so a server that answers
    /// before it has read the whole body (full duplex, early errors) never waits on the
    /// proxy. Returns the relayed response and whether the body was sent whole.
    async fn body_with_response(
        &mut self,
        head: &RequestHead,
        plan: &Plan,
        conn: &mut Upstream<R>,
        up_buf: &mut Vec<u8>,
    ) -> Result<(Relayed, bool), Next> {
        let (up_read, up_write) = {
            let metrics = conn.metrics();
            (metrics.read_bytes.clone(), metrics.write_bytes.clone())
        };
        let (ctx, limits, metrics) = (self.ctx, &self.limits, self.metrics);
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
            &ctx.buffers,
            plan.body,
            Chunks::Keep,
            limits,
            &mut inbox,
            &mut outbox,
        );
        let mut down = Downstream {
            tx: &mut self.tx,
            write_bytes: &metrics.write_bytes,
            request: &mut self.request,
        };
        let mut up = Inbox {
            rx: &mut conn.rx,
            buf: up_buf,
            read_bytes: &up_read,
        };
        let relay = relay_response(ctx, limits, head, plan, true, &mut down, &mut up);
        let (sent, relayed) = race_body_and_response(send, relay).await;
        let mut body_sent = false;
        match sent {
            Some(Ok(())) => body_sent = true,
            Some(Err(BodyError::Dst(error))) => {
                tracing::debug!(%error, "Upstream stopped reading the request body");
            }
            Some(Err(error)) => return Err(self.body_failed(error)),
            // The response is over but the body is not: both connections close.
            None => tracing::debug!("Response ended before the request body"),
        }
        match relayed {
            Some(relayed) => Ok((relayed, body_sent)),
            // Only a failed body abandons the response, and that returned above.
            None => Err(Next::Abort(io::ErrorKind::Interrupted.into())),
        }
    }

    /// What the exchange leaves behind, once the response was relayed (or failed).
    async fn finish(
        &mut self,
        plan: &Plan,
        conn: &mut Upstream<R>,
        relayed: Relayed,
        body_sent: bool,
        up_buf: Vec<u8>,
    ) -> Dispatched {
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
            Relayed::RetryStatus(status) => Dispatched::RetryStatus(status),
            Relayed::Invalid(why) => {
                conn.error = Some(io::Error::other(why.clone()));
                Dispatched::Done(self.fail(plan, ProxyError::upstream(why)).await)
            }
            Relayed::UpstreamFailed(error) => {
                // The upstream's error closes the upstream's series; the client is reset by
                // the proxy, which is not the client failing.
                conn.error = Some(error);
                Dispatched::Done(Next::Abort(io::ErrorKind::Interrupted.into()))
            }
            Relayed::Abort(error) => Dispatched::Done(Next::Abort(error)),
            Relayed::Abandoned => {
                Dispatched::Done(Next::Abort(io::ErrorKind::ConnectionAborted.into()))
            }
        }
    }

    /// Streams the request body from the client to the upstream connection.
    async fn send_body(
        &mut self,
        plan: &Plan,
        tx: &mut Writer<R>,
        write_bytes: &IntCounter,
    ) -> Result<(), BodyError> {
        let mut inbox = Inbox {
            rx: &mut self.rx,
            buf: &mut self.buf,
            read_bytes: &self.metrics.read_bytes,
        };
        let mut outbox = Outbox { tx, write_bytes };
        pipe::body(
            &self.ctx.buffers,
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

    /// CONNECT addressed to the proxy: connect to the authority, answer 200, tunnel.
    pub(super) async fn connect_tunnel(&mut self, plan: &Plan, target: SocketAddr) -> Next {
        let direction = self.meta.direction;
        let timeout = self.ctx.settings.connect_timeout.get(direction);
        let dial = (&self.ctx.settings.sockets, direction);
        let mut conn = match upstream::connect::<R>(target, timeout, dial).await {
            Ok(stream) => {
                let plaintext = self.ctx.tcp.plaintext(direction);
                Upstream::<R>::new(&self.ctx.tcp, direction, target, stream, plaintext)
            }
            Err(error) => return self.fail(plan, error).await,
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
        let (up_read, up_write) = {
            let metrics = conn.metrics();
            (metrics.read_bytes.clone(), metrics.write_bytes.clone())
        };
        if !self.buf.is_empty() {
            let mut outbox = Outbox {
                tx: &mut conn.tx,
                write_bytes: &up_write,
            };
            if let (Err(error), _) = outbox.write(std::mem::take(&mut self.buf)).await {
                conn.error = Some(error);
                return Next::Abort(io::ErrorKind::Interrupted.into());
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
        let closed = crate::io::duplex(
            &self.ctx.buffers,
            self.entry,
            crate::io::End {
                rx: &mut self.rx,
                tx: &mut self.tx,
                fd: self.fd,
                read_bytes: &self.metrics.read_bytes,
                write_bytes: &self.metrics.write_bytes,
            },
            crate::io::End {
                rx: &mut conn.rx,
                tx: &mut conn.tx,
                fd: conn.fd,
                read_bytes: &up_read,
                write_bytes: &up_write,
            },
        )
        .await;
        conn.error = closed.upstream;
        match closed.client {
            Some(error) => Next::Abort(error),
            None => Next::Close,
        }
    }
}

// === functions ===

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

/// Reads the final response head to `plan`'s request, relaying interim (1xx) responses to
/// HTTP/1.1 clients.
async fn read_final_head<R: Runtime>(
    limits: &Limits,
    plan: &Plan,
    down: &mut Downstream<'_, Writer<R>>,
    up: &mut Inbox<'_, Reader<R>>,
) -> Result<ResponseHead, Relayed> {
    let mut started = false;
    loop {
        let read = up
            .read_head::<R, ResponseHead>(limits, None, parse_response)
            .await;
        let mut res = match read {
            Ok(Some(res)) => res,
            Ok(None) if !started => {
                return Err(Relayed::Retry(io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(None) => {
                down.request.error("upstream");
                return Err(Relayed::Abort(io::ErrorKind::UnexpectedEof.into()));
            }
            Err(HeadError::Io(error)) if !started => return Err(Relayed::Retry(error)),
            Err(HeadError::Io(error)) => {
                down.request.error("upstream");
                return Err(Relayed::Abort(error));
            }
            // No head timeout was given: a read that never ends is bounded by the peer.
            Err(HeadError::Timeout) => {
                return Err(Relayed::Invalid("response head timed out".into()))
            }
            Err(HeadError::Parse(error)) => {
                return Err(Relayed::Invalid(format!("invalid response: {error}")));
            }
        };
        started = true;
        if (res.status == 101 && plan.upgrade.is_some()) || !(100..200).contains(&res.status) {
            return Ok(res);
        }
        // Interim responses go to HTTP/1.1 clients only.
        if plan.client_version == Version::Http11 {
            res.version = Version::Http11;
            strip_hop_by_hop(&mut res.headers);
            let mut out = Vec::with_capacity(64);
            http1::encode_response(&res, &mut out);
            let mut client = Outbox {
                tx: &mut *down.tx,
                write_bytes: down.write_bytes,
            };
            if let (Err(error), _) = client.write(out).await {
                down.request.error("client");
                return Err(Relayed::Abort(error));
            }
        }
    }
}

/// Reads the response to `head` from the upstream connection and relays it to the client:
/// interim responses, the head (rewritten for the client's hop) and the body.
/// `body_sent` says whether the request body is known to be complete (it may still be
/// streaming, concurrently, when it is not).
async fn relay_response<R: Runtime>(
    ctx: &ShardCtx<R>,
    limits: &Limits,
    head: &RequestHead,
    plan: &Plan,
    body_sent: bool,
    down: &mut Downstream<'_, Writer<R>>,
    up: &mut Inbox<'_, Reader<R>>,
) -> Relayed {
    let mut res = match read_final_head::<R>(limits, plan, down, up).await {
        Ok(res) => res,
        Err(relayed) => return relayed,
    };
    let grpc = res.headers.get("content-type").is_some_and(is_grpc);
    if let Some(retry) = &plan.retry {
        let grpc_status = res.headers.get("grpc-status").and_then(parse_grpc_status);
        if retry.retries(res.status, grpc_status) {
            return Relayed::RetryStatus(res.status);
        }
    }
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
    let res_body = match response_body(&head.method, &res) {
        Ok(kind) => kind,
        Err(error) => return Relayed::Invalid(format!("invalid response: {error}")),
    };
    let tunnel = (res.status == 101 && plan.upgrade.is_some())
        || (plan.connect && (200..300).contains(&res.status));
    let server_keep_alive =
        keep_alive(res.version, &res.headers) && res_body != BodyKind::UntilClose && !tunnel;
    // Whether the client connection can carry another request after this one.
    let mut client_keep_alive =
        plan.client_keep_alive && body_sent && !ctx.life.is_draining() && !tunnel;
    let upgrade_protocol = res.headers.get("upgrade").map(<[u8]>::to_vec);
    strip_hop_by_hop(&mut res.headers);
    for change in &plan.response_headers {
        super::apply_header_changes(change, &mut res.headers);
    }
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
        if let Some(n) = pipe::buffered_body_len(res_body, up.buf, limits) {
            out.extend(up.buf.drain(..n));
            res_body = BodyKind::Empty;
            down.request.tap_bytes(n);
        }
    }
    // The taps count the body as written to the client (with its chunk framing, if any).
    let written_before_body = match down.request.is_tapped() {
        true => down.write_bytes.get() + out.len() as u64,
        false => 0,
    };
    let mut client = Outbox {
        tx: &mut *down.tx,
        write_bytes: down.write_bytes,
    };
    if let (Err(error), _) = client.write(out).await {
        down.request.error("client");
        return Relayed::Abort(error);
    }
    if tunnel {
        down.request.end();
        return Relayed::Tunnel;
    }
    let piped = pipe::body(&ctx.buffers, res_body, chunks, limits, up, &mut client).await;
    if down.request.is_tapped() {
        let body = down.write_bytes.get().saturating_sub(written_before_body);
        down.request.tap_bytes(body as usize);
    }
    match piped {
        Ok(()) => Relayed::Done {
            client_keep_alive,
            server_keep_alive,
        },
        Err(BodyError::Dst(error)) => {
            down.request.error("client");
            Relayed::Abort(error)
        }
        Err(BodyError::Src(error)) => {
            down.request.error("upstream");
            tracing::debug!(%error, "Upstream failed during the response body");
            Relayed::UpstreamFailed(error)
        }
        Err(BodyError::Framing(error)) => {
            down.request.error("upstream");
            tracing::info!(%error, "Invalid response body");
            Relayed::UpstreamFailed(io::Error::other(error.to_string()))
        }
    }
}
