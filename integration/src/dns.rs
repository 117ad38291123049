//! A minimal authoritative DNS server for tests (RFC 1035), written by hand on tokio: UDP
//! and, when the port is free for it, TCP on the same loopback port.
//!
//! - [`server`] starts it with no names; [`DnsServer::set`] replaces a name's A records.
//! - A query for a known name is answered with all its A records (type A) or with NOERROR
//!   and no answers (NODATA, any other type); an unknown name gets NXDOMAIN. Responses are
//!   authoritative, copy RD, set RA, and carry no additional records (EDNS in the query is
//!   ignored). A UDP response over 512 bytes is sent truncated (TC) so that the client
//!   retries over TCP.
//! - Anything that is not a well-formed standard query with one question is ignored.
//! - [`DnsServer::queries`] counts the queries answered per name, so that a test can see
//!   how often a client asked.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

// === types ===

/// A running server; its tasks stop when it is dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    /// Lowercase names without a trailing dot → (A records, TTL in seconds).
    records: Mutex<HashMap<String, (Vec<Ipv4Addr>, u32)>>,
    /// Lowercase names without a trailing dot → queries answered.
    queries: Mutex<HashMap<String, usize>>,
}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const NXDOMAIN: u16 = 3;
const REFUSED: u16 = 5;
/// The largest UDP response a client without EDNS accepts.
const UDP_LIMIT: usize = 512;

// === functions ===

/// Starts a server on a free loopback port (UDP; TCP on the same port if it can be bound).
pub async fn server() -> DnsServer {
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS UDP");
    let addr = udp.local_addr().unwrap();
    let state = Arc::new(State::default());
    let mut tasks = vec![tokio::spawn(serve_udp(udp, state.clone()))];
    if let Ok(tcp) = TcpListener::bind(addr).await {
        tasks.push(tokio::spawn(serve_tcp(tcp, state.clone())));
    }
    DnsServer { addr, state, tasks }
}

async fn serve_udp(socket: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(mut response) = state.answer(&buf[..n]) {
            if response.len() > UDP_LIMIT {
                // Keep the header and the question; TC asks the client to use TCP.
                let question_end = question_end(&response).unwrap_or(12);
                response.truncate(question_end);
                response[2] |= 0x02;
                response[6..8].copy_from_slice(&0u16.to_be_bytes());
            }
            let _ = socket.send_to(&response, peer).await;
        }
    }
}

/// Accepts connections; each one's task is in a [`JoinSet`], so aborting this task (when
/// the server is dropped) aborts them too.
async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve_conn(stream, state.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Length-prefixed messages (RFC 1035 §4.2.2), as many as the client sends.
async fn serve_conn(mut stream: TcpStream, state: Arc<State>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(response) = state.answer(&query) else {
            continue;
        };
        let mut framed = (response.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Reads the question's name (lowercase, dotted) and returns it with the offset just after
/// QTYPE and QCLASS; `None` if it is malformed or compressed.
fn question(packet: &[u8]) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = std::str::from_utf8(packet.get(at..at + len)?).ok()?;
        labels.push(label.to_ascii_lowercase());
        at += len;
    }
    if at - 12 > 255 || at + 4 > packet.len() {
        return None;
    }
    Some((labels.join("."), at + 4))
}

fn question_end(packet: &[u8]) -> Option<usize> {
    question(packet).map(|(_, end)| end)
}

fn u16_at(packet: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

// === impl DnsServer ===

impl DnsServer {
    /// Replaces the A records of `name` (case-insensitive, trailing dot optional).
    pub fn set(&self, name: &str, addrs: &[Ipv4Addr], ttl_secs: u32) {
        self.state
            .records
            .lock()
            .unwrap()
            .insert(normalize(name), (addrs.to_vec(), ttl_secs));
    }

    /// How many queries for `name` (any type) were answered so far.
    pub fn queries(&self, name: &str) -> usize {
        let queries = self.state.queries.lock().unwrap();
        queries.get(&normalize(name)).copied().unwrap_or(0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

// === impl State ===

impl State {
    /// The response to `query`, or `None` if it is not a standard query with one question.
    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let flags = u16_at(query, 2);
        let (is_response, opcode) = (flags & 0x8000 != 0, (flags >> 11) & 0xf);
        if is_response || opcode != 0 || u16_at(query, 4) != 1 {
            return None;
        }
        let (name, end) = question(query)?;
        let (qtype, qclass) = (u16_at(query, end - 4), u16_at(query, end - 2));
        let (rcode, answers) = match self.records.lock().unwrap().get(&name) {
            _ if qclass != CLASS_IN => (REFUSED, Vec::new()),
            None => (NXDOMAIN, Vec::new()),
            Some((addrs, ttl)) if qtype == TYPE_A => {
                (0, addrs.iter().map(|a| (*a, *ttl)).collect())
            }
            Some(_) => (0, Vec::new()),
        };
        *self.queries.lock().unwrap().entry(name).or_default() += 1;

        // QR, opcode 0, AA, RD as asked, RA, rcode.
        let flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode;
        let mut out = Vec::with_capacity(end + answers.len() * 16);
        out.extend_from_slice(&query[..2]);
        out.extend_from_slice(&flags.to_be_bytes());
        for count in [1, answers.len() as u16, 0, 0] {
            out.extend_from_slice(&u16::to_be_bytes(count));
        }
        out.extend_from_slice(&query[12..end]);
        for (addr, ttl) in answers {
            // The name is a pointer to the question's (offset 12).
            out.extend_from_slice(&[0xc0, 12]);
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&addr.octets());
        }
        Some(out)
    }
}
