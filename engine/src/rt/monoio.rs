//! The monoio backend: io_uring RECV/SEND on owned buffers, with the ring flags that keep
//! completions from interrupting a busy shard (DESIGN.md §5), falling back to fewer flags and
//! then to monoio's epoll driver when the kernel or a seccomp profile refuses them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::task::Poll;
use std::time::Duration;

use ::monoio as mono;
use mono::buf::IoBufMut;
use mono::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller,
    OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use mono::net::{TcpListener, TcpStream};

use super::{Listener, Reader, Runtime, ShardMain, ShardSpec, Stream, Writer};

/// Submission queue entries per shard ring.
const RING_ENTRIES: u32 = 1024;

/// Applies ring setup flags to a builder.
type RingSetup = fn(&mut io_uring::Builder);

/// Ring setups tried in order, most efficient first.
const RING_SETUPS: [(&str, RingSetup); 3] = [
    (
        "io_uring (coop_taskrun, single_issuer, defer_taskrun)",
        |b| {
            b.setup_coop_taskrun()
                .setup_single_issuer()
                .setup_defer_taskrun();
        },
    ),
    ("io_uring (coop_taskrun)", |b| {
        b.setup_coop_taskrun();
    }),
    ("io_uring", |_| {}),
];

// === types ===

pub struct Monoio;

// === impl Monoio ===

impl Runtime for Monoio {
    type PollIo = mono::net::tcp::stream_poll::TcpStreamPoll;

    fn poll_io(stream: TcpStream) -> io::Result<Self::PollIo> {
        mono::io::IntoPollIo::into_poll_io(stream)
    }

    type Listener = TcpListener;
    type Stream = TcpStream;

    fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_std(listener)
    }

    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        match super::timeout::<Monoio, _>(timeout, TcpStream::connect_addr(addr)).await {
            Some(Ok(stream)) => {
                stream.set_nodelay(true)?;
                Ok(stream)
            }
            Some(Err(error)) => Err(error),
            None => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    fn spawn(task: impl Future<Output = ()> + 'static) {
        drop(mono::spawn(task));
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> {
        mono::time::sleep(duration)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }
}

impl Stream for TcpStream {
    type Reader = OwnedReadHalf<TcpStream>;
    type Writer = OwnedWriteHalf<TcpStream>;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        Splitable::into_split(self)
    }

    fn reunite(reader: Self::Reader, writer: Self::Writer) -> Option<Self> {
        reader.reunite(writer).ok()
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        // A POLL_ADD on io_uring; `relaxed = false` re-checks with poll(2) on epoll.
        TcpStream::readable(self, false)
    }

    const READINESS: bool = true;

    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        // A POLL_ADD for POLLOUT on io_uring; a poll(2) re-check on epoll.
        TcpStream::writable(self, false)
    }
}

impl Reader for TcpStream {
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        AsyncReadRent::read(self, buf).await
    }

    async fn read_more(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        read_more(self, buf).await
    }
}

impl Reader for OwnedReadHalf<TcpStream> {
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        AsyncReadRent::read(self, buf).await
    }

    async fn read_more(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        read_more(self, buf).await
    }

    /// The pending recv is withdrawn with an `ASYNC_CANCEL` (monoio's `Canceller`) and
    /// waited for: it ends either cancelled, having read nothing, or with what it read.
    async fn read_more_unless(
        &mut self,
        buf: Vec<u8>,
        give_up: impl Future<Output = ()>,
    ) -> (Option<io::Result<usize>>, Vec<u8>) {
        let canceller = Canceller::new();
        let len = buf.len();
        let cap = buf.capacity();
        let read = CancelableAsyncReadRent::cancelable_read(
            self,
            buf.slice_mut(len..cap),
            canceller.handle(),
        );
        let mut read = std::pin::pin!(read);
        let mut give_up = std::pin::pin!(give_up);
        let first = std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(done));
            }
            give_up.as_mut().poll(cx).map(|()| None)
        })
        .await;
        let (result, slice) = match first {
            Some(done) => done,
            None => {
                let _ = canceller.cancel();
                read.await
            }
        };
        let buf = slice.into_inner();
        match result {
            Err(error) if error.raw_os_error() == Some(libc::ECANCELED) => (None, buf),
            result => (Some(result), buf),
        }
    }
}

/// A read into `buf[len..capacity]`: monoio's `SliceMut` sets the length to
/// `len + read` on completion.
async fn read_more(io: &mut impl AsyncReadRent, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    let len = buf.len();
    let cap = buf.capacity();
    let (result, slice) = io.read(buf.slice_mut(len..cap)).await;
    (result, slice.into_inner())
}

impl Writer for OwnedWriteHalf<TcpStream> {
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (result, buf) = AsyncWriteRentExt::write_all(self, buf).await;
        (result.map(drop), buf)
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        AsyncWriteRent::shutdown(self)
    }
}

// === functions ===

/// Which driver shards will get; never fails, the epoll driver is always there.
pub(super) fn probe() -> &'static str {
    match io_uring::IoUring::new(2) {
        Ok(_) => "io_uring",
        Err(_) => "epoll (io_uring is unavailable)",
    }
}

pub(super) fn run_shard(
    spec: ShardSpec,
    ready: SyncSender<io::Result<String>>,
    main: impl ShardMain,
) {
    for (driver, setup) in RING_SETUPS {
        let mut urb = io_uring::IoUring::builder();
        setup(&mut urb);
        let built = mono::RuntimeBuilder::<mono::IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .uring_builder(urb)
            .enable_timer()
            .build();
        match built {
            Ok(mut rt) => {
                tracing::info!(shard = spec.index, cpu = spec.cpu, driver, "Shard runtime");
                let _ = ready.send(Ok(driver.to_string()));
                rt.block_on(main.run::<Monoio>());
                return;
            }
            Err(error) => {
                tracing::debug!(shard = spec.index, driver, %error, "Ring setup refused");
            }
        }
    }
    match mono::RuntimeBuilder::<mono::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            let driver = "epoll";
            tracing::warn!(
                shard = spec.index,
                cpu = spec.cpu,
                driver,
                "io_uring is unavailable (seccomp profile or kernel.io_uring_disabled); \
                 shard runs on epoll, allow io_uring for full speed"
            );
            let _ = ready.send(Ok(driver.to_string()));
            rt.block_on(main.run::<Monoio>());
        }
        Err(error) => {
            let _ = ready.send(Err(error));
        }
    }
}
