//! Inbound authorization of a connection against its port's policy, as linkerd2-proxy's
//! `linkerd/app/inbound/src/policy/tcp.rs` checks it: the first of the server's connection
//! authorizations (`Opaque`, `Tls`, or `Detect`'s for what is not HTTP) that the client's
//! address and mesh TLS identity satisfy. A denied connection is closed; HTTP is authorized
//! per request instead (`http::authz`).

use std::net::SocketAddr;

use ringlink_control::policy::inbound::ServerPolicy;

use crate::conn::ConnMeta;
use crate::ctx::ShardCtx;
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
