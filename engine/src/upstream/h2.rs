//! Upstream HTTP/2 connections: the client handshake every h2 upstream connection goes
//! through ([`handshake`]), and the shard's shared connections ([`H2Pool`]): one multiplexed
//! connection per endpoint, direction and TLS identity and shard, as linkerd2-proxy keeps
//! one client per endpoint. They carry the streams of every HTTP/2 client connection to
//! that endpoint, and the HTTP/1 requests this proxy upgrades (`l5d-orig-proto`) to meshed
//! endpoints whose protocol hint is H2. Sharing them, an idle HTTP/2 client connection
//! holds no upstream connection of its own.
//!
//! Unlike linkerd2-proxy's, a connection whose server's stream limit
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`, 100 in many gRPC servers) the shard's streams fill
//! gets a sibling, up to [`MAX_CONNS_PER_KEY`]: each stream holds a [`Lease`] on its
//! connection while it lives, and a new stream goes to the first connection with room.
//! Long-lived calls on one connection then do not hold every other request back.
//!
//! A shared connection is made by the first request that needs it; requests arriving while
//! it is being made wait for the same one. It leaves the pool when it fails, when its
//! server closes it (the next request finds it not ready and connects anew), when it was
//! unused for the pool's idle timeout, and at the drain; in-flight streams keep it open
//! until they end.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{FutureExt, Shared};
use h2::client::SendRequest;

use crate::balance::EndpointTls;
use crate::conn::{Direction, TlsStatus};
use crate::error::ProxyError;
use crate::io::{Counted, Transport};
use crate::lifecycle::Lifecycle;
use crate::rt::Runtime;
use crate::telemetry::{Peer, Tcp};

/// Largest header list (after HPACK decoding) accepted from an upstream, in bytes.
pub const MAX_HEADER_LIST_SIZE: u32 = 64 << 10;
/// Bytes buffered per stream for sending.
pub const MAX_SEND_BUFFER: usize = 256 << 10;
/// The connection-level receive window of an upstream connection (linkerd2-proxy's
/// default, 1 MiB: a shared connection carries many streams at once, and the protocol's
/// 64 KiB would let one stream's unread body stall the others). Streams keep the
/// protocol's 64 KiB each.
pub const CONNECTION_WINDOW: u32 = 1 << 20;

// === types ===

/// A connection being (or already) made, awaited by every request to its endpoint.
pub type Connecting = Pin<Box<dyn Future<Output = Result<SendRequest<Bytes>, ConnectFailure>>>>;

/// Why an upstream h2 connection could not be made (cloneable, for every waiting request).
#[derive(Clone, Debug)]
pub enum ConnectFailure {
    /// The TCP (or TLS) connection could not be made.
    Connect {
        timeout: Option<Duration>,
        errno: Option<i32>,
        kind: io::ErrorKind,
        message: String,
    },
    /// The connection was made but the HTTP/2 handshake failed.
    Handshake(String),
}

/// What a shared connection is for: its endpoint, the side of the pod whose requests it
/// carries (its metrics' direction), and the mesh TLS it was made with (`None`:
/// plaintext). A request never rides on a connection made for another TLS identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct H2Key {
    pub direction: Direction,
    pub addr: SocketAddr,
    pub tls: Option<Arc<EndpointTls>>,
}

/// Connections shared per [`H2Key`] at most. A second one is made only while every one
/// there is carries as many of this shard's streams as its server allows
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`): one client's long-lived streams (gRPC watches)
/// must not leave every other client's requests queued behind a full connection.
pub const MAX_CONNS_PER_KEY: usize = 8;

/// The shard's shared h2 connections, by [`H2Key`].
#[derive(Default)]
pub struct H2Pool {
    conns: RefCell<HashMap<H2Key, Members>>,
    /// Set for the drain: no connection is shared any more.
    closed: Cell<bool>,
}

/// The shared connections of one [`H2Key`], and when they were last seen in use.
struct Members {
    members: Vec<Member>,
    /// Whether a stream chose one since the last sweep (a flag, not a clock read and a
    /// second map per stream).
    used: Cell<bool>,
    /// The sweep that last found them used (or when the first was made).
    seen: Instant,
}

/// One shared connection and how many of the shard's streams it carries.
#[derive(Clone)]
struct Member {
    conn: Shared<Connecting>,
    streams: Rc<Cell<usize>>,
}

/// A stream's place on a shared connection: counted against its server's limit until
/// dropped (hold it for the stream's life).
pub struct Lease(Rc<Cell<usize>>);

/// Which member a stream goes to.
enum Choice {
    /// One with room, or one still being made (whose room is not known yet).
    Room(Member),
    /// Every member is full; the least busy one.
    Full(Member),
    /// No member.
    None,
}

// === impl H2Pool ===

impl H2Pool {
    /// A ready handle on a shared connection for `key`, with the stream's [`Lease`] on it:
    /// one with room, else a new one made by `connect` (up to [`MAX_CONNS_PER_KEY`], then
    /// the least busy, where the h2 crate queues the stream until one ends). A failed
    /// connection is forgotten, so the next request tries again; one the server closed
    /// (GOAWAY, idle close) is replaced once.
    pub async fn get(
        &self,
        key: &H2Key,
        connect: impl FnOnce() -> Connecting,
    ) -> Result<(SendRequest<Bytes>, Lease), ProxyError> {
        let addr = key.addr;
        let mut connect = Some(connect);
        loop {
            let choice = self.choose(key);
            let (member, fresh) = match choice {
                Choice::Room(member) => (member, false),
                Choice::Full(member) if connect.is_none() || self.len(key) >= MAX_CONNS_PER_KEY => {
                    (member, false)
                }
                Choice::Full(_) | Choice::None => {
                    let Some(connect) = connect.take() else {
                        return Err(ProxyError::upstream("HTTP/2 connection closed"));
                    };
                    let member = Member {
                        conn: connect().shared(),
                        streams: Rc::default(),
                    };
                    if !self.closed.get() {
                        let mut conns = self.conns.borrow_mut();
                        let members = conns.entry(key.clone()).or_insert_with(|| Members {
                            members: Vec::new(),
                            used: Cell::new(true),
                            seen: Instant::now(),
                        });
                        members.members.push(member.clone());
                    }
                    (member, true)
                }
            };
            // Counted from now: streams choosing meanwhile see this one.
            let lease = Lease::new(&member.streams);
            let send = match member.conn.clone().await {
                Ok(send) => send,
                Err(failure) => {
                    self.remove(key, &member.streams);
                    return Err(failure.into_error());
                }
            };
            match send.ready().await {
                Ok(send) => return Ok((send, lease)),
                Err(error) if !fresh => {
                    tracing::debug!(dst.addr = %addr, %error, "Shared HTTP/2 connection closed");
                    self.remove(key, &member.streams);
                }
                Err(error) => {
                    self.remove(key, &member.streams);
                    return Err(ProxyError::upstream(format!(
                        "HTTP/2 connection failed: {error}"
                    )));
                }
            }
        }
    }

    /// The member a new stream for `key` goes to.
    fn choose(&self, key: &H2Key) -> Choice {
        let conns = self.conns.borrow();
        let Some(members) = conns.get(key) else {
            return Choice::None;
        };
        members.used.set(true);
        let mut least: Option<&Member> = None;
        for member in &members.members {
            match member.conn.peek() {
                None => return Choice::Room(member.clone()),
                Some(Err(_)) => continue,
                Some(Ok(send)) => {
                    let open = member.streams.get();
                    if open < send.current_max_send_streams() {
                        return Choice::Room(member.clone());
                    }
                    if least.is_none_or(|l| open < l.streams.get()) {
                        least = Some(member);
                    }
                }
            }
        }
        least.map_or(Choice::None, |member| Choice::Full(member.clone()))
    }

    fn len(&self, key: &H2Key) -> usize {
        self.conns.borrow().get(key).map_or(0, |m| m.members.len())
    }

    /// Whether a connection for `key` is shared (made, or being made).
    pub fn contains(&self, key: &H2Key) -> bool {
        self.conns.borrow().contains_key(key)
    }

    /// Stops sharing the connection `lease` is on (one that failed under a request; its
    /// in-flight streams keep it open until they end).
    pub fn forget(&self, key: &H2Key, lease: &Lease) {
        self.remove(key, &lease.0);
    }

    fn remove(&self, key: &H2Key, streams: &Rc<Cell<usize>>) {
        let mut conns = self.conns.borrow_mut();
        if let Some(members) = conns.get_mut(key) {
            let members = &mut members.members;
            members.retain(|member| !Rc::ptr_eq(&member.streams, streams));
            if members.is_empty() {
                conns.remove(key);
            }
        }
    }

    /// Forgets the connections of keys unused for `idle_timeout`, as seen by this sweep
    /// and the earlier ones (each closes once its in-flight streams end); how many. A key
    /// goes between `idle_timeout` and that plus one sweep period after its last stream.
    pub fn sweep(&self, idle_timeout: Duration) -> usize {
        let now = Instant::now();
        let mut closed = 0;
        self.conns.borrow_mut().retain(|_, members| {
            if members.used.replace(false) {
                members.seen = now;
            }
            let idle = now.saturating_duration_since(members.seen) >= idle_timeout;
            if idle {
                closed += members.members.len();
            }
            !idle
        });
        closed
    }

    /// Forgets every connection and shares none from now on (the drain).
    pub fn clear(&self) {
        self.closed.set(true);
        self.conns.borrow_mut().clear();
    }
}

// === impl Lease ===

impl Lease {
    fn new(streams: &Rc<Cell<usize>>) -> Self {
        streams.set(streams.get() + 1);
        Lease(streams.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

// === impl ConnectFailure ===

impl ConnectFailure {
    pub fn from_error(error: ProxyError) -> Self {
        match error {
            ProxyError::ConnectTimeout(timeout) => ConnectFailure::Connect {
                timeout: Some(timeout),
                errno: None,
                kind: io::ErrorKind::TimedOut,
                message: String::new(),
            },
            ProxyError::Connect(error) => ConnectFailure::Connect {
                timeout: None,
                errno: error.raw_os_error(),
                kind: error.kind(),
                message: error.to_string(),
            },
            other => ConnectFailure::Handshake(other.message()),
        }
    }

    pub fn into_error(self) -> ProxyError {
        match self {
            ConnectFailure::Connect {
                timeout: Some(timeout),
                ..
            } => ProxyError::ConnectTimeout(timeout),
            ConnectFailure::Connect {
                errno: Some(errno), ..
            } => ProxyError::Connect(io::Error::from_raw_os_error(errno)),
            ConnectFailure::Connect { kind, message, .. } => {
                ProxyError::Connect(io::Error::new(kind, message))
            }
            ConnectFailure::Handshake(why) => ProxyError::upstream(why),
        }
    }
}

// === functions ===

/// The h2 client handshake on `stream` to `target`, counted in the TCP metrics with its TLS
/// status; the connection is driven by its own shard task, which ends when the server
/// closes it or every handle to it is gone and its streams are over.
pub async fn handshake<R: Runtime>(
    tcp: &Rc<Tcp>,
    life: &Rc<Lifecycle>,
    direction: Direction,
    target: SocketAddr,
    (stream, tls): (Transport<R>, &TlsStatus),
) -> Result<SendRequest<Bytes>, ConnectFailure> {
    let fd = stream.as_raw_fd();
    let metrics = tcp.open(direction, Peer::Dst, target, tls);
    let io = match stream.into_poll() {
        Ok((io, ahead)) => Counted::new(io, ahead, &metrics.read_bytes, &metrics.write_bytes),
        Err(error) => {
            let failure = ConnectFailure::from_error(ProxyError::Connect(io::Error::new(
                error.kind(),
                error.to_string(),
            )));
            tcp.close(metrics, Some(&error));
            return Err(failure);
        }
    };
    let handshake = h2::client::Builder::new()
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        // No lifetime budget of resets the crate sends on its own: it counts one for each
        // frame that arrives on a stream it has already forgotten, which is what a busy
        // server's answers to streams clients cancelled are, and by default closes the
        // connection after 1,024 (GOAWAY ENHANCE_YOUR_CALM). A shared connection lives
        // long and carries every client's streams; the budget guards a server against
        // clients provoking resets, which is not this side's risk.
        .max_local_error_reset_streams(None)
        .handshake::<_, Bytes>(io)
        .await;
    let (send, conn) = match handshake {
        Ok(pair) => pair,
        Err(error) => {
            let why = format!("the upstream did not speak HTTP/2 ({error})");
            let io_error = error
                .into_io()
                .unwrap_or_else(|| io::Error::other(why.clone()));
            tcp.close(metrics, Some(&io_error));
            return Err(ConnectFailure::Handshake(why));
        }
    };
    let task = life.task();
    let entry = life.register(fd);
    let tcp = tcp.clone();
    R::spawn(async move {
        let _task = task;
        let _entry = entry;
        let result = conn.await;
        let error = result.err().and_then(|e| e.into_io());
        tcp.close(metrics, error.as_ref());
    });
    Ok(send)
}
