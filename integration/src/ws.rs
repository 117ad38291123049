//! A minimal WebSocket (RFC 6455) echo server and client, by hand on tokio, to prove that a
//! proxy tunnels HTTP/1.1 upgrades: the handshake, masked client frames, echo and close.
//! Fragmented messages are echoed frame by frame by the server; the client rejects them.

use std::io;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MAX_PAYLOAD: u64 = 16 << 20;
const MAX_HEAD: usize = 16 << 10;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its status code and reason, if it had any.
    Close(Option<(u16, String)>),
}

/// A running echo server; it stops when the test's runtime does.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// The head of every handshake request, as the server received it.
    pub requests: mpsc::UnboundedReceiver<String>,
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + the RFC's GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha.finalize())
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Accepts WebSocket handshakes and echoes every data frame; answers pings, and a close with
/// the same close, then closes the connection. A request that is no upgrade gets a 400.
pub async fn echo() -> Server {
    echo_on(crate::tcp::bind().await).await
}

pub async fn echo_on(listener: TcpListener) -> Server {
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = serve_conn(stream, tx).await;
            });
        }
    });
    Server { addr, requests }
}

async fn serve_conn(stream: TcpStream, seen: mpsc::UnboundedSender<String>) -> io::Result<()> {
    let mut conn = BufReader::new(stream);
    let head = read_head(&mut conn).await?;
    let _ = seen.send(head.clone());
    let has = |name: &str, token: &str| {
        header(&head, name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let key = header(&head, "sec-websocket-key");
    let Some(key) = key.filter(|_| {
        head.starts_with("GET ")
            && has("upgrade", "websocket")
            && has("connection", "upgrade")
            && has("sec-websocket-version", "13")
    }) else {
        let refusal = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        conn.get_mut().write_all(refusal.as_bytes()).await?;
        return conn.get_mut().shutdown().await;
    };
    let accept = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {}\r\n\r\n",
        accept_key(key)
    );
    conn.get_mut().write_all(accept.as_bytes()).await?;
    loop {
        let (fin, opcode, payload) = read_frame(&mut conn, true).await?;
        let out = conn.get_mut();
        match opcode {
            CLOSE => {
                write_frame(out, true, CLOSE, &payload, None).await?;
                return out.shutdown().await;
            }
            PING => write_frame(out, true, PONG, &payload, None).await?,
            PONG => {}
            _ => write_frame(out, fin, opcode, &payload, None).await?,
        }
    }
}

/// A WebSocket client connection.
#[derive(Debug)]
pub struct Client {
    conn: BufReader<TcpStream>,
    /// The head of the server's `101 Switching Protocols` response.
    pub response: String,
    rng: u64,
}

impl Client {
    /// Connects to `addr`, asks `GET /` with `Host: host` to upgrade, and checks the
    /// `101` and its `Sec-WebSocket-Accept`. Any other answer is an `InvalidData` error
    /// that quotes the response head.
    pub async fn connect(addr: SocketAddr, host: &str) -> io::Result<Client> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut rng = (nanos as u64) ^ u64::from(addr.port()) | 1;
        let key_bytes: Vec<u8> = (0..2).flat_map(|_| next(&mut rng).to_le_bytes()).collect();
        let key = base64(&key_bytes);
        let mut conn = BufReader::new(TcpStream::connect(addr).await?);
        let request = format!(
            "GET / HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
        );
        conn.get_mut().write_all(request.as_bytes()).await?;
        let response = read_head(&mut conn).await?;
        let expected = accept_key(&key);
        if !response.starts_with("HTTP/1.1 101")
            || header(&response, "sec-websocket-accept") != Some(expected.as_str())
        {
            return Err(invalid(format!("no WebSocket upgrade: {response:?}")));
        }
        Ok(Client {
            conn,
            response,
            rng,
        })
    }

    /// Sends one unfragmented message, masked as a client must.
    pub async fn send(&mut self, msg: &Message) -> io::Result<()> {
        let (opcode, payload) = match msg {
            Message::Text(text) => (TEXT, text.as_bytes().to_vec()),
            Message::Binary(data) => (BINARY, data.clone()),
            Message::Ping(data) => (PING, data.clone()),
            Message::Pong(data) => (PONG, data.clone()),
            Message::Close(None) => (CLOSE, Vec::new()),
            Message::Close(Some((code, reason))) => {
                (CLOSE, [&code.to_be_bytes()[..], reason.as_bytes()].concat())
            }
        };
        let mask = (next(&mut self.rng) as u32).to_be_bytes();
        write_frame(self.conn.get_mut(), true, opcode, &payload, Some(mask)).await
    }

    /// Reads the next message; the server's frames must be unmasked and unfragmented.
    pub async fn recv(&mut self) -> io::Result<Message> {
        let (fin, opcode, payload) = read_frame(&mut self.conn, false).await?;
        if !fin || opcode == CONTINUATION {
            return Err(invalid("fragmented message"));
        }
        Ok(match opcode {
            TEXT => Message::Text(String::from_utf8(payload).map_err(invalid)?),
            BINARY => Message::Binary(payload),
            PING => Message::Ping(payload),
            PONG => Message::Pong(payload),
            CLOSE if payload.len() >= 2 => Message::Close(Some((
                u16::from_be_bytes([payload[0], payload[1]]),
                String::from_utf8_lossy(&payload[2..]).into_owned(),
            ))),
            CLOSE => Message::Close(None),
            other => return Err(invalid(format!("opcode {other:#x}"))),
        })
    }

    /// Sends `msg` and reads the next message (its echo, from the echo server).
    pub async fn roundtrip(&mut self, msg: &Message) -> io::Result<Message> {
        self.send(msg).await?;
        self.recv().await
    }

    /// The closing handshake: sends a close with `code`, skips data still in flight until
    /// the peer's close, returns that, then waits for the connection to end.
    pub async fn close(mut self, code: u16) -> io::Result<Message> {
        self.send(&Message::Close(Some((code, String::new()))))
            .await?;
        loop {
            if let reply @ Message::Close(_) = self.recv().await? {
                let mut rest = Vec::new();
                self.conn.read_to_end(&mut rest).await?;
                return Ok(reply);
            }
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// xorshift64: masks and keys need only differ, not be secret, in tests.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// An HTTP head up to its blank line, without that line.
async fn read_head(conn: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
        head.push_str(&line);
        if head.len() > MAX_HEAD {
            return Err(invalid("HTTP head too long"));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
    masked: bool,
) -> io::Result<(bool, u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    if head[0] & 0x70 != 0 {
        return Err(invalid("reserved bits set"));
    }
    if (head[1] & 0x80 != 0) != masked {
        return Err(invalid(if masked {
            "unmasked client frame"
        } else {
            "masked server frame"
        }));
    }
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_PAYLOAD {
        return Err(invalid(format!("frame of {len} bytes")));
    }
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i % 4]);
    }
    Ok((head[0] & 0x80 != 0, head[0] & 0x0f, payload))
}

async fn write_frame(
    w: &mut TcpStream,
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    w.write_all(&frame).await
}
