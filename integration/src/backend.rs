//! An HTTP/1 backend for balancing and routing tests: it answers every request (GETs: a
//! head and no body) with its id as the body, after a delay the test can change, with 200 or
//! (when broken) 500, and keeps a count and the heads it read.

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
    heads: Arc<Mutex<Vec<String>>>,
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
}

/// A backend answering with `id` after `delay_ms`.
pub async fn backend(id: &'static str, delay_ms: u64) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let delay = Arc::new(AtomicU64::new(delay_ms));
    let broken = Arc::new(AtomicBool::new(false));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (h, d, b, r) = (hits.clone(), delay.clone(), broken.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (h, d, b, r) = (h.clone(), d.clone(), b.clone(), r.clone());
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
                    r.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    h.fetch_add(1, Ordering::SeqCst);
                    let delay = d.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let status = if b.load(Ordering::SeqCst) {
                        "500 Internal Server Error"
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
        heads,
    }
}
