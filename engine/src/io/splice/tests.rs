//! The spliced duplex between real sockets on a monoio shard, with blocking peers on
//! threads: bytes arrive intact both ways and are counted, half-closes and resets are
//! passed on, pipes go back to the pool, and without pipes the bytes go through buffers.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use prometheus::IntCounter;
use ringlink_control::RuntimeKind;

use super::*;
use crate::io::Buffers;
use crate::rt::{Listener, Runtime, ShardMain, ShardSpec};

/// What one case's peers do.
#[derive(Clone, Copy, Debug)]
enum Peers {
    /// Each peer writes its bytes, half-closes, and reads the other's until the end.
    Stream { up: usize, down: usize },
    /// The upstream writes some bytes and resets.
    UpstreamResets,
}

/// What the shard saw: the counters (client read, client write, upstream read, upstream
/// write), how the duplex closed (client error, upstream error), and the pooled pipes.
#[derive(Debug)]
struct Seen {
    counted: [u64; 4],
    errors: [Option<io::ErrorKind>; 2],
    pooled: usize,
}

struct Case {
    refuse_pipes: bool,
    seen: mpsc::Sender<Seen>,
    /// The client's peer connects to the first; the upstream peer listens on the second.
    listeners: (TcpListener, TcpListener),
}

impl ShardMain for Case {
    fn run<R: Runtime>(self) -> impl std::future::Future<Output = ()> {
        run_case::<R>(self)
    }
}

async fn run_case<R: Runtime>(case: Case) {
    assert!(
        <R::Stream as Stream>::READINESS,
        "the runtime can wait for writes"
    );
    let (client_side, upstream_side) = case.listeners;
    let upstream_addr = upstream_side.local_addr().unwrap();
    let listener = R::listener(client_side).unwrap();
    let (client, _) = listener.accept().await.unwrap();
    let upstream = R::connect(upstream_addr, Duration::from_secs(5))
        .await
        .unwrap();
    let pipes = if case.refuse_pipes {
        Pipes::refusing()
    } else {
        Pipes::default()
    };
    let buffers = Buffers::default();
    let counters: [IntCounter; 4] =
        std::array::from_fn(|i| IntCounter::new(format!("c{i}"), "bytes").unwrap());
    let fds = [client.as_raw_fd(), upstream.as_raw_fd()];
    assert!(prepare(fds));
    let closed = duplex(
        &pipes,
        &buffers,
        End {
            stream: &client,
            fd: fds[0],
            read_bytes: &counters[0],
            write_bytes: &counters[1],
        },
        End {
            stream: &upstream,
            fd: fds[1],
            read_bytes: &counters[2],
            write_bytes: &counters[3],
        },
    )
    .await;
    let _ = case.seen.send(Seen {
        counted: std::array::from_fn(|i| counters[i].get()),
        errors: [
            closed.client.map(|e| e.kind()),
            closed.upstream.map(|e| e.kind()),
        ],
        pooled: pipes.pooled(),
    });
}

fn pattern(at: usize, seed: u8) -> u8 {
    (at as u8).wrapping_mul(31).wrapping_add(seed)
}

fn write_pattern(mut stream: TcpStream, len: usize, seed: u8) {
    let mut at = 0;
    let mut chunk = vec![0u8; 100_003];
    while at < len {
        let n = chunk.len().min(len - at);
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(at + i, seed);
        }
        stream.write_all(&chunk[..n]).unwrap();
        at += n;
    }
    stream.shutdown(Shutdown::Write).unwrap();
}

/// Reads to the end; the count of bytes read, each checked against the pattern.
fn read_pattern(mut stream: TcpStream, seed: u8) -> io::Result<usize> {
    let mut at = 0;
    let mut buf = vec![0u8; 65_537];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(at);
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(at + i, seed), "byte {}", at + i);
        }
        at += n;
    }
}

/// Runs one case on a monoio shard: what the shard saw, and what the client's peer read
/// (its count, or the error its read ended with).
fn run(peers: Peers, refuse_pipes: bool) -> (Seen, io::Result<usize>) {
    let client_side = TcpListener::bind("127.0.0.1:0").unwrap();
    client_side.set_nonblocking(true).unwrap();
    let client_addr = client_side.local_addr().unwrap();
    let upstream_side = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_listener = upstream_side.try_clone().unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let shard = crate::rt::spawn_shard(
        RuntimeKind::Monoio,
        ShardSpec { index: 0, cpu: 0 },
        Case {
            refuse_pipes,
            seen: seen_tx,
            listeners: (client_side, upstream_side),
        },
    )
    .expect("a shard");
    let client = TcpStream::connect(client_addr).unwrap();
    let (upstream, _) = upstream_listener.accept().unwrap();
    let timeout = Some(Duration::from_secs(30));
    client.set_read_timeout(timeout).unwrap();
    upstream.set_read_timeout(timeout).unwrap();
    let client_read = match peers {
        Peers::Stream { up, down } => {
            let writers = [
                (client.try_clone().unwrap(), up, 1),
                (upstream.try_clone().unwrap(), down, 2),
            ]
            .map(|(s, len, seed)| std::thread::spawn(move || write_pattern(s, len, seed)));
            let upstream_reader = std::thread::spawn(move || read_pattern(upstream, 1));
            let client_read = read_pattern(client, 2);
            assert_eq!(upstream_reader.join().unwrap().unwrap(), up);
            for writer in writers {
                writer.join().unwrap();
            }
            client_read
        }
        Peers::UpstreamResets => {
            let mut upstream = upstream;
            upstream.write_all(&[7u8; 10_000]).unwrap();
            socket2::SockRef::from(&upstream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(upstream);
            let mut client = client;
            let mut buf = [0u8; 4096];
            let mut total = 0;
            loop {
                match client.read(&mut buf) {
                    Ok(0) => break Ok(total),
                    Ok(n) => total += n,
                    Err(error) => break Err(error),
                }
            }
        }
    };
    let seen = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("the duplex ended");
    shard.join().expect("the shard ran");
    (seen, client_read)
}

#[test]
fn bulk_both_ways_is_intact_and_counted() {
    let (up, down) = (24 << 20, 16 << 20);
    let (seen, client_read) = run(Peers::Stream { up, down }, false);
    assert_eq!(client_read.unwrap(), down);
    let [up, down] = [up as u64, down as u64];
    assert_eq!(seen.counted, [up, down, down, up], "{seen:?}");
    assert_eq!(seen.errors, [None, None]);
    // Every pipe went back: one per direction at most, and at least one was used.
    assert!((1..=2).contains(&seen.pooled), "{seen:?}");
}

#[test]
fn a_half_close_is_passed_on_and_the_other_direction_goes_on() {
    // The client sends nothing and half-closes at once; the upstream still streams.
    let (seen, client_read) = run(
        Peers::Stream {
            up: 0,
            down: 5 << 20,
        },
        false,
    );
    assert_eq!(client_read.unwrap(), 5 << 20);
    assert_eq!(seen.counted, [0, 5 << 20, 5 << 20, 0]);
    assert_eq!(seen.errors, [None, None]);
}

#[test]
fn without_pipes_the_bytes_go_through_buffers() {
    let (up, down) = (3 << 20, 2 << 20);
    let (seen, client_read) = run(Peers::Stream { up, down }, true);
    assert_eq!(client_read.unwrap(), down);
    let [up, down] = [up as u64, down as u64];
    assert_eq!(seen.counted, [up, down, down, up]);
    assert_eq!(seen.errors, [None, None]);
    assert_eq!(seen.pooled, 0);
}

#[test]
fn an_upstream_reset_resets_the_client() {
    let (seen, client_read) = run(Peers::UpstreamResets, false);
    let error = client_read.expect_err("the client is reset");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    assert!(seen.errors[1].is_some(), "{seen:?}");
    assert_eq!(seen.errors[0], None, "{seen:?}");
}
