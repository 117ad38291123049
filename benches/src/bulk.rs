//! Bulk test client: streams MiBs through the proxy into `bench-backend --sink`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use core_affinity::CoreId;

const CHUNK: usize = 1 << 20;
/// Longest a single write or the final read may block before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct BulkReport {
    pub bytes: u64,
    pub elapsed: Duration,
}

// === impl BulkReport ===

impl BulkReport {
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1u64 << 20) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `mib` MiB to `addr` from a thread pinned to `core`, half-closes, and checks the
/// 8-byte big-endian count the sink sends back.
pub fn run(addr: SocketAddr, mib: u64, core: CoreId) -> Result<BulkReport> {
    thread::spawn(move || {
        if !core_affinity::set_for_current(core) {
            bail!("cannot pin the bulk client to CPU {}", core.id);
        }
        send(addr, mib)
    })
    .join()
    .map_err(|_| anyhow!("bulk client thread panicked"))?
}

fn send(addr: SocketAddr, mib: u64) -> Result<BulkReport> {
    let chunk = vec![0x5a; CHUNK];
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    for _ in 0..mib {
        stream.write_all(&chunk).context("sending bulk data")?;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut count = [0; 8];
    stream
        .read_exact(&mut count)
        .context("reading the sink's byte count (does the proxy forward half-close?)")?;
    let elapsed = start.elapsed();
    let sent = mib * CHUNK as u64;
    let received = u64::from_be_bytes(count);
    if received != sent {
        bail!("sent {sent} bytes but the sink received {received}");
    }
    Ok(BulkReport {
        bytes: sent,
        elapsed,
    })
}
