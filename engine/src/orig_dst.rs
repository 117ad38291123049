//! Where an accepted connection was going: the seam between the engine and iptables.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sys;

/// Finds a connection's original destination.
pub trait OrigDst {
    /// `local` is the accepted socket's own address, which is what a connection that was
    /// not redirected was sent to.
    fn original_dst(&self, fd: RawFd, local: SocketAddr) -> io::Result<SocketAddr>;
}

/// The kernel's NAT record (`SO_ORIGINAL_DST`), as set by Linkerd's init container rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOrigDst;

/// One fixed destination for every connection (`RINGLINK_ORIG_DST_OVERRIDE`): for tests and
/// benchmarks that run without root, and for trying the proxy without iptables.
#[derive(Clone, Copy, Debug)]
pub struct FixedOrigDst(pub SocketAddr);

// === impl KernelOrigDst ===

impl OrigDst for KernelOrigDst {
    fn original_dst(&self, fd: RawFd, local: SocketAddr) -> io::Result<SocketAddr> {
        match sys::original_dst(fd, local.is_ipv6()) {
            Ok(addr) => Ok(addr),
            // No NAT record: the client connected to the listener itself.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(local),
            Err(error) => Err(error),
        }
    }
}

// === impl FixedOrigDst ===

impl OrigDst for FixedOrigDst {
    fn original_dst(&self, _fd: RawFd, _local: SocketAddr) -> io::Result<SocketAddr> {
        Ok(self.0)
    }
}
