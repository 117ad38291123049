//! Reference L4 forwarder: a baseline for benchmarks only, never a product path.
//!
//! `ref-forwarder LISTEN_ADDR TARGET_ADDR` accepts connections, sets `TCP_NODELAY` on both
//! sides, connects to `TARGET_ADDR` and copies bytes both ways with 64 KiB buffers
//! (`tokio::io::copy_bidirectional_with_sizes`), forwarding half-closes. It runs on one tokio
//! current-thread runtime, like one ringlink shard, so that `ringlink-bench` can compare the
//! CPU each spends per request.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

const BUF_SIZE: usize = 64 << 10;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target] = args.as_slice() else {
        anyhow::bail!("usage: ref-forwarder LISTEN_ADDR TARGET_ADDR");
    };
    let listen: SocketAddr = listen.parse()?;
    let target: SocketAddr = target.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(forward(client, target));
        }
    })
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    let mut server = match TcpStream::connect(target).await {
        Ok(server) => server,
        Err(error) => return eprintln!("ref-forwarder: connect {target}: {error}"),
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Resets when the load generator stops are expected; nothing to report.
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUF_SIZE, BUF_SIZE)
        .await;
}
