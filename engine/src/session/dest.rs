//! Where an accepted connection goes: its original destination (`SO_ORIGINAL_DST`, through
//! the [`OrigDst`](crate::orig_dst::OrigDst) seam), refused when that is one of the proxy's
//! own listeners (a routing loop) — unless an outbound client addressed the proxy itself,
//! whose HTTP requests are then routed by their authority. Inbound traffic goes to the
//! application in this pod: loopback, on the port it was sent to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use crate::conn::{ConnMeta, Direction, Route, TlsStatus};
use crate::orig_dst::OrigDst;
use crate::sys;

// === functions ===

/// The connection's facts, or `None` (logged) when it must be refused: a routing loop, or
/// an inbound connection for an address that is not the pod's (`inbound_ips`, from
/// `LINKERD2_PROXY_INBOUND_IPS`; empty allows any, as linkerd2-proxy's `AllowIps`).
pub fn destination(
    orig_dst: &dyn OrigDst,
    (own_addrs, inbound_ips): (&[SocketAddr], &[IpAddr]),
    direction: Direction,
    fd: RawFd,
    client: SocketAddr,
    tls: TlsStatus,
) -> Option<ConnMeta> {
    let local = match sys::local_addr(fd) {
        Ok(local) => local,
        Err(error) => {
            tracing::info!(%error, "Connection lost before it was served");
            return None;
        }
    };
    let orig_dst = match orig_dst.original_dst(fd, local) {
        Ok(addr) => addr,
        Err(error) => {
            tracing::warn!(%error, "No original destination");
            return None;
        }
    };
    if direction == Direction::Inbound
        && !inbound_ips.is_empty()
        && !inbound_ips.contains(&orig_dst.ip())
    {
        tracing::info!(dst.addr = %orig_dst, "Refusing an inbound connection for an address that is not the pod's");
        return None;
    }
    let route = if is_own_listener(own_addrs, orig_dst, local) {
        if direction == Direction::Inbound && tls != TlsStatus::Disabled {
            // A meshed peer's direct connection (transport header).
            Route::Direct
        } else if direction == Direction::Inbound {
            tracing::warn!(
                dst.addr = %orig_dst,
                "Refusing a connection whose original destination is the proxy itself (routing loop)"
            );
            return None;
        } else {
            Route::ByAuthority
        }
    } else {
        Route::Fixed(match direction {
            Direction::Outbound => orig_dst,
            Direction::Inbound => local_target(orig_dst),
        })
    };
    Some(ConnMeta {
        direction,
        client,
        local,
        route,
        tls,
        policy: None,
    })
}

/// Whether `dst` is one of the proxy's own listeners (`own_addrs`; `local` is the address
/// the connection was accepted on), which forwarding to would loop.
pub fn is_own_listener(own_addrs: &[SocketAddr], dst: SocketAddr, local: SocketAddr) -> bool {
    dst == local
        || own_addrs.iter().any(|own| {
            own.port() == dst.port()
                && (own.ip() == dst.ip()
                    || (own.ip().is_unspecified()
                        && (dst.ip().is_loopback() || dst.ip() == local.ip())))
        })
}

/// The application's address for inbound traffic sent to `orig_dst`.
pub fn local_target(orig_dst: SocketAddr) -> SocketAddr {
    let loopback = match orig_dst.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(loopback, orig_dst.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_listeners_are_loops() {
        let own = [addr("127.0.0.1:4140"), addr("0.0.0.0:4143")];
        let local = addr("10.0.0.5:4143");
        // The connection's own local address.
        assert!(is_own_listener(&[], local, local));
        // A listener's exact address.
        assert!(is_own_listener(&own, addr("127.0.0.1:4140"), local));
        // A wildcard listener: reached on loopback or on the address it was accepted on.
        assert!(is_own_listener(&own, addr("127.0.0.2:4143"), local));
        assert!(is_own_listener(
            &own,
            addr("10.0.0.5:4143"),
            addr("10.0.0.5:1")
        ));
        // Another port, or another host's address on the listener's port, is not.
        assert!(!is_own_listener(&own, addr("127.0.0.1:8080"), local));
        assert!(!is_own_listener(&own, addr("10.0.0.9:4143"), local));
        assert!(!is_own_listener(&own, addr("10.0.0.9:4140"), local));
    }

    #[test]
    fn inbound_goes_to_loopback_on_the_same_port() {
        assert_eq!(local_target(addr("10.1.2.3:8080")), addr("127.0.0.1:8080"));
        assert_eq!(local_target(addr("[fd00::1]:80")), addr("[::1]:80"));
    }
}
