//! Direct connections to the inbound port, Linkerd's transport-header mode (the default
//! since Linkerd 2.18): a meshed peer connects to this pod's inbound port itself (not
//! redirected) with mesh TLS, ALPN `transport.l5d.io/v1` and a client certificate, then
//! sends a transport header naming the local port, and whether it carries HTTP/1, HTTP/2
//! or opaque bytes (linkerd2-proxy `linkerd/app/inbound/src/direct.rs`).
//!
//! Anything else on this path — plaintext, TLS for another name, no client identity, no
//! ALPN, a truncated, malformed or oversized header, a gateway (named) header — closes
//! that one connection, with a log line saying why.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringlink_protocols::transport_header::{self, Decoded, SessionProtocol, TransportHeader};
use ringlink_protocols::Protocol;

use super::dest::local_target;
use super::detect::{self, Sniffed};
use super::then::Then;
use super::{authz, opaque, tls};
use crate::conn::{ConnMeta, Direction, Route, TlsStatus};
use crate::ctx::ShardCtx;
use crate::http::{self, Client, Preconnected, Version};
use crate::io::Transport;
use crate::lifecycle::ConnEntry;
use crate::rt::{Reader, Runtime};
use crate::telemetry::{Detected, Peer, PeerMetrics};

// === functions ===

/// Serves a direct connection up to the part that lasts; the client's series is left in
/// `slot`.
pub async fn serve<'a, R: Runtime>(
    ctx: &'a Rc<ShardCtx<R>>,
    meta: &'a mut ConnMeta,
    client: Transport<R>,
    entry: &'a ConnEntry,
    slot: &'a mut Option<PeerMetrics>,
) -> Then<'a> {
    // Boxed: inline, the handshake's state would stay in the connection's task.
    let (client, header, rest) = match Box::pin(handshake(ctx, meta, client)).await {
        Ok(accepted) => accepted,
        Err(refused) => {
            tracing::info!(error = %refused, "Refusing a direct connection");
            let src = ctx
                .tcp
                .open(Direction::Inbound, Peer::Src, meta.local, &meta.tls);
            *slot = Some(src);
            return Then::Done(None);
        }
    };
    let target = local_target(SocketAddr::new(meta.local.ip(), header.port));
    meta.route = Route::Fixed(target);
    tracing::Span::current().record("server.addr", tracing::field::display(target));
    // The target port's inbound policy applies, as to a redirected connection.
    let policy = ctx.policies.get::<R>(target.port(), &ctx.life);
    meta.policy = Some(policy.policy.clone());
    let src = &*slot.insert(
        ctx.tcp
            .open(Direction::Inbound, Peer::Src, target, &meta.tls),
    );
    let version = match header.protocol {
        Some(SessionProtocol::Http1) => Some(Version::Http1),
        Some(SessionProtocol::Http2) => Some(Version::H2),
        None => None,
    };
    let Some(version) = version else {
        let since = authz::since(ctx, target);
        if !authz::connection(ctx, meta, target, &policy) {
            crate::io::reset(client.as_raw_fd());
            return Then::Done(None);
        }
        let timeout = ctx.settings.connect_timeout.get(Direction::Inbound);
        let dial = (&ctx.settings.sockets, Direction::Inbound);
        let upstream = match crate::upstream::connect::<R>(target, timeout, dial).await {
            Ok(upstream) => upstream,
            Err(_) => return Then::Done(None),
        };
        entry.set_upstream(upstream.as_raw_fd());
        ctx.detected(Direction::Inbound, Detected::Opaque);
        let fds = (client.as_raw_fd(), upstream.as_raw_fd());
        let forwarded = (client, src, entry);
        let forward = opaque::forward(ctx, Direction::Inbound, forwarded, (upstream, target), rest);
        let Some(relay) = Box::pin(forward).await else {
            return Then::Done(None);
        };
        let meta: &'a ConnMeta = meta;
        return Then::run(authz::guarded(ctx, meta, target, fds, since, relay));
    };
    let client = Client {
        meta,
        stream: client,
        first: rest,
        metrics: src,
        entry,
    };
    Then::Run(http::serve(ctx, version, client, Preconnected::None))
}

/// Mesh TLS for this proxy with a client identity and the transport header's ALPN, then the
/// header. Returns the TLS stream, the header and the bytes read after it.
async fn handshake<R: Runtime>(
    ctx: &Rc<ShardCtx<R>>,
    meta: &mut ConnMeta,
    mut client: Transport<R>,
) -> io::Result<(Transport<R>, TransportHeader, Vec<u8>)> {
    let refused = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let timeout = ctx.settings.detect_timeout.get(Direction::Inbound);
    let (found, hello) = detect::sniff::<R>(&mut client, None, timeout).await?;
    let Sniffed::Protocol(Protocol::Tls { sni: Some(sni) }) = &found else {
        crate::io::reset(client.as_raw_fd());
        return Err(refused("not mesh TLS"));
    };
    if !tls::is_ours(ctx, sni) {
        crate::io::reset(client.as_raw_fd());
        return Err(refused("TLS for another name"));
    }
    let Some(mesh) = tls::certified(ctx, timeout).await else {
        return Err(refused("not certified yet"));
    };
    let accepted = tls::accept::<R>(mesh.server_direct.clone(), client, hello, timeout).await?;
    meta.tls = TlsStatus::Established {
        peer: accepted.peer.clone(),
    };
    if accepted.peer.is_none() {
        return Err(refused("direct connections must be mutually authenticated"));
    }
    if accepted.alpn.as_deref() != Some(transport_header::ALPN) {
        return Err(refused("the transport header's ALPN was not negotiated"));
    }
    let mut client = accepted.stream;
    let (header, rest) = read_header::<R>(&mut client, timeout).await?;
    if header.name.is_some() {
        return Err(refused(
            "named (gateway) transport headers are not supported",
        ));
    }
    tracing::debug!(port = header.port, protocol = ?header.protocol, "Transport header");
    Ok((client, header, rest))
}

/// Reads a transport header (at most its 64 KiB limit) within `timeout`.
async fn read_header<R: Runtime>(
    client: &mut Transport<R>,
    timeout: Duration,
) -> io::Result<(TransportHeader, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(crate::io::SMALL_BUFFER);
    loop {
        match transport_header::decode(&buf) {
            Ok(Decoded::Header { header, consumed }) => {
                let rest = buf.split_off(consumed);
                return Ok((header, rest));
            }
            Ok(Decoded::NotHeader) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no transport header",
                ));
            }
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
            Ok(Decoded::NeedMore) => {}
        }
        if buf.capacity() == buf.len() {
            buf.reserve(crate::io::SMALL_BUFFER);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let read = client.read_more(std::mem::take(&mut buf));
        match crate::rt::timeout::<R, _>(remaining, read).await {
            Some((Ok(0), _)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Some((Ok(_), more)) => buf = more,
            Some((Err(error), _)) => return Err(error),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "transport header timed out",
                ))
            }
        }
    }
}
