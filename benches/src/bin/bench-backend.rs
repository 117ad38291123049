//! Backend for `ringlink-bench`.
//!
//! `bench-backend ADDR` answers every HTTP/1.1 request on a keep-alive connection with a fixed
//! 12-byte `200 OK`. Requests are parsed only as far as their `\r\n\r\n` terminator (wrk sends
//! bodiless GETs); pipelined requests are answered with one write.
//!
//! `bench-backend --h2 ADDR` speaks h2c (HTTP/2 over cleartext TCP with prior knowledge, no
//! upgrade) and answers every request with `200`, `content-length: 12` and the same 12-byte
//! body, without reading request bodies (h2load sends bodiless GETs).
//!
//! `bench-backend --grpc ADDR` serves gRPC `ringlink.test.Echo` over h2c: the integration
//! harness's test service (`ringlink_integration::grpc`, on tonic), which `ringlink-grpc-load`
//! calls. It would keep a record of every request for tests to read; that record is closed
//! at once, so nothing accumulates (each request's headers are still copied, and dropped).
//!
//! `bench-backend --sink ADDR` reads and discards everything a connection sends, then writes
//! back the number of bytes it received as an 8-byte big-endian integer and closes.
//!
//! Runs on a tokio current-thread runtime: one thread, to be pinned with `taskset`.

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = b"hello world\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nhello world\n";
const HEAD_END: &[u8] = b"\r\n\r\n";
/// A request head longer than this closes the connection.
const MAX_HEAD: usize = 64 << 10;

#[derive(Clone, Copy)]
enum Mode {
    Http,
    H2,
    Grpc,
    Sink,
    Echo,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr) = match args.as_slice() {
        [addr] => (Mode::Http, addr.as_str()),
        [flag, addr] if flag == "--h2" => (Mode::H2, addr.as_str()),
        [flag, addr] if flag == "--grpc" => (Mode::Grpc, addr.as_str()),
        [flag, addr] if flag == "--sink" => (Mode::Sink, addr.as_str()),
        [flag, addr] if flag == "--echo" => (Mode::Echo, addr.as_str()),
        _ => anyhow::bail!("usage: bench-backend [--h2 | --grpc | --sink | --echo] LISTEN_ADDR"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        if let Mode::Grpc = mode {
            let (_, mut server) = ringlink_integration::grpc::serve_on(listener).await;
            server.requests.close();
            // The server runs on this runtime until the process is stopped.
            return std::future::pending().await;
        }
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                // Resets at the end of a load run are expected; nothing to report.
                match mode {
                    Mode::Http => drop(serve_http(stream).await),
                    Mode::H2 => drop(serve_h2(stream).await),
                    Mode::Grpc => unreachable!("served by tonic above"),
                    Mode::Sink => drop(serve_sink(stream).await),
                    Mode::Echo => drop(serve_echo(stream).await),
                }
            });
        }
    })
}

async fn serve_http(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(16 << 10);
    let mut out = Vec::with_capacity(16 << 10);
    // Bytes of `buf` already known to hold no complete terminator.
    let mut scanned = 0;
    loop {
        if buf.len() >= MAX_HEAD {
            return Ok(());
        }
        buf.reserve(4 << 10);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut consumed = 0;
        while let Some(at) = find(&buf[scanned..], HEAD_END) {
            consumed = scanned + at + HEAD_END.len();
            scanned = consumed;
            out.extend_from_slice(RESPONSE);
        }
        buf.drain(..consumed);
        // A terminator may straddle the next read: rescan the last three bytes.
        scanned = buf.len().saturating_sub(HEAD_END.len() - 1);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

async fn serve_h2(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut conn = h2::server::handshake(stream).await?;
    // `accept` also drives the connection; responses are queued without waiting, so one
    // task serves all streams of the connection.
    while let Some(request) = conn.accept().await {
        let (_request, mut respond) = request?;
        let response = http::Response::builder()
            .status(200)
            .header(http::header::CONTENT_LENGTH, BODY.len())
            .body(())?;
        let mut body = respond.send_response(response, false)?;
        body.send_data(Bytes::from_static(BODY), true)?;
    }
    Ok(())
}

async fn serve_sink(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0; 64 << 10];
    let mut received = 0u64;
    loop {
        match stream.read(&mut buf).await? {
            0 => break,
            n => received += n as u64,
        }
    }
    stream.write_all(&received.to_be_bytes()).await?;
    stream.shutdown().await
}

/// Writes back what it reads, until the end of stream (the idle test's L4 connections).
async fn serve_echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.split();
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
