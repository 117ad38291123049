//! An HTTP/1 backend for balancing and routing tests: it answers every request (a head and
//! a `content-length` body, if any) with its id as the body, after a delay the test can
//! change, with 200, or 500 when broken, or 503 for a set share of requests (a fixed
//! pseudo-random sequence); it keeps a count and the heads and bodies it read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running backend; its task runs until the test's runtime ends.
pub struct Backend {
    pub addr: SocketAddr,
    pub id: &'static str,
    /// Requests read.
    pub hits: Arc<AtomicUsize>,
    /// The delay before each answer.
    pub delay_ms: Arc<AtomicU64>,
    /// Answer 500 from now on.
    pub broken: Arc<AtomicBool>,
    /// Answer 503 to this percentage of requests.
    pub fail_percent: Arc<AtomicU64>,
    heads: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Backend {
    /// Requests read so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The request heads read so far, in order (lowercase header names as sent).
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// The request bodies read so far, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

/// A backend answering with `id` after `delay_ms`.
pub async fn backend(id: &'static str, delay_ms: u64) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let delay = Arc::new(AtomicU64::new(delay_ms));
    let broken = Arc::new(AtomicBool::new(false));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let fail_percent = Arc::new(AtomicU64::new(0));
    let (h, d, b, r) = (hits.clone(), delay.clone(), broken.clone(), heads.clone());
    let (bs, f) = (bodies.clone(), fail_percent.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (h, d, b, r) = (h.clone(), d.clone(), b.clone(), r.clone());
            let (bs, f) = (bs.clone(), f.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let length = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    bs.lock().unwrap().push(buf.drain(..length).collect());
                    r.lock().unwrap().push(head);
                    let n = h.fetch_add(1, Ordering::SeqCst) as u64;
                    let draw = (n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % 100;
                    let delay = d.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let status = if b.load(Ordering::SeqCst) {
                        "500 Internal Server Error"
                    } else if draw < f.load(Ordering::SeqCst) {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{id}",
                        id.len()
                    );
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Backend {
        addr,
        id,
        hits,
        delay_ms: delay,
        broken,
        fail_percent,
        heads,
        bodies,
    }
}
