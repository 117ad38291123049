//! Inbound authorization of a connection against its port's policy, as linkerd2-proxy's
//! `linkerd/app/inbound/src/policy/tcp.rs` checks it: the first of the server's connection
//! authorizations (`Opaque`, `Tls`, or `Detect`'s for what is not HTTP) that the client's
//! address and mesh TLS identity satisfy. A denied connection is closed, and a live one is
//! checked again at each update of its port's policy ([`guarded`]) and terminated when the
//! update no longer admits it; HTTP is authorized per request instead (`http::authz`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

use futures_lite::future::or;

use ringlink_control::policy::inbound::ServerPolicy;

use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
use crate::policy::Changes;
use crate::rt::Runtime;

// === functions ===

/// Whether `policy` admits the connection `meta` to `target`; counted in
/// `inbound_tcp_authz_{allow,deny}_total` and logged as linkerd2-proxy logs it.
pub fn connection<R: Runtime>(
    ctx: &ShardCtx<R>,
    meta: &ConnMeta,
    target: SocketAddr,
    policy: &ServerPolicy,
) -> bool {
    match policy.authorize_connection(meta.client.ip(), meta.tls.client_tls()) {
        Ok(permit) => {
            if permit.is_audit() {
                tracing::info!(
                    server.kind = permit.server.kind(),
                    server.name = permit.server.name(),
                    client.addr = %meta.client,
                    client.id = ?meta.tls.peer(),
                    "Request allowed"
                );
            }
            let authz = &permit.authorization.meta;
            ctx.http
                .authz
                .tcp_allow(target, permit.server, authz, &meta.tls);
            true
        }
        Err(denied) => {
            tracing::info!(
                client.addr = %meta.client,
                client.id = ?meta.tls.peer(),
                "{denied}"
            );
            ctx.http.authz.tcp_deny(target, &denied.server, &meta.tls);
            false
        }
    }
}

/// The updates of `target`'s port policy as of now, for [`guarded`]: read before the
/// connection is authorized, so that an update that lands while it connects or replays what
/// detection read is checked too.
pub fn since<R: Runtime>(ctx: &ShardCtx<R>, target: SocketAddr) -> Option<(Rc<Changes>, u64)> {
    let changes = ctx.policies.changes(target.port())?;
    let version = changes.version();
    Some((changes, version))
}

/// Runs `forward`, an authorized inbound connection to `target` whose sockets are `fds`
/// (client, upstream), checking it again at each update of the port's policy after `since`
/// ([`since`], read before it was authorized): when an update
/// no longer admits it, both sockets are closed (the client's with a reset), as
/// linkerd2-proxy terminates it ("Connection terminated due to policy change"), counted in
/// `inbound_tcp_authz_terminate_total`; `forward` then ends by itself.
///
/// A plain function returning the two futures raced: `forward` is held once, where an
/// `async fn` would keep it as an argument and again pinned (three times the relay's state,
/// 5 KiB, per inbound opaque connection).
pub fn guarded<'a, R: Runtime>(
    ctx: &'a ShardCtx<R>,
    meta: &'a ConnMeta,
    target: SocketAddr,
    fds: (RawFd, RawFd),
    since: Option<(Rc<Changes>, u64)>,
    forward: impl Future<Output = Option<io::Error>> + 'a,
) -> impl Future<Output = Option<io::Error>> + 'a {
    or(forward, recheck(ctx, meta, target, fds, since))
}

/// Never completes: checks the connection again at each update of its port's policy, and
/// closes its sockets at the first that no longer admits it (see [`guarded`]).
async fn recheck<R: Runtime>(
    ctx: &ShardCtx<R>,
    meta: &ConnMeta,
    target: SocketAddr,
    (client_fd, upstream_fd): (RawFd, RawFd),
    since: Option<(Rc<Changes>, u64)>,
) -> Option<io::Error> {
    if let Some((changes, mut version)) = since {
        loop {
            changes.after(version).await;
            version = changes.version();
            let policy = ctx.policies.get::<R>(target.port(), &ctx.life);
            let client_tls = meta.tls.client_tls();
            if let Err(denied) = policy.authorize_connection(meta.client.ip(), client_tls) {
                tracing::info!(
                    client.addr = %meta.client,
                    client.id = ?meta.tls.peer(),
                    "Connection terminated due to policy change: {denied}"
                );
                ctx.http
                    .authz
                    .tcp_terminate(target, &denied.server, &meta.tls);
                crate::io::abort(client_fd, upstream_fd);
                break;
            }
        }
    }
    std::future::pending().await
}
