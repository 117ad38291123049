use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

struct FakeLog(Mutex<String>);

impl LogLevel for FakeLog {
    fn get(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    fn set(&self, filter: &str) -> Result<(), String> {
        if filter.contains('[') {
            return Err(format!("invalid filter {filter:?}"));
        }
        *self.0.lock().unwrap() = filter.to_string();
        Ok(())
    }
}

struct Harness {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    shutdowns: Arc<AtomicUsize>,
}

async fn start(shutdown_enabled: bool) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let counter = shutdowns.clone();
    let admin = Admin {
        ready: ready.clone(),
        log_level: Box::new(FakeLog(Mutex::new("warn".into()))),
        env: vec![
            ("LINKERD2_PROXY_LOG".into(), "warn".into()),
            ("RINGLINK_RUNTIME".into(), "mono\"io".into()),
        ],
        shutdown: shutdown_enabled.then(|| {
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }) as Box<dyn Fn() + Send + Sync>
        }),
        metrics: crate::Exposition::new(Vec::new(), "test"),
    };
    tokio::spawn(serve(listener, Arc::new(admin)));
    Harness {
        addr,
        ready,
        shutdowns,
    }
}

/// Sends one request with `Connection: close` and returns (status, headers+body text).
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

#[tokio::test]
async fn live_and_ready() {
    let h = start(false).await;
    assert_eq!(call(h.addr, "GET", "/live", "").await.0, 200);
    assert_eq!(call(h.addr, "GET", "/ready", "").await.0, 503);
    h.ready.store(true, Ordering::SeqCst);
    let (status, text) = call(h.addr, "GET", "/ready", "").await;
    assert_eq!(status, 200);
    assert!(text.ends_with("\r\n\r\nready\n"), "{text}");
}

#[tokio::test]
async fn metrics_page_is_served() {
    let h = start(false).await;
    let (status, text) = call(h.addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    assert!(text.contains("proxy_build_info{version=\"test\""), "{text}");
}

#[tokio::test]
async fn metrics_are_gzipped_when_asked() {
    let h = start(false).await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\naccept-encoding: gzip\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let gz = &raw[split + 4..];
    let page = miniz_oxide::inflate::decompress_to_vec(&gz[10..gz.len() - 8]).unwrap();
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("proxy_build_info"));
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let h = start(false).await;
    assert_eq!(call(h.addr, "GET", "/nope", "").await.0, 404);
    let (status, text) = call(h.addr, "POST", "/live", "").await;
    assert_eq!(status, 405);
    assert!(
        text.to_ascii_lowercase().contains("allow: get, head"),
        "{text}"
    );
    let (status, text) = call(h.addr, "DELETE", "/proxy-log-level", "").await;
    assert_eq!(status, 405);
    assert!(text.contains("allow: GET, PUT"), "{text}");
}

#[tokio::test]
async fn log_level_get_and_put() {
    let h = start(false).await;
    let (status, text) = call(h.addr, "GET", "/proxy-log-level", "").await;
    assert_eq!(status, 200);
    assert!(text.ends_with("\r\n\r\nwarn\n"));
    assert_eq!(
        call(h.addr, "PUT", "/proxy-log-level", "debug").await.0,
        204
    );
    assert!(call(h.addr, "GET", "/proxy-log-level", "")
        .await
        .1
        .ends_with("debug\n"));
    let (status, text) = call(h.addr, "PUT", "/proxy-log-level", "info,[[").await;
    assert_eq!(status, 400);
    assert!(text.contains("invalid filter"));
    assert!(call(h.addr, "GET", "/proxy-log-level", "")
        .await
        .1
        .ends_with("debug\n"));
}

#[tokio::test]
async fn env_json_filters_by_name() {
    let h = start(false).await;
    let (status, all) = call(h.addr, "GET", "/env.json", "").await;
    assert_eq!(status, 200);
    assert!(all.contains("\"LINKERD2_PROXY_LOG\": \"warn\""));
    assert!(
        all.contains("\"RINGLINK_RUNTIME\": \"mono\\\"io\""),
        "{all}"
    );
    let (_, one) = call(h.addr, "GET", "/env.json?LINKERD2_PROXY_LOG", "").await;
    assert!(
        one.contains("LINKERD2_PROXY_LOG") && !one.contains("RINGLINK_RUNTIME"),
        "{one}"
    );
}

#[tokio::test]
async fn shutdown_only_when_enabled_and_posted() {
    let off = start(false).await;
    assert_eq!(call(off.addr, "POST", "/shutdown", "").await.0, 404);
    assert_eq!(off.shutdowns.load(Ordering::SeqCst), 0);
    let on = start(true).await;
    assert_eq!(call(on.addr, "GET", "/shutdown", "").await.0, 405);
    assert_eq!(on.shutdowns.load(Ordering::SeqCst), 0);
    assert_eq!(call(on.addr, "POST", "/shutdown", "").await.0, 200);
    assert_eq!(on.shutdowns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let h = start(false).await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream
        .write_all(b"GET /live HTTP/1.1\r\n\r\nGET /live HTTP/1.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
}

#[tokio::test]
async fn non_http_and_oversized_requests_are_refused() {
    let h = start(false).await;
    // Garbage: closed without a response.
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream
        .write_all(b"\x16\x03\x01\x00\xff garbage\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    assert!(out.is_empty(), "{out:?}");
    // A head over the limit: 431, then closed.
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let big = format!(
        "GET /live HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(MAX_HEAD)
    );
    let _ = stream.write_all(big.as_bytes()).await;
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // A body over the limit: 413.
    let (status, _) = call(h.addr, "PUT", "/proxy-log-level", &"a".repeat(MAX_BODY + 1)).await;
    assert_eq!(status, 413);
}
