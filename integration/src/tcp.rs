//! Real TCP servers for tests, on tokio, each on its own loopback port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A running test server; it stops when the test's runtime does.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// The peer address of every accepted connection, in order.
    pub peers: mpsc::UnboundedReceiver<SocketAddr>,
}

/// What a server does with each connection.
async fn serve<F, Fut>(listener: TcpListener, handler: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, peers) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(peer);
            tokio::spawn(handler(stream));
        }
    });
    Server {
        addr,
        accepted,
        peers,
    }
}

/// A loopback listener with a deep accept queue, so that bursts of connections from the
/// proxy are not dropped while the test runtime is busy.
pub async fn bind() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// Writes back everything it reads; half-closes when the client does.
pub async fn echo() -> Server {
    echo_on(bind().await).await
}

pub async fn echo_on(listener: TcpListener) -> Server {
    serve(listener, |mut stream| async move {
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Reads everything until EOF, then answers with the SHA-256 of what it read (32 bytes),
/// followed by `reply_bytes` bytes of a deterministic stream, then closes.
pub async fn hasher(reply_bytes: u64) -> Server {
    serve(bind().await, move |mut stream| async move {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => hash.update(&buf[..n]),
                Err(_) => return,
            }
        }
        if stream.write_all(&hash.finalize()).await.is_err() {
            return;
        }
        let _ = write_pattern(&mut stream, reply_bytes).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// Accepts, reads `n` bytes, then resets the connection (close with `SO_LINGER` 0).
pub async fn resetter(after: usize) -> Server {
    serve(bind().await, move |mut stream| async move {
        let mut buf = vec![0u8; after.max(1)];
        let _ = stream.read_exact(&mut buf[..after]).await;
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await
}

/// Accepts, reads until the end of a request head, writes `reply`, then resets the
/// connection: an HTTP/1 server that fails in the middle of its response.
pub async fn answer_then_reset(reply: &'static [u8]) -> Server {
    serve(bind().await, move |mut stream| async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(reply).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await
}

/// Writes `total` bytes as fast as the peer takes them, then closes.
pub async fn source(total: u64) -> Server {
    serve(bind().await, move |mut stream| async move {
        let _ = write_pattern(&mut stream, total).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// A loopback address with nothing listening: a socket bound to it and never listening,
/// kept open for the rest of the test process, so that connections to it are refused and
/// no other test's listener can take the port meanwhile (a port bound and closed again
/// could be handed to another test's server).
pub fn closed_port() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))
        .expect("bind a loopback port");
    let addr = socket.local_addr().expect("its address");
    std::mem::forget(socket);
    addr
}

/// Byte `i` of the deterministic stream tests send and check.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Writes `total` bytes of the deterministic pattern, returning their SHA-256.
pub async fn write_pattern(
    stream: &mut (impl AsyncWriteExt + Unpin),
    total: u64,
) -> std::io::Result<[u8; 32]> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(sent + i as u64);
        }
        hash.update(&buf[..n]);
        stream.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    Ok(hash.finalize().into())
}

/// Reads to EOF, returning the byte count and SHA-256.
pub async fn read_hash(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> std::io::Result<(u64, [u8; 32])> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hash.finalize().into()));
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

/// SHA-256 of the first `total` bytes of the pattern.
pub async fn pattern_hash(total: u64) -> [u8; 32] {
    write_pattern(&mut tokio::io::sink(), total)
        .await
        .expect("writing to a sink")
}

/// Connects and sends `msg`, then reads exactly `msg.len()` bytes back.
pub async fn roundtrip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await?;
    Ok(back)
}

/// A listener with backlog 0 and its queue filled by connections nobody accepts.
pub fn unresponsive_listener() -> (
    std::net::SocketAddr,
    Vec<std::net::TcpStream>,
    std::net::TcpListener,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // std's bind listens with backlog 128; shrink it by listening again.
    #[allow(unsafe_code)]
    // SAFETY: listen(2) on a socket we own.
    unsafe {
        libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 0)
    };
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    (addr, fillers, listener)
}

/// A connection to `addr` from the address `from`, any port (e.g. `127.0.0.2`: loopback,
/// but not the `localhost` an inbound policy always admits).
pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> TcpStream {
    let socket = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client's address");
    socket.connect(addr).await.expect("connect")
}
