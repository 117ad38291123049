//! DNS names through the proxy: a request sent straight to the outbound port is routed by its
//! authority, the name is resolved with the test's own DNS server (`RINGLINK_DNS_NAMESERVERS`)
//! and requests are balanced over every address of the name; answers are cached for their
//! TTL and followed when they change; a name that does not exist is answered with an error at
//! once.
//!
//! The backends of one name share a port on different loopback addresses (127.0.0.2, .3, .4),
//! so that the name's A records alone tell them apart, and each answers with its address.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlink_integration::http1::{Conn, Response};
use ringlink_integration::{both_runtimes, dns, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

both_runtimes!(
    name_with_several_addresses_is_balanced_across_them,
    dns_answer_changes_are_followed,
    unknown_name_is_answered_quickly,
);

const NAME: &str = "svc.test";
/// How long one request through the proxy may take before the test gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

// === backends ===

/// HTTP/1.1 servers on one port of several loopback addresses.
struct Backends {
    port: u16,
    ips: Vec<Ipv4Addr>,
    /// Requests answered, per address (same order as `ips`).
    hits: Vec<Arc<AtomicUsize>>,
}

impl Backends {
    fn hits(&self, ip: Ipv4Addr) -> usize {
        let i = self.ips.iter().position(|a| *a == ip).expect("a backend");
        self.hits[i].load(Ordering::SeqCst)
    }

    fn all_hits(&self) -> BTreeMap<String, usize> {
        self.ips
            .iter()
            .map(|ip| (ip.to_string(), self.hits(*ip)))
            .collect()
    }
}

/// Binds every address in `ips` on one port (the first address picks a free port; another
/// is tried if it is taken on the others) and answers every keep-alive request with
/// `200 OK` and the address as the body.
async fn backends(ips: &[Ipv4Addr]) -> Backends {
    for _ in 0..50 {
        let Ok(first) = listen(SocketAddr::from((ips[0], 0))) else {
            continue;
        };
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match listen(SocketAddr::from((*ip, port))) {
                Ok(listener) => listeners.push(listener),
                Err(_) => break,
            }
        }
        if listeners.len() < ips.len() {
            continue;
        }
        let mut hits = Vec::new();
        for (listener, ip) in listeners.into_iter().zip(ips) {
            let count = Arc::new(AtomicUsize::new(0));
            hits.push(count.clone());
            let id = ip.to_string();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, id.clone(), count.clone()));
                }
            });
        }
        return Backends {
            port,
            ips: ips.to_vec(),
            hits,
        };
    }
    panic!("no port free on all of {ips:?}");
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Answers each request on the connection (heads, then any content-length body) with `id`.
async fn answer(mut stream: TcpStream, id: String, hits: Arc<AtomicUsize>) {
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{id}",
        id.len()
    );
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let length: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= head + length {
                    buf.drain(..head + length);
                    hits.fetch_add(1, Ordering::SeqCst);
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return,
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// === client ===

/// Sends `GET /` for `host` on `conn` and reads the response; `Err` with what went wrong.
async fn get(conn: &mut Conn, host: &str) -> Result<Response, String> {
    conn.send(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.response("GET")).await {
        Ok(Some(res)) => Ok(res),
        Ok(None) => Err(format!("the proxy closed the connection (GET {host})")),
        Err(_) => Err(format!(
            "no response within {REQUEST_TIMEOUT:?} (GET {host})"
        )),
    }
}

/// Like [`get`], but panics (with the proxy's logs) unless the answer is a 200; returns
/// its body, the backend's address.
async fn get_ok(conn: &mut Conn, host: &str, proxy: &proxy::Proxy) -> String {
    match get(conn, host).await {
        Ok(res) if res.status == 200 => res.body_str().to_string(),
        Ok(res) => panic!(
            "GET {host}: {}\n{}{}\nproxy logs:\n{}",
            res.status,
            res.head,
            res.body_str(),
            proxy.logs()
        ),
        Err(error) => panic!("{error}\nproxy logs:\n{}", proxy.logs()),
    }
}

fn dns_proxy(runtime: &str, dns: &dns::DnsServer) -> proxy::Builder {
    proxy::new(runtime)
        .env("RINGLINK_DNS_NAMESERVERS", dns.addr)
        .env(
            "LINKERD2_PROXY_LOG",
            "info,ringlink_engine=debug,ringlink_control=debug",
        )
}

// === tests ===

async fn name_with_several_addresses_is_balanced_across_them(runtime: &'static str) {
    const CONNS: usize = 6;
    const PER_CONN: usize = 50;
    const TOTAL: usize = CONNS * PER_CONN;
    let ips = [ip(2), ip(3), ip(4)];
    let backends = backends(&ips).await;
    let dns = dns::server().await;
    dns.set(NAME, &ips, 30);
    let proxy = dns_proxy(runtime, &dns).spawn();
    let host = format!("{NAME}:{}", backends.port);

    // Keep-alive connections sending their requests concurrently.
    let mut clients = JoinSet::new();
    for _ in 0..CONNS {
        let (outbound, host) = (proxy.outbound, host.clone());
        clients.spawn(async move {
            let mut conn = Conn::connect(outbound).await;
            let mut bodies = Vec::new();
            for _ in 0..PER_CONN {
                match get(&mut conn, &host).await {
                    Ok(res) if res.status == 200 => bodies.push(res.body_str().to_string()),
                    Ok(res) => {
                        return Err(format!("{}\n{}{}", res.status, res.head, res.body_str()))
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(bodies)
        });
    }
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(result) = clients.join_next().await {
        match result.expect("client task") {
            Ok(bodies) => bodies
                .into_iter()
                .for_each(|body| *answered.entry(body).or_default() += 1),
            Err(error) => panic!("{error}\nproxy logs:\n{}", proxy.logs()),
        }
    }

    // Every response came from one of the name's addresses, as the backends counted them.
    let expected: BTreeMap<String, usize> = backends.all_hits();
    assert_eq!(
        answered, expected,
        "responses by body vs requests counted by the backends"
    );
    assert_eq!(expected.values().sum::<usize>(), TOTAL);
    for (ip, hits) in &expected {
        assert!(
            *hits * 100 >= TOTAL * 15,
            "{ip} got {hits} of {TOTAL} requests (< 15%): {expected:?}\nproxy logs:\n{}",
            proxy.logs()
        );
    }
    // The answer was cached, not asked for per request.
    let queries = dns.queries(NAME);
    assert!(
        (1..=10).contains(&queries),
        "{queries} DNS queries for {TOTAL} requests"
    );
}

async fn dns_answer_changes_are_followed(runtime: &'static str) {
    let (old, new) = (ip(2), ip(3));
    let backends = backends(&[old, new]).await;
    let dns = dns::server().await;
    dns.set(NAME, &[old], 1);
    let proxy = dns_proxy(runtime, &dns)
        .env("LINKERD2_PROXY_DNS_MIN_TTL", "1s")
        .spawn();
    let host = format!("{NAME}:{}", backends.port);
    let mut conn = Conn::connect(proxy.outbound).await;

    for _ in 0..10 {
        assert_eq!(get_ok(&mut conn, &host, &proxy).await, old.to_string());
    }
    assert_eq!(backends.hits(old), 10);
    assert_eq!(backends.hits(new), 0);

    // The name moves; once the TTL runs out, requests follow it.
    dns.set(NAME, &[new], 1);
    let moved = Instant::now();
    let deadline = moved + Duration::from_secs(5);
    let mut before = 0;
    loop {
        let body = get_ok(&mut conn, &host, &proxy).await;
        if body == new.to_string() {
            break;
        }
        assert_eq!(body, old.to_string());
        before += 1;
        assert!(
            Instant::now() < deadline,
            "still sent to {old} 5 s after the name moved ({before} requests, {} DNS queries)\n\
             proxy logs:\n{}",
            dns.queries(NAME),
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_hits = backends.hits(old);
    assert_eq!(old_hits, 10 + before);
    // From then on, nothing goes to the old address.
    for _ in 0..20 {
        assert_eq!(get_ok(&mut conn, &host, &proxy).await, new.to_string());
    }
    assert_eq!(
        backends.hits(old),
        old_hits,
        "{old} got requests after the move"
    );
    assert_eq!(backends.hits(new), 21);
    assert!(dns.queries(NAME) >= 2, "the name was resolved again");
}

async fn unknown_name_is_answered_quickly(runtime: &'static str) {
    let dns = dns::server().await;
    dns.set(NAME, &[ip(2)], 30);
    let proxy = dns_proxy(runtime, &dns).spawn();
    let mut conn = Conn::connect(proxy.outbound).await;
    let started = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(2),
        conn.request("GET / HTTP/1.1\r\nHost: missing.test:80\r\n\r\n"),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no answer within 2 s for a name that does not exist\nproxy logs:\n{}",
            proxy.logs()
        )
    });
    assert!(
        matches!(res.status, 502 | 503),
        "status {} after {:?}\n{}\nproxy logs:\n{}",
        res.status,
        started.elapsed(),
        res.head,
        proxy.logs()
    );
    assert!(
        res.header("l5d-proxy-error").is_some(),
        "no l5d-proxy-error:\n{}",
        res.head
    );
    // The error comes from our server's NXDOMAIN, not from a resolver that was never asked.
    assert!(dns.queries("missing.test") >= 1, "{}", proxy.logs());
    assert_eq!(dns.queries(NAME), 0);
}
