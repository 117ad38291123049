//! `LINKERD2_PROXY_{INBOUND,OUTBOUND}_{ACCEPT,CONNECT}_KEEPALIVE` reach the proxy's sockets:
//! the kernel runs a keepalive timer on the accepted and the connected socket of a
//! connection, with at most the configured idle time, as `ss` shows it; without the
//! variables it runs none.

use std::net::SocketAddr;
use std::process::Command;

use ringlink_integration::{both_runtimes, proxy, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_runtimes!(keepalive_is_set_on_both_sides, no_keepalive_by_default);

/// The keepalive timer (seconds left) of the established socket from `local` to `peer`,
/// `None` when it has no keepalive timer; panics when there is no such socket.
fn keepalive_timer(local: SocketAddr, peer: SocketAddr) -> Option<f64> {
    let out = Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() >= 4 && fields[2] == local.to_string() && fields[3] == peer.to_string()
        })
        .unwrap_or_else(|| panic!("no socket {local} -> {peer} in:\n{text}"));
    let timer = line.split("timer:(keepalive,").nth(1)?;
    let left = timer.split(',').next()?;
    Some(seconds(left).unwrap_or_else(|| panic!("unreadable timer in {line}")))
}

/// The number in `ss`'s time left, whatever its unit: iproute2 6.1 prints a keepalive
/// timer of 9 s as `8.996ms`, later versions as `8.996sec`; the timers here are under a
/// minute, so the number is the seconds.
fn seconds(text: &str) -> Option<f64> {
    let number: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().ok()
}

/// An open connection through the proxy's outbound port (to its echo server), and the
/// client's address.
async fn through(proxy: &proxy::Proxy) -> (TcpStream, SocketAddr) {
    let mut client = TcpStream::connect(proxy.outbound).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).await.unwrap();
    let local = client.local_addr().unwrap();
    (client, local)
}

/// The proxy's socket connected to `echo` (its peer), found by `ss`.
fn upstream_local(echo: SocketAddr) -> SocketAddr {
    let out = Command::new("ss")
        .args(["-tnH", "state", "established"])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() >= 4 && fields[3] == echo.to_string()).then(|| fields[2].parse().ok())?
        })
        .next()
        .unwrap_or_else(|| panic!("no socket to {echo} in:\n{text}"))
}

async fn keepalive_is_set_on_both_sides(runtime: &'static str) {
    let echo = tcp::echo().await;
    let proxy = proxy::new(runtime)
        .orig_dst(echo.addr)
        .env("LINKERD2_PROXY_OUTBOUND_ACCEPT_KEEPALIVE", "7s")
        .env("LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE", "9s")
        .env("LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT", "30s")
        .spawn();
    let (_client, client_addr) = through(&proxy).await;
    let accepted = keepalive_timer(proxy.outbound, client_addr).expect("a keepalive timer");
    assert!(accepted > 6.0 && accepted <= 7.0, "{accepted}");
    let upstream =
        keepalive_timer(upstream_local(echo.addr), echo.addr).expect("a keepalive timer");
    assert!(upstream > 8.0 && upstream <= 9.0, "{upstream}");
}

async fn no_keepalive_by_default(runtime: &'static str) {
    let echo = tcp::echo().await;
    let proxy = proxy::new(runtime).orig_dst(echo.addr).spawn();
    let (_client, client_addr) = through(&proxy).await;
    assert_eq!(keepalive_timer(proxy.outbound, client_addr), None);
    assert_eq!(keepalive_timer(upstream_local(echo.addr), echo.addr), None);
}
