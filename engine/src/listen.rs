//! Per-shard listening sockets, built with socket2 so every option is ours to set.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds one `SO_REUSEPORT` listener per shard on `addr`. When `addr` has port 0 the first
/// bind picks the port and the others join it, so every shard serves the same address.
pub fn bind_shards(
    addr: SocketAddr,
    shards: usize,
    backlog: u32,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let listener = bind(addr, backlog)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// A non-blocking listener with `SO_REUSEADDR`, `SO_REUSEPORT` and `TCP_NODELAY` (which
/// accepted sockets inherit).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_an_ephemeral_port() {
        // A backlog that holds every connection below, so that connecting never waits.
        let listeners = bind_shards("127.0.0.1:0".parse().unwrap(), 3, 256).unwrap();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_ne!(addrs[0].port(), 0);
        assert!(addrs.iter().all(|a| *a == addrs[0]));
        // Every listener accepts: the kernel spreads connections over them by their
        // addresses' hash, so 60 connections reach each of 3 listeners (a listener left
        // with none has a chance of about 3 * (2/3)^60, 1e-10).
        let clients: Vec<_> = (0..60)
            .map(|_| std::net::TcpStream::connect(addrs[0]).unwrap())
            .collect();
        let mut accepted = vec![0; listeners.len()];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while accepted.iter().sum::<usize>() < clients.len() && std::time::Instant::now() < deadline
        {
            for (i, listener) in listeners.iter().enumerate() {
                // Non-blocking: `WouldBlock` until a connection is queued on this one.
                if listener.accept().is_ok() {
                    accepted[i] += 1;
                }
            }
        }
        assert_eq!(
            accepted.iter().sum::<usize>(),
            clients.len(),
            "{accepted:?}"
        );
        assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    }

    #[test]
    fn listener_sets_nodelay_and_reuse() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let socket = socket2::SockRef::from(&listener);
        assert!(socket.reuse_address().unwrap());
        assert!(socket.reuse_port().unwrap());
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(client);
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
