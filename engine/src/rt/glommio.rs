//! The glommio backend: the runtime DESIGN.md names. Its sockets are readiness-based
//! (`recv`/`send` syscalls after a one-shot `POLL_ADD`), so the owned-buffer seam is adapted
//! with a borrow per poll; the two halves of a stream share it through an `Rc`.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc::SyncSender;
use std::task::Poll;
use std::time::Duration;

use ::glommio as gl;
use futures_lite::{AsyncRead, AsyncWrite};
use gl::net::{TcpListener, TcpStream};

use super::{Listener, Reader, Runtime, ShardMain, ShardSpec, Stream, Writer};

/// glommio's default (100 ms) starves timers next to a busy task (DESIGN.md §5).
const PREEMPT_TIMER: Duration = Duration::from_millis(2);
/// glommio's default 10 MiB per shard is for file DMA, which a proxy does not do.
const IO_MEMORY: usize = 64 << 10;
/// How often a glommio shard is interrupted by [`nudge_signal`](crate::sys::nudge_signal).
///
/// glommio 0.9 sleeps by waiting on its main ring for a POLL_ADD on its latency ring's fd,
/// and that wake-up can be lost: a shard then sleeps in `io_cqring_wait` with completions
/// (socket readiness, timers) pending, until anything interrupts the wait. Seen here in about
/// 1 of 3 runs of the test suite (a 200 MB transfer stalled for minutes; attaching strace,
/// which interrupts the wait, resumed it). A signal makes `io_uring_enter` return EINTR,
/// which glommio treats as a wake-up, so a missed wake-up costs at most this long.
pub const NUDGE_INTERVAL: Duration = Duration::from_millis(100);

// === types ===

pub struct Glommio;

/// A glommio stream whose halves are driven from one task.
pub struct GlStream(Rc<RefCell<TcpStream>>);
pub struct GlReader(Rc<RefCell<TcpStream>>);
pub struct GlWriter(Rc<RefCell<TcpStream>>);

/// A whole glommio stream with tokio's poll-based traits (for h2 and TLS).
///
/// tokio-util's `Compat` zeroes the whole unfilled part of every read buffer, since glommio
/// reads into initialised memory: for h2 that is its 8 KiB read buffer on every read, which
/// also makes all of it resident on an idle connection. Reads into uninitialised memory go
/// through a per-thread scratch buffer instead, and only the bytes read are copied.
pub struct GlPoll(TcpStream);

// === impl Glommio ===

impl Runtime for Glommio {
    type PollIo = GlPoll;

    fn poll_io(stream: GlStream) -> io::Result<GlPoll> {
        let stream = Rc::try_unwrap(stream.0)
            .map_err(|_| io::Error::other("stream is still split"))?
            .into_inner();
        Ok(GlPoll(stream))
    }

    type Listener = TcpListener;
    type Stream = GlStream;

    #[allow(unsafe_code)]
    fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        // SAFETY: the fd comes from `into_raw_fd` of a listening socket we own, so glommio
        // becomes its only owner.
        Ok(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) })
    }

    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<GlStream> {
        // A connect SQE linked to a LINK_TIMEOUT: the timer lives in the ring.
        let stream =
            TcpStream::connect_timeout(addr, timeout)
                .await
                .map_err(|error| match error {
                    gl::GlommioError::TimedOut(_) => io::ErrorKind::TimedOut.into(),
                    other => io::Error::from(other),
                })?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        Ok(GlStream(Rc::new(RefCell::new(stream))))
    }

    fn spawn(task: impl Future<Output = ()> + 'static) {
        gl::spawn_local(task).detach();
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> {
        gl::timer::sleep(duration)
    }
}

impl Listener for TcpListener {
    type Stream = GlStream;

    async fn accept(&self) -> io::Result<(GlStream, SocketAddr)> {
        let stream = TcpListener::accept(self).await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        Ok((GlStream(Rc::new(RefCell::new(stream))), peer))
    }
}

// === impl GlStream ===

impl AsRawFd for GlStream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.borrow().as_raw_fd()
    }
}

impl Stream for GlStream {
    type Reader = GlReader;
    type Writer = GlWriter;

    fn into_split(self) -> (GlReader, GlWriter) {
        (GlReader(self.0.clone()), GlWriter(self.0))
    }

    fn reunite(reader: GlReader, writer: GlWriter) -> Option<Self> {
        Rc::ptr_eq(&reader.0, &writer.0).then(|| GlStream(writer.0))
    }

    // The shared borrow lasts while the peek waits; nothing borrows the stream mutably then,
    // since a stream is only read whole before it is split.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn readable(&self) -> io::Result<()> {
        // An io_uring RECV with MSG_PEEK: waits for data and leaves it in the socket.
        let stream = self.0.borrow();
        let mut byte = [0u8; 1];
        stream
            .peek(&mut byte)
            .await
            .map(drop)
            .map_err(io::Error::from)
    }
}

impl Reader for GlStream {
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        GlReader(self.0.clone()).read(buf).await
    }

    async fn read_more(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        GlReader(self.0.clone()).read_more(buf).await
    }
}

impl Reader for GlReader {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        // glommio reads into initialised memory; after the first use only the bytes past the
        // previous read are zeroed again.
        buf.resize(buf.capacity(), 0);
        let stream = &self.0;
        let result =
            poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut buf)).await;
        buf.truncate(*result.as_ref().unwrap_or(&0));
        (result, buf)
    }

    async fn read_more(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        let stream = &self.0;
        let result =
            poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut buf[len..])).await;
        buf.truncate(len + *result.as_ref().unwrap_or(&0));
        (result, buf)
    }

    /// glommio's reads are readiness-based: a read that is still pending has taken nothing
    /// from the socket, so giving it up loses nothing.
    async fn read_more_unless(
        &mut self,
        mut buf: Vec<u8>,
        give_up: impl Future<Output = ()>,
    ) -> (Option<io::Result<usize>>, Vec<u8>) {
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        let stream = &self.0;
        let mut give_up = std::pin::pin!(give_up);
        let result = poll_fn(|cx| {
            let read = Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut buf[len..]);
            if let Poll::Ready(read) = read {
                return Poll::Ready(Some(read));
            }
            give_up.as_mut().poll(cx).map(|()| None)
        })
        .await;
        let read = match &result {
            Some(Ok(n)) => *n,
            _ => 0,
        };
        buf.truncate(len + read);
        (result, buf)
    }
}

impl Writer for GlWriter {
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let stream = &self.0;
        let mut written = 0;
        while written < buf.len() {
            let result =
                poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, &buf[written..]))
                    .await;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => written += n,
                Err(error) => return (Err(error), buf),
            }
        }
        (Ok(()), buf)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        // glommio's own shutdown is a synchronous `shutdown(2)` too.
        let fd = self.0.borrow().as_raw_fd();
        crate::sys::shutdown(fd, Shutdown::Write)
    }
}

// === impl GlPoll ===

/// The most one read through [`GlPoll`] takes into the scratch buffer: an h2 frame of the
/// default maximum size and its header.
const SCRATCH: usize = 16 * 1024 + 9;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

impl tokio::io::AsyncRead for GlPoll {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.initialized().len() == buf.capacity() {
            // Initialised already (rustls reads into its own buffer this way).
            let n =
                std::task::ready!(Pin::new(&mut self.0).poll_read(cx, buf.initialize_unfilled()))?;
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        // glommio keeps no hold of the slice once `poll_read` returns, so the scratch buffer
        // is free again whatever the outcome.
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let room = buf.remaining().min(scratch.len());
            let n = std::task::ready!(Pin::new(&mut self.0).poll_read(cx, &mut scratch[..room]))?;
            buf.put_slice(&scratch[..n]);
            Poll::Ready(Ok(()))
        })
    }
}

impl tokio::io::AsyncWrite for GlPoll {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

// === functions ===

/// glommio panics with a misleading "kernel too old" when io_uring is blocked: check first.
pub(super) fn probe() -> Result<&'static str, String> {
    match io_uring::IoUring::new(2) {
        Ok(_) => Ok("io_uring"),
        Err(error) => Err(format!(
            "RINGLINK_RUNTIME=glommio needs io_uring, which this process may not use ({error}); \
             allow io_uring (a container seccomp profile that permits io_uring_setup/enter/register, \
             sysctl kernel.io_uring_disabled=0), or use RINGLINK_RUNTIME=monoio, which falls back to epoll"
        )),
    }
}

pub(super) fn run_shard(
    spec: ShardSpec,
    ready: SyncSender<io::Result<String>>,
    main: impl ShardMain,
) {
    let built = gl::LocalExecutorBuilder::new(gl::Placement::Unbound)
        .name(&format!("ringlink-shard-{}", spec.index))
        .io_memory(IO_MEMORY)
        .preempt_timer(PREEMPT_TIMER)
        .make();
    match built {
        Ok(executor) => {
            let driver = "glommio io_uring";
            tracing::info!(shard = spec.index, cpu = spec.cpu, driver, "Shard runtime");
            let _ = ready.send(Ok(driver.to_string()));
            executor.run(main.run::<Glommio>());
        }
        Err(error) => {
            let _ = ready.send(Err(io::Error::other(format!(
                "glommio executor for shard {}: {error}",
                spec.index
            ))));
        }
    }
}
