//! Test `idle`: what an idle connection costs each proxy. For each proxy row, N client
//! connections are opened one after another through a fresh proxy process and left idle; the
//! proxy's RSS (summed over its processes) is read before and after, and the growth divided
//! by N is the row's bytes per idle connection. Two kinds:
//!
//! - `http1`: a keep-alive HTTP/1.1 connection after one `GET` (backend `bench-backend`);
//! - `tcp`: an L4 connection after 1 KiB that is not HTTP, echoed back (backend
//!   `bench-backend --echo`): ringlink detects it as opaque TCP and forwards it; nginx
//!   (`stream`) and haproxy (`mode tcp`) run their bulk configurations;
//! - `h2`: an HTTP/2 (h2c, prior knowledge) connection after one `GET` answered 200 on one
//!   stream (backend `bench-backend --h2`; nginx and haproxy run their h2 configurations).
//!
//! The client runs on the load CPU; each proxy warms up with a few hundred connections first
//! (its pools, tables and allocator arenas), which are held while measuring.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::Test;
use crate::mesh::on_load_cpu;
use crate::proxy::{soft_nofile_limit, Proxy, ProxyKind};
use crate::Bench;

/// Connections held idle per row (the 5,000), fewer if the open-file limit says so.
pub const CONNECTIONS: usize = 5_000;
/// Connections opened and held before the baseline is read.
pub const WARM: usize = 300;
/// How long the connections sit before the RSS is read: longer than ringlink takes to park
/// an idle HTTP/1 connection or copied relay (its shard's sweep, once a second, parks one
/// idle at two sweeps in a row) and to trim its heap after (at the sweep after that), so
/// that a row measures connections that stay idle, not ones just served.
const SETTLE: Duration = Duration::from_millis(4_000);
/// One connection's setup, at most.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

// === types ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Http1,
    Tcp,
    H2,
}

/// A connection held idle (its fields are held, never read); an h2 one with its
/// connection task, ended when dropped.
enum Held {
    Stream {
        _stream: TcpStream,
    },
    H2 {
        _send: SendRequest<Bytes>,
        _task: AbortOnDrop,
    },
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

struct Row {
    kind: ProxyKind,
    conn: Kind,
    connections: usize,
    rss_before: u64,
    rss_after: u64,
}

// === impl Kind ===

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Http1 => "http1",
            Kind::Tcp => "tcp",
            Kind::H2 => "h2",
        }
    }

    /// The test whose proxy configuration the rows run (nginx and haproxy).
    fn config(self) -> Test {
        match self {
            Kind::Http1 => Test::Http1,
            Kind::Tcp => Test::Bulk,
            Kind::H2 => Test::H2,
        }
    }

    fn backend_flags(self) -> &'static [&'static str] {
        match self {
            Kind::Http1 => &[],
            Kind::Tcp => &["--echo"],
            Kind::H2 => &["--h2"],
        }
    }
}

// === functions ===

/// Runs the test for every proxy in `--only` but `direct`; `Ok(true)` if a row failed.
pub fn run(bench: &Bench<'_>, backend: &Path) -> Result<bool> {
    let n = connections();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failed = false;
    for conn in [Kind::Http1, Kind::Tcp, Kind::H2] {
        let (backend_addr, backend_process) =
            crate::start_backend(bench.pin, backend, conn.backend_flags())?;
        for &kind in &bench.opts.proxies {
            if matches!(kind, ProxyKind::Direct | ProxyKind::RinglinkBalanced) {
                continue;
            }
            let test = conn.config();
            if let Some(reason) = bench.bins.unavailable(kind, test) {
                // The copy row is a bulk row; here it is the tcp kind's comparison.
                if !(kind == ProxyKind::RinglinkCopy && conn == Kind::Tcp) {
                    notes.push(format!("{} {}: {reason}", kind.name(), conn.name()));
                    continue;
                }
            }
            eprintln!("{}: idle {}", kind.name(), conn.name());
            match measure(bench, kind, conn, backend_addr, n) {
                Ok(row) => rows.push(row),
                Err(error) => {
                    eprintln!("{} idle {}: FAILED: {error:#}", kind.name(), conn.name());
                    notes.push(format!(
                        "{} {}: FAILED: {error:#}",
                        kind.name(),
                        conn.name()
                    ));
                    failed = true;
                }
            }
        }
        backend_process.stop()?;
    }
    print!("{}", table(&rows));
    for note in &notes {
        println!("\n- {note}");
    }
    Ok(failed)
}

/// Connections per row: [`CONNECTIONS`], or what the open-file limit leaves room for (each
/// connection takes a descriptor here; the proxies raise their own limits).
fn connections() -> usize {
    soft_nofile_limit()
        .map_or(CONNECTIONS, |limit| {
            CONNECTIONS.min(usize::try_from(limit.saturating_sub(WARM as u64 + 200)).unwrap_or(0))
        })
        .max(1)
}

fn measure(
    bench: &Bench<'_>,
    kind: ProxyKind,
    conn: Kind,
    backend: SocketAddr,
    n: usize,
) -> Result<Row> {
    let proxy = Proxy::start(kind, conn.config(), backend, bench.bins, bench.pin)?;
    let addr = proxy.addr;
    let host = proxy.host.clone();
    let (phase_tx, phase_rx) = mpsc::channel::<Result<()>>();
    let (next_tx, next_rx) = mpsc::channel::<()>();
    let pin = bench.pin;
    let (rss_before, rss_after) = thread::scope(|scope| -> Result<(u64, u64)> {
        let client = scope.spawn(move || {
            on_load_cpu(pin, move |rt| {
                rt.block_on(async {
                    let warm = open(addr, conn, host.as_deref(), WARM).await;
                    let _ = phase_tx.send(warm.as_ref().map(drop).map_err(|e| anyhow!("{e:#}")));
                    let _ = next_rx.recv();
                    let idle = open(addr, conn, host.as_deref(), n).await;
                    let _ = phase_tx.send(idle.as_ref().map(drop).map_err(|e| anyhow!("{e:#}")));
                    // Held until the RSS is read.
                    let _ = next_rx.recv();
                    drop((warm, idle));
                });
                Ok(())
            })
        });
        let measured = (|| {
            phase_rx
                .recv()
                .context("the client thread ended")?
                .context("warm-up")?;
            thread::sleep(SETTLE);
            let before = proxy.rss_bytes()?.context("no RSS")?;
            let _ = next_tx.send(());
            phase_rx.recv().context("the client thread ended")??;
            thread::sleep(SETTLE);
            let after = proxy.rss_bytes()?.context("no RSS")?;
            Ok((before, after))
        })();
        let _ = next_tx.send(());
        let _ = next_tx.send(());
        client
            .join()
            .map_err(|_| anyhow!("the client thread panicked"))??;
        measured
    })?;
    proxy.stop()?;
    Ok(Row {
        kind,
        conn,
        connections: n,
        rss_before,
        rss_after,
    })
}

/// Opens `n` connections one after another, each after one exchange: a `GET` answered 200
/// (`http1`, `h2`), or 1 KiB written and echoed back (`tcp`).
async fn open(addr: SocketAddr, conn: Kind, host: Option<&str>, n: usize) -> Result<Vec<Held>> {
    let mut conns = Vec::with_capacity(n);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\n\r\n",
        host.unwrap_or("idle.example")
    );
    let opaque = vec![b'x'; 1024];
    for i in 0..n {
        let one = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            match conn {
                Kind::H2 => return h2_get(stream, host.unwrap_or("idle.example")).await,
                Kind::Http1 => {
                    stream.write_all(request.as_bytes()).await?;
                    read_response(&mut stream).await?;
                }
                Kind::Tcp => {
                    stream.write_all(&opaque).await?;
                    let mut back = vec![0u8; opaque.len()];
                    stream.read_exact(&mut back).await?;
                    if back != opaque {
                        bail!("the echo differs");
                    }
                }
            }
            anyhow::Ok(Held::Stream { _stream: stream })
        };
        match tokio::time::timeout(SETUP_TIMEOUT, one).await {
            Ok(Ok(stream)) => conns.push(stream),
            Ok(Err(error)) => bail!("connection {i}: {error:#}"),
            Err(_) => bail!("connection {i}: no answer within {SETUP_TIMEOUT:?}"),
        }
    }
    Ok(conns)
}

/// An h2c connection (prior knowledge) with one `GET` answered 200 and its body read.
async fn h2_get(stream: TcpStream, host: &str) -> Result<Held> {
    let (send, connection) = h2::client::handshake(stream).await?;
    let task = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut send = send.ready().await?;
    let request = http::Request::get(format!("http://{host}/")).body(())?;
    let (response, _) = send.send_request(request, true)?;
    let response = response.await?;
    if response.status() != http::StatusCode::OK {
        bail!("not a 200: {}", response.status());
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(Held::H2 {
        _send: send,
        _task: task,
    })
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads one response with a `content-length` body; fails on any status but 200.
async fn read_response(stream: &mut TcpStream) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before a whole response");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        if !text.starts_with("http/1.1 200 ") {
            bail!("not a 200: {:?}", text.lines().next());
        }
        let len = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .context("no content-length")?;
        if buf.len() >= head + 4 + len {
            return Ok(());
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| proxy | connection | idle connections | RSS before MiB | RSS after MiB | bytes per idle connection |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let per = row.rss_after.saturating_sub(row.rss_before) / row.connections as u64;
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {} |\n",
            row.kind.name(),
            row.conn.name(),
            row.connections,
            row.rss_before as f64 / crate::MIB,
            row.rss_after as f64 / crate::MIB,
            per
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_divides_the_growth_by_the_connections() {
        let t = table(&[Row {
            kind: ProxyKind::Haproxy,
            conn: Kind::Tcp,
            connections: 1000,
            rss_before: 10 << 20,
            rss_after: (10 << 20) + 512_000,
        }]);
        assert!(
            t.contains("| haproxy | tcp | 1000 | 10.0 | 10.5 | 512 |"),
            "{t}"
        );
    }
}
