//! Outbound route retries for h2 streams (gRPC included): a request whose body arrives
//! whole within the route's `max_request_bytes` is buffered, sent, and sent again to another
//! endpoint of its backend while the response's status (or the `grpc-status` of a
//! trailers-only response) is one the route's conditions name, up to `max_retries` times,
//! each try within the route's per-try timeout. The response that ends the tries is relayed
//! as any other. A `grpc-status` that arrives in trailers after data is not retried: the
//! response is already on its way to the client.

use std::future::poll_fn;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use http::{HeaderMap, Request, Response};
use ringlink_control::policy::outbound::Retry;
use ringlink_protocols::grpc::parse_grpc_status;

use super::client::Upstreams;
use crate::error::ProxyError;
use crate::rt::Runtime;
use crate::telemetry::RequestMetrics;
use crate::upstream::{self, h2::Lease, Target};

/// A request body read whole (with its trailers), or the part read before it passed the
/// limit.
pub(super) enum Body {
    Whole(Bytes, Option<HeaderMap>),
    /// Longer than the limit: send this, then the rest of the stream.
    Prefix(Bytes),
}

/// Reads `body` while it stays within `limit` bytes.
pub(super) async fn read(body: &mut RecvStream, limit: usize) -> Result<Body, h2::Error> {
    let mut data = BytesMut::new();
    while let Some(chunk) = poll_fn(|cx| body.poll_data(cx)).await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > limit {
            return Ok(Body::Prefix(data.freeze()));
        }
    }
    let trailers = poll_fn(|cx| body.poll_trailers(cx)).await?;
    Ok(Body::Whole(data.freeze(), trailers))
}

/// What each try sends: the request's head parts and its buffered body.
pub(super) struct Replay<'a> {
    pub head: &'a http::request::Parts,
    pub data: &'a Bytes,
    pub trailers: Option<&'a HeaderMap>,
}

/// Sends the request until a response ends the tries (see the module docs); `deadline` is
/// the route's overall timeout. Returns the response, when its try was sent, and its
/// stream's lease on its connection.
pub(super) async fn send<R: Runtime>(
    upstreams: &Rc<Upstreams<R>>,
    target: &mut Target,
    (retry, budget): (&Retry, Option<&crate::discover::Budget>),
    replay: &Replay<'_>,
    deadline: Option<(Duration, Instant)>,
    metrics: &mut RequestMetrics,
) -> Result<(Response<RecvStream>, Instant, Lease), ProxyError> {
    let mut left = retry.max_retries;
    loop {
        let sent_at = Instant::now();
        let tried = super::stream::within::<R, _>(deadline, async {
            let one = try_once(upstreams, target, replay);
            match retry.timeout {
                None => one.await.map(Some),
                Some(limit) => Ok(crate::rt::timeout::<R, _>(limit, Box::pin(one))
                    .await
                    .transpose()?),
            }
        })
        .await?;
        let retryable = match &tried {
            // The per-try timeout ran out.
            None => {
                if let Some(pick) = &target.pick {
                    pick.observe_rtt(retry.timeout.unwrap_or_default());
                }
                true
            }
            Some((response, _)) => {
                let grpc_status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| parse_grpc_status(v.as_bytes()));
                retry.retries(response.status().as_u16(), grpc_status)
            }
        };
        let allowed = retryable && left > 0 && budget.is_none_or(|b| b.try_withdraw());
        match tried {
            Some((response, lease)) if !allowed => return Ok((response, sent_at, lease)),
            None if !allowed => {
                return Err(ProxyError::RouteTimeout(retry.timeout.unwrap_or_default()))
            }
            _ => {}
        }
        left -= 1;
        if let Some(pick) = &target.pick {
            pick.response(false);
        }
        metrics.retried();
        tracing::debug!(left, "Retrying the request (route policy)");
        upstream::before_retry::<R>(&upstreams.ctx.dsts, retry, left, target).await?;
    }
}

/// One try: a connection to the target's endpoint, the request with its whole body, and
/// the response's head, with the stream's lease on its connection.
async fn try_once<R: Runtime>(
    upstreams: &Rc<Upstreams<R>>,
    target: &mut Target,
    replay: &Replay<'_>,
) -> Result<(Response<RecvStream>, Lease), ProxyError> {
    let (send, tls) = super::stream::connect::<R>(upstreams, target).await?;
    let head = replay.head;
    let mut request = Request::builder()
        .method(head.method.clone())
        .uri(head.uri.clone())
        .version(head.version)
        .body(())
        .map_err(|e| ProxyError::bad_request(400, e.to_string()))?;
    *request.headers_mut() = head.headers.clone();
    let end = replay.data.is_empty() && replay.trailers.is_none();
    let (response, mut body, lease) =
        super::stream::send_request(upstreams, (target.addr, tls), send, request, end)?;
    if !end {
        let last = replay.trailers.is_none();
        if !replay.data.is_empty() || last {
            body.send_data(replay.data.clone(), last)
                .map_err(|e| super::stream::upstream_error(&e))?;
        }
        if let Some(trailers) = replay.trailers {
            body.send_trailers(trailers.clone())
                .map_err(|e| super::stream::upstream_error(&e))?;
        }
    }
    let response = response
        .await
        .map_err(|e| super::stream::upstream_error(&e))?;
    Ok((response, lease))
}
