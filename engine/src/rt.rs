//! The shard runtime seam: the only module that names glommio or monoio.
//!
//! Shard code is generic over [`Runtime`] and is monomorphised once per backend, so neither
//! backend pays for the other's I/O style. The seam is completion-shaped: reads and writes
//! take owned buffers ([`Reader::read`], [`Writer::write_all`]), which a completion-based
//! backend (monoio's io_uring RECV/SEND) uses directly and a readiness-based one (glommio's
//! `recv`/`send` after `POLL_ADD`) adapts without extra copies.
//!
//! Tasks are never cancelled while pending: a cancelled pending glommio task leaks (DESIGN.md
//! §5), so [`Runtime::spawn`] only detaches, and every task must observe a signal and return.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use ringlink_control::RuntimeKind;

mod glommio;
mod monoio;

// === types ===

/// A single-threaded executor that a shard runs on.
pub trait Runtime: Sized + 'static {
    type Listener: Listener<Stream = Self::Stream>;
    type Stream: Stream;
    /// A stream with tokio's poll-based I/O traits, for the h2 crate (which needs no
    /// runtime, only those traits).
    type PollIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static;

    /// Converts a whole (never split) stream for h2.
    fn poll_io(stream: Self::Stream) -> io::Result<Self::PollIo>;

    /// Takes over a bound, listening, non-blocking std listener.
    fn listener(listener: std::net::TcpListener) -> io::Result<Self::Listener>;

    /// Connects to `addr`, failing with `TimedOut` after `timeout`. The returned stream has
    /// `TCP_NODELAY` set.
    fn connect(
        addr: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = io::Result<Self::Stream>>;

    /// Runs `task` on the current shard, detached. It must finish by itself.
    fn spawn(task: impl Future<Output = ()> + 'static);

    /// Completes after `duration` on the shard's timer.
    fn sleep(duration: Duration) -> impl Future<Output = ()>;
}

/// A shard's listening socket.
pub trait Listener: 'static {
    type Stream;
    /// Accepts one connection; the stream has `TCP_NODELAY` set.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
}

/// A connected TCP stream that can be split into halves used concurrently by one task. It
/// can also be read whole, before it is split (protocol detection).
pub trait Stream: Reader + AsRawFd + Sized + 'static {
    type Reader: Reader;
    type Writer: Writer;
    fn into_split(self) -> (Self::Reader, Self::Writer);
    /// Puts the halves of one stream back together, so that dropping it only closes the
    /// socket (a dropped write half may send FIN, which would turn a reset into an EOF).
    fn reunite(reader: Self::Reader, writer: Self::Writer) -> Option<Self>;
    /// Completes when a read would not block (data, end of stream or an error is there).
    /// It consumes nothing, so dropping it before it completes loses no data — unlike
    /// dropping a pending read, which is why races use this and not `read`.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;

    /// Whether [`Stream::writable`] waits for write readiness, so that the engine may move
    /// the stream's bytes with non-blocking syscalls of its own (`io::splice`).
    const READINESS: bool = false;

    /// Completes when a write would not block (room in the send buffer, or an error or
    /// shutdown to report). Consumes nothing. Where not [`Stream::READINESS`], fails with
    /// `Unsupported`.
    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        std::future::ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

pub trait Reader {
    /// Reads up to `buf.capacity()` bytes, replacing the buffer's contents: on success
    /// `buf.len()` is the number of bytes read, 0 at end of stream.
    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Reads into the spare capacity after `buf.len()`, keeping what is there: on success
    /// the buffer grew by the returned count, 0 at end of stream. The caller makes sure
    /// there is spare capacity.
    fn read_more(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Reads like [`Reader::read_more`], unless `give_up` completes while the read is still
    /// pending: then the read is withdrawn, and `None` comes back with `buf` as it was. No
    /// byte is lost: a read that completes as it is withdrawn counts as read (`Some`).
    /// A reader that cannot withdraw a read that way waits for it and never gives up.
    fn read_more_unless(
        &mut self,
        buf: Vec<u8>,
        give_up: impl Future<Output = ()>,
    ) -> impl Future<Output = (Option<io::Result<usize>>, Vec<u8>)> {
        drop(give_up);
        async move {
            let (result, buf) = self.read_more(buf).await;
            (Some(result), buf)
        }
    }
}

pub trait Writer {
    /// Writes all of `buf[..buf.len()]`.
    fn write_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
    /// Shuts down the write side (sends FIN).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;
}

/// What a shard thread runs, generic over the backend chosen at startup.
pub trait ShardMain: Send + 'static {
    fn run<R: Runtime>(self) -> impl Future<Output = ()>;
}

/// Where a shard runs.
#[derive(Clone, Copy, Debug)]
pub struct ShardSpec {
    pub index: usize,
    /// The CPU the shard thread is pinned to.
    pub cpu: usize,
}

/// A running shard thread.
#[derive(Debug)]
pub struct ShardHandle {
    thread: std::thread::JoinHandle<()>,
}

// === impl ShardHandle ===

impl ShardHandle {
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Interrupts the shard's ring wait (see [`nudge_interval`]).
    pub fn nudge(&self) {
        use std::os::unix::thread::JoinHandleExt;
        crate::sys::nudge(self.thread.as_pthread_t());
    }

    /// Waits for the shard to finish; `Err` if it panicked.
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
}

// === functions ===

/// Runs `future` for at most `duration` on the shard's timer: `Some` with its output, or
/// `None` if the timer fired first.
///
/// On a timeout `future` is dropped while pending, so it must be cancel-safe: dropping it
/// must lose nothing the caller still needs. Reads through [`Reader`] qualify when the
/// caller gives up on the connection (the buffer is dropped with it), as do [`Stream::readable`],
/// connects, handshakes and channel receives; a write does not, unless the connection is
/// closed after it. The future is never a task: only futures are dropped, never a task
/// (DESIGN.md §5).
pub async fn timeout<R: Runtime, T>(
    duration: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    // The timer is boxed: monoio's is cache-line aligned (128 bytes), and inline it would
    // align and pad every future that holds a timeout (most of a connection's).
    futures_lite::future::or(async { Some(future.await) }, async {
        Box::pin(R::sleep(duration)).await;
        None
    })
    .await
}

/// Checks before any shard starts that `kind` can run here, returning a short description of
/// the I/O driver to log, or a message that names the problem and its fix.
pub fn probe(kind: RuntimeKind) -> Result<&'static str, String> {
    match kind {
        RuntimeKind::Glommio => glommio::probe(),
        RuntimeKind::Monoio => Ok(monoio::probe()),
    }
}

/// How often shards of `kind` must be interrupted to recover from a lost ring wake-up:
/// glommio 0.9 needs it (see `rt::glommio::NUDGE_INTERVAL`), monoio does not. The handler is
/// installed by the first call.
pub fn nudge_interval(kind: RuntimeKind) -> io::Result<Option<Duration>> {
    match kind {
        RuntimeKind::Glommio => {
            crate::sys::install_nudge_handler()?;
            Ok(Some(glommio::NUDGE_INTERVAL))
        }
        RuntimeKind::Monoio => Ok(None),
    }
}

/// Starts a pinned shard thread running `main` on the `kind` backend. Returns once the
/// shard's executor has been built (or failed to build).
pub fn spawn_shard(
    kind: RuntimeKind,
    spec: ShardSpec,
    main: impl ShardMain,
) -> io::Result<ShardHandle> {
    let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<String>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("ringlink-shard-{}", spec.index))
        .spawn(move || {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: spec.cpu }) {
                let _ = ready_tx.send(Err(io::Error::other(format!(
                    "could not pin shard {} to CPU {}",
                    spec.index, spec.cpu
                ))));
                return;
            }
            match kind {
                RuntimeKind::Glommio => glommio::run_shard(spec, ready_tx, main),
                RuntimeKind::Monoio => monoio::run_shard(spec, ready_tx, main),
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(driver)) => {
            tracing::debug!(shard = spec.index, cpu = spec.cpu, driver, "Shard started");
            Ok(ShardHandle { thread })
        }
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other(format!(
                "shard {} exited before it started",
                spec.index
            )))
        }
    }
}
