//! The soak's backend: one listener that speaks every protocol the churn sends, since
//! ringlink forwards every connection to one address (`RINGLINK_ORIG_DST_OVERRIDE`) and
//! `bench-backend` serves one protocol per process (and has no large bodies nor WebSocket).
//!
//! It runs in `ringlink-bench`, on the load thread's tokio runtime (pinned to the load CPU).
//! A connection whose first bytes are the h2 preface is served as h2c; any other as
//! HTTP/1.1, keep-alive:
//!
//! - `GET /big`: `200` with a [`BIG_BODY`]-byte body (the slow readers and mid-response
//!   resets);
//! - a WebSocket upgrade (`upgrade: websocket`): `101`, then every frame echoed (unmasked)
//!   until a close, which is echoed before the connection is closed;
//! - anything else: `200` with the 12-byte body `bench-backend` sends. Request bodies framed
//!   by `content-length` are read and discarded.
//!
//! h2: `/slow` answers `200` and then [`SLOW_CHUNKS`] data frames [`SLOW_GAP`] apart (the
//! streams the client resets after the response head); anything else `200` and 12 bytes.
//!
//! Nothing is recorded: a soak runs for hours and the backend must not grow.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of the body of `GET /big`.
pub const BIG_BODY: usize = 1 << 20;
/// Data frames of an h2 `/slow` response, each of 1 KiB.
pub const SLOW_CHUNKS: usize = 10;
/// Time between two data frames of an h2 `/slow` response.
pub const SLOW_GAP: Duration = Duration::from_millis(20);

const BODY: &[u8] = b"hello world\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
const HEAD_END: &[u8] = b"\r\n\r\n";
const MAX_HEAD: usize = 64 << 10;
/// Larger WebSocket frames close the connection; the churn sends a few bytes.
const MAX_FRAME: u64 = 1 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

// === types ===

/// A parsed HTTP/1 request head: what the backend needs of it.
#[derive(Debug, Default, PartialEq, Eq)]
struct RequestHead {
    path: String,
    content_length: u64,
    close: bool,
    websocket_key: Option<String>,
}

// === functions ===

/// Accepts connections until the runtime stops; each is served by a task of its own.
pub async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            // Resets are what the soak is about; nothing to report here.
            let _ = serve_conn(stream).await;
        });
    }
}

async fn serve_conn(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut first = [0u8; 14];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(());
        }
        if n >= H2_PREFACE.len() || first[..n] != H2_PREFACE[..n] {
            break;
        }
        // Part of what may be a preface: wait for the rest.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if first.starts_with(H2_PREFACE) {
        serve_h2(stream).await.map_err(io::Error::other)
    } else {
        serve_http1(stream).await
    }
}

async fn serve_http1(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4 << 10);
    loop {
        let Some(end) = read_until_head_end(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let head = parse_request(&buf[..end])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed request"))?;
        buf.drain(..end);
        discard_body(&mut stream, &mut buf, head.content_length).await?;
        if let Some(key) = &head.websocket_key {
            let accept = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                 sec-websocket-accept: {}\r\n\r\n",
                ringlink_integration::ws::accept_key(key)
            );
            stream.write_all(accept.as_bytes()).await?;
            let (read, mut write) = stream.split();
            return echo_frames(&mut buf.as_slice().chain(read), &mut write).await;
        }
        let close = if head.close {
            "connection: close\r\n"
        } else {
            ""
        };
        if head.path == "/big" {
            let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n{close}\r\n");
            stream.write_all(response.as_bytes()).await?;
            for _ in 0..BIG_BODY / ZEROS.len() {
                stream.write_all(&ZEROS).await?;
            }
        } else {
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n",
                BODY.len()
            );
            stream
                .write_all(&[response.as_bytes(), BODY].concat())
                .await?;
        }
        if head.close {
            return stream.shutdown().await;
        }
    }
}

/// Reads until `buf` holds a whole request head; its length (with the blank line), or
/// `None` at the end of the stream between requests.
async fn read_until_head_end(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let mut scanned = 0;
    loop {
        if let Some(at) = find(&buf[scanned..], HEAD_END) {
            return Ok(Some(scanned + at + HEAD_END.len()));
        }
        scanned = buf.len().saturating_sub(HEAD_END.len() - 1);
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        buf.reserve(4 << 10);
        if stream.read_buf(buf).await? == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
    }
}

/// Reads and drops `len` body bytes, those already in `buf` first.
async fn discard_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    let buffered = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
    buf.drain(..buffered);
    let mut left = len - buffered as u64;
    let mut chunk = [0u8; 16 << 10];
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match stream.read(&mut chunk[..want]).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => left -= n as u64,
        }
    }
    Ok(())
}

fn parse_request(head: &[u8]) -> Option<RequestHead> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (_method, path) = (request_line.next()?, request_line.next()?);
    let mut parsed = RequestHead {
        path: path.to_string(),
        ..RequestHead::default()
    };
    let mut upgrade = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => parsed.content_length = value.parse().ok()?,
            // Chunked request bodies are not sent by the churn.
            "transfer-encoding" => return None,
            "connection" => parsed.close |= has_token(value, "close"),
            "upgrade" => upgrade |= has_token(value, "websocket"),
            "sec-websocket-key" => parsed.websocket_key = Some(value.to_string()),
            _ => {}
        }
    }
    if !upgrade {
        parsed.websocket_key = None;
    }
    Some(parsed)
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Echoes WebSocket frames (client frames are masked, the echo is not) until a close frame,
/// which is echoed before the write side is shut.
async fn echo_frames(
    read: &mut (impl AsyncRead + Unpin),
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        read.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => u64::from(read.read_u16().await?),
            127 => read.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 {
            read.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        read.read_exact(&mut payload).await?;
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= mask[i % 4]);
        let mut frame = vec![head[0]];
        match payload.len() {
            n if n < 126 => frame.push(n as u8),
            n if n <= 0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&payload);
        write.write_all(&frame).await?;
        if opcode == 0x8 {
            return write.shutdown().await;
        }
    }
}

async fn serve_h2(stream: TcpStream) -> Result<(), h2::Error> {
    let mut conn = h2::server::handshake(stream).await?;
    // `accept` also drives the connection; `/slow` responses go on in tasks of their own.
    while let Some(request) = conn.accept().await {
        let (request, mut respond) = request?;
        let slow = request.uri().path() == "/slow";
        let response = http::Response::builder()
            .status(200)
            .body(())
            .expect("a valid response");
        if !slow {
            // A stream the client has reset already fails here: nothing to answer.
            if let Ok(mut body) = respond.send_response(response, false) {
                let _ = body.send_data(Bytes::from_static(BODY), true);
            }
            continue;
        }
        tokio::spawn(async move {
            let Ok(mut body) = respond.send_response(response, false) else {
                return;
            };
            for i in 0..SLOW_CHUNKS {
                tokio::time::sleep(SLOW_GAP).await;
                let chunk = Bytes::from_static(&ZEROS[..1024]);
                // Fails once the client has reset the stream.
                if body.send_data(chunk, i + 1 == SLOW_CHUNKS).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let get = parse_request(b"GET /big HTTP/1.1\r\nhost: soak\r\n\r\n").unwrap();
        assert_eq!(get.path, "/big");
        assert!(!get.close && get.websocket_key.is_none());
        let post = parse_request(
            b"POST /upload HTTP/1.1\r\nContent-Length: 42\r\nConnection: keep-alive, close\r\n\r\n",
        )
        .unwrap();
        assert_eq!((post.content_length, post.close), (42, true));
        let ws = parse_request(
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              sec-websocket-key: abc=\r\n\r\n",
        )
        .unwrap();
        assert_eq!(ws.websocket_key.as_deref(), Some("abc="));
        // A key without an upgrade is no upgrade.
        let no = parse_request(b"GET / HTTP/1.1\r\nsec-websocket-key: abc=\r\n\r\n").unwrap();
        assert!(no.websocket_key.is_none());
        assert!(parse_request(b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n").is_none());
        assert!(parse_request(b"GET\r\n\r\n").is_none());
    }
}
