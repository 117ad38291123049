//! HTTP/1 requests that a peer proxy carried over HTTP/2 (`l5d-orig-proto`), turned back
//! into HTTP/1 toward the application, as linkerd2-proxy's `Downgrade` does
//! (`linkerd/proxy/http/src/orig_proto.rs`): a linkerd2-proxy client upgrades HTTP/1 to
//! HTTP/2 for endpoints whose hint is H2 (every meshed pod), so a meshed HTTP/1
//! application behind this proxy receives its requests this way.
//!
//! The header is removed from the request, the request goes to the application as
//! HTTP/1.1 on a pooled (or new) connection, and the response comes back over the stream
//! with `l5d-orig-proto` echoed. Bodies stream both ways under h2 flow control; the request
//! body is sent before the response is read.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderName, HeaderValue, Response};
use ringlink_protocols::http1::{
    self, keep_alive, parse_response, response_body, strip_hop_by_hop, BodyKind, Headers, Limits,
    RequestHead, ResponseHead, Version,
};

use crate::ctx::ShardCtx;
use crate::error::ProxyError;
use crate::http::h1::bridge;
use crate::http::h1::pipe::{BodyError, HeadError, Inbox, Outbox};
use crate::http::respond;
use crate::rt::Runtime;
use crate::telemetry::RequestMetrics;
use crate::upstream::{self, Upstream};

/// The header a proxy that upgraded an HTTP/1 request sets (and the downgrading proxy
/// echoes on the response).
pub const ORIG_PROTO: &str = "l5d-orig-proto";

// === functions ===

/// Sends the upgraded request `parts`/`body` to the application at `target` as HTTP/1.1 and
/// answers `respond` with its response.
pub async fn forward<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    target: SocketAddr,
    (parts, body): (http::request::Parts, RecvStream),
    respond: &mut SendResponse<Bytes>,
    metrics: &mut RequestMetrics,
) {
    let head_request = parts.method == http::Method::HEAD;
    let head = request_head(parts, body.is_end_stream());
    let mut conn = match connection(ctx, target).await {
        Ok(conn) => conn,
        Err(error) => return respond::h2(respond, false, head_request, &error, metrics),
    };
    let exchanged = exchange::<R>(&mut conn, &head, body, respond, metrics).await;
    match exchanged {
        Ok(true) => ctx.pool.put(conn),
        Ok(false) => {}
        Err(Failed::Before(error)) => {
            // The upstream's series keeps the error (and its errno); the answer its message.
            let failure = ProxyError::upstream(error.to_string());
            conn.error = Some(error);
            respond::h2(respond, false, head_request, &failure, metrics);
        }
        Err(Failed::After(error)) => {
            tracing::debug!(%error, "Downgraded exchange broke");
            metrics.error("upstream");
            conn.error = Some(error);
        }
    }
}

/// How an exchange failed: before the response head (answer 502) or after (reset).
enum Failed {
    Before(io::Error),
    After(io::Error),
}

/// The HTTP/1 head of an upgraded request: the version `l5d-orig-proto` names (HTTP/1.1
/// when it names none, or when an HTTP/1.0 request's body has no length), the target in
/// absolute-form when the client sent it so.
fn request_head(parts: http::request::Parts, body_ends: bool) -> RequestHead {
    let mut parts = parts;
    let orig = parts
        .headers
        .remove(ORIG_PROTO)
        .unwrap_or_else(|| HeaderValue::from_static("HTTP/1.1"));
    let absolute = orig
        .to_str()
        .is_ok_and(|v| v.to_ascii_lowercase().contains("absolute-form"));
    let target = if absolute {
        parts.uri.to_string()
    } else {
        parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
    };
    let mut headers = Headers::default();
    for (name, value) in &parts.headers {
        headers.append(name.as_str(), value.as_bytes());
    }
    strip_hop_by_hop(&mut headers);
    if headers.get("host").is_none() {
        if let Some(authority) = parts.uri.authority() {
            headers.append("host", authority.as_str());
        }
    }
    let unsized_body = !body_ends && headers.get("content-length").is_none();
    if unsized_body {
        headers.append("transfer-encoding", "chunked");
    }
    // HTTP/1.0 has no chunks: a body of unknown length goes as HTTP/1.1.
    let version = if orig.as_bytes().starts_with(b"HTTP/1.0") && !unsized_body {
        Version::Http10
    } else {
        Version::Http11
    };
    RequestHead {
        method: parts.method.as_str().to_string(),
        target,
        version,
        headers,
    }
}

/// An idle pooled HTTP/1 connection to the application, or a new one.
async fn connection<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    target: SocketAddr,
) -> Result<Upstream<R>, ProxyError> {
    if let Some(conn) = ctx.pool.take(target) {
        return Ok(conn);
    }
    let timeout = ctx
        .settings
        .connect_timeout
        .get(crate::conn::Direction::Inbound);
    let inbound = crate::conn::Direction::Inbound;
    let stream = upstream::connect::<R>(target, timeout, (&ctx.settings.sockets, inbound)).await?;
    let plaintext = ctx.tcp.plaintext(crate::conn::Direction::Inbound);
    Ok(Upstream::new(
        &ctx.tcp,
        crate::conn::Direction::Inbound,
        target,
        stream,
        plaintext,
    ))
}

/// Sends the request, relays the response; whether the connection can be pooled. The
/// request body streams to the application while its response is relayed: an application
/// may answer (413, say) before it has read the whole body.
async fn exchange<R: Runtime>(
    conn: &mut Upstream<R>,
    head: &RequestHead,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    metrics: &mut RequestMetrics,
) -> Result<bool, Failed> {
    let (up_read, up_write) = {
        let m = conn.metrics();
        (m.read_bytes.clone(), m.write_bytes.clone())
    };
    let chunked = head.headers.get("transfer-encoding").is_some();
    let mut out = Vec::with_capacity(512);
    http1::encode_request(head, &mut out);
    let mut outbox = Outbox {
        tx: &mut conn.tx,
        write_bytes: &up_write,
    };
    if let (Err(error), _) = outbox.write(out).await {
        return Err(Failed::Before(error));
    }
    let mut body = body;
    let ends = body.is_end_stream();
    let send = async {
        if ends {
            return Ok(());
        }
        bridge::h2_to_h1(&mut outbox, &mut body, chunked)
            .await
            .map(drop)
    };
    let mut buf = std::mem::take(&mut conn.buf);
    buf.clear();
    let mut inbox = Inbox {
        rx: &mut conn.rx,
        buf: &mut buf,
        read_bytes: &up_read,
    };
    let relay = relay::<R>(head, &mut inbox, respond, metrics);
    let (sent, relayed) = bridge::race(send, relay).await;
    let body_sent = match sent {
        Some(Ok(())) => true,
        // The peer proxy's request stream failed: the application waits for the rest.
        Some(Err(error)) if relayed.is_none() => return Err(Failed::Before(body_error(error))),
        Some(Err(error)) => {
            tracing::debug!(?error, "The application stopped reading the request body");
            false
        }
        None => false,
    };
    let reusable = match relayed {
        Some(relayed) => relayed?,
        None => return Err(Failed::Before(io::ErrorKind::Interrupted.into())),
    };
    let clean = reusable && body_sent && buf.is_empty();
    conn.buf = buf;
    Ok(clean)
}

/// Reads the application's response and relays it on the stream; whether the connection
/// was left clean for another request.
async fn relay<R: Runtime>(
    head: &RequestHead,
    inbox: &mut Inbox<'_, <crate::io::Transport<R> as crate::rt::Stream>::Reader>,
    respond: &mut SendResponse<Bytes>,
    metrics: &mut RequestMetrics,
) -> Result<bool, Failed> {
    let limits = Limits::default();
    let res = loop {
        let read = inbox
            .read_head::<R, ResponseHead>(&limits, None, parse_response)
            .await;
        match read {
            Ok(Some(res)) if (100..200).contains(&res.status) => continue,
            Ok(Some(res)) => break res,
            Ok(None) => return Err(Failed::Before(io::ErrorKind::UnexpectedEof.into())),
            Err(HeadError::Io(error)) => return Err(Failed::Before(error)),
            Err(error) => {
                return Err(Failed::Before(io::Error::other(format!(
                    "invalid response: {error:?}"
                ))))
            }
        }
    };
    let kind = response_body(&head.method, &res)
        .map_err(|e| Failed::Before(io::Error::other(e.to_string())))?;
    metrics.response_head(res.status, false);
    let reusable = keep_alive(res.version, &res.headers) && kind != BodyKind::UntilClose;
    let mut response = Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(res.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let mut headers = res.headers;
    strip_hop_by_hop(&mut headers);
    for header in &headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(&header.value),
        ) else {
            continue;
        };
        response.headers_mut().append(name, value);
    }
    // The version the application answered with, as linkerd2-proxy echoes it.
    let echoed = match res.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    response
        .headers_mut()
        .insert(ORIG_PROTO, HeaderValue::from_static(echoed));
    if metrics.is_tapped() {
        metrics.tap_response(res.status, true, response.headers(), None);
    }
    let ends = kind == BodyKind::Empty;
    let mut down = respond
        .send_response(response, ends)
        .map_err(|e| Failed::After(io::Error::other(e.to_string())))?;
    if !ends {
        let sent = bridge::h1_to_h2(inbox, kind, &limits, &mut down)
            .await
            .map_err(|e| Failed::After(body_error(e)))?;
        metrics.tap_bytes(sent as usize);
    }
    Ok(reusable)
}

/// The I/O error a body bridge failed with.
fn body_error(error: BodyError) -> io::Error {
    match error {
        BodyError::Src(error) | BodyError::Dst(error) => error,
        BodyError::Framing(error) => io::Error::new(io::ErrorKind::InvalidData, error.to_string()),
    }
}
